//! The op harness (`claim::testing::op_harness`): every op on the CPU
//! against its independent composition and against itself with poisoned
//! outputs; every op on each available GPU against the CPU (`GPU.md`); the
//! counter-based noise's properties; and the finite-difference gradient
//! checker the training issue will use.

use claim::backend::NoiseKey;
use claim::nn::{DType, Device, DeviceSpec, Tensor};
use claim::testing::op_harness::{
    check_compositions, check_gradient, format_table, op_cases, run_cases, Outcome, RunOptions,
};
use claim::testing::{random_tensor, rel_l2};
use claim::Result;
use std::time::Instant;

/// Every op family of `BackendStorage` and `BackendDevice` has cases.
#[test]
fn the_registry_covers_every_op() {
    let cases = op_cases();
    for op in [
        "unary",
        "binary",
        "lincomb",
        "permute",
        "flip",
        "narrow",
        "chunk",
        "cat",
        "index_rows",
        "softmax",
        "group_norm_fused",
        "layer_norm_channels",
        "linear",
        "matmul",
        "conv2d",
        "conv2d_add",
        "conv_transpose2d",
        "conv3d",
        "conv_transpose3d",
        "linear_attention",
        "attention",
        "rotary",
        "sinusoidal_embedding",
        "known_blend",
        "ancestral_step",
        "optimizer_update",
        "normal_noise",
        "to_dtype",
        "accumulate_windows",
        "argmax",
        "unary_backward",
        "softmax_backward",
        "sum",
        "conv_weight_grad",
    ] {
        let n = cases.iter().filter(|c| c.op == op).count();
        assert!(n >= 2, "{op}: {n} cases");
    }
    // Every UnaryOp and BinaryOp variant by name.
    for name in [
        "silu",
        "gelu",
        "leakyrelu",
        "affine",
        "exp",
        "neg",
        "square",
        "sqrt",
        "recip",
        "roundhalf",
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
    ] {
        assert!(
            cases.iter().any(|c| c.name.starts_with(name)),
            "no case for {name}"
        );
    }
    // Seeds differ, so no two cases draw the same inputs.
    let mut seeds: Vec<u64> = cases.iter().map(|c| c.seed).collect();
    seeds.sort();
    seeds.dedup();
    assert_eq!(seeds.len(), cases.len());
}

/// Each case on the CPU equals its independent composition (fused vs
/// unfused, Winograd vs explicitly padded im2col, conv3d with a depth-1
/// kernel vs conv2d, flip twice and cat of chunks vs identity, host loops
/// in f64, ...), and the CPU run with poisoned outputs equals the plain
/// one: no element is left unwritten.
#[test]
fn every_op_on_the_cpu_matches_its_composition_and_survives_poison() {
    let start = Instant::now();
    let cases = op_cases();
    let composed = check_compositions(&cases);
    eprintln!("{}", format_table(&composed));
    let with_composition = composed.len();
    assert!(
        with_composition * 3 >= cases.len() * 2,
        "only {with_composition} of {} cases have a composition",
        cases.len()
    );
    let failed: Vec<_> = composed.iter().filter(|r| r.failed()).collect();
    assert!(failed.is_empty(), "compositions failed: {failed:#?}");

    let reports = run_cases(
        &cases,
        &Device::Cpu,
        DType::F32,
        &RunOptions { timing_runs: 0 },
    );
    let failed: Vec<_> = reports.iter().filter(|r| r.failed()).collect();
    assert!(failed.is_empty(), "CPU runs failed: {failed:#?}");
    assert!(reports.iter().all(|r| r.outcome == Outcome::Passed));
    eprintln!(
        "{} cases, {with_composition} with a composition, in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Every op on the first CUDA device against the CPU, with a table; skipped
/// (and saying so) without one.
#[test]
fn every_op_on_cuda_matches_the_cpu_or_skipped_no_cuda_device() {
    let device = match DeviceSpec::cuda(0).open() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let cases = op_cases();
    let mut failed = 0;
    for dtype in [DType::F16, DType::F32] {
        let reports = run_cases(&cases, &device, dtype, &RunOptions::default());
        println!("{device} {dtype:?} against the CPU in F32:");
        println!("{}", format_table(&reports));
        append_jsonl("CLAIM_OP_REPORT", reports.iter().map(|r| {
            let status = match &r.outcome {
                Outcome::Passed => "pass",
                Outcome::Failed(_) => "fail",
                Outcome::NotImplemented(_) => "unsupported",
            };
            serde_json::json!({
                "op": r.op, "case": r.name, "shape": r.shape, "dtype": format!("{dtype:?}"),
                "rel_l2": finite_or_null(r.rel_l2), "max_abs": finite_or_null(f64::from(r.max_abs)),
                "status": status,
                "us": r.time.map(|t| t.as_secs_f64() * 1e6),
            })
        }));
        failed += reports.iter().filter(|r| r.failed()).count();
    }
    assert_eq!(failed, 0, "ops over tolerance on {device} (table above)");
}

/// The counter-based noise on one device: the same key gives the same
/// bits, other items, steps, streams and seeds give other values; the
/// values are standard normal; an item's noise does not depend on the
/// batch it is drawn in.
fn check_noise(device: &Device, dtype: DType) -> Result<()> {
    let key = NoiseKey {
        seed: 11,
        stream: 0,
        step: 3,
    };
    let draw = |key: NoiseKey, items: &[u32], per: usize| -> Result<Vec<f32>> {
        Tensor::normal_noise(key, items, &[items.len(), per], device, dtype)?.to_vec()
    };
    let a = draw(key, &[0, 1, 2, 3, 4, 5], 4096)?;
    assert_eq!(
        a,
        draw(key, &[0, 1, 2, 3, 4, 5], 4096)?,
        "same key, same bits"
    );
    let item = |v: &[f32], i: usize| v[i * 4096..(i + 1) * 4096].to_vec();
    for i in 0..6 {
        for j in 0..i {
            assert_ne!(item(&a, i), item(&a, j), "items {i} and {j}");
        }
    }
    for other in [
        NoiseKey { step: 4, ..key },
        NoiseKey { stream: 1, ..key },
        NoiseKey { seed: 12, ..key },
    ] {
        let b = draw(other, &[0, 1, 2, 3, 4, 5], 4096)?;
        for i in 0..6 {
            assert_ne!(item(&a, i), item(&b, i), "{other:?} item {i}");
        }
    }
    let alone = draw(key, &[5], 4096)?;
    assert_eq!(alone, item(&a, 5), "item 5 alone and in a batch");
    let reordered = draw(key, &[5, 0], 4096)?;
    assert_eq!(item(&reordered, 0), item(&a, 5));
    assert_eq!(item(&reordered, 1), item(&a, 0));
    let n = a.len() as f64;
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = a
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    // 24 576 draws: the standard error of the mean is 0.0064.
    assert!(mean.abs() < 0.03, "mean {mean}");
    assert!((var - 1.0).abs() < 0.05, "variance {var}");
    let within_2 = a.iter().filter(|v| v.abs() < 2.0).count() as f64 / n;
    assert!((within_2 - 0.9545).abs() < 0.01, "P(|z| < 2) = {within_2}");
    Ok(())
}

#[test]
fn normal_noise_is_keyed_normal_and_batching_invariant() -> Result<()> {
    check_noise(&Device::Cpu, DType::F32)
}

/// The same key gives the same noise on the GPU as on the CPU (up to the
/// dtype's rounding).
#[test]
fn normal_noise_on_cuda_equals_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    let device = match DeviceSpec::cuda(0).open() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return Ok(());
        }
    };
    check_noise(&device, DType::F32)?;
    let key = NoiseKey {
        seed: 5,
        stream: 2,
        step: 9,
    };
    let cpu = Tensor::normal_noise(key, &[1, 7], &[2, 1000], &Device::Cpu, DType::F32)?.to_vec()?;
    let gpu = Tensor::normal_noise(key, &[1, 7], &[2, 1000], &device, DType::F32)?.to_vec()?;
    assert!(rel_l2(&gpu, &cpu) < 1e-6, "{}", rel_l2(&gpu, &cpu));
    Ok(())
}

/// The gradient checker accepts right gradients and rejects wrong ones: of
/// Σx² (2x), of Σ silu(x) (σ(x)(1 + x(1 − σ(x)))), and of a weighted sum
/// (where a gradient in the wrong place must fail).
#[test]
fn gradient_checker_accepts_right_and_rejects_wrong_gradients() -> Result<()> {
    let x = random_tensor(&[3, 5, 7], 1);
    let v = x.to_vec()?;
    let grad =
        |f: &dyn Fn(f32) -> f32| Tensor::from_vec(v.iter().map(|&a| f(a)).collect(), x.dims());

    let square = |t: &Tensor| t.unary(claim::backend::desc::UnaryOp::Square);
    let right = check_gradient(square, &x, &grad(&|a| 2.0 * a)?, 1e-2, 1e-3)?;
    assert!(right.passed(), "{right:?}");
    assert_eq!(right.probed, 105);
    let wrong = check_gradient(square, &x, &grad(&|a| 1.9 * a)?, 1e-2, 1e-3)?;
    assert!(!wrong.passed(), "{wrong:?}");
    let wrong = check_gradient(square, &x, &grad(&|a| 2.0 * a + 0.1)?, 1e-2, 1e-3)?;
    assert!(!wrong.passed(), "{wrong:?}");

    let sigmoid = |a: f32| 1.0 / (1.0 + (-a).exp());
    let silu = |t: &Tensor| t.silu();
    let right = check_gradient(
        silu,
        &x,
        &grad(&|a| sigmoid(a) * (1.0 + a * (1.0 - sigmoid(a))))?,
        1e-2,
        1e-3,
    )?;
    assert!(right.passed(), "{right:?}");
    let wrong = check_gradient(silu, &x, &grad(&sigmoid)?, 1e-2, 1e-3)?;
    assert!(!wrong.passed(), "{wrong:?}");

    // Weighted: d/dx Σ w·x² = 2wx; the gradient of another element's
    // weight (shifted by one) is rejected.
    let w = random_tensor(x.dims(), 2);
    let wv = w.to_vec()?;
    let weighted = |t: &Tensor| square(t)?.mul(&w);
    let right_w = Tensor::from_vec(
        v.iter().zip(&wv).map(|(a, b)| 2.0 * a * b).collect(),
        x.dims(),
    )?;
    assert!(check_gradient(weighted, &x, &right_w, 1e-2, 1e-3)?.passed());
    let shifted = Tensor::from_vec(
        v.iter()
            .enumerate()
            .map(|(i, a)| 2.0 * a * wv[(i + 1) % wv.len()])
            .collect(),
        x.dims(),
    )?;
    assert!(!check_gradient(weighted, &x, &shifted, 1e-2, 1e-3)?.passed());

    // Large inputs are probed at GRAD_PROBES spread elements.
    let big = random_tensor(&[4, 1000], 3);
    let bv = big.to_vec()?;
    let g = Tensor::from_vec(bv.iter().map(|a| 2.0 * a).collect(), big.dims())?;
    let report = check_gradient(square, &big, &g, 1e-2, 1e-3)?;
    assert!(report.passed() && report.probed == claim::testing::op_harness::GRAD_PROBES);

    // Shape mismatches are errors; cases without a backward say so.
    assert!(check_gradient(square, &x, &big, 1e-2, 1e-3).is_err());
    let case = &op_cases()[0];
    assert!(case.backward.is_none());
    assert!(matches!(
        case.check_backward(1e-2, 1e-3),
        Err(claim::Error::Unsupported(_))
    ));
    Ok(())
}

/// A backward attached to a case is checked input by input (the slot the
/// training issue fills): here a hand-written one for `lincomb`, right and
/// then wrong.
#[test]
fn a_case_backward_is_checked_per_input() -> Result<()> {
    let mut case = op_cases()
        .into_iter()
        .find(|c| c.op == "lincomb")
        .expect("a lincomb case");
    case.backward = Some(std::sync::Arc::new(|_, g: &Tensor| {
        Ok(vec![g.affine(0.7, 0.0)?, g.affine(-1.3, 0.0)?])
    }));
    let reports = case.check_backward(1e-2, 1e-3)?;
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.passed()), "{reports:?}");
    case.backward = Some(std::sync::Arc::new(|_, g: &Tensor| {
        Ok(vec![g.affine(0.7, 0.0)?, g.affine(1.3, 0.0)?])
    }));
    let reports = case.check_backward(1e-2, 1e-3)?;
    assert!(reports[0].passed() && !reports[1].passed(), "{reports:?}");
    Ok(())
}

/// Appends one JSON object per line to the file named by `var`, when set
/// (`tools/gpu_check.sh` collects them into its table).
fn append_jsonl(var: &str, rows: impl Iterator<Item = serde_json::Value>) {
    use std::io::Write;
    let Some(path) = std::env::var_os(var) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            for row in rows {
                let _ = writeln!(f, "{row}");
            }
        }
        Err(e) => eprintln!(
            "cannot write {}: {e}",
            std::path::Path::new(&path).display()
        ),
    }
}

fn finite_or_null(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A benchmark op: the inputs (on the device) and the device.
type BenchOp = Box<dyn Fn(&[Tensor], &Device) -> Result<Tensor>>;

/// One case of the GPU benchmark: inputs (shape, storage type) and the op.
/// Names and shapes match `tools/torch_gpu_ops.py`, which times PyTorch
/// fp16 on the same GPU.
struct BenchCase {
    name: &'static str,
    inputs: Vec<(Vec<usize>, DType)>,
    op: BenchOp,
}

fn bench_cases() -> Vec<BenchCase> {
    use claim::backend::desc::{AncestralStep, KnownBlend, NormActivation};
    use claim::nn::ConvParams;
    let h = DType::F16;
    let f = DType::F32;
    let x = vec![8, 72, 1, 72, 72];
    let state = vec![8, 1, 1, 72, 72];
    let case = |name, inputs: Vec<(Vec<usize>, DType)>, op: BenchOp| BenchCase { name, inputs, op };
    vec![
        case("silu", vec![(x.clone(), h)], Box::new(|t, _| t[0].silu())),
        case(
            "gelu",
            vec![(vec![8, 288], h)],
            Box::new(|t, _| t[0].gelu()),
        ),
        case(
            "add_broadcast",
            vec![(x.clone(), h), (vec![8, 72, 1, 1, 1], h)],
            Box::new(|t, _| t[0].add(&t[1])),
        ),
        case(
            "group_norm_silu_film_residual",
            vec![
                (vec![8, 144, 1, 36, 36], h),
                (vec![144], h),
                (vec![144], h),
                (vec![8, 144, 1, 1, 1], h),
                (vec![8, 144, 1, 1, 1], h),
                (vec![8, 144, 1, 36, 36], h),
            ],
            Box::new(|t, _| {
                t[0].group_norm_silu(
                    8,
                    Some(&t[1]),
                    Some(&t[2]),
                    1e-5,
                    Some((&t[3], &t[4])),
                    Some(&t[5]),
                )
            }),
        ),
        case(
            "instance_norm_leaky_relu",
            vec![(vec![2, 32, 256, 256], h), (vec![32], h), (vec![32], h)],
            Box::new(|t, _| {
                t[0].instance_norm_act(
                    Some(&t[1]),
                    Some(&t[2]),
                    1e-5,
                    NormActivation::LeakyRelu(0.01),
                )
            }),
        ),
        case(
            "layer_norm_channels",
            vec![(x.clone(), h), (vec![1, 72, 1, 1, 1], h)],
            Box::new(|t, _| t[0].layer_norm_channels(&t[1], 1e-5)),
        ),
        case(
            "softmax",
            vec![(vec![64, 32, 5184], h)],
            Box::new(|t, _| t[0].softmax(1)),
        ),
        case(
            "conv1x1_qkv",
            vec![(x.clone(), h), (vec![768, 72, 1, 1, 1], h)],
            Box::new(|t, _| t[0].conv2d(&t[1], None, ConvParams::new(1, 0))),
        ),
        case(
            "linear_4096",
            vec![
                (vec![4096, 4096], h),
                (vec![4096, 4096], h),
                (vec![4096], h),
            ],
            Box::new(|t, _| t[0].linear(&t[1], Some(&t[2]))),
        ),
        case(
            "cat_channels",
            vec![(x.clone(), h)],
            Box::new(|t, _| Tensor::cat(&[&t[0], &t[0]], 1)),
        ),
        case(
            "flip_hw",
            vec![(vec![1, 4, 128, 128], h)],
            Box::new(|t, _| t[0].flip(&[2, 3])),
        ),
        case(
            "normal_noise",
            vec![],
            Box::new(|_, d| {
                let key = NoiseKey {
                    seed: 3,
                    stream: 1,
                    step: 7,
                };
                Tensor::normal_noise(
                    key,
                    &[0, 1, 2, 3, 4, 5, 6, 7],
                    &[8, 1, 1, 72, 72],
                    d,
                    DType::F32,
                )
            }),
        ),
        case(
            "known_blend",
            vec![
                (state.clone(), f),
                (state.clone(), f),
                (state.clone(), f),
                (state.clone(), f),
            ],
            Box::new(|t, _| {
                let p = KnownBlend {
                    sqrt_alpha_bar: 0.7,
                    sqrt_one_minus_alpha_bar: 0.71,
                };
                t[0].known_blend(&t[1], &t[2], &t[3], p)
            }),
        ),
        case(
            "ancestral_step",
            vec![(state.clone(), f), (state.clone(), f), (state.clone(), f)],
            Box::new(|t, _| {
                let p = AncestralStep {
                    sqrt_recip_alpha_bar: 1.3,
                    sqrt_recip_m1_alpha_bar: 0.4,
                    coef_x0: 0.9,
                    coef_xt: 0.1,
                    sigma: 0.05,
                };
                t[0].ancestral_step(&t[1], &t[2], p)
            }),
        ),
        case(
            "sinusoidal_embedding",
            vec![],
            Box::new(|_, d| {
                let dtype = if matches!(d, Device::Cpu) {
                    DType::F32
                } else {
                    DType::F16
                };
                Tensor::sinusoidal_embedding_on(&[150.0; 8], 72, d, dtype)
            }),
        ),
    ]
}

/// Times the benchmark list on the first CUDA device (median of CUDA
/// stream-synchronised batches of runs after warm-up) and checks each
/// result against the CPU f32 engine; skipped (and saying so) without a GPU.
#[test]
fn gpu_bench_or_skipped_no_cuda_device() -> Result<()> {
    let device = match DeviceSpec::cuda(0).open() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return Ok(());
        }
    };
    let mut rows = Vec::new();
    for (i, case) in bench_cases().iter().enumerate() {
        let host: Vec<Vec<f32>> = case
            .inputs
            .iter()
            .enumerate()
            .map(|(j, (shape, _))| random_tensor(shape, 1000 + 10 * i as u64 + j as u64).to_vec())
            .collect::<Result<_>>()?;
        let on = |dev: &Device, cpu: bool| -> Result<Vec<Tensor>> {
            host.iter()
                .zip(&case.inputs)
                .map(|(v, (shape, dtype))| {
                    let dtype = if cpu { DType::F32 } else { *dtype };
                    Tensor::from_slice_on(v, shape, dev, dtype)
                })
                .collect()
        };
        let gpu_inputs = on(&device, false)?;
        let want = (case.op)(&on(&Device::Cpu, true)?, &Device::Cpu)?.to_vec()?;
        let got = (case.op)(&gpu_inputs, &device)?.to_vec()?;
        let err = rel_l2(&got, &want);
        for _ in 0..3 {
            (case.op)(&gpu_inputs, &device)?;
        }
        device.synchronize()?;
        let mut times = Vec::new();
        for _ in 0..7 {
            let runs = 10;
            let start = Instant::now();
            for _ in 0..runs {
                (case.op)(&gpu_inputs, &device)?;
            }
            device.synchronize()?;
            times.push(start.elapsed().as_secs_f64() * 1e3 / runs as f64);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let shapes: Vec<String> = case
            .inputs
            .iter()
            .map(|(s, d)| format!("{s:?}{d:?}"))
            .collect();
        println!(
            "{:<32} rel L2 {err:.2e}  {ms:.4} ms  {}",
            case.name,
            shapes.join(" ")
        );
        rows.push(serde_json::json!({
            "name": case.name, "shape": shapes.join(" "), "rel_l2": finite_or_null(err), "gpu_ms": ms,
        }));
        assert!(err < 1e-2, "{}: relative L2 {err}", case.name);
    }
    append_jsonl("CLAIM_GPU_BENCH", rows.into_iter());
    Ok(())
}

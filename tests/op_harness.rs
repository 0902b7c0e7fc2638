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
        "normal_noise",
        "to_dtype",
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

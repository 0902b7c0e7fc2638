//! The denoiser and RePaint synthesis (CUDA back-end II) and nnU-Net's
//! predictor (CUDA back-end III) on a CUDA GPU against the CPU f32 engine,
//! and their timings. Every test opens cuda:0
//! and prints `skipped: no CUDA device (<reason>)` without one, so GPU-less
//! CI only compiles them; `tools/gpu_check.sh` runs them on a GPU machine.
//!
//! Models are full size with random weights from the exact CLAIM key list
//! (`claim::testing::random_denoiser_weights`): CLAIM's 2-D model (C 1,
//! cond 16, 72×72) and LeFusion's EMIDEC model (C 2, cond 32, 10 frames).
//! Results go to stdout and, as JSON lines, to `$CLAIM_GPU_MODELS` when set.

use claim::models::Denoiser;
use claim::nn::layers::Module;
use claim::nn::{DType, Device, DeviceSpec, LoadOptions, Precision, Tensor, Weights};
use claim::phantom::{self, PhantomParams};
use claim::rng::Rng;
use claim::synthesis::repaint::{repaint, BatchNoise, InpaintBatch, Progress, SamplerParams};
use claim::synthesis::{
    evaluation_count, synthesize, JumpParams, Schedule, SynthesisParams, TIMESTEPS,
};
use claim::testing::{random_denoiser_weights, rel_l2};
use claim::{Image, Result};
use std::time::Instant;

/// cuda:0, or `None` after saying why the test is skipped.
pub(crate) fn gpu() -> Option<Device> {
    match DeviceSpec::cuda(0).open() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// Appends JSON lines to the file named by `$CLAIM_GPU_MODELS`, if set.
pub(crate) fn report(rows: &[serde_json::Value]) {
    for r in rows {
        println!("{r}");
    }
    let Some(path) = std::env::var_os("CLAIM_GPU_MODELS") else {
        return;
    };
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        for r in rows {
            let _ = writeln!(f, "{r}");
        }
    }
}

/// Writes what `tools/nnunet_gpu_predictor.py` needs to run nnU-Net's own
/// predictor on the same case: the image as raw little-endian f32 in
/// (z, y, x) order with its shape and (z, y, x) spacing
/// (`phantom_image.f32`, `phantom_image.json`), and claim's GPU label map
/// for `configuration` as raw u8 (`phantom_labels_<configuration>.u8`).
fn write_case_for_nnunet(
    dir: &std::path::Path,
    image: &Image,
    configuration: &str,
    labels: &claim::volume::Volume<u8>,
) -> Result<()> {
    let io = |e: std::io::Error| claim::Error::io_at(dir, &e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let Image::F32(volume) = image else {
        return Err(claim::Error::invalid("the phantom image is f32"));
    };
    let values: Vec<u8> = volume.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("phantom_image.f32"), values).map_err(io)?;
    let s = volume.geometry.spacing;
    let meta = serde_json::json!({
        "shape_zyx": volume.data.shape(),
        "spacing_zyx": [s[2], s[1], s[0]],
    });
    std::fs::write(dir.join("phantom_image.json"), meta.to_string()).map_err(io)?;
    let bytes: Vec<u8> = labels.data.iter().copied().collect();
    std::fs::write(
        dir.join(format!("phantom_labels_{configuration}.u8")),
        bytes,
    )
    .map_err(io)?;
    Ok(())
}

/// The two full-size layouts: (name, channels, cond_dim, frames).
const LAYOUTS: [(&str, usize, usize, usize); 2] =
    [("claim_2d", 1, 16, 1), ("lefusion_3d", 2, 32, 10)];

/// Where the GPU half of every pair of models loads: cuda:0 at the
/// device's default precision (f16).
pub(crate) fn on_gpu() -> LoadOptions {
    LoadOptions {
        device: DeviceSpec::cuda(0),
        precision: Precision::Auto,
    }
}

/// The full-size model of a layout on the CPU and on the GPU.
fn models(channels: usize, cond_dim: usize) -> Result<(Denoiser, Denoiser)> {
    model_pair(&random_denoiser_weights(channels, cond_dim, 11)?)
}

/// `weights` as a model on the CPU (F32) and on the GPU (F16).
pub(crate) fn model_pair(weights: &Weights) -> Result<(Denoiser, Denoiser)> {
    let cpu = Denoiser::load(weights)?;
    let gpu = Denoiser::load_with(weights, &on_gpu())?;
    // The rotary frequencies stay f32 on the device (autocast keeps that
    // buffer f32); every other parameter is f16.
    for (key, t) in gpu.named_parameters() {
        let want = if key.ends_with("rotary_emb.freqs") {
            DType::F32
        } else {
            DType::F16
        };
        assert_eq!(t.dtype(), want, "{key} on the GPU");
    }
    Ok((cpu, gpu))
}

/// Random inputs of one forward: x `[B, C, F, size, size]`, timesteps and
/// histogram conditions (rows summing to one).
pub(crate) fn inputs(
    [batch, channels, frames, size]: [usize; 4],
    cond_dim: usize,
    seed: u64,
) -> Result<(Tensor, Vec<f32>, Tensor)> {
    let mut rng = Rng::new(seed);
    let n = batch * channels * frames * size * size;
    let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let t: Vec<f32> = (0..batch)
        .map(|_| (rng.next_u64() % TIMESTEPS as u64) as f32)
        .collect();
    let mut cond = Vec::with_capacity(batch * cond_dim);
    for _ in 0..batch {
        let row: Vec<f64> = (0..cond_dim).map(|_| rng.uniform()).collect();
        let sum: f64 = row.iter().sum();
        cond.extend(row.iter().map(|v| (v / sum) as f32));
    }
    Ok((
        Tensor::from_vec(x, &[batch, channels, frames, size, size])?,
        t,
        Tensor::from_vec(cond, &[batch, cond_dim])?,
    ))
}

/// Full-size denoisers, batches 1 and 16: the GPU's fp16 noise prediction
/// within 2e-2 relative L2 of the CPU's f32 one, plain and with
/// classifier-free guidance (both branches in one batched forward).
#[test]
fn cuda_denoiser_matches_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let mut rows = Vec::new();
    for (name, channels, cond_dim, frames) in LAYOUTS {
        let (cpu, gpu) = models(channels, cond_dim)?;
        for batch in [1, 16] {
            let (x, t, cond) = inputs([batch, channels, frames, 72], cond_dim, 20 + batch as u64)?;
            let (err, err_g) =
                prediction_errors(&format!("{name} batch {batch}"), &cpu, &gpu, &x, &t, &cond)?;
            rows.push(serde_json::json!({
                "kind": "parity", "model": name, "batch": batch,
                "rel_l2": err, "rel_l2_guided": err_g,
            }));
        }
    }
    report(&rows);
    Ok(())
}

/// The relative L2 errors of the GPU model's noise prediction against the
/// CPU model's on the same inputs, plain and with guidance at scale 3
/// (both branches in one batched forward); each must be within 2e-2.
pub(crate) fn prediction_errors(
    case: &str,
    cpu: &Denoiser,
    gpu: &Denoiser,
    x: &Tensor,
    t: &[f32],
    cond: &Tensor,
) -> Result<(f64, f64)> {
    let want = cpu.predict_noise(x, t, Some(cond))?.to_vec()?;
    let got = gpu.predict_noise(x, t, Some(cond))?.to_vec()?;
    let err = rel_l2(&got, &want);
    let want_g = cpu.predict_noise_guided(x, t, cond, 3.0)?.to_vec()?;
    let got_g = gpu.predict_noise_guided(x, t, cond, 3.0)?.to_vec()?;
    let err_g = rel_l2(&got_g, &want_g);
    assert!(err <= 2e-2, "{case}: relative L2 {err}");
    assert!(err_g <= 2e-2, "{case} guided: relative L2 {err_g}");
    Ok((err, err_g))
}

/// A phantom case through the whole synthesis pipeline on the GPU and on
/// the CPU (same seed, CLAIM-size model, a complete RePaint run with a
/// 50-step 5/5 jump schedule so the CPU side stays short): outside the
/// lesion the images are bit-identical; inside, the mean absolute
/// difference is reported and small against the lesion's intensity range.
#[test]
fn cuda_synthesis_matches_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let (cpu, gpu) = models(1, 16)?;
    let case = PhantomParams {
        seed: 3,
        with_scar: true,
        matrix_size: 96,
        slice_count: 8,
        ..PhantomParams::default()
    };
    let params = SynthesisParams {
        seed: 7,
        jump: JumpParams {
            t_start: 50,
            jump_length: 5,
            jump_n_sample: 5,
        },
        crop_size: 72,
        batch_size: 16,
        labels: phantom::LABEL_SCHEME,
        ..SynthesisParams::default()
    };
    synthesis_parity(&cpu, &gpu, &case, &params, "repaint_parity")
}

/// Synthesises the phantom `case`'s lesion with `params` on the CPU and on
/// the GPU model: outside the lesion the images must be bit-identical,
/// inside the mean absolute difference within 5 % of the lesion's
/// intensity range. Reports the row (of `kind`) with both times before
/// checking.
pub(crate) fn synthesis_parity(
    cpu: &Denoiser,
    gpu: &Denoiser,
    case: &PhantomParams,
    params: &SynthesisParams,
    kind: &str,
) -> Result<()> {
    let case = phantom::generate(case)?;
    let (image, labels) = (Image::F32(case.image), case.labels);
    let scheme = params.labels;
    let start = Instant::now();
    let on_cpu = synthesize(cpu, &image, &labels, params, &mut |_, _| true)?;
    let cpu_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let on_gpu = synthesize(gpu, &image, &labels, params, &mut |_, _| true)?;
    let gpu_s = start.elapsed().as_secs_f64();
    let (Image::F32(a), Image::F32(b)) = (&on_cpu.image, &on_gpu.image) else {
        return Err(claim::Error::Internal(
            "the pipeline changed the image type".into(),
        ));
    };
    let (mut sum, mut count, mut outside_changed) = (0f64, 0usize, 0usize);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for ((x, y), l) in a.data.iter().zip(b.data.iter()).zip(&labels.data) {
        if scheme.is_lesion(*l) {
            sum += f64::from((x - y).abs());
            count += 1;
            lo = lo.min(*x);
            hi = hi.max(*x);
        } else if x.to_bits() != y.to_bits() {
            outside_changed += 1;
        }
    }
    assert!(count > 0, "the phantom has no lesion");
    let mad = sum / count as f64;
    let range = f64::from(hi - lo);
    report(&[serde_json::json!({
        "kind": kind, "lesion_voxels": count, "slices": on_gpu.items,
        "evaluations": on_gpu.network_evaluations, "mean_abs_diff": mad, "lesion_range": range,
        "changed_outside_lesion": outside_changed, "cpu_s": cpu_s, "gpu_s": gpu_s,
    })]);
    assert_eq!(outside_changed, 0, "voxels outside the lesion differ");
    assert!(
        mad <= 0.05 * range,
        "painted region differs by {mad} (range {range})"
    );
    Ok(())
}

/// Median milliseconds of `f` over `reps` runs after two warm-ups, each run
/// ended by a stream synchronisation.
pub(crate) fn median_ms(
    device: &Device,
    reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// GPU timings of the denoiser (batches 1, 16, 64; one 3-D window) and of
/// RePaint 5/5 over a batch of 16 slices, for `tools/gpu_check.sh`'s table
/// beside PyTorch fp16. Runs only when `$CLAIM_GPU_MODELS` is set (and a
/// GPU is there).
#[test]
fn gpu_model_bench_or_skipped() -> Result<()> {
    if std::env::var_os("CLAIM_GPU_MODELS").is_none() {
        eprintln!("skipped: set CLAIM_GPU_MODELS=FILE to time the models on the GPU");
        return Ok(());
    }
    let Some(device) = gpu() else { return Ok(()) };
    let mut rows = Vec::new();
    for (name, channels, cond_dim, frames) in LAYOUTS {
        let (_, model) = models(channels, cond_dim)?;
        let batches: &[usize] = if frames == 1 { &[1, 16, 64] } else { &[1] };
        for &batch in batches {
            let (x, t, cond) = inputs([batch, channels, frames, 72], cond_dim, 40)?;
            let x = x.to_device(&device, claim::nn::DType::F32)?;
            let cond = cond.to_device(&device, claim::nn::DType::F32)?;
            let ms = median_ms(&device, 20, || {
                model.predict_noise(&x, &t, Some(&cond)).map(|_| ())
            })?;
            rows.push(serde_json::json!({
                "kind": "bench", "name": format!("{name}_forward_b{batch}"), "claim_ms": ms,
            }));
        }
    }
    // RePaint 5/5 (t_T 300), 16 slices of 72×72, a disc of radius 12 painted.
    let (_, model) = models(1, 16)?;
    let batch = 16;
    let pixels = 72 * 72;
    let mut rng = Rng::new(50);
    let ground_truth: Vec<f32> = (0..batch * pixels)
        .map(|_| (0.3 * rng.normal() as f32).clamp(-1.0, 1.0))
        .collect();
    let known: Vec<f32> = (0..batch * pixels)
        .map(|i| {
            let p = i % pixels;
            let (y, x) = ((p / 72) as f32 - 35.5, (p % 72) as f32 - 35.5);
            if y * y + x * x < 144.0 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let inpaint = InpaintBatch {
        shape: [batch, 1, 1, 72, 72],
        ground_truth,
        known,
        conditions: Some(vec![1.0 / 16.0; batch * 16]),
    };
    let params = SamplerParams::default();
    let schedule = Schedule::cosine(TIMESTEPS)?;
    let evaluations = evaluation_count(params.jump)?;
    let noise = BatchNoise {
        seed: 1,
        items: (0..batch as u32).collect(),
    };
    let start = Instant::now();
    let mut on_progress = |_: u64, _: u64| true;
    let mut progress = Progress::new(evaluations as u64, &mut on_progress);
    let sample = repaint(&model, &schedule, &inpaint, &params, &noise, &mut progress)?;
    let total_s = start.elapsed().as_secs_f64();
    assert!(sample.iter().all(|v| v.is_finite()));
    rows.push(serde_json::json!({
        "kind": "bench", "name": "repaint_5_5_b16", "claim_ms": total_s * 1e3,
        "evaluations": evaluations, "per_slice_s": total_s / batch as f64,
    }));
    report(&rows);
    Ok(())
}

/// nnU-Net's predictor on the GPU (CUDA back-end III): the golden 2d
/// (two folds, mirroring) and 3d_fullres results folders of
/// `tools/nnunet_reference.py` segment the built-in phantom on cuda:0 (f16)
/// and on the CPU (f32). The fold-averaged logits agree within 2e-2
/// relative L2 and ≥ 99.9 % of the labels are equal; the rows give both
/// whole-case times.
#[test]
fn cuda_segmenter_matches_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let image = Image::F32(phantom::generate(&PhantomParams::default())?.image);
    let rows = segmenter_parity(&image, 0.999, true)?;
    report(&rows);
    Ok(())
}

/// [`cuda_segmenter_matches_the_cpu_or_skipped_no_cuda_device`]'s checks
/// on `image`, one row per configuration: logits within 2e-2 relative L2,
/// at least `min_agreement` of the labels equal, and every label that
/// differs explained by a near tie: the CPU's two best logits there are
/// closer than twice the largest logit error, so the GPU's error can
/// swap them (a wrong kernel flips labels with wide margins). A
/// `whole_case` is timed after a warm-up run, and it and the GPU's labels
/// go to `$CLAIM_GPU_CASE_DIR` for nnU-Net's predictor.
pub(crate) fn segmenter_parity(
    image: &Image,
    min_agreement: f64,
    whole_case: bool,
) -> Result<Vec<serde_json::Value>> {
    use claim::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
    use claim::volume::LabelScheme;
    let params = SegmentParams {
        mirroring: true,
        step_size: 0.5,
        postprocess: false,
        label_scheme: LabelScheme::EMIDEC,
    };
    let mut rows = Vec::new();
    for (configuration, folds) in [("2d", vec![0, 1]), ("3d_fullres", vec![0])] {
        let folder = claim::testing::fixture_path("nnunet").join(format!(
            "Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__{configuration}"
        ));
        let options = SegmenterOptions {
            folds: Some(folds),
            configuration: None,
        };
        let cpu = Segmenter::load(&folder, &options)?;
        let on_gpu = Segmenter::load_with(&folder, &options, &on_gpu())?;
        let start = Instant::now();
        let (want, want_logits) = cpu.segment_with_logits(&[image], &params, &mut |_, _| true)?;
        let cpu_s = start.elapsed().as_secs_f64();
        if whole_case {
            // Once to load the kernels and fill the buffer pool, then timed.
            on_gpu.segment_with_logits(&[image], &params, &mut |_, _| true)?;
        }
        let start = Instant::now();
        let (got, got_logits) = on_gpu.segment_with_logits(&[image], &params, &mut |_, _| true)?;
        let gpu_s = start.elapsed().as_secs_f64();
        // Labels only: the fold mean and the argmax stay on the GPU (when no
        // resampling needs the logits) and must give the same map.
        let start = Instant::now();
        let labels_only = on_gpu.segment(image, &params, &mut |_, _| true)?;
        let gpu_labels_s = start.elapsed().as_secs_f64();
        assert!(
            labels_only.data == got.data,
            "{configuration}: the labels-only prediction differs from the argmax of the logits"
        );
        if let (true, Some(dir)) = (whole_case, std::env::var_os("CLAIM_GPU_CASE_DIR")) {
            write_case_for_nnunet(std::path::Path::new(&dir), image, configuration, &got)?;
        }
        let as_f32 = |l: &claim::segmentation::CaseLogits| -> Vec<f32> {
            l.values.iter().map(|v| v.to_f32()).collect()
        };
        let (got_values, want_values) = (as_f32(&got_logits), as_f32(&want_logits));
        let err = rel_l2(&got_values, &want_values);
        let max_logit_error = claim::testing::max_abs_diff(&got_values, &want_values);
        assert_eq!(got.dims(), want.dims());
        let (mut equal, mut widest_margin, mut unexplained) = (0usize, 0f32, 0usize);
        for ((k, j, i), a) in got.data.indexed_iter() {
            if *a == want.data[[k, j, i]] {
                equal += 1;
                continue;
            }
            let mut logits = want_logits.at([i, j, k]).unwrap_or_default();
            logits.sort_by(|x, y| y.total_cmp(x));
            let margin = match logits.as_slice() {
                [first, second, ..] => first - second,
                _ => f32::INFINITY,
            };
            widest_margin = widest_margin.max(margin);
            if margin > 2.0 * max_logit_error {
                unexplained += 1;
            }
        }
        let agreement = equal as f64 / got.len() as f64;
        rows.push(serde_json::json!({
            "kind": "segmenter_parity", "configuration": configuration,
            "case": if whole_case { "whole" } else { "small" }, "rel_l2": err,
            "label_agreement": agreement, "voxels": got.len(),
            "max_logit_error": max_logit_error, "widest_flipped_margin": widest_margin,
            "cpu_s": cpu_s, "gpu_s": gpu_s, "gpu_labels_only_s": gpu_labels_s,
        }));
        assert!(
            err <= 2e-2,
            "{configuration}: logits relative L2 {err:e} > 2e-2"
        );
        assert!(
            agreement >= min_agreement,
            "{configuration}: only {:.4} % of the labels agree",
            100.0 * agreement
        );
        assert_eq!(
            unexplained, 0,
            "{configuration}: {unexplained} labels differ where the CPU's margin exceeds twice \
             the largest logit error {max_logit_error} (widest {widest_margin})"
        );
    }
    Ok(rows)
}

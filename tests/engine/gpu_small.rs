//! The GPU's model paths at a size the CUDA emulator can run: the same
//! code as `gpu.rs` (the denoiser's forward and guidance, its captured
//! graph, RePaint and the synthesis pipeline on the device) on small
//! models, so `tools/emu_check.sh` checks them on every CI run and a GPU
//! session spends its minutes on the full-size tests and timings. Every
//! test opens cuda:0 and prints `skipped: no CUDA device (<reason>)`
//! without one.

use super::gpu::{
    gpu, inputs, model_pair, on_gpu, prediction_errors, report, segmenter_parity, synthesis_parity,
};
use claim::models::{builtin, Denoiser, DenoiserConfig};
use claim::nn::LoadOptions;
use claim::phantom::{self, PhantomParams};
use claim::synthesis::repaint::{repaint, BatchNoise, InpaintBatch, Progress, SamplerParams};
use claim::synthesis::{evaluation_count, JumpParams, Schedule, SynthesisParams};
use claim::testing::{max_abs_diff, random_weights_for, rel_l2};
use claim::{Error, Image, Result};

/// A two-level denoiser with every block type of the full one (resnets
/// with time and condition embedding, spatial linear attention, temporal
/// attention with rotary embedding and relative position bias, down- and
/// up-sampling), 16 wide.
fn small_config(channels: usize, cond_dim: usize) -> DenoiserConfig {
    DenoiserConfig {
        dim: 16,
        dim_mults: vec![1, 2],
        channels,
        cond_dim: Some(cond_dim),
        attn_heads: 2,
        attn_dim_head: 16,
        ..DenoiserConfig::claim()
    }
}

/// The small layouts: (name, channels, cond_dim, frames), at 16×16.
const SMALL_LAYOUTS: [(&str, usize, usize, usize); 2] =
    [("small_2d", 1, 16, 1), ("small_3d", 2, 32, 3)];
const SMALL_SIZE: usize = 16;

/// Small denoisers on the GPU against the CPU f32 engine: plain and guided
/// noise predictions within 2e-2 relative L2 (the full-size criterion),
/// batches 1 and 2. The captured graph replays the eager forward exactly,
/// and a second replay with new inputs and timestep follows them (the
/// graph reads its input buffers, not copies taken at capture).
#[test]
fn cuda_small_denoisers_match_the_cpu_and_replay_their_graphs_or_skipped_no_cuda_device(
) -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let mut rows = Vec::new();
    for (name, channels, cond_dim, frames) in SMALL_LAYOUTS {
        let (cpu, gpu) = model_pair(&random_weights_for(&small_config(channels, cond_dim), 5)?)?;
        for batch in [1, 2] {
            let shape = [batch, channels, frames, SMALL_SIZE];
            let (x, t, cond) = inputs(shape, cond_dim, 30 + batch as u64)?;
            let (err, err_g) =
                prediction_errors(&format!("{name} batch {batch}"), &cpu, &gpu, &x, &t, &cond)?;

            let captured = gpu.capture(
                [batch, channels, frames, SMALL_SIZE, SMALL_SIZE],
                Some(&cond.to_device(&gpu.device(), gpu.dtype())?),
                3.0,
            )?;
            let mut replay_diff = 0f32;
            for (seed, step) in [(60, 417.0f32), (61, 12.0)] {
                let (x, _, _) = inputs(shape, cond_dim, seed)?;
                let replayed = captured.predict(&x, step)?.to_vec()?;
                let eager = gpu
                    .predict_noise_guided(&x, &vec![step; batch], &cond, 3.0)?
                    .to_dtype(claim::nn::DType::F32)?
                    .to_vec()?;
                replay_diff = replay_diff.max(max_abs_diff(&replayed, &eager));
            }
            rows.push(serde_json::json!({
                "kind": "parity", "model": name, "batch": batch,
                "rel_l2": err, "rel_l2_guided": err_g, "graph_replay_max_abs_diff": replay_diff,
            }));
            assert!(
                replay_diff == 0.0,
                "{name} batch {batch}: the graph replay differs from the eager forward by {replay_diff}"
            );
        }
    }
    report(&rows);
    Ok(())
}

/// RePaint on the device, the small 2-D denoiser, two 16×16 slices with a
/// painted disc and a short 5/2 schedule: the GPU's sample is near the
/// CPU's (f32, same noise: Philox draws the same numbers on both);
/// replaying the captured evaluation gives the same sample as eager
/// evaluation; progress counts every evaluation and a cancel from the
/// callback stops the run.
#[test]
fn cuda_repaint_matches_the_cpu_and_is_the_same_with_graphs_or_skipped_no_cuda_device() -> Result<()>
{
    if gpu().is_none() {
        return Ok(());
    }
    let (cpu, gpu) = model_pair(&random_weights_for(&small_config(1, 16), 6)?)?;
    let (batch, size) = (2, SMALL_SIZE);
    let pixels = size * size;
    let mut rng = claim::rng::Rng::new(8);
    let ground_truth: Vec<f32> = (0..batch * pixels)
        .map(|_| (0.3 * rng.normal() as f32).clamp(-1.0, 1.0))
        .collect();
    let centre = (size as f32 - 1.0) / 2.0;
    let inside = |i: usize| {
        let p = i % pixels;
        let (y, x) = ((p / size) as f32 - centre, (p % size) as f32 - centre);
        y * y + x * x < 25.0
    };
    let known: Vec<f32> = (0..batch * pixels)
        .map(|i| if inside(i) { 0.0 } else { 1.0 })
        .collect();
    let inpaint = InpaintBatch {
        shape: [batch, 1, 1, size, size],
        ground_truth,
        known,
        conditions: Some(vec![1.0 / 16.0; batch * 16]),
    };
    let jump = JumpParams {
        t_start: 20,
        jump_length: 5,
        jump_n_sample: 2,
    };
    let schedule = Schedule::cosine(claim::synthesis::TIMESTEPS)?;
    let noise = BatchNoise {
        seed: 4,
        items: vec![7, 8],
    };
    let evaluations = evaluation_count(jump)? as u64;
    let run = |model: &Denoiser, graphs: bool| -> Result<(Vec<f32>, u64)> {
        let params = SamplerParams {
            jump,
            guidance: 1.0,
            graphs,
        };
        let mut last = 0;
        let mut on_progress = |done: u64, _: u64| {
            last = done;
            true
        };
        let mut progress = Progress::new(evaluations, &mut on_progress);
        let sample = repaint(model, &schedule, &inpaint, &params, &noise, &mut progress)?;
        Ok((sample, last))
    };
    let (want, _) = run(&cpu, false)?;
    let (eager, _) = run(&gpu, false)?;
    let (replayed, counted) = run(&gpu, true)?;
    assert_eq!(
        counted, evaluations,
        "progress did not count every evaluation"
    );
    assert!(
        max_abs_diff(&replayed, &eager) == 0.0,
        "RePaint with the captured graph differs from eager evaluation by {}",
        max_abs_diff(&replayed, &eager)
    );
    let (mut sum, mut count) = (0f64, 0usize);
    for (i, (g, c)) in replayed.iter().zip(&want).enumerate() {
        if inside(i) {
            sum += f64::from((g - c).abs());
            count += 1;
        }
    }
    let mad = sum / count as f64;
    let err = rel_l2(&replayed, &want);
    report(&[serde_json::json!({
        "kind": "small_repaint_parity", "model": "small_2d", "batch": batch,
        "evaluations": evaluations, "mean_abs_diff_painted": mad, "rel_l2": err,
    })]);
    assert!(
        mad <= 0.1,
        "painted region differs by {mad} (values in [-1, 1])"
    );
    assert!(err <= 5e-2, "the sample differs by relative L2 {err}");

    // A cancel from the callback ends the device run with Cancelled.
    let params = SamplerParams {
        jump,
        ..SamplerParams::default()
    };
    let mut calls = 0;
    let mut cancel_after_three = |done: u64, _: u64| {
        calls += 1;
        done < 3
    };
    let mut progress = Progress::new(evaluations, &mut cancel_after_three);
    let cancelled = repaint(&gpu, &schedule, &inpaint, &params, &noise, &mut progress);
    assert!(
        matches!(cancelled, Err(Error::Cancelled)),
        "a cancel did not stop the run: {cancelled:?}"
    );
    assert!(calls <= 5, "the callback ran {calls} times after a cancel");
    Ok(())
}

/// The synthesis pipeline on the device (built-in model, a phantom's
/// scar, a 10-step schedule): outside the lesion the image is
/// bit-identical to the CPU's; inside, the mean absolute difference is
/// small against the lesion's intensity range.
#[test]
fn cuda_small_synthesis_matches_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let cpu = builtin::denoiser(&LoadOptions::default())?;
    let gpu = builtin::denoiser(&on_gpu())?;
    let case = PhantomParams {
        seed: 3,
        with_scar: true,
        matrix_size: 96,
        slice_count: 4,
        ..PhantomParams::default()
    };
    let params = SynthesisParams {
        seed: 7,
        jump: JumpParams {
            t_start: 10,
            jump_length: 1,
            jump_n_sample: 1,
        },
        labels: phantom::LABEL_SCHEME,
        ..SynthesisParams::default()
    };
    synthesis_parity(&cpu, &gpu, &case, &params, "synthesis_parity")
}

/// nnU-Net's predictor on the device (the golden 2d and 3d_fullres results
/// folders, mirroring, two folds) on a small phantom: the checks of the
/// whole-case test in `gpu.rs` (logits within 2e-2 relative L2, every
/// differing label a near tie, labels-only prediction equal to the
/// argmax). At 48×48×4 the boundary holds a larger share of the voxels
/// than in a whole case, so ≥ 99 % of labels must agree rather than
/// 99.9 % (measured on the emulator: 99.86 % for 2d, 99.87 % for
/// 3d_fullres, every differing label a near tie).
#[test]
fn cuda_segmenter_on_a_small_case_matches_the_cpu_or_skipped_no_cuda_device() -> Result<()> {
    if gpu().is_none() {
        return Ok(());
    }
    let image = Image::F32(
        phantom::generate(&PhantomParams {
            seed: 2,
            with_scar: true,
            matrix_size: 48,
            slice_count: 4,
            ..PhantomParams::default()
        })?
        .image,
    );
    report(&segmenter_parity(&image, 0.99, false)?);
    Ok(())
}

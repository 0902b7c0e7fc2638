//! Training end to end on the built-in phantoms: a small diffusion model
//! learns (its loss falls) and what it synthesizes is LGE-bright scar,
//! with every voxel outside the lesion untouched.

use claim::models::{Denoiser, DenoiserConfig};
use claim::phantom::{generate, PhantomParams, LABEL_SCHEME};
use claim::synthesis::{
    measure_channel_histograms, synthesize, Condition, JumpParams, Layout, SynthesisParams,
};
use claim::train::data::phantom_dataset;
use claim::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use claim::train::optim::{EmaPolicy, OptimOptions};
use claim::volume::Image;

/// Steps of the phantom run (CLAIM_TRAIN_STEPS overrides, for longer runs).
fn steps() -> u64 {
    std::env::var("CLAIM_TRAIN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn mean(values: impl Iterator<Item = f32>) -> f64 {
    let (sum, n) = values.fold((0f64, 0usize), |(s, n), v| (s + f64::from(v), n + 1));
    sum / n.max(1) as f64
}

#[test]
fn a_small_diffusion_model_trained_on_phantoms_paints_bright_scar() {
    let config = DiffusionTrainConfig {
        model: DenoiserConfig {
            dim: 16,
            dim_mults: vec![1, 2],
            channels: 1,
            cond_dim: Some(16),
            attn_heads: 2,
            attn_dim_head: 16,
            init_kernel_size: 7,
            resnet_groups: 8,
            use_sparse_linear_attn: true,
        },
        frames: 1,
        crop_size: 48,
        batch_size: 4,
        seed: 7,
        ..DiffusionTrainConfig::default()
    };
    let options = OptimOptions {
        lr: 2e-3,
        ema: Some(EmaPolicy {
            decay: 0.98,
            every: 5,
            start: 100,
        }),
        ..OptimOptions::diffusion()
    };
    let total = steps();
    let data = phantom_dataset(6, 1000, 96, 6).unwrap();
    let mut trainer = DiffusionTrainer::new(&data, config, options, total).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let early = dir.path().join("early.safetensors");
    let started = std::time::Instant::now();
    let losses: Vec<f32> = (0..total)
        .map(|s| {
            if s == EARLY_STEP {
                trainer.export_model(&early).unwrap();
            }
            trainer.step().unwrap().loss
        })
        .collect();
    let quarter = losses.len() / 4;
    let (first, last) = (
        mean(losses[..quarter].iter().copied()),
        mean(losses[losses.len() - quarter..].iter().copied()),
    );
    println!(
        "{total} steps in {:.1} s: mean loss {first:.4} (first quarter) → {last:.4} (last quarter)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        last < 0.8 * first,
        "the loss did not fall: {first} → {last}"
    );

    // Synthesize with the exported model on a phantom it never saw, and
    // with the same run's model after a few steps (an untrained network
    // also fills the lesion with something: RePaint keeps the known region).
    let path = dir.path().join("small.safetensors");
    trainer.export_model(&path).unwrap();
    let trained = paint(&path);
    let untrained = paint(&early);
    println!(
        "scar intensity: phantom's own mean {:.1}; trained model mean {:.1}, distance to the real scar's \
         distribution {:.1}; after {EARLY_STEP} steps mean {:.1}, distance {:.1}; remote myocardium {:.1}",
        trained.truth_mean, trained.scar_mean, trained.distance, untrained.scar_mean, untrained.distance, trained.remote_mean
    );
    assert!(
        trained.scar_mean > trained.remote_mean,
        "synthesized scar {} is not brighter than remote myocardium {}",
        trained.scar_mean,
        trained.remote_mean
    );
    assert!(
        trained.distance < 0.8 * untrained.distance,
        "training did not bring the scar intensities closer to the real ones: {} vs {}",
        trained.distance,
        untrained.distance
    );
}

/// Steps after which the "untrained" comparison model is taken.
const EARLY_STEP: u64 = 4;

/// What synthesis on the held-out phantom gave.
struct Painted {
    scar_mean: f64,
    remote_mean: f64,
    truth_mean: f64,
    /// Wasserstein-1 distance between the synthesized and the real scar
    /// intensities (mean absolute difference of 99 quantiles).
    distance: f64,
}

fn quantiles(mut v: Vec<f32>) -> Vec<f64> {
    v.sort_by(f32::total_cmp);
    (1..100)
        .map(|q| f64::from(v[(q * (v.len() - 1)) / 100]))
        .collect()
}

/// Synthesizes scar on held-out phantom seed 1 with the model at `path`;
/// checks every voxel outside the lesion is untouched.
fn paint(path: &std::path::Path) -> Painted {
    let crop = 48;
    let model = Denoiser::from_file(path).unwrap();
    let case = generate(&PhantomParams {
        seed: 1,
        with_scar: true,
        matrix_size: 96,
        slice_count: 6,
        ..PhantomParams::default()
    })
    .unwrap();
    let image = Image::F32(case.image.clone());
    let mut params = SynthesisParams {
        seed: 3,
        jump: JumpParams {
            t_start: 300,
            jump_length: 1,
            jump_n_sample: 1,
        },
        crop_size: crop,
        frames: 1,
        labels: LABEL_SCHEME,
        ..SynthesisParams::default()
    };
    let layout = Layout::resolve(model.config(), &params).unwrap();
    params.condition = Condition::Values(
        measure_channel_histograms(&image, &case.labels, &LABEL_SCHEME, &layout, crop).unwrap(),
    );
    let out = synthesize(&model, &image, &case.labels, &params, &mut |_, _| true).unwrap();
    let Image::F32(painted) = out.image else {
        panic!("the output changed dtype")
    };
    let (painted, original) = (painted.as_slice().unwrap(), case.image.as_slice().unwrap());
    let labels = case.labels.as_slice().unwrap();
    let lesion = |l: i32| l == LABEL_SCHEME.scar || l == LABEL_SCHEME.mvo;
    for ((a, b), l) in painted.iter().zip(original).zip(labels) {
        if !lesion(*l) {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "a voxel outside the lesion changed"
            );
        }
    }
    // Scar vs remote myocardium on the slices that hold scar.
    let [ni, nj, _] = case.labels.dims();
    let on_scar_slices = |i: usize| out.slices.contains(&(i / (ni * nj)));
    let pick = |values: &[f32], want: i32| -> Vec<f32> {
        values
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(i, (_, l))| **l == want && on_scar_slices(*i))
            .map(|(_, (v, _))| *v)
            .collect()
    };
    let (scar, truth) = (
        pick(painted, LABEL_SCHEME.scar),
        pick(original, LABEL_SCHEME.scar),
    );
    let distance = quantiles(scar.clone())
        .iter()
        .zip(quantiles(truth.clone()))
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / 99.0;
    Painted {
        scar_mean: mean(scar.into_iter()),
        remote_mean: mean(pick(painted, LABEL_SCHEME.myocardium).into_iter()),
        truth_mean: mean(truth.into_iter()),
        distance,
    }
}

/// The exported model loads into upstream's Unet3D with `strict=True`
/// (tools/torch_load_trained.py) and PyTorch's forward equals claim's.
#[test]
fn a_trained_model_loads_strictly_in_pytorch() {
    let Some(python) = crate::torch_python() else {
        eprintln!("skipped: no Python with torch and safetensors (set CLAIM_TORCH_PYTHON)");
        return;
    };
    let config = DiffusionTrainConfig {
        model: DenoiserConfig {
            dim: 8,
            dim_mults: vec![1, 2],
            channels: 1,
            cond_dim: Some(16),
            attn_heads: 2,
            attn_dim_head: 8,
            init_kernel_size: 7,
            resnet_groups: 8,
            use_sparse_linear_attn: true,
        },
        frames: 1,
        crop_size: 32,
        batch_size: 2,
        ..DiffusionTrainConfig::default()
    };
    let data = phantom_dataset(1, 1000, 64, 4).unwrap();
    let mut trainer = DiffusionTrainer::new(&data, config, OptimOptions::diffusion(), 2).unwrap();
    trainer.step().unwrap();
    trainer.step().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (model_path, io_path) = (
        dir.path().join("m.safetensors"),
        dir.path().join("torch.safetensors"),
    );
    trainer.export_model(&model_path).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/torch_load_trained.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&model_path)
        .arg(&io_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let io = claim::nn::Weights::load(&io_path).unwrap();
    let model = Denoiser::from_file(&model_path).unwrap();
    let t = io.peek("t").unwrap().to_vec().unwrap();
    let got = model
        .predict_noise(io.peek("x").unwrap(), &t, io.peek("cond"))
        .unwrap();
    let (_, rel) = claim::testing::tensor_errors(&got, io.peek("out").unwrap());
    println!("PyTorch strict load ok; claim vs PyTorch forward: relative error {rel:.2e}");
    assert!(rel < 1e-4, "claim and PyTorch disagree: {rel}");
}

/// A small 2-D segmenter trained on phantoms (nnU-Net's recipe: Dice + CE
/// with deep supervision, SGD Nesterov, poly rate, oversampling,
/// augmentations) segments held-out phantoms through its results folder,
/// loaded as `claim segment` loads it: myocardium Dice ≥ 0.8, scar Dice
/// ≥ 0.6. `CLAIM_SEG_STEPS` sets the steps (default 320; in release, 250
/// steps give scar Dice 0.77 and 400 give 0.86).
#[test]
fn a_small_segmenter_trained_on_phantoms_segments_held_out_phantoms() {
    use claim::segmentation::{SegmentParams, Segmenter};
    use claim::train::segmenter::{
        derive_plans, set_network, SegTrainConfig, SegmenterTrainer, CHECKPOINT_FINAL,
        CONFIGURATION_2D,
    };
    let steps: usize = std::env::var("CLAIM_SEG_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(320);
    let data = phantom_dataset(8, 2000, 96, 4).unwrap();
    let (mut plans, _) = derive_plans(&data, "Dataset001_phantom").unwrap();
    set_network(
        &mut plans,
        CONFIGURATION_2D,
        &[64, 64],
        &[16, 32, 64, 128],
        2,
    )
    .unwrap();
    let config = SegTrainConfig {
        epochs: 1,
        iterations_per_epoch: steps,
        batch_size: Some(8),
        seed: 4,
        ..SegTrainConfig::default()
    };
    let mut trainer = SegmenterTrainer::new(&data, Some(plans), config).unwrap();
    let started = std::time::Instant::now();
    let losses: Vec<f32> = (0..steps).map(|_| trainer.step().unwrap().loss).collect();
    let tenth = (steps / 10).max(1);
    println!(
        "{steps} steps in {:.1} s: loss {:.3} → {:.3}; validation Dice per class {:?}",
        started.elapsed().as_secs_f64(),
        mean(losses[..tenth].iter().copied()),
        mean(losses[steps - tenth..].iter().copied()),
        trainer.validate().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    trainer.write_results(dir.path(), CHECKPOINT_FINAL).unwrap();
    let segmenter = Segmenter::load(dir.path(), &Default::default()).unwrap();
    let params = SegmentParams {
        label_scheme: LABEL_SCHEME,
        postprocess: false,
        ..SegmentParams::default()
    };
    let (mut myo, mut scar) = (Vec::new(), Vec::new());
    for seed in [1, 2, 3] {
        let case = generate(&PhantomParams {
            seed,
            with_scar: true,
            matrix_size: 96,
            slice_count: 4,
            ..PhantomParams::default()
        })
        .unwrap();
        let pred = segmenter
            .segment(&Image::F32(case.image.clone()), &params, &mut |_, _| true)
            .unwrap();
        let dice = |label: i32| {
            let (p, t) = (pred.as_slice().unwrap(), case.labels.as_slice().unwrap());
            let (mut inter, mut n) = (0usize, 0usize);
            for (&a, &b) in p.iter().zip(t) {
                let (a, b) = (i32::from(a) == label, b == label);
                inter += usize::from(a && b);
                n += usize::from(a) + usize::from(b);
            }
            2.0 * inter as f64 / n.max(1) as f64
        };
        myo.push(dice(LABEL_SCHEME.myocardium));
        scar.push(dice(LABEL_SCHEME.scar));
    }
    let (myo, scar) = (
        mean(myo.iter().map(|&d| d as f32)),
        mean(scar.iter().map(|&d| d as f32)),
    );
    println!("held-out phantoms: myocardium Dice {myo:.3}, scar Dice {scar:.3}");
    assert!(myo >= 0.8, "myocardium Dice {myo}");
    assert!(scar >= 0.6, "scar Dice {scar}");
}

//! One training step (forward + backward + optimizer update) on the CPU,
//! the shapes of `tools/bench_torch_train.py` (the PyTorch counterpart;
//! report the ratio of the two measured on one machine in one session):
//!
//! - `denoiser_step_claim_b4`: the full CLAIM denoiser (dim 72, mults
//!   1,2,4,8, one channel, 16-bin condition) at batch 4 on 72×72 phantom
//!   windows (F = 1), lesion-focused masked L1, Adam 1e-4, EMA — a
//!   [`DiffusionTrainer::step`];
//! - `plain_unet_2d_step_b12_192`: the 2-D PlainConvUNet of an EMIDEC-like
//!   nnU-Net plan (6 stages, features 32..512, 3×3, strides 1,2,2,2,2,2,
//!   InstanceNorm + LeakyReLU, 4 classes) at nnU-Net's batch 12 of 192×192
//!   patches, cross-entropy, SGD 0.01 Nesterov 0.99, weight decay 3e-5.
//!   `CLAIM_BENCH_SEG_BATCH` / `CLAIM_BENCH_SEG_PATCH` change the shape
//!   (pass the same `--seg-batch`/`--seg-patch` to the PyTorch script).
//! - `adam_update_denoiser_size`: the host optimiser's share of a step
//!   with the weights on the host: Adam over the CLAIM denoiser's 44.75 M
//!   f32 parameters (with the unscale and the gradient norm a mixed-
//!   precision step adds). A GPU step with resident weights does this on
//!   the device instead (`claim::train::resident`); this is what it saves
//!   beside the PCIe copies of weights and gradients.

use claim::models::plain_unet::random_state_dict;
use claim::models::{PlainConvUNet, PlainUNetConfig};
use claim::nn::Tensor;
use claim::rng::Rng;
use claim::train::data::phantom_dataset;
use claim::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use claim::train::optim::{
    parameter_tensors, take_host_gradients, OptimOptions, Optimizer, OptimizerKind, Parameter,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn segmenter_config() -> PlainUNetConfig {
    PlainUNetConfig::standard(2, 1, 4, vec![32, 64, 128, 256, 512, 512])
}

fn bench_train(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .warm_up_time(Duration::from_secs(1));

    let data = phantom_dataset(2, 1000, 192, 10).expect("phantoms");
    let config = DiffusionTrainConfig {
        batch_size: 4,
        frames: 1,
        ..DiffusionTrainConfig::default()
    };
    let mut trainer = DiffusionTrainer::new(&data, config, OptimOptions::diffusion(), 1_000_000)
        .expect("trainer");
    group.bench_function("denoiser_step_claim_b4", |b| {
        b.iter(|| trainer.step().expect("step"))
    });

    let (batch, patch) = (
        env_or("CLAIM_BENCH_SEG_BATCH", 12),
        env_or("CLAIM_BENCH_SEG_PATCH", 192),
    );
    let cfg = segmenter_config();
    let mut params: Vec<Parameter> = random_state_dict(&cfg, 1)
        .into_iter()
        .map(|(name, t)| Parameter {
            shape: t.dims().to_vec(),
            values: t.to_vec().expect("values"),
            name,
            trainable: true,
        })
        .collect();
    let mut optimizer =
        Optimizer::new(OptimizerKind::sgd_nesterov(0.99), 3e-5, params.len()).expect("optimizer");
    let mut rng = Rng::new(2);
    let n = batch * patch * patch;
    let x = Tensor::from_vec(
        (0..n).map(|_| rng.normal() as f32).collect(),
        &[batch, 1, patch, patch],
    )
    .expect("input");
    let target: Vec<u8> = (0..n).map(|_| rng.below(4) as u8).collect();
    group.bench_function(format!("plain_unet_2d_step_b{batch}_{patch}"), |b| {
        b.iter(|| {
            let tensors = parameter_tensors(&params, true).expect("tensors");
            let net = PlainConvUNet::from_state_dict(tensors.clone(), &cfg).expect("network");
            let loss = net
                .forward(&x)
                .and_then(|y| y.cross_entropy_loss(&target))
                .expect("loss");
            let mut grads = loss.backward().expect("backward");
            let host = take_host_gradients(&tensors, &mut grads).expect("gradients");
            optimizer.step(&mut params, &host, 0.01).expect("update");
        })
    });

    let denoiser =
        claim::models::Denoiser::initial_parameters(&claim::models::DenoiserConfig::claim(), 3)
            .expect("parameters");
    let mut params: Vec<Parameter> = denoiser
        .into_iter()
        .map(|(name, t)| Parameter {
            trainable: true,
            shape: t.dims().to_vec(),
            values: t.to_vec().expect("values"),
            name,
        })
        .collect();
    let mut rng = Rng::new(5);
    let grads: Vec<Option<Vec<f32>>> = params
        .iter()
        .map(|p| Some(p.values.iter().map(|_| rng.normal() as f32).collect()))
        .collect();
    let scaler = claim::train::compute::GradScaler::default();
    let mut adam = Optimizer::new(OptimizerKind::adam(), 0.0, params.len()).expect("optimizer");
    group.bench_function("adam_update_denoiser_size", |b| {
        b.iter(|| {
            let mut g = grads.clone();
            assert!(scaler.unscale(&mut g));
            let norm = claim::train::optim::grad_norm(&g);
            adam.step(&mut params, &g, 1e-5).expect("update");
            norm
        })
    });
    group.finish();
}

criterion_group!(benches, bench_train);
criterion_main!(benches);

//! The CLAIM-size denoiser (dim 72, C1, cond 16) with random weights from
//! the exact CLAIM key list: one forward at batch 1 and at batch 8
//! (1×1×72×72 items), and one RePaint step at batch 1 (re-noise the known
//! region, predict the noise, ancestral step, with its normal draws).
//! Compare with `python tools/bench_torch_denoiser.py` on the same machine
//! and thread count (`RAYON_NUM_THREADS=N` here, `--threads N` there);
//! `cargo bench --bench denoiser -- 'batch 1'` runs the batch-1 cases only.

use claim::backend::NoiseKey;
use claim::models::Denoiser;
use claim::nn::{DType, Device, Tensor, Weights};
use claim::rng::Rng;
use claim::synthesis::{Schedule, TIMESTEPS};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

fn claim_weights() -> Weights {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/denoiser/claim_state_dict.json"
    );
    let text = std::fs::read_to_string(path).expect("CLAIM key list fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut rng = Rng::new(5);
    let keys = json["keys"].as_array().expect("key list");
    let named = keys.iter().map(|e| {
        let shape: Vec<usize> = e[1]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().unwrap_or(0) as usize)
            .collect();
        let std = 1.0 / (shape.iter().skip(1).product::<usize>().max(1) as f64).sqrt();
        let data = (0..shape.iter().product())
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        (
            e[0].as_str().unwrap_or_default().to_string(),
            Tensor::from_vec(data, &shape).expect("tensor"),
        )
    });
    Weights::from_tensors(named).expect("weights")
}

/// `n` standard normal draws.
fn normals(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn bench_forward(c: &mut Criterion) {
    let model = Denoiser::load(&claim_weights()).expect("CLAIM model");
    let mut rng = Rng::new(6);
    let pixels = 72 * 72;
    let mut group = c.benchmark_group("denoiser");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    for batch in [1, 8] {
        let x =
            Tensor::from_vec(normals(batch * pixels, &mut rng), &[batch, 1, 1, 72, 72]).expect("x");
        let cond = Tensor::full(1.0 / 16.0, &[batch, 16]).expect("cond");
        let t = vec![150.0; batch];
        group.bench_function(format!("forward batch {batch}"), |b| {
            b.iter(|| model.predict_noise(&x, &t, Some(&cond)).expect("forward"))
        });
    }

    // One RePaint step at t = 150: a disc of 24 pixels radius is generated,
    // the rest is known.
    let schedule = Schedule::cosine(TIMESTEPS).expect("schedule");
    let step_t = 150;
    let ground_truth: Vec<f32> = normals(pixels, &mut rng)
        .into_iter()
        .map(|v| (0.3 * v).clamp(-1.0, 1.0))
        .collect();
    let known: Vec<f32> = (0..pixels)
        .map(|i| {
            let (y, x) = ((i / 72) as f32 - 35.5, (i % 72) as f32 - 35.5);
            if y * y + x * x < 24.0 * 24.0 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let shape = [1, 1, 1, 72, 72];
    let start = Tensor::from_vec(normals(pixels, &mut rng), &shape).expect("x");
    let ground_truth = Tensor::from_vec(ground_truth, &shape).expect("gt");
    let known = Tensor::from_vec(known, &shape).expect("known");
    let cond = Tensor::full(1.0 / 16.0, &[1, 16]).expect("cond");
    let (blend, ancestral) = (
        schedule.known_blend(step_t).expect("blend"),
        schedule.ancestral_step(step_t).expect("step"),
    );
    let mut step = 0u32;
    // As the sampler runs it: counter-based noise, fused blend, network,
    // fused ancestral step, all as tensor ops.
    group.bench_function("repaint step batch 1", |b| {
        b.iter(|| {
            step += 1;
            let noise = |stream| {
                let key = NoiseKey {
                    seed: 1,
                    stream,
                    step,
                };
                Tensor::normal_noise(key, &[0], &shape, &Device::Cpu, DType::F32).expect("noise")
            };
            let x = start
                .known_blend(&ground_truth, &known, &noise(1), blend)
                .expect("re-noise");
            let eps = model
                .predict_noise(&x, &[step_t as f32], Some(&cond))
                .expect("forward");
            x.ancestral_step(&eps, &noise(2), ancestral).expect("step")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);

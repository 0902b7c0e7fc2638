//! One forward of the CLAIM-size denoiser (dim 72, C1, cond 16) on a
//! 1×1×1×72×72 input, random weights with the exact CLAIM key list.
//! Compare with `python tools/denoiser_reference.py --time` on the same
//! machine.

use claim::models::Denoiser;
use claim::nn::{Tensor, Weights};
use claim::rng::Rng;
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

fn bench_forward(c: &mut Criterion) {
    let model = Denoiser::load(&claim_weights()).expect("CLAIM model");
    let mut rng = Rng::new(6);
    let x = Tensor::from_vec(
        (0..72 * 72).map(|_| rng.normal() as f32).collect(),
        &[1, 1, 1, 72, 72],
    )
    .expect("x");
    let cond = Tensor::full(1.0 / 16.0, &[1, 16]).expect("cond");
    let mut group = c.benchmark_group("denoiser");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));
    group.bench_function("claim_forward_1x1x1x72x72", |b| {
        b.iter(|| {
            model
                .predict_noise(&x, &[150.0], Some(&cond))
                .expect("forward")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);

//! nnU-Net segmenter on the CPU, with seeded random weights (no checkpoint
//! needed):
//!
//! - `plain_unet_forward_1x1x256x256`: one forward of a 2-D PlainConvUNet
//!   as an EMIDEC-like nnU-Net plan builds it — 6 stages, features 32, 64,
//!   128, 256, 512, 512, 3×3 kernels, strides 1, 2, 2, 2, 2, 2, two
//!   convolutions per encoder and decoder stage, InstanceNorm + LeakyReLU,
//!   4 classes — on a 1×1×256×256 input;
//! - `plain_unet_forward_1x1x128x128` and `plain_unet_forward_4x1x128x128`:
//!   the same network on one window of the phantom run below, and on four
//!   in one batch (what `WindowBatch::Windows` does on a GPU); per item,
//!   the ratio says whether batching windows pays on the CPU;
//! - `segment_phantom_192x192x10`: the whole built-in phantom (seed 0,
//!   192×192×10 at 1.5625×1.5625×9 mm) through the full prediction (crop,
//!   z-score, sliding window with patch 128×128 and step 0.5 — 4 windows per
//!   slice —, mirroring over both axes, argmax, post-processing) with the
//!   same network, one fold: 160 forwards of 1×1×128×128.
//!
//! The PyTorch counterparts (same shapes, `torch.set_num_threads` as the
//! machine) are what the ratio is taken against.

use claim::models::plain_unet::random_state_dict;
use claim::models::{PlainConvUNet, PlainUNetConfig};
use claim::nn::Tensor;
use claim::phantom::{generate, PhantomParams};
use claim::rng::Rng;
use claim::segmentation::{NnunetBundle, SegmentParams, Segmenter};
use claim::volume::Image;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::time::Duration;

fn arch_kwargs() -> Value {
    json!({
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 512, 512],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2, 2, 2],
        "conv_bias": true,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": true},
        "dropout_op": null,
        "dropout_op_kwargs": null,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": true}
    })
}

fn bench_segmenter(c: &mut Criterion) {
    let cfg = PlainUNetConfig::from_arch_kwargs(&arch_kwargs(), 1, 4).expect("config");
    let weights = random_state_dict(&cfg, 1);
    let net = PlainConvUNet::from_state_dict(weights.clone(), &cfg).expect("network");
    let mut rng = Rng::new(2);
    let x = Tensor::from_vec(
        (0..256 * 256).map(|_| rng.normal() as f32).collect(),
        &[1, 1, 256, 256],
    )
    .expect("input");

    let mut group = c.benchmark_group("segmenter");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    group.bench_function("plain_unet_forward_1x1x256x256", |b| {
        b.iter(|| net.forward(&x).expect("forward"))
    });
    for batch in [1, 4] {
        let x = Tensor::from_vec(
            (0..batch * 128 * 128)
                .map(|_| rng.normal() as f32)
                .collect(),
            &[batch, 1, 128, 128],
        )
        .expect("input");
        group.bench_function(format!("plain_unet_forward_{batch}x1x128x128"), |b| {
            b.iter(|| net.forward(&x).expect("forward"))
        });
    }

    let plans = json!({
        "dataset_name": "Dataset999_Bench",
        "plans_name": "nnUNetPlans",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "patch_size": [128, 128],
            "spacing": [1.5625, 1.5625],
            "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [false],
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": arch_kwargs()
            }
        }}
    });
    let dataset = json!({
        "channel_names": {"0": "LGE"},
        "labels": {"background": 0, "cavity": 1, "myocardium": 2, "infarction": 3}
    });
    let model = Segmenter::from_bundle(
        NnunetBundle {
            plans_json: plans.to_string(),
            dataset_json: dataset.to_string(),
            configuration: "2d".into(),
            trainer: "nnUNetTrainer".into(),
            mirroring_axes: Some(vec![0, 1]),
            folds: vec![(0, weights)],
        },
        None,
    )
    .expect("segmenter");
    let phantom = generate(&PhantomParams {
        with_scar: true,
        ..Default::default()
    })
    .expect("phantom");
    let image = Image::F32(phantom.image);
    let params = SegmentParams::default();
    group.bench_function("segment_phantom_192x192x10", |b| {
        b.iter(|| {
            model
                .segment(&image, &params, &mut |_, _| true)
                .expect("segment")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_segmenter);
criterion_main!(benches);

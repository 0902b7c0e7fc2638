//! nnU-Net-compatible segmentation: loading, the prediction pipeline and
//! its errors with seeded random-weight networks built in Rust, then the
//! golden comparisons with nnU-Net itself (`golden_*`, fixtures by
//! `tools/nnunet_reference.py`).

use claim::models::plain_unet::random_state_dict;
use claim::models::{PlainConvUNet, PlainUNetConfig};
use claim::nn::Tensor;
use claim::phantom::{generate, PhantomParams};
use claim::segmentation::{NnunetBundle, SegmentParams, Segmenter, SegmenterOptions, FOLD_ALL};
use claim::testing::tensor_errors;
use claim::volume::{Image, LabelScheme, Volume};
use claim::Error;
use serde_json::{json, Value};

const LABELS: [(&str, i32); 5] = [
    ("background", 0),
    ("cavity", 1),
    ("myocardium", 2),
    ("infarction", 3),
    ("no_reflow", 4),
];

fn arch(dims: usize) -> Value {
    let (conv, norm, kernels, strides) = if dims == 2 {
        (
            "torch.nn.modules.conv.Conv2d",
            "torch.nn.modules.instancenorm.InstanceNorm2d",
            json!([[3, 3], [3, 3], [3, 3]]),
            json!([[1, 1], [2, 2], [2, 2]]),
        )
    } else {
        (
            "torch.nn.modules.conv.Conv3d",
            "torch.nn.modules.instancenorm.InstanceNorm3d",
            json!([[1, 3, 3], [3, 3, 3], [3, 3, 3]]),
            json!([[1, 1, 1], [1, 2, 2], [2, 2, 2]]),
        )
    };
    json!({
        "n_stages": 3,
        "features_per_stage": [4, 8, 8],
        "conv_op": conv,
        "kernel_sizes": kernels,
        "strides": strides,
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": true,
        "norm_op": norm,
        "norm_op_kwargs": {"eps": 1e-5, "affine": true},
        "dropout_op": null,
        "dropout_op_kwargs": null,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": true}
    })
}

fn configuration(patch: Value, spacing: Value, dims: usize) -> Value {
    json!({
        "patch_size": patch,
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [false],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": false, "order": 3, "order_z": 0, "force_separate_z": null},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": false, "order": 1, "order_z": 0, "force_separate_z": null},
        "batch_size": 2,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": arch(dims)
        }
    })
}

fn plans(transpose: [usize; 3]) -> Value {
    let mut backward = [0; 3];
    for (i, &t) in transpose.iter().enumerate() {
        backward[t] = i;
    }
    json!({
        "dataset_name": "Dataset990_Test",
        "plans_name": "nnUNetPlans",
        "transpose_forward": transpose,
        "transpose_backward": backward,
        "configurations": {
            "2d": configuration(json!([32, 32]), json!([1.5625, 1.5625]), 2),
            "2d_resampled": configuration(json!([32, 32]), json!([2.0, 2.0]), 2),
            "3d_fullres": configuration(json!([4, 32, 32]), json!([9.0, 1.5625, 1.5625]), 3),
            "resenc": {
                "inherits_from": "2d",
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
                    "arch_kwargs": {}
                }
            }
        }
    })
}

fn dataset_json() -> String {
    let labels: serde_json::Map<String, Value> = LABELS
        .iter()
        .map(|(n, v)| (n.to_string(), json!(v)))
        .collect();
    json!({"channel_names": {"0": "LGE"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"})
        .to_string()
}

/// A model for `configuration` with random weights per fold (seed = fold).
fn bundle(configuration: &str, folds: &[usize], mirroring: Option<Vec<usize>>) -> NnunetBundle {
    bundle_with(plans([0, 1, 2]), configuration, folds, mirroring)
}

fn bundle_with(
    plans: Value,
    configuration: &str,
    folds: &[usize],
    mirroring: Option<Vec<usize>>,
) -> NnunetBundle {
    let dims = if configuration.starts_with("3d") {
        3
    } else {
        2
    };
    let cfg = PlainUNetConfig::from_arch_kwargs(&arch(dims), 1, LABELS.len()).unwrap();
    NnunetBundle {
        plans_json: plans.to_string(),
        dataset_json: dataset_json(),
        configuration: configuration.into(),
        trainer: "nnUNetTrainer".into(),
        mirroring_axes: mirroring,
        folds: folds
            .iter()
            .map(|&k| (k, random_state_dict(&cfg, (k as u64).wrapping_add(100))))
            .collect(),
    }
}

/// A small phantom (64 × 64 × 4) with a zero border, so prediction crops.
fn phantom() -> Image {
    let case = generate(&PhantomParams {
        seed: 3,
        with_scar: true,
        matrix_size: 64,
        slice_count: 4,
        ..Default::default()
    })
    .unwrap();
    let mut image = case.image;
    for ((_, j, i), v) in image.data.indexed_iter_mut() {
        if i < 5 || j < 3 || i > 60 {
            *v = 0.0;
        }
    }
    Image::F32(image)
}

fn run(model: &Segmenter, image: &Image, params: &SegmentParams) -> (Volume<u8>, u64, u64) {
    let (mut calls, mut last_total) = (0u64, 0u64);
    let out = model
        .segment(image, params, &mut |done, total| {
            calls += 1;
            assert_eq!(done, calls);
            last_total = total;
            true
        })
        .unwrap();
    (out, calls, last_total)
}

#[test]
fn segments_with_input_geometry_and_counts_progress() {
    let image = phantom();
    let model = Segmenter::from_bundle(bundle("2d", &[0, 1], Some(vec![0, 1])), None).unwrap();
    let info = model.info();
    assert_eq!(
        (info.spatial_dims, info.num_classes, info.input_channels),
        (2, 5, 1)
    );
    assert_eq!(info.folds, vec![0, 1]);
    assert_eq!(info.patch_size, vec![32, 32]);
    let (out, calls, total) = run(&model, &image, &SegmentParams::default());
    assert_eq!(out.dims(), image.dims());
    assert_eq!(out.geometry, *image.geometry());
    assert_eq!(calls, total);
    assert!(out.data.iter().all(|&v| v <= 4));
    // Outside the crop box: background.
    assert!((0..64).all(|j| *out.at(2, j, 1) == 0 && *out.at(62, j, 3) == 0));
    // Cropped to x 5..=60 (56) and y 3..64 (61): windows at 0, 12, 24 (x)
    // and 0, 14, 29 (y) per slice, 4 slices, 4 mirror passes, 2 folds.
    assert_eq!(total, 3 * 3 * 4 * 4 * 2);
    let plain = SegmentParams {
        mirroring: false,
        step_size: 1.0,
        ..Default::default()
    };
    let (_, _, total) = run(&model, &image, &plain);
    assert_eq!(total, 2 * 2 * 4 * 2);
}

#[test]
fn cancelling_stops_with_cancelled() {
    let model = Segmenter::from_bundle(bundle("2d", &[0], Some(vec![0, 1])), None).unwrap();
    let mut calls = 0;
    let result = model.segment(&phantom(), &SegmentParams::default(), &mut |_, _| {
        calls += 1;
        calls < 3
    });
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(calls, 3);
}

/// The pipeline against a hand-written one: transposed plans, crop, z-score
/// over the cropped 3-D case, one window per slice (patch = slice), no
/// mirroring, one fold. Labels agree wherever the two best logits are not
/// within the f16 accumulation's rounding of each other.
#[test]
fn matches_a_hand_written_pipeline() {
    let mut p = plans([0, 2, 1]);
    p["configurations"]["2d"]["patch_size"] = json!([48, 40]);
    let model = Segmenter::from_bundle(bundle_with(p, "2d", &[0], None), None).unwrap();
    // Crop box of this image: x 4..52 (48), y 10..50 (40) — after the
    // transpose (z, x, y) exactly one 48 × 40 window per slice.
    let case = generate(&PhantomParams {
        seed: 5,
        matrix_size: 64,
        slice_count: 3,
        ..Default::default()
    })
    .unwrap();
    let mut image = case.image;
    for ((_, j, i), v) in image.data.indexed_iter_mut() {
        if !(4..52).contains(&i) || !(10..50).contains(&j) {
            *v = 0.0;
        }
    }
    let params = SegmentParams {
        postprocess: false,
        ..Default::default()
    };
    let got = model
        .segment(&Image::F32(image.clone()), &params, &mut |_, _| true)
        .unwrap();

    let crop: Vec<f32> = image
        .data
        .indexed_iter()
        .filter(|((_, j, i), _)| (4..52).contains(i) && (10..50).contains(j))
        .map(|(_, v)| *v)
        .collect();
    let n = crop.len() as f64;
    let mean = crop.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (crop.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (mut compared, mut differ) = (0, 0);
    for z in 0..3 {
        // Slice in (x, y) order: the plans transpose y and x.
        let mut slice = Vec::with_capacity(48 * 40);
        for x in 4..52 {
            for y in 10..50 {
                slice.push((image.data[[z, y, x]] - mean as f32) / std as f32);
            }
        }
        let logits = model
            .predict_logits(&Tensor::from_vec(slice, &[1, 1, 48, 40]).unwrap(), 0)
            .unwrap()
            .to_vec()
            .unwrap();
        for xi in 0..48 {
            for yi in 0..40 {
                let mut l: Vec<f32> = (0..5).map(|c| logits[(c * 48 + xi) * 40 + yi]).collect();
                let best = (0..5).fold(0, |b, c| if l[c] > l[b] { c } else { b });
                l.sort_by(|a, b| b.total_cmp(a));
                if l[0] - l[1] > 1e-2 * l[0].abs().max(1.0) {
                    compared += 1;
                    if got.data[[z, 10 + yi, 4 + xi]] as usize != best {
                        differ += 1;
                    }
                }
            }
        }
    }
    assert!(compared > 3 * 48 * 40 / 2, "{compared}");
    assert_eq!(differ, 0);
    assert!(got
        .data
        .indexed_iter()
        .all(|((_, j, i), &v)| v == 0 || ((4..52).contains(&i) && (10..50).contains(&j))));
}

#[test]
fn resampled_and_3d_configurations_run() {
    let image = phantom();
    for (configuration, mirror) in [("2d_resampled", vec![0, 1]), ("3d_fullres", vec![0, 1, 2])] {
        let model = Segmenter::from_bundle(bundle(configuration, &[0], Some(mirror.clone())), None)
            .unwrap();
        let params = SegmentParams {
            step_size: 1.0,
            ..Default::default()
        };
        let (out, calls, total) = run(&model, &image, &params);
        assert_eq!(out.dims(), image.dims(), "{configuration}");
        assert_eq!(calls, total);
        assert_eq!(total % (1 << mirror.len()), 0);
    }
}

#[test]
fn bundle_round_trips_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let original = bundle("2d", &[1, 3, FOLD_ALL], Some(vec![0, 1]));
    let path = dir.path().join("model.safetensors");
    original.write_safetensors(&path).unwrap();
    let loaded = NnunetBundle::load(&path, None).unwrap();
    assert_eq!(loaded.plans_json, original.plans_json);
    assert_eq!(loaded.dataset_json, original.dataset_json);
    assert_eq!(loaded.configuration, "2d");
    assert_eq!(loaded.trainer, "nnUNetTrainer");
    assert_eq!(loaded.mirroring_axes, Some(vec![0, 1]));
    assert_eq!(loaded.fold_numbers(), vec![1, 3, FOLD_ALL]);
    for ((ka, a), (kb, b)) in original.folds.iter().zip(&loaded.folds) {
        assert_eq!(ka, kb);
        let mut a: Vec<_> = a.iter().collect();
        let mut b: Vec<_> = b.iter().collect();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(ta.dims(), tb.dims());
            assert_eq!(ta.to_vec().unwrap(), tb.to_vec().unwrap());
        }
    }
    // No mirroring entry when the checkpoint allows none.
    let none = bundle("2d", &[0], None);
    none.write_safetensors(&path).unwrap();
    assert_eq!(
        NnunetBundle::load(&path, None).unwrap().mirroring_axes,
        None
    );

    let options = SegmenterOptions {
        folds: Some(vec![3]),
        configuration: None,
    };
    original.write_safetensors(&path).unwrap();
    let from_file = Segmenter::load(&path, &options).unwrap();
    assert_eq!(from_file.info().folds, vec![3]);
    let x = Tensor::full(0.5, &[1, 1, 32, 32]).unwrap();
    let direct = PlainConvUNet::from_state_dict(
        original.folds[1].1.clone(),
        &PlainUNetConfig::from_arch_kwargs(&arch(2), 1, 5).unwrap(),
    )
    .unwrap();
    assert_eq!(
        from_file.predict_logits(&x, 0).unwrap().to_vec().unwrap(),
        direct.forward(&x).unwrap().to_vec().unwrap()
    );
    let missing = Segmenter::load(
        &path,
        &SegmenterOptions {
            folds: Some(vec![2]),
            configuration: None,
        },
    );
    assert!(
        matches!(&missing, Err(Error::InvalidArgument(m)) if m.contains("fold 2")),
        "{missing:?}"
    );
}

#[test]
fn errors_are_specific() {
    // Unsupported architecture, named.
    let e = Segmenter::from_bundle(bundle("2d", &[0], None), Some("resenc")).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("ResidualEncoderUNet")),
        "{e}"
    );
    // Bad plans.
    let mut b = bundle("2d", &[0], None);
    b.plans_json = "{\"configurations\": ".into();
    assert!(matches!(
        Segmenter::from_bundle(b, None),
        Err(Error::Format(_))
    ));
    let mut b = bundle("2d", &[0], None);
    b.plans_json = b
        .plans_json
        .replace("\"patch_size\":[32,32]", "\"patch_size\":[32]");
    assert!(matches!(
        Segmenter::from_bundle(b, None),
        Err(Error::Format(_))
    ));
    // Unknown configuration.
    let e = Segmenter::from_bundle(bundle("2d", &[0], None), Some("3d_lowres")).unwrap_err();
    assert!(e.to_string().contains("3d_lowres"), "{e}");
    // Weights of another configuration.
    let mut b = bundle("3d_fullres", &[0], None);
    b.configuration = "2d".into();
    let e = Segmenter::from_bundle(b, None).unwrap_err();
    assert!(matches!(&e, Error::Model(m) if m.contains("fold 0")), "{e}");
    // Mirroring over an axis a 2-D patch does not have.
    assert!(Segmenter::from_bundle(bundle("2d", &[0], Some(vec![0, 2])), None).is_err());

    let model = Segmenter::from_bundle(bundle("2d", &[0], None), None).unwrap();
    let image = phantom();
    // Wrong number of channels.
    let e = model
        .segment_channels(&[&image, &image], &SegmentParams::default(), &mut |_, _| {
            true
        })
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("1 channel")),
        "{e}"
    );
    // Bad parameters.
    let bad_step = SegmentParams {
        step_size: 0.0,
        ..Default::default()
    };
    assert!(model.segment(&image, &bad_step, &mut |_, _| true).is_err());
    let bad_scheme = SegmentParams {
        label_scheme: LabelScheme {
            scar: 2,
            ..LabelScheme::EMIDEC
        },
        ..Default::default()
    };
    assert!(model
        .segment(&image, &bad_scheme, &mut |_, _| true)
        .is_err());
    // Non-finite voxels.
    let mut nan = image.to_f32();
    nan.data[[1, 20, 30]] = f32::NAN;
    let e = model
        .segment(&Image::F32(nan), &SegmentParams::default(), &mut |_, _| {
            true
        })
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("(30, 20, 1)")),
        "{e}"
    );
    // Raw forward: fold index and input shape.
    let x = Tensor::zeros(&[1, 1, 32, 32]).unwrap();
    assert!(model.predict_logits(&x, 1).is_err());
    assert!(model
        .predict_logits(&Tensor::zeros(&[1, 2, 32, 32]).unwrap(), 0)
        .is_err());
    assert_eq!(model.predict_logits(&x, 0).unwrap().dims(), &[1, 5, 32, 32]);
}

#[test]
fn labels_follow_the_callers_scheme() {
    let model = Segmenter::from_bundle(bundle("2d", &[0], Some(vec![0, 1])), None).unwrap();
    let image = phantom();
    let base = SegmentParams {
        postprocess: false,
        ..Default::default()
    };
    let (emidec, _, _) = run(&model, &image, &base);
    let shifted = SegmentParams {
        label_scheme: LabelScheme {
            lv_cavity: 11,
            myocardium: 12,
            scar: 13,
            mvo: 14,
            rv: None,
        },
        ..base
    };
    let (other, _, _) = run(&model, &image, &shifted);
    for (a, b) in emidec.data.iter().zip(other.data.iter()) {
        assert_eq!(*b, if *a == 0 { 0 } else { *a + 10 });
    }
}

// ---------------------------------------------------------------------------
// Golden comparisons with nnU-Net itself: fixtures written by
// `tools/nnunet_reference.py` (PyTorch-saved results folders with random
// weights, their logits, nnU-Net's Gaussian maps and nnUNetPredictor's label
// maps of the built-in phantom).
// ---------------------------------------------------------------------------

fn golden(name: &str) -> std::path::PathBuf {
    claim::testing::fixture_path("nnunet").join(name)
}

fn results_folder(configuration: &str) -> std::path::PathBuf {
    golden(&format!(
        "Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__{configuration}"
    ))
}

#[test]
fn golden_logits_match_pytorch_from_folder_checkpoint_and_bundle() {
    let dir = tempfile::tempdir().unwrap();
    for (configuration, file) in [
        ("2d", "logits_2d.safetensors"),
        ("3d_fullres", "logits_3d.safetensors"),
    ] {
        let io = claim::nn::Weights::load(&golden(file)).unwrap();
        let (x, want) = (io.peek("input").unwrap(), io.peek("logits").unwrap());
        let folder = results_folder(configuration);
        let fold0 = SegmenterOptions {
            folds: Some(vec![0]),
            configuration: None,
        };
        let from_folder = Segmenter::load(&folder, &fold0).unwrap();
        let checkpoint = folder.join("fold_0/checkpoint_final.pth");
        let from_checkpoint = Segmenter::load(&checkpoint, &SegmenterOptions::default()).unwrap();
        let bundle_path = dir.path().join(format!("{configuration}.safetensors"));
        NnunetBundle::load(&folder, Some(&[0]))
            .unwrap()
            .write_safetensors(&bundle_path)
            .unwrap();
        let from_bundle = Segmenter::load(&bundle_path, &SegmenterOptions::default()).unwrap();
        for (how, model) in [
            ("folder", &from_folder),
            ("checkpoint", &from_checkpoint),
            ("bundle", &from_bundle),
        ] {
            let info = model.info();
            assert_eq!(info.configuration, configuration);
            assert_eq!(info.trainer, "nnUNetTrainer");
            let (_, rel) = tensor_errors(&model.predict_logits(x, 0).unwrap(), want);
            println!("{configuration} via {how}: relative error {rel:.2e}");
            assert!(rel < 1e-4, "{configuration} via {how}: {rel}");
        }
    }
}

#[test]
fn golden_results_folder_facts() {
    let folder = results_folder("2d");
    let both = NnunetBundle::load(&folder, None).unwrap();
    assert_eq!(both.fold_numbers(), vec![0, 1]);
    assert_eq!(both.configuration, "2d");
    assert_eq!(both.mirroring_axes, Some(vec![0, 1]));
    // No alias keys survive loading.
    assert!(both.folds[0]
        .1
        .iter()
        .all(|(k, _)| !k.contains("all_modules") && !k.starts_with("decoder.encoder.")));
    // Folder → safetensors → load: the same bundle.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("2d.safetensors");
    both.write_safetensors(&path).unwrap();
    let back = NnunetBundle::load(&path, None).unwrap();
    assert_eq!(
        (
            &back.plans_json,
            &back.dataset_json,
            &back.configuration,
            &back.trainer
        ),
        (
            &both.plans_json,
            &both.dataset_json,
            &both.configuration,
            &both.trainer
        )
    );
    assert_eq!(back.mirroring_axes, both.mirroring_axes);
    assert_eq!(back.fold_numbers(), both.fold_numbers());
    for ((_, a), (_, b)) in both.folds.iter().zip(&back.folds) {
        let b: std::collections::BTreeMap<_, _> = b.iter().cloned().collect();
        assert_eq!(a.len(), b.len());
        for (key, t) in a {
            assert_eq!(t.to_vec().unwrap(), b[key].to_vec().unwrap(), "{key}");
            assert_eq!(t.dims(), b[key].dims(), "{key}");
        }
    }
    let e = NnunetBundle::load(&folder, Some(&[4])).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("fold 4") && m.contains("0, 1")),
        "{e}"
    );
    let three = NnunetBundle::load(&results_folder("3d_fullres"), None).unwrap();
    assert_eq!(three.mirroring_axes, Some(vec![0, 1, 2]));
    // The checkpoint alone finds the folder's JSON files two levels up.
    let single = NnunetBundle::load(&folder.join("fold_1/checkpoint_final.pth"), None).unwrap();
    assert_eq!(single.fold_numbers(), vec![1]);
    assert_eq!(single.plans_json, both.plans_json);
}

#[test]
fn golden_gaussian_maps_equal_nnunets() {
    let maps = claim::nn::Weights::load(&golden("sliding_window.safetensors")).unwrap();
    let plans: Value = serde_json::from_str(
        &std::fs::read_to_string(results_folder("2d").join("plans.json")).unwrap(),
    )
    .unwrap();
    for (key, configuration) in [("gaussian_2d", "2d"), ("gaussian_3d", "3d_fullres")] {
        let patch: Vec<usize> =
            serde_json::from_value(plans["configurations"][configuration]["patch_size"].clone())
                .unwrap();
        let want = maps.peek(key).unwrap();
        assert_eq!(want.dims(), patch.as_slice());
        let got: Vec<f32> = claim::segmentation::sliding::gaussian_importance_map(&patch)
            .unwrap()
            .iter()
            .map(|h| h.to_f32())
            .collect();
        assert_eq!(got, want.to_vec().unwrap(), "{key}");
    }
}

/// The label map nnUNetPredictor wrote for one run of
/// `phantom_reference.json`, against ours.
fn check_phantom_run(file: &str) {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("phantom_reference.json")).unwrap())
            .unwrap();
    let run = reference["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in phantom_reference.json"));
    let mut image = generate(&PhantomParams::default()).unwrap().image;
    let sum: f64 = image.data.iter().map(|&v| v as f64).sum();
    let want_sum = reference["phantom"]["image_sum_f64"].as_f64().unwrap();
    assert!(
        (sum - want_sum).abs() <= 1e-9 * want_sum.abs(),
        "phantom changed: {sum} vs {want_sum}"
    );
    if run["input"].as_str().unwrap().contains("crop_box_zyx") {
        let b: Vec<Vec<usize>> = serde_json::from_value(reference["crop_box_zyx"].clone()).unwrap();
        for ((z, y, x), v) in image.data.indexed_iter_mut() {
            let inside = (b[0][0]..b[0][1]).contains(&z)
                && (b[1][0]..b[1][1]).contains(&y)
                && (b[2][0]..b[2][1]).contains(&x);
            if !inside {
                *v = 0.0;
            }
        }
    }
    let folds: Vec<usize> = serde_json::from_value(run["folds"].clone()).unwrap();
    let model = Segmenter::load(
        &results_folder(run["configuration"].as_str().unwrap()),
        &SegmenterOptions {
            folds: Some(folds),
            configuration: None,
        },
    )
    .unwrap();
    let params = SegmentParams {
        mirroring: run["use_mirroring"].as_bool().unwrap(),
        step_size: run["tile_step_size"].as_f64().unwrap() as f32,
        postprocess: false,
        label_scheme: LabelScheme::EMIDEC,
    };
    let image = Image::F32(image);
    let (got, logits) = model
        .segment_with_logits(&[&image], &params, &mut |_, _| true)
        .unwrap();
    let want = claim::io::read_image(&golden(file)).unwrap();
    // The reference went through NIfTI files (f32 header fields).
    assert!(
        want.geometry().approx_eq(&got.geometry, 1e-4),
        "{:?} vs {:?}",
        want.geometry(),
        got.geometry
    );
    let want = want.to_labels().unwrap();
    assert_eq!(want.dims(), got.dims());
    // Our network outputs agree with PyTorch's to ~1e-6 relative, not
    // bit for bit; where nnU-Net's f16 sums sit on a rounding boundary that
    // can move a value by an f16 step, which flips the argmax only where two
    // classes tie to within such steps. So: every differing voxel must be
    // such a near-tie in our logits, and there may be only a handful.
    let mut differing = 0;
    let mut widest_gap = 0f32;
    for ((k, j, i), &theirs) in want.data.indexed_iter() {
        let ours = i32::from(got.data[[k, j, i]]);
        if ours == theirs {
            continue;
        }
        differing += 1;
        let l = logits
            .at([i, j, k])
            .unwrap_or_else(|| panic!("{file}: ({i}, {j}, {k}) differs outside the crop box"));
        let (a, b) = (l[ours as usize], l[theirs as usize]);
        let gap = (a - b).abs() / a.abs().max(b.abs()).max(1.0);
        widest_gap = widest_gap.max(gap);
        assert!(
            gap <= 1e-3,
            "{file}: voxel ({i}, {j}, {k}) is {ours}, nnU-Net says {theirs}; logits {l:?}"
        );
    }
    println!(
        "{file}: {differing} of {} voxels differ from nnU-Net, all argmax near-ties \
         (largest logit gap {widest_gap:.1e})",
        got.len()
    );
    assert!(
        differing * 10_000 <= got.len(),
        "{file}: {differing} voxels differ"
    );
}

#[test]
fn golden_phantom_2d_fold0() {
    check_phantom_run("phantom_pred_2d_fold0.nii.gz");
}

#[test]
fn golden_phantom_2d_two_folds() {
    check_phantom_run("phantom_pred_2d_folds01.nii.gz");
}

#[test]
fn golden_phantom_2d_without_mirroring() {
    check_phantom_run("phantom_pred_2d_fold0_nomirror.nii.gz");
}

#[test]
fn golden_phantom_2d_resampled() {
    check_phantom_run("phantom_pred_2d_resampled_fold0.nii.gz");
}

#[test]
fn golden_phantom_3d() {
    check_phantom_run("phantom_pred_3d_fold0.nii.gz");
}

#[test]
fn golden_phantom_2d_zero_border() {
    check_phantom_run("phantom_pred_2d_fold0_zero_border.nii.gz");
}

#[test]
fn enumerated_parameters_are_the_checkpoint_keys_without_aliases() {
    use claim::models::plain_unet::is_alias_key;
    use claim::nn::layers::Module;
    use claim::segmentation::{DatasetInfo, Plans};
    for configuration in ["2d", "3d_fullres"] {
        let bundle = NnunetBundle::load(&results_folder(configuration), Some(&[0])).unwrap();
        let plans = Plans::parse(&bundle.plans_json).unwrap();
        let dataset = DatasetInfo::parse(&bundle.dataset_json).unwrap();
        let cfg = plans
            .configuration(configuration)
            .unwrap()
            .network_config(dataset.channel_names.len(), dataset.num_classes())
            .unwrap();
        let state_dict = bundle.folds[0].1.clone();
        let net = PlainConvUNet::from_state_dict(state_dict.clone(), &cfg).unwrap();
        let mut want: Vec<(String, Tensor)> = state_dict
            .into_iter()
            .filter(|(k, _)| !is_alias_key(k))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let mut got = net.named_parameters();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let keys = |v: &[(String, Tensor)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&want), "{configuration}");
        for ((k, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(
                g.to_vec().unwrap(),
                w.to_vec().unwrap(),
                "{configuration}: {k}"
            );
        }
        assert_eq!(
            net.parameter_count(),
            want.iter().map(|(_, t)| t.elem_count()).sum::<usize>()
        );
    }
}

#[test]
fn load_options_place_the_networks() {
    use claim::nn::{DType, Device, LoadOptions, Precision};
    let folder = results_folder("2d");
    let fold0 = SegmenterOptions {
        folds: Some(vec![0]),
        configuration: None,
    };
    let plain = Segmenter::load(&folder, &fold0).unwrap();
    let with = Segmenter::load_with(&folder, &fold0, &LoadOptions::default()).unwrap();
    assert!(matches!(with.device(), Device::Cpu));
    assert_eq!(with.dtype(), DType::F32);
    let x = Tensor::from_vec(
        (0..64 * 64).map(|v| (v as f32 * 0.01).sin()).collect(),
        &[1, 1, 64, 64],
    )
    .unwrap();
    assert_eq!(
        with.predict_logits(&x, 0).unwrap().to_vec().unwrap(),
        plain.predict_logits(&x, 0).unwrap().to_vec().unwrap()
    );
    let f16 = LoadOptions {
        precision: Precision::F16,
        ..LoadOptions::default()
    };
    assert!(matches!(
        Segmenter::load_with(&folder, &fold0, &f16),
        Err(Error::Unsupported(_))
    ));
}

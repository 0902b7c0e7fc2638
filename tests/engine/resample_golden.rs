//! Golden tests of nnU-Net-compatible resampling (`claim::imgproc::resample`)
//! against the upstream functions: nnunetv2's `resample_data_or_seg_to_shape`
//! and `compute_new_shape`, scikit-image's `resize`, batchgenerators'
//! `resize_segmentation` (fixtures written by `tools/resample_reference.py`
//! into `tests/fixtures/resample/`).
//!
//! Data must match within 1e-5 of the reference's largest magnitude (the
//! implementation repeats scipy's arithmetic, so in practice the `f32`
//! results are identical); label maps and nearest-neighbour results must
//! match exactly.

use claim::imgproc::resample::{
    nnunet_new_shape, resample_data_or_seg_to_shape, resize_image, resize_segmentation,
    ResampleOrder, ResamplePlan, ResampleSettings, SegmentationRule,
};
use safetensors::SafeTensors;
use serde_json::Value;

const DATA_TOLERANCE: f64 = 1e-5;

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn open(name: &str) -> Fixture {
        let path = claim::testing::fixture_path("resample").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture { bytes }
    }

    fn metadata(&self, key: &str) -> Value {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).unwrap();
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("fixture metadata lacks {key}"))
            .clone();
        serde_json::from_str(&text).unwrap()
    }

    fn cases(&self) -> Vec<Value> {
        self.metadata("cases").as_array().unwrap().clone()
    }

    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let tensors = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (view.shape().to_vec(), values)
    }
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn dims3(v: &Value) -> [usize; 3] {
    dims(v).try_into().unwrap()
}

fn floats3(v: &Value) -> [f64; 3] {
    let f: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    f.try_into().unwrap()
}

fn order(v: &Value) -> ResampleOrder {
    ResampleOrder::from_spline_order(v.as_i64().unwrap()).unwrap()
}

/// Compares and returns (max abs error / max |reference|, identical values).
fn compare(name: &str, got: &[f32], want: &[f32], exact: bool) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1e-30);
    let mut worst = 0f64;
    let mut identical = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() {
            identical += 1;
        }
        if exact {
            assert_eq!(g, w, "{name}: value {i} differs");
        }
        worst = worst.max(f64::from((g - w).abs()) / scale);
    }
    assert!(
        worst <= DATA_TOLERANCE,
        "{name}: relative error {worst:.2e}"
    );
    (worst, identical)
}

fn check_nnunet_cases(file: &str, rule: SegmentationRule) -> usize {
    let fixture = Fixture::open(file);
    let mut checked = 0;
    for case in fixture.cases() {
        if case.get("spacing").is_none() {
            continue; // a direct resize_segmentation case
        }
        let name = case["name"].as_str().unwrap();
        let is_seg = case["is_seg"].as_bool().unwrap();
        let settings = ResampleSettings {
            is_seg,
            order: order(&case["order"]),
            order_z: order(&case["order_z"]),
            force_separate_z: case["force_separate_z"].as_bool(),
            segmentation_rule: rule,
            ..ResampleSettings::nnunet_data()
        };
        let (in_shape, input) = fixture.tensor(&format!("{name}/input"));
        let (out_shape, want) = fixture.tensor(&format!("{name}/output"));
        let channels = case["channels"].as_u64().unwrap() as usize;
        let shape = dims3(&case["shape"]);
        let new_shape = dims3(&case["new_shape"]);
        assert_eq!(in_shape, [&[channels][..], &shape[..]].concat(), "{name}");
        assert_eq!(
            out_shape,
            [&[channels][..], &new_shape[..]].concat(),
            "{name}"
        );
        let spacing = floats3(&case["spacing"]);
        let new_spacing = floats3(&case["new_spacing"]);
        let got = resample_data_or_seg_to_shape(
            &input,
            channels,
            shape,
            new_shape,
            spacing,
            new_spacing,
            &settings,
        )
        .unwrap();
        let plan = ResamplePlan::decide(spacing, new_spacing, &settings).unwrap();
        let exact = is_seg || settings.order == ResampleOrder::Nearest;
        let (err, identical) = compare(name, &got, &want, exact);
        println!(
            "{file} {name}: separate axis {:?}, rel err {err:.1e}, {identical}/{} identical",
            plan.separate_axis,
            want.len()
        );
        checked += 1;
    }
    checked
}

#[test]
fn nnunet_resampling_matches_upstream() {
    let checked = check_nnunet_cases("nnunet.safetensors", SegmentationRule::ArgmaxNearestTie);
    assert_eq!(checked, 26);
}

#[test]
fn nnunet_label_resampling_matches_legacy_batchgenerators() {
    let checked = check_nnunet_cases(
        "legacy_threshold.safetensors",
        SegmentationRule::ThresholdHalf,
    );
    assert_eq!(checked, 9);
}

#[test]
fn nnunet_decisions_cover_every_strategy() {
    // The fixture set is only meaningful if it exercises each branch.
    let fixture = Fixture::open("nnunet.safetensors");
    let mut axes = std::collections::BTreeSet::new();
    for case in fixture.cases() {
        let settings = ResampleSettings {
            force_separate_z: case["force_separate_z"].as_bool(),
            ..ResampleSettings::nnunet_data()
        };
        let plan = ResamplePlan::decide(
            floats3(&case["spacing"]),
            floats3(&case["new_spacing"]),
            &settings,
        )
        .unwrap();
        axes.insert(plan.separate_axis);
    }
    assert_eq!(
        axes.into_iter().collect::<Vec<_>>(),
        [None, Some(0), Some(1), Some(2)]
    );
}

#[test]
fn new_shape_matches_compute_new_shape() {
    let fixture = Fixture::open("nnunet.safetensors");
    let cases = fixture.metadata("new_shape_cases");
    for case in cases.as_array().unwrap() {
        let got = nnunet_new_shape(
            dims3(&case["shape"]),
            floats3(&case["spacing"]),
            floats3(&case["new_spacing"]),
        )
        .unwrap();
        assert_eq!(got, dims3(&case["new_shape"]), "{case}");
    }
}

#[test]
fn resize_matches_scikit_image() {
    let fixture = Fixture::open("skimage.safetensors");
    for case in fixture.cases() {
        let name = case["name"].as_str().unwrap();
        let (shape, input) = fixture.tensor(&format!("{name}/input"));
        let (new_shape, want) = fixture.tensor(&format!("{name}/output"));
        assert_eq!(shape, dims(&case["shape"]));
        assert_eq!(new_shape, dims(&case["new_shape"]));
        let order = order(&case["order"]);
        let got = resize_image(&input, &shape, &new_shape, order).unwrap();
        let (err, identical) = compare(name, &got, &want, order == ResampleOrder::Nearest);
        println!(
            "skimage {name}: rel err {err:.1e}, {identical}/{} identical",
            want.len()
        );
    }
}

fn check_segmentation_cases(file: &str, rule: SegmentationRule) {
    let fixture = Fixture::open(file);
    for case in fixture.cases() {
        if case.get("spacing").is_some() {
            continue; // a case of nnU-Net's function
        }
        let name = case["name"].as_str().unwrap();
        let (shape, input) = fixture.tensor(&format!("{name}/input"));
        let (new_shape, want) = fixture.tensor(&format!("{name}/output"));
        let got =
            resize_segmentation(&input, &shape, &new_shape, order(&case["order"]), rule).unwrap();
        compare(name, &got, &want, true);
    }
}

#[test]
fn resize_segmentation_matches_batchgenerators() {
    check_segmentation_cases(
        "segmentation.safetensors",
        SegmentationRule::ArgmaxNearestTie,
    );
}

#[test]
fn resize_segmentation_matches_legacy_batchgenerators() {
    check_segmentation_cases(
        "legacy_threshold.safetensors",
        SegmentationRule::ThresholdHalf,
    );
}

#[test]
fn the_two_label_rules_give_different_fixtures() {
    // Guards the legacy fixtures' purpose: at least one case separates the rules.
    let current = Fixture::open("segmentation.safetensors");
    let legacy = Fixture::open("legacy_threshold.safetensors");
    let differing = current
        .cases()
        .iter()
        .filter(|case| {
            let name = case["name"].as_str().unwrap();
            current.tensor(&format!("{name}/output")).1
                != legacy.tensor(&format!("{name}/output")).1
        })
        .count();
    assert!(differing > 0);
}

//! `claim segment` end to end: real processes on the phantom `claim
//! phantom` writes and the committed nnU-Net results folder
//! (`tests/fixtures/nnunet`, written by `tools/nnunet_reference.py`).

use crate::common;

use claim::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
use claim::LabelScheme;
use common::{assert_fails, assert_ok, claim, stdout};
use std::path::{Path, PathBuf};

/// A committed nnU-Net fixture (`$CLAIM_NNUNET_FIXTURES` instead, as in
/// `tests/engine/segmentation.rs`, to try freshly generated ones).
fn fixture(name: &str) -> PathBuf {
    std::env::var_os("CLAIM_NNUNET_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nnunet"))
        .join(name)
}

/// The 2-D results folder: PyTorch-saved checkpoints of folds 0 and 1.
fn results_2d() -> PathBuf {
    fixture("Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d")
}

/// `claim phantom -o DIR` (the default case nnU-Net's reference was
/// predicted on); returns the image file.
fn phantom_image(dir: &Path) -> PathBuf {
    assert_ok(&claim(
        &["phantom", "-o", dir.to_str().unwrap()],
        dir.parent().unwrap(),
    ));
    dir.join("image.nii.gz")
}

fn read_u8(path: &Path) -> claim::Volume<u8> {
    match claim::io::read_image(path).unwrap() {
        claim::Image::U8(v) => v,
        other => panic!("{} holds {:?}, not u8", path.display(), other.dtype()),
    }
}

/// nnUNetPredictor's label map of the phantom (fold 0, mirroring, step
/// 0.5, no post-processing) is what `claim segment` writes (up to argmax
/// near-ties, as the library's golden test), on the image's geometry.
#[test]
fn segment_equals_nnunet_on_the_phantom() {
    let tmp = tempfile::tempdir().unwrap();
    let image = phantom_image(&tmp.path().join("case"));
    let pred = tmp.path().join("pred.nii.gz");
    let out = claim(
        &[
            "segment",
            "--model",
            results_2d().to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "-o",
            pred.to_str().unwrap(),
            "--folds",
            "0",
            "--no-postprocess",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("nnUNetTrainer 2d") && text.contains("fold(s) 0,"),
        "{text}"
    );
    // 192 × 192 per slice, patch 64, step 0.5: 5 × 5 windows; 10 slices,
    // 4 mirror passes, one fold.
    assert!(
        text.contains("(1000 network evaluations, mirrored)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("wrote {}", pred.display())),
        "{text}"
    );

    let got = read_u8(&pred);
    let input = claim::io::read_image(&image).unwrap();
    assert_eq!(got.dims(), input.dims());
    assert_eq!(got.geometry, *input.geometry());
    let want = claim::io::read_image(&fixture("phantom_pred_2d_fold0.nii.gz"))
        .unwrap()
        .to_labels()
        .unwrap();
    assert_eq!(want.dims(), got.dims());
    let differing = want
        .data
        .iter()
        .zip(got.data.iter())
        .filter(|(a, b)| **a != i32::from(**b))
        .count();
    // As `tests/engine/segmentation.rs` (which also checks each is an argmax
    // near-tie in the logits): the network matches PyTorch to ~1e-6, not
    // bit for bit, so a voxel where two classes tie within an f16 step of
    // nnU-Net's window sums may flip; at most 1 in 10 000.
    println!("{differing} of {} voxels differ from nnU-Net", got.len());
    assert!(
        differing * 10_000 <= got.len(),
        "{differing} voxels differ from nnU-Net's"
    );
    assert!(
        got.data.iter().any(|&l| l == 2),
        "the reference holds myocardium"
    );
}

/// Two folds, no mirroring, step 1, post-processing and the phantom's
/// scheme: the CLI writes what the library computes.
#[test]
fn segment_flags_reach_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let image = phantom_image(&tmp.path().join("case"));
    let pred = tmp.path().join("pred.nii");
    let out = claim(
        &[
            "segment",
            "--model",
            results_2d().to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "-o",
            pred.to_str().unwrap(),
            "--folds",
            "1,0",
            "--no-mirroring",
            "--step",
            "1",
            "--labels",
            "emidec-rv",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let text = stdout(&out);
    // 3 × 3 windows per slice, 10 slices, 2 folds, one pass each.
    assert!(text.contains("(180 network evaluations)"), "{text}");
    assert!(text.contains("fold(s) 1, 0"), "{text}");

    let model = Segmenter::load(
        &results_2d(),
        &SegmenterOptions {
            folds: Some(vec![1, 0]),
            configuration: None,
        },
    )
    .unwrap();
    let params = SegmentParams {
        mirroring: false,
        step_size: 1.0,
        postprocess: true,
        label_scheme: LabelScheme::EMIDEC_WITH_RV,
    };
    let input = claim::io::read_image(&image).unwrap();
    let want = model.segment(&input, &params, &mut |_, _| true).unwrap();
    assert_eq!(read_u8(&pred).data, want.data);
}

#[test]
fn segment_fails_cleanly_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = phantom_image(&dir.join("case"));
    let model = results_2d();
    let run = |extra: &[&str]| {
        let mut args = vec!["segment"];
        args.extend_from_slice(extra);
        claim(&args, dir)
    };
    let (m, i) = (model.to_str().unwrap(), image.to_str().unwrap());
    let not_a_model = dir.join("model.pth");
    std::fs::write(&not_a_model, b"not a checkpoint").unwrap();
    let plans = model.join("plans.json");

    // Usage errors (clap) and bad flag values: invalid argument.
    let out = run(&["--image", i, "-o", "p.nii.gz"]);
    assert_fails(&out, 1, "--model");
    let out = run(&["--model", m, "--image", i, "-o", "p.nii.gz", "--folds", "x"]);
    assert_fails(&out, 1, "not a fold number");
    let out = run(&[
        "--model", m, "--image", i, "-o", "p.nii.gz", "--labels", "acdc",
    ]);
    assert_fails(&out, 1, "acdc");
    let out = run(&["--model", m, "--image", i, "-o", "p.nii.gz", "--step", "0"]);
    assert_fails(&out, 1, "--step");
    let out = run(&[
        "--model", m, "--image", i, "-o", "p.nii.gz", "--step", "1.5",
    ]);
    assert_fails(&out, 1, "(0, 1]");
    let out = run(&["--model", m, "--image", i, "-o", "p.nii.gz", "--folds", "7"]);
    assert_fails(&out, 1, "fold 7 not found");
    let out = run(&[
        "--model",
        m,
        "--image",
        i,
        "-o",
        "p.nii.gz",
        "--configuration",
        "3d_lowres",
    ]);
    assert_fails(&out, 1, "3d_lowres");
    // Files: missing (I/O), not what they should be (format).
    let out = run(&["--model", "missing_model", "--image", i, "-o", "p.nii.gz"]);
    assert_fails(&out, 2, "missing_model");
    let out = run(&["--model", m, "--image", "missing.nii.gz", "-o", "p.nii.gz"]);
    assert_fails(&out, 2, "missing.nii.gz");
    let out = run(&[
        "--model",
        not_a_model.to_str().unwrap(),
        "--image",
        i,
        "-o",
        "p.nii.gz",
    ]);
    assert_fails(&out, 3, "model.pth");
    let out = run(&[
        "--model",
        m,
        "--image",
        plans.to_str().unwrap(),
        "-o",
        "p.nii.gz",
    ]);
    assert_fails(&out, 3, "plans.json");
    assert!(!dir.join("p.nii.gz").exists(), "no output after a failure");
}

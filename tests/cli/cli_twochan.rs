//! `claim import` and `claim synth` with a two-channel (scar + MVO) 3-D
//! LeFusion trainer checkpoint (`tests/fixtures/synthesis/twochan_lefusion.pt`,
//! written by `tools/twochan_reference.py` the way upstream's trainer
//! saves: `model` / `ema` state dicts of the diffusion wrapper).

use crate::common::{assert_fails, assert_ok, claim, stderr, stdout};
use claim::models::Denoiser;
use claim::phantom::LABEL_SCHEME;
use std::path::{Path, PathBuf};
use std::process::Output;

fn checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthesis/twochan_lefusion.pt")
}

/// Imports `model` and `ema`; returns the path of the `model` file.
fn import(cwd: &Path) -> PathBuf {
    let src = checkpoint();
    let src = src.to_str().unwrap();
    let run = claim(&["import", src, "-o", "model.safetensors"], cwd);
    assert_ok(&run);
    assert!(stdout(&run).contains("from 'model'"), "{}", stdout(&run));
    assert_ok(&claim(
        &["import", src, "-o", "ema.safetensors", "--ema"],
        cwd,
    ));
    cwd.join("model.safetensors")
}

fn synth(cwd: &Path, model: &str, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "synth",
        "--model",
        model,
        "--image",
        "ph/image.nii.gz",
        "--labels",
        "ph/labels.nii.gz",
        "-o",
        out,
        "--rv",
        "5",
        "--t-start",
        "4",
        "--jump-length",
        "1",
        "--jump-n-sample",
        "1",
    ];
    args.extend_from_slice(extra);
    claim(&args, cwd)
}

/// Asserts that only lesion voxels changed; returns how many did.
fn changed_lesion_voxels(cwd: &Path, out: &str) -> usize {
    let read = |name: &str| claim::io::read_image(&cwd.join(name)).unwrap().to_f32();
    let (input, output) = (read("ph/image.nii.gz"), read(out));
    let labels = claim::io::read_image(&cwd.join("ph/labels.nii.gz"))
        .unwrap()
        .to_labels()
        .unwrap();
    let mut changed = 0;
    for ((a, b), l) in input.data.iter().zip(output.data.iter()).zip(&labels.data) {
        if LABEL_SCHEME.is_lesion(*l) {
            changed += usize::from(a.to_bits() != b.to_bits());
        } else {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{out}: a voxel outside the lesion changed"
            );
        }
    }
    changed
}

#[test]
fn two_channel_checkpoint_imports_and_synthesizes() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let model_path = import(cwd);
    let model = Denoiser::from_file(&model_path).unwrap();
    let ema = Denoiser::from_file(&cwd.join("ema.safetensors")).unwrap();
    let cfg = model.config();
    assert_eq!((cfg.channels, cfg.cond_dim), (2, Some(32)));
    assert_eq!(ema.config(), cfg);
    let read = |name: &str| std::fs::read(cwd.join(name)).unwrap();
    assert_ne!(read("model.safetensors"), read("ema.safetensors"));

    assert_ok(&claim(
        &["phantom", "-o", "ph", "--scar", "--seed", "2"],
        cwd,
    ));
    let labels = claim::io::read_image(&cwd.join("ph/labels.nii.gz"))
        .unwrap()
        .to_labels()
        .unwrap();
    assert!(
        labels.data.iter().any(|l| *l == LABEL_SCHEME.mvo),
        "the phantom has an MVO core"
    );
    let model = model_path.to_str().unwrap();
    // Defaults: the layout's two preset histograms, 10 frames.
    let run = synth(cwd, model, "a.nii.gz", &[]);
    assert_ok(&run);
    assert!(!stderr(&run).contains("warning"), "{}", stderr(&run));
    assert!(changed_lesion_voxels(cwd, "a.nii.gz") > 0);

    // One histogram per channel, a preset and values.
    let values = ["0.0625"; 16].join(",");
    assert_ok(&synth(
        cwd,
        model,
        "b.nii.gz",
        &["--hist", "preset", "--hist", &values],
    ));
    assert!(changed_lesion_voxels(cwd, "b.nii.gz") > 0);
    // Measured per channel from a reference case.
    assert_ok(&synth(
        cwd,
        model,
        "c.nii.gz",
        &[
            "--hist-ref-image",
            "ph/image.nii.gz",
            "--hist-ref-labels",
            "ph/labels.nii.gz",
        ],
    ));
    assert!(changed_lesion_voxels(cwd, "c.nii.gz") > 0);

    // Errors that name what is wrong; nothing is written.
    for (extra, mentions) in [
        (
            vec!["--hist", "preset", "--hist", "preset", "--hist", "preset"],
            "3 histogram(s) given, the model has 2 channel(s)",
        ),
        (
            vec!["--hist", &values],
            "histogram condition has 16 values, the model expects 32",
        ),
        (
            vec!["--hist", "preset", "--hist", "0.5,0.5"],
            "histogram of channel 1 has 2 values, expected 16",
        ),
        (
            vec!["--channel-labels", "3"],
            "names 1 label(s) [3], but the model has 2 channel(s)",
        ),
        (
            vec!["--channel-labels", "3,1"],
            "channel 1 of the channel↔label map is label 1",
        ),
    ] {
        let run = synth(cwd, model, "bad.nii.gz", &extra);
        assert_fails(&run, 1, mentions);
        assert!(!cwd.join("bad.nii.gz").exists());
    }

    // A one-channel model paints MVO as scar and warns.
    let one = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/denoiser/unet2d_weights.safetensors");
    let run = synth(cwd, one.to_str().unwrap(), "d.nii.gz", &[]);
    assert_ok(&run);
    assert!(
        stderr(&run).contains("warning: ")
            && stderr(&run).contains("MVO voxel(s) (label 4) are painted by channel 0"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn synth_help_describes_the_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let run = claim(&["synth", "--help"], dir.path());
    assert_ok(&run);
    let help = stdout(&run);
    for needle in [
        "Model layouts",
        "LeFusion-EMIDEC",
        "channel 1 the MVO",
        "--hist-ref-image",
        "--channel-labels",
        "3-D windows",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

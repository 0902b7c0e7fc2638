//! The `claim` program end to end: real processes in temporary folders.

use claim::phantom::{self, PhantomParams};
use claim::{Image, Volume};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn claim(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claim"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the claim binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "claim failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A failure the CLI reports cleanly: the expected exit status, one
/// `error:` message, no panic.
fn assert_fails(out: &Output, status: i32, mentions: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(
        err.contains(mentions),
        "stderr does not mention {mentions:?}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "stderr: {err}"
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn as_f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn phantom_writes_what_the_library_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/case");
    let out = claim(
        &[
            "phantom",
            "-o",
            dir.to_str().unwrap(),
            "--seed",
            "5",
            "--scar",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    assert!(stdout(&out).contains("image.nii.gz"), "{}", stdout(&out));

    let expected = phantom::generate(&PhantomParams {
        seed: 5,
        with_scar: true,
        ..PhantomParams::default()
    })
    .unwrap();
    let Image::F32(image) = claim::io::read_image(&dir.join("image.nii.gz")).unwrap() else {
        panic!("image.nii.gz is not f32");
    };
    let bits = |v: &Volume<f32>| v.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&image), bits(&expected.image));
    assert!(image.geometry.approx_eq(&expected.image.geometry, 1e-3));

    let labels = claim::io::read_image(&dir.join("labels.nii.gz")).unwrap();
    let Image::U8(ref labels_u8) = labels else {
        panic!("labels.nii.gz is not u8");
    };
    assert_eq!(labels_u8.dims(), [192, 192, 10]);
    assert_eq!(labels.to_labels().unwrap().data, expected.labels.data);

    // Same seed, same bytes: reproducibility is a product promise.
    let again = tmp.path().join("again");
    assert_ok(&claim(
        &[
            "phantom",
            "-o",
            again.to_str().unwrap(),
            "--seed",
            "5",
            "--scar",
        ],
        tmp.path(),
    ));
    for file in ["image.nii.gz", "labels.nii.gz"] {
        assert!(
            std::fs::read(dir.join(file)).unwrap() == std::fs::read(again.join(file)).unwrap(),
            "{file} differs between two runs with the same seed"
        );
    }
}

#[test]
fn info_reports_geometry_and_label_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    assert_ok(&claim(
        &["phantom", "-o", "case", "--seed", "2", "--scar"],
        tmp.path(),
    ));
    let expected = phantom::generate(&PhantomParams {
        seed: 2,
        with_scar: true,
        ..PhantomParams::default()
    })
    .unwrap();
    let geometry = expected.labels.geometry;

    let text = claim(&["info", "case/labels.nii.gz"], tmp.path());
    assert_ok(&text);
    let text = stdout(&text);
    for needle in [
        "u8",
        "192 x 192 x 10",
        "1.5625 x 1.5625 x 9 mm",
        "LPS",
        "mL",
    ] {
        assert!(text.contains(needle), "info text lacks {needle:?}:\n{text}");
    }
    assert!(text.contains(&geometry.orientation_code()), "{text}");

    let info = json(&claim(
        &["info", "--json", "case/labels.nii.gz"],
        tmp.path(),
    ));
    assert_eq!(info["dtype"], "u8");
    assert_eq!(as_f64s(&info["dims"]), vec![192.0, 192.0, 10.0]);
    assert_eq!(as_f64s(&info["spacing"]), vec![1.5625, 1.5625, 9.0]);
    assert_eq!(info["orientation"], geometry.orientation_code().as_str());
    for (row, expected_row) in info["direction"]
        .as_array()
        .unwrap()
        .iter()
        .zip(geometry.direction)
    {
        for (got, want) in as_f64s(row).iter().zip(expected_row) {
            assert!((got - want).abs() < 1e-4, "direction {got} vs {want}");
        }
    }
    for (got, want) in as_f64s(&info["origin"]).iter().zip(geometry.origin) {
        assert!((got - want).abs() < 1e-3, "origin {got} vs {want}");
    }
    assert_eq!(info["min"], 0.0);
    assert_eq!(info["max"], 5.0);

    let voxel_ml = geometry.voxel_volume_mm3() / 1000.0;
    let labels = info["labels"].as_array().unwrap();
    let found: Vec<i64> = labels
        .iter()
        .map(|l| l["label"].as_i64().unwrap())
        .collect();
    assert_eq!(found, vec![0, 1, 2, 3, 4, 5]);
    let mut total = 0;
    for entry in labels {
        let label = entry["label"].as_i64().unwrap() as i32;
        let voxels = entry["voxels"].as_u64().unwrap();
        let want = expected.labels.data.iter().filter(|&&l| l == label).count() as u64;
        assert_eq!(voxels, want, "label {label}");
        let ml = entry["ml"].as_f64().unwrap();
        assert!(
            (ml - voxels as f64 * voxel_ml).abs() < 1e-6,
            "label {label}: {ml} mL"
        );
        total += voxels;
    }
    assert_eq!(total, 192 * 192 * 10);

    // An intensity image has a value range but no label histogram.
    let image = json(&claim(&["info", "--json", "case/image.nii.gz"], tmp.path()));
    assert_eq!(image["dtype"], "f32");
    assert!(image["labels"].is_null());
    assert!(image["min"].as_f64().unwrap() >= 0.0);
    assert!(image["max"].as_f64().unwrap() > 500.0);
    assert_eq!(image["non_finite_voxels"], 0);
}

#[test]
fn demo_runs_the_pipeline_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    // Default output folder: ./claim-demo
    let out = claim(&["demo"], tmp.path());
    assert_ok(&out);
    let text = stdout(&out);
    for needle in [
        "LV cavity",
        "myocardium",
        "scar",
        "% of myocardium",
        "192 x 192 x 10",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
    let dir = tmp.path().join("claim-demo");
    for file in ["image.nii.gz", "labels.nii.gz", "report.json"] {
        assert!(dir.join(file).is_file(), "demo did not write {file}");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let volumes = &report["volumes"];
    let lv = volumes["lv_cavity_ml"].as_f64().unwrap();
    let scar_percent = volumes["scar_percent_of_myocardium"].as_f64().unwrap();
    assert!((60.0..250.0).contains(&lv), "LV cavity {lv} mL");
    assert!((3.0..40.0).contains(&scar_percent), "scar {scar_percent} %");
    assert!(volumes["mvo_ml"].as_f64().unwrap() > 0.0);
    let labels = claim::io::read_image(&dir.join("labels.nii.gz")).unwrap();
    assert!(labels.to_labels().unwrap().data.iter().any(|&l| l == 3));

    // An explicit folder works too, and the report names the files it wrote.
    let out = claim(&["demo", "-o", "elsewhere", "--seed", "4"], tmp.path());
    assert_ok(&out);
    let report: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("elsewhere/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["seed"], 4);
    assert!(report["files"].as_array().unwrap().len() >= 2);
}

#[test]
fn errors_are_one_line_with_a_status_exit_code() {
    let tmp = tempfile::tempdir().unwrap();

    // Missing input: I/O (2), naming the file.
    let out = claim(&["info", "no-such-file.nii.gz"], tmp.path());
    assert_fails(&out, 2, "no-such-file.nii.gz");

    // Not a NIfTI file: a clean failure, not a crash.
    std::fs::write(tmp.path().join("junk.nii"), b"this is not an image").unwrap();
    let out = claim(&["info", "junk.nii"], tmp.path());
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: ") && stderr(&out).contains("junk.nii"));

    // Output folder below a regular file: I/O (2), even as root.
    std::fs::write(tmp.path().join("a-file"), b"x").unwrap();
    let out = claim(&["phantom", "-o", "a-file/sub"], tmp.path());
    assert_fails(&out, 2, "a-file");
    let out = claim(&["demo", "-o", "a-file"], tmp.path());
    assert_fails(&out, 2, "a-file");

    // Bad flags and values: invalid argument (1).
    let out = claim(&["phantom", "--bogus"], tmp.path());
    assert_fails(&out, 1, "--bogus");
    let out = claim(&["phantom", "-o", "x", "--seed", "minus-one"], tmp.path());
    assert_fails(&out, 1, "minus-one");
    let out = claim(&["frobnicate"], tmp.path());
    assert_fails(&out, 1, "frobnicate");
    let out = claim(&[], tmp.path());
    assert!(out.status.code() == Some(1) && stderr(&out).contains("Usage"));

    // Help is not an error.
    let out = claim(&["--help"], tmp.path());
    assert_ok(&out);
    for command in ["phantom", "info", "demo"] {
        assert!(stdout(&out).contains(command), "{}", stdout(&out));
    }
}

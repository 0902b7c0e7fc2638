//! The `claim` program end to end: real processes in temporary folders.

use crate::common;

use claim::phantom::{self, PhantomParams, LABEL_SCHEME};
use claim::smile::aha::{aha_segments, AhaParams};
use claim::smile::{
    generate, render_png, segment_stats, BullseyeOptions, Pattern, SmileParams, Territory,
};
use claim::{DType, Image, LabelScheme, Volume};
use common::{assert_ok, claim, stderr, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A failure the CLI reports cleanly: the expected exit status, one
/// `error:` message, no panic (nor a hint to set `RUST_BACKTRACE`).
fn assert_fails(out: &Output, status: i32, mentions: &str) {
    common::assert_fails(out, status, mentions);
    let err = stderr(out);
    assert!(!err.contains("RUST_BACKTRACE"), "stderr: {err}");
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
    // Default output folder: ./claim-demo. `--quick` (RePaint without
    // jumps) keeps this debug-build run short; the default schedule runs
    // in CI's release smoke run (.ci/run).
    let out = claim(&["demo", "--quick"], tmp.path());
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
    for needle in [
        "AHA 17 segments",
        "septum from the RV",
        "smile_ischemic_lad",
        "not built yet",
        "synthesis",
        "segmentation",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
    let dir = tmp.path().join("claim-demo");
    for file in [
        "image.nii.gz",
        "labels.nii.gz",
        "report.json",
        "segments.nii.gz",
        "smile_ischemic_lad.nii.gz",
        "smile_ischemic_rca.nii.gz",
        "smile_ischemic_lcx.nii.gz",
        "smile_midwall.nii.gz",
        "bullseye.svg",
        "bullseye.png",
        "smile_ischemic_lad_bullseye.svg",
    ] {
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
    let labels = labels.to_labels().unwrap();
    assert!(labels.data.iter().any(|&l| l == 3));

    // The segment map is the library's parcellation of the phantom labels.
    assert_eq!(report["aha"]["used_rv"], true);
    let aha_params = AhaParams {
        labels: LABEL_SCHEME,
        ..AhaParams::default()
    };
    let Image::U8(segments) = claim::io::read_image(&dir.join("segments.nii.gz")).unwrap() else {
        panic!("segments.nii.gz is not u8");
    };
    assert_eq!(
        segments.data,
        aha_segments(&labels, &aha_params).unwrap().data
    );

    // Four SMILE draws hitting their burdens, one per territory plus a
    // non-ischaemic one; every file the report names exists.
    let draws = report["smile"].as_array().unwrap();
    let territories: Vec<&str> = draws
        .iter()
        .map(|d| d["territory"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(territories, vec!["lad", "rca", "lcx", "-"]);
    assert_eq!(draws[3]["pattern"], "midwall");
    for draw in draws {
        let burden = draw["burden"].as_f64().unwrap();
        let target = draw["burden_target"].as_f64().unwrap();
        assert!((burden - target).abs() <= 0.02, "{draw}");
        let file = claim::io::read_image(&tmp.path().join(draw["file"].as_str().unwrap())).unwrap();
        let drawn = file.to_labels().unwrap();
        let lesion = drawn.data.iter().filter(|&&l| l == 3 || l == 4).count();
        assert_eq!(
            lesion as u64,
            draw["scar_voxels"].as_u64().unwrap() + draw["mvo_voxels"].as_u64().unwrap()
        );
    }
    assert!(draws[0]["mvo_voxels"].as_u64().unwrap() > 0);
    let stats_burden = report["scar_stats"]["burden"].as_f64().unwrap();
    assert!((stats_burden * 100.0 - scar_percent).abs() < 1e-6);
    for file in report["files"].as_array().unwrap() {
        assert!(tmp.path().join(file.as_str().unwrap()).is_file(), "{file}");
    }
    assert_eq!(report["steps"].as_array().unwrap().len(), 10);
    assert!(!report["not_built_yet"].as_array().unwrap().is_empty());
    assert_eq!(report["device"], "cpu", "the models' default device");
    let png = std::fs::read(dir.join("bullseye.png")).unwrap();
    assert!(png.starts_with(PNG_SIGNATURE));

    // The built-in models: a bright painted infarct, nothing else changed,
    // a segmentation that finds the heart and the scar, overlays.
    let models = &report["models"];
    assert_eq!(models["changed_outside_lesion"], 0, "{models}");
    let (scar, remote) = (
        models["scar_mean"].as_f64().unwrap(),
        models["remote_myocardium_mean"].as_f64().unwrap(),
    );
    assert!(
        scar > 2.0 * remote,
        "painted scar {scar}, remote myocardium {remote}"
    );
    let dice = |name: &str| -> f64 {
        models["dice"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d[0] == name)
            .and_then(|d| d[1].as_f64())
            .unwrap()
    };
    assert!(dice("myocardium incl. lesions") >= 0.8, "{models}");
    assert!(dice("scar incl. MVO") >= 0.4, "{models}");
    for file in [
        "synth_image.nii.gz",
        "synth_labels.nii.gz",
        "predicted_labels.nii.gz",
        "predicted_bullseye.svg",
        "predicted_bullseye.png",
    ] {
        assert!(dir.join(file).is_file(), "demo did not write {file}");
    }
    let overlays = models["overlays"].as_array().unwrap();
    assert_eq!(overlays.len(), 3);
    for overlay in overlays {
        let png = std::fs::read(tmp.path().join(overlay.as_str().unwrap())).unwrap();
        let (width, height, _) = claim::io::png::decode_rgb(&png).unwrap();
        assert!(
            width > 3 * height,
            "three panels side by side: {width}×{height}"
        );
    }
    let synth = claim::io::read_image(&dir.join("synth_image.nii.gz")).unwrap();
    assert_eq!(synth.dims(), [192, 192, 10]);

    assert_eq!(report["seed"], 1);
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
    for command in [
        "phantom", "info", "aha", "smile", "stats", "bullseye", "demo",
    ] {
        assert!(stdout(&out).contains(command), "{}", stdout(&out));
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The phantom's label map (EMIDEC + RV 5) as the library generates it.
fn phantom_labels(seed: u64, with_scar: bool) -> Volume<i32> {
    phantom::generate(&PhantomParams {
        seed,
        with_scar,
        ..PhantomParams::default()
    })
    .unwrap()
    .labels
}

/// Writes `labels` as `dtype` to `dir/name` and returns the path and the
/// labels as read back (geometry after the NIfTI round trip).
fn write_labels(
    dir: &Path,
    name: &str,
    labels: &Volume<i32>,
    dtype: DType,
) -> (PathBuf, Volume<i32>) {
    let image = match dtype {
        DType::U8 => Image::U8(labels.map(|l| u8::try_from(*l).unwrap())),
        DType::I16 => Image::I16(labels.map(|l| i16::try_from(*l).unwrap())),
        DType::U16 => Image::U16(labels.map(|l| u16::try_from(*l).unwrap())),
        DType::I32 => Image::I32(labels.clone()),
        DType::F32 => Image::F32(labels.map(|l| *l as f32)),
    };
    let path = dir.join(name);
    claim::io::write_image(&image, &path).unwrap();
    let back = claim::io::read_image(&path).unwrap();
    assert_eq!(back.dtype(), dtype);
    (path, back.to_labels().unwrap())
}

fn read_u8(path: &Path) -> Volume<u8> {
    match claim::io::read_image(path).unwrap() {
        Image::U8(v) => v,
        other => panic!("{} is {:?}, not u8", path.display(), other.dtype()),
    }
}

fn aha_with(labels: LabelScheme, rotation_deg: f64) -> AhaParams {
    AhaParams {
        labels,
        rotation_deg,
        ..AhaParams::default()
    }
}

#[test]
fn aha_writes_the_library_segment_map() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = write_labels(
        tmp.path(),
        "labels.nii.gz",
        &phantom_labels(3, true),
        DType::U8,
    );

    let out = claim(
        &["aha", "labels.nii.gz", "-o", "out/seg.nii.gz", "--rv", "5"],
        tmp.path(),
    );
    assert_ok(&out);
    for needle in ["septum from the RV", "long axis", "wrote out/seg.nii.gz"] {
        assert!(stdout(&out).contains(needle), "{}", stdout(&out));
    }
    let segments = read_u8(&tmp.path().join("out/seg.nii.gz"));
    let expected = aha_segments(&labels, &aha_with(LABEL_SCHEME, 0.0)).unwrap();
    assert_eq!(segments.data, expected.data);
    assert!(segments.geometry.approx_eq(&labels.geometry, 1e-6));
    assert!((1..=17).all(|s| segments.data.iter().any(|&v| v == s)));

    // --rotation turns the sectors; `--mvo N` names the MVO label as --mvo-label does.
    let out = claim(
        &[
            "aha",
            "labels.nii.gz",
            "-o",
            "turned.nii",
            "--rv",
            "5",
            "--rotation",
            "-30",
            "--mvo",
            "4",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let turned = read_u8(&tmp.path().join("turned.nii"));
    assert_eq!(
        turned.data,
        aha_segments(&labels, &aha_with(LABEL_SCHEME, -30.0))
            .unwrap()
            .data
    );
    assert_ne!(turned.data, segments.data);

    // Without an RV the orientation comes from the geometry, and says so.
    let no_rv = labels.map(|&l| if l == 5 { 0 } else { l });
    let (_, no_rv) = write_labels(tmp.path(), "no_rv.nii.gz", &no_rv, DType::U8);
    let out = claim(
        &["aha", "no_rv.nii.gz", "-o", "no_rv_seg.nii.gz"],
        tmp.path(),
    );
    assert_ok(&out);
    assert!(stdout(&out).contains("approximated"), "{}", stdout(&out));
    assert_eq!(
        read_u8(&tmp.path().join("no_rv_seg.nii.gz")).data,
        aha_segments(&no_rv, &aha_with(LabelScheme::EMIDEC, 0.0))
            .unwrap()
            .data
    );
}

#[test]
fn smile_draws_are_reproducible_and_match_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = write_labels(
        tmp.path(),
        "labels.nii.gz",
        &phantom_labels(3, true),
        DType::U8,
    );
    let flags = [
        "--rv",
        "5",
        "--territory",
        "rca",
        "--burden",
        "0.15",
        "--mvo",
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["smile", "labels.nii.gz"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(extra);
        claim(&args, tmp.path())
    };

    let out = run(&["--seed", "11", "-o", "a.nii.gz"]);
    assert_ok(&out);
    let text = stdout(&out);
    for needle in [
        "seed 11",
        "territory rca",
        "segments",
        "burden 0.150",
        "transmurality",
        "septum from the RV",
    ] {
        assert!(
            text.contains(needle),
            "smile output lacks {needle:?}:\n{text}"
        );
    }
    let params = SmileParams::default()
        .with_territory(Territory::Rca)
        .with_burden(0.15)
        .with_mvo(true)
        .with_labels(LABEL_SCHEME);
    let expected = generate(&labels, &params, 11).unwrap();
    let drawn = read_u8(&tmp.path().join("a.nii.gz"));
    assert_eq!(drawn.map(|l| i32::from(*l)).data, expected.labels.data);
    assert!(drawn.geometry.approx_eq(&labels.geometry, 1e-6));
    assert!(expected.mvo_voxels > 0);

    // Same seed, same bytes.
    assert_ok(&run(&["--seed", "11", "-o", "b.nii.gz"]));
    let a = std::fs::read(tmp.path().join("a.nii.gz")).unwrap();
    assert!(a == std::fs::read(tmp.path().join("b.nii.gz")).unwrap());

    // --count 3 into a folder: seeds 11, 12, 13; the first is draw `a` again.
    let out = run(&["--seed", "11", "--count", "3", "-o", "draws"]);
    assert_ok(&out);
    assert_eq!(stdout(&out).matches("wrote draws/smile_").count(), 3);
    let files: Vec<Vec<u8>> = (11..=13)
        .map(|seed| std::fs::read(tmp.path().join(format!("draws/smile_{seed}.nii.gz"))).unwrap())
        .collect();
    assert!(files[0] == a);
    assert!(files[0] != files[1] && files[1] != files[2] && files[0] != files[2]);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("draws")).unwrap().count(),
        3
    );

    // A name with {seed}, another pattern, and the input's voxel type kept.
    let (_, labels_i16) = write_labels(tmp.path(), "labels_i16.nii.gz", &labels, DType::I16);
    let out = claim(
        &[
            "smile",
            "labels_i16.nii.gz",
            "--rv",
            "5",
            "--pattern",
            "midwall",
            "--seed",
            "5",
            "--count",
            "2",
            "-o",
            "mid/draw_{seed}.nii",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    for seed in [5, 6] {
        let image =
            claim::io::read_image(&tmp.path().join(format!("mid/draw_{seed}.nii"))).unwrap();
        assert_eq!(image.dtype(), DType::I16);
        let expected = generate(
            &labels_i16,
            &SmileParams::default()
                .with_pattern(Pattern::Midwall)
                .with_labels(LABEL_SCHEME),
            seed,
        )
        .unwrap();
        assert_eq!(image.to_labels().unwrap().data, expected.labels.data);
    }
}

#[test]
fn stats_match_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = write_labels(
        tmp.path(),
        "labels.nii.gz",
        &phantom_labels(2, true),
        DType::U8,
    );
    let segments = aha_segments(&labels, &aha_with(LABEL_SCHEME, 0.0)).unwrap();
    let expected = segment_stats(&labels, &segments, &LABEL_SCHEME).unwrap();
    assert!(expected.burden > 0.03);

    let parcellated = json(&claim(
        &["stats", "labels.nii.gz", "--rv", "5", "--json"],
        tmp.path(),
    ));
    assert_ok(&claim(
        &["aha", "labels.nii.gz", "--rv", "5", "-o", "seg.nii.gz"],
        tmp.path(),
    ));
    let given = json(&claim(
        &[
            "stats",
            "labels.nii.gz",
            "--segments",
            "seg.nii.gz",
            "--rv",
            "5",
            "--json",
        ],
        tmp.path(),
    ));
    assert_eq!(parcellated, given);
    let burden = given["burden"].as_f64().unwrap();
    assert!((burden - expected.burden).abs() < 1e-12, "{burden}");
    let per_segment = given["per_segment"].as_array().unwrap();
    assert_eq!(per_segment.len(), 17);
    for (got, want) in per_segment.iter().zip(&expected.per_segment) {
        assert_eq!(got["segment"].as_u64(), Some(u64::from(want.segment)));
        for (key, value) in [
            ("myocardium_ml", want.myocardium_ml),
            ("scar_ml", want.scar_ml),
            ("mvo_ml", want.mvo_ml),
            ("scar_percent", want.scar_percent),
        ] {
            assert!(
                (got[key].as_f64().unwrap() - value).abs() < 1e-9,
                "{key}: {got}"
            );
        }
    }

    let out = claim(&["stats", "labels.nii.gz", "--rv", "5"], tmp.path());
    assert_ok(&out);
    let text = stdout(&out);
    for needle in [
        "myocardium mL",
        "basal anterior",
        "apex",
        "total",
        &format!("burden {:.4}", expected.burden),
        "septum from the RV",
    ] {
        assert!(
            text.contains(needle),
            "stats output lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn bullseye_writes_svg_and_png() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = write_labels(
        tmp.path(),
        "labels.nii.gz",
        &phantom_labels(4, true),
        DType::U8,
    );
    let out = claim(
        &[
            "bullseye",
            "labels.nii.gz",
            "--rv",
            "5",
            "-o",
            "plots/scar.svg",
            "--title",
            "Phantom & scar",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let svg = std::fs::read_to_string(tmp.path().join("plots/scar.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Phantom &amp; scar"), "title not escaped");
    let mut numbers: Vec<u32> = svg
        .lines()
        .filter(|l| l.contains("class=\"segment-number\""))
        .map(|l| {
            let start = l.find('>').unwrap() + 1;
            let end = l.find("</text>").unwrap();
            l[start..end].parse().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=17).collect::<Vec<_>>());

    let out = claim(
        &["bullseye", "labels.nii.gz", "--rv", "5", "-o", "scar.png"],
        tmp.path(),
    );
    assert_ok(&out);
    let png = std::fs::read(tmp.path().join("scar.png")).unwrap();
    assert!(png.starts_with(PNG_SIGNATURE));
    let segments = aha_segments(&labels, &aha_with(LABEL_SCHEME, 0.0)).unwrap();
    let stats = segment_stats(&labels, &segments, &LABEL_SCHEME).unwrap();
    assert!(png == render_png(&stats, &BullseyeOptions::default()).unwrap());
}

#[test]
fn smile_commands_fail_cleanly_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    write_labels(cwd, "labels.nii.gz", &phantom_labels(1, false), DType::U8);

    // Missing input: I/O (2), naming the file.
    for command in ["aha", "smile", "stats", "bullseye"] {
        let out_name = if command == "bullseye" {
            "x.svg"
        } else {
            "x.nii.gz"
        };
        let args: Vec<&str> = match command {
            "stats" => vec![command, "missing.nii.gz"],
            _ => vec![command, "missing.nii.gz", "-o", out_name],
        };
        assert_fails(&claim(&args, cwd), 2, "missing.nii.gz");
    }

    // Labels without myocardium: invalid argument (1), saying so.
    let cavity_only = Volume::from_vec(
        [6, 6, 3],
        (0..108).map(|n| i32::from(n % 3 == 0)).collect(),
        claim::Geometry::with_spacing([2.0, 2.0, 8.0]),
    )
    .unwrap();
    write_labels(cwd, "no_myo.nii.gz", &cavity_only, DType::U8);
    assert_fails(
        &claim(&["aha", "no_myo.nii.gz", "-o", "s.nii.gz"], cwd),
        1,
        "myocardium",
    );
    assert_fails(
        &claim(&["smile", "no_myo.nii.gz", "-o", "s.nii.gz"], cwd),
        1,
        "myocardium",
    );
    assert_fails(&claim(&["stats", "no_myo.nii.gz"], cwd), 1, "myocardium");

    // An RV label the flags do not name: the message says which flag to use.
    assert_fails(
        &claim(&["aha", "labels.nii.gz", "-o", "s.nii.gz"], cwd),
        1,
        "--rv",
    );

    let smile = |extra: &[&str]| {
        let mut args = vec!["smile", "labels.nii.gz", "--rv", "5"];
        args.extend_from_slice(extra);
        claim(&args, cwd)
    };
    assert_fails(&smile(&["-o", "s.nii.gz", "--burden", "1.5"]), 1, "burden");
    assert_fails(&smile(&["-o", "s.nii.gz", "--burden", "nan"]), 1, "burden");
    assert_fails(
        &smile(&["-o", "s.nii.gz", "--pattern", "spiral"]),
        1,
        "spiral",
    );
    assert_fails(
        &smile(&["-o", "s.nii.gz", "--territory", "lmca"]),
        1,
        "lmca",
    );
    assert_fails(&smile(&["-o", "s", "--count", "0"]), 1, "--count");
    assert_fails(&smile(&["-o", "one.nii.gz", "--count", "2"]), 1, "{seed}");
    assert_fails(
        &smile(&[
            "-o",
            "s.nii.gz",
            "--pattern",
            "midwall",
            "--transmurality",
            "0.5",
        ]),
        1,
        "ischemic",
    );
    assert_fails(
        &smile(&["--seed", "18446744073709551615", "--count", "2", "-o", "d"]),
        1,
        "--seed",
    );
    // The output keeps the input's u8 voxels, which cannot hold label 300.
    assert_fails(
        &smile(&["-o", "s.nii.gz", "--mvo", "--mvo-label", "300"]),
        1,
        "u8",
    );
    assert!(!cwd.join("s.nii.gz").exists() && !cwd.join("s").exists());

    // A segment map of other dims; plot and output names with the wrong extension.
    let small = Volume::from_vec([2, 2, 2], vec![0u8; 8], claim::Geometry::default()).unwrap();
    claim::io::write_image(&Image::U8(small), &cwd.join("small_seg.nii")).unwrap();
    assert_fails(
        &claim(
            &[
                "stats",
                "labels.nii.gz",
                "--rv",
                "5",
                "--segments",
                "small_seg.nii",
            ],
            cwd,
        ),
        1,
        "dims",
    );
    assert_fails(
        &claim(
            &["bullseye", "labels.nii.gz", "--rv", "5", "-o", "plot.jpg"],
            cwd,
        ),
        1,
        ".svg or .png",
    );
    assert_fails(
        &claim(&["aha", "labels.nii.gz", "--rv", "5", "-o", "seg.png"], cwd),
        1,
        ".nii",
    );
    assert_fails(
        &claim(
            &[
                "bullseye",
                "labels.nii.gz",
                "--rv",
                "5",
                "-o",
                "p.svg",
                "--size",
                "10",
            ],
            cwd,
        ),
        1,
        "size",
    );
}

#[test]
fn a_closed_stdout_does_not_stop_the_work() {
    // `claim smile ... | head -1`: the reader goes away before the first
    // line; every later line meets a broken pipe. The command still writes
    // every draw and succeeds, without a panic message. (Every command
    // prints through the same `outln!`; smile prints a line per draw.)
    let tmp = tempfile::tempdir().unwrap();
    assert_ok(&claim(&["phantom", "-o", "ph", "--seed", "4"], tmp.path()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_claim"))
        .args([
            "smile",
            "ph/labels.nii.gz",
            "--count",
            "4",
            "--seed",
            "10",
            "--rv",
            "5",
            "-o",
            "draws/",
        ])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let mut written: Vec<_> = std::fs::read_dir(tmp.path().join("draws"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(written.len(), 4, "{written:?}");
}

/// The committed tiny denoiser fixture (dim 8, one channel, 16-bin
/// condition): fast enough for a few RePaint steps on the phantom.
fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/denoiser/unet2d_weights.safetensors")
}

#[test]
fn synth_paints_only_the_scar_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    assert_ok(&claim(
        &["phantom", "-o", "ph", "--scar", "--seed", "2"],
        cwd,
    ));
    let model = tiny_model();
    let model = model.to_str().unwrap();
    let synth = |out: &str, seed: &str| {
        claim(
            &[
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
                "8",
                "--jump-length",
                "1",
                "--jump-n-sample",
                "1",
                "--seed",
                seed,
            ],
            cwd,
        )
    };
    let first = synth("a.nii.gz", "4");
    assert_ok(&first);
    assert!(
        stdout(&first).contains("network evaluations"),
        "{}",
        stdout(&first)
    );
    assert_ok(&synth("b.nii.gz", "4"));
    assert_ok(&synth("c.nii.gz", "5"));
    let bytes = |name: &str| std::fs::read(cwd.join(name)).unwrap();
    assert_eq!(bytes("a.nii.gz"), bytes("b.nii.gz"), "same seed, same file");
    assert_ne!(
        bytes("a.nii.gz"),
        bytes("c.nii.gz"),
        "another seed, another scar"
    );

    let read = |name: &str| claim::io::read_image(&cwd.join(name)).unwrap().to_f32();
    let (input, output) = (read("ph/image.nii.gz"), read("a.nii.gz"));
    let labels = claim::io::read_image(&cwd.join("ph/labels.nii.gz"))
        .unwrap()
        .to_labels()
        .unwrap();
    assert_eq!(input.geometry, output.geometry);
    let scheme = LABEL_SCHEME;
    let mut changed_in_lesion = 0;
    for ((a, b), l) in input
        .data
        .iter()
        .zip(output.data.iter())
        .zip(labels.data.iter())
    {
        if scheme.is_lesion(*l) {
            changed_in_lesion += usize::from(a.to_bits() != b.to_bits());
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "a voxel outside the scar changed");
        }
    }
    assert!(changed_in_lesion > 0, "the scar was not painted");
}

#[test]
fn synth_fails_cleanly_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    assert_ok(&claim(&["phantom", "-o", "scar", "--scar"], cwd));
    assert_ok(&claim(&["phantom", "-o", "plain"], cwd));
    let model = tiny_model();
    let model = model.to_str().unwrap();
    let run = |model: &str, case: &str, extra: &[&str]| {
        let image = format!("{case}/image.nii.gz");
        let labels = format!("{case}/labels.nii.gz");
        let mut args = vec![
            "synth",
            "--model",
            model,
            "--image",
            &image,
            "--labels",
            &labels,
            "-o",
            "o.nii.gz",
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
    };
    assert_fails(
        &run("missing.safetensors", "scar", &[]),
        2,
        "missing.safetensors",
    );
    assert_fails(&run(model, "plain", &[]), 1, "no scar");
    assert_fails(
        &run(model, "scar", &["--crop", "24"]),
        1,
        "outside the 24×24 window",
    );
    assert_fails(&run(model, "scar", &["--crop", "20"]), 1, "8");
    assert!(
        !cwd.join("o.nii.gz").exists(),
        "a failed run wrote its output"
    );
}

/// `claim info --build` describes the build (text and JSON) as the library
/// does; without the `cuda` feature it says so.
#[test]
fn info_build_reports_the_cuda_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let out = claim(&["info", "--build"], tmp.path());
    assert_ok(&out);
    let text = stdout(&out);
    let library = claim::backend::build_info();
    for needle in [
        format!("claim {}", claim::VERSION),
        "CUDA back-end built in:".to_string(),
        "embedded GPU kernels:".to_string(),
        "CUDA usable:".to_string(),
    ] {
        assert!(text.contains(&needle), "lacks {needle:?}:\n{text}");
    }
    let report = json(&claim(&["info", "--build", "--json"], tmp.path()));
    assert_eq!(report["version"], claim::VERSION);
    assert_eq!(report["cuda_feature"], library.cuda_feature);
    assert_eq!(
        report["kernel_archs"].as_array().unwrap().len(),
        library.kernel_archs.len()
    );
    if !cfg!(feature = "cuda") {
        assert!(text.contains("CUDA back-end built in: no"), "{text}");
        assert_eq!(report["cuda_available"], false);
        assert!(report["cuda_unavailable_reason"]
            .as_str()
            .unwrap()
            .contains("no CUDA back-end"));
    }
    // A file and --build are two different questions.
    let out = claim(&["info", "--build", "x.nii"], tmp.path());
    assert_fails(&out, 1, "--build");
}

/// `--device` is parsed by the library and resolved before anything is
/// loaded: a device this build cannot open fails with the library's
/// reason and the device status (5), a bad name as an invalid argument.
#[test]
fn model_commands_resolve_the_device_first() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = [
        "synth",
        "--model",
        "none.safetensors",
        "--image",
        "none.nii",
        "--labels",
        "none.nii",
        "-o",
        "out.nii",
    ];
    let segment = [
        "segment", "--model", "none", "--image", "none.nii", "-o", "out.nii",
    ];
    // The trainers open their compute device before reading any data.
    let train_diffusion = [
        "train",
        "diffusion",
        "--data",
        "none",
        "-o",
        "out.safetensors",
    ];
    let train_segmenter = ["train", "segmenter", "--data", "none", "-o", "results"];
    let train_joint = ["train", "joint", "--data", "none", "-o", "joint"];
    for command in [
        &synth[..],
        &segment[..],
        &train_diffusion[..],
        &train_segmenter[..],
        &train_joint[..],
    ] {
        let with = |device: &str| {
            let mut args = command.to_vec();
            args.extend(["--device", device]);
            claim(&args, tmp.path())
        };
        let out = with("tpu");
        assert_fails(&out, 1, "expected `cpu`, `cuda` or `cuda:N`");
        if !cfg!(feature = "cuda") {
            let out = with("cuda:1");
            assert_fails(&out, 5, "CUDA device 1 requested");
            assert!(
                stderr(&out).contains("no CUDA back-end"),
                "{}",
                stderr(&out)
            );
        }
        // The CPU resolves; the missing model or data is what fails then.
        let out = with("cpu");
        assert_fails(&out, 2, "none");
    }
    // The demo resolves its device before it creates its output folder.
    let out = claim(&["demo", "-o", "demo", "--device", "tpu"], tmp.path());
    assert_fails(&out, 1, "expected `cpu`, `cuda` or `cuda:N`");
    if !cfg!(feature = "cuda") {
        let out = claim(&["demo", "-o", "demo", "--device", "cuda"], tmp.path());
        assert_fails(&out, 5, "no CUDA back-end");
    }
    for written in ["out.nii", "out.safetensors", "results", "joint", "demo"] {
        assert!(!tmp.path().join(written).exists(), "{written} was written");
    }
}

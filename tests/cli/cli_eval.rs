//! `claim eval` end to end: real processes on files `claim phantom` writes.

use crate::common;

use common::{assert_fails, assert_ok, claim, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// Writes the phantom of `seed` (with or without scar) to `dir` with
/// `claim phantom`; returns its label file.
fn phantom_labels(dir: &Path, seed: u64, scar: bool) -> PathBuf {
    let seed = seed.to_string();
    let mut args = vec!["phantom", "-o", dir.to_str().unwrap(), "--seed", &seed];
    if scar {
        args.push("--scar");
    }
    assert_ok(&claim(&args, dir.parent().unwrap()));
    dir.join("labels.nii.gz")
}

fn structure<'a>(case: &'a Value, key: &str) -> &'a Value {
    case["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["structure"] == key)
        .unwrap_or_else(|| panic!("no {key} in {case}"))
}

#[test]
fn one_case_as_json_and_as_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let scarred = phantom_labels(&tmp.path().join("scarred"), 2, true);
    let healthy = phantom_labels(&tmp.path().join("healthy"), 2, false);
    let (pred, gt) = (healthy.to_str().unwrap(), scarred.to_str().unwrap());

    let out = claim(
        &["eval", pred, gt, "--json", "--labels", "emidec-rv"],
        tmp.path(),
    );
    assert_ok(&out);
    let case = json(&out);
    assert_eq!(case["case"], "labels");
    assert_eq!(case["dims"], serde_json::json!([192, 192, 10]));
    // The anatomy does not depend on the scar: only the lesion differs.
    assert_eq!(structure(&case, "whole_myocardium")["dice"], 1.0);
    assert_eq!(structure(&case, "lv_cavity")["dice"], 1.0);
    assert_eq!(structure(&case, "rv")["hd95_mm"], 0.0);
    let scar = structure(&case, "scar");
    assert_eq!(scar["dice"], 0.0);
    assert!(scar["hd95_mm"].is_null());
    assert_eq!(scar["pred_ml"], 0.0);
    assert!(scar["ref_ml"].as_f64().unwrap() > 0.5);
    let burden = &case["scar_burden"];
    assert_eq!(burden["pred_percent"], 0.0);
    let ref_percent = burden["ref_percent"].as_f64().unwrap();
    assert!(ref_percent > 1.0);
    assert_eq!(burden["abs_difference"].as_f64(), Some(ref_percent));
    let segments = case["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 17);
    assert_eq!(case["segments_used_rv"], true);

    // The same pair as a table, with a CSV beside it.
    let csv = tmp.path().join("out/one.csv");
    let out = claim(
        &[
            "eval",
            pred,
            gt,
            "--labels",
            "emidec-rv",
            "--csv",
            csv.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let text = stdout(&out);
    for expected in [
        "Dice",
        "HD95 mm",
        "myocardium incl. lesions",
        "scar % per AHA segment",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let table = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(table.lines().count(), 1 + 1 + 4);
    assert!(table.starts_with("kind,case,lv_cavity_dice,"));

    // Under plain EMIDEC labels the RV is a label the scheme does not name:
    // no RV row, no parcellation, a note — still a result.
    let out = claim(&["eval", pred, gt, "--json"], tmp.path());
    assert_ok(&out);
    let case = json(&out);
    assert!(case["structures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["structure"] != "rv"));
    assert!(case["segments"].is_null());
    assert!(
        case["notes"].to_string().contains("[5]"),
        "{}",
        case["notes"]
    );
}

#[test]
fn eval_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let labels = phantom_labels(&tmp.path().join("a"), 1, true);
    let l = labels.to_str().unwrap();
    // A grid that differs: the image of another seed is placed elsewhere.
    let other = phantom_labels(&tmp.path().join("b"), 9, true);
    assert_fails(
        &claim(&["eval", l, other.to_str().unwrap()], tmp.path()),
        1,
        "geometry",
    );
    assert_fails(
        &claim(&["eval", l, "missing.nii.gz"], tmp.path()),
        2,
        "missing.nii.gz",
    );
    assert_fails(&claim(&["eval", l], tmp.path()), 1, "");
    assert_fails(&claim(&["eval"], tmp.path()), 1, "");
    assert_fails(
        &claim(&["eval", l, l, "--cases", "."], tmp.path()),
        1,
        "cannot be used",
    );
    assert_fails(
        &claim(
            &["eval", "--cases", tmp.path().to_str().unwrap()],
            tmp.path(),
        ),
        1,
        "no EMIDEC cases",
    );
}

/// Puts `labels` at `DIR/<case>/Contours/<case>.nii.gz`.
fn add_case(dir: &Path, case: &str, labels: &Path) {
    let contours = dir.join(case).join("Contours");
    std::fs::create_dir_all(&contours).unwrap();
    std::fs::copy(labels, contours.join(format!("{case}.nii.gz"))).unwrap();
    std::fs::create_dir_all(dir.join(case).join("Images")).unwrap();
}

#[test]
fn a_folder_of_emidec_cases_with_one_prediction_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let scarred = phantom_labels(&tmp.path().join("scarred"), 3, true);
    let healthy = phantom_labels(&tmp.path().join("healthy"), 3, false);
    let cases = tmp.path().join("emidec");
    add_case(&cases, "Case_A", &scarred);
    add_case(&cases, "Case_B", &scarred);
    std::fs::create_dir_all(cases.join("not_a_case")).unwrap();
    // nnU-Net style predictions: P/<Case>.nii.gz, only for Case_A.
    let preds = tmp.path().join("preds");
    std::fs::create_dir_all(&preds).unwrap();
    std::fs::copy(&healthy, preds.join("Case_A.nii.gz")).unwrap();

    let csv = tmp.path().join("metrics.csv");
    let (c, p, f) = (
        cases.to_str().unwrap(),
        preds.to_str().unwrap(),
        csv.to_str().unwrap(),
    );
    let args = [
        "eval",
        "--cases",
        c,
        "--pred-dir",
        p,
        "--labels",
        "emidec-rv",
        "--csv",
        f,
    ];
    // A missing prediction: the rest is evaluated and written, and the
    // exit status says something is missing.
    let out = claim(&args, tmp.path());
    assert_fails(&out, 2, "Case_B");
    let text = stdout(&out);
    assert!(text.contains("1 of 2 cases"), "{text}");
    assert!(
        text.contains("Case_B") && text.contains("no prediction"),
        "{text}"
    );
    let table = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 1 + 4, "{table}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..3], ["kind", "case", "lv_cavity_dice"]);
    for column in [
        "whole_myocardium_dice",
        "scar_hd95_mm",
        "rv_abs_diff_ml",
        "scar_percent_abs_diff",
        "emidec_scar_error_percent",
        "seg1_scar_percent_pred",
        "seg17_scar_percent_abs_diff",
    ] {
        assert!(header.contains(&column), "no {column} in {}", lines[0]);
    }
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row.len(), header.len());
    assert_eq!(&row[..2], ["case", "Case_A"]);
    let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("whole_myocardium_dice"), "1");
    assert_eq!(cell("scar_dice"), "0");
    assert_eq!(cell("scar_hd95_mm"), "");
    let mean: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(&mean[..2], ["mean", ""]);

    // --allow-missing: the same report, exit 0; JSON lists what is missing.
    let mut with_json = args.to_vec();
    with_json.extend(["--allow-missing", "--json"]);
    let out = claim(&with_json, tmp.path());
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["cases"].as_array().unwrap().len(), 1);
    assert_eq!(report["missing"][0]["case"], "Case_B");
    assert_eq!(report["aggregate"]["cases"], 1);

    // Without --pred-dir the prediction is DIR/<Case>/Prediction/<Case>.nii.gz.
    for case in ["Case_A", "Case_B"] {
        let folder = cases.join(case).join("Prediction");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(&scarred, folder.join(format!("{case}.nii.gz"))).unwrap();
    }
    let out = claim(
        &["eval", "--cases", c, "--labels", "emidec-rv", "--json"],
        tmp.path(),
    );
    assert_ok(&out);
    let report = json(&out);
    let evaluated = report["cases"].as_array().unwrap();
    assert_eq!(evaluated.len(), 2);
    assert_eq!(evaluated[0]["case"], "Case_A");
    assert_eq!(evaluated[1]["case"], "Case_B");
    assert!(report["missing"].as_array().unwrap().is_empty());
    let scar_dice = report["aggregate"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "scar_dice")
        .unwrap();
    assert_eq!(scar_dice["mean"], 1.0);
    assert_eq!(scar_dice["defined"], 2);
}

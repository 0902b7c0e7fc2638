//! `claim augment` as a process: shards and merge give what one run gives,
//! a killed run resumes to the same result, a corrupt case is reported and
//! skipped, and the output passes nnU-Net's own dataset check.

use crate::common::{assert_fails, assert_ok, claim, stderr, stdout};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A short RePaint schedule: the tests check bookkeeping, not image quality.
const FAST_CONFIG: &str = r#"{"seed": 11, "per_case": 2,
  "masks": {"patterns": ["ischemic", "midwall"], "mvo_probability": 0.5},
  "synthesis": {"t_start": 8, "jump_length": 1, "jump_n_sample": 1, "batch_size": 4}}"#;

/// A phantom nnU-Net dataset in `dir/data`: 4 cases, the first scarred.
fn dataset(dir: &Path) {
    assert_ok(&claim(
        &[
            "phantom",
            "--cases",
            "4",
            "--scarred",
            "1",
            "--size",
            "80",
            "--slices",
            "3",
            "-o",
            "data",
        ],
        dir,
    ));
    std::fs::write(dir.join("augment.json"), FAST_CONFIG).unwrap();
}

fn augment(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "augment",
        "--input",
        "data",
        "--model",
        "builtin",
        "--config",
        "augment.json",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    claim(&args, dir)
}

/// Every file under `imagesTr` and `labelsTr`, by relative path.
fn case_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["imagesTr", "labelsTr"] {
        for entry in std::fs::read_dir(out.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "leftover temporary file {name}");
            files.insert(format!("{sub}/{name}"), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// The merged manifest without what legitimately differs between runs
/// (timings, the shard that made a case).
fn manifest(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("timings");
            o.remove("shard");
            v
        })
        .collect()
}

fn dataset_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap()
}

#[test]
fn shards_and_restarts_make_the_same_dataset_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dataset(d);

    // One run.
    let whole = augment(d, "whole", &[]);
    assert_ok(&whole);
    assert!(
        stdout(&whole).contains("6 synthetic case(s) written"),
        "{}",
        stdout(&whole)
    );
    assert!(stdout(&whole).contains("1 real case(s) copied"));
    let reference = case_files(&d.join("whole"));
    assert_eq!(reference.len(), 2 * 7, "{:?}", reference.keys());
    let json = dataset_json(&d.join("whole"));
    assert_eq!(json["numTraining"], 7);
    assert_eq!(json["labels"]["infarction"], 3);
    let records = manifest(&d.join("whole"));
    assert_eq!(records.len(), 7);
    for r in records.iter().filter(|r| r["kind"] == "synthetic") {
        assert_eq!(r["status"], "ok");
        assert!(r["smile"]["burden"].as_f64().unwrap() > 0.0);
        assert_eq!(r["model_sha256"].as_str().unwrap().len(), 64);
        assert!(r["segment_stats"]["per_segment"].is_array());
        assert!(r["condition"]
            .as_str()
            .unwrap()
            .starts_with("dataset:phantom_000"));
    }

    // Two shards and a merge: the same files, the same manifest.
    let shard0 = augment(d, "sharded", &["--shard", "0/2"]);
    assert_ok(&shard0);
    assert!(stdout(&shard0).contains("--merge"), "{}", stdout(&shard0));
    assert!(!d.join("sharded/dataset.json").exists());
    assert_ok(&augment(d, "sharded", &["--shard", "1/2"]));
    let merged = claim(&["augment", "--merge", "-o", "sharded"], d);
    assert_ok(&merged);
    assert_eq!(case_files(&d.join("sharded")), reference);
    assert_eq!(manifest(&d.join("sharded")), records);
    assert_eq!(dataset_json(&d.join("sharded")), json);

    // A run killed after its first case, then restarted.
    let mut child = Command::new(env!("CARGO_BIN_EXE_claim"))
        .args([
            "augment",
            "--input",
            "data",
            "--model",
            "builtin",
            "--config",
            "augment.json",
            "-o",
            "killed",
        ])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = d.join("killed/parts/part-0-of-1.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let lines = std::fs::read_to_string(&part)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 2 || Instant::now() > deadline {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !d.join("killed/dataset.json").exists(),
        "the run finished before the kill"
    );
    let resumed = augment(d, "killed", &[]);
    assert_ok(&resumed);
    assert!(
        stdout(&resumed).contains("resuming"),
        "{}",
        stdout(&resumed)
    );
    assert_eq!(case_files(&d.join("killed")), reference);
    assert_eq!(manifest(&d.join("killed")), records);

    // A finished folder: a rerun makes nothing; other settings are refused.
    let again = augment(d, "whole", &[]);
    assert_ok(&again);
    assert!(
        stdout(&again).contains("0 synthetic case(s) written"),
        "{}",
        stdout(&again)
    );
    assert_eq!(case_files(&d.join("whole")), reference);
    let other = augment(d, "whole", &["--seed", "12"]);
    assert_fails(&other, 1, "another configuration");
    assert_eq!(case_files(&d.join("whole")), reference);

    nnunet_verify(&d.join("whole"));
}

#[test]
fn a_corrupt_case_is_reported_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dataset(d);
    std::fs::write(
        d.join("data/imagesTr/phantom_002_0000.nii.gz"),
        b"not a nifti",
    )
    .unwrap();
    let out = augment(d, "out", &["--per-case", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: invalid argument: 1 case(s) failed"),
        "{}",
        stderr(&out)
    );
    // The reason goes to stderr, with the error the command ends with.
    assert!(
        stderr(&out).contains("failed: phantom_002") && !stdout(&out).contains("failed: "),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(d.join("out/manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<_> = records.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["source"], "phantom_002");
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("phantom_002_0000"));
    let files = case_files(&d.join("out"));
    assert!(files.contains_key("imagesTr/phantom_001_synth000_0000.nii.gz"));
    assert!(files.contains_key("imagesTr/phantom_003_synth000_0000.nii.gz"));
    assert!(!files.keys().any(|k| k.contains("phantom_002")));
    assert_eq!(dataset_json(&d.join("out"))["numTraining"], 3);

    // A quality gate no case can pass drops every synthetic case.
    let gated = augment(
        d,
        "gated",
        &["--per-case", "1", "--gate", "builtin", "--gate-dice", "1.0"],
    );
    assert_eq!(gated.status.code(), Some(1), "{}", stderr(&gated));
    assert!(stderr(&gated).contains("error: invalid argument: 1 case(s) failed"));
    assert!(
        stdout(&gated).contains("2 dropped by the gate"),
        "{}",
        stdout(&gated)
    );
    let gated_records = std::fs::read_to_string(d.join("gated/manifest.jsonl")).unwrap();
    for line in gated_records.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["kind"] == "synthetic" {
            assert_eq!(r["status"], "dropped", "{r}");
            assert_eq!(r["gate"]["passed"], false);
            let dice = r["gate"]["lesion_dice"].as_f64().unwrap();
            assert!((0.0..1.0).contains(&dice), "{dice}");
        }
    }
    assert_eq!(dataset_json(&d.join("gated"))["numTraining"], 1);
    assert_eq!(case_files(&d.join("gated")).len(), 2);

    // Bad invocations are refused before any work.
    assert_fails(&augment(d, "x", &["--shard", "2/2"]), 1, "i/n");
    std::fs::write(d.join("bad.json"), r#"{"per_case": 1, "maks": {}}"#).unwrap();
    let bad = claim(
        &[
            "augment", "--input", "data", "--model", "builtin", "--config", "bad.json", "-o", "y",
        ],
        d,
    );
    assert_fails(&bad, 1, "maks");
    assert!(!d.join("y").exists());
    assert_fails(
        &claim(
            &[
                "augment", "--input", "nowhere", "--model", "builtin", "-o", "z",
            ],
            d,
        ),
        2,
        "nowhere",
    );
}

/// nnU-Net's own `verify_dataset_integrity` on the output (when a Python
/// with nnunetv2 is found: CLAIM_TORCH_PYTHON or python3; skipped
/// otherwise).
fn nnunet_verify(out: &Path) {
    let python = std::env::var("CLAIM_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_nnunet = Command::new(&python)
        .args(["-c", "import nnunetv2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nnunet {
        println!("skipped verify_dataset_integrity: {python} lacks nnunetv2");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/nnunet_verify_dataset.py");
    let check = Command::new(&python).arg(script).arg(out).output().unwrap();
    assert!(
        check.status.success(),
        "verify_dataset_integrity failed:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

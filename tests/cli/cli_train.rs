//! `claim train diffusion` as a process: outputs, resume, refusals.

use crate::common::{assert_fails, assert_ok, claim, stdout};

/// A tiny model on two small phantoms, `steps` total.
fn tiny(steps: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "diffusion",
        "--phantom",
        "2",
        "--phantom-size",
        "64",
        "--phantom-slices",
        "4",
        "-o",
        "m.safetensors",
        "--dim",
        "8",
        "--dim-mults",
        "1,2",
        "--heads",
        "1",
        "--dim-head",
        "8",
        "--crop",
        "32",
        "--batch",
        "2",
        "--ema-start",
        "2",
        "--ema-every",
        "1",
        "--checkpoint-every",
        "2",
        "--steps",
        steps,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(args: &[String], cwd: &std::path::Path) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    claim(&refs, cwd)
}

#[test]
fn train_diffusion_writes_model_checkpoint_and_log_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&tiny("3", &[]), dir.path());
    assert_ok(&out);
    assert!(stdout(&out).contains("trained 3 steps"), "{}", stdout(&out));
    for name in [
        "m.safetensors",
        "m.ckpt.safetensors",
        "m.log.csv",
        "m.loss.svg",
    ] {
        assert!(dir.path().join(name).is_file(), "{name} missing");
    }
    let csv = std::fs::read_to_string(dir.path().join("m.log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // The model loads as a denoiser (what `claim synth` does).
    let model = claim::models::Denoiser::from_file(&dir.path().join("m.safetensors")).unwrap();
    assert_eq!(model.config().dim, 8);

    // A straight 5-step run, then 3 steps resumed to 5: the same losses.
    assert_ok(&run(&tiny("5", &[]), dir.path()));
    let straight = std::fs::read_to_string(dir.path().join("m.log.csv")).unwrap();
    let mut args = tiny("5", &["--resume", "m.ckpt.safetensors"]);
    // Model flags are fixed by the checkpoint.
    let refused = run(&args, dir.path());
    assert_fails(&refused, 1, "fixed by the checkpoint");
    let keep = [
        "--dim",
        "--dim-mults",
        "--heads",
        "--dim-head",
        "--crop",
        "--batch",
    ];
    let mut i = 0;
    while i < args.len() {
        if keep.contains(&args[i].as_str()) {
            args.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
    assert_ok(&run(&tiny("3", &[]), dir.path()));
    assert_ok(&run(&args, dir.path()));
    let resumed = std::fs::read_to_string(dir.path().join("m.log.csv")).unwrap();
    let losses = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&resumed).len(), 5);
    assert_eq!(
        losses(&resumed),
        losses(&straight),
        "resumed run differs from a straight one"
    );
}

#[test]
fn train_diffusion_refuses_bad_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = claim(
        &[
            "train",
            "diffusion",
            "--data",
            "no/such/dir",
            "-o",
            "m.safetensors",
        ],
        dir.path(),
    );
    assert_fails(&missing, 2, "no/such/dir");
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let empty = claim(
        &[
            "train",
            "diffusion",
            "--data",
            "empty",
            "-o",
            "m.safetensors",
        ],
        dir.path(),
    );
    assert!(!empty.status.success());
    assert_fails(&run(&tiny("0", &[]), dir.path()), 1, "steps");
    let odd = claim(
        &[
            "train",
            "diffusion",
            "--phantom",
            "1",
            "-o",
            "m.safetensors",
            "--dim",
            "12",
        ],
        dir.path(),
    );
    assert_fails(&odd, 1, "--dim 12");
    assert!(
        !dir.path().join("m.safetensors").exists(),
        "nothing is written on refusal"
    );
}

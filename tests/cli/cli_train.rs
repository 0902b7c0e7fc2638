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

/// `claim train segmenter` on small phantoms with a tiny network.
fn tiny_segmenter(out: &str, epochs: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "segmenter",
        "--phantom",
        "6",
        "--phantom-size",
        "64",
        "--phantom-slices",
        "3",
        "-o",
        out,
        "--epochs",
        epochs,
        "--iterations-per-epoch",
        "3",
        "--validate-every",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

const TINY_NETWORK: [&str; 8] = [
    "--batch",
    "2",
    "--features",
    "8,16,32",
    "--convs-per-stage",
    "1",
    "--patch",
    "32,32",
];

#[test]
fn train_segmenter_writes_an_nnunet_results_folder_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&tiny_segmenter("straight", "2", &TINY_NETWORK), dir.path());
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("trained 6 steps"), "{text}");
    assert!(text.contains("validation Dice (epoch 2)"), "{text}");
    let fold = dir.path().join("straight/fold_0");
    for name in [
        "../plans.json",
        "../dataset.json",
        "checkpoint_final.pth",
        "claim_train_state.safetensors",
        "training_log.csv",
        "progress.svg",
        "validation.csv",
    ] {
        assert!(fold.join(name).is_file(), "{name} missing");
    }
    assert!(
        !fold.join("checkpoint_latest.pth").exists(),
        "a finished run keeps only checkpoint_final.pth"
    );
    let log = std::fs::read_to_string(fold.join("training_log.csv")).unwrap();
    assert_eq!(log.lines().count(), 7, "{log}");
    let validation = std::fs::read_to_string(fold.join("validation.csv")).unwrap();
    assert!(
        validation.starts_with("epoch,cavity,normal_myocardium,infarction"),
        "{validation}"
    );
    assert_eq!(validation.lines().count(), 3, "{validation}");

    // Training into a folder that holds a run needs --resume.
    let again = run(&tiny_segmenter("straight", "2", &TINY_NETWORK), dir.path());
    assert_fails(&again, 1, "--resume");

    // One epoch, then resumed to two: the same run, byte for byte (the
    // poly rate of epoch 0 is the base rate whatever the length).
    assert_ok(&run(
        &tiny_segmenter("split", "1", &TINY_NETWORK),
        dir.path(),
    ));
    let refused = run(
        &tiny_segmenter("split", "2", &[&["--resume"][..], &TINY_NETWORK].concat()),
        dir.path(),
    );
    assert_fails(&refused, 1, "fixed by the checkpoint");
    // The epoch length comes from the checkpoint: resume without it (the
    // validation and checkpoint cadence must still follow 3 steps).
    let mut resume = tiny_segmenter("split", "2", &["--resume"]);
    let at = resume
        .iter()
        .position(|a| a == "--iterations-per-epoch")
        .unwrap();
    resume.drain(at..at + 2);
    assert_ok(&run(&resume, dir.path()));
    let split = dir.path().join("split/fold_0");
    let losses = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path.join("training_log.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&split), losses(&fold));
    assert_eq!(
        std::fs::read(split.join("checkpoint_final.pth")).unwrap(),
        std::fs::read(fold.join("checkpoint_final.pth")).unwrap(),
        "the resumed run's checkpoint differs from the straight run's"
    );
    assert_eq!(
        std::fs::read_to_string(split.join("validation.csv")).unwrap(),
        validation
    );

    segment_with_both_predictors(dir.path(), "straight", "2d");
}

/// `claim segment --no-postprocess` loads the results folder `results`
/// (in `dir`) as a `configuration` model and labels a scarred phantom;
/// nnU-Net's predictor gives the same labels (when installed).
fn segment_with_both_predictors(dir: &std::path::Path, results: &str, configuration: &str) {
    assert_ok(&claim(
        &["phantom", "-o", "ph", "--seed", "3", "--scar"],
        dir,
    ));
    let seg = claim(
        &[
            "segment",
            "--model",
            results,
            "--image",
            "ph/image.nii.gz",
            "-o",
            "pred.nii.gz",
            "--no-postprocess",
            "--labels",
            "emidec-rv",
        ],
        dir,
    );
    assert_ok(&seg);
    let text = stdout(&seg);
    assert!(
        text.contains(&format!("nnUNetTrainer {configuration}")),
        "{text}"
    );
    same_labels_as_nnunet(dir, results, "pred.nii.gz");
}

/// nnU-Net's own predictor loads the results folder `results` (in `dir`)
/// and labels `ph/image.nii.gz` as `claim segment --no-postprocess` did
/// into `ours` (when PyTorch and nnunetv2 are installed:
/// CLAIM_TORCH_PYTHON or python3; skipped otherwise).
fn same_labels_as_nnunet(dir: &std::path::Path, results: &str, ours: &str) {
    let python = std::env::var("CLAIM_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_nnunet = std::process::Command::new(&python)
        .args(["-c", "import torch, nnunetv2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nnunet {
        println!("skipped the nnUNetPredictor comparison: {python} lacks torch or nnunetv2");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/nnunet_predict_trained.py");
    let nn = std::process::Command::new(&python)
        .arg(script)
        .args([
            results,
            "--fold",
            "0",
            "--image",
            "ph/image.nii.gz",
            "--output",
            "nnunet.nii.gz",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        nn.status.success(),
        "{}",
        String::from_utf8_lossy(&nn.stderr)
    );
    let read = |name: &str| {
        claim::io::read_image(&dir.join(name))
            .unwrap()
            .to_labels()
            .unwrap()
    };
    let (ours, theirs) = (read(ours), read("nnunet.nii.gz"));
    assert_eq!(ours.dims(), theirs.dims());
    let differing = ours
        .data
        .iter()
        .zip(theirs.data.iter())
        .filter(|(a, b)| a != b)
        .count();
    // As cli_segment's comparison: argmax near-ties may flip, ≤ 1 in 10 000.
    println!(
        "claim segment vs nnUNetPredictor ({results}): {differing} of {} voxels differ",
        ours.len()
    );
    assert!(
        differing * 10_000 <= ours.len(),
        "{differing} voxels differ"
    );
}

#[test]
fn train_segmenter_3d_fullres_writes_a_results_folder_both_predictors_load() {
    let dir = tempfile::tempdir().unwrap();
    let args = tiny_segmenter(
        "three",
        "1",
        &[
            "--configuration",
            "3d_fullres",
            "--batch",
            "2",
            "--features",
            "8,16,32",
            "--convs-per-stage",
            "1",
            "--patch",
            "4,32,32",
        ],
    );
    let out = run(&args, dir.path());
    assert_ok(&out);
    assert!(stdout(&out).contains("trained 3 steps"), "{}", stdout(&out));
    let plans: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("three/plans.json")).unwrap(),
    )
    .unwrap();
    let arch = &plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"];
    assert_eq!(arch["conv_op"], "torch.nn.modules.conv.Conv3d");
    // 9 mm slices: no pooling across them.
    assert_eq!(arch["strides"][1], serde_json::json!([1, 2, 2]));
    segment_with_both_predictors(dir.path(), "three", "3d_fullres");
}

#[test]
fn train_segmenter_refuses_bad_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let four_d = run(
        &tiny_segmenter("r", "1", &["--configuration", "4d"]),
        dir.path(),
    );
    assert_fails(&four_d, 1, "--configuration 4d");
    let patch = run(
        &tiny_segmenter("r", "1", &["--features", "8,16,32", "--patch", "30,32"]),
        dir.path(),
    );
    assert_fails(&patch, 1, "patch");
    let fold = run(&tiny_segmenter("r", "1", &["--fold", "5"]), dir.path());
    assert_fails(&fold, 1, "fold 5");
    let resume = run(&tiny_segmenter("r", "1", &["--resume"]), dir.path());
    assert_fails(&resume, 1, "does not exist");
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    let plans = run(
        &tiny_segmenter("r", "1", &["--plans", "bad.json"]),
        dir.path(),
    );
    assert_fails(&plans, 3, "bad.json");
    assert!(
        !dir.path().join("r").exists(),
        "nothing is written on refusal"
    );
}

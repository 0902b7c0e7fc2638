//! `claim train joint` as a process (outputs, resume, refusals) and the
//! built-in models through `claim synth` and `claim segment`.

use crate::common::{assert_fails, assert_ok, claim, stderr, stdout};
use claim::phantom::{generate, PhantomParams, LABEL_SCHEME};

/// A tiny joint run on small phantoms, `steps` generator steps, joint
/// steps from 2 every 2.
fn tiny_joint(steps: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "joint",
        "--phantom",
        "3",
        "--phantom-normal",
        "2",
        "--phantom-size",
        "64",
        "--phantom-slices",
        "3",
        "-o",
        "run",
        "--steps",
        steps,
        "--start-step",
        "2",
        "--every",
        "2",
        "--lambda",
        "0.1",
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
        "--seg-features",
        "8,16,16",
        "--seg-patch",
        "32,32",
        "--seg-convs-per-stage",
        "1",
        "--seg-batch",
        "2",
        "--seg-iterations-per-epoch",
        "2",
        "--synth-t-start",
        "10",
        "--estimate-batch",
        "2",
        "--checkpoint-every",
        "2",
        "--ema-start",
        "2",
        "--ema-every",
        "1",
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
fn train_joint_writes_both_models_and_logs_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&tiny_joint("6", &[]), dir.path());
    assert_ok(&out);
    assert!(stdout(&out).contains("trained 6 steps"), "{}", stdout(&out));
    let run_dir = dir.path().join("run");
    for name in [
        "generator.safetensors",
        "generator.ckpt.safetensors",
        "segmenter.ckpt.safetensors",
        "joint.json",
        "generator.log.csv",
        "generator.loss.svg",
        "segmenter.log.csv",
        "segmenter.loss.svg",
        "estimate.log.csv",
        "validation.csv",
        "segmenter/plans.json",
        "segmenter/fold_0/checkpoint_final.pth",
    ] {
        assert!(run_dir.join(name).is_file(), "{name} missing");
    }
    // Joint steps 2 and 4: two segmenter and two estimate rows.
    let seg = std::fs::read_to_string(run_dir.join("segmenter.log.csv")).unwrap();
    assert_eq!(seg.lines().count(), 3, "{seg}");
    let est = std::fs::read_to_string(run_dir.join("estimate.log.csv")).unwrap();
    assert_eq!(est.lines().count(), 3, "{est}");
    // The outputs load as the models `claim synth` and `claim segment` use.
    claim::models::Denoiser::from_file(&run_dir.join("generator.safetensors")).unwrap();
    claim::segmentation::Segmenter::load(
        &run_dir.join("segmenter"),
        &claim::segmentation::SegmenterOptions::default(),
    )
    .unwrap();
    let straight_seg =
        std::fs::read(run_dir.join("segmenter/fold_0/checkpoint_final.pth")).unwrap();
    let straight_log = std::fs::read_to_string(run_dir.join("segmenter.log.csv")).unwrap();

    // 4 steps, then resumed to 6: the same models, byte for byte.
    let other = tempfile::tempdir().unwrap();
    assert_ok(&run(&tiny_joint("4", &[]), other.path()));
    let refused = run(&tiny_joint("6", &[]), other.path());
    assert_fails(&refused, 1, "add --resume");
    let fixed = run(&tiny_joint("6", &["--resume"]), other.path());
    assert_fails(&fixed, 1, "fixed by the checkpoint");
    let resume: Vec<String> = [
        "train",
        "joint",
        "--phantom",
        "3",
        "--phantom-normal",
        "2",
        "--phantom-size",
        "64",
        "--phantom-slices",
        "3",
        "-o",
        "run",
        "--steps",
        "6",
        "--resume",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_ok(&run(&resume, other.path()));
    let again = other.path().join("run");
    // The same weights (the files' metadata order may differ).
    let weights = |path: &std::path::Path| -> Vec<(String, Vec<f32>)> {
        let w = claim::nn::Weights::load(path).unwrap();
        let mut keys: Vec<String> = w.keys().map(str::to_string).collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v = w.peek(&k).unwrap().to_vec().unwrap();
                (k, v)
            })
            .collect()
    };
    assert_eq!(
        weights(&again.join("generator.safetensors")),
        weights(&run_dir.join("generator.safetensors"))
    );
    assert_eq!(
        std::fs::read(again.join("segmenter/fold_0/checkpoint_final.pth")).unwrap(),
        straight_seg
    );
    let log = std::fs::read_to_string(again.join("segmenter.log.csv")).unwrap();
    let losses = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&log), losses(&straight_log));
}

#[test]
fn train_joint_refuses_bad_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, mentions) in [
        (&["--synth-every", "0"][..], "synth_every"),
        (&["--mvo-probability", "2"][..], "MVO probability"),
        (&["--real-fraction", "2"][..], "real fraction"),
        (&["--patterns", "spiral"][..], "spiral"),
        (&["--burden", "0.5,0.1"][..], "burden"),
        (&["--estimate-max-t", "0"][..], "estimate_max_t"),
    ] {
        let out = run(&tiny_joint("4", extra), dir.path());
        assert_fails(&out, 1, mentions);
        assert!(!stderr(&out).contains("multiple times"), "{extra:?}");
        assert!(
            !dir.path().join("run").join("joint.json").exists(),
            "{extra:?} wrote a run"
        );
    }
    assert_fails(
        &run(&tiny_joint("4", &["--resume"]), dir.path()),
        1,
        "no joint run",
    );
}

/// A phantom the built-in models never saw, written to `dir`.
fn unseen_phantom(dir: &std::path::Path, seed: u64, with_scar: bool) -> claim::phantom::Phantom {
    let case = generate(&PhantomParams {
        seed,
        with_scar,
        ..PhantomParams::default()
    })
    .unwrap();
    claim::io::write_image(
        &claim::Image::F32(case.image.clone()),
        &dir.join("image.nii.gz"),
    )
    .unwrap();
    claim::io::write_image(
        &claim::volume::narrow_labels(&case.labels, claim::DType::U8).unwrap(),
        &dir.join("labels.nii.gz"),
    )
    .unwrap();
    case
}

#[test]
fn the_builtin_segmenter_segments_unseen_phantoms() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [7001u64, 7002] {
        let case = unseen_phantom(dir.path(), seed, true);
        let out = claim(
            &[
                "segment",
                "--model",
                "builtin",
                "--image",
                "image.nii.gz",
                "-o",
                "pred.nii.gz",
            ],
            dir.path(),
        );
        assert_ok(&out);
        let pred = claim::io::read_image(&dir.path().join("pred.nii.gz")).unwrap();
        let pred = pred.to_labels().unwrap();
        let metrics = claim::metrics::evaluate_case(
            &pred,
            &case.labels,
            &LABEL_SCHEME,
            &claim::metrics::EvalOptions::default(),
        )
        .unwrap();
        let dice = |s| metrics.structure(s).unwrap().dice;
        let (myo, scar) = (
            dice(claim::metrics::Structure::WholeMyocardium),
            dice(claim::metrics::Structure::ScarAndMvo),
        );
        println!("seed {seed}: myocardium Dice {myo:.3}, scar Dice {scar:.3}");
        assert!(myo >= 0.8, "seed {seed}: myocardium Dice {myo}");
        assert!(scar >= 0.6, "seed {seed}: scar Dice {scar}");
    }
}

#[test]
fn the_builtin_diffusion_model_paints_bright_scar_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let case = unseen_phantom(dir.path(), 7003, true);
    let out = claim(
        &[
            "synth",
            "--model",
            "builtin",
            "--image",
            "image.nii.gz",
            "--labels",
            "labels.nii.gz",
            "--rv",
            "5",
            "-o",
            "synth.nii.gz",
            "--jump-length",
            "1",
            "--jump-n-sample",
            "1",
            "--seed",
            "3",
        ],
        dir.path(),
    );
    assert_ok(&out);
    let painted = claim::io::read_image(&dir.path().join("synth.nii.gz"))
        .unwrap()
        .to_f32();
    let (painted, original) = (painted.as_slice().unwrap(), case.image.as_slice().unwrap());
    let labels = case.labels.as_slice().unwrap();
    let [ni, nj, _] = case.labels.dims();
    let slice_len = ni * nj;
    let mut lesion_slices = vec![false; labels.len() / slice_len];
    for (i, l) in labels.iter().enumerate() {
        if LABEL_SCHEME.is_lesion(*l) {
            lesion_slices[i / slice_len] = true;
        }
    }
    let (mut scar, mut remote) = ((0f64, 0usize), (0f64, 0usize));
    for (i, ((a, b), l)) in painted.iter().zip(original).zip(labels).enumerate() {
        if !LABEL_SCHEME.is_lesion(*l) {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "voxel {i} outside the lesion changed"
            );
        }
        if !lesion_slices[i / slice_len] {
            continue;
        }
        if LABEL_SCHEME.is_lesion(*l) {
            scar = (scar.0 + f64::from(*a), scar.1 + 1);
        } else if *l == LABEL_SCHEME.myocardium {
            remote = (remote.0 + f64::from(*a), remote.1 + 1);
        }
    }
    let (scar, remote) = (scar.0 / scar.1 as f64, remote.0 / remote.1 as f64);
    println!("painted scar mean {scar:.1}, remote myocardium {remote:.1}");
    assert!(
        scar > 2.0 * remote,
        "scar {scar} is not LGE-bright against remote myocardium {remote}"
    );
}

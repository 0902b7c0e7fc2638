//! Hostile input for every command: truncated, empty, garbage and mutated
//! NIfTI files, a decompression bomb, broken nnU-Net results folders,
//! legacy and garbage model files. Every run happens under an address-space
//! limit (`prlimit --as`), so an allocation the input asks for cannot
//! succeed by luck; each must end with a clean status (the `claim_status`
//! number), one `error:` line naming the problem, and no signal.

use super::common::stderr;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The address-space limit every run gets: 3 GiB, the issue's bound.
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;

const INVALID: i32 = 1;
const IO: i32 = 2;
const FORMAT: i32 = 3;
const MODEL: i32 = 4;
const OUT_OF_MEMORY: i32 = 6;
const UNSUPPORTED: i32 = 8;

/// Runs `claim args` in `cwd` under `prlimit --as=limit` (plain when the
/// machine has no prlimit: the status checks still hold).
fn claim_limited(args: &[&str], cwd: &Path, limit: u64) -> Output {
    let exe = env!("CARGO_BIN_EXE_claim");
    let has_prlimit = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if has_prlimit {
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={limit}")).arg("--").arg(exe);
        c
    } else {
        println!("no prlimit: running without an address-space limit");
        Command::new(exe)
    };
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("CLAIM_MAX_VOXELS")
        .output()
        .expect("claim runs")
}

fn claim(args: &[&str], cwd: &Path) -> Output {
    claim_limited(args, cwd, ADDRESS_SPACE_LIMIT)
}

/// A clean refusal: an exit status in `statuses` (never a signal), one
/// `error:` line that names the problem (contains every one of `mentions`),
/// no panic, no backtrace.
#[track_caller]
fn assert_refused(out: &Output, statuses: &[i32], mentions: &[&str], case: &str) {
    let err = stderr(out);
    assert!(
        out.status.code().is_some(),
        "{case}: killed by a signal ({:?}); stderr: {err}",
        out.status
    );
    let code = out.status.code().unwrap_or_default();
    assert!(
        statuses.contains(&code),
        "{case}: exit {code}, expected one of {statuses:?}; stderr: {err}"
    );
    assert!(err.starts_with("error: "), "{case}: stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{case}: stderr: {err}");
    let lower = err.to_lowercase();
    for m in mentions {
        assert!(
            lower.contains(&m.to_lowercase()),
            "{case}: stderr lacks {m:?}: {err}"
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{case}: {err}"
    );
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn results_2d() -> PathBuf {
    fixtures().join("nnunet/Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d")
}

/// A gzip NIfTI-1 u8 image of `dims` whose voxels are all zero, written as
/// a stream (the file stays small however large the image).
fn write_zero_nifti_gz(path: &Path, dims: [u64; 3]) {
    write_u8_nifti_gz(path, dims, 0);
}

/// As [`write_zero_nifti_gz`], with `corner_label` in the first and the
/// last voxel, so the box of labelled voxels is the whole map.
fn write_u8_nifti_gz(path: &Path, dims: [u64; 3], corner_label: u8) {
    let mut header = vec![0u8; 352];
    header[0..4].copy_from_slice(&348i32.to_le_bytes());
    let dim: [i16; 8] = [
        3,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (n, d) in dim.iter().enumerate() {
        header[40 + 2 * n..42 + 2 * n].copy_from_slice(&d.to_le_bytes());
    }
    header[70..72].copy_from_slice(&2i16.to_le_bytes()); // uint8
    header[72..74].copy_from_slice(&8i16.to_le_bytes()); // bitpix
    for n in 0..4 {
        header[76 + 4 * n..80 + 4 * n].copy_from_slice(&1f32.to_le_bytes()); // pixdim
    }
    header[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    header[344..348].copy_from_slice(b"n+1\0");
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    gz.write_all(&header).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = dims.iter().product::<u64>();
    chunk[0] = corner_label;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if n as u64 == left {
            chunk[n - 1] = corner_label;
        }
        gz.write_all(&chunk[..n]).unwrap();
        chunk[0] = 0;
        left -= n as u64;
    }
    gz.finish().unwrap();
}

/// The "2 GiB bomb": a small .nii.gz of a valid 2048×1024×1024 u8 map.
/// Every command refuses it from its header, in well under a second, with
/// the out-of-memory status and a message naming the limit.
#[test]
fn a_decompression_bomb_is_refused_by_every_command_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.nii.gz");
    write_zero_nifti_gz(&bomb, [2048, 1024, 1024]);
    let size = std::fs::metadata(&bomb).unwrap().len();
    assert!(size < 4 << 20, "the bomb is {size} bytes");
    let model = fixtures().join("denoiser/unet3d_weights.safetensors");
    let results = results_2d();
    let commands: Vec<Vec<&str>> = vec![
        vec!["info", "bomb.nii.gz"],
        vec!["aha", "bomb.nii.gz", "-o", "seg.nii.gz"],
        vec!["smile", "bomb.nii.gz", "-o", "scar.nii.gz"],
        vec!["stats", "bomb.nii.gz"],
        vec!["bullseye", "bomb.nii.gz", "-o", "b.svg"],
        vec!["eval", "bomb.nii.gz", "bomb.nii.gz"],
        vec![
            "segment",
            "--model",
            results.to_str().unwrap(),
            "--image",
            "bomb.nii.gz",
            "-o",
            "pred.nii.gz",
        ],
        vec![
            "synth",
            "--model",
            model.to_str().unwrap(),
            "--image",
            "bomb.nii.gz",
            "--labels",
            "bomb.nii.gz",
            "-o",
            "synth.nii.gz",
        ],
    ];
    for args in &commands {
        let out = claim(args, dir.path());
        assert_refused(
            &out,
            &[OUT_OF_MEMORY],
            &["bomb.nii.gz", "2048×1024×1024", "limit", "CLAIM_MAX_VOXELS"],
            args[0],
        );
    }
    the_dataset_readers_refuse_a_bomb(dir.path(), &bomb);
    // The limit is the user's to raise; a smaller one refuses smaller images.
    let small = dir.path().join("small.nii.gz");
    write_zero_nifti_gz(&small, [16, 16, 4]);
    let out = claim(&["--max-voxels", "100", "info", "small.nii.gz"], dir.path());
    assert_refused(&out, &[OUT_OF_MEMORY], &["16×16×4", "100"], "--max-voxels");
    let out = claim(&["--max-voxels", "0", "info", "small.nii.gz"], dir.path());
    assert_eq!(out.status.code(), Some(INVALID), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("voxel limit 0 must be from 1"),
        "{}",
        stderr(&out)
    );
}

/// A valid image too large for the memory the process may use: with the
/// voxel limit raised, `claim aha` on a 1024×1024×512 u8 map labelled in
/// two opposite corners, under a 1.5 GiB address-space limit, reads it
/// (512 MiB) but cannot widen its labelled box (the whole map) to 32-bit
/// labels (2 GiB): out of memory, with the size and what it was for, and
/// no abort. The same map without labels widens only one voxel and gets
/// its real answer: no myocardium.
#[test]
fn an_allocation_the_address_space_cannot_hold_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    write_zero_nifti_gz(&dir.path().join("empty.nii.gz"), [1024, 1024, 512]);
    let out = claim_limited(
        &[
            "--max-voxels",
            "4294967296",
            "aha",
            "empty.nii.gz",
            "-o",
            "seg.nii.gz",
        ],
        dir.path(),
        3 << 29,
    );
    assert_refused(&out, &[INVALID], &["no myocardium"], "aha of an empty map");
    write_u8_nifti_gz(&dir.path().join("big.nii.gz"), [1024, 1024, 512], 2);
    let out = claim_limited(
        &[
            "--max-voxels",
            "4294967296",
            "aha",
            "big.nii.gz",
            "-o",
            "seg.nii.gz",
        ],
        dir.path(),
        3 << 29,
    );
    assert_refused(
        &out,
        &[OUT_OF_MEMORY],
        &["cannot allocate", "GiB", "labels"],
        "aha under 1.5 GiB",
    );
    assert!(!dir.path().join("seg.nii.gz").exists());
}

/// Empty, truncated, garbage and mutated NIfTI files: every reader's
/// status as the header documents it, with the file named.
#[test]
fn broken_nifti_files_get_the_documented_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.nii");
    write_zero_nifti_gz(&d.join("good.nii.gz"), [8, 8, 2]);
    let plain = {
        use std::io::Read;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(d.join("good.nii.gz")).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    std::fs::write(&good, &plain).unwrap();
    std::fs::write(d.join("empty.nii"), b"").unwrap();
    std::fs::write(d.join("truncated.nii"), &plain[..plain.len() - 10]).unwrap();
    std::fs::write(d.join("short_header.nii"), &plain[..100]).unwrap();
    std::fs::write(
        d.join("garbage.nii"),
        b"this is no image at all, just text\n",
    )
    .unwrap();
    let gz = std::fs::read(d.join("good.nii.gz")).unwrap();
    std::fs::write(d.join("truncated.nii.gz"), &gz[..gz.len() / 2]).unwrap();
    let mut negative = plain.clone();
    negative[42..44].copy_from_slice(&(-5i16).to_le_bytes());
    std::fs::write(d.join("negative_dim.nii"), &negative).unwrap();
    let mut offset = plain.clone();
    offset[108..112].copy_from_slice(&3e9f32.to_le_bytes());
    std::fs::write(d.join("far_offset.nii"), &offset).unwrap();
    let mut scaled = plain.clone();
    scaled[112..116].copy_from_slice(&3e38f32.to_le_bytes()); // scl_slope
    scaled[116..120].copy_from_slice(&3e38f32.to_le_bytes()); // scl_inter
    std::fs::write(d.join("huge_scale.nii"), &scaled).unwrap();
    std::fs::create_dir(d.join("a_folder.nii")).unwrap();

    let cases: [(&str, i32, &[&str]); 9] = [
        ("empty.nii", FORMAT, &["empty.nii"]),
        ("truncated.nii", FORMAT, &["truncated.nii", "truncated"]),
        ("short_header.nii", FORMAT, &["short_header.nii"]),
        ("garbage.nii", FORMAT, &["garbage.nii"]),
        ("truncated.nii.gz", FORMAT, &["truncated.nii.gz"]),
        (
            "negative_dim.nii",
            FORMAT,
            &["negative_dim.nii", "dim[1] = -5"],
        ),
        ("far_offset.nii", FORMAT, &["far_offset.nii", "vox_offset"]),
        ("missing.nii", IO, &["missing.nii"]),
        ("a_folder.nii", IO, &["a_folder.nii"]),
    ];
    for (file, status, mentions) in cases {
        for command in [
            vec!["info", file],
            vec!["stats", file],
            vec!["aha", file, "-o", "out.nii.gz"],
        ] {
            let out = claim(&command, d);
            assert_refused(&out, &[status], mentions, &format!("{command:?}"));
        }
    }
    // A scale that makes labels out of range says so (not "non-integral").
    let out = claim(&["stats", "huge_scale.nii"], d);
    assert_refused(
        &out,
        &[INVALID],
        &["out of range for a label"],
        "scale 3e38",
    );
    // An empty path prints as something.
    // An empty path prints as something (the command line refuses an empty
    // value before; the library and the C API see it).
    let err = claim::io::read_image(Path::new(""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"\" (an empty path)"), "{err}");
    assert!(!d.join("out.nii.gz").exists());
}

/// Copies the 2-D results folder to `dir/name`, with `edit` applied to its
/// plans and dataset JSON.
fn results_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> PathBuf {
    let src = results_2d();
    let dst = dir.join(name);
    for fold in ["fold_0", "fold_1"] {
        std::fs::create_dir_all(dst.join(fold)).unwrap();
        std::fs::copy(
            src.join(fold).join("checkpoint_final.pth"),
            dst.join(fold).join("checkpoint_final.pth"),
        )
        .unwrap();
    }
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(src.join(f)).unwrap()).unwrap()
    };
    let (mut plans, mut dataset) = (read("plans.json"), read("dataset.json"));
    edit(&mut plans, &mut dataset);
    std::fs::write(dst.join("plans.json"), plans.to_string()).unwrap();
    std::fs::write(dst.join("dataset.json"), dataset.to_string()).unwrap();
    dst
}

fn arch(plans: &mut Value) -> &mut Value {
    &mut plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
}

/// A phantom image to segment.
fn phantom_image(dir: &Path) -> PathBuf {
    let out = super::common::claim(&["phantom", "-o", "ph"], dir);
    super::common::assert_ok(&out);
    dir.join("ph/image.nii.gz")
}

/// Broken results folders: `claim import` refuses each exactly as the
/// loader (`claim segment`) does, with the same status and message, and
/// writes nothing. Among them the folder whose plans ask for a
/// 100000 × 100000 patch, which used to load and then abort the process on
/// a 400 GB allocation.
#[test]
fn import_validates_results_folders_exactly_as_the_loader_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = phantom_image(d);
    type Edit = Box<dyn FnOnce(&mut Value, &mut Value)>;
    let cases: Vec<(&str, Edit, &[i32], &[&str])> = vec![
        (
            "huge_patch",
            Box::new(|p, _| {
                p["configurations"]["2d"]["patch_size"] = serde_json::json!([100000, 100000])
            }),
            &[OUT_OF_MEMORY],
            &["patch_size [100000, 100000]", "for one window"],
        ),
        (
            "zero_stride",
            Box::new(|p, _| arch(p)["strides"][1] = serde_json::json!([0, 2])),
            &[INVALID, FORMAT],
            &["strides"],
        ),
        (
            "huge_features",
            Box::new(|p, _| arch(p)["features_per_stage"][0] = serde_json::json!(1_000_000)),
            &[INVALID, FORMAT],
            &["features_per_stage", "at most"],
        ),
        (
            "huge_kernel",
            Box::new(|p, _| arch(p)["kernel_sizes"][0] = serde_json::json!([99, 99])),
            &[INVALID, FORMAT],
            &["kernel_sizes", "at most"],
        ),
        (
            "zero_spacing",
            Box::new(|p, _| p["configurations"]["2d"]["spacing"] = serde_json::json!([0.0, 1.0])),
            &[FORMAT],
            &["spacing"],
        ),
        (
            "bad_transpose",
            Box::new(|p, _| p["transpose_forward"] = serde_json::json!([0, 0, 1])),
            &[FORMAT],
            &["transpose_forward"],
        ),
        (
            "label_2_pow_40",
            Box::new(|_, ds| ds["labels"]["myocardium"] = serde_json::json!(1u64 << 40)),
            &[FORMAT],
            &["out of range for a label"],
        ),
        (
            "resenc",
            Box::new(|p, _| {
                p["configurations"]["2d"]["architecture"]["network_class_name"] =
                    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet"
                        .into()
            }),
            &[UNSUPPORTED],
            &["ResidualEncoderUNet"],
        ),
        (
            "more_features_than_weights",
            Box::new(|p, _| arch(p)["features_per_stage"][0] = serde_json::json!(64)),
            &[MODEL],
            &["fold"],
        ),
        (
            "plans_not_json",
            Box::new(|p, _| *p = Value::String("not plans".into())),
            &[FORMAT],
            &["plans.json"],
        ),
    ];
    for (name, edit, statuses, mentions) in cases {
        let folder = results_copy(d, name, edit);
        let folder = folder.to_str().unwrap();
        let bundle = format!("{name}.safetensors");
        let import = claim(&["import", folder, "-o", &bundle], d);
        assert_refused(&import, statuses, mentions, &format!("import {name}"));
        assert!(!d.join(&bundle).exists(), "{name}: import wrote a bundle");
        let segment = claim(
            &[
                "segment",
                "--model",
                folder,
                "--image",
                image.to_str().unwrap(),
                "-o",
                "pred.nii.gz",
            ],
            d,
        );
        assert_refused(&segment, statuses, mentions, &format!("segment {name}"));
        assert_eq!(
            stderr(&import),
            stderr(&segment),
            "{name}: import and segment disagree"
        );
    }
    assert!(!d.join("pred.nii.gz").exists());
}

/// Model files that are not what they claim: a legacy (non-zip) `.pth`
/// gets one message from `segment` and `import`; garbage given as
/// safetensors is "not a safetensors file".
#[test]
fn legacy_checkpoints_and_garbage_weights_get_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A bare pickle, as torch.save wrote before PyTorch 1.6.
    std::fs::write(
        d.join("legacy.pth"),
        b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02}q\x00.",
    )
    .unwrap();
    std::fs::write(d.join("garbage.safetensors"), [0xffu8; 64]).unwrap();
    std::fs::write(d.join("empty.safetensors"), b"").unwrap();
    let image = phantom_image(d);
    let image = image.to_str().unwrap();

    let import = claim(&["import", "legacy.pth", "-o", "x.safetensors"], d);
    let segment = claim(
        &[
            "segment",
            "--model",
            "legacy.pth",
            "--image",
            image,
            "-o",
            "p.nii.gz",
        ],
        d,
    );
    assert_refused(&import, &[FORMAT], &["legacy"], "import legacy");
    assert_refused(&segment, &[FORMAT], &["legacy"], "segment legacy");
    let tail = |o: &Output| {
        let e = stderr(o);
        e[e.find("not a zip").unwrap_or(0)..].to_string()
    };
    assert_eq!(tail(&import), tail(&segment));

    for file in ["garbage.safetensors", "empty.safetensors"] {
        let synth = claim(
            &[
                "synth", "--model", file, "--image", image, "--labels", image, "-o", "s.nii.gz",
            ],
            d,
        );
        assert_refused(&synth, &[FORMAT], &[file, "not a safetensors file"], file);
        let segment = claim(
            &[
                "segment", "--model", file, "--image", image, "-o", "p.nii.gz",
            ],
            d,
        );
        assert_refused(&segment, &[FORMAT], &[file, "not a safetensors file"], file);
    }
}

/// A temporary file left by a killed writer (its process gone) is removed
/// by the next write to that folder; a replaced file keeps its mode.
#[cfg(unix)]
#[test]
fn writes_clean_up_after_killed_writers_and_keep_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = super::common::claim(&["phantom", "-o", "ph"], d);
    super::common::assert_ok(&out);
    // pid 4000000000 exceeds Linux's pid_max: no such process exists.
    let stale = d.join("ph/.seg.nii.gz.claim-tmp-4000000000-0");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::write(d.join("ph/seg.nii.gz"), b"old").unwrap();
    std::fs::set_permissions(
        d.join("ph/seg.nii.gz"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let out = claim(
        &[
            "aha",
            "ph/labels.nii.gz",
            "--rv",
            "5",
            "-o",
            "ph/seg.nii.gz",
        ],
        d,
    );
    super::common::assert_ok(&out);
    assert!(!stale.exists(), "the stale temporary file stayed");
    let mode = std::fs::metadata(d.join("ph/seg.nii.gz"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// Copies the folder `src` (recursively) to `dst`.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Every file under `dir`, as paths relative to it (empty when `dir` is
/// missing).
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(folder) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

/// The four commands that read a whole dataset, with the shortest runs
/// they take, reading `data` and writing under `out`.
fn dataset_commands(data: &str, out: &str) -> Vec<Vec<String>> {
    let tiny_generator =
        "--steps 1 --dim 8 --dim-mults 1,2 --heads 1 --dim-head 8 --batch 1 --crop 32";
    let commands = [
        format!("train diffusion --data {data} -o {out}/model.safetensors {tiny_generator}"),
        format!(
            "train segmenter --data {data} -o {out}/segmenter --epochs 1 \
             --iterations-per-epoch 1 --batch 1 --patch 32,32 --features 4,8"
        ),
        format!(
            "train joint --data {data} -o {out}/joint {tiny_generator} --seg-features 4,8 \
             --seg-patch 32,32 --seg-iterations-per-epoch 1"
        ),
        format!("augment --input {data} -o {out}/augment --model builtin --per-case 1"),
    ];
    commands
        .iter()
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// `train diffusion`, `train segmenter`, `train joint` and `augment` on
/// broken datasets (an nnU-Net raw dataset with a truncated image, with a
/// garbage label map, with a garbage `dataset.json`; an empty folder; a
/// missing one): each ends with the documented status, one `error:` line
/// naming the file and the problem, no panic, and writes nothing. `augment`
/// works case by case: a case it cannot read is recorded as failed in the
/// manifest (naming the file), the others are finished, and it exits with
/// status 1 leaving no partial file.
#[test]
fn training_and_augment_refuse_broken_datasets_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // phantom_000 has an infarct (augment copies it), phantom_001 is normal
    // (augment would paint it): the broken files are phantom_001's.
    let phantom: Vec<&str> = "phantom --cases 2 --scarred 1 --size 64 --slices 4 -o good"
        .split(' ')
        .collect();
    let made = super::common::claim(&phantom, d);
    super::common::assert_ok(&made);
    let good = d.join("good");

    copy_tree(&good, &d.join("truncated"));
    let image = d.join("truncated/imagesTr/phantom_001_0000.nii.gz");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&image, &bytes[..bytes.len() / 2]).unwrap();
    copy_tree(&good, &d.join("garbage"));
    std::fs::write(
        d.join("garbage/labelsTr/phantom_001.nii.gz"),
        b"this is no label map, just text\n",
    )
    .unwrap();
    copy_tree(&good, &d.join("bad_json"));
    std::fs::write(d.join("bad_json/dataset.json"), b"{ \"labels\": [1, 2,").unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();

    // (dataset, status, mentions, the file augment fails on alone)
    let cases: [(&str, i32, &[&str], Option<&str>); 5] = [
        (
            "truncated",
            FORMAT,
            &[
                "truncated/imagesTr/phantom_001_0000.nii.gz",
                "file ends inside",
            ],
            Some("phantom_001"),
        ),
        (
            "garbage",
            FORMAT,
            &["garbage/labelsTr/phantom_001.nii.gz", "not a NIfTI file"],
            Some("phantom_001"),
        ),
        ("bad_json", FORMAT, &["bad_json/dataset.json"], None),
        (
            "empty",
            INVALID,
            &["empty", "neither an nnU-Net raw dataset"],
            None,
        ),
        ("missing", IO, &["missing", "not a folder"], None),
    ];
    for (data, status, mentions, failed_case) in cases {
        let out = format!("out_{data}");
        std::fs::create_dir(d.join(&out)).unwrap();
        for command in dataset_commands(data, &out) {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let name = format!("{} on {data}", args[..2].join(" "));
            let run = claim(&args, d);
            match (args[0], failed_case) {
                ("augment", Some(case)) => {
                    let err = stderr(&run);
                    let all = format!("{}{err}", super::common::stdout(&run));
                    assert_eq!(run.status.code(), Some(INVALID), "{name}: {all}");
                    assert!(err.contains("1 case(s) failed"), "{name}: {err}");
                    assert!(!all.contains("panicked"), "{name}: {all}");
                    for m in mentions {
                        assert!(all.contains(m), "{name}: output lacks {m:?}: {all}");
                    }
                    let written = files_under(&d.join(&out).join("augment"));
                    assert!(
                        written
                            .iter()
                            .all(|f| !f.contains(case) && !f.contains("claim-tmp")),
                        "{name}: a partial or failed case was written: {written:?}"
                    );
                    let manifest =
                        std::fs::read_to_string(d.join(&out).join("augment/manifest.jsonl"))
                            .unwrap();
                    let line = manifest
                        .lines()
                        .find(|l| l.contains(&format!("\"case\":\"{case}\"")))
                        .unwrap_or_else(|| panic!("{name}: {case} not in the manifest"));
                    assert!(
                        line.contains("\"status\":\"failed\"") && line.contains(mentions[0]),
                        "{name}: {line}"
                    );
                }
                _ => {
                    assert_refused(&run, &[status], mentions, &name);
                    let written = files_under(&d.join(&out));
                    assert!(written.is_empty(), "{name} wrote {written:?}");
                }
            }
        }
    }
}

/// `phantom` and `demo` take no input files; their hostile input is
/// options out of range and an output path that cannot be a folder. Each is
/// refused with its status and a message naming it, and nothing is written.
#[test]
fn phantom_and_demo_refuse_impossible_options_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a_file"), b"not a folder").unwrap();
    let cases: [(&[&str], i32, &[&str]); 8] = [
        (
            // The voxel limit covers generated volumes too (64×64×10 =
            // 40960 voxels).
            &[
                "--max-voxels",
                "40000",
                "phantom",
                "--size",
                "64",
                "--slices",
                "10",
                "-o",
                "p",
            ],
            OUT_OF_MEMORY,
            &["phantom volume", "64×64×10", "40000"],
        ),
        (
            &["phantom", "--size", "0", "-o", "p"],
            INVALID,
            &["matrix_size", "got 0"],
        ),
        (
            &["phantom", "--size", "60000", "-o", "p"],
            INVALID,
            &["matrix_size", "60000"],
        ),
        (
            &["phantom", "--slices", "0", "-o", "p"],
            INVALID,
            &["slice_count"],
        ),
        (
            &["phantom", "--cases", "0", "-o", "p"],
            INVALID,
            &["--cases 0"],
        ),
        (&["phantom", "-o", "a_file"], IO, &["a_file"]),
        (&["demo", "-o", "a_file"], IO, &["a_file"]),
        (&["demo", "-o", "a_file/sub"], IO, &["a_file/sub"]),
    ];
    for (args, status, mentions) in cases {
        let run = claim(args, d);
        assert_refused(&run, &[status], mentions, &args.join(" "));
        assert!(!d.join("p").exists(), "{args:?} wrote p/");
        assert_eq!(
            std::fs::read(d.join("a_file")).unwrap(),
            b"not a folder",
            "{args:?}"
        );
    }
}

/// The bomb as the one case of an nnU-Net raw dataset: the training
/// commands refuse it from its header with the out-of-memory status and
/// write nothing; `augment` records the case as failed, naming the limit,
/// and exits with status 1.
fn the_dataset_readers_refuse_a_bomb(d: &Path, bomb: &Path) {
    let set = d.join("bombset");
    for folder in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(set.join(folder)).unwrap();
    }
    std::fs::copy(bomb, set.join("imagesTr/bomb_000_0000.nii.gz")).unwrap();
    std::fs::copy(bomb, set.join("labelsTr/bomb_000.nii.gz")).unwrap();
    std::fs::write(
        set.join("dataset.json"),
        r#"{"channel_names": {"0": "LGE"}, "labels": {"background": 0, "cavity": 1,
            "myocardium": 2, "infarction": 3, "no_reflow": 4}, "numTraining": 1,
            "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    std::fs::create_dir(d.join("bomb_out")).unwrap();
    let mentions = ["bomb_000", "2048×1024×1024", "limit"];
    for command in dataset_commands("bombset", "bomb_out") {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let name = format!("{} on the bomb", args[..2].join(" "));
        let run = claim(&args, d);
        if args[0] == "augment" {
            let err = stderr(&run);
            let all = format!("{}{err}", super::common::stdout(&run));
            assert_eq!(run.status.code(), Some(INVALID), "{name}: {all}");
            assert!(err.contains("1 case(s) failed"), "{name}: {err}");
            assert!(!all.contains("panicked"), "{name}: {all}");
            for m in mentions {
                assert!(all.contains(m), "{name}: output lacks {m:?}: {all}");
            }
            let written = files_under(&d.join("bomb_out/augment"));
            assert!(
                written
                    .iter()
                    .all(|f| !f.contains("bomb_000") && !f.contains("claim-tmp")),
                "{name}: {written:?}"
            );
        } else {
            assert_refused(&run, &[OUT_OF_MEMORY], &mentions, &name);
            let written: Vec<String> = files_under(&d.join("bomb_out"))
                .into_iter()
                .filter(|f| !f.starts_with("augment"))
                .collect();
            assert!(written.is_empty(), "{name} wrote {written:?}");
        }
    }
}

//! Compiles the C and C++ programs in `tests/c/` and `tests/cpp/` against
//! `include/claim.h` and the cdylib cargo built for this test run, runs them
//! and requires exit status 0. Their output is shown on failure.
//!
//! Memory checks: with `CLAIM_HARNESS_CHECK=asan` the programs are built
//! with `-fsanitize=address,undefined` (the library stays as cargo built it)
//! and any report fails them; with `CLAIM_HARNESS_CHECK=valgrind` they run
//! under valgrind memcheck with `--error-exitcode`, so any memory error,
//! use of uninitialised bytes or definite leak fails them. CI runs both
//! (`.ci/run`). `CLAIM_VALGRIND_TRACK_ORIGINS=1` adds `--track-origins=yes`,
//! which names where an uninitialised value came from at up to twice the
//! run time: for diagnosing a report, not for every run.
//!
//! Compilers: `$CC` / `$CXX`, else `cc` / `c++`. With no compiler the tests
//! fail and say so (CI has gcc). The atlas checks in the programs run when
//! `claim::testing::atlas_dir()` finds the atlas, passed as `$CLAIM_ATLAS_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory with the `libclaim.so` built for this test run.
/// Integration tests run from `target/<profile>/deps/`, and cargo compiles
/// the library with all its crate types (cdylib included) into that same
/// directory before linking them. The copy one level up is only refreshed by
/// `cargo build`, so it may be stale and is used only as a fallback.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let deps = exe.parent().expect("test executable has a directory");
    let file = if cfg!(target_os = "macos") {
        "libclaim.dylib"
    } else {
        "libclaim.so"
    };
    let candidates = [
        Some(deps.to_path_buf()),
        deps.parent().map(Path::to_path_buf),
    ];
    let dir = candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join(file).is_file())
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {} or its parent; run the tests through cargo, \
                 which builds the cdylib",
                deps.display()
            )
        });
    link_soname(&dir, file);
    dir
}

/// The library records its soname (`libclaim.so.<ABI major>`, see
/// build.rs) and programs linked to it ask the loader for that name, which
/// cargo does not create; `bindings/install.sh` does in a prefix. Here a
/// link beside the freshly built library stands in for it.
fn link_soname(dir: &Path, file: &str) {
    let major = claim::ffi::version::CLAIM_ABI_VERSION_MAJOR;
    let soname = if cfg!(target_os = "macos") {
        format!("libclaim.{major}.dylib")
    } else {
        format!("libclaim.so.{major}")
    };
    let link = dir.join(&soname);
    if std::fs::read_link(&link).is_ok_and(|target| target == Path::new(file)) {
        return;
    }
    // Concurrent test threads may race here: a link made by another one is fine.
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    if let Err(e) = std::os::unix::fs::symlink(file, &link) {
        assert!(
            link.exists(),
            "cannot link {} -> {file}: {e}",
            link.display()
        );
    }
}

/// The memory checker asked for with `$CLAIM_HARNESS_CHECK`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Asan,
    Valgrind,
}

fn check() -> Check {
    match std::env::var("CLAIM_HARNESS_CHECK").as_deref() {
        Ok("asan") => Check::Asan,
        Ok("valgrind") => Check::Valgrind,
        Ok("") | Err(_) => Check::None,
        Ok(other) => panic!("CLAIM_HARNESS_CHECK={other}: expected asan or valgrind"),
    }
}

/// Compiler flags of the checker: instrument the program, stop at the
/// first report.
const SANITIZE_FLAGS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
];

/// Exit status valgrind gives a program it found errors in.
const VALGRIND_ERROR_EXIT: i32 = 97;

fn tool(env_var: &str, default: &str) -> String {
    std::env::var(env_var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Compiles `source` into `out_dir` with `compiler` and `flags`, linked to
/// libclaim; panics with the compiler's output on failure.
fn compile(compiler: &str, flags: &[&str], source: &str, out_dir: &Path) -> PathBuf {
    let lib = library_dir();
    let exe = out_dir.join(Path::new(source).file_stem().unwrap());
    let mut cmd = Command::new(compiler);
    if check() == Check::Asan {
        cmd.args(SANITIZE_FLAGS);
    }
    cmd.args(flags)
        .arg("-I")
        .arg(repo().join("include"))
        .arg("-I")
        .arg(repo().join("bindings/cpp"))
        .arg(repo().join(source))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lclaim", "-lpthread", "-lm"]);
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run the compiler `{compiler}` ({e}): install gcc/g++ (CI has them) or \
             point $CC / $CXX at a C / C++ compiler"
        ),
    };
    assert!(
        output.status.success(),
        "compiling {source} failed:\n{:?}\n{}{}",
        cmd,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs a compiled program with a scratch directory argument and requires
/// exit status 0, printing its output either way (shown by the test runner
/// on failure or with `--nocapture`).
fn run(exe: &Path, scratch: &Path) {
    run_with_args(exe, scratch, &[]);
}

/// [`run`] with more arguments after the scratch directory.
fn run_with_args(exe: &Path, scratch: &Path, args: &[&Path]) {
    let mut cmd = match check() {
        Check::Valgrind => {
            let mut cmd = Command::new("valgrind");
            cmd.args([
                "--tool=memcheck",
                "--quiet",
                &format!("--error-exitcode={VALGRIND_ERROR_EXIT}"),
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
                &format!(
                    "--suppressions={}",
                    repo().join("tests/valgrind.supp").display()
                ),
            ]);
            if std::env::var_os("CLAIM_VALGRIND_TRACK_ORIGINS").is_some_and(|v| v == "1") {
                cmd.arg("--track-origins=yes");
            }
            cmd.arg(exe);
            cmd
        }
        _ => Command::new(exe),
    };
    if check() == Check::Asan {
        // Leaks: the library's thread pools and caches live until exit by
        // design; LeakSanitizer cannot tell them from leaks in a program
        // that does not own them. Memory errors and UB stop the program.
        cmd.env(
            "ASAN_OPTIONS",
            "detect_leaks=0:halt_on_error=1:abort_on_error=0",
        )
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    }
    cmd.arg(scratch).args(args).env_remove("CLAIM_ATLAS_DIR");
    // `cargo test` puts target/<profile> on the library path, and the loader
    // searches it before the program's RUNPATH: a stale libclaim.so there
    // (refreshed only by `cargo build`) would be the one tested. Put the
    // freshly built library's directory first.
    let path_var = if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else {
        "LD_LIBRARY_PATH"
    };
    let mut dirs = vec![library_dir()];
    if let Some(old) = std::env::var_os(path_var) {
        dirs.extend(std::env::split_paths(&old));
    }
    cmd.env(path_var, std::env::join_paths(dirs).expect("library path"));
    match claim::testing::atlas_dir() {
        Some(dir) => {
            cmd.env("CLAIM_ATLAS_DIR", dir);
        }
        None => println!("skipped: the atlas parts of {} (no atlas)", exe.display()),
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let hint = if check() == Check::Valgrind {
        "\n(rerun with CLAIM_VALGRIND_TRACK_ORIGINS=1 to see where an uninitialised value came from)"
    } else {
        ""
    };
    assert!(
        output.status.success(),
        "{} exited with {}{hint}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        exe.display(),
        output.status
    );
}

const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
const CXX_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Werror"];

#[test]
fn c_outside_program() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CC", "cc"),
        C_FLAGS,
        "tests/c/outside_program.c",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

#[test]
fn c_threads_see_their_own_messages() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CC", "cc"),
        C_FLAGS,
        "tests/c/threads.c",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

#[test]
fn c_smile() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CC", "cc"),
        C_FLAGS,
        "tests/c/smile.c",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

/// The diffusion model and scar synthesis: PyTorch parity of
/// `claim_diffusion_predict_noise` on the committed fixtures, and
/// `claim_diffusion_synthesize` end to end.
#[test]
fn c_synthesis() {
    let scratch = tempfile::tempdir().unwrap();
    let fixtures = format!(
        "-DCLAIM_FIXTURES=\"{}\"",
        repo().join("tests/fixtures").display()
    );
    let flags: Vec<&str> = C_FLAGS.iter().copied().chain([fixtures.as_str()]).collect();
    let exe = compile(
        &tool("CC", "cc"),
        &flags,
        "tests/c/synthesis.c",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

#[test]
fn cpp_wrapper() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CXX", "c++"),
        CXX_FLAGS,
        "tests/cpp/wrapper_test.cpp",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

#[test]
fn cpp_smile() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CXX", "c++"),
        CXX_FLAGS,
        "tests/cpp/smile_test.cpp",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

/// The diffusion part of the C++ wrapper.
#[test]
fn cpp_synthesis() {
    let scratch = tempfile::tempdir().unwrap();
    let fixtures = format!(
        "-DCLAIM_FIXTURES=\"{}\"",
        repo().join("tests/fixtures").display()
    );
    let flags: Vec<&str> = CXX_FLAGS
        .iter()
        .copied()
        .chain([fixtures.as_str()])
        .collect();
    let exe = compile(
        &tool("CXX", "c++"),
        &flags,
        "tests/cpp/synthesis_test.cpp",
        scratch.path(),
    );
    run(&exe, scratch.path());
}

/// The committed nnU-Net fixtures of `tools/nnunet_reference.py`
/// (`$CLAIM_NNUNET_FIXTURES` instead, as in `tests/engine/segmentation.rs`, to try
/// freshly generated ones).
fn nnunet_fixture(name: &str) -> PathBuf {
    std::env::var_os("CLAIM_NNUNET_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/fixtures/nnunet"))
        .join(name)
}

/// The 2-D results folder (folds 0 and 1, PyTorch-saved, random weights).
fn nnunet_results_2d() -> PathBuf {
    nnunet_fixture("Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d")
}

/// A non-square phantom stack (96 × 80 × 3 voxels of 1.5625 × 1.5625 × 9 mm,
/// the 2-D plans' spacing, so nothing is resampled) with an oblique
/// geometry and no zero voxel (so nothing is cropped), as NIfTI in
/// `path`; returns the image as read back (f32 geometry of the file).
fn write_segment_test_image(path: &Path) -> claim::Image {
    use claim::phantom::{generate, PhantomParams};
    let case = generate(&PhantomParams {
        seed: 11,
        with_scar: true,
        matrix_size: 96,
        slice_count: 3,
        pixel_spacing_mm: 1.5625,
        slice_spacing_mm: 9.0,
        ..PhantomParams::default()
    })
    .unwrap();
    let (s, c) = (0.4f64.sin(), 0.4f64.cos());
    let geometry = claim::Geometry {
        spacing: [1.5625, 1.5625, 9.0],
        origin: [-70.0, 55.5, -20.25],
        direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    };
    let rows = case.image.data.slice(ndarray::s![.., 8..88, ..]);
    let data = rows.mapv(|v| v.abs() + 1.0);
    let image = claim::Image::F32(claim::Volume { data, geometry });
    claim::io::write_image(&image, path).unwrap();
    claim::io::read_image(path).unwrap()
}

/// Writes what `tests/c/segment.c` reads from its scratch directory (see
/// its header comment): reference logits as text, the test image, the Rust
/// library's labels for it, a file that is no model and a results folder
/// naming an unsupported architecture.
fn write_segment_inputs(scratch: &Path) {
    use claim::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
    use std::fmt::Write;

    let io = claim::nn::Weights::load(&nnunet_fixture("logits_2d.safetensors")).unwrap();
    let mut text = String::new();
    for key in ["input", "logits"] {
        let t = io.peek(key).unwrap_or_else(|| panic!("{key} in logits_2d"));
        let dims: Vec<String> = t.dims().iter().map(|d| d.to_string()).collect();
        writeln!(text, "{key} {} {}", dims.len(), dims.join(" ")).unwrap();
        for v in t.as_slice().unwrap() {
            // Rust prints the shortest text that reads back as the same f32.
            writeln!(text, "{v:e}").unwrap();
        }
    }
    std::fs::write(scratch.join("logits_2d.txt"), text).unwrap();

    let image = write_segment_test_image(&scratch.join("image.nii.gz"));
    let model = Segmenter::load(&nnunet_results_2d(), &SegmenterOptions::default()).unwrap();
    let params = SegmentParams {
        label_scheme: claim::LabelScheme {
            lv_cavity: 11,
            myocardium: 12,
            scar: 13,
            mvo: 14,
            rv: None,
        },
        ..SegmentParams::default()
    };
    let labels = model.segment(&image, &params, &mut |_, _| true).unwrap();
    claim::io::write_image(&labels.into(), &scratch.join("expected_labels.nii.gz")).unwrap();

    std::fs::write(
        scratch.join("not_a_model.pth"),
        b"PK\x03\x04 is where a zip archive would begin; this one ends here",
    )
    .unwrap();

    let resenc = scratch.join("resenc");
    std::fs::create_dir_all(resenc.join("fold_0")).unwrap();
    let folder = nnunet_results_2d();
    std::fs::copy(folder.join("dataset.json"), resenc.join("dataset.json")).unwrap();
    std::fs::copy(
        folder.join("fold_0/checkpoint_final.pth"),
        resenc.join("fold_0/checkpoint_final.pth"),
    )
    .unwrap();
    let mut plans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("plans.json")).unwrap()).unwrap();
    plans["configurations"]["2d"]["architecture"]["network_class_name"] =
        "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet".into();
    std::fs::write(resenc.join("plans.json"), plans.to_string()).unwrap();

    let huge = scratch.join("huge_patch");
    std::fs::create_dir_all(huge.join("fold_0")).unwrap();
    std::fs::copy(folder.join("dataset.json"), huge.join("dataset.json")).unwrap();
    std::fs::copy(
        folder.join("fold_0/checkpoint_final.pth"),
        huge.join("fold_0/checkpoint_final.pth"),
    )
    .unwrap();
    let mut plans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("plans.json")).unwrap()).unwrap();
    plans["configurations"]["2d"]["patch_size"] = serde_json::json!([100000, 100000]);
    std::fs::write(huge.join("plans.json"), plans.to_string()).unwrap();
}

/// nnU-Net segmentation through the C API: loading the PyTorch-saved
/// results folder, PyTorch parity of `claim_segmenter_predict_logits`,
/// `claim_segmenter_segment` against the Rust library with progress and cancel, and
/// the refusals.
#[test]
fn c_segment() {
    let scratch = tempfile::tempdir().unwrap();
    write_segment_inputs(scratch.path());
    let exe = compile(
        &tool("CC", "cc"),
        C_FLAGS,
        "tests/c/segment.c",
        scratch.path(),
    );
    run_with_args(&exe, scratch.path(), &[&nnunet_results_2d()]);
}

/// The segmentation part of the C++ wrapper.
#[test]
fn cpp_segment() {
    let scratch = tempfile::tempdir().unwrap();
    let exe = compile(
        &tool("CXX", "c++"),
        CXX_FLAGS,
        "tests/cpp/segment_test.cpp",
        scratch.path(),
    );
    run_with_args(&exe, scratch.path(), &[&nnunet_results_2d()]);
}

/// No exported function reads or writes past a caller's `struct_size`:
/// `tests/c/struct_bounds.c` fills guard-byte buffers through every
/// `_default` and refused output, and passes every struct of every
/// function at the end of a page followed by a `PROT_NONE` page (an
/// over-read or over-write kills it).
#[test]
fn c_struct_bounds() {
    let scratch = tempfile::tempdir().unwrap();
    let fixtures = format!(
        "-DCLAIM_FIXTURES=\"{}\"",
        repo().join("tests/fixtures").display()
    );
    let flags: Vec<&str> = C_FLAGS.iter().copied().chain([fixtures.as_str()]).collect();
    let exe = compile(
        &tool("CC", "cc"),
        &flags,
        "tests/c/struct_bounds.c",
        scratch.path(),
    );
    run_with_args(&exe, scratch.path(), &[&nnunet_results_2d()]);
}

/// The header compiles on its own as pedantic C99 and as C++17, so
/// consumers need no other include before it.
#[test]
fn header_compiles_alone_in_c_and_cpp() {
    let scratch = tempfile::tempdir().unwrap();
    for (compiler, flags, name) in [
        (tool("CC", "cc"), C_FLAGS, "alone.c"),
        (tool("CXX", "c++"), CXX_FLAGS, "alone.cpp"),
    ] {
        let source = scratch.path().join(name);
        std::fs::write(&source, "#include \"claim.h\"\nint claim_header_only;\n").unwrap();
        let output = Command::new(&compiler)
            .args(flags)
            .arg("-I")
            .arg(repo().join("include"))
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(scratch.path().join(format!("{name}.o")))
            .output()
            .unwrap_or_else(|e| panic!("cannot run the compiler `{compiler}`: {e}"));
        assert!(
            output.status.success(),
            "claim.h alone does not compile with {compiler} {flags:?}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

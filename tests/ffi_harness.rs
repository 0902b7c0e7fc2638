//! Compiles the C and C++ programs in `tests/c/` and `tests/cpp/` against
//! `include/claim.h` and the cdylib cargo built for this test run, runs them
//! and requires exit status 0. Their output is shown on failure.
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
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join(file).is_file())
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {} or its parent; run the tests through cargo, \
                 which builds the cdylib",
                deps.display()
            )
        })
}

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
    let mut cmd = Command::new(exe);
    cmd.arg(scratch).env_remove("CLAIM_ATLAS_DIR");
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
    assert!(
        output.status.success(),
        "{} exited with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
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
/// `claim_synthesize` end to end.
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

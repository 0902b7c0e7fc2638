//! Helpers the CLI integration tests share: running the built `claim`
//! binary and checking how it ended.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `claim` binary with `args` in `cwd`.
pub fn claim(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claim"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the claim binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "claim failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A clean failure: the status, one `error:` line mentioning `mentions`.
pub fn assert_fails(out: &Output, status: i32, mentions: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(err.contains(mentions), "stderr lacks {mentions:?}: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

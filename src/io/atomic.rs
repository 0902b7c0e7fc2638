//! Replacing a file so that no reader ever sees half of it.
//!
//! The new contents go to a hidden temporary file beside the target,
//! `.<name>.claim-tmp-<pid>-<n>`, which is synced and renamed over the
//! target. A failed write removes its temporary file, and an earlier file at
//! the path stays as it was. The permission bits of a file being replaced
//! are kept.
//!
//! A process killed mid-write (SIGKILL, power loss) cannot remove its
//! temporary file. Each write therefore first removes the temporary files in
//! its folder whose process is gone (on Linux, no `/proc/<pid>`): at most
//! one write's worth of leftovers stays, until the next write to that folder.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The part of a temporary name between the target's name and the pid.
const TEMP_MARK: &str = ".claim-tmp-";

/// A fresh name beside `path` that no other writer (thread or process) uses.
fn temp_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid(format!(
            "{}: not a file path",
            crate::error::path_text(path)
        ))
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}{TEMP_MARK}{}-{n}",
        file_name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}

/// The pid in a temporary file name written by [`temp_path`], if it is one.
fn temp_owner(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, tail) = name.rsplit_once(TEMP_MARK)?;
    let (pid, rest) = tail.split_once('-')?;
    let counter = rest.split('.').next()?;
    if counter.is_empty() || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is (probably) alive. Where this cannot be told
/// (no `/proc`), every process counts as alive, so nothing is removed.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// Removes the temporary files in `dir` left by processes that are gone;
/// best effort (errors are ignored: the write itself decides success).
/// Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !process_alive(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `path` through `fill`, which writes the contents to the open
/// temporary file. See the [module docs](self).
pub fn write_atomically(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<()> {
    write_atomically_via(path, |temp| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(|e| Error::io_at(path, &e))?;
        fill(&mut file).map_err(|e| Error::io_at(path, &e))
    })
}

/// Writes `path` through `fill(temp)`, which creates and writes the
/// temporary file `temp` itself (for writers that take a path). See the
/// [module docs](self).
pub fn write_atomically_via(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temp = temp_path(path)?;
    remove_stale_temp_files(folder_of(path));
    let kept_permissions = fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.permissions());
    let result = fill(&temp).and_then(|()| {
        let finish = || -> io::Result<()> {
            let file = File::open(&temp)?;
            if let Some(permissions) = kept_permissions {
                file.set_permissions(permissions)?;
            }
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, path)
        };
        finish().map_err(|e| Error::io_at(path, &e))
    });
    if result.is_err() {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_owner(".a.nii.gz.claim-tmp-1234-0"), Some(1234));
        assert_eq!(temp_owner(".m.safetensors.claim-tmp-7-12"), Some(7));
        assert_eq!(temp_owner("a.nii.gz.claim-tmp-1234-0"), None);
        assert_eq!(temp_owner(".a.claim-tmp-x-0"), None);
        assert_eq!(temp_owner(".a.claim-tmp-12-"), None);
        assert_eq!(temp_owner(".plain"), None);
    }

    /// A pid no process has: above Linux's pid_max (at most 2^22).
    const DEAD_PID: u32 = 4_000_000_000;

    #[test]
    fn stale_temp_files_of_dead_processes_are_removed_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!(".out.nii.claim-tmp-{DEAD_PID}-3"));
        let live = dir
            .path()
            .join(format!(".out.nii.claim-tmp-{}-999999", std::process::id()));
        let other = dir.path().join("keep.claim-tmp-1-1");
        for p in [&stale, &live, &other] {
            fs::write(p, b"left over").unwrap();
        }
        let target = dir.path().join("out.nii");
        write_atomically(&target, |f| io::Write::write_all(f, b"new")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists(), "a dead process's temp file stays");
        }
        assert!(live.exists(), "a live process's temp file was removed");
        assert!(other.exists(), "a file that is no temp file was removed");
    }

    #[cfg(unix)]
    #[test]
    fn replacing_keeps_permission_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        fs::write(&target, b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&target, |f| io::Write::write_all(f, b"new")).unwrap();
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.nii");
        fs::write(&target, b"old").unwrap();
        let err = write_atomically(&target, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! The one boundary every export goes through.
//!
//! [`call`] wraps a status-returning export: it catches panics, maps a
//! [`crate::Error`] to its `claim_status` and stores the message in a
//! thread-local string that `claim_last_error_message()` hands out.
//! [`call_infallible`] wraps the few exports that return no status (`_free`,
//! `_default`, version and message queries): it catches panics too but
//! leaves the message alone, so a caller can clean up before reading it.
//!
//! A caught panic must not print either (hosts such as Slicer own stderr).
//! The default panic hook prints before unwinding starts, so the first call
//! installs a hook that stays silent for panics on threads that are inside
//! an export and hands every other panic to the hook that was there before.
//! A host that later replaces the process-wide hook also replaces ours; its
//! hook then decides what such panics print.

use super::status::{claim_status, CLAIM_ERR_INTERNAL, CLAIM_OK};
use crate::error::{Error, Result};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CString};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Message of the last failed status-returning call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Number of exports running on this thread (more than one when a
    /// caller's callback re-enters the library).
    static EXPORT_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// What the quiet hook saw of a panic inside an export: message and
    /// location, picked up by the boundary once the unwind is caught.
    static CAUGHT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static QUIET_HOOK: Once = Once::new();

/// Installs, once per process, the hook that silences panics inside exports.
fn install_quiet_panic_hook() {
    // take_hook/set_hook panic when called during a panic; the hook is then
    // installed by a later call instead.
    if std::thread::panicking() {
        return;
    }
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let inside_export = EXPORT_DEPTH.try_with(|d| d.get() > 0).unwrap_or(false);
            if inside_export {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let text = format!("{}{location}", payload_text(info.payload()));
                // Fails only while the thread is being torn down; the
                // boundary then falls back to the payload alone.
                let _ = CAUGHT_PANIC.try_with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload (`panic!` gives `&str` or `String`).
fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Marks the current thread as inside an export for as long as it lives.
struct ExportScope;

impl ExportScope {
    fn enter() -> Self {
        let _ = EXPORT_DEPTH.try_with(|d| d.set(d.get().saturating_add(1)));
        ExportScope
    }
}

impl Drop for ExportScope {
    fn drop(&mut self) {
        let _ = EXPORT_DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `body` inside the catch, returning its result or the panic turned
/// into [`Error::Internal`] naming `function`.
fn catch<T>(function: &'static str, body: impl FnOnce() -> T) -> std::result::Result<T, Error> {
    install_quiet_panic_hook();
    // A panic caught and handled inside an earlier body may have left a note.
    let _ = CAUGHT_PANIC.try_with(|p| p.borrow_mut().take());
    let scope = ExportScope::enter();
    let outcome = panic::catch_unwind(AssertUnwindSafe(body));
    drop(scope);
    outcome.map_err(|payload| {
        let seen_by_hook = CAUGHT_PANIC
            .try_with(|p| p.borrow_mut().take())
            .ok()
            .flatten();
        let text = seen_by_hook.unwrap_or_else(|| payload_text(payload.as_ref()));
        // Dropping a payload may itself panic; that must not escape either.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        Error::Internal(format!("{function} panicked: {text}"))
    })
}

/// The boundary of every status-returning export: runs `body`, catches any
/// panic, and turns the outcome into a `claim_status`, recording the
/// message (prefixed with `function`) for `claim_last_error_message()` on
/// failure and clearing it on success.
pub(crate) fn call(function: &'static str, body: impl FnOnce() -> Result<()>) -> claim_status {
    match catch(function, body) {
        Ok(Ok(())) => {
            clear_last_error();
            CLAIM_OK
        }
        Ok(Err(err)) => {
            set_last_error(&format!("{function}: {err}"));
            err.status_code()
        }
        Err(internal) => {
            set_last_error(&internal.to_string());
            CLAIM_ERR_INTERNAL
        }
    }
}

/// The boundary of exports that return no status: runs `body`, returning
/// `fallback` if it panics. The thread's error message is left as it was,
/// except that a panic replaces it with the panic's description (the only
/// place it can be reported).
pub(crate) fn call_infallible<T>(
    function: &'static str,
    fallback: T,
    body: impl FnOnce() -> T,
) -> T {
    match catch(function, body) {
        Ok(value) => value,
        Err(internal) => {
            set_last_error(&internal.to_string());
            fallback
        }
    }
}

fn set_last_error(message: &str) {
    // A message with an interior NUL would be cut short in C; show it instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|m| *m.borrow_mut() = text);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|m| {
        let mut m = m.borrow_mut();
        if !m.as_bytes().is_empty() {
            *m = CString::default();
        }
    });
}

/// Pointer to this thread's last error message (`""` after a success).
/// Valid until the message is next replaced, i.e. the next status-returning
/// call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|m| m.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

#[cfg(test)]
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|m| m.borrow().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::args::OutHandle;
    use crate::ffi::status::CLAIM_ERR_IO;

    #[test]
    fn success_clears_the_message() {
        assert_eq!(
            call("t_fail", || Err(Error::Io("disk on fire".into()))),
            CLAIM_ERR_IO
        );
        assert_eq!(last_error(), "t_fail: I/O error: disk on fire");
        assert_eq!(call("t_ok", || Ok(())), CLAIM_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn infallible_calls_leave_the_message_alone() {
        call("t_fail", || Err(Error::invalid("x must be > 0, got -1")));
        assert_eq!(call_infallible("t_query", 0, || 7), 7);
        assert_eq!(
            last_error(),
            "t_fail: invalid argument: x must be > 0, got -1"
        );
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message_and_no_output_handle() {
        let mut out: *mut u32 = std::ptr::NonNull::dangling().as_ptr();
        let status = call("t_panics", || {
            // SAFETY: `out` is a live local variable.
            let handle = unsafe { OutHandle::new(&mut out, "out") }?;
            let v: Vec<u32> = Vec::new();
            let value = v[3]; // out-of-bounds: panics
            handle.set(Box::new(value));
            Ok(())
        });
        assert_eq!(status, CLAIM_ERR_INTERNAL);
        assert!(out.is_null(), "a failed call must leave *out NULL");
        let msg = last_error();
        assert!(
            msg.starts_with("internal error: t_panics panicked: "),
            "{msg}"
        );
        assert!(msg.contains("index out of bounds"), "{msg}");
        // The location comes from the quiet hook: proof it saw the panic.
        assert!(msg.contains("boundary.rs:"), "{msg}");
        // The thread is usable afterwards.
        assert_eq!(call("t_ok", || Ok(())), CLAIM_OK);
        assert_eq!(
            call_infallible("t_panics_too", 5, || -> i32 { panic!("boom") }),
            5
        );
        assert!(last_error().contains("t_panics_too panicked: boom"));
    }

    /// Runs this test binary again with only `quiet_child` selected and checks
    /// that a panic inside an export printed nothing, while a panic outside
    /// one was printed by the default hook.
    #[test]
    fn caught_panics_print_nothing() {
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "ffi::boundary::tests::quiet_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CLAIM_FFI_QUIET_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
        assert!(
            !stderr.contains("inside-export"),
            "caught panic printed:\n{stderr}"
        );
        assert!(
            stderr.contains("outside-export"),
            "hook chain lost:\n{stderr}"
        );
    }

    #[test]
    fn quiet_child() {
        if std::env::var_os("CLAIM_FFI_QUIET_CHILD").is_none() {
            return; // only meaningful as the child of caught_panics_print_nothing
        }
        let status = call("t_child", || -> Result<()> { panic!("inside-export") });
        assert_eq!(status, CLAIM_ERR_INTERNAL);
        assert!(std::thread::spawn(|| panic!("outside-export"))
            .join()
            .is_err());
    }
}

//! `claim_status` codes and the thread-local error message.
//!
//! `claim_status` is a `typedef int32_t` with `#define`d codes rather than a
//! C `enum`: the size of a C enum is implementation-defined, and a Rust enum
//! receiving a number it does not list (a newer or buggy caller) would be
//! undefined behaviour. A plain 32-bit integer is the same on both sides for
//! every value.

use super::boundary;
use std::ffi::{c_char, CStr};

/// Result of every fallible `claim_*` function: `CLAIM_OK` (0) or one of the
/// `CLAIM_ERR_*` codes. The numbers are part of the ABI and never change; a
/// retired code stays reserved. On failure, `claim_last_error_message()`
/// says what went wrong.
pub type claim_status = i32;

/// Success.
pub const CLAIM_OK: claim_status = 0;
/// An argument is NULL, out of range, inconsistent or has a wrong `struct_size`.
pub const CLAIM_ERR_INVALID_ARGUMENT: claim_status = 1;
/// A file could not be opened, read or written.
pub const CLAIM_ERR_IO: claim_status = 2;
/// A file was read but its contents are not valid for its format.
pub const CLAIM_ERR_FORMAT: claim_status = 3;
/// Model weights are missing, extra or misshapen.
pub const CLAIM_ERR_MODEL: claim_status = 4;
/// An accelerator is unavailable or failed.
pub const CLAIM_ERR_DEVICE: claim_status = 5;
/// An allocation was refused (or would be absurdly large).
pub const CLAIM_ERR_OUT_OF_MEMORY: claim_status = 6;
/// The caller's progress callback asked to stop.
pub const CLAIM_ERR_CANCELLED: claim_status = 7;
/// A valid request for something this build does not support.
pub const CLAIM_ERR_UNSUPPORTED: claim_status = 8;
/// A bug inside claim, including a caught panic.
pub const CLAIM_ERR_INTERNAL: claim_status = 9;

/// The name of a status code (`"CLAIM_OK"`, `"CLAIM_ERR_IO"`, ...), or
/// `"CLAIM_ERR_UNKNOWN"` for a number that is not a status code.
fn status_name(status: claim_status) -> &'static CStr {
    match status {
        CLAIM_OK => c"CLAIM_OK",
        CLAIM_ERR_INVALID_ARGUMENT => c"CLAIM_ERR_INVALID_ARGUMENT",
        CLAIM_ERR_IO => c"CLAIM_ERR_IO",
        CLAIM_ERR_FORMAT => c"CLAIM_ERR_FORMAT",
        CLAIM_ERR_MODEL => c"CLAIM_ERR_MODEL",
        CLAIM_ERR_DEVICE => c"CLAIM_ERR_DEVICE",
        CLAIM_ERR_OUT_OF_MEMORY => c"CLAIM_ERR_OUT_OF_MEMORY",
        CLAIM_ERR_CANCELLED => c"CLAIM_ERR_CANCELLED",
        CLAIM_ERR_UNSUPPORTED => c"CLAIM_ERR_UNSUPPORTED",
        CLAIM_ERR_INTERNAL => c"CLAIM_ERR_INTERNAL",
        _ => c"CLAIM_ERR_UNKNOWN",
    }
}

/// The name of a status code: `"CLAIM_OK"`, `"CLAIM_ERR_INVALID_ARGUMENT"`,
/// ..., or `"CLAIM_ERR_UNKNOWN"` for any other number.
///
/// Returns a static NUL-terminated string (never NULL, never freed).
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_status_str(status: claim_status) -> *const c_char {
    boundary::call_infallible("claim_status_str", c"CLAIM_ERR_UNKNOWN".as_ptr(), || {
        status_name(status).as_ptr()
    })
}

/// The message of the last failed `claim_*` call on the calling thread, or
/// `""` when the last status-returning call on this thread succeeded (or
/// there was none).
///
/// The message is UTF-8, names the function and the offending argument, file
/// or tensor, and says what was expected and what was found. The string is
/// owned by the library and stays valid until the next status-returning
/// `claim_*` call on the same thread; copy it to keep it. Calls that return no
/// status (`claim_status_str`, `claim_last_error_message`,
/// `claim_abi_version`, `claim_version_string`, `claim_*_default`,
/// `claim_*_free`) leave it untouched, so it can be read after cleaning up.
/// Never NULL. Thread-safe: each thread has its own message.
#[no_mangle]
pub extern "C" fn claim_last_error_message() -> *const c_char {
    boundary::call_infallible(
        "claim_last_error_message",
        c"".as_ptr(),
        boundary::last_error_ptr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn codes_agree_with_the_rust_error_type() {
        let pairs = [
            (Error::invalid("a"), CLAIM_ERR_INVALID_ARGUMENT),
            (Error::Io("b".into()), CLAIM_ERR_IO),
            (Error::format("c"), CLAIM_ERR_FORMAT),
            (Error::Model("d".into()), CLAIM_ERR_MODEL),
            (Error::Device("e".into()), CLAIM_ERR_DEVICE),
            (Error::OutOfMemory("f".into()), CLAIM_ERR_OUT_OF_MEMORY),
            (Error::Cancelled, CLAIM_ERR_CANCELLED),
            (Error::Unsupported("g".into()), CLAIM_ERR_UNSUPPORTED),
            (Error::Internal("h".into()), CLAIM_ERR_INTERNAL),
        ];
        for (err, code) in pairs {
            assert_eq!(err.status_code(), code, "{err}");
        }
        assert_eq!(CLAIM_OK, 0);
    }

    #[test]
    fn every_code_has_its_own_name() {
        let names: Vec<String> = (0..=9)
            .map(|code| {
                // SAFETY: claim_status_str returns a static NUL-terminated string.
                let s = unsafe { CStr::from_ptr(claim_status_str(code)) };
                s.to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(names[0], "CLAIM_OK");
        assert_eq!(names[2], "CLAIM_ERR_IO");
        assert_eq!(names[9], "CLAIM_ERR_INTERNAL");
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        assert!(!names.iter().any(|n| n == "CLAIM_ERR_UNKNOWN"));
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(claim_status_str(42)) };
        assert_eq!(unknown.to_str().unwrap(), "CLAIM_ERR_UNKNOWN");
        // SAFETY: as above.
        let negative = unsafe { CStr::from_ptr(claim_status_str(-1)) };
        assert_eq!(negative.to_str().unwrap(), "CLAIM_ERR_UNKNOWN");
    }
}

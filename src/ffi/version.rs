//! ABI and crate versions.
//!
//! The ABI version is `major << 16 | minor`. It starts at 1.0, not 0.x: the
//! first release already promises that status numbers, names and struct
//! prefixes never change. Appending functions, codes or struct fields bumps
//! the minor; anything that breaks a compiled caller bumps the major. A
//! caller checks at run time that `claim_abi_version() >> 16 ==
//! CLAIM_ABI_VERSION_MAJOR` and that the library's minor is at least the
//! header's.

use super::boundary;
use std::ffi::c_char;

/// Major ABI version of this header: changes only with an incompatible ABI.
pub const CLAIM_ABI_VERSION_MAJOR: u32 = 1;
/// Minor ABI version of this header: grows when functions or struct fields
/// are appended.
pub const CLAIM_ABI_VERSION_MINOR: u32 = 0;
/// ABI version of this header, `major << 16 | minor`.
pub const CLAIM_ABI_VERSION: u32 = (CLAIM_ABI_VERSION_MAJOR << 16) | CLAIM_ABI_VERSION_MINOR;

/// The crate version with a trailing NUL, for C.
static VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The ABI version of the loaded library (`CLAIM_ABI_VERSION` of the header
/// it was built with): `major << 16 | minor`.
///
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_abi_version() -> u32 {
    boundary::call_infallible("claim_abi_version", CLAIM_ABI_VERSION, || CLAIM_ABI_VERSION)
}

/// The library's release, e.g. `"0.1.0"`: a static NUL-terminated string
/// (never NULL, never freed).
///
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_version_string() -> *const c_char {
    boundary::call_infallible("claim_version_string", VERSION_C.as_ptr().cast(), || {
        VERSION_C.as_ptr().cast()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn versions() {
        assert_eq!(claim_abi_version(), 0x0001_0000);
        // SAFETY: a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(claim_version_string()) };
        assert_eq!(v.to_str().unwrap(), crate::VERSION);
    }
}

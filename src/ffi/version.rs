//! ABI and crate versions, and what this build can run on
//! (`claim_build_info_get`).
//!
//! The ABI version is `major << 16 | minor`. Appending functions, codes or
//! struct fields bumps the minor; anything that breaks a compiled caller
//! bumps the major. A caller checks at run time that the library's major
//! (`claim_abi_version() >> 16`) is `CLAIM_ABI_VERSION_MAJOR` and that its
//! minor is at least the header's.
//!
//! 2.0 is the one-time clean-up of the 0.x API (no released users): sized
//! `_default(out, size)` initialisers, no struct nested by value, one
//! meaning per word and `claim_<noun>_<verb>` names, `claim_build_info`.
//! From 2.0 on the ABI only grows: 2.1 appended the two-channel fields and
//! `claim_histogram_measure_channels`, and added the voxel limit
//! (`claim_max_voxels_set` / `_get`); 2.2 added `claim_labels_evaluate_json`.

use super::args::{write_struct, CStruct};
use super::boundary;
use super::status::claim_status;
use crate::backend::{build_info, BuildInfo};
use std::ffi::c_char;
use std::mem::size_of;

/// Major ABI version of this header: changes only with an incompatible ABI.
pub const CLAIM_ABI_VERSION_MAJOR: u32 = 2;
/// Minor ABI version of this header: grows when functions or struct fields
/// are appended.
pub const CLAIM_ABI_VERSION_MINOR: u32 = 2;
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

/// Bytes of `claim_build_info.kernel_archs`, NUL included.
pub const CLAIM_BUILD_ARCHS_MAX: u32 = 128;
/// Bytes of `claim_build_info.cuda_status`, NUL included.
pub const CLAIM_BUILD_STATUS_MAX: u32 = 512;

/// What this build of the library is and what it finds on this machine,
/// filled by `claim_build_info_get`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct claim_build_info {
    /// `sizeof(claim_build_info)`, set by the caller.
    pub struct_size: u32,
    /// 1 when the library was built with the CUDA back-end (the `cuda`
    /// feature), else 0.
    pub cuda_feature: i32,
    /// 1 when a CUDA driver and at least one device were found at the time
    /// of the call, else 0 (always 0 without the CUDA back-end).
    pub cuda_available: i32,
    /// The driver's CUDA version as `major * 1000 + minor * 10` (13000 for
    /// 13.0); 0 without a driver.
    pub cuda_driver_version: i32,
    /// CUDA devices found.
    pub cuda_device_count: u32,
    /// GPU targets of the embedded kernels, comma-separated and
    /// NUL-terminated (e.g. "sm_80,sm_90,compute_80"); "" when none are
    /// embedded.
    pub kernel_archs: [c_char; 128],
    /// NUL-terminated UTF-8: one line per device found ("0: <name>, ..."),
    /// or why CUDA is not usable (not built in, no driver, no device). Cut
    /// at a character boundary when longer.
    pub cuda_status: [c_char; 512],
}

impl Default for claim_build_info {
    fn default() -> Self {
        claim_build_info {
            struct_size: size_of::<claim_build_info>() as u32,
            cuda_feature: 0,
            cuda_available: 0,
            cuda_driver_version: 0,
            cuda_device_count: 0,
            kernel_archs: [0; 128],
            cuda_status: [0; 512],
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers and char arrays.
unsafe impl CStruct for claim_build_info {
    const C_NAME: &'static str = "claim_build_info";
    const FIRST_RELEASE_SIZE: usize = 660;
    fn with_struct_size(self, size: u32) -> Self {
        claim_build_info {
            struct_size: size,
            ..self
        }
    }
}

/// `text` in a NUL-terminated buffer, cut at a character boundary (and at
/// an interior NUL) when it does not fit.
fn text_to_c<const N: usize>(text: &str) -> [c_char; N] {
    let mut buffer = [0 as c_char; N];
    let text = text.split('\0').next().unwrap_or_default();
    let mut len = text.len().min(N.saturating_sub(1));
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    for (b, &t) in buffer.iter_mut().zip(&text.as_bytes()[..len]) {
        *b = t as c_char;
    }
    buffer
}

impl From<&BuildInfo> for claim_build_info {
    fn from(info: &BuildInfo) -> Self {
        let (available, driver, devices, status) = match &info.cuda_runtime {
            Ok(runtime) => (
                !runtime.devices.is_empty(),
                runtime.driver_version,
                runtime.devices.len(),
                if runtime.devices.is_empty() {
                    "CUDA driver found, but no device".to_string()
                } else {
                    runtime.devices.join("\n")
                },
            ),
            Err(why) => (false, 0, 0, why.clone()),
        };
        claim_build_info {
            cuda_feature: i32::from(info.cuda_feature),
            cuda_available: i32::from(available),
            cuda_driver_version: driver,
            cuda_device_count: u32::try_from(devices).unwrap_or(u32::MAX),
            kernel_archs: text_to_c(&info.kernel_archs.join(",")),
            cuda_status: text_to_c(&status),
            ..claim_build_info::default()
        }
    }
}

/// Describes this build and what it finds now into the caller's `*out`
/// (its `struct_size` set to `sizeof(claim_build_info)`; an older, smaller
/// struct is filled only up to its `struct_size`): whether the CUDA
/// back-end is built in, the GPU targets of its embedded kernels, and the
/// CUDA driver and devices found, or why none are usable. Probes the driver
/// on every call (no device is opened); never fails for lack of CUDA.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, `struct_size` smaller than
/// `sizeof(claim_build_info)` of ABI 2.0). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_build_info_get(out: *mut claim_build_info) -> claim_status {
    boundary::call("claim_build_info_get", || {
        // SAFETY: `out` is NULL or writable for struct_size bytes (header
        // contract).
        unsafe { super::args::check_out_struct(out.cast_const(), "out") }?;
        let info = claim_build_info::from(&build_info());
        // SAFETY: as above.
        unsafe { write_struct(out, info, "out") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use std::ffi::CStr;

    #[test]
    fn build_info_says_what_this_build_has() {
        assert_eq!(size_of::<claim_build_info>(), 660);
        let mut info = claim_build_info {
            cuda_available: 7,
            ..claim_build_info::default()
        };
        assert_eq!(
            claim_build_info_get(&mut info),
            CLAIM_OK,
            "{}",
            last_error()
        );
        let rust = build_info();
        assert_eq!(info.cuda_feature, i32::from(rust.cuda_feature));
        // SAFETY: both buffers are NUL-terminated by text_to_c.
        let (archs, status) = unsafe {
            (
                CStr::from_ptr(info.kernel_archs.as_ptr()),
                CStr::from_ptr(info.cuda_status.as_ptr()),
            )
        };
        assert_eq!(archs.to_str().unwrap(), rust.kernel_archs.join(","));
        match &rust.cuda_runtime {
            Ok(runtime) => {
                assert_eq!(info.cuda_device_count as usize, runtime.devices.len());
                assert_eq!(info.cuda_available, i32::from(!runtime.devices.is_empty()));
            }
            Err(why) => {
                assert_eq!(status.to_str().unwrap(), why.as_str());
                assert_eq!(info.cuda_available, 0);
                assert_eq!((info.cuda_device_count, info.cuda_driver_version), (0, 0));
            }
        }
        if !cfg!(feature = "cuda") {
            assert_eq!(info.cuda_feature, 0);
            assert!(status.to_str().unwrap().contains("no CUDA back-end"));
        }

        assert_eq!(
            claim_build_info_get(std::ptr::null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        let mut small = claim_build_info {
            struct_size: 8,
            ..claim_build_info::default()
        };
        assert_eq!(claim_build_info_get(&mut small), CLAIM_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("out.struct_size: expected at least 660"));
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let cut: [c_char; 4] = text_to_c("aé€");
        // "a" (1) + "é" (2) fit in 3 bytes + NUL; "€" does not.
        // SAFETY: NUL-terminated by text_to_c.
        let text = unsafe { CStr::from_ptr(cut.as_ptr()) };
        assert_eq!(text.to_str().unwrap(), "aé");
        let nul: [c_char; 8] = text_to_c("ab\0cd");
        // SAFETY: as above.
        assert_eq!(
            unsafe { CStr::from_ptr(nul.as_ptr()) }.to_str().unwrap(),
            "ab"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(claim_abi_version(), 0x0002_0002);
        // SAFETY: a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(claim_version_string()) };
        assert_eq!(v.to_str().unwrap(), crate::VERSION);
    }
}

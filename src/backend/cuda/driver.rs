//! Reaching the CUDA driver without ever crashing: a probe for `libcuda`
//! before cudarc touches it, a panic guard around driver calls, and the
//! mapping of driver errors onto [`crate::Error`].
//!
//! cudarc (with `dynamic-loading`) opens `libcuda` on its first call and
//! panics when the library is missing or lacks a symbol it binds. So every
//! first contact goes through [`guarded`]: it answers from a cached `dlopen`
//! probe when there is no driver, and turns any panic inside cudarc into an
//! [`Error::Device`].

use crate::Error;
use cudarc::driver::{result::DriverError, sys};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// The error when the driver library is absent.
pub(super) const NO_DRIVER: &str = "libcuda.so.1 not found: no NVIDIA driver installed";

/// Whether the driver library can be loaded, probed once per process.
pub(super) fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| ["libcuda.so.1", "libcuda.so"].iter().any(|n| can_dlopen(n)))
}

#[cfg(unix)]
fn can_dlopen(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a NUL-terminated string that lives across the call.
    // `dlopen` only maps the library and runs its initialisers (the driver's
    // are made for being loaded by any process). The handle is deliberately
    // never closed: cudarc opens the same library next, and unloading a
    // driver that may have started threads is not safe.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    !handle.is_null()
}

#[cfg(not(unix))]
fn can_dlopen(_name: &str) -> bool {
    // The back-end targets Linux (`libcuda.so`); elsewhere it reports no driver.
    false
}

/// Runs `f`, which calls the driver through cudarc: fails with
/// [`NO_DRIVER`] when the library is missing, maps driver errors with
/// [`driver_error`] (`what` says what was being done) and a panic inside
/// cudarc (a symbol missing from an old driver, say) to [`Error::Device`].
pub(super) fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, DriverError>,
) -> crate::Result<T> {
    if !driver_present() {
        return Err(Error::Device(NO_DRIVER.to_string()));
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(driver_error(what, e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Error::Device(format!(
                "{what}: the CUDA driver library could not be used ({msg})"
            )))
        }
    }
}

/// The driver's name for an error code (`CUDA_ERROR_…`), falling back to
/// the enum's debug form when the driver cannot name it.
pub(super) fn error_name(e: &DriverError) -> String {
    catch_unwind(AssertUnwindSafe(|| {
        e.error_name()
            .ok()
            .map(|s| s.to_string_lossy().into_owned())
    }))
    .ok()
    .flatten()
    .unwrap_or_else(|| format!("{:?}", e.0))
}

/// Maps a driver error met while doing `what`: out of memory becomes
/// [`Error::OutOfMemory`], anything else [`Error::Device`] with the driver's
/// error name.
pub(super) fn driver_error(what: &str, e: DriverError) -> Error {
    let name = error_name(&e);
    match e.0 {
        sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
            Error::OutOfMemory(format!("{what}: the GPU is out of memory ({name})"))
        }
        sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => Error::Device(format!(
            "{what}: the NVIDIA driver found no CUDA device ({name})"
        )),
        _ => Error::Device(format!("{what}: {name}")),
    }
}

/// Whether a module load failed because the driver cannot use any image in
/// the fatbin for this GPU (no matching SASS and no PTX it can JIT).
pub(super) fn is_image_error(e: &DriverError) -> bool {
    matches!(
        e.0,
        sys::cudaError_enum::CUDA_ERROR_NO_BINARY_FOR_GPU
            | sys::cudaError_enum::CUDA_ERROR_INVALID_PTX
            | sys::cudaError_enum::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            | sys::cudaError_enum::CUDA_ERROR_INVALID_IMAGE
            | sys::cudaError_enum::CUDA_ERROR_JIT_COMPILER_NOT_FOUND
    )
}

/// The installed driver's CUDA version (`major * 1000 + minor * 10`).
pub(super) fn driver_version() -> Result<i32, DriverError> {
    let mut version: std::ffi::c_int = 0;
    // SAFETY: `version` is a valid, writable `int` for the duration of the
    // call, which is all `cuDriverGetVersion` writes.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
    Ok(version)
}

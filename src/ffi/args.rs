//! Checked readers for what C callers pass: structs with `struct_size`,
//! strings, borrowed handles and out-pointers.
//!
//! Each reader turns a bad argument (NULL, a `struct_size` from no release,
//! a string that is not UTF-8) into [`Error::InvalidArgument`] naming the
//! argument, so exports never dereference what they have not checked.

use crate::error::{Error, Result};
use std::ffi::{c_char, CStr};
use std::mem::size_of;

/// A `#[repr(C)]` struct whose first field is `uint32_t struct_size`.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, start with a `u32` size field, and be
/// valid for every bit pattern (integers, floats, raw pointers, arrays of
/// those; no Rust enums, references or `bool`), because [`read_struct`]
/// fills them from the caller's bytes.
pub(crate) unsafe trait CStruct: Copy + Default + super::layout::CLayout {
    /// The type's name in C, for messages.
    const C_NAME: &'static str;
    /// `sizeof` in the first release that had the struct. Fields are only
    /// ever appended, so a caller compiled against that release passes this
    /// size or more; anything smaller is not from any release.
    const FIRST_RELEASE_SIZE: usize;
    /// The same value with its `struct_size` field set to `size`.
    fn with_struct_size(self, size: u32) -> Self;
}

/// Checks a caller's `struct_size` against `T`'s first release.
pub(crate) fn check_struct_size<T: CStruct>(size: u32, name: &str) -> Result<()> {
    if (size as usize) < T::FIRST_RELEASE_SIZE {
        return Err(Error::invalid(format!(
            "{name}.struct_size: expected at least {} (sizeof({}); set it before the call), got {size}",
            T::FIRST_RELEASE_SIZE,
            T::C_NAME
        )));
    }
    Ok(())
}

/// Copies the caller's struct at `ptr` after checking it is not NULL and
/// that its `struct_size` is at least the first release's size. Fields a
/// smaller (older) caller did not pass keep their `Default` values; bytes a
/// larger (newer) caller passed beyond `size_of::<T>()` are not read.
///
/// # Safety
///
/// `ptr` must be NULL or point to at least `struct_size` readable bytes
/// that begin with the `u32` `struct_size`.
pub(crate) unsafe fn read_struct<T: CStruct>(ptr: *const T, name: &str) -> Result<T> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} must not be NULL")));
    }
    // SAFETY: `ptr` is not NULL and, by the caller's contract, starts with
    // the u32 struct_size; read unaligned so a packed caller cannot trip us.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() };
    check_struct_size::<T>(size, name)?;
    let mut value = T::default();
    let len = (size as usize).min(size_of::<T>());
    // SAFETY: the caller promises `size` readable bytes at `ptr`, and `len`
    // is at most that and at most `size_of::<T>()`, the size of `value`.
    // `T: CStruct` is valid for any bytes, so the partial copy leaves a
    // valid value; the regions cannot overlap (`value` is a local).
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), len);
    }
    Ok(value)
}

/// Writes `value` into the caller's struct at `ptr`, which the caller
/// prepared by setting its `struct_size`: checks NULL and the size, then
/// copies `min(struct_size, size_of::<T>())` bytes and leaves the caller's
/// `struct_size` as it was.
///
/// # Safety
///
/// `ptr` must be NULL or point to at least `struct_size` writable bytes that
/// begin with the `u32` `struct_size`.
pub(crate) unsafe fn write_struct<T: CStruct>(ptr: *mut T, value: T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} must not be NULL")));
    }
    // SAFETY: not NULL; starts with the u32 struct_size by contract.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() };
    check_struct_size::<T>(size, name)?;
    let value = value.with_struct_size(size);
    let len = (size as usize).min(size_of::<T>());
    // SAFETY: the caller promises `size` writable bytes at `ptr`; `len` is at
    // most that.
    unsafe { copy_zero_padded(&value, ptr.cast::<u8>(), len) };
    Ok(())
}

/// Copies the first `len` bytes of `value` to `out`, with the padding
/// between its fields written as zeros (a Rust value's padding is
/// uninitialised and must not reach the caller).
///
/// # Safety
///
/// `out` must be writable for `len` bytes, `len` ≤ `size_of::<T>()`, and
/// not overlap `value`.
unsafe fn copy_zero_padded<T: CStruct>(value: &T, out: *mut u8, len: usize) {
    // SAFETY: forwarded contract: `len` bytes at `out`, within `value`.
    unsafe { std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), out, len) };
    for gap in T::padding() {
        let (start, end) = (gap.start.min(len), gap.end.min(len));
        if start < end {
            // SAFETY: start..end lies within the `len` writable bytes.
            unsafe { std::ptr::write_bytes(out.add(start), 0, end - start) };
        }
    }
}

/// What every `claim_<name>_default(out, size)` does: writes the first
/// `min(size, sizeof(T))` bytes of `T::default()` with `struct_size` set to
/// that number, so a caller compiled against an older, smaller struct
/// (passing its own `sizeof`) is never written past. Writes nothing when
/// `out` is NULL or `size` cannot hold the `u32` `struct_size` itself.
///
/// # Safety
///
/// `out` must be NULL or point to at least `size` writable bytes.
pub(crate) unsafe fn write_default<T: CStruct>(out: *mut T, size: usize) {
    if out.is_null() || size < size_of::<u32>() {
        return;
    }
    let len = size.min(size_of::<T>());
    // `len` ≤ size_of::<T>(), far below u32::MAX for every struct here.
    let value = T::default().with_struct_size(len as u32);
    // SAFETY: the caller promises `size` writable bytes at `out`; `len` is at
    // most that and at most the size of `value`, a local (no overlap).
    unsafe { copy_zero_padded(&value, out.cast::<u8>(), len) };
}

/// Reads an optional struct argument: NULL gives `T::default()`, anything
/// else goes through [`read_struct`]. For "NULL = the defaults" pointers
/// such as `claim_aha_params.labels`.
///
/// # Safety
///
/// As [`read_struct`].
pub(crate) unsafe fn read_optional_struct<T: CStruct>(ptr: *const T, name: &str) -> Result<T> {
    if ptr.is_null() {
        return Ok(T::default());
    }
    // SAFETY: forwarded contract.
    unsafe { read_struct(ptr, name) }
}

/// Checks a caller's output struct (not NULL, a `struct_size` from a
/// release) without writing it, so an export can refuse it before doing
/// the work; [`write_struct`] fills it afterwards.
///
/// # Safety
///
/// `ptr` must be NULL or point to at least 4 readable bytes holding the
/// `u32` `struct_size`.
pub(crate) unsafe fn check_out_struct<T: CStruct>(ptr: *const T, name: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} must not be NULL")));
    }
    // SAFETY: not NULL; starts with the u32 struct_size by contract.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() };
    check_struct_size::<T>(size, name)
}

/// Copies `bytes` into the caller's buffer under the size-query protocol
/// of the functions that return documents (`claim_bullseye_render_svg`,
/// `claim_labels_evaluate_json`): `*needed` always receives the size; a
/// NULL `buf` with `cap` 0 is only a query; a `cap` too small fails and
/// writes nothing to `buf`.
///
/// # Safety
///
/// `needed` is NULL or writable for a `usize`; `buf` is NULL or writable
/// for `cap` bytes, not overlapping `bytes`.
pub(crate) unsafe fn copy_out_bytes(
    bytes: &[u8],
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> Result<()> {
    if needed.is_null() {
        return Err(Error::invalid("needed must not be NULL"));
    }
    // SAFETY: `needed` is non-NULL and writable (contract above).
    unsafe { needed.write_unaligned(bytes.len()) };
    if buf.is_null() {
        if cap == 0 {
            return Ok(());
        }
        return Err(Error::invalid(format!(
            "buf must not be NULL when cap ({cap}) is not 0"
        )));
    }
    if cap < bytes.len() {
        return Err(Error::invalid(format!(
            "cap: expected at least {} bytes (see *needed), got {cap}",
            bytes.len()
        )));
    }
    // SAFETY: `buf` is non-NULL and writable for `cap` ≥ bytes.len() bytes
    // and does not overlap `bytes` (contract above).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
    Ok(())
}

/// Borrows a NUL-terminated UTF-8 string argument.
///
/// # Safety
///
/// `ptr` must be NULL or point to a NUL-terminated string that stays
/// unchanged for `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} must not be NULL")));
    }
    // SAFETY: not NULL, NUL-terminated and live for 'a by contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|e| {
        Error::invalid(format!(
            "{name} must be UTF-8, got invalid byte at offset {}",
            e.valid_up_to()
        ))
    })
}

/// Borrows a library-owned handle the caller passed back.
///
/// # Safety
///
/// `ptr` must be NULL or a handle this library returned and that has not
/// been freed, not being freed by another thread during `'a`.
pub(crate) unsafe fn handle_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: a non-NULL `ptr` is a live handle by contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::invalid(format!("{name} must not be NULL")))
}

/// A checked out-parameter for a new handle (`T **out`). Creating it writes
/// NULL to `*out`, so a call that fails (or panics) later leaves the caller
/// with no handle; [`OutHandle::set`] hands the finished handle over.
pub(crate) struct OutHandle<T> {
    out: *mut *mut T,
}

impl<T> OutHandle<T> {
    /// Checks `out` is not NULL and sets `*out = NULL`.
    ///
    /// # Safety
    ///
    /// `out` must be NULL or valid for writing one pointer until `set` or
    /// the end of the call.
    pub(crate) unsafe fn new(out: *mut *mut T, name: &str) -> Result<Self> {
        if out.is_null() {
            return Err(Error::invalid(format!("{name} must not be NULL")));
        }
        // SAFETY: not NULL and writable by contract; unaligned in case the
        // caller's pointer slot is packed.
        unsafe { out.write_unaligned(std::ptr::null_mut()) };
        Ok(OutHandle { out })
    }

    /// Gives the caller ownership of `value` through `*out`.
    pub(crate) fn set(self, value: Box<T>) {
        // SAFETY: `self.out` was checked writable in `new` (same contract).
        unsafe { self.out.write_unaligned(Box::into_raw(value)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a struct that grew a field in a later release.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Params {
        struct_size: u32,
        first: i32,
        added_later: f64,
    }

    impl Default for Params {
        fn default() -> Self {
            Params {
                struct_size: size_of::<Params>() as u32,
                first: 1,
                added_later: 0.5,
            }
        }
    }

    impl crate::ffi::layout::CLayout for Params {
        fn fields() -> Vec<(usize, usize)> {
            vec![(0, 4), (4, 4), (8, 8)]
        }
    }

    // SAFETY: repr(C), starts with u32 struct_size, plain numbers only.
    unsafe impl CStruct for Params {
        const C_NAME: &'static str = "params";
        const FIRST_RELEASE_SIZE: usize = 8;
        fn with_struct_size(self, size: u32) -> Self {
            Params {
                struct_size: size,
                ..self
            }
        }
    }

    /// What a caller compiled against the first release passes.
    #[repr(C)]
    struct ParamsV1 {
        struct_size: u32,
        first: i32,
    }

    #[test]
    fn older_callers_get_defaults_for_missing_fields() {
        let old = ParamsV1 {
            struct_size: 8,
            first: 42,
        };
        // SAFETY: `old` is a live struct of 8 bytes.
        let p =
            unsafe { read_struct::<Params>((&old as *const ParamsV1).cast(), "params") }.unwrap();
        assert_eq!(p.first, 42);
        assert_eq!(p.added_later, 0.5);
    }

    #[test]
    fn newer_callers_are_accepted_and_extra_bytes_ignored() {
        #[repr(C)]
        struct ParamsV3 {
            base: Params,
            unknown: u64,
        }
        let newer = ParamsV3 {
            base: Params {
                struct_size: size_of::<ParamsV3>() as u32,
                first: 3,
                added_later: 2.0,
            },
            unknown: u64::MAX,
        };
        // SAFETY: `newer` is live and holds struct_size bytes.
        let p = unsafe { read_struct::<Params>(&newer.base, "params") }.unwrap();
        assert_eq!((p.first, p.added_later), (3, 2.0));
    }

    #[test]
    fn too_small_or_null_structs_are_rejected() {
        for size in [0u32, 4, 7] {
            let tiny = ParamsV1 {
                struct_size: size,
                first: 1,
            };
            // SAFETY: `tiny` is live; read_struct reads at most 8 bytes of it
            // and only after accepting the size, which it must not.
            let err = unsafe { read_struct::<Params>((&tiny as *const ParamsV1).cast(), "params") }
                .unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)));
            let msg = err.to_string();
            assert!(
                msg.contains("params.struct_size: expected at least 8"),
                "{msg}"
            );
            assert!(msg.contains(&format!("got {size}")), "{msg}");
        }
        // SAFETY: NULL is allowed by the contract.
        let err = unsafe { read_struct::<Params>(std::ptr::null(), "params") }.unwrap_err();
        assert!(err.to_string().contains("params must not be NULL"));
    }

    #[test]
    fn writes_stop_at_the_callers_size() {
        #[repr(C)]
        struct Guarded {
            v1: ParamsV1,
            guard: u64,
        }
        let mut dst = Guarded {
            v1: ParamsV1 {
                struct_size: 8,
                first: 0,
            },
            guard: 0xDEAD_BEEF,
        };
        let value = Params {
            struct_size: 16,
            first: 9,
            added_later: 7.0,
        };
        // SAFETY: `dst` is live and holds at least 8 writable bytes.
        unsafe { write_struct::<Params>((&mut dst.v1 as *mut ParamsV1).cast(), value, "out") }
            .unwrap();
        assert_eq!((dst.v1.struct_size, dst.v1.first), (8, 9));
        assert_eq!(dst.guard, 0xDEAD_BEEF, "wrote past the caller's struct");
    }

    #[test]
    fn defaults_stop_at_the_callers_size() {
        #[repr(C)]
        struct Guarded {
            v1: ParamsV1,
            guard: [u8; 16],
        }
        for size in [0usize, 3, 4, 8] {
            let mut dst = Guarded {
                v1: ParamsV1 {
                    struct_size: 0xFFFF_FFFF,
                    first: -5,
                },
                guard: [0xA5; 16],
            };
            // SAFETY: `dst` holds at least `size` ≤ 8 writable bytes.
            unsafe { write_default::<Params>((&mut dst.v1 as *mut ParamsV1).cast(), size) };
            assert_eq!(dst.guard, [0xA5; 16], "wrote past {size} bytes");
            if size < 4 {
                assert_eq!((dst.v1.struct_size, dst.v1.first), (0xFFFF_FFFF, -5));
            } else {
                assert_eq!(dst.v1.struct_size as usize, size);
                assert_eq!(dst.v1.first, if size >= 8 { 1 } else { -5 });
            }
        }
        let mut full = Params {
            struct_size: 0,
            first: 0,
            added_later: 0.0,
        };
        // SAFETY: `full` is a whole Params; a larger size is clamped to it.
        unsafe { write_default(&mut full, 1000) };
        assert_eq!(full, Params::default());
        // SAFETY: NULL is allowed by the contract.
        unsafe { write_default::<Params>(std::ptr::null_mut(), 16) };
        // SAFETY: NULL gives the defaults without reading.
        let p = unsafe { read_optional_struct::<Params>(std::ptr::null(), "p") }.unwrap();
        assert_eq!(p, Params::default());
    }

    #[test]
    fn output_structs_are_checked_before_the_work() {
        let mut old = ParamsV1 {
            struct_size: 8,
            first: 0,
        };
        // SAFETY: `old` is a live struct of 8 bytes.
        unsafe { check_out_struct::<Params>((&mut old as *mut ParamsV1).cast(), "out") }.unwrap();
        old.struct_size = 4;
        // SAFETY: as above.
        let msg = unsafe { check_out_struct::<Params>((&old as *const ParamsV1).cast(), "out") }
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("out.struct_size: expected at least 8"),
            "{msg}"
        );
        // SAFETY: NULL is allowed by the contract.
        let msg = unsafe { check_out_struct::<Params>(std::ptr::null(), "out") }
            .unwrap_err()
            .to_string();
        assert!(msg.contains("out must not be NULL"), "{msg}");
    }

    #[test]
    fn strings_are_checked() {
        // SAFETY: NULL, then live NUL-terminated literals.
        unsafe {
            assert!(c_str(std::ptr::null(), "path")
                .unwrap_err()
                .to_string()
                .contains("path must not be NULL"));
            assert_eq!(c_str(c"a.nii".as_ptr(), "path").unwrap(), "a.nii");
            let bad = c"ab\xff";
            let msg = c_str(bad.as_ptr(), "path").unwrap_err().to_string();
            assert!(msg.contains("UTF-8") && msg.contains("offset 2"), "{msg}");
        }
    }

    #[test]
    fn out_handles_start_null() {
        let mut out: *mut u8 = std::ptr::NonNull::dangling().as_ptr();
        // SAFETY: `out` is a live local.
        let handle = unsafe { OutHandle::new(&mut out, "out") }.unwrap();
        assert!(out.is_null());
        handle.set(Box::new(5u8));
        // SAFETY: set stored a Box pointer.
        let boxed = unsafe { Box::from_raw(out) };
        assert_eq!(*boxed, 5);
        // SAFETY: NULL is allowed by the contract.
        assert!(unsafe { OutHandle::<u8>::new(std::ptr::null_mut(), "out") }.is_err());
    }
}

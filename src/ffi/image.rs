//! `claim_image`: a library-owned volume for file I/O in harnesses.

use super::args::{c_str, handle_ref, write_struct, OutHandle};
use super::boundary;
use super::status::claim_status;
use super::volume::{claim_volume, dtype_from_c, shape_from_c, try_vec, volume_to_c};
use crate::error::Result;
use crate::volume::{checked_voxel_count, DType, Geometry, Image, Volume};
use std::ffi::{c_char, c_void};
use std::path::Path;

/// An image owned by the library: voxels, dtype and geometry. Opaque.
///
/// Created by `claim_image_read` or `claim_image_create`, freed by
/// `claim_image_free`. Calls that only read it (`claim_image_write`,
/// `claim_image_view`) may run on several threads at once; free it only when
/// no call is using it, and do not write voxels through a view while another
/// call reads the image.
pub struct claim_image {
    image: Image,
    /// Address of the voxel buffer, taken once from exclusive access when
    /// the handle is made, so views handed to C may be written through while
    /// the library itself only ever reads `image`. The buffer is heap memory
    /// that never moves for the life of the handle.
    data: *mut c_void,
}

/// Boxes `image` as a handle, making its voxel buffer contiguous first.
fn new_handle(mut image: Image) -> Box<claim_image> {
    fn buffer<T: Clone>(v: &mut Volume<T>) -> *mut c_void {
        if !v.data.is_standard_layout() {
            v.data = v.data.as_standard_layout().into_owned();
        }
        v.data.as_mut_ptr().cast()
    }
    let data = match &mut image {
        Image::U8(v) => buffer(v),
        Image::I16(v) => buffer(v),
        Image::U16(v) => buffer(v),
        Image::I32(v) => buffer(v),
        Image::F32(v) => buffer(v),
    };
    Box::new(claim_image { image, data })
}

/// A zero-filled image, reporting a refused allocation as `OutOfMemory`
/// instead of aborting the host.
fn zeroed_image(dtype: DType, dims: [usize; 3], geometry: Geometry) -> Result<Image> {
    fn zeros<T: Clone + Default>(dims: [usize; 3], geometry: Geometry) -> Result<Volume<T>> {
        let count = checked_voxel_count(dims)?;
        let mut voxels = try_vec::<T>(count, "image")?;
        voxels.resize(count, T::default());
        Volume::from_vec(dims, voxels, geometry)
    }
    Ok(match dtype {
        DType::U8 => Image::U8(zeros(dims, geometry)?),
        DType::I16 => Image::I16(zeros(dims, geometry)?),
        DType::U16 => Image::U16(zeros(dims, geometry)?),
        DType::I32 => Image::I32(zeros(dims, geometry)?),
        DType::F32 => Image::F32(zeros(dims, geometry)?),
    })
}

/// The default voxel limit per volume (2^28 voxels: 1 GiB as float32).
pub const CLAIM_MAX_VOXELS_DEFAULT: u64 = 1 << 28;

/// Sets the largest number of voxels a volume may have, for the whole
/// process: NIfTI files over it are refused from their header, before
/// anything is decompressed, and so are callers' volumes over it, with
/// `CLAIM_ERR_OUT_OF_MEMORY` and a message naming the dims and the limit.
/// The default is `CLAIM_MAX_VOXELS_DEFAULT`, or the environment variable
/// `CLAIM_MAX_VOXELS` when set (read once, at first use). `max_voxels`:
/// 1 to 2^32, or 0 to go back to the environment's or the default.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (more than 2^32; the limit is then
/// unchanged). Thread-safe: calls running meanwhile see the old or the new
/// limit.
#[no_mangle]
pub extern "C" fn claim_max_voxels_set(max_voxels: u64) -> claim_status {
    boundary::call("claim_max_voxels_set", || {
        crate::limits::set_max_voxels(max_voxels).map(|_| ())
    })
}

/// The voxel limit in force (see `claim_max_voxels_set`). Thread-safe; does
/// not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_max_voxels_get() -> u64 {
    boundary::call_infallible(
        "claim_max_voxels_get",
        crate::limits::DEFAULT_MAX_VOXELS,
        crate::limits::max_voxels,
    )
}

/// Reads a NIfTI-1 file (`.nii`, or gzip-compressed `.nii.gz`) into a new
/// image. Geometry is read the way ITK reads it (LPS).
///
/// `path`: NUL-terminated UTF-8 file name, borrowed for the call.
/// `out`: receives the new image, owned by the caller and freed with
/// `claim_image_free`; set to NULL on every failure.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL or non-UTF-8 argument),
/// `CLAIM_ERR_IO` (cannot open or read: missing, an empty path, a folder,
/// no permission), `CLAIM_ERR_FORMAT` (not a NIfTI file, empty, truncated,
/// corrupt compressed data, unsupported contents),
/// `CLAIM_ERR_OUT_OF_MEMORY` (more voxels than `claim_max_voxels_get()`,
/// refused before decompressing, or an allocation refused).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn claim_image_read(
    path: *const c_char,
    out: *mut *mut claim_image,
) -> claim_status {
    boundary::call("claim_image_read", || {
        // SAFETY: `out` is NULL or writable for one pointer (header contract).
        let out = unsafe { OutHandle::new(out, "out") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (header contract).
        let path = unsafe { c_str(path, "path") }?;
        let image = crate::io::read_image(Path::new(path))?;
        out.set(new_handle(image));
        Ok(())
    })
}

/// Writes `img` to a NIfTI-1 file; gzip-compressed when `path` ends in
/// `.gz`. An existing file is replaced.
///
/// `img`: borrowed for the call. `path`: NUL-terminated UTF-8, borrowed.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL or non-UTF-8 argument),
/// `CLAIM_ERR_IO` (cannot create or write the file),
/// `CLAIM_ERR_UNSUPPORTED` (an axis longer than NIfTI-1's 32767 voxels).
/// Thread-safe; several threads may write the same image at once.
#[no_mangle]
pub extern "C" fn claim_image_write(img: *const claim_image, path: *const c_char) -> claim_status {
    boundary::call("claim_image_write", || {
        // SAFETY: `img` is NULL or a live handle (header contract).
        let handle = unsafe { handle_ref(img, "img") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string (header contract).
        let path = unsafe { c_str(path, "path") }?;
        crate::io::write_image(&handle.image, Path::new(path))
    })
}

/// Creates a zero-filled image of `voxel_type` with the dims, spacing, origin and
/// direction of `like`.
///
/// `like`: borrowed for the call; only `struct_size`, `dims` and the
/// geometry fields are read (`like->voxel_type` and `like->data` are
/// ignored, so `data` may be NULL). `voxel_type`: a `CLAIM_VOXEL_*` value. `out`: receives
/// the new image, owned by the caller and freed with `claim_image_free`; set
/// to NULL on every failure. Fill it through `claim_image_view`.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, zero or
/// overflowing dims, bad geometry, unknown dtype),
/// `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_image_create(
    like: *const claim_volume,
    voxel_type: super::volume::claim_voxel_type,
    out: *mut *mut claim_image,
) -> claim_status {
    boundary::call("claim_image_create", || {
        // SAFETY: `out` is NULL or writable for one pointer (header contract).
        let out = unsafe { OutHandle::new(out, "out") }?;
        // SAFETY: `like` is NULL or a claim_volume of struct_size bytes.
        let (dims, geometry) = unsafe { shape_from_c(like, "like") }?;
        let dtype = dtype_from_c(voxel_type, "voxel_type")?;
        out.set(new_handle(zeroed_image(dtype, dims, geometry)?));
        Ok(())
    })
}

/// Describes `img` in `*out_view`: dtype, dims, geometry and `data`
/// pointing at the image's own voxels (i fastest).
///
/// `img`: borrowed for the call. `out_view`: caller's struct whose
/// `struct_size` the caller sets first; the library fills the rest. The
/// `data` pointer is owned by the image, stays valid until
/// `claim_image_free(img)`, and may be used to read or write voxels (not
/// while another call reads the same image).
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, `struct_size` smaller than
/// the first release's `sizeof(claim_volume)`). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_image_view(
    img: *const claim_image,
    out_view: *mut claim_volume,
) -> claim_status {
    boundary::call("claim_image_view", || {
        // SAFETY: `img` is NULL or a live handle (header contract).
        let handle = unsafe { handle_ref(img, "img") }?;
        let view = volume_to_c(&handle.image, handle.data);
        // SAFETY: `out_view` is NULL or writable for struct_size bytes.
        unsafe { write_struct(out_view, view, "out_view") }
    })
}

/// Frees an image and its voxels; every view of it becomes invalid.
/// `img` may be NULL (nothing happens). Must not be called while another
/// call uses `img`, nor twice. Does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_image_free(img: *mut claim_image) {
    boundary::call_infallible("claim_image_free", (), || {
        if !img.is_null() {
            // SAFETY: a non-NULL `img` was made by Box::into_raw in
            // OutHandle::set and is freed once (header contract).
            drop(unsafe { Box::from_raw(img) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use crate::ffi::volume::{CLAIM_VOXEL_F32, CLAIM_VOXEL_I16};
    use std::ptr::{null, null_mut};

    fn like(dims: [u64; 3]) -> claim_volume {
        claim_volume {
            dims,
            spacing: [1.25, 1.25, 2.0],
            origin: [-66.875, 86.875, -55.0],
            direction: [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
            ..claim_volume::default()
        }
    }

    #[test]
    fn create_view_and_write_through_the_view() {
        let shape = like([4, 3, 2]);
        let mut img: *mut claim_image = null_mut();
        assert_eq!(
            claim_image_create(&shape, CLAIM_VOXEL_I16, &mut img),
            CLAIM_OK
        );
        assert!(!img.is_null());
        assert_eq!(last_error(), "");

        let mut view = claim_volume {
            struct_size: 160,
            ..claim_volume::default()
        };
        assert_eq!(claim_image_view(img, &mut view), CLAIM_OK);
        assert_eq!((view.voxel_type, view.dims), (CLAIM_VOXEL_I16, [4, 3, 2]));
        assert_eq!(
            (view.spacing, view.origin, view.direction),
            (shape.spacing, shape.origin, shape.direction)
        );
        // SAFETY: the view's data holds 24 i16 owned by `img`, alive until freed.
        let voxels = unsafe { std::slice::from_raw_parts_mut(view.data.cast::<i16>(), 24) };
        assert!(voxels.iter().all(|v| *v == 0));
        voxels[5] = -7;
        // SAFETY: `img` is a live handle from claim_image_create.
        let handle = unsafe { &*img };
        let Image::I16(vol) = &handle.image else {
            panic!("dtype")
        };
        assert_eq!(*vol.at(1, 1, 0), -7);
        claim_image_free(img);
        claim_image_free(null_mut());
    }

    #[test]
    fn bad_arguments_fail_cleanly_without_a_handle() {
        let mut img: *mut claim_image = std::ptr::NonNull::dangling().as_ptr();
        assert_eq!(
            claim_image_create(null(), CLAIM_VOXEL_F32, &mut img),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(img.is_null());
        assert!(
            last_error().starts_with("claim_image_create: invalid argument: like must not be NULL")
        );

        let huge = like([1 << 40, 1 << 40, 1 << 40]);
        img = std::ptr::NonNull::dangling().as_ptr();
        assert_eq!(
            claim_image_create(&huge, CLAIM_VOXEL_F32, &mut img),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(img.is_null());
        assert!(last_error().contains("like.dims"), "{}", last_error());

        let shape = like([2, 2, 2]);
        assert_eq!(
            claim_image_create(&shape, 17, &mut img),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("voxel_type: expected a CLAIM_VOXEL_* value"));
        assert_eq!(
            claim_image_create(&shape, CLAIM_VOXEL_F32, null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out must not be NULL"));

        assert_eq!(
            claim_image_create(&shape, CLAIM_VOXEL_F32, &mut img),
            CLAIM_OK
        );
        let mut view = claim_volume {
            struct_size: 8,
            ..claim_volume::default()
        };
        assert_eq!(claim_image_view(img, &mut view), CLAIM_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains("out_view.struct_size: expected at least 160"),
            "{}",
            last_error()
        );
        assert_eq!(view.dims, [0; 3], "a refused view must not be written");
        assert_eq!(
            claim_image_view(null(), &mut view),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            claim_image_view(img, null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(claim_image_write(img, null()), CLAIM_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("path must not be NULL"));
        assert_eq!(
            claim_image_write(null(), c"x.nii".as_ptr()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        claim_image_free(img);

        img = std::ptr::NonNull::dangling().as_ptr();
        assert_eq!(
            claim_image_read(null(), &mut img),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(img.is_null());
        img = std::ptr::NonNull::dangling().as_ptr();
        let status = claim_image_read(c"/nonexistent/claim/none.nii.gz".as_ptr(), &mut img);
        assert_ne!(status, CLAIM_OK);
        assert!(img.is_null());
        assert!(last_error().contains("none.nii.gz"), "{}", last_error());
    }
}

//! `claim_voxel_type` and `claim_volume`: volumes in the caller's memory, and the
//! checked conversions between them and [`Image`] that every area taking or
//! filling volumes uses.

use super::args::{read_struct, write_struct, CStruct};
use crate::error::{Error, Result, ResultExt};
use crate::volume::{
    checked_voxel_count, CropPlacement, CroppedLabels, DType, Geometry, Image, LabelVoxel, Volume,
    LABEL_CROP_MARGIN,
};
use std::ffi::c_void;
use std::mem::{align_of, size_of};

/// Voxel type of a `claim_volume` (a `typedef int32_t`; see `claim_status`
/// for why codes are not a C `enum`). The numbers never change.
pub type claim_voxel_type = i32;

/// Unsigned 8-bit voxels (`uint8_t`).
pub const CLAIM_VOXEL_U8: claim_voxel_type = 0;
/// Signed 16-bit voxels (`int16_t`).
pub const CLAIM_VOXEL_I16: claim_voxel_type = 1;
/// Unsigned 16-bit voxels (`uint16_t`).
pub const CLAIM_VOXEL_U16: claim_voxel_type = 2;
/// Signed 32-bit voxels (`int32_t`).
pub const CLAIM_VOXEL_I32: claim_voxel_type = 3;
/// 32-bit float voxels (`float`).
pub const CLAIM_VOXEL_F32: claim_voxel_type = 4;

/// A 3-D volume in memory owned by someone else (a view): voxel buffer plus
/// its physical geometry, as ITK defines it.
///
/// Set `struct_size = sizeof(claim_volume)`. World position (LPS, mm) of
/// voxel (i, j, k) is `origin + direction · diag(spacing) · (i, j, k)`.
///
/// As an input, every field is checked: a known `voxel_type`, `dims` ≥ 1 with at
/// most 2^32 voxels, finite `spacing` > 0, finite `origin`, finite
/// orthonormal `direction` (columns unit length and perpendicular within
/// 1e-4), `data` not NULL and aligned for `voxel_type`. The buffer is only read
/// during the call. As an output, the caller allocates `data`; the library
/// checks `voxel_type`, `dims` and `data`, writes the voxels and sets `spacing`,
/// `origin` and `direction` to those of the result.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct claim_volume {
    /// `sizeof(claim_volume)`, set by the caller.
    pub struct_size: u32,
    /// Voxel type, a `CLAIM_VOXEL_*` value.
    pub voxel_type: claim_voxel_type,
    /// Number of voxels along i (fastest), j, k: ITK / NIfTI buffer order.
    pub dims: [u64; 3],
    /// Voxel size along i, j, k in mm.
    pub spacing: [f64; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0), as ITK.
    pub origin: [f64; 3],
    /// Row-major 3×3; column c is the LPS unit vector of voxel axis c
    /// (i, j, k), as ITK's `GetDirection()`.
    pub direction: [f64; 9],
    /// Contiguous voxels, `dims[0] * dims[1] * dims[2]` elements of `voxel_type`,
    /// i fastest.
    pub data: *mut c_void,
}

impl Default for claim_volume {
    fn default() -> Self {
        claim_volume {
            struct_size: size_of::<claim_volume>() as u32,
            voxel_type: CLAIM_VOXEL_U8,
            dims: [0; 3],
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            data: std::ptr::null_mut(),
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size, and holds only integers,
// floats and a raw pointer, all valid for any bit pattern.
unsafe impl CStruct for claim_volume {
    const C_NAME: &'static str = "claim_volume";
    const FIRST_RELEASE_SIZE: usize = 160;
    fn with_struct_size(self, size: u32) -> Self {
        claim_volume {
            struct_size: size,
            ..self
        }
    }
}

/// The Rust voxel type of a C dtype code.
pub(crate) fn dtype_from_c(dtype: claim_voxel_type, name: &str) -> Result<DType> {
    Ok(match dtype {
        CLAIM_VOXEL_U8 => DType::U8,
        CLAIM_VOXEL_I16 => DType::I16,
        CLAIM_VOXEL_U16 => DType::U16,
        CLAIM_VOXEL_I32 => DType::I32,
        CLAIM_VOXEL_F32 => DType::F32,
        other => {
            return Err(Error::invalid(format!(
                "{name}: expected a CLAIM_VOXEL_* value (0..=4), got {other}"
            )))
        }
    })
}

/// The C dtype code of a Rust voxel type.
pub(crate) fn dtype_to_c(dtype: DType) -> claim_voxel_type {
    match dtype {
        DType::U8 => CLAIM_VOXEL_U8,
        DType::I16 => CLAIM_VOXEL_I16,
        DType::U16 => CLAIM_VOXEL_U16,
        DType::I32 => CLAIM_VOXEL_I32,
        DType::F32 => CLAIM_VOXEL_F32,
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::U8 => "CLAIM_VOXEL_U8",
        DType::I16 => "CLAIM_VOXEL_I16",
        DType::U16 => "CLAIM_VOXEL_U16",
        DType::I32 => "CLAIM_VOXEL_I32",
        DType::F32 => "CLAIM_VOXEL_F32",
    }
}

/// `a×b×c`, as messages show dims.
pub(crate) fn dims_text(dims: [usize; 3]) -> String {
    format!("{}×{}×{}", dims[0], dims[1], dims[2])
}

/// Checked dims of a caller's volume: each ≥ 1, product ≤ `MAX_VOXELS`.
pub(crate) fn dims_from_c(dims: [u64; 3], name: &str) -> Result<[usize; 3]> {
    let mut out = [0usize; 3];
    for (axis, (o, d)) in out.iter_mut().zip(dims).enumerate() {
        *o = usize::try_from(d).map_err(|_| {
            Error::invalid(format!(
                "{name}.dims[{axis}] = {d} does not fit this platform"
            ))
        })?;
    }
    checked_voxel_count(out).with_context(|| format!("{name}.dims"))?;
    crate::limits::check_voxels(&dims, &format!("{name}.dims"))?;
    Ok(out)
}

/// Checked geometry of a caller's volume (finite positive spacing, finite
/// origin, finite orthonormal direction).
pub(crate) fn geometry_from_c(volume: &claim_volume, name: &str) -> Result<Geometry> {
    let d = volume.direction;
    let geometry = Geometry {
        spacing: volume.spacing,
        origin: volume.origin,
        direction: [[d[0], d[1], d[2]], [d[3], d[4], d[5]], [d[6], d[7], d[8]]],
    };
    geometry.validate(name)?;
    Ok(geometry)
}

/// Writes `geometry` into the geometry fields of a C volume.
pub(crate) fn set_geometry(volume: &mut claim_volume, geometry: &Geometry) {
    volume.spacing = geometry.spacing;
    volume.origin = geometry.origin;
    // Row-major in both: the 3×3 rows laid end to end.
    volume
        .direction
        .copy_from_slice(geometry.direction.as_flattened());
}

/// A C volume describing `image` (dims, geometry, dtype) with `data` set to
/// `data`.
pub(crate) fn volume_to_c(image: &Image, data: *mut c_void) -> claim_volume {
    let mut volume = claim_volume {
        voxel_type: dtype_to_c(image.dtype()),
        dims: image.dims().map(|d| d as u64),
        data,
        ..claim_volume::default()
    };
    set_geometry(&mut volume, image.geometry());
    volume
}

/// A `Vec` with room for `count` elements, or `OutOfMemory` instead of an abort.
pub(crate) fn try_vec<T>(count: usize, name: &str) -> Result<Vec<T>> {
    crate::limits::try_vec(count, &format!("{name}: the voxels"))
}

fn check_data<T>(data: *const c_void, name: &str) -> Result<()> {
    if data.is_null() {
        return Err(Error::invalid(format!("{name}.data must not be NULL")));
    }
    if (data as usize) % align_of::<T>() != 0 {
        return Err(Error::invalid(format!(
            "{name}.data: expected an address aligned to {} bytes for its dtype, got {data:p}",
            align_of::<T>()
        )));
    }
    Ok(())
}

/// Copies `dims`' worth of `T` voxels from the caller's buffer.
///
/// # Safety
///
/// `data` must be NULL or point to `dims[0] * dims[1] * dims[2]` readable
/// elements of `T`.
unsafe fn copy_voxels<T: Copy + Default>(
    data: *const c_void,
    dims: [usize; 3],
    geometry: Geometry,
    name: &str,
) -> Result<Volume<T>> {
    check_data::<T>(data, name)?;
    let count = checked_voxel_count(dims)?;
    let mut voxels = try_vec::<T>(count, name)?;
    // SAFETY: `data` is non-NULL and aligned (checked above) and holds
    // `count` elements of T by the caller's contract; `count` ≤ MAX_VOXELS,
    // so the byte length fits isize.
    let source = unsafe { std::slice::from_raw_parts(data.cast::<T>(), count) };
    voxels.extend_from_slice(source);
    Volume::from_vec(dims, voxels, geometry)
}

/// Reads a caller's input volume into an owned [`Image`], checking
/// everything listed on [`claim_volume`]. `name` names the argument in
/// messages (e.g. `"labels"`).
///
/// Copying decouples the library's work from the caller's buffer, so an
/// output may alias an input.
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_volume` of `struct_size` bytes
/// whose `data` (if not NULL) holds `dims` voxels of `dtype`.
pub(crate) unsafe fn image_from_c(ptr: *const claim_volume, name: &str) -> Result<Image> {
    // SAFETY: forwarded contract.
    let volume = unsafe { read_struct(ptr, name) }?;
    let dtype = dtype_from_c(volume.voxel_type, &format!("{name}.voxel_type"))?;
    let dims = dims_from_c(volume.dims, name)?;
    let geometry = geometry_from_c(&volume, name)?;
    let data = volume.data as *const c_void;
    // SAFETY (all arms): `data` holds `dims` voxels of `dtype` by contract.
    Ok(match dtype {
        DType::U8 => Image::U8(unsafe { copy_voxels(data, dims, geometry, name) }?),
        DType::I16 => Image::I16(unsafe { copy_voxels(data, dims, geometry, name) }?),
        DType::U16 => Image::U16(unsafe { copy_voxels(data, dims, geometry, name) }?),
        DType::I32 => Image::I32(unsafe { copy_voxels(data, dims, geometry, name) }?),
        DType::F32 => Image::F32(unsafe { copy_voxels(data, dims, geometry, name) }?),
    })
}

/// Reads a caller's label map (any dtype; float labels must be integral).
///
/// # Safety
///
/// As [`image_from_c`].
pub(crate) unsafe fn labels_from_c(ptr: *const claim_volume, name: &str) -> Result<Volume<i32>> {
    // SAFETY: forwarded contract.
    let image = unsafe { image_from_c(ptr, name) }?;
    image.to_labels().context(name)
}

/// Reads a caller's label map as the box around its labelled voxels
/// ([`CroppedLabels`], margin [`LABEL_CROP_MARGIN`]) straight from the
/// caller's buffer: only the box is copied, as i32, so a large field of
/// view costs nothing beyond the caller's own buffer. Checks as
/// [`labels_from_c`].
///
/// # Safety
///
/// As [`image_from_c`].
pub(crate) unsafe fn labels_cropped_from_c(
    ptr: *const claim_volume,
    name: &str,
) -> Result<CroppedLabels> {
    // SAFETY: forwarded contract.
    let volume = unsafe { read_struct(ptr, name) }?;
    let dtype = dtype_from_c(volume.voxel_type, &format!("{name}.voxel_type"))?;
    let dims = dims_from_c(volume.dims, name)?;
    let geometry = geometry_from_c(&volume, name)?;
    let data = volume.data as *const c_void;
    // SAFETY (all arms): `data` holds `dims` voxels of `dtype` by contract.
    match dtype {
        DType::U8 => unsafe { crop_voxels::<u8>(data, dims, geometry, name) },
        DType::I16 => unsafe { crop_voxels::<i16>(data, dims, geometry, name) },
        DType::U16 => unsafe { crop_voxels::<u16>(data, dims, geometry, name) },
        DType::I32 => unsafe { crop_voxels::<i32>(data, dims, geometry, name) },
        DType::F32 => unsafe { crop_voxels::<f32>(data, dims, geometry, name) },
    }
}

/// [`CroppedLabels::from_voxels`] of the caller's buffer.
///
/// # Safety
///
/// As [`copy_voxels`].
unsafe fn crop_voxels<T: LabelVoxel>(
    data: *const c_void,
    dims: [usize; 3],
    geometry: Geometry,
    name: &str,
) -> Result<CroppedLabels> {
    check_data::<T>(data, name)?;
    let count = checked_voxel_count(dims)?;
    // SAFETY: `data` is non-NULL and aligned (checked above) and holds
    // `count` elements of T by the caller's contract; `count` ≤ MAX_VOXELS,
    // so the byte length fits isize. The slice is dropped before any output
    // is written, so an output aliasing this input is never read through it.
    let source = unsafe { std::slice::from_raw_parts(data.cast::<T>(), count) };
    CroppedLabels::from_voxels(source, dims, geometry, LABEL_CROP_MARGIN).context(name)
}

/// Reads dims and geometry of a caller's volume without looking at `dtype`
/// or `data` (for "shaped like" arguments).
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_volume` of `struct_size` bytes.
pub(crate) unsafe fn shape_from_c(
    ptr: *const claim_volume,
    name: &str,
) -> Result<([usize; 3], Geometry)> {
    // SAFETY: forwarded contract.
    let volume = unsafe { read_struct(ptr, name) }?;
    Ok((
        dims_from_c(volume.dims, name)?,
        geometry_from_c(&volume, name)?,
    ))
}

/// A voxel type values can be converted into without loss, or refused.
trait Voxel: Copy {
    const DTYPE: DType;
    const ZERO: Self;
    fn to_f64(self) -> f64;
    /// `Some` when `v` is exactly representable.
    fn from_f64_exact(v: f64) -> Option<Self>;
}

macro_rules! integer_voxel {
    ($t:ty, $dtype:expr) => {
        impl Voxel for $t {
            const DTYPE: DType = $dtype;
            const ZERO: Self = 0;
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            fn from_f64_exact(v: f64) -> Option<Self> {
                // NaN fails both comparisons; the fract test refuses 2.5.
                let in_range = v >= f64::from(<$t>::MIN) && v <= f64::from(<$t>::MAX);
                (in_range && v.fract() == 0.0).then(|| v as $t)
            }
        }
    };
}
integer_voxel!(u8, DType::U8);
integer_voxel!(i16, DType::I16);
integer_voxel!(u16, DType::U16);
integer_voxel!(i32, DType::I32);

impl Voxel for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: Self = 0.0;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64_exact(v: f64) -> Option<Self> {
        let f = v as f32;
        (f64::from(f) == v || v.is_nan()).then_some(f)
    }
}

/// A caller's output volume, checked and ready to be filled once.
pub(crate) struct OutVolume {
    ptr: *mut claim_volume,
    view: claim_volume,
    dims: [usize; 3],
    dtype: DType,
    name: String,
}

/// Checks a caller's output volume: struct_size, a known `dtype`, dims and a
/// non-NULL aligned `data`. Its geometry fields are not read: the library
/// writes them.
///
/// # Safety
///
/// `ptr` must be NULL or point to a writable `claim_volume` of
/// `struct_size` bytes whose `data` (if not NULL) has room for `dims` voxels
/// of `dtype`, all valid until the end of the call.
pub(crate) unsafe fn out_volume_from_c(ptr: *mut claim_volume, name: &str) -> Result<OutVolume> {
    // SAFETY: forwarded contract.
    let view = unsafe { read_struct(ptr.cast_const(), name) }?;
    let dtype = dtype_from_c(view.voxel_type, &format!("{name}.voxel_type"))?;
    let dims = dims_from_c(view.dims, name)?;
    match dtype {
        DType::U8 => check_data::<u8>(view.data, name)?,
        DType::I16 => check_data::<i16>(view.data, name)?,
        DType::U16 => check_data::<u16>(view.data, name)?,
        DType::I32 => check_data::<i32>(view.data, name)?,
        DType::F32 => check_data::<f32>(view.data, name)?,
    }
    Ok(OutVolume {
        ptr,
        view,
        dims,
        dtype,
        name: name.to_owned(),
    })
}

impl OutVolume {
    /// Dims `[ni, nj, nk]` the caller allocated.
    #[cfg(test)]
    pub(crate) fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The voxel type the caller asked for.
    #[cfg(test)]
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Fails unless every value of `values` fits the caller's dtype
    /// exactly; `source` says where they come from (e.g. `"params.labels"`).
    /// Lets an export refuse an output before doing the work.
    pub(crate) fn expect_holds(&self, values: &[i32], source: &str) -> Result<()> {
        let fits = |v: f64| match self.dtype {
            DType::U8 => u8::from_f64_exact(v).is_some(),
            DType::I16 => i16::from_f64_exact(v).is_some(),
            DType::U16 => u16::from_f64_exact(v).is_some(),
            DType::I32 => i32::from_f64_exact(v).is_some(),
            DType::F32 => f32::from_f64_exact(v).is_some(),
        };
        match values.iter().find(|v| !fits(f64::from(**v))) {
            Some(v) => Err(Error::invalid(format!(
                "{}.voxel_type: {} cannot hold the value {v} of {source}",
                self.name,
                dtype_name(self.dtype)
            ))),
            None => Ok(()),
        }
    }

    /// Fails unless the caller's dims are `dims`; `source` says where the
    /// expected dims come from (e.g. `"labels"`).
    pub(crate) fn expect_dims(&self, dims: [usize; 3], source: &str) -> Result<()> {
        if self.dims != dims {
            return Err(Error::invalid(format!(
                "{}.dims: expected {} (the dims of {source}), got {}",
                self.name,
                dims_text(dims),
                dims_text(self.dims)
            )));
        }
        Ok(())
    }

    /// Writes `image` into the caller's buffer, converting to the caller's
    /// dtype when every value converts exactly (else nothing is written), and
    /// sets the caller's geometry fields to the image's.
    pub(crate) fn write(self, image: &Image, source: &str) -> Result<()> {
        let placement = CropPlacement::whole(image.dims(), *image.geometry());
        self.write_in_box(image, &placement, source)
    }

    /// Writes `part`, the box `placement` of a map, into the caller's
    /// buffer of the full map's dims: 0 outside the box. Converts as
    /// [`OutVolume::write`] (a value that does not fit leaves the buffer
    /// untouched) and sets the caller's geometry to the full map's.
    pub(crate) fn write_in_box(
        self,
        part: &Image,
        placement: &CropPlacement,
        source: &str,
    ) -> Result<()> {
        self.expect_dims(placement.full_dims, source)?;
        if part.dims() != placement.dims {
            return Err(Error::Internal(format!(
                "{}: a part of dims {:?} for a box of {:?}",
                self.name,
                part.dims(),
                placement.dims
            )));
        }
        match part {
            Image::U8(v) => self.write_from(v, placement)?,
            Image::I16(v) => self.write_from(v, placement)?,
            Image::U16(v) => self.write_from(v, placement)?,
            Image::I32(v) => self.write_from(v, placement)?,
            Image::F32(v) => self.write_from(v, placement)?,
        }
        let mut view = self.view;
        set_geometry(&mut view, &placement.full_geometry);
        // SAFETY: `self.ptr` passed the same checks in `out_volume_from_c`
        // and is writable for `struct_size` bytes by its contract.
        unsafe { write_struct(self.ptr, view, &self.name) }
    }

    fn write_from<S: Voxel>(&self, part: &Volume<S>, placement: &CropPlacement) -> Result<()> {
        let source = part.as_slice()?;
        match self.dtype {
            DType::U8 => self.convert_into::<S, u8>(source, placement),
            DType::I16 => self.convert_into::<S, i16>(source, placement),
            DType::U16 => self.convert_into::<S, u16>(source, placement),
            DType::I32 => self.convert_into::<S, i32>(source, placement),
            DType::F32 => self.convert_into::<S, f32>(source, placement),
        }
    }

    /// Converts the box's voxels `source` into the caller's buffer at
    /// their place, zeros around them.
    fn convert_into<S: Voxel, D: Voxel>(
        &self,
        source: &[S],
        placement: &CropPlacement,
    ) -> Result<()> {
        let count = checked_voxel_count(placement.full_dims)?;
        let target = self.view.data.cast::<D>();
        if S::DTYPE == D::DTYPE && placement.is_whole() {
            // SAFETY: S and D are the same type (same dtype), so the copy is
            // bit-exact. `data` is non-NULL and aligned for D (checked in
            // `out_volume_from_c`) with room for the full dims' voxels by
            // contract, and the source is the whole map (dims checked in
            // `write_in_box`). `source` is the library's own buffer, so the
            // regions do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(source.as_ptr().cast::<D>(), target, count) };
            return Ok(());
        }
        let [ni, nj, _] = placement.full_dims;
        let [bi, bj, _] = placement.dims;
        let [oi, oj, ok] = placement.offset;
        // Flat index in the full map of the first voxel of box row `r`.
        let row_start = |r: usize| oi + ni * (oj + r % bj + nj * (ok + r / bj));
        // Check every value first so a refused conversion writes nothing.
        if let Some((n, value)) = source
            .iter()
            .enumerate()
            .find(|(_, s)| D::from_f64_exact(s.to_f64()).is_none())
        {
            return Err(Error::invalid(format!(
                "{}: value {} at voxel #{} does not fit {} exactly",
                self.name,
                value.to_f64(),
                row_start(n / bi) + n % bi,
                dtype_name(D::DTYPE)
            )));
        }
        // SAFETY: as above (non-NULL, aligned, room for the full dims'
        // voxels); inputs were copied before the work, so no Rust reference
        // aliases the caller's buffer.
        let target = unsafe { std::slice::from_raw_parts_mut(target, count) };
        if !placement.is_whole() {
            target.fill(D::ZERO);
        }
        for (r, row) in source.chunks_exact(bi).enumerate() {
            let start = row_start(r);
            let Some(slots) = target.get_mut(start..start + bi) else {
                return Err(Error::Internal(format!(
                    "{}: box row {r} outside",
                    self.name
                )));
            };
            for (t, s) in slots.iter_mut().zip(row) {
                *t = D::from_f64_exact(s.to_f64()).unwrap_or(D::ZERO);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        Geometry {
            spacing: [1.25, 1.5, 8.0],
            origin: [-66.875, 86.875, -55.0],
            direction: [[c, 0.0, -s], [0.0, -1.0, 0.0], [s, 0.0, c]],
        }
    }

    fn view_of<T>(voxels: &mut [T], dtype: claim_voxel_type, dims: [u64; 3]) -> claim_volume {
        let image = Image::zeros(DType::U8, [1, 1, 1], oblique()).unwrap();
        claim_volume {
            voxel_type: dtype,
            dims,
            ..volume_to_c(&image, voxels.as_mut_ptr().cast())
        }
    }

    fn read_err(v: &claim_volume) -> String {
        // SAFETY: `v` is live and its data (if any) is a live buffer.
        let err = unsafe { image_from_c(v, "labels") }.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        err.to_string()
    }

    #[test]
    fn input_volumes_round_trip_with_geometry() {
        let mut voxels: Vec<i16> = (0..24).map(|x| x * 3 - 20).collect();
        let v = view_of(&mut voxels, CLAIM_VOXEL_I16, [4, 3, 2]);
        // SAFETY: `v` describes the live `voxels`.
        let image = unsafe { image_from_c(&v, "image") }.unwrap();
        assert_eq!(image.dims(), [4, 3, 2]);
        assert_eq!(*image.geometry(), oblique());
        let Image::I16(vol) = &image else {
            panic!("dtype")
        };
        assert_eq!(*vol.at(1, 2, 1), voxels[1 + 4 * (2 + 3)]);
        let back = volume_to_c(&image, std::ptr::null_mut());
        assert_eq!(
            (back.dims, back.spacing, back.origin, back.direction),
            (v.dims, v.spacing, v.origin, v.direction)
        );
    }

    #[test]
    fn bad_input_volumes_name_the_argument_and_the_fault() {
        let mut voxels = vec![0u8; 8];
        let good = view_of(&mut voxels, CLAIM_VOXEL_U8, [2, 2, 2]);

        // SAFETY: NULL is part of the contract.
        let null = unsafe { image_from_c(std::ptr::null(), "labels") }
            .unwrap_err()
            .to_string();
        assert!(null.contains("labels must not be NULL"), "{null}");

        let cases: Vec<(claim_volume, &str)> = vec![
            (
                claim_volume {
                    struct_size: 0,
                    ..good
                },
                "labels.struct_size: expected at least 160",
            ),
            (
                claim_volume {
                    voxel_type: 9,
                    ..good
                },
                "labels.voxel_type: expected a CLAIM_VOXEL_* value (0..=4), got 9",
            ),
            (
                claim_volume {
                    dims: [2, 0, 2],
                    ..good
                },
                "labels.dims: dims must all be ≥ 1",
            ),
            (
                claim_volume {
                    dims: [1 << 40, 1 << 40, 1 << 40],
                    ..good
                },
                "labels.dims",
            ),
            (
                claim_volume {
                    dims: [u64::MAX, 2, 2],
                    ..good
                },
                "labels.dims",
            ),
            (
                claim_volume {
                    spacing: [1.0, f64::NAN, 1.0],
                    ..good
                },
                "labels: spacing[1] must be finite and > 0, got NaN",
            ),
            (
                claim_volume {
                    spacing: [1.0, 1.0, -2.0],
                    ..good
                },
                "spacing[2]",
            ),
            (
                claim_volume {
                    origin: [0.0, f64::INFINITY, 0.0],
                    ..good
                },
                "labels: origin must be finite",
            ),
            (
                claim_volume {
                    direction: [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0],
                    ..good
                },
                "orthonormal",
            ),
            (
                claim_volume {
                    direction: [f64::NAN; 9],
                    ..good
                },
                "direction must be finite",
            ),
            (
                claim_volume {
                    data: std::ptr::null_mut(),
                    ..good
                },
                "labels.data must not be NULL",
            ),
        ];
        for (volume, expected) in cases {
            let msg = read_err(&volume);
            assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        }

        // Misaligned f32 data.
        let mut words = vec![0u32; 9];
        let mut v = view_of(&mut words, CLAIM_VOXEL_F32, [2, 2, 2]);
        // SAFETY: one byte into a live buffer of 36 bytes.
        v.data = unsafe { v.data.cast::<u8>().add(1) }.cast();
        assert!(read_err(&v).contains("aligned to 4 bytes"));
    }

    #[test]
    fn labels_accept_integral_floats_only() {
        let mut voxels = [0.0f32, 1.0, 2.0, 3.0];
        let v = view_of(&mut voxels, CLAIM_VOXEL_F32, [2, 2, 1]);
        // SAFETY: `v` describes the live `voxels`.
        let labels = unsafe { labels_from_c(&v, "labels") }.unwrap();
        assert_eq!(labels.as_slice().unwrap(), &[0, 1, 2, 3]);
        voxels[2] = 2.5;
        let v = view_of(&mut voxels, CLAIM_VOXEL_F32, [2, 2, 1]);
        // SAFETY: as above.
        let msg = unsafe { labels_from_c(&v, "labels") }
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("labels: label map holds a non-integral value 2.5"),
            "{msg}"
        );
    }

    /// A box's values land at its offset in the full buffer, 0 elsewhere;
    /// a value the dtype cannot hold is named by its full voxel number and
    /// leaves the buffer untouched.
    #[test]
    fn a_box_is_written_in_place_with_zeros_around_it() {
        let placement = CropPlacement {
            offset: [1, 1, 0],
            dims: [2, 1, 1],
            full_dims: [3, 3, 2],
            full_geometry: oblique(),
        };
        let part = |values: Vec<i32>| {
            Image::I32(Volume::from_vec([2, 1, 1], values, placement.geometry()).unwrap())
        };
        let mut out8 = [7u8; 18];
        let mut v = view_of(&mut out8, CLAIM_VOXEL_U8, [3, 3, 2]);
        v.spacing = [0.0; 3];
        // SAFETY: `v` describes the live `out8`.
        let out = unsafe { out_volume_from_c(&mut v, "out_labels") }.unwrap();
        let msg = out
            .write_in_box(&part(vec![1, 300]), &placement, "labels")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("value 300 at voxel #5 does not fit"), "{msg}");
        assert_eq!(out8, [7; 18]);
        // SAFETY: as above.
        let out = unsafe { out_volume_from_c(&mut v, "out_labels") }.unwrap();
        out.write_in_box(&part(vec![4, 5]), &placement, "labels")
            .unwrap();
        let mut expected = [0u8; 18];
        (expected[4], expected[5]) = (4, 5);
        assert_eq!(out8, expected);
        assert_eq!(v.spacing, oblique().spacing);
        assert_eq!(v.origin, oblique().origin);
    }

    #[test]
    fn outputs_are_checked_converted_and_get_geometry() {
        let source =
            Image::I32(Volume::from_vec([2, 2, 1], vec![0, 1, 2, 300], oblique()).unwrap());

        // Same dims, u16 output: converts exactly, geometry written.
        let mut out16 = [7u16; 4];
        let mut v = view_of(&mut out16, CLAIM_VOXEL_U16, [2, 2, 1]);
        v.spacing = [0.0; 3];
        // SAFETY: `v` describes the live `out16`.
        let out = unsafe { out_volume_from_c(&mut v, "out_labels") }.unwrap();
        assert_eq!((out.dims(), out.dtype()), ([2, 2, 1], DType::U16));
        out.expect_holds(&[0, 65535], "labels").unwrap();
        let msg = out
            .expect_holds(&[1, -1], "params.labels")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "out_labels.voxel_type: CLAIM_VOXEL_U16 cannot hold the value -1 of params.labels"
            ),
            "{msg}"
        );
        out.write(&source, "labels").unwrap();
        assert_eq!(out16, [0, 1, 2, 300]);
        assert_eq!(v.spacing, [1.25, 1.5, 8.0]);

        // u8 output cannot hold 300: refused, buffer untouched.
        let mut out8 = [7u8; 4];
        let mut v = view_of(&mut out8, CLAIM_VOXEL_U8, [2, 2, 1]);
        // SAFETY: `v` describes the live `out8`.
        let out = unsafe { out_volume_from_c(&mut v, "out_labels") }.unwrap();
        let msg = out.write(&source, "labels").unwrap_err().to_string();
        assert!(
            msg.contains("out_labels: value 300 at voxel #3 does not fit CLAIM_VOXEL_U8"),
            "{msg}"
        );
        assert_eq!(out8, [7; 4]);

        // Wrong dims: the message names both.
        let mut small = [0i32; 2];
        let mut v = view_of(&mut small, CLAIM_VOXEL_I32, [2, 1, 1]);
        // SAFETY: `v` describes the live `small`.
        let out = unsafe { out_volume_from_c(&mut v, "out_labels") }.unwrap();
        let msg = out.write(&source, "labels").unwrap_err().to_string();
        assert!(
            msg.contains("out_labels.dims: expected 2×2×1 (the dims of labels), got 2×1×1"),
            "{msg}"
        );
        assert_eq!(small, [0, 0]);

        // Same dtype: bit-exact copy, NaN included.
        let floats =
            Image::F32(Volume::from_vec([2, 1, 1], vec![f32::NAN, -0.0], oblique()).unwrap());
        let mut outf = [1.0f32; 2];
        let mut v = view_of(&mut outf, CLAIM_VOXEL_F32, [2, 1, 1]);
        // SAFETY: `v` describes the live `outf`.
        unsafe { out_volume_from_c(&mut v, "out_image") }
            .unwrap()
            .write(&floats, "image")
            .unwrap();
        assert!(outf[0].is_nan() && outf[1].to_bits() == (-0.0f32).to_bits());

        // NULL data is refused up front.
        let mut v = view_of(&mut outf, CLAIM_VOXEL_F32, [2, 1, 1]);
        v.data = std::ptr::null_mut();
        // SAFETY: `v` is live; data NULL is part of the contract.
        assert!(unsafe { out_volume_from_c(&mut v, "out_image") }.is_err());
    }
}

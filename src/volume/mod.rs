//! Volumes: a 3-D array plus its physical geometry, and label schemes.
//!
//! Arrays are `ndarray::Array3` indexed `[k][j][i]`, so i is the fastest
//! axis, as in NIfTI files, ITK buffers and `claim_volume`.

mod crop;
mod geometry;
mod labels;

pub use crop::{CropPlacement, CroppedLabels, LabelVoxel, LABEL_CROP_MARGIN};
pub(crate) use geometry::is_orthonormal;
pub use geometry::Geometry;
pub use labels::{narrow_labels, voxel_type_holds, LabelScheme, Tissue};

use crate::error::{Error, Result};
use ndarray::Array3;

/// Largest number of voxels claim accepts in one volume (2³²): far beyond
/// any cardiac image, small enough that a hostile header cannot make us
/// allocate terabytes.
pub const MAX_VOXELS: u64 = 1 << 32;

/// A 3-D image or label map with its geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    /// Voxel values, shape `[nk, nj, ni]` (i fastest).
    pub data: Array3<T>,
    /// Physical placement.
    pub geometry: Geometry,
}

impl<T: Clone + Default> Volume<T> {
    /// A volume of `T::default()` with dims `[ni, nj, nk]`.
    pub fn zeros(dims: [usize; 3], geometry: Geometry) -> Self {
        Volume {
            data: Array3::default((dims[2], dims[1], dims[0])),
            geometry,
        }
    }

    /// Wraps a flat buffer in i-fastest order. Errors when the length is not
    /// `ni * nj * nk`.
    pub fn from_vec(dims: [usize; 3], data: Vec<T>, geometry: Geometry) -> Result<Self> {
        let expected = checked_voxel_count(dims)?;
        if data.len() != expected {
            return Err(Error::invalid(format!(
                "volume data length: expected {expected} (= {}×{}×{}), got {}",
                dims[0],
                dims[1],
                dims[2],
                data.len()
            )));
        }
        let data = Array3::from_shape_vec((dims[2], dims[1], dims[0]), data)
            .map_err(|e| Error::Internal(format!("volume shape: {e}")))?;
        Ok(Volume { data, geometry })
    }
}

impl<T> Volume<T> {
    /// Dims as `[ni, nj, nk]` (i fastest).
    pub fn dims(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[2], s[1], s[0]]
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a volume without voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Value at voxel `(i, j, k)`.
    pub fn at(&self, i: usize, j: usize, k: usize) -> &T {
        &self.data[[k, j, i]]
    }

    /// The same geometry and dims with values mapped by `f`.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Volume<U> {
        Volume {
            data: self.data.map(f),
            geometry: self.geometry,
        }
    }

    /// The voxels as a flat slice in i-fastest order.
    pub fn as_slice(&self) -> Result<&[T]> {
        self.data
            .as_slice()
            .ok_or_else(|| Error::Internal("volume data is not contiguous".into()))
    }
}

/// `ni * nj * nk`, refusing zero dims, overflow and more than [`MAX_VOXELS`].
pub fn checked_voxel_count(dims: [usize; 3]) -> Result<usize> {
    if dims.contains(&0) {
        return Err(Error::invalid(format!(
            "dims must all be ≥ 1, got {dims:?}"
        )));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|n| *n <= MAX_VOXELS)
        .ok_or_else(|| {
            Error::invalid(format!(
                "dims {dims:?} hold more than the {MAX_VOXELS} voxels claim accepts"
            ))
        })?;
    usize::try_from(n).map_err(|_| Error::invalid(format!("dims {dims:?} overflow this platform")))
}

/// Voxel types claim stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// unsigned 8-bit
    U8,
    /// signed 16-bit
    I16,
    /// unsigned 16-bit
    U16,
    /// signed 32-bit
    I32,
    /// 32-bit float
    F32,
}

impl DType {
    /// Bytes per voxel.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
        }
    }

    /// Lower-case name: `u8`, `i16`, `u16`, `i32`, `f32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::F32 => "f32",
        }
    }
}

/// A volume of any supported voxel type: what a file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// u8 voxels
    U8(Volume<u8>),
    /// i16 voxels
    I16(Volume<i16>),
    /// u16 voxels
    U16(Volume<u16>),
    /// i32 voxels
    I32(Volume<i32>),
    /// f32 voxels
    F32(Volume<f32>),
}

/// Runs `$body` with `$v` bound to the inner volume, whatever its type.
macro_rules! with_volume {
    ($image:expr, $v:ident => $body:expr) => {
        match $image {
            Image::U8($v) => $body,
            Image::I16($v) => $body,
            Image::U16($v) => $body,
            Image::I32($v) => $body,
            Image::F32($v) => $body,
        }
    };
}

impl Image {
    /// The voxel type.
    pub fn dtype(&self) -> DType {
        match self {
            Image::U8(_) => DType::U8,
            Image::I16(_) => DType::I16,
            Image::U16(_) => DType::U16,
            Image::I32(_) => DType::I32,
            Image::F32(_) => DType::F32,
        }
    }

    /// Dims `[ni, nj, nk]`.
    pub fn dims(&self) -> [usize; 3] {
        with_volume!(self, v => v.dims())
    }

    /// Geometry.
    pub fn geometry(&self) -> &Geometry {
        with_volume!(self, v => &v.geometry)
    }

    /// Mutable geometry.
    pub fn geometry_mut(&mut self) -> &mut Geometry {
        with_volume!(self, v => &mut v.geometry)
    }

    /// A zero-filled image of `dtype` with the given dims and geometry.
    pub fn zeros(dtype: DType, dims: [usize; 3], geometry: Geometry) -> Result<Image> {
        checked_voxel_count(dims)?;
        Ok(match dtype {
            DType::U8 => Image::U8(Volume::zeros(dims, geometry)),
            DType::I16 => Image::I16(Volume::zeros(dims, geometry)),
            DType::U16 => Image::U16(Volume::zeros(dims, geometry)),
            DType::I32 => Image::I32(Volume::zeros(dims, geometry)),
            DType::F32 => Image::F32(Volume::zeros(dims, geometry)),
        })
    }

    /// The voxels as f32 (intensity work).
    // The macro expands one arm per dtype; for the f32 arm the cast is a no-op.
    #[allow(clippy::unnecessary_cast)]
    pub fn to_f32(&self) -> Volume<f32> {
        with_volume!(self, v => v.map(|x| *x as f32))
    }

    /// The voxels as integer labels. Float voxels are rounded; a float that
    /// is not within 1e-3 of an integer (or not finite) is an error naming
    /// the first offending voxel.
    pub fn to_labels(&self) -> Result<Volume<i32>> {
        CroppedLabels::whole_of(self)
    }
}

impl Image {
    /// The voxels as an AHA segment map: 0 (no segment) or 1–17 in any
    /// voxel type (floats integral). Converted straight to u8, so a map
    /// costs one byte a voxel beside the image. Errors name the first
    /// voxel out of range.
    pub fn to_segments(&self) -> Result<Volume<u8>> {
        fn convert<T: LabelVoxel>(v: &Volume<T>) -> Result<Volume<u8>> {
            let values = v.as_slice()?;
            let mut data = crate::limits::try_vec(values.len(), "the AHA segment map")?;
            for (n, x) in values.iter().enumerate() {
                let segment = x.to_label().and_then(|l| {
                    u8::try_from(l)
                        .ok()
                        .filter(|s| *s <= 17)
                        .ok_or_else(|| l.to_string())
                });
                match segment {
                    Ok(s) => data.push(s),
                    Err(shown) => {
                        return Err(Error::invalid(format!(
                        "expected 0 (no segment) or AHA segments 1–17, got {shown} at voxel #{n}"
                    )))
                    }
                }
            }
            Volume::from_vec(v.dims(), data, v.geometry)
        }
        with_volume!(self, v => convert(v))
    }
}

impl<T: Clone + Default> Volume<T> {
    /// [`Volume::zeros`], with [`Error::OutOfMemory`] naming `what` instead
    /// of an abort when the buffer cannot be allocated.
    pub fn try_zeros(dims: [usize; 3], geometry: Geometry, what: &str) -> Result<Self> {
        let count = checked_voxel_count(dims)?;
        let data = crate::limits::try_filled(count, T::default(), what)?;
        Volume::from_vec(dims, data, geometry)
    }
}

impl From<Volume<u8>> for Image {
    fn from(v: Volume<u8>) -> Self {
        Image::U8(v)
    }
}
impl From<Volume<i16>> for Image {
    fn from(v: Volume<i16>) -> Self {
        Image::I16(v)
    }
}
impl From<Volume<u16>> for Image {
    fn from(v: Volume<u16>) -> Self {
        Image::U16(v)
    }
}
impl From<Volume<i32>> for Image {
    fn from(v: Volume<i32>) -> Self {
        Image::I32(v)
    }
}
impl From<Volume<f32>> for Image {
    fn from(v: Volume<f32>) -> Self {
        Image::F32(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i_is_fastest() {
        let v = Volume::from_vec([3, 2, 1], vec![0u8, 1, 2, 3, 4, 5], Geometry::default()).unwrap();
        assert_eq!(*v.at(2, 0, 0), 2);
        assert_eq!(*v.at(0, 1, 0), 3);
        assert_eq!(v.dims(), [3, 2, 1]);
    }

    #[test]
    fn voxel_count_rejects_overflow_and_zero() {
        assert!(checked_voxel_count([usize::MAX, 2, 2]).is_err());
        assert!(checked_voxel_count([1 << 20, 1 << 20, 1 << 20]).is_err());
        assert!(checked_voxel_count([4, 0, 4]).is_err());
        assert_eq!(checked_voxel_count([4, 5, 6]).unwrap(), 120);
    }

    #[test]
    fn float_labels_must_be_integral() {
        let v = Volume::from_vec([2, 1, 1], vec![1.0f32, 2.5], Geometry::default()).unwrap();
        assert!(Image::F32(v).to_labels().is_err());
        let v = Volume::from_vec([2, 1, 1], vec![1.0f32, 2.0001], Geometry::default()).unwrap();
        assert_eq!(
            Image::F32(v).to_labels().unwrap().data.as_slice().unwrap(),
            &[1, 2]
        );
    }
}

//! Writing: little-endian single-file NIfTI-1 with qform and sform set as ITK
//! writes them, through a temporary file renamed into place.

use super::header::{
    NiftiHeader, NiftiVersion, StoredType, NIFTI1_MIN_VOX_OFFSET, UNITS_MM, XFORM_SCANNER_ANAT,
};
use super::transform::transforms_for;
use crate::error::{Error, Result};
use crate::volume::Image;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Largest axis length a NIfTI-1 header can hold (`dim` is `i16`).
const NIFTI1_MAX_DIM: usize = i16::MAX as usize;
/// Voxel bytes encoded per write call.
const CHUNK_BYTES: usize = 1 << 20;

/// The header claim writes for `image`.
pub(super) fn header_for_image(image: &Image) -> Result<NiftiHeader> {
    let geometry = image.geometry();
    geometry.validate("image geometry")?;
    let representable = geometry
        .spacing
        .iter()
        .chain(&geometry.origin)
        .all(|v| (*v as f32).is_finite() && (*v == 0.0 || (*v as f32) != 0.0));
    if !representable {
        return Err(Error::invalid(format!(
            "image geometry: spacing {:?} / origin {:?} cannot be stored as NIfTI 32-bit floats",
            geometry.spacing, geometry.origin
        )));
    }
    let dims = image.dims();
    if let Some(n) = dims.iter().find(|n| **n > NIFTI1_MAX_DIM) {
        return Err(Error::Unsupported(format!(
            "image dims {dims:?}: an axis of {n} voxels exceeds the NIfTI-1 limit of {NIFTI1_MAX_DIM}"
        )));
    }
    let stored = StoredType::from_dtype(image.dtype());
    let t = transforms_for(geometry);
    let [ni, nj, nk] = dims.map(|n| n as i64);
    Ok(NiftiHeader {
        version: NiftiVersion::Nifti1,
        big_endian: false,
        dim: [3, ni, nj, nk, 1, 1, 1, 1],
        datatype: stored.code(),
        bitpix: (stored.size_bytes() * 8) as i16,
        pixdim: [
            t.qfac,
            geometry.spacing[0],
            geometry.spacing[1],
            geometry.spacing[2],
            1.0,
            1.0,
            1.0,
            1.0,
        ],
        vox_offset: NIFTI1_MIN_VOX_OFFSET as f64,
        scl_slope: 1.0,
        scl_inter: 0.0,
        cal_min: 0.0,
        cal_max: 0.0,
        xyzt_units: UNITS_MM,
        intent_code: 0,
        descrip: format!("claim {}", crate::VERSION),
        qform_code: XFORM_SCANNER_ANAT,
        sform_code: XFORM_SCANNER_ANAT,
        quatern: t.quatern,
        qoffset: t.offset,
        srow: t.srow,
    })
}

/// Writes header, the empty extension flag and the voxels to `out`.
fn encode(header_bytes: &[u8], image: &Image, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(header_bytes)?;
    // Extension flag bytes 348..352: all zero, no extensions follow.
    out.write_all(&[0u8; 4])?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES);
    let mut put = |bytes: &[u8], out: &mut dyn Write| -> io::Result<()> {
        chunk.extend_from_slice(bytes);
        if chunk.len() >= CHUNK_BYTES {
            out.write_all(&chunk)?;
            chunk.clear();
        }
        Ok(())
    };
    // `iter()` walks in logical [k][j][i] order (i fastest) whatever the
    // memory layout, which is NIfTI's order.
    match image {
        Image::U8(v) => v.data.iter().try_for_each(|x| put(&x.to_le_bytes(), out))?,
        Image::I16(v) => v.data.iter().try_for_each(|x| put(&x.to_le_bytes(), out))?,
        Image::U16(v) => v.data.iter().try_for_each(|x| put(&x.to_le_bytes(), out))?,
        Image::I32(v) => v.data.iter().try_for_each(|x| put(&x.to_le_bytes(), out))?,
        Image::F32(v) => v.data.iter().try_for_each(|x| put(&x.to_le_bytes(), out))?,
    }
    out.write_all(&chunk)
}

/// The complete file contents for `image`, gzip-compressed when `gzip`.
pub(super) fn image_to_bytes(image: &Image, gzip: bool) -> Result<Vec<u8>> {
    let header = header_for_image(image)?.to_nifti1_le_bytes()?;
    let internal = |e: io::Error| Error::Internal(format!("encoding NIfTI in memory: {e}"));
    if gzip {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encode(&header, image, &mut encoder).map_err(internal)?;
        encoder.finish().map_err(internal)
    } else {
        let mut out = Vec::new();
        encode(&header, image, &mut out).map_err(internal)?;
        Ok(out)
    }
}

/// True when the file name ends in `.gz` (any case).
pub(super) fn wants_gzip(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"))
        .unwrap_or(false)
}

/// Writes `image` to `path` (gzip when the name ends in `.gz`). The data go
/// to a temporary file beside the target, are flushed to disk, and only then
/// renamed over `path`: a failed write leaves any existing file untouched and
/// no partial file behind.
pub(super) fn write_path(image: &Image, path: &Path) -> Result<()> {
    let header = header_for_image(image)?.to_nifti1_le_bytes()?;
    let gzip = wants_gzip(path);
    crate::io::atomic::write_atomically(path, |file| {
        let mut buffered = BufWriter::with_capacity(1 << 16, file);
        if gzip {
            let mut encoder = GzEncoder::new(&mut buffered, Compression::default());
            encode(&header, image, &mut encoder)?;
            encoder.finish()?;
        } else {
            encode(&header, image, &mut buffered)?;
        }
        buffered.flush()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    #[test]
    fn gzip_is_chosen_by_name() {
        assert!(wants_gzip(Path::new("a/b.nii.gz")));
        assert!(wants_gzip(Path::new("B.NII.GZ")));
        assert!(!wants_gzip(Path::new("a.gz/b.nii")));
        assert!(!wants_gzip(Path::new("b.nii")));
    }

    #[test]
    fn header_fields_follow_itk() {
        let mut g = Geometry::with_spacing([1.4, 1.4, 10.0]);
        g.direction[1][1] = -1.0; // left-handed
        let v = Volume::from_vec([2, 3, 4], vec![0u16; 24], g).unwrap();
        let h = header_for_image(&Image::U16(v)).unwrap();
        assert_eq!((h.qform_code, h.sform_code), (1, 1));
        assert_eq!(h.pixdim[0], -1.0);
        assert_eq!((h.datatype, h.bitpix), (512, 16));
        assert_eq!(h.dim, [3, 2, 3, 4, 1, 1, 1, 1]);
        assert_eq!(h.vox_offset, 352.0);
        assert_eq!((h.scl_slope, h.scl_inter), (1.0, 0.0));
        assert_eq!(h.xyzt_units, UNITS_MM);
        assert_eq!(h.descrip, format!("claim {}", crate::VERSION));
    }

    #[test]
    fn bad_geometry_and_huge_dims_are_refused() {
        let mut g = Geometry::default();
        g.spacing[0] = -1.0;
        let v = Volume::from_vec([1, 1, 1], vec![0u8], g).unwrap();
        assert!(matches!(
            header_for_image(&Image::U8(v)),
            Err(Error::InvalidArgument(_))
        ));
        let mut g = Geometry::default();
        g.origin[2] = 1e300;
        let v = Volume::from_vec([1, 1, 1], vec![0u8], g).unwrap();
        assert!(matches!(
            header_for_image(&Image::U8(v)),
            Err(Error::InvalidArgument(_))
        ));
        let v = Volume::from_vec([40000, 1, 1], vec![0u8; 40000], Geometry::default()).unwrap();
        assert!(matches!(
            header_for_image(&Image::U8(v)),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn encoding_is_little_endian_after_352_bytes() {
        let v = Volume::from_vec([2, 1, 1], vec![0x0102i16, -2], Geometry::default()).unwrap();
        let bytes = image_to_bytes(&Image::I16(v), false).unwrap();
        assert_eq!(bytes.len(), 352 + 4);
        assert_eq!(&bytes[348..352], &[0, 0, 0, 0]);
        assert_eq!(&bytes[352..], &[0x02, 0x01, 0xfe, 0xff]);
    }
}

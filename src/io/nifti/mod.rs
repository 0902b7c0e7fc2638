//! NIfTI-1 reading and writing, with geometry read the way ITK reads it.
//!
//! Built directly on `flate2` rather than on the `nifti` crate. That crate
//! panics in `qform_affine()` on negative pixdim or a bad qfac, has no
//! allocation caps for hostile headers, and writes an sform-only header (qform
//! code 0). Here every bad input is an [`Error`](crate::Error) and nothing panics. The
//! authority for geometry is `shared/reference/nifti.md` (ITK's behaviour).
//!
//! # Reading ([`read_image`], [`read_image_with_report`], [`read_image_from_bytes`])
//!
//! - **Container:** `.nii` or `.nii.gz`, told apart by the gzip magic bytes
//!   `1f 8b`, not by the name. Multi-member gzip streams are read whole.
//! - **Layout:** single-file NIfTI-1 (magic `n+1\0`) and, as a bonus, NIfTI-2
//!   (`n+2\0`, 540-byte header), in either byte order. The byte order comes
//!   from `sizeof_hdr` (348 or 540 read little- or big-endian).
//!   Header/image pairs (`ni1`/`ni2`) are `Unsupported`.
//! - **Voxel types:** uint8 → `U8`, int16 → `I16`, uint16 → `U16`, int32 →
//!   `I32`, float32 → `F32`. Also int8 → `I16`, and uint32/int64/uint64/
//!   float64 → `F32` (EMIDEC stores float64). `scl_slope`/`scl_inter` are
//!   applied, giving `F32`, when the slope is finite, non-zero and not the
//!   identity (1, 0); a non-finite intercept counts as 0. Complex, RGB,
//!   float128 and binary are `Unsupported`; unknown codes are `Format` errors.
//! - **Dims:** `dim[0]` from 1 to 7. Axes 4–7 must have length 1 (the AHA
//!   atlas is 4-D with a trailing 1); a real 4-D series is `Unsupported`.
//!   1-D and 2-D images become volumes with length-1 axes.
//! - **Geometry:** see [`NiftiHeader::resolve_geometry`]. Spacing is
//!   `|pixdim[1..=3]|`, always. A zero pixdim is accepted (as 1 mm) only on
//!   an axis of length 1. The sform is used when orthonormal and (qform code
//!   0, or sform code 1, or the two agree within 1e-4); else the qform; with
//!   both codes 0, identity direction and zero origin (ITK's fallback, with a
//!   warning). RAS → LPS negates the first two rows of the direction and the
//!   first two origin components. A qform's rotation comes from the
//!   quaternion with `qfac = −1` when `pixdim[0] < 0`, else 1.
//! - **Safety:** the header is read first. Dims, datatype, bitpix and
//!   `vox_offset` are checked (at most [`crate::volume::MAX_VOXELS`] voxels,
//!   `vox_offset` a whole number from 352 up to 1 GiB). Then exactly the
//!   declared number of voxel bytes is read, in 1 MiB chunks. When the size is
//!   known (uncompressed input) a short file is rejected before any
//!   allocation. For gzip input, output memory grows only as decompressed data
//!   actually arrives, and the gzip CRC is checked after the voxels. Short or
//!   corrupt contents → [`Error::Format`](crate::Error::Format); a file that cannot be opened or
//!   read → [`Error::Io`](crate::Error::Io). Messages name the file and the field.
//! - **Warnings** (returned in [`NiftiRead::warnings`]; the library never
//!   prints): sform column lengths differing from pixdim by more than 1e-3 mm
//!   (e.g. EMIDEC's unscaled `diag(−1, −1, 1)` sform), an sform passed over,
//!   and the both-codes-0 fallback.
//!
//! # Writing ([`write_image`], [`write_image_to_bytes`])
//!
//! Little-endian single-file NIfTI-1, `vox_offset` 352, gzip when the name
//! ends in `.gz`. As ITK writes, qform and sform both carry code 1
//! (SCANNER_ANAT), so every reader agrees:
//! - `pixdim[1..=3]` = spacing;
//! - `pixdim[0]` = qfac, which is −1 for a left-handed direction (whose third
//!   column is negated before the quaternion is formed);
//! - the sform is direction × spacing;
//! - `xyzt_units` = mm, `scl_slope`/`scl_inter` = 1/0, `cal_min`/`cal_max` = 0;
//! - `descrip` = `"claim <version>"`.
//!
//! The file is written to a temporary name in the same folder, synced and
//! renamed into place. A failed write leaves no partial file, and any earlier
//! file at the path stays as it was.
//!
//! # Precision
//!
//! NIfTI-1 stores geometry as 32-bit floats. After a write → read round trip,
//! spacing and origin equal their f32-rounded values exactly, and direction
//! cosines (read from the sform) agree within 1e-6. The qform's quaternion
//! agrees with the sform within 1e-4 (ITK's tolerance) except near 180°
//! rotations, where f32 quaternions lose precision; readers that prefer the
//! sform (ITK, nibabel, this one) are unaffected.

mod header;
mod read;
mod transform;
mod write;

pub use header::{datatype_name, NiftiHeader, NiftiVersion, UNITS_MM, XFORM_SCANNER_ANAT};
pub use transform::{GeometrySource, ResolvedGeometry};

use crate::error::Result;
use crate::volume::Image;
use std::path::Path;

/// An image read from a NIfTI file with what the reader found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiRead {
    /// The voxels and their LPS geometry.
    pub image: Image,
    /// The header as stored in the file.
    pub header: NiftiHeader,
    /// Which header transform placed the image.
    pub geometry_source: GeometrySource,
    /// Non-fatal oddities worth showing a user (never printed by the library).
    pub warnings: Vec<String>,
}

/// Reads a `.nii` or `.nii.gz` file (see the [module docs](self) for what is
/// accepted). Warnings are dropped; use [`read_image_with_report`] to get them.
pub fn read_image(path: &Path) -> Result<Image> {
    read_image_with_report(path).map(|read| read.image)
}

/// Reads a `.nii` or `.nii.gz` file and reports header, geometry source and
/// warnings alongside the image.
pub fn read_image_with_report(path: &Path) -> Result<NiftiRead> {
    read::read_path(path)
}

/// Reads a NIfTI image (plain or gzip) held in memory. `name` labels error
/// messages (e.g. the original file name).
pub fn read_image_from_bytes(bytes: &[u8], name: &str) -> Result<NiftiRead> {
    read::read_bytes(bytes, name)
}

/// Reads only the header of a `.nii` or `.nii.gz` file (magic and byte order
/// checked; dims and geometry not), e.g. for `claim info`. Its
/// [`Display`](std::fmt::Display) gives a one-line summary.
pub fn read_header(path: &Path) -> Result<NiftiHeader> {
    read::read_header_path(path)
}

/// Writes a `.nii` or `.nii.gz` file (gzip when the name ends in `.gz`) via a
/// temporary file in the same folder. Errors: [`Error::InvalidArgument`](crate::Error::InvalidArgument) for
/// an invalid geometry, [`Error::Unsupported`](crate::Error::Unsupported) for an axis longer than 32767
/// voxels, [`Error::Io`](crate::Error::Io) when the file cannot be written (nothing is left at
/// `path` then).
pub fn write_image(image: &Image, path: &Path) -> Result<()> {
    write::write_path(image, path)
}

/// The bytes [`write_image`] would write, gzip-compressed when `gzip`.
pub fn write_image_to_bytes(image: &Image, gzip: bool) -> Result<Vec<u8>> {
    write::image_to_bytes(image, gzip)
}

/// The header [`write_image`] writes for `image`.
pub fn header_for_image(image: &Image) -> Result<NiftiHeader> {
    write::header_for_image(image)
}

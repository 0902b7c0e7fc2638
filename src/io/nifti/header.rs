//! The NIfTI-1 and NIfTI-2 headers: byte layout, parsing, checks and encoding.
//!
//! Field offsets follow `nifti1.h` (348 bytes) and `nifti2.h` (540 bytes).
//! Every accessor is bounds-checked, so a short or hostile buffer yields zeros
//! (and then a clear error from the checks), never a panic.

use crate::error::{Error, Result};
use crate::volume::{checked_voxel_count, DType, MAX_VOXELS};
use std::fmt;

/// Size of a NIfTI-1 header.
pub(super) const NIFTI1_HEADER_BYTES: usize = 348;
/// Size of a NIfTI-2 header.
pub(super) const NIFTI2_HEADER_BYTES: usize = 540;
/// Smallest `vox_offset` of a single-file NIfTI-1: header plus the 4-byte extension flag.
pub(super) const NIFTI1_MIN_VOX_OFFSET: u64 = 352;
/// Smallest `vox_offset` of a single-file NIfTI-2.
pub(super) const NIFTI2_MIN_VOX_OFFSET: u64 = 544;
/// Largest `vox_offset` accepted (1 GiB of header extensions). Real files stay
/// far below it. The gap is skipped without being stored, so the cap only
/// makes a corrupt header fail early with a clear message.
pub(super) const MAX_VOX_OFFSET: u64 = 1 << 30;

/// NIfTI transform code `NIFTI_XFORM_SCANNER_ANAT`, which ITK writes for both forms.
pub const XFORM_SCANNER_ANAT: i32 = 1;
/// `xyzt_units` value for millimetres (`NIFTI_UNITS_MM`).
pub const UNITS_MM: i32 = 2;

/// Which NIfTI header layout a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NiftiVersion {
    /// 348-byte header, magic `n+1\0`.
    Nifti1,
    /// 540-byte header with 64-bit dims, magic `n+2\0`.
    Nifti2,
}

impl NiftiVersion {
    /// Header size in bytes.
    pub fn header_bytes(self) -> usize {
        match self {
            NiftiVersion::Nifti1 => NIFTI1_HEADER_BYTES,
            NiftiVersion::Nifti2 => NIFTI2_HEADER_BYTES,
        }
    }

    fn min_vox_offset(self) -> u64 {
        match self {
            NiftiVersion::Nifti1 => NIFTI1_MIN_VOX_OFFSET,
            NiftiVersion::Nifti2 => NIFTI2_MIN_VOX_OFFSET,
        }
    }
}

/// A parsed NIfTI header. Values are widened to `i64`/`f64`, which is exact
/// for both layouts. Every field holds what the file says; nothing is
/// corrected here.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeader {
    /// Header layout.
    pub version: NiftiVersion,
    /// True when the file is big-endian (detected from `sizeof_hdr`).
    pub big_endian: bool,
    /// `dim[0]` is the number of axes; `dim[1..=dim[0]]` their lengths.
    pub dim: [i64; 8],
    /// NIfTI datatype code (2 = uint8, 4 = int16, 16 = float32, 64 = float64, …).
    pub datatype: i16,
    /// Bits per voxel.
    pub bitpix: i16,
    /// `pixdim[0]` is qfac; `pixdim[1..=3]` the voxel size in `xyzt_units`.
    pub pixdim: [f64; 8],
    /// Byte offset of the voxel data in the file.
    pub vox_offset: f64,
    /// Intensity scaling slope (0 means no scaling).
    pub scl_slope: f64,
    /// Intensity scaling intercept.
    pub scl_inter: f64,
    /// Display window minimum.
    pub cal_min: f64,
    /// Display window maximum.
    pub cal_max: f64,
    /// Spatial and temporal units (`NIFTI_UNITS_*` bits).
    pub xyzt_units: i32,
    /// `NIFTI_INTENT_*` code.
    pub intent_code: i32,
    /// Free-text description, up to the first NUL.
    pub descrip: String,
    /// qform code (0 = unknown, 1 = scanner, 2 = aligned, 3 = Talairach, 4 = MNI).
    pub qform_code: i32,
    /// sform code (same meanings as `qform_code`).
    pub sform_code: i32,
    /// Quaternion `b, c, d` of the qform rotation.
    pub quatern: [f64; 3],
    /// qform translation `qoffset_x, y, z` (RAS mm).
    pub qoffset: [f64; 3],
    /// sform rows `srow_x, srow_y, srow_z` (RAS mm).
    pub srow: [[f64; 4]; 3],
}

/// The voxel types NIfTI can store that claim reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl StoredType {
    /// The stored type for a datatype code. Known but unsupported codes
    /// (complex, RGB, float128, binary) are `Unsupported`; unknown codes are
    /// `Format` errors.
    pub(super) fn from_code(code: i16, name: &str) -> Result<Self> {
        Ok(match code {
            2 => StoredType::U8,
            4 => StoredType::I16,
            8 => StoredType::I32,
            16 => StoredType::F32,
            64 => StoredType::F64,
            256 => StoredType::I8,
            512 => StoredType::U16,
            768 => StoredType::U32,
            1024 => StoredType::I64,
            1280 => StoredType::U64,
            1 | 32 | 128 | 1536 | 1792 | 2048 | 2304 => {
                return Err(Error::Unsupported(format!(
                    "{name}: NIfTI datatype {code} ({}) is not supported; \
                     claim reads scalar integer and float voxels only",
                    datatype_name(code)
                )))
            }
            _ => {
                return Err(Error::format(format!(
                    "{name}: unknown NIfTI datatype code {code}"
                )))
            }
        })
    }

    pub(super) fn from_dtype(dtype: DType) -> Self {
        match dtype {
            DType::U8 => StoredType::U8,
            DType::I16 => StoredType::I16,
            DType::U16 => StoredType::U16,
            DType::I32 => StoredType::I32,
            DType::F32 => StoredType::F32,
        }
    }

    pub(super) fn code(self) -> i16 {
        match self {
            StoredType::U8 => 2,
            StoredType::I16 => 4,
            StoredType::I32 => 8,
            StoredType::F32 => 16,
            StoredType::F64 => 64,
            StoredType::I8 => 256,
            StoredType::U16 => 512,
            StoredType::U32 => 768,
            StoredType::I64 => 1024,
            StoredType::U64 => 1280,
        }
    }

    pub(super) fn size_bytes(self) -> usize {
        match self {
            StoredType::U8 | StoredType::I8 => 1,
            StoredType::I16 | StoredType::U16 => 2,
            StoredType::I32 | StoredType::U32 | StoredType::F32 => 4,
            StoredType::I64 | StoredType::U64 | StoredType::F64 => 8,
        }
    }
}

/// The name `nifti1.h` gives a datatype code, or `"unknown"`.
pub fn datatype_name(code: i16) -> &'static str {
    match code {
        0 => "unknown",
        1 => "binary",
        2 => "uint8",
        4 => "int16",
        8 => "int32",
        16 => "float32",
        32 => "complex64",
        64 => "float64",
        128 => "rgb24",
        256 => "int8",
        512 => "uint16",
        768 => "uint32",
        1024 => "int64",
        1280 => "uint64",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "rgba32",
        _ => "unknown",
    }
}

/// Where and how the voxel data of a checked header lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct DataLayout {
    /// `[ni, nj, nk]`.
    pub dims: [usize; 3],
    pub stored: StoredType,
    /// Byte offset of the first voxel.
    pub data_offset: u64,
    pub n_voxels: usize,
    /// `n_voxels * stored.size_bytes()`.
    pub data_bytes: u64,
}

/// The layout and byte order a file declares through `sizeof_hdr`, read
/// both ways: 348 means NIfTI-1, 540 NIfTI-2.
pub(super) fn detect_layout(first4: [u8; 4], name: &str) -> Result<(NiftiVersion, bool)> {
    let le = i32::from_le_bytes(first4);
    let be = i32::from_be_bytes(first4);
    match (le, be) {
        (348, _) => Ok((NiftiVersion::Nifti1, false)),
        (_, 348) => Ok((NiftiVersion::Nifti1, true)),
        (540, _) => Ok((NiftiVersion::Nifti2, false)),
        (_, 540) => Ok((NiftiVersion::Nifti2, true)),
        _ => Err(Error::format(format!(
            "{name}: not a NIfTI file: sizeof_hdr is {le} (little-endian) / {be} (big-endian), \
             expected 348 (NIfTI-1) or 540 (NIfTI-2)"
        ))),
    }
}

/// Bounds-checked little/big-endian field access into a header buffer.
struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    /// `N` bytes at `offset` in little-endian order (zeros when out of range).
    fn number<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = offset
            .checked_add(N)
            .and_then(|end| self.bytes.get(offset..end))
        {
            out.copy_from_slice(src);
        }
        if self.big_endian {
            out.reverse();
        }
        out
    }
    fn i16(&self, offset: usize) -> i16 {
        i16::from_le_bytes(self.number(offset))
    }
    fn i32(&self, offset: usize) -> i32 {
        i32::from_le_bytes(self.number(offset))
    }
    fn i64(&self, offset: usize) -> i64 {
        i64::from_le_bytes(self.number(offset))
    }
    fn f32(&self, offset: usize) -> f64 {
        f64::from(f32::from_le_bytes(self.number(offset)))
    }
    fn f64(&self, offset: usize) -> f64 {
        f64::from_le_bytes(self.number(offset))
    }
    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        offset
            .checked_add(len)
            .and_then(|end| self.bytes.get(offset..end))
            .unwrap_or(&[])
    }
    fn text(&self, offset: usize, len: usize) -> String {
        let raw = self.bytes(offset, len);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(raw.get(..end).unwrap_or(&[])).into_owned()
    }
}

impl NiftiHeader {
    /// Parses a header from the start of `bytes` (at least the header size of
    /// the layout its `sizeof_hdr` declares). Checks `sizeof_hdr` and the
    /// magic only; [`NiftiHeader::data_layout`] checks the rest.
    pub(super) fn parse(bytes: &[u8], name: &str) -> Result<NiftiHeader> {
        let mut first4 = [0u8; 4];
        match bytes.get(..4) {
            Some(b) => first4.copy_from_slice(b),
            None => {
                return Err(Error::format(format!(
                    "{name}: truncated NIfTI header: {} bytes",
                    bytes.len()
                )))
            }
        }
        let (version, big_endian) = detect_layout(first4, name)?;
        if bytes.len() < version.header_bytes() {
            return Err(Error::format(format!(
                "{name}: truncated NIfTI header: {} of {} bytes",
                bytes.len(),
                version.header_bytes()
            )));
        }
        let f = Fields { bytes, big_endian };
        match version {
            NiftiVersion::Nifti1 => Self::parse_nifti1(&f, name),
            NiftiVersion::Nifti2 => Self::parse_nifti2(&f, name),
        }
    }

    fn parse_nifti1(f: &Fields<'_>, name: &str) -> Result<NiftiHeader> {
        check_magic(f.bytes(344, 4), b"n+1\0", b"ni1\0", "NIfTI-1", 344, name)?;
        let mut dim = [0i64; 8];
        let mut pixdim = [0f64; 8];
        for i in 0..8 {
            dim[i] = i64::from(f.i16(40 + 2 * i));
            pixdim[i] = f.f32(76 + 4 * i);
        }
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f32(280 + 16 * r + 4 * c);
            }
        }
        Ok(NiftiHeader {
            version: NiftiVersion::Nifti1,
            big_endian: f.big_endian,
            dim,
            datatype: f.i16(70),
            bitpix: f.i16(72),
            pixdim,
            vox_offset: f.f32(108),
            scl_slope: f.f32(112),
            scl_inter: f.f32(116),
            cal_max: f.f32(124),
            cal_min: f.f32(128),
            xyzt_units: i32::from(f.bytes(123, 1).first().copied().unwrap_or(0)),
            intent_code: i32::from(f.i16(68)),
            descrip: f.text(148, 80),
            qform_code: i32::from(f.i16(252)),
            sform_code: i32::from(f.i16(254)),
            quatern: [f.f32(256), f.f32(260), f.f32(264)],
            qoffset: [f.f32(268), f.f32(272), f.f32(276)],
            srow,
        })
    }

    fn parse_nifti2(f: &Fields<'_>, name: &str) -> Result<NiftiHeader> {
        check_magic(f.bytes(4, 4), b"n+2\0", b"ni2\0", "NIfTI-2", 4, name)?;
        let mut dim = [0i64; 8];
        let mut pixdim = [0f64; 8];
        for i in 0..8 {
            dim[i] = f.i64(16 + 8 * i);
            pixdim[i] = f.f64(104 + 8 * i);
        }
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f64(400 + 32 * r + 8 * c);
            }
        }
        // An i64 offset beyond 2^53 is absurd anyway; as f64 it still fails
        // the range check in `data_layout`.
        let vox_offset = f.i64(168) as f64;
        Ok(NiftiHeader {
            version: NiftiVersion::Nifti2,
            big_endian: f.big_endian,
            dim,
            datatype: f.i16(12),
            bitpix: f.i16(14),
            pixdim,
            vox_offset,
            scl_slope: f.f64(176),
            scl_inter: f.f64(184),
            cal_max: f.f64(192),
            cal_min: f.f64(200),
            xyzt_units: f.i32(500),
            intent_code: f.i32(504),
            descrip: f.text(240, 80),
            qform_code: f.i32(344),
            sform_code: f.i32(348),
            quatern: [f.f64(352), f.f64(360), f.f64(368)],
            qoffset: [f.f64(376), f.f64(384), f.f64(392)],
            srow,
        })
    }

    /// The datatype's name (`"int16"`, `"float64"`, …).
    pub fn datatype_name(&self) -> &'static str {
        datatype_name(self.datatype)
    }

    /// The image dims `[ni, nj, nk]` after the checks claim applies: `dim[0]`
    /// from 1 to 7, every used axis ≥ 1 voxel, axes 4–7 of length 1 (a 4-D
    /// file with a trailing 1 is a 3-D volume; a real series is
    /// `Unsupported`), at most [`MAX_VOXELS`] voxels. Axes beyond `dim[0]`
    /// count as length 1, so 1-D and 2-D images become single-slice volumes.
    pub fn image_dims(&self, name: &str) -> Result<[usize; 3]> {
        let ndim = self.dim[0];
        if !(1..=7).contains(&ndim) {
            return Err(Error::format(format!(
                "{name}: dim[0] = {ndim}; a NIfTI image has 1 to 7 axes"
            )));
        }
        let used = &self.dim[1..=ndim as usize];
        if let Some((axis, n)) = used.iter().enumerate().find(|(_, n)| **n < 1) {
            return Err(Error::format(format!(
                "{name}: dim[{}] = {n}; every axis needs at least one voxel (dims {used:?})",
                axis + 1
            )));
        }
        if used.iter().skip(3).any(|n| *n != 1) {
            return Err(Error::Unsupported(format!(
                "{name}: {ndim}-D image with dims {used:?}; claim reads 3-D volumes only \
                 (axes 4 to 7 must have length 1)"
            )));
        }
        let mut dims = [1usize; 3];
        for (d, n) in dims.iter_mut().zip(used) {
            // Each axis alone must fit before the product is formed.
            *d = u64::try_from(*n)
                .ok()
                .filter(|n| *n <= MAX_VOXELS)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    Error::format(format!(
                        "{name}: dims {used:?} exceed the {MAX_VOXELS} voxels claim accepts"
                    ))
                })?;
        }
        checked_voxel_count(dims).map_err(|_| {
            Error::format(format!(
                "{name}: dims {used:?} exceed the {MAX_VOXELS} voxels claim accepts"
            ))
        })?;
        // Refused from the header, before a single voxel is decompressed.
        crate::limits::check_voxels(&dims.map(|d| d as u64), name)?;
        Ok(dims)
    }

    /// Checks dims, datatype, bitpix and `vox_offset`, and says where the
    /// voxels lie and how many bytes they take.
    pub(super) fn data_layout(&self, name: &str) -> Result<DataLayout> {
        let dims = self.image_dims(name)?;
        let stored = StoredType::from_code(self.datatype, name)?;
        let bits = stored.size_bytes() * 8;
        if usize::try_from(self.bitpix).ok() != Some(bits) {
            return Err(Error::format(format!(
                "{name}: bitpix = {} but datatype {} ({}) has {bits} bits per voxel",
                self.bitpix,
                self.datatype,
                self.datatype_name()
            )));
        }
        let min = self.version.min_vox_offset();
        let offset = self.vox_offset;
        if !offset.is_finite() || offset.fract() != 0.0 || offset < min as f64 {
            return Err(Error::format(format!(
                "{name}: vox_offset = {offset}; a single-file NIfTI needs a whole number ≥ {min}"
            )));
        }
        if offset > MAX_VOX_OFFSET as f64 {
            return Err(Error::format(format!(
                "{name}: vox_offset = {offset} is absurdly large (more than {MAX_VOX_OFFSET} bytes \
                 of header extensions)"
            )));
        }
        let n_voxels =
            checked_voxel_count(dims).map_err(|e| Error::format(format!("{name}: {e}")))?;
        let data_bytes = (n_voxels as u64)
            .checked_mul(stored.size_bytes() as u64)
            .ok_or_else(|| Error::format(format!("{name}: voxel data size overflows")))?;
        Ok(DataLayout {
            dims,
            stored,
            data_offset: offset as u64,
            n_voxels,
            data_bytes,
        })
    }

    /// The NIfTI-1 little-endian encoding of this header. Fails when a value
    /// does not fit NIfTI-1 (dims above 32767, codes above 32767).
    pub(super) fn to_nifti1_le_bytes(&self) -> Result<[u8; NIFTI1_HEADER_BYTES]> {
        let mut out = [0u8; NIFTI1_HEADER_BYTES];
        let mut put = |offset: usize, value: &[u8]| {
            if let Some(dst) = out.get_mut(offset..offset + value.len()) {
                dst.copy_from_slice(value);
            }
        };
        let short = |what: &str, v: i64| {
            i16::try_from(v).map_err(|_| {
                Error::invalid(format!(
                    "{what} = {v} does not fit a NIfTI-1 header (at most 32767)"
                ))
            })
        };
        let float = |v: f64| (v as f32).to_le_bytes();
        put(0, &(NIFTI1_HEADER_BYTES as i32).to_le_bytes());
        // `regular = 'r'`, as nifti1_io and ITK write it (an ANALYZE leftover).
        put(38, b"r");
        for (i, d) in self.dim.iter().enumerate() {
            put(40 + 2 * i, &short(&format!("dim[{i}]"), *d)?.to_le_bytes());
        }
        put(
            68,
            &short("intent_code", i64::from(self.intent_code))?.to_le_bytes(),
        );
        put(70, &self.datatype.to_le_bytes());
        put(72, &self.bitpix.to_le_bytes());
        for (i, p) in self.pixdim.iter().enumerate() {
            put(76 + 4 * i, &float(*p));
        }
        put(108, &float(self.vox_offset));
        put(112, &float(self.scl_slope));
        put(116, &float(self.scl_inter));
        put(123, &[u8::try_from(self.xyzt_units).unwrap_or(0)]);
        put(124, &float(self.cal_max));
        put(128, &float(self.cal_min));
        let descrip = self.descrip.as_bytes();
        // 79 bytes at most so the field stays NUL-terminated.
        put(148, descrip.get(..descrip.len().min(79)).unwrap_or(&[]));
        put(
            252,
            &short("qform_code", i64::from(self.qform_code))?.to_le_bytes(),
        );
        put(
            254,
            &short("sform_code", i64::from(self.sform_code))?.to_le_bytes(),
        );
        for i in 0..3 {
            put(256 + 4 * i, &float(self.quatern[i]));
            put(268 + 4 * i, &float(self.qoffset[i]));
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                put(280 + 16 * r + 4 * c, &float(*v));
            }
        }
        put(344, b"n+1\0");
        Ok(out)
    }
}

fn check_magic(
    found: &[u8],
    single_file: &[u8; 4],
    pair: &[u8; 4],
    what: &str,
    offset: usize,
    name: &str,
) -> Result<()> {
    if found == single_file {
        Ok(())
    } else if found == pair {
        Err(Error::Unsupported(format!(
            "{name}: {what} header/image pair (magic {:?}, .hdr + .img) is not supported; \
             convert it to a single .nii file",
            String::from_utf8_lossy(pair.get(..3).unwrap_or(&[]))
        )))
    } else {
        Err(Error::format(format!(
            "{name}: sizeof_hdr says {what} but the magic at byte {offset} is {found:02x?}, \
             expected {single_file:02x?} (\"{}\"){}",
            String::from_utf8_lossy(single_file.get(..3).unwrap_or(&[])),
            if found.iter().all(|b| *b == 0) {
                "; ANALYZE 7.5 files are not supported"
            } else {
                ""
            }
        )))
    }
}

impl fmt::Display for NiftiHeader {
    /// One line for `claim info`: layout, byte order, dims, datatype,
    /// pixdim, transform codes and scaling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ndim = usize::try_from(self.dim[0]).unwrap_or(0).min(7);
        let dims: Vec<String> = self.dim[1..=ndim].iter().map(i64::to_string).collect();
        let pix: Vec<String> = self.pixdim[1..=ndim.min(3)]
            .iter()
            .map(|p| format!("{p}"))
            .collect();
        write!(
            f,
            "{} {}-endian, dims {}, {} (datatype {}), pixdim {}, qform_code {}, sform_code {}, \
             scl_slope {} scl_inter {}",
            match self.version {
                NiftiVersion::Nifti1 => "NIfTI-1",
                NiftiVersion::Nifti2 => "NIfTI-2",
            },
            if self.big_endian { "big" } else { "little" },
            dims.join("×"),
            self.datatype_name(),
            self.datatype,
            pix.join("×"),
            self.qform_code,
            self.sform_code,
            self.scl_slope,
            self.scl_inter
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NiftiHeader {
        NiftiHeader {
            version: NiftiVersion::Nifti1,
            big_endian: false,
            dim: [3, 4, 5, 6, 1, 1, 1, 1],
            datatype: 4,
            bitpix: 16,
            pixdim: [-1.0, 1.25, 1.5, 8.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            cal_min: 0.0,
            cal_max: 0.0,
            xyzt_units: UNITS_MM,
            intent_code: 0,
            descrip: "claim test".into(),
            qform_code: 1,
            sform_code: 1,
            quatern: [0.0, 1.0, 0.0],
            qoffset: [10.5, -20.25, 3.0],
            srow: [
                [-1.25, 0.0, 0.0, 10.5],
                [0.0, 1.5, 0.0, -20.25],
                [0.0, 0.0, 8.0, 3.0],
            ],
        }
    }

    #[test]
    fn nifti1_encoding_parses_back() {
        let h = sample();
        let bytes = h.to_nifti1_le_bytes().unwrap();
        assert_eq!(&bytes[344..348], b"n+1\0");
        assert_eq!(NiftiHeader::parse(&bytes, "t").unwrap(), h);
    }

    #[test]
    fn big_endian_is_detected_by_sizeof_hdr() {
        assert_eq!(
            detect_layout(348i32.to_be_bytes(), "t").unwrap(),
            (NiftiVersion::Nifti1, true)
        );
        assert_eq!(
            detect_layout(540i32.to_le_bytes(), "t").unwrap(),
            (NiftiVersion::Nifti2, false)
        );
        let err = detect_layout(*b"\x1f\x8b\x08\x00", "t").unwrap_err();
        assert!(matches!(err, Error::Format(_)), "{err}");
    }

    #[test]
    fn too_long_descrip_stays_terminated() {
        let mut h = sample();
        h.descrip = "x".repeat(200);
        let bytes = h.to_nifti1_le_bytes().unwrap();
        assert_eq!(bytes[148 + 79], 0);
        assert_eq!(NiftiHeader::parse(&bytes, "t").unwrap().descrip.len(), 79);
    }

    #[test]
    fn layout_checks_name_the_field() {
        let mut h = sample();
        h.bitpix = 8;
        assert!(h
            .data_layout("f.nii")
            .unwrap_err()
            .to_string()
            .contains("bitpix"));
        let mut h = sample();
        h.vox_offset = 348.0;
        assert!(h
            .data_layout("f.nii")
            .unwrap_err()
            .to_string()
            .contains("vox_offset"));
        let mut h = sample();
        h.vox_offset = 352.5;
        assert!(h
            .data_layout("f.nii")
            .unwrap_err()
            .to_string()
            .contains("vox_offset"));
        let mut h = sample();
        h.dim[0] = 8;
        assert!(h
            .data_layout("f.nii")
            .unwrap_err()
            .to_string()
            .contains("dim[0]"));
        let mut h = sample();
        h.datatype = 32;
        let err = h.data_layout("f.nii").unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("complex64"));
        let mut h = sample();
        h.datatype = 3;
        assert!(matches!(
            h.data_layout("f.nii").unwrap_err(),
            Error::Format(_)
        ));
    }

    #[test]
    fn dims_of_lower_rank_images_pad_with_one() {
        let mut h = sample();
        h.dim = [2, 7, 9, 0, 0, 0, 0, 0];
        assert_eq!(h.image_dims("t").unwrap(), [7, 9, 1]);
        h.dim = [5, 7, 9, 2, 1, 1, 0, 0];
        assert_eq!(h.image_dims("t").unwrap(), [7, 9, 2]);
        h.dim = [5, 7, 9, 2, 1, 3, 0, 0];
        assert!(matches!(
            h.image_dims("t").unwrap_err(),
            Error::Unsupported(_)
        ));
    }

    #[test]
    fn display_summarises() {
        let s = sample().to_string();
        assert!(
            s.contains("NIfTI-1 little-endian, dims 4×5×6, int16"),
            "{s}"
        );
        assert!(s.contains("qform_code 1, sform_code 1"), "{s}");
    }
}

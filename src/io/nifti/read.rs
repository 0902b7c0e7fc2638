//! Reading: header first, then exactly the voxel bytes it declares.

use super::header::{detect_layout, DataLayout, NiftiHeader, StoredType, NIFTI1_HEADER_BYTES};
use super::NiftiRead;
use crate::error::{Error, Result};
use crate::volume::{Geometry, Image, Volume};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Voxel bytes read and converted per step.
const CHUNK_BYTES: usize = 1 << 20;
/// Up to this many output bytes the voxel buffer is allocated up front even
/// when the input size is unknown (gzip); larger outputs grow only as data
/// arrives, so a hostile header over a short stream cannot make us allocate
/// gigabytes.
const EAGER_RESERVE_BYTES: u64 = 64 << 20;
/// After the voxels of a gzip file, up to this much more is decompressed so
/// that the gzip CRC and length check runs and a corrupt or cut stream is caught.
const TRAILING_CHECK_BYTES: u64 = 1 << 20;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded source: the (possibly decompressing) reader, the number of
/// bytes it holds when known (uncompressed input) and whether it is gzip.
struct Source<R> {
    reader: R,
    known_len: Option<u64>,
    gzip: bool,
}

fn open(path: &Path) -> Result<Source<Box<dyn Read>>> {
    let file = File::open(path).map_err(|e| Error::io_at(path, &e))?;
    let known_len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let gzip = buffered
        .fill_buf()
        .map_err(|e| Error::io_at(path, &e))?
        .starts_with(&GZIP_MAGIC);
    Ok(if gzip {
        Source {
            reader: Box::new(MultiGzDecoder::new(buffered)),
            known_len: None,
            gzip: true,
        }
    } else {
        Source {
            reader: Box::new(buffered),
            known_len,
            gzip: false,
        }
    })
}

fn from_bytes(bytes: &[u8]) -> Source<Box<dyn Read + '_>> {
    if bytes.starts_with(&GZIP_MAGIC) {
        Source {
            reader: Box::new(MultiGzDecoder::new(bytes)),
            known_len: None,
            gzip: true,
        }
    } else {
        Source {
            reader: Box::new(bytes),
            known_len: Some(bytes.len() as u64),
            gzip: false,
        }
    }
}

/// Reads and checks the image at `path`.
pub(super) fn read_path(path: &Path) -> Result<NiftiRead> {
    let name = crate::error::path_text(path);
    read_source(open(path)?, &name)
}

/// Reads and checks an image held in memory; `name` labels error messages.
pub(super) fn read_bytes(bytes: &[u8], name: &str) -> Result<NiftiRead> {
    read_source(from_bytes(bytes), name)
}

/// Reads only the header at `path`.
pub(super) fn read_header_path(path: &Path) -> Result<NiftiHeader> {
    let name = crate::error::path_text(path);
    let mut source = open(path)?;
    read_header(&mut source.reader, &name)
}

/// An I/O error met while reading `what`: a short or corrupt stream is a
/// `Format` error (the file is bad), anything else `Io`.
fn stream_error(name: &str, what: &str, err: &io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => {
            Error::format(format!("{name}: file ends inside the {what} ({err})"))
        }
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => Error::format(format!(
            "{name}: corrupt compressed data in the {what}: {err}"
        )),
        _ => Error::Io(format!("{name}: reading the {what}: {err}")),
    }
}

/// Fills `buf` as far as the stream allows; returns how many bytes arrived.
fn fill<R: Read + ?Sized>(src: &mut R, buf: &mut [u8], name: &str, what: &str) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match src.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(name, what, &e)),
        }
    }
    Ok(filled)
}

fn read_header<R: Read + ?Sized>(src: &mut R, name: &str) -> Result<NiftiHeader> {
    // Read the NIfTI-1 size first: every header is at least that long, and
    // sizeof_hdr then says whether 192 more bytes (NIfTI-2) follow.
    let mut bytes = vec![0u8; NIFTI1_HEADER_BYTES];
    let got = fill(src, &mut bytes, name, "NIfTI header")?;
    let mut first4 = [0u8; 4];
    if let Some(b) = bytes.get(..4) {
        first4.copy_from_slice(b);
    }
    if got >= 4 {
        let (version, _) = detect_layout(first4, name)?;
        if got == NIFTI1_HEADER_BYTES && version.header_bytes() > NIFTI1_HEADER_BYTES {
            bytes.resize(version.header_bytes(), 0);
            let more = fill(src, &mut bytes[NIFTI1_HEADER_BYTES..], name, "NIfTI header")?;
            bytes.truncate(NIFTI1_HEADER_BYTES + more);
        } else {
            bytes.truncate(got);
        }
    } else {
        bytes.truncate(got);
    }
    NiftiHeader::parse(&bytes, name)
}

/// `(slope, intercept)` when the header asks for intensity scaling: slope
/// finite and non-zero and not the identity (1, 0). A non-finite intercept
/// counts as 0 (as nibabel does); a non-finite slope as "no scaling".
fn scaling(h: &NiftiHeader) -> Option<(f64, f64)> {
    let slope = h.scl_slope;
    let inter = if h.scl_inter.is_finite() {
        h.scl_inter
    } else {
        0.0
    };
    (slope.is_finite() && slope != 0.0 && (slope != 1.0 || inter != 0.0)).then_some((slope, inter))
}

fn read_source<R: Read>(mut source: Source<R>, name: &str) -> Result<NiftiRead> {
    let src = &mut source.reader;
    let header = read_header(src, name)?;
    let layout = header.data_layout(name)?;
    let resolved = header.resolve_geometry(name)?;

    let data_end = layout.data_offset.saturating_add(layout.data_bytes);
    if let Some(len) = source.known_len {
        if len < data_end {
            return Err(Error::format(format!(
                "{name}: truncated: the header declares {} voxel bytes from offset {} \
                 (file must hold {data_end} bytes) but it has {len}",
                layout.data_bytes, layout.data_offset
            )));
        }
    }

    // Skip header extensions without storing them.
    let gap = layout.data_offset - header.version.header_bytes() as u64;
    let skipped = io::copy(&mut src.by_ref().take(gap), &mut io::sink())
        .map_err(|e| stream_error(name, "header extensions", &e))?;
    if skipped < gap {
        return Err(Error::format(format!(
            "{name}: file ends before vox_offset {} (inside the header extensions)",
            layout.data_offset
        )));
    }

    // Input of known size was checked above: the voxels are there.
    let size_known = source.known_len.is_some();
    let image = decode_image(src, &header, &layout, resolved.geometry, size_known, name)?;

    if source.gzip {
        io::copy(
            &mut src.by_ref().take(TRAILING_CHECK_BYTES),
            &mut io::sink(),
        )
        .map_err(|e| stream_error(name, "gzip stream after the voxel data", &e))?;
    }

    Ok(NiftiRead {
        image,
        header,
        geometry_source: resolved.source,
        warnings: resolved.warnings,
    })
}

/// Reads `layout.n_voxels` stored values and converts each with `convert`,
/// which receives the value's bytes in little-endian order (padded to 8).
fn read_values<R: Read + ?Sized, T>(
    src: &mut R,
    layout: &DataLayout,
    big_endian: bool,
    size_known: bool,
    name: &str,
    convert: impl Fn([u8; 8]) -> T,
) -> Result<Vec<T>> {
    let size = layout.stored.size_bytes();
    let total = usize::try_from(layout.data_bytes)
        .map_err(|_| Error::format(format!("{name}: voxel data too large for this platform")))?;
    let mut out = Vec::new();
    let out_bytes = (layout.n_voxels as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    if size_known || out_bytes <= EAGER_RESERVE_BYTES {
        out.try_reserve_exact(layout.n_voxels).map_err(|_| {
            Error::OutOfMemory(format!(
                "{name}: cannot allocate {} voxels of {} bytes",
                layout.n_voxels,
                std::mem::size_of::<T>()
            ))
        })?;
    }
    // CHUNK_BYTES is a multiple of every value size, so values never straddle chunks.
    let mut chunk = vec![0u8; CHUNK_BYTES.min(total)];
    let mut done = 0usize;
    while done < total {
        let want = (total - done).min(chunk.len());
        let buf = chunk.get_mut(..want).unwrap_or_default();
        let got = fill(src, buf, name, "voxel data")?;
        if got < want {
            return Err(Error::format(format!(
                "{name}: truncated voxel data: expected {total} bytes from offset {}, found {}",
                layout.data_offset,
                done + got
            )));
        }
        for value in buf.chunks_exact(size) {
            let mut le = [0u8; 8];
            for (d, s) in le.iter_mut().zip(value) {
                *d = *s;
            }
            if big_endian {
                if let Some(bytes) = le.get_mut(..size) {
                    bytes.reverse();
                }
            }
            out.push(convert(le));
        }
        done += want;
    }
    Ok(out)
}

/// The stored value as f64 (for scaling and for types claim keeps as f32).
fn stored_as_f64(stored: StoredType, b: [u8; 8]) -> f64 {
    let [b0, b1, b2, b3, ..] = b;
    match stored {
        StoredType::U8 => f64::from(b0),
        StoredType::I8 => f64::from(b0 as i8),
        StoredType::I16 => f64::from(i16::from_le_bytes([b0, b1])),
        StoredType::U16 => f64::from(u16::from_le_bytes([b0, b1])),
        StoredType::I32 => f64::from(i32::from_le_bytes([b0, b1, b2, b3])),
        StoredType::U32 => f64::from(u32::from_le_bytes([b0, b1, b2, b3])),
        StoredType::I64 => i64::from_le_bytes(b) as f64,
        StoredType::U64 => u64::from_le_bytes(b) as f64,
        StoredType::F32 => f64::from(f32::from_le_bytes([b0, b1, b2, b3])),
        StoredType::F64 => f64::from_le_bytes(b),
    }
}

fn decode_image<R: Read + ?Sized>(
    src: &mut R,
    header: &NiftiHeader,
    layout: &DataLayout,
    geometry: Geometry,
    size_known: bool,
    name: &str,
) -> Result<Image> {
    let be = header.big_endian;
    let dims = layout.dims;
    let stored = layout.stored;
    let volume = |data| Volume::from_vec(dims, data, geometry);
    if let Some((slope, inter)) = scaling(header) {
        let data = read_values(src, layout, be, size_known, name, |b| {
            (stored_as_f64(stored, b) * slope + inter) as f32
        })?;
        return Ok(Image::F32(volume(data)?));
    }
    Ok(match stored {
        StoredType::U8 => Image::U8(Volume::from_vec(
            dims,
            read_values(src, layout, be, size_known, name, |b| b[0])?,
            geometry,
        )?),
        StoredType::I8 => Image::I16(Volume::from_vec(
            dims,
            read_values(src, layout, be, size_known, name, |b| i16::from(b[0] as i8))?,
            geometry,
        )?),
        StoredType::I16 => Image::I16(Volume::from_vec(
            dims,
            read_values(src, layout, be, size_known, name, |b| {
                i16::from_le_bytes([b[0], b[1]])
            })?,
            geometry,
        )?),
        StoredType::U16 => Image::U16(Volume::from_vec(
            dims,
            read_values(src, layout, be, size_known, name, |b| {
                u16::from_le_bytes([b[0], b[1]])
            })?,
            geometry,
        )?),
        StoredType::I32 => Image::I32(Volume::from_vec(
            dims,
            read_values(src, layout, be, size_known, name, |b| {
                i32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })?,
            geometry,
        )?),
        StoredType::F32 => Image::F32(volume(read_values(
            src,
            layout,
            be,
            size_known,
            name,
            |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        )?)?),
        // Wider types become f32 (EMIDEC stores float64); label maps stay
        // exact up to 2^24, intensities lose only sub-f32 precision.
        StoredType::U32 | StoredType::I64 | StoredType::U64 | StoredType::F64 => Image::F32(
            volume(read_values(src, layout, be, size_known, name, |b| {
                stored_as_f64(stored, b) as f32
            })?)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_decode_little_endian() {
        let b = |v: &[u8]| {
            let mut a = [0u8; 8];
            a[..v.len()].copy_from_slice(v);
            a
        };
        assert_eq!(stored_as_f64(StoredType::I8, b(&[0xff])), -1.0);
        assert_eq!(stored_as_f64(StoredType::I16, b(&[0x00, 0x80])), -32768.0);
        assert_eq!(stored_as_f64(StoredType::U32, b(&[0xff; 4])), 4294967295.0);
        assert_eq!(stored_as_f64(StoredType::F64, 2.5f64.to_le_bytes()), 2.5);
        assert_eq!(stored_as_f64(StoredType::I64, (-7i64).to_le_bytes()), -7.0);
    }

    #[test]
    fn scaling_only_when_meaningful() {
        let mut h = NiftiHeader::parse(&test_header(), "t").unwrap();
        for (slope, inter, want) in [
            (0.0, 5.0, None),
            (1.0, 0.0, None),
            (f64::NAN, 1.0, None),
            (2.0, 0.5, Some((2.0, 0.5))),
            (1.0, 3.0, Some((1.0, 3.0))),
            (2.0, f64::NAN, Some((2.0, 0.0))),
        ] {
            h.scl_slope = slope;
            h.scl_inter = inter;
            assert_eq!(scaling(&h), want, "slope {slope} inter {inter}");
        }
    }

    fn test_header() -> Vec<u8> {
        let mut b = vec![0u8; 348];
        b[0..4].copy_from_slice(&348i32.to_le_bytes());
        b[344..348].copy_from_slice(b"n+1\0");
        b
    }

    #[test]
    fn header_reading_stops_at_short_input() {
        let bytes = test_header();
        let err = read_header(&mut &bytes[..200], "short.nii").unwrap_err();
        assert!(
            matches!(err, Error::Format(_)) && err.to_string().contains("short.nii"),
            "{err}"
        );
        assert!(read_header(&mut &bytes[..], "ok.nii").is_ok());
    }
}

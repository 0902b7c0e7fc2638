//! A minimal, bounded zip reader for `torch.save` archives.
//!
//! Only what checkpoints need: the central directory (plain and ZIP64),
//! stored and deflated entries, CRC-32 checks. Every size the archive
//! claims is checked against the file length before anything is allocated
//! for it: entry counts and name lengths are capped, entries must lie inside
//! the file and may not overlap (so the sum of compressed sizes is at most
//! the file length), and a deflated entry may not claim more than the
//! largest expansion deflate can produce. Names are validated (UTF-8, no
//! absolute paths, `..`, backslashes or control characters); they are only
//! ever looked up, never used as file paths.

use crate::{Error, Result, ResultExt};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Most entries an archive may have. A checkpoint has one per storage plus
/// a handful (nnU-Net with optimiser state: a few hundred).
pub(crate) const MAX_ENTRIES: u64 = 1 << 16;
/// Longest entry name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 512;
/// Largest central directory read into memory.
const MAX_CENTRAL_DIRECTORY: u64 = 16 << 20;
/// Deflate expands at most ~1032:1; a larger claim is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Largest buffer reserved up front when inflating (it grows past this only
/// as real data arrives).
const MAX_RESERVE: usize = 64 << 20;

const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIGNATURE: u32 = 0x0606_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const EOCD_LEN: u64 = 22;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// Where the archive bytes come from.
pub(crate) enum ArchiveSource {
    /// The whole archive in memory (shared, so stored entries need no copy).
    Memory(Arc<[u8]>),
    /// An open file, read on demand (storages load when first used).
    File {
        /// The handle; reads seek, so they take turns.
        file: Mutex<File>,
        /// For messages.
        path: PathBuf,
        /// File length when opened.
        len: u64,
    },
}

impl std::fmt::Debug for ArchiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveSource::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
            ArchiveSource::File { path, len, .. } => {
                write!(f, "File({}, {len} bytes)", path.display())
            }
        }
    }
}

impl ArchiveSource {
    /// Total length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            ArchiveSource::Memory(bytes) => bytes.len() as u64,
            ArchiveSource::File { len, .. } => *len,
        }
    }

    /// Fills `buf` from `offset`; reading past the end is a format error
    /// (the archive claimed data it does not have).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len()) {
            return Err(Error::format(format!(
                "archive truncated: {} bytes wanted at offset {offset}, file is {} bytes",
                buf.len(),
                self.len()
            )));
        }
        match self {
            ArchiveSource::Memory(bytes) => {
                let start =
                    usize::try_from(offset).map_err(|_| Error::format("offset overflow"))?;
                let src = bytes
                    .get(start..start + buf.len())
                    .ok_or_else(|| Error::format("archive truncated"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            ArchiveSource::File { file, path, .. } => {
                // A poisoned lock only means another reader panicked mid-read;
                // every read seeks first, so the handle is still usable.
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                let read = file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| file.read_exact(buf));
                read.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        Error::format(format!(
                            "{}: file ended early (changed while being read?)",
                            path.display()
                        ))
                    } else {
                        Error::io_at(path, &e)
                    }
                })
            }
        }
    }

    /// `len` bytes at `offset` in a new buffer (`len` already validated).
    fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.len()) {
            return Err(Error::format(format!(
                "archive truncated: {len} bytes wanted at offset {offset}, file is {} bytes",
                self.len()
            )));
        }
        let n = usize::try_from(len).map_err(|_| Error::format("entry too large for memory"))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }
}

/// How an entry's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Stored,
    Deflated,
}

/// One file of the archive, located and validated.
#[derive(Clone, Debug)]
pub(crate) struct ZipEntry {
    pub(crate) name: String,
    method: Method,
    crc32: u32,
    compressed_size: u64,
    /// Uncompressed size in bytes.
    pub(crate) size: u64,
    local_header_offset: u64,
    data_offset: u64,
}

/// An entry's bytes: borrowed from an in-memory archive or owned.
#[derive(Debug)]
pub(crate) enum EntryBytes {
    Owned(Vec<u8>),
    Shared {
        buffer: Arc<[u8]>,
        start: usize,
        len: usize,
    },
}

impl EntryBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            EntryBytes::Owned(v) => v,
            // The range was checked against the buffer when the entry was read.
            EntryBytes::Shared { buffer, start, len } => {
                buffer.get(*start..*start + *len).unwrap_or(&[])
            }
        }
    }
}

/// A parsed archive: its entries by name over a shared source.
#[derive(Debug)]
pub(crate) struct Archive {
    source: Arc<ArchiveSource>,
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

/// Little-endian field readers over a byte slice, bounds-checked.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Fields {
            bytes,
            pos: 0,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::format(format!("{} truncated", self.what)));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// The central directory's location and size.
struct Directory {
    offset: u64,
    size: u64,
    entries: u64,
    /// Where the directory must end (the (ZIP64) end record).
    end: u64,
}

/// Checks an entry name: a relative, clean, printable UTF-8 path.
fn validate_name(raw: &[u8]) -> Result<String> {
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err(Error::format(format!(
            "zip entry name of {} bytes (allowed 1 to {MAX_NAME_LEN})",
            raw.len()
        )));
    }
    let name = std::str::from_utf8(raw).map_err(|_| {
        Error::format(format!(
            "zip entry name is not UTF-8: {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let bad = name.starts_with('/')
        || name.contains('\\')
        || name.chars().any(|c| c.is_control())
        || name
            .trim_end_matches('/')
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(Error::format(format!(
            "zip entry name {name:?} is not a clean relative path"
        )));
    }
    Ok(name.to_string())
}

impl Archive {
    /// Reads and validates the directory of the archive in `source`.
    pub(crate) fn open(source: Arc<ArchiveSource>) -> Result<Archive> {
        let dir = find_directory(&source)?;
        let cd = source.read_vec(dir.offset, dir.size)?;
        let mut fields = Fields::new(&cd, "zip central directory");
        let mut entries = Vec::with_capacity(dir.entries as usize);
        let mut by_name = HashMap::with_capacity(dir.entries as usize);
        for _ in 0..dir.entries {
            let Some(entry) = read_central_record(&mut fields, dir.offset)? else {
                continue; // a directory entry
            };
            if by_name.insert(entry.name.clone(), entries.len()).is_some() {
                return Err(Error::format(format!(
                    "zip entry {:?} appears twice",
                    entry.name
                )));
            }
            entries.push(entry);
        }
        let mut archive = Archive {
            source,
            entries,
            by_name,
        };
        archive.locate_data(dir.offset)?;
        Ok(archive)
    }

    /// Reads each local header to find where the data starts, and checks
    /// that entries lie before the directory without overlapping.
    fn locate_data(&mut self, directory_offset: u64) -> Result<()> {
        for entry in &mut self.entries {
            let mut header = [0u8; LOCAL_LEN];
            self.source
                .read_exact_at(entry.local_header_offset, &mut header)
                .with_context(|| format!("zip entry {:?}", entry.name))?;
            let mut f = Fields::new(&header, "zip local header");
            if f.u32()? != LOCAL_SIGNATURE {
                return Err(Error::format(format!(
                    "zip entry {:?}: no local header at offset {}",
                    entry.name, entry.local_header_offset
                )));
            }
            f.take(22)?;
            let name_len = u64::from(f.u16()?);
            let extra_len = u64::from(f.u16()?);
            let name_offset = entry.local_header_offset + LOCAL_LEN as u64;
            let local_name = self.source.read_vec(name_offset, name_len)?;
            if local_name != entry.name.as_bytes() {
                return Err(Error::format(format!(
                    "zip entry {:?}: local header names {:?}",
                    entry.name,
                    String::from_utf8_lossy(&local_name)
                )));
            }
            entry.data_offset = name_offset + name_len + extra_len;
            let end = entry.data_offset.checked_add(entry.compressed_size);
            if end.is_none_or(|end| end > directory_offset) {
                return Err(Error::format(format!(
                    "zip entry {:?}: {} bytes at offset {} run past the data area ({} bytes)",
                    entry.name, entry.compressed_size, entry.data_offset, directory_offset
                )));
            }
        }
        let mut order: Vec<&ZipEntry> = self.entries.iter().collect();
        order.sort_by_key(|e| e.local_header_offset);
        for pair in order.windows(2) {
            if let [a, b] = pair {
                if a.data_offset + a.compressed_size > b.local_header_offset {
                    return Err(Error::format(format!(
                        "zip entries {:?} and {:?} overlap",
                        a.name, b.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The entry called `name`.
    pub(crate) fn entry(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    /// All entries, in directory order.
    pub(crate) fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The position of entry `name` in [`Archive::entries`].
    pub(crate) fn entry_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The uncompressed bytes of `entry` (at most `max_size`), CRC-checked.
    pub(crate) fn read(&self, entry: &ZipEntry, max_size: u64) -> Result<EntryBytes> {
        self.read_unchecked_crc(entry, max_size)
            .and_then(|bytes| {
                let mut crc = flate2::Crc::new();
                crc.update(bytes.as_slice());
                if crc.sum() != entry.crc32 {
                    return Err(Error::format(format!(
                        "CRC-32 mismatch (stored {:#010x}, data {:#010x}): the file is corrupted",
                        entry.crc32,
                        crc.sum()
                    )));
                }
                Ok(bytes)
            })
            .with_context(|| format!("zip entry {:?}", entry.name))
    }

    fn read_unchecked_crc(&self, entry: &ZipEntry, max_size: u64) -> Result<EntryBytes> {
        if entry.size > max_size {
            return Err(Error::format(format!(
                "{} bytes, more than the {max_size} allowed",
                entry.size
            )));
        }
        match entry.method {
            Method::Stored => match &*self.source {
                ArchiveSource::Memory(buffer) => {
                    let start = usize::try_from(entry.data_offset)
                        .map_err(|_| Error::format("offset overflow"))?;
                    let len = usize::try_from(entry.size)
                        .map_err(|_| Error::format("entry too large"))?;
                    if start.checked_add(len).is_none_or(|end| end > buffer.len()) {
                        return Err(Error::format("data past the end of the archive"));
                    }
                    Ok(EntryBytes::Shared {
                        buffer: buffer.clone(),
                        start,
                        len,
                    })
                }
                ArchiveSource::File { .. } => Ok(EntryBytes::Owned(
                    self.source.read_vec(entry.data_offset, entry.size)?,
                )),
            },
            Method::Deflated => {
                let compressed = self
                    .source
                    .read_vec(entry.data_offset, entry.compressed_size)?;
                let size =
                    usize::try_from(entry.size).map_err(|_| Error::format("entry too large"))?;
                let mut out = Vec::with_capacity(size.min(MAX_RESERVE));
                let decoder = flate2::read::DeflateDecoder::new(compressed.as_slice());
                decoder
                    .take(entry.size + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::format(format!("corrupt deflate data ({e})")))?;
                if out.len() != size {
                    return Err(Error::format(format!(
                        "inflates to {} bytes, the directory says {size}",
                        out.len()
                    )));
                }
                Ok(EntryBytes::Owned(out))
            }
        }
    }
}

/// Finds the end-of-central-directory record (and its ZIP64 form).
fn find_directory(source: &ArchiveSource) -> Result<Directory> {
    let len = source.len();
    let mut first = [0u8; 1];
    if len > 0 {
        source.read_exact_at(0, &mut first)?;
    }
    // PROTO opcode first: a bare pickle, as torch.save wrote before PyTorch 1.6.
    let hint = if first[0] == 0x80 {
        " (it looks like a bare pickle: the legacy pre-1.6 torch.save format, which is not supported; re-save it with a current PyTorch)"
    } else {
        ""
    };
    if len < EOCD_LEN {
        return Err(Error::format(format!(
            "{len} bytes is too short for a zip archive{hint}"
        )));
    }
    let tail_len = len.min(EOCD_LEN + u64::from(u16::MAX));
    let tail = source.read_vec(len - tail_len, tail_len)?;
    // The record ends the file, followed only by its comment.
    let found = (0..=tail.len() - EOCD_LEN as usize).rev().find(|&i| {
        tail[i..i + 4] == EOCD_SIGNATURE.to_le_bytes()
            && usize::from(u16::from_le_bytes([tail[i + 20], tail[i + 21]]))
                == tail.len() - i - EOCD_LEN as usize
    });
    let Some(at) = found else {
        return Err(Error::format(format!(
            "not a zip archive: no end-of-central-directory record{hint}"
        )));
    };
    let eocd_pos = len - tail_len + at as u64;
    let mut f = Fields::new(&tail[at + 4..], "zip end record");
    let disk = f.u16()?;
    let cd_disk = f.u16()?;
    let entries_here = u64::from(f.u16()?);
    let entries = u64::from(f.u16()?);
    let size = u64::from(f.u32()?);
    let offset = u64::from(f.u32()?);
    if disk != 0 || cd_disk != 0 || entries_here != entries {
        return Err(Error::format("multi-disk zip archives are not supported"));
    }
    let mut dir = Directory {
        offset,
        size,
        entries,
        end: eocd_pos,
    };
    if eocd_pos >= ZIP64_LOCATOR_LEN {
        let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
        source.read_exact_at(eocd_pos - ZIP64_LOCATOR_LEN, &mut locator)?;
        let mut l = Fields::new(&locator, "zip64 locator");
        if l.u32()? == ZIP64_LOCATOR_SIGNATURE {
            l.u32()?;
            let record_offset = l.u64()?;
            if record_offset
                .checked_add(ZIP64_EOCD_LEN)
                .is_none_or(|e| e > eocd_pos - ZIP64_LOCATOR_LEN)
            {
                return Err(Error::format(format!(
                    "zip64 end record offset {record_offset} is outside the archive"
                )));
            }
            let mut record = [0u8; ZIP64_EOCD_LEN as usize];
            source.read_exact_at(record_offset, &mut record)?;
            let mut r = Fields::new(&record, "zip64 end record");
            if r.u32()? != ZIP64_EOCD_SIGNATURE {
                return Err(Error::format("zip64 locator points at no zip64 end record"));
            }
            r.take(12)?;
            let (disk, cd_disk) = (r.u32()?, r.u32()?);
            let entries_here = r.u64()?;
            dir.entries = r.u64()?;
            dir.size = r.u64()?;
            dir.offset = r.u64()?;
            dir.end = record_offset;
            if disk != 0 || cd_disk != 0 || entries_here != dir.entries {
                return Err(Error::format("multi-disk zip archives are not supported"));
            }
        }
    }
    if dir.entries > MAX_ENTRIES {
        return Err(Error::format(format!(
            "zip directory claims {} entries (at most {MAX_ENTRIES} allowed)",
            dir.entries
        )));
    }
    if dir.size > MAX_CENTRAL_DIRECTORY || dir.entries * CENTRAL_LEN as u64 > dir.size {
        return Err(Error::format(format!(
            "zip directory of {} bytes cannot hold {} entries (or exceeds {MAX_CENTRAL_DIRECTORY} bytes)",
            dir.size, dir.entries
        )));
    }
    if dir.offset.checked_add(dir.size).is_none_or(|e| e > dir.end) {
        return Err(Error::format(format!(
            "zip directory ({} bytes at offset {}) runs past its end record at {}",
            dir.size, dir.offset, dir.end
        )));
    }
    Ok(dir)
}

/// Parses one central-directory record; `None` for a directory entry.
fn read_central_record(f: &mut Fields, directory_offset: u64) -> Result<Option<ZipEntry>> {
    if f.u32()? != CENTRAL_SIGNATURE {
        return Err(Error::format(
            "zip central directory record has a bad signature",
        ));
    }
    f.take(4)?; // versions
    let flags = f.u16()?;
    let method = f.u16()?;
    f.take(4)?; // time, date
    let crc32 = f.u32()?;
    let mut compressed_size = u64::from(f.u32()?);
    let mut size = u64::from(f.u32()?);
    let name_len = usize::from(f.u16()?);
    let extra_len = usize::from(f.u16()?);
    let comment_len = usize::from(f.u16()?);
    let disk = f.u16()?;
    f.take(6)?; // attributes
    let mut local_header_offset = u64::from(f.u32()?);
    let raw_name = f.take(name_len)?;
    let extra = f.take(extra_len)?;
    f.take(comment_len)?;
    let name = validate_name(raw_name)?;
    // ZIP64: fields saturated at their maximum live in extra field 0x0001, in order.
    let mut e = Fields::new(extra, "zip extra field");
    while e.pos + 4 <= extra.len() {
        let id = e.u16()?;
        let len = usize::from(e.u16()?);
        let body = e.take(len)?;
        if id == 0x0001 {
            let mut z = Fields::new(body, "zip64 extra field");
            if size == u64::from(u32::MAX) {
                size = z.u64()?;
            }
            if compressed_size == u64::from(u32::MAX) {
                compressed_size = z.u64()?;
            }
            if local_header_offset == u64::from(u32::MAX) {
                local_header_offset = z.u64()?;
            }
        }
    }
    if flags & 0x0041 != 0 {
        return Err(Error::format(format!("zip entry {name:?} is encrypted")));
    }
    if disk != 0 && disk != u16::MAX {
        return Err(Error::format("multi-disk zip archives are not supported"));
    }
    let method = match method {
        0 => Method::Stored,
        8 => Method::Deflated,
        m => {
            return Err(Error::format(format!(
                "zip entry {name:?} uses compression method {m} (only stored and deflate are supported)"
            )))
        }
    };
    if compressed_size > directory_offset || local_header_offset >= directory_offset {
        return Err(Error::format(format!(
            "zip entry {name:?} claims {compressed_size} bytes at offset {local_header_offset}, outside the {directory_offset}-byte data area"
        )));
    }
    let plausible = match method {
        Method::Stored => size == compressed_size,
        Method::Deflated => {
            size <= compressed_size
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(64)
        }
    };
    if !plausible {
        return Err(Error::format(format!(
            "zip entry {name:?}: uncompressed size {size} does not fit compressed size {compressed_size}"
        )));
    }
    if name.ends_with('/') {
        return Ok(None);
    }
    Ok(Some(ZipEntry {
        name,
        method,
        crc32,
        compressed_size,
        size,
        local_header_offset,
        data_offset: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored zip built by hand: (name, data) pairs.
    fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u32;
            let mut crc = flate2::Crc::new();
            crc.update(data);
            let local_fields = |buf: &mut Vec<u8>| {
                buf.extend_from_slice(&0u16.to_le_bytes()); // flags
                buf.extend_from_slice(&0u16.to_le_bytes()); // method
                buf.extend_from_slice(&0u32.to_le_bytes()); // time, date
                buf.extend_from_slice(&crc.sum().to_le_bytes());
                buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
                buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
                buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
                buf.extend_from_slice(&0u16.to_le_bytes()); // extra
            };
            out.extend_from_slice(&LOCAL_SIGNATURE.to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            local_fields(&mut out);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&CENTRAL_SIGNATURE.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            central.extend_from_slice(&20u16.to_le_bytes());
            local_fields(&mut central);
            central.extend_from_slice(&[0u8; 6]); // comment length, disk, internal attributes
            central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&EOCD_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn open(bytes: Vec<u8>) -> Result<Archive> {
        Archive::open(Arc::new(ArchiveSource::Memory(bytes.into())))
    }

    #[test]
    fn reads_stored_entries() {
        let a = open(stored_zip(&[("a/x", b"hello"), ("a/y", b"")])).unwrap();
        let x = a.entry("a/x").unwrap();
        assert_eq!(a.read(x, 100).unwrap().as_slice(), b"hello");
        assert_eq!(a.read(a.entry("a/y").unwrap(), 0).unwrap().as_slice(), b"");
        assert!(a.entry("a/z").is_none());
        let err = a.read(x, 4).unwrap_err().to_string();
        assert!(err.contains("more than the 4 allowed"), "{err}");
    }

    #[test]
    fn rejects_bad_names_and_duplicates() {
        for bad in ["../x", "/x", "a/../b", "a\\b", "a//b", "a/./b", "a\u{1}b"] {
            let err = open(stored_zip(&[(bad, b"1")])).unwrap_err().to_string();
            assert!(err.contains("clean relative path"), "{bad}: {err}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(open(stored_zip(&[(&long, b"1")])).is_err());
        let err = open(stored_zip(&[("a", b"1"), ("a", b"2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn detects_corrupted_data_by_crc() {
        let mut z = stored_zip(&[("a/x", b"hello")]);
        z[LOCAL_LEN + 3] = b'X'; // inside the data, after the 3-byte name
        let a = open(z).unwrap();
        let err = a
            .read(a.entry("a/x").unwrap(), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRC-32"), "{err}");
    }

    #[test]
    fn rejects_lying_directories() {
        let z = stored_zip(&[("a/x", b"hello")]);
        let eocd = z.len() - EOCD_LEN as usize;
        let mut many = z.clone();
        many[eocd + 8..eocd + 10].copy_from_slice(&u16::MAX.to_le_bytes());
        many[eocd + 10..eocd + 12].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(open(many).unwrap_err().to_string().contains("cannot hold"));
        let mut far = z.clone();
        far[eocd + 16..eocd + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(open(far).is_err());
        assert!(open(b"not a zip at all, just some bytes".to_vec()).is_err());
        assert!(open(vec![0x80, 2, b'.']).is_err());
    }

    /// `z` (from [`stored_zip`]) with its end record replaced by a ZIP64
    /// end record claiming `entries`, its locator and a saturated end record.
    fn as_zip64(z: &[u8], entries: u64) -> Vec<u8> {
        let eocd = z.len() - EOCD_LEN as usize;
        let field = |at: usize| u64::from(u32::from_le_bytes(z[at..at + 4].try_into().unwrap()));
        let (cd_size, cd_offset) = (field(eocd + 12), field(eocd + 16));
        let mut out = z[..eocd].to_vec();
        let record_at = out.len() as u64;
        out.extend_from_slice(&ZIP64_EOCD_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&(ZIP64_EOCD_LEN - 12).to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0]); // versions
        out.extend_from_slice(&[0; 8]); // disks
        for v in [entries, entries, cd_size, cd_offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&ZIP64_LOCATOR_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&record_at.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&EOCD_SIGNATURE.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&[0xff; 4]); // entry counts
        out.extend_from_slice(&[0xff; 8]); // directory size and offset
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// The ZIP64 entry count is checked before anything is allocated for
    /// it. The `zip` crate reserves ~208 bytes per claimed entry first (a
    /// 1.16 GB request for a 256 MiB file; docs/ARCHITECTURE.md, "PNG and
    /// zip"), one reason this reader is kept.
    #[test]
    fn zip64_entry_counts_are_capped_before_allocating() {
        let z = stored_zip(&[("a/x", b"hello")]);
        let a = open(as_zip64(&z, 1)).unwrap();
        assert_eq!(
            a.read(a.entry("a/x").unwrap(), 5).unwrap().as_slice(),
            b"hello"
        );
        for claimed in [5_592_405, u64::MAX] {
            let err = open(as_zip64(&z, claimed)).unwrap_err().to_string();
            assert!(err.contains(&format!("{claimed} entries")), "{err}");
        }
    }

    /// Only the end record that ends the file is tried: a directory that
    /// fails is an error, not a cue to retry earlier end-record signatures
    /// (the `zip` crate's retries make such a file cost time quadratic in
    /// its size: 17.6 s for 1 MB; docs/ARCHITECTURE.md).
    #[test]
    fn a_failing_directory_is_not_retried_from_earlier_end_records() {
        let names: Vec<String> = (0..2000).map(|i| format!("a/{i}")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let mut z = stored_zip(&files);
        let eocd = z[z.len() - EOCD_LEN as usize..].to_vec();
        let mut lying = eocd.clone();
        lying[8..12].copy_from_slice(&[0xd1, 0x07, 0xd1, 0x07]); // 2001 entries
        for _ in 0..2000 {
            z.extend_from_slice(&lying);
        }
        let started = std::time::Instant::now();
        let err = open(z).unwrap_err();
        assert!(matches!(err, Error::Format(_)), "{err}");
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    }
}

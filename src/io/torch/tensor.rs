//! Tensors of a checkpoint: dtype, strided view, and a storage that loads
//! its bytes from the archive the first time a value is asked for.

use super::zip::{Archive, EntryBytes};
use crate::nn::Tensor;
use crate::{Error, Result};
use std::sync::{Arc, OnceLock};

/// Most dimensions a checkpoint tensor may have.
pub(crate) const MAX_DIMS: usize = 32;

/// Element type of a checkpoint tensor (the PyTorch dtypes state dicts use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TorchDType {
    /// `torch.float64`.
    F64,
    /// `torch.float32`.
    F32,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64` (e.g. BatchNorm's `num_batches_tracked`).
    I64,
    /// `torch.int32`.
    I32,
    /// `torch.int16`.
    I16,
    /// `torch.int8`.
    I8,
    /// `torch.uint8`.
    U8,
    /// `torch.uint16`.
    U16,
    /// `torch.uint32`.
    U32,
    /// `torch.uint64`.
    U64,
    /// `torch.bool`.
    Bool,
}

impl TorchDType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 | TorchDType::U64 => 8,
            TorchDType::F32 | TorchDType::I32 | TorchDType::U32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 | TorchDType::U16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            TorchDType::F64 | TorchDType::F32 | TorchDType::F16 | TorchDType::BF16
        )
    }

    /// The PyTorch name without `torch.` (`"float32"`, `"int64"`, …).
    pub fn name(self) -> &'static str {
        match self {
            TorchDType::F64 => "float64",
            TorchDType::F32 => "float32",
            TorchDType::F16 => "float16",
            TorchDType::BF16 => "bfloat16",
            TorchDType::I64 => "int64",
            TorchDType::I32 => "int32",
            TorchDType::I16 => "int16",
            TorchDType::I8 => "int8",
            TorchDType::U8 => "uint8",
            TorchDType::U16 => "uint16",
            TorchDType::U32 => "uint32",
            TorchDType::U64 => "uint64",
            TorchDType::Bool => "bool",
        }
    }

    /// The dtype of a legacy typed-storage class (`torch.FloatStorage`, …).
    pub(crate) fn from_storage_class(name: &str) -> Option<TorchDType> {
        Some(match name.strip_prefix("torch.")? {
            "DoubleStorage" => TorchDType::F64,
            "FloatStorage" => TorchDType::F32,
            "HalfStorage" => TorchDType::F16,
            "BFloat16Storage" => TorchDType::BF16,
            "LongStorage" => TorchDType::I64,
            "IntStorage" => TorchDType::I32,
            "ShortStorage" => TorchDType::I16,
            "CharStorage" => TorchDType::I8,
            "ByteStorage" => TorchDType::U8,
            "BoolStorage" => TorchDType::Bool,
            _ => return None,
        })
    }

    /// The dtype named by a `torch.<dtype>` global (as `_rebuild_tensor_v3` gets it).
    pub(crate) fn from_global(name: &str) -> Option<TorchDType> {
        Some(match name.strip_prefix("torch.")? {
            "float64" | "double" => TorchDType::F64,
            "float32" | "float" => TorchDType::F32,
            "float16" | "half" => TorchDType::F16,
            "bfloat16" => TorchDType::BF16,
            "int64" | "long" => TorchDType::I64,
            "int32" | "int" => TorchDType::I32,
            "int16" | "short" => TorchDType::I16,
            "int8" => TorchDType::I8,
            "uint8" => TorchDType::U8,
            "uint16" => TorchDType::U16,
            "uint32" => TorchDType::U32,
            "uint64" => TorchDType::U64,
            "bool" => TorchDType::Bool,
            _ => return None,
        })
    }

    /// Decodes one little-endian element as f64 (`bytes` has the element's size).
    fn decode_f64(self, b: &[u8]) -> f64 {
        let arr = |n: usize| {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[..n]);
            a
        };
        match self {
            TorchDType::F64 => f64::from_le_bytes(arr(8)),
            TorchDType::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TorchDType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            TorchDType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            _ => self.decode_i128(b) as f64,
        }
    }

    /// Decodes one little-endian element of an integer or bool type.
    fn decode_i128(self, b: &[u8]) -> i128 {
        match self {
            TorchDType::I64 => i128::from(i64::from_le_bytes(eight(b))),
            TorchDType::U64 => i128::from(u64::from_le_bytes(eight(b))),
            TorchDType::I32 => i128::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TorchDType::U32 => i128::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            TorchDType::I16 => i128::from(i16::from_le_bytes([b[0], b[1]])),
            TorchDType::U16 => i128::from(u16::from_le_bytes([b[0], b[1]])),
            TorchDType::I8 => i128::from(b[0] as i8),
            TorchDType::U8 => i128::from(b[0]),
            TorchDType::Bool => i128::from(b[0] != 0),
            TorchDType::F64 | TorchDType::F32 | TorchDType::F16 | TorchDType::BF16 => 0,
        }
    }
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// One storage of the archive (`<archive>/data/<key>`): raw little-endian
/// bytes, read and CRC-checked on first use, then kept and shared by every
/// tensor that views it.
pub(crate) struct TorchStorage {
    key: String,
    archive: Arc<Archive>,
    entry: usize,
    byte_len: usize,
    bytes: OnceLock<EntryBytes>,
}

impl std::fmt::Debug for TorchStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchStorage")
            .field("key", &self.key)
            .field("byte_len", &self.byte_len)
            .field("loaded", &self.bytes.get().is_some())
            .finish()
    }
}

impl TorchStorage {
    /// A storage over archive entry number `entry` (its size already known).
    pub(crate) fn new(key: String, archive: Arc<Archive>, entry: usize, byte_len: usize) -> Self {
        TorchStorage {
            key,
            archive,
            entry,
            byte_len,
            bytes: OnceLock::new(),
        }
    }

    /// Size in bytes.
    pub(crate) fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// The raw bytes, loaded from the archive the first time and kept.
    fn bytes(&self) -> Result<&[u8]> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes.as_slice());
        }
        let loaded = self.load()?;
        // Two threads may load at once; either result is the same bytes.
        Ok(self.bytes.get_or_init(|| loaded).as_slice())
    }

    /// Runs `f` on the raw bytes without keeping them (unless they were
    /// already kept), so a caller converting storage by storage holds one
    /// raw storage at a time.
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        match self.bytes.get() {
            Some(bytes) => Ok(f(bytes.as_slice())),
            None => Ok(f(self.load()?.as_slice())),
        }
    }

    /// Reads and CRC-checks the entry.
    fn load(&self) -> Result<EntryBytes> {
        let entry =
            self.archive.entries().get(self.entry).ok_or_else(|| {
                Error::Internal(format!("storage {} lost its zip entry", self.key))
            })?;
        let loaded = self.archive.read(entry, self.byte_len as u64)?;
        if loaded.as_slice().len() != self.byte_len {
            return Err(Error::format(format!(
                "storage {} has {} bytes, expected {}",
                self.key,
                loaded.as_slice().len(),
                self.byte_len
            )));
        }
        Ok(loaded)
    }
}

/// A tensor of a checkpoint: dtype, shape and a strided view of a storage
/// that may be shared with other tensors. Values are read from the archive
/// only when asked for.
#[derive(Clone, Debug)]
pub struct TorchTensor {
    /// Element type.
    pub dtype: TorchDType,
    /// Dimensions (empty for a 0-d tensor).
    pub shape: Vec<usize>,
    strides: Vec<usize>,
    storage_offset: usize,
    storage: Arc<TorchStorage>,
}

/// Number of elements of `shape`, `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Checks that a view lies inside a storage of `storage_len` elements.
fn check_view(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    storage_len: usize,
) -> std::result::Result<usize, String> {
    if shape.len() != strides.len() {
        return Err(format!(
            "shape {shape:?} and strides {strides:?} have different lengths"
        ));
    }
    if shape.len() > MAX_DIMS {
        return Err(format!("{} dimensions (at most {MAX_DIMS})", shape.len()));
    }
    let numel = element_count(shape).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if numel == 0 {
        if offset > storage_len {
            return Err(format!(
                "storage offset {offset} past a storage of {storage_len} elements"
            ));
        }
        return Ok(0);
    }
    let last = shape
        .iter()
        .zip(strides)
        .try_fold(offset, |acc, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        })
        .ok_or_else(|| format!("shape {shape:?} with strides {strides:?} overflows"))?;
    if last >= storage_len {
        return Err(format!(
            "view (offset {offset}, shape {shape:?}, strides {strides:?}) reaches element {last} of a storage of {storage_len} elements"
        ));
    }
    Ok(numel)
}

impl TorchTensor {
    /// Builds a view, checking it lies inside the storage. Returns the view
    /// and its element count.
    pub(crate) fn new(
        dtype: TorchDType,
        shape: Vec<usize>,
        strides: Vec<usize>,
        storage_offset: usize,
        storage: Arc<TorchStorage>,
    ) -> std::result::Result<(TorchTensor, usize), String> {
        let item = dtype.size_in_bytes();
        if storage.byte_len() % item != 0 {
            return Err(format!(
                "storage {} of {} bytes is not a whole number of {} elements",
                storage.key,
                storage.byte_len(),
                dtype.name()
            ));
        }
        let numel = check_view(&shape, &strides, storage_offset, storage.byte_len() / item)?;
        Ok((
            TorchTensor {
                dtype,
                shape,
                strides,
                storage_offset,
                storage,
            },
            numel,
        ))
    }

    /// Strides in elements, one per dimension.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element in the storage, in elements.
    pub fn storage_offset(&self) -> usize {
        self.storage_offset
    }

    /// Number of elements (saturating, should `shape` have been edited into overflow).
    pub fn numel(&self) -> usize {
        element_count(&self.shape).unwrap_or(usize::MAX)
    }

    /// The storage's key in the archive (`<archive>/data/<key>`).
    pub fn storage_key(&self) -> &str {
        &self.storage.key
    }

    /// Whether both tensors view the same storage (PyTorch aliasing).
    pub fn shares_storage_with(&self, other: &TorchTensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Whether the elements are row-major and contiguous in the storage.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }

    /// Identity of the view, for sharing materialised copies.
    pub(crate) fn view_key(&self) -> (usize, usize, TorchDType, Vec<usize>, Vec<usize>) {
        (
            Arc::as_ptr(&self.storage) as usize,
            self.storage_offset,
            self.dtype,
            self.shape.clone(),
            self.strides.clone(),
        )
    }

    /// Identity of the storage (equal for tensors that share it).
    pub(crate) fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.storage) as usize
    }

    /// Decodes every element in logical (row-major) order, loading the
    /// storage (and keeping it for the tensors that share it).
    fn gather<T>(&self, decode: impl Fn(&[u8]) -> T) -> Result<Vec<T>> {
        self.gather_in(self.storage.bytes()?, decode)
    }

    /// [`Self::gather`] over the storage's raw `bytes`. The view is
    /// re-checked because `shape` is public and may have been edited.
    fn gather_in<T>(&self, bytes: &[u8], decode: impl Fn(&[u8]) -> T) -> Result<Vec<T>> {
        let item = self.dtype.size_in_bytes();
        let numel = check_view(
            &self.shape,
            &self.strides,
            self.storage_offset,
            self.storage.byte_len() / item,
        )
        .map_err(|m| Error::invalid(format!("tensor view: {m}")))?;
        if bytes.len() != self.storage.byte_len() {
            return Err(Error::Internal("storage bytes of the wrong length".into()));
        }
        let element = |index: usize| -> Result<T> {
            let start = index * item;
            bytes
                .get(start..start + item)
                .map(&decode)
                .ok_or_else(|| Error::Internal(format!("element {index} outside a checked view")))
        };
        if self.is_contiguous() {
            let start = self.storage_offset * item;
            let region = bytes
                .get(start..start + numel * item)
                .ok_or_else(|| Error::Internal("contiguous view outside its storage".into()))?;
            return Ok(region.chunks_exact(item).map(&decode).collect());
        }
        let mut out = Vec::with_capacity(numel);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            let at = self
                .strides
                .iter()
                .zip(&index)
                .fold(self.storage_offset, |acc, (&s, &i)| acc + s * i);
            out.push(element(at)?);
            // Odometer over the logical index, last dimension fastest.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }

    /// The values as f32 in row-major order (floating-point dtypes only;
    /// f64 is rounded, f16 and bf16 widened exactly).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        self.f32_values_in(self.storage.bytes()?)
    }

    /// [`Self::to_f32_vec`] over the storage's raw `bytes`.
    fn f32_values_in(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let dtype = self.dtype;
        match dtype {
            TorchDType::F32 => {
                self.gather_in(bytes, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            TorchDType::F16 => {
                self.gather_in(bytes, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            TorchDType::BF16 => {
                self.gather_in(bytes, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            TorchDType::F64 => self.gather_in(bytes, |b| f64::from_le_bytes(eight(b)) as f32),
            _ => Err(Error::invalid(format!(
                "a {} tensor is not floating point",
                dtype.name()
            ))),
        }
    }

    /// f32 [`Tensor`]s of several float views of this tensor's storage,
    /// reading the storage once and keeping no raw copy of it.
    pub(crate) fn f32_tensors_sharing_storage(views: &[&TorchTensor]) -> Result<Vec<Tensor>> {
        let Some(first) = views.first() else {
            return Ok(Vec::new());
        };
        first.storage.with_bytes(|bytes| {
            views
                .iter()
                .map(|t| {
                    if !Arc::ptr_eq(&t.storage, &first.storage) {
                        return Err(Error::Internal("views of different storages".into()));
                    }
                    Tensor::from_vec(t.f32_values_in(bytes)?, &t.shape)
                })
                .collect()
        })?
    }

    /// The values as f64 in row-major order (any dtype; 64-bit integers
    /// beyond 2^53 round).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let dtype = self.dtype;
        self.gather(|b| dtype.decode_f64(b))
    }

    /// The values as i64 in row-major order (integer and bool dtypes; a
    /// uint64 value beyond i64 is an error).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        let dtype = self.dtype;
        if dtype.is_float() {
            return Err(Error::invalid(format!(
                "a {} tensor is not an integer tensor",
                dtype.name()
            )));
        }
        self.gather(|b| dtype.decode_i128(b))?
            .into_iter()
            .map(|v| {
                i64::try_from(v)
                    .map_err(|_| Error::invalid(format!("value {v} does not fit in i64")))
            })
            .collect()
    }

    /// The tensor as a contiguous f32 [`Tensor`] (floating-point dtypes only).
    pub fn to_f32_tensor(&self) -> Result<Tensor> {
        Tensor::from_vec(self.to_f32_vec()?, &self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_checked_against_the_storage() {
        assert_eq!(check_view(&[2, 3], &[3, 1], 0, 6), Ok(6));
        assert_eq!(check_view(&[3, 2], &[1, 3], 0, 6), Ok(6));
        assert_eq!(check_view(&[2, 3], &[3, 1], 4, 10), Ok(6));
        assert!(check_view(&[2, 3], &[3, 1], 5, 10).is_err());
        assert_eq!(check_view(&[], &[], 5, 6), Ok(1));
        assert!(check_view(&[], &[], 6, 6).is_err());
        assert_eq!(check_view(&[0, 3], &[3, 1], 6, 6), Ok(0));
        assert!(check_view(&[0, 3], &[3, 1], 7, 6).is_err());
        assert!(check_view(&[usize::MAX, 2], &[1, 1], 0, 6).is_err());
        assert!(check_view(&[2, 2], &[usize::MAX, 1], 0, 6).is_err());
        assert!(check_view(&[2], &[1, 1], 0, 6).is_err());
    }

    #[test]
    fn dtype_names_round_trip() {
        for name in [
            "float32", "float64", "float16", "bfloat16", "int64", "uint16", "bool",
        ] {
            let dt = TorchDType::from_global(&format!("torch.{name}")).unwrap();
            assert_eq!(dt.name(), name);
        }
        assert_eq!(
            TorchDType::from_storage_class("torch.HalfStorage"),
            Some(TorchDType::F16)
        );
        assert_eq!(
            TorchDType::from_storage_class("torch.ComplexFloatStorage"),
            None
        );
        assert_eq!(TorchDType::I16.decode_i128(&(-5i16).to_le_bytes()), -5);
        assert_eq!(
            TorchDType::BF16.decode_f64(&half::bf16::from_f32(0.75).to_le_bytes()),
            0.75
        );
    }
}

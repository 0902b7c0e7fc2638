//! [`CudaStorage`]: a tensor's data in device memory.

use super::device::CudaDevice;
use crate::nn::DType;
use crate::{Error, Result};
use cudarc::driver::CudaSlice;
use half::f16;

/// A device buffer from a handle's pool that goes back to it on drop
/// (after all work queued on the stream so far, which is the only work that
/// can still use it). Holds kernel operands that are not tensors too (ids,
/// workspaces).
pub(super) struct Buffer {
    /// Always `Some` until `drop`; may be longer than asked (pool buckets
    /// round sizes up).
    buf: Option<CudaSlice<u8>>,
    device: CudaDevice,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.device.release(buf);
        }
    }
}

impl Buffer {
    /// At least `bytes` uninitialised bytes.
    pub(super) fn uninit(device: &CudaDevice, bytes: usize) -> Result<Buffer> {
        Ok(Buffer {
            buf: Some(device.alloc_bytes(bytes)?),
            device: device.clone(),
        })
    }

    /// A copy of host bytes.
    pub(super) fn upload(device: &CudaDevice, bytes: &[u8]) -> Result<Buffer> {
        let mut out = Buffer::uninit(device, bytes.len())?;
        if !bytes.is_empty() {
            let n = bytes.len();
            let buf = out.slice_mut()?;
            device.guard("uploading to the GPU", |s| {
                let mut dst = buf.slice_mut(0..n);
                s.memcpy_htod(bytes, &mut dst)
            })?;
        }
        Ok(out)
    }

    /// The first `n` bytes, downloaded (waits for the stream).
    pub(super) fn download(&self, n: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; n];
        if n > 0 {
            let buf = self.slice()?;
            if n > buf.len() {
                return Err(Error::Internal(format!(
                    "download of {n} bytes from a {}-byte buffer",
                    buf.len()
                )));
            }
            self.device.guard("downloading from the GPU", |s| {
                s.memcpy_dtoh(&buf.slice(0..n), &mut bytes)?;
                s.synchronize()
            })?;
        }
        Ok(bytes)
    }

    fn slice(&self) -> Result<&CudaSlice<u8>> {
        self.buf
            .as_ref()
            .ok_or_else(|| Error::Internal("CUDA buffer used after release".into()))
    }

    fn slice_mut(&mut self) -> Result<&mut CudaSlice<u8>> {
        self.buf
            .as_mut()
            .ok_or_else(|| Error::Internal("CUDA buffer used after release".into()))
    }

    /// The device address of the first byte, for kernel arguments.
    pub(super) fn address(&self) -> Result<u64> {
        Ok(self.device.address(self.slice()?))
    }

    /// The handle the buffer belongs to.
    pub(super) fn device(&self) -> &CudaDevice {
        &self.device
    }
}

/// Contiguous row-major values of one element type in device memory, on
/// one handle's stream, in a pooled [`Buffer`].
pub struct CudaStorage {
    buffer: Buffer,
    dtype: DType,
    len: usize,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?} × {}, cuda:{})",
            self.dtype,
            self.len,
            self.device().ordinal()
        )
    }
}

/// Bytes of `len` elements of `dtype`, refusing overflow.
pub(super) fn byte_len(len: usize, dtype: DType) -> Result<usize> {
    len.checked_mul(dtype.size_in_bytes())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::OutOfMemory(format!("{len} {dtype:?} values do not fit in memory")))
}

impl CudaStorage {
    /// Uninitialised storage of `len` elements for a kernel that writes
    /// every one of them.
    pub(super) fn uninit(device: &CudaDevice, len: usize, dtype: DType) -> Result<CudaStorage> {
        Ok(CudaStorage {
            buffer: Buffer::uninit(device, byte_len(len, dtype)?)?,
            dtype,
            len,
        })
    }

    /// Uploads host values as `dtype` (narrowed to f16 on the host with
    /// round-to-nearest-even, one copy to the device).
    pub fn from_host_f32(device: &CudaDevice, data: &[f32], dtype: DType) -> Result<CudaStorage> {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => data.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            DType::F16 => data
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_ne_bytes())
                .collect(),
        };
        Ok(CudaStorage {
            buffer: Buffer::upload(device, &bytes)?,
            dtype,
            len: data.len(),
        })
    }

    /// Downloads the values, widened to f32 (waits for the stream).
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        let bytes = self.buffer.download(self.byte_len())?;
        Ok(match self.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16::from_ne_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The handle whose stream and pool the buffer belongs to.
    pub fn device(&self) -> &CudaDevice {
        self.buffer.device()
    }

    /// Bytes the values occupy.
    pub fn byte_len(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// The device address of the first element, for kernel arguments.
    pub(super) fn address(&self) -> Result<u64> {
        self.buffer.address()
    }

    /// Overwrites this storage's values with `src`'s (same type and length),
    /// in place and in stream order: how a captured graph's input buffers
    /// get each replay's values. Every tensor sharing this storage sees the
    /// new values, so only the owner of a graph's inputs calls it.
    pub fn overwrite_from(&self, src: &CudaStorage) -> Result<()> {
        if src.dtype != self.dtype || src.len != self.len {
            return Err(Error::invalid(format!(
                "overwrite: {:?} × {} into {:?} × {}",
                src.dtype, src.len, self.dtype, self.len
            )));
        }
        let bytes = self.len * self.dtype.size_in_bytes();
        if bytes == 0 {
            return Ok(());
        }
        let dev = self.device();
        dev.order_after(src.device())?;
        let (dst, from) = (self.address()?, src.address()?);
        dev.guard("copying on the GPU", |s| {
            // SAFETY: both addresses start live buffers of at least `bytes`
            // bytes (each storage's length in its type), owned by storages
            // that outlive the queued copy (buffers return to the pool in
            // stream order); the copy is queued on the stream that orders
            // every use of them.
            unsafe { cudarc::driver::result::memcpy_dtod_async(dst, from, bytes, s.cu_stream()) }
        })?;
        src.device().order_after(dev)
    }
}

//! [`Storage`]: a tensor's data on one device, and the one place where
//! each op is dispatched to that device's [`BackendStorage`]
//! implementation. Operands on different devices are refused here.

use crate::backend::cpu::{CpuDevice, CpuStorage};
use crate::backend::cuda::CudaStorage;
use crate::backend::desc::{
    AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry, ConvGeometry,
    KnownBlend, LinearAttentionDesc, LinearDesc, MatmulDesc, NormDesc, NormOperands, OptimizerStep,
    UnaryOp, WindowSumDesc,
};
use crate::backend::{BackendDevice, BackendStorage, NoiseKey};
use crate::nn::{DType, Device};
use crate::{Error, Result};

/// The data of a tensor, one variant per device back-end.
#[derive(Debug)]
pub enum Storage {
    /// Host memory, f32.
    Cpu(CpuStorage),
    /// GPU memory, f16 or f32 (a value exists only in `cuda` builds).
    Cuda(CudaStorage),
}

/// Picks the storage variant of type `Self` out of a [`Storage`].
trait Variant: Sized {
    fn of(s: &Storage) -> Option<&Self>;
}

impl Variant for CpuStorage {
    fn of(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cpu(c) => Some(c),
            Storage::Cuda(_) => None,
        }
    }
}

impl Variant for CudaStorage {
    fn of(s: &Storage) -> Option<&Self> {
        match s {
            Storage::Cuda(c) => Some(c),
            Storage::Cpu(_) => None,
        }
    }
}

fn mismatch(a: &Storage, b: &Storage) -> Error {
    Error::invalid(format!(
        "operands on different devices or of different types: {} ({:?}) and {} ({:?})",
        a.device(),
        a.dtype(),
        b.device(),
        b.dtype()
    ))
}

/// `other` as the same variant as `this`, or a device-mismatch error.
fn same<'a, S: Variant>(this: &Storage, other: &'a Storage) -> Result<&'a S> {
    S::of(other).ok_or_else(|| mismatch(this, other))
}

/// Every one of `parts` as the same variant as `first`.
fn all<'a, S: Variant>(first: &Storage, parts: &[&'a Storage]) -> Result<Vec<&'a S>> {
    parts.iter().map(|p| same(first, p)).collect()
}

fn same_opt<'a, S: Variant>(this: &Storage, other: Option<&'a Storage>) -> Result<Option<&'a S>> {
    other.map(|o| same(this, o)).transpose()
}

/// Runs `$body` with `$x` bound to the device storage of `$s`, wrapping
/// the result in the same variant.
macro_rules! on_device {
    ($s:expr, $x:ident => $body:expr) => {
        match $s {
            Storage::Cpu($x) => Ok(Storage::Cpu($body)),
            Storage::Cuda($x) => Ok(Storage::Cuda($body)),
        }
    };
}

// Without the `cuda` feature the CUDA arms take an uninhabited value.
#[cfg_attr(not(feature = "cuda"), allow(unreachable_code))]
impl Storage {
    /// The device holding the data.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.device().clone()),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values in host memory, as f32.
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        match self {
            Storage::Cpu(s) => s.to_host_f32(),
            Storage::Cuda(s) => s.to_host_f32(),
        }
    }

    /// Host values uploaded to `device` as `dtype`.
    pub fn from_f32(device: &Device, data: &[f32], dtype: DType) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.storage_from_f32(data, dtype)?)),
            Device::Cuda(d) => Ok(Storage::Cuda(d.storage_from_f32(data, dtype)?)),
        }
    }

    /// `n` copies of `value` on `device`.
    pub fn full(device: &Device, value: f32, n: usize, dtype: DType) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.storage_full(value, n, dtype)?)),
            Device::Cuda(d) => Ok(Storage::Cuda(d.storage_full(value, n, dtype)?)),
        }
    }

    /// Counter-based standard normal noise (see [`BackendDevice::normal_noise`]).
    pub fn normal_noise(
        device: &Device,
        key: NoiseKey,
        items: &[u32],
        per_item: usize,
        dtype: DType,
    ) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(
                CpuDevice.normal_noise(key, items, per_item, dtype)?,
            )),
            Device::Cuda(d) => Ok(Storage::Cuda(d.normal_noise(key, items, per_item, dtype)?)),
        }
    }

    /// Sinusoidal embedding on `device`.
    pub fn sinusoidal_embedding(
        device: &Device,
        t: &[f32],
        dim: usize,
        dtype: DType,
    ) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuDevice.sinusoidal_embedding(t, dim, dtype)?)),
            Device::Cuda(d) => Ok(Storage::Cuda(d.sinusoidal_embedding(t, dim, dtype)?)),
        }
    }

    pub(crate) fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        on_device!(self, x => x.to_dtype(dtype)?)
    }

    pub(crate) fn unary(&self, op: UnaryOp) -> Result<Storage> {
        on_device!(self, x => x.unary(op)?)
    }

    pub(crate) fn unary_backward(&self, grad: &Storage, op: UnaryOp) -> Result<Storage> {
        on_device!(self, x => x.unary_backward(same(self, grad)?, op)?)
    }

    pub(crate) fn binary(&self, rhs: &Storage, op: BinaryOp, s: &BroadcastDesc) -> Result<Storage> {
        on_device!(self, x => x.binary(same(self, rhs)?, op, s)?)
    }

    pub(crate) fn lincomb(&self, alpha: f32, rhs: &Storage, beta: f32) -> Result<Storage> {
        on_device!(self, x => x.lincomb(alpha, same(self, rhs)?, beta)?)
    }

    pub(crate) fn permute(&self, shape: &[usize], perm: &[usize]) -> Result<Storage> {
        on_device!(self, x => x.permute(shape, perm)?)
    }

    pub(crate) fn flip(&self, shape: &[usize], axes: &[usize]) -> Result<Storage> {
        on_device!(self, x => x.flip(shape, axes)?)
    }

    pub(crate) fn narrow(&self, axis: AxisDesc, start: usize, len: usize) -> Result<Storage> {
        on_device!(self, x => x.narrow(axis, start, len)?)
    }

    pub(crate) fn cat(
        parts: &[&Storage],
        outer: usize,
        sizes: &[usize],
        inner: usize,
    ) -> Result<Storage> {
        let first = *parts
            .first()
            .ok_or_else(|| Error::invalid("cat of no tensors"))?;
        match first {
            Storage::Cpu(_) => Ok(Storage::Cpu(CpuStorage::cat(
                &all(first, parts)?,
                outer,
                sizes,
                inner,
            )?)),
            Storage::Cuda(_) => Ok(Storage::Cuda(CudaStorage::cat(
                &all(first, parts)?,
                outer,
                sizes,
                inner,
            )?)),
        }
    }

    pub(crate) fn optimizer_update(
        &self,
        grad: &Storage,
        state: &[&Storage],
        step: &OptimizerStep,
    ) -> Result<(Storage, Vec<Storage>)> {
        match self {
            Storage::Cpu(x) => {
                let (p, s) = x.optimizer_update(same(self, grad)?, &all(self, state)?, step)?;
                Ok((Storage::Cpu(p), s.into_iter().map(Storage::Cpu).collect()))
            }
            Storage::Cuda(x) => {
                let (p, s) = x.optimizer_update(same(self, grad)?, &all(self, state)?, step)?;
                Ok((Storage::Cuda(p), s.into_iter().map(Storage::Cuda).collect()))
            }
        }
    }

    pub(crate) fn squared_norms(parts: &[&Storage]) -> Result<Vec<f64>> {
        let Some(first) = parts.first() else {
            return Ok(Vec::new());
        };
        match first {
            Storage::Cpu(_) => CpuStorage::squared_norms(&all(first, parts)?),
            Storage::Cuda(_) => CudaStorage::squared_norms(&all(first, parts)?),
        }
    }

    pub(crate) fn index_rows(&self, cols: usize, ids: &[usize]) -> Result<Storage> {
        on_device!(self, x => x.index_rows(cols, ids)?)
    }

    pub(crate) fn softmax(&self, axis: AxisDesc) -> Result<Storage> {
        on_device!(self, x => x.softmax(axis)?)
    }

    pub(crate) fn softmax_backward(&self, grad: &Storage, axis: AxisDesc) -> Result<Storage> {
        on_device!(self, x => x.softmax_backward(same(self, grad)?, axis)?)
    }

    pub(crate) fn reduce_sum(&self, axis: AxisDesc) -> Result<Storage> {
        on_device!(self, x => x.reduce_sum(axis)?)
    }

    pub(crate) fn group_norm(&self, d: &NormDesc, o: NormOperands<'_, Storage>) -> Result<Storage> {
        on_device!(self, x => {
            let scale_shift = match o.scale_shift {
                Some((a, b)) => Some((same(self, a)?, same(self, b)?)),
                None => None,
            };
            x.group_norm(
                d,
                NormOperands {
                    weight: same_opt(self, o.weight)?,
                    bias: same_opt(self, o.bias)?,
                    scale_shift,
                    residual: same_opt(self, o.residual)?,
                },
            )?
        })
    }

    pub(crate) fn layer_norm_channels(
        &self,
        gamma: &Storage,
        batch: usize,
        channels: usize,
        spatial: usize,
        eps: f64,
    ) -> Result<Storage> {
        on_device!(self, x => x.layer_norm_channels(same(self, gamma)?, batch, channels, spatial, eps)?)
    }

    pub(crate) fn linear(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        d: &LinearDesc,
    ) -> Result<Storage> {
        on_device!(self, x => x.linear(same(self, weight)?, same_opt(self, bias)?, d)?)
    }

    pub(crate) fn conv2d(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        residual: Option<&Storage>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        on_device!(self, x => x.conv2d(
            same(self, weight)?,
            same_opt(self, bias)?,
            same_opt(self, residual)?,
            g,
        )?)
    }

    pub(crate) fn conv_transpose2d(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        on_device!(self, x => x.conv_transpose2d(same(self, weight)?, same_opt(self, bias)?, g)?)
    }

    pub(crate) fn conv3d(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        g: &Conv3dGeometry,
    ) -> Result<Storage> {
        on_device!(self, x => x.conv3d(same(self, weight)?, same_opt(self, bias)?, g)?)
    }

    pub(crate) fn conv_transpose3d(
        &self,
        weight: &Storage,
        bias: Option<&Storage>,
        g: &Conv3dGeometry,
    ) -> Result<Storage> {
        on_device!(self, x => x.conv_transpose3d(same(self, weight)?, same_opt(self, bias)?, g)?)
    }

    pub(crate) fn conv3d_weight_grad(
        &self,
        out_grad: &Storage,
        g: &Conv3dGeometry,
    ) -> Result<Storage> {
        on_device!(self, x => x.conv3d_weight_grad(same(self, out_grad)?, g)?)
    }

    pub(crate) fn matmul(&self, rhs: &Storage, d: &MatmulDesc) -> Result<Storage> {
        on_device!(self, a => a.matmul(same(self, rhs)?, d)?)
    }

    pub(crate) fn linear_attention(&self, d: &LinearAttentionDesc) -> Result<Storage> {
        on_device!(self, x => x.linear_attention(d)?)
    }

    pub(crate) fn attention(
        &self,
        k: &Storage,
        v: &Storage,
        bias: Option<&Storage>,
        d: &AttentionDesc,
    ) -> Result<Storage> {
        on_device!(self, q => BackendStorage::attention(
            q,
            same(self, k)?,
            same(self, v)?,
            same_opt(self, bias)?,
            d,
        )?)
    }

    pub(crate) fn rotary(
        &self,
        freqs: &Storage,
        tokens: usize,
        head_dim: usize,
    ) -> Result<Storage> {
        on_device!(self, x => x.rotary(same(self, freqs)?, tokens, head_dim)?)
    }

    pub(crate) fn known_blend(
        &self,
        ground_truth: &Storage,
        known: &Storage,
        noise: &Storage,
        p: KnownBlend,
    ) -> Result<Storage> {
        on_device!(self, x => x.known_blend(
            same(self, ground_truth)?,
            same(self, known)?,
            same(self, noise)?,
            p,
        )?)
    }

    pub(crate) fn ancestral_step(
        &self,
        eps: &Storage,
        noise: &Storage,
        p: AncestralStep,
    ) -> Result<Storage> {
        on_device!(self, x => x.ancestral_step(same(self, eps)?, same(self, noise)?, p)?)
    }

    pub(crate) fn accumulate_windows(
        &self,
        sum: &Storage,
        gaussian: &Storage,
        d: &WindowSumDesc,
    ) -> Result<Storage> {
        on_device!(self, x => x.accumulate_windows(same(self, sum)?, same(self, gaussian)?, d)?)
    }

    pub(crate) fn argmax(&self, axis: AxisDesc) -> Result<Storage> {
        on_device!(self, x => x.argmax(axis)?)
    }
}

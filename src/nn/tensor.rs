//! [`Tensor`]: shape + dtype + storage, and the shape-only operations.

use crate::backend::cpu::CpuStorage;
use crate::backend::desc::AxisDesc;
use crate::backend::NoiseKey;
use crate::nn::autograd::{unnarrow, Node};
use crate::nn::storage::Storage;
use crate::nn::{DType, Device};
use crate::{Error, Result};
use std::sync::Arc;

/// An n-dimensional array: contiguous row-major data shared by reference
/// count, so `clone` and [`Tensor::reshape`] are free.
#[derive(Clone, Debug)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    /// The autograd node of a variable or of a result that depends on one.
    node: Option<Arc<Node>>,
}

/// Refuses element counts whose f32 buffer would not fit in memory.
pub(crate) fn checked_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
        .ok_or_else(|| Error::OutOfMemory(format!("tensor of shape {shape:?} is too large")))
}

impl Tensor {
    /// A CPU tensor over `data` with the given shape.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = checked_count(shape)?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            storage: Arc::new(Storage::Cpu(CpuStorage::new(data))),
            shape: shape.to_vec(),
            node: None,
        })
    }

    /// Host values uploaded to `device` as `dtype` (one copy).
    pub fn from_slice_on(
        data: &[f32],
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let n = checked_count(shape)?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Tensor::from_storage(Storage::from_f32(device, data, dtype)?, shape.to_vec())
    }

    /// A tensor of `value` on `device`.
    pub fn full_on(value: f32, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let n = checked_count(shape)?;
        Tensor::from_storage(Storage::full(device, value, n, dtype)?, shape.to_vec())
    }

    /// Standard normal noise of `shape` on `device` from the counter-based
    /// generator: row `i` of dimension 0 is item `items[i]`, its elements
    /// numbered from 0. The same (key, item, element) gives the same value
    /// on every device and for any batching of the items.
    pub fn normal_noise(
        key: NoiseKey,
        items: &[u32],
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let n = checked_count(shape)?;
        if shape.first() != Some(&items.len()) {
            return Err(Error::invalid(format!(
                "normal_noise: {} items for shape {shape:?}",
                items.len()
            )));
        }
        let per_item = n / items.len().max(1);
        Tensor::from_storage(
            Storage::normal_noise(device, key, items, per_item, dtype)?,
            shape.to_vec(),
        )
    }

    /// A CPU tensor filled with `value`.
    pub fn full(value: f32, shape: &[usize]) -> Result<Tensor> {
        let n = checked_count(shape)?;
        Tensor::from_vec(vec![value; n], shape)
    }

    /// A CPU tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Tensor::full(0.0, shape)
    }

    /// Wraps a back-end result whose length must match `shape`.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_count(&shape)?;
        if n != storage.len() {
            return Err(Error::Internal(format!(
                "back-end returned {} values for shape {shape:?}",
                storage.len()
            )));
        }
        Ok(Tensor {
            storage: Arc::new(storage),
            shape,
            node: None,
        })
    }

    /// The result of an op that keeps this tensor's shape.
    pub(crate) fn same_shape(&self, storage: Storage) -> Result<Tensor> {
        Tensor::from_storage(storage, self.shape.clone())
    }

    /// The autograd node, if tracked.
    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// The same values and shape with another autograd node.
    pub(crate) fn with_node(&self, node: Option<Arc<Node>>) -> Tensor {
        Tensor {
            storage: Arc::clone(&self.storage),
            shape: self.shape.clone(),
            node,
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Device holding the data.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The storage (for back-end dispatch).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The values as a host slice: CPU tensors only (an error on other
    /// devices). For code at the host edge (I/O, metrics); models, samplers
    /// and predictors use ops instead.
    pub fn as_slice(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(v) => Ok(v.as_slice()),
            other => Err(Error::invalid(format!(
                "host slice of a tensor on {}: copy it with to_vec()",
                other.device()
            ))),
        }
    }

    /// Copies the values to a host vector, row-major, as f32 (a download
    /// for GPU tensors).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.storage.to_host_f32()
    }

    /// This tensor on `device` as `dtype`: shared when nothing changes,
    /// else one conversion/copy (through the host between devices).
    pub fn to_device(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        if self.device().same(device) {
            return self.to_dtype(dtype);
        }
        let host = self.to_vec()?;
        let out = Tensor::from_slice_on(&host, &self.shape, device, dtype)?;
        let (back_device, back_dtype) = (self.device(), self.dtype());
        Ok(out.record("to_device", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(g.to_device(&back_device, back_dtype)?)]))
        }))
    }

    /// This tensor with elements of `dtype` on the same device.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let out = self.same_shape(self.storage.to_dtype(dtype)?)?;
        let back = self.dtype();
        Ok(out.record("to_dtype", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(g.to_dtype(back)?)]))
        }))
    }

    /// Size of dimension `d`, with an error naming the op when out of range.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.shape.get(d).copied().ok_or_else(|| {
            Error::invalid(format!(
                "dimension {d} out of range for shape {:?}",
                self.shape
            ))
        })
    }

    /// Same data viewed with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_count(shape)?;
        if n != self.elem_count() {
            return Err(Error::invalid(format!(
                "cannot reshape {:?} into {shape:?}",
                self.shape
            )));
        }
        let out = Tensor {
            storage: Arc::clone(&self.storage),
            shape: shape.to_vec(),
            node: None,
        };
        let back = self.shape.clone();
        Ok(out.record("reshape", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(g.reshape(&back)?)]))
        }))
    }

    /// Reorders dimensions: output dimension `i` is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        for &p in perm {
            if p >= self.rank() || std::mem::replace(&mut seen[p], true) {
                return Err(Error::invalid(format!(
                    "{perm:?} is not a permutation of {} axes",
                    self.rank()
                )));
            }
        }
        if perm.len() != self.rank() {
            return Err(Error::invalid(format!(
                "{perm:?} is not a permutation of {} axes",
                self.rank()
            )));
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let out = Tensor::from_storage(self.storage.permute(&self.shape, perm)?, shape)?;
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(out.record("permute", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(g.permute(&inverse)?)]))
        }))
    }

    /// `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let size = self.dim(dim)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "narrow {start}..+{len} out of range for dim {dim} of {:?}",
                self.shape
            )));
        }
        let axis = self.axis_desc(dim)?;
        let mut shape = self.shape.clone();
        shape[dim] = len;
        let out = Tensor::from_storage(self.storage.narrow(axis, start, len)?, shape)?;
        let full = self.shape.clone();
        Ok(out.record("narrow", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(unnarrow(g, &full, dim, start)?)]))
        }))
    }

    /// Splits dimension `dim` into `n` equal parts.
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        let size = self.dim(dim)?;
        if n == 0 || size % n != 0 {
            return Err(Error::invalid(format!(
                "cannot split dim {dim} of {:?} into {n} equal parts",
                self.shape
            )));
        }
        (0..n)
            .map(|i| self.narrow(dim, i * size / n, size / n))
            .collect()
    }

    /// Concatenates tensors along `dim`; all other dimensions must agree.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("cat of no tensors"))?;
        first.dim(dim)?;
        let mut shape = first.shape.clone();
        shape[dim] = 0;
        for t in tensors {
            let same = t.rank() == first.rank()
                && t.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !same {
                return Err(Error::invalid(format!(
                    "cat along {dim}: {:?} vs {:?}",
                    first.shape, t.shape
                )));
            }
            shape[dim] += t.shape[dim];
        }
        let outer: usize = first.shape[..dim].iter().product();
        let inner: usize = first.shape[dim + 1..].iter().product();
        checked_count(&shape)?;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape[dim]).collect();
        let parts: Vec<&Storage> = tensors.iter().map(|t| t.storage()).collect();
        let out = Tensor::from_storage(Storage::cat(&parts, outer, &sizes, inner)?, shape)?;
        Ok(out.record("cat", tensors, |_| {
            Box::new(move |g, needs| {
                let mut start = 0;
                let mut grads = Vec::with_capacity(sizes.len());
                for (&size, &need) in sizes.iter().zip(needs) {
                    grads.push(need.then(|| g.narrow(dim, start, size)).transpose()?);
                    start += size;
                }
                Ok(grads)
            })
        }))
    }

    /// Reverses the order of entries along each of `axes` (test-time
    /// mirroring).
    pub fn flip(&self, axes: &[usize]) -> Result<Tensor> {
        for &a in axes {
            self.dim(a)?;
        }
        if axes.is_empty() {
            return Ok(self.clone());
        }
        let out = self.same_shape(self.storage.flip(&self.shape, axes)?)?;
        let axes = axes.to_vec();
        Ok(out.record("flip", &[self], |_| {
            Box::new(move |g, _| Ok(vec![Some(g.flip(&axes)?)]))
        }))
    }

    /// This tensor as `[outer, size, inner]` around dimension `dim`.
    pub(crate) fn axis_desc(&self, dim: usize) -> Result<AxisDesc> {
        let size = self.dim(dim)?;
        Ok(AxisDesc {
            outer: self.shape[..dim].iter().product(),
            size,
            inner: self.shape[dim + 1..].iter().product(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_ops_round_trip() -> Result<()> {
        let t = Tensor::from_vec((0..24).map(|v| v as f32).collect(), &[2, 3, 4])?;
        let p = t.permute(&[2, 0, 1])?;
        assert_eq!(p.dims(), &[4, 2, 3]);
        assert_eq!(p.permute(&[1, 2, 0])?.to_vec()?, t.to_vec()?);
        let parts = t.chunk(3, 1)?;
        let refs: Vec<&Tensor> = parts.iter().collect();
        assert_eq!(Tensor::cat(&refs, 1)?.to_vec()?, t.to_vec()?);
        assert_eq!(t.narrow(2, 1, 2)?.to_vec()?[..4], [1.0, 2.0, 5.0, 6.0]);
        assert!(t.reshape(&[5, 5]).is_err());
        assert!(t.permute(&[0, 0, 1]).is_err());
        assert!(Tensor::from_vec(vec![1.0], &[2]).is_err());
        Ok(())
    }
}

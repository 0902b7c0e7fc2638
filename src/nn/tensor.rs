//! [`Tensor`]: shape + dtype + storage, and the shape-only operations.

use crate::backend::cpu::elementwise;
use crate::nn::{DType, Device};
use crate::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// The data of a tensor, one variant per device back-end.
///
/// A CUDA variant (fp16/f32 device buffers) is added beside `Cpu`; ops
/// already dispatch with a `match` on this enum, so models do not change.
#[derive(Debug)]
pub enum Storage {
    /// Contiguous row-major f32 values in host memory.
    Cpu(Vec<f32>),
}

impl Drop for Storage {
    /// Hands host buffers back to the CPU back-end, which reuses large ones
    /// for kernel outputs instead of allocating and zeroing new memory.
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => crate::backend::cpu::recycle(std::mem::take(v)),
        }
    }
}

/// An n-dimensional array: contiguous row-major data shared by reference
/// count, so `clone` and [`Tensor::reshape`] are free.
#[derive(Clone, Debug)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
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
            storage: Arc::new(Storage::Cpu(data)),
            shape: shape.to_vec(),
        })
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

    /// Wraps a kernel result whose length the caller guarantees.
    pub(crate) fn from_cpu(data: Vec<f32>, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_count(&shape)?;
        if n != data.len() {
            return Err(Error::Internal(format!(
                "kernel returned {} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(Tensor {
            storage: Arc::new(Storage::Cpu(data)),
            shape,
        })
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
        match *self.storage {
            Storage::Cpu(_) => DType::F32,
        }
    }

    /// Device holding the data.
    pub fn device(&self) -> Device {
        match *self.storage {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// The storage (for back-end dispatch).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The values as a host slice (CPU tensors only).
    pub fn as_slice(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(v) => Ok(v),
        }
    }

    /// Copies the values to a host vector, row-major.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(self.as_slice()?.to_vec())
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
        Ok(Tensor {
            storage: Arc::clone(&self.storage),
            shape: shape.to_vec(),
        })
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
        match self.storage() {
            Storage::Cpu(x) => Tensor::from_cpu(elementwise::permute(x, &self.shape, perm), shape),
        }
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
        let outer: usize = self.shape[..dim].iter().product();
        let inner: usize = self.shape[dim + 1..].iter().product();
        let mut shape = self.shape.clone();
        shape[dim] = len;
        match self.storage() {
            Storage::Cpu(x) => {
                let mut out = Vec::with_capacity(outer * len * inner);
                for o in 0..outer {
                    let base = (o * size + start) * inner;
                    out.extend_from_slice(&x[base..base + len * inner]);
                }
                Tensor::from_cpu(out, shape)
            }
        }
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
        // Every element is written by exactly one of the copies below.
        let mut out = crate::backend::cpu::output_buffer(checked_count(&shape)?);
        let mut pieces = Vec::with_capacity(outer * tensors.len());
        let mut rest = out.as_mut_slice();
        for o in 0..outer {
            for t in tensors {
                let rows = t.shape[dim] * inner;
                let (dst, tail) = std::mem::take(&mut rest).split_at_mut(rows);
                pieces.push((dst, &t.as_slice()?[o * rows..(o + 1) * rows]));
                rest = tail;
            }
        }
        // Large concatenations (the U-Net's skip connections) are copied by
        // all threads.
        pieces.into_par_iter().for_each(|(dst, src)| {
            dst.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
        });
        Tensor::from_cpu(out, shape)
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

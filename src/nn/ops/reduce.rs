//! Sums over dimensions.

use crate::backend::desc::AxisDesc;
use crate::nn::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// The sum over dimension `dim`, kept with size 1 (PyTorch
    /// `sum(dim, keepdim=True)`), accumulated wider than the storage and
    /// rounded once.
    pub fn sum_keepdim(&self, dim: usize) -> Result<Tensor> {
        self.sum_dims_keepdim(dim, 1)
    }

    /// The sum over the `count` consecutive dimensions from `dim`, each kept
    /// with size 1: one pass, however many dimensions.
    pub(crate) fn sum_dims_keepdim(&self, dim: usize, count: usize) -> Result<Tensor> {
        let dims = self.dims().to_vec();
        if count == 0 || dim + count > dims.len() {
            return Err(Error::invalid(format!(
                "sum: dimensions {dim}..{} of a tensor of shape {dims:?}",
                dim + count
            )));
        }
        let axis = AxisDesc {
            outer: dims[..dim].iter().product(),
            size: dims[dim..dim + count].iter().product(),
            inner: dims[dim + count..].iter().product(),
        };
        let mut shape = dims.clone();
        shape[dim..dim + count].fill(1);
        let y = Tensor::from_storage(self.storage().reduce_sum(axis)?, shape)?;
        Ok(y.record("sum", &[self], move |_| {
            Box::new(move |g, _| {
                // ∂Σ/∂x = 1: the gradient broadcast back over the summed
                // dimensions.
                let zeros = Tensor::full_on(0.0, &dims, &g.device(), g.dtype())?;
                Ok(vec![Some(zeros.add(g)?)])
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::Tensor;

    #[test]
    fn sums_keep_their_dimensions_and_broadcast_the_gradient_back() -> crate::Result<()> {
        // [2, 3, 2] holding 0..12.
        let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[2, 3, 2])?;
        let s1 = x.sum_keepdim(1)?;
        assert_eq!(s1.dims(), [2, 1, 2]);
        assert_eq!(s1.to_vec()?, vec![6.0, 9.0, 24.0, 27.0]);
        let s0 = x.sum_keepdim(0)?;
        assert_eq!(s0.to_vec()?, vec![6.0, 8.0, 10.0, 12.0, 14.0, 16.0]);
        assert_eq!(
            x.sum_keepdim(2)?.to_vec()?,
            vec![1.0, 5.0, 9.0, 13.0, 17.0, 21.0]
        );
        let s01 = x.sum_dims_keepdim(0, 2)?;
        assert_eq!(
            (s01.dims(), s01.to_vec()?),
            (&[1, 1, 2][..], vec![30.0, 36.0])
        );
        assert!(x.sum_keepdim(3).is_err() && x.sum_dims_keepdim(1, 0).is_err());
        // Σ_dim1 (x·w): the gradient of x is w broadcast over dim 1.
        let v = x.variable();
        let w = Tensor::from_vec(vec![1.0, -2.0, 0.5, 3.0], &[2, 1, 2])?;
        let loss = v.sum_keepdim(1)?.mul(&w)?;
        let grads = loss.backward_with(&Tensor::full(1.0, &[2, 1, 2])?)?;
        let gx = grads.get(&v).expect("x has a gradient").to_vec()?;
        let want: Vec<f32> = (0..12)
            .map(|i| [1.0, -2.0, 0.5, 3.0][(i / 6) * 2 + i % 2])
            .collect();
        assert_eq!(gx, want);
        Ok(())
    }
}

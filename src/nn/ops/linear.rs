//! Fully connected layers.

use super::expect_rank;
use crate::backend::cpu::gemm::gemm;
use crate::nn::{Storage, Tensor};
use crate::{Error, Result};
use ndarray::{ArrayView2, ArrayViewMut2};

impl Tensor {
    /// `y = x·Wᵀ + b` over the last dimension: `self` `[..., in]`, `weight`
    /// `[out, in]`, `bias` `[out]` (PyTorch `nn.Linear`).
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        expect_rank(weight, 2, "linear weight")?;
        let (n_out, n_in) = (weight.dims()[0], weight.dims()[1]);
        let last = self.dims().last().copied().unwrap_or(0);
        if self.rank() == 0 || last != n_in {
            return Err(Error::invalid(format!(
                "linear: input {:?} does not end in {n_in}",
                self.dims()
            )));
        }
        if let Some(b) = bias {
            super::expect_shape(b, &[n_out], "linear bias")?;
        }
        let rows = self.elem_count() / n_in.max(1);
        let mut shape = self.dims().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = n_out;
        }
        match (self.storage(), weight.storage()) {
            (Storage::Cpu(x), Storage::Cpu(w)) => {
                let mut out = vec![0f32; rows * n_out];
                let beta = match bias {
                    Some(b) => {
                        let b = b.as_slice()?;
                        for row in out.chunks_mut(n_out.max(1)) {
                            row.copy_from_slice(b);
                        }
                        1.0
                    }
                    None => 0.0,
                };
                let shape_err =
                    |e: ndarray::ShapeError| Error::Internal(format!("linear view: {e}"));
                let xv = ArrayView2::from_shape((rows, n_in), x.as_slice()).map_err(shape_err)?;
                let wv = ArrayView2::from_shape((n_out, n_in), w.as_slice()).map_err(shape_err)?;
                let ov = ArrayViewMut2::from_shape((rows, n_out), out.as_mut_slice())
                    .map_err(shape_err)?;
                gemm(xv, wv.t(), beta, ov);
                Tensor::from_cpu(out, shape)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::Tensor;

    #[test]
    fn linear_matches_hand_computation() -> crate::Result<()> {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
        let w = Tensor::from_vec(vec![1.0, 0.0, 1.0, -1.0, 0.5, 0.5], &[3, 2])?;
        let b = Tensor::from_vec(vec![0.0, 1.0, -1.0], &[3])?;
        assert_eq!(
            x.linear(&w, Some(&b))?.to_vec()?,
            vec![1.0, 0.0, 0.5, 3.0, 0.0, 2.5]
        );
        assert!(x.linear(&Tensor::zeros(&[3, 3])?, None).is_err());
        Ok(())
    }
}

//! Fully connected layers.

use super::expect_rank;
use crate::backend::desc::LinearDesc;
use crate::nn::Tensor;
use crate::{Error, Result};

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
        let desc = LinearDesc { rows, n_in, n_out };
        Tensor::from_storage(
            self.storage()
                .linear(weight.storage(), bias.map(Tensor::storage), &desc)?,
            shape,
        )
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

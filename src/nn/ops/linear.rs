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
        let y = Tensor::from_storage(
            self.storage()
                .linear(weight.storage(), bias.map(Tensor::storage), &desc)?,
            shape,
        )?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.record("linear", &inputs, |_| {
            let (x, w) = (self.detach(), weight.detach());
            Box::new(move |g, needs| {
                let g2 = g.reshape(&[rows, n_out])?;
                let mut grads = Vec::with_capacity(3);
                // dx = g·W (linear computes x·Wᵀ, so pass Wᵀ).
                grads.push(
                    needs[0]
                        .then(|| g2.linear(&w.permute(&[1, 0])?, None)?.reshape(x.dims()))
                        .transpose()?,
                );
                // dW = gᵀ·x = linear(gᵀ, xᵀ).
                grads.push(
                    needs[1]
                        .then(|| {
                            let xt = x.reshape(&[rows, n_in])?.permute(&[1, 0])?;
                            g2.permute(&[1, 0])?.linear(&xt, None)
                        })
                        .transpose()?,
                );
                if needs.len() > 2 {
                    grads.push(
                        needs[2]
                            .then(|| g2.sum_keepdim(0)?.reshape(&[n_out]))
                            .transpose()?,
                    );
                }
                Ok(grads)
            })
        }))
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

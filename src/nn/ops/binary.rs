//! Broadcasting element-wise arithmetic.

use crate::backend::desc::{BinaryOp, BroadcastDesc};
use crate::nn::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// `op(self, rhs)` with NumPy broadcasting.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let name = format!("{op:?}").to_lowercase();
        let rank = self.rank().max(rhs.rank());
        let pad = |d: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - d.len()];
            v.extend_from_slice(d);
            v
        };
        let (a_shape, b_shape) = (pad(self.dims()), pad(rhs.dims()));
        let mut out = Vec::with_capacity(rank);
        for (&a, &b) in a_shape.iter().zip(&b_shape) {
            if a != b && a != 1 && b != 1 {
                return Err(Error::invalid(format!(
                    "{name}: shapes {:?} and {:?} do not broadcast",
                    self.dims(),
                    rhs.dims()
                )));
            }
            out.push(if a == 1 { b } else { a });
        }
        let desc = BroadcastDesc {
            lhs: a_shape,
            rhs: b_shape,
            out: out.clone(),
        };
        Tensor::from_storage(self.storage().binary(rhs.storage(), op, &desc)?, out)
    }

    /// `alpha·self + beta·rhs` for tensors of one shape (the sampler's
    /// jump step and classifier-free guidance).
    pub fn lincomb(&self, alpha: f32, rhs: &Tensor, beta: f32) -> Result<Tensor> {
        super::expect_shape(rhs, self.dims(), "lincomb")?;
        self.same_shape(self.storage().lincomb(alpha, rhs.storage(), beta)?)
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `self − rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// `self · rhs` (element-wise) with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }

    /// `self · (scale + 1) + shift` with broadcasting: the FiLM-style
    /// modulation of the denoiser's `Block`.
    pub fn scale_shift(&self, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
        self.mul(&scale.affine(1.0, 1.0)?)?.add(shift)
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::Tensor;

    #[test]
    fn broadcasting_rules() -> crate::Result<()> {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
        let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3])?;
        assert_eq!(
            a.add(&b)?.to_vec()?,
            vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
        );
        let c = Tensor::from_vec(vec![2.0, 3.0], &[2, 1])?;
        assert_eq!(a.mul(&c)?.to_vec()?, vec![2.0, 4.0, 6.0, 12.0, 15.0, 18.0]);
        assert!(a.add(&Tensor::zeros(&[2])?).is_err());
        Ok(())
    }
}

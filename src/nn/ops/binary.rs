//! Broadcasting element-wise arithmetic.

use crate::backend::desc::{BinaryOp, BroadcastDesc};
use crate::nn::autograd::sum_to_shape;
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
        let y = Tensor::from_storage(self.storage().binary(rhs.storage(), op, &desc)?, out)?;
        Ok(y.record("binary", &[self, rhs], |_| {
            let (a, b) = (self.detach(), rhs.detach());
            Box::new(move |g, needs| binary_backward(op, &a, &b, g, needs))
        }))
    }

    /// `alpha·self + beta·rhs` for tensors of one shape (the sampler's
    /// jump step and classifier-free guidance).
    pub fn lincomb(&self, alpha: f32, rhs: &Tensor, beta: f32) -> Result<Tensor> {
        super::expect_shape(rhs, self.dims(), "lincomb")?;
        let y = self.same_shape(self.storage().lincomb(alpha, rhs.storage(), beta)?)?;
        Ok(y.record("lincomb", &[self, rhs], |_| {
            Box::new(move |g, needs| {
                Ok(vec![
                    needs[0].then(|| g.affine(alpha, 0.0)).transpose()?,
                    needs[1].then(|| g.affine(beta, 0.0)).transpose()?,
                ])
            })
        }))
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `self − rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// `self / rhs` (element-wise) with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
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

/// Gradients of `op(a, b)` (broadcast) for output gradient `g`, each summed
/// back to its operand's shape.
fn binary_backward(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (ga, gb) = match op {
        BinaryOp::Add => (g.clone(), g.clone()),
        BinaryOp::Sub => (g.clone(), g.affine(-1.0, 0.0)?),
        BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
        // d(a/b) = g/b, −g·a/b².
        BinaryOp::Div => {
            let ga = g.div(b)?;
            let gb = ga.mul(a)?.div(b)?.affine(-1.0, 0.0)?;
            (ga, gb)
        }
        // The gradient goes to the selected operand (to `a` on ties, as
        // the forward's `a.max(b)` keeps `a`).
        // The mask is built on the operands' device (no download).
        BinaryOp::Max | BinaryOp::Min => {
            let mask = a.binary(b, op)?.binary(a, BinaryOp::Sub)?.is_zero()?;
            let ga = g.mul(&mask.to_dtype(g.dtype())?)?;
            (ga.clone(), g.sub(&ga)?)
        }
    };
    Ok(vec![
        needs[0].then(|| sum_to_shape(&ga, a.dims())).transpose()?,
        needs[1].then(|| sum_to_shape(&gb, b.dims())).transpose()?,
    ])
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

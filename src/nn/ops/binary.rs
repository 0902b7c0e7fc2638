//! Broadcasting element-wise arithmetic.

use crate::backend::cpu::elementwise as cpu;
use crate::nn::{Storage, Tensor};
use crate::{Error, Result};

impl Tensor {
    fn binary(
        &self,
        rhs: &Tensor,
        name: &str,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Tensor> {
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
        match (self.storage(), rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Tensor::from_cpu(
                cpu::broadcast_binary(a, &a_shape, b, &b_shape, &out, f),
                out,
            ),
        }
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "add", |a, b| a + b)
    }

    /// `self − rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "sub", |a, b| a - b)
    }

    /// `self · rhs` (element-wise) with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "mul", |a, b| a * b)
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

//! The batched matrix product, the building block of the attention
//! backwards on every device.

use super::expect_rank;
use crate::backend::desc::MatmulDesc;
use crate::nn::tensor::checked_count;
use crate::nn::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// `op(self)·op(rhs)` per batch item: `self` is `[G, M, K]` (`[G, K, M]`
    /// when `trans_a`, its items transposed), `rhs` is `[G, K, N]`
    /// (`[G, N, K]` when `trans_b`); the result is `[G, M, N]`, accumulated
    /// in f32.
    pub fn matmul(&self, rhs: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        expect_rank(self, 3, "matmul left operand")?;
        expect_rank(rhs, 3, "matmul right operand")?;
        let (batch, a1, a2) = (self.dims()[0], self.dims()[1], self.dims()[2]);
        let (b0, b1, b2) = (rhs.dims()[0], rhs.dims()[1], rhs.dims()[2]);
        let (m, k) = if trans_a { (a2, a1) } else { (a1, a2) };
        let (k_rhs, n) = if trans_b { (b2, b1) } else { (b1, b2) };
        if b0 != batch || k_rhs != k {
            return Err(Error::invalid(format!(
                "matmul: {:?}{} and {:?}{} do not multiply",
                self.dims(),
                if trans_a { "ᵀ" } else { "" },
                rhs.dims(),
                if trans_b { "ᵀ" } else { "" }
            )));
        }
        let shape = [batch, m, n];
        checked_count(&shape)?;
        let desc = MatmulDesc {
            batch,
            m,
            n,
            k,
            trans_a,
            trans_b,
        };
        let y = Tensor::from_storage(self.storage().matmul(rhs.storage(), &desc)?, shape.to_vec())?;
        Ok(y.record("matmul", &[self, rhs], |_| {
            let (a, b) = (self.detach(), rhs.detach());
            // C = op(A)·op(B): d op(A) = dC·op(B)ᵀ and d op(B) = op(A)ᵀ·dC,
            // each written back in its operand's stored layout.
            Box::new(move |g, needs| {
                let da = needs[0]
                    .then(|| {
                        if trans_a {
                            b.matmul(g, trans_b, true)
                        } else {
                            g.matmul(&b, false, !trans_b)
                        }
                    })
                    .transpose()?;
                let db = needs[1]
                    .then(|| {
                        if trans_b {
                            g.matmul(&a, true, trans_a)
                        } else {
                            a.matmul(g, !trans_a, false)
                        }
                    })
                    .transpose()?;
                Ok(vec![da, db])
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::random_normal;

    #[test]
    fn shapes_and_refusals() -> Result<()> {
        let a = Tensor::from_vec(random_normal(2 * 3 * 4, 1), &[2, 3, 4])?;
        let b = Tensor::from_vec(random_normal(2 * 4 * 5, 2), &[2, 4, 5])?;
        assert_eq!(a.matmul(&b, false, false)?.dims(), &[2, 3, 5]);
        assert_eq!(a.matmul(&a, false, true)?.dims(), &[2, 3, 3]);
        assert_eq!(a.matmul(&a, true, false)?.dims(), &[2, 4, 4]);
        assert!(a.matmul(&a, false, false).is_err());
        assert!(a.matmul(&b.reshape(&[1, 8, 5])?, false, false).is_err());
        assert!(a.matmul(&b.reshape(&[40])?, false, false).is_err());
        Ok(())
    }
}

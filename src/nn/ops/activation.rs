//! Unary activations and softmax.

use crate::backend::desc::UnaryOp;
use crate::nn::Tensor;
use crate::Result;

impl Tensor {
    /// `op(x)` for every element.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let y = self.same_shape(self.storage().unary(op)?)?;
        Ok(y.record("unary", &[self], |y| {
            let (x, y) = (self.detach(), y.detach());
            Box::new(move |g, _| Ok(vec![Some(unary_backward(op, &x, &y, g)?)]))
        }))
    }

    /// SiLU (swish): `x·σ(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }

    /// GELU with the exact erf form (PyTorch `nn.GELU()` default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }

    /// LeakyReLU with the given negative slope (nnU-Net uses 0.01).
    pub fn leaky_relu(&self, slope: f32) -> Result<Tensor> {
        self.unary(UnaryOp::LeakyRelu(slope))
    }

    /// `x·a + b` for scalars a, b.
    pub fn affine(&self, a: f32, b: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Affine(a, b))
    }

    /// Every value rounded to the nearest f16 (see [`UnaryOp::RoundHalf`]);
    /// on f16 storage a copy.
    pub fn round_half(&self) -> Result<Tensor> {
        self.unary(UnaryOp::RoundHalf)
    }

    /// `|x|` for every element; the gradient is `sgn x` (0 at 0).
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }

    /// The natural logarithm of every element.
    pub fn ln(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Ln)
    }

    /// 1 where the element is 0, else 0: an exact mask, with no gradient.
    pub fn is_zero(&self) -> Result<Tensor> {
        self.unary(UnaryOp::IsZero)
    }

    /// Softmax over the last dimension.
    pub fn softmax_last(&self) -> Result<Tensor> {
        self.softmax(self.rank().saturating_sub(1))
    }

    /// Softmax over dimension `dim` (e.g. 1 for class probabilities of
    /// `[B, classes, ...]` logits).
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        let axis = self.axis_desc(dim)?;
        let y = self.same_shape(self.storage().softmax(axis)?)?;
        Ok(y.record("softmax", &[self], |y| {
            let y = y.detach();
            Box::new(move |g, _| {
                let dx = y.storage().softmax_backward(g.storage(), axis)?;
                Ok(vec![Some(y.same_shape(dx)?)])
            })
        }))
    }
}

/// `g·op'(x)`, from the output `y` where that is cheaper.
fn unary_backward(op: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    match op {
        UnaryOp::Affine(a, _) => g.affine(a, 0.0),
        UnaryOp::Neg => g.affine(-1.0, 0.0),
        UnaryOp::Exp => g.mul(y),
        UnaryOp::Square => g.mul(x)?.affine(2.0, 0.0),
        // d√x = 1/(2√x); d(1/x) = −1/x².
        UnaryOp::Sqrt => g.div(y)?.affine(0.5, 0.0),
        UnaryOp::Recip => g.mul(&y.unary(UnaryOp::Square)?)?.affine(-1.0, 0.0),
        UnaryOp::RoundHalf => Ok(g.clone()),
        UnaryOp::Ln => g.div(x),
        // A mask is piecewise constant (and `0·g` would keep g's NaNs).
        UnaryOp::IsZero => Tensor::full_on(0.0, g.dims(), &g.device(), g.dtype()),
        // One kernel for the slope and the product (every device).
        UnaryOp::Silu | UnaryOp::Gelu | UnaryOp::LeakyRelu(_) | UnaryOp::Abs => {
            x.same_shape(x.storage().unary_backward(g.storage(), op)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::Tensor;

    #[test]
    fn activations_match_their_definitions() -> crate::Result<()> {
        let x = Tensor::from_vec(vec![-2.0, -0.5, 0.0, 1.5], &[2, 2])?;
        let silu = x.silu()?.to_vec()?;
        assert!((silu[0] - (-2.0 / (1.0 + 2f32.exp()))).abs() < 1e-6);
        let gelu = x.gelu()?.to_vec()?;
        assert!((gelu[3] - 1.399_789_2).abs() < 1e-5 && (gelu[0] + 0.045_500_26).abs() < 1e-6);
        assert_eq!(x.leaky_relu(0.01)?.to_vec()?, vec![-0.02, -0.005, 0.0, 1.5]);
        let s = x.softmax_last()?.to_vec()?;
        assert!((s[0] + s[1] - 1.0).abs() < 1e-6 && s[1] > s[0]);
        // Over dim 0 of [2, 2]: columns sum to one and match the transpose.
        let s0 = x.softmax(0)?.to_vec()?;
        let st = x
            .permute(&[1, 0])?
            .softmax_last()?
            .permute(&[1, 0])?
            .to_vec()?;
        assert!(s0.iter().zip(&st).all(|(a, b)| (a - b).abs() < 1e-7));
        assert!((s0[0] + s0[2] - 1.0).abs() < 1e-6);
        assert!(x.softmax(2).is_err());
        let r = Tensor::from_vec(vec![2049.0, 2051.0, 0.1, -65520.0], &[4])?.round_half()?;
        assert_eq!(r.to_vec()?[..3], [2048.0, 2052.0, 0.099_975_586]);
        assert_eq!(r.to_vec()?[3], f32::NEG_INFINITY);
        let y = Tensor::from_vec(vec![-2.0, -0.0, 0.0, 3.0, f32::NAN], &[5])?;
        assert_eq!(y.abs()?.to_vec()?[..4], [2.0, 0.0, 0.0, 3.0]);
        assert_eq!(y.is_zero()?.to_vec()?, [0.0, 1.0, 1.0, 0.0, 0.0]);
        let e = Tensor::from_vec(vec![1.0, std::f32::consts::E, 0.0], &[3])?.ln()?;
        let e = e.to_vec()?;
        assert!(e[0] == 0.0 && (e[1] - 1.0).abs() < 1e-6 && e[2] == f32::NEG_INFINITY);
        // |x|′ is sgn x, 0 at 0 (PyTorch's); a mask has no gradient.
        let v = y.narrow(0, 0, 4)?.variable();
        let grads = v.abs()?.add(&v.is_zero()?)?.sum_keepdim(0)?.backward()?;
        let got = grads.get(&v).expect("gradient").to_vec()?;
        assert_eq!(got, [-1.0, 0.0, 0.0, 1.0]);
        Ok(())
    }
}

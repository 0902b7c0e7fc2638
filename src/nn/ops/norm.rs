//! GroupNorm, InstanceNorm and the channel LayerNorm, over `[B, C, ...]`.

use super::expect_shape;
use crate::backend::cpu::norm as cpu;
use crate::nn::{Storage, Tensor};
use crate::{Error, Result};

/// `(B, C, S)` of a `[B, C, ...]` tensor, S the product of the rest.
fn bcs(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    if x.rank() < 2 {
        return Err(Error::invalid(format!(
            "{what}: expected [B, C, ...], got {:?}",
            x.dims()
        )));
    }
    Ok((x.dims()[0], x.dims()[1], x.dims()[2..].iter().product()))
}

/// Requires `groups` to divide `c` and the affine parameters to be `[c]`.
fn check_groups(
    groups: usize,
    c: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<()> {
    if groups == 0 || c % groups != 0 {
        return Err(Error::invalid(format!(
            "group_norm: {groups} groups do not divide {c} channels"
        )));
    }
    for (t, name) in [(weight, "group_norm weight"), (bias, "group_norm bias")] {
        if let Some(t) = t {
            expect_shape(t, &[c], name)?;
        }
    }
    Ok(())
}

impl Tensor {
    /// GroupNorm with `groups` groups of consecutive channels, affine
    /// `weight`/`bias` of length C (PyTorch `nn.GroupNorm`).
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "group_norm")?;
        check_groups(groups, c, weight, bias)?;
        match self.storage() {
            Storage::Cpu(x) => {
                let w = weight.map(Tensor::as_slice).transpose()?;
                let bi = bias.map(Tensor::as_slice).transpose()?;
                Tensor::from_cpu(
                    cpu::group_norm(x, b, c, s, groups, w, bi, eps),
                    self.dims().to_vec(),
                )
            }
        }
    }

    /// `silu(group_norm(x)·(scale + 1) + shift) + residual` in one pass over
    /// the data: the denoiser's `Block` (GroupNorm, optional FiLM modulation,
    /// SiLU) with the ResnetBlock's residual sum. `scale` and `shift` hold B·C
    /// values ordered (sample, channel), e.g. `[B, C]` or `[B, C, 1, 1, 1]`;
    /// `residual` has the input's shape. Equal to the separate ops up to
    /// rounding (the per-channel factors are folded together).
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_silu(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        scale_shift: Option<(&Tensor, &Tensor)>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "group_norm_silu")?;
        check_groups(groups, c, weight, bias)?;
        if let Some((scale, shift)) = scale_shift {
            for (t, name) in [(scale, "scale"), (shift, "shift")] {
                if t.elem_count() != b * c || t.dims().first() != Some(&b) {
                    return Err(Error::invalid(format!(
                        "group_norm_silu: {name} {:?} is not [{b}, {c}, 1, ...]",
                        t.dims()
                    )));
                }
            }
        }
        if let Some(r) = residual {
            expect_shape(r, self.dims(), "group_norm_silu residual")?;
        }
        match self.storage() {
            Storage::Cpu(x) => {
                let w = weight.map(Tensor::as_slice).transpose()?;
                let bi = bias.map(Tensor::as_slice).transpose()?;
                let ss = match scale_shift {
                    Some((sc, sh)) => Some((sc.as_slice()?, sh.as_slice()?)),
                    None => None,
                };
                let res = residual.map(Tensor::as_slice).transpose()?;
                Tensor::from_cpu(
                    cpu::group_norm_silu(x, b, c, s, groups, w, bi, eps, ss, res),
                    self.dims().to_vec(),
                )
            }
        }
    }

    /// InstanceNorm (per sample and channel) with optional affine parameters.
    pub fn instance_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let c = bcs(self, "instance_norm")?.1;
        self.group_norm(c, weight, bias, eps)
    }

    /// LayerNorm across the channel axis at every position, times `gamma`
    /// (C values in any shape, e.g. `[1, C, 1, 1, 1]`), no bias.
    pub fn layer_norm_channels(&self, gamma: &Tensor, eps: f64) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "layer_norm_channels")?;
        if gamma.elem_count() != c {
            return Err(Error::invalid(format!(
                "layer_norm_channels: gamma {:?} for {c} channels",
                gamma.dims()
            )));
        }
        match (self.storage(), gamma.storage()) {
            (Storage::Cpu(x), Storage::Cpu(g)) => Tensor::from_cpu(
                cpu::layer_norm_channels(x, b, c, s, g, eps),
                self.dims().to_vec(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::random_normal;
    use crate::nn::Tensor;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The fused op equals GroupNorm → (scale + 1)/shift → SiLU → + residual
    /// done one op at a time, with and without each optional part.
    #[test]
    fn group_norm_silu_matches_the_separate_ops() -> crate::Result<()> {
        let shape = [2, 6, 3, 5, 4];
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(
            random_normal(n, 1).iter().map(|v| 2.0 * v + 1.0).collect(),
            &shape,
        )?;
        let w = Tensor::from_vec(random_normal(6, 2), &[6])?;
        let b = Tensor::from_vec(random_normal(6, 3), &[6])?;
        let scale = Tensor::from_vec(random_normal(12, 4), &[2, 6, 1, 1, 1])?;
        let shift = Tensor::from_vec(random_normal(12, 5), &[2, 6, 1, 1, 1])?;
        let res = Tensor::from_vec(random_normal(n, 6), &shape)?;
        let normed = x.group_norm(3, Some(&w), Some(&b), 1e-5)?;
        let cases = [
            (None, None, normed.silu()?),
            (
                Some((&scale, &shift)),
                None,
                normed.scale_shift(&scale, &shift)?.silu()?,
            ),
            (
                Some((&scale, &shift)),
                Some(&res),
                normed.scale_shift(&scale, &shift)?.silu()?.add(&res)?,
            ),
            (None, Some(&res), normed.silu()?.add(&res)?),
        ];
        for (i, (ss, r, want)) in cases.into_iter().enumerate() {
            let got = x.group_norm_silu(3, Some(&w), Some(&b), 1e-5, ss, r)?;
            assert_eq!(got.dims(), &shape);
            let err = max_diff(&got, &want);
            assert!(err < 1e-5, "case {i}: {err}");
        }
        // [B, C] modulation works as well; wrong sizes are errors.
        let flat = (scale.reshape(&[2, 6])?, shift.reshape(&[2, 6])?);
        let got = x.group_norm_silu(3, Some(&w), Some(&b), 1e-5, Some((&flat.0, &flat.1)), None)?;
        let want = normed.scale_shift(&scale, &shift)?.silu()?;
        assert!(max_diff(&got, &want) < 1e-5);
        let short = Tensor::zeros(&[2, 5])?;
        assert!(x
            .group_norm_silu(3, None, None, 1e-5, Some((&short, &flat.1)), None)
            .is_err());
        assert!(x
            .group_norm_silu(3, None, None, 1e-5, None, Some(&short))
            .is_err());
        assert!(x.group_norm_silu(4, None, None, 1e-5, None, None).is_err());
        Ok(())
    }
}

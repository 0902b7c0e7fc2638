//! GroupNorm, InstanceNorm and the channel LayerNorm, over `[B, C, ...]`.

use super::expect_shape;
use crate::backend::cpu::grad;
use crate::backend::desc::{NormActivation, NormDesc, NormOperands};
use crate::nn::autograd::host;
use crate::nn::Tensor;
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
        self.group_norm_fused(
            groups,
            weight,
            bias,
            eps,
            NormActivation::Identity,
            None,
            None,
        )
    }

    /// The one normalisation op every device implements (see
    /// [`NormDesc`]): group statistics, affine `weight`/`bias`, optional
    /// FiLM modulation `·(scale + 1) + shift` (B·C values each, ordered
    /// (sample, channel)), the activation, then `+ residual` (the input's
    /// shape). `groups == C` is InstanceNorm.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_fused(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        activation: NormActivation,
        scale_shift: Option<(&Tensor, &Tensor)>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "group_norm")?;
        check_groups(groups, c, weight, bias)?;
        if let Some((scale, shift)) = scale_shift {
            for (t, name) in [(scale, "scale"), (shift, "shift")] {
                if t.elem_count() != b * c || t.dims().first() != Some(&b) {
                    return Err(Error::invalid(format!(
                        "group_norm: {name} {:?} is not [{b}, {c}, 1, ...]",
                        t.dims()
                    )));
                }
            }
        }
        if let Some(r) = residual {
            expect_shape(r, self.dims(), "group_norm residual")?;
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(Error::invalid(format!("group_norm: eps {eps} is not ≥ 0")));
        }
        let desc = NormDesc {
            batch: b,
            channels: c,
            spatial: s,
            groups,
            eps,
            activation,
        };
        let operands = NormOperands {
            weight: weight.map(Tensor::storage),
            bias: bias.map(Tensor::storage),
            scale_shift: scale_shift.map(|(a, b)| (a.storage(), b.storage())),
            residual: residual.map(Tensor::storage),
        };
        let y = self.same_shape(self.storage().group_norm(&desc, operands)?)?;
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        if let Some((scale, shift)) = scale_shift {
            inputs.push(scale);
            inputs.push(shift);
        }
        inputs.extend(residual);
        Ok(y.record("group_norm", &inputs, |_| {
            let x = self.detach();
            let weight = weight.map(Tensor::detach);
            let bias = bias.map(Tensor::detach);
            let scale_shift = scale_shift.map(|(a, b)| (a.detach(), b.detach()));
            let has_residual = residual.is_some();
            Box::new(move |g, _| {
                let op = "group_norm";
                let ss = match &scale_shift {
                    Some((a, b)) => Some((host(a, op)?, host(b, op)?)),
                    None => None,
                };
                let weight_values = weight.as_ref().map(|w| host(w, op)).transpose()?;
                let bias_values = bias.as_ref().map(|b| host(b, op)).transpose()?;
                let grads = grad::group_norm_backward(
                    &host(&x, op)?,
                    &desc,
                    weight_values.as_deref(),
                    bias_values.as_deref(),
                    ss.as_ref().map(|(a, b)| (&**a, &**b)),
                    &host(g, op)?,
                )?;
                let mut out = vec![Some(Tensor::from_vec(grads.x, x.dims())?)];
                let shaped = |v: Option<Vec<f32>>, like: &Tensor| -> Result<Option<Tensor>> {
                    v.map(|v| Tensor::from_vec(v, like.dims())).transpose()
                };
                if let Some(w) = &weight {
                    out.push(shaped(grads.weight, w)?);
                }
                if let Some(b) = &bias {
                    out.push(shaped(grads.bias, b)?);
                }
                if let Some((a, b)) = &scale_shift {
                    out.push(shaped(grads.scale, a)?);
                    out.push(shaped(grads.shift, b)?);
                }
                if has_residual {
                    out.push(Some(g.clone()));
                }
                Ok(out)
            })
        }))
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
        self.group_norm_fused(
            groups,
            weight,
            bias,
            eps,
            NormActivation::Silu,
            scale_shift,
            residual,
        )
    }

    /// InstanceNorm (per sample and channel) with optional affine parameters.
    pub fn instance_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.instance_norm_act(weight, bias, eps, NormActivation::Identity)
    }

    /// InstanceNorm followed by an activation in one pass (nnU-Net's
    /// norm → LeakyReLU after every convolution).
    pub fn instance_norm_act(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        activation: NormActivation,
    ) -> Result<Tensor> {
        let c = bcs(self, "instance_norm")?.1;
        self.group_norm_fused(c, weight, bias, eps, activation, None, None)
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
        let y =
            self.same_shape(
                self.storage()
                    .layer_norm_channels(gamma.storage(), b, c, s, eps)?,
            )?;
        Ok(y.record("layer_norm_channels", &[self, gamma], |_| {
            let (x, gamma) = (self.detach(), gamma.detach());
            Box::new(move |g, _| {
                let op = "layer_norm_channels";
                let (dx, dgamma) = grad::layer_norm_channels_backward(
                    &host(&x, op)?,
                    &host(&gamma, op)?,
                    b,
                    c,
                    s,
                    eps,
                    &host(g, op)?,
                )?;
                Ok(vec![
                    Some(Tensor::from_vec(dx, x.dims())?),
                    Some(Tensor::from_vec(dgamma, gamma.dims())?),
                ])
            })
        }))
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

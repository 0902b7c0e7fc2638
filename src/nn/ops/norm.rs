//! GroupNorm, InstanceNorm and the channel LayerNorm, over `[B, C, ...]`.

use super::expect_shape;
use crate::backend::cpu::grad;
use crate::backend::desc::{NormActivation, NormDesc, NormOperands, UnaryOp};
use crate::nn::autograd::host;
use crate::nn::{DType, Device, Tensor};
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
                if !matches!(x.device(), Device::Cpu) {
                    let ss = scale_shift.as_ref().map(|(a, b)| (a, b));
                    let grads = group_norm_backward_by_ops(
                        &x,
                        &desc,
                        weight.as_ref(),
                        bias.as_ref(),
                        ss,
                        g,
                    )?;
                    let mut out = vec![Some(grads.x)];
                    if weight.is_some() {
                        out.push(grads.weight);
                    }
                    if bias.is_some() {
                        out.push(grads.bias);
                    }
                    if scale_shift.is_some() {
                        out.push(grads.scale);
                        out.push(grads.shift);
                    }
                    if has_residual {
                        out.push(Some(g.clone()));
                    }
                    return Ok(out);
                }
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
                if !matches!(x.device(), Device::Cpu) {
                    let (dx, dgamma) = layer_norm_channels_backward_by_ops(&x, &gamma, eps, g)?;
                    return Ok(vec![Some(dx), Some(dgamma)]);
                }
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

/// The gradients of [`Tensor::group_norm_fused`] as tensors on the
/// operands' device (`None` for the absent optional operands).
struct NormGradTensors {
    x: Tensor,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    scale: Option<Tensor>,
    shift: Option<Tensor>,
}

/// The backward of the fused GroupNorm composed of engine ops, so it runs
/// on the operands' device (the CPU keeps its fused host kernel, which this
/// is checked against): with `x̂` the normalised input, `z = x̂·w + b`,
/// `m = z·k + shift` (`k = scale + 1`) and `gm = g·act′(m)`,
/// `gz = gm·k`, `dw = Σ gz·x̂`, `db = Σ gz`, `dscale = Σ gm·z`,
/// `dshift = Σ gm` and, per group, `dx = rstd·(gx̂ − mean gx̂ − x̂·mean(gx̂·x̂))`
/// with `gx̂ = gz·w`. Everything runs in f32, whatever the operands' type
/// (as PyTorch's autocast keeps normalisation in f32): a group's sum of
/// squares, or of loss-scaled gradients, overflows f16 long before its
/// mean does. The gradients come back in f32; the autograd converts them
/// to each operand's type.
fn group_norm_backward_by_ops(
    x: &Tensor,
    desc: &NormDesc,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    scale_shift: Option<(&Tensor, &Tensor)>,
    g: &Tensor,
) -> Result<NormGradTensors> {
    let (b, c, s, groups) = (desc.batch, desc.channels, desc.spatial, desc.groups);
    let f32_shaped = |t: &Tensor, shape: &[usize]| t.reshape(shape)?.to_dtype(DType::F32);
    let per_group = [b, groups, c / groups * s];
    let n = (c / groups * s).max(1) as f32;
    let group_mean = |t: &Tensor| t.sum_keepdim(2)?.affine(1.0 / n, 0.0);
    let xg = f32_shaped(x, &per_group)?;
    let centred = xg.sub(&group_mean(&xg)?)?;
    let rstd = group_mean(&centred.unary(UnaryOp::Square)?)?
        .affine(1.0, desc.eps as f32)?
        .unary(UnaryOp::Sqrt)?
        .unary(UnaryOp::Recip)?;
    let xhat = centred.mul(&rstd)?.reshape(&[b, c, s])?;
    let g3 = f32_shaped(g, &[b, c, s])?;
    let w = weight.map(|t| f32_shaped(t, &[1, c, 1])).transpose()?;
    let bias = bias.map(|t| f32_shaped(t, &[1, c, 1])).transpose()?;
    let z = match (&w, &bias) {
        (Some(w), Some(bi)) => xhat.mul(w)?.add(bi)?,
        (Some(w), None) => xhat.mul(w)?,
        (None, Some(bi)) => xhat.add(bi)?,
        (None, None) => xhat.clone(),
    };
    let modulation = scale_shift
        .map(|(scale, shift)| -> Result<(Tensor, Tensor)> {
            Ok((
                f32_shaped(scale, &[b, c, 1])?.affine(1.0, 1.0)?,
                f32_shaped(shift, &[b, c, 1])?,
            ))
        })
        .transpose()?;
    let gm = match desc.activation {
        NormActivation::Identity => g3,
        act => {
            let m = match &modulation {
                Some((k, shift)) => z.mul(k)?.add(shift)?,
                None => z.clone(),
            };
            let op = match act {
                NormActivation::Silu => UnaryOp::Silu,
                NormActivation::LeakyRelu(slope) => UnaryOp::LeakyRelu(slope),
                NormActivation::Identity => UnaryOp::Affine(1.0, 0.0),
            };
            m.same_shape(m.storage().unary_backward(g3.storage(), op)?)?
        }
    };
    let gz = match &modulation {
        Some((k, _)) => gm.mul(k)?,
        None => gm.clone(),
    };
    // Σ over the batch and the positions: [C].
    let channel_sums = |t: &Tensor| t.sum_keepdim(2)?.sum_keepdim(0)?.reshape(&[c]);
    let d_weight = w
        .as_ref()
        .map(|_| channel_sums(&gz.mul(&xhat)?))
        .transpose()?;
    let d_bias = bias.as_ref().map(|_| channel_sums(&gz)).transpose()?;
    let (d_scale, d_shift) = match scale_shift {
        Some((scale, shift)) => (
            Some(gm.mul(&z)?.sum_keepdim(2)?.reshape(scale.dims())?),
            Some(gm.sum_keepdim(2)?.reshape(shift.dims())?),
        ),
        None => (None, None),
    };
    let gxhat = match &w {
        Some(w) => gz.mul(w)?,
        None => gz,
    };
    let (gxhat, xhat) = (gxhat.reshape(&per_group)?, xhat.reshape(&per_group)?);
    let dx = gxhat
        .sub(&group_mean(&gxhat)?)?
        .sub(&xhat.mul(&group_mean(&gxhat.mul(&xhat)?)?)?)?
        .mul(&rstd)?
        .reshape(x.dims())?;
    Ok(NormGradTensors {
        x: dx,
        weight: d_weight,
        bias: d_bias,
        scale: d_scale,
        shift: d_shift,
    })
}

/// The backward of [`Tensor::layer_norm_channels`] composed of engine ops
/// (statistics over the channels at each position), in f32 as the
/// GroupNorm's: `dγ = Σ g·x̂` and `dx = rstd·(gx̂ − mean_c gx̂ −
/// x̂·mean_c(gx̂·x̂))` with `gx̂ = g·γ`.
fn layer_norm_channels_backward_by_ops(
    x: &Tensor,
    gamma: &Tensor,
    eps: f64,
    g: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, c, s) = bcs(x, "layer_norm_channels")?;
    let f32_shaped = |t: &Tensor, shape: &[usize]| t.reshape(shape)?.to_dtype(DType::F32);
    let (x3, g3) = (f32_shaped(x, &[b, c, s])?, f32_shaped(g, &[b, c, s])?);
    let n = c.max(1) as f32;
    let channel_mean = |t: &Tensor| t.sum_keepdim(1)?.affine(1.0 / n, 0.0);
    let centred = x3.sub(&channel_mean(&x3)?)?;
    let rstd = channel_mean(&centred.unary(UnaryOp::Square)?)?
        .affine(1.0, eps as f32)?
        .unary(UnaryOp::Sqrt)?
        .unary(UnaryOp::Recip)?;
    let xhat = centred.mul(&rstd)?;
    let d_gamma = g3
        .mul(&xhat)?
        .sum_keepdim(2)?
        .sum_keepdim(0)?
        .reshape(gamma.dims())?;
    let gxhat = g3.mul(&f32_shaped(gamma, &[1, c, 1])?)?;
    let dx = gxhat
        .sub(&channel_mean(&gxhat)?)?
        .sub(&xhat.mul(&channel_mean(&gxhat.mul(&xhat)?)?)?)?
        .mul(&rstd)?
        .reshape(x.dims())?;
    Ok((dx, d_gamma))
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

    fn max_rel(got: &super::Tensor, want: &[f32]) -> f32 {
        crate::testing::max_rel_error(&got.to_vec().unwrap(), want)
    }

    /// The backward composed of engine ops (what devices run) equals the
    /// fused host kernel: every activation, with and without the affine
    /// parameters and the FiLM modulation, GroupNorm and InstanceNorm.
    #[test]
    fn norm_backward_by_ops_matches_the_host_kernel() -> crate::Result<()> {
        use super::*;
        let shape = [2, 6, 3, 5, 4];
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(
            random_normal(n, 11).iter().map(|v| 1.5 * v + 0.5).collect(),
            &shape,
        )?;
        let g = Tensor::from_vec(random_normal(n, 12), &shape)?;
        let w = Tensor::from_vec(random_normal(6, 13), &[6])?;
        let bias = Tensor::from_vec(random_normal(6, 14), &[6])?;
        let scale = Tensor::from_vec(random_normal(12, 15), &[2, 6, 1, 1, 1])?;
        let shift = Tensor::from_vec(random_normal(12, 16), &[2, 6, 1, 1, 1])?;
        for groups in [3, 6] {
            for activation in [
                NormActivation::Identity,
                NormActivation::Silu,
                NormActivation::LeakyRelu(0.01),
            ] {
                for (affine, film) in [(true, true), (true, false), (false, true), (false, false)] {
                    let what =
                        format!("{groups} groups, {activation:?}, affine {affine}, FiLM {film}");
                    let desc = NormDesc {
                        batch: 2,
                        channels: 6,
                        spatial: 60,
                        groups,
                        eps: 1e-5,
                        activation,
                    };
                    let (wt, bt) = if affine {
                        (Some(&w), Some(&bias))
                    } else {
                        (None, None)
                    };
                    let ss = film.then_some((&scale, &shift));
                    let got = group_norm_backward_by_ops(&x, &desc, wt, bt, ss, &g)?;
                    let want = grad::group_norm_backward(
                        x.as_slice()?,
                        &desc,
                        wt.map(|t| t.as_slice()).transpose()?,
                        bt.map(|t| t.as_slice()).transpose()?,
                        ss.map(|(a, b)| Ok::<_, crate::Error>((a.as_slice()?, b.as_slice()?)))
                            .transpose()?,
                        g.as_slice()?,
                    )?;
                    assert!(max_rel(&got.x, &want.x) < 1e-4, "{what}: dx");
                    for (name, got, want) in [
                        ("weight", got.weight, want.weight),
                        ("bias", got.bias, want.bias),
                        ("scale", got.scale, want.scale),
                        ("shift", got.shift, want.shift),
                    ] {
                        match (got, want) {
                            (Some(got), Some(want)) => {
                                assert!(max_rel(&got, &want) < 1e-4, "{what}: d{name}")
                            }
                            (None, None) => {}
                            _ => panic!("{what}: d{name} on one side only"),
                        }
                    }
                }
            }
        }
        let gamma = Tensor::from_vec(random_normal(6, 17), &[1, 6, 1, 1, 1])?;
        let (dx, dgamma) = layer_norm_channels_backward_by_ops(&x, &gamma, 1e-5, &g)?;
        let (want_dx, want_dgamma) = grad::layer_norm_channels_backward(
            x.as_slice()?,
            gamma.as_slice()?,
            2,
            6,
            60,
            1e-5,
            g.as_slice()?,
        )?;
        assert!(max_rel(&dx, &want_dx) < 1e-4, "layer norm dx");
        assert!(max_rel(&dgamma, &want_dgamma) < 1e-4, "layer norm dgamma");
        assert_eq!(dgamma.dims(), gamma.dims());
        Ok(())
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

//! Layers shared by every model: convolutions, linear maps, embeddings and
//! normalisations, each a plain struct of [`Tensor`]s.
//!
//! A layer loads through a [`VarBuilder`] positioned at its PyTorch module
//! path (`vb.pp("downs").pp(0).pp("block1").pp("proj")`) and takes its
//! tensors under the module's own names (`weight`, `bias`, `gamma`), with
//! their exact shapes, on the builder's device and element type. `forward`
//! is a short sequence of [`Tensor`] ops, so a layer runs on every device
//! the ops run on.
//!
//! [`Module::visit_params`] walks a layer's (or a whole model's) parameters
//! under their PyTorch `state_dict` keys, so optimisers, EMA and checkpoint
//! writers see the same names a loader takes.

use crate::backend::desc::NormActivation;
use crate::nn::{Conv3dParams, ConvParams, Tensor, VarBuilder};
use crate::{Error, Result};

/// Something with named parameters: a layer or a model.
pub trait Module {
    /// Calls `f(key, tensor)` for every parameter, where `key` is the
    /// PyTorch `state_dict` key: `prefix` (empty at the root, else a module
    /// path without a trailing dot) joined by `.` with the parameter's path
    /// inside this module. Derived tensors (inference-time folds) are not
    /// parameters and are not visited.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor));

    /// Every parameter as `(key, tensor)`, in visiting order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |k, t| out.push((k.to_string(), t.clone())));
        out
    }

    /// Total number of parameter values.
    fn parameter_count(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, t| n += t.elem_count());
        n
    }
}

/// `prefix.name`, or `name` at the root (an empty prefix).
pub fn join_key(prefix: &str, name: impl std::fmt::Display) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl<M: Module> Module for Option<M> {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(m) = self {
            m.visit_params(prefix, f);
        }
    }
}

/// Visits `weight` and, when present, `bias` under `prefix`.
fn visit_weight_bias(
    prefix: &str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    f: &mut dyn FnMut(&str, &Tensor),
) {
    f(&join_key(prefix, "weight"), weight);
    if let Some(b) = bias {
        f(&join_key(prefix, "bias"), b);
    }
}

/// The optional `bias` `[n]` of a layer.
fn load_bias(vb: &VarBuilder, bias: bool, n: usize) -> Result<Option<Tensor>> {
    bias.then(|| vb.get("bias", &[n])).transpose()
}

/// Which convolution op a [`Conv`] runs, with its stride and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvGeom {
    /// A 2-D convolution applied to every frame ([`Tensor::conv2d`]):
    /// PyTorch `Conv2d`, or `Conv3d` with kernel depth 1, stride 1 and no
    /// padding along the frames when `depth_axis` (weight `[O, I, 1, kh, kw]`
    /// instead of `[O, I, kh, kw]`).
    Frames {
        /// Kernel height and width.
        kernel: (usize, usize),
        /// Stride and padding of the two spatial axes.
        params: ConvParams,
        /// Whether the weight carries a depth axis of size 1 (`Conv3d`).
        depth_axis: bool,
    },
    /// A full 3-D convolution ([`Tensor::conv3d`]), PyTorch `Conv3d`.
    Volume {
        /// Kernel depth, height and width.
        kernel: (usize, usize, usize),
        /// Stride and padding of the three spatial axes.
        params: Conv3dParams,
    },
}

impl ConvGeom {
    /// A per-frame convolution with a square `k × k` kernel, stride and
    /// padding `(stride, pad)` on both axes.
    pub fn frames(k: usize, stride: usize, pad: usize, depth_axis: bool) -> ConvGeom {
        ConvGeom::Frames {
            kernel: (k, k),
            params: ConvParams::new(stride, pad),
            depth_axis,
        }
    }

    /// `Conv2d` (two entries per list) or `Conv3d` (three) with per-axis
    /// kernel, stride and padding, as nnU-Net's networks describe them.
    pub fn nd(kernel: &[usize], stride: &[usize], pad: &[usize]) -> Result<ConvGeom> {
        match (kernel, stride, pad) {
            (&[kh, kw], &[sh, sw], &[ph, pw]) => Ok(ConvGeom::Frames {
                kernel: (kh, kw),
                params: ConvParams {
                    stride: (sh, sw),
                    pad: (ph, pw),
                },
                depth_axis: false,
            }),
            (&[kd, kh, kw], &[sd, sh, sw], &[pd, ph, pw]) => Ok(ConvGeom::Volume {
                kernel: (kd, kh, kw),
                params: Conv3dParams {
                    stride: (sd, sh, sw),
                    pad: (pd, ph, pw),
                },
            }),
            _ => Err(Error::invalid(format!(
                "convolution: kernel {kernel:?}, stride {stride:?} and padding {pad:?} \
                 must all have 2 or all have 3 entries"
            ))),
        }
    }

    /// The kernel's spatial extent as it appears at the end of the weight.
    fn kernel_dims(&self) -> Vec<usize> {
        match *self {
            ConvGeom::Frames {
                kernel: (kh, kw),
                depth_axis: true,
                ..
            } => vec![1, kh, kw],
            ConvGeom::Frames {
                kernel: (kh, kw), ..
            } => vec![kh, kw],
            ConvGeom::Volume {
                kernel: (kd, kh, kw),
                ..
            } => vec![kd, kh, kw],
        }
    }
}

/// A convolution or transposed convolution (`Conv2d`, `Conv3d`,
/// `ConvTranspose2d`, `ConvTranspose3d`) with optional bias.
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    geom: ConvGeom,
    transposed: bool,
}

impl Conv {
    /// Loads `weight` `[c_out, c_in, kernel…]` and, when `bias`, `bias`
    /// `[c_out]` from `vb` (the module's path).
    pub fn load(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        geom: ConvGeom,
        bias: bool,
    ) -> Result<Conv> {
        let mut shape = vec![c_out, c_in];
        shape.extend(geom.kernel_dims());
        Ok(Conv {
            weight: vb.get("weight", &shape)?,
            bias: load_bias(vb, bias, c_out)?,
            geom,
            transposed: false,
        })
    }

    /// Loads a transposed convolution: `weight` `[c_in, c_out, kernel…]` as
    /// in PyTorch, `bias` `[c_out]`.
    pub fn load_transposed(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        geom: ConvGeom,
        bias: bool,
    ) -> Result<Conv> {
        let mut shape = vec![c_in, c_out];
        shape.extend(geom.kernel_dims());
        Ok(Conv {
            weight: vb.get("weight", &shape)?,
            bias: load_bias(vb, bias, c_out)?,
            geom,
            transposed: true,
        })
    }

    /// A convolution over given tensors (e.g. weights derived at load
    /// time); shapes are checked by the op on the first forward.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, geom: ConvGeom) -> Conv {
        Conv {
            weight,
            bias,
            geom,
            transposed: false,
        }
    }

    /// The weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The op, stride and padding.
    pub fn geom(&self) -> ConvGeom {
        self.geom
    }

    /// Whether this is a transposed convolution.
    pub fn is_transposed(&self) -> bool {
        self.transposed
    }

    /// The convolution of `x` (`[B, C, H, W]` or `[B, C, F, H, W]` for a
    /// per-frame one, `[B, C, D, H, W]` for a volume one).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        match (self.geom, self.transposed) {
            (ConvGeom::Frames { params, .. }, false) => x.conv2d(w, b, params),
            (ConvGeom::Frames { params, .. }, true) => x.conv_transpose2d(w, b, params),
            (ConvGeom::Volume { params, .. }, false) => x.conv3d(w, b, params),
            (ConvGeom::Volume { params, .. }, true) => x.conv_transpose3d(w, b, params),
        }
    }

    /// `forward(x) + residual`; for a forward per-frame convolution the sum
    /// is fused into the convolution ([`Tensor::conv2d_add`]).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match (self.geom, self.transposed) {
            (ConvGeom::Frames { params, .. }, false) => {
                x.conv2d_add(&self.weight, self.bias.as_ref(), params, residual)
            }
            _ => self.forward(x)?.add(residual),
        }
    }
}

impl Module for Conv {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }
}

/// `nn.Linear`: `x·Wᵀ + b` over the last axis, `weight` `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` `[n_out, n_in]` and, when `bias`, `bias` `[n_out]`.
    pub fn load(vb: &VarBuilder, n_in: usize, n_out: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            weight: vb.get("weight", &[n_out, n_in])?,
            bias: load_bias(vb, bias, n_out)?,
        })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `x·Wᵀ + b` for `x` `[…, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

impl Module for Linear {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }
}

/// `nn.Embedding`: rows of a `weight` `[n, dim]` table.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// Loads `weight` `[n, dim]`.
    pub fn load(vb: &VarBuilder, n: usize, dim: usize) -> Result<Embedding> {
        Ok(Embedding {
            weight: vb.get("weight", &[n, dim])?,
        })
    }

    /// The table `[n, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Rows `ids` of the table, `[ids.len(), dim]`.
    pub fn forward(&self, ids: &[usize]) -> Result<Tensor> {
        self.weight.index_rows(ids)
    }
}

impl Module for Embedding {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_key(prefix, "weight"), &self.weight);
    }
}

/// `nn.GroupNorm(groups, c, eps, affine)` over `[B, C, …]`, with the fused
/// forms (activation, FiLM modulation, residual) of
/// [`Tensor::group_norm_fused`].
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads the affine `weight` and `bias` (`[c]` each) when `affine`.
    pub fn load(
        vb: &VarBuilder,
        groups: usize,
        c: usize,
        eps: f64,
        affine: bool,
    ) -> Result<GroupNorm> {
        if groups == 0 || c % groups != 0 {
            return Err(Error::Model(format!(
                "GroupNorm at `{}`: {groups} groups do not divide {c} channels",
                vb.path("")
            )));
        }
        Ok(GroupNorm {
            weight: affine.then(|| vb.get("weight", &[c])).transpose()?,
            bias: affine.then(|| vb.get("bias", &[c])).transpose()?,
            groups,
            eps,
        })
    }

    /// The normalisation alone.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, NormActivation::Identity, None, None)
    }

    /// Normalisation, optional `·(scale + 1) + shift` (B·C values each,
    /// ordered (sample, channel)), `activation`, then `+ residual`, in one
    /// pass ([`Tensor::group_norm_fused`]).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        activation: NormActivation,
        scale_shift: Option<(&Tensor, &Tensor)>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        x.group_norm_fused(
            self.groups,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
            activation,
            scale_shift,
            residual,
        )
    }

    /// [`GroupNorm::forward_fused`] with SiLU ([`Tensor::group_norm_silu`]):
    /// the denoiser's `Block` after its convolution.
    pub fn forward_silu(
        &self,
        x: &Tensor,
        scale_shift: Option<(&Tensor, &Tensor)>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        x.group_norm_silu(
            self.groups,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
            scale_shift,
            residual,
        )
    }
}

impl Module for GroupNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(w) = &self.weight {
            f(&join_key(prefix, "weight"), w);
        }
        if let Some(b) = &self.bias {
            f(&join_key(prefix, "bias"), b);
        }
    }
}

/// `nn.InstanceNorm{2,3}d(c, eps, affine)` without running statistics
/// (nnU-Net's setting), with the fused activation of
/// [`Tensor::instance_norm_act`].
#[derive(Clone, Debug)]
pub struct InstanceNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl InstanceNorm {
    /// Loads the affine `weight` and `bias` (`[c]` each) when `affine`.
    pub fn load(vb: &VarBuilder, c: usize, eps: f64, affine: bool) -> Result<InstanceNorm> {
        Ok(InstanceNorm {
            weight: affine.then(|| vb.get("weight", &[c])).transpose()?,
            bias: affine.then(|| vb.get("bias", &[c])).transpose()?,
            eps,
        })
    }

    /// The normalisation alone.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.instance_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }

    /// The normalisation followed by `activation`, in one pass.
    pub fn forward_act(&self, x: &Tensor, activation: NormActivation) -> Result<Tensor> {
        x.instance_norm_act(
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
            activation,
        )
    }
}

impl Module for InstanceNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(w) = &self.weight {
            f(&join_key(prefix, "weight"), w);
        }
        if let Some(b) = &self.bias {
            f(&join_key(prefix, "bias"), b);
        }
    }
}

/// LayerNorm across the channels of `[B, C, …]` at every position, times
/// `gamma`, no bias: the denoiser's `LayerNorm` module (population
/// variance), used by its `PreNorm`.
#[derive(Clone, Debug)]
pub struct LayerNormChannels {
    gamma: Tensor,
    eps: f64,
}

impl LayerNormChannels {
    /// Loads `gamma` of exactly `shape` (C values, e.g. `[1, C, 1, 1, 1]`).
    pub fn load(vb: &VarBuilder, shape: &[usize], eps: f64) -> Result<LayerNormChannels> {
        Ok(LayerNormChannels {
            gamma: vb.get("gamma", shape)?,
            eps,
        })
    }

    /// `(x − mean_c) / sqrt(var_c + eps) · gamma`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm_channels(&self.gamma, self.eps)
    }
}

impl Module for LayerNormChannels {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_key(prefix, "gamma"), &self.gamma);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Weights;

    fn weights(keys: &[(&str, &[usize])]) -> Weights {
        Weights::from_tensors(keys.iter().map(|(k, s)| {
            let n: usize = s.iter().product();
            let data = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            (k.to_string(), Tensor::from_vec(data, s).unwrap())
        }))
        .unwrap()
    }

    #[test]
    fn layers_load_by_key_and_enumerate_the_same_keys() -> Result<()> {
        let w = weights(&[
            ("c.weight", &[4, 2, 1, 3, 3]),
            ("c.bias", &[4]),
            ("t.weight", &[4, 2, 2, 2]),
            ("v.weight", &[4, 2, 3, 3, 3]),
            ("l.weight", &[3, 4]),
            ("e.weight", &[5, 2]),
            ("g.weight", &[4]),
            ("g.bias", &[4]),
            ("n.gamma", &[1, 4, 1, 1, 1]),
        ]);
        let vb = w.root();
        let c = Conv::load(&vb.pp("c"), 2, 4, ConvGeom::frames(3, 1, 1, true), true)?;
        let geom = ConvGeom::nd(&[2, 2], &[2, 2], &[0, 0])?;
        let t = Conv::load_transposed(&vb.pp("t"), 4, 2, geom, false)?;
        let v = Conv::load(
            &vb.pp("v"),
            2,
            4,
            ConvGeom::nd(&[3, 3, 3], &[1, 1, 1], &[1, 1, 1])?,
            false,
        )?;
        let l = Linear::load(&vb.pp("l"), 4, 3, false)?;
        let e = Embedding::load(&vb.pp("e"), 5, 2)?;
        let g = GroupNorm::load(&vb.pp("g"), 2, 4, 1e-5, true)?;
        let n = LayerNormChannels::load(&vb.pp("n"), &[1, 4, 1, 1, 1], 1e-5)?;
        w.check_all_used()?;
        let mut keys = Vec::new();
        let mut note = |k: &str, _: &Tensor| keys.push(k.to_string());
        c.visit_params("c", &mut note);
        t.visit_params("t", &mut note);
        v.visit_params("v", &mut note);
        l.visit_params("l", &mut note);
        e.visit_params("e", &mut note);
        g.visit_params("g", &mut note);
        n.visit_params("n", &mut note);
        keys.sort();
        assert_eq!(keys, w.keys().collect::<Vec<_>>());
        assert_eq!(l.named_parameters()[0].0, "weight");
        assert_eq!(c.parameter_count(), 4 * 2 * 9 + 4);

        // Forward shapes through every layer.
        let x = Tensor::full(0.5, &[1, 2, 2, 4, 4])?;
        let y = c.forward(&x)?;
        assert_eq!(y.dims(), &[1, 4, 2, 4, 4]);
        let y = g.forward_silu(&n.forward(&y)?, None, None)?;
        assert_eq!(t.forward(&y.narrow(2, 0, 1)?)?.dims(), &[1, 2, 1, 8, 8]);
        assert_eq!(v.forward(&x)?.dims(), &[1, 4, 2, 4, 4]);
        assert_eq!(l.forward(&Tensor::full(1.0, &[2, 4])?)?.dims(), &[2, 3]);
        assert_eq!(e.forward(&[4, 0])?.dims(), &[2, 2]);
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_key() {
        let w = weights(&[("c.weight", &[4, 2, 3, 3])]);
        let e = Conv::load(
            &w.root().pp("c"),
            2,
            4,
            ConvGeom::frames(3, 1, 1, true),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`c.weight`") && e.contains("[4, 2, 1, 3, 3]"),
            "{e}"
        );
        assert!(ConvGeom::nd(&[3, 3], &[1, 1, 1], &[1, 1]).is_err());
        assert!(GroupNorm::load(&w.root().pp("g"), 3, 4, 1e-5, false).is_err());
    }

    #[test]
    fn fused_conv_add_equals_conv_then_add() -> Result<()> {
        let w = weights(&[("c.weight", &[3, 3, 1, 1]), ("c.bias", &[3])]);
        let c = Conv::load(
            &w.root().pp("c"),
            3,
            3,
            ConvGeom::frames(1, 1, 0, false),
            true,
        )?;
        let x = Tensor::from_vec((0..48).map(|v| (v as f32).cos()).collect(), &[1, 3, 4, 4])?;
        let fused = c.forward_add(&x, &x)?.to_vec()?;
        let separate = c.forward(&x)?.add(&x)?.to_vec()?;
        for (a, b) in fused.iter().zip(&separate) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        Ok(())
    }
}

//! nnU-Net's `PlainConvUNet` (package `dynamic_network_architectures`) in
//! 2-D and 3-D.
//!
//! Implemented from `shared/reference/segmentation.md` ("PlainConvUNet"):
//!
//! - encoder stage `s`: `n_conv_per_stage[s]` × (conv `kernel_sizes[s]`,
//!   padding `(k − 1) / 2`, stride `strides[s]` on the stage's first conv
//!   only → InstanceNorm → LeakyReLU);
//! - decoder stage `s` (from the bottleneck up): transposed conv with
//!   kernel = stride = `strides[-(s+1)]` (bias iff `conv_bias`), concat with
//!   the encoder skip (upsampled features first), `n_conv_per_stage_decoder[s]`
//!   × (conv → norm → nonlin) with `kernel_sizes[-(s+2)]`;
//! - a 1×1 segmentation head per decoder stage; only the last (full
//!   resolution) one is evaluated, the deep-supervision heads are loaded
//!   and shape-checked so a training checkpoint loads unchanged.
//!
//! Parameter paths are the upstream `state_dict` keys
//! (`encoder.stages.<s>.0.convs.<c>.conv.weight`, `…norm.weight`,
//! `decoder.transpconvs.<s>.weight`, `decoder.stages.<s>.convs.<c>.…`,
//! `decoder.seg_layers.<s>.…`). The upstream module exposes the same tensors
//! again under `….all_modules.<i>.…` and `decoder.encoder.…`; those aliases
//! are dropped by [`PlainConvUNet::from_state_dict`] (see [`is_alias_key`])
//! and are not among the parameters [`Module::visit_params`] enumerates (a
//! checkpoint writer that wants upstream's full state dict adds them).
//!
//! Inputs are `[B, C, H, W]` for 2-D and `[B, C, D, H, W]` for 3-D networks;
//! [`PlainConvUNet::forward`] returns full-resolution logits
//! `[B, classes, …]`.

use crate::backend::desc::NormActivation;
use crate::nn::layers::{join_key, Conv, ConvGeom, InstanceNorm, Module};
use crate::nn::{DType, Device, LoadOptions, Tensor, VarBuilder, Weights};
use crate::rng::Rng;
use crate::{Error, Result};
use serde_json::Value;

/// Most resolution stages a PlainConvUNet may have (nnU-Net plans use ≤ 8).
pub const MAX_STAGES: usize = 12;
/// Most input channels, and most classes.
pub const MAX_CHANNELS: usize = 256;
/// Widest stage (nnU-Net caps features at 320 in 3-D, 512 in 2-D).
pub const MAX_FEATURES: usize = 4096;
/// Most convolutions per stage.
pub const MAX_CONVS_PER_STAGE: usize = 16;
/// Largest convolution kernel along one axis.
pub const MAX_KERNEL_SIZE: usize = 15;
/// Largest downsampling stride along one axis.
pub const MAX_STRIDE: usize = 8;

/// Architecture hyper-parameters, as in a plans file's `arch_kwargs` plus
/// the channel counts nnU-Net derives from `dataset.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlainUNetConfig {
    /// 2 (`Conv2d`) or 3 (`Conv3d`).
    pub spatial_dims: usize,
    /// Image channels fed to the network.
    pub input_channels: usize,
    /// Output channels (segmentation heads / classes).
    pub num_classes: usize,
    /// Feature width of each resolution stage.
    pub features_per_stage: Vec<usize>,
    /// Kernel size per stage and spatial axis (odd sizes keep the shape).
    pub kernel_sizes: Vec<Vec<usize>>,
    /// Downsampling stride per stage and spatial axis (first stage usually 1).
    pub strides: Vec<Vec<usize>>,
    /// Convolutions per encoder stage.
    pub n_conv_per_stage: Vec<usize>,
    /// Convolutions per decoder stage (one entry fewer than stages).
    pub n_conv_per_stage_decoder: Vec<usize>,
    /// Whether convolutions and transposed convolutions carry a bias.
    pub conv_bias: bool,
    /// Whether a normalisation follows each convolution (InstanceNorm).
    pub norm: bool,
    /// InstanceNorm epsilon.
    pub norm_eps: f64,
    /// Whether the InstanceNorm has a learnt scale and shift.
    pub norm_affine: bool,
    /// Negative slope of the LeakyReLU (0 for a ReLU); `None`: no
    /// non-linearity.
    pub negative_slope: Option<f32>,
    /// `conv → nonlin → norm` instead of `conv → norm → nonlin`.
    pub nonlin_first: bool,
}

impl PlainUNetConfig {
    /// The network nnU-Net's planner builds when nothing is anisotropic:
    /// one stage per entry of `features_per_stage`, 3×3(×3) kernels,
    /// stride 1 then 2 on every axis, two convolutions per encoder and
    /// decoder stage, biases, affine InstanceNorm (eps 1e-5) and
    /// LeakyReLU(0.01) after it.
    pub fn standard(
        spatial_dims: usize,
        input_channels: usize,
        num_classes: usize,
        features_per_stage: Vec<usize>,
    ) -> PlainUNetConfig {
        let stages = features_per_stage.len();
        let strides = (0..stages)
            .map(|s| vec![if s == 0 { 1 } else { 2 }; spatial_dims])
            .collect();
        PlainUNetConfig {
            spatial_dims,
            input_channels,
            num_classes,
            features_per_stage,
            kernel_sizes: vec![vec![3; spatial_dims]; stages],
            strides,
            n_conv_per_stage: vec![2; stages],
            n_conv_per_stage_decoder: vec![2; stages.saturating_sub(1)],
            conv_bias: true,
            norm: true,
            norm_eps: 1e-5,
            norm_affine: true,
            negative_slope: Some(0.01),
            nonlin_first: false,
        }
    }

    /// Reads `arch_kwargs` of a plans configuration's `architecture`.
    ///
    /// Scalars are broadcast as upstream does (one kernel size for every
    /// stage, …). Dropout is ignored (identity at inference). Anything but
    /// `Conv2d`/`Conv3d`, InstanceNorm (or none) and LeakyReLU/ReLU (or none)
    /// is [`Error::Unsupported`]; malformed values are [`Error::Format`].
    pub fn from_arch_kwargs(
        arch_kwargs: &Value,
        input_channels: usize,
        num_classes: usize,
    ) -> Result<PlainUNetConfig> {
        let kw = arch_kwargs
            .as_object()
            .ok_or_else(|| Error::format("arch_kwargs is not a JSON object"))?;
        let field = |name: &str| {
            kw.get(name)
                .ok_or_else(|| Error::format(format!("arch_kwargs lacks `{name}`")))
        };
        let conv_op = field("conv_op")?.as_str().unwrap_or_default();
        let spatial_dims = if conv_op.ends_with("Conv2d") {
            2
        } else if conv_op.ends_with("Conv3d") {
            3
        } else {
            return Err(Error::Unsupported(format!(
                "conv_op `{conv_op}`: only torch Conv2d and Conv3d networks are supported"
            )));
        };
        let n_stages = json_usize(field("n_stages")?, "n_stages")?;
        if n_stages == 0 {
            return Err(Error::format("arch_kwargs: n_stages must be at least 1"));
        }
        let features_per_stage =
            per_stage(field("features_per_stage")?, n_stages, "features_per_stage")?;
        let kernel_sizes = per_stage_axes(
            field("kernel_sizes")?,
            n_stages,
            spatial_dims,
            "kernel_sizes",
        )?;
        let strides = per_stage_axes(field("strides")?, n_stages, spatial_dims, "strides")?;
        // Upstream accepts either spelling for the encoder's convolution count.
        let enc = kw
            .get("n_conv_per_stage")
            .or_else(|| kw.get("n_blocks_per_stage"))
            .ok_or_else(|| Error::format("arch_kwargs lacks `n_conv_per_stage`"))?;
        let n_conv_per_stage = per_stage(enc, n_stages, "n_conv_per_stage")?;
        let n_conv_per_stage_decoder = per_stage(
            field("n_conv_per_stage_decoder")?,
            n_stages - 1,
            "n_conv_per_stage_decoder",
        )?;
        let conv_bias = match kw.get("conv_bias") {
            None | Some(Value::Null) => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::format(format!("arch_kwargs: conv_bias {v} is not a bool"))
            })?,
        };
        let norm_op = kw.get("norm_op").and_then(Value::as_str);
        let norm = match norm_op {
            None => false,
            Some(n) if n.contains("InstanceNorm") => true,
            Some(n) => {
                return Err(Error::Unsupported(format!(
                    "norm_op `{n}`: only InstanceNorm is supported"
                )))
            }
        };
        let norm_kwargs = kw.get("norm_op_kwargs").and_then(Value::as_object);
        let norm_eps = match norm_kwargs.and_then(|o| o.get("eps")) {
            None | Some(Value::Null) => 1e-5,
            Some(v) => v
                .as_f64()
                .filter(|e| e.is_finite() && *e >= 0.0)
                .ok_or_else(|| {
                    Error::format(format!("norm_op_kwargs.eps {v} is not a number ≥ 0"))
                })?,
        };
        // torch's InstanceNorm defaults to affine=False; nnU-Net plans say true.
        let norm_affine = match norm_kwargs.and_then(|o| o.get("affine")) {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| Error::format(format!("norm_op_kwargs.affine {v} is not a bool")))?,
        };
        let nonlin = kw.get("nonlin").and_then(Value::as_str);
        let negative_slope = match nonlin {
            None => None,
            Some(n) if n.ends_with("LeakyReLU") => {
                let slope = kw
                    .get("nonlin_kwargs")
                    .and_then(|o| o.get("negative_slope"))
                    .filter(|v| !v.is_null());
                Some(match slope {
                    None => 0.01,
                    Some(v) => v.as_f64().ok_or_else(|| {
                        Error::format(format!("nonlin_kwargs.negative_slope {v} is not a number"))
                    })? as f32,
                })
            }
            Some(n) if n.ends_with("ReLU") => Some(0.0),
            Some(n) => {
                return Err(Error::Unsupported(format!(
                    "nonlin `{n}`: only LeakyReLU and ReLU are supported"
                )))
            }
        };
        let nonlin_first = kw
            .get("nonlin_first")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let cfg = PlainUNetConfig {
            spatial_dims,
            input_channels,
            num_classes,
            features_per_stage,
            kernel_sizes,
            strides,
            n_conv_per_stage,
            n_conv_per_stage_decoder,
            conv_bias,
            norm,
            norm_eps,
            norm_affine,
            negative_slope,
            nonlin_first,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of resolution stages.
    pub fn n_stages(&self) -> usize {
        self.features_per_stage.len()
    }

    /// Checks list lengths and that every size is ≥ 1.
    pub fn validate(&self) -> Result<()> {
        let n = self.n_stages();
        let bad = |m: String| Err(Error::invalid(format!("PlainUNetConfig: {m}")));
        if !(2..=3).contains(&self.spatial_dims) {
            return bad(format!("spatial_dims {} is not 2 or 3", self.spatial_dims));
        }
        if n == 0 || self.input_channels == 0 || self.num_classes == 0 {
            return bad("stages, input channels and classes must be ≥ 1".into());
        }
        let lens = [
            ("kernel_sizes", self.kernel_sizes.len(), n),
            ("strides", self.strides.len(), n),
            ("n_conv_per_stage", self.n_conv_per_stage.len(), n),
            (
                "n_conv_per_stage_decoder",
                self.n_conv_per_stage_decoder.len(),
                n - 1,
            ),
        ];
        for (name, got, want) in lens {
            if got != want {
                return bad(format!("{name} has {got} entries, expected {want}"));
            }
        }
        for (name, per_axis) in [
            ("kernel_sizes", &self.kernel_sizes),
            ("strides", &self.strides),
        ] {
            for (s, v) in per_axis.iter().enumerate() {
                if v.len() != self.spatial_dims || v.contains(&0) {
                    return bad(format!(
                        "{name}[{s}] = {v:?}; expected {} sizes ≥ 1",
                        self.spatial_dims
                    ));
                }
            }
        }
        if self.features_per_stage.contains(&0)
            || self.n_conv_per_stage.contains(&0)
            || self.n_conv_per_stage_decoder.contains(&0)
        {
            return bad("feature widths and convolution counts must be ≥ 1".into());
        }
        // Sane bounds, far beyond any trained nnU-Net, so that a hostile
        // plans file cannot ask for absurd weights or activations.
        let bounds = [
            ("stages", n, MAX_STAGES),
            ("input channels", self.input_channels, MAX_CHANNELS),
            ("classes", self.num_classes, MAX_CHANNELS),
        ];
        for (name, got, max) in bounds {
            if got > max {
                return bad(format!("{got} {name}; at most {max}"));
            }
        }
        let per_stage = [
            ("features_per_stage", &self.features_per_stage, MAX_FEATURES),
            (
                "n_conv_per_stage",
                &self.n_conv_per_stage,
                MAX_CONVS_PER_STAGE,
            ),
            (
                "n_conv_per_stage_decoder",
                &self.n_conv_per_stage_decoder,
                MAX_CONVS_PER_STAGE,
            ),
        ];
        for (name, values, max) in per_stage {
            if let Some(v) = values.iter().find(|&&v| v > max) {
                return bad(format!("{name} {values:?} has {v}; at most {max}"));
            }
        }
        for (name, sizes, max) in [
            ("kernel_sizes", &self.kernel_sizes, MAX_KERNEL_SIZE),
            ("strides", &self.strides, MAX_STRIDE),
        ] {
            if let Some(v) = sizes.iter().flatten().find(|&&v| v > max) {
                return bad(format!("{name} {sizes:?} has {v}; at most {max}"));
            }
        }
        if let Some(s) = self.negative_slope {
            if !s.is_finite() {
                return bad(format!("negative slope {s} is not finite"));
            }
        }
        Ok(())
    }

    /// An upper estimate of the activation bytes one batch item of `patch`
    /// holds at the peak of a forward, with `element_bytes` per value: every
    /// stage's skip (kept until the decoder uses it), four tensors of the
    /// largest stage live at once (convolution, normalisation, the
    /// decoder's up-sampled features and their concatenation with the
    /// skip), the input and the logits; doubled for the caching
    /// allocator's size buckets. It sizes sliding-window batches on a GPU
    /// from free memory; it is a bound, not a measurement.
    pub fn activation_bytes_per_item(&self, patch: &[usize], element_bytes: usize) -> usize {
        let mut voxels: Vec<usize> = Vec::with_capacity(self.strides.len());
        let mut size = patch.to_vec();
        for stride in &self.strides {
            for (s, &k) in size.iter_mut().zip(stride) {
                *s = s.div_ceil(k.max(1));
            }
            voxels.push(size.iter().product());
        }
        let stage = |s: usize| self.features_per_stage.get(s).copied().unwrap_or(0) * voxels[s];
        let skips: usize = (0..voxels.len()).map(stage).sum();
        let largest = (0..voxels.len()).map(stage).max().unwrap_or(0);
        let full: usize = patch.iter().product();
        let values = skips
            .saturating_add(largest.saturating_mul(4))
            .saturating_add(full.saturating_mul(self.input_channels + self.num_classes));
        values.saturating_mul(element_bytes).saturating_mul(2)
    }

    /// Per spatial axis, the product of all strides: input sizes must be
    /// multiples of it for the decoder's upsampled features to meet the skips.
    pub fn size_divisor(&self) -> Vec<usize> {
        (0..self.spatial_dims)
            .map(|a| self.strides.iter().map(|s| s[a]).product())
            .collect()
    }
}

/// A JSON value as a non-negative integer.
fn json_usize(v: &Value, name: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::format(format!("arch_kwargs: `{name}` = {v} is not a count")))
}

/// An int (broadcast) or a list of `n` ints.
fn per_stage(v: &Value, n: usize, name: &str) -> Result<Vec<usize>> {
    match v {
        Value::Array(items) => {
            if items.len() != n {
                return Err(Error::format(format!(
                    "arch_kwargs: `{name}` has {} entries, expected {n}",
                    items.len()
                )));
            }
            items.iter().map(|x| json_usize(x, name)).collect()
        }
        other => Ok(vec![json_usize(other, name)?; n]),
    }
}

/// An int (broadcast to all stages and axes) or a list of `n` entries, each
/// an int (broadcast to all axes) or a list of `dims` ints.
fn per_stage_axes(v: &Value, n: usize, dims: usize, name: &str) -> Result<Vec<Vec<usize>>> {
    let axes = |x: &Value| -> Result<Vec<usize>> {
        match x {
            Value::Array(a) if a.len() == dims => a.iter().map(|y| json_usize(y, name)).collect(),
            Value::Array(a) => Err(Error::format(format!(
                "arch_kwargs: `{name}` entry {x} has {} axes, expected {dims}",
                a.len()
            ))),
            other => Ok(vec![json_usize(other, name)?; dims]),
        }
    };
    match v {
        Value::Array(items) => {
            if items.len() != n {
                return Err(Error::format(format!(
                    "arch_kwargs: `{name}` has {} entries, expected {n}",
                    items.len()
                )));
            }
            items.iter().map(axes).collect()
        }
        other => Ok(vec![axes(other)?; n]),
    }
}

/// Prefixes added by training wrappers (DataParallel, torch.compile).
const WRAPPER_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// `key` without wrapper prefixes.
fn strip_wrappers(key: &str) -> &str {
    let mut k = key;
    while let Some(rest) = WRAPPER_PREFIXES.iter().find_map(|p| k.strip_prefix(p)) {
        k = rest;
    }
    k
}

/// Whether `key` (after wrapper prefixes) is one of the duplicate names under
/// which the upstream module exposes tensors a second time: the
/// `ConvDropoutNormReLU.all_modules` sequence and the decoder's reference to
/// the encoder (`decoder.encoder.…`).
pub fn is_alias_key(key: &str) -> bool {
    let k = strip_wrappers(key);
    k.starts_with("decoder.encoder.") || k.contains(".all_modules.")
}

/// `Conv{2,3}d(c_in, c_out, kernel, stride, padding (k − 1)/2)`.
fn load_conv(
    vb: &VarBuilder,
    c_in: usize,
    c_out: usize,
    kernel: &[usize],
    stride: &[usize],
    bias: bool,
) -> Result<Conv> {
    let pad: Vec<usize> = kernel.iter().map(|k| (k - 1) / 2).collect();
    Conv::load(vb, c_in, c_out, ConvGeom::nd(kernel, stride, &pad)?, bias)
}

/// `ConvTranspose{2,3}d(c_in, c_out, kernel = stride, stride)`; the weight
/// is `[c_in, c_out, …]` as in PyTorch.
fn load_transposed(
    vb: &VarBuilder,
    c_in: usize,
    c_out: usize,
    stride: &[usize],
    bias: bool,
) -> Result<Conv> {
    let geom = ConvGeom::nd(stride, stride, &vec![0; stride.len()])?;
    Conv::load_transposed(vb, c_in, c_out, geom, bias)
}

/// `ConvDropoutNormReLU`: conv → InstanceNorm → LeakyReLU (dropout is the
/// identity at inference).
#[derive(Debug)]
struct ConvNormAct {
    conv: Conv,
    norm: Option<InstanceNorm>,
    slope: Option<f32>,
    nonlin_first: bool,
}

impl ConvNormAct {
    fn load(
        vb: &VarBuilder,
        cfg: &PlainUNetConfig,
        c_in: usize,
        c_out: usize,
        kernel: &[usize],
        stride: &[usize],
    ) -> Result<ConvNormAct> {
        let conv = load_conv(&vb.pp("conv"), c_in, c_out, kernel, stride, cfg.conv_bias)?;
        let norm = cfg
            .norm
            .then(|| InstanceNorm::load(&vb.pp("norm"), c_out, cfg.norm_eps, cfg.norm_affine))
            .transpose()?;
        Ok(ConvNormAct {
            conv,
            norm,
            slope: cfg.negative_slope,
            nonlin_first: cfg.nonlin_first,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        match (&self.norm, self.slope) {
            (Some(norm), Some(slope)) if !self.nonlin_first => {
                norm.forward_act(&y, NormActivation::LeakyRelu(slope))
            }
            (Some(norm), slope) => {
                let y = match slope {
                    Some(s) => y.leaky_relu(s)?,
                    None => y,
                };
                norm.forward(&y)
            }
            (None, Some(s)) => y.leaky_relu(s),
            (None, None) => Ok(y),
        }
    }
}

impl Module for ConvNormAct {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.conv.visit_params(&join_key(prefix, "conv"), f);
        self.norm.visit_params(&join_key(prefix, "norm"), f);
    }
}

/// The PlainConvUNet: encoder stages, transposed convolutions, decoder
/// stages and the segmentation heads (only the full-resolution one runs).
pub struct PlainConvUNet {
    cfg: PlainUNetConfig,
    /// `encoder.stages.<s>.0.convs.<c>`.
    encoder: Vec<Vec<ConvNormAct>>,
    /// `decoder.transpconvs.<s>`.
    transpconvs: Vec<Conv>,
    /// `decoder.stages.<s>.convs.<c>`.
    decoder: Vec<Vec<ConvNormAct>>,
    /// `decoder.seg_layers.<s>` of the lower-resolution decoder stages:
    /// deep-supervision heads, loaded so training checkpoints round-trip,
    /// never evaluated at inference.
    deep_supervision_heads: Vec<Conv>,
    /// `decoder.seg_layers.<last>`: the full-resolution head.
    seg_head: Conv,
}

impl Module for PlainConvUNet {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        let stages = join_key(prefix, "encoder.stages");
        for (s, blocks) in self.encoder.iter().enumerate() {
            let convs = join_key(&join_key(&stages, s), "0.convs");
            for (c, block) in blocks.iter().enumerate() {
                block.visit_params(&join_key(&convs, c), f);
            }
        }
        let transp = join_key(prefix, "decoder.transpconvs");
        let stages = join_key(prefix, "decoder.stages");
        let heads = join_key(prefix, "decoder.seg_layers");
        for (s, (up, blocks)) in self.transpconvs.iter().zip(&self.decoder).enumerate() {
            up.visit_params(&join_key(&transp, s), f);
            let convs = join_key(&join_key(&stages, s), "convs");
            for (c, block) in blocks.iter().enumerate() {
                block.visit_params(&join_key(&convs, c), f);
            }
            // One head per decoder stage; the last is the full-resolution one.
            let head = self.deep_supervision_heads.get(s).unwrap_or(&self.seg_head);
            head.visit_params(&join_key(&heads, s), f);
        }
    }
}

impl std::fmt::Debug for PlainConvUNet {
    // The configuration says what the network is; its weights would print
    // millions of numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainConvUNet")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl PlainConvUNet {
    /// Builds the network from `vb` (rooted at the `state_dict` root), taking
    /// every parameter by its upstream key with its exact shape, on `vb`'s
    /// device and element type. Alias keys must already be gone (see
    /// [`PlainConvUNet::from_state_dict`]).
    pub fn new(vb: &VarBuilder, cfg: &PlainUNetConfig) -> Result<PlainConvUNet> {
        cfg.validate()?;
        let n = cfg.n_stages();
        let f = &cfg.features_per_stage;
        let mut encoder = Vec::with_capacity(n);
        let mut c_in = cfg.input_channels;
        for (s, &width) in f.iter().enumerate() {
            let svb = vb.pp("encoder.stages").pp(s).pp("0.convs");
            let mut blocks = Vec::with_capacity(cfg.n_conv_per_stage[s]);
            for c in 0..cfg.n_conv_per_stage[s] {
                let stride = if c == 0 {
                    cfg.strides[s].clone()
                } else {
                    vec![1; cfg.spatial_dims]
                };
                blocks.push(ConvNormAct::load(
                    &svb.pp(c),
                    cfg,
                    if c == 0 { c_in } else { width },
                    width,
                    &cfg.kernel_sizes[s],
                    &stride,
                )?);
            }
            encoder.push(blocks);
            c_in = width;
        }
        let mut transpconvs = Vec::with_capacity(n - 1);
        let mut decoder = Vec::with_capacity(n - 1);
        let mut heads = Vec::with_capacity(n - 1);
        let ones = vec![1; cfg.spatial_dims];
        for s in 0..n - 1 {
            let below = f[n - 1 - s];
            let skip = f[n - 2 - s];
            transpconvs.push(load_transposed(
                &vb.pp("decoder.transpconvs").pp(s),
                below,
                skip,
                &cfg.strides[n - 1 - s],
                cfg.conv_bias,
            )?);
            let svb = vb.pp("decoder.stages").pp(s).pp("convs");
            let mut blocks = Vec::with_capacity(cfg.n_conv_per_stage_decoder[s]);
            for c in 0..cfg.n_conv_per_stage_decoder[s] {
                blocks.push(ConvNormAct::load(
                    &svb.pp(c),
                    cfg,
                    if c == 0 { 2 * skip } else { skip },
                    skip,
                    &cfg.kernel_sizes[n - 2 - s],
                    &ones,
                )?);
            }
            decoder.push(blocks);
            heads.push(load_conv(
                &vb.pp("decoder.seg_layers").pp(s),
                skip,
                cfg.num_classes,
                &ones,
                &ones,
                true,
            )?);
        }
        let seg_head = match heads.pop() {
            Some(h) => h,
            // One stage: no decoder; upstream builds no head either, so the
            // network cannot produce logits.
            None => {
                return Err(Error::Unsupported(
                    "a PlainConvUNet with a single stage has no segmentation head".into(),
                ))
            }
        };
        Ok(PlainConvUNet {
            cfg: cfg.clone(),
            encoder,
            transpconvs,
            decoder,
            deep_supervision_heads: heads,
            seg_head,
        })
    }

    /// Builds the network from a state dict: wrapper prefixes (`module.`,
    /// `_orig_mod.`) are stripped and alias keys dropped; then every
    /// remaining tensor must be taken, so a missing, misshapen or unknown
    /// key is an [`Error::Model`] naming it.
    pub fn from_state_dict(
        named: impl IntoIterator<Item = (String, Tensor)>,
        cfg: &PlainUNetConfig,
    ) -> Result<PlainConvUNet> {
        PlainConvUNet::from_state_dict_with(named, cfg, &LoadOptions::default())
    }

    /// [`PlainConvUNet::from_state_dict`] onto the device and precision of
    /// `options`: each parameter is converted once as it is taken.
    pub fn from_state_dict_with(
        named: impl IntoIterator<Item = (String, Tensor)>,
        cfg: &PlainUNetConfig,
        options: &LoadOptions,
    ) -> Result<PlainConvUNet> {
        let (device, dtype) = options.resolve()?;
        PlainConvUNet::from_state_dict_on(named, cfg, &device, dtype)
    }

    /// [`PlainConvUNet::from_state_dict`] onto an opened `device` as
    /// `dtype`. Tracked parameters stay on the graph: the conversion's
    /// backward returns their gradients to their own device and type
    /// (mixed-precision training).
    pub fn from_state_dict_on(
        named: impl IntoIterator<Item = (String, Tensor)>,
        cfg: &PlainUNetConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<PlainConvUNet> {
        let weights = Weights::from_tensors(named.into_iter().filter(|(k, _)| !is_alias_key(k)))?;
        let net = PlainConvUNet::new(&weights.root_on(device, dtype), cfg)?;
        weights.check_all_used()?;
        Ok(net)
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &PlainUNetConfig {
        &self.cfg
    }

    /// The device holding the parameters (where the network runs).
    pub fn device(&self) -> Device {
        self.seg_head.weight().device()
    }

    /// The parameters' element type (activations use it too).
    pub fn dtype(&self) -> DType {
        self.seg_head.weight().dtype()
    }

    /// Logits `[B, classes, …]` at the input's resolution for `x`
    /// `[B, C, H, W]` (2-D) or `[B, C, D, H, W]` (3-D). Spatial sizes must be
    /// multiples of [`PlainUNetConfig::size_divisor`]. The input moves to
    /// the network's device and element type once, on entry; the logits
    /// stay there.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)?
            .pop()
            .ok_or_else(|| Error::Internal("PlainConvUNet gave no logits".into()))
    }

    /// The forward pass; with `deep`, every head's logits (see
    /// [`PlainConvUNet::forward_deep_supervision`]).
    fn run(&self, x: &Tensor, deep: bool) -> Result<Vec<Tensor>> {
        let cfg = &self.cfg;
        let mut deep = deep.then(Vec::new);
        let dims = x.dims();
        if dims.len() != cfg.spatial_dims + 2 || dims[1] != cfg.input_channels {
            let spatial = if cfg.spatial_dims == 2 {
                "H, W"
            } else {
                "D, H, W"
            };
            return Err(Error::invalid(format!(
                "PlainConvUNet input: expected [B, {}, {spatial}], got {dims:?}",
                cfg.input_channels
            )));
        }
        let divisor = cfg.size_divisor();
        if dims[2..]
            .iter()
            .zip(&divisor)
            .any(|(&d, &m)| d == 0 || d % m != 0)
        {
            return Err(Error::invalid(format!(
                "PlainConvUNet input: spatial size {:?} must be a positive multiple of {divisor:?} \
                 (the product of the strides)",
                &dims[2..]
            )));
        }
        let mut skips = Vec::with_capacity(self.encoder.len());
        let mut h = x.to_device(&self.device(), self.dtype())?;
        for stage in &self.encoder {
            for block in stage {
                h = block.forward(&h)?;
            }
            skips.push(h.clone());
        }
        let mut low = skips
            .pop()
            .ok_or_else(|| Error::Internal("PlainConvUNet without stages".into()))?;
        for (s, (up, stage)) in self.transpconvs.iter().zip(&self.decoder).enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Internal(format!("no skip for decoder stage {s}")))?;
            let upsampled = up.forward(&low)?;
            if upsampled.dims()[2..] != skip.dims()[2..] {
                return Err(Error::invalid(format!(
                    "PlainConvUNet decoder stage {s}: upsampled {:?} does not meet skip {:?}",
                    upsampled.dims(),
                    skip.dims()
                )));
            }
            let mut h = Tensor::cat(&[&upsampled, &skip], 1)?;
            for block in stage {
                h = block.forward(&h)?;
            }
            low = h;
            if let Some(head) = self.deep_supervision_heads.get(s) {
                if let Some(out) = deep.as_mut() {
                    out.push(head.forward(&low)?);
                }
            }
        }
        let logits = self.seg_head.forward(&low)?;
        Ok(match deep {
            Some(mut out) => {
                out.push(logits);
                out.reverse();
                out
            }
            None => vec![logits],
        })
    }

    /// The logits of every segmentation head, as nnU-Net trains with deep
    /// supervision: full resolution first, then each lower decoder stage
    /// (`decoder.seg_layers.<last>`, …, `.0`).
    pub fn forward_deep_supervision(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.run(x, true)
    }
}

/// Random weights under the upstream `state_dict` keys of `cfg` (no alias
/// keys): normal draws scaled by `1/sqrt(fan_in)`, seeded. For tests and
/// benchmarks that need a network of a given shape without a checkpoint.
pub fn random_state_dict(cfg: &PlainUNetConfig, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut push = |key: String, shape: Vec<usize>, rng: &mut Rng| {
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let std = (1.0 / fan_in as f64).sqrt();
        let data = (0..shape.iter().product())
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        out.push((key, Tensor::from_vec(data, &shape).unwrap()));
    };
    let n = cfg.n_stages();
    let f = &cfg.features_per_stage;
    let block = |prefix: String,
                 c_in: usize,
                 c_out: usize,
                 k: &[usize],
                 push: &mut dyn FnMut(String, Vec<usize>, &mut Rng),
                 rng: &mut Rng| {
        let mut shape = vec![c_out, c_in];
        shape.extend_from_slice(k);
        push(format!("{prefix}.conv.weight"), shape, rng);
        if cfg.conv_bias {
            push(format!("{prefix}.conv.bias"), vec![c_out], rng);
        }
        if cfg.norm && cfg.norm_affine {
            push(format!("{prefix}.norm.weight"), vec![c_out], rng);
            push(format!("{prefix}.norm.bias"), vec![c_out], rng);
        }
    };
    let mut c_in = cfg.input_channels;
    for (s, &width) in f.iter().enumerate() {
        for c in 0..cfg.n_conv_per_stage[s] {
            let ci = if c == 0 { c_in } else { width };
            block(
                format!("encoder.stages.{s}.0.convs.{c}"),
                ci,
                width,
                &cfg.kernel_sizes[s],
                &mut push,
                &mut rng,
            );
        }
        c_in = width;
    }
    for s in 0..n - 1 {
        let (below, skip) = (f[n - 1 - s], f[n - 2 - s]);
        let mut shape = vec![below, skip];
        shape.extend_from_slice(&cfg.strides[n - 1 - s]);
        push(format!("decoder.transpconvs.{s}.weight"), shape, &mut rng);
        if cfg.conv_bias {
            push(
                format!("decoder.transpconvs.{s}.bias"),
                vec![skip],
                &mut rng,
            );
        }
        for c in 0..cfg.n_conv_per_stage_decoder[s] {
            block(
                format!("decoder.stages.{s}.convs.{c}"),
                if c == 0 { 2 * skip } else { skip },
                skip,
                &cfg.kernel_sizes[n - 2 - s],
                &mut push,
                &mut rng,
            );
        }
        let mut shape = vec![cfg.num_classes, skip];
        shape.extend(std::iter::repeat_n(1, cfg.spatial_dims));
        push(format!("decoder.seg_layers.{s}.weight"), shape, &mut rng);
        push(
            format!("decoder.seg_layers.{s}.bias"),
            vec![cfg.num_classes],
            &mut rng,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arch_2d() -> Value {
        json!({
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3], [3, 1], [1, 3]],
            "strides": [[1, 1], [2, 1], [2, 2]],
            "n_conv_per_stage": [2, 1, 2],
            "n_conv_per_stage_decoder": [1, 2],
            "conv_bias": true,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": true},
            "dropout_op": null,
            "dropout_op_kwargs": null,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": true}
        })
    }

    #[test]
    fn activation_bytes_count_skips_temporaries_and_ends() {
        let cfg = PlainUNetConfig::from_arch_kwargs(&arch_2d(), 1, 4).unwrap();
        // Stages at [16, 8], [8, 8], [4, 4] with 4, 8, 16 features: skips
        // 512 + 512 + 256, four of the largest (512), input and logits
        // 128 × (1 + 4); f16, doubled for the allocator.
        let values = 1280 + 4 * 512 + 128 * 5;
        assert_eq!(cfg.activation_bytes_per_item(&[16, 8], 2), values * 2 * 2);
        // Larger patches need more.
        assert!(
            cfg.activation_bytes_per_item(&[32, 16], 2)
                > cfg.activation_bytes_per_item(&[16, 8], 2)
        );
    }

    #[test]
    fn config_from_arch_kwargs_broadcasts_and_defaults() {
        let cfg = PlainUNetConfig::from_arch_kwargs(&arch_2d(), 1, 4).unwrap();
        assert_eq!(cfg.spatial_dims, 2);
        assert_eq!(cfg.kernel_sizes[1], vec![3, 1]);
        assert_eq!(cfg.negative_slope, Some(0.01));
        assert_eq!(cfg.size_divisor(), vec![4, 2]);
        let mut a = arch_2d();
        a["kernel_sizes"] = json!(3);
        a["n_conv_per_stage"] = json!(2);
        a["conv_op"] = json!("torch.nn.modules.conv.Conv3d");
        a["strides"] = json!([1, 2, [1, 2, 2]]);
        let cfg = PlainUNetConfig::from_arch_kwargs(&a, 2, 3).unwrap();
        assert_eq!(cfg.spatial_dims, 3);
        assert_eq!(cfg.kernel_sizes, vec![vec![3, 3, 3]; 3]);
        assert_eq!(cfg.strides[2], vec![1, 2, 2]);
        assert_eq!(cfg.n_conv_per_stage, vec![2, 2, 2]);
        let mut bad = arch_2d();
        bad["norm_op"] = json!("torch.nn.BatchNorm2d");
        assert!(matches!(
            PlainUNetConfig::from_arch_kwargs(&bad, 1, 4),
            Err(Error::Unsupported(_))
        ));
        let mut bad = arch_2d();
        bad["strides"] = json!([[1, 1], [2, 2]]);
        assert!(matches!(
            PlainUNetConfig::from_arch_kwargs(&bad, 1, 4),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn loads_upstream_keys_and_rejects_bad_state_dicts() {
        let cfg = PlainUNetConfig::from_arch_kwargs(&arch_2d(), 1, 4).unwrap();
        let sd = random_state_dict(&cfg, 1);
        // The upstream state dict repeats tensors under alias keys.
        let mut with_aliases = sd.clone();
        for (k, t) in &sd {
            let alias = k
                .replace(".conv.", ".all_modules.0.")
                .replace(".norm.", ".all_modules.1.");
            if alias != *k {
                with_aliases.push((alias, t.clone()));
            }
            if k.starts_with("encoder.") {
                with_aliases.push((format!("decoder.{k}"), t.clone()));
            }
        }
        assert!(is_alias_key(
            "module.decoder.encoder.stages.0.0.convs.0.conv.weight"
        ));
        let prefixed = with_aliases
            .iter()
            .map(|(k, t)| (format!("module.{k}"), t.clone()));
        let net = PlainConvUNet::from_state_dict(prefixed, &cfg).unwrap();
        let x = Tensor::from_vec(
            (0..2 * 16 * 12).map(|v| (v as f32 * 0.37).sin()).collect(),
            &[2, 1, 16, 12],
        )
        .unwrap();
        let y = net.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 4, 16, 12]);
        assert!(y.to_vec().unwrap().iter().all(|v| v.is_finite()));
        // Sizes that the strides do not divide, and wrong channel counts.
        assert!(net
            .forward(&Tensor::zeros(&[1, 1, 15, 12]).unwrap())
            .is_err());
        assert!(net
            .forward(&Tensor::zeros(&[1, 2, 16, 12]).unwrap())
            .is_err());

        let missing: Vec<_> = sd
            .iter()
            .filter(|(k, _)| k != "decoder.seg_layers.0.bias")
            .cloned()
            .collect();
        let e = PlainConvUNet::from_state_dict(missing, &cfg).unwrap_err();
        assert!(e.to_string().contains("decoder.seg_layers.0.bias"), "{e}");
        let mut extra = sd.clone();
        extra.push((
            "decoder.unknown.weight".into(),
            Tensor::zeros(&[1]).unwrap(),
        ));
        let e = PlainConvUNet::from_state_dict(extra, &cfg).unwrap_err();
        assert!(e.to_string().contains("decoder.unknown.weight"), "{e}");
        let mut wrong = sd.clone();
        for (k, t) in wrong.iter_mut() {
            if k == "encoder.stages.1.0.convs.0.conv.weight" {
                *t = Tensor::zeros(&[8, 4, 3, 3]).unwrap();
            }
        }
        let e = PlainConvUNet::from_state_dict(wrong, &cfg).unwrap_err();
        assert!(
            e.to_string()
                .contains("encoder.stages.1.0.convs.0.conv.weight"),
            "{e}"
        );
    }

    /// Deep supervision gives one head per decoder stage, full resolution
    /// first (equal to `forward`), each lower stage at its own resolution.
    #[test]
    fn deep_supervision_heads_come_full_resolution_first() {
        let cfg = PlainUNetConfig::from_arch_kwargs(&arch_2d(), 1, 4).unwrap();
        let net = PlainConvUNet::from_state_dict(random_state_dict(&cfg, 3), &cfg).unwrap();
        let x = Tensor::full(0.5, &[1, 1, 16, 8]).unwrap();
        let heads = net.forward_deep_supervision(&x).unwrap();
        assert_eq!(heads.len(), cfg.n_stages() - 1);
        assert_eq!(
            heads[0].to_vec().unwrap(),
            net.forward(&x).unwrap().to_vec().unwrap()
        );
        for pair in heads.windows(2) {
            assert!(pair[1].elem_count() < pair[0].elem_count());
            assert_eq!(pair[1].dims()[1], 4);
        }
    }

    #[test]
    fn fused_norm_matches_separate_ops() {
        let mut rng = Rng::new(4);
        let x = Tensor::from_vec(
            (0..2 * 3 * 700)
                .map(|_| 2.0 + 3.0 * rng.normal() as f32)
                .collect(),
            &[2, 3, 700],
        )
        .unwrap();
        let w = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).unwrap();
        let b = Tensor::from_vec(vec![0.1, 0.0, -0.3], &[3]).unwrap();
        let fused = x
            .instance_norm_act(Some(&w), Some(&b), 1e-5, NormActivation::LeakyRelu(0.01))
            .unwrap();
        let separate = x
            .instance_norm(Some(&w), Some(&b), 1e-5)
            .unwrap()
            .leaky_relu(0.01)
            .unwrap();
        let err = fused
            .to_vec()
            .unwrap()
            .iter()
            .zip(&separate.to_vec().unwrap())
            .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-5, "{err}");
    }
}

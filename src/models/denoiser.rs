//! The LeFusion / CLAIM diffusion denoiser ("Unet3D").
//!
//! Implemented from `shared/reference/denoiser.md`: a video-style U-Net over
//! `[B, C, F, H, W]` whose spatial convolutions act per frame and whose
//! frames meet only in temporal attention. Parameter paths are exactly the
//! upstream PyTorch `state_dict` keys, and the configuration (widths, levels,
//! channels, condition length, heads, head width) is inferred from tensor
//! shapes, so a converted checkpoint loads with [`Denoiser::load`] (or
//! [`Denoiser::load_with`] onto another device or precision).
//! [`Module::visit_params`] enumerates exactly those keys (the rotary
//! `freqs` included: upstream stores them as a parameter); the diffusion
//! wrapper's schedule buffers (`betas`, …), which [`Weights`] drops, are
//! buffers upstream and not enumerated.

use crate::nn::layers::{
    join_key, Conv, ConvGeom, Embedding, GroupNorm, LayerNormChannels, Linear, Module,
};
use crate::nn::{ConvParams, DType, Device, DeviceGraph, LoadOptions, Tensor, VarBuilder, Weights};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Normalisation epsilon of GroupNorm and the channel LayerNorm.
const EPS: f64 = 1e-5;

/// Hyper-parameters of the denoiser (spec: "Hyper-parameters").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DenoiserConfig {
    /// Base width; also the width of the sinusoidal time embedding.
    pub dim: usize,
    /// Width multiplier per level (`dim · m`).
    pub dim_mults: Vec<usize>,
    /// Input and output channels C.
    pub channels: usize,
    /// Length of the conditioning histogram; `None` = unconditional.
    pub cond_dim: Option<usize>,
    /// Heads in every attention.
    pub attn_heads: usize,
    /// Width per head (also the rotary embedding width).
    pub attn_dim_head: usize,
    /// Kernel size of the first convolution (`(1, k, k)`, padding k/2).
    pub init_kernel_size: usize,
    /// GroupNorm groups (not visible in tensor shapes; 8 upstream).
    pub resnet_groups: usize,
    /// Whether every level has the spatial linear attention.
    pub use_sparse_linear_attn: bool,
}

impl DenoiserConfig {
    /// CLAIM's EMIDEC 2-D generator: dim 72, mults (1, 2, 4, 8), C 1, cond 16.
    pub fn claim() -> DenoiserConfig {
        DenoiserConfig {
            dim: 72,
            dim_mults: vec![1, 2, 4, 8],
            channels: 1,
            cond_dim: Some(16),
            attn_heads: 8,
            attn_dim_head: 32,
            init_kernel_size: 7,
            resnet_groups: 8,
            use_sparse_linear_attn: true,
        }
    }

    /// An upper estimate of the activation bytes one item of `frames` ×
    /// `size`² holds at the peak of an inference forward, at
    /// `element_bytes` per value: both skips of every level (kept for the
    /// decoder), and at the widest level (width × voxels) four tensors of
    /// twice the width (a decoder block's concatenated input, its
    /// normalised and convolved features) plus the spatial attention's
    /// q, k, v and output (`heads · dim_head` channels each); then the
    /// input and output; doubled for the caching allocator's size
    /// buckets. It sizes automatic synthesis batches on a GPU from free
    /// memory; a bound, not a measurement.
    pub fn activation_bytes_per_item(
        &self,
        frames: usize,
        size: usize,
        element_bytes: usize,
    ) -> usize {
        let hidden = self.attn_heads.saturating_mul(self.attn_dim_head);
        let (mut skips, mut widest, mut side) = (0usize, 0usize, size);
        for m in &self.dim_mults {
            let voxels = frames.saturating_mul(side).saturating_mul(side);
            let width = self.dim.saturating_mul(*m);
            skips = skips.saturating_add(voxels.saturating_mul(2 * width));
            let working = 8usize
                .saturating_mul(width)
                .saturating_add(4usize.saturating_mul(hidden));
            widest = widest.max(voxels.saturating_mul(working));
            side = side.div_ceil(2);
        }
        let ends = frames
            .saturating_mul(size)
            .saturating_mul(size)
            .saturating_mul(2 * self.channels);
        skips
            .saturating_add(widest)
            .saturating_add(ends)
            .saturating_mul(element_bytes)
            .saturating_mul(2)
    }

    /// Reads the configuration off a state dict's tensor shapes (GroupNorm
    /// groups are taken as 8, the upstream value).
    pub fn infer(weights: &Weights) -> Result<DenoiserConfig> {
        let vb = weights.root();
        let bad = |msg: String| Error::Model(msg);
        let init = vb.pp("init_conv").shape_of("weight")?;
        let (dim, channels, k) = match init[..] {
            [d, c, 1, k, k2] if k == k2 && k % 2 == 1 => (d, c, k),
            _ => {
                return Err(bad(format!(
                    "`init_conv.weight` has shape {init:?}, expected [dim, C, 1, k, k] with odd k"
                )))
            }
        };
        let mut dim_mults = Vec::new();
        while vb
            .pp("downs")
            .pp(dim_mults.len())
            .pp("0.block1.proj")
            .contains("weight")
        {
            let w = vb
                .pp("downs")
                .pp(dim_mults.len())
                .pp("0.block1.proj")
                .shape_of("weight")?;
            let out = w.first().copied().unwrap_or(0);
            if dim == 0 || out % dim != 0 || out == 0 {
                return Err(bad(format!(
                    "`downs.{}.0.block1.proj.weight` width {out} is not a multiple of dim {dim}",
                    dim_mults.len()
                )));
            }
            dim_mults.push(out / dim);
        }
        if dim_mults.is_empty() {
            return Err(bad("missing tensor `downs.0.0.block1.proj.weight`".into()));
        }
        let bias_shape = vb
            .pp("time_rel_pos_bias.relative_attention_bias")
            .shape_of("weight")?;
        let heads = match bias_shape[..] {
            [_, h] if h > 0 => h,
            _ => return Err(bad(format!("`time_rel_pos_bias.relative_attention_bias.weight` has shape {bias_shape:?}, expected [buckets, heads]"))),
        };
        let qkv = vb
            .pp("init_temporal_attn.fn.fn.fn.to_qkv")
            .shape_of("weight")?;
        let hidden = qkv.first().copied().unwrap_or(0) / 3;
        if hidden == 0 || hidden % heads != 0 {
            return Err(bad(format!("`init_temporal_attn.fn.fn.fn.to_qkv.weight` {qkv:?} is not [3·{heads}·dim_head, dim]")));
        }
        let time_dim = 4 * dim;
        let mlp = vb.pp("downs.0.0.mlp.1").shape_of("weight")?;
        let cond = mlp.get(1).copied().unwrap_or(0).checked_sub(time_dim).ok_or_else(|| {
            bad(format!("`downs.0.0.mlp.1.weight` {mlp:?} is narrower than the time embedding ({time_dim})"))
        })?;
        Ok(DenoiserConfig {
            dim,
            dim_mults,
            channels,
            cond_dim: (cond > 0).then_some(cond),
            attn_heads: heads,
            attn_dim_head: hidden / heads,
            init_kernel_size: k,
            resnet_groups: 8,
            use_sparse_linear_attn: vb.contains("downs.0.2.fn.norm.gamma"),
        })
    }

    fn time_dim(&self) -> usize {
        4 * self.dim
    }

    fn cond_total(&self) -> usize {
        self.time_dim() + self.cond_dim.unwrap_or(0)
    }

    fn hidden(&self) -> usize {
        self.attn_heads * self.attn_dim_head
    }

    /// `(in, out)` widths of the levels, `[(dim, dim·m0), (dim·m0, dim·m1), …]`.
    fn in_out(&self) -> Vec<(usize, usize)> {
        let mut dims = vec![self.dim];
        dims.extend(self.dim_mults.iter().map(|m| self.dim * m));
        dims.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// A `(1, k, k)` per-frame convolution with a `Conv3d` weight `[O, I, 1, k, k]`.
fn frames3d(k: usize, stride: usize, pad: usize) -> ConvGeom {
    ConvGeom::frames(k, stride, pad, true)
}

/// `Block`: conv (1,3,3) → GroupNorm → optional `x·(scale+1)+shift` → SiLU
/// (the last three fused into one pass, which also adds the ResnetBlock's
/// residual when given).
#[derive(Debug)]
struct Block {
    proj: Conv,
    norm: GroupNorm,
}

impl Block {
    fn load(vb: &VarBuilder, c_in: usize, c_out: usize, groups: usize) -> Result<Block> {
        Ok(Block {
            proj: Conv::load(&vb.pp("proj"), c_in, c_out, frames3d(3, 1, 1), true)?,
            norm: GroupNorm::load(&vb.pp("norm"), groups, c_out, EPS, true)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        scale_shift: Option<(&Tensor, &Tensor)>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.norm
            .forward_silu(&self.proj.forward(x)?, scale_shift, residual)
    }
}

impl Module for Block {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.proj.visit_params(&join_key(prefix, "proj"), f);
        self.norm.visit_params(&join_key(prefix, "norm"), f);
    }
}

/// `ResnetBlock(c_in, c_out, time_emb_dim?)`.
#[derive(Debug)]
struct ResnetBlock {
    /// `mlp.1` (`mlp.0` is the parameter-free SiLU).
    mlp: Option<Linear>,
    block1: Block,
    block2: Block,
    res_conv: Option<Conv>,
    c_out: usize,
}

impl ResnetBlock {
    fn load(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        emb: Option<usize>,
        groups: usize,
    ) -> Result<ResnetBlock> {
        Ok(ResnetBlock {
            mlp: emb
                .map(|e| Linear::load(&vb.pp("mlp.1"), e, 2 * c_out, true))
                .transpose()?,
            block1: Block::load(&vb.pp("block1"), c_in, c_out, groups)?,
            block2: Block::load(&vb.pp("block2"), c_out, c_out, groups)?,
            res_conv: (c_in != c_out)
                .then(|| Conv::load(&vb.pp("res_conv"), c_in, c_out, frames3d(1, 1, 0), true))
                .transpose()?,
            c_out,
        })
    }

    fn forward(&self, x: &Tensor, emb: Option<&Tensor>) -> Result<Tensor> {
        let ss = match (&self.mlp, emb) {
            (Some(mlp), Some(emb)) => {
                let e = mlp.forward(&emb.silu()?)?;
                let b = e.dim(0)?;
                let halves = e.chunk(2, 1)?;
                let scale = halves[0].reshape(&[b, self.c_out, 1, 1, 1])?;
                let shift = halves[1].reshape(&[b, self.c_out, 1, 1, 1])?;
                Some((scale, shift))
            }
            _ => None,
        };
        let h = self
            .block1
            .forward(x, ss.as_ref().map(|(a, b)| (a, b)), None)?;
        let residual = match &self.res_conv {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        self.block2.forward(&h, None, Some(&residual))
    }
}

impl Module for ResnetBlock {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.mlp.visit_params(&join_key(prefix, "mlp.1"), f);
        self.block1.visit_params(&join_key(prefix, "block1"), f);
        self.block2.visit_params(&join_key(prefix, "block2"), f);
        self.res_conv.visit_params(&join_key(prefix, "res_conv"), f);
    }
}

/// `Residual(PreNorm(c, SpatialLinearAttention(c)))`.
#[derive(Debug)]
struct SpatialLinearAttention {
    /// `fn.norm`.
    norm: LayerNormChannels,
    /// `fn.fn.to_qkv`.
    to_qkv: Conv,
    /// `fn.fn.to_out`.
    to_out: Conv,
    heads: usize,
}

impl SpatialLinearAttention {
    /// `vb` is the Residual's path; the module sits at `fn.fn`.
    fn load(vb: &VarBuilder, c: usize, cfg: &DenoiserConfig) -> Result<Self> {
        let inner = vb.pp("fn.fn");
        let hid = cfg.hidden();
        let one = ConvGeom::frames(1, 1, 0, false);
        Ok(SpatialLinearAttention {
            norm: LayerNormChannels::load(&vb.pp("fn.norm"), &[1, c, 1, 1, 1], EPS)?,
            to_qkv: Conv::load(&inner.pp("to_qkv"), c, 3 * hid, one, false)?,
            to_out: Conv::load(&inner.pp("to_out"), hid, c, one, true)?,
            heads: cfg.attn_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm.forward(x)?;
        let qkv = self.to_qkv.forward(&h)?;
        self.to_out
            .forward_add(&qkv.linear_attention(self.heads)?, x)
    }
}

impl Module for SpatialLinearAttention {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.norm.visit_params(&join_key(prefix, "fn.norm"), f);
        self.to_qkv
            .visit_params(&join_key(prefix, "fn.fn.to_qkv"), f);
        self.to_out
            .visit_params(&join_key(prefix, "fn.fn.to_out"), f);
    }
}

/// Which token axis an [`Attention`] attends over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    /// The F frames at each (h, w), with rotary embedding and position bias.
    Temporal,
    /// The H·W positions of each frame, no position information.
    Spatial,
}

/// With one frame the temporal attention's softmax has a single key, so the
/// block is exactly `to_out(to_v(x))`: two 1×1 convolutions without a
/// nonlinearity between them. Derived from the parameters by
/// [`Denoiser::fold_for_inference`]; not a parameter itself.
#[derive(Debug)]
enum SingleFrame {
    /// Both as one `[C, C]` 1×1 convolution, `W_out·W_v` (fewer
    /// multiply-adds than the pair when C < 2·hidden).
    Fused(Conv),
    /// The value rows of `to_qkv` (`[hidden, C]`) and `to_out` (`[C, hidden]`)
    /// as 1×1 convolutions.
    Pair(Conv, Conv),
}

/// `Residual(PreNorm(c, EinopsToAndFrom(..., Attention(c))))`.
#[derive(Debug)]
struct Attention {
    /// `fn.norm`.
    norm: LayerNormChannels,
    /// `fn.fn.fn.to_qkv`.
    to_qkv: Linear,
    /// `fn.fn.fn.to_out`.
    to_out: Linear,
    /// Rotary frequencies `fn.fn.fn.rotary_emb.freqs` (temporal attention
    /// only).
    freqs: Option<Tensor>,
    /// Temporal attention's exact form for a single frame, `to_out(v)`,
    /// when folded for inference.
    single_frame: Option<SingleFrame>,
    heads: usize,
    dim_head: usize,
    axis: Axis,
}

impl Attention {
    /// `vb` is the Residual's path; the attention sits at `fn.fn.fn`.
    fn load(vb: &VarBuilder, c: usize, cfg: &DenoiserConfig, axis: Axis) -> Result<Self> {
        let inner = vb.pp("fn.fn.fn");
        let hid = cfg.hidden();
        let freqs = match axis {
            Axis::Temporal => Some(
                // f32 on every device: an f16 frequency turns the angle
                // p·f by up to 1.4e-3 rad at 10 frames.
                inner
                    .pp("rotary_emb")
                    .get_as("freqs", &[cfg.attn_dim_head / 2], DType::F32)?,
            ),
            Axis::Spatial => None,
        };
        Ok(Attention {
            norm: LayerNormChannels::load(&vb.pp("fn.norm"), &[1, c, 1, 1, 1], EPS)?,
            to_qkv: Linear::load(&inner.pp("to_qkv"), c, 3 * hid, false)?,
            to_out: Linear::load(&inner.pp("to_out"), hid, c, false)?,
            freqs,
            single_frame: None,
            heads: cfg.attn_heads,
            dim_head: cfg.attn_dim_head,
            axis,
        })
    }

    /// Computes the single-frame form of a temporal attention from its
    /// parameters (with tensor ops, on the parameters' device).
    fn fold(&mut self) -> Result<()> {
        if self.axis != Axis::Temporal {
            return Ok(());
        }
        let hid = self.heads * self.dim_head;
        let c = self.to_out.weight().dim(0)?;
        let v = self.to_qkv.weight().narrow(0, 2 * hid, hid)?;
        let one = ConvGeom::frames(1, 1, 0, false);
        self.single_frame = Some(if c < 2 * hid {
            // W_out·W_v = W_out·((W_vᵀ)ᵀ), with `linear` computing x·Wᵀ.
            let vt = v.permute(&[1, 0])?;
            let w = self.to_out.weight().linear(&vt, None)?;
            SingleFrame::Fused(Conv::from_tensors(w.reshape(&[c, c, 1, 1])?, None, one))
        } else {
            SingleFrame::Pair(
                Conv::from_tensors(v.reshape(&[hid, c, 1, 1])?, None, one),
                Conv::from_tensors(self.to_out.weight().reshape(&[c, hid, 1, 1])?, None, one),
            )
        });
        Ok(())
    }

    /// Multi-head attention over tokens `[G, T, C]` → `[G, T, C]`.
    fn attend(&self, tokens: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (g, t) = (tokens.dim(0)?, tokens.dim(1)?);
        let (h, d) = (self.heads, self.dim_head);
        let qkv = self
            .to_qkv
            .forward(tokens)?
            .reshape(&[g, t, 3, h, d])?
            .permute(&[2, 0, 3, 1, 4])?;
        let parts = qkv.chunk(3, 0)?;
        let shape = [g * h, t, d];
        let mut q = parts[0]
            .reshape(&shape)?
            .affine((d as f32).powf(-0.5), 0.0)?;
        let mut k = parts[1].reshape(&shape)?;
        let v = parts[2].reshape(&shape)?;
        if let Some(freqs) = &self.freqs {
            q = q.rotary(freqs)?;
            k = k.rotary(freqs)?;
        }
        let out = Tensor::attention(&q, &k, &v, h, bias)?;
        let out = out
            .reshape(&[g, h, t, d])?
            .permute(&[0, 2, 1, 3])?
            .reshape(&[g, t, h * d])?;
        self.to_out.forward(&out)
    }

    fn forward(&self, x: &Tensor, pos_bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, c, f, hh, ww) = five(x)?;
        let xn = self.norm.forward(x)?;
        let out = match self.axis {
            Axis::Temporal => {
                if let (1, Some(single)) = (f, &self.single_frame) {
                    // Spec: with F = 1 the softmax has one key, so the block
                    // is exactly to_out(v) at every position.
                    return match single {
                        SingleFrame::Fused(w) => w.forward_add(&xn, x),
                        SingleFrame::Pair(v, o) => o.forward_add(&v.forward(&xn)?, x),
                    };
                } else if f == 1 {
                    // The same exact form from the live parameters (training:
                    // gradients reach the value rows of to_qkv and to_out;
                    // the query and key rows and the position bias get none,
                    // as their true gradient is zero).
                    let hid = self.heads * self.dim_head;
                    let wv = self.to_qkv.weight().narrow(0, 2 * hid, hid)?;
                    let one = ConvParams::new(1, 0);
                    let v = xn.conv2d(&wv.reshape(&[hid, c, 1, 1, 1])?, None, one)?;
                    let wo = self.to_out.weight().reshape(&[c, hid, 1, 1, 1])?;
                    return v.conv2d_add(&wo, None, one, x);
                } else {
                    let tokens = xn
                        .permute(&[0, 3, 4, 2, 1])?
                        .reshape(&[b * hh * ww, f, c])?;
                    let y = self.attend(&tokens, pos_bias)?;
                    y.reshape(&[b, hh, ww, f, c])?.permute(&[0, 4, 3, 1, 2])?
                }
            }
            Axis::Spatial => {
                let tokens = xn
                    .permute(&[0, 2, 3, 4, 1])?
                    .reshape(&[b * f, hh * ww, c])?;
                let y = self.attend(&tokens, None)?;
                y.reshape(&[b, f, hh, ww, c])?.permute(&[0, 4, 1, 2, 3])?
            }
        };
        out.add(x)
    }
}

impl Module for Attention {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.norm.visit_params(&join_key(prefix, "fn.norm"), f);
        let inner = join_key(prefix, "fn.fn.fn");
        if let Some(freqs) = &self.freqs {
            f(&join_key(&inner, "rotary_emb.freqs"), freqs);
        }
        self.to_qkv.visit_params(&join_key(&inner, "to_qkv"), f);
        self.to_out.visit_params(&join_key(&inner, "to_out"), f);
    }
}

fn five(x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
    match *x.dims() {
        [b, c, f, h, w] => Ok((b, c, f, h, w)),
        _ => Err(Error::invalid(format!(
            "denoiser: expected [B, C, F, H, W], got {:?}",
            x.dims()
        ))),
    }
}

/// One U-Net level: two ResnetBlocks, spatial linear and temporal
/// attention, then down- or up-sampling (absent on the last level); the
/// ModuleList entries `0`…`4`.
#[derive(Debug)]
struct Level {
    block1: ResnetBlock,
    block2: ResnetBlock,
    spatial: Option<SpatialLinearAttention>,
    temporal: Attention,
    resample: Option<Conv>,
}

impl Level {
    fn forward(&self, x: &Tensor, emb: &Tensor, pos_bias: &Tensor) -> Result<Tensor> {
        let mut x = self.block1.forward(x, Some(emb))?;
        x = self.block2.forward(&x, Some(emb))?;
        if let Some(attn) = &self.spatial {
            x = attn.forward(&x)?;
        }
        self.temporal.forward(&x, Some(pos_bias))
    }
}

impl Module for Level {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.block1.visit_params(&join_key(prefix, 0), f);
        self.block2.visit_params(&join_key(prefix, 1), f);
        self.spatial.visit_params(&join_key(prefix, 2), f);
        self.temporal.visit_params(&join_key(prefix, 3), f);
        self.resample.visit_params(&join_key(prefix, 4), f);
    }
}

/// The Unet3D denoiser: predicts the noise ε in `x_t` at timestep t.
///
/// Its parameters are the upstream tensors as loaded ([`Module`] visits
/// them under their `state_dict` keys). [`Denoiser::fold_for_inference`]
/// adds derived forms that make single-frame inputs cheaper; the loaders
/// meant for inference ([`Denoiser::load`], [`Denoiser::load_with`],
/// [`Denoiser::from_file`], [`Denoiser::from_file_with`]) fold, while
/// [`Denoiser::new`] builds the plain network.
#[derive(Debug)]
pub struct Denoiser {
    config: DenoiserConfig,
    null_cond_emb: Option<Tensor>,
    /// `time_rel_pos_bias.relative_attention_bias`.
    rel_pos_bias: Embedding,
    init_conv: Conv,
    init_temporal_attn: Attention,
    /// `time_mlp.1` (`time_mlp.0` is the sinusoidal embedding).
    time_mlp1: Linear,
    /// `time_mlp.3` (`time_mlp.2` is the GELU).
    time_mlp2: Linear,
    downs: Vec<Level>,
    mid_block1: ResnetBlock,
    mid_spatial_attn: Attention,
    mid_temporal_attn: Attention,
    mid_block2: ResnetBlock,
    ups: Vec<Level>,
    /// `final_conv.0`.
    final_block: ResnetBlock,
    /// `final_conv.1`.
    final_conv: Conv,
    /// Position biases by frame count, computed once: the look-up uploads
    /// its ids, which a captured graph could not hold.
    pos_bias_cache: Mutex<HashMap<usize, Tensor>>,
}

impl Module for Denoiser {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        if let Some(null) = &self.null_cond_emb {
            f(&join_key(prefix, "null_cond_emb"), null);
        }
        self.rel_pos_bias.visit_params(
            &join_key(prefix, "time_rel_pos_bias.relative_attention_bias"),
            f,
        );
        self.init_conv
            .visit_params(&join_key(prefix, "init_conv"), f);
        self.init_temporal_attn
            .visit_params(&join_key(prefix, "init_temporal_attn"), f);
        self.time_mlp1
            .visit_params(&join_key(prefix, "time_mlp.1"), f);
        self.time_mlp2
            .visit_params(&join_key(prefix, "time_mlp.3"), f);
        let downs = join_key(prefix, "downs");
        for (i, level) in self.downs.iter().enumerate() {
            level.visit_params(&join_key(&downs, i), f);
        }
        self.mid_block1
            .visit_params(&join_key(prefix, "mid_block1"), f);
        self.mid_spatial_attn
            .visit_params(&join_key(prefix, "mid_spatial_attn"), f);
        self.mid_temporal_attn
            .visit_params(&join_key(prefix, "mid_temporal_attn"), f);
        self.mid_block2
            .visit_params(&join_key(prefix, "mid_block2"), f);
        let ups = join_key(prefix, "ups");
        for (i, level) in self.ups.iter().enumerate() {
            level.visit_params(&join_key(&ups, i), f);
        }
        self.final_block
            .visit_params(&join_key(prefix, "final_conv.0"), f);
        self.final_conv
            .visit_params(&join_key(prefix, "final_conv.1"), f);
    }
}

impl Denoiser {
    /// A newly initialised network's parameters for `config` under their
    /// upstream keys (PyTorch's default initialisation, from `seed`; see
    /// [`Weights::fresh`]): the start of a training run.
    pub fn initial_parameters(config: &DenoiserConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
        let fresh = Weights::fresh(seed);
        Denoiser::new(&fresh.root(), config)?;
        Ok(fresh.into_created())
    }

    /// The learned null condition `[1, cond_dim]` of a conditional model
    /// (what replaces a dropped histogram in training, and the
    /// unconditional branch of guidance).
    pub fn null_condition(&self) -> Option<&Tensor> {
        self.null_cond_emb.as_ref()
    }

    /// Builds the network for `config`, taking every parameter from `vb` by
    /// its PyTorch key and checking its shape; the parameters are on `vb`'s
    /// device and element type. The network is not folded (see
    /// [`Denoiser::fold_for_inference`]).
    pub fn new(vb: &VarBuilder, config: &DenoiserConfig) -> Result<Denoiser> {
        let cfg = config;
        if cfg.dim == 0
            || cfg.dim_mults.is_empty()
            || cfg.attn_heads == 0
            || cfg.attn_dim_head % 2 != 0
            || cfg.resnet_groups == 0
        {
            return Err(Error::invalid(format!(
                "denoiser: unusable configuration {cfg:?}"
            )));
        }
        let groups = cfg.resnet_groups;
        if let Some(w) = std::iter::once(cfg.dim)
            .chain(cfg.dim_mults.iter().map(|m| cfg.dim * m))
            .find(|w| w % groups != 0)
        {
            return Err(Error::Model(format!(
                "denoiser: width {w} is not divisible into {groups} GroupNorm groups"
            )));
        }
        let emb = Some(cfg.cond_total());
        let in_out = cfg.in_out();
        let n = in_out.len();
        let null_cond_emb = cfg
            .cond_dim
            .map(|c| vb.get("null_cond_emb", &[1, c]))
            .transpose()?;
        let bias_vb = vb.pp("time_rel_pos_bias.relative_attention_bias");
        // Upstream's 32 buckets when the tensor is missing (a missing
        // tensor is then reported by the load below; a fresh set creates it).
        let buckets = bias_vb
            .shape_of("weight")
            .ok()
            .and_then(|s| s.first().copied())
            .unwrap_or(32);
        let rel_pos_bias = Embedding::load(&bias_vb, buckets, cfg.attn_heads)?;
        if buckets < 4 || buckets % 2 != 0 {
            return Err(Error::Model(format!(
                "relative position bias has {buckets} buckets, expected an even number ≥ 4"
            )));
        }
        let k = cfg.init_kernel_size;
        let init_conv = Conv::load(
            &vb.pp("init_conv"),
            cfg.channels,
            cfg.dim,
            frames3d(k, 1, k / 2),
            true,
        )?;
        let level =
            |vb: VarBuilder, c_in: usize, c_out: usize, resample: Option<bool>| -> Result<Level> {
                // Downsample: Conv3d (1,4,4), stride (1,2,2), pad (0,1,1);
                // Upsample: the transposed convolution of the same shape.
                let geom = frames3d(4, 2, 1);
                Ok(Level {
                    block1: ResnetBlock::load(&vb.pp(0), c_in, c_out, emb, groups)?,
                    block2: ResnetBlock::load(&vb.pp(1), c_out, c_out, emb, groups)?,
                    spatial: if cfg.use_sparse_linear_attn {
                        Some(SpatialLinearAttention::load(&vb.pp(2), c_out, cfg)?)
                    } else {
                        None
                    },
                    temporal: Attention::load(&vb.pp(3), c_out, cfg, Axis::Temporal)?,
                    resample: match resample {
                        Some(false) => Some(Conv::load(&vb.pp(4), c_out, c_out, geom, true)?),
                        Some(true) => {
                            Some(Conv::load_transposed(&vb.pp(4), c_out, c_out, geom, true)?)
                        }
                        None => None,
                    },
                })
            };
        let downs = in_out
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| level(vb.pp("downs").pp(i), a, b, (i + 1 < n).then_some(false)))
            .collect::<Result<Vec<_>>>()?;
        let mid = in_out[n - 1].1;
        let ups = in_out
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &(a, b))| level(vb.pp("ups").pp(i), 2 * b, a, (i + 1 < n).then_some(true)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Denoiser {
            config: cfg.clone(),
            null_cond_emb,
            rel_pos_bias,
            pos_bias_cache: Mutex::new(HashMap::new()),
            init_conv,
            init_temporal_attn: Attention::load(
                &vb.pp("init_temporal_attn"),
                cfg.dim,
                cfg,
                Axis::Temporal,
            )?,
            time_mlp1: Linear::load(&vb.pp("time_mlp.1"), cfg.dim, cfg.time_dim(), true)?,
            time_mlp2: Linear::load(&vb.pp("time_mlp.3"), cfg.time_dim(), cfg.time_dim(), true)?,
            downs,
            mid_block1: ResnetBlock::load(&vb.pp("mid_block1"), mid, mid, emb, groups)?,
            mid_spatial_attn: Attention::load(&vb.pp("mid_spatial_attn"), mid, cfg, Axis::Spatial)?,
            mid_temporal_attn: Attention::load(
                &vb.pp("mid_temporal_attn"),
                mid,
                cfg,
                Axis::Temporal,
            )?,
            mid_block2: ResnetBlock::load(&vb.pp("mid_block2"), mid, mid, emb, groups)?,
            ups,
            final_block: ResnetBlock::load(
                &vb.pp("final_conv.0"),
                2 * cfg.dim,
                cfg.dim,
                None,
                groups,
            )?,
            final_conv: Conv::load(
                &vb.pp("final_conv.1"),
                cfg.dim,
                cfg.channels,
                frames3d(1, 1, 0),
                true,
            )?,
        })
    }

    /// Every temporal attention, mutably.
    fn temporal_attentions(&mut self) -> impl Iterator<Item = &mut Attention> {
        std::iter::once(&mut self.init_temporal_attn)
            .chain(std::iter::once(&mut self.mid_temporal_attn))
            .chain(
                self.downs
                    .iter_mut()
                    .chain(self.ups.iter_mut())
                    .map(|l| &mut l.temporal),
            )
    }

    /// Precomputes, from the parameters, the exact single-frame form of
    /// every temporal attention (with one frame its softmax has one key, so
    /// the block is `to_out(to_v(x))`, evaluated as one or two 1×1
    /// convolutions). An inference-time optimisation: the parameters are
    /// unchanged and remain what [`Module::visit_params`] enumerates; inputs
    /// with several frames are unaffected. Recompute after changing the
    /// parameters.
    pub fn fold_for_inference(&mut self) -> Result<()> {
        for attn in self.temporal_attentions() {
            attn.fold()?;
        }
        Ok(())
    }

    /// Drops the forms of [`Denoiser::fold_for_inference`], so every
    /// forward pass evaluates the network exactly as upstream writes it.
    pub fn unfold(&mut self) {
        for attn in self.temporal_attentions() {
            attn.single_frame = None;
        }
    }

    /// Whether [`Denoiser::fold_for_inference`] forms are in use.
    pub fn is_folded(&self) -> bool {
        self.init_temporal_attn.single_frame.is_some()
    }

    /// Infers the configuration from `weights`, builds the network on the
    /// weights' device and element type, folds it for inference, and fails
    /// with [`Error::Model`] if any tensor is missing, misshapen or left
    /// over.
    pub fn load(weights: &Weights) -> Result<Denoiser> {
        Denoiser::load_on(weights, &weights.root())
    }

    /// [`Denoiser::load`] onto the device and precision of `options`: each
    /// parameter is converted once as it is taken.
    pub fn load_with(weights: &Weights, options: &LoadOptions) -> Result<Denoiser> {
        let (device, dtype) = options.resolve()?;
        Denoiser::load_on(weights, &weights.root_on(&device, dtype))
    }

    fn load_on(weights: &Weights, vb: &VarBuilder) -> Result<Denoiser> {
        let config = DenoiserConfig::infer(weights)?;
        let mut model = Denoiser::new(vb, &config)?;
        weights.check_all_used()?;
        model.fold_for_inference()?;
        Ok(model)
    }

    /// [`Denoiser::load`] from a `.safetensors` file, on the CPU in f32
    /// (`builtin`: the built-in model, [`crate::models::builtin`]).
    pub fn from_file(path: &Path) -> Result<Denoiser> {
        Denoiser::from_file_with(path, &LoadOptions::default())
    }

    /// [`Denoiser::load_with`] from a `.safetensors` file (f32, f16 or
    /// bf16; `builtin`: the built-in model).
    pub fn from_file_with(path: &Path, options: &LoadOptions) -> Result<Denoiser> {
        if crate::models::builtin::is_builtin(path) {
            return crate::models::builtin::denoiser(options);
        }
        Denoiser::load_with(&Weights::load(path)?, options)
    }

    /// The configuration.
    pub fn config(&self) -> &DenoiserConfig {
        &self.config
    }

    /// The device holding the parameters (where the network runs).
    pub fn device(&self) -> Device {
        self.rel_pos_bias.weight().device()
    }

    /// The parameters' element type (activations use it too).
    pub fn dtype(&self) -> DType {
        self.rel_pos_bias.weight().dtype()
    }

    /// Relative position bias `[heads, F, F]` (T5 buckets of key − query).
    fn position_bias(&self, frames: usize) -> Result<Tensor> {
        if let Some(bias) = self
            .pos_bias_cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&frames).cloned())
        {
            return Ok(bias);
        }
        let num_buckets = self.rel_pos_bias.weight().dim(0)?;
        // A plain loop rather than a flat_map collect, for memcheck
        // (tests/valgrind.supp).
        let mut ids = Vec::with_capacity(frames * frames);
        for i in 0..frames {
            for j in 0..frames {
                ids.push(relative_bucket(j as i64 - i as i64, num_buckets, 32));
            }
        }
        let bias = self
            .rel_pos_bias
            .forward(&ids)?
            .reshape(&[frames, frames, self.config.attn_heads])?
            .permute(&[2, 0, 1])?;
        if let Ok(mut cache) = self.pos_bias_cache.lock() {
            cache.insert(frames, bias.clone());
        }
        Ok(bias)
    }

    /// Checks a forward's input `[B, C, F, H, W]` (H and W positive
    /// multiples of 2^(levels−1)) and its timesteps; returns (B, F).
    fn check_input(&self, x: &Tensor, t_len: usize) -> Result<(usize, usize)> {
        let (b, c, f, h, w) = five(x)?;
        let cfg = &self.config;
        let align = u32::try_from(cfg.dim_mults.len() - 1)
            .ok()
            .and_then(|levels| 1usize.checked_shl(levels))
            .ok_or_else(|| Error::invalid("denoiser: too many levels"))?;
        if c != cfg.channels
            || h % align != 0
            || w % align != 0
            || b == 0
            || f == 0
            || h == 0
            || w == 0
        {
            return Err(Error::invalid(format!(
                "denoiser input {:?}: expected [B, {}, F, H, W] with H and W positive multiples of {align}",
                x.dims(),
                cfg.channels
            )));
        }
        if t_len != b {
            return Err(Error::invalid(format!(
                "denoiser: {t_len} timesteps for a batch of {b}"
            )));
        }
        Ok((b, f))
    }

    /// The condition rows of a batch of `b`: `cond` (checked, moved to the
    /// model's device and type), or the learned null condition for every
    /// row when `cond` is `None`; `None` for an unconditional model.
    fn condition_rows(&self, b: usize, cond: Option<&Tensor>) -> Result<Option<Tensor>> {
        match (&self.null_cond_emb, cond) {
            (Some(null), Some(cd)) => {
                if cd.dims() != [b, null.dims()[1]] {
                    return Err(Error::invalid(format!(
                        "denoiser condition {:?}: expected [{b}, {}]",
                        cd.dims(),
                        null.dims()[1]
                    )));
                }
                Ok(Some(cd.to_device(&self.device(), self.dtype())?))
            }
            (Some(null), None) => Ok(Some(Tensor::cat(&vec![null; b], 0)?)),
            (None, Some(_)) => Err(Error::invalid(
                "denoiser: this model is unconditional but a condition was given",
            )),
            (None, None) => Ok(None),
        }
    }

    /// Predicts the noise in `x` (`[B, C, F, H, W]`, H and W divisible by
    /// 2^(levels−1)) at timesteps `t` (one per batch item). `cond`
    /// (`[B, cond_dim]`) is the histogram condition of a conditional model;
    /// `None` uses the learned null condition (the unconditional branch of
    /// classifier-free guidance). An unconditional model takes no `cond`.
    pub fn predict_noise(&self, x: &Tensor, t: &[f32], cond: Option<&Tensor>) -> Result<Tensor> {
        let (b, _) = self.check_input(x, t.len())?;
        let rows = self.condition_rows(b, cond)?;
        let emb =
            Tensor::sinusoidal_embedding_on(t, self.config.dim, &self.device(), self.dtype())?;
        self.forward(x, &emb, rows.as_ref())
    }

    /// The network on `x` (any device and type; moved to the model's) with
    /// the sinusoidal timestep features `emb` (`[B, dim]`, model's device
    /// and type) and the condition rows (`[B, cond_dim]`, or `None` for an
    /// unconditional model), all checked by the caller.
    fn forward(&self, x: &Tensor, emb: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let (_, _, f, _, _) = five(x)?;
        // Inputs move to the model's device and type once, here.
        let (device, dtype) = (self.device(), self.dtype());
        let x = &x.to_device(&device, dtype)?;
        let mut emb = self
            .time_mlp2
            .forward(&self.time_mlp1.forward(emb)?.gelu()?)?;
        if let Some(cond) = cond {
            emb = Tensor::cat(&[&emb, cond], 1)?;
        }
        let pos_bias = self.position_bias(f)?;
        let mut x = self.init_conv.forward(x)?;
        let r = x.clone();
        x = self.init_temporal_attn.forward(&x, Some(&pos_bias))?;
        let mut skips = Vec::with_capacity(self.downs.len());
        for level in &self.downs {
            x = level.forward(&x, &emb, &pos_bias)?;
            skips.push(x.clone());
            if let Some(down) = &level.resample {
                x = down.forward(&x)?;
            }
        }
        x = self.mid_block1.forward(&x, Some(&emb))?;
        x = self.mid_spatial_attn.forward(&x, None)?;
        x = self.mid_temporal_attn.forward(&x, Some(&pos_bias))?;
        x = self.mid_block2.forward(&x, Some(&emb))?;
        for level in &self.ups {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Internal("denoiser: skip stack exhausted".into()))?;
            x = level.forward(&Tensor::cat(&[&x, &skip], 1)?, &emb, &pos_bias)?;
            if let Some(up) = &level.resample {
                x = up.forward(&x)?;
            }
        }
        x = Tensor::cat(&[&x, &r], 1)?;
        self.final_conv
            .forward(&self.final_block.forward(&x, None)?)
    }

    /// Classifier-free guidance: `null + (cond_out − null)·scale`, where
    /// `null` is the prediction with the null condition; `scale == 1` is the
    /// plain conditional prediction. Otherwise both branches run as one
    /// batched forward of 2B items (conditional rows first).
    pub fn predict_noise_guided(
        &self,
        x: &Tensor,
        t: &[f32],
        cond: &Tensor,
        scale: f32,
    ) -> Result<Tensor> {
        if self.null_cond_emb.is_none() {
            return Err(Error::invalid(
                "denoiser: guidance needs a conditional model",
            ));
        }
        let (b, _) = self.check_input(x, t.len())?;
        let rows = self.condition_rows(b, Some(cond))?;
        let emb =
            Tensor::sinusoidal_embedding_on(t, self.config.dim, &self.device(), self.dtype())?;
        self.guided_forward(x, &emb, rows.as_ref(), scale)
    }

    /// [`Denoiser::forward`] with guidance `scale` (1 = off): for another
    /// scale the batch is doubled, the second half with null condition
    /// rows, and the halves combined.
    fn guided_forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        cond: Option<&Tensor>,
        scale: f32,
    ) -> Result<Tensor> {
        let (Some(null), Some(cond), false) = (&self.null_cond_emb, cond, scale == 1.0) else {
            return self.forward(x, emb, cond);
        };
        let b = x.dim(0)?;
        let nulls = Tensor::cat(&vec![null; b], 0)?;
        let out = self.forward(
            &Tensor::cat(&[x, x], 0)?,
            &Tensor::cat(&[emb, emb], 0)?,
            Some(&Tensor::cat(&[cond, &nulls], 0)?),
        )?;
        let (cond_out, null_out) = (out.narrow(0, 0, b)?, out.narrow(0, b, b)?);
        null_out.add(&cond_out.sub(&null_out)?.affine(scale, 0.0)?)
    }

    /// Records one evaluation of the network — `[B, C, F, H, W]` F32
    /// inputs, the condition `cond` (`[B, cond_dim]`; `None` for the null
    /// condition or an unconditional model) and guidance `scale` — as a
    /// device graph that [`CapturedDenoiser::predict`] replays with new
    /// inputs and timesteps: the sampler's per-step network cost without
    /// per-op launches. Fails with [`Error::Unsupported`] on the CPU, and
    /// with the device's reason when the work cannot be captured (the
    /// caller then evaluates eagerly).
    pub fn capture(
        &self,
        shape: [usize; 5],
        cond: Option<&Tensor>,
        scale: f32,
    ) -> Result<CapturedDenoiser> {
        let device = self.device();
        if matches!(device, Device::Cpu) {
            return Err(Error::Unsupported(
                "denoiser capture needs a CUDA device".into(),
            ));
        }
        let b = shape[0];
        let x = Tensor::full_on(0.0, &shape, &device, DType::F32)?;
        self.check_input(&x, b)?;
        let rows = self.condition_rows(b, cond)?;
        if scale != 1.0 && rows.is_none() {
            return Err(Error::invalid(
                "denoiser: guidance needs a conditional model",
            ));
        }
        let emb =
            Tensor::sinusoidal_embedding_on(&vec![0.0; b], self.config.dim, &device, self.dtype())?;
        let pos_bias_frames = shape[2];
        // The position bias is computed from host ids (an upload, which a
        // graph cannot hold): warm the model's cache for these frames.
        self.position_bias(pos_bias_frames)?;
        let run = || -> Result<Tensor> {
            self.guided_forward(&x, &emb, rows.as_ref(), scale)?
                .to_dtype(DType::F32)
        };
        // Warm-up: fills the pool with every buffer the capture will need.
        drop(run()?);
        let (graph, out) = device.capture(run)?;
        Ok(CapturedDenoiser {
            graph,
            x,
            emb,
            out,
            _cond: rows,
            dim: self.config.dim,
            device,
            dtype: self.dtype(),
        })
    }
}

/// One captured network evaluation of a [`Denoiser`] ([`Denoiser::capture`]):
/// fixed shape, condition and guidance; new inputs and timestep at every
/// [`CapturedDenoiser::predict`].
#[derive(Debug)]
pub struct CapturedDenoiser {
    graph: DeviceGraph,
    /// The captured input (F32), overwritten before each replay.
    x: Tensor,
    /// The captured sinusoidal timestep features, likewise.
    emb: Tensor,
    /// The captured output (F32 noise prediction), rewritten by each replay.
    out: Tensor,
    /// The condition rows the graph reads.
    _cond: Option<Tensor>,
    dim: usize,
    device: Device,
    dtype: DType,
}

impl CapturedDenoiser {
    /// The predicted noise (F32, a fresh tensor on the model's device) of
    /// `x` (the captured shape, any device) at timestep `t` for every item.
    pub fn predict(&self, x: &Tensor, t: f32) -> Result<Tensor> {
        let b = self.x.dim(0)?;
        let emb = Tensor::sinusoidal_embedding_on(&vec![t; b], self.dim, &self.device, self.dtype)?;
        self.emb.overwrite_from(&emb)?;
        self.x
            .overwrite_from(&x.to_device(&self.device, DType::F32)?)?;
        self.graph.replay()?;
        // A copy, so the result outlives the next replay.
        self.out.affine(1.0, 0.0)
    }
}

/// T5 relative-position bucket of `rel = key − query` (spec:
/// RelativePositionBias): half the buckets per sign, exact below a quarter
/// of the buckets, logarithmic up to `max_distance`.
fn relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut n = -rel;
    let ret = if n < 0 { half } else { 0 };
    n = n.abs();
    let max_exact = half / 2;
    let bucket = if n < max_exact {
        n
    } else {
        // f32 as the reference computes it; truncation toward zero.
        let v = (n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        (max_exact + v as i64).min(half - 1)
    };
    (ret + bucket) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_t5() {
        // Key after the query (rel > 0) → n < 0 → upper half.
        assert_eq!(relative_bucket(0, 32, 32), 0);
        assert_eq!(relative_bucket(-3, 32, 32), 3);
        assert_eq!(relative_bucket(3, 32, 32), 19);
        assert_eq!(relative_bucket(-8, 32, 32), 8);
        assert_eq!(relative_bucket(-16, 32, 32), 12);
        assert_eq!(relative_bucket(-100, 32, 32), 15);
        assert_eq!(relative_bucket(100, 32, 32), 31);
    }
}

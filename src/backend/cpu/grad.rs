//! Backward kernels of the CPU engine: the vector–Jacobian products of the
//! ops whose gradient is not itself a composition of forward ops.
//!
//! Each function takes the forward operands (recomputing whatever the
//! forward pass did not keep: normalisation statistics, softmaxes) and the
//! gradient of the output, and returns the gradients of the operands.
//! Reductions accumulate in f64 so that gradient sums over large batches
//! and volumes keep f32 precision. The autograd (`nn::autograd`) checks
//! every one of them against central finite differences
//! (`nn::gradcheck`), and the whole networks against PyTorch
//! (`tests/engine/grad_parity.rs`).

use super::conv3d::{col2vol, conv3d, vol2col, Conv3dGeometry};
use super::elementwise::{erf, exp};
use super::gemm::{matmul, matmul_seq, view, view_mut};
use crate::backend::desc::{
    AttentionDesc, AxisDesc, ConvGeometry, LinearAttentionDesc, NormActivation, NormDesc, UnaryOp,
};
use crate::{Error, Result};
use rayon::prelude::*;

/// Largest vol2col buffer (16 MiB) built at once by the convolution
/// backward passes; larger outputs are processed in chunks of rows.
const MAX_COLS_FLOATS: usize = 1 << 22;

/// Gradients of a fused group normalisation ([`group_norm_backward`]);
/// `None` for operands the forward did not have.
#[derive(Debug)]
pub struct NormGrads {
    /// Of the input, its layout.
    pub x: Vec<f32>,
    /// Of the per-channel gain `[C]`.
    pub weight: Option<Vec<f32>>,
    /// Of the per-channel offset `[C]`.
    pub bias: Option<Vec<f32>>,
    /// Of the FiLM scale `[B·C]`.
    pub scale: Option<Vec<f32>>,
    /// Of the FiLM shift `[B·C]`.
    pub shift: Option<Vec<f32>>,
}

/// Derivative of the fused activation at its input `m`.
#[inline(always)]
fn activation_slope(act: NormActivation, m: f32) -> f32 {
    match act {
        NormActivation::Identity => 1.0,
        NormActivation::Silu => silu_slope(m),
        NormActivation::LeakyRelu(s) => {
            if m >= 0.0 {
                1.0
            } else {
                s
            }
        }
    }
}

/// `d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))`.
#[inline(always)]
fn silu_slope(x: f32) -> f32 {
    let sig = 1.0 / (1.0 + exp(-x));
    sig * (1.0 + x * (1.0 - sig))
}

/// Mean and `1/√(var + ε)` in f64 (population variance), as the forward.
fn moments_f64(v: &[f32], eps: f64) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
    let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Backward of the fused group normalisation
/// `act((x − μ)/σ·w + b)·(scale + 1) + shift (+ residual)` described by
/// `desc` (the residual's gradient is the output gradient itself, which the
/// caller passes on). All slices have the forward's lengths.
pub fn group_norm_backward(
    x: &[f32],
    desc: &NormDesc,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    scale_shift: Option<(&[f32], &[f32])>,
    grad_out: &[f32],
) -> Result<NormGrads> {
    let (batch, c, s, groups) = (desc.batch, desc.channels, desc.spatial, desc.groups);
    if groups == 0 || c % groups != 0 || x.len() != batch * c * s || grad_out.len() != x.len() {
        return Err(Error::invalid(format!(
            "group_norm backward: {} values and {} gradients for [{batch}, {c}, {s}] in {groups} groups",
            x.len(),
            grad_out.len()
        )));
    }
    let cg = c / groups;
    let mut dx = vec![0f32; x.len()];
    // Per (sample, channel): Σ gz·x̂ and Σ gz (for weight and bias), and
    // Σ gm·z and Σ gm (for scale and shift).
    let mut per_channel = vec![[0f64; 4]; batch * c];
    dx.par_chunks_mut((cg * s).max(1))
        .zip(x.par_chunks((cg * s).max(1)))
        .zip(grad_out.par_chunks((cg * s).max(1)))
        .zip(per_channel.par_chunks_mut(cg.max(1)))
        .enumerate()
        .for_each(|(bg, (((dst, src), gy), sums))| {
            let (sample, g) = (bg / groups, bg % groups);
            let (mean, rstd) = moments_f64(src, desc.eps);
            // gx̂ = gz·w, kept in `dst` until the group's sums are known.
            let (mut sum_gxhat, mut sum_gxhat_xhat) = (0f64, 0f64);
            for (j, ((drow, srow), grow)) in dst
                .chunks_mut(s)
                .zip(src.chunks(s))
                .zip(gy.chunks(s))
                .enumerate()
            {
                let ch = g * cg + j;
                let w = weight.map_or(1.0, |w| w[ch]);
                let b = bias.map_or(0.0, |b| b[ch]);
                let (k, shift) = scale_shift.map_or((1.0, 0.0), |(sc, sh)| {
                    (sc[sample * c + ch] + 1.0, sh[sample * c + ch])
                });
                let acc = &mut sums[j];
                for ((d, &v), &go) in drow.iter_mut().zip(srow).zip(grow) {
                    let xhat = ((v as f64 - mean) * rstd) as f32;
                    let z = xhat * w + b;
                    let m = z * k + shift;
                    let gm = go * activation_slope(desc.activation, m);
                    let gz = gm * k;
                    acc[0] += (gz * xhat) as f64;
                    acc[1] += gz as f64;
                    acc[2] += (gm * z) as f64;
                    acc[3] += gm as f64;
                    let gxhat = gz * w;
                    sum_gxhat += gxhat as f64;
                    sum_gxhat_xhat += (gxhat * xhat) as f64;
                    *d = gxhat;
                }
            }
            let n = (cg * s).max(1) as f64;
            let (mean_g, mean_gx) = (sum_gxhat / n, sum_gxhat_xhat / n);
            for (d, &v) in dst.iter_mut().zip(src) {
                let xhat = (v as f64 - mean) * rstd;
                *d = (rstd * (*d as f64 - mean_g - xhat * mean_gx)) as f32;
            }
        });
    let over_batch = |k: usize| -> Vec<f32> {
        (0..c)
            .map(|ch| (0..batch).map(|b| per_channel[b * c + ch][k]).sum::<f64>() as f32)
            .collect()
    };
    Ok(NormGrads {
        x: dx,
        weight: weight.map(|_| over_batch(0)),
        bias: bias.map(|_| over_batch(1)),
        scale: scale_shift.map(|_| per_channel.iter().map(|a| a[2] as f32).collect()),
        shift: scale_shift.map(|_| per_channel.iter().map(|a| a[3] as f32).collect()),
    })
}

/// Backward of the channel LayerNorm `y = (x − μ)/σ·γ` (statistics over the
/// C channels of each sample and position). Returns `(dx, dγ)`.
pub fn layer_norm_channels_backward(
    x: &[f32],
    gamma: &[f32],
    batch: usize,
    channels: usize,
    spatial: usize,
    eps: f64,
    grad_out: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (c, s) = (channels, spatial);
    if x.len() != batch * c * s || grad_out.len() != x.len() || gamma.len() != c {
        return Err(Error::invalid(format!(
            "layer_norm backward: {} values, {} gradients and {} gains for [{batch}, {c}, {s}]",
            x.len(),
            grad_out.len(),
            gamma.len()
        )));
    }
    let mut dx = vec![0f32; x.len()];
    let mut dgamma = vec![0f64; c];
    if s == 0 || c == 0 {
        return Ok((dx, vec![0.0; c]));
    }
    for b in 0..batch {
        let xb = &x[b * c * s..(b + 1) * c * s];
        let gb = &grad_out[b * c * s..(b + 1) * c * s];
        // Per position: mean, 1/σ, mean of gx̂ and mean of gx̂·x̂ over channels.
        let mut stats = vec![[0f64; 4]; s];
        const BLOCK: usize = 256;
        stats
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(blk, st)| {
                let lo = blk * BLOCK;
                let n = st.len();
                for ch in 0..c {
                    for (a, &v) in st.iter_mut().zip(&xb[ch * s + lo..ch * s + lo + n]) {
                        a[0] += v as f64;
                    }
                }
                for a in st.iter_mut() {
                    a[0] /= c as f64;
                }
                for ch in 0..c {
                    for (a, &v) in st.iter_mut().zip(&xb[ch * s + lo..ch * s + lo + n]) {
                        a[1] += (v as f64 - a[0]).powi(2);
                    }
                }
                for a in st.iter_mut() {
                    a[1] = 1.0 / (a[1] / c as f64 + eps).sqrt();
                }
                for (ch, &gm) in gamma.iter().enumerate() {
                    let rows = xb[ch * s + lo..ch * s + lo + n]
                        .iter()
                        .zip(&gb[ch * s + lo..ch * s + lo + n]);
                    for (a, (&v, &g)) in st.iter_mut().zip(rows) {
                        let xhat = (v as f64 - a[0]) * a[1];
                        let gxhat = g as f64 * gm as f64;
                        a[2] += gxhat;
                        a[3] += gxhat * xhat;
                    }
                }
                for a in st.iter_mut() {
                    a[2] /= c as f64;
                    a[3] /= c as f64;
                }
            });
        let partial: Vec<f64> = dx[b * c * s..(b + 1) * c * s]
            .par_chunks_mut(s)
            .zip(xb.par_chunks(s))
            .zip(gb.par_chunks(s))
            .zip(gamma.par_iter())
            .map(|(((drow, xrow), grow), &gm)| {
                let mut dg = 0f64;
                for (((d, &v), &g), a) in drow.iter_mut().zip(xrow).zip(grow).zip(&stats) {
                    let xhat = (v as f64 - a[0]) * a[1];
                    dg += g as f64 * xhat;
                    *d = (a[1] * (g as f64 * gm as f64 - a[2] - xhat * a[3])) as f32;
                }
                dg
            })
            .collect();
        for (acc, p) in dgamma.iter_mut().zip(partial) {
            *acc += p;
        }
    }
    Ok((dx, dgamma.into_iter().map(|v| v as f32).collect()))
}

/// Backward of the spatial linear attention
/// ([`super::attention::linear_attention`]): the gradient of the stacked
/// `[B, 3·heads·d, F, N]` q, k, v from that of the `[B, heads·d, F, N]`
/// output.
pub fn linear_attention_backward(
    qkv: &[f32],
    desc: &LinearAttentionDesc,
    grad_out: &[f32],
) -> Result<Vec<f32>> {
    let (batch, frames, n, heads, d) = (
        desc.batch,
        desc.frames,
        desc.positions,
        desc.heads,
        desc.head_dim,
    );
    let hid = heads * d;
    let row_stride = frames * n;
    if qkv.len() != batch * 3 * hid * row_stride || grad_out.len() != batch * hid * row_stride {
        return Err(Error::invalid(format!(
            "linear_attention backward: {} inputs and {} gradients for {desc:?}",
            qkv.len(),
            grad_out.len()
        )));
    }
    let scale = (d as f32).powf(-0.5);
    // One task per (sample, head) computes its [3, d, F·N] gradient block.
    let blocks: Vec<Vec<f32>> = (0..batch * heads)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / heads, bh % heads);
            let part = |p: usize| (b * 3 * hid + p * hid + h * d) * row_stride;
            let gout = (b * hid + h * d) * row_stride;
            let mut block = vec![0f32; 3 * d * row_stride];
            let (mut sq, mut sk) = (vec![0f32; d * n], vec![0f32; d * n]);
            let (mut context, mut dcontext) = (vec![0f32; d * d], vec![0f32; d * d]);
            let (mut dq, mut dk) = (vec![0f32; d * n], vec![0f32; d * n]);
            let mut dv = vec![0f32; d * n];
            let (mut colmax, mut colsum) = (vec![0f32; n], vec![0f32; n]);
            let mut coldot = vec![0f64; n];
            for f in 0..frames {
                let at = |p: usize, ch: usize| part(p) + ch * row_stride + f * n;
                // Softmax of k over positions, of q over features (times scale).
                for ch in 0..d {
                    let src = &qkv[at(1, ch)..at(1, ch) + n];
                    let m = src.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    let row = &mut sk[ch * n..(ch + 1) * n];
                    let mut sum = 0f32;
                    for (o, &v) in row.iter_mut().zip(src) {
                        *o = exp(v - m);
                        sum += *o;
                    }
                    row.iter_mut().for_each(|o| *o /= sum);
                }
                // Row by row (feature outer, position inner) so each pass
                // streams contiguous memory.
                colmax.iter_mut().for_each(|m| *m = f32::NEG_INFINITY);
                for ch in 0..d {
                    for (m, &v) in colmax.iter_mut().zip(&qkv[at(0, ch)..at(0, ch) + n]) {
                        *m = m.max(v);
                    }
                }
                colsum.iter_mut().for_each(|s| *s = 0.0);
                for ch in 0..d {
                    let src = &qkv[at(0, ch)..at(0, ch) + n];
                    let row = &mut sq[ch * n..(ch + 1) * n];
                    for (((o, &v), &m), s) in
                        row.iter_mut().zip(src).zip(&colmax).zip(colsum.iter_mut())
                    {
                        *o = exp(v - m);
                        *s += *o;
                    }
                }
                for ch in 0..d {
                    for (o, &s) in sq[ch * n..(ch + 1) * n].iter_mut().zip(&colsum) {
                        *o /= s;
                    }
                }
                let v = view(qkv, at(2, 0), d, n, row_stride);
                let g = view(grad_out, gout + f * n, d, n, row_stride);
                let q_scaled: Vec<f32> = sq.iter().map(|&v| v * scale).collect();
                // context = K·vᵀ; out = contextᵀ·Q.
                matmul_seq(
                    view_mut(&mut context, 0, d, d, d),
                    view(&sk, 0, d, n, n),
                    v.transpose(),
                    false,
                );
                // dQ = context·G; dcontext = Q·Gᵀ; dK = dcontext·v; dv = dcontextᵀ·K.
                matmul_seq(
                    view_mut(&mut dq, 0, d, n, n),
                    view(&context, 0, d, d, d),
                    g,
                    false,
                );
                matmul_seq(
                    view_mut(&mut dcontext, 0, d, d, d),
                    view(&q_scaled, 0, d, n, n),
                    g.transpose(),
                    false,
                );
                matmul_seq(
                    view_mut(&mut dk, 0, d, n, n),
                    view(&dcontext, 0, d, d, d),
                    v,
                    false,
                );
                matmul_seq(
                    view_mut(&mut dv, 0, d, n, n),
                    view(&dcontext, 0, d, d, d).transpose(),
                    view(&sk, 0, d, n, n),
                    false,
                );
                // Through the softmaxes.
                for ch in 0..d {
                    let (krow, gk) = (&sk[ch * n..(ch + 1) * n], &dk[ch * n..(ch + 1) * n]);
                    let dot: f64 = krow
                        .iter()
                        .zip(gk)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    let base = (d + ch) * row_stride + f * n;
                    for (p, (&kv, &gv)) in krow.iter().zip(gk).enumerate() {
                        block[base + p] = kv * (gv - dot as f32);
                    }
                    let base_v = (2 * d + ch) * row_stride + f * n;
                    block[base_v..base_v + n].copy_from_slice(&dv[ch * n..(ch + 1) * n]);
                }
                coldot.iter_mut().for_each(|v| *v = 0.0);
                for ch in 0..d {
                    let (qrow, grow) = (&sq[ch * n..(ch + 1) * n], &dq[ch * n..(ch + 1) * n]);
                    for ((acc, &a), &b) in coldot.iter_mut().zip(qrow).zip(grow) {
                        *acc += a as f64 * (b * scale) as f64;
                    }
                }
                for ch in 0..d {
                    let base = ch * row_stride + f * n;
                    let (qrow, grow) = (&sq[ch * n..(ch + 1) * n], &dq[ch * n..(ch + 1) * n]);
                    for (p, ((&sv, &gv), &dot)) in qrow.iter().zip(grow).zip(&coldot).enumerate() {
                        block[base + p] = sv * (gv * scale - dot as f32);
                    }
                }
            }
            block
        })
        .collect();
    let mut dqkv = vec![0f32; qkv.len()];
    for (bh, block) in blocks.iter().enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        for p in 0..3 {
            let dst = (b * 3 * hid + p * hid + h * d) * row_stride;
            dqkv[dst..dst + d * row_stride]
                .copy_from_slice(&block[p * d * row_stride..(p + 1) * d * row_stride]);
        }
    }
    Ok(dqkv)
}

/// Gradients of softmax attention ([`attention_backward`]).
#[derive(Debug)]
pub struct AttentionGrads {
    /// Of q `[G, T, d]`.
    pub q: Vec<f32>,
    /// Of k.
    pub k: Vec<f32>,
    /// Of v.
    pub v: Vec<f32>,
    /// Of the logit bias `[heads, T, T]` (summed over the groups sharing it).
    pub bias: Option<Vec<f32>>,
}

/// Backward of softmax attention `softmax(q·kᵀ + bias)·v`
/// ([`super::attention::attention`]).
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
    desc: &AttentionDesc,
    grad_out: &[f32],
) -> Result<AttentionGrads> {
    let (groups, t, d, heads) = (desc.groups, desc.tokens, desc.head_dim, desc.heads);
    let len = groups * t * d;
    if heads == 0
        || groups % heads != 0
        || [q.len(), k.len(), v.len(), grad_out.len()] != [len; 4]
        || bias.is_some_and(|b| b.len() != heads * t * t)
    {
        return Err(Error::invalid(format!(
            "attention backward: operand sizes do not match {desc:?}"
        )));
    }
    let (mut dq, mut dk, mut dv) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    let mut dlogits = vec![0f32; if bias.is_some() { groups * t * t } else { 0 }];
    let span = (t * d).max(1);
    dq.par_chunks_mut(span)
        .zip(dk.par_chunks_mut(span))
        .zip(dv.par_chunks_mut(span))
        .enumerate()
        .map(|(gi, ((dq, dk), dv))| {
            let at = gi * t * d;
            let (qv, kv, vv, gv) = (
                view(q, at, t, d, d),
                view(k, at, t, d, d),
                view(v, at, t, d, d),
                view(grad_out, at, t, d, d),
            );
            let mut p = vec![0f32; t * t];
            if let Some(bias) = bias {
                let h = gi % heads;
                p.copy_from_slice(&bias[h * t * t..(h + 1) * t * t]);
            }
            matmul_seq(
                view_mut(&mut p, 0, t, t, t),
                qv,
                kv.transpose(),
                bias.is_some(),
            );
            for row in p.chunks_mut(t.max(1)) {
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let mut sum = 0f32;
                for v in row.iter_mut() {
                    *v = exp(*v - m);
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
            // dP = G·vᵀ, dv = Pᵀ·G, dS = P ⊙ (dP − rowsum(dP ⊙ P)).
            let mut ds = vec![0f32; t * t];
            matmul_seq(view_mut(&mut ds, 0, t, t, t), gv, vv.transpose(), false);
            matmul_seq(
                view_mut(dv, 0, t, d, d),
                view(&p, 0, t, t, t).transpose(),
                gv,
                false,
            );
            for (drow, prow) in ds.chunks_mut(t.max(1)).zip(p.chunks(t.max(1))) {
                let dot: f64 = drow
                    .iter()
                    .zip(prow)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                for (dv, &pv) in drow.iter_mut().zip(prow) {
                    *dv = pv * (*dv - dot as f32);
                }
            }
            matmul_seq(view_mut(dq, 0, t, d, d), view(&ds, 0, t, t, t), kv, false);
            matmul_seq(
                view_mut(dk, 0, t, d, d),
                view(&ds, 0, t, t, t).transpose(),
                qv,
                false,
            );
            ds
        })
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
        .for_each(|(gi, ds)| {
            if !dlogits.is_empty() {
                dlogits[gi * t * t..(gi + 1) * t * t].copy_from_slice(&ds);
            }
        });
    let bias_grad = bias.map(|_| {
        let mut acc = vec![0f64; heads * t * t];
        for (gi, ds) in dlogits.chunks(t * t).enumerate() {
            let h = gi % heads;
            for (a, &v) in acc[h * t * t..(h + 1) * t * t].iter_mut().zip(ds) {
                *a += v as f64;
            }
        }
        acc.into_iter().map(|v| v as f32).collect()
    });
    Ok(AttentionGrads {
        q: dq,
        k: dk,
        v: dv,
        bias: bias_grad,
    })
}

/// Gradient of a per-frame 2-D convolution's input from its output's.
/// `weight`: `[C_out, C_in, kh, kw]`.
pub fn conv2d_backward_input(
    grad_out: &[f32],
    weight: &[f32],
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    conv3d_backward_input(grad_out, weight, &g.per_frame())
}

/// Gradient of a per-frame 2-D convolution's weight `[C_out, C_in, kh, kw]`.
pub fn conv2d_backward_weight(x: &[f32], grad_out: &[f32], g: &ConvGeometry) -> Result<Vec<f32>> {
    conv3d_backward_weight(x, grad_out, &g.per_frame())
}

/// Gradient of a per-frame transposed convolution's input. `weight`:
/// `[C_in, C_out, kh, kw]`; `g` describes the transposed convolution.
pub fn conv_transpose2d_backward_input(
    grad_out: &[f32],
    weight: &[f32],
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    conv_transpose3d_backward_input(grad_out, weight, &g.per_frame())
}

/// Gradient of a per-frame transposed convolution's weight `[C_in, C_out,
/// kh, kw]`.
pub fn conv_transpose2d_backward_weight(
    x: &[f32],
    grad_out: &[f32],
    g: &ConvGeometry,
) -> Result<Vec<f32>> {
    conv_transpose3d_backward_weight(x, grad_out, &g.per_frame())
}

/// Output size of the forward convolution `g`, or a clear error.
fn conv_out(g: &Conv3dGeometry, op: &str) -> Result<[usize; 3]> {
    g.conv_out()
        .ok_or_else(|| Error::invalid(format!("{op}: the kernel does not fit {g:?}")))
}

/// Output rows (`(z, y)` lines of `Wo` voxels) per vol2col chunk.
fn chunk_rows(g: &Conv3dGeometry, out: [usize; 3]) -> usize {
    (MAX_COLS_FLOATS / (g.col_rows() * out[2]).max(1)).clamp(1, (out[0] * out[1]).max(1))
}

/// Gradient of a 3-D convolution's input: `Wᵀ·gy` as vol2col columns,
/// scattered back by [`col2vol`]. `weight`: `[C_out, C_in, kd, kh, kw]`.
pub fn conv3d_backward_input(
    grad_out: &[f32],
    weight: &[f32],
    g: &Conv3dGeometry,
) -> Result<Vec<f32>> {
    let out = conv_out(g, "conv backward")?;
    let (vin, vout) = (
        g.input.iter().product::<usize>(),
        out.iter().product::<usize>(),
    );
    let kk = g.col_rows();
    if grad_out.len() != g.batch * g.c_out * vout || weight.len() != g.c_out * kk {
        return Err(Error::invalid(format!(
            "conv backward: {} gradients and {} weights for {g:?}",
            grad_out.len(),
            weight.len()
        )));
    }
    let mut dx = vec![0f32; g.batch * g.c_in * vin];
    if vout == 0 || kk == 0 {
        return Ok(dx);
    }
    let rows_total = out[0] * out[1];
    let step = chunk_rows(g, out);
    let wt = view(weight, 0, g.c_out, kk, kk).transpose();
    let mut cols = vec![0f32; kk * step * out[2]];
    for b in 0..g.batch {
        let vol = &mut dx[b * g.c_in * vin..(b + 1) * g.c_in * vin];
        let mut r0 = 0;
        while r0 < rows_total {
            let r1 = (r0 + step).min(rows_total);
            let ncols = (r1 - r0) * out[2];
            let rhs = view(
                grad_out,
                b * g.c_out * vout + r0 * out[2],
                g.c_out,
                ncols,
                vout,
            );
            matmul(view_mut(&mut cols, 0, kk, ncols, ncols), wt, rhs, false);
            col2vol(&cols[..kk * ncols], g, out, r0..r1, vol);
            r0 = r1;
        }
    }
    Ok(dx)
}

/// Gradient of a 3-D convolution's weight `[C_out, C_in, kd, kh, kw]`:
/// `Σ_b gy_b·cols(x_b)ᵀ`.
pub fn conv3d_backward_weight(x: &[f32], grad_out: &[f32], g: &Conv3dGeometry) -> Result<Vec<f32>> {
    let out = conv_out(g, "conv weight backward")?;
    let (vin, vout) = (
        g.input.iter().product::<usize>(),
        out.iter().product::<usize>(),
    );
    let kk = g.col_rows();
    if grad_out.len() != g.batch * g.c_out * vout || x.len() != g.batch * g.c_in * vin {
        return Err(Error::invalid(format!(
            "conv weight backward: {} inputs and {} gradients for {g:?}",
            x.len(),
            grad_out.len()
        )));
    }
    let mut dw = vec![0f32; g.c_out * kk];
    if vout == 0 || kk == 0 {
        return Ok(dw);
    }
    let rows_total = out[0] * out[1];
    // Split the columns into about 4 tasks per thread (a small dW with a
    // long inner dimension gives a parallel GEMM little to split), each
    // accumulating its own dW; the partial sums are added at the end.
    let tasks_wanted = 4 * rayon::current_num_threads().max(1);
    let per_sample = (tasks_wanted / g.batch.max(1)).max(1);
    let step = chunk_rows(g, out).min(rows_total.div_ceil(per_sample).max(1));
    let tasks: Vec<(usize, usize, usize)> = (0..g.batch)
        .flat_map(|b| {
            (0..rows_total)
                .step_by(step)
                .map(move |r0| (b, r0, (r0 + step).min(rows_total)))
        })
        .collect();
    let partial = tasks
        .par_iter()
        .fold(
            || (vec![0f32; g.c_out * kk], Vec::new()),
            |(mut acc, mut cols): (Vec<f32>, Vec<f32>), &(b, r0, r1)| {
                let ncols = (r1 - r0) * out[2];
                cols.resize(kk * ncols, 0.0);
                let xb = &x[b * g.c_in * vin..(b + 1) * g.c_in * vin];
                vol2col(xb, g, out, r0..r1, &mut cols[..kk * ncols]);
                let lhs = view(
                    grad_out,
                    b * g.c_out * vout + r0 * out[2],
                    g.c_out,
                    ncols,
                    vout,
                );
                matmul_seq(
                    view_mut(&mut acc, 0, g.c_out, kk, kk),
                    lhs,
                    view(&cols, 0, kk, ncols, ncols).transpose(),
                    true,
                );
                (acc, cols)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(
            || vec![0f32; g.c_out * kk],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    dw.copy_from_slice(&partial);
    Ok(dw)
}

/// Gradient of a 3-D transposed convolution's input: the forward
/// convolution of the output gradient with the same weight.
pub fn conv_transpose3d_backward_input(
    grad_out: &[f32],
    weight: &[f32],
    g: &Conv3dGeometry,
) -> Result<Vec<f32>> {
    let a = g.transposed_adjoint()?;
    let n_in: usize = a.input.iter().product();
    if grad_out.len() != a.batch * a.c_in * n_in || weight.len() != a.c_out * a.col_rows() {
        return Err(Error::invalid(format!(
            "transposed conv backward: {} gradients and {} weights for {g:?}",
            grad_out.len(),
            weight.len()
        )));
    }
    Ok(conv3d(grad_out, weight, None, &a))
}

/// Gradient of a 3-D transposed convolution's weight `[C_in, C_out, kd, kh,
/// kw]`: the forward convolution's weight gradient with the roles of input
/// and output exchanged.
pub fn conv_transpose3d_backward_weight(
    x: &[f32],
    grad_out: &[f32],
    g: &Conv3dGeometry,
) -> Result<Vec<f32>> {
    conv3d_backward_weight(grad_out, x, &g.transposed_adjoint()?)
}

/// `gy·f′(x)` for an element-wise function.
pub fn unary_backward(x: &[f32], grad_out: &[f32], op: UnaryOp) -> Vec<f32> {
    let slope = |v: f32| -> f32 {
        match op {
            UnaryOp::Silu => silu_slope(v),
            UnaryOp::Gelu => {
                let x = v as f64;
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (cdf + x * pdf) as f32
            }
            UnaryOp::LeakyRelu(s) => {
                if v >= 0.0 {
                    1.0
                } else {
                    s
                }
            }
            UnaryOp::Affine(a, _) => a,
            UnaryOp::Exp => exp(v),
            UnaryOp::Neg => -1.0,
            UnaryOp::Square => 2.0 * v,
            UnaryOp::Sqrt => 0.5 / v.sqrt(),
            UnaryOp::Recip => -1.0 / (v * v),
            UnaryOp::RoundHalf => 1.0,
            UnaryOp::Abs => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            UnaryOp::Ln => 1.0 / v,
            UnaryOp::IsZero => 0.0,
        }
    };
    x.par_iter()
        .zip(grad_out)
        .map(|(&v, &g)| g * slope(v))
        .collect()
}

/// Backward of a softmax along `axis`, from its output `y`:
/// `dx = y ⊙ (gy − Σ_axis gy ⊙ y)`.
pub fn softmax_backward(y: &[f32], grad_out: &[f32], axis: AxisDesc) -> Vec<f32> {
    let AxisDesc { size, inner, .. } = axis;
    let mut dx = vec![0f32; y.len()];
    let block = (size * inner).max(1);
    dx.par_chunks_mut(block)
        .zip(y.par_chunks(block))
        .zip(grad_out.par_chunks(block))
        .for_each(|((d, y), g)| {
            for i in 0..inner {
                let dot: f64 = (0..size)
                    .map(|j| y[j * inner + i] as f64 * g[j * inner + i] as f64)
                    .sum();
                for j in 0..size {
                    let at = j * inner + i;
                    d[at] = y[at] * (g[at] - dot as f32);
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::conv::conv_transpose2d_frames;
    use crate::backend::cpu::conv3d::conv_transpose3d;
    use crate::backend::cpu::random_normal;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    /// ⟨conv(x), gy⟩ = ⟨x, dx⟩ and = ⟨w, dw⟩ (the convolution is bilinear).
    #[test]
    fn conv3d_backward_is_the_adjoint() {
        for (kernel, stride, pad, input) in [
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], [4, 5, 6]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [3, 7, 6]),
            ([2, 2, 2], [2, 2, 2], [0, 0, 0], [4, 4, 5]),
            ([3, 1, 3], [2, 1, 3], [1, 0, 2], [5, 3, 8]),
        ] {
            let g = Conv3dGeometry {
                batch: 2,
                c_in: 3,
                c_out: 4,
                input,
                kernel,
                stride,
                pad,
            };
            let out = g.conv_out().unwrap_or([0; 3]);
            let vin: usize = input.iter().product();
            let vout: usize = out.iter().product();
            let x = random_normal(2 * 3 * vin, 1);
            let w = random_normal(4 * g.col_rows(), 2);
            let gy = random_normal(2 * 4 * vout, 3);
            let y = conv3d(&x, &w, None, &g);
            let lhs = dot(&y, &gy);
            let dx = conv3d_backward_input(&gy, &w, &g).unwrap_or_default();
            let dw = conv3d_backward_weight(&x, &gy, &g).unwrap_or_default();
            assert!(
                (dot(&x, &dx) - lhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{g:?}"
            );
            assert!(
                (dot(&w, &dw) - lhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{g:?}"
            );
        }
    }

    #[test]
    fn transposed_conv_backward_is_the_adjoint() {
        let g = ConvGeometry {
            batch: 2,
            c_in: 3,
            c_out: 2,
            frames: 2,
            h: 4,
            w: 5,
            kh: 4,
            kw: 4,
            stride: (2, 2),
            pad: (1, 1),
        };
        let (ho, wo) = g.transposed_out().unwrap_or((0, 0));
        let x = random_normal(2 * 3 * 2 * 20, 4);
        let w = random_normal(3 * 2 * 16, 5);
        let gy = random_normal(2 * 2 * 2 * ho * wo, 6);
        let y = conv_transpose2d_frames(&x, &w, None, &g);
        let lhs = dot(&y, &gy);
        let dx = conv_transpose2d_backward_input(&gy, &w, &g).unwrap_or_default();
        let dw = conv_transpose2d_backward_weight(&x, &gy, &g).unwrap_or_default();
        assert!((dot(&x, &dx) - lhs).abs() < 1e-3 * lhs.abs().max(1.0));
        assert!((dot(&w, &dw) - lhs).abs() < 1e-3 * lhs.abs().max(1.0));
        let g3 = g.per_frame();
        let y3 = conv_transpose3d(&x, &w, None, &g3);
        assert!((dot(&y3, &gy) - lhs).abs() < 1e-3 * lhs.abs().max(1.0));
    }

    #[test]
    fn softmax_backward_sums_to_zero_along_the_axis() {
        let y = crate::backend::cpu::elementwise::softmax_axis(&random_normal(24, 7), 4, 3);
        let g = random_normal(24, 8);
        let dx = softmax_backward(
            &y,
            &g,
            AxisDesc {
                outer: 2,
                size: 4,
                inner: 3,
            },
        );
        for o in 0..2 {
            for i in 0..3 {
                let s: f32 = (0..4).map(|j| dx[o * 12 + j * 3 + i]).sum();
                assert!(s.abs() < 1e-6);
            }
        }
    }
}

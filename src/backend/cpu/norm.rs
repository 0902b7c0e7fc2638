//! Normalisations over `[B, C, S]` buffers (S = all positions, F·H·W).
//!
//! Statistics are accumulated in f64 (two passes) and use the population
//! variance, as PyTorch's GroupNorm, InstanceNorm and the denoiser's channel
//! LayerNorm do.

use super::elementwise::silu;
use super::{output_buffer, simd};
use crate::backend::desc::{NormActivation, NormDesc};
use rayon::prelude::*;

/// Sum of `v` in f64, in eight interleaved lanes so that the loop
/// vectorises (a single running sum is one long dependency chain). The
/// order is fixed, so the result does not depend on the thread count.
#[inline(always)]
fn sum_f64(v: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &a) in lanes.iter_mut().zip(c) {
            *l += f(a as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail.iter().map(|&a| f(a as f64)).sum::<f64>()
}

/// Mean and 1/sqrt(var + eps) of a slice (population variance, two passes).
fn moments(v: &[f32], eps: f64) -> (f32, f32) {
    simd(
        #[inline(always)]
        || {
            let n = v.len().max(1) as f64;
            let mean = sum_f64(v, |a| a) / n;
            let var = sum_f64(v, |a| (a - mean) * (a - mean)) / n;
            (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
        },
    )
}

/// GroupNorm: per sample and group of `C/groups` consecutive channels,
/// normalise over (channels in group × S), then `·weight[c] + bias[c]`.
/// InstanceNorm is the case `groups == C`. The caller checked that `groups`
/// divides `c` and the affine lengths.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    batch: usize,
    c: usize,
    s: usize,
    groups: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
) -> Vec<f32> {
    normalise_groups(x, batch, c, s, groups, weight, bias, eps, None, None, false)
}

/// The denoiser's `Block` tail in one pass: GroupNorm as [`group_norm`],
/// then `·(scale[b, c] + 1) + shift[b, c]` when `scale_shift` is given
/// (each `batch·c` values), then SiLU, then `+ residual` (same layout as
/// `x`) when given. The caller checked all lengths.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_silu(
    x: &[f32],
    batch: usize,
    c: usize,
    s: usize,
    groups: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
    scale_shift: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    normalise_groups(
        x,
        batch,
        c,
        s,
        groups,
        weight,
        bias,
        eps,
        scale_shift,
        residual,
        true,
    )
}

/// Shared body of [`group_norm`] and [`group_norm_silu`]: statistics per
/// (sample, group), then one pass per channel computing
/// `act(x·a + b) (+ residual)`, with the normalisation, affine and
/// modulation folded into the per-channel `a` and `b`.
#[allow(clippy::too_many_arguments)]
fn normalise_groups(
    x: &[f32],
    batch: usize,
    c: usize,
    s: usize,
    groups: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
    scale_shift: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
    with_silu: bool,
) -> Vec<f32> {
    let cg = c / groups;
    let mut out = output_buffer(batch * c * s);
    out.par_chunks_mut(cg * s)
        .zip(x.par_chunks(cg * s))
        .enumerate()
        .for_each(|(bg, (dst, src))| {
            let (sample, g) = (bg / groups, bg % groups);
            let (mean, rstd) = moments(src, eps);
            for (j, (drow, srow)) in dst.chunks_mut(s).zip(src.chunks(s)).enumerate() {
                let ch = g * cg + j;
                let mut a = rstd * weight.map_or(1.0, |w| w[ch]);
                let mut b = bias.map_or(0.0, |b| b[ch]) - mean * a;
                if let Some((scale, shift)) = scale_shift {
                    let k = scale[sample * c + ch] + 1.0;
                    a *= k;
                    b = b * k + shift[sample * c + ch];
                }
                let start = (bg * cg + j) * s;
                let res = residual.map(|r| &r[start..start + s]);
                simd(
                    #[inline(always)]
                    || match (with_silu, res) {
                        (true, Some(r)) => {
                            for ((d, &v), &r) in drow.iter_mut().zip(srow).zip(r) {
                                *d = silu(v * a + b) + r;
                            }
                        }
                        (true, None) => {
                            for (d, &v) in drow.iter_mut().zip(srow) {
                                *d = silu(v * a + b);
                            }
                        }
                        (false, Some(r)) => {
                            for ((d, &v), &r) in drow.iter_mut().zip(srow).zip(r) {
                                *d = v * a + b + r;
                            }
                        }
                        (false, None) => {
                            for (d, &v) in drow.iter_mut().zip(srow) {
                                *d = v * a + b;
                            }
                        }
                    },
                );
            }
        });
    out
}

/// LayerNorm across channels: for every sample and position, normalise the
/// C values (population variance), multiply by `gamma[c]`; no bias.
pub fn layer_norm_channels(
    x: &[f32],
    batch: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    eps: f64,
) -> Vec<f32> {
    let mut out = output_buffer(batch * c * s);
    // Positions are split into blocks; each block's statistics are gathered
    // channel by channel so the inner loops run over contiguous memory.
    const BLOCK: usize = 256;
    for b in 0..batch {
        let src = &x[b * c * s..(b + 1) * c * s];
        let stats: Vec<(Vec<f32>, Vec<f32>)> = (0..s.div_ceil(BLOCK))
            .into_par_iter()
            .map(|blk| {
                simd(
                    #[inline(always)]
                    || {
                        let lo = blk * BLOCK;
                        let n = BLOCK.min(s - lo);
                        let mut sum = vec![0f64; n];
                        for ch in 0..c {
                            for (acc, &v) in sum.iter_mut().zip(&src[ch * s + lo..ch * s + lo + n])
                            {
                                *acc += v as f64;
                            }
                        }
                        let mean: Vec<f64> = sum.iter().map(|v| v / c as f64).collect();
                        let mut var = vec![0f64; n];
                        for ch in 0..c {
                            for ((acc, &v), m) in var
                                .iter_mut()
                                .zip(&src[ch * s + lo..ch * s + lo + n])
                                .zip(&mean)
                            {
                                *acc += (v as f64 - m).powi(2);
                            }
                        }
                        let rstd = var
                            .iter()
                            .map(|v| (1.0 / (v / c as f64 + eps).sqrt()) as f32)
                            .collect();
                        (mean.iter().map(|&m| m as f32).collect(), rstd)
                    },
                )
            })
            .collect();
        out[b * c * s..(b + 1) * c * s]
            .par_chunks_mut(s)
            .enumerate()
            .for_each(|(ch, dst)| {
                let srow = &src[ch * s..(ch + 1) * s];
                let g = gamma[ch];
                simd(
                    #[inline(always)]
                    || {
                        for (blk, (mean, rstd)) in stats.iter().enumerate() {
                            let lo = blk * BLOCK;
                            let n = mean.len();
                            for (((d, &v), &m), &r) in dst[lo..lo + n]
                                .iter_mut()
                                .zip(&srow[lo..lo + n])
                                .zip(mean)
                                .zip(rstd)
                            {
                                *d = (v - m) * r * g;
                            }
                        }
                    },
                )
            });
    }
    out
}

/// InstanceNorm (population variance, optional affine) followed by a
/// LeakyReLU, in one pass over the output: the two ops that follow every
/// convolution of nnU-Net's PlainConvUNet, fused so the activation is
/// written once. `x` is `[B, C, S]`.
#[allow(clippy::too_many_arguments)]
pub fn instance_norm_leaky_relu(
    x: &[f32],
    batch: usize,
    c: usize,
    s: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
    slope: f32,
) -> Vec<f32> {
    debug_assert_eq!(x.len(), batch * c * s);
    let (w, b, src) = (weight, bias, x);
    let mut out = output_buffer(src.len());
    if s > 0 {
        out.par_chunks_mut(s)
            .zip(src.par_chunks(s))
            .enumerate()
            .for_each(|(bc, (dst, plane))| {
                let ch = bc % c;
                let (mean, rstd) = plane_moments(plane, eps);
                let a = rstd * w.map_or(1.0, |w| w[ch]);
                let shift = b.map_or(0.0, |b| b[ch]) - mean * a;
                scale_shift_leaky(dst, plane, a, shift, slope);
            });
    }
    out
}

/// `dst = leaky_relu(src·a + shift)`. For slopes in [0, 1] the activation
/// is `max(y, slope·y)`, which is branch-free and vectorises; taking the
/// scalars by value keeps them in registers.
#[inline]
fn scale_shift_leaky(dst: &mut [f32], src: &[f32], a: f32, shift: f32, slope: f32) {
    if (0.0..=1.0).contains(&slope) {
        for (d, &v) in dst.iter_mut().zip(src) {
            let y = v * a + shift;
            *d = y.max(y * slope);
        }
    } else {
        for (d, &v) in dst.iter_mut().zip(src) {
            let y = v * a + shift;
            *d = if y >= 0.0 { y } else { y * slope };
        }
    }
}

/// Mean and `1/sqrt(var + eps)` of one channel plane. Sums run in f32 over
/// short blocks (vectorisable) and are gathered in f64, so a plane of 10⁶
/// values keeps ~1e-7 relative accuracy.
fn plane_moments(v: &[f32], eps: f64) -> (f32, f32) {
    const BLOCK: usize = 256;
    let n = v.len().max(1) as f64;
    let sum: f64 = v.chunks(BLOCK).map(|c| f64::from(lane_sum(c, |x| x))).sum();
    let mean = sum / n;
    let m32 = mean as f32;
    // Deviations from the f32 mean, corrected for its rounding (the
    // residual term), keep the two-pass variance exact to f64 level.
    let (sq, lin) = v.chunks(BLOCK).fold((0f64, 0f64), |(sq, lin), c| {
        let s2 = lane_sum(c, |x| (x - m32) * (x - m32));
        let s1 = lane_sum(c, |x| x - m32);
        (sq + f64::from(s2), lin + f64::from(s1))
    });
    let var = ((sq - lin * lin / n) / n).max(0.0);
    (m32, (1.0 / (var + eps).sqrt()) as f32)
}

/// `Σ f(x)` over a short slice in eight independent f32 lanes, which the
/// compiler turns into SIMD adds (a single running sum cannot be
/// vectorised without reordering).
#[inline]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Group normalisation with any fused activation, modulation and residual
/// ([`NormDesc`]): the plain composition of [`group_norm`] and per-element
/// passes, for combinations no model uses on a hot path.
pub fn group_norm_general(
    x: &[f32],
    d: &NormDesc,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    scale_shift: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
    act: NormActivation,
) -> Vec<f32> {
    let (c, s) = (d.channels, d.spatial);
    let mut out = group_norm(x, d.batch, c, s, d.groups, weight, bias, d.eps);
    out.par_chunks_mut(s.max(1))
        .enumerate()
        .for_each(|(bc, row)| {
            let k = scale_shift.map(|(sc, sh)| (sc[bc] + 1.0, sh[bc]));
            for (i, v) in row.iter_mut().enumerate() {
                let mut y = *v;
                if let Some((k, sh)) = k {
                    y = y * k + sh;
                }
                y = match act {
                    NormActivation::Identity => y,
                    NormActivation::Silu => silu(y),
                    NormActivation::LeakyRelu(slope) => {
                        if y >= 0.0 {
                            y
                        } else {
                            y * slope
                        }
                    }
                };
                if let Some(r) = residual {
                    y += r[bc * s + i];
                }
                *v = y;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_norm_normalises_each_group() {
        let mut rng = crate::rng::Rng::new(9);
        let (b, c, s, g) = (2, 6, 10, 3);
        let x: Vec<f32> = (0..b * c * s)
            .map(|_| 3.0 + 2.0 * rng.normal() as f32)
            .collect();
        let y = group_norm(&x, b, c, s, g, None, None, 1e-5);
        for grp in y.chunks(2 * s) {
            let (m, r) = moments(grp, 0.0);
            assert!(m.abs() < 1e-5 && (r - 1.0).abs() < 1e-3, "{m} {r}");
        }
    }

    #[test]
    fn layer_norm_normalises_each_position_across_channels() {
        let mut rng = crate::rng::Rng::new(10);
        let (b, c, s) = (2, 5, 300);
        let x: Vec<f32> = (0..b * c * s).map(|_| 1.0 + rng.normal() as f32).collect();
        let gamma = vec![2.0; c];
        let y = layer_norm_channels(&x, b, c, s, &gamma, 1e-5);
        for bi in 0..b {
            for p in [0, 17, 299] {
                let col: Vec<f32> = (0..c).map(|ch| y[(bi * c + ch) * s + p] / 2.0).collect();
                let (m, r) = moments(&col, 0.0);
                assert!(m.abs() < 1e-5 && (r - 1.0).abs() < 1e-3, "{m} {r}");
            }
        }
    }
}

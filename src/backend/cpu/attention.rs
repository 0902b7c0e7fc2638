//! Attention kernels: the spatial linear attention and softmax attention of
//! the LeFusion denoiser (`shared/reference/denoiser.md`, building blocks).

use super::elementwise::{exp, softmax_in_place, softmax_into};
use super::gemm::{matmul, matmul_seq, view, view_mut};
use super::{output_buffer, simd, with_scratch};
use rayon::prelude::*;

/// Linear attention per frame. `qkv`: `[B, 3·heads·d, F, N]` (q, k, v stacked
/// on channels, head-major within each), returns `[B, heads·d, F, N]`.
///
/// Per (b, f, head): q is softmaxed over its d features and scaled by
/// d^-½, k is softmaxed over the N positions, `context = k·vᵀ` (`[d, d]`),
/// `out = contextᵀ·q`. The softmaxes are written to scratch buffers, v is
/// read in place, and each head's result goes straight to the output.
pub fn linear_attention(
    qkv: &[f32],
    batch: usize,
    frames: usize,
    n: usize,
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let hid = heads * d;
    let scale = (d as f32).powf(-0.5);
    let row_stride = frames * n;
    let mut out = output_buffer(batch * hid * frames * n);
    // One task per (sample, head): its d output channels over all frames
    // are one contiguous chunk.
    out.par_chunks_mut((d * row_stride).max(1))
        .enumerate()
        .for_each(|(bh, chunk)| {
            let (b, h) = (bh / heads, bh % heads);
            // Offset of channel 0 of this head in part (q 0, k 1, v 2).
            let part = |p: usize| (b * 3 * hid + p * hid + h * d) * row_stride;
            with_scratch(2 * d * n + d * d + 2 * n, |buf| {
                let (q, rest) = buf.split_at_mut(d * n);
                let (k, rest) = rest.split_at_mut(d * n);
                let (context, rest) = rest.split_at_mut(d * d);
                let (max, sum) = rest.split_at_mut(n);
                for f in 0..frames {
                    let src = |p: usize, c: usize| {
                        let off = part(p) + c * row_stride + f * n;
                        &qkv[off..off + n]
                    };
                    simd(
                        #[inline(always)]
                        || {
                            for (c, kr) in k.chunks_mut(n).enumerate() {
                                softmax_into(src(1, c), kr);
                            }
                            // Softmax of q over the feature axis, all positions at
                            // once so the loops run along contiguous rows.
                            max.copy_from_slice(src(0, 0));
                            for c in 1..d {
                                for (m, &v) in max.iter_mut().zip(src(0, c)) {
                                    *m = m.max(v);
                                }
                            }
                            sum.fill(0.0);
                            for (c, qr) in q.chunks_mut(n).enumerate() {
                                for (((o, &v), &m), s) in
                                    qr.iter_mut().zip(src(0, c)).zip(&*max).zip(sum.iter_mut())
                                {
                                    *o = exp(v - m);
                                    *s += *o;
                                }
                            }
                            for s in sum.iter_mut() {
                                *s = scale / *s;
                            }
                            for qr in q.chunks_mut(n) {
                                for (o, &i) in qr.iter_mut().zip(&*sum) {
                                    *o *= i;
                                }
                            }
                        },
                    );
                    let v = view(qkv, part(2) + f * n, d, n, row_stride);
                    matmul_seq(
                        view_mut(context, 0, d, d, d),
                        view(k, 0, d, n, n),
                        v.transpose(),
                        false,
                    );
                    matmul_seq(
                        view_mut(chunk, f * n, d, n, row_stride),
                        view(context, 0, d, d, d).transpose(),
                        view(q, 0, d, n, n),
                        false,
                    );
                }
            });
        });
    out
}

/// Softmax attention. `q`, `k`, `v`: `[G, T, d]` with G = groups·heads
/// (head fastest); q already scaled. `bias`: optional `[heads, T, T]` added to
/// the logits of every group. Returns `[G, T, d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: usize,
    t: usize,
    d: usize,
    heads: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = output_buffer(g * t * d);
    out.par_chunks_mut(t * d).enumerate().for_each(|(gi, dst)| {
        let span = gi * t * d..(gi + 1) * t * d;
        let (qv, kv, vv) = (
            view(&q[span.clone()], 0, t, d, d),
            view(&k[span.clone()], 0, t, d, d),
            view(&v[span], 0, t, d, d),
        );
        let mut sim = vec![0f32; t * t];
        if let Some(bias) = bias {
            let h = gi % heads;
            sim.copy_from_slice(&bias[h * t * t..(h + 1) * t * t]);
        }
        matmul(
            view_mut(&mut sim, 0, t, t, t),
            qv,
            kv.transpose(),
            bias.is_some(),
        );
        simd(
            #[inline(always)]
            || {
                for row in sim.chunks_mut(t) {
                    softmax_in_place(row);
                }
            },
        );
        matmul(view_mut(dst, 0, t, d, d), view(&sim, 0, t, t, t), vv, false);
    });
    out
}

/// Rotary position embedding with interleaved pairs. `x`: `[G, T, d]`,
/// `freqs`: `[d/2]`; token p's pair j is rotated by the angle `p·freqs[j]`:
/// `(u₂ⱼ, u₂ⱼ₊₁) → (u₂ⱼ cos θ − u₂ⱼ₊₁ sin θ, u₂ⱼ₊₁ cos θ + u₂ⱼ sin θ)`.
pub fn rotary_interleaved(x: &[f32], t: usize, d: usize, freqs: &[f32]) -> Vec<f32> {
    // Angles are formed in f32 exactly as the reference does (p·freq). A
    // plain loop rather than a flat_map collect: memcheck cannot follow the
    // optimised flat_map's partly-set Option tags (tests/valgrind.supp).
    let mut table: Vec<(f32, f32)> = Vec::with_capacity(t * freqs.len());
    for p in 0..t {
        for &fr in freqs {
            table.push(((p as f32) * fr).sin_cos());
        }
    }
    let mut out = output_buffer(x.len());
    out.par_chunks_mut(t * d)
        .zip(x.par_chunks(t * d))
        .for_each(|(dst, src)| {
            for p in 0..t {
                for j in 0..d / 2 {
                    let (s, c) = table[p * (d / 2) + j];
                    let (a, b) = (src[p * d + 2 * j], src[p * d + 2 * j + 1]);
                    dst[p * d + 2 * j] = a * c - b * s;
                    dst[p * d + 2 * j + 1] = b * c + a * s;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear attention against its definition computed head by head with
    /// plain loops, for two samples and three frames.
    #[test]
    fn linear_attention_matches_its_definition() {
        let (batch, frames, n, heads, d) = (2, 3, 37, 2, 4);
        let hid = heads * d;
        let qkv = crate::backend::cpu::random_normal(batch * 3 * hid * frames * n, 7);
        let got = linear_attention(&qkv, batch, frames, n, heads, d);
        let at = |b: usize, ch: usize, f: usize, i: usize| {
            qkv[((b * 3 * hid + ch) * frames + f) * n + i] as f64
        };
        for b in 0..batch {
            for f in 0..frames {
                for h in 0..heads {
                    // k softmaxed over positions, q over features (·d^-½).
                    let k: Vec<Vec<f64>> = (0..d)
                        .map(|c| {
                            let row: Vec<f64> =
                                (0..n).map(|i| at(b, hid + h * d + c, f, i)).collect();
                            let m = row.iter().cloned().fold(f64::MIN, f64::max);
                            let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
                            let s: f64 = e.iter().sum();
                            e.iter().map(|v| v / s).collect()
                        })
                        .collect();
                    let q: Vec<Vec<f64>> = (0..n)
                        .map(|i| {
                            let col: Vec<f64> = (0..d).map(|c| at(b, h * d + c, f, i)).collect();
                            let m = col.iter().cloned().fold(f64::MIN, f64::max);
                            let e: Vec<f64> = col.iter().map(|v| (v - m).exp()).collect();
                            let s: f64 = e.iter().sum();
                            e.iter().map(|v| v / s / (d as f64).sqrt()).collect()
                        })
                        .collect();
                    for e in 0..d {
                        for i in 0..n {
                            // out[e, i] = Σ_c context[c, e] q[c, i], context = k·vᵀ.
                            let want: f64 = (0..d)
                                .map(|c| {
                                    let ctx: f64 = (0..n)
                                        .map(|j| k[c][j] * at(b, 2 * hid + h * d + e, f, j))
                                        .sum();
                                    ctx * q[i][c]
                                })
                                .sum();
                            let o = got[((b * hid + h * d + e) * frames + f) * n + i] as f64;
                            assert!(
                                (o - want).abs() < 1e-5,
                                "b{b} f{f} h{h} e{e} i{i}: {o} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn attention_with_one_key_returns_the_value() {
        let q = vec![0.3, -1.0, 2.0, 0.5];
        let k = vec![1.0, 2.0, -0.5, 0.1];
        let v = vec![4.0, 5.0, 6.0, 7.0];
        let out = attention(&q, &k, &v, 2, 1, 2, 2, Some(&[0.7, -0.2]));
        assert_eq!(out, v);
    }

    #[test]
    fn rotary_keeps_position_zero_and_norms() {
        let x: Vec<f32> = (0..12).map(|v| v as f32 - 5.0).collect(); // [1, 3, 4]
        let y = rotary_interleaved(&x, 3, 4, &[1.0, 0.01]);
        assert_eq!(&y[..4], &x[..4]);
        for p in 0..3 {
            let n = |v: &[f32]| v[p * 4..p * 4 + 4].iter().map(|a| a * a).sum::<f32>();
            assert!((n(&x) - n(&y)).abs() < 1e-4);
        }
    }
}

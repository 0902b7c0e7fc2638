//! Attention kernels: the spatial linear attention and softmax attention of
//! the LeFusion denoiser (`shared/reference/denoiser.md`, building blocks).

use super::elementwise::{exp, softmax_in_place};
use super::gemm::gemm;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Linear attention per frame. `qkv`: `[B, 3·heads·d, F, N]` (q, k, v stacked
/// on channels, head-major within each), returns `[B, heads·d, F, N]`.
///
/// Per (b, f, head): q is softmaxed over its d features and scaled by
/// d^-½, k is softmaxed over the N positions, `context = k·vᵀ` (`[d, d]`),
/// `out = contextᵀ·q`.
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
    let tasks: Vec<(usize, usize, usize)> = (0..batch)
        .flat_map(|b| (0..frames).flat_map(move |f| (0..heads).map(move |h| (b, f, h))))
        .collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(b, f, h)| {
            let row = |part: usize, c: usize| {
                let off = ((b * 3 * hid + part * hid + h * d + c) * frames + f) * n;
                &qkv[off..off + n]
            };
            let mut q = vec![0f32; d * n];
            let mut k = vec![0f32; d * n];
            let mut v = vec![0f32; d * n];
            for c in 0..d {
                q[c * n..(c + 1) * n].copy_from_slice(row(0, c));
                k[c * n..(c + 1) * n].copy_from_slice(row(1, c));
                v[c * n..(c + 1) * n].copy_from_slice(row(2, c));
            }
            for kr in k.chunks_mut(n) {
                softmax_in_place(kr);
            }
            // Softmax of q over the feature axis, all positions at once so
            // the loops run along contiguous rows.
            let mut max = q[..n].to_vec();
            for qr in q.chunks(n).skip(1) {
                for (m, &v) in max.iter_mut().zip(qr) {
                    *m = m.max(v);
                }
            }
            let mut sum = vec![0f32; n];
            for qr in q.chunks_mut(n) {
                for ((v, &m), s) in qr.iter_mut().zip(&max).zip(sum.iter_mut()) {
                    *v = exp(*v - m);
                    *s += *v;
                }
            }
            let inv: Vec<f32> = sum.iter().map(|s| scale / s).collect();
            for qr in q.chunks_mut(n) {
                for (v, &i) in qr.iter_mut().zip(&inv) {
                    *v *= i;
                }
            }
            let (kv, vv, qv) = (view(&k, d, n), view(&v, d, n), view(&q, d, n));
            let mut context = vec![0f32; d * d];
            gemm(kv, vv.t(), 0.0, view_mut(&mut context, d, d));
            let mut out = vec![0f32; d * n];
            gemm(view(&context, d, d).t(), qv, 0.0, view_mut(&mut out, d, n));
            out
        })
        .collect();
    let mut out = vec![0f32; batch * hid * frames * n];
    for (&(b, f, h), res) in tasks.iter().zip(&results) {
        for c in 0..d {
            let off = ((b * hid + h * d + c) * frames + f) * n;
            out[off..off + n].copy_from_slice(&res[c * n..(c + 1) * n]);
        }
    }
    out
}

fn view(x: &[f32], r: usize, c: usize) -> ArrayView2<'_, f32> {
    match ArrayView2::from_shape((r, c), &x[..r * c]) {
        Ok(v) => v,
        Err(_) => unreachable!("buffer sized r·c above"),
    }
}

fn view_mut(x: &mut [f32], r: usize, c: usize) -> ArrayViewMut2<'_, f32> {
    match ArrayViewMut2::from_shape((r, c), &mut x[..r * c]) {
        Ok(v) => v,
        Err(_) => unreachable!("buffer sized r·c above"),
    }
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
    let mut out = vec![0f32; g * t * d];
    out.par_chunks_mut(t * d).enumerate().for_each(|(gi, dst)| {
        let span = gi * t * d..(gi + 1) * t * d;
        let (qv, kv, vv) = (
            view(&q[span.clone()], t, d),
            view(&k[span.clone()], t, d),
            view(&v[span], t, d),
        );
        let mut sim = vec![0f32; t * t];
        if let Some(bias) = bias {
            let h = gi % heads;
            sim.copy_from_slice(&bias[h * t * t..(h + 1) * t * t]);
        }
        gemm(
            qv,
            kv.t(),
            if bias.is_some() { 1.0 } else { 0.0 },
            view_mut(&mut sim, t, t),
        );
        for row in sim.chunks_mut(t) {
            softmax_in_place(row);
        }
        gemm(view(&sim, t, t), vv, 0.0, view_mut(dst, t, d));
    });
    out
}

/// Rotary position embedding with interleaved pairs. `x`: `[G, T, d]`,
/// `freqs`: `[d/2]`; token p's pair j is rotated by the angle `p·freqs[j]`:
/// `(u₂ⱼ, u₂ⱼ₊₁) → (u₂ⱼ cos θ − u₂ⱼ₊₁ sin θ, u₂ⱼ₊₁ cos θ + u₂ⱼ sin θ)`.
pub fn rotary_interleaved(x: &[f32], t: usize, d: usize, freqs: &[f32]) -> Vec<f32> {
    // Angles are formed in f32 exactly as the reference does (p·freq).
    let table: Vec<(f32, f32)> = (0..t)
        .flat_map(|p| freqs.iter().map(move |&fr| ((p as f32) * fr).sin_cos()))
        .collect();
    let mut out = vec![0f32; x.len()];
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

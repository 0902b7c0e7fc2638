//! Element-wise kernels: activations, broadcasting binary ops, softmax.

use super::{output_buffer, simd};
use crate::backend::desc::AxisDesc;
use rayon::prelude::*;

/// Elements per rayon task for element-wise maps.
const CHUNK: usize = 1 << 14;

/// `f` applied to every element, in parallel (vectorised when `f` inlines).
pub fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = output_buffer(x.len());
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, s)| {
            simd(
                #[inline(always)]
                || {
                    for (d, &v) in d.iter_mut().zip(s) {
                        *d = f(v);
                    }
                },
            )
        });
    out
}

/// `acc += x` element-wise, in parallel; the lengths are equal.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, s)| {
            simd(
                #[inline(always)]
                || {
                    for (d, &v) in d.iter_mut().zip(s) {
                        *d += v;
                    }
                },
            )
        });
}

/// SiLU `x·σ(x)`.
#[inline(always)]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

/// `eˣ` in f32 with relative error below 3e-7, written branch-free and
/// without float-to-int conversions so that loops over slices vectorise
/// (libm's `expf` is a scalar call).
///
/// `x = n·ln2 + r` with |r| ≤ ln2/2, `eʳ` by its degree-6 Taylor polynomial
/// (truncation < 7e-8), `2ⁿ` assembled in the exponent bits. Inputs are
/// clamped to the normal range, so the result underflows to ~1e-38 rather
/// than 0 and never overflows to infinity; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact (Cephes).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer n and leaves n in the
    // low mantissa bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // Bits of `shifted` minus those of ROUND are n (two's complement); the
    // biased exponent n + 127 lies in 1..=254 for the clamped range.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// GELU, exact form `x·Φ(x) = ½x(1 + erf(x/√2))` (PyTorch's default).
pub fn gelu(v: f32) -> f32 {
    let x = v as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Error function, |relative error| < 1.2e-7 (Chebyshev fit of erfc from
/// Numerical Recipes, 2nd ed., §6.2), ample for f32 outputs.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// Reverses the listed `axes` of a row-major `shape`.
pub fn flip(x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f32> {
    let st = strides(shape);
    let rank = shape.len();
    let flipped: Vec<bool> = (0..rank).map(|d| axes.contains(&d)).collect();
    let inner = shape.last().copied().unwrap_or(1).max(1);
    let flip_last = rank > 0 && flipped[rank - 1];
    let mut out = output_buffer(x.len());
    out.par_chunks_mut(inner)
        .enumerate()
        .for_each(|(row, dst)| {
            // Source offset of this output row's first element.
            let (mut off, mut rem) = (0, row);
            for d in (0..rank.saturating_sub(1)).rev() {
                let i = rem % shape[d];
                rem /= shape[d];
                off += if flipped[d] { shape[d] - 1 - i } else { i } * st[d];
            }
            let src = &x[off..off + dst.len()];
            if flip_last {
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            } else {
                dst.copy_from_slice(src);
            }
        });
    out
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `f(a, b)` with NumPy broadcasting. `a_shape`, `b_shape` and `out_shape`
/// have the same rank (the caller left-pads with 1s); every input dimension
/// equals the output's or is 1.
pub fn broadcast_binary(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let n: usize = out_shape.iter().product();
    if a_shape == b_shape {
        let mut out = output_buffer(n);
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (x, y))| {
                simd(
                    #[inline(always)]
                    || {
                        for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                            *d = f(x, y);
                        }
                    },
                )
            });
        return out;
    }
    // Effective strides: 0 along broadcast dimensions.
    let eff = |shape: &[usize]| -> Vec<usize> {
        strides(shape)
            .into_iter()
            .zip(shape)
            .map(|(s, &d)| if d == 1 { 0 } else { s })
            .collect()
    };
    let (sa, sb) = (eff(a_shape), eff(b_shape));
    let rank = out_shape.len();
    let inner = out_shape.last().copied().unwrap_or(1).max(1);
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let mut out = output_buffer(n);
    out.par_chunks_mut(inner)
        .enumerate()
        .for_each(|(row, dst)| {
            // Offsets of this output row in a and b.
            let (mut oa, mut ob, mut rem) = (0, 0, row);
            for d in (0..rank.saturating_sub(1)).rev() {
                let i = rem % out_shape[d];
                rem /= out_shape[d];
                oa += i * sa[d];
                ob += i * sb[d];
            }
            // Contiguous and broadcast rows get plain slice loops.
            let n = dst.len();
            simd(
                #[inline(always)]
                || match (ia, ib) {
                    (1, 1) => {
                        for ((d, &x), &y) in dst.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n])
                        {
                            *d = f(x, y);
                        }
                    }
                    (1, 0) => {
                        let y = b[ob];
                        for (d, &x) in dst.iter_mut().zip(&a[oa..oa + n]) {
                            *d = f(x, y);
                        }
                    }
                    (0, 1) => {
                        let x = a[oa];
                        for (d, &y) in dst.iter_mut().zip(&b[ob..ob + n]) {
                            *d = f(x, y);
                        }
                    }
                    _ => {
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = f(a[oa + j * ia], b[ob + j * ib]);
                        }
                    }
                },
            );
        });
    out
}

/// Softmax over consecutive rows of length `n` (max subtracted first).
pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    out.par_chunks_mut(n.max(1)).for_each(|row| {
        simd(
            #[inline(always)]
            || softmax_in_place(row),
        )
    });
    out
}

/// Sum over the middle axis of an `[outer, n, inner]` buffer into
/// `[outer, inner]`, accumulated in f64 and rounded once.
pub fn reduce_sum(x: &[f32], axis: AxisDesc) -> Vec<f32> {
    let AxisDesc { outer, size, inner } = axis;
    let mut out = vec![0f32; outer * inner];
    if size == 0 || inner == 0 {
        return out;
    }
    out.par_chunks_mut(inner)
        .zip(x.par_chunks(size * inner))
        .for_each(|(dst, src)| {
            let mut acc = vec![0f64; inner];
            for row in src.chunks(inner) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += f64::from(v);
                }
            }
            for (d, a) in dst.iter_mut().zip(acc) {
                *d = a as f32;
            }
        });
    out
}

/// Softmax along the middle axis of an `[outer, n, inner]` buffer (e.g.
/// over the channels of `[B, C, H·W]`), with the maximum subtracted first.
pub fn softmax_axis(x: &[f32], n: usize, inner: usize) -> Vec<f32> {
    if inner == 1 {
        return softmax_rows(x, n);
    }
    let mut out = output_buffer(x.len());
    out.par_chunks_mut((n * inner).max(1))
        .zip(x.par_chunks((n * inner).max(1)))
        .for_each(|(dst, src)| {
            simd(
                #[inline(always)]
                || {
                    // Row-wise passes over the n slices keep memory access contiguous.
                    let mut max = vec![f32::NEG_INFINITY; inner];
                    for row in src.chunks(inner) {
                        for (m, &v) in max.iter_mut().zip(row) {
                            *m = m.max(v);
                        }
                    }
                    let mut sum = vec![0f32; inner];
                    for (drow, srow) in dst.chunks_mut(inner).zip(src.chunks(inner)) {
                        for (((d, &v), &m), s) in
                            drow.iter_mut().zip(srow).zip(&max).zip(sum.iter_mut())
                        {
                            *d = exp(v - m);
                            *s += *d;
                        }
                    }
                    for drow in dst.chunks_mut(inner) {
                        for (d, s) in drow.iter_mut().zip(&sum) {
                            *d /= s;
                        }
                    }
                },
            )
        });
    out
}

/// Softmax of `src` written to `dst` (same length), max subtracted first.
#[inline(always)]
pub fn softmax_into(src: &[f32], dst: &mut [f32]) {
    let max = max_lanes(src);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = exp(v - max);
    }
    let inv = 1.0 / sum_lanes(dst);
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

/// Softmax of one row, in place.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let max = max_lanes(row);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_lanes(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Lanes of the reductions below: independent partial results, so the
/// loops vectorise (one running value would be a serial chain).
const LANES: usize = 16;

/// Sum of `v` in [`LANES`] interleaved partial sums (a fixed order).
#[inline(always)]
pub fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Maximum of `v` (−∞ when empty) in [`LANES`] interleaved partial maxima.
#[inline(always)]
pub fn max_lanes(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// Permutes a row-major buffer: output dimension `i` is input dimension
/// `perm[i]`.
pub fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let rank = out_shape.len();
    let inner = out_shape.last().copied().unwrap_or(1).max(1);
    let is = src_strides.last().copied().unwrap_or(0);
    let mut out = output_buffer(x.len());
    out.par_chunks_mut(inner)
        .enumerate()
        .for_each(|(row, dst)| {
            let (mut off, mut rem) = (0, row);
            for d in (0..rank.saturating_sub(1)).rev() {
                off += (rem % out_shape[d]) * src_strides[d];
                rem /= out_shape[d];
            }
            for (j, d) in dst.iter_mut().enumerate() {
                *d = x[off + j * is];
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265_0),
            (3.5, 0.999_999_256_9),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in -86_900..=87_900 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "{worst}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e30) < 1e-37 && exp(1e30).is_finite());
    }

    /// The lane-wise reductions and softmaxes agree with plain loops on
    /// lengths around the lane count.
    #[test]
    fn lane_reductions_and_softmax() {
        for n in [0, 1, 15, 16, 17, 100] {
            let v = crate::backend::cpu::random_normal(n, n as u64);
            let sum: f32 = v.iter().sum();
            assert!((sum_lanes(&v) - sum).abs() < 1e-4, "sum {n}");
            let max = v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            assert_eq!(max_lanes(&v), max, "max {n}");
            if n == 0 {
                continue;
            }
            let mut out = vec![0f32; n];
            softmax_into(&v, &mut out);
            let mut inplace = v.clone();
            softmax_in_place(&mut inplace);
            assert_eq!(out, inplace);
            let denom: f64 = v.iter().map(|&x| ((x - max) as f64).exp()).sum();
            for (o, &x) in out.iter().zip(&v) {
                let want = ((x - max) as f64).exp() / denom;
                assert!((*o as f64 - want).abs() < 1e-6, "softmax {n}");
            }
        }
    }

    #[test]
    fn broadcasting_and_permute() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [2, 3]
        let b = vec![10.0, 20.0]; // [2, 1]
        let c = broadcast_binary(&a, &[2, 3], &b, &[2, 1], &[2, 3], |x, y| x + y);
        assert_eq!(c, vec![10.0, 11.0, 12.0, 23.0, 24.0, 25.0]);
        let t = permute(&a, &[2, 3], &[1, 0]);
        assert_eq!(t, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}

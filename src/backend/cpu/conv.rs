//! Convolutions acting on every frame of a `[B, C, F, H, W]` buffer.
//!
//! A PyTorch `Conv3d` with kernel `(1, kh, kw)` (or a `Conv2d` on
//! `[B, C, H, W]`, i.e. F = 1) is a 2-D convolution per frame. Each frame is
//! lowered to im2col columns and multiplied by the weight matrix; frames are
//! read and written through strided views so no permutation is needed.

use super::gemm::{matmul, matmul_seq, view, view_mut, MatMut};
use super::{output_buffer, simd, winograd, with_scratch};
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

pub use crate::backend::desc::ConvGeometry;

/// A `[rows, cols]` ndarray view of channel-major frame data starting at
/// `offset`, rows `row_stride` apart (the kernels here use the faer views of
/// [`super::gemm::view`]; this form serves ndarray-based callers).
pub(super) fn frame_view(
    data: &[f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> ArrayView2<'_, f32> {
    let end = offset + rows.saturating_sub(1) * row_stride + cols;
    ArrayView2::from_shape((rows, cols).strides((row_stride, 1)), &data[offset..end])
        .unwrap_or_else(|_| unreachable_view())
}

/// Mutable counterpart of [`frame_view`].
pub(super) fn frame_view_mut(
    data: &mut [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> ArrayViewMut2<'_, f32> {
    let end = offset + rows.saturating_sub(1) * row_stride + cols;
    match ArrayViewMut2::from_shape(
        (rows, cols).strides((row_stride, 1)),
        &mut data[offset..end],
    ) {
        Ok(v) => v,
        Err(_) => unreachable_view(),
    }
}

#[cold]
pub(super) fn unreachable_view() -> ! {
    // The slice is cut to exactly the extent the strides address, so
    // `from_shape` cannot fail; reaching this is a bug in this file.
    unreachable!("frame view extent computed inconsistently")
}

/// Forward convolution. `x`: `[B, C_in, F, H, W]`, `weight`: `[C_out, C_in,
/// kh, kw]`, `bias`: `[C_out]`. Returns `[B, C_out, F, Ho, Wo]`. The caller
/// has validated sizes and that [`ConvGeometry::conv_out`] is `Some`.
pub fn conv2d_frames(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    conv2d_frames_add(x, weight, bias, None, g)
}

/// [`conv2d_frames`] plus `residual` (the output's layout), which seeds the
/// accumulator of the matrix products instead of costing another pass.
pub fn conv2d_frames_add(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let Some((ho, wo)) = g.conv_out() else {
        return Vec::new();
    };
    if winograd::applies(g) {
        let mut out = winograd::conv3x3_frames(x, weight, bias, g);
        if let Some(r) = residual {
            super::elementwise::add_assign(&mut out, r);
        }
        return out;
    }
    conv2d_im2col(x, weight, bias, residual, g, ho, wo)
}

/// [`conv2d_frames_add`] by im2col columns and one matrix product per frame
/// (or per tile of output rows), for any kernel, stride and padding.
pub(super) fn conv2d_im2col(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    ho: usize,
    wo: usize,
) -> Vec<f32> {
    let (hw, howo) = (g.h * g.w, ho * wo);
    let kk = g.c_in * g.kh * g.kw;
    // The accumulator starts as residual + bias (either may be absent).
    let mut out = output_buffer(g.batch * g.c_out * g.frames * howo);
    if let Some(r) = residual {
        out.par_chunks_mut(1 << 14)
            .zip(r.par_chunks(1 << 14))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
    let wmat = view(weight, 0, g.c_out, kk, kk);
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.pad == (0, 0);
    // Output rows per im2col tile so that a tile's columns (~1 MiB) stay in
    // cache between being written and being packed by the GEMM.
    let tile_rows = (COLS_TILE_FLOATS / (kk * wo).max(1)).clamp(1, ho);
    let tiles = ho.div_ceil(tile_rows);
    // Every tile repacks the whole weight matrix, so narrow tiles (deep
    // layers at low resolution) cost more in packing than they save, unless
    // the whole column buffer would be large.
    let tiled = !pointwise
        && tiles >= 2 * rayon::current_num_threads()
        && (tile_rows * wo >= MIN_TILE_COLS || kk * howo > MAX_UNTILED_FLOATS);
    let cols_len = if pointwise || tiled { 0 } else { kk * howo };
    with_scratch(cols_len, |cols| {
        for b in 0..g.batch {
            for f in 0..g.frames {
                let x_off = (b * g.c_in * g.frames + f) * hw;
                let o_off = (b * g.c_out * g.frames + f) * howo;
                if let Some(bias) = bias {
                    for (co, &bv) in bias.iter().enumerate() {
                        let start = o_off + co * g.frames * howo;
                        let row = &mut out[start..start + howo];
                        if residual.is_some() {
                            row.iter_mut().for_each(|v| *v += bv);
                        } else {
                            row.fill(bv);
                        }
                    }
                }
                let dst = view_mut(&mut out, o_off, g.c_out, howo, g.frames * howo);
                let accumulate = bias.is_some() || residual.is_some();
                if tiled {
                    // Independent tiles of output rows, one task each: im2col of
                    // the tile, then a single-threaded product into its columns.
                    let parts = split_cols(dst, tile_rows * wo);
                    parts.into_par_iter().enumerate().for_each(|(t, dst)| {
                        let oy0 = t * tile_rows;
                        let oy1 = (oy0 + tile_rows).min(ho);
                        let n = (oy1 - oy0) * wo;
                        with_scratch(kk * n, |cols| {
                            simd(
                                #[inline(always)]
                                || {
                                    for (row, line) in cols.chunks_mut(n).enumerate() {
                                        im2col_row(x, x_off, g, wo, row, oy0..oy1, line);
                                    }
                                },
                            );
                            matmul_seq(dst, wmat, view(cols, 0, kk, n, n), accumulate);
                        });
                    });
                    continue;
                }
                let rhs = if pointwise {
                    view(x, x_off, g.c_in, hw, g.frames * hw)
                } else {
                    cols.par_chunks_mut(howo)
                        .enumerate()
                        .for_each(|(row, line)| {
                            simd(
                                #[inline(always)]
                                || im2col_row(x, x_off, g, wo, row, 0..ho, line),
                            )
                        });
                    view(cols, 0, kk, howo, howo)
                };
                matmul(dst, wmat, rhs, accumulate);
            }
        }
    });
    out
}

/// `m` cut into blocks of `width` columns (the last one narrower).
pub(super) fn split_cols(m: MatMut<'_, f32>, width: usize) -> Vec<MatMut<'_, f32>> {
    let width = width.max(1);
    let mut parts = Vec::with_capacity(m.ncols().div_ceil(width));
    let mut rest = m;
    while rest.ncols() > width {
        let (head, tail) = rest.split_at_col_mut(width);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

/// Floats in one im2col tile (1 MiB).
const COLS_TILE_FLOATS: usize = 1 << 18;

/// Fewest output pixels per im2col tile.
const MIN_TILE_COLS: usize = 256;

/// Largest im2col buffer built whole (16 MiB); beyond it tiles are used
/// however narrow, to bound memory.
const MAX_UNTILED_FLOATS: usize = 1 << 22;

/// Fills one im2col row — input channel and kernel offset `row` =
/// `(c, ky, kx)` — for output rows `oys`: `dst[(oy − oys.start)·wo + ox]` is
/// the zero-padded input pixel under that kernel tap.
#[inline(always)]
fn im2col_row(
    x: &[f32],
    x_off: usize,
    g: &ConvGeometry,
    wo: usize,
    row: usize,
    oys: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let hw = g.h * g.w;
    let cstride = g.frames * hw;
    let (sh, sw) = g.stride;
    let (ph, pw) = g.pad;
    let c = row / (g.kh * g.kw);
    let ky = (row / g.kw) % g.kh;
    let kx = row % g.kw;
    let plane = &x[x_off + c * cstride..x_off + c * cstride + hw];
    // Output columns whose input column lies inside the image form one
    // contiguous range, so the copy below has no branches.
    let first = pw.saturating_sub(kx).div_ceil(sw).min(wo);
    let last = (g.w + pw).saturating_sub(kx).div_ceil(sw).clamp(first, wo);
    let oy0 = oys.start;
    for oy in oys {
        let line = &mut dst[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
        let iy = (oy * sh + ky) as isize - ph as isize;
        if iy < 0 || iy >= g.h as isize {
            line.fill(0.0);
            continue;
        }
        let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
        line[..first].fill(0.0);
        line[last..].fill(0.0);
        if first < last {
            let ix0 = first * sw + kx - pw;
            if sw == 1 {
                line[first..last].copy_from_slice(&src[ix0..ix0 + (last - first)]);
            } else {
                for (j, v) in line[first..last].iter_mut().enumerate() {
                    *v = src[ix0 + j * sw];
                }
            }
        }
    }
}

/// Transposed convolution (the adjoint of [`conv2d_frames`]). `x`:
/// `[B, C_in, F, H, W]`, `weight`: `[C_in, C_out, kh, kw]` (PyTorch's
/// `ConvTranspose` layout), `bias`: `[C_out]`. Returns `[B, C_out, F, Ho, Wo]`
/// with sizes from [`ConvGeometry::transposed_out`]; the caller validated them.
pub fn conv_transpose2d_frames(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let Some((ho, wo)) = g.transposed_out() else {
        return Vec::new();
    };
    let (hw, howo) = (g.h * g.w, ho * wo);
    let kk = g.c_out * g.kh * g.kw;
    let mut out = output_buffer(g.batch * g.c_out * g.frames * howo);
    // cols[(co, ky, kx), (iy, ix)] = Σ_ci W[ci, co, ky, kx] · x[ci, iy, ix]
    let wt = view(weight, 0, g.c_in, kk, kk).transpose();
    let (sh, sw) = g.stride;
    let (ph, pw) = g.pad;
    with_scratch(kk * hw, |cols| {
        for b in 0..g.batch {
            for f in 0..g.frames {
                let x_off = (b * g.c_in * g.frames + f) * hw;
                let rhs = view(x, x_off, g.c_in, hw, g.frames * hw);
                matmul(view_mut(cols, 0, kk, hw, hw), wt, rhs, false);
                // col2im: every output plane is owned by one task.
                let o_off = b * g.c_out * g.frames * howo;
                let cols = &*cols;
                out[o_off..o_off + g.c_out * g.frames * howo]
                    .par_chunks_mut(g.frames * howo)
                    .enumerate()
                    .for_each(|(co, chan)| {
                        let plane = &mut chan[f * howo..(f + 1) * howo];
                        plane.fill(bias.map_or(0.0, |bv| bv[co]));
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let src = &cols[((co * g.kh + ky) * g.kw + kx) * hw..][..hw];
                                for iy in 0..g.h {
                                    let oy = (iy * sh + ky) as isize - ph as isize;
                                    if oy < 0 || oy >= ho as isize {
                                        continue;
                                    }
                                    let dst = &mut plane[oy as usize * wo..(oy as usize + 1) * wo];
                                    // Input columns landing inside the output row
                                    // form one contiguous range.
                                    let first = pw.saturating_sub(kx).div_ceil(sw).min(g.w);
                                    let last =
                                        (wo + pw).saturating_sub(kx).div_ceil(sw).clamp(first, g.w);
                                    let row = &src[iy * g.w..(iy + 1) * g.w];
                                    for ix in first..last {
                                        dst[ix * sw + kx - pw] += row[ix];
                                    }
                                }
                            }
                        }
                    });
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::random_normal as random;

    /// Direct definition of the per-frame convolution.
    fn naive_conv(x: &[f32], w: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let (ho, wo) = g.conv_out().unwrap();
        let mut out = vec![0f32; g.batch * g.c_out * g.frames * ho * wo];
        for b in 0..g.batch {
            for co in 0..g.c_out {
                for f in 0..g.frames {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut acc = bias[co] as f64;
                            for ci in 0..g.c_in {
                                for ky in 0..g.kh {
                                    for kx in 0..g.kw {
                                        let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                                        let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= g.h as isize
                                            || ix >= g.w as isize
                                        {
                                            continue;
                                        }
                                        let xi = (((b * g.c_in + ci) * g.frames + f) * g.h
                                            + iy as usize)
                                            * g.w
                                            + ix as usize;
                                        let wi = ((co * g.c_in + ci) * g.kh + ky) * g.kw + kx;
                                        acc += (x[xi] * w[wi]) as f64;
                                    }
                                }
                            }
                            out[(((b * g.c_out + co) * g.frames + f) * ho + oy) * wo + ox] =
                                acc as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn geom(k: usize, stride: usize, pad: usize) -> ConvGeometry {
        ConvGeometry {
            batch: 2,
            c_in: 3,
            c_out: 5,
            frames: 3,
            h: 8,
            w: 6,
            kh: k,
            kw: k,
            stride: (stride, stride),
            pad: (pad, pad),
        }
    }

    #[test]
    fn conv_matches_direct_definition() {
        for g in [
            geom(3, 1, 1),
            geom(1, 1, 0),
            geom(4, 2, 1),
            geom(7, 1, 3),
            geom(5, 1, 4),
            geom(3, 2, 2),
            geom(3, 2, 0),
        ] {
            let x = random(g.batch * g.c_in * g.frames * g.h * g.w, 1);
            let w = random(g.c_out * g.c_in * g.kh * g.kw, 2);
            let bias = random(g.c_out, 3);
            let got = conv2d_frames(&x, &w, Some(&bias), &g);
            let want = naive_conv(&x, &w, &bias, &g);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            assert!(err < 1e-4, "{g:?}: {err}");
        }
    }

    /// Large enough for the cache-tiled path (several tiles of output rows).
    #[test]
    fn tiled_conv_matches_direct_definition() {
        let g = ConvGeometry {
            batch: 1,
            c_in: 64,
            c_out: 4,
            frames: 2,
            h: 40,
            w: 48,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (1, 1),
        };
        let (ho, wo) = g.conv_out().unwrap();
        assert!(ho.div_ceil(COLS_TILE_FLOATS / (g.c_in * 9 * wo)) >= 4);
        let x = random(g.batch * g.c_in * g.frames * g.h * g.w, 7);
        let w = random(g.c_out * g.c_in * 9, 8);
        let bias = random(g.c_out, 9);
        // Called directly: conv2d_frames sends this geometry to Winograd.
        let got = conv2d_im2col(&x, &w, Some(&bias), None, &g, ho, wo);
        let want = naive_conv(&x, &w, &bias, &g);
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-3, "{err}");
    }

    /// The transposed convolution is the adjoint of the convolution:
    /// <conv(x), y> = <x, conv_t(y)> for the same weight and no bias.
    #[test]
    fn transposed_conv_is_the_adjoint() {
        // (kernel, stride, pad): the denoiser's Upsample, nnU-Net's k = s = 2
        // transposed conv, and a stride-1 case.
        for (k, s, p) in [(4, 2, 1), (2, 2, 0), (3, 1, 1)] {
            let g = ConvGeometry {
                batch: 2,
                c_in: 4,
                c_out: 3,
                frames: 2,
                h: 8,
                w: 10,
                kh: k,
                kw: k,
                stride: (s, s),
                pad: (p, p),
            };
            let (ho, wo) = g.conv_out().unwrap();
            let x = random(g.batch * g.c_in * g.frames * g.h * g.w, 4);
            let w = random(g.c_out * g.c_in * k * k, 5);
            let y = random(g.batch * g.c_out * g.frames * ho * wo, 6);
            let cx = conv2d_frames(&x, &w, None, &g);
            // Transposed geometry: from c_out channels at (ho, wo) back to c_in at (h, w).
            let gt = ConvGeometry {
                c_in: g.c_out,
                c_out: g.c_in,
                h: ho,
                w: wo,
                ..g
            };
            assert_eq!(gt.transposed_out(), Some((g.h, g.w)));
            let ty = conv_transpose2d_frames(&y, &w, None, &gt);
            let lhs: f64 = cx.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&ty).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "k{k} s{s} p{p}: {lhs} vs {rhs}"
            );
        }
    }
}

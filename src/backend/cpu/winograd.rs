//! Winograd F(2×2, 3×3) for stride-1, pad-1 3×3 convolutions per frame.
//!
//! Each 2×2 output tile is computed from a 4×4 input patch with 16
//! multiplies per (input, output) channel pair instead of 36. With
//! `U = G·g·Gᵀ` (weights), `V = Bᵀ·d·B` (input patches) and
//! `Y = Aᵀ·M·A` (outputs), the channel sums `M[p] = U[p]·V[p]` for the 16
//! tile positions p are 16 ordinary matrix products over channels.
//!
//! Layouts: `U` `[C_out, 16, C_in]`; per block of tiles, `V` `[C_in, 16, T]`
//! and `M` `[C_out, 16, T]` (T tiles, raster order), so one channel's
//! transform writes one contiguous chunk.

use super::conv::{frame_view, frame_view_mut, unreachable_view, ConvGeometry};
use super::gemm::gemm;
use ndarray::{linalg::general_mat_mul, Axis};
use rayon::prelude::*;

/// Floats of `V` and `M` together in one block of tile rows (2 MiB), so a
/// block's transforms and products stay in the L2 cache.
const BLOCK_FLOATS: usize = 1 << 19;

/// Frames smaller than this many pixels go to im2col: with few tiles the
/// products are too narrow to pay for the weight transform and the packing
/// of 16 weight matrices (measured on the CLAIM sizes, one thread: a win
/// from 18×18 up, a loss at 9×9 with 576 channels, 12 ms against 9 ms).
const MIN_PIXELS: usize = 16 * 16;

/// Whether this kernel computes `g` (3×3, stride 1, pad 1) and is faster
/// there than im2col.
pub fn applies(g: &ConvGeometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == (1, 1) && g.pad == (1, 1) && g.h * g.w >= MIN_PIXELS
}

/// `G·g·Gᵀ` for every `[C_out, C_in, 3, 3]` kernel, as `[C_out, 16, C_in]`:
/// one output channel's 16 rows lie together, so the writes stay in cache.
fn transform_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * c_out * c_in];
    // Rows of G: (1, 0, 0), ½(1, 1, 1), ½(1, −1, 1), (0, 0, 1).
    let lift = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    u.par_chunks_mut(16 * c_in)
        .zip(weight.par_chunks(9 * c_in))
        .for_each(|(dst, kernels)| {
            for (ci, g) in kernels.chunks_exact(9).enumerate() {
                let cols = [
                    lift(g[0], g[3], g[6]),
                    lift(g[1], g[4], g[7]),
                    lift(g[2], g[5], g[8]),
                ];
                for i in 0..4 {
                    let row = lift(cols[0][i], cols[1][i], cols[2][i]);
                    for (j, &v) in row.iter().enumerate() {
                        dst[(4 * i + j) * c_in + ci] = v;
                    }
                }
            }
        });
    u
}

/// `Bᵀ·d·B` of every 4×4 patch of one input channel `plane` (`h × w`) for
/// the tiles in tile rows `tys` (`tw` tiles per row): position p of tile t
/// goes to `dst[p·T + t]`, T = tiles in `tys`.
fn transform_input(
    plane: &[f32],
    h: usize,
    w: usize,
    tw: usize,
    tys: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let nt = tys.len() * tw;
    let ty0 = tys.start;
    // Bᵀ applied to four values: (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
    let bt = |d: [f32; 4]| [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
    for ty in tys {
        // The four input rows of this tile row (zero outside the image).
        let row_of = |r: usize| -> Option<&[f32]> {
            let iy = (2 * ty + r).checked_sub(1)?;
            plane.get(iy * w..(iy + 1) * w).filter(|_| iy < h)
        };
        let src = [row_of(0), row_of(1), row_of(2), row_of(3)];
        for tx in 0..tw {
            let mut d = [[0f32; 4]; 4];
            let interior = tx >= 1 && 2 * tx + 2 < w;
            for (drow, srow) in d.iter_mut().zip(&src) {
                let Some(srow) = srow else { continue };
                if interior {
                    drow.copy_from_slice(&srow[2 * tx - 1..2 * tx + 3]);
                } else {
                    for (c, v) in drow.iter_mut().enumerate() {
                        if let Some(ix) = (2 * tx + c).checked_sub(1) {
                            *v = srow.get(ix).copied().unwrap_or(0.0);
                        }
                    }
                }
            }
            // Bᵀ·d on columns (cols[c][r] is row r of column c), then ·B
            // on the rows.
            let cols = [0, 1, 2, 3].map(|c| bt([d[0][c], d[1][c], d[2][c], d[3][c]]));
            let tile = (ty - ty0) * tw + tx;
            for r in 0..4 {
                let row = bt([cols[0][r], cols[1][r], cols[2][r], cols[3][r]]);
                for (c, v) in row.into_iter().enumerate() {
                    dst[(4 * r + c) * nt + tile] = v;
                }
            }
        }
    }
}

/// `Aᵀ·M·A + bias` for the tiles of one output channel: `m[p·T + t]` is
/// position p of tile t; writes the 2×2 outputs into `rows`, the plane's
/// rows from `2·tys.start` on (row length `w`, at most `h` rows in all).
fn transform_output(
    m: &[f32],
    bias: f32,
    h: usize,
    w: usize,
    tw: usize,
    tys: std::ops::Range<usize>,
    rows: &mut [f32],
) {
    let nt = tys.len() * tw;
    let ty0 = tys.start;
    // Aᵀ applied to four values: (m0 + m1 + m2, m1 − m2 − m3).
    let at = |v: [f32; 4]| [v[0] + v[1] + v[2], v[1] - v[2] - v[3]];
    for ty in tys {
        for tx in 0..tw {
            let tile = (ty - ty0) * tw + tx;
            let p = |r: usize, c: usize| m[(4 * r + c) * nt + tile];
            // Aᵀ·M on columns, giving the two rows of Aᵀ·M.
            let cols = [0, 1, 2, 3].map(|c| at([p(0, c), p(1, c), p(2, c), p(3, c)]));
            let s = [cols.map(|v| v[0]), cols.map(|v| v[1])];
            for (i, srow) in s.iter().enumerate() {
                let oy = 2 * ty + i;
                if oy >= h {
                    continue;
                }
                let y = at(*srow);
                let line = &mut rows[(oy - 2 * ty0) * w..(oy - 2 * ty0 + 1) * w];
                line[2 * tx] = y[0] + bias;
                if 2 * tx + 1 < w {
                    line[2 * tx + 1] = y[1] + bias;
                }
            }
        }
    }
}

/// The 16 products `M[p] = U[p]·V[p]` for a block of `nt` tiles.
fn products(u: &[f32], v: &[f32], m: &mut [f32], g: &ConvGeometry, nt: usize, threaded: bool) {
    for p in 0..16 {
        let a = frame_view(u, p * g.c_in, g.c_out, g.c_in, 16 * g.c_in);
        let b = frame_view(v, p * nt, g.c_in, nt, 16 * nt);
        let c = frame_view_mut(m, p * nt, g.c_out, nt, 16 * nt);
        if threaded {
            gemm(a, b, 0.0, c);
        } else {
            let mut c = c;
            general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        }
    }
}

/// 3×3, stride-1, pad-1 convolution of every frame by Winograd F(2×2, 3×3);
/// same contract as [`super::conv::conv2d_frames`] for geometries where
/// [`applies`] holds.
pub fn conv3x3_frames(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let (h, w) = (g.h, g.w);
    let hw = h * w;
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let u = transform_weights(weight, g.c_out, g.c_in);
    let mut out = vec![0f32; g.batch * g.c_out * g.frames * hw];
    let threads = rayon::current_num_threads();
    let row_floats = 16 * (g.c_in + g.c_out) * tw;
    let tile_rows = (BLOCK_FLOATS / row_floats.max(1)).clamp(1, th);
    // Blocks of tile rows run as independent tasks when there are enough
    // of them to keep every thread busy; otherwise one block spans the
    // frame and the transforms and products are split across threads.
    let blocked = threads == 1 || th.div_ceil(tile_rows) >= 2 * threads;
    let tile_rows = if !blocked {
        th
    } else if threads == 1 {
        tile_rows
    } else {
        // The largest block height whose block count is a multiple of the
        // thread count, so the threads finish together.
        let most = tile_rows.min(th.div_ceil(2 * threads));
        (1..=most)
            .rev()
            .find(|&r| th.div_ceil(r) % threads == 0)
            .unwrap_or(most)
    };
    let bias_of = |co: usize| bias.map_or(0.0, |b| b[co]);
    for b in 0..g.batch {
        for f in 0..g.frames {
            let x_off = (b * g.c_in * g.frames + f) * hw;
            let plane = |ci: usize| {
                let off = x_off + ci * g.frames * hw;
                &x[off..off + hw]
            };
            if blocked {
                let o_off = (b * g.c_out * g.frames + f) * hw;
                let mut dst = frame_view_mut(&mut out, o_off, g.c_out, hw, g.frames * hw);
                let parts: Vec<_> = dst
                    .axis_chunks_iter_mut(Axis(1), 2 * tile_rows * w)
                    .enumerate()
                    .collect();
                parts.into_par_iter().for_each(|(blk, mut dst)| {
                    let ty0 = blk * tile_rows;
                    let tys = ty0..(ty0 + tile_rows).min(th);
                    let nt = tys.len() * tw;
                    let mut v = vec![0f32; 16 * g.c_in * nt];
                    for (ci, chunk) in v.chunks_mut(16 * nt).enumerate() {
                        transform_input(plane(ci), h, w, tw, tys.clone(), chunk);
                    }
                    let mut m = vec![0f32; 16 * g.c_out * nt];
                    products(&u, &v, &mut m, g, nt, false);
                    for (co, (chunk, mut row)) in m.chunks(16 * nt).zip(dst.rows_mut()).enumerate()
                    {
                        // Frame rows are contiguous (unit column stride).
                        let Some(rows) = row.as_slice_mut() else {
                            unreachable_view()
                        };
                        transform_output(chunk, bias_of(co), h, w, tw, tys.clone(), rows);
                    }
                });
            } else {
                let nt = th * tw;
                let mut v = vec![0f32; 16 * g.c_in * nt];
                v.par_chunks_mut(16 * nt)
                    .enumerate()
                    .for_each(|(ci, chunk)| transform_input(plane(ci), h, w, tw, 0..th, chunk));
                let mut m = vec![0f32; 16 * g.c_out * nt];
                products(&u, &v, &mut m, g, nt, true);
                let o_off = b * g.c_out * g.frames * hw;
                out[o_off..o_off + g.c_out * g.frames * hw]
                    .par_chunks_mut(g.frames * hw)
                    .zip(m.par_chunks(16 * nt))
                    .enumerate()
                    .for_each(|(co, (chan, chunk))| {
                        let rows = &mut chan[f * hw..(f + 1) * hw];
                        transform_output(chunk, bias_of(co), h, w, tw, 0..th, rows);
                    });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::conv::conv2d_im2col;
    use super::*;
    use crate::backend::cpu::random_normal as random;

    /// Largest |difference| relative to the largest |expected value|.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        err / scale
    }

    /// Winograd against the im2col convolution on random data: odd and even
    /// sizes, 1×1 and 1×N images, batches and frames, with and without
    /// bias; run on one thread (blocks of tile rows, several blocks for the
    /// 47×45 case) and on three (frame-wide transforms, threaded products).
    #[test]
    fn matches_im2col_convolution() {
        let cases = [
            // (batch, c_in, c_out, frames, h, w)
            (1, 1, 1, 1, 1, 1),
            (2, 3, 5, 2, 7, 9),
            (1, 4, 3, 1, 1, 6),
            (1, 16, 24, 3, 10, 11),
            (2, 7, 2, 1, 30, 30),
            (1, 32, 32, 1, 47, 45),
        ];
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (i, &(batch, c_in, c_out, frames, h, w)) in cases.iter().enumerate() {
                let g = ConvGeometry {
                    batch,
                    c_in,
                    c_out,
                    frames,
                    h,
                    w,
                    kh: 3,
                    kw: 3,
                    stride: (1, 1),
                    pad: (1, 1),
                };
                let seed = 10 * i as u64;
                let x = random(batch * c_in * frames * h * w, seed);
                let wt = random(c_out * c_in * 9, seed + 1);
                let bias = random(c_out, seed + 2);
                let bias = (i % 2 == 0).then_some(bias.as_slice());
                let got = pool.install(|| conv3x3_frames(&x, &wt, bias, &g));
                let want = conv2d_im2col(&x, &wt, bias, &g, h, w);
                let err = relative_error(&got, &want);
                assert!(err < 1e-5, "{threads} threads, {g:?}: {err}");
            }
        }
    }

    /// The transformed kernel of a single tap reproduces that tap: a kernel
    /// with 1 at the centre is the identity convolution.
    #[test]
    fn centre_tap_is_the_identity() {
        let g = ConvGeometry {
            batch: 1,
            c_in: 1,
            c_out: 1,
            frames: 1,
            h: 5,
            w: 4,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (1, 1),
        };
        let x = random(20, 4);
        let mut wt = [0f32; 9];
        wt[4] = 1.0;
        let y = conv3x3_frames(&x, &wt, None, &g);
        assert!(relative_error(&y, &x) < 1e-6);
    }
}

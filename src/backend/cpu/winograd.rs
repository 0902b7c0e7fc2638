//! Winograd F(m×m, 3×3) for stride-1, pad-1 3×3 convolutions per frame,
//! with m = 4 on large frames and m = 2 on mid-sized ones.
//!
//! Each m×m output tile is computed from an a×a input patch (a = m + 2)
//! with a² multiplies per (input, output) channel pair instead of 9·m²
//! (F(2×2): 16 against 36; F(4×4): 36 against 144). With `U = G·g·Gᵀ`
//! (weights), `V = Bᵀ·d·B` (input patches) and `Y = Aᵀ·M·A` (outputs), the
//! channel sums `M[p] = U[p]·V[p]` for the a² tile positions p are a²
//! ordinary matrix products over channels.
//!
//! Layouts: `U` `[C_out, a², C_in]`; per block of tiles, `V` `[C_in, a², T]`
//! and `M` `[C_out, a², T]` (T tiles, raster order), so one channel's
//! transform writes one contiguous chunk.

use super::conv::{frame_view, frame_view_mut, unreachable_view, ConvGeometry};
use super::gemm::gemm;
use ndarray::{linalg::general_mat_mul, Axis};
use rayon::prelude::*;
use std::array::from_fn;

/// Floats of `V` and `M` together in one block of tile rows (2 MiB), so a
/// block's transforms and products stay in the L2 cache.
const BLOCK_FLOATS: usize = 1 << 19;

/// Frames smaller than this many pixels go to im2col: with few tiles the
/// products are too narrow to pay for the weight transform and the packing
/// of 16 weight matrices (measured on the CLAIM sizes, one thread: a win
/// from 18×18 up, a loss at 9×9 with 576 channels, 12 ms against 9 ms).
const MIN_PIXELS: usize = 16 * 16;

/// Frames of at least this many pixels use F(4×4, 3×3): fewer multiplies
/// than F(2×2) once the frame holds enough 4×4 tiles to keep the products
/// wide.
const F4_MIN_PIXELS: usize = 32 * 32;

/// Whether this kernel computes `g` (3×3, stride 1, pad 1) and is faster
/// there than im2col.
pub fn applies(g: &ConvGeometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == (1, 1) && g.pad == (1, 1) && g.h * g.w >= MIN_PIXELS
}

/// The three transforms of one Winograd variant, F(M×M, 3×3) with A = M + 2
/// interpolation points per axis, each acting on one row or column.
trait Tiling<const A: usize, const M: usize> {
    /// `G·g` for one 3-tap kernel column.
    fn lift(g: [f32; 3]) -> [f32; A];
    /// `Bᵀ·d` for one column of an input patch.
    fn bt(d: [f32; A]) -> [f32; A];
    /// `Aᵀ·m` for one column of a product tile.
    fn at(m: [f32; A]) -> [f32; M];
}

/// F(2×2, 3×3), points 0, ±1, ∞.
struct F2;

impl Tiling<4, 2> for F2 {
    fn lift([a, b, c]: [f32; 3]) -> [f32; 4] {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
    }
    fn bt(d: [f32; 4]) -> [f32; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }
    fn at(v: [f32; 4]) -> [f32; 2] {
        [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
    }
}

/// F(4×4, 3×3), points 0, ±1, ±2, ∞ (the 1/4 and 1/6, 1/24 scalings sit in
/// `G`, so input and output transforms have small integer entries).
struct F4;

impl Tiling<6, 4> for F4 {
    fn lift([a, b, c]: [f32; 3]) -> [f32; 6] {
        let s = a + c;
        let t = a + 4.0 * c;
        [
            0.25 * a,
            -(s + b) / 6.0,
            -(s - b) / 6.0,
            (t + 2.0 * b) / 24.0,
            (t - 2.0 * b) / 24.0,
            c,
        ]
    }
    fn bt(d: [f32; 6]) -> [f32; 6] {
        [
            4.0 * d[0] - 5.0 * d[2] + d[4],
            -4.0 * (d[1] + d[2]) + d[3] + d[4],
            4.0 * (d[1] - d[2]) - d[3] + d[4],
            2.0 * (d[3] - d[1]) - d[2] + d[4],
            2.0 * (d[1] - d[3]) - d[2] + d[4],
            4.0 * d[1] - 5.0 * d[3] + d[5],
        ]
    }
    fn at(v: [f32; 6]) -> [f32; 4] {
        let (s1, d1) = (v[1] + v[2], v[1] - v[2]);
        let (s2, d2) = (v[3] + v[4], v[3] - v[4]);
        [
            v[0] + s1 + s2,
            d1 + 2.0 * d2,
            s1 + 4.0 * s2,
            d1 + 8.0 * d2 + v[5],
        ]
    }
}

/// `G·g·Gᵀ` for every `[C_out, C_in, 3, 3]` kernel, as `[C_out, A², C_in]`:
/// one output channel's A² rows lie together, so the writes stay in cache.
fn transform_weights<const A: usize, const M: usize, K: Tiling<A, M>>(
    weight: &[f32],
    c_out: usize,
    c_in: usize,
) -> Vec<f32> {
    let mut u = vec![0f32; A * A * c_out * c_in];
    u.par_chunks_mut(A * A * c_in)
        .zip(weight.par_chunks(9 * c_in))
        .for_each(|(dst, kernels)| {
            for (ci, g) in kernels.chunks_exact(9).enumerate() {
                let cols: [[f32; A]; 3] = from_fn(|c| K::lift([g[c], g[3 + c], g[6 + c]]));
                for i in 0..A {
                    let row = K::lift([cols[0][i], cols[1][i], cols[2][i]]);
                    for (j, &v) in row.iter().enumerate() {
                        dst[(A * i + j) * c_in + ci] = v;
                    }
                }
            }
        });
    u
}

/// `Bᵀ·d·B` of every A×A patch of one input channel `plane` (`h × w`) for
/// the tiles in tile rows `tys` (`tw` tiles per row): position p of tile t
/// goes to `dst[p·T + t]`, T = tiles in `tys`.
fn transform_input<const A: usize, const M: usize, K: Tiling<A, M>>(
    plane: &[f32],
    h: usize,
    w: usize,
    tw: usize,
    tys: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let nt = tys.len() * tw;
    let ty0 = tys.start;
    for ty in tys {
        // The A input rows of this tile row (None outside the image).
        let src: [Option<&[f32]>; A] = from_fn(|r| {
            let iy = (M * ty + r).checked_sub(1)?;
            plane.get(iy * w..(iy + 1) * w).filter(|_| iy < h)
        });
        for tx in 0..tw {
            let mut d = [[0f32; A]; A];
            let interior = tx >= 1 && M * tx + A - 1 <= w;
            for (drow, srow) in d.iter_mut().zip(&src) {
                let Some(srow) = srow else { continue };
                if interior {
                    drow.copy_from_slice(&srow[M * tx - 1..M * tx - 1 + A]);
                } else {
                    for (c, v) in drow.iter_mut().enumerate() {
                        if let Some(ix) = (M * tx + c).checked_sub(1) {
                            *v = srow.get(ix).copied().unwrap_or(0.0);
                        }
                    }
                }
            }
            // Bᵀ·d on columns (cols[c][r] is row r of column c), then ·B
            // on the rows.
            let cols: [[f32; A]; A] = from_fn(|c| K::bt(from_fn(|r| d[r][c])));
            let tile = (ty - ty0) * tw + tx;
            for r in 0..A {
                let row = K::bt(from_fn(|c| cols[c][r]));
                for (c, v) in row.into_iter().enumerate() {
                    dst[(A * r + c) * nt + tile] = v;
                }
            }
        }
    }
}

/// `Aᵀ·M·A + bias` for the tiles of one output channel: `m[p·T + t]` is
/// position p of tile t; writes the M×M outputs into `rows`, the plane's
/// rows from `M·tys.start` on (row length `w`, at most `h` rows in all).
fn transform_output<const A: usize, const M: usize, K: Tiling<A, M>>(
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
    for ty in tys {
        for tx in 0..tw {
            let tile = (ty - ty0) * tw + tx;
            // Aᵀ·M on columns: cols[c][i] is row i, column c of Aᵀ·M.
            let cols: [[f32; M]; A] = from_fn(|c| K::at(from_fn(|r| m[(A * r + c) * nt + tile])));
            let s: [[f32; A]; M] = from_fn(|i| from_fn(|c| cols[c][i]));
            for (i, srow) in s.into_iter().enumerate() {
                let oy = M * ty + i;
                if oy >= h {
                    continue;
                }
                let y = K::at(srow);
                let line = &mut rows[(oy - M * ty0) * w..(oy - M * ty0 + 1) * w];
                for (j, v) in y.into_iter().enumerate() {
                    if let Some(o) = line.get_mut(M * tx + j) {
                        *o = v + bias;
                    }
                }
            }
        }
    }
}

/// The A² products `M[p] = U[p]·V[p]` for a block of `nt` tiles.
fn products<const A: usize>(
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    g: &ConvGeometry,
    nt: usize,
    threaded: bool,
) {
    let positions = A * A;
    for p in 0..positions {
        let a = frame_view(u, p * g.c_in, g.c_out, g.c_in, positions * g.c_in);
        let b = frame_view(v, p * nt, g.c_in, nt, positions * nt);
        let c = frame_view_mut(m, p * nt, g.c_out, nt, positions * nt);
        if threaded {
            gemm(a, b, 0.0, c);
        } else {
            let mut c = c;
            general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        }
    }
}

/// 3×3, stride-1, pad-1 convolution of every frame by Winograd (F(4×4, 3×3)
/// on frames of at least `F4_MIN_PIXELS`, F(2×2, 3×3) below); same
/// contract as [`super::conv::conv2d_frames`] for geometries where
/// [`applies`] holds.
pub fn conv3x3_frames(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    if g.h * g.w >= F4_MIN_PIXELS {
        winograd_frames::<6, 4, F4>(x, weight, bias, g)
    } else {
        winograd_frames::<4, 2, F2>(x, weight, bias, g)
    }
}

/// [`conv3x3_frames`] with the variant `K`.
fn winograd_frames<const A: usize, const M: usize, K: Tiling<A, M>>(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let (h, w) = (g.h, g.w);
    let hw = h * w;
    let positions = A * A;
    let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
    let u = transform_weights::<A, M, K>(weight, g.c_out, g.c_in);
    let mut out = vec![0f32; g.batch * g.c_out * g.frames * hw];
    let threads = rayon::current_num_threads();
    let row_floats = positions * (g.c_in + g.c_out) * tw;
    let tile_rows = (BLOCK_FLOATS / row_floats.max(1)).clamp(1, th);
    // Blocks of tile rows run as independent tasks when there are enough
    // of them to keep every thread busy; otherwise one block spans the
    // frame and the transforms and products are split across threads.
    let blocked = threads == 1 || th.div_ceil(tile_rows) >= 2 * threads;
    let tile_rows = if !blocked {
        th
    } else if threads == 1 {
        // Equal blocks: a short last block would be a narrow product.
        th.div_ceil(th.div_ceil(tile_rows))
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
                    .axis_chunks_iter_mut(Axis(1), M * tile_rows * w)
                    .enumerate()
                    .collect();
                parts.into_par_iter().for_each(|(blk, mut dst)| {
                    let ty0 = blk * tile_rows;
                    let tys = ty0..(ty0 + tile_rows).min(th);
                    let nt = tys.len() * tw;
                    let mut v = vec![0f32; positions * g.c_in * nt];
                    for (ci, chunk) in v.chunks_mut(positions * nt).enumerate() {
                        transform_input::<A, M, K>(plane(ci), h, w, tw, tys.clone(), chunk);
                    }
                    let mut m = vec![0f32; positions * g.c_out * nt];
                    products::<A>(&u, &v, &mut m, g, nt, false);
                    for (co, (chunk, mut row)) in
                        m.chunks(positions * nt).zip(dst.rows_mut()).enumerate()
                    {
                        // Frame rows are contiguous (unit column stride).
                        let Some(rows) = row.as_slice_mut() else {
                            unreachable_view()
                        };
                        let bias = bias_of(co);
                        transform_output::<A, M, K>(chunk, bias, h, w, tw, tys.clone(), rows);
                    }
                });
            } else {
                let nt = th * tw;
                let mut v = vec![0f32; positions * g.c_in * nt];
                v.par_chunks_mut(positions * nt)
                    .enumerate()
                    .for_each(|(ci, chunk)| {
                        transform_input::<A, M, K>(plane(ci), h, w, tw, 0..th, chunk)
                    });
                let mut m = vec![0f32; positions * g.c_out * nt];
                products::<A>(&u, &v, &mut m, g, nt, true);
                let o_off = b * g.c_out * g.frames * hw;
                out[o_off..o_off + g.c_out * g.frames * hw]
                    .par_chunks_mut(g.frames * hw)
                    .zip(m.par_chunks(positions * nt))
                    .enumerate()
                    .for_each(|(co, (chan, chunk))| {
                        let rows = &mut chan[f * hw..(f + 1) * hw];
                        transform_output::<A, M, K>(chunk, bias_of(co), h, w, tw, 0..th, rows);
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

    /// Both Winograd variants against the im2col convolution on random
    /// data: odd and even sizes (partial tiles), 1×1 and 1×N images, batches
    /// and frames, with and without bias; run on one thread (blocks of tile rows, several blocks for the
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
            (1, 9, 6, 2, 37, 38),
            (1, 64, 64, 1, 36, 36),
        ];
        type Kernel = fn(&[f32], &[f32], Option<&[f32]>, &ConvGeometry) -> Vec<f32>;
        let kernels: [(&str, Kernel); 2] = [
            ("F(2x2)", winograd_frames::<4, 2, F2>),
            ("F(4x4)", winograd_frames::<6, 4, F4>),
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
                let want = conv2d_im2col(&x, &wt, bias, &g, h, w);
                for (name, kernel) in kernels {
                    let got = pool.install(|| kernel(&x, &wt, bias, &g));
                    let err = relative_error(&got, &want);
                    println!("{name}, {threads} threads, {g:?}: {err:e}");
                    assert!(err < 1e-5, "{name}, {threads} threads, {g:?}: {err}");
                }
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
        let y = winograd_frames::<4, 2, F2>(&x, &wt, None, &g);
        assert!(relative_error(&y, &x) < 1e-6);
        let y = winograd_frames::<6, 4, F4>(&x, &wt, None, &g);
        assert!(relative_error(&y, &x) < 1e-6);
    }
}

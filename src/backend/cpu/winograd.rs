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

use super::conv::{split_cols, ConvGeometry};
use super::gemm::{matmul, matmul_seq, view, view_mut};
use super::{output_buffer, simd, with_scratch};
use rayon::prelude::*;
use std::array::from_fn;
use std::ops::{Add, Div, Mul, Sub};

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

/// Values the input and output transforms combine: one f32, or [`Lanes`]
/// of several tiles at once.
trait Lane:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<f32, Output = Self> + Div<f32, Output = Self>
{
}

impl Lane for f32 {}

/// Tiles handled together by the transform passes: one AVX-512 register of
/// f32, two AVX2 ones.
const LANES: usize = 16;

/// The same transform entry of [`LANES`] consecutive tiles. Its operators
/// are element-wise loops over a fixed-size array, which vectorise.
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

impl Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(mut self, o: Lanes) -> Lanes {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
        self
    }
}

impl Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(mut self, o: Lanes) -> Lanes {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a -= b;
        }
        self
    }
}

impl Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(mut self, k: f32) -> Lanes {
        for a in self.0.iter_mut() {
            *a *= k;
        }
        self
    }
}

impl Div<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn div(mut self, k: f32) -> Lanes {
        for a in self.0.iter_mut() {
            *a /= k;
        }
        self
    }
}

impl Lane for Lanes {}

impl Lanes {
    /// `src[start..start + LANES]`.
    #[inline(always)]
    fn load(src: &[f32], start: usize) -> Lanes {
        let mut v = [0f32; LANES];
        v.copy_from_slice(&src[start..start + LANES]);
        Lanes(v)
    }

    /// Writes the lanes to `dst[start..start + LANES]`.
    #[inline(always)]
    fn store(self, dst: &mut [f32], start: usize) {
        dst[start..start + LANES].copy_from_slice(&self.0);
    }
}

/// `dst[o][t] = f(src[0][t], …, src[I−1][t])[o]` for t in 0..n (a multiple
/// of [`LANES`], see [`padded_tiles`]), [`LANES`] tiles at a time: one pass
/// of a transform over rows that run across tiles. (Plain loops rather than
/// `from_fn`/`map`, whose closures are not always inlined, so the lanes stay
/// in registers.)
#[inline(always)]
fn across_tiles<const I: usize, const O: usize>(
    src: [&[f32]; I],
    dst: [&mut [f32]; O],
    n: usize,
    f: impl Fn([Lanes; I]) -> [Lanes; O],
) {
    let mut dst = dst;
    for start in (0..n).step_by(LANES) {
        let mut x = [Lanes([0.0; LANES]); I];
        for (x, s) in x.iter_mut().zip(src) {
            *x = Lanes::load(s, start);
        }
        let y = f(x);
        for (d, v) in dst.iter_mut().zip(y) {
            v.store(d, start);
        }
    }
}

/// The three transforms of one Winograd variant, F(M×M, 3×3) with A = M + 2
/// interpolation points per axis, each acting on one row or column.
trait Tiling<const A: usize, const M: usize> {
    /// `G·g` for one 3-tap kernel column.
    fn lift<T: Lane>(g: [T; 3]) -> [T; A];
    /// `Bᵀ·d` for one column of an input patch.
    fn bt<T: Lane>(d: [T; A]) -> [T; A];
    /// `Aᵀ·m` for one column of a product tile.
    fn at<T: Lane>(m: [T; A]) -> [T; M];
}

/// F(2×2, 3×3), points 0, ±1, ∞.
struct F2;

impl Tiling<4, 2> for F2 {
    #[inline(always)]
    fn lift<T: Lane>([a, b, c]: [T; 3]) -> [T; 4] {
        [a, (a + b + c) * 0.5, (a - b + c) * 0.5, c]
    }
    #[inline(always)]
    fn bt<T: Lane>(d: [T; 4]) -> [T; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }
    #[inline(always)]
    fn at<T: Lane>(v: [T; 4]) -> [T; 2] {
        [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
    }
}

/// F(4×4, 3×3), points 0, ±1, ±2, ∞ (the 1/4 and 1/6, 1/24 scalings sit in
/// `G`, so input and output transforms have small integer entries).
struct F4;

impl Tiling<6, 4> for F4 {
    #[inline(always)]
    fn lift<T: Lane>([a, b, c]: [T; 3]) -> [T; 6] {
        let s = a + c;
        let t = a + c * 4.0;
        [
            a * 0.25,
            (s + b) / -6.0,
            (s - b) / -6.0,
            (t + b * 2.0) / 24.0,
            (t - b * 2.0) / 24.0,
            c,
        ]
    }
    #[inline(always)]
    fn bt<T: Lane>(d: [T; 6]) -> [T; 6] {
        [
            d[0] * 4.0 - d[2] * 5.0 + d[4],
            (d[1] + d[2]) * -4.0 + d[3] + d[4],
            (d[1] - d[2]) * 4.0 - d[3] + d[4],
            (d[3] - d[1]) * 2.0 - d[2] + d[4],
            (d[1] - d[3]) * 2.0 - d[2] + d[4],
            d[1] * 4.0 - d[3] * 5.0 + d[5],
        ]
    }
    #[inline(always)]
    fn at<T: Lane>(v: [T; 6]) -> [T; 4] {
        let (s1, d1) = (v[1] + v[2], v[1] - v[2]);
        let (s2, d2) = (v[3] + v[4], v[3] - v[4]);
        [
            v[0] + s1 + s2,
            d1 + d2 * 2.0,
            s1 + s2 * 4.0,
            d1 + d2 * 8.0 + v[5],
        ]
    }
}

/// `G·g·Gᵀ` for every `[C_out, C_in, 3, 3]` kernel, written to `u` as
/// `[C_out, A², C_in]`: one output channel's A² rows lie together, so the
/// writes stay in cache.
fn transform_weights<const A: usize, const M: usize, K: Tiling<A, M>>(
    weight: &[f32],
    c_in: usize,
    u: &mut [f32],
) {
    u.par_chunks_mut(A * A * c_in)
        .zip(weight.par_chunks(9 * c_in))
        .for_each(|(dst, kernels)| {
            simd(
                #[inline(always)]
                || {
                    // [`LANES`] input channels at a time, so the lifts are
                    // vector operations and the stores contiguous.
                    let groups = kernels.chunks_exact(9 * LANES);
                    let rest = groups.remainder();
                    for (grp, taps) in groups.enumerate() {
                        let mut t = [Lanes([0.0; LANES]); 9];
                        for (l, g) in taps.chunks_exact(9).enumerate() {
                            for (k, &v) in g.iter().enumerate() {
                                t[k].0[l] = v;
                            }
                        }
                        let c0 = K::lift([t[0], t[3], t[6]]);
                        let c1 = K::lift([t[1], t[4], t[7]]);
                        let c2 = K::lift([t[2], t[5], t[8]]);
                        for i in 0..A {
                            let row = K::lift([c0[i], c1[i], c2[i]]);
                            for (j, v) in row.into_iter().enumerate() {
                                v.store(dst, (A * i + j) * c_in + grp * LANES);
                            }
                        }
                    }
                    let ci0 = c_in - rest.len() / 9;
                    for (ci, g) in (ci0..).zip(rest.chunks_exact(9)) {
                        let c0 = K::lift([g[0], g[3], g[6]]);
                        let c1 = K::lift([g[1], g[4], g[7]]);
                        let c2 = K::lift([g[2], g[5], g[8]]);
                        for i in 0..A {
                            let row = K::lift([c0[i], c1[i], c2[i]]);
                            for (j, v) in row.into_iter().enumerate() {
                                dst[(A * i + j) * c_in + ci] = v;
                            }
                        }
                    }
                },
            )
        });
}

/// Row length of the transform buffers for `nt` tiles: a whole number of
/// [`LANES`], so every transform pass runs on full vectors (the padding
/// entries are computed but never read back).
fn padded_tiles(nt: usize) -> usize {
    nt.next_multiple_of(LANES)
}

/// Floats of scratch that [`transform_input`] and [`transform_output`] need
/// for `nt` tiles, `tw` per tile row.
fn transform_scratch_len<const A: usize, const M: usize>(nt: usize, tw: usize) -> usize {
    let ts = padded_tiles(nt);
    (A * A * ts + M * tw + A).max((A + M) * M * ts)
}

/// `A` slices of length `n` (consecutive in `buf`), for loops that write
/// one element of each per iteration.
#[inline(always)]
fn split_n<const A: usize>(buf: &mut [f32], n: usize) -> [&mut [f32]; A] {
    let mut parts = buf.chunks_exact_mut(n.max(1));
    from_fn(|_| parts.next().unwrap_or_default())
}

/// `Bᵀ·d·B` of every A×A patch of one input channel `plane` (`h × w`) for
/// the tiles in tile rows `tys` (`tw` tiles per row): position p of tile t
/// goes to `dst[p·T + t]`, T = [`padded_tiles`] of the tiles in `tys`.
///
/// The patches are first gathered into `dst` as `d[r][c]` rows over the
/// tiles; both transform passes then run along those rows, i.e. across
/// tiles, so they vectorise. Inlined so that callers can compile it inside
/// [`simd`]; `scratch` holds [`transform_scratch_len`] floats.
#[inline(always)]
fn transform_input<const A: usize, const M: usize, K: Tiling<A, M>>(
    plane: &[f32],
    h: usize,
    w: usize,
    tw: usize,
    tys: std::ops::Range<usize>,
    dst: &mut [f32],
    scratch: &mut [f32],
) {
    let ts = padded_tiles(tys.len() * tw);
    let ty0 = tys.start;
    let dst = &mut dst[..A * A * ts];
    // One input row with a zero column on the left and zeros past the
    // right edge: tile tx reads columns M·tx .. M·tx + A of it.
    let (padded, t) = scratch.split_at_mut(M * tw + A);
    let t = &mut t[..A * A * ts];
    padded.fill(0.0);
    for ty in tys {
        let base = (ty - ty0) * tw;
        for r in 0..A {
            let row = (M * ty + r)
                .checked_sub(1)
                .filter(|&iy| iy < h)
                .and_then(|iy| plane.get(iy * w..(iy + 1) * w));
            let Some(row) = row else {
                for c in 0..A {
                    dst[(A * r + c) * ts + base..][..tw].fill(0.0);
                }
                continue;
            };
            padded[1..1 + w].copy_from_slice(row);
            // Column c of tile tx is padded[M·tx + c]: entry c mod M of the
            // tile's M-wide group (c < M) or of the next one (c ≥ M). One
            // loop over the groups lets the compiler de-interleave them with
            // vector shuffles.
            let mut outs = split_n::<A>(&mut dst[A * r * ts..(A * r + A) * ts], ts);
            for o in outs.iter_mut() {
                *o = &mut std::mem::take(o)[base..base + tw];
            }
            let groups = padded.chunks_exact(M).zip(padded[M..].chunks_exact(M));
            for (tx, (group, next)) in groups.take(tw).enumerate() {
                for (c, o) in outs.iter_mut().enumerate() {
                    o[tx] = if c < M { group[c] } else { next[c - M] };
                }
            }
        }
    }
    // Bᵀ·d on the columns: t[(A·c + i)·T + tile] = (Bᵀ·d)[i][c].
    for c in 0..A {
        let src: [&[f32]; A] = from_fn(|r| &dst[(A * r + c) * ts..][..ts]);
        let outs = split_n::<A>(&mut t[A * c * ts..(A * c + A) * ts], ts);
        across_tiles(
            src,
            outs,
            ts,
            #[inline(always)]
            |x| K::bt(x),
        );
    }
    // ·B on the rows: dst[(A·i + j)·T + tile] = (Bᵀ·d·B)[i][j].
    for i in 0..A {
        let src: [&[f32]; A] = from_fn(|c| &t[(A * c + i) * ts..][..ts]);
        let outs = split_n::<A>(&mut dst[A * i * ts..(A * i + A) * ts], ts);
        across_tiles(
            src,
            outs,
            ts,
            #[inline(always)]
            |x| K::bt(x),
        );
    }
}

/// `Aᵀ·M·A + bias` for the tiles of one output channel: `m[p·T + t]` is
/// position p of tile t (T as in [`transform_input`]); writes the M×M outputs into `rows`, the plane's
/// rows from `M·tys.start` on (row length `w`, at most `h` rows in all).
/// Both passes run across tiles as in [`transform_input`]; `scratch` holds
/// [`transform_scratch_len`] floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output<const A: usize, const M: usize, K: Tiling<A, M>>(
    m: &[f32],
    bias: f32,
    h: usize,
    w: usize,
    tw: usize,
    tys: std::ops::Range<usize>,
    rows: &mut [f32],
    scratch: &mut [f32],
) {
    let ts = padded_tiles(tys.len() * tw);
    let ty0 = tys.start;
    let (t, y) = scratch.split_at_mut(A * M * ts);
    let y = &mut y[..M * M * ts];
    // Aᵀ·M on the columns: t[(M·c + i)·T + tile] = (Aᵀ·M)[i][c].
    for c in 0..A {
        let src: [&[f32]; A] = from_fn(|r| &m[(A * r + c) * ts..][..ts]);
        let outs = split_n::<M>(&mut t[M * c * ts..(M * c + M) * ts], ts);
        across_tiles(
            src,
            outs,
            ts,
            #[inline(always)]
            |x| K::at(x),
        );
    }
    // ·A on the rows, plus bias: y[(M·i + j)·T + tile].
    let bias = Lanes([bias; LANES]);
    for i in 0..M {
        let src: [&[f32]; A] = from_fn(|c| &t[(M * c + i) * ts..][..ts]);
        let outs = split_n::<M>(&mut y[M * i * ts..(M * i + M) * ts], ts);
        across_tiles(
            src,
            outs,
            ts,
            #[inline(always)]
            |row| {
                let mut y = K::at(row);
                for v in y.iter_mut() {
                    *v = *v + bias;
                }
                y
            },
        );
    }
    // Scatter: output row M·ty + i, column M·tx + j.
    for ty in tys {
        let base = (ty - ty0) * tw;
        for i in 0..M {
            let oy = M * ty + i;
            if oy >= h {
                break;
            }
            let line = &mut rows[(oy - M * ty0) * w..(oy - M * ty0 + 1) * w];
            let src: [&[f32]; M] = from_fn(|j| &y[(M * i + j) * ts + base..][..tw]);
            // Whole M-wide groups of the row, then the columns of a last
            // partial tile.
            let mut groups = line.chunks_exact_mut(M);
            let mut full = 0;
            for (tx, group) in groups.by_ref().take(tw).enumerate() {
                for (o, s) in group.iter_mut().zip(&src) {
                    *o = s[tx];
                }
                full = tx + 1;
            }
            for (o, s) in groups.into_remainder().iter_mut().zip(&src) {
                if let Some(&v) = s.get(full) {
                    *o = v;
                }
            }
        }
    }
}

/// The A² products `M[p] = U[p]·V[p]` for a block of `nt` tiles (rows of
/// [`padded_tiles`] length in `v` and `m`).
fn products<const A: usize>(
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    g: &ConvGeometry,
    nt: usize,
    threaded: bool,
) {
    let positions = A * A;
    let ts = padded_tiles(nt);
    for p in 0..positions {
        let a = view(u, p * g.c_in, g.c_out, g.c_in, positions * g.c_in);
        let b = view(v, p * ts, g.c_in, nt, positions * ts);
        let c = view_mut(m, p * ts, g.c_out, nt, positions * ts);
        if threaded {
            matmul(c, a, b, false);
        } else {
            matmul_seq(c, a, b, false);
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
    with_scratch(positions * g.c_out * g.c_in, |u| {
        transform_weights::<A, M, K>(weight, g.c_in, u);
        let u = &*u;
        let mut out = output_buffer(g.batch * g.c_out * g.frames * hw);
        let threads = rayon::current_num_threads();
        let row_floats = positions * (g.c_in + g.c_out) * tw;
        // Every block's products stream all of U, so when U outgrows a block
        // of tiles (many channels, small frames) blocks grow with it and U is
        // read fewer times.
        let budget = BLOCK_FLOATS.max(positions * g.c_in * g.c_out);
        let tile_rows = (budget / row_floats.max(1)).clamp(1, th);
        // Blocks of tile rows run as independent tasks (transforms and
        // products of a block on one thread, no synchronisation inside a
        // convolution) whenever every thread can get one; only frames with
        // fewer tile rows than threads are transformed and multiplied
        // frame-wide, with each step split across threads.
        let blocked = threads == 1 || th >= threads;
        let tile_rows = if !blocked {
            th
        } else if threads == 1 {
            // Equal blocks: a short last block would be a narrow product.
            th.div_ceil(th.div_ceil(tile_rows))
        } else {
            // The largest block height (at most the cache budget, and at
            // least one block per thread) whose block count is a multiple
            // of the thread count, so the threads finish together.
            let most = tile_rows.min(th.div_ceil(threads));
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
                    let dst = view_mut(&mut out, o_off, g.c_out, hw, g.frames * hw);
                    let parts = split_cols(dst, M * tile_rows * w);
                    parts.into_par_iter().enumerate().for_each(|(blk, dst)| {
                        let ty0 = blk * tile_rows;
                        let tys = ty0..(ty0 + tile_rows).min(th);
                        let nt = tys.len() * tw;
                        let ts = padded_tiles(nt);
                        with_scratch(transform_scratch_len::<A, M>(nt, tw), |tmp| {
                            with_scratch(positions * g.c_in * ts, |v| {
                                simd(
                                    #[inline(always)]
                                    || {
                                        for (ci, chunk) in v.chunks_mut(positions * ts).enumerate()
                                        {
                                            transform_input::<A, M, K>(
                                                plane(ci),
                                                h,
                                                w,
                                                tw,
                                                tys.clone(),
                                                chunk,
                                                tmp,
                                            );
                                        }
                                    },
                                );
                                with_scratch(positions * g.c_out * ts, |m| {
                                    products::<A>(u, v, m, g, nt, false);
                                    for (co, (chunk, row)) in
                                        m.chunks(positions * ts).zip(dst.row_iter_mut()).enumerate()
                                    {
                                        // Frame rows are contiguous (unit column stride).
                                        let Some(rows) =
                                            row.try_as_row_major_mut().map(|r| r.as_slice_mut())
                                        else {
                                            unreachable!(
                                                "output frame rows have unit column stride"
                                            )
                                        };
                                        let bias = bias_of(co);
                                        simd(
                                            #[inline(always)]
                                            || {
                                                transform_output::<A, M, K>(
                                                    chunk,
                                                    bias,
                                                    h,
                                                    w,
                                                    tw,
                                                    tys.clone(),
                                                    rows,
                                                    tmp,
                                                )
                                            },
                                        );
                                    }
                                });
                            });
                        });
                    });
                } else {
                    let nt = th * tw;
                    let ts = padded_tiles(nt);
                    with_scratch(positions * g.c_in * ts, |v| {
                        v.par_chunks_mut(positions * ts)
                            .enumerate()
                            .for_each(|(ci, chunk)| {
                                with_scratch(transform_scratch_len::<A, M>(nt, tw), |tmp| {
                                    simd(
                                        #[inline(always)]
                                        || {
                                            transform_input::<A, M, K>(
                                                plane(ci),
                                                h,
                                                w,
                                                tw,
                                                0..th,
                                                chunk,
                                                tmp,
                                            )
                                        },
                                    )
                                })
                            });
                        with_scratch(positions * g.c_out * ts, |m| {
                            products::<A>(u, v, m, g, nt, true);
                            let o_off = b * g.c_out * g.frames * hw;
                            out[o_off..o_off + g.c_out * g.frames * hw]
                                .par_chunks_mut(g.frames * hw)
                                .zip(m.par_chunks(positions * ts))
                                .enumerate()
                                .for_each(|(co, (chan, chunk))| {
                                    let rows = &mut chan[f * hw..(f + 1) * hw];
                                    let bias = bias_of(co);
                                    with_scratch(transform_scratch_len::<A, M>(nt, tw), |tmp| {
                                        simd(
                                            #[inline(always)]
                                            || {
                                                transform_output::<A, M, K>(
                                                    chunk,
                                                    bias,
                                                    h,
                                                    w,
                                                    tw,
                                                    0..th,
                                                    rows,
                                                    tmp,
                                                )
                                            },
                                        )
                                    });
                                });
                        });
                    });
                }
            }
        }
        out
    })
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
                let want = conv2d_im2col(&x, &wt, bias, None, &g, h, w);
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

//! Full 3-D convolutions on `[B, C, D, H, W]` buffers (PyTorch `Conv3d` and
//! `ConvTranspose3d`), for the 3-D nnU-Net.
//!
//! The forward convolution lowers the input to vol2col columns — one row per
//! input channel and kernel tap `(c, kz, ky, kx)`, one column per output
//! voxel — and multiplies them by the weight matrix `[O, C·kd·kh·kw]`. The
//! columns are built for a block of output rows at a time (a row is one
//! `(oz, oy)` line of `Wo` voxels), so the column buffer stays bounded however
//! large the volume. Special cases take cheaper routes: 1×1×1 is one matrix
//! product; kernel depth 1 (stride 1, no depth padding) is the per-frame 2-D
//! convolution of [`super::conv`]; 3×3 in-plane stride-1 kernels on frames
//! large enough for Winograd are a sum over depth taps of per-frame Winograd
//! convolutions (holding one partial sum the size of the output).
//!
//! The transposed convolution is the adjoint: columns `Wᵀ·x` scattered back
//! by [`col2vol`] (the adjoint of [`vol2col`], which a backward pass of the
//! forward convolution reuses for the input gradient). With kernel = stride
//! and no padding — nnU-Net's upsampling — the output blocks do not overlap
//! and [`scatter_blocks`] writes each output voxel once.

use super::conv::{self, frame_view, frame_view_mut, ConvGeometry};
use super::gemm::gemm;
use super::winograd;
use ndarray::{linalg::general_mat_mul, s, Axis};
use rayon::prelude::*;
use std::ops::Range;

pub use crate::backend::desc::Conv3dGeometry;

/// Geometry helpers used only by the CPU kernels.
impl Conv3dGeometry {
    /// The per-frame 2-D convolution over the `D` frames with the in-plane
    /// kernel, stride and padding.
    fn frames_geometry(&self) -> ConvGeometry {
        ConvGeometry {
            batch: self.batch,
            c_in: self.c_in,
            c_out: self.c_out,
            frames: self.input[0],
            h: self.input[1],
            w: self.input[2],
            kh: self.kernel[1],
            kw: self.kernel[2],
            stride: (self.stride[1], self.stride[2]),
            pad: (self.pad[1], self.pad[2]),
        }
    }

    /// The input channel and kernel tap `(c, kz, ky, kx)` of vol2col row `r`.
    fn tap(&self, r: usize) -> (usize, usize, usize, usize) {
        let [kd, kh, kw] = self.kernel;
        (
            r / (kd * kh * kw),
            (r / (kh * kw)) % kd,
            (r / kw) % kh,
            r % kw,
        )
    }
}

/// Floats in one vol2col tile built and consumed by one task (1 MiB), so it
/// stays in cache between being written and being packed by the product.
const COLS_TILE_FLOATS: usize = 1 << 18;

/// Fewest output voxels per tile; narrower products cost more in repacking
/// the weights than the cache saves.
const MIN_TILE_COLS: usize = 256;

/// Largest column buffer (16 MiB) of the sequential-chunk path and of the
/// transposed convolutions.
const MAX_CHUNK_FLOATS: usize = 1 << 22;

/// Forward convolution. `x`: `[B, C_in, D, H, W]`, `weight`: `[C_out, C_in,
/// kd, kh, kw]`, `bias`: `[C_out]`. Returns `[B, C_out, Do, Ho, Wo]`. The
/// caller has validated the sizes and that [`Conv3dGeometry::conv_out`] is
/// `Some`.
pub fn conv3d(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &Conv3dGeometry) -> Vec<f32> {
    let Some(out) = g.conv_out() else {
        return Vec::new();
    };
    if g.batch * g.c_in * g.c_out == 0 {
        return bias_only(bias, g, out);
    }
    if g.kernel == [1, 1, 1] && g.stride == [1, 1, 1] && g.pad == [0, 0, 0] {
        return conv3d_pointwise(x, weight, bias, g);
    }
    if g.kernel[0] == 1 && g.stride[0] == 1 && g.pad[0] == 0 {
        // [O, C, 1, kh, kw] is laid out as the per-frame [O, C, kh, kw].
        return conv::conv2d_frames(x, weight, bias, &g.frames_geometry());
    }
    if g.stride[0] == 1 && winograd::applies(&g.frames_geometry()) {
        return conv3d_by_depth_taps(x, weight, bias, g, out);
    }
    conv3d_vol2col(x, weight, bias, g, out)
}

/// The output of a convolution with no input channels (or an empty output):
/// the bias everywhere.
fn bias_only(bias: Option<&[f32]>, g: &Conv3dGeometry, out_dims: [usize; 3]) -> Vec<f32> {
    let n: usize = out_dims.iter().product();
    let mut out = vec![0f32; g.batch * g.c_out * n];
    if n > 0 {
        for ob in out.chunks_mut(g.c_out * n) {
            fill_bias(ob, n, bias);
        }
    }
    out
}

/// 1×1×1 convolution: per batch item one product `W[O, C] · x[C, D·H·W]`.
fn conv3d_pointwise(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Conv3dGeometry,
) -> Vec<f32> {
    let n: usize = g.input.iter().product();
    let mut out = vec![0f32; g.batch * g.c_out * n];
    let wmat = frame_view(weight, 0, g.c_out, g.c_in, g.c_in);
    for (b, ob) in out.chunks_mut(g.c_out * n).enumerate() {
        let beta = fill_bias(ob, n, bias);
        let rhs = frame_view(x, b * g.c_in * n, g.c_in, n, n);
        gemm(wmat, rhs, beta, frame_view_mut(ob, 0, g.c_out, n, n));
    }
    out
}

/// Fills each `plane`-long channel block of `out` (one batch item) with its
/// bias; returns the `beta` a product accumulating onto it needs.
fn fill_bias(out: &mut [f32], plane: usize, bias: Option<&[f32]>) -> f32 {
    match bias {
        Some(bias) => {
            for (chan, &bv) in out.chunks_mut(plane).zip(bias) {
                chan.fill(bv);
            }
            1.0
        }
        None => 0.0,
    }
}

/// Stride-1-in-depth convolution as a sum over depth taps of per-frame 2-D
/// convolutions (which use Winograd for these kernels): the frame `oz` of
/// the output is `Σ_kz conv2d(x[oz + kz − pd], W[:, :, kz])`. Every tap
/// convolves all input frames once and the results are shifted into place.
fn conv3d_by_depth_taps(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
) -> Vec<f32> {
    let [kd, kh, kw] = g.kernel;
    let [d_out, ho, wo] = out_dims;
    let d_in = g.input[0];
    let frame = ho * wo;
    let mut out = vec![0f32; g.batch * g.c_out * d_out * frame];
    for ob in out.chunks_mut(g.c_out * d_out * frame) {
        fill_bias(ob, d_out * frame, bias);
    }
    let fg = g.frames_geometry();
    let tap_len = kh * kw;
    for kz in 0..kd {
        // W[:, :, kz] as a contiguous [O, C, kh, kw] kernel.
        let w_tap: Vec<f32> = weight
            .chunks(kd * tap_len)
            .flat_map(|taps| &taps[kz * tap_len..(kz + 1) * tap_len])
            .copied()
            .collect();
        let part = conv::conv2d_frames(x, &w_tap, None, &fg);
        // Output frames whose input frame oz + kz − pd lies inside the volume.
        let first = g.pad[0].saturating_sub(kz).min(d_out);
        let last = (d_in + g.pad[0]).saturating_sub(kz).clamp(first, d_out);
        if first == last {
            continue;
        }
        out.par_chunks_mut(d_out * frame)
            .zip(part.par_chunks(d_in * frame))
            .for_each(|(dst, src)| {
                let iz0 = first + kz - g.pad[0];
                let dst = &mut dst[first * frame..last * frame];
                let src = &src[iz0 * frame..][..dst.len()];
                for (o, v) in dst.iter_mut().zip(src) {
                    *o += v;
                }
            });
    }
    out
}

/// General forward convolution by vol2col tiles and matrix products.
fn conv3d_vol2col(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
) -> Vec<f32> {
    let [d_out, ho, wo] = out_dims;
    let kk = g.col_rows();
    let out_rows = d_out * ho;
    let n_out = out_rows * wo;
    let mut out = vec![0f32; g.batch * g.c_out * n_out];
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    for ob in out.chunks_mut(g.c_out * n_out) {
        fill_bias(ob, n_out, bias);
    }
    let tile_rows = (COLS_TILE_FLOATS / (kk * wo).max(1)).clamp(1, out_rows);
    let tiles = out_rows.div_ceil(tile_rows);
    if g.batch * tiles >= 2 * rayon::current_num_threads() && tile_rows * wo >= MIN_TILE_COLS {
        conv3d_tiles(x, weight, beta, g, out_dims, tile_rows, &mut out);
    } else {
        // Few or narrow tiles: larger chunks one after another, each filled
        // and multiplied by all threads.
        let chunk_rows = (MAX_CHUNK_FLOATS / (kk * wo).max(1)).clamp(1, out_rows);
        conv3d_chunks(x, weight, beta, g, out_dims, chunk_rows, &mut out);
    }
    out
}

/// [`conv3d_vol2col`] by independent tiles of `tile_rows` output rows, one
/// task each: vol2col of the tile, then a single-threaded product into its
/// output columns. `out` holds the bias when `beta` is 1.
fn conv3d_tiles(
    x: &[f32],
    weight: &[f32],
    beta: f32,
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    tile_rows: usize,
    out: &mut [f32],
) {
    let [d_out, ho, wo] = out_dims;
    let kk = g.col_rows();
    let (out_rows, n_out) = (d_out * ho, d_out * ho * wo);
    let n_in: usize = g.c_in * g.input.iter().product::<usize>();
    let wmat = frame_view(weight, 0, g.c_out, kk, kk);
    let mut parts = Vec::new();
    for (b, ob) in out.chunks_mut(g.c_out * n_out).enumerate() {
        // Tiles are split off by value so they outlive this loop.
        let mut rest = frame_view_mut(ob, 0, g.c_out, n_out, n_out);
        for t in 0..out_rows.div_ceil(tile_rows) {
            let width = (tile_rows * wo).min(rest.ncols());
            let (part, tail) = rest.split_at(Axis(1), width);
            parts.push((b, t, part));
            rest = tail;
        }
    }
    parts.into_par_iter().for_each(|(b, t, mut dst)| {
        let rows = t * tile_rows..((t + 1) * tile_rows).min(out_rows);
        let n = rows.len() * wo;
        let mut cols = vec![0f32; kk * n];
        vol2col_rows(&x[b * n_in..][..n_in], g, out_dims, rows, &mut cols);
        let rhs = frame_view(&cols, 0, kk, n, n);
        general_mat_mul(1.0, &wmat, &rhs, beta, &mut dst);
    });
}

/// [`conv3d_vol2col`] by chunks of `chunk_rows` output rows in turn, each
/// filled and multiplied by all threads; one column buffer of `chunk_rows`
/// rows is reused. `out` holds the bias when `beta` is 1.
fn conv3d_chunks(
    x: &[f32],
    weight: &[f32],
    beta: f32,
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    chunk_rows: usize,
    out: &mut [f32],
) {
    let [d_out, ho, wo] = out_dims;
    let kk = g.col_rows();
    let (out_rows, n_out) = (d_out * ho, d_out * ho * wo);
    let n_in: usize = g.c_in * g.input.iter().product::<usize>();
    let wmat = frame_view(weight, 0, g.c_out, kk, kk);
    let mut cols = vec![0f32; kk * chunk_rows * wo];
    for (b, ob) in out.chunks_mut(g.c_out * n_out).enumerate() {
        let mut dst = frame_view_mut(ob, 0, g.c_out, n_out, n_out);
        for r0 in (0..out_rows).step_by(chunk_rows.max(1)) {
            let rows = r0..(r0 + chunk_rows).min(out_rows);
            let n = rows.len() * wo;
            let cols = &mut cols[..kk * n];
            vol2col(&x[b * n_in..][..n_in], g, out_dims, rows.clone(), cols);
            let part = dst.slice_mut(s![.., rows.start * wo..rows.end * wo]);
            gemm(wmat, frame_view(cols, 0, kk, n, n), beta, part);
        }
    }
}

/// vol2col of one batch item `x` (`[C, D, H, W]`) for the output rows
/// `rows` (row `q` is output depth `q / Ho`, output row `q % Ho`) of a
/// convolution with output size `out_dims`: `cols` is `[C·kd·kh·kw,
/// rows.len()·Wo]`, its row `(c, kz, ky, kx)` holding the zero-padded input
/// voxel under that kernel tap for every output voxel of those rows. Rows of
/// `cols` are filled in parallel.
pub fn vol2col(
    x: &[f32],
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    rows: Range<usize>,
    cols: &mut [f32],
) {
    let n = rows.len() * out_dims[2];
    if n == 0 {
        return;
    }
    cols.par_chunks_mut(n)
        .enumerate()
        .for_each(|(r, line)| vol2col_row(x, g, out_dims, r, rows.clone(), line));
}

/// [`vol2col`] on the calling thread (for callers already running one task
/// per tile).
fn vol2col_rows(
    x: &[f32],
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    rows: Range<usize>,
    cols: &mut [f32],
) {
    let n = rows.len() * out_dims[2];
    if n == 0 {
        return;
    }
    for (r, line) in cols.chunks_mut(n).enumerate() {
        vol2col_row(x, g, out_dims, r, rows.clone(), line);
    }
}

/// Output columns `first..last` whose input column `ox·s + k − p` lies inside
/// `0..w`; the other columns read padding.
fn inside_columns(w: usize, wo: usize, k: usize, s: usize, p: usize) -> (usize, usize) {
    let first = p.saturating_sub(k).div_ceil(s).min(wo);
    let last = (w + p).saturating_sub(k).div_ceil(s).clamp(first, wo);
    (first, last)
}

/// The input index `o·s + k − p` of output index `o`, if inside `0..n`.
fn input_index(o: usize, s: usize, k: usize, p: usize, n: usize) -> Option<usize> {
    (o * s + k).checked_sub(p).filter(|&i| i < n)
}

/// One row `r` = `(c, kz, ky, kx)` of [`vol2col`].
fn vol2col_row(
    x: &[f32],
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    r: usize,
    rows: Range<usize>,
    dst: &mut [f32],
) {
    let [d, h, w] = g.input;
    let [_, ho, wo] = out_dims;
    let [sd, sh, sw] = g.stride;
    let [pd, ph, pw] = g.pad;
    let (c, kz, ky, kx) = g.tap(r);
    let vol = &x[c * d * h * w..(c + 1) * d * h * w];
    let (first, last) = inside_columns(w, wo, kx, sw, pw);
    for (line, q) in dst.chunks_mut(wo).zip(rows) {
        let (Some(iz), Some(iy)) = (
            input_index(q / ho, sd, kz, pd, d),
            input_index(q % ho, sh, ky, ph, h),
        ) else {
            line.fill(0.0);
            continue;
        };
        let src = &vol[(iz * h + iy) * w..(iz * h + iy + 1) * w];
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

/// The adjoint of [`vol2col`]: adds every column entry back onto the input
/// voxel it was read from. `vol` is one batch item `[C, D, H, W]` of `g`'s
/// input; `cols`, `out_dims` and `rows` are as for [`vol2col`]. Padding taps
/// are dropped. Channels are processed in parallel.
pub fn col2vol(
    cols: &[f32],
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    rows: Range<usize>,
    vol: &mut [f32],
) {
    let [d, h, w] = g.input;
    let [_, ho, wo] = out_dims;
    let [sd, sh, sw] = g.stride;
    let [pd, ph, pw] = g.pad;
    let taps: usize = g.kernel.iter().product();
    let n = rows.len() * wo;
    if n == 0 {
        return;
    }
    vol.par_chunks_mut(d * h * w)
        .zip(cols.par_chunks(taps * n))
        .enumerate()
        .for_each(|(c, (chan, cols))| {
            for (t, src) in cols.chunks(n).enumerate() {
                let (_, kz, ky, kx) = g.tap(c * taps + t);
                let (first, last) = inside_columns(w, wo, kx, sw, pw);
                if first == last {
                    continue;
                }
                for (line, q) in src.chunks(wo).zip(rows.clone()) {
                    let (Some(iz), Some(iy)) = (
                        input_index(q / ho, sd, kz, pd, d),
                        input_index(q % ho, sh, ky, ph, h),
                    ) else {
                        continue;
                    };
                    let dst = &mut chan[(iz * h + iy) * w..(iz * h + iy + 1) * w];
                    let ix0 = first * sw + kx - pw;
                    for (j, v) in line[first..last].iter().enumerate() {
                        dst[ix0 + j * sw] += v;
                    }
                }
            }
        });
}

/// Transposed convolution (the adjoint of [`conv3d`]). `x`: `[B, C_in, D, H,
/// W]`, `weight`: `[C_in, C_out, kd, kh, kw]` (PyTorch's `ConvTranspose3d`
/// layout), `bias`: `[C_out]`. Returns `[B, C_out, Do, Ho, Wo]` with sizes
/// from [`Conv3dGeometry::transposed_out`]; the caller validated them.
pub fn conv_transpose3d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Conv3dGeometry,
) -> Vec<f32> {
    let Some(out_dims) = g.transposed_out() else {
        return Vec::new();
    };
    if g.batch * g.c_in * g.c_out == 0 {
        return bias_only(bias, g, out_dims);
    }
    let kk = g.c_out * g.kernel.iter().product::<usize>();
    let in_rows = g.input[0] * g.input[1];
    let chunk_rows = (MAX_CHUNK_FLOATS / (kk * g.input[2]).max(1)).clamp(1, in_rows);
    conv_transpose3d_chunks(x, weight, bias, g, out_dims, chunk_rows)
}

/// [`conv_transpose3d`] by chunks of `chunk_rows` input rows (`(z, y)` lines
/// of x), each turned into columns by one product and scattered.
fn conv_transpose3d_chunks(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    chunk_rows: usize,
) -> Vec<f32> {
    // The forward convolution this one is the adjoint of maps the output
    // (C_out channels, out_dims) to x's shape; its columns are Wᵀ·x.
    let fwd = g.adjoint_of_transposed(out_dims);
    let blocks = g.kernel == g.stride && g.pad == [0, 0, 0];
    let [_, h, w] = g.input;
    let in_rows = g.input[0] * h;
    let n_in = in_rows * w;
    let n_out: usize = out_dims.iter().product();
    let kk = fwd.col_rows();
    let mut out = vec![0f32; g.batch * g.c_out * n_out];
    if !blocks {
        for ob in out.chunks_mut(g.c_out * n_out) {
            fill_bias(ob, n_out, bias);
        }
    }
    let wt = frame_view(weight, 0, g.c_in, kk, kk).reversed_axes();
    let mut cols = vec![0f32; kk * chunk_rows * w];
    for (b, ob) in out.chunks_mut(g.c_out * n_out).enumerate() {
        let xb = frame_view(x, b * g.c_in * n_in, g.c_in, n_in, n_in);
        for r0 in (0..in_rows).step_by(chunk_rows.max(1)) {
            let rows = r0..(r0 + chunk_rows).min(in_rows);
            let n = rows.len() * w;
            let cols = &mut cols[..kk * n];
            let rhs = xb.slice(s![.., rows.start * w..rows.end * w]);
            gemm(wt, rhs, 0.0, frame_view_mut(cols, 0, kk, n, n));
            if blocks {
                scatter_blocks(cols, &fwd, g.input, rows, bias, ob);
            } else {
                col2vol(cols, &fwd, g.input, rows, ob);
            }
        }
    }
    out
}

/// [`col2vol`] for kernel = stride and no padding, where every output voxel
/// receives exactly one column entry: writes `entry + bias` in output order.
/// `g` is the forward geometry (as for [`col2vol`]), `vol` one batch item of
/// its input, which it fills completely once all rows have been scattered.
pub fn scatter_blocks(
    cols: &[f32],
    g: &Conv3dGeometry,
    out_dims: [usize; 3],
    rows: Range<usize>,
    bias: Option<&[f32]>,
    vol: &mut [f32],
) {
    let [d, h, w] = g.input;
    let [_, ho, wo] = out_dims;
    let [kd, kh, kw] = g.kernel;
    let taps = kd * kh * kw;
    let n = rows.len() * wo;
    if n == 0 {
        return;
    }
    vol.par_chunks_mut(d * h * w)
        .zip(cols.par_chunks(taps * n))
        .enumerate()
        .for_each(|(c, (chan, cols))| {
            let bv = bias.map_or(0.0, |b| b[c]);
            for (i, q) in rows.clone().enumerate() {
                let (qz, qy) = (q / ho, q % ho);
                for kz in 0..kd {
                    for ky in 0..kh {
                        let (iz, iy) = (qz * kd + kz, qy * kh + ky);
                        let dst = &mut chan[(iz * h + iy) * w..(iz * h + iy + 1) * w];
                        for kx in 0..kw {
                            let t = (kz * kh + ky) * kw + kx;
                            let src = &cols[t * n + i * wo..t * n + (i + 1) * wo];
                            for (o, v) in dst.iter_mut().skip(kx).step_by(kw).zip(src) {
                                *o = v + bv;
                            }
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::random_normal as random;

    /// Direct definition of the 3-D convolution, accumulated in f64.
    fn naive_conv3d(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Conv3dGeometry) -> Vec<f32> {
        let [d_out, ho, wo] = g.conv_out().unwrap();
        let [d, h, wi] = g.input;
        let [kd, kh, kw] = g.kernel;
        let mut out = vec![0f32; g.batch * g.c_out * d_out * ho * wo];
        let mut idx = 0;
        for b in 0..g.batch {
            for co in 0..g.c_out {
                for oz in 0..d_out {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                            for ci in 0..g.c_in {
                                for kz in 0..kd {
                                    for ky in 0..kh {
                                        for kx in 0..kw {
                                            let iz = input_index(oz, g.stride[0], kz, g.pad[0], d);
                                            let iy = input_index(oy, g.stride[1], ky, g.pad[1], h);
                                            let ix = input_index(ox, g.stride[2], kx, g.pad[2], wi);
                                            let (Some(iz), Some(iy), Some(ix)) = (iz, iy, ix)
                                            else {
                                                continue;
                                            };
                                            let xi =
                                                (((b * g.c_in + ci) * d + iz) * h + iy) * wi + ix;
                                            let wj = (((co * g.c_in + ci) * kd + kz) * kh + ky)
                                                * kw
                                                + kx;
                                            acc += x[xi] as f64 * w[wj] as f64;
                                        }
                                    }
                                }
                            }
                            out[idx] = acc as f32;
                            idx += 1;
                        }
                    }
                }
            }
        }
        out
    }

    fn geom(
        input: [usize; 3],
        kernel: [usize; 3],
        stride: [usize; 3],
        pad: [usize; 3],
    ) -> Conv3dGeometry {
        Conv3dGeometry {
            batch: 2,
            c_in: 3,
            c_out: 4,
            input,
            kernel,
            stride,
            pad,
        }
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |e, (x, y)| e.max((x - y).abs()))
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// Every dispatch route (vol2col, kernel-depth-1 frames, pointwise,
    /// depth taps) matches the direct definition.
    #[test]
    fn conv3d_matches_direct_definition() {
        let cases = [
            geom([5, 7, 9], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
            geom([5, 7, 9], [3, 3, 3], [1, 2, 2], [1, 1, 1]),
            geom([5, 7, 9], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
            geom([5, 7, 9], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            geom([5, 7, 9], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
            geom([5, 7, 9], [1, 1, 1], [1, 1, 1], [0, 0, 0]),
            geom([5, 7, 9], [1, 1, 1], [2, 1, 2], [0, 0, 0]),
            geom([4, 6, 5], [2, 3, 1], [1, 2, 1], [0, 2, 1]),
            geom([3, 5, 4], [3, 3, 3], [1, 1, 1], [2, 0, 1]),
            // Frames of 16×16 and up take the Winograd depth-tap route.
            geom([3, 17, 18], [1, 3, 3], [1, 1, 1], [0, 1, 1]),
            geom([3, 17, 18], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
            geom([3, 16, 16], [2, 3, 3], [1, 1, 1], [0, 1, 1]),
        ];
        for (i, g) in cases.iter().enumerate() {
            let x = random(
                g.batch * g.c_in * g.input.iter().product::<usize>(),
                10 + i as u64,
            );
            let w = random(g.c_out * g.col_rows(), 20 + i as u64);
            let bias = random(g.c_out, 30 + i as u64);
            for bias in [Some(&bias[..]), None] {
                let got = conv3d(&x, &w, bias, g);
                let want = naive_conv3d(&x, &w, bias, g);
                let err = max_abs_diff(&got, &want);
                assert!(err < 1e-4, "{g:?}: {err}");
            }
        }
    }

    /// The parallel tile route and the sequential chunk route, with tiles and
    /// chunks that split output depths and the last one short.
    #[test]
    fn tiles_and_chunks_match_direct_definition() {
        for g in [
            geom([5, 7, 9], [3, 3, 3], [1, 1, 1], [1, 1, 1]),
            geom([6, 9, 8], [3, 3, 3], [2, 2, 1], [1, 0, 1]),
        ] {
            let out = g.conv_out().unwrap();
            let x = random(g.batch * g.c_in * g.input.iter().product::<usize>(), 1);
            let w = random(g.c_out * g.col_rows(), 2);
            let bias = random(g.c_out, 3);
            let want = naive_conv3d(&x, &w, Some(&bias), &g);
            let n_out = out.iter().product::<usize>();
            for rows in [1, 4, 5] {
                for tiled in [true, false] {
                    let mut got = vec![0f32; g.batch * g.c_out * n_out];
                    for ob in got.chunks_mut(g.c_out * n_out) {
                        fill_bias(ob, n_out, Some(&bias));
                    }
                    if tiled {
                        conv3d_tiles(&x, &w, 1.0, &g, out, rows, &mut got);
                    } else {
                        conv3d_chunks(&x, &w, 1.0, &g, out, rows, &mut got);
                    }
                    let err = max_abs_diff(&got, &want);
                    assert!(err < 1e-4, "{g:?} rows {rows} tiled {tiled}: {err}");
                }
            }
        }
    }

    /// A realistic channel count through the public entry (whichever route
    /// the thread count picks).
    #[test]
    fn many_channels_match_direct_definition() {
        let g = Conv3dGeometry {
            batch: 1,
            c_in: 48,
            c_out: 6,
            input: [4, 10, 24],
            kernel: [3, 3, 3],
            stride: [1, 2, 2],
            pad: [1, 1, 1],
        };
        let x = random(g.c_in * g.input.iter().product::<usize>(), 1);
        let w = random(g.c_out * g.col_rows(), 2);
        let got = conv3d(&x, &w, None, &g);
        let want = naive_conv3d(&x, &w, None, &g);
        let err = max_abs_diff(&got, &want);
        assert!(err < 1e-3, "{err}");
    }

    /// A kernel of depth 1 convolves each frame on its own: conv3d equals the
    /// per-frame conv2d, and equals the general vol2col route.
    #[test]
    fn depth_one_kernel_equals_conv2d_per_frame() {
        let g = geom([4, 9, 11], [1, 3, 3], [1, 1, 1], [0, 1, 1]);
        let x = random(g.batch * g.c_in * 4 * 9 * 11, 4);
        let w = random(g.c_out * g.col_rows(), 5);
        let bias = random(g.c_out, 6);
        let frames = conv::conv2d_frames(&x, &w, Some(&bias), &g.frames_geometry());
        let general = conv3d_vol2col(&x, &w, Some(&bias), &g, g.conv_out().unwrap());
        assert!(max_abs_diff(&frames, &general) < 1e-4);
        assert!(max_abs_diff(&conv3d(&x, &w, Some(&bias), &g), &frames) < 1e-6);
    }

    /// vol2col and col2vol are adjoint: <vol2col(x), c> = <x, col2vol(c)>.
    #[test]
    fn col2vol_is_the_adjoint_of_vol2col() {
        let g = geom([5, 6, 7], [3, 2, 3], [2, 1, 2], [1, 1, 0]);
        let out = g.conv_out().unwrap();
        let x = random(g.c_in * 5 * 6 * 7, 7);
        // Output rows 2..7 of the 3·7 rows.
        let rows = 2..7;
        let n = rows.len() * out[2];
        let c = random(g.col_rows() * n, 8);
        let mut cols = vec![0f32; g.col_rows() * n];
        vol2col(&x, &g, out, rows.clone(), &mut cols);
        let mut back = vec![0f32; x.len()];
        col2vol(&c, &g, out, rows, &mut back);
        let (lhs, rhs) = (dot(&cols, &c), dot(&x, &back));
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    /// The transposed convolution is the adjoint of the convolution:
    /// <conv(x), y> = <x, conv_t(y)> for the same weight and no bias.
    #[test]
    fn transposed_conv_is_the_adjoint() {
        // (input, kernel, stride, pad): nnU-Net's kernel = stride upsampling
        // (block scatter), and general overlapping / padded cases (col2vol).
        // The convolutions cover their inputs exactly, so that the transposed
        // output size (no output padding) comes back to them.
        let cases = [
            ([6, 8, 10], [2, 2, 2], [2, 2, 2], [0, 0, 0]),
            ([5, 8, 10], [1, 2, 2], [1, 2, 2], [0, 0, 0]),
            ([7, 9, 11], [3, 3, 3], [2, 2, 2], [1, 1, 1]),
            ([5, 9, 10], [2, 3, 4], [1, 2, 2], [0, 1, 1]),
            ([6, 8, 10], [2, 2, 2], [2, 2, 2], [1, 0, 1]),
        ];
        for (input, kernel, stride, pad) in cases {
            let g = geom(input, kernel, stride, pad);
            let out = g.conv_out().unwrap();
            let x = random(g.batch * g.c_in * input.iter().product::<usize>(), 11);
            let w = random(g.c_out * g.col_rows(), 12);
            let y = random(g.batch * g.c_out * out.iter().product::<usize>(), 13);
            let cx = conv3d(&x, &w, None, &g);
            // From c_out channels at the conv output back to c_in at its input.
            let gt = Conv3dGeometry {
                c_in: g.c_out,
                c_out: g.c_in,
                input: out,
                ..g
            };
            assert_eq!(
                gt.transposed_out(),
                Some(g.input),
                "{kernel:?} {stride:?} {pad:?}"
            );
            let ty = conv_transpose3d(&y, &w, None, &gt);
            let (lhs, rhs) = (dot(&cx, &y), dot(&x, &ty));
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{kernel:?} {stride:?} {pad:?}: {lhs} vs {rhs}"
            );
            // Chunks of input rows that split depths give the same result.
            let chunked = conv_transpose3d_chunks(&y, &w, None, &gt, g.input, 3);
            assert!(max_abs_diff(&chunked, &ty) < 1e-5);
        }
    }

    /// The block scatter and the general col2vol give the same transposed
    /// convolution (with bias) where both apply, over several column chunks.
    #[test]
    fn block_scatter_equals_col2vol() {
        let g = Conv3dGeometry {
            batch: 2,
            c_in: 5,
            c_out: 3,
            input: [3, 4, 6],
            kernel: [2, 2, 2],
            stride: [2, 2, 2],
            pad: [0, 0, 0],
        };
        let out_dims = g.transposed_out().unwrap();
        assert_eq!(out_dims, [6, 8, 12]);
        let x = random(g.batch * g.c_in * 3 * 4 * 6, 14);
        let w = random(g.c_in * g.c_out * 8, 15);
        let bias = random(g.c_out, 16);
        let fast = conv_transpose3d(&x, &w, Some(&bias), &g);
        // The same through col2vol, rows in two uneven chunks.
        let fwd = g.adjoint_of_transposed(out_dims);
        let kk = fwd.col_rows();
        let n_in = 3 * 4 * 6;
        let n_out = 6 * 8 * 12;
        let mut slow = vec![0f32; g.batch * g.c_out * n_out];
        for (b, ob) in slow.chunks_mut(g.c_out * n_out).enumerate() {
            fill_bias(ob, n_out, Some(&bias));
            for rows in [0..5, 5..12] {
                let n = rows.len() * 6;
                let mut cols = vec![0f32; kk * n];
                let xb = frame_view(&x, b * g.c_in * n_in, g.c_in, n_in, n_in);
                let wt = frame_view(&w, 0, g.c_in, kk, kk).reversed_axes();
                let rhs = xb.slice(s![.., rows.start * 6..rows.end * 6]);
                gemm(wt, rhs, 0.0, frame_view_mut(&mut cols, 0, kk, n, n));
                col2vol(&cols, &fwd, g.input, rows, ob);
            }
        }
        assert!(max_abs_diff(&fast, &slow) < 1e-5);
    }

    #[test]
    fn output_sizes() {
        let g = geom([5, 7, 9], [3, 3, 3], [2, 2, 2], [1, 1, 1]);
        assert_eq!(g.conv_out(), Some([3, 4, 5]));
        assert_eq!(g.transposed_out(), Some([9, 13, 17]));
        assert_eq!(
            geom([2, 2, 2], [3, 3, 3], [1, 1, 1], [0, 0, 0]).conv_out(),
            None
        );
        assert_eq!(
            geom([2, 2, 2], [1, 1, 1], [0, 1, 1], [0, 0, 0]).conv_out(),
            None
        );
        assert_eq!(
            geom([1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 0]).transposed_out(),
            None
        );
    }
}

//! Typed launch wrappers, one per kernel of `kernels/*.cu` (signatures in
//! `kernels/README.md`). Each wrapper takes device addresses and sizes,
//! computes a bounded launch configuration and checks the launch.
//!
//! Every kernel is correct for any grid (grid-stride loops bounded by its
//! size arguments), so grids here are capped for speed only; block sizes
//! are multiples of 32 (the block reductions need whole warps), and the
//! GEMM kernels get exactly the block size their warp layout assumes.

use super::device::CudaDevice;
use crate::backend::desc::{WindowSumDesc, MAX_WINDOWS_PER_SUM};
use crate::{Error, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Largest grid along y and z (CUDA's limit).
const MAX_GRID_YZ: u64 = 65_535;
/// Cap on grid-stride grids along x: plenty of blocks to fill any GPU.
const MAX_GRID_X: u64 = 1 << 16;
/// Threads per block of the element-wise and layout kernels.
pub(super) const BLOCK: u32 = 256;

/// Most axes a strided gather or broadcast handles (`[i64; 8]` in the .cu
/// argument structs).
pub(super) const MAX_RANK: usize = 8;

/// Blocks for a grid-stride loop over `n` items with `block` threads each.
fn blocks_for(n: u64, block: u32) -> u32 {
    n.div_ceil(u64::from(block)).clamp(1, MAX_GRID_X) as u32
}

fn cfg_1d(n: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks_for(n, BLOCK), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// x over `per_row` elements, y over `rows`.
fn cfg_rows(rows: u64, per_row: u64) -> LaunchConfig {
    let gy = rows.clamp(1, MAX_GRID_YZ) as u32;
    // Enough x blocks for the rows' length, fewer when y is already wide.
    let gx = blocks_for(per_row, BLOCK).min(((MAX_GRID_X * 16) / u64::from(gy)).max(1) as u32);
    LaunchConfig {
        grid_dim: (gx, gy, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per item of `items`, at most [`MAX_GRID_X`] along x (the
/// kernels loop over the rest).
fn cfg_blocks(items: u64, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.clamp(1, MAX_GRID_X) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Converts a size to the kernels' `long long`.
fn i64_of(v: usize, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfMemory(format!("{what} = {v} is too large")))
}

/// Launches `$name` of module `$family` on `$dev`'s stream with the given
/// locals as arguments (locals only: the builder keeps pointers to them
/// until the launch), mapping any driver error.
macro_rules! launch {
    ($dev:expr, $family:literal, $name:expr, $cfg:expr; $($arg:ident),+ $(,)?) => {{
        let dev: &CudaDevice = $dev;
        let name: &'static str = $name;
        let func = dev.function($family, name)?;
        let cfg: LaunchConfig = $cfg;
        dev.guard(&format!("launching CUDA kernel `{name}`"), |stream| {
            let mut builder = stream.launch_builder(&func);
            $( builder.arg(&$arg); )+
            // SAFETY: the arguments are, in order and by type, those of the
            // kernel's C signature (kernels/README.md; by-value structs are
            // `#[repr(C)]` mirrors of the .cu structs), every device address
            // points into a live pooled buffer of at least the size the
            // kernel indexes (callers size outputs from the same numbers
            // they pass), the buffers stay alive until the kernel has run
            // (they return to the pool in stream order), and each kernel
            // bounds every loop by its size arguments.
            unsafe { builder.launch(cfg) }.map(|_| ())
        })
    }};
}

// ---------------------------------------------------------------- elementwise

/// `y = op(x)` (`unary_f16` / `unary_f32`); `op`, `p0`, `p1` as
/// `UnaryOp::kernel_code` (0 is a copy).
pub(super) fn unary(
    dev: &CudaDevice,
    f16: bool,
    x: u64,
    y: u64,
    n: usize,
    (op, p0, p1): (i32, f32, f32),
) -> Result<()> {
    let n = n as u64;
    let name = if f16 { "unary_f16" } else { "unary_f32" };
    launch!(dev, "elementwise", name, cfg_1d(n); x, y, n, op, p0, p1)
}

/// `dx = g·op′(x)` (`unary_backward_f16` / `unary_backward_f32`); `op`,
/// `p0` as `UnaryOp::kernel_code`.
pub(super) fn unary_backward(
    dev: &CudaDevice,
    f16: bool,
    [x, g, dx]: [u64; 3],
    n: usize,
    (op, p0, _): (i32, f32, f32),
) -> Result<()> {
    let n = n as u64;
    let name = if f16 {
        "unary_backward_f16"
    } else {
        "unary_backward_f32"
    };
    launch!(dev, "elementwise", name, cfg_1d(n); x, g, dx, n, op, p0)
}

/// The `BroadcastArgs` struct of `elementwise.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct BroadcastArgs {
    pub rank: i32,
    pub dims: [i64; MAX_RANK],
    pub a_strides: [i64; MAX_RANK],
    pub b_strides: [i64; MAX_RANK],
    pub n: u64,
}

// SAFETY: `#[repr(C)]` plain integers in the order and with the types of the
// C struct (`int`, then 8-byte aligned `long long`/`unsigned long long`
// members), so its bytes are what the kernel reads by value.
unsafe impl DeviceRepr for BroadcastArgs {}

/// `y = op(a, b)` with broadcasting (`binary_f16` / `binary_f32`).
pub(super) fn binary(
    dev: &CudaDevice,
    f16: bool,
    a: u64,
    b: u64,
    y: u64,
    args: BroadcastArgs,
    op: i32,
) -> Result<()> {
    let name = if f16 { "binary_f16" } else { "binary_f32" };
    let cfg = cfg_1d(args.n);
    launch!(dev, "elementwise", name, cfg; a, b, y, args, op)
}

/// `y = α·a + β·b` (`lincomb_f16` / `lincomb_f32`).
#[allow(clippy::too_many_arguments)]
pub(super) fn lincomb(
    dev: &CudaDevice,
    f16: bool,
    a: u64,
    b: u64,
    y: u64,
    n: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let n = n as u64;
    let name = if f16 { "lincomb_f16" } else { "lincomb_f32" };
    launch!(dev, "elementwise", name, cfg_1d(n); a, b, y, n, alpha, beta)
}

/// `y = x` converted (`cast_f16_to_f32` when `from_f16`, else
/// `cast_f32_to_f16`).
pub(super) fn cast(dev: &CudaDevice, from_f16: bool, x: u64, y: u64, n: usize) -> Result<()> {
    let n = n as u64;
    let name = if from_f16 {
        "cast_f16_to_f32"
    } else {
        "cast_f32_to_f16"
    };
    launch!(dev, "elementwise", name, cfg_1d(n); x, y, n)
}

/// `y[..n] = v` (`fill_f16` / `fill_f32`).
pub(super) fn fill(dev: &CudaDevice, f16: bool, y: u64, n: usize, v: f32) -> Result<()> {
    let n = n as u64;
    let name = if f16 { "fill_f16" } else { "fill_f32" };
    launch!(dev, "elementwise", name, cfg_1d(n); y, n, v)
}

// --------------------------------------------------------------------- layout

/// The `GatherArgs` struct of `layout.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GatherArgs {
    pub rank: i32,
    pub out_dims: [i64; MAX_RANK],
    pub src_strides: [i64; MAX_RANK],
    pub src_offset: i64,
    pub n: u64,
}

// SAFETY: `#[repr(C)]` plain integers in the order and with the types of the
// C struct, as for `BroadcastArgs`.
unsafe impl DeviceRepr for GatherArgs {}

/// `y[i] = x[src_offset + Σ idx_d·src_strides[d]]`
/// (`gather_strided_u16` / `gather_strided_u32` by element size).
pub(super) fn gather_strided(
    dev: &CudaDevice,
    two_bytes: bool,
    x: u64,
    y: u64,
    args: GatherArgs,
) -> Result<()> {
    let name = if two_bytes {
        "gather_strided_u16"
    } else {
        "gather_strided_u32"
    };
    let cfg = cfg_1d(args.n);
    launch!(dev, "layout", name, cfg; x, y, args)
}

/// `dst[o·dst_stride + dst_offset + i] = src[o·src_stride + i]` for
/// `o < outer`, `i < row` (`copy_rows_u16` / `copy_rows_u32`).
#[allow(clippy::too_many_arguments)]
pub(super) fn copy_rows(
    dev: &CudaDevice,
    two_bytes: bool,
    src: u64,
    dst: u64,
    outer: usize,
    row: usize,
    src_stride: usize,
    dst_stride: usize,
    dst_offset: usize,
) -> Result<()> {
    let (outer, row) = (outer as u64, row as u64);
    let (src_stride, dst_stride, dst_offset) =
        (src_stride as u64, dst_stride as u64, dst_offset as u64);
    let name = if two_bytes {
        "copy_rows_u16"
    } else {
        "copy_rows_u32"
    };
    launch!(dev, "layout", name, cfg_rows(outer, row);
        src, dst, outer, row, src_stride, dst_stride, dst_offset)
}

/// `y[j, :] = table[ids[j], :]` with `ids` a device array of `i64`
/// (`index_rows_u16` / `index_rows_u32`).
#[allow(clippy::too_many_arguments)]
pub(super) fn index_rows(
    dev: &CudaDevice,
    two_bytes: bool,
    table: u64,
    ids: u64,
    y: u64,
    n_ids: usize,
    cols: usize,
    table_rows: usize,
) -> Result<()> {
    let (n_ids, cols, table_rows) = (n_ids as u64, cols as u64, table_rows as u64);
    let name = if two_bytes {
        "index_rows_u16"
    } else {
        "index_rows_u32"
    };
    launch!(dev, "layout", name, cfg_rows(n_ids, cols); table, ids, y, n_ids, cols, table_rows)
}

// ----------------------------------------------------------------------- norm

/// Device addresses of a fused normalisation's operands (0 when absent).
#[derive(Clone, Copy, Debug)]
pub(super) struct NormPointers {
    pub x: u64,
    pub y: u64,
    pub weight: u64,
    pub bias: u64,
    pub scale: u64,
    pub shift: u64,
    pub residual: u64,
}

/// Sizes and parameters of a fused normalisation.
#[derive(Clone, Copy, Debug)]
pub(super) struct NormSizes {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    pub groups: usize,
    pub eps: f32,
    pub act: i32,
    pub act_p: f32,
}

/// Threads per block of the normalisation kernels.
const NORM_BLOCK: u32 = 256;

/// How many ranges to cut each group into for the two-pass design: one
/// (the single-kernel design) when there are enough (sample, group) pairs
/// to fill the GPU or the groups are small.
pub(super) fn norm_chunks(pairs: usize, group_len: usize) -> usize {
    const PAIRS_TO_FILL: usize = 512;
    const MIN_CHUNK: usize = 16_384;
    if pairs >= PAIRS_TO_FILL || group_len < 2 * MIN_CHUNK {
        return 1;
    }
    // Aim at ~4 blocks per SM over all pairs, each with ≥ MIN_CHUNK values.
    let want = (PAIRS_TO_FILL * 2).div_ceil(pairs);
    want.min(group_len / MIN_CHUNK).clamp(1, 4096)
}

/// `group_norm_f16` (one block per (sample, group)).
pub(super) fn group_norm(dev: &CudaDevice, p: NormPointers, s: NormSizes) -> Result<()> {
    let NormPointers {
        x,
        y,
        weight,
        bias,
        scale,
        shift,
        residual,
    } = p;
    let batch = i64_of(s.batch, "batch")?;
    let channels = i64_of(s.channels, "channels")?;
    let spatial = i64_of(s.spatial, "spatial size")?;
    let groups = i64_of(s.groups, "groups")?;
    let (eps, act, act_p) = (s.eps, s.act, s.act_p);
    let pairs = (s.batch as u64).saturating_mul(s.groups as u64);
    launch!(dev, "norm", "group_norm_f16", cfg_blocks(pairs, NORM_BLOCK);
        x, y, weight, bias, scale, shift, residual, batch, channels, spatial, groups, eps, act, act_p)
}

/// The two-pass design: `group_norm_stats_f16` into `partials` (a device
/// buffer of `batch·groups·chunks·3` floats), then `group_norm_apply_f16`.
pub(super) fn group_norm_chunked(
    dev: &CudaDevice,
    p: NormPointers,
    s: NormSizes,
    partials: u64,
    chunks: usize,
) -> Result<()> {
    let NormPointers {
        x,
        y,
        weight,
        bias,
        scale,
        shift,
        residual,
    } = p;
    let batch = i64_of(s.batch, "batch")?;
    let channels = i64_of(s.channels, "channels")?;
    let spatial = i64_of(s.spatial, "spatial size")?;
    let groups = i64_of(s.groups, "groups")?;
    let n_chunks = i64_of(chunks, "chunks")?;
    let (eps, act, act_p) = (s.eps, s.act, s.act_p);
    let pairs = (s.batch as u64).saturating_mul(s.groups as u64);
    let cfg = LaunchConfig {
        grid_dim: (
            (chunks as u64).clamp(1, MAX_GRID_X) as u32,
            pairs.clamp(1, MAX_GRID_YZ) as u32,
            1,
        ),
        block_dim: (NORM_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(dev, "norm", "group_norm_stats_f16", cfg;
        x, partials, batch, channels, spatial, groups, n_chunks)?;
    launch!(dev, "norm", "group_norm_apply_f16", cfg;
        x, y, partials, n_chunks, weight, bias, scale, shift, residual,
        batch, channels, spatial, groups, eps, act, act_p)
}

/// `layer_norm_channels_f16`.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_norm_channels(
    dev: &CudaDevice,
    x: u64,
    y: u64,
    gamma: u64,
    batch: usize,
    channels: usize,
    spatial: usize,
    eps: f32,
) -> Result<()> {
    let positions = (batch as u64).saturating_mul(spatial as u64);
    let batch = i64_of(batch, "batch")?;
    let channels = i64_of(channels, "channels")?;
    let spatial = i64_of(spatial, "spatial size")?;
    launch!(dev, "norm", "layer_norm_channels_f16", cfg_1d(positions);
        x, y, gamma, batch, channels, spatial, eps)
}

// -------------------------------------------------------------------- softmax

/// The grid of the softmax kernels (forward and backward) over the middle
/// axis of `[outer, n, inner]`, and the sizes as their `long long`s. Rows
/// (inner 1): a block per row; columns: a thread per column.
fn softmax_launch(outer: usize, n: usize, inner: usize) -> Result<(LaunchConfig, [i64; 3])> {
    let cfg = if inner == 1 {
        cfg_blocks(outer as u64, BLOCK)
    } else {
        cfg_1d((outer as u64).saturating_mul(inner as u64))
    };
    let sizes = [
        i64_of(outer, "softmax outer size")?,
        i64_of(n, "softmax axis")?,
        i64_of(inner, "softmax inner size")?,
    ];
    Ok((cfg, sizes))
}

/// Softmax over the middle axis of `[outer, n, inner]` (`softmax_f16` /
/// `softmax_f32`).
pub(super) fn softmax(
    dev: &CudaDevice,
    f16: bool,
    x: u64,
    y: u64,
    outer: usize,
    n: usize,
    inner: usize,
) -> Result<()> {
    let (cfg, [outer, n, inner]) = softmax_launch(outer, n, inner)?;
    let name = if f16 { "softmax_f16" } else { "softmax_f32" };
    launch!(dev, "softmax", name, cfg; x, y, outer, n, inner)
}

/// Softmax backward over the middle axis of `[outer, n, inner]`
/// (`softmax_backward_f16` / `softmax_backward_f32`), launched as the
/// forward.
pub(super) fn softmax_backward(
    dev: &CudaDevice,
    f16: bool,
    [y, g, dx]: [u64; 3],
    outer: usize,
    n: usize,
    inner: usize,
) -> Result<()> {
    let (cfg, [outer, n, inner]) = softmax_launch(outer, n, inner)?;
    let name = if f16 {
        "softmax_backward_f16"
    } else {
        "softmax_backward_f32"
    };
    launch!(dev, "softmax", name, cfg; y, g, dx, outer, n, inner)
}

/// Rows of the summed axis one `reduce_sum` block walks at once
/// (`REDUCE_ROWS` of `softmax.cu`).
const REDUCE_ROWS: u32 = 32;

/// Sum over the middle axis of `[outer, n, inner]` into `[outer, inner]`:
/// with `inner == 1` a block per row (`reduce_sum_rows_f16` / `_f32`),
/// otherwise blocks of 32 inner positions × [`REDUCE_ROWS`] rows, x over
/// inner tiles, y over `outer` (`reduce_sum_f16` / `reduce_sum_f32`).
pub(super) fn reduce_sum(
    dev: &CudaDevice,
    f16: bool,
    x: u64,
    y: u64,
    outer: usize,
    n: usize,
    inner: usize,
) -> Result<()> {
    if inner == 1 {
        let cfg = cfg_blocks(outer as u64, BLOCK);
        let rows = i64_of(outer, "reduce_sum rows")?;
        let n = i64_of(n, "reduce_sum axis")?;
        let name = if f16 {
            "reduce_sum_rows_f16"
        } else {
            "reduce_sum_rows_f32"
        };
        return launch!(dev, "softmax", name, cfg; x, y, rows, n);
    }
    let tiles = (inner as u64).div_ceil(32).clamp(1, MAX_GRID_X) as u32;
    let cfg = LaunchConfig {
        grid_dim: (tiles, (outer as u64).clamp(1, MAX_GRID_YZ) as u32, 1),
        block_dim: (32, REDUCE_ROWS, 1),
        shared_mem_bytes: 0,
    };
    let outer = i64_of(outer, "reduce_sum outer size")?;
    let n = i64_of(n, "reduce_sum axis")?;
    let inner = i64_of(inner, "reduce_sum inner size")?;
    let name = if f16 {
        "reduce_sum_f16"
    } else {
        "reduce_sum_f32"
    };
    launch!(dev, "softmax", name, cfg; x, y, outer, n, inner)
}

// ------------------------------------------------------------------ embedding

/// Sinusoidal embedding of the f32 timesteps at `t` (`len` of them) into
/// `[len, dim]` (`sinusoidal_f16` / `sinusoidal_f32`).
pub(super) fn sinusoidal(
    dev: &CudaDevice,
    f16: bool,
    t: u64,
    y: u64,
    len: usize,
    dim: usize,
) -> Result<()> {
    let total = (len as u64).saturating_mul(dim as u64 / 2);
    let len = i64_of(len, "timesteps")?;
    let dim = i64_of(dim, "embedding size")?;
    let name = if f16 {
        "sinusoidal_f16"
    } else {
        "sinusoidal_f32"
    };
    launch!(dev, "embedding", name, cfg_1d(total); t, y, len, dim)
}

// -------------------------------------------------------------------- repaint

/// `repaint_known_blend_f32`.
#[allow(clippy::too_many_arguments)]
pub(super) fn known_blend(
    dev: &CudaDevice,
    x: u64,
    gt: u64,
    known: u64,
    noise: u64,
    y: u64,
    n: usize,
    sqrt_abar: f32,
    sqrt_one_minus_abar: f32,
) -> Result<()> {
    let n = n as u64;
    launch!(dev, "repaint", "repaint_known_blend_f32", cfg_1d(n);
        x, gt, known, noise, y, n, sqrt_abar, sqrt_one_minus_abar)
}

/// The scalar coefficients of `repaint_ancestral_f32`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AncestralCoefficients {
    pub sqrt_recip_abar: f32,
    pub sqrt_recipm1_abar: f32,
    pub coef1: f32,
    pub coef2: f32,
    pub sigma: f32,
}

/// `repaint_ancestral_f32`.
pub(super) fn ancestral(
    dev: &CudaDevice,
    (x, eps, noise, y): (u64, u64, u64, u64),
    n: usize,
    c: AncestralCoefficients,
) -> Result<()> {
    let n = n as u64;
    let AncestralCoefficients {
        sqrt_recip_abar,
        sqrt_recipm1_abar,
        coef1,
        coef2,
        sigma,
    } = c;
    launch!(dev, "repaint", "repaint_ancestral_f32", cfg_1d(n);
        x, eps, noise, y, n, sqrt_recip_abar, sqrt_recipm1_abar, coef1, coef2, sigma)
}

// ---------------------------------------------------------------------- optim

/// The `OptimArgs` struct of `optim.cu`: one update's scalars.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct OptimArgs {
    pub grad_factor0: f32,
    pub grad_factor1: f32,
    pub lr: f32,
    pub weight_decay: f32,
    pub decay: f32,
    pub beta1_complement: f32,
    pub beta2: f32,
    pub beta2_complement: f32,
    pub eps: f32,
    pub step_size: f32,
    pub bias2_sqrt: f32,
    pub momentum: f32,
    pub decoupled: i32,
    pub nesterov: i32,
    pub first_step: i32,
    pub pad: i32,
}

// SAFETY: `#[repr(C)]` with twelve `f32` then four `i32`, the order and
// types of the C struct (all 4-byte members, no padding), so its bytes are
// what the kernel reads by value.
unsafe impl DeviceRepr for OptimArgs {}

/// `optim_adam_f32`: `(p, g, m, v)` in, `(p_out, m_out, v_out)` out.
pub(super) fn adam(
    dev: &CudaDevice,
    (p, g, m, v): (u64, u64, u64, u64),
    (p_out, m_out, v_out): (u64, u64, u64),
    n: usize,
    args: OptimArgs,
) -> Result<()> {
    let n = n as u64;
    launch!(dev, "optim", "optim_adam_f32", cfg_1d(n); p, g, m, v, p_out, m_out, v_out, n, args)
}

/// `optim_sgd_f32`: `(p, g, buf)` in, `(p_out, buf_out)` out.
pub(super) fn sgd(
    dev: &CudaDevice,
    (p, g, buf): (u64, u64, u64),
    (p_out, buf_out): (u64, u64),
    n: usize,
    args: OptimArgs,
) -> Result<()> {
    let n = n as u64;
    launch!(dev, "optim", "optim_sgd_f32", cfg_1d(n); p, g, buf, p_out, buf_out, n, args)
}

/// Most blocks (and f64 partials) of one [`sum_squares`] launch.
pub(super) const SUM_SQUARES_MAX_BLOCKS: u32 = 512;

/// The blocks [`sum_squares`] launches for `n` values: one per 4096 values
/// (16 per thread), at most [`SUM_SQUARES_MAX_BLOCKS`]. A function of `n`
/// alone, so the partials, and their sum, are the same on every run.
pub(super) fn sum_squares_blocks(n: usize) -> u32 {
    (n as u64)
        .div_ceil(4096)
        .clamp(1, u64::from(SUM_SQUARES_MAX_BLOCKS)) as u32
}

/// `sum_squares_f32`: writes [`sum_squares_blocks`]`(n)` f64 partials at
/// `partials`.
pub(super) fn sum_squares(dev: &CudaDevice, x: u64, n: usize, partials: u64) -> Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (sum_squares_blocks(n), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = n as u64;
    launch!(dev, "optim", "sum_squares_f32", cfg; x, n, partials)
}

// --------------------------------------------------------------------- philox

/// `philox_normal_f32`: `items` is a device array of `u32`.
#[allow(clippy::too_many_arguments)]
pub(super) fn philox_normal(
    dev: &CudaDevice,
    y: u64,
    items: u64,
    n_items: usize,
    per_item: usize,
    seed: u64,
    stream: u32,
    step: u32,
) -> Result<()> {
    let (n_items, per_item) = (n_items as u64, per_item as u64);
    let cfg = cfg_rows(n_items, per_item.div_ceil(4));
    launch!(dev, "philox", "philox_normal_f32", cfg; y, items, n_items, per_item, seed, stream, step)
}

// ----------------------------------------------------------------------- gemm

/// The `GemmArgs` struct of `gemm.cu`:
/// `C_z = alpha·A_z·B_z + bias + R_z` over `batch` items.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GemmArgs {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub bias: u64,
    pub residual: u64,
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
    pub batch: i64,
    pub stride_a: i64,
    pub stride_b: i64,
    pub stride_c: i64,
    pub trans_a: i32,
    pub trans_b: i32,
    /// 0 none, 1 per row (`bias[m]`), 2 per column (`bias[n]`).
    pub bias_mode: i32,
    pub alpha: f32,
}

// SAFETY: `#[repr(C)]` with the members, order and types of the C struct
// (five `u64`, ten `long long`, three `int`, one `float`), so the bytes
// passed by value are exactly what the kernel reads.
unsafe impl DeviceRepr for GemmArgs {}

/// Runs a GEMM with the tile shape that suits its size: 128×128 tiles
/// (`gemm_f16`, 256 threads) when they are enough to fill the GPU, else
/// 64×64 (`gemm_f16_64x64`, 128 threads).
pub(super) fn gemm(dev: &CudaDevice, args: GemmArgs) -> Result<()> {
    if args.m <= 0 || args.n <= 0 || args.batch <= 0 {
        return Ok(());
    }
    let (name, cfg) = gemm_launch(&args, "gemm_f16", "gemm_f16_64x64");
    launch!(dev, "gemm", name, cfg; args)
}

/// The `ConvGeom` struct of `conv_tile.cuh`: a convolution of
/// `[B, c_in, frames, h, w]` into `[B, C_out, fo, ho, wo]` (a per-frame 2-D
/// one when `kd = sd = 1`, `pd = 0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConvGeom {
    pub c_in: i32,
    pub frames: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub ph: i32,
    pub pw: i32,
    /// 0 forward, 1 transposed (gather form, weight as `[C_out, C_in, kd, kh, kw]`).
    pub transposed: i32,
    /// Output frames.
    pub fo: i32,
    pub kd: i32,
    pub sd: i32,
    pub pd: i32,
}

/// The `ConvArgs` struct of `gemm.cu`: the GEMM view (`a` weight, `b`
/// input, `c` output; `m` = C_out, `n` = Fo·Ho·Wo, `k` = C_in·kd·kh·kw) and the
/// geometry its B operand is gathered with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConvArgs {
    pub gemm: GemmArgs,
    pub geom: ConvGeom,
}

// SAFETY: `#[repr(C)]` with the members, order and types of the C struct
// (`GemmArgs`, then seventeen `int`), so the bytes passed by value are
// exactly what the kernel reads (208 bytes with the tail padding).
unsafe impl DeviceRepr for ConvArgs {}

/// The launch grid and kernel of a GEMM-shaped op: 128×128 tiles when
/// they are enough to fill the GPU, else 64×64.
fn gemm_launch(
    args: &GemmArgs,
    large: &'static str,
    small: &'static str,
) -> (&'static str, LaunchConfig) {
    let (m, n) = (args.m as u64, args.n as u64);
    let tiles_of = |t: u64| m.div_ceil(t).saturating_mul(n.div_ceil(t));
    let work = tiles_of(128).saturating_mul(args.batch as u64);
    // ~2 CTAs per SM of an H100/H200 (132 SMs) at 128×128; products that
    // fit one 64×64 tile (attention items, the weight gradients' 3×3
    // outputs) take the small tile however many there are, which wastes
    // four times less of each MMA tile.
    let fits_small = m <= 64 && n <= 64;
    let (name, tile, threads) = if work >= 264 && !fits_small {
        (large, 128, 256)
    } else {
        (small, 64, 128)
    };
    let cfg = LaunchConfig {
        grid_dim: (
            tiles_of(tile).clamp(1, i32::MAX as u64) as u32,
            (args.batch as u64).clamp(1, MAX_GRID_YZ) as u32,
            1,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    (name, cfg)
}

/// An implicit-GEMM convolution (`conv_f16` / `conv_f16_64x64`).
pub(super) fn conv(dev: &CudaDevice, args: ConvArgs) -> Result<()> {
    let g = &args.gemm;
    if g.m <= 0 || g.n <= 0 || g.batch <= 0 {
        return Ok(());
    }
    let (name, cfg) = gemm_launch(g, "conv_f16", "conv_f16_64x64");
    launch!(dev, "gemm", name, cfg; args)
}

/// The `WgradArgs` struct of `gemm.cu`: the weight gradient
/// `[m = C_out, n = C_in·kd·kh·kw]` of the forward convolution `geom` of
/// `x` whose output gradient is `dy`, split along its `batch·positions`
/// reduction into `splits` fp32 planes of `partial` (one split writes the
/// fp16 `out` itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WgradArgs {
    pub x: u64,
    pub dy: u64,
    pub partial: u64,
    pub out: u64,
    pub m: i64,
    pub n: i64,
    pub positions: i64,
    pub batch: i64,
    pub splits: i64,
    pub geom: ConvGeom,
}

// SAFETY: `#[repr(C)]` with the members, order and types of the C struct
// (four `u64`, five `long long`, then `ConvGeom`'s seventeen `int`), so
// the bytes passed by value are exactly what the kernel reads (144 bytes
// with the tail padding).
unsafe impl DeviceRepr for WgradArgs {}

/// Tile edge and K slice of `conv_wgrad_f16` (`gemm.cu`: its 64×64 tile
/// and `GEMM_BK`).
const WGRAD_TILE: usize = 64;
const WGRAD_SLICE: usize = 32;

/// How many K splits the weight gradient of an `m × n` product over
/// `batch` items of `positions` gets on a GPU with `sms` multiprocessors:
/// enough blocks for ~4 per SM, and at least 8 slices (256 positions) per
/// split so that a split's fp32 plane stays small next to what it reads.
/// The planes need no cap of their own: a product with `t` tiles of
/// 64×64 gets at most `⌈4·sms / t⌉` splits, so its planes hold at most
/// `(4·sms + t)·16 KiB` (9 MiB on 132 SMs, and none with one split).
pub(super) fn wgrad_splits(
    sms: usize,
    m: usize,
    n: usize,
    positions: usize,
    batch: usize,
) -> usize {
    const MIN_SLICES_PER_SPLIT: usize = 8;
    let tiles = m.div_ceil(WGRAD_TILE).max(1) * n.div_ceil(WGRAD_TILE).max(1);
    let slices = positions.div_ceil(WGRAD_SLICE).saturating_mul(batch);
    let by_blocks = sms.max(1).saturating_mul(4).div_ceil(tiles);
    let by_work = (slices / MIN_SLICES_PER_SPLIT).max(1);
    by_blocks.min(by_work).min(MAX_GRID_YZ as usize).max(1)
}

/// The weight gradient: `conv_wgrad_f16`, which writes the fp16
/// `args.out` itself when `args.splits` is 1 and otherwise fills
/// `args.partial` (`splits` planes of `m·n` fp32), then `splitk_sum_f16`
/// (256 threads, 32 outputs per block) adds the planes into `out`.
pub(super) fn conv_wgrad(dev: &CudaDevice, args: WgradArgs) -> Result<()> {
    if args.m <= 0 || args.n <= 0 {
        return Ok(());
    }
    if args.splits <= 0 || (args.splits > 1 && args.partial == 0) {
        return Err(Error::Internal(format!(
            "conv_wgrad_f16: {} splits with partial planes at {:#x}",
            args.splits, args.partial
        )));
    }
    let (m, n) = (args.m as u64, args.n as u64);
    let tile = WGRAD_TILE as u64;
    let tiles = m.div_ceil(tile).saturating_mul(n.div_ceil(tile));
    let cfg = LaunchConfig {
        grid_dim: (
            tiles.clamp(1, i32::MAX as u64) as u32,
            (args.splits as u64).clamp(1, MAX_GRID_YZ) as u32,
            1,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(dev, "gemm", "conv_wgrad_f16", cfg; args)?;
    if args.splits == 1 {
        return Ok(());
    }
    let (partial, out, splits, count) = (args.partial, args.out, args.splits, args.m * args.n);
    let sum_cfg = LaunchConfig {
        grid_dim: (
            (count as u64).div_ceil(32).clamp(1, MAX_GRID_X) as u32,
            1,
            1,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(dev, "gemm", "splitk_sum_f16", sum_cfg; partial, out, splits, count)
}

// ------------------------------------------------------------------ attention

/// `linear_attention_dD_f16` for `head_dim` D ∈ {8, 16, 32, 64}: one block
/// per (sample, head, frame).
#[allow(clippy::too_many_arguments)]
pub(super) fn linear_attention(
    dev: &CudaDevice,
    qkv: u64,
    out: u64,
    items: usize,
    frames: usize,
    positions: usize,
    heads: usize,
    head_dim: usize,
) -> Result<()> {
    let name = match head_dim {
        8 => "linear_attention_d8_f16",
        16 => "linear_attention_d16_f16",
        32 => "linear_attention_d32_f16",
        64 => "linear_attention_d64_f16",
        d => {
            return Err(Error::Unsupported(format!(
                "linear attention with {d} features per head on CUDA (kernels exist for 8, 16, 32 and 64)"
            )))
        }
    };
    let cfg = cfg_blocks(items as u64, BLOCK);
    let items = items as u64;
    let frames = i64_of(frames, "frames")?;
    let n = i64_of(positions, "positions")?;
    let heads = i32::try_from(heads)
        .map_err(|_| Error::invalid(format!("linear attention: {heads} heads")))?;
    launch!(dev, "attention", name, cfg; qkv, out, items, frames, n, heads)
}

/// `attention_pP_f16` (P = ⌈d/32⌉ ≤ 4): softmax attention, a warp per query.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    dev: &CudaDevice,
    (q, k, v, bias, out): (u64, u64, u64, u64, u64),
    groups: usize,
    tokens: usize,
    head_dim: usize,
    heads: usize,
) -> Result<()> {
    let name = match head_dim.div_ceil(32) {
        1 => "attention_p1_f16",
        2 => "attention_p2_f16",
        3 | 4 => "attention_p4_f16",
        _ => {
            return Err(Error::Unsupported(format!(
                "attention with {head_dim} features per head on CUDA (at most 128)"
            )))
        }
    };
    let rows = (groups as u64).saturating_mul(tokens as u64);
    let cfg = cfg_1d(rows.saturating_mul(32));
    let groups = groups as u64;
    let t = i64_of(tokens, "tokens")?;
    let d = i64_of(head_dim, "features per head")?;
    let heads =
        i32::try_from(heads).map_err(|_| Error::invalid(format!("attention: {heads} heads")))?;
    launch!(dev, "attention", name, cfg; q, k, v, bias, out, groups, t, d, heads)
}

/// `rotary_f16` over `[G, T, d]` with fp32 frequencies.
pub(super) fn rotary(
    dev: &CudaDevice,
    (x, freqs, y): (u64, u64, u64),
    rows: usize,
    tokens: usize,
    head_dim: usize,
) -> Result<()> {
    let pairs = (rows as u64).saturating_mul(tokens as u64) * (head_dim as u64 / 2);
    let t = i64_of(tokens, "tokens")?;
    let d = i64_of(head_dim, "features per head")?;
    launch!(dev, "attention", "rotary_f16", cfg_1d(pairs); x, freqs, y, pairs, t, d)
}

// -------------------------------------------------------------------- sliding

/// The `SlidingArgs` struct of `sliding.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SlidingArgs {
    pub classes: i64,
    pub grid: [i64; 3],
    pub extent: [i64; 3],
    pub windows: i64,
    pub lo: [i64; 3],
    pub hi: [i64; 3],
    pub starts: [[i64; 3]; MAX_WINDOWS_PER_SUM],
}

// SAFETY: `#[repr(C)]` with the members, order and types of the C struct
// (only `long long`s, so no padding: 1648 bytes, under the 4 KiB kernel
// parameter limit).
unsafe impl DeviceRepr for SlidingArgs {}

impl SlidingArgs {
    /// The arguments for `desc`, with the bounding box of its windows.
    pub(super) fn new(desc: &WindowSumDesc) -> Result<SlidingArgs> {
        let windows = desc.starts.len();
        if !(1..=MAX_WINDOWS_PER_SUM).contains(&windows) {
            return Err(Error::invalid(format!(
                "accumulate_windows: {windows} windows (1 to {MAX_WINDOWS_PER_SUM})"
            )));
        }
        let mut args = SlidingArgs {
            classes: i64_of(desc.classes, "classes")?,
            grid: [0; 3],
            extent: [0; 3],
            windows: windows as i64,
            lo: [i64::MAX; 3],
            hi: [0; 3],
            starts: [[0; 3]; MAX_WINDOWS_PER_SUM],
        };
        for a in 0..3 {
            args.grid[a] = i64_of(desc.grid[a], "sum size")?;
            args.extent[a] = i64_of(desc.extent[a], "window size")?;
        }
        for (w, start) in desc.starts.iter().enumerate() {
            for (a, &s) in start.iter().enumerate() {
                let s = i64_of(s, "window start")?;
                args.starts[w][a] = s;
                args.lo[a] = args.lo[a].min(s);
                args.hi[a] = args.hi[a].max(s.saturating_add(args.extent[a]));
            }
        }
        Ok(args)
    }
}

/// `sliding_accumulate_f16`: `out` = `sum` with the windows of `args`
/// added (pointers: prediction, gaussian, sum, out; `n` sum elements).
pub(super) fn sliding_accumulate(
    dev: &CudaDevice,
    (pred, gaussian, sum, out): (u64, u64, u64, u64),
    n: usize,
    args: SlidingArgs,
) -> Result<()> {
    launch!(dev, "sliding", "sliding_accumulate_f16", cfg_1d(n as u64);
        pred, gaussian, sum, out, args)
}

/// The argmax over the middle axis of `[outer, n, inner]` (`argmax_f16` /
/// `argmax_f32`).
pub(super) fn argmax(
    dev: &CudaDevice,
    f16: bool,
    (x, y): (u64, u64),
    outer: usize,
    n: usize,
    inner: usize,
) -> Result<()> {
    let cfg = cfg_1d((outer as u64).saturating_mul(inner as u64));
    let outer = i64_of(outer, "argmax outer size")?;
    let n = i64_of(n, "argmax axis")?;
    let inner = i64_of(inner, "argmax inner size")?;
    let name = if f16 { "argmax_f16" } else { "argmax_f32" };
    launch!(dev, "sliding", name, cfg; x, y, outer, n, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The argument structs have the C layout the kernels read.
    #[test]
    fn argument_structs_match_the_c_layout() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(offset_of!(BroadcastArgs, dims), 8);
        assert_eq!(offset_of!(BroadcastArgs, a_strides), 72);
        assert_eq!(offset_of!(BroadcastArgs, b_strides), 136);
        assert_eq!(offset_of!(BroadcastArgs, n), 200);
        assert_eq!(size_of::<BroadcastArgs>(), 208);
        assert_eq!(offset_of!(GatherArgs, src_strides), 72);
        assert_eq!(offset_of!(GatherArgs, src_offset), 136);
        assert_eq!(size_of::<GatherArgs>(), 152);
        assert_eq!(offset_of!(GemmArgs, m), 40);
        assert_eq!(offset_of!(GemmArgs, trans_a), 120);
        assert_eq!(offset_of!(GemmArgs, bias_mode), 128);
        assert_eq!(offset_of!(GemmArgs, alpha), 132);
        assert_eq!(size_of::<GemmArgs>(), 136);
        assert_eq!(align_of::<GemmArgs>(), 8);
        assert_eq!(offset_of!(ConvArgs, geom), 136);
        assert_eq!(offset_of!(ConvGeom, fo), 52);
        assert_eq!(offset_of!(ConvGeom, pd), 64);
        assert_eq!(size_of::<ConvGeom>(), 68);
        assert_eq!(size_of::<ConvArgs>(), 208);
        assert_eq!(offset_of!(WgradArgs, out), 24);
        assert_eq!(offset_of!(WgradArgs, m), 32);
        assert_eq!(offset_of!(WgradArgs, splits), 64);
        assert_eq!(offset_of!(WgradArgs, geom), 72);
        assert_eq!(size_of::<WgradArgs>(), 144);
        assert_eq!(offset_of!(SlidingArgs, windows), 56);
        assert_eq!(offset_of!(SlidingArgs, starts), 112);
        assert_eq!(size_of::<SlidingArgs>(), 1648);
    }

    #[test]
    fn launch_configurations_are_bounded() {
        assert_eq!(cfg_1d(0).grid_dim.0, 1);
        assert_eq!(cfg_1d(u64::MAX).grid_dim.0 as u64, MAX_GRID_X);
        let r = cfg_rows(1 << 40, 1 << 40);
        assert!(u64::from(r.grid_dim.1) <= MAX_GRID_YZ && r.grid_dim.0 >= 1);
        assert_eq!(norm_chunks(4096, 1 << 20), 1);
        assert_eq!(norm_chunks(2, 1000), 1);
        let c = norm_chunks(2, 1 << 22);
        assert!(c > 1 && (1 << 22) / c >= 16_384, "{c}");
    }

    /// The weight gradient's splits: many for nnU-Net's early layers (one
    /// tile, millions of positions), none for deep ones that have tiles
    /// enough, at least 8 slices each, planes within the bound the
    /// heuristic documents, within the grid's y limit, never zero.
    #[test]
    fn weight_gradient_splits_fill_the_gpu_within_bounds() {
        // 1 → 32 at 256², batch 12: one 64×64 tile, 24 576 slices.
        let first = wgrad_splits(132, 32, 9, 256 * 256, 12);
        assert!((264..=528).contains(&first), "{first}");
        // An A100's 108 SMs get fewer.
        assert_eq!(wgrad_splits(108, 32, 9, 256 * 256, 12), 432);
        // 512 → 512 at 16², batch 12: 8 × 72 tiles already.
        assert_eq!(wgrad_splits(132, 512, 512 * 9, 16 * 16, 12), 1);
        // 32 slices give at most 4 splits of 8.
        assert_eq!(wgrad_splits(132, 32, 9, 32 * 32, 1), 4);
        // The fp32 planes stay within (4·sms + tiles)·16 KiB.
        for (m, n) in [(32, 9), (64, 576), (96, 2592), (320, 8640), (2048, 55_296)] {
            let splits = wgrad_splits(132, m, n, 1 << 20, 2);
            let tiles = m.div_ceil(64) * n.div_ceil(64);
            let planes = if splits > 1 { splits * m * n * 4 } else { 0 };
            assert!(
                planes <= (4 * 132 + tiles) * 16_384,
                "{m}×{n}: {splits} splits"
            );
        }
        assert_eq!(wgrad_splits(132, 32, 9, 0, 12), 1);
        assert_eq!(wgrad_splits(0, 0, 0, 0, 0), 1);
        assert!(wgrad_splits(usize::MAX, 1, 1, usize::MAX / 64, 64) <= MAX_GRID_YZ as usize);
    }
}

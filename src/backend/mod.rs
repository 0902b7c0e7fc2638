//! Device back-ends and the seam between them and [`crate::nn`].
//!
//! [`BackendStorage`] lists every op the engine has. A device implements
//! it for its storage type (`cpu::CpuStorage`, `cuda::CudaStorage`);
//! [`crate::nn::Storage`] holds one of them and dispatches each op once.
//! The tensor layer validates shapes and fills the descriptors of
//! [`desc`] before calling in, so an implementation may assume consistent
//! sizes; it still returns errors rather than panicking (a device can run
//! out of memory, or not implement an op yet).
//!
//! Storages are contiguous and row-major. Operands of one call are on the
//! same device (the dispatcher checks) and, for a device with several
//! element types, the same type unless a method says otherwise.

pub mod cpu;
pub mod cuda;
pub mod desc;
pub mod philox;

use crate::nn::DType;
use crate::Result;
use desc::{
    AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry, ConvGeometry,
    KnownBlend, LinearAttentionDesc, LinearDesc, MatmulDesc, NormDesc, NormOperands, OptimizerStep,
    UnaryOp, WindowSumDesc,
};

pub use desc::NoiseKey;

/// The op list every device implements: what a new device must provide.
pub trait BackendStorage: Sized + std::fmt::Debug {
    /// Element type of the buffer.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether there are no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values, widened to f32, in host memory (a device-to-host copy
    /// for a GPU: only at pipeline edges).
    fn to_host_f32(&self) -> Result<Vec<f32>>;
    /// The values converted to `dtype` on the same device.
    fn to_dtype(&self, dtype: DType) -> Result<Self>;

    // ---- element-wise ----
    /// `op(x)` for every element.
    fn unary(&self, op: UnaryOp) -> Result<Self>;
    /// The backward of [`Self::unary`] (`self` is its input `x`):
    /// `grad·op′(x)` for every element.
    fn unary_backward(&self, grad: &Self, op: UnaryOp) -> Result<Self>;
    /// `op(a, b)` with broadcasting.
    fn binary(&self, rhs: &Self, op: BinaryOp, shapes: &BroadcastDesc) -> Result<Self>;
    /// `α·self + β·rhs` for operands of equal length.
    fn lincomb(&self, alpha: f32, rhs: &Self, beta: f32) -> Result<Self>;

    // ---- layout ----
    /// Output axis `i` is input axis `perm[i]` of `shape`.
    fn permute(&self, shape: &[usize], perm: &[usize]) -> Result<Self>;
    /// Reverses the listed axes of `shape`.
    fn flip(&self, shape: &[usize], axes: &[usize]) -> Result<Self>;
    /// Entries `start..start + len` of the axis described by `axis`.
    fn narrow(&self, axis: AxisDesc, start: usize, len: usize) -> Result<Self>;
    /// Concatenation along one axis: part `i` is `[outer, sizes[i], inner]`.
    fn cat(parts: &[&Self], outer: usize, sizes: &[usize], inner: usize) -> Result<Self>;
    /// Rows `ids` of a `[_, cols]` table (ids were checked in range).
    fn index_rows(&self, cols: usize, ids: &[usize]) -> Result<Self>;

    // ---- normalisation and softmax ----
    /// Softmax over the middle axis of `[outer, size, inner]`.
    fn softmax(&self, axis: AxisDesc) -> Result<Self>;
    /// The backward of [`Self::softmax`] (`self` is its output `y`):
    /// `y·(g − Σ y·g)` over the middle axis of `[outer, size, inner]`.
    fn softmax_backward(&self, grad: &Self, axis: AxisDesc) -> Result<Self>;
    /// Sum over the middle axis of `[outer, size, inner]` into
    /// `[outer, inner]` (bias and broadcast gradients), accumulated wider
    /// than the storage and rounded once.
    fn reduce_sum(&self, axis: AxisDesc) -> Result<Self>;
    /// Fused group normalisation, see [`NormDesc`].
    fn group_norm(&self, desc: &NormDesc, operands: NormOperands<'_, Self>) -> Result<Self>;
    /// LayerNorm across channels of `[B, C, S]` at every position, times
    /// `gamma[c]`, no bias.
    fn layer_norm_channels(
        &self,
        gamma: &Self,
        batch: usize,
        channels: usize,
        spatial: usize,
        eps: f64,
    ) -> Result<Self>;

    // ---- products ----
    /// `self·weightᵀ + bias` ([`LinearDesc`]).
    fn linear(&self, weight: &Self, bias: Option<&Self>, desc: &LinearDesc) -> Result<Self>;
    /// The batched product `op(self)·op(rhs)` ([`MatmulDesc`]), accumulated
    /// in f32.
    fn matmul(&self, rhs: &Self, desc: &MatmulDesc) -> Result<Self>;
    /// Per-frame 2-D convolution, plus `residual` (the output's shape) when given.
    fn conv2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        residual: Option<&Self>,
        geometry: &ConvGeometry,
    ) -> Result<Self>;
    /// Per-frame 2-D transposed convolution.
    fn conv_transpose2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        geometry: &ConvGeometry,
    ) -> Result<Self>;
    /// Full 3-D convolution.
    fn conv3d(&self, weight: &Self, bias: Option<&Self>, geometry: &Conv3dGeometry)
        -> Result<Self>;
    /// Full 3-D transposed convolution.
    fn conv_transpose3d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        geometry: &Conv3dGeometry,
    ) -> Result<Self>;
    /// The weight gradient `[C_out, C_in, kd, kh, kw]` of the forward
    /// convolution `geometry` of this input, given its output gradient
    /// (per-frame 2-D convolutions are the depth-1 case; a transposed
    /// convolution's is this for its adjoint geometry, with input and
    /// output gradient exchanged).
    fn conv3d_weight_grad(&self, out_grad: &Self, geometry: &Conv3dGeometry) -> Result<Self>;

    // ---- attention ----
    /// The denoiser's spatial linear attention.
    fn linear_attention(&self, desc: &LinearAttentionDesc) -> Result<Self>;
    /// `softmax(q·kᵀ + bias)·v` with `self` as q (already scaled).
    fn attention(
        q: &Self,
        k: &Self,
        v: &Self,
        bias: Option<&Self>,
        desc: &AttentionDesc,
    ) -> Result<Self>;
    /// Interleaved rotary embedding of `[G, T, d]` by `freqs` (`d/2`).
    fn rotary(&self, freqs: &Self, tokens: usize, head_dim: usize) -> Result<Self>;

    // ---- diffusion sampler (F32 state) ----
    /// RePaint's known-region blend of `self` (x_t) with the noised ground truth.
    fn known_blend(
        &self,
        ground_truth: &Self,
        known: &Self,
        noise: &Self,
        p: KnownBlend,
    ) -> Result<Self>;
    /// One ancestral reverse step of `self` (x_t) given the predicted noise.
    fn ancestral_step(&self, eps: &Self, noise: &Self, p: AncestralStep) -> Result<Self>;

    // ---- sliding-window prediction ----
    /// `sum[:, window w] += self[w] · gaussian` for the windows of `desc`
    /// in order, every stored value rounded to half precision after each
    /// addition (nnU-Net's f16 logit and weight buffers; the product and
    /// the addition in f32). `self` is `[windows, classes, extent]`, `sum`
    /// `[classes, grid]`, `gaussian` `[extent]`; returns the new sum.
    fn accumulate_windows(&self, sum: &Self, gaussian: &Self, desc: &WindowSumDesc)
        -> Result<Self>;
    // ---- optimiser (F32) ----
    /// One optimiser update of `self` (an f32 parameter) with `grad` and
    /// the rule's state buffers (`step.rule.state_buffers()` of them, each
    /// of the parameter's length): the new parameter and state, in the
    /// state's order. Bit-identical on every device.
    fn optimizer_update(
        &self,
        grad: &Self,
        state: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)>;
    /// Each part's sum of squares, accumulated in f64, on the host (one
    /// device-to-host copy for all the parts): the gradient norm and its
    /// overflow check in one pass.
    fn squared_norms(parts: &[&Self]) -> Result<Vec<f64>>;

    /// Index of the largest entry along the middle axis of `[outer, size,
    /// inner]`, as a value of this storage's type, `[outer, inner]`: the
    /// first on ties, and a NaN never wins (numpy's and PyTorch's argmax on
    /// finite values).
    fn argmax(&self, axis: AxisDesc) -> Result<Self>;
}

/// Constructors that create a storage on a device from host values or
/// from nothing: the other half of what a device implements.
pub trait BackendDevice {
    /// The device's storage type.
    type Storage: BackendStorage;
    /// Uploads (or copies) host values as `dtype`.
    fn storage_from_f32(&self, data: &[f32], dtype: DType) -> Result<Self::Storage>;
    /// `n` copies of `value`.
    fn storage_full(&self, value: f32, n: usize, dtype: DType) -> Result<Self::Storage>;
    /// Standard normal noise from the counter-based generator: item `i`
    /// fills `per_item` values keyed by (`key`, `items[i]`, element).
    /// Identical bits on every device.
    fn normal_noise(
        &self,
        key: NoiseKey,
        items: &[u32],
        per_item: usize,
        dtype: DType,
    ) -> Result<Self::Storage>;
    /// Sinusoidal timestep embedding `[t.len(), dim]` (see
    /// [`crate::nn::Tensor::sinusoidal_embedding`]).
    fn sinusoidal_embedding(&self, t: &[f32], dim: usize, dtype: DType) -> Result<Self::Storage>;
}

/// What this build of the library contains and what it found at run time:
/// the answer to `claim info --build` and `claim_build_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version.
    pub version: &'static str,
    /// Whether the library was built with the `cuda` feature.
    pub cuda_feature: bool,
    /// GPU targets with embedded kernels (`sm_80`, `sm_90`, `compute_80`
    /// for PTX); empty when the build found no CUDA compiler or lacks the
    /// feature.
    pub kernel_archs: Vec<String>,
    /// The CUDA driver and devices found now, or why none were.
    pub cuda_runtime: std::result::Result<cuda::CudaRuntimeInfo, String>,
}

/// Describes this build and probes the CUDA driver (without failing or
/// panicking when there is none).
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: crate::VERSION,
        cuda_feature: cfg!(feature = "cuda"),
        kernel_archs: cuda::kernel_archs().iter().map(|s| s.to_string()).collect(),
        cuda_runtime: cuda::runtime_info(),
    }
}

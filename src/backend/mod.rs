//! Device back-ends: the numeric kernels behind [`crate::nn`] ops.
//!
//! Kernels here work on plain buffers plus explicit sizes; they know nothing
//! about [`crate::nn::Tensor`]. Each `nn` op checks shapes once and then
//! dispatches on the tensor's storage to the kernel of its device.

pub mod cpu;
pub mod cuda;
pub mod philox;

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

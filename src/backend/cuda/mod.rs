//! The CUDA back-end. Without the `cuda` feature this is a stub whose
//! device never opens (the error says the build has no CUDA back-end) and
//! whose storage type has no values, so every op's CUDA arm is unreachable.

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::{kernel_archs, runtime_info, CudaDevice, CudaStorage};

/// What the CUDA driver reported at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaRuntimeInfo {
    /// The driver's CUDA version as `major * 1000 + minor * 10` (13000 for 13.0).
    pub driver_version: i32,
    /// One line per visible device: ordinal, name, compute capability, memory.
    pub devices: Vec<String>,
}

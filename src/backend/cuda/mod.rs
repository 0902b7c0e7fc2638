//! The CUDA back-end: fp16/f32 device storage and the embedded kernels of
//! `kernels/`, driven through cudarc's driver API.
//!
//! With the `cuda` feature the real back-end is compiled: [`CudaDevice`]
//! (a context per GPU, a stream and a caching allocator per handle),
//! [`CudaStorage`] (a device buffer) and the launch wrappers of every
//! kernel. The driver is loaded at run time, so such a build still runs on
//! a machine without one: opening a device then fails with
//! [`crate::Error::Device`] saying what is missing. Without the feature,
//! a stub with the same API never opens and its storage type has no values,
//! so every op's CUDA arm is unreachable.

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::{kernel_archs, runtime_info, CudaDevice, CudaGraphExec, CudaStorage};

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod driver;
#[cfg(feature = "cuda")]
mod kernels;
#[cfg(feature = "cuda")]
mod seam;
#[cfg(feature = "cuda")]
mod storage;
#[cfg(all(test, feature = "cuda"))]
mod tests;

#[cfg(feature = "cuda")]
pub use device::{kernel_archs, runtime_info, CudaDevice, CudaGraphExec};
#[cfg(feature = "cuda")]
pub use storage::CudaStorage;

/// What the CUDA driver reported at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaRuntimeInfo {
    /// The driver's CUDA version as `major * 1000 + minor * 10` (13000 for 13.0).
    pub driver_version: i32,
    /// One line per visible device: ordinal, name, compute capability, memory.
    pub devices: Vec<String>,
}

//! The CUDA back-end of a build without the `cuda` feature: nothing opens.

use super::CudaRuntimeInfo;
use crate::{Error, Result};

/// Why nothing here works, for every error and for `claim info --build`.
const NOT_COMPILED: &str =
    "this build has no CUDA back-end (rebuild with `--features cuda` and a CUDA compiler)";

/// A CUDA device handle; no value exists in a build without CUDA.
#[derive(Clone, Debug)]
pub enum CudaDevice {}

impl CudaDevice {
    /// Always fails: this build has no CUDA back-end.
    pub fn open(index: usize) -> Result<CudaDevice> {
        Err(Error::Device(format!(
            "CUDA device {index} requested, but {NOT_COMPILED}"
        )))
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        match *self {}
    }
}

/// Device memory of a tensor; no value exists in a build without CUDA.
#[derive(Debug)]
pub enum CudaStorage {}

/// GPU architectures with kernels embedded in this build: none.
pub fn kernel_archs() -> &'static [&'static str] {
    &[]
}

/// The CUDA driver and devices found at run time: never looked for.
pub fn runtime_info() -> std::result::Result<CudaRuntimeInfo, String> {
    Err(NOT_COMPILED.to_string())
}

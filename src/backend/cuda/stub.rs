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

    /// Waits for the device's queued work.
    pub fn synchronize(&self) -> Result<()> {
        match *self {}
    }

    /// Records device work as a graph.
    pub fn capture<T>(&self, _work: impl FnOnce() -> Result<T>) -> Result<(CudaGraphExec, T)> {
        match *self {}
    }

    /// Bytes of device memory free now.
    pub fn free_memory(&self) -> Result<usize> {
        match *self {}
    }
}

/// A captured CUDA graph; no value exists in a build without CUDA.
#[derive(Debug)]
pub enum CudaGraphExec {}

impl CudaGraphExec {
    /// Queues one replay.
    pub fn replay(&self) -> Result<()> {
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

impl CudaStorage {
    /// The device holding the buffer.
    pub fn device(&self) -> &CudaDevice {
        match *self {}
    }

    /// Overwrites the values in place.
    pub fn overwrite_from(&self, _src: &CudaStorage) -> Result<()> {
        match *self {}
    }
}

/// The stub's side of the seam: no value exists, so no method is ever
/// called.
mod seam {
    use super::{CudaDevice, CudaStorage};
    use crate::backend::desc::{
        AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry,
        ConvGeometry, KnownBlend, LinearAttentionDesc, LinearDesc, MatmulDesc, NormDesc,
        NormOperands, OptimizerStep, UnaryOp, WindowSumDesc,
    };
    use crate::backend::{BackendDevice, BackendStorage, NoiseKey};
    use crate::nn::DType;
    use crate::{Error, Result};

    impl BackendStorage for CudaStorage {
        fn dtype(&self) -> DType {
            match *self {}
        }
        fn len(&self) -> usize {
            match *self {}
        }
        fn to_host_f32(&self) -> Result<Vec<f32>> {
            match *self {}
        }
        fn to_dtype(&self, _: DType) -> Result<Self> {
            match *self {}
        }
        fn unary(&self, _: UnaryOp) -> Result<Self> {
            match *self {}
        }
        fn unary_backward(&self, _: &Self, _: UnaryOp) -> Result<Self> {
            match *self {}
        }
        fn binary(&self, _: &Self, _: BinaryOp, _: &BroadcastDesc) -> Result<Self> {
            match *self {}
        }
        fn lincomb(&self, _: f32, _: &Self, _: f32) -> Result<Self> {
            match *self {}
        }
        fn permute(&self, _: &[usize], _: &[usize]) -> Result<Self> {
            match *self {}
        }
        fn flip(&self, _: &[usize], _: &[usize]) -> Result<Self> {
            match *self {}
        }
        fn narrow(&self, _: AxisDesc, _: usize, _: usize) -> Result<Self> {
            match *self {}
        }
        fn cat(parts: &[&Self], _: usize, _: &[usize], _: usize) -> Result<Self> {
            match parts.first() {
                Some(p) => match **p {},
                None => Err(Error::Internal("cat of no CUDA storages".into())),
            }
        }
        fn index_rows(&self, _: usize, _: &[usize]) -> Result<Self> {
            match *self {}
        }
        fn softmax(&self, _: AxisDesc) -> Result<Self> {
            match *self {}
        }
        fn softmax_backward(&self, _: &Self, _: AxisDesc) -> Result<Self> {
            match *self {}
        }
        fn reduce_sum(&self, _: AxisDesc) -> Result<Self> {
            match *self {}
        }
        fn group_norm(&self, _: &NormDesc, _: NormOperands<'_, Self>) -> Result<Self> {
            match *self {}
        }
        fn layer_norm_channels(
            &self,
            _: &Self,
            _: usize,
            _: usize,
            _: usize,
            _: f64,
        ) -> Result<Self> {
            match *self {}
        }
        fn linear(&self, _: &Self, _: Option<&Self>, _: &LinearDesc) -> Result<Self> {
            match *self {}
        }
        fn matmul(&self, _: &Self, _: &MatmulDesc) -> Result<Self> {
            match *self {}
        }
        fn conv2d(
            &self,
            _: &Self,
            _: Option<&Self>,
            _: Option<&Self>,
            _: &ConvGeometry,
        ) -> Result<Self> {
            match *self {}
        }
        fn conv_transpose2d(&self, _: &Self, _: Option<&Self>, _: &ConvGeometry) -> Result<Self> {
            match *self {}
        }
        fn conv3d(&self, _: &Self, _: Option<&Self>, _: &Conv3dGeometry) -> Result<Self> {
            match *self {}
        }
        fn conv_transpose3d(&self, _: &Self, _: Option<&Self>, _: &Conv3dGeometry) -> Result<Self> {
            match *self {}
        }
        fn conv3d_weight_grad(&self, _: &Self, _: &Conv3dGeometry) -> Result<Self> {
            match *self {}
        }
        fn linear_attention(&self, _: &LinearAttentionDesc) -> Result<Self> {
            match *self {}
        }
        fn attention(
            q: &Self,
            _: &Self,
            _: &Self,
            _: Option<&Self>,
            _: &AttentionDesc,
        ) -> Result<Self> {
            match *q {}
        }
        fn rotary(&self, _: &Self, _: usize, _: usize) -> Result<Self> {
            match *self {}
        }
        fn known_blend(&self, _: &Self, _: &Self, _: &Self, _: KnownBlend) -> Result<Self> {
            match *self {}
        }
        fn ancestral_step(&self, _: &Self, _: &Self, _: AncestralStep) -> Result<Self> {
            match *self {}
        }
        fn accumulate_windows(&self, _: &Self, _: &Self, _: &WindowSumDesc) -> Result<Self> {
            match *self {}
        }
        fn argmax(&self, _: AxisDesc) -> Result<Self> {
            match *self {}
        }
        fn optimizer_update(
            &self,
            _: &Self,
            _: &[&Self],
            _: &OptimizerStep,
        ) -> Result<(Self, Vec<Self>)> {
            match *self {}
        }
        fn squared_norms(parts: &[&Self]) -> Result<Vec<f64>> {
            match parts.first() {
                Some(p) => match **p {},
                None => Ok(Vec::new()),
            }
        }
    }

    impl BackendDevice for CudaDevice {
        type Storage = CudaStorage;
        fn storage_from_f32(&self, _: &[f32], _: DType) -> Result<CudaStorage> {
            match *self {}
        }
        fn storage_full(&self, _: f32, _: usize, _: DType) -> Result<CudaStorage> {
            match *self {}
        }
        fn normal_noise(&self, _: NoiseKey, _: &[u32], _: usize, _: DType) -> Result<CudaStorage> {
            match *self {}
        }
        fn sinusoidal_embedding(&self, _: &[f32], _: usize, _: DType) -> Result<CudaStorage> {
            match *self {}
        }
    }
}

//! Device graphs: a recorded sequence of device work that replays with the
//! same buffers and no per-op launch cost (CUDA graphs). The sampler
//! captures one denoiser evaluation and replays it at every step; inputs
//! change between replays by overwriting the captured input tensors in
//! place ([`Tensor::overwrite_from`]).

use super::{Device, Storage, Tensor};
use crate::backend::cuda::CudaGraphExec;
use crate::{Error, Result};

/// A captured sequence of device work ([`Device::capture`]).
#[derive(Debug)]
pub struct DeviceGraph {
    exec: CudaGraphExec,
}

// Without the `cuda` feature no graph exists, so its methods are unreachable.
#[cfg_attr(not(feature = "cuda"), allow(unreachable_code, unused_variables))]
impl Device {
    /// Records the device work of `work` as a graph instead of running it,
    /// returning the graph and `work`'s value, whose tensors are the
    /// graph's outputs (each replay rewrites them). The same work must have
    /// run once eagerly just before, so that every buffer it needs is in
    /// the device's pool. Fails with [`Error::Unsupported`] on the CPU, and
    /// with the driver's reason when the work cannot be recorded (it then
    /// ran nowhere; run it eagerly).
    pub fn capture<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<(DeviceGraph, T)> {
        match self {
            Device::Cpu => Err(Error::Unsupported(
                "graph capture needs a CUDA device".into(),
            )),
            Device::Cuda(d) => {
                let (exec, value) = d.capture(work)?;
                Ok((DeviceGraph { exec }, value))
            }
        }
    }
}

#[cfg_attr(not(feature = "cuda"), allow(unreachable_code))]
impl DeviceGraph {
    /// Queues one replay (asynchronous, like any device op).
    pub fn replay(&self) -> Result<()> {
        self.exec.replay()
    }
}

#[cfg_attr(not(feature = "cuda"), allow(unreachable_code, unused_variables))]
impl Tensor {
    /// Overwrites this tensor's values with `src`'s (same shape and type,
    /// same GPU) in place: how a graph's captured inputs get new values
    /// before a replay. Every clone of this tensor sees the change, so use
    /// it only on tensors you own alone. CUDA tensors only.
    pub fn overwrite_from(&self, src: &Tensor) -> Result<()> {
        if self.dims() != src.dims() {
            return Err(Error::invalid(format!(
                "overwrite_from: shape {:?} into {:?}",
                src.dims(),
                self.dims()
            )));
        }
        match (self.storage(), src.storage()) {
            (Storage::Cuda(dst), Storage::Cuda(s)) => dst.overwrite_from(s),
            _ => Err(Error::Unsupported(
                "overwrite_from: in-place writes are for CUDA tensors".into(),
            )),
        }
    }
}

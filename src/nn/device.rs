//! Devices, precisions and load options: where a model's tensors live and
//! in which element type, as core library types (the C ABI and the CLI only
//! convert their own representations to these).

use crate::backend::cuda::CudaDevice;
use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Element type of a tensor's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float: the CPU back-end's type, and the GPU's for sampler
    /// state that accumulates over many steps.
    F32,
    /// 16-bit IEEE float: GPU activations and weights (math in f32).
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    /// The largest integer n such that 0..=n are all exact values of the
    /// type (2^24 for f32, 2^11 for f16).
    pub fn max_exact_integer(self) -> usize {
        match self {
            DType::F32 => 1 << 24,
            DType::F16 => 1 << 11,
        }
    }
}

/// Which kind of device a [`DeviceSpec`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Host memory and CPU threads; always available.
    Cpu,
    /// An NVIDIA GPU through CUDA (needs the `cuda` feature, a driver and a
    /// device).
    Cuda,
}

/// A device as the caller names it, before it is opened: `cpu`, `cuda` or
/// `cuda:N`. Plain data, so it can sit in option structs and be parsed from
/// a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// CPU or CUDA.
    pub kind: DeviceKind,
    /// Ordinal of the GPU (0 for the first); always 0 for the CPU.
    pub index: usize,
}

impl DeviceSpec {
    /// The CPU.
    pub const CPU: DeviceSpec = DeviceSpec {
        kind: DeviceKind::Cpu,
        index: 0,
    };

    /// GPU number `index`.
    pub fn cuda(index: usize) -> DeviceSpec {
        DeviceSpec {
            kind: DeviceKind::Cuda,
            index,
        }
    }

    /// Opens the device. The CPU always opens; CUDA fails with
    /// [`Error::Device`] saying what is missing (no CUDA in this build, no
    /// driver, no such device, kernels not loadable), never silently falling
    /// back to the CPU.
    pub fn open(self) -> Result<Device> {
        match self.kind {
            DeviceKind::Cpu if self.index == 0 => Ok(Device::Cpu),
            DeviceKind::Cpu => Err(Error::invalid(format!(
                "device index {} for the CPU: the CPU has only index 0",
                self.index
            ))),
            DeviceKind::Cuda => CudaDevice::open(self.index).map(Device::Cuda),
        }
    }
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec::CPU
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.index),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<DeviceSpec> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => return Ok(DeviceSpec::CPU),
            "cuda" | "gpu" => return Ok(DeviceSpec::cuda(0)),
            _ => {}
        }
        if let Some(n) = lower
            .strip_prefix("cuda:")
            .or_else(|| lower.strip_prefix("gpu:"))
        {
            if let Ok(index) = n.parse::<usize>() {
                return Ok(DeviceSpec::cuda(index));
            }
        }
        Err(Error::invalid(format!(
            "device `{s}`: expected `cpu`, `cuda` or `cuda:N`"
        )))
    }
}

/// Arithmetic precision requested for a model's weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// The device's best: F32 on the CPU, F16 storage (F32 math) on a GPU.
    #[default]
    Auto,
    /// 32-bit storage and math.
    F32,
    /// 16-bit storage, 32-bit accumulation (GPU only).
    F16,
}

/// Where and how a model runs: the core form of the C ABI's
/// `claim_load_options` and the CLI's `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// The device to load onto.
    pub device: DeviceSpec,
    /// The precision of the model's storage.
    pub precision: Precision,
}

impl LoadOptions {
    /// Opens the device and picks the storage type: errors when the device
    /// cannot be opened ([`Error::Device`]) or cannot compute at the asked
    /// precision ([`Error::Unsupported`], e.g. F16 on the CPU).
    pub fn resolve(&self) -> Result<(Device, DType)> {
        let device = self.device.open()?;
        let dtype = device.dtype_for(self.precision)?;
        Ok((device, dtype))
    }
}

/// An opened device. Cheap to clone (a GPU is a shared handle).
#[derive(Clone, Debug)]
pub enum Device {
    /// Host memory, computed by `backend::cpu`.
    Cpu,
    /// A CUDA GPU, computed by `backend::cuda`.
    Cuda(CudaDevice),
}

impl Device {
    /// The spec this device was opened from.
    pub fn spec(&self) -> DeviceSpec {
        match self {
            Device::Cpu => DeviceSpec::CPU,
            Device::Cuda(d) => DeviceSpec::cuda(d.ordinal()),
        }
    }

    /// Waits until all work queued on the device has finished (a no-op on
    /// the CPU, whose ops return finished): for timing and at hand-overs.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(d) => d.synchronize(),
        }
    }

    /// Bytes of memory free on the device now, for sizing batches: `None`
    /// on the CPU (host memory is not budgeted this way) or when the GPU
    /// cannot be asked.
    pub fn free_memory(&self) -> Option<usize> {
        match self {
            Device::Cpu => None,
            Device::Cuda(d) => d.free_memory().ok(),
        }
    }

    /// Whether two devices are the same one.
    pub fn same(&self, other: &Device) -> bool {
        self.spec() == other.spec()
    }

    /// The storage type for `precision` on this device.
    pub fn dtype_for(&self, precision: Precision) -> Result<DType> {
        match (self, precision) {
            (Device::Cpu, Precision::Auto | Precision::F32) => Ok(DType::F32),
            (Device::Cpu, Precision::F16) => Err(Error::Unsupported(
                "F16 precision on the CPU (the CPU back-end computes in F32; use F32 or Auto)"
                    .into(),
            )),
            (Device::Cuda(_), Precision::Auto | Precision::F16) => Ok(DType::F16),
            // The GPU's network kernels store F16 (fp32 math); F32 storage
            // for them is not built yet.
            (Device::Cuda(_), Precision::F32) => Err(Error::Unsupported(
                "F32 precision on CUDA (the GPU back-end stores network tensors in F16 with \
                 F32 arithmetic; use F16 or Auto)"
                    .into(),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print() -> Result<()> {
        assert_eq!("cpu".parse::<DeviceSpec>()?, DeviceSpec::CPU);
        assert_eq!("CUDA".parse::<DeviceSpec>()?, DeviceSpec::cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>()?, DeviceSpec::cuda(3));
        assert_eq!(DeviceSpec::cuda(2).to_string(), "cuda:2");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        Ok(())
    }

    #[test]
    fn cpu_resolves_to_f32_and_refuses_f16() -> Result<()> {
        let (dev, dtype) = LoadOptions::default().resolve()?;
        assert!(matches!(dev, Device::Cpu));
        assert_eq!(dtype, DType::F32);
        let f16 = LoadOptions {
            precision: Precision::F16,
            ..LoadOptions::default()
        };
        assert!(matches!(f16.resolve(), Err(Error::Unsupported(_))));
        let bad = DeviceSpec {
            kind: DeviceKind::Cpu,
            index: 1,
        };
        assert!(matches!(bad.open(), Err(Error::InvalidArgument(_))));
        Ok(())
    }
}

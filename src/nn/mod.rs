//! The neural-network engine: tensors, ops and weight loading.
//!
//! A [`Tensor`] is a shape plus a reference-counted [`Storage`] on a device.
//! Every op is a method on `Tensor` (see [`ops`]) that validates shapes once
//! and dispatches on the storage variant to the kernel of that device in
//! [`crate::backend`]. Ops never mutate their inputs, so a reverse-mode tape
//! can later record them for training. Models ([`crate::models`]) load their
//! parameters through [`weights::VarBuilder`], whose paths are the PyTorch
//! `state_dict` keys.

pub mod autograd;
pub mod device;
#[cfg(test)]
mod gradcheck;
pub mod graph;
pub mod layers;
pub mod loss;
pub mod ops;
pub mod storage;
pub mod tensor;
pub mod weights;

pub use autograd::{no_grad, Gradients};
pub use device::{DType, Device, DeviceKind, DeviceSpec, LoadOptions, Precision};
pub use graph::DeviceGraph;
pub use ops::Conv3dParams;
pub use ops::ConvParams;
pub use storage::Storage;
pub use tensor::Tensor;
pub use weights::{VarBuilder, Weights};

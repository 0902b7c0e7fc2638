//! Device back-ends: the numeric kernels behind [`crate::nn`] ops.
//!
//! Kernels here work on plain slices plus explicit sizes; they know nothing
//! about [`crate::nn::Tensor`]. Each `nn` op checks shapes once and then
//! dispatches on the tensor's storage to the kernel of its device. Today only
//! the CPU (f32, rayon threads) exists; a CUDA back-end (fp16 storage) slots in
//! beside it as `backend::cuda` with the same kernel list.

pub mod cpu;

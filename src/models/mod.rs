//! Networks built from [`crate::nn`] layers: the LeFusion/CLAIM denoiser
//! and nnU-Net's PlainConvUNet.
//!
//! Each model is a plain struct whose parameter paths are the upstream
//! PyTorch `state_dict` keys, loaded through [`crate::nn::VarBuilder`].
pub mod builtin;
pub mod denoiser;
pub mod plain_unet;

pub use denoiser::{CapturedDenoiser, Denoiser, DenoiserConfig};
pub use plain_unet::{PlainConvUNet, PlainUNetConfig};

//! Training: datasets ([`data`]), the denoiser's diffusion objective
//! ([`diffusion`]) and the segmenter's deep-supervised Dice + CE loss
//! ([`seg_loss`]), all on the reverse-mode autograd of [`crate::nn`].
pub mod checkpoint;
pub mod data;
pub mod diffusion;
pub mod log;
pub mod optim;
pub mod seg_loss;

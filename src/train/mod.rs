//! Training: datasets ([`data`]), the denoiser's diffusion objective
//! ([`diffusion`]), nnU-Net's segmenter recipe ([`segmenter`], with
//! [`augment`] and the deep-supervised Dice + CE loss of [`seg_loss`]),
//! optimisers ([`optim`]), checkpoints and logs, all on the reverse-mode
//! autograd of [`crate::nn`].
pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod diffusion;
pub mod log;
pub mod optim;
pub mod seg_loss;
pub mod segmenter;

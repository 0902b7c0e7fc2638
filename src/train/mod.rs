//! Training: datasets ([`data`]), the denoiser's diffusion objective
//! ([`diffusion`]), nnU-Net's segmenter recipe ([`segmenter`], with
//! [`augment`] and the deep-supervised Dice + CE loss of [`seg_loss`]),
//! optimisers ([`optim`]), checkpoints and logs, all on the reverse-mode
//! autograd of [`crate::nn`], on the CPU or a GPU in mixed precision
//! ([`compute`]).
pub mod augment;
pub mod checkpoint;
pub mod compute;
pub mod data;
pub mod diffusion;
pub mod joint;
pub mod log;
pub mod optim;
pub mod resident;
pub mod seg_loss;
pub mod segmenter;

/// What one training step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step's number (0-based).
    pub step: u64,
    /// The batch's loss.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// The global gradient norm before clipping (infinite on a skipped
    /// step).
    pub grad_norm: f32,
    /// Whether the update was skipped because the scaled gradients
    /// overflowed (mixed precision; the loss scale was halved).
    pub skipped: bool,
}

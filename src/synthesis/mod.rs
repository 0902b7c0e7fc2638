//! Scar synthesis with the LeFusion/CLAIM denoiser: the cosine schedule,
//! RePaint with jumps, the histogram condition and the volume pipeline
//! (spec: `shared/reference/diffusion.md`).
//!
//! - [`schedule`]: schedule buffers, the ancestral reverse step, re-noising
//!   of the known region, the jump back up, and the jump time list;
//! - [`condition`]: the CLAIM EMIDEC preset, user values, measured
//!   histograms and the upstream 10 % perturbation;
//! - [`repaint`]: RePaint over one batch with progress and cancellation;
//! - [`pipeline`]: volume in, volume out ([`synthesize`]).
//!
//! Every random draw comes from [`crate::rng::Rng`] streams forked from the
//! seed per item, so a seed gives the same image on every run, thread and
//! batch size.

pub mod condition;
pub mod pipeline;
pub mod repaint;
pub mod schedule;

pub use condition::{Condition, CLAIM_EMIDEC_CENTRE, HISTOGRAM_BINS};
pub use pipeline::{measure_histogram, synthesize, Synthesis, SynthesisParams, CLAIM_CROP_SIZE};
pub use repaint::{BatchNoise, InpaintBatch, Progress, SamplerParams};
pub use schedule::{evaluation_count, jump_schedule, JumpParams, Schedule, TIMESTEPS};

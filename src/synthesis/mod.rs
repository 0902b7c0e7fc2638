//! Scar synthesis with the LeFusion/CLAIM denoiser: the cosine schedule,
//! RePaint with jumps, the histogram condition and the volume pipeline
//! (spec: `shared/reference/diffusion.md`).
//!
//! - [`schedule`]: schedule buffers, the ancestral reverse step, re-noising
//!   of the known region, the jump back up, and the jump time list;
//! - [`condition`]: the built-in presets (CLAIM's EMIDEC centre; LeFusion's
//!   EMIDEC scar and MVO centres), user values per channel, measured
//!   histograms and the upstream 10 % perturbation;
//! - [`repaint`]: RePaint over one batch with progress and cancellation;
//! - [`pipeline`]: volume in, volume out ([`synthesize`]) for every
//!   upstream layout: one-channel 2-D (CLAIM), two-channel scar + MVO 3-D
//!   (LeFusion-EMIDEC), with the channel ↔ label map and 3-D windows.
//!
//! Every random draw comes from [`crate::rng::Rng`] streams forked from the
//! seed per item, so a seed gives the same image on every run, thread and
//! batch size.

pub mod condition;
pub mod pipeline;
pub mod repaint;
pub mod schedule;

pub use condition::{
    preset_histogram, ChannelHistogram, ChannelTissue, Condition, CLAIM_EMIDEC_CENTRE,
    HISTOGRAM_BINS, LEFUSION_EMIDEC_MVO_CENTRE, LEFUSION_EMIDEC_SCAR_CENTRE,
};
pub use pipeline::{
    compose, default_channel_labels, default_frames, measure_channel_histograms, measure_histogram,
    measure_label_histogram, synthesize, training_windows, Layout, Synthesis, SynthesisParams,
    TrainingWindow, CLAIM_CROP_SIZE, LEFUSION_EMIDEC_FRAMES, MAX_CHANNELS,
};
pub use repaint::{BatchNoise, InpaintBatch, Progress, SamplerParams};
pub use schedule::{evaluation_count, jump_schedule, JumpParams, Schedule, TIMESTEPS};

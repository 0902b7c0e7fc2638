//! Training the LeFusion/CLAIM denoiser (spec: `diffusion.md`, "Training
//! objective").
//!
//! Each step draws a batch of training windows (cut and scaled exactly as
//! synthesis cuts them, [`training_windows`]), a timestep `t` uniform in
//! `[0, T)` and noise ε per item, forms `x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`, and
//! minimises the lesion-focused L1 `mean |m·ε − m·ε̂|` (each channel masked
//! by its own label). The histogram condition is measured from the window;
//! with probability `null_cond_prob` it is replaced by the learned null
//! condition (enabling classifier-free guidance). Items are flipped left–
//! right with probability ½ (upstream's only augmentation).
//!
//! Every random draw of step `s` comes from a generator seeded by (seed,
//! s), so a resumed run repeats an uninterrupted one bit for bit.

use crate::models::{Denoiser, DenoiserConfig};
use crate::nn::{Gradients, Tensor, Weights};
use crate::rng::Rng;
use crate::synthesis::{training_windows, Schedule, SynthesisParams, TrainingWindow, TIMESTEPS};
use crate::train::data::TrainingData;
use crate::{Error, Result};

/// What a diffusion training run does.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusionTrainConfig {
    /// The network (CLAIM's by default).
    pub model: DenoiserConfig,
    /// Frames per window: 1 for a 2-D model; 0 = the layout's default
    /// (10 for a two-channel model, as synthesis).
    pub frames: usize,
    /// In-plane window side (a multiple of the model's downsampling).
    pub crop_size: usize,
    /// The label each channel learns (empty = scar, then MVO).
    pub channel_labels: Vec<i32>,
    /// Windows per step.
    pub batch_size: usize,
    /// Probability of replacing an item's histogram by the null condition.
    pub null_cond_prob: f32,
    /// Random left–right flips.
    pub flip: bool,
    /// Seed of the initial weights and of every step's draws.
    pub seed: u64,
}

impl Default for DiffusionTrainConfig {
    fn default() -> Self {
        DiffusionTrainConfig {
            model: DenoiserConfig::claim(),
            frames: 0,
            crop_size: crate::synthesis::CLAIM_CROP_SIZE,
            channel_labels: Vec::new(),
            batch_size: 4,
            null_cond_prob: 0.0,
            flip: true,
            seed: 0,
        }
    }
}

/// The windows of a dataset, ready to batch.
#[derive(Clone, Debug)]
pub struct DiffusionData {
    /// Every window of every case with a lesion.
    pub windows: Vec<TrainingWindow>,
    /// `[F, S, S]` of one window.
    pub window_shape: [usize; 3],
    /// Model channels.
    pub channels: usize,
}

impl DiffusionData {
    /// Cuts the training windows of every case; refuses a dataset without
    /// any lesion (nothing to learn).
    pub fn prepare(data: &TrainingData, config: &DiffusionTrainConfig) -> Result<DiffusionData> {
        let params = SynthesisParams {
            crop_size: config.crop_size,
            frames: config.frames,
            labels: data.scheme,
            channel_labels: config.channel_labels.clone(),
            ..SynthesisParams::default()
        };
        let layout = crate::synthesis::Layout::resolve(&config.model, &params)?;
        let mut windows = Vec::new();
        for case in &data.cases {
            let w = training_windows(&config.model, &case.image, &case.labels, &params)
                .map_err(|e| e.context(format!("case {}", case.name)))?;
            windows.extend(w);
        }
        if windows.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no case has a scar or MVO voxel (labels {} / {}): nothing to learn",
                data.source, data.scheme.scar, data.scheme.mvo
            )));
        }
        Ok(DiffusionData {
            windows,
            window_shape: [layout.frames, config.crop_size, config.crop_size],
            channels: layout.channels,
        })
    }
}

/// One training batch: the network's inputs and the loss's targets.
#[derive(Clone, Debug)]
pub struct DiffusionBatch {
    /// `x_t`, `[B, C, F, S, S]`.
    pub noisy: Tensor,
    /// Timesteps, one per item.
    pub timesteps: Vec<f32>,
    /// The noise ε that made `x_t`.
    pub noise: Tensor,
    /// The loss mask, `[B, C, F, S, S]`.
    pub mask: Tensor,
    /// Histogram conditions `[B, cond_dim]` (`None` for an unconditional
    /// model), and which items take the null condition instead.
    pub conditions: Option<(Tensor, Vec<bool>)>,
}

/// Draws step `step`'s batch (a pure function of the data, config and step).
pub fn draw_batch(
    data: &DiffusionData,
    config: &DiffusionTrainConfig,
    schedule: &Schedule,
    step: u64,
) -> Result<DiffusionBatch> {
    let mut rng = Rng::new(config.seed).fork(step.wrapping_add(1));
    let b = config.batch_size;
    let c = data.channels;
    let [f, h, w] = data.window_shape;
    let item = f * h * w;
    let mut x0 = Vec::with_capacity(b * c * item);
    let mut mask = Vec::with_capacity(b * c * item);
    let mut timesteps = Vec::with_capacity(b);
    let mut conds = Vec::new();
    let mut dropped = Vec::with_capacity(b);
    for _ in 0..b {
        let window = &data.windows[rng.below(data.windows.len() as u64) as usize];
        let flip = config.flip && rng.uniform() < 0.5;
        let flipped = |v: &[f32]| -> Vec<f32> {
            if !flip {
                return v.to_vec();
            }
            v.chunks_exact(w)
                .flat_map(|row| row.iter().rev().copied())
                .collect()
        };
        let values = flipped(&window.values);
        for _ in 0..c {
            x0.extend_from_slice(&values);
        }
        mask.extend(flipped(&window.masks));
        timesteps.push(rng.below(TIMESTEPS as u64) as usize);
        conds.extend_from_slice(&window.condition);
        dropped.push(rng.uniform() < f64::from(config.null_cond_prob));
    }
    let mut noise = Vec::with_capacity(x0.len());
    for _ in 0..x0.len() {
        noise.push(rng.normal() as f32);
    }
    let per_item = c * item;
    let noisy: Vec<f32> = x0
        .iter()
        .zip(&noise)
        .enumerate()
        .map(|(i, (x, e))| {
            let t = timesteps[i / per_item];
            schedule.sqrt_alphas_cumprod[t] * x + schedule.sqrt_one_minus_alphas_cumprod[t] * e
        })
        .collect();
    let shape = [b, c, f, h, w];
    let conditions = match config.model.cond_dim {
        Some(dim) => {
            if conds.len() != b * dim {
                return Err(Error::invalid(format!(
                    "the model's condition has {dim} values, the data's {} per item",
                    conds.len() / b.max(1)
                )));
            }
            Some((Tensor::from_vec(conds, &[b, dim])?, dropped))
        }
        None => None,
    };
    Ok(DiffusionBatch {
        noisy: Tensor::from_vec(noisy, &shape)?,
        timesteps: timesteps.iter().map(|t| *t as f32).collect(),
        noise: Tensor::from_vec(noise, &shape)?,
        mask: Tensor::from_vec(mask, &shape)?,
        conditions,
    })
}

/// Whether the parameter `key` is trained (the rotary frequencies are a
/// fixed buffer upstream, stored with the weights).
pub fn is_trainable(key: &str) -> bool {
    !key.ends_with("rotary_emb.freqs")
}

/// The loss of `batch` under the network with parameters `params` (the
/// trainable ones as variables), and its gradients.
pub fn loss_and_gradients(
    config: &DenoiserConfig,
    params: &[(String, Tensor)],
    batch: &DiffusionBatch,
) -> Result<(f32, Gradients)> {
    let weights = Weights::from_tensors(params.iter().cloned())?;
    let model = Denoiser::new(&weights.root(), config)?;
    let rows = match (&batch.conditions, model.null_condition()) {
        (Some((cond, dropped)), Some(null)) => {
            let parts: Vec<Tensor> = dropped
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if *d {
                        Ok(null.clone())
                    } else {
                        cond.narrow(0, i, 1)
                    }
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = parts.iter().collect();
            Some(Tensor::cat(&refs, 0)?)
        }
        _ => None,
    };
    let eps = model.predict_noise(&batch.noisy, &batch.timesteps, rows.as_ref())?;
    let loss = eps.masked_l1_loss(&batch.noise, &batch.mask)?;
    let value = loss.to_vec()?[0];
    if !value.is_finite() {
        return Err(Error::invalid(format!(
            "the training loss is {value}: lower the learning rate"
        )));
    }
    Ok((value, loss.backward()?))
}

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
use crate::train::checkpoint::{load_checkpoint, save_checkpoint, save_parameters, TrainState};
use crate::train::compute::{Compute, SCALER_METADATA_KEY};
use crate::train::data::TrainingData;
use crate::train::optim::{OptimOptions, Optimizer, Parameter};
use crate::train::resident::{
    apply_gradients, ensure_resident, host_parameters, host_view, model_tensors, step_tensors,
    sync_host, update_ema, ResidentState,
};
pub use crate::train::StepReport;
use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What a diffusion training run does.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    let loss = diffusion_loss(config, params, batch, &Compute::cpu())?;
    let value = finite_loss(&loss)?;
    Ok((value, loss.backward()?))
}

/// The loss's value, or an error when it is not finite.
fn finite_loss(loss: &Tensor) -> Result<f32> {
    let value = loss.to_vec()?[0];
    if !value.is_finite() {
        return Err(Error::invalid(format!(
            "the training loss is {value}: lower the learning rate"
        )));
    }
    Ok(value)
}

/// The lesion-focused L1 of `batch` under the network with parameters
/// `params` (a scalar f32 tensor, on the graph of `params`), the network
/// run on `compute`'s device and element type (the parameters and the
/// batch are converted on the way in, the prediction cast to f32 for the
/// loss).
pub fn diffusion_loss(
    config: &DenoiserConfig,
    params: &[(String, Tensor)],
    batch: &DiffusionBatch,
    compute: &Compute,
) -> Result<Tensor> {
    let weights = Weights::from_tensors(params.iter().cloned())?;
    let model = Denoiser::new(&weights.root_on(&compute.device, compute.dtype), config)?;
    let rows = match (&batch.conditions, model.null_condition()) {
        (Some((cond, dropped)), Some(null)) => {
            let parts: Vec<Tensor> = dropped
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if *d {
                        Ok(null.clone())
                    } else {
                        cond.narrow(0, i, 1)?
                            .to_device(&null.device(), null.dtype())
                    }
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = parts.iter().collect();
            Some(Tensor::cat(&refs, 0)?)
        }
        _ => None,
    };
    let eps = model.predict_noise(&batch.noisy, &batch.timesteps, rows.as_ref())?;
    compute
        .for_loss(&eps)?
        .masked_l1_loss(&batch.noise, &batch.mask)
}

/// A loss term added to the diffusion loss of one step: given the step's
/// parameters (trainable ones tracked), a scalar tensor on their graph, or
/// `None` for no term this step.
pub type ExtraLoss<'a> = dyn FnMut(&[(String, Tensor)]) -> Result<Option<Tensor>> + 'a;

/// A diffusion training run: the data's windows, the weights, the
/// optimiser and the weight average. Drive it with [`step`](Self::step);
/// save with [`save_checkpoint`](Self::save_checkpoint) and continue later
/// with [`resume`](Self::resume); write the model synthesis loads with
/// [`export_model`](Self::export_model).
#[derive(Clone, Debug)]
pub struct DiffusionTrainer {
    config: DiffusionTrainConfig,
    options: OptimOptions,
    total_steps: u64,
    data: DiffusionData,
    schedule: Schedule,
    state: TrainState,
    compute: Compute,
    /// The weights and optimiser state on the compute device, when it
    /// keeps them there (`state`'s values are stale then).
    resident: Option<ResidentState>,
    /// The loss scaler's state from the checkpoint this run resumed
    /// (restored when a scaling compute is set).
    resumed_scaler: Option<String>,
}

impl DiffusionTrainer {
    /// A fresh run on `data`: weights initialised as PyTorch initialises
    /// them (seeded by `config.seed`), `total_steps` updates planned (the
    /// rate schedule spans them).
    pub fn new(
        data: &TrainingData,
        config: DiffusionTrainConfig,
        options: OptimOptions,
        total_steps: u64,
    ) -> Result<DiffusionTrainer> {
        check_setup(&config, &options, total_steps)?;
        let prepared = DiffusionData::prepare(data, &config)?;
        let params: Vec<Parameter> = Denoiser::initial_parameters(&config.model, config.seed)?
            .into_iter()
            .map(|(name, t)| {
                Ok(Parameter {
                    trainable: is_trainable(&name),
                    shape: t.dims().to_vec(),
                    values: t.to_vec()?,
                    name,
                })
            })
            .collect::<Result<_>>()?;
        let optimizer = Optimizer::new(options.kind, options.weight_decay, params.len())?;
        let state = TrainState {
            ema: options.ema.map(|_| params.clone()),
            params,
            optimizer,
            step: 0,
            metadata: BTreeMap::new(),
        };
        Ok(DiffusionTrainer {
            config,
            options,
            total_steps,
            data: prepared,
            schedule: Schedule::cosine(TIMESTEPS)?,
            state,
            compute: Compute::cpu(),
            resident: None,
            resumed_scaler: None,
        })
    }

    /// Continues the run saved at `checkpoint` on `data` (which must be the
    /// run's data for a bit-identical continuation), with its configuration
    /// and options; `total_steps` replaces the planned length when given.
    pub fn resume(
        checkpoint: &Path,
        data: &TrainingData,
        total_steps: Option<u64>,
    ) -> Result<DiffusionTrainer> {
        let mut state = load_checkpoint(checkpoint)?;
        let bad = |what: &str| {
            Error::format(format!(
                "{}: not a diffusion training checkpoint ({what})",
                checkpoint.display()
            ))
        };
        if state.metadata.get("trainer").map(String::as_str) != Some("diffusion") {
            return Err(bad("trainer is not 'diffusion'"));
        }
        let config: DiffusionTrainConfig = state
            .metadata
            .get("config")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no readable config"))?;
        let options: OptimOptions = state
            .metadata
            .get("options")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no readable options"))?;
        let planned = state
            .metadata
            .get("total_steps")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no total_steps"))?;
        let total_steps = total_steps.unwrap_or(planned);
        check_setup(&config, &options, total_steps)?;
        if options.ema.is_some() != state.ema.is_some() {
            return Err(bad("the EMA weights do not match the options"));
        }
        // The weights must be the network the config describes.
        let expected = Denoiser::initial_parameters(&config.model, 0)?;
        let same = expected.len() == state.params.len()
            && expected
                .iter()
                .zip(&state.params)
                .all(|((k, t), p)| *k == p.name && t.dims() == p.shape.as_slice());
        if !same {
            return Err(bad("its weights do not match its model configuration"));
        }
        let resumed_scaler = state.metadata.remove(SCALER_METADATA_KEY);
        state.metadata.clear();
        Ok(DiffusionTrainer {
            data: DiffusionData::prepare(data, &config)?,
            config,
            options,
            total_steps,
            schedule: Schedule::cosine(TIMESTEPS)?,
            state,
            compute: Compute::cpu(),
            resident: None,
            resumed_scaler,
        })
    }

    /// Runs the following steps' forward and backward passes on
    /// `compute` (e.g. [`Compute::open`] of a GPU: f16 with dynamic loss
    /// scaling); the f32 weights and optimiser state move to the device
    /// when it keeps them ([`Compute::resident_weights`]), else stay on
    /// the host. A run resumed from a checkpoint takes up its saved loss
    /// scale (in the first compute set after resuming, when it scales its
    /// loss).
    pub fn set_compute(&mut self, compute: Compute) -> Result<()> {
        sync_host(&mut self.state, &mut self.resident)?;
        let compute = compute.resuming(&mut self.resumed_scaler)?;
        ensure_resident(&mut self.state, &mut self.resident, &compute)?;
        self.compute = compute;
        Ok(())
    }

    /// Where the steps compute.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// Starts from `model`'s weights instead of fresh ones (the weight
    /// average too): fine-tuning a trained denoiser. Only before the first
    /// step; the model must have the run's configuration.
    pub fn start_from(&mut self, model: &Denoiser) -> Result<()> {
        if self.state.step != 0 {
            return Err(Error::invalid(
                "a run can start from a model only before its first step",
            ));
        }
        if *model.config() != self.config.model {
            return Err(Error::invalid(format!(
                "the starting model's configuration {:?} differs from the run's {:?}",
                model.config(),
                self.config.model
            )));
        }
        use crate::nn::layers::Module as _;
        sync_host(&mut self.state, &mut self.resident)?;
        let loaded: HashMap<String, Tensor> = model.named_parameters().into_iter().collect();
        for p in &mut self.state.params {
            let t = loaded
                .get(&p.name)
                .ok_or_else(|| Error::Model(format!("the starting model lacks `{}`", p.name)))?;
            if t.dims() != p.shape.as_slice() {
                return Err(Error::Model(format!(
                    "the starting model's `{}` has shape {:?}, the run's {:?}",
                    p.name,
                    t.dims(),
                    p.shape
                )));
            }
            p.values = t.to_vec()?;
        }
        if let Some(ema) = self.state.ema.as_mut() {
            ema.clone_from(&self.state.params);
        }
        Ok(())
    }

    /// The run's configuration.
    pub fn config(&self) -> &DiffusionTrainConfig {
        &self.config
    }

    /// The run's optimisation options.
    pub fn options(&self) -> &OptimOptions {
        &self.options
    }

    /// Updates done so far.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// The planned number of updates.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Training windows available.
    pub fn window_count(&self) -> usize {
        self.data.windows.len()
    }

    /// The current weights (copied from the device when it keeps them).
    pub fn parameters(&self) -> Result<Cow<'_, [Parameter]>> {
        host_parameters(&self.state, &self.resident, false)
    }

    /// The weights synthesis should use: the EMA when the run keeps one
    /// (copied from the device when it keeps them).
    pub fn model_parameters(&self) -> Result<Cow<'_, [Parameter]>> {
        host_parameters(&self.state, &self.resident, true)
    }

    /// The current weights as named tensors where they live (on the
    /// compute device when it keeps them), trainable ones as variables
    /// when `track`: what a loss over the generator's weights starts from.
    pub fn parameter_tensors(&self, track: bool) -> Result<Vec<(String, Tensor)>> {
        step_tensors(&self.state, &self.resident, track)
    }

    /// [`model_parameters`](Self::model_parameters) as untracked named
    /// tensors where they live.
    pub fn model_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        model_tensors(&self.state, &self.resident)
    }

    /// One update: draw the step's batch, compute the loss and gradients,
    /// clip, update the weights and the average. A non-finite loss is an
    /// error and changes nothing; so is a non-finite gradient, except under
    /// loss scaling, where the update is skipped and the scale halved (the
    /// report says so).
    pub fn step(&mut self) -> Result<StepReport> {
        Ok(self.step_with(&mut |_| Ok(None))?.0)
    }

    /// [`step`](Self::step) with `extra`'s term added to the loss before
    /// the gradients are taken (CLAIM's joint loop adds the segmenter's
    /// loss on the network's one-step estimate). The report's loss is the
    /// diffusion loss; the term's value comes second.
    pub fn step_with(&mut self, extra: &mut ExtraLoss<'_>) -> Result<(StepReport, Option<f32>)> {
        let step = self.state.step;
        let batch = draw_batch(&self.data, &self.config, &self.schedule, step)?;
        ensure_resident(&mut self.state, &mut self.resident, &self.compute)?;
        let tensors = step_tensors(&self.state, &self.resident, true)?;
        let diffusion = diffusion_loss(&self.config.model, &tensors, &batch, &self.compute)?;
        let loss = finite_loss(&diffusion)?;
        let (total, term) = match extra(&tensors)? {
            Some(term) => {
                let value = term.to_vec()?.first().copied().unwrap_or(f32::NAN);
                if !value.is_finite() {
                    return Err(Error::invalid(format!(
                        "step {step}: the added loss term is {value}"
                    )));
                }
                (diffusion.add(&term)?, Some(value))
            }
            None => (diffusion, None),
        };
        let mut grads = self.compute.backward(&total)?;
        drop(total);
        let lr = self.options.policy(self.total_steps).at(step);
        let applied = apply_gradients(
            &mut self.state,
            &mut self.resident,
            &tensors,
            &mut grads,
            &self.compute,
            self.options.grad_clip,
            lr,
        )?;
        drop((grads, tensors));
        let Some(norm) = applied else {
            self.compute.update(true);
            self.state.step += 1;
            let report = StepReport {
                step,
                loss,
                lr,
                grad_norm: f32::INFINITY,
                skipped: true,
            };
            return Ok((report, term));
        };
        if let Some(policy) = self.options.ema {
            update_ema(&mut self.state, &mut self.resident, &policy, step)?;
        }
        self.compute.update(false);
        self.state.step += 1;
        Ok((
            StepReport {
                step,
                loss,
                lr,
                grad_norm: norm,
                skipped: false,
            },
            term,
        ))
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The training windows.
    pub fn data(&self) -> &DiffusionData {
        &self.data
    }

    /// Saves everything [`resume`](Self::resume) needs.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut state = host_view(&self.state, &self.resident)?.into_owned();
        state.metadata = BTreeMap::from([
            ("trainer".to_string(), "diffusion".to_string()),
            ("config".to_string(), to_json(&self.config)?),
            ("options".to_string(), to_json(&self.options)?),
            ("total_steps".to_string(), self.total_steps.to_string()),
        ]);
        if let Some(scaler) = self.compute.scaler_metadata()? {
            state
                .metadata
                .insert(SCALER_METADATA_KEY.to_string(), scaler);
        }
        save_checkpoint(path, &state)
    }

    /// Writes the model (the EMA weights when kept) under upstream keys:
    /// what `claim synth` loads and PyTorch's `Unet3D.load_state_dict`
    /// takes with `strict=True`.
    pub fn export_model(&self, path: &Path) -> Result<()> {
        let metadata = HashMap::from([
            ("format".to_string(), "claim-diffusion".to_string()),
            (
                "part".to_string(),
                if self.state.ema.is_some() {
                    "ema"
                } else {
                    "model"
                }
                .to_string(),
            ),
            ("steps".to_string(), self.state.step.to_string()),
            ("train_config".to_string(), to_json(&self.config)?),
        ]);
        save_parameters(path, &self.model_parameters()?, metadata)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::invalid(format!("settings as JSON: {e}")))
}

/// Refuses settings that cannot train, before any work.
fn check_setup(
    config: &DiffusionTrainConfig,
    options: &OptimOptions,
    total_steps: u64,
) -> Result<()> {
    if config.batch_size == 0 {
        return Err(Error::invalid("the batch size must be ≥ 1"));
    }
    if !(0.0..=1.0).contains(&config.null_cond_prob) {
        return Err(Error::invalid(format!(
            "null-condition probability {} is not in [0, 1]",
            config.null_cond_prob
        )));
    }
    if total_steps == 0 {
        return Err(Error::invalid("the number of steps must be ≥ 1"));
    }
    if !options.lr.is_finite() || options.lr <= 0.0 {
        return Err(Error::invalid(format!(
            "learning rate {} is not > 0",
            options.lr
        )));
    }
    if let Some(clip) = options.grad_clip {
        if !clip.is_finite() || clip <= 0.0 {
            return Err(Error::invalid(format!(
                "gradient clipping norm {clip} is not > 0"
            )));
        }
    }
    if let Some(ema) = options.ema {
        if !(0.0..1.0).contains(&ema.decay) || ema.every == 0 {
            return Err(Error::invalid(format!(
                "EMA decay {} must be in [0, 1) and its period ≥ 1",
                ema.decay
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::phantom_dataset;
    use crate::train::optim::EmaPolicy;

    /// A 2-D denoiser small enough to train in a unit test.
    fn tiny_config(seed: u64) -> DiffusionTrainConfig {
        DiffusionTrainConfig {
            model: DenoiserConfig {
                dim: 16,
                dim_mults: vec![1, 2],
                channels: 1,
                cond_dim: Some(16),
                attn_heads: 2,
                attn_dim_head: 8,
                init_kernel_size: 7,
                resnet_groups: 8,
                use_sparse_linear_attn: true,
            },
            frames: 1,
            crop_size: 32,
            batch_size: 2,
            null_cond_prob: 0.2,
            seed,
            ..DiffusionTrainConfig::default()
        }
    }

    fn options() -> OptimOptions {
        OptimOptions {
            lr: 1e-3,
            grad_clip: Some(1.0),
            ema: Some(EmaPolicy {
                decay: 0.9,
                every: 2,
                start: 3,
            }),
            ..OptimOptions::diffusion()
        }
    }

    #[test]
    fn a_resumed_run_repeats_an_uninterrupted_one_bit_for_bit() {
        let data = phantom_dataset(2, 5, 96, 4).unwrap();
        let mut straight = DiffusionTrainer::new(&data, tiny_config(3), options(), 6).unwrap();
        let t = std::time::Instant::now();
        let losses: Vec<f32> = (0..6).map(|_| straight.step().unwrap().loss).collect();
        eprintln!(
            "{} windows, 6 steps in {:?}",
            straight.window_count(),
            t.elapsed()
        );

        let mut first = DiffusionTrainer::new(&data, tiny_config(3), options(), 6).unwrap();
        for _ in 0..4 {
            first.step().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("run.ckpt.safetensors");
        first.save_checkpoint(&ckpt).unwrap();
        let mut resumed = DiffusionTrainer::resume(&ckpt, &data, None).unwrap();
        assert_eq!(resumed.step_count(), 4);
        let tail: Vec<f32> = (0..2).map(|_| resumed.step().unwrap().loss).collect();
        assert_eq!(tail, losses[4..]);
        assert_eq!(
            resumed.parameters().unwrap(),
            straight.parameters().unwrap()
        );
        assert_eq!(
            resumed.model_parameters().unwrap(),
            straight.model_parameters().unwrap()
        );
        assert_ne!(
            straight.parameters().unwrap(),
            straight.model_parameters().unwrap(),
            "EMA lags"
        );
    }

    /// The mixed-precision step's loss scaling, on the CPU in f32: a
    /// power-of-two scale is exact (the same losses and weights bit for
    /// bit), an overflow skips the update and halves the scale, and the
    /// scale survives a checkpoint.
    /// Weights resident on the compute device (the CPU here, running the
    /// code a GPU runs) train exactly as host weights do, EMA included;
    /// starting from a model and exporting work on them too.
    #[test]
    fn resident_weights_train_as_host_weights() {
        let data = phantom_dataset(2, 5, 96, 4).unwrap();
        let mut host = DiffusionTrainer::new(&data, tiny_config(3), options(), 4).unwrap();
        let mut dev = host.clone();
        let scaled = |resident_weights| Compute::cpu_scaled(512.0, resident_weights);
        host.set_compute(scaled(false)).unwrap();
        dev.set_compute(scaled(true)).unwrap();
        assert!(dev.resident.is_some());
        for _ in 0..3 {
            assert_eq!(host.step().unwrap(), dev.step().unwrap());
        }
        assert_eq!(host.parameters().unwrap(), dev.parameters().unwrap());
        assert_eq!(
            host.model_parameters().unwrap(),
            dev.model_parameters().unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        host.save_checkpoint(&a).unwrap();
        dev.save_checkpoint(&b).unwrap();
        assert!(load_checkpoint(&a).unwrap() == load_checkpoint(&b).unwrap());
        dev.export_model(&b).unwrap();
        let exported = Weights::load(&b).unwrap();
        for p in host.model_parameters().unwrap().iter() {
            assert!(exported.peek(&p.name).unwrap().to_vec().unwrap() == p.values);
        }
        let tensors = dev.model_tensors().unwrap();
        assert!(tensors.iter().all(|(_, t)| !t.is_tracked()));
        // The resumed run, resident from its first step, goes on as the
        // host run does.
        let mut resumed = DiffusionTrainer::resume(&b, &data, None);
        assert!(resumed.is_err(), "an exported model is not a checkpoint");
        host.save_checkpoint(&a).unwrap();
        resumed = DiffusionTrainer::resume(&a, &data, None);
        let mut resumed = resumed.unwrap();
        resumed.set_compute(scaled(true)).unwrap();
        assert_eq!(host.step().unwrap(), resumed.step().unwrap());
        assert_eq!(
            host.model_parameters().unwrap(),
            resumed.model_parameters().unwrap()
        );
        // Starting from a model brings resident weights home first.
        let mut fresh = DiffusionTrainer::new(&data, tiny_config(3), options(), 4).unwrap();
        fresh.set_compute(scaled(true)).unwrap();
        let config = tiny_config(3).model;
        let weights = crate::nn::Weights::from_tensors(host.model_tensors().unwrap()).unwrap();
        let model = Denoiser::new(&weights.root(), &config).unwrap();
        fresh.start_from(&model).unwrap();
        assert_eq!(
            fresh.parameters().unwrap(),
            host.model_parameters().unwrap()
        );
        fresh.step().unwrap();
    }

    #[test]
    fn loss_scaling_is_exact_and_an_overflow_skips_the_update() {
        use crate::train::compute::GradScaler;
        let data = phantom_dataset(2, 5, 96, 4).unwrap();
        let mut plain = DiffusionTrainer::new(&data, tiny_config(3), options(), 3).unwrap();
        let mut scaled = plain.clone();
        scaled
            .set_compute(Compute {
                scaler: Some(GradScaler::with_scale(1024.0).unwrap()),
                ..Compute::cpu()
            })
            .unwrap();
        for _ in 0..3 {
            let (a, b) = (plain.step().unwrap(), scaled.step().unwrap());
            assert_eq!(
                (a.loss, a.grad_norm, a.skipped),
                (b.loss, b.grad_norm, b.skipped)
            );
        }
        assert_eq!(plain.parameters().unwrap(), scaled.parameters().unwrap());
        assert_eq!(
            plain.model_parameters().unwrap(),
            scaled.model_parameters().unwrap()
        );

        let mut overflowing = DiffusionTrainer::new(&data, tiny_config(3), options(), 3).unwrap();
        let before = overflowing.parameters().unwrap().to_vec();
        let infinite = GradScaler {
            scale: f32::INFINITY,
            ..GradScaler::default()
        };
        overflowing
            .set_compute(Compute {
                scaler: Some(infinite),
                ..Compute::cpu()
            })
            .unwrap();
        let report = overflowing.step().unwrap();
        assert!(report.skipped && report.grad_norm.is_infinite());
        assert!(report.loss.is_finite());
        assert_eq!(overflowing.step_count(), 1, "a skipped update still counts");
        assert_eq!(overflowing.parameters().unwrap(), before.as_slice());
        assert_eq!(overflowing.model_parameters().unwrap(), before.as_slice());

        // The scale is saved with the run and taken up on resume by a
        // compute that scales; one that does not keeps none.
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("run.ckpt.safetensors");
        scaled.save_checkpoint(&ckpt).unwrap();
        let mut resumed = DiffusionTrainer::resume(&ckpt, &data, Some(5)).unwrap();
        resumed
            .set_compute(Compute {
                scaler: Some(GradScaler::default()),
                ..Compute::cpu()
            })
            .unwrap();
        assert_eq!(resumed.compute().scaler, scaled.compute().scaler);
        assert_eq!(resumed.compute().loss_scale(), 1024.0);
        let mut unscaled = DiffusionTrainer::resume(&ckpt, &data, Some(5)).unwrap();
        unscaled.set_compute(Compute::cpu()).unwrap();
        assert_eq!(unscaled.compute().scaler, None);
    }

    #[test]
    fn bad_settings_are_refused_before_any_work() {
        let data = phantom_dataset(1, 5, 96, 2).unwrap();
        let mut config = tiny_config(0);
        config.batch_size = 0;
        assert!(DiffusionTrainer::new(&data, config, options(), 5).is_err());
        assert!(DiffusionTrainer::new(&data, tiny_config(0), options(), 0).is_err());
        let mut bad_lr = options();
        bad_lr.lr = f32::NAN;
        assert!(DiffusionTrainer::new(&data, tiny_config(0), bad_lr, 5).is_err());
    }
}

//! CLAIM's joint loop, made to work (`diffusion.md`, "CLAIM's joint
//! training").
//!
//! Upstream's joint step computes the segmenter's loss on an argmax, so
//! neither network learns from it. Here every generator step is a diffusion
//! step on the pathological cases, and from `start_step` on, every `every`
//! steps ("joint steps"):
//!
//! 1. the generator's loss gains `λ·L_seg(x̂₀)`: a batch of real windows is
//!    noised to `t < estimate_max_t`, the denoiser's one-step estimate
//!    `x̂₀ = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t` is mapped back to raw intensities
//!    (the window's min–max scaling inverted) and z-scored as the
//!    segmenter's plans normalise the case, and the segmenter (weights
//!    held constant) scores it with the deep-supervised soft Dice + CE
//!    against the window's labels. The gradient flows through the
//!    segmenter into the denoiser; `λ = 0` leaves the term out;
//! 2. `synthetic_cases` normal cases get a SMILE mask each (pattern,
//!    territory, burden and MVO drawn from [`MaskDistribution`]), the
//!    generator's current model weights paint scar into them with a short
//!    RePaint schedule, and the segmenter takes one optimiser step on a
//!    batch mixing real training patches (`real_fraction` of the items) and
//!    patches of these synthetic cases, with the soft Dice + CE that
//!    really updates it.
//!
//! The generator's estimate is fed to the segmenter at the window's own
//! in-plane resolution (the segmenter's plans usually have the data's
//! spacing; where they differ this is an approximation), cropped to the
//! largest size the segmenter's pooling divides. The segmenter must be a
//! `2d` configuration with unmasked z-score normalisation (nnU-Net's
//! choice for MR).
//!
//! Every random draw of step `s` comes from generators seeded by
//! (seed, s), so a resumed run repeats an uninterrupted one bit for bit.

use crate::models::{Denoiser, PlainConvUNet};
use crate::nn::{Tensor, Weights};
use crate::rng::Rng;
use crate::smile::aha::{self, AhaParams};
pub use crate::smile::MaskDistribution;
use crate::smile::{Pattern, SmileContext, SmileParams};
use crate::synthesis::{synthesize, Condition, JumpParams, SynthesisParams, TIMESTEPS};
use crate::train::compute::Compute;
use crate::train::data::{TrainingCase, TrainingData};
use crate::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use crate::train::optim::OptimOptions;
use crate::train::seg_loss::dice_ce_loss;
use crate::train::segmenter::{
    classes_of, head_targets, PreparedCase, SegTrainConfig, SegmenterTrainer, CONFIGURATION_2D,
};
use crate::train::StepReport;
use crate::volume::{Image, Volume};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the joint loop adds to the two trainings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JointConfig {
    /// The first joint step (upstream: 5000).
    pub start_step: u64,
    /// Generator steps between joint steps (upstream: 10).
    pub every: u64,
    /// Weight λ of the segmenter's loss in the generator's (upstream:
    /// 0.01); 0 turns the term off.
    pub lambda: f32,
    /// Fraction of the segmenter's batch items taken from real cases.
    pub real_fraction: f64,
    /// Normal cases synthesised per joint step.
    pub synthetic_cases: usize,
    /// How their masks are drawn.
    pub masks: MaskDistribution,
    /// RePaint start t_T of the synthesis (short: 100).
    pub synth_t_start: usize,
    /// RePaint jump length L.
    pub synth_jump_length: usize,
    /// RePaint jump count R.
    pub synth_jump_n_sample: usize,
    /// Windows of the one-step-estimate term.
    pub estimate_batch: usize,
    /// The estimate's `t` is uniform in `[0, estimate_max_t)`: at larger
    /// `t`, x̂₀ is too blurred for a segmentation to mean anything.
    pub estimate_max_t: usize,
    /// Seed of the joint draws (masks, synthesis, estimate batches).
    pub seed: u64,
    /// Lesion slices of each synthetic case that are painted and trained
    /// on (drawn at random; 0 = all of them). A 2d segmenter learns from
    /// slices, and painting two costs a fraction of painting ten.
    pub synthetic_slices: usize,
    /// Joint steps between fresh synthetic cases (1 = every joint step);
    /// in between, the segmenter reuses the last ones (kept in the
    /// checkpoint).
    pub synth_every: u64,
    /// Train the generator (a diffusion step every step). Off: the
    /// generator only paints (from [`generator_init`](Self::generator_init)),
    /// every step is a joint step's segmenter part, and λ must be 0.
    pub train_generator: bool,
    /// A model to start the generator from (a path, or `builtin`), instead
    /// of fresh weights.
    pub generator_init: Option<String>,
}

impl Default for JointConfig {
    fn default() -> Self {
        JointConfig {
            start_step: 5000,
            every: 10,
            lambda: 0.01,
            real_fraction: 0.5,
            synthetic_cases: 1,
            masks: MaskDistribution::default(),
            synth_t_start: 100,
            synth_jump_length: 1,
            synth_jump_n_sample: 1,
            estimate_batch: 4,
            estimate_max_t: 100,
            seed: 0,
            synthetic_slices: 0,
            synth_every: 1,
            train_generator: true,
            generator_init: None,
        }
    }
}

impl JointConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        self.masks.validate()?;
        if self.every == 0 {
            return Err(Error::invalid("joint: every must be ≥ 1"));
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(Error::invalid(format!(
                "joint: λ must be finite and ≥ 0, got {}",
                self.lambda
            )));
        }
        if !(0.0..=1.0).contains(&self.real_fraction) {
            return Err(Error::invalid(format!(
                "joint: the real fraction must be in [0, 1], got {}",
                self.real_fraction
            )));
        }
        if self.synthetic_cases == 0 && self.real_fraction < 1.0 {
            return Err(Error::invalid(
                "joint: no synthetic case per step, but a real fraction below 1",
            ));
        }
        if !self.train_generator && self.lambda != 0.0 {
            return Err(Error::invalid(
                "joint: λ > 0 teaches the generator, which is frozen: give λ = 0",
            ));
        }
        if !self.train_generator && self.generator_init.is_none() && self.real_fraction < 1.0 {
            return Err(Error::invalid(
                "joint: a frozen generator needs a model to start from (generator_init) to paint \
                 synthetic cases",
            ));
        }
        if self.synth_every == 0 {
            return Err(Error::invalid("joint: synth_every must be ≥ 1"));
        }
        if self.estimate_batch == 0 {
            return Err(Error::invalid("joint: the estimate batch must be ≥ 1"));
        }
        if self.estimate_max_t == 0 || self.estimate_max_t > TIMESTEPS {
            return Err(Error::invalid(format!(
                "joint: estimate_max_t must be 1–{TIMESTEPS}, got {}",
                self.estimate_max_t
            )));
        }
        if self.synth_t_start == 0
            || self.synth_t_start > TIMESTEPS
            || self.synth_jump_length == 0
            || self.synth_jump_n_sample == 0
        {
            return Err(Error::invalid(format!(
                "joint: RePaint schedule {}/{}/{}: t_T 1–{TIMESTEPS}, L and R ≥ 1",
                self.synth_t_start, self.synth_jump_length, self.synth_jump_n_sample
            )));
        }
        Ok(())
    }

    /// Whether generator step `step` is a joint step.
    pub fn is_joint_step(&self, step: u64) -> bool {
        !self.train_generator
            || (step >= self.start_step && (step - self.start_step) % self.every.max(1) == 0)
    }

    /// The number of joint steps before `step` (its index when it is one).
    pub fn joint_index(&self, step: u64) -> u64 {
        if !self.train_generator {
            step
        } else {
            self.joint_steps(step)
        }
    }

    /// Joint steps among generator steps `0..total`.
    pub fn joint_steps(&self, total: u64) -> u64 {
        if !self.train_generator {
            return total;
        }
        if total <= self.start_step {
            0
        } else {
            (total - self.start_step - 1) / self.every.max(1) + 1
        }
    }

    fn jump(&self) -> JumpParams {
        JumpParams {
            t_start: self.synth_t_start,
            jump_length: self.synth_jump_length,
            jump_n_sample: self.synth_jump_n_sample,
        }
    }
}

/// A normal case, parcellated once.
#[derive(Clone, Debug)]
struct NormalCase {
    case: TrainingCase,
    segments: Volume<u8>,
}

/// A real window ready for the estimate term: values in [−1, 1], the
/// affine map to the segmenter's normalised intensities, class indices.
#[derive(Clone, Debug)]
struct EstimateWindow {
    values: Vec<f32>,
    condition: Vec<f32>,
    /// Class indices, `[F, S, S]`.
    classes: Vec<u8>,
    /// `normalised = scale·v + shift`.
    scale: f32,
    shift: f32,
}

/// What one joint-loop step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JointReport {
    /// The generator's diffusion step (its loss is the diffusion loss).
    pub generator: StepReport,
    /// `λ·L_seg(x̂₀)` when the step was a joint step with λ > 0.
    pub estimate_loss: Option<f32>,
    /// The segmenter's step, on joint steps.
    pub segmenter: Option<StepReport>,
}

/// File names inside a joint run's folder.
pub const GENERATOR_CHECKPOINT: &str = "generator.ckpt.safetensors";
/// The segmenter's training state.
pub const SEGMENTER_CHECKPOINT: &str = "segmenter.ckpt.safetensors";
/// The joint configuration and the run's lengths.
pub const JOINT_STATE: &str = "joint.json";
/// The synthetic cases in use.
pub const SYNTHETIC_POOL: &str = "synthetic_pool.safetensors";

/// CLAIM's joint loop over a [`DiffusionTrainer`] (the generator) and a
/// [`SegmenterTrainer`]. Drive it with [`step`](Self::step); save with
/// [`save`](Self::save) and continue with [`resume`](Self::resume).
pub struct JointTrainer {
    config: JointConfig,
    patterns: Vec<Pattern>,
    generator: DiffusionTrainer,
    segmenter: SegmenterTrainer,
    normal: Vec<NormalCase>,
    estimate: Vec<EstimateWindow>,
    /// The segmenter's crop of a window: offset and side per axis.
    crop: [(usize, usize); 2],
    /// Steps done and planned (the generator's own when it trains).
    step: u64,
    total_steps: u64,
    /// The synthetic cases in use (renewed every `synth_every` joint steps).
    pool: Vec<PreparedCase>,
}

impl std::fmt::Debug for JointTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JointTrainer")
            .field("config", &self.config)
            .field("generator", &self.generator)
            .field("segmenter", &self.segmenter)
            .field("normal_cases", &self.normal.len())
            .field("estimate_windows", &self.estimate.len())
            .finish_non_exhaustive()
    }
}

/// The segmenter's epochs for `joint_steps` steps of `per_epoch` each.
fn segmenter_epochs(joint_steps: u64, per_epoch: usize) -> usize {
    (joint_steps as usize).div_ceil(per_epoch.max(1)).max(1)
}

impl JointTrainer {
    /// A fresh run: the generator trains on `pathological` (cases with
    /// lesions), the segmenter on `pathological` (its folds) plus
    /// synthetic cases painted into `normal` ones. `total_steps` generator
    /// steps are planned; the segmenter's epochs are set so its rate
    /// schedule spans the joint steps among them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pathological: &TrainingData,
        normal: &TrainingData,
        generator: DiffusionTrainConfig,
        options: OptimOptions,
        total_steps: u64,
        mut segmenter: SegTrainConfig,
        plans: Option<serde_json::Value>,
        config: JointConfig,
    ) -> Result<JointTrainer> {
        let patterns = Self::check(&config, &segmenter, total_steps)?;
        segmenter.epochs = segmenter_epochs(
            config.joint_steps(total_steps),
            segmenter.iterations_per_epoch,
        );
        let mut generator = DiffusionTrainer::new(pathological, generator, options, total_steps)?;
        if let Some(init) = &config.generator_init {
            let model = Denoiser::from_file(Path::new(init))
                .map_err(|e| e.context(format!("generator_init {init}")))?;
            generator
                .start_from(&model)
                .map_err(|e| e.context(format!("generator_init {init}")))?;
        }
        let segmenter = SegmenterTrainer::new(pathological, plans, segmenter)?;
        Self::assemble(
            config,
            patterns,
            generator,
            segmenter,
            pathological,
            normal,
            (0, total_steps),
        )
    }

    /// Continues the run saved in `dir` on the same data; `total_steps`
    /// extends it when given.
    pub fn resume(
        dir: &Path,
        pathological: &TrainingData,
        normal: &TrainingData,
        total_steps: Option<u64>,
    ) -> Result<JointTrainer> {
        let state_path = dir.join(JOINT_STATE);
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| Error::io_at(&state_path, &e))?;
        let state: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(format!("{}: {e}", state_path.display())))?;
        let config: JointConfig = serde_json::from_value(state["config"].clone())
            .map_err(|e| Error::format(format!("{}: config: {e}", state_path.display())))?;
        let step = state["step"]
            .as_u64()
            .ok_or_else(|| Error::format(format!("{}: no step", state_path.display())))?;
        let planned = state["total_steps"]
            .as_u64()
            .ok_or_else(|| Error::format(format!("{}: no total_steps", state_path.display())))?;
        let total = total_steps.unwrap_or(planned);
        let generator =
            DiffusionTrainer::resume(&dir.join(GENERATOR_CHECKPOINT), pathological, Some(total))?;
        let seg_path = dir.join(SEGMENTER_CHECKPOINT);
        let per_epoch = state["segmenter_iterations_per_epoch"]
            .as_u64()
            .ok_or_else(|| {
                Error::format(format!(
                    "{}: no segmenter_iterations_per_epoch",
                    state_path.display()
                ))
            })?;
        let epochs = segmenter_epochs(config.joint_steps(total), per_epoch as usize);
        let segmenter = SegmenterTrainer::resume(&seg_path, pathological, Some(epochs))?;
        let patterns = Self::check(&config, segmenter.config(), total)?;
        let mut trainer = Self::assemble(
            config,
            patterns,
            generator,
            segmenter,
            pathological,
            normal,
            (step, total),
        )?;
        let pool_path = dir.join(SYNTHETIC_POOL);
        if pool_path.is_file() {
            trainer.pool = load_pool(&pool_path)?;
        }
        Ok(trainer)
    }

    fn check(config: &JointConfig, segmenter: &SegTrainConfig, total: u64) -> Result<Vec<Pattern>> {
        let patterns = config.masks.validate()?;
        config.validate()?;
        if segmenter.configuration != CONFIGURATION_2D {
            return Err(Error::invalid(format!(
                "joint: the segmenter must be a {CONFIGURATION_2D} configuration, got {}",
                segmenter.configuration
            )));
        }
        if config.joint_steps(total) == 0 {
            return Err(Error::invalid(format!(
                "joint: no joint step before step {total} (the first is step {}): the segmenter \
                 would never train",
                config.start_step
            )));
        }
        Ok(patterns)
    }

    fn assemble(
        config: JointConfig,
        patterns: Vec<Pattern>,
        generator: DiffusionTrainer,
        segmenter: SegmenterTrainer,
        pathological: &TrainingData,
        normal: &TrainingData,
        (step, total_steps): (u64, u64),
    ) -> Result<JointTrainer> {
        if normal.cases.is_empty() && config.real_fraction < 1.0 {
            return Err(Error::invalid(
                "joint: no normal case to paint synthetic scar into",
            ));
        }
        if normal.scheme != pathological.scheme {
            return Err(Error::invalid(
                "joint: the normal and pathological cases use different label schemes",
            ));
        }
        let scheme = pathological.scheme;
        let aha_params = AhaParams {
            labels: scheme,
            ..AhaParams::default()
        };
        let normal = normal
            .cases
            .iter()
            .map(|case| {
                let base = case.labels.map(|l| {
                    if scheme.is_lesion(*l) {
                        scheme.myocardium
                    } else {
                        *l
                    }
                });
                let segments = aha::aha_segments(&base, &aha_params)
                    .map_err(|e| e.context(format!("normal case {}", case.name)))?;
                Ok(NormalCase {
                    case: TrainingCase {
                        labels: base,
                        ..case.clone()
                    },
                    segments,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The segmenter's crop of a window.
        let side = generator.data().window_shape[1];
        let divisor = segmenter.network().size_divisor();
        let mut crop = [(0, 0); 2];
        for (axis, d) in divisor.iter().enumerate().take(2) {
            let keep = side / d * d;
            if keep == 0 {
                return Err(Error::invalid(format!(
                    "joint: the generator's {side}-pixel window is smaller than the segmenter's \
                     downsampling {divisor:?}"
                )));
            }
            crop[axis] = ((side - keep) / 2, keep);
        }
        let estimate = estimate_windows(&generator, &segmenter, pathological)?;
        Ok(JointTrainer {
            config,
            patterns,
            generator,
            segmenter,
            normal,
            estimate,
            crop,
            step,
            total_steps,
            pool: Vec::new(),
        })
    }

    /// The joint configuration.
    pub fn config(&self) -> &JointConfig {
        &self.config
    }

    /// The generator's trainer.
    pub fn generator(&self) -> &DiffusionTrainer {
        &self.generator
    }

    /// The segmenter's trainer.
    pub fn segmenter(&self) -> &SegmenterTrainer {
        &self.segmenter
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Steps planned.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Runs both networks' steps, the estimate term and the painting of
    /// synthetic cases on `compute` (see [`DiffusionTrainer::set_compute`]).
    pub fn set_compute(&mut self, compute: Compute) -> Result<()> {
        self.generator.set_compute(compute.clone())?;
        self.segmenter.set_compute(compute)
    }

    /// Where the steps compute.
    pub fn compute(&self) -> &Compute {
        self.generator.compute()
    }

    /// One step of the loop (see the module docs). A failure changes
    /// nothing of the generator; on a joint step the segmenter moves
    /// after the generator.
    pub fn step(&mut self) -> Result<JointReport> {
        let s = self.step;
        let joint = self.config.is_joint_step(s);
        if !self.config.train_generator {
            self.refresh_pool(s)?;
            let seg = self
                .segmenter
                .step_mixed(&self.pool, self.config.real_fraction)?;
            self.step += 1;
            return Ok(JointReport {
                generator: StepReport {
                    loss: f32::NAN,
                    lr: 0.0,
                    grad_norm: 0.0,
                    skipped: false,
                    ..seg
                },
                estimate_loss: None,
                segmenter: Some(seg),
            });
        }
        let term = if joint && self.config.lambda > 0.0 {
            Some((self.segmenter.frozen_network()?, self.estimate_batch(s)?))
        } else {
            None
        };
        let model = self.generator.config().model.clone();
        let lambda = self.config.lambda;
        let compute = self.generator.compute().clone();
        let (generator, estimate_loss) = self.generator.step_with(&mut |params| match &term {
            Some((net, batch)) => Ok(Some(estimate_loss(
                &model, params, net, batch, lambda, &compute,
            )?)),
            None => Ok(None),
        })?;
        let segmenter = if joint {
            self.refresh_pool(s)?;
            Some(
                self.segmenter
                    .step_mixed(&self.pool, self.config.real_fraction)?,
            )
        } else {
            None
        };
        self.step += 1;
        Ok(JointReport {
            generator,
            estimate_loss,
            segmenter,
        })
    }

    /// The gradient of `λ·L_seg(x̂₀)` alone with respect to the
    /// generator's parameters (trainable ones; `None` for the others), on
    /// step `step`'s estimate batch: what the segmenter teaches the
    /// generator.
    pub fn estimate_gradients(&self, step: u64) -> Result<Vec<Option<Vec<f32>>>> {
        let net = self.segmenter.frozen_network()?;
        let batch = self.estimate_batch(step)?;
        let tensors = self.generator.parameter_tensors(true)?;
        let loss = estimate_loss(
            &self.generator.config().model,
            &tensors,
            &net,
            &batch,
            self.config.lambda,
            self.generator.compute(),
        )?;
        // Scaled as a training step is, so f16 gradients do not underflow.
        let compute = self.generator.compute();
        let mut grads = compute.backward(&loss)?;
        let mut host = crate::train::optim::take_host_gradients(&tensors, &mut grads)?;
        if !compute.unscale(&mut host) {
            return Err(Error::invalid(format!(
                "the estimate term's gradients overflowed at loss scale {}",
                compute.loss_scale()
            )));
        }
        Ok(host)
    }

    /// Paints fresh synthetic cases when joint step `step` opens a new
    /// `synth_every` period (or when there are none).
    fn refresh_pool(&mut self, step: u64) -> Result<()> {
        let index = self.config.joint_index(step);
        if self.pool.is_empty() || index % self.config.synth_every == 0 {
            self.pool = self.synthetic_cases(step)?;
        }
        Ok(())
    }

    /// The synthetic cases of joint step `step`, painted by the
    /// generator's current model weights (the EMA when kept), prepared as
    /// the segmenter prepares its cases.
    pub fn synthetic_cases(&self, step: u64) -> Result<Vec<PreparedCase>> {
        if self.config.real_fraction >= 1.0 || self.normal.is_empty() {
            return Ok(Vec::new());
        }
        let model = model_from(
            self.generator.model_tensors()?,
            &self.generator.config().model,
            self.generator.compute(),
        )?;
        let mut rng = Rng::new(self.config.seed ^ SYNTH_STREAM).fork(step.wrapping_add(1));
        let scheme = self.segmenter.scheme();
        let base = SmileParams {
            labels: scheme,
            ..SmileParams::default()
        };
        let mut out = Vec::with_capacity(self.config.synthetic_cases);
        for i in 0..self.config.synthetic_cases {
            let normal = &self.normal[rng.below(self.normal.len() as u64) as usize];
            let name = format!("synthetic_{step}_{i}");
            // A draw the heart cannot hold (a burden beyond what the
            // pattern reaches there) is drawn again, a few times.
            let mut attempt = 0;
            let mask = loop {
                let params = self.config.masks.draw(&self.patterns, &mut rng, &base)?;
                let drawn =
                    SmileContext::with_segments(&normal.case.labels, &normal.segments, &params)
                        .and_then(|context| context.draw(rng.next_u64()));
                match drawn {
                    Ok(mask) => break mask,
                    Err(e) if attempt + 1 >= MASK_ATTEMPTS => {
                        return Err(e.context(format!(
                            "{name} (from {}): {MASK_ATTEMPTS} SMILE draws failed; the last",
                            normal.case.name
                        )))
                    }
                    Err(_) => attempt += 1,
                }
            };
            let (image, labels) = pick_slices(
                &normal.case.image,
                &mask.labels,
                self.config.synthetic_slices,
                &scheme,
                &mut rng,
            )?;
            let windows = &self.generator.data().windows;
            let condition = match self.generator.config().model.cond_dim {
                Some(_) => Condition::Values(
                    windows[rng.below(windows.len() as u64) as usize]
                        .condition
                        .clone(),
                ),
                None => Condition::Preset,
            };
            let synth = SynthesisParams {
                seed: rng.next_u64(),
                jump: self.config.jump(),
                condition,
                crop_size: self.generator.config().crop_size,
                frames: self.generator.config().frames,
                labels: scheme,
                channel_labels: self.generator.config().channel_labels.clone(),
                ..SynthesisParams::default()
            };
            let painted = synthesize(&model, &image, &labels, &synth, &mut |_, _| true)
                .map_err(|e| e.context(format!("{name} (from {})", normal.case.name)))?;
            out.push(self.segmenter.prepare(&TrainingCase {
                name,
                image: painted.image,
                labels,
            })?);
        }
        Ok(out)
    }

    /// Draws step `step`'s estimate batch.
    fn estimate_batch(&self, step: u64) -> Result<EstimateBatch> {
        if self.estimate.is_empty() {
            return Err(Error::invalid(
                "joint: no real window for the estimate term",
            ));
        }
        let mut rng = Rng::new(self.config.seed ^ ESTIMATE_STREAM).fork(step.wrapping_add(1));
        let schedule = self.generator.schedule();
        let data = self.generator.data();
        let (c, [f, s, _]) = (data.channels, data.window_shape);
        let b = self.config.estimate_batch;
        let [(oy, hy), (ox, hx)] = self.crop;
        let mut noisy = Vec::with_capacity(b * c * f * s * s);
        let (mut x_coef, mut e_coef) = (Vec::with_capacity(b), Vec::with_capacity(b));
        let (mut scale, mut shift) = (Vec::with_capacity(b * f), Vec::with_capacity(b * f));
        let mut timesteps = Vec::with_capacity(b);
        let mut conditions = Vec::new();
        let mut classes = Vec::with_capacity(b * f * hy * hx);
        for _ in 0..b {
            let w = &self.estimate[rng.below(self.estimate.len() as u64) as usize];
            let t = rng.below(self.config.estimate_max_t as u64) as usize;
            let (a, sigma) = (
                schedule.sqrt_alphas_cumprod[t],
                schedule.sqrt_one_minus_alphas_cumprod[t],
            );
            for _ in 0..c {
                for v in &w.values {
                    noisy.push(a * v + sigma * rng.normal() as f32);
                }
            }
            x_coef.push(1.0 / a);
            e_coef.push(-sigma / a);
            timesteps.push(t as f32);
            conditions.extend_from_slice(&w.condition);
            for frame in 0..f {
                scale.push(w.scale);
                shift.push(w.shift);
                for y in oy..oy + hy {
                    let row = (frame * s + y) * s;
                    classes.extend_from_slice(&w.classes[row + ox..row + ox + hx]);
                }
            }
        }
        Ok(EstimateBatch {
            noisy: Tensor::from_vec(noisy, &[b, c, f, s, s])?,
            timesteps,
            conditions,
            x_coef: Tensor::from_vec(x_coef, &[b, 1, 1, 1, 1])?,
            e_coef: Tensor::from_vec(e_coef, &[b, 1, 1, 1, 1])?,
            scale: Tensor::from_vec(scale, &[b * f, 1, 1, 1])?,
            shift: Tensor::from_vec(shift, &[b * f, 1, 1, 1])?,
            classes,
            crop: self.crop,
        })
    }

    /// Saves both networks' training states and the joint configuration
    /// into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, &e))?;
        self.generator
            .save_checkpoint(&dir.join(GENERATOR_CHECKPOINT))?;
        self.segmenter
            .save_checkpoint(&dir.join(SEGMENTER_CHECKPOINT))?;
        let state = serde_json::json!({
            "config": self.config,
            "segmenter_iterations_per_epoch": self.segmenter.config().iterations_per_epoch,
            "step": self.step,
            "total_steps": self.total_steps,
        });
        save_pool(&dir.join(SYNTHETIC_POOL), &self.pool)?;
        let text =
            serde_json::to_string_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?;
        let path: PathBuf = dir.join(JOINT_STATE);
        crate::io::atomic::write_atomically(&path, |file| {
            use std::io::Write as _;
            file.write_all(text.as_bytes())
        })
    }
}

/// SMILE draws tried per synthetic case before the step fails.
const MASK_ATTEMPTS: usize = 8;

/// Stream constants that keep the joint draws apart from the trainers'.
const SYNTH_STREAM: u64 = 0x57_eaa1;
const ESTIMATE_STREAM: u64 = 0xe571_3a7e;

/// One estimate batch: `x_t`, the coefficients of x̂₀, the map to the
/// segmenter's intensities and the targets.
struct EstimateBatch {
    noisy: Tensor,
    timesteps: Vec<f32>,
    conditions: Vec<f32>,
    x_coef: Tensor,
    e_coef: Tensor,
    scale: Tensor,
    shift: Tensor,
    /// `[B·F, hy, hx]` class indices.
    classes: Vec<u8>,
    crop: [(usize, usize); 2],
}

/// `λ · DiceCE(segmenter(norm(x̂₀)), labels)` on the graph of `params`,
/// the generator run on `compute` (where `net` must be too), the loss in
/// f32.
fn estimate_loss(
    config: &crate::models::DenoiserConfig,
    params: &[(String, Tensor)],
    net: &PlainConvUNet,
    batch: &EstimateBatch,
    lambda: f32,
    compute: &Compute,
) -> Result<Tensor> {
    let weights = Weights::from_tensors(params.iter().cloned())?;
    let model = Denoiser::new(&weights.root_on(&compute.device, compute.dtype), config)?;
    let on_compute = |t: &Tensor| t.to_device(&compute.device, compute.dtype);
    let [b, c, f, s, _] = batch.noisy.dims()[..] else {
        return Err(Error::Internal("estimate batch is not 5-D".into()));
    };
    let cond = match config.cond_dim {
        Some(dim) => Some(Tensor::from_vec(batch.conditions.clone(), &[b, dim])?),
        None => None,
    };
    let eps = model.predict_noise(&batch.noisy, &batch.timesteps, cond.as_ref())?;
    let x0 = on_compute(&batch.noisy)?
        .mul(&on_compute(&batch.x_coef)?)?
        .add(&eps.mul(&on_compute(&batch.e_coef)?)?)?;
    let [(oy, hy), (ox, hx)] = batch.crop;
    let first = if c > 1 { x0.narrow(1, 0, 1)? } else { x0 };
    let planes = first
        .reshape(&[b * f, 1, s, s])?
        .narrow(2, oy, hy)?
        .narrow(3, ox, hx)?;
    let input = planes
        .mul(&on_compute(&batch.scale)?)?
        .add(&on_compute(&batch.shift)?)?;
    let heads = net
        .forward_deep_supervision(&input)?
        .iter()
        .map(|h| compute.for_loss(h))
        .collect::<Result<Vec<_>>>()?;
    let targets = head_targets(&heads, &batch.classes, b * f, (1, hy, hx))?;
    dice_ce_loss(&heads, &targets, true)?.affine(lambda, 0.0)
}

/// A denoiser built from trained weights (for synthesis), on `compute`'s
/// device and type.
fn model_from(
    tensors: Vec<(String, Tensor)>,
    config: &crate::models::DenoiserConfig,
    compute: &Compute,
) -> Result<Denoiser> {
    let weights = Weights::from_tensors(tensors)?;
    let mut model = Denoiser::new(&weights.root_on(&compute.device, compute.dtype), config)?;
    model.fold_for_inference()?;
    Ok(model)
}

/// The real windows of the estimate term: every training window of the
/// generator, with its case's z-score map and class indices.
fn estimate_windows(
    generator: &DiffusionTrainer,
    segmenter: &SegmenterTrainer,
    data: &TrainingData,
) -> Result<Vec<EstimateWindow>> {
    let config = generator.config();
    let params = SynthesisParams {
        crop_size: config.crop_size,
        frames: config.frames,
        labels: data.scheme,
        channel_labels: config.channel_labels.clone(),
        ..SynthesisParams::default()
    };
    let transpose = &segmenter.plans()["transpose_forward"];
    if *transpose != serde_json::json!([0, 1, 2]) {
        return Err(Error::Unsupported(format!(
            "joint: the segmenter's plans transpose the axes ({transpose}); the estimate term \
             needs slices as they are (transpose_forward [0, 1, 2])"
        )));
    }
    let classes = classes_of(&data.scheme);
    let class_of = |l: i32| classes.iter().position(|(_, v)| *v == l).unwrap_or(0) as u8;
    let mut out = Vec::new();
    for case in &data.cases {
        let windows =
            crate::synthesis::training_windows(&config.model, &case.image, &case.labels, &params)?;
        if windows.is_empty() {
            continue;
        }
        let (mean, std) = segmenter
            .zscore_statistics(&case.image)
            .map_err(|e| e.context(format!("case {}", case.name)))?;
        for w in windows {
            let [lo, hi] = w.range;
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            out.push(EstimateWindow {
                scale: ((hi - lo) / (2.0 * std)) as f32,
                shift: (((lo + hi) / 2.0 - mean) / std) as f32,
                classes: w.labels.iter().map(|&l| class_of(l)).collect(),
                values: w.values,
                condition: w.condition,
            });
        }
    }
    Ok(out)
}

/// `count` lesion slices of `labels` (scheme `scheme`) drawn at random
/// (all when 0 or when there are fewer), as a stack of those slices of
/// `image` and `labels` (geometry unchanged: a 2d segmenter reads slices).
fn pick_slices(
    image: &Image,
    labels: &Volume<i32>,
    count: usize,
    scheme: &crate::volume::LabelScheme,
    rng: &mut Rng,
) -> Result<(Image, Volume<i32>)> {
    let [ni, nj, nk] = labels.dims();
    let plane = ni * nj;
    let values = labels.as_slice()?;
    let mut lesion: Vec<usize> = (0..nk)
        .filter(|&k| {
            values[k * plane..(k + 1) * plane]
                .iter()
                .any(|&l| scheme.is_lesion(l))
        })
        .collect();
    if count == 0 || lesion.len() <= count {
        return Ok((image.clone(), labels.clone()));
    }
    for i in 0..count {
        let j = i + rng.below((lesion.len() - i) as u64) as usize;
        lesion.swap(i, j);
    }
    let mut chosen = lesion[..count].to_vec();
    chosen.sort_unstable();
    let raw = image.to_f32();
    let pixels = raw.as_slice()?;
    let picked_pixels: Vec<f32> = chosen
        .iter()
        .flat_map(|&k| pixels[k * plane..(k + 1) * plane].iter().copied())
        .collect();
    let picked_labels: Vec<i32> = chosen
        .iter()
        .flat_map(|&k| values[k * plane..(k + 1) * plane].iter().copied())
        .collect();
    let dims = [ni, nj, chosen.len()];
    Ok((
        Image::F32(Volume::from_vec(dims, picked_pixels, raw.geometry)?),
        Volume::from_vec(dims, picked_labels, labels.geometry)?,
    ))
}

/// Writes the synthetic cases (intensities and class indices) as one
/// safetensors file.
fn save_pool(path: &Path, pool: &[PreparedCase]) -> Result<()> {
    let classes: Vec<Vec<f32>> = pool
        .iter()
        .map(|c| c.classes.iter().map(|&v| f32::from(v)).collect())
        .collect();
    let shapes: Vec<[usize; 3]> = pool.iter().map(|c| [c.slices, c.height, c.width]).collect();
    let names: Vec<(String, String)> = (0..pool.len())
        .map(|i| (format!("case{i}.image"), format!("case{i}.classes")))
        .collect();
    let mut views: Vec<(&str, &[usize], &[f32])> = Vec::with_capacity(2 * pool.len());
    for (i, case) in pool.iter().enumerate() {
        views.push((names[i].0.as_str(), &shapes[i], &case.image));
        views.push((names[i].1.as_str(), &shapes[i], &classes[i]));
    }
    let case_names: Vec<&str> = pool.iter().map(|c| c.name.as_str()).collect();
    let metadata = std::collections::HashMap::from([(
        "names".to_string(),
        serde_json::to_string(&case_names).map_err(|e| Error::Internal(e.to_string()))?,
    )]);
    crate::nn::weights::write_f32_safetensors(path, &views, metadata)
}

/// Reads what [`save_pool`] wrote.
fn load_pool(path: &Path) -> Result<Vec<PreparedCase>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, &e))?;
    let bad = |m: &str| Error::format(format!("{}: {m}", path.display()));
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e.to_string()))?;
    let names: Vec<String> = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("names"))
        .and_then(|n| serde_json::from_str(n).ok())
        .ok_or_else(|| bad("no case names"))?;
    let weights = Weights::from_safetensors(&bytes)?;
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let image = weights
                .peek(&format!("case{i}.image"))
                .ok_or_else(|| bad("a case's image is missing"))?;
            let classes = weights
                .peek(&format!("case{i}.classes"))
                .ok_or_else(|| bad("a case's classes are missing"))?;
            let [slices, height, width] = image.dims()[..] else {
                return Err(bad("a case's image is not 3-D"));
            };
            if classes.dims() != image.dims() {
                return Err(bad("a case's classes and image differ in shape"));
            }
            Ok(PreparedCase {
                name,
                slices,
                height,
                width,
                image: image.to_vec()?,
                classes: classes.to_vec()?.iter().map(|&v| v as u8).collect(),
            })
        })
        .collect()
}

/// Splits a dataset into cases with a lesion (pathological) and without
/// (normal).
pub fn split_by_lesion(data: &TrainingData) -> (TrainingData, TrainingData) {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for case in &data.cases {
        if case.labels.data.iter().any(|&l| data.scheme.is_lesion(l)) {
            with.push(case.clone());
        } else {
            without.push(case.clone());
        }
    }
    let part = |cases, what: &str| TrainingData {
        cases,
        scheme: data.scheme,
        source: format!("{} ({what})", data.source),
    };
    (part(with, "with lesions"), part(without, "without lesions"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::DenoiserConfig;
    use crate::train::data::phantom_cases;
    use crate::train::segmenter::{derive_plans, set_network};

    fn small_generator() -> DiffusionTrainConfig {
        DiffusionTrainConfig {
            model: DenoiserConfig {
                dim: 8,
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
            seed: 5,
            ..DiffusionTrainConfig::default()
        }
    }

    fn small_segmenter() -> SegTrainConfig {
        SegTrainConfig {
            iterations_per_epoch: 2,
            batch_size: Some(2),
            seed: 4,
            ..SegTrainConfig::default()
        }
    }

    struct Setup {
        sick: TrainingData,
        normal: TrainingData,
        plans: serde_json::Value,
    }

    fn setup() -> Setup {
        let sick = phantom_cases(3, 100, 64, 3, true).unwrap();
        let normal = phantom_cases(2, 200, 64, 3, false).unwrap();
        let (mut plans, _) = derive_plans(&sick, "Dataset001_joint").unwrap();
        set_network(&mut plans, CONFIGURATION_2D, &[32, 32], &[8, 16, 16], 1).unwrap();
        Setup {
            sick,
            normal,
            plans,
        }
    }

    fn trainer(s: &Setup, lambda: f32, total: u64) -> JointTrainer {
        let config = JointConfig {
            start_step: 1,
            every: 1,
            lambda,
            real_fraction: 0.5,
            synth_t_start: 10,
            estimate_batch: 2,
            synthetic_slices: 1,
            synth_every: 2,
            seed: 9,
            ..JointConfig::default()
        };
        let seg = small_segmenter();
        JointTrainer::new(
            &s.sick,
            &s.normal,
            small_generator(),
            OptimOptions::diffusion(),
            total,
            seg,
            Some(s.plans.clone()),
            config,
        )
        .unwrap()
    }

    fn norm(grads: &[Option<Vec<f32>>]) -> f64 {
        grads
            .iter()
            .flatten()
            .flatten()
            .map(|g| f64::from(*g).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn the_joint_step_trains_the_segmenter_and_teaches_the_generator() {
        let s = setup();
        let mut with = trainer(&s, 0.5, 3);
        let mut without = trainer(&s, 0.0, 3);
        // The segmenter's loss reaches the generator only with λ > 0.
        assert!(norm(&with.estimate_gradients(1).unwrap()) > 0.0);
        assert_eq!(norm(&without.estimate_gradients(1).unwrap()), 0.0);

        // Step 0 is a plain diffusion step for both.
        let first = with.step().unwrap();
        assert!(first.segmenter.is_none() && first.estimate_loss.is_none());
        without.step().unwrap();
        assert_eq!(
            with.generator().parameters().unwrap(),
            without.generator().parameters().unwrap()
        );

        let seg_before = with.segmenter().parameters().unwrap().to_vec();
        let report = with.step().unwrap();
        let seg_report = report.segmenter.expect("step 1 is a joint step");
        assert!(seg_report.loss.is_finite() && seg_report.grad_norm > 0.0);
        assert!(report.estimate_loss.is_some_and(|l| l > 0.0));
        let moved = seg_before
            .iter()
            .zip(with.segmenter().parameters().unwrap().iter())
            .filter(|(a, b)| a.values != b.values)
            .count();
        assert!(
            moved > seg_before.len() / 2,
            "{moved} of {} segmenter tensors changed",
            seg_before.len()
        );

        // λ = 0: the generator's update is exactly the plain diffusion
        // step; λ > 0 moves it elsewhere.
        let report = without.step().unwrap();
        assert!(report.estimate_loss.is_none() && report.segmenter.is_some());
        let mut plain =
            DiffusionTrainer::new(&s.sick, small_generator(), OptimOptions::diffusion(), 3)
                .unwrap();
        plain.step().unwrap();
        plain.step().unwrap();
        assert_eq!(
            plain.parameters().unwrap(),
            without.generator().parameters().unwrap()
        );
        assert_ne!(
            plain.parameters().unwrap(),
            with.generator().parameters().unwrap()
        );
    }

    #[test]
    fn a_resumed_joint_run_continues_bit_identically() {
        let s = setup();
        let mut straight = trainer(&s, 0.1, 3);
        straight.step().unwrap();
        straight.step().unwrap();
        let dir = tempfile::tempdir().unwrap();
        straight.save(dir.path()).unwrap();
        straight.step().unwrap();
        let mut resumed = JointTrainer::resume(dir.path(), &s.sick, &s.normal, None).unwrap();
        assert_eq!(resumed.step_count(), 2);
        resumed.step().unwrap();
        assert_eq!(
            straight.generator().parameters().unwrap(),
            resumed.generator().parameters().unwrap()
        );
        assert_eq!(
            straight.segmenter().parameters().unwrap(),
            resumed.segmenter().parameters().unwrap()
        );
    }

    #[test]
    fn a_frozen_generator_only_paints_from_its_starting_model() {
        let s = setup();
        // A model to start from: a plain run's weights after two steps.
        let mut plain =
            DiffusionTrainer::new(&s.sick, small_generator(), OptimOptions::diffusion(), 2)
                .unwrap();
        plain.step().unwrap();
        plain.step().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let model_path = dir.path().join("start.safetensors");
        plain.export_model(&model_path).unwrap();
        let config = JointConfig {
            lambda: 0.0,
            train_generator: false,
            generator_init: Some(model_path.display().to_string()),
            synth_t_start: 10,
            seed: 2,
            ..JointConfig::default()
        };
        let seg = small_segmenter();
        let mut frozen = JointTrainer::new(
            &s.sick,
            &s.normal,
            small_generator(),
            OptimOptions::diffusion(),
            2,
            seg,
            Some(s.plans.clone()),
            config.clone(),
        )
        .unwrap();
        let start = frozen.generator().parameters().unwrap().to_vec();
        let exported = crate::nn::Weights::load(&model_path).unwrap();
        for p in &start {
            assert_eq!(exported.peek(&p.name).unwrap().to_vec().unwrap(), p.values);
        }
        let seg_before = frozen.segmenter().parameters().unwrap().to_vec();
        let report = frozen.step().unwrap();
        assert!(report.segmenter.is_some() && report.estimate_loss.is_none());
        assert_eq!(frozen.step_count(), 1);
        assert_eq!(frozen.generator().parameters().unwrap(), start.as_slice());
        assert_ne!(
            frozen.segmenter().parameters().unwrap(),
            seg_before.as_slice()
        );
        // λ > 0 needs a generator that learns.
        let bad = JointConfig {
            lambda: 0.1,
            ..config
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn bad_settings_are_refused_before_any_work() {
        let bad = [
            JointConfig {
                every: 0,
                ..JointConfig::default()
            },
            JointConfig {
                lambda: -1.0,
                ..JointConfig::default()
            },
            JointConfig {
                real_fraction: 1.5,
                ..JointConfig::default()
            },
            JointConfig {
                estimate_max_t: 0,
                ..JointConfig::default()
            },
            JointConfig {
                masks: MaskDistribution {
                    patterns: vec!["spiral".into()],
                    ..MaskDistribution::default()
                },
                ..JointConfig::default()
            },
            JointConfig {
                masks: MaskDistribution {
                    burden: [0.3, 0.1],
                    ..MaskDistribution::default()
                },
                ..JointConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} was accepted");
        }
        let c = JointConfig {
            start_step: 5,
            every: 10,
            ..JointConfig::default()
        };
        assert_eq!(c.joint_steps(5), 0);
        assert_eq!(c.joint_steps(6), 1);
        assert_eq!(c.joint_steps(16), 2);
        assert!(c.is_joint_step(15) && !c.is_joint_step(14));
    }
}

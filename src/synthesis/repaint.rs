//! RePaint inpainting with the jump schedule over one batch (spec:
//! "RePaint inpainting with the jump schedule"), with progress reporting,
//! cancellation and counter-based noise.
//!
//! The sampler is a tensor program: the batch is uploaded to the model's
//! device once, every step (noise, known-region blend, network, ancestral
//! step, jump) runs there, and only the final sample comes back. The state
//! `x_t` is kept in F32 on every device; the network runs in the model's
//! type.
//!
//! Noise is drawn by Philox4x32-10 keyed by (seed, item, step, stream,
//! element) ([`Tensor::normal_noise`]), so a seed gives the same numbers on
//! the CPU and a GPU, and an item's sample does not depend on the batch it
//! is in. This generator replaced per-item xoshiro streams in version 0.2:
//! a seed's samples changed once then.

use super::schedule::{jump_schedule, JumpParams, Schedule};
use crate::backend::NoiseKey;
use crate::models::{CapturedDenoiser, Denoiser};
use crate::nn::{DType, Device, Tensor};
use crate::{Error, Result};

/// Progress of a long call: counts network evaluations and asks the
/// caller's callback after each whether to go on.
pub struct Progress<'a> {
    callback: &'a mut dyn FnMut(u64, u64) -> bool,
    done: u64,
    total: u64,
}

impl<'a> Progress<'a> {
    /// Progress over `total` network evaluations; `callback(done, total)`
    /// returns `false` to cancel.
    pub fn new(total: u64, callback: &'a mut dyn FnMut(u64, u64) -> bool) -> Self {
        Progress {
            callback,
            done: 0,
            total,
        }
    }

    /// Evaluations reported so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// The total announced.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Reports the current count; `Err(Cancelled)` when the callback says stop.
    pub fn report(&mut self) -> Result<()> {
        if (self.callback)(self.done, self.total) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }

    /// Counts one finished evaluation and reports it.
    pub fn tick(&mut self) -> Result<()> {
        self.done += 1;
        self.report()
    }
}

/// One batch to inpaint: `[B, C, F, H, W]` items in [−1, 1] with their
/// known region and conditions.
#[derive(Clone, Debug)]
pub struct InpaintBatch {
    /// `[B, C, F, H, W]`.
    pub shape: [usize; 5],
    /// The real images, scaled to [−1, 1].
    pub ground_truth: Vec<f32>,
    /// 1 where the image is known (kept), 0 where it is generated.
    pub known: Vec<f32>,
    /// `[B, cond_dim]` histograms, or `None` for the null condition.
    pub conditions: Option<Vec<f32>>,
}

/// What the sampler runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerParams {
    /// t_T, L and R of the jump schedule.
    pub jump: JumpParams,
    /// Classifier-free guidance scale; 1 = off (one evaluation per step),
    /// otherwise two evaluations per step (conditional and null, run as
    /// one batched forward).
    pub guidance: f32,
    /// On a GPU, capture one network evaluation as a device graph and
    /// replay it at every step (default); the results are identical either
    /// way. Falls back to eager evaluation when the capture fails.
    pub graphs: bool,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            jump: JumpParams::default(),
            guidance: 1.0,
            graphs: true,
        }
    }
}

impl SamplerParams {
    /// Network evaluations per sampler step: 1, or 2 with guidance.
    pub fn evaluations_per_step(&self) -> u64 {
        if self.guidance == 1.0 {
            1
        } else {
            2
        }
    }
}

/// The noise of one batch: the caller's seed and one item number per batch
/// row (the item's index in the whole job, so batching does not change it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchNoise {
    /// The seed of the job.
    pub seed: u64,
    /// Item number of each batch row.
    pub items: Vec<u32>,
}

/// Independent noise streams drawn at one sampler step.
mod stream {
    /// The starting noise x_T.
    pub const START: u32 = 0;
    /// The noise of the known region's forward diffusion.
    pub const KNOWN: u32 = 1;
    /// The ancestral step's noise.
    pub const REVERSE: u32 = 2;
    /// The noise of a jump back up.
    pub const JUMP: u32 = 3;
}

/// Predicted noise of `x` at `t` as F32 on the model's device, with
/// guidance (both branches in one batched forward), counting evaluations;
/// by replaying `captured` when there is one.
fn predict(
    model: &Denoiser,
    captured: Option<&CapturedDenoiser>,
    x: &Tensor,
    t: usize,
    cond: Option<&Tensor>,
    guidance: f32,
    progress: &mut Progress,
) -> Result<Tensor> {
    let out = match captured {
        Some(graph) => graph.predict(x, t as f32)?,
        None => {
            let ts = vec![t as f32; x.dim(0)?];
            match cond {
                Some(c) if guidance != 1.0 => model.predict_noise_guided(x, &ts, c, guidance)?,
                _ => model.predict_noise(x, &ts, cond)?,
            }
            .to_dtype(DType::F32)?
        }
    };
    progress.tick()?;
    if guidance != 1.0 {
        progress.tick()?;
    }
    Ok(out)
}

/// Runs RePaint on `batch` and returns the final sample `[B, C, F, H, W]`
/// (host values). `noise` names the seed and each row's item number;
/// `progress` counts every network evaluation and is consulted after each
/// (and before the first when nothing was counted yet).
pub fn repaint(
    model: &Denoiser,
    schedule: &Schedule,
    batch: &InpaintBatch,
    params: &SamplerParams,
    noise: &BatchNoise,
    progress: &mut Progress,
) -> Result<Vec<f32>> {
    let [b, c, f, h, w] = batch.shape;
    let n = b
        .checked_mul(c)
        .and_then(|v| v.checked_mul(f))
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(|| Error::invalid("RePaint: batch too large"))?;
    if batch.ground_truth.len() != n || batch.known.len() != n || noise.items.len() != b || b == 0 {
        return Err(Error::invalid(format!(
            "RePaint: batch {:?} needs {n} ground-truth and known values and {b} item numbers, \
             got {}, {} and {}",
            batch.shape,
            batch.ground_truth.len(),
            batch.known.len(),
            noise.items.len()
        )));
    }
    if params.jump.t_start > schedule.len() {
        return Err(Error::invalid(format!(
            "RePaint: t_start {} exceeds the schedule's {} steps",
            params.jump.t_start,
            schedule.len()
        )));
    }
    if !params.guidance.is_finite() {
        return Err(Error::invalid(format!(
            "guidance scale must be finite, got {}",
            params.guidance
        )));
    }
    let device = model.device();
    let shape = [b, c, f, h, w];
    let cond = match &batch.conditions {
        Some(v) => {
            let per = v.len() / b;
            if per * b != v.len() || per == 0 {
                return Err(Error::invalid(format!(
                    "RePaint: {} condition values for a batch of {b}",
                    v.len()
                )));
            }
            Some(Tensor::from_slice_on(v, &[b, per], &device, model.dtype())?)
        }
        None => {
            if params.guidance != 1.0 {
                return Err(Error::invalid(
                    "classifier-free guidance needs a histogram condition",
                ));
            }
            None
        }
    };
    let times = jump_schedule(params.jump)?;
    let ground_truth = Tensor::from_slice_on(&batch.ground_truth, &shape, &device, DType::F32)?;
    let known = Tensor::from_slice_on(&batch.known, &shape, &device, DType::F32)?;
    let draw = |stream: u32, step: u32| {
        let key = NoiseKey {
            seed: noise.seed,
            stream,
            step,
        };
        Tensor::normal_noise(key, &noise.items, &shape, &device, DType::F32)
    };
    // One evaluation recorded as a device graph, replayed at every step.
    let captured = match device {
        Device::Cuda(_) if params.graphs => {
            model.capture(shape, cond.as_ref(), params.guidance).ok()
        }
        _ => None,
    };
    let mut x = draw(stream::START, 0)?;
    if progress.done() == 0 {
        progress.report()?;
    }
    for (i, pair) in times.windows(2).enumerate() {
        let (t_last, t_cur) = (pair[0], pair[1]);
        let t = usize::try_from(t_last)
            .map_err(|_| Error::Internal(format!("RePaint: negative step {t_last}")))?;
        let step = u32::try_from(i + 1)
            .map_err(|_| Error::invalid("RePaint: more than 2³² sampler steps"))?;
        if t_cur < t_last {
            let z = draw(stream::KNOWN, step)?;
            x = x.known_blend(&ground_truth, &known, &z, schedule.known_blend(t)?)?;
            let eps = predict(
                model,
                captured.as_ref(),
                &x,
                t,
                cond.as_ref(),
                params.guidance,
                progress,
            )?;
            let z = draw(stream::REVERSE, step)?;
            x = x.ancestral_step(&eps, &z, schedule.ancestral_step(t)?)?;
        } else {
            let (a, s) = schedule.jump_up(t)?;
            let z = draw(stream::JUMP, step)?;
            x = x.lincomb(a, &z, s)?;
        }
    }
    x.to_vec()
}

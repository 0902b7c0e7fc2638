//! RePaint inpainting with the jump schedule over one batch (spec:
//! "RePaint inpainting with the jump schedule"), with progress reporting,
//! cancellation and per-item noise streams.

use super::schedule::{jump_schedule, JumpParams, Schedule};
use crate::models::Denoiser;
use crate::nn::Tensor;
use crate::rng::Rng;
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
    /// otherwise two evaluations per step (conditional and null).
    pub guidance: f32,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            jump: JumpParams::default(),
            guidance: 1.0,
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

/// Predicted noise of `x` at `t`, with guidance, counting evaluations.
fn predict(
    model: &Denoiser,
    x: &Tensor,
    t: usize,
    cond: Option<&Tensor>,
    guidance: f32,
    progress: &mut Progress,
) -> Result<Vec<f32>> {
    let b = x.dim(0)?;
    let ts = vec![t as f32; b];
    let out = model.predict_noise(x, &ts, cond)?;
    progress.tick()?;
    if guidance == 1.0 {
        return out.to_vec();
    }
    let null = model.predict_noise(x, &ts, None)?;
    progress.tick()?;
    let (c, n) = (out.as_slice()?, null.as_slice()?);
    Ok(c.iter()
        .zip(n)
        .map(|(c, n)| n + (c - n) * guidance)
        .collect())
}

/// Fills `out` with one standard normal draw per element, item by item,
/// each item from its own generator (so results do not depend on how
/// items are batched).
fn normals(out: &mut [f32], rngs: &mut [Rng]) {
    let per_item = out.len() / rngs.len().max(1);
    for (chunk, rng) in out.chunks_mut(per_item.max(1)).zip(rngs.iter_mut()) {
        for v in chunk {
            *v = rng.normal() as f32;
        }
    }
}

/// Runs RePaint on `batch` and returns the final sample `[B, C, F, H, W]`.
/// `rngs` holds one generator per batch item; `progress` counts every
/// network evaluation and is consulted after each (and before the first
/// when nothing was counted yet).
pub fn repaint(
    model: &Denoiser,
    schedule: &Schedule,
    batch: &InpaintBatch,
    params: &SamplerParams,
    rngs: &mut [Rng],
    progress: &mut Progress,
) -> Result<Vec<f32>> {
    let [b, c, f, h, w] = batch.shape;
    let n = b
        .checked_mul(c)
        .and_then(|v| v.checked_mul(f))
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(|| Error::invalid("RePaint: batch too large"))?;
    if batch.ground_truth.len() != n || batch.known.len() != n || rngs.len() != b || b == 0 {
        return Err(Error::invalid(format!(
            "RePaint: batch {:?} needs {n} ground-truth and known values and {b} generators, got \
             {}, {} and {}",
            batch.shape,
            batch.ground_truth.len(),
            batch.known.len(),
            rngs.len()
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
    let cond = match &batch.conditions {
        Some(v) => {
            let per = v.len() / b;
            if per * b != v.len() || per == 0 {
                return Err(Error::invalid(format!(
                    "RePaint: {} condition values for a batch of {b}",
                    v.len()
                )));
            }
            Some(Tensor::from_vec(v.clone(), &[b, per])?)
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
    let shape = [b, c, f, h, w];
    let mut x = vec![0f32; n];
    normals(&mut x, rngs);
    let mut z = vec![0f32; n];
    if progress.done() == 0 {
        progress.report()?;
    }
    for pair in times.windows(2) {
        let (t_last, t_cur) = (pair[0], pair[1]);
        let t = usize::try_from(t_last)
            .map_err(|_| Error::Internal(format!("RePaint: negative step {t_last}")))?;
        if t_cur < t_last {
            normals(&mut z, rngs);
            schedule.renoise_known(&mut x, &batch.ground_truth, &batch.known, &z, t)?;
            let xt = Tensor::from_vec(std::mem::take(&mut x), &shape)?;
            let eps = predict(model, &xt, t, cond.as_ref(), params.guidance, progress)?;
            x = xt.to_vec()?;
            normals(&mut z, rngs);
            schedule.reverse_step(&mut x, &eps, &z, t)?;
        } else {
            normals(&mut z, rngs);
            schedule.jump_up(&mut x, &z, t)?;
        }
    }
    Ok(x)
}

//! Optimisers, learning-rate schedules, gradient clipping and the weight
//! EMA, on host f32 parameters.
//!
//! The update rules follow PyTorch's `torch.optim` operation for operation
//! (so a claim run and a PyTorch run from the same weights and gradients
//! agree to f32 rounding; `tests/fixtures/optim/` holds PyTorch's
//! trajectories): Adam adds the L2 term to the gradient, AdamW decays the
//! weights before the Adam step, and SGD keeps a momentum buffer that starts
//! as the first gradient, with Nesterov's look-ahead `g + μ·buf`.

use crate::backend::desc::{OptimizerRule, OptimizerStep};
use crate::nn::{Gradients, Tensor};
use crate::{Error, Result};
use rayon::prelude::*;

/// A trainable (or frozen) parameter: its PyTorch key, shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// The key in the state dict (upstream names).
    pub name: String,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f32>,
    /// Whether the optimiser updates it (fixed buffers are not).
    pub trainable: bool,
}

impl Parameter {
    /// The name, shape and flag with no values (to be filled in).
    pub fn clone_without_values(&self) -> Parameter {
        Parameter {
            name: self.name.clone(),
            shape: self.shape.clone(),
            values: Vec::new(),
            trainable: self.trainable,
        }
    }
}

/// The parameters as named tensors for a forward pass: trainable ones as
/// autograd variables when `track`, everything else plain.
pub fn parameter_tensors(params: &[Parameter], track: bool) -> Result<Vec<(String, Tensor)>> {
    let tensors = params
        .iter()
        .map(|p| Tensor::from_vec(p.values.clone(), &p.shape))
        .collect::<Result<Vec<_>>>()?;
    Ok(named_tensors(params, &tensors, track))
}

/// `tensors` (one per parameter, in order) under the parameters' names,
/// trainable ones as fresh variables when `track`, all others untracked.
pub fn named_tensors(
    params: &[Parameter],
    tensors: &[Tensor],
    track: bool,
) -> Vec<(String, Tensor)> {
    params
        .iter()
        .zip(tensors)
        .map(|(p, t)| {
            let t = if track && p.trainable {
                t.variable()
            } else {
                t.detach()
            };
            (p.name.clone(), t)
        })
        .collect()
}

/// Each tensor's gradient as host values (`None` where the loss does not
/// reach it), taken out of `grads` one by one so each is freed once copied
/// (peak memory).
pub fn take_host_gradients(
    tensors: &[(String, Tensor)],
    grads: &mut Gradients,
) -> Result<Vec<Option<Vec<f32>>>> {
    tensors
        .iter()
        .map(|(_, t)| grads.take(t).map(|g| g.to_vec()).transpose())
        .collect()
}

/// The update rule: the engine's [`OptimizerRule`], which the device
/// update takes as it is (serialised in checkpoints' `options`).
pub type OptimizerKind = OptimizerRule;

impl OptimizerKind {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8).
    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults.
    pub fn adamw() -> OptimizerKind {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled: true,
        }
    }

    /// nnU-Net's SGD: momentum 0.99, Nesterov.
    pub fn sgd_nesterov(momentum: f32) -> OptimizerKind {
        OptimizerKind::Sgd {
            momentum,
            nesterov: true,
        }
    }

    /// A short name for logs and checkpoint metadata.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Adam {
                decoupled: false, ..
            } => "adam",
            OptimizerKind::Adam {
                decoupled: true, ..
            } => "adamw",
            OptimizerKind::Sgd { nesterov: true, .. } => "sgd-nesterov",
            OptimizerKind::Sgd {
                nesterov: false, ..
            } => "sgd",
        }
    }

    /// Names of the per-parameter state buffers, in checkpoint order.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd { .. } => &["momentum_buffer"],
        }
    }
}

/// An optimiser with its per-parameter state.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    /// The rule.
    pub kind: OptimizerKind,
    /// Weight decay (L2 for Adam/SGD, decoupled for AdamW).
    pub weight_decay: f32,
    /// Updates taken so far.
    pub steps: u64,
    /// Per parameter, the updates it has received (Adam's bias correction
    /// and SGD's first momentum use it, per parameter as in PyTorch).
    pub param_steps: Vec<u64>,
    /// Per parameter (same order as the parameters), one buffer per
    /// [`OptimizerKind::state_names`]; empty until the parameter's first
    /// update.
    pub state: Vec<Vec<Vec<f32>>>,
}

impl Optimizer {
    /// A fresh optimiser for `parameter_count` parameters.
    pub fn new(
        kind: OptimizerKind,
        weight_decay: f32,
        parameter_count: usize,
    ) -> Result<Optimizer> {
        if !weight_decay.is_finite() || weight_decay < 0.0 {
            return Err(Error::invalid(format!(
                "weight decay {weight_decay} is not ≥ 0"
            )));
        }
        if !kind.constants_in_range() {
            return Err(Error::invalid(format!(
                "optimizer {kind:?}: betas and momentum must be in [0, 1), ε > 0, and Nesterov needs momentum"
            )));
        }
        Ok(Optimizer {
            kind,
            weight_decay,
            steps: 0,
            param_steps: vec![0; parameter_count],
            state: vec![Vec::new(); parameter_count],
        })
    }

    /// One update of every trainable parameter with a gradient, at learning
    /// rate `lr`. `grads[i]` belongs to `params[i]`; `None` (no gradient
    /// reached it) leaves the parameter and its state as they are, as
    /// PyTorch does for a `None` grad.
    pub fn step(
        &mut self,
        params: &mut [Parameter],
        grads: &[Option<Vec<f32>>],
        lr: f32,
    ) -> Result<()> {
        if params.len() != self.state.len()
            || grads.len() != params.len()
            || self.param_steps.len() != params.len()
        {
            return Err(Error::invalid(format!(
                "optimizer: {} parameters, {} gradients, state for {}",
                params.len(),
                grads.len(),
                self.state.len()
            )));
        }
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::invalid(format!("learning rate {lr} is not ≥ 0")));
        }
        let buffers = self.kind.state_buffers();
        for ((p, g), state) in params.iter().zip(grads).zip(&self.state) {
            if let Some(g) = g {
                if g.len() != p.values.len() {
                    return Err(Error::invalid(format!(
                        "optimizer: {} has {} values but {} gradients",
                        p.name,
                        p.values.len(),
                        g.len()
                    )));
                }
            }
            // The state is empty until the first update, then one buffer
            // per rule buffer, each the parameter's length.
            if !state.is_empty()
                && (state.len() != buffers || state.iter().any(|b| b.len() != p.values.len()))
            {
                return Err(Error::invalid(format!(
                    "optimizer: the state of {} does not fit the rule and its {} values",
                    p.name,
                    p.values.len()
                )));
            }
        }
        self.steps += 1;
        let (rule, wd) = (self.kind, self.weight_decay);
        params
            .par_iter_mut()
            .zip(grads.par_iter())
            .zip(
                self.state
                    .par_iter_mut()
                    .zip(self.param_steps.par_iter_mut()),
            )
            .filter(|((p, g), _)| p.trainable && g.is_some())
            .for_each(|((p, g), (state, steps))| {
                let Some(g) = g else { return };
                *steps += 1;
                if state.is_empty() {
                    *state = vec![vec![0f32; g.len()]; rule.state_buffers()];
                }
                let step = OptimizerStep {
                    rule,
                    lr,
                    weight_decay: wd,
                    step: *steps,
                    grad_factors: [1.0, 1.0],
                };
                crate::backend::cpu::optim::update_in_place(&mut p.values, g, state, &step);
            });
        Ok(())
    }
}

/// Scales the gradients so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm +
/// 1e-6)` when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Vec<f32>>], max_norm: f32) -> Result<f32> {
    let norm = grad_norm(grads);
    let factor = clip_factor(norm, max_norm)?;
    if factor < 1.0 {
        for g in grads.iter_mut().flatten() {
            g.iter_mut().for_each(|v| *v *= factor);
        }
    }
    Ok(norm)
}

/// The factor [`clip_grad_norm`] multiplies gradients of L2 norm `norm`
/// by: `max_norm / (norm + 1e-6)` when below 1, else exactly 1.
pub fn clip_factor(norm: f32, max_norm: f32) -> Result<f32> {
    if !max_norm.is_finite() || max_norm <= 0.0 {
        return Err(Error::invalid(format!(
            "gradient clipping norm {max_norm} is not > 0"
        )));
    }
    Ok((max_norm / (norm + 1e-6)).min(1.0))
}

/// The global L2 norm of the gradients: each tensor's sum of squares in
/// f64 (in parallel), added in tensor order, so the norm does not depend
/// on thread timing (and equals the CPU engine's `squared_norms`, which
/// the resident path of [`crate::train::resident`] sums the same way).
pub fn grad_norm(grads: &[Option<Vec<f32>>]) -> f32 {
    let present: Vec<&[f32]> = grads.iter().flatten().map(Vec::as_slice).collect();
    crate::backend::cpu::optim::squared_norms(&present)
        .iter()
        .sum::<f64>()
        .sqrt() as f32
}

/// A learning-rate schedule over a run of `total_steps` updates.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// nnU-Net's poly: `lr·(1 − step/total)^exponent` (exponent 0.9).
    Poly {
        /// The exponent.
        exponent: f32,
    },
}

/// A schedule with an optional linear warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrPolicy {
    /// The base learning rate.
    pub base: f32,
    /// The decay after warm-up.
    pub schedule: LrSchedule,
    /// Steps of linear warm-up from `base/warmup` to `base` (0 = none).
    pub warmup_steps: u64,
    /// The run's length (poly decays to 0 at it).
    pub total_steps: u64,
}

impl LrPolicy {
    /// The rate at update `step` (0-based).
    pub fn at(&self, step: u64) -> f32 {
        let decayed = match self.schedule {
            LrSchedule::Constant => self.base,
            LrSchedule::Poly { exponent } => {
                let frac = step as f64 / self.total_steps.max(1) as f64;
                (f64::from(self.base) * (1.0 - frac.min(1.0)).powf(f64::from(exponent))) as f32
            }
        };
        if step < self.warmup_steps {
            decayed * (step + 1) as f32 / self.warmup_steps as f32
        } else {
            decayed
        }
    }
}

/// Upstream's weight EMA (denoising-diffusion trainers): every `every`
/// steps, before `start` the average is reset to the weights, from `start`
/// on `ema = decay·ema + (1 − decay)·w`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmaPolicy {
    /// The decay (upstream 0.995).
    pub decay: f32,
    /// Steps between updates (upstream 10).
    pub every: u64,
    /// The step the averaging starts at (upstream 2000).
    pub start: u64,
}

impl Default for EmaPolicy {
    fn default() -> Self {
        EmaPolicy {
            decay: 0.995,
            every: 10,
            start: 2000,
        }
    }
}

impl EmaPolicy {
    /// Updates `ema` after the optimiser's update of step `step` (0-based,
    /// as upstream: the first update is step 0, which resets the average).
    pub fn update(&self, ema: &mut [Parameter], params: &[Parameter], step: u64) -> Result<()> {
        if ema.len() != params.len() {
            return Err(Error::invalid("EMA and model have different parameters"));
        }
        if self.every == 0 || step % self.every != 0 {
            return Ok(());
        }
        let reset = step < self.start;
        let decay = self.decay;
        ema.par_iter_mut()
            .zip(params.par_iter())
            .for_each(|(e, p)| {
                if reset || !p.trainable {
                    e.values.copy_from_slice(&p.values);
                } else {
                    for (a, &w) in e.values.iter_mut().zip(&p.values) {
                        // torch's lerp_: a + (w − a)·(1 − decay).
                        *a += (w - *a) * (1.0 - decay);
                    }
                }
            });
        Ok(())
    }
}

/// How a run optimises: the rule, its rate policy, clipping and EMA.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimOptions {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clipping (`None` = off).
    pub grad_clip: Option<f32>,
    /// The decay of the rate.
    pub schedule: LrSchedule,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// The weight average (`None` = the trained weights are the model).
    pub ema: Option<EmaPolicy>,
}

impl OptimOptions {
    /// Upstream's diffusion recipe: Adam, lr 1e-4, constant, no clipping,
    /// EMA 0.995 every 10 steps from step 2000.
    pub fn diffusion() -> OptimOptions {
        OptimOptions {
            kind: OptimizerKind::adam(),
            lr: 1e-4,
            weight_decay: 0.0,
            grad_clip: None,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            ema: Some(EmaPolicy::default()),
        }
    }

    /// nnU-Net's recipe: SGD 0.01 Nesterov 0.99, poly 0.9, weight decay
    /// 3e-5, gradient norm clipped at 12, no EMA.
    pub fn nnunet() -> OptimOptions {
        OptimOptions {
            kind: OptimizerKind::sgd_nesterov(0.99),
            lr: 0.01,
            weight_decay: 3e-5,
            grad_clip: Some(12.0),
            schedule: LrSchedule::Poly { exponent: 0.9 },
            warmup_steps: 0,
            ema: None,
        }
    }

    /// The rate policy over `total_steps` updates.
    pub fn policy(&self, total_steps: u64) -> LrPolicy {
        LrPolicy {
            base: self.lr,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            total_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(values: Vec<f32>) -> Parameter {
        Parameter {
            name: "w".into(),
            shape: vec![values.len()],
            values,
            trainable: true,
        }
    }

    /// Minimises `Σ (w − target)²` and checks the optimiser gets there.
    fn converges(kind: OptimizerKind, lr: f32) {
        let target = [1.5f32, -2.0, 0.25];
        let mut params = vec![param(vec![0.0; 3])];
        let mut opt = Optimizer::new(kind, 0.0, 1).unwrap();
        for _ in 0..2000 {
            let g: Vec<f32> = params[0]
                .values
                .iter()
                .zip(target)
                .map(|(w, t)| 2.0 * (w - t))
                .collect();
            opt.step(&mut params, &[Some(g)], lr).unwrap();
        }
        for (w, t) in params[0].values.iter().zip(target) {
            assert!((w - t).abs() < 1e-2, "{kind:?}: {w} vs {t}");
        }
    }

    #[test]
    fn every_optimizer_minimises_a_quadratic() {
        converges(OptimizerKind::adam(), 1e-2);
        converges(OptimizerKind::adamw(), 1e-2);
        converges(OptimizerKind::sgd_nesterov(0.9), 1e-2);
        converges(
            OptimizerKind::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            1e-2,
        );
    }

    /// The trajectories of `tools/optim_reference.py`: PyTorch's Adam,
    /// AdamW and Nesterov SGD with weight decay, global-norm clipping, a
    /// poly rate, and one parameter skipped at step 2.
    #[test]
    fn trajectories_match_pytorch() {
        let path = crate::testing::fixture_path("optim").join("optim.safetensors");
        let fixture = crate::nn::Weights::load(&path).unwrap();
        let get = |key: &str| fixture.peek(key).unwrap().to_vec().unwrap();
        let names = ["matrix", "vector"];
        let policy = LrPolicy {
            base: 1e-2,
            schedule: LrSchedule::Poly { exponent: 0.9 },
            warmup_steps: 0,
            total_steps: 6,
        };
        for (case, kind, wd) in [
            ("adam", OptimizerKind::adam(), 1e-2),
            ("adamw", OptimizerKind::adamw(), 1e-2),
            ("sgd", OptimizerKind::sgd_nesterov(0.99), 3e-5),
        ] {
            let mut params: Vec<Parameter> = names
                .iter()
                .map(|n| param(get(&format!("init.{n}"))))
                .collect();
            let mut opt = Optimizer::new(kind, wd, 2).unwrap();
            for step in 0..6u64 {
                let mut grads: Vec<Option<Vec<f32>>> = names
                    .iter()
                    .map(|n| {
                        (!(*n == "vector" && step == 2)).then(|| get(&format!("grad.{step}.{n}")))
                    })
                    .collect();
                clip_grad_norm(&mut grads, 1.0).unwrap();
                opt.step(&mut params, &grads, policy.at(step)).unwrap();
                for (p, n) in params.iter().zip(names) {
                    let want = get(&format!("{case}.{step}.{n}"));
                    for (a, b) in p.values.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                            "{case} step {step} {n}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // m̂ = g, v̂ = g² at step 1: the update is lr·sign(g).
        let mut params = vec![param(vec![0.0, 0.0])];
        let mut opt = Optimizer::new(OptimizerKind::adam(), 0.0, 1).unwrap();
        opt.step(&mut params, &[Some(vec![3.0, -0.5])], 0.1)
            .unwrap();
        assert!((params[0].values[0] + 0.1).abs() < 1e-6);
        assert!((params[0].values[1] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn frozen_and_gradient_free_parameters_stay() {
        let mut params = vec![param(vec![1.0]), param(vec![2.0])];
        params[1].trainable = false;
        let mut opt = Optimizer::new(OptimizerKind::sgd_nesterov(0.99), 0.1, 2).unwrap();
        opt.step(&mut params, &[None, Some(vec![1.0])], 0.1)
            .unwrap();
        assert_eq!(params[0].values, [1.0]);
        assert_eq!(params[1].values, [2.0]);
        assert!(opt.state[0].is_empty() && opt.state[1].is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Optimizer::new(OptimizerKind::adam(), -1.0, 1).is_err());
        assert!(Optimizer::new(OptimizerKind::sgd_nesterov(0.0), 0.0, 1).is_err());
        let mut opt = Optimizer::new(OptimizerKind::adam(), 0.0, 1).unwrap();
        let mut params = vec![param(vec![0.0; 2])];
        assert!(opt.step(&mut params, &[Some(vec![1.0])], 0.1).is_err());
        assert!(opt
            .step(&mut params, &[Some(vec![1.0; 2])], f32::NAN)
            .is_err());
        assert_eq!(params[0].values, [0.0, 0.0]);
    }

    #[test]
    fn clipping_scales_to_the_norm() {
        let mut grads = vec![Some(vec![3.0, 0.0]), None, Some(vec![4.0])];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((grad_norm(&grads) - 1.0).abs() < 1e-5);
        let mut small = vec![Some(vec![0.1f32])];
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].as_deref(), Some(&[0.1f32][..]));
    }

    #[test]
    fn schedules() {
        let poly = LrPolicy {
            base: 0.01,
            schedule: LrSchedule::Poly { exponent: 0.9 },
            warmup_steps: 0,
            total_steps: 100,
        };
        assert_eq!(poly.at(0), 0.01);
        assert!((poly.at(50) - 0.01 * 0.5f32.powf(0.9)).abs() < 1e-7);
        assert_eq!(poly.at(100), 0.0);
        let warm = LrPolicy {
            base: 1.0,
            schedule: LrSchedule::Constant,
            warmup_steps: 4,
            total_steps: 100,
        };
        let rates: Vec<f32> = (0..6).map(|s| warm.at(s)).collect();
        assert_eq!(rates, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn ema_resets_before_start_then_averages() {
        let policy = EmaPolicy {
            decay: 0.5,
            every: 2,
            start: 4,
        };
        let mut ema = vec![param(vec![0.0])];
        let model = vec![param(vec![8.0])];
        policy.update(&mut ema, &model, 1).unwrap();
        assert_eq!(ema[0].values, [0.0], "odd steps skip");
        policy.update(&mut ema, &model, 2).unwrap();
        assert_eq!(ema[0].values, [8.0], "before start: copy");
        let model = vec![param(vec![4.0])];
        policy.update(&mut ema, &model, 4).unwrap();
        assert_eq!(ema[0].values, [6.0], "from start: average");
    }
}

//! A run's master weights, optimiser state and weight average kept on the
//! compute device between steps.
//!
//! With the weights on the host, a GPU step uploads every parameter and
//! downloads every gradient: for the CLAIM denoiser (44.75 M parameters)
//! that is 358 MB over PCIe plus a host optimiser pass over 1.3 GB of f32
//! state, every step. Resident, a step moves a few numbers: the loss, and
//! one sum of squares per gradient for the overflow check, the norm and
//! clipping ([`Tensor::squared_norms`]). The update is the engine's fused
//! [`Tensor::optimizer_update`], bit-identical to the host optimiser, and
//! the EMA is `a + (w − a)·(1 − decay)` in two engine ops, rounded as the
//! host rounds it.
//!
//! How close the two paths are: given the same gradients, on the CPU the
//! resident path reproduces the host path bit for bit under a power-of-two
//! loss scale (the default; scaling by a power of two is exact, so the
//! norm `√Σg² / S` equals the host's `√Σ(g/S)²`). On a GPU the f64 norm's
//! summation order differs from the CPU's (per-thread strides, then a
//! tree), so the norm can differ in its last bits; without clipping that
//! changes nothing but the reported norm, with clipping the clip factor
//! can move by an ulp.
//!
//! The host [`TrainState`] keeps the names, shapes, trainable flags and
//! counters; its values are stale while a [`ResidentState`] holds them.
//! Trainers read them through [`host_view`] (checkpoints, exports) and
//! write them after [`sync_host`], which brings the values back and drops
//! the device copy (the next step uploads again).

use crate::backend::desc::OptimizerStep;
use crate::nn::{DType, Device, Gradients, Tensor};
use crate::train::checkpoint::TrainState;
use crate::train::compute::Compute;
use crate::train::optim::{clip_factor, named_tensors, EmaPolicy, Optimizer, Parameter};
use crate::{Error, Result};
use std::borrow::Cow;

/// The device copy of a [`TrainState`]'s values.
#[derive(Clone, Debug)]
pub struct ResidentState {
    /// The f32 master weights, in the state's parameter order.
    params: Vec<Tensor>,
    /// Per parameter, the optimiser's buffers (empty until its first
    /// update, as on the host).
    buffers: Vec<Vec<Tensor>>,
    /// The weight average, when the run keeps one.
    ema: Option<Vec<Tensor>>,
}

fn upload_all(params: &[Parameter], device: &Device) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|p| Tensor::from_slice_on(&p.values, &p.shape, device, DType::F32))
        .collect()
}

impl ResidentState {
    /// Copies `state`'s weights, optimiser buffers and average to `device`
    /// as f32.
    pub fn upload(state: &TrainState, device: &Device) -> Result<ResidentState> {
        check_lengths(state, state.params.len())?;
        let buffers = state
            .params
            .iter()
            .zip(&state.optimizer.state)
            .map(|(p, bufs)| {
                bufs.iter()
                    .map(|b| Tensor::from_slice_on(b, &p.shape, device, DType::F32))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResidentState {
            params: upload_all(&state.params, device)?,
            buffers,
            ema: state
                .ema
                .as_deref()
                .map(|e| upload_all(e, device))
                .transpose()?,
        })
    }

    /// Writes the device values into `state` (weights, optimiser buffers,
    /// average): all of them or, when a download fails, none.
    pub fn download_into(&self, state: &mut TrainState) -> Result<()> {
        check_lengths(state, self.params.len())?;
        let all = |ts: &[Tensor]| ts.iter().map(Tensor::to_vec).collect::<Result<Vec<_>>>();
        let params = all(&self.params)?;
        let buffers = self
            .buffers
            .iter()
            .map(|b| all(b))
            .collect::<Result<Vec<_>>>()?;
        let ema = self.ema.as_deref().map(all).transpose()?;
        for (p, values) in state.params.iter_mut().zip(params) {
            p.values = values;
        }
        state.optimizer.state = buffers;
        if let (Some(host), Some(values)) = (state.ema.as_mut(), ema) {
            for (p, v) in host.iter_mut().zip(values) {
                p.values = v;
            }
        }
        Ok(())
    }
}

/// Refuses a state whose parameters, optimiser state, step counts or
/// average do not all describe `count` parameters (the public fields allow
/// it; indexing them would panic).
fn check_lengths(state: &TrainState, count: usize) -> Result<()> {
    let o = &state.optimizer;
    let lengths = [
        state.params.len(),
        o.state.len(),
        o.param_steps.len(),
        state.ema.as_ref().map_or(count, Vec::len),
    ];
    if lengths.iter().any(|&l| l != count) {
        return Err(Error::invalid(format!(
            "a training state for {count} parameters has (parameters, optimiser state, step counts, average) = {lengths:?}"
        )));
    }
    Ok(())
}

/// Whether `compute` wants the weights resident and `resident` does not
/// hold them yet: uploads them. When it does not want them, brings any
/// device copy back to the host.
pub fn ensure_resident(
    state: &mut TrainState,
    resident: &mut Option<ResidentState>,
    compute: &Compute,
) -> Result<()> {
    if compute.resident_weights {
        if resident.is_none() {
            *resident = Some(ResidentState::upload(state, &compute.device)?);
        }
        Ok(())
    } else {
        sync_host(state, resident)
    }
}

/// Brings resident values back into `state` and drops the device copy, so
/// that the host values can be read and changed.
/// A failed download changes nothing and keeps the device copy.
pub fn sync_host(state: &mut TrainState, resident: &mut Option<ResidentState>) -> Result<()> {
    if let Some(r) = resident.as_ref() {
        r.download_into(state)?;
    }
    *resident = None;
    Ok(())
}

/// `state`'s names, shapes, counters and metadata with empty values, for a
/// copy whose values come from the device (cloning the stale host values
/// first would copy every weight and buffer for nothing).
fn without_values(state: &TrainState) -> TrainState {
    let strip = |ps: &[Parameter]| ps.iter().map(Parameter::clone_without_values).collect();
    let o = &state.optimizer;
    TrainState {
        params: strip(&state.params),
        ema: state.ema.as_deref().map(strip),
        optimizer: Optimizer {
            kind: o.kind,
            weight_decay: o.weight_decay,
            steps: o.steps,
            param_steps: o.param_steps.clone(),
            state: vec![Vec::new(); o.state.len()],
        },
        step: state.step,
        metadata: state.metadata.clone(),
    }
}

/// `state` with current values: itself, or a copy filled from the device.
pub fn host_view<'a>(
    state: &'a TrainState,
    resident: &Option<ResidentState>,
) -> Result<Cow<'a, TrainState>> {
    match resident {
        None => Ok(Cow::Borrowed(state)),
        Some(r) => {
            let mut copy = without_values(state);
            r.download_into(&mut copy)?;
            Ok(Cow::Owned(copy))
        }
    }
}

/// The current weights (`model`: the average when kept) as host
/// parameters: borrowed, or downloaded from the device copy.
pub fn host_parameters<'a>(
    state: &'a TrainState,
    resident: &Option<ResidentState>,
    model: bool,
) -> Result<Cow<'a, [Parameter]>> {
    let host = match (model, state.ema.as_deref()) {
        (true, Some(ema)) => ema,
        _ => &state.params,
    };
    let Some(r) = resident else {
        return Ok(Cow::Borrowed(host));
    };
    let device = match (model, r.ema.as_deref()) {
        (true, Some(ema)) => ema,
        _ => &r.params,
    };
    host.iter()
        .zip(device)
        .map(|(p, t)| {
            Ok(Parameter {
                values: t.to_vec()?,
                ..p.clone_without_values()
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Cow::Owned)
}

/// The weights as named tensors for a forward pass (trainable ones as
/// variables when `track`): the resident tensors themselves (no copy), or
/// host tensors.
pub fn step_tensors(
    state: &TrainState,
    resident: &Option<ResidentState>,
    track: bool,
) -> Result<Vec<(String, Tensor)>> {
    match resident {
        None => crate::train::optim::parameter_tensors(&state.params, track),
        Some(r) => Ok(named_tensors(&state.params, &r.params, track)),
    }
}

/// The weights synthesis uses (the average when kept), untracked: resident
/// tensors or host tensors.
pub fn model_tensors(
    state: &TrainState,
    resident: &Option<ResidentState>,
) -> Result<Vec<(String, Tensor)>> {
    match resident {
        None => crate::train::optim::parameter_tensors(
            state.ema.as_deref().unwrap_or(&state.params),
            false,
        ),
        Some(r) => Ok(named_tensors(
            &state.params,
            r.ema.as_deref().unwrap_or(&r.params),
            false,
        )),
    }
}

/// One optimiser update from the gradients of `tensors` (as
/// [`step_tensors`] gave them) in `grads`: unscaled by `compute`'s loss
/// scale, checked, clipped to `clip` and applied at rate `lr`, on the host
/// or on the device. `Ok(None)`: the gradients overflowed under loss
/// scaling and nothing changed (the caller skips the step). `Ok(Some(norm))`:
/// applied; `norm` is the gradient's L2 norm before clipping. A non-finite
/// norm without loss scaling is an error and changes nothing.
pub fn apply_gradients(
    state: &mut TrainState,
    resident: &mut Option<ResidentState>,
    tensors: &[(String, Tensor)],
    grads: &mut Gradients,
    compute: &Compute,
    clip: Option<f32>,
    lr: f32,
) -> Result<Option<f32>> {
    let step = state.step;
    let non_finite = |norm: f32| {
        Error::invalid(format!(
            "step {step}: the gradient norm is {norm}: lower the learning rate"
        ))
    };
    let Some(r) = resident.as_mut() else {
        let mut host = crate::train::optim::take_host_gradients(tensors, grads)?;
        if !compute.unscale(&mut host) {
            return Ok(None);
        }
        let norm = match clip {
            Some(max) => crate::train::optim::clip_grad_norm(&mut host, max)?,
            None => crate::train::optim::grad_norm(&host),
        };
        if !norm.is_finite() {
            return Err(non_finite(norm));
        }
        state.optimizer.step(&mut state.params, &host, lr)?;
        return Ok(Some(norm));
    };
    check_lengths(state, r.params.len())?;
    if tensors.len() != r.params.len() {
        return Err(Error::invalid(format!(
            "{} tensors for {} parameters",
            tensors.len(),
            r.params.len()
        )));
    }
    let device_grads: Vec<Option<Tensor>> = tensors.iter().map(|(_, t)| grads.take(t)).collect();
    let present: Vec<&Tensor> = device_grads.iter().flatten().collect();
    let total: f64 = Tensor::squared_norms(&present)?.iter().sum();
    let inverse = 1.0 / compute.loss_scale();
    let norm = (total.sqrt() * f64::from(inverse)) as f32;
    // Under loss scaling a norm beyond f32 is an overflow to skip, as the
    // host skips when any unscaled value is: one such value makes the norm
    // infinite (and with a scale below 1, unscaling itself can overflow).
    if compute.scaler.is_some() && !norm.is_finite() {
        return Ok(None);
    }
    if !norm.is_finite() {
        return Err(non_finite(norm));
    }
    let factor = match clip {
        Some(max) => clip_factor(norm, max)?,
        None => 1.0,
    };
    let optimizer = &mut state.optimizer;
    let rule = optimizer.kind;
    let mut update = OptimizerStep {
        rule,
        lr,
        weight_decay: optimizer.weight_decay,
        step: 1,
        grad_factors: [inverse, factor],
    };
    update.check()?;
    // Every update is computed before any is kept, so a failure (say, the
    // device running out of memory) leaves the weights, the optimiser
    // state and the counters as they were.
    let mut updated = Vec::new();
    for (i, g) in device_grads.iter().enumerate() {
        let (Some(g), true) = (g, state.params[i].trainable) else {
            continue;
        };
        let p = &r.params[i];
        let zeros;
        let buffers: Vec<&Tensor> = if r.buffers[i].is_empty() {
            zeros = (0..rule.state_buffers())
                .map(|_| Tensor::full_on(0.0, p.dims(), &p.device(), DType::F32))
                .collect::<Result<Vec<_>>>()?;
            zeros.iter().collect()
        } else {
            r.buffers[i].iter().collect()
        };
        update.step = optimizer.param_steps[i] + 1;
        updated.push((i, update.step, p.optimizer_update(g, &buffers, &update)?));
    }
    optimizer.steps += 1;
    for (i, step, (new_p, new_buffers)) in updated {
        optimizer.param_steps[i] = step;
        r.params[i] = new_p;
        r.buffers[i] = new_buffers;
    }
    Ok(Some(norm))
}

/// The weight average's update after step `step`'s optimiser update (see
/// [`EmaPolicy::update`]), on the host or on the device.
pub fn update_ema(
    state: &mut TrainState,
    resident: &mut Option<ResidentState>,
    policy: &EmaPolicy,
    step: u64,
) -> Result<()> {
    let Some(r) = resident.as_mut() else {
        if let Some(ema) = state.ema.as_mut() {
            policy.update(ema, &state.params, step)?;
        }
        return Ok(());
    };
    let Some(ema) = r.ema.as_mut() else {
        return Ok(());
    };
    if ema.len() != r.params.len() || state.params.len() != r.params.len() {
        return Err(Error::invalid("EMA and model have different parameters"));
    }
    if policy.every == 0 || step % policy.every != 0 {
        return Ok(());
    }
    let reset = step < policy.start;
    let weight = 1.0 - policy.decay;
    for ((e, w), p) in ema.iter_mut().zip(&r.params).zip(&state.params) {
        *e = if reset || !p.trainable {
            w.clone()
        } else {
            // torch's lerp_, rounded as the host's loop: a + ((w − a)·c).
            e.lincomb(1.0, &w.sub(e)?, weight)?
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{Optimizer, OptimizerKind};
    use std::collections::BTreeMap;

    fn state(kind: OptimizerKind, ema: bool) -> TrainState {
        let params = vec![
            Parameter {
                name: "a".into(),
                shape: vec![2, 3],
                values: vec![0.5, -1.0, 2.0, 0.25, -0.75, 1.5],
                trainable: true,
            },
            Parameter {
                name: "frozen".into(),
                shape: vec![2],
                values: vec![3.0, 4.0],
                trainable: false,
            },
            Parameter {
                name: "b".into(),
                shape: vec![4],
                values: vec![1.0, 2.0, -3.0, 0.125],
                trainable: true,
            },
        ];
        TrainState {
            ema: ema.then(|| params.clone()),
            optimizer: Optimizer::new(kind, 0.01, params.len()).unwrap(),
            params,
            step: 0,
            metadata: BTreeMap::new(),
        }
    }

    /// `Σ w²·c` over the tracked tensors: gradients `2·c·w`, scaled.
    fn gradients(tensors: &[(String, Tensor)], scale: f32, c: f32) -> Result<Gradients> {
        let mut loss: Option<Tensor> = None;
        for (_, t) in tensors {
            let n = t.elem_count();
            let term = t
                .mul(t)?
                .affine(c * scale, 0.0)?
                .reshape(&[1, n])?
                .sum_keepdim(1)?
                .reshape(&[1])?;
            loss = Some(match loss {
                Some(l) => l.add(&term)?,
                None => term,
            });
        }
        loss.expect("tensors").backward()
    }

    /// The device path (resident on the CPU here: the same code a GPU runs)
    /// gives the host path's numbers exactly: weights, optimiser state,
    /// counters and EMA, over steps with and without loss scaling and
    /// clipping, then a skipped overflow.
    #[test]
    fn resident_updates_equal_host_updates() -> Result<()> {
        for kind in [
            OptimizerKind::adam(),
            OptimizerKind::adamw(),
            OptimizerKind::sgd_nesterov(0.99),
        ] {
            let mut host = state(kind, true);
            let mut dev = state(kind, true);
            let mut compute = Compute {
                resident_weights: true,
                ..Compute::cpu()
            };
            let mut none = None;
            let mut resident = None;
            ensure_resident(&mut dev, &mut resident, &compute)?;
            let policy = EmaPolicy {
                decay: 0.9,
                start: 2,
                every: 1,
            };
            for (i, (scale, clip)) in [
                (None, None),
                (Some(1024.0), Some(0.5)),
                (Some(8.0), None),
                (None, Some(100.0)),
            ]
            .into_iter()
            .enumerate()
            {
                compute.scaler =
                    scale.map(|s| crate::train::compute::GradScaler::with_scale(s).unwrap());
                let mut host_compute = compute.clone();
                host_compute.resident_weights = false;
                let c = 1.0 + i as f32;
                let s = compute.loss_scale();
                let ht = step_tensors(&host, &none, true)?;
                let dt = step_tensors(&dev, &resident, true)?;
                let mut hg = gradients(&ht, s, c)?;
                let mut dg = gradients(&dt, s, c)?;
                let hn = apply_gradients(
                    &mut host,
                    &mut none,
                    &ht,
                    &mut hg,
                    &host_compute,
                    clip,
                    0.05,
                )?;
                let dn =
                    apply_gradients(&mut dev, &mut resident, &dt, &mut dg, &compute, clip, 0.05)?;
                let (hn, dn) = (hn.unwrap(), dn.unwrap());
                assert_eq!(hn, dn, "{kind:?} step {i}: the norms");
                update_ema(&mut host, &mut none, &policy, i as u64)?;
                update_ema(&mut dev, &mut resident, &policy, i as u64)?;
                let view = host_view(&dev, &resident)?;
                assert_eq!(view.params, host.params, "{kind:?} step {i}");
                assert_eq!(view.optimizer, host.optimizer, "{kind:?} step {i}");
                assert_eq!(view.ema, host.ema, "{kind:?} step {i}");
            }
            // An overflow under scaling skips and changes nothing.
            compute.scaler = Some(crate::train::compute::GradScaler::with_scale(2.0)?);
            let before = host_view(&dev, &resident)?.into_owned();
            let dt = step_tensors(&dev, &resident, true)?;
            let mut dg = gradients(&dt, f32::INFINITY, 1.0)?;
            let out = apply_gradients(&mut dev, &mut resident, &dt, &mut dg, &compute, None, 0.05)?;
            assert_eq!(out, None);
            assert_eq!(*host_view(&dev, &resident)?, before);
            // Without scaling the same gradients are an error.
            compute.scaler = None;
            let dt = step_tensors(&dev, &resident, true)?;
            let mut dg = gradients(&dt, f32::INFINITY, 1.0)?;
            assert!(
                apply_gradients(&mut dev, &mut resident, &dt, &mut dg, &compute, None, 0.05)
                    .is_err()
            );
            assert_eq!(*host_view(&dev, &resident)?, before);
            // A scale below 1 whose unscaling overflows f32 is an overflow
            // to skip, as on the host.
            compute.scaler = Some(crate::train::compute::GradScaler::with_scale(1e-30)?);
            let dt = step_tensors(&dev, &resident, true)?;
            let mut dg = gradients(&dt, 1.0, 1e9)?;
            let out = apply_gradients(&mut dev, &mut resident, &dt, &mut dg, &compute, None, 0.05)?;
            assert_eq!(out, None);
            assert_eq!(*host_view(&dev, &resident)?, before);
            // Back on the host, the values come with it.
            compute.resident_weights = false;
            ensure_resident(&mut dev, &mut resident, &compute)?;
            assert!(resident.is_none());
            assert_eq!(dev, before);
        }
        Ok(())
    }

    /// Inconsistent public fields are refused with an error, not a panic,
    /// and change nothing.
    #[test]
    fn inconsistent_states_are_refused() -> Result<()> {
        let compute = Compute {
            resident_weights: true,
            ..Compute::cpu()
        };
        let mut bad = state(OptimizerKind::adam(), true);
        bad.optimizer.param_steps.pop();
        assert!(ResidentState::upload(&bad, &Device::Cpu).is_err());
        let mut good = state(OptimizerKind::adam(), true);
        let mut resident = None;
        ensure_resident(&mut good, &mut resident, &compute)?;
        let before = host_view(&good, &resident)?.into_owned();
        let mut tensors = step_tensors(&good, &resident, true)?;
        let mut grads = gradients(&tensors, 1.0, 1.0)?;
        tensors.pop();
        assert!(apply_gradients(
            &mut good,
            &mut resident,
            &tensors,
            &mut grads,
            &compute,
            None,
            0.1
        )
        .is_err());
        assert_eq!(*host_view(&good, &resident)?, before);
        good.params.pop();
        let policy = EmaPolicy::default();
        assert!(update_ema(&mut good, &mut resident, &policy, 0).is_err());
        // The host optimiser refuses a state buffer of the wrong length.
        let mut host = state(OptimizerKind::adam(), false);
        host.optimizer.state[0] = vec![vec![0.0; 6], vec![0.0; 5]];
        let g: Vec<Option<Vec<f32>>> = host
            .params
            .iter()
            .map(|p| Some(vec![1.0; p.values.len()]))
            .collect();
        assert!(host.optimizer.step(&mut host.params, &g, 0.1).is_err());
        Ok(())
    }
}

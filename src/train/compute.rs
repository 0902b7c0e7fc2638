//! Where a trainer computes its forward and backward passes, and the
//! dynamic loss scaling that keeps f16 gradients in range.
//!
//! Mixed precision here is PyTorch AMP's recipe: the master weights and the
//! optimiser state stay f32 (on the GPU between steps, see
//! [`crate::train::resident`]; on the host for the CPU); every step
//! converts them once to the compute type (f16 on a GPU),
//! the losses run in f32 on the network's outputs cast up, and the loss is
//! multiplied by a scale before the backward pass so that small gradients
//! do not flush to zero in f16. The gradients come back to the f32 master
//! weights through the conversion's own backward, are divided by the scale,
//! and a step whose gradients overflowed is skipped with the scale halved
//! ([`GradScaler`]).

use crate::nn::{DType, Device, LoadOptions, Tensor};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Dynamic loss scaling, as PyTorch's `torch.amp.GradScaler` with its
/// defaults: the scale starts at 2^16, halves on every step whose
/// gradients hold an infinity or NaN (that step is skipped), and doubles
/// after 2000 consecutive clean steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    /// The factor the loss is multiplied by before the backward pass.
    pub scale: f32,
    /// Clean steps since the scale last changed.
    pub clean_steps: u32,
    /// Factor applied after `growth_interval` clean steps.
    pub growth_factor: f32,
    /// Factor applied after an overflow.
    pub backoff_factor: f32,
    /// Clean steps between growths.
    pub growth_interval: u32,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: 65536.0,
            clean_steps: 0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl GradScaler {
    /// A scaler starting at `scale` (a power of two keeps the scaling exact)
    /// with PyTorch's growth and back-off.
    pub fn with_scale(scale: f32) -> Result<GradScaler> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid(format!(
                "loss scale {scale} is not a positive number"
            )));
        }
        Ok(GradScaler {
            scale,
            ..GradScaler::default()
        })
    }

    /// Divides every gradient by the scale in place; `false` when any
    /// value is infinite or NaN (the step must then be skipped).
    pub fn unscale(&self, grads: &mut [Option<Vec<f32>>]) -> bool {
        let inverse = 1.0 / self.scale;
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            for v in g.iter_mut() {
                *v *= inverse;
                finite &= v.is_finite();
            }
        }
        finite
    }

    /// Adjusts the scale after a step: halved after an overflow, doubled
    /// after `growth_interval` clean steps in a row. The scale stays finite
    /// and at least the smallest normal f32.
    pub fn update(&mut self, overflowed: bool) {
        if overflowed {
            self.scale = (self.scale * self.backoff_factor).max(f32::MIN_POSITIVE);
            self.clean_steps = 0;
            return;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_interval {
            let grown = self.scale * self.growth_factor;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.clean_steps = 0;
        }
    }
}

/// The device and element type of a trainer's forward and backward
/// passes, and its loss scaler. The default is the CPU in f32 without
/// scaling, which reproduces the CPU trainers exactly.
#[derive(Clone, Debug)]
pub struct Compute {
    /// Where the network's tensors live during a step.
    pub device: Device,
    /// Their element type there.
    pub dtype: DType,
    /// The loss scaler (`None` = the loss's gradient is 1): on by default
    /// in f16, optional in f32 (where it changes nothing but can be
    /// tested).
    pub scaler: Option<GradScaler>,
    /// Whether the master weights, optimiser state and weight average stay
    /// on `device` between steps, updated there by the engine's fused
    /// optimiser (`crate::train::resident`): on by default off the CPU. On
    /// the CPU it runs the same code a GPU runs, with the host's numbers.
    pub resident_weights: bool,
}

impl Default for Compute {
    fn default() -> Self {
        Compute::cpu()
    }
}

impl Compute {
    /// The CPU in f32, no loss scaling.
    pub fn cpu() -> Compute {
        Compute {
            device: Device::Cpu,
            dtype: DType::F32,
            scaler: None,
            resident_weights: false,
        }
    }

    /// The CPU in f32 with a loss scaler starting at `scale`, its weights
    /// on the host or, `resident_weights`, through the device path: for
    /// tests that compare the two.
    #[cfg(test)]
    pub(crate) fn cpu_scaled(scale: f32, resident_weights: bool) -> Compute {
        Compute {
            scaler: GradScaler::with_scale(scale).ok(),
            resident_weights,
            ..Compute::cpu()
        }
    }

    /// Opens `options`' device at its precision (f16 on a GPU by default),
    /// with dynamic loss scaling in f16. Fails as model loading does: no
    /// CUDA in this build, no driver or device, or a precision the device
    /// cannot train in.
    pub fn open(options: &LoadOptions) -> Result<Compute> {
        let (device, dtype) = options.resolve()?;
        Ok(Compute {
            scaler: (dtype == DType::F16).then(GradScaler::default),
            resident_weights: !matches!(device, Device::Cpu),
            device,
            dtype,
        })
    }

    /// Whether the steps run on the CPU (always in f32 there: the CPU
    /// refuses f16).
    pub fn is_cpu(&self) -> bool {
        matches!(self.device, Device::Cpu)
    }

    /// The factor the loss is multiplied by before the backward pass.
    pub fn loss_scale(&self) -> f32 {
        self.scaler.map_or(1.0, |s| s.scale)
    }

    /// The gradients of `loss` (a one-element f32 tensor) with respect to
    /// the variables it depends on, computed from the scaled seed.
    pub fn backward(&self, loss: &Tensor) -> Result<crate::nn::Gradients> {
        match self.scaler {
            None => loss.backward(),
            Some(s) => {
                let seed = Tensor::full_on(s.scale, loss.dims(), &loss.device(), loss.dtype())?;
                loss.backward_with(&seed)
            }
        }
    }

    /// Unscales host gradients in place; `false` when they overflowed (the
    /// step is to be skipped). Without a scaler, always `true` (the
    /// trainer's own finiteness check then refuses bad gradients).
    pub fn unscale(&self, grads: &mut [Option<Vec<f32>>]) -> bool {
        self.scaler.is_none_or(|s| s.unscale(grads))
    }

    /// Records a step's outcome in the scaler (nothing without one).
    pub fn update(&mut self, overflowed: bool) {
        if let Some(s) = self.scaler.as_mut() {
            s.update(overflowed);
        }
    }

    /// A network output in the type the losses run in (f32), on the graph.
    pub fn for_loss(&self, output: &Tensor) -> Result<Tensor> {
        output.to_dtype(DType::F32)
    }

    /// The scaler's state as checkpoint metadata (`None` without one).
    pub fn scaler_metadata(&self) -> Result<Option<String>> {
        self.scaler
            .map(|s| serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string())))
            .transpose()
    }

    /// This compute with the loss-scaler state a resumed run saved, taken
    /// out of `saved` so that only the first compute set after resuming
    /// takes it up (see [`restore_scaler`](Self::restore_scaler)).
    pub(crate) fn resuming(mut self, saved: &mut Option<String>) -> Result<Compute> {
        self.restore_scaler(saved.as_deref())?;
        *saved = None;
        Ok(self)
    }

    /// Restores the scaler from checkpoint metadata written by
    /// [`scaler_metadata`](Self::scaler_metadata), when this compute scales
    /// its loss (a run resumed on another device keeps its own default).
    pub fn restore_scaler(&mut self, metadata: Option<&str>) -> Result<()> {
        if let (Some(scaler), Some(text)) = (self.scaler.as_mut(), metadata) {
            let saved: GradScaler = serde_json::from_str(text)
                .map_err(|e| Error::format(format!("checkpoint grad_scaler: {e}")))?;
            let positive = |v: f32| v.is_finite() && v > 0.0;
            if !(positive(saved.scale)
                && saved.growth_factor.is_finite()
                && saved.growth_factor >= 1.0
                && positive(saved.backoff_factor)
                && saved.backoff_factor < 1.0
                && saved.growth_interval > 0)
            {
                return Err(Error::format(format!(
                    "checkpoint grad_scaler: unusable settings {saved:?}"
                )));
            }
            *scaler = saved;
        }
        Ok(())
    }
}

impl std::fmt::Display for Compute {
    /// `cpu, f32` or e.g. `cuda:0 (…), f16, loss scale 65536`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtype = match self.dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
        };
        write!(f, "{}, {dtype}", self.device)?;
        if let Some(s) = self.scaler {
            write!(f, ", loss scale {}", s.scale)?;
        }
        Ok(())
    }
}

/// The checkpoint metadata key of the loss scaler's state.
pub const SCALER_METADATA_KEY: &str = "grad_scaler";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = GradScaler {
            growth_interval: 3,
            ..GradScaler::default()
        };
        s.update(true);
        assert_eq!((s.scale, s.clean_steps), (32768.0, 0));
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!((s.scale, s.clean_steps), (65536.0, 0));
        s.update(false);
        s.update(true);
        assert_eq!(
            (s.scale, s.clean_steps),
            (32768.0, 0),
            "an overflow resets the count"
        );
        let mut top = GradScaler::with_scale(f32::MAX).unwrap();
        top.growth_interval = 1;
        top.update(false);
        assert_eq!(top.scale, f32::MAX, "the scale never grows to infinity");
        assert!(GradScaler::with_scale(0.0).is_err());
        assert!(GradScaler::with_scale(f32::NAN).is_err());
    }

    #[test]
    fn unscaling_divides_and_finds_overflow() {
        let s = GradScaler::with_scale(4.0).unwrap();
        let mut grads = vec![Some(vec![4.0, -8.0]), None, Some(vec![2.0])];
        assert!(s.unscale(&mut grads));
        assert_eq!(grads, vec![Some(vec![1.0, -2.0]), None, Some(vec![0.5])]);
        let mut bad = vec![Some(vec![1.0, f32::INFINITY])];
        assert!(!s.unscale(&mut bad));
        let mut nan = vec![Some(vec![f32::NAN])];
        assert!(!s.unscale(&mut nan));
        assert!(
            Compute::cpu().unscale(&mut bad),
            "no scaler: nothing to check"
        );
    }

    #[test]
    fn the_scaler_round_trips_through_metadata() -> Result<()> {
        let mut c = Compute::cpu();
        assert_eq!(c.scaler_metadata()?, None);
        c.scaler = Some(GradScaler {
            scale: 512.0,
            clean_steps: 7,
            ..GradScaler::default()
        });
        let text = c.scaler_metadata()?.unwrap();
        let mut fresh = Compute {
            scaler: Some(GradScaler::default()),
            ..Compute::cpu()
        };
        fresh.restore_scaler(Some(&text))?;
        assert_eq!(fresh.scaler, c.scaler);
        assert!(fresh.restore_scaler(Some("{")).is_err());
        for bad in [
            r#"{"scale":-1.0,"clean_steps":0,"growth_factor":2.0,"backoff_factor":0.5,"growth_interval":2000}"#,
            r#"{"scale":1.0,"clean_steps":0,"growth_factor":2.0,"backoff_factor":0.5,"growth_interval":0}"#,
            r#"{"scale":1.0,"clean_steps":0,"growth_factor":2.0,"backoff_factor":1.5,"growth_interval":9}"#,
        ] {
            assert!(fresh.restore_scaler(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(fresh.scaler, c.scaler, "a refused state changes nothing");
        let mut unscaled = Compute::cpu();
        unscaled.restore_scaler(Some(&text))?;
        assert_eq!(unscaled.scaler, None, "an unscaled run stays unscaled");
        Ok(())
    }

    #[test]
    fn the_cpu_refuses_f16_training() {
        let options = LoadOptions {
            precision: crate::nn::Precision::F16,
            ..LoadOptions::default()
        };
        assert!(matches!(
            Compute::open(&options),
            Err(Error::Unsupported(_))
        ));
        let cpu = Compute::open(&LoadOptions::default()).unwrap();
        assert!(cpu.is_cpu() && cpu.scaler.is_none() && cpu.dtype == DType::F32);
        assert_eq!(cpu.to_string(), "cpu, f32");
    }
}

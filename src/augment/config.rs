//! The `augment.json` configuration: every field optional, unknown fields
//! refused (a typo must not silently fall back to a default).

use crate::smile::MaskDistribution;
use crate::synthesis::{jump_schedule, JumpParams, TIMESTEPS};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What `claim augment` does, as read from `--config augment.json` (every
/// field has a default; see `docs/AUGMENT.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Global seed: with the source case and `k` it gives every case's seed.
    pub seed: u64,
    /// Synthetic cases per source case.
    pub per_case: usize,
    /// How each case's SMILE mask is drawn.
    pub masks: MaskDistribution,
    /// The RePaint schedule and the histogram condition.
    pub synthesis: SynthesisSettings,
    /// What happens to input cases that already have scar.
    pub scarred_cases: ScarredCases,
    /// Optional quality gate: segment each synthetic case and drop or flag
    /// it when its predicted lesion misses the mask.
    pub gate: Option<GateConfig>,
    /// SMILE draws tried per case before it fails (a draw fails when the
    /// heart cannot hold the drawn burden in the drawn territory).
    pub mask_attempts: usize,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            seed: 0,
            per_case: 1,
            masks: MaskDistribution::default(),
            synthesis: SynthesisSettings::default(),
            scarred_cases: ScarredCases::Copy,
            gate: None,
            mask_attempts: 8,
        }
    }
}

/// What happens to input cases that already have scar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScarredCases {
    /// Copied into the output unchanged (the output is then a complete
    /// training set: real and synthetic cases).
    Copy,
    /// Left out.
    Skip,
}

/// Where the histogram condition of each synthetic case comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionSource {
    /// Measured from one of the dataset's scarred cases, drawn per
    /// synthetic case (as CLAIM conditions on real histograms); the
    /// model's preset when the dataset has no scarred case.
    Dataset,
    /// The model layout's preset (CLAIM's / LeFusion's EMIDEC centres).
    Preset,
    /// The learned null condition.
    Null,
}

/// The synthesis settings of every case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthesisSettings {
    /// RePaint's starting timestep t_T (1–300).
    pub t_start: usize,
    /// Steps gone back up per jump.
    pub jump_length: usize,
    /// Visits of each jump point.
    pub jump_n_sample: usize,
    /// Classifier-free guidance scale (1 = off).
    pub guidance: f32,
    /// Slices (items) per network batch; 0 = automatic (4 on the CPU, from
    /// free memory on a GPU). The images do not depend on it.
    pub batch_size: usize,
    /// In-plane window side around the LV cavity.
    pub crop: usize,
    /// Slices per item; 0 = the model's layout.
    pub frames: usize,
    /// Where each case's histogram condition comes from.
    pub condition: ConditionSource,
    /// Upstream's 10 % perturbation of the histogram.
    pub perturb_condition: bool,
}

impl Default for SynthesisSettings {
    fn default() -> Self {
        SynthesisSettings {
            t_start: 300,
            jump_length: 5,
            jump_n_sample: 5,
            guidance: 1.0,
            batch_size: 4,
            crop: 72,
            frames: 0,
            condition: ConditionSource::Dataset,
            perturb_condition: true,
        }
    }
}

impl SynthesisSettings {
    /// The RePaint schedule.
    pub fn jump(&self) -> JumpParams {
        JumpParams {
            t_start: self.t_start,
            jump_length: self.jump_length,
            jump_n_sample: self.jump_n_sample,
        }
    }
}

/// What the quality gate does with a case that misses its mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateAction {
    /// Not written; its manifest line says `dropped`.
    Drop,
    /// Written; its manifest line says `flagged`.
    Flag,
}

/// The optional quality gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateConfig {
    /// The segmenter: an nnU-Net results folder, a claim bundle, or
    /// `builtin`.
    pub segmenter: String,
    /// Least Dice of the predicted lesion (scar + MVO) against the mask.
    pub min_dice: f64,
    /// What happens below it.
    pub action: GateAction,
    /// Folds of the segmenter (default: all it has).
    pub folds: Option<Vec<usize>>,
    /// Test-time mirroring (slower, nnU-Net's default on).
    pub mirroring: bool,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            segmenter: "builtin".into(),
            min_dice: 0.5,
            action: GateAction::Drop,
            folds: None,
            mirroring: false,
        }
    }
}

impl AugmentConfig {
    /// Reads and checks `path`.
    pub fn from_file(path: &Path) -> Result<AugmentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io_at(path, &e))?;
        let config: AugmentConfig = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        config.validate().map_err(|e| e.context(path.display()))?;
        Ok(config)
    }

    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.per_case == 0 || self.per_case > 10_000 {
            return Err(Error::invalid(format!(
                "per_case {}: need 1–10000",
                self.per_case
            )));
        }
        self.masks.validate()?;
        let s = &self.synthesis;
        if s.t_start == 0 || s.t_start > TIMESTEPS {
            return Err(Error::invalid(format!(
                "synthesis t_start {}: need 1–{TIMESTEPS}",
                s.t_start
            )));
        }
        jump_schedule(s.jump())?;
        if !(s.guidance.is_finite() && s.guidance > 0.0) {
            return Err(Error::invalid(format!(
                "synthesis guidance {}: need a positive number",
                s.guidance
            )));
        }
        if s.batch_size > 1024 || s.crop < 16 || s.crop > 1024 || s.frames > 64 {
            return Err(Error::invalid(format!(
                "synthesis batch_size {} / crop {} / frames {}: need batch 0 (automatic) to 1024, \
                 crop 16–1024, frames 0–64",
                s.batch_size, s.crop, s.frames
            )));
        }
        if !(1..=100).contains(&self.mask_attempts) {
            return Err(Error::invalid(format!(
                "mask_attempts {}: need 1–100",
                self.mask_attempts
            )));
        }
        if let Some(gate) = &self.gate {
            if !(0.0..=1.0).contains(&gate.min_dice) {
                return Err(Error::invalid(format!(
                    "gate min_dice {}: need 0–1",
                    gate.min_dice
                )));
            }
            if gate.segmenter.trim().is_empty() {
                return Err(Error::invalid(
                    "gate segmenter: give a results folder, a bundle or `builtin`",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_typos_are_refused() -> Result<()> {
        let config = AugmentConfig::default();
        config.validate()?;
        let text = serde_json::to_string(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let back: AugmentConfig =
            serde_json::from_str(&text).map_err(|e| Error::Internal(e.to_string()))?;
        assert_eq!(back, config);
        let partial: AugmentConfig = serde_json::from_str(
            r#"{"per_case": 3, "synthesis": {"t_start": 100}, "gate": {"min_dice": 0.3}}"#,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        assert_eq!(partial.per_case, 3);
        assert_eq!(partial.synthesis.t_start, 100);
        assert_eq!(partial.synthesis.jump_length, 5);
        assert_eq!(
            partial.gate.as_ref().map(|g| g.segmenter.as_str()),
            Some("builtin")
        );
        let err = serde_json::from_str::<AugmentConfig>(r#"{"per_cases": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("per_cases"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |c: AugmentConfig| c.validate().unwrap_err().to_string();
        let base = AugmentConfig::default();
        assert!(bad(AugmentConfig {
            per_case: 0,
            ..base.clone()
        })
        .contains("per_case"));
        let mut c = base.clone();
        c.synthesis.t_start = 0;
        assert!(!bad(c).is_empty());
        let mut c = base.clone();
        c.synthesis.guidance = f32::NAN;
        assert!(bad(c).contains("guidance"));
        let c = AugmentConfig {
            gate: Some(GateConfig {
                min_dice: 1.5,
                ..GateConfig::default()
            }),
            ..base
        };
        assert!(bad(c).contains("min_dice"));
    }
}

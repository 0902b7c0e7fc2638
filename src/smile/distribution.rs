//! Distributions of SMILE parameters: what the joint loop and
//! `claim augment` draw each synthetic case's mask from.
//!
//! A draw takes, in this order from one [`Rng`]: the pattern (equal
//! weights; list a pattern twice to double its weight), the burden
//! (uniform in `burden`), whether an ischaemic mask gets an MVO core
//! (`mvo_probability`) and, when `transmurality` is given, the
//! transmurality (uniform; at least 0.5 with MVO, as SMILE requires).
//! Without `transmurality` nothing more is drawn here and SMILE draws it
//! from the mask's seed (0.3–1.0, 0.75–1.0 with MVO), so configurations
//! written before the field existed draw exactly as before.

use crate::rng::Rng;
use crate::smile::{Pattern, SmileParams, Territory};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// How SMILE masks are drawn for synthetic cases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskDistribution {
    /// Patterns, drawn with equal probability (`ischemic`, `midwall`,
    /// `epicardial`, `insertion`, `claim`).
    pub patterns: Vec<String>,
    /// Culprit territory of ischaemic masks (`any`, `lad`, `rca`, `lcx`;
    /// `any` lets SMILE draw it from its culprit prior).
    pub territory: String,
    /// Lesion burden, uniform in `[lo, hi]` (fraction of the myocardium;
    /// the `claim` pattern keeps upstream's threshold instead).
    pub burden: [f64; 2],
    /// Probability that an ischaemic mask gets an MVO core.
    pub mvo_probability: f64,
    /// Transmurality of ischaemic masks, uniform in `[lo, hi]` (fraction of
    /// the wall, 0–1). `None` (the default) leaves it to SMILE.
    pub transmurality: Option<[f64; 2]>,
}

impl Default for MaskDistribution {
    fn default() -> Self {
        MaskDistribution {
            patterns: vec!["ischemic".into()],
            territory: "any".into(),
            burden: [0.05, 0.30],
            mvo_probability: 0.3,
            transmurality: None,
        }
    }
}

/// Least transmurality SMILE accepts with an MVO core.
const MVO_MIN_TRANSMURALITY: f64 = 0.5;

impl MaskDistribution {
    /// Parses and checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<Vec<Pattern>> {
        if self.patterns.is_empty() {
            return Err(Error::invalid("mask patterns: give at least one"));
        }
        let patterns = self
            .patterns
            .iter()
            .map(|p| Pattern::from_str(p))
            .collect::<Result<Vec<_>>>()?;
        Territory::from_str(&self.territory)?;
        let [lo, hi] = self.burden;
        if !(lo > 0.0 && lo <= hi && hi <= 0.9) {
            return Err(Error::invalid(format!(
                "mask burden range [{lo}, {hi}]: need 0 < lo ≤ hi ≤ 0.9"
            )));
        }
        if !(0.0..=1.0).contains(&self.mvo_probability) {
            return Err(Error::invalid(format!(
                "mask MVO probability {}: need 0–1",
                self.mvo_probability
            )));
        }
        if let Some([lo, hi]) = self.transmurality {
            if !(lo >= 0.0 && lo <= hi && hi <= 1.0) {
                return Err(Error::invalid(format!(
                    "mask transmurality range [{lo}, {hi}]: need 0 ≤ lo ≤ hi ≤ 1"
                )));
            }
        }
        Ok(patterns)
    }

    /// The SMILE parameters of one draw; `patterns` are those
    /// [`MaskDistribution::validate`] returned. Fields not drawn come from
    /// `base`.
    pub fn draw(
        &self,
        patterns: &[Pattern],
        rng: &mut Rng,
        base: &SmileParams,
    ) -> Result<SmileParams> {
        if patterns.is_empty() {
            return Err(Error::invalid("mask patterns: give at least one"));
        }
        let pattern = patterns[rng.below(patterns.len() as u64) as usize];
        let burden = rng.uniform_range(self.burden[0], self.burden[1]);
        // Upstream's generator has no burden: its threshold decides.
        let burden = (pattern != Pattern::Claim).then_some(burden);
        let ischemic = pattern == Pattern::Ischemic;
        let mvo = ischemic && rng.uniform() < self.mvo_probability;
        let transmurality = match self.transmurality {
            Some([lo, hi]) if ischemic => {
                let floor = if mvo { MVO_MIN_TRANSMURALITY } else { 0.0 };
                Some(rng.uniform_range(lo.max(floor), hi.max(floor)))
            }
            _ => None,
        };
        Ok(SmileParams {
            pattern,
            territory: if ischemic {
                Territory::from_str(&self.territory)?
            } else {
                Territory::Any
            },
            burden,
            transmurality,
            mvo,
            ..*base
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_their_ranges_and_mvo_keeps_its_floor() -> Result<()> {
        let dist = MaskDistribution {
            patterns: vec!["ischemic".into(), "midwall".into()],
            burden: [0.1, 0.2],
            mvo_probability: 0.5,
            transmurality: Some([0.2, 0.6]),
            ..MaskDistribution::default()
        };
        let patterns = dist.validate()?;
        let mut rng = Rng::new(7);
        let (mut ischemic, mut midwall, mut mvo) = (0, 0, 0);
        for _ in 0..400 {
            let p = dist.draw(&patterns, &mut rng, &SmileParams::default())?;
            p.validate()?;
            let b = p
                .burden
                .ok_or_else(|| Error::Internal("no burden".into()))?;
            assert!((0.1..=0.2).contains(&b), "{b}");
            match p.pattern {
                Pattern::Ischemic => {
                    ischemic += 1;
                    let t = p.transmurality.unwrap_or(-1.0);
                    assert!((0.2..=0.6).contains(&t), "{t}");
                    if p.mvo {
                        mvo += 1;
                        assert!(t >= MVO_MIN_TRANSMURALITY, "{t}");
                    }
                }
                _ => {
                    midwall += 1;
                    assert!(!p.mvo && p.transmurality.is_none());
                    assert_eq!(p.territory, Territory::Any);
                }
            }
        }
        assert!(
            ischemic > 150 && midwall > 150 && mvo > 50,
            "{ischemic} {midwall} {mvo}"
        );
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |d: MaskDistribution| d.validate().unwrap_err().to_string();
        let base = MaskDistribution::default();
        assert!(bad(MaskDistribution {
            patterns: vec![],
            ..base.clone()
        })
        .contains("patterns"));
        assert!(bad(MaskDistribution {
            burden: [0.3, 0.1],
            ..base.clone()
        })
        .contains("burden"));
        assert!(bad(MaskDistribution {
            mvo_probability: 2.0,
            ..base.clone()
        })
        .contains("MVO"));
        assert!(bad(MaskDistribution {
            transmurality: Some([0.5, 1.5]),
            ..base.clone()
        })
        .contains("transmurality"));
        assert!(bad(MaskDistribution {
            territory: "xyz".into(),
            ..base
        })
        .contains("xyz"));
        let json = r#"{"patterns": ["ischemic"], "burdn": [0.1, 0.2]}"#;
        let err = serde_json::from_str::<MaskDistribution>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("burdn"), "{err}");
    }
}

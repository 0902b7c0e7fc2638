//! The denoiser's condition: a lesion intensity histogram (spec:
//! "Intensity and geometry preprocessing"), from CLAIM's built-in EMIDEC
//! cluster centre, from the user, or measured from an image.

use crate::rng::Rng;
use crate::{Error, Result};

/// Bins of one histogram (CLAIM: 16; LeFusion-EMIDEC concatenates two).
pub const HISTOGRAM_BINS: usize = 16;

/// CLAIM's EMIDEC k-means cluster centre (the inference condition upstream).
pub const CLAIM_EMIDEC_CENTRE: [f32; HISTOGRAM_BINS] = [
    6.2657e-05, 6.4674e-05, 9.8002e-04, 3.9117e-03, 1.4532e-02, 4.2430e-02, 9.2390e-02, 1.3601e-01,
    1.6127e-01, 1.4382e-01, 1.0534e-01, 6.3749e-02, 3.6758e-02, 1.8341e-02, 5.7062e-03, 1.6989e-03,
];

/// The upstream perturbation: at most 10 % of each bin's magnitude.
pub const PERTURBATION: f32 = 0.1;

/// Where the histogram condition comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// CLAIM's EMIDEC cluster centre ([`CLAIM_EMIDEC_CENTRE`]); needs a
    /// model with a 16-value condition.
    ClaimEmidec,
    /// Explicit values, one per condition entry of the model (16 or 32).
    Values(Vec<f32>),
    /// The learned null condition (the unconditional branch; also what an
    /// unconditional model uses).
    Null,
}

impl Condition {
    /// The base values for a model with `cond_dim` entries (`None` for an
    /// unconditional model), or `None` for the null condition.
    pub fn base(&self, cond_dim: Option<usize>) -> Result<Option<Vec<f32>>> {
        let values = match self {
            Condition::Null => return Ok(None),
            Condition::ClaimEmidec => CLAIM_EMIDEC_CENTRE.to_vec(),
            Condition::Values(v) => v.clone(),
        };
        let Some(n) = cond_dim else {
            return Err(Error::invalid(
                "histogram condition given, but the model is unconditional",
            ));
        };
        if values.len() != n {
            return Err(Error::invalid(format!(
                "histogram condition has {} values, the model expects {n}",
                values.len()
            )));
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "histogram condition values must be finite, got {v}"
            )));
        }
        Ok(Some(values))
    }
}

impl std::str::FromStr for Condition {
    type Err = Error;

    /// Parses a command-line histogram: `preset` (CLAIM's EMIDEC centre),
    /// `null` (the learned null condition) or comma-separated values
    /// (`0.01,0.02,…`, 16 or 32 of them to match the model).
    fn from_str(text: &str) -> Result<Condition> {
        match text.trim() {
            "preset" | "claim" | "emidec" => Ok(Condition::ClaimEmidec),
            "null" | "none" => Ok(Condition::Null),
            list => {
                let values = list
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| {
                                Error::invalid(format!(
                                "histogram: expected `preset`, `null` or comma-separated numbers, \
                                 got `{}` in `{text}`",
                                v.trim()
                            ))
                            })
                    })
                    .collect::<Result<Vec<f32>>>()?;
                Ok(Condition::Values(values))
            }
        }
    }
}

/// Perturbs a histogram as upstream inference does: draw N(0,1) per bin,
/// subtract the mean, scale so the largest |value| is `fraction` of the
/// bin's |centre| (`p / max|p| · |c| · fraction`), add.
pub fn perturb(centre: &[f32], fraction: f32, rng: &mut Rng) -> Vec<f32> {
    let draws: Vec<f64> = centre.iter().map(|_| rng.normal()).collect();
    let mean = draws.iter().sum::<f64>() / draws.len().max(1) as f64;
    let centred: Vec<f64> = draws.iter().map(|d| d - mean).collect();
    let peak = centred.iter().fold(0f64, |m, v| m.max(v.abs()));
    centre
        .iter()
        .zip(&centred)
        .map(|(c, p)| {
            let scaled = if peak > 0.0 { p / peak } else { 0.0 };
            c + (scaled as f32) * c.abs() * fraction
        })
        .collect()
}

/// Normalised 16-bin histogram over [−1, 1] of `values` (already scaled
/// to [−1, 1]) where `inside` is true: counts / voxel count, all zeros when
/// nothing is inside. Bins follow `torch.histc`: the top edge belongs to
/// the last bin, values outside [−1, 1] are not counted.
pub fn lesion_histogram(values: &[f32], inside: &[bool]) -> Vec<f32> {
    let mut counts = [0u64; HISTOGRAM_BINS];
    let mut total = 0u64;
    for (v, _) in values.iter().zip(inside).filter(|(_, i)| **i) {
        total += 1;
        if let Some(bin) = bin_of(*v) {
            counts[bin] += 1;
        }
    }
    counts
        .iter()
        .map(|c| {
            if total == 0 {
                0.0
            } else {
                *c as f32 / total as f32
            }
        })
        .collect()
}

fn bin_of(v: f32) -> Option<usize> {
    if !(-1.0..=1.0).contains(&v) {
        return None;
    }
    let b = ((v + 1.0) / 2.0 * HISTOGRAM_BINS as f32) as usize;
    Some(b.min(HISTOGRAM_BINS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbation_is_bounded_and_zero_mean_shaped() {
        let mut rng = Rng::new(3);
        let p = perturb(&CLAIM_EMIDEC_CENTRE, PERTURBATION, &mut rng);
        let mut hit = false;
        for (c, v) in CLAIM_EMIDEC_CENTRE.iter().zip(&p) {
            let d = (v - c).abs();
            assert!(d <= c.abs() * 0.1 + 1e-9, "{c} → {v}");
            hit |= (d - c.abs() * 0.1).abs() < 1e-7 * c.abs().max(1e-3);
        }
        assert!(hit, "one bin moves by the full 10 %");
        assert_ne!(p, CLAIM_EMIDEC_CENTRE.to_vec());
        assert_eq!(
            p,
            perturb(&CLAIM_EMIDEC_CENTRE, PERTURBATION, &mut Rng::new(3))
        );
    }

    #[test]
    fn histogram_bins_like_histc() {
        let v = [-1.0, -0.9, 0.0, 0.99, 1.0, 2.0, 0.5];
        let inside = [true, true, true, true, true, true, false];
        let h = lesion_histogram(&v, &inside);
        assert_eq!(h[0], 2.0 / 6.0);
        assert_eq!(h[8], 1.0 / 6.0);
        assert_eq!(h[15], 2.0 / 6.0);
        assert!((h.iter().sum::<f32>() - 5.0 / 6.0).abs() < 1e-6);
        assert!(lesion_histogram(&v, &[false; 7]).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn base_checks_lengths() {
        assert_eq!(
            Condition::ClaimEmidec
                .base(Some(16))
                .unwrap()
                .unwrap()
                .len(),
            16
        );
        assert!(Condition::ClaimEmidec.base(Some(32)).is_err());
        assert!(Condition::ClaimEmidec.base(None).is_err());
        assert!(Condition::Values(vec![f32::NAN; 16])
            .base(Some(16))
            .is_err());
        assert_eq!(Condition::Null.base(None).unwrap(), None);
    }

    #[test]
    fn parses_command_line_histograms() {
        assert_eq!(
            "preset".parse::<Condition>().unwrap(),
            Condition::ClaimEmidec
        );
        assert_eq!("null".parse::<Condition>().unwrap(), Condition::Null);
        assert_eq!(
            "0.5, 0.25,0.25".parse::<Condition>().unwrap(),
            Condition::Values(vec![0.5, 0.25, 0.25])
        );
        let e = "0.5,x".parse::<Condition>().unwrap_err().to_string();
        assert!(e.contains("`x`"), "{e}");
        assert!("0.5,inf".parse::<Condition>().is_err());
    }
}

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

/// LeFusion's EMIDEC k-means cluster centres (upstream's
/// `hist_clusters/emidec_clusters.json`, `centers[0]` and `centers[1]`):
/// the inference condition of its two-channel model, channel 0 (scar,
/// label 3) and channel 1 (MVO, label 4). Bins that are zero stay zero
/// under the perturbation (it scales with |centre|).
pub const LEFUSION_EMIDEC_SCAR_CENTRE: [f32; HISTOGRAM_BINS] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0060314, 0.29192, 0.65561, 0.045838,
    0.00060314, 0.0,
];

/// LeFusion's EMIDEC MVO cluster centre (see
/// [`LEFUSION_EMIDEC_SCAR_CENTRE`]).
pub const LEFUSION_EMIDEC_MVO_CENTRE: [f32; HISTOGRAM_BINS] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0667, 0.9333, 0.0, 0.0, 0.0, 0.0,
];

/// What a channel paints: the scar or the MVO label of the label scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelTissue {
    /// The scheme's scar label (EMIDEC 3).
    Scar,
    /// The scheme's MVO label (EMIDEC 4).
    Mvo,
}

/// The built-in histogram of one channel: CLAIM's EMIDEC centre for a
/// one-channel model, LeFusion's EMIDEC scar or MVO centre for a
/// multi-channel one.
pub fn preset_histogram(tissue: ChannelTissue, channels: usize) -> [f32; HISTOGRAM_BINS] {
    match (tissue, channels) {
        (ChannelTissue::Scar, 1) => CLAIM_EMIDEC_CENTRE,
        (ChannelTissue::Scar, _) => LEFUSION_EMIDEC_SCAR_CENTRE,
        (ChannelTissue::Mvo, _) => LEFUSION_EMIDEC_MVO_CENTRE,
    }
}

/// The histogram of one channel in [`Condition::Channels`].
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelHistogram {
    /// The built-in centre for the tissue this channel paints
    /// ([`preset_histogram`]).
    Preset,
    /// [`HISTOGRAM_BINS`] explicit values (e.g. measured from a reference
    /// case with [`super::measure_channel_histograms`]).
    Values(Vec<f32>),
}

/// Where the histogram condition comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// The built-in centres of the model's layout, one per channel
    /// ([`preset_histogram`]): CLAIM's EMIDEC centre for a one-channel
    /// model, LeFusion's EMIDEC scar and MVO centres for a two-channel one.
    /// Needs a model with 16 condition values per channel.
    Preset,
    /// One histogram per channel, in channel order (16 values each).
    Channels(Vec<ChannelHistogram>),
    /// Explicit values, the model's whole condition (16 per channel,
    /// channel 0 first: 16 for CLAIM, 32 for LeFusion-EMIDEC).
    Values(Vec<f32>),
    /// The learned null condition (the unconditional branch; also what an
    /// unconditional model uses).
    Null,
}

impl Condition {
    /// The base values for a model with `cond_dim` entries (`None` for an
    /// unconditional model) whose channels paint `tissues` (one per
    /// channel), or `None` for the null condition.
    pub fn base(
        &self,
        cond_dim: Option<usize>,
        tissues: &[ChannelTissue],
    ) -> Result<Option<Vec<f32>>> {
        let channels = tissues.len().max(1);
        let per_channel = |what: &str| -> Result<()> {
            match cond_dim {
                Some(n) if n == HISTOGRAM_BINS * channels => Ok(()),
                Some(n) => Err(Error::invalid(format!(
                    "{what}: the model's condition has {n} values, not {HISTOGRAM_BINS} per \
                     channel for its {channels} channel(s); pass all {n} values explicitly"
                ))),
                None => Ok(()),
            }
        };
        let values = match self {
            Condition::Null => return Ok(None),
            Condition::Preset => {
                per_channel("preset histograms")?;
                tissues
                    .iter()
                    .flat_map(|t| preset_histogram(*t, channels))
                    .collect()
            }
            Condition::Channels(list) => {
                per_channel("per-channel histograms")?;
                if list.len() != channels {
                    return Err(Error::invalid(format!(
                        "{} histogram(s) given, the model has {channels} channel(s): give one \
                         histogram per channel",
                        list.len()
                    )));
                }
                let mut all = Vec::with_capacity(HISTOGRAM_BINS * channels);
                for (c, (h, t)) in list.iter().zip(tissues).enumerate() {
                    match h {
                        ChannelHistogram::Preset => all.extend(preset_histogram(*t, channels)),
                        ChannelHistogram::Values(v) if v.len() == HISTOGRAM_BINS => {
                            all.extend_from_slice(v)
                        }
                        ChannelHistogram::Values(v) => {
                            return Err(Error::invalid(format!(
                                "histogram of channel {c} has {} values, expected \
                                 {HISTOGRAM_BINS}",
                                v.len()
                            )))
                        }
                    }
                }
                all
            }
            Condition::Values(v) => v.clone(),
        };
        let Some(n) = cond_dim else {
            return Err(Error::invalid(
                "histogram condition given, but the model is unconditional",
            ));
        };
        if values.len() != n {
            return Err(Error::invalid(format!(
                "histogram condition has {} values, the model expects {n} ({} channel(s){})",
                values.len(),
                channels,
                if n == HISTOGRAM_BINS * channels {
                    format!(", {HISTOGRAM_BINS} per channel")
                } else {
                    String::new()
                }
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

/// One channel's histogram on the command line: `preset` or
/// comma-separated values.
impl std::str::FromStr for ChannelHistogram {
    type Err = Error;

    fn from_str(text: &str) -> Result<ChannelHistogram> {
        match text.trim() {
            "preset" | "claim" | "emidec" => Ok(ChannelHistogram::Preset),
            list => Ok(ChannelHistogram::Values(parse_values(list, text)?)),
        }
    }
}

fn parse_values(list: &str, text: &str) -> Result<Vec<f32>> {
    list.split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "histogram: expected `preset`, `null` or comma-separated numbers, got \
                         `{}` in `{text}`",
                        v.trim()
                    ))
                })
        })
        .collect()
}

impl std::str::FromStr for Condition {
    type Err = Error;

    /// Parses a command-line histogram: `preset` (the layout's built-in
    /// centres), `null` (the learned null condition) or comma-separated
    /// values (`0.01,0.02,…`, the model's whole condition).
    fn from_str(text: &str) -> Result<Condition> {
        match text.trim() {
            "preset" | "claim" | "emidec" => Ok(Condition::Preset),
            "null" | "none" => Ok(Condition::Null),
            list => Ok(Condition::Values(parse_values(list, text)?)),
        }
    }
}

/// The condition perturbed as upstream inference does: each channel's
/// histogram on its own ([`perturb`], one draw of `rng` after the other),
/// or the whole vector when it is not [`HISTOGRAM_BINS`] per channel.
pub fn perturb_channels(base: &[f32], channels: usize, fraction: f32, rng: &mut Rng) -> Vec<f32> {
    if channels > 1 && base.len() == HISTOGRAM_BINS * channels {
        base.chunks(HISTOGRAM_BINS)
            .flat_map(|h| perturb(h, fraction, rng))
            .collect()
    } else {
        perturb(base, fraction, rng)
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

    const ONE: [ChannelTissue; 1] = [ChannelTissue::Scar];
    const TWO: [ChannelTissue; 2] = [ChannelTissue::Scar, ChannelTissue::Mvo];

    #[test]
    fn per_channel_perturbation_matches_one_channel_draws() {
        let base = [CLAIM_EMIDEC_CENTRE, CLAIM_EMIDEC_CENTRE].concat();
        let mut rng = Rng::new(5);
        let both = perturb_channels(&base, 2, PERTURBATION, &mut rng);
        let mut rng = Rng::new(5);
        let first = perturb(&CLAIM_EMIDEC_CENTRE, PERTURBATION, &mut rng);
        let second = perturb(&CLAIM_EMIDEC_CENTRE, PERTURBATION, &mut rng);
        assert_eq!(both, [first.clone(), second].concat());
        assert_eq!(
            perturb_channels(&CLAIM_EMIDEC_CENTRE, 1, PERTURBATION, &mut Rng::new(5)),
            first
        );
        // Zero bins stay zero.
        let p = perturb(&LEFUSION_EMIDEC_MVO_CENTRE, PERTURBATION, &mut Rng::new(1));
        assert_eq!(p[0], 0.0);
        assert_ne!(p[10], LEFUSION_EMIDEC_MVO_CENTRE[10]);
    }

    #[test]
    fn base_checks_lengths() {
        assert_eq!(
            Condition::Preset.base(Some(16), &ONE).unwrap().unwrap(),
            CLAIM_EMIDEC_CENTRE.to_vec()
        );
        let e = Condition::Preset
            .base(Some(32), &ONE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not 16 per channel"), "{e}");
        assert!(Condition::Preset.base(None, &ONE).is_err());
        assert!(Condition::Values(vec![f32::NAN; 16])
            .base(Some(16), &ONE)
            .is_err());
        assert_eq!(Condition::Null.base(None, &ONE).unwrap(), None);
        let two = Condition::Preset.base(Some(32), &TWO).unwrap().unwrap();
        assert_eq!(&two[..16], &LEFUSION_EMIDEC_SCAR_CENTRE);
        assert_eq!(&two[16..], &LEFUSION_EMIDEC_MVO_CENTRE);
        let mixed = Condition::Channels(vec![
            ChannelHistogram::Values(vec![0.5; 16]),
            ChannelHistogram::Preset,
        ])
        .base(Some(32), &TWO)
        .unwrap()
        .unwrap();
        assert_eq!(&mixed[..16], &[0.5; 16]);
        assert_eq!(&mixed[16..], &LEFUSION_EMIDEC_MVO_CENTRE);
        let e = Condition::Channels(vec![ChannelHistogram::Preset])
            .base(Some(32), &TWO)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 histogram(s) given, the model has 2"), "{e}");
        let e = Condition::Channels(vec![
            ChannelHistogram::Values(vec![0.5; 15]),
            ChannelHistogram::Preset,
        ])
        .base(Some(32), &TWO)
        .unwrap_err()
        .to_string();
        assert!(e.contains("channel 0 has 15 values, expected 16"), "{e}");
        let e = Condition::Values(vec![0.1; 16])
            .base(Some(32), &TWO)
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 values, the model expects 32"), "{e}");
    }

    #[test]
    fn parses_command_line_histograms() {
        assert_eq!("preset".parse::<Condition>().unwrap(), Condition::Preset);
        assert_eq!(
            "preset".parse::<ChannelHistogram>().unwrap(),
            ChannelHistogram::Preset
        );
        assert_eq!(
            "0.5,0.5".parse::<ChannelHistogram>().unwrap(),
            ChannelHistogram::Values(vec![0.5, 0.5])
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

//! Intensity normalisation of one input channel, as nnU-Net's
//! `default_normalization_schemes` (`shared/reference/segmentation.md`,
//! "Prediction", step 3).
//!
//! Statistics are taken over the whole cropped **3-D case** (also for 2-D
//! configurations), in f64; the arithmetic on voxels is f32 in nnU-Net's
//! order (subtract, then divide), so values agree with numpy's to the last
//! bit or two.

use super::plans::{IntensityProperties, NormalizationScheme};
use crate::{Error, Result};

/// Smallest divisor used for a standard deviation or range (nnU-Net's eps).
const EPS: f32 = 1e-8;

/// Normalises `values` in place by `scheme`.
///
/// `mask` (same length) is the case's non-zero mask, required when
/// `use_mask` is set: ZScore statistics are then taken over it and only its
/// voxels change. `properties` are the dataset's foreground statistics of
/// this channel, required by CT normalisation.
pub fn normalize_channel(
    values: &mut [f32],
    scheme: NormalizationScheme,
    use_mask: bool,
    mask: Option<&[bool]>,
    properties: Option<&IntensityProperties>,
) -> Result<()> {
    match scheme {
        NormalizationScheme::ZScore => {
            let mask = if use_mask {
                let m = mask.ok_or_else(|| {
                    Error::Internal("ZScore with use_mask_for_norm needs the non-zero mask".into())
                })?;
                if m.len() != values.len() {
                    return Err(Error::Internal(format!(
                        "normalisation mask has {} voxels for {} values",
                        m.len(),
                        values.len()
                    )));
                }
                Some(m)
            } else {
                None
            };
            let selected = |i: usize| mask.is_none_or(|m| m[i]);
            let (mut n, mut sum) = (0usize, 0f64);
            for (i, &v) in values.iter().enumerate() {
                if selected(i) {
                    n += 1;
                    sum += f64::from(v);
                }
            }
            if n == 0 {
                // numpy's mean of nothing is NaN; every voxel becomes NaN
                // inside an empty mask, i.e. none changes.
                return Ok(());
            }
            let mean = sum / n as f64;
            let var = values
                .iter()
                .enumerate()
                .filter(|(i, _)| selected(*i))
                .map(|(_, &v)| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let (mean, std) = (mean as f32, (var.sqrt() as f32).max(EPS));
            for (i, v) in values.iter_mut().enumerate() {
                if selected(i) {
                    *v = (*v - mean) / std;
                }
            }
        }
        NormalizationScheme::Ct => {
            let p = properties.ok_or_else(|| {
                Error::format(
                    "CTNormalization needs foreground_intensity_properties_per_channel in the plans",
                )
            })?;
            let (lo, hi) = (p.percentile_00_5 as f32, p.percentile_99_5 as f32);
            let (mean, std) = (p.mean as f32, (p.std as f32).max(EPS));
            for v in values.iter_mut() {
                *v = (v.max(lo).min(hi) - mean) / std;
            }
        }
        NormalizationScheme::None => {}
        NormalizationScheme::RescaleTo01 => {
            let min = values.iter().copied().fold(f32::INFINITY, f32::min);
            for v in values.iter_mut() {
                *v -= min;
            }
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let range = max.max(EPS);
            for v in values.iter_mut() {
                *v /= range;
            }
        }
        NormalizationScheme::RgbTo01 => {
            if let Some(bad) = values.iter().find(|v| !(0.0..=255.0).contains(*v)) {
                return Err(Error::invalid(format!(
                    "RGBTo01Normalization expects values in 0..=255, found {bad}"
                )));
            }
            for v in values.iter_mut() {
                *v /= 255.0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_over_all_or_masked_voxels() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        normalize_channel(&mut v, NormalizationScheme::ZScore, false, None, None).unwrap();
        // mean 2.5, population std sqrt(1.25)
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        assert!(
            v.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{v:?}"
        );

        let mut v = vec![0.0, 2.0, 4.0, 0.0];
        let mask = [false, true, true, false];
        normalize_channel(&mut v, NormalizationScheme::ZScore, true, Some(&mask), None).unwrap();
        assert_eq!(v, vec![0.0, -1.0, 1.0, 0.0]);

        // A constant image divides by eps, not by zero.
        let mut v = vec![5.0; 3];
        normalize_channel(&mut v, NormalizationScheme::ZScore, false, None, None).unwrap();
        assert_eq!(v, vec![0.0; 3]);
    }

    #[test]
    fn ct_rescale_and_rgb() {
        let props = IntensityProperties {
            mean: 100.0,
            std: 50.0,
            percentile_00_5: 0.0,
            percentile_99_5: 300.0,
        };
        let mut v = vec![-1000.0, 100.0, 200.0, 2000.0];
        normalize_channel(&mut v, NormalizationScheme::Ct, false, None, Some(&props)).unwrap();
        assert_eq!(v, vec![-2.0, 0.0, 2.0, 4.0]);
        assert!(normalize_channel(&mut v, NormalizationScheme::Ct, false, None, None).is_err());

        let mut v = vec![-2.0, 0.0, 6.0];
        normalize_channel(&mut v, NormalizationScheme::RescaleTo01, false, None, None).unwrap();
        assert_eq!(v, vec![0.0, 0.25, 1.0]);

        let mut v = vec![0.0, 51.0, 255.0];
        normalize_channel(&mut v, NormalizationScheme::RgbTo01, false, None, None).unwrap();
        assert_eq!(v, vec![0.0, 0.2, 1.0]);
        let mut v = vec![300.0];
        assert!(
            normalize_channel(&mut v, NormalizationScheme::RgbTo01, false, None, None).is_err()
        );
        let mut v = vec![3.5];
        normalize_channel(&mut v, NormalizationScheme::None, false, None, None).unwrap();
        assert_eq!(v, vec![3.5]);
    }
}

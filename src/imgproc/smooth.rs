//! Separable Gaussian smoothing.

use super::{checked_spacing, for_each_line};
use crate::error::{Error, Result};
use crate::volume::Volume;

/// Kernels reach 4 σ on each side, as scipy's `gaussian_filter` (truncate = 4).
const TRUNCATE_SIGMAS: f64 = 4.0;

/// Gaussian smoothing with an isotropic σ in millimetres: σ in voxels per
/// axis is `sigma_mm / spacing`, so thick slices get a narrow kernel across
/// slices. See [`gaussian_smooth_voxels`] for the boundary rule.
pub fn gaussian_smooth_mm(volume: &Volume<f32>, sigma_mm: f64) -> Result<Volume<f32>> {
    let spacing = checked_spacing(volume.geometry.spacing, "gaussian smoothing")?;
    if !sigma_mm.is_finite() || sigma_mm < 0.0 {
        return Err(Error::invalid(format!(
            "gaussian smoothing: sigma must be finite and ≥ 0 mm, got {sigma_mm}"
        )));
    }
    gaussian_smooth_voxels(volume, spacing.map(|s| sigma_mm / s))
}

/// Gaussian smoothing with σ given in voxels per axis (0 = that axis is left
/// alone). Samples beyond the border repeat the edge voxel (scipy's
/// `mode="nearest"`), so a constant volume stays constant.
pub fn gaussian_smooth_voxels(volume: &Volume<f32>, sigma_voxels: [f64; 3]) -> Result<Volume<f32>> {
    for (axis, s) in sigma_voxels.iter().enumerate() {
        if !s.is_finite() || *s < 0.0 {
            return Err(Error::invalid(format!(
                "gaussian smoothing: sigma[{axis}] must be finite and ≥ 0 voxels, got {s}"
            )));
        }
    }
    let dims = volume.dims();
    let mut field: Vec<f32> = volume.as_slice()?.to_vec();
    let longest = dims.iter().copied().max().unwrap_or(1);
    let mut line = vec![0.0f32; longest];
    for axis in 0..3 {
        let sigma = sigma_voxels[axis];
        if sigma == 0.0 || dims[axis] == 1 {
            continue;
        }
        let kernel = gaussian_kernel(sigma);
        let r = (kernel.len() / 2) as isize;
        for_each_line(dims, axis, |start, stride, len| {
            for (q, slot) in line[..len].iter_mut().enumerate() {
                *slot = field[start + q * stride];
            }
            let last = len as isize - 1;
            for q in 0..len {
                let mut acc = 0.0f32;
                for (t, w) in kernel.iter().enumerate() {
                    let src = (q as isize + t as isize - r).clamp(0, last) as usize;
                    acc += w * line[src];
                }
                field[start + q * stride] = acc;
            }
        });
    }
    Volume::from_vec(dims, field, volume.geometry)
}

/// Normalised Gaussian taps over ±ceil(4σ) samples.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (TRUNCATE_SIGMAS * sigma).ceil().max(1.0) as isize;
    let taps: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter().map(|t| (t / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn impulse_response_is_a_normalised_gaussian_in_mm() {
        let dims = [21, 21, 7];
        let mut v = Volume::<f32>::zeros(dims, Geometry::with_spacing([1.0, 2.0, 10.0]));
        v.data[[3, 10, 10]] = 1.0;
        let s = gaussian_smooth_mm(&v, 2.0).unwrap();
        let total: f32 = s.data.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "mass preserved: {total}");
        // σ = 2 voxels along i, 1 voxel along j; 0.2 voxels along k (thick slices).
        let c = *s.at(10, 10, 3);
        let along_i = *s.at(12, 10, 3) / c; // 2 voxels = 1 σ
        let along_j = *s.at(10, 11, 3) / c; // 1 voxel = 1 σ
        let expected = (-0.5f32).exp();
        assert!((along_i - expected).abs() < 1e-3, "{along_i}");
        assert!((along_j - expected).abs() < 1e-3, "{along_j}");
        assert!(
            *s.at(10, 10, 4) < 1e-5 * c,
            "almost nothing leaks across 10 mm slices"
        );
        // Second moment along i equals σ² (in voxels²) = 4.
        let var_i: f32 = (0..21)
            .map(|i| {
                let m: f32 = (0..21)
                    .flat_map(|j| (0..7).map(move |k| (j, k)))
                    .map(|(j, k)| *s.at(i, j, k))
                    .sum();
                m * (i as f32 - 10.0).powi(2)
            })
            .sum();
        assert!((var_i - 4.0).abs() < 0.01, "{var_i}");
    }

    #[test]
    fn constant_stays_constant_and_bad_sigma_fails() {
        let v = Volume::from_vec([5, 4, 3], vec![2.5f32; 60], Geometry::default()).unwrap();
        let s = gaussian_smooth_voxels(&v, [1.0, 1.5, 0.7]).unwrap();
        assert!(s.data.iter().all(|x| (x - 2.5).abs() < 1e-5));
        assert!(gaussian_smooth_mm(&v, f64::NAN).is_err());
        assert!(gaussian_smooth_voxels(&v, [-1.0, 0.0, 0.0]).is_err());
    }
}

//! nnU-Net's default training augmentations for 2-D patches, and the patch
//! sampler with foreground oversampling.
//!
//! The probabilities and ranges are nnU-Net v2's defaults
//! (`nnUNetTrainer.get_training_transforms`):
//!
//! | transform | probability | range |
//! |---|---|---|
//! | rotation (2-D: in-plane) | 0.2 | ±180° |
//! | scaling (both axes alike) | 0.2 | 0.7–1.4 |
//! | Gaussian noise | 0.1 | variance 0–0.1 |
//! | Gaussian blur | 0.2 (then 0.5 per channel) | σ 0.5–1, drawn per axis |
//! | multiplicative brightness | 0.15 | 0.75–1.25 |
//! | contrast (range kept) | 0.15 | 0.75–1.25 |
//! | simulated low resolution | 0.25 (then 0.5 per channel) | zoom 0.5–1 |
//! | gamma on the inverted image (stats kept) | 0.1 | 0.7–1.5 |
//! | gamma (stats kept) | 0.3 | 0.7–1.5 |
//! | mirroring | 0.5 per axis | |
//!
//! Multipliers in `[a, b]` around 1 are drawn as nnU-Net's `BGContrast`
//! does: half the time below 1 (uniform in `[a, 1)`), half above. The
//! rotation and scaling are applied while the patch is cut from the slice
//! (bilinear for the image, nearest for the labels, zeros outside), so no
//! larger intermediate patch is needed. The low-resolution simulation
//! downsamples with nearest neighbours and upsamples bilinearly (nnU-Net
//! uses the same pair of orders in spirit; the exact resampling kernels
//! differ). Each patch's draws come from the caller's generator, so a
//! seeded run repeats exactly.

use crate::rng::Rng;
use crate::{Error, Result};

/// A training patch: one image channel and its class map, `depth` planes
/// of `height`×`width` (depth 1 for 2-D).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    /// Planes.
    pub depth: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Normalised intensities, plane by plane, row-major.
    pub image: Vec<f32>,
    /// Classes (0 background), same layout.
    pub labels: Vec<u8>,
}

/// Probabilities and ranges of [`augment_intensities`] and the spatial
/// draws of [`sample_patch`] (defaults: nnU-Net's, see the module table).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentParams {
    /// Probability of a rotation.
    pub p_rotation: f64,
    /// Largest rotation angle either way, radians.
    pub max_rotation: f64,
    /// Probability of a scaling.
    pub p_scaling: f64,
    /// Scaling range (zoom factor).
    pub scaling: (f64, f64),
    /// Probability of Gaussian noise.
    pub p_noise: f64,
    /// Range of the noise variance.
    pub noise_variance: (f64, f64),
    /// Probability of a blur.
    pub p_blur: f64,
    /// Range of the blur σ (pixels).
    pub blur_sigma: (f64, f64),
    /// Probability of a brightness multiplier.
    pub p_brightness: f64,
    /// Its range.
    pub brightness: (f64, f64),
    /// Probability of a contrast change.
    pub p_contrast: f64,
    /// Its range.
    pub contrast: (f64, f64),
    /// Probability of the low-resolution simulation.
    pub p_low_resolution: f64,
    /// Range of its zoom.
    pub low_resolution: (f64, f64),
    /// Probability of gamma on the inverted image.
    pub p_gamma_inverted: f64,
    /// Probability of gamma.
    pub p_gamma: f64,
    /// Gamma range.
    pub gamma: (f64, f64),
    /// Mirror along rows / columns (each with probability ½).
    pub mirror: (bool, bool),
    /// Mirror a 3-D patch along its planes (probability ½).
    #[serde(default)]
    pub mirror_planes: bool,
}

impl Default for AugmentParams {
    fn default() -> Self {
        AugmentParams {
            p_rotation: 0.2,
            max_rotation: std::f64::consts::PI,
            p_scaling: 0.2,
            scaling: (0.7, 1.4),
            p_noise: 0.1,
            noise_variance: (0.0, 0.1),
            p_blur: 0.2,
            blur_sigma: (0.5, 1.0),
            p_brightness: 0.15,
            brightness: (0.75, 1.25),
            p_contrast: 0.15,
            contrast: (0.75, 1.25),
            p_low_resolution: 0.25,
            low_resolution: (0.5, 1.0),
            p_gamma_inverted: 0.1,
            p_gamma: 0.3,
            gamma: (0.7, 1.5),
            mirror: (true, true),
            mirror_planes: true,
        }
    }
}

impl AugmentParams {
    /// No augmentation at all (validation patches).
    pub fn none() -> AugmentParams {
        AugmentParams {
            p_rotation: 0.0,
            p_scaling: 0.0,
            p_noise: 0.0,
            p_blur: 0.0,
            p_brightness: 0.0,
            p_contrast: 0.0,
            p_low_resolution: 0.0,
            p_gamma_inverted: 0.0,
            p_gamma: 0.0,
            mirror: (false, false),
            mirror_planes: false,
            ..AugmentParams::default()
        }
    }
}

fn uniform(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.uniform()
}

/// nnU-Net's `BGContrast` draw: half the time in `[lo, 1)`, else `[1, hi]`
/// (only one side when the range does not straddle 1).
fn around_one(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    if rng.uniform() < 0.5 && lo < 1.0 {
        uniform(rng, (lo, 1.0))
    } else {
        uniform(rng, (lo.max(1.0), hi))
    }
}

/// Where a patch is centred: with `force_foreground`, on a voxel of a
/// class drawn uniformly among the foreground classes present (nnU-Net's
/// oversampling); otherwise anywhere the patch overlaps the slice.
pub fn choose_centre(
    labels: &[u8],
    height: usize,
    width: usize,
    force_foreground: bool,
    rng: &mut Rng,
) -> (f64, f64) {
    if force_foreground {
        let mut present: Vec<u8> = labels.iter().copied().filter(|&c| c > 0).collect();
        present.sort_unstable();
        present.dedup();
        if !present.is_empty() {
            let class = present[rng.below(present.len() as u64) as usize];
            let count = labels.iter().filter(|&&c| c == class).count();
            let pick = rng.below(count as u64) as usize;
            if let Some(i) = labels
                .iter()
                .enumerate()
                .filter(|(_, &c)| c == class)
                .nth(pick)
                .map(|(i, _)| i)
            {
                return ((i / width) as f64, (i % width) as f64);
            }
        }
    }
    (
        rng.uniform() * height.saturating_sub(1) as f64,
        rng.uniform() * width.saturating_sub(1) as f64,
    )
}

/// Cuts a `size` patch centred at `centre` from a slice (`image`,
/// `labels`, `height`×`width`), rotated and scaled about its centre by the
/// draws of `params` (none with [`AugmentParams::none`]).
#[allow(clippy::too_many_arguments)]
pub fn sample_patch(
    image: &[f32],
    labels: &[u8],
    height: usize,
    width: usize,
    centre: (f64, f64),
    size: (usize, usize),
    params: &AugmentParams,
    rng: &mut Rng,
) -> Result<Patch> {
    let (angle, zoom) = draw_rotation_and_zoom(params, rng);
    cut_patch(image, labels, (height, width), centre, size, angle, zoom)
}

/// The spatial augmentation's draws: an in-plane rotation (radians) and a
/// zoom, each applied with its probability (0 and 1 otherwise).
pub fn draw_rotation_and_zoom(params: &AugmentParams, rng: &mut Rng) -> (f64, f64) {
    let angle = if rng.uniform() < params.p_rotation {
        uniform(rng, (-params.max_rotation, params.max_rotation))
    } else {
        0.0
    };
    let zoom = if rng.uniform() < params.p_scaling {
        uniform(rng, params.scaling)
    } else {
        1.0
    };
    (angle, zoom)
}

/// [`sample_patch`] with a given rotation (radians) and zoom (> 1
/// magnifies).
pub fn cut_patch(
    image: &[f32],
    labels: &[u8],
    (height, width): (usize, usize),
    centre: (f64, f64),
    size: (usize, usize),
    angle: f64,
    zoom: f64,
) -> Result<Patch> {
    if image.len() != height * width || labels.len() != image.len() || height == 0 || width == 0 {
        return Err(Error::invalid(format!(
            "sample_patch: {} intensities and {} labels for a {height}×{width} slice",
            image.len(),
            labels.len()
        )));
    }
    if !(zoom.is_finite() && zoom > 0.0 && angle.is_finite()) {
        return Err(Error::invalid(format!(
            "sample_patch: zoom {zoom}, angle {angle}"
        )));
    }
    let (ph, pw) = size;
    let (cos, sin) = (angle.cos() / zoom, angle.sin() / zoom);
    let (oy, ox) = ((ph as f64 - 1.0) / 2.0, (pw as f64 - 1.0) / 2.0);
    let mut out = Patch {
        depth: 1,
        height: ph,
        width: pw,
        image: vec![0.0; ph * pw],
        labels: vec![0; ph * pw],
    };
    let at = |y: isize, x: isize| -> Option<usize> {
        (y >= 0 && x >= 0 && (y as usize) < height && (x as usize) < width)
            .then(|| y as usize * width + x as usize)
    };
    for r in 0..ph {
        for c in 0..pw {
            let (dy, dx) = (r as f64 - oy, c as f64 - ox);
            // A zoom > 1 magnifies: source steps are 1/zoom per output pixel.
            let y = centre.0 + cos * dy - sin * dx;
            let x = centre.1 + sin * dy + cos * dx;
            let (y0, x0) = (y.floor(), x.floor());
            let (fy, fx) = ((y - y0) as f32, (x - x0) as f32);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let value = |yy: isize, xx: isize| at(yy, xx).map_or(0.0, |i| image[i]);
            let top = value(y0, x0) * (1.0 - fx) + value(y0, x0 + 1) * fx;
            let bottom = value(y0 + 1, x0) * (1.0 - fx) + value(y0 + 1, x0 + 1) * fx;
            let o = r * pw + c;
            out.image[o] = top * (1.0 - fy) + bottom * fy;
            out.labels[o] = at(y.round() as isize, x.round() as isize).map_or(0, |i| labels[i]);
        }
    }
    Ok(out)
}

/// Separable Gaussian blur of a `h`×`w` plane, σ per axis (zero padding
/// outside, kernel ±3σ, normalised).
fn blur(plane: &mut [f32], h: usize, w: usize, sigma: (f64, f64)) {
    let kernel = |s: f64| -> Vec<f32> {
        let r = (3.0 * s).ceil() as isize;
        let k: Vec<f64> = (-r..=r)
            .map(|i| (-(i * i) as f64 / (2.0 * s * s)).exp())
            .collect();
        let sum: f64 = k.iter().sum();
        k.iter().map(|v| (v / sum) as f32).collect()
    };
    let pass = |src: &[f32], len: usize, lines: usize, stride: usize, step: usize, k: &[f32]| {
        let r = (k.len() / 2) as isize;
        let mut dst = vec![0f32; src.len()];
        for line in 0..lines {
            for i in 0..len as isize {
                let mut acc = 0f32;
                for (j, kv) in k.iter().enumerate() {
                    let p = i + j as isize - r;
                    if p >= 0 && (p as usize) < len {
                        acc += kv * src[line * stride + p as usize * step];
                    }
                }
                dst[line * stride + i as usize * step] = acc;
            }
        }
        dst
    };
    let rows = pass(plane, w, h, w, 1, &kernel(sigma.1));
    let cols = pass(&rows, h, w, 1, w, &kernel(sigma.0));
    plane.copy_from_slice(&cols);
}

/// Gamma with the mean and standard deviation kept (nnU-Net's
/// `GammaTransform` with `retain_stats`), optionally on the inverted image.
fn gamma(v: &mut [f32], g: f64, invert: bool) {
    let sign = if invert { -1.0 } else { 1.0 };
    v.iter_mut().for_each(|x| *x *= sign);
    let (mean, std) = moments(v);
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let range = f64::from(hi - lo);
    for x in v.iter_mut() {
        let t = (f64::from(*x - lo) / (range + 1e-7)).max(0.0);
        *x = (t.powf(g) * range + f64::from(lo)) as f32;
    }
    let (m2, s2) = moments(v);
    for x in v.iter_mut() {
        let z = (f64::from(*x) - m2) / (s2 + 1e-8);
        *x = (f64::from(sign) * (z * std + mean)) as f32;
    }
}

fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Applies the intensity augmentations and mirroring of `params` to
/// `patch`, in nnU-Net's order. Noise, brightness, contrast and gamma act
/// on the whole patch; blur and the low-resolution simulation act in-plane
/// on each plane (nnU-Net's treatment of anisotropic 3-D data); a 3-D
/// patch is also mirrored along its planes when `params.mirror_planes`.
pub fn augment_intensities(patch: &mut Patch, params: &AugmentParams, rng: &mut Rng) {
    let (h, w) = (patch.height, patch.width);
    let n = h * w;
    let img = &mut patch.image;
    if rng.uniform() < params.p_noise {
        let sd = uniform(rng, params.noise_variance).sqrt();
        img.iter_mut()
            .for_each(|x| *x += (rng.normal() * sd) as f32);
    }
    if rng.uniform() < params.p_blur && rng.uniform() < 0.5 {
        let sigma = (
            uniform(rng, params.blur_sigma),
            uniform(rng, params.blur_sigma),
        );
        for plane in img.chunks_exact_mut(n) {
            blur(plane, h, w, sigma);
        }
    }
    if rng.uniform() < params.p_brightness {
        let m = around_one(rng, params.brightness) as f32;
        img.iter_mut().for_each(|x| *x *= m);
    }
    if rng.uniform() < params.p_contrast {
        let f = around_one(rng, params.contrast);
        let (mean, _) = moments(img);
        let (lo, hi) = img
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        for x in img.iter_mut() {
            *x = (((f64::from(*x) - mean) * f + mean) as f32).clamp(lo, hi);
        }
    }
    if rng.uniform() < params.p_low_resolution && rng.uniform() < 0.5 {
        let zoom = uniform(rng, params.low_resolution);
        let (lh, lw) = (
            ((h as f64 * zoom).round() as usize).max(1),
            ((w as f64 * zoom).round() as usize).max(1),
        );
        for plane in img.chunks_exact_mut(n) {
            low_resolution(plane, h, w, lh, lw);
        }
    }
    if rng.uniform() < params.p_gamma_inverted {
        let g = around_one(rng, params.gamma);
        gamma(img, g, true);
    }
    if rng.uniform() < params.p_gamma {
        let g = around_one(rng, params.gamma);
        gamma(img, g, false);
    }
    if params.mirror.0 && rng.uniform() < 0.5 {
        for (plane, labels) in img
            .chunks_exact_mut(n)
            .zip(patch.labels.chunks_exact_mut(n))
        {
            for c in 0..w {
                for r in 0..h / 2 {
                    plane.swap(r * w + c, (h - 1 - r) * w + c);
                    labels.swap(r * w + c, (h - 1 - r) * w + c);
                }
            }
        }
    }
    if params.mirror.1 && rng.uniform() < 0.5 {
        for r in 0..h * patch.depth {
            img[r * w..(r + 1) * w].reverse();
            patch.labels[r * w..(r + 1) * w].reverse();
        }
    }
    if patch.depth > 1 && params.mirror_planes && rng.uniform() < 0.5 {
        let d = patch.depth;
        for z in 0..d / 2 {
            for i in 0..n {
                img.swap(z * n + i, (d - 1 - z) * n + i);
                patch.labels.swap(z * n + i, (d - 1 - z) * n + i);
            }
        }
    }
}

/// nnU-Net's simulated low resolution on one plane: down to `lh`×`lw` by
/// nearest neighbours, back up bilinearly.
fn low_resolution(img: &mut [f32], h: usize, w: usize, lh: usize, lw: usize) {
    let small: Vec<f32> = (0..lh * lw)
        .map(|i| {
            let (r, c) = (i / lw, i % lw);
            let (sr, sc) = ((r * h / lh).min(h - 1), (c * w / lw).min(w - 1));
            img[sr * w + sc]
        })
        .collect();
    for r in 0..h {
        for c in 0..w {
            let y = ((r as f64 + 0.5) * lh as f64 / h as f64 - 0.5).clamp(0.0, (lh - 1) as f64);
            let x = ((c as f64 + 0.5) * lw as f64 / w as f64 - 0.5).clamp(0.0, (lw - 1) as f64);
            let (y0, x0) = (y.floor() as usize, x.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(lh - 1), (x0 + 1).min(lw - 1));
            let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
            let top = small[y0 * lw + x0] * (1.0 - fx) + small[y0 * lw + x1] * fx;
            let bottom = small[y1 * lw + x0] * (1.0 - fx) + small[y1 * lw + x1] * fx;
            img[r * w + c] = top * (1.0 - fy) + bottom * fy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
        let image = (0..h * w)
            .map(|i| (i % w) as f32 + 100.0 * (i / w) as f32)
            .collect();
        let mut labels = vec![0u8; h * w];
        labels[3 * w + 4] = 2;
        labels[3 * w + 5] = 2;
        labels[7 * w + 1] = 1;
        (image, labels)
    }

    #[test]
    fn an_unaugmented_patch_is_the_plain_crop_and_pads_with_zeros() {
        let (image, labels) = slice(10, 12);
        let mut rng = Rng::new(1);
        let p = sample_patch(
            &image,
            &labels,
            10,
            12,
            (3.0, 4.5),
            (4, 4),
            &AugmentParams::none(),
            &mut rng,
        )
        .unwrap();
        // Rows 1.5..=4.5 and columns 3..=6 around (3, 4.5): integer rows
        // need (3 − 1.5) = 1.5 offsets, so the crop interpolates rows.
        assert_eq!(p.labels.len(), 16);
        let even = sample_patch(
            &image,
            &labels,
            10,
            12,
            (3.5, 4.5),
            (4, 4),
            &AugmentParams::none(),
            &mut rng,
        )
        .unwrap();
        let want: Vec<f32> = (2..6)
            .flat_map(|r| (3..7).map(move |c| (c + 100 * r) as f32))
            .collect();
        assert_eq!(even.image, want);
        assert_eq!(even.labels[4 + 1..4 + 3], [2, 2]);
        let edge = sample_patch(
            &image,
            &labels,
            10,
            12,
            (0.5, 0.5),
            (4, 4),
            &AugmentParams::none(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(edge.image[0], 0.0, "outside the slice is zero");
        assert!(sample_patch(
            &image,
            &labels[1..],
            10,
            12,
            (0.0, 0.0),
            (4, 4),
            &AugmentParams::none(),
            &mut rng
        )
        .is_err());
    }

    #[test]
    fn a_half_turn_reverses_the_patch_and_a_zoom_magnifies() {
        let (image, labels) = slice(10, 12);
        let cut = |angle: f64, zoom: f64| {
            cut_patch(&image, &labels, (10, 12), (4.5, 5.5), (4, 4), angle, zoom).unwrap()
        };
        let plain = cut(0.0, 1.0);
        let mut reversed = plain.clone();
        reversed.image.reverse();
        reversed.labels.reverse();
        let turned = cut(std::f64::consts::PI, 1.0);
        for (a, b) in turned.image.iter().zip(&reversed.image) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert_eq!(turned.labels, reversed.labels);
        // Zoom 2: neighbouring output pixels are half a source pixel apart.
        let zoomed = cut(0.0, 2.0);
        assert!((zoomed.image[1] - zoomed.image[0] - 0.5).abs() < 1e-4);
        assert!(cut_patch(&image, &labels, (10, 12), (0.0, 0.0), (4, 4), 0.0, 0.0).is_err());
    }

    #[test]
    fn foreground_oversampling_centres_on_a_labelled_voxel() {
        let (_, labels) = slice(10, 12);
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let (r, c) = choose_centre(&labels, 10, 12, true, &mut rng);
            assert!(labels[r as usize * 12 + c as usize] > 0);
        }
        let empty = vec![0u8; 120];
        let (r, c) = choose_centre(&empty, 10, 12, true, &mut rng);
        assert!((0.0..=9.0).contains(&r) && (0.0..=11.0).contains(&c));
    }

    #[test]
    fn intensity_augmentations_keep_labels_and_statistics_where_promised() {
        let (image, labels) = slice(16, 16);
        let base = sample_patch(
            &image,
            &labels,
            16,
            16,
            (7.5, 7.5),
            (16, 16),
            &AugmentParams::none(),
            &mut Rng::new(0),
        )
        .unwrap();
        // Gamma with retained stats keeps the mean and standard deviation.
        let mut v = base.image.clone();
        gamma(&mut v, 1.4, false);
        let (m0, s0) = moments(&base.image);
        let (m1, s1) = moments(&v);
        assert!((m0 - m1).abs() < 1e-3 * s0 && (s0 - s1).abs() < 1e-3 * s0);
        // Blur keeps a constant plane constant away from the border.
        let mut flat = vec![1f32; 64];
        blur(&mut flat, 8, 8, (0.7, 0.7));
        assert!((flat[27] - 1.0).abs() < 1e-5);
        // With every intensity transform forced, labels move only by mirroring.
        let params = AugmentParams {
            p_noise: 1.0,
            p_blur: 1.0,
            p_brightness: 1.0,
            p_contrast: 1.0,
            p_low_resolution: 1.0,
            p_gamma_inverted: 1.0,
            p_gamma: 1.0,
            mirror: (false, false),
            ..AugmentParams::default()
        };
        let mut p = base.clone();
        augment_intensities(&mut p, &params, &mut Rng::new(9));
        assert_eq!(p.labels, base.labels);
        assert!(p.image.iter().all(|x| x.is_finite()));
        assert_ne!(p.image, base.image);
        // Mirroring both axes twice is the identity; once reverses the plane.
        let mirror = AugmentParams {
            mirror: (true, true),
            ..AugmentParams::none()
        };
        let mut seen_full_flip = false;
        for seed in 0..40 {
            let mut q = base.clone();
            augment_intensities(&mut q, &mirror, &mut Rng::new(seed));
            let mut rev = base.image.clone();
            rev.reverse();
            if q.image == rev {
                let mut rl = base.labels.clone();
                rl.reverse();
                assert_eq!(q.labels, rl);
                seen_full_flip = true;
            }
        }
        assert!(seen_full_flip);
    }
}

//! LGE image formation: tissue contrast after the inversion pulse, a smooth
//! tissue texture, a little in-plane blur (partial volume), the receive
//! coil's low-frequency bias field and Rician magnitude noise.

use super::anatomy::{dot, Material};
use crate::rng::Rng;
use crate::volume::Geometry;
use std::f64::consts::PI;

/// Signal of full-scale tissue, like the integer range of a scanner's
/// magnitude images.
pub(crate) const FULL_SCALE: f64 = 1000.0;

/// In-plane Gaussian blur σ in pixels: edges spread over about one pixel,
/// as partial-volume effects do in real short-axis images.
const BLUR_SIGMA_PX: f64 = 0.6;

/// Relative LGE signal of each material (0–1, before bias and noise).
///
/// The inversion time nulls healthy myocardium; gadolinium-rich scar is the
/// brightest tissue, blood pools are bright, the no-reflow core stays dark.
pub(crate) fn lge_signal(material: Material) -> f64 {
    match material {
        Material::Air => 0.0,
        Material::Lung => 0.04,
        Material::SoftTissue => 0.30,
        Material::Liver => 0.40,
        Material::Bone => 0.35,
        Material::AorticBlood => 0.62,
        Material::Fat => 0.55,
        Material::Myocardium => 0.07,
        Material::RvWall => 0.09,
        Material::LvBlood => 0.72,
        Material::RvBlood => 0.66,
        Material::Scar => 0.95,
        Material::Mvo => 0.10,
    }
}

/// Whether a material carries the smooth tissue texture.
fn is_textured(material: Material) -> bool {
    matches!(
        material,
        Material::SoftTissue | Material::Liver | Material::Fat | Material::Bone
    )
}

/// Relative amplitude of the tissue texture.
const TEXTURE_AMPLITUDE: f64 = 0.12;

/// A smooth random field in world space: a sum of plane waves with
/// wavelengths of a few centimetres, in [−1, 1].
struct Texture {
    waves: Vec<([f64; 3], f64)>,
}

impl Texture {
    fn draw(rng: &mut Rng) -> Texture {
        let waves = (0..4)
            .map(|_| {
                let wavelength = rng.uniform_range(20.0, 60.0);
                // A uniformly random direction on the sphere.
                let z = rng.uniform_range(-1.0, 1.0);
                let phi = rng.uniform_range(0.0, 2.0 * PI);
                let r = (1.0 - z * z).sqrt();
                let k = 2.0 * PI / wavelength;
                (
                    [k * r * phi.cos(), k * r * phi.sin(), k * z],
                    rng.uniform_range(0.0, 2.0 * PI),
                )
            })
            .collect();
        Texture { waves }
    }

    fn at(&self, p: [f64; 3]) -> f64 {
        let sum: f64 = self
            .waves
            .iter()
            .map(|(k, phase)| (dot(*k, p) + phase).cos())
            .sum();
        sum / self.waves.len() as f64
    }
}

/// Receive sensitivity of an anterior surface coil: brightest near the
/// chest wall, falling off smoothly with depth, normalised to 1 at the heart.
struct BiasField {
    coil: [f64; 3],
    width_mm: f64,
    norm: f64,
}

impl BiasField {
    fn new(heart_centre: [f64; 3], rng: &mut Rng) -> BiasField {
        let coil = [
            heart_centre[0] + rng.uniform_range(-30.0, 30.0),
            -88.0,
            heart_centre[2] + rng.uniform_range(-30.0, 30.0),
        ];
        let mut field = BiasField {
            coil,
            width_mm: rng.uniform_range(130.0, 170.0),
            norm: 1.0,
        };
        field.norm = 1.0 / field.at(heart_centre);
        field
    }

    fn at(&self, p: [f64; 3]) -> f64 {
        let d2: f64 = (0..3).map(|a| (p[a] - self.coil[a]).powi(2)).sum();
        self.norm * (0.6 + 0.7 * (-d2 / (2.0 * self.width_mm * self.width_mm)).exp())
    }
}

/// Renders the LGE magnitude image of a material map (i fastest, then j, k).
///
/// `noise_level` is the standard deviation of each quadrature channel's
/// Gaussian noise as a fraction of full scale.
pub(crate) fn render(
    materials: &[Material],
    dims: [usize; 3],
    geometry: &Geometry,
    heart_centre: [f64; 3],
    noise_level: f64,
    rng: &mut Rng,
) -> Vec<f32> {
    let texture = Texture::draw(&mut rng.fork(1));
    let bias = BiasField::new(heart_centre, &mut rng.fork(2));
    let mut noise = rng.fork(3);

    let [ni, nj, nk] = dims;
    let mut clean: Vec<f64> = Vec::with_capacity(materials.len());
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let material = materials[(k * nj + j) * ni + i];
                let mut value = lge_signal(material);
                if is_textured(material) {
                    let p = geometry.index_to_world([i as f64, j as f64, k as f64]);
                    value *= 1.0 + TEXTURE_AMPLITUDE * texture.at(p);
                }
                clean.push(value);
            }
        }
    }
    blur_in_plane(&mut clean, dims, BLUR_SIGMA_PX);

    let sigma = noise_level * FULL_SCALE;
    let mut image = Vec::with_capacity(clean.len());
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let p = geometry.index_to_world([i as f64, j as f64, k as f64]);
                let signal = clean[(k * nj + j) * ni + i] * bias.at(p) * FULL_SCALE;
                // Magnitude of a complex signal with Gaussian noise in both
                // channels: Rician, with the typical bright noise floor in air.
                let real = signal + sigma * noise.normal();
                let imaginary = sigma * noise.normal();
                image.push(real.hypot(imaginary) as f32);
            }
        }
    }
    image
}

/// Separable Gaussian blur along i and j of every slice (edges clamped).
fn blur_in_plane(values: &mut [f64], dims: [usize; 3], sigma_px: f64) {
    let [ni, nj, nk] = dims;
    let radius = (3.0 * sigma_px).ceil() as isize;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma_px * sigma_px)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let clamp = |x: isize, n: usize| x.clamp(0, n as isize - 1) as usize;

    let mut line = Vec::new();
    for k in 0..nk {
        let slice = &mut values[k * ni * nj..(k + 1) * ni * nj];
        for j in 0..nj {
            line.clear();
            line.extend_from_slice(&slice[j * ni..(j + 1) * ni]);
            for i in 0..ni {
                slice[j * ni + i] = weights
                    .iter()
                    .enumerate()
                    .map(|(w, weight)| weight * line[clamp(i as isize + w as isize - radius, ni)])
                    .sum();
            }
        }
        for i in 0..ni {
            line.clear();
            line.extend((0..nj).map(|j| slice[j * ni + i]));
            for j in 0..nj {
                slice[j * ni + i] = weights
                    .iter()
                    .enumerate()
                    .map(|(w, weight)| weight * line[clamp(j as isize + w as isize - radius, nj)])
                    .sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_preserves_constants_and_spreads_edges() {
        let dims = [8, 6, 2];
        let mut flat = vec![0.5; 96];
        blur_in_plane(&mut flat, dims, BLUR_SIGMA_PX);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-12));

        let mut step: Vec<f64> = (0..96).map(|n| if n % 8 < 4 { 0.0 } else { 1.0 }).collect();
        blur_in_plane(&mut step, dims, BLUR_SIGMA_PX);
        assert!(
            step[3] > 0.05 && step[3] < 0.5,
            "edge not softened: {}",
            step[3]
        );
        assert!(step[0] < 1e-3 && step[7] > 1.0 - 1e-3);
    }

    #[test]
    fn contrast_is_lge_like() {
        let s = lge_signal;
        assert!(s(Material::Scar) > s(Material::LvBlood));
        assert!(s(Material::LvBlood) > s(Material::Fat));
        assert!(s(Material::SoftTissue) > s(Material::Myocardium));
        assert!(s(Material::Mvo) < 0.15 && s(Material::Myocardium) < 0.1);
    }
}

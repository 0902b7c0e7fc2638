//! Seeded smooth random fields in millimetres: irregular scar borders and the
//! porespy-like blob fields of the CLAIM preset.
//!
//! Everything is driven by [`Rng`], so one seed gives the same field on every
//! machine and thread.

use crate::error::{Error, Result};
use crate::imgproc::gaussian_smooth_mm;
use crate::rng::Rng;
use crate::volume::{Geometry, Volume};

/// Value noise: random values on a cubic lattice of `cell_mm` spacing,
/// interpolated with a quintic fade (C² smooth). Values lie in [−1, 1].
#[derive(Debug, Clone)]
pub struct ValueNoise {
    cell_mm: f64,
    offset_mm: [f64; 3],
    lattice: [usize; 3],
    values: Vec<f32>,
}

impl ValueNoise {
    /// A field covering the box `[0, extent_mm]` (points outside are clamped
    /// to the lattice), with features about `cell_mm` across and a random
    /// lattice offset.
    pub fn new(extent_mm: [f64; 3], cell_mm: f64, rng: &mut Rng) -> Result<Self> {
        if !cell_mm.is_finite() || cell_mm <= 0.0 {
            return Err(Error::invalid(format!(
                "noise cell size must be finite and > 0 mm, got {cell_mm}"
            )));
        }
        let mut lattice = [0usize; 3];
        for (a, e) in extent_mm.iter().enumerate() {
            if !e.is_finite() || *e < 0.0 {
                return Err(Error::invalid(format!(
                    "noise extent must be finite and ≥ 0 mm, got {e}"
                )));
            }
            // Two extra nodes: one for the random offset, one to interpolate towards.
            let nodes = (e / cell_mm).ceil() + 3.0;
            if nodes > 1.0e6 {
                return Err(Error::invalid(format!(
                    "noise lattice too fine: {e} mm in {cell_mm} mm cells"
                )));
            }
            lattice[a] = nodes as usize;
        }
        let offset_mm = [0, 1, 2].map(|_| rng.uniform() * cell_mm);
        let count = lattice[0]
            .checked_mul(lattice[1])
            .and_then(|n| n.checked_mul(lattice[2]))
            .filter(|n| *n <= crate::volume::MAX_VOXELS as usize)
            .ok_or_else(|| Error::invalid("noise lattice too large"))?;
        let values = (0..count)
            .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
            .collect();
        Ok(ValueNoise {
            cell_mm,
            offset_mm,
            lattice,
            values,
        })
    }

    /// The field at `p_mm` (same frame as the extent).
    pub fn at(&self, p_mm: [f64; 3]) -> f64 {
        let [(i, wi), (j, wj), (k, wk)] = [0, 1, 2].map(|a| self.cell(a, p_mm[a]));
        let [ni, nj, _] = self.lattice;
        self.interpolate(i + ni * (j + nj * k), [wi, wj, wk])
    }

    /// Lattice cell and fade weight of coordinate `x_mm` along axis `a`
    /// (points beyond the lattice are clamped to it).
    fn cell(&self, a: usize, x_mm: f64) -> (usize, f64) {
        let last = (self.lattice[a] - 2) as f64;
        let u = ((x_mm + self.offset_mm[a]) / self.cell_mm).max(0.0);
        let u = if u.is_finite() { u.min(last) } else { 0.0 };
        let cell = u.floor().min(last - 1.0).max(0.0);
        (cell as usize, fade(u - cell))
    }

    /// Flat-index stride of lattice axis `a`.
    fn stride(&self, a: usize) -> usize {
        match a {
            0 => 1,
            1 => self.lattice[0],
            _ => self.lattice[0] * self.lattice[1],
        }
    }

    /// Trilinear blend (with faded weights) of the 8 nodes of the cell whose
    /// lowest node has flat index `base`.
    fn interpolate(&self, base: usize, weight: [f64; 3]) -> f64 {
        let (sj, sk) = (self.stride(1), self.stride(2));
        let Some(nodes) = self.values.get(base..base + sk + sj + 2) else {
            return 0.0;
        };
        let at = |offset: usize| nodes.get(offset).copied().map_or(0.0, f64::from);
        let [wi, wj, wk] = weight;
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let plane = |o: usize| {
            lerp(
                lerp(at(o), at(o + 1), wi),
                lerp(at(o + sj), at(o + sj + 1), wi),
                wj,
            )
        };
        lerp(plane(0), plane(sk), wk)
    }
}

/// Quintic smoothstep 6t⁵ − 15t⁴ + 10t³ (zero first and second derivatives
/// at the lattice nodes).
fn fade(t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

/// Sum of value-noise octaves (cell sizes halving, amplitudes halving),
/// rescaled to [−1, 1]: smooth at large scale, ragged at small scale.
#[derive(Debug, Clone)]
pub struct SmoothField {
    octaves: Vec<(ValueNoise, f64)>,
    norm: f64,
}

impl SmoothField {
    /// `octaves` layers (≥ 1) over `[0, extent_mm]`, the coarsest with
    /// features about `cell_mm` across.
    pub fn new(extent_mm: [f64; 3], cell_mm: f64, octaves: usize, rng: &mut Rng) -> Result<Self> {
        if octaves == 0 {
            return Err(Error::invalid("a smooth field needs at least one octave"));
        }
        let mut layers = Vec::with_capacity(octaves);
        let mut amplitude = 1.0;
        let mut cell = cell_mm;
        let mut norm = 0.0;
        for _ in 0..octaves {
            layers.push((ValueNoise::new(extent_mm, cell, rng)?, amplitude));
            norm += amplitude;
            amplitude *= 0.5;
            cell *= 0.5;
        }
        Ok(SmoothField {
            octaves: layers,
            norm,
        })
    }

    /// The field at `p_mm`, in [−1, 1].
    pub fn at(&self, p_mm: [f64; 3]) -> f64 {
        self.octaves
            .iter()
            .map(|(n, a)| a * n.at(p_mm))
            .sum::<f64>()
            / self.norm
    }
}

/// A [`SmoothField`] sampled on the voxel grid `index × spacing`: the
/// lattice cell and weight of every grid coordinate are computed once per
/// axis, so each voxel costs only the interpolation. Gives exactly
/// [`SmoothField::at`] of the voxel's position.
#[derive(Debug, Clone)]
pub struct GridSampler<'a> {
    field: &'a SmoothField,
    /// Per octave, per axis: (cell × lattice stride, weight) of each grid
    /// coordinate.
    cells: Vec<[Vec<(usize, f64)>; 3]>,
}

impl SmoothField {
    /// A sampler for the grid of `dims` voxels of `spacing` mm, voxel
    /// `(i, j, k)` sitting at `(i, j, k) × spacing`.
    pub fn sampler(&self, dims: [usize; 3], spacing: [f64; 3]) -> GridSampler<'_> {
        let cells = self
            .octaves
            .iter()
            .map(|(noise, _)| {
                [0, 1, 2].map(|a| {
                    (0..dims[a])
                        .map(|n| {
                            let (cell, weight) = noise.cell(a, n as f64 * spacing[a]);
                            (cell * noise.stride(a), weight)
                        })
                        .collect()
                })
            })
            .collect();
        GridSampler { field: self, cells }
    }
}

impl GridSampler<'_> {
    /// The field at voxel `ijk` (0 outside the sampled grid).
    pub fn at(&self, ijk: [usize; 3]) -> f64 {
        let mut sum = 0.0;
        for ((noise, amplitude), axes) in self.field.octaves.iter().zip(&self.cells) {
            let (Some(ci), Some(cj), Some(ck)) = (
                axes[0].get(ijk[0]),
                axes[1].get(ijk[1]),
                axes[2].get(ijk[2]),
            ) else {
                return 0.0;
            };
            sum += amplitude * noise.interpolate(ci.0 + cj.0 + ck.0, [ci.1, cj.1, ck.1]);
        }
        sum / self.field.norm
    }
}

/// Rank-normalised blob field in the manner of porespy's `blobs` generator:
/// uniform white noise, Gaussian-blurred (σ in mm), then replaced by its rank
/// scaled to [0, 1), so that `ranks < porosity` holds on a `porosity`
/// fraction of the voxels, in blobs.
///
/// The upstream CLAIM code calls `blobs` on the 140×140×56 atlas
/// (1.25 mm in-plane) with blobiness 1, i.e. σ = mean(shape)/40 = 2.8 voxels;
/// here σ is given in mm so that other grids keep the same blob size.
pub fn blob_ranks(
    dims: [usize; 3],
    geometry: Geometry,
    sigma_mm: f64,
    seed: u64,
) -> Result<Volume<f32>> {
    let n = crate::volume::checked_voxel_count(dims)?;
    let mut rng = Rng::new(seed);
    let noise: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let blurred = gaussian_smooth_mm(&Volume::from_vec(dims, noise, geometry)?, sigma_mm)?;
    let values = blurred.as_slice()?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Ties (vanishingly rare) are broken by index, so the ranks are reproducible.
    order.sort_unstable_by(|a, b| {
        values[*a as usize]
            .total_cmp(&values[*b as usize])
            .then(a.cmp(b))
    });
    let mut ranks = vec![0.0f32; n];
    let scale = 1.0 / n as f64;
    for (rank, idx) in order.iter().enumerate() {
        ranks[*idx as usize] = (rank as f64 * scale) as f32;
    }
    Volume::from_vec(dims, ranks, geometry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_is_seeded_bounded_and_smooth() {
        let extent = [60.0, 60.0, 40.0];
        let a = SmoothField::new(extent, 12.0, 2, &mut Rng::new(4)).unwrap();
        let b = SmoothField::new(extent, 12.0, 2, &mut Rng::new(4)).unwrap();
        let c = SmoothField::new(extent, 12.0, 2, &mut Rng::new(5)).unwrap();
        let mut diff = 0.0;
        let mut max_step: f64 = 0.0;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for s in 0..2000 {
            let p = [
                s as f64 * 0.03,
                (s % 37) as f64 * 1.5,
                (s % 11) as f64 * 3.0,
            ];
            let v = a.at(p);
            assert_eq!(v, b.at(p));
            assert!((-1.0..=1.0).contains(&v));
            diff += (v - c.at(p)).abs();
            lo = lo.min(v);
            hi = hi.max(v);
            // 0.01 mm away the value barely moves: no discontinuities.
            let q = [p[0] + 0.01, p[1], p[2]];
            max_step = max_step.max((a.at(q) - v).abs());
        }
        assert!(
            diff / 2000.0 > 0.05,
            "different seeds give different fields"
        );
        assert!(hi - lo > 0.5, "the field varies: {lo}..{hi}");
        assert!(max_step < 0.01, "{max_step}");
        // Far outside the extent the lattice is clamped, not indexed out of range.
        assert!(a.at([-1e9, 1e9, f64::NAN]).is_finite());
        assert!(ValueNoise::new(extent, 0.0, &mut Rng::new(1)).is_err());
    }

    #[test]
    fn grid_sampler_matches_point_evaluation() {
        let f = SmoothField::new([40.0, 30.0, 60.0], 9.0, 3, &mut Rng::new(21)).unwrap();
        let spacing = [1.25, 1.5, 10.0];
        let s = f.sampler([32, 20, 6], spacing);
        for k in 0..6 {
            for j in 0..20 {
                for i in 0..32 {
                    let p = [
                        i as f64 * spacing[0],
                        j as f64 * spacing[1],
                        k as f64 * spacing[2],
                    ];
                    assert_eq!(s.at([i, j, k]), f.at(p));
                }
            }
        }
        assert_eq!(s.at([32, 0, 0]), 0.0);
    }

    #[test]
    fn blob_ranks_hit_the_porosity_in_blobs() {
        let g = Geometry::with_spacing([1.25, 1.25, 2.0]);
        let r = blob_ranks([40, 40, 20], g, 3.5, 1001).unwrap();
        assert_eq!(r, blob_ranks([40, 40, 20], g, 3.5, 1001).unwrap());
        let on = r.data.iter().filter(|x| **x < 0.3).count();
        assert_eq!(on, (0.3f64 * 32000.0).ceil() as usize);
        // Blobs: a voxel's in-plane neighbour agrees with it far more often than chance.
        let mut same = 0;
        let mut total = 0;
        for k in 0..20 {
            for j in 0..40 {
                for i in 0..39 {
                    total += 1;
                    same += usize::from((*r.at(i, j, k) < 0.3) == (*r.at(i + 1, j, k) < 0.3));
                }
            }
        }
        assert!(same as f64 / total as f64 > 0.85, "{same}/{total}");
    }
}

//! Exact Euclidean distance maps in millimetres.
//!
//! Separable lower-envelope algorithm (Felzenszwalb & Huttenlocher,
//! "Distance transforms of sampled functions", 2012): one pass per axis, each
//! pass the exact 1-D squared-distance transform of the previous result with
//! sample positions scaled by that axis' spacing. Exact for any anisotropic
//! spacing, O(voxels).

use super::{checked_spacing, for_each_line};
use crate::error::{Error, Result};
use crate::volume::Volume;

/// Distance (mm) from the centre of every voxel to the centre of the nearest
/// voxel where `features` is true (0 on features); `f32::INFINITY` everywhere
/// when there is no feature voxel. Spacing comes from the geometry.
pub fn euclidean_distance_map(features: &Volume<bool>) -> Result<Volume<f32>> {
    let spacing = checked_spacing(features.geometry.spacing, "distance map")?;
    let flat = features.as_slice()?;
    let sq = squared_distance_mm(flat, features.dims(), spacing)?;
    let dist: Vec<f32> = sq.iter().map(|d| d.sqrt() as f32).collect();
    Volume::from_vec(features.dims(), dist, features.geometry)
}

/// Squared distances (mm²) to the nearest `true` voxel of an i-fastest
/// `features` buffer with dims `[ni, nj, nk]`; `f64::INFINITY` without features.
pub(crate) fn squared_distance_mm(
    features: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<Vec<f64>> {
    let n = crate::volume::checked_voxel_count(dims)?;
    if features.len() != n {
        return Err(Error::invalid(format!(
            "distance map: {} feature flags for dims {dims:?} ({n} voxels)",
            features.len()
        )));
    }
    let mut field: Vec<f64> = features
        .iter()
        .map(|&f| if f { 0.0 } else { f64::INFINITY })
        .collect();
    let longest = dims.iter().copied().max().unwrap_or(1);
    let mut line = vec![0.0f64; longest];
    let mut out = vec![0.0f64; longest];
    let mut envelope = Envelope::with_capacity(longest);
    for axis in 0..3 {
        if dims[axis] == 1 {
            continue; // a single sample: the transform is the identity
        }
        let h = spacing[axis];
        for_each_line(dims, axis, |start, stride, len| {
            for (q, slot) in line[..len].iter_mut().enumerate() {
                *slot = field[start + q * stride];
            }
            envelope.transform(&line[..len], h, &mut out[..len]);
            for (q, value) in out[..len].iter().enumerate() {
                field[start + q * stride] = *value;
            }
        });
    }
    Ok(field)
}

/// Scratch space for the 1-D lower envelope of parabolas.
struct Envelope {
    /// Sample index of each parabola in the envelope.
    vertex: Vec<usize>,
    /// Left boundary (mm) of each parabola's interval; one extra entry.
    bound: Vec<f64>,
}

impl Envelope {
    fn with_capacity(n: usize) -> Self {
        Envelope {
            vertex: Vec::with_capacity(n),
            bound: Vec::with_capacity(n + 1),
        }
    }

    /// `out[q] = min_p (q h − p h)² + f[p]` over samples with finite `f[p]`.
    fn transform(&mut self, f: &[f64], h: f64, out: &mut [f64]) {
        self.vertex.clear();
        self.bound.clear();
        for (q, &fq) in f.iter().enumerate() {
            if !fq.is_finite() {
                continue;
            }
            let xq = q as f64 * h;
            loop {
                let Some(&p) = self.vertex.last() else {
                    self.vertex.push(q);
                    self.bound.push(f64::NEG_INFINITY);
                    break;
                };
                let xp = p as f64 * h;
                // Where the parabola of q overtakes the one of p.
                let s = ((fq + xq * xq) - (f[p] + xp * xp)) / (2.0 * (xq - xp));
                let last_bound = self.bound.last().copied().unwrap_or(f64::NEG_INFINITY);
                if s <= last_bound {
                    self.vertex.pop();
                    self.bound.pop();
                } else {
                    self.vertex.push(q);
                    self.bound.push(s);
                    break;
                }
            }
        }
        if self.vertex.is_empty() {
            out.fill(f64::INFINITY);
            return;
        }
        let mut k = 0;
        for (q, slot) in out.iter_mut().enumerate() {
            let x = q as f64 * h;
            while k + 1 < self.vertex.len() && self.bound[k + 1] < x {
                k += 1;
            }
            let p = self.vertex[k];
            let dx = x - p as f64 * h;
            *slot = dx * dx + f[p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::volume::Geometry;

    fn brute_force(features: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
        let pos = |n: usize| {
            let i = n % dims[0];
            let j = (n / dims[0]) % dims[1];
            let k = n / (dims[0] * dims[1]);
            [
                i as f64 * spacing[0],
                j as f64 * spacing[1],
                k as f64 * spacing[2],
            ]
        };
        (0..features.len())
            .map(|a| {
                let pa = pos(a);
                (0..features.len())
                    .filter(|&b| features[b])
                    .map(|b| {
                        let pb = pos(b);
                        ((pa[0] - pb[0]).powi(2)
                            + (pa[1] - pb[1]).powi(2)
                            + (pa[2] - pb[2]).powi(2))
                        .sqrt()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_with_anisotropic_spacing() {
        let mut rng = Rng::new(11);
        for (dims, spacing, density) in [
            ([9, 7, 5], [1.25, 1.25, 10.0], 0.05),
            ([6, 8, 7], [0.7, 2.3, 1.1], 0.02),
            ([11, 3, 4], [3.0, 0.5, 2.0], 0.2),
            ([5, 5, 1], [1.0, 1.0, 1.0], 0.1),
        ] {
            let n = dims.iter().product();
            let mut features: Vec<bool> = (0..n).map(|_| rng.uniform() < density).collect();
            features[n / 2] = true;
            let geom = Geometry::with_spacing(spacing);
            let vol = Volume::from_vec(dims, features.clone(), geom).unwrap();
            let fast = euclidean_distance_map(&vol).unwrap();
            let slow = brute_force(&features, dims, spacing);
            for (a, (f, s)) in fast.as_slice().unwrap().iter().zip(&slow).enumerate() {
                assert!(
                    (f64::from(*f) - s).abs() < 1e-4,
                    "voxel {a}: {f} vs {s} (dims {dims:?})"
                );
            }
        }
    }

    #[test]
    fn no_features_is_infinite_and_bad_spacing_is_an_error() {
        let vol = Volume::from_vec([3, 2, 2], vec![false; 12], Geometry::default()).unwrap();
        let d = euclidean_distance_map(&vol).unwrap();
        assert!(d.as_slice().unwrap().iter().all(|x| x.is_infinite()));
        let bad = Volume::from_vec(
            [3, 2, 2],
            vec![true; 12],
            Geometry::with_spacing([1.0, 0.0, 1.0]),
        )
        .unwrap();
        assert!(euclidean_distance_map(&bad).is_err());
    }

    #[test]
    fn thick_slices_are_measured_through_plane() {
        // One feature voxel in slice 0; the voxel straight above in slice 1 is
        // one slice (10 mm) away, not one voxel.
        let mut f = vec![false; 3 * 3 * 2];
        f[4] = true;
        let vol = Volume::from_vec([3, 3, 2], f, Geometry::with_spacing([1.0, 1.0, 10.0])).unwrap();
        let d = euclidean_distance_map(&vol).unwrap();
        assert!((d.at(1, 1, 1) - 10.0).abs() < 1e-6);
        assert!((d.at(0, 0, 1) - (102.0f32).sqrt()).abs() < 1e-5);
        assert!((d.at(2, 1, 0) - 1.0).abs() < 1e-6);
    }
}

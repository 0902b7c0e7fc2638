//! The LV long axis: its direction (apex → base), found in world millimetres
//! from the shape of the LV alone, and area profiles along it.
//!
//! The LV (cavity ∪ myocardium) is close to a body of revolution, so one of
//! the principal axes of its volume is the long axis whatever its aspect
//! ratio — the most elongated one for a full LV, the shortest one for a
//! squat, truncated short-axis stack. Of the three, the long axis is the one
//! along which the cavity reaches the end of the LV on one side (the open
//! base at the mitral plane) while the myocardium closes the other (the
//! apex); across the LV the myocardial wall closes both sides. A line fit
//! through the cavity centroids of slabs across that axis then refines it.

use super::cloud::LabelCloud;
use super::linalg::{dot, symmetric_eigen, Moments, Vec3};
use crate::error::{Error, Result};

/// Fraction of the largest cross-section below which a profile counts as
/// ended when measuring how far the LV extends beyond its cavity.
const END_FRACTION: f64 = 0.02;

/// Cross-sectional area (mm²) of a point set along a direction, each voxel's
/// volume spread over its projected width.
#[derive(Debug, Clone)]
pub(super) struct Profile {
    /// Position (mm along the axis) of the lower edge of bin 0.
    start: f64,
    bin: f64,
    area: Vec<f64>,
}

impl Profile {
    /// Builds the profile of voxels at axis positions `ts`, each of volume
    /// `voxel_volume` spread uniformly over `width` mm.
    pub(super) fn build(ts: &[f64], width: f64, voxel_volume: f64) -> Profile {
        let (lo, hi) = ts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                (lo.min(t), hi.max(t))
            });
        if !lo.is_finite() || !hi.is_finite() || width <= 0.0 {
            return Profile {
                start: 0.0,
                bin: 1.0,
                area: Vec::new(),
            };
        }
        let span = hi - lo + width;
        // Fine bins resolve slice steps; the lower bounds keep the box
        // kernel short and the bin count bounded for absurd geometries.
        let bin = (width / 4.0)
            .clamp(0.1, 0.5)
            .max(width / 50.0)
            .max(span / 100_000.0);
        let reach = (0.5 * width / bin).ceil() as usize + 1;
        let start = lo - (reach + 1) as f64 * bin;
        let n = ((hi - lo) / bin).ceil() as usize + 2 * reach + 4;
        // Histogram of positions, each split between its two nearest bin
        // centres, then convolved with one voxel's box of `width`.
        let mut counts = vec![0.0; n];
        for &t in ts {
            let x = (t - start) / bin - 0.5;
            let below = x.floor();
            let f = x - below;
            let below = below.max(0.0) as usize;
            if let Some(c) = counts.get_mut(below) {
                *c += 1.0 - f;
            }
            if let Some(c) = counts.get_mut(below + 1) {
                *c += f;
            }
        }
        // Share of a bin at offset d (bins) covered by a box centred on bin 0.
        let kernel: Vec<f64> = (0..=2 * reach)
            .map(|m| {
                let d = m as f64 - reach as f64;
                let covered =
                    (0.5 * width).min((d + 0.5) * bin) - (-0.5 * width).max((d - 0.5) * bin);
                covered.max(0.0) / bin
            })
            .collect();
        let per_voxel = voxel_volume / width;
        let area = (0..n)
            .map(|b| {
                kernel
                    .iter()
                    .enumerate()
                    .filter_map(|(m, k)| {
                        let source = (b + reach).checked_sub(m)?;
                        counts.get(source).map(|c| c * k)
                    })
                    .sum::<f64>()
                    * per_voxel
            })
            .collect();
        Profile { start, bin, area }
    }

    /// Largest cross-section (mm²).
    pub(super) fn max_area(&self) -> f64 {
        self.area.iter().copied().fold(0.0, f64::max)
    }

    /// The first and last positions where the area reaches `fraction` of its
    /// maximum, interpolated between bin centres.
    pub(super) fn extent(&self, fraction: f64) -> Option<(f64, f64)> {
        let threshold = fraction * self.max_area();
        if threshold <= 0.0 {
            return None;
        }
        let first = self.area.iter().position(|&a| a >= threshold)?;
        let last = self.area.iter().rposition(|&a| a >= threshold)?;
        let centre = |b: usize| self.start + (b as f64 + 0.5) * self.bin;
        let crossing = |inside: usize, outside: usize| {
            let (ai, ao) = (self.area[inside], self.area[outside]);
            let f = if ai > ao {
                (threshold - ao) / (ai - ao)
            } else {
                1.0
            };
            centre(outside) + f * (centre(inside) - centre(outside))
        };
        let low = if first == 0 {
            self.start
        } else {
            crossing(first, first - 1)
        };
        let high = if last + 1 >= self.area.len() {
            self.start + self.area.len() as f64 * self.bin
        } else {
            crossing(last, last + 1)
        };
        Some((low, high))
    }
}

/// How far (mm) the LV reaches beyond its cavity at the low and the high
/// end along `axis`: ≈ 0 at an open end (the base), a wall's thickness or
/// more at a closed one (the apex, or the side walls across the LV).
pub(super) fn closure_gaps(cloud: &LabelCloud, axis: Vec3) -> Option<(f64, f64)> {
    let width = cloud.projected_voxel_width(axis);
    let cavity: Vec<f64> = cloud.cavity.iter().map(|p| dot(*p, axis)).collect();
    let lv: Vec<f64> = cavity
        .iter()
        .copied()
        .chain(cloud.myocardium.iter().map(|m| dot(m.world, axis)))
        .collect();
    let (c_lo, c_hi) = Profile::build(&cavity, width, cloud.voxel_volume()).extent(END_FRACTION)?;
    let (l_lo, l_hi) = Profile::build(&lv, width, cloud.voxel_volume()).extent(END_FRACTION)?;
    Some(((c_lo - l_lo).max(0.0), (l_hi - c_hi).max(0.0)))
}

/// The unsigned long-axis direction of the LV (see the module docs).
pub(super) fn principal_long_axis(cloud: &LabelCloud) -> Result<Vec3> {
    let mut moments = Moments::default();
    for p in cloud
        .cavity
        .iter()
        .chain(cloud.myocardium.iter().map(|m| &m.world))
    {
        moments.add(*p, 1.0);
    }
    let covariance = moments
        .covariance()
        .ok_or_else(|| Error::Internal("LV moments without voxels".into()))?;
    let (values, vectors) = symmetric_eigen(covariance);
    // A flat LV (one slice) has no measurable long axis.
    if values[2].is_nan() || values[2] <= 1e-6 * values[0].max(f64::MIN_POSITIVE) {
        return Err(Error::invalid(
            "the LV (cavity and myocardium) lies in a single plane, e.g. one slice: \
             AHA parcellation needs a 3-D LV to find its long axis (or pass long_axis)",
        ));
    }
    // Openness of each candidate: the smaller of its two end gaps.
    let mut best: Option<(f64, usize)> = None;
    for (n, v) in vectors.iter().enumerate() {
        let Some((low, high)) = closure_gaps(cloud, *v) else {
            continue;
        };
        let openness = low.min(high);
        let better = match best {
            None => true,
            // Within half a voxel the gaps do not discriminate; keep the
            // earlier (more elongated) principal axis.
            Some((o, _)) => openness < o - 0.5 * cloud.projected_voxel_width(*v),
        };
        if better {
            best = Some((openness, n));
        }
    }
    let index = best.map_or(0, |(_, n)| n);
    Ok(vectors[index])
}

/// Refines the apex→base direction `axis` by fitting a line through the
/// cavity centroids of slabs across it (weighted by slab volume), a few
/// rounds; keeps `axis` when the fit is ill-posed or swings implausibly.
pub(super) fn refine_by_centroid_line(cloud: &LabelCloud, axis: Vec3) -> Vec3 {
    let mut current = axis;
    for _round in 0..4 {
        let width = cloud.projected_voxel_width(current).max(2.0);
        let ts: Vec<f64> = cloud.cavity.iter().map(|p| dot(*p, current)).collect();
        let t0 = ts.iter().copied().fold(f64::INFINITY, f64::min);
        let slabs = ts
            .iter()
            .map(|t| ((t - t0) / width) as usize)
            .max()
            .unwrap_or(0)
            + 1;
        let mut per_slab = vec![Moments::default(); slabs];
        for (p, t) in cloud.cavity.iter().zip(&ts) {
            if let Some(m) = per_slab.get_mut(((t - t0) / width) as usize) {
                m.add(*p, 1.0);
            }
        }
        let largest = per_slab.iter().map(Moments::weight).fold(0.0, f64::max);
        let mut line = Moments::default();
        let mut used = 0;
        for m in &per_slab {
            // Tiny apical or basal slivers have unreliable centroids.
            if m.weight() >= 0.1 * largest {
                if let Some(c) = m.mean() {
                    line.add(c, m.weight());
                    used += 1;
                }
            }
        }
        let Some(cov) = line.covariance() else { break };
        if used < 3 {
            break;
        }
        let (_, vectors) = symmetric_eigen(cov);
        let mut fitted = vectors[0];
        if dot(fitted, current) < 0.0 {
            fitted = fitted.map(|x| -x);
        }
        // More than 30° from the shape's principal axis means the centroids
        // do not describe a line (e.g. a truncated stack); trust the shape.
        if dot(fitted, axis) < 30f64.to_radians().cos() {
            return axis;
        }
        let settled = dot(fitted, current) > 0.05f64.to_radians().cos();
        current = fitted;
        if settled {
            break;
        }
    }
    current
}

/// Which way along the unsigned `axis` the base lies: returns `axis` or its
/// negation, pointing apex → base. The apex is the closed end (more
/// myocardium beyond the cavity); when the ends look alike, the RV (which
/// sits towards the base) decides, then the taper of the cavity (wider at
/// the base), then the usual anatomy (the base lies right, posterior and
/// superior of the apex).
pub(super) fn orient_apex_to_base(cloud: &LabelCloud, axis: Vec3) -> Vec3 {
    let flip = |v: Vec3| v.map(|x| -x);
    let width = cloud.projected_voxel_width(axis);
    if let Some((low, high)) = closure_gaps(cloud, axis) {
        if (low - high).abs() >= width.max(1.0) {
            return if low > high { axis } else { flip(axis) };
        }
    }
    let cavity: Vec<f64> = cloud.cavity.iter().map(|p| dot(*p, axis)).collect();
    let profile = Profile::build(&cavity, width, cloud.voxel_volume());
    if let Some((lo, hi)) = profile.extent(0.1) {
        let length = (hi - lo).max(f64::MIN_POSITIVE);
        let middle = 0.5 * (lo + hi);
        if !cloud.rv.is_empty() {
            let rv_mean =
                cloud.rv.iter().map(|p| dot(*p, axis)).sum::<f64>() / cloud.rv.len() as f64;
            if (rv_mean - middle).abs() > 0.05 * length {
                return if rv_mean > middle { axis } else { flip(axis) };
            }
        }
        let cavity_mean = cavity.iter().sum::<f64>() / cavity.len().max(1) as f64;
        if (cavity_mean - middle).abs() > 0.02 * length {
            return if cavity_mean > middle {
                axis
            } else {
                flip(axis)
            };
        }
    }
    // LPS: right is −x, posterior +y, superior +z.
    if dot(axis, [-1.0, 1.0, 1.0]) >= 0.0 {
        axis
    } else {
        flip(axis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_measures_area_and_extent() {
        // Ten 2 mm slices of 100 voxels of 1×1×2 mm: 100 mm² between 0 and 20 mm.
        let ts: Vec<f64> = (0..10)
            .flat_map(|k| std::iter::repeat_n(1.0 + 2.0 * k as f64, 100))
            .collect();
        let p = Profile::build(&ts, 2.0, 2.0);
        assert!((p.max_area() - 100.0).abs() < 1e-9, "{}", p.max_area());
        let (lo, hi) = p.extent(0.5).unwrap();
        assert!(lo.abs() < 0.3 && (hi - 20.0).abs() < 0.3, "{lo} {hi}");
    }
}

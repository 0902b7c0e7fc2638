//! Overlap and surface-distance measures between two binary masks.
//!
//! Masks are flat `bool` buffers in i-fastest order with their dims and
//! voxel spacing (mm). Distances are exact Euclidean distances between voxel
//! centres, anisotropic spacing included, from
//! [`euclidean_distance_map`](crate::imgproc::euclidean_distance_map).

use crate::error::{Error, Result};
use crate::imgproc::euclidean_distance_map;
use crate::volume::{Geometry, Volume};

/// Dice coefficient `2 |A ∩ B| / (|A| + |B|)` from voxel counts.
///
/// Both masks empty is a perfect agreement, **1.0**; one empty and the
/// other not is 0.0.
pub fn dice_from_counts(intersection: u64, a: u64, b: u64) -> f64 {
    if a + b == 0 {
        1.0
    } else {
        2.0 * intersection as f64 / (a + b) as f64
    }
}

/// Symmetric surface-distance summary of two non-empty masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceDistance {
    /// 95th percentile (linear interpolation between ranks, as
    /// `numpy.percentile`) of the pooled distances from every boundary
    /// voxel of each mask to the nearest boundary voxel of the other, mm.
    pub hd95_mm: f64,
    /// The largest of those distances: the Hausdorff distance, mm.
    pub hd_mm: f64,
}

/// Voxels of `mask` (dims `[ni, nj, nk]`) that have at least one of their 6
/// face neighbours outside the mask; a neighbour beyond the grid counts as
/// outside, so a mask touching the image edge has its edge voxels on the
/// boundary.
pub fn boundary_voxels(mask: &[bool], dims: [usize; 3]) -> Result<Vec<bool>> {
    let n = crate::volume::checked_voxel_count(dims)?;
    if mask.len() != n {
        return Err(Error::invalid(format!(
            "mask of {} voxels for dims {dims:?} ({n} voxels)",
            mask.len()
        )));
    }
    let [ni, nj, nk] = dims;
    let (si, sj, sk) = (1, ni, ni * nj);
    let inside = |idx: usize| mask.get(idx).copied().unwrap_or(false);
    let mut out = vec![false; n];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let idx = i * si + j * sj + k * sk;
                if !inside(idx) {
                    continue;
                }
                let interior = i > 0
                    && i + 1 < ni
                    && j > 0
                    && j + 1 < nj
                    && k > 0
                    && k + 1 < nk
                    && inside(idx - si)
                    && inside(idx + si)
                    && inside(idx - sj)
                    && inside(idx + sj)
                    && inside(idx - sk)
                    && inside(idx + sk);
                if let Some(slot) = out.get_mut(idx) {
                    *slot = !interior;
                }
            }
        }
    }
    Ok(out)
}

/// The `percentile` (0–100) of `sorted` (ascending, non-empty) with linear
/// interpolation between the two nearest ranks (numpy's default method).
/// `None` for an empty slice.
pub fn percentile_of_sorted(sorted: &[f64], percentile: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = (percentile.clamp(0.0, 100.0) / 100.0) * last as f64;
    let lo = position.floor() as usize;
    let hi = (lo + 1).min(last);
    let fraction = position - lo as f64;
    let a = *sorted.get(lo)?;
    let b = *sorted.get(hi)?;
    Some(a + fraction * (b - a))
}

/// Symmetric surface distances between masks `a` and `b` (flat, dims
/// `[ni, nj, nk]`, spacing in mm): for each mask, the distance from every
/// boundary voxel ([`boundary_voxels`]) to the nearest boundary voxel of
/// the other; both lists pooled, their 95th percentile and maximum.
///
/// `None` when either mask is empty: a distance to nothing is undefined.
pub fn surface_distance(
    a: &[bool],
    b: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<Option<SurfaceDistance>> {
    let n = crate::volume::checked_voxel_count(dims)?;
    if a.len() != n || b.len() != n {
        return Err(Error::invalid(format!(
            "masks of {} and {} voxels for dims {dims:?} ({n} voxels)",
            a.len(),
            b.len()
        )));
    }
    if !a.iter().any(|v| *v) || !b.iter().any(|v| *v) {
        return Ok(None);
    }
    // Distances between voxel centres do not depend on the grid around
    // them, so both masks are cropped to the box holding them both: beyond
    // it every voxel is outside both masks, which is what the boundary test
    // assumes beyond a grid's edge anyway.
    let (a, b, box_dims) = crop_to_union(a, b, dims)?;
    let a_boundary = boundary_voxels(&a, box_dims)?;
    let b_boundary = boundary_voxels(&b, box_dims)?;
    let mut distances = distances_to(&a_boundary, &b_boundary, box_dims, spacing)?;
    distances.extend(distances_to(&b_boundary, &a_boundary, box_dims, spacing)?);
    distances.sort_by(f64::total_cmp);
    let hd95_mm = percentile_of_sorted(&distances, 95.0);
    let hd_mm = distances.last().copied();
    match (hd95_mm, hd_mm) {
        (Some(hd95_mm), Some(hd_mm)) => Ok(Some(SurfaceDistance { hd95_mm, hd_mm })),
        // Non-empty masks always have boundary voxels.
        _ => Err(Error::Internal(
            "surface distance: a non-empty mask without boundary voxels".into(),
        )),
    }
}

/// Distances (mm) from every `from` voxel to the nearest `to` voxel.
fn distances_to(
    from: &[bool],
    to: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<Vec<f64>> {
    // Only the spacing matters for distances: an orthonormal direction and
    // the origin move every voxel rigidly.
    let targets = Volume::from_vec(dims, to.to_vec(), Geometry::with_spacing(spacing))?;
    let map = euclidean_distance_map(&targets)?;
    let map = map.as_slice()?;
    Ok(from
        .iter()
        .zip(map)
        .filter(|(f, _)| **f)
        .map(|(_, d)| f64::from(*d))
        .collect())
}

/// Both masks cut to the smallest box holding every voxel of either.
fn crop_to_union(
    a: &[bool],
    b: &[bool],
    dims: [usize; 3],
) -> Result<(Vec<bool>, Vec<bool>, [usize; 3])> {
    let [ni, nj, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (idx, _) in a.iter().zip(b).enumerate().filter(|(_, (x, y))| **x || **y) {
        let index = [idx % ni, (idx / ni) % nj, idx / (ni * nj)];
        for axis in 0..3 {
            lo[axis] = lo[axis].min(index[axis]);
            hi[axis] = hi[axis].max(index[axis] + 1);
        }
    }
    if (0..3).any(|axis| lo[axis] >= hi[axis]) {
        return Err(Error::Internal("surface distance: empty union".into()));
    }
    let box_dims = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let count = crate::volume::checked_voxel_count(box_dims)?;
    let mut a_box = Vec::with_capacity(count);
    let mut b_box = Vec::with_capacity(count);
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            let row = (k * nj + j) * ni;
            let (start, end) = (row + lo[0], row + hi[0]);
            let (Some(ra), Some(rb)) = (a.get(start..end), b.get(start..end)) else {
                return Err(Error::Internal(
                    "surface distance: crop out of range".into(),
                ));
            };
            a_box.extend_from_slice(ra);
            b_box.extend_from_slice(rb);
        }
    }
    Ok((a_box, b_box, box_dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_counts_and_empty_masks() {
        assert_eq!(dice_from_counts(0, 0, 0), 1.0);
        assert_eq!(dice_from_counts(0, 5, 0), 0.0);
        assert!((dice_from_counts(3, 4, 6) - 0.6).abs() < 1e-15);
    }

    #[test]
    fn boundary_of_a_cube_is_its_shell() {
        // A 3×3×3 cube inside a 5×5×5 grid: all but the centre voxel.
        let dims = [5, 5, 5];
        let mut mask = vec![false; 125];
        for k in 1..4 {
            for j in 1..4 {
                for i in 1..4 {
                    mask[i + 5 * j + 25 * k] = true;
                }
            }
        }
        let boundary = boundary_voxels(&mask, dims).unwrap();
        assert_eq!(boundary.iter().filter(|b| **b).count(), 26);
        assert!(!boundary[2 + 5 * 2 + 25 * 2]);
        // A full grid: only the voxels on the grid's faces.
        let full = boundary_voxels(&[true; 27], [3, 3, 3]).unwrap();
        assert_eq!(full.iter().filter(|b| **b).count(), 26);
        assert!(boundary_voxels(&[true; 5], [2, 2, 2]).is_err());
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile_of_sorted(&v, 50.0), Some(3.0));
        // numpy.percentile([1, 2, 3, 4, 10], 95) = 4 + 0.8 * 6
        assert!((percentile_of_sorted(&v, 95.0).unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(percentile_of_sorted(&v, 100.0), Some(10.0));
        assert_eq!(percentile_of_sorted(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile_of_sorted(&[], 95.0), None);
    }

    #[test]
    fn single_voxels_are_their_centre_distance_apart() {
        let dims = [4, 3, 2];
        let mut a = vec![false; 24];
        let mut b = vec![false; 24];
        a[0] = true; // (0, 0, 0)
        b[3 + 4 * 2 + 12] = true; // (3, 2, 1)
        let spacing = [1.0, 2.0, 5.0];
        let d = surface_distance(&a, &b, dims, spacing).unwrap().unwrap();
        let expected = (9.0f64 + 16.0 + 25.0).sqrt();
        assert!((d.hd_mm - expected).abs() < 1e-5 && (d.hd95_mm - expected).abs() < 1e-5);
        assert_eq!(
            surface_distance(&a, &[false; 24], dims, spacing).unwrap(),
            None
        );
        assert!(surface_distance(&a, &b[..10], dims, spacing).is_err());
    }
}

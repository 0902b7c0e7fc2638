//! Binary erosion and dilation with box structuring elements.
//!
//! A box is separable, so each operation is one running-count pass per axis:
//! O(voxels) whatever the radius.

use super::for_each_line;
use crate::error::Result;
use crate::volume::Volume;

/// Binary erosion with a box of half-widths `radius` voxels along i, j, k
/// (`[1, 1, 0]` = a 3×3 square in each slice). Voxels beyond the volume count
/// as background, as with scipy's default `border_value = 0`, so the mask
/// erodes at the volume border too.
pub fn erode_box(mask: &Volume<bool>, radius: [usize; 3]) -> Result<Volume<bool>> {
    box_filter(mask, radius, true)
}

/// Binary dilation with a box of half-widths `radius` voxels along i, j, k.
pub fn dilate_box(mask: &Volume<bool>, radius: [usize; 3]) -> Result<Volume<bool>> {
    box_filter(mask, radius, false)
}

fn box_filter(mask: &Volume<bool>, radius: [usize; 3], erode: bool) -> Result<Volume<bool>> {
    let dims = mask.dims();
    let mut field: Vec<bool> = mask.as_slice()?.to_vec();
    let longest = dims.iter().copied().max().unwrap_or(1);
    let mut line = vec![false; longest];
    let mut prefix = vec![0usize; longest + 1];
    for (axis, &r) in radius.iter().enumerate() {
        if r == 0 {
            continue;
        }
        for_each_line(dims, axis, |start, stride, len| {
            for q in 0..len {
                line[q] = field[start + q * stride];
                prefix[q + 1] = prefix[q] + usize::from(line[q]);
            }
            for q in 0..len {
                let lo = q.saturating_sub(r);
                let hi = (q + r + 1).min(len);
                let count = prefix[hi] - prefix[lo];
                field[start + q * stride] = if erode {
                    // The whole window, including any part beyond the border,
                    // must be foreground.
                    count == 2 * r + 1
                } else {
                    count > 0
                };
            }
        });
    }
    Volume::from_vec(dims, field, mask.geometry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn brute(mask: &Volume<bool>, r: [usize; 3], erode: bool) -> Vec<bool> {
        let d = mask.dims();
        let mut out = Vec::new();
        for k in 0..d[2] as isize {
            for j in 0..d[1] as isize {
                for i in 0..d[0] as isize {
                    let mut all = true;
                    let mut any = false;
                    for dk in -(r[2] as isize)..=r[2] as isize {
                        for dj in -(r[1] as isize)..=r[1] as isize {
                            for di in -(r[0] as isize)..=r[0] as isize {
                                let (a, b, c) = (i + di, j + dj, k + dk);
                                let inside = a >= 0
                                    && b >= 0
                                    && c >= 0
                                    && a < d[0] as isize
                                    && b < d[1] as isize
                                    && c < d[2] as isize;
                                let v = inside && *mask.at(a as usize, b as usize, c as usize);
                                all &= v;
                                any |= v;
                            }
                        }
                    }
                    out.push(if erode { all } else { any });
                }
            }
        }
        out
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = crate::rng::Rng::new(5);
        let dims = [9, 8, 6];
        let data: Vec<bool> = (0..dims.iter().product())
            .map(|_| rng.uniform() < 0.7)
            .collect();
        let m = Volume::from_vec(dims, data, Geometry::default()).unwrap();
        for r in [[1, 1, 0], [2, 0, 1], [0, 0, 0], [3, 3, 3]] {
            assert_eq!(
                erode_box(&m, r).unwrap().as_slice().unwrap(),
                brute(&m, r, true).as_slice()
            );
            assert_eq!(
                dilate_box(&m, r).unwrap().as_slice().unwrap(),
                brute(&m, r, false).as_slice()
            );
        }
    }
}

//! Bounding boxes and crops that keep the physical placement of voxels.

use crate::error::{Error, Result};
use crate::volume::Volume;
use ndarray::s;

/// A box of voxel indices: `lo` inclusive, `hi` exclusive, axes `[i, j, k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundingBox {
    /// First voxel index along i, j, k.
    pub lo: [usize; 3],
    /// One past the last voxel index along i, j, k.
    pub hi: [usize; 3],
}

impl BoundingBox {
    /// Dims `[ni, nj, nk]` of the box.
    pub fn dims(&self) -> [usize; 3] {
        [
            self.hi[0] - self.lo[0],
            self.hi[1] - self.lo[1],
            self.hi[2] - self.lo[2],
        ]
    }

    /// The box grown by `margin` voxels per axis, clipped to a volume of
    /// dims `volume_dims`.
    pub fn expanded(&self, margin: [usize; 3], volume_dims: [usize; 3]) -> BoundingBox {
        let mut out = *self;
        for a in 0..3 {
            out.lo[a] = self.lo[a].saturating_sub(margin[a]);
            out.hi[a] = (self.hi[a].saturating_add(margin[a])).min(volume_dims[a]);
        }
        out
    }
}

/// The smallest box holding every voxel where `inside` is true; `None` when
/// there is none.
pub fn bounding_box<T>(
    volume: &Volume<T>,
    mut inside: impl FnMut(&T) -> bool,
) -> Option<BoundingBox> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for ((k, j, i), v) in volume.data.indexed_iter() {
        if inside(v) {
            any = true;
            for (a, idx) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(idx);
                hi[a] = hi[a].max(idx + 1);
            }
        }
    }
    any.then_some(BoundingBox { lo, hi })
}

/// The part of `volume` inside `bbox`, with its origin moved so every voxel
/// keeps its world position.
pub fn crop<T: Clone>(volume: &Volume<T>, bbox: &BoundingBox) -> Result<Volume<T>> {
    let dims = volume.dims();
    for a in 0..3 {
        if bbox.lo[a] >= bbox.hi[a] || bbox.hi[a] > dims[a] {
            return Err(Error::invalid(format!(
                "crop box {:?}..{:?} is empty or outside a volume of dims {dims:?}",
                bbox.lo, bbox.hi
            )));
        }
    }
    let data = volume
        .data
        .slice(s![
            bbox.lo[2]..bbox.hi[2],
            bbox.lo[1]..bbox.hi[1],
            bbox.lo[0]..bbox.hi[0]
        ])
        .to_owned();
    let mut geometry = volume.geometry;
    geometry.origin =
        volume
            .geometry
            .index_to_world([bbox.lo[0] as f64, bbox.lo[1] as f64, bbox.lo[2] as f64]);
    Ok(Volume { data, geometry })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn bbox_and_crop_keep_world_positions() {
        let g = Geometry {
            spacing: [1.5, 2.0, 8.0],
            origin: [3.0, -4.0, 10.0],
            ..Geometry::default()
        };
        let mut v = Volume::<u8>::zeros([6, 5, 4], g);
        v.data[[1, 2, 3]] = 1;
        v.data[[2, 3, 4]] = 1;
        let bbox = bounding_box(&v, |x| *x > 0).unwrap();
        assert_eq!(
            bbox,
            BoundingBox {
                lo: [3, 2, 1],
                hi: [5, 4, 3]
            }
        );
        let grown = bbox.expanded([1, 5, 1], v.dims());
        assert_eq!(
            grown,
            BoundingBox {
                lo: [2, 0, 0],
                hi: [6, 5, 4]
            }
        );
        let c = crop(&v, &bbox).unwrap();
        assert_eq!(c.dims(), [2, 2, 2]);
        assert_eq!(*c.at(0, 0, 0), 1);
        assert_eq!(*c.at(1, 1, 1), 1);
        let w_full = v.geometry.index_to_world([3.0, 2.0, 1.0]);
        let w_crop = c.geometry.index_to_world([0.0, 0.0, 0.0]);
        for a in 0..3 {
            assert!((w_full[a] - w_crop[a]).abs() < 1e-12);
        }
        assert!(bounding_box(&v, |x| *x > 5).is_none());
        assert!(crop(
            &v,
            &BoundingBox {
                lo: [0, 0, 0],
                hi: [7, 1, 1]
            }
        )
        .is_err());
    }
}

//! Label maps cut to the box around their labelled voxels.
//!
//! A heart fills a few per cent of a typical field of view, and the label
//! maps clinical software hands over are mostly 0. Widening a whole u8 map
//! to the i32 labels the analysis works on would take 4 bytes per voxel of
//! air; [`CroppedLabels`] widens only the box around the non-zero voxels
//! (plus a margin), in one pass over the caller's voxels, and remembers
//! where the box sits so results can be placed back into the full map.

use super::{checked_voxel_count, Geometry, Image, Volume};
use crate::error::{Error, Result, ResultExt};

/// Voxels kept around the labelled box on each side, along i, j and k. It
/// equals the padding the SMILE grid puts around the myocardium, so a draw
/// sees the same neighbourhood in a crop as in the whole map and gives the
/// same mask.
pub const LABEL_CROP_MARGIN: [usize; 3] = [4, 4, 2];

/// Where a box of voxels sits inside a full map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropPlacement {
    /// Index `[i, j, k]` of the box's first voxel in the full map.
    pub offset: [usize; 3],
    /// Dims of the box.
    pub dims: [usize; 3],
    /// Dims of the full map.
    pub full_dims: [usize; 3],
    /// Geometry of the full map.
    pub full_geometry: Geometry,
}

impl CropPlacement {
    /// The placement of a map in itself (no crop).
    pub fn whole(dims: [usize; 3], geometry: Geometry) -> CropPlacement {
        CropPlacement {
            offset: [0; 3],
            dims,
            full_dims: dims,
            full_geometry: geometry,
        }
    }

    /// True when the box is the whole map.
    pub fn is_whole(&self) -> bool {
        self.dims == self.full_dims
    }

    /// Geometry of the box: the full map's, with the origin moved to the
    /// box's first voxel, so every voxel keeps its world position.
    pub fn geometry(&self) -> Geometry {
        if self.offset == [0; 3] {
            return self.full_geometry;
        }
        let mut geometry = self.full_geometry;
        geometry.origin = self
            .full_geometry
            .index_to_world(self.offset.map(|o| o as f64));
        geometry
    }

    /// Index in the full map of voxel `index` of the box.
    pub fn full_index(&self, index: [usize; 3]) -> [usize; 3] {
        [0, 1, 2].map(|a| index[a] + self.offset[a])
    }

    /// The box's part of `full`, a volume of the full map's dims (another
    /// map of the same heart, e.g. its segments). `what` names it in
    /// errors.
    pub fn crop<T: Clone>(&self, full: &Volume<T>, what: &str) -> Result<Volume<T>> {
        if full.dims() != self.full_dims {
            return Err(Error::invalid(format!(
                "{what}: dims {:?} differ from the label map's {:?}",
                full.dims(),
                self.full_dims
            )));
        }
        let [i0, j0, k0] = self.offset;
        let [ni, nj, nk] = self.dims;
        let part = full
            .data
            .slice(ndarray::s![k0..k0 + nk, j0..j0 + nj, i0..i0 + ni])
            .to_owned();
        Ok(Volume {
            data: part,
            geometry: self.geometry(),
        })
    }

    /// `part` (a volume of the box's dims) placed into a map of the full
    /// dims and geometry that is `T::default()` (0) outside the box. `what`
    /// names it in errors (its allocation is fallible).
    pub fn uncrop<T: Clone + Default>(&self, part: &Volume<T>, what: &str) -> Result<Volume<T>> {
        if part.dims() != self.dims {
            return Err(Error::Internal(format!(
                "{what}: dims {:?} differ from the crop's {:?}",
                part.dims(),
                self.dims
            )));
        }
        let mut full = Volume::try_zeros(self.full_dims, self.full_geometry, what)?;
        let [i0, j0, k0] = self.offset;
        let [ni, nj, nk] = self.dims;
        full.data
            .slice_mut(ndarray::s![k0..k0 + nk, j0..j0 + nj, i0..i0 + ni])
            .assign(&part.data);
        Ok(full)
    }

    /// [`CropPlacement::uncrop`] for an image of any voxel type.
    pub fn uncrop_image(&self, part: &Image, what: &str) -> Result<Image> {
        Ok(match part {
            Image::U8(v) => Image::U8(self.uncrop(v, what)?),
            Image::I16(v) => Image::I16(self.uncrop(v, what)?),
            Image::U16(v) => Image::U16(self.uncrop(v, what)?),
            Image::I32(v) => Image::I32(self.uncrop(v, what)?),
            Image::F32(v) => Image::F32(self.uncrop(v, what)?),
        })
    }
}

/// A label map cut to the box around its non-zero voxels (grown by a
/// margin), as i32 labels, and where that box sits in the full map. Outside
/// the box every voxel is 0, which every label scheme reads as background.
#[derive(Debug, Clone, PartialEq)]
pub struct CroppedLabels {
    /// The labels inside the box; its geometry is
    /// [`CropPlacement::geometry`].
    pub labels: Volume<i32>,
    /// Where the box sits.
    pub placement: CropPlacement,
}

/// A voxel type a label map can come in.
pub trait LabelVoxel: Copy {
    /// True for the value 0 (for floats, ±0).
    fn is_zero(self) -> bool;
    /// The value as a label, or why it is not one.
    fn to_label(self) -> std::result::Result<i32, String>;
}

macro_rules! integer_label_voxel {
    ($t:ty) => {
        impl LabelVoxel for $t {
            fn is_zero(self) -> bool {
                self == 0
            }
            fn to_label(self) -> std::result::Result<i32, String> {
                Ok(i32::from(self))
            }
        }
    };
}
integer_label_voxel!(u8);
integer_label_voxel!(i16);
integer_label_voxel!(u16);
integer_label_voxel!(i32);

impl LabelVoxel for f32 {
    fn is_zero(self) -> bool {
        self == 0.0
    }
    /// Integral within 1e-3, finite, within ±1e9.
    fn to_label(self) -> std::result::Result<i32, String> {
        let x = self;
        let what = if !x.is_finite() {
            "a non-finite value"
        } else if x.abs() > 1e9 {
            "a value beyond ±1e9, out of range for a label,"
        } else if (x - x.round()).abs() > 1e-3 {
            "a non-integral value"
        } else {
            // Within ±1e9, so the cast is exact after rounding.
            return Ok(x.round() as i32);
        };
        Err(format!("{what} {x}"))
    }
}

impl CroppedLabels {
    /// The map `data` (i fastest, `dims`, `geometry`) cut to the box around
    /// its non-zero voxels grown by `margin` (clipped to the map). A map
    /// without non-zero voxels gives its first voxel as the box. Float
    /// labels must be integral (see [`Image::to_labels`]); the error names
    /// the first offending voxel of the full map.
    pub fn from_voxels<T: LabelVoxel>(
        data: &[T],
        dims: [usize; 3],
        geometry: Geometry,
        margin: [usize; 3],
    ) -> Result<CroppedLabels> {
        let labelled = labelled_box(data, dims)?;
        let (lo, hi) = grown_box(labelled, margin, dims);
        CroppedLabels::widen_box(data, dims, geometry, lo, hi)
    }

    /// Two maps of one grid (a prediction and its reference) cut to one
    /// box: the union of their labelled boxes, grown by `margin`. Maps of
    /// different dims are kept whole (whoever compares them reports the
    /// mismatch). Each map comes with the name its errors start with.
    pub fn pair_from_images(
        (a, a_name): (&Image, &str),
        (b, b_name): (&Image, &str),
        margin: [usize; 3],
    ) -> Result<(CroppedLabels, CroppedLabels)> {
        let dims = a.dims();
        if b.dims() != dims {
            return Ok((
                CroppedLabels::whole(a.to_labels().context(a_name)?),
                CroppedLabels::whole(b.to_labels().context(b_name)?),
            ));
        }
        let union = match (image_box(a)?, image_box(b)?) {
            (Some((alo, ahi)), Some((blo, bhi))) => Some((
                [0, 1, 2].map(|x| alo[x].min(blo[x])),
                [0, 1, 2].map(|x| ahi[x].max(bhi[x])),
            )),
            (one, other) => one.or(other),
        };
        let (lo, hi) = grown_box(union, margin, dims);
        Ok((
            CroppedLabels::from_image_box(a, lo, hi).context(a_name)?,
            CroppedLabels::from_image_box(b, lo, hi).context(b_name)?,
        ))
    }

    /// The box `lo..hi` of `data`, widened to i32 labels.
    fn widen_box<T: LabelVoxel>(
        data: &[T],
        dims: [usize; 3],
        geometry: Geometry,
        lo: [usize; 3],
        hi: [usize; 3],
    ) -> Result<CroppedLabels> {
        let [ni, nj, _] = dims;
        let box_dims = [0, 1, 2].map(|a| hi[a] - lo[a]);
        let what = if box_dims == dims {
            "the label map as 32-bit labels"
        } else {
            "the label map's heart region as 32-bit labels"
        };
        let mut labels = crate::limits::try_vec(checked_voxel_count(box_dims)?, what)?;
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                let start = lo[0] + ni * (j + nj * k);
                let row = data.get(start..start + box_dims[0]).unwrap_or_default();
                for (di, v) in row.iter().enumerate() {
                    let label = v.to_label().map_err(|why| {
                        Error::invalid(format!(
                            "label map holds {why} at voxel #{}; expected integer labels",
                            start + di
                        ))
                    })?;
                    labels.push(label);
                }
            }
        }
        let placement = CropPlacement {
            offset: lo,
            dims: box_dims,
            full_dims: dims,
            full_geometry: geometry,
        };
        Ok(CroppedLabels {
            labels: Volume::from_vec(box_dims, labels, placement.geometry())?,
            placement,
        })
    }

    /// Every voxel of `image` as i32 labels ([`Image::to_labels`]).
    pub(super) fn whole_of(image: &Image) -> Result<Volume<i32>> {
        Ok(CroppedLabels::from_image_box(image, [0; 3], image.dims())?.labels)
    }

    fn from_image_box(image: &Image, lo: [usize; 3], hi: [usize; 3]) -> Result<CroppedLabels> {
        let (dims, geometry) = (image.dims(), *image.geometry());
        match image {
            Image::U8(v) => Self::widen_box(v.as_slice()?, dims, geometry, lo, hi),
            Image::I16(v) => Self::widen_box(v.as_slice()?, dims, geometry, lo, hi),
            Image::U16(v) => Self::widen_box(v.as_slice()?, dims, geometry, lo, hi),
            Image::I32(v) => Self::widen_box(v.as_slice()?, dims, geometry, lo, hi),
            Image::F32(v) => Self::widen_box(v.as_slice()?, dims, geometry, lo, hi),
        }
    }

    /// [`CroppedLabels::from_voxels`] of an image.
    pub fn from_image(image: &Image, margin: [usize; 3]) -> Result<CroppedLabels> {
        let (dims, geometry) = (image.dims(), *image.geometry());
        match image {
            Image::U8(v) => Self::from_voxels(v.as_slice()?, dims, geometry, margin),
            Image::I16(v) => Self::from_voxels(v.as_slice()?, dims, geometry, margin),
            Image::U16(v) => Self::from_voxels(v.as_slice()?, dims, geometry, margin),
            Image::I32(v) => Self::from_voxels(v.as_slice()?, dims, geometry, margin),
            Image::F32(v) => Self::from_voxels(v.as_slice()?, dims, geometry, margin),
        }
    }

    /// A whole map, uncut.
    pub fn whole(labels: Volume<i32>) -> CroppedLabels {
        let placement = CropPlacement::whole(labels.dims(), labels.geometry);
        CroppedLabels { labels, placement }
    }
}

/// The box `(lo, hi)` (hi exclusive) of the non-zero voxels of `data`
/// (i fastest, `dims`), or `None` when every voxel is 0.
fn labelled_box<T: LabelVoxel>(
    data: &[T],
    dims: [usize; 3],
) -> Result<Option<([usize; 3], [usize; 3])>> {
    let count = checked_voxel_count(dims)?;
    if data.len() != count {
        return Err(Error::Internal(format!(
            "label map of {dims:?} with {} voxels",
            data.len()
        )));
    }
    let [ni, nj, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (row_index, row) in data.chunks_exact(ni).enumerate() {
        let Some(first) = row.iter().position(|v| !v.is_zero()) else {
            continue;
        };
        let last = row.iter().rposition(|v| !v.is_zero()).unwrap_or(first);
        let (j, k) = (row_index % nj, row_index / nj);
        lo = [lo[0].min(first), lo[1].min(j), lo[2].min(k)];
        hi = [hi[0].max(last + 1), hi[1].max(j + 1), hi[2].max(k + 1)];
    }
    Ok((lo[0] != usize::MAX).then_some((lo, hi)))
}

/// [`labelled_box`] of an image.
fn image_box(image: &Image) -> Result<Option<([usize; 3], [usize; 3])>> {
    let dims = image.dims();
    match image {
        Image::U8(v) => labelled_box(v.as_slice()?, dims),
        Image::I16(v) => labelled_box(v.as_slice()?, dims),
        Image::U16(v) => labelled_box(v.as_slice()?, dims),
        Image::I32(v) => labelled_box(v.as_slice()?, dims),
        Image::F32(v) => labelled_box(v.as_slice()?, dims),
    }
}

/// A labelled box grown by `margin` and clipped to `dims`; the first voxel
/// when nothing is labelled.
fn grown_box(
    labelled: Option<([usize; 3], [usize; 3])>,
    margin: [usize; 3],
    dims: [usize; 3],
) -> ([usize; 3], [usize; 3]) {
    let (mut lo, mut hi) = labelled.unwrap_or(([0; 3], [1; 3]));
    for a in 0..3 {
        lo[a] = lo[a].saturating_sub(margin[a]);
        hi[a] = hi[a].saturating_add(margin[a]).min(dims[a]);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        let mut g = Geometry::with_spacing([1.5, 2.0, 8.0]);
        g.origin = [10.0, -20.0, 30.0];
        g.direction = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        g
    }

    #[test]
    fn crop_keeps_labels_world_positions_and_places_back() {
        let dims = [20, 16, 10];
        let mut map: Volume<u8> = Volume::zeros(dims, geometry());
        map.data[[3, 5, 7]] = 2;
        map.data[[6, 9, 12]] = 1;
        let crop = CroppedLabels::from_image(&Image::U8(map.clone()), [1, 2, 0]).unwrap();
        let p = crop.placement;
        assert_eq!(p.offset, [6, 3, 3]);
        assert_eq!(p.dims, [8, 9, 4]);
        assert!(!p.is_whole());
        assert_eq!(
            crop.labels.geometry.index_to_world([1.0, 2.0, 0.0]),
            geometry().index_to_world([7.0, 5.0, 3.0])
        );
        assert_eq!(*crop.labels.at(1, 2, 0), 2);
        assert_eq!(*crop.labels.at(6, 6, 3), 1);
        let back = p.uncrop(&crop.labels.map(|l| *l as u8), "test").unwrap();
        assert_eq!(back, map);
        assert_eq!(p.crop(&map, "test").unwrap(), crop.labels.map(|l| *l as u8));
        let wrong: Volume<u8> = Volume::zeros([20, 16, 9], geometry());
        assert!(p
            .crop(&wrong, "segments")
            .unwrap_err()
            .to_string()
            .contains("segments"));
    }

    #[test]
    fn margin_is_clipped_and_an_empty_map_gives_one_voxel() {
        let dims = [5, 5, 5];
        let mut map: Volume<i16> = Volume::zeros(dims, geometry());
        map.data[[0, 0, 4]] = -3;
        let crop = CroppedLabels::from_image(&Image::I16(map), [4, 4, 2]).unwrap();
        assert_eq!(crop.placement.offset, [0, 0, 0]);
        assert_eq!(crop.placement.dims, [5, 5, 3]);
        assert_eq!(*crop.labels.at(4, 0, 0), -3);

        let empty: Volume<u16> = Volume::zeros(dims, geometry());
        let crop = CroppedLabels::from_image(&Image::U16(empty), [0; 3]).unwrap();
        assert_eq!(crop.placement.dims, [1, 1, 1]);
        assert_eq!(crop.labels.data.iter().copied().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn float_labels_are_checked_and_named_by_full_voxel_number() {
        let dims = [4, 3, 2];
        let mut map: Volume<f32> = Volume::zeros(dims, geometry());
        map.data[[1, 2, 3]] = 2.0004;
        map.data[[1, 1, 1]] = -0.0;
        let crop = CroppedLabels::from_image(&Image::F32(map.clone()), [0; 3]).unwrap();
        assert_eq!(crop.placement.dims, [1, 1, 1]);
        assert_eq!(*crop.labels.at(0, 0, 0), 2);
        map.data[[1, 0, 2]] = 0.5;
        map.data[[1, 2, 0]] = f32::NAN;
        let err = CroppedLabels::from_image(&Image::F32(map.clone()), [0; 3]).unwrap_err();
        // The first offending voxel in file order: (2, 0, 1) = #14.
        assert!(err
            .to_string()
            .contains("non-integral value 0.5 at voxel #14"));
        // The whole-map conversion names the same voxel.
        assert!(Image::F32(map)
            .to_labels()
            .unwrap_err()
            .to_string()
            .contains("at voxel #14"));
    }

    #[test]
    fn a_pair_shares_the_union_of_its_boxes() {
        let dims = [12, 10, 6];
        let mut a: Volume<u8> = Volume::zeros(dims, geometry());
        let mut b: Volume<f32> = Volume::zeros(dims, geometry());
        a.data[[1, 2, 3]] = 1;
        b.data[[4, 6, 9]] = 2.0;
        let (ca, cb) = CroppedLabels::pair_from_images(
            (&Image::U8(a.clone()), "a"),
            (&Image::F32(b), "b"),
            [1, 1, 0],
        )
        .unwrap();
        assert_eq!(ca.placement, cb.placement);
        assert_eq!(
            (ca.placement.offset, ca.placement.dims),
            ([2, 1, 1], [9, 7, 4])
        );
        assert_eq!(*ca.labels.at(1, 1, 0), 1);
        assert_eq!(*cb.labels.at(7, 5, 3), 2);
        let other: Volume<u8> = Volume::zeros([12, 10, 5], geometry());
        let (wa, wb) = CroppedLabels::pair_from_images(
            (&Image::U8(a), "a"),
            (&Image::U8(other), "b"),
            [1, 1, 0],
        )
        .unwrap();
        assert!(wa.placement.is_whole() && wb.placement.is_whole());
    }

    #[test]
    fn labels_equal_the_whole_map_conversion_inside_the_box() {
        let dims = [9, 7, 5];
        let mut map: Volume<i32> = Volume::zeros(dims, geometry());
        for (n, v) in map.data.iter_mut().enumerate() {
            if n % 7 == 3 && n > 60 && n < 250 {
                *v = (n % 5) as i32 - 2;
            }
        }
        let crop = CroppedLabels::from_image(&Image::I32(map.clone()), [1, 1, 1]).unwrap();
        let p = crop.placement;
        assert_eq!(p.uncrop(&crop.labels, "test").unwrap(), map);
        let whole = CroppedLabels::whole(map.clone());
        assert!(whole.placement.is_whole());
        assert_eq!(whole.labels, map);
    }
}

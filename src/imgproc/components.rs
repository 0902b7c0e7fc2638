//! Connected components of binary masks.

use crate::error::{Error, Result};
use crate::volume::Volume;

/// Which voxels count as neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Connectivity {
    /// 6 neighbours sharing a face (scipy's default structure).
    Face6,
    /// 18 neighbours sharing a face or an edge.
    Edge18,
    /// 26 neighbours sharing a face, edge or corner (scikit-image's default).
    #[default]
    Vertex26,
}

impl Connectivity {
    /// Neighbour offsets `(di, dj, dk)`, in a fixed order.
    pub fn offsets(self) -> Vec<[isize; 3]> {
        let max_nonzero = match self {
            Connectivity::Face6 => 1,
            Connectivity::Edge18 => 2,
            Connectivity::Vertex26 => 3,
        };
        let mut out = Vec::with_capacity(26);
        for dk in -1isize..=1 {
            for dj in -1isize..=1 {
                for di in -1isize..=1 {
                    let nonzero = [di, dj, dk].iter().filter(|d| **d != 0).count();
                    if nonzero > 0 && nonzero <= max_nonzero {
                        out.push([di, dj, dk]);
                    }
                }
            }
        }
        out
    }
}

/// Flat index of the neighbour `offset` away from voxel `(i, j, k)`, or
/// `None` outside the volume.
pub(crate) fn neighbour_index(
    dims: [usize; 3],
    ijk: [usize; 3],
    offset: [isize; 3],
) -> Option<usize> {
    let i = ijk[0]
        .checked_add_signed(offset[0])
        .filter(|v| *v < dims[0])?;
    let j = ijk[1]
        .checked_add_signed(offset[1])
        .filter(|v| *v < dims[1])?;
    let k = ijk[2]
        .checked_add_signed(offset[2])
        .filter(|v| *v < dims[2])?;
    Some(i + dims[0] * (j + dims[1] * k))
}

/// `(i, j, k)` of a flat index in an i-fastest array.
pub(crate) fn unflatten(dims: [usize; 3], n: usize) -> [usize; 3] {
    [
        n % dims[0],
        (n / dims[0]) % dims[1],
        n / (dims[0] * dims[1]),
    ]
}

/// Labelled components of a mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Components {
    /// 0 outside the mask, 1..=n inside; components are numbered in the order
    /// their first voxel appears in i-fastest scan order.
    pub labels: Volume<u32>,
    /// `sizes[l - 1]` = voxel count of component `l`.
    pub sizes: Vec<usize>,
}

impl Components {
    /// Number of components.
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// The label of the largest component (the lowest label on ties), or
    /// `None` for an empty mask.
    pub fn largest(&self) -> Option<u32> {
        let mut best: Option<(usize, u32)> = None;
        for (n, &size) in self.sizes.iter().enumerate() {
            if best.is_none_or(|(s, _)| size > s) {
                best = Some((size, n as u32 + 1));
            }
        }
        best.map(|(_, l)| l)
    }
}

/// Labels the connected components of `mask`.
pub fn label_components(mask: &Volume<bool>, connectivity: Connectivity) -> Result<Components> {
    let dims = mask.dims();
    let flat = mask.as_slice()?;
    if flat.len() > u32::MAX as usize {
        return Err(Error::invalid(
            "component labelling: more voxels than u32 labels can count",
        ));
    }
    let offsets = connectivity.offsets();
    let mut labels = vec![0u32; flat.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..flat.len() {
        if !flat[start] || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        labels[start] = label;
        stack.push(start);
        let mut size = 0usize;
        while let Some(n) = stack.pop() {
            size += 1;
            let ijk = unflatten(dims, n);
            for off in &offsets {
                if let Some(m) = neighbour_index(dims, ijk, *off) {
                    if flat[m] && labels[m] == 0 {
                        labels[m] = label;
                        stack.push(m);
                    }
                }
            }
        }
        sizes.push(size);
    }
    Ok(Components {
        labels: Volume::from_vec(dims, labels, mask.geometry)?,
        sizes,
    })
}

/// The largest connected component of `mask` (lowest label on ties); an
/// all-false mask for an empty one.
pub fn largest_component(mask: &Volume<bool>, connectivity: Connectivity) -> Result<Volume<bool>> {
    let comps = label_components(mask, connectivity)?;
    let keep = comps.largest().unwrap_or(0);
    Ok(comps.labels.map(|l| keep != 0 && *l == keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn mask(dims: [usize; 3], on: &[[usize; 3]]) -> Volume<bool> {
        let mut v = Volume::<bool>::zeros(dims, Geometry::default());
        for p in on {
            v.data[[p[2], p[1], p[0]]] = true;
        }
        v
    }

    #[test]
    fn connectivity_counts() {
        assert_eq!(Connectivity::Face6.offsets().len(), 6);
        assert_eq!(Connectivity::Edge18.offsets().len(), 18);
        assert_eq!(Connectivity::Vertex26.offsets().len(), 26);
    }

    #[test]
    fn diagonal_voxels_join_only_with_enough_connectivity() {
        // (0,0,0)-(1,1,0) share an edge; (1,1,0)-(2,2,1) share a corner; (4,4,3) is alone.
        let m = mask(
            [5, 5, 4],
            &[[0, 0, 0], [1, 1, 0], [2, 2, 1], [4, 4, 3], [4, 3, 3]],
        );
        assert_eq!(
            label_components(&m, Connectivity::Face6).unwrap().count(),
            4
        );
        assert_eq!(
            label_components(&m, Connectivity::Edge18).unwrap().count(),
            3
        );
        let c26 = label_components(&m, Connectivity::Vertex26).unwrap();
        assert_eq!(c26.count(), 2);
        assert_eq!(c26.sizes, vec![3, 2]);
        assert_eq!(*c26.labels.at(2, 2, 1), 1);
        assert_eq!(*c26.labels.at(4, 3, 3), 2);
        let big = largest_component(&m, Connectivity::Vertex26).unwrap();
        assert_eq!(big.data.iter().filter(|b| **b).count(), 3);
        assert!(!*big.at(4, 4, 3));
    }

    #[test]
    fn empty_mask_has_no_components() {
        let m = mask([3, 3, 3], &[]);
        let c = label_components(&m, Connectivity::Vertex26).unwrap();
        assert_eq!(c.count(), 0);
        assert_eq!(c.largest(), None);
        assert!(largest_component(&m, Connectivity::Face6)
            .unwrap()
            .data
            .iter()
            .all(|b| !b));
    }
}

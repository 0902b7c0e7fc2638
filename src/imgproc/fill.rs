//! Hole filling of binary masks.

use super::components::{neighbour_index, unflatten, Connectivity};
use crate::error::Result;
use crate::volume::Volume;

/// `mask` with every background region that does not reach the volume's
/// border switched on. Background connectivity is 6 (faces), as in
/// `scipy.ndimage.binary_fill_holes` with its default structure.
pub fn fill_holes(mask: &Volume<bool>) -> Result<Volume<bool>> {
    let dims = mask.dims();
    let flat = mask.as_slice()?;
    let mut outside = vec![false; flat.len()];
    let mut stack = Vec::new();
    for (n, &on) in flat.iter().enumerate() {
        let [i, j, k] = unflatten(dims, n);
        let on_border =
            i == 0 || j == 0 || k == 0 || i + 1 == dims[0] || j + 1 == dims[1] || k + 1 == dims[2];
        if on_border && !on {
            outside[n] = true;
            stack.push(n);
        }
    }
    let offsets = Connectivity::Face6.offsets();
    while let Some(n) = stack.pop() {
        let ijk = unflatten(dims, n);
        for off in &offsets {
            if let Some(m) = neighbour_index(dims, ijk, *off) {
                if !flat[m] && !outside[m] {
                    outside[m] = true;
                    stack.push(m);
                }
            }
        }
    }
    Volume::from_vec(
        dims,
        outside.into_iter().map(|o| !o).collect(),
        mask.geometry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn fills_enclosed_cavities_only() {
        // A hollow 5×5×5 cube shell inside a 7×7×7 volume, plus an open cup.
        let mut v = Volume::<bool>::zeros([9, 7, 7], Geometry::default());
        for k in 1..6 {
            for j in 1..6 {
                for i in 1..6 {
                    let shell = i == 1 || i == 5 || j == 1 || j == 5 || k == 1 || k == 5;
                    v.data[[k, j, i]] = shell;
                }
            }
        }
        // A tunnel from the cube's cavity to the border would open it: the cup
        // at i = 7 is open at the top (k = 6 is the border).
        for k in 2..7 {
            v.data[[k, 3, 7]] = true;
        }
        let filled = fill_holes(&v).unwrap();
        assert!(*filled.at(3, 3, 3), "cavity filled");
        assert!(*filled.at(2, 2, 2));
        assert!(!*filled.at(0, 0, 0), "outside stays background");
        assert!(!*filled.at(8, 3, 3));
        let added =
            filled.data.iter().filter(|b| **b).count() - v.data.iter().filter(|b| **b).count();
        assert_eq!(added, 27, "exactly the 3×3×3 cavity is added");
    }

    #[test]
    fn background_is_face_connected() {
        // A diamond ring in the middle slice of a 5×5×3 volume with full caps
        // above and below: the centre touches only ring and cap voxels by
        // faces, so it is a hole, although it meets the outside by corners.
        let mut v = Volume::<bool>::zeros([5, 5, 3], Geometry::default());
        for (i, j) in [(2, 1), (1, 2), (3, 2), (2, 3)] {
            v.data[[1, j, i]] = true;
        }
        for k in [0, 2] {
            for j in 1..4 {
                for i in 1..4 {
                    v.data[[k, j, i]] = true;
                }
            }
        }
        let filled = fill_holes(&v).unwrap();
        assert!(*filled.at(2, 2, 1));
        assert!(
            !*filled.at(1, 1, 1),
            "corner voxels reach the border by faces"
        );
    }
}

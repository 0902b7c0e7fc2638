//! Image processing on volumes: distance maps, morphology, components, smoothing.
//!
//! Every filter takes and returns [`Volume`](crate::volume::Volume)s, so
//! geometry is never lost and physical units (mm) come from the spacing:
//! anisotropic, thick-slice stacks are measured correctly.

pub mod components;
pub mod distance;
pub mod fill;
pub mod morphology;
pub mod region;
pub mod resample;
pub mod smooth;

pub use components::{label_components, largest_component, Components, Connectivity};
pub use distance::euclidean_distance_map;
pub use fill::fill_holes;
pub use morphology::{dilate_box, erode_box};
pub use region::{bounding_box, crop, BoundingBox};
pub use resample::{resample_data_or_seg_to_shape, ResampleOrder, ResamplePlan, ResampleSettings};
pub use smooth::{gaussian_smooth_mm, gaussian_smooth_voxels};

use crate::error::{Error, Result};

/// Checks that every spacing is finite and > 0 (the only geometry filters
/// need); `what` names the argument in the error.
pub(crate) fn checked_spacing(spacing: [f64; 3], what: &str) -> Result<[f64; 3]> {
    for (axis, s) in spacing.iter().enumerate() {
        if !s.is_finite() || *s <= 0.0 {
            return Err(Error::invalid(format!(
                "{what}: spacing[{axis}] must be finite and > 0, got {s}"
            )));
        }
    }
    Ok(spacing)
}

/// Flat strides `[1, ni, ni*nj]` of an i-fastest array with dims `[ni, nj, nk]`.
pub(crate) fn strides(dims: [usize; 3]) -> [usize; 3] {
    [1, dims[0], dims[0] * dims[1]]
}

/// Runs `f(line_start, stride, len)` for every line of the array along `axis`.
pub(crate) fn for_each_line(dims: [usize; 3], axis: usize, mut f: impl FnMut(usize, usize, usize)) {
    let st = strides(dims);
    let (a, b) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    for ob in 0..dims[b] {
        for oa in 0..dims[a] {
            f(oa * st[a] + ob * st[b], st[axis], dims[axis]);
        }
    }
}

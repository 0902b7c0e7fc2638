//! nnU-Net's sliding-window sums and the class argmax on host buffers:
//! the reference for `kernels/sliding.cu` (same per-voxel order), used by
//! [`crate::segmentation::sliding`] when a batch of windows runs through
//! the engine's storages.

use crate::backend::desc::{AxisDesc, WindowSumDesc};
use half::f16;
use rayon::prelude::*;

/// The nearest f16 value of `v`, as f32.
#[inline(always)]
pub fn round_half(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `sum` with the windows of `d` added in order (see
/// `BackendStorage::accumulate_windows`): each voxel of a window gets
/// `round_half(sum + prediction · gaussian)`. Shapes were checked by the
/// tensor layer.
pub fn accumulate_windows(
    prediction: &[f32],
    sum: &[f32],
    gaussian: &[f32],
    d: &WindowSumDesc,
) -> Vec<f32> {
    let [grid_z, grid_y, grid_x] = d.grid;
    let [ez, ey, ex] = d.extent;
    let patch = ez * ey * ex;
    let mut out = sum.to_vec();
    if grid_x == 0 {
        return out;
    }
    // One task per row of the sum; within a row the windows go in order,
    // so every voxel sees its additions in the windows' order.
    out.par_chunks_mut(grid_x)
        .enumerate()
        .for_each(|(row, dst)| {
            let c = row / (grid_z * grid_y);
            let (z, y) = ((row / grid_y) % grid_z, row % grid_y);
            for (w, start) in d.starts.iter().enumerate() {
                let inside = |v: usize, s: usize, e: usize| v.checked_sub(s).filter(|&o| o < e);
                let (Some(oz), Some(oy)) = (inside(z, start[0], ez), inside(y, start[1], ey))
                else {
                    continue;
                };
                let offset = (oz * ey + oy) * ex;
                let p = &prediction[(w * d.classes + c) * patch + offset..][..ex];
                let g = &gaussian[offset..offset + ex];
                for ((acc, p), g) in dst[start[2]..start[2] + ex].iter_mut().zip(p).zip(g) {
                    *acc = round_half(*acc + p * g);
                }
            }
        });
    out
}

/// Index of the largest entry along the middle axis of `[outer, size,
/// inner]` (the first on ties; a comparison with NaN is false), as f32.
pub fn argmax(x: &[f32], a: AxisDesc) -> Vec<f32> {
    (0..a.outer * a.inner)
        .into_par_iter()
        .map(|i| {
            let base = (i / a.inner) * a.size * a.inner + i % a.inner;
            let mut best = 0usize;
            let mut best_value = x[base];
            for c in 1..a.size {
                let v = x[base + c * a.inner];
                if v > best_value {
                    best_value = v;
                    best = c;
                }
            }
            best as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two overlapping windows on a 1×3×4 grid: the overlap gets both
    /// additions, each rounded to f16 (2048 + 1 is not an f16; 2048 + 2 is).
    #[test]
    fn overlapping_windows_add_in_order_with_half_rounding() {
        let d = WindowSumDesc {
            classes: 1,
            grid: [1, 3, 4],
            extent: [1, 2, 3],
            starts: vec![[0, 0, 0], [0, 1, 1]],
        };
        let sum = vec![2048.0; 12];
        let ones = vec![1.0; 12];
        let gaussian = vec![1.0, 2.0, 1.0, 1.0, 2.0, 1.0];
        let out = accumulate_windows(&ones, &sum, &gaussian, &d);
        // Window 0 covers rows 0-1, columns 0-2; window 1 rows 1-2, columns 1-3.
        let want = [
            [2048.0, 2050.0, 2048.0, 2048.0],
            [2048.0, 2050.0 + 2.0, 2048.0 + 2.0, 2048.0],
            [2048.0, 2048.0, 2050.0, 2048.0],
        ];
        assert_eq!(out, want.concat());
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        // [outer 1, size 3, inner 4]
        let x = [
            0.0,
            5.0,
            1.0,
            f32::NAN, //
            2.0,
            5.0,
            1.0,
            1.0, //
            1.0,
            4.0,
            3.0,
            2.0,
        ];
        let a = AxisDesc {
            outer: 1,
            size: 3,
            inner: 4,
        };
        assert_eq!(argmax(&x, a), vec![1.0, 0.0, 2.0, 0.0]);
    }
}

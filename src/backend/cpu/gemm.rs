//! Matrix multiplication `C = A·B + beta·C` on strided f32 views.
//!
//! The SIMD micro-kernels are matrixmultiply's (reached through ndarray's
//! safe `general_mat_mul`, so no `unsafe` here); threads come from rayon by
//! splitting C into row or column blocks, whichever dimension is larger.

use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// `c = a·b + beta·c` for `a: [m, k]`, `b: [k, n]`, `c: [m, n]` (any strides).
///
/// Shapes must agree; callers check them (a mismatch is a bug, and ndarray
/// would panic on it).
pub fn gemm(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_FLOPS {
        general_mat_mul(1.0, &a, &b, beta, &mut c);
        return;
    }
    // Two blocks per thread keeps the cores busy when blocks finish unevenly.
    let blocks = 2 * threads;
    if m >= n {
        let rows = m.div_ceil(blocks).next_multiple_of(8).max(8);
        let parts: Vec<_> = a
            .axis_chunks_iter(Axis(0), rows)
            .zip(c.axis_chunks_iter_mut(Axis(0), rows))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(a, mut c)| general_mat_mul(1.0, &a, &b, beta, &mut c));
    } else {
        let cols = n.div_ceil(blocks).next_multiple_of(16).max(16);
        let parts: Vec<_> = b
            .axis_chunks_iter(Axis(1), cols)
            .zip(c.axis_chunks_iter_mut(Axis(1), cols))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(b, mut c)| general_mat_mul(1.0, &a, &b, beta, &mut c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum())
    }

    #[test]
    fn matches_naive_product_in_both_split_directions() {
        let mut rng = crate::rng::Rng::new(3);
        for &(m, k, n) in &[(3, 5, 7), (300, 70, 90), (40, 60, 900)] {
            let a = Array2::from_shape_fn((m, k), |_| rng.normal() as f32);
            let b = Array2::from_shape_fn((k, n), |_| rng.normal() as f32);
            let mut c = Array2::<f32>::ones((m, n));
            gemm(a.view(), b.view(), 1.0, c.view_mut());
            let want = naive(&a, &b) + 1.0;
            let err = (&c - &want).iter().fold(0f32, |e, v| e.max(v.abs()));
            assert!(err < 1e-3, "{m}x{k}x{n}: {err}");
        }
    }
}

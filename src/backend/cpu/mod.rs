//! CPU kernels: f32, contiguous row-major buffers, rayon for threads.
//!
//! Matrix products go through [`gemm`] (matrixmultiply's SIMD kernels via
//! ndarray's safe `general_mat_mul`), split across threads by output blocks.
//! 3×3 stride-1 convolutions on large frames use [`winograd`] (4× fewer
//! multiplies from 32×32 up, 2.25× on mid-sized frames), all other
//! convolutions im2col in [`conv`].

pub mod attention;
pub mod conv;
pub mod conv3d;
pub mod elementwise;
pub mod gemm;
pub mod norm;
pub mod winograd;

/// Seeded standard-normal test data shared by the kernel tests.
#[cfg(test)]
pub(crate) fn random_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

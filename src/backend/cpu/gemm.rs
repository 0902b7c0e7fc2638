//! Matrix multiplication `C = A·B` or `C += A·B` on f32 views of slices.
//!
//! The micro-kernels are faer's, reached through its safe
//! `faer::linalg::matmul::matmul` (no `unsafe` here). On x86-64 faer picks
//! AVX-512 or AVX2/FMA kernels at run time, so one build runs at the full
//! vector width of each CPU; on this project's AVX-512 Xeons that is about
//! twice matrixmultiply's AVX2 throughput on every shape the denoiser uses.
//!
//! Views are faer's [`MatRef`]/[`MatMut`], made from slices by [`view`] and
//! [`view_mut`] (row-major with a row stride; `.transpose()` gives the
//! column-major case). [`matmul`] splits the output into blocks across the
//! rayon threads; [`matmul_seq`] stays on the calling thread (for callers
//! that are themselves parallel tasks). [`gemm`] keeps the ndarray-view
//! entry point for code written against it.

use crate::backend::desc::MatmulDesc;
use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, Par};
pub use faer::{MatMut, MatRef};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// The `rows × cols` row-major matrix starting at `data[offset]`, rows
/// `row_stride` apart. The slice must hold the whole extent (callers size
/// their buffers from the same numbers; a shortfall is a bug and panics).
pub fn view(
    data: &[f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> MatRef<'_, f32> {
    let end = offset + extent(rows, cols, row_stride);
    MatRef::from_row_major_slice_with_stride(&data[offset..end], rows, cols, row_stride.max(cols))
}

/// Mutable counterpart of [`view`].
pub fn view_mut(
    data: &mut [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> MatMut<'_, f32> {
    let end = offset + extent(rows, cols, row_stride);
    // The transpose of the column-major view: faer 0.24's
    // `from_row_major_slice_with_stride_mut` swaps the two strides (it
    // checks the row-major extent but addresses column-major), so it is
    // avoided.
    MatMut::from_column_major_slice_with_stride_mut(
        &mut data[offset..end],
        cols,
        rows,
        row_stride.max(cols),
    )
    .transpose_mut()
}

/// Elements from the first to one past the last of a row-major view.
fn extent(rows: usize, cols: usize, row_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride.max(cols) + cols
    }
}

fn accum(accumulate: bool) -> Accum {
    if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    }
}

/// `c = a·b`, or `c += a·b` when `accumulate`, on the calling thread.
/// Shapes must agree (`a: m×k`, `b: k×n`, `c: m×n`); callers check them, a
/// mismatch is a bug and panics.
pub fn matmul_seq(c: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>, accumulate: bool) {
    faer_matmul(c, accum(accumulate), a, b, 1.0f32, Par::Seq);
}

/// [`matmul_seq`] with the output split into row or column blocks (along
/// the larger dimension) that run as rayon tasks; small products stay on
/// the calling thread.
pub fn matmul(c: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>, accumulate: bool) {
    let (m, n, k) = (c.nrows(), c.ncols(), a.ncols());
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_FLOPS {
        matmul_seq(c, a, b, accumulate);
        return;
    }
    // Two blocks per thread keeps the cores busy when blocks finish unevenly.
    let blocks = 2 * threads;
    if m >= n {
        // Multiples of 8 rows keep the block count at `blocks` for the
        // usual sizes (144 rows in four blocks, not three of 48).
        let rows = m.div_ceil(blocks).next_multiple_of(8).max(8);
        let mut parts = Vec::with_capacity(blocks);
        let (mut a, mut c) = (a, c);
        while c.nrows() > rows {
            let (a0, a1) = a.split_at_row(rows);
            let (c0, c1) = c.split_at_row_mut(rows);
            parts.push((a0, c0));
            (a, c) = (a1, c1);
        }
        parts.push((a, c));
        parts
            .into_par_iter()
            .for_each(|(a, c)| matmul_seq(c, a, b, accumulate));
    } else {
        let cols = n.div_ceil(blocks).next_multiple_of(16).max(16);
        let mut parts = Vec::with_capacity(blocks);
        let (mut b, mut c) = (b, c);
        while c.ncols() > cols {
            let (b0, b1) = b.split_at_col(cols);
            let (c0, c1) = c.split_at_col_mut(cols);
            parts.push((b0, c0));
            (b, c) = (b1, c1);
        }
        parts.push((b, c));
        parts
            .into_par_iter()
            .for_each(|(b, c)| matmul_seq(c, a, b, accumulate));
    }
}

/// A faer view of an ndarray view when its elements are laid out
/// contiguously row- or column-major (the usual case: whole buffers and
/// their transposes); `None` for other strides.
fn faer_of<'a>(x: &ArrayView2<'a, f32>) -> Option<MatRef<'a, f32>> {
    let (rows, cols) = x.dim();
    if x.is_standard_layout() {
        let s = x.to_slice()?;
        Some(MatRef::from_row_major_slice(s, rows, cols))
    } else {
        let t = x.t();
        if t.is_standard_layout() {
            let s = x.to_slice_memory_order()?;
            Some(MatRef::from_column_major_slice(s, rows, cols))
        } else {
            None
        }
    }
}

/// `c = a·b + beta·c` for `a: [m, k]`, `b: [k, n]`, `c: [m, n]` ndarray
/// views with any strides, threaded as [`matmul`].
///
/// Contiguous (row- or column-major) operands are used in place; other
/// strides are copied to a contiguous buffer first. Shapes must agree;
/// callers check them (a mismatch is a bug and panics).
pub fn gemm(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let a_copy;
    let fa = match faer_of(&a) {
        Some(v) => v,
        None => {
            a_copy = a.as_standard_layout().into_owned();
            MatRef::from_row_major_slice(a_copy.as_slice().unwrap_or(&[]), a.nrows(), a.ncols())
        }
    };
    let b_copy;
    let fb = match faer_of(&b) {
        Some(v) => v,
        None => {
            b_copy = b.as_standard_layout().into_owned();
            MatRef::from_row_major_slice(b_copy.as_slice().unwrap_or(&[]), b.nrows(), b.ncols())
        }
    };
    if beta != 0.0 && beta != 1.0 {
        c.mapv_inplace(|v| v * beta);
    }
    let accumulate = beta != 0.0;
    let (m, n) = c.dim();
    let standard = c.is_standard_layout();
    let column_major = !standard && c.t().is_standard_layout();
    match c.as_slice_memory_order_mut() {
        Some(s) if standard => matmul(
            MatMut::from_row_major_slice_mut(s, m, n),
            fa,
            fb,
            accumulate,
        ),
        Some(s) if column_major => matmul(
            MatMut::from_column_major_slice_mut(s, m, n),
            fa,
            fb,
            accumulate,
        ),
        _ => {
            // Strided output: product into a contiguous buffer, then merged.
            let mut tmp = Array2::<f32>::zeros((m, n));
            if let Some(s) = tmp.as_slice_mut() {
                matmul(MatMut::from_row_major_slice_mut(s, m, n), fa, fb, false);
            }
            Zip::from(&mut c).and(&tmp).for_each(|d, &p| {
                *d = if accumulate { *d + p } else { p };
            });
        }
    }
}

/// A `rows × cols` operand stored row-major, or its transpose stored so.
fn operand(data: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, f32> {
    if transposed {
        MatRef::from_row_major_slice(data, cols, rows).transpose()
    } else {
        MatRef::from_row_major_slice(data, rows, cols)
    }
}

/// The batched product of [`MatmulDesc`]: `op(a_z)·op(b_z)` for every item
/// `z`, items in parallel when there are enough of them (each product on
/// its own thread), else one parallel product after another.
pub fn batched_matmul(a: &[f32], b: &[f32], d: &MatmulDesc) -> crate::Result<Vec<f32>> {
    let (len_a, len_b, len_c) = d.item_lens();
    if a.len() != d.batch * len_a || b.len() != d.batch * len_b {
        return Err(crate::Error::invalid(format!(
            "matmul: {} and {} values for {d:?}",
            a.len(),
            b.len()
        )));
    }
    let mut c = vec![0f32; d.batch * len_c];
    if len_c == 0 {
        return Ok(c);
    }
    let item = |z: usize, out: &mut [f32], parallel: bool| {
        let fa = operand(&a[z * len_a..(z + 1) * len_a], d.m, d.k, d.trans_a);
        let fb = operand(&b[z * len_b..(z + 1) * len_b], d.k, d.n, d.trans_b);
        let fc = MatMut::from_row_major_slice_mut(out, d.m, d.n);
        if parallel {
            matmul(fc, fa, fb, false);
        } else {
            matmul_seq(fc, fa, fb, false);
        }
    };
    if d.batch >= rayon::current_num_threads() {
        c.par_chunks_mut(len_c)
            .enumerate()
            .for_each(|(z, out)| item(z, out, false));
    } else {
        for (z, out) in c.chunks_mut(len_c).enumerate() {
            item(z, out, true);
        }
    }
    Ok(c)
}

/// `x·Wᵀ + b` (PyTorch `nn.Linear`): `x` is `rows × n_in`, `w` is
/// `n_out × n_in`, `bias` has `n_out` values; the caller checked the sizes.
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    n_in: usize,
    n_out: usize,
) -> Vec<f32> {
    // Filled with the bias or overwritten by the product.
    let mut out = super::output_buffer(rows * n_out);
    if let Some(b) = bias {
        for row in out.chunks_mut(n_out.max(1)) {
            row.copy_from_slice(b);
        }
    }
    matmul(
        view_mut(&mut out, 0, rows, n_out, n_out),
        view(x, 0, rows, n_in, n_in),
        view(w, 0, n_out, n_in, n_in).transpose(),
        bias.is_some(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn naive(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum())
    }

    fn max_diff(x: &Array2<f32>, y: &Array2<f32>) -> f32 {
        (x - y).iter().fold(0f32, |e, v| e.max(v.abs()))
    }

    fn random(m: usize, n: usize, rng: &mut crate::rng::Rng) -> Array2<f32> {
        Array2::from_shape_fn((m, n), |_| rng.normal() as f32)
    }

    /// Both split directions on two threads, and accumulation.
    #[test]
    fn batched_matmul_matches_the_definition_for_every_transpose() {
        let (batch, m, n, k) = (5, 3, 4, 6);
        let a = crate::backend::cpu::random_normal(batch * m * k, 1);
        let b = crate::backend::cpu::random_normal(batch * k * n, 2);
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let d = MatmulDesc {
                batch,
                m,
                n,
                k,
                trans_a,
                trans_b,
            };
            let c = batched_matmul(&a, &b, &d).unwrap();
            for z in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|l| {
                                let av = if trans_a {
                                    a[z * m * k + l * m + i]
                                } else {
                                    a[z * m * k + i * k + l]
                                };
                                let bv = if trans_b {
                                    b[z * k * n + j * k + l]
                                } else {
                                    b[z * k * n + l * n + j]
                                };
                                f64::from(av) * f64::from(bv)
                            })
                            .sum();
                        let got = c[z * m * n + i * n + j];
                        assert!((f64::from(got) - want).abs() < 1e-5, "{d:?} ({z},{i},{j})");
                    }
                }
            }
        }
        let d = MatmulDesc {
            batch: 2,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
        };
        assert!(batched_matmul(&a, &b, &d).is_err(), "wrong operand sizes");
    }

    #[test]
    fn matmul_matches_naive_product_in_both_split_directions() {
        let mut rng = crate::rng::Rng::new(3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for &(m, k, n) in &[(3, 5, 7), (300, 70, 90), (40, 60, 900), (0, 4, 3)] {
            let a = random(m, k, &mut rng);
            let b = random(k, n, &mut rng);
            let mut c = Array2::<f32>::ones((m, n));
            pool.install(|| {
                matmul(
                    view_mut(c.as_slice_mut().unwrap(), 0, m, n, n),
                    view(a.as_slice().unwrap(), 0, m, k, k),
                    view(b.as_slice().unwrap(), 0, k, n, n),
                    true,
                )
            });
            let err = max_diff(&c, &(naive(&a, &b) + 1.0));
            assert!(err < 1e-3, "{m}x{k}x{n}: {err}");
        }
    }

    /// The ndarray entry point with contiguous, transposed and strided
    /// operands, and a general beta.
    #[test]
    fn gemm_handles_every_layout() {
        let mut rng = crate::rng::Rng::new(4);
        let (m, k, n) = (37, 29, 45);
        let a = random(m, k, &mut rng);
        let at = random(k, m, &mut rng);
        let wide_b = random(k, 2 * n, &mut rng);
        let c0 = random(m, n, &mut rng);
        // Column-major a (a transposed buffer), strided b (every other
        // column), strided c (a column block of a wider matrix).
        let b = wide_b.slice(s![.., ..;2]);
        let want = naive(&at.t().to_owned(), &b.to_owned()) + &c0 * 0.5;
        let mut wide_c = Array2::<f32>::zeros((m, n + 5));
        wide_c.slice_mut(s![.., 5..]).assign(&c0);
        gemm(at.t(), b, 0.5, wide_c.slice_mut(s![.., 5..]));
        assert!(max_diff(&wide_c.slice(s![.., 5..]).to_owned(), &want) < 1e-3);
        // Contiguous operands, column-major output, beta 0 ignores NaN.
        let mut ct = Array2::<f32>::from_elem((n, m), f32::NAN);
        gemm(a.view(), b, 0.0, ct.view_mut().reversed_axes());
        let want = naive(&a, &b.to_owned());
        assert!(max_diff(&ct.t().to_owned(), &want) < 1e-3);
    }
}

//! Fixed-size 3-vector helpers and a symmetric 3×3 eigen-solver, enough for
//! principal axes and line fits in world millimetres.

/// A point or direction in LPS world space (mm).
pub(super) type Vec3 = [f64; 3];

pub(super) fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(super) fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(super) fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(super) fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(super) fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(super) fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// `a / |a|`, or `None` when `a` is (nearly) zero or not finite.
pub(super) fn normalize(a: Vec3) -> Option<Vec3> {
    let n = norm(a);
    (n.is_finite() && n > 1e-12).then(|| scale(a, 1.0 / n))
}

/// The component of `a` perpendicular to the unit vector `axis`.
pub(super) fn reject(a: Vec3, axis: Vec3) -> Vec3 {
    sub(a, scale(axis, dot(a, axis)))
}

/// Running mean and scatter (second central moments) of weighted points.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Moments {
    weight: f64,
    sum: Vec3,
    /// Σ w·x·xᵀ about the first point seen (`shift`), for numerical stability.
    outer: [[f64; 3]; 3],
    shift: Option<Vec3>,
}

impl Moments {
    pub(super) fn add(&mut self, p: Vec3, w: f64) {
        let shift = *self.shift.get_or_insert(p);
        let d = sub(p, shift);
        self.weight += w;
        for r in 0..3 {
            self.sum[r] += w * d[r];
            for c in 0..3 {
                self.outer[r][c] += w * d[r] * d[c];
            }
        }
    }

    pub(super) fn weight(&self) -> f64 {
        self.weight
    }

    /// Weighted centroid (`None` without weight).
    pub(super) fn mean(&self) -> Option<Vec3> {
        let shift = self.shift?;
        (self.weight > 0.0).then(|| add(shift, scale(self.sum, 1.0 / self.weight)))
    }

    /// Weighted covariance matrix (mm²).
    pub(super) fn covariance(&self) -> Option<[[f64; 3]; 3]> {
        if self.weight <= 0.0 {
            return None;
        }
        let m = scale(self.sum, 1.0 / self.weight);
        let mut cov = [[0.0; 3]; 3];
        for (r, row) in cov.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.outer[r][c] / self.weight - m[r] * m[c];
            }
        }
        Some(cov)
    }
}

/// Eigenvalues (descending) and unit eigenvectors of a symmetric 3×3 matrix,
/// by cyclic Jacobi rotations (exact to rounding for 3×3 in a few sweeps).
pub(super) fn symmetric_eigen(m: [[f64; 3]; 3]) -> ([f64; 3], [Vec3; 3]) {
    let mut a = m;
    // Columns of v are the eigenvectors.
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..50 {
        let off = a[0][1].abs() + a[0][2].abs() + a[1][2].abs();
        let diag = a[0][0].abs() + a[1][1].abs() + a[2][2].abs();
        if off <= 1e-15 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            if a[p][q].abs() < f64::MIN_POSITIVE {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // a ← Jᵀ a J with the Givens rotation J in the (p, q) plane.
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (row_p, row_q) = (a[p], a[q]);
            a[p] = std::array::from_fn(|k| c * row_p[k] - s * row_q[k]);
            a[q] = std::array::from_fn(|k| s * row_p[k] + c * row_q[k]);
            for row in v.iter_mut() {
                let vp = row[p];
                let vq = row[q];
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&x, &y| a[y][y].total_cmp(&a[x][x]));
    let values = order.map(|c| a[c][c]);
    let vectors = order.map(|c| [v[0][c], v[1][c], v[2][c]]);
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_recovers_a_rotated_diagonal_matrix() {
        // R · diag(9, 4, 1) · Rᵀ with R a rotation about (1, 1, 1).
        let axis = normalize([1.0, 1.0, 1.0]).unwrap();
        let (s, c) = 0.7f64.sin_cos();
        let k = [
            [0.0, -axis[2], axis[1]],
            [axis[2], 0.0, -axis[0]],
            [-axis[1], axis[0], 0.0],
        ];
        let mut r = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                let kk: f64 = (0..3).map(|l| k[i][l] * k[l][j]).sum();
                r[i][j] = f64::from(u8::from(i == j)) + s * k[i][j] + (1.0 - c) * kk;
            }
        }
        let d = [9.0, 4.0, 1.0];
        let mut m = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = (0..3).map(|l| r[i][l] * d[l] * r[j][l]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(m);
        for n in 0..3 {
            assert!((values[n] - d[n]).abs() < 1e-10, "{values:?}");
            let col = [r[0][n], r[1][n], r[2][n]];
            assert!((dot(vectors[n], col).abs() - 1.0).abs() < 1e-10);
        }
    }

    #[test]
    fn moments_give_mean_and_covariance() {
        let mut m = Moments::default();
        for p in [
            [1.0, 0.0, 0.0],
            [-1.0, 0.0, 0.0],
            [0.0, 2.0, 5.0],
            [0.0, -2.0, 5.0],
        ] {
            m.add(p, 1.0);
        }
        let mean = m.mean().unwrap();
        assert!((mean[2] - 2.5).abs() < 1e-12 && mean[0].abs() < 1e-12);
        let cov = m.covariance().unwrap();
        assert!((cov[0][0] - 0.5).abs() < 1e-12);
        assert!((cov[1][1] - 2.0).abs() < 1e-12);
        assert!((cov[2][2] - 6.25).abs() < 1e-12);
    }
}

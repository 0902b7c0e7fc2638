//! Physical geometry of a voxel grid, in LPS millimetres as ITK defines it.

use crate::error::{Error, Result};

/// Where a voxel grid sits in the patient: spacing, origin and direction, LPS.
///
/// World point of voxel index `(i, j, k)` is
/// `origin + direction · diag(spacing) · (i, j, k)`, exactly as in ITK.
/// `direction` is row-major; its **columns** are the unit vectors of the
/// i, j and k voxel axes in LPS space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Voxel size along i, j, k in millimetres (all > 0).
    pub spacing: [f64; 3],
    /// LPS position (mm) of the centre of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Row-major 3×3; column c is the LPS unit vector of voxel axis c.
    pub direction: [[f64; 3]; 3],
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::with_spacing([1.0, 1.0, 1.0])
    }
}

/// Tolerance for orthonormality checks of direction matrices.
const ORTHO_TOL: f64 = 1e-4;

impl Geometry {
    /// Identity direction, zero origin, the given spacing.
    pub fn with_spacing(spacing: [f64; 3]) -> Self {
        Geometry {
            spacing,
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    /// Checks that spacing is finite and positive, origin finite and direction
    /// finite and orthonormal. `what` names the argument in the error.
    pub fn validate(&self, what: &str) -> Result<()> {
        for (axis, s) in self.spacing.iter().enumerate() {
            if !s.is_finite() || *s <= 0.0 {
                return Err(Error::invalid(format!(
                    "{what}: spacing[{axis}] must be finite and > 0, got {s}"
                )));
            }
        }
        if let Some(o) = self.origin.iter().find(|o| !o.is_finite()) {
            return Err(Error::invalid(format!(
                "{what}: origin must be finite, got {o}"
            )));
        }
        if self.direction.iter().flatten().any(|d| !d.is_finite()) {
            return Err(Error::invalid(format!(
                "{what}: direction must be finite, got {:?}",
                self.direction
            )));
        }
        if !is_orthonormal(&self.direction) {
            return Err(Error::invalid(format!(
                "{what}: direction must be orthonormal (columns unit length and perpendicular), got {:?}",
                self.direction
            )));
        }
        Ok(())
    }

    /// The LPS unit vector of voxel axis `axis` (0 = i, 1 = j, 2 = k).
    pub fn axis_direction(&self, axis: usize) -> [f64; 3] {
        [
            self.direction[0][axis],
            self.direction[1][axis],
            self.direction[2][axis],
        ]
    }

    /// World (LPS, mm) position of a continuous voxel index.
    pub fn index_to_world(&self, index: [f64; 3]) -> [f64; 3] {
        let mut out = self.origin;
        for (row, o) in out.iter_mut().enumerate() {
            for (axis, idx) in index.iter().enumerate() {
                *o += self.direction[row][axis] * self.spacing[axis] * idx;
            }
        }
        out
    }

    /// Continuous voxel index of a world (LPS, mm) point. Uses the transpose
    /// of the direction matrix as its inverse, which holds for the
    /// orthonormal directions [`Geometry::validate`] accepts.
    pub fn world_to_index(&self, world: [f64; 3]) -> [f64; 3] {
        let d = [
            world[0] - self.origin[0],
            world[1] - self.origin[1],
            world[2] - self.origin[2],
        ];
        let mut out = [0.0; 3];
        for (axis, o) in out.iter_mut().enumerate() {
            let dot: f64 = (0..3).map(|row| self.direction[row][axis] * d[row]).sum();
            *o = dot / self.spacing[axis];
        }
        out
    }

    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing.iter().product()
    }

    /// Three-letter ITK-style orientation code (e.g. `"RAI"` for an identity
    /// direction in LPS): for each voxel axis, the anatomical direction it
    /// points *from* (ITK's convention, as 3D Slicer shows it).
    pub fn orientation_code(&self) -> String {
        // ITK names the direction an axis comes *from*: +x (towards L) is "R".
        const FROM: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['I', 'S']];
        (0..3)
            .map(|axis| {
                let v = self.axis_direction(axis);
                let (dominant, comp) =
                    v.iter().enumerate().fold((0usize, 0.0f64), |best, (r, c)| {
                        if c.abs() > best.1.abs() {
                            (r, *c)
                        } else {
                            best
                        }
                    });
                FROM[dominant][usize::from(comp < 0.0)]
            })
            .collect()
    }

    /// The first field in which `self` and `other` differ by more than
    /// `tol`, as text naming it and both values (`None` when they agree as
    /// [`Geometry::approx_eq`] says).
    pub fn difference(&self, other: &Geometry, tol: f64) -> Option<String> {
        let far = |a: &[f64], b: &[f64]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > tol);
        if far(&self.spacing, &other.spacing) {
            return Some(format!("spacing {:?} vs {:?}", self.spacing, other.spacing));
        }
        if far(&self.origin, &other.origin) {
            return Some(format!("origin {:?} vs {:?}", self.origin, other.origin));
        }
        if far(
            self.direction.as_flattened(),
            other.direction.as_flattened(),
        ) {
            return Some(format!(
                "direction {:?} vs {:?}",
                self.direction, other.direction
            ));
        }
        None
    }

    /// True when `self` and `other` agree within `tol` (mm for origin and
    /// spacing, unitless for direction).
    pub fn approx_eq(&self, other: &Geometry, tol: f64) -> bool {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol);
        close(&self.spacing, &other.spacing)
            && close(&self.origin, &other.origin)
            && close(
                self.direction.as_flattened(),
                other.direction.as_flattened(),
            )
    }
}

/// True when the columns of `m` are unit length and mutually perpendicular.
pub(crate) fn is_orthonormal(m: &[[f64; 3]; 3]) -> bool {
    for a in 0..3 {
        for b in a..3 {
            let dot: f64 = (0..3).map(|r| m[r][a] * m[r][b]).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            if (dot - want).abs() > ORTHO_TOL {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let (s, c) = (0.5f64.sin(), 0.5f64.cos());
        Geometry {
            spacing: [1.25, 1.5, 8.0],
            origin: [-10.0, 20.0, 5.5],
            direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn world_index_round_trip() {
        let g = oblique();
        let idx = [3.0, 7.5, 2.0];
        let w = g.index_to_world(idx);
        let back = g.world_to_index(w);
        for a in 0..3 {
            assert!((back[a] - idx[a]).abs() < 1e-12);
        }
        g.validate("g").unwrap();
    }

    #[test]
    fn validate_rejects_bad_geometry() {
        let mut g = oblique();
        g.spacing[1] = f64::NAN;
        assert!(g
            .validate("g")
            .unwrap_err()
            .to_string()
            .contains("spacing[1]"));
        let mut g = oblique();
        g.direction[0][0] = 2.0;
        assert!(g.validate("g").is_err());
        let mut g = oblique();
        g.spacing[2] = 0.0;
        assert!(g.validate("g").is_err());
    }

    #[test]
    fn orientation_codes_follow_itk() {
        assert_eq!(Geometry::default().orientation_code(), "RAI");
        let mut g = Geometry::default();
        g.direction[1][1] = -1.0;
        assert_eq!(g.orientation_code(), "RPI");
    }
}

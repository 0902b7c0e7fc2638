//! NIfTI qform/sform ⇄ [`Geometry`], following ITK's `NiftiImageIO`
//! (see `shared/reference/nifti.md`).
//!
//! NIfTI stores RAS coordinates, claim (like ITK) LPS: the first two rows of
//! the direction and the first two origin components change sign.

use super::header::NiftiHeader;
use crate::error::{Error, Result};
use crate::volume::{is_orthonormal, Geometry};

/// How far (mm) sform column lengths may stray from pixdim before the reader
/// warns; ITK's threshold, since NIfTI floats carry little precision.
const SFORM_SCALE_TOLERANCE: f64 = 1e-3;
/// ITK's tolerance for "sform and qform agree" (direction, offsets, scales).
const AGREEMENT_TOLERANCE: f64 = 1e-4;

/// Which header transform the reader took orientation and origin from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometrySource {
    /// The sform (`srow_x/y/z`).
    Sform,
    /// The qform (quaternion and `qoffset`).
    Qform,
    /// Neither code set: identity direction and zero origin, as ITK does.
    Default,
}

/// The geometry a header describes, where it came from and what looked wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedGeometry {
    /// Spacing from `pixdim`, direction and origin in LPS.
    pub geometry: Geometry,
    /// The transform used.
    pub source: GeometrySource,
    /// Non-fatal findings (e.g. sform scale disagreeing with pixdim).
    pub warnings: Vec<String>,
}

/// Rotation, offset and qfac as stored in a qform, plus the sform rows, all RAS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct NiftiTransforms {
    /// Quaternion `b, c, d`.
    pub quatern: [f64; 3],
    /// `pixdim[0]`: -1 for a left-handed voxel grid, else 1.
    pub qfac: f64,
    /// RAS origin.
    pub offset: [f64; 3],
    /// `srow_x/y/z`: RAS direction × spacing, then the origin.
    pub srow: [[f64; 4]; 3],
}

/// The rotation a qform quaternion describes, third column times `qfac`.
/// As in `nifti1_io`, `a = sqrt(1 − b² − c² − d²)`; when `b, c, d` are (by
/// rounding) a unit vector or longer, they are normalised and `a = 0`.
/// `None` for non-finite input.
pub(super) fn quaternion_to_rotation(quatern: [f64; 3], qfac: f64) -> Option<[[f64; 3]; 3]> {
    let [mut b, mut c, mut d] = quatern;
    let norm2 = b * b + c * c + d * d;
    if !norm2.is_finite() {
        return None;
    }
    let a = if 1.0 - norm2 < 1e-7 {
        let inv = 1.0 / norm2.sqrt();
        b *= inv;
        c *= inv;
        d *= inv;
        0.0
    } else {
        (1.0 - norm2).sqrt()
    };
    let q = if qfac < 0.0 { -1.0 } else { 1.0 };
    Some([
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            q * 2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            q * 2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            q * (a * a + d * d - b * b - c * c),
        ],
    ])
}

/// Quaternion `(b, c, d)` of a proper rotation matrix, with `a ≥ 0` (NIfTI
/// stores only `b, c, d` and derives `a`). Branches on the largest diagonal
/// term so no division is by a small number.
pub(super) fn rotation_to_quaternion(r: &[[f64; 3]; 3]) -> [f64; 3] {
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d) = if trace > 0.0 {
        let s = 2.0 * (trace + 1.0).sqrt(); // 4a
        (
            0.25 * s,
            (r[2][1] - r[1][2]) / s,
            (r[0][2] - r[2][0]) / s,
            (r[1][0] - r[0][1]) / s,
        )
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = 2.0 * (1.0 + r[0][0] - r[1][1] - r[2][2]).max(0.0).sqrt(); // 4b
        (
            (r[2][1] - r[1][2]) / s,
            0.25 * s,
            (r[0][1] + r[1][0]) / s,
            (r[0][2] + r[2][0]) / s,
        )
    } else if r[1][1] > r[2][2] {
        let s = 2.0 * (1.0 + r[1][1] - r[0][0] - r[2][2]).max(0.0).sqrt(); // 4c
        (
            (r[0][2] - r[2][0]) / s,
            (r[0][1] + r[1][0]) / s,
            0.25 * s,
            (r[1][2] + r[2][1]) / s,
        )
    } else {
        let s = 2.0 * (1.0 + r[2][2] - r[0][0] - r[1][1]).max(0.0).sqrt(); // 4d
        (
            (r[1][0] - r[0][1]) / s,
            (r[0][2] + r[2][0]) / s,
            (r[1][2] + r[2][1]) / s,
            0.25 * s,
        )
    };
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    let q = [sign * b, sign * c, sign * d];
    // A direction that passed `Geometry::validate` cannot produce a zero
    // divisor; guard anyway so a degenerate matrix yields identity, not NaN.
    if q.iter().all(|x| x.is_finite()) {
        q
    } else {
        [0.0; 3]
    }
}

fn determinant(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// RAS ⇄ LPS: negate the first two rows (the map is its own inverse).
fn flip_xy_rows(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    [m[0].map(|v| -v), m[1].map(|v| -v), m[2]]
}

fn flip_xy(v: [f64; 3]) -> [f64; 3] {
    [-v[0], -v[1], v[2]]
}

/// The header fields that place a voxel grid with `geometry` (LPS) in RAS
/// space, as ITK writes them: qfac −1 and a negated third column for a
/// left-handed direction, sform = direction × spacing.
pub(super) fn transforms_for(geometry: &Geometry) -> NiftiTransforms {
    let ras = flip_xy_rows(geometry.direction);
    let qfac = if determinant(&ras) < 0.0 { -1.0 } else { 1.0 };
    let mut proper = ras;
    for row in proper.iter_mut() {
        row[2] *= qfac;
    }
    let offset = flip_xy(geometry.origin);
    let mut srow = [[0.0; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for c in 0..3 {
            row[c] = ras[r][c] * geometry.spacing[c];
        }
        row[3] = offset[r];
    }
    NiftiTransforms {
        quatern: rotation_to_quaternion(&proper),
        qfac,
        offset,
        srow,
    }
}

impl NiftiHeader {
    /// Voxel spacing `|pixdim[1..=3]|` (always from pixdim, never from the
    /// sform, as ITK does). A non-finite value is a `Format` error; a zero is
    /// an error too, except on an axis of length 1 (such as the unused third
    /// axis of a 2-D image), where the spacing cannot matter and 1 mm is used.
    pub fn spacing(&self, name: &str) -> Result<[f64; 3]> {
        let mut spacing = [1.0; 3];
        for (axis, s) in spacing.iter_mut().enumerate() {
            let p = self.pixdim[axis + 1];
            let len = if (axis as i64) < self.dim[0] {
                self.dim[axis + 1]
            } else {
                1
            };
            if !p.is_finite() {
                return Err(Error::format(format!(
                    "{name}: pixdim[{}] = {p}; voxel spacing must be finite",
                    axis + 1
                )));
            }
            if p != 0.0 {
                *s = p.abs();
            } else if len != 1 {
                return Err(Error::format(format!(
                    "{name}: pixdim[{}] = 0 along an axis of {len} voxels; voxel spacing must be > 0",
                    axis + 1
                )));
            }
        }
        Ok(spacing)
    }

    /// The geometry the qform describes (LPS, spacing from pixdim), or `None`
    /// when `qform_code` is 0. Non-finite quaternion or offset: `Format` error.
    pub fn qform_geometry(&self, name: &str) -> Result<Option<Geometry>> {
        if self.qform_code <= 0 {
            return Ok(None);
        }
        let spacing = self.spacing(name)?;
        if self
            .quatern
            .iter()
            .chain(&self.qoffset)
            .any(|v| !v.is_finite())
        {
            return Err(Error::format(format!(
                "{name}: qform (code {}) holds a non-finite value: quatern_b/c/d = {:?}, \
                 qoffset_x/y/z = {:?}",
                self.qform_code, self.quatern, self.qoffset
            )));
        }
        let rotation = quaternion_to_rotation(self.quatern, self.pixdim[0]).ok_or_else(|| {
            Error::format(format!(
                "{name}: qform quaternion {:?} cannot be normalised",
                self.quatern
            ))
        })?;
        Ok(Some(Geometry {
            spacing,
            origin: flip_xy(self.qoffset),
            direction: flip_xy_rows(rotation),
        }))
    }

    /// The geometry the sform describes (LPS; direction = sform columns
    /// divided by their lengths; spacing from pixdim), with the column
    /// lengths, or `None` when `sform_code` is 0. The direction may be
    /// non-orthonormal (shear); a zero column gives a zero direction column.
    /// Non-finite sform: `Format` error.
    pub fn sform_geometry(&self, name: &str) -> Result<Option<(Geometry, [f64; 3])>> {
        if self.sform_code <= 0 {
            return Ok(None);
        }
        let spacing = self.spacing(name)?;
        if self.srow.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::format(format!(
                "{name}: sform (code {}) holds a non-finite value: srow = {:?}",
                self.sform_code, self.srow
            )));
        }
        let mut direction = [[0.0; 3]; 3];
        let mut lengths = [0.0; 3];
        for (c, len) in lengths.iter_mut().enumerate() {
            *len = (0..3)
                .map(|r| self.srow[r][c] * self.srow[r][c])
                .sum::<f64>()
                .sqrt();
            if *len > 0.0 && len.is_finite() {
                for (r, row) in direction.iter_mut().enumerate() {
                    row[c] = self.srow[r][c] / *len;
                }
            }
        }
        let origin = flip_xy([self.srow[0][3], self.srow[1][3], self.srow[2][3]]);
        Ok(Some((
            Geometry {
                spacing,
                origin,
                direction: flip_xy_rows(direction),
            },
            lengths,
        )))
    }

    /// The image geometry chosen the way ITK chooses it:
    ///
    /// 1. spacing from `|pixdim[1..=3]|`;
    /// 2. the sform when it is orthonormal (after removing its column
    ///    scaling) and the qform code is 0, or the sform code is 1
    ///    (SCANNER_ANAT), or sform and qform agree within 1e-4;
    /// 3. else the qform, when its code is set;
    /// 4. both codes 0: identity direction, zero origin (ITK's fallback);
    /// 5. else a `Format` error.
    ///
    /// Warns when sform column lengths differ from pixdim by more than
    /// 1e-3 mm (the EMIDEC files' unscaled sform) and when a set sform is
    /// passed over.
    pub fn resolve_geometry(&self, name: &str) -> Result<ResolvedGeometry> {
        let spacing = self.spacing(name)?;
        let qform = self.qform_geometry(name)?;
        let sform = self.sform_geometry(name)?;
        let mut warnings = Vec::new();

        let mut sform_usable = false;
        if let Some((s, lengths)) = &sform {
            if lengths
                .iter()
                .zip(&spacing)
                .any(|(len, sp)| (len - sp).abs() > SFORM_SCALE_TOLERANCE)
            {
                warnings.push(format!(
                    "{name}: sform column lengths {lengths:?} differ from pixdim spacing \
                     {spacing:?}; spacing is taken from pixdim (as ITK does)"
                ));
            }
            sform_usable = is_orthonormal(&s.direction);
            if !sform_usable {
                warnings.push(format!(
                    "{name}: sform (code {}) is not a rotation after removing its scaling \
                     (shear or zero column); it is ignored",
                    self.sform_code
                ));
            }
        }

        if let (true, Some((s, lengths))) = (sform_usable, &sform) {
            let prefer_sform = match &qform {
                None => true,
                Some(_) if self.sform_code == super::header::XFORM_SCANNER_ANAT => true,
                Some(q) => {
                    let scales_agree = lengths
                        .iter()
                        .zip(&q.spacing)
                        .all(|(a, b)| (a - b).abs() <= AGREEMENT_TOLERANCE);
                    scales_agree && s.approx_eq(q, AGREEMENT_TOLERANCE)
                }
            };
            if prefer_sform {
                return Ok(ResolvedGeometry {
                    geometry: *s,
                    source: GeometrySource::Sform,
                    warnings,
                });
            }
            warnings.push(format!(
                "{name}: sform (code {}) and qform (code {}) disagree; using the qform, as ITK does",
                self.sform_code, self.qform_code
            ));
        }
        if let Some(q) = qform {
            return Ok(ResolvedGeometry {
                geometry: q,
                source: GeometrySource::Qform,
                warnings,
            });
        }
        if sform.is_none() {
            warnings.push(format!(
                "{name}: qform_code and sform_code are both 0; assuming identity direction and \
                 zero origin (ITK's fallback)"
            ));
            return Ok(ResolvedGeometry {
                geometry: Geometry::with_spacing(spacing),
                source: GeometrySource::Default,
                warnings,
            });
        }
        Err(Error::format(format!(
            "{name}: no usable orientation: the sform (code {}) is not orthonormal and the qform \
             code is {}",
            self.sform_code, self.qform_code
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Rotation by `angle` about the unit `axis` (Rodrigues).
    fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
        let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
        let [x, y, z] = axis.map(|v| v / n);
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    }

    fn max_diff(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> f64 {
        a.as_flattened()
            .iter()
            .zip(b.as_flattened())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn quaternion_round_trips_every_branch() {
        let mut rng = Rng::new(7);
        // Random rotations plus 180° turns, which take the non-trace branches.
        let mut cases: Vec<[[f64; 3]; 3]> = (0..200)
            .map(|_| {
                let axis = [rng.normal(), rng.normal(), rng.normal()];
                rotation(axis, rng.uniform_range(-3.1, 3.1))
            })
            .collect();
        for axis in [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 2.0, -0.5],
        ] {
            cases.push(rotation(axis, std::f64::consts::PI));
        }
        for r in cases {
            let q = rotation_to_quaternion(&r);
            let back = quaternion_to_rotation(q, 1.0).unwrap();
            assert!(max_diff(&r, &back) < 1e-12, "{r:?} → {q:?} → {back:?}");
        }
    }

    #[test]
    fn qfac_negates_the_third_column() {
        let r = quaternion_to_rotation([0.0, 0.0, 0.0], -1.0).unwrap();
        assert_eq!(r, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]);
        // NaN qfac is treated as +1, like any non-negative value.
        let r = quaternion_to_rotation([0.0, 0.0, 0.0], f64::NAN).unwrap();
        assert_eq!(r[2][2], 1.0);
        assert!(quaternion_to_rotation([f64::INFINITY, 0.0, 0.0], 1.0).is_none());
        assert!(quaternion_to_rotation([1e200, 0.0, 0.0], 1.0).is_none());
    }

    #[test]
    fn overlong_quaternion_is_normalised() {
        let r = quaternion_to_rotation([0.0, 2.0, 0.0], 1.0).unwrap();
        assert!(max_diff(&r, &[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]) < 1e-15);
    }

    #[test]
    fn left_handed_directions_get_qfac_minus_one() {
        let mut g = Geometry::with_spacing([1.0, 2.0, 3.0]);
        g.direction = rotation([0.3, -0.4, 0.8], 0.7);
        for row in g.direction.iter_mut() {
            row[1] = -row[1];
        }
        let t = transforms_for(&g);
        assert_eq!(t.qfac, -1.0);
        let r = flip_xy_rows(quaternion_to_rotation(t.quatern, t.qfac).unwrap());
        assert!(max_diff(&r, &g.direction) < 1e-12);
        g.direction = rotation([0.3, -0.4, 0.8], 0.7);
        assert_eq!(transforms_for(&g).qfac, 1.0);
    }
}

//! The phantom's anatomy: a seeded heart and chest, defined in world (LPS)
//! millimetres, independent of the voxel grid that later samples it.
//!
//! The left ventricle is a pair of nested half-prolate spheroids (epicardium
//! and endocardium) sharing the long axis; their radii are modulated by a few
//! low angular harmonics so contours are slightly elliptical and irregular.
//! The right ventricle is an ellipse in every short-axis plane that passes
//! through the two insertion points on the LV epicardium, so its blood pool
//! is a crescent wrapping the septum. The chest around it is a handful of
//! elliptic cylinders and an ellipsoid (torso, lungs, liver, spine, aorta).

use crate::rng::Rng;
use std::f64::consts::PI;

/// What a point of the phantom is made of. Decides both the label and the
/// LGE intensity of a voxel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Material {
    /// Outside the body.
    Air,
    /// Lung parenchyma (almost no signal).
    Lung,
    /// Chest wall, mediastinum: generic soft tissue.
    SoftTissue,
    /// Liver.
    Liver,
    /// Vertebral body.
    Bone,
    /// Descending aorta.
    AorticBlood,
    /// Epicardial / pericardial fat.
    Fat,
    /// Healthy LV myocardium (nulled by the inversion time).
    Myocardium,
    /// RV free wall (healthy muscle, not labelled).
    RvWall,
    /// LV blood pool.
    LvBlood,
    /// RV blood pool.
    RvBlood,
    /// Enhanced infarct.
    Scar,
    /// Microvascular obstruction: the dark no-reflow core of a scar.
    Mvo,
}

/// An orthonormal right-handed frame attached to the heart, in LPS.
///
/// `lateral × anterior = apexward`. Seen from the apex (looking along
/// `-apexward`), `anterior` points up and `lateral` to the right, so the
/// septum and the RV are on the left: the AHA bull's-eye convention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeartFrame {
    /// Epicardial apex tip, LPS mm.
    pub apex: [f64; 3],
    /// Unit vector of the long axis, from base towards apex (points
    /// anterior, left and inferior in a real chest).
    pub apexward: [f64; 3],
    /// Unit vector in the short-axis plane towards the free (lateral) wall:
    /// the patient's left projected onto the short-axis plane.
    pub lateral: [f64; 3],
    /// Unit vector in the short-axis plane towards the anterior wall.
    pub anterior: [f64; 3],
}

/// A point in heart coordinates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeartPoint {
    /// Distance from the epicardial apex towards the base along the long axis, mm.
    pub s: f64,
    /// Distance from the long axis, mm.
    pub rho: f64,
    /// Angle around the long axis, radians: 0 towards the septum (patient
    /// right), +π/2 anterior, −π/2 inferior, ±π lateral.
    pub theta: f64,
}

impl HeartFrame {
    /// Builds the frame from the long-axis direction (unit, base → apex).
    fn new(apex: [f64; 3], apexward: [f64; 3]) -> HeartFrame {
        // The septum faces the patient's right (−x in LPS): project it onto
        // the short-axis plane; the lateral wall is the opposite direction.
        let right = [-1.0, 0.0, 0.0];
        let along = dot(right, apexward);
        let septal = normalize(sub(right, scale(apexward, along)));
        let lateral = scale(septal, -1.0);
        let anterior = cross(apexward, lateral);
        HeartFrame {
            apex,
            apexward,
            lateral,
            anterior,
        }
    }

    /// Heart coordinates of a world point.
    pub fn locate(&self, world: [f64; 3]) -> HeartPoint {
        let d = sub(world, self.apex);
        let s = -dot(d, self.apexward);
        let septal = -dot(d, self.lateral);
        let anterior = dot(d, self.anterior);
        HeartPoint {
            s,
            rho: septal.hypot(anterior),
            theta: anterior.atan2(septal),
        }
    }

    /// World position of heart coordinates (s, septal offset, anterior offset).
    pub fn world(&self, s: f64, septal: f64, anterior: f64) -> [f64; 3] {
        let mut p = self.apex;
        for (axis, value) in p.iter_mut().enumerate() {
            *value += -s * self.apexward[axis] - septal * self.lateral[axis]
                + anterior * self.anterior[axis];
        }
        p
    }
}

/// Seeded shape of the left ventricle.
#[derive(Debug, Clone)]
struct LeftVentricle {
    /// Apex-to-mitral-plane length along the long axis, mm.
    length: f64,
    /// Long-axis position where the spheroids reach full width, mm from the apex.
    equator: f64,
    /// Endocardial radius at the equator, mm.
    endo_radius: f64,
    /// Mean wall thickness at the equator, mm.
    wall: f64,
    /// Myocardium between the epicardial and endocardial apex tips, mm.
    apex_wall: f64,
    /// Relative wall-thickness variation around the circumference.
    wall_variation: f64,
    wall_phase: f64,
    /// Elliptical flattening of both contours.
    ellipticity: f64,
    ellipticity_phase: f64,
    /// Amplitudes and phases of angular harmonics 3, 4, 5 (contour irregularity);
    /// the phase twists with s so neighbouring slices differ.
    harmonics: [(f64, f64, f64); 3],
}

/// Seeded shape of the right ventricle.
#[derive(Debug, Clone)]
struct RightVentricle {
    /// Angle of the crescent's axis (radians, 0 = towards the patient's right).
    axis_angle: f64,
    /// Half the angle between the two insertion points, radians.
    insertion_half_angle: f64,
    /// Largest blood-pool thickness of the crescent (at the base), mm.
    thickness: f64,
    /// The RV does not reach the LV apex: it starts at this s, mm.
    start: f64,
    /// Free-wall thickness, mm.
    wall: f64,
}

/// Seeded infarct in the LAD territory (anterior / anteroseptal wall).
#[derive(Debug, Clone)]
struct Infarct {
    /// Centre angle, radians (between anteroseptal and anterior).
    centre_angle: f64,
    /// Half width at the endocardium, radians.
    half_width: f64,
    /// Long-axis centre and half length, mm.
    centre_s: f64,
    half_length: f64,
    /// Transmurality at the centre (> 1: transmural with margin for an MVO core).
    peak_transmurality: f64,
    /// Border irregularity: amplitude and phases of a smooth ripple.
    ripple: f64,
    ripple_phase: [f64; 2],
}

/// A seeded heart in a seeded chest.
#[derive(Debug, Clone)]
pub(crate) struct Anatomy {
    pub frame: HeartFrame,
    lv: LeftVentricle,
    rv: RightVentricle,
    infarct: Option<Infarct>,
    /// Epicardial fat layer thickness, mm.
    fat: f64,
}

/// Transmurality above which the core of a scar turns into MVO.
const MVO_TRANSMURALITY: f64 = 1.12;
/// MVO occupies this band of wall depth (0 = endocardium, 1 = epicardium):
/// sub-endocardial, but with enhanced scar on both sides.
const MVO_DEPTH: (f64, f64) = (0.22, 0.62);

impl Anatomy {
    /// Draws a heart from `rng`. Ranges are those of adult hearts at end-diastole.
    pub fn draw(rng: &mut Rng, with_scar: bool) -> Anatomy {
        let deg = PI / 180.0;
        // Long axis: about 45° left of the sagittal plane and 25° below the
        // axial plane, pointing anterior, left and inferior.
        let azimuth = rng.uniform_range(35.0, 55.0) * deg;
        let elevation = rng.uniform_range(15.0, 35.0) * deg;
        let apexward = [
            elevation.cos() * azimuth.sin(),
            -elevation.cos() * azimuth.cos(),
            -elevation.sin(),
        ];
        let length = rng.uniform_range(86.0, 94.0);
        // Mitral-plane centre near the middle of the chest, slightly jittered.
        let base_centre = [
            rng.uniform_range(-6.0, 6.0),
            rng.uniform_range(0.0, 10.0),
            rng.uniform_range(5.0, 15.0),
        ];
        let apex = [
            base_centre[0] + length * apexward[0],
            base_centre[1] + length * apexward[1],
            base_centre[2] + length * apexward[2],
        ];
        let frame = HeartFrame::new(apex, apexward);

        let mut harmonics = [(0.0, 0.0, 0.0); 3];
        for h in &mut harmonics {
            *h = (
                rng.uniform_range(0.0, 0.012),
                rng.uniform_range(0.0, 2.0 * PI),
                rng.uniform_range(-1.5, 1.5),
            );
        }
        let lv = LeftVentricle {
            length,
            equator: length * rng.uniform_range(0.8, 0.9),
            endo_radius: rng.uniform_range(22.0, 26.0),
            wall: rng.uniform_range(8.0, 9.5),
            apex_wall: rng.uniform_range(7.0, 9.0),
            wall_variation: rng.uniform_range(0.0, 0.1),
            wall_phase: rng.uniform_range(0.0, 2.0 * PI),
            ellipticity: rng.uniform_range(0.02, 0.06),
            ellipticity_phase: rng.uniform_range(0.0, PI),
            harmonics,
        };
        let rv = RightVentricle {
            axis_angle: rng.uniform_range(-12.0, 0.0) * deg,
            insertion_half_angle: rng.uniform_range(55.0, 65.0) * deg,
            thickness: rng.uniform_range(22.0, 30.0),
            start: length * rng.uniform_range(0.18, 0.28),
            wall: rng.uniform_range(2.5, 3.5),
        };
        // Draw the infarct even without scar so the rest of the stream (and so
        // the anatomy) does not depend on `with_scar`.
        let infarct = Infarct {
            centre_angle: rng.uniform_range(30.0, 80.0) * deg,
            half_width: rng.uniform_range(45.0, 70.0) * deg,
            centre_s: length * rng.uniform_range(0.35, 0.5),
            half_length: length * rng.uniform_range(0.26, 0.36),
            peak_transmurality: rng.uniform_range(1.3, 1.6),
            ripple: rng.uniform_range(0.05, 0.15),
            ripple_phase: [
                rng.uniform_range(0.0, 2.0 * PI),
                rng.uniform_range(0.0, 2.0 * PI),
            ],
        };
        Anatomy {
            frame,
            lv,
            rv,
            infarct: with_scar.then_some(infarct),
            fat: rng.uniform_range(1.5, 3.0),
        }
    }

    /// Long-axis length of the LV (epicardial apex to mitral plane), mm.
    pub fn lv_length(&self) -> f64 {
        self.lv.length
    }

    /// Long-axis extent of the apex cap (myocardium beyond the cavity), mm.
    pub fn apex_wall(&self) -> f64 {
        self.lv.apex_wall
    }

    /// Shape modulation of both LV contours at angle θ and long-axis position s.
    fn contour_factor(&self, theta: f64, s: f64) -> f64 {
        let lv = &self.lv;
        let mut m = 1.0 + lv.ellipticity * (2.0 * (theta - lv.ellipticity_phase)).cos();
        for (n, (amplitude, phase, twist)) in lv.harmonics.iter().enumerate() {
            let order = (n + 3) as f64;
            m += amplitude * (order * theta + phase + twist * s / lv.length).cos();
        }
        m
    }

    /// Endocardial and epicardial radii at (θ, s); the endocardial radius is
    /// 0 where the cavity has ended (apex cap) and both are 0 beyond the LV.
    fn lv_radii(&self, theta: f64, s: f64) -> (f64, f64) {
        let lv = &self.lv;
        if !(0.0..=lv.length).contains(&s) {
            return (0.0, 0.0);
        }
        let m = self.contour_factor(theta, s);
        let thickness = lv.wall * (1.0 + lv.wall_variation * (theta - lv.wall_phase).cos());
        let epi = (lv.endo_radius + thickness) * m * spheroid_profile(s / lv.equator);
        let endo =
            lv.endo_radius * m * spheroid_profile((s - lv.apex_wall) / (lv.equator - lv.apex_wall));
        (endo, epi)
    }

    /// Unmodulated epicardial radius at s (the RV is fitted to it).
    fn mean_epi_radius(&self, s: f64) -> f64 {
        (self.lv.endo_radius + self.lv.wall) * spheroid_profile(s / self.lv.equator)
    }

    /// The RV ellipse in the short-axis plane at s, in coordinates along its
    /// axis: `(centre, semi-axis along, semi-axis across)`, or None where the
    /// RV has not started.
    ///
    /// The across semi-axis is a little wider than the chord between the
    /// insertion points; passing through both insertion points on the (mean)
    /// LV epicardium, at ±`insertion_half_angle` from the axis, and reaching
    /// `thickness(s)` beyond the septum then fix the centre and the along
    /// semi-axis.
    fn rv_ellipse(&self, s: f64) -> Option<(f64, f64, f64)> {
        let rv = &self.rv;
        if s < rv.start || s > self.lv.length {
            return None;
        }
        let growth = ((s - rv.start) / (self.lv.length - rv.start)).clamp(0.0, 1.0);
        let thickness = rv.thickness * growth.sqrt();
        if thickness < 1.0 {
            return None;
        }
        let r = self.mean_epi_radius(s);
        let (sin_a, cos_a) = rv.insertion_half_angle.sin_cos();
        // Across semi-axis a little wider than the insertion chord, so the
        // crescent hugs the LV instead of ballooning sideways.
        const WIDENING: f64 = 1.15;
        let across = WIDENING * r * sin_a;
        let q = (1.0 - 1.0 / (WIDENING * WIDENING)).sqrt();
        let centre = (r * cos_a + q * (r + thickness)) / (1.0 + q);
        let along = r + thickness - centre;
        Some((centre, along, across))
    }

    /// The material at a world point.
    pub fn material_at(&self, world: [f64; 3]) -> Material {
        let hp = self.frame.locate(world);
        let (endo, epi) = self.lv_radii(hp.theta, hp.s);
        if hp.rho < epi {
            if hp.rho < endo {
                return Material::LvBlood;
            }
            return self.myocardium_at(hp, endo, epi);
        }
        if let Some((centre, along, across)) = self.rv_ellipse(hp.s) {
            let angle = hp.theta - self.rv.axis_angle;
            let x = hp.rho * angle.cos();
            let y = hp.rho * angle.sin();
            let inside = |a: f64, b: f64| ((x - centre) / a).powi(2) + (y / b).powi(2) < 1.0;
            if inside(along, across) {
                return Material::RvBlood;
            }
            if inside(along + self.rv.wall, across + self.rv.wall) {
                return Material::RvWall;
            }
            if inside(
                along + self.rv.wall + self.fat,
                across + self.rv.wall + self.fat,
            ) {
                return Material::Fat;
            }
        }
        if epi > 0.0 && hp.rho < epi + self.fat {
            return Material::Fat;
        }
        chest_material_at(world)
    }

    /// Healthy myocardium, scar or MVO at a point of the LV wall.
    fn myocardium_at(&self, hp: HeartPoint, endo: f64, epi: f64) -> Material {
        let Some(infarct) = &self.infarct else {
            return Material::Myocardium;
        };
        // No depth without a cavity: the apex cap stays healthy.
        if endo <= 0.0 {
            return Material::Myocardium;
        }
        let depth = (hp.rho - endo) / (epi - endo);
        let angular = wrap_angle(hp.theta - infarct.centre_angle) / infarct.half_width;
        let longitudinal = (hp.s - infarct.centre_s) / infarct.half_length;
        let bump = cosine_bump(angular) * cosine_bump(longitudinal);
        if bump <= 0.0 {
            return Material::Myocardium;
        }
        // Irregular border: three lobes around the LV, one slow wave (≈ 70 mm)
        // along it.
        let ripple = infarct.ripple
            * (3.0 * hp.theta + infarct.ripple_phase[0]).sin()
            * (hp.s / 11.0 + infarct.ripple_phase[1]).cos();
        // Wavefront: the infarct grows from the endocardium outwards, so the
        // lesion reaches a depth that falls off from the centre of the territory.
        let transmurality = infarct.peak_transmurality * bump + ripple * bump.sqrt();
        if transmurality < 0.08 || depth > transmurality {
            return Material::Myocardium;
        }
        if transmurality > MVO_TRANSMURALITY && (MVO_DEPTH.0..=MVO_DEPTH.1).contains(&depth) {
            return Material::Mvo;
        }
        Material::Scar
    }

    /// World position of the LV long axis at s (centre of the short-axis slice).
    pub fn axis_point(&self, s: f64) -> [f64; 3] {
        self.frame.world(s, 0.0, 0.0)
    }
}

/// The chest around the heart. Cylinders run along the body axis (z), so
/// the oblique short-axis planes cut them as ellipses.
fn chest_material_at(p: [f64; 3]) -> Material {
    let in_cylinder = |cx: f64, cy: f64, ax: f64, ay: f64| {
        ((p[0] - cx) / ax).powi(2) + ((p[1] - cy) / ay).powi(2) < 1.0
    };
    if !in_cylinder(0.0, 30.0, 165.0, 118.0) {
        return Material::Air;
    }
    if in_cylinder(0.0, 108.0, 22.0, 20.0) {
        return Material::Bone;
    }
    if in_cylinder(22.0, 80.0, 12.0, 12.0) {
        return Material::AorticBlood;
    }
    // Liver: under the right hemidiaphragm, reaching the apical slices.
    let liver = ((p[0] + 45.0) / 105.0).powi(2)
        + ((p[1] - 25.0) / 85.0).powi(2)
        + ((p[2] + 100.0) / 62.0).powi(2);
    if liver < 1.0 {
        return Material::Liver;
    }
    if in_cylinder(-88.0, 35.0, 60.0, 85.0) || in_cylinder(98.0, 45.0, 52.0, 78.0) {
        return Material::Lung;
    }
    Material::SoftTissue
}

/// Radius profile of a half-prolate spheroid: 0 at u = 0 (tip), rising to 1
/// at u = 1 (equator) and staying 1 beyond; 0 for u < 0.
fn spheroid_profile(u: f64) -> f64 {
    if u <= 0.0 {
        0.0
    } else if u >= 1.0 {
        1.0
    } else {
        (1.0 - (1.0 - u) * (1.0 - u)).sqrt()
    }
}

/// cos(πx/2) on |x| < 1, else 0: a round bump with compact support.
fn cosine_bump(x: f64) -> f64 {
    if x.abs() >= 1.0 {
        0.0
    } else {
        (0.5 * PI * x).cos()
    }
}

/// An angle wrapped into (−π, π].
fn wrap_angle(a: f64) -> f64 {
    let wrapped = (a + PI).rem_euclid(2.0 * PI) - PI;
    if wrapped <= -PI {
        wrapped + 2.0 * PI
    } else {
        wrapped
    }
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn scale(a: [f64; 3], f: f64) -> [f64; 3] {
    [a[0] * f, a[1] * f, a[2] * f]
}

fn normalize(a: [f64; 3]) -> [f64; 3] {
    scale(a, 1.0 / dot(a, a).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_frame_is_right_handed_and_anatomical() {
        let mut rng = Rng::new(3);
        let anatomy = Anatomy::draw(&mut rng, false);
        let f = anatomy.frame;
        let c = cross(f.lateral, f.anterior);
        for (got, want) in c.iter().zip(f.apexward) {
            assert!((got - want).abs() < 1e-12);
        }
        // Apex points left, anterior, inferior; lateral wall to the patient's
        // left; anterior wall towards the front of the chest.
        assert!(f.apexward[0] > 0.0 && f.apexward[1] < 0.0 && f.apexward[2] < 0.0);
        assert!(f.lateral[0] > 0.5);
        assert!(f.anterior[1] < 0.0);
    }

    #[test]
    fn locate_inverts_world() {
        let mut rng = Rng::new(9);
        let f = Anatomy::draw(&mut rng, false).frame;
        let p = f.world(40.0, 10.0, -5.0);
        let hp = f.locate(p);
        assert!((hp.s - 40.0).abs() < 1e-9);
        assert!((hp.rho - 125f64.sqrt()).abs() < 1e-9);
        assert!((hp.theta - (-5f64).atan2(10.0)).abs() < 1e-12);
    }

    #[test]
    fn rv_ellipse_meets_the_insertion_points() {
        let mut rng = Rng::new(5);
        let anatomy = Anatomy::draw(&mut rng, false);
        let s = anatomy.lv_length() * 0.6;
        let (centre, along, across) = anatomy.rv_ellipse(s).unwrap();
        let r = anatomy.mean_epi_radius(s);
        let a = anatomy.rv.insertion_half_angle;
        let on = ((r * a.cos() - centre) / along).powi(2) + ((r * a.sin()) / across).powi(2);
        assert!(
            (on - 1.0).abs() < 1e-9,
            "insertion point off the ellipse: {on}"
        );
        assert!(centre + along > r + 10.0, "crescent too thin");
    }

    #[test]
    fn angles_wrap() {
        assert!((wrap_angle(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-12);
        assert!((wrap_angle(-PI) - PI).abs() < 1e-12);
        assert!((wrap_angle(0.25) - 0.25).abs() < 1e-12);
    }
}

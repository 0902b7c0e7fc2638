//! Parcellation of synthetic LVs whose AHA segments are known analytically.

use super::*;
use crate::volume::Geometry;
use levels::MIN_CUE_RESULTANT;
use linalg::Vec3;

/// A half-ellipsoidal LV (cavity and myocardium, open base) with an RV
/// crescent on the septum, placed in the world by its apex → base axis.
struct SyntheticHeart {
    /// Centre of the base (LPS, mm).
    base: Vec3,
    /// Apex → base unit vector.
    axis: Vec3,
    /// Anterior (frame reference) and septal in-plane unit vectors.
    anterior: Vec3,
    septal: Vec3,
    cavity_radius: f64,
    cavity_length: f64,
    wall: f64,
    apex_wall: f64,
}

const CAVITY: i32 = 1;
const MYO: i32 = 2;
const RV: i32 = 5;

impl SyntheticHeart {
    fn new(base: Vec3, axis: Vec3) -> Self {
        let axis = normalize(axis).unwrap();
        let frame = Frame::new(axis);
        SyntheticHeart {
            base,
            axis,
            anterior: frame.reference,
            septal: frame.left,
            cavity_radius: 22.0,
            cavity_length: 60.0,
            wall: 9.0,
            apex_wall: 10.0,
        }
    }

    /// The same heart turned about its long axis by `degrees`,
    /// counter-clockwise as seen from the apex (from anterior towards the
    /// septum).
    fn turned(mut self, degrees: f64) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        let (a, e) = (self.anterior, self.septal);
        self.anterior = add(scale(a, c), scale(e, s));
        self.septal = sub(scale(e, c), scale(a, s));
        self
    }

    /// Axial (≤ 0 inside, base at 0), anterior and septal coordinates.
    fn local(&self, p: Vec3) -> (f64, f64, f64) {
        let d = sub(p, self.base);
        (
            dot(d, self.axis),
            dot(d, self.anterior),
            dot(d, self.septal),
        )
    }

    fn inside(z: f64, r: f64, radius: f64, length: f64) -> bool {
        z <= 0.0 && (r / radius).powi(2) + (z / length).powi(2) <= 1.0
    }

    /// Label at world point `p`; the RV (if `with_rv`) touches the septum
    /// between 30° and 150° from anterior, so its insertion points sit where
    /// the nominal sectors put them.
    fn label(&self, p: Vec3, with_rv: bool) -> i32 {
        let (z, x, y) = self.local(p);
        let r = x.hypot(y);
        let (re, he) = (
            self.cavity_radius + self.wall,
            self.cavity_length + self.apex_wall,
        );
        if Self::inside(z, r, self.cavity_radius, self.cavity_length) {
            return CAVITY;
        }
        if Self::inside(z, r, re, he) {
            return MYO;
        }
        let angle = y.atan2(x).to_degrees();
        if with_rv && (30.0..150.0).contains(&angle) && z > -0.7 * he && z <= 0.0 && r < re + 14.0 {
            return RV;
        }
        0
    }

    /// The AHA segment of a myocardium voxel at `p`: standard sectors
    /// centred on anterior, except that with the RV the apical septum (14)
    /// is its contact arc, 30°–150°, and 13 and 16 are 90° clockwise from it.
    fn expected_segment(&self, p: Vec3, with_rv: bool) -> u8 {
        let (z, x, y) = self.local(p);
        // The cavity ends where its cross-section is 10 % of the base's.
        let tip = -self.cavity_length * 0.9f64.sqrt();
        let height = (z - tip) / -tip;
        let from_anterior = y.atan2(x).to_degrees().rem_euclid(360.0);
        if height < 0.0 {
            17
        } else if height < 1.0 / 3.0 && with_rv {
            match from_anterior {
                a if (30.0..150.0).contains(&a) => 14,
                a if (150.0..210.0).contains(&a) => 15,
                a if (210.0..300.0).contains(&a) => 16,
                _ => 13,
            }
        } else if height < 1.0 / 3.0 {
            [13, 14, 15, 16][((from_anterior + 45.0).rem_euclid(360.0) / 90.0) as usize % 4]
        } else {
            let ring = if height < 2.0 / 3.0 { 6 } else { 0 };
            [1, 2, 3, 4, 5, 6][((from_anterior + 30.0).rem_euclid(360.0) / 60.0) as usize % 6]
                + ring
        }
    }

    /// Voxelises the heart on `geometry` with `dims`.
    fn render(&self, dims: [usize; 3], geometry: Geometry, with_rv: bool) -> Volume<i32> {
        let mut v = Volume::zeros(dims, geometry);
        for ((k, j, i), l) in v.data.indexed_iter_mut() {
            *l = self.label(
                geometry.index_to_world([i as f64, j as f64, k as f64]),
                with_rv,
            );
        }
        v
    }
}

/// A grid of `dims` and `spacing` with `direction`, centred on `centre`.
fn grid(dims: [usize; 3], spacing: [f64; 3], direction: [[f64; 3]; 3], centre: Vec3) -> Geometry {
    let mut g = Geometry {
        spacing,
        origin: [0.0; 3],
        direction,
    };
    let half = g.index_to_world(dims.map(|d| (d as f64 - 1.0) / 2.0));
    g.origin = sub(centre, half);
    g
}

/// Rotation about unit `u` by `degrees` (Rodrigues).
fn rotation(u: Vec3, degrees: f64) -> [[f64; 3]; 3] {
    let u = normalize(u).unwrap();
    let (s, c) = degrees.to_radians().sin_cos();
    let k = [[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]];
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let kk: f64 = (0..3).map(|l| k[i][l] * k[l][j]).sum();
            f64::from(u8::from(i == j)) + s * k[i][j] + (1.0 - c) * kk
        })
    })
}

const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// A usual LV orientation: the base lies right, posterior and superior of
/// the apex (LPS −x, +y, +z).
const ANATOMICAL_AXIS: Vec3 = [-0.55, 0.35, 0.75];

fn heart() -> SyntheticHeart {
    SyntheticHeart::new([10.0, -5.0, 20.0], ANATOMICAL_AXIS)
}

/// The heart's middle, where grids are centred.
fn heart_centre(h: &SyntheticHeart) -> Vec3 {
    add(h.base, scale(h.axis, -35.0))
}

fn scheme(with_rv: bool) -> AhaParams {
    AhaParams {
        labels: if with_rv {
            LabelScheme::EMIDEC_WITH_RV
        } else {
            LabelScheme::EMIDEC
        },
        ..AhaParams::default()
    }
}

/// Fraction of myocardium voxels whose segment is the analytic one, after
/// checking that exactly the myocardium is labelled.
fn agreement(h: &SyntheticHeart, labels: &Volume<i32>, result: &AhaParcellation) -> f64 {
    let with_rv = labels.data.iter().any(|&l| l == RV);
    let mut same = 0usize;
    let mut total = 0usize;
    for ((k, j, i), &l) in labels.data.indexed_iter() {
        let s = *result.segments.at(i, j, k);
        if l == MYO {
            assert!(
                (1..=17).contains(&s),
                "myocardium voxel ({i},{j},{k}) has segment {s}"
            );
            total += 1;
            let p = labels
                .geometry
                .index_to_world([i as f64, j as f64, k as f64]);
            same += usize::from(s == h.expected_segment(p, with_rv));
        } else {
            assert_eq!(s, 0, "voxel ({i},{j},{k}) with label {l} got segment {s}");
        }
    }
    let fraction = same as f64 / total as f64;
    println!(
        "{} myocardium voxels, {fraction:.4} in the expected segment",
        total
    );
    fraction
}

#[test]
fn oblique_lv_with_rv_gets_the_expected_segments() {
    let h = heart();
    let labels = h.render(
        [72, 72, 48],
        grid([72, 72, 48], [1.5, 1.5, 2.0], IDENTITY, heart_centre(&h)),
        true,
    );
    let result = parcellate(&labels, &scheme(true)).unwrap();
    assert!(result.used_rv);
    assert!(
        dot(result.long_axis, h.axis) > 0.995,
        "axis {:?}",
        result.long_axis
    );
    let fraction = agreement(&h, &labels, &result);
    assert!(fraction > 0.93, "agreement {fraction}");
    // Segment 17 is the closed end: beyond the cavity tip.
    let tip = -h.cavity_length * 0.9f64.sqrt();
    for v in result.voxels.iter().filter(|v| v.segment == 17) {
        let p = labels.geometry.index_to_world(v.index.map(|x| x as f64));
        assert!(
            h.local(p).0 < tip + 2.5,
            "apex-cap voxel at {:?}",
            h.local(p)
        );
    }
    assert!(result.voxels.iter().any(|v| v.segment == 17));
    assert!(result.levels.iter().any(|l| l.rv_measured));
    let (apex_z, _, _) = h.local(result.apex);
    assert!(
        (apex_z + h.cavity_length + h.apex_wall).abs() < 3.0,
        "apex at {apex_z}"
    );
}

/// The septum angle (degrees in `Frame::new(axis)`) that best fits the AHA
/// wall names to the body axes, by exhaustive search in 0.05° steps: the
/// in-plane rotation maximising the summed agreement of the septum with the
/// patient's right, of the anterior wall (90° clockwise of the septum, seen
/// from the apex) with the front and of the inferior wall (90°
/// counter-clockwise) with the feet. Also returns how strongly the fit
/// prefers it: half the spread of the summed agreement over all angles.
fn best_fitting_septum(axis: Vec3) -> (f64, f64) {
    let frame = Frame::new(axis);
    let in_plane = |deg: f64| {
        let (s, c) = deg.to_radians().sin_cos();
        add(scale(frame.reference, c), scale(frame.left, s))
    };
    let fit = |septum: f64| {
        dot(in_plane(septum), [-1.0, 0.0, 0.0])
            + dot(in_plane(septum - 90.0), [0.0, -1.0, 0.0])
            + dot(in_plane(septum + 90.0), [0.0, 0.0, -1.0])
    };
    let angles = (0..7200).map(|n| n as f64 * 0.05);
    let best = angles
        .clone()
        .max_by(|a, b| fit(*a).total_cmp(&fit(*b)))
        .unwrap();
    let worst = angles.map(fit).fold(f64::INFINITY, f64::min);
    (best, 0.5 * (fit(best) - worst))
}

fn best_fitting_septum_deg(axis: Vec3) -> f64 {
    best_fitting_septum(axis).0
}

/// Smallest difference of two angles, degrees.
fn angle_between(a: f64, b: f64) -> f64 {
    (a - b + 180.0).rem_euclid(360.0) - 180.0
}

#[test]
fn septum_prior_fits_the_wall_names_to_the_body_axes() {
    // Heart-aligned (long axis along the body's, base superior): the
    // septum faces the patient's right, 90° counter-clockwise of anterior.
    let aligned = Frame::new([0.0, 0.0, 1.0]);
    assert!((aligned.septum_from_patient_orientation_deg() - 90.0).abs() < 1e-9);
    // A usual heart: the cues disagree and the closed form is the best fit.
    let usual = Frame::new(normalize(ANATOMICAL_AXIS).unwrap());
    let prior = usual.septum_from_patient_orientation_deg();
    assert!(
        angle_between(prior, best_fitting_septum_deg(usual.axis)).abs() < 0.05,
        "{prior}"
    );
    // Within the arc of the three single-cue septa: the projected right,
    // 90° counter-clockwise of the projected anterior (the old rule) and
    // 90° clockwise of the projected inferior.
    let cues = [
        usual.angle_deg([-1.0, 0.0, 0.0]),
        90.0,
        usual.angle_deg([0.0, 0.0, -1.0]) - 90.0,
    ];
    let lowest = cues.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = cues.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(
        highest - lowest < 90.0 && lowest < prior && prior < highest,
        "cues {cues:?} prior {prior}"
    );
    // Any long axis (seeded): the closed form is the best fit wherever the
    // cues agree enough; where they nearly cancel (the base far anterior
    // or inferior of the apex) the septum is 90° from anterior.
    let mut rng = crate::rng::Rng::new(17);
    let (mut fitted, mut fallen_back) = (0, 0);
    for _ in 0..60 {
        let axis = normalize([rng.normal(), rng.normal(), rng.normal()]).unwrap();
        let prior = Frame::new(axis).septum_from_patient_orientation_deg();
        let (best, strength) = best_fitting_septum(axis);
        if strength > 1.05 * MIN_CUE_RESULTANT {
            fitted += 1;
            assert!(
                angle_between(prior, best).abs() < 0.05,
                "axis {axis:?}: {prior} vs {best}"
            );
        } else if strength < 0.95 * MIN_CUE_RESULTANT {
            fallen_back += 1;
            assert_eq!(prior, 90.0, "axis {axis:?}, strength {strength}");
        }
    }
    assert!(fitted > 30 && fallen_back > 2, "{fitted} {fallen_back}");
    // Base straight below or in front of the apex: the cues cancel.
    for axis in [[0.0, 0.0, -1.0], [0.0, -1.0, 0.0]] {
        assert_eq!(Frame::new(axis).septum_from_patient_orientation_deg(), 90.0);
    }
    // Within 90° of the usual course the cues never come near cancelling.
    for _ in 0..200 {
        let axis = normalize([rng.normal(), rng.normal(), rng.normal()]).unwrap();
        if dot(axis, normalize([-1.0, 1.0, 1.0]).unwrap()) > 0.0 {
            let (_, strength) = best_fitting_septum(axis);
            assert!(strength > 0.7, "axis {axis:?}: {strength}");
        }
    }
}

#[test]
fn without_rv_the_patient_orientation_sets_the_septum() {
    // The heart turned so that its septum is where the wall names fit the
    // body axes best; the nominal sectors must then match it.
    let h = heart();
    let turn = best_fitting_septum_deg(h.axis) - 90.0;
    assert!(
        turn.abs() > 5.0,
        "the test heart should not be aligned: {turn}"
    );
    let h = h.turned(turn);
    let labels = h.render(
        [72, 72, 48],
        grid([72, 72, 48], [1.5, 1.5, 2.0], IDENTITY, heart_centre(&h)),
        false,
    );
    let result = parcellate(&labels, &scheme(false)).unwrap();
    assert!(!result.used_rv);
    let fraction = agreement(&h, &labels, &result);
    assert!(fraction > 0.97, "agreement {fraction}");
}

#[test]
fn thick_oblique_short_axis_stack() {
    // A 8 mm stack whose slices are tilted 12° off the short-axis plane,
    // with an in-plane rotation: the LV axis is no voxel axis.
    let h = heart();
    let to_heart = {
        // Columns: septal-ish, anterior-ish, long axis.
        let (a, e1, e2) = (h.axis, h.anterior, h.septal);
        let m = [
            [e2[0], e1[0], a[0]],
            [e2[1], e1[1], a[1]],
            [e2[2], e1[2], a[2]],
        ];
        let r = rotation([1.0, 0.3, 0.0], 12.0);
        std::array::from_fn(|i| {
            std::array::from_fn(|j| (0..3).map(|l| m[i][l] * r[l][j]).sum::<f64>())
        })
    };
    let labels = h.render(
        [64, 64, 12],
        grid([64, 64, 12], [1.6, 1.6, 8.0], to_heart, heart_centre(&h)),
        true,
    );
    labels.geometry.validate("test").unwrap();
    let result = parcellate(&labels, &scheme(true)).unwrap();
    assert!(
        dot(result.long_axis, h.axis) > 0.97,
        "axis {:?}",
        result.long_axis
    );
    let fraction = agreement(&h, &labels, &result);
    assert!(fraction > 0.87, "agreement {fraction}");
}

#[test]
fn squat_truncated_lv_keeps_its_long_axis() {
    // Wider than long (a short-axis stack cut short): the long axis is the
    // LV's *least* elongated principal axis here.
    let mut h = heart();
    h.cavity_radius = 27.0;
    h.cavity_length = 26.0;
    h.apex_wall = 8.0;
    // 6 mm slices across the LV axis (k follows it).
    let dims = [64, 64, 8];
    let (a, e1, e2) = (h.axis, h.anterior, h.septal);
    let direction = [
        [e2[0], e1[0], a[0]],
        [e2[1], e1[1], a[1]],
        [e2[2], e1[2], a[2]],
    ];
    let g = grid(
        dims,
        [1.6, 1.6, 6.0],
        direction,
        add(h.base, scale(h.axis, -18.0)),
    );
    let labels = h.render(dims, g, true);
    let result = parcellate(&labels, &scheme(true)).unwrap();
    assert!(
        dot(result.long_axis, h.axis) > 0.98,
        "axis {:?}",
        result.long_axis
    );
    assert!(agreement(&h, &labels, &result) > 0.85);
}

#[test]
fn mirrored_grid_gives_the_same_world_segments() {
    let h = heart();
    let dims = [64, 64, 40];
    let g = grid(
        dims,
        [1.7, 1.7, 2.2],
        rotation([0.2, 1.0, 0.4], 25.0),
        heart_centre(&h),
    );
    let labels = h.render(dims, g, true);
    // Flip j and negate the j column: same anatomy, left-handed grid.
    let mut flipped_geometry = g;
    flipped_geometry.origin = g.index_to_world([0.0, (dims[1] - 1) as f64, 0.0]);
    for row in flipped_geometry.direction.iter_mut() {
        row[1] = -row[1];
    }
    let mut flipped = Volume::zeros(dims, flipped_geometry);
    for ((k, j, i), v) in flipped.data.indexed_iter_mut() {
        *v = *labels.at(i, dims[1] - 1 - j, k);
    }
    for with_rv in [true, false] {
        let keep_rv = |v: &Volume<i32>| v.map(|&l| if l == RV && !with_rv { 0 } else { l });
        let a = parcellate(&keep_rv(&labels), &scheme(with_rv)).unwrap();
        let b = parcellate(&keep_rv(&flipped), &scheme(with_rv)).unwrap();
        let mut differ = 0;
        for ((k, j, i), &s) in a.segments.data.indexed_iter() {
            differ += usize::from(*b.segments.at(i, dims[1] - 1 - j, k) != s);
        }
        assert!(differ <= 2, "{differ} voxels differ (RV {with_rv})");
    }
}

#[test]
fn rotation_turns_the_sectors_counter_clockwise() {
    let h = heart();
    let labels = h.render(
        [64, 64, 40],
        grid([64, 64, 40], [1.7, 1.7, 2.2], IDENTITY, heart_centre(&h)),
        false,
    );
    let base = parcellate(&labels, &scheme(false)).unwrap();
    let turned = parcellate(
        &labels,
        &AhaParams {
            rotation_deg: 60.0,
            ..scheme(false)
        },
    )
    .unwrap();
    let (mut same_rule, mut total) = (0, 0);
    for (a, b) in base.voxels.iter().zip(&turned.voxels) {
        if (1..=12).contains(&a.segment) {
            total += 1;
            // Sectors move 60° counter-clockwise: each voxel falls into the
            // previous segment of its ring (1 → 6, 7 → 12).
            let ring = (a.segment - 1) / 6 * 6;
            let previous = (a.segment - 1 - ring + 5) % 6 + 1 + ring;
            same_rule += usize::from(b.segment == previous);
        }
    }
    assert!(
        same_rule as f64 >= 0.999 * total as f64,
        "{same_rule} of {total}"
    );
}

#[test]
fn given_long_axis_is_used() {
    let h = heart();
    let labels = h.render(
        [64, 64, 40],
        grid([64, 64, 40], [1.7, 1.7, 2.2], IDENTITY, heart_centre(&h)),
        true,
    );
    let given = scale(h.axis, 3.0);
    let result = parcellate(
        &labels,
        &AhaParams {
            long_axis: Some(given),
            ..scheme(true)
        },
    )
    .unwrap();
    assert!(dot(result.long_axis, h.axis) > 1.0 - 1e-12);
    assert!(agreement(&h, &labels, &result) > 0.9);
    let wrong = AhaParams {
        long_axis: Some([0.0, f64::NAN, 1.0]),
        ..scheme(true)
    };
    assert!(matches!(
        parcellate(&labels, &wrong),
        Err(Error::InvalidArgument(_))
    ));
}

fn small_lv() -> Volume<i32> {
    let h = heart();
    h.render(
        [48, 48, 30],
        grid([48, 48, 30], [2.0, 2.0, 3.0], IDENTITY, heart_centre(&h)),
        false,
    )
}

fn error_text(labels: &Volume<i32>, params: &AhaParams) -> String {
    match parcellate(labels, params) {
        Err(e @ Error::InvalidArgument(_)) => e.to_string(),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let lv = small_lv();
    let no_myo = lv.map(|&l| if l == MYO { 0 } else { l });
    assert!(error_text(&no_myo, &scheme(false)).contains("no myocardium"));
    let no_cavity = lv.map(|&l| if l == CAVITY { 0 } else { l });
    assert!(error_text(&no_cavity, &scheme(false)).contains("no LV cavity"));

    let mut unknown = lv.clone();
    unknown.data[[3, 4, 5]] = 7;
    unknown.data[[3, 4, 6]] = 7;
    let text = error_text(&unknown, &scheme(false));
    assert!(
        text.contains("7 (2 voxels, first at i,j,k = [5, 4, 3])"),
        "{text}"
    );
    // An RV label without an RV in the scheme is unknown too.
    let mut with_rv = lv.clone();
    with_rv.data[[0, 0, 0]] = RV;
    assert!(error_text(&with_rv, &scheme(false)).contains("5 (1 voxels"));

    let bad_rotation = AhaParams {
        rotation_deg: f64::INFINITY,
        ..scheme(false)
    };
    assert!(error_text(&lv, &bad_rotation).contains("rotation_deg"));
    let bad_scheme = AhaParams {
        labels: LabelScheme {
            scar: 2,
            ..LabelScheme::EMIDEC
        },
        ..scheme(false)
    };
    assert!(error_text(&lv, &bad_scheme).contains("share"));
    let mut bad_geometry = lv.clone();
    bad_geometry.geometry.spacing[2] = 0.0;
    assert!(error_text(&bad_geometry, &scheme(false)).contains("spacing[2]"));

    // One slice holds no long axis.
    let slice = Volume::from_vec(
        [48, 48, 1],
        lv.data
            .index_axis(ndarray::Axis(0), 20)
            .iter()
            .copied()
            .collect(),
        lv.geometry,
    )
    .unwrap();
    assert!(error_text(&slice, &scheme(false)).contains("single plane"));
}

#[test]
fn scar_and_mvo_count_as_myocardium() {
    let lv = small_lv();
    let mut lesion = lv.clone();
    let mut changed = 0;
    for (n, l) in lesion.data.iter_mut().enumerate() {
        if *l == MYO && n % 5 == 0 {
            *l = if n % 2 == 0 { 3 } else { 4 };
            changed += 1;
        }
    }
    assert!(changed > 100);
    let a = aha_segments(&lv, &scheme(false)).unwrap();
    let b = aha_segments(&lesion, &scheme(false)).unwrap();
    assert_eq!(a, b);
}

/// A heart in a large field of view, cut to its box, is parcellated bit for
/// bit as the whole map (segments, voxels, levels, axis), with and without
/// RV, and an unknown label is reported at its index in the whole map.
#[test]
fn a_cropped_map_gives_the_whole_maps_parcellation() {
    let h = heart();
    let dims = [128, 120, 48];
    let geometry = grid(
        dims,
        [1.9, 1.7, 2.5],
        rotation([0.3, -0.2, 1.0], 25.0),
        add(heart_centre(&h), [12.0, -9.0, 4.0]),
    );
    for with_rv in [true, false] {
        let whole = h.render(dims, geometry, with_rv);
        let image = crate::volume::Image::U8(whole.map(|l| *l as u8));
        let crop = CroppedLabels::from_image(&image, crate::volume::LABEL_CROP_MARGIN).unwrap();
        assert!(
            crop.labels.len() * 3 < whole.len(),
            "box {:?} of {dims:?}",
            crop.placement.dims
        );
        let params = scheme(with_rv);
        let expected = parcellate(&whole, &params).unwrap();
        let got = parcellate_cropped(&crop, &params).unwrap();
        assert_eq!(got.segments, expected.segments);
        assert_eq!(got.voxels, expected.voxels);
        assert_eq!(got.levels, expected.levels);
        assert_eq!(
            (got.long_axis, got.apex, got.cavity_tip, got.base),
            (
                expected.long_axis,
                expected.apex,
                expected.cavity_tip,
                expected.base
            )
        );
        assert_eq!(
            (got.reference_direction, got.used_rv),
            (expected.reference_direction, expected.used_rv)
        );
    }
    let mut unknown = h.render(dims, geometry, false);
    let first = unknown
        .data
        .indexed_iter()
        .find(|(_, l)| **l == MYO)
        .map(|((k, j, i), _)| [i, j, k])
        .unwrap();
    unknown.data[[first[2], first[1], first[0]]] = 7;
    let crop = CroppedLabels::from_image(
        &crate::volume::Image::I32(unknown),
        crate::volume::LABEL_CROP_MARGIN,
    )
    .unwrap();
    let text = parcellate_cropped(&crop, &scheme(false))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(&format!("7 (1 voxels, first at i,j,k = {first:?})")),
        "{text}"
    );
}

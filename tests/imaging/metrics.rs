//! Segmentation metrics on hand-checkable label maps and on the phantom.

use claim::metrics::{
    aggregate, evaluate_case, to_csv, CaseMetrics, EvalOptions, Structure, StructureMetrics,
};
use claim::phantom;
use claim::{Error, Geometry, LabelScheme, Volume};

const EMIDEC: LabelScheme = LabelScheme::EMIDEC;

fn no_segments() -> EvalOptions {
    EvalOptions {
        per_segment: false,
        ..EvalOptions::default()
    }
}

/// A label map of `dims` with `label` on every voxel where `inside(i, j, k)`.
fn painted(
    dims: [usize; 3],
    spacing: [f64; 3],
    mut paint: impl FnMut(usize, usize, usize) -> i32,
) -> Volume<i32> {
    let mut data = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                data.push(paint(i, j, k));
            }
        }
    }
    Volume::from_vec(dims, data, Geometry::with_spacing(spacing)).unwrap()
}

fn within(lo: [usize; 3], hi: [usize; 3], i: usize, j: usize, k: usize) -> bool {
    (lo[0]..hi[0]).contains(&i) && (lo[1]..hi[1]).contains(&j) && (lo[2]..hi[2]).contains(&k)
}

fn of(m: &CaseMetrics, s: Structure) -> StructureMetrics {
    *m.structure(s).unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn overlapping_cubes_have_the_exact_dice_volume_and_hausdorff() {
    // Two 4×4×4 cubes of LV cavity, the prediction two voxels (3 mm) further
    // along i: 2×4×4 = 32 shared voxels of 64 each.
    let (dims, spacing) = ([12, 10, 10], [1.5, 2.0, 3.0]); // 9 mm³ per voxel
    let reference = painted(dims, spacing, |i, j, k| {
        i32::from(within([2, 3, 3], [6, 7, 7], i, j, k))
    });
    let pred = painted(dims, spacing, |i, j, k| {
        i32::from(within([4, 3, 3], [8, 7, 7], i, j, k))
    });
    let m = evaluate_case(&pred, &reference, &EMIDEC, &EvalOptions::default()).unwrap();
    let lv = of(&m, Structure::LvCavity);
    assert_eq!(lv.dice, 0.5);
    assert_eq!((lv.pred_voxels, lv.ref_voxels), (64, 64));
    assert!(close(lv.pred_ml, 0.576, 1e-12) && close(lv.ref_ml, 0.576, 1e-12));
    assert_eq!(lv.volume_difference_ml, 0.0);
    // The far face of each cube is two voxels (3 mm along i) from the
    // nearest face of the other; nothing is further.
    assert!(close(lv.hd_mm.unwrap(), 3.0, 1e-5), "{:?}", lv.hd_mm);
    let hd95 = lv.hd95_mm.unwrap();
    assert!(hd95 > 0.0 && hd95 <= 3.0 + 1e-5, "{hd95}");
    assert!(close(m.voxel_ml, 0.009, 1e-15));
    // No myocardium: no scar burden, and no parcellation — a note, not an error.
    assert_eq!(m.scar_burden.pred_percent, None);
    assert_eq!(m.scar_burden.abs_difference, None);
    assert!(m.segments.is_none() && m.segments_used_rv.is_none());
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("could not be parcellated")),
        "{:?}",
        m.notes
    );
}

#[test]
fn parallel_planes_are_their_anisotropic_distance_apart() {
    // One slice of myocardium each, three slices (3 × 3 mm) apart: every
    // boundary voxel is exactly 9 mm from the other surface.
    let (dims, spacing) = ([8, 8, 8], [0.7, 1.1, 3.0]);
    let reference = painted(dims, spacing, |_, _, k| if k == 2 { 2 } else { 0 });
    let pred = painted(dims, spacing, |_, _, k| if k == 5 { 2 } else { 0 });
    let m = evaluate_case(&pred, &reference, &EMIDEC, &no_segments()).unwrap();
    let myo = of(&m, Structure::Myocardium);
    assert_eq!(myo.dice, 0.0);
    assert!(close(myo.hd95_mm.unwrap(), 9.0, 1e-5), "{:?}", myo.hd95_mm);
    assert!(close(myo.hd_mm.unwrap(), 9.0, 1e-5));
    // The whole myocardium is the same voxels here.
    assert_eq!(
        of(&m, Structure::WholeMyocardium),
        StructureMetrics {
            structure: Structure::WholeMyocardium,
            ..myo
        }
    );
}

#[test]
fn a_shifted_sphere_has_hd95_near_the_shift() {
    // A ball of radius 12 mm on a 0.8 × 0.8 × 2.5 mm grid, shifted across
    // the slices (2 slices, 5 mm) or in plane (5 pixels, 4 mm).
    let (dims, spacing) = ([48, 48, 16], [0.8, 0.8, 2.5]);
    let ball = |shift: [f64; 3]| {
        painted(dims, spacing, move |i, j, k| {
            let x = (i as f64 - 23.5 - shift[0]) * spacing[0];
            let y = (j as f64 - 23.5 - shift[1]) * spacing[1];
            let z = (k as f64 - 7.0 - shift[2]) * spacing[2];
            i32::from(x * x + y * y + z * z <= 12.0 * 12.0)
        })
    };
    for (shift, shift_mm) in [([0.0, 0.0, 2.0], 5.0), ([5.0, 0.0, 0.0], 4.0)] {
        let m = evaluate_case(&ball(shift), &ball([0.0; 3]), &EMIDEC, &no_segments()).unwrap();
        let lv = of(&m, Structure::LvCavity);
        let (hd95, hd) = (lv.hd95_mm.unwrap(), lv.hd_mm.unwrap());
        eprintln!(
            "ball shifted {shift_mm} mm: HD95 {hd95} HD {hd} Dice {}",
            lv.dice
        );
        // Surface distances of a ball shifted by d spread over [0, d]
        // (d·|cos| of the angle to the shift); their 95th percentile lies
        // near d, their maximum at d.
        assert!(close(hd, shift_mm, 1e-5), "HD {hd}");
        // (Thick slices put more boundary voxels at distance 0: 0.87 d in plane.)
        assert!(
            hd95 > 0.8 * shift_mm && hd95 <= shift_mm + 1e-5,
            "HD95 {hd95}"
        );
    }
}

#[test]
fn scar_burden_and_emidec_errors_follow_their_definitions() {
    // Reference: 60 myocardium, 30 scar, 10 MVO voxels (40 % burden).
    // Prediction: 80 myocardium, 20 scar, no MVO (20 %).
    let dims = [100, 1, 1];
    let spacing = [2.0, 2.0, 5.0]; // 0.02 mL per voxel
    let reference = painted(dims, spacing, |i, _, _| match i {
        0..60 => 2,
        60..90 => 3,
        _ => 4,
    });
    let pred = painted(dims, spacing, |i, _, _| if i < 80 { 2 } else { 3 });
    let m = evaluate_case(&pred, &reference, &EMIDEC, &no_segments()).unwrap();
    let b = m.scar_burden;
    assert!(close(b.pred_percent.unwrap(), 20.0, 1e-12));
    assert!(close(b.ref_percent.unwrap(), 40.0, 1e-12));
    assert!(close(b.abs_difference.unwrap(), 20.0, 1e-12));
    // EMIDEC: |20 − 30| scar voxels and |0 − 10| MVO voxels of 100.
    assert!(close(b.emidec_scar_error_percent.unwrap(), 10.0, 1e-12));
    assert!(close(b.emidec_mvo_error_percent.unwrap(), 10.0, 1e-12));
    let scar = of(&m, Structure::Scar);
    // Shared scar voxels 80..90: 2·10 / (20 + 30).
    assert!(close(scar.dice, 0.4, 1e-12));
    assert!(close(scar.volume_difference_ml, -0.2, 1e-12));
    assert!(close(scar.abs_volume_difference_ml, 0.2, 1e-12));
    let whole = of(&m, Structure::WholeMyocardium);
    assert_eq!(whole.dice, 1.0);
    assert!(close(whole.ref_ml, 2.0, 1e-12));
    let lesion = of(&m, Structure::ScarAndMvo);
    assert!(close(lesion.dice, 2.0 * 20.0 / 60.0, 1e-12));
}

#[test]
fn empty_structures_are_dice_one_or_zero_and_undefined_distances() {
    let (dims, spacing) = ([6, 6, 3], [1.0, 1.0, 1.0]);
    let reference = painted(dims, spacing, |i, _, _| if i < 3 { 2 } else { 3 });
    let pred = painted(dims, spacing, |i, _, _| if i < 3 { 2 } else { 0 });
    let m = evaluate_case(&pred, &reference, &EMIDEC, &no_segments()).unwrap();
    // Absent from both: perfect agreement, no distance.
    let mvo = of(&m, Structure::Mvo);
    assert_eq!(mvo.dice, 1.0);
    assert_eq!((mvo.hd95_mm, mvo.hd_mm), (None, None));
    assert_eq!(
        (mvo.pred_ml, mvo.ref_ml, mvo.volume_difference_ml),
        (0.0, 0.0, 0.0)
    );
    // Absent from the prediction only.
    let scar = of(&m, Structure::Scar);
    assert_eq!(scar.dice, 0.0);
    assert_eq!(scar.hd95_mm, None);
    assert!(close(scar.ref_ml, 0.054, 1e-12));
    assert!(close(m.scar_burden.pred_percent.unwrap(), 0.0, 1e-12));
    assert!(close(m.scar_burden.ref_percent.unwrap(), 50.0, 1e-12));

    // A prediction without any myocardium has no burden of its own.
    let empty = painted(dims, spacing, |_, _, _| 0);
    let m = evaluate_case(&empty, &reference, &EMIDEC, &no_segments()).unwrap();
    assert_eq!(m.scar_burden.pred_percent, None);
    assert_eq!(m.scar_burden.abs_difference, None);
    assert!(close(
        m.scar_burden.emidec_scar_error_percent.unwrap(),
        50.0,
        1e-12
    ));
    // The RV is only evaluated under a scheme with one.
    assert!(m.structure(Structure::Rv).is_none());
    let with_rv = evaluate_case(
        &empty,
        &reference,
        &LabelScheme::EMIDEC_WITH_RV,
        &no_segments(),
    )
    .unwrap();
    assert_eq!(of(&with_rv, Structure::Rv).dice, 1.0);
}

#[test]
fn labels_the_scheme_does_not_name_count_as_background_with_a_note() {
    let (dims, spacing) = ([4, 4, 1], [1.0, 1.0, 1.0]);
    let reference = painted(dims, spacing, |i, _, _| if i < 2 { 2 } else { 0 });
    let pred = painted(dims, spacing, |i, _, _| if i < 2 { 2 } else { 9 });
    let m = evaluate_case(&pred, &reference, &EMIDEC, &no_segments()).unwrap();
    assert_eq!(of(&m, Structure::Myocardium).dice, 1.0);
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("prediction") && n.contains("[9]")),
        "{:?}",
        m.notes
    );
}

#[test]
fn mismatched_grids_are_errors() {
    let g = Geometry::with_spacing([1.0, 1.0, 2.0]);
    let a = Volume::from_vec([4, 2, 1], vec![0, 1, 2, 3, 0, 1, 2, 3], g).unwrap();
    let b = Volume::from_vec([2, 4, 1], vec![0, 1, 2, 3, 0, 1, 2, 3], g).unwrap();
    let err = evaluate_case(&a, &b, &EMIDEC, &EvalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("dims"), "{err}");

    let mut moved = a.clone();
    moved.geometry.origin[1] += 0.5;
    let err = evaluate_case(&moved, &a, &EMIDEC, &EvalOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("geometry"), "{err}");
    let mut spaced = a.clone();
    spaced.geometry.spacing[2] = 2.5;
    assert!(evaluate_case(&spaced, &a, &EMIDEC, &EvalOptions::default()).is_err());
    // Within the tolerance the grids are the same.
    let mut nudged = a.clone();
    nudged.geometry.origin[0] += 1e-5;
    assert!(evaluate_case(&nudged, &a, &EMIDEC, &EvalOptions::default()).is_ok());

    let bad_scheme = LabelScheme { scar: 2, ..EMIDEC };
    assert!(evaluate_case(&a, &a, &bad_scheme, &EvalOptions::default()).is_err());
}

fn phantom_labels(seed: u64) -> Volume<i32> {
    claim::testing::phantom_labels(seed, true)
}

/// The phantom with its scar and MVO turned back into healthy myocardium.
fn without_scar(labels: &Volume<i32>) -> Volume<i32> {
    let s = phantom::LABEL_SCHEME;
    labels.map(|l| if s.is_lesion(*l) { s.myocardium } else { *l })
}

#[test]
fn the_phantom_against_itself_and_without_its_scar() {
    let scheme = phantom::LABEL_SCHEME;
    let labels = phantom_labels(4);
    let options = EvalOptions::default();

    let mut same = evaluate_case(&labels, &labels, &scheme, &options).unwrap();
    same.case = "self".into();
    assert_eq!(same.structures.len(), 7);
    for s in &same.structures {
        assert_eq!(s.dice, 1.0, "{:?}", s.structure);
        assert_eq!(s.hd95_mm, Some(0.0), "{:?}", s.structure);
        assert_eq!(s.hd_mm, Some(0.0), "{:?}", s.structure);
        assert_eq!(s.volume_difference_ml, 0.0);
        assert!(s.ref_voxels > 0, "the phantom has every structure");
    }
    assert_eq!(same.scar_burden.abs_difference, Some(0.0));
    assert_eq!(same.scar_burden.emidec_scar_error_percent, Some(0.0));
    assert_eq!(same.segments_used_rv, Some(true), "{:?}", same.notes);
    let segments = same.segments.as_ref().unwrap();
    assert_eq!(segments.len(), 17);
    for (n, s) in segments.iter().enumerate() {
        assert_eq!(usize::from(s.segment), n + 1);
        assert!(s.ref_myocardium_ml > 0.0, "segment {} is empty", s.segment);
        assert_eq!(s.pred_percent, s.ref_percent);
        assert_eq!(s.abs_difference, Some(0.0));
    }
    let scarred: Vec<u8> = segments
        .iter()
        .filter(|s| s.ref_percent.unwrap() > 0.0)
        .map(|s| s.segment)
        .collect();
    assert!(!scarred.is_empty());

    let mut healed = evaluate_case(&without_scar(&labels), &labels, &scheme, &options).unwrap();
    healed.case = "healed".into();
    assert_eq!(of(&healed, Structure::WholeMyocardium).dice, 1.0);
    assert_eq!(of(&healed, Structure::LvCavity).dice, 1.0);
    for s in [Structure::Scar, Structure::Mvo, Structure::ScarAndMvo] {
        let m = of(&healed, s);
        assert_eq!((m.dice, m.hd95_mm, m.pred_ml), (0.0, None, 0.0), "{s:?}");
    }
    let ref_percent = same.scar_burden.ref_percent.unwrap();
    assert!(ref_percent > 1.0);
    assert_eq!(healed.scar_burden.pred_percent, Some(0.0));
    assert!(close(
        healed.scar_burden.abs_difference.unwrap(),
        ref_percent,
        1e-9
    ));
    // Scar volume error in EMIDEC's terms: all of it, over the myocardium.
    let scar_ml = of(&same, Structure::Scar).ref_ml;
    let myo_ml = of(&same, Structure::WholeMyocardium).ref_ml;
    assert!(close(
        healed.scar_burden.emidec_scar_error_percent.unwrap(),
        100.0 * scar_ml / myo_ml,
        1e-9
    ));
    // Per segment: the prediction's burden is 0 on the same myocardium, so
    // the difference is the reference burden itself.
    for (h, s) in healed.segments.as_ref().unwrap().iter().zip(segments) {
        assert_eq!(h.ref_percent, s.ref_percent);
        assert_eq!(h.pred_percent, Some(0.0));
        assert!(close(
            h.abs_difference.unwrap(),
            s.ref_percent.unwrap(),
            1e-12
        ));
    }

    // Aggregated over the two cases.
    let cases = [same, healed];
    let summary = aggregate(&cases);
    assert_eq!(summary.cases, 2);
    let scar_dice = summary.metric("scar_dice").unwrap();
    assert_eq!((scar_dice.defined, scar_dice.undefined), (2, 0));
    assert_eq!(scar_dice.mean, Some(0.5));
    assert_eq!(scar_dice.std, Some(0.5));
    assert_eq!(scar_dice.median, Some(0.5));
    let scar_hd95 = summary.metric("scar_hd95_mm").unwrap();
    assert_eq!((scar_hd95.defined, scar_hd95.undefined), (1, 1));
    assert_eq!(scar_hd95.mean, Some(0.0));
    let burden = summary.metric("scar_percent_abs_diff").unwrap();
    assert!(close(burden.mean.unwrap(), ref_percent / 2.0, 1e-9));
    assert!(summary.metric("rv_dice").is_some());

    // CSV: header, one row per case, four summary rows; every row as wide
    // as the header; columns in the documented order.
    let csv = to_csv(&cases);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 2 + 4);
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        &header[..5],
        [
            "kind",
            "case",
            "lv_cavity_dice",
            "lv_cavity_hd95_mm",
            "lv_cavity_hd_mm"
        ]
    );
    assert_eq!(header.len(), 2 + 7 * 7 + 5 + 17 * 3);
    assert!(header.contains(&"rv_abs_diff_ml") && header.contains(&"seg17_scar_percent_abs_diff"));
    for line in &lines {
        assert_eq!(line.split(',').count(), header.len(), "{line}");
    }
    assert!(lines[1].starts_with("case,self,1,0,0,"), "{}", lines[1]);
    assert!(lines[2].starts_with("case,healed,"));
    let kinds: Vec<&str> = lines[3..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(kinds, ["mean", "std", "median", "defined"]);
    let scar_hd_column = header.iter().position(|h| *h == "scar_hd95_mm").unwrap();
    assert_eq!(lines[2].split(',').nth(scar_hd_column), Some(""));
    assert_eq!(lines[6].split(',').nth(scar_hd_column), Some("1"));

    // JSON keeps undefined values as null.
    let json: serde_json::Value = serde_json::from_str(&cases[1].to_json().unwrap()).unwrap();
    let scar = &json["structures"][2];
    assert_eq!(scar["structure"], "scar");
    assert!(scar["hd95_mm"].is_null());
}

#[test]
fn a_column_major_array_gives_the_same_metrics() {
    use ndarray::ShapeBuilder;
    let (dims, spacing) = ([7, 5, 4], [1.0, 1.5, 4.0]);
    let reference = painted(dims, spacing, |i, j, k| ((i + 2 * j + k) % 5) as i32);
    let pred = painted(dims, spacing, |i, j, _| ((i * j) % 5) as i32);
    let mut data = ndarray::Array3::<i32>::zeros((dims[2], dims[1], dims[0]).f());
    data.assign(&pred.data);
    assert!(data.as_slice().is_none(), "the copy is column-major");
    let column_major = Volume {
        data,
        geometry: pred.geometry,
    };
    let a = evaluate_case(&pred, &reference, &EMIDEC, &no_segments()).unwrap();
    let b = evaluate_case(&column_major, &reference, &EMIDEC, &no_segments()).unwrap();
    assert_eq!(a, b);
}

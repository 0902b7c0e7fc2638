use super::*;
use crate::volume::Volume;

const LV: i32 = LABEL_SCHEME.lv_cavity;
const MYO: i32 = LABEL_SCHEME.myocardium;
const SCAR: i32 = LABEL_SCHEME.scar;
const MVO: i32 = LABEL_SCHEME.mvo;
const RV: i32 = 5;

fn case(seed: u64, with_scar: bool) -> Phantom {
    generate(&PhantomParams {
        seed,
        with_scar,
        ..PhantomParams::default()
    })
    .unwrap()
}

fn is_lv_wall(label: i32) -> bool {
    LABEL_SCHEME.is_myocardium(label)
}

/// Voxels of slice k whose label satisfies `keep`.
fn count_in_slice(labels: &Volume<i32>, k: usize, keep: impl Fn(i32) -> bool) -> usize {
    let [ni, nj, _] = labels.dims();
    (0..nj)
        .flat_map(|j| (0..ni).map(move |i| (i, j)))
        .filter(|&(i, j)| keep(*labels.at(i, j, k)))
        .count()
}

/// World (LPS) centroid of the voxels whose label satisfies `keep`, optionally in one slice.
fn world_centroid(
    labels: &Volume<i32>,
    slice: Option<usize>,
    keep: impl Fn(i32) -> bool,
) -> [f64; 3] {
    let [ni, nj, nk] = labels.dims();
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for k in 0..nk {
        if slice.is_some_and(|s| s != k) {
            continue;
        }
        for j in 0..nj {
            for i in 0..ni {
                if keep(*labels.at(i, j, k)) {
                    let p = labels
                        .geometry
                        .index_to_world([i as f64, j as f64, k as f64]);
                    for a in 0..3 {
                        sum[a] += p[a];
                    }
                    n += 1.0;
                }
            }
        }
    }
    assert!(n > 0.0, "no voxel selected");
    sum.map(|s| s / n)
}

/// In-slice 4-neighbour labels of (i, j, k) that lie inside the grid.
fn neighbours(labels: &Volume<i32>, i: usize, j: usize, k: usize) -> Vec<i32> {
    let [ni, nj, _] = labels.dims();
    let mut out = Vec::new();
    if i > 0 {
        out.push(*labels.at(i - 1, j, k));
    }
    if i + 1 < ni {
        out.push(*labels.at(i + 1, j, k));
    }
    if j > 0 {
        out.push(*labels.at(i, j - 1, k));
    }
    if j + 1 < nj {
        out.push(*labels.at(i, j + 1, k));
    }
    out
}

fn label_set(labels: &Volume<i32>) -> Vec<i32> {
    let mut set: Vec<i32> = labels.data.iter().copied().collect();
    set.sort_unstable();
    set.dedup();
    set
}

#[test]
fn labels_and_geometry_are_as_documented() {
    let with = case(1, true);
    assert_eq!(label_set(&with.labels), vec![0, LV, MYO, SCAR, MVO, RV]);
    let without = case(1, false);
    assert_eq!(label_set(&without.labels), vec![0, LV, MYO, RV]);

    let g = with.labels.geometry;
    assert_eq!(with.labels.dims(), [192, 192, 10]);
    assert_eq!(with.image.dims(), [192, 192, 10]);
    assert_eq!(g, with.image.geometry);
    assert_eq!(g.spacing, [1.5625, 1.5625, 9.0]);
    g.validate("phantom").unwrap();
    // Oblique: no voxel axis is within ~15° of a patient axis.
    for axis in 0..3 {
        let v = g.axis_direction(axis);
        assert!(
            v.iter().all(|c| c.abs() < 0.97),
            "axis {axis} is not oblique: {v:?}"
        );
    }
    let d = g.direction;
    let det = d[0][0] * (d[1][1] * d[2][2] - d[1][2] * d[2][1])
        - d[0][1] * (d[1][0] * d[2][2] - d[1][2] * d[2][0])
        + d[0][2] * (d[1][0] * d[2][1] - d[1][1] * d[2][0]);
    assert!(
        (det - 1.0).abs() < 1e-9,
        "direction is not a proper rotation: det {det}"
    );
}

#[test]
fn wall_thickness_is_6_to_12_mm() {
    for seed in 0..4 {
        let p = case(seed, false);
        let labels = &p.labels;
        let px_area = labels.geometry.spacing[0] * labels.geometry.spacing[1];
        let nk = labels.dims()[2];
        for k in 0..nk {
            let cavity = count_in_slice(labels, k, |l| l == LV) as f64 * px_area;
            let wall = count_in_slice(labels, k, is_lv_wall) as f64 * px_area;
            if cavity < 100.0 {
                continue; // the apex cap and the slice where the cavity opens
            }
            // Mean thickness of an annulus from its two areas.
            let r_endo = (cavity / std::f64::consts::PI).sqrt();
            let r_epi = ((cavity + wall) / std::f64::consts::PI).sqrt();
            let thickness = r_epi - r_endo;
            assert!(
                (6.0..=12.0).contains(&thickness),
                "seed {seed} slice {k}: mean wall {thickness:.2} mm"
            );
        }

        // Ray measurements in a mid-ventricular slice, from the cavity centroid.
        let k = nk / 2;
        let centre = world_centroid(labels, Some(k), |l| l == LV);
        let centre = labels.geometry.world_to_index(centre);
        let spacing = labels.geometry.spacing[0];
        let mut thicknesses = Vec::new();
        for ray in 0..72 {
            let angle = ray as f64 * std::f64::consts::TAU / 72.0;
            let (mut entered, mut left) = (None, None);
            for step in 0..400 {
                let r_mm = step as f64 * 0.25;
                let i = (centre[0] + r_mm / spacing * angle.cos()).round() as usize;
                let j = (centre[1] + r_mm / spacing * angle.sin()).round() as usize;
                let label = *labels.at(i, j, k);
                if entered.is_none() && is_lv_wall(label) {
                    entered = Some(r_mm);
                } else if entered.is_some() && !is_lv_wall(label) {
                    left = Some(r_mm);
                    break;
                }
            }
            thicknesses.push(left.unwrap() - entered.unwrap());
        }
        thicknesses.sort_by(f64::total_cmp);
        let median = thicknesses[thicknesses.len() / 2];
        let inside = thicknesses
            .iter()
            .filter(|t| (6.0..=12.0).contains(*t))
            .count();
        assert!(
            (7.0..=11.0).contains(&median),
            "seed {seed}: median wall {median} mm"
        );
        assert!(
            inside >= 65,
            "seed {seed}: only {inside}/72 rays within 6–12 mm: {thicknesses:?}"
        );
    }
}

#[test]
fn ventricle_tapers_to_an_apex_cap() {
    for seed in [0, 5] {
        let p = case(seed, false);
        let labels = &p.labels;
        let nk = labels.dims()[2];
        let cavity: Vec<usize> = (0..nk)
            .map(|k| count_in_slice(labels, k, |l| l == LV))
            .collect();
        let epicardial: Vec<usize> = (0..nk)
            .map(|k| count_in_slice(labels, k, |l| l == LV || is_lv_wall(l)))
            .collect();
        // k = 0 is the most apical slice: myocardium, no cavity.
        assert_eq!(cavity[0], 0, "seed {seed}: apex slice has cavity");
        assert!(
            epicardial[0] > 50,
            "seed {seed}: no apex cap ({} voxels)",
            epicardial[0]
        );
        assert!(
            cavity[1..].iter().all(|&c| c > 0),
            "seed {seed}: cavity missing {cavity:?}"
        );
        let third = |v: &[usize], t: usize| {
            let part = &v[t * nk / 3..(t + 1) * nk / 3];
            part.iter().sum::<usize>() as f64 / part.len() as f64
        };
        for areas in [&cavity, &epicardial] {
            let (apical, mid, basal) = (third(areas, 0), third(areas, 1), third(areas, 2));
            assert!(
                apical < mid && mid < basal,
                "seed {seed}: no taper {areas:?}"
            );
        }
        // Radii shrink towards the apex: the basal cavity is far wider than the apical one.
        assert!(cavity[nk - 1] as f64 > 3.0 * cavity[1] as f64, "{cavity:?}");
    }
}

#[test]
fn rv_wraps_the_septum_on_the_patients_right_and_front() {
    for seed in [0, 2, 9] {
        let p = case(seed, false);
        let labels = &p.labels;
        let nk = labels.dims()[2];
        let lv = world_centroid(labels, None, |l| l == LV || is_lv_wall(l));
        let rv = world_centroid(labels, None, |l| l == RV);
        // LPS: +x = patient left, +y = posterior.
        assert!(
            rv[0] < lv[0] - 15.0,
            "seed {seed}: RV not to the right: rv {rv:?} lv {lv:?}"
        );
        assert!(
            rv[1] < lv[1],
            "seed {seed}: RV not anterior: rv {rv:?} lv {lv:?}"
        );

        assert_eq!(
            count_in_slice(labels, 0, |l| l == RV),
            0,
            "RV reaches the apex cap"
        );
        for k in nk / 3..nk {
            let [ni, nj, _] = labels.dims();
            let rv_voxels = count_in_slice(labels, k, |l| l == RV);
            assert!(
                rv_voxels > 100,
                "seed {seed} slice {k}: RV has {rv_voxels} voxels"
            );
            // The RV blood touches the septal myocardium directly.
            let contact = (0..nj)
                .flat_map(|j| (0..ni).map(move |i| (i, j)))
                .filter(|&(i, j)| *labels.at(i, j, k) == RV)
                .filter(|&(i, j)| neighbours(labels, i, j, k).contains(&MYO))
                .count();
            assert!(
                contact >= 10,
                "seed {seed} slice {k}: RV touches myocardium at {contact} voxels"
            );
            // ... on the septal side: RV centroid of the slice lies right of the LV's.
            let lv_k = world_centroid(labels, Some(k), |l| l == LV);
            let rv_k = world_centroid(labels, Some(k), |l| l == RV);
            assert!(rv_k[0] < lv_k[0], "seed {seed} slice {k}");
        }
    }
}

#[test]
fn scar_lies_in_the_myocardium_and_mvo_inside_the_scar() {
    for seed in 0..3 {
        let with = case(seed, true);
        let without = case(seed, false);
        let mut scar = 0usize;
        let mut mvo = 0usize;
        let mut myocardium = 0usize;
        for (a, b) in with.labels.data.iter().zip(without.labels.data.iter()) {
            if LABEL_SCHEME.is_lesion(*a) {
                // The scar replaces healthy myocardium of the same anatomy.
                assert_eq!(*b, MYO, "seed {seed}: lesion outside the myocardium");
                scar += usize::from(*a == SCAR);
                mvo += usize::from(*a == MVO);
            } else {
                assert_eq!(a, b, "seed {seed}: scar changed the anatomy");
            }
            myocardium += usize::from(is_lv_wall(*a));
        }
        assert!(mvo > 0, "seed {seed}: no MVO");
        let fraction = (scar + mvo) as f64 / myocardium as f64;
        assert!(
            (0.04..=0.4).contains(&fraction),
            "seed {seed}: scar is {fraction:.3} of myocardium"
        );

        let [ni, nj, nk] = with.labels.dims();
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    if *with.labels.at(i, j, k) == MVO {
                        let around = neighbours(&with.labels, i, j, k);
                        assert!(
                            around.iter().all(|l| LABEL_SCHEME.is_lesion(*l)),
                            "seed {seed}: MVO at ({i},{j},{k}) not rimmed by scar: {around:?}"
                        );
                    }
                }
            }
        }
        // Wavefront: the lesion starts at the endocardium and is transmural
        // only in its centre, so more of it borders the cavity than the outside.
        let (mut endocardial, mut epicardial) = (0, 0);
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    if LABEL_SCHEME.is_lesion(*with.labels.at(i, j, k)) {
                        let around = neighbours(&with.labels, i, j, k);
                        endocardial += usize::from(around.contains(&LV));
                        epicardial += usize::from(around.iter().any(|&l| l == 0 || l == RV));
                    }
                }
            }
        }
        assert!(epicardial > 0, "seed {seed}: scar is nowhere transmural");
        assert!(
            endocardial > epicardial,
            "seed {seed}: scar not endocardium-based ({endocardial} vs {epicardial})"
        );
        // LAD territory: the scar sits on the anterior side of the LV (LPS: −y).
        let lv = world_centroid(&with.labels, None, |l| l == LV);
        let lesion = world_centroid(&with.labels, None, |l| LABEL_SCHEME.is_lesion(l));
        assert!(lesion[1] < lv[1] - 5.0, "seed {seed}: scar not anterior");
    }
}

#[test]
fn intensities_follow_lge_contrast() {
    let p = case(4, true);
    let mean_of = |label: i32| {
        let values: Vec<f64> = p
            .labels
            .data
            .iter()
            .zip(p.image.data.iter())
            .filter(|(l, _)| **l == label)
            .map(|(_, v)| f64::from(*v))
            .collect();
        values.iter().sum::<f64>() / values.len() as f64
    };
    let (blood, myo, scar, mvo, rv) = (
        mean_of(LV),
        mean_of(MYO),
        mean_of(SCAR),
        mean_of(MVO),
        mean_of(RV),
    );
    assert!((500.0..900.0).contains(&blood), "blood {blood}");
    assert!(
        myo < 0.3 * blood,
        "myocardium not nulled: {myo} vs blood {blood}"
    );
    assert!(
        scar > blood && scar > 4.0 * myo,
        "scar {scar}, blood {blood}, myo {myo}"
    );
    assert!(mvo < 0.5 * scar, "MVO {mvo} vs scar {scar}");
    assert!(rv > 3.0 * myo, "RV blood {rv}");
    assert!(p
        .image
        .data
        .iter()
        .all(|v| v.is_finite() && (0.0..2000.0).contains(v)));
    // Rician noise: no two neighbouring background voxels are equal.
    assert_ne!(p.image.data[[0, 0, 0]], p.image.data[[0, 0, 1]]);
}

#[test]
fn same_seed_same_bits_other_seed_other_heart() {
    let a = case(11, true);
    let b = case(11, true);
    assert_eq!(a.labels, b.labels);
    let bits = |p: &Phantom| {
        p.image
            .data
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<u32>>()
    };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.image.geometry, b.image.geometry);

    let c = case(12, true);
    assert_ne!(a.labels.data, c.labels.data);
    assert_ne!(bits(&a), bits(&c));
    assert_ne!(a.labels.geometry, c.labels.geometry);
}

#[test]
fn other_grids_and_bad_params() {
    let small = generate(&PhantomParams {
        matrix_size: 64,
        slice_count: 4,
        pixel_spacing_mm: 3.0,
        slice_spacing_mm: 20.0,
        noise_level: 0.0,
        ..PhantomParams::default()
    })
    .unwrap();
    assert_eq!(small.image.dims(), [64, 64, 4]);
    assert!(small.labels.data.iter().any(|&l| l == LV));

    let bad = [
        PhantomParams {
            matrix_size: 0,
            ..PhantomParams::default()
        },
        PhantomParams {
            slice_count: 0,
            ..PhantomParams::default()
        },
        PhantomParams {
            pixel_spacing_mm: f64::NAN,
            ..PhantomParams::default()
        },
        PhantomParams {
            slice_spacing_mm: -9.0,
            ..PhantomParams::default()
        },
        PhantomParams {
            noise_level: f64::INFINITY,
            ..PhantomParams::default()
        },
    ];
    for params in bad {
        let err = generate(&params).unwrap_err();
        assert_eq!(err.status_code(), 1, "{err}");
        assert!(err.to_string().contains("phantom"), "{err}");
    }
}

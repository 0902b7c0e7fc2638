//! AHA-17 parcellation against the reference atlas (`shared/data/aha-template`,
//! labels 1–17 segments, 21 LV cavity, 24 RV), under oblique rotations,
//! thick slices and mirrored grids, and on the procedural phantom (RV-free
//! orientation prior against the RV-based septum; `rotation_deg`).

use claim::smile::aha::{parcellate, AhaParams, AhaParcellation};
use claim::{Geometry, LabelScheme, Volume};
use std::time::Instant;

const ATLAS_LV: i32 = 21;
const ATLAS_RV: i32 = 24;

/// The atlas segment map (int labels as stored), or `None` when absent.
fn atlas() -> Option<Volume<i32>> {
    let dir = claim::testing::atlas_dir()?;
    let image = claim::io::read_image(&dir.join("AHA17_model_ED.nii.gz")).expect("read the atlas");
    let labels = image.to_labels().expect("atlas labels");
    assert_eq!(labels.dims(), [140, 140, 56]);
    Some(labels)
}

/// The parcellation input made from atlas labels: segments → myocardium 2,
/// 21 → LV 1, 24 → RV 5 (or background without RV).
fn input_from_atlas(atlas: &Volume<i32>, with_rv: bool) -> Volume<i32> {
    atlas.map(|&l| match l {
        1..=17 => 2,
        ATLAS_LV => 1,
        ATLAS_RV if with_rv => 5,
        _ => 0,
    })
}

fn params(with_rv: bool) -> AhaParams {
    AhaParams {
        labels: if with_rv {
            LabelScheme::EMIDEC_WITH_RV
        } else {
            LabelScheme::EMIDEC
        },
        ..AhaParams::default()
    }
}

/// Per-segment Dice (index 0 = segment 1) of `found` against the atlas
/// segments `truth` on the same grid.
fn dice_per_segment(found: &Volume<u8>, truth: &Volume<i32>) -> [f64; 17] {
    assert_eq!(found.dims(), truth.dims());
    let mut both = [0usize; 17];
    let mut a = [0usize; 17];
    let mut b = [0usize; 17];
    for (&f, &t) in found.data.iter().zip(truth.data.iter()) {
        let t = if (1..=17).contains(&t) { t as usize } else { 0 };
        let f = f as usize;
        if f > 0 {
            a[f - 1] += 1;
        }
        if t > 0 {
            b[t - 1] += 1;
        }
        if f > 0 && f == t {
            both[f - 1] += 1;
        }
    }
    std::array::from_fn(|s| 2.0 * both[s] as f64 / (a[s] + b[s]).max(1) as f64)
}

fn summarize(name: &str, dice: &[f64; 17]) -> (f64, f64) {
    let mean = dice.iter().sum::<f64>() / 17.0;
    let min = dice.iter().copied().fold(f64::INFINITY, f64::min);
    let cells: Vec<String> = dice
        .iter()
        .enumerate()
        .map(|(s, d)| format!("{}:{d:.3}", s + 1))
        .collect();
    println!("{name}: mean {mean:.3} min {min:.3} | {}", cells.join(" "));
    (mean, min)
}

/// Every myocardium voxel labelled 1–17 and nothing else.
fn assert_covers_myocardium(input: &Volume<i32>, result: &AhaParcellation) {
    for (&l, &s) in input.data.iter().zip(result.segments.data.iter()) {
        if l == 2 {
            assert!(
                (1..=17).contains(&s),
                "myocardium voxel left with segment {s}"
            );
        } else {
            assert_eq!(s, 0, "non-myocardium voxel (label {l}) got segment {s}");
        }
    }
}

/// Rodrigues rotation matrix about the unit vector `axis` by `degrees`.
fn rotation(axis: [f64; 3], degrees: f64) -> [[f64; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let u = axis.map(|x| x / n);
    let (s, c) = degrees.to_radians().sin_cos();
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let cross = match (i, j) {
                (0, 1) => -u[2],
                (0, 2) => u[1],
                (1, 0) => u[2],
                (1, 2) => -u[0],
                (2, 0) => -u[1],
                (2, 1) => u[0],
                _ => 0.0,
            };
            r[i][j] = if i == j { c } else { 0.0 } + s * cross + (1.0 - c) * u[i] * u[j];
        }
    }
    r
}

fn matmul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|l| a[i][l] * b[l][j]).sum()))
}

/// Nearest-neighbour resampling of `src` onto a grid of `dims` and
/// `spacing` with direction `direction`, centred on the world point at the
/// centre of `src` (world positions are preserved; voxels outside → 0).
fn resample(
    src: &Volume<i32>,
    dims: [usize; 3],
    spacing: [f64; 3],
    direction: [[f64; 3]; 3],
) -> Volume<i32> {
    let d = src.dims();
    let centre = src.geometry.index_to_world([
        (d[0] - 1) as f64 / 2.0,
        (d[1] - 1) as f64 / 2.0,
        (d[2] - 1) as f64 / 2.0,
    ]);
    let mut geometry = Geometry {
        spacing,
        origin: [0.0; 3],
        direction,
    };
    let half = geometry.index_to_world([
        (dims[0] - 1) as f64 / 2.0,
        (dims[1] - 1) as f64 / 2.0,
        (dims[2] - 1) as f64 / 2.0,
    ]);
    geometry.origin = std::array::from_fn(|r| centre[r] - half[r]);
    geometry.validate("resampled").unwrap();
    let mut out = Volume::zeros(dims, geometry);
    for ((k, j, i), v) in out.data.indexed_iter_mut() {
        let w = geometry.index_to_world([i as f64, j as f64, k as f64]);
        let idx = src.geometry.world_to_index(w).map(f64::round);
        if (0..3).all(|a| idx[a] >= 0.0 && idx[a] <= (d[a] - 1) as f64) {
            *v = *src.at(idx[0] as usize, idx[1] as usize, idx[2] as usize);
        }
    }
    out
}

/// Parcellates the resampled atlas (RV kept) and scores it on that grid.
fn score_resampled(name: &str, resampled: &Volume<i32>, with_rv: bool) -> (f64, f64) {
    let input = input_from_atlas(resampled, with_rv);
    let result = parcellate(&input, &params(with_rv)).unwrap();
    assert_covers_myocardium(&input, &result);
    assert_eq!(result.used_rv, with_rv, "{name}");
    summarize(name, &dice_per_segment(&result.segments, resampled))
}

#[test]
fn atlas_with_rv_matches_the_reference_segments() {
    let Some(atlas) = atlas() else { return };
    let input = input_from_atlas(&atlas, true);
    let mut fastest = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        parcellate(&input, &params(true)).unwrap();
        fastest = fastest.min(started.elapsed().as_secs_f64());
    }
    println!(
        "atlas parcellation: {:.1} ms (fastest of 3, this build's profile)",
        fastest * 1e3
    );
    let result = parcellate(&input, &params(true)).unwrap();
    assert!(result.used_rv);
    assert_covers_myocardium(&input, &result);
    let (mean, min) = summarize("atlas with RV", &dice_per_segment(&result.segments, &atlas));
    assert!(mean >= 0.85 && min >= 0.70, "mean {mean:.3} min {min:.3}");

    // The atlas is cut along its k axis, apex at low k; the LV itself curves
    // a little, so the estimated axis tilts a few degrees off k.
    let k_axis = atlas.geometry.axis_direction(2);
    let along: f64 = (0..3).map(|r| result.long_axis[r] * k_axis[r]).sum();
    assert!(
        along > 0.98,
        "long axis {:?} is not apex→base along k",
        result.long_axis
    );
    let apex_k = atlas.geometry.world_to_index(result.apex)[2];
    let tip_k = atlas.geometry.world_to_index(result.cavity_tip)[2];
    let base_k = atlas.geometry.world_to_index(result.base)[2];
    assert!(
        apex_k < 3.0 && (tip_k - 5.5).abs() < 1.5 && base_k > 49.0,
        "apex {apex_k} tip {tip_k} base {base_k}"
    );
    // Per-voxel frame agrees with the volume.
    assert_eq!(
        result.voxels.len(),
        input.data.iter().filter(|&&l| l == 2).count()
    );
    for v in result.voxels.iter().step_by(97) {
        assert_eq!(
            *result.segments.at(v.index[0], v.index[1], v.index[2]),
            v.segment
        );
        assert_eq!(v.segment == 17, v.height < 0.0);
    }
}

#[test]
fn atlas_without_rv_uses_the_patient_orientation() {
    let Some(atlas) = atlas() else { return };
    let input = input_from_atlas(&atlas, false);
    let result = parcellate(&input, &params(false)).unwrap();
    assert!(!result.used_rv);
    assert_covers_myocardium(&input, &result);
    let (mean, min) = summarize(
        "atlas without RV",
        &dice_per_segment(&result.segments, &atlas),
    );
    assert!(mean >= 0.75 && min >= 0.6, "mean {mean:.3} min {min:.3}");
}

#[test]
fn atlas_mirrored_grid_gives_the_same_world_labels() {
    let Some(atlas) = atlas() else { return };
    // Flip i and negate the i direction column: the same anatomy in the world.
    let [ni, nj, nk] = atlas.dims();
    let mut geometry = atlas.geometry;
    geometry.origin = atlas.geometry.index_to_world([(ni - 1) as f64, 0.0, 0.0]);
    for row in geometry.direction.iter_mut() {
        row[0] = -row[0];
    }
    let mut mirrored = Volume::zeros([ni, nj, nk], geometry);
    for ((k, j, i), v) in mirrored.data.indexed_iter_mut() {
        *v = *atlas.at(ni - 1 - i, j, k);
    }
    for with_rv in [true, false] {
        let straight = parcellate(&input_from_atlas(&atlas, with_rv), &params(with_rv)).unwrap();
        let flipped = parcellate(&input_from_atlas(&mirrored, with_rv), &params(with_rv)).unwrap();
        let mut same = 0usize;
        let mut total = 0usize;
        for ((k, j, i), &s) in straight.segments.data.indexed_iter() {
            if s > 0 {
                total += 1;
                same += usize::from(*flipped.segments.at(ni - 1 - i, j, k) == s);
            }
        }
        let agreement = same as f64 / total as f64;
        println!(
            "mirrored grid (RV {with_rv}): {:.4} of voxels agree",
            agreement
        );
        assert!(agreement > 0.999, "agreement {agreement}");
    }
}

#[test]
fn atlas_rotated_obliquely_and_resampled() {
    let Some(atlas) = atlas() else { return };
    for (axis, degrees) in [([1.0, 2.0, 0.5], 30.0), ([-0.6, 0.3, 1.0], 35.0)] {
        let direction = matmul(rotation(axis, degrees), atlas.geometry.direction);
        let rotated = resample(&atlas, [150, 150, 64], atlas.geometry.spacing, direction);
        let name = format!("rotated {degrees}° about {axis:?}");
        let (mean, min) = score_resampled(&format!("{name} with RV"), &rotated, true);
        assert!(
            mean >= 0.84 && min >= 0.72,
            "{name}: mean {mean:.3} min {min:.3}"
        );
        let (mean, min) = score_resampled(&format!("{name} without RV"), &rotated, false);
        assert!(
            mean >= 0.75 && min >= 0.6,
            "{name} without RV: mean {mean:.3} min {min:.3}"
        );
    }
}

#[test]
fn atlas_resampled_to_thick_slices() {
    let Some(atlas) = atlas() else { return };
    let direction = atlas.geometry.direction;
    // A 10 mm short-axis stack (slices across the long axis).
    let sa = resample(&atlas, [140, 140, 12], [1.25, 1.25, 10.0], direction);
    let (mean, min) = score_resampled("10 mm short-axis stack with RV", &sa, true);
    assert!(
        mean >= 0.88 && min >= 0.8,
        "10 mm SA: mean {mean:.3} min {min:.3}"
    );
    // 8 mm slices through the long axis (thick along i).
    let la = resample(&atlas, [18, 140, 56], [8.0, 1.25, 2.0], direction);
    let (mean, min) = score_resampled("8 mm long-axis slices with RV", &la, true);
    assert!(
        mean >= 0.80 && min >= 0.6,
        "8 mm LA: mean {mean:.3} min {min:.3}"
    );
    // An oblique 10 mm stack, tilted 20° off the long axis.
    let tilted = matmul(rotation([1.0, 1.0, 0.0], 20.0), direction);
    let oblique = resample(&atlas, [140, 140, 13], [1.25, 1.25, 10.0], tilted);
    let (mean, min) = score_resampled("10 mm stack tilted 20° with RV", &oblique, true);
    assert!(
        mean >= 0.82 && min >= 0.65,
        "tilted 10 mm: mean {mean:.3} min {min:.3}"
    );
}

/// Fraction of the myocardium voxels touching the RV in their own slice
/// (8-neighbourhood) that got a septal segment (2, 3, 8, 9, 14).
fn septal_fraction_at_rv_contact(labels: &Volume<i32>, segments: &Volume<u8>) -> (f64, usize) {
    let [ni, nj, nk] = labels.dims();
    let (mut septal, mut contact) = (0usize, 0usize);
    for k in 0..nk {
        for j in 1..nj - 1 {
            for i in 1..ni - 1 {
                if *labels.at(i, j, k) != 2 {
                    continue;
                }
                let touches = (0..9).any(|n| *labels.at(i + n % 3 - 1, j + n / 3 - 1, k) == 5);
                if touches {
                    contact += 1;
                    septal += usize::from(matches!(*segments.at(i, j, k), 2 | 3 | 8 | 9 | 14));
                }
            }
        }
    }
    (septal as f64 / contact.max(1) as f64, contact)
}

#[test]
fn phantom_septal_segments_face_the_rv() {
    use claim::phantom::{generate, PhantomParams, LABEL_SCHEME};
    for seed in [3u64, 11] {
        let case = generate(&PhantomParams {
            seed,
            with_scar: true,
            ..PhantomParams::default()
        })
        .unwrap();
        let labels = &case.labels;
        let result = parcellate(
            labels,
            &AhaParams {
                labels: LABEL_SCHEME,
                ..AhaParams::default()
            },
        )
        .unwrap();
        assert!(result.used_rv);
        let mut present = [false; 17];
        for (&l, &s) in labels.data.iter().zip(result.segments.data.iter()) {
            assert_eq!(
                LABEL_SCHEME.is_myocardium(l),
                s > 0,
                "label {l} segment {s}"
            );
            if s > 0 {
                present[s as usize - 1] = true;
            }
        }
        assert!(
            present.iter().all(|&p| p),
            "seed {seed}: segments present {present:?}"
        );
        // The phantom's stack runs along its long axis (k, apex at k = 0).
        let k_axis = labels.geometry.axis_direction(2);
        let along: f64 = (0..3).map(|r| result.long_axis[r] * k_axis[r]).sum();
        let (fraction, contact) = septal_fraction_at_rv_contact(labels, &result.segments);
        println!("phantom seed {seed}: long axis · k = {along:.4}; {contact} RV-contact voxels, {fraction:.3} septal");
        assert!(
            along > 0.95,
            "seed {seed}: long axis {:?}",
            result.long_axis
        );
        assert!(
            fraction > 0.9,
            "seed {seed}: only {fraction:.3} of the RV contact is septal"
        );

        // Without the RV the patient orientation only approximates the
        // septum (within about 10° on this phantom), but most of the RV
        // contact still falls on septal segments.
        let no_rv = labels.map(|&l| if l == 5 { 0 } else { l });
        let geometric = parcellate(&no_rv, &AhaParams::default()).unwrap();
        assert!(!geometric.used_rv);
        let (fraction, _) = septal_fraction_at_rv_contact(labels, &geometric.segments);
        println!("phantom seed {seed} without RV: {fraction:.3} septal at the RV contact");
        assert!(fraction > 0.8, "seed {seed} without RV: {fraction:.3}");
    }
}

/// A phantom case's labels, its RV-based parcellation and the parcellation
/// of the same labels with the RV removed (`rotation_deg` for both).
fn phantom_both_ways(
    seed: u64,
    rotation_deg: f64,
) -> (Volume<i32>, AhaParcellation, AhaParcellation) {
    use claim::phantom::{generate, PhantomParams, LABEL_SCHEME};
    let case = generate(&PhantomParams {
        seed,
        ..PhantomParams::default()
    })
    .unwrap();
    let with_rv = parcellate(
        &case.labels,
        &AhaParams {
            labels: LABEL_SCHEME,
            rotation_deg,
            ..AhaParams::default()
        },
    )
    .unwrap();
    let no_rv = case.labels.map(|&l| if l == 5 { 0 } else { l });
    let without_rv = parcellate(
        &no_rv,
        &AhaParams {
            rotation_deg,
            ..AhaParams::default()
        },
    )
    .unwrap();
    assert!(with_rv.used_rv && !without_rv.used_rv);
    (case.labels, with_rv, without_rv)
}

/// Fraction of the myocardium voxels with the same segment in both maps.
fn same_segment_fraction(a: &Volume<u8>, b: &Volume<u8>) -> f64 {
    let (mut same, mut total) = (0usize, 0usize);
    for (&x, &y) in a.data.iter().zip(b.data.iter()) {
        if x > 0 {
            total += 1;
            same += usize::from(x == y);
        }
    }
    same as f64 / total.max(1) as f64
}

fn dot3(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|r| a[r] * b[r]).sum()
}

/// Per segment 1–16, the mean in-plane unit direction (LPS, not
/// normalised) of its voxels from the LV's centre line, which is taken as
/// the myocardium centroid moved along the long axis.
fn segment_directions(labels: &Volume<i32>, result: &AhaParcellation) -> [[f64; 3]; 16] {
    let axis = result.long_axis;
    let in_plane = |v: [f64; 3]| {
        let along = dot3(v, axis);
        [0, 1, 2].map(|r| v[r] - along * axis[r])
    };
    let worlds: Vec<([f64; 3], u8)> = result
        .voxels
        .iter()
        .map(|v| {
            (
                labels.geometry.index_to_world(v.index.map(|x| x as f64)),
                v.segment,
            )
        })
        .collect();
    let mut centre = [0.0; 3];
    for (w, _) in &worlds {
        (0..3).for_each(|r| centre[r] += w[r] / worlds.len() as f64);
    }
    let mut sums = [[0.0; 3]; 16];
    let mut counts = [0usize; 16];
    for (w, s) in &worlds {
        if (1..=16).contains(s) {
            let d = in_plane([0, 1, 2].map(|r| w[r] - centre[r]));
            let n = dot3(d, d).sqrt().max(1e-9);
            (0..3).for_each(|r| sums[*s as usize - 1][r] += d[r] / n);
            counts[*s as usize - 1] += 1;
        }
    }
    std::array::from_fn(|s| sums[s].map(|x| x / counts[s].max(1) as f64))
}

/// Angle (degrees) from `from` to `to`, counter-clockwise as seen from the
/// apex looking towards the base along `axis` (apex → base): a right-handed
/// turn about −axis.
fn turn_seen_from_apex(from: [f64; 3], to: [f64; 3], axis: [f64; 3]) -> f64 {
    let c = [
        from[1] * to[2] - from[2] * to[1],
        from[2] * to[0] - from[0] * to[2],
        from[0] * to[1] - from[1] * to[0],
    ];
    (-dot3(c, axis)).atan2(dot3(from, to)).to_degrees()
}

#[test]
fn phantom_without_rv_agrees_with_the_rv_based_parcellation() {
    // The phantom is oriented like a patient (long axis 35–55° left of the
    // sagittal plane, 15–35° below the axial one): projecting the patient's
    // anterior alone put the septum 19–50° off and agreed on 14–71 % of
    // the voxels (seeds 0–15; on these five 28, 38, 72, 14 and 20 %); the
    // fit of the AHA wall names to all three body axes is within 11° and
    // agrees on 83–94 %.
    let mut fractions = Vec::new();
    for seed in [0u64, 3, 7, 10, 12] {
        let (labels, with_rv, without_rv) = phantom_both_ways(seed, 0.0);
        let fraction = same_segment_fraction(&with_rv.segments, &without_rv.segments);
        let directions = segment_directions(&labels, &without_rv);
        let rv_directions = segment_directions(&labels, &with_rv);
        // The septum between segments 2 and 3 (8 and 9), measured in the
        // world: how far the prior's is from the RV-based one.
        let septum = |d: &[[f64; 3]; 16]| [0, 1, 2].map(|r| d[1][r] + d[2][r] + d[7][r] + d[8][r]);
        let off = turn_seen_from_apex(
            septum(&rv_directions),
            septum(&directions),
            with_rv.long_axis,
        );
        println!("phantom seed {seed}: {fraction:.3} of the myocardium in the RV-based segment without RV; septum {off:+.1}° off (counter-clockwise seen from the apex)");
        assert!(fraction > 0.8, "seed {seed}: agreement {fraction:.3}");
        assert!(off.abs() < 15.0, "seed {seed}: septum {off:.1}° off");
        // Physically: the septum faces the patient's right, segment 1 the
        // front (and, the long axis pointing down, the head), segment 4
        // the feet.
        let unit = |v: [f64; 3]| v.map(|x| x / dot3(v, v).sqrt());
        assert!(
            dot3(unit(septum(&directions)), [-1.0, 0.0, 0.0]) > 0.5,
            "seed {seed}"
        );
        assert!(
            dot3(unit(directions[0]), [0.0, -1.0, 0.0]) > 0.3,
            "seed {seed}"
        );
        assert!(
            dot3(unit(directions[3]), [0.0, 0.0, -1.0]) > 0.5,
            "seed {seed}"
        );
        fractions.push(fraction);
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    println!("phantom without RV: mean agreement {mean:.3}");
    assert!(mean > 0.86, "mean agreement {mean:.3}");
}

#[test]
fn rotation_deg_turns_the_segments_counter_clockwise_seen_from_the_apex() {
    for seed in [1u64, 5] {
        let (labels, with_rv, without_rv) = phantom_both_ways(seed, 0.0);
        let (_, with_rv_turned, without_rv_turned) = phantom_both_ways(seed, 40.0);
        for (name, plain, turned) in [
            ("with RV", &with_rv, &with_rv_turned),
            ("without RV", &without_rv, &without_rv_turned),
        ] {
            assert_eq!(plain.long_axis, turned.long_axis);
            let before = segment_directions(&labels, plain);
            let after = segment_directions(&labels, turned);
            for s in 0..16 {
                let turn = turn_seen_from_apex(before[s], after[s], plain.long_axis);
                assert!(
                    (turn - 40.0).abs() < 10.0,
                    "seed {seed} {name}: segment {} turned {turn:.1}°",
                    s + 1
                );
            }
        }
    }
}

//! Levels across the long axis: slabs, each with the LV centre the angles
//! are measured around and the RV insertion points that fix the angular
//! origin there.

use super::cloud::{LabelCloud, CLASS_RV};
use super::linalg::{add, cross, dot, norm, normalize, reject, scale, sub, Moments, Vec3};

/// The short-axis plane's angular frame, fixed for the whole LV.
///
/// Angles are measured about `axis` (apex → base), counter-clockwise as seen
/// from the apex looking towards the base — the bull's-eye view, where the
/// anterior wall is at the top and the septum on the left — starting at
/// `reference`. In the LPS world frame `left = reference × axis` is the
/// direction 90° counter-clockwise from `reference` in that view, so the
/// handedness is physical and mirrored voxel grids cannot flip it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub axis: Vec3,
    pub reference: Vec3,
    pub left: Vec3,
}

impl Frame {
    /// The frame whose reference is the patient's anterior direction
    /// (LPS −y) projected on the short-axis plane; when the long axis runs
    /// nearly anterior–posterior (within ~12°), superior (LPS +z) stands in.
    pub(super) fn new(axis: Vec3) -> Frame {
        // Only a direction well off the axis (> ~12°) projects reliably.
        let projected = |v: Vec3| {
            let in_plane = reject(v, axis);
            (norm(in_plane) > 0.2)
                .then(|| normalize(in_plane))
                .flatten()
        };
        let reference = projected([0.0, -1.0, 0.0])
            .or_else(|| projected([0.0, 0.0, 1.0]))
            .or_else(|| projected([1.0, 0.0, 0.0]))
            .unwrap_or([1.0, 0.0, 0.0]);
        Frame {
            axis,
            reference,
            left: cross(reference, axis),
        }
    }

    /// Angle (degrees, 0–360) of the in-plane part of `v`.
    pub(super) fn angle_deg(&self, v: Vec3) -> f64 {
        dot(v, self.left)
            .atan2(dot(v, self.reference))
            .to_degrees()
            .rem_euclid(360.0)
    }

    /// The septum's centre (the 2|3 and 8|9 border), degrees in this frame,
    /// estimated from the patient orientation alone — an approximation for
    /// label maps without an RV.
    ///
    /// The AHA names the LV walls after the body direction they face in the
    /// usual chest: the septum faces the patient's right (towards the RV),
    /// the anterior wall the front, the inferior wall the diaphragm below.
    /// Each of these three body directions, projected on the short-axis
    /// plane, implies a septum angle (right: itself; anterior: 90°
    /// counter-clockwise of it; inferior: 90° clockwise of it); the estimate
    /// is their mean weighted by the projected lengths — the in-plane
    /// rotation that best fits the named walls to the body axes (least
    /// squares). A body direction along the long axis has no say, so the
    /// fit never hinges on one of them. When the cues nearly cancel (a long
    /// axis far from its usual course, base to apex towards the patient's
    /// left, front and feet — or a wrong geometry) the septum falls back to
    /// 90° counter-clockwise of the reference, the projected anterior.
    pub(super) fn septum_from_patient_orientation_deg(&self) -> f64 {
        let mut resultant = [0.0, 0.0];
        for (direction, wall_offset_deg) in NAMED_WALLS {
            // In-plane components of the body direction, turned from the
            // wall it names to the septum.
            let (x, y) = (dot(direction, self.reference), dot(direction, self.left));
            let (sin, cos) = (-wall_offset_deg).to_radians().sin_cos();
            resultant[0] += cos * x - sin * y;
            resultant[1] += sin * x + cos * y;
        }
        if resultant[0].hypot(resultant[1]) < MIN_CUE_RESULTANT {
            return 90.0;
        }
        resultant[1]
            .atan2(resultant[0])
            .to_degrees()
            .rem_euclid(360.0)
    }
}

/// Body directions (LPS unit vectors) and the angle (degrees
/// counter-clockwise, seen from the apex, from the septum's centre) of the
/// LV wall the AHA names after each: the septum faces the patient's right
/// (−x), the anterior wall the front (−y, 90° clockwise of the septum), the
/// inferior wall the feet (−z, 90° counter-clockwise of the septum).
const NAMED_WALLS: [(Vec3, f64); 3] = [
    ([-1.0, 0.0, 0.0], 0.0),
    ([0.0, -1.0, 0.0], -90.0),
    ([0.0, 0.0, -1.0], 90.0),
];
/// Length below which the resultant of the [`NAMED_WALLS`] cues is taken
/// as no direction: each cue contributes at most 1, and usual hearts give
/// 1.6–2.4 and any long axis within 90° of the usual course (apex → base
/// towards the patient's right, back and head) more than 0.7; it vanishes
/// where the base lies straight below or in front of the apex.
pub(super) const MIN_CUE_RESULTANT: f64 = 0.5;

/// Thinnest slab (mm): thinner slabs hold too few voxels for a centroid.
const MIN_SLAB_MM: f64 = 2.0;
/// Most slabs: bounds memory for absurd geometries.
const MAX_SLABS: f64 = 10_000.0;

/// Slabs of equal thickness across the long axis covering the LV.
#[derive(Debug, Clone)]
pub(super) struct Levels {
    /// Axis position (mm) of the lower edge of slab 0.
    pub start: f64,
    /// Slab thickness (mm).
    pub width: f64,
    /// LV centre per slab (cavity centroid; borrowed from the nearest slab
    /// with cavity where there is none), lightly smoothed.
    pub centres: Vec<Vec3>,
}

impl Levels {
    /// Slabs along `axis` as thick as a voxel projected on it (at least
    /// 2 mm), so that every slab holds a whole cross-section of the LV.
    pub(super) fn build(cloud: &LabelCloud, axis: Vec3) -> Levels {
        let ts = cloud
            .cavity
            .iter()
            .chain(cloud.myocardium.iter().map(|m| &m.world))
            .map(|p| dot(*p, axis));
        let (lo, hi) = ts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
        let width = cloud
            .projected_voxel_width(axis)
            .max(MIN_SLAB_MM)
            .max((hi - lo) / MAX_SLABS);
        let start = lo - 0.5 * width;
        let count = ((hi - start) / width).floor() as usize + 1;
        let mut levels = Levels {
            start,
            width,
            centres: vec![[0.0; 3]; count],
        };
        let mut moments = vec![Moments::default(); count];
        for p in &cloud.cavity {
            let s = levels.slab_of(dot(*p, axis));
            if let Some(m) = moments.get_mut(s) {
                m.add(*p, 1.0);
            }
        }
        let largest = moments.iter().map(Moments::weight).fold(0.0, f64::max);
        let centroids: Vec<Option<Vec3>> = moments
            .iter()
            .map(|m| {
                m.mean()
                    .filter(|_| m.weight() >= 3.0_f64.min(largest) && m.weight() >= 0.02 * largest)
            })
            .collect();
        let filled = fill_from_nearest(&centroids);
        // [1, 2, 1] smoothing across slabs: damps the jitter of thick or
        // oblique slices without losing the curvature of the LV.
        levels.centres = (0..count)
            .map(|s| {
                let here = filled.get(s).copied().flatten().unwrap_or([0.0; 3]);
                let before = s
                    .checked_sub(1)
                    .and_then(|b| filled.get(b).copied().flatten())
                    .unwrap_or(here);
                let after = filled.get(s + 1).copied().flatten().unwrap_or(here);
                scale(add(add(before, after), scale(here, 2.0)), 0.25)
            })
            .collect();
        levels
    }

    /// Number of slabs.
    pub(super) fn len(&self) -> usize {
        self.centres.len()
    }

    /// Axis position (mm) of the middle of slab `s`.
    pub(super) fn slab_middle(&self, s: usize) -> f64 {
        self.start + (s as f64 + 0.5) * self.width
    }

    /// The slab holding axis position `t` (clamped to the slabs).
    pub(super) fn slab_of(&self, t: f64) -> usize {
        let s = ((t - self.start) / self.width).floor().max(0.0) as usize;
        s.min(self.len().saturating_sub(1))
    }

    /// Slab pair and weight for linear interpolation between slab middles.
    pub(super) fn interpolation(&self, t: f64) -> (usize, usize, f64) {
        let last = self.len().saturating_sub(1);
        let x = ((t - self.start) / self.width - 0.5).clamp(0.0, last as f64);
        let s0 = (x.floor() as usize).min(last);
        let s1 = (s0 + 1).min(last);
        (s0, s1, x - s0 as f64)
    }

    /// LV centre at axis position `t`, interpolated between slabs.
    pub(super) fn centre_at(&self, t: f64) -> Vec3 {
        let (s0, s1, f) = self.interpolation(t);
        let c0 = self.centres.get(s0).copied().unwrap_or([0.0; 3]);
        let c1 = self.centres.get(s1).copied().unwrap_or(c0);
        add(c0, scale(sub(c1, c0), f))
    }
}

/// Each `None` replaced by the nearest `Some` (ties towards lower index).
fn fill_from_nearest<T: Copy>(values: &[Option<T>]) -> Vec<Option<T>> {
    let known: Vec<usize> = (0..values.len()).filter(|&s| values[s].is_some()).collect();
    (0..values.len())
        .map(|s| {
            let nearest = known.iter().min_by_key(|&&k| k.abs_diff(s))?;
            values.get(*nearest).copied().flatten()
        })
        .collect()
}

/// Angular origin per slab: where the septum begins (anterior RV insertion,
/// the 1|2 and 7|8 border) and how wide it is (to the inferior insertion,
/// the 3|4 and 9|10 border), both in degrees of the [`Frame`].
#[derive(Debug, Clone)]
pub(super) struct Insertions {
    /// Anterior insertion per slab, unwrapped so neighbours never differ by
    /// a turn (values may leave 0–360).
    pub anterior: Vec<f64>,
    /// Septal arc per slab (degrees counter-clockwise from the anterior to
    /// the inferior insertion).
    pub septal_arc: Vec<f64>,
    /// Slabs whose insertion points were measured on the RV contact (the
    /// others borrowed them).
    pub measured: Vec<bool>,
    /// True for the standard sectors from the frame alone (no RV).
    pub nominal: bool,
}

/// Largest gap (degrees) within one RV contact arc that is still bridged:
/// voxelisation leaves small holes in the contact line.
const CONTACT_GAP_DEG: usize = 20;
/// Smoothing half-window (mm) of the insertion points across slabs.
const INSERTION_SMOOTHING_MM: f64 = 4.0;

impl Insertions {
    /// The standard sectors without an RV around a septum centred at
    /// `septum_deg` (frame degrees): the basal and mid septum spans 120°
    /// (±60°), the apical one 90° (±45°, see [`Insertions::at`]); segments
    /// 1, 7 and 13 are centred 90° clockwise of the septum.
    pub(super) fn nominal(levels: &Levels, septum_deg: f64, rotation_deg: f64) -> Insertions {
        Insertions {
            anterior: vec![septum_deg - 60.0 + rotation_deg; levels.len()],
            septal_arc: vec![120.0; levels.len()],
            measured: vec![false; levels.len()],
            nominal: true,
        }
    }

    /// Insertion points from where the RV touches the LV myocardium, per
    /// slab; `None` when the RV touches nowhere (or all around).
    pub(super) fn from_rv(
        cloud: &LabelCloud,
        frame: &Frame,
        levels: &Levels,
        rotation_deg: f64,
    ) -> Option<Insertions> {
        if cloud.rv.is_empty() {
            return None;
        }
        let offsets = neighbour_offsets(cloud, frame.axis);
        let mut bins = vec![0u32; levels.len() * 360];
        for m in &cloud.myocardium {
            let [i, j, k] = m.index.map(|x| x as isize);
            let touches = offsets
                .iter()
                .any(|[di, dj, dk]| cloud.class_at(i + di, j + dj, k + dk) == CLASS_RV);
            if !touches {
                continue;
            }
            let t = dot(m.world, frame.axis);
            let angle = frame.angle_deg(sub(m.world, levels.centre_at(t)));
            let bin = (angle.floor() as usize).min(359);
            if let Some(b) = bins.get_mut(levels.slab_of(t) * 360 + bin) {
                *b += 1;
            }
        }
        let runs: Vec<Vec<(f64, f64)>> = bins.chunks(360).map(contact_runs).collect();
        let trusted = track_septum(&runs)?;
        let measured: Vec<bool> = trusted.iter().map(Option::is_some).collect();
        let filled = fill_from_nearest(&trusted);
        let mut anterior: Vec<f64> = Vec::with_capacity(filled.len());
        let mut septal_arc = Vec::with_capacity(filled.len());
        for arc in &filled {
            let (start, len) = (*arc)?;
            let unwrapped = match anterior.last() {
                Some(&prev) => prev + (start - prev + 180.0).rem_euclid(360.0) - 180.0,
                None => start,
            };
            anterior.push(unwrapped);
            septal_arc.push(len);
        }
        let half = (INSERTION_SMOOTHING_MM / levels.width).round() as usize;
        let anterior = moving_average(&anterior, half)
            .into_iter()
            .map(|a| a + rotation_deg)
            .collect();
        let septal_arc = moving_average(&septal_arc, half);
        Some(Insertions {
            anterior,
            septal_arc,
            measured,
            nominal: false,
        })
    }

    /// Anterior insertion and septal arc at axis position `t`, for a voxel
    /// of the apical ring when `apical` (which matters for the nominal
    /// sectors only: their apical septum is the 90° quadrant).
    pub(super) fn at(&self, levels: &Levels, t: f64, apical: bool) -> (f64, f64) {
        let (s0, s1, f) = levels.interpolation(t);
        let get = |v: &Vec<f64>, s: usize| v.get(s).copied().unwrap_or(0.0);
        let lerp = |v: &Vec<f64>| get(v, s0) + f * (get(v, s1) - get(v, s0));
        let (anterior, arc) = (lerp(&self.anterior), lerp(&self.septal_arc));
        if self.nominal && apical {
            (anterior + 15.0, 90.0)
        } else {
            (anterior, arc)
        }
    }
}

/// Voxel offsets at which an RV voxel makes a myocardium voxel touch the
/// RV: those within about 3 mm, plus the direct neighbours that lie across
/// the long axis (level with the voxel) however far apart thick slices put
/// them — so a septum sampled by thick long-axis slices still touches, while
/// the next slice of a thick short-axis stack, at another level, does not.
fn neighbour_offsets(cloud: &LabelCloud, axis: Vec3) -> Vec<[isize; 3]> {
    let finest = cloud.spacing.iter().copied().fold(f64::INFINITY, f64::min);
    let reach = (1.5 * finest).max((3.0f64).min(3.0 * finest));
    let radius = cloud.spacing.map(|s| ((reach / s).floor() as isize).max(1));
    let mut offsets = Vec::new();
    for dk in -radius[2]..=radius[2] {
        for dj in -radius[1]..=radius[1] {
            for di in -radius[0]..=radius[0] {
                let d = [di, dj, dk];
                let world = (0..3).fold([0.0; 3], |acc, c| {
                    add(acc, scale(cloud.steps[c], d[c] as f64))
                });
                let length = norm(world);
                let adjacent = d.iter().all(|x| x.abs() <= 1);
                let level = dot(world, axis).abs() <= reach + 1e-9;
                if length > 0.0 && (length <= reach + 1e-9 || (adjacent && level)) {
                    offsets.push(d);
                }
            }
        }
    }
    offsets
}

/// The circular runs of occupied 1° bins, bridging gaps up to
/// [`CONTACT_GAP_DEG`]: `(start, length)` in degrees; one 360° run when
/// the bins go all around.
fn contact_runs(bins: &[u32]) -> Vec<(f64, f64)> {
    let n_bins = bins.len();
    let occupied: Vec<usize> = (0..n_bins).filter(|&b| bins[b] > 0).collect();
    let n = occupied.len();
    if n == 0 {
        return Vec::new();
    }
    // Empty bins after occupied[m] before the next occupied one (circular).
    let gap_after = |m: usize| (occupied[(m + 1) % n] + n_bins - occupied[m] - 1) % n_bins;
    let breaks: Vec<usize> = (0..n)
        .filter(|&m| n == 1 || gap_after(m) > CONTACT_GAP_DEG)
        .collect();
    if breaks.is_empty() {
        return vec![(0.0, n_bins as f64)];
    }
    breaks
        .iter()
        .enumerate()
        .map(|(r, &b)| {
            let start = occupied[(b + 1) % n];
            let end = occupied[breaks[(r + 1) % breaks.len()]];
            (start as f64, ((end + n_bins - start) % n_bins + 1) as f64)
        })
        .collect()
}

/// Margin (degrees) by which a level's septum may move from its
/// neighbour's and still be recognised as the same contact.
const TRACK_MARGIN_DEG: f64 = 20.0;
/// A contact arc shorter than this fraction of its neighbour's is the RV
/// grazing the LV (its apical tip, the basal rim), not the septum.
const GRAZE_FRACTION: f64 = 0.6;
/// Longest believable septum (degrees).
const MAX_SEPTUM_DEG: f64 = 330.0;

/// The septal contact arc `(start, length)` per slab, or `None` where the
/// RV does not show it. Starts at the slab with the longest contact run and
/// walks towards apex and base; each slab takes the span of its runs that
/// meet its neighbour's septum (so a contact line broken by a few voxels
/// stays one septum, and contact elsewhere is ignored), unless that span is
/// much shorter than the neighbour's.
fn track_septum(runs: &[Vec<(f64, f64)>]) -> Option<Vec<Option<(f64, f64)>>> {
    let (seed, first) = runs
        .iter()
        .enumerate()
        .flat_map(|(s, r)| r.iter().map(move |run| (s, *run)))
        .filter(|(_, (_, len))| *len <= MAX_SEPTUM_DEG)
        .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1))?;
    let mut arcs: Vec<Option<(f64, f64)>> = vec![None; runs.len()];
    arcs[seed] = Some(first);
    let walk = |order: &mut dyn Iterator<Item = usize>, arcs: &mut Vec<Option<(f64, f64)>>| {
        let mut reference = first;
        for s in order {
            let span = runs.get(s).and_then(|r| span_meeting(r, reference));
            arcs[s] = span
                .filter(|(_, len)| *len >= GRAZE_FRACTION * reference.1 && *len <= MAX_SEPTUM_DEG);
            if let Some(arc) = arcs[s] {
                reference = arc;
            }
        }
    };
    walk(&mut (seed + 1..runs.len()), &mut arcs);
    walk(&mut (0..seed).rev(), &mut arcs);
    Some(arcs)
}

/// The span (start, length) of the runs that meet `reference` widened by
/// [`TRACK_MARGIN_DEG`] on both sides; `None` when none does.
fn span_meeting(runs: &[(f64, f64)], reference: (f64, f64)) -> Option<(f64, f64)> {
    let origin = reference.0 - TRACK_MARGIN_DEG;
    let window = reference.1 + 2.0 * TRACK_MARGIN_DEG;
    let mut span: Option<(f64, f64)> = None;
    for &(start, len) in runs {
        // Run start relative to the widened reference, in (-len, 360 - len].
        let mut x = (start - origin).rem_euclid(360.0);
        if x + len > 360.0 {
            x -= 360.0;
        }
        if x < window && x + len > 0.0 {
            span = Some(match span {
                None => (x, x + len),
                Some((lo, hi)) => (lo.min(x), hi.max(x + len)),
            });
        }
    }
    span.map(|(lo, hi)| ((origin + lo).rem_euclid(360.0), (hi - lo).min(360.0)))
}

/// Centred moving average with half-window `half` (shrinking at the ends).
fn moving_average(values: &[f64], half: usize) -> Vec<f64> {
    (0..values.len())
        .map(|s| {
            let lo = s.saturating_sub(half);
            let hi = (s + half).min(values.len().saturating_sub(1));
            let window = &values[lo..=hi];
            window.iter().sum::<f64>() / window.len() as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_runs_bridge_small_gaps_and_wrap() {
        let mut bins = vec![0u32; 360];
        for b in (350..360).chain(0..40).chain(50..60) {
            bins[b] = 1;
        }
        bins[200] = 1;
        let runs = contact_runs(&bins);
        assert_eq!(runs, vec![(200.0, 1.0), (350.0, 70.0)]);
        assert!(contact_runs(&vec![0u32; 360]).is_empty());
        assert_eq!(contact_runs(&vec![1u32; 360]), vec![(0.0, 360.0)]);
    }

    #[test]
    fn septum_tracking_joins_broken_contact_and_drops_grazes() {
        let runs = vec![
            vec![(100.0, 20.0)],                // apical graze: too short
            vec![(60.0, 100.0)],                // septum
            vec![(50.0, 120.0), (250.0, 10.0)], // longest: seed; far patch ignored
            vec![(45.0, 40.0), (110.0, 70.0)],  // broken contact line
            vec![],                             // no contact
        ];
        let arcs = track_septum(&runs).unwrap();
        assert_eq!(arcs[2], Some((50.0, 120.0)));
        assert_eq!(arcs[1], Some((60.0, 100.0)));
        assert_eq!(arcs[0], None);
        assert_eq!(arcs[3], Some((45.0, 135.0)));
        assert_eq!(arcs[4], None);
        assert!(track_septum(&[vec![], vec![(0.0, 360.0)]]).is_none());
    }

    #[test]
    fn frame_turns_counter_clockwise_seen_from_the_apex() {
        // Long axis along LPS +z (apex below): anterior is the reference and
        // 90° counter-clockwise seen from below is the patient's right (−x).
        let f = Frame::new([0.0, 0.0, 1.0]);
        assert!((f.reference[1] + 1.0).abs() < 1e-12);
        assert!((f.angle_deg([-1.0, 0.0, 0.0]) - 90.0).abs() < 1e-9);
        assert!((f.angle_deg([1.0, 0.0, 0.0]) - 270.0).abs() < 1e-9);
    }
}

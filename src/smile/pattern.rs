//! Scar patterns: the ischaemic wavefront (with its MVO core), the
//! non-ischaemic patterns that spare the endocardium, and the preset that
//! reproduces the upstream CLAIM generator.
//!
//! All patterns work on the myocardium voxels of a
//! [`SmileContext`](super::SmileContext) and hit the
//! burden by choosing exactly `round(burden × myocardium voxels)` voxels
//! (the CLAIM preset by tuning its threshold instead).
//!
//! **Ischaemic.** A culprit territory, a contiguous set of one or two of its segments
//! ([`sample_contiguous`]) and a centre on their endocardium are drawn.
//! Every voxel gets a lateral distance: mm to the centre, plus a smooth
//! random field of ±[`LATERAL_NOISE_MM`] (irregular borders), plus
//! [`SEGMENT_BORDER_PENALTY`] × its distance to the chosen segments (so the
//! scar fills them before the rest of the territory); and a transmural depth
//! (0 on the endocardial layer, else the normalised depth plus a smooth
//! random field: a ragged wavefront). The score `lateral / extent + depth /
//! transmurality` has a lens as level set 1: as deep as the transmurality at
//! the infarct's core, thinning to the endocardial layer at its border. The
//! extent is set (bisection) so that the lens inside the territory holds
//! the burden; voxels outside the territory come in a later tier. The scar
//! then grows as a priority flood from the endocardial layer (26-connected,
//! lowest score first) until it holds exactly the burden: every component
//! touches the LV cavity by construction — a wavefront. When the territory
//! cannot hold the burden at the asked transmurality, the core is deepened
//! (reported); when it cannot hold it even transmurally, the scar spills
//! into neighbouring territories (reported as `territory_fraction`).
//! The optional MVO core is the lowest part of a flatter lens at the same
//! centre, grown from the endocardium inside the scar's interior (no MVO
//! voxel shares a face with healthy myocardium).
//!
//! **Non-ischaemic** patterns never touch the endocardial layer nor any voxel
//! shallower than [`SPARED_DEPTH`]: mid-wall stripes (depth 0.3–0.7, a
//! stripe in each short-axis slice running along the long axis, patchy,
//! septal in 60 % of draws), sub-epicardial (depth ≥ 0.6, patchy,
//! inferolateral in 70 % of draws) and
//! RV-insertion-point (depth 0.25–0.8, centred on the anterior 1|2, 7|8 or
//! inferior 3|4, 9|10 segment border).
//!
//! **CLAIM preset** (`reference/smile.md`, steps 2–4): upstream segment pick
//! ([`sample_upstream`]), per segment a blob field of porosity 0.21 × U(3, 12)
//! eroded in-plane by a random 1/3/5/7 square and masked by that segment's
//! myocardium, union, hole filling, Gaussian σ = 1 voxel, threshold 0.3,
//! largest 26-connected component — then clipped to the myocardium (the
//! upstream mask leaves it by 16–18 %).

use super::field::SmoothField;
use super::generate::{MyoGrid, SmileParams};
use super::territory::{sample_contiguous, sample_upstream, Territory};
use crate::error::{Error, Result};
use crate::imgproc::components::unflatten;
use crate::imgproc::{
    erode_box, fill_holes, gaussian_smooth_voxels, largest_component, Connectivity,
};
use crate::rng::Rng;
use crate::volume::Volume;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;

/// The kind of scar to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Infarct in one coronary territory, growing from the endocardium.
    #[default]
    Ischemic,
    /// Non-ischaemic mid-wall stripe.
    Midwall,
    /// Non-ischaemic sub-epicardial scar.
    Epicardial,
    /// Non-ischaemic fibrosis at an RV insertion point.
    Insertion,
    /// The upstream CLAIM generator's distribution, confined to the myocardium.
    Claim,
}

impl Pattern {
    /// Every pattern, in a fixed order.
    pub const ALL: [Pattern; 5] = [
        Pattern::Ischemic,
        Pattern::Midwall,
        Pattern::Epicardial,
        Pattern::Insertion,
        Pattern::Claim,
    ];

    /// Lower-case name (`"ischemic"`, `"midwall"`, `"epicardial"`,
    /// `"insertion"`, `"claim"`).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Ischemic => "ischemic",
            Pattern::Midwall => "midwall",
            Pattern::Epicardial => "epicardial",
            Pattern::Insertion => "insertion",
            Pattern::Claim => "claim",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
            "ischemic" | "ischaemic" => Ok(Pattern::Ischemic),
            "midwall" | "mid-wall" => Ok(Pattern::Midwall),
            "epicardial" | "subepicardial" | "sub-epicardial" => Ok(Pattern::Epicardial),
            "insertion" | "rv-insertion" | "insertion-point" => Ok(Pattern::Insertion),
            "claim" => Ok(Pattern::Claim),
            other => Err(Error::invalid(format!(
                "pattern: expected one of ischemic, midwall, epicardial, insertion, claim; got {other:?}"
            ))),
        }
    }
}

/// Lowest transmurality at which an MVO core is placed.
pub const MVO_MIN_TRANSMURALITY: f64 = 0.5;
/// Amplitude (mm) of the random field added to the lateral distance: the
/// raggedness of scar borders.
pub const LATERAL_NOISE_MM: f64 = 8.0;
/// Score added per mm of distance outside the chosen segments.
pub const SEGMENT_BORDER_PENALTY: f64 = 3.0;
/// Non-ischaemic patterns leave every voxel shallower than this alone.
pub const SPARED_DEPTH: f64 = 0.2;

/// Lateral noise features (mm) and depth-noise features (mm).
const LATERAL_CELL_MM: f64 = 14.0;
const DEPTH_CELL_MM: f64 = 10.0;
/// Amplitude of the smooth random field added to the normalised depth:
/// the raggedness of the wavefront.
const DEPTH_NOISE: f64 = 0.1;
/// Most segments the culprit set holds (1 to this many, drawn uniformly):
/// small sets spread draws over the territory (mean pairwise Dice of 20
/// draws at burden 0.15 on the atlas: 0.20–0.25 over ten seed ranges).
const MAX_CULPRIT_SEGMENTS: usize = 2;
/// Weight of depth against lateral distance in the MVO core's score
/// (the scar's lens has 1).
const MVO_DEPTH_WEIGHT: f64 = 0.35;
/// Largest share of the territory's voxels shallower than the core depth
/// that the infarct may fill before its core is deepened: room to spare
/// keeps a compact, tapered lens rather than a thin band over the whole
/// territory, so that draws in one territory differ.
const LENS_FILL: f64 = 0.35;
/// Score offsets of later tiers (far above any lateral score in mm).
const TIER_LATER: f64 = 1.0e4;
const TIER_OUTSIDE: f64 = 1.0e6;

/// What a myocardium voxel becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lesion {
    Healthy,
    Scar,
    Mvo,
}

/// The outcome of one pattern draw, before it is written into labels.
#[derive(Debug, Clone)]
pub(crate) struct Draw {
    /// Per myocardium voxel (index into `MyoGrid::voxels`).
    pub lesion: Vec<Lesion>,
    pub territory: Option<Territory>,
    pub segments: Vec<u8>,
    pub burden_target: Option<f64>,
    pub transmurality: Option<f64>,
}

/// A total order on f32 scores as u32 keys (negative scores sort first).
fn score_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn distance(a: [f32; 3], b: [f64; 3]) -> f64 {
    let d = [
        f64::from(a[0]) - b[0],
        f64::from(a[1]) - b[1],
        f64::from(a[2]) - b[2],
    ];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

fn voxel_count(burden: f64, n: usize) -> usize {
    ((burden * n as f64).round() as usize).min(n)
}

fn position(pos: [f32; 3]) -> [f64; 3] {
    pos.map(f64::from)
}

/// Priority flood over 26-connected myocardium voxels where `allowed`:
/// starting from `seeds`, repeatedly takes the queued voxel of lowest score
/// (ties by index) and queues its neighbours, until `count` voxels are
/// taken or nothing is left. Each taken voxel is connected to a seed through
/// taken voxels.
fn flood(
    grid: &MyoGrid,
    score: &[f32],
    seeds: impl Iterator<Item = usize>,
    allowed: impl Fn(usize) -> bool,
    count: usize,
) -> Vec<usize> {
    let offsets = Connectivity::Vertex26.offsets();
    let mut queued = vec![false; grid.voxels.len()];
    let mut heap = BinaryHeap::new();
    let key = |v: usize| score.get(v).map_or(u32::MAX, |s| score_key(*s));
    for s in seeds {
        if s < queued.len() && !queued[s] && allowed(s) {
            queued[s] = true;
            heap.push(Reverse((key(s), s as u32)));
        }
    }
    let mut taken = Vec::with_capacity(count);
    let mut around = Vec::with_capacity(26);
    while taken.len() < count {
        let Some(Reverse((_, v))) = heap.pop() else {
            break;
        };
        let v = v as usize;
        taken.push(v);
        grid.neighbours(v, &offsets, &mut around);
        for &m in &around {
            if !queued[m] && allowed(m) {
                queued[m] = true;
                heap.push(Reverse((key(m), m as u32)));
            }
        }
    }
    taken
}

/// The artery to use: the asked one, or one drawn by the culprit prior
/// among arteries whose territory has myocardium in the segment map.
fn choose_territory(grid: &MyoGrid, asked: Territory, rng: &mut Rng) -> Result<Territory> {
    let voxels = |t: Territory| {
        t.segments()
            .iter()
            .map(|s| grid.segment_count(*s))
            .sum::<usize>()
    };
    if asked != Territory::Any {
        if voxels(asked) == 0 {
            return Err(Error::invalid(format!(
                "territory {asked} (segments {:?}) has no myocardium in the segment map",
                asked.segments()
            )));
        }
        return Ok(asked);
    }
    let present: Vec<(Territory, f64)> = Territory::CULPRIT_PRIOR
        .into_iter()
        .filter(|(t, _)| voxels(*t) > 0)
        .collect();
    let total: f64 = present.iter().map(|(_, p)| p).sum();
    if present.is_empty() || total <= 0.0 {
        return Err(Error::invalid(
            "the segment map assigns no myocardium voxel to any AHA segment 1–17",
        ));
    }
    let mut u = rng.uniform() * total;
    for (t, p) in &present {
        if u < *p {
            return Ok(*t);
        }
        u -= p;
    }
    Ok(present[present.len() - 1].0)
}

/// A centre for the lesion: one of `candidates`, drawn uniformly (so that
/// draws in one territory spread over it rather than pile up at its middle).
fn random_point(grid: &MyoGrid, candidates: &[usize], rng: &mut Rng) -> Option<[f64; 3]> {
    if candidates.is_empty() {
        return None;
    }
    let v = candidates[rng.below(candidates.len() as u64) as usize];
    grid.voxels.get(v).map(|voxel| position(voxel.pos))
}

/// The ischaemic wavefront (see the module docs).
pub(crate) fn ischemic(grid: &MyoGrid, params: &SmileParams, rng: &Rng) -> Result<Draw> {
    let n = grid.voxels.len();
    let mut pick = rng.fork(1);
    let territory = choose_territory(grid, params.territory, &mut pick)?;
    let present: Vec<u8> = territory
        .segments()
        .iter()
        .copied()
        .filter(|s| grid.segment_count(*s) > 0)
        .collect();
    let count = 1 + pick.below(present.len().min(MAX_CULPRIT_SEGMENTS) as u64) as usize;
    let chosen = sample_contiguous(&present, count, &mut pick);
    let territory_size: usize = present.iter().map(|s| grid.segment_count(*s)).sum();

    let mut amounts = rng.fork(2);
    let burden = match params.burden {
        Some(b) => b,
        None => {
            let cap = 0.9 * territory_size as f64 / n as f64;
            amounts.uniform_range(0.05, cap.clamp(0.05, 0.40))
        }
    };
    let target = voxel_count(burden, n);
    let asked_transmurality = match params.transmurality {
        Some(t) => t,
        None if params.mvo => amounts.uniform_range(0.75, 1.0),
        None => amounts.uniform_range(0.3, 1.0),
    };

    let mut field_rng = rng.fork(3);
    let lateral_noise = SmoothField::new(grid.extent_mm, LATERAL_CELL_MM, 2, &mut field_rng)?;
    let depth_noise = SmoothField::new(grid.extent_mm, DEPTH_CELL_MM, 2, &mut field_rng)?;
    let spacing = grid.geometry.spacing;
    let (lateral_noise, depth_noise) = (
        lateral_noise.sampler(grid.dims, spacing),
        depth_noise.sampler(grid.dims, spacing),
    );

    let in_chosen: Vec<usize> = (0..n)
        .filter(|&v| chosen.contains(&grid.voxels[v].segment))
        .collect();
    let endocardial_chosen: Vec<usize> = in_chosen
        .iter()
        .copied()
        .filter(|&v| grid.voxels[v].endocardial)
        .collect();
    let mut centre_rng = rng.fork(4);
    let centre = random_point(grid, &endocardial_chosen, &mut centre_rng)
        .or_else(|| random_point(grid, &in_chosen, &mut centre_rng))
        .ok_or_else(|| {
            Error::Internal("ischemic draw: the chosen segments hold no voxel".into())
        })?;

    let mut in_territory = vec![false; n];
    let mut lateral = vec![0.0f64; n];
    let mut depth = vec![0.0f64; n];
    // The noise only shapes voxels the scar can reach before it spills:
    // sample it in the territory, everywhere only when the scar must spill.
    let noisy_everywhere = territory_size < target;
    for (v, voxel) in grid.voxels.iter().enumerate() {
        let ijk = unflatten(grid.dims, voxel.crop as usize);
        in_territory[v] = territory.contains(voxel.segment);
        let (lateral_jitter, depth_jitter) = if noisy_everywhere || in_territory[v] {
            (
                LATERAL_NOISE_MM * lateral_noise.at(ijk),
                DEPTH_NOISE * depth_noise.at(ijk),
            )
        } else {
            (0.0, 0.0)
        };
        let to_chosen = chosen
            .iter()
            .map(|s| grid.distance_to_segment(*s, v))
            .fold(f32::INFINITY, f32::min);
        let to_chosen = if to_chosen.is_finite() {
            f64::from(to_chosen)
        } else {
            1.0e3
        };
        lateral[v] =
            (distance(voxel.pos, centre) + lateral_jitter + SEGMENT_BORDER_PENALTY * to_chosen)
                .max(0.0);
        // The innermost layer counts as depth 0, so transmurality 0 leaves
        // exactly that layer; deeper voxels get a ragged wavefront.
        depth[v] = if voxel.endocardial {
            0.0
        } else {
            (f64::from(voxel.depth) + depth_jitter).max(1e-3)
        };
    }
    // Lens score: lateral / extent + depth / core depth. Its level set 1 is
    // an infarct as deep as the transmurality at its core, thinning to the
    // endocardial layer at its lateral border.
    let lens = |extent: f64, core: f64, v: usize| lateral[v] / extent + depth[v] / core;
    let territory_voxels: Vec<usize> = (0..n).filter(|&v| in_territory[v]).collect();
    let unlimited = 1.0e9;
    let (core, extent) = if territory_voxels.len() < target {
        // The whole territory cannot hold the burden: take all of it, then spill.
        (1.0 + DEPTH_NOISE + 1e-3, unlimited)
    } else if target == 0 {
        (asked_transmurality.max(1e-3), 1.0)
    } else {
        // Deepen the core only as far as the territory needs: at unlimited
        // extent the lens holds every territory voxel shallower than the
        // core; asking for room to spare (LENS_FILL) keeps a tapered lens
        // rather than a uniform band over the whole territory.
        let mut depths: Vec<f64> = territory_voxels.iter().map(|&v| depth[v]).collect();
        let room = ((target as f64 / LENS_FILL).ceil() as usize).clamp(target, depths.len());
        let (_, needed, _) = depths.select_nth_unstable_by(room - 1, f64::total_cmp);
        let core = asked_transmurality
            .max(*needed * (1.0 + 1e-6) + 1e-9)
            .max(1e-3);
        // Then the smallest extent whose lens holds the burden: voxel v is
        // inside once extent ≥ lateral / (1 − depth / core).
        let mut reach: Vec<f64> = territory_voxels
            .iter()
            .map(|&v| {
                let room = 1.0 - depth[v] / core;
                if room > 0.0 {
                    lateral[v] / room
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let (_, extent, _) = reach.select_nth_unstable_by(target - 1, f64::total_cmp);
        (core, extent.clamp(1e-3, unlimited))
    };
    let transmurality = core.min(1.0);

    let score: Vec<f32> = (0..n)
        .map(|v| {
            let s = if in_territory[v] {
                lens(extent, core, v)
            } else {
                TIER_OUTSIDE + lateral[v] + 50.0 * depth[v]
            };
            s as f32
        })
        .collect();
    let seeds = (0..n).filter(|&v| grid.voxels[v].endocardial);
    let taken = flood(grid, &score, seeds, |_| true, target);
    if taken.len() < target {
        return Err(Error::invalid(format!(
            "burden {burden} needs {target} scar voxels but only {} myocardium voxels connect to the LV cavity",
            taken.len()
        )));
    }
    let mut lesion = vec![Lesion::Healthy; n];
    for &v in &taken {
        lesion[v] = Lesion::Scar;
    }

    if params.mvo && transmurality >= MVO_MIN_TRANSMURALITY && !taken.is_empty() {
        let mut mvo_rng = rng.fork(5);
        let fraction = mvo_rng.uniform_range(0.10, 0.25);
        let mvo_count = ((fraction * taken.len() as f64).round() as usize).clamp(1, taken.len());
        // A flatter lens (depth weighted by MVO_DEPTH_WEIGHT) nested at the
        // scar's centre: a compact sub-endocardial core a few voxels deep,
        // not a sheet along the endocardium. Only scar voxels without a
        // healthy face neighbour qualify, so the MVO is wrapped in scar
        // wherever it meets the myocardium.
        let core_score: Vec<f32> = (0..n)
            .map(|v| (lateral[v] / extent + MVO_DEPTH_WEIGHT * depth[v] / core) as f32)
            .collect();
        let faces = Connectivity::Face6.offsets();
        let mut around = Vec::with_capacity(6);
        let mut interior = vec![false; n];
        for &v in &taken {
            grid.neighbours(v, &faces, &mut around);
            interior[v] = around.iter().all(|&m| lesion[m] != Lesion::Healthy);
        }
        let start = taken
            .iter()
            .copied()
            .filter(|&v| interior[v] && grid.voxels[v].endocardial)
            .min_by_key(|&v| (score_key(core_score[v]), v))
            .or_else(|| {
                taken
                    .iter()
                    .copied()
                    .filter(|&v| interior[v])
                    .min_by_key(|&v| (score_key(core_score[v]), v))
            });
        let core = flood(
            grid,
            &core_score,
            start.into_iter(),
            |v| interior[v],
            mvo_count,
        );
        for v in core {
            lesion[v] = Lesion::Mvo;
        }
    }

    Ok(Draw {
        lesion,
        territory: Some(territory),
        segments: chosen,
        burden_target: Some(burden),
        transmurality: Some(transmurality.min(1.0)),
    })
}

/// Where a non-ischaemic pattern goes, and how it is shaped.
struct NonIschemicShape {
    /// Segments it prefers, and how often it goes there.
    preferred: &'static [u8],
    preference: f64,
    /// Transmural band (depth) it lies in.
    band: (f64, f64),
    /// Weight of the long-axis component of distances (< 1: the lesion
    /// runs further along the long axis than around the circumference).
    long_axis_weight: f64,
    /// Gaps where the patch field falls below this (patchy); `None` = solid.
    gap_below: Option<f64>,
}

/// RV insertion points as (segment, its neighbour across the insertion):
/// anterior 2|1 and 8|7, inferior 3|4 and 9|10.
const INSERTION_BORDERS: [(u8, u8); 4] = [(2, 1), (8, 7), (3, 4), (9, 10)];

/// Mid-wall, sub-epicardial and RV-insertion patterns (see the module docs).
pub(crate) fn non_ischemic(grid: &MyoGrid, params: &SmileParams, rng: &Rng) -> Result<Draw> {
    let n = grid.voxels.len();
    let shape = match params.pattern {
        Pattern::Midwall => NonIschemicShape {
            preferred: &[2, 3, 8, 9, 14],
            preference: 0.6,
            band: (0.3, 0.7),
            long_axis_weight: 0.6,
            gap_below: Some(-0.3),
        },
        Pattern::Epicardial => NonIschemicShape {
            preferred: &[4, 5, 10, 11, 15, 16],
            preference: 0.7,
            band: (0.6, 1.0),
            long_axis_weight: 0.8,
            gap_below: Some(-0.3),
        },
        Pattern::Insertion => NonIschemicShape {
            preferred: &[],
            preference: 0.0,
            band: (0.25, 0.8),
            long_axis_weight: 1.0,
            gap_below: None,
        },
        other => {
            return Err(Error::Internal(format!(
                "{other} is not a non-ischemic pattern"
            )))
        }
    };
    let mut amounts = rng.fork(2);
    let burden = params
        .burden
        .unwrap_or_else(|| amounts.uniform_range(0.03, 0.15));
    let target = voxel_count(burden, n);
    let spared = |v: usize| {
        let voxel = &grid.voxels[v];
        voxel.endocardial || f64::from(voxel.depth) < SPARED_DEPTH
    };
    let candidates: Vec<usize> = (0..n).filter(|&v| !spared(v)).collect();
    if candidates.len() < target {
        return Err(Error::invalid(format!(
            "burden {burden} needs {target} voxels but only {} myocardium voxels spare the endocardium (depth ≥ {SPARED_DEPTH}) for the {} pattern",
            candidates.len(),
            params.pattern
        )));
    }

    // Where: a segment (or an insertion border), then a centre in its band.
    let mut pick = rng.fork(1);
    let in_band = |v: usize| {
        let d = f64::from(grid.voxels[v].depth);
        d >= shape.band.0 && d <= shape.band.1 && !spared(v)
    };
    let (segments, pool): (Vec<u8>, Vec<usize>) = if params.pattern == Pattern::Insertion {
        let borders: Vec<(u8, u8)> = INSERTION_BORDERS
            .into_iter()
            .filter(|(a, b)| grid.segment_count(*a) > 0 && grid.segment_count(*b) > 0)
            .collect();
        if borders.is_empty() {
            return Err(Error::invalid(
                "the insertion pattern needs segments on both sides of an RV insertion point (1|2, 7|8, 3|4 or 9|10)",
            ));
        }
        let (a, b) = borders[pick.below(borders.len() as u64) as usize];
        let mut near: Vec<(u32, usize)> = (0..n)
            .filter(|&v| grid.voxels[v].segment == a && in_band(v))
            .map(|v| (score_key(grid.distance_to_segment(b, v)), v))
            .collect();
        near.sort_unstable();
        near.truncate((near.len() / 10).max(1));
        (vec![a, b], near.into_iter().map(|(_, v)| v).collect())
    } else {
        let present = |list: &[u8]| -> Vec<u8> {
            list.iter()
                .copied()
                .filter(|s| grid.segment_count(*s) > 0)
                .collect()
        };
        let preferred = present(shape.preferred);
        let all = present(&(1..=17).collect::<Vec<u8>>());
        let list = if !preferred.is_empty() && pick.uniform() < shape.preference {
            preferred
        } else {
            all
        };
        let segment = list
            .get(pick.below(list.len() as u64) as usize)
            .copied()
            .ok_or_else(|| {
                Error::invalid("the segment map assigns no myocardium voxel to any AHA segment")
            })?;
        let mut pool: Vec<usize> = (0..n)
            .filter(|&v| grid.voxels[v].segment == segment && in_band(v))
            .collect();
        if pool.is_empty() {
            pool = (0..n)
                .filter(|&v| grid.voxels[v].segment == segment && !spared(v))
                .collect();
        }
        (vec![segment], pool)
    };
    let centre_pool = if pool.is_empty() {
        candidates.clone()
    } else {
        pool
    };
    let centre_voxel = centre_pool
        .get(pick.below(centre_pool.len() as u64) as usize)
        .copied()
        .ok_or_else(|| Error::invalid("no myocardium voxel spares the endocardium"))?;
    let centre = position(grid.voxels[centre_voxel].pos);

    let mut field_rng = rng.fork(3);
    let lateral_noise = SmoothField::new(grid.extent_mm, 12.0, 2, &mut field_rng)?;
    let depth_noise = SmoothField::new(grid.extent_mm, DEPTH_CELL_MM, 2, &mut field_rng)?;
    let patch_noise = SmoothField::new(grid.extent_mm, 9.0, 1, &mut field_rng)?;
    let spacing = grid.geometry.spacing;
    let (lateral_noise, depth_noise, patch_noise) = (
        lateral_noise.sampler(grid.dims, spacing),
        depth_noise.sampler(grid.dims, spacing),
        patch_noise.sampler(grid.dims, spacing),
    );
    let axis = grid.long_axis;
    let mut keyed: Vec<(u32, u32)> = candidates
        .iter()
        .map(|&v| {
            let voxel = &grid.voxels[v];
            let p = position(voxel.pos);
            let ijk = unflatten(grid.dims, voxel.crop as usize);
            let d = [p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]];
            let along = d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2];
            let across2 = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] - along * along).max(0.0);
            let lateral = ((shape.long_axis_weight * along).powi(2) + across2).sqrt()
                + 6.0 * lateral_noise.at(ijk);
            let depth = f64::from(voxel.depth) + 0.08 * depth_noise.at(ijk);
            let outside_band = (shape.band.0 - depth).max(depth - shape.band.1).max(0.0);
            let in_gap = shape.gap_below.is_some_and(|g| patch_noise.at(ijk) < g);
            let score = if outside_band == 0.0 && !in_gap {
                lateral
            } else {
                TIER_LATER + lateral + 300.0 * outside_band
            };
            (score_key(score as f32), v as u32)
        })
        .collect();
    let mut lesion = vec![Lesion::Healthy; n];
    if target > 0 {
        keyed.select_nth_unstable(target - 1);
        for &(_, v) in &keyed[..target] {
            lesion[v as usize] = Lesion::Scar;
        }
    }
    Ok(Draw {
        lesion,
        territory: None,
        segments,
        burden_target: Some(burden),
        transmurality: None,
    })
}

/// The CLAIM preset (see the module docs).
pub(crate) fn claim(
    grid: &MyoGrid,
    blobs: &Volume<f32>,
    params: &SmileParams,
    rng: &Rng,
) -> Result<Draw> {
    let n = grid.voxels.len();
    let mut pick = rng.fork(1);
    let chosen = sample_upstream(&mut pick);
    let ranks = blobs.as_slice()?;
    let mut union = vec![false; ranks.len()];
    for &segment in &chosen {
        // Drawn for every picked segment, present or not, so that the
        // stream does not depend on the segment map.
        let porosity = 0.21 * pick.uniform_range(3.0, 12.0);
        let radius = pick.below(4) as usize; // square kernels 1, 3, 5, 7
        if grid.segment_count(segment) == 0 {
            continue;
        }
        let blob = Volume::from_vec(
            grid.dims,
            ranks.iter().map(|r| f64::from(*r) < porosity).collect(),
            grid.geometry,
        )?;
        let eroded = if radius > 0 {
            erode_box(&blob, [radius, radius, 0])?
        } else {
            blob
        };
        let eroded = eroded.as_slice()?;
        for voxel in grid.voxels.iter().filter(|v| v.segment == segment) {
            let c = voxel.crop as usize;
            if eroded.get(c).copied().unwrap_or(false) {
                union[c] = true;
            }
        }
    }
    let filled = fill_holes(&Volume::from_vec(grid.dims, union, grid.geometry)?)?;
    let smooth = gaussian_smooth_voxels(
        &filled.map(|b| if *b { 1.0f32 } else { 0.0 }),
        [1.0, 1.0, 1.0],
    )?;
    let smooth_flat = smooth.as_slice()?;

    // Threshold, largest component, clip to the myocardium: the lesion voxels.
    let lesion_at = |threshold: f32| -> Result<Vec<bool>> {
        let mask = Volume::from_vec(
            grid.dims,
            smooth_flat.iter().map(|x| *x > threshold).collect(),
            grid.geometry,
        )?;
        let kept = largest_component(&mask, Connectivity::Vertex26)?;
        let kept = kept.as_slice()?;
        Ok(grid
            .voxels
            .iter()
            .map(|v| kept.get(v.crop as usize).copied().unwrap_or(false))
            .collect())
    };
    let fraction = |mask: &[bool]| mask.iter().filter(|b| **b).count() as f64 / n.max(1) as f64;
    let mask = match params.burden {
        None => lesion_at(0.3)?,
        Some(burden) => {
            let max = smooth_flat.iter().copied().fold(0.0f32, f32::max);
            let (mut lo, mut hi) = (0.0f32, max);
            let mut best = lesion_at(lo)?;
            let mut best_error = (fraction(&best) - burden).abs();
            for _ in 0..40 {
                if best_error <= 0.005 {
                    break;
                }
                let mid = 0.5 * (lo + hi);
                let mask = lesion_at(mid)?;
                let got = fraction(&mask);
                if (got - burden).abs() < best_error {
                    best_error = (got - burden).abs();
                    best = mask;
                }
                if got > burden {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            if best_error > 0.02 {
                return Err(Error::invalid(format!(
                    "claim preset: the segments drawn for this seed ({chosen:?}) reach burden {:.3} at best, not {burden}; ask for less or use another seed",
                    burden + if fraction(&best) < burden { -best_error } else { best_error }
                )));
            }
            best
        }
    };
    let lesion = mask
        .iter()
        .map(|b| if *b { Lesion::Scar } else { Lesion::Healthy })
        .collect();
    Ok(Draw {
        lesion,
        territory: None,
        segments: chosen,
        burden_target: params.burden,
        transmurality: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keys_sort_like_floats() {
        let xs = [-1e6f32, -2.5, -0.0, 0.0, 1e-3, 7.0, 1e6];
        for w in xs.windows(2) {
            assert!(score_key(w[0]) <= score_key(w[1]), "{w:?}");
        }
        assert!(score_key(-1.0) < score_key(1.0));
    }

    #[test]
    fn pattern_names_round_trip() {
        for p in Pattern::ALL {
            assert_eq!(p.name().parse::<Pattern>().unwrap(), p);
        }
        assert_eq!("Ischaemic".parse::<Pattern>().unwrap(), Pattern::Ischemic);
        assert_eq!("mid_wall".parse::<Pattern>().unwrap(), Pattern::Midwall);
        assert!("patchy".parse::<Pattern>().is_err());
    }
}

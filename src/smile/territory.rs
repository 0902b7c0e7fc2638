//! Coronary territories and the adjacency graph of the AHA 17 segments.
//!
//! Territories follow the AHA recommendation (Cerqueira et al., Circulation
//! 2002; `reference/smile.md`): LAD 1, 2, 7, 8, 13, 14, 17 · RCA 3, 4, 9, 10,
//! 15 · LCx 5, 6, 11, 12, 16. Individual anatomy varies; this is the usual
//! assignment.

use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Number of AHA segments.
pub const SEGMENT_COUNT: usize = 17;

/// Short names of segments 1–17 (index = segment − 1).
pub const SEGMENT_NAMES: [&str; SEGMENT_COUNT] = [
    "basal anterior",
    "basal anteroseptal",
    "basal inferoseptal",
    "basal inferior",
    "basal inferolateral",
    "basal anterolateral",
    "mid anterior",
    "mid anteroseptal",
    "mid inferoseptal",
    "mid inferior",
    "mid inferolateral",
    "mid anterolateral",
    "apical anterior",
    "apical septal",
    "apical inferior",
    "apical lateral",
    "apex",
];

/// A coronary territory, or `Any` to let the generator pick one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Territory {
    /// Left anterior descending artery: segments 1, 2, 7, 8, 13, 14, 17.
    Lad,
    /// Right coronary artery: segments 3, 4, 9, 10, 15.
    Rca,
    /// Left circumflex artery: segments 5, 6, 11, 12, 16.
    Lcx,
    /// Drawn at random by [`Territory::CULPRIT_PRIOR`].
    #[default]
    Any,
}

impl Territory {
    /// The three arteries, in a fixed order.
    pub const ARTERIES: [Territory; 3] = [Territory::Lad, Territory::Rca, Territory::Lcx];

    /// Probability of each artery being the culprit when `Any` is asked for:
    /// LAD 0.45, RCA 0.35, LCx 0.20 — the rough share of culprit arteries in
    /// acute myocardial infarction series (the LAD most often, the LCx least).
    pub const CULPRIT_PRIOR: [(Territory, f64); 3] = [
        (Territory::Lad, 0.45),
        (Territory::Rca, 0.35),
        (Territory::Lcx, 0.20),
    ];

    /// The AHA segments of this territory; `Any` gives all 17.
    pub fn segments(self) -> &'static [u8] {
        match self {
            Territory::Lad => &[1, 2, 7, 8, 13, 14, 17],
            Territory::Rca => &[3, 4, 9, 10, 15],
            Territory::Lcx => &[5, 6, 11, 12, 16],
            Territory::Any => &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
        }
    }

    /// True when `segment` belongs to this territory (always for `Any`).
    pub fn contains(self, segment: u8) -> bool {
        self.segments().contains(&segment)
    }

    /// The artery whose territory holds `segment` (1–17), `None` otherwise.
    pub fn of_segment(segment: u8) -> Option<Territory> {
        Territory::ARTERIES
            .into_iter()
            .find(|t| t.contains(segment))
    }

    /// Lower-case name (`"lad"`, `"rca"`, `"lcx"`, `"any"`).
    pub fn name(self) -> &'static str {
        match self {
            Territory::Lad => "lad",
            Territory::Rca => "rca",
            Territory::Lcx => "lcx",
            Territory::Any => "any",
        }
    }
}

impl fmt::Display for Territory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Territory {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lad" => Ok(Territory::Lad),
            "rca" => Ok(Territory::Rca),
            "lcx" | "cx" | "circumflex" => Ok(Territory::Lcx),
            "any" => Ok(Territory::Any),
            other => Err(Error::invalid(format!(
                "territory: expected one of lad, rca, lcx, any; got {other:?}"
            ))),
        }
    }
}

/// Segments sharing a border with each segment (index = segment − 1).
///
/// Rings: basal 1–6 and mid 7–12 in 60° sectors, apical 13–16 in 90°
/// sectors, apex 17. A basal segment borders its ring neighbours and the mid
/// segment below it; a mid segment also borders the apical sectors its 60°
/// overlaps (13 spans mid 12|7|8, 14 spans 8|9, 15 spans 9|10|11, 16 spans
/// 11|12); the apex borders all four apical segments.
pub const SEGMENT_NEIGHBOURS: [&[u8]; SEGMENT_COUNT] = [
    &[2, 6, 7],
    &[1, 3, 8],
    &[2, 4, 9],
    &[3, 5, 10],
    &[4, 6, 11],
    &[5, 1, 12],
    &[1, 8, 12, 13],
    &[2, 7, 9, 13, 14],
    &[3, 8, 10, 14, 15],
    &[4, 9, 11, 15],
    &[5, 10, 12, 15, 16],
    &[6, 11, 7, 13, 16],
    &[7, 8, 12, 14, 16, 17],
    &[8, 9, 13, 15, 17],
    &[9, 10, 11, 14, 16, 17],
    &[11, 12, 13, 15, 17],
    &[13, 14, 15, 16],
];

/// Ring of a segment: 0 basal (1–6), 1 mid (7–12), 2 apical (13–16),
/// 3 apex (17); 4 for anything else.
fn ring_of(segment: u8) -> u8 {
    match segment {
        1..=6 => 0,
        7..=12 => 1,
        13..=16 => 2,
        17 => 3,
        _ => 4,
    }
}

/// The neighbours of `segment` (1–17); empty for anything else.
pub fn neighbours(segment: u8) -> &'static [u8] {
    usize::from(segment)
        .checked_sub(1)
        .and_then(|i| SEGMENT_NEIGHBOURS.get(i))
        .copied()
        .unwrap_or(&[])
}

/// A random contiguous set of `count` segments drawn from `allowed`, grown
/// from a random start by adding random neighbours (within `allowed`) of the
/// set so far — the upstream adjacency idea restricted to one territory.
/// Returns fewer than `count` segments when `allowed`'s component of the
/// start is smaller; sorted ascending. Empty when `allowed` is empty.
pub fn sample_contiguous(allowed: &[u8], count: usize, rng: &mut Rng) -> Vec<u8> {
    if allowed.is_empty() || count == 0 {
        return Vec::new();
    }
    let start = allowed[rng.below(allowed.len() as u64) as usize];
    let mut chosen = vec![start];
    while chosen.len() < count {
        let mut frontier: Vec<u8> = chosen
            .iter()
            .flat_map(|s| neighbours(*s).iter().copied())
            .filter(|n| allowed.contains(n) && !chosen.contains(n))
            .collect();
        frontier.sort_unstable();
        frontier.dedup();
        if frontier.is_empty() {
            break;
        }
        chosen.push(frontier[rng.below(frontier.len() as u64) as usize]);
    }
    chosen.sort_unstable();
    chosen
}

/// Largest basal subset of [`sample_upstream`]. With it the CLAIM preset on
/// the atlas (seeds 100–107) touches 12–17 segments of all three
/// territories, covers 39–72 % of the myocardium after clipping and has a
/// mean pairwise Dice of 0.60 — the upstream measurements are 12–16
/// segments, all territories, 46–84 % before clipping (which removes
/// 16–18 %), Dice 0.58.
const UPSTREAM_MAX_BASAL: u64 = 3;

/// Segment picking of the upstream CLAIM/SMILE generator (its step 2,
/// `reference/smile.md`): a random subset of 1–3 basal segments, each
/// of their basal/mid neighbours with probability ½, one random mid segment
/// with its two ring neighbours and one random apical segment (13–17) with
/// its ring neighbours (the apex brings all of 13–16). Sorted, without
/// duplicates.
pub fn sample_upstream(rng: &mut Rng) -> Vec<u8> {
    let mut chosen = Vec::new();
    let basal_count = 1 + rng.below(UPSTREAM_MAX_BASAL) as usize;
    let mut basal: Vec<u8> = (1..=6).collect();
    // Partial Fisher–Yates: the first `basal_count` entries are the subset.
    for a in 0..basal_count {
        let b = a + rng.below((6 - a) as u64) as usize;
        basal.swap(a, b);
    }
    for &s in &basal[..basal_count] {
        chosen.push(s);
        for &n in neighbours(s) {
            if n <= 12 && rng.uniform() < 0.5 {
                chosen.push(n);
            }
        }
    }
    // Mid and apical picks bring their neighbours within the same ring
    // (the apex, 17, brings the whole apical ring).
    let same_ring = |s: u8, n: u8| ring_of(s) == ring_of(n) || s == 17;
    let mid = 7 + rng.below(6) as u8;
    chosen.push(mid);
    chosen.extend(
        neighbours(mid)
            .iter()
            .copied()
            .filter(|n| same_ring(mid, *n)),
    );
    let apical = 13 + rng.below(5) as u8;
    chosen.push(apical);
    chosen.extend(
        neighbours(apical)
            .iter()
            .copied()
            .filter(|n| same_ring(apical, *n)),
    );
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn territories_partition_the_segments() {
        let mut all: Vec<u8> = Territory::ARTERIES
            .iter()
            .flat_map(|t| t.segments().iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=17).collect::<Vec<u8>>());
        assert_eq!(Territory::of_segment(17), Some(Territory::Lad));
        assert_eq!(Territory::of_segment(16), Some(Territory::Lcx));
        assert_eq!(Territory::of_segment(0), None);
        let total: f64 = Territory::CULPRIT_PRIOR.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!("LCx".parse::<Territory>().unwrap(), Territory::Lcx);
        assert!("left".parse::<Territory>().is_err());
    }

    #[test]
    fn adjacency_is_symmetric_and_territories_are_connected() {
        for s in 1..=17u8 {
            for &n in neighbours(s) {
                assert!(neighbours(n).contains(&s), "{s} lists {n} but not back");
                assert_ne!(n, s);
            }
        }
        for t in Territory::ARTERIES {
            let full = sample_contiguous(t.segments(), 17, &mut Rng::new(3));
            let mut want = t.segments().to_vec();
            want.sort_unstable();
            assert_eq!(full, want, "{t}");
        }
    }

    #[test]
    fn contiguous_samples_are_connected_and_inside() {
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let t = Territory::ARTERIES[rng.below(3) as usize];
            let count = 1 + rng.below(5) as usize;
            let s = sample_contiguous(t.segments(), count, &mut rng);
            assert_eq!(s.len(), count.min(t.segments().len()));
            assert!(s.iter().all(|x| t.contains(*x)));
            // Connected: every segment reaches the first through chosen ones.
            let mut reached = vec![s[0]];
            let mut grew = true;
            while grew {
                grew = false;
                for &x in &s {
                    if !reached.contains(&x) && neighbours(x).iter().any(|n| reached.contains(n)) {
                        reached.push(x);
                        grew = true;
                    }
                }
            }
            assert_eq!(reached.len(), s.len(), "{s:?}");
        }
    }

    #[test]
    fn upstream_sampling_touches_many_segments_of_all_territories() {
        let mut rng = Rng::new(100);
        for _ in 0..50 {
            let s = sample_upstream(&mut rng);
            assert!(s.len() >= 6 && s.len() <= 17, "{s:?}");
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            assert!(s.iter().any(|x| (1..=6).contains(x)));
            assert!(s.iter().any(|x| (13..=17).contains(x)));
        }
    }
}

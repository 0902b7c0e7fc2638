//! `claim augment`: synthetic scar datasets from normal cases, at scale.
//!
//! Every case of an input dataset (EMIDEC layout or nnU-Net raw) without
//! scar or MVO is a *source*: it gets `per_case` synthetic cases, each a
//! SMILE mask drawn from a [`MaskDistribution`] and painted by a diffusion
//! model (RePaint). Cases with scar are copied through or skipped. The
//! output is an nnU-Net v2 raw dataset plus `manifest.jsonl`, one
//! [`CaseRecord`] per case.
//!
//! Reproducibility and scale:
//! - every output case draws from its own seed, [`case_seed`]`(seed,
//!   source, k)`, so a case is the same whichever process, shard or
//!   restart makes it;
//! - `--shard i/n` takes the input cases whose index in the sorted listing
//!   is `i` modulo `n` ([`Shard`]); shards write into one output folder,
//!   each to its own manifest part, and [`merge`] builds `dataset.json` and
//!   the merged manifest;
//! - a case's files are written atomically (temporary file + rename) and its
//!   manifest line last, so a restart skips exactly the finished cases.
//!
//! The work runs as a three-stage pipeline ([`run`]): a reader thread
//! (reading, AHA parcellation, SMILE draws), the caller's thread
//! (synthesis, with the library's worker threads, and the optional quality
//! gate), and a writer thread (NIfTI encoding, manifest lines), so that
//! file I/O and SMILE overlap synthesis.

mod config;
mod manifest;
mod pipeline;

pub use config::{
    AugmentConfig, ConditionSource, GateAction, GateConfig, ScarredCases, SynthesisSettings,
};
pub use manifest::{
    merge, read_records, CaseRecord, CaseStatus, GateRecord, MergeSummary, RunIdentity,
    SmileRecord, StageTimes, IDENTITY_FILE, MANIFEST_FILE, PARTS_DIR,
};
pub use pipeline::{run, AugmentJob, Progress, RunSummary};

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// One of `count` deterministic parts of the input: the cases whose index
/// in the sorted listing is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0 ≤ index < count`.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// The whole input in one part.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Whether the case at `position` of the sorted listing is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The manifest part this shard writes (`part-I-of-N.jsonl`).
    pub fn part_name(&self) -> String {
        format!("part-{}-of-{}.jsonl", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `i/n` with `0 ≤ i < n`.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || {
            Error::invalid(format!(
                "shard `{s}`: expected i/n with 0 ≤ i < n (e.g. 0/4; Slurm: \
                 $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of synthetic case `k` of source case `case` under the run's
/// global `seed`: FNV-1a of the case name, mixed with the seed and `k` by
/// SplitMix64. It depends on nothing else (not the shard, the order or the
/// other cases), and it is part of the manifest format: it never changes.
pub fn case_seed(seed: u64, case: &str, k: usize) -> u64 {
    let mut name_hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in case.bytes() {
        name_hash ^= u64::from(byte);
        name_hash = name_hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(mix(seed ^ mix(name_hash)) ^ k as u64)
}

/// The output case identifier of synthetic case `k` of `source`.
pub fn synthetic_name(source: &str, k: usize) -> String {
    format!("{source}_synth{k:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_the_cases() -> Result<()> {
        let shard: Shard = "1/3".parse()?;
        assert_eq!(shard, Shard { index: 1, count: 3 });
        assert_eq!(shard.to_string(), "1/3");
        assert_eq!(shard.part_name(), "part-1-of-3.jsonl");
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2", ""] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains("i/n"), "{bad}: {err}");
        }
        // Every case belongs to exactly one shard.
        for position in 0..20 {
            let owners = (0..3)
                .filter(|&i| Shard { index: i, count: 3 }.owns(position))
                .count();
            assert_eq!(owners, 1);
        }
        Ok(())
    }

    #[test]
    fn case_seeds_are_fixed_and_distinct() {
        // Part of the manifest format: these values must never change.
        assert_eq!(case_seed(0, "Case_N001", 0), 9175216650790519199);
        assert_eq!(case_seed(42, "phantom_003", 5), 7585465961722372473);
        let a = case_seed(7, "Case_N001", 0);
        assert_eq!(a, case_seed(7, "Case_N001", 0));
        let others = [
            case_seed(8, "Case_N001", 0),
            case_seed(7, "Case_N002", 0),
            case_seed(7, "Case_N001", 1),
            case_seed(7, "Case_N00", 0),
        ];
        assert!(others.iter().all(|&o| o != a));
        assert_eq!(synthetic_name("Case_N001", 2), "Case_N001_synth002");
    }
}

//! The manifest: one JSON line per output case, and the merge that turns
//! the shards' manifest parts into `manifest.jsonl` and `dataset.json`.
//!
//! Each process appends to its own part (`parts/part-I-of-N.jsonl`), one
//! whole line per finished case, synced, after the case's files are in
//! place. A line cut short by a crash is ignored on reading (its case is
//! simply made again). A case may have several lines (a failure, then a
//! success after a restart); the merge keeps one per case: a finished one
//! over a failed one, else the later one.

use super::AugmentConfig;
use crate::io::atomic::write_atomically;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The merged manifest in the output folder.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// The folder of the shards' manifest parts.
pub const PARTS_DIR: &str = "parts";
/// What made the output folder: input, model, configuration, version.
pub const IDENTITY_FILE: &str = "claim_augment.json";

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    /// Synthesised and written (and through the gate, if any).
    Ok,
    /// Synthesised and written, but the gate's Dice is below its threshold.
    Flagged,
    /// Synthesised, below the gate's threshold, not written.
    Dropped,
    /// A scarred input case copied through.
    Copied,
    /// Not made; `error` says why.
    Failed,
}

impl CaseStatus {
    /// Whether the case is finished (a restart does not make it again).
    pub fn is_finished(self) -> bool {
        self != CaseStatus::Failed
    }

    /// Whether the case's files are in `imagesTr` / `labelsTr`.
    pub fn is_written(self) -> bool {
        matches!(
            self,
            CaseStatus::Ok | CaseStatus::Flagged | CaseStatus::Copied
        )
    }
}

/// What the SMILE draw of a synthetic case was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmileRecord {
    /// Pattern.
    pub pattern: String,
    /// Culprit territory (ischaemic).
    pub territory: Option<String>,
    /// Burden asked for (fraction of the myocardium).
    pub burden_target: Option<f64>,
    /// Burden reached: (scar + MVO) / myocardium.
    pub burden: f64,
    /// Transmurality used (ischaemic).
    pub transmurality: Option<f64>,
    /// Whether an MVO core was asked for.
    pub mvo: bool,
    /// AHA segments the lesion was centred on.
    pub segments_chosen: Vec<u8>,
    /// Scar voxels.
    pub scar_voxels: usize,
    /// MVO voxels.
    pub mvo_voxels: usize,
    /// Seed of the accepted draw.
    pub mask_seed: u64,
    /// Draws tried (the last accepted).
    pub attempts: usize,
}

/// What the quality gate measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Dice of the predicted lesion (scar + MVO) against the mask.
    pub lesion_dice: f64,
    /// Whether it reached the threshold.
    pub passed: bool,
}

/// Seconds spent per stage of one case (wall time on the stage's thread).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    /// Reading the source case (shared by its synthetic cases).
    pub read_s: f64,
    /// AHA parcellation (shared) and SMILE draws.
    pub smile_s: f64,
    /// Diffusion synthesis.
    pub synthesis_s: f64,
    /// The quality gate's segmentation.
    pub gate_s: f64,
    /// Encoding and writing the files.
    pub write_s: f64,
}

/// One line of the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Output case identifier (`imagesTr/<case>_0000…`).
    pub case: String,
    /// Input case it comes from.
    pub source: String,
    /// `synthetic` or `real`.
    pub kind: String,
    /// Index of this synthetic case among its source's (synthetic only).
    pub k: Option<usize>,
    /// How it ended.
    pub status: CaseStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Its seed ([`super::case_seed`]; synthetic only).
    pub seed: Option<u64>,
    /// The SMILE draw.
    pub smile: Option<SmileRecord>,
    /// Per-AHA-segment myocardium / scar / MVO of the written labels.
    pub segment_stats: Option<serde_json::Value>,
    /// Where the histogram condition came from (`preset`, `null`, or
    /// `dataset:<case>`).
    pub condition: Option<String>,
    /// Network evaluations of the synthesis.
    pub network_evaluations: Option<u64>,
    /// The quality gate's verdict.
    pub gate: Option<GateRecord>,
    /// Image and label files, relative to the output folder.
    pub image: Option<String>,
    /// See `image`.
    pub labels: Option<String>,
    /// SHA-256 of the model weights.
    pub model_sha256: String,
    /// claim's version.
    pub claim_version: String,
    /// The shard that made it (`i/n`).
    pub shard: String,
    /// Stage times.
    pub timings: StageTimes,
}

/// What made an output folder; every shard and restart must match it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// claim's version.
    pub claim_version: String,
    /// The input folder (canonical path).
    pub input: String,
    /// The model, as given (`builtin` or a path).
    pub model: String,
    /// SHA-256 of its weights.
    pub model_sha256: String,
    /// The configuration.
    pub config: AugmentConfig,
    /// The input's nnU-Net `channel_names` and `labels` (what
    /// `dataset.json` gets).
    pub channel_names: serde_json::Value,
    /// See `channel_names`.
    pub labels: serde_json::Value,
    /// The input's file ending.
    pub file_ending: String,
}

impl RunIdentity {
    /// Writes it to `out`, or checks that the one there matches: a
    /// different configuration, model or input is refused, naming the
    /// field (the version may differ: a restart after an upgrade is fine
    /// as long as what it makes is the same).
    pub fn establish(&self, out: &Path) -> Result<()> {
        let path = out.join(IDENTITY_FILE);
        if path.is_file() {
            let existing = RunIdentity::read(out)?;
            let differs = [
                ("input", existing.input != self.input),
                ("model", existing.model_sha256 != self.model_sha256),
                ("configuration", existing.config != self.config),
                ("labels", existing.labels != self.labels),
            ];
            if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
                return Err(Error::invalid(format!(
                    "{}: this output folder was made with another {what} (see {}); resume \
                     with the same input, model and configuration, or use a new folder",
                    out.display(),
                    path.display()
                )));
            }
            return Ok(());
        }
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("run identity: {e}")))?;
        write_atomically(&path, |f| f.write_all(text.as_bytes()))
    }

    /// Reads the identity of the output folder `out`.
    pub fn read(out: &Path) -> Result<RunIdentity> {
        let path = out.join(IDENTITY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io_at(&path, &e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::format(format!(
                "{}: not a claim augment identity file: {e}",
                path.display()
            ))
        })
    }
}

/// Appends one record as a whole line and syncs it.
pub(crate) fn append_record(path: &Path, record: &CaseRecord) -> Result<()> {
    let mut line = serde_json::to_string(record)
        .map_err(|e| Error::Internal(format!("manifest line: {e}")))?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io_at(path, &e))?;
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_data())
        .map_err(|e| Error::io_at(path, &e))
}

/// Every complete record of every manifest part in `out/parts`, in file
/// and line order. Lines that do not parse (cut short by a crash) are
/// skipped.
pub fn read_records(out: &Path) -> Result<Vec<CaseRecord>> {
    let dir = out.join(PARTS_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io_at(&dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".jsonl"))
        })
        .collect();
    parts.sort();
    let mut records = Vec::new();
    for part in parts {
        let text = std::fs::read_to_string(&part).map_err(|e| Error::io_at(&part, &e))?;
        records.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<CaseRecord>(line).ok()),
        );
    }
    Ok(records)
}

/// One record per case: a finished one over a failed one, else the later.
/// An input case that could not be read (kind `input`) and was read later
/// (it has records of its outputs) loses its failure record.
pub(crate) fn latest_by_case(records: Vec<CaseRecord>) -> BTreeMap<String, CaseRecord> {
    let read_later: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r.kind != "input")
        .map(|r| r.source.clone())
        .collect();
    let records = records
        .into_iter()
        .filter(|r| !(r.kind == "input" && read_later.contains(&r.source)));
    let mut by_case: BTreeMap<String, CaseRecord> = BTreeMap::new();
    for record in records {
        let keep_old = by_case
            .get(&record.case)
            .is_some_and(|old| old.status.is_finished() && !record.status.is_finished());
        if !keep_old {
            by_case.insert(record.case.clone(), record);
        }
    }
    by_case
}

/// What [`merge`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Cases in `dataset.json` (`numTraining`).
    pub training_cases: usize,
    /// Synthetic cases written (ok + flagged).
    pub synthetic: usize,
    /// Of those, flagged by the gate.
    pub flagged: usize,
    /// Dropped by the gate.
    pub dropped: usize,
    /// Real cases copied.
    pub copied: usize,
    /// Failed cases (with their errors in the manifest).
    pub failed: usize,
}

/// Builds `manifest.jsonl` (one line per case, sorted by case) and the
/// nnU-Net `dataset.json` of the output folder `out` from every manifest
/// part. A case recorded as written whose files are missing is an error:
/// the folder is not a consistent dataset.
pub fn merge(out: &Path) -> Result<MergeSummary> {
    let identity = RunIdentity::read(out)?;
    let by_case = latest_by_case(read_records(out)?);
    let mut summary = MergeSummary::default();
    let mut manifest = String::new();
    for record in by_case.values() {
        match record.status {
            CaseStatus::Ok => summary.synthetic += 1,
            CaseStatus::Flagged => {
                summary.synthetic += 1;
                summary.flagged += 1;
            }
            CaseStatus::Dropped => summary.dropped += 1,
            CaseStatus::Copied => summary.copied += 1,
            CaseStatus::Failed => summary.failed += 1,
        }
        if record.status.is_written() {
            for file in [&record.image, &record.labels] {
                let file = file.as_deref().unwrap_or_default();
                if file.is_empty() || !out.join(file).is_file() {
                    return Err(Error::Io(format!(
                        "{}: case {} is recorded as written but its file `{file}` is missing",
                        out.display(),
                        record.case
                    )));
                }
            }
            summary.training_cases += 1;
        }
        manifest.push_str(
            &serde_json::to_string(record)
                .map_err(|e| Error::Internal(format!("manifest line: {e}")))?,
        );
        manifest.push('\n');
    }
    let dataset = serde_json::json!({
        "channel_names": identity.channel_names,
        "labels": identity.labels,
        "numTraining": summary.training_cases,
        "file_ending": identity.file_ending,
        "name": "claim_augment",
        "description": format!(
            "{} real and {} synthetic cases made by claim {} augment from {} with model sha256 {}",
            summary.copied, summary.synthetic, identity.claim_version, identity.input,
            identity.model_sha256
        ),
    });
    let dataset_text = serde_json::to_string_pretty(&dataset)
        .map_err(|e| Error::Internal(format!("dataset.json: {e}")))?;
    write_atomically(&out.join(MANIFEST_FILE), |f| {
        f.write_all(manifest.as_bytes())
    })?;
    write_atomically(&out.join("dataset.json"), |f| {
        f.write_all(dataset_text.as_bytes())
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(case: &str, source: &str, kind: &str, status: CaseStatus) -> CaseRecord {
        CaseRecord {
            case: case.into(),
            source: source.into(),
            kind: kind.into(),
            k: None,
            status,
            error: None,
            seed: None,
            smile: None,
            segment_stats: None,
            condition: None,
            network_evaluations: None,
            gate: None,
            image: None,
            labels: None,
            model_sha256: String::new(),
            claim_version: String::new(),
            shard: "0/1".into(),
            timings: StageTimes::default(),
        }
    }

    #[test]
    fn the_merge_keeps_finished_records_and_forgets_retried_input_failures() {
        let records = vec![
            record("a", "a", "input", CaseStatus::Failed),
            record("b_synth000", "b", "synthetic", CaseStatus::Failed),
            record("b_synth000", "b", "synthetic", CaseStatus::Ok),
            record("c_synth000", "c", "synthetic", CaseStatus::Ok),
            record("c_synth000", "c", "synthetic", CaseStatus::Failed),
            record("a_synth000", "a", "synthetic", CaseStatus::Ok),
            record("d", "d", "input", CaseStatus::Failed),
        ];
        let merged = latest_by_case(records);
        let status: Vec<(&str, CaseStatus)> = merged
            .values()
            .map(|r| (r.case.as_str(), r.status))
            .collect();
        assert_eq!(
            status,
            vec![
                ("a_synth000", CaseStatus::Ok),
                ("b_synth000", CaseStatus::Ok),
                ("c_synth000", CaseStatus::Ok),
                ("d", CaseStatus::Failed),
            ]
        );
    }

    #[test]
    fn a_line_cut_short_is_ignored_and_missing_files_stop_the_merge() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io(e.to_string()))?;
        let out = dir.path();
        std::fs::create_dir_all(out.join(PARTS_DIR)).map_err(|e| Error::io_at(out, &e))?;
        let part = out.join(PARTS_DIR).join("part-0-of-1.jsonl");
        let mut written = record("x_synth000", "x", "synthetic", CaseStatus::Ok);
        written.image = Some("imagesTr/x_synth000_0000.nii.gz".into());
        written.labels = Some("labelsTr/x_synth000.nii.gz".into());
        append_record(&part, &written)?;
        let mut text = std::fs::read_to_string(&part).map_err(|e| Error::io_at(&part, &e))?;
        text.push_str(r#"{"case":"y_synth000","source":"y","#);
        std::fs::write(&part, text).map_err(|e| Error::io_at(&part, &e))?;
        let records = read_records(out)?;
        assert_eq!(records.len(), 1);
        RunIdentity {
            claim_version: "0".into(),
            input: "in".into(),
            model: "m".into(),
            model_sha256: "00".into(),
            config: AugmentConfig::default(),
            channel_names: serde_json::json!({"0": "LGE"}),
            labels: serde_json::json!({"background": 0}),
            file_ending: ".nii.gz".into(),
        }
        .establish(out)?;
        let err = merge(out).unwrap_err().to_string();
        assert!(
            err.contains("x_synth000") && err.contains("missing"),
            "{err}"
        );
        Ok(())
    }
}

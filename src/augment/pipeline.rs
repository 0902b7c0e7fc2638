//! The augment run: reader thread → synthesis (caller's thread) → writer
//! thread, with bounded queues between them.

use super::manifest::{append_record, latest_by_case};
use super::{
    case_seed, merge, read_records, synthetic_name, AugmentConfig, CaseRecord, CaseStatus,
    ConditionSource, GateAction, GateRecord, MergeSummary, RunIdentity, Shard, SmileRecord,
    StageTimes, PARTS_DIR,
};
use crate::io::atomic::write_atomically;
use crate::io::{read_image, write_image};
use crate::models::{builtin, Denoiser};
use crate::nn::LoadOptions;
use crate::rng::Rng;
use crate::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
use crate::smile::aha::aha_segments;
use crate::smile::{segment_stats, Pattern, SmileContext, SmileParams, SmileResult};
use crate::synthesis::{
    measure_channel_histograms, synthesize, Condition, Layout, SynthesisParams,
};
use crate::train::data::{list_dataset, read_case, CaseFiles, DatasetListing};
use crate::volume::{narrow_labels, DType, Image, LabelScheme, Volume};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// One `claim augment` process's work.
#[derive(Clone, Debug)]
pub struct AugmentJob {
    /// The input dataset (EMIDEC layout or nnU-Net raw).
    pub input: PathBuf,
    /// The output folder (an nnU-Net raw dataset when merged).
    pub output: PathBuf,
    /// The diffusion model (`builtin` or a weights file).
    pub model: PathBuf,
    /// What to make.
    pub config: AugmentConfig,
    /// This process's part of the input.
    pub shard: Shard,
    /// Device and precision of the models.
    pub load: LoadOptions,
}

/// What the run reports as it goes (on the caller's thread). Returning
/// `false` from the callback stops the run after the case in hand: what is
/// finished stays finished, and a rerun resumes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The input cases this process owns, and how many of them a previous
    /// run already finished.
    Planned {
        /// Input cases of this shard.
        cases: usize,
        /// Of those, already finished.
        already_done: usize,
    },
    /// Network evaluations of the case being synthesised.
    Synthesis {
        /// Output case.
        case: &'a str,
        /// Evaluations done.
        done: u64,
        /// Evaluations in all.
        total: u64,
    },
    /// An input case is through the reader (all its output cases queued).
    InputDone {
        /// Input case.
        case: &'a str,
    },
    /// An output case is decided (written, dropped, copied or failed).
    Case(&'a CaseRecord),
}

/// Process CPU time by stage, seconds (from `/proc`: Linux only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuSplit {
    /// The whole run.
    pub total_s: f64,
    /// Inside diffusion synthesis (all threads).
    pub synthesis_s: f64,
    /// Inside the quality gate's segmentation.
    pub gate_s: f64,
    /// Everything else: reading, AHA + SMILE, encoding, writing,
    /// bookkeeping.
    pub rest_s: f64,
}

/// What one process did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Records of the cases decided by this process, in order.
    pub records: Vec<CaseRecord>,
    /// Input cases of this shard skipped as already finished.
    pub already_done: usize,
    /// Whether the run was stopped before its end.
    pub stopped: bool,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// CPU split, when `/proc` can tell.
    pub cpu: Option<CpuSplit>,
    /// The merge (unsharded runs that finished; `None` otherwise).
    pub merged: Option<MergeSummary>,
}

impl RunSummary {
    /// Cases of this process with `status`.
    pub fn count(&self, status: CaseStatus) -> usize {
        self.records.iter().filter(|r| r.status == status).count()
    }
}

/// A source case read and parcellated, shared by its synthetic cases.
struct Source {
    name: String,
    image: Image,
    scheme: LabelScheme,
}

/// What the reader hands on.
enum ReadItem {
    Synth(Box<SynthItem>),
    Copy {
        record: CaseRecord,
        files: CaseFiles,
    },
    Failed(CaseRecord),
    InputDone(String),
}

struct SynthItem {
    record: CaseRecord,
    source: Arc<Source>,
    mask: Volume<i32>,
    condition: Condition,
    synthesis_seed: u64,
}

/// What the writer gets.
enum WriteItem {
    Synthetic {
        record: Box<CaseRecord>,
        image: Image,
        labels: Volume<i32>,
    },
    Copy {
        record: CaseRecord,
        files: CaseFiles,
    },
    RecordOnly(CaseRecord),
}

/// Synthetic cases a reader may run ahead of synthesis.
const READ_AHEAD: usize = 2;
/// Cases waiting for the writer.
const WRITE_QUEUE: usize = 4;

/// Runs `job`: makes this shard's cases that are not finished yet, appends
/// their manifest lines, and, for an unsharded run that was not stopped,
/// merges (`dataset.json`, `manifest.jsonl`). A case that fails is recorded
/// with its error and the run goes on; errors that stop everything (an
/// unreadable input listing, a model that does not load, an output folder
/// made with other settings) are returned before any case is made.
pub fn run(job: &AugmentJob, progress: &mut dyn FnMut(Progress<'_>) -> bool) -> Result<RunSummary> {
    let started = Instant::now();
    let cpu_start = process_cpu();
    job.config.validate()?;
    let listing = list_dataset(&job.input)?;
    check_names(&listing, job.config.per_case, &job.input)?;
    let (model, model_sha256) = load_model(&job.model, &job.load)?;
    let base_params = SynthesisParams {
        jump: job.config.synthesis.jump(),
        guidance: job.config.synthesis.guidance,
        perturb_condition: job.config.synthesis.perturb_condition,
        batch_size: job.config.synthesis.batch_size,
        crop_size: job.config.synthesis.crop,
        frames: job.config.synthesis.frames,
        labels: listing.scheme,
        ..SynthesisParams::default()
    };
    let layout = Layout::resolve(model.config(), &base_params)?;
    let gate = match &job.config.gate {
        Some(gate) => Some(Segmenter::load(
            Path::new(&gate.segmenter),
            &SegmenterOptions {
                folds: gate.folds.clone(),
                ..SegmenterOptions::default()
            },
        )?),
        None => None,
    };
    let (channel_names, labels_json) = dataset_labels(&listing);
    let mvo_declared = labels_json.as_object().is_some_and(|o| {
        o.values()
            .any(|v| v.as_i64() == Some(i64::from(listing.scheme.mvo)))
    });
    let identity = RunIdentity {
        claim_version: env!("CARGO_PKG_VERSION").into(),
        // Canonical, so `data`, `./data` and its absolute path are one input.
        input: std::fs::canonicalize(&job.input)
            .unwrap_or_else(|_| job.input.clone())
            .display()
            .to_string(),
        model: job.model.display().to_string(),
        model_sha256: model_sha256.clone(),
        config: job.config.clone(),
        channel_names,
        labels: labels_json,
        file_ending: listing.file_ending.clone(),
    };
    let out = &job.output;
    for dir in [
        out.clone(),
        out.join("imagesTr"),
        out.join("labelsTr"),
        out.join(PARTS_DIR),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io_at(&dir, &e))?;
    }
    identity.establish(out)?;
    let finished: BTreeSet<String> = latest_by_case(read_records(out)?)
        .into_values()
        .filter(|r| r.status.is_finished())
        .map(|r| r.case)
        .collect();
    let owned: Vec<CaseFiles> = listing
        .cases
        .iter()
        .enumerate()
        .filter(|(i, _)| job.shard.owns(*i))
        .map(|(_, c)| c.clone())
        .collect();
    let per_case = job.config.per_case;
    let is_done = |name: &str| {
        finished.contains(name)
            || (0..per_case).all(|k| finished.contains(&synthetic_name(name, k)))
    };
    let already_done = owned.iter().filter(|c| is_done(&c.name)).count();
    if !progress(Progress::Planned {
        cases: owned.len(),
        already_done,
    }) {
        return Err(Error::Cancelled);
    }
    let pool = match job.config.synthesis.condition {
        ConditionSource::Dataset => condition_pool(&listing, &layout, job.config.synthesis.crop),
        _ => Vec::new(),
    };
    let context = ReaderContext {
        config: &job.config,
        scheme: listing.scheme,
        mvo_declared,
        pool: &pool,
        model_sha256: &model_sha256,
        shard: job.shard,
        finished: &finished,
    };
    let part = out.join(PARTS_DIR).join(job.shard.part_name());
    let stop = AtomicBool::new(false);
    let mut cpu = CpuTally::default();
    let (records, stopped) = std::thread::scope(|scope| -> Result<(Vec<CaseRecord>, bool)> {
        let (read_tx, read_rx) = sync_channel::<ReadItem>(READ_AHEAD);
        let (write_tx, write_rx) = sync_channel::<WriteItem>(WRITE_QUEUE);
        let (clock_tx, clock_rx) = std::sync::mpsc::channel::<Option<ThreadClock>>();
        let reader_clock = clock_tx.clone();
        let (stop_ref, context_ref, owned_ref) = (&stop, &context, &owned);
        let reader = scope.spawn(move || {
            let _ = reader_clock.send(ThreadClock::current());
            read_stage(context_ref, owned_ref, stop_ref, &read_tx);
        });
        let (writer_out, writer_part) = (out.clone(), part.clone());
        let ending = listing.file_ending.clone();
        let writer = scope.spawn(move || {
            let _ = clock_tx.send(ThreadClock::current());
            write_stage(&writer_out, &writer_part, &ending, write_rx)
        });
        let clocks: Vec<ThreadClock> = clock_rx.iter().take(2).flatten().collect();
        let stages = Stages {
            model: &model,
            gate: gate.as_ref(),
            base_params: &base_params,
            config: &job.config,
            clocks: &clocks,
        };
        let cancelled = stages.synthesise(read_rx, &write_tx, &mut cpu, progress);
        // Stops the reader (if still going) and ends the writer's queue.
        stop.store(true, Ordering::Relaxed);
        drop(write_tx);
        let _ = reader.join();
        let written = writer
            .join()
            .map_err(|_| Error::Internal("the augment writer thread panicked".into()))?;
        // The writer's records are the final word (a write can still fail).
        Ok((written?, cancelled?))
    })?;
    let merged = if job.shard == Shard::WHOLE && !stopped {
        Some(merge(out)?)
    } else {
        None
    };
    let total = cpu_start.and_then(|s| process_cpu().map(|e| e - s));
    let cpu = total.map(|total_s| CpuSplit {
        total_s,
        synthesis_s: cpu.synthesis_s,
        gate_s: cpu.gate_s,
        rest_s: (total_s - cpu.synthesis_s - cpu.gate_s).max(0.0),
    });
    Ok(RunSummary {
        records,
        already_done,
        stopped,
        wall_s: started.elapsed().as_secs_f64(),
        cpu,
        merged,
    })
}

/// Refuses listings whose output names would collide.
fn check_names(listing: &DatasetListing, per_case: usize, input: &Path) -> Result<()> {
    let names: BTreeSet<&str> = listing.cases.iter().map(|c| c.name.as_str()).collect();
    for case in &listing.cases {
        for k in 0..per_case {
            let synthetic = synthetic_name(&case.name, k);
            if names.contains(synthetic.as_str()) {
                return Err(Error::invalid(format!(
                    "{}: input case `{synthetic}` has the name of synthetic case {k} of `{}`; \
                     rename it",
                    input.display(),
                    case.name
                )));
            }
        }
    }
    Ok(())
}

/// Loads the denoiser once and hashes its weights.
fn load_model(model: &Path, load: &LoadOptions) -> Result<(Denoiser, String)> {
    if builtin::is_builtin(model) {
        let denoiser = builtin::denoiser(load)?;
        return Ok((denoiser, sha256_hex(builtin::DIFFUSION_SAFETENSORS)));
    }
    let bytes = std::fs::read(model).map_err(|e| Error::io_at(model, &e))?;
    let denoiser = Denoiser::from_file_with(model, load).map_err(|e| e.context(model.display()))?;
    Ok((denoiser, sha256_hex(&bytes)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `channel_names` and `labels` of the output `dataset.json`: the
/// input's for an nnU-Net dataset, EMIDEC's names otherwise.
fn dataset_labels(listing: &DatasetListing) -> (serde_json::Value, serde_json::Value) {
    if let Some(json) = &listing.dataset_json {
        let channels = json
            .get("channel_names")
            .or_else(|| json.get("modality"))
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"0": "LGE"}));
        if let Some(labels) = json.get("labels") {
            return (channels, labels.clone());
        }
    }
    let s = listing.scheme;
    let mut labels = serde_json::Map::new();
    labels.insert("background".into(), 0.into());
    labels.insert("cavity".into(), s.lv_cavity.into());
    labels.insert("normal_myocardium".into(), s.myocardium.into());
    labels.insert("infarction".into(), s.scar.into());
    labels.insert("no_reflow".into(), s.mvo.into());
    if let Some(rv) = s.rv {
        labels.insert("RV".into(), rv.into());
    }
    (
        serde_json::json!({"0": "LGE"}),
        serde_json::Value::Object(labels),
    )
}

/// The histograms of the scarred cases, sorted by case name (the same list
/// in every shard): what `condition: dataset` draws from. Cases that cannot
/// be read or measured are left out (the run reports them as cases).
fn condition_pool(
    listing: &DatasetListing,
    layout: &Layout,
    crop: usize,
) -> Vec<(String, Vec<f32>)> {
    listing
        .cases
        .iter()
        .filter_map(|files| {
            // Labels first: only scarred cases need their image read.
            let labels = read_image(&files.labels).ok()?.to_labels().ok()?;
            if !has_lesion(&labels, &listing.scheme) {
                return None;
            }
            let case = read_case(files).ok()?;
            let values = measure_channel_histograms(
                &case.image,
                &case.labels,
                &listing.scheme,
                layout,
                crop,
            )
            .ok()?;
            Some((files.name.clone(), values))
        })
        .collect()
}

fn has_lesion(labels: &Volume<i32>, scheme: &LabelScheme) -> bool {
    labels.data.iter().any(|&l| scheme.is_lesion(l))
}

/// What the reader needs.
struct ReaderContext<'a> {
    config: &'a AugmentConfig,
    scheme: LabelScheme,
    mvo_declared: bool,
    pool: &'a [(String, Vec<f32>)],
    model_sha256: &'a str,
    shard: Shard,
    finished: &'a BTreeSet<String>,
}

impl ReaderContext<'_> {
    /// A record with the fields every case has.
    fn record(&self, case: &str, source: &str, kind: &str, status: CaseStatus) -> CaseRecord {
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
            model_sha256: self.model_sha256.into(),
            claim_version: env!("CARGO_PKG_VERSION").into(),
            shard: self.shard.to_string(),
            timings: StageTimes::default(),
        }
    }

    fn failed(&self, case: &str, source: &str, kind: &str, error: &Error) -> CaseRecord {
        CaseRecord {
            error: Some(error.to_string()),
            ..self.record(case, source, kind, CaseStatus::Failed)
        }
    }
}

/// Reads the owned cases in order, draws the masks of the unfinished
/// synthetic cases, and queues them.
fn read_stage(
    context: &ReaderContext<'_>,
    owned: &[CaseFiles],
    stop: &AtomicBool,
    tx: &SyncSender<ReadItem>,
) {
    let per_case = context.config.per_case;
    for files in owned {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = files.name.as_str();
        let todo: Vec<usize> = (0..per_case)
            .filter(|&k| !context.finished.contains(&synthetic_name(name, k)))
            .collect();
        if context.finished.contains(name) || todo.is_empty() {
            continue;
        }
        let read_started = Instant::now();
        let case = match read_case(files) {
            Ok(case) => case,
            Err(e) => {
                let item = ReadItem::Failed(context.failed(name, name, "input", &e));
                if tx.send(item).is_err() || tx.send(ReadItem::InputDone(name.into())).is_err() {
                    return;
                }
                continue;
            }
        };
        let read_s = read_started.elapsed().as_secs_f64();
        if has_lesion(&case.labels, &context.scheme) {
            if context.config.scarred_cases == super::ScarredCases::Copy {
                let mut record = context.record(name, name, "real", CaseStatus::Copied);
                record.timings.read_s = read_s;
                if tx
                    .send(ReadItem::Copy {
                        record,
                        files: files.clone(),
                    })
                    .is_err()
                {
                    return;
                }
            }
            if tx.send(ReadItem::InputDone(name.into())).is_err() {
                return;
            }
            continue;
        }
        let smile_started = Instant::now();
        let base = SmileParams {
            labels: context.scheme,
            ..SmileParams::default()
        };
        let segments = aha_segments(&case.labels, &base.aha_params());
        let parcellation_s = smile_started.elapsed().as_secs_f64();
        let source = Arc::new(Source {
            name: name.into(),
            image: case.image,
            scheme: context.scheme,
        });
        for k in todo {
            let out_name = synthetic_name(name, k);
            let item = match &segments {
                Err(e) => ReadItem::Failed(context.failed(&out_name, name, "synthetic", e)),
                Ok(segments) => {
                    match draw_case(context, &source, &case.labels, segments, &out_name, k) {
                        Ok(mut item) => {
                            item.record.timings.read_s = read_s;
                            item.record.timings.smile_s += parcellation_s;
                            ReadItem::Synth(Box::new(item))
                        }
                        Err(e) => ReadItem::Failed(CaseRecord {
                            k: Some(k),
                            seed: Some(case_seed(context.config.seed, name, k)),
                            ..context.failed(&out_name, name, "synthetic", &e)
                        }),
                    }
                }
            };
            if tx.send(item).is_err() {
                return;
            }
        }
        if tx.send(ReadItem::InputDone(name.into())).is_err() {
            return;
        }
    }
}

/// Draws synthetic case `k` of `source`: SMILE parameters and mask (a
/// few attempts), the condition, the synthesis seed, all from the case's
/// own seed.
fn draw_case(
    context: &ReaderContext<'_>,
    source: &Arc<Source>,
    labels: &Volume<i32>,
    segments: &Volume<u8>,
    out_name: &str,
    k: usize,
) -> Result<SynthItem> {
    let started = Instant::now();
    let config = context.config;
    let seed = case_seed(config.seed, &source.name, k);
    let mut rng = Rng::new(seed);
    let mut masks = config.masks.clone();
    if !context.mvo_declared {
        // The output dataset has no MVO label to hold one.
        masks.mvo_probability = 0.0;
    }
    let patterns = masks.validate()?;
    let base = SmileParams {
        labels: source.scheme,
        ..SmileParams::default()
    };
    let mut attempt = 0;
    let (params, draw, mask_seed) = loop {
        attempt += 1;
        let params = masks.draw(&patterns, &mut rng, &base)?;
        let mask_seed = rng.next_u64();
        let drawn = SmileContext::with_segments(labels, segments, &params)
            .and_then(|smile| smile.draw(mask_seed));
        match drawn {
            Ok(draw) => break (params, draw, mask_seed),
            Err(e) if attempt >= config.mask_attempts => {
                return Err(e.context(format!("{attempt} SMILE draws failed; the last")))
            }
            Err(_) => {}
        }
    };
    let (condition, condition_name) = match config.synthesis.condition {
        ConditionSource::Null => (Condition::Null, "null".to_string()),
        ConditionSource::Dataset if !context.pool.is_empty() => {
            let (name, values) = &context.pool[rng.below(context.pool.len() as u64) as usize];
            (Condition::Values(values.clone()), format!("dataset:{name}"))
        }
        _ => (Condition::Preset, "preset".to_string()),
    };
    let synthesis_seed = rng.next_u64();
    let stats = segment_stats(&draw.labels, segments, &source.scheme)?;
    let mut record = context.record(out_name, &source.name, "synthetic", CaseStatus::Ok);
    record.k = Some(k);
    record.seed = Some(seed);
    record.smile = Some(smile_record(&params, &draw, mask_seed, attempt));
    record.segment_stats =
        Some(serde_json::to_value(&stats).map_err(|e| Error::Internal(format!("stats: {e}")))?);
    record.condition = Some(condition_name);
    record.timings.smile_s = started.elapsed().as_secs_f64();
    Ok(SynthItem {
        record,
        source: Arc::clone(source),
        mask: draw.labels,
        condition,
        synthesis_seed,
    })
}

fn smile_record(
    params: &SmileParams,
    draw: &SmileResult,
    mask_seed: u64,
    attempts: usize,
) -> SmileRecord {
    SmileRecord {
        pattern: draw.pattern.to_string(),
        territory: draw.territory.map(|t| t.to_string()),
        burden_target: draw.burden_target,
        burden: draw.burden,
        transmurality: draw.transmurality,
        mvo: params.mvo && params.pattern == Pattern::Ischemic,
        segments_chosen: draw.segments_chosen.clone(),
        scar_voxels: draw.scar_voxels,
        mvo_voxels: draw.mvo_voxels,
        mask_seed,
        attempts,
    }
}

/// CPU seconds spent inside synthesis and the gate (all threads but the
/// reader's and the writer's).
#[derive(Default)]
struct CpuTally {
    synthesis_s: f64,
    gate_s: f64,
}

/// CPU of the process minus the reader's and writer's over a span. A
/// stage thread that ended before the span adds nothing to either end; one
/// that ends inside it is counted in the span (its last few milliseconds).
struct Span<'a> {
    clocks: &'a [ThreadClock],
    process: Option<f64>,
    threads: Vec<Option<f64>>,
}

impl<'a> Span<'a> {
    fn begin(clocks: &'a [ThreadClock]) -> Self {
        Span {
            clocks,
            process: process_cpu(),
            threads: clocks.iter().map(ThreadClock::cpu_seconds).collect(),
        }
    }

    fn end(self) -> f64 {
        let (Some(start), Some(end)) = (self.process, process_cpu()) else {
            return 0.0;
        };
        let others: f64 = self
            .clocks
            .iter()
            .zip(&self.threads)
            .filter_map(|(clock, start)| Some(clock.cpu_seconds()? - (*start)?))
            .sum();
        (end - start - others).max(0.0)
    }
}

/// What the synthesis stage works with.
struct Stages<'a> {
    model: &'a Denoiser,
    gate: Option<&'a Segmenter>,
    base_params: &'a SynthesisParams,
    config: &'a AugmentConfig,
    clocks: &'a [ThreadClock],
}

impl Stages<'_> {
    /// Synthesises the queued cases, runs the gate, and hands them on.
    /// Returns whether the progress callback stopped the run.
    fn synthesise(
        &self,
        rx: Receiver<ReadItem>,
        tx: &SyncSender<WriteItem>,
        cpu: &mut CpuTally,
        progress: &mut dyn FnMut(Progress<'_>) -> bool,
    ) -> Result<bool> {
        let send = |item: WriteItem, progress: &mut dyn FnMut(Progress<'_>) -> bool| {
            let record = match &item {
                WriteItem::Synthetic { record, .. } => (**record).clone(),
                WriteItem::Copy { record, .. } | WriteItem::RecordOnly(record) => record.clone(),
            };
            tx.send(item)
                .map_err(|_| Error::Internal("the augment writer stopped".into()))?;
            Ok::<bool, Error>(progress(Progress::Case(&record)))
        };
        for item in rx {
            let item = match item {
                ReadItem::InputDone(name) => {
                    if !progress(Progress::InputDone { case: &name }) {
                        return Ok(true);
                    }
                    continue;
                }
                ReadItem::Failed(record) => WriteItem::RecordOnly(record),
                ReadItem::Copy { record, files } => WriteItem::Copy { record, files },
                ReadItem::Synth(item) => match self.paint(*item, cpu, progress) {
                    Some(item) => item,
                    None => return Ok(true),
                },
            };
            if !send(item, progress)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Synthesis and gate of one case; `None` when the callback stopped it.
    fn paint(
        &self,
        item: SynthItem,
        cpu: &mut CpuTally,
        progress: &mut dyn FnMut(Progress<'_>) -> bool,
    ) -> Option<WriteItem> {
        let SynthItem {
            mut record,
            source,
            mask,
            condition,
            synthesis_seed,
        } = item;
        let params = SynthesisParams {
            seed: synthesis_seed,
            condition,
            ..self.base_params.clone()
        };
        let started = Instant::now();
        let span = Span::begin(self.clocks);
        let mut cancelled = false;
        let case = record.case.clone();
        let painted = synthesize(
            self.model,
            &source.image,
            &mask,
            &params,
            &mut |done, total| {
                let go_on = progress(Progress::Synthesis {
                    case: &case,
                    done,
                    total,
                });
                cancelled |= !go_on;
                go_on
            },
        );
        cpu.synthesis_s += span.end();
        record.timings.synthesis_s = started.elapsed().as_secs_f64();
        let painted = match painted {
            Ok(painted) => painted,
            Err(_) if cancelled => return None,
            Err(e) => {
                record.status = CaseStatus::Failed;
                record.error = Some(e.to_string());
                return Some(WriteItem::RecordOnly(record));
            }
        };
        record.network_evaluations = Some(painted.network_evaluations);
        if let (Some(segmenter), Some(gate)) = (self.gate, &self.config.gate) {
            let started = Instant::now();
            let span = Span::begin(self.clocks);
            let verdict = gate_dice(
                segmenter,
                gate.mirroring,
                &painted.image,
                &mask,
                &source.scheme,
            );
            cpu.gate_s += span.end();
            record.timings.gate_s = started.elapsed().as_secs_f64();
            match verdict {
                Ok(dice) => {
                    let passed = dice >= gate.min_dice;
                    record.gate = Some(GateRecord {
                        lesion_dice: dice,
                        passed,
                    });
                    if !passed {
                        record.status = match gate.action {
                            GateAction::Drop => CaseStatus::Dropped,
                            GateAction::Flag => CaseStatus::Flagged,
                        };
                    }
                }
                Err(e) => {
                    record.status = CaseStatus::Failed;
                    record.error = Some(format!("quality gate: {e}"));
                }
            }
        }
        Some(if record.status.is_written() {
            WriteItem::Synthetic {
                record: Box::new(record),
                image: painted.image,
                labels: mask,
            }
        } else {
            WriteItem::RecordOnly(record)
        })
    }
}

/// Dice of the segmenter's lesion (scar + MVO) against the mask's.
fn gate_dice(
    segmenter: &Segmenter,
    mirroring: bool,
    image: &Image,
    mask: &Volume<i32>,
    scheme: &LabelScheme,
) -> Result<f64> {
    let params = SegmentParams {
        label_scheme: *scheme,
        mirroring,
        ..SegmentParams::default()
    };
    let predicted = segmenter.segment(image, &params, &mut |_, _| true)?;
    let (mut both, mut pred, mut truth) = (0usize, 0usize, 0usize);
    for (&p, &t) in predicted.data.iter().zip(mask.data.iter()) {
        let (p, t) = (scheme.is_lesion(i32::from(p)), scheme.is_lesion(t));
        both += usize::from(p && t);
        pred += usize::from(p);
        truth += usize::from(t);
    }
    Ok(if pred + truth == 0 {
        1.0
    } else {
        2.0 * both as f64 / (pred + truth) as f64
    })
}

/// Writes each case's files (atomically), then its manifest line; returns
/// every record as finally written.
fn write_stage(
    out: &Path,
    part: &Path,
    ending: &str,
    rx: Receiver<WriteItem>,
) -> Result<Vec<CaseRecord>> {
    let mut records = Vec::new();
    for item in rx {
        let started = Instant::now();
        let (mut record, written) = match item {
            WriteItem::RecordOnly(record) => (record, Ok(())),
            WriteItem::Synthetic {
                record,
                image,
                labels,
            } => {
                let mut record = *record;
                let (image_rel, labels_rel) = file_names(&record.case, ending);
                let written = narrow_labels(&labels, DType::U8)
                    .or_else(|_| narrow_labels(&labels, DType::I16))
                    .and_then(|labels| {
                        write_image(&image, &out.join(&image_rel))?;
                        write_image(&labels, &out.join(&labels_rel))
                    });
                record.image = Some(image_rel);
                record.labels = Some(labels_rel);
                (record, written)
            }
            WriteItem::Copy { mut record, files } => {
                let (image_rel, labels_rel) = file_names(&record.case, ending);
                let written = copy_case_file(&files.image, &out.join(&image_rel), ending)
                    .and_then(|_| copy_case_file(&files.labels, &out.join(&labels_rel), ending));
                record.image = Some(image_rel);
                record.labels = Some(labels_rel);
                (record, written)
            }
        };
        if let Err(e) = written {
            record.status = CaseStatus::Failed;
            record.error = Some(format!("writing: {e}"));
        }
        record.timings.write_s = started.elapsed().as_secs_f64();
        append_record(part, &record)?;
        records.push(record);
    }
    Ok(records)
}

/// `imagesTr/<case>_0000<ending>` and `labelsTr/<case><ending>`.
fn file_names(case: &str, ending: &str) -> (String, String) {
    (
        format!("imagesTr/{case}_0000{ending}"),
        format!("labelsTr/{case}{ending}"),
    )
}

/// Copies a case file byte for byte when it already has the output's
/// ending, else re-encodes it (same voxels and geometry).
fn copy_case_file(from: &Path, to: &Path, ending: &str) -> Result<()> {
    if from.to_string_lossy().ends_with(ending) {
        let mut source = std::fs::File::open(from).map_err(|e| Error::io_at(from, &e))?;
        return write_atomically(to, |file| std::io::copy(&mut source, file).map(|_| ()));
    }
    write_image(&read_image(from)?, to)
}

/// A thread's CPU clock, readable from any thread (Linux `/proc`).
#[derive(Clone, Debug)]
struct ThreadClock {
    stat: PathBuf,
}

impl ThreadClock {
    /// The calling thread's clock, if `/proc` has one.
    fn current() -> Option<ThreadClock> {
        let link = std::fs::read_link("/proc/thread-self").ok()?;
        let tid = link.file_name()?.to_str()?.to_string();
        let stat = PathBuf::from(format!("/proc/self/task/{tid}/stat"));
        stat.is_file().then_some(ThreadClock { stat })
    }

    fn cpu_seconds(&self) -> Option<f64> {
        stat_cpu_seconds(&self.stat)
    }
}

/// The whole process's CPU time (user + system), seconds.
fn process_cpu() -> Option<f64> {
    stat_cpu_seconds(Path::new("/proc/self/stat"))
}

/// User + system time of a `/proc/…/stat` file. The counts are in
/// USER_HZ, which Linux fixes at 100 on every architecture claim builds for.
fn stat_cpu_seconds(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_clocks_read_this_process() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let start = process_cpu().unwrap_or(-1.0);
        assert!(start >= 0.0);
        let clock = ThreadClock::current();
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let end = process_cpu().unwrap_or(-1.0);
        assert!(end >= start);
        if let Some(clock) = clock {
            assert!(clock.cpu_seconds().unwrap_or(-1.0) >= 0.0);
        }
    }

    #[test]
    fn emidec_datasets_get_named_labels() {
        use crate::train::data::DatasetLayout;
        let listing = DatasetListing {
            layout: DatasetLayout::Emidec,
            cases: Vec::new(),
            scheme: LabelScheme::EMIDEC,
            dataset_json: None,
            file_ending: ".nii.gz".into(),
        };
        let (_, labels) = dataset_labels(&listing);
        let json = serde_json::json!({"labels": labels});
        let scheme = crate::train::data::scheme_from_dataset_json(&json, Path::new("x"));
        assert_eq!(scheme.ok(), Some(LabelScheme::EMIDEC));
    }
}

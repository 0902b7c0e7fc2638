//! `claim augment`: synthetic scar cases for every normal case of a
//! dataset, as an nnU-Net raw dataset with a manifest; resumable and
//! shardable (`claim::augment`).

use claim::augment::{
    merge, run as run_job, AugmentConfig, AugmentJob, CaseStatus, GateConfig, Progress,
    ScarredCases, Shard,
};
use claim::nn::{DeviceSpec, LoadOptions};
use claim::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Arguments of `claim augment`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Input: an nnU-Net raw dataset (dataset.json, imagesTr/, labelsTr/) or an \
EMIDEC-layout folder. Cases without scar or MVO are sources: each gets --per-case synthetic cases \
(<case>_synthNNN), a SMILE mask drawn from the configuration's distribution painted by the model. \
Cases with scar are copied (default) or skipped.

Output: an nnU-Net v2 raw dataset (imagesTr/, labelsTr/, dataset.json) and manifest.jsonl, one \
line per case: source, seed, SMILE draw, measured burden, per-segment stats, gate verdict, model \
SHA-256, claim version, timings. Every case has its own seed (from --seed, its source and its \
index), so the output is the same made at once, in shards or across restarts.

Restart: run the same command again; finished cases are skipped. Failed cases are recorded with \
their error and retried on the next run; the exit status is 1 when any failed.

Cluster: run `--shard i/n` for i = 0…n−1 (e.g. a Slurm array: --shard \
$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) into one shared OUT, then `claim augment --merge -o \
OUT` once they are all done. docs/AUGMENT.md has the configuration's fields and example scripts."
)]
pub struct Args {
    /// Input dataset (nnU-Net raw or EMIDEC layout).
    #[arg(long, value_name = "DIR", required_unless_present = "merge")]
    input: Option<PathBuf>,
    /// Diffusion model: `builtin` or weights (.safetensors; `claim import`
    /// converts upstream checkpoints).
    #[arg(long, value_name = "M", required_unless_present = "merge")]
    model: Option<PathBuf>,
    /// Output folder (created; a folder of an earlier run with the same
    /// settings is resumed).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Synthetic cases per source case (overrides the configuration's
    /// `per_case`).
    #[arg(long, value_name = "K")]
    per_case: Option<usize>,
    /// JSON configuration (mask distribution, synthesis schedule, gate;
    /// every field optional).
    #[arg(long, value_name = "augment.json")]
    config: Option<PathBuf>,
    /// Global seed (overrides the configuration's `seed`).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Make only part i of n of the input cases (0 ≤ i < n); merge with
    /// --merge when every part is done.
    #[arg(long, value_name = "i/n")]
    shard: Option<Shard>,
    /// Build dataset.json and manifest.jsonl of OUT from its parts, and
    /// nothing else.
    #[arg(long, conflicts_with_all = ["input", "model", "shard", "per_case", "config", "seed"])]
    merge: bool,
    /// Scarred input cases: copy them into the output or skip them
    /// (overrides the configuration's `scarred_cases`).
    #[arg(long, value_name = "copy|skip", value_parser = parse_scarred)]
    scarred: Option<ScarredCases>,
    /// Quality gate: segment each synthetic case with this segmenter
    /// (`builtin`, a results folder or a bundle) and drop it when its
    /// lesion Dice against the mask is below --gate-dice (overrides the
    /// configuration's `gate.segmenter`).
    #[arg(long, value_name = "SEG")]
    gate: Option<String>,
    /// The gate's least lesion Dice.
    #[arg(long, value_name = "D", requires = "gate")]
    gate_dice: Option<f64>,
    /// Device to run on: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, value_name = "cpu|cuda[:N]", default_value = "cpu")]
    device: DeviceSpec,
}

fn parse_scarred(text: &str) -> std::result::Result<ScarredCases, String> {
    match text {
        "copy" => Ok(ScarredCases::Copy),
        "skip" => Ok(ScarredCases::Skip),
        other => Err(format!("`{other}`: use copy or skip")),
    }
}

/// The configuration: the file's, then the flags over it.
fn config_of(args: &Args) -> Result<AugmentConfig> {
    let mut config = match &args.config {
        Some(path) => AugmentConfig::from_file(path)?,
        None => AugmentConfig::default(),
    };
    if let Some(k) = args.per_case {
        config.per_case = k;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(scarred) = args.scarred {
        config.scarred_cases = scarred;
    }
    if let Some(segmenter) = &args.gate {
        let gate = config.gate.get_or_insert_with(GateConfig::default);
        gate.segmenter = segmenter.clone();
    }
    if let (Some(dice), Some(gate)) = (args.gate_dice, config.gate.as_mut()) {
        gate.min_dice = dice;
    }
    config.validate()?;
    Ok(config)
}

/// Runs `claim augment`.
pub fn run(args: &Args) -> Result<()> {
    if args.merge {
        let summary = merge(&args.output)?;
        outln!(
            "merged {}: {} training cases ({} synthetic, {} real), {} dropped, {} failed",
            args.output.display(),
            summary.training_cases,
            summary.synthetic,
            summary.copied,
            summary.dropped,
            summary.failed
        );
        return if summary.failed > 0 {
            Err(Error::invalid(format!(
                "{} case(s) failed (see {}/manifest.jsonl); rerun their shards to retry them",
                summary.failed,
                args.output.display()
            )))
        } else {
            Ok(())
        };
    }
    let (Some(input), Some(model)) = (&args.input, &args.model) else {
        return Err(Error::invalid("--input and --model are required"));
    };
    let load = LoadOptions {
        device: args.device,
        ..LoadOptions::default()
    };
    load.resolve()?;
    let job = AugmentJob {
        input: input.clone(),
        output: args.output.clone(),
        model: model.clone(),
        config: config_of(args)?,
        shard: args.shard.unwrap_or(Shard::WHOLE),
        load,
    };
    let interrupted = crate::train::interrupt_flag();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} input cases (ETA {eta}) {msg}",
        )
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    let summary = run_job(&job, &mut |event| {
        match event {
            Progress::Planned {
                cases,
                already_done,
            } => {
                bar.set_length(cases as u64);
                bar.set_position(already_done as u64);
                bar.reset_eta();
                if already_done > 0 {
                    bar.suspend(|| {
                        outln!("resuming: {already_done} of {cases} input cases already finished")
                    });
                }
            }
            Progress::Synthesis { case, done, total } => {
                bar.set_message(format!("{case}: {done}/{total} evaluations"));
            }
            Progress::InputDone { .. } => bar.inc(1),
            Progress::Case(record) => {
                if record.status == CaseStatus::Failed {
                    // A failure is a diagnostic: stderr, beside the error line
                    // the command ends with, so `2>` logs keep the reasons.
                    bar.suspend(|| {
                        eprintln!(
                            "failed: {}: {}",
                            record.case,
                            record.error.as_deref().unwrap_or("")
                        )
                    });
                }
            }
        }
        !interrupted.load(Ordering::SeqCst)
    });
    bar.finish_and_clear();
    let summary = summary?;
    let written = summary.count(CaseStatus::Ok) + summary.count(CaseStatus::Flagged);
    let failed = summary.count(CaseStatus::Failed);
    outln!(
        "shard {}: {} synthetic case(s) written ({} flagged), {} dropped by the gate, {} real \
         case(s) copied, {} failed, {} input case(s) already finished; {:.1} s",
        job.shard,
        written,
        summary.count(CaseStatus::Flagged),
        summary.count(CaseStatus::Dropped),
        summary.count(CaseStatus::Copied),
        failed,
        summary.already_done,
        summary.wall_s
    );
    if let Some(cpu) = &summary.cpu {
        let share = |s: f64| 100.0 * s / cpu.total_s.max(1e-9);
        outln!(
            "CPU {:.1} s: synthesis {:.1} s ({:.2} %), quality gate {:.1} s ({:.2} %), the rest \
             (loading, reading, SMILE, writing) {:.1} s ({:.2} %)",
            cpu.total_s,
            cpu.synthesis_s,
            share(cpu.synthesis_s),
            cpu.gate_s,
            share(cpu.gate_s),
            cpu.rest_s,
            share(cpu.rest_s)
        );
    }
    if summary.stopped {
        outln!("stopped: finished cases are kept; run the same command again to go on");
    }
    match &summary.merged {
        Some(m) => outln!(
            "wrote {}: {} training cases (dataset.json, manifest.jsonl)",
            args.output.display(),
            m.training_cases
        ),
        None if !summary.stopped => outln!(
            "when every shard is done: claim augment --merge -o {}",
            args.output.display()
        ),
        None => {}
    }
    if failed > 0 {
        return Err(Error::invalid(format!(
            "{failed} case(s) failed (their errors are in the manifest); the others are written"
        )));
    }
    if summary.stopped {
        return Err(Error::Cancelled);
    }
    Ok(())
}

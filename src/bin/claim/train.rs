//! `claim train`: train networks in-process. `claim train diffusion`
//! trains a LeFusion/CLAIM denoiser (upstream objective, checkpoints,
//! resume, Ctrl-C saves), writing a model `claim synth` loads.

use claim::models::DenoiserConfig;
use claim::train::data::{phantom_dataset, read_dataset, TrainingData};
use claim::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use claim::train::log::{LogRow, TrainingLog};
use claim::train::optim::{EmaPolicy, LrSchedule, OptimOptions, OptimizerKind};
use claim::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `claim train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Train a LeFusion/CLAIM diffusion denoiser (lesion-focused L1 on the
    /// predicted noise, histogram-conditioned).
    Diffusion(DiffusionArgs),
}

/// Arguments of `claim train diffusion`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Outputs, next to MODEL.safetensors: MODEL.ckpt.safetensors (weights, EMA, \
optimizer state and step: what --resume reads), MODEL.log.csv (step, loss, lr, seconds) and \
MODEL.loss.svg. Ctrl-C saves all of them before exiting; `--resume MODEL.ckpt.safetensors` \
continues bit for bit (same data). The model written is the EMA weights (upstream: decay 0.995 \
every 10 steps from step 2000), loadable by `claim synth --model MODEL.safetensors`.

Data (--data DIR): an EMIDEC-layout folder (Case_*/Images + Case_*/Contours) or an nnU-Net raw \
dataset (imagesTr, labelsTr, dataset.json), read in place; windows are cropped on the LV and \
scaled to [-1, 1] exactly as `claim synth` does. --phantom N trains on N built-in phantom cases."
)]
pub struct DiffusionArgs {
    /// Training data: an EMIDEC-layout folder or an nnU-Net raw dataset.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "phantom",
        required_unless_present = "phantom"
    )]
    data: Option<PathBuf>,
    /// Train on N generated phantom cases instead (seeds --phantom-seed…).
    #[arg(long, value_name = "N")]
    phantom: Option<usize>,
    /// First phantom seed.
    #[arg(long, value_name = "S", default_value_t = 1000)]
    phantom_seed: u64,
    /// Phantom matrix size in pixels (1.5625 mm each).
    #[arg(long, value_name = "PX", default_value_t = 192)]
    phantom_size: usize,
    /// Phantom slices.
    #[arg(long, value_name = "N", default_value_t = 10)]
    phantom_slices: usize,
    /// The model to write (.safetensors).
    #[arg(short, long, value_name = "MODEL")]
    output: PathBuf,
    /// Total optimizer steps (upstream trains ~50000).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    steps: u64,
    /// Windows per step (CLAIM 4, LeFusion 20).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Base channel width (CLAIM 72; a multiple of 8).
    #[arg(long, value_name = "N")]
    dim: Option<usize>,
    /// Width multipliers per level, e.g. 1,2,4,8 (CLAIM's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    dim_mults: Option<Vec<usize>>,
    /// Attention heads (CLAIM 8).
    #[arg(long, value_name = "N")]
    heads: Option<usize>,
    /// Width per attention head (CLAIM 32; even).
    #[arg(long, value_name = "N")]
    dim_head: Option<usize>,
    /// Frames per window: 1 = 2-D (CLAIM); default 1 for one channel, 10
    /// for two (LeFusion-EMIDEC).
    #[arg(long, value_name = "F")]
    frames: Option<usize>,
    /// Model channels: 1 (CLAIM: scar and MVO as one lesion) or 2
    /// (LeFusion: scar, MVO).
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// In-plane window side around the LV (a multiple of 2^(levels−1)).
    #[arg(long, value_name = "PX")]
    crop: Option<usize>,
    /// Probability of training an item on the null condition (enables
    /// classifier-free guidance; upstream 0).
    #[arg(long, value_name = "P")]
    null_cond_prob: Option<f32>,
    /// No random left–right flips.
    #[arg(long)]
    no_flip: bool,
    /// Learning rate.
    #[arg(long, value_name = "F", default_value_t = 1e-4)]
    lr: f32,
    /// adam (upstream) or adamw.
    #[arg(long, value_name = "NAME", default_value = "adam")]
    optimizer: String,
    /// Weight decay (L2 for adam, decoupled for adamw).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    weight_decay: f32,
    /// Clip the global gradient norm at this value.
    #[arg(long, value_name = "F")]
    grad_clip: Option<f32>,
    /// Linear learning-rate warm-up steps.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u64,
    /// EMA decay.
    #[arg(long, value_name = "F", default_value_t = 0.995)]
    ema_decay: f32,
    /// Steps between EMA updates.
    #[arg(long, value_name = "N", default_value_t = 10)]
    ema_every: u64,
    /// The step the EMA starts averaging at (before it, it copies).
    #[arg(long, value_name = "N", default_value_t = 2000)]
    ema_start: u64,
    /// Write the trained weights, not an EMA.
    #[arg(long)]
    no_ema: bool,
    /// Seed of the initial weights and of every batch.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Save the checkpoint, model and log every N steps.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    checkpoint_every: u64,
    /// Continue the run saved in this checkpoint (its model settings hold;
    /// give the same --data or --phantom; --steps may extend it).
    #[arg(long, value_name = "CKPT")]
    resume: Option<PathBuf>,
}

/// Runs `claim train`.
pub fn run(args: &Args) -> Result<()> {
    match &args.what {
        What::Diffusion(a) => run_diffusion(a),
    }
}

/// `MODEL.safetensors` → `MODEL<suffix>`.
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    output.with_file_name(format!("{stem}{suffix}"))
}

fn load_data(a: &DiffusionArgs) -> Result<TrainingData> {
    match (&a.data, a.phantom) {
        (Some(dir), None) => read_dataset(dir),
        (None, Some(n)) => phantom_dataset(n, a.phantom_seed, a.phantom_size, a.phantom_slices),
        _ => Err(Error::invalid(
            "give exactly one of --data DIR and --phantom N",
        )),
    }
}

fn diffusion_config(a: &DiffusionArgs) -> Result<DiffusionTrainConfig> {
    let mut model = DenoiserConfig::claim();
    if let Some(dim) = a.dim {
        if dim == 0 || dim % 8 != 0 {
            return Err(Error::invalid(format!(
                "--dim {dim}: must be a positive multiple of 8 (GroupNorm groups)"
            )));
        }
        model.dim = dim;
    }
    if let Some(mults) = &a.dim_mults {
        if mults.is_empty() || mults.contains(&0) {
            return Err(Error::invalid(
                "--dim-mults: positive integers, e.g. 1,2,4,8",
            ));
        }
        model.dim_mults = mults.clone();
    }
    if let Some(heads) = a.heads {
        model.attn_heads = heads;
    }
    if let Some(width) = a.dim_head {
        model.attn_dim_head = width;
    }
    match a.channels {
        None | Some(1) => {}
        Some(2) => {
            model.channels = 2;
            model.cond_dim = Some(32);
        }
        Some(c) => return Err(Error::invalid(format!("--channels {c}: 1 or 2"))),
    }
    let defaults = DiffusionTrainConfig::default();
    Ok(DiffusionTrainConfig {
        model,
        frames: a.frames.unwrap_or(0),
        crop_size: a.crop.unwrap_or(defaults.crop_size),
        batch_size: a.batch.unwrap_or(defaults.batch_size),
        null_cond_prob: a.null_cond_prob.unwrap_or(0.0),
        flip: !a.no_flip,
        seed: a.seed,
        ..defaults
    })
}

fn optim_options(a: &DiffusionArgs) -> Result<OptimOptions> {
    let kind = match a.optimizer.as_str() {
        "adam" => OptimizerKind::adam(),
        "adamw" => OptimizerKind::adamw(),
        other => {
            return Err(Error::invalid(format!(
                "--optimizer {other}: adam or adamw"
            )))
        }
    };
    Ok(OptimOptions {
        kind,
        lr: a.lr,
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
        schedule: LrSchedule::Constant,
        warmup_steps: a.warmup,
        ema: (!a.no_ema).then_some(EmaPolicy {
            decay: a.ema_decay,
            every: a.ema_every,
            start: a.ema_start,
        }),
    })
}

/// Ctrl-C sets the flag; the loop saves and stops at the next step.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let setter = flag.clone();
    // A second handler cannot be installed (tests call run twice): the
    // run then simply stops on Ctrl-C without saving.
    let _ = ctrlc::set_handler(move || setter.store(true, Ordering::SeqCst));
    flag
}

fn run_diffusion(a: &DiffusionArgs) -> Result<()> {
    if a.checkpoint_every == 0 {
        return Err(Error::invalid("--checkpoint-every must be ≥ 1"));
    }
    let checkpoint = beside(&a.output, ".ckpt.safetensors");
    let log_csv = beside(&a.output, ".log.csv");
    let log_svg = beside(&a.output, ".loss.svg");
    let mut trainer = match &a.resume {
        Some(ckpt) => {
            let fixed = [
                ("--dim", a.dim.is_some()),
                ("--dim-mults", a.dim_mults.is_some()),
                ("--heads", a.heads.is_some()),
                ("--dim-head", a.dim_head.is_some()),
                ("--frames", a.frames.is_some()),
                ("--channels", a.channels.is_some()),
                ("--crop", a.crop.is_some()),
                ("--batch", a.batch.is_some()),
                ("--null-cond-prob", a.null_cond_prob.is_some()),
            ];
            if let Some((flag, _)) = fixed.iter().find(|(_, given)| *given) {
                return Err(Error::invalid(format!(
                    "{flag} is fixed by the checkpoint {}; drop it to resume",
                    ckpt.display()
                )));
            }
            let data = load_data(a)?;
            DiffusionTrainer::resume(ckpt, &data, Some(a.steps))?
        }
        None => {
            let config = diffusion_config(a)?;
            let options = optim_options(a)?;
            let data = load_data(a)?;
            DiffusionTrainer::new(&data, config, options, a.steps)?
        }
    };
    let start_step = trainer.step_count();
    if start_step >= a.steps {
        return Err(Error::invalid(format!(
            "the checkpoint is at step {start_step}; give --steps above it to train on"
        )));
    }
    let cfg = trainer.config().model.clone();
    eprintln!(
        "training a {}-channel denoiser (dim {}, mults {:?}) on {} windows, steps {start_step}..{}",
        cfg.channels,
        cfg.dim,
        cfg.dim_mults,
        trainer.window_count(),
        a.steps
    );
    let title = format!(
        "claim train diffusion: dim {}, mults {:?}, batch {}",
        cfg.dim,
        cfg.dim_mults,
        trainer.config().batch_size
    );
    let mut log = TrainingLog::open(
        &log_csv,
        &log_svg,
        &title,
        a.resume.is_some().then_some(start_step),
    )?;
    let clock_base = log.elapsed();
    let interrupted = interrupt_flag();
    let bar = ProgressBar::new(a.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} loss {msg} (ETA {eta})",
        )
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    bar.set_position(start_step);
    bar.reset_eta();
    let started = Instant::now();
    let save = |trainer: &DiffusionTrainer, log: &TrainingLog| -> Result<()> {
        trainer.save_checkpoint(&checkpoint)?;
        trainer.export_model(&a.output)?;
        log.flush()
    };
    let mut smoothed: Option<f32> = None;
    while trainer.step_count() < a.steps {
        let report = match trainer.step() {
            Ok(r) => r,
            Err(e) => {
                bar.abandon();
                save(&trainer, &log)?;
                return Err(e);
            }
        };
        log.record(LogRow {
            step: report.step,
            loss: report.loss,
            lr: report.lr,
            seconds: clock_base + started.elapsed().as_secs_f64(),
        });
        let s = smoothed.map_or(report.loss, |s| 0.98 * s + 0.02 * report.loss);
        smoothed = Some(s);
        bar.set_position(trainer.step_count());
        bar.set_message(format!("{s:.4}"));
        if trainer.step_count() % a.checkpoint_every == 0 {
            save(&trainer, &log)?;
        }
        if interrupted.load(Ordering::SeqCst) {
            bar.abandon();
            save(&trainer, &log)?;
            eprintln!(
                "interrupted at step {}: saved {}; continue with --resume {}",
                trainer.step_count(),
                checkpoint.display(),
                checkpoint.display()
            );
            return Err(Error::Cancelled);
        }
    }
    bar.finish_and_clear();
    save(&trainer, &log)?;
    let rows = log.rows();
    let mean =
        |r: &[LogRow]| r.iter().map(|x| f64::from(x.loss)).sum::<f64>() / r.len().max(1) as f64;
    let tenth = (rows.len() / 10).max(1);
    outln!(
        "trained {} steps in {:.1} s: loss {:.4} (first 10 %) → {:.4} (last 10 %)",
        a.steps - start_step,
        started.elapsed().as_secs_f64(),
        mean(&rows[..tenth.min(rows.len())]),
        mean(&rows[rows.len().saturating_sub(tenth)..])
    );
    outln!(
        "wrote {} (model), {} (checkpoint), {}, {}",
        a.output.display(),
        checkpoint.display(),
        log_csv.display(),
        log_svg.display()
    );
    Ok(())
}

//! `claim train`: train networks in-process, with a progress bar, CSV and
//! SVG logs, checkpoints, `--resume`, and Ctrl-C saving before it stops.
//! `claim train diffusion` trains a LeFusion/CLAIM denoiser (upstream
//! objective) into a model `claim synth` loads; `claim train segmenter`
//! trains nnU-Net's PlainConvUNet with nnU-Net's recipe into a results
//! folder `claim segment` and nnU-Net's predictor load.

use claim::models::DenoiserConfig;
use claim::nn::{DeviceSpec, LoadOptions, Precision};
use claim::train::compute::Compute;
use claim::train::data::{phantom_dataset, read_dataset, TrainingData};
use claim::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use claim::train::log::{LogRow, TrainingLog};
use claim::train::optim::{EmaPolicy, LrSchedule, OptimOptions, OptimizerKind};
use claim::train::segmenter::{
    derive_plans, set_network, SegTrainConfig, SegmenterTrainer, CHECKPOINT_FINAL,
    CHECKPOINT_LATEST, CONFIGURATION_2D, CONFIGURATION_3D,
};
use claim::train::StepReport;
use claim::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[path = "train/joint.rs"]
mod joint;

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
    /// Train an nnU-Net PlainConvUNet segmenter (nnU-Net's recipe) into an
    /// nnU-Net v2 results folder.
    Segmenter(SegmenterArgs),
    /// CLAIM's joint loop: the diffusion generator and the segmenter
    /// trained together on real and synthetic cases.
    Joint(Box<joint::JointArgs>),
}

/// Arguments of `claim train segmenter`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes an nnU-Net v2 results folder: RESULTS_DIR/plans.json, dataset.json and \
fold_K/checkpoint_final.pth (torch.save format: `claim segment --model RESULTS_DIR` and \
nnU-Net's nnUNetPredictor both load it), with fold_K/checkpoint_latest.pth while training, \
fold_K/training_log.csv (step, loss, lr, seconds), fold_K/progress.svg (loss curve), \
fold_K/validation.csv (Dice per class on the fold's held-out cases) and \
fold_K/claim_train_state.safetensors (weights, momentum, step, plans, split: what --resume \
reads). Ctrl-C saves all of them before exiting.

Recipe (nnU-Net's): Dice + CE on every deep-supervision output, SGD 0.01 Nesterov 0.99, weight \
decay 3e-5, poly learning rate per epoch, gradient norm clipped at 12, a third of each batch \
centred on foreground, rotation/scaling, noise, blur, brightness, contrast, low resolution, \
gamma and mirroring. Plans come from --plans or are derived from the data (target spacing = \
median spacing; patch = median resampled shape; depth from the patch; see `claim::train::segmenter`). \
--features/--patch/--convs-per-stage replace the network for small models."
)]
pub struct SegmenterArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    /// The nnU-Net results folder to write.
    #[arg(short, long, value_name = "RESULTS_DIR")]
    output: PathBuf,
    /// Plans configuration to train: 2d (default) or 3d_fullres.
    #[arg(long, value_name = "NAME")]
    configuration: Option<String>,
    /// nnU-Net plans.json to train with (the --configuration entry of it)
    /// instead of plans derived from the data.
    #[arg(long, value_name = "FILE")]
    plans: Option<PathBuf>,
    /// Validation fold 0–4 (cases sorted by name, shuffled with --seed,
    /// dealt into five folds).
    #[arg(long, value_name = "K", default_value_t = 0)]
    fold: usize,
    /// Epochs (default nnU-Net's 1000; with --resume, the run's own unless
    /// given).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Optimizer steps per epoch (default nnU-Net's 250; fixed by the run
    /// on --resume).
    #[arg(long, value_name = "N")]
    iterations_per_epoch: Option<usize>,
    /// Patches per step (default: the plans' batch size: 12 for 2d, 2 for 3d_fullres).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Patch size H,W (2d) or D,H,W (3d_fullres), with --features; each axis
    /// a multiple of its downsampling.
    #[arg(
        long,
        value_name = "[D,]H,W",
        value_delimiter = ',',
        requires = "features"
    )]
    patch: Option<Vec<usize>>,
    /// Features per stage, e.g. 16,32,64,128 (replaces the plans' network).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    features: Option<Vec<usize>>,
    /// Convolutions per stage with --features (nnU-Net: 2).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "features")]
    convs_per_stage: usize,
    /// Run validation every N epochs (and after the last).
    #[arg(long, value_name = "N", default_value_t = 10)]
    validate_every: usize,
    /// Save the checkpoints every N epochs (and at the end).
    #[arg(long, value_name = "N", default_value_t = 1)]
    checkpoint_every: usize,
    /// Seed of the weights, the split and every batch.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Continue the run saved in RESULTS_DIR/fold_K (give the same data;
    /// --epochs may extend it).
    #[arg(long)]
    resume: bool,
}

/// Where a run's steps compute (every trainer).
#[derive(Debug, clap::Args)]
pub(crate) struct ComputeArgs {
    /// Device of the forward and backward passes: `cpu`, `cuda` or
    /// `cuda:N`. On a GPU the steps run in mixed precision (f16 weights and
    /// activations, f32 losses, f32 master weights and optimizer state on
    /// the GPU, dynamic loss scaling: a step whose gradients overflow is
    /// skipped and the scale halved). CUDA fails with the reason when this
    /// build or machine has none (see `claim info --build`).
    #[arg(long, value_name = "cpu|cuda[:N]", default_value = "cpu")]
    device: DeviceSpec,
}

impl ComputeArgs {
    /// Opens the device: before any data is read, so a missing GPU fails
    /// fast and writes nothing.
    pub(crate) fn open(&self) -> Result<Compute> {
        Compute::open(&LoadOptions {
            device: self.device,
            precision: Precision::Auto,
        })
    }
}

/// Where the training cases come from (both trainers).
#[derive(Debug, clap::Args)]
struct DataArgs {
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
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    /// The model to write (.safetensors).
    #[arg(short, long, value_name = "MODEL")]
    output: PathBuf,
    /// Total optimizer steps (upstream trains ~50000).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    steps: u64,
    #[command(flatten)]
    generator: GeneratorArgs,
    /// Save the checkpoint, model and log every N steps.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    checkpoint_every: u64,
    /// Continue the run saved in this checkpoint (its model settings hold;
    /// give the same --data or --phantom; --steps may extend it).
    #[arg(long, value_name = "CKPT")]
    resume: Option<PathBuf>,
}

/// The denoiser's network and optimiser (`claim train diffusion` and
/// `claim train joint`).
#[derive(Debug, clap::Args)]
struct GeneratorArgs {
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
}

impl GeneratorArgs {
    /// The network flags (fixed by a checkpoint or a starting model), with
    /// whether each was given.
    fn network_flags(&self) -> [(&'static str, bool); 5] {
        [
            ("--dim", self.dim.is_some()),
            ("--dim-mults", self.dim_mults.is_some()),
            ("--heads", self.heads.is_some()),
            ("--dim-head", self.dim_head.is_some()),
            ("--channels", self.channels.is_some()),
        ]
    }

    /// The flags a checkpoint fixes: the network's and the windows'.
    fn fixed_by_checkpoint(&self) -> Vec<(&'static str, bool)> {
        let mut flags = self.network_flags().to_vec();
        flags.extend([
            ("--frames", self.frames.is_some()),
            ("--crop", self.crop.is_some()),
            ("--batch", self.batch.is_some()),
            ("--null-cond-prob", self.null_cond_prob.is_some()),
        ]);
        flags
    }
}

/// Runs `claim train`.
pub fn run(args: &Args) -> Result<()> {
    match &args.what {
        What::Diffusion(a) => run_diffusion(a),
        What::Segmenter(a) => run_segmenter(a),
        What::Joint(a) => joint::run_joint(a),
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

fn load_data(a: &DataArgs) -> Result<TrainingData> {
    match (&a.data, a.phantom) {
        (Some(dir), None) => read_dataset(dir),
        (None, Some(n)) => phantom_dataset(n, a.phantom_seed, a.phantom_size, a.phantom_slices),
        _ => Err(Error::invalid(
            "give exactly one of --data DIR and --phantom N",
        )),
    }
}

fn diffusion_config(a: &GeneratorArgs) -> Result<DiffusionTrainConfig> {
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

fn optim_options(a: &GeneratorArgs) -> Result<OptimOptions> {
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
pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let setter = flag.clone();
    // A second handler cannot be installed (tests call run twice): the
    // run then simply stops on Ctrl-C without saving.
    let _ = ctrlc::set_handler(move || setter.store(true, Ordering::SeqCst));
    flag
}

/// What the shared training loop needs of a run.
trait Run {
    /// Steps done.
    fn steps_done(&self) -> u64;
    /// One update.
    fn step(&mut self) -> Result<StepReport>;
    /// Writes the checkpoint and the outputs.
    fn save(&mut self) -> Result<()>;
    /// Whether the step just taken ends a checkpoint period.
    fn checkpoint_due(&self) -> bool;
    /// Work after a step (validation at an epoch's end), reported above
    /// the progress bar.
    fn after_step(&mut self, _bar: &ProgressBar) -> Result<()> {
        Ok(())
    }
    /// How to continue after an interruption.
    fn resume_hint(&self) -> String;
}

/// Trains `run` to `total` steps with a progress bar (smoothed loss, ETA),
/// the CSV/SVG log, periodic saves, a save before any error is returned,
/// and Ctrl-C → save → [`Error::Cancelled`]. Returns the seconds trained.
fn drive(run: &mut impl Run, total: u64, log: &mut TrainingLog) -> Result<f64> {
    let clock_base = log.elapsed();
    let interrupted = interrupt_flag();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} loss {msg} (ETA {eta})",
        )
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    bar.set_position(run.steps_done());
    bar.reset_eta();
    let started = Instant::now();
    let mut smoothed: Option<f32> = None;
    let mut skipped = 0u64;
    while run.steps_done() < total {
        let report = match run.step().and_then(|r| run.after_step(&bar).map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                bar.abandon();
                run.save()?;
                log.flush()?;
                return Err(e);
            }
        };
        skipped += u64::from(report.skipped);
        log.record(LogRow {
            step: report.step,
            loss: report.loss,
            lr: report.lr,
            seconds: clock_base + started.elapsed().as_secs_f64(),
        });
        let s = smoothed.map_or(report.loss, |s| 0.98 * s + 0.02 * report.loss);
        smoothed = Some(s);
        bar.set_position(run.steps_done());
        bar.set_message(format!("{s:.4}"));
        if run.checkpoint_due() {
            run.save()?;
            log.flush()?;
        }
        if interrupted.load(Ordering::SeqCst) {
            bar.abandon();
            run.save()?;
            log.flush()?;
            eprintln!(
                "interrupted at step {}: saved; continue with {}",
                run.steps_done(),
                run.resume_hint()
            );
            return Err(Error::Cancelled);
        }
    }
    bar.finish_and_clear();
    if skipped > 0 {
        eprintln!(
            "{skipped} update(s) skipped: their f16 gradients overflowed and the loss scale was halved"
        );
    }
    run.save()?;
    log.flush()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Mean loss of the first and the last tenth of the log's rows.
fn loss_summary(rows: &[LogRow]) -> (f64, f64) {
    let mean =
        |r: &[LogRow]| r.iter().map(|x| f64::from(x.loss)).sum::<f64>() / r.len().max(1) as f64;
    let tenth = (rows.len() / 10).max(1);
    (
        mean(&rows[..tenth.min(rows.len())]),
        mean(&rows[rows.len().saturating_sub(tenth)..]),
    )
}

struct DiffusionRun<'a> {
    trainer: DiffusionTrainer,
    args: &'a DiffusionArgs,
    checkpoint: PathBuf,
}

impl Run for DiffusionRun<'_> {
    fn steps_done(&self) -> u64 {
        self.trainer.step_count()
    }
    fn step(&mut self) -> Result<StepReport> {
        self.trainer.step()
    }
    fn save(&mut self) -> Result<()> {
        self.trainer.save_checkpoint(&self.checkpoint)?;
        self.trainer.export_model(&self.args.output)
    }
    fn checkpoint_due(&self) -> bool {
        self.trainer.step_count() % self.args.checkpoint_every == 0
    }
    fn resume_hint(&self) -> String {
        format!("--resume {}", self.checkpoint.display())
    }
}

fn run_diffusion(a: &DiffusionArgs) -> Result<()> {
    if a.checkpoint_every == 0 {
        return Err(Error::invalid("--checkpoint-every must be ≥ 1"));
    }
    let checkpoint = beside(&a.output, ".ckpt.safetensors");
    let log_csv = beside(&a.output, ".log.csv");
    let log_svg = beside(&a.output, ".loss.svg");
    let compute = a.compute.open()?;
    let mut trainer = match &a.resume {
        Some(ckpt) => {
            refuse_fixed(&a.generator.fixed_by_checkpoint(), ckpt)?;
            let data = load_data(&a.data)?;
            DiffusionTrainer::resume(ckpt, &data, Some(a.steps))?
        }
        None => {
            let config = diffusion_config(&a.generator)?;
            let options = optim_options(&a.generator)?;
            let data = load_data(&a.data)?;
            DiffusionTrainer::new(&data, config, options, a.steps)?
        }
    };
    trainer.set_compute(compute)?;
    let start_step = trainer.step_count();
    if start_step >= a.steps {
        return Err(Error::invalid(format!(
            "the checkpoint is at step {start_step}; give --steps above it to train on"
        )));
    }
    let cfg = trainer.config().model.clone();
    eprintln!(
        "training a {}-channel denoiser (dim {}, mults {:?}) on {} windows, steps {start_step}..{}, on {}",
        cfg.channels,
        cfg.dim,
        cfg.dim_mults,
        trainer.window_count(),
        a.steps,
        trainer.compute()
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
    let mut run = DiffusionRun {
        trainer,
        args: a,
        checkpoint: checkpoint.clone(),
    };
    let seconds = drive(&mut run, a.steps, &mut log)?;
    let (first, last) = loss_summary(log.rows());
    outln!(
        "trained {} steps in {seconds:.1} s: loss {first:.4} (first 10 %) → {last:.4} (last 10 %)",
        a.steps - start_step,
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

/// Refuses a flag the checkpoint being resumed fixes.
fn refuse_fixed(fixed: &[(&str, bool)], checkpoint: &Path) -> Result<()> {
    match fixed.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(Error::invalid(format!(
            "{flag} is fixed by the checkpoint {}; drop it to resume",
            checkpoint.display()
        ))),
        None => Ok(()),
    }
}

/// The name nnU-Net would give the dataset: the folder's own when it is a
/// `DatasetNNN_Name` folder.
fn dataset_name(data: &DataArgs) -> String {
    let stem = data
        .data
        .as_ref()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    match stem {
        Some(name) if name.starts_with("Dataset") && name.contains('_') => name,
        Some(name) => {
            let clean: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("Dataset001_{clean}")
        }
        None => "Dataset001_phantom".into(),
    }
}

struct SegmenterRun<'a> {
    trainer: SegmenterTrainer,
    args: &'a SegmenterArgs,
    fold_dir: PathBuf,
    state_file: PathBuf,
    class_names: Vec<String>,
    /// `(epoch, Dice per foreground class)`.
    validation: Vec<(u64, Vec<f64>)>,
}

impl SegmenterRun<'_> {
    fn validation_csv(&self) -> String {
        let mut text = String::from("epoch");
        for name in &self.class_names[1..] {
            text.push(',');
            text.push_str(name);
        }
        text.push('\n');
        for (epoch, dice) in &self.validation {
            text.push_str(&epoch.to_string());
            for d in dice {
                text.push_str(&format!(",{d:.4}"));
            }
            text.push('\n');
        }
        text
    }

    /// The rows of an earlier run's `validation.csv` up to epoch `up_to`.
    fn read_validation(path: &Path, up_to: u64) -> Result<Vec<(u64, Vec<f64>)>> {
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io_at(path, &e))?;
        let mut rows = Vec::new();
        for line in text.lines().skip(1) {
            let mut parts = line.split(',');
            let epoch: Option<u64> = parts.next().and_then(|e| e.trim().parse().ok());
            let dice: Option<Vec<f64>> = parts.map(|d| d.trim().parse().ok()).collect();
            match (epoch, dice) {
                (Some(e), Some(d)) if e <= up_to => rows.push((e, d)),
                (Some(_), Some(_)) => {}
                _ => {
                    return Err(Error::format(format!(
                        "{}: {line:?} is not epoch,dice…",
                        path.display()
                    )))
                }
            }
        }
        Ok(rows)
    }

    /// Whether the step just taken ends an epoch (the run's own epoch
    /// length, which a resumed run takes from its checkpoint).
    fn epoch_ended(&self) -> bool {
        self.trainer.step_count() % self.trainer.config().iterations_per_epoch as u64 == 0
    }

    fn finished(&self) -> bool {
        self.trainer.step_count() >= self.trainer.total_steps()
    }

    /// `name dice, …` over the foreground classes.
    fn dice_report(&self, dice: &[f64]) -> String {
        let report: Vec<String> = self.class_names[1..]
            .iter()
            .zip(dice)
            .map(|(n, d)| format!("{n} {d:.3}"))
            .collect();
        report.join(", ")
    }
}

impl Run for SegmenterRun<'_> {
    fn steps_done(&self) -> u64 {
        self.trainer.step_count()
    }
    fn step(&mut self) -> Result<StepReport> {
        self.trainer.step()
    }
    fn save(&mut self) -> Result<()> {
        self.trainer.save_checkpoint(&self.state_file)?;
        if self.finished() {
            // As nnU-Net: a finished run keeps only its final checkpoint.
            self.trainer
                .write_results(&self.args.output, CHECKPOINT_FINAL)?;
            let latest = self.fold_dir.join(CHECKPOINT_LATEST);
            if latest.is_file() {
                std::fs::remove_file(&latest).map_err(|e| Error::io_at(&latest, &e))?;
            }
        } else {
            self.trainer
                .write_results(&self.args.output, CHECKPOINT_LATEST)?;
        }
        let csv = self.validation_csv();
        claim::io::atomic::write_atomically(&self.fold_dir.join("validation.csv"), |f| {
            std::io::Write::write_all(f, csv.as_bytes())
        })
    }
    fn checkpoint_due(&self) -> bool {
        self.epoch_ended() && self.trainer.epoch() % self.args.checkpoint_every as u64 == 0
    }
    fn after_step(&mut self, bar: &ProgressBar) -> Result<()> {
        let epoch = self.trainer.epoch();
        if !self.epoch_ended() || !(self.finished() || epoch % self.args.validate_every as u64 == 0)
        {
            return Ok(());
        }
        let dice = self.trainer.validate()?;
        if dice.is_empty() {
            return Ok(());
        }
        let line = format!("epoch {epoch}: validation Dice {}", self.dice_report(&dice));
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
        self.validation.push((epoch, dice));
        Ok(())
    }
    fn resume_hint(&self) -> String {
        format!(
            "--resume -o {} --fold {}",
            self.args.output.display(),
            self.args.fold
        )
    }
}

fn run_segmenter(a: &SegmenterArgs) -> Result<()> {
    if let Some(c) = a.configuration.as_deref() {
        if c != CONFIGURATION_2D && c != CONFIGURATION_3D {
            return Err(Error::invalid(format!(
                "--configuration {c}: {CONFIGURATION_2D} or {CONFIGURATION_3D}"
            )));
        }
    }
    if a.validate_every == 0 || a.checkpoint_every == 0 {
        return Err(Error::invalid(
            "--validate-every and --checkpoint-every must be ≥ 1",
        ));
    }
    let fold_dir = a.output.join(format!("fold_{}", a.fold));
    let state_file = fold_dir.join("claim_train_state.safetensors");
    let log_csv = fold_dir.join("training_log.csv");
    let log_svg = fold_dir.join("progress.svg");
    let compute = a.compute.open()?;
    let mut trainer = if a.resume {
        let fixed = [
            ("--plans", a.plans.is_some()),
            ("--configuration", a.configuration.is_some()),
            ("--iterations-per-epoch", a.iterations_per_epoch.is_some()),
            ("--batch", a.batch.is_some()),
            ("--features", a.features.is_some()),
            ("--patch", a.patch.is_some()),
        ];
        if !state_file.is_file() {
            return Err(Error::invalid(format!(
                "--resume: {} does not exist (no run of fold {} in {})",
                state_file.display(),
                a.fold,
                a.output.display()
            )));
        }
        refuse_fixed(&fixed, &state_file)?;
        let data = load_data(&a.data)?;
        SegmenterTrainer::resume(&state_file, &data, a.epochs)?
    } else {
        if state_file.is_file() {
            return Err(Error::invalid(format!(
                "{} holds a run of fold {} already: add --resume to continue it, or write to \
                 another folder",
                a.output.display(),
                a.fold
            )));
        }
        let plans =
            match &a.plans {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::io_at(path, &e))?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        Error::format(format!("{}: not JSON ({e})", path.display()))
                    })?)
                }
                None => None,
            };
        let data = load_data(&a.data)?;
        let configuration = a
            .configuration
            .clone()
            .unwrap_or_else(|| CONFIGURATION_2D.into());
        let defaults = SegTrainConfig::default();
        let config = SegTrainConfig {
            dataset_name: dataset_name(&a.data),
            configuration: configuration.clone(),
            fold: a.fold,
            epochs: a.epochs.unwrap_or(defaults.epochs),
            iterations_per_epoch: a
                .iterations_per_epoch
                .unwrap_or(defaults.iterations_per_epoch),
            batch_size: a.batch,
            seed: a.seed,
            ..defaults
        };
        let plans = match &a.features {
            Some(features) => {
                let mut plans = match plans {
                    Some(p) => p,
                    None => derive_plans(&data, &config.dataset_name)?.0,
                };
                let patch: Vec<usize> = match &a.patch {
                    Some(p) => p.clone(),
                    None => plans["configurations"][&configuration]["patch_size"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(|v| v.as_u64().map(|n| n as usize))
                                .collect()
                        })
                        .ok_or_else(|| {
                            Error::invalid(format!("the plans have no {configuration} patch_size"))
                        })?,
                };
                set_network(
                    &mut plans,
                    &configuration,
                    &patch,
                    features,
                    a.convs_per_stage,
                )?;
                Some(plans)
            }
            None => plans,
        };
        SegmenterTrainer::new(&data, plans, config)?
    };
    trainer.set_compute(compute)?;
    let total = trainer.total_steps();
    let start_step = trainer.step_count();
    if start_step >= total {
        return Err(Error::invalid(format!(
            "the run is at epoch {}; give --epochs above it to train on",
            trainer.epoch()
        )));
    }
    std::fs::create_dir_all(&fold_dir).map_err(|e| Error::io_at(&fold_dir, &e))?;
    let net = trainer.network().clone();
    let configuration = trainer.config().configuration.clone();
    let (train, validation) = trainer.split();
    let class_names = trainer.class_names();
    eprintln!(
        "training PlainConvUNet {configuration} (features {:?}, patch {}, batch {}) on {} cases, \
         validating on {}; epochs {}..{} of {} steps, on {}",
        net.features_per_stage,
        trainer.plans()["configurations"][&configuration]["patch_size"],
        trainer.batch_size(),
        train.len(),
        validation.len(),
        trainer.epoch(),
        trainer.config().epochs,
        trainer.config().iterations_per_epoch,
        trainer.compute()
    );
    let title = format!(
        "claim train segmenter: {configuration}, features {:?}, fold {}",
        net.features_per_stage, a.fold
    );
    let mut log = TrainingLog::open(&log_csv, &log_svg, &title, a.resume.then_some(start_step))?;
    let validation_rows = if a.resume {
        SegmenterRun::read_validation(&fold_dir.join("validation.csv"), trainer.epoch())?
    } else {
        Vec::new()
    };
    let mut run = SegmenterRun {
        trainer,
        args: a,
        fold_dir: fold_dir.clone(),
        state_file,
        class_names,
        validation: validation_rows,
    };
    let seconds = drive(&mut run, total, &mut log)?;
    let (first, last) = loss_summary(log.rows());
    outln!(
        "trained {} steps in {seconds:.1} s: loss {first:.4} (first 10 %) → {last:.4} (last 10 %)",
        total - start_step,
    );
    if let Some((epoch, dice)) = run.validation.last() {
        outln!("validation Dice (epoch {epoch}): {}", run.dice_report(dice));
    }
    outln!(
        "wrote {} (nnU-Net results: plans.json, dataset.json, {}/{CHECKPOINT_FINAL}), {}, {}",
        a.output.display(),
        fold_dir.display(),
        log_csv.display(),
        log_svg.display()
    );
    Ok(())
}

//! `claim train joint`: CLAIM's joint loop ([`claim::train::joint`]): the
//! diffusion generator and the nnU-Net segmenter trained together, the
//! segmenter on real and freshly synthesised cases, the generator also on
//! the segmenter's loss of its one-step estimates.

use super::{
    diffusion_config, drive, loss_summary, optim_options, refuse_fixed, ComputeArgs, DataArgs,
    GeneratorArgs, Run,
};
use claim::train::data::{phantom_cases, read_dataset, TrainingData};
use claim::train::joint::{
    split_by_lesion, JointConfig, JointTrainer, MaskDistribution, JOINT_STATE,
};
use claim::train::log::{LogRow, TrainingLog};
use claim::train::segmenter::{
    derive_plans, set_network, SegTrainConfig, CHECKPOINT_FINAL, CHECKPOINT_LATEST,
    CONFIGURATION_2D,
};
use claim::train::StepReport;
use claim::{Error, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `claim train joint`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every step is a diffusion step on the cases with scar. From --start-step on, every \
--every steps: the segmenter's soft Dice + CE on the generator's one-step estimate x̂₀ of noised real \
slices is added to the generator's loss with weight --lambda (0 turns it off), then --synthetic-cases \
normal cases get a SMILE mask (--patterns, --territory, --burden, --mvo-probability; every \
--synth-every joint steps, --synthetic-slices of their lesion slices), the generator \
paints scar into them with a short RePaint schedule (--synth-t-start, --synth-jump), and the segmenter \
takes one step on a batch of real (--real-fraction of the items) and synthetic patches.

Data: --data DIR (EMIDEC layout or nnU-Net raw; cases with scar train both networks, cases without \
are the normal sources), or --phantom N scarred phantoms plus --phantom-normal M normal ones (seeds \
after the scarred ones).

Writes into OUT: generator.safetensors (the model `claim synth` loads), segmenter/ (an nnU-Net v2 \
results folder `claim segment` loads), generator.log.csv/.svg, segmenter.log.csv/.svg, \
estimate.log.csv/.svg (λ·L_seg per joint step), validation.csv (the segmenter's Dice per class on its \
held-out fold) and the training state (generator.ckpt.safetensors, segmenter.ckpt.safetensors, \
joint.json: what --resume reads). Ctrl-C saves before exiting."
)]
pub struct JointArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Normal (scar-free) phantom cases with --phantom, the synthesis sources.
    #[arg(long, value_name = "M", default_value_t = 4, requires = "phantom")]
    phantom_normal: usize,
    /// Output folder.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Generator steps.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    steps: u64,
    #[command(flatten)]
    generator: GeneratorArgs,
    /// The first joint step (upstream 5000).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    start_step: u64,
    /// Generator steps between joint steps (upstream 10).
    #[arg(long, value_name = "K", default_value_t = 10)]
    every: u64,
    /// Weight of the segmenter's loss in the generator's (upstream 0.01); 0 = off.
    #[arg(long, value_name = "F", default_value_t = 0.01)]
    lambda: f32,
    /// Fraction of the segmenter's batch taken from real cases (the rest synthetic).
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    real_fraction: f64,
    /// Normal cases painted per refresh of the synthetic cases.
    #[arg(long, value_name = "N", default_value_t = 1)]
    synthetic_cases: usize,
    /// Lesion slices painted per synthetic case (drawn at random; 0 = all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    synthetic_slices: usize,
    /// Joint steps between fresh synthetic cases (the segmenter reuses the
    /// last ones in between).
    #[arg(long, value_name = "K", default_value_t = 1)]
    synth_every: u64,
    /// SMILE patterns of the synthetic masks, drawn with equal probability.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "ischemic"
    )]
    patterns: Vec<String>,
    /// Culprit territory of ischaemic masks: any, lad, rca or lcx.
    #[arg(long, value_name = "T", default_value = "any")]
    territory: String,
    /// Lesion burden range LO,HI (fraction of the myocardium, uniform).
    #[arg(long, value_name = "LO,HI", value_delimiter = ',', num_args = 2, default_values_t = [0.05, 0.30])]
    burden: Vec<f64>,
    /// Probability of an MVO core in an ischaemic mask.
    #[arg(long, value_name = "P", default_value_t = 0.3)]
    mvo_probability: f64,
    /// RePaint t_T of the synthesis (a short schedule).
    #[arg(long, value_name = "T", default_value_t = 100)]
    synth_t_start: usize,
    /// RePaint jump length and count L,R.
    #[arg(long, value_name = "L,R", value_delimiter = ',', num_args = 2, default_values_t = [1, 1])]
    synth_jump: Vec<usize>,
    /// Windows of the one-step-estimate term.
    #[arg(long, value_name = "N", default_value_t = 4)]
    estimate_batch: usize,
    /// The estimate's noise level t is drawn below this.
    #[arg(long, value_name = "T", default_value_t = 100)]
    estimate_max_t: usize,
    /// Segmenter: features per stage (replaces the derived network).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    seg_features: Option<Vec<usize>>,
    /// Segmenter: patch H,W with --seg-features.
    #[arg(
        long,
        value_name = "H,W",
        value_delimiter = ',',
        requires = "seg_features"
    )]
    seg_patch: Option<Vec<usize>>,
    /// Segmenter: convolutions per stage with --seg-features.
    #[arg(long, value_name = "N", default_value_t = 2)]
    seg_convs_per_stage: usize,
    /// Segmenter: patches per step (default the plans').
    #[arg(long, value_name = "N")]
    seg_batch: Option<usize>,
    /// Segmenter: steps per epoch (its poly rate falls per epoch).
    #[arg(long, value_name = "N", default_value_t = 50)]
    seg_iterations_per_epoch: usize,
    /// Segmenter: validation fold 0–4.
    #[arg(long, value_name = "K", default_value_t = 0)]
    fold: usize,
    /// Start the generator from this model (a .safetensors file, or
    /// `builtin`) instead of fresh weights; its network settings replace
    /// --dim, --dim-mults, --heads, --dim-head and --channels.
    #[arg(long, value_name = "MODEL")]
    generator_init: Option<String>,
    /// Do not train the generator: it only paints (from --generator-init),
    /// every step is a segmenter step, and --lambda must be 0.
    #[arg(long, requires = "generator_init")]
    freeze_generator: bool,
    /// Save everything every N generator steps.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    checkpoint_every: u64,
    /// Continue the run saved in OUT (give the same data; --steps may extend it).
    #[arg(long)]
    resume: bool,
}

/// Scarred and normal cases.
fn load_cases(a: &JointArgs) -> Result<(TrainingData, TrainingData)> {
    let d = &a.data;
    match (&d.data, d.phantom) {
        (Some(dir), None) => {
            let (sick, normal) = split_by_lesion(&read_dataset(dir)?);
            if sick.cases.is_empty() {
                return Err(Error::invalid(format!(
                    "{}: no case has scar: nothing to train the generator on",
                    dir.display()
                )));
            }
            Ok((sick, normal))
        }
        (None, Some(n)) => {
            let sick = phantom_cases(n, d.phantom_seed, d.phantom_size, d.phantom_slices, true)?;
            let normal = if a.phantom_normal == 0 {
                TrainingData {
                    cases: Vec::new(),
                    ..sick.clone()
                }
            } else {
                let mut normal = phantom_cases(
                    a.phantom_normal,
                    d.phantom_seed + n as u64,
                    d.phantom_size,
                    d.phantom_slices,
                    false,
                )?;
                for case in &mut normal.cases {
                    case.name = format!("normal_{}", case.name);
                }
                normal
            };
            Ok((sick, normal))
        }
        _ => Err(Error::invalid(
            "give exactly one of --data DIR and --phantom N",
        )),
    }
}

fn joint_config(a: &JointArgs) -> JointConfig {
    JointConfig {
        start_step: a.start_step,
        every: a.every,
        lambda: a.lambda,
        real_fraction: a.real_fraction,
        synthetic_cases: a.synthetic_cases,
        masks: MaskDistribution {
            patterns: a.patterns.clone(),
            territory: a.territory.clone(),
            burden: [a.burden[0], a.burden[1]],
            mvo_probability: a.mvo_probability,
            transmurality: None,
        },
        synth_t_start: a.synth_t_start,
        synth_jump_length: a.synth_jump[0],
        synth_jump_n_sample: a.synth_jump[1],
        estimate_batch: a.estimate_batch,
        estimate_max_t: a.estimate_max_t,
        seed: a.generator.seed,
        synthetic_slices: a.synthetic_slices,
        synth_every: a.synth_every,
        train_generator: !a.freeze_generator,
        generator_init: a.generator_init.clone(),
    }
}

struct JointRun<'a> {
    trainer: JointTrainer,
    args: &'a JointArgs,
    segmenter_log: TrainingLog,
    estimate_log: TrainingLog,
    started: Instant,
    clock_base: f64,
}

impl Run for JointRun<'_> {
    fn steps_done(&self) -> u64 {
        self.trainer.step_count()
    }
    fn step(&mut self) -> Result<StepReport> {
        let report = self.trainer.step()?;
        if !self.trainer.config().train_generator {
            // A frozen generator: the main log is the segmenter's.
            return report.segmenter.ok_or_else(|| {
                Error::Internal("a frozen-generator step without a segmenter step".into())
            });
        }
        let seconds = self.clock_base + self.started.elapsed().as_secs_f64();
        let step = report.generator.step;
        if let Some(seg) = report.segmenter {
            self.segmenter_log.record(LogRow {
                step,
                loss: seg.loss,
                lr: seg.lr,
                seconds,
            });
        }
        if let Some(loss) = report.estimate_loss {
            self.estimate_log.record(LogRow {
                step,
                loss,
                lr: report.generator.lr,
                seconds,
            });
        }
        // Either network's skipped update counts in the run's summary.
        let segmenter_skipped = report.segmenter.is_some_and(|s| s.skipped);
        Ok(StepReport {
            skipped: report.generator.skipped || segmenter_skipped,
            ..report.generator
        })
    }
    fn save(&mut self) -> Result<()> {
        let out = &self.args.output;
        self.trainer.save(out)?;
        self.trainer
            .generator()
            .export_model(&out.join("generator.safetensors"))?;
        let results = out.join("segmenter");
        let done = self.trainer.step_count() >= self.trainer.total_steps();
        self.trainer.segmenter().write_results(
            &results,
            if done {
                CHECKPOINT_FINAL
            } else {
                CHECKPOINT_LATEST
            },
        )?;
        if done {
            let latest = results
                .join(format!("fold_{}", self.trainer.segmenter().config().fold))
                .join(CHECKPOINT_LATEST);
            if latest.is_file() {
                std::fs::remove_file(&latest).map_err(|e| Error::io_at(&latest, &e))?;
            }
        }
        if !self.trainer.config().train_generator {
            return Ok(());
        }
        self.segmenter_log.flush()?;
        self.estimate_log.flush()
    }
    fn checkpoint_due(&self) -> bool {
        self.trainer.step_count() % self.args.checkpoint_every == 0
    }
    fn after_step(&mut self, _bar: &ProgressBar) -> Result<()> {
        Ok(())
    }
    fn resume_hint(&self) -> String {
        format!("--resume -o {}", self.args.output.display())
    }
}

/// Runs `claim train joint`.
pub fn run_joint(a: &JointArgs) -> Result<()> {
    if a.checkpoint_every == 0 {
        return Err(Error::invalid("--checkpoint-every must be ≥ 1"));
    }
    let out = &a.output;
    let state = out.join(JOINT_STATE);
    let compute = a.compute.open()?;
    let mut trainer = if a.resume {
        if !state.is_file() {
            return Err(Error::invalid(format!(
                "--resume: {} does not exist (no joint run in {})",
                state.display(),
                out.display()
            )));
        }
        let mut fixed = a.generator.fixed_by_checkpoint();
        fixed.extend([
            ("--seg-features", a.seg_features.is_some()),
            ("--seg-batch", a.seg_batch.is_some()),
            ("--generator-init", a.generator_init.is_some()),
        ]);
        refuse_fixed(&fixed, &state)?;
        let (sick, normal) = load_cases(a)?;
        JointTrainer::resume(out, &sick, &normal, Some(a.steps))?
    } else {
        if state.is_file() {
            return Err(Error::invalid(format!(
                "{} holds a joint run already: add --resume to continue it, or write to another folder",
                out.display()
            )));
        }
        if a.burden.len() != 2 || a.synth_jump.len() != 2 {
            return Err(Error::invalid(
                "--burden and --synth-jump take two values each",
            ));
        }
        let config = joint_config(a);
        config.validate()?;
        let mut generator = diffusion_config(&a.generator)?;
        if let Some(init) = &a.generator_init {
            let fixed = a.generator.network_flags();
            if let Some((flag, _)) = fixed.iter().find(|(_, given)| *given) {
                return Err(Error::invalid(format!(
                    "{flag} is fixed by --generator-init {init}; drop it"
                )));
            }
            let model = claim::models::Denoiser::from_file(Path::new(init))
                .map_err(|e| e.context(format!("--generator-init {init}")))?;
            generator.model = model.config().clone();
        }
        let options = optim_options(&a.generator)?;
        let (sick, normal) = load_cases(a)?;
        let seg = SegTrainConfig {
            dataset_name: super::dataset_name(&a.data),
            configuration: CONFIGURATION_2D.into(),
            fold: a.fold,
            iterations_per_epoch: a.seg_iterations_per_epoch,
            batch_size: a.seg_batch,
            seed: a.generator.seed,
            ..SegTrainConfig::default()
        };
        let plans = match &a.seg_features {
            Some(features) => {
                let mut plans = derive_plans(&sick, &seg.dataset_name)?.0;
                let patch: Vec<usize> = match &a.seg_patch {
                    Some(p) => p.clone(),
                    None => plans["configurations"][CONFIGURATION_2D]["patch_size"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(|v| v.as_u64().map(|n| n as usize))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                set_network(
                    &mut plans,
                    CONFIGURATION_2D,
                    &patch,
                    features,
                    a.seg_convs_per_stage,
                )?;
                Some(plans)
            }
            None => None,
        };
        JointTrainer::new(
            &sick, &normal, generator, options, a.steps, seg, plans, config,
        )?
    };
    trainer.set_compute(compute)?;
    let start = trainer.step_count();
    if start >= a.steps {
        return Err(Error::invalid(format!(
            "the run is at step {start}; give --steps above it to train on"
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io_at(out, &e))?;
    let cfg = trainer.generator().config().model.clone();
    let seg_net = trainer.segmenter().network().clone();
    let (train, validation) = trainer.segmenter().split();
    eprintln!(
        "joint training: denoiser dim {} mults {:?} on {} windows; segmenter features {:?} on {} \
         real cases (validating on {}); joint steps from {} every {} (λ {}), steps {start}..{}, on {}",
        cfg.dim,
        cfg.dim_mults,
        trainer.generator().window_count(),
        seg_net.features_per_stage,
        train.len(),
        validation.len(),
        trainer.config().start_step,
        trainer.config().every,
        trainer.config().lambda,
        a.steps,
        trainer.compute()
    );
    let resume_at = a.resume.then_some(start);
    let log = |name: &str, title: &str| -> Result<TrainingLog> {
        TrainingLog::open(
            &out.join(format!("{name}.log.csv")),
            &out.join(format!("{name}.loss.svg")),
            title,
            resume_at,
        )
    };
    // With a frozen generator the loop's own log is the segmenter's.
    let frozen = !trainer.config().train_generator;
    let mut main_log = if frozen {
        log(
            "segmenter",
            "claim train joint: segmenter (Dice + CE), generator frozen",
        )?
    } else {
        log("generator", "claim train joint: generator (diffusion loss)")?
    };
    let segmenter_log = log("segmenter", "claim train joint: segmenter (Dice + CE)")?;
    let estimate_log = log("estimate", "claim train joint: λ·segmenter loss of x̂₀")?;
    let clock_base = main_log.elapsed();
    let mut run = JointRun {
        trainer,
        args: a,
        segmenter_log,
        estimate_log,
        started: Instant::now(),
        clock_base,
    };
    let seconds = drive(&mut run, a.steps, &mut main_log)?;
    let (first, last) = loss_summary(main_log.rows());
    if frozen {
        outln!(
            "trained {} steps in {seconds:.1} s (generator frozen): segmenter loss {first:.4} → \
             {last:.4} (first → last 10 %)",
            a.steps - start
        );
    } else {
        let (seg_first, seg_last) = loss_summary(run.segmenter_log.rows());
        outln!(
            "trained {} steps in {seconds:.1} s: generator loss {first:.4} → {last:.4}, segmenter \
             loss {seg_first:.4} → {seg_last:.4} (first → last 10 %)",
            a.steps - start
        );
    }
    let dice = run.trainer.segmenter().validate()?;
    if !dice.is_empty() {
        let names = run.trainer.segmenter().class_names();
        let mut csv = String::from("class,dice\n");
        let mut report = Vec::new();
        for (name, d) in names[1..].iter().zip(&dice) {
            csv.push_str(&format!("{name},{d:.4}\n"));
            report.push(format!("{name} {d:.3}"));
        }
        write_text(&out.join("validation.csv"), &csv)?;
        outln!("segmenter validation Dice: {}", report.join(", "));
    }
    outln!(
        "wrote {} (generator.safetensors, segmenter/, logs, training state)",
        out.display()
    );
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    claim::io::atomic::write_atomically(path, |f| std::io::Write::write_all(f, text.as_bytes()))
}

//! `claim demo`: everything claim can do so far, on the built-in phantom.
//!
//! The demo is a list of steps over one shared state, run in order; later
//! capabilities (diffusion synthesis, segmentation) are more steps.

use crate::label_maps::{format_direction, write_bytes};
use crate::phantom::{create_output_dir, write_case};
use crate::smile::describe_draw;
use claim::metrics::volumes::{label_histogram, tissue_volumes, LabelVolume, TissueVolumes};
use claim::nn::{DeviceSpec, LoadOptions};
use claim::phantom::{self, Phantom, PhantomParams, LABEL_SCHEME};
use claim::smile::aha::{self, AhaParams};
use claim::smile::{
    render_png, render_svg, segment_stats, BullseyeOptions, Pattern, SegmentStats, SmileContext,
    SmileParams, Territory,
};
use claim::volume::narrow_labels;
use claim::{DType, Error, Image, Result, Volume};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "demo/pipeline.rs"]
mod pipeline;

/// Arguments of `claim demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(short, long, value_name = "DIR", default_value = "claim-demo")]
    output: PathBuf,
    /// Seed of the phantom; SMILE draw n uses seed + n.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A shorter synthesis schedule (RePaint without jumps: 300 network
    /// evaluations instead of 598), about half the time.
    #[arg(long)]
    quick: bool,
    /// Device of the two model steps (synthesis, segmentation): `cpu`,
    /// `cuda` or `cuda:N`. CUDA fails at once, before anything is written,
    /// with the reason when this build or machine has none (see
    /// `claim info --build`).
    #[arg(long, value_name = "cpu|cuda[:N]", default_value = "cpu")]
    device: DeviceSpec,
}

/// Name of the machine-readable report in the output folder.
pub const REPORT_FILE: &str = "report.json";
/// The AHA segment map of the phantom (u8, 0 / 1–17).
pub const SEGMENTS_FILE: &str = "segments.nii.gz";
/// Bull's-eye of the phantom's own scar, SVG.
pub const BULLSEYE_SVG: &str = "bullseye.svg";
/// Bull's-eye of the phantom's own scar, PNG.
pub const BULLSEYE_PNG: &str = "bullseye.png";

/// What the demo cannot show yet, said on the console and in the report.
const NOT_BUILT_YET: &[&str] = &[
    "multi-GPU training (data parallel over NCCL; docs/DISTRIBUTED.md says how it will be added)",
];

/// One SMILE draw of the demo.
struct DrawPlan {
    /// File stem: `<name>.nii.gz` and `<name>_bullseye.svg`.
    name: &'static str,
    pattern: Pattern,
    territory: Territory,
    burden: f64,
    mvo: bool,
}

/// The demo's SMILE draws: an infarct in each coronary territory (the LAD
/// one with an MVO core) and a non-ischaemic mid-wall stripe.
const DRAWS: [DrawPlan; 4] = [
    DrawPlan {
        name: "smile_ischemic_lad",
        pattern: Pattern::Ischemic,
        territory: Territory::Lad,
        burden: 0.20,
        mvo: true,
    },
    DrawPlan {
        name: "smile_ischemic_rca",
        pattern: Pattern::Ischemic,
        territory: Territory::Rca,
        burden: 0.12,
        mvo: false,
    },
    DrawPlan {
        name: "smile_ischemic_lcx",
        pattern: Pattern::Ischemic,
        territory: Territory::Lcx,
        burden: 0.08,
        mvo: false,
    },
    DrawPlan {
        name: "smile_midwall",
        pattern: Pattern::Midwall,
        territory: Territory::Any,
        burden: 0.05,
        mvo: false,
    },
];

/// The parcellation, as reported.
#[derive(Debug, Clone, Serialize)]
struct AhaReport {
    file: String,
    /// True when the RV label fixed the septum.
    used_rv: bool,
    /// Unit vector, LPS, apex to base.
    long_axis: [f64; 3],
    myocardium_voxels: usize,
    seconds: f64,
}

/// One SMILE draw, as reported.
#[derive(Debug, Clone, Serialize)]
struct DrawReport {
    name: String,
    file: String,
    bullseye: String,
    seed: u64,
    pattern: Pattern,
    territory: Option<Territory>,
    segments_chosen: Vec<u8>,
    burden_target: Option<f64>,
    burden: f64,
    transmurality: Option<f64>,
    territory_fraction: Option<f64>,
    scar_voxels: usize,
    mvo_voxels: usize,
    /// Time of the draw alone (the parcellation is shared).
    seconds: f64,
    /// The console line of `claim smile` for this draw.
    summary: String,
}

/// Wall time of one step.
#[derive(Debug, Clone, Serialize)]
struct StepTiming {
    step: &'static str,
    seconds: f64,
}

/// What the steps share.
struct DemoState {
    output: PathBuf,
    seed: u64,
    quick: bool,
    /// Where the models run.
    load: LoadOptions,
    case: Option<Phantom>,
    files: Vec<PathBuf>,
    volumes: Option<(TissueVolumes, Vec<LabelVolume>)>,
    segments: Option<Volume<u8>>,
    aha: Option<AhaReport>,
    draws: Vec<(DrawReport, Volume<i32>)>,
    scar_stats: Option<SegmentStats>,
    model: pipeline::ModelState,
    steps: Vec<StepTiming>,
    report: Option<Report>,
}

impl DemoState {
    fn case(&self) -> Result<&Phantom> {
        self.case
            .as_ref()
            .ok_or_else(|| Error::Internal("demo step needs the phantom before it exists".into()))
    }

    fn segments(&self) -> Result<&Volume<u8>> {
        self.segments.as_ref().ok_or_else(|| {
            Error::Internal("demo step needs the AHA segments before they exist".into())
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.output.join(name)
    }
}

/// The demo's findings, also written as `report.json`.
#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    /// The device of the model steps (`cpu`, `cuda:N`).
    device: String,
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    orientation: String,
    volumes: TissueVolumes,
    labels: Vec<LabelVolume>,
    aha: AhaReport,
    smile: Vec<DrawReport>,
    /// Per-segment statistics of the phantom's own (LAD) scar.
    scar_stats: SegmentStats,
    /// Synthesis, segmentation and evaluation with the built-in models.
    models: pipeline::ModelReport,
    bullseye: Vec<String>,
    /// Every step before writing the report, with its time.
    steps: Vec<StepTiming>,
    not_built_yet: Vec<&'static str>,
    files: Vec<String>,
}

type Step = (&'static str, fn(&mut DemoState) -> Result<()>);

/// The demo, in order.
const STEPS: &[Step] = &[
    ("generate the phantom with scar", generate_phantom),
    ("write image and labels", write_files),
    ("measure label volumes", measure),
    ("parcellate into the AHA 17 segments", parcellate),
    ("draw SMILE scar masks", draw_scars),
    (
        "per-segment scar statistics and bull's-eye plots",
        plot_scars,
    ),
    (
        "paint a SMILE infarct into the scar-free phantom (built-in diffusion model)",
        pipeline::synthesize_scar,
    ),
    (
        "segment the synthetic image (built-in nnU-Net segmenter)",
        pipeline::segment,
    ),
    (
        "evaluate the segmentation; bull's-eye of the predicted scar",
        pipeline::evaluate,
    ),
    ("draw overlays", pipeline::overlays),
    ("write the report", write_report),
];

pub fn run(args: &Args) -> Result<()> {
    let load = LoadOptions {
        device: args.device,
        ..LoadOptions::default()
    };
    // Before the output folder exists: `--device cuda` without CUDA fails
    // with the library's reason and writes nothing.
    load.resolve()?;
    create_output_dir(&args.output)?;
    let mut state = DemoState {
        output: args.output.clone(),
        seed: args.seed,
        quick: args.quick,
        load,
        case: None,
        files: Vec::new(),
        volumes: None,
        segments: None,
        aha: None,
        draws: Vec::new(),
        scar_stats: None,
        model: pipeline::ModelState::default(),
        steps: Vec::new(),
        report: None,
    };
    let started = Instant::now();
    for (n, (name, step)) in STEPS.iter().enumerate() {
        let t = Instant::now();
        step(&mut state)?;
        let seconds = t.elapsed().as_secs_f64();
        state.steps.push(StepTiming {
            step: name,
            seconds,
        });
        outln!("[{}/{}] {name}: done in {seconds:.2} s", n + 1, STEPS.len());
    }
    let report = state
        .report
        .as_ref()
        .ok_or_else(|| Error::Internal("demo finished without a report".into()))?;
    print_report(report, &state.files);
    outln!("demo finished in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn generate_phantom(state: &mut DemoState) -> Result<()> {
    state.case = Some(phantom::generate(&PhantomParams {
        seed: state.seed,
        with_scar: true,
        ..PhantomParams::default()
    })?);
    Ok(())
}

fn write_files(state: &mut DemoState) -> Result<()> {
    let (image, labels) = write_case(state.case()?, &state.output)?;
    state.files.extend([image, labels]);
    Ok(())
}

fn measure(state: &mut DemoState) -> Result<()> {
    let labels = &state.case()?.labels;
    let histogram = label_histogram(
        labels.data.iter().map(|l| f64::from(*l)),
        labels.geometry.voxel_volume_mm3(),
    )
    .ok_or_else(|| Error::Internal("phantom labels are not a label map".into()))?;
    state.volumes = Some((tissue_volumes(labels, &LABEL_SCHEME), histogram));
    Ok(())
}

fn parcellate(state: &mut DemoState) -> Result<()> {
    let started = Instant::now();
    let parcellation = aha::parcellate(
        &state.case()?.labels,
        &AhaParams {
            labels: LABEL_SCHEME,
            ..AhaParams::default()
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let path = state.path(SEGMENTS_FILE);
    claim::io::write_image(&Image::U8(parcellation.segments.clone()), &path)?;
    state.aha = Some(AhaReport {
        file: path.display().to_string(),
        used_rv: parcellation.used_rv,
        long_axis: parcellation.long_axis,
        myocardium_voxels: parcellation.voxels.len(),
        seconds,
    });
    state.files.push(path);
    state.segments = Some(parcellation.segments);
    Ok(())
}

fn draw_scars(state: &mut DemoState) -> Result<()> {
    let labels = &state.case()?.labels;
    let segments = state.segments()?;
    let mut draws = Vec::with_capacity(DRAWS.len());
    let mut written = Vec::with_capacity(DRAWS.len());
    for (n, plan) in (0u64..).zip(DRAWS.iter()) {
        let params = SmileParams::default()
            .with_pattern(plan.pattern)
            .with_territory(plan.territory)
            .with_burden(plan.burden)
            .with_mvo(plan.mvo)
            .with_labels(LABEL_SCHEME);
        // The parcellation above is reused: each parameter set only
        // prepares its depth map and distances.
        let context = SmileContext::with_segments(labels, segments, &params)?;
        let seed = state.seed.wrapping_add(n);
        let started = Instant::now();
        let draw = context.draw(seed)?;
        let seconds = started.elapsed().as_secs_f64();
        let path = state.path(&format!("{}.nii.gz", plan.name));
        claim::io::write_image(&narrow_labels(&draw.labels, DType::U8)?, &path)?;
        let report = DrawReport {
            name: plan.name.to_string(),
            file: path.display().to_string(),
            bullseye: state
                .path(&format!("{}_bullseye.svg", plan.name))
                .display()
                .to_string(),
            seed,
            pattern: draw.pattern,
            territory: draw.territory,
            segments_chosen: draw.segments_chosen.clone(),
            burden_target: draw.burden_target,
            burden: draw.burden,
            transmurality: draw.transmurality,
            territory_fraction: draw.territory_fraction,
            scar_voxels: draw.scar_voxels,
            mvo_voxels: draw.mvo_voxels,
            seconds,
            summary: describe_draw(&draw),
        };
        draws.push((report, draw.labels));
        written.push(path);
    }
    state.files.extend(written);
    state.draws = draws;
    Ok(())
}

fn write_plot(path: &Path, stats: &SegmentStats, title: &str) -> Result<()> {
    let options = BullseyeOptions {
        title: Some(title.to_string()),
        ..BullseyeOptions::default()
    };
    write_bytes(path, render_svg(stats, &options)?.as_bytes())
}

fn plot_scars(state: &mut DemoState) -> Result<()> {
    let segments = state.segments()?;
    let stats = segment_stats(&state.case()?.labels, segments, &LABEL_SCHEME)?;
    let svg = state.path(BULLSEYE_SVG);
    write_plot(&svg, &stats, &format!("phantom seed {}: scar", state.seed))?;
    let png = state.path(BULLSEYE_PNG);
    write_bytes(&png, &render_png(&stats, &BullseyeOptions::default())?)?;
    let mut written = vec![svg, png];
    for (draw, labels) in &state.draws {
        let draw_stats = segment_stats(labels, segments, &LABEL_SCHEME)?;
        let path = PathBuf::from(&draw.bullseye);
        write_plot(&path, &draw_stats, &format!("SMILE {}", draw.name))?;
        written.push(path);
    }
    state.files.extend(written);
    state.scar_stats = Some(stats);
    Ok(())
}

fn missing(what: &str) -> Error {
    Error::Internal(format!("report step ran before {what}"))
}

fn write_report(state: &mut DemoState) -> Result<()> {
    let labels = &state.case()?.labels;
    let path = state.path(REPORT_FILE);
    let (volumes, histogram) = state.volumes.clone().ok_or_else(|| missing("measuring"))?;
    let mut files: Vec<String> = state
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    files.push(path.display().to_string());
    let bullseye = files
        .iter()
        .filter(|f| f.ends_with(".svg") || f.ends_with(".png"))
        .cloned()
        .collect();
    let report = Report {
        seed: state.seed,
        device: state.load.device.to_string(),
        dims: labels.dims(),
        spacing_mm: labels.geometry.spacing,
        orientation: labels.geometry.orientation_code(),
        volumes,
        labels: histogram,
        aha: state.aha.clone().ok_or_else(|| missing("parcellating"))?,
        smile: state.draws.iter().map(|(d, _)| d.clone()).collect(),
        scar_stats: state
            .scar_stats
            .clone()
            .ok_or_else(|| missing("measuring scar"))?,
        models: state.model.report.clone(),
        bullseye,
        steps: state.steps.clone(),
        not_built_yet: NOT_BUILT_YET.to_vec(),
        files,
    };
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Internal(format!("report as JSON: {e}")))?;
    std::fs::write(&path, json + "\n").map_err(|e| Error::io_at(&path, &e))?;
    state.files.push(path);
    state.report = Some(report);
    Ok(())
}

/// Share of the scar (with MVO) of `stats` inside a territory's segments.
fn share_in(stats: &SegmentStats, territory: Territory) -> f64 {
    let inside: f64 = territory
        .segments()
        .iter()
        .filter_map(|s| stats.segment(*s))
        .map(|s| s.scar_ml)
        .sum();
    if stats.total_scar_ml > 0.0 {
        inside / stats.total_scar_ml
    } else {
        0.0
    }
}

fn print_report(report: &Report, files: &[PathBuf]) {
    let [ni, nj, nk] = report.dims;
    let [si, sj, sk] = report.spacing_mm;
    let v = &report.volumes;
    outln!();
    outln!(
        "phantom (seed {}): {ni} x {nj} x {nk} voxels, {si} x {sj} x {sk} mm, orientation {}",
        report.seed,
        report.orientation
    );
    outln!("  LV cavity      {:>8.1} mL", v.lv_cavity_ml);
    outln!(
        "  myocardium     {:>8.1} mL (healthy + scar + MVO)",
        v.myocardium_ml
    );
    outln!("  scar           {:>8.1} mL", v.scar_ml);
    outln!("  MVO            {:>8.1} mL", v.mvo_ml);
    if let Some(rv) = v.rv_ml {
        outln!("  RV cavity      {rv:>8.1} mL");
    }
    outln!(
        "  scar + MVO     {:>8.1} % of myocardium",
        v.scar_percent_of_myocardium
    );

    let aha = &report.aha;
    outln!();
    outln!(
        "AHA 17 segments: {} myocardium voxels, {}, long axis {} (LPS, apex to base), {:.3} s",
        aha.myocardium_voxels,
        if aha.used_rv {
            "septum from the RV"
        } else {
            "orientation approximated from the image geometry"
        },
        format_direction(aha.long_axis),
        aha.seconds
    );
    let stats = &report.scar_stats;
    let scarred: Vec<String> = stats
        .per_segment
        .iter()
        .filter(|s| s.scar_percent >= 1.0)
        .map(|s| format!("{} ({:.0} %)", s.segment, s.scar_percent))
        .collect();
    outln!(
        "phantom scar by segment: {}; {:.0} % of it in the LAD territory",
        scarred.join(", "),
        100.0 * share_in(stats, Territory::Lad)
    );

    outln!();
    outln!(
        "SMILE scar masks (one parcellation, {} draws):",
        report.smile.len()
    );
    for d in &report.smile {
        outln!("  {}: {}, {:.4} s", d.name, d.summary, d.seconds);
    }

    pipeline::print(&report.models, &report.device);

    outln!();
    outln!("not built yet:");
    for item in &report.not_built_yet {
        outln!("  - {item}");
    }
    outln!("files:");
    for f in files {
        outln!("  {}", f.display());
    }
}

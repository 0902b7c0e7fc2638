//! `claim demo`: everything claim can do so far, on the built-in phantom.
//!
//! The demo is a list of steps over one shared state, run in order; later
//! capabilities (SMILE scar masks, synthesis, segmentation) are more steps.

use crate::phantom::{create_output_dir, write_case};
use crate::stats::{label_histogram, tissue_volumes, LabelVolume, TissueVolumes};
use claim::phantom::{self, Phantom, PhantomParams, LABEL_SCHEME};
use claim::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `claim demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(short, long, value_name = "DIR", default_value = "claim-demo")]
    output: PathBuf,
    /// Seed of the phantom.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Name of the machine-readable report in the output folder.
pub const REPORT_FILE: &str = "report.json";

/// What the steps share.
struct DemoState {
    output: PathBuf,
    seed: u64,
    case: Option<Phantom>,
    files: Vec<PathBuf>,
    report: Option<Report>,
}

impl DemoState {
    fn case(&self) -> Result<&Phantom> {
        self.case
            .as_ref()
            .ok_or_else(|| Error::Internal("demo step needs the phantom before it exists".into()))
    }
}

/// The demo's findings, also written as `report.json`.
#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    orientation: String,
    volumes: TissueVolumes,
    labels: Vec<LabelVolume>,
    files: Vec<String>,
}

type Step = (&'static str, fn(&mut DemoState) -> Result<()>);

/// The demo, in order.
const STEPS: &[Step] = &[
    ("generate the phantom with scar", generate_phantom),
    ("write image and labels", write_files),
    ("measure label volumes", measure),
    ("write the report", write_report),
];

pub fn run(args: &Args) -> Result<()> {
    create_output_dir(&args.output)?;
    let mut state = DemoState {
        output: args.output.clone(),
        seed: args.seed,
        case: None,
        files: Vec::new(),
        report: None,
    };
    let started = Instant::now();
    for (n, (name, step)) in STEPS.iter().enumerate() {
        let t = Instant::now();
        step(&mut state)?;
        println!(
            "[{}/{}] {name}: done in {:.2} s",
            n + 1,
            STEPS.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let report = state
        .report
        .as_ref()
        .ok_or_else(|| Error::Internal("demo finished without a report".into()))?;
    print_report(report, &state.files);
    println!("demo finished in {:.2} s", started.elapsed().as_secs_f64());
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
    let case = state.case()?;
    let labels = &case.labels;
    let histogram = label_histogram(
        labels.data.iter().map(|l| f64::from(*l)),
        labels.geometry.voxel_volume_mm3(),
    )
    .ok_or_else(|| Error::Internal("phantom labels are not a label map".into()))?;
    state.report = Some(Report {
        seed: state.seed,
        dims: labels.dims(),
        spacing_mm: labels.geometry.spacing,
        orientation: labels.geometry.orientation_code(),
        volumes: tissue_volumes(labels, &LABEL_SCHEME),
        labels: histogram,
        files: state
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
    });
    Ok(())
}

fn write_report(state: &mut DemoState) -> Result<()> {
    let report = state
        .report
        .as_ref()
        .ok_or_else(|| Error::Internal("report step ran before measuring".into()))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Error::Internal(format!("report as JSON: {e}")))?;
    let path = state.output.join(REPORT_FILE);
    std::fs::write(&path, json + "\n").map_err(|e| Error::io_at(&path, &e))?;
    state.files.push(path);
    Ok(())
}

fn print_report(report: &Report, files: &[PathBuf]) {
    let [ni, nj, nk] = report.dims;
    let [si, sj, sk] = report.spacing_mm;
    let v = &report.volumes;
    println!();
    println!(
        "phantom (seed {}): {ni} x {nj} x {nk} voxels, {si} x {sj} x {sk} mm, orientation {}",
        report.seed, report.orientation
    );
    println!("  LV cavity      {:>8.1} mL", v.lv_cavity_ml);
    println!(
        "  myocardium     {:>8.1} mL (healthy + scar + MVO)",
        v.myocardium_ml
    );
    println!("  scar           {:>8.1} mL", v.scar_ml);
    println!("  MVO            {:>8.1} mL", v.mvo_ml);
    if let Some(rv) = v.rv_ml {
        println!("  RV cavity      {rv:>8.1} mL");
    }
    println!(
        "  scar + MVO     {:>8.1} % of myocardium",
        v.scar_percent_of_myocardium
    );
    println!("files:");
    for f in files {
        println!("  {}", f.display());
    }
}

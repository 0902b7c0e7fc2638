//! `claim eval`: compare predicted label maps with ground truth — one pair
//! of files, or a folder of EMIDEC-layout cases.

use crate::label_maps::{in_file, write_bytes};
use claim::io::emidec::{case_name, find_cases};
use claim::metrics::{
    aggregate, evaluate_case_cropped, to_csv, Aggregate, CaseMetrics, EvalOptions, Structure,
};
use claim::smile::territory::SEGMENT_NAMES;
use claim::volume::{CroppedLabels, LABEL_CROP_MARGIN};
use claim::{Error, LabelScheme, Result, ResultExt};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Label schemes `claim eval` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Labels {
    /// 1 LV cavity, 2 myocardium, 3 scar, 4 MVO.
    Emidec,
    /// EMIDEC plus 5 RV (the labels `claim phantom` writes).
    EmidecRv,
}

impl Labels {
    fn scheme(self) -> LabelScheme {
        match self {
            Labels::Emidec => LabelScheme::EMIDEC,
            Labels::EmidecRv => LabelScheme::EMIDEC_WITH_RV,
        }
    }
}

/// Arguments of `claim eval`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "One case: claim eval PRED GT. Many: claim eval --cases DIR, where DIR holds \
EMIDEC case folders: DIR/<Case>/Contours/<Case>.nii.gz is the ground truth (a folder without one \
is not a case). The prediction of <Case> is P/<Case>.nii.gz with --pred-dir P (nnU-Net's output \
naming), else DIR/<Case>/Prediction/<Case>.nii.gz (.nii works too). Cases without a prediction \
are listed and skipped; the others are evaluated and reported, and then claim exits with status \
2 (I/O) unless --allow-missing is given.\n\n\
Per structure (LV cavity, myocardium, scar, MVO, RV with --labels emidec-rv, myocardium incl. \
lesions = EMIDEC's myocardium, scar incl. MVO): Dice (1 when both maps lack the structure), HD95 \
and HD in mm over 6-neighbourhood boundary voxels (undefined when either lacks it), volumes in mL \
and their difference. Scar % of myocardium = (scar + MVO) / (myocardium + scar + MVO), and per \
AHA segment on the ground truth's parcellation. --csv writes one row per case and mean, std, \
median and defined-count rows; undefined values are empty cells."
)]
pub struct Args {
    /// Predicted label map (.nii / .nii.gz).
    #[arg(
        value_name = "PRED",
        required_unless_present = "cases",
        conflicts_with = "cases",
        requires = "reference"
    )]
    pred: Option<PathBuf>,
    /// Ground-truth label map with the prediction's dims and geometry.
    #[arg(value_name = "GT")]
    reference: Option<PathBuf>,
    /// Folder of EMIDEC-layout cases to evaluate (see below).
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Folder of predictions named <Case>.nii.gz (with --cases).
    #[arg(long, value_name = "P", requires = "cases")]
    pred_dir: Option<PathBuf>,
    /// Exit with status 0 even when some cases have no prediction (with --cases).
    #[arg(long, requires = "cases")]
    allow_missing: bool,
    /// Print the metrics as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the metrics as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Label scheme of both maps.
    #[arg(long, value_enum, default_value_t = Labels::Emidec)]
    labels: Labels,
    /// Skip the per-AHA-segment scar burden (no parcellation).
    #[arg(long)]
    no_segments: bool,
    /// Turn the AHA segments by DEG degrees, counter-clockwise as seen from the apex.
    #[arg(
        long,
        value_name = "DEG",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    rotation: f64,
}

pub fn run(args: &Args) -> Result<()> {
    if !args.rotation.is_finite() {
        return Err(Error::invalid(format!(
            "--rotation must be finite, got {}",
            args.rotation
        )));
    }
    let options = EvalOptions {
        per_segment: !args.no_segments,
        aha_rotation_deg: args.rotation,
        ..EvalOptions::default()
    };
    let scheme = args.labels.scheme();
    match (&args.cases, &args.pred, &args.reference) {
        (Some(dir), _, _) => run_cases(args, dir, &scheme, &options),
        (None, Some(pred), Some(reference)) => run_single(args, pred, reference, &scheme, &options),
        _ => Err(Error::invalid(
            "give PRED and GT label maps, or --cases DIR (see claim eval --help)",
        )),
    }
}

/// Evaluates one prediction file against one ground-truth file.
fn evaluate_files(
    pred: &Path,
    reference: &Path,
    scheme: &LabelScheme,
    options: &EvalOptions,
) -> Result<CaseMetrics> {
    // Both maps cut to the box of their labelled voxels: a wide field of
    // view is held as stored, not as 32-bit labels.
    let pred_image = claim::io::read_image(pred)?;
    let ref_image = claim::io::read_image(reference)?;
    let (pred_shown, ref_shown) = (pred.display().to_string(), reference.display().to_string());
    let (pred_map, ref_map) = CroppedLabels::pair_from_images(
        (&pred_image, &pred_shown),
        (&ref_image, &ref_shown),
        LABEL_CROP_MARGIN,
    )?;
    drop((pred_image, ref_image));
    evaluate_case_cropped(&pred_map, &ref_map, scheme, options).map_err(|e| match e {
        Error::InvalidArgument(_) => e.context(format!(
            "{} against {}",
            pred.display(),
            reference.display()
        )),
        other => in_file(reference, other),
    })
}

fn run_single(
    args: &Args,
    pred: &Path,
    reference: &Path,
    scheme: &LabelScheme,
    options: &EvalOptions,
) -> Result<()> {
    let mut metrics = evaluate_files(pred, reference, scheme, options)?;
    metrics.case = case_name(reference);
    if let Some(csv) = &args.csv {
        write_bytes(csv, to_csv(std::slice::from_ref(&metrics)).as_bytes())?;
    }
    if args.json {
        outln!("{}", metrics.to_json()?);
    } else {
        out!("{}", case_report(&metrics, pred, reference));
        if let Some(csv) = &args.csv {
            outln!("wrote {}", csv.display());
        }
    }
    Ok(())
}

/// A case without a prediction.
#[derive(Debug, Serialize)]
struct MissingCase {
    case: String,
    /// Where the prediction was looked for (the .nii.gz name).
    expected: PathBuf,
}

/// What `claim eval --cases --json` prints.
#[derive(Debug, Serialize)]
struct FolderReport<'a> {
    cases: &'a [CaseMetrics],
    aggregate: &'a Aggregate,
    missing: &'a [MissingCase],
}

fn run_cases(args: &Args, dir: &Path, scheme: &LabelScheme, options: &EvalOptions) -> Result<()> {
    if let Some(p) = &args.pred_dir {
        if !p.is_dir() {
            return Err(Error::Io(format!(
                "--pred-dir {}: not a folder",
                p.display()
            )));
        }
    }
    let found = find_cases(dir)?;
    if found.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no EMIDEC cases (folders <Case> holding Contours/<Case>.nii.gz)",
            dir.display()
        )));
    }
    let mut evaluated = Vec::new();
    let mut missing = Vec::new();
    for case in &found {
        let pred = match case.prediction(dir, args.pred_dir.as_deref()) {
            Ok(pred) => pred,
            Err(expected) => {
                missing.push(MissingCase {
                    case: case.name.clone(),
                    expected,
                });
                continue;
            }
        };
        let mut metrics = evaluate_files(&pred, &case.ground_truth, scheme, options)
            .with_context(|| format!("case {}", case.name))?;
        metrics.case = case.name.clone();
        evaluated.push(metrics);
    }
    let summary = aggregate(&evaluated);
    if let Some(csv) = &args.csv {
        write_bytes(csv, to_csv(&evaluated).as_bytes())?;
    }
    if args.json {
        let report = FolderReport {
            cases: &evaluated,
            aggregate: &summary,
            missing: &missing,
        };
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("eval report to JSON: {e}")))?;
        outln!("{json}");
    } else {
        out!("{}", folder_report(dir, &evaluated, &summary, &missing));
        if let Some(csv) = &args.csv {
            outln!("wrote {}", csv.display());
        }
    }
    if !missing.is_empty() && !args.allow_missing {
        let names: Vec<&str> = missing.iter().map(|m| m.case.as_str()).collect();
        return Err(Error::Io(format!(
            "{} of {} cases have no prediction ({}; first expected at {}); the others were \
             evaluated; pass --allow-missing to exit with 0",
            missing.len(),
            found.len(),
            names.join(", "),
            missing
                .first()
                .map(|m| m.expected.display().to_string())
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// A number with `decimals`, or "-" when undefined.
fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_string(),
    }
}

/// The text report of one case.
fn case_report(m: &CaseMetrics, pred: &Path, reference: &Path) -> String {
    let [ni, nj, nk] = m.dims;
    let [si, sj, sk] = m.spacing_mm;
    let mut out = format!(
        "{} against {}: {ni} x {nj} x {nk} voxels of {si} x {sj} x {sk} mm\n",
        pred.display(),
        reference.display()
    );
    out.push_str(&format!(
        "{:<26} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9}\n",
        "structure", "Dice", "HD95 mm", "HD mm", "pred mL", "GT mL", "diff mL"
    ));
    for s in &m.structures {
        out.push_str(&format!(
            "{:<26} {:>7} {:>8} {:>8} {:>9.2} {:>9.2} {:>+9.2}\n",
            s.structure.display_name(),
            format!("{:.4}", s.dice),
            num(s.hd95_mm, 2),
            num(s.hd_mm, 2),
            s.pred_ml,
            s.ref_ml,
            s.volume_difference_ml
        ));
    }
    let b = &m.scar_burden;
    out.push_str(&format!(
        "scar % of myocardium (scar + MVO): pred {}, GT {}, |diff| {} points\n",
        num(b.pred_percent, 2),
        num(b.ref_percent, 2),
        num(b.abs_difference, 2)
    ));
    out.push_str(&format!(
        "EMIDEC volume error, % of GT myocardium: scar {}, MVO {}\n",
        num(b.emidec_scar_error_percent, 2),
        num(b.emidec_mvo_error_percent, 2)
    ));
    if let Some(segments) = &m.segments {
        out.push_str(&format!(
            "scar % per AHA segment (GT parcellation):\n{:>7}  {:<22} {:>7} {:>7} {:>7}\n",
            "segment", "name", "pred", "GT", "|diff|"
        ));
        for (s, name) in segments.iter().zip(SEGMENT_NAMES) {
            out.push_str(&format!(
                "{:>7}  {:<22} {:>7} {:>7} {:>7}\n",
                s.segment,
                name,
                num(s.pred_percent, 1),
                num(s.ref_percent, 1),
                num(s.abs_difference, 1)
            ));
        }
    }
    for note in &m.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// `mean ± std (median; n)` of a metric, or "-".
fn summary_cell(summary: &Aggregate, name: &str, decimals: usize) -> String {
    match summary.metric(name) {
        Some(m) if m.defined > 0 => format!(
            "{} ± {} ({}; {})",
            num(m.mean, decimals),
            num(m.std, decimals),
            num(m.median, decimals),
            m.defined
        ),
        _ => "-".to_string(),
    }
}

/// The text report of a folder of cases.
fn folder_report(
    dir: &Path,
    cases: &[CaseMetrics],
    summary: &Aggregate,
    missing: &[MissingCase],
) -> String {
    let mut out = format!(
        "{} of {} cases in {} evaluated\n",
        cases.len(),
        cases.len() + missing.len(),
        dir.display()
    );
    let dice = |m: &CaseMetrics, s: Structure| m.structure(s).map(|x| x.dice);
    let hd95 = |m: &CaseMetrics, s: Structure| m.structure(s).and_then(|x| x.hd95_mm);
    let width = cases
        .iter()
        .map(|c| c.case.chars().count())
        .chain(missing.iter().map(|c| c.case.chars().count()))
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7} {:>7} {:>7}\n",
        "case",
        "myo Dice",
        "scar Dice",
        "MVO Dice",
        "LV Dice",
        "myo HD95mm",
        "scar%",
        "GT%",
        "|diff|"
    ));
    for m in cases {
        out.push_str(&format!(
            "{:<width$} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7} {:>7} {:>7}\n",
            m.case,
            num(dice(m, Structure::WholeMyocardium), 4),
            num(dice(m, Structure::Scar), 4),
            num(dice(m, Structure::Mvo), 4),
            num(dice(m, Structure::LvCavity), 4),
            num(hd95(m, Structure::WholeMyocardium), 2),
            num(m.scar_burden.pred_percent, 1),
            num(m.scar_burden.ref_percent, 1),
            num(m.scar_burden.abs_difference, 1)
        ));
    }
    for m in missing {
        out.push_str(&format!(
            "{:<width$} no prediction (expected {})\n",
            m.case,
            m.expected.display()
        ));
    }
    if cases.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "over {} case{}, mean ± std (median; cases where defined):\n",
        cases.len(),
        if cases.len() == 1 { "" } else { "s" }
    ));
    let structures = cases
        .first()
        .map(|c| c.structures.iter().map(|s| s.structure).collect::<Vec<_>>())
        .unwrap_or_default();
    for s in structures {
        let key = s.key();
        out.push_str(&format!(
            "  {:<26} Dice {}  HD95 mm {}  |diff| mL {}\n",
            s.display_name(),
            summary_cell(summary, &format!("{key}_dice"), 4),
            summary_cell(summary, &format!("{key}_hd95_mm"), 2),
            summary_cell(summary, &format!("{key}_abs_diff_ml"), 2)
        ));
    }
    out.push_str(&format!(
        "  scar % of myocardium |diff| (points) {}\n",
        summary_cell(summary, "scar_percent_abs_diff", 2)
    ));
    out.push_str(&format!(
        "  EMIDEC volume error, % of GT myocardium: scar {}, MVO {}\n",
        summary_cell(summary, "emidec_scar_error_percent", 2),
        summary_cell(summary, "emidec_mvo_error_percent", 2)
    ));
    for m in cases {
        for note in &m.notes {
            out.push_str(&format!("note: {}: {note}\n", m.case));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_numbers_print_as_a_dash() {
        assert_eq!(num(None, 2), "-");
        assert_eq!(num(Some(f64::INFINITY), 2), "-");
        assert_eq!(num(Some(1.23456), 2), "1.23");
    }
}

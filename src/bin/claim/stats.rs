//! `claim stats`: myocardium, scar and MVO per AHA segment.

use crate::label_maps::{in_file, read_heart_box, segments_for, SchemeArgs};
use claim::smile::territory::SEGMENT_NAMES;
use claim::smile::{segment_stats, SegmentStat, SegmentStats};
use claim::{LabelScheme, Result};
use std::path::PathBuf;

/// Arguments of `claim stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Label map (.nii / .nii.gz) with myocardium, scar and MVO labels.
    labels: PathBuf,
    /// AHA segment map (0 none, 1–17) with the labels' dims and geometry,
    /// e.g. from `claim aha`; without it the labels are parcellated.
    #[arg(long, value_name = "SEG")]
    segments: Option<PathBuf>,
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Label of microvascular obstruction (`--mvo N` works too).
    #[arg(long = "mvo-label", visible_alias = "mvo", value_name = "N", default_value_t = LabelScheme::EMIDEC.mvo)]
    mvo_label: i32,
}

pub fn run(args: &Args) -> Result<()> {
    let params = args.scheme.aha_params(args.mvo_label)?;
    let map = read_heart_box(&args.labels)?;
    let (segments, source) = segments_for(&map, args.segments.as_deref(), &params)?;
    let stats = segment_stats(map.labels(), &segments, &params.labels)
        .map_err(|e| in_file(&map.path, e))?;
    if args.json {
        outln!("{}", stats.to_json()?);
    } else {
        out!("{}", as_table(&stats));
        outln!("{source}");
    }
    Ok(())
}

fn row(out: &mut String, label: &str, name: &str, s: &SegmentStat) {
    out.push_str(&format!(
        "{label:>7}  {name:<22} {:>13.2} {:>9.2} {:>8.2} {:>7.1}\n",
        s.myocardium_ml, s.scar_ml, s.mvo_ml, s.scar_percent
    ));
}

/// The statistics as a text table: one row per segment, then totals.
pub fn as_table(stats: &SegmentStats) -> String {
    let mut out = format!(
        "{:>7}  {:<22} {:>13} {:>9} {:>8} {:>7}\n",
        "segment", "name", "myocardium mL", "scar mL", "MVO mL", "scar %"
    );
    for (s, name) in stats.per_segment.iter().zip(SEGMENT_NAMES) {
        row(&mut out, &s.segment.to_string(), name, s);
    }
    if stats.unassigned.myocardium_ml > 0.0 {
        row(&mut out, "-", "without a segment", &stats.unassigned);
    }
    let total = SegmentStat {
        segment: 0,
        myocardium_ml: stats.total_myocardium_ml,
        scar_ml: stats.total_scar_ml,
        mvo_ml: stats.total_mvo_ml,
        scar_percent: 100.0 * stats.burden,
    };
    row(&mut out, "total", "", &total);
    out.push_str(&format!(
        "burden {:.4} (scar + MVO over the whole myocardium)\n",
        stats.burden
    ));
    out
}

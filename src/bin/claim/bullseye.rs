//! `claim bullseye`: the AHA bull's-eye plot of per-segment scar, SVG or PNG.

use crate::label_maps::{in_file, read_heart_box, segments_for, write_bytes, SchemeArgs};
use claim::smile::{render_png, render_svg, segment_stats, BullseyeOptions};
use claim::{Error, LabelScheme, Result};
use std::path::{Path, PathBuf};

/// Arguments of `claim bullseye`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Label map (.nii / .nii.gz) with myocardium, scar and MVO labels.
    labels: PathBuf,
    /// Output plot: .svg or .png (by the extension).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// AHA segment map (0 none, 1–17) with the labels' dims and geometry,
    /// e.g. from `claim aha`; without it the labels are parcellated.
    #[arg(long, value_name = "SEG")]
    segments: Option<PathBuf>,
    /// Title above the plot (SVG only).
    #[arg(long, value_name = "T")]
    title: Option<String>,
    /// Diameter of the plot in pixels (64–4096); the image is 1.3× as wide.
    #[arg(long, value_name = "PX", default_value_t = BullseyeOptions::default().size_px)]
    size: u32,
    /// Scar % at the top of the colour scale (higher values saturate).
    #[arg(long, value_name = "PERCENT", default_value_t = BullseyeOptions::default().max_percent)]
    max_percent: f64,
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Label of microvascular obstruction (`--mvo N` works too).
    #[arg(long = "mvo-label", visible_alias = "mvo", value_name = "N", default_value_t = LabelScheme::EMIDEC.mvo)]
    mvo_label: i32,
}

/// Output format of a plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// Scalable vector graphics.
    Svg,
    /// Portable network graphics.
    Png,
}

impl PlotFormat {
    /// The format a file name asks for by its extension.
    pub fn of(path: &Path) -> Result<PlotFormat> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("svg") => Ok(PlotFormat::Svg),
            Some("png") => Ok(PlotFormat::Png),
            _ => Err(Error::invalid(format!(
                "output {}: expected a file name ending in .svg or .png",
                path.display()
            ))),
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let format = PlotFormat::of(&args.output)?;
    let options = BullseyeOptions {
        size_px: args.size,
        title: args.title.clone(),
        max_percent: args.max_percent,
        ..BullseyeOptions::default()
    };
    options.validate()?;
    let params = args.scheme.aha_params(args.mvo_label)?;
    let map = read_heart_box(&args.labels)?;
    let (segments, source) = segments_for(&map, args.segments.as_deref(), &params)?;
    let stats = segment_stats(map.labels(), &segments, &params.labels)
        .map_err(|e| in_file(&map.path, e))?;
    let bytes = match format {
        PlotFormat::Svg => render_svg(&stats, &options)?.into_bytes(),
        PlotFormat::Png => render_png(&stats, &options)?,
    };
    write_bytes(&args.output, &bytes)?;
    if format == PlotFormat::Png && args.title.is_some() {
        outln!("note: the title is drawn in SVG plots only");
    }
    outln!(
        "bullseye: burden {:.4} ({:.1} mL scar + MVO in {:.1} mL myocardium); {source}; wrote {}",
        stats.burden,
        stats.total_scar_ml,
        stats.total_myocardium_ml,
        args.output.display()
    );
    Ok(())
}

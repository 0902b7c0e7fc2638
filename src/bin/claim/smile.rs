//! `claim smile`: draw SMILE scar masks into a label map.

use crate::label_maps::{
    check_dtype_holds, check_named, create_parent, in_file, is_nifti_name, orientation_note,
    parcellate, read_heart_box, read_segment_map, SchemeArgs,
};
use claim::smile::{Pattern, SmileContext, SmileParams, SmileResult, Territory};
use claim::volume::narrow_labels;
use claim::{Error, LabelScheme, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `claim smile`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "OUT is one of: a .nii / .nii.gz file (one draw only); a file name \
containing {seed}, replaced by each draw's seed (draw_{seed}.nii.gz gives draw_7.nii.gz, \
draw_8.nii.gz, …); or a folder, any name not ending in .nii / .nii.gz (created if missing), \
that receives smile_<seed>.nii.gz. Draw n (from 0) uses seed SEED + n."
)]
pub struct Args {
    /// Label map (.nii / .nii.gz) with LV cavity and myocardium; any scar
    /// or MVO it holds is replaced by the drawn lesion.
    labels: PathBuf,
    /// Where the draws go: a file, a name containing {seed}, or a folder (see below).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Seed of the first draw: the same seed, input and flags give the same mask.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Number of draws, with seeds SEED, SEED + 1, …; the heart is parcellated once.
    #[arg(long, value_name = "K", default_value_t = 1)]
    count: u64,
    /// Scar pattern: ischemic, midwall, epicardial, insertion or claim.
    #[arg(long, value_name = "NAME", default_value = "ischemic", value_parser = parse_pattern)]
    pattern: Pattern,
    /// Culprit coronary territory of the ischemic pattern: lad, rca, lcx or any
    /// (drawn: LAD 45 %, RCA 35 %, LCx 20 %).
    #[arg(long, value_name = "NAME", default_value = "any", value_parser = parse_territory)]
    territory: Territory,
    /// Lesion (scar + MVO) volume as a fraction 0–1 of the myocardium; drawn
    /// at random when absent.
    #[arg(long, value_name = "F")]
    burden: Option<f64>,
    /// Ischemic only: depth of the scar as a fraction 0–1 of the wall
    /// (1 = transmural); drawn at random when absent.
    #[arg(long, value_name = "F")]
    transmurality: Option<f64>,
    /// Ischemic only: add a microvascular-obstruction core (label --mvo-label).
    #[arg(long)]
    mvo: bool,
    /// AHA segment map (0 none, 1–17) to use instead of parcellating, e.g.
    /// the output of `claim aha`.
    #[arg(long, value_name = "SEG")]
    segments: Option<PathBuf>,
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Label of microvascular obstruction (here not `--mvo`, which switches the MVO core on).
    #[arg(long = "mvo-label", value_name = "N", default_value_t = LabelScheme::EMIDEC.mvo)]
    mvo_label: i32,
}

fn parse_pattern(s: &str) -> std::result::Result<Pattern, String> {
    s.parse::<Pattern>().map_err(|e| e.to_string())
}

fn parse_territory(s: &str) -> std::result::Result<Territory, String> {
    s.parse::<Territory>().map_err(|e| e.to_string())
}

/// File name of a draw in an output folder.
pub fn draw_file_name(seed: u64) -> String {
    format!("smile_{seed}.nii.gz")
}

/// Where the draws of one run go.
#[derive(Debug, Clone, PartialEq)]
enum Destination {
    /// One file (one draw).
    File(PathBuf),
    /// A file name with `{seed}` in it.
    Pattern(String),
    /// A folder receiving `smile_<seed>.nii.gz`.
    Folder(PathBuf),
}

/// Placeholder of the seed in an output name.
const SEED_PLACEHOLDER: &str = "{seed}";

impl Destination {
    fn parse(output: &Path, count: u64) -> Result<Destination> {
        let name = output.to_string_lossy();
        if name.contains(SEED_PLACEHOLDER) {
            if !is_nifti_name(&name) {
                return Err(Error::invalid(format!(
                    "output {name}: a name with {SEED_PLACEHOLDER} must end in .nii or .nii.gz"
                )));
            }
            return Ok(Destination::Pattern(name.into_owned()));
        }
        if is_nifti_name(&name) {
            if count > 1 {
                return Err(Error::invalid(format!(
                    "--count {count} writes {count} files but output {name} is one file: \
                     put {SEED_PLACEHOLDER} in the name (e.g. draw_{SEED_PLACEHOLDER}.nii.gz) \
                     or give a folder"
                )));
            }
            return Ok(Destination::File(output.to_path_buf()));
        }
        Ok(Destination::Folder(output.to_path_buf()))
    }

    fn path(&self, seed: u64) -> PathBuf {
        match self {
            Destination::File(path) => path.clone(),
            Destination::Pattern(pattern) => {
                PathBuf::from(pattern.replace(SEED_PLACEHOLDER, &seed.to_string()))
            }
            Destination::Folder(dir) => dir.join(draw_file_name(seed)),
        }
    }
}

/// The SMILE parameters the flags ask for (checked).
fn smile_params(args: &Args) -> Result<SmileParams> {
    let mut params = SmileParams::default()
        .with_pattern(args.pattern)
        .with_territory(args.territory)
        .with_mvo(args.mvo)
        .with_labels(args.scheme.scheme(args.mvo_label)?)
        .with_aha(args.scheme.aha_params(args.mvo_label)?);
    if let Some(burden) = args.burden {
        params = params.with_burden(burden);
    }
    if let Some(transmurality) = args.transmurality {
        params = params.with_transmurality(transmurality);
    }
    params.validate()?;
    Ok(params)
}

pub fn run(args: &Args) -> Result<()> {
    if args.count == 0 {
        return Err(Error::invalid("--count must be at least 1, got 0"));
    }
    let last_seed = args.seed.checked_add(args.count - 1).ok_or_else(|| {
        Error::invalid(format!(
            "--seed {} with --count {} runs past the largest seed {}",
            args.seed,
            args.count,
            u64::MAX
        ))
    })?;
    let params = smile_params(args)?;
    let destination = Destination::parse(&args.output, args.count)?;

    let map = read_heart_box(&args.labels)?;
    check_dtype_holds(map.dtype, params.labels.scar, "scar", &map.path)?;
    if params.mvo {
        check_dtype_holds(map.dtype, params.labels.mvo, "MVO", &map.path)?;
    }
    let started = Instant::now();
    let (context, how) = match &args.segments {
        Some(path) => {
            check_named(&map, &params.labels)?;
            let segments = read_segment_map(path)?;
            let context = SmileContext::with_segments_cropped(&map.cropped, &segments, &params)
                .map_err(|e| in_file(&map.path, e))?;
            (context, format!("segments from {}", path.display()))
        }
        None => {
            let (parcellation, _) = parcellate(&map, &params.aha_params())?;
            let context =
                SmileContext::with_segments_cropped(&map.cropped, &parcellation.segments, &params)
                    .map_err(|e| in_file(&map.path, e))?;
            (
                context,
                format!(
                    "parcellated, {}",
                    orientation_note(&parcellation, &params.labels)
                ),
            )
        }
    };
    let seeds = if args.count == 1 {
        format!("1 draw (seed {})", args.seed)
    } else {
        format!("{} draws (seeds {} to {last_seed})", args.count, args.seed)
    };
    outln!(
        "smile: {} pattern, {} myocardium voxels, {how}; prepared in {:.3} s; {seeds}, output {}",
        params.pattern,
        context.myocardium_voxels(),
        started.elapsed().as_secs_f64(),
        map.dtype.name(),
    );

    for seed in args.seed..=last_seed {
        let started = Instant::now();
        let draw = context.draw_in_box(seed)?;
        let took = started.elapsed();
        let path = destination.path(seed);
        create_parent(&path)?;
        // Narrowed in the box, then placed: the whole map is only ever held
        // in the file's voxel type.
        let placement = context.placement();
        let whole = placement.uncrop_image(&narrow_labels(&draw.labels, map.dtype)?, "the draw")?;
        claim::io::write_image(&whole, &path)?;
        outln!(
            "{}, {:.3} s, wrote {}",
            describe_draw(&draw),
            took.as_secs_f64(),
            path.display()
        );
    }
    Ok(())
}

/// One line about a draw: seed, territory, segments, burden, transmurality, MVO.
pub fn describe_draw(draw: &SmileResult) -> String {
    let segments: Vec<String> = draw.segments_chosen.iter().map(u8::to_string).collect();
    let target = match draw.burden_target {
        Some(t) => format!(" (target {t:.3})"),
        None => String::new(),
    };
    let territory = match (draw.territory, draw.territory_fraction) {
        (Some(t), Some(f)) => format!("territory {t} ({:.0} % of the lesion in it)", 100.0 * f),
        (Some(t), None) => format!("territory {t}"),
        _ => "territory -".to_string(),
    };
    let transmurality = match draw.transmurality {
        Some(t) => format!("{t:.2}"),
        None => "-".to_string(),
    };
    format!(
        "seed {}: {}, {territory}, segments {}, burden {:.3}{target}, transmurality {transmurality}, scar {} + MVO {} voxels",
        draw.seed,
        draw.pattern,
        segments.join(" "),
        draw.burden,
        draw.scar_voxels,
        draw.mvo_voxels
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let one = Destination::parse(Path::new("out/a.nii.gz"), 1).unwrap();
        assert_eq!(one.path(3), PathBuf::from("out/a.nii.gz"));
        assert!(Destination::parse(Path::new("a.nii"), 2).is_err());
        let pattern = Destination::parse(Path::new("d/x_{seed}.nii"), 5).unwrap();
        assert_eq!(pattern.path(12), PathBuf::from("d/x_12.nii"));
        assert!(Destination::parse(Path::new("x_{seed}.png"), 2).is_err());
        let folder = Destination::parse(Path::new("draws"), 3).unwrap();
        assert_eq!(folder.path(4), PathBuf::from("draws/smile_4.nii.gz"));
    }
}

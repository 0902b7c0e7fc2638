//! `claim phantom`: write the procedural LGE phantom as NIfTI files.

use claim::phantom::{self, Phantom, PhantomParams};
use claim::{Error, Image, Result, Volume};
use std::path::{Path, PathBuf};

/// Arguments of `claim phantom`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (created if missing); receives image.nii.gz and labels.nii.gz.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Seed of the anatomy, orientation and noise (same seed, same files).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Add an LAD-territory infarct (label 3) with an MVO core (label 4).
    #[arg(long)]
    scar: bool,
    /// Matrix size in pixels (1.5625 mm each; 96 holds the heart alone).
    #[arg(long, value_name = "PX", default_value_t = 192)]
    size: usize,
    /// Slices (9 mm apart).
    #[arg(long, value_name = "N", default_value_t = 10)]
    slices: usize,
    /// Write an nnU-Net raw dataset of N cases instead (imagesTr/,
    /// labelsTr/, dataset.json; seeds --seed, --seed + 1, …), e.g. the
    /// input of `claim augment` or `claim train`.
    #[arg(long, value_name = "N", conflicts_with = "scar")]
    cases: Option<usize>,
    /// With --cases: how many of them (the first) have an infarct; the
    /// others are normal hearts.
    #[arg(long, value_name = "M", default_value_t = 0, requires = "cases")]
    scarred: usize,
}

/// Names of the files a case is written to.
pub const IMAGE_FILE: &str = "image.nii.gz";
/// Label map file name (u8, EMIDEC + RV = 5).
pub const LABELS_FILE: &str = "labels.nii.gz";

pub fn run(args: &Args) -> Result<()> {
    if let Some(count) = args.cases {
        return write_dataset(args, count);
    }
    let case = phantom::generate(&PhantomParams {
        seed: args.seed,
        with_scar: args.scar,
        matrix_size: args.size,
        slice_count: args.slices,
        ..PhantomParams::default()
    })?;
    let (image_path, labels_path) = write_case(&case, &args.output)?;
    let [ni, nj, nk] = case.image.dims();
    let s = case.image.geometry.spacing;
    outln!(
        "phantom seed {}{}: {ni} x {nj} x {nk} voxels of {} x {} x {} mm",
        args.seed,
        if args.scar { " with scar" } else { "" },
        s[0],
        s[1],
        s[2]
    );
    outln!("wrote {}", image_path.display());
    outln!("wrote {}", labels_path.display());
    Ok(())
}

/// Creates `dir` (and parents) and writes the image (f32) and the labels (u8).
pub fn write_case(case: &Phantom, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    create_output_dir(dir)?;
    let image_path = dir.join(IMAGE_FILE);
    let labels_path = dir.join(LABELS_FILE);
    claim::io::write_image(&Image::F32(case.image.clone()), &image_path)?;
    claim::io::write_image(&Image::U8(labels_as_u8(&case.labels)?), &labels_path)?;
    Ok((image_path, labels_path))
}

/// Creates an output folder, with an error naming it when that is impossible.
pub fn create_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, &e))?;
    if !dir.is_dir() {
        return Err(Error::Io(format!("{}: not a directory", dir.display())));
    }
    Ok(())
}

/// Label maps are small non-negative integers: store them as u8, like EMIDEC.
fn labels_as_u8(labels: &Volume<i32>) -> Result<Volume<u8>> {
    let data = labels
        .data
        .iter()
        .map(|&l| {
            u8::try_from(l).map_err(|_| Error::Internal(format!("label {l} does not fit in u8")))
        })
        .collect::<Result<Vec<u8>>>()?;
    Volume::from_vec(labels.dims(), data, labels.geometry)
}

/// `--cases N`: an nnU-Net raw dataset of phantoms.
fn write_dataset(args: &Args, count: usize) -> Result<()> {
    if count == 0 || count > 10_000 || args.scarred > count {
        return Err(Error::invalid(format!(
            "--cases {count} --scarred {}: need 1–10000 cases and at most that many scarred",
            args.scarred
        )));
    }
    let (images, labels) = (args.output.join("imagesTr"), args.output.join("labelsTr"));
    create_output_dir(&images)?;
    create_output_dir(&labels)?;
    for i in 0..count {
        let case = phantom::generate(&PhantomParams {
            seed: args.seed.wrapping_add(i as u64),
            with_scar: i < args.scarred,
            matrix_size: args.size,
            slice_count: args.slices,
            ..PhantomParams::default()
        })?;
        let name = format!("phantom_{i:03}");
        claim::io::write_image(
            &Image::F32(case.image.clone()),
            &images.join(format!("{name}_0000.nii.gz")),
        )?;
        claim::io::write_image(
            &Image::U8(labels_as_u8(&case.labels)?),
            &labels.join(format!("{name}.nii.gz")),
        )?;
    }
    let s = phantom::LABEL_SCHEME;
    let dataset = serde_json::json!({
        "channel_names": {"0": "LGE"},
        "labels": {
            "background": 0,
            "cavity": s.lv_cavity,
            "normal_myocardium": s.myocardium,
            "infarction": s.scar,
            "no_reflow": s.mvo,
            "RV": s.rv,
        },
        "numTraining": count,
        "file_ending": ".nii.gz",
        "name": "claim_phantoms",
        "description": format!(
            "{count} claim phantoms from seed {} ({} with an LAD infarct)",
            args.seed, args.scarred
        ),
    });
    let text = serde_json::to_string_pretty(&dataset)
        .map_err(|e| Error::Internal(format!("dataset.json: {e}")))?;
    let path = args.output.join("dataset.json");
    std::fs::write(&path, text).map_err(|e| Error::io_at(&path, &e))?;
    outln!(
        "wrote {count} phantom cases ({} scarred) to {}",
        args.scarred,
        args.output.display()
    );
    Ok(())
}

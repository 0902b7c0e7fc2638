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
}

/// Names of the files a case is written to.
pub const IMAGE_FILE: &str = "image.nii.gz";
/// Label map file name (u8, EMIDEC + RV = 5).
pub const LABELS_FILE: &str = "labels.nii.gz";

pub fn run(args: &Args) -> Result<()> {
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

//! NIfTI-1 reading and writing (placeholder during bring-up; see issue 2).

use crate::error::{Error, Result};
use crate::volume::Image;
use std::path::Path;

/// Reads a `.nii` or `.nii.gz` file.
pub fn read_image(path: &Path) -> Result<Image> {
    Err(Error::Unsupported(format!("{}: NIfTI reading not built yet", path.display())))
}

/// Writes a `.nii` or `.nii.gz` file (gzip when the name ends in `.gz`).
pub fn write_image(image: &Image, path: &Path) -> Result<()> {
    let _ = image;
    Err(Error::Unsupported(format!("{}: NIfTI writing not built yet", path.display())))
}

//! File formats: NIfTI-1 images (and later checkpoints).

pub mod emidec;
pub mod nifti;
pub mod torch;

pub use nifti::{read_image, write_image};

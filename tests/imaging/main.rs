//! Imaging and clinical geometry: NIfTI I/O, AHA-17 parcellation against
//! the atlas, SMILE scar generation and the segmentation metrics. One
//! binary for all (each integration test binary relinks the library).

mod aha_atlas;
mod metrics;
mod nifti_io;
mod smile_generate;

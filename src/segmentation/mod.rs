//! nnU-Net-compatible scar segmentation, in process and without Python.
//!
//! A trained nnU-Net v2 model — a results folder
//! `<Trainer>__<Plans>__<configuration>/` with `plans.json`, `dataset.json`
//! and `fold_<k>/checkpoint_final.pth`, a single checkpoint, or claim's
//! one-file safetensors bundle — loads with [`Segmenter::load`] (files:
//! [`bundle`]; plans: [`plans`]; network: [`crate::models::PlainConvUNet`]).
//! [`Segmenter::segment`] then predicts the way nnU-Net's `nnUNetPredictor`
//! does (`shared/reference/segmentation.md`, checked against `nnunetv2`
//! 2.8's source):
//!
//! 1. **Arrays**: a [`Volume`](crate::volume::Volume)'s data is already
//!    `(z, y, x)` like the SimpleITK array nnU-Net reads; its spacing is
//!    reversed to `(z, y, x)`. Both are permuted by the plans'
//!    `transpose_forward`.
//! 2. **Crop** to the bounding box of voxels that are non-zero in any
//!    channel (the whole image if none is).
//! 3. **Normalise** each channel per `normalization_schemes`
//!    ([`normalize`]): ZScore over the whole cropped 3-D case (or its
//!    hole-filled non-zero mask with `use_mask_for_norm`), CT with the
//!    dataset's foreground statistics, none, rescale to [0, 1].
//! 4. **Resample** to the configuration spacing (2-D configurations: in
//!    plane, the slice spacing kept) with
//!    [`crate::imgproc::resample`] — skipped when the shape would not change.
//! 5. **Sliding window** ([`sliding`]): zero padding up to the patch, nnU-Net's
//!    window starts, Gaussian importance weighting; 2-D configurations run
//!    every slice as a `[1, C, py, px]` patch.
//! 6. **Mirroring**: the average of the network over every flip combination
//!    of the axes the checkpoint allows (`inference_allowed_mirroring_axes`;
//!    none when the checkpoint allows none), switchable.
//! 7. **Folds**: the logits of all folds are averaged (nnU-Net averages
//!    logits, not probabilities; the argmax is the same either way for one
//!    fold and nnU-Net's choice for several).
//! 8. **Back**: logits resampled to the cropped grid (linear) if step 4 ran,
//!    argmax, put into a zero volume at the crop box, permuted by
//!    `transpose_backward`: the input's dims and geometry.
//! 9. **Post-process** (switchable) and map the labels onto the caller's
//!    [`LabelScheme`](crate::volume::LabelScheme) ([`postprocess`]).
//!
//! Like nnU-Net, window sums are kept in half precision (see [`sliding`]),
//! so label maps match nnU-Net's own output voxel for voxel.
//!
//! ```no_run
//! use claim::segmentation::{SegmentParams, Segmenter, SegmenterOptions};
//! let model = Segmenter::load(
//!     std::path::Path::new("nnUNetTrainer__nnUNetPlans__2d"),
//!     &SegmenterOptions::default(),
//! )?;
//! let image = claim::io::read_image(std::path::Path::new("case/image.nii.gz"))?;
//! let labels = model.segment(&image, &SegmentParams::default(), &mut |done, total| {
//!     eprint!("\r{done}/{total}");
//!     true
//! })?;
//! claim::io::write_image(&labels.into(), std::path::Path::new("case/pred.nii.gz"))?;
//! # Ok::<(), claim::Error>(())
//! ```

pub mod bundle;
pub mod normalize;
pub mod plans;
pub mod postprocess;
mod predictor;
pub mod sliding;

pub use bundle::{fold_name, NnunetBundle, FOLD_ALL};
pub use plans::{ConfigurationPlan, DatasetInfo, NormalizationScheme, Plans};
pub use predictor::{
    preprocess_case, CaseLogits, PreprocessedCase, SegmentParams, Segmenter, SegmenterInfo,
    SegmenterOptions,
};

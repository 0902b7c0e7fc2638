//! The built-in models: a small LeFusion/CLAIM denoiser and a small nnU-Net
//! segmenter, trained on the procedural phantoms and shipped inside the
//! library (fp16 safetensors, `models/` in the repository; `models/README.md`
//! gives the commands that reproduce them and their wall times).
//!
//! Every loader that takes a model path takes the name [`BUILTIN`] for
//! them: `claim synth --model builtin`, `claim segment --model builtin`,
//! `claim_diffusion_load("builtin", …)`, `claim_segmenter_load("builtin",
//! …)`. A file that is really called `builtin` is reached as `./builtin`.
//!
//! They are demonstration models: trained on phantoms only, they paint and
//! segment phantom-like short-axis LGE, not patients.

use crate::models::Denoiser;
use crate::nn::{LoadOptions, Weights};
use crate::segmentation::bundle::NnunetBundle;
use crate::Result;
use std::path::Path;

/// The model name that selects a built-in model.
pub const BUILTIN: &str = "builtin";

/// The built-in diffusion model (one channel, 2-D, 72-pixel windows, as
/// CLAIM's), fp16 safetensors.
pub const DIFFUSION_SAFETENSORS: &[u8] =
    include_bytes!("../../models/claim-diffusion-phantom.safetensors");

/// The built-in segmenter (nnU-Net 2d PlainConvUNet, classes of the
/// phantom scheme: cavity, myocardium, scar, MVO, RV), an fp16 claim
/// segmentation bundle.
pub const SEGMENTER_SAFETENSORS: &[u8] =
    include_bytes!("../../models/claim-segmenter-phantom.safetensors");

/// Whether `path` names the built-in models.
pub fn is_builtin(path: &Path) -> bool {
    path.as_os_str() == BUILTIN
}

/// The built-in denoiser, on the device and precision of `options`.
pub fn denoiser(options: &LoadOptions) -> Result<Denoiser> {
    Denoiser::load_with(&Weights::from_safetensors(DIFFUSION_SAFETENSORS)?, options)
}

/// The built-in segmenter's bundle (`folds` as [`NnunetBundle::load`]).
pub fn segmenter_bundle(folds: Option<&[usize]>) -> Result<NnunetBundle> {
    NnunetBundle::from_safetensors_bytes(SEGMENTER_SAFETENSORS, Path::new(BUILTIN), folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_models_load_and_are_small() {
        for bytes in [DIFFUSION_SAFETENSORS, SEGMENTER_SAFETENSORS] {
            assert!(bytes.len() <= 5 << 20, "{} bytes", bytes.len());
        }
        let model = denoiser(&LoadOptions::default()).unwrap();
        assert_eq!(model.config().channels, 1);
        let bundle = segmenter_bundle(None).unwrap();
        crate::segmentation::Segmenter::from_bundle(bundle, None).unwrap();
        assert!(is_builtin(Path::new("builtin")) && !is_builtin(Path::new("./builtin")));
    }
}

//! `claim segment`: segment LV cavity, myocardium, scar and MVO in an LGE
//! image with a trained nnU-Net model, as nnU-Net's own predictor does,
//! with a progress bar.

use crate::eval::Labels;
use crate::label_maps::in_file;
use claim::io::{read_image, write_image};
use claim::metrics::volumes::tissue_volumes;
use claim::nn::{DeviceSpec, LoadOptions};
use claim::segmentation::{fold_name, SegmentParams, Segmenter, SegmenterOptions, FOLD_ALL};
use claim::{Error, LabelScheme, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `claim segment`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "MODEL is an nnU-Net v2 results folder (…/Trainer__Plans__configuration with \
plans.json, dataset.json and fold_<k>/checkpoint_final.pth), one checkpoint_final.pth, or a \
safetensors bundle from `claim import`; no Python is needed. Prediction follows nnU-Net's \
predictor (crop, normalisation, resampling, Gaussian-weighted sliding window, test-time \
mirroring, fold ensemble), so with --no-postprocess the label map is nnU-Net's (a voxel where \
two classes tie to float rounding may differ). The output is a u8 label map with the image's dims and geometry; the model's classes are written with the \
--labels values, matched by their dataset.json names."
)]
pub struct Args {
    /// nnU-Net results folder, checkpoint_final.pth or safetensors bundle.
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// LGE image (.nii / .nii.gz), one channel.
    #[arg(long, value_name = "I")]
    image: PathBuf,
    /// Output label map (.nii / .nii.gz).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Device to run on: `cpu`, `cuda` or `cuda:N`. CUDA fails with the
    /// reason when this build or machine has none (see `claim info --build`).
    #[arg(long, value_name = "cpu|cuda[:N]", default_value = "cpu")]
    device: DeviceSpec,
    /// Folds to ensemble (`--folds 0,1`; `all` for fold_all); default every
    /// numbered fold found.
    #[arg(long, value_name = "K,…", value_delimiter = ',', value_parser = parse_fold)]
    folds: Vec<usize>,
    /// Plans configuration to use (default: the one the checkpoints were trained with).
    #[arg(long, value_name = "NAME")]
    configuration: Option<String>,
    /// No test-time mirroring (faster; nnU-Net mirrors by default).
    #[arg(long)]
    no_mirroring: bool,
    /// Sliding-window step as a fraction of the patch, in (0, 1].
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    step: f32,
    /// Keep the network's labels as they are (no scar/MVO clean-up).
    #[arg(long)]
    no_postprocess: bool,
    /// Label values to write.
    #[arg(long, value_enum, default_value_t = Labels::Emidec)]
    labels: Labels,
}

fn parse_fold(text: &str) -> std::result::Result<usize, String> {
    if text == "all" {
        return Ok(FOLD_ALL);
    }
    text.parse::<usize>()
        .ok()
        .filter(|&k| k != FOLD_ALL)
        .ok_or_else(|| format!("{text:?} is not a fold number or `all`"))
}

fn scheme(labels: Labels) -> LabelScheme {
    match labels {
        Labels::Emidec => LabelScheme::EMIDEC,
        Labels::EmidecRv => LabelScheme::EMIDEC_WITH_RV,
    }
}

/// Runs `claim segment`.
pub fn run(args: &Args) -> Result<()> {
    if !(args.step > 0.0 && args.step <= 1.0) {
        return Err(Error::invalid(format!(
            "--step: expected a fraction of the patch in (0, 1], got {}",
            args.step
        )));
    }
    let params = SegmentParams {
        mirroring: !args.no_mirroring,
        step_size: args.step,
        postprocess: !args.no_postprocess,
        label_scheme: scheme(args.labels),
    };
    let options = SegmenterOptions {
        folds: (!args.folds.is_empty()).then(|| args.folds.clone()),
        configuration: args.configuration.clone(),
    };
    // Resolved before anything is read, so `--device cuda` on a build or
    // machine without CUDA fails at once with the library's reason.
    let load = LoadOptions {
        device: args.device,
        ..LoadOptions::default()
    };
    load.resolve()?;
    let image = read_image(&args.image).map_err(|e| in_file(&args.image, e))?;
    let start = Instant::now();
    let model =
        Segmenter::load_with(&args.model, &options, &load).map_err(|e| in_file(&args.model, e))?;
    let info = model.info();
    let folds: Vec<String> = info.folds.iter().map(|&k| fold_name(k)).collect();
    outln!(
        "model: {} {} ({}-D, patch {:?}, spacing {:?} mm), fold(s) {}, {} parameters each; \
         loaded in {:.2} s",
        info.trainer,
        info.configuration,
        info.spatial_dims,
        info.patch_size,
        info.spacing,
        folds.join(", "),
        info.parameters,
        start.elapsed().as_secs_f64()
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} network evaluations (ETA {eta})",
        )
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    let start = Instant::now();
    let mut evaluations = 0;
    let result = model.segment(&image, &params, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        evaluations = done;
        true
    });
    bar.finish_and_clear();
    let labels = result.map_err(|e| in_file(&args.image, e))?;
    let seconds = start.elapsed().as_secs_f64();
    let volumes = tissue_volumes(&labels.map(|&v| i32::from(v)), &params.label_scheme);
    write_image(&labels.into(), &args.output).map_err(|e| in_file(&args.output, e))?;
    outln!(
        "segmented {} in {seconds:.1} s ({evaluations} network evaluations{}): LV cavity \
         {:.1} mL, myocardium {:.1} mL (scar {:.1} mL, MVO {:.1} mL, {:.1} % of it)",
        args.image.display(),
        if params.mirroring { ", mirrored" } else { "" },
        volumes.lv_cavity_ml,
        volumes.myocardium_ml,
        volumes.scar_ml,
        volumes.mvo_ml,
        volumes.scar_percent_of_myocardium
    );
    outln!("wrote {}", args.output.display());
    Ok(())
}

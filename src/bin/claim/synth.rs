//! `claim synth`: paint LGE scar into an image under its scar/MVO labels
//! with a LeFusion/CLAIM diffusion model (RePaint), with a progress bar.

use crate::label_maps::{in_file, read_label_map, SchemeArgs};
use claim::io::{read_image, write_image};
use claim::models::Denoiser;
use claim::nn::{DeviceSpec, LoadOptions};
use claim::synthesis::{synthesize, Condition, JumpParams, SynthesisParams};
use claim::{Error, LabelScheme, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `claim synth`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Only voxels labelled scar or MVO change unless --keep-network-output; \
every other voxel is copied bit for bit. 300/5/5 (the defaults, CLAIM's inference setting) run \
1480 network evaluations per batch of slices. Convert an upstream .pt checkpoint with \
`claim import CKPT.pt -o MODEL.safetensors [--ema]` (no Python needed)."
)]
pub struct Args {
    /// Denoiser weights (.safetensors; upstream keys, any wrapper prefix).
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// LGE image (.nii / .nii.gz).
    #[arg(long, value_name = "I")]
    image: PathBuf,
    /// Label map on the image's grid with the scar (and MVO) to paint.
    #[arg(long, value_name = "L")]
    labels: PathBuf,
    /// Output image (.nii / .nii.gz), the input's dtype and geometry.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Device to run on: `cpu`, `cuda` or `cuda:N`. CUDA fails with the
    /// reason when this build or machine has none (see `claim info --build`).
    #[arg(long, value_name = "cpu|cuda[:N]", default_value = "cpu")]
    device: DeviceSpec,
    /// Seed of every random draw: same seed, inputs and flags → same image.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// RePaint's starting timestep t_T (1–300).
    #[arg(long, value_name = "N", default_value_t = 300)]
    t_start: usize,
    /// Steps gone back up per jump.
    #[arg(long, value_name = "N", default_value_t = 5)]
    jump_length: usize,
    /// Visits of each jump point.
    #[arg(long, value_name = "N", default_value_t = 5)]
    jump_n_sample: usize,
    /// Classifier-free guidance scale (1 = off; otherwise 2 evaluations per step).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    guidance: f32,
    /// Histogram condition: `preset` (CLAIM's EMIDEC centre), `null`, or
    /// 16 (or 32) comma-separated values.
    #[arg(long, value_name = "preset|v1,…,v16", default_value = "preset")]
    hist: Condition,
    /// Use the histogram as given (no upstream 10 % perturbation).
    #[arg(long)]
    no_perturb: bool,
    /// Paste the network's whole window (as upstream) instead of only the lesion.
    #[arg(long)]
    keep_network_output: bool,
    /// Slices per network batch.
    #[arg(long, value_name = "N", default_value_t = 4)]
    batch_size: usize,
    /// In-plane window side around the LV cavity (the model's training size).
    #[arg(long, value_name = "PX", default_value_t = 72)]
    crop: usize,
    /// Consecutive slices per item (1 for 2-D models such as CLAIM's).
    #[arg(long, value_name = "F", default_value_t = 1)]
    frames: usize,
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Label of microvascular obstruction.
    #[arg(long = "mvo-label", value_name = "N", default_value_t = LabelScheme::EMIDEC.mvo)]
    mvo_label: i32,
}

/// Runs `claim synth`.
pub fn run(args: &Args) -> Result<()> {
    let scheme = args.scheme.scheme(args.mvo_label)?;
    // Resolved before anything is read, so `--device cuda` on a build or
    // machine without CUDA fails at once with the library's reason.
    let load = LoadOptions {
        device: args.device,
        ..LoadOptions::default()
    };
    load.resolve()?;
    let model =
        Denoiser::from_file_with(&args.model, &load).map_err(|e| in_file(&args.model, e))?;
    let image = read_image(&args.image).map_err(|e| in_file(&args.image, e))?;
    let labels = read_label_map(&args.labels)?;
    let params = SynthesisParams {
        seed: args.seed,
        jump: JumpParams {
            t_start: args.t_start,
            jump_length: args.jump_length,
            jump_n_sample: args.jump_n_sample,
        },
        guidance: args.guidance,
        condition: args.hist.clone(),
        perturb_condition: !args.no_perturb,
        batch_size: args.batch_size,
        crop_size: args.crop,
        frames: args.frames,
        keep_network_output: args.keep_network_output,
        labels: scheme,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} network evaluations (ETA {eta})",
        )
        .map_err(|e| Error::Internal(format!("progress template: {e}")))?,
    );
    let start = Instant::now();
    let result = synthesize(
        &model,
        &image,
        &labels.labels,
        &params,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            true
        },
    );
    bar.finish_and_clear();
    let result = result?;
    write_image(&result.image, &args.output).map_err(|e| in_file(&args.output, e))?;
    outln!(
        "synthesized scar on slices {:?}: {} item(s) in {} batch(es), {} network evaluations, {:.1} s",
        result.slices,
        result.items,
        result.batches,
        result.network_evaluations,
        start.elapsed().as_secs_f64()
    );
    outln!("wrote {}", args.output.display());
    Ok(())
}

//! `claim synth`: paint LGE scar into an image under its scar/MVO labels
//! with a LeFusion/CLAIM diffusion model (RePaint), with a progress bar;
//! every upstream layout (one-channel 2-D CLAIM, two-channel scar + MVO
//! 3-D LeFusion-EMIDEC).

use crate::label_maps::{in_file, read_label_map, SchemeArgs};
use claim::io::{read_image, write_image};
use claim::models::Denoiser;
use claim::nn::{DeviceSpec, LoadOptions};
use claim::synthesis::{
    measure_channel_histograms, synthesize, ChannelHistogram, Condition, JumpParams, Layout,
    SynthesisParams,
};
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
`claim import CKPT.pt -o MODEL.safetensors [--ema]` (no Python needed).

Model layouts (read off the weights; `claim info --model M` is not needed):
  1 channel, cond 16 (CLAIM, 2-D): channel 0 paints scar and MVO alike (MVO
    voxels are reported with a warning); one histogram; --frames 1.
  2 channels, cond 32 (LeFusion-EMIDEC, 3-D): channel 0 paints the scar
    (label 3), channel 1 the MVO (label 4); two histograms (scar, MVO);
    --frames 10. The image is repeated on both channels; the known region is
    every voxel that is neither scar nor MVO; each lesion voxel takes the
    channel of its label.
  --channel-labels changes the map (one label per channel, scar or MVO).

Histograms: --hist once per channel (`--hist preset --hist 0.1,…` gives the
scar channel the preset and the MVO channel 16 values), or once for the
whole condition (`preset`, `null`, or all 16 × channels values), or
measured per channel from a reference case with --hist-ref-image and
--hist-ref-labels (a channel whose label the reference lacks gets zeros).

3-D windows (frames F > 1): the whole volume is scaled to [-1, 1]; a volume
with fewer than F slices is one window zero-padded to F (half the padding
before, rounded up); a lesion spanning at most F slices gets one window
centred on it; longer lesions get windows overlapping by at least F/2,
blended inside the lesion (frames near a window's centre weigh most)."
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
    /// Histogram condition, once per model channel (`preset` or 16
    /// comma-separated values), or once for the whole condition (`preset`,
    /// `null`, or all 16 × channels values). Default: the layout's presets
    /// (CLAIM's EMIDEC centre; LeFusion's EMIDEC scar and MVO centres).
    #[arg(long, value_name = "preset|null|v1,…,v16")]
    hist: Vec<String>,
    /// Measure each channel's histogram from this reference image (with
    /// --hist-ref-labels) instead of --hist.
    #[arg(
        long,
        value_name = "I",
        requires = "hist_ref_labels",
        conflicts_with = "hist"
    )]
    hist_ref_image: Option<PathBuf>,
    /// Label map of the --hist-ref-image case.
    #[arg(long, value_name = "L", requires = "hist_ref_image")]
    hist_ref_labels: Option<PathBuf>,
    /// The label each model channel paints, in channel order (default: the
    /// scar label for one channel; scar, MVO for two).
    #[arg(long, value_name = "L0,L1,…", value_delimiter = ',')]
    channel_labels: Vec<i32>,
    /// Use the histogram as given (no upstream 10 % perturbation).
    #[arg(long)]
    no_perturb: bool,
    /// Paste the network's whole window (as upstream) instead of only the lesion.
    #[arg(long)]
    keep_network_output: bool,
    /// Items (slices or slice stacks) per network batch; 0 = automatic (4 on
    /// the CPU, from free memory on a GPU). The image does not depend on it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    batch_size: usize,
    /// In-plane window side around the LV cavity (the model's training size).
    #[arg(long, value_name = "PX", default_value_t = 72)]
    crop: usize,
    /// Consecutive slices per item; 0 = the model's layout (10 for a
    /// two-channel model, LeFusion-EMIDEC; 1 otherwise, CLAIM).
    #[arg(long, value_name = "F", default_value_t = 0)]
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
    let mut params = SynthesisParams {
        seed: args.seed,
        jump: JumpParams {
            t_start: args.t_start,
            jump_length: args.jump_length,
            jump_n_sample: args.jump_n_sample,
        },
        guidance: args.guidance,
        condition: Condition::Preset,
        perturb_condition: !args.no_perturb,
        batch_size: args.batch_size,
        crop_size: args.crop,
        frames: args.frames,
        keep_network_output: args.keep_network_output,
        labels: scheme,
        channel_labels: args.channel_labels.clone(),
    };
    params.condition = match (&args.hist_ref_image, &args.hist_ref_labels) {
        (Some(ref_image), Some(ref_labels)) => {
            let layout = Layout::resolve(model.config(), &params)?;
            let reference = read_image(ref_image).map_err(|e| in_file(ref_image, e))?;
            let reference_labels = read_label_map(ref_labels)?;
            let values = measure_channel_histograms(
                &reference,
                reference_labels.labels(),
                &scheme,
                &layout,
                args.crop,
            )
            .map_err(|e| in_file(ref_labels, e))?;
            Condition::Values(values)
        }
        _ => condition_of(&args.hist)?,
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
        labels.labels(),
        &params,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
            true
        },
    );
    bar.finish_and_clear();
    let result = result?;
    for warning in &result.warnings {
        eprintln!("warning: {warning}");
    }
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

/// The condition of the `--hist` flags: none → the presets; one → the
/// whole condition (`preset`, `null` or every value); several → one
/// histogram per channel.
fn condition_of(hist: &[String]) -> Result<Condition> {
    match hist {
        [] => Ok(Condition::Preset),
        [one] => one.parse(),
        several => several
            .iter()
            .map(|h| {
                if matches!(h.trim(), "null" | "none") {
                    Err(Error::invalid(
                        "--hist null applies to the whole condition; give it once",
                    ))
                } else {
                    h.parse::<ChannelHistogram>()
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Condition::Channels),
    }
}

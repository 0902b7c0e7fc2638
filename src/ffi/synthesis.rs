//! `claim_progress_fn`, `claim_synthesis_params`, `claim_diffusion_synthesize`,
//! `claim_histogram_measure` and `claim_histogram_measure_channels`: scar
//! synthesis of [`crate::synthesis::synthesize`] for every upstream model
//! layout (one-channel 2-D CLAIM, two-channel scar + MVO 3-D LeFusion).

use super::args::handle_ref;
use super::args::{read_struct, write_default, CStruct};
use super::boundary;
use super::diffusion::claim_diffusion_model;
use super::labels::{claim_label_scheme, label_scheme_from_ptr};
use super::status::claim_status;
use super::volume::{
    claim_volume, dtype_from_c, image_from_c, labels_from_c, out_volume_from_c, CLAIM_VOXEL_F32,
};
use crate::error::{Error, Result};
use crate::synthesis::{
    measure_channel_histograms, measure_histogram, synthesize, Condition, JumpParams, Layout,
    SynthesisParams, CLAIM_CROP_SIZE, HISTOGRAM_BINS, MAX_CHANNELS, TIMESTEPS,
};
use crate::volume::Image;
use std::ffi::c_void;
use std::mem::size_of;

/// Progress callback of long calls: `done` of `total` units (network
/// evaluations for `claim_diffusion_synthesize`) are finished. Called on the calling
/// thread, before the first unit and after each. Return non-zero to cancel:
/// the call then stops and returns `CLAIM_ERR_CANCELLED`.
pub type claim_progress_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, done: u64, total: u64) -> i32>;

/// Where the histogram condition of `claim_diffusion_synthesize` comes from (a
/// `typedef int32_t`). The numbers never change.
pub type claim_histogram_source = i32;

/// The built-in k-means cluster centres of the model's layout, one 16-bin
/// histogram per channel (the default): CLAIM's EMIDEC centre for a
/// one-channel model, LeFusion's EMIDEC scar and MVO centres for a
/// two-channel one. Needs a condition of 16 values per channel.
pub const CLAIM_HISTOGRAM_PRESET: claim_histogram_source = 0;
/// The first `histogram_length` values of `histogram`: the model's whole
/// condition (`claim_diffusion_info.cond_dim`), 16 per channel in channel
/// order (16 for CLAIM; 32 for LeFusion-EMIDEC: scar then MVO), e.g. from
/// `claim_histogram_measure_channels`.
pub const CLAIM_HISTOGRAM_VALUES: claim_histogram_source = 1;
/// The model's learned null condition (unconditional sampling).
pub const CLAIM_HISTOGRAM_NULL: claim_histogram_source = 2;

/// Bins of one lesion histogram.
pub const CLAIM_HISTOGRAM_BINS: u32 = 16;
/// Room in `claim_synthesis_params.histogram` (two channels' histograms).
pub const CLAIM_HISTOGRAM_MAX: u32 = 32;
/// Room in `claim_synthesis_params.channel_labels`: the most channels a
/// model may have for synthesis.
pub const CLAIM_MAX_CHANNELS: u32 = 8;

/// How `claim_diffusion_synthesize` samples. Initialise with
/// `CLAIM_DEFAULT(claim_synthesis_params, &p)` and change what differs.
///
/// Model layouts: channel c of the model paints the label
/// `channel_labels[c]` (default: one channel → the scheme's scar label,
/// CLAIM; two channels → scar then MVO, LeFusion-EMIDEC). The image is
/// repeated on every channel; the known region is every voxel that is
/// neither scar nor MVO; the result takes each voxel from the channel
/// painting its label and channel 0 elsewhere (MVO given to a one-channel
/// model is painted by that channel, as scar). The condition is one 16-bin
/// histogram per channel, concatenated.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_synthesis_params {
    /// `sizeof(claim_synthesis_params)`, set by the default function.
    pub struct_size: u32,
    /// RePaint's starting timestep t_T, 1–300 (default 300).
    pub t_start: u32,
    /// Steps gone back up per jump, ≥ 1 (default 5).
    pub jump_length: u32,
    /// Visits of each jump point, ≥ 1 (default 5). 300/5/5 runs 1480
    /// network evaluations per batch; 300/1/1 is plain DDPM (300).
    pub jump_n_sample: u32,
    /// Seed of every random draw: the same seed, input and parameters give
    /// the same image on every run and thread (default 0).
    pub seed: u64,
    /// Classifier-free guidance scale; 1 = off (default). Other values run
    /// the network twice per step. Needs a histogram (not NULL source).
    pub guidance_scale: f64,
    /// A `CLAIM_HISTOGRAM_*` value (default `CLAIM_HISTOGRAM_PRESET`).
    /// Ignored by unconditional models except that VALUES is refused.
    pub histogram_source: claim_histogram_source,
    /// Values of `histogram` in use with `CLAIM_HISTOGRAM_VALUES`.
    pub histogram_length: u32,
    /// The histogram for `CLAIM_HISTOGRAM_VALUES` (finite values).
    pub histogram: [f32; 32],
    /// 1 (default): perturb the histogram by up to 10 % per bin as upstream
    /// inference does (one draw per sampled item); 0: use it as given.
    pub perturb_histogram: i32,
    /// 0 (default): only voxels labelled scar or MVO change; every other
    /// voxel is copied bit for bit. 1: the whole cropped window of each
    /// synthesized slice is the network's output, as upstream.
    pub keep_network_output: i32,
    /// Items (slices or slice stacks) per network batch, 1–1024; 0 (the
    /// default) = automatic: 4 on the CPU, on a GPU as many as half its
    /// free memory holds. The image does not depend on it.
    pub batch_size: u32,
    /// Side of the in-plane window centred on the LV cavity, cropped or
    /// zero-padded, a multiple of the model's `size_multiple` (default 72).
    pub crop_size: u32,
    /// Consecutive slices per item: 0 (default) = the model's layout (10
    /// for a two-channel model, LeFusion-EMIDEC; 1 otherwise, CLAIM), else
    /// 1–256. For F > 1 the whole volume is scaled to [−1, 1]; a volume with
    /// fewer than F slices is one item zero-padded to F (⌈pad/2⌉ frames
    /// before); a lesion spanning more than F slices is covered by windows
    /// overlapping by at least F/2, blended inside the lesion (see the
    /// library's `synthesis::pipeline` docs for the exact rule).
    pub frames: u32,
    /// Label scheme of `labels`: NULL (the default) for EMIDEC without RV,
    /// else a scheme borrowed for the call.
    pub labels: *const claim_label_scheme,
    /// Entries of `channel_labels` in use: 0 (default) = the layout's
    /// default map, else the model's channel count (a different count is
    /// refused, naming both). Appended in ABI 2.1: a caller whose struct
    /// ends before it (`struct_size` 200) gets the default.
    pub channel_count: u32,
    /// The label each model channel paints, in channel order: the scheme's
    /// scar or MVO label, each at most once.
    pub channel_labels: [i32; 8],
}

impl Default for claim_synthesis_params {
    fn default() -> Self {
        let jump = JumpParams::default();
        claim_synthesis_params {
            struct_size: size_of::<claim_synthesis_params>() as u32,
            t_start: jump.t_start as u32,
            jump_length: jump.jump_length as u32,
            jump_n_sample: jump.jump_n_sample as u32,
            seed: 0,
            guidance_scale: 1.0,
            histogram_source: CLAIM_HISTOGRAM_PRESET,
            histogram_length: 0,
            histogram: [0.0; 32],
            perturb_histogram: 1,
            keep_network_output: 0,
            batch_size: 0,
            crop_size: CLAIM_CROP_SIZE as u32,
            frames: 0,
            labels: std::ptr::null(),
            channel_count: 0,
            channel_labels: [0; 8],
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, floats and a raw
// pointer, all valid for any bit pattern. FIRST_RELEASE_SIZE stops before
// `channel_count`, appended in ABI 2.1.
unsafe impl CStruct for claim_synthesis_params {
    const C_NAME: &'static str = "claim_synthesis_params";
    const FIRST_RELEASE_SIZE: usize = 200;
    fn with_struct_size(self, size: u32) -> Self {
        claim_synthesis_params {
            struct_size: size,
            ..self
        }
    }
}

fn flag(value: i32, name: &str) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::invalid(format!(
            "{name}: expected 0 or 1, got {other}"
        ))),
    }
}

/// The checked Rust parameters of a caller's `claim_synthesis_params`.
///
/// # Safety
///
/// `value.labels` must be NULL or point to a `claim_label_scheme` of
/// `struct_size` readable bytes.
pub(crate) unsafe fn synthesis_params_from_c(
    value: &claim_synthesis_params,
    name: &str,
) -> Result<SynthesisParams> {
    if value.t_start == 0 || value.t_start as usize > TIMESTEPS {
        return Err(Error::invalid(format!(
            "{name}.t_start: expected 1–{TIMESTEPS}, got {}",
            value.t_start
        )));
    }
    for (field, v) in [
        ("jump_length", value.jump_length),
        ("jump_n_sample", value.jump_n_sample),
        ("crop_size", value.crop_size),
    ] {
        if v == 0 {
            return Err(Error::invalid(format!(
                "{name}.{field}: must be ≥ 1, got 0"
            )));
        }
    }
    if !value.guidance_scale.is_finite() {
        return Err(Error::invalid(format!(
            "{name}.guidance_scale: must be finite, got {}",
            value.guidance_scale
        )));
    }
    let condition = match value.histogram_source {
        CLAIM_HISTOGRAM_PRESET => Condition::Preset,
        CLAIM_HISTOGRAM_NULL => Condition::Null,
        CLAIM_HISTOGRAM_VALUES => {
            let n = value.histogram_length as usize;
            let values = value.histogram.get(..n).ok_or_else(|| {
                Error::invalid(format!(
                    "{name}.histogram_length: expected 1–{CLAIM_HISTOGRAM_MAX}, got {n}"
                ))
            })?;
            if n == 0 {
                return Err(Error::invalid(format!(
                    "{name}.histogram_length: expected 1–{CLAIM_HISTOGRAM_MAX}, got 0"
                )));
            }
            Condition::Values(values.to_vec())
        }
        other => {
            return Err(Error::invalid(format!(
                "{name}.histogram_source: expected a CLAIM_HISTOGRAM_* value (0..=2), got {other}"
            )))
        }
    };
    if value.frames > 256 {
        return Err(Error::invalid(format!(
            "{name}.frames: expected 0 (the model's) or 1–256, got {}",
            value.frames
        )));
    }
    let channels = value.channel_count as usize;
    let channel_labels = value
        .channel_labels
        .get(..channels)
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name}.channel_count: expected 0 (the default map) or 1–{MAX_CHANNELS}, got \
                 {channels}"
            ))
        })?
        .to_vec();
    Ok(SynthesisParams {
        seed: value.seed,
        jump: JumpParams {
            t_start: value.t_start as usize,
            jump_length: value.jump_length as usize,
            jump_n_sample: value.jump_n_sample as usize,
        },
        guidance: value.guidance_scale as f32,
        condition,
        perturb_condition: flag(
            value.perturb_histogram,
            &format!("{name}.perturb_histogram"),
        )?,
        batch_size: value.batch_size as usize,
        crop_size: value.crop_size as usize,
        frames: value.frames as usize,
        keep_network_output: flag(
            value.keep_network_output,
            &format!("{name}.keep_network_output"),
        )?,
        // SAFETY: forwarded contract.
        labels: unsafe { label_scheme_from_ptr(value.labels, &format!("{name}->labels")) }?,
        channel_labels,
    })
}

/// Fills `*out` with the defaults: 300/5/5 (CLAIM inference), seed 0, no
/// guidance, the layout's preset histograms perturbed by up to 10 %,
/// lesion-only paste, batch 4, 72×72 windows, the model's frames (0),
/// EMIDEC labels (`labels` NULL), the layout's channel map (`channel_count`
/// 0).
///
/// `size`: the caller's `sizeof(claim_synthesis_params)`; writes the first
/// `min(size, sizeof(claim_synthesis_params))` bytes and sets
/// `struct_size` to that number (nothing when `size` < 4). Does nothing
/// when `out` is NULL. Thread-safe; does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_synthesis_params_default(out: *mut claim_synthesis_params, size: usize) {
    boundary::call_infallible("claim_synthesis_params_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// Synthesizes scar intensities into a copy of `image` inside the scar and
/// MVO labels of `labels` with RePaint (spec: CLAIM / LeFusion sampling).
///
/// Every slice holding scar or MVO is sampled (for `frames` > 1, stacks of
/// `frames` consecutive slices around them): a `crop_size`² window centred
/// on the LV cavity is scaled to [−1, 1] (2-D: window min → −1, max → +1;
/// 3-D: the volume's), repeated on every model channel, RePaint
/// regenerates the lesion while the rest of the window is the known
/// region, the channels are composed (each voxel from the channel painting
/// its label, channel 0 elsewhere; see `claim_synthesis_params`), and the
/// result is scaled back and pasted (see `keep_network_output`).
///
/// Layouts: a one-channel model (CLAIM, `cond_dim` 16) paints scar and MVO
/// alike; a two-channel model (LeFusion-EMIDEC, `cond_dim` 32, 10 frames)
/// paints scar with channel 0 and MVO with channel 1 and takes two
/// histograms (scar, MVO). `claim_diffusion_info_get` reports a model's
/// channels, frames and condition length.
///
/// `model`: borrowed; may be used by several threads at once. `image`: any
/// dtype, finite values. `labels`: same dims, any dtype with integral
/// values in `params->labels`' scheme; must hold scar or MVO. `params`: see
/// `claim_synthesis_params`. `progress`: NULL, or called with (`user_data`,
/// done, total) before the first network evaluation and after each, on the
/// calling thread; `total` = evaluations per batch × batches (1480 per
/// batch at 300/5/5 without guidance); non-zero cancels. `out_image`: the
/// caller's volume with the dims of `image` and its dtype or
/// `CLAIM_VOXEL_F32`; receives the image and the geometry of `image`.
/// Integer outputs are rounded and clamped to the type. It may be the same
/// buffer as `image` (inputs are copied first). On failure it is left
/// untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, bad
/// volume or parameter, dims differ, labels outside the scheme, no scar or
/// MVO label, histogram length ≠ the model's condition length, channel map
/// that disagrees with the model's channels, crop size not a multiple of
/// the model's `size_multiple`, output dims or dtype), `CLAIM_ERR_CANCELLED`,
/// `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_diffusion_synthesize(
    model: *const claim_diffusion_model,
    image: *const claim_volume,
    labels: *const claim_volume,
    params: *const claim_synthesis_params,
    progress: claim_progress_fn,
    user_data: *mut c_void,
    out_image: *mut claim_volume,
) -> claim_status {
    boundary::call("claim_diffusion_synthesize", || {
        // SAFETY: `model` is NULL or a live handle (header contract).
        let model = unsafe { handle_ref(model, "model") }?;
        // SAFETY: `params` is NULL or a claim_synthesis_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` is NULL or a scheme of struct_size bytes.
        let params = unsafe { synthesis_params_from_c(&params, "params") }?;
        // SAFETY: `image` / `labels` are NULL or claim_volumes whose data
        // hold dims voxels of dtype (header contract).
        let image = unsafe { image_from_c(image, "image") }?;
        // SAFETY: as above.
        let labels = unsafe { labels_from_c(labels, "labels") }?;
        if labels.dims() != image.dims() {
            return Err(Error::invalid(format!(
                "labels.dims: expected {} (the dims of image), got {}",
                super::volume::dims_text(image.dims()),
                super::volume::dims_text(labels.dims())
            )));
        }
        // SAFETY: `out_image` is NULL or a claim_volume of struct_size bytes.
        let out_view = unsafe { read_struct(out_image.cast_const(), "out_image") }?;
        let out_dtype = dtype_from_c(out_view.voxel_type, "out_image.voxel_type")?;
        let input = if out_dtype == image.dtype() {
            image
        } else if out_view.voxel_type == CLAIM_VOXEL_F32 {
            Image::F32(image.to_f32())
        } else {
            return Err(Error::invalid(format!(
                "out_image.voxel_type: expected the voxel type of image ({:?}) or CLAIM_VOXEL_F32, got \
                 {:?}",
                image.dtype(),
                out_dtype
            )));
        };
        // SAFETY: `out_image` is NULL or a writable claim_volume whose data
        // has room for dims voxels of dtype (header contract).
        let out = unsafe { out_volume_from_c(out_image, "out_image") }?;
        out.expect_dims(input.dims(), "image")?;
        let mut report = |done: u64, total: u64| match progress {
            // SAFETY: the caller passed a callback with this signature and
            // its `user_data` (header contract); it runs on this thread.
            Some(callback) => (unsafe { callback(user_data, done, total) }) == 0,
            None => true,
        };
        let result = synthesize(&model.model, &input, &labels, &params, &mut report)?;
        out.write(&result.image, "image")
    })
}

/// Measures a histogram condition from a reference case: the normalised
/// 16-bin histogram over [−1, 1] of the voxels labelled scar (as in
/// training), each slice holding scar cropped to a `crop_size`² window on
/// the LV cavity and scaled to [−1, 1] like `claim_diffusion_synthesize` does.
///
/// `image`, `labels`: as in `claim_diffusion_synthesize` (must hold scar). `scheme`:
/// NULL for EMIDEC, else the labels' scheme. `crop_size`: 1–1024 (72 for
/// CLAIM). `out_histogram`: room for `CLAIM_HISTOGRAM_BINS` (16) floats;
/// receives values summing to 1. Use it as `histogram` with
/// `CLAIM_HISTOGRAM_VALUES`.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad volume or scheme, no
/// scar, crop size), `CLAIM_ERR_OUT_OF_MEMORY` (volumes over
/// `claim_max_voxels_get()`). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_histogram_measure(
    image: *const claim_volume,
    labels: *const claim_volume,
    scheme: *const claim_label_scheme,
    crop_size: u32,
    out_histogram: *mut f32,
) -> claim_status {
    boundary::call("claim_histogram_measure", || {
        // SAFETY: `scheme` is NULL or a claim_label_scheme of struct_size
        // bytes (header contract).
        let scheme = unsafe { label_scheme_from_ptr(scheme, "scheme") }?;
        if out_histogram.is_null() {
            return Err(Error::invalid("out_histogram must not be NULL"));
        }
        if (out_histogram as usize) % std::mem::align_of::<f32>() != 0 {
            return Err(Error::invalid(
                "out_histogram: expected a 4-byte aligned address",
            ));
        }
        // SAFETY: `image` / `labels` are NULL or claim_volumes whose data
        // hold dims voxels of dtype (header contract).
        let image = unsafe { image_from_c(image, "image") }?;
        // SAFETY: as above.
        let labels = unsafe { labels_from_c(labels, "labels") }?;
        let values = measure_histogram(&image, &labels, &scheme, crop_size as usize)?;
        if values.len() != HISTOGRAM_BINS {
            return Err(Error::Internal("histogram length".into()));
        }
        // SAFETY: non-NULL, aligned, room for 16 floats by contract; our
        // buffer does not overlap the caller's.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out_histogram, HISTOGRAM_BINS) };
        Ok(())
    })
}

/// Measures the whole condition of `model` from a reference case: for
/// each channel, the normalised 16-bin histogram over [−1, 1] of the voxels
/// carrying that channel's label (`params`' channel map, default scar for
/// one channel, scar then MVO for two), scaled as
/// `claim_diffusion_synthesize` scales them with `params`' `crop_size` and
/// `frames`; concatenated in channel order. A channel whose label the
/// reference lacks gets zeros (upstream's convention for a case without
/// MVO). Use the result as `histogram` with `CLAIM_HISTOGRAM_VALUES`.
///
/// `model`: borrowed. `image`, `labels`: as in `claim_diffusion_synthesize`.
/// `params`: NULL for the defaults, else its `labels`, `crop_size`,
/// `frames` and channel map are used. `out_histogram`: room for `capacity`
/// floats, at least 16 × the model's channels. `out_length`: NULL, or
/// receives the number of values written (16 × channels).
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad volume or params, a
/// channel map that disagrees with the model, `capacity` too small, a
/// reference without any of the channels' labels), `CLAIM_ERR_OUT_OF_MEMORY`
/// (volumes over `claim_max_voxels_get()`). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_histogram_measure_channels(
    model: *const claim_diffusion_model,
    image: *const claim_volume,
    labels: *const claim_volume,
    params: *const claim_synthesis_params,
    out_histogram: *mut f32,
    capacity: u32,
    out_length: *mut u32,
) -> claim_status {
    boundary::call("claim_histogram_measure_channels", || {
        // SAFETY: `model` is NULL or a live handle (header contract).
        let model = unsafe { handle_ref(model, "model") }?;
        let params = if params.is_null() {
            claim_synthesis_params::default()
        } else {
            // SAFETY: a non-NULL `params` is a claim_synthesis_params of
            // struct_size bytes.
            unsafe { read_struct(params, "params") }?
        };
        // SAFETY: its `labels` is NULL or a scheme of struct_size bytes.
        let params = unsafe { synthesis_params_from_c(&params, "params") }?;
        let layout = Layout::resolve(model.model.config(), &params)?;
        let need = HISTOGRAM_BINS * layout.channels;
        if out_histogram.is_null() {
            return Err(Error::invalid("out_histogram must not be NULL"));
        }
        if (out_histogram as usize) % std::mem::align_of::<f32>() != 0 {
            return Err(Error::invalid(
                "out_histogram: expected a 4-byte aligned address",
            ));
        }
        if (capacity as usize) < need {
            return Err(Error::invalid(format!(
                "capacity: the model's {} channel(s) need {need} floats, got {capacity}",
                layout.channels
            )));
        }
        // SAFETY: `image` / `labels` are NULL or claim_volumes whose data
        // hold dims voxels of dtype (header contract).
        let image = unsafe { image_from_c(image, "image") }?;
        // SAFETY: as above.
        let labels = unsafe { labels_from_c(labels, "labels") }?;
        let values =
            measure_channel_histograms(&image, &labels, &params.labels, &layout, params.crop_size)?;
        if values.len() != need {
            return Err(Error::Internal("histogram length".into()));
        }
        // SAFETY: non-NULL, aligned, room for `capacity` ≥ `need` floats by
        // contract; our buffer does not overlap the caller's.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out_histogram, need) };
        if !out_length.is_null() {
            if (out_length as usize) % std::mem::align_of::<u32>() != 0 {
                return Err(Error::invalid(
                    "out_length: expected a 4-byte aligned address",
                ));
            }
            // SAFETY: non-NULL, aligned, writable for one u32 by contract.
            unsafe { out_length.write(need as u32) };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_defaults_match_rust() {
        assert_eq!(size_of::<claim_synthesis_params>(), 240);
        assert_eq!(
            std::mem::offset_of!(claim_synthesis_params, channel_count),
            200
        );
        let mut p = claim_synthesis_params {
            struct_size: 0,
            seed: 9,
            ..claim_synthesis_params::default()
        };
        claim_synthesis_params_default(&mut p, size_of::<claim_synthesis_params>());
        assert_eq!(p, claim_synthesis_params::default());
        // SAFETY: `labels` is NULL.
        let rust = unsafe { synthesis_params_from_c(&p, "params") }.unwrap();
        assert_eq!(rust, SynthesisParams::default());
        claim_synthesis_params_default(std::ptr::null_mut(), 200);
        // A first-release caller (struct_size 200) gets the default map.
        let mut old = claim_synthesis_params {
            channel_count: 2,
            ..claim_synthesis_params::default()
        };
        old.struct_size = 200;
        // SAFETY: a live struct of 240 ≥ 200 bytes; `labels` is NULL.
        let read = unsafe { read_struct(&old, "params") }.unwrap();
        assert_eq!(read.channel_count, 0);
        let mapped = claim_synthesis_params {
            channel_count: 2,
            channel_labels: [4, 3, 0, 0, 0, 0, 0, 0],
            ..claim_synthesis_params::default()
        };
        // SAFETY: `labels` is NULL.
        let rust = unsafe { synthesis_params_from_c(&mapped, "params") }.unwrap();
        assert_eq!(rust.channel_labels, vec![4, 3]);
    }

    #[test]
    fn bad_fields_are_named() {
        let base = claim_synthesis_params::default();
        for (p, needle) in [
            (
                claim_synthesis_params { t_start: 0, ..base },
                "params.t_start",
            ),
            (
                claim_synthesis_params {
                    jump_length: 0,
                    ..base
                },
                "params.jump_length",
            ),
            (
                claim_synthesis_params {
                    histogram_source: CLAIM_HISTOGRAM_VALUES,
                    histogram_length: 33,
                    ..base
                },
                "params.histogram_length",
            ),
            (
                claim_synthesis_params {
                    histogram_source: 5,
                    ..base
                },
                "params.histogram_source",
            ),
            (
                claim_synthesis_params {
                    keep_network_output: 2,
                    ..base
                },
                "params.keep_network_output",
            ),
            (
                claim_synthesis_params {
                    guidance_scale: f64::NAN,
                    ..base
                },
                "params.guidance_scale",
            ),
            (
                claim_synthesis_params {
                    channel_count: 9,
                    ..base
                },
                "params.channel_count",
            ),
            (
                claim_synthesis_params {
                    frames: 257,
                    ..base
                },
                "params.frames",
            ),
        ] {
            // SAFETY: `labels` is NULL.
            let e = unsafe { synthesis_params_from_c(&p, "params") }
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}

//! `claim_progress_fn`, `claim_synthesis_params`, `claim_diffusion_synthesize` and
//! `claim_histogram_measure`: scar synthesis of
//! [`crate::synthesis::synthesize`].

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
    measure_histogram, synthesize, Condition, JumpParams, SynthesisParams, CLAIM_CROP_SIZE,
    HISTOGRAM_BINS, TIMESTEPS,
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

/// CLAIM's EMIDEC k-means cluster centre, built in (the default; needs a
/// model with a 16-value condition).
pub const CLAIM_HISTOGRAM_PRESET: claim_histogram_source = 0;
/// The first `histogram_length` values of `histogram` (16 or 32, the
/// model's condition length), e.g. from `claim_histogram_measure`.
pub const CLAIM_HISTOGRAM_VALUES: claim_histogram_source = 1;
/// The model's learned null condition (unconditional sampling).
pub const CLAIM_HISTOGRAM_NULL: claim_histogram_source = 2;

/// Bins of one lesion histogram.
pub const CLAIM_HISTOGRAM_BINS: u32 = 16;
/// Room in `claim_synthesis_params.histogram` (two channels' histograms).
pub const CLAIM_HISTOGRAM_MAX: u32 = 32;

/// How `claim_diffusion_synthesize` samples. Initialise with
/// `CLAIM_DEFAULT(claim_synthesis_params, &p)` and change what differs.
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
    /// Items (slices or slice stacks) per network batch, 1–1024 (default 4).
    pub batch_size: u32,
    /// Side of the in-plane window centred on the LV cavity, cropped or
    /// zero-padded, a multiple of the model's `size_multiple` (default 72).
    pub crop_size: u32,
    /// Consecutive slices per item: 1 for 2-D models such as CLAIM's
    /// (default), F for 3-D models.
    pub frames: u32,
    /// Label scheme of `labels`: NULL (the default) for EMIDEC without RV,
    /// else a scheme borrowed for the call.
    pub labels: *const claim_label_scheme,
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
            batch_size: 4,
            crop_size: CLAIM_CROP_SIZE as u32,
            frames: 1,
            labels: std::ptr::null(),
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, floats and a raw
// pointer, all valid for any bit pattern.
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
        ("batch_size", value.batch_size),
        ("crop_size", value.crop_size),
        ("frames", value.frames),
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
        CLAIM_HISTOGRAM_PRESET => Condition::ClaimEmidec,
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
    })
}

/// Fills `*out` with the defaults: 300/5/5 (CLAIM inference), seed 0, no
/// guidance, CLAIM's EMIDEC histogram perturbed by up to 10 %, lesion-only
/// paste, batch 4, 72×72 windows, 1 frame, EMIDEC labels (`labels` NULL).
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
/// on the LV cavity is scaled to [−1, 1] (window min → −1, max → +1),
/// RePaint regenerates the lesion while the rest of the window is the
/// known region, and the result is scaled back and pasted (see
/// `keep_network_output`).
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
/// MVO label, histogram length ≠ the model's condition length, crop size
/// not a multiple of the model's `size_multiple`, output dims or dtype),
/// `CLAIM_ERR_UNSUPPORTED` (a multi-channel model), `CLAIM_ERR_CANCELLED`,
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
        let model = unsafe { super::args::handle_ref(model, "model") }?;
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
/// scar, crop size). Thread-safe.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_defaults_match_rust() {
        assert_eq!(size_of::<claim_synthesis_params>(), 200);
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
        ] {
            // SAFETY: `labels` is NULL.
            let e = unsafe { synthesis_params_from_c(&p, "params") }
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}

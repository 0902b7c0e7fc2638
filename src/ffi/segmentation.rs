//! nnU-Net segmentation of [`crate::segmentation`]: `claim_segmenter_options`,
//! the segmenter handle (`claim_segmenter_load`, `claim_segmenter_free`,
//! `claim_segmenter_info_get`, the raw network evaluation
//! `claim_segmenter_predict_logits`), `claim_segmentation_params` and
//! `claim_segmenter_segment`.
//!
//! Folds and configuration are chosen by an optional
//! `claim_segmenter_options` argument of the one load function rather than
//! by a second `_load_folds` entry point: NULL gives nnU-Net's defaults, and
//! the struct can grow (e.g. a checkpoint name) without new functions.

use super::args::{handle_ref, read_struct, write_default, write_struct, CStruct, OutHandle};
use super::boundary;
use super::diffusion::{
    claim_load_options, claim_tensor, resolve_load_options, tensor_from_c, tensor_shape,
};
use super::labels::{claim_label_scheme, label_scheme_from_ptr};
use super::status::claim_status;
use super::synthesis::claim_progress_fn;
use super::volume::{claim_volume, image_from_c, out_volume_from_c};
use crate::error::{Error, Result, ResultExt};
use crate::segmentation::{SegmentParams, Segmenter, SegmenterOptions, FOLD_ALL};
use crate::volume::Image;
use std::ffi::{c_char, c_void};
use std::mem::size_of;
use std::path::Path;

/// Room for fold numbers in `claim_segmenter_options` and
/// `claim_segmenter_info`.
pub const CLAIM_SEGMENTER_MAX_FOLDS: u32 = 16;
/// The fold number standing for nnU-Net's `fold_all` (a model trained on
/// every case).
pub const CLAIM_FOLD_ALL: i32 = -1;
/// Bytes of the name buffers (configuration, trainer), NUL included.
pub const CLAIM_SEGMENTER_NAME_MAX: u32 = 64;

/// Which parts of an nnU-Net model `claim_segmenter_load` loads. Initialise
/// with `CLAIM_DEFAULT(claim_segmenter_options, &o)` and change what
/// differs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct claim_segmenter_options {
    /// `sizeof(claim_segmenter_options)`, set by the default function.
    pub struct_size: u32,
    /// Folds in use in `folds`, 0–16. 0 (the default): every numbered
    /// `fold_<k>` present, as nnU-Net's predictor (`fold_all` only when
    /// there is no numbered fold). Several folds are an ensemble: their
    /// logits are averaged.
    pub fold_count: u32,
    /// Fold numbers (≥ 0, or `CLAIM_FOLD_ALL`), distinct; the first is the
    /// one `claim_segmenter_predict_logits` evaluates.
    pub folds: [i32; 16],
    /// NUL-terminated UTF-8 name of the plans configuration to use (e.g.
    /// "2d"); "" (the default): the one the checkpoints were trained with.
    pub configuration: [c_char; 64],
}

impl Default for claim_segmenter_options {
    fn default() -> Self {
        claim_segmenter_options {
            struct_size: size_of::<claim_segmenter_options>() as u32,
            fold_count: 0,
            folds: [0; 16],
            configuration: [0; 64],
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers and a char array.
unsafe impl CStruct for claim_segmenter_options {
    const C_NAME: &'static str = "claim_segmenter_options";
    const FIRST_RELEASE_SIZE: usize = 136;
    fn with_struct_size(self, size: u32) -> Self {
        claim_segmenter_options {
            struct_size: size,
            ..self
        }
    }
}

/// The text of a fixed, NUL-terminated name buffer ("" → `None`).
fn name_from_c(buffer: &[c_char], name: &str) -> Result<Option<String>> {
    let bytes: Vec<u8> = buffer.iter().map(|&c| c as u8).collect();
    let end = bytes.iter().position(|&b| b == 0).ok_or_else(|| {
        Error::invalid(format!(
            "{name}: expected a NUL-terminated string within {} bytes",
            buffer.len()
        ))
    })?;
    let text = std::str::from_utf8(&bytes[..end]).map_err(|e| {
        Error::invalid(format!(
            "{name} must be UTF-8, got invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// `text` in a fixed buffer, NUL-terminated, cut at a character boundary
/// (and at an interior NUL) when it does not fit.
fn name_to_c(text: &str) -> [c_char; 64] {
    let mut buffer = [0 as c_char; 64];
    let text = text.split('\0').next().unwrap_or_default();
    let mut len = text.len().min(buffer.len() - 1);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    for (b, &t) in buffer.iter_mut().zip(&text.as_bytes()[..len]) {
        *b = t as c_char;
    }
    buffer
}

/// The checked Rust options of a caller's `claim_segmenter_options`.
fn segmenter_options_from_c(
    value: &claim_segmenter_options,
    name: &str,
) -> Result<SegmenterOptions> {
    let folds = match value.fold_count as usize {
        0 => None,
        n => {
            let chosen = value.folds.get(..n).ok_or_else(|| {
                Error::invalid(format!(
                    "{name}.fold_count: expected 0–{CLAIM_SEGMENTER_MAX_FOLDS}, got {n}"
                ))
            })?;
            let mut folds = Vec::with_capacity(n);
            for (i, &k) in chosen.iter().enumerate() {
                folds.push(match k {
                    CLAIM_FOLD_ALL => FOLD_ALL,
                    k => usize::try_from(k).map_err(|_| {
                        Error::invalid(format!(
                            "{name}.folds[{i}]: expected a fold number ≥ 0 or CLAIM_FOLD_ALL (-1), \
                             got {k}"
                        ))
                    })?,
                });
            }
            Some(folds)
        }
    };
    Ok(SegmenterOptions {
        folds,
        configuration: name_from_c(&value.configuration, &format!("{name}.configuration"))?,
    })
}

/// Fills `*out` with the default options: every numbered fold present, the
/// checkpoints' configuration.
///
/// `size`: the caller's `sizeof(claim_segmenter_options)`; writes the first
/// `min(size, sizeof(claim_segmenter_options))` bytes and sets
/// `struct_size` to that number (nothing when `size` < 4). Does nothing
/// when `out` is NULL. Thread-safe; does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_segmenter_options_default(out: *mut claim_segmenter_options, size: usize) {
    boundary::call_infallible("claim_segmenter_options_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// A loaded nnU-Net model (one network per fold, plus its plans). Opaque.
///
/// Immutable once loaded: several threads may call `claim_segmenter_segment` and
/// `claim_segmenter_predict_logits` on one segmenter at once (no locking).
pub struct claim_segmenter {
    pub(crate) model: Segmenter,
}

/// What a loaded segmenter is, from its plans, `dataset.json` and
/// checkpoints.
///
/// Array axes (`patch_size`, `spacing`, `mirroring_axes`) are those of the
/// network's input after the plans' `transpose_forward`, slowest first, as
/// in nnU-Net's plans: for an untransposed volume (z, y, x), the reverse of
/// `claim_volume`'s (i, j, k). 2-D models list the two in-plane axes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_segmenter_info {
    /// `sizeof(claim_segmenter_info)`, set by the caller.
    pub struct_size: u32,
    /// 2 (slice by slice) or 3: the network's convolutions.
    pub spatial_dims: u32,
    /// Image channels C of the network input (claim_segmenter_segment takes 1).
    pub input_channels: u32,
    /// Output classes (= labels of `dataset.json`, background included).
    pub num_classes: u32,
    /// Sliding-window patch; entries past `spatial_dims` are 0.
    pub patch_size: [u32; 3],
    /// Folds loaded, 1–16; listed in `folds`.
    pub fold_count: u32,
    /// Target spacing (mm) the image is resampled to before the network;
    /// entries past `spatial_dims` are 0.
    pub spacing: [f64; 3],
    /// Network parameters per fold.
    pub parameters: u64,
    /// Fold numbers in ensemble order (`CLAIM_FOLD_ALL` for `fold_all`).
    pub folds: [i32; 16],
    /// Axes mirrored at test time (0 when the checkpoint allows none).
    pub mirroring_axis_count: u32,
    /// Those axes, indices into the patch axes.
    pub mirroring_axes: [u32; 3],
    /// Plans configuration in use, NUL-terminated (e.g. "2d").
    pub configuration: [c_char; 64],
    /// Trainer class name, NUL-terminated (cut to 63 bytes if longer).
    pub trainer: [c_char; 64],
}

impl Default for claim_segmenter_info {
    fn default() -> Self {
        claim_segmenter_info {
            struct_size: size_of::<claim_segmenter_info>() as u32,
            spatial_dims: 0,
            input_channels: 0,
            num_classes: 0,
            patch_size: [0; 3],
            fold_count: 0,
            spacing: [0.0; 3],
            parameters: 0,
            folds: [0; 16],
            mirroring_axis_count: 0,
            mirroring_axes: [0; 3],
            configuration: [0; 64],
            trainer: [0; 64],
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, doubles and char
// arrays, all valid for any bit pattern.
unsafe impl CStruct for claim_segmenter_info {
    const C_NAME: &'static str = "claim_segmenter_info";
    const FIRST_RELEASE_SIZE: usize = 272;
    fn with_struct_size(self, size: u32) -> Self {
        claim_segmenter_info {
            struct_size: size,
            ..self
        }
    }
}

/// The C description of a loaded segmenter.
fn info_to_c(model: &Segmenter) -> claim_segmenter_info {
    let info = model.info();
    let narrow = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let mut out = claim_segmenter_info {
        spatial_dims: narrow(info.spatial_dims),
        input_channels: narrow(info.input_channels),
        num_classes: narrow(info.num_classes),
        fold_count: narrow(info.folds.len()),
        parameters: info.parameters as u64,
        configuration: name_to_c(&info.configuration),
        trainer: name_to_c(&info.trainer),
        ..claim_segmenter_info::default()
    };
    for (o, &p) in out.patch_size.iter_mut().zip(&info.patch_size) {
        *o = narrow(p);
    }
    for (o, &s) in out.spacing.iter_mut().zip(&info.spacing) {
        *o = s;
    }
    for (o, &k) in out.folds.iter_mut().zip(&info.folds) {
        *o = if k == FOLD_ALL {
            CLAIM_FOLD_ALL
        } else {
            i32::try_from(k).unwrap_or(i32::MAX)
        };
    }
    let axes = info.mirroring_axes.unwrap_or_default();
    out.mirroring_axis_count = narrow(axes.len().min(3));
    for (o, &a) in out.mirroring_axes.iter_mut().zip(&axes) {
        *o = narrow(a);
    }
    out
}

/// Loads a trained nnU-Net v2 model, without Python:
///
/// - a results folder `<Trainer>__<Plans>__<configuration>/` with
///   `plans.json`, `dataset.json` and `fold_<k>/checkpoint_final.pth`;
/// - one `checkpoint_final.pth` (plans and dataset JSON beside it, two
///   levels up, or inside the checkpoint);
/// - a safetensors bundle written by `claim import`;
/// - `"builtin"`: the built-in segmenter (a small 2d PlainConvUNet trained
///   on the phantoms, shipped inside the library; a file named `builtin`
///   is reached as `"./builtin"`).
///
/// Only PlainConvUNet models (nnU-Net's default plans) are supported.
/// Checkpoints are read by a minimal pickle reader that never executes
/// anything.
///
/// `path`: UTF-8. `load_options`: NULL for the defaults (CPU), else see
/// `claim_load_options`. `segmenter_options`: NULL for the defaults (every
/// numbered fold, the trained configuration), else see
/// `claim_segmenter_options`. `out`: receives the segmenter, freed with
/// `claim_segmenter_free`; set to NULL on every failure.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL path or `out`, bad options, a
/// requested fold that is not there: the message lists those that are),
/// `CLAIM_ERR_IO` (missing or unreadable files), `CLAIM_ERR_FORMAT` (not a
/// checkpoint, bundle or valid plans / dataset JSON), `CLAIM_ERR_MODEL`
/// (weights that do not fit the plans: the message names fold and tensor),
/// `CLAIM_ERR_UNSUPPORTED` (another architecture, a cascade stage,
/// region-based labels, FP16 on the CPU), `CLAIM_ERR_DEVICE` (CUDA asked
/// where this build or machine has none: the message says why),
/// `CLAIM_ERR_OUT_OF_MEMORY` (plans asking for a sliding window of more than
/// 2^24 voxels: the message gives what one window would need).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn claim_segmenter_load(
    path: *const c_char,
    load_options: *const claim_load_options,
    segmenter_options: *const claim_segmenter_options,
    out: *mut *mut claim_segmenter,
) -> claim_status {
    boundary::call("claim_segmenter_load", || {
        // SAFETY: `out` is NULL or writable for one pointer (header contract).
        let out = unsafe { OutHandle::new(out, "out") }?;
        // SAFETY: `path` is NULL or a NUL-terminated string.
        let path = unsafe { super::args::c_str(path, "path") }?;
        // SAFETY: `load_options` is NULL or holds struct_size bytes.
        let load = unsafe { resolve_load_options(load_options, "load_options") }?;
        let options = if segmenter_options.is_null() {
            SegmenterOptions::default()
        } else {
            // SAFETY: a non-NULL `segmenter_options` holds struct_size bytes.
            let value = unsafe { read_struct(segmenter_options, "segmenter_options") }?;
            segmenter_options_from_c(&value, "segmenter_options")?
        };
        let model = Segmenter::load_with(Path::new(path), &options, &load)?;
        out.set(Box::new(claim_segmenter { model }));
        Ok(())
    })
}

/// Frees a segmenter. `segmenter` may be NULL (nothing happens). Must not
/// be called while another call uses it, nor twice. Does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_segmenter_free(segmenter: *mut claim_segmenter) {
    boundary::call_infallible("claim_segmenter_free", (), || {
        if !segmenter.is_null() {
            // SAFETY: a non-NULL `segmenter` came from Box::into_raw in
            // OutHandle::set and is freed once (header contract).
            drop(unsafe { Box::from_raw(segmenter) });
        }
    })
}

/// Describes a loaded segmenter into the caller's `*out` (its
/// `struct_size` set). Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad
/// `struct_size`). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_segmenter_info_get(
    segmenter: *const claim_segmenter,
    out: *mut claim_segmenter_info,
) -> claim_status {
    boundary::call("claim_segmenter_info_get", || {
        // SAFETY: `segmenter` is NULL or a live handle (header contract).
        let segmenter = unsafe { handle_ref(segmenter, "segmenter") }?;
        let info = info_to_c(&segmenter.model);
        // SAFETY: `out` is NULL or writable for struct_size bytes.
        unsafe { write_struct(out, info, "out") }
    })
}

/// Evaluates the network of the first loaded fold once: raw logits, no
/// preprocessing, no mirroring. For harnesses and parity tests against
/// PyTorch.
///
/// `x`: `[B, C, H, W]` (2-D models) or `[B, C, D, H, W]` (3-D), C the
/// model's `input_channels`, each spatial size a multiple of the product of
/// the plans' strides along it (any multiple of the patch size works).
/// `out_logits`: the caller's tensor of shape `[B, num_classes, <spatial
/// sizes of x>]`; receives the logits. Both borrowed for the call;
/// `out_logits->data` may alias `x->data` when the sizes agree.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, wrong
/// rank, channels, spatial sizes or output shape), `CLAIM_ERR_OUT_OF_MEMORY`.
/// Thread-safe, also on one segmenter.
#[no_mangle]
pub extern "C" fn claim_segmenter_predict_logits(
    segmenter: *const claim_segmenter,
    x: *const claim_tensor,
    out_logits: *mut claim_tensor,
) -> claim_status {
    boundary::call("claim_segmenter_predict_logits", || {
        // SAFETY: `segmenter` is NULL or a live handle (header contract).
        let segmenter = unsafe { handle_ref(segmenter, "segmenter") }?;
        let info = segmenter.model.info();
        // SAFETY: `x` is NULL or a claim_tensor whose data holds its shape.
        let x = unsafe { tensor_from_c(x, "x") }?;
        let dims = x.dims();
        let spatial = if info.spatial_dims == 2 {
            "[B, C, H, W]"
        } else {
            "[B, C, D, H, W]"
        };
        if dims.len() != info.spatial_dims + 2 {
            return Err(Error::invalid(format!(
                "x.shape: expected {} dimensions {spatial} (a {}-D model), got {dims:?}",
                info.spatial_dims + 2,
                info.spatial_dims
            )));
        }
        if dims[1] != info.input_channels {
            return Err(Error::invalid(format!(
                "x.shape[1]: expected {} channel(s) (the model's), got {}",
                info.input_channels, dims[1]
            )));
        }
        let mut expected = dims.to_vec();
        expected[1] = info.num_classes;
        // SAFETY: `out_logits` is NULL or a claim_tensor of struct_size bytes.
        let out = unsafe { read_struct(out_logits.cast_const(), "out_logits") }?;
        let (out_shape, count) = tensor_shape(&out, "out_logits")?;
        if out_shape != expected {
            return Err(Error::invalid(format!(
                "out_logits.shape: expected {expected:?} (batch, the model's {} classes, the \
                 spatial sizes of x), got {out_shape:?}",
                info.num_classes
            )));
        }
        let logits = segmenter.model.predict_logits(&x, 0).context("x.shape")?;
        let values = logits.as_slice()?;
        if values.len() != count {
            return Err(Error::Internal(format!(
                "the network returned {} values for {count}",
                values.len()
            )));
        }
        // SAFETY: `out.data` is non-NULL, aligned and has room for `count`
        // floats (checked and by contract); `values` is the library's own
        // buffer, so the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out.data, count) };
        Ok(())
    })
}

/// How `claim_segmenter_segment` predicts. Initialise with
/// `CLAIM_DEFAULT(claim_segmentation_params, &p)` and change what differs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_segmentation_params {
    /// `sizeof(claim_segmentation_params)`, set by the default function.
    pub struct_size: u32,
    /// 1 (default, nnU-Net's): average the network over every flip of the
    /// axes the checkpoint allows; 0: no test-time mirroring (2^axes times
    /// faster).
    pub mirroring: i32,
    /// Sliding-window step as a fraction of the patch, in (0, 1] (default
    /// 0.5, nnU-Net's); larger is faster with fewer overlapping windows.
    pub step_size: f32,
    /// 1 (default): scar and MVO only where they touch predicted
    /// myocardium, MVO only inside scar; 0: the network's labels as they are.
    pub postprocess: i32,
    /// Values written for LV cavity, myocardium, scar, MVO and RV: NULL
    /// (the default) for EMIDEC, else a scheme borrowed for the call.
    /// Classes are matched to tissues by their `dataset.json` names; a
    /// class with an unknown name keeps its value.
    pub labels: *const claim_label_scheme,
}

impl Default for claim_segmentation_params {
    fn default() -> Self {
        let rust = SegmentParams::default();
        claim_segmentation_params {
            struct_size: size_of::<claim_segmentation_params>() as u32,
            mirroring: i32::from(rust.mirroring),
            step_size: rust.step_size,
            postprocess: i32::from(rust.postprocess),
            labels: std::ptr::null(),
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, a float and a
// raw pointer, all valid for any bit pattern.
unsafe impl CStruct for claim_segmentation_params {
    const C_NAME: &'static str = "claim_segmentation_params";
    const FIRST_RELEASE_SIZE: usize = 24;
    fn with_struct_size(self, size: u32) -> Self {
        claim_segmentation_params {
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

/// The checked Rust parameters of a caller's `claim_segmentation_params`.
///
/// # Safety
///
/// `value.labels` must be NULL or point to a `claim_label_scheme` of
/// `struct_size` readable bytes.
unsafe fn segmentation_params_from_c(
    value: &claim_segmentation_params,
    name: &str,
) -> Result<SegmentParams> {
    if !(value.step_size > 0.0 && value.step_size <= 1.0) {
        return Err(Error::invalid(format!(
            "{name}.step_size: expected a fraction of the patch in (0, 1], got {}",
            value.step_size
        )));
    }
    Ok(SegmentParams {
        mirroring: flag(value.mirroring, &format!("{name}.mirroring"))?,
        step_size: value.step_size,
        postprocess: flag(value.postprocess, &format!("{name}.postprocess"))?,
        // SAFETY: forwarded contract.
        label_scheme: unsafe { label_scheme_from_ptr(value.labels, &format!("{name}->labels")) }?,
    })
}

/// Fills `*out` with the defaults: mirroring on, step 0.5, post-processing
/// on, EMIDEC labels (`labels` NULL).
///
/// `size`: the caller's `sizeof(claim_segmentation_params)`; writes the
/// first `min(size, sizeof(claim_segmentation_params))` bytes and sets
/// `struct_size` to that number (nothing when `size` < 4). Does nothing
/// when `out` is NULL. Thread-safe; does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_segmentation_params_default(
    out: *mut claim_segmentation_params,
    size: usize,
) {
    boundary::call_infallible("claim_segmentation_params_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// The caller's progress callback as the segmenter's `FnMut(done, total)`:
/// `(0, total)` is reported before the first evaluation's count, then every
/// count as it comes; a non-zero return cancels.
struct ProgressReport {
    callback: claim_progress_fn,
    user_data: *mut c_void,
    announced: bool,
}

impl ProgressReport {
    fn report(&mut self, done: u64, total: u64) -> bool {
        let Some(callback) = self.callback else {
            return true;
        };
        if !self.announced {
            self.announced = true;
            // SAFETY: the caller passed a callback with this signature and
            // its `user_data` (header contract); it runs on this thread.
            if done > 0 && unsafe { callback(self.user_data, 0, total) } != 0 {
                return false;
            }
        }
        // SAFETY: as above.
        (unsafe { callback(self.user_data, done, total) }) == 0
    }
}

/// Segments LV cavity, myocardium, scar and MVO in `image` the way nnU-Net's
/// predictor does: transpose per plans, crop to the non-zero box,
/// normalise, resample to the plans' spacing, sliding window with Gaussian
/// weighting, test-time mirroring, fold ensemble, back to the input grid,
/// argmax; then (optionally) post-processing and the caller's label values.
/// Without post-processing the labels are nnU-Net's own, except where two
/// classes tie to within float rounding.
///
/// `segmenter`: borrowed; may be used by several threads at once. `image`:
/// one channel (the model must take one), any dtype, finite values; its
/// geometry gives the spacing. `params`: see `claim_segmentation_params`.
/// `progress`: NULL, or called with (`user_data`, done, total) on the
/// calling thread with done = 0 once the total is known and after each
/// network evaluation; `total` = windows × mirror passes × folds;
/// non-zero cancels. `out_labels`: the caller's volume with the dims of
/// `image` and any dtype (`CLAIM_VOXEL_U8` suggested); receives the labels
/// and the geometry of `image`. It may be the same buffer as `image` (the
/// input is copied first). On failure it is left untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, bad
/// volume, non-finite voxels, step size outside (0, 1], flags other than
/// 0/1, a bad scheme or one whose labels exceed 255, output dims),
/// `CLAIM_ERR_UNSUPPORTED` (a model taking several channels),
/// `CLAIM_ERR_CANCELLED`, `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_segmenter_segment(
    segmenter: *const claim_segmenter,
    image: *const claim_volume,
    params: *const claim_segmentation_params,
    progress: claim_progress_fn,
    user_data: *mut c_void,
    out_labels: *mut claim_volume,
) -> claim_status {
    boundary::call("claim_segmenter_segment", || {
        // SAFETY: `segmenter` is NULL or a live handle (header contract).
        let segmenter = unsafe { handle_ref(segmenter, "segmenter") }?;
        // SAFETY: `params` is NULL or a claim_segmentation_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` is NULL or a scheme of struct_size bytes.
        let params = unsafe { segmentation_params_from_c(&params, "params") }?;
        // SAFETY: `image` is NULL or a claim_volume whose data holds dims
        // voxels of dtype (header contract).
        let image = unsafe { image_from_c(image, "image") }?;
        if let Image::F32(v) = &image {
            if let Some((n, bad)) = v.data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "image: value {bad} at voxel #{n} is not finite"
                )));
            }
        }
        // SAFETY: `out_labels` is NULL or a writable claim_volume whose data
        // has room for dims voxels of dtype (header contract).
        let out = unsafe { out_volume_from_c(out_labels, "out_labels") }?;
        out.expect_dims(image.dims(), "image")?;
        let info = segmenter.model.info();
        if info.input_channels != 1 {
            return Err(Error::Unsupported(format!(
                "claim_segmenter_segment takes single-channel models; this one takes {} channels ({})",
                info.input_channels,
                info.channel_names.join(", ")
            )));
        }
        let mut report = ProgressReport {
            callback: progress,
            user_data,
            announced: false,
        };
        let labels = segmenter
            .model
            .segment(&image, &params, &mut |done, total| {
                report.report(done, total)
            })?;
        out.write(&Image::U8(labels), "image")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn layouts_and_defaults_match_rust() {
        assert_eq!(size_of::<claim_segmenter_options>(), 136);
        assert_eq!(size_of::<claim_segmenter_info>(), 272);
        assert_eq!(size_of::<claim_segmentation_params>(), 24);
        let mut p = claim_segmentation_params {
            struct_size: 0,
            step_size: 9.0,
            ..claim_segmentation_params::default()
        };
        claim_segmentation_params_default(&mut p, size_of::<claim_segmentation_params>());
        assert_eq!(p, claim_segmentation_params::default());
        assert_eq!(
            // SAFETY: `labels` is NULL.
            unsafe { segmentation_params_from_c(&p, "params") }.unwrap(),
            SegmentParams::default()
        );
        claim_segmentation_params_default(std::ptr::null_mut(), 24);
        let mut o = claim_segmenter_options {
            fold_count: 3,
            ..Default::default()
        };
        claim_segmenter_options_default(&mut o, size_of::<claim_segmenter_options>());
        assert_eq!(o, claim_segmenter_options::default());
        assert_eq!(
            segmenter_options_from_c(&o, "o").unwrap(),
            SegmenterOptions::default()
        );
        claim_segmenter_options_default(std::ptr::null_mut(), 136);
        fn shareable<T: Send + Sync>() {}
        shareable::<claim_segmenter>();
    }

    #[test]
    fn options_and_params_are_checked_and_named() {
        let mut o = claim_segmenter_options {
            fold_count: 3,
            folds: [0; 16],
            ..Default::default()
        };
        o.folds[1] = CLAIM_FOLD_ALL;
        o.folds[2] = 4;
        o.configuration = name_to_c("2d_resampled");
        let rust = segmenter_options_from_c(&o, "opts").unwrap();
        assert_eq!(rust.folds, Some(vec![0, FOLD_ALL, 4]));
        assert_eq!(rust.configuration.as_deref(), Some("2d_resampled"));
        for (bad, needle) in [
            (
                claim_segmenter_options {
                    fold_count: 17,
                    ..o
                },
                "opts.fold_count: expected 0–16, got 17",
            ),
            (
                claim_segmenter_options {
                    folds: [-2; 16],
                    ..o
                },
                "opts.folds[0]",
            ),
            (
                claim_segmenter_options {
                    configuration: [b'a' as c_char; 64],
                    ..o
                },
                "NUL-terminated",
            ),
            (
                claim_segmenter_options {
                    configuration: {
                        let mut c = [0 as c_char; 64];
                        c[0] = 0xff_u8 as c_char;
                        c
                    },
                    ..o
                },
                "opts.configuration must be UTF-8",
            ),
        ] {
            let e = segmenter_options_from_c(&bad, "opts")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let base = claim_segmentation_params::default();
        let duplicate_scar = claim_label_scheme {
            scar: 2,
            ..claim_label_scheme::default()
        };
        for (p, needle) in [
            (
                claim_segmentation_params {
                    step_size: 0.0,
                    ..base
                },
                "params.step_size",
            ),
            (
                claim_segmentation_params {
                    step_size: f32::NAN,
                    ..base
                },
                "params.step_size",
            ),
            (
                claim_segmentation_params {
                    step_size: 1.01,
                    ..base
                },
                "params.step_size",
            ),
            (
                claim_segmentation_params {
                    mirroring: 2,
                    ..base
                },
                "params.mirroring: expected 0 or 1",
            ),
            (
                claim_segmentation_params {
                    postprocess: -1,
                    ..base
                },
                "params.postprocess",
            ),
            (
                claim_segmentation_params {
                    labels: &duplicate_scar,
                    ..base
                },
                "params->labels",
            ),
        ] {
            // SAFETY: `labels` is NULL or points to a live local.
            let e = unsafe { segmentation_params_from_c(&p, "params") }
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    /// The committed 2-D results folder (or `$CLAIM_NNUNET_FIXTURES`'s).
    /// The 2-D fixture's plans and labels declared for two input channels
    /// (LGE, T2), with random weights of that shape (`seed`): a model
    /// `claim_segmenter_segment` refuses as unsupported.
    pub(crate) fn two_channel_segmenter(seed: u64) -> claim_segmenter {
        use crate::models::plain_unet::random_state_dict;
        use crate::segmentation::{NnunetBundle, Plans};
        let mut bundle = NnunetBundle::load(&results_2d(), Some(&[0])).unwrap();
        let mut dataset: serde_json::Value = serde_json::from_str(&bundle.dataset_json).unwrap();
        dataset["channel_names"] = serde_json::json!({"0": "LGE", "1": "T2"});
        bundle.dataset_json = dataset.to_string();
        let mut plans: serde_json::Value = serde_json::from_str(&bundle.plans_json).unwrap();
        let cfg = &mut plans["configurations"]["2d"];
        cfg["normalization_schemes"] =
            serde_json::json!(["ZScoreNormalization", "ZScoreNormalization"]);
        cfg["use_mask_for_norm"] = serde_json::json!([false, false]);
        bundle.plans_json = plans.to_string();
        let network = Plans::parse(&bundle.plans_json)
            .unwrap()
            .configuration("2d")
            .unwrap()
            .network_config(2, 5)
            .unwrap();
        bundle.folds = vec![(0, random_state_dict(&network, seed))];
        claim_segmenter {
            model: Segmenter::from_bundle(bundle, None).unwrap(),
        }
    }

    fn results_2d() -> std::path::PathBuf {
        std::env::var_os("CLAIM_NNUNET_FIXTURES")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nnunet"))
            .join("Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d")
    }

    /// `claim_segmenter_segment` takes one image, so a model of two channels (the
    /// fixture's plans and labels, random weights) is refused as unsupported
    /// before any work, and the output is left alone.
    #[test]
    fn multi_channel_models_are_unsupported_by_claim_segmenter_segment() {
        use crate::ffi::status::CLAIM_ERR_UNSUPPORTED;
        use crate::ffi::volume::{volume_to_c, CLAIM_VOXEL_U8};
        use crate::volume::{Geometry, Volume};

        let handle = two_channel_segmenter(1);

        let image =
            Image::F32(Volume::from_vec([8, 8, 1], vec![1.0; 64], Geometry::default()).unwrap());
        let mut pixels = vec![1.0f32; 64];
        let input = volume_to_c(&image, pixels.as_mut_ptr().cast());
        let mut labels = vec![0xABu8; 64];
        let mut out = claim_volume {
            voxel_type: CLAIM_VOXEL_U8,
            ..volume_to_c(&image, labels.as_mut_ptr().cast())
        };
        let params = claim_segmentation_params::default();
        let status = claim_segmenter_segment(
            &handle,
            &input,
            &params,
            None,
            std::ptr::null_mut(),
            &mut out,
        );
        assert_eq!(status, CLAIM_ERR_UNSUPPORTED);
        let message = crate::ffi::boundary::last_error();
        assert!(message.contains("takes 2 channels (LGE, T2)"), "{message}");
        assert!(labels.iter().all(|&l| l == 0xAB));
    }

    #[test]
    fn names_are_cut_at_character_boundaries() {
        let read = |b: &[c_char; 64]| name_from_c(b, "n").unwrap().unwrap_or_default();
        assert_eq!(read(&name_to_c("3d_fullres")), "3d_fullres");
        assert_eq!(name_from_c(&name_to_c(""), "n").unwrap(), None);
        // 62 ASCII bytes then a 2-byte character: it does not fit in 63.
        let long = format!("{}é", "x".repeat(62));
        assert_eq!(read(&name_to_c(&long)), "x".repeat(62));
        assert_eq!(read(&name_to_c("a\0b")), "a");
        let very_long = "y".repeat(100);
        assert_eq!(read(&name_to_c(&very_long)), "y".repeat(63));
    }

    #[test]
    fn progress_is_announced_once_and_cancels() {
        unsafe extern "C" fn record(user: *mut c_void, done: u64, total: u64) -> i32 {
            // SAFETY: the test passes a live Vec<(u64, u64)>.
            let log = unsafe { &mut *(user as *mut Vec<(u64, u64)>) };
            log.push((done, total));
            i32::from(done >= 2)
        }
        let mut log: Vec<(u64, u64)> = Vec::new();
        let mut report = ProgressReport {
            callback: Some(record),
            user_data: (&mut log as *mut Vec<(u64, u64)>).cast(),
            announced: false,
        };
        assert!(report.report(1, 5));
        assert!(!report.report(2, 5));
        assert_eq!(log, vec![(0, 5), (1, 5), (2, 5)]);
        // A segmenter that reports 0 itself is not announced twice.
        log.clear();
        let mut report = ProgressReport {
            callback: Some(record),
            user_data: (&mut log as *mut Vec<(u64, u64)>).cast(),
            announced: false,
        };
        assert!(report.report(0, 5) && report.report(1, 5));
        assert_eq!(log, vec![(0, 5), (1, 5)]);
        let mut silent = ProgressReport {
            callback: None,
            user_data: std::ptr::null_mut(),
            announced: false,
        };
        assert!(silent.report(3, 5));
    }
}

//! `claim_load_options`, `claim_tensor` and the diffusion model handle:
//! `claim_diffusion_load`, `claim_diffusion_free`, `claim_diffusion_info`
//! and the raw network evaluation `claim_diffusion_predict_noise`.
//!
//! Devices and precisions are the core library's ([`LoadOptions`]): this
//! file only converts `claim_load_options` to them and lets
//! [`LoadOptions::resolve`] open the device.

use super::args::{
    c_str, handle_ref, read_optional_struct, read_struct, write_default, write_struct, CStruct,
    OutHandle,
};
use super::boundary;
use super::status::claim_status;
use crate::error::{Error, Result, ResultExt};
use crate::models::Denoiser;
use crate::nn::{DeviceSpec, LoadOptions, Precision, Tensor};
use std::mem::{align_of, size_of};
use std::path::Path;

/// Compute device of a loaded model (a `typedef int32_t`). The numbers
/// never change.
pub type claim_device = i32;

/// The CPU (the default; always available).
pub const CLAIM_DEVICE_CPU: claim_device = 0;
/// An NVIDIA GPU through CUDA (`claim_build_info_get` says whether this
/// build and machine have one; loading returns `CLAIM_ERR_DEVICE` with the
/// reason when not).
pub const CLAIM_DEVICE_CUDA: claim_device = 1;

/// Arithmetic precision of a loaded model (a `typedef int32_t`). The
/// numbers never change.
pub type claim_precision = i32;

/// 32-bit floats.
pub const CLAIM_PRECISION_FP32: claim_precision = 0;
/// 16-bit floats (GPU only; the CPU back-end computes in FP32 and refuses
/// it with `CLAIM_ERR_UNSUPPORTED`).
pub const CLAIM_PRECISION_FP16: claim_precision = 1;
/// The device's best: FP32 on the CPU (the default).
pub const CLAIM_PRECISION_AUTO: claim_precision = 2;

/// Where and how a model runs. Initialise with
/// `CLAIM_DEFAULT(claim_load_options, &o)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct claim_load_options {
    /// `sizeof(claim_load_options)`, set by `claim_load_options_default()`.
    pub struct_size: u32,
    /// A `CLAIM_DEVICE_*` value (default `CLAIM_DEVICE_CPU`). Asking for a
    /// device this build or machine cannot use returns `CLAIM_ERR_DEVICE`;
    /// the library never falls back to another device silently.
    pub device: claim_device,
    /// Index of the GPU for `CLAIM_DEVICE_CUDA` (default 0), ≥ 0; must be 0
    /// for the CPU.
    pub device_index: i32,
    /// A `CLAIM_PRECISION_*` value (default `CLAIM_PRECISION_AUTO`).
    pub precision: claim_precision,
}

impl Default for claim_load_options {
    fn default() -> Self {
        claim_load_options {
            struct_size: size_of::<claim_load_options>() as u32,
            device: CLAIM_DEVICE_CPU,
            device_index: 0,
            precision: CLAIM_PRECISION_AUTO,
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size, integers only.
unsafe impl CStruct for claim_load_options {
    const C_NAME: &'static str = "claim_load_options";
    const FIRST_RELEASE_SIZE: usize = 16;
    fn with_struct_size(self, size: u32) -> Self {
        claim_load_options {
            struct_size: size,
            ..self
        }
    }
}

/// The core library's options for a caller's `claim_load_options`
/// (already copied; `name` names it). Only the numbers are checked here:
/// whether the device exists is [`LoadOptions::resolve`]'s business.
pub(crate) fn load_options_from_c(options: &claim_load_options, name: &str) -> Result<LoadOptions> {
    let index = usize::try_from(options.device_index).map_err(|_| {
        Error::invalid(format!(
            "{name}.device_index: expected a GPU number ≥ 0, got {}",
            options.device_index
        ))
    })?;
    let device = match options.device {
        CLAIM_DEVICE_CPU if index != 0 => {
            return Err(Error::invalid(format!(
                "{name}.device_index: expected 0 for CLAIM_DEVICE_CPU, got {index}"
            )))
        }
        CLAIM_DEVICE_CPU => DeviceSpec::CPU,
        CLAIM_DEVICE_CUDA => DeviceSpec::cuda(index),
        other => {
            return Err(Error::invalid(format!(
                "{name}.device: expected a CLAIM_DEVICE_* value (0..=1), got {other}"
            )))
        }
    };
    let precision = match options.precision {
        CLAIM_PRECISION_FP32 => Precision::F32,
        CLAIM_PRECISION_FP16 => Precision::F16,
        CLAIM_PRECISION_AUTO => Precision::Auto,
        other => {
            return Err(Error::invalid(format!(
                "{name}.precision: expected a CLAIM_PRECISION_* value (0..=2), got {other}"
            )))
        }
    };
    Ok(LoadOptions { device, precision })
}

/// Reads a caller's optional `claim_load_options` (NULL: the defaults),
/// converts it and resolves it: the device is opened here, so CUDA on a
/// build or machine without it fails with the library's reason
/// ([`Error::Device`]) and FP16 on the CPU with [`Error::Unsupported`],
/// before anything is loaded.
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_load_options` of `struct_size`
/// readable bytes.
pub(crate) unsafe fn resolve_load_options(
    ptr: *const claim_load_options,
    name: &str,
) -> Result<LoadOptions> {
    // SAFETY: forwarded contract.
    let value = unsafe { read_optional_struct(ptr, name) }?;
    let options = load_options_from_c(&value, name)?;
    options.resolve().context(name)?;
    Ok(options)
}

/// Fills `*out` with the default options: CPU, device 0, automatic
/// precision.
///
/// `size`: the caller's `sizeof(claim_load_options)`; writes the first
/// `min(size, sizeof(claim_load_options))` bytes and sets `struct_size` to
/// that number (nothing when `size` < 4). Does nothing when `out` is NULL.
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_load_options_default(out: *mut claim_load_options, size: usize) {
    boundary::call_infallible("claim_load_options_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// Most dimensions of a `claim_tensor`.
pub const CLAIM_TENSOR_MAX_DIMS: u32 = 8;

/// Element type of a `claim_tensor` (a `typedef int32_t`), distinct from a
/// volume's `claim_voxel_type`. The numbers never change.
pub type claim_tensor_dtype = i32;

/// 32-bit floats (`float`): the only element type of this release.
pub const CLAIM_TENSOR_F32: claim_tensor_dtype = 0;

/// A dense tensor in the caller's memory, row-major in PyTorch order (the
/// last dimension fastest). `[B, C, F, H, W]` for the denoiser.
///
/// As an input its `data` is read during the call only; as an output the
/// caller allocates `data` for the product of `shape[0..ndim]` floats and
/// sets `shape` to what the call will write (checked).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct claim_tensor {
    /// `sizeof(claim_tensor)`, set by the caller.
    pub struct_size: u32,
    /// Number of dimensions in use, 1–8.
    pub ndim: u32,
    /// Sizes; entries past `ndim` are ignored.
    pub shape: [u64; 8],
    /// `shape[0] * … * shape[ndim-1]` floats, 4-byte aligned.
    pub data: *mut f32,
    /// Element type of `data`, a `CLAIM_TENSOR_*` value (0, F32, is the
    /// only one this release accepts). A caller whose struct ends before
    /// this field (`struct_size` 80) gets F32.
    pub dtype: claim_tensor_dtype,
}

impl Default for claim_tensor {
    fn default() -> Self {
        claim_tensor {
            struct_size: size_of::<claim_tensor>() as u32,
            ndim: 0,
            shape: [0; 8],
            data: std::ptr::null_mut(),
            dtype: CLAIM_TENSOR_F32,
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers and a raw pointer.
// FIRST_RELEASE_SIZE stops before `dtype`, appended in ABI 2.0.
unsafe impl CStruct for claim_tensor {
    const C_NAME: &'static str = "claim_tensor";
    const FIRST_RELEASE_SIZE: usize = 80;
    fn with_struct_size(self, size: u32) -> Self {
        claim_tensor {
            struct_size: size,
            ..self
        }
    }
}

/// The checked shape and element count of a caller's tensor.
pub(crate) fn tensor_shape(t: &claim_tensor, name: &str) -> Result<(Vec<usize>, usize)> {
    if t.dtype != CLAIM_TENSOR_F32 {
        return Err(Error::invalid(format!(
            "{name}.dtype: expected CLAIM_TENSOR_F32 (0), got {}",
            t.dtype
        )));
    }
    if t.ndim == 0 || t.ndim > CLAIM_TENSOR_MAX_DIMS {
        return Err(Error::invalid(format!(
            "{name}.ndim: expected 1–{CLAIM_TENSOR_MAX_DIMS}, got {}",
            t.ndim
        )));
    }
    let shape = t.shape[..t.ndim as usize]
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::invalid(format!("{name}.shape does not fit this platform")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n > 0 && n <= isize::MAX as usize / size_of::<f32>())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{name}.shape {shape:?}: every size must be ≥ 1 and the product must fit memory"
            ))
        })?;
    if t.data.is_null() {
        return Err(Error::invalid(format!("{name}.data must not be NULL")));
    }
    if (t.data as usize) % align_of::<f32>() != 0 {
        return Err(Error::invalid(format!(
            "{name}.data: expected a 4-byte aligned address, got {:p}",
            t.data
        )));
    }
    Ok((shape, count))
}

/// Copies a caller's tensor.
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_tensor` of `struct_size` bytes
/// whose `data` (if not NULL) holds the product of its shape in floats.
pub(crate) unsafe fn tensor_from_c(ptr: *const claim_tensor, name: &str) -> Result<Tensor> {
    // SAFETY: forwarded contract.
    let t = unsafe { read_struct(ptr, name) }?;
    let (shape, count) = tensor_shape(&t, name)?;
    let mut values = super::volume::try_vec::<f32>(count, name)?;
    // SAFETY: `data` is non-NULL, aligned (checked) and holds `count` floats
    // by contract; `count` floats fit isize (checked).
    values.extend_from_slice(unsafe { std::slice::from_raw_parts(t.data, count) });
    Tensor::from_vec(values, &shape)
}

/// A loaded LeFusion/CLAIM denoiser. Opaque.
///
/// Immutable once loaded: several threads may call `claim_diffusion_synthesize` and
/// `claim_diffusion_predict_noise` on one model at once (no locking).
pub struct claim_diffusion_model {
    pub(crate) model: Denoiser,
}

/// What a loaded model is, read off its weights.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct claim_diffusion_info {
    /// `sizeof(claim_diffusion_info)`, set by the caller.
    pub struct_size: u32,
    /// Image channels C of `[B, C, F, H, W]` (CLAIM: 1).
    pub channels: u32,
    /// Length of the histogram condition (CLAIM: 16); 0 = unconditional.
    pub cond_dim: u32,
    /// Base width (CLAIM: 72).
    pub dim: u32,
    /// U-Net levels (CLAIM: 4).
    pub levels: u32,
    /// H and W must be multiples of this (2^(levels-1); CLAIM: 8).
    pub size_multiple: u32,
    /// Frames F per item that synthesis uses by default for this layout
    /// (`claim_synthesis_params.frames` 0): 10 for a two-channel model
    /// (LeFusion-EMIDEC), 1 otherwise (CLAIM). The weights do not record F;
    /// a one-channel 3-D model needs `frames` set. Appended in ABI 2.1: a
    /// caller whose struct ends before it (`struct_size` 24) does not get it.
    pub frames: u32,
    /// Histograms the condition takes: `cond_dim / 16` (one 16-bin
    /// histogram per channel: CLAIM 1, LeFusion-EMIDEC 2, scar then MVO);
    /// 0 for an unconditional model or a condition that is not 16 per bin
    /// set (pass all `cond_dim` values then). Appended in ABI 2.1.
    pub histogram_count: u32,
}

impl Default for claim_diffusion_info {
    fn default() -> Self {
        claim_diffusion_info {
            struct_size: size_of::<claim_diffusion_info>() as u32,
            channels: 0,
            cond_dim: 0,
            dim: 0,
            levels: 0,
            size_multiple: 0,
            frames: 0,
            histogram_count: 0,
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size, integers only.
// FIRST_RELEASE_SIZE stops before `frames`, appended in ABI 2.1.
unsafe impl CStruct for claim_diffusion_info {
    const C_NAME: &'static str = "claim_diffusion_info";
    const FIRST_RELEASE_SIZE: usize = 24;
    fn with_struct_size(self, size: u32) -> Self {
        claim_diffusion_info {
            struct_size: size,
            ..self
        }
    }
}

/// 2^(levels − 1): what H and W must be multiples of.
pub(crate) fn size_multiple(model: &Denoiser) -> usize {
    let levels = model.config().dim_mults.len().clamp(1, 17);
    1usize << (levels - 1)
}

/// Loads a denoiser from a `.safetensors` file (f32, f16 or bf16 values;
/// keys as the upstream PyTorch `state_dict`, optionally under `module.`,
/// `_orig_mod.` or `denoise_fn.` prefixes; diffusion schedule buffers are
/// ignored). The configuration is read off the tensor shapes. Convert an
/// upstream `.pt` checkpoint with `claim import CKPT.pt -o MODEL.safetensors`.
/// The path `"builtin"` loads the built-in model (a small CLAIM-layout
/// denoiser trained on the phantoms, shipped inside the library; a file
/// named `builtin` is reached as `"./builtin"`).
///
/// `weights_path`: UTF-8 path. `options`: NULL for the defaults, else see
/// `claim_load_options`. `out`: receives the model, freed with
/// `claim_diffusion_free`; set to NULL on every failure.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL path or `out`, bad options),
/// `CLAIM_ERR_IO` (cannot read), `CLAIM_ERR_FORMAT` (not safetensors),
/// `CLAIM_ERR_MODEL` (a tensor missing, misshapen or unexpected: the
/// message names the first), `CLAIM_ERR_DEVICE` (CUDA asked where this build
/// or machine has none: the message says why), `CLAIM_ERR_UNSUPPORTED`
/// (FP16 on the CPU). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_diffusion_load(
    weights_path: *const std::ffi::c_char,
    options: *const claim_load_options,
    out: *mut *mut claim_diffusion_model,
) -> claim_status {
    boundary::call("claim_diffusion_load", || {
        // SAFETY: `out` is NULL or writable for one pointer (header contract).
        let out = unsafe { OutHandle::new(out, "out") }?;
        // SAFETY: `weights_path` is NULL or a NUL-terminated string.
        let path = unsafe { c_str(weights_path, "weights_path") }?;
        // SAFETY: `options` is NULL or holds struct_size bytes.
        let options = unsafe { resolve_load_options(options, "options") }?;
        let model = Denoiser::from_file_with(Path::new(path), &options)?;
        out.set(Box::new(claim_diffusion_model { model }));
        Ok(())
    })
}

/// Frees a model. `model` may be NULL (nothing happens). Must not be called
/// while another call uses `model`, nor twice. Does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_diffusion_free(model: *mut claim_diffusion_model) {
    boundary::call_infallible("claim_diffusion_free", (), || {
        if !model.is_null() {
            // SAFETY: a non-NULL `model` came from Box::into_raw in
            // OutHandle::set and is freed once (header contract).
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// Describes a loaded model into the caller's `*out` (its `struct_size`
/// set): channels, condition length, frames and histogram count tell a
/// caller which layout it is (CLAIM: 1 channel, `cond_dim` 16, 1 frame,
/// 1 histogram; LeFusion-EMIDEC: 2 channels — scar, MVO —, 32, 10, 2) and
/// so how many histograms to pass. Errors: `CLAIM_ERR_INVALID_ARGUMENT`
/// (NULL, bad `struct_size`).
#[no_mangle]
pub extern "C" fn claim_diffusion_info_get(
    model: *const claim_diffusion_model,
    out: *mut claim_diffusion_info,
) -> claim_status {
    boundary::call("claim_diffusion_info_get", || {
        // SAFETY: `model` is NULL or a live handle (header contract).
        let model = unsafe { handle_ref(model, "model") }?;
        let cfg = model.model.config();
        let narrow = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let info = claim_diffusion_info {
            channels: narrow(cfg.channels),
            cond_dim: narrow(cfg.cond_dim.unwrap_or(0)),
            dim: narrow(cfg.dim),
            levels: narrow(cfg.dim_mults.len()),
            size_multiple: narrow(size_multiple(&model.model)),
            frames: narrow(crate::synthesis::default_frames(cfg)),
            histogram_count: narrow(match cfg.cond_dim {
                Some(n) if n % crate::synthesis::HISTOGRAM_BINS == 0 => {
                    n / crate::synthesis::HISTOGRAM_BINS
                }
                _ => 0,
            }),
            ..claim_diffusion_info::default()
        };
        // SAFETY: `out` is NULL or writable for struct_size bytes.
        unsafe { write_struct(out, info, "out") }
    })
}

/// Evaluates the network once: the noise it predicts in `x` at the given
/// timesteps. For harnesses and parity tests against PyTorch.
///
/// `x`: `[B, C, F, H, W]` with C the model's channels and H, W multiples of
/// `size_multiple` (see `claim_diffusion_info`). `timesteps`: B values,
/// each 0 ≤ t < 2^24 (the sampler uses 0–299). `cond`: NULL for the
/// learned null condition (classifier-free guidance's unconditional branch;
/// the only choice for an unconditional model), else `[B, cond_dim]`.
/// `out_noise`: the caller's tensor with the shape of `x`; receives ε̂.
/// All borrowed for the call; `out_noise->data` may alias `x->data`.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, wrong
/// rank, channels, H/W multiple, timesteps, condition length, or output
/// shape), `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe, also on one model.
#[no_mangle]
pub extern "C" fn claim_diffusion_predict_noise(
    model: *const claim_diffusion_model,
    x: *const claim_tensor,
    timesteps: *const i64,
    cond: *const claim_tensor,
    out_noise: *mut claim_tensor,
) -> claim_status {
    boundary::call("claim_diffusion_predict_noise", || {
        // SAFETY: `model` is NULL or a live handle (header contract).
        let model = unsafe { handle_ref(model, "model") }?;
        let cfg = model.model.config();
        // SAFETY: `x` is NULL or a claim_tensor whose data holds its shape.
        let x = unsafe { tensor_from_c(x, "x") }?;
        let &[b, c, _, h, w] = x.dims() else {
            return Err(Error::invalid(format!(
                "x.shape: expected 5 dimensions [B, C, F, H, W], got {:?}",
                x.dims()
            )));
        };
        if c != cfg.channels {
            return Err(Error::invalid(format!(
                "x.shape[1]: expected {} channels (the model's), got {c}",
                cfg.channels
            )));
        }
        let multiple = size_multiple(&model.model);
        if h % multiple != 0 || w % multiple != 0 {
            return Err(Error::invalid(format!(
                "x.shape: H and W must be multiples of {multiple} (the model has {} levels), got \
                 {h}×{w}",
                cfg.dim_mults.len()
            )));
        }
        if timesteps.is_null() {
            return Err(Error::invalid("timesteps must not be NULL"));
        }
        if (timesteps as usize) % align_of::<i64>() != 0 {
            return Err(Error::invalid(format!(
                "timesteps: expected an 8-byte aligned address, got {timesteps:p}"
            )));
        }
        // SAFETY: non-NULL, aligned (checked) and holding B int64 values by
        // contract; B ≥ 1 and the slice is at most the size of x's buffer.
        let ts = unsafe { std::slice::from_raw_parts(timesteps, b) };
        if let Some((i, t)) = ts
            .iter()
            .enumerate()
            .find(|(_, t)| !(0..1 << 24).contains(*t))
        {
            return Err(Error::invalid(format!(
                "timesteps[{i}]: expected 0 ≤ t < 16777216, got {t}"
            )));
        }
        let ts: Vec<f32> = ts.iter().map(|t| *t as f32).collect();
        let cond = if cond.is_null() {
            None
        } else {
            // SAFETY: a non-NULL `cond` is a claim_tensor holding its shape.
            let cond = unsafe { tensor_from_c(cond, "cond") }?;
            match cfg.cond_dim {
                None => {
                    return Err(Error::invalid(
                        "cond: this model is unconditional; pass NULL",
                    ))
                }
                Some(n) if cond.dims() != [b, n] => {
                    return Err(Error::invalid(format!(
                        "cond.shape: expected [{b}, {n}] (batch, the model's condition length), \
                         got {:?}",
                        cond.dims()
                    )))
                }
                Some(_) => Some(cond),
            }
        };
        // SAFETY: `out_noise` is NULL or a claim_tensor of struct_size bytes.
        let out = unsafe { read_struct(out_noise.cast_const(), "out_noise") }?;
        let (out_shape, count) = tensor_shape(&out, "out_noise")?;
        if out_shape != x.dims() {
            return Err(Error::invalid(format!(
                "out_noise.shape: expected {:?} (the shape of x), got {out_shape:?}",
                x.dims()
            )));
        }
        let noise = model.model.predict_noise(&x, &ts, cond.as_ref())?;
        let values = noise.as_slice()?;
        if values.len() != count {
            return Err(Error::Internal(format!(
                "denoiser returned {} values for {count}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{
        CLAIM_ERR_DEVICE, CLAIM_ERR_INVALID_ARGUMENT, CLAIM_ERR_MODEL, CLAIM_ERR_UNSUPPORTED,
        CLAIM_OK,
    };
    use std::ptr::{null, null_mut};

    #[test]
    fn layouts_and_defaults() {
        assert_eq!(size_of::<claim_load_options>(), 16);
        assert_eq!(size_of::<claim_tensor>(), 88);
        assert_eq!(size_of::<claim_diffusion_info>(), 32);
        let mut o = claim_load_options {
            struct_size: 0,
            device: 7,
            device_index: 3,
            precision: 9,
        };
        claim_load_options_default(&mut o, size_of::<claim_load_options>());
        assert_eq!(o, claim_load_options::default());
        claim_load_options_default(null_mut(), 16);
        assert_eq!(
            load_options_from_c(&o, "o").unwrap(),
            LoadOptions::default()
        );
        fn shareable<T: Send + Sync>() {}
        shareable::<claim_diffusion_model>();
    }

    #[test]
    fn devices_never_fall_back() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/denoiser/unet2d_weights.safetensors\0"
        );
        let cuda = claim_load_options {
            device: CLAIM_DEVICE_CUDA,
            ..claim_load_options::default()
        };
        let mut m: *mut claim_diffusion_model = null_mut();
        // A CUDA build on a machine with a GPU loads there; everywhere else
        // the request is refused with the library's reason (no CUDA in this
        // build, no driver, no device).
        if let Err(Error::Device(reason)) = crate::nn::DeviceSpec::cuda(0).open() {
            assert_eq!(
                claim_diffusion_load(path.as_ptr().cast(), &cuda, &mut m),
                CLAIM_ERR_DEVICE
            );
            assert!(m.is_null());
            let msg = last_error();
            assert!(
                msg.starts_with("claim_diffusion_load: device error: options: ")
                    && msg.ends_with(&reason),
                "{msg}"
            );
            // Without the feature the reason is the build; with it (tested
            // in backend::cuda) the missing driver or device.
            assert!(
                cfg!(feature = "cuda") || reason.contains("this build has no CUDA back-end"),
                "{reason}"
            );
        }
        let bad = claim_load_options {
            device: 7,
            ..claim_load_options::default()
        };
        assert_eq!(
            claim_diffusion_load(path.as_ptr().cast(), &bad, &mut m),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("options.device: expected a CLAIM_DEVICE_* value"));
        let bad = claim_load_options {
            precision: -1,
            ..claim_load_options::default()
        };
        assert_eq!(
            claim_diffusion_load(path.as_ptr().cast(), &bad, &mut m),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        let bad = claim_load_options {
            device_index: 1,
            ..claim_load_options::default()
        };
        assert_eq!(
            claim_diffusion_load(path.as_ptr().cast(), &bad, &mut m),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("expected 0 for CLAIM_DEVICE_CPU, got 1"));
        let fp16 = claim_load_options {
            precision: CLAIM_PRECISION_FP16,
            ..claim_load_options::default()
        };
        assert_eq!(
            claim_diffusion_load(path.as_ptr().cast(), &fp16, &mut m),
            CLAIM_ERR_UNSUPPORTED
        );
        assert_eq!(
            claim_diffusion_load(path.as_ptr().cast(), null(), &mut m),
            CLAIM_OK
        );
        let mut info = claim_diffusion_info::default();
        assert_eq!(claim_diffusion_info_get(m, &mut info), CLAIM_OK);
        assert_eq!(
            (
                info.channels,
                info.cond_dim,
                info.dim,
                info.levels,
                info.size_multiple
            ),
            (1, 16, 8, 3, 4)
        );
        assert_eq!((info.frames, info.histogram_count), (1, 1));
        // A first-release caller's struct (24 bytes) gets only its fields.
        let mut old = [0u32; 8];
        old[0] = 24;
        assert_eq!(
            claim_diffusion_info_get(m, old.as_mut_ptr().cast()),
            CLAIM_OK
        );
        assert_eq!(&old[1..], &[1, 16, 8, 3, 4, 0, 0]);
        claim_diffusion_free(m);
        claim_diffusion_free(null_mut());
        let bad = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/denoiser/unet2d_io.safetensors\0"
        );
        assert_eq!(
            claim_diffusion_load(bad.as_ptr().cast(), null(), &mut m),
            CLAIM_ERR_MODEL
        );
    }
}

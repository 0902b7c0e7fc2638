//! The C ABI shell. Every export goes through one boundary helper; no logic lives here.
//!
//! The header `include/claim.h` is generated from this module (and only this
//! module) by cbindgen with `cbindgen.toml`; `tests/header_fresh.rs` fails
//! when the committed header drifts. One file per API area, as in the C
//! header's sections:
//!
//! - [`status`]: `claim_status` codes, `claim_status_str`, `claim_last_error_message`;
//! - [`version`]: `CLAIM_ABI_VERSION`, `claim_abi_version`, `claim_version_string`,
//!   and `claim_build_info_get` (CUDA back-end, kernel targets, driver);
//! - [`volume`]: `claim_voxel_type`, `claim_volume` and the checked conversions to and
//!   from [`crate::Image`] that every area taking volumes uses;
//! - [`labels`]: `claim_label_scheme` and its conversion to [`crate::LabelScheme`];
//! - [`image`]: the owned `claim_image` handle (NIfTI read/write, create, view);
//! - [`aha`]: `claim_aha_params` and `claim_aha_parcellate` (AHA-17 parcellation);
//! - [`smile`]: `claim_smile_params`, `claim_smile_generate` and the reusable
//!   `claim_smile_context` (scar masks);
//! - [`stats`]: `claim_aha_segment_stats_measure` into a `claim_aha_segment_stats`,
//!   and the bull's-eye plots `claim_bullseye_render_svg` / `_png`;
//! - [`diffusion`]: `claim_load_options`, `claim_tensor` (`claim_tensor_dtype`)
//!   and the denoiser handle (`claim_diffusion_load`, `_free`, `_info_get`,
//!   `_predict_noise`);
//! - [`synthesis`]: `claim_progress_fn`, `claim_synthesis_params`,
//!   `claim_diffusion_synthesize` and `claim_histogram_measure`;
//! - [`segmentation`]: `claim_segmenter_options` and the nnU-Net segmenter
//!   handle (`claim_segmenter_load`, `_free`, `_info_get`,
//!   `_predict_logits`), `claim_segmentation_params` and
//!   `claim_segmenter_segment`.
//!
//! Naming: every function is `claim_<noun>_<verb>` (`claim_aha_parcellate`,
//! `claim_diffusion_synthesize`, `claim_segmenter_segment`), except the
//! four global queries (`claim_status_str`, `claim_last_error_message`,
//! `claim_abi_version`, `claim_version_string`); "segment" alone means
//! segmentation, AHA segments are always `aha_segment`.
//!
//! Structs: `struct_size` first; parameter structs have a
//! `claim_<name>_default(out, size)` that writes at most `size` bytes (the
//! header's `CLAIM_DEFAULT(name, p)` passes `sizeof *(p)`); no struct holds
//! another by value: a label scheme or AHA options are pointed to (NULL =
//! defaults), borrowed for the call.
//!
//! Shared machinery, not exported: `boundary` (panic catching, status and
//! thread-local message) and `args` (NULL, `struct_size`, string and
//! out-pointer checks).
//!
//! Exports are plain `extern "C" fn`s, as in rustls-ffi: C callers cannot see
//! Rust's `unsafe`, and each export states its pointer contract in the header.
//! Every dereference of a caller's pointer happens in an `unsafe` block that
//! names the contract it relies on.
#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]
// Exports take the caller's raw pointers by design (the C contract is in
// each doc comment); they cannot be `unsafe fn` without making every C
// signature Rust-unsafe to no one's benefit.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

// Declared in the order the header presents them: cbindgen follows it, and
// the blank lines keep rustfmt from sorting them.
pub mod status;

pub mod version;

pub mod volume;

pub mod labels;

pub mod image;

pub mod aha;

pub mod smile;

pub mod stats;

pub mod eval;

pub mod diffusion;

pub mod synthesis;

pub mod segmentation;

mod layout;

pub(crate) mod args;
pub(crate) mod boundary;

#[cfg(test)]
mod status_contract;

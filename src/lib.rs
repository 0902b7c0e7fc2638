//! # claim
//!
//! CLAIM (clinically-guided LGE scar synthesis and segmentation,
//! arXiv 2506.15549) as an in-process library with a stable C ABI.
//!
//! Layers (lower never import higher): [`volume`] and [`io`] at the bottom,
//! [`imgproc`] for filters, [`phantom`] for the built-in demo case,
//! [`smile`] for AHA-17 parcellation and scar masks, [`backend`] (device
//! kernels) under [`nn`] (tensors, ops, safetensors weights) under
//! [`models`] (the LeFusion/CLAIM denoiser), and `ffi` — the C ABI shell,
//! holding no logic. See `README.md` for the map.
#![warn(missing_docs)]

pub mod augment;
pub mod backend;
pub mod error;
pub mod imgproc;
pub mod io;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod phantom;
pub mod rng;
pub mod segmentation;
pub mod smile;
pub mod synthesis;
#[doc(hidden)]
pub mod testing;
pub mod train;
pub mod volume;

#[doc(hidden)]
pub mod ffi;

pub use error::{Error, Result, ResultExt};
pub use volume::{DType, Geometry, Image, LabelScheme, Volume};

/// The crate version, e.g. `"0.1.0"`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

//! SMILE: AHA-17 parcellation and clinically guided scar masks.
//!
//! - [`aha`]: the 17-segment parcellation of the LV myocardium;
//! - [`territory`]: coronary territories and the segment adjacency graph;
//! - [`generate`](mod@generate): scar masks ([`SmileParams`], [`SmileContext`],
//!   [`generate()`](generate::generate)) in the patterns of [`pattern`];
//! - [`field`]: the seeded smooth random fields behind irregular borders;
//! - [`stats`] and [`bullseye`]: per-segment scar and its bull's-eye plot.

pub mod aha;
pub mod bullseye;
pub mod distribution;
pub mod field;
pub mod generate;
pub mod pattern;
pub mod stats;
pub mod territory;

pub use bullseye::{render_png, render_svg, BullseyeOptions};
pub use distribution::MaskDistribution;
pub use generate::{generate, generate_with_segments, SmileContext, SmileParams, SmileResult};
pub use pattern::Pattern;
pub use stats::{segment_stats, SegmentStat, SegmentStats};
pub use territory::Territory;

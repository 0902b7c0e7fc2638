//! `claim_aha_segment_stats_measure` (per-AHA-segment scar volumes, in a
//! `claim_aha_segment_stats`) and the bull's-eye plots
//! `claim_bullseye_render_svg` / `_png` of [`crate::smile::stats`] and
//! [`crate::smile::bullseye`].
//!
//! The statistics are flat arrays indexed by segment number (0 = no
//! segment), not an array of per-segment structs: no C struct holds
//! another by value, so each can grow on its own.

use super::aha::{aha_params_from_c, claim_aha_params};
use super::args::{
    c_str, check_out_struct, copy_out_bytes, read_struct, write_default, write_struct, CStruct,
};
use super::boundary;
use super::smile::segments_from_c;
use super::status::claim_status;
use super::volume::{claim_volume, dims_text, labels_cropped_from_c};
use crate::error::{Error, Result, ResultExt};
use crate::smile::aha::parcellate_cropped;
use crate::smile::bullseye::{render_png, render_svg, BullseyeOptions};
use crate::smile::stats::{crop_segment_map, segment_stats, SegmentStat, SegmentStats};
use std::ffi::c_char;
use std::mem::size_of;

/// Entries of the per-segment arrays of `claim_aha_segment_stats`:
/// index 0 (myocardium without a segment) and the AHA segments 1–17.
pub const CLAIM_AHA_STATS_ENTRIES: usize = 18;

/// Myocardium, scar and MVO per AHA segment and in total, filled by
/// `claim_aha_segment_stats_measure`; also the input of the bull's-eye
/// plots.
///
/// Every per-segment array is indexed by the segment number: `[s]` is AHA
/// segment `s` (1–17) and `[0]` the myocardium the segment map leaves
/// without a segment (value 0). "Scar" is the whole lesion including its
/// MVO core, as in the SMILE burden; the myocardium is healthy + scar +
/// MVO. Volumes are voxel counts times the voxel volume of the label map's
/// geometry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_aha_segment_stats {
    /// `sizeof(claim_aha_segment_stats)`, set by the caller.
    pub struct_size: u32,
    /// Myocardium (healthy + scar + MVO) per segment, mL.
    pub myocardium_ml: [f64; 18],
    /// Scar including MVO per segment, mL.
    pub scar_ml: [f64; 18],
    /// MVO per segment, mL (part of `scar_ml`).
    pub mvo_ml: [f64; 18],
    /// `100 × scar_ml / myocardium_ml` per segment, percent; 0 for a
    /// segment without myocardium.
    pub scar_percent: [f64; 18],
    /// Whole myocardium (all segments plus `[0]`), mL.
    pub total_myocardium_ml: f64,
    /// Scar including MVO, mL.
    pub total_scar_ml: f64,
    /// MVO, mL.
    pub total_mvo_ml: f64,
    /// `total_scar_ml / total_myocardium_ml`: fraction 0–1 (0 without
    /// myocardium), as `claim_smile_params.burden`.
    pub burden: f64,
}

impl Default for claim_aha_segment_stats {
    fn default() -> Self {
        claim_aha_segment_stats {
            struct_size: size_of::<claim_aha_segment_stats>() as u32,
            myocardium_ml: [0.0; CLAIM_AHA_STATS_ENTRIES],
            scar_ml: [0.0; CLAIM_AHA_STATS_ENTRIES],
            mvo_ml: [0.0; CLAIM_AHA_STATS_ENTRIES],
            scar_percent: [0.0; CLAIM_AHA_STATS_ENTRIES],
            total_myocardium_ml: 0.0,
            total_scar_ml: 0.0,
            total_mvo_ml: 0.0,
            burden: 0.0,
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; doubles otherwise.
unsafe impl CStruct for claim_aha_segment_stats {
    const C_NAME: &'static str = "claim_aha_segment_stats";
    const FIRST_RELEASE_SIZE: usize = 616;
    fn with_struct_size(self, size: u32) -> Self {
        claim_aha_segment_stats {
            struct_size: size,
            ..self
        }
    }
}

impl From<&SegmentStats> for claim_aha_segment_stats {
    fn from(s: &SegmentStats) -> Self {
        let mut out = claim_aha_segment_stats {
            total_myocardium_ml: s.total_myocardium_ml,
            total_scar_ml: s.total_scar_ml,
            total_mvo_ml: s.total_mvo_ml,
            burden: s.burden,
            ..claim_aha_segment_stats::default()
        };
        let entries = std::iter::once(&s.unassigned).chain(&s.per_segment);
        for (index, stat) in entries.enumerate() {
            out.myocardium_ml[index] = stat.myocardium_ml;
            out.scar_ml[index] = stat.scar_ml;
            out.mvo_ml[index] = stat.mvo_ml;
            out.scar_percent[index] = stat.scar_percent;
        }
        out
    }
}

/// The checked Rust statistics of a caller's `claim_aha_segment_stats`
/// (already copied): every value finite and ≥ 0.
fn aha_segment_stats_from_c(value: &claim_aha_segment_stats, name: &str) -> Result<SegmentStats> {
    let mut entries = [SegmentStat::default(); CLAIM_AHA_STATS_ENTRIES];
    for (index, entry) in entries.iter_mut().enumerate() {
        let values = [
            ("myocardium_ml", value.myocardium_ml[index]),
            ("scar_ml", value.scar_ml[index]),
            ("mvo_ml", value.mvo_ml[index]),
            ("scar_percent", value.scar_percent[index]),
        ];
        if let Some((field, v)) = values.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::invalid(format!(
                "{name}.{field}[{index}]: expected a finite value ≥ 0, got {v}"
            )));
        }
        *entry = SegmentStat {
            // index < 18, so the segment number fits.
            segment: index as u8,
            myocardium_ml: value.myocardium_ml[index],
            scar_ml: value.scar_ml[index],
            mvo_ml: value.mvo_ml[index],
            scar_percent: value.scar_percent[index],
        };
    }
    let totals = [
        ("total_myocardium_ml", value.total_myocardium_ml),
        ("total_scar_ml", value.total_scar_ml),
        ("total_mvo_ml", value.total_mvo_ml),
        ("burden", value.burden),
    ];
    check_non_negative(&totals, name)?;
    let mut per_segment = [SegmentStat::default(); CLAIM_AHA_STATS_ENTRIES - 1];
    per_segment.copy_from_slice(&entries[1..]);
    Ok(SegmentStats {
        per_segment,
        unassigned: entries[0],
        total_myocardium_ml: value.total_myocardium_ml,
        total_scar_ml: value.total_scar_ml,
        total_mvo_ml: value.total_mvo_ml,
        burden: value.burden,
    })
}

fn check_non_negative(values: &[(&str, f64)], name: &str) -> Result<()> {
    match values.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        Some((field, v)) => Err(Error::invalid(format!(
            "{name}.{field}: expected a finite value ≥ 0, got {v}"
        ))),
        None => Ok(()),
    }
}

/// Measures myocardium, scar and MVO per AHA segment of a label map.
///
/// `labels`: the label map in `params->labels`' scheme; any voxel type
/// (float labels must be integral); borrowed. Labels the scheme does not
/// name count as non-myocardium. `segments`: NULL to parcellate `labels`
/// with `params` first (then the map must hold myocardium and LV cavity and
/// no unnamed label), or a segment map with the dims and geometry of
/// `labels` (any voxel type, 0 = none, 1–17), e.g. the output of
/// `claim_aha_parcellate`;
/// borrowed. `params`: the label scheme (`params->labels`) and, when
/// `segments` is NULL, the parcellation options; borrowed. `out`: caller's
/// struct with `struct_size` set; receives the statistics.
///
/// On failure `*out` is left untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL `labels`, `params` or `out`,
/// bad `struct_size`, bad volume or parameters, `segments` of other dims or
/// geometry or with values outside 0–17; with `segments` NULL, the errors
/// of `claim_aha_parcellate`), `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_aha_segment_stats_measure(
    labels: *const claim_volume,
    segments: *const claim_volume,
    params: *const claim_aha_params,
    out: *mut claim_aha_segment_stats,
) -> claim_status {
    boundary::call("claim_aha_segment_stats_measure", || {
        // SAFETY: `out` is NULL or a claim_aha_segment_stats of struct_size bytes.
        unsafe { check_out_struct(out.cast_const(), "out") }?;
        // SAFETY: `params` is NULL or a claim_aha_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` is NULL or a scheme of struct_size bytes.
        let params = unsafe { aha_params_from_c(&params, "params", true) }?;
        // SAFETY: `labels` is NULL or a claim_volume whose data holds dims
        // voxels of dtype (header contract).
        let labels = unsafe { labels_cropped_from_c(labels, "labels") }?;
        let dims = labels.placement.full_dims;
        let segments = if segments.is_null() {
            let whole = parcellate_cropped(&labels, &params)?.segments;
            labels.placement.crop(&whole, "the AHA segment map")?
        } else {
            // SAFETY: a non-NULL `segments` is a claim_volume whose data
            // holds dims voxels of dtype (header contract).
            let segments = unsafe { segments_from_c(segments, "segments") }?;
            if segments.dims() != dims {
                return Err(Error::invalid(format!(
                    "segments.dims: expected {} (the dims of labels), got {}",
                    dims_text(dims),
                    dims_text(segments.dims())
                )));
            }
            crop_segment_map(&labels, &segments)?
        };
        let stats = segment_stats(&labels.labels, &segments, &params.labels)?;
        // SAFETY: `out` is writable for struct_size bytes (header contract).
        unsafe { write_struct(out, claim_aha_segment_stats::from(&stats), "out") }
    })
}

/// How to draw a bull's-eye plot. Initialise with
/// `CLAIM_DEFAULT(claim_bullseye_options, &o)` and change what differs.
///
/// The plot is the standard AHA layout seen from the apex: basal ring (1–6)
/// outside, then mid (7–12), apical (13–16) and the apex (17) in the
/// centre; segment 1 (anterior) at the top, the septum on the left. Each
/// segment is filled by its scar % on a yellow–red colour scale (grey
/// without myocardium), with a colour bar on the right.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_bullseye_options {
    /// `sizeof(claim_bullseye_options)`, set by
    /// `claim_bullseye_options_default()`.
    pub struct_size: u32,
    /// Diameter of the plot in pixels, 64–4096 (default 480); the image is
    /// 1.3 times as wide for the colour bar.
    pub size_px: u32,
    /// Scar % at the top of the colour scale (higher values saturate);
    /// finite and > 0 (default 100).
    pub max_percent: f64,
    /// 1 (default) prints segment numbers, 0 does not.
    pub show_numbers: i32,
    /// 1 (default) prints each segment's scar % (SVG only), 0 does not.
    pub show_percent: i32,
    /// Title above the plot (SVG only): NULL (default) for none, or a
    /// NUL-terminated UTF-8 string, borrowed for the call.
    pub title: *const c_char,
}

impl Default for claim_bullseye_options {
    fn default() -> Self {
        let rust = BullseyeOptions::default();
        claim_bullseye_options {
            struct_size: size_of::<claim_bullseye_options>() as u32,
            size_px: rust.size_px,
            max_percent: rust.max_percent,
            show_numbers: i32::from(rust.show_numbers),
            show_percent: i32::from(rust.show_percent),
            title: std::ptr::null(),
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, a double and a
// raw pointer, all valid for any bit pattern.
unsafe impl CStruct for claim_bullseye_options {
    const C_NAME: &'static str = "claim_bullseye_options";
    const FIRST_RELEASE_SIZE: usize = 32;
    fn with_struct_size(self, size: u32) -> Self {
        claim_bullseye_options {
            struct_size: size,
            ..self
        }
    }
}

fn flag_from_c(value: i32, name: &str) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(Error::invalid(format!(
            "{name}: expected 0 or 1, got {other}"
        ))),
    }
}

/// The checked Rust options of a caller's `claim_bullseye_options`.
///
/// # Safety
///
/// `value.title` must be NULL or a NUL-terminated string, live for the call.
unsafe fn bullseye_options_from_c(
    value: &claim_bullseye_options,
    name: &str,
) -> Result<BullseyeOptions> {
    let title = if value.title.is_null() {
        None
    } else {
        // SAFETY: forwarded contract.
        Some(unsafe { c_str(value.title, &format!("{name}.title")) }?.to_owned())
    };
    let options = BullseyeOptions {
        size_px: value.size_px,
        title,
        max_percent: value.max_percent,
        show_numbers: flag_from_c(value.show_numbers, &format!("{name}.show_numbers"))?,
        show_percent: flag_from_c(value.show_percent, &format!("{name}.show_percent"))?,
    };
    options.validate().context(name)?;
    Ok(options)
}

/// Fills `*out` with the default plot options: 480 px, scale 0–100 %,
/// numbers and percentages shown, no title.
///
/// `size`: the caller's `sizeof(claim_bullseye_options)`; writes the first
/// `min(size, sizeof(claim_bullseye_options))` bytes and sets
/// `struct_size` to that number (nothing when `size` < 4). Does nothing
/// when `out` is NULL. Thread-safe; does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_bullseye_options_default(out: *mut claim_bullseye_options, size: usize) {
    boundary::call_infallible("claim_bullseye_options_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// Renders with `render` and copies the bytes (plus a NUL when
/// `terminate`) into the caller's buffer, following the size-query
/// protocol of `claim_bullseye_render_svg`.
///
/// # Safety
///
/// As `claim_bullseye_render_svg`'s pointer contract.
unsafe fn render_into(
    stats: *const claim_aha_segment_stats,
    options: *const claim_bullseye_options,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
    render: fn(&SegmentStats, &BullseyeOptions) -> Result<Vec<u8>>,
    terminate: bool,
) -> Result<()> {
    if needed.is_null() {
        return Err(Error::invalid("needed must not be NULL"));
    }
    // SAFETY: `stats` is NULL or a claim_aha_segment_stats of struct_size bytes.
    let stats = unsafe { read_struct(stats, "stats") }?;
    let stats = aha_segment_stats_from_c(&stats, "stats")?;
    // SAFETY: `options` is NULL or a claim_bullseye_options of struct_size
    // bytes whose title is NULL or a NUL-terminated string.
    let options = unsafe { read_struct(options, "options") }?;
    // SAFETY: as above.
    let options = unsafe { bullseye_options_from_c(&options, "options") }?;
    let mut bytes = render(&stats, &options)?;
    if terminate {
        bytes.push(0);
    }
    // SAFETY: `needed` is non-NULL; `buf` is NULL or writable for `cap`
    // bytes (header contract).
    unsafe { copy_out_bytes(&bytes, buf, cap, needed) }
}

/// Renders the bull's-eye plot of `stats` as a standalone SVG document
/// (UTF-8, NUL-terminated) into the caller's buffer.
///
/// `stats`: e.g. from `claim_aha_segment_stats_measure`; every value finite and ≥ 0;
/// borrowed. `options`: see `claim_bullseye_options`; borrowed. `buf`,
/// `cap`: caller's buffer of `cap` bytes. `needed`: receives the size the
/// document needs, NUL included, on success and when `cap` is too small.
/// Call once with `buf` NULL and `cap` 0 to learn the size (returns
/// `CLAIM_OK`), allocate, then call again. With `cap` too small the call
/// fails and writes nothing to `buf`.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL `stats`, `options` or
/// `needed`, bad `struct_size`, a negative or non-finite statistic, bad
/// options, `buf` NULL with `cap` > 0, `cap` smaller than needed).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn claim_bullseye_render_svg(
    stats: *const claim_aha_segment_stats,
    options: *const claim_bullseye_options,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> claim_status {
    boundary::call("claim_bullseye_render_svg", || {
        let svg = |s: &SegmentStats, o: &BullseyeOptions| render_svg(s, o).map(String::into_bytes);
        // SAFETY: the pointer contract of this function's header comment.
        unsafe { render_into(stats, options, buf.cast(), cap, needed, svg, true) }
    })
}

/// Renders the bull's-eye plot of `stats` as a PNG image (RGB, 8 bits)
/// into the caller's buffer; the title and percentages are SVG-only.
///
/// Arguments, size query and errors as `claim_bullseye_render_svg`, except that
/// the bytes are a PNG file, not NUL-terminated. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_bullseye_render_png(
    stats: *const claim_aha_segment_stats,
    options: *const claim_bullseye_options,
    buf: *mut u8,
    cap: usize,
    needed: *mut usize,
) -> claim_status {
    boundary::call("claim_bullseye_render_png", || {
        // SAFETY: the pointer contract of this function's header comment.
        unsafe { render_into(stats, options, buf, cap, needed, render_png, false) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::aha::tests::{small_heart, view, with_rv};
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use crate::ffi::volume::{CLAIM_VOXEL_F32, CLAIM_VOXEL_U8};
    use crate::volume::{Geometry, LabelScheme, Volume};
    use std::ptr::{null, null_mut};

    fn line_case() -> (Volume<i32>, Volume<u8>) {
        let g = Geometry::with_spacing([2.0, 2.0, 5.0]); // 0.02 mL per voxel
        let labels = Volume::from_vec([6, 1, 1], vec![2, 3, 4, 2, 1, 3], g).unwrap();
        let segments = Volume::from_vec([6, 1, 1], vec![1u8, 1, 1, 17, 17, 0], g).unwrap();
        (labels, segments)
    }

    #[test]
    fn layout_and_conversion_round_trip() {
        assert_eq!(size_of::<claim_aha_segment_stats>(), 616);
        assert_eq!(size_of::<claim_bullseye_options>(), 32);
        let (labels, segments) = line_case();
        let rust = segment_stats(&labels, &segments, &LabelScheme::EMIDEC).unwrap();
        let c = claim_aha_segment_stats::from(&rust);
        let first = &rust.per_segment[0];
        assert_eq!(
            (
                c.myocardium_ml[1],
                c.scar_ml[1],
                c.mvo_ml[1],
                c.scar_percent[1]
            ),
            (
                first.myocardium_ml,
                first.scar_ml,
                first.mvo_ml,
                first.scar_percent
            )
        );
        assert_eq!(c.scar_ml[0], rust.unassigned.scar_ml);
        assert_eq!(aha_segment_stats_from_c(&c, "stats").unwrap(), rust);

        let mut bad = c;
        bad.scar_percent[4] = f64::NAN;
        let msg = aha_segment_stats_from_c(&bad, "stats")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("stats.scar_percent[4]: expected a finite value ≥ 0, got NaN"),
            "{msg}"
        );
        let negative = claim_aha_segment_stats { burden: -0.1, ..c };
        let msg = aha_segment_stats_from_c(&negative, "stats")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("stats.burden"), "{msg}");
    }

    #[test]
    fn stats_of_given_segments_in_any_dtype() {
        let (labels, segments) = line_case();
        let mut label_voxels: Vec<f32> = labels.data.iter().map(|l| *l as f32).collect();
        let label_view = view(&labels, &mut label_voxels, CLAIM_VOXEL_F32);
        let mut segment_voxels: Vec<u8> = segments.data.iter().copied().collect();
        let segment_view = view(&labels, &mut segment_voxels, CLAIM_VOXEL_U8);
        let params = claim_aha_params::default();
        let mut out = claim_aha_segment_stats::default();
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &segment_view, &params, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        assert!((out.myocardium_ml[1] - 0.06).abs() < 1e-12);
        assert!((out.scar_ml[1] - 0.04).abs() < 1e-12);
        assert!((out.mvo_ml[1] - 0.02).abs() < 1e-12);
        assert!((out.myocardium_ml[17] - 0.02).abs() < 1e-12);
        assert!((out.scar_ml[0] - 0.02).abs() < 1e-12);
        assert!((out.burden - 0.6).abs() < 1e-12);

        // Refusals leave *out alone.
        let before = out;
        let mut bad_voxels = segment_voxels.clone();
        bad_voxels[2] = 18;
        let bad_view = view(&labels, &mut bad_voxels, CLAIM_VOXEL_U8);
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &bad_view, &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("got 18 at voxel #2"),
            "{}",
            last_error()
        );
        let mut short = [1u8; 3];
        let short_view = claim_volume {
            dims: [3, 1, 1],
            data: short.as_mut_ptr().cast(),
            ..segment_view
        };
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &short_view, &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("segments.dims: expected 6×1×1 (the dims of labels), got 3×1×1")
        );
        let moved = claim_volume {
            origin: [50.0, 0.0, 0.0],
            ..segment_view
        };
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &moved, &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("geometry"), "{}", last_error());
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &segment_view, null(), &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            claim_aha_segment_stats_measure(null(), &segment_view, &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &segment_view, &params, null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out must not be NULL"));
        out.struct_size = 600;
        assert_eq!(
            claim_aha_segment_stats_measure(&label_view, &segment_view, &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out.struct_size: expected at least 616"));
        out.struct_size = before.struct_size;
        assert_eq!(out, before);
    }

    #[test]
    fn stats_parcellate_when_no_segments_are_given() {
        let heart = small_heart();
        let mut voxels: Vec<u8> = heart.data.iter().map(|l| *l as u8).collect();
        let labels = view(&heart, &mut voxels, CLAIM_VOXEL_U8);
        let params = with_rv();
        let mut out = claim_aha_segment_stats::default();
        assert_eq!(
            claim_aha_segment_stats_measure(&labels, null(), &params, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        let ml = heart.geometry.voxel_volume_mm3() / 1000.0;
        let myocardium = heart.data.iter().filter(|l| **l == 2).count() as f64 * ml;
        assert!((out.total_myocardium_ml - myocardium).abs() < 1e-9);
        assert_eq!(out.myocardium_ml[0], 0.0);
        let by_segment: f64 = out.myocardium_ml[1..].iter().sum();
        assert!((by_segment - myocardium).abs() < 1e-9);
        assert!(out.myocardium_ml[1..].iter().all(|ml| *ml > 0.0));
        assert_eq!(out.burden, 0.0);
    }

    #[test]
    fn bullseye_size_query_then_render() {
        let (labels, segments) = line_case();
        let stats = claim_aha_segment_stats::from(
            &segment_stats(&labels, &segments, &LabelScheme::EMIDEC).unwrap(),
        );
        let options = claim_bullseye_options {
            title: c"LAD <infarct>".as_ptr(),
            ..claim_bullseye_options::default()
        };
        let mut needed = 0usize;
        assert_eq!(
            claim_bullseye_render_svg(&stats, &options, null_mut(), 0, &mut needed),
            CLAIM_OK
        );
        assert!(needed > 100);
        let mut buf = vec![b'x' as c_char; needed];
        let mut small_needed = 0usize;
        assert_eq!(
            claim_bullseye_render_svg(
                &stats,
                &options,
                buf.as_mut_ptr(),
                needed - 1,
                &mut small_needed
            ),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(small_needed, needed);
        assert!(last_error().contains(&format!("cap: expected at least {needed} bytes")));
        assert!(
            buf.iter().all(|c| *c == b'x' as c_char),
            "refused call wrote"
        );
        assert_eq!(
            claim_bullseye_render_svg(&stats, &options, buf.as_mut_ptr(), needed, &mut needed),
            CLAIM_OK
        );
        // SAFETY: the buffer now holds a NUL-terminated string.
        let svg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap();
        assert_eq!(svg.len() + 1, needed);
        assert!(svg.starts_with("<svg") && svg.contains("LAD &lt;infarct&gt;"));
        assert_eq!(
            svg,
            render_svg(
                &aha_segment_stats_from_c(&stats, "s").unwrap(),
                &BullseyeOptions {
                    title: Some("LAD <infarct>".into()),
                    ..BullseyeOptions::default()
                }
            )
            .unwrap()
        );

        let mut png_needed = 0usize;
        let options = claim_bullseye_options::default();
        assert_eq!(
            claim_bullseye_render_png(&stats, &options, null_mut(), 0, &mut png_needed),
            CLAIM_OK
        );
        let mut png = vec![0u8; png_needed];
        assert_eq!(
            claim_bullseye_render_png(
                &stats,
                &options,
                png.as_mut_ptr(),
                png.len(),
                &mut png_needed
            ),
            CLAIM_OK
        );
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

        let cases = [
            (
                claim_bullseye_options {
                    size_px: 10,
                    ..options
                },
                "options: bull's-eye size must be 64–4096 px, got 10",
            ),
            (
                claim_bullseye_options {
                    show_numbers: 7,
                    ..options
                },
                "options.show_numbers: expected 0 or 1, got 7",
            ),
            (
                claim_bullseye_options {
                    struct_size: 0,
                    ..options
                },
                "options.struct_size",
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(
                claim_bullseye_render_svg(&stats, &bad, null_mut(), 0, &mut needed),
                CLAIM_ERR_INVALID_ARGUMENT
            );
            assert!(last_error().contains(expected), "{}", last_error());
        }
        assert_eq!(
            claim_bullseye_render_svg(&stats, &options, null_mut(), 0, null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("needed must not be NULL"));
        assert_eq!(
            claim_bullseye_render_svg(&stats, &options, null_mut(), 5, &mut needed),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("buf must not be NULL when cap (5) is not 0"));
        let mut defaults = claim_bullseye_options {
            size_px: 1,
            ..options
        };
        claim_bullseye_options_default(&mut defaults, size_of::<claim_bullseye_options>());
        assert_eq!(defaults, claim_bullseye_options::default());
        claim_bullseye_options_default(null_mut(), 32);
    }
}

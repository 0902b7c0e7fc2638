//! `claim_smile_params`, `claim_smile_generate` and the reusable
//! `claim_smile_context`: clinically guided scar masks of
//! [`mod@crate::smile::generate`].

use super::aha::{aha_params_from_ptr, claim_aha_params, CLAIM_AHA_SEGMENT_COUNT};
use super::args::{
    check_out_struct, handle_ref, read_struct, write_default, write_struct, CStruct, OutHandle,
};
use super::boundary;
use super::labels::{claim_label_scheme, label_scheme_from_ptr};
use super::status::claim_status;
use super::volume::{claim_volume, image_from_c, labels_cropped_from_c, out_volume_from_c};
use crate::error::{Error, Result, ResultExt};
use crate::smile::generate::{SmileContext, SmileParams, SmileResult};
use crate::smile::pattern::Pattern;
use crate::smile::territory::Territory;
use crate::volume::{CropPlacement, Image, LabelScheme, Volume};
use std::mem::size_of;

/// Scar pattern of a SMILE draw (a `typedef int32_t`; see `claim_status`
/// for why codes are not a C `enum`). The numbers never change.
pub type claim_pattern = i32;

/// Infarct in one coronary territory, growing from the endocardium as a
/// wavefront (the default).
pub const CLAIM_PATTERN_ISCHEMIC: claim_pattern = 0;
/// Non-ischaemic mid-wall stripe; spares the endocardium.
pub const CLAIM_PATTERN_MIDWALL: claim_pattern = 1;
/// Non-ischaemic sub-epicardial scar; spares the endocardium.
pub const CLAIM_PATTERN_EPICARDIAL: claim_pattern = 2;
/// Non-ischaemic fibrosis at an RV insertion point; spares the endocardium.
pub const CLAIM_PATTERN_INSERTION: claim_pattern = 3;
/// The upstream CLAIM generator's distribution, confined to the myocardium.
pub const CLAIM_PATTERN_CLAIM: claim_pattern = 4;

/// Culprit coronary territory of an ischaemic draw (a `typedef int32_t`).
/// The numbers never change.
pub type claim_territory = i32;

/// Drawn at random: LAD 45 %, RCA 35 %, LCx 20 % (the default).
pub const CLAIM_TERRITORY_ANY: claim_territory = 0;
/// Left anterior descending artery: segments 1, 2, 7, 8, 13, 14, 17.
pub const CLAIM_TERRITORY_LAD: claim_territory = 1;
/// Right coronary artery: segments 3, 4, 9, 10, 15.
pub const CLAIM_TERRITORY_RCA: claim_territory = 2;
/// Left circumflex artery: segments 5, 6, 11, 12, 16.
pub const CLAIM_TERRITORY_LCX: claim_territory = 3;

fn pattern_from_c(pattern: claim_pattern, name: &str) -> Result<Pattern> {
    Ok(match pattern {
        CLAIM_PATTERN_ISCHEMIC => Pattern::Ischemic,
        CLAIM_PATTERN_MIDWALL => Pattern::Midwall,
        CLAIM_PATTERN_EPICARDIAL => Pattern::Epicardial,
        CLAIM_PATTERN_INSERTION => Pattern::Insertion,
        CLAIM_PATTERN_CLAIM => Pattern::Claim,
        other => {
            return Err(Error::invalid(format!(
                "{name}: expected a CLAIM_PATTERN_* value (0..=4), got {other}"
            )))
        }
    })
}

fn pattern_to_c(pattern: Pattern) -> claim_pattern {
    match pattern {
        Pattern::Ischemic => CLAIM_PATTERN_ISCHEMIC,
        Pattern::Midwall => CLAIM_PATTERN_MIDWALL,
        Pattern::Epicardial => CLAIM_PATTERN_EPICARDIAL,
        Pattern::Insertion => CLAIM_PATTERN_INSERTION,
        Pattern::Claim => CLAIM_PATTERN_CLAIM,
    }
}

fn territory_from_c(territory: claim_territory, name: &str) -> Result<Territory> {
    Ok(match territory {
        CLAIM_TERRITORY_ANY => Territory::Any,
        CLAIM_TERRITORY_LAD => Territory::Lad,
        CLAIM_TERRITORY_RCA => Territory::Rca,
        CLAIM_TERRITORY_LCX => Territory::Lcx,
        other => {
            return Err(Error::invalid(format!(
                "{name}: expected a CLAIM_TERRITORY_* value (0..=3), got {other}"
            )))
        }
    })
}

fn territory_to_c(territory: Territory) -> claim_territory {
    match territory {
        Territory::Any => CLAIM_TERRITORY_ANY,
        Territory::Lad => CLAIM_TERRITORY_LAD,
        Territory::Rca => CLAIM_TERRITORY_RCA,
        Territory::Lcx => CLAIM_TERRITORY_LCX,
    }
}

/// What a SMILE draw makes. Initialise with
/// `CLAIM_DEFAULT(claim_smile_params, &p)` and change what differs.
///
/// Input scar and MVO voxels are reset to healthy myocardium first: a draw
/// replaces any lesion the map had. Scar is only ever written on
/// myocardium; every other voxel is copied unchanged.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct claim_smile_params {
    /// `sizeof(claim_smile_params)`, set by `claim_smile_params_default()`.
    pub struct_size: u32,
    /// A `CLAIM_PATTERN_*` value (default `CLAIM_PATTERN_ISCHEMIC`).
    pub pattern: claim_pattern,
    /// A `CLAIM_TERRITORY_*` value (default `CLAIM_TERRITORY_ANY`). Other
    /// than ANY only with the ischaemic pattern.
    pub territory: claim_territory,
    /// Ischaemic pattern only: 1 adds a microvascular-obstruction core
    /// (10–25 % of the lesion, label `labels->mvo`) at the scar's
    /// sub-endocardial centre; needs `transmurality` ≥ 0.5 when one is
    /// given. 0 (default) or 1.
    pub mvo: i32,
    /// Lesion (scar + MVO) volume as a fraction 0–1 of the whole myocardium;
    /// a draw hits it within ±0.02. Negative (default -1): drawn at random,
    /// uniform 0.05–0.40 for the ischaemic pattern (at most 90 % of the
    /// culprit territory), 0.03–0.15 for the non-ischaemic ones; the CLAIM
    /// pattern then keeps the upstream threshold and whatever burden it
    /// gives. Must be finite.
    pub burden: f64,
    /// Ischaemic pattern only: how far the scar reaches from the
    /// endocardium, as a fraction 0–1 of the local wall thickness (1 =
    /// transmural); raised when the territory cannot otherwise hold the
    /// burden. Negative (default -1): drawn uniform in 0.3–1.0 (0.75–1.0
    /// with `mvo`). Must be finite.
    pub transmurality: f64,
    /// Label scheme of the input and the output map: NULL (the default) for
    /// EMIDEC without RV, else a scheme borrowed for the call. With an RV
    /// label, the parcellation finds the septum from it.
    pub labels: *const claim_label_scheme,
    /// Options of the AHA parcellation run before the draw: NULL (the
    /// default) for the defaults, else borrowed for the call. Its `labels`
    /// member is ignored (not read): `labels` above is used.
    pub aha: *const claim_aha_params,
}

impl Default for claim_smile_params {
    fn default() -> Self {
        claim_smile_params {
            struct_size: size_of::<claim_smile_params>() as u32,
            pattern: CLAIM_PATTERN_ISCHEMIC,
            territory: CLAIM_TERRITORY_ANY,
            mvo: 0,
            burden: -1.0,
            transmurality: -1.0,
            labels: std::ptr::null(),
            aha: std::ptr::null(),
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers, doubles and raw
// pointers only, all valid for any bit pattern.
unsafe impl CStruct for claim_smile_params {
    const C_NAME: &'static str = "claim_smile_params";
    const FIRST_RELEASE_SIZE: usize = 48;
    fn with_struct_size(self, size: u32) -> Self {
        claim_smile_params {
            struct_size: size,
            ..self
        }
    }
}

/// A fraction field: negative finite = `None` (draw it), [0, 1] = `Some`,
/// anything else refused naming the field.
fn optional_fraction(value: f64, name: &str, of_what: &str) -> Result<Option<f64>> {
    if !value.is_finite() || value > 1.0 {
        return Err(Error::invalid(format!(
            "{name}: expected a fraction of the {of_what} in [0, 1], or a negative value to draw \
             it at random, got {value}"
        )));
    }
    Ok((value >= 0.0).then_some(value))
}

/// The checked Rust parameters of a caller's `claim_smile_params` (already
/// copied; `name` names it).
///
/// # Safety
///
/// `value.labels` and `value.aha` must each be NULL or point to a struct
/// of its `struct_size` readable bytes.
pub(crate) unsafe fn smile_params_from_c(
    value: &claim_smile_params,
    name: &str,
) -> Result<SmileParams> {
    let mvo = match value.mvo {
        0 => false,
        1 => true,
        other => {
            return Err(Error::invalid(format!(
                "{name}.mvo: expected 0 or 1, got {other}"
            )))
        }
    };
    let params = SmileParams {
        pattern: pattern_from_c(value.pattern, &format!("{name}.pattern"))?,
        territory: territory_from_c(value.territory, &format!("{name}.territory"))?,
        burden: optional_fraction(value.burden, &format!("{name}.burden"), "myocardium")?,
        transmurality: optional_fraction(
            value.transmurality,
            &format!("{name}.transmurality"),
            "wall",
        )?,
        mvo,
        // SAFETY: forwarded contract.
        labels: unsafe { label_scheme_from_ptr(value.labels, &format!("{name}->labels")) }?,
        // SAFETY: forwarded contract; the aha labels are not read.
        aha: unsafe { aha_params_from_ptr(value.aha, &format!("{name}->aha"), false) }?,
    };
    params.validate().context(name)?;
    Ok(params)
}

/// Fills `*out` with the default draw: ischaemic pattern, territory and
/// burden and transmurality drawn at random (`CLAIM_TERRITORY_ANY`,
/// -1, -1), no MVO, EMIDEC labels without RV and default AHA options
/// (`labels` and `aha` NULL).
///
/// `size`: the caller's `sizeof(claim_smile_params)`; writes the first
/// `min(size, sizeof(claim_smile_params))` bytes and sets `struct_size` to
/// that number (nothing when `size` < 4). Does nothing when `out` is NULL.
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_smile_params_default(out: *mut claim_smile_params, size: usize) {
    boundary::call_infallible("claim_smile_params_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// What one SMILE draw did, besides the label map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct claim_smile_info {
    /// `sizeof(claim_smile_info)`, set by the caller.
    pub struct_size: u32,
    /// The pattern drawn (a `CLAIM_PATTERN_*` value).
    pub pattern: claim_pattern,
    /// Ischaemic pattern: the culprit artery, never `CLAIM_TERRITORY_ANY`;
    /// other patterns: `CLAIM_TERRITORY_ANY`.
    pub territory: claim_territory,
    /// Number of entries of `segments_chosen` in use (0–17).
    pub segments_chosen_count: u32,
    /// Segments (1–17) the draw centred the lesion on: the contiguous
    /// culprit segments (ischaemic), the preferred segment(s)
    /// (non-ischaemic) or the upstream pick (CLAIM). The lesion may reach
    /// beyond them. Entries past `segments_chosen_count` are 0.
    pub segments_chosen: [u8; CLAIM_AHA_SEGMENT_COUNT],
    /// The burden aimed at (asked or drawn), fraction 0–1; -1 for the CLAIM
    /// pattern without a burden.
    pub burden_target: f64,
    /// The burden reached: (scar + MVO) voxels / myocardium voxels.
    pub burden: f64,
    /// Ischaemic pattern: the transmurality used (fraction 0–1, raised when
    /// the territory could not hold the burden otherwise); -1 otherwise.
    pub transmurality: f64,
    /// Ischaemic pattern: fraction 0–1 of the lesion inside the culprit
    /// territory (below 1 only when the burden exceeds the territory);
    /// -1 otherwise.
    pub territory_fraction: f64,
    /// Voxels labelled scar.
    pub scar_voxels: u64,
    /// Voxels labelled MVO.
    pub mvo_voxels: u64,
    /// The seed of the draw.
    pub seed: u64,
}

impl Default for claim_smile_info {
    fn default() -> Self {
        claim_smile_info {
            struct_size: size_of::<claim_smile_info>() as u32,
            pattern: CLAIM_PATTERN_ISCHEMIC,
            territory: CLAIM_TERRITORY_ANY,
            segments_chosen_count: 0,
            segments_chosen: [0; CLAIM_AHA_SEGMENT_COUNT],
            burden_target: -1.0,
            burden: 0.0,
            transmurality: -1.0,
            territory_fraction: -1.0,
            scar_voxels: 0,
            mvo_voxels: 0,
            seed: 0,
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; integers and doubles only.
unsafe impl CStruct for claim_smile_info {
    const C_NAME: &'static str = "claim_smile_info";
    const FIRST_RELEASE_SIZE: usize = 96;
    fn with_struct_size(self, size: u32) -> Self {
        claim_smile_info {
            struct_size: size,
            ..self
        }
    }
}

impl From<&SmileResult> for claim_smile_info {
    fn from(result: &SmileResult) -> Self {
        let mut segments_chosen = [0u8; CLAIM_AHA_SEGMENT_COUNT];
        let mut count = 0u32;
        for (slot, segment) in segments_chosen.iter_mut().zip(&result.segments_chosen) {
            *slot = *segment;
            count += 1;
        }
        claim_smile_info {
            pattern: pattern_to_c(result.pattern),
            territory: result.territory.map_or(CLAIM_TERRITORY_ANY, territory_to_c),
            segments_chosen_count: count,
            segments_chosen,
            burden_target: result.burden_target.unwrap_or(-1.0),
            burden: result.burden,
            transmurality: result.transmurality.unwrap_or(-1.0),
            territory_fraction: result.territory_fraction.unwrap_or(-1.0),
            scar_voxels: result.scar_voxels as u64,
            mvo_voxels: result.mvo_voxels as u64,
            seed: result.seed,
            ..claim_smile_info::default()
        }
    }
}

/// Checked segment map of a caller: any dtype, values 0 or 1–17, converted
/// straight to u8.
///
/// # Safety
///
/// As [`labels_from_c`].
pub(crate) unsafe fn segments_from_c(ptr: *const claim_volume, name: &str) -> Result<Volume<u8>> {
    // SAFETY: forwarded contract.
    let image = unsafe { image_from_c(ptr, name) }?;
    image.to_segments().context(name)
}

/// The values a draw may write: every label of the scheme.
fn scheme_labels(scheme: &LabelScheme) -> Vec<i32> {
    let mut labels = vec![
        0,
        scheme.lv_cavity,
        scheme.myocardium,
        scheme.scar,
        scheme.mvo,
    ];
    labels.extend(scheme.rv);
    labels
}

/// Checks the caller's output volume for a draw from a map of `dims` in
/// `scheme`: before the work, so a buffer that cannot take the result
/// fails fast.
///
/// # Safety
///
/// `out_labels` as in `claim_smile_generate`.
unsafe fn check_draw_output(
    out_labels: *mut claim_volume,
    dims: [usize; 3],
    dims_source: &str,
    scheme: &LabelScheme,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let out = unsafe { out_volume_from_c(out_labels, "out_labels") }?;
    out.expect_dims(dims, dims_source)?;
    out.expect_holds(&scheme_labels(scheme), "the label scheme")
}

/// Writes the label map of one draw (the box `placement` of the map) into
/// the caller's output volume.
///
/// # Safety
///
/// `out_labels` as in `claim_smile_generate`.
unsafe fn write_draw(
    labels: Volume<i32>,
    placement: &CropPlacement,
    out_labels: *mut claim_volume,
    dims_source: &str,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let out = unsafe { out_volume_from_c(out_labels, "out_labels") }?;
    out.write_in_box(&Image::I32(labels), placement, dims_source)
}

/// Draws one scar mask into a copy of a label map: parcellates the LV into
/// the AHA segments, then writes scar (and MVO) labels on myocardium voxels
/// in the pattern, territory and burden of `params`.
///
/// `labels`: the label map in `params->labels`' scheme; any dtype (float
/// labels must be integral); borrowed. It must hold myocardium and LV
/// cavity (the ischaemic wavefront starts at the endocardium), and no label
/// the scheme does not name. `params`: see `claim_smile_params`; borrowed.
/// `seed`: every random choice follows from it: the same seed, input and
/// parameters give the same mask on every run, machine and thread.
/// `out_labels`: caller's volume with the dims of `labels`, any dtype that
/// holds the scheme's labels; receives the map in the input's scheme and
/// the geometry of `labels`. It may be the same buffer as `labels` (the
/// input is copied first).
///
/// On failure `out_labels` is left untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, bad
/// volume, a parameter out of range, e.g. `burden` above 1 or NaN; labels
/// outside the scheme; no myocardium; no LV cavity; dims of `out_labels`
/// ≠ dims of `labels`; a label that does not fit the output dtype),
/// `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe. For many draws of one heart use
/// `claim_smile_context_create`, which parcellates once.
#[no_mangle]
pub extern "C" fn claim_smile_generate(
    labels: *const claim_volume,
    params: *const claim_smile_params,
    seed: u64,
    out_labels: *mut claim_volume,
) -> claim_status {
    boundary::call("claim_smile_generate", || {
        // SAFETY: `params` is NULL or a claim_smile_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` and `aha` are NULL or structs of their
        // struct_size bytes (header contract).
        let params = unsafe { smile_params_from_c(&params, "params") }?;
        // SAFETY: `labels` is NULL or a claim_volume whose data holds dims
        // voxels of dtype (header contract).
        let labels = unsafe { labels_cropped_from_c(labels, "labels") }?;
        let placement = labels.placement;
        // SAFETY: `out_labels` is NULL or a writable claim_volume whose data
        // has room for dims voxels of dtype (header contract).
        unsafe { check_draw_output(out_labels, placement.full_dims, "labels", &params.labels) }?;
        let result = SmileContext::new_cropped(&labels, &params)?.draw_in_box(seed)?;
        // SAFETY: as above.
        unsafe { write_draw(result.labels, &placement, out_labels, "labels") }
    })
}

/// One heart prepared for many SMILE draws: its parcellation, depth map and
/// distances, computed once. Opaque.
///
/// Created by `claim_smile_context_create`, freed by
/// `claim_smile_context_free`. Immutable once created: several threads may
/// draw from one context at once (no locking), each seed giving the same
/// mask on any thread.
pub struct claim_smile_context {
    context: SmileContext,
    dims: [usize; 3],
}

/// Prepares draws of scar masks for one label map: checks `labels` and
/// `params` and parcellates once, so `claim_smile_context_draw` only draws.
///
/// `labels`: as in `claim_smile_generate`; copied, so the caller may free
/// or reuse it afterwards. `segments`: NULL to parcellate `labels` with
/// `params->aha`, or a segment map of the same dims and geometry (any
/// dtype, 0 = none, 1–17; only its values on the myocardium are used), e.g.
/// an atlas's own segments or the output of `claim_aha_parcellate`.
/// `params`: see `claim_smile_params`; copied. `out`: receives the new
/// context, owned by the caller and freed with `claim_smile_context_free`;
/// set to NULL on every failure.
///
/// Errors: as `claim_smile_generate`, plus a `segments` map of other dims or
/// geometry or with values outside 0–17. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_smile_context_create(
    labels: *const claim_volume,
    segments: *const claim_volume,
    params: *const claim_smile_params,
    out: *mut *mut claim_smile_context,
) -> claim_status {
    boundary::call("claim_smile_context_create", || {
        // SAFETY: `out` is NULL or writable for one pointer (header contract).
        let out = unsafe { OutHandle::new(out, "out") }?;
        // SAFETY: `params` is NULL or a claim_smile_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` and `aha` are NULL or structs of their
        // struct_size bytes (header contract).
        let params = unsafe { smile_params_from_c(&params, "params") }?;
        // SAFETY: `labels` is NULL or a claim_volume whose data holds dims
        // voxels of dtype (header contract).
        let labels = unsafe { labels_cropped_from_c(labels, "labels") }?;
        let dims = labels.placement.full_dims;
        let context = if segments.is_null() {
            SmileContext::new_cropped(&labels, &params)?
        } else {
            // SAFETY: a non-NULL `segments` is a claim_volume whose data
            // holds dims voxels of dtype (header contract).
            let segments = unsafe { segments_from_c(segments, "segments") }?;
            if segments.dims() != dims {
                return Err(Error::invalid(format!(
                    "segments.dims: expected {} (the dims of labels), got {}",
                    super::volume::dims_text(dims),
                    super::volume::dims_text(segments.dims())
                )));
            }
            SmileContext::with_segments_cropped(&labels, &segments, &params)?
        };
        out.set(Box::new(claim_smile_context { context, dims }));
        Ok(())
    })
}

/// Draws one scar mask from a prepared context.
///
/// `ctx`: borrowed; may be used by several threads at once. `seed`: as in
/// `claim_smile_generate` (a context and a seed give the same mask as
/// `claim_smile_generate` with the same input, parameters and seed).
/// `out_labels`: as in `claim_smile_generate` (dims of the context's
/// labels). `out_info`: NULL, or a caller's `claim_smile_info` with its
/// `struct_size` set, which receives what was drawn.
///
/// On failure `out_labels` and `out_info` are left untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL `ctx` or `out_labels`, bad
/// `struct_size`, dims of `out_labels` ≠ the context's, a label that does
/// not fit the output dtype), `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_smile_context_draw(
    ctx: *const claim_smile_context,
    seed: u64,
    out_labels: *mut claim_volume,
    out_info: *mut claim_smile_info,
) -> claim_status {
    boundary::call("claim_smile_context_draw", || {
        // SAFETY: `ctx` is NULL or a live handle (header contract).
        let ctx = unsafe { handle_ref(ctx, "ctx") }?;
        let scheme = ctx.context.params().labels;
        // SAFETY: `out_labels` is NULL or a writable claim_volume whose data
        // has room for dims voxels of dtype (header contract).
        unsafe { check_draw_output(out_labels, ctx.dims, "the context's labels", &scheme) }?;
        if !out_info.is_null() {
            // SAFETY: a non-NULL `out_info` is a claim_smile_info of
            // struct_size bytes (header contract).
            unsafe { check_out_struct(out_info.cast_const(), "out_info") }?;
        }
        let result = ctx.context.draw_in_box(seed)?;
        let info = claim_smile_info::from(&result);
        let placement = ctx.context.placement();
        // SAFETY: as above.
        unsafe { write_draw(result.labels, placement, out_labels, "the context's labels") }?;
        if !out_info.is_null() {
            // SAFETY: a non-NULL `out_info` is writable for struct_size bytes.
            unsafe { write_struct(out_info, info, "out_info") }?;
        }
        Ok(())
    })
}

/// Frees a context. `ctx` may be NULL (nothing happens). Must not be called
/// while another call uses `ctx`, nor twice. Does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_smile_context_free(ctx: *mut claim_smile_context) {
    boundary::call_infallible("claim_smile_context_free", (), || {
        if !ctx.is_null() {
            // SAFETY: a non-NULL `ctx` was made by Box::into_raw in
            // OutHandle::set and is freed once (header contract).
            drop(unsafe { Box::from_raw(ctx) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::aha::tests::{small_heart, view, EMIDEC_WITH_RV};
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use crate::ffi::volume::{CLAIM_VOXEL_F32, CLAIM_VOXEL_I32, CLAIM_VOXEL_U8};
    use std::ptr::{null, null_mut};

    fn lad_params() -> claim_smile_params {
        claim_smile_params {
            territory: CLAIM_TERRITORY_LAD,
            burden: 0.2,
            labels: &EMIDEC_WITH_RV,
            ..claim_smile_params::default()
        }
    }

    /// `smile_params_from_c` on a value whose pointers are NULL or point to
    /// live values (statics and locals of these tests).
    fn convert(value: &claim_smile_params, name: &str) -> Result<SmileParams> {
        // SAFETY: the tests' `labels` and `aha` are NULL or live.
        unsafe { smile_params_from_c(value, name) }
    }

    /// The small heart in a field of view twice as wide and 6 slices
    /// deeper, the rest 0.
    fn heart_in_a_wide_field() -> Volume<i32> {
        let heart = small_heart();
        let [ni, nj, nk] = heart.dims();
        crate::testing::in_wide_field(&heart, [ni - 5, 3, 4], [2 * ni, 2 * nj, nk + 6])
    }

    /// Parcellation, draws (one-shot and from a context) and statistics of
    /// a map with a wide field of view work on the heart's box and give
    /// the whole map's results, 0 written outside the box.
    #[test]
    fn a_wide_field_gives_the_whole_maps_results() {
        use crate::ffi::aha::claim_aha_parcellate;
        use crate::ffi::stats::{claim_aha_segment_stats, claim_aha_segment_stats_measure};
        let whole = heart_in_a_wide_field();
        let mut voxels: Vec<u8> = whole.data.iter().map(|l| *l as u8).collect();
        let labels = view(&whole, &mut voxels, CLAIM_VOXEL_U8);
        let params = lad_params();
        let rust = convert(&params, "params").unwrap();

        let mut segments = vec![99u8; whole.len()];
        let mut out = view(&whole, &mut segments, CLAIM_VOXEL_U8);
        let aha = claim_aha_params {
            labels: &EMIDEC_WITH_RV,
            ..claim_aha_params::default()
        };
        assert_eq!(
            claim_aha_parcellate(&labels, &aha, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        let expected_segments =
            crate::smile::aha::aha_segments(&whole, &rust.aha_params()).unwrap();
        assert!(segments.iter().eq(expected_segments.data.iter()));

        let expected = SmileContext::new(&whole, &rust)
            .unwrap()
            .draw(11)
            .unwrap()
            .labels;
        let mut drawn = vec![99u8; whole.len()];
        let mut out = view(&whole, &mut drawn, CLAIM_VOXEL_U8);
        assert_eq!(
            claim_smile_generate(&labels, &params, 11, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        assert!(drawn
            .iter()
            .map(|l| i32::from(*l))
            .eq(expected.data.iter().copied()));

        let mut ctx = null_mut();
        assert_eq!(
            claim_smile_context_create(&labels, null(), &params, &mut ctx),
            CLAIM_OK
        );
        let mut from_context = vec![99i32; whole.len()];
        let mut out = view(&whole, &mut from_context, CLAIM_VOXEL_I32);
        let status = claim_smile_context_draw(ctx, 11, &mut out, null_mut());
        claim_smile_context_free(ctx);
        assert_eq!(status, CLAIM_OK, "{}", last_error());
        assert!(from_context.iter().eq(expected.data.iter()));
        assert_eq!(out.origin, {
            let mut c = claim_volume::default();
            crate::ffi::volume::set_geometry(&mut c, &whole.geometry);
            c.origin
        });

        let mut measured = claim_aha_segment_stats {
            struct_size: size_of::<claim_aha_segment_stats>() as u32,
            ..claim_aha_segment_stats::default()
        };
        let mut scarred: Vec<u8> = expected.data.iter().map(|l| *l as u8).collect();
        let scarred_view = view(&whole, &mut scarred, CLAIM_VOXEL_U8);
        assert_eq!(
            claim_aha_segment_stats_measure(&scarred_view, null(), &aha, &mut measured),
            CLAIM_OK,
            "{}",
            last_error()
        );
        let stats = crate::smile::stats::segment_stats(
            &expected,
            &expected_segments,
            &LabelScheme::EMIDEC_WITH_RV,
        )
        .unwrap();
        assert_eq!(measured, claim_aha_segment_stats::from(&stats));
    }

    #[test]
    fn defaults_match_the_rust_defaults_and_layout() {
        assert_eq!(size_of::<claim_smile_params>(), 48);
        assert_eq!(size_of::<claim_smile_info>(), 96);
        let mut p = claim_smile_params {
            struct_size: 0,
            burden: 0.5,
            ..claim_smile_params::default()
        };
        claim_smile_params_default(&mut p, size_of::<claim_smile_params>());
        assert_eq!(p.struct_size, 48);
        assert!(p.labels.is_null() && p.aha.is_null());
        assert_eq!(
            (p.pattern, p.territory, p.mvo, p.burden, p.transmurality),
            (CLAIM_PATTERN_ISCHEMIC, CLAIM_TERRITORY_ANY, 0, -1.0, -1.0)
        );
        assert_eq!(convert(&p, "params").unwrap(), SmileParams::default());
        claim_smile_params_default(null_mut(), 48);
    }

    /// The header promises concurrent draws from one context without locks.
    #[test]
    fn contexts_may_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<claim_smile_context>();
    }

    #[test]
    fn enum_codes_round_trip() {
        for pattern in Pattern::ALL {
            assert_eq!(pattern_from_c(pattern_to_c(pattern), "p").unwrap(), pattern);
        }
        for territory in [
            Territory::Any,
            Territory::Lad,
            Territory::Rca,
            Territory::Lcx,
        ] {
            assert_eq!(
                territory_from_c(territory_to_c(territory), "t").unwrap(),
                territory
            );
        }
    }

    #[test]
    fn conversion_maps_sentinels_and_names_bad_fields() {
        let p = convert(
            &claim_smile_params {
                pattern: CLAIM_PATTERN_ISCHEMIC,
                transmurality: 0.8,
                mvo: 1,
                aha: &claim_aha_params {
                    rotation_deg: 15.0,
                    ..claim_aha_params::default()
                },
                ..lad_params()
            },
            "params",
        )
        .unwrap();
        assert_eq!(p.territory, Territory::Lad);
        assert_eq!(
            (p.burden, p.transmurality, p.mvo),
            (Some(0.2), Some(0.8), true)
        );
        assert_eq!(p.labels, LabelScheme::EMIDEC_WITH_RV);
        assert_eq!(p.aha_params().labels, LabelScheme::EMIDEC_WITH_RV);
        assert_eq!(p.aha.rotation_deg, 15.0);
        let drawn = convert(
            &claim_smile_params {
                burden: -0.5,
                transmurality: -3.0,
                ..lad_params()
            },
            "params",
        )
        .unwrap();
        assert_eq!((drawn.burden, drawn.transmurality), (None, None));

        let base = lad_params();
        let bad_scheme = claim_label_scheme {
            scar: 2,
            ..EMIDEC_WITH_RV
        };
        let bad_aha = claim_aha_params {
            long_axis: [f64::NAN; 3],
            ..claim_aha_params::default()
        };
        let cases = [
            (
                claim_smile_params {
                    burden: 1.5,
                    ..base
                },
                "params.burden: expected a fraction of the myocardium in [0, 1], or a negative \
                 value to draw it at random, got 1.5",
            ),
            (
                claim_smile_params {
                    burden: f64::NAN,
                    ..base
                },
                "params.burden: expected a fraction of the myocardium in [0, 1], or a negative \
                 value to draw it at random, got NaN",
            ),
            (
                claim_smile_params {
                    burden: f64::NEG_INFINITY,
                    ..base
                },
                "got -inf",
            ),
            (
                claim_smile_params {
                    transmurality: 2.0,
                    ..base
                },
                "params.transmurality: expected a fraction of the wall",
            ),
            (
                claim_smile_params { mvo: 2, ..base },
                "params.mvo: expected 0 or 1, got 2",
            ),
            (
                claim_smile_params { pattern: 5, ..base },
                "params.pattern: expected a CLAIM_PATTERN_* value (0..=4), got 5",
            ),
            (
                claim_smile_params {
                    territory: -1,
                    ..base
                },
                "params.territory: expected a CLAIM_TERRITORY_* value (0..=3), got -1",
            ),
            (
                claim_smile_params {
                    pattern: CLAIM_PATTERN_MIDWALL,
                    ..base
                },
                "params: SMILE territory applies to the ischemic pattern only",
            ),
            (
                claim_smile_params {
                    labels: &bad_scheme,
                    ..base
                },
                "params->labels: label scheme",
            ),
            (
                claim_smile_params {
                    aha: &bad_aha,
                    ..base
                },
                "params->aha.long_axis",
            ),
        ];
        for (value, expected) in cases {
            let msg = convert(&value, "params").unwrap_err().to_string();
            assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        }
    }

    #[test]
    fn segment_maps_accept_0_to_17_in_any_dtype() {
        let heart = small_heart();
        let mut values = vec![17.0f32; heart.len()];
        let v = view(&heart, &mut values, CLAIM_VOXEL_F32);
        // SAFETY: `v` describes the live `values`.
        let s = unsafe { segments_from_c(&v, "segments") }.unwrap();
        assert!(s.data.iter().all(|x| *x == 17));
        values[5] = 18.0;
        let v = view(&heart, &mut values, CLAIM_VOXEL_F32);
        // SAFETY: as above.
        let msg = unsafe { segments_from_c(&v, "segments") }
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(
                "segments: expected 0 (no segment) or AHA segments 1–17, got 18 at voxel #5"
            ),
            "{msg}"
        );
    }

    #[test]
    fn generate_matches_the_rust_api_and_allows_aliasing() {
        let heart = small_heart();
        let params = lad_params();
        let mut input: Vec<i16> = heart.data.iter().map(|l| *l as i16).collect();
        let labels = view(&heart, &mut input, super::super::volume::CLAIM_VOXEL_I16);
        let mut output = vec![0u8; heart.len()];
        let mut out = view(&heart, &mut output, CLAIM_VOXEL_U8);
        assert_eq!(
            claim_smile_generate(&labels, &params, 7, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        let rust = crate::smile::generate(&heart, &convert(&params, "params").unwrap(), 7).unwrap();
        assert!(output
            .iter()
            .zip(rust.labels.data.iter())
            .all(|(a, b)| i32::from(*a) == *b));
        assert!((rust.burden - 0.2).abs() <= 0.02, "{}", rust.burden);

        // In place, through the same struct: same result.
        let mut in_place = input.clone();
        let shared = view(&heart, &mut in_place, super::super::volume::CLAIM_VOXEL_I16);
        let mut shared_out = shared;
        assert_eq!(
            claim_smile_generate(&shared, &params, 7, &mut shared_out),
            CLAIM_OK
        );
        assert!(in_place
            .iter()
            .zip(&output)
            .all(|(a, b)| *a == i16::from(*b)));

        // A context draws the same mask and reports what it drew.
        let mut ctx: *mut claim_smile_context = null_mut();
        assert_eq!(
            claim_smile_context_create(&labels, null(), &params, &mut ctx),
            CLAIM_OK
        );
        let mut again = vec![0i32; heart.len()];
        let mut out_again = view(&heart, &mut again, CLAIM_VOXEL_I32);
        let mut info = claim_smile_info {
            struct_size: size_of::<claim_smile_info>() as u32,
            ..claim_smile_info::default()
        };
        assert_eq!(
            claim_smile_context_draw(ctx, 7, &mut out_again, &mut info),
            CLAIM_OK
        );
        assert!(again.iter().zip(&output).all(|(a, b)| *a == i32::from(*b)));
        assert_eq!(info, claim_smile_info::from(&rust));
        assert_eq!(info.territory, CLAIM_TERRITORY_LAD);
        assert_eq!(info.seed, 7);
        assert!(info.segments_chosen_count >= 1);
        let chosen = &info.segments_chosen[..info.segments_chosen_count as usize];
        assert!(chosen.iter().all(|s| Territory::Lad.contains(*s)));
        assert_eq!(
            claim_smile_context_draw(ctx, 8, &mut out_again, null_mut()),
            CLAIM_OK
        );
        assert!(again.iter().zip(&output).any(|(a, b)| *a != i32::from(*b)));
        claim_smile_context_free(ctx);
        claim_smile_context_free(null_mut());
    }

    #[test]
    fn refusals_leave_outputs_untouched() {
        let heart = small_heart();
        let base = lad_params();
        let mut input: Vec<u8> = heart.data.iter().map(|l| *l as u8).collect();
        let labels = view(&heart, &mut input, CLAIM_VOXEL_U8);
        let mut output = vec![0xABu8; heart.len()];
        let mut out = view(&heart, &mut output, CLAIM_VOXEL_U8);

        let expect_refused = |status: claim_status, expected: &str| {
            assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT, "{expected}");
            let msg = last_error();
            assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        };
        expect_refused(
            claim_smile_generate(null(), &base, 1, &mut out),
            "labels must not be NULL",
        );
        expect_refused(
            claim_smile_generate(&labels, null(), 1, &mut out),
            "params must not be NULL",
        );
        expect_refused(
            claim_smile_generate(&labels, &base, 1, null_mut()),
            "out_labels must not be NULL",
        );
        let size_unset = claim_smile_params {
            struct_size: 0,
            ..base
        };
        expect_refused(
            claim_smile_generate(&labels, &size_unset, 1, &mut out),
            "params.struct_size: expected at least 48",
        );
        let too_much = claim_smile_params {
            burden: 1.5,
            ..base
        };
        expect_refused(
            claim_smile_generate(&labels, &too_much, 1, &mut out),
            "params.burden",
        );
        let no_rv = claim_smile_params {
            labels: null(),
            ..base
        };
        expect_refused(
            claim_smile_generate(&labels, &no_rv, 1, &mut out),
            "does not name",
        );
        let mut small = [0xABu8; 8];
        let mut wrong = claim_volume {
            dims: [2, 2, 2],
            data: small.as_mut_ptr().cast(),
            ..out
        };
        expect_refused(
            claim_smile_generate(&labels, &base, 1, &mut wrong),
            "out_labels.dims: expected 64×64×12 (the dims of labels), got 2×2×2",
        );
        assert_eq!(small, [0xAB; 8]);

        // A u8 output cannot take a scheme with label 300: refused up front.
        let wide_scheme = claim_label_scheme {
            rv: 300,
            ..EMIDEC_WITH_RV
        };
        let wide = claim_smile_params {
            labels: &wide_scheme,
            ..base
        };
        expect_refused(
            claim_smile_generate(&labels, &wide, 1, &mut out),
            "out_labels.voxel_type: CLAIM_VOXEL_U8 cannot hold the value 300 of the label scheme",
        );

        // No myocardium: cavity and background only.
        let mut hollow: Vec<u8> = heart
            .data
            .iter()
            .map(|l| if *l == 2 { 1 } else { *l as u8 })
            .collect();
        let hollow_view = view(&heart, &mut hollow, CLAIM_VOXEL_U8);
        expect_refused(
            claim_smile_generate(&hollow_view, &base, 1, &mut out),
            "myocardium",
        );
        assert!(output.iter().all(|v| *v == 0xAB));

        // Contexts: bad segments and bad info structs.
        let mut ctx: *mut claim_smile_context = std::ptr::NonNull::dangling().as_ptr();
        let mut segments = vec![0u8; 8];
        let seg_view = claim_volume {
            dims: [2, 2, 2],
            data: segments.as_mut_ptr().cast(),
            ..labels
        };
        expect_refused(
            claim_smile_context_create(&labels, &seg_view, &base, &mut ctx),
            "segments.dims: expected 64×64×12 (the dims of labels), got 2×2×2",
        );
        assert!(ctx.is_null());
        assert_eq!(
            claim_smile_context_create(&labels, null(), &base, &mut ctx),
            CLAIM_OK
        );
        let mut info = claim_smile_info {
            struct_size: 4,
            seed: 99,
            ..claim_smile_info::default()
        };
        expect_refused(
            claim_smile_context_draw(ctx, 1, &mut out, &mut info),
            "out_info.struct_size: expected at least 96",
        );
        assert_eq!(info.seed, 99);
        assert!(output.iter().all(|v| *v == 0xAB));
        expect_refused(
            claim_smile_context_draw(null(), 1, &mut out, null_mut()),
            "ctx must not be NULL",
        );
        claim_smile_context_free(ctx);
    }
}

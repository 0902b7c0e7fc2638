//! `claim_aha_params` and `claim_aha_parcellate`: the AHA 17-segment
//! parcellation of [`crate::smile::aha`].

use super::args::{check_struct_size, read_optional_struct, read_struct, write_default, CStruct};
use super::boundary;
use super::labels::{claim_label_scheme, label_scheme_from_ptr};
use super::status::claim_status;
use super::volume::{claim_volume, labels_cropped_from_c, out_volume_from_c};
use crate::error::{Error, Result, ResultExt};
use crate::smile::aha::{parcellate_cropped, AhaParams};
use crate::volume::Image;
use std::mem::size_of;

/// Number of AHA segments: 1–16 in the basal, mid and apical rings, 17 the
/// apex cap.
pub const CLAIM_AHA_SEGMENT_COUNT: usize = 17;

/// Options of the AHA 17-segment parcellation (Cerqueira et al.,
/// Circulation 2002). Initialise with `CLAIM_DEFAULT(claim_aha_params, &p)`
/// (`claim_aha_params_default(&p, sizeof p)`) and change what differs.
///
/// The long axis, levels and sectors are found from the label map alone, in
/// LPS world millimetres through the volume's geometry, so any orientation
/// and slice thickness works. With an RV label (`labels->rv` ≠ -1) present in
/// the map, the septum is where the RV touches the LV and segments 1|2 and
/// 3|4 start at the RV insertion points; without one the septum is
/// approximated from the patient orientation in the geometry: the AHA wall
/// names (septum → patient right, anterior → front, inferior → feet) are
/// fitted to the body axes projected on the short-axis plane, then
/// `rotation_deg` is added. Give the RV for clinical use.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct claim_aha_params {
    /// `sizeof(claim_aha_params)`, set by `claim_aha_params_default()`.
    pub struct_size: u32,
    /// Which label is which structure: NULL (the default) for EMIDEC
    /// without RV, else a scheme borrowed for the call (the library keeps
    /// no pointer to it).
    pub labels: *const claim_label_scheme,
    /// Extra rotation of the angular origin in degrees, counter-clockwise as
    /// seen from the apex (the bull's-eye view). Finite; default 0.
    pub rotation_deg: f64,
    /// Long-axis direction in LPS (apex → base, any length), e.g. the normal
    /// of a short-axis stack, used instead of estimating it from the shape.
    /// All three 0 (the default) means "estimate it"; otherwise finite and
    /// not all 0.
    pub long_axis: [f64; 3],
}

impl Default for claim_aha_params {
    fn default() -> Self {
        claim_aha_params {
            struct_size: size_of::<claim_aha_params>() as u32,
            labels: std::ptr::null(),
            rotation_deg: 0.0,
            long_axis: [0.0; 3],
        }
    }
}

// SAFETY: repr(C), starts with u32 struct_size; an integer, a raw pointer
// and doubles, all valid for any bit pattern.
unsafe impl CStruct for claim_aha_params {
    const C_NAME: &'static str = "claim_aha_params";
    const FIRST_RELEASE_SIZE: usize = 48;
    fn with_struct_size(self, size: u32) -> Self {
        claim_aha_params {
            struct_size: size,
            ..self
        }
    }
}

/// The checked Rust parameters of a caller's `claim_aha_params` (already
/// copied; `name` names it, e.g. `"params"` or `"params->aha"`).
/// `check_labels` is false where the caller's `labels` member is documented
/// as ignored (inside `claim_smile_params`): it is then not even read.
///
/// # Safety
///
/// With `check_labels`, `value.labels` must be NULL or point to a
/// `claim_label_scheme` of `struct_size` readable bytes.
pub(crate) unsafe fn aha_params_from_c(
    value: &claim_aha_params,
    name: &str,
    check_labels: bool,
) -> Result<AhaParams> {
    check_struct_size::<claim_aha_params>(value.struct_size, name)?;
    let labels = if check_labels {
        // SAFETY: forwarded contract.
        unsafe { label_scheme_from_ptr(value.labels, &format!("{name}->labels")) }?
    } else {
        AhaParams::default().labels
    };
    if !value.rotation_deg.is_finite() {
        return Err(Error::invalid(format!(
            "{name}.rotation_deg: expected a finite angle in degrees, got {}",
            value.rotation_deg
        )));
    }
    let axis = value.long_axis;
    if axis.iter().any(|c| !c.is_finite()) {
        return Err(Error::invalid(format!(
            "{name}.long_axis: expected finite components (all 0 to estimate it), got {axis:?}"
        )));
    }
    let long_axis = (axis != [0.0; 3]).then_some(axis);
    let params = AhaParams {
        labels,
        rotation_deg: value.rotation_deg,
        long_axis,
    };
    params.validate().context(name)?;
    Ok(params)
}

/// Reads the caller's optional `claim_aha_params` pointer (NULL: the
/// defaults) and checks it; see [`aha_params_from_c`].
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_aha_params` of `struct_size`
/// readable bytes (and, with `check_labels`, its `labels` as there).
pub(crate) unsafe fn aha_params_from_ptr(
    ptr: *const claim_aha_params,
    name: &str,
    check_labels: bool,
) -> Result<AhaParams> {
    // SAFETY: forwarded contract.
    let value = unsafe { read_optional_struct(ptr, name) }?;
    // SAFETY: forwarded contract.
    unsafe { aha_params_from_c(&value, name, check_labels) }
}

/// Fills `*out` with the default AHA options: EMIDEC labels without RV
/// (`labels` NULL), rotation 0, long axis estimated.
///
/// `size`: the caller's `sizeof(claim_aha_params)`; writes the first
/// `min(size, sizeof(claim_aha_params))` bytes and sets `struct_size` to
/// that number (nothing when `size` < 4), so a caller built against an
/// older, smaller struct is never overrun. Does nothing when `out` is NULL.
/// Thread-safe; does not change `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_aha_params_default(out: *mut claim_aha_params, size: usize) {
    boundary::call_infallible("claim_aha_params_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

/// Parcellates the LV myocardium of a label map into the 17 AHA segments.
///
/// `labels`: the label map in `params->labels`' scheme; any voxel type
/// (float labels must be integral); borrowed for the call. It must hold
/// myocardium and LV cavity, and no label the scheme does not name.
/// `params`: see `claim_aha_params`; borrowed.
/// `out_segments`: caller's volume with the dims of `labels` and any
/// voxel type (`CLAIM_VOXEL_U8`
/// suggested); receives 0 outside the myocardium and the segment 1–17 on
/// every myocardium voxel (healthy, scar and MVO labels), and its
/// spacing, origin and direction are set to those of `labels`. It may be
/// the same buffer as `labels` (the input is copied first).
///
/// On failure `out_segments` is left untouched.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL, bad `struct_size`, bad
/// volume or parameters, dims of `out_segments` ≠ dims of `labels`, labels
/// outside the scheme, no myocardium or no LV cavity, a degenerate LV),
/// `CLAIM_ERR_OUT_OF_MEMORY`. Thread-safe.
#[no_mangle]
pub extern "C" fn claim_aha_parcellate(
    labels: *const claim_volume,
    params: *const claim_aha_params,
    out_segments: *mut claim_volume,
) -> claim_status {
    boundary::call("claim_aha_parcellate", || {
        // SAFETY: `params` is NULL or a claim_aha_params of struct_size bytes.
        let params = unsafe { read_struct(params, "params") }?;
        // SAFETY: its `labels` is NULL or a scheme of struct_size bytes.
        let params = unsafe { aha_params_from_c(&params, "params", true) }?;
        // SAFETY: `labels` is NULL or a claim_volume whose data holds dims
        // voxels of dtype (header contract).
        let labels = unsafe { labels_cropped_from_c(labels, "labels") }?;
        // SAFETY: `out_segments` is NULL or a writable claim_volume whose data
        // has room for dims voxels of dtype (header contract).
        let out = unsafe { out_volume_from_c(out_segments, "out_segments") }?;
        out.expect_dims(labels.placement.full_dims, "labels")?;
        let segments = parcellate_cropped(&labels, &params)?.segments;
        out.write(&Image::U8(segments), "labels")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use crate::ffi::volume::{CLAIM_VOXEL_I16, CLAIM_VOXEL_U8};
    use crate::phantom::{self, PhantomParams};
    use crate::smile::aha::aha_segments;
    use crate::volume::{LabelScheme, Volume};
    use std::ptr::{null, null_mut};

    /// A small phantom heart (EMIDEC labels with RV = 5) without scar.
    pub(crate) fn small_heart() -> Volume<i32> {
        let params = PhantomParams {
            seed: 3,
            matrix_size: 64,
            slice_count: 12,
            pixel_spacing_mm: 2.5,
            slice_spacing_mm: 8.0,
            ..PhantomParams::default()
        };
        phantom::generate(&params).unwrap().labels
    }

    /// A borrowed view of `voxels` with the dims and geometry of `like`.
    pub(crate) fn view<T>(
        like: &Volume<i32>,
        voxels: &mut [T],
        dtype: super::super::volume::claim_voxel_type,
    ) -> claim_volume {
        let mut volume = claim_volume {
            voxel_type: dtype,
            dims: like.dims().map(|d| d as u64),
            data: voxels.as_mut_ptr().cast(),
            ..claim_volume::default()
        };
        super::super::volume::set_geometry(&mut volume, &like.geometry);
        volume
    }

    /// EMIDEC with RV = 5, for `labels` pointers in tests.
    pub(crate) static EMIDEC_WITH_RV: claim_label_scheme = claim_label_scheme {
        struct_size: 24,
        lv_cavity: 1,
        myocardium: 2,
        scar: 3,
        mvo: 4,
        rv: 5,
    };

    pub(crate) fn with_rv() -> claim_aha_params {
        claim_aha_params {
            labels: &EMIDEC_WITH_RV,
            ..claim_aha_params::default()
        }
    }

    /// `aha_params_from_c` on a value whose pointers are live (statics or
    /// NULL in these tests).
    fn convert(value: &claim_aha_params, name: &str, check_labels: bool) -> Result<AhaParams> {
        // SAFETY: the tests' `labels` are NULL or point to live schemes.
        unsafe { aha_params_from_c(value, name, check_labels) }
    }

    #[test]
    fn defaults_match_the_rust_defaults() {
        let mut p = claim_aha_params {
            struct_size: 0,
            rotation_deg: 9.0,
            long_axis: [1.0; 3],
            ..claim_aha_params::default()
        };
        claim_aha_params_default(&mut p, size_of::<claim_aha_params>());
        assert_eq!(p.struct_size as usize, size_of::<claim_aha_params>());
        assert_eq!(size_of::<claim_aha_params>(), 48);
        assert!(p.labels.is_null());
        assert_eq!(convert(&p, "params", true).unwrap(), AhaParams::default());
        claim_aha_params_default(null_mut(), 48);
    }

    #[test]
    fn conversion_checks_every_field_and_names_it() {
        static UNSET: claim_label_scheme = claim_label_scheme {
            struct_size: 0,
            lv_cavity: 1,
            myocardium: 2,
            scar: 3,
            mvo: 4,
            rv: 5,
        };
        let given = claim_aha_params {
            rotation_deg: 30.0,
            long_axis: [0.0, 0.0, 2.0],
            ..with_rv()
        };
        let p = convert(&given, "params", true).unwrap();
        assert_eq!(p.labels, LabelScheme::EMIDEC_WITH_RV);
        assert_eq!((p.rotation_deg, p.long_axis), (30.0, Some([0.0, 0.0, 2.0])));

        let cases = [
            (
                claim_aha_params {
                    rotation_deg: f64::NAN,
                    ..given
                },
                "params.rotation_deg: expected a finite angle in degrees, got NaN",
            ),
            (
                claim_aha_params {
                    long_axis: [0.0, f64::INFINITY, 0.0],
                    ..given
                },
                "params.long_axis: expected finite components",
            ),
            (
                claim_aha_params {
                    struct_size: 8,
                    ..given
                },
                "params.struct_size: expected at least 48",
            ),
            (
                claim_aha_params {
                    labels: &UNSET,
                    ..given
                },
                "params->labels.struct_size",
            ),
        ];
        for (value, expected) in cases {
            let msg = convert(&value, "params", true).unwrap_err().to_string();
            assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        }
        // Inside claim_smile_params the labels member is ignored.
        let unset_labels = claim_aha_params {
            labels: &UNSET,
            ..given
        };
        assert!(convert(&unset_labels, "params->aha", false).is_ok());
    }

    #[test]
    fn segments_a_phantom_heart_into_a_caller_buffer() {
        let heart = small_heart();
        let mut input: Vec<u8> = heart.data.iter().map(|l| *l as u8).collect();
        let labels = view(&heart, &mut input, CLAIM_VOXEL_U8);
        let mut segments = vec![-1i16; heart.len()];
        let mut out = view(&heart, &mut segments, CLAIM_VOXEL_I16);
        out.spacing = [0.0; 3];
        let params = with_rv();
        assert_eq!(
            claim_aha_parcellate(&labels, &params, &mut out),
            CLAIM_OK,
            "{}",
            last_error()
        );
        assert_eq!(out.spacing, heart.geometry.spacing, "geometry written");
        let expected = aha_segments(&heart, &convert(&params, "params", true).unwrap()).unwrap();
        for ((s, e), l) in segments
            .iter()
            .zip(expected.data.iter())
            .zip(heart.data.iter())
        {
            assert_eq!(*s, i16::from(*e));
            let myocardium = LabelScheme::EMIDEC_WITH_RV.is_myocardium(*l);
            assert_eq!(myocardium, (1..=17).contains(s), "label {l} segment {s}");
        }

        // The output may alias the input.
        let mut same = input.clone();
        let in_place = view(&heart, &mut same, CLAIM_VOXEL_U8);
        let mut out_place = in_place;
        assert_eq!(
            claim_aha_parcellate(&in_place, &params, &mut out_place),
            CLAIM_OK
        );
        assert!(same.iter().zip(&segments).all(|(a, b)| i16::from(*a) == *b));
    }

    #[test]
    fn refusals_leave_the_output_untouched() {
        let heart = small_heart();
        let mut input: Vec<u8> = heart.data.iter().map(|l| *l as u8).collect();
        let labels = view(&heart, &mut input, CLAIM_VOXEL_U8);
        let mut segments = vec![0xABu8; heart.len()];
        let mut out = view(&heart, &mut segments, CLAIM_VOXEL_U8);
        let params = with_rv();

        assert_eq!(
            claim_aha_parcellate(null(), &params, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("labels must not be NULL"));
        assert_eq!(
            claim_aha_parcellate(&labels, null(), &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("params must not be NULL"));
        assert_eq!(
            claim_aha_parcellate(&labels, &params, null_mut()),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out_segments must not be NULL"));

        // Without RV in the scheme, label 5 is unknown.
        let no_rv = claim_aha_params::default();
        assert_eq!(
            claim_aha_parcellate(&labels, &no_rv, &mut out),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains('5'), "{}", last_error());

        let mut small = [0xABu8; 8];
        let mut wrong = claim_volume {
            dims: [2, 2, 2],
            data: small.as_mut_ptr().cast(),
            ..out
        };
        assert_eq!(
            claim_aha_parcellate(&labels, &params, &mut wrong),
            CLAIM_ERR_INVALID_ARGUMENT
        );
        let msg = last_error();
        assert!(
            msg.contains("out_segments.dims: expected 64×64×12 (the dims of labels), got 2×2×2"),
            "{msg}"
        );
        assert_eq!(small, [0xAB; 8]);
        assert!(segments.iter().all(|s| *s == 0xAB));
    }
}

//! `claim_labels_evaluate_json`: the metrics of `claim eval` (Dice, HD95,
//! volumes, scar burden per structure and per AHA segment) of
//! [`crate::metrics`], returned as a JSON document.
//!
//! JSON, not a struct: the result is a list of structures and segments
//! with optional values and notes, which a flat C struct could only carry
//! by fixing its shape forever. Every binding has a JSON parser; the
//! document's keys are those of `claim eval --json` for one case.

use super::aha::{aha_params_from_ptr, claim_aha_params};
use super::args::copy_out_bytes;
use super::boundary;
use super::status::claim_status;
use super::volume::{claim_volume, image_from_c};
use crate::error::Error;
use crate::metrics::{evaluate_case_cropped, EvalOptions};
use crate::volume::{CroppedLabels, LABEL_CROP_MARGIN};
use std::ffi::c_char;

/// Compares the label map `prediction` with the reference `reference` and
/// writes the metrics as a NUL-terminated UTF-8 JSON object into the
/// caller's buffer: per structure (LV cavity, myocardium, scar, MVO, RV
/// when the scheme has one) Dice, HD95 and Hausdorff distance in mm,
/// voxels and mL of each map and their difference; the scar burden of the
/// whole myocardium and EMIDEC's percentage errors; the burden per AHA
/// segment of the reference's parcellation; notes for a reader (labels the
/// scheme does not name, why segment values are missing). The same numbers
/// as `claim eval --json`.
///
/// `prediction`, `reference`: label maps of equal dims and geometry
/// (spacing, origin, direction within 1e-3), any voxel type with integral
/// values; borrowed for the call. `params`: NULL for EMIDEC labels without
/// RV and no rotation, else its `labels` (the scheme of both maps) and
/// `rotation_deg` (of the AHA segments) are used; its `long_axis` must be
/// 0, 0, 0 (the reference's long axis is estimated). `buf`, `cap`,
/// `needed`: as `claim_bullseye_render_svg` (call with `buf` NULL and `cap`
/// 0 to learn the size, NUL included). A reference that cannot be
/// parcellated is not an error: its segment values are `null` and a note
/// says why.
///
/// Errors: `CLAIM_ERR_INVALID_ARGUMENT` (NULL maps or `needed`, bad
/// `struct_size`, bad volume or scheme, non-integral labels, dims or
/// geometry that differ, a non-zero `long_axis`, `buf` NULL with `cap` > 0,
/// `cap` smaller than needed), `CLAIM_ERR_OUT_OF_MEMORY` (maps over
/// `claim_max_voxels_get()` voxels). Thread-safe.
#[no_mangle]
pub extern "C" fn claim_labels_evaluate_json(
    prediction: *const claim_volume,
    reference: *const claim_volume,
    params: *const claim_aha_params,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> claim_status {
    boundary::call("claim_labels_evaluate_json", || {
        if needed.is_null() {
            return Err(Error::invalid("needed must not be NULL"));
        }
        // SAFETY: `params` is NULL or a claim_aha_params of struct_size
        // bytes whose `labels` is NULL or a scheme (header contract).
        let params = unsafe { aha_params_from_ptr(params, "params", true) }?;
        if params.long_axis.is_some() {
            return Err(Error::invalid(
                "params.long_axis: expected 0, 0, 0 (evaluation estimates the long axis from \
                 the reference)",
            ));
        }
        // SAFETY: each map is NULL or a claim_volume whose data holds dims
        // voxels of its type (header contract).
        let prediction = unsafe { image_from_c(prediction, "prediction") }?;
        // SAFETY: as above.
        let reference = unsafe { image_from_c(reference, "reference") }?;
        // Only the box of both maps' labelled voxels is widened to i32.
        let (prediction, reference) = CroppedLabels::pair_from_images(
            (&prediction, "prediction"),
            (&reference, "reference"),
            LABEL_CROP_MARGIN,
        )?;
        let options = EvalOptions {
            aha_rotation_deg: params.rotation_deg,
            ..EvalOptions::default()
        };
        let metrics = evaluate_case_cropped(&prediction, &reference, &params.labels, &options)?;
        let mut json = metrics.to_json()?.into_bytes();
        json.push(0);
        // SAFETY: `needed` is non-NULL; `buf` is NULL or writable for
        // `cap` bytes (header contract).
        unsafe { copy_out_bytes(&json, buf.cast(), cap, needed) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::aha::claim_aha_params_default;
    use crate::ffi::aha::tests::small_heart;
    use crate::ffi::boundary::last_error;
    use crate::ffi::status::{CLAIM_ERR_INVALID_ARGUMENT, CLAIM_OK};
    use crate::ffi::volume::{claim_volume, CLAIM_VOXEL_U8};
    use std::mem::size_of;

    fn view(dims: [usize; 3], voxels: &mut [u8]) -> claim_volume {
        claim_volume {
            struct_size: size_of::<claim_volume>() as u32,
            voxel_type: CLAIM_VOXEL_U8,
            dims: dims.map(|d| d as u64),
            spacing: [1.0, 1.0, 2.0],
            origin: [0.0; 3],
            direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            data: voxels.as_mut_ptr().cast(),
        }
    }

    fn evaluate(pred: &claim_volume, reference: &claim_volume) -> (i32, String) {
        let mut needed = 0usize;
        let status = claim_labels_evaluate_json(
            pred,
            reference,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            &mut needed,
        );
        if status != CLAIM_OK {
            return (status, last_error());
        }
        let mut buf = vec![0u8; needed];
        let status = claim_labels_evaluate_json(
            pred,
            reference,
            std::ptr::null(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut needed,
        );
        assert_eq!(status, CLAIM_OK, "{}", last_error());
        assert_eq!(buf.pop(), Some(0), "NUL-terminated");
        (status, String::from_utf8(buf).expect("UTF-8"))
    }

    #[test]
    fn identical_maps_have_dice_one_and_the_cli_keys() {
        let heart = small_heart();
        let dims = heart.dims();
        let mut a: Vec<u8> = heart.data.iter().map(|&l| l as u8).collect();
        let mut b = a.clone();
        let (status, json) = evaluate(&view(dims, &mut a), &view(dims, &mut b));
        assert_eq!(status, CLAIM_OK);
        let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let structures = doc["structures"].as_array().expect("structures");
        let myo = structures
            .iter()
            .find(|s| s["structure"] == "whole_myocardium")
            .expect("myocardium entry");
        assert_eq!(myo["dice"], 1.0);
        assert_eq!(myo["hd95_mm"], 0.0);
        assert!(doc["scar_burden"].is_object());
        assert_eq!(doc["dims"], serde_json::json!(dims));
    }

    #[test]
    fn a_shrunken_prediction_loses_dice() {
        let heart = small_heart();
        let dims = heart.dims();
        let mut reference: Vec<u8> = heart.data.iter().map(|&l| l as u8).collect();
        // Every other myocardium voxel becomes background.
        let mut pred = reference.clone();
        let mut flip = false;
        for v in pred.iter_mut().filter(|v| **v == 2) {
            if flip {
                *v = 0;
            }
            flip = !flip;
        }
        let (_, json) = evaluate(&view(dims, &mut pred), &view(dims, &mut reference));
        let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let myo = doc["structures"]
            .as_array()
            .expect("structures")
            .iter()
            .find(|s| s["structure"] == "whole_myocardium")
            .expect("myocardium entry")
            .clone();
        let dice = myo["dice"].as_f64().expect("dice");
        assert!((dice - 2.0 / 3.0).abs() < 0.01, "dice {dice}");
    }

    #[test]
    fn bad_inputs_are_refused_with_their_names() {
        let heart = small_heart();
        let dims = heart.dims();
        let mut a: Vec<u8> = heart.data.iter().map(|&l| l as u8).collect();
        let mut b = a.clone();
        let pred = view(dims, &mut a);
        let mut reference = view(dims, &mut b);
        reference.spacing[2] = 3.0;
        let (status, message) = evaluate(&pred, &reference);
        assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT);
        assert!(message.contains("claim_labels_evaluate_json"), "{message}");
        reference.spacing[2] = 2.0;

        let mut needed = 0usize;
        let status = claim_labels_evaluate_json(
            std::ptr::null(),
            &reference,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            &mut needed,
        );
        assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("prediction"), "{}", last_error());

        let mut params = claim_aha_params::default();
        claim_aha_params_default(&mut params, size_of::<claim_aha_params>());
        params.long_axis = [0.0, 0.0, 1.0];
        let status = claim_labels_evaluate_json(
            &pred,
            &reference,
            &params,
            std::ptr::null_mut(),
            0,
            &mut needed,
        );
        assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("long_axis"), "{}", last_error());

        // A buffer one byte short is refused and left untouched.
        let status = claim_labels_evaluate_json(
            &pred,
            &reference,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            &mut needed,
        );
        assert_eq!(status, CLAIM_OK);
        let mut buf = vec![0xAAu8; needed - 1];
        let status = claim_labels_evaluate_json(
            &pred,
            &reference,
            std::ptr::null(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut needed,
        );
        assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT);
        assert!(buf.iter().all(|&b| b == 0xAA));
        let status = claim_labels_evaluate_json(
            &pred,
            &reference,
            std::ptr::null(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        assert_eq!(status, CLAIM_ERR_INVALID_ARGUMENT);
    }
}

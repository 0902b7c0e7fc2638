//! Every status the header documents, provoked (issue "Reliability").
//!
//! `include/claim.h` lists under "Errors:" the `CLAIM_ERR_*` codes each
//! fallible function can return. This module parses those lists and holds,
//! for every documented (function, status) pair, a case: a call of the
//! Rust export with inputs that provoke that status, and a word the
//! message of `claim_last_error_message()` must contain. The coverage test
//! fails when a documented pair has no case (a newly documented status
//! needs one) and when a case provokes a pair the header does not list.
//!
//! Pairs that cannot be provoked on a GPU-less CPU build would go in
//! [`UNREACHABLE`], each with its reason; the list is asserted to be
//! exactly those pairs. (The first run found four statuses returned but
//! not documented — `claim_image_write`'s UNSUPPORTED for an axis over
//! NIfTI-1's 32767, and OUT_OF_MEMORY for volumes over the voxel limit in
//! `claim_labels_evaluate_json` and both histogram measures; the header
//! now lists them.)
//!
//! Out-of-memory cases never change the process-wide voxel limit (other
//! tests run in parallel): they pass volumes of 2048×1024×1024 voxels,
//! over the default limit of 2^28 (and under 2^32, above which dims are an
//! invalid argument), which every export refuses from the dims before
//! reading a voxel; tensors of 2^60 floats, which no allocator grants; or
//! plans asking for a window of more than 2^24 voxels.

use super::aha::tests::{small_heart, view, EMIDEC_WITH_RV};
use super::aha::{claim_aha_params, claim_aha_parcellate};
use super::diffusion::{
    claim_diffusion_info_get, claim_diffusion_load, claim_diffusion_model,
    claim_diffusion_predict_noise, claim_load_options, claim_tensor, CLAIM_DEVICE_CUDA,
    CLAIM_PRECISION_FP16,
};
use super::eval::claim_labels_evaluate_json;
use super::image::{
    claim_image, claim_image_create, claim_image_free, claim_image_read, claim_image_view,
    claim_image_write, claim_max_voxels_get, claim_max_voxels_set,
};
use super::segmentation::tests::two_channel_segmenter;
use super::segmentation::{
    claim_segmentation_params, claim_segmenter, claim_segmenter_info, claim_segmenter_info_get,
    claim_segmenter_load, claim_segmenter_options, claim_segmenter_predict_logits,
    claim_segmenter_segment,
};
use super::smile::{
    claim_smile_context, claim_smile_context_create, claim_smile_context_draw,
    claim_smile_context_free, claim_smile_generate, claim_smile_params,
};
use super::stats::{
    claim_aha_segment_stats, claim_aha_segment_stats_measure, claim_bullseye_options,
    claim_bullseye_render_png, claim_bullseye_render_svg,
};
use super::status::*;
use super::synthesis::{
    claim_diffusion_synthesize, claim_histogram_measure, claim_histogram_measure_channels,
    claim_synthesis_params,
};
use super::version::claim_build_info_get;
use super::volume::{claim_volume, CLAIM_VOXEL_F32, CLAIM_VOXEL_U8};
use crate::volume::Volume;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

const HEADER: &str = include_str!("../../include/claim.h");

// --- The header's promises -------------------------------------------------

/// The doc comment (`/** ... */`, without the ` * ` margins) right above
/// line `decl` of `lines`.
fn doc_comment_above<'a>(lines: &[&'a str], decl: usize, function: &str) -> Vec<&'a str> {
    assert!(
        decl > 0 && lines[decl - 1].trim() == "*/",
        "{function}: no doc comment right above its declaration"
    );
    let start = (0..decl - 1)
        .rev()
        .find(|&i| lines[i].trim() == "/**")
        .unwrap_or_else(|| panic!("{function}: unterminated doc comment"));
    lines[start + 1..decl - 1]
        .iter()
        .map(|l| {
            let l = l.trim_start();
            l.strip_prefix("* ")
                .or_else(|| l.strip_prefix('*'))
                .unwrap_or(l)
        })
        .collect()
}

/// The errors text of one doc comment: from "Errors:" to the end of its
/// paragraph, or (for functions documented as "errors as `claim_x`") the
/// paragraph saying so. `None` when the comment documents no errors.
fn errors_text(doc: &[&str]) -> Option<String> {
    let paragraphs: Vec<String> = doc
        .split(|l| l.trim().is_empty())
        .map(|p| p.join(" "))
        .collect();
    if let Some(p) = paragraphs.iter().find(|p| p.contains("Errors:")) {
        return Some(p[p.find("Errors:").unwrap()..].to_string());
    }
    paragraphs
        .into_iter()
        .find(|p| p.to_lowercase().contains("errors as `claim_"))
}

/// The `CLAIM_ERR_*` names in `text`.
fn status_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("CLAIM_ERR_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Functions whose errors are "as `claim_x`" (plus what is listed): `claim_x`.
fn errors_referenced(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .match_indices("as `claim_")
        .map(|(at, m)| {
            let name = &text[at + m.len() - "claim_".len()..];
            name[..name.find('`').unwrap()].to_string()
        })
        .collect()
}

/// For every `claim_status claim_*(...)` declaration of the header, the
/// statuses its doc comment's errors paragraph names (with those of any
/// function it refers to by "as `claim_x`").
fn documented_statuses(header: &str) -> BTreeMap<String, BTreeSet<String>> {
    let lines: Vec<&str> = header.lines().collect();
    let mut own = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("claim_status claim_") else {
            continue;
        };
        let function = format!("claim_{}", &rest[..rest.find('(').unwrap()]);
        let doc = doc_comment_above(&lines, i, &function);
        let text = errors_text(&doc)
            .unwrap_or_else(|| panic!("{function} returns claim_status but documents no errors"));
        own.insert(function, (status_names(&text), errors_referenced(&text)));
    }
    let resolve = |function: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![function.clone()];
        let mut statuses = BTreeSet::new();
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            let (names, refs) = own
                .get(&f)
                .unwrap_or_else(|| panic!("{function}: errors as `{f}`, which is not declared"));
            statuses.extend(names.iter().cloned());
            todo.extend(refs.iter().cloned());
        }
        statuses
    };
    own.keys().map(|f| (f.clone(), resolve(f))).collect()
}

fn status_name(status: claim_status) -> String {
    // SAFETY: claim_status_str returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(claim_status_str(status)) }
        .to_string_lossy()
        .into_owned()
}

// --- Cases --------------------------------------------------------------------

/// One call that must fail with `status` and a message naming the problem.
struct Case {
    function: &'static str,
    status: claim_status,
    /// Looked for, case-insensitively, in `claim_last_error_message()`.
    keyword: &'static str,
    /// Sets up, makes the call under test last (only `claim_*_free` may
    /// follow it) and returns its status.
    run: fn() -> claim_status,
}

const fn case(
    function: &'static str,
    status: claim_status,
    keyword: &'static str,
    run: fn() -> claim_status,
) -> Case {
    Case {
        function,
        status,
        keyword,
        run,
    }
}

/// Documented pairs that no input provokes on a CPU build without a GPU,
/// with the reason. Empty: CUDA requests fail with `CLAIM_ERR_DEVICE`
/// without a GPU, and no pair needs one.
const UNREACHABLE: &[(&str, &str, &str)] = &[];

/// A case for every documented (function, status) pair.
fn cases() -> Vec<Case> {
    vec![
        // An image with an axis over NIfTI-1's 32767 cannot be written.
        case(
            "claim_image_write",
            CLAIM_ERR_UNSUPPORTED,
            "NIfTI-1 limit of 32767",
            || {
                let dir = tempfile::tempdir().unwrap();
                let like = claim_volume {
                    dims: [40000, 1, 1],
                    ..claim_volume::default()
                };
                let mut img = null_mut();
                assert_eq!(
                    claim_image_create(&like, CLAIM_VOXEL_U8, &mut img),
                    CLAIM_OK
                );
                let path = c_path(&dir.path().join("wide.nii.gz"));
                let status = claim_image_write(img, path.as_ptr());
                claim_image_free(img);
                status
            },
        ),
        // Volumes over the voxel limit are refused as out of memory.
        case(
            "claim_labels_evaluate_json",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut needed = 0usize;
                claim_labels_evaluate_json(&huge, &huge, null(), null_mut(), 0, &mut needed)
            },
        ),
        case(
            "claim_histogram_measure",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut histogram = [0f32; 16];
                claim_histogram_measure(&huge, &huge, null(), 72, histogram.as_mut_ptr())
            },
        ),
        case(
            "claim_histogram_measure_channels",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut histogram = [0f32; 16];
                let mut length = 0u32;
                claim_histogram_measure_channels(
                    denoiser(),
                    &huge,
                    &huge,
                    null(),
                    histogram.as_mut_ptr(),
                    16,
                    &mut length,
                )
            },
        ),
        // claim_build_info_get
        case(
            "claim_build_info_get",
            CLAIM_ERR_INVALID_ARGUMENT,
            "out must not be NULL",
            || claim_build_info_get(null_mut()),
        ),
        // claim_max_voxels_set: refused, so the process-wide limit is unchanged.
        case(
            "claim_max_voxels_set",
            CLAIM_ERR_INVALID_ARGUMENT,
            "voxel limit 4294967297",
            || claim_max_voxels_set((1 << 32) + 1),
        ),
        // claim_image_read
        case(
            "claim_image_read",
            CLAIM_ERR_INVALID_ARGUMENT,
            "path must not be NULL",
            || {
                let mut img: *mut claim_image = null_mut();
                claim_image_read(null(), &mut img)
            },
        ),
        case("claim_image_read", CLAIM_ERR_IO, "missing.nii.gz", || {
            let dir = tempfile::tempdir().unwrap();
            let path = c_path(&dir.path().join("missing.nii.gz"));
            let mut img: *mut claim_image = null_mut();
            claim_image_read(path.as_ptr(), &mut img)
        }),
        case(
            "claim_image_read",
            CLAIM_ERR_FORMAT,
            "not a NIfTI file",
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("garbage.nii");
                std::fs::write(&path, vec![b'x'; 400]).unwrap();
                let mut img: *mut claim_image = null_mut();
                claim_image_read(c_path(&path).as_ptr(), &mut img)
            },
        ),
        case(
            "claim_image_read",
            CLAIM_ERR_OUT_OF_MEMORY,
            "2048×1024×1024",
            || {
                // A valid 2×2×2 header claiming 2048×1024×1024 voxels
                // (dim[1..=3], int16 at bytes 42, 44, 46): refused from the
                // header, before any voxel is read.
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("bomb.nii");
                let small = crate::volume::Image::U8(
                    Volume::from_vec([2, 2, 2], vec![0u8; 8], Default::default()).unwrap(),
                );
                let mut bytes = crate::io::nifti::write_image_to_bytes(&small, false).unwrap();
                for (at, d) in [(42, 2048i16), (44, 1024), (46, 1024)] {
                    bytes[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
                std::fs::write(&path, bytes).unwrap();
                let mut img: *mut claim_image = null_mut();
                claim_image_read(c_path(&path).as_ptr(), &mut img)
            },
        ),
        // claim_image_write
        case(
            "claim_image_write",
            CLAIM_ERR_INVALID_ARGUMENT,
            "path must not be NULL",
            || {
                let img = small_image();
                let status = claim_image_write(img, null());
                claim_image_free(img);
                status
            },
        ),
        case("claim_image_write", CLAIM_ERR_IO, "no-such-folder", || {
            let dir = tempfile::tempdir().unwrap();
            let path = c_path(&dir.path().join("no-such-folder/out.nii.gz"));
            let img = small_image();
            let status = claim_image_write(img, path.as_ptr());
            claim_image_free(img);
            status
        }),
        // claim_image_create
        case(
            "claim_image_create",
            CLAIM_ERR_INVALID_ARGUMENT,
            "dims must all be ≥ 1",
            || {
                let like = claim_volume {
                    dims: [4, 0, 4],
                    ..claim_volume::default()
                };
                let mut img: *mut claim_image = null_mut();
                claim_image_create(&like, CLAIM_VOXEL_U8, &mut img)
            },
        ),
        case(
            "claim_image_create",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let like = huge_volume(null_mut());
                let mut img: *mut claim_image = null_mut();
                claim_image_create(&like, CLAIM_VOXEL_F32, &mut img)
            },
        ),
        // claim_image_view
        case(
            "claim_image_view",
            CLAIM_ERR_INVALID_ARGUMENT,
            "out_view.struct_size",
            || {
                let img = small_image();
                let mut view = claim_volume {
                    struct_size: 8,
                    ..claim_volume::default()
                };
                let status = claim_image_view(img, &mut view);
                claim_image_free(img);
                status
            },
        ),
        // claim_aha_parcellate
        case(
            "claim_aha_parcellate",
            CLAIM_ERR_INVALID_ARGUMENT,
            "no myocardium",
            || {
                // An empty map: no myocardium to parcellate.
                let mut empty = [0u8; 64];
                let labels = plain_view([4, 4, 4], empty.as_mut_ptr().cast(), CLAIM_VOXEL_U8);
                let mut segments = [0u8; 64];
                let mut out = plain_view([4, 4, 4], segments.as_mut_ptr().cast(), CLAIM_VOXEL_U8);
                claim_aha_parcellate(&labels, &claim_aha_params::default(), &mut out)
            },
        ),
        case(
            "claim_aha_parcellate",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut out = huge;
                claim_aha_parcellate(&huge, &claim_aha_params::default(), &mut out)
            },
        ),
        // claim_smile_generate
        case(
            "claim_smile_generate",
            CLAIM_ERR_INVALID_ARGUMENT,
            "burden",
            || {
                let (_voxels, labels) = heart_u8();
                let params = claim_smile_params {
                    burden: 1.5,
                    labels: &EMIDEC_WITH_RV,
                    ..claim_smile_params::default()
                };
                let mut out = labels;
                claim_smile_generate(&labels, &params, 1, &mut out)
            },
        ),
        case(
            "claim_smile_generate",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut out = huge;
                claim_smile_generate(&huge, &claim_smile_params::default(), 1, &mut out)
            },
        ),
        // claim_smile_context_create
        case(
            "claim_smile_context_create",
            CLAIM_ERR_INVALID_ARGUMENT,
            "segments: expected 0",
            || {
                // A segment map with a value outside 0–17.
                let (_voxels, labels) = heart_u8();
                let mut bad = vec![18u8; heart().len()];
                let segments = view(heart(), &mut bad, CLAIM_VOXEL_U8);
                let params = smile_params_with_rv();
                let mut ctx: *mut claim_smile_context = null_mut();
                claim_smile_context_create(&labels, &segments, &params, &mut ctx)
            },
        ),
        case(
            "claim_smile_context_create",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut ctx: *mut claim_smile_context = null_mut();
                claim_smile_context_create(&huge, null(), &claim_smile_params::default(), &mut ctx)
            },
        ),
        // claim_smile_context_draw
        case(
            "claim_smile_context_draw",
            CLAIM_ERR_INVALID_ARGUMENT,
            "ctx must not be NULL",
            || {
                let (_voxels, mut labels) = heart_u8();
                claim_smile_context_draw(null(), 1, &mut labels, null_mut())
            },
        ),
        case(
            "claim_smile_context_draw",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let (_voxels, labels) = heart_u8();
                let params = smile_params_with_rv();
                let mut ctx: *mut claim_smile_context = null_mut();
                let made = claim_smile_context_create(&labels, null(), &params, &mut ctx);
                assert_eq!(made, CLAIM_OK, "{}", last_message());
                let mut buf = [0u32; 4];
                let mut huge = huge_volume(buf.as_mut_ptr().cast());
                let status = claim_smile_context_draw(ctx, 1, &mut huge, null_mut());
                claim_smile_context_free(ctx);
                status
            },
        ),
        // claim_aha_segment_stats_measure
        case(
            "claim_aha_segment_stats_measure",
            CLAIM_ERR_INVALID_ARGUMENT,
            "out must not be NULL",
            || {
                let (_voxels, labels) = heart_u8();
                let params = claim_aha_params {
                    labels: &EMIDEC_WITH_RV,
                    ..claim_aha_params::default()
                };
                claim_aha_segment_stats_measure(&labels, null(), &params, null_mut())
            },
        ),
        case(
            "claim_aha_segment_stats_measure",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut stats = claim_aha_segment_stats::default();
                claim_aha_segment_stats_measure(
                    &huge,
                    null(),
                    &claim_aha_params::default(),
                    &mut stats,
                )
            },
        ),
        // claim_bullseye_render_svg / _png
        case(
            "claim_bullseye_render_svg",
            CLAIM_ERR_INVALID_ARGUMENT,
            "cap",
            || {
                let mut buf = [0i8; 16];
                let mut needed = 0usize;
                claim_bullseye_render_svg(
                    &claim_aha_segment_stats::default(),
                    &claim_bullseye_options::default(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut needed,
                )
            },
        ),
        case(
            "claim_bullseye_render_png",
            CLAIM_ERR_INVALID_ARGUMENT,
            "scar_ml",
            || {
                let mut stats = claim_aha_segment_stats::default();
                stats.scar_ml[3] = -1.0;
                let mut needed = 0usize;
                claim_bullseye_render_png(
                    &stats,
                    &claim_bullseye_options::default(),
                    null_mut(),
                    0,
                    &mut needed,
                )
            },
        ),
        // claim_labels_evaluate_json
        case(
            "claim_labels_evaluate_json",
            CLAIM_ERR_INVALID_ARGUMENT,
            "dims [4, 4, 4] differ",
            || {
                let mut a = [2u8; 64];
                let mut b = [2u8; 32];
                let prediction = plain_view([4, 4, 4], a.as_mut_ptr().cast(), CLAIM_VOXEL_U8);
                let reference = plain_view([4, 4, 2], b.as_mut_ptr().cast(), CLAIM_VOXEL_U8);
                let mut needed = 0usize;
                claim_labels_evaluate_json(
                    &prediction,
                    &reference,
                    null(),
                    null_mut(),
                    0,
                    &mut needed,
                )
            },
        ),
        // claim_diffusion_load
        case(
            "claim_diffusion_load",
            CLAIM_ERR_INVALID_ARGUMENT,
            "weights_path must not be NULL",
            || {
                let mut m: *mut claim_diffusion_model = null_mut();
                claim_diffusion_load(null(), null(), &mut m)
            },
        ),
        case(
            "claim_diffusion_load",
            CLAIM_ERR_IO,
            "missing.safetensors",
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = c_path(&dir.path().join("missing.safetensors"));
                let mut m: *mut claim_diffusion_model = null_mut();
                claim_diffusion_load(path.as_ptr(), null(), &mut m)
            },
        ),
        case(
            "claim_diffusion_load",
            CLAIM_ERR_FORMAT,
            "not a safetensors file",
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("garbage.safetensors");
                std::fs::write(&path, b"this is not a tensor file at all").unwrap();
                let mut m: *mut claim_diffusion_model = null_mut();
                claim_diffusion_load(c_path(&path).as_ptr(), null(), &mut m)
            },
        ),
        case(
            "claim_diffusion_load",
            CLAIM_ERR_MODEL,
            "missing tensor",
            || {
                // A safetensors file of the wrong tensors (a fixture's inputs).
                let path = fixture("denoiser/unet2d_io.safetensors");
                let mut m: *mut claim_diffusion_model = null_mut();
                claim_diffusion_load(path.as_ptr(), null(), &mut m)
            },
        ),
        case("claim_diffusion_load", CLAIM_ERR_DEVICE, "cuda", || {
            let mut m: *mut claim_diffusion_model = null_mut();
            claim_diffusion_load(fixture(DENOISER).as_ptr(), &cuda_99(), &mut m)
        }),
        case("claim_diffusion_load", CLAIM_ERR_UNSUPPORTED, "F16", || {
            let fp16 = claim_load_options {
                precision: CLAIM_PRECISION_FP16,
                ..claim_load_options::default()
            };
            let mut m: *mut claim_diffusion_model = null_mut();
            claim_diffusion_load(fixture(DENOISER).as_ptr(), &fp16, &mut m)
        }),
        // claim_diffusion_info_get
        case(
            "claim_diffusion_info_get",
            CLAIM_ERR_INVALID_ARGUMENT,
            "out must not be NULL",
            || claim_diffusion_info_get(denoiser(), null_mut()),
        ),
        // claim_diffusion_predict_noise
        case(
            "claim_diffusion_predict_noise",
            CLAIM_ERR_INVALID_ARGUMENT,
            "x.shape",
            || {
                // Rank 4 where [B, C, F, H, W] is expected.
                let mut data = [0f32; 64];
                let x = tensor(&[1, 1, 8, 8], data.as_mut_ptr());
                let mut out = x;
                let t = [0i64];
                claim_diffusion_predict_noise(denoiser(), &x, t.as_ptr(), null(), &mut out)
            },
        ),
        case(
            "claim_diffusion_predict_noise",
            CLAIM_ERR_OUT_OF_MEMORY,
            "cannot allocate",
            || {
                let mut data = [0f32; 4];
                let x = tensor(&[1, 1, 1, 1 << 30, 1 << 30], data.as_mut_ptr());
                let mut out = x;
                let t = [0i64];
                claim_diffusion_predict_noise(denoiser(), &x, t.as_ptr(), null(), &mut out)
            },
        ),
        // claim_diffusion_synthesize
        case(
            "claim_diffusion_synthesize",
            CLAIM_ERR_INVALID_ARGUMENT,
            "scar",
            || {
                // The heart has no scar to paint.
                let (_pixels, image) = heart_f32(heart());
                let (_voxels, labels) = heart_u8();
                let params = synthesis_params_with_rv();
                let mut out = image;
                claim_diffusion_synthesize(
                    denoiser(),
                    &image,
                    &labels,
                    &params,
                    None,
                    null_mut(),
                    &mut out,
                )
            },
        ),
        case(
            "claim_diffusion_synthesize",
            CLAIM_ERR_CANCELLED,
            "cancelled",
            || {
                let scarred = scarred_heart();
                let (_pixels, image) = heart_f32(scarred);
                let mut voxels: Vec<u8> = scarred.data.iter().map(|l| *l as u8).collect();
                let labels = view(scarred, &mut voxels, CLAIM_VOXEL_U8);
                let params = synthesis_params_with_rv();
                let mut out = image;
                let mut calls = 0u64;
                let status = claim_diffusion_synthesize(
                    denoiser(),
                    &image,
                    &labels,
                    &params,
                    Some(cancel),
                    (&mut calls as *mut u64).cast(),
                    &mut out,
                );
                assert_eq!(calls, 1, "cancelled at the first report");
                status
            },
        ),
        case(
            "claim_diffusion_synthesize",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut out = huge;
                claim_diffusion_synthesize(
                    denoiser(),
                    &huge,
                    &huge,
                    &claim_synthesis_params::default(),
                    None,
                    null_mut(),
                    &mut out,
                )
            },
        ),
        // claim_histogram_measure
        case(
            "claim_histogram_measure",
            CLAIM_ERR_INVALID_ARGUMENT,
            "crop",
            || {
                let scarred = scarred_heart();
                let (_pixels, image) = heart_f32(scarred);
                let mut voxels: Vec<u8> = scarred.data.iter().map(|l| *l as u8).collect();
                let labels = view(scarred, &mut voxels, CLAIM_VOXEL_U8);
                let mut histogram = [0f32; 16];
                claim_histogram_measure(&image, &labels, &EMIDEC_WITH_RV, 0, histogram.as_mut_ptr())
            },
        ),
        // claim_histogram_measure_channels
        case(
            "claim_histogram_measure_channels",
            CLAIM_ERR_INVALID_ARGUMENT,
            "capacity",
            || {
                let (_pixels, image) = heart_f32(heart());
                let (_voxels, labels) = heart_u8();
                let mut histogram = [0f32; 16];
                claim_histogram_measure_channels(
                    denoiser(),
                    &image,
                    &labels,
                    &synthesis_params_with_rv(),
                    histogram.as_mut_ptr(),
                    8,
                    null_mut(),
                )
            },
        ),
        // claim_segmenter_load
        case(
            "claim_segmenter_load",
            CLAIM_ERR_INVALID_ARGUMENT,
            "fold 7 not found",
            || {
                let mut options = claim_segmenter_options {
                    fold_count: 1,
                    ..claim_segmenter_options::default()
                };
                options.folds[0] = 7;
                let mut s: *mut claim_segmenter = null_mut();
                claim_segmenter_load(c_path(&results_2d()).as_ptr(), null(), &options, &mut s)
            },
        ),
        case(
            "claim_segmenter_load",
            CLAIM_ERR_IO,
            "no-such-model",
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = c_path(&dir.path().join("no-such-model"));
                let mut s: *mut claim_segmenter = null_mut();
                claim_segmenter_load(path.as_ptr(), null(), null(), &mut s)
            },
        ),
        case(
            "claim_segmenter_load",
            CLAIM_ERR_FORMAT,
            "plans.json",
            || load_edited_results(|plans| *plans = serde_json::json!("not plans")),
        ),
        case("claim_segmenter_load", CLAIM_ERR_MODEL, "fold 0", || {
            // Wider first stage than the checkpoint's weights.
            load_edited_results(|plans| {
                plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
                    ["features_per_stage"] = serde_json::json!([8, 8, 16, 16]);
            })
        }),
        case(
            "claim_segmenter_load",
            CLAIM_ERR_UNSUPPORTED,
            "ResidualEncoderUNet",
            || {
                load_edited_results(|plans| {
                    plans["configurations"]["2d"]["architecture"]["network_class_name"] = serde_json::json!(
                        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
                    );
                })
            },
        ),
        case("claim_segmenter_load", CLAIM_ERR_DEVICE, "cuda", || {
            let mut s: *mut claim_segmenter = null_mut();
            claim_segmenter_load(c_path(&results_2d()).as_ptr(), &cuda_99(), null(), &mut s)
        }),
        case(
            "claim_segmenter_load",
            CLAIM_ERR_OUT_OF_MEMORY,
            "patch_size",
            || {
                // 8192² voxels per window: over 2^24, refused before any
                // window is allocated.
                load_edited_results(|plans| {
                    plans["configurations"]["2d"]["patch_size"] = serde_json::json!([8192, 8192]);
                })
            },
        ),
        // claim_segmenter_info_get
        case(
            "claim_segmenter_info_get",
            CLAIM_ERR_INVALID_ARGUMENT,
            "out.struct_size",
            || {
                let mut info = claim_segmenter_info {
                    struct_size: 4,
                    ..claim_segmenter_info::default()
                };
                claim_segmenter_info_get(segmenter(), &mut info)
            },
        ),
        // claim_segmenter_predict_logits
        case(
            "claim_segmenter_predict_logits",
            CLAIM_ERR_INVALID_ARGUMENT,
            "x.shape[1]",
            || {
                let mut data = vec![0f32; 2 * 64 * 64];
                let x = tensor(&[1, 2, 64, 64], data.as_mut_ptr());
                let mut logits = vec![0f32; 5 * 64 * 64];
                let mut out = tensor(&[1, 5, 64, 64], logits.as_mut_ptr());
                claim_segmenter_predict_logits(segmenter(), &x, &mut out)
            },
        ),
        case(
            "claim_segmenter_predict_logits",
            CLAIM_ERR_OUT_OF_MEMORY,
            "cannot allocate",
            || {
                let mut data = [0f32; 4];
                let x = tensor(&[1, 1, 1 << 30, 1 << 30], data.as_mut_ptr());
                let mut out = x;
                claim_segmenter_predict_logits(segmenter(), &x, &mut out)
            },
        ),
        // claim_segmenter_segment
        case(
            "claim_segmenter_segment",
            CLAIM_ERR_INVALID_ARGUMENT,
            "step_size",
            || {
                let (_pixels, image) = heart_f32(heart());
                let params = claim_segmentation_params {
                    step_size: 0.0,
                    ..claim_segmentation_params::default()
                };
                let mut labels = vec![0u8; heart().len()];
                let mut out = view(heart(), &mut labels, CLAIM_VOXEL_U8);
                claim_segmenter_segment(segmenter(), &image, &params, None, null_mut(), &mut out)
            },
        ),
        case(
            "claim_segmenter_segment",
            CLAIM_ERR_UNSUPPORTED,
            "2 channels",
            || {
                let two = two_channel_segmenter(7);
                let (_pixels, image) = heart_f32(heart());
                let mut labels = vec![0u8; heart().len()];
                let mut out = view(heart(), &mut labels, CLAIM_VOXEL_U8);
                claim_segmenter_segment(
                    &two,
                    &image,
                    &claim_segmentation_params::default(),
                    None,
                    null_mut(),
                    &mut out,
                )
            },
        ),
        case(
            "claim_segmenter_segment",
            CLAIM_ERR_CANCELLED,
            "cancelled",
            || {
                let (_pixels, image) = heart_f32(heart());
                let mut labels = vec![0u8; heart().len()];
                let mut out = view(heart(), &mut labels, CLAIM_VOXEL_U8);
                let mut calls = 0u64;
                let status = claim_segmenter_segment(
                    segmenter(),
                    &image,
                    &claim_segmentation_params::default(),
                    Some(cancel),
                    (&mut calls as *mut u64).cast(),
                    &mut out,
                );
                assert_eq!(calls, 1, "cancelled at the first report");
                status
            },
        ),
        case(
            "claim_segmenter_segment",
            CLAIM_ERR_OUT_OF_MEMORY,
            "exceed the limit",
            || {
                let mut buf = [0u32; 4];
                let huge = huge_volume(buf.as_mut_ptr().cast());
                let mut out = huge;
                claim_segmenter_segment(
                    segmenter(),
                    &huge,
                    &claim_segmentation_params::default(),
                    None,
                    null_mut(),
                    &mut out,
                )
            },
        ),
    ]
}

// --- Inputs ---------------------------------------------------------------------

const DENOISER: &str = "denoiser/unet2d_weights.safetensors";

fn c_path(path: &Path) -> CString {
    CString::new(path.to_str().unwrap()).unwrap()
}

/// A committed fixture under `tests/fixtures`, as a C string.
fn fixture(relative: &str) -> CString {
    c_path(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(relative),
    )
}

/// The committed 2-D nnU-Net results folder (two folds, tiny network).
fn results_2d() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nnunet/Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d")
}

fn last_message() -> String {
    // SAFETY: never NULL; valid until the next status-returning call here.
    unsafe { CStr::from_ptr(claim_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A raw handle kept for the whole test process.
struct Shared<T>(*mut T);
// SAFETY: the handles are immutable once loaded and documented as usable
// from several threads at once; they are never freed.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

/// The tiny denoiser fixture (dim 8, 3 levels, one channel, cond 16).
fn denoiser() -> *const claim_diffusion_model {
    static MODEL: OnceLock<Shared<claim_diffusion_model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut m = null_mut();
            let status = claim_diffusion_load(fixture(DENOISER).as_ptr(), null(), &mut m);
            assert_eq!(status, CLAIM_OK, "{}", last_message());
            Shared(m)
        })
        .0
}

/// Fold 0 of the 2-D fixture.
fn segmenter() -> *const claim_segmenter {
    static MODEL: OnceLock<Shared<claim_segmenter>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut options = claim_segmenter_options {
                fold_count: 1,
                ..claim_segmenter_options::default()
            };
            options.folds[0] = 0;
            let mut s = null_mut();
            let path = c_path(&results_2d());
            let status = claim_segmenter_load(path.as_ptr(), null(), &options, &mut s);
            assert_eq!(status, CLAIM_OK, "{}", last_message());
            Shared(s)
        })
        .0
}

/// Loads a copy of the 2-D results folder (fold 0) whose `plans.json` was
/// changed by `edit`.
fn load_edited_results(edit: fn(&mut serde_json::Value)) -> claim_status {
    let dir = tempfile::tempdir().unwrap();
    let source = results_2d();
    let target = dir.path().join(source.file_name().unwrap());
    std::fs::create_dir_all(target.join("fold_0")).unwrap();
    let mut plans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("plans.json")).unwrap()).unwrap();
    edit(&mut plans);
    std::fs::write(target.join("plans.json"), plans.to_string()).unwrap();
    for file in ["dataset.json", "fold_0/checkpoint_final.pth"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
    let mut s: *mut claim_segmenter = null_mut();
    claim_segmenter_load(c_path(&target).as_ptr(), null(), null(), &mut s)
}

/// CUDA device 99: refused on a build without CUDA, a machine without a
/// driver or GPU, and a machine with fewer than 100 GPUs. The reason differs
/// ("CUDA device 99 requested, but ...", "libcuda.so.1 not found ..."), so
/// the cases look for "cuda" only.
fn cuda_99() -> claim_load_options {
    claim_load_options {
        device: CLAIM_DEVICE_CUDA,
        device_index: 99,
        ..claim_load_options::default()
    }
}

/// A progress callback that cancels at once, counting its calls in the
/// `u64` that `user_data` points to.
unsafe extern "C" fn cancel(user_data: *mut c_void, _done: u64, _total: u64) -> i32 {
    // SAFETY: the cases pass a live u64.
    unsafe { *user_data.cast::<u64>() += 1 };
    1
}

/// The phantom heart of the AHA tests (EMIDEC with RV = 5, no scar).
fn heart() -> &'static Volume<i32> {
    static HEART: OnceLock<Volume<i32>> = OnceLock::new();
    HEART.get_or_init(small_heart)
}

/// The heart with a patch of scar on the myocardium of its middle slices.
fn scarred_heart() -> &'static Volume<i32> {
    static HEART: OnceLock<Volume<i32>> = OnceLock::new();
    HEART.get_or_init(|| {
        let mut v = heart().clone();
        let [ni, nj, _] = v.dims();
        // Voxels in buffer order, i fastest: scar on slices 5 and 6, j < nj/2.
        for (n, label) in v.data.iter_mut().enumerate() {
            let (j, k) = ((n / ni) % nj, n / (ni * nj));
            if *label == 2 && (5..7).contains(&k) && j < nj / 2 {
                *label = 3;
            }
        }
        assert!(v.data.iter().any(|l| *l == 3));
        v
    })
}

/// The heart's labels as a u8 view (buffer returned to keep it alive).
fn heart_u8() -> (Vec<u8>, claim_volume) {
    let mut voxels: Vec<u8> = heart().data.iter().map(|l| *l as u8).collect();
    let volume = view(heart(), &mut voxels, CLAIM_VOXEL_U8);
    (voxels, volume)
}

/// An f32 "image" of `labels` (intensity 100 × label).
fn heart_f32(labels: &Volume<i32>) -> (Vec<f32>, claim_volume) {
    let mut pixels: Vec<f32> = labels.data.iter().map(|l| *l as f32 * 100.0).collect();
    let volume = view(labels, &mut pixels, CLAIM_VOXEL_F32);
    (pixels, volume)
}

/// A volume of `dims` with unit geometry over the caller's buffer.
fn plain_view(dims: [u64; 3], data: *mut c_void, voxel_type: i32) -> claim_volume {
    claim_volume {
        voxel_type,
        dims,
        data,
        ..claim_volume::default()
    }
}

/// 2048×1024×1024 f32 voxels: over the default voxel limit (2^28), under
/// the 2^32 claim accepts at all; `data` is never read.
fn huge_volume(data: *mut c_void) -> claim_volume {
    plain_view([2048, 1024, 1024], data, CLAIM_VOXEL_F32)
}

fn tensor(shape: &[u64], data: *mut f32) -> claim_tensor {
    let mut t = claim_tensor {
        ndim: shape.len() as u32,
        data,
        ..claim_tensor::default()
    };
    t.shape[..shape.len()].copy_from_slice(shape);
    t
}

/// A 4×4×4 u8 image made by the library.
fn small_image() -> *mut claim_image {
    let like = claim_volume {
        dims: [4, 4, 4],
        ..claim_volume::default()
    };
    let mut img = null_mut();
    assert_eq!(
        claim_image_create(&like, CLAIM_VOXEL_U8, &mut img),
        CLAIM_OK
    );
    img
}

fn smile_params_with_rv() -> claim_smile_params {
    claim_smile_params {
        labels: &EMIDEC_WITH_RV,
        ..claim_smile_params::default()
    }
}

fn synthesis_params_with_rv() -> claim_synthesis_params {
    claim_synthesis_params {
        labels: &EMIDEC_WITH_RV,
        ..claim_synthesis_params::default()
    }
}

// --- Tests ------------------------------------------------------------------------

/// Runs `cases` on this thread, returning one line per failed expectation.
fn check(cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let status = (c.run)();
        let message = last_message();
        let want = status_name(c.status);
        if status != c.status {
            failures.push(format!(
                "{} ({want}, {:?}): got {}: {message}",
                c.function,
                c.keyword,
                status_name(status)
            ));
        } else if !message.starts_with(&format!("{}: ", c.function))
            || !message.to_lowercase().contains(&c.keyword.to_lowercase())
        {
            failures.push(format!(
                "{} ({want}): message lacks {:?} or the function name: {message}",
                c.function, c.keyword
            ));
        }
    }
    failures
}

fn pairs(cases: &[Case]) -> BTreeSet<(String, String)> {
    cases
        .iter()
        .map(|c| (c.function.to_string(), status_name(c.status)))
        .collect()
}

#[test]
fn the_header_documents_errors_for_every_fallible_function() {
    let documented = documented_statuses(HEADER);
    assert!(documented.len() >= 24, "{documented:?}");
    // Spot checks of the parser: a plain list, an "Errors:" in mid-paragraph,
    // "as `claim_x`, plus ..." and "errors as `claim_x`".
    let names = |f: &str| -> Vec<&str> { documented[f].iter().map(String::as_str).collect() };
    assert_eq!(
        names("claim_image_read"),
        [
            "CLAIM_ERR_FORMAT",
            "CLAIM_ERR_INVALID_ARGUMENT",
            "CLAIM_ERR_IO",
            "CLAIM_ERR_OUT_OF_MEMORY"
        ]
    );
    assert_eq!(
        names("claim_diffusion_info_get"),
        ["CLAIM_ERR_INVALID_ARGUMENT"]
    );
    assert_eq!(
        documented["claim_smile_context_create"],
        documented["claim_smile_generate"]
    );
    assert_eq!(
        documented["claim_bullseye_render_png"],
        documented["claim_bullseye_render_svg"]
    );
    // Every name is a real code, and a bug is never a documented outcome.
    let real: BTreeSet<String> = (1..=9).map(status_name).collect();
    for (function, statuses) in &documented {
        assert!(!statuses.is_empty(), "{function} lists no CLAIM_ERR_*");
        for s in statuses {
            assert!(real.contains(s), "{function}: unknown status {s}");
            assert_ne!(s, "CLAIM_ERR_INTERNAL", "{function} documents a bug");
        }
    }
}

/// Every documented (function, status) pair has a case, every case is of a
/// documented pair, and only the pairs of `UNREACHABLE` are left out.
#[test]
fn every_documented_status_has_a_case() {
    let documented: BTreeSet<(String, String)> = documented_statuses(HEADER)
        .into_iter()
        .flat_map(|(f, statuses)| statuses.into_iter().map(move |s| (f.clone(), s)))
        .collect();
    let covered = pairs(&cases());
    let unreachable: BTreeSet<(String, String)> = UNREACHABLE
        .iter()
        .map(|(f, s, _why)| (f.to_string(), s.to_string()))
        .collect();
    let missing: Vec<_> = documented
        .difference(&covered)
        .filter(|p| !unreachable.contains(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "documented statuses without a case (add one to `cases`): {missing:?}"
    );
    let extra: Vec<_> = covered.difference(&documented).collect();
    assert!(
        extra.is_empty(),
        "cases of statuses the header does not document for the function: {extra:?}"
    );
    let stale: Vec<_> = unreachable
        .iter()
        .filter(|p| !documented.contains(*p) || covered.contains(*p))
        .collect();
    assert!(
        stale.is_empty(),
        "UNREACHABLE entries that are undocumented or have a case: {stale:?}"
    );
    assert_eq!(documented.len(), covered.len() + unreachable.len());
}

#[test]
fn every_case_returns_its_status_and_names_the_problem() {
    // The out-of-memory cases rely on the default voxel limit.
    assert!(claim_max_voxels_get() < 2048 * 1024 * 1024);
    let failures = check(&cases());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_parser_reads_lists_and_references_and_refuses_silence() {
    let header = "/**\n * Does a.\n *\n * Errors: `CLAIM_ERR_IO` (no file),\n * \
                  `CLAIM_ERR_FORMAT`. Thread-safe.\n *\n * More, `CLAIM_ERR_MODEL` aside.\n \
                  */\nclaim_status claim_a(int x);\n/**\n * Does b. Errors: as `claim_a`, plus \
                  `CLAIM_ERR_CANCELLED`.\n */\nclaim_status claim_b(void);\n/**\n * Does c; \
                  errors as `claim_b`.\n */\nclaim_status claim_c(void);\n";
    let documented = documented_statuses(header);
    let names = |f: &str| -> Vec<&str> { documented[f].iter().map(String::as_str).collect() };
    assert_eq!(names("claim_a"), ["CLAIM_ERR_FORMAT", "CLAIM_ERR_IO"]);
    let b = ["CLAIM_ERR_CANCELLED", "CLAIM_ERR_FORMAT", "CLAIM_ERR_IO"];
    assert_eq!(names("claim_b"), b);
    assert_eq!(names("claim_c"), b);
    let silent = "/**\n * Does d.\n */\nclaim_status claim_d(void);\n";
    assert!(std::panic::catch_unwind(|| documented_statuses(silent)).is_err());
}

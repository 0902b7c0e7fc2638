//! Segmentation metrics: a predicted label map against a reference.
//!
//! [`evaluate_case`] compares two label maps of the same grid under one
//! [`LabelScheme`] and returns [`CaseMetrics`]; [`aggregate`] summarises
//! many cases; [`to_csv`] writes them as a table.
//!
//! # Structures
//!
//! Every [`Structure`] is a set of labels: the scheme's LV cavity,
//! (healthy) myocardium, scar and MVO labels, the RV when the scheme has
//! one, and two unions:
//!
//! - **whole myocardium** = myocardium ∪ scar ∪ MVO. This is what the EMIDEC
//!   challenge evaluates as "Myocardium" (its evaluation code takes labels
//!   2, 3 and 4 together for the myocardium's Dice, volume and Hausdorff
//!   distance), and what the scar burden divides by.
//! - **scar and MVO** = scar ∪ MVO: the whole infarct, MVO core included
//!   (SMILE's "scar").
//!
//! EMIDEC's "Infarction" and "No Reflow" are the scar and MVO labels alone.
//!
//! # Per structure
//!
//! - **Dice** `2|P ∩ R| / (|P| + |R|)` over the whole volume (3-D, as
//!   EMIDEC's published evaluation code computes it); both empty is 1.0
//!   (perfect agreement that the structure is absent), one empty is 0.
//! - **HD95** and **HD** in mm: boundary voxels are the voxels of a mask with
//!   a face neighbour (6-neighbourhood) outside it — outside the grid counts
//!   as outside. For each mask, the exact Euclidean distance (voxel centres,
//!   anisotropic spacing) from each of its boundary voxels to the nearest
//!   boundary voxel of the other is taken; the two lists are pooled; HD95 is
//!   their 95th percentile (linear interpolation, as `numpy.percentile`) and
//!   HD their maximum. Undefined (`None`; JSON `null`, an empty CSV cell)
//!   when either mask is empty.
//! - **Volumes** in mL (voxels × voxel volume) of prediction and reference,
//!   the signed difference prediction − reference and its absolute value.
//!
//! # Scar burden
//!
//! Scar % of myocardium = 100 × (scar + MVO) / (myocardium + scar + MVO) of
//! each map on its own, as SMILE and `claim stats` measure it; the
//! difference is in percentage points. Undefined for a map without
//! myocardium. EMIDEC's percentage metric is also given, for comparison
//! with published results: 100 × |scar volume difference| / reference whole
//! myocardium volume, for the scar label alone and for the MVO label alone
//! (its "volume difference rate").
//!
//! # Per AHA segment
//!
//! The **reference** label map is parcellated into the AHA 17 segments
//! ([`crate::smile::aha::parcellate`]; the RV fixes the septum when the
//! scheme has one) and both maps are measured on that one segment map:
//! per segment, 100 × (scar + MVO) / whole myocardium among the voxels of
//! the segment, each map with its own labels there. Predicted myocardium
//! outside the reference myocardium lies in no segment and is not counted.
//! A segment where a map has no myocardium has an undefined burden. When
//! the reference cannot be parcellated (no cavity or myocardium, labels the
//! scheme does not name, …) the case gets no segment values and a note
//! saying why — not an error.
//!
//! # Inputs
//!
//! Both maps must have the same dims and geometry (spacing, origin and
//! direction equal within [`EvalOptions::geometry_tolerance`]), else an
//! [`Error::InvalidArgument`]. Labels the scheme does not name count as
//! background and are listed in the case's notes.

mod summary;
mod surface;
pub mod volumes;

pub use summary::{aggregate, columns, to_csv, Aggregate, MetricSummary};
pub use surface::{
    boundary_voxels, dice_from_counts, percentile_of_sorted, surface_distance, SurfaceDistance,
};

use crate::error::{Error, Result};
use crate::smile::aha::{parcellate_in_box, AhaParams};
use crate::smile::segment_stats;
use crate::smile::territory::SEGMENT_COUNT;
use crate::volume::{CropPlacement, CroppedLabels, Geometry, LabelScheme, Volume};
use serde::Serialize;
use std::borrow::Cow;

/// Millilitres per cubic millimetre.
const ML_PER_MM3: f64 = 1e-3;

/// A structure that is evaluated: one label of the scheme or a union.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Structure {
    /// LV blood pool.
    LvCavity,
    /// Healthy myocardium (the myocardium label alone).
    Myocardium,
    /// Scar (the scar label alone; EMIDEC's "Infarction").
    Scar,
    /// Microvascular obstruction (EMIDEC's "No Reflow").
    Mvo,
    /// RV blood pool (only with a scheme that has an RV label).
    Rv,
    /// Myocardium ∪ scar ∪ MVO (EMIDEC's "Myocardium").
    WholeMyocardium,
    /// Scar ∪ MVO: the whole infarct.
    ScarAndMvo,
}

impl Structure {
    /// The structures evaluated under `scheme`, in report order.
    pub fn for_scheme(scheme: &LabelScheme) -> Vec<Structure> {
        let mut out = vec![
            Structure::LvCavity,
            Structure::Myocardium,
            Structure::Scar,
            Structure::Mvo,
        ];
        if scheme.rv.is_some() {
            out.push(Structure::Rv);
        }
        out.extend([Structure::WholeMyocardium, Structure::ScarAndMvo]);
        out
    }

    /// Stable snake_case key, used in JSON and CSV column names.
    pub fn key(self) -> &'static str {
        match self {
            Structure::LvCavity => "lv_cavity",
            Structure::Myocardium => "myocardium",
            Structure::Scar => "scar",
            Structure::Mvo => "mvo",
            Structure::Rv => "rv",
            Structure::WholeMyocardium => "whole_myocardium",
            Structure::ScarAndMvo => "scar_and_mvo",
        }
    }

    /// Name for people.
    pub fn display_name(self) -> &'static str {
        match self {
            Structure::LvCavity => "LV cavity",
            Structure::Myocardium => "myocardium (healthy)",
            Structure::Scar => "scar",
            Structure::Mvo => "MVO",
            Structure::Rv => "RV",
            Structure::WholeMyocardium => "myocardium incl. lesions",
            Structure::ScarAndMvo => "scar incl. MVO",
        }
    }

    /// Whether `label` belongs to this structure under `scheme`.
    pub fn contains(self, label: i32, scheme: &LabelScheme) -> bool {
        match self {
            Structure::LvCavity => label == scheme.lv_cavity,
            Structure::Myocardium => label == scheme.myocardium,
            Structure::Scar => label == scheme.scar,
            Structure::Mvo => label == scheme.mvo,
            Structure::Rv => scheme.rv == Some(label),
            Structure::WholeMyocardium => scheme.is_myocardium(label),
            Structure::ScarAndMvo => scheme.is_lesion(label),
        }
    }
}

/// Options of [`evaluate_case`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// Measure the scar burden per AHA segment (parcellating the reference).
    /// Default true.
    pub per_segment: bool,
    /// Rotation of the AHA segments, degrees counter-clockwise as seen from
    /// the apex (see [`AhaParams::rotation_deg`]). Default 0.
    pub aha_rotation_deg: f64,
    /// Largest difference (mm for spacing and origin, unitless for the
    /// direction) at which the two maps' geometries still count as equal.
    /// Default 1e-3, well above the rounding of float32 NIfTI headers.
    pub geometry_tolerance: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            per_segment: true,
            aha_rotation_deg: 0.0,
            geometry_tolerance: 1e-3,
        }
    }
}

/// The metrics of one structure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StructureMetrics {
    /// Which structure.
    pub structure: Structure,
    /// Dice coefficient, 0–1 (1.0 when both maps lack the structure).
    pub dice: f64,
    /// 95th-percentile symmetric surface distance, mm; `None` when either
    /// map lacks the structure.
    pub hd95_mm: Option<f64>,
    /// Hausdorff distance (maximum surface distance), mm; `None` as HD95.
    pub hd_mm: Option<f64>,
    /// Voxels of the structure in the prediction.
    pub pred_voxels: u64,
    /// Voxels of the structure in the reference.
    pub ref_voxels: u64,
    /// Volume in the prediction, mL.
    pub pred_ml: f64,
    /// Volume in the reference, mL.
    pub ref_ml: f64,
    /// `pred_ml − ref_ml`, mL.
    pub volume_difference_ml: f64,
    /// `|pred_ml − ref_ml|`, mL.
    pub abs_volume_difference_ml: f64,
}

/// Scar burden of the whole myocardium.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScarBurden {
    /// 100 × (scar + MVO) / whole myocardium of the prediction; `None`
    /// without predicted myocardium.
    pub pred_percent: Option<f64>,
    /// The same of the reference; `None` without reference myocardium.
    pub ref_percent: Option<f64>,
    /// `|pred_percent − ref_percent|`, percentage points; `None` when
    /// either is undefined.
    pub abs_difference: Option<f64>,
    /// EMIDEC's infarction percentage error: 100 × |scar-label volume
    /// difference| / reference whole-myocardium volume; `None` without
    /// reference myocardium.
    pub emidec_scar_error_percent: Option<f64>,
    /// The same for the MVO label (EMIDEC's no-reflow percentage error).
    pub emidec_mvo_error_percent: Option<f64>,
}

/// Scar burden of one AHA segment (segment map from the reference).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SegmentBurden {
    /// AHA segment 1–17.
    pub segment: u8,
    /// Reference whole myocardium in the segment, mL.
    pub ref_myocardium_ml: f64,
    /// Predicted whole myocardium among the segment's voxels, mL.
    pub pred_myocardium_ml: f64,
    /// 100 × (scar + MVO) / whole myocardium of the prediction among the
    /// segment's voxels; `None` where the prediction has no myocardium.
    pub pred_percent: Option<f64>,
    /// The same of the reference; `None` for a segment without myocardium.
    pub ref_percent: Option<f64>,
    /// `|pred_percent − ref_percent|`, percentage points.
    pub abs_difference: Option<f64>,
}

/// Everything measured on one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseMetrics {
    /// Name of the case; [`evaluate_case`] leaves it empty for the caller
    /// to fill (e.g. the EMIDEC case folder name).
    pub case: String,
    /// Dims `[ni, nj, nk]` of both maps.
    pub dims: [usize; 3],
    /// Voxel spacing, mm.
    pub spacing_mm: [f64; 3],
    /// Volume of one voxel, mL.
    pub voxel_ml: f64,
    /// One entry per [`Structure::for_scheme`], in that order.
    pub structures: Vec<StructureMetrics>,
    /// Scar % of the whole myocardium.
    pub scar_burden: ScarBurden,
    /// Segments 1–17 in order, or `None` when not asked for or when the
    /// reference could not be parcellated (see `notes`).
    pub segments: Option<Vec<SegmentBurden>>,
    /// Whether the RV fixed the septum of the parcellation (`None` without
    /// segments).
    pub segments_used_rv: Option<bool>,
    /// What a reader of the numbers should know: labels the scheme does not
    /// name, why there are no segment values, how the septum was placed.
    pub notes: Vec<String>,
}

impl CaseMetrics {
    /// The metrics of `structure`, when the scheme evaluates it.
    pub fn structure(&self, structure: Structure) -> Option<&StructureMetrics> {
        self.structures.iter().find(|s| s.structure == structure)
    }

    /// Every metric as `(column name, value)` in the stable column order
    /// of [`to_csv`]; `None` for an undefined value. Per structure
    /// `<key>_dice`, `_hd95_mm`, `_hd_mm`, `_pred_ml`, `_ref_ml`,
    /// `_diff_ml`, `_abs_diff_ml`; then `scar_percent_pred`,
    /// `scar_percent_ref`, `scar_percent_abs_diff`,
    /// `emidec_scar_error_percent`, `emidec_mvo_error_percent`; then for
    /// segments 1–17 `seg<N>_scar_percent_pred`, `_ref`, `_abs_diff`
    /// (present, and undefined, when there are no segment values).
    pub fn values(&self) -> Vec<(String, Option<f64>)> {
        let mut out = Vec::new();
        for s in &self.structures {
            let key = s.structure.key();
            out.extend([
                (format!("{key}_dice"), Some(s.dice)),
                (format!("{key}_hd95_mm"), s.hd95_mm),
                (format!("{key}_hd_mm"), s.hd_mm),
                (format!("{key}_pred_ml"), Some(s.pred_ml)),
                (format!("{key}_ref_ml"), Some(s.ref_ml)),
                (format!("{key}_diff_ml"), Some(s.volume_difference_ml)),
                (
                    format!("{key}_abs_diff_ml"),
                    Some(s.abs_volume_difference_ml),
                ),
            ]);
        }
        let b = &self.scar_burden;
        out.extend([
            ("scar_percent_pred".to_string(), b.pred_percent),
            ("scar_percent_ref".to_string(), b.ref_percent),
            ("scar_percent_abs_diff".to_string(), b.abs_difference),
            (
                "emidec_scar_error_percent".to_string(),
                b.emidec_scar_error_percent,
            ),
            (
                "emidec_mvo_error_percent".to_string(),
                b.emidec_mvo_error_percent,
            ),
        ]);
        for segment in 1..=SEGMENT_COUNT {
            let burden = self.segments.as_ref().and_then(|all| {
                all.iter()
                    .find(|s| usize::from(s.segment) == segment)
                    .copied()
            });
            out.extend([
                (
                    format!("seg{segment}_scar_percent_pred"),
                    burden.and_then(|s| s.pred_percent),
                ),
                (
                    format!("seg{segment}_scar_percent_ref"),
                    burden.and_then(|s| s.ref_percent),
                ),
                (
                    format!("seg{segment}_scar_percent_abs_diff"),
                    burden.and_then(|s| s.abs_difference),
                ),
            ]);
        }
        out
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("case metrics to JSON: {e}")))
    }
}

/// Compares the predicted label map `pred` with the reference `reference`
/// under `scheme`; see the module docs for every definition.
///
/// Errors: an invalid scheme or geometry; differing dims or geometry.
/// A reference that cannot be parcellated is not an error (a note).
pub fn evaluate_case(
    pred: &Volume<i32>,
    reference: &Volume<i32>,
    scheme: &LabelScheme,
    options: &EvalOptions,
) -> Result<CaseMetrics> {
    scheme.validate()?;
    check_same_grid(pred, reference, options.geometry_tolerance)?;
    let placement = CropPlacement::whole(reference.dims(), reference.geometry);
    evaluate_in_box(pred, reference, &placement, scheme, options)
}

/// [`evaluate_case`] of two maps cut to one box
/// ([`CroppedLabels::pair_from_images`]): the same metrics, holding only
/// the box as 32-bit labels. Dims and geometry are checked on the whole
/// maps.
pub fn evaluate_case_cropped(
    pred: &CroppedLabels,
    reference: &CroppedLabels,
    scheme: &LabelScheme,
    options: &EvalOptions,
) -> Result<CaseMetrics> {
    scheme.validate()?;
    let (p, r) = (&pred.placement, &reference.placement);
    check_same_grid_of(
        (p.full_dims, &p.full_geometry),
        (r.full_dims, &r.full_geometry),
        options.geometry_tolerance,
    )?;
    if (p.offset, p.dims) != (r.offset, r.dims) {
        return Err(Error::invalid(format!(
            "prediction and reference are cut to different boxes ({:?}+{:?} vs {:?}+{:?})",
            p.offset, p.dims, r.offset, r.dims
        )));
    }
    evaluate_in_box(&pred.labels, &reference.labels, r, scheme, options)
}

/// The metrics of two label maps of one box `placement` (the whole map, or
/// a crop holding every labelled voxel of both).
fn evaluate_in_box(
    pred: &Volume<i32>,
    reference: &Volume<i32>,
    placement: &CropPlacement,
    scheme: &LabelScheme,
    options: &EvalOptions,
) -> Result<CaseMetrics> {
    let dims = reference.dims();
    let spacing = reference.geometry.spacing;
    let voxel_ml = reference.geometry.voxel_volume_mm3() * ML_PER_MM3;
    let pred_labels = labels_in_order(pred);
    let ref_labels = labels_in_order(reference);
    let (pred_labels, ref_labels) = (pred_labels.as_ref(), ref_labels.as_ref());

    let mut notes = Vec::new();
    for (what, labels) in [("prediction", pred_labels), ("reference", ref_labels)] {
        let unnamed = unnamed_labels(labels, scheme);
        if !unnamed.is_empty() {
            notes.push(format!(
                "the {what} holds labels {unnamed:?} that the label scheme does not name; \
                 they count as background"
            ));
        }
    }

    let structures = Structure::for_scheme(scheme)
        .into_iter()
        .map(|s| structure_metrics(s, pred_labels, ref_labels, scheme, dims, spacing, voxel_ml))
        .collect::<Result<Vec<_>>>()?;
    let scar_burden = scar_burden(&structures);

    let (segments, segments_used_rv) = if options.per_segment {
        match segment_burdens(pred, reference, placement, scheme, options.aha_rotation_deg) {
            Ok((segments, used_rv)) => {
                if !used_rv {
                    let why = if scheme.rv.is_some() {
                        "the RV touches no LV myocardium"
                    } else {
                        "the label scheme has no RV"
                    };
                    notes.push(format!(
                        "AHA segments: {why}, so the septum is approximated from the image \
                         geometry"
                    ));
                }
                (Some(segments), Some(used_rv))
            }
            Err(err) => {
                notes.push(format!(
                    "no per-segment values: the reference could not be parcellated ({err})"
                ));
                (None, None)
            }
        }
    } else {
        (None, None)
    };

    Ok(CaseMetrics {
        case: String::new(),
        dims: placement.full_dims,
        spacing_mm: spacing,
        voxel_ml,
        structures,
        scar_burden,
        segments,
        segments_used_rv,
        notes,
    })
}

/// Refuses maps of different dims or geometry.
fn check_same_grid(pred: &Volume<i32>, reference: &Volume<i32>, tolerance: f64) -> Result<()> {
    check_same_grid_of(
        (pred.dims(), &pred.geometry),
        (reference.dims(), &reference.geometry),
        tolerance,
    )
}

/// [`check_same_grid`] of the `(dims, geometry)` of two maps.
fn check_same_grid_of(
    (pred_dims, pred_geometry): ([usize; 3], &Geometry),
    (ref_dims, ref_geometry): ([usize; 3], &Geometry),
    tolerance: f64,
) -> Result<()> {
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return Err(Error::invalid(format!(
            "geometry tolerance must be finite and ≥ 0, got {tolerance}"
        )));
    }
    ref_geometry.validate("reference geometry")?;
    pred_geometry.validate("prediction geometry")?;
    if pred_dims != ref_dims {
        return Err(Error::invalid(format!(
            "prediction dims {pred_dims:?} differ from the reference's {ref_dims:?}"
        )));
    }
    if !pred_geometry.approx_eq(ref_geometry, tolerance) {
        let (p, r) = (pred_geometry, ref_geometry);
        return Err(Error::invalid(format!(
            "prediction geometry differs from the reference's (tolerance {tolerance}): \
             spacing {:?} vs {:?}, origin {:?} vs {:?}, direction {:?} vs {:?}",
            p.spacing, r.spacing, p.origin, r.origin, p.direction, r.direction
        )));
    }
    Ok(())
}

/// The labels in i-fastest order: borrowed when the array is laid out that
/// way (always, for volumes claim creates), else copied in that order.
fn labels_in_order(labels: &Volume<i32>) -> Cow<'_, [i32]> {
    match labels.data.as_slice() {
        Some(flat) => Cow::Borrowed(flat),
        None => Cow::Owned(labels.data.iter().copied().collect()),
    }
}

/// Sorted distinct non-zero labels the scheme does not name.
fn unnamed_labels(labels: &[i32], scheme: &LabelScheme) -> Vec<i32> {
    let mut unnamed: Vec<i32> = Vec::new();
    for l in labels {
        if scheme.tissue(*l).is_none() && !unnamed.contains(l) {
            unnamed.push(*l);
        }
    }
    unnamed.sort_unstable();
    unnamed
}

fn structure_metrics(
    structure: Structure,
    pred: &[i32],
    reference: &[i32],
    scheme: &LabelScheme,
    dims: [usize; 3],
    spacing: [f64; 3],
    voxel_ml: f64,
) -> Result<StructureMetrics> {
    let pred_mask: Vec<bool> = pred
        .iter()
        .map(|l| structure.contains(*l, scheme))
        .collect();
    let ref_mask: Vec<bool> = reference
        .iter()
        .map(|l| structure.contains(*l, scheme))
        .collect();
    let count = |m: &[bool]| m.iter().filter(|v| **v).count() as u64;
    let (pred_voxels, ref_voxels) = (count(&pred_mask), count(&ref_mask));
    let intersection = pred_mask
        .iter()
        .zip(&ref_mask)
        .filter(|(p, r)| **p && **r)
        .count() as u64;
    let surface = surface_distance(&pred_mask, &ref_mask, dims, spacing)?;
    let pred_ml = pred_voxels as f64 * voxel_ml;
    let ref_ml = ref_voxels as f64 * voxel_ml;
    Ok(StructureMetrics {
        structure,
        dice: dice_from_counts(intersection, pred_voxels, ref_voxels),
        hd95_mm: surface.map(|s| s.hd95_mm),
        hd_mm: surface.map(|s| s.hd_mm),
        pred_voxels,
        ref_voxels,
        pred_ml,
        ref_ml,
        volume_difference_ml: pred_ml - ref_ml,
        abs_volume_difference_ml: (pred_ml - ref_ml).abs(),
    })
}

/// `100 × part / whole`, `None` for an empty whole.
fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

fn abs_difference(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((a? - b?).abs())
}

fn scar_burden(structures: &[StructureMetrics]) -> ScarBurden {
    let find = |s: Structure| structures.iter().find(|m| m.structure == s);
    let voxels = |s: Structure| find(s).map_or((0, 0), |m| (m.pred_voxels, m.ref_voxels));
    let (pred_myo, ref_myo) = voxels(Structure::WholeMyocardium);
    let (pred_lesion, ref_lesion) = voxels(Structure::ScarAndMvo);
    let pred_percent = percent(pred_lesion, pred_myo);
    let ref_percent = percent(ref_lesion, ref_myo);
    let emidec_error = |s: Structure| {
        let (p, r) = voxels(s);
        percent(p.abs_diff(r), ref_myo)
    };
    ScarBurden {
        pred_percent,
        ref_percent,
        abs_difference: abs_difference(pred_percent, ref_percent),
        emidec_scar_error_percent: emidec_error(Structure::Scar),
        emidec_mvo_error_percent: emidec_error(Structure::Mvo),
    }
}

/// Per-segment burdens on the reference's AHA segments, and whether the RV
/// placed the septum.
fn segment_burdens(
    pred: &Volume<i32>,
    reference: &Volume<i32>,
    placement: &CropPlacement,
    scheme: &LabelScheme,
    rotation_deg: f64,
) -> Result<(Vec<SegmentBurden>, bool)> {
    let params = AhaParams {
        labels: *scheme,
        rotation_deg,
        ..AhaParams::default()
    };
    let parcellation = parcellate_in_box(reference, placement, &params)?;
    let segments = if placement.is_whole() {
        parcellation.segments
    } else {
        placement.crop(&parcellation.segments, "the AHA segment map")?
    };
    let pred_stats = segment_stats(pred, &segments, scheme)?;
    let ref_stats = segment_stats(reference, &segments, scheme)?;
    let burdens = pred_stats
        .per_segment
        .iter()
        .zip(ref_stats.per_segment.iter())
        .map(|(p, r)| {
            // segment_stats reports 0 % for a segment without myocardium;
            // here that is undefined.
            let defined =
                |s: &crate::smile::SegmentStat| (s.myocardium_ml > 0.0).then_some(s.scar_percent);
            let (pred_percent, ref_percent) = (defined(p), defined(r));
            SegmentBurden {
                segment: r.segment,
                ref_myocardium_ml: r.myocardium_ml,
                pred_myocardium_ml: p.myocardium_ml,
                pred_percent,
                ref_percent,
                abs_difference: abs_difference(pred_percent, ref_percent),
            }
        })
        .collect();
    Ok((burdens, parcellation.used_rv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Image, LABEL_CROP_MARGIN};

    /// A scarred phantom heart (EMIDEC with RV 5) in a field of view twice
    /// as wide, the rest 0.
    fn wide(heart: &Volume<i32>) -> Volume<i32> {
        let [ni, nj, nk] = heart.dims();
        crate::testing::in_wide_field(heart, [ni - 3, 7, 2], [2 * ni, 2 * nj, nk + 4])
    }

    /// Maps cut to the box of both their labels give the whole maps'
    /// metrics (overlaps, surface distances, volumes, per-segment burdens,
    /// dims), and refuse a geometry mismatch on the whole maps.
    #[test]
    fn cropped_maps_give_the_whole_maps_metrics() {
        let heart = crate::phantom::generate(&crate::phantom::PhantomParams {
            seed: 4,
            matrix_size: 64,
            slice_count: 10,
            with_scar: true,
            ..crate::phantom::PhantomParams::default()
        })
        .unwrap()
        .labels;
        let reference = wide(&heart);
        // A prediction that misses part of the scar and adds some elsewhere.
        let mut pred = reference.clone();
        for (n, l) in pred.data.iter_mut().enumerate() {
            if *l == 3 && n % 3 == 0 {
                *l = 2;
            } else if *l == 2 && n % 11 == 0 {
                *l = 3;
            }
        }
        let scheme = LabelScheme::EMIDEC_WITH_RV;
        let options = EvalOptions::default();
        let expected = evaluate_case(&pred, &reference, &scheme, &options).unwrap();
        let (p, r) = CroppedLabels::pair_from_images(
            (&Image::I32(pred.clone()), "prediction"),
            (&Image::U8(reference.map(|l| *l as u8)), "reference"),
            LABEL_CROP_MARGIN,
        )
        .unwrap();
        assert!(r.labels.len() * 3 < reference.len());
        let got = evaluate_case_cropped(&p, &r, &scheme, &options).unwrap();
        assert!(expected.segments.is_some());
        assert_eq!(got, expected);

        let mut moved = pred.clone();
        moved.geometry.origin[1] += 2.0;
        let (p, r) = CroppedLabels::pair_from_images(
            (&Image::I32(moved), "prediction"),
            (&Image::I32(reference), "reference"),
            LABEL_CROP_MARGIN,
        )
        .unwrap();
        let err = evaluate_case_cropped(&p, &r, &scheme, &options).unwrap_err();
        assert!(err.to_string().contains("geometry differs"), "{err}");
    }
}

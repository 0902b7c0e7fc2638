//! Per-AHA-segment scar statistics.
//!
//! Volumes are in millilitres (voxel count × voxel volume from the
//! geometry). "Scar" here is the whole infarct including its MVO core, as
//! in the SMILE burden: `scar_ml` counts scar + MVO voxels, `mvo_ml` the MVO
//! part of it, `scar_percent = 100 × scar_ml / myocardium_ml`, where the
//! myocardium is healthy + scar + MVO.

use super::territory::SEGMENT_COUNT;
use crate::error::{Error, Result};
use crate::volume::{CroppedLabels, Geometry, LabelScheme, Volume};
use serde::Serialize;

/// Statistics of one AHA segment.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SegmentStat {
    /// Segment number 1–17 (0 for myocardium without a segment).
    pub segment: u8,
    /// Whole myocardium (healthy + scar + MVO) in the segment, mL.
    pub myocardium_ml: f64,
    /// Scar including MVO, mL.
    pub scar_ml: f64,
    /// MVO, mL (part of `scar_ml`).
    pub mvo_ml: f64,
    /// `100 × scar_ml / myocardium_ml`; 0 for a segment without myocardium.
    pub scar_percent: f64,
}

/// Per-segment and total scar statistics of one label map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentStats {
    /// Segments 1–17 (index = segment − 1).
    pub per_segment: [SegmentStat; SEGMENT_COUNT],
    /// Myocardium the segment map leaves without a segment (segment 0).
    pub unassigned: SegmentStat,
    /// Whole myocardium, mL (all segments plus unassigned).
    pub total_myocardium_ml: f64,
    /// Scar including MVO, mL.
    pub total_scar_ml: f64,
    /// MVO, mL.
    pub total_mvo_ml: f64,
    /// `total_scar_ml / total_myocardium_ml` (fraction 0–1; 0 without myocardium).
    pub burden: f64,
}

impl SegmentStats {
    /// The statistics of segment 1–17.
    pub fn segment(&self, segment: u8) -> Option<&SegmentStat> {
        usize::from(segment)
            .checked_sub(1)
            .and_then(|i| self.per_segment.get(i))
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("stats to JSON: {e}")))
    }
}

/// Checks that `segments` can describe `labels`: same dims and geometry,
/// values 0 (none) or 1–17.
pub(crate) fn check_segment_map(labels: &Volume<i32>, segments: &Volume<u8>) -> Result<()> {
    check_segment_map_of(labels.dims(), &labels.geometry, segments)
}

/// The part of a whole segment map (checked as [`check_segment_map`]
/// against the whole label map) inside the box of a cropped label map.
pub fn crop_segment_map(map: &CroppedLabels, segments: &Volume<u8>) -> Result<Volume<u8>> {
    let placement = &map.placement;
    check_segment_map_of(placement.full_dims, &placement.full_geometry, segments)?;
    placement.crop(segments, "segment map")
}

fn check_segment_map_of(
    dims: [usize; 3],
    geometry: &Geometry,
    segments: &Volume<u8>,
) -> Result<()> {
    if segments.dims() != dims {
        return Err(Error::invalid(format!(
            "segment map dims {:?} differ from the label map's {:?}",
            segments.dims(),
            dims
        )));
    }
    if let Some(diff) = segments.geometry.difference(geometry, 1e-3) {
        return Err(Error::invalid(format!(
            "segment map geometry differs from the label map's: {diff} (segment map vs label map)"
        )));
    }
    if let Some(bad) = segments
        .data
        .iter()
        .find(|s| usize::from(**s) > SEGMENT_COUNT)
    {
        return Err(Error::invalid(format!(
            "segment map holds {bad}; expected 0 (none) or AHA segments 1–17"
        )));
    }
    Ok(())
}

/// Per-segment myocardium, scar and MVO volumes of `labels` (in `scheme`)
/// over the AHA `segments` (0 none, 1–17). Labels the scheme does not name
/// count as non-myocardium. Errors on differing dims or geometry, segment
/// values above 17 or an invalid scheme.
pub fn segment_stats(
    labels: &Volume<i32>,
    segments: &Volume<u8>,
    scheme: &LabelScheme,
) -> Result<SegmentStats> {
    scheme.validate()?;
    labels.geometry.validate("label map geometry")?;
    check_segment_map(labels, segments)?;
    // Counts per segment 0..=17: [myocardium, lesion, mvo].
    let mut counts = [[0u64; 3]; SEGMENT_COUNT + 1];
    for (label, segment) in labels.data.iter().zip(segments.data.iter()) {
        if !scheme.is_myocardium(*label) {
            continue;
        }
        let c = counts
            .get_mut(usize::from(*segment))
            .ok_or_else(|| Error::Internal(format!("segment {segment} passed the check")))?;
        c[0] += 1;
        if scheme.is_lesion(*label) {
            c[1] += 1;
        }
        if *label == scheme.mvo {
            c[2] += 1;
        }
    }
    let ml = labels.geometry.voxel_volume_mm3() / 1000.0;
    let stat = |segment: usize| {
        let [myo, lesion, mvo] = counts[segment];
        SegmentStat {
            segment: segment as u8,
            myocardium_ml: myo as f64 * ml,
            scar_ml: lesion as f64 * ml,
            mvo_ml: mvo as f64 * ml,
            scar_percent: if myo == 0 {
                0.0
            } else {
                100.0 * lesion as f64 / myo as f64
            },
        }
    };
    let per_segment: [SegmentStat; SEGMENT_COUNT] = std::array::from_fn(|i| stat(i + 1));
    let total = |k: usize| counts.iter().map(|c| c[k]).sum::<u64>();
    let (myo, lesion, mvo) = (total(0), total(1), total(2));
    Ok(SegmentStats {
        per_segment,
        unassigned: stat(0),
        total_myocardium_ml: myo as f64 * ml,
        total_scar_ml: lesion as f64 * ml,
        total_mvo_ml: mvo as f64 * ml,
        burden: if myo == 0 {
            0.0
        } else {
            lesion as f64 / myo as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn counts_and_volumes_add_up() {
        let g = Geometry::with_spacing([2.0, 2.0, 5.0]); // 20 mm³ = 0.02 mL per voxel
        let labels = Volume::from_vec([6, 1, 1], vec![2, 3, 4, 2, 1, 3], g).unwrap();
        let segments = Volume::from_vec([6, 1, 1], vec![1, 1, 1, 17, 17, 0], g).unwrap();
        let s = segment_stats(&labels, &segments, &LabelScheme::EMIDEC).unwrap();
        let s1 = s.segment(1).unwrap();
        assert!((s1.myocardium_ml - 0.06).abs() < 1e-12);
        assert!((s1.scar_ml - 0.04).abs() < 1e-12);
        assert!((s1.mvo_ml - 0.02).abs() < 1e-12);
        assert!((s1.scar_percent - 200.0 / 3.0).abs() < 1e-9);
        let s17 = s.segment(17).unwrap();
        assert!(
            (s17.myocardium_ml - 0.02).abs() < 1e-12,
            "the cavity voxel is not myocardium"
        );
        assert_eq!(s17.scar_percent, 0.0);
        assert!((s.unassigned.scar_ml - 0.02).abs() < 1e-12);
        assert!((s.total_myocardium_ml - 0.10).abs() < 1e-12);
        assert!((s.total_scar_ml - 0.06).abs() < 1e-12);
        assert!((s.burden - 0.6).abs() < 1e-12);
        assert_eq!(s.segment(5).unwrap().scar_percent, 0.0);
        assert!(s.segment(18).is_none());
        let json = s.to_json().unwrap();
        assert!(json.contains("\"per_segment\"") && json.contains("\"burden\""));
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let g = Geometry::default();
        let labels = Volume::from_vec([2, 1, 1], vec![2, 2], g).unwrap();
        let bad_dims = Volume::from_vec([1, 2, 1], vec![1u8, 1], g).unwrap();
        assert!(segment_stats(&labels, &bad_dims, &LabelScheme::EMIDEC).is_err());
        let bad_value = Volume::from_vec([2, 1, 1], vec![1u8, 18], g).unwrap();
        assert!(segment_stats(&labels, &bad_value, &LabelScheme::EMIDEC).is_err());
    }
}

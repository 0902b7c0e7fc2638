//! Volumes of a label map: a histogram of its values and the volumes of
//! the cardiac tissues of a [`LabelScheme`], in mL.

use crate::volume::{LabelScheme, Volume};
use serde::Serialize;
use std::collections::BTreeMap;

/// More distinct values than this and an integer image is not a label map.
pub const MAX_LABELS: usize = 64;

/// Voxel count and volume of one label value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelVolume {
    /// The label value.
    pub label: i64,
    /// Number of voxels carrying it.
    pub voxels: u64,
    /// Their volume in millilitres.
    pub ml: f64,
}

/// Millilitres per cubic millimetre.
const ML_PER_MM3: f64 = 1e-3;

/// Histogram of integer values, or None when a value is not an integer or
/// there are more than [`MAX_LABELS`] distinct values.
pub fn label_histogram(
    values: impl Iterator<Item = f64>,
    voxel_volume_mm3: f64,
) -> Option<Vec<LabelVolume>> {
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for value in values {
        // Labels are small integers; anything else means an intensity image.
        if !value.is_finite() || value.fract() != 0.0 || value.abs() > 1e9 {
            return None;
        }
        *counts.entry(value as i64).or_insert(0) += 1;
        if counts.len() > MAX_LABELS {
            return None;
        }
    }
    Some(
        counts
            .into_iter()
            .map(|(label, voxels)| LabelVolume {
                label,
                voxels,
                ml: voxels as f64 * voxel_volume_mm3 * ML_PER_MM3,
            })
            .collect(),
    )
}

/// Volumes of the cardiac structures of a label map, in mL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TissueVolumes {
    /// LV blood pool.
    pub lv_cavity_ml: f64,
    /// Whole LV myocardium (healthy + scar + MVO).
    pub myocardium_ml: f64,
    /// Scar, MVO excluded.
    pub scar_ml: f64,
    /// Microvascular obstruction.
    pub mvo_ml: f64,
    /// RV blood pool, when the scheme has an RV label.
    pub rv_ml: Option<f64>,
    /// Scar + MVO as a percentage of the whole myocardium.
    pub scar_percent_of_myocardium: f64,
}

/// Sums the structures of `labels` under `scheme`.
pub fn tissue_volumes(labels: &Volume<i32>, scheme: &LabelScheme) -> TissueVolumes {
    let ml_per_voxel = labels.geometry.voxel_volume_mm3() * ML_PER_MM3;
    let count =
        |keep: &dyn Fn(i32) -> bool| labels.data.iter().filter(|l| keep(**l)).count() as f64;
    let myocardium = count(&|l| scheme.is_myocardium(l));
    let scar = count(&|l| l == scheme.scar);
    let mvo = count(&|l| l == scheme.mvo);
    TissueVolumes {
        lv_cavity_ml: count(&|l| l == scheme.lv_cavity) * ml_per_voxel,
        myocardium_ml: myocardium * ml_per_voxel,
        scar_ml: scar * ml_per_voxel,
        mvo_ml: mvo * ml_per_voxel,
        rv_ml: scheme.rv.map(|rv| count(&|l| l == rv) * ml_per_voxel),
        scar_percent_of_myocardium: if myocardium > 0.0 {
            100.0 * (scar + mvo) / myocardium
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn histogram_counts_labels_and_refuses_intensities() {
        let h = label_histogram([0.0, 2.0, 2.0, 5.0].into_iter(), 2000.0).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!((h[1].label, h[1].voxels), (2, 2));
        assert!((h[1].ml - 4.0).abs() < 1e-12);
        assert!(label_histogram([0.0, 0.5].into_iter(), 1.0).is_none());
        assert!(label_histogram((0..100).map(f64::from), 1.0).is_none());
        assert!(label_histogram([f64::NAN].into_iter(), 1.0).is_none());
    }

    #[test]
    fn tissue_volumes_use_the_scheme() {
        let labels = Volume::from_vec(
            [6, 1, 1],
            vec![1, 2, 2, 3, 4, 5],
            Geometry::with_spacing([10.0, 10.0, 10.0]),
        )
        .unwrap();
        let v = tissue_volumes(&labels, &LabelScheme::EMIDEC_WITH_RV);
        assert!((v.lv_cavity_ml - 1.0).abs() < 1e-12);
        assert!((v.myocardium_ml - 4.0).abs() < 1e-12);
        assert!((v.scar_percent_of_myocardium - 50.0).abs() < 1e-12);
        assert_eq!(v.rv_ml, Some(1.0));
    }
}

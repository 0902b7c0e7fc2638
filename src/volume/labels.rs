//! Label conventions of cardiac label maps.

use super::{DType, Image, Volume};
use crate::error::{Error, Result};

/// Which integer stands for which structure in a label map.
///
/// Defaults to the EMIDEC scheme: 0 background, 1 LV cavity, 2 myocardium,
/// 3 scar, 4 MVO, no RV. The whole myocardium is the union of myocardium,
/// scar and MVO. Outputs are always written in the input's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelScheme {
    /// LV blood pool label.
    pub lv_cavity: i32,
    /// Healthy myocardium label.
    pub myocardium: i32,
    /// Infarct / scar label.
    pub scar: i32,
    /// Microvascular obstruction (no-reflow) label; lies inside the scar.
    pub mvo: i32,
    /// Right-ventricle blood pool label, if the map has one.
    pub rv: Option<i32>,
}

impl Default for LabelScheme {
    fn default() -> Self {
        LabelScheme::EMIDEC
    }
}

/// The structure a label value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tissue {
    /// 0 / anything not named by the scheme's structures.
    Background,
    /// LV blood pool.
    LvCavity,
    /// Healthy myocardium.
    Myocardium,
    /// Scar.
    Scar,
    /// Microvascular obstruction.
    Mvo,
    /// Right ventricle.
    Rv,
}

impl LabelScheme {
    /// EMIDEC: 1 LV cavity, 2 myocardium, 3 scar, 4 MVO, no RV.
    pub const EMIDEC: LabelScheme = LabelScheme {
        lv_cavity: 1,
        myocardium: 2,
        scar: 3,
        mvo: 4,
        rv: None,
    };

    /// EMIDEC plus an RV label 5 (the procedural phantom's scheme).
    pub const EMIDEC_WITH_RV: LabelScheme = LabelScheme {
        rv: Some(5),
        ..LabelScheme::EMIDEC
    };

    /// Checks that labels are non-negative and distinct.
    pub fn validate(&self) -> Result<()> {
        let mut named = vec![
            ("lv_cavity", self.lv_cavity),
            ("myocardium", self.myocardium),
            ("scar", self.scar),
            ("mvo", self.mvo),
        ];
        if let Some(rv) = self.rv {
            named.push(("rv", rv));
        }
        for (name, value) in &named {
            if *value <= 0 {
                return Err(Error::invalid(format!(
                    "label scheme: {name} must be a positive label (0 is background), got {value}"
                )));
            }
        }
        for a in 0..named.len() {
            for b in a + 1..named.len() {
                if named[a].1 == named[b].1 {
                    return Err(Error::invalid(format!(
                        "label scheme: {} and {} share the label {}",
                        named[a].0, named[b].0, named[a].1
                    )));
                }
            }
        }
        Ok(())
    }

    /// The tissue of a label value (`None` for a non-zero value the scheme
    /// does not name).
    pub fn tissue(&self, label: i32) -> Option<Tissue> {
        match label {
            0 => Some(Tissue::Background),
            l if l == self.lv_cavity => Some(Tissue::LvCavity),
            l if l == self.myocardium => Some(Tissue::Myocardium),
            l if l == self.scar => Some(Tissue::Scar),
            l if l == self.mvo => Some(Tissue::Mvo),
            l if Some(l) == self.rv => Some(Tissue::Rv),
            _ => None,
        }
    }

    /// True for labels that belong to the whole myocardium (healthy, scar, MVO).
    pub fn is_myocardium(&self, label: i32) -> bool {
        label == self.myocardium || label == self.scar || label == self.mvo
    }

    /// True for scar or MVO.
    pub fn is_lesion(&self, label: i32) -> bool {
        label == self.scar || label == self.mvo
    }
}

/// Largest integer an f32 holds exactly (and every integer below it).
const F32_EXACT_INTEGER: i32 = 1 << 24;

/// Whether voxels of `dtype` hold the label `label` exactly.
pub fn voxel_type_holds(dtype: DType, label: i32) -> bool {
    match dtype {
        DType::U8 => u8::try_from(label).is_ok(),
        DType::I16 => i16::try_from(label).is_ok(),
        DType::U16 => u16::try_from(label).is_ok(),
        DType::I32 => true,
        DType::F32 => label.abs() <= F32_EXACT_INTEGER,
    }
}

/// A label map as an image of `dtype` (e.g. the voxel type of the file it
/// was read from), every label exactly; an [`Error::InvalidArgument`]
/// naming the first label `dtype` cannot hold.
pub fn narrow_labels(labels: &Volume<i32>, dtype: DType) -> Result<Image> {
    fn narrow<T: TryFrom<i32> + Clone + Default>(
        labels: &Volume<i32>,
        dtype: DType,
    ) -> Result<Volume<T>> {
        let data = labels
            .data
            .iter()
            .map(|&l| {
                T::try_from(l).map_err(|_| {
                    Error::invalid(format!(
                        "label {l} does not fit the output voxel type {}",
                        dtype.name()
                    ))
                })
            })
            .collect::<Result<Vec<T>>>()?;
        Volume::from_vec(labels.dims(), data, labels.geometry)
    }
    Ok(match dtype {
        DType::U8 => Image::U8(narrow(labels, dtype)?),
        DType::I16 => Image::I16(narrow(labels, dtype)?),
        DType::U16 => Image::U16(narrow(labels, dtype)?),
        DType::I32 => Image::I32(labels.clone()),
        DType::F32 => {
            if let Some(l) = labels
                .data
                .iter()
                .find(|l| !voxel_type_holds(DType::F32, **l))
            {
                return Err(Error::invalid(format!(
                    "label {l} is too large for the output voxel type f32"
                )));
            }
            // Exact: every label is at most 2^24 in magnitude (checked above).
            Image::F32(labels.map(|l| *l as f32))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn label_images_keep_the_type_or_refuse() {
        let labels = Volume::from_vec([3, 1, 1], vec![0, 2, 300], Geometry::default()).unwrap();
        let msg = narrow_labels(&labels, DType::U8).unwrap_err().to_string();
        assert!(
            msg.contains("label 300 does not fit the output voxel type u8"),
            "{msg}"
        );
        let Image::I16(v) = narrow_labels(&labels, DType::I16).unwrap() else {
            panic!("not i16");
        };
        assert_eq!(v.data.iter().copied().collect::<Vec<_>>(), vec![0, 2, 300]);
        let Image::F32(v) = narrow_labels(&labels, DType::F32).unwrap() else {
            panic!("not f32");
        };
        assert_eq!(v.data[[0, 0, 2]], 300.0);
        let huge = Volume::from_vec([1, 1, 1], vec![(1 << 24) + 1], Geometry::default()).unwrap();
        assert!(narrow_labels(&huge, DType::F32).is_err());
        assert!(voxel_type_holds(DType::U8, 255) && !voxel_type_holds(DType::U8, 256));
        assert!(!voxel_type_holds(DType::U16, -1));
        assert!(!voxel_type_holds(DType::F32, (1 << 24) + 1));
        assert!(voxel_type_holds(DType::I32, i32::MIN));
    }

    #[test]
    fn emidec_default() {
        let s = LabelScheme::default();
        s.validate().unwrap();
        assert_eq!(s.tissue(1), Some(Tissue::LvCavity));
        assert_eq!(s.tissue(4), Some(Tissue::Mvo));
        assert_eq!(s.tissue(7), None);
        assert!(s.is_myocardium(3) && !s.is_myocardium(1));
    }

    #[test]
    fn rejects_duplicates_and_negatives() {
        let dup = LabelScheme {
            scar: 2,
            ..LabelScheme::EMIDEC
        };
        assert!(dup.validate().unwrap_err().to_string().contains("share"));
        let neg = LabelScheme {
            rv: Some(-3),
            ..LabelScheme::EMIDEC
        };
        assert!(neg.validate().is_err());
    }
}

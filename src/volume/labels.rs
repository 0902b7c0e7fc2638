//! Label conventions of cardiac label maps.

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Anatomical post-processing of a predicted label map and the mapping of a
//! model's labels onto the caller's [`LabelScheme`].
//!
//! **Which dataset label is which tissue** is decided by its name in
//! `dataset.json`, compared case-insensitively with `_` and `-` read as
//! spaces and runs of spaces collapsed:
//!
//! | tissue | names |
//! |---|---|
//! | LV cavity | `lv`, `lv cavity`, `lvc`, `cavity`, `blood pool`, `bloodpool`, `lv blood pool`, `lv bloodpool`, `left ventricle` |
//! | myocardium | `myocardium`, `myo`, `lv myocardium`, `healthy myocardium`, `normal myocardium` |
//! | scar | `scar`, `infarct`, `infarction`, `myocardial infarction`, `enhancement`, `late enhancement`, `lge`, `fibrosis` |
//! | MVO | `mvo`, `no reflow`, `noreflow`, `microvascular obstruction` |
//! | RV | `rv`, `rv cavity`, `rv blood pool`, `right ventricle` |
//!
//! Background (value 0) stays 0. A recognised tissue is written with the
//! scheme's value for it (the RV only when the scheme has one); a label
//! whose name is not in the table keeps its dataset value (which may then
//! coincide with a scheme value — the caller chose both).
//!
//! **Post-processing** (on by default, [`SegmentParams::postprocess`]) uses
//! 26-connectivity (faces, edges and corners) and runs in this order:
//!
//! 1. *MVO lies in scar*: every connected MVO component without a voxel
//!    26-adjacent to a scar voxel is relabelled scar (MVO is the core of an
//!    infarct, so an MVO island is taken to be infarct). Skipped when the
//!    model has no scar label.
//! 2. *Lesions sit on the myocardium*: every connected component of
//!    scar ∪ MVO without a voxel 26-adjacent to a (healthy) myocardium
//!    voxel becomes background, as nnU-Net's own component removal does.
//!    Skipped when the model has no myocardium label.
//!
//! [`SegmentParams::postprocess`]: super::SegmentParams::postprocess

use crate::imgproc::components::{neighbour_index, unflatten};
use crate::imgproc::{label_components, Connectivity};
use crate::volume::{LabelScheme, Tissue, Volume};
use crate::{Error, Result};

/// The tissue a dataset label name stands for (the table in the module
/// documentation), `None` for names not in it.
pub fn tissue_of_label_name(name: &str) -> Option<Tissue> {
    let normalised = name
        .to_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let tissue = match normalised.as_str() {
        "background" => Tissue::Background,
        "lv" | "lv cavity" | "lvc" | "cavity" | "blood pool" | "bloodpool" | "lv blood pool"
        | "lv bloodpool" | "left ventricle" => Tissue::LvCavity,
        "myocardium" | "myo" | "lv myocardium" | "healthy myocardium" | "normal myocardium" => {
            Tissue::Myocardium
        }
        "scar"
        | "infarct"
        | "infarction"
        | "myocardial infarction"
        | "enhancement"
        | "late enhancement"
        | "lge"
        | "fibrosis" => Tissue::Scar,
        "mvo" | "no reflow" | "noreflow" | "microvascular obstruction" => Tissue::Mvo,
        "rv" | "rv cavity" | "rv blood pool" | "right ventricle" => Tissue::Rv,
        _ => return None,
    };
    Some(tissue)
}

/// Per dataset label (index = class = value), its tissue by name.
pub fn label_tissues(labels: &[(String, i32)]) -> Vec<Option<Tissue>> {
    labels
        .iter()
        .map(|(name, value)| {
            if *value == 0 {
                Some(Tissue::Background)
            } else {
                tissue_of_label_name(name)
            }
        })
        .collect()
}

/// The output value of every class under `scheme` (see the module table).
pub fn output_values(labels: &[(String, i32)], scheme: &LabelScheme) -> Result<Vec<u8>> {
    scheme.validate()?;
    label_tissues(labels)
        .iter()
        .zip(labels)
        .map(|(tissue, (name, value))| {
            let v = match tissue {
                Some(Tissue::Background) => 0,
                Some(Tissue::LvCavity) => scheme.lv_cavity,
                Some(Tissue::Myocardium) => scheme.myocardium,
                Some(Tissue::Scar) => scheme.scar,
                Some(Tissue::Mvo) => scheme.mvo,
                Some(Tissue::Rv) => scheme.rv.unwrap_or(*value),
                None => *value,
            };
            u8::try_from(v).map_err(|_| {
                Error::invalid(format!(
                    "label `{name}` would be written as {v}, which a u8 label map cannot hold"
                ))
            })
        })
        .collect()
}

/// Which components of `mask` have a voxel 26-adjacent to a voxel where
/// `target` holds; index = component label − 1.
fn components_touching(
    mask: &Volume<bool>,
    target: &[bool],
) -> Result<(crate::imgproc::Components, Vec<bool>)> {
    let comps = label_components(mask, Connectivity::Vertex26)?;
    let dims = mask.dims();
    let labels = comps.labels.as_slice()?;
    let offsets = Connectivity::Vertex26.offsets();
    let mut touching = vec![false; comps.count()];
    for (n, &l) in labels.iter().enumerate() {
        if l == 0 || touching[l as usize - 1] {
            continue;
        }
        let ijk = unflatten(dims, n);
        if offsets
            .iter()
            .filter_map(|off| neighbour_index(dims, ijk, *off))
            .any(|m| target[m])
        {
            touching[l as usize - 1] = true;
        }
    }
    Ok((comps, touching))
}

/// Applies the two rules of the module documentation to a map of class
/// indices whose tissues are `tissues` (by class).
pub fn postprocess_classes(classes: &mut Volume<u8>, tissues: &[Option<Tissue>]) -> Result<()> {
    let class_of = |t: Tissue| tissues.iter().position(|x| *x == Some(t)).map(|c| c as u8);
    let is = |t: Tissue| -> Vec<bool> {
        (0..=u8::MAX)
            .map(|c| tissues.get(c as usize).copied().flatten() == Some(t))
            .collect()
    };
    let (is_scar, is_mvo, is_myo) = (is(Tissue::Scar), is(Tissue::Mvo), is(Tissue::Myocardium));
    let scar_class = class_of(Tissue::Scar);
    let geometry = classes.geometry;

    if let Some(scar) = scar_class {
        let mvo = classes.map(|&c| is_mvo[c as usize]);
        if mvo.data.iter().any(|&b| b) {
            let scar_mask: Vec<bool> = classes.data.iter().map(|&c| is_scar[c as usize]).collect();
            let (comps, touching) = components_touching(&mvo, &scar_mask)?;
            for (c, &l) in classes.data.iter_mut().zip(comps.labels.data.iter()) {
                if l != 0 && !touching[l as usize - 1] {
                    *c = scar;
                }
            }
        }
    }
    if class_of(Tissue::Myocardium).is_some() {
        let lesion = classes.map(|&c| is_scar[c as usize] || is_mvo[c as usize]);
        if lesion.data.iter().any(|&b| b) {
            let myo: Vec<bool> = classes.data.iter().map(|&c| is_myo[c as usize]).collect();
            let (comps, touching) = components_touching(&lesion, &myo)?;
            for (c, &l) in classes.data.iter_mut().zip(comps.labels.data.iter()) {
                if l != 0 && !touching[l as usize - 1] {
                    *c = 0;
                }
            }
        }
    }
    classes.geometry = geometry;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn emidec_labels() -> Vec<(String, i32)> {
        [
            "background",
            "Cavity",
            "normal_myocardium",
            "Infarction",
            "No-Reflow",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i as i32))
        .collect()
    }

    #[test]
    fn names_map_onto_the_scheme() {
        let scheme = LabelScheme {
            lv_cavity: 10,
            myocardium: 20,
            scar: 30,
            mvo: 40,
            rv: None,
        };
        assert_eq!(
            output_values(&emidec_labels(), &scheme).unwrap(),
            vec![0, 10, 20, 30, 40]
        );
        let odd = vec![
            ("background".to_string(), 0),
            ("RV".to_string(), 1),
            ("pericardium".to_string(), 2),
        ];
        assert_eq!(
            output_values(&odd, &LabelScheme::EMIDEC).unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(
            output_values(&odd, &LabelScheme::EMIDEC_WITH_RV).unwrap(),
            vec![0, 5, 2]
        );
        let big = LabelScheme {
            scar: 300,
            ..LabelScheme::EMIDEC
        };
        assert!(output_values(&emidec_labels(), &big).is_err());
        assert_eq!(
            tissue_of_label_name("  LV  Blood_Pool "),
            Some(Tissue::LvCavity)
        );
        assert_eq!(tissue_of_label_name("papillary"), None);
    }

    /// A 1-voxel-thick slab: myocardium row, a scar blob touching it, a scar
    /// island, an MVO inside the attached scar and an MVO island on the
    /// myocardium.
    #[test]
    fn lesions_must_touch_myocardium_and_mvo_must_touch_scar() {
        let tissues = label_tissues(&emidec_labels());
        let rows = [
            "2222222222",
            "3343000000",
            "3330000330",
            "0000000000",
            "2240000000",
        ];
        let data: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b - b'0'))
            .collect();
        let mut v = Volume::from_vec([10, 5, 1], data, Geometry::default()).unwrap();
        postprocess_classes(&mut v, &tissues).unwrap();
        let got: Vec<String> = (0..5)
            .map(|j| (0..10).map(|i| char::from(b'0' + v.at(i, j, 0))).collect())
            .collect();
        assert_eq!(
            got,
            vec![
                "2222222222",
                "3343000000",
                "3330000000", // scar island removed
                "0000000000",
                "2230000000", // MVO island touching myocardium becomes scar
            ]
        );
    }
}

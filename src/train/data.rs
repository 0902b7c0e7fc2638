//! Training data read in place: an EMIDEC-layout folder, an nnU-Net raw
//! dataset, or generated phantoms.
//!
//! - EMIDEC: `<dir>/<Case>/Images/<Case>.nii.gz` with its labels at
//!   `<dir>/<Case>/Contours/<Case>.nii.gz` (labels in the EMIDEC scheme).
//! - nnU-Net raw: `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`
//!   and `dataset.json`, whose label names are mapped onto a
//!   [`LabelScheme`] (names as `claim segment` reads them).
//! - Phantoms: `n` cases of [`crate::phantom`], every one with an infarct.
//!
//! Every case is read before training starts, so a bad case stops the run
//! before any work, with its path in the error.

use crate::io::emidec::{find_cases, nifti_file};
use crate::io::nifti::read_image;
use crate::segmentation::postprocess::tissue_of_label_name;
use crate::volume::{Image, LabelScheme, Tissue, Volume};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One training case: an image and its label map on the same grid.
#[derive(Clone, Debug)]
pub struct TrainingCase {
    /// The case's name (folder or file stem).
    pub name: String,
    /// The image.
    pub image: Image,
    /// The labels, in `scheme` of the [`TrainingData`].
    pub labels: Volume<i32>,
}

/// The cases of a dataset and the label scheme of their label maps.
#[derive(Clone, Debug)]
pub struct TrainingData {
    /// Every case, sorted by name.
    pub cases: Vec<TrainingCase>,
    /// What the label values mean.
    pub scheme: LabelScheme,
    /// Where the data came from (for logs and manifests).
    pub source: String,
}

/// The folder layouts [`read_dataset`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetLayout {
    /// `Case_*/Images` + `Case_*/Contours`.
    Emidec,
    /// `imagesTr` + `labelsTr` + `dataset.json`.
    NnUnetRaw,
}

/// Which layout `dir` has, or an error saying what was looked for.
pub fn detect_layout(dir: &Path) -> Result<DatasetLayout> {
    if !dir.is_dir() {
        return Err(Error::Io(format!("{}: not a folder", dir.display())));
    }
    if dir.join("dataset.json").is_file() && dir.join("imagesTr").is_dir() {
        return Ok(DatasetLayout::NnUnetRaw);
    }
    if !find_cases(dir)?.is_empty() {
        return Ok(DatasetLayout::Emidec);
    }
    Err(Error::invalid(format!(
        "{}: neither an nnU-Net raw dataset (dataset.json + imagesTr/ + labelsTr/) nor an \
         EMIDEC-layout folder (Case_*/Images/ + Case_*/Contours/)",
        dir.display()
    )))
}

/// One case's files, listed but not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFiles {
    /// The case's name (EMIDEC folder, or nnU-Net case identifier).
    pub name: String,
    /// Its image (channel 0).
    pub image: PathBuf,
    /// Its label map.
    pub labels: PathBuf,
}

/// A dataset's cases, listed without reading any image.
#[derive(Clone, Debug)]
pub struct DatasetListing {
    /// The folder layout.
    pub layout: DatasetLayout,
    /// Every case, sorted by name.
    pub cases: Vec<CaseFiles>,
    /// What the label values mean.
    pub scheme: LabelScheme,
    /// The nnU-Net `dataset.json` (nnU-Net raw layout only).
    pub dataset_json: Option<serde_json::Value>,
    /// The file ending of the images and labels (`.nii.gz` or `.nii`; the
    /// nnU-Net dataset's `file_ending`).
    pub file_ending: String,
}

/// Lists the cases of the dataset in `dir` (layout detected). Only the
/// folder structure and `dataset.json` are read: a case whose files are
/// missing or broken is found by [`read_case`].
pub fn list_dataset(dir: &Path) -> Result<DatasetListing> {
    let listing = match detect_layout(dir)? {
        DatasetLayout::Emidec => list_emidec(dir)?,
        DatasetLayout::NnUnetRaw => list_nnunet_raw(dir)?,
    };
    if listing.cases.is_empty() {
        return Err(Error::invalid(format!(
            "{}: the dataset holds no case",
            dir.display()
        )));
    }
    Ok(listing)
}

/// Reads every case of the dataset in `dir` (layout detected).
pub fn read_dataset(dir: &Path) -> Result<TrainingData> {
    let listing = list_dataset(dir)?;
    let cases = listing
        .cases
        .iter()
        .map(read_case)
        .collect::<Result<Vec<_>>>()?;
    Ok(TrainingData {
        cases,
        scheme: listing.scheme,
        source: dir.display().to_string(),
    })
}

/// Reads one listed case: its image and labels, checked to share a grid.
pub fn read_case(files: &CaseFiles) -> Result<TrainingCase> {
    let (name, image, labels) = (&files.name, &files.image, &files.labels);
    if !image.is_file() {
        return Err(Error::Io(format!(
            "case {name}: no image {}",
            image.display()
        )));
    }
    // read_image's messages name the file already.
    let image_data = read_image(image)?;
    let label_data = read_image(labels)?
        .to_labels()
        .map_err(|e| e.context(labels.display()))?;
    if image_data.dims() != label_data.dims() {
        return Err(Error::invalid(format!(
            "case {name}: image {:?} and labels {:?} differ in size",
            image_data.dims(),
            label_data.dims()
        )));
    }
    Ok(TrainingCase {
        name: name.clone(),
        image: image_data,
        labels: label_data,
    })
}

fn list_emidec(dir: &Path) -> Result<DatasetListing> {
    let mut cases = Vec::new();
    for case in find_cases(dir)? {
        let images = dir.join(&case.name).join("Images");
        let image = nifti_file(&images, &case.name)
            .unwrap_or_else(|| images.join(format!("{}.nii.gz", case.name)));
        cases.push(CaseFiles {
            name: case.name.clone(),
            image,
            labels: case.ground_truth.clone(),
        });
    }
    Ok(DatasetListing {
        layout: DatasetLayout::Emidec,
        cases,
        scheme: LabelScheme::EMIDEC,
        dataset_json: None,
        file_ending: ".nii.gz".into(),
    })
}

/// The label scheme named by a `dataset.json` `labels` object.
pub fn scheme_from_dataset_json(json: &serde_json::Value, path: &Path) -> Result<LabelScheme> {
    let labels = json
        .get("labels")
        .and_then(|l| l.as_object())
        .ok_or_else(|| Error::format(format!("{}: no `labels` object", path.display())))?;
    let found = |tissue: Tissue| -> Option<i32> {
        labels.iter().find_map(|(name, v)| {
            let value = v.as_i64().or_else(|| v.as_array()?.first()?.as_i64())?;
            (tissue_of_label_name(name) == Some(tissue)).then_some(value as i32)
        })
    };
    let (lv, myo, scar) = (
        found(Tissue::LvCavity),
        found(Tissue::Myocardium),
        found(Tissue::Scar),
    );
    let (mvo, rv) = (found(Tissue::Mvo), found(Tissue::Rv));
    let names: Vec<&String> = labels.keys().collect();
    let missing: Vec<&str> = [("LV cavity", lv), ("myocardium", myo), ("scar", scar)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "{}: labels {} missing from dataset.json (its labels: {names:?})",
            path.display(),
            missing.join(", ")
        )));
    }
    // A dataset without MVO gets a value no voxel holds.
    let used: Vec<i32> = labels
        .values()
        .filter_map(|v| v.as_i64())
        .map(|v| v as i32)
        .collect();
    let spare = (1..).find(|v| !used.contains(v)).unwrap_or(i32::MAX);
    let scheme = LabelScheme {
        lv_cavity: lv.unwrap_or(1),
        myocardium: myo.unwrap_or(2),
        scar: scar.unwrap_or(3),
        mvo: mvo.unwrap_or(spare),
        rv,
    };
    scheme.validate().map_err(|e| e.context(path.display()))?;
    Ok(scheme)
}

fn list_nnunet_raw(dir: &Path) -> Result<DatasetListing> {
    let json_path = dir.join("dataset.json");
    let text = std::fs::read_to_string(&json_path).map_err(|e| Error::io_at(&json_path, &e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(format!("{}: {e}", json_path.display())))?;
    let scheme = scheme_from_dataset_json(&json, &json_path)?;
    let ending = json
        .get("file_ending")
        .and_then(|v| v.as_str())
        .unwrap_or(".nii.gz")
        .to_string();
    let (images, labels) = (dir.join("imagesTr"), dir.join("labelsTr"));
    let entries = std::fs::read_dir(&labels).map_err(|e| Error::io_at(&labels, &e))?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_at(&labels, &e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(&ending) {
            if !stem.starts_with('.') {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    let cases = names
        .into_iter()
        .map(|name| CaseFiles {
            image: images.join(format!("{name}_0000{ending}")),
            labels: labels.join(format!("{name}{ending}")),
            name,
        })
        .collect();
    Ok(DatasetListing {
        layout: DatasetLayout::NnUnetRaw,
        cases,
        scheme,
        dataset_json: Some(json),
        file_ending: ending,
    })
}

/// `count` phantom cases with infarcts, seeds `seed`, `seed + 1`, …, at
/// `matrix_size` pixels in-plane and `slices` slices (the built-in data).
pub fn phantom_dataset(
    count: usize,
    seed: u64,
    matrix_size: usize,
    slices: usize,
) -> Result<TrainingData> {
    phantom_cases(count, seed, matrix_size, slices, true)
}

/// `count` phantom cases, seeds `seed`, `seed + 1`, …, with infarcts
/// (`with_scar`) or without (normal hearts, the sources of synthetic
/// cases).
pub fn phantom_cases(
    count: usize,
    seed: u64,
    matrix_size: usize,
    slices: usize,
    with_scar: bool,
) -> Result<TrainingData> {
    if count == 0 {
        return Err(Error::invalid("--phantom: the number of cases must be ≥ 1"));
    }
    let mut cases = Vec::with_capacity(count);
    for i in 0..count {
        let params = crate::phantom::PhantomParams {
            seed: seed.wrapping_add(i as u64),
            with_scar,
            matrix_size,
            slice_count: slices,
            ..Default::default()
        };
        let case = crate::phantom::generate(&params)?;
        cases.push(TrainingCase {
            name: format!("phantom_{:04}", i),
            image: Image::F32(case.image),
            labels: case.labels,
        });
    }
    Ok(TrainingData {
        cases,
        scheme: crate::phantom::LABEL_SCHEME,
        source: format!(
            "{count} {} phantoms from seed {seed}",
            if with_scar { "scarred" } else { "normal" }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nifti::write_image;

    #[test]
    fn nnunet_label_names_map_onto_a_scheme() -> Result<()> {
        let p = Path::new("dataset.json");
        let json = serde_json::json!({"labels": {"background": 0, "cavity": 1,
            "normal_myocardium": 2, "infarction": 3, "no_reflow": 4}});
        assert_eq!(scheme_from_dataset_json(&json, p)?, LabelScheme::EMIDEC);
        let json = serde_json::json!({"labels": {"background": 0, "LV": 1, "myo": 2}});
        let err = scheme_from_dataset_json(&json, p).unwrap_err().to_string();
        assert!(err.contains("scar missing"), "{err}");
        Ok(())
    }

    #[test]
    fn both_layouts_are_read_and_bad_folders_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io(e.to_string()))?;
        let phantom = phantom_dataset(1, 3, 64, 3)?;
        let case = &phantom.cases[0];
        let labels = Image::I32(case.labels.clone());
        // EMIDEC layout.
        let emidec = dir.path().join("emidec");
        for sub in ["Images", "Contours"] {
            std::fs::create_dir_all(emidec.join("Case_P001").join(sub))
                .map_err(|e| Error::Io(e.to_string()))?;
        }
        write_image(
            &case.image,
            &emidec.join("Case_P001/Images/Case_P001.nii.gz"),
        )?;
        write_image(&labels, &emidec.join("Case_P001/Contours/Case_P001.nii.gz"))?;
        let data = read_dataset(&emidec)?;
        assert_eq!(data.cases.len(), 1);
        assert_eq!(data.cases[0].labels.data, case.labels.data);
        // nnU-Net raw layout.
        let raw = dir.path().join("raw");
        for sub in ["imagesTr", "labelsTr"] {
            std::fs::create_dir_all(raw.join(sub)).map_err(|e| Error::Io(e.to_string()))?;
        }
        write_image(&case.image, &raw.join("imagesTr/p1_0000.nii.gz"))?;
        write_image(&labels, &raw.join("labelsTr/p1.nii.gz"))?;
        let json = r#"{"channel_names": {"0": "LGE"}, "labels": {"background": 0, "lv": 1,
            "myocardium": 2, "scar": 3, "mvo": 4, "rv": 5}, "numTraining": 1,
            "file_ending": ".nii.gz"}"#;
        std::fs::write(raw.join("dataset.json"), json).map_err(|e| Error::Io(e.to_string()))?;
        let data = read_dataset(&raw)?;
        assert_eq!(data.scheme, LabelScheme::EMIDEC_WITH_RV);
        assert_eq!(data.cases[0].name, "p1");
        // A missing image names its path; an empty folder is refused.
        std::fs::write(raw.join("labelsTr/p2.nii.gz"), b"")
            .map_err(|e| Error::Io(e.to_string()))?;
        let err = read_dataset(&raw).unwrap_err().to_string();
        assert!(err.contains("p2_0000.nii.gz"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| Error::Io(e.to_string()))?;
        assert!(read_dataset(&empty).is_err());
        assert!(phantom_dataset(0, 1, 64, 3).is_err());
        Ok(())
    }
}

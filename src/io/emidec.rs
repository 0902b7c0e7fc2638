//! The EMIDEC challenge's folder layout: finding cases and their
//! predictions.
//!
//! A case is a folder `<root>/<Case>/` holding its ground truth as
//! `Contours/<Case>.nii.gz` (or `.nii`); a folder without one is not a case.
//! The prediction of `<Case>` is `<P>/<Case>.nii.gz` in a separate
//! predictions folder `P` (nnU-Net's output naming), else
//! `<root>/<Case>/Prediction/<Case>.nii.gz` (`.nii` works too).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One EMIDEC case: its name and its ground-truth label map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EmidecCase {
    /// The case's folder name, e.g. `Case_N001`.
    pub name: String,
    /// `<root>/<name>/Contours/<name>.nii.gz` (or `.nii`).
    pub ground_truth: PathBuf,
}

/// True for names ending in `.nii` or `.nii.gz` (any case).
pub fn is_nifti_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".nii") || lower.ends_with(".nii.gz")
}

/// The file name of `path` without `.nii` / `.nii.gz` (any case): the case
/// name of a label map file.
pub fn case_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii"] {
        if lower.ends_with(ext) {
            return name[..name.len() - ext.len()].to_string();
        }
    }
    name
}

/// `folder/stem.nii.gz`, else `folder/stem.nii`, whichever is a file
/// (`None` for neither).
pub fn nifti_file(folder: &Path, stem: &str) -> Option<PathBuf> {
    [".nii.gz", ".nii"]
        .iter()
        .map(|ext| folder.join(format!("{stem}{ext}")))
        .find(|p| p.is_file())
}

/// The EMIDEC cases under `root` (folders with a ground truth), sorted by
/// name. Errors when `root` is not a readable folder; an empty list when it
/// holds no case.
pub fn find_cases(root: &Path) -> Result<Vec<EmidecCase>> {
    if !root.is_dir() {
        return Err(Error::Io(format!("{}: not a folder", root.display())));
    }
    let entries = std::fs::read_dir(root).map_err(|e| Error::io_at(root, &e))?;
    let mut cases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_at(root, &e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ground_truth) = nifti_file(&path.join("Contours"), &name) {
            cases.push(EmidecCase { name, ground_truth });
        }
    }
    cases.sort();
    Ok(cases)
}

impl EmidecCase {
    /// The folder its prediction is looked for in: `predictions` when
    /// given, else `<root>/<name>/Prediction`.
    pub fn prediction_folder(&self, root: &Path, predictions: Option<&Path>) -> PathBuf {
        match predictions {
            Some(p) => p.to_path_buf(),
            None => root.join(&self.name).join("Prediction"),
        }
    }

    /// The case's prediction file: `Ok` with the file found, or `Err` with
    /// the `.nii.gz` path where it was expected.
    pub fn prediction(
        &self,
        root: &Path,
        predictions: Option<&Path>,
    ) -> std::result::Result<PathBuf, PathBuf> {
        let folder = self.prediction_folder(root, predictions);
        nifti_file(&folder, &self.name).ok_or_else(|| folder.join(format!("{}.nii.gz", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_drop_the_nifti_extension() {
        assert_eq!(case_name(Path::new("a/Case_N001.nii.gz")), "Case_N001");
        assert_eq!(case_name(Path::new("x.NII")), "x");
        assert_eq!(case_name(Path::new("plain")), "plain");
        assert!(is_nifti_name("a/b.nii") && is_nifti_name("x.NII.GZ"));
        assert!(!is_nifti_name("x.png") && !is_nifti_name("dir/"));
    }

    #[test]
    fn finds_cases_and_their_predictions() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (case, gt) in [
            ("Case_P002", "Case_P002.nii"),
            ("Case_N001", "Case_N001.nii.gz"),
        ] {
            std::fs::create_dir_all(r.join(case).join("Contours")).unwrap();
            std::fs::write(r.join(case).join("Contours").join(gt), b"").unwrap();
        }
        // Not cases: a folder without a ground truth and a plain file.
        std::fs::create_dir_all(r.join("notes/Contours")).unwrap();
        std::fs::write(r.join("README.nii.gz"), b"").unwrap();
        std::fs::create_dir_all(r.join("Case_N001/Prediction")).unwrap();
        std::fs::write(r.join("Case_N001/Prediction/Case_N001.nii.gz"), b"").unwrap();

        let cases = find_cases(r).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Case_N001", "Case_P002"]);
        assert_eq!(
            cases[1].ground_truth,
            r.join("Case_P002/Contours/Case_P002.nii")
        );
        assert_eq!(
            cases[0].prediction(r, None),
            Ok(r.join("Case_N001/Prediction/Case_N001.nii.gz"))
        );
        assert_eq!(
            cases[1].prediction(r, None),
            Err(r.join("Case_P002/Prediction/Case_P002.nii.gz"))
        );
        let elsewhere = r.join("preds");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("Case_P002.nii"), b"").unwrap();
        assert_eq!(
            cases[1].prediction(r, Some(&elsewhere)),
            Ok(elsewhere.join("Case_P002.nii"))
        );
        assert!(matches!(
            find_cases(&r.join("missing")),
            Err(Error::Io(m)) if m.contains("not a folder")
        ));
    }
}

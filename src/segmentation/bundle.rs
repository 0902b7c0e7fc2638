//! Loading a trained nnU-Net model without Python: a results folder, a
//! single checkpoint, or claim's one-file safetensors bundle.
//!
//! Accepted inputs of [`NnunetBundle::load`]:
//!
//! 1. a **results folder** `<Trainer>__<Plans>__<configuration>/` holding
//!    `plans.json`, `dataset.json` and `fold_<k>/checkpoint_final.pth`
//!    (and/or `fold_all/`). Without a fold selection the numbered folds
//!    present are used, sorted — as nnU-Net's predictor, which leaves
//!    `fold_all` out unless asked for it; `fold_all` is used only when there
//!    is no numbered fold. Trainer, configuration and mirroring axes come
//!    from the first checkpoint (its `trainer_name`,
//!    `init_args['configuration']`, `inference_allowed_mirroring_axes`),
//!    falling back to the folder name.
//! 2. a single **`checkpoint_final.pth`**: plans and dataset JSON from
//!    `plans.json`/`dataset.json` beside it, else two directories up (the
//!    results folder of `fold_<k>/checkpoint_final.pth`), else the
//!    checkpoint's own `init_args['plans']` / `['dataset_json']`; the fold
//!    from the `fold_<k>` directory name or `init_args['fold']`.
//! 3. a **safetensors bundle** written by [`NnunetBundle::write_safetensors`]
//!    (`claim import`): tensors `fold_<k>.<state-dict key>`, metadata
//!    `format` = `claim-nnunet-v2`, `nnunet.plans`, `nnunet.dataset`,
//!    `nnunet.configuration`, `nnunet.trainer`, `nnunet.mirroring_axes`
//!    (JSON array; absent when the checkpoint allows no mirroring) and
//!    `nnunet.folds` (JSON array of fold numbers, `"all"` for `fold_all`).
//!
//! State-dict keys are stored without wrapper prefixes (`module.`,
//! `_orig_mod.`) and without the upstream alias keys (see
//! [`crate::models::plain_unet::is_alias_key`]), so a bundle holds every
//! tensor once.

use crate::io::torch::{read_torch_file, state_dict_tensors, PickleValue};
use crate::models::plain_unet::is_alias_key;
use crate::nn::{Tensor, Weights};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The fold number standing for nnU-Net's `fold_all` (a model trained on
/// all cases).
pub const FOLD_ALL: usize = usize::MAX;

/// The value of the safetensors metadata key `format`.
pub const BUNDLE_FORMAT: &str = "claim-nnunet-v2";

/// The checkpoint file nnU-Net's predictor uses by default.
const CHECKPOINT_NAME: &str = "checkpoint_final.pth";

/// `"all"` for [`FOLD_ALL`], else the number.
pub fn fold_name(fold: usize) -> String {
    if fold == FOLD_ALL {
        "all".to_string()
    } else {
        fold.to_string()
    }
}

/// The fold of a directory name `fold_<k>` / `fold_all`.
fn parse_fold_dir(name: &str) -> Option<usize> {
    match name.strip_prefix("fold_")? {
        "all" => Some(FOLD_ALL),
        k => k.parse().ok().filter(|&k| k != FOLD_ALL),
    }
}

/// A trained nnU-Net model as plain data: the JSON files, what the
/// checkpoints say about training, and every selected fold's weights.
#[derive(Clone)]
pub struct NnunetBundle {
    /// `plans.json`, verbatim.
    pub plans_json: String,
    /// `dataset.json`, verbatim.
    pub dataset_json: String,
    /// The configuration the checkpoints were trained with (e.g. `2d`).
    pub configuration: String,
    /// The trainer class name (e.g. `nnUNetTrainer`).
    pub trainer: String,
    /// Spatial axes the trainer allows mirroring over at inference; `None`
    /// means no test-time mirroring (nnU-Net's behaviour when the checkpoint
    /// has no or a `None` entry).
    pub mirroring_axes: Option<Vec<usize>>,
    /// `(fold, state dict)` per fold, in use order; [`FOLD_ALL`] is `fold_all`.
    pub folds: Vec<(usize, Vec<(String, Tensor)>)>,
}

/// `(trainer, configuration, mirroring axes)` as a checkpoint states them.
type TrainingFacts = (Option<String>, Option<String>, Option<Vec<usize>>);

impl std::fmt::Debug for NnunetBundle {
    // Sizes instead of the weights themselves (millions of numbers).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let folds: Vec<String> = self
            .folds
            .iter()
            .map(|(k, sd)| format!("fold {}: {} tensors", fold_name(*k), sd.len()))
            .collect();
        f.debug_struct("NnunetBundle")
            .field("configuration", &self.configuration)
            .field("trainer", &self.trainer)
            .field("mirroring_axes", &self.mirroring_axes)
            .field("folds", &folds)
            .field("plans_json", &format!("{} bytes", self.plans_json.len()))
            .field(
                "dataset_json",
                &format!("{} bytes", self.dataset_json.len()),
            )
            .finish()
    }
}

/// What one checkpoint contributes.
struct Checkpoint {
    weights: Vec<(String, Tensor)>,
    trainer: Option<String>,
    configuration: Option<String>,
    mirroring_axes: Option<Vec<usize>>,
    fold: Option<usize>,
    plans: Option<String>,
    dataset: Option<String>,
}

/// Keys without wrapper prefixes, alias keys dropped.
fn canonical_state_dict(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named
        .into_iter()
        .filter(|(k, _)| !is_alias_key(k))
        .map(|(k, t)| {
            let mut key = k.as_str();
            while let Some(rest) = key
                .strip_prefix("module.")
                .or_else(|| key.strip_prefix("_orig_mod."))
            {
                key = rest;
            }
            (key.to_string(), t)
        })
        .collect()
}

/// `inference_allowed_mirroring_axes`: a tuple/list of axis numbers or None.
fn mirroring_axes_of(v: Option<&PickleValue>, path: &Path) -> Result<Option<Vec<usize>>> {
    match v {
        None | Some(PickleValue::None) => Ok(None),
        Some(v) => {
            let items = v.as_seq().ok_or_else(|| {
                Error::format(format!(
                    "{}: inference_allowed_mirroring_axes is a {}, expected a tuple",
                    path.display(),
                    v.kind()
                ))
            })?;
            items
                .iter()
                .map(|a| {
                    a.as_i64()
                        .and_then(|a| usize::try_from(a).ok())
                        .filter(|&a| a < 3)
                        .ok_or_else(|| {
                            Error::format(format!(
                                "{}: mirroring axis {} is not 0, 1 or 2",
                                path.display(),
                                a.to_json()
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        }
    }
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let ckpt = read_torch_file(path)?;
    let weights = ckpt.get("network_weights").ok_or_else(|| {
        Error::format(format!(
            "{}: no `network_weights` entry; not an nnU-Net checkpoint",
            path.display()
        ))
    })?;
    let weights = canonical_state_dict(
        state_dict_tensors(weights)
            .map_err(|e| Error::format(format!("{}: network_weights: {e}", path.display())))?,
    );
    let init = ckpt.get("init_args");
    let json_text = |key: &str| {
        init.and_then(|i| i.get(key))
            .filter(|v| matches!(v, PickleValue::Dict(_)))
            .map(|v| v.to_json().to_string())
    };
    let fold = init.and_then(|i| i.get("fold")).and_then(|f| match f {
        PickleValue::Str(s) if s == "all" => Some(FOLD_ALL),
        other => other.as_i64().and_then(|k| usize::try_from(k).ok()),
    });
    Ok(Checkpoint {
        weights,
        trainer: ckpt
            .get("trainer_name")
            .and_then(PickleValue::as_str)
            .map(str::to_string),
        configuration: init
            .and_then(|i| i.get("configuration"))
            .and_then(PickleValue::as_str)
            .map(str::to_string),
        mirroring_axes: mirroring_axes_of(ckpt.get("inference_allowed_mirroring_axes"), path)?,
        fold,
        plans: json_text("plans"),
        dataset: json_text("dataset_json"),
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io_at(path, &e))
}

/// `(trainer, configuration)` from a results folder name
/// `<Trainer>__<Plans>__<configuration>`.
fn names_from_folder(dir: &Path) -> (Option<String>, Option<String>) {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let parts: Vec<&str> = name.split("__").collect();
    match parts[..] {
        [trainer, _, configuration] => (Some(trainer.into()), Some(configuration.into())),
        _ => (None, None),
    }
}

impl NnunetBundle {
    /// Loads a results folder, a `checkpoint_final.pth` or a safetensors
    /// bundle (see the module documentation); `builtin` is the built-in
    /// segmenter ([`crate::models::builtin`]). `folds` selects folds
    /// ([`FOLD_ALL`] for `fold_all`); a requested fold that is not there is
    /// [`Error::InvalidArgument`] naming the folds that are.
    pub fn load(path: &Path, folds: Option<&[usize]>) -> Result<NnunetBundle> {
        if crate::models::builtin::is_builtin(path) {
            return crate::models::builtin::segmenter_bundle(folds);
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::io_at(path, &e))?;
        if meta.is_dir() {
            return Self::load_folder(path, folds);
        }
        let mut magic = [0u8; 16];
        {
            use std::io::Read;
            let f = std::fs::File::open(path).map_err(|e| Error::io_at(path, &e))?;
            let mut head = Vec::with_capacity(16);
            f.take(16)
                .read_to_end(&mut head)
                .map_err(|e| Error::io_at(path, &e))?;
            let n = head.len();
            magic[..n].copy_from_slice(&head);
        }
        // A zip archive is a torch checkpoint; so is a bare pickle (the
        // legacy format), which the checkpoint reader refuses in the same
        // words as `claim import` does.
        if crate::io::looks_like_torch_checkpoint(&magic) {
            Self::load_checkpoint(path, folds)
        } else {
            Self::load_safetensors(path, folds)
        }
    }

    /// The fold numbers, in use order.
    pub fn fold_numbers(&self) -> Vec<usize> {
        self.folds.iter().map(|(k, _)| *k).collect()
    }

    fn load_folder(dir: &Path, folds: Option<&[usize]>) -> Result<NnunetBundle> {
        let mut available: Vec<(usize, PathBuf)> = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io_at(dir, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io_at(dir, &e))?;
            let name = entry.file_name();
            let Some(fold) = name.to_str().and_then(parse_fold_dir) else {
                continue;
            };
            let ckpt = entry.path().join(CHECKPOINT_NAME);
            if ckpt.is_file() {
                available.push((fold, ckpt));
            }
        }
        available.sort_by_key(|(k, _)| *k);
        let available_names = || {
            if available.is_empty() {
                "none".to_string()
            } else {
                available
                    .iter()
                    .map(|(k, _)| fold_name(*k))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let chosen: Vec<(usize, PathBuf)> = match folds {
            Some(wanted) => {
                if wanted.is_empty() {
                    return Err(Error::invalid("an empty fold selection"));
                }
                let mut chosen = Vec::with_capacity(wanted.len());
                for &k in wanted {
                    let found = available.iter().find(|(a, _)| *a == k).ok_or_else(|| {
                        Error::invalid(format!(
                            "fold {} not found: {} does not exist (folds with {CHECKPOINT_NAME}: {})",
                            fold_name(k),
                            dir.join(format!("fold_{}", fold_name(k)))
                                .join(CHECKPOINT_NAME)
                                .display(),
                            available_names()
                        ))
                    })?;
                    if chosen.iter().any(|(c, _)| *c == k) {
                        return Err(Error::invalid(format!(
                            "fold {} selected twice",
                            fold_name(k)
                        )));
                    }
                    chosen.push(found.clone());
                }
                chosen
            }
            None => {
                let numbered: Vec<_> = available
                    .iter()
                    .filter(|(k, _)| *k != FOLD_ALL)
                    .cloned()
                    .collect();
                if numbered.is_empty() {
                    available.clone()
                } else {
                    numbered
                }
            }
        };
        if chosen.is_empty() {
            return Err(Error::Io(format!(
                "{}: not an nnU-Net results folder (no fold_<k>/{CHECKPOINT_NAME})",
                dir.display()
            )));
        }
        let plans_json = read_text(&dir.join("plans.json"))?;
        let dataset_json = read_text(&dir.join("dataset.json"))?;
        let (folder_trainer, folder_configuration) = names_from_folder(dir);
        let mut bundle_folds = Vec::with_capacity(chosen.len());
        // (trainer, configuration, mirroring axes) of the first checkpoint.
        let mut first: Option<TrainingFacts> = None;
        for (k, path) in &chosen {
            let ckpt = read_checkpoint(path)?;
            match &first {
                None => {
                    first = Some((ckpt.trainer, ckpt.configuration, ckpt.mirroring_axes));
                }
                Some((_, configuration, _)) => {
                    if ckpt.configuration.is_some()
                        && configuration.is_some()
                        && ckpt.configuration != *configuration
                    {
                        return Err(Error::format(format!(
                            "{}: trained for configuration {:?}, but the first fold for {:?}",
                            path.display(),
                            ckpt.configuration.unwrap_or_default(),
                            configuration.clone().unwrap_or_default()
                        )));
                    }
                }
            }
            bundle_folds.push((*k, ckpt.weights));
        }
        let (trainer, configuration, mirroring_axes) = first.unwrap_or((None, None, None));
        let configuration = configuration.or(folder_configuration).ok_or_else(|| {
            Error::format(format!(
                "{}: the checkpoints name no configuration and the folder name is not \
                 <Trainer>__<Plans>__<configuration>",
                dir.display()
            ))
        })?;
        Ok(NnunetBundle {
            plans_json,
            dataset_json,
            configuration,
            trainer: trainer.or(folder_trainer).unwrap_or_default(),
            mirroring_axes,
            folds: bundle_folds,
        })
    }

    fn load_checkpoint(path: &Path, folds: Option<&[usize]>) -> Result<NnunetBundle> {
        let ckpt = read_checkpoint(path)?;
        let parent = path.parent().unwrap_or(Path::new("."));
        let fold_dir_fold = parent
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_fold_dir);
        let fold = fold_dir_fold.or(ckpt.fold).unwrap_or(0);
        if let Some(wanted) = folds {
            if wanted != [fold] {
                return Err(Error::invalid(format!(
                    "{} holds fold {} only; selected folds: {}",
                    path.display(),
                    fold_name(fold),
                    wanted
                        .iter()
                        .map(|k| fold_name(*k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        // The JSON files of the results folder win over the copies in the
        // checkpoint, as nnU-Net's predictor reads the folder's files.
        let mut dirs = vec![parent.to_path_buf()];
        if let Some(up) = parent.parent() {
            dirs.push(up.to_path_buf());
        }
        let find = |name: &str, embedded: Option<String>, what: &str| -> Result<String> {
            for d in &dirs {
                let p = d.join(name);
                if p.is_file() {
                    return read_text(&p);
                }
            }
            embedded.ok_or_else(|| {
                Error::format(format!(
                    "{}: no {name} beside it or two directories up, and the checkpoint's \
                     init_args hold no `{what}`",
                    path.display()
                ))
            })
        };
        let plans_json = find("plans.json", ckpt.plans, "plans")?;
        let dataset_json = find("dataset.json", ckpt.dataset, "dataset_json")?;
        let (folder_trainer, folder_configuration) = dirs
            .get(1)
            .map(|d| names_from_folder(d))
            .unwrap_or((None, None));
        let configuration = ckpt.configuration.or(folder_configuration).ok_or_else(|| {
            Error::format(format!(
                "{}: init_args name no configuration",
                path.display()
            ))
        })?;
        Ok(NnunetBundle {
            plans_json,
            dataset_json,
            configuration,
            trainer: ckpt.trainer.or(folder_trainer).unwrap_or_default(),
            mirroring_axes: ckpt.mirroring_axes,
            folds: vec![(fold, ckpt.weights)],
        })
    }

    fn load_safetensors(path: &Path, folds: Option<&[usize]>) -> Result<NnunetBundle> {
        let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, &e))?;
        Self::from_safetensors_bytes(&bytes, path, folds)
    }

    /// Parses a safetensors bundle held in memory (`path` names it in
    /// errors; the built-in model is one).
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        path: &Path,
        folds: Option<&[usize]>,
    ) -> Result<NnunetBundle> {
        let bad = |m: String| Error::format(format!("{}: {m}", path.display()));
        if let Err(Error::Format(why)) = crate::io::check_safetensors_magic(bytes) {
            return Err(bad(format!(
                "neither an nnU-Net results folder nor a torch checkpoint, and {why}"
            )));
        }
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
            bad(format!(
                "neither an nnU-Net results folder, a torch checkpoint nor a safetensors \
                 file ({e})"
            ))
        })?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| -> Result<String> {
            meta.get(key)
                .cloned()
                .ok_or_else(|| bad(format!("safetensors metadata lacks `{key}`")))
        };
        let format = field("format")?;
        if format != BUNDLE_FORMAT {
            return Err(bad(format!(
                "safetensors metadata format is `{format}`, expected `{BUNDLE_FORMAT}`"
            )));
        }
        let mirroring_axes = match meta.get("nnunet.mirroring_axes") {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Vec<usize>>(text)
                    .ok()
                    .filter(|a| a.iter().all(|&x| x < 3))
                    .ok_or_else(|| {
                        bad(format!(
                            "nnunet.mirroring_axes `{text}` is not a list of axes"
                        ))
                    })?,
            ),
        };
        let fold_list: Vec<serde_json::Value> = serde_json::from_str(&field("nnunet.folds")?)
            .map_err(|e| bad(format!("nnunet.folds: {e}")))?;
        let stored: Vec<usize> = fold_list
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) if s == "all" => Ok(FOLD_ALL),
                other => other
                    .as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|&k| k != FOLD_ALL)
                    .ok_or_else(|| bad(format!("nnunet.folds entry {other} is not a fold"))),
            })
            .collect::<Result<_>>()?;
        let chosen: Vec<usize> = match folds {
            Some(wanted) => {
                for k in wanted {
                    if !stored.contains(k) {
                        return Err(Error::invalid(format!(
                            "fold {} not found in {} (it holds folds {})",
                            fold_name(*k),
                            path.display(),
                            stored
                                .iter()
                                .map(|k| fold_name(*k))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                wanted.to_vec()
            }
            None => stored.clone(),
        };
        let weights = Weights::from_safetensors(bytes).map_err(|e| match e {
            Error::Format(m) | Error::Model(m) => bad(m),
            other => other,
        })?;
        let mut grouped: BTreeMap<usize, Vec<(String, Tensor)>> = BTreeMap::new();
        for key in weights.keys() {
            let (fold, name) = key
                .strip_prefix("fold_")
                .and_then(|rest| rest.split_once('.'))
                .ok_or_else(|| bad(format!("tensor `{key}` is not named fold_<k>.<key>")))?;
            let fold = match fold {
                "all" => FOLD_ALL,
                k => k
                    .parse()
                    .map_err(|_| bad(format!("tensor `{key}`: `{k}` is not a fold number")))?,
            };
            if !stored.contains(&fold) {
                return Err(bad(format!(
                    "tensor `{key}` belongs to no fold in nnunet.folds"
                )));
            }
            if let Some(t) = weights.peek(key) {
                grouped
                    .entry(fold)
                    .or_default()
                    .push((name.to_string(), t.clone()));
            }
        }
        let folds = chosen
            .iter()
            .map(|k| {
                grouped
                    .remove(k)
                    .map(|w| (*k, w))
                    .ok_or_else(|| bad(format!("fold {} has no tensors", fold_name(*k))))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NnunetBundle {
            plans_json: field("nnunet.plans")?,
            dataset_json: field("nnunet.dataset")?,
            configuration: field("nnunet.configuration")?,
            trainer: meta.get("nnunet.trainer").cloned().unwrap_or_default(),
            mirroring_axes,
            folds,
        })
    }

    /// Writes the bundle as one safetensors file (f32 tensors
    /// `fold_<k>.<key>` plus the metadata of the module documentation),
    /// through a temporary file in the same directory renamed into place.
    pub fn write_safetensors(&self, out: &Path) -> Result<()> {
        self.write_safetensors_as(out, false)
    }

    /// [`write_safetensors`](Self::write_safetensors), the tensors stored
    /// as f16 when `half`.
    pub fn write_safetensors_as(&self, out: &Path, half: bool) -> Result<()> {
        let fold_names: Vec<serde_json::Value> = self
            .folds
            .iter()
            .map(|(k, _)| {
                if *k == FOLD_ALL {
                    serde_json::Value::from("all")
                } else {
                    serde_json::Value::from(*k)
                }
            })
            .collect();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), BUNDLE_FORMAT.to_string());
        meta.insert("nnunet.plans".to_string(), self.plans_json.clone());
        meta.insert("nnunet.dataset".to_string(), self.dataset_json.clone());
        meta.insert(
            "nnunet.configuration".to_string(),
            self.configuration.clone(),
        );
        meta.insert("nnunet.trainer".to_string(), self.trainer.clone());
        if let Some(axes) = &self.mirroring_axes {
            meta.insert(
                "nnunet.mirroring_axes".to_string(),
                serde_json::Value::from(axes.clone()).to_string(),
            );
        }
        meta.insert(
            "nnunet.folds".to_string(),
            serde_json::Value::Array(fold_names).to_string(),
        );
        let mut names = Vec::new();
        let mut slices = Vec::new();
        for (k, tensors) in &self.folds {
            for (key, t) in tensors {
                names.push(format!("fold_{}.{key}", fold_name(*k)));
                slices.push((t.dims(), t.as_slice()?));
            }
        }
        let views: Vec<(&str, &[usize], &[f32])> = names
            .iter()
            .zip(&slices)
            .map(|(n, (shape, values))| (n.as_str(), *shape, *values))
            .collect();
        crate::nn::weights::write_safetensors_as(out, &views, meta, half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_names_and_keys() {
        assert_eq!(parse_fold_dir("fold_3"), Some(3));
        assert_eq!(parse_fold_dir("fold_all"), Some(FOLD_ALL));
        assert_eq!(parse_fold_dir("fold_x"), None);
        assert_eq!(parse_fold_dir("folds"), None);
        assert_eq!(fold_name(FOLD_ALL), "all");
        let t = Tensor::zeros(&[1]).unwrap();
        let keys: Vec<String> = canonical_state_dict(vec![
            (
                "module.encoder.stages.0.0.convs.0.conv.weight".into(),
                t.clone(),
            ),
            (
                "encoder.stages.0.0.convs.0.all_modules.0.weight".into(),
                t.clone(),
            ),
            ("_orig_mod.decoder.encoder.stages.0.x".into(), t.clone()),
            ("decoder.seg_layers.0.bias".into(), t),
        ])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(
            keys,
            vec![
                "encoder.stages.0.0.convs.0.conv.weight",
                "decoder.seg_layers.0.bias"
            ]
        );
        assert_eq!(
            names_from_folder(Path::new("/r/nnUNetTrainer__nnUNetPlans__2d")),
            (Some("nnUNetTrainer".into()), Some("2d".into()))
        );
    }

    #[test]
    fn safetensors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = NnunetBundle {
            plans_json: "{\"configurations\": {}}".into(),
            dataset_json: "{}".into(),
            configuration: "2d".into(),
            trainer: "nnUNetTrainer".into(),
            mirroring_axes: Some(vec![0, 1]),
            folds: vec![
                (
                    0,
                    vec![(
                        "a.weight".into(),
                        Tensor::from_vec(vec![1.0, -2.5, 3.25], &[3, 1]).unwrap(),
                    )],
                ),
                (
                    FOLD_ALL,
                    vec![("a.weight".into(), Tensor::full(0.5, &[3, 1]).unwrap())],
                ),
            ],
        };
        let out = dir.path().join("model.safetensors");
        bundle.write_safetensors(&out).unwrap();
        let back = NnunetBundle::load(&out, None).unwrap();
        assert_eq!(back.fold_numbers(), vec![0, FOLD_ALL]);
        assert_eq!(back.mirroring_axes, Some(vec![0, 1]));
        assert_eq!(back.configuration, "2d");
        assert_eq!(
            back.folds[0].1[0].1.to_vec().unwrap(),
            vec![1.0, -2.5, 3.25]
        );
        let only_all = NnunetBundle::load(&out, Some(&[FOLD_ALL])).unwrap();
        assert_eq!(only_all.fold_numbers(), vec![FOLD_ALL]);
        assert!(matches!(
            NnunetBundle::load(&out, Some(&[2])),
            Err(Error::InvalidArgument(_))
        ));
        // Only the renamed file remains.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(dir.path().join("junk.bin"), b"0123456789").unwrap();
        assert!(matches!(
            NnunetBundle::load(&dir.path().join("junk.bin"), None),
            Err(Error::Format(_))
        ));
    }
}

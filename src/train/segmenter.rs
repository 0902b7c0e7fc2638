//! Training nnU-Net's PlainConvUNet, 2-D configuration, with nnU-Net's
//! recipe, into a results folder nnU-Net and `claim segment` both load.
//!
//! - **Plans** ([`derive_plans_2d`]): target spacing = the median in-plane
//!   spacing of the cases; patch = the median in-plane shape after
//!   resampling to it, at most 512 px, rounded up per axis to a multiple of
//!   2^pools, where pools = ⌊log2(patch / 4)⌋ (nnU-Net stops when a feature
//!   map would fall below 4 px), at most 6; stages = pools + 1, features
//!   32·2^s capped at 512, 3×3 kernels, strides 1 then 2, two convolutions
//!   per stage (encoder and decoder), InstanceNorm (affine, ε 1e-5),
//!   LeakyReLU 0.01, batch size 12. Classes are the label scheme's tissues
//!   present in the scheme, in the order background, cavity, myocardium,
//!   scar, MVO (RV when the scheme has one), named as EMIDEC names them.
//! - **Preprocessing** = what `claim segment` does before its network:
//!   crop to the non-zero box, z-score the cropped case, resample in-plane
//!   to the target spacing (images cubic, labels label by label, linear).
//! - **Sampling**: each batch item is a random slice of a random training
//!   case; the last ⌈33 %⌉ of a batch are centred on a foreground voxel
//!   (nnU-Net's oversampling); patches are cut with the spatial
//!   augmentation and then given the intensity augmentations
//!   ([`crate::train::augment`]).
//! - **Loss and optimiser**: Dice + CE on every deep-supervision head
//!   ([`dice_ce_loss`]), SGD 0.01 Nesterov 0.99, weight decay 3e-5, poly
//!   rate per epoch, gradient norm clipped at 12.
//! - **Split**: the cases (sorted by name) are shuffled with the run's seed
//!   and dealt into 5 folds; fold k validates, the rest train.
//! - **Output** ([`SegmenterTrainer::write_results`]):
//!   `<dir>/plans.json`, `<dir>/dataset.json`,
//!   `<dir>/fold_<k>/checkpoint_final.pth` (`torch.save` of nnU-Net's
//!   checkpoint dict, the state dict with nnU-Net's duplicate
//!   `decoder.encoder.*` and `.all_modules.*` keys, so `load_state_dict`
//!   is strict-clean).

use crate::imgproc::resample::{nnunet_new_shape, resample_data_or_seg_to_shape, ResampleSettings};
use crate::io::torch::{write_torch_file, SaveValue};
use crate::models::plain_unet::random_state_dict;
use crate::models::{PlainConvUNet, PlainUNetConfig};
use crate::nn::Tensor;
use crate::rng::Rng;
use crate::segmentation::normalize::normalize_channel;
use crate::segmentation::{NormalizationScheme, Plans};
use crate::train::augment::{augment_intensities, choose_centre, sample_patch, AugmentParams};
use crate::train::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use crate::train::data::TrainingData;
use crate::train::optim::{
    clip_grad_norm, grad_norm, parameter_tensors, take_host_gradients, OptimOptions, Optimizer,
    Parameter,
};
use crate::train::seg_loss::dice_ce_loss;
use crate::train::StepReport;
use crate::volume::{LabelScheme, Tissue};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The plans' configuration name this trainer writes.
pub const CONFIGURATION_2D: &str = "2d";
/// The trainer name written into the checkpoint and the folder name.
pub const TRAINER_NAME: &str = "nnUNetTrainer";
/// nnU-Net's name of a finished run's checkpoint.
pub const CHECKPOINT_FINAL: &str = "checkpoint_final.pth";
/// nnU-Net's name of a running training's checkpoint.
pub const CHECKPOINT_LATEST: &str = "checkpoint_latest.pth";

/// What a segmenter training run does.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SegTrainConfig {
    /// The dataset's name in derived plans (`DatasetNNN_Name`).
    pub dataset_name: String,
    /// Validation fold, 0–4.
    pub fold: usize,
    /// Epochs (nnU-Net: 1000).
    pub epochs: usize,
    /// Optimiser steps per epoch (nnU-Net: 250).
    pub iterations_per_epoch: usize,
    /// Patches per step (`None`: the plans' batch size).
    pub batch_size: Option<usize>,
    /// Seed of the weights, the split and every batch.
    pub seed: u64,
    /// Augmentations (nnU-Net's by default).
    pub augment: AugmentParams,
    /// Fraction of each batch centred on foreground.
    pub foreground_fraction: f64,
}

impl Default for SegTrainConfig {
    fn default() -> Self {
        SegTrainConfig {
            dataset_name: "Dataset001_claim".into(),
            fold: 0,
            epochs: 1000,
            iterations_per_epoch: 250,
            batch_size: None,
            seed: 0,
            augment: AugmentParams::default(),
            foreground_fraction: 0.33,
        }
    }
}

/// The classes of a label scheme: `(EMIDEC-style name, label value)`,
/// background first.
pub fn classes_of(scheme: &LabelScheme) -> Vec<(&'static str, i32)> {
    let mut classes = vec![
        ("background", 0),
        ("cavity", scheme.lv_cavity),
        ("normal_myocardium", scheme.myocardium),
        ("infarction", scheme.scar),
        ("no_reflow", scheme.mvo),
    ];
    if let Some(rv) = scheme.rv {
        classes.push(("right_ventricle", rv));
    }
    classes
}

/// One preprocessed training case: `slices` planes of `height`×`width`
/// normalised intensities and class indices.
#[derive(Clone, Debug)]
pub struct PreparedCase {
    /// The case's name.
    pub name: String,
    /// Planes.
    pub slices: usize,
    /// Rows per plane.
    pub height: usize,
    /// Columns per plane.
    pub width: usize,
    /// Intensities, plane by plane.
    pub image: Vec<f32>,
    /// Class indices, plane by plane.
    pub classes: Vec<u8>,
}

impl PreparedCase {
    fn plane(&self, z: usize) -> (&[f32], &[u8]) {
        let n = self.height * self.width;
        (
            &self.image[z * n..(z + 1) * n],
            &self.classes[z * n..(z + 1) * n],
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// nnU-Net's intensity statistics of the labelled (non-background) voxels
/// of every case, the plans' `foreground_intensity_properties_per_channel`
/// entry (nnU-Net's predictor requires it; CT normalisation uses it).
/// Up to 10 000 voxels per case, evenly strided (nnU-Net draws them at
/// random); percentiles by nearest rank.
fn foreground_intensity_properties(data: &TrainingData) -> Result<Value> {
    let mut values: Vec<f64> = Vec::new();
    for case in &data.cases {
        let image = case.image.to_f32();
        let (pixels, labels) = (image.as_slice()?, case.labels.as_slice()?);
        let foreground: Vec<f64> = pixels
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l != 0)
            .map(|(&v, _)| f64::from(v))
            .collect();
        let stride = foreground.len().div_ceil(10_000).max(1);
        values.extend(foreground.iter().step_by(stride));
    }
    if values.is_empty() {
        return Ok(json!({"max": 0.0, "mean": 0.0, "median": 0.0, "min": 0.0,
            "percentile_00_5": 0.0, "percentile_99_5": 0.0, "std": 0.0}));
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let rank = |q: f64| values[((q * (n - 1) as f64).round() as usize).min(n - 1)];
    Ok(json!({
        "max": values[n - 1],
        "mean": mean,
        "median": rank(0.5),
        "min": values[0],
        "percentile_00_5": rank(0.005),
        "percentile_99_5": rank(0.995),
        "std": std
    }))
}

/// nnU-Net-style plans and `dataset.json` for a 2-D configuration of
/// `data` (rules in the module documentation).
pub fn derive_plans_2d(data: &TrainingData, dataset_name: &str) -> Result<(Value, Value)> {
    if data.cases.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no training cases",
            data.source
        )));
    }
    // Spacing and shape in (y, x) = (j, i) of our (k, j, i) arrays.
    let spacing_y = median(
        data.cases
            .iter()
            .map(|c| c.image.geometry().spacing[1])
            .collect(),
    );
    let spacing_x = median(
        data.cases
            .iter()
            .map(|c| c.image.geometry().spacing[0])
            .collect(),
    );
    let resampled = |c: &crate::train::data::TrainingCase, axis: usize, target: f64| -> f64 {
        let [ni, nj, _] = c.image.dims();
        let n = if axis == 0 { ni } else { nj };
        (n as f64 * c.image.geometry().spacing[axis] / target).round()
    };
    let shape_y = median(
        data.cases
            .iter()
            .map(|c| resampled(c, 1, spacing_y))
            .collect(),
    );
    let shape_x = median(
        data.cases
            .iter()
            .map(|c| resampled(c, 0, spacing_x))
            .collect(),
    );
    let side = |m: f64| (m.clamp(8.0, 512.0)) as usize;
    let (py, px) = (side(shape_y), side(shape_x));
    let pools = ((py.min(px) as f64 / 4.0).log2().floor() as usize).min(6);
    let divisor = 1usize << pools;
    let round_up = |p: usize| p.div_ceil(divisor) * divisor;
    let patch = [round_up(py), round_up(px)];
    let stages = pools + 1;
    let features: Vec<usize> = (0..stages).map(|s| (32usize << s).min(512)).collect();
    let strides: Vec<Value> = (0..stages)
        .map(|s| if s == 0 { json!([1, 1]) } else { json!([2, 2]) })
        .collect();
    let configuration = json!({
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 12,
        "patch_size": patch,
        "median_image_size_in_voxels": [shape_y, shape_x],
        "spacing": [spacing_y, spacing_x],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [false],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": false, "order": 3, "order_z": 0, "force_separate_z": null},
        "resampling_fn_seg_kwargs": {"is_seg": true, "order": 1, "order_z": 0, "force_separate_z": null},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": false, "order": 1, "order_z": 0, "force_separate_z": null},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": stages,
                "features_per_stage": features,
                "conv_op": "torch.nn.modules.conv.Conv2d",
                "kernel_sizes": vec![json!([3, 3]); stages],
                "strides": strides,
                "n_conv_per_stage": vec![2; stages],
                "n_conv_per_stage_decoder": vec![2; stages - 1],
                "conv_bias": true,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                "norm_op_kwargs": {"eps": 1e-5, "affine": true},
                "dropout_op": null,
                "dropout_op_kwargs": null,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": true}
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]
        },
        "batch_dice": true
    });
    let plans = json!({
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [0.0, spacing_y, spacing_x],
        "original_median_shape_after_transp": [0, shape_y, shape_x],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION_2D: configuration},
        "experiment_planner_used": "claim derive_plans_2d",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": foreground_intensity_properties(data)?}
    });
    let labels: serde_json::Map<String, Value> = classes_of(&data.scheme)
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.to_string(), json!(i)))
        .collect();
    let dataset = json!({
        "channel_names": {"0": "LGE"},
        "labels": labels,
        "numTraining": data.cases.len(),
        "file_ending": ".nii.gz"
    });
    Ok((plans, dataset))
}

/// Replaces the network of a plans' 2-D configuration: `features` per
/// stage (3×3 kernels, stride 1 then 2), `convs` convolutions per stage in
/// encoder and decoder, and the patch size (a multiple of the network's
/// downsampling). For small models: derived plans follow nnU-Net's sizes.
pub fn set_network_2d(
    plans: &mut Value,
    patch: [usize; 2],
    features: &[usize],
    convs: usize,
) -> Result<()> {
    if features.is_empty() || features.contains(&0) || convs == 0 {
        return Err(Error::invalid(
            "the network needs ≥ 1 stage of ≥ 1 feature and ≥ 1 convolution per stage",
        ));
    }
    let divisor = 1usize << (features.len() - 1);
    if patch.iter().any(|&p| p == 0 || p % divisor != 0) {
        return Err(Error::invalid(format!(
            "patch {patch:?}: must be a positive multiple of {divisor} for {} stages",
            features.len()
        )));
    }
    let conf = plans
        .get_mut("configurations")
        .and_then(|c| c.get_mut(CONFIGURATION_2D))
        .ok_or_else(|| Error::invalid("the plans have no 2d configuration"))?;
    conf["patch_size"] = json!(patch);
    let arch = conf
        .get_mut("architecture")
        .and_then(|a| a.get_mut("arch_kwargs"))
        .ok_or_else(|| Error::invalid("the plans' 2d configuration has no arch_kwargs"))?;
    let stages = features.len();
    arch["n_stages"] = json!(stages);
    arch["features_per_stage"] = json!(features);
    arch["kernel_sizes"] = json!(vec![[3, 3]; stages]);
    arch["strides"] = json!((0..stages)
        .map(|s| if s == 0 { [1, 1] } else { [2, 2] })
        .collect::<Vec<_>>());
    arch["n_conv_per_stage"] = json!(vec![convs; stages]);
    arch["n_conv_per_stage_decoder"] = json!(vec![convs; stages - 1]);
    Ok(())
}

/// Preprocesses one case as `claim segment` does before its network
/// (crop to the non-zero box, z-score, in-plane resampling to `spacing`),
/// labels mapped to class indices.
pub fn prepare_case(
    case: &crate::train::data::TrainingCase,
    scheme: &LabelScheme,
    spacing: [f64; 2],
) -> Result<PreparedCase> {
    let image = case.image.to_f32();
    let labels = &case.labels;
    if labels.dims() != image.dims() {
        return Err(Error::invalid(format!(
            "case {}: labels {:?} and image {:?} differ in size",
            case.name,
            labels.dims(),
            image.dims()
        )));
    }
    let classes = classes_of(scheme);
    let [ni, nj, nk] = image.dims();
    let values = image.as_slice()?;
    let label_values = labels.as_slice()?;
    let mut class_map = Vec::with_capacity(values.len());
    for &l in label_values {
        let c = classes.iter().position(|(_, v)| *v == l).ok_or_else(|| {
            Error::invalid(format!(
                "case {}: label {l} is not in the label scheme ({})",
                case.name,
                classes
                    .iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        class_map.push(c as u8);
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "case {}: the image holds {v}",
            case.name
        )));
    }
    // Non-zero box over (k, j, i).
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for (idx, v) in values.iter().enumerate() {
        if *v != 0.0 {
            let p = [idx / (ni * nj), (idx / ni) % nj, idx % ni];
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a] + 1);
            }
        }
    }
    if lo[0] == usize::MAX {
        (lo, hi) = ([0; 3], [nk, nj, ni]);
    }
    let shape_c = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let mut img = Vec::with_capacity(shape_c.iter().product());
    let mut seg = Vec::with_capacity(img.capacity());
    for k in lo[0]..hi[0] {
        for j in lo[1]..hi[1] {
            let row = (k * nj + j) * ni;
            img.extend_from_slice(&values[row + lo[2]..row + hi[2]]);
            seg.extend(
                class_map[row + lo[2]..row + hi[2]]
                    .iter()
                    .map(|&c| f32::from(c)),
            );
        }
    }
    normalize_channel(&mut img, NormalizationScheme::ZScore, false, None, None)?;
    let g = case.image.geometry().spacing;
    let current = [g[2], g[1], g[0]];
    let target = [g[2], spacing[0], spacing[1]];
    let shape_r = nnunet_new_shape(shape_c, current, target)?;
    let (img, seg) = if shape_r != shape_c {
        (
            resample_data_or_seg_to_shape(
                &img,
                1,
                shape_c,
                shape_r,
                current,
                target,
                &ResampleSettings::nnunet_data(),
            )?,
            resample_data_or_seg_to_shape(
                &seg,
                1,
                shape_c,
                shape_r,
                current,
                target,
                &ResampleSettings::nnunet_segmentation(),
            )?,
        )
    } else {
        (img, seg)
    };
    Ok(PreparedCase {
        name: case.name.clone(),
        slices: shape_r[0],
        height: shape_r[1],
        width: shape_r[2],
        image: img,
        classes: seg
            .iter()
            .map(|&c| c.round().clamp(0.0, 255.0) as u8)
            .collect(),
    })
}

/// nnU-Net's He initialisation (`InitWeights_He(1e-2)`): convolution and
/// transposed-convolution weights ~ N(0, 2/((1 + 0.01²)·fan_in)), their
/// biases 0, norm weights 1 and biases 0.
fn initial_parameters(cfg: &PlainUNetConfig, seed: u64) -> Result<Vec<Parameter>> {
    let mut rng = Rng::new(seed);
    random_state_dict(cfg, seed)
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let n: usize = shape.iter().product();
            let values = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains(".norm.") {
                vec![1.0; n]
            } else {
                let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                let std = (2.0 / ((1.0 + 1e-4) * fan_in as f64)).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            };
            Ok(Parameter {
                name,
                shape,
                values,
                trainable: true,
            })
        })
        .collect()
}

/// Per-class Dice of a prediction against the truth (classes 1…K−1; NaN
/// where both are empty).
pub fn dice_per_class(pred: &[u8], truth: &[u8], classes: usize) -> Vec<f64> {
    (1..classes)
        .map(|c| {
            let c = c as u8;
            let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
            for (&p, &t) in pred.iter().zip(truth) {
                inter += usize::from(p == c && t == c);
                a += usize::from(p == c);
                b += usize::from(t == c);
            }
            if a + b == 0 {
                f64::NAN
            } else {
                2.0 * inter as f64 / (a + b) as f64
            }
        })
        .collect()
}

/// A segmenter training run: the preprocessed cases of one fold's split,
/// the weights and the optimiser. Drive it with [`step`](Self::step);
/// save with [`save_checkpoint`](Self::save_checkpoint) and continue with
/// [`resume`](Self::resume); write the nnU-Net results folder with
/// [`write_results`](Self::write_results).
pub struct SegmenterTrainer {
    config: SegTrainConfig,
    options: OptimOptions,
    plans: Value,
    dataset: Value,
    network: PlainUNetConfig,
    patch: [usize; 2],
    batch_size: usize,
    train: Vec<PreparedCase>,
    validation: Vec<PreparedCase>,
    state: TrainState,
}

impl std::fmt::Debug for SegmenterTrainer {
    // The cases and weights are megabytes of numbers: show their counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmenterTrainer")
            .field("config", &self.config)
            .field("network", &self.network)
            .field("patch", &self.patch)
            .field("batch_size", &self.batch_size)
            .field("train_cases", &self.train.len())
            .field("validation_cases", &self.validation.len())
            .field("parameters", &self.state.params.len())
            .field("step", &self.state.step)
            .finish_non_exhaustive()
    }
}

/// The `trainer` metadata of a segmenter checkpoint.
const CHECKPOINT_TRAINER: &str = "segmenter";

fn check_config(config: &SegTrainConfig) -> Result<()> {
    if config.fold > 4 {
        return Err(Error::invalid(format!("fold {}: 0–4", config.fold)));
    }
    if config.epochs == 0 || config.iterations_per_epoch == 0 {
        return Err(Error::invalid(
            "epochs and iterations per epoch must be ≥ 1",
        ));
    }
    if config.batch_size == Some(0) {
        return Err(Error::invalid("the batch size must be ≥ 1"));
    }
    if !(0.0..=1.0).contains(&config.foreground_fraction) {
        return Err(Error::invalid("the foreground fraction must be in [0, 1]"));
    }
    Ok(())
}

impl SegmenterTrainer {
    /// Plans `data` (or takes `plans`, a `plans.json` value with a `2d`
    /// configuration), preprocesses every case, splits the folds and
    /// initialises the network.
    pub fn new(
        data: &TrainingData,
        plans: Option<Value>,
        config: SegTrainConfig,
    ) -> Result<SegmenterTrainer> {
        check_config(&config)?;
        let (derived, dataset) = derive_plans_2d(data, &config.dataset_name)?;
        let plans = plans.unwrap_or(derived);
        Self::assemble(data, plans, dataset, config, None)
    }

    /// Continues the run saved at `checkpoint` on `data` (the run's data:
    /// the split must come out the same), with its plans and configuration;
    /// `epochs` replaces the planned length when given (the poly rate then
    /// follows the new length).
    pub fn resume(
        checkpoint: &Path,
        data: &TrainingData,
        epochs: Option<usize>,
    ) -> Result<SegmenterTrainer> {
        let mut state = load_checkpoint(checkpoint)?;
        let bad = |what: &str| {
            Error::format(format!(
                "{}: not a segmenter training checkpoint ({what})",
                checkpoint.display()
            ))
        };
        if state.metadata.get("trainer").map(String::as_str) != Some(CHECKPOINT_TRAINER) {
            return Err(bad("trainer is not 'segmenter'"));
        }
        let json = |key: &str| -> Result<Value> {
            state
                .metadata
                .get(key)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| bad(&format!("no readable {key}")))
        };
        let mut config: SegTrainConfig =
            serde_json::from_value(json("config")?).map_err(|_| bad("unreadable config"))?;
        let (plans, dataset, split) = (json("plans")?, json("dataset")?, json("split")?);
        if let Some(epochs) = epochs {
            config.epochs = epochs;
        }
        check_config(&config)?;
        state.metadata.clear();
        let trainer = Self::assemble(data, plans, dataset, config, Some(state))?;
        let (train, validation) = trainer.split();
        if split != json!({"train": train, "validation": validation}) {
            return Err(Error::invalid(format!(
                "{}: the data's split differs from the run's ({split}): give the data the run was trained on",
                checkpoint.display()
            )));
        }
        Ok(trainer)
    }

    fn assemble(
        data: &TrainingData,
        plans: Value,
        dataset: Value,
        config: SegTrainConfig,
        state: Option<TrainState>,
    ) -> Result<SegmenterTrainer> {
        let parsed = Plans::parse(&plans.to_string())?;
        let conf = parsed.configuration(CONFIGURATION_2D)?;
        let classes = classes_of(&data.scheme).len();
        let network = conf.network_config(1, classes)?;
        let patch = match conf.patch_size[..] {
            [y, x] => [y, x],
            _ => return Err(Error::invalid("the plans' 2d configuration is not 2-D")),
        };
        let divisor = network.size_divisor();
        if patch.iter().zip(&divisor).any(|(p, d)| p % d != 0) {
            return Err(Error::invalid(format!(
                "patch {patch:?} is not a multiple of the network's downsampling {divisor:?}"
            )));
        }
        let batch_size = config.batch_size.or(conf.batch_size).unwrap_or(12).max(1);
        let spacing = [conf.spacing[0], conf.spacing[1]];
        let mut names: Vec<usize> = (0..data.cases.len()).collect();
        names.sort_by(|&a, &b| data.cases[a].name.cmp(&data.cases[b].name));
        let mut rng = Rng::new(config.seed).fork(0x5e9);
        for i in (1..names.len()).rev() {
            names.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut train, mut validation) = (Vec::new(), Vec::new());
        for (rank, &i) in names.iter().enumerate() {
            let prepared = prepare_case(&data.cases[i], &data.scheme, spacing)?;
            if names.len() >= 2 && rank % 5 == config.fold {
                validation.push(prepared);
            } else {
                train.push(prepared);
            }
        }
        if train.is_empty() {
            return Err(Error::invalid(format!(
                "fold {}: no training case left ({} cases)",
                config.fold,
                data.cases.len()
            )));
        }
        let initial = initial_parameters(&network, config.seed)?;
        let options = OptimOptions::nnunet();
        let state = match state {
            Some(mut state) => {
                let names: Vec<&str> = initial.iter().map(|p| p.name.as_str()).collect();
                state.arrange(&names)?;
                let same = initial.len() == state.params.len()
                    && initial
                        .iter()
                        .zip(&state.params)
                        .all(|(a, b)| a.name == b.name && a.shape == b.shape);
                if !same {
                    return Err(Error::format(
                        "the checkpoint's weights do not match its plans' network",
                    ));
                }
                state
            }
            None => TrainState {
                optimizer: Optimizer::new(options.kind, options.weight_decay, initial.len())?,
                params: initial,
                ema: None,
                step: 0,
                metadata: BTreeMap::new(),
            },
        };
        Ok(SegmenterTrainer {
            config,
            options,
            plans,
            dataset,
            network,
            patch,
            batch_size,
            train,
            validation,
            state,
        })
    }

    /// Saves everything [`resume`](Self::resume) needs (weights, optimiser
    /// momentum, step, plans, configuration, split).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut state = self.state.clone();
        let (train, validation) = self.split();
        let text = |v: &Value| v.to_string();
        state.metadata = BTreeMap::from([
            ("trainer".to_string(), CHECKPOINT_TRAINER.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.config).map_err(|e| Error::Internal(e.to_string()))?,
            ),
            ("plans".to_string(), text(&self.plans)),
            ("dataset".to_string(), text(&self.dataset)),
            (
                "split".to_string(),
                text(&json!({"train": train, "validation": validation})),
            ),
        ]);
        save_checkpoint(path, &state)
    }

    /// The classes' names, by class index (from `dataset.json`).
    pub fn class_names(&self) -> Vec<String> {
        let mut named: Vec<(u64, String)> = self.dataset["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(name, v)| v.as_u64().map(|i| (i, name.clone())))
                    .collect()
            })
            .unwrap_or_default();
        named.sort();
        named.into_iter().map(|(_, name)| name).collect()
    }

    /// The run's configuration.
    pub fn config(&self) -> &SegTrainConfig {
        &self.config
    }

    /// Epochs completed.
    pub fn epoch(&self) -> u64 {
        self.state.step / self.config.iterations_per_epoch as u64
    }

    /// The plans (as written to `plans.json`).
    pub fn plans(&self) -> &Value {
        &self.plans
    }

    /// The network configuration.
    pub fn network(&self) -> &PlainUNetConfig {
        &self.network
    }

    /// Patches per step.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    /// Total steps of the run.
    pub fn total_steps(&self) -> u64 {
        (self.config.epochs * self.config.iterations_per_epoch) as u64
    }

    /// Names of the training and validation cases.
    pub fn split(&self) -> (Vec<&str>, Vec<&str>) {
        (
            self.train.iter().map(|c| c.name.as_str()).collect(),
            self.validation.iter().map(|c| c.name.as_str()).collect(),
        )
    }

    /// The batch of step `step`: `[B, 1, P, P]` and the class maps.
    fn batch(&self, step: u64) -> Result<(Tensor, Vec<u8>)> {
        let mut rng = Rng::new(self.config.seed).fork(step.wrapping_add(1));
        let [ph, pw] = self.patch;
        let b = self.batch_size;
        let forced = (b as f64 * self.config.foreground_fraction).ceil() as usize;
        let (mut image, mut classes) = (
            Vec::with_capacity(b * ph * pw),
            Vec::with_capacity(b * ph * pw),
        );
        for item in 0..b {
            let case = &self.train[rng.below(self.train.len() as u64) as usize];
            let force = item >= b - forced.min(b);
            // A forced item prefers a slice that has foreground.
            let z = if force {
                let with_fg: Vec<usize> = (0..case.slices)
                    .filter(|&z| case.plane(z).1.iter().any(|&c| c > 0))
                    .collect();
                if with_fg.is_empty() {
                    rng.below(case.slices as u64) as usize
                } else {
                    with_fg[rng.below(with_fg.len() as u64) as usize]
                }
            } else {
                rng.below(case.slices as u64) as usize
            };
            let (plane, labels) = case.plane(z);
            let centre = choose_centre(labels, case.height, case.width, force, &mut rng);
            let mut patch = sample_patch(
                plane,
                labels,
                case.height,
                case.width,
                centre,
                (ph, pw),
                &self.config.augment,
                &mut rng,
            )?;
            augment_intensities(&mut patch, &self.config.augment, &mut rng);
            image.extend_from_slice(&patch.image);
            classes.extend_from_slice(&patch.labels);
        }
        Ok((Tensor::from_vec(image, &[b, 1, ph, pw])?, classes))
    }

    /// The learning rate of the next step (nnU-Net's poly rate per epoch).
    pub fn learning_rate(&self) -> f32 {
        self.options
            .policy(self.config.epochs as u64)
            .at(self.epoch())
    }

    /// One optimiser step: draw the step's batch, compute the deep-
    /// supervised Dice + CE and its gradients, clip, update. A non-finite
    /// loss or gradient is an error and changes nothing.
    pub fn step(&mut self) -> Result<StepReport> {
        let step = self.state.step;
        let (x, classes) = self.batch(step)?;
        let tensors = parameter_tensors(&self.state.params, true)?;
        let net = PlainConvUNet::from_state_dict(tensors.clone(), &self.network)?;
        let heads = net.forward_deep_supervision(&x)?;
        // Each head's target: the class map sampled at its stride (nearest).
        let [ph, pw] = self.patch;
        let b = self.batch_size;
        let mut targets = Vec::with_capacity(heads.len());
        for head in &heads {
            let d = head.dims();
            let (hh, hw) = (d[d.len() - 2], d[d.len() - 1]);
            let (sy, sx) = (ph / hh.max(1), pw / hw.max(1));
            let mut t = Vec::with_capacity(b * hh * hw);
            for item in 0..b {
                for r in 0..hh {
                    for c in 0..hw {
                        t.push(classes[item * ph * pw + (r * sy) * pw + c * sx]);
                    }
                }
            }
            targets.push(t);
        }
        let loss = dice_ce_loss(&heads, &targets, true)?;
        let value = loss.to_vec()?[0];
        if !value.is_finite() {
            return Err(Error::invalid(format!("step {step}: the loss is {value}")));
        }
        let mut grads = loss.backward()?;
        let mut host = take_host_gradients(&tensors, &mut grads)?;
        drop((grads, tensors, heads, net));
        let norm = match self.options.grad_clip {
            Some(max) => clip_grad_norm(&mut host, max)?,
            None => grad_norm(&host),
        };
        if !norm.is_finite() {
            return Err(Error::invalid(format!(
                "step {step}: the gradient norm is {norm}"
            )));
        }
        let lr = self.learning_rate();
        self.state
            .optimizer
            .step(&mut self.state.params, &host, lr)?;
        self.state.step += 1;
        Ok(StepReport {
            step,
            loss: value,
            lr,
            grad_norm: norm,
        })
    }

    /// Mean Dice per foreground class over the validation cases (each
    /// case's slices predicted whole, padded to the network's divisor; no
    /// mirroring). Empty when the split has no validation case.
    pub fn validate(&self) -> Result<Vec<f64>> {
        if self.validation.is_empty() {
            return Ok(Vec::new());
        }
        let tensors = parameter_tensors(&self.state.params, false)?;
        let net = PlainConvUNet::from_state_dict(tensors, &self.network)?;
        let classes = self.network.num_classes;
        let div = self.network.size_divisor();
        let mut sums = vec![(0f64, 0usize); classes - 1];
        for case in &self.validation {
            let (h, w) = (case.height, case.width);
            let (hp, wp) = (h.div_ceil(div[0]) * div[0], w.div_ceil(div[1]) * div[1]);
            let mut pred = Vec::with_capacity(case.classes.len());
            for z in 0..case.slices {
                let (plane, _) = case.plane(z);
                let mut padded = vec![0f32; hp * wp];
                for r in 0..h {
                    padded[r * wp..r * wp + w].copy_from_slice(&plane[r * w..(r + 1) * w]);
                }
                let logits = crate::nn::no_grad(|| {
                    net.forward(&Tensor::from_vec(padded, &[1, 1, hp, wp])?)
                })?
                .to_vec()?;
                for r in 0..h {
                    for c in 0..w {
                        let best = (0..classes)
                            .max_by(|&a, &b| {
                                logits[a * hp * wp + r * wp + c]
                                    .total_cmp(&logits[b * hp * wp + r * wp + c])
                            })
                            .unwrap_or(0);
                        pred.push(best as u8);
                    }
                }
            }
            for (acc, d) in sums
                .iter_mut()
                .zip(dice_per_class(&pred, &case.classes, classes))
            {
                if d.is_finite() {
                    acc.0 += d;
                    acc.1 += 1;
                }
            }
        }
        Ok(sums
            .iter()
            .map(|(s, n)| if *n == 0 { f64::NAN } else { s / *n as f64 })
            .collect())
    }

    /// The network's state dict with nnU-Net's duplicate keys
    /// (`decoder.encoder.*`, `.all_modules.0/1.*`), as `state_dict()`
    /// returns it.
    pub fn nnunet_state_dict(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        let mut push_with_aliases = |name: &str, p: &Parameter| {
            out.push((name.to_string(), p.shape.clone(), p.values.clone()));
            for (part, index) in [(".conv.", "0"), (".norm.", "1")] {
                if name.contains(".convs.") && name.contains(part) {
                    let alias = name.replacen(part, &format!(".all_modules.{index}."), 1);
                    out.push((alias, p.shape.clone(), p.values.clone()));
                }
            }
        };
        for p in &self.state.params {
            push_with_aliases(&p.name, p);
        }
        for p in self
            .state
            .params
            .iter()
            .filter(|p| p.name.starts_with("encoder."))
        {
            push_with_aliases(&format!("decoder.{}", p.name), p);
        }
        out
    }

    /// Writes the nnU-Net results folder: `dir/plans.json`,
    /// `dir/dataset.json`, `dir/fold_<k>/<checkpoint>` (nnU-Net's names:
    /// [`CHECKPOINT_FINAL`] at the end of a run, [`CHECKPOINT_LATEST`]
    /// on the way).
    pub fn write_results(&self, dir: &Path, checkpoint: &str) -> Result<()> {
        let fold_dir = dir.join(format!("fold_{}", self.config.fold));
        std::fs::create_dir_all(&fold_dir).map_err(|e| Error::io_at(&fold_dir, &e))?;
        let json_file = |name: &str, v: &Value| -> Result<()> {
            let text =
                serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
            let path = dir.join(name);
            crate::io::atomic::write_atomically(&path, |f| {
                std::io::Write::write_all(f, text.as_bytes())
            })
        };
        json_file("plans.json", &self.plans)?;
        json_file("dataset.json", &self.dataset)?;
        let weights = SaveValue::OrderedDict(
            self.nnunet_state_dict()
                .into_iter()
                .map(|(k, shape, values)| (SaveValue::Str(k), SaveValue::Tensor { shape, values }))
                .collect(),
        );
        let contents = SaveValue::dict([
            ("network_weights", weights),
            ("optimizer_state", SaveValue::dict::<String>([])),
            ("grad_scaler_state", SaveValue::None),
            ("logging", SaveValue::dict::<String>([])),
            ("_best_ema", SaveValue::None),
            ("current_epoch", SaveValue::Int(self.epoch() as i64)),
            (
                "init_args",
                SaveValue::dict([
                    ("plans", SaveValue::from_json(&self.plans)),
                    ("configuration", SaveValue::str(CONFIGURATION_2D)),
                    ("fold", SaveValue::Int(self.config.fold as i64)),
                    ("dataset_json", SaveValue::from_json(&self.dataset)),
                    ("device", SaveValue::str("cpu")),
                ]),
            ),
            ("trainer_name", SaveValue::str(TRAINER_NAME)),
            (
                "inference_allowed_mirroring_axes",
                SaveValue::Tuple(vec![SaveValue::Int(0), SaveValue::Int(1)]),
            ),
        ]);
        write_torch_file(&fold_dir.join(checkpoint), &contents)
    }

    /// The tissue each class stands for (for reports).
    pub fn class_tissues(&self, scheme: &LabelScheme) -> Vec<Option<Tissue>> {
        classes_of(scheme)
            .iter()
            .map(|(_, v)| scheme.tissue(*v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::phantom_dataset;

    #[test]
    fn plans_follow_the_rules_and_parse() {
        let data = phantom_dataset(2, 7, 64, 3).unwrap();
        let (plans, dataset) = derive_plans_2d(&data, "Dataset001_test").unwrap();
        let parsed = Plans::parse(&plans.to_string()).unwrap();
        let conf = parsed.configuration("2d").unwrap();
        // 64 px, 1.5625 mm: patch 64, pools ⌊log2(16)⌋ = 4, 5 stages.
        assert_eq!(conf.patch_size, [64, 64]);
        let cfg = conf.network_config(1, 6).unwrap();
        assert_eq!(cfg.features_per_stage, [32, 64, 128, 256, 512]);
        assert_eq!(dataset["labels"]["infarction"], 3);
        assert_eq!(dataset["labels"]["right_ventricle"], 5);
    }

    fn small_plans(data: &TrainingData) -> Value {
        let (mut plans, _) = derive_plans_2d(data, "Dataset001_test").unwrap();
        set_network_2d(&mut plans, [32, 32], &[8, 16, 16], 1).unwrap();
        plans
    }

    #[test]
    fn a_resumed_run_continues_bit_identically() {
        let data = phantom_dataset(3, 5, 48, 2).unwrap();
        let config = SegTrainConfig {
            epochs: 2,
            iterations_per_epoch: 2,
            batch_size: Some(2),
            seed: 3,
            ..SegTrainConfig::default()
        };
        let mut straight = SegmenterTrainer::new(&data, Some(small_plans(&data)), config).unwrap();
        for _ in 0..2 {
            straight.step().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("run.ckpt.safetensors");
        straight.save_checkpoint(&ckpt).unwrap();
        let after: Vec<StepReport> = (0..2).map(|_| straight.step().unwrap()).collect();
        let mut resumed = SegmenterTrainer::resume(&ckpt, &data, None).unwrap();
        assert_eq!(resumed.step_count(), 2);
        let again: Vec<StepReport> = (0..2).map(|_| resumed.step().unwrap()).collect();
        assert_eq!(after, again);
        assert_eq!(straight.state, resumed.state);
        // Other data gives another split: refused.
        let other = phantom_dataset(4, 5, 48, 2).unwrap();
        let err = SegmenterTrainer::resume(&ckpt, &other, None).unwrap_err();
        assert!(err.to_string().contains("split"), "{err}");
        // A diffusion checkpoint is not a segmenter checkpoint.
        let mut state = straight.state.clone();
        state.metadata.insert("trainer".into(), "diffusion".into());
        save_checkpoint(&ckpt, &state).unwrap();
        let err = SegmenterTrainer::resume(&ckpt, &data, None).unwrap_err();
        assert!(err.to_string().contains("not a segmenter"), "{err}");
    }

    #[test]
    fn set_network_refuses_a_patch_the_network_cannot_halve() {
        let data = phantom_dataset(1, 5, 48, 2).unwrap();
        let (mut plans, _) = derive_plans_2d(&data, "Dataset001_test").unwrap();
        assert!(set_network_2d(&mut plans, [34, 32], &[8, 16, 16], 1).is_err());
        assert!(set_network_2d(&mut plans, [32, 32], &[], 1).is_err());
    }

    #[test]
    fn training_lowers_the_loss_and_the_results_folder_loads() {
        let data = phantom_dataset(5, 11, 48, 3).unwrap();
        let plans = small_plans(&data);
        let config = SegTrainConfig {
            epochs: 2,
            iterations_per_epoch: 6,
            batch_size: Some(4),
            seed: 1,
            ..SegTrainConfig::default()
        };
        let mut trainer = SegmenterTrainer::new(&data, Some(plans), config).unwrap();
        let (train, val) = trainer.split();
        assert_eq!((train.len(), val.len()), (4, 1));
        let losses: Vec<f32> = (0..12).map(|_| trainer.step().unwrap().loss).collect();
        let first = losses[..4].iter().sum::<f32>();
        let last = losses[8..].iter().sum::<f32>();
        assert!(last < first, "loss did not fall: {losses:?}");
        let dice = trainer.validate().unwrap();
        assert_eq!(dice.len(), 5);
        let dir = tempfile::tempdir().unwrap();
        trainer.write_results(dir.path(), CHECKPOINT_FINAL).unwrap();
        let seg = crate::segmentation::Segmenter::load(dir.path(), &Default::default()).unwrap();
        assert_eq!(seg.info().num_classes, 6);
        let keys = trainer.nnunet_state_dict();
        assert!(keys
            .iter()
            .any(|(k, _, _)| k.starts_with("decoder.encoder.stages.0.0.convs.0.all_modules.0.")));
    }
}

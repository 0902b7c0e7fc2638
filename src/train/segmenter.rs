//! Training nnU-Net's PlainConvUNet, configurations `2d` and `3d_fullres`,
//! with nnU-Net's recipe, into a results folder nnU-Net and `claim segment`
//! both load.
//!
//! - **Plans** ([`derive_plans`], nnU-Net's experiment planner in spirit):
//!   target spacing = the median spacing per axis, except that a slice
//!   spacing over 3× the in-plane one (anisotropic data, e.g. short-axis
//!   LGE) takes its 10th percentile. `2d`: patch = the median in-plane shape
//!   after resampling, 8–512 px; batch 12; features 32·2^s capped at 512.
//!   `3d_fullres`: patch = the median resampled shape, in-plane ≤ 256 px,
//!   then the axis of largest physical extent shrunk by 10 % steps until
//!   the patch holds ≤ [`MAX_PATCH_VOXELS_3D`] voxels; batch 2; features
//!   capped at 320. Both: kernels and strides from [`pooling_plan`] (an
//!   axis is convolved across (kernel 3) once its spacing is within 2× of
//!   the finest, pooled while its feature map is ≥ 8, up to 7 stages for 2d
//!   and 6 for 3d), each axis of the patch rounded up to a multiple of its
//!   downsampling, two convolutions per stage (encoder and decoder),
//!   InstanceNorm (affine, ε 1e-5), LeakyReLU 0.01. Classes are the label
//!   scheme's tissues in the order background, cavity, myocardium, scar,
//!   MVO (RV when the scheme has one), named as EMIDEC names them. The
//!   plans carry the foreground intensity statistics nnU-Net's predictor
//!   expects.
//! - **Preprocessing** = what `claim segment` does before its network, by
//!   the same function ([`crate::segmentation::preprocess_case`]): crop to
//!   the non-zero box, normalise the cropped case by the plans' scheme,
//!   resample to the target spacing (2d: in-plane only; images cubic; a
//!   coarse slice axis separately, nearest); labels are cropped alike and
//!   resampled label by label (linear).
//! - **Sampling**: each batch item is a random slice (2d) or a window of
//!   planes (3d) of a random training case; the last ⌈33 %⌉ of a batch are
//!   centred on a foreground voxel of a class drawn among those present
//!   (nnU-Net's oversampling); patches are cut with the spatial
//!   augmentation (3d: one in-plane rotation and zoom for every plane,
//!   nnU-Net's "dummy 2-D" augmentation for anisotropic data) and then
//!   given the intensity augmentations and mirroring (3d: also across the
//!   planes) of [`crate::train::augment`].
//! - **Loss and optimiser**: Dice + CE on every deep-supervision head
//!   ([`dice_ce_loss`]), SGD 0.01 Nesterov 0.99, weight decay 3e-5, poly
//!   rate per epoch, gradient norm clipped at 12.
//! - **Split**: the cases (sorted by name) are shuffled with the run's seed
//!   and dealt into 5 folds; fold k validates, the rest train. Validation
//!   predicts each held-out case whole (2d plane by plane), padded to the
//!   network's downsampling, without mirroring.
//! - **Output** ([`SegmenterTrainer::write_results`]):
//!   `<dir>/plans.json`, `<dir>/dataset.json`,
//!   `<dir>/fold_<k>/checkpoint_final.pth` (`torch.save` of nnU-Net's
//!   checkpoint dict, the state dict with nnU-Net's duplicate
//!   `decoder.encoder.*` and `.all_modules.*` keys, so `load_state_dict`
//!   is strict-clean).

use crate::imgproc::resample::{resample_data_or_seg_to_shape, ResampleSettings};
use crate::io::torch::{write_torch_file, SaveValue};
use crate::models::plain_unet::random_state_dict;
use crate::models::{PlainConvUNet, PlainUNetConfig};
use crate::nn::Tensor;
use crate::rng::Rng;
use crate::segmentation::plans::ConfigurationPlan;
use crate::segmentation::{preprocess_case, Plans};
use crate::train::augment::{
    augment_intensities, choose_centre, cut_patch, draw_rotation_and_zoom, sample_patch,
    AugmentParams, Patch,
};
use crate::train::checkpoint::{load_checkpoint, save_checkpoint, TrainState};
use crate::train::compute::{Compute, SCALER_METADATA_KEY};
use crate::train::data::TrainingData;
use crate::train::optim::{OptimOptions, Optimizer, Parameter};
use crate::train::resident::{
    apply_gradients, ensure_resident, host_parameters, host_view, step_tensors, sync_host,
    ResidentState,
};
use crate::train::seg_loss::dice_ce_loss;
use crate::train::StepReport;
use crate::volume::{LabelScheme, Tissue};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// The plans' configuration name this trainer writes.
pub const CONFIGURATION_2D: &str = "2d";
/// The plans' 3-D configuration name.
pub const CONFIGURATION_3D: &str = "3d_fullres";
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
    /// The plans' configuration to train: `2d` or `3d_fullres`.
    pub configuration: String,
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
            configuration: CONFIGURATION_2D.into(),
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

/// The per-stage kernel sizes and strides of a network for `patch` at
/// `spacing` (both per axis), nnU-Net's experiment-planner rule in spirit:
/// an axis gets 3-wide kernels from the first stage at which its current
/// spacing is at most twice the finest current spacing (1 before: a coarse
/// out-of-plane axis is not convolved across until pooling has caught the
/// in-plane axes up), and the next stage pools (stride 2) every such axis
/// whose current size is at least 8 (no feature map falls below 4). With
/// `stages` the plan has exactly that many stages (an error if the patch
/// cannot be pooled that often); otherwise it stops when no axis can pool
/// or at `max_stages`.
pub fn pooling_plan(
    patch: &[usize],
    spacing: &[f64],
    stages: Option<usize>,
    max_stages: usize,
) -> Result<PoolingPlan> {
    if patch.len() != spacing.len()
        || patch.contains(&0)
        || spacing.iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(Error::invalid(format!(
            "pooling plan: patch {patch:?} and spacing {spacing:?}"
        )));
    }
    let dims = patch.len();
    let mut size: Vec<f64> = patch.iter().map(|&p| p as f64).collect();
    let mut sp = spacing.to_vec();
    let (mut kernels, mut strides) = (Vec::<Vec<usize>>::new(), vec![vec![1; dims]]);
    let mut kernel = vec![1; dims];
    loop {
        let finest = sp.iter().copied().fold(f64::INFINITY, f64::min);
        let fine: Vec<bool> = sp.iter().map(|&s| s <= 2.0 * finest).collect();
        // Once an axis is convolved across, it stays so.
        for (k, &f) in kernel.iter_mut().zip(&fine) {
            if f {
                *k = 3;
            }
        }
        kernels.push(kernel.clone());
        let wanted = stages.unwrap_or(max_stages);
        if kernels.len() >= wanted {
            break;
        }
        let pool: Vec<bool> = (0..dims).map(|a| fine[a] && size[a] >= 8.0).collect();
        if !pool.contains(&true) {
            if stages.is_some() {
                return Err(Error::invalid(format!(
                    "patch {patch:?} at spacing {spacing:?} allows {} stages, not {wanted}",
                    kernels.len()
                )));
            }
            break;
        }
        strides.push(pool.iter().map(|&p| if p { 2 } else { 1 }).collect());
        for a in (0..dims).filter(|&a| pool[a]) {
            size[a] /= 2.0;
            sp[a] *= 2.0;
        }
    }
    Ok(PoolingPlan { kernels, strides })
}

/// Kernel sizes and strides per stage, per axis ([`pooling_plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolingPlan {
    /// Per stage, the kernel size along each axis.
    pub kernels: Vec<Vec<usize>>,
    /// Per stage, the stride along each axis (the first stage's is 1).
    pub strides: Vec<Vec<usize>>,
}

/// The downsampling of each axis over a plan's strides.
fn axis_divisors(strides: &[Vec<usize>]) -> Vec<usize> {
    let dims = strides.first().map_or(0, Vec::len);
    (0..dims)
        .map(|a| strides.iter().map(|s| s[a]).product())
        .collect()
}

/// One configuration of the plans, nnU-Net's field names.
struct ConfigurationSpec<'a> {
    identifier: &'a str,
    batch_size: usize,
    patch: Vec<usize>,
    median_shape: Vec<f64>,
    spacing: Vec<f64>,
    kernels: Vec<Vec<usize>>,
    strides: Vec<Vec<usize>>,
    features: Vec<usize>,
}

fn configuration_json(c: &ConfigurationSpec) -> Value {
    let stages = c.features.len();
    let (conv, norm) = if c.patch.len() == 2 {
        ("Conv2d", "InstanceNorm2d")
    } else {
        ("Conv3d", "InstanceNorm3d")
    };
    json!({
        "data_identifier": c.identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": c.batch_size,
        "patch_size": c.patch,
        "median_image_size_in_voxels": c.median_shape,
        "spacing": c.spacing,
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
                "features_per_stage": c.features,
                "conv_op": format!("torch.nn.modules.conv.{conv}"),
                "kernel_sizes": c.kernels,
                "strides": c.strides,
                "n_conv_per_stage": vec![2; stages],
                "n_conv_per_stage_decoder": vec![2; stages - 1],
                "conv_bias": true,
                "norm_op": format!("torch.nn.modules.instancenorm.{norm}"),
                "norm_op_kwargs": {"eps": 1e-5, "affine": true},
                "dropout_op": null,
                "dropout_op_kwargs": null,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": true}
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]
        },
        "batch_dice": true
    })
}

/// The largest 3-D patch the derived plans use, in voxels (nnU-Net sizes
/// its patch to a GPU memory budget; this keeps a CPU step practical).
pub const MAX_PATCH_VOXELS_3D: usize = 1 << 19;

/// nnU-Net-style plans (configurations `2d` and `3d_fullres`) and
/// `dataset.json` for `data` (rules in the module documentation).
pub fn derive_plans(data: &TrainingData, dataset_name: &str) -> Result<(Value, Value)> {
    if data.cases.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no training cases",
            data.source
        )));
    }
    // Geometry spacing is (x, y, z) = (i, j, k); plans are (z, y, x).
    let spacing_of = |axis: usize| -> Vec<f64> {
        data.cases
            .iter()
            .map(|c| c.image.geometry().spacing[axis])
            .collect()
    };
    let (sx, sy, sz) = (
        median(spacing_of(0)),
        median(spacing_of(1)),
        median(spacing_of(2)),
    );
    let anisotropic = sz > 3.0 * sx.min(sy);
    // nnU-Net: a coarse out-of-plane axis gets its 10th-percentile spacing.
    let tz = if anisotropic {
        let mut z = spacing_of(2);
        z.sort_by(f64::total_cmp);
        z[((z.len() - 1) as f64 * 0.1).round() as usize]
    } else {
        sz
    };
    let resampled = |axis: usize, target: f64| -> f64 {
        median(
            data.cases
                .iter()
                .map(|c| {
                    let n = c.image.dims()[axis];
                    (n as f64 * c.image.geometry().spacing[axis] / target).round()
                })
                .collect(),
        )
    };
    let (shape_z, shape_y, shape_x) = (resampled(2, tz), resampled(1, sy), resampled(0, sx));
    let round_up = |patch: &[usize], strides: &[Vec<usize>]| -> Vec<usize> {
        patch
            .iter()
            .zip(axis_divisors(strides))
            .map(|(p, d)| p.div_ceil(d) * d)
            .collect()
    };

    // 2d: the median in-plane shape, ≤ 512 px.
    let side = |m: f64| m.clamp(8.0, 512.0) as usize;
    let patch_2d = [side(shape_y), side(shape_x)];
    let PoolingPlan { kernels, strides } = pooling_plan(&patch_2d, &[sy, sx], None, 7)?;
    let two_d = ConfigurationSpec {
        identifier: "nnUNetPlans_2d",
        batch_size: 12,
        patch: round_up(&patch_2d, &strides),
        median_shape: vec![shape_y, shape_x],
        spacing: vec![sy, sx],
        features: (0..kernels.len())
            .map(|s| (32usize << s).min(512))
            .collect(),
        kernels,
        strides,
    };

    // 3d_fullres: the median shape, in-plane ≤ 256 px, then the axis of
    // largest physical extent shrunk by 10 % until the budget holds.
    let mut patch_3d = [
        shape_z.max(1.0) as usize,
        shape_y.clamp(8.0, 256.0) as usize,
        shape_x.clamp(8.0, 256.0) as usize,
    ];
    let spacing_3d = [tz, sy, sx];
    while patch_3d.iter().product::<usize>() > MAX_PATCH_VOXELS_3D {
        let widest = (0..3)
            .max_by(|&a, &b| {
                (patch_3d[a] as f64 * spacing_3d[a])
                    .total_cmp(&(patch_3d[b] as f64 * spacing_3d[b]))
            })
            .unwrap_or(1);
        patch_3d[widest] = ((patch_3d[widest] as f64 * 0.9) as usize).max(1);
    }
    let PoolingPlan { kernels, strides } = pooling_plan(&patch_3d, &spacing_3d, None, 6)?;
    let three_d = ConfigurationSpec {
        identifier: "nnUNetPlans_3d_fullres",
        batch_size: 2,
        patch: round_up(&patch_3d, &strides),
        median_shape: vec![shape_z, shape_y, shape_x],
        spacing: spacing_3d.to_vec(),
        features: (0..kernels.len())
            .map(|s| (32usize << s).min(320))
            .collect(),
        kernels,
        strides,
    };

    let plans = json!({
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [sz, sy, sx],
        "original_median_shape_after_transp": [shape_z, shape_y, shape_x],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION_2D: configuration_json(&two_d),
            CONFIGURATION_3D: configuration_json(&three_d)
        },
        "experiment_planner_used": "claim derive_plans",
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

/// Replaces the network of one of the plans' configurations: `features`
/// per stage, kernels and strides from [`pooling_plan`] at the
/// configuration's spacing, `convs` convolutions per stage in encoder and
/// decoder, and the patch size (per axis a multiple of the network's
/// downsampling). For small models: derived plans follow nnU-Net's sizes.
pub fn set_network(
    plans: &mut Value,
    configuration: &str,
    patch: &[usize],
    features: &[usize],
    convs: usize,
) -> Result<()> {
    if features.is_empty() || features.contains(&0) || convs == 0 {
        return Err(Error::invalid(
            "the network needs ≥ 1 stage of ≥ 1 feature and ≥ 1 convolution per stage",
        ));
    }
    let conf = plans
        .get_mut("configurations")
        .and_then(|c| c.get_mut(configuration))
        .ok_or_else(|| {
            Error::invalid(format!("the plans have no {configuration} configuration"))
        })?;
    let spacing: Vec<f64> = conf["spacing"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if patch.len() != spacing.len() {
        return Err(Error::invalid(format!(
            "patch {patch:?}: the {configuration} configuration has {} axes",
            spacing.len()
        )));
    }
    let PoolingPlan { kernels, strides } =
        pooling_plan(patch, &spacing, Some(features.len()), usize::MAX)?;
    let divisors = axis_divisors(&strides);
    if patch.iter().zip(&divisors).any(|(p, d)| p % d != 0) {
        return Err(Error::invalid(format!(
            "patch {patch:?}: each axis must be a multiple of its downsampling {divisors:?}"
        )));
    }
    conf["patch_size"] = json!(patch);
    let arch = conf
        .get_mut("architecture")
        .and_then(|a| a.get_mut("arch_kwargs"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "the plans' {configuration} configuration has no arch_kwargs"
            ))
        })?;
    let stages = features.len();
    arch["n_stages"] = json!(stages);
    arch["features_per_stage"] = json!(features);
    arch["kernel_sizes"] = json!(kernels);
    arch["strides"] = json!(strides);
    arch["n_conv_per_stage"] = json!(vec![convs; stages]);
    arch["n_conv_per_stage_decoder"] = json!(vec![convs; stages - 1]);
    Ok(())
}

/// Preprocesses one case as `claim segment` does before its network
/// ([`preprocess_case`]: transpose, crop to the non-zero box, the
/// configuration's normalisation, resampling to its spacing, 2d keeping
/// each case's slice spacing), its labels mapped to class indices, cropped
/// with the image and resampled as nnU-Net resamples segmentations.
pub fn prepare_case(
    case: &crate::train::data::TrainingCase,
    scheme: &LabelScheme,
    plans: &Plans,
    configuration: &ConfigurationPlan,
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
    if let Some(v) = image.data.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "case {}: the image holds {v}",
            case.name
        )));
    }
    let classes = classes_of(scheme);
    let class_of = |l: i32| -> Result<f32> {
        classes
            .iter()
            .position(|(_, v)| *v == l)
            .map(|c| c as f32)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "case {}: label {l} is not in the label scheme ({})",
                    case.name,
                    classes
                        .iter()
                        .map(|(n, v)| format!("{n} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    };
    let tf = plans.transpose_forward;
    let g = case.image.geometry().spacing;
    let spacing_zyx = [g[2], g[1], g[0]];
    let spacing = [spacing_zyx[tf[0]], spacing_zyx[tf[1]], spacing_zyx[tf[2]]];
    let transposed = image
        .data
        .permuted_axes(tf)
        .as_standard_layout()
        .into_owned();
    let seg_t = labels
        .data
        .view()
        .permuted_axes(tf)
        .as_standard_layout()
        .into_owned();
    let stacked = transposed.insert_axis(ndarray::Axis(0));
    let pre = preprocess_case(stacked, spacing, configuration, plans)?;
    let (lo, hi) = (pre.crop_start, pre.crop_end);
    let shape_c = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let mut seg = Vec::with_capacity(shape_c.iter().product());
    for &l in seg_t
        .slice(ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
        .iter()
    {
        seg.push(class_of(l)?);
    }
    let (_, d0, d1, d2) = pre.data.dim();
    let shape_r = [d0, d1, d2];
    let seg = if shape_r != shape_c {
        resample_data_or_seg_to_shape(
            &seg,
            1,
            shape_c,
            shape_r,
            pre.spacing,
            pre.target,
            &ResampleSettings::nnunet_segmentation(),
        )?
    } else {
        seg
    };
    Ok(PreparedCase {
        name: case.name.clone(),
        slices: shape_r[0],
        height: shape_r[1],
        width: shape_r[2],
        image: pre.data.iter().copied().collect(),
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
    /// (y, x) or (z, y, x).
    patch: Vec<usize>,
    batch_size: usize,
    train: Vec<PreparedCase>,
    validation: Vec<PreparedCase>,
    scheme: LabelScheme,
    state: TrainState,
    compute: Compute,
    /// The weights and optimiser state on the compute device, when it
    /// keeps them there (`state`'s values are stale then).
    resident: Option<ResidentState>,
    /// The loss scaler's state from the checkpoint this run resumed.
    resumed_scaler: Option<String>,
}

/// A state-dict entry: key, shape, row-major values.
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

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
    /// Plans `data` (or takes `plans`, a `plans.json` value holding the
    /// configuration `config.configuration` names), preprocesses every
    /// case, splits the folds and
    /// initialises the network.
    pub fn new(
        data: &TrainingData,
        plans: Option<Value>,
        config: SegTrainConfig,
    ) -> Result<SegmenterTrainer> {
        check_config(&config)?;
        let (derived, dataset) = derive_plans(data, &config.dataset_name)?;
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
        let resumed_scaler = state.metadata.remove(SCALER_METADATA_KEY);
        state.metadata.clear();
        let mut trainer = Self::assemble(data, plans, dataset, config, Some(state))?;
        trainer.resumed_scaler = resumed_scaler;
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
        if ![CONFIGURATION_2D, CONFIGURATION_3D].contains(&config.configuration.as_str()) {
            return Err(Error::invalid(format!(
                "configuration {:?}: claim trains {CONFIGURATION_2D} and {CONFIGURATION_3D}",
                config.configuration
            )));
        }
        let parsed = Plans::parse(&plans.to_string())?;
        let conf = parsed.configuration(&config.configuration)?;
        let classes = classes_of(&data.scheme).len();
        let network = conf.network_config(1, classes)?;
        let patch = conf.patch_size.clone();
        let divisor = network.size_divisor();
        if patch.len() != network.spatial_dims
            || conf.spacing.len() != network.spatial_dims
            || patch
                .iter()
                .zip(&divisor)
                .any(|(p, d)| *p == 0 || p % d != 0)
        {
            return Err(Error::invalid(format!(
                "{} configuration: patch {patch:?} does not fit the network's downsampling {divisor:?}",
                config.configuration
            )));
        }
        let batch_size = config.batch_size.or(conf.batch_size).unwrap_or(2).max(1);
        let mut names: Vec<usize> = (0..data.cases.len()).collect();
        names.sort_by(|&a, &b| data.cases[a].name.cmp(&data.cases[b].name));
        let mut rng = Rng::new(config.seed).fork(0x5e9);
        for i in (1..names.len()).rev() {
            names.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut train, mut validation) = (Vec::new(), Vec::new());
        for (rank, &i) in names.iter().enumerate() {
            let prepared = prepare_case(&data.cases[i], &data.scheme, &parsed, &conf)?;
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
            scheme: data.scheme,
            state,
            compute: Compute::cpu(),
            resident: None,
            resumed_scaler: None,
        })
    }

    /// Runs the following steps' forward and backward passes on
    /// `compute` (e.g. [`Compute::open`] of a GPU: f16 with dynamic loss
    /// scaling); the f32 weights and optimiser state move to the device
    /// when it keeps them ([`Compute::resident_weights`]), else stay on
    /// the host. A run resumed from a checkpoint takes up its saved loss
    /// scale (in the first compute set after resuming, when it scales its
    /// loss).
    pub fn set_compute(&mut self, compute: Compute) -> Result<()> {
        sync_host(&mut self.state, &mut self.resident)?;
        let compute = compute.resuming(&mut self.resumed_scaler)?;
        ensure_resident(&mut self.state, &mut self.resident, &compute)?;
        self.compute = compute;
        Ok(())
    }

    /// Where the steps compute.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// Saves everything [`resume`](Self::resume) needs (weights, optimiser
    /// momentum, step, plans, configuration, split).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut state = host_view(&self.state, &self.resident)?.into_owned();
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
        if let Some(scaler) = self.compute.scaler_metadata()? {
            state
                .metadata
                .insert(SCALER_METADATA_KEY.to_string(), scaler);
        }
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

    /// The patch as (planes, rows, columns): one plane for 2d.
    fn patch_dhw(&self) -> (usize, usize, usize) {
        match self.patch[..] {
            [d, h, w] => (d, h, w),
            [h, w] => (1, h, w),
            _ => (1, 1, 1),
        }
    }

    /// The batch of step `step`: `[B, 1, (D,) H, W]` and the class maps.
    /// With `extra` cases, each item comes from them with probability
    /// `1 − real_fraction` (without, the draws are exactly those of a
    /// plain run).
    fn batch(
        &self,
        step: u64,
        extra: &[PreparedCase],
        real_fraction: f64,
    ) -> Result<(Tensor, Vec<u8>)> {
        let mut rng = Rng::new(self.config.seed).fork(step.wrapping_add(1));
        let (pd, ph, pw) = self.patch_dhw();
        let b = self.batch_size;
        let forced = (b as f64 * self.config.foreground_fraction).ceil() as usize;
        let (mut image, mut classes) = (
            Vec::with_capacity(b * pd * ph * pw),
            Vec::with_capacity(b * pd * ph * pw),
        );
        for item in 0..b {
            let pool = if !extra.is_empty() && rng.uniform() >= real_fraction {
                extra
            } else {
                &self.train
            };
            let case = &pool[rng.below(pool.len() as u64) as usize];
            let force = item >= b - forced.min(b);
            let mut patch = if self.patch.len() == 2 {
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
                sample_patch(
                    plane,
                    labels,
                    case.height,
                    case.width,
                    centre,
                    (ph, pw),
                    &self.config.augment,
                    &mut rng,
                )?
            } else {
                self.sample_patch_3d(case, force, &mut rng)?
            };
            augment_intensities(&mut patch, &self.config.augment, &mut rng);
            image.extend_from_slice(&patch.image);
            classes.extend_from_slice(&patch.labels);
        }
        let shape: Vec<usize> = [b, 1].iter().chain(&self.patch).copied().collect();
        Ok((Tensor::from_vec(image, &shape)?, classes))
    }

    /// A 3-D patch: centred on a voxel (a foreground one when `force`),
    /// its planes cut with one in-plane rotation and zoom (nnU-Net's
    /// "dummy 2-D" spatial augmentation for anisotropic data); planes
    /// beyond the case are zeros (background).
    fn sample_patch_3d(&self, case: &PreparedCase, force: bool, rng: &mut Rng) -> Result<Patch> {
        let (pd, ph, pw) = self.patch_dhw();
        let (h, w) = (case.height, case.width);
        // The case's planes stacked as one tall plane: a row index r is
        // plane r / h, row r % h.
        let (row, col) = choose_centre(&case.classes, case.slices * h, w, force, rng);
        let z = (row / h as f64)
            .floor()
            .clamp(0.0, (case.slices - 1) as f64) as usize;
        let y = row - (z * h) as f64;
        let start = if case.slices <= pd {
            -(((pd - case.slices) / 2) as isize)
        } else if force {
            (z as isize - (pd / 2) as isize).clamp(0, (case.slices - pd) as isize)
        } else {
            rng.below((case.slices - pd + 1) as u64) as isize
        };
        let (angle, zoom) = draw_rotation_and_zoom(&self.config.augment, rng);
        let mut patch = Patch {
            depth: pd,
            height: ph,
            width: pw,
            image: Vec::with_capacity(pd * ph * pw),
            labels: Vec::with_capacity(pd * ph * pw),
        };
        for i in 0..pd as isize {
            let zz = start + i;
            if zz < 0 || zz as usize >= case.slices {
                patch.image.extend(std::iter::repeat_n(0.0, ph * pw));
                patch.labels.extend(std::iter::repeat_n(0, ph * pw));
                continue;
            }
            let (plane, labels) = case.plane(zz as usize);
            let cut = cut_patch(plane, labels, (h, w), (y, col), (ph, pw), angle, zoom)?;
            patch.image.extend_from_slice(&cut.image);
            patch.labels.extend_from_slice(&cut.labels);
        }
        Ok(patch)
    }

    /// The learning rate of the next step (nnU-Net's poly rate per epoch).
    pub fn learning_rate(&self) -> f32 {
        self.options
            .policy(self.config.epochs as u64)
            .at(self.epoch())
    }

    /// One optimiser step: draw the step's batch, compute the deep-
    /// supervised Dice + CE and its gradients, clip, update. A non-finite
    /// loss is an error and changes nothing; so is a non-finite gradient,
    /// except under loss scaling, where the update is skipped and the scale
    /// halved (the report says so).
    pub fn step(&mut self) -> Result<StepReport> {
        self.step_mixed(&[], 1.0)
    }

    /// [`step`](Self::step) with `extra` cases (e.g. synthetic ones,
    /// prepared by [`prepare`](Self::prepare)) mixed into the batch: each
    /// item is a real training case with probability `real_fraction`, else
    /// one of `extra`.
    pub fn step_mixed(&mut self, extra: &[PreparedCase], real_fraction: f64) -> Result<StepReport> {
        if !(0.0..=1.0).contains(&real_fraction) {
            return Err(Error::invalid(format!(
                "the real fraction must be in [0, 1], got {real_fraction}"
            )));
        }
        let step = self.state.step;
        let (x, classes) = self.batch(step, extra, real_fraction)?;
        ensure_resident(&mut self.state, &mut self.resident, &self.compute)?;
        let tensors = step_tensors(&self.state, &self.resident, true)?;
        let net = self.network_on_compute(tensors.clone())?;
        let heads = net
            .forward_deep_supervision(&x)?
            .iter()
            .map(|h| self.compute.for_loss(h))
            .collect::<Result<Vec<_>>>()?;
        let (pd, ph, pw) = self.patch_dhw();
        let targets = head_targets(&heads, &classes, self.batch_size, (pd, ph, pw))?;
        let loss = dice_ce_loss(&heads, &targets, true)?;
        let value = loss.to_vec()?[0];
        if !value.is_finite() {
            return Err(Error::invalid(format!("step {step}: the loss is {value}")));
        }
        let mut grads = self.compute.backward(&loss)?;
        drop((heads, net));
        let lr = self.learning_rate();
        let applied = apply_gradients(
            &mut self.state,
            &mut self.resident,
            &tensors,
            &mut grads,
            &self.compute,
            self.options.grad_clip,
            lr,
        )?;
        drop((grads, tensors));
        let Some(norm) = applied else {
            self.compute.update(true);
            self.state.step += 1;
            return Ok(StepReport {
                step,
                loss: value,
                lr,
                grad_norm: f32::INFINITY,
                skipped: true,
            });
        };
        self.compute.update(false);
        self.state.step += 1;
        Ok(StepReport {
            step,
            loss: value,
            lr,
            grad_norm: norm,
            skipped: false,
        })
    }

    /// Preprocesses `case` (labels in the run's scheme) exactly as the
    /// run's own cases, for [`step_mixed`](Self::step_mixed).
    pub fn prepare(&self, case: &crate::train::data::TrainingCase) -> Result<PreparedCase> {
        let parsed = Plans::parse(&self.plans.to_string())?;
        let conf = parsed.configuration(&self.config.configuration)?;
        prepare_case(case, &self.scheme, &parsed, &conf)
    }

    /// The current weights (copied from the device when it keeps them).
    pub fn parameters(&self) -> Result<Cow<'_, [Parameter]>> {
        host_parameters(&self.state, &self.resident, false)
    }

    /// The label scheme of the run's data.
    pub fn scheme(&self) -> LabelScheme {
        self.scheme
    }

    /// The network with the current weights as constants (no gradient
    /// reaches them), on the run's compute device and type: what another
    /// model's loss can run through.
    pub fn frozen_network(&self) -> Result<PlainConvUNet> {
        self.network_on_compute(step_tensors(&self.state, &self.resident, false)?)
    }

    /// The network built from `tensors` (tracked or not) on the run's
    /// compute device and element type.
    fn network_on_compute(&self, tensors: Vec<(String, Tensor)>) -> Result<PlainConvUNet> {
        PlainConvUNet::from_state_dict_on(
            tensors,
            &self.network,
            &self.compute.device,
            self.compute.dtype,
        )
    }

    /// The mean and standard deviation (f64) the plans' z-score
    /// normalisation gives `image` (statistics over the whole image, no
    /// mask): `normalised = (raw − mean)/std`. Other normalisation schemes
    /// are refused.
    pub fn zscore_statistics(&self, image: &crate::volume::Image) -> Result<(f64, f64)> {
        let parsed = Plans::parse(&self.plans.to_string())?;
        let conf = parsed.configuration(&self.config.configuration)?;
        let zscore = conf.normalization_schemes.first().copied()
            == Some(crate::segmentation::plans::NormalizationScheme::ZScore)
            && !conf.use_mask_for_norm.first().copied().unwrap_or(false);
        if !zscore {
            return Err(Error::Unsupported(format!(
                "the {} configuration normalises with {:?} (mask {:?}); the segmenter's loss on \
                 generated images needs unmasked z-score normalisation",
                self.config.configuration, conf.normalization_schemes, conf.use_mask_for_norm
            )));
        }
        let image = image.to_f32();
        let values = image.as_slice()?;
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        Ok((mean, var.sqrt().max(1e-8)))
    }

    /// Mean Dice per foreground class over the validation cases (each
    /// case's slices predicted whole, padded to the network's divisor; no
    /// mirroring). Empty when the split has no validation case.
    pub fn validate(&self) -> Result<Vec<f64>> {
        if self.validation.is_empty() {
            return Ok(Vec::new());
        }
        let net = self.frozen_network()?;
        let classes = self.network.num_classes;
        let div = self.network.size_divisor();
        // 2d: each plane alone; 3d: the whole case at once.
        let (dz, dy, dx) = match div[..] {
            [z, y, x] => (Some(z), y, x),
            [y, x] => (None, y, x),
            _ => return Err(Error::Internal(format!("divisor {div:?}"))),
        };
        let mut sums = vec![(0f64, 0usize); classes - 1];
        for case in &self.validation {
            let (h, w) = (case.height, case.width);
            let (hp, wp) = (h.div_ceil(dy) * dy, w.div_ceil(dx) * dx);
            let (groups, depth, depth_padded) = match dz {
                Some(dz) => (1, case.slices, case.slices.div_ceil(dz) * dz),
                None => (case.slices, 1, 1),
            };
            let mut pred = Vec::with_capacity(case.classes.len());
            for g in 0..groups {
                let mut padded = vec![0f32; depth_padded * hp * wp];
                for z in 0..depth {
                    let (plane, _) = case.plane(g * depth + z);
                    for r in 0..h {
                        let at = (z * hp + r) * wp;
                        padded[at..at + w].copy_from_slice(&plane[r * w..(r + 1) * w]);
                    }
                }
                let shape: Vec<usize> = if dz.is_some() {
                    vec![1, 1, depth_padded, hp, wp]
                } else {
                    vec![1, 1, hp, wp]
                };
                let logits =
                    crate::nn::no_grad(|| net.forward(&Tensor::from_vec(padded, &shape)?))?
                        .to_vec()?;
                let volume = depth_padded * hp * wp;
                for z in 0..depth {
                    for r in 0..h {
                        for c in 0..w {
                            let at = (z * hp + r) * wp + c;
                            let best = (0..classes)
                                .max_by(|&a, &b| {
                                    logits[a * volume + at].total_cmp(&logits[b * volume + at])
                                })
                                .unwrap_or(0);
                            pred.push(best as u8);
                        }
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
    pub fn nnunet_state_dict(&self) -> Result<Vec<NamedValues>> {
        let params = self.parameters()?;
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
        for p in params.iter() {
            push_with_aliases(&p.name, p);
        }
        for p in params.iter().filter(|p| p.name.starts_with("encoder.")) {
            push_with_aliases(&format!("decoder.{}", p.name), p);
        }
        Ok(out)
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
            self.nnunet_state_dict()?
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
                    ("configuration", SaveValue::str(&self.config.configuration)),
                    ("fold", SaveValue::Int(self.config.fold as i64)),
                    ("dataset_json", SaveValue::from_json(&self.dataset)),
                    ("device", SaveValue::str("cpu")),
                ]),
            ),
            ("trainer_name", SaveValue::str(TRAINER_NAME)),
            (
                "inference_allowed_mirroring_axes",
                SaveValue::Tuple((0..self.patch.len() as i64).map(SaveValue::Int).collect()),
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

/// The class maps of deep-supervision heads: each head's target is the
/// batch's class map (`[B, D, H, W]` of a `(D, H, W)` patch) sampled at
/// the head's stride (nearest), as nnU-Net downsamples its targets.
pub fn head_targets(
    heads: &[Tensor],
    classes: &[u8],
    batch: usize,
    (pd, ph, pw): (usize, usize, usize),
) -> Result<Vec<Vec<u8>>> {
    if classes.len() != batch * pd * ph * pw {
        return Err(Error::Internal(format!(
            "{} class values for a batch of {batch} patches of {pd}×{ph}×{pw}",
            classes.len()
        )));
    }
    let mut targets = Vec::with_capacity(heads.len());
    for head in heads {
        let (hd, hh, hw) = match head.dims()[2..] {
            [hd, hh, hw] => (hd, hh, hw),
            [hh, hw] => (1, hh, hw),
            _ => return Err(Error::Internal(format!("head of shape {:?}", head.dims()))),
        };
        let (sz, sy, sx) = (pd / hd.max(1), ph / hh.max(1), pw / hw.max(1));
        let mut t = Vec::with_capacity(batch * hd * hh * hw);
        for item in 0..batch {
            for z in 0..hd {
                for r in 0..hh {
                    let row = ((item * pd + z * sz) * ph + r * sy) * pw;
                    t.extend((0..hw).map(|c| classes[row + c * sx]));
                }
            }
        }
        targets.push(t);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::phantom_dataset;

    #[test]
    fn plans_follow_the_rules_and_parse() {
        let data = phantom_dataset(2, 7, 64, 3).unwrap();
        let (plans, dataset) = derive_plans(&data, "Dataset001_test").unwrap();
        let parsed = Plans::parse(&plans.to_string()).unwrap();
        let conf = parsed.configuration("2d").unwrap();
        // 64 px, 1.5625 mm: patch 64, pools while ≥ 8 px: 4, 5 stages.
        assert_eq!(conf.patch_size, [64, 64]);
        let cfg = conf.network_config(1, 6).unwrap();
        assert_eq!(cfg.features_per_stage, [32, 64, 128, 256, 512]);
        assert_eq!(cfg.kernel_sizes, vec![vec![3, 3]; 5]);
        assert_eq!(dataset["labels"]["infarction"], 3);
        assert_eq!(dataset["labels"]["right_ventricle"], 5);
        // 3d_fullres on 9 mm slices: anisotropic, so z keeps kernel 1 until
        // two in-plane poolings bring x/y to 6.25 mm (≤ 2 × … ≥ 9/2), and is
        // never pooled (3 planes < 8).
        let conf = parsed.configuration("3d_fullres").unwrap();
        assert_eq!(conf.patch_size, [3, 64, 64]);
        assert_eq!(conf.spacing, [9.0, 1.5625, 1.5625]);
        let cfg = conf.network_config(1, 6).unwrap();
        assert_eq!(cfg.spatial_dims, 3);
        assert_eq!(cfg.features_per_stage, [32, 64, 128, 256, 320]);
        assert_eq!(
            cfg.kernel_sizes,
            [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]].map(|k| k.to_vec())
        );
        assert_eq!(
            cfg.strides,
            [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]].map(|k| k.to_vec())
        );
        assert_eq!(conf.batch_size, Some(2));
    }

    fn small_plans(data: &TrainingData) -> Value {
        let (mut plans, _) = derive_plans(data, "Dataset001_test").unwrap();
        set_network(&mut plans, CONFIGURATION_2D, &[32, 32], &[8, 16, 16], 1).unwrap();
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

    /// Weights resident on the compute device (the CPU here, running the
    /// code a GPU runs) train exactly as host weights do: nnU-Net's SGD
    /// with clipping at 12 under a power-of-two loss scale, the weights,
    /// momentum and checkpoint; a run resumed from it on the host goes on
    /// identically.
    #[test]
    fn resident_weights_train_as_host_weights() {
        let data = phantom_dataset(3, 5, 48, 2).unwrap();
        let config = SegTrainConfig {
            epochs: 2,
            iterations_per_epoch: 2,
            batch_size: Some(2),
            seed: 5,
            ..SegTrainConfig::default()
        };
        let mut host =
            SegmenterTrainer::new(&data, Some(small_plans(&data)), config.clone()).unwrap();
        let mut dev = SegmenterTrainer::new(&data, Some(small_plans(&data)), config).unwrap();
        let scaled = |resident_weights| Compute::cpu_scaled(256.0, resident_weights);
        host.set_compute(scaled(false)).unwrap();
        dev.set_compute(scaled(true)).unwrap();
        assert!(dev.resident.is_some());
        for _ in 0..3 {
            assert_eq!(host.step().unwrap(), dev.step().unwrap());
        }
        assert_eq!(host.parameters().unwrap(), dev.parameters().unwrap());
        assert_eq!(
            host.nnunet_state_dict().unwrap(),
            dev.nnunet_state_dict().unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
        host.save_checkpoint(&a).unwrap();
        dev.save_checkpoint(&b).unwrap();
        assert!(load_checkpoint(&a).unwrap() == load_checkpoint(&b).unwrap());
        // Back on the host: the values come along and training goes on.
        dev.set_compute(scaled(false)).unwrap();
        assert!(dev.resident.is_none());
        assert_eq!(host.state, dev.state);
        assert_eq!(host.step().unwrap(), dev.step().unwrap());
        assert_eq!(host.state, dev.state);
    }

    #[test]
    fn set_network_refuses_a_patch_the_network_cannot_halve() {
        let data = phantom_dataset(1, 5, 48, 2).unwrap();
        let (mut plans, _) = derive_plans(&data, "Dataset001_test").unwrap();
        assert!(set_network(&mut plans, CONFIGURATION_2D, &[34, 32], &[8, 16, 16], 1).is_err());
        assert!(set_network(&mut plans, CONFIGURATION_2D, &[32, 32], &[], 1).is_err());
        assert!(set_network(&mut plans, CONFIGURATION_2D, &[8, 8], &[8, 16, 16, 32], 1).is_err());
        assert!(set_network(&mut plans, CONFIGURATION_3D, &[32, 32], &[8, 16], 1).is_err());
    }

    #[test]
    fn pooling_follows_the_spacing() {
        // Isotropic: every axis pooled while ≥ 8.
        let plan = pooling_plan(&[16, 32], &[1.0, 1.0], None, 7).unwrap();
        assert_eq!(plan.kernels, vec![vec![3, 3]; 4]);
        assert_eq!(
            plan.strides,
            vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![1, 2]]
        );
        // Exactly 2 stages when asked.
        let plan = pooling_plan(&[16, 32], &[1.0, 1.0], Some(2), 7).unwrap();
        assert_eq!(plan.kernels.len(), 2);
        assert!(pooling_plan(&[4, 4], &[1.0, 1.0], Some(2), 7).is_err());
        assert!(pooling_plan(&[4, 4], &[1.0], None, 7).is_err());
    }

    #[test]
    fn a_3d_run_trains_validates_and_loads_as_3d_fullres() {
        let data = phantom_dataset(5, 11, 48, 4).unwrap();
        let (mut plans, _) = derive_plans(&data, "Dataset001_test").unwrap();
        set_network(&mut plans, CONFIGURATION_3D, &[4, 32, 32], &[8, 16, 16], 1).unwrap();
        let config = SegTrainConfig {
            configuration: CONFIGURATION_3D.into(),
            epochs: 2,
            iterations_per_epoch: 4,
            batch_size: Some(2),
            seed: 1,
            ..SegTrainConfig::default()
        };
        let mut trainer = SegmenterTrainer::new(&data, Some(plans), config).unwrap();
        assert_eq!(trainer.network().spatial_dims, 3);
        let (x, classes) = trainer.batch(0, &[], 1.0).unwrap();
        assert_eq!(x.dims(), [2, 1, 4, 32, 32]);
        assert_eq!(classes.len(), 2 * 4 * 32 * 32);
        let losses: Vec<f32> = (0..8).map(|_| trainer.step().unwrap().loss).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(
            losses[6..].iter().sum::<f32>() < losses[..2].iter().sum::<f32>(),
            "loss did not fall: {losses:?}"
        );
        assert_eq!(trainer.validate().unwrap().len(), 5);
        let dir = tempfile::tempdir().unwrap();
        trainer.write_results(dir.path(), CHECKPOINT_FINAL).unwrap();
        let seg = crate::segmentation::Segmenter::load(dir.path(), &Default::default()).unwrap();
        assert_eq!(seg.info().configuration, CONFIGURATION_3D);
        assert_eq!(seg.info().spatial_dims, 3);
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
        let keys = trainer.nnunet_state_dict().unwrap();
        assert!(keys
            .iter()
            .any(|(k, _, _)| k.starts_with("decoder.encoder.stages.0.0.convs.0.all_modules.0.")));
    }
}

//! The parts of nnU-Net's `plans.json` and `dataset.json` that inference
//! needs (`shared/reference/segmentation.md`, "plans.json").
//!
//! Plans are data: everything the predictor does — transpose, normalise,
//! resample, patch size, network shape — is derived from them. A
//! configuration may inherit from another (`inherits_from`), as nnU-Net's
//! cascade configurations do; plans written by nnU-Net before the
//! `architecture` entry existed (`UNet_class_name`, `conv_kernel_sizes`, …)
//! are converted the way nnU-Net itself converts them.

use crate::models::PlainUNetConfig;
use crate::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The network class nnU-Net's default plans use; the only one supported.
pub const PLAIN_CONV_UNET: &str = "dynamic_network_architectures.architectures.unet.PlainConvUNet";

/// How one input channel is normalised (`normalization_schemes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalizationScheme {
    /// `(x − mean) / max(std, 1e-8)` over the cropped case (or its non-zero
    /// mask when `use_mask_for_norm`).
    ZScore,
    /// Clip to the dataset's foreground 0.5–99.5 percentiles, then
    /// `(x − mean) / max(std, 1e-8)` with the dataset's foreground mean/std.
    Ct,
    /// Values unchanged.
    None,
    /// `(x − min) / max(max − min, 1e-8)` over the cropped case.
    RescaleTo01,
    /// `x / 255` (8-bit RGB channels).
    RgbTo01,
}

impl NormalizationScheme {
    /// The scheme for an nnU-Net class name (`ZScoreNormalization`, …).
    pub fn from_class_name(name: &str) -> Result<NormalizationScheme> {
        Ok(match name {
            "ZScoreNormalization" => NormalizationScheme::ZScore,
            "CTNormalization" => NormalizationScheme::Ct,
            "NoNormalization" => NormalizationScheme::None,
            "RescaleTo01Normalization" => NormalizationScheme::RescaleTo01,
            "RGBTo01Normalization" => NormalizationScheme::RgbTo01,
            other => {
                return Err(Error::Unsupported(format!(
                    "normalization scheme `{other}` (supported: ZScoreNormalization, \
                     CTNormalization, NoNormalization, RescaleTo01Normalization, \
                     RGBTo01Normalization)"
                )))
            }
        })
    }
}

/// Foreground intensity statistics of one channel over the training set
/// (used by CT normalisation).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct IntensityProperties {
    /// Mean foreground intensity.
    pub mean: f64,
    /// Standard deviation of the foreground intensities.
    pub std: f64,
    /// 0.5th percentile.
    pub percentile_00_5: f64,
    /// 99.5th percentile.
    pub percentile_99_5: f64,
}

/// How a resampling step is done (`resampling_fn_*` and their kwargs).
#[derive(Clone, Debug, PartialEq)]
pub struct ResamplingSpec {
    /// The nnU-Net function name, e.g. `resample_data_or_seg_to_shape`.
    pub function: String,
    /// Spline order in the (in-plane) axes: 3 for data, 1 for logits.
    pub order: usize,
    /// Order along the separately handled low-resolution axis.
    pub order_z: usize,
    /// `force_separate_z`: `None` decides from the anisotropy.
    pub force_separate_z: Option<bool>,
}

/// One resolved configuration of the plans (`2d`, `3d_fullres`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigurationPlan {
    /// Its name in the plans.
    pub name: String,
    /// Patch size (2 entries for 2-D configurations, 3 for 3-D), after the
    /// plans' `transpose_forward`.
    pub patch_size: Vec<usize>,
    /// Target spacing in mm, same axes as `patch_size`.
    pub spacing: Vec<f64>,
    /// Per input channel.
    pub normalization_schemes: Vec<NormalizationScheme>,
    /// Per input channel: normalise only inside the non-zero mask.
    pub use_mask_for_norm: Vec<bool>,
    /// Resampling of the image to the configuration spacing.
    pub resampling_data: ResamplingSpec,
    /// Resampling of the logits back to the image's spacing.
    pub resampling_probabilities: ResamplingSpec,
    /// `architecture.network_class_name`.
    pub network_class_name: String,
    /// `architecture.arch_kwargs`, verbatim.
    pub arch_kwargs: Value,
    /// The training batch size (informational).
    pub batch_size: Option<usize>,
    /// The configuration whose segmentation this one takes as input (cascade).
    pub previous_stage: Option<String>,
}

impl ConfigurationPlan {
    /// 2 or 3.
    pub fn spatial_dims(&self) -> usize {
        self.patch_size.len()
    }

    /// The PlainConvUNet this configuration describes, or
    /// [`Error::Unsupported`] naming any other network class.
    pub fn network_config(
        &self,
        input_channels: usize,
        num_classes: usize,
    ) -> Result<PlainUNetConfig> {
        let class = self.network_class_name.as_str();
        if class != PLAIN_CONV_UNET && class.rsplit('.').next() != Some("PlainConvUNet") {
            return Err(Error::Unsupported(format!(
                "network class `{class}` of configuration `{}`: only {PLAIN_CONV_UNET} is supported",
                self.name
            )));
        }
        let cfg =
            PlainUNetConfig::from_arch_kwargs(&self.arch_kwargs, input_channels, num_classes)?;
        if cfg.spatial_dims != self.spatial_dims() {
            return Err(Error::format(format!(
                "configuration `{}`: patch size {:?} has {} axes but the network is {}-D",
                self.name,
                self.patch_size,
                self.spatial_dims(),
                cfg.spatial_dims
            )));
        }
        Ok(cfg)
    }
}

/// Largest patch (voxels per sliding window) a configuration may have:
/// 2²⁴, 8× nnU-Net's largest default 3-D patch. One window's first-stage
/// features alone take patch voxels × features × 4 bytes, so a patch of
/// 100000 × 100000 would need hundreds of gigabytes.
pub const MAX_PATCH_VOXELS: u64 = 1 << 24;
/// Largest patch size along one axis.
pub const MAX_PATCH_SIZE: usize = 4096;
/// Smallest target spacing a configuration may ask for, in mm.
pub const MIN_SPACING_MM: f64 = 1e-3;
/// Largest target spacing a configuration may ask for, in mm.
pub const MAX_SPACING_MM: f64 = 1e3;

/// Refuses an absurd patch: an axis over [`MAX_PATCH_SIZE`] is
/// [`Error::Format`]; more than [`MAX_PATCH_VOXELS`] voxels is
/// [`Error::OutOfMemory`] saying what one window would need.
fn check_patch_size(patch: &[usize], name: &str) -> Result<()> {
    let voxels = patch
        .iter()
        .try_fold(1u64, |acc, &p| acc.checked_mul(p as u64))
        .unwrap_or(u64::MAX);
    if voxels > MAX_PATCH_VOXELS {
        // One f32 input channel and 32 first-stage features, at least.
        let bytes = u128::from(voxels) * 33 * 4;
        return Err(Error::OutOfMemory(format!(
            "configuration `{name}`: patch_size {patch:?} is {voxels} voxels per window \
             (at least {} for one window's first-stage features); claim accepts at most \
             {MAX_PATCH_VOXELS}",
            crate::limits::human_bytes(bytes)
        )));
    }
    if let Some(p) = patch.iter().find(|&&p| p > MAX_PATCH_SIZE) {
        return Err(Error::format(format!(
            "configuration `{name}`: patch_size {patch:?} has an axis of {p} voxels; \
             at most {MAX_PATCH_SIZE}"
        )));
    }
    Ok(())
}

/// The top level of `plans.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plans {
    /// `dataset_name`.
    pub dataset_name: String,
    /// `plans_name` (e.g. `nnUNetPlans`).
    pub plans_name: String,
    /// Axis permutation of the (z, y, x) image array before prediction.
    pub transpose_forward: [usize; 3],
    /// Its inverse, applied to the prediction.
    pub transpose_backward: [usize; 3],
    /// Per channel (index = channel), when the plans have them.
    pub foreground_intensity_properties: Vec<Option<IntensityProperties>>,
    configurations: Map<String, Value>,
}

/// A JSON field that must be present.
fn required<'a>(obj: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| Error::format(format!("{what} lacks `{key}`")))
}

fn permutation(v: &Value, key: &str) -> Result<[usize; 3]> {
    let p: Vec<usize> = serde_json::from_value(v.clone())
        .map_err(|e| Error::format(format!("plans.json `{key}`: {e}")))?;
    let mut seen = [false; 3];
    for &a in &p {
        if a > 2 || std::mem::replace(&mut seen[a], true) {
            return Err(Error::format(format!(
                "plans.json `{key}` = {p:?} is not a permutation of 0, 1, 2"
            )));
        }
    }
    p.try_into()
        .map_err(|p| Error::format(format!("plans.json `{key}` = {p:?} needs 3 entries")))
}

/// Map keys "0", "1", … as a dense list by index.
fn by_channel_index<T>(
    map: &Map<String, Value>,
    what: &str,
    mut f: impl FnMut(&Value) -> Result<T>,
) -> Result<Vec<T>> {
    let mut items: Vec<(usize, T)> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let idx: usize = k
            .parse()
            .map_err(|_| Error::format(format!("{what}: key `{k}` is not a channel index")))?;
        items.push((idx, f(v)?));
    }
    items.sort_by_key(|(i, _)| *i);
    for (n, (i, _)) in items.iter().enumerate() {
        if *i != n {
            return Err(Error::format(format!(
                "{what}: channel indices are not 0..{}",
                items.len()
            )));
        }
    }
    Ok(items.into_iter().map(|(_, t)| t).collect())
}

/// The raw fields of one configuration after inheritance.
#[derive(Deserialize)]
struct RawConfiguration {
    patch_size: Vec<usize>,
    spacing: Vec<f64>,
    normalization_schemes: Vec<String>,
    use_mask_for_norm: Vec<bool>,
    #[serde(default)]
    resampling_fn_data: Option<String>,
    #[serde(default)]
    resampling_fn_data_kwargs: Option<RawResamplingKwargs>,
    #[serde(default)]
    resampling_fn_probabilities: Option<String>,
    #[serde(default)]
    resampling_fn_probabilities_kwargs: Option<RawResamplingKwargs>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    previous_stage: Option<String>,
    architecture: RawArchitecture,
}

#[derive(Deserialize)]
struct RawResamplingKwargs {
    #[serde(default)]
    order: Option<usize>,
    #[serde(default)]
    order_z: Option<usize>,
    #[serde(default)]
    force_separate_z: Option<bool>,
}

#[derive(Deserialize)]
struct RawArchitecture {
    network_class_name: String,
    arch_kwargs: Value,
}

impl Plans {
    /// Parses `plans.json` text.
    pub fn parse(text: &str) -> Result<Plans> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::format(format!("plans.json is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format("plans.json is not a JSON object"))?;
        let text_field = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let transpose_forward = match obj.get("transpose_forward") {
            Some(t) => permutation(t, "transpose_forward")?,
            None => [0, 1, 2],
        };
        let transpose_backward = match obj.get("transpose_backward") {
            Some(t) => permutation(t, "transpose_backward")?,
            None => [0, 1, 2],
        };
        for a in 0..3 {
            if transpose_backward[transpose_forward[a]] != a {
                return Err(Error::format(format!(
                    "plans.json: transpose_backward {transpose_backward:?} does not undo \
                     transpose_forward {transpose_forward:?}"
                )));
            }
        }
        let props = obj
            .get("foreground_intensity_properties_per_channel")
            .or_else(|| obj.get("foreground_intensity_properties_by_modality"))
            .and_then(Value::as_object);
        let foreground_intensity_properties = match props {
            Some(map) => by_channel_index(map, "foreground_intensity_properties", |v| {
                Ok(serde_json::from_value::<IntensityProperties>(v.clone()).ok())
            })?,
            None => Vec::new(),
        };
        let configurations = required(obj, "configurations", "plans.json")?
            .as_object()
            .ok_or_else(|| Error::format("plans.json `configurations` is not an object"))?
            .clone();
        Ok(Plans {
            dataset_name: text_field("dataset_name"),
            plans_name: text_field("plans_name"),
            transpose_forward,
            transpose_backward,
            foreground_intensity_properties,
            configurations,
        })
    }

    /// The configuration names, in file order.
    pub fn configuration_names(&self) -> Vec<String> {
        self.configurations.keys().cloned().collect()
    }

    /// The raw configuration `name` with `inherits_from` chains merged
    /// (the child's keys win).
    fn resolved(&self, name: &str, visited: &mut Vec<String>) -> Result<Map<String, Value>> {
        let conf = self
            .configurations
            .get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "configuration `{name}` is not in the plans (available: {})",
                    self.configuration_names().join(", ")
                ))
            })?;
        if visited.iter().any(|v| v == name) {
            return Err(Error::format(format!(
                "plans.json: configurations inherit in a circle: {} -> {name}",
                visited.join(" -> ")
            )));
        }
        visited.push(name.to_string());
        match conf.get("inherits_from").and_then(Value::as_str) {
            Some(parent) => {
                let mut base = self.resolved(parent, visited)?;
                for (k, v) in conf {
                    base.insert(k.clone(), v.clone());
                }
                Ok(base)
            }
            None => Ok(conf.clone()),
        }
    }

    /// The configuration `name`, resolved and validated.
    pub fn configuration(&self, name: &str) -> Result<ConfigurationPlan> {
        let mut conf = self.resolved(name, &mut Vec::new())?;
        if !conf.contains_key("architecture") {
            convert_old_architecture(&mut conf, name)?;
        }
        let raw: RawConfiguration = serde_json::from_value(Value::Object(conf))
            .map_err(|e| Error::format(format!("plans.json configuration `{name}`: {e}")))?;
        let dims = raw.patch_size.len();
        if !(2..=3).contains(&dims) || raw.patch_size.contains(&0) {
            return Err(Error::format(format!(
                "configuration `{name}`: patch_size {:?} must have 2 or 3 sizes ≥ 1",
                raw.patch_size
            )));
        }
        check_patch_size(&raw.patch_size, name)?;
        if raw.spacing.len() != dims
            || raw
                .spacing
                .iter()
                .any(|s| !s.is_finite() || !(MIN_SPACING_MM..=MAX_SPACING_MM).contains(s))
        {
            return Err(Error::format(format!(
                "configuration `{name}`: spacing {:?} must have {dims} values from \
                 {MIN_SPACING_MM} to {MAX_SPACING_MM} mm",
                raw.spacing
            )));
        }
        if raw.normalization_schemes.len() != raw.use_mask_for_norm.len() {
            return Err(Error::format(format!(
                "configuration `{name}`: {} normalization schemes but {} use_mask_for_norm flags",
                raw.normalization_schemes.len(),
                raw.use_mask_for_norm.len()
            )));
        }
        let normalization_schemes = raw
            .normalization_schemes
            .iter()
            .map(|s| NormalizationScheme::from_class_name(s))
            .collect::<Result<Vec<_>>>()?;
        let spec = |function: Option<String>, kw: Option<RawResamplingKwargs>, order| {
            let kw = kw.unwrap_or(RawResamplingKwargs {
                order: None,
                order_z: None,
                force_separate_z: None,
            });
            ResamplingSpec {
                function: function.unwrap_or_else(|| "resample_data_or_seg_to_shape".into()),
                order: kw.order.unwrap_or(order),
                order_z: kw.order_z.unwrap_or(0),
                force_separate_z: kw.force_separate_z,
            }
        };
        Ok(ConfigurationPlan {
            name: name.to_string(),
            patch_size: raw.patch_size,
            spacing: raw.spacing,
            normalization_schemes,
            use_mask_for_norm: raw.use_mask_for_norm,
            resampling_data: spec(raw.resampling_fn_data, raw.resampling_fn_data_kwargs, 3),
            resampling_probabilities: spec(
                raw.resampling_fn_probabilities,
                raw.resampling_fn_probabilities_kwargs,
                1,
            ),
            network_class_name: raw.architecture.network_class_name,
            arch_kwargs: raw.architecture.arch_kwargs,
            batch_size: raw.batch_size,
            previous_stage: raw.previous_stage,
        })
    }
}

/// Rewrites a configuration of plans written before nnU-Net 2.2
/// (`UNet_class_name`, `conv_kernel_sizes`, `pool_op_kernel_sizes`, …) into
/// the `architecture` entry, with the defaults nnU-Net fills in for them
/// (bias, InstanceNorm eps 1e-5 affine, LeakyReLU).
fn convert_old_architecture(conf: &mut Map<String, Value>, name: &str) -> Result<()> {
    let what = format!("plans.json configuration `{name}`");
    let class = required(conf, "UNet_class_name", &what)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    let network_class_name = match class.as_str() {
        "PlainConvUNet" => PLAIN_CONV_UNET.to_string(),
        other => format!("dynamic_network_architectures.architectures.unet.{other}"),
    };
    let encoder = required(conf, "n_conv_per_stage_encoder", &what)?.clone();
    let n_stages = encoder
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| Error::format(format!("{what}: n_conv_per_stage_encoder is not a list")))?;
    let count = |key: &str| -> Result<u64> {
        required(conf, key, &what)?
            .as_u64()
            .ok_or_else(|| Error::format(format!("{what}: `{key}` is not a count")))
    };
    let base = count("UNet_base_num_features")?;
    let max = count("unet_max_num_features")?;
    let features: Vec<u64> = (0..n_stages)
        .map(|i| {
            base.saturating_mul(1u64.checked_shl(i as u32).unwrap_or(u64::MAX))
                .min(max)
        })
        .collect();
    let dims = conf
        .get("patch_size")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let (conv_op, norm_op) = if dims == 2 {
        (
            "torch.nn.modules.conv.Conv2d",
            "torch.nn.modules.instancenorm.InstanceNorm2d",
        )
    } else {
        (
            "torch.nn.modules.conv.Conv3d",
            "torch.nn.modules.instancenorm.InstanceNorm3d",
        )
    };
    let arch = json!({
        "network_class_name": network_class_name,
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": features,
            "conv_op": conv_op,
            "kernel_sizes": required(conf, "conv_kernel_sizes", &what)?.clone(),
            "strides": required(conf, "pool_op_kernel_sizes", &what)?.clone(),
            "n_conv_per_stage": encoder,
            "n_conv_per_stage_decoder": required(conf, "n_conv_per_stage_decoder", &what)?.clone(),
            "conv_bias": true,
            "norm_op": norm_op,
            "norm_op_kwargs": {"eps": 1e-5, "affine": true},
            "dropout_op": null,
            "dropout_op_kwargs": null,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": true}
        }
    });
    conf.insert("architecture".into(), arch);
    Ok(())
}

/// What inference needs from `dataset.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetInfo {
    /// Input channel names by index (`channel_names`, or `modality` in
    /// older files).
    pub channel_names: Vec<String>,
    /// Label name → value, sorted by value; value `i` is output channel `i`
    /// (nnU-Net requires consecutive labels 0, 1, …, n − 1). The `ignore`
    /// label is not an output and is left out.
    pub labels: Vec<(String, i32)>,
    /// `file_ending`, e.g. `.nii.gz`.
    pub file_ending: Option<String>,
}

impl DatasetInfo {
    /// Parses `dataset.json` text. Region-based label sets (a label given
    /// as a list of several values) are [`Error::Unsupported`].
    pub fn parse(text: &str) -> Result<DatasetInfo> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::format(format!("dataset.json is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format("dataset.json is not a JSON object"))?;
        let channels = obj
            .get("channel_names")
            .or_else(|| obj.get("modality"))
            .and_then(Value::as_object)
            .ok_or_else(|| Error::format("dataset.json lacks `channel_names`"))?;
        let channel_names = by_channel_index(channels, "dataset.json channel_names", |v| {
            Ok(v.as_str().unwrap_or_default().to_string())
        })?;
        let label_map = required(obj, "labels", "dataset.json")?
            .as_object()
            .ok_or_else(|| Error::format("dataset.json `labels` is not an object"))?;
        let mut labels = Vec::with_capacity(label_map.len());
        for (name, value) in label_map {
            if name == "ignore" {
                continue;
            }
            let scalar = match value {
                Value::Array(items) if items.len() == 1 => &items[0],
                Value::Array(_) => {
                    return Err(Error::Unsupported(format!(
                        "dataset.json label `{name}` = {value} is a region; region-based \
                         models are not supported"
                    )))
                }
                other => other,
            };
            let n = match scalar.as_i64() {
                Some(n) => i32::try_from(n).map_err(|_| {
                    Error::format(format!(
                        "dataset.json label `{name}` = {value} is out of range for a label \
                         (labels are 0, 1, …, number of classes − 1)"
                    ))
                })?,
                None => {
                    return Err(Error::format(format!(
                        "dataset.json label `{name}` = {value} is not an integer"
                    )))
                }
            };
            labels.push((name.clone(), n));
        }
        if obj.contains_key("regions_class_order") {
            return Err(Error::Unsupported(
                "dataset.json has regions_class_order: region-based models are not supported"
                    .into(),
            ));
        }
        labels.sort_by_key(|(_, v)| *v);
        if labels.first().map(|(n, v)| (n.as_str(), *v)) != Some(("background", 0)) {
            return Err(Error::format(
                "dataset.json labels must declare `background` as 0",
            ));
        }
        for (i, (name, v)) in labels.iter().enumerate() {
            if *v != i as i32 {
                return Err(Error::format(format!(
                    "dataset.json labels must be consecutive 0..{}; `{name}` is {v}",
                    labels.len()
                )));
            }
        }
        Ok(DatasetInfo {
            channel_names,
            labels,
            file_ending: obj
                .get("file_ending")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Output channels of the network (= labels).
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans_text() -> String {
        json!({
            "dataset_name": "Dataset001_Test",
            "plans_name": "nnUNetPlans",
            "transpose_forward": [0, 2, 1],
            "transpose_backward": [0, 2, 1],
            "foreground_intensity_properties_per_channel": {
                "0": {"mean": 100.0, "std": 20.0, "percentile_00_5": 10.0, "percentile_99_5": 300.0,
                      "min": 0.0, "max": 400.0, "median": 90.0}
            },
            "configurations": {
                "2d": {
                    "patch_size": [64, 48],
                    "spacing": [1.5, 1.5],
                    "normalization_schemes": ["ZScoreNormalization"],
                    "use_mask_for_norm": [false],
                    "resampling_fn_data": "resample_data_or_seg_to_shape",
                    "resampling_fn_data_kwargs": {"is_seg": false, "order": 3, "order_z": 0, "force_separate_z": null},
                    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                    "resampling_fn_probabilities_kwargs": {"is_seg": false, "order": 1, "order_z": 0, "force_separate_z": null},
                    "batch_size": 12,
                    "architecture": {
                        "network_class_name": PLAIN_CONV_UNET,
                        "arch_kwargs": {
                            "n_stages": 2, "features_per_stage": [4, 8],
                            "conv_op": "torch.nn.modules.conv.Conv2d",
                            "kernel_sizes": [[3, 3], [3, 3]], "strides": [[1, 1], [2, 2]],
                            "n_conv_per_stage": [2, 2], "n_conv_per_stage_decoder": [2],
                            "conv_bias": true,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                            "norm_op_kwargs": {"eps": 1e-5, "affine": true},
                            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": true}
                        }
                    }
                },
                "3d_old": {
                    "patch_size": [8, 16, 16],
                    "spacing": [9.0, 1.5, 1.5],
                    "normalization_schemes": ["CTNormalization"],
                    "use_mask_for_norm": [false],
                    "UNet_class_name": "PlainConvUNet",
                    "UNet_base_num_features": 4,
                    "unet_max_num_features": 6,
                    "n_conv_per_stage_encoder": [1, 1, 1],
                    "n_conv_per_stage_decoder": [1, 1],
                    "conv_kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                    "pool_op_kernel_sizes": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
                },
                "3d_child": {"inherits_from": "3d_old", "patch_size": [8, 32, 32]},
                "resenc": {
                    "inherits_from": "2d",
                    "architecture": {
                        "network_class_name": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
                        "arch_kwargs": {}
                    }
                },
                "loop_a": {"inherits_from": "loop_b"},
                "loop_b": {"inherits_from": "loop_a"}
            }
        })
        .to_string()
    }

    #[test]
    fn configurations_resolve_inheritance_and_old_formats() {
        let plans = Plans::parse(&plans_text()).unwrap();
        assert_eq!(plans.transpose_forward, [0, 2, 1]);
        assert_eq!(plans.foreground_intensity_properties[0].unwrap().std, 20.0);
        let c2 = plans.configuration("2d").unwrap();
        assert_eq!(c2.spatial_dims(), 2);
        assert_eq!(c2.resampling_probabilities.order, 1);
        let net = c2.network_config(1, 3).unwrap();
        assert_eq!(net.features_per_stage, vec![4, 8]);

        let child = plans.configuration("3d_child").unwrap();
        assert_eq!(child.patch_size, vec![8, 32, 32]);
        assert_eq!(child.normalization_schemes, vec![NormalizationScheme::Ct]);
        let net = child.network_config(1, 2).unwrap();
        assert_eq!(net.features_per_stage, vec![4, 6, 6]);
        assert_eq!(net.strides[1], vec![1, 2, 2]);
        assert!(net.conv_bias && net.norm_affine);

        let e = plans.configuration("resenc").unwrap().network_config(1, 3);
        assert!(
            matches!(&e, Err(Error::Unsupported(m)) if m.contains("ResidualEncoderUNet")),
            "{e:?}"
        );
        assert!(matches!(
            plans.configuration("loop_a"),
            Err(Error::Format(_))
        ));
        assert!(matches!(
            plans.configuration("nope"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Plans::parse("{").is_err());
        assert!(Plans::parse(r#"{"configurations": {}, "transpose_forward": [0, 0, 1]}"#).is_err());
    }

    #[test]
    fn dataset_labels_are_checked() {
        let d = DatasetInfo::parse(
            r#"{"channel_names": {"0": "LGE"}, "labels": {"background": 0, "myo": 2, "lv": 1, "ignore": 3},
                "numTraining": 10, "file_ending": ".nii.gz"}"#,
        )
        .unwrap();
        assert_eq!(d.channel_names, vec!["LGE"]);
        assert_eq!(
            d.labels,
            vec![
                ("background".into(), 0),
                ("lv".into(), 1),
                ("myo".into(), 2)
            ]
        );
        let regions = DatasetInfo::parse(
            r#"{"channel_names": {"0": "T1"}, "labels": {"background": 0, "whole": [1, 2], "core": [2]},
                "regions_class_order": [1, 2]}"#,
        );
        assert!(matches!(regions, Err(Error::Unsupported(_))));
        let gap = DatasetInfo::parse(
            r#"{"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 2}}"#,
        );
        assert!(matches!(gap, Err(Error::Format(_))));
    }
}

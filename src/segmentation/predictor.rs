//! [`Segmenter`]: a loaded nnU-Net model and its prediction, step by step
//! as nnU-Net's `nnUNetPredictor` (see the module documentation of
//! [`crate::segmentation`] for the data path).

use super::bundle::NnunetBundle;
use super::normalize::normalize_channel;
use super::plans::{ConfigurationPlan, DatasetInfo, Plans, ResamplingSpec};
use super::postprocess::{label_tissues, output_values, postprocess_classes};
use super::sliding::{
    argmax_classes, predict_window_logits, WindowBatch, WindowLogits, WindowPlan,
};
use crate::imgproc::fill_holes;
use crate::imgproc::resample::{
    nnunet_new_shape, resample_data_or_seg_to_shape, ResampleOrder, ResampleSettings,
    NNUNET_ANISOTROPY_THRESHOLD,
};
use crate::models::{PlainConvUNet, PlainUNetConfig};
use crate::nn::{DType, Device, LoadOptions, Tensor};
use crate::volume::{Geometry, Image, LabelScheme, Volume};
use crate::{Error, Result, ResultExt};
use half::f16;
use ndarray::{s, Array3, Array4, Axis};
use std::path::Path;

/// How to load a model ([`Segmenter::load`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmenterOptions {
    /// Folds to load (see [`super::FOLD_ALL`]); `None`: every numbered fold
    /// present (nnU-Net's default).
    pub folds: Option<Vec<usize>>,
    /// Configuration of the plans to use; `None`: the one the checkpoints
    /// were trained with.
    pub configuration: Option<String>,
}

/// How to segment an image ([`Segmenter::segment`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentParams {
    /// Test-time mirroring over the axes the checkpoint allows (nnU-Net's
    /// default: on).
    pub mirroring: bool,
    /// Sliding-window step as a fraction of the patch, in (0, 1]; 0.5 is
    /// nnU-Net's default, larger is faster with fewer overlaps.
    pub step_size: f32,
    /// Anatomical post-processing ([`super::postprocess`]).
    pub postprocess: bool,
    /// Label values written for the recognised tissues.
    pub label_scheme: LabelScheme,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            mirroring: true,
            step_size: 0.5,
            postprocess: true,
            label_scheme: LabelScheme::EMIDEC,
        }
    }
}

/// What a loaded model is ([`Segmenter::info`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmenterInfo {
    /// Plans configuration (e.g. `2d`, `3d_fullres`).
    pub configuration: String,
    /// Trainer class name.
    pub trainer: String,
    /// 2 or 3: the network's convolutions (2-D models segment slice by slice).
    pub spatial_dims: usize,
    /// Image channels the model takes.
    pub input_channels: usize,
    /// Channel names from `dataset.json`.
    pub channel_names: Vec<String>,
    /// Output classes.
    pub num_classes: usize,
    /// Label name → value (= class index) from `dataset.json`.
    pub labels: Vec<(String, i32)>,
    /// Patch size in the (transposed) array axes.
    pub patch_size: Vec<usize>,
    /// Target spacing (mm) in the same axes.
    pub spacing: Vec<f64>,
    /// Loaded folds, in ensemble order.
    pub folds: Vec<usize>,
    /// Axes of the patch mirrored at test time; `None`: no mirroring.
    pub mirroring_axes: Option<Vec<usize>>,
    /// Network parameters per fold.
    pub parameters: usize,
}

/// A loaded nnU-Net model: one PlainConvUNet per fold plus the plans and
/// labels that say how to use them. `Send + Sync`: one segmenter may serve
/// several threads.
#[derive(Debug)]
pub struct Segmenter {
    plans: Plans,
    configuration: ConfigurationPlan,
    dataset: DatasetInfo,
    trainer: String,
    mirroring_axes: Option<Vec<usize>>,
    network_config: PlainUNetConfig,
    networks: Vec<(usize, PlainConvUNet)>,
    parameters: usize,
}

impl Segmenter {
    /// Loads a results folder, a `checkpoint_final.pth` or a safetensors
    /// bundle ([`NnunetBundle::load`]) and builds its networks on the CPU
    /// in f32.
    pub fn load(path: &Path, options: &SegmenterOptions) -> Result<Segmenter> {
        Segmenter::load_with(path, options, &LoadOptions::default())
    }

    /// [`Segmenter::load`] with the networks on the device and precision of
    /// `load` (every fold on the same device).
    pub fn load_with(
        path: &Path,
        options: &SegmenterOptions,
        load: &LoadOptions,
    ) -> Result<Segmenter> {
        // Open the device first: a missing GPU fails before the files are read.
        load.resolve()?;
        let bundle = NnunetBundle::load(path, options.folds.as_deref())?;
        Segmenter::from_bundle_with(bundle, options.configuration.as_deref(), load)
    }

    /// Builds the networks of `bundle` for `configuration` (default: the
    /// bundle's) on the CPU in f32. Unsupported architectures, cascades and
    /// region-based label sets are [`Error::Unsupported`]; weights that do
    /// not fit the plans are [`Error::Model`] naming the fold and tensor.
    pub fn from_bundle(bundle: NnunetBundle, configuration: Option<&str>) -> Result<Segmenter> {
        Segmenter::from_bundle_with(bundle, configuration, &LoadOptions::default())
    }

    /// [`Segmenter::from_bundle`] with the networks on the device and
    /// precision of `load`.
    pub fn from_bundle_with(
        bundle: NnunetBundle,
        configuration: Option<&str>,
        load: &LoadOptions,
    ) -> Result<Segmenter> {
        let plans = Plans::parse(&bundle.plans_json)?;
        let dataset = DatasetInfo::parse(&bundle.dataset_json)?;
        let name = configuration.unwrap_or(&bundle.configuration);
        let config = plans.configuration(name)?;
        if let Some(prev) = &config.previous_stage {
            return Err(Error::Unsupported(format!(
                "configuration `{name}` is a cascade stage (it needs the segmentation of `{prev}`)"
            )));
        }
        let input_channels = dataset.channel_names.len();
        if config.normalization_schemes.len() != input_channels {
            return Err(Error::format(format!(
                "configuration `{name}` normalises {} channels but dataset.json has {input_channels}",
                config.normalization_schemes.len()
            )));
        }
        let network_config = config.network_config(input_channels, dataset.num_classes())?;
        if let Some(axes) = &bundle.mirroring_axes {
            if let Some(bad) = axes.iter().find(|&&a| a >= config.spatial_dims()) {
                return Err(Error::format(format!(
                    "mirroring axis {bad} does not exist in the {}-D configuration `{name}`",
                    config.spatial_dims()
                )));
            }
        }
        let mut networks = Vec::with_capacity(bundle.folds.len());
        let mut parameters = 0;
        for (fold, weights) in bundle.folds {
            parameters = weights.iter().map(|(_, t)| t.elem_count()).sum();
            let net = PlainConvUNet::from_state_dict_with(weights, &network_config, load)
                .with_context(|| format!("fold {}", super::fold_name(fold)))?;
            networks.push((fold, net));
        }
        if networks.is_empty() {
            return Err(Error::invalid("a model without folds"));
        }
        Ok(Segmenter {
            plans,
            configuration: config,
            dataset,
            trainer: bundle.trainer,
            mirroring_axes: bundle.mirroring_axes,
            network_config,
            networks,
            parameters,
        })
    }

    /// The model's configuration, labels, patch, spacing and folds.
    pub fn info(&self) -> SegmenterInfo {
        SegmenterInfo {
            configuration: self.configuration.name.clone(),
            trainer: self.trainer.clone(),
            spatial_dims: self.network_config.spatial_dims,
            input_channels: self.network_config.input_channels,
            channel_names: self.dataset.channel_names.clone(),
            num_classes: self.network_config.num_classes,
            labels: self.dataset.labels.clone(),
            patch_size: self.configuration.patch_size.clone(),
            spacing: self.configuration.spacing.clone(),
            folds: self.networks.iter().map(|(k, _)| *k).collect(),
            mirroring_axes: self.mirroring_axes.clone(),
            parameters: self.parameters,
        }
    }

    /// The device holding the networks (where they run).
    pub fn device(&self) -> Device {
        self.networks
            .first()
            .map_or(Device::Cpu, |(_, net)| net.device())
    }

    /// The networks' element type.
    pub fn dtype(&self) -> DType {
        self.networks
            .first()
            .map_or(DType::F32, |(_, net)| net.dtype())
    }

    /// The network of the `fold_index`-th loaded fold (0-based position in
    /// [`SegmenterInfo::folds`]) on `x` (`[B, C, H, W]` or `[B, C, D, H, W]`):
    /// raw logits, no preprocessing.
    pub fn predict_logits(&self, x: &Tensor, fold_index: usize) -> Result<Tensor> {
        let (_, net) = self.networks.get(fold_index).ok_or_else(|| {
            Error::invalid(format!(
                "fold index {fold_index} out of range: {} fold(s) loaded",
                self.networks.len()
            ))
        })?;
        net.forward(x)
    }

    /// Segments a single-channel image; see [`Segmenter::segment_channels`].
    pub fn segment(
        &self,
        image: &Image,
        params: &SegmentParams,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<Volume<u8>> {
        self.segment_channels(&[image], params, progress)
    }

    /// Segments an image given as one volume per input channel (same dims
    /// and geometry). The result has the input's dims and geometry and the
    /// values of `params.label_scheme`.
    ///
    /// `progress(done, total)` is called after every network evaluation,
    /// `total` = windows × mirror passes × folds; returning `false` stops
    /// with [`Error::Cancelled`].
    pub fn segment_channels(
        &self,
        channels: &[&Image],
        params: &SegmentParams,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<Volume<u8>> {
        Ok(self.predict(channels, params, progress, false)?.0)
    }

    /// [`Segmenter::segment_channels`], also returning the logits the labels
    /// were taken from (before post-processing): nnU-Net's half-precision
    /// fold average, on its working grid.
    pub fn segment_with_logits(
        &self,
        channels: &[&Image],
        params: &SegmentParams,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<(Volume<u8>, CaseLogits)> {
        let (labels, logits) = self.predict(channels, params, progress, true)?;
        let logits = logits.ok_or_else(|| Error::Internal("the logits were not kept".into()))?;
        Ok((labels, logits))
    }

    /// The prediction behind both: the logits come back to the host only
    /// when `keep_logits` or when they must be resampled; otherwise, for
    /// networks on a GPU, the fold mean and the argmax run there and only
    /// the label map is downloaded.
    fn predict(
        &self,
        channels: &[&Image],
        params: &SegmentParams,
        progress: &mut dyn FnMut(u64, u64) -> bool,
        keep_logits: bool,
    ) -> Result<(Volume<u8>, Option<CaseLogits>)> {
        let step = checked_step(params.step_size)?;
        let label_values = output_values(&self.dataset.labels, &params.label_scheme)?;
        let first = channels
            .first()
            .ok_or_else(|| Error::invalid("no image given"))?;
        let cfg = &self.network_config;
        if channels.len() != cfg.input_channels {
            return Err(Error::invalid(format!(
                "the model takes {} channel(s) ({}), got {} image(s)",
                cfg.input_channels,
                self.dataset.channel_names.join(", "),
                channels.len()
            )));
        }
        let geometry = *first.geometry();
        let dims = first.dims();
        for (c, image) in channels.iter().enumerate().skip(1) {
            if image.dims() != dims || !image.geometry().approx_eq(&geometry, 1e-6) {
                return Err(Error::invalid(format!(
                    "channel {c} has dims {:?} and geometry {:?}, channel 0 {dims:?} and {geometry:?}",
                    image.dims(),
                    image.geometry()
                )));
            }
        }
        let tf = self.plans.transpose_forward;
        // Our arrays are (z, y, x) like SimpleITK's; its spacing is reversed.
        let spacing_zyx = [
            geometry.spacing[2],
            geometry.spacing[1],
            geometry.spacing[0],
        ];
        let spacing = [spacing_zyx[tf[0]], spacing_zyx[tf[1]], spacing_zyx[tf[2]]];
        let mut stack = Vec::with_capacity(channels.len());
        for (c, image) in channels.iter().enumerate() {
            let v = image.to_f32();
            if let Some(((k, j, i), x)) = v.data.indexed_iter().find(|(_, x)| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "channel {c} holds {x} at voxel ({i}, {j}, {k}); images must be finite"
                )));
            }
            stack.push(v.data.permuted_axes(tf).as_standard_layout().into_owned());
        }
        let views: Vec<_> = stack.iter().map(|a| a.view()).collect();
        let data = ndarray::stack(Axis(0), &views)
            .map_err(|e| Error::Internal(format!("channel stack: {e}")))?;
        drop(stack);
        let shape_t = [data.dim().1, data.dim().2, data.dim().3];

        let PreprocessedCase {
            data: case,
            crop_start: lo,
            crop_end: hi,
            spacing,
            target,
        } = preprocess_case(data, spacing, &self.configuration, &self.plans)?;
        let shape_c = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
        let (_, d0, d1, d2) = case.dim();
        let shape_r = [d0, d1, d2];
        let resampled = shape_r != shape_c;

        // Sliding windows, mirroring, fold ensemble.
        let plan = WindowPlan::new(shape_r, &self.configuration.patch_size, step)?;
        let mirror_axes: Vec<usize> = match (&self.mirroring_axes, params.mirroring) {
            (Some(axes), true) => axes.clone(),
            _ => Vec::new(),
        };
        let passes = 1u64 << mirror_axes.len();
        let total = plan.len() as u64 * passes * self.networks.len() as u64;
        let mut done = 0u64;
        let mut tick = || -> Result<()> {
            done += 1;
            if progress(done, total) {
                Ok(())
            } else {
                Err(Error::Cancelled)
            }
        };
        let mut per_fold = Vec::with_capacity(self.networks.len());
        for (_, net) in &self.networks {
            let batch = WindowBatch::for_device(
                &net.device(),
                net.dtype(),
                net.config().activation_bytes_per_item(
                    &self.configuration.patch_size,
                    net.dtype().size_in_bytes(),
                ),
                passes as usize,
                plan.len(),
            );
            per_fold.push(predict_window_logits(
                case.view(),
                &plan,
                cfg.num_classes,
                &mirror_axes,
                batch,
                &mut |x: &Tensor| net.forward(x),
                &mut tick,
            )?);
        }
        drop(case);
        let placement = LabelPlacement {
            lo,
            hi,
            shape_t,
            geometry,
            dims,
        };
        let mean = WindowLogits::mean(per_fold)?;
        if !keep_logits && !resampled {
            let classes_c = mean.labels()?;
            drop(mean);
            let out = self.finish_labels(classes_c, &placement, params, &label_values)?;
            return Ok((out, None));
        }
        let mut logits = mean.into_host()?;

        // Logits back to the cropped grid (linear), stored as f16 like nnU-Net's.
        if resampled {
            let settings = settings_of(&self.configuration.resampling_probabilities)?;
            let flat: Vec<f32> = logits.iter().map(|v| v.to_f32()).collect();
            let back = resample_data_or_seg_to_shape(
                &flat,
                cfg.num_classes,
                shape_r,
                shape_c,
                target,
                spacing,
                &settings,
            )?;
            logits = Array4::from_shape_vec(
                (cfg.num_classes, shape_c[0], shape_c[1], shape_c[2]),
                back.into_iter().map(f16::from_f32).collect(),
            )
            .map_err(|e| Error::Internal(format!("resampled logits: {e}")))?;
        }
        let classes_c = argmax_classes(&logits);
        let out = self.finish_labels(classes_c, &placement, params, &label_values)?;
        let case_logits = CaseLogits {
            values: logits,
            crop_start: lo,
            transpose_forward: tf,
        };
        Ok((out, Some(case_logits)))
    }

    /// The label map of the image from the classes of the crop box: un-crop,
    /// transpose back, post-process and map to the scheme's `label_values`.
    fn finish_labels(
        &self,
        classes_c: Array3<u8>,
        at: &LabelPlacement,
        params: &SegmentParams,
        label_values: &[u8],
    ) -> Result<Volume<u8>> {
        let (lo, hi) = (at.lo, at.hi);
        let mut classes_t = Array3::<u8>::zeros(at.shape_t);
        classes_t
            .slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
            .assign(&classes_c);
        let classes = classes_t
            .permuted_axes(self.plans.transpose_backward)
            .as_standard_layout()
            .into_owned();
        let mut out = Volume {
            data: classes,
            geometry: at.geometry,
        };
        if out.dims() != at.dims {
            return Err(Error::Internal(format!(
                "prediction has dims {:?}, the image {:?}",
                out.dims(),
                at.dims
            )));
        }
        if params.postprocess {
            postprocess_classes(&mut out, &label_tissues(&self.dataset.labels))?;
        }
        out.data
            .mapv_inplace(|c| label_values.get(c as usize).copied().unwrap_or(c));
        Ok(out)
    }
}

/// Where the classes of a crop box go back into the image.
struct LabelPlacement {
    /// The crop box `lo..hi` in the transposed array of `shape_t`.
    lo: [usize; 3],
    hi: [usize; 3],
    shape_t: [usize; 3],
    /// The image's geometry and dims.
    geometry: Geometry,
    dims: [usize; 3],
}

/// A case as nnU-Net's preprocessor hands it to the network for one
/// configuration ([`preprocess_case`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedCase {
    /// `[channels, z, y, x]` (transposed axes): cropped, normalised and
    /// resampled to the configuration's spacing.
    pub data: Array4<f32>,
    /// First voxel of the non-zero crop box in the transposed array.
    pub crop_start: [usize; 3],
    /// One past its last voxel.
    pub crop_end: [usize; 3],
    /// The case's spacing, transposed axes (mm).
    pub spacing: [f64; 3],
    /// The spacing it was resampled to (2-D configurations keep the
    /// case's own along the first axis).
    pub target: [f64; 3],
}

/// nnU-Net's preprocessing of one case for `configuration`: crop to the
/// bounding box of voxels non-zero in any channel, normalise each channel
/// by its scheme over the whole cropped case (inside the filled non-zero
/// mask where `use_mask_for_norm`), resample to the configuration spacing
/// (2-D: in-plane only) with the plans' data resampling. `data` is
/// `[channels, z, y, x]` already transposed by `transpose_forward`, and
/// `spacing` its spacing in the same axes. Prediction and training
/// (`claim::train::segmenter`) both run it, so a trained network sees what
/// it will be given.
pub fn preprocess_case(
    data: Array4<f32>,
    spacing: [f64; 3],
    configuration: &ConfigurationPlan,
    plans: &Plans,
) -> Result<PreprocessedCase> {
    let channels = data.dim().0;
    if configuration.normalization_schemes.len() < channels
        || configuration.use_mask_for_norm.len() < channels
    {
        return Err(Error::format(format!(
            "configuration `{}` normalises {} channel(s), the case has {channels}",
            configuration.name,
            configuration.normalization_schemes.len()
        )));
    }
    // Crop to the non-zero box (all channels).
    let nonzero = data.map_axis(Axis(0), |v| v.iter().any(|&x| x != 0.0));
    let (lo, hi) = nonzero_box(&nonzero);
    let crop = s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]];
    let mut case = data
        .slice(s![.., lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
        .to_owned();
    drop(data);
    let shape_c = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];

    // Normalise each channel over the whole cropped case.
    let mask = if configuration.use_mask_for_norm.iter().any(|&m| m) {
        Some(
            filled_mask(&nonzero)?
                .slice(crop)
                .iter()
                .copied()
                .collect::<Vec<bool>>(),
        )
    } else {
        None
    };
    drop(nonzero);
    for (c, mut channel) in case.axis_iter_mut(Axis(0)).enumerate() {
        let voxels = channel
            .as_slice_mut()
            .ok_or_else(|| Error::Internal("case channel is not contiguous".into()))?;
        normalize_channel(
            voxels,
            configuration.normalization_schemes[c],
            configuration.use_mask_for_norm[c],
            mask.as_deref(),
            plans
                .foreground_intensity_properties
                .get(c)
                .and_then(Option::as_ref),
        )?;
    }

    // Resample to the configuration's spacing (2-D: in-plane only).
    let target = match configuration.spacing[..] {
        [y, x] => [spacing[0], y, x],
        [z, y, x] => [z, y, x],
        _ => return Err(Error::Internal("configuration spacing rank".into())),
    };
    let shape_r = nnunet_new_shape(shape_c, spacing, target)?;
    if shape_r != shape_c {
        let settings = settings_of(&configuration.resampling_data)?;
        let out = resample_data_or_seg_to_shape(
            case.as_slice()
                .ok_or_else(|| Error::Internal("case is not contiguous".into()))?,
            channels,
            shape_c,
            shape_r,
            spacing,
            target,
            &settings,
        )?;
        case = Array4::from_shape_vec((channels, shape_r[0], shape_r[1], shape_r[2]), out)
            .map_err(|e| Error::Internal(format!("resampled case: {e}")))?;
    }
    Ok(PreprocessedCase {
        data: case,
        crop_start: lo,
        crop_end: hi,
        spacing,
        target,
    })
}

/// The logits behind a segmentation: `[classes, z, y, x]` in half
/// precision (as nnU-Net keeps them) over the crop box of the transposed
/// image, after resampling back to the image's spacing. Voxels outside the
/// box are background without a network evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseLogits {
    /// `[classes, z, y, x]` over the crop box.
    pub values: Array4<f16>,
    /// First voxel of the crop box in the transposed `(z, y, x)` array.
    pub crop_start: [usize; 3],
    /// The plans' `transpose_forward` (input `(z, y, x)` axes → array axes).
    pub transpose_forward: [usize; 3],
}

impl CaseLogits {
    /// The class logits at input voxel `(i, j, k)`, or `None` outside the
    /// crop box.
    pub fn at(&self, ijk: [usize; 3]) -> Option<Vec<f32>> {
        let zyx = [ijk[2], ijk[1], ijk[0]];
        let (classes, nz, ny, nx) = self.values.dim();
        let mut idx = [0usize; 3];
        for (a, n) in [nz, ny, nx].into_iter().enumerate() {
            let t = zyx[self.transpose_forward[a]].checked_sub(self.crop_start[a])?;
            if t >= n {
                return None;
            }
            idx[a] = t;
        }
        Some(
            (0..classes)
                .map(|c| self.values[[c, idx[0], idx[1], idx[2]]].to_f32())
                .collect(),
        )
    }
}

/// The step as nnU-Net would see it: the shortest decimal of the f32 read
/// as f64 (so `0.7f32` means 0.7, as a Python float would), in (0, 1].
fn checked_step(step: f32) -> Result<f64> {
    let s: f64 = step.to_string().parse().unwrap_or(f64::NAN);
    if !(s > 0.0 && s <= 1.0) {
        return Err(Error::invalid(format!(
            "step size {step} must be in (0, 1]"
        )));
    }
    Ok(s)
}

/// `(lo, hi)` of the box of `true` voxels (half-open, per axis); the whole
/// array when there is none, as nnU-Net's `get_bbox_from_mask`.
fn nonzero_box(mask: &Array3<bool>) -> ([usize; 3], [usize; 3]) {
    let (z, y, x) = mask.dim();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for ((k, j, i), &on) in mask.indexed_iter() {
        if on {
            for (a, idx) in [k, j, i].into_iter().enumerate() {
                lo[a] = lo[a].min(idx);
                hi[a] = hi[a].max(idx + 1);
            }
        }
    }
    if lo[0] == usize::MAX {
        ([0, 0, 0], [z, y, x])
    } else {
        (lo, hi)
    }
}

/// nnU-Net's non-zero mask: the non-zero voxels with enclosed holes filled
/// (`binary_fill_holes`, 6-connected background).
fn filled_mask(nonzero: &Array3<bool>) -> Result<Array3<bool>> {
    // Axis order does not matter to hole filling; wrap as a volume as is.
    let volume = Volume {
        data: nonzero.clone(),
        geometry: Geometry::default(),
    };
    Ok(fill_holes(&volume)?.data)
}

/// The resampling settings of a plans entry.
fn settings_of(spec: &ResamplingSpec) -> Result<ResampleSettings> {
    match spec.function.as_str() {
        "resample_data_or_seg_to_shape" | "resample_data_or_seg_to_spacing" => {}
        other => {
            return Err(Error::Unsupported(format!(
                "resampling function `{other}` (supported: resample_data_or_seg_to_shape)"
            )))
        }
    }
    Ok(ResampleSettings {
        is_seg: false,
        order: ResampleOrder::from_spline_order(spec.order as i64)?,
        order_z: ResampleOrder::from_spline_order(spec.order_z as i64)?,
        force_separate_z: spec.force_separate_z,
        anisotropy_threshold: NNUNET_ANISOTROPY_THRESHOLD,
        ..ResampleSettings::nnunet_data()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmenter_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Segmenter>();
    }

    #[test]
    fn steps_and_boxes() {
        assert_eq!(checked_step(0.5).unwrap(), 0.5);
        assert_eq!(checked_step(0.7).unwrap(), 0.7);
        assert!(checked_step(0.0).is_err());
        assert!(checked_step(1.5).is_err());
        assert!(checked_step(f32::NAN).is_err());
        let mut m = Array3::from_elem((3, 4, 5), false);
        assert_eq!(nonzero_box(&m), ([0, 0, 0], [3, 4, 5]));
        m[[1, 2, 3]] = true;
        m[[2, 1, 3]] = true;
        assert_eq!(nonzero_box(&m), ([1, 1, 3], [3, 3, 4]));
    }
}

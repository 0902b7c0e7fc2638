//! Volume in, volume out: scar synthesis on the slices of a case that carry
//! a scar (or MVO) label, for every upstream model layout.
//!
//! For each item (one slice for 2-D models, `frames` consecutive slices for
//! 3-D ones) the pipeline crops or pads a `crop_size`² window centred on the
//! LV cavity, scales intensities to [−1, 1] (min → −1, max → +1, as in
//! training), repeats the window on every model channel, runs RePaint in
//! batches with the lesion (scar and MVO labels) as the region to generate,
//! composes one image from the channels, scales back and pastes the result
//! into a copy of the input. By default only lesion voxels are pasted, so
//! every other voxel stays bit-identical; `keep_network_output` pastes the
//! whole window (the network's reconstruction of the known region, as
//! upstream).
//!
//! **Layouts.** Channel `c` paints the label `channel_labels[c]` (default:
//! one channel → the scar label, CLAIM; two channels → scar then MVO,
//! LeFusion-EMIDEC). The known region is every voxel that is neither scar
//! nor MVO, on all channels. The composed image takes, at each voxel, the
//! channel whose label the voxel carries, and channel 0 everywhere else
//! (upstream: `final = ch0·[scar] + ch1·[MVO] + ch0·[known]`). A lesion
//! label that no channel paints (MVO for a one-channel model) is painted by
//! channel 0 and reported in [`Synthesis::warnings`].
//!
//! **Intensity scaling and padding.** 2-D items (F = 1) are scaled by the
//! min and max of their cropped window and padded with −1 (CLAIM); 3-D items
//! (F > 1) are scaled by the min and max of the whole volume and padded with
//! 0 after scaling, in-plane and through-plane (LeFusion: `RescaleIntensity`
//! then `CropOrPad`).
//!
//! **3-D windows** (F > 1). With at most F slices, one window holds the
//! whole volume, zero-padded to F slices with ⌈(F − n)/2⌉ padding slices
//! before and the rest after (torchio's `CropOrPad`). Otherwise let a..b be
//! the first and last slice holding a lesion voxel: when b − a + 1 ≤ F one
//! window of F slices is centred on a..b (shifted to stay inside the
//! volume); when longer, n = ⌈(b − a + 1 − F)/⌊F/2⌋⌉ + 1 windows start at
//! `a + round(i·(b − a + 1 − F)/(n − 1))`, so consecutive windows overlap by
//! at least half. Where windows overlap, each voxel is the weighted mean of
//! the windows' results with weight `min(f + 1, F − f)` for frame f (the
//! frames near a window's centre count most); a voxel in one window keeps
//! that window's value exactly.

use super::condition::{
    lesion_histogram, perturb_channels, ChannelTissue, Condition, HISTOGRAM_BINS, PERTURBATION,
};
use super::repaint::{repaint, BatchNoise, InpaintBatch, Progress, SamplerParams};
use super::schedule::{evaluation_count, JumpParams, Schedule, TIMESTEPS};
use crate::models::{Denoiser, DenoiserConfig};
use crate::rng::Rng;
use crate::volume::{Image, LabelScheme, Volume};
use crate::{Error, Result};
use std::collections::HashMap;

/// Crop size of CLAIM's EMIDEC slices.
pub const CLAIM_CROP_SIZE: usize = 72;

/// Frames of LeFusion's EMIDEC two-channel model (72 × 72 × 10).
pub const LEFUSION_EMIDEC_FRAMES: usize = 10;

/// Most channels a model may have for synthesis.
pub const MAX_CHANNELS: usize = 8;

/// What [`synthesize`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthesisParams {
    /// Seed of every random draw (initial noise, re-noising, perturbation).
    pub seed: u64,
    /// t_T, jump length and jump count (defaults 300 / 5 / 5, CLAIM's
    /// inference setting).
    pub jump: JumpParams,
    /// Classifier-free guidance scale; 1 = off.
    pub guidance: f32,
    /// The histogram condition (16 values per channel). An unconditional
    /// model takes [`Condition::Preset`] (the default) or
    /// [`Condition::Null`], both meaning "no condition"; explicit values
    /// are refused.
    pub condition: Condition,
    /// Apply upstream's 10 % perturbation to the condition (one draw per
    /// item, each channel's histogram on its own).
    pub perturb_condition: bool,
    /// Items per network batch, 1–1024; 0 (the default) = automatic
    /// ([`batch_size_for`]: 4 on the CPU, from free memory on a GPU). The
    /// result does not depend on it (noise is drawn per item).
    pub batch_size: usize,
    /// In-plane window side (the model's training size; multiple of the
    /// model's downsampling factor).
    pub crop_size: usize,
    /// Frames per item: 1 for 2-D models (CLAIM), F for 3-D ones; 0 = the
    /// layout's default ([`default_frames`]: 10 for a two-channel model,
    /// LeFusion-EMIDEC, else 1).
    pub frames: usize,
    /// Paste the whole window of network output instead of only the lesion.
    pub keep_network_output: bool,
    /// Label scheme of the label map.
    pub labels: LabelScheme,
    /// The label each model channel paints, in channel order: the scheme's
    /// scar or MVO label, each at most once. Empty = the layout's default
    /// ([`default_channel_labels`]: scar for one channel, scar then MVO
    /// for two).
    pub channel_labels: Vec<i32>,
}

impl Default for SynthesisParams {
    fn default() -> Self {
        SynthesisParams {
            seed: 0,
            jump: JumpParams::default(),
            guidance: 1.0,
            condition: Condition::Preset,
            perturb_condition: true,
            batch_size: 0,
            crop_size: CLAIM_CROP_SIZE,
            frames: 0,
            keep_network_output: false,
            labels: LabelScheme::EMIDEC,
            channel_labels: Vec::new(),
        }
    }
}

/// The result of [`synthesize`].
#[derive(Clone, Debug, PartialEq)]
pub struct Synthesis {
    /// The synthesized image: the input's dtype, dims and geometry.
    pub image: Image,
    /// Slices (k) that hold a lesion voxel, ascending.
    pub slices: Vec<usize>,
    /// Number of items (windows) sampled.
    pub items: usize,
    /// Number of network batches.
    pub batches: usize,
    /// Network evaluations run (the progress total).
    pub network_evaluations: u64,
    /// The layout used (channels, their labels, frames).
    pub layout: Layout,
    /// Things the caller should know, e.g. MVO voxels painted by a
    /// one-channel model's scar channel.
    pub warnings: Vec<String>,
}

/// How a model's channels and frames meet the label map, resolved from the
/// model and [`SynthesisParams`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Model channels C.
    pub channels: usize,
    /// The label each channel paints.
    pub channel_labels: Vec<i32>,
    /// The tissue each channel paints.
    pub tissues: Vec<ChannelTissue>,
    /// Frames per item.
    pub frames: usize,
    /// The model's condition length (`None`: unconditional).
    pub cond_dim: Option<usize>,
}

/// Frames per item of the upstream model with this layout: 10 for a
/// two-channel model (LeFusion-EMIDEC), 1 otherwise (CLAIM). The weights
/// do not record F (temporal attention takes any number of frames), so a
/// one-channel 3-D model (e.g. LeFusion-LIDC, 32) needs `frames` given.
pub fn default_frames(config: &DenoiserConfig) -> usize {
    if config.channels == 2 {
        LEFUSION_EMIDEC_FRAMES
    } else {
        1
    }
}

/// The upstream channel ↔ label map for a model with `channels` channels:
/// `[scar]` (CLAIM) or `[scar, MVO]` (LeFusion-EMIDEC); an error naming the
/// problem for other channel counts.
pub fn default_channel_labels(channels: usize, scheme: &LabelScheme) -> Result<Vec<i32>> {
    match channels {
        1 => Ok(vec![scheme.scar]),
        2 => Ok(vec![scheme.scar, scheme.mvo]),
        c => Err(Error::invalid(format!(
            "the model has {c} channels; upstream layouts have 1 (scar) or 2 (scar, MVO): give \
             channel_labels explicitly"
        ))),
    }
}

impl Layout {
    /// Resolves the channel map and frames of `params` for a model with
    /// `config`; errors name what disagrees.
    pub fn resolve(config: &DenoiserConfig, params: &SynthesisParams) -> Result<Layout> {
        let scheme = &params.labels;
        scheme.validate()?;
        let channels = config.channels;
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(Error::invalid(format!(
                "synthesis supports models with 1–{MAX_CHANNELS} channels; this one has {channels}"
            )));
        }
        let labels = if params.channel_labels.is_empty() {
            default_channel_labels(channels, scheme)?
        } else {
            params.channel_labels.clone()
        };
        if labels.len() != channels {
            return Err(Error::invalid(format!(
                "the channel↔label map names {} label(s) {labels:?}, but the model has {channels} \
                 channel(s): give one label per channel",
                labels.len()
            )));
        }
        let mut tissues = Vec::with_capacity(channels);
        for (c, &l) in labels.iter().enumerate() {
            let tissue = if l == scheme.scar {
                ChannelTissue::Scar
            } else if l == scheme.mvo {
                ChannelTissue::Mvo
            } else {
                return Err(Error::invalid(format!(
                    "channel {c} of the channel↔label map is label {l}; a channel paints the \
                     scheme's scar ({}) or MVO ({}) label",
                    scheme.scar, scheme.mvo
                )));
            };
            if labels[..c].contains(&l) {
                return Err(Error::invalid(format!(
                    "the channel↔label map {labels:?} gives label {l} to two channels"
                )));
            }
            tissues.push(tissue);
        }
        let frames = if params.frames == 0 {
            default_frames(config)
        } else {
            params.frames
        };
        if frames > 256 {
            return Err(Error::invalid(format!(
                "params.frames must be 0 (the model's) or 1–256, got {frames}"
            )));
        }
        Ok(Layout {
            channels,
            channel_labels: labels,
            tissues,
            frames,
            cond_dim: config.cond_dim,
        })
    }

    /// The channel whose output a voxel labelled `label` takes: the channel
    /// painting that label, else channel 0.
    fn channel_of(&self, label: i32) -> usize {
        self.channel_labels
            .iter()
            .position(|l| *l == label)
            .unwrap_or(0)
    }
}

/// One window: its frames (a volume slice or a padding frame), in-plane
/// origin and intensity range.
#[derive(Clone, Debug)]
struct Item {
    slices: Vec<Option<usize>>,
    origin: [isize; 2],
    min: f32,
    max: f32,
}

/// Everything prepared for sampling: items, their one-channel [−1, 1]
/// windows, known masks, and the channel each voxel's output comes from.
struct Prepared {
    items: Vec<Item>,
    windows: Vec<Vec<f32>>,
    known: Vec<Vec<f32>>,
    source: Vec<Vec<u8>>,
    /// Each window's label values (0 outside the image).
    labels: Vec<Vec<i32>>,
}

/// Value of padding voxels of a 2-D window in [−1, 1]: the window's minimum.
const PAD_VALUE_2D: f32 = -1.0;
/// Value of padding voxels of a 3-D window: 0 after scaling, as torchio's
/// `CropOrPad` after `RescaleIntensity` upstream.
const PAD_VALUE_3D: f32 = 0.0;

fn check_params(params: &SynthesisParams, model: &Denoiser) -> Result<()> {
    let cfg = model.config();
    let align = 1usize << (cfg.dim_mults.len().saturating_sub(1)).min(16);
    if params.crop_size == 0 || params.crop_size % align != 0 || params.crop_size > 1024 {
        return Err(Error::invalid(format!(
            "params.crop_size must be a positive multiple of {align} (the model's downsampling) up to \
             1024, got {}",
            params.crop_size
        )));
    }
    if params.batch_size > 1024 {
        return Err(Error::invalid(format!(
            "params.batch_size must be 0 (automatic) or 1–1024, got {}",
            params.batch_size
        )));
    }
    if params.frames > 256 {
        return Err(Error::invalid(format!(
            "params.frames must be 0 (the model's) or 1–256, got {}",
            params.frames
        )));
    }
    if params.jump.t_start == 0 || params.jump.t_start > TIMESTEPS {
        return Err(Error::invalid(format!(
            "params.jump.t_start must be 1–{TIMESTEPS}, got {}",
            params.jump.t_start
        )));
    }
    if params.jump.jump_length == 0 || params.jump.jump_n_sample == 0 {
        return Err(Error::invalid(format!(
            "params.jump: jump_length and jump_n_sample must be ≥ 1, got {} and {}",
            params.jump.jump_length, params.jump.jump_n_sample
        )));
    }
    if !params.guidance.is_finite() {
        return Err(Error::invalid(format!(
            "params.guidance must be finite, got {}",
            params.guidance
        )));
    }
    if params.guidance != 1.0 && cfg.cond_dim.is_none() {
        return Err(Error::invalid(
            "guidance needs a conditional model (this one is unconditional); use 1",
        ));
    }
    params.labels.validate()
}

/// The network evaluations [`synthesize`] will run for `batches` batches.
pub fn total_evaluations(params: &SynthesisParams, batches: usize) -> Result<u64> {
    let sampler = SamplerParams {
        jump: params.jump,
        guidance: params.guidance,
        ..SamplerParams::default()
    };
    (evaluation_count(params.jump)? as u64)
        .checked_mul(sampler.evaluations_per_step())
        .and_then(|n| n.checked_mul(batches as u64))
        .ok_or_else(|| Error::invalid("too many network evaluations"))
}

/// Slices (k) holding a voxel of `is_lesion`, ascending.
fn lesion_slices(labels: &Volume<i32>, is_lesion: impl Fn(i32) -> bool) -> Vec<usize> {
    labels
        .data
        .outer_iter()
        .enumerate()
        .filter(|(_, slice)| slice.iter().any(|l| is_lesion(*l)))
        .map(|(k, _)| k)
        .collect()
}

/// The windows covering every lesion slice (`slices`, ascending, non-empty
/// for `frames` > 1) of a volume with `nk` slices: one slice each for
/// `frames` = 1, else the 3-D window rule of the module docs. `None` marks
/// a padding frame.
fn windows_of(slices: &[usize], frames: usize, nk: usize) -> Vec<Vec<Option<usize>>> {
    if frames <= 1 {
        return slices.iter().map(|k| vec![Some(*k)]).collect();
    }
    let (Some(&a), Some(&b)) = (slices.first(), slices.last()) else {
        return Vec::new();
    };
    if nk <= frames {
        let pad = frames - nk;
        let before = pad.div_ceil(2);
        let mut w = vec![None; before];
        w.extend((0..nk).map(Some));
        w.resize(frames, None);
        return vec![w];
    }
    let window = |start: usize| (start..start + frames).map(Some).collect::<Vec<_>>();
    let span = b - a + 1;
    if span <= frames {
        let centred = ((a + b + 1) as isize - frames as isize).div_euclid(2);
        let start = (centred.max(0) as usize).min(nk - frames);
        return vec![window(start)];
    }
    let stride = (frames / 2).max(1);
    let extra = span - frames;
    let n = extra.div_ceil(stride) + 1;
    (0..n)
        .map(|i| {
            let offset = (i * extra) as f64 / (n - 1) as f64;
            window(a + offset.round() as usize)
        })
        .collect()
}

/// Centre (i, j) of the window: LV cavity centroid over `slices`, else the
/// whole myocardium's, else the lesion's.
fn window_centre(labels: &Volume<i32>, slices: &[usize], scheme: &LabelScheme) -> [f64; 2] {
    let [ni, nj, _] = labels.dims();
    let centroid = |pick: &dyn Fn(i32) -> bool| -> Option<[f64; 2]> {
        let (mut si, mut sj, mut n) = (0f64, 0f64, 0f64);
        for &k in slices {
            for j in 0..nj {
                for i in 0..ni {
                    if labels.data.get([k, j, i]).is_some_and(|l| pick(*l)) {
                        si += i as f64;
                        sj += j as f64;
                        n += 1.0;
                    }
                }
            }
        }
        (n > 0.0).then(|| [si / n, sj / n])
    };
    centroid(&|l| l == scheme.lv_cavity)
        .or_else(|| centroid(&|l| scheme.is_myocardium(l)))
        .or_else(|| centroid(&|l| scheme.is_lesion(l)))
        .unwrap_or([ni as f64 / 2.0, nj as f64 / 2.0])
}

/// Min and max of a volume's values (finite, non-empty: checked).
fn value_range(values: &Volume<f32>) -> (f32, f32) {
    values
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// `v` scaled from [lo, hi] to [−1, 1] (−1 for a flat range).
fn to_unit(v: f32, lo: f32, hi: f32) -> f32 {
    let range = hi - lo;
    if range > 0.0 {
        2.0 * (v - lo) / range - 1.0
    } else {
        -1.0
    }
}

/// Crops every item, scales to [−1, 1] and builds the known masks and the
/// channel each voxel's output comes from.
fn prepare(
    image: &Volume<f32>,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    layout: &Layout,
    groups: Vec<Vec<Option<usize>>>,
    size: usize,
) -> Result<Prepared> {
    let [ni, nj, _] = image.dims();
    let three_d = layout.frames > 1;
    let volume_range = three_d.then(|| value_range(image));
    let pad = if three_d { PAD_VALUE_3D } else { PAD_VALUE_2D };
    let mut out = Prepared {
        items: Vec::new(),
        windows: Vec::new(),
        known: Vec::new(),
        source: Vec::new(),
        labels: Vec::new(),
    };
    for slices in groups {
        let real: Vec<usize> = slices.iter().flatten().copied().collect();
        let c = window_centre(labels, &real, scheme);
        let half = (size / 2) as isize;
        let origin = [c[0].round() as isize - half, c[1].round() as isize - half];
        let n = slices.len() * size * size;
        let mut raw = vec![f32::NAN; n];
        let mut known = vec![1f32; n];
        let mut source = vec![0u8; n];
        let mut window_labels = vec![0i32; n];
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (f, k) in slices.iter().enumerate() {
            let Some(k) = *k else { continue };
            for y in 0..size {
                for x in 0..size {
                    let (i, j) = (origin[0] + x as isize, origin[1] + y as isize);
                    if i < 0 || j < 0 || i as usize >= ni || j as usize >= nj {
                        continue;
                    }
                    let idx = [k, j as usize, i as usize];
                    let (Some(v), Some(l)) = (image.data.get(idx), labels.data.get(idx)) else {
                        continue;
                    };
                    let p = (f * size + y) * size + x;
                    raw[p] = *v;
                    lo = lo.min(*v);
                    hi = hi.max(*v);
                    if scheme.is_lesion(*l) {
                        known[p] = 0.0;
                    }
                    // At most MAX_CHANNELS (8) channels: fits u8.
                    source[p] = layout.channel_of(*l) as u8;
                    window_labels[p] = *l;
                }
            }
        }
        if let Some((vlo, vhi)) = volume_range {
            (lo, hi) = (vlo, vhi);
        }
        let window = raw
            .iter()
            .map(|v| if v.is_nan() { pad } else { to_unit(*v, lo, hi) })
            .collect();
        out.items.push(Item {
            slices,
            origin,
            min: lo,
            max: hi,
        });
        out.windows.push(window);
        out.known.push(known);
        out.source.push(source);
        out.labels.push(window_labels);
    }
    Ok(out)
}

/// Number of lesion voxels that no item's window covers.
fn lesion_voxels_outside_windows(
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    items: &[Item],
    size: usize,
) -> usize {
    let [ni, nj, _] = labels.dims();
    let mut covered = vec![false; labels.len()];
    for item in items {
        for &k in item.slices.iter().flatten() {
            for y in 0..size as isize {
                for x in 0..size as isize {
                    let (i, j) = (item.origin[0] + x, item.origin[1] + y);
                    if i >= 0 && j >= 0 && (i as usize) < ni && (j as usize) < nj {
                        if let Some(c) = covered.get_mut((k * nj + j as usize) * ni + i as usize) {
                            *c = true;
                        }
                    }
                }
            }
        }
    }
    // `data` is in standard layout ([k][j][i]), so its iteration order is the
    // flat index used above.
    labels
        .data
        .iter()
        .zip(&covered)
        .filter(|(l, c)| scheme.is_lesion(**l) && !**c)
        .count()
}

/// Writes `value` (rounded and clamped for integer images) at `idx`.
fn store(image: &mut Image, idx: [usize; 3], value: f32) {
    fn int<T: Copy>(v: &mut Volume<T>, idx: [usize; 3], value: f32, conv: impl Fn(f32) -> T) {
        if let Some(p) = v.data.get_mut(idx) {
            *p = conv(value);
        }
    }
    // `as` from f32 saturates at the type's bounds (NaN → 0).
    match image {
        Image::U8(v) => int(v, idx, value, |x| x.round() as u8),
        Image::I16(v) => int(v, idx, value, |x| x.round() as i16),
        Image::U16(v) => int(v, idx, value, |x| x.round() as u16),
        Image::I32(v) => int(v, idx, value, |x| x.round() as i32),
        Image::F32(v) => int(v, idx, value, |x| x),
    }
}

/// Checks dims, finiteness and labels of a case.
fn check_case(image: &Image, labels: &Volume<i32>, scheme: &LabelScheme) -> Result<Volume<f32>> {
    if image.dims() != labels.dims() {
        return Err(Error::invalid(format!(
            "image dims {:?} differ from labels dims {:?}",
            image.dims(),
            labels.dims()
        )));
    }
    if image.dims().contains(&0) {
        return Err(Error::invalid("the image has no voxel"));
    }
    let values = image.to_f32();
    if let Some((n, v)) = values.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "image values must be finite, got {v} at voxel #{n}"
        )));
    }
    let mut known = vec![
        0,
        scheme.lv_cavity,
        scheme.myocardium,
        scheme.scar,
        scheme.mvo,
    ];
    known.extend(scheme.rv);
    if let Some((n, l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, l)| !known.contains(l))
    {
        return Err(Error::invalid(format!(
            "labels: value {l} at voxel #{n} is not in the label scheme {known:?}"
        )));
    }
    Ok(values)
}

/// Warnings for lesion labels present in `labels` that no channel paints.
fn unpainted_lesion_warnings(
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    layout: &Layout,
) -> Vec<String> {
    [("scar", scheme.scar), ("MVO", scheme.mvo)]
        .iter()
        .filter(|(_, l)| !layout.channel_labels.contains(l))
        .filter_map(|(name, l)| {
            let n = labels.data.iter().filter(|v| **v == *l).count();
            (n > 0).then(|| {
                format!(
                    "{n} {name} voxel(s) (label {l}) are painted by channel 0 (label {}): the \
                     model has no {name} channel",
                    layout
                        .channel_labels
                        .first()
                        .copied()
                        .unwrap_or(scheme.scar)
                )
            })
        })
        .collect()
}

/// One training example of the diffusion model: a window cut and scaled
/// exactly as [`synthesize`] cuts and scales its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingWindow {
    /// The window's values in [−1, 1], `[F, S, S]` (one channel: the image
    /// is repeated on every model channel).
    pub values: Vec<f32>,
    /// The loss mask of each channel, `[C, F, S, S]`: 1 on the lesion
    /// voxels that channel paints at inference, else 0.
    pub masks: Vec<f32>,
    /// The measured histogram condition, 16 bins per channel (of the
    /// values inside that channel's mask; zeros for an empty mask).
    pub condition: Vec<f32>,
    /// The label values under the window, `[F, S, S]` (0 outside the
    /// image).
    pub labels: Vec<i32>,
    /// The raw intensities that −1 and +1 stand for (the min–max scaling),
    /// so `raw = lo + (v + 1)/2 · (hi − lo)`.
    pub range: [f32; 2],
}

/// The training windows of one case for a model of `config`: every window
/// [`synthesize`] would sample on this case (lesion slices, the 3-D window
/// rule, centred on the LV, min–max scaled), with per-channel loss masks
/// and measured histograms. `params` gives the label scheme, crop size,
/// frames and channel labels, as for synthesis. A case without lesion has
/// no window.
pub fn training_windows(
    config: &DenoiserConfig,
    image: &Image,
    labels: &Volume<i32>,
    params: &SynthesisParams,
) -> Result<Vec<TrainingWindow>> {
    let layout = Layout::resolve(config, params)?;
    let scheme = params.labels;
    let values = check_case(image, labels, &scheme)?;
    let slices = lesion_slices(labels, |l| scheme.is_lesion(l));
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    let groups = windows_of(&slices, layout.frames, labels.dims()[2]);
    let prepared = prepare(&values, labels, &scheme, &layout, groups, params.crop_size)?;
    let channels = layout.channels;
    let mut out = Vec::with_capacity(prepared.windows.len());
    for ((((window, known), source), labels), item) in prepared
        .windows
        .into_iter()
        .zip(&prepared.known)
        .zip(&prepared.source)
        .zip(prepared.labels)
        .zip(&prepared.items)
    {
        let mut masks = Vec::with_capacity(channels * window.len());
        let mut condition = Vec::with_capacity(channels * HISTOGRAM_BINS);
        for c in 0..channels {
            let inside: Vec<bool> = known
                .iter()
                .zip(source)
                .map(|(k, s)| *k == 0.0 && usize::from(*s) == c)
                .collect();
            masks.extend(inside.iter().map(|i| f32::from(u8::from(*i))));
            condition.extend(lesion_histogram(&window, &inside));
        }
        out.push(TrainingWindow {
            values: window,
            masks,
            condition,
            labels,
            range: [item.min, item.max],
        });
    }
    Ok(out)
}

/// Items per batch on the CPU when `batch_size` is automatic: the old
/// fixed default (results do not depend on it, and the CPU's forward gains
/// little from larger batches).
pub const CPU_BATCH_SIZE: usize = 4;

/// The automatic batch: [`CPU_BATCH_SIZE`] without a device memory figure
/// (the CPU); on a GPU as many items as half of `free_bytes` holds at
/// `bytes_per_item` each, at least 1 and at most `items` (and 1024).
pub fn batch_size_for(free_bytes: Option<usize>, bytes_per_item: usize, items: usize) -> usize {
    let cap = items.clamp(1, 1024);
    match free_bytes {
        None => CPU_BATCH_SIZE.min(cap),
        Some(free) => (free / 2 / bytes_per_item.max(1)).clamp(1, cap),
    }
}

/// Synthesizes scar intensities inside the scar and MVO labels of `labels`
/// on `image` with `model` (any upstream layout, see the module docs).
/// `progress(done, total)` is called before the first network evaluation
/// and after every one (`total` = evaluations per batch × batches);
/// returning `false` cancels with [`Error::Cancelled`].
pub fn synthesize(
    model: &Denoiser,
    image: &Image,
    labels: &Volume<i32>,
    params: &SynthesisParams,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Synthesis> {
    check_params(params, model)?;
    let layout = Layout::resolve(model.config(), params)?;
    let scheme = params.labels;
    let values = check_case(image, labels, &scheme)?;
    let slices = lesion_slices(labels, |l| scheme.is_lesion(l));
    if slices.is_empty() {
        return Err(Error::invalid(format!(
            "labels hold no scar (label {}) or MVO (label {}) voxel: nothing to synthesize",
            scheme.scar, scheme.mvo
        )));
    }
    let cond_dim = layout.cond_dim;
    let condition = match cond_dim {
        Some(_) => params.condition.clone(),
        None => match params.condition {
            Condition::Null | Condition::Preset => Condition::Null,
            Condition::Values(_) | Condition::Channels(_) => {
                return Err(Error::invalid(
                    "histogram values given, but the model is unconditional",
                ))
            }
        },
    };
    let base = condition.base(cond_dim, &layout.tissues)?;
    let warnings = unpainted_lesion_warnings(labels, &scheme, &layout);
    let nk = labels.dims()[2];
    let frames = layout.frames;
    let groups = windows_of(&slices, frames, nk);
    let size = params.crop_size;
    let prepared = prepare(&values, labels, &scheme, &layout, groups, size)?;
    let outside = lesion_voxels_outside_windows(labels, &scheme, &prepared.items, size);
    if outside > 0 {
        // Painting only part of a lesion would leave labels that no longer
        // describe the image: refuse instead of silently skipping voxels.
        return Err(Error::invalid(format!(
            "{outside} scar/MVO voxel(s) lie outside the {size}×{size} window centred on the LV \
             cavity; use a larger crop_size (a multiple of 8) or move the lesion closer to the LV"
        )));
    }
    let n_items = prepared.items.len();
    let batch_size = match params.batch_size {
        0 => {
            let per_item = model.config().activation_bytes_per_item(
                frames,
                size,
                model.dtype().size_in_bytes(),
            );
            // Guidance evaluates both branches in one batched forward.
            let branches = if params.guidance != 1.0 { 2 } else { 1 };
            batch_size_for(
                model.device().free_memory(),
                per_item.saturating_mul(branches),
                n_items,
            )
        }
        n => n,
    };
    let batches = n_items.div_ceil(batch_size);
    let total = total_evaluations(params, batches)?;
    let mut progress = Progress::new(total, progress);
    let schedule = Schedule::cosine(TIMESTEPS)?;
    let sampler = SamplerParams {
        jump: params.jump,
        guidance: params.guidance,
        ..SamplerParams::default()
    };
    let root = Rng::new(params.seed);
    let channels = layout.channels;
    let item_len = frames * size * size;
    let mut blend = Blend::default();
    for first in (0..n_items).step_by(batch_size) {
        let last = (first + batch_size).min(n_items);
        let mut conditions = base.as_ref().map(|_| Vec::new());
        for item in first..last {
            if let (Some(base), Some(conds)) = (&base, conditions.as_mut()) {
                if params.perturb_condition {
                    let item_rng = root.fork(item as u64 + 1);
                    conds.extend(perturb_channels(
                        base,
                        channels,
                        PERTURBATION,
                        &mut item_rng.fork(1),
                    ));
                } else {
                    conds.extend_from_slice(base);
                }
            }
        }
        let noise = BatchNoise {
            seed: params.seed,
            items: (first..last)
                .map(|i| u32::try_from(i).map_err(|_| Error::invalid("more than 2³² items")))
                .collect::<Result<_>>()?,
        };
        // The image is repeated on every channel; so is the known region.
        let repeat = |v: &[Vec<f32>]| -> Vec<f32> {
            v[first..last]
                .iter()
                .flat_map(|w| std::iter::repeat_n(w.as_slice(), channels).flatten())
                .copied()
                .collect()
        };
        let batch = InpaintBatch {
            shape: [last - first, channels, frames, size, size],
            ground_truth: repeat(&prepared.windows),
            known: repeat(&prepared.known),
            conditions,
        };
        let sample = repaint(model, &schedule, &batch, &sampler, &noise, &mut progress)?;
        for (b, item) in prepared.items[first..last].iter().enumerate() {
            let len = channels * item_len;
            let out = sample
                .get(b * len..(b + 1) * len)
                .ok_or_else(|| Error::Internal("sampler output too short".into()))?;
            let composed = compose(out, &prepared.source[first + b], item_len);
            blend.add(
                values.dims(),
                item,
                &composed,
                &prepared.known[first + b],
                size,
                params.keep_network_output,
            );
        }
    }
    let mut output = image.clone();
    blend.write(&mut output, values.dims());
    Ok(Synthesis {
        image: output,
        slices,
        items: n_items,
        batches,
        network_evaluations: total,
        layout,
        warnings,
    })
}

/// One image from a `[C, F, H, W]` sample: each voxel from the channel
/// `source` names (upstream's `ch0·[scar] + ch1·[MVO] + ch0·[known]`).
pub fn compose(sample: &[f32], source: &[u8], item_len: usize) -> Vec<f32> {
    source
        .iter()
        .enumerate()
        .map(|(p, c)| {
            sample
                .get(usize::from(*c) * item_len + p)
                .copied()
                .unwrap_or(f32::NAN)
        })
        .collect()
}

/// Weighted sums of the windows' results per output voxel (flat index).
#[derive(Default)]
struct Blend {
    sums: HashMap<usize, (f64, f64)>,
}

impl Blend {
    /// Scales an item's composed sample back and adds it, with the frame's
    /// weight, at lesion voxels only, or at every in-image voxel of the
    /// window with `everything`.
    fn add(
        &mut self,
        dims: [usize; 3],
        item: &Item,
        sample: &[f32],
        known: &[f32],
        size: usize,
        everything: bool,
    ) {
        let [ni, nj, _] = dims;
        let frames = item.slices.len();
        let range = item.max - item.min;
        for (f, k) in item.slices.iter().enumerate() {
            let Some(k) = *k else { continue };
            let weight = (f + 1).min(frames - f) as f64;
            for y in 0..size {
                for x in 0..size {
                    let p = (f * size + y) * size + x;
                    let (i, j) = (item.origin[0] + x as isize, item.origin[1] + y as isize);
                    if i < 0 || j < 0 || i as usize >= ni || j as usize >= nj {
                        continue;
                    }
                    let lesion = known.get(p).is_some_and(|k| *k == 0.0);
                    if !(lesion || everything) {
                        continue;
                    }
                    let Some(v) = sample.get(p) else { continue };
                    let value = item.min + (v + 1.0) / 2.0 * range;
                    let at = (k * nj + j as usize) * ni + i as usize;
                    let e = self.sums.entry(at).or_insert((0.0, 0.0));
                    // f32 × small integer is exact in f64, so a voxel of one
                    // window gets its value back bit for bit.
                    e.0 += f64::from(value) * weight;
                    e.1 += weight;
                }
            }
        }
    }

    /// Writes the weighted means into `output`.
    fn write(&self, output: &mut Image, dims: [usize; 3]) {
        let [ni, nj, _] = dims;
        for (&at, &(sum, weight)) in &self.sums {
            let (k, rest) = (at / (ni * nj), at % (ni * nj));
            let (j, i) = (rest / ni, rest % ni);
            store(output, [k, j, i], (sum / weight) as f32);
        }
    }
}

/// The condition measured from a reference case: the normalised 16-bin
/// histogram of the scar voxels (label `scheme.scar`, as in training) of
/// every slice holding scar, each slice cropped like [`synthesize`] does
/// for a 2-D model (`crop_size` window on the LV cavity) and scaled to
/// [−1, 1].
pub fn measure_histogram(
    image: &Image,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    crop_size: usize,
) -> Result<Vec<f32>> {
    let h = measure_label_histogram(image, labels, scheme, scheme.scar, crop_size, 1)?;
    if h.iter().all(|v| *v == 0.0) {
        return Err(Error::invalid(format!(
            "reference labels hold no scar (label {}) voxel to measure",
            scheme.scar
        )));
    }
    Ok(h)
}

/// The normalised 16-bin histogram over [−1, 1] of the voxels labelled
/// `label`, scaled as [`synthesize`] scales them for `frames`: for at most
/// one frame each slice's `crop_size` window on the LV cavity by its own
/// min and max; for more, the whole volume by its min and max, as
/// LeFusion's training does.
/// All zeros when no voxel carries `label` (upstream's convention for a
/// case without MVO).
pub fn measure_label_histogram(
    image: &Image,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    label: i32,
    crop_size: usize,
    frames: usize,
) -> Result<Vec<f32>> {
    scheme.validate()?;
    if crop_size == 0 || crop_size > 1024 {
        return Err(Error::invalid(format!(
            "crop_size must be 1–1024, got {crop_size}"
        )));
    }
    let values = check_case(image, labels, scheme)?;
    if frames > 1 {
        let (lo, hi) = value_range(&values);
        let (scaled, inside): (Vec<f32>, Vec<bool>) = values
            .data
            .iter()
            .zip(labels.data.iter())
            .filter(|(_, l)| **l == label)
            .map(|(v, _)| (to_unit(*v, lo, hi), true))
            .unzip();
        return Ok(lesion_histogram(&scaled, &inside));
    }
    let slices = lesion_slices(labels, |l| l == label);
    let layout = Layout {
        channels: 1,
        channel_labels: vec![label],
        tissues: vec![ChannelTissue::Scar],
        frames: 1,
        cond_dim: None,
    };
    let groups = slices.iter().map(|k| vec![Some(*k)]).collect();
    let prepared = prepare(&values, labels, scheme, &layout, groups, crop_size)?;
    let [ni, nj, _] = labels.dims();
    let mut window_values = Vec::new();
    let mut inside = Vec::new();
    for (item, window) in prepared.items.iter().zip(&prepared.windows) {
        let Some(k) = item.slices.first().copied().flatten() else {
            continue;
        };
        for y in 0..crop_size {
            for x in 0..crop_size {
                let (i, j) = (item.origin[0] + x as isize, item.origin[1] + y as isize);
                if i < 0 || j < 0 || i as usize >= ni || j as usize >= nj {
                    continue;
                }
                let hit = labels
                    .data
                    .get([k, j as usize, i as usize])
                    .is_some_and(|l| *l == label);
                if let Some(v) = window.get(y * crop_size + x) {
                    window_values.push(*v);
                    inside.push(hit);
                }
            }
        }
    }
    Ok(lesion_histogram(&window_values, &inside))
}

/// The whole condition measured from a reference case for `layout`: each
/// channel's histogram of its label ([`measure_label_histogram`]),
/// concatenated in channel order (16 values per channel). A channel whose
/// label the reference lacks gets zeros, as upstream's training does for a
/// case without MVO; a reference with none of the labels is refused.
pub fn measure_channel_histograms(
    image: &Image,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    layout: &Layout,
    crop_size: usize,
) -> Result<Vec<f32>> {
    let mut all = Vec::with_capacity(HISTOGRAM_BINS * layout.channels);
    for &label in &layout.channel_labels {
        all.extend(measure_label_histogram(
            image,
            labels,
            scheme,
            label,
            crop_size,
            layout.frames,
        )?);
    }
    if all.iter().all(|v| *v == 0.0) {
        return Err(Error::invalid(format!(
            "reference labels hold no voxel of the channels' labels {:?} to measure",
            layout.channel_labels
        )));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The automatic batch: 4 on the CPU (fewer items, fewer); on a GPU half
    /// the free memory over the per-item estimate, within 1..=items.
    #[test]
    fn automatic_batches_follow_free_memory() {
        assert_eq!(batch_size_for(None, 1 << 20, 100), CPU_BATCH_SIZE);
        assert_eq!(batch_size_for(None, 1 << 20, 3), 3);
        assert_eq!(batch_size_for(Some(64 << 20), 1 << 20, 100), 32);
        assert_eq!(batch_size_for(Some(1 << 20), 1 << 20, 100), 1);
        assert_eq!(batch_size_for(Some(usize::MAX), 1, 100_000), 1024);
        assert_eq!(batch_size_for(Some(64 << 20), 0, 10), 10);
        // CLAIM's generator at 72²: tens of MB per f16 item, so an 80 GB
        // GPU batches every slice of a case.
        let claim = DenoiserConfig::claim();
        let per_item = claim.activation_bytes_per_item(1, 72, 2);
        assert!((8 << 20..128 << 20).contains(&per_item), "{per_item}");
        assert_eq!(claim.activation_bytes_per_item(10, 72, 2), 10 * per_item);
        assert!(claim.activation_bytes_per_item(1, 144, 2) > 3 * per_item);
        assert_eq!(batch_size_for(Some(80 << 30), per_item, 12), 12);
    }

    fn some(r: std::ops::Range<usize>) -> Vec<Option<usize>> {
        r.map(Some).collect()
    }

    #[test]
    fn windows_cover_lesion_slices() {
        assert_eq!(
            windows_of(&[2, 3, 7], 1, 10),
            vec![vec![Some(2)], vec![Some(3)], vec![Some(7)]]
        );
        // Span 2..=8 (7 slices) > 4: ⌈3/2⌉ + 1 = 3 windows from 2 to 5.
        assert_eq!(
            windows_of(&[2, 3, 7, 8], 4, 10),
            vec![some(2..6), some(4..8), some(5..9)]
        );
        // Centred on 4..=5, shifted into the volume.
        assert_eq!(windows_of(&[4, 5], 10, 12), vec![some(0..10)]);
        assert_eq!(windows_of(&[5, 6], 4, 12), vec![some(4..8)]);
        assert_eq!(windows_of(&[8, 9], 4, 10), vec![some(6..10)]);
        // Fewer slices than frames: ⌈pad/2⌉ padding frames first (torchio).
        assert_eq!(
            windows_of(&[0], 4, 3),
            vec![vec![None, Some(0), Some(1), Some(2)]]
        );
        assert_eq!(
            windows_of(&[1], 10, 5),
            vec![[vec![None; 3], some(0..5), vec![None; 2]].concat()]
        );
        // A lesion over 20 of 30 slices with F = 10: 3 windows, overlapping
        // by at least half, covering every lesion slice.
        let lesion: Vec<usize> = (5..25).collect();
        let w = windows_of(&lesion, 10, 30);
        assert_eq!(w, vec![some(5..15), some(10..20), some(15..25)]);
    }

    #[test]
    fn composition_takes_each_voxel_from_its_channel() {
        // [C=2, F=1, 2×2]: channel 0 = 0..4, channel 1 = 10..14.
        let sample = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        assert_eq!(
            compose(&sample, &[0, 1, 0, 1], 4),
            vec![0.0, 11.0, 2.0, 13.0]
        );
    }

    #[test]
    fn layouts_resolve_and_name_mismatches() {
        let mut cfg = DenoiserConfig::claim();
        let params = SynthesisParams::default();
        let one = Layout::resolve(&cfg, &params).unwrap();
        assert_eq!((one.channel_labels.clone(), one.frames), (vec![3], 1));
        cfg.channels = 2;
        let two = Layout::resolve(&cfg, &params).unwrap();
        assert_eq!(two.channel_labels, vec![3, 4]);
        assert_eq!(two.tissues, vec![ChannelTissue::Scar, ChannelTissue::Mvo]);
        assert_eq!(two.frames, 10);
        assert_eq!(two.channel_of(4), 1);
        assert_eq!(two.channel_of(2), 0);
        for (labels, needle) in [
            (
                vec![3],
                "names 1 label(s) [3], but the model has 2 channel(s)",
            ),
            (vec![3, 2], "channel 1 of the channel↔label map is label 2"),
            (vec![4, 4], "gives label 4 to two channels"),
        ] {
            let p = SynthesisParams {
                channel_labels: labels,
                ..SynthesisParams::default()
            };
            let e = Layout::resolve(&cfg, &p).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        cfg.channels = 3;
        let e = Layout::resolve(&cfg, &params).unwrap_err().to_string();
        assert!(
            e.contains("3 channels") && e.contains("channel_labels"),
            "{e}"
        );
    }
}

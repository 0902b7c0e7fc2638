//! Volume in, volume out: scar synthesis on the slices of a case that carry
//! a scar (or MVO) label.
//!
//! For each item (one slice for 2-D models, `frames` consecutive slices for
//! 3-D ones) the pipeline crops or pads a `crop_size`² window centred on the
//! LV cavity, scales the window's intensities to [−1, 1] (min → −1, max →
//! +1, as in training), runs RePaint in batches with the lesion (scar and
//! MVO labels) as the region to generate, scales back and pastes the result
//! into a copy of the input. By default only lesion voxels are pasted, so
//! every other voxel stays bit-identical; `keep_network_output` pastes the
//! whole window (the network's reconstruction of the known region, as
//! upstream).

use super::condition::{lesion_histogram, perturb, Condition, PERTURBATION};
use super::repaint::{repaint, BatchNoise, InpaintBatch, Progress, SamplerParams};
use super::schedule::{evaluation_count, JumpParams, Schedule, TIMESTEPS};
use crate::models::Denoiser;
use crate::rng::Rng;
use crate::volume::{Image, LabelScheme, Volume};
use crate::{Error, Result};

/// Crop size of CLAIM's EMIDEC slices.
pub const CLAIM_CROP_SIZE: usize = 72;

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
    /// The histogram condition. An unconditional model takes
    /// [`Condition::ClaimEmidec`] (the default) or [`Condition::Null`], both
    /// meaning "no condition"; explicit values are refused.
    pub condition: Condition,
    /// Apply upstream's 10 % perturbation to the condition (one draw per item).
    pub perturb_condition: bool,
    /// Items per network batch (≥ 1).
    pub batch_size: usize,
    /// In-plane window side (the model's training size; multiple of the
    /// model's downsampling factor).
    pub crop_size: usize,
    /// Frames per item: 1 for 2-D models (CLAIM), F for 3-D ones.
    pub frames: usize,
    /// Paste the whole window of network output instead of only the lesion.
    pub keep_network_output: bool,
    /// Label scheme of the label map.
    pub labels: LabelScheme,
}

impl Default for SynthesisParams {
    fn default() -> Self {
        SynthesisParams {
            seed: 0,
            jump: JumpParams::default(),
            guidance: 1.0,
            condition: Condition::ClaimEmidec,
            perturb_condition: true,
            batch_size: 4,
            crop_size: CLAIM_CROP_SIZE,
            frames: 1,
            keep_network_output: false,
            labels: LabelScheme::EMIDEC,
        }
    }
}

/// The result of [`synthesize`].
#[derive(Clone, Debug, PartialEq)]
pub struct Synthesis {
    /// The synthesized image: the input's dtype, dims and geometry.
    pub image: Image,
    /// Slices (k) that were synthesized, ascending.
    pub slices: Vec<usize>,
    /// Number of items (windows) sampled.
    pub items: usize,
    /// Number of network batches.
    pub batches: usize,
    /// Network evaluations run (the progress total).
    pub network_evaluations: u64,
}

/// One window: its slices, in-plane origin and intensity range.
#[derive(Clone, Debug)]
struct Item {
    slices: Vec<usize>,
    origin: [isize; 2],
    min: f32,
    max: f32,
}

/// Everything prepared for sampling: items, their [−1, 1] windows, known
/// masks and lesion masks.
struct Prepared {
    items: Vec<Item>,
    windows: Vec<Vec<f32>>,
    known: Vec<Vec<f32>>,
}

/// Value of padding voxels in the [−1, 1] window: the window's minimum.
const PAD_VALUE: f32 = -1.0;

fn check_params(params: &SynthesisParams, model: &Denoiser) -> Result<()> {
    let cfg = model.config();
    if cfg.channels != 1 {
        return Err(Error::Unsupported(format!(
            "synthesis supports single-channel models; this model has {} channels",
            cfg.channels
        )));
    }
    let align = 1usize << (cfg.dim_mults.len().saturating_sub(1)).min(16);
    if params.crop_size == 0 || params.crop_size % align != 0 || params.crop_size > 1024 {
        return Err(Error::invalid(format!(
            "params.crop_size must be a positive multiple of {align} (the model's downsampling) up to \
             1024, got {}",
            params.crop_size
        )));
    }
    if params.batch_size == 0 || params.batch_size > 1024 {
        return Err(Error::invalid(format!(
            "params.batch_size must be 1–1024, got {}",
            params.batch_size
        )));
    }
    if params.frames == 0 || params.frames > 256 {
        return Err(Error::invalid(format!(
            "params.frames must be 1–256, got {}",
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

/// Groups of `frames` consecutive slices covering every lesion slice.
fn windows_of(slices: &[usize], frames: usize, nk: usize) -> Result<Vec<Vec<usize>>> {
    if frames == 1 {
        return Ok(slices.iter().map(|k| vec![*k]).collect());
    }
    if nk < frames {
        return Err(Error::invalid(format!(
            "the model takes {frames} consecutive slices, the volume has {nk}"
        )));
    }
    let mut windows = Vec::new();
    let mut rest = slices;
    while let Some(&a) = rest.first() {
        // The run of lesion slices one window can hold, centred in it.
        let b = rest
            .iter()
            .copied()
            .take_while(|k| *k < a + frames)
            .last()
            .unwrap_or(a);
        let centred = ((a + b + 1) as isize - frames as isize) / 2;
        let start = (centred.max(0) as usize).min(nk - frames);
        let end = start + frames;
        windows.push((start..end).collect());
        rest = &rest[rest.iter().take_while(|k| **k < end).count()..];
    }
    Ok(windows)
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

/// Crops every item, scales to [−1, 1] and builds the known masks.
fn prepare(
    image: &Volume<f32>,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    groups: Vec<Vec<usize>>,
    size: usize,
) -> Result<Prepared> {
    let [ni, nj, _] = image.dims();
    let mut out = Prepared {
        items: Vec::new(),
        windows: Vec::new(),
        known: Vec::new(),
    };
    for slices in groups {
        let c = window_centre(labels, &slices, scheme);
        let half = (size / 2) as isize;
        let origin = [c[0].round() as isize - half, c[1].round() as isize - half];
        let n = slices.len() * size * size;
        let mut raw = vec![f32::NAN; n];
        let mut known = vec![1f32; n];
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (f, &k) in slices.iter().enumerate() {
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
                }
            }
        }
        let range = hi - lo;
        let window = raw
            .iter()
            .map(|v| {
                if v.is_nan() {
                    PAD_VALUE
                } else if range > 0.0 {
                    2.0 * (v - lo) / range - 1.0
                } else {
                    -1.0
                }
            })
            .collect();
        out.items.push(Item {
            slices,
            origin,
            min: lo,
            max: hi,
        });
        out.windows.push(window);
        out.known.push(known);
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
        for &k in &item.slices {
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

/// Synthesizes scar intensities inside the scar and MVO labels of `labels`
/// on `image` with `model`. `progress(done, total)` is called before the
/// first network evaluation and after every one (`total` = evaluations per
/// batch × batches); returning `false` cancels with [`Error::Cancelled`].
pub fn synthesize(
    model: &Denoiser,
    image: &Image,
    labels: &Volume<i32>,
    params: &SynthesisParams,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Synthesis> {
    check_params(params, model)?;
    let scheme = params.labels;
    let values = check_case(image, labels, &scheme)?;
    let slices = lesion_slices(labels, |l| scheme.is_lesion(l));
    if slices.is_empty() {
        return Err(Error::invalid(format!(
            "labels hold no scar (label {}) or MVO (label {}) voxel: nothing to synthesize",
            scheme.scar, scheme.mvo
        )));
    }
    let cond_dim = model.config().cond_dim;
    let condition = match cond_dim {
        Some(_) => params.condition.clone(),
        None => match params.condition {
            Condition::Null | Condition::ClaimEmidec => Condition::Null,
            Condition::Values(_) => {
                return Err(Error::invalid(
                    "histogram values given, but the model is unconditional",
                ))
            }
        },
    };
    let base = condition.base(cond_dim)?;
    let nk = labels.dims()[2];
    let groups = windows_of(&slices, params.frames, nk)?;
    let size = params.crop_size;
    let prepared = prepare(&values, labels, &scheme, groups, size)?;
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
    let batches = n_items.div_ceil(params.batch_size);
    let total = total_evaluations(params, batches)?;
    let mut progress = Progress::new(total, progress);
    let schedule = Schedule::cosine(TIMESTEPS)?;
    let sampler = SamplerParams {
        jump: params.jump,
        guidance: params.guidance,
        ..SamplerParams::default()
    };
    let root = Rng::new(params.seed);
    let mut output = image.clone();
    let item_len = params.frames * size * size;
    for first in (0..n_items).step_by(params.batch_size) {
        let last = (first + params.batch_size).min(n_items);
        let mut conditions = base.as_ref().map(|_| Vec::new());
        for item in first..last {
            if let (Some(base), Some(conds)) = (&base, conditions.as_mut()) {
                if params.perturb_condition {
                    let item_rng = root.fork(item as u64 + 1);
                    conds.extend(perturb(base, PERTURBATION, &mut item_rng.fork(1)));
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
        let batch = InpaintBatch {
            shape: [last - first, 1, params.frames, size, size],
            ground_truth: prepared.windows[first..last].concat(),
            known: prepared.known[first..last].concat(),
            conditions,
        };
        let sample = repaint(model, &schedule, &batch, &sampler, &noise, &mut progress)?;
        for (b, item) in prepared.items[first..last].iter().enumerate() {
            let known = &prepared.known[first + b];
            let out = sample
                .get(b * item_len..(b + 1) * item_len)
                .ok_or_else(|| Error::Internal("sampler output too short".into()))?;
            paste(
                &mut output,
                item,
                out,
                known,
                size,
                params.keep_network_output,
            );
        }
    }
    Ok(Synthesis {
        image: output,
        slices,
        items: n_items,
        batches,
        network_evaluations: total,
    })
}

/// Scales an item's sample back and writes it into `output`: lesion
/// voxels only, or every in-image voxel of the window with `everything`.
fn paste(
    output: &mut Image,
    item: &Item,
    sample: &[f32],
    known: &[f32],
    size: usize,
    everything: bool,
) {
    let [ni, nj, _] = output.dims();
    let range = item.max - item.min;
    for (f, &k) in item.slices.iter().enumerate() {
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
                store(output, [k, j as usize, i as usize], value);
            }
        }
    }
}

/// The condition measured from a reference case: the normalised 16-bin
/// histogram of the scar voxels (label `scheme.scar`, as in training) of
/// every slice holding scar, each slice cropped like [`synthesize`] does
/// (`crop_size` window on the LV cavity) and scaled to [−1, 1].
pub fn measure_histogram(
    image: &Image,
    labels: &Volume<i32>,
    scheme: &LabelScheme,
    crop_size: usize,
) -> Result<Vec<f32>> {
    scheme.validate()?;
    if crop_size == 0 || crop_size > 1024 {
        return Err(Error::invalid(format!(
            "crop_size must be 1–1024, got {crop_size}"
        )));
    }
    let values = check_case(image, labels, scheme)?;
    let slices = lesion_slices(labels, |l| l == scheme.scar);
    if slices.is_empty() {
        return Err(Error::invalid(format!(
            "reference labels hold no scar (label {}) voxel to measure",
            scheme.scar
        )));
    }
    let groups = slices.iter().map(|k| vec![*k]).collect();
    let prepared = prepare(&values, labels, scheme, groups, crop_size)?;
    let [ni, nj, _] = labels.dims();
    let mut window_values = Vec::new();
    let mut inside = Vec::new();
    for (item, window) in prepared.items.iter().zip(&prepared.windows) {
        let k = item.slices.first().copied().unwrap_or(0);
        for y in 0..crop_size {
            for x in 0..crop_size {
                let (i, j) = (item.origin[0] + x as isize, item.origin[1] + y as isize);
                if i < 0 || j < 0 || i as usize >= ni || j as usize >= nj {
                    continue;
                }
                let scar = labels
                    .data
                    .get([k, j as usize, i as usize])
                    .is_some_and(|l| *l == scheme.scar);
                if let Some(v) = window.get(y * crop_size + x) {
                    window_values.push(*v);
                    inside.push(scar);
                }
            }
        }
    }
    Ok(lesion_histogram(&window_values, &inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_lesion_slices() {
        assert_eq!(
            windows_of(&[2, 3, 7], 1, 10).unwrap(),
            vec![vec![2], vec![3], vec![7]]
        );
        assert_eq!(
            windows_of(&[2, 3, 7, 8], 4, 10).unwrap(),
            vec![vec![1, 2, 3, 4], vec![6, 7, 8, 9]]
        );
        assert_eq!(
            windows_of(&[4, 5], 10, 12).unwrap(),
            vec![(0..10).collect::<Vec<_>>()]
        );
        assert_eq!(windows_of(&[8, 9], 4, 10).unwrap(), vec![vec![6, 7, 8, 9]]);
        assert!(windows_of(&[0], 4, 3).is_err());
    }
}

//! Sliding-window prediction with Gaussian importance weighting and
//! test-time mirroring, as nnU-Net's predictor does it
//! (`shared/reference/segmentation.md`, "Prediction", steps 5–6, checked
//! against `nnunetv2.inference`).
//!
//! The image is padded with zeros (centred) up to the patch size, windows
//! are laid out per axis by [`window_starts`], every window's (mirror-
//! averaged) logits are multiplied by the importance map and accumulated,
//! and the sum is divided by the accumulated weights.
//!
//! **Half precision, on purpose.** nnU-Net keeps the importance map, the
//! logit sums and the weight sums in float16 (and the map is scaled to a
//! maximum of 10, not 1). The products are f32, each accumulation rounds to
//! f16. That rounding decides argmax ties, so we reproduce it exactly with
//! [`half::f16`]: f32 arithmetic, one rounding per stored value, in the same
//! window order. The result then equals nnU-Net's label map bit for bit
//! whenever the network outputs agree to f32 precision.
//!
//! **Where.** Sequential prediction (the CPU's) cuts windows and sums them
//! on the host. Batched prediction ([`WindowBatch::Windows`], a GPU's)
//! uploads the case once and keeps windows, sums, fold mean and argmax on
//! the network's device ([`WindowLogits::Device`]); the same rounding is
//! applied there, so both give the same bits.

use crate::backend::desc::{BinaryOp, MAX_WINDOWS_PER_SUM};
use crate::nn::{DType, Device, Tensor};
use crate::{Error, Result};
use half::{f16, slice::HalfFloatSliceExt};
use ndarray::{s, Array3, Array4, ArrayView4, Axis};

/// Start offsets of the windows along one axis: `n = ceil((size − patch) /
/// (patch·step)) + 1` windows, starts `round(i·(size − patch)/(n − 1))`
/// (round half to even, as numpy). `size ≥ patch ≥ 1`, `0 < step ≤ 1`.
pub fn window_starts(size: usize, patch: usize, step: f64) -> Result<Vec<usize>> {
    if patch == 0 || size < patch {
        return Err(Error::invalid(format!(
            "sliding window: image size {size} is smaller than the patch {patch}"
        )));
    }
    if !(step > 0.0 && step <= 1.0) {
        return Err(Error::invalid(format!(
            "sliding window: step {step} must be in (0, 1]"
        )));
    }
    let span = (size - patch) as f64;
    let target = patch as f64 * step;
    let n = (span / target).ceil() as usize + 1;
    if n == 1 {
        return Ok(vec![0]);
    }
    let actual = span / (n - 1) as f64;
    Ok((0..n)
        .map(|i| (actual * i as f64).round_ties_even() as usize)
        .collect())
}

/// nnU-Net's value scale of the importance map (its predictor calls
/// `compute_gaussian(..., value_scaling_factor=10)`); it cancels in the
/// final division but sets where f16 rounds.
const GAUSSIAN_SCALE: f64 = 10.0;

/// The Gaussian importance map of a patch, row-major, as f16.
///
/// A delta at the patch centre (`size / 2` per axis) blurred with
/// σ = size/8 per axis — scipy's `gaussian_filter`: sampled kernel of
/// radius `int(4σ + 0.5)`, normalised to sum 1 — then scaled so the centre
/// is 10, converted to f16 (through f32, as PyTorch converts), and zeros
/// (f16 underflow in 3-D corners) replaced by the smallest non-zero value.
/// [`Error::OutOfMemory`] when the map cannot be allocated.
pub fn gaussian_importance_map(patch: &[usize]) -> Result<Vec<f16>> {
    // Per axis, the normalised 1-D kernel tap at every offset from the centre.
    let taps: Vec<Vec<f64>> = patch
        .iter()
        .map(|&size| {
            let sigma = size as f64 / 8.0;
            let radius = (4.0 * sigma + 0.5) as i64;
            let phi: Vec<f64> = (-radius..=radius)
                .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
                .collect();
            let sum: f64 = phi.iter().sum();
            let centre = (size / 2) as i64;
            (0..size as i64)
                .map(|p| {
                    let d = p - centre;
                    if d.abs() <= radius {
                        phi[(d + radius) as usize] / sum
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let total: usize = patch.iter().product();
    let mut values = crate::limits::try_filled(total, 1f64, "the sliding-window Gaussian")?;
    // The filter runs axis after axis, so each value is a product of taps
    // taken in axis order.
    let mut inner = total;
    for (axis, &size) in patch.iter().enumerate() {
        inner /= size.max(1);
        for (n, v) in values.iter_mut().enumerate() {
            *v *= taps[axis][(n / inner) % size];
        }
    }
    let max = values.iter().copied().fold(0f64, f64::max);
    let scale = max / GAUSSIAN_SCALE;
    let mut map: Vec<f16> = values
        .iter()
        .map(|v| f16::from_f32((v / scale) as f32))
        .collect();
    let smallest = map
        .iter()
        .copied()
        .filter(|v| v.to_f32() > 0.0)
        .fold(f16::MAX, f16::min);
    for v in map.iter_mut() {
        if v.to_f32() == 0.0 {
            *v = smallest;
        }
    }
    Ok(map)
}

/// Every non-empty combination of `axes`, by size then lexicographically
/// (Python's `itertools.combinations(axes, r)` for r = 1, 2, …).
pub(crate) fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    let k = axes.len();
    let mut out = Vec::new();
    for r in 1..=k {
        let mut idx: Vec<usize> = (0..r).collect();
        loop {
            out.push(idx.iter().map(|&i| axes[i]).collect());
            // Advance to the next r-combination of 0..k.
            let Some(pos) = (0..r).rev().find(|&i| idx[i] != i + k - r) else {
                break;
            };
            idx[pos] += 1;
            for j in pos + 1..r {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    out
}

/// How windows tile a `[C, Z, Y, X]` case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    /// Patch over (y, x) for 2-D configurations (one slice per window) or
    /// (z, y, x) for 3-D ones.
    pub patch: Vec<usize>,
    /// Case shape (z, y, x) before padding.
    pub shape: [usize; 3],
    /// Shape after zero padding up to the patch.
    pub padded: [usize; 3],
    /// Zeros added before the data on each axis.
    pub pad_below: [usize; 3],
    /// Window origins in the padded case, in nnU-Net's order.
    pub starts: Vec<[usize; 3]>,
}

impl WindowPlan {
    /// Lays out windows over a case of `shape` (z, y, x).
    pub fn new(shape: [usize; 3], patch: &[usize], step: f64) -> Result<WindowPlan> {
        let extent = Self::extent_of(patch)?;
        let mut padded = shape;
        let mut pad_below = [0; 3];
        for a in 0..3 {
            if shape[a] == 0 {
                return Err(Error::invalid(format!(
                    "sliding window over an empty case {shape:?}"
                )));
            }
            if shape[a] < extent[a] {
                padded[a] = extent[a];
                pad_below[a] = (extent[a] - shape[a]) / 2;
            }
        }
        let per_axis = [
            if patch.len() == 2 {
                // 2-D configurations predict every slice.
                (0..padded[0]).collect()
            } else {
                window_starts(padded[0], extent[0], step)?
            },
            window_starts(padded[1], extent[1], step)?,
            window_starts(padded[2], extent[2], step)?,
        ];
        // 2-D: every slice in turn; either way the last axis varies fastest.
        let mut starts = Vec::new();
        for &z in &per_axis[0] {
            for &y in &per_axis[1] {
                for &x in &per_axis[2] {
                    starts.push([z, y, x]);
                }
            }
        }
        Ok(WindowPlan {
            patch: patch.to_vec(),
            shape,
            padded,
            pad_below,
            starts,
        })
    }

    /// The window's size in (z, y, x): `[1, py, px]` for a 2-D patch.
    fn extent_of(patch: &[usize]) -> Result<[usize; 3]> {
        match *patch {
            [py, px] if py > 0 && px > 0 => Ok([1, py, px]),
            [pz, py, px] if pz > 0 && py > 0 && px > 0 => Ok([pz, py, px]),
            _ => Err(Error::invalid(format!(
                "patch size {patch:?} must have 2 or 3 sizes ≥ 1"
            ))),
        }
    }

    /// The window's size in (z, y, x).
    pub fn extent(&self) -> [usize; 3] {
        // Validated in `new`.
        Self::extent_of(&self.patch).unwrap_or([1, 1, 1])
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there is no window (never, for a valid plan).
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// Sums of weighted logits and of weights, in f16 like nnU-Net's.
struct Accumulator {
    classes: usize,
    shape: [usize; 3],
    logits: Vec<f16>,
    weights: Vec<f16>,
}

impl Accumulator {
    fn new(classes: usize, shape: [usize; 3]) -> Result<Accumulator> {
        let voxels = shape[0] * shape[1] * shape[2];
        if voxels == 0 || classes == 0 {
            return Err(Error::Internal(format!(
                "logit accumulator for {classes} classes over {shape:?}"
            )));
        }
        let n = voxels
            .checked_mul(classes)
            .filter(|n| *n <= isize::MAX as usize / 2)
            .ok_or_else(|| Error::OutOfMemory(format!("logits of {classes} × {shape:?}")))?;
        Ok(Accumulator {
            classes,
            shape,
            logits: crate::limits::try_filled(n, f16::ZERO, "the summed window logits")?,
            weights: crate::limits::try_filled(voxels, f16::ZERO, "the summed window weights")?,
        })
    }

    /// `logits[:, window] += prediction · gaussian`, `weights[window] +=
    /// gaussian`; `prediction` is `[classes, extent]`, `gaussian` the f16
    /// map's values as f32. Rows are widened to f32, summed and rounded
    /// back in bulk (F16C where available), one rounding per stored value.
    fn add(&mut self, start: [usize; 3], extent: [usize; 3], prediction: &[f32], gaussian: &[f32]) {
        let [_, ny, nx] = self.shape;
        let voxels = self.shape.iter().product::<usize>();
        let patch_voxels = extent.iter().product::<usize>();
        let width = extent[2];
        let mut row_f32 = vec![0f32; width];
        let rows = (0..extent[0]).flat_map(|z| (0..extent[1]).map(move |y| (z, y)));
        for (z, y) in rows {
            let dst = ((start[0] + z) * ny + start[1] + y) * nx + start[2];
            let src = (z * extent[1] + y) * width;
            let weights = &gaussian[src..src + width];
            for c in 0..self.classes {
                let stored = &mut self.logits[c * voxels + dst..c * voxels + dst + width];
                let pred = &prediction[c * patch_voxels + src..c * patch_voxels + src + width];
                stored.convert_to_f32_slice(&mut row_f32);
                for ((acc, p), w) in row_f32.iter_mut().zip(pred).zip(weights) {
                    *acc += p * w;
                }
                stored.convert_from_f32_slice(&row_f32);
            }
            let stored = &mut self.weights[dst..dst + width];
            stored.convert_to_f32_slice(&mut row_f32);
            for (acc, w) in row_f32.iter_mut().zip(weights) {
                *acc += w;
            }
            stored.convert_from_f32_slice(&row_f32);
        }
    }

    /// `logits / weights` (f16), cropped to `shape` at `offset`.
    fn finish(self, offset: [usize; 3], shape: [usize; 3]) -> Result<Array4<f16>> {
        let voxels = self.weights.len();
        let mut weights = crate::limits::try_filled(voxels, 0f32, "the window weights as f32")?;
        self.weights.convert_to_f32_slice(&mut weights);
        let mut divided = self.logits;
        let mut plane_f32 = crate::limits::try_filled(voxels, 0f32, "a logit plane as f32")?;
        for plane in divided.chunks_mut(voxels) {
            plane.convert_to_f32_slice(&mut plane_f32);
            for (v, w) in plane_f32.iter_mut().zip(&weights) {
                *v /= w;
            }
            plane.convert_from_f32_slice(&plane_f32);
        }
        let full = Array4::from_shape_vec(
            (self.classes, self.shape[0], self.shape[1], self.shape[2]),
            divided,
        )
        .map_err(|e| Error::Internal(format!("logit accumulator shape: {e}")))?;
        Ok(full
            .slice(s![
                ..,
                offset[0]..offset[0] + shape[0],
                offset[1]..offset[1] + shape[1],
                offset[2]..offset[2] + shape[2]
            ])
            .to_owned())
    }
}

/// How many network items one forward of the sliding window evaluates.
#[derive(Clone, Debug)]
pub enum WindowBatch {
    /// One window and one mirror pass per forward, assembled on the host:
    /// the least memory. The CPU's choice: on the 2-core development
    /// machine a 2-D nnU-Net forward of 4 items is 11 % faster per item
    /// than 4 single ones (`benches/segmenter.rs`), but the whole phantom
    /// segmentation with a window's 4 mirror passes batched took 7.36 s
    /// against 7.08 s sequential (within noise, p = 0.07) while holding 4×
    /// the activations, so batching does not pay on the CPU.
    Sequential,
    /// Up to `windows` windows per forward, each with all its mirror passes
    /// as extra batch items (`windows · 2^axes` items), uploaded once per
    /// batch to the network's `device` in its `dtype` and flipped there:
    /// few, large launches for a GPU. The logits are those of
    /// [`WindowBatch::Sequential`]: items are independent and the passes
    /// are summed in the same order.
    Windows {
        /// Windows per forward (≥ 1).
        windows: usize,
        /// Where the network runs.
        device: Device,
        /// The network's element type.
        dtype: DType,
    },
}

impl WindowBatch {
    /// The batch for a network on `device` in `dtype`: sequential on the
    /// CPU; on a GPU as many windows as half the free memory holds at
    /// `bytes_per_item` per batch item and `passes` items per window (at
    /// least one window, at most `windows` and 64).
    pub fn for_device(
        device: &Device,
        dtype: DType,
        bytes_per_item: usize,
        passes: usize,
        windows: usize,
    ) -> WindowBatch {
        let Some(free) = device.free_memory() else {
            return WindowBatch::Sequential;
        };
        let per_window = bytes_per_item.max(1).saturating_mul(passes.max(1));
        WindowBatch::Windows {
            windows: (free / 2 / per_window).clamp(1, windows.clamp(1, 64)),
            device: device.clone(),
            dtype,
        }
    }
}

/// A case's logits `[classes, Z, Y, X]` as nnU-Net keeps them, in half
/// precision: on the host, or where the network ran.
#[derive(Debug)]
pub enum WindowLogits {
    /// In host memory (the sequential path).
    Host(Array4<f16>),
    /// A tensor on the network's device: f16 on a GPU; on the CPU f32
    /// values that are all f16 values (every sum was rounded).
    Device(Tensor),
}

impl WindowLogits {
    /// The logits in host memory (a download for device logits).
    pub fn into_host(self) -> Result<Array4<f16>> {
        match self {
            WindowLogits::Host(a) => Ok(a),
            WindowLogits::Device(t) => {
                let &[c, z, y, x] = t.dims() else {
                    return Err(Error::Internal(format!(
                        "case logits of shape {:?}",
                        t.dims()
                    )));
                };
                let values = t.to_vec()?.into_iter().map(f16::from_f32).collect();
                Array4::from_shape_vec((c, z, y, x), values)
                    .map_err(|e| Error::Internal(format!("case logits: {e}")))
            }
        }
    }

    /// The mean of the folds' logits ([`average_folds`]); on the device
    /// when every fold is there (a running f16 sum, then one division).
    pub fn mean(folds: Vec<WindowLogits>) -> Result<WindowLogits> {
        let on_device: Vec<&Tensor> = folds
            .iter()
            .filter_map(|f| match f {
                WindowLogits::Device(t) => Some(t),
                WindowLogits::Host(_) => None,
            })
            .collect();
        if on_device.len() != folds.len() {
            let host = folds
                .into_iter()
                .map(WindowLogits::into_host)
                .collect::<Result<Vec<_>>>()?;
            return Ok(WindowLogits::Host(average_folds(host)?));
        }
        let n = on_device.len();
        let (first, rest) = on_device
            .split_first()
            .ok_or_else(|| Error::Internal("no fold predictions to average".into()))?;
        let mut sum = (*first).clone();
        for other in rest {
            if other.dims() != sum.dims() {
                return Err(Error::Internal("fold predictions differ in shape".into()));
            }
            sum = as_half(sum.add(other)?)?;
        }
        if n > 1 {
            let d = Tensor::full_on(n as f32, &[1], &sum.device(), sum.dtype())?;
            sum = as_half(sum.binary(&d, BinaryOp::Div)?)?;
        }
        Ok(WindowLogits::Device(sum))
    }

    /// The class of every voxel ([`argmax_classes`]); for device logits the
    /// argmax runs there and only the labels come back.
    pub fn labels(&self) -> Result<Array3<u8>> {
        match self {
            WindowLogits::Host(a) => Ok(argmax_classes(a)),
            WindowLogits::Device(t) => {
                let &[classes, z, y, x] = t.dims() else {
                    return Err(Error::Internal(format!(
                        "case logits of shape {:?}",
                        t.dims()
                    )));
                };
                if classes > 256 {
                    return Err(Error::invalid(format!(
                        "{classes} classes do not fit an 8-bit label map"
                    )));
                }
                let labels = t
                    .argmax(0)?
                    .to_vec()?
                    .into_iter()
                    .map(|c| c as u8)
                    .collect();
                Array3::from_shape_vec((z, y, x), labels)
                    .map_err(|e| Error::Internal(format!("label map: {e}")))
            }
        }
    }
}

/// `t` rounded to f16 values when its type is wider (a no-op on f16).
fn as_half(t: Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F16 => Ok(t),
        DType::F32 => t.round_half(),
    }
}

/// Where the window sums live: host f16 buffers for sequential prediction,
/// tensors on the network's device for batches.
enum WindowSums {
    Host(Accumulator),
    Device {
        /// `[classes, padded]` and `[1, padded]`.
        logits: Tensor,
        weights: Tensor,
        /// The importance map `[extent]`.
        gaussian: Tensor,
        /// `[windows, 1, extent]` ones: the weight sum is the logit sum of
        /// a one-class prediction of 1.
        ones: Tensor,
    },
}

/// Logits `[classes, Z, Y, X]` of a normalised case `data` `[C, Z, Y, X]`
/// by sliding windows of `plan`, left where they were summed
/// ([`WindowLogits::into_host`] brings them to the host).
///
/// `network` maps a `[B, C, *patch]` tensor to `[B, classes, *patch]`
/// logits; `batch` decides how many windows and mirror passes (of
/// `mirror_axes`, axes of the patch) go into one call. `after_each` runs
/// once per window and mirror pass, after the call that evaluated it
/// (progress and cancellation: an error stops the prediction).
///
/// With [`WindowBatch::Windows`] the padded case is uploaded once, the
/// windows are cut from it on the device, and the Gaussian-weighted sums
/// stay there in f16 ([`Tensor::accumulate_windows`]); the result is
/// [`WindowLogits::Device`]. Sequentially, windows are cut and summed on the
/// host.
pub fn predict_window_logits(
    data: ArrayView4<'_, f32>,
    plan: &WindowPlan,
    classes: usize,
    mirror_axes: &[usize],
    batch: WindowBatch,
    network: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    after_each: &mut dyn FnMut() -> Result<()>,
) -> Result<WindowLogits> {
    let (channels, z, y, x) = data.dim();
    if [z, y, x] != plan.shape {
        return Err(Error::Internal(format!(
            "window plan for {:?} applied to a case of {:?}",
            plan.shape,
            [z, y, x]
        )));
    }
    let dims = plan.patch.len();
    if let Some(bad) = mirror_axes.iter().find(|&&a| a >= dims) {
        return Err(Error::invalid(format!(
            "mirroring axis {bad} does not exist in a {dims}-D patch"
        )));
    }
    // Zero padding, centred (acvl_utils' pad_nd_image).
    let padded = if plan.padded == plan.shape {
        data.to_owned()
    } else {
        let [pz, py, px] = plan.padded;
        let [bz, by, bx] = plan.pad_below;
        let mut p = Array4::<f32>::zeros((channels, pz, py, px));
        p.slice_mut(s![.., bz..bz + z, by..by + y, bx..bx + x])
            .assign(&data);
        p
    };
    let extent = plan.extent();
    let gaussian: Vec<f32> = gaussian_importance_map(&plan.patch)?
        .iter()
        .map(|g| g.to_f32())
        .collect();
    // Patch axis a is tensor axis a + 2.
    let flips: Vec<Vec<usize>> = mirror_combinations(mirror_axes)
        .iter()
        .map(|axes| axes.iter().map(|a| a + 2).collect())
        .collect();
    let passes = flips.len() + 1;
    let mut window_shape = vec![1, channels];
    window_shape.extend_from_slice(&plan.patch);
    let prediction_values = classes * extent.iter().product::<usize>();

    let windows_per_forward;
    let mut sums;
    // The padded case on the network's device, for batches.
    let mut case_on_device = None;
    match &batch {
        WindowBatch::Sequential => {
            windows_per_forward = 1;
            sums = WindowSums::Host(Accumulator::new(classes, plan.padded)?);
        }
        WindowBatch::Windows {
            windows,
            device,
            dtype,
        } => {
            windows_per_forward = (*windows).clamp(1, MAX_WINDOWS_PER_SUM);
            let [pz, py, px] = plan.padded;
            let standard = padded.as_standard_layout();
            let flat = standard
                .as_slice()
                .ok_or_else(|| Error::Internal("the padded case is not contiguous".into()))?;
            case_on_device = Some(Tensor::from_slice_on(
                flat,
                &[channels, pz, py, px],
                device,
                *dtype,
            )?);
            // f16 sums on a GPU; f16-rounded f32 ones on the CPU.
            let sum_dtype = match device {
                Device::Cpu => DType::F32,
                Device::Cuda(_) => DType::F16,
            };
            let mut ones_shape = vec![windows_per_forward, 1];
            ones_shape.extend_from_slice(&extent);
            sums = WindowSums::Device {
                logits: Tensor::full_on(0.0, &[classes, pz, py, px], device, sum_dtype)?,
                weights: Tensor::full_on(0.0, &[1, pz, py, px], device, sum_dtype)?,
                gaussian: Tensor::from_slice_on(&gaussian, &extent, device, sum_dtype)?,
                ones: Tensor::full_on(1.0, &ones_shape, device, sum_dtype)?,
            };
        }
    }

    for chunk in plan.starts.chunks(windows_per_forward) {
        let count = chunk.len();
        let x = match &case_on_device {
            None => {
                let window_values = channels * extent.iter().product::<usize>();
                let mut input = crate::limits::try_vec(
                    count.saturating_mul(window_values),
                    "a batch of windows",
                )?;
                for start in chunk {
                    let window = padded.slice(s![
                        ..,
                        start[0]..start[0] + extent[0],
                        start[1]..start[1] + extent[1],
                        start[2]..start[2] + extent[2]
                    ]);
                    input.extend(window.iter().copied());
                }
                let mut input_shape = window_shape.clone();
                input_shape[0] = count;
                Tensor::from_vec(input, &input_shape)?
            }
            Some(case) => {
                let windows = chunk
                    .iter()
                    .map(|start| {
                        case.narrow(1, start[0], extent[0])?
                            .narrow(2, start[1], extent[1])?
                            .narrow(3, start[2], extent[2])?
                            .reshape(&window_shape)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&windows.iter().collect::<Vec<_>>(), 0)?
            }
        };
        let mut run = |x: &Tensor| -> Result<Tensor> {
            let y = network(x)?;
            let mut expected = vec![x.dims()[0], classes];
            expected.extend_from_slice(&plan.patch);
            if y.dims() != expected {
                return Err(Error::Internal(format!(
                    "network returned {:?} for a {:?} batch of windows, expected {expected:?}",
                    y.dims(),
                    x.dims()
                )));
            }
            for _ in 0..x.dims()[0] {
                after_each()?;
            }
            Ok(y)
        };
        // Mirroring as tensor ops: flip the windows, run, flip back, sum in
        // the order nnU-Net does (pass after pass), then one division.
        let mut prediction = match &batch {
            WindowBatch::Sequential => {
                let mut sum = run(&x)?;
                for axes in &flips {
                    sum = sum.add(&run(&x.flip(axes)?)?.flip(axes)?)?;
                }
                sum
            }
            WindowBatch::Windows { .. } => {
                let mut parts = vec![x.clone()];
                for axes in &flips {
                    parts.push(x.flip(axes)?);
                }
                let all = if parts.len() == 1 {
                    run(&x)?
                } else {
                    run(&Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)?)?
                };
                let mut sum = all.narrow(0, 0, count)?;
                for (pass, axes) in flips.iter().enumerate() {
                    let back = all.narrow(0, (pass + 1) * count, count)?.flip(axes)?;
                    sum = sum.add(&back)?;
                }
                sum
            }
        };
        if passes > 1 {
            prediction = prediction.binary(
                &Tensor::full_on(
                    passes as f32,
                    &[1],
                    &prediction.device(),
                    prediction.dtype(),
                )?,
                BinaryOp::Div,
            )?;
        }
        match &mut sums {
            WindowSums::Host(acc) => {
                let values = prediction.to_vec()?;
                for (i, start) in chunk.iter().enumerate() {
                    let window = &values[i * prediction_values..(i + 1) * prediction_values];
                    acc.add(*start, extent, window, &gaussian);
                }
            }
            WindowSums::Device {
                logits,
                weights,
                gaussian,
                ones,
            } => {
                let mut shape = vec![count, classes];
                shape.extend_from_slice(&extent);
                let prediction = prediction.to_dtype(logits.dtype())?.reshape(&shape)?;
                *logits = prediction.accumulate_windows(logits, gaussian, chunk)?;
                *weights = ones
                    .narrow(0, 0, count)?
                    .accumulate_windows(weights, gaussian, chunk)?;
            }
        }
    }
    match sums {
        WindowSums::Host(acc) => Ok(WindowLogits::Host(acc.finish(plan.pad_below, plan.shape)?)),
        WindowSums::Device {
            logits, weights, ..
        } => {
            let crop = |t: &Tensor| -> Result<Tensor> {
                let mut t = t.clone();
                for a in 0..3 {
                    t = t.narrow(a + 1, plan.pad_below[a], plan.shape[a])?;
                }
                Ok(t)
            };
            let divided = crop(&logits)?.binary(&crop(&weights)?, BinaryOp::Div)?;
            Ok(WindowLogits::Device(as_half(divided)?))
        }
    }
}

/// Mean of the folds' logits in f16, as nnU-Net's
/// `predict_logits_from_preprocessed_data`: running f16 sum, then one
/// division by the fold count.
pub fn average_folds(mut folds: Vec<Array4<f16>>) -> Result<Array4<f16>> {
    if folds.is_empty() {
        return Err(Error::Internal("no fold predictions to average".into()));
    }
    let n = folds.len();
    let mut sum = folds.remove(0);
    for other in &folds {
        if other.dim() != sum.dim() {
            return Err(Error::Internal("fold predictions differ in shape".into()));
        }
        sum.zip_mut_with(other, |a, b| *a = f16::from_f32(a.to_f32() + b.to_f32()));
    }
    if n > 1 {
        let d = n as f32;
        sum.mapv_inplace(|a| f16::from_f32(a.to_f32() / d));
    }
    Ok(sum)
}

/// Class index of the largest logit per voxel (the first on ties, as numpy
/// and PyTorch's argmax), over axis 0 of `[classes, Z, Y, X]`.
pub fn argmax_classes(logits: &Array4<f16>) -> Array3<u8> {
    let (_, z, y, x) = logits.dim();
    let mut best = Array3::<u8>::zeros((z, y, x));
    let mut best_value = logits.index_axis(Axis(0), 0).mapv(f16::to_f32);
    for (c, plane) in logits.axis_iter(Axis(0)).enumerate().skip(1) {
        ndarray::Zip::from(&mut best)
            .and(&mut best_value)
            .and(&plane)
            .for_each(|b, bv, v| {
                let v = v.to_f32();
                // NaN never wins, like a comparison-based argmax.
                if v > *bv {
                    *bv = v;
                    *b = c as u8;
                }
            });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_follow_nnunet() {
        // nnU-Net's own example: 110 with patch 64 → 0, 23, 46.
        assert_eq!(window_starts(110, 64, 0.5).unwrap(), vec![0, 23, 46]);
        assert_eq!(window_starts(64, 64, 0.5).unwrap(), vec![0]);
        // 69 − 64 = 5 over 2 steps: 2.5 rounds to even.
        assert_eq!(window_starts(69, 64, 0.5).unwrap(), vec![0, 5]);
        assert_eq!(window_starts(10, 4, 0.5).unwrap(), vec![0, 2, 4, 6]);
        // 13 − 4 = 9 in ceil(9/2)=5 steps of 1.8: 0, 1.8, 3.6, 5.4, 7.2, 9.0.
        assert_eq!(window_starts(13, 4, 0.5).unwrap(), vec![0, 2, 4, 5, 7, 9]);
        assert_eq!(window_starts(13, 4, 1.0).unwrap(), vec![0, 3, 6, 9]);
        assert!(window_starts(3, 4, 0.5).is_err());
        assert!(window_starts(8, 4, 0.0).is_err());
        assert!(window_starts(8, 4, 1.5).is_err());
    }

    #[test]
    fn gaussian_has_nnunet_shape() {
        let g = gaussian_importance_map(&[8, 6]).unwrap();
        let v: Vec<f32> = g.iter().map(|h| h.to_f32()).collect();
        // Centre (4, 3) is the maximum, 10.
        assert_eq!(v[4 * 6 + 3], 10.0);
        assert!(v.iter().all(|&x| x > 0.0 && x <= 10.0));
        // One step off centre along axis 0: 10·exp(−0.5·(1/σ)²), σ = 1.
        let expect = 10.0 * (-0.5f64).exp();
        assert!(
            (f64::from(v[3 * 6 + 3]) - expect).abs() < 4e-3,
            "{}",
            v[3 * 6 + 3]
        );
        // Symmetric about the centre where both sides exist.
        assert_eq!(v[2 * 6 + 3], v[6 * 6 + 3]);
        // 3-D corners underflow f16 and get the smallest non-zero value.
        let g = gaussian_importance_map(&[16, 16, 16]).unwrap();
        let min = g.iter().map(|h| h.to_f32()).fold(f32::INFINITY, f32::min);
        assert!(min > 0.0);
        assert_eq!(g[0].to_f32(), min);
    }

    #[test]
    fn flips_and_combinations() {
        let d: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let flip = |shape: &[usize], axes: &[usize]| {
            Tensor::from_vec(d.clone(), shape)
                .unwrap()
                .flip(axes)
                .unwrap()
                .to_vec()
                .unwrap()
        };
        assert_eq!(
            flip(&[2, 3, 2], &[1]),
            vec![4.0, 5.0, 2.0, 3.0, 0.0, 1.0, 10.0, 11.0, 8.0, 9.0, 6.0, 7.0]
        );
        assert_eq!(
            flip(&[3, 4], &[0, 1]),
            (0..12).rev().map(|v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!(
            mirror_combinations(&[0, 1, 2]),
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
        assert!(mirror_combinations(&[]).is_empty());
    }

    #[test]
    fn plan_pads_small_cases_and_orders_windows() {
        let p = WindowPlan::new([3, 5, 20], &[8, 8], 0.5).unwrap();
        assert_eq!(p.padded, [3, 8, 20]);
        assert_eq!(p.pad_below, [0, 1, 0]);
        // Per slice: one row of windows at x = 0, 4, 8, 12.
        assert_eq!(p.len(), 3 * 4);
        assert_eq!(
            p.starts[0..5].to_vec(),
            vec![[0, 0, 0], [0, 0, 4], [0, 0, 8], [0, 0, 12], [1, 0, 0]]
        );
        let p = WindowPlan::new([4, 9, 9], &[4, 8, 8], 0.5).unwrap();
        assert_eq!(p.starts, vec![[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]);
    }

    /// With an identity-like "network", the weighted average of overlapping
    /// windows returns the input wherever it was not padded.
    #[test]
    fn averaging_reproduces_a_constant_prediction() {
        let data = Array4::from_shape_fn((1, 2, 6, 11), |(_, z, y, x)| {
            (z * 100 + y * 10 + x) as f32 * 0.01 - 0.5
        });
        let plan = WindowPlan::new([2, 6, 11], &[8, 4], 0.5).unwrap();
        let mut calls = 0;
        // The network copies its input into two classes (x and −x).
        let mut net = |x: &Tensor| -> Result<Tensor> {
            let v = x.to_vec()?;
            let mut out = v.clone();
            out.extend(v.iter().map(|a| -a));
            let mut shape = x.dims().to_vec();
            shape[1] = 2;
            Tensor::from_vec(out, &shape)
        };
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let logits = predict_window_logits(
            data.view(),
            &plan,
            2,
            &[0, 1],
            WindowBatch::Sequential,
            &mut net,
            &mut count,
        )
        .and_then(WindowLogits::into_host)
        .unwrap();
        assert_eq!(calls, plan.len() * 4);
        assert_eq!(logits.dim(), (2, 2, 6, 11));
        for ((c, z, y, x), v) in logits.indexed_iter() {
            let want = data[[0, z, y, x]] * if c == 0 { 1.0 } else { -1.0 };
            // f16 accumulation: ~1e-3 relative.
            assert!(
                (v.to_f32() - want).abs() <= 2e-3 * want.abs().max(0.1),
                "{c} {z} {y} {x}: {v} vs {want}"
            );
        }
        let classes = argmax_classes(&logits);
        assert_eq!(classes[[0, 0, 0]], 1);
        assert_eq!(classes[[1, 5, 10]], 0);
    }

    /// A per-item "network" that is not mirror-symmetric: every output
    /// depends on its position in the patch, its class and its item's input,
    /// so a window placed, flipped or paired wrongly in a batch shows.
    fn asymmetric_net(x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let per_item: usize = dims[1..].iter().product();
        let positions: usize = dims[2..].iter().product();
        let v = x.to_vec()?;
        let mut out = Vec::with_capacity(dims[0] * 3 * positions);
        for item in v.chunks(per_item) {
            for c in 0..3 {
                for (i, &a) in item[..positions].iter().enumerate() {
                    out.push(
                        a * (1.0 + 0.013 * i as f32) * (c as f32 + 0.5) + 0.01 * (i * c) as f32,
                    );
                }
            }
        }
        let mut shape = dims;
        shape[1] = 3;
        Tensor::from_vec(out, &shape)
    }

    /// Runs the sliding window with `batch`: (logits, after_each calls,
    /// network calls, largest batch seen).
    fn run_batched(
        data: &Array4<f32>,
        plan: &WindowPlan,
        mirror: &[usize],
        batch: WindowBatch,
        network: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> (Array4<f16>, usize, usize, usize) {
        let (mut ticks, mut calls, mut largest) = (0, 0, 0);
        let mut net = |x: &Tensor| {
            calls += 1;
            largest = largest.max(x.dims()[0]);
            network(x)
        };
        let mut tick = || -> Result<()> {
            ticks += 1;
            Ok(())
        };
        let logits =
            predict_window_logits(data.view(), plan, 3, mirror, batch, &mut net, &mut tick)
                .and_then(WindowLogits::into_host)
                .unwrap();
        (logits, ticks, calls, largest)
    }

    /// `n` windows per forward, assembled on the CPU.
    fn on_cpu(n: usize) -> WindowBatch {
        WindowBatch::Windows {
            windows: n,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    fn same_bits(a: &Array4<f16>, b: &Array4<f16>) -> bool {
        a.dim() == b.dim()
            && a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Batching windows and mirror passes changes how many items a forward
    /// sees, not the logits: bit for bit the sequential result, with the
    /// same progress count, 2-D and 3-D, with and without mirroring.
    #[test]
    fn batched_windows_give_the_sequential_logits() {
        let cases: [(&[usize], [usize; 3], &[usize]); 4] = [
            (&[8, 4], [2, 6, 11], &[0, 1]),
            (&[8, 4], [2, 6, 11], &[]),
            (&[4, 4, 4], [5, 6, 7], &[0, 1, 2]),
            (&[4, 4, 4], [5, 6, 7], &[1]),
        ];
        for (patch, shape, mirror) in cases {
            let data = Array4::from_shape_fn((2, shape[0], shape[1], shape[2]), |(c, z, y, x)| {
                ((c * 1000 + z * 100 + y * 10 + x) as f32 * 0.37).sin()
            });
            let plan = WindowPlan::new(shape, patch, 0.5).unwrap();
            let passes = 1 << mirror.len();
            let (want, ticks, calls, largest) = run_batched(
                &data,
                &plan,
                mirror,
                WindowBatch::Sequential,
                &asymmetric_net,
            );
            assert_eq!(
                (ticks, calls, largest),
                (plan.len() * passes, plan.len() * passes, 1)
            );
            for n in [1, 3, plan.len() + 5] {
                let (got, ticks, calls, largest) =
                    run_batched(&data, &plan, mirror, on_cpu(n), &asymmetric_net);
                let what = format!("patch {patch:?}, mirror {mirror:?}, {n} windows per forward");
                assert_eq!(ticks, plan.len() * passes, "{what}");
                assert_eq!(calls, plan.len().div_ceil(n), "{what}");
                assert_eq!(largest, n.min(plan.len()) * passes, "{what}");
                assert!(
                    same_bits(&got, &want),
                    "{what}: logits differ from the sequential run"
                );
            }
        }
    }

    /// The same with nnU-Net's network on the CPU (2-D and 3-D, random
    /// weights): a batch's items are computed independently.
    #[test]
    fn batched_windows_through_a_plain_unet_match_sequential() {
        use crate::models::plain_unet::random_state_dict;
        use crate::models::{PlainConvUNet, PlainUNetConfig};
        for (patch, shape) in [(vec![8, 8], [2, 12, 10]), (vec![4, 8, 8], [6, 10, 9])] {
            let dims = patch.len();
            let cfg = PlainUNetConfig::standard(dims, 1, 3, vec![4, 8]);
            let net = PlainConvUNet::from_state_dict(random_state_dict(&cfg, 5), &cfg).unwrap();
            let forward = |x: &Tensor| net.forward(x);
            let data = Array4::from_shape_fn((1, shape[0], shape[1], shape[2]), |(_, z, y, x)| {
                ((z * 100 + y * 10 + x) as f32 * 0.21).cos()
            });
            let plan = WindowPlan::new(shape, &patch, 0.5).unwrap();
            let mirror: Vec<usize> = (0..dims).collect();
            let (want, ..) = run_batched(&data, &plan, &mirror, WindowBatch::Sequential, &forward);
            let (got, ..) = run_batched(&data, &plan, &mirror, on_cpu(3), &forward);
            assert!(
                same_bits(&got, &want),
                "{dims}-D: batched logits differ from the sequential run"
            );
        }
    }

    #[test]
    fn batches_follow_free_memory() {
        // No free-memory budget on the CPU: one item per forward.
        assert!(matches!(
            WindowBatch::for_device(&Device::Cpu, DType::F32, 1 << 20, 4, 100),
            WindowBatch::Sequential
        ));
    }

    #[test]
    fn folds_average_in_half_precision() {
        let a = Array4::from_elem((1, 1, 1, 2), f16::from_f32(1.0));
        let b = Array4::from_elem((1, 1, 1, 2), f16::from_f32(2.0));
        let m = average_folds(vec![a, b]).unwrap();
        assert_eq!(m[[0, 0, 0, 1]].to_f32(), 1.5);
        assert!(average_folds(Vec::new()).is_err());
    }

    /// The fold mean and the argmax on the device (here the CPU engine,
    /// f16-rounded f32) equal the host's f16 ones bit for bit, ties included.
    #[test]
    fn device_fold_mean_and_labels_equal_the_host_ones() -> Result<()> {
        let shape = (4, 3, 5, 7);
        let fold = |k: usize| {
            Array4::from_shape_fn(shape, |(c, z, y, x)| {
                // Few distinct values, so sums round and argmax ties occur.
                f16::from_f32((((c * 7 + z * 5 + y * 3 + x + k) % 6) as f32 - 2.5) * 1.37)
            })
        };
        for folds in 1..=3 {
            let host: Vec<Array4<f16>> = (0..folds).map(fold).collect();
            let device = host
                .iter()
                .map(|a| {
                    let values: Vec<f32> = a.iter().map(|v| v.to_f32()).collect();
                    Ok(WindowLogits::Device(Tensor::from_vec(
                        values,
                        &[4, 3, 5, 7],
                    )?))
                })
                .collect::<Result<Vec<_>>>()?;
            let want = average_folds(host.clone())?;
            let mean = WindowLogits::mean(device)?;
            assert!(matches!(mean, WindowLogits::Device(_)));
            assert_eq!(mean.labels()?, argmax_classes(&want), "{folds} folds");
            assert!(same_bits(&mean.into_host()?, &want), "{folds} folds");
            // A mix of host and device folds averages on the host.
            let first: Vec<f32> = host[0].iter().map(|v| v.to_f32()).collect();
            let mut mixed = vec![WindowLogits::Device(Tensor::from_vec(
                first,
                &[4, 3, 5, 7],
            )?)];
            mixed.extend(host[1..].iter().map(|a| WindowLogits::Host(a.clone())));
            assert!(same_bits(&WindowLogits::mean(mixed)?.into_host()?, &want));
        }
        Ok(())
    }
}

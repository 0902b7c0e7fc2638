//! The op harness: every op of the engine, on every device, against the CPU
//! (in the manner of ggml's `test-backend-ops`; `GPU.md`, "Numerics").
//!
//! [`op_cases`] is the registry: each [`OpCase`] names an op reached through
//! the public [`Tensor`] API (so every method of `BackendStorage` and
//! `BackendDevice` is exercised), describes its seeded random inputs, and
//! may carry an independent composition of the same result (the unfused
//! ops, a host loop, an identity) and, for the training issue, a backward.
//!
//! [`run_on`] runs every case on a device and compares it with the CPU f32
//! result by relative L2 error (‖dev − cpu‖/‖cpu‖) and max abs error:
//!
//! - both sides see the same inputs, rounded to the device's dtype first, so
//!   the error measured is the op's own and not the rounding of its inputs;
//! - outputs are poisoned before each run ([`poison_outputs`]): an element
//!   a kernel forgets to write stays NaN, and any NaN or infinity fails;
//! - an op the device does not implement yet ([`Error::Unsupported`]) is
//!   listed as not implemented, never counted as passed;
//! - each case is timed (median of a few runs, each ending in a one-element
//!   download so that asynchronous devices are waited for).
//!
//! [`check_compositions`] checks each case against its composition on the
//! CPU, and [`check_gradient`] is the finite-difference checker for
//! backward passes.

use crate::backend::cpu::{output_buffer, recycle};
use crate::backend::desc::{
    AncestralStep, BinaryOp, KnownBlend, NormActivation, OptimizerRule, OptimizerStep, UnaryOp,
};
use crate::backend::NoiseKey;
use crate::nn::{Conv3dParams, ConvParams, DType, Device, Tensor};
use crate::rng::Rng;
use crate::testing::{max_abs_diff, rel_l2};
use crate::{Error, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a case runs: the device and the element type of its inputs.
#[derive(Clone, Debug)]
pub struct Target {
    /// The device.
    pub device: Device,
    /// The element type of inputs not marked [`Input::keep_f32`], and of
    /// tensors a case creates (noise, embeddings).
    pub dtype: DType,
}

impl Target {
    /// The CPU in f32: the reference.
    pub fn cpu() -> Target {
        Target {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

/// An op applied to a case's inputs (already on `target`'s device).
pub type OpFn = Arc<dyn Fn(&[Tensor], &Target) -> Result<Tensor> + Send + Sync>;

/// A backward pass: the gradients of `Σ grad_out·op(inputs)` with respect
/// to each input, in input order (for the training issue; see
/// [`OpCase::check_backward`]).
pub type BackwardFn = Arc<dyn Fn(&[Tensor], &Tensor) -> Result<Vec<Tensor>> + Send + Sync>;

/// How an input's values are drawn. None gives exact zeros (but
/// [`Dist::Mask`], by design).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Uniform in `[lo, hi)`, `lo > 0` (square roots).
    Uniform {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
    /// Magnitude uniform in `[lo, hi)`, random sign (divisors).
    AwayFromZero {
        /// Smallest magnitude.
        lo: f32,
        /// Largest magnitude.
        hi: f32,
    },
    /// 0 or 1 with equal probability (a region mask).
    Mask,
}

/// One input of a case.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Its shape.
    pub shape: Vec<usize>,
    /// How its values are drawn.
    pub dist: Dist,
    /// Uploaded as F32 on every device (the sampler's state), instead of
    /// the target's dtype.
    pub keep_f32: bool,
}

impl Input {
    /// Standard normal values of `shape`.
    pub fn normal(shape: &[usize]) -> Input {
        Input::with(
            shape,
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
        )
    }

    /// Values of `shape` drawn from `dist`.
    pub fn with(shape: &[usize], dist: Dist) -> Input {
        Input {
            shape: shape.to_vec(),
            dist,
            keep_f32: false,
        }
    }

    /// This input, always uploaded as F32.
    pub fn f32_state(mut self) -> Input {
        self.keep_f32 = true;
        self
    }

    /// The values for `seed`, never exactly zero but for masks.
    pub fn generate(&self, seed: u64) -> Vec<f32> {
        let n: usize = self.shape.iter().product();
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| loop {
                let v = match self.dist {
                    Dist::Normal { mean, std } => mean + std * rng.normal() as f32,
                    Dist::Uniform { lo, hi } => rng.uniform_range(lo.into(), hi.into()) as f32,
                    Dist::AwayFromZero { lo, hi } => {
                        let m = rng.uniform_range(lo.into(), hi.into()) as f32;
                        if rng.uniform() < 0.5 {
                            -m
                        } else {
                            m
                        }
                    }
                    Dist::Mask => return (rng.uniform() < 0.5) as u8 as f32,
                };
                if v != 0.0 {
                    return v;
                }
            })
            .collect()
    }
}

/// `values` rounded to `dtype` (and widened back to f32).
pub fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => values.to_vec(),
        DType::F16 => values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
    }
}

/// One entry of the registry.
#[derive(Clone)]
pub struct OpCase {
    /// The op family (`conv2d`, `group_norm_fused`, ...).
    pub op: &'static str,
    /// What this case exercises (`3x3 s1 p1, Winograd F(4,3)`).
    pub name: String,
    /// The shapes, for the table.
    pub shape: String,
    /// The inputs, drawn from `seed + index`.
    pub inputs: Vec<Input>,
    /// Seed of the first input.
    pub seed: u64,
    /// The op.
    pub run: OpFn,
    /// An independent composition of the same result on the CPU (unfused
    /// ops, a host loop, an identity), when there is one.
    pub composed: Option<OpFn>,
    /// Relative L2 tolerance of `composed` against `run` on the CPU.
    pub composed_tol: f64,
    /// Relative L2 tolerance of an F16 device against the CPU.
    pub tol_f16: f64,
    /// Relative L2 tolerance of another F32 device against the CPU.
    pub tol_f32: f64,
    /// The backward pass, once the training issue adds it.
    pub backward: Option<BackwardFn>,
}

impl std::fmt::Debug for OpCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpCase")
            .field("op", &self.op)
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("inputs", &self.inputs)
            .field("seed", &self.seed)
            .field("composed", &self.composed.is_some())
            .field("backward", &self.backward.is_some())
            .finish()
    }
}

/// Relative L2 tolerance of F16 paths (`GPU.md`).
pub const TOL_F16: f64 = 1e-2;
/// Relative L2 tolerance of another F32 device (different summation orders).
pub const TOL_F32: f64 = 1e-5;

impl OpCase {
    fn new(
        op: &'static str,
        name: impl Into<String>,
        inputs: Vec<Input>,
        run: impl Fn(&[Tensor], &Target) -> Result<Tensor> + Send + Sync + 'static,
    ) -> OpCase {
        let shape = inputs
            .iter()
            .map(|i| format!("{:?}", i.shape))
            .collect::<Vec<_>>()
            .join(" ")
            .replace(' ', "")
            .replace("][", "] [");
        OpCase {
            op,
            name: name.into(),
            shape,
            inputs,
            seed: 0,
            run: Arc::new(run),
            composed: None,
            composed_tol: 1e-5,
            tol_f16: TOL_F16,
            tol_f32: TOL_F32,
            backward: None,
        }
    }

    fn composed(
        mut self,
        tol: f64,
        f: impl Fn(&[Tensor], &Target) -> Result<Tensor> + Send + Sync + 'static,
    ) -> OpCase {
        self.composed = Some(Arc::new(f));
        self.composed_tol = tol;
        self
    }

    fn shape(mut self, shape: impl Into<String>) -> OpCase {
        self.shape = shape.into();
        self
    }

    fn tol_f32(mut self, tol: f64) -> OpCase {
        self.tol_f32 = tol;
        self
    }

    /// The inputs' host values, rounded to `dtype` where the case uploads
    /// them as `dtype`.
    pub fn host_inputs(&self, dtype: DType) -> Vec<Vec<f32>> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let v = input.generate(self.seed.wrapping_add(i as u64));
                if input.keep_f32 {
                    v
                } else {
                    round_to(&v, dtype)
                }
            })
            .collect()
    }

    /// `host` uploaded to `target` (each input as its dtype).
    pub fn upload(&self, host: &[Vec<f32>], target: &Target) -> Result<Vec<Tensor>> {
        self.inputs
            .iter()
            .zip(host)
            .map(|(input, values)| {
                let dtype = if input.keep_f32 {
                    DType::F32
                } else {
                    target.dtype
                };
                Tensor::from_slice_on(values, &input.shape, &target.device, dtype)
            })
            .collect()
    }

    /// The case's inputs as CPU f32 tensors.
    pub fn cpu_inputs(&self) -> Result<Vec<Tensor>> {
        self.upload(&self.host_inputs(DType::F32), &Target::cpu())
    }

    /// The relative L2 tolerance on `target`.
    pub fn tolerance(&self, target: &Target) -> f64 {
        match target.dtype {
            DType::F16 => self.tol_f16,
            DType::F32 => self.tol_f32,
        }
    }

    /// Checks the backward pass of every input with [`check_gradient`] on
    /// the CPU, the output reduced with fixed random weights (so a
    /// misplaced gradient is caught, not only a wrong sum).
    /// [`Error::Unsupported`] while the case has no backward.
    pub fn check_backward(&self, eps: f64, tol: f64) -> Result<Vec<GradReport>> {
        let backward = self.backward.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("{} ({}) has no backward yet", self.op, self.name))
        })?;
        let inputs = self.cpu_inputs()?;
        let cpu = Target::cpu();
        let out = (self.run)(&inputs, &cpu)?;
        let weights = crate::testing::random_tensor(out.dims(), self.seed ^ 0x9e37);
        let grads = backward(&inputs, &weights)?;
        if grads.len() != inputs.len() {
            return Err(Error::Internal(format!(
                "backward of {} gave {} gradients for {} inputs",
                self.op,
                grads.len(),
                inputs.len()
            )));
        }
        (0..inputs.len())
            .map(|i| {
                let f = |xi: &Tensor| {
                    let mut ins = inputs.clone();
                    ins[i] = xi.clone();
                    (self.run)(&ins, &cpu)?.mul(&weights)
                };
                check_gradient(f, &inputs[i], &grads[i], eps, tol)
            })
            .collect()
    }
}

// ---------------------------------------------------------------- reports

/// How one case ended on one device.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Within tolerance, all values finite.
    Passed,
    /// Over tolerance, non-finite values, a wrong shape or an error.
    Failed(String),
    /// The device does not implement the op yet (listed, not failed).
    NotImplemented(String),
}

/// The result of one case on one device.
#[derive(Clone, Debug)]
pub struct OpReport {
    /// The op family.
    pub op: &'static str,
    /// The case.
    pub name: String,
    /// Its shapes.
    pub shape: String,
    /// How it ended.
    pub outcome: Outcome,
    /// ‖dev − cpu‖/‖cpu‖ (NaN when not measured).
    pub rel_l2: f64,
    /// max |dev − cpu| (NaN when not measured).
    pub max_abs: f32,
    /// The tolerance on `rel_l2`.
    pub tol: f64,
    /// Median time of one run, when timed.
    pub time: Option<Duration>,
}

impl OpReport {
    fn new(case: &OpCase, tol: f64) -> OpReport {
        OpReport {
            op: case.op,
            name: case.name.clone(),
            shape: case.shape.clone(),
            outcome: Outcome::Passed,
            rel_l2: f64::NAN,
            max_abs: f32::NAN,
            tol,
            time: None,
        }
    }

    /// Whether the case failed (not: passed or not implemented).
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// The reports as a table: op, case, shape, rel L2, max abs, time, status;
/// then a count of passed, failed and not implemented cases.
pub fn format_table(reports: &[OpReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:<34} {:<36} {:>9} {:>9} {:>10}  status",
        "op", "case", "shape", "rel L2", "max abs", "time"
    );
    for r in reports {
        let time = r.time.map_or_else(
            || "-".to_string(),
            |t| format!("{:.1} µs", t.as_secs_f64() * 1e6),
        );
        let status = match &r.outcome {
            Outcome::Passed => "ok".to_string(),
            Outcome::Failed(why) => format!("FAILED: {why}"),
            Outcome::NotImplemented(_) => "not implemented".to_string(),
        };
        let _ = writeln!(
            s,
            "{:<20} {:<34} {:<36} {:>9.2e} {:>9.2e} {:>10}  {status}",
            r.op, r.name, r.shape, r.rel_l2, r.max_abs, time
        );
    }
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    let _ = writeln!(
        s,
        "{} cases: {} passed, {} failed, {} not implemented",
        reports.len(),
        count(|o| matches!(o, Outcome::Passed)),
        count(|o| matches!(o, Outcome::Failed(_))),
        count(|o| matches!(o, Outcome::NotImplemented(_))),
    );
    s
}

// ---------------------------------------------------------------- running

/// Options of [`run_cases`].
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Timed runs per case (0: no timing); the median is reported.
    pub timing_runs: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { timing_runs: 5 }
    }
}

/// Pooled output buffers poisoned per run: enough to displace the stale
/// buffers of one size the pool may hold.
const POISON_BUFFERS: usize = 4;

/// Fills the buffers the next outputs of `len` elements will be allocated
/// from with NaN, so that an element a kernel does not write reads NaN.
///
/// The CPU hands outputs of at least 16 Ki floats from its pool of dropped
/// buffers (`backend::cpu::output_buffer`, best fit, stale contents): this
/// takes the best-fitting buffers out, fills them with NaN and gives them
/// back. Smaller CPU outputs are fresh zeroed memory, so an unwritten
/// element reads 0 and is caught by the comparison with the reference (or
/// the composition), not by the NaN check. On another device NaN-filled
/// tensors of the output's size are allocated and dropped, for its caching
/// allocator to hand out next; there the device's own allocator decides
/// (see the report of the harness issue).
pub fn poison_outputs(target: &Target, len: usize) {
    match target.device {
        Device::Cpu => {
            let buffers: Vec<Vec<f32>> = (0..POISON_BUFFERS)
                .map(|_| {
                    let mut b = output_buffer(len);
                    b.fill(f32::NAN);
                    b
                })
                .collect();
            buffers.into_iter().for_each(recycle);
        }
        _ => {
            let mut dtypes = vec![target.dtype];
            if target.dtype != DType::F32 {
                dtypes.push(DType::F32);
            }
            let poisoned: Vec<Tensor> = dtypes
                .iter()
                .flat_map(|&dt| {
                    (0..POISON_BUFFERS).filter_map(move |_| {
                        Tensor::full_on(f32::NAN, &[len], &target.device, dt).ok()
                    })
                })
                .collect();
            drop(poisoned);
        }
    }
}

/// Waits for `t` to be computed: a one-element download (asynchronous
/// devices finish the stream first), a negligible cost on the CPU.
fn sync(t: &Tensor) -> Result<()> {
    let n = t.elem_count();
    if n > 0 {
        t.reshape(&[n])?.narrow(0, 0, 1)?.to_vec()?;
    }
    Ok(())
}

fn unsupported_or_failed(report: &mut OpReport, what: &str, e: Error) {
    report.outcome = match e {
        Error::Unsupported(m) => Outcome::NotImplemented(m),
        e => Outcome::Failed(format!("{what}: {e}")),
    };
}

/// Runs one case on `target` against the CPU f32 result.
pub fn run_case(case: &OpCase, target: &Target, options: &RunOptions) -> OpReport {
    let mut report = OpReport::new(case, case.tolerance(target));
    let host = case.host_inputs(target.dtype);
    let cpu = Target::cpu();
    let reference = case
        .upload(&host, &cpu)
        .and_then(|ins| (case.run)(&ins, &cpu))
        .and_then(|out| Ok((out.dims().to_vec(), out.to_vec()?)));
    let (want_dims, want) = match reference {
        Ok(r) => r,
        Err(e) => {
            report.outcome = Outcome::Failed(format!("CPU reference: {e}"));
            return report;
        }
    };
    if let Some(i) = want.iter().position(|v| !v.is_finite()) {
        report.outcome = Outcome::Failed(format!("CPU reference not finite at {i}"));
        return report;
    }
    let inputs = match case.upload(&host, target) {
        Ok(t) => t,
        Err(e) => {
            unsupported_or_failed(&mut report, "upload", e);
            return report;
        }
    };
    poison_outputs(target, want.len());
    let got = match (case.run)(&inputs, target) {
        Ok(t) => t,
        Err(e) => {
            unsupported_or_failed(&mut report, "run", e);
            return report;
        }
    };
    if got.dims() != want_dims.as_slice() {
        report.outcome = Outcome::Failed(format!("shape {:?}, CPU {:?}", got.dims(), want_dims));
        return report;
    }
    let got = match got.to_vec() {
        Ok(v) => v,
        Err(e) => {
            report.outcome = Outcome::Failed(format!("download: {e}"));
            return report;
        }
    };
    report.rel_l2 = rel_l2(&got, &want);
    report.max_abs = max_abs_diff(&got, &want);
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        let bad = got.iter().filter(|v| !v.is_finite()).count();
        report.outcome = Outcome::Failed(format!(
            "{bad} non-finite values (first at {i}: {})",
            got[i]
        ));
    } else if report.rel_l2.is_nan() || report.rel_l2 > report.tol {
        report.outcome = Outcome::Failed(format!(
            "rel L2 {:.2e} over {:.0e}",
            report.rel_l2, report.tol
        ));
    }
    if options.timing_runs > 0 && !report.failed() {
        let mut times = Vec::with_capacity(options.timing_runs);
        for _ in 0..=options.timing_runs {
            let start = Instant::now();
            match (case.run)(&inputs, target).and_then(|t| sync(&t)) {
                Ok(()) => times.push(start.elapsed()),
                Err(e) => {
                    report.outcome = Outcome::Failed(format!("timed run: {e}"));
                    return report;
                }
            }
        }
        // The first run warms up (allocations, caches, lazy kernel loads).
        times.remove(0);
        times.sort();
        report.time = times.get(times.len() / 2).copied();
    }
    report
}

/// Runs `cases` on `device` with inputs (and created tensors) of `dtype`.
pub fn run_cases(
    cases: &[OpCase],
    device: &Device,
    dtype: DType,
    options: &RunOptions,
) -> Vec<OpReport> {
    let target = Target {
        device: device.clone(),
        dtype,
    };
    cases
        .iter()
        .map(|c| run_case(c, &target, options))
        .collect()
}

/// Every case of [`op_cases`] on `device` in `dtype` against the CPU in
/// f32, timed.
pub fn run_on(device: &Device, dtype: DType) -> Vec<OpReport> {
    run_cases(&op_cases(), device, dtype, &RunOptions::default())
}

/// Each case that has a composition, run and composed on the CPU and
/// compared (relative L2 against `composed_tol`); the others are skipped.
pub fn check_compositions(cases: &[OpCase]) -> Vec<OpReport> {
    let cpu = Target::cpu();
    cases
        .iter()
        .filter_map(|case| {
            let composed = case.composed.as_ref()?;
            let mut report = OpReport::new(case, case.composed_tol);
            let result = case.cpu_inputs().and_then(|ins| {
                let got = (case.run)(&ins, &cpu)?;
                let want = composed(&ins, &cpu)?;
                if got.dims() != want.dims() {
                    return Err(Error::invalid(format!(
                        "shape {:?}, composition {:?}",
                        got.dims(),
                        want.dims()
                    )));
                }
                Ok((got.to_vec()?, want.to_vec()?))
            });
            match result {
                Ok((got, want)) => {
                    report.rel_l2 = rel_l2(&got, &want);
                    report.max_abs = max_abs_diff(&got, &want);
                    if report.rel_l2.is_nan()
                        || report.rel_l2 > report.tol
                        || got.iter().any(|v| !v.is_finite())
                    {
                        report.outcome = Outcome::Failed(format!(
                            "composition rel L2 {:.2e} over {:.0e}",
                            report.rel_l2, report.tol
                        ));
                    }
                }
                Err(e) => report.outcome = Outcome::Failed(e.to_string()),
            }
            Some(report)
        })
        .collect()
}

// ---------------------------------------------------------------- gradients

/// The result of [`check_gradient`].
#[derive(Clone, Debug, PartialEq)]
pub struct GradReport {
    /// Elements of `x` probed.
    pub probed: usize,
    /// ‖analytic − numeric‖/‖numeric‖ over the probed elements.
    pub rel_l2: f64,
    /// max |analytic − numeric|.
    pub max_abs: f64,
    /// The element with the largest difference.
    pub worst: usize,
    /// The tolerance on `rel_l2`.
    pub tol: f64,
}

impl GradReport {
    /// Whether the analytic gradient agrees within the tolerance.
    pub fn passed(&self) -> bool {
        self.rel_l2 <= self.tol
    }
}

/// Elements probed by [`check_gradient`] at most (evenly spread).
pub const GRAD_PROBES: usize = 512;

/// Checks `analytic`, the gradient of `L(x) = Σ f(x)` (all elements
/// summed; weight the output inside `f` for a weighted reduction), against
/// central differences `(L(x + ε·eⱼ) − L(x − ε·eⱼ)) / 2ε` accumulated in
/// f64, at every element of `x` or [`GRAD_PROBES`] of them spread evenly.
/// The step actually taken in `x`'s precision is the divisor. Errors when
/// `f` fails or `analytic` is not `x`'s shape.
pub fn check_gradient(
    f: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    analytic: &Tensor,
    eps: f64,
    tol: f64,
) -> Result<GradReport> {
    if analytic.dims() != x.dims() {
        return Err(Error::invalid(format!(
            "check_gradient: gradient {:?} for x {:?}",
            analytic.dims(),
            x.dims()
        )));
    }
    if eps.is_nan() || eps <= 0.0 {
        return Err(Error::invalid(format!(
            "check_gradient: eps {eps} is not > 0"
        )));
    }
    let base = x.to_vec()?;
    let grad = analytic.to_vec()?;
    let (device, dtype) = (x.device(), x.dtype());
    let loss = |values: &[f32]| -> Result<f64> {
        let t = Tensor::from_slice_on(values, x.dims(), &device, dtype)?;
        Ok(f(&t)?.to_vec()?.iter().map(|&v| f64::from(v)).sum())
    };
    let n = base.len();
    let probes: Vec<usize> = if n <= GRAD_PROBES {
        (0..n).collect()
    } else {
        (0..GRAD_PROBES).map(|k| k * n / GRAD_PROBES).collect()
    };
    let (mut diff, mut norm, mut max_abs, mut worst) = (0f64, 0f64, 0f64, 0usize);
    let mut probe = base.clone();
    for &j in &probes {
        let x0 = f64::from(base[j]);
        let (up, down) = ((x0 + eps) as f32, (x0 - eps) as f32);
        probe[j] = up;
        let l_up = loss(&probe)?;
        probe[j] = down;
        let l_down = loss(&probe)?;
        probe[j] = base[j];
        let numeric = (l_up - l_down) / (f64::from(up) - f64::from(down));
        let d = (f64::from(grad[j]) - numeric).abs();
        if d > max_abs || d.is_nan() {
            max_abs = d;
            worst = j;
        }
        diff += d * d;
        norm += numeric * numeric;
    }
    let rel_l2 = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    Ok(GradReport {
        probed: probes.len(),
        rel_l2: if rel_l2.is_nan() {
            f64::INFINITY
        } else {
            rel_l2
        },
        max_abs,
        worst,
        tol,
    })
}

// ---------------------------------------------------------------- registry

fn normal(shape: &[usize]) -> Input {
    Input::normal(shape)
}

/// A CPU tensor of host values (for host-loop compositions).
fn host(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(values, shape)
}

/// `f` applied to every element on the host, in f64.
fn host_map(x: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor> {
    let v = x.to_vec()?;
    host(
        v.iter().map(|&a| f(f64::from(a)) as f32).collect(),
        x.dims(),
    )
}

/// erf by Abramowitz & Stegun 7.1.26 (abs error < 1.5e-7): independent of
/// the back-end's.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Broadcasting `op` by index arithmetic on the host.
fn host_binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let rank = a.rank().max(b.rank());
    let pad = |d: &[usize]| [vec![1; rank - d.len()], d.to_vec()].concat();
    let (sa, sb) = (pad(a.dims()), pad(b.dims()));
    let out: Vec<usize> = sa.iter().zip(&sb).map(|(&x, &y)| x.max(y)).collect();
    let (ta, tb, to) = (strides(&sa), strides(&sb), strides(&out));
    let (va, vb) = (a.to_vec()?, b.to_vec()?);
    let n: usize = out.iter().product();
    let values = (0..n)
        .map(|i| {
            let (mut ia, mut ib) = (0, 0);
            for d in 0..rank {
                let c = i / to[d] % out[d];
                ia += if sa[d] == 1 { 0 } else { c * ta[d] };
                ib += if sb[d] == 1 { 0 } else { c * tb[d] };
            }
            op.apply(va[ia], vb[ib])
        })
        .collect();
    host(values, &out)
}

/// Permutation by index arithmetic on the host.
fn host_permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let shape = x.dims();
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let (si, so) = (strides(shape), strides(&out));
    let v = x.to_vec()?;
    let values = (0..v.len())
        .map(|i| {
            let src: usize = (0..out.len())
                .map(|d| (i / so[d] % out[d]) * si[perm[d]])
                .sum();
            v[src]
        })
        .collect();
    host(values, &out)
}

/// Softmax over `dim` on the host, in f64.
fn host_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let shape = x.dims();
    let (outer, size) = (shape[..dim].iter().product::<usize>(), shape[dim]);
    let inner: usize = shape[dim + 1..].iter().product();
    let v = x.to_vec()?;
    let mut out = vec![0f32; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * size + k) * inner + i;
            let m = (0..size)
                .map(|k| f64::from(v[at(k)]))
                .fold(f64::MIN, f64::max);
            let s: f64 = (0..size).map(|k| (f64::from(v[at(k)]) - m).exp()).sum();
            for k in 0..size {
                out[at(k)] = ((f64::from(v[at(k)]) - m).exp() / s) as f32;
            }
        }
    }
    host(out, shape)
}

/// GroupNorm with affine parameters on the host, statistics in f64.
fn host_group_norm(
    x: &Tensor,
    groups: usize,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (batch, c) = (x.dims()[0], x.dims()[1]);
    let s: usize = x.dims()[2..].iter().product();
    let v = x.to_vec()?;
    let w = w.map(Tensor::to_vec).transpose()?;
    let b = b.map(Tensor::to_vec).transpose()?;
    let cg = c / groups;
    let mut out = vec![0f32; v.len()];
    for n in 0..batch {
        for g in 0..groups {
            let span = (n * c + g * cg) * s..(n * c + (g + 1) * cg) * s;
            let len = span.len() as f64;
            let mean = v[span.clone()].iter().map(|&a| f64::from(a)).sum::<f64>() / len;
            let var = v[span.clone()]
                .iter()
                .map(|&a| (f64::from(a) - mean).powi(2))
                .sum::<f64>()
                / len;
            let inv = 1.0 / (var + eps).sqrt();
            for i in span {
                let ch = (i / s) % c;
                let gain = w.as_ref().map_or(1.0, |w| f64::from(w[ch]));
                let offset = b.as_ref().map_or(0.0, |b| f64::from(b[ch]));
                out[i] = ((f64::from(v[i]) - mean) * inv * gain + offset) as f32;
            }
        }
    }
    host(out, x.dims())
}

/// `x·wᵀ + b` on the host, in f64.
fn host_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (n_out, n_in) = (w.dims()[0], w.dims()[1]);
    let (xv, wv) = (x.to_vec()?, w.to_vec()?);
    let bv = b.map(Tensor::to_vec).transpose()?;
    let rows = xv.len() / n_in;
    let mut out = Vec::with_capacity(rows * n_out);
    for r in 0..rows {
        for o in 0..n_out {
            let dot: f64 = (0..n_in)
                .map(|i| f64::from(xv[r * n_in + i]) * f64::from(wv[o * n_in + i]))
                .sum();
            out.push((dot + bv.as_ref().map_or(0.0, |b| f64::from(b[o]))) as f32);
        }
    }
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank ≥ 1") = n_out;
    host(out, &shape)
}

/// `x` with `p` zeros on both sides of dimension `dim` (by concatenation).
fn zero_pad(x: &Tensor, dim: usize, p: usize) -> Result<Tensor> {
    let mut side = x.dims().to_vec();
    side[dim] = p;
    let zeros = Tensor::zeros(&side)?;
    Tensor::cat(&[&zeros, x, &zeros], dim)
}

/// A bias `[O]` as `[1, O, 1, ...]` of rank `rank`, for broadcasting.
fn bias_view(b: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = b.elem_count();
    b.reshape(&shape)
}

/// A pointwise convolution of `[B, C, S...]` as a linear layer over the
/// channels: `w` is `[O, C, 1...]`.
fn pointwise_as_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let r = x.rank();
    let (o, c) = (w.dims()[0], w.dims()[1]);
    let mut to_last: Vec<usize> = vec![0];
    to_last.extend(2..r);
    to_last.push(1);
    let mut back: Vec<usize> = vec![0, r - 1];
    back.extend(1..r - 1);
    x.permute(&to_last)?
        .linear(&w.reshape(&[o, c])?, b)?
        .permute(&back)
}

/// A transposed convolution whose kernel equals its stride (no padding):
/// every input voxel writes its own output block, a linear layer over the
/// channels. `x` `[B, C, S₁..Sₖ]`, `w` `[C, O, k₁..kₖ]`.
fn kernel_is_stride_as_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (c, o) = (w.dims()[0], w.dims()[1]);
    let k = &w.dims()[2..];
    let s = &x.dims()[2..];
    let dims = k.len();
    let kk: usize = k.iter().product();
    // [C, O, k..] → [O, k.., C] → [O·kk, C]
    let mut wp: Vec<usize> = (1..dims + 2).collect();
    wp.push(0);
    let weight = w.permute(&wp)?.reshape(&[o * kk, c])?;
    let mut to_last: Vec<usize> = vec![0];
    to_last.extend(2..dims + 2);
    to_last.push(1);
    // [B, S.., O·kk] → [B, S.., O, k..]
    let y = x.permute(&to_last)?.linear(&weight, None)?;
    let mut shape = vec![x.dims()[0]];
    shape.extend_from_slice(s);
    shape.push(o);
    shape.extend_from_slice(k);
    let y = y.reshape(&shape)?;
    // → [B, O, S₁, k₁, S₂, k₂, ...]
    let mut perm = vec![0, dims + 1];
    for a in 0..dims {
        perm.push(1 + a);
        perm.push(dims + 2 + a);
    }
    let mut out = vec![x.dims()[0], o];
    out.extend(s.iter().zip(k).map(|(a, b)| a * b));
    let y = y.permute(&perm)?.reshape(&out)?;
    match b {
        Some(b) => y.add(&bias_view(b, out.len())?),
        None => Ok(y),
    }
}

/// A full tensor of `v` broadcastable against anything.
fn scalar(v: f32) -> Result<Tensor> {
    Tensor::full(v, &[1])
}

fn act_name(a: NormActivation) -> &'static str {
    match a {
        NormActivation::Identity => "identity",
        NormActivation::Silu => "silu",
        NormActivation::LeakyRelu(_) => "leaky_relu",
    }
}

/// Every op of the engine with several shapes each: small odd sizes and
/// one moderately large, seeded inputs (`seed` 1000 + 16·index).
pub fn op_cases() -> Vec<OpCase> {
    let mut cases = Vec::new();
    elementwise_cases(&mut cases);
    layout_cases(&mut cases);
    norm_cases(&mut cases);
    product_cases(&mut cases);
    conv_cases(&mut cases);
    attention_cases(&mut cases);
    sampler_cases(&mut cases);
    optimizer_cases(&mut cases);
    sliding_cases(&mut cases);
    backward_cases(&mut cases);
    weight_grad_cases(&mut cases);
    for (i, c) in cases.iter_mut().enumerate() {
        c.seed = 1000 + 16 * i as u64;
    }
    cases
}

fn elementwise_cases(cases: &mut Vec<OpCase>) {
    type Scalar = fn(f64) -> f64;
    let unary: [(UnaryOp, Dist, Scalar); 13] = [
        (
            UnaryOp::Silu,
            Dist::Normal {
                mean: 0.0,
                std: 2.0,
            },
            |x| x / (1.0 + (-x).exp()),
        ),
        (
            UnaryOp::Gelu,
            Dist::Normal {
                mean: 0.0,
                std: 2.0,
            },
            |x| 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        ),
        (
            UnaryOp::LeakyRelu(0.01),
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            |x| {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            },
        ),
        (
            UnaryOp::Affine(1.5, -0.25),
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            |x| 1.5 * x - 0.25,
        ),
        (
            UnaryOp::Exp,
            Dist::Normal {
                mean: 0.0,
                std: 1.5,
            },
            f64::exp,
        ),
        (
            UnaryOp::Neg,
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            |x| -x,
        ),
        (
            UnaryOp::Square,
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            |x| x * x,
        ),
        (
            UnaryOp::Sqrt,
            Dist::Uniform { lo: 0.01, hi: 4.0 },
            f64::sqrt,
        ),
        (
            UnaryOp::Recip,
            Dist::AwayFromZero { lo: 0.25, hi: 4.0 },
            |x| 1.0 / x,
        ),
        (
            UnaryOp::RoundHalf,
            Dist::Normal {
                mean: 0.0,
                std: 300.0,
            },
            |x| f64::from(half::f16::from_f64(x)),
        ),
        (
            UnaryOp::Abs,
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            f64::abs,
        ),
        (UnaryOp::Ln, Dist::Uniform { lo: 0.01, hi: 4.0 }, f64::ln),
        (UnaryOp::IsZero, Dist::Mask, |x| {
            f64::from(u8::from(x == 0.0))
        }),
    ];
    for (op, dist, f) in unary {
        for shape in [&[3usize, 5, 7][..], &[2, 8, 64, 64]] {
            let name = format!("{op:?}").to_lowercase();
            cases.push(
                OpCase::new(
                    "unary",
                    name,
                    vec![Input::with(shape, dist)],
                    move |x, _| x[0].unary(op),
                )
                .composed(1e-6, move |x, _| host_map(&x[0], f)),
            );
        }
    }
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 5, 7], &[3, 5, 7]),
        (&[2, 3, 5, 7], &[3, 1, 7]),
        (&[4, 1, 6], &[1, 5, 1]),
        (&[2, 16, 32, 32], &[2, 16, 1, 1]),
    ];
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        for (a, b) in shapes {
            let rhs = if op == BinaryOp::Div {
                Input::with(b, Dist::AwayFromZero { lo: 0.25, hi: 4.0 })
            } else {
                normal(b)
            };
            let name = format!("{op:?}").to_lowercase();
            cases.push(
                OpCase::new("binary", name, vec![normal(a), rhs], move |x, _| {
                    x[0].binary(&x[1], op)
                })
                .composed(0.0, move |x, _| host_binary(&x[0], &x[1], op)),
            );
        }
    }
    for shape in [&[3usize, 5, 7][..], &[2, 16, 32, 32]] {
        cases.push(
            OpCase::new(
                "lincomb",
                "0.7·a − 1.3·b",
                vec![normal(shape), normal(shape)],
                |x, _| x[0].lincomb(0.7, &x[1], -1.3),
            )
            .composed(1e-6, |x, _| {
                x[0].affine(0.7, 0.0)?.add(&x[1].affine(-1.3, 0.0)?)
            }),
        );
    }
}

fn layout_cases(cases: &mut Vec<OpCase>) {
    let perms: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 5, 7], &[0, 2, 3, 1]),
        (&[2, 3, 5, 7], &[3, 1, 0, 2]),
        (&[2, 4, 3, 5, 6], &[0, 2, 1, 3, 4]),
        (&[7, 9], &[1, 0]),
        (&[2, 32, 16, 64], &[0, 2, 3, 1]),
    ];
    for (shape, perm) in perms {
        let p = perm.to_vec();
        let q = perm.to_vec();
        cases.push(
            OpCase::new(
                "permute",
                format!("{perm:?}"),
                vec![normal(shape)],
                move |x, _| x[0].permute(&p),
            )
            .composed(0.0, move |x, _| host_permute(&x[0], &q)),
        );
    }
    let flips: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 5, 7], &[3]),
        (&[2, 3, 5, 7], &[2, 3]),
        (&[2, 3, 5, 7], &[0, 1, 2, 3]),
        (&[3, 5, 7], &[1]),
        (&[2, 4, 3, 64, 64], &[3, 4]),
    ];
    for (shape, axes) in flips {
        let a = axes.to_vec();
        cases.push(OpCase::new(
            "flip",
            format!("axes {axes:?}"),
            vec![normal(shape)],
            move |x, _| x[0].flip(&a),
        ));
        let a = axes.to_vec();
        cases.push(
            OpCase::new(
                "flip",
                format!("twice {axes:?} (identity)"),
                vec![normal(shape)],
                move |x, _| x[0].flip(&a)?.flip(&a),
            )
            .composed(0.0, |x, _| Ok(x[0].clone())),
        );
    }
    let narrows: [(&[usize], usize, usize, usize); 5] = [
        (&[2, 7, 5], 1, 2, 3),
        (&[5, 3, 4], 0, 4, 1),
        (&[3, 5, 9], 2, 0, 4),
        (&[2, 4, 3, 5, 6], 2, 1, 2),
        (&[2, 64, 32, 32], 1, 16, 32),
    ];
    for (shape, dim, start, len) in narrows {
        cases.push(OpCase::new(
            "narrow",
            format!("dim {dim} {start}..+{len}"),
            vec![normal(shape)],
            move |x, _| x[0].narrow(dim, start, len),
        ));
    }
    for (shape, n, dim, part) in [(&[2usize, 9, 5][..], 3, 1, 1), (&[4, 3, 10], 2, 2, 1)] {
        cases.push(OpCase::new(
            "chunk",
            format!("{n} parts of dim {dim}, part {part}"),
            vec![normal(shape)],
            move |x, _| Ok(x[0].chunk(n, dim)?.swap_remove(part)),
        ));
    }
    for (shape, n, dim) in [
        (&[2usize, 9, 5][..], 3, 1),
        (&[4, 3, 10], 2, 0),
        (&[2, 6, 2, 32, 32], 3, 1),
    ] {
        cases.push(
            OpCase::new(
                "cat",
                format!("of {n} chunks of dim {dim} (identity)"),
                vec![normal(shape)],
                move |x, _| {
                    let parts = x[0].chunk(n, dim)?;
                    Tensor::cat(&parts.iter().collect::<Vec<_>>(), dim)
                },
            )
            .composed(0.0, |x, _| Ok(x[0].clone())),
        );
    }
    let cats: [(&[&[usize]], usize); 4] = [
        (&[&[2, 3, 5], &[2, 1, 5], &[2, 4, 5]], 1),
        (&[&[1, 3, 5], &[3, 3, 5]], 0),
        (&[&[3, 5, 2], &[3, 5, 7]], 2),
        (&[&[2, 32, 2, 24, 24], &[2, 16, 2, 24, 24]], 1),
    ];
    for (shapes, dim) in cats {
        let inputs = shapes.iter().map(|s| normal(s)).collect();
        cases.push(OpCase::new(
            "cat",
            format!("{} parts, dim {dim}", shapes.len()),
            inputs,
            move |x, _| Tensor::cat(&x.iter().collect::<Vec<_>>(), dim),
        ));
    }
    for (rows, cols, ids) in [
        (11usize, 7usize, vec![3usize, 0, 10, 3]),
        (500, 64, (0..200).map(|i| (i * 37 + 11) % 500).collect()),
    ] {
        let (a, b) = (ids.clone(), ids.clone());
        cases.push(
            OpCase::new(
                "index_rows",
                format!("{} ids", ids.len()),
                vec![normal(&[rows, cols])],
                move |x, _| x[0].index_rows(&a),
            )
            .composed(0.0, move |x, _| {
                let v = x[0].to_vec()?;
                let rows = b.iter().flat_map(|&i| v[i * cols..(i + 1) * cols].to_vec());
                host(rows.collect(), &[b.len(), cols])
            })
            .shape(format!("[{rows},{cols}] ids {}", ids.len())),
        );
    }
    for shape in [&[3usize, 5, 7][..], &[2, 64, 32, 32]] {
        cases.push(
            OpCase::new(
                "to_dtype",
                "f32 → dtype → f32",
                vec![normal(shape).f32_state()],
                |x, t| x[0].to_dtype(t.dtype)?.to_dtype(DType::F32),
            )
            .composed(0.0, |x, _| Ok(x[0].clone())),
        );
        cases.push(OpCase::new(
            "to_dtype",
            "dtype → f32",
            vec![normal(shape)],
            |x, _| x[0].to_dtype(DType::F32),
        ));
    }
}

fn norm_cases(cases: &mut Vec<OpCase>) {
    let softmaxes: [(&[usize], usize, f32); 6] = [
        (&[3, 5, 7], 0, 1.0),
        (&[3, 5, 7], 1, 1.0),
        (&[3, 5, 7], 2, 1.0),
        (&[2, 4, 3, 5, 6], 1, 3.0),
        (&[64, 1000], 1, 4.0),
        (&[8, 3, 4096], 2, 1.0),
    ];
    for (shape, dim, std) in softmaxes {
        cases.push(
            OpCase::new(
                "softmax",
                format!("dim {dim}"),
                vec![Input::with(shape, Dist::Normal { mean: 0.0, std })],
                move |x, _| x[0].softmax(dim),
            )
            .composed(1e-6, move |x, _| host_softmax(&x[0], dim)),
        );
    }

    // (shape, groups, activation, affine, modulation, residual, input mean)
    type Norm = (
        &'static [usize],
        usize,
        NormActivation,
        bool,
        bool,
        bool,
        f32,
    );
    let norms: [Norm; 10] = [
        (
            &[2, 6, 3, 5, 4],
            3,
            NormActivation::Identity,
            true,
            false,
            false,
            0.0,
        ),
        (
            &[3, 4, 7, 5],
            4,
            NormActivation::Identity,
            false,
            false,
            false,
            3.0,
        ),
        (
            &[2, 8, 2, 9, 11],
            4,
            NormActivation::Silu,
            true,
            true,
            true,
            1.0,
        ),
        (
            &[2, 8, 2, 9, 11],
            4,
            NormActivation::Silu,
            true,
            true,
            false,
            0.0,
        ),
        (
            &[2, 8, 2, 9, 11],
            2,
            NormActivation::Silu,
            false,
            false,
            true,
            0.0,
        ),
        (
            &[2, 5, 7, 9, 11],
            5,
            NormActivation::LeakyRelu(0.01),
            true,
            false,
            false,
            2.0,
        ),
        (
            &[1, 6, 3, 17, 13],
            6,
            NormActivation::LeakyRelu(0.01),
            false,
            false,
            false,
            0.0,
        ),
        (
            &[2, 6, 3, 5, 4],
            2,
            NormActivation::LeakyRelu(0.2),
            true,
            true,
            true,
            -1.0,
        ),
        (
            &[2, 6, 3, 5, 4],
            1,
            NormActivation::Identity,
            true,
            true,
            true,
            0.0,
        ),
        (
            &[2, 64, 4, 32, 32],
            32,
            NormActivation::Silu,
            true,
            true,
            true,
            0.5,
        ),
    ];
    for (shape, groups, act, affine, modulated, residual, mean) in norms {
        let (b, c) = (shape[0], shape[1]);
        let mut inputs = vec![Input::with(shape, Dist::Normal { mean, std: 2.0 })];
        if affine {
            inputs.push(normal(&[c]));
            inputs.push(normal(&[c]));
        }
        if modulated {
            inputs.push(normal(&[b, c, 1, 1, 1][..shape.len().max(2)]));
            inputs.push(normal(&[b, c, 1, 1, 1][..shape.len().max(2)]));
        }
        if residual {
            inputs.push(normal(shape));
        }
        // Operand positions in `inputs`.
        let w = affine.then_some(1);
        let ss = modulated.then_some(if affine { 3 } else { 1 });
        let r = residual.then_some(inputs.len() - 1);
        let name = format!(
            "g{groups} {}{}{}{}",
            act_name(act),
            if affine { " affine" } else { "" },
            if modulated { " scale-shift" } else { "" },
            if residual { " +res" } else { "" },
        );
        let fused = move |x: &[Tensor], _: &Target| {
            x[0].group_norm_fused(
                groups,
                w.map(|i| &x[i]),
                w.map(|i| &x[i + 1]),
                1e-5,
                act,
                ss.map(|i| (&x[i], &x[i + 1])),
                r.map(|i| &x[i]),
            )
        };
        let unfused = move |x: &[Tensor], _: &Target| {
            // The plain GroupNorm on the host for the identity case without
            // extras; the separate ops otherwise.
            let mut y = if ss.is_none() && r.is_none() && act == NormActivation::Identity {
                host_group_norm(&x[0], groups, w.map(|i| &x[i]), w.map(|i| &x[i + 1]), 1e-5)?
            } else {
                x[0].group_norm(groups, w.map(|i| &x[i]), w.map(|i| &x[i + 1]), 1e-5)?
            };
            if let Some(i) = ss {
                y = y.scale_shift(&x[i], &x[i + 1])?;
            }
            y = match act {
                NormActivation::Identity => y,
                NormActivation::Silu => y.silu()?,
                NormActivation::LeakyRelu(s) => y.leaky_relu(s)?,
            };
            match r {
                Some(i) => y.add(&x[i]),
                None => Ok(y),
            }
        };
        cases.push(
            OpCase::new("group_norm_fused", name, inputs, fused)
                .composed(1e-5, unfused)
                .tol_f32(1e-4),
        );
    }
    for shape in [&[2usize, 6, 3, 5, 4][..], &[3, 7, 5], &[1, 32, 2, 16, 16]] {
        let c = shape[1];
        let mut gamma_shape = vec![1; shape.len()];
        gamma_shape[1] = c;
        cases.push(
            OpCase::new(
                "layer_norm_channels",
                "eps 1e-5",
                vec![
                    Input::with(
                        shape,
                        Dist::Normal {
                            mean: 1.0,
                            std: 2.0,
                        },
                    ),
                    normal(&gamma_shape),
                ],
                |x, _| x[0].layer_norm_channels(&x[1], 1e-5),
            )
            .composed(1e-5, |x, _| {
                // LayerNorm over channels = GroupNorm of one group per
                // position: move channels last and positions into the batch.
                let d = x[0].dims().to_vec();
                let (b, c) = (d[0], d[1]);
                let s: usize = d[2..].iter().product();
                let per_position =
                    x[0].reshape(&[b, c, s])?
                        .permute(&[0, 2, 1])?
                        .reshape(&[b * s, c, 1])?;
                let normed = host_group_norm(&per_position, 1, None, None, 1e-5)?;
                normed
                    .reshape(&[b, s, c])?
                    .permute(&[0, 2, 1])?
                    .reshape(&d)?
                    .mul(&x[1])
            })
            .tol_f32(1e-4),
        );
    }
}

fn product_cases(cases: &mut Vec<OpCase>) {
    let linears: [(&[usize], usize, bool); 4] = [
        (&[5, 7], 3, true),
        (&[2, 3, 17], 9, false),
        (&[1, 1], 1, true),
        (&[256, 256], 512, true),
    ];
    for (x, n_out, bias) in linears {
        let n_in = *x.last().expect("rank ≥ 1");
        let mut inputs = vec![normal(x), normal(&[n_out, n_in])];
        if bias {
            inputs.push(normal(&[n_out]));
        }
        cases.push(
            OpCase::new(
                "linear",
                if bias { "with bias" } else { "no bias" },
                inputs,
                |x, _| x[0].linear(&x[1], x.get(2)),
            )
            .composed(1e-5, |x, _| host_linear(&x[0], &x[1], x.get(2)))
            .tol_f32(1e-4),
        );
    }
    // The batched product (the attention backwards): every transpose, a
    // large batch of attention-sized items and items past one tile.
    let products: [(usize, usize, usize, usize, bool, bool); 5] = [
        (3, 5, 7, 4, false, false),
        (3, 5, 7, 4, true, false),
        (3, 5, 7, 4, false, true),
        (2, 33, 65, 17, true, true),
        (4096, 10, 10, 32, false, true),
    ];
    for (batch, m, n, k, trans_a, trans_b) in products {
        let a_shape = if trans_a {
            [batch, k, m]
        } else {
            [batch, m, k]
        };
        let b_shape = if trans_b {
            [batch, n, k]
        } else {
            [batch, k, n]
        };
        cases.push(
            OpCase::new(
                "matmul",
                format!("{batch}×{m}×{n}×{k} ta {trans_a} tb {trans_b}"),
                vec![normal(&a_shape), normal(&b_shape)],
                move |x, _| x[0].matmul(&x[1], trans_a, trans_b),
            )
            .composed(1e-5, move |x, _| {
                let (a, b) = (x[0].to_vec()?, x[1].to_vec()?);
                let mut out = vec![0f32; batch * m * n];
                for z in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k)
                                .map(|l| {
                                    let av =
                                        a[z * m * k + if trans_a { l * m + i } else { i * k + l }];
                                    let bv =
                                        b[z * k * n + if trans_b { j * k + l } else { l * n + j }];
                                    f64::from(av) * f64::from(bv)
                                })
                                .sum();
                            out[(z * m + i) * n + j] = dot as f32;
                        }
                    }
                }
                host(out, &[batch, m, n])
            })
            .tol_f32(1e-4),
        );
    }
}

fn conv_cases(cases: &mut Vec<OpCase>) {
    // conv2d: (input, c_out, k, stride, pad, bias, path)
    type Conv = (
        &'static [usize],
        usize,
        usize,
        usize,
        usize,
        bool,
        &'static str,
    );
    let convs: [Conv; 9] = [
        (
            &[1, 3, 7, 9],
            4,
            3,
            1,
            1,
            true,
            "3x3 s1 im2col (small frame)",
        ),
        (
            &[2, 4, 2, 16, 16],
            5,
            3,
            1,
            1,
            true,
            "3x3 s1 Winograd F(2,3) 16²",
        ),
        (
            &[1, 8, 33, 35],
            6,
            3,
            1,
            1,
            false,
            "3x3 s1 Winograd F(4,3) 33x35",
        ),
        (
            &[1, 32, 2, 64, 64],
            32,
            3,
            1,
            1,
            true,
            "3x3 s1 Winograd F(4,3) 64²",
        ),
        (&[2, 4, 2, 9, 11], 3, 3, 2, 1, true, "3x3 s2"),
        (&[2, 4, 2, 16, 16], 8, 4, 2, 1, true, "4x4 s2 (downsample)"),
        (&[2, 6, 3, 5, 7], 5, 1, 1, 0, true, "1x1"),
        (&[1, 3, 2, 17, 19], 4, 7, 2, 3, true, "7x7 s2 p3"),
        (&[1, 64, 1, 32, 32], 64, 1, 1, 0, true, "1x1 64 ch"),
    ];
    for (shape, c_out, k, stride, pad, bias, path) in convs {
        let c_in = shape[1];
        let kshape: Vec<usize> = if shape.len() == 5 {
            vec![c_out, c_in, 1, k, k]
        } else {
            vec![c_out, c_in, k, k]
        };
        let mut inputs = vec![normal(shape), normal(&kshape)];
        if bias {
            inputs.push(normal(&[c_out]));
        }
        let p = ConvParams::new(stride, pad);
        let mut case = OpCase::new("conv2d", path, inputs, move |x, _| {
            x[0].conv2d(&x[1], x.get(2), p)
        })
        .tol_f32(1e-4);
        if k == 3 && stride == 1 && pad == 1 {
            // Explicit zero padding and no padding: never Winograd.
            case = case.composed(1e-5, move |x, _| {
                let r = x[0].rank();
                let padded = zero_pad(&zero_pad(&x[0], r - 2, 1)?, r - 1, 1)?;
                padded.conv2d(&x[1], x.get(2), ConvParams::new(1, 0))
            });
        } else if k == 1 {
            case = case.composed(1e-5, |x, _| pointwise_as_linear(&x[0], &x[1], x.get(2)));
        }
        cases.push(case);
    }
    // conv2d_add: pointwise, im2col and Winograd, with the residual.
    for (shape, k, stride, pad) in [
        (&[2usize, 4, 2, 5, 7][..], 1usize, 1usize, 0usize),
        (&[2, 4, 2, 9, 9], 7, 2, 3),
        (&[2, 4, 2, 20, 20], 3, 1, 1),
    ] {
        let p = ConvParams::new(stride, pad);
        let g = crate::backend::desc::ConvGeometry {
            batch: shape[0],
            c_in: shape[1],
            c_out: 3,
            frames: shape[2],
            h: shape[3],
            w: shape[4],
            kh: k,
            kw: k,
            stride: p.stride,
            pad: p.pad,
        };
        let (ho, wo) = g.conv_out().expect("a valid test geometry");
        cases.push(
            OpCase::new(
                "conv2d_add",
                format!("{k}x{k} s{stride} + residual"),
                vec![
                    normal(shape),
                    normal(&[3, shape[1], 1, k, k]),
                    normal(&[3]),
                    normal(&[shape[0], 3, shape[2], ho, wo]),
                ],
                move |x, _| x[0].conv2d_add(&x[1], Some(&x[2]), p, &x[3]),
            )
            .composed(1e-5, move |x, _| {
                x[0].conv2d(&x[1], Some(&x[2]), p)?.add(&x[3])
            })
            .tol_f32(1e-4),
        );
    }
    // conv_transpose2d: (input, c_out, k, stride, pad)
    for (shape, c_out, k, stride, pad) in [
        (&[2usize, 4, 2, 5, 5][..], 3usize, 4usize, 2usize, 1usize),
        (&[2, 4, 3, 7], 5, 2, 2, 0),
        (&[1, 3, 2, 6, 5], 4, 3, 1, 1),
        (&[1, 32, 2, 32, 32], 16, 4, 2, 1),
    ] {
        let kshape: Vec<usize> = if shape.len() == 5 {
            vec![shape[1], c_out, 1, k, k]
        } else {
            vec![shape[1], c_out, k, k]
        };
        let p = ConvParams::new(stride, pad);
        let mut case = OpCase::new(
            "conv_transpose2d",
            format!("{k}x{k} s{stride} p{pad}"),
            vec![normal(shape), normal(&kshape), normal(&[c_out])],
            move |x, _| x[0].conv_transpose2d(&x[1], Some(&x[2]), p),
        )
        .tol_f32(1e-4);
        if k == stride && pad == 0 && shape.len() == 4 {
            case = case.composed(1e-5, |x, _| {
                kernel_is_stride_as_linear(&x[0], &x[1], Some(&x[2]))
            });
        }
        cases.push(case);
    }
    // conv3d: (input, c_out, kernel, stride, pad)
    type Conv3 = (&'static [usize], usize, [usize; 3], usize, [usize; 3]);
    let convs3: [Conv3; 6] = [
        (&[1, 3, 5, 6, 7], 4, [3, 3, 3], 1, [1, 1, 1]),
        (&[2, 2, 4, 5, 3], 3, [3, 3, 3], 2, [1, 1, 1]),
        (&[1, 3, 3, 18, 17], 4, [1, 3, 3], 1, [0, 1, 1]),
        (&[2, 4, 3, 5, 6], 5, [1, 1, 1], 1, [0, 0, 0]),
        (&[1, 2, 5, 7, 6], 3, [2, 3, 1], 1, [0, 1, 0]),
        (&[1, 8, 16, 32, 32], 8, [3, 3, 3], 1, [1, 1, 1]),
    ];
    for (shape, c_out, kernel, stride, pad) in convs3 {
        let p = Conv3dParams {
            stride: (stride, stride, stride),
            pad: (pad[0], pad[1], pad[2]),
        };
        let mut case = OpCase::new(
            "conv3d",
            format!("k{kernel:?} s{stride} p{pad:?}"),
            vec![
                normal(shape),
                normal(&[c_out, shape[1], kernel[0], kernel[1], kernel[2]]),
                normal(&[c_out]),
            ],
            move |x, _| x[0].conv3d(&x[1], Some(&x[2]), p),
        )
        .tol_f32(1e-4);
        if kernel == [1, 1, 1] {
            case = case.composed(1e-5, |x, _| pointwise_as_linear(&x[0], &x[1], Some(&x[2])));
        } else if kernel[0] == 1 && stride == 1 && pad[0] == 0 {
            // A depth-1 kernel is the per-frame 2-D convolution.
            let p2 = ConvParams {
                stride: (1, 1),
                pad: (pad[1], pad[2]),
            };
            case = case.composed(1e-5, move |x, _| x[0].conv2d(&x[1], Some(&x[2]), p2));
        } else if stride == 1 {
            // Sum over depth taps of per-frame 2-D convolutions of the
            // depth-padded input.
            let p2 = ConvParams {
                stride: (1, 1),
                pad: (pad[1], pad[2]),
            };
            let (kd, pd) = (kernel[0], pad[0]);
            case = case.composed(1e-5, move |x, _| {
                let xp = if pd > 0 {
                    zero_pad(&x[0], 2, pd)?
                } else {
                    x[0].clone()
                };
                let d_out = xp.dims()[2] + 1 - kd;
                let mut sum: Option<Tensor> = None;
                for t in 0..kd {
                    let y = xp
                        .narrow(2, t, d_out)?
                        .conv2d(&x[1].narrow(2, t, 1)?, None, p2)?;
                    sum = Some(match sum {
                        Some(s) => s.add(&y)?,
                        None => y,
                    });
                }
                let sum = sum.expect("kd ≥ 1");
                sum.add(&bias_view(&x[2], 5)?)
            });
        }
        cases.push(case);
    }
    // conv_transpose3d: (input, c_out, kernel, stride, pad)
    type Convt3 = (&'static [usize], usize, [usize; 3], [usize; 3], usize);
    let convts3: [Convt3; 5] = [
        (&[1, 4, 3, 4, 5], 3, [2, 2, 2], [2, 2, 2], 0),
        (&[2, 3, 2, 5, 3], 2, [1, 2, 2], [1, 2, 2], 0),
        (&[1, 3, 3, 4, 5], 2, [3, 3, 3], [2, 2, 2], 1),
        (&[1, 2, 3, 3, 4], 3, [3, 3, 3], [1, 1, 1], 1),
        (&[1, 16, 8, 16, 16], 8, [2, 2, 2], [2, 2, 2], 0),
    ];
    for (shape, c_out, kernel, stride, pad) in convts3 {
        let p = Conv3dParams {
            stride: (stride[0], stride[1], stride[2]),
            pad: (pad, pad, pad),
        };
        let mut case = OpCase::new(
            "conv_transpose3d",
            format!("k{kernel:?} s{stride:?} p{pad}"),
            vec![
                normal(shape),
                normal(&[shape[1], c_out, kernel[0], kernel[1], kernel[2]]),
                normal(&[c_out]),
            ],
            move |x, _| x[0].conv_transpose3d(&x[1], Some(&x[2]), p),
        )
        .tol_f32(1e-4);
        if kernel == stride && pad == 0 {
            case = case.composed(1e-5, |x, _| {
                kernel_is_stride_as_linear(&x[0], &x[1], Some(&x[2]))
            });
        }
        cases.push(case);
    }
}

fn attention_cases(cases: &mut Vec<OpCase>) {
    // linear_attention: (B, heads, d, F, H, W)
    for (b, heads, d, f, h, w) in [
        (2usize, 2usize, 4usize, 2usize, 5usize, 6usize),
        (1, 1, 3, 1, 7, 3),
        (1, 4, 32, 1, 32, 32),
    ] {
        cases.push(
            OpCase::new(
                "linear_attention",
                format!("{heads} heads of {d}"),
                vec![normal(&[b, 3 * heads * d, f, h, w])],
                move |x, _| x[0].linear_attention(heads),
            )
            .composed(1e-5, move |x, _| {
                linear_attention_composed(&x[0], b, heads, d, f, h * w)?.reshape(&[
                    b,
                    heads * d,
                    f,
                    h,
                    w,
                ])
            })
            .tol_f32(1e-4),
        );
    }
    // attention: (G, T, d, heads, bias)
    for (g, t, d, heads, bias) in [
        (6usize, 7usize, 8usize, 3usize, true),
        (4, 5, 3, 2, false),
        (16, 64, 32, 4, true),
    ] {
        let mut inputs = vec![normal(&[g, t, d]), normal(&[g, t, d]), normal(&[g, t, d])];
        if bias {
            inputs.push(normal(&[heads, t, t]));
        }
        cases.push(
            OpCase::new(
                "attention",
                format!("{heads} heads{}", if bias { " + bias" } else { "" }),
                inputs,
                move |x, _| Tensor::attention(&x[0], &x[1], &x[2], heads, x.get(3)),
            )
            .composed(1e-5, move |x, _| host_attention(x, heads))
            .tol_f32(1e-4),
        );
    }
    for (g, t, d) in [(6usize, 7usize, 8usize), (3, 5, 2), (8, 64, 32)] {
        cases.push(
            OpCase::new(
                "rotary",
                "interleaved",
                vec![
                    normal(&[g, t, d]),
                    Input::with(&[d / 2], Dist::Uniform { lo: 0.01, hi: 1.0 }),
                ],
                |x, _| x[0].rotary(&x[1]),
            )
            .composed(1e-6, |x, _| {
                let (t, d) = (x[0].dims()[1], x[0].dims()[2]);
                let (v, fr) = (x[0].to_vec()?, x[1].to_vec()?);
                let mut out = v.clone();
                for (i, pair) in out.chunks_mut(2).enumerate() {
                    let (p, j) = ((i * 2 / d) % t, (i * 2 % d) / 2);
                    let (s, c) = ((p as f32) * fr[j]).sin_cos();
                    let (a, b) = (f64::from(pair[0]), f64::from(pair[1]));
                    let (s, c) = (f64::from(s), f64::from(c));
                    pair[0] = (a * c - b * s) as f32;
                    pair[1] = (b * c + a * s) as f32;
                }
                host(out, x[0].dims())
            }),
        );
    }
    for (t, dim) in [
        (vec![0.0f32, 1.0, 17.0, 999.5], 8usize),
        (vec![3.0, 250.0, 511.0], 6),
        ((0..32).map(|i| i as f32 * 31.0).collect(), 128),
    ] {
        let (a, b) = (t.clone(), t.clone());
        cases.push(
            OpCase::new(
                "sinusoidal_embedding",
                format!("dim {dim}"),
                vec![],
                move |_, target| {
                    Tensor::sinusoidal_embedding_on(&a, dim, &target.device, target.dtype)
                },
            )
            // f32 arguments of up to 1000 rad, as the reference forms them,
            // against f64 ones: ~1e-4 apart.
            .tol_f32(1e-4)
            .composed(1e-3, move |_, _| {
                let half = dim / 2;
                let e = 10000f64.ln() / (half as f64 - 1.0);
                let mut out = Vec::new();
                for &tv in &b {
                    let args: Vec<f64> = (0..half)
                        .map(|i| f64::from(tv) * (-(i as f64) * e).exp())
                        .collect();
                    out.extend(args.iter().map(|a| a.sin() as f32));
                    out.extend(args.iter().map(|a| a.cos() as f32));
                }
                host(out, &[b.len(), dim])
            })
            .shape(format!("t {} dim {dim}", t.len())),
        );
    }
}

/// The denoiser's linear attention from softmaxes and linear layers, per
/// sample, frame and head: `qkv` is `[B, 3·heads·d, F, N]`, the result
/// `[B, heads·d, F, N]`.
fn linear_attention_composed(
    qkv: &Tensor,
    b: usize,
    heads: usize,
    d: usize,
    f: usize,
    n: usize,
) -> Result<Tensor> {
    let x = qkv.reshape(&[b, 3, heads, d, f, n])?;
    let scale = (d as f32).powf(-0.5);
    let mut samples = Vec::with_capacity(b);
    for bi in 0..b {
        let mut hs = Vec::with_capacity(heads);
        for h in 0..heads {
            let mut frames = Vec::with_capacity(f);
            for fi in 0..f {
                let part = |p: usize| -> Result<Tensor> {
                    x.narrow(0, bi, 1)?
                        .narrow(1, p, 1)?
                        .narrow(2, h, 1)?
                        .narrow(4, fi, 1)?
                        .reshape(&[d, n])
                };
                let q = part(0)?.softmax(0)?.affine(scale, 0.0)?; // [d, n]
                let k = part(1)?.softmax(1)?; // [d, n]
                let v = part(2)?; // [d, n]
                let context = k.linear(&v, None)?; // [d_k, d_v]
                                                   // out[e, i] = Σ_c context[c, e]·q[c, i]
                let out = q
                    .permute(&[1, 0])?
                    .linear(&context.permute(&[1, 0])?, None)?
                    .permute(&[1, 0])?; // [d_v, n]
                frames.push(out.reshape(&[d, 1, n])?);
            }
            hs.push(Tensor::cat(&frames.iter().collect::<Vec<_>>(), 1)?);
        }
        samples.push(Tensor::cat(&hs.iter().collect::<Vec<_>>(), 0)?.reshape(&[
            1,
            heads * d,
            f,
            n,
        ])?);
    }
    Tensor::cat(&samples.iter().collect::<Vec<_>>(), 0)
}

/// `softmax(q·kᵀ + bias)·v` per group on the host, in f64.
fn host_attention(x: &[Tensor], heads: usize) -> Result<Tensor> {
    let (g, t, d) = (x[0].dims()[0], x[0].dims()[1], x[0].dims()[2]);
    let (q, k, v) = (x[0].to_vec()?, x[1].to_vec()?, x[2].to_vec()?);
    let bias = x.get(3).map(Tensor::to_vec).transpose()?;
    let mut out = vec![0f32; g * t * d];
    for gi in 0..g {
        let base = gi * t * d;
        for i in 0..t {
            let logits: Vec<f64> = (0..t)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|c| f64::from(q[base + i * d + c]) * f64::from(k[base + j * d + c]))
                        .sum();
                    dot + bias
                        .as_ref()
                        .map_or(0.0, |b| f64::from(b[((gi % heads) * t + i) * t + j]))
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..d {
                let acc: f64 = (0..t).map(|j| e[j] * f64::from(v[base + j * d + c])).sum();
                out[base + i * d + c] = (acc / s) as f32;
            }
        }
    }
    host(out, &[g, t, d])
}

fn sampler_cases(cases: &mut Vec<OpCase>) {
    let blend = KnownBlend {
        sqrt_alpha_bar: 0.8,
        sqrt_one_minus_alpha_bar: 0.6,
    };
    for (shape, dist) in [
        (&[2usize, 3, 5, 7][..], Dist::Mask),
        (&[2, 3, 5, 7], Dist::Uniform { lo: 0.01, hi: 1.0 }),
        (&[4, 1, 8, 64, 64], Dist::Mask),
    ] {
        cases.push(
            OpCase::new(
                "known_blend",
                if dist == Dist::Mask {
                    "binary mask"
                } else {
                    "soft mask"
                },
                vec![
                    normal(shape).f32_state(),
                    normal(shape).f32_state(),
                    Input::with(shape, dist).f32_state(),
                    normal(shape).f32_state(),
                ],
                move |x, _| x[0].known_blend(&x[1], &x[2], &x[3], blend),
            )
            .composed(1e-6, move |x, _| {
                let noised = x[1]
                    .affine(blend.sqrt_alpha_bar, 0.0)?
                    .add(&x[3].affine(blend.sqrt_one_minus_alpha_bar, 0.0)?)?;
                x[2].mul(&noised)?.add(&x[2].affine(-1.0, 1.0)?.mul(&x[0])?)
            }),
        );
    }
    let steps = [
        AncestralStep {
            sqrt_recip_alpha_bar: 1.3,
            sqrt_recip_m1_alpha_bar: 0.8,
            coef_x0: 0.3,
            coef_xt: 0.65,
            sigma: 0.2,
        },
        AncestralStep {
            sqrt_recip_alpha_bar: 1.0,
            sqrt_recip_m1_alpha_bar: 0.05,
            coef_x0: 1.0,
            coef_xt: 0.0,
            sigma: 0.0,
        },
    ];
    for (shape, p, std) in [
        (&[2usize, 3, 5, 7][..], steps[0], 0.5),
        (&[2, 3, 5, 7], steps[0], 2.0),
        (&[3, 5, 7], steps[1], 1.0),
        (&[4, 1, 8, 64, 64], steps[0], 1.0),
    ] {
        cases.push(
            OpCase::new(
                "ancestral_step",
                format!(
                    "σ {}{}",
                    p.sigma,
                    if std > 1.0 { ", clamped x₀" } else { "" }
                ),
                vec![
                    Input::with(shape, Dist::Normal { mean: 0.0, std }).f32_state(),
                    normal(shape).f32_state(),
                    normal(shape).f32_state(),
                ],
                move |x, _| x[0].ancestral_step(&x[1], &x[2], p),
            )
            .composed(1e-6, move |x, _| {
                let x0 = x[0]
                    .affine(p.sqrt_recip_alpha_bar, 0.0)?
                    .sub(&x[1].affine(p.sqrt_recip_m1_alpha_bar, 0.0)?)?
                    .binary(&scalar(-1.0)?, BinaryOp::Max)?
                    .binary(&scalar(1.0)?, BinaryOp::Min)?;
                x0.affine(p.coef_x0, 0.0)?
                    .add(&x[0].affine(p.coef_xt, 0.0)?)?
                    .add(&x[2].affine(p.sigma, 0.0)?)
            }),
        );
    }
    let key = NoiseKey {
        seed: 42,
        stream: 1,
        step: 7,
    };
    for (items, per) in [
        (vec![0u32, 5, 2], vec![3usize, 5, 7]),
        (vec![9], vec![1, 8, 8]),
        (vec![4, 5, 6, 7], vec![1, 8, 64, 64]),
    ] {
        let mut shape = vec![items.len()];
        shape.extend(&per);
        let (a, s) = (items.clone(), shape.clone());
        let mut case = OpCase::new(
            "normal_noise",
            format!("items {items:?}"),
            vec![],
            move |_, t| Tensor::normal_noise(key, &a, &s, &t.device, t.dtype),
        )
        .shape(format!("{shape:?}"));
        if let Some(pos) = items.iter().position(|&i| i == 5) {
            // Batching invariance: item 5 in a batch is item 5 alone.
            let (a, s) = (items.clone(), shape.clone());
            case = OpCase::new(
                "normal_noise",
                format!("item 5 of {items:?}"),
                vec![],
                move |_, t| {
                    Tensor::normal_noise(key, &a, &s, &t.device, t.dtype)?.narrow(0, pos, 1)
                },
            )
            .composed(0.0, move |_, t| {
                let mut one = per.clone();
                one.insert(0, 1);
                Tensor::normal_noise(key, &[5], &one, &t.device, t.dtype)
            })
            .shape(format!("{shape:?}"));
        }
        cases.push(case);
    }
}

/// nnU-Net's window sums (against its window-by-window loop on the host)
/// and the argmax (against a host loop).
/// The update of [`OptimizerStep`] written as unfused engine ops, each
/// rounded once in the fused op's order: the parameter and the new state,
/// flattened and joined. `x` is `[p, g, state…]`.
fn optimizer_by_ops(x: &[Tensor], s: &OptimizerStep) -> Result<Tensor> {
    let [f0, f1] = s.grad_factors;
    let mut grad = x[1].affine(f0, 0.0)?.affine(f1, 0.0)?;
    let mut p = x[0].clone();
    let mut parts = Vec::new();
    match s.rule {
        OptimizerRule::Adam {
            beta1,
            beta2,
            eps,
            decoupled,
        } => {
            let [step_size, bias2_sqrt] = s.adam_scalars(beta1, beta2);
            if decoupled {
                p = p.affine(1.0 - s.lr * s.weight_decay, 0.0)?;
            } else if s.weight_decay != 0.0 {
                grad = grad.add(&p.affine(s.weight_decay, 0.0)?)?;
            }
            let m = x[2].add(&grad.sub(&x[2])?.affine(1.0 - beta1, 0.0)?)?;
            let v = x[3]
                .affine(beta2, 0.0)?
                .add(&grad.affine(1.0 - beta2, 0.0)?.mul(&grad)?)?;
            let denom = v
                .unary(UnaryOp::Sqrt)?
                .div(&scalar(bias2_sqrt)?)?
                .affine(1.0, eps)?;
            p = p.sub(&m.div(&denom)?.affine(step_size, 0.0)?)?;
            parts.extend([m, v]);
        }
        OptimizerRule::Sgd { momentum, nesterov } => {
            if s.weight_decay != 0.0 {
                grad = grad.add(&p.affine(s.weight_decay, 0.0)?)?;
            }
            let mut buf = x[2].clone();
            if momentum != 0.0 {
                buf = if s.step == 1 {
                    grad.clone()
                } else {
                    buf.affine(momentum, 0.0)?.add(&grad)?
                };
                grad = if nesterov {
                    grad.add(&buf.affine(momentum, 0.0)?)?
                } else {
                    buf.clone()
                };
            }
            p = p.sub(&grad.affine(s.lr, 0.0)?)?;
            parts.push(buf);
        }
    }
    let mut all = vec![p];
    all.extend(parts);
    let refs: Vec<&Tensor> = all.iter().collect();
    Tensor::cat(&refs, 0)
}

fn optimizer_cases(cases: &mut Vec<OpCase>) {
    let adam = |decoupled| OptimizerRule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        decoupled,
    };
    let sgd = |momentum, nesterov| OptimizerRule::Sgd { momentum, nesterov };
    for (rule, step, weight_decay) in [
        (adam(false), 1, 0.01),
        (adam(false), 7, 0.0),
        (adam(true), 3, 0.05),
        (sgd(0.99, true), 1, 3e-5),
        (sgd(0.99, true), 4, 3e-5),
        (sgd(0.9, false), 2, 0.0),
        (sgd(0.0, false), 5, 0.01),
    ] {
        let s = OptimizerStep {
            rule,
            lr: 1e-3,
            weight_decay,
            step,
            grad_factors: [1.0 / 4096.0, 0.75],
        };
        let n = 5000;
        let mut inputs = vec![
            normal(&[n]).f32_state(),
            Input::with(
                &[n],
                Dist::Normal {
                    mean: 0.0,
                    std: 300.0,
                },
            )
            .f32_state(),
        ];
        for b in 0..rule.state_buffers() {
            // Adam's second moment is a mean of squares: positive.
            inputs.push(if b == 1 {
                Input::with(&[n], Dist::Uniform { lo: 1e-6, hi: 1e-2 }).f32_state()
            } else {
                Input::with(
                    &[n],
                    Dist::Normal {
                        mean: 0.0,
                        std: 0.01,
                    },
                )
                .f32_state()
            });
        }
        cases.push(
            OpCase::new(
                "optimizer_update",
                format!("{rule:?}, step {step}, wd {weight_decay}"),
                inputs,
                move |x, _| {
                    let state: Vec<&Tensor> = x[2..].iter().collect();
                    let (p, new_state) = x[0].optimizer_update(&x[1], &state, &s)?;
                    let mut all = vec![p];
                    all.extend(new_state);
                    let refs: Vec<&Tensor> = all.iter().collect();
                    Tensor::cat(&refs, 0)
                },
            )
            .composed(0.0, move |x, _| optimizer_by_ops(x, &s))
            .tol_f32(0.0),
        );
    }
}

fn sliding_cases(cases: &mut Vec<OpCase>) {
    type Layout = (&'static str, usize, [usize; 3], [usize; 3], Vec<[usize; 3]>);
    let layouts: [Layout; 2] = [
        (
            "2-D slices",
            3,
            [2, 20, 18],
            [1, 12, 12],
            vec![[0, 0, 0], [0, 0, 6], [0, 8, 0], [0, 8, 6], [1, 0, 6]],
        ),
        (
            "overlapping 3-D windows",
            2,
            [7, 9, 8],
            [4, 6, 5],
            vec![[0, 0, 0], [3, 0, 3], [0, 3, 0], [3, 3, 3], [1, 1, 1]],
        ),
    ];
    for (name, classes, grid, extent, starts) in layouts {
        let mut pred_shape = vec![starts.len(), classes];
        pred_shape.extend_from_slice(&extent);
        let mut sum_shape = vec![classes];
        sum_shape.extend_from_slice(&grid);
        let run_starts = starts.clone();
        cases.push(
            OpCase::new(
                "accumulate_windows",
                name,
                vec![
                    normal(&pred_shape),
                    Input::with(
                        &sum_shape,
                        Dist::Normal {
                            mean: 0.0,
                            std: 4.0,
                        },
                    ),
                    Input::with(&extent, Dist::Uniform { lo: 0.01, hi: 10.0 }),
                ],
                move |x, _| x[0].accumulate_windows(&x[1], &x[2], &run_starts),
            )
            .composed(1e-7, move |x, _| {
                let (pred, gaussian) = (x[0].to_vec()?, x[2].to_vec()?);
                let mut sum = x[1].to_vec()?;
                let [ez, ey, ex] = extent;
                let voxels: usize = grid.iter().product();
                for (w, st) in starts.iter().enumerate() {
                    for i in 0..classes * ez * ey * ex {
                        let (c, off) = (i / (ez * ey * ex), i % (ez * ey * ex));
                        let (oz, oy, ox) = (off / (ey * ex), (off / ex) % ey, off % ex);
                        let at = ((st[0] + oz) * grid[1] + st[1] + oy) * grid[2] + st[2] + ox;
                        let v = &mut sum[c * voxels + at];
                        let product = pred[(w * classes + c) * ez * ey * ex + off] * gaussian[off];
                        *v = half::f16::from_f32(*v + product).to_f32();
                    }
                }
                host(sum, x[1].dims())
            }),
        );
    }
    for (shape, dim) in [(&[3usize, 5, 7][..], 1usize), (&[4, 2, 16, 16], 0)] {
        cases.push(
            OpCase::new(
                "argmax",
                format!("dim {dim}"),
                vec![normal(shape)],
                move |x, _| x[0].argmax(dim),
            )
            .composed(0.0, move |x, _| {
                let v = x[0].to_vec()?;
                let d = x[0].dims();
                let (size, inner) = (d[dim], d[dim + 1..].iter().product::<usize>());
                let outer = v.len() / (size * inner);
                let mut labels = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for j in 0..inner {
                        let at = |c: usize| v[(o * size + c) * inner + j];
                        let best = (1..size).fold(0, |b, c| if at(c) > at(b) { c } else { b });
                        labels.push(best as f32);
                    }
                }
                let mut out_shape = d.to_vec();
                out_shape.remove(dim);
                host(labels, &out_shape)
            }),
        );
    }
}

/// The gradient `f(x)` passes back to `x` for the output gradient `g`.
fn input_gradient(x: &Tensor, g: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let v = x.variable();
    let grads = f(&v)?.backward_with(g)?;
    grads
        .get(&v)
        .cloned()
        .ok_or_else(|| Error::Internal("the op passed no gradient to its input".into()))
}

/// The backward kernels of training: each activation's and softmax's
/// gradient through autograd (against their derivatives on the host), and
/// the sums behind bias and broadcast gradients.
fn backward_cases(cases: &mut Vec<OpCase>) {
    type Slope = fn(f64) -> f64;
    let slopes: [(UnaryOp, Slope); 4] = [
        (UnaryOp::Silu, |x| {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }),
        (UnaryOp::Gelu, |x| {
            0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
                + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }),
        (
            UnaryOp::LeakyRelu(0.01),
            |x| if x >= 0.0 { 1.0 } else { 0.01 },
        ),
        // sgn, 0 at 0 (f64::signum gives ±1 there).
        (UnaryOp::Abs, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }),
    ];
    for (op, slope) in slopes {
        for shape in [&[3usize, 5, 7][..], &[2, 8, 64, 64]] {
            cases.push(
                OpCase::new(
                    "unary_backward",
                    format!("{op:?}").to_lowercase(),
                    vec![
                        Input::with(
                            shape,
                            Dist::Normal {
                                mean: 0.0,
                                std: 2.0,
                            },
                        ),
                        normal(shape),
                    ],
                    move |x, _| input_gradient(&x[0], &x[1], |v| v.unary(op)),
                )
                .composed(1e-6, move |x, _| {
                    let (v, g) = (x[0].to_vec()?, x[1].to_vec()?);
                    let dx = v.iter().zip(&g);
                    host(
                        dx.map(|(&a, &b)| (slope(f64::from(a)) * f64::from(b)) as f32)
                            .collect(),
                        x[0].dims(),
                    )
                }),
            );
        }
    }
    let softmaxes: [(&[usize], usize, f32); 4] = [
        (&[3, 5, 7], 1, 1.0),
        (&[3, 5, 7], 2, 1.0),
        (&[64, 1000], 1, 4.0),
        (&[2, 3, 4096], 1, 2.0),
    ];
    for (shape, dim, std) in softmaxes {
        cases.push(
            OpCase::new(
                "softmax_backward",
                format!("dim {dim}"),
                vec![
                    Input::with(shape, Dist::Normal { mean: 0.0, std }),
                    normal(shape),
                ],
                move |x, _| input_gradient(&x[0], &x[1], |v| v.softmax(dim)),
            )
            .composed(1e-6, move |x, _| {
                let (y, g) = (host_softmax(&x[0], dim)?.to_vec()?, x[1].to_vec()?);
                let (size, inner) = (shape[dim], shape[dim + 1..].iter().product::<usize>());
                let mut dx = vec![0f32; y.len()];
                for o in 0..y.len() / (size * inner) {
                    for i in 0..inner {
                        let at = |k: usize| (o * size + k) * inner + i;
                        let dot: f64 = (0..size)
                            .map(|k| f64::from(y[at(k)]) * f64::from(g[at(k)]))
                            .sum();
                        for k in 0..size {
                            dx[at(k)] = (f64::from(y[at(k)]) * (f64::from(g[at(k)]) - dot)) as f32;
                        }
                    }
                }
                host(dx, shape)
            }),
        );
    }
    let sums: [(&[usize], usize); 5] = [
        (&[3, 5, 7], 0),
        (&[3, 5, 7], 1),
        (&[3, 5, 7], 2),
        (&[5000, 64], 0),
        (&[2, 16, 32, 32], 3),
    ];
    for (shape, dim) in sums {
        cases.push(
            OpCase::new(
                "sum",
                format!("dim {dim}"),
                vec![normal(shape)],
                move |x, _| x[0].sum_keepdim(dim),
            )
            .composed(1e-7, move |x, _| {
                let v = x[0].to_vec()?;
                let (size, inner) = (shape[dim], shape[dim + 1..].iter().product::<usize>());
                let outer = v.len() / (size * inner);
                let mut out = vec![0f32; outer * inner];
                for o in 0..outer {
                    for i in 0..inner {
                        let s: f64 = (0..size)
                            .map(|k| f64::from(v[(o * size + k) * inner + i]))
                            .sum();
                        out[o * inner + i] = s as f32;
                    }
                }
                let mut out_shape = shape.to_vec();
                out_shape[dim] = 1;
                host(out, &out_shape)
            }),
        );
    }
}

/// `dW[o, c, kz, ky, kx] = Σ gy[b, o, z, y, x]·x[b, c, z·s − p + kz, …]`
/// in f64 from the definition: the weight gradient of a forward
/// convolution of `x` (`[B, C, D, H, W]`) whose output gradient is `gy`
/// (`[B, O, Do, Ho, Wo]`).
fn direct_weight_grad(
    x: &[f32],
    [b, c, d, h, w]: [usize; 5],
    gy: &[f32],
    [o, fo, ho, wo]: [usize; 4],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
) -> Vec<f32> {
    let taps = k[0] * k[1] * k[2];
    let mut dw = vec![0f32; o * c * taps];
    let tap_of = |t: usize| (t / (k[1] * k[2]), t / k[2] % k[1], t % k[2]);
    let source = |out: usize, tap: usize, axis: usize, size: usize| {
        (out * s[axis] + tap)
            .checked_sub(p[axis])
            .filter(|&i| i < size)
    };
    for (i, v) in dw.iter_mut().enumerate() {
        let (oc, ic, t) = (i / (c * taps), i / taps % c, i % taps);
        let (kz, ky, kx) = tap_of(t);
        let mut acc = 0f64;
        for bi in 0..b {
            for z in 0..fo {
                let Some(iz) = source(z, kz, 0, d) else {
                    continue;
                };
                for y in 0..ho {
                    let Some(iy) = source(y, ky, 1, h) else {
                        continue;
                    };
                    for xo in 0..wo {
                        let Some(ix) = source(xo, kx, 2, w) else {
                            continue;
                        };
                        let g = gy[(((bi * o + oc) * fo + z) * ho + y) * wo + xo];
                        let xv = x[(((bi * c + ic) * d + iz) * h + iy) * w + ix];
                        acc += f64::from(g) * f64::from(xv);
                    }
                }
            }
        }
        *v = acc as f32;
    }
    dw
}

/// The convolutions' weight gradients through autograd (the op each
/// device implements with its own kernel: the CPU's columns, CUDA's
/// split-K implicit GEMM), against the definition in f64; transposed
/// convolutions through the definition with input and output gradient
/// exchanged.
fn weight_grad_cases(cases: &mut Vec<OpCase>) {
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        PerFrame,
        Full,
        Transposed2d,
        Transposed3d,
    }
    // (kind, input [B, C, D, H, W], C_out, kernel, stride, pad, output [D, H, W], path)
    type WeightGrad = (
        Kind,
        [usize; 5],
        usize,
        [usize; 3],
        [usize; 3],
        [usize; 3],
        [usize; 3],
        &'static str,
    );
    let grads: [WeightGrad; 9] = [
        (
            Kind::PerFrame,
            [2, 3, 2, 9, 11],
            4,
            [1, 3, 3],
            [1, 1, 1],
            [0, 1, 1],
            [2, 9, 11],
            "3x3 s1",
        ),
        (
            Kind::PerFrame,
            [2, 4, 1, 9, 10],
            5,
            [1, 3, 3],
            [1, 2, 2],
            [0, 1, 1],
            [1, 5, 5],
            "3x3 s2 (odd sizes)",
        ),
        (
            Kind::PerFrame,
            [4, 1, 1, 64, 64],
            32,
            [1, 3, 3],
            [1, 1, 1],
            [0, 1, 1],
            [1, 64, 64],
            "3x3 one input channel, 2^14 positions (split K)",
        ),
        (
            Kind::PerFrame,
            [2, 64, 1, 16, 16],
            32,
            [1, 1, 1],
            [1, 1, 1],
            [0, 0, 0],
            [1, 16, 16],
            "1x1 64 channels",
        ),
        (
            Kind::Full,
            [2, 3, 5, 6, 7],
            4,
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
            [5, 6, 7],
            "3x3x3 s1",
        ),
        (
            Kind::Full,
            [1, 4, 7, 8, 9],
            6,
            [3, 3, 3],
            [2, 2, 2],
            [1, 1, 1],
            [4, 4, 5],
            "3x3x3 s2 (odd sizes)",
        ),
        (
            Kind::Full,
            [2, 16, 8, 16, 16],
            64,
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
            [8, 16, 16],
            "3x3x3 16 to 64 channels (several tiles)",
        ),
        (
            Kind::Transposed2d,
            [2, 4, 2, 5, 5],
            3,
            [1, 4, 4],
            [1, 2, 2],
            [0, 1, 1],
            [2, 10, 10],
            "transposed 4x4 s2 p1",
        ),
        (
            Kind::Transposed3d,
            [1, 4, 3, 4, 5],
            3,
            [2, 2, 2],
            [2, 2, 2],
            [0, 0, 0],
            [6, 8, 10],
            "transposed 2x2x2 s2",
        ),
    ];
    for (kind, x_shape, c_out, k, s, p, out, path) in grads {
        let [b, c, ..] = x_shape;
        let transposed = matches!(kind, Kind::Transposed2d | Kind::Transposed3d);
        let w_shape = if transposed {
            [c, c_out, k[0], k[1], k[2]]
        } else {
            [c_out, c, k[0], k[1], k[2]]
        };
        let gy_shape = [b, c_out, out[0], out[1], out[2]];
        let p2 = ConvParams {
            stride: (s[1], s[2]),
            pad: (p[1], p[2]),
        };
        let p3 = Conv3dParams {
            stride: (s[0], s[1], s[2]),
            pad: (p[0], p[1], p[2]),
        };
        cases.push(
            OpCase::new(
                "conv_weight_grad",
                path,
                vec![normal(&x_shape), normal(&w_shape), normal(&gy_shape)],
                move |t, _| {
                    let x = &t[0];
                    input_gradient(&t[1], &t[2], |w| match kind {
                        Kind::PerFrame => x.conv2d(w, None, p2),
                        Kind::Full => x.conv3d(w, None, p3),
                        Kind::Transposed2d => x.conv_transpose2d(w, None, p2),
                        Kind::Transposed3d => x.conv_transpose3d(w, None, p3),
                    })
                },
            )
            .composed(1e-5, move |t, _| {
                let (x, gy) = (t[0].to_vec()?, t[2].to_vec()?);
                let [_, _, d, h, w] = x_shape;
                let dw = if transposed {
                    // The forward convolution from the output back to the
                    // input: its input is gy, its output gradient x.
                    direct_weight_grad(&gy, gy_shape, &x, [c, d, h, w], k, s, p)
                } else {
                    direct_weight_grad(&x, x_shape, &gy, [c_out, out[0], out[1], out[2]], k, s, p)
                };
                host(dw, &w_shape)
            })
            .tol_f32(1e-4),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool hands a poisoned buffer to the next output of that size.
    #[test]
    fn cpu_poison_reaches_the_next_output() {
        let len = (1 << 14) * 3 + 7;
        poison_outputs(&Target::cpu(), len);
        let buf = output_buffer(len);
        assert!(buf.iter().all(|v| v.is_nan()));
        recycle(buf);
    }

    /// A kernel that skips an element is caught through the poison.
    #[test]
    fn an_unwritten_element_fails() {
        let len = (1 << 14) * 2 + 3;
        // The first call (the reference) is right, later ones skip.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let mut case = OpCase::new("test", "skips one", vec![normal(&[len])], move |x, _| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                // Forgets the last element of a pooled output.
                let mut out = output_buffer(x[0].elem_count());
                let n = out.len();
                let v = x[0].to_vec()?;
                out[..n - 1].copy_from_slice(&v[..n - 1]);
                Tensor::from_vec(out, x[0].dims())
            } else {
                Ok(x[0].clone())
            }
        });
        case.seed = 5;
        let report = run_case(&case, &Target::cpu(), &RunOptions { timing_runs: 0 });
        assert!(report.failed(), "{report:?}");
        assert!(format!("{:?}", report.outcome).contains("non-finite"));
    }

    #[test]
    fn inputs_are_seeded_and_never_zero() {
        for dist in [
            Dist::Normal {
                mean: 0.0,
                std: 1.0,
            },
            Dist::Uniform { lo: 0.5, hi: 1.0 },
            Dist::AwayFromZero { lo: 0.25, hi: 4.0 },
        ] {
            let input = Input::with(&[100], dist);
            let v = input.generate(3);
            assert_eq!(v, input.generate(3));
            assert!(v.iter().all(|&x| x != 0.0 && x.is_finite()));
        }
        let m = Input::with(&[100], Dist::Mask).generate(1);
        assert!(m.iter().all(|&x| x == 0.0 || x == 1.0));
        assert_eq!(round_to(&[1.0 / 3.0], DType::F16), vec![0.333_251_95]);
    }
}

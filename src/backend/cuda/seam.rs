//! The CUDA back-end's side of the [`BackendStorage`] seam: every op checks
//! its operands (device, element type, lengths — a kernel indexes by the
//! sizes it is given, so a short buffer must never reach one), allocates
//! its output from the handle's pool and launches the kernels of
//! [`super::kernels`].
//!
//! Element types: the network ops (norms, GEMM-backed products) take F16
//! storages; element-wise, layout, softmax and embedding ops take F16 or
//! F32; the sampler ops (RePaint blend and step) take F32; noise is drawn
//! in F32 (and narrowed when F16 is asked for). The sliding-window sum is
//! F16 (it stands for nnU-Net's half-precision buffers); argmax takes
//! either.

use super::device::CudaDevice;
use super::kernels::{
    self as k, BroadcastArgs, ConvArgs, ConvGeom, GatherArgs, GemmArgs, OptimArgs, WgradArgs,
    MAX_RANK,
};
use super::storage::{Buffer, CudaStorage};
use crate::backend::desc::{
    AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry, ConvGeometry,
    KnownBlend, LinearAttentionDesc, LinearDesc, MatmulDesc, NormDesc, NormOperands, OptimizerRule,
    OptimizerStep, UnaryOp, WindowSumDesc,
};
use crate::backend::{BackendDevice, BackendStorage, NoiseKey};
use crate::nn::DType;
use crate::{Error, Result};

/// Product of sizes, refusing overflow.
fn product(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::OutOfMemory(format!("shape {dims:?} is too large")))
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<i64> {
    let mut st = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1] as i64;
    }
    st
}

fn as_i64(v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::OutOfMemory(format!("size {v} is too large")))
}

/// Merges axes of a strided walk: drops size-1 axes and fuses an axis with
/// the next when every operand's strides make them one axis. `axes` holds
/// `(size, strides…)` outermost first; the result is at least one axis.
fn merge_axes<const N: usize>(axes: &[(usize, [i64; N])]) -> Vec<(usize, [i64; N])> {
    let mut out: Vec<(usize, [i64; N])> = Vec::new();
    for &(size, st) in axes.iter().rev() {
        if size == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            let fusable = (0..N).all(|i| st[i] == last.1[i] * last.0 as i64);
            if fusable {
                last.0 *= size;
                continue;
            }
        }
        out.push((size, st));
    }
    if out.is_empty() {
        out.push((1, [0; N]));
    }
    out.reverse();
    out
}

/// The kernels' `ConvGeom` of `g` with output `[fo, ho, wo]`, or `None`
/// when a size, or one of the per-item `extents` the kernel indexes, does
/// not fit their 32-bit indexing.
fn conv_geom(
    g: &Conv3dGeometry,
    [fo, ho, wo]: [usize; 3],
    transposed: bool,
    extents: &[usize],
) -> Option<ConvGeom> {
    let small = |v: usize| i32::try_from(v).ok();
    if extents.iter().any(|&v| small(v).is_none()) {
        return None;
    }
    let [frames, h, w] = g.input;
    Some(ConvGeom {
        c_in: small(g.c_in)?,
        frames: small(frames)?,
        h: small(h)?,
        w: small(w)?,
        ho: small(ho)?,
        wo: small(wo)?,
        kh: small(g.kernel[1])?,
        kw: small(g.kernel[2])?,
        sh: small(g.stride[1])?,
        sw: small(g.stride[2])?,
        ph: small(g.pad[1])?,
        pw: small(g.pad[2])?,
        transposed: i32::from(transposed),
        fo: small(fo)?,
        kd: small(g.kernel[0])?,
        sd: small(g.stride[0])?,
        pd: small(g.pad[0])?,
    })
}

impl CudaStorage {
    fn is_f16(&self) -> bool {
        self.dtype() == DType::F16
    }

    /// Checks that `other` can be an operand of an op on `self`: same GPU,
    /// same element type, and `len` elements.
    fn check_operand(&self, other: &CudaStorage, op: &str, what: &str, len: usize) -> Result<()> {
        if !self.device().same_gpu(other.device()) {
            return Err(Error::Device(format!(
                "{op}: {what} is on cuda:{}, the input on cuda:{}",
                other.device().ordinal(),
                self.device().ordinal()
            )));
        }
        if other.dtype() != self.dtype() {
            return Err(Error::invalid(format!(
                "{op}: {what} is {:?}, the input {:?}",
                other.dtype(),
                self.dtype()
            )));
        }
        if other.len() != len {
            return Err(Error::invalid(format!(
                "{op}: {what} has {} elements, expected {len}",
                other.len()
            )));
        }
        Ok(())
    }

    /// Checks `self` has `len` elements.
    fn check_len(&self, op: &str, len: usize) -> Result<()> {
        if self.len() != len {
            return Err(Error::invalid(format!(
                "{op}: the input has {} elements, expected {len}",
                self.len()
            )));
        }
        Ok(())
    }

    /// Refuses anything but `dtype`.
    fn require(&self, op: &str, dtype: DType) -> Result<()> {
        if self.dtype() != dtype {
            let why = match dtype {
                DType::F16 => {
                    "its CUDA kernels take F16 storage (load the model with F16 or Auto precision)"
                }
                DType::F32 => "the sampler's state is F32",
            };
            return Err(Error::Unsupported(format!(
                "{op} of {:?} storage on CUDA: {why}",
                self.dtype()
            )));
        }
        Ok(())
    }

    /// An output of `len` elements of this storage's type on its handle.
    fn output(&self, len: usize) -> Result<CudaStorage> {
        CudaStorage::uninit(self.device(), len, self.dtype())
    }

    /// Runs `launch` (which queues work on this storage's stream) after the
    /// work queued so far on the other operands' streams, and makes those
    /// streams wait for it before they reuse their buffers.
    fn ordered<T>(&self, others: &[&CudaStorage], launch: impl FnOnce() -> Result<T>) -> Result<T> {
        let dev = self.device();
        for o in others {
            dev.order_after(o.device())?;
        }
        let result = launch();
        for o in others {
            o.device().order_after(dev)?;
        }
        result
    }

    fn addr_opt(s: Option<&CudaStorage>) -> Result<u64> {
        s.map_or(Ok(0), CudaStorage::address)
    }

    /// The output size `out` of the convolution `g` (a clear error when it
    /// has none) and the elements of one batch item of this input, whose
    /// length is checked.
    fn conv_sizes(
        &self,
        op: &str,
        g: &Conv3dGeometry,
        out: Option<[usize; 3]>,
    ) -> Result<([usize; 3], usize)> {
        let out = out.ok_or_else(|| {
            Error::invalid(format!(
                "{op}: a {:?} kernel with stride {:?} and padding {:?} gives no output for {:?}",
                g.kernel, g.stride, g.pad, g.input
            ))
        })?;
        let item_in = product(&[g.c_in, g.input[0], g.input[1], g.input[2]])?;
        self.check_len(op, product(&[g.batch, item_in])?)?;
        Ok((out, item_in))
    }

    /// `y = W·x_b + bias (+ residual)` per batch item: a 1×1 convolution
    /// as one strided-batched GEMM over the `positions` of each item.
    fn pointwise_conv(
        &self,
        op: &str,
        weight: &CudaStorage,
        bias: Option<&CudaStorage>,
        residual: Option<&CudaStorage>,
        (batch, c_in, c_out, positions): (usize, usize, usize, usize),
    ) -> Result<CudaStorage> {
        self.require(op, DType::F16)?;
        self.check_len(op, product(&[batch, c_in, positions])?)?;
        self.check_operand(weight, op, "the weight", product(&[c_out, c_in])?)?;
        if let Some(b) = bias {
            self.check_operand(b, op, "the bias", c_out)?;
        }
        let out_len = product(&[batch, c_out, positions])?;
        if let Some(r) = residual {
            self.check_operand(r, op, "the residual", out_len)?;
        }
        let out = self.output(out_len)?;
        if out_len == 0 {
            return Ok(out);
        }
        let mut others = vec![weight];
        others.extend(bias);
        others.extend(residual);
        self.ordered(&others, || {
            k::gemm(
                self.device(),
                GemmArgs {
                    a: weight.address()?,
                    b: self.address()?,
                    c: out.address()?,
                    bias: Self::addr_opt(bias)?,
                    residual: Self::addr_opt(residual)?,
                    m: as_i64(c_out)?,
                    n: as_i64(positions)?,
                    k: as_i64(c_in)?,
                    lda: as_i64(c_in)?,
                    ldb: as_i64(positions)?,
                    ldc: as_i64(positions)?,
                    batch: as_i64(batch)?,
                    stride_a: 0,
                    stride_b: as_i64(c_in * positions)?,
                    stride_c: as_i64(c_out * positions)?,
                    trans_a: 0,
                    trans_b: 0,
                    bias_mode: if bias.is_some() { 1 } else { 0 },
                    alpha: 1.0,
                },
            )
        })?;
        Ok(out)
    }

    /// A convolution with a 3-D kernel (forward, or transposed in gather
    /// form with the weight already as `[C_out, C_in, kd, kh, kw]`) as one
    /// implicit GEMM per batch item, bias and residual fused into its
    /// epilogue. The per-frame 2-D convolutions are its depth-1 case.
    fn implicit_conv(
        &self,
        op: &str,
        weight: &CudaStorage,
        bias: Option<&CudaStorage>,
        residual: Option<&CudaStorage>,
        g: &Conv3dGeometry,
        transposed: bool,
    ) -> Result<CudaStorage> {
        self.require(op, DType::F16)?;
        let out_size = if transposed {
            g.transposed_out()
        } else {
            g.conv_out()
        };
        let ([fo, ho, wo], item_in) = self.conv_sizes(op, g, out_size)?;
        let k_len = product(&[g.c_in, g.kernel[0], g.kernel[1], g.kernel[2]])?;
        self.check_operand(weight, op, "the weight", product(&[g.c_out, k_len])?)?;
        if let Some(b) = bias {
            self.check_operand(b, op, "the bias", g.c_out)?;
        }
        let n = product(&[fo, ho, wo])?;
        let item_out = product(&[g.c_out, n])?;
        let out_len = product(&[g.batch, item_out])?;
        if let Some(r) = residual {
            self.check_operand(r, op, "the residual", out_len)?;
        }
        // The kernel indexes inside one batch item in 32 bits.
        let geom = conv_geom(g, [fo, ho, wo], transposed, &[item_in, item_out, k_len, n])
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{op}: one batch item of {item_in} input or {item_out} output elements is too \
                 large for the CUDA convolution (2^31 - 1 at most)"
                ))
            })?;
        let out = self.output(out_len)?;
        if out_len == 0 {
            return Ok(out);
        }
        let mut others = vec![weight];
        others.extend(bias);
        others.extend(residual);
        self.ordered(&others, || {
            k::conv(
                self.device(),
                ConvArgs {
                    gemm: GemmArgs {
                        a: weight.address()?,
                        b: self.address()?,
                        c: out.address()?,
                        bias: Self::addr_opt(bias)?,
                        residual: Self::addr_opt(residual)?,
                        m: as_i64(g.c_out)?,
                        n: as_i64(n)?,
                        k: as_i64(k_len)?,
                        lda: as_i64(k_len)?,
                        ldb: 0,
                        ldc: as_i64(n)?,
                        batch: as_i64(g.batch)?,
                        stride_a: 0,
                        stride_b: as_i64(item_in)?,
                        stride_c: as_i64(item_out)?,
                        trans_a: 0,
                        trans_b: 0,
                        bias_mode: i32::from(bias.is_some()),
                        alpha: 1.0,
                    },
                    geom,
                },
            )
        })?;
        Ok(out)
    }

    /// A forward convolution (per-frame 2-D ones as their depth-1 case):
    /// 1×1×1 with stride 1 and no padding is a plain GEMM, anything else
    /// the implicit GEMM.
    fn convolution(
        &self,
        op: &str,
        weight: &CudaStorage,
        bias: Option<&CudaStorage>,
        residual: Option<&CudaStorage>,
        g: &Conv3dGeometry,
    ) -> Result<CudaStorage> {
        let pointwise = g.kernel == [1, 1, 1] && g.stride == [1, 1, 1] && g.pad == [0, 0, 0];
        if !pointwise {
            return self.implicit_conv(op, weight, bias, residual, g, false);
        }
        let positions = product(&g.input)?;
        self.pointwise_conv(
            op,
            weight,
            bias,
            residual,
            (g.batch, g.c_in, g.c_out, positions),
        )
    }

    /// A transposed convolution (per-frame 2-D ones as their depth-1 case)
    /// in gather form: the weight `[C_in, C_out, taps]` permuted to
    /// `[C_out, C_in, taps]` for the implicit GEMM.
    fn transposed_convolution(
        &self,
        op: &str,
        weight: &CudaStorage,
        bias: Option<&CudaStorage>,
        g: &Conv3dGeometry,
    ) -> Result<CudaStorage> {
        self.require(op, DType::F16)?;
        let taps = product(&g.kernel)?;
        self.check_operand(weight, op, "the weight", product(&[g.c_in, g.c_out, taps])?)?;
        let gathered = weight.permute(&[g.c_in, g.c_out, taps], &[1, 0, 2])?;
        self.implicit_conv(op, &gathered, bias, None, g, true)
    }

    /// The weight gradient `[C_out, C_in·taps]` of the forward convolution
    /// `g` of this input whose output gradient is `out_grad`: one implicit
    /// GEMM over the whole batch, split along its reduction into fp32
    /// planes that a second kernel adds in a fixed order (deterministic,
    /// no atomics), rounded to f16 once.
    fn weight_gradient(&self, out_grad: &CudaStorage, g: &Conv3dGeometry) -> Result<CudaStorage> {
        let op = "convolution weight gradient";
        self.require(op, DType::F16)?;
        let ([fo, ho, wo], item_in) = self.conv_sizes(op, g, g.conv_out())?;
        let positions = product(&[fo, ho, wo])?;
        let item_out = product(&[g.c_out, positions])?;
        self.check_operand(
            out_grad,
            op,
            "the output gradient",
            product(&[g.batch, item_out])?,
        )?;
        let n = product(&[g.c_in, g.kernel[0], g.kernel[1], g.kernel[2]])?;
        let count = product(&[g.c_out, n])?;
        // The kernel indexes inside one batch item in 32 bits.
        let geom = conv_geom(g, [fo, ho, wo], false, &[item_in, item_out, positions, n])
            .ok_or_else(|| {
                Error::Unsupported(format!(
                "{op}: a batch item of {item_in} input or {item_out} output-gradient elements, \
                 or {n} weights per output channel, is too large for the CUDA kernel (2^31 - 1 \
                 at most in each)"
            ))
            })?;
        let out = self.output(count)?;
        if count == 0 {
            return Ok(out);
        }
        let splits = k::wgrad_splits(
            self.device().multiprocessors(),
            g.c_out,
            n,
            positions,
            g.batch,
        );
        // One split writes the result itself; several need fp32 planes.
        let partial = if splits > 1 {
            Some(CudaStorage::uninit(
                self.device(),
                product(&[splits, count])?,
                DType::F32,
            )?)
        } else {
            None
        };
        self.ordered(&[out_grad], || {
            k::conv_wgrad(
                self.device(),
                WgradArgs {
                    x: self.address()?,
                    dy: out_grad.address()?,
                    partial: Self::addr_opt(partial.as_ref())?,
                    out: out.address()?,
                    m: as_i64(g.c_out)?,
                    n: as_i64(n)?,
                    positions: as_i64(positions)?,
                    batch: as_i64(g.batch)?,
                    splits: as_i64(splits)?,
                    geom,
                },
            )
        })?;
        Ok(out)
    }

    /// A strided gather of `axes` (`(size, [source stride])`, outermost
    /// first) starting at `offset`.
    fn gather(&self, op: &str, axes: &[(usize, [i64; 1])], offset: i64) -> Result<CudaStorage> {
        let n = product(&axes.iter().map(|a| a.0).collect::<Vec<_>>())?;
        let out = self.output(n)?;
        if n == 0 {
            return Ok(out);
        }
        let merged = merge_axes(axes);
        if merged.len() > MAX_RANK {
            return Err(Error::Unsupported(format!(
                "{op} of {} axes that do not merge into {MAX_RANK} on CUDA",
                merged.len()
            )));
        }
        let mut args = GatherArgs {
            rank: merged.len() as i32,
            src_offset: offset,
            n: n as u64,
            ..GatherArgs::default()
        };
        for (d, (size, [st])) in merged.iter().enumerate() {
            args.out_dims[d] = as_i64(*size)?;
            args.src_strides[d] = *st;
        }
        k::gather_strided(
            self.device(),
            self.is_f16(),
            self.address()?,
            out.address()?,
            args,
        )?;
        Ok(out)
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        CudaStorage::dtype(self)
    }

    fn len(&self) -> usize {
        CudaStorage::len(self)
    }

    fn to_host_f32(&self) -> Result<Vec<f32>> {
        CudaStorage::to_host_f32(self)
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let n = self.len();
        let out = CudaStorage::uninit(self.device(), n, dtype)?;
        if n == 0 {
            return Ok(out);
        }
        let dev = self.device();
        if dtype == self.dtype() {
            k::copy_rows(
                dev,
                self.is_f16(),
                self.address()?,
                out.address()?,
                1,
                n,
                n,
                n,
                0,
            )?;
        } else {
            k::cast(dev, self.is_f16(), self.address()?, out.address()?, n)?;
        }
        Ok(out)
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        let out = self.output(self.len())?;
        if !self.is_empty() {
            k::unary(
                self.device(),
                self.is_f16(),
                self.address()?,
                out.address()?,
                self.len(),
                op.kernel_code(),
            )?;
        }
        Ok(out)
    }

    fn binary(&self, rhs: &Self, op: BinaryOp, s: &BroadcastDesc) -> Result<Self> {
        let name = "a broadcasting binary op";
        let rank = s.out.len();
        if s.lhs.len() != rank || s.rhs.len() != rank {
            return Err(Error::invalid(format!(
                "{name}: shapes {:?} and {:?} are not padded to the output's {:?}",
                s.lhs, s.rhs, s.out
            )));
        }
        for d in 0..rank {
            for side in [&s.lhs, &s.rhs] {
                if side[d] != s.out[d] && side[d] != 1 {
                    return Err(Error::invalid(format!(
                        "{name}: {side:?} does not broadcast to {:?}",
                        s.out
                    )));
                }
            }
        }
        self.check_len(name, product(&s.lhs)?)?;
        self.check_operand(rhs, name, "the right operand", product(&s.rhs)?)?;
        let n = product(&s.out)?;
        let out = self.output(n)?;
        if n == 0 {
            return Ok(out);
        }
        let (sa, sb) = (strides(&s.lhs), strides(&s.rhs));
        let axes: Vec<(usize, [i64; 2])> = (0..rank)
            .map(|d| {
                let a = if s.lhs[d] == 1 { 0 } else { sa[d] };
                let b = if s.rhs[d] == 1 { 0 } else { sb[d] };
                (s.out[d], [a, b])
            })
            .collect();
        let merged = merge_axes(&axes);
        if merged.len() > MAX_RANK {
            return Err(Error::Unsupported(format!(
                "{name} over {} axes that do not merge into {MAX_RANK} on CUDA",
                merged.len()
            )));
        }
        let mut args = BroadcastArgs {
            rank: merged.len() as i32,
            n: n as u64,
            ..BroadcastArgs::default()
        };
        for (d, (size, [a, b])) in merged.iter().enumerate() {
            args.dims[d] = as_i64(*size)?;
            args.a_strides[d] = *a;
            args.b_strides[d] = *b;
        }
        self.ordered(&[rhs], || {
            k::binary(
                self.device(),
                self.is_f16(),
                self.address()?,
                rhs.address()?,
                out.address()?,
                args,
                op.kernel_code(),
            )
        })?;
        Ok(out)
    }

    fn unary_backward(&self, grad: &Self, op: UnaryOp) -> Result<Self> {
        let name = "the backward of a unary op";
        self.check_operand(grad, name, "the gradient", self.len())?;
        let out = self.output(self.len())?;
        if !self.is_empty() {
            self.ordered(&[grad], || {
                k::unary_backward(
                    self.device(),
                    self.is_f16(),
                    [self.address()?, grad.address()?, out.address()?],
                    self.len(),
                    op.kernel_code(),
                )
            })?;
        }
        Ok(out)
    }

    fn lincomb(&self, alpha: f32, rhs: &Self, beta: f32) -> Result<Self> {
        self.check_operand(rhs, "lincomb", "the right operand", self.len())?;
        let out = self.output(self.len())?;
        if !self.is_empty() {
            self.ordered(&[rhs], || {
                k::lincomb(
                    self.device(),
                    self.is_f16(),
                    self.address()?,
                    rhs.address()?,
                    out.address()?,
                    self.len(),
                    alpha,
                    beta,
                )
            })?;
        }
        Ok(out)
    }

    fn permute(&self, shape: &[usize], perm: &[usize]) -> Result<Self> {
        self.check_len("permute", product(shape)?)?;
        let mut seen = vec![false; shape.len()];
        if perm.len() != shape.len()
            || perm
                .iter()
                .any(|&p| p >= shape.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(format!(
                "permute: {perm:?} is not a permutation of {} axes",
                shape.len()
            )));
        }
        let st = strides(shape);
        let axes: Vec<(usize, [i64; 1])> = perm.iter().map(|&p| (shape[p], [st[p]])).collect();
        self.gather("permute", &axes, 0)
    }

    fn flip(&self, shape: &[usize], axes: &[usize]) -> Result<Self> {
        self.check_len("flip", product(shape)?)?;
        if let Some(a) = axes.iter().find(|&&a| a >= shape.len()) {
            return Err(Error::invalid(format!(
                "flip: axis {a} out of range for {} axes",
                shape.len()
            )));
        }
        let st = strides(shape);
        let mut offset = 0i64;
        let walk: Vec<(usize, [i64; 1])> = (0..shape.len())
            .map(|d| {
                if axes.contains(&d) && shape[d] > 1 {
                    offset += (shape[d] as i64 - 1) * st[d];
                    (shape[d], [-st[d]])
                } else {
                    (shape[d], [st[d]])
                }
            })
            .collect();
        self.gather("flip", &walk, offset)
    }

    fn narrow(&self, a: AxisDesc, start: usize, len: usize) -> Result<Self> {
        self.check_len("narrow", product(&[a.outer, a.size, a.inner])?)?;
        if start.checked_add(len).is_none_or(|end| end > a.size) {
            return Err(Error::invalid(format!(
                "narrow: {start}..+{len} out of range for an axis of {}",
                a.size
            )));
        }
        let n = product(&[a.outer, len, a.inner])?;
        let out = self.output(n)?;
        if n > 0 {
            let esize = self.dtype().size_in_bytes() as u64;
            let src = self.address()? + (start * a.inner) as u64 * esize;
            k::copy_rows(
                self.device(),
                self.is_f16(),
                src,
                out.address()?,
                a.outer,
                len * a.inner,
                a.size * a.inner,
                len * a.inner,
                0,
            )?;
        }
        Ok(out)
    }

    fn cat(parts: &[&Self], outer: usize, sizes: &[usize], inner: usize) -> Result<Self> {
        let first = *parts
            .first()
            .ok_or_else(|| Error::invalid("cat of no CUDA storages"))?;
        if parts.len() != sizes.len() {
            return Err(Error::invalid(format!(
                "cat: {} parts but {} sizes",
                parts.len(),
                sizes.len()
            )));
        }
        for (i, (p, &size)) in parts.iter().zip(sizes).enumerate() {
            first.check_operand(
                p,
                "cat",
                &format!("part {i}"),
                product(&[outer, size, inner])?,
            )?;
        }
        let total: usize = sizes
            .iter()
            .try_fold(0usize, |a, &s| a.checked_add(s))
            .ok_or_else(|| Error::OutOfMemory("cat: sizes overflow".into()))?;
        let out = first.output(product(&[outer, total, inner])?)?;
        let dst_stride = total * inner;
        first.ordered(&parts[1..], || {
            let mut offset = 0;
            for (p, &size) in parts.iter().zip(sizes) {
                let row = size * inner;
                if row > 0 && outer > 0 {
                    k::copy_rows(
                        first.device(),
                        first.is_f16(),
                        p.address()?,
                        out.address()?,
                        outer,
                        row,
                        row,
                        dst_stride,
                        offset,
                    )?;
                }
                offset += row;
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn index_rows(&self, cols: usize, ids: &[usize]) -> Result<Self> {
        if cols == 0 || self.len() % cols != 0 {
            return Err(Error::invalid(format!(
                "index_rows: {} elements are not rows of {cols}",
                self.len()
            )));
        }
        let rows = self.len() / cols;
        if let Some(&bad) = ids.iter().find(|&&i| i >= rows) {
            return Err(Error::invalid(format!(
                "index_rows: id {bad} out of range for a table of {rows} rows"
            )));
        }
        let n = product(&[ids.len(), cols])?;
        let out = self.output(n)?;
        if n > 0 {
            let bytes: Vec<u8> = ids.iter().flat_map(|&i| (i as i64).to_ne_bytes()).collect();
            let ids_dev = Buffer::upload(self.device(), &bytes)?;
            k::index_rows(
                self.device(),
                self.is_f16(),
                self.address()?,
                ids_dev.address()?,
                out.address()?,
                ids.len(),
                cols,
                rows,
            )?;
        }
        Ok(out)
    }

    fn softmax(&self, a: AxisDesc) -> Result<Self> {
        self.check_len("softmax", product(&[a.outer, a.size, a.inner])?)?;
        let out = self.output(self.len())?;
        if !self.is_empty() {
            k::softmax(
                self.device(),
                self.is_f16(),
                self.address()?,
                out.address()?,
                a.outer,
                a.size,
                a.inner,
            )?;
        }
        Ok(out)
    }

    fn softmax_backward(&self, grad: &Self, a: AxisDesc) -> Result<Self> {
        let name = "softmax_backward";
        let n = product(&[a.outer, a.size, a.inner])?;
        self.check_len(name, n)?;
        self.check_operand(grad, name, "the gradient", n)?;
        let out = self.output(n)?;
        if n > 0 {
            self.ordered(&[grad], || {
                k::softmax_backward(
                    self.device(),
                    self.is_f16(),
                    [self.address()?, grad.address()?, out.address()?],
                    a.outer,
                    a.size,
                    a.inner,
                )
            })?;
        }
        Ok(out)
    }

    fn reduce_sum(&self, a: AxisDesc) -> Result<Self> {
        self.check_len("reduce_sum", product(&[a.outer, a.size, a.inner])?)?;
        let n_out = product(&[a.outer, a.inner])?;
        let out = self.output(n_out)?;
        if n_out > 0 {
            if a.size == 0 {
                k::fill(self.device(), self.is_f16(), out.address()?, n_out, 0.0)?;
            } else {
                k::reduce_sum(
                    self.device(),
                    self.is_f16(),
                    self.address()?,
                    out.address()?,
                    a.outer,
                    a.size,
                    a.inner,
                )?;
            }
        }
        Ok(out)
    }

    fn group_norm(&self, d: &NormDesc, o: NormOperands<'_, Self>) -> Result<Self> {
        let op = "group_norm";
        self.require(op, DType::F16)?;
        if d.groups == 0 || d.channels % d.groups != 0 {
            return Err(Error::invalid(format!(
                "{op}: {} channels do not split into {} groups",
                d.channels, d.groups
            )));
        }
        let n = product(&[d.batch, d.channels, d.spatial])?;
        self.check_len(op, n)?;
        let mut others = Vec::new();
        for (s, what, len) in [
            (o.weight, "the weight", d.channels),
            (o.bias, "the bias", d.channels),
            (
                o.scale_shift.map(|p| p.0),
                "the scale",
                d.batch * d.channels,
            ),
            (
                o.scale_shift.map(|p| p.1),
                "the shift",
                d.batch * d.channels,
            ),
            (o.residual, "the residual", n),
        ] {
            if let Some(s) = s {
                self.check_operand(s, op, what, len)?;
                others.push(s);
            }
        }
        let out = self.output(n)?;
        if n == 0 {
            return Ok(out);
        }
        let (act, act_p) = d.activation.kernel_code();
        let sizes = k::NormSizes {
            batch: d.batch,
            channels: d.channels,
            spatial: d.spatial,
            groups: d.groups,
            eps: d.eps as f32,
            act,
            act_p,
        };
        let ptrs = k::NormPointers {
            x: self.address()?,
            y: out.address()?,
            weight: Self::addr_opt(o.weight)?,
            bias: Self::addr_opt(o.bias)?,
            scale: Self::addr_opt(o.scale_shift.map(|p| p.0))?,
            shift: Self::addr_opt(o.scale_shift.map(|p| p.1))?,
            residual: Self::addr_opt(o.residual)?,
        };
        let pairs = d.batch * d.groups;
        let chunks = k::norm_chunks(pairs, n / pairs.max(1));
        self.ordered(&others, || {
            if chunks <= 1 {
                k::group_norm(self.device(), ptrs, sizes)
            } else {
                let bytes = product(&[pairs, chunks, 3, 4])?;
                let partials = Buffer::uninit(self.device(), bytes)?;
                k::group_norm_chunked(self.device(), ptrs, sizes, partials.address()?, chunks)
            }
        })?;
        Ok(out)
    }

    fn layer_norm_channels(
        &self,
        gamma: &Self,
        batch: usize,
        channels: usize,
        spatial: usize,
        eps: f64,
    ) -> Result<Self> {
        let op = "layer_norm_channels";
        self.require(op, DType::F16)?;
        let n = product(&[batch, channels, spatial])?;
        self.check_len(op, n)?;
        self.check_operand(gamma, op, "gamma", channels)?;
        let out = self.output(n)?;
        if n > 0 {
            self.ordered(&[gamma], || {
                k::layer_norm_channels(
                    self.device(),
                    self.address()?,
                    out.address()?,
                    gamma.address()?,
                    batch,
                    channels,
                    spatial,
                    eps as f32,
                )
            })?;
        }
        Ok(out)
    }

    fn linear(&self, weight: &Self, bias: Option<&Self>, d: &LinearDesc) -> Result<Self> {
        let op = "linear";
        self.require(op, DType::F16)?;
        self.check_len(op, product(&[d.rows, d.n_in])?)?;
        self.check_operand(weight, op, "the weight", product(&[d.n_out, d.n_in])?)?;
        if let Some(b) = bias {
            self.check_operand(b, op, "the bias", d.n_out)?;
        }
        let n = product(&[d.rows, d.n_out])?;
        let out = self.output(n)?;
        if n == 0 {
            return Ok(out);
        }
        let mut others = vec![weight];
        others.extend(bias);
        self.ordered(&others, || {
            k::gemm(
                self.device(),
                GemmArgs {
                    a: self.address()?,
                    b: weight.address()?,
                    c: out.address()?,
                    bias: Self::addr_opt(bias)?,
                    residual: 0,
                    m: as_i64(d.rows)?,
                    n: as_i64(d.n_out)?,
                    k: as_i64(d.n_in)?,
                    lda: as_i64(d.n_in)?,
                    ldb: as_i64(d.n_in)?,
                    ldc: as_i64(d.n_out)?,
                    batch: 1,
                    stride_a: 0,
                    stride_b: 0,
                    stride_c: 0,
                    trans_a: 0,
                    trans_b: 1,
                    bias_mode: if bias.is_some() { 2 } else { 0 },
                    alpha: 1.0,
                },
            )
        })?;
        Ok(out)
    }

    fn matmul(&self, rhs: &Self, d: &MatmulDesc) -> Result<Self> {
        let op = "matmul";
        self.require(op, DType::F16)?;
        let (len_a, len_b, len_c) = d.item_lens();
        self.check_len(op, product(&[d.batch, len_a])?)?;
        self.check_operand(rhs, op, "the right operand", product(&[d.batch, len_b])?)?;
        let out = self.output(product(&[d.batch, len_c])?)?;
        if out.is_empty() {
            return Ok(out);
        }
        // Each item is row-major: a is [m, k] (or [k, m] transposed), b is
        // [k, n] (or [n, k]); the leading dimensions are the stored rows'.
        self.ordered(&[rhs], || {
            k::gemm(
                self.device(),
                GemmArgs {
                    a: self.address()?,
                    b: rhs.address()?,
                    c: out.address()?,
                    bias: 0,
                    residual: 0,
                    m: as_i64(d.m)?,
                    n: as_i64(d.n)?,
                    k: as_i64(d.k)?,
                    lda: as_i64(if d.trans_a { d.m } else { d.k })?,
                    ldb: as_i64(if d.trans_b { d.k } else { d.n })?,
                    ldc: as_i64(d.n)?,
                    batch: as_i64(d.batch)?,
                    stride_a: as_i64(len_a)?,
                    stride_b: as_i64(len_b)?,
                    stride_c: as_i64(len_c)?,
                    trans_a: i32::from(d.trans_a),
                    trans_b: i32::from(d.trans_b),
                    bias_mode: 0,
                    alpha: 1.0,
                },
            )
        })?;
        Ok(out)
    }

    fn conv2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        residual: Option<&Self>,
        g: &ConvGeometry,
    ) -> Result<Self> {
        self.convolution("conv2d", weight, bias, residual, &g.per_frame())
    }

    fn conv_transpose2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        g: &ConvGeometry,
    ) -> Result<Self> {
        self.transposed_convolution("conv_transpose2d", weight, bias, &g.per_frame())
    }

    fn conv3d(&self, weight: &Self, bias: Option<&Self>, g: &Conv3dGeometry) -> Result<Self> {
        self.convolution("conv3d", weight, bias, None, g)
    }

    fn conv_transpose3d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        g: &Conv3dGeometry,
    ) -> Result<Self> {
        self.transposed_convolution("conv_transpose3d", weight, bias, g)
    }

    fn conv3d_weight_grad(&self, out_grad: &Self, g: &Conv3dGeometry) -> Result<Self> {
        self.weight_gradient(out_grad, g)
    }

    fn linear_attention(&self, d: &LinearAttentionDesc) -> Result<Self> {
        let op = "linear_attention";
        self.require(op, DType::F16)?;
        let hid = product(&[d.heads, d.head_dim])?;
        let planes = product(&[d.frames, d.positions])?;
        self.check_len(op, product(&[d.batch, 3, hid, planes])?)?;
        let out = self.output(product(&[d.batch, hid, planes])?)?;
        if out.is_empty() {
            return Ok(out);
        }
        k::linear_attention(
            self.device(),
            self.address()?,
            out.address()?,
            product(&[d.batch, d.heads, d.frames])?,
            d.frames,
            d.positions,
            d.heads,
            d.head_dim,
        )?;
        Ok(out)
    }

    fn attention(
        q: &Self,
        k: &Self,
        v: &Self,
        bias: Option<&Self>,
        d: &AttentionDesc,
    ) -> Result<Self> {
        let op = "attention";
        q.require(op, DType::F16)?;
        let len = product(&[d.groups, d.tokens, d.head_dim])?;
        q.check_len(op, len)?;
        q.check_operand(k, op, "k", len)?;
        q.check_operand(v, op, "v", len)?;
        if d.heads == 0 || d.groups % d.heads != 0 {
            return Err(Error::invalid(format!(
                "{op}: {} rows do not split into {} heads",
                d.groups, d.heads
            )));
        }
        if let Some(b) = bias {
            q.check_operand(b, op, "the bias", product(&[d.heads, d.tokens, d.tokens])?)?;
        }
        let out = q.output(len)?;
        if len == 0 {
            return Ok(out);
        }
        let mut others = vec![k, v];
        others.extend(bias);
        q.ordered(&others, || {
            k::attention(
                q.device(),
                (
                    q.address()?,
                    k.address()?,
                    v.address()?,
                    Self::addr_opt(bias)?,
                    out.address()?,
                ),
                d.groups,
                d.tokens,
                d.head_dim,
                d.heads,
            )
        })?;
        Ok(out)
    }

    fn rotary(&self, freqs: &Self, tokens: usize, head_dim: usize) -> Result<Self> {
        let op = "rotary";
        self.require(op, DType::F16)?;
        if head_dim % 2 != 0
            || tokens == 0
            || self.len() % product(&[tokens, head_dim])?.max(1) != 0
        {
            return Err(Error::invalid(format!(
                "{op}: {} elements are not rows of {tokens} tokens × {head_dim} (even) features",
                self.len()
            )));
        }
        // The kernel takes fp32 frequencies (as autocast keeps the buffer
        // f32); f16 ones are widened first.
        if freqs.dtype() == DType::F16 {
            return self.rotary(&freqs.to_dtype(DType::F32)?, tokens, head_dim);
        }
        if !self.device().same_gpu(freqs.device()) || freqs.len() != head_dim / 2 {
            return Err(Error::invalid(format!(
                "{op}: the frequencies ({} on cuda:{}) are not {} values on cuda:{}",
                freqs.len(),
                freqs.device().ordinal(),
                head_dim / 2,
                self.device().ordinal()
            )));
        }
        let out = self.output(self.len())?;
        if self.is_empty() || head_dim == 0 {
            return Ok(out);
        }
        let rows = self.len() / (tokens * head_dim);
        self.ordered(&[freqs], || {
            k::rotary(
                self.device(),
                (self.address()?, freqs.address()?, out.address()?),
                rows,
                tokens,
                head_dim,
            )
        })?;
        Ok(out)
    }

    fn known_blend(&self, gt: &Self, known: &Self, noise: &Self, p: KnownBlend) -> Result<Self> {
        let op = "known_blend";
        self.require(op, DType::F32)?;
        let n = self.len();
        self.check_operand(gt, op, "the ground truth", n)?;
        self.check_operand(known, op, "the known mask", n)?;
        self.check_operand(noise, op, "the noise", n)?;
        let out = self.output(n)?;
        if n > 0 {
            self.ordered(&[gt, known, noise], || {
                k::known_blend(
                    self.device(),
                    self.address()?,
                    gt.address()?,
                    known.address()?,
                    noise.address()?,
                    out.address()?,
                    n,
                    p.sqrt_alpha_bar,
                    p.sqrt_one_minus_alpha_bar,
                )
            })?;
        }
        Ok(out)
    }

    fn ancestral_step(&self, eps: &Self, noise: &Self, p: AncestralStep) -> Result<Self> {
        let op = "ancestral_step";
        self.require(op, DType::F32)?;
        let n = self.len();
        self.check_operand(eps, op, "the predicted noise", n)?;
        self.check_operand(noise, op, "the noise", n)?;
        let out = self.output(n)?;
        if n > 0 {
            self.ordered(&[eps, noise], || {
                k::ancestral(
                    self.device(),
                    (
                        self.address()?,
                        eps.address()?,
                        noise.address()?,
                        out.address()?,
                    ),
                    n,
                    k::AncestralCoefficients {
                        sqrt_recip_abar: p.sqrt_recip_alpha_bar,
                        sqrt_recipm1_abar: p.sqrt_recip_m1_alpha_bar,
                        coef1: p.coef_x0,
                        coef2: p.coef_xt,
                        sigma: p.sigma,
                    },
                )
            })?;
        }
        Ok(out)
    }

    fn accumulate_windows(&self, sum: &Self, gaussian: &Self, d: &WindowSumDesc) -> Result<Self> {
        let op = "accumulate_windows";
        self.require(op, DType::F16)?;
        let patch = product(&d.extent)?;
        let n = product(&[d.classes, d.grid[0], d.grid[1], d.grid[2]])?;
        self.check_len(op, product(&[d.starts.len(), d.classes, patch])?)?;
        self.check_operand(sum, op, "the sum", n)?;
        self.check_operand(gaussian, op, "the importance map", patch)?;
        let args = k::SlidingArgs::new(d)?;
        let out = self.output(n)?;
        if n > 0 {
            self.ordered(&[sum, gaussian], || {
                k::sliding_accumulate(
                    self.device(),
                    (
                        self.address()?,
                        gaussian.address()?,
                        sum.address()?,
                        out.address()?,
                    ),
                    n,
                    args,
                )
            })?;
        }
        Ok(out)
    }

    fn argmax(&self, a: AxisDesc) -> Result<Self> {
        self.check_len("argmax", product(&[a.outer, a.size, a.inner])?)?;
        let n = product(&[a.outer, a.inner])?;
        if n > 0 && a.size == 0 {
            return Err(Error::invalid("argmax over an empty axis"));
        }
        let out = self.output(n)?;
        if n > 0 {
            k::argmax(
                self.device(),
                self.is_f16(),
                (self.address()?, out.address()?),
                a.outer,
                a.size,
                a.inner,
            )?;
        }
        Ok(out)
    }

    fn optimizer_update(
        &self,
        grad: &Self,
        state: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)> {
        let op = "optimizer_update";
        step.check()?;
        self.require(op, DType::F32)?;
        let n = self.len();
        self.check_operand(grad, op, "the gradient", n)?;
        if state.len() != step.rule.state_buffers() {
            return Err(Error::invalid(format!(
                "{op}: {} state buffers, the rule keeps {}",
                state.len(),
                step.rule.state_buffers()
            )));
        }
        for (i, s) in state.iter().enumerate() {
            self.check_operand(s, op, &format!("state buffer {i}"), n)?;
        }
        let p_out = self.output(n)?;
        let state_out = state
            .iter()
            .map(|_| self.output(n))
            .collect::<Result<Vec<_>>>()?;
        if n == 0 {
            return Ok((p_out, state_out));
        }
        let mut args = OptimArgs {
            grad_factor0: step.grad_factors[0],
            grad_factor1: step.grad_factors[1],
            lr: step.lr,
            weight_decay: step.weight_decay,
            first_step: i32::from(step.step == 1),
            ..OptimArgs::default()
        };
        let mut operands: Vec<&CudaStorage> = vec![grad];
        operands.extend_from_slice(state);
        self.ordered(&operands, || match step.rule {
            OptimizerRule::Adam {
                beta1,
                beta2,
                eps,
                decoupled,
            } => {
                let [step_size, bias2_sqrt] = step.adam_scalars(beta1, beta2);
                args.decay = 1.0 - step.lr * step.weight_decay;
                args.beta1_complement = 1.0 - beta1;
                args.beta2 = beta2;
                args.beta2_complement = 1.0 - beta2;
                args.eps = eps;
                args.step_size = step_size;
                args.bias2_sqrt = bias2_sqrt;
                args.decoupled = i32::from(decoupled);
                k::adam(
                    self.device(),
                    (
                        self.address()?,
                        grad.address()?,
                        state[0].address()?,
                        state[1].address()?,
                    ),
                    (
                        p_out.address()?,
                        state_out[0].address()?,
                        state_out[1].address()?,
                    ),
                    n,
                    args,
                )
            }
            OptimizerRule::Sgd { momentum, nesterov } => {
                args.momentum = momentum;
                args.nesterov = i32::from(nesterov);
                k::sgd(
                    self.device(),
                    (self.address()?, grad.address()?, state[0].address()?),
                    (p_out.address()?, state_out[0].address()?),
                    n,
                    args,
                )
            }
        })?;
        Ok((p_out, state_out))
    }

    fn squared_norms(parts: &[&Self]) -> Result<Vec<f64>> {
        let op = "squared_norms";
        let Some(first) = parts.first() else {
            return Ok(Vec::new());
        };
        for (i, p) in parts.iter().enumerate() {
            p.require(op, DType::F32)?;
            first.check_operand(p, op, &format!("part {i}"), p.len())?;
        }
        let slots = k::SUM_SQUARES_MAX_BLOCKS as usize;
        let bytes = parts
            .len()
            .checked_mul(slots * std::mem::size_of::<f64>())
            .ok_or_else(|| Error::OutOfMemory(format!("{op}: {} parts", parts.len())))?;
        let partials = Buffer::uninit(first.device(), bytes)?;
        let base = partials.address()?;
        first.ordered(&parts[1..], || {
            for (i, p) in parts.iter().enumerate() {
                if !p.is_empty() {
                    let at = base + (i * slots * std::mem::size_of::<f64>()) as u64;
                    k::sum_squares(first.device(), p.address()?, p.len(), at)?;
                }
            }
            Ok(())
        })?;
        let raw = partials.download(bytes)?;
        let values: Vec<f64> = raw
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        // The partials of each part in block order: a fixed sum.
        Ok(parts
            .iter()
            .zip(values.chunks_exact(slots))
            .map(|(p, partial)| {
                if p.is_empty() {
                    0.0
                } else {
                    partial[..k::sum_squares_blocks(p.len()) as usize]
                        .iter()
                        .sum()
                }
            })
            .collect())
    }
}

impl BackendDevice for CudaDevice {
    type Storage = CudaStorage;

    fn storage_from_f32(&self, data: &[f32], dtype: DType) -> Result<CudaStorage> {
        CudaStorage::from_host_f32(self, data, dtype)
    }

    fn storage_full(&self, value: f32, n: usize, dtype: DType) -> Result<CudaStorage> {
        let out = CudaStorage::uninit(self, n, dtype)?;
        if n > 0 {
            k::fill(self, dtype == DType::F16, out.address()?, n, value)?;
        }
        Ok(out)
    }

    fn normal_noise(
        &self,
        key: NoiseKey,
        items: &[u32],
        per_item: usize,
        dtype: DType,
    ) -> Result<CudaStorage> {
        // The generator addresses 2^34 elements per item (philox.rs).
        if per_item as u64 > 1 << 34 {
            return Err(Error::invalid(format!(
                "normal noise of {per_item} values per item: the generator draws at most 2^34"
            )));
        }
        let n = product(&[items.len(), per_item])?;
        let out = CudaStorage::uninit(self, n, DType::F32)?;
        if n > 0 {
            let bytes: Vec<u8> = items.iter().flat_map(|i| i.to_ne_bytes()).collect();
            let items_dev = Buffer::upload(self, &bytes)?;
            k::philox_normal(
                self,
                out.address()?,
                items_dev.address()?,
                items.len(),
                per_item,
                key.seed,
                key.stream,
                key.step,
            )?;
        }
        match dtype {
            DType::F32 => Ok(out),
            DType::F16 => out.to_dtype(DType::F16),
        }
    }

    fn sinusoidal_embedding(&self, t: &[f32], dim: usize, dtype: DType) -> Result<CudaStorage> {
        if dim < 4 || dim % 2 != 0 {
            return Err(Error::invalid(format!(
                "sinusoidal embedding of size {dim}: expected an even size of at least 4"
            )));
        }
        let n = product(&[t.len(), dim])?;
        let out = CudaStorage::uninit(self, n, dtype)?;
        if n > 0 {
            let t_dev = CudaStorage::from_host_f32(self, t, DType::F32)?;
            k::sinusoidal(
                self,
                dtype == DType::F16,
                t_dev.address()?,
                out.address()?,
                t.len(),
                dim,
            )?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::merge_axes;

    #[test]
    fn axes_merge_where_strides_allow() {
        // A contiguous [2, 3, 4] walk is one axis of 24.
        assert_eq!(
            merge_axes(&[(2, [12]), (3, [4]), (4, [1])]),
            vec![(24, [1])]
        );
        // A transpose of the last two axes ([2, 4, 3], strides [12, 1, 4])
        // has no axes to merge.
        assert_eq!(
            merge_axes(&[(2, [12]), (4, [1]), (3, [4])]),
            vec![(2, [12]), (4, [1]), (3, [4])]
        );
        // Size-1 axes vanish; all of them leave one axis of 1.
        assert_eq!(merge_axes(&[(1, [5]), (1, [1])]), vec![(1, [0])]);
        // Broadcast: rhs stride 0 on the outer axis blocks the merge.
        assert_eq!(
            merge_axes(&[(2, [3, 0]), (3, [1, 1])]),
            vec![(2, [3, 0]), (3, [1, 1])]
        );
        assert_eq!(merge_axes(&[(2, [3, 3]), (3, [1, 1])]), vec![(6, [1, 1])]);
    }
}

//! Op descriptors: the geometry and parameters of every op, shared by the
//! tensor layer (which validates them) and each device back-end (which
//! executes them). Nothing here depends on a device.

/// Sizes of a per-frame convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size B.
    pub batch: usize,
    /// Input channels C.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Frames F (convolved independently).
    pub frames: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height and width.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (rows, columns).
    pub stride: (usize, usize),
    /// Zero padding (rows, columns) on both sides.
    pub pad: (usize, usize),
}

impl ConvGeometry {
    /// The same convolution as a [`Conv3dGeometry`] with a depth-1 kernel
    /// (stride 1, no padding in depth), which convolves each frame alone.
    pub fn per_frame(&self) -> Conv3dGeometry {
        Conv3dGeometry {
            batch: self.batch,
            c_in: self.c_in,
            c_out: self.c_out,
            input: [self.frames, self.h, self.w],
            kernel: [1, self.kh, self.kw],
            stride: [1, self.stride.0, self.stride.1],
            pad: [0, self.pad.0, self.pad.1],
        }
    }

    /// Output height and width of the forward convolution, `None` when the
    /// kernel does not fit the padded input or the stride is zero.
    pub fn conv_out(&self) -> Option<(usize, usize)> {
        let (sh, sw) = self.stride;
        if sh == 0 || sw == 0 {
            return None;
        }
        let hp = self.h + 2 * self.pad.0;
        let wp = self.w + 2 * self.pad.1;
        if hp < self.kh || wp < self.kw {
            return None;
        }
        Some(((hp - self.kh) / sh + 1, (wp - self.kw) / sw + 1))
    }

    /// Output height and width of the transposed convolution
    /// (`(h − 1)·s − 2·pad + k`), `None` when that is not positive.
    pub fn transposed_out(&self) -> Option<(usize, usize)> {
        let (sh, sw) = self.stride;
        let ho = ((self.h.checked_sub(1)?) * sh + self.kh).checked_sub(2 * self.pad.0)?;
        let wo = ((self.w.checked_sub(1)?) * sw + self.kw).checked_sub(2 * self.pad.1)?;
        (sh > 0 && sw > 0 && ho > 0 && wo > 0).then_some((ho, wo))
    }
}

/// Sizes of a 3-D convolution. For a transposed convolution `c_in` and
/// `input` describe the tensor it is applied to, as for the forward one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dGeometry {
    /// Batch size B.
    pub batch: usize,
    /// Input channels C.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Input size `[D, H, W]`.
    pub input: [usize; 3],
    /// Kernel size `[kd, kh, kw]`.
    pub kernel: [usize; 3],
    /// Stride `[depth, rows, columns]`.
    pub stride: [usize; 3],
    /// Zero padding on both sides of each axis.
    pub pad: [usize; 3],
}

impl Conv3dGeometry {
    /// Output size `[Do, Ho, Wo]` of the forward convolution, `None` when the
    /// kernel does not fit the padded input or a stride is zero.
    pub fn conv_out(&self) -> Option<[usize; 3]> {
        let axis = |a: usize| {
            let padded = self.input[a].checked_add(self.pad[a].checked_mul(2)?)?;
            let (k, s) = (self.kernel[a], self.stride[a]);
            (s > 0 && k > 0 && padded >= k).then(|| (padded - k) / s + 1)
        };
        Some([axis(0)?, axis(1)?, axis(2)?])
    }

    /// Output size of the transposed convolution, `(n − 1)·s − 2·pad + k` per
    /// axis, `None` when that is not positive or a stride is zero.
    pub fn transposed_out(&self) -> Option<[usize; 3]> {
        let axis = |a: usize| {
            let full = self.input[a]
                .checked_sub(1)?
                .checked_mul(self.stride[a])?
                .checked_add(self.kernel[a])?;
            let out = full.checked_sub(self.pad[a].checked_mul(2)?)?;
            (self.stride[a] > 0 && out > 0).then_some(out)
        };
        Some([axis(0)?, axis(1)?, axis(2)?])
    }

    /// Rows of the vol2col matrix: `C·kd·kh·kw`.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.kernel.iter().product::<usize>()
    }

    /// The forward convolution whose adjoint is this transposed convolution:
    /// from the transposed output (`out`, `c_out` channels) back to this
    /// geometry's input. Its weight layout `[c_in, c_out, k…]` is the
    /// transposed convolution's own.
    pub fn adjoint_of_transposed(&self, out: [usize; 3]) -> Conv3dGeometry {
        Conv3dGeometry {
            c_in: self.c_out,
            c_out: self.c_in,
            input: out,
            ..*self
        }
    }

    /// [`Self::adjoint_of_transposed`] of this transposed convolution's
    /// own output, or a clear error when it has none (what its backward
    /// passes run on).
    pub fn transposed_adjoint(&self) -> crate::Result<Conv3dGeometry> {
        let out = self.transposed_out().ok_or_else(|| {
            crate::Error::invalid(format!(
                "transposed conv backward: no output size for {self:?}"
            ))
        })?;
        Ok(self.adjoint_of_transposed(out))
    }
}

/// Element-wise function of one tensor. A closed list (not closures) so
/// that every device, and the autograd, can implement each one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `x·σ(x)`.
    Silu,
    /// `0.5·x·(1 + erf(x/√2))` (PyTorch's default, exact form).
    Gelu,
    /// `x` for `x ≥ 0`, else `slope·x`.
    LeakyRelu(f32),
    /// `x·a + b`.
    Affine(f32, f32),
    /// `eˣ`.
    Exp,
    /// `−x`.
    Neg,
    /// `x²`.
    Square,
    /// `√x`.
    Sqrt,
    /// `1/x`.
    Recip,
    /// The nearest half-precision value (ties to even), kept in the
    /// storage's type: what a cast to f16 and back gives, so an f32 buffer
    /// can stand in for nnU-Net's f16 ones. Its gradient is the identity,
    /// as a cast's is.
    RoundHalf,
    /// `|x|`; its gradient is `sgn x`, 0 at 0 (PyTorch's).
    Abs,
    /// `ln x`.
    Ln,
    /// 1 where `x == 0`, else 0 (NaN included); its gradient is 0. Builds
    /// exact masks on any device: one-hot classes from class indices, the
    /// operand a max or min selected.
    IsZero,
}

impl UnaryOp {
    /// The op's code in `kernels/elementwise.cu` and its parameters.
    pub fn kernel_code(self) -> (i32, f32, f32) {
        match self {
            UnaryOp::Silu => (1, 0.0, 0.0),
            UnaryOp::Gelu => (2, 0.0, 0.0),
            UnaryOp::LeakyRelu(s) => (3, s, 0.0),
            UnaryOp::Affine(a, b) => (4, a, b),
            UnaryOp::Exp => (5, 0.0, 0.0),
            UnaryOp::Neg => (6, 0.0, 0.0),
            UnaryOp::Square => (7, 0.0, 0.0),
            UnaryOp::Sqrt => (8, 0.0, 0.0),
            UnaryOp::Recip => (9, 0.0, 0.0),
            UnaryOp::RoundHalf => (10, 0.0, 0.0),
            UnaryOp::Abs => (11, 0.0, 0.0),
            UnaryOp::Ln => (12, 0.0, 0.0),
            UnaryOp::IsZero => (13, 0.0, 0.0),
        }
    }
}

/// Element-wise function of two tensors (with broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a·b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)`.
    Max,
    /// `min(a, b)`.
    Min,
}

impl BinaryOp {
    /// The op's code in `kernels/elementwise.cu`.
    pub fn kernel_code(self) -> i32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Max => 4,
            BinaryOp::Min => 5,
        }
    }

    /// The scalar function (the CPU back-end's and the tests' reference).
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
        }
    }
}

/// Shapes of a broadcasting binary op: both operands padded to the output's
/// rank with leading ones; a size-1 axis is broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastDesc {
    /// The left operand's shape, padded.
    pub lhs: Vec<usize>,
    /// The right operand's shape, padded.
    pub rhs: Vec<usize>,
    /// The output's shape.
    pub out: Vec<usize>,
}

/// A tensor seen as `[outer, size, inner]` around one axis (softmax,
/// narrow, concatenation, flips of one axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisDesc {
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// Length of the axis.
    pub size: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
}

/// The activation fused at the end of a normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormActivation {
    /// None.
    Identity,
    /// SiLU (the denoiser's blocks).
    Silu,
    /// LeakyReLU with this slope (nnU-Net's conv blocks).
    LeakyRelu(f32),
}

impl NormActivation {
    /// The activation's code in `kernels/norm.cu` and its parameter.
    pub fn kernel_code(self) -> (i32, f32) {
        match self {
            NormActivation::Identity => (0, 0.0),
            NormActivation::Silu => (1, 0.0),
            NormActivation::LeakyRelu(s) => (2, s),
        }
    }
}

/// A group normalisation over `[B, C, S]` with everything that can be
/// fused into its single pass over the data:
/// `act((x − μ_g)/√(σ²_g + ε)·w_c + b_c)·(scale_bc + 1) + shift_bc`, then
/// `+ residual`. `groups == channels` is InstanceNorm. Modulation comes
/// before the activation (the denoiser's `Block`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormDesc {
    /// B.
    pub batch: usize,
    /// C.
    pub channels: usize,
    /// S: the product of the spatial dimensions.
    pub spatial: usize,
    /// Groups of consecutive channels sharing statistics.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Applied after the affine transform and modulation, before the residual.
    pub activation: NormActivation,
}

/// Optional operands of a fused normalisation (all on the input's device).
#[derive(Clone, Copy, Debug)]
pub struct NormOperands<'a, S> {
    /// Per-channel gain `[C]`.
    pub weight: Option<&'a S>,
    /// Per-channel offset `[C]`.
    pub bias: Option<&'a S>,
    /// FiLM modulation: `scale` and `shift`, `B·C` values each.
    pub scale_shift: Option<(&'a S, &'a S)>,
    /// Added at the end; the input's shape.
    pub residual: Option<&'a S>,
}

/// Shapes of the denoiser's spatial linear attention:
/// `[B, 3·heads·d, F, N]` in, `[B, heads·d, F, N]` out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearAttentionDesc {
    /// B.
    pub batch: usize,
    /// F.
    pub frames: usize,
    /// N = H·W positions per frame.
    pub positions: usize,
    /// Heads.
    pub heads: usize,
    /// Features per head.
    pub head_dim: usize,
}

/// Shapes of softmax attention over `[G, T, d]` (G = groups·heads, head
/// fastest) with an optional `[heads, T, T]` logit bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDesc {
    /// G.
    pub groups: usize,
    /// T tokens.
    pub tokens: usize,
    /// d features.
    pub head_dim: usize,
    /// Heads (G is a multiple).
    pub heads: usize,
}

/// A batched matrix product `c_z = op(a_z)·op(b_z)` over `batch` items,
/// each operand row-major and contiguous per item: `a` is `[m, k]` per item
/// (`[k, m]` when `trans_a`), `b` `[k, n]` (`[n, k]` when `trans_b`), the
/// product `[m, n]`. The attention backwards are made of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDesc {
    /// Items in the batch.
    pub batch: usize,
    /// Rows of each product.
    pub m: usize,
    /// Columns of each product.
    pub n: usize,
    /// The contracted length.
    pub k: usize,
    /// `a` holds each item as `[k, m]` (its transpose is used).
    pub trans_a: bool,
    /// `b` holds each item as `[n, k]` (its transpose is used).
    pub trans_b: bool,
}

impl MatmulDesc {
    /// Elements of one item of `a`, `b` and the product.
    pub fn item_lens(&self) -> (usize, usize, usize) {
        (self.m * self.k, self.k * self.n, self.m * self.n)
    }
}

/// A fully connected layer: `[rows, n_in]·[n_out, n_in]ᵀ + bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDesc {
    /// Rows of the input.
    pub rows: usize,
    /// Input features.
    pub n_in: usize,
    /// Output features.
    pub n_out: usize,
}

/// Most windows one [`WindowSumDesc`] adds (the kernel's argument
/// struct holds this many starts; nnU-Net-style batches are smaller).
pub const MAX_WINDOWS_PER_SUM: usize = 64;

/// A batch of sliding windows added into a case-sized sum
/// (`BackendStorage::accumulate_windows`): window `w` covers
/// `starts[w] .. starts[w] + extent` of the `[classes, grid]` sum.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSumDesc {
    /// Channels of the sum and of every window (classes, or 1 for the
    /// weight sum).
    pub classes: usize,
    /// The sum's spatial size (z, y, x).
    pub grid: [usize; 3],
    /// Every window's spatial size (z, y, x).
    pub extent: [usize; 3],
    /// First voxel of each window, in the order they are added
    /// (1..=[`MAX_WINDOWS_PER_SUM`] of them, each inside the grid).
    pub starts: Vec<[usize; 3]>,
}

/// The RePaint known-region step at one timestep:
/// `known·(√ᾱ·gt + √(1−ᾱ)·noise) + (1 − known)·x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnownBlend {
    /// √ᾱ_t.
    pub sqrt_alpha_bar: f32,
    /// √(1 − ᾱ_t).
    pub sqrt_one_minus_alpha_bar: f32,
}

/// One ancestral (reverse) diffusion step at timestep t:
/// `x₀ = clamp(√(1/ᾱ)·x − √(1/ᾱ − 1)·ε, −1, 1)`,
/// `x ← c₁·x₀ + c₂·x + σ·noise`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AncestralStep {
    /// √(1/ᾱ_t).
    pub sqrt_recip_alpha_bar: f32,
    /// √(1/ᾱ_t − 1).
    pub sqrt_recip_m1_alpha_bar: f32,
    /// Posterior mean coefficient of x₀.
    pub coef_x0: f32,
    /// Posterior mean coefficient of x_t.
    pub coef_xt: f32,
    /// Posterior standard deviation (0 at t = 0).
    pub sigma: f32,
}

/// The rule of one optimiser update (PyTorch's `torch.optim`, operation
/// for operation; see `crate::train::optim`, where it is `OptimizerKind`
/// and checkpoints store it by these names).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OptimizerRule {
    /// Adam (`decoupled = false`: weight decay as an L2 term on the
    /// gradient) or AdamW (`decoupled = true`). State: `exp_avg`,
    /// `exp_avg_sq`.
    Adam {
        /// First-moment decay β₁.
        beta1: f32,
        /// Second-moment decay β₂.
        beta2: f32,
        /// Added to √v̂.
        eps: f32,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
    },
    /// SGD with momentum μ, Nesterov's look-ahead when `nesterov`. State:
    /// `momentum_buffer`.
    Sgd {
        /// Momentum μ (0 = plain SGD; the buffer is then kept but unused).
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
}

impl OptimizerRule {
    /// Whether the rule's constants can train: betas and momentum in
    /// [0, 1), ε > 0, and Nesterov only with momentum.
    pub fn constants_in_range(&self) -> bool {
        match *self {
            OptimizerRule::Adam {
                beta1, beta2, eps, ..
            } => (0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0,
            OptimizerRule::Sgd { momentum, nesterov } => {
                (0.0..1.0).contains(&momentum) && (!nesterov || momentum > 0.0)
            }
        }
    }

    /// How many f32 state buffers of the parameter's length the rule keeps.
    pub fn state_buffers(&self) -> usize {
        match self {
            OptimizerRule::Adam { .. } => 2,
            OptimizerRule::Sgd { .. } => 1,
        }
    }
}

/// One optimiser update of an f32 parameter: the gradient is multiplied by
/// `grad_factors[0]` and then `grad_factors[1]` (the loss scale's inverse
/// and the clipping factor, 1 for none: each product is rounded, as when
/// the two are applied to the gradient one after the other), then `rule`
/// updates the parameter and its state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerStep {
    /// The update rule.
    pub rule: OptimizerRule,
    /// The learning rate.
    pub lr: f32,
    /// Weight decay (L2 for Adam and SGD, decoupled for AdamW).
    pub weight_decay: f32,
    /// The parameter's update count, this update included (1 at the
    /// first): Adam's bias correction and SGD's first momentum use it.
    pub step: u64,
    /// Factors applied to the gradient in order before the rule.
    pub grad_factors: [f32; 2],
}

impl OptimizerStep {
    /// Adam's per-step scalars, `[step_size, √(1 − β₂ᵗ)]` with `step_size
    /// = lr / (1 − β₁ᵗ)`, computed once on the host as PyTorch's
    /// single-tensor Adam does.
    pub fn adam_scalars(&self, beta1: f32, beta2: f32) -> [f32; 2] {
        let t = self.step.min(i32::MAX as u64) as i32;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        [self.lr / bias1, bias2_sqrt]
    }

    /// Refuses a step no rule can take: a learning rate or weight decay
    /// that is negative or not finite, a step count of 0, gradient factors
    /// that are not finite, or rule constants out of range.
    pub fn check(&self) -> crate::Result<()> {
        let finite_nonneg = |v: f32| v.is_finite() && v >= 0.0;
        if self.rule.constants_in_range()
            && finite_nonneg(self.lr)
            && finite_nonneg(self.weight_decay)
            && self.step > 0
            && self.grad_factors.iter().all(|f| f.is_finite())
        {
            Ok(())
        } else {
            Err(crate::Error::invalid(format!(
                "optimizer update {self:?}: rates, decay and factors must be finite and ≥ 0, the step ≥ 1, betas and momentum in [0, 1)"
            )))
        }
    }
}

/// Key of the counter-based noise generator (Philox4x32-10,
/// `backend::philox`): together with an item number and an element index
/// it fixes one normal draw, on every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoiseKey {
    /// The caller's seed.
    pub seed: u64,
    /// Which of several independent draws at one step (e.g. the known
    /// region's noise and the reverse step's noise).
    pub stream: u32,
    /// The sampler step (or any counter the caller advances).
    pub step: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuStorage;
    use crate::backend::BackendStorage;

    /// `per_frame` describes the same convolution: the CPU's conv3d on it
    /// equals its per-frame conv2d, forward and transposed, and the output
    /// sizes agree.
    #[test]
    fn per_frame_is_the_depth_one_convolution() -> crate::Result<()> {
        let g = ConvGeometry {
            batch: 2,
            c_in: 3,
            c_out: 4,
            frames: 3,
            h: 7,
            w: 6,
            kh: 3,
            kw: 2,
            stride: (2, 1),
            pad: (1, 0),
        };
        let g3 = g.per_frame();
        let (ho, wo) = g.conv_out().expect("valid");
        assert_eq!(g3.conv_out(), Some([3, ho, wo]));
        let (th, tw) = g.transposed_out().expect("valid");
        assert_eq!(g3.transposed_out(), Some([3, th, tw]));
        let values = |n: usize, k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<_>>();
        let x = CpuStorage::new(values(2 * 3 * 3 * 7 * 6, 0.37));
        let w = CpuStorage::new(values(4 * 3 * 3 * 2, 0.91));
        let b = CpuStorage::new(values(4, 1.3));
        // Different CPU algorithms may sum in another order.
        let close = |a: &CpuStorage, b: &CpuStorage| {
            assert_eq!(a.as_slice().len(), b.as_slice().len());
            let worst = a
                .as_slice()
                .iter()
                .zip(b.as_slice())
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-5, "largest difference {worst}");
        };
        close(
            &x.conv2d(&w, Some(&b), None, &g)?,
            &x.conv3d(&w, Some(&b), &g3)?,
        );
        let g_t = ConvGeometry { c_out: 2, ..g };
        let w_t = CpuStorage::new(values(3 * 2 * 3 * 2, 0.53));
        let b_t = CpuStorage::new(values(2, 0.7));
        close(
            &x.conv_transpose2d(&w_t, Some(&b_t), &g_t)?,
            &x.conv_transpose3d(&w_t, Some(&b_t), &g_t.per_frame())?,
        );
        Ok(())
    }
}

//! [`CpuStorage`]: the CPU back-end's side of the [`BackendStorage`] seam.
//! Each method hands plain slices to the kernels of this folder.

use super::{attention, conv, conv3d, elementwise as ew, norm, output_buffer, sliding};
use crate::backend::desc::{
    AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry, ConvGeometry,
    KnownBlend, LinearAttentionDesc, LinearDesc, MatmulDesc, NormActivation, NormDesc,
    NormOperands, OptimizerStep, UnaryOp, WindowSumDesc,
};
use crate::backend::{BackendDevice, BackendStorage, NoiseKey};
use crate::nn::DType;
use crate::{Error, Result};
use rayon::prelude::*;

/// Contiguous row-major f32 values in host memory. Dropped buffers go
/// back to the CPU back-end's pool for later outputs.
#[derive(Debug, Default)]
pub struct CpuStorage(Vec<f32>);

impl CpuStorage {
    /// Wraps host values.
    pub fn new(data: Vec<f32>) -> CpuStorage {
        CpuStorage(data)
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
}

impl Drop for CpuStorage {
    fn drop(&mut self) {
        super::recycle(std::mem::take(&mut self.0));
    }
}

fn slice(s: Option<&CpuStorage>) -> Option<&[f32]> {
    s.map(CpuStorage::as_slice)
}

/// Elements per parallel task of the simple loops here.
const CHUNK: usize = 1 << 14;

/// `out[i] = f(a[i], b[i], c[i], d[i])` over equal-length slices, in parallel.
fn zip4(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    d: &[f32],
    f: impl Fn(f32, f32, f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let mut out = output_buffer(a.len());
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, dst)| {
        let r = i * CHUNK..i * CHUNK + dst.len();
        let (a, b, c, d) = (&a[r.clone()], &b[r.clone()], &c[r.clone()], &d[r]);
        super::simd(
            #[inline(always)]
            || {
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = f(a[j], b[j], c[j], d[j]);
                }
            },
        )
    });
    out
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        DType::F32
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn to_host_f32(&self) -> Result<Vec<f32>> {
        Ok(self.0.clone())
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(CpuStorage(self.0.clone())),
            DType::F16 => Err(Error::Unsupported(
                "F16 storage on the CPU (the CPU back-end computes in F32)".into(),
            )),
        }
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        let x = &self.0;
        Ok(CpuStorage(match op {
            UnaryOp::Silu => ew::map(x, ew::silu),
            UnaryOp::Gelu => ew::map(x, ew::gelu),
            UnaryOp::LeakyRelu(s) => ew::map(x, move |v| if v >= 0.0 { v } else { v * s }),
            UnaryOp::Affine(a, b) => ew::map(x, move |v| v * a + b),
            UnaryOp::Exp => ew::map(x, ew::exp),
            UnaryOp::Neg => ew::map(x, |v| -v),
            UnaryOp::Square => ew::map(x, |v| v * v),
            UnaryOp::Sqrt => ew::map(x, f32::sqrt),
            UnaryOp::Recip => ew::map(x, |v| 1.0 / v),
            UnaryOp::RoundHalf => ew::map(x, sliding::round_half),
            UnaryOp::Abs => ew::map(x, f32::abs),
            UnaryOp::Ln => ew::map(x, f32::ln),
            UnaryOp::IsZero => ew::map(x, |v| if v == 0.0 { 1.0 } else { 0.0 }),
        }))
    }

    fn binary(&self, rhs: &Self, op: BinaryOp, s: &BroadcastDesc) -> Result<Self> {
        let (a, b) = (&self.0, &rhs.0);
        let run = |f: fn(f32, f32) -> f32| ew::broadcast_binary(a, &s.lhs, b, &s.rhs, &s.out, f);
        Ok(CpuStorage(match op {
            BinaryOp::Add => run(|a, b| a + b),
            BinaryOp::Sub => run(|a, b| a - b),
            BinaryOp::Mul => run(|a, b| a * b),
            BinaryOp::Div => run(|a, b| a / b),
            BinaryOp::Max => run(f32::max),
            BinaryOp::Min => run(f32::min),
        }))
    }

    fn unary_backward(&self, grad: &Self, op: UnaryOp) -> Result<Self> {
        Ok(CpuStorage(super::grad::unary_backward(
            &self.0, &grad.0, op,
        )))
    }

    fn lincomb(&self, alpha: f32, rhs: &Self, beta: f32) -> Result<Self> {
        Ok(CpuStorage(ew::broadcast_binary(
            &self.0,
            &[self.0.len()],
            &rhs.0,
            &[rhs.0.len()],
            &[self.0.len()],
            move |a, b| alpha * a + beta * b,
        )))
    }

    fn permute(&self, shape: &[usize], perm: &[usize]) -> Result<Self> {
        Ok(CpuStorage(ew::permute(&self.0, shape, perm)))
    }

    fn flip(&self, shape: &[usize], axes: &[usize]) -> Result<Self> {
        Ok(CpuStorage(ew::flip(&self.0, shape, axes)))
    }

    fn narrow(&self, a: AxisDesc, start: usize, len: usize) -> Result<Self> {
        let mut out = Vec::with_capacity(a.outer * len * a.inner);
        for o in 0..a.outer {
            let base = (o * a.size + start) * a.inner;
            out.extend_from_slice(&self.0[base..base + len * a.inner]);
        }
        Ok(CpuStorage(out))
    }

    fn cat(parts: &[&Self], outer: usize, sizes: &[usize], inner: usize) -> Result<Self> {
        let total: usize = sizes.iter().sum::<usize>() * outer * inner;
        // Every element is written by exactly one of the copies below.
        let mut out = output_buffer(total);
        let mut pieces = Vec::with_capacity(outer * parts.len());
        let mut rest = out.as_mut_slice();
        for o in 0..outer {
            for (t, &size) in parts.iter().zip(sizes) {
                let rows = size * inner;
                let (dst, tail) = std::mem::take(&mut rest).split_at_mut(rows);
                pieces.push((dst, &t.0[o * rows..(o + 1) * rows]));
                rest = tail;
            }
        }
        // Large concatenations (the U-Net's skip connections) are copied by
        // all threads.
        pieces.into_par_iter().for_each(|(dst, src)| {
            dst.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
        });
        Ok(CpuStorage(out))
    }

    fn index_rows(&self, cols: usize, ids: &[usize]) -> Result<Self> {
        let mut out = Vec::with_capacity(ids.len() * cols);
        for &i in ids {
            out.extend_from_slice(&self.0[i * cols..(i + 1) * cols]);
        }
        Ok(CpuStorage(out))
    }

    fn softmax(&self, a: AxisDesc) -> Result<Self> {
        Ok(CpuStorage(ew::softmax_axis(&self.0, a.size, a.inner)))
    }

    fn softmax_backward(&self, grad: &Self, a: AxisDesc) -> Result<Self> {
        Ok(CpuStorage(super::grad::softmax_backward(
            &self.0, &grad.0, a,
        )))
    }

    fn reduce_sum(&self, a: AxisDesc) -> Result<Self> {
        Ok(CpuStorage(ew::reduce_sum(&self.0, a)))
    }

    fn group_norm(&self, d: &NormDesc, o: NormOperands<'_, Self>) -> Result<Self> {
        let (w, b) = (slice(o.weight), slice(o.bias));
        let ss = o.scale_shift.map(|(s, h)| (s.as_slice(), h.as_slice()));
        let res = slice(o.residual);
        let x = &self.0;
        let (bt, c, s, g) = (d.batch, d.channels, d.spatial, d.groups);
        Ok(CpuStorage(match d.activation {
            NormActivation::Identity if ss.is_none() && res.is_none() => {
                norm::group_norm(x, bt, c, s, g, w, b, d.eps)
            }
            NormActivation::Silu => norm::group_norm_silu(x, bt, c, s, g, w, b, d.eps, ss, res),
            NormActivation::LeakyRelu(slope) if g == c && ss.is_none() && res.is_none() => {
                norm::instance_norm_leaky_relu(x, bt, c, s, w, b, d.eps, slope)
            }
            act => norm::group_norm_general(x, d, w, b, ss, res, act),
        }))
    }

    fn layer_norm_channels(
        &self,
        gamma: &Self,
        batch: usize,
        channels: usize,
        spatial: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(CpuStorage(norm::layer_norm_channels(
            &self.0, batch, channels, spatial, &gamma.0, eps,
        )))
    }

    fn linear(&self, weight: &Self, bias: Option<&Self>, d: &LinearDesc) -> Result<Self> {
        Ok(CpuStorage(super::gemm::linear(
            &self.0,
            &weight.0,
            slice(bias),
            d.rows,
            d.n_in,
            d.n_out,
        )))
    }

    fn matmul(&self, rhs: &Self, d: &MatmulDesc) -> Result<Self> {
        Ok(CpuStorage(super::gemm::batched_matmul(&self.0, &rhs.0, d)?))
    }

    fn conv2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        residual: Option<&Self>,
        g: &ConvGeometry,
    ) -> Result<Self> {
        Ok(CpuStorage(conv::conv2d_frames_add(
            &self.0,
            &weight.0,
            slice(bias),
            slice(residual),
            g,
        )))
    }

    fn conv_transpose2d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        g: &ConvGeometry,
    ) -> Result<Self> {
        Ok(CpuStorage(conv::conv_transpose2d_frames(
            &self.0,
            &weight.0,
            slice(bias),
            g,
        )))
    }

    fn conv3d(&self, weight: &Self, bias: Option<&Self>, g: &Conv3dGeometry) -> Result<Self> {
        Ok(CpuStorage(conv3d::conv3d(
            &self.0,
            &weight.0,
            slice(bias),
            g,
        )))
    }

    fn conv_transpose3d(
        &self,
        weight: &Self,
        bias: Option<&Self>,
        g: &Conv3dGeometry,
    ) -> Result<Self> {
        Ok(CpuStorage(conv3d::conv_transpose3d(
            &self.0,
            &weight.0,
            slice(bias),
            g,
        )))
    }

    fn conv3d_weight_grad(&self, out_grad: &Self, g: &Conv3dGeometry) -> Result<Self> {
        Ok(CpuStorage(super::grad::conv3d_backward_weight(
            &self.0,
            &out_grad.0,
            g,
        )?))
    }

    fn linear_attention(&self, d: &LinearAttentionDesc) -> Result<Self> {
        Ok(CpuStorage(attention::linear_attention(
            &self.0,
            d.batch,
            d.frames,
            d.positions,
            d.heads,
            d.head_dim,
        )))
    }

    fn attention(
        q: &Self,
        k: &Self,
        v: &Self,
        bias: Option<&Self>,
        d: &AttentionDesc,
    ) -> Result<Self> {
        Ok(CpuStorage(attention::attention(
            &q.0,
            &k.0,
            &v.0,
            d.groups,
            d.tokens,
            d.head_dim,
            d.heads,
            slice(bias),
        )))
    }

    fn rotary(&self, freqs: &Self, tokens: usize, head_dim: usize) -> Result<Self> {
        Ok(CpuStorage(attention::rotary_interleaved(
            &self.0, tokens, head_dim, &freqs.0,
        )))
    }

    fn known_blend(&self, gt: &Self, known: &Self, noise: &Self, p: KnownBlend) -> Result<Self> {
        let (a, b) = (p.sqrt_alpha_bar, p.sqrt_one_minus_alpha_bar);
        // The formula and its order are the sampler's reference
        // (`Schedule::renoise_known` before the seam).
        Ok(CpuStorage(zip4(
            &self.0,
            &gt.0,
            &known.0,
            &noise.0,
            move |x, g, k, z| {
                let noised = a * g + b * z;
                k * noised + (1.0 - k) * x
            },
        )))
    }

    fn ancestral_step(&self, eps: &Self, noise: &Self, p: AncestralStep) -> Result<Self> {
        let (r, rm1, c1, c2, sigma) = (
            p.sqrt_recip_alpha_bar,
            p.sqrt_recip_m1_alpha_bar,
            p.coef_x0,
            p.coef_xt,
            p.sigma,
        );
        Ok(CpuStorage(zip4(
            &self.0,
            &eps.0,
            &noise.0,
            &noise.0,
            move |x, e, z, _| {
                let x0 = (r * x - rm1 * e).clamp(-1.0, 1.0);
                let mean = c1 * x0 + c2 * x;
                mean + sigma * z
            },
        )))
    }

    fn accumulate_windows(&self, sum: &Self, gaussian: &Self, d: &WindowSumDesc) -> Result<Self> {
        Ok(CpuStorage(sliding::accumulate_windows(
            &self.0,
            &sum.0,
            &gaussian.0,
            d,
        )))
    }

    fn argmax(&self, axis: AxisDesc) -> Result<Self> {
        Ok(CpuStorage(sliding::argmax(&self.0, axis)))
    }

    fn optimizer_update(
        &self,
        grad: &Self,
        state: &[&Self],
        step: &OptimizerStep,
    ) -> Result<(Self, Vec<Self>)> {
        step.check()?;
        let n = self.0.len();
        if grad.0.len() != n
            || state.len() != step.rule.state_buffers()
            || state.iter().any(|s| s.0.len() != n)
        {
            return Err(Error::invalid(format!(
                "optimizer_update: a parameter of {n} values, a gradient of {} and state buffers of {:?} ({} expected)",
                grad.0.len(),
                state.iter().map(|s| s.0.len()).collect::<Vec<_>>(),
                step.rule.state_buffers()
            )));
        }
        let mut params = self.0.clone();
        let mut buffers: Vec<Vec<f32>> = state.iter().map(|s| s.0.clone()).collect();
        super::optim::update_in_place(&mut params, &grad.0, &mut buffers, step);
        Ok((
            CpuStorage(params),
            buffers.into_iter().map(CpuStorage).collect(),
        ))
    }

    fn squared_norms(parts: &[&Self]) -> Result<Vec<f64>> {
        let slices: Vec<&[f32]> = parts.iter().map(|p| p.0.as_slice()).collect();
        Ok(super::optim::squared_norms(&slices))
    }
}

/// The CPU as a [`BackendDevice`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuDevice;

fn f32_only(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 => Ok(()),
        DType::F16 => Err(Error::Unsupported(
            "F16 storage on the CPU (the CPU back-end computes in F32)".into(),
        )),
    }
}

impl BackendDevice for CpuDevice {
    type Storage = CpuStorage;

    fn storage_from_f32(&self, data: &[f32], dtype: DType) -> Result<CpuStorage> {
        f32_only(dtype)?;
        Ok(CpuStorage(data.to_vec()))
    }

    fn storage_full(&self, value: f32, n: usize, dtype: DType) -> Result<CpuStorage> {
        f32_only(dtype)?;
        Ok(CpuStorage(vec![value; n]))
    }

    fn normal_noise(
        &self,
        key: NoiseKey,
        items: &[u32],
        per_item: usize,
        dtype: DType,
    ) -> Result<CpuStorage> {
        f32_only(dtype)?;
        let mut out = output_buffer(items.len() * per_item);
        if per_item > 0 {
            out.par_chunks_mut(per_item)
                .zip(items.par_iter())
                .for_each(|(dst, &item)| crate::backend::philox::philox_normals(key, item, 0, dst));
        }
        Ok(CpuStorage(out))
    }

    fn sinusoidal_embedding(&self, t: &[f32], dim: usize, dtype: DType) -> Result<CpuStorage> {
        f32_only(dtype)?;
        let half = dim / 2;
        // f32 throughout, as the reference computes it.
        let e = (10000f32).ln() / (half as f32 - 1.0);
        let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -e).exp()).collect();
        let mut out = Vec::with_capacity(t.len() * dim);
        for &tv in t {
            out.extend(freqs.iter().map(|f| (tv * f).sin()));
            out.extend(freqs.iter().map(|f| (tv * f).cos()));
        }
        Ok(CpuStorage(out))
    }
}

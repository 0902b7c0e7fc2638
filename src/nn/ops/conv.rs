//! Per-frame 2-D convolutions (PyTorch `Conv2d`, and `Conv3d` with kernel
//! depth 1) and their transposes.

use super::conv3d::{conv_weight_grad, transposed_weight_grad};
use crate::backend::cpu::grad;
use crate::backend::desc::ConvGeometry;
use crate::nn::autograd::host;
use crate::nn::tensor::checked_count;
use crate::nn::{Device, Tensor};
use crate::{Error, Result};

/// Stride and zero padding of a convolution (rows, columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Step between kernel applications.
    pub stride: (usize, usize),
    /// Zeros added on both sides of each spatial axis.
    pub pad: (usize, usize),
}

impl ConvParams {
    /// Stride `s` and padding `p` on both axes.
    pub fn new(stride: usize, pad: usize) -> ConvParams {
        ConvParams {
            stride: (stride, stride),
            pad: (pad, pad),
        }
    }
}

/// `(B, C, F, H, W)` of a 4-D (F = 1) or 5-D input.
fn frames_of(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize, usize)> {
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, 1, h, w)),
        [b, c, f, h, w] => Ok((b, c, f, h, w)),
        _ => Err(Error::invalid(format!(
            "{what}: input must be [B,C,H,W] or [B,C,F,H,W], got {:?}",
            x.dims()
        ))),
    }
}

/// `(first, second, kh, kw)` of a 4-D or depth-1 5-D kernel.
fn kernel_of(w: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *w.dims() {
        [a, b, kh, kw] | [a, b, 1, kh, kw] => Ok((a, b, kh, kw)),
        _ => Err(Error::invalid(format!(
            "{what}: weight must be [O,I,kh,kw] or [O,I,1,kh,kw], got {:?}",
            w.dims()
        ))),
    }
}

fn check_bias(bias: Option<&Tensor>, c_out: usize, what: &str) -> Result<()> {
    match bias {
        Some(b) if b.dims() != [c_out] => Err(Error::invalid(format!(
            "{what}: bias must be [{c_out}], got {:?}",
            b.dims()
        ))),
        _ => Ok(()),
    }
}

fn out_shape(x: &Tensor, b: usize, c: usize, f: usize, h: usize, w: usize) -> Vec<usize> {
    if x.rank() == 4 {
        vec![b, c, h, w]
    } else {
        vec![b, c, f, h, w]
    }
}

/// Validates a per-frame (transposed) convolution's operands and returns its
/// geometry. `weight` is `[O, C, ..]` for a convolution and `[C, O, ..]`
/// for a transposed one, as in PyTorch.
fn conv_geometry(
    op: &str,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: ConvParams,
    transposed: bool,
) -> Result<ConvGeometry> {
    let (batch, c, frames, h, w) = frames_of(x, op)?;
    let (k0, k1, kh, kw) = kernel_of(weight, op)?;
    let (c_in, c_out) = if transposed { (k0, k1) } else { (k1, k0) };
    if c_in != c {
        return Err(Error::invalid(format!(
            "{op}: input has {c} channels, weight {:?} expects {c_in}",
            weight.dims()
        )));
    }
    check_bias(bias, c_out, op)?;
    Ok(ConvGeometry {
        batch,
        c_in,
        c_out,
        frames,
        h,
        w,
        kh,
        kw,
        stride: p.stride,
        pad: p.pad,
    })
}

/// The output shape of `g` producing `ho × wo` frames, after refusing sizes
/// whose output or column buffer cannot be allocated — before the kernel
/// multiplies them out.
fn checked_output_shape(x: &Tensor, g: &ConvGeometry, ho: usize, wo: usize) -> Result<Vec<usize>> {
    let shape = out_shape(x, g.batch, g.c_out, g.frames, ho, wo);
    checked_count(&shape)?;
    checked_count(&[g.c_in, g.c_out, g.kh, g.kw, ho, wo])?;
    Ok(shape)
}

impl Tensor {
    /// Convolution applied to every frame: `self` `[B, C, H, W]` or
    /// `[B, C, F, H, W]`, `weight` `[O, C, kh, kw]` or `[O, C, 1, kh, kw]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, p: ConvParams) -> Result<Tensor> {
        self.conv2d_with_residual(weight, bias, p, None)
    }

    /// `conv2d(self) + residual`, with `residual` (the output's shape)
    /// seeding the convolution's accumulator instead of a separate sum: the
    /// residual connections after the denoiser's attention projections.
    pub fn conv2d_add(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: ConvParams,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.conv2d_with_residual(weight, bias, p, Some(residual))
    }

    fn conv2d_with_residual(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: ConvParams,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let g = conv_geometry("conv2d", self, weight, bias, p, false)?;
        let (ho, wo) = g
            .conv_out()
            .filter(|_| self.elem_count() > 0 && weight.elem_count() > 0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "conv2d: kernel {}x{} with {p:?} does not fit input {:?}",
                    g.kh,
                    g.kw,
                    self.dims()
                ))
            })?;
        let shape = checked_output_shape(self, &g, ho, wo)?;
        if let Some(r) = residual {
            if r.dims() != shape {
                return Err(Error::invalid(format!(
                    "conv2d_add: residual {:?} is not the output shape {shape:?}",
                    r.dims()
                )));
            }
        }
        let y = self.storage().conv2d(
            weight.storage(),
            bias.map(Tensor::storage),
            residual.map(Tensor::storage),
            &g,
        )?;
        let y = Tensor::from_storage(y, shape)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        inputs.extend(residual);
        Ok(y.record("conv2d", &inputs, |_| {
            let (x, w) = (self.detach(), weight.detach());
            let has_bias = bias.is_some();
            Box::new(move |gy, needs| {
                let op = "conv2d";
                let mut grads = conv_grads(
                    &x,
                    &w,
                    has_bias,
                    gy,
                    needs,
                    || {
                        // The CPU keeps its own choices (the flipped kernel
                        // for stride 1, measured faster; the column kernel
                        // otherwise), so CPU results do not move.
                        let flipped_kernel_fits =
                            g.stride == (1, 1) && g.pad.0 < g.kh && g.pad.1 < g.kw;
                        if matches!(x.device(), Device::Cpu) && !flipped_kernel_fits {
                            return host_grad(op, gy, &w, x.dims(), |gy, w| {
                                grad::conv2d_backward_input(gy, w, &g)
                            });
                        }
                        conv2d_input_grad(gy, &w, &g)
                    },
                    || conv_weight_grad(&x, gy, &g.per_frame())?.reshape(w.dims()),
                )?;
                if needs.len() > grads.len() {
                    grads.push(Some(gy.clone()));
                }
                Ok(grads)
            })
        }))
    }

    /// Transposed convolution per frame (PyTorch `ConvTranspose2d`/`3d` with
    /// kernel depth 1): `weight` `[C, O, kh, kw]` or `[C, O, 1, kh, kw]`;
    /// output size `(H − 1)·stride − 2·pad + k`.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: ConvParams,
    ) -> Result<Tensor> {
        let g = conv_geometry("conv_transpose2d", self, weight, bias, p, true)?;
        let (ho, wo) = g
            .transposed_out()
            .filter(|_| self.elem_count() > 0 && weight.elem_count() > 0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "conv_transpose2d: {p:?} gives an empty output for {:?}",
                    self.dims()
                ))
            })?;
        let shape = checked_output_shape(self, &g, ho, wo)?;
        let y = self
            .storage()
            .conv_transpose2d(weight.storage(), bias.map(Tensor::storage), &g)?;
        let y = Tensor::from_storage(y, shape)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.record("conv_transpose2d", &inputs, |_| {
            let (x, w) = (self.detach(), weight.detach());
            let has_bias = bias.is_some();
            Box::new(move |gy, needs| {
                let op = "conv_transpose2d";
                conv_grads(
                    &x,
                    &w,
                    has_bias,
                    gy,
                    needs,
                    // The adjoint of a transposed convolution is the forward
                    // convolution with the same weight, stride and padding
                    // (the CPU keeps its column kernel).
                    || {
                        if matches!(x.device(), Device::Cpu) {
                            return host_grad(op, gy, &w, x.dims(), |gy, w| {
                                grad::conv_transpose2d_backward_input(gy, w, &g)
                            });
                        }
                        gy.conv2d(&w, None, p)
                    },
                    || transposed_weight_grad(&x, gy, &g.per_frame())?.reshape(w.dims()),
                )
            })
        }))
    }
}

/// Whether a convolution's output covers its padded input to the last row
/// and column (`(n + 2p − k)` a multiple of the stride on both axes), so
/// that the transposed convolution of the output has the input's size.
pub(super) fn tiles_exactly(n: usize, pad: usize, k: usize, stride: usize) -> bool {
    stride > 0
        && (n + 2 * pad)
            .checked_sub(k)
            .is_some_and(|d| d % stride == 0)
}

/// The input gradient of a per-frame convolution from forward ops on the
/// gradient's own device: for stride 1, the convolution of the output
/// gradient with the flipped, transposed kernel (padding `k − 1 − p`, so
/// it runs on the fast forward kernels, Winograd for 3×3); for a stride
/// that tiles the input exactly, the transposed convolution with the same
/// weight; otherwise (nnU-Net's 3×3/2 on even sizes) the unpadded
/// transposed convolution cut to the input's rows (`[p, p + H)`, zeros
/// past its end), which is what a transposed convolution's output padding
/// gives.
fn conv2d_input_grad(gy: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    let w4 = w.reshape(&[g.c_out, g.c_in, g.kh, g.kw])?;
    let dx = if g.stride == (1, 1) && g.pad.0 < g.kh && g.pad.1 < g.kw {
        let flipped = w4
            .flip(&[2, 3])?
            .permute(&[1, 0, 2, 3])?
            .reshape(&[g.c_in, g.c_out, 1, g.kh, g.kw])?;
        let p = ConvParams {
            stride: (1, 1),
            pad: (g.kh - 1 - g.pad.0, g.kw - 1 - g.pad.1),
        };
        gy.conv2d(&flipped, None, p)?
    } else if tiles_exactly(g.h, g.pad.0, g.kh, g.stride.0)
        && tiles_exactly(g.w, g.pad.1, g.kw, g.stride.1)
    {
        let p = ConvParams {
            stride: g.stride,
            pad: g.pad,
        };
        gy.conv_transpose2d(&w4, None, p)?
    } else {
        let p = ConvParams {
            stride: g.stride,
            pad: (0, 0),
        };
        let full = gy.conv_transpose2d(&w4, None, p)?;
        let rank = full.rank();
        window(
            &window(&full, rank - 2, g.pad.0, g.h)?,
            rank - 1,
            g.pad.1,
            g.w,
        )?
    };
    let want = [g.batch, g.c_in, g.frames, g.h, g.w];
    if dx.elem_count() != want.iter().product::<usize>() {
        return Err(Error::Internal(format!(
            "conv2d backward: input gradient {:?}, expected {want:?}",
            dx.dims()
        )));
    }
    Ok(dx)
}

/// Entries `[start, start + len)` of `t` along `axis`, zeros where that
/// runs past its end.
pub(super) fn window(t: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let size = t.dim(axis)?;
    let kept = size.saturating_sub(start).min(len);
    let mut zeros_shape = t.dims().to_vec();
    zeros_shape[axis] = len - kept;
    let zeros = Tensor::full_on(0.0, &zeros_shape, &t.device(), t.dtype())?;
    if kept == 0 {
        return Ok(zeros);
    }
    let part = t.narrow(axis, start, kept)?;
    if kept == len {
        return Ok(part);
    }
    Tensor::cat(&[&part, &zeros], axis)
}

/// A gradient computed by a CPU kernel on host copies of `a` and `b`
/// (downloads for device tensors), shaped `shape`; the autograd moves it
/// to its operand's device.
pub(super) fn host_grad(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    kernel: impl FnOnce(&[f32], &[f32]) -> Result<Vec<f32>>,
) -> Result<Tensor> {
    Tensor::from_vec(kernel(&host(a, op)?, &host(b, op)?)?, shape)
}

/// The gradients of a convolution-like op (input, weight, optional bias,
/// in that order), each computed only when needed; the bias gradient is
/// the output gradient summed per channel, on the gradient's own device.
pub(super) fn conv_grads(
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    gy: &Tensor,
    needs: &[bool],
    input_grad: impl FnOnce() -> Result<Tensor>,
    weight_grad: impl FnOnce() -> Result<Tensor>,
) -> Result<Vec<Option<Tensor>>> {
    let mut grads = Vec::with_capacity(3);
    grads.push(needs[0].then(input_grad).transpose()?);
    grads.push(needs[1].then(weight_grad).transpose()?);
    if has_bias {
        grads.push(needs[2].then(|| channel_sum(gy)).transpose()?);
    }
    for (gi, like) in grads.iter().zip([x, w]) {
        if let Some(gi) = gi {
            if gi.elem_count() != like.elem_count() {
                return Err(Error::Internal(format!(
                    "convolution backward: gradient {:?} for operand {:?}",
                    gi.dims(),
                    like.dims()
                )));
            }
        }
    }
    Ok(grads)
}

/// `[B, C, …]` summed over every dimension but the channels: `[C]`.
pub(super) fn channel_sum(gy: &Tensor) -> Result<Tensor> {
    let (b, c) = (gy.dims()[0], gy.dims()[1]);
    let spatial = gy.elem_count() / (b * c).max(1);
    gy.reshape(&[b, c, spatial])?
        .sum_keepdim(2)?
        .sum_keepdim(0)?
        .reshape(&[c])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `conv2d_add` equals the convolution plus the residual on each path:
    /// pointwise, im2col (7×7, stride 2) and Winograd (3×3 on a 20×20 frame).
    #[test]
    fn conv2d_add_adds_the_residual() -> Result<()> {
        use crate::backend::cpu::random_normal;
        let x = Tensor::from_vec(random_normal(2 * 4 * 2 * 20 * 20, 1), &[2, 4, 2, 20, 20])?;
        for (k, p) in [
            (1, ConvParams::new(1, 0)),
            (7, ConvParams::new(2, 3)),
            (3, ConvParams::new(1, 1)),
        ] {
            let w = Tensor::from_vec(random_normal(3 * 4 * k * k, 2), &[3, 4, 1, k, k])?;
            let b = Tensor::from_vec(random_normal(3, 3), &[3])?;
            let plain = x.conv2d(&w, Some(&b), p)?;
            let r = Tensor::from_vec(random_normal(plain.elem_count(), 4), plain.dims())?;
            let got = x.conv2d_add(&w, Some(&b), p, &r)?.to_vec()?;
            let want = plain.add(&r)?.to_vec()?;
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-4, "k{k}: {err}");
            let no_bias = x
                .conv2d_add(&w, None, p, &r)?
                .sub(&x.conv2d(&w, None, p)?)?;
            let err = no_bias
                .sub(&r)?
                .to_vec()?
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            assert!(err < 1e-4, "k{k} without bias: {err}");
            assert!(x.conv2d_add(&w, Some(&b), p, &x).is_err());
        }
        Ok(())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The device formulations of the input gradients (forward
    /// convolutions of the output gradient) equal the host kernels, per
    /// frame: stride 1 (also with a padding as large as
    /// the kernel), strides that tile the input exactly, and strides that
    /// leave rows over (cut, or padded with zeros past the output).
    #[test]
    fn device_formulations_of_the_input_gradients_match_the_host_kernels() -> Result<()> {
        use crate::backend::cpu::random_normal;
        let (b, c_in, c_out, f) = (2, 3, 4, 2);
        for (h, k, stride, pad, exact) in [
            (9, 3, 1, 1, true),
            (8, 1, 1, 0, true),
            (10, 7, 1, 3, true),
            (5, 3, 1, 3, true),
            (9, 3, 2, 1, true),
            (8, 4, 2, 1, true),
            (10, 3, 3, 1, true),
            (8, 3, 2, 1, false),
            (8, 3, 2, 0, false),
            (9, 2, 3, 0, false),
        ] {
            let what = format!("h{h} k{k} s{stride} p{pad}");
            let x = Tensor::from_vec(random_normal(b * c_in * f * h * h, 5), &[b, c_in, f, h, h])?;
            let w = Tensor::from_vec(
                random_normal(c_out * c_in * k * k, 6),
                &[c_out, c_in, 1, k, k],
            )?;
            let p = ConvParams::new(stride, pad);
            let g = conv_geometry("conv2d", &x, &w, None, p, false)?;
            let y = x.conv2d(&w, None, p)?;
            let gy = Tensor::from_vec(random_normal(y.elem_count(), 7), y.dims())?;
            let want_dx = grad::conv2d_backward_input(gy.as_slice()?, w.as_slice()?, &g)?;
            let dx = conv2d_input_grad(&gy, &w, &g)?;
            assert_eq!(dx.dims(), x.dims());
            let err = max_diff(&dx.to_vec()?, &want_dx);
            assert!(err < 1e-4, "{what}: input gradient off by {err}");
            assert_eq!(
                exact,
                tiles_exactly(h, pad, k, stride),
                "{what}: the case list is wrong"
            );
            // The transposed convolution's input gradient is the forward
            // convolution with the same weight.
            let wt =
                Tensor::from_vec(random_normal(c_in * c_out * k * k, 8), &[c_in, c_out, k, k])?;
            let gt = conv_geometry("conv_transpose2d", &x, &wt, None, p, true)?;
            let yt = x.conv_transpose2d(&wt, None, p)?;
            let gyt = Tensor::from_vec(random_normal(yt.elem_count(), 9), yt.dims())?;
            let want = grad::conv_transpose2d_backward_input(gyt.as_slice()?, wt.as_slice()?, &gt)?;
            let err = max_diff(&gyt.conv2d(&wt, None, p)?.to_vec()?, &want);
            assert!(err < 1e-4, "{what}: transposed input gradient off by {err}");
        }
        Ok(())
    }

    #[test]
    fn shapes_of_down_and_up_sampling() -> Result<()> {
        let x = Tensor::full(1.0, &[1, 4, 2, 8, 8])?;
        let w = Tensor::full(0.1, &[4, 4, 1, 4, 4])?;
        let down = x.conv2d(&w, None, ConvParams::new(2, 1))?;
        assert_eq!(down.dims(), &[1, 4, 2, 4, 4]);
        let up = down.conv_transpose2d(&w, Some(&Tensor::zeros(&[4])?), ConvParams::new(2, 1))?;
        assert_eq!(up.dims(), &[1, 4, 2, 8, 8]);
        assert!(x
            .conv2d(&Tensor::zeros(&[4, 3, 3, 3])?, None, ConvParams::new(1, 1))
            .is_err());
        assert!(x
            .conv2d(&Tensor::zeros(&[4, 4, 9, 9])?, None, ConvParams::new(1, 0))
            .is_err());
        Ok(())
    }
}

//! Full 3-D convolutions (PyTorch `Conv3d` and `ConvTranspose3d`) on
//! `[B, C, D, H, W]` tensors, for any kernel, stride and padding.

use super::conv::{conv_grads, host_grad, tiles_exactly, window};
use crate::backend::cpu::grad;
use crate::backend::desc::Conv3dGeometry;
use crate::nn::tensor::checked_count;
use crate::nn::{Device, Tensor};
use crate::{Error, Result};

/// Stride and zero padding of a 3-D convolution (depth, rows, columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    /// Step between kernel applications.
    pub stride: (usize, usize, usize),
    /// Zeros added on both sides of each spatial axis.
    pub pad: (usize, usize, usize),
}

impl Conv3dParams {
    /// Stride `s` and padding `p` on all three axes.
    pub fn new(stride: usize, pad: usize) -> Conv3dParams {
        Conv3dParams {
            stride: (stride, stride, stride),
            pad: (pad, pad, pad),
        }
    }
}

/// Validates a 3-D (transposed) convolution's operands and returns its
/// geometry. `weight` is `[O, C, kd, kh, kw]` for a convolution and
/// `[C, O, kd, kh, kw]` for a transposed one, as in PyTorch.
fn conv3d_geometry(
    op: &str,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv3dParams,
    transposed: bool,
) -> Result<Conv3dGeometry> {
    let &[batch, c, d, h, w] = x.dims() else {
        return Err(Error::invalid(format!(
            "{op}: input must be [B,C,D,H,W], got {:?}",
            x.dims()
        )));
    };
    let &[k0, k1, kd, kh, kw] = weight.dims() else {
        return Err(Error::invalid(format!(
            "{op}: weight must be [{},kd,kh,kw], got {:?}",
            if transposed { "C,O" } else { "O,C" },
            weight.dims()
        )));
    };
    let (c_in, c_out) = if transposed { (k0, k1) } else { (k1, k0) };
    if c_in != c {
        return Err(Error::invalid(format!(
            "{op}: input has {c} channels, weight {:?} expects {c_in}",
            weight.dims()
        )));
    }
    if let Some(b) = bias {
        if b.dims() != [c_out] {
            return Err(Error::invalid(format!(
                "{op}: bias must be [{c_out}], got {:?}",
                b.dims()
            )));
        }
    }
    if x.elem_count() == 0 || weight.elem_count() == 0 {
        return Err(Error::invalid(format!(
            "{op}: empty input {:?} or weight {:?}",
            x.dims(),
            weight.dims()
        )));
    }
    Ok(Conv3dGeometry {
        batch,
        c_in,
        c_out,
        input: [d, h, w],
        kernel: [kd, kh, kw],
        stride: [p.stride.0, p.stride.1, p.stride.2],
        pad: [p.pad.0, p.pad.1, p.pad.2],
    })
}

/// The output shape `[B, O, Do, Ho, Wo]`, after refusing sizes whose output
/// or working buffers cannot be allocated — before the kernel multiplies them
/// out. The column buffers are chunked by the kernel, but it always needs the
/// columns of one output frame (`C·kd·kh·kw` by `Ho·Wo`, the per-frame path)
/// or one input row (`O·kd·kh·kw` by `W`, the transposed convolution), and
/// the depth-tap path holds one `[B, O, D, Ho, Wo]` partial sum.
fn checked_output_shape(
    g: &Conv3dGeometry,
    out: [usize; 3],
    transposed: bool,
) -> Result<Vec<usize>> {
    let shape = vec![g.batch, g.c_out, out[0], out[1], out[2]];
    checked_count(&shape)?;
    let [kd, kh, kw] = g.kernel;
    if transposed {
        checked_count(&[g.c_out, kd, kh, kw, g.input[2]])?;
    } else {
        checked_count(&[g.c_in, kd, kh, kw, out[1], out[2]])?;
        checked_count(&[g.batch, g.c_out, g.input[0], out[1], out[2]])?;
    }
    Ok(shape)
}

impl Tensor {
    /// 3-D convolution (PyTorch `Conv3d`): `self` `[B, C, D, H, W]`, `weight`
    /// `[O, C, kd, kh, kw]`, `bias` `[O]`; output `[B, O, Do, Ho, Wo]` with
    /// `Do = (D + 2·pad − kd) / stride + 1` per axis.
    pub fn conv3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv3dParams,
    ) -> Result<Tensor> {
        let g = conv3d_geometry("conv3d", self, weight, bias, p, false)?;
        let out = g.conv_out().ok_or_else(|| {
            Error::invalid(format!(
                "conv3d: kernel {:?} with {p:?} does not fit input {:?}",
                g.kernel,
                self.dims()
            ))
        })?;
        let shape = checked_output_shape(&g, out, false)?;
        let y = self
            .storage()
            .conv3d(weight.storage(), bias.map(Tensor::storage), &g)?;
        let y = Tensor::from_storage(y, shape)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.record("conv3d", &inputs, |_| {
            let (x, w) = (self.detach(), weight.detach());
            let has_bias = bias.is_some();
            Box::new(move |gy, needs| {
                let op = "conv3d";
                conv_grads(
                    &x,
                    &w,
                    has_bias,
                    gy,
                    needs,
                    || {
                        // The CPU keeps its column kernel (CPU results do
                        // not move).
                        if matches!(x.device(), Device::Cpu) {
                            return host_grad(op, gy, &w, x.dims(), |gy, w| {
                                grad::conv3d_backward_input(gy, w, &g)
                            });
                        }
                        conv3d_input_grad(gy, &w, &g)
                    },
                    || conv_weight_grad(&x, gy, &g),
                )
            })
        }))
    }

    /// Transposed 3-D convolution (PyTorch `ConvTranspose3d`, no output
    /// padding): `self` `[B, C, D, H, W]`, `weight` `[C, O, kd, kh, kw]`,
    /// `bias` `[O]`; output size `(D − 1)·stride − 2·pad + k` per axis.
    pub fn conv_transpose3d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv3dParams,
    ) -> Result<Tensor> {
        let g = conv3d_geometry("conv_transpose3d", self, weight, bias, p, true)?;
        let out = g.transposed_out().ok_or_else(|| {
            Error::invalid(format!(
                "conv_transpose3d: kernel {:?} with {p:?} gives an empty output for {:?}",
                g.kernel,
                self.dims()
            ))
        })?;
        let shape = checked_output_shape(&g, out, true)?;
        let y = self
            .storage()
            .conv_transpose3d(weight.storage(), bias.map(Tensor::storage), &g)?;
        let y = Tensor::from_storage(y, shape)?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(y.record("conv_transpose3d", &inputs, |_| {
            let (x, w) = (self.detach(), weight.detach());
            let has_bias = bias.is_some();
            Box::new(move |gy, needs| {
                let op = "conv_transpose3d";
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
                                grad::conv_transpose3d_backward_input(gy, w, &g)
                            });
                        }
                        gy.conv3d(&w, None, p)
                    },
                    || transposed_weight_grad(&x, gy, &g),
                )
            })
        }))
    }
}

/// The input gradient of a 3-D convolution from forward ops on the
/// gradient's device: for stride 1, the convolution with the flipped,
/// transposed kernel (padding `k − 1 − p`); for strides that tile the input
/// exactly, the transposed convolution with the same weight; otherwise the
/// unpadded transposed convolution cut to the input (as the per-frame
/// `conv2d_input_grad`).
fn conv3d_input_grad(gy: &Tensor, w: &Tensor, g: &Conv3dGeometry) -> Result<Tensor> {
    let k = g.kernel;
    let fits = (0..3).all(|a| g.pad[a] < k[a]);
    let dx = if g.stride == [1, 1, 1] && fits {
        let flipped = w.flip(&[2, 3, 4])?.permute(&[1, 0, 2, 3, 4])?;
        let p = Conv3dParams {
            stride: (1, 1, 1),
            pad: (
                k[0] - 1 - g.pad[0],
                k[1] - 1 - g.pad[1],
                k[2] - 1 - g.pad[2],
            ),
        };
        gy.conv3d(&flipped, None, p)?
    } else if (0..3).all(|a| tiles_exactly(g.input[a], g.pad[a], k[a], g.stride[a])) {
        let p = Conv3dParams {
            stride: (g.stride[0], g.stride[1], g.stride[2]),
            pad: (g.pad[0], g.pad[1], g.pad[2]),
        };
        gy.conv_transpose3d(w, None, p)?
    } else {
        let p = Conv3dParams {
            stride: (g.stride[0], g.stride[1], g.stride[2]),
            pad: (0, 0, 0),
        };
        let mut dx = gy.conv_transpose3d(w, None, p)?;
        for a in 0..3 {
            dx = window(&dx, 2 + a, g.pad[a], g.input[a])?;
        }
        dx
    };
    let want = [g.batch, g.c_in, g.input[0], g.input[1], g.input[2]];
    if dx.dims() != want {
        return Err(Error::Internal(format!(
            "conv3d backward: input gradient {:?}, expected {want:?}",
            dx.dims()
        )));
    }
    Ok(dx)
}

/// The weight gradient `[C_out, C_in, kd, kh, kw]` of the forward
/// convolution `g` of `input` whose output gradient is `out_grad`, by the
/// device's own kernel: the CPU's column kernel, CUDA's split-K implicit
/// GEMM (per-frame 2-D convolutions are the depth-1 case).
pub(super) fn conv_weight_grad(
    input: &Tensor,
    out_grad: &Tensor,
    g: &Conv3dGeometry,
) -> Result<Tensor> {
    let dw = input.storage().conv3d_weight_grad(out_grad.storage(), g)?;
    Tensor::from_storage(
        dw,
        vec![g.c_out, g.c_in, g.kernel[0], g.kernel[1], g.kernel[2]],
    )
}

/// The weight gradient `[C_in, C_out, kd, kh, kw]` of the transposed
/// convolution `g` of `input` whose output gradient is `out_grad`: the
/// forward convolution's for its adjoint geometry (from the transposed
/// output back to the input), with input and output gradient exchanged.
pub(super) fn transposed_weight_grad(
    input: &Tensor,
    out_grad: &Tensor,
    g: &Conv3dGeometry,
) -> Result<Tensor> {
    conv_weight_grad(out_grad, input, &g.transposed_adjoint()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ConvParams;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.normal() as f32).collect(), shape).unwrap()
    }

    #[test]
    fn shapes_of_nnunet_down_and_up_sampling() -> Result<()> {
        let x = random(&[2, 4, 5, 7, 9], 1);
        let w = random(&[6, 4, 3, 3, 3], 2);
        let b = random(&[6], 3);
        let same = x.conv3d(&w, Some(&b), Conv3dParams::new(1, 1))?;
        assert_eq!(same.dims(), &[2, 6, 5, 7, 9]);
        let down = Conv3dParams {
            stride: (1, 2, 2),
            pad: (1, 1, 1),
        };
        assert_eq!(x.conv3d(&w, None, down)?.dims(), &[2, 6, 5, 4, 5]);
        let down = x.conv3d(&w, None, Conv3dParams::new(2, 1))?;
        assert_eq!(down.dims(), &[2, 6, 3, 4, 5]);
        // nnU-Net's upsampling: kernel = stride, weight [C, O, k…].
        let up_w = random(&[6, 4, 2, 2, 2], 4);
        let up = down.conv_transpose3d(&up_w, Some(&random(&[4], 5)), Conv3dParams::new(2, 0))?;
        assert_eq!(up.dims(), &[2, 4, 6, 8, 10]);
        let up_w = random(&[6, 4, 3, 3, 3], 6);
        let up = down.conv_transpose3d(&up_w, None, Conv3dParams::new(2, 1))?;
        assert_eq!(up.dims(), &[2, 4, 5, 7, 9]);
        Ok(())
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The device formulations of the 3-D input gradients equal the host
    /// kernels: stride 1, nnU-Net's exactly tiling strided convolutions,
    /// strides that leave planes, rows or columns over, and the transposed
    /// convolution's.
    #[test]
    fn device_formulations_of_the_input_gradients_match_the_host_kernels() -> Result<()> {
        let x = random(&[2, 3, 5, 7, 9], 11);
        for (stride, pad, k, exact) in [
            ((1, 1, 1), (1, 1, 1), 3, true),
            ((1, 2, 2), (1, 1, 1), 3, true),
            ((1, 1, 1), (0, 0, 0), 1, true),
            ((2, 2, 2), (1, 1, 1), 3, true),
            ((1, 2, 2), (0, 0, 0), 2, false),
            ((2, 2, 2), (1, 1, 1), 2, false),
            ((1, 2, 4), (0, 1, 0), 3, false),
        ] {
            let what = format!("s{stride:?} p{pad:?} k{k}");
            let p = Conv3dParams { stride, pad };
            let w = random(&[4, 3, k, k, k], 12);
            let g = conv3d_geometry("conv3d", &x, &w, None, p, false)?;
            let y = x.conv3d(&w, None, p)?;
            let gy = random(y.dims(), 13);
            let want = grad::conv3d_backward_input(gy.as_slice()?, w.as_slice()?, &g)?;
            let dx = conv3d_input_grad(&gy, &w, &g)?;
            assert_eq!(dx.dims(), x.dims());
            let err = max_diff(&dx.to_vec()?, &want);
            assert!(err < 1e-4, "{what}: input gradient off by {err}");
            let tiles = (0..3).all(|a| tiles_exactly(g.input[a], g.pad[a], k, g.stride[a]));
            assert_eq!(exact, tiles, "{what}: the case list is wrong");
            let wt = random(&[3, 4, k, k, k], 14);
            let gt = conv3d_geometry("conv_transpose3d", &x, &wt, None, p, true)?;
            let yt = x.conv_transpose3d(&wt, None, p)?;
            let gyt = random(yt.dims(), 15);
            let want = grad::conv_transpose3d_backward_input(gyt.as_slice()?, wt.as_slice()?, &gt)?;
            let err = max_diff(&gyt.conv3d(&wt, None, p)?.to_vec()?, &want);
            assert!(err < 1e-4, "{what}: transposed input gradient off by {err}");
        }
        Ok(())
    }

    #[test]
    fn depth_one_kernel_equals_conv2d_per_frame() -> Result<()> {
        let x = random(&[1, 3, 4, 9, 10], 7);
        let w = random(&[5, 3, 1, 3, 3], 8);
        let b = random(&[5], 9);
        let p3 = Conv3dParams {
            stride: (1, 2, 1),
            pad: (0, 1, 1),
        };
        let p2 = ConvParams {
            stride: (2, 1),
            pad: (1, 1),
        };
        let a = x.conv3d(&w, Some(&b), p3)?;
        let c = x.conv2d(&w, Some(&b), p2)?;
        assert_eq!(a.dims(), c.dims());
        assert_eq!(a.to_vec()?, c.to_vec()?);
        Ok(())
    }

    #[test]
    fn refuses_bad_operands() {
        let x = random(&[1, 4, 3, 5, 5], 10);
        let p = Conv3dParams::new(1, 1);
        let bad = |r: Result<Tensor>| matches!(r, Err(Error::InvalidArgument(_)));
        // Wrong ranks, channel counts, bias shape, kernel larger than the input.
        assert!(bad(x.conv3d(&random(&[6, 4, 3, 3], 1), None, p)));
        assert!(bad(x.reshape(&[4, 3, 5, 5]).unwrap().conv3d(
            &random(&[6, 4, 3, 3, 3], 1),
            None,
            p
        )));
        assert!(bad(x.conv3d(&random(&[6, 3, 3, 3, 3], 1), None, p)));
        assert!(bad(x.conv3d(
            &random(&[6, 4, 3, 3, 3], 1),
            Some(&random(&[4], 2)),
            p
        )));
        assert!(bad(x.conv3d(&random(&[6, 4, 7, 3, 3], 1), None, p)));
        assert!(bad(x.conv3d(
            &random(&[6, 4, 3, 3, 3], 1),
            None,
            Conv3dParams::new(0, 1)
        )));
        assert!(bad(x.conv_transpose3d(
            &random(&[6, 4, 2, 2, 2], 1),
            None,
            Conv3dParams::new(2, 0)
        )));
        assert!(bad(x.conv_transpose3d(
            &random(&[4, 6, 1, 1, 1], 1),
            None,
            Conv3dParams::new(1, 2)
        )));
        // Empty operands.
        let empty = Tensor::zeros(&[1, 4, 0, 5, 5]).unwrap();
        assert!(bad(empty.conv3d(
            &random(&[6, 4, 1, 1, 1], 1),
            None,
            Conv3dParams::new(1, 0)
        )));
    }

    #[test]
    fn refuses_outputs_too_large_to_allocate() {
        // A huge stride makes the transposed output's element count overflow;
        // it is refused before anything is allocated.
        let w = Tensor::zeros(&[1, 1, 1, 1, 1]).unwrap();
        let big = usize::MAX / 4;
        let x = random(&[2, 1, 2, 2, 2], 12);
        let p = Conv3dParams {
            stride: (big, big, big),
            pad: (0, 0, 0),
        };
        assert!(matches!(
            x.conv_transpose3d(&w, None, p),
            Err(Error::OutOfMemory(_))
        ));
    }
}

//! Gradient checks of every differentiable op through the [`Tensor`] API:
//! the recorded backward against central finite differences of the
//! forward, in f32. For `L = Σ r·f(x)` with a fixed random `r`, each
//! input element is perturbed by ±h (h = 1e-2) and the difference
//! quotient compared with the gradient; the tolerance is 1e-2 of the
//! largest gradient magnitude plus 1e-5/h (f32 rounding of L divided by h).
//! The kernel-level checks of the fused backward kernels live next to them
//! (`backend::cpu::grad`); these check the wiring: operand order, shapes,
//! broadcasting and the optional operands.

use crate::backend::cpu::random_normal;
use crate::backend::desc::{NormActivation, UnaryOp};
use crate::nn::{Conv3dParams, ConvParams, Tensor};
use crate::Result;

/// Checks `f`'s gradients with respect to every tensor of `inputs`.
pub(crate) fn gradcheck(
    inputs: Vec<Tensor>,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    gradcheck_with_step(inputs, 1e-2, f)
}

/// [`gradcheck`] with finite-difference step `h`: ops with a kink (leaky
/// ReLU after a normalisation that couples every element of a group) need
/// a step smaller than the distance of every pre-activation from the kink.
pub(crate) fn gradcheck_with_step(
    inputs: Vec<Tensor>,
    h: f32,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let vars: Vec<Tensor> = inputs.iter().map(Tensor::variable).collect();
    let y = f(&vars)?;
    let r = Tensor::from_vec(random_normal(y.elem_count(), 99), y.dims())?;
    let grads = y.backward_with(&r)?;
    let loss = |xs: &[Tensor]| -> Result<f64> {
        let y = f(xs)?.to_vec()?;
        Ok(y.iter()
            .zip(r.to_vec()?)
            .map(|(a, b)| f64::from(*a) * f64::from(b))
            .sum())
    };
    for (i, var) in vars.iter().enumerate() {
        let got = grads.get_or_zeros(var)?.to_vec()?;
        let scale = got.iter().fold(0f32, |m, v| m.max(v.abs()));
        let base = inputs[i].to_vec()?;
        for e in 0..base.len() {
            let at = |d: f32| -> Result<f64> {
                let mut xs: Vec<Tensor> = inputs.to_vec();
                let mut v = base.clone();
                v[e] += d;
                xs[i] = Tensor::from_vec(v, inputs[i].dims())?;
                loss(&xs)
            };
            let fd = ((at(h)? - at(-h)?) / (2.0 * f64::from(h))) as f32;
            let tol = 1e-2 * scale + 1e-5 / h;
            assert!(
                (fd - got[e]).abs() <= tol,
                "input {i} element {e}: finite difference {fd}, backward {} (tolerance {tol})",
                got[e]
            );
        }
    }
    Ok(())
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(random_normal(n, seed), shape).unwrap()
}

/// Positive values (for Sqrt, Recip and Div denominators).
fn positive(shape: &[usize], seed: u64) -> Tensor {
    random(shape, seed)
        .unary(UnaryOp::Square)
        .unwrap()
        .affine(1.0, 0.5)
        .unwrap()
}

#[test]
fn shape_ops() -> Result<()> {
    let x = random(&[2, 3, 4], 1);
    gradcheck(vec![x.clone()], |v| v[0].reshape(&[6, 4])?.permute(&[1, 0]))?;
    gradcheck(vec![x.clone()], |v| v[0].narrow(2, 1, 2))?;
    gradcheck(vec![x.clone()], |v| v[0].flip(&[0, 2]))?;
    gradcheck(vec![x.clone(), random(&[2, 1, 4], 2)], |v| {
        Tensor::cat(&[&v[0], &v[1], &v[0]], 1)
    })?;
    gradcheck(vec![x], |v| Ok(v[0].chunk(2, 2)?[1].clone()))?;
    gradcheck(vec![random(&[5, 3], 3)], |v| v[0].index_rows(&[4, 0, 4, 2]))
}

/// The batched product, every transpose combination, both operands.
#[test]
fn batched_matmul() -> Result<()> {
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = random(if trans_a { &[2, 4, 3] } else { &[2, 3, 4] }, 11);
        let b = random(if trans_b { &[2, 5, 4] } else { &[2, 4, 5] }, 12);
        gradcheck(vec![a, b], |v| v[0].matmul(&v[1], trans_a, trans_b))?;
    }
    Ok(())
}

#[test]
fn element_wise_ops() -> Result<()> {
    let (a, b) = (random(&[2, 3, 4], 4), random(&[3, 1], 5));
    gradcheck(vec![a.clone(), b.clone()], |v| v[0].add(&v[1]))?;
    gradcheck(vec![a.clone(), b.clone()], |v| v[0].sub(&v[1]))?;
    gradcheck(vec![a.clone(), b.clone()], |v| v[0].mul(&v[1]))?;
    gradcheck(vec![a.clone(), positive(&[3, 1], 6)], |v| v[0].div(&v[1]))?;
    // Max/min away from ties.
    let c = a.affine(1.0, 3.0)?;
    gradcheck(vec![a.clone(), c], |v| {
        v[0].binary(
            &v[1].affine(-1.0, 0.0)?,
            crate::backend::desc::BinaryOp::Max,
        )
    })?;
    gradcheck(vec![a.clone(), random(&[2, 3, 4], 7)], |v| {
        v[0].lincomb(0.7, &v[1], -1.3)
    })?;
    for op in [
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::LeakyRelu(0.01),
        UnaryOp::Affine(1.5, -0.5),
        UnaryOp::Exp,
        UnaryOp::Neg,
        UnaryOp::Square,
        UnaryOp::Abs,
    ] {
        gradcheck(vec![a.clone()], |v| v[0].unary(op))?;
    }
    for op in [UnaryOp::Sqrt, UnaryOp::Recip, UnaryOp::Ln] {
        gradcheck(vec![positive(&[2, 3, 4], 8)], |v| v[0].unary(op))?;
    }
    gradcheck(vec![a.clone()], |v| v[0].softmax(1))?;
    gradcheck(vec![a], |v| v[0].softmax_last())
}

#[test]
fn linear_and_attention_ops() -> Result<()> {
    let x = random(&[2, 3, 4], 9);
    let (w, b) = (random(&[5, 4], 10), random(&[5], 11));
    gradcheck(vec![x.clone(), w.clone(), b], |v| {
        v[0].linear(&v[1], Some(&v[2]))
    })?;
    gradcheck(vec![x, w], |v| v[0].linear(&v[1], None))?;
    // Two heads of width 4 over 2 groups, 3 tokens.
    let (q, k, vv) = (
        random(&[4, 3, 4], 12),
        random(&[4, 3, 4], 13),
        random(&[4, 3, 4], 14),
    );
    let bias = random(&[2, 3, 3], 15);
    gradcheck(vec![q.clone(), k.clone(), vv.clone(), bias], |v| {
        Tensor::attention(&v[0], &v[1], &v[2], 2, Some(&v[3]))
    })?;
    gradcheck(vec![q.clone(), k, vv], |v| {
        Tensor::attention(&v[0], &v[1], &v[2], 2, None)
    })?;
    let freqs = Tensor::from_vec(vec![1.0, 0.1], &[2])?;
    gradcheck(vec![q], |v| v[0].rotary(&freqs))?;
    // Linear attention: 2 heads of width 2, 2 frames of 2×3.
    gradcheck(vec![random(&[1, 12, 2, 2, 3], 16)], |v| {
        v[0].linear_attention(2)
    })
}

#[test]
fn normalisations() -> Result<()> {
    let x = random(&[2, 4, 2, 3], 17);
    let (w, b) = (random(&[4], 18), random(&[4], 19));
    let (scale, shift) = (random(&[2, 4, 1, 1], 20), random(&[2, 4, 1, 1], 21));
    let res = random(&[2, 4, 2, 3], 22);
    for act in [
        NormActivation::Identity,
        NormActivation::Silu,
        NormActivation::LeakyRelu(0.01),
    ] {
        let h = if matches!(act, NormActivation::LeakyRelu(_)) {
            1e-3
        } else {
            1e-2
        };
        gradcheck_with_step(
            vec![
                x.clone(),
                w.clone(),
                b.clone(),
                scale.clone(),
                shift.clone(),
                res.clone(),
            ],
            h,
            |v| {
                v[0].group_norm_fused(
                    2,
                    Some(&v[1]),
                    Some(&v[2]),
                    1e-5,
                    act,
                    Some((&v[3], &v[4])),
                    Some(&v[5]),
                )
            },
        )?;
    }
    gradcheck(vec![x.clone()], |v| v[0].group_norm(4, None, None, 1e-5))?;
    gradcheck(vec![x.clone(), w.clone(), b], |v| {
        v[0].instance_norm_act(
            Some(&v[1]),
            Some(&v[2]),
            1e-5,
            NormActivation::LeakyRelu(0.01),
        )
    })?;
    gradcheck(vec![x, random(&[1, 4, 1, 1], 23)], |v| {
        v[0].layer_norm_channels(&v[1], 1e-5)
    })
}

#[test]
fn convolutions() -> Result<()> {
    let x = random(&[2, 3, 2, 5, 6], 24);
    for (k, p) in [
        (3, ConvParams::new(1, 1)),
        (3, ConvParams::new(2, 0)),
        (1, ConvParams::new(1, 0)),
    ] {
        let w = random(&[2, 3, 1, k, k], 25);
        gradcheck(vec![x.clone(), w.clone(), random(&[2], 26)], |v| {
            v[0].conv2d(&v[1], Some(&v[2]), p)
        })?;
    }
    let w = random(&[2, 3, 1, 3, 3], 27);
    let y = x.conv2d(&w, None, ConvParams::new(1, 1))?;
    gradcheck(vec![x.clone(), w, y], |v| {
        v[0].conv2d_add(&v[1], None, ConvParams::new(1, 1), &v[2])
    })?;
    let small = random(&[1, 3, 1, 3, 4], 28);
    gradcheck(
        vec![small, random(&[3, 2, 1, 4, 4], 29), random(&[2], 30)],
        |v| v[0].conv_transpose2d(&v[1], Some(&v[2]), ConvParams::new(2, 1)),
    )?;
    let vol = random(&[1, 2, 3, 4, 5], 31);
    gradcheck(
        vec![vol.clone(), random(&[3, 2, 3, 3, 3], 32), random(&[3], 33)],
        |v| v[0].conv3d(&v[1], Some(&v[2]), Conv3dParams::new(1, 1)),
    )?;
    gradcheck(vec![vol.clone(), random(&[2, 2, 3, 3, 3], 34)], |v| {
        v[0].conv3d(&v[1], None, Conv3dParams::new(2, 1))
    })?;
    gradcheck(
        vec![vol, random(&[2, 3, 2, 2, 2], 35), random(&[3], 36)],
        |v| v[0].conv_transpose3d(&v[1], Some(&v[2]), Conv3dParams::new(2, 0)),
    )
}

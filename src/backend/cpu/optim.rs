//! The optimiser update rules on f32 slices: the one implementation the
//! host optimiser (`crate::train::optim`) and the CPU's
//! `optimizer_update` op share, so the two cannot drift apart. Every
//! product and sum is written in PyTorch's order (Rust never contracts
//! them into FMAs), which `kernels/optim.cu` repeats with `__f*_rn`
//! intrinsics for bit-identical GPU results.

use crate::backend::desc::{OptimizerRule, OptimizerStep};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 16;

/// Updates `params` and `state` (the rule's buffers, each of the
/// parameter's length) in place with `grad` (see [`OptimizerStep`]). The
/// caller has checked the lengths and the step.
pub(crate) fn update_in_place(
    params: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<f32>],
    s: &OptimizerStep,
) {
    let [f0, f1] = s.grad_factors;
    let (lr, wd) = (s.lr, s.weight_decay);
    match s.rule {
        OptimizerRule::Adam {
            beta1,
            beta2,
            eps,
            decoupled,
        } => {
            let [step_size, bias2_sqrt] = s.adam_scalars(beta1, beta2);
            let (m, v) = state.split_at_mut(1);
            let decay = 1.0 - lr * wd;
            params
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m[0].par_chunks_mut(CHUNK).zip(v[0].par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| {
                    super::simd(|| {
                        for i in 0..p.len() {
                            let mut grad = g[i] * f0 * f1;
                            if decoupled {
                                p[i] *= decay;
                            } else if wd != 0.0 {
                                grad += wd * p[i];
                            }
                            // lerp as torch: m += (g − m)·(1 − β₁).
                            m[i] += (grad - m[i]) * (1.0 - beta1);
                            v[i] = v[i] * beta2 + (1.0 - beta2) * grad * grad;
                            let denom = v[i].sqrt() / bias2_sqrt + eps;
                            p[i] -= step_size * (m[i] / denom);
                        }
                    })
                });
        }
        OptimizerRule::Sgd { momentum, nesterov } => {
            let first = s.step == 1;
            params
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(state[0].par_chunks_mut(CHUNK))
                .for_each(|((p, g), buf)| {
                    super::simd(|| {
                        for i in 0..p.len() {
                            let mut grad = g[i] * f0 * f1;
                            if wd != 0.0 {
                                grad += wd * p[i];
                            }
                            if momentum != 0.0 {
                                buf[i] = if first {
                                    grad
                                } else {
                                    buf[i] * momentum + grad
                                };
                                grad = if nesterov {
                                    grad + momentum * buf[i]
                                } else {
                                    buf[i]
                                };
                            }
                            p[i] -= lr * grad;
                        }
                    })
                });
        }
    }
}

/// The sum of squares of each part, accumulated in f64 in element order.
pub(crate) fn squared_norms(parts: &[&[f32]]) -> Vec<f64> {
    parts
        .par_iter()
        .map(|x| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .collect()
}

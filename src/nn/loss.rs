//! Training losses, each a differentiable op with a one-element result.
//!
//! The losses reduce whole tensors to one number, so they run on host
//! values (a download for GPU tensors) and give their gradient back on the
//! operand's device: a small cost next to the network they sit behind.

use crate::nn::ops::expect_shape;
use crate::nn::Tensor;
use crate::{Error, Result};

/// A one-element tensor on `like`'s device.
fn scalar_like(value: f32, like: &Tensor) -> Result<Tensor> {
    Tensor::from_slice_on(&[value], &[1], &like.device(), like.dtype())
}

impl Tensor {
    /// The upstream lesion-focused objective: `mean |mask·(target − self)|`
    /// over **all** elements (the background is never learned), with
    /// `mask` 1 inside the lesion and 0 elsewhere. Gradient flows to `self`
    /// (the prediction) only.
    pub fn masked_l1_loss(&self, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
        expect_shape(target, self.dims(), "masked_l1_loss target")?;
        expect_shape(mask, self.dims(), "masked_l1_loss mask")?;
        if target.is_tracked() || mask.is_tracked() {
            return Err(Error::invalid(
                "masked_l1_loss: the target and mask must not be tracked",
            ));
        }
        let (p, t, m) = (self.to_vec()?, target.to_vec()?, mask.to_vec()?);
        let n = p.len().max(1) as f64;
        let sum: f64 = p
            .iter()
            .zip(&t)
            .zip(&m)
            .map(|((p, t), m)| f64::from((m * t - m * p).abs()))
            .sum();
        let loss = scalar_like((sum / n) as f32, self)?;
        Ok(loss.record("masked_l1_loss", &[self], |_| {
            let like = self.detach();
            Box::new(move |g, _| {
                let scale = g.to_vec()?[0] / n as f32;
                // d|m·t − m·p|/dp = −m·sign(m·t − m·p), 0 where equal (as
                // PyTorch's l1_loss).
                let grad: Vec<f32> = p
                    .iter()
                    .zip(&t)
                    .zip(&m)
                    .map(|((p, t), m)| {
                        let d = m * p - m * t;
                        let sign = if d > 0.0 {
                            1.0
                        } else if d < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        scale * m * sign
                    })
                    .collect();
                Ok(vec![Some(Tensor::from_slice_on(
                    &grad,
                    like.dims(),
                    &like.device(),
                    like.dtype(),
                )?)])
            })
        }))
    }

    /// Mean cross-entropy of logits `self` (`[B, K, ...]`) against integer
    /// class maps `target` (`[B, ...]` as f32 class indices 0..K), as
    /// PyTorch's `CrossEntropyLoss` (mean over voxels).
    pub fn cross_entropy_loss(&self, target: &[u8]) -> Result<Tensor> {
        let (b, k, s) = class_layout(self, target.len(), "cross_entropy_loss")?;
        let probs = softmax_host(&self.to_vec()?, b, k, s);
        let mut sum = 0f64;
        for bi in 0..b {
            for v in 0..s {
                let class = usize::from(target[bi * s + v]);
                if class >= k {
                    return Err(Error::invalid(format!(
                        "cross_entropy_loss: class {class} for {k} logits"
                    )));
                }
                sum -= f64::from(probs[(bi * k + class) * s + v].max(f32::MIN_POSITIVE).ln());
            }
        }
        let n = (b * s).max(1) as f32;
        let loss = scalar_like((sum / n as f64) as f32, self)?;
        let target = target.to_vec();
        Ok(loss.record("cross_entropy_loss", &[self], |_| {
            let like = self.detach();
            Box::new(move |g, _| {
                let scale = g.to_vec()?[0] / n;
                let mut grad = probs.clone();
                for bi in 0..b {
                    for v in 0..s {
                        grad[(bi * k + usize::from(target[bi * s + v])) * s + v] -= 1.0;
                    }
                }
                grad.iter_mut().for_each(|x| *x *= scale);
                Ok(vec![Some(Tensor::from_slice_on(
                    &grad,
                    like.dims(),
                    &like.device(),
                    like.dtype(),
                )?)])
            })
        }))
    }

    /// nnU-Net's soft Dice loss on logits `self` (`[B, K, ...]`) against
    /// class maps `target`: softmax probabilities, per-class
    /// `(2·tp + smooth) / clamp(2·tp + fp + fn + smooth, 1e-8)` with the
    /// sums over the whole batch (`batch_dice`) or per sample, background
    /// (class 0) excluded, and the loss is `−mean` of those Dice values.
    pub fn soft_dice_loss(&self, target: &[u8], batch_dice: bool, smooth: f32) -> Result<Tensor> {
        let (b, k, s) = class_layout(self, target.len(), "soft_dice_loss")?;
        if k < 2 {
            return Err(Error::invalid("soft_dice_loss: needs at least 2 classes"));
        }
        let probs = softmax_host(&self.to_vec()?, b, k, s);
        let groups = if batch_dice { 1 } else { b };
        // Per (group, foreground class): Σp·y, Σp, Σy.
        let mut inter = vec![0f64; groups * (k - 1)];
        let mut sum_p = vec![0f64; groups * (k - 1)];
        let mut sum_y = vec![0f64; groups * (k - 1)];
        for bi in 0..b {
            let gi = if batch_dice { 0 } else { bi };
            for c in 1..k {
                let slot = gi * (k - 1) + c - 1;
                for v in 0..s {
                    let p = f64::from(probs[(bi * k + c) * s + v]);
                    let class = usize::from(target[bi * s + v]);
                    if class >= k {
                        return Err(Error::invalid(format!(
                            "soft_dice_loss: class {class} for {k} logits"
                        )));
                    }
                    let y = if class == c { 1.0 } else { 0.0 };
                    inter[slot] += p * y;
                    sum_p[slot] += p;
                    sum_y[slot] += y;
                }
            }
        }
        let smooth = f64::from(smooth);
        let count = (groups * (k - 1)) as f64;
        let mut dice_sum = 0f64;
        // dL/dp per slot: L = −mean(num/den), num = 2I + s, den = Σp + Σy + s
        // (2·tp + fp + fn = Σp + Σy).
        let mut d_inter = vec![0f64; inter.len()];
        let mut d_sum_p = vec![0f64; inter.len()];
        for slot in 0..inter.len() {
            let num = 2.0 * inter[slot] + smooth;
            let den = (sum_p[slot] + sum_y[slot] + smooth).max(1e-8);
            dice_sum += num / den;
            d_inter[slot] = -(2.0 / den) / count;
            d_sum_p[slot] = (num / (den * den)) / count;
        }
        let loss = scalar_like((-dice_sum / count) as f32, self)?;
        let target = target.to_vec();
        Ok(loss.record("soft_dice_loss", &[self], |_| {
            let like = self.detach();
            Box::new(move |g, _| {
                let scale = f64::from(g.to_vec()?[0]);
                // Gradient w.r.t. the probabilities, then through the softmax.
                let mut dp = vec![0f32; probs.len()];
                for bi in 0..b {
                    let gi = if batch_dice { 0 } else { bi };
                    for c in 1..k {
                        let slot = gi * (k - 1) + c - 1;
                        for v in 0..s {
                            let y = usize::from(target[bi * s + v]) == c;
                            let d = d_sum_p[slot] + if y { d_inter[slot] } else { 0.0 };
                            dp[(bi * k + c) * s + v] = (scale * d) as f32;
                        }
                    }
                }
                let grad = softmax_vjp(&probs, &dp, b, k, s);
                Ok(vec![Some(Tensor::from_slice_on(
                    &grad,
                    like.dims(),
                    &like.device(),
                    like.dtype(),
                )?)])
            })
        }))
    }
}

/// `(B, K, S)` of logits `[B, K, ...]` with `labels` B·S class indices.
fn class_layout(logits: &Tensor, labels: usize, what: &str) -> Result<(usize, usize, usize)> {
    if logits.rank() < 2 {
        return Err(Error::invalid(format!(
            "{what}: logits {:?} are not [B, K, ...]",
            logits.dims()
        )));
    }
    let (b, k) = (logits.dims()[0], logits.dims()[1]);
    let s: usize = logits.dims()[2..].iter().product();
    if labels != b * s {
        return Err(Error::invalid(format!(
            "{what}: {labels} labels for logits {:?}",
            logits.dims()
        )));
    }
    Ok((b, k, s))
}

/// Softmax over the class axis of `[B, K, S]` host values.
fn softmax_host(x: &[f32], b: usize, k: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for v in 0..s {
            let at = |c: usize| (bi * k + c) * s + v;
            let max = (0..k).map(|c| x[at(c)]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..k).map(|c| (x[at(c)] - max).exp()).sum();
            for c in 0..k {
                out[at(c)] = (x[at(c)] - max).exp() / sum;
            }
        }
    }
    out
}

/// Gradient w.r.t. softmax logits given the probabilities and `dp`.
fn softmax_vjp(p: &[f32], dp: &[f32], b: usize, k: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; p.len()];
    for bi in 0..b {
        for v in 0..s {
            let at = |c: usize| (bi * k + c) * s + v;
            let dot: f32 = (0..k).map(|c| p[at(c)] * dp[at(c)]).sum();
            for c in 0..k {
                out[at(c)] = p[at(c)] * (dp[at(c)] - dot);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::random_normal;

    /// Central differences of `loss(x)` against the recorded gradient.
    fn check(x: &[f32], shape: &[usize], loss: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        let v = Tensor::from_vec(x.to_vec(), shape)?.variable();
        let grads = loss(&v)?.backward()?;
        let got = grads.get(&v).expect("gradient").to_vec()?;
        let h = 1e-3f32;
        for i in 0..x.len() {
            let f = |d: f32| -> Result<f32> {
                let mut y = x.to_vec();
                y[i] += d;
                Ok(loss(&Tensor::from_vec(y, shape)?)?.to_vec()?[0])
            };
            let fd = (f(h)? - f(-h)?) / (2.0 * h);
            assert!(
                (fd - got[i]).abs() < 2e-3,
                "element {i}: fd {fd} vs {}",
                got[i]
            );
        }
        Ok(())
    }

    #[test]
    fn masked_l1_gradient_and_value() -> Result<()> {
        let shape = [2, 1, 3, 4];
        let x = random_normal(24, 1);
        let target = Tensor::from_vec(random_normal(24, 2), &shape)?;
        let mask: Vec<f32> = (0..24).map(|i| f32::from(i % 3 == 0)).collect();
        let mask = Tensor::from_vec(mask, &shape)?;
        let value = Tensor::from_vec(x.clone(), &shape)?
            .masked_l1_loss(&target, &mask)?
            .to_vec()?[0];
        let t = target.to_vec()?;
        let want: f32 = (0..24)
            .filter(|i| i % 3 == 0)
            .map(|i| (t[i] - x[i]).abs())
            .sum::<f32>()
            / 24.0;
        assert!((value - want).abs() < 1e-6);
        check(&x, &shape, |p| p.masked_l1_loss(&target, &mask))
    }

    #[test]
    fn cross_entropy_and_dice_gradients() -> Result<()> {
        let shape = [2, 3, 2, 3];
        let x = random_normal(36, 3);
        let labels: Vec<u8> = (0..12).map(|i| (i * 7 % 3) as u8).collect();
        check(&x, &shape, |p| p.cross_entropy_loss(&labels))?;
        check(&x, &shape, |p| p.soft_dice_loss(&labels, true, 1e-5))?;
        check(&x, &shape, |p| p.soft_dice_loss(&labels, false, 1e-5))?;
        // A perfect, confident prediction has Dice loss ≈ −1 and CE ≈ 0.
        let mut sure = vec![-20f32; 36];
        for (i, l) in labels.iter().enumerate() {
            let (b, v) = (i / 6, i % 6);
            sure[(b * 3 + usize::from(*l)) * 6 + v] = 20.0;
        }
        let sure = Tensor::from_vec(sure, &shape)?;
        assert!(sure.cross_entropy_loss(&labels)?.to_vec()?[0] < 1e-6);
        assert!((sure.soft_dice_loss(&labels, true, 1e-5)?.to_vec()?[0] + 1.0).abs() < 1e-5);
        assert!(sure.cross_entropy_loss(&[9; 12]).is_err());
        assert!(sure.cross_entropy_loss(&[0; 5]).is_err());
        Ok(())
    }
}

//! Training losses, each a differentiable op with a one-element result.
//!
//! On the CPU each loss is one host pass in f64 with its gradient written
//! out by hand. On a GPU the same loss is composed of engine ops (softmax,
//! element-wise maps, sums) that autograd differentiates, so the logits
//! never leave the device: downloading them and running the host softmax
//! would cost a segmentation step as much as its network does. Both forms
//! are checked against each other on the CPU (the tests below).

use crate::backend::desc::{BinaryOp, UnaryOp};
use crate::nn::ops::expect_shape;
use crate::nn::{Device, Tensor};
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
        if !matches!(self.device(), Device::Cpu) {
            return composed::masked_l1(self, target, mask);
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
        check_classes(target, k, "cross_entropy_loss")?;
        if !matches!(self.device(), Device::Cpu) {
            return composed::cross_entropy(self, target);
        }
        let probs = softmax_host(&self.to_vec()?, b, k, s);
        let mut sum = 0f64;
        for bi in 0..b {
            for v in 0..s {
                let class = usize::from(target[bi * s + v]);
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
        check_classes(target, k, "soft_dice_loss")?;
        if !matches!(self.device(), Device::Cpu) {
            return composed::soft_dice(self, target, batch_dice, smooth);
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

/// An error naming `what` when a class index is not below `k`.
fn check_classes(target: &[u8], k: usize, what: &str) -> Result<()> {
    match target.iter().find(|&&c| usize::from(c) >= k) {
        Some(class) => Err(Error::invalid(format!(
            "{what}: class {class} for {k} logits"
        ))),
        None => Ok(()),
    }
}

/// The losses as compositions of engine ops, for tensors off the CPU: the
/// same values and gradients as the host forms, computed in f32 whatever
/// the operand's type (the sums would overflow f16), without a download.
/// Each returns a `[1]` f32 tensor on the operand's device (the host forms
/// give the operand's type; the trainers' losses are f32 either way).
pub(crate) mod composed {
    use super::*;
    use crate::nn::DType;

    /// Below this many elements a sum is one pass; longer sums go through
    /// a `[rows, cols]` split so that the device's column reduction spreads
    /// over many blocks instead of one block per row.
    const WIDE_SUM: usize = 1 << 16;

    /// The largest column count to split a long sum into.
    const SPLIT_COLS: usize = 4096;

    /// `Σ` over the last dimension of `[rows, n]`, as `[rows, 1]`.
    pub(crate) fn sum_rows(x: &Tensor) -> Result<Tensor> {
        let (rows, n) = (x.dims()[0], x.dims()[1]);
        let cols = split_columns(n);
        if cols == 1 {
            return x.sum_keepdim(1);
        }
        x.reshape(&[rows, n / cols, cols])?
            .sum_keepdim(1)?
            .reshape(&[rows, cols])?
            .sum_keepdim(1)
    }

    /// The column count for a sum of `n` values: the largest divisor of `n`
    /// up to [`SPLIT_COLS`] for long sums, else 1 (one pass).
    pub(crate) fn split_columns(n: usize) -> usize {
        if n < WIDE_SUM {
            return 1;
        }
        (1..=SPLIT_COLS).rev().find(|c| n % c == 0).unwrap_or(1)
    }

    /// The mean of every element, as a `[1]` tensor.
    fn mean_all(x: &Tensor) -> Result<Tensor> {
        let n = x.elem_count();
        sum_rows(&x.reshape(&[1, n])?)?
            .reshape(&[1])?
            .affine(1.0 / n.max(1) as f32, 0.0)
    }

    /// `[B, K, S]` one-hot classes on `like`'s device: the class indices
    /// go up as `[B, 1, S]` (one value per voxel, not K) and meet the
    /// `[1, K, 1]` class numbers in an exact equality mask.
    fn one_hot(target: &[u8], (b, k, s): (usize, usize, usize), like: &Tensor) -> Result<Tensor> {
        let classes: Vec<f32> = target.iter().map(|&c| f32::from(c)).collect();
        let numbers: Vec<f32> = (0..k).map(|c| c as f32).collect();
        let (device, dtype) = (like.device(), like.dtype());
        let classes = Tensor::from_slice_on(&classes, &[b, 1, s], &device, dtype)?;
        let numbers = Tensor::from_slice_on(&numbers, &[1, k, 1], &device, dtype)?;
        classes.sub(&numbers)?.is_zero()
    }

    /// `mean |mask·target − mask·pred|`.
    pub(crate) fn masked_l1(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let device = pred.device();
        let pred = pred.to_dtype(DType::F32)?;
        let target = target.to_device(&device, DType::F32)?;
        let mask = mask.to_device(&device, DType::F32)?;
        mean_all(&mask.mul(&target)?.sub(&mask.mul(&pred)?)?.abs()?)
    }

    /// Mean cross-entropy, `ln Σ_c e^{x_c} − x_target` per voxel.
    ///
    /// The log-sum-exp is shifted by `m = Σ_c p_c·x_c` (detached; the
    /// gradient is `p − onehot` either way). `m = ln Σ_c e^{x_c} − H(p)`, so
    /// `0 ≤ max − m ≤ H(p) ≤ ln K`: every term `e^{x_c − m}` is at most K
    /// and the largest at least 1, so the sum neither overflows nor has a
    /// logarithm of 0. Stable without a max reduction.
    ///
    /// A logit of −∞ (an f16 network output that overflowed, which loss
    /// scaling expects now and then) is raised to the lowest finite f32
    /// first: its class then has probability 0 and no gradient, as in
    /// PyTorch, where `0·(−∞)` in the shift or the one-hot product would
    /// make the loss NaN and stop the run.
    pub(crate) fn cross_entropy(x: &Tensor, target: &[u8]) -> Result<Tensor> {
        let (b, k, s) = class_layout(x, target.len(), "cross_entropy_loss")?;
        let lowest = Tensor::full_on(f32::MIN, &[1, 1, 1], &x.device(), DType::F32)?;
        let x = x
            .to_dtype(DType::F32)?
            .reshape(&[b, k, s])?
            .binary(&lowest, BinaryOp::Max)?;
        let onehot = one_hot(target, (b, k, s), &x)?;
        let xd = x.detach();
        let m = xd.softmax(1)?.mul(&xd)?.sum_keepdim(1)?;
        let shifted = x.sub(&m)?;
        let log_sum = shifted.unary(UnaryOp::Exp)?.sum_keepdim(1)?.ln()?;
        let picked = shifted.mul(&onehot)?.sum_keepdim(1)?;
        mean_all(&log_sum.sub(&picked)?)
    }

    /// nnU-Net's soft Dice loss (see [`Tensor::soft_dice_loss`]); the label
    /// counts `Σy` are exact integers taken on the host.
    pub(crate) fn soft_dice(
        x: &Tensor,
        target: &[u8],
        batch_dice: bool,
        smooth: f32,
    ) -> Result<Tensor> {
        let (b, k, s) = class_layout(x, target.len(), "soft_dice_loss")?;
        let fg = k - 1;
        let (device, dtype) = (x.device(), DType::F32);
        let x = x.to_dtype(dtype)?.reshape(&[b, k, s])?;
        let probs = x.softmax(1)?.narrow(1, 1, fg)?;
        let onehot = one_hot(target, (b, k, s), &x)?.narrow(1, 1, fg)?;
        let groups = if batch_dice { 1 } else { b };
        // Per (group, foreground class) sums over the voxels: [groups, fg].
        let per_group = |t: &Tensor| -> Result<Tensor> {
            let rows = sum_rows(&t.reshape(&[b * fg, s])?)?.reshape(&[b, fg])?;
            if batch_dice {
                rows.sum_keepdim(0)
            } else {
                Ok(rows)
            }
        };
        let inter = per_group(&probs.mul(&onehot)?)?;
        let sum_p = per_group(&probs)?;
        let mut counts = vec![0u64; groups * fg];
        for (i, &class) in target.iter().enumerate() {
            if class > 0 {
                let group = if batch_dice { 0 } else { i / s };
                counts[group * fg + usize::from(class) - 1] += 1;
            }
        }
        let counts: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
        let sum_y = Tensor::from_slice_on(&counts, &[groups, fg], &device, dtype)?;
        let floor = Tensor::from_slice_on(&[1e-8], &[1], &device, dtype)?;
        let num = inter.affine(2.0, smooth)?;
        let den = sum_p
            .add(&sum_y)?
            .affine(1.0, smooth)?
            .binary(&floor, BinaryOp::Max)?;
        mean_all(&num.div(&den)?)?.affine(-1.0, 0.0)
    }
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

    /// Value and gradient of `loss` at `x`.
    fn value_and_gradient(
        x: &[f32],
        shape: &[usize],
        loss: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(f32, Vec<f32>)> {
        let v = Tensor::from_vec(x.to_vec(), shape)?.variable();
        let out = loss(&v)?;
        assert_eq!(out.dims(), [1]);
        let grads = out.backward()?;
        let g = grads.get(&v).expect("a gradient").to_vec()?;
        Ok((out.to_vec()?[0], g))
    }

    /// The composed (device) form against the host form on the CPU.
    fn same_as_host(
        what: &str,
        x: &[f32],
        shape: &[usize],
        host: impl Fn(&Tensor) -> Result<Tensor>,
        device: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let (want, want_g) = value_and_gradient(x, shape, host)?;
        let (got, got_g) = value_and_gradient(x, shape, device)?;
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: loss {got} vs host {want}"
        );
        let scale = want_g.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = crate::testing::max_rel_error(&got_g, &want_g);
        assert!(
            err <= 1e-4,
            "{what}: gradient error {err} (largest {scale})"
        );
        Ok(())
    }

    #[test]
    fn composed_losses_equal_the_host_losses() -> Result<()> {
        // Small, one-class-absent, 3-D, and long enough to split the sums.
        let layouts: [(&[usize], u64); 4] = [
            (&[2, 3, 2, 3], 4),
            (&[1, 4, 5, 7], 5),
            (&[2, 2, 3, 4, 5], 6),
            (&[2, 3, 40, 1640], 7),
        ];
        for (shape, seed) in layouts {
            let (b, k) = (shape[0], shape[1]);
            let s: usize = shape[2..].iter().product();
            let x: Vec<f32> = random_normal(b * k * s, seed)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            // Class k − 1 never occurs in the second layout.
            let top = if k == 4 { k - 1 } else { k };
            let labels: Vec<u8> = (0..b * s).map(|i| ((i * 7 + i / 5) % top) as u8).collect();
            let what = format!("{shape:?}");
            same_as_host(
                &format!("ce {what}"),
                &x,
                shape,
                |p| p.cross_entropy_loss(&labels),
                |p| composed::cross_entropy(p, &labels),
            )?;
            for (batch_dice, smooth) in [(true, 1e-5), (false, 1e-5), (false, 0.0)] {
                same_as_host(
                    &format!("dice {what} {batch_dice} {smooth}"),
                    &x,
                    shape,
                    |p| p.soft_dice_loss(&labels, batch_dice, smooth),
                    |p| composed::soft_dice(p, &labels, batch_dice, smooth),
                )?;
            }
            let target = Tensor::from_vec(random_normal(x.len(), seed + 10), shape)?;
            let mut m: Vec<f32> = (0..x.len()).map(|i| f32::from(i % 3 == 0)).collect();
            // Equal prediction and target: a zero subgradient in both forms.
            let mut x = x;
            x[0] = target.to_vec()?[0];
            m[0] = 1.0;
            let mask = Tensor::from_vec(m, shape)?;
            same_as_host(
                &format!("l1 {what}"),
                &x,
                shape,
                |p| p.masked_l1_loss(&target, &mask),
                |p| composed::masked_l1(p, &target, &mask),
            )?;
        }
        Ok(())
    }

    #[test]
    fn composed_cross_entropy_is_stable_for_far_apart_logits() -> Result<()> {
        // Gaps of hundreds: e^{x} overflows f32 and e^{−gap} underflows;
        // the wrongly-confident voxel's true class has probability 0.
        let shape = [1, 3, 4];
        let x = [
            500.0, -400.0, 0.0, 60_000.0, // class 0
            -300.0, 400.0, 0.0, -60_000.0, // class 1
            0.0, 0.0, 0.0, 0.0, // class 2
        ];
        let labels = [0u8, 0, 2, 1];
        let (loss, grad) = value_and_gradient(&x, &shape, |p| composed::cross_entropy(p, &labels))?;
        // Voxel 1 costs 800, voxel 3 120 000, the others ≈ 0 and ln 3.
        let want = (800.0 + 3f32.ln() + 120_000.0) / 4.0;
        assert!((loss - want).abs() < 1e-3 * want, "{loss} vs {want}");
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
        // p − onehot over 4 voxels: voxel 1 moves from class 1 to class 0.
        assert!((grad[1] + 0.25).abs() < 1e-6 && (grad[5] - 0.25).abs() < 1e-6);
        // The host form has the same gradient; its value caps each voxel
        // at −ln(f32::MIN_POSITIVE) ≈ 87.3 where the composed form, like
        // PyTorch's log-softmax, does not.
        let (host, host_grad) = value_and_gradient(&x, &shape, |p| p.cross_entropy_loss(&labels))?;
        let capped = -f32::MIN_POSITIVE.ln();
        assert!(
            (host - (2.0 * capped + 3f32.ln()) / 4.0).abs() < 1e-3,
            "{host}"
        );
        assert!(crate::testing::max_rel_error(&grad, &host_grad) < 1e-5);
        // A −∞ logit outside the target class (an overflowed f16 output)
        // leaves the loss and gradient finite and equal to the host form's;
        // on the target class the loss is as large as f32 holds, not NaN.
        let x = [
            f32::NEG_INFINITY,
            1.0,
            0.5, // class 0
            2.0,
            f32::NEG_INFINITY,
            -1.0, // class 1
        ];
        let labels = [1u8, 0, 0];
        let shape = [1, 2, 3];
        let (loss, grad) = value_and_gradient(&x, &shape, |p| composed::cross_entropy(p, &labels))?;
        let (host, host_grad) = value_and_gradient(&x, &shape, |p| p.cross_entropy_loss(&labels))?;
        assert!(
            loss.is_finite() && (loss - host).abs() < 1e-5,
            "{loss} vs {host}"
        );
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
        assert!(crate::testing::max_rel_error(&grad, &host_grad) < 1e-5);
        assert_eq!((grad[0], grad[4]), (0.0, 0.0), "no gradient to a −∞ logit");
        let (on_target, _) =
            value_and_gradient(&x, &shape, |p| composed::cross_entropy(p, &[0, 1, 1]))?;
        assert!(!on_target.is_nan() && on_target > 1e30, "{on_target}");
        Ok(())
    }

    #[test]
    fn long_sums_split_into_columns() -> Result<()> {
        assert_eq!(composed::split_columns(1000), 1);
        assert_eq!(composed::split_columns(1 << 20), 4096);
        assert_eq!(composed::split_columns(65_600), 3280);
        // A prime length stays one pass.
        assert_eq!(composed::split_columns(65_537), 1);
        let x = Tensor::from_vec(
            (0..2 * 65_600).map(|i| (i % 7) as f32).collect(),
            &[2, 65_600],
        )?;
        let sums = composed::sum_rows(&x)?;
        assert_eq!(sums.dims(), [2, 1]);
        let want: f32 = (0..65_600).map(|i| (i % 7) as f32).sum();
        let want_second: f32 = (65_600..131_200).map(|i| (i % 7) as f32).sum();
        assert_eq!(sums.to_vec()?, [want, want_second]);
        Ok(())
    }
}

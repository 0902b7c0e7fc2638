//! nnU-Net's training loss: soft Dice + cross-entropy on every
//! deep-supervision head, weighted `1/2^i` from the full-resolution head
//! down, the lowest head weighted 0, normalised to sum 1.

use crate::nn::Tensor;
use crate::{Error, Result};

/// The deep-supervision weights of `heads` outputs (full resolution first):
/// `1/2^i`, the last set to 0 (nnU-Net's single-process default), then
/// normalised to sum to 1. One head gets weight 1.
pub fn deep_supervision_weights(heads: usize) -> Vec<f32> {
    if heads <= 1 {
        return vec![1.0; heads];
    }
    let mut w: Vec<f64> = (0..heads).map(|i| 0.5f64.powi(i as i32)).collect();
    w[heads - 1] = 0.0;
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// nnU-Net's `DC_and_CE_loss` (weights 1 and 1, soft Dice without
/// background, smooth 1e-5) summed over the heads with
/// [`deep_supervision_weights`]. `targets[i]` holds the class of every
/// voxel of head `i`'s output (`B·spatial` values).
pub fn dice_ce_loss(logits: &[Tensor], targets: &[Vec<u8>], batch_dice: bool) -> Result<Tensor> {
    if logits.is_empty() || logits.len() != targets.len() {
        return Err(Error::invalid(format!(
            "dice_ce_loss: {} outputs for {} targets",
            logits.len(),
            targets.len()
        )));
    }
    let weights = deep_supervision_weights(logits.len());
    let mut total: Option<Tensor> = None;
    for ((out, target), w) in logits.iter().zip(targets).zip(weights) {
        if w == 0.0 {
            continue;
        }
        let head = out
            .cross_entropy_loss(target)?
            .add(&out.soft_dice_loss(target, batch_dice, 1e-5)?)?
            .affine(w, 0.0)?;
        total = Some(match total {
            Some(t) => t.add(&head)?,
            None => head,
        });
    }
    total.ok_or_else(|| Error::Internal("dice_ce_loss: every weight is zero".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_halve_and_drop_the_lowest_head() {
        assert_eq!(deep_supervision_weights(1), vec![1.0]);
        let w = deep_supervision_weights(4);
        // 1, 1/2, 1/4, 0 normalised by 7/4.
        let want = [4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0, 0.0];
        assert!(
            w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-7),
            "{w:?}"
        );
    }

    #[test]
    fn loss_sums_the_weighted_heads_and_its_gradient_reaches_each_used_head() -> Result<()> {
        let full = Tensor::from_vec(
            crate::backend::cpu::random_normal(2 * 3 * 16, 1),
            &[2, 3, 4, 4],
        )?;
        let half = Tensor::from_vec(
            crate::backend::cpu::random_normal(2 * 3 * 4, 2),
            &[2, 3, 2, 2],
        )?;
        let low = Tensor::from_vec(crate::backend::cpu::random_normal(2 * 3, 3), &[2, 3, 1, 1])?;
        let t_full: Vec<u8> = (0..32).map(|i| (i % 3) as u8).collect();
        let t_half: Vec<u8> = (0..8).map(|i| (i % 3) as u8).collect();
        let t_low = vec![1u8, 2];
        let vars = [full.variable(), half.variable(), low.variable()];
        let loss = dice_ce_loss(&vars, &[t_full.clone(), t_half.clone(), t_low], true)?;
        let head = |x: &Tensor, t: &[u8]| -> Result<f32> {
            Ok(x.cross_entropy_loss(t)?.to_vec()?[0]
                + x.soft_dice_loss(t, true, 1e-5)?.to_vec()?[0])
        };
        let want = 2.0 / 3.0 * head(&full, &t_full)? + 1.0 / 3.0 * head(&half, &t_half)?;
        assert!((loss.to_vec()?[0] - want).abs() < 1e-5);
        let grads = loss.backward()?;
        assert!(grads.get(&vars[0]).is_some() && grads.get(&vars[1]).is_some());
        assert!(
            grads.get(&vars[2]).is_none(),
            "the zero-weight head gets no gradient"
        );
        assert!(dice_ce_loss(&vars[..1], &[], true).is_err());
        Ok(())
    }
}

//! The optimiser's fused update and the gradient norms, on the device the
//! parameters live on (see `crate::train::resident`): a training step on a
//! GPU never copies its weights, gradients or optimiser state to the host.

use super::expect_shape;
use crate::backend::desc::OptimizerStep;
use crate::nn::storage::Storage;
use crate::nn::{DType, Tensor};
use crate::{Error, Result};

impl Tensor {
    /// One optimiser update of `self` (an f32 parameter) with `grad` and the
    /// rule's state buffers (see [`OptimizerStep`]), all of `self`'s shape
    /// and device: the new parameter and state, untracked. The operands are
    /// not changed (the caller swaps the results in). Bit-identical on
    /// every device.
    pub fn optimizer_update(
        &self,
        grad: &Tensor,
        state: &[&Tensor],
        step: &OptimizerStep,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if self.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return Err(Error::invalid(format!(
                "optimizer_update: the parameter ({:?}) and its gradient ({:?}) must be f32",
                self.dtype(),
                grad.dtype()
            )));
        }
        expect_shape(grad, self.dims(), "optimizer_update gradient")?;
        if state.len() != step.rule.state_buffers() {
            return Err(Error::invalid(format!(
                "optimizer_update: {} state buffers, the rule keeps {}",
                state.len(),
                step.rule.state_buffers()
            )));
        }
        for s in state {
            expect_shape(s, self.dims(), "optimizer_update state")?;
        }
        let storages: Vec<&Storage> = state.iter().map(|s| s.storage()).collect();
        let (p, s) = self
            .storage()
            .optimizer_update(grad.storage(), &storages, step)?;
        let state = s
            .into_iter()
            .map(|s| Tensor::from_storage(s, self.dims().to_vec()))
            .collect::<Result<Vec<_>>>()?;
        Ok((Tensor::from_storage(p, self.dims().to_vec())?, state))
    }

    /// Each tensor's sum of squares, accumulated in f64, on the host: one
    /// device-to-host copy of a few numbers for all of them. Every tensor
    /// is f32 and on one device. A non-finite sum means a non-finite value.
    pub fn squared_norms(tensors: &[&Tensor]) -> Result<Vec<f64>> {
        if let Some(bad) = tensors.iter().find(|t| t.dtype() != DType::F32) {
            return Err(Error::invalid(format!(
                "squared_norms: a {:?} tensor; the norms read f32",
                bad.dtype()
            )));
        }
        let storages: Vec<&Storage> = tensors.iter().map(|t| t.storage()).collect();
        Storage::squared_norms(&storages)
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::desc::{OptimizerRule, OptimizerStep};
    use crate::nn::Tensor;
    use crate::Result;

    fn step(rule: OptimizerRule, step: u64) -> OptimizerStep {
        OptimizerStep {
            rule,
            lr: 0.01,
            weight_decay: 0.1,
            step,
            grad_factors: [0.5, 0.75],
        }
    }

    /// The op scales the gradient by both factors, then applies the rule:
    /// the same numbers as the host optimiser given the pre-scaled
    /// gradient.
    #[test]
    fn the_update_equals_the_host_rule_on_prescaled_gradients() -> Result<()> {
        let p: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..300).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
        let pre: Vec<f32> = g.iter().map(|v| v * 0.5 * 0.75).collect();
        for rule in [
            OptimizerRule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                decoupled: false,
            },
            OptimizerRule::Adam {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                decoupled: true,
            },
            OptimizerRule::Sgd {
                momentum: 0.99,
                nesterov: true,
            },
            OptimizerRule::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
        ] {
            let n = rule.state_buffers();
            let mut host_p = p.clone();
            let mut host_state = vec![vec![0.25f32; 300]; n];
            let mut tp = Tensor::from_vec(p.clone(), &[3, 100])?;
            let tg = Tensor::from_vec(g.clone(), &[3, 100])?;
            let mut ts: Vec<Tensor> = (0..n)
                .map(|_| Tensor::full(0.25, &[3, 100]))
                .collect::<Result<_>>()?;
            for t in 1..=3 {
                let mut s = step(rule, t);
                let refs: Vec<&Tensor> = ts.iter().collect();
                let (np, ns) = tp.optimizer_update(&tg, &refs, &s)?;
                s.grad_factors = [1.0, 1.0];
                crate::backend::cpu::optim::update_in_place(&mut host_p, &pre, &mut host_state, &s);
                assert_eq!(np.to_vec()?, host_p, "{rule:?} step {t}");
                for (a, b) in ns.iter().zip(&host_state) {
                    assert_eq!(&a.to_vec()?, b, "{rule:?} state, step {t}");
                }
                assert_eq!(tp.dims(), np.dims());
                (tp, ts) = (np, ns);
            }
        }
        Ok(())
    }

    #[test]
    fn bad_updates_are_refused() -> Result<()> {
        let adam = OptimizerRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled: false,
        };
        let p = Tensor::zeros(&[4])?;
        let s = Tensor::zeros(&[4])?;
        assert!(
            p.optimizer_update(&p, &[&s], &step(adam, 1)).is_err(),
            "one buffer for Adam"
        );
        assert!(p
            .optimizer_update(&Tensor::zeros(&[5])?, &[&s, &s], &step(adam, 1))
            .is_err());
        assert!(
            p.optimizer_update(&p, &[&s, &s], &step(adam, 0)).is_err(),
            "step 0"
        );
        let mut nan = step(adam, 1);
        nan.grad_factors[1] = f32::NAN;
        assert!(p.optimizer_update(&p, &[&s, &s], &nan).is_err());
        let mut negative = step(adam, 1);
        negative.lr = -1.0;
        assert!(p.optimizer_update(&p, &[&s, &s], &negative).is_err());
        Ok(())
    }

    #[test]
    fn squared_norms_are_per_tensor_f64_sums() -> Result<()> {
        let a = Tensor::from_vec(vec![3.0, 4.0], &[2])?;
        let big = 2f32.powi(66);
        let b = Tensor::from_vec(vec![big, big], &[2])?;
        let c = Tensor::from_vec(vec![1.0, f32::NAN], &[2])?;
        let empty = Tensor::zeros(&[0])?;
        let n = Tensor::squared_norms(&[&a, &b, &empty, &c])?;
        assert_eq!(n[0], 25.0);
        assert_eq!(
            n[1],
            2f64.powi(133),
            "f64: no overflow where f32 squares would"
        );
        assert_eq!(n[2], 0.0);
        assert!(n[3].is_nan());
        assert!(Tensor::squared_norms(&[])?.is_empty());
        Ok(())
    }
}

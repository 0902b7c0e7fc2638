//! The diffusion sampler's fused element-wise steps (spec: `diffusion.md`,
//! RePaint), so a whole sampling loop stays on the model's device.

use super::expect_shape;
use crate::backend::desc::{AncestralStep, KnownBlend};
use crate::nn::Tensor;
use crate::Result;

impl Tensor {
    /// RePaint's known-region step: `known·(√ᾱ·gt + √(1−ᾱ)·noise) +
    /// (1 − known)·self`, all operands of `self`'s shape.
    pub fn known_blend(
        &self,
        ground_truth: &Tensor,
        known: &Tensor,
        noise: &Tensor,
        p: KnownBlend,
    ) -> Result<Tensor> {
        expect_shape(ground_truth, self.dims(), "known_blend ground truth")?;
        expect_shape(known, self.dims(), "known_blend mask")?;
        expect_shape(noise, self.dims(), "known_blend noise")?;
        Tensor::refuse_tracked("known_blend", &[self, ground_truth, known, noise])?;
        self.same_shape(self.storage().known_blend(
            ground_truth.storage(),
            known.storage(),
            noise.storage(),
            p,
        )?)
    }

    /// One ancestral reverse step of `self` (x_t) given the predicted noise
    /// `eps` and fresh `noise` (see [`AncestralStep`]).
    pub fn ancestral_step(&self, eps: &Tensor, noise: &Tensor, p: AncestralStep) -> Result<Tensor> {
        expect_shape(eps, self.dims(), "ancestral_step eps")?;
        expect_shape(noise, self.dims(), "ancestral_step noise")?;
        Tensor::refuse_tracked("ancestral_step", &[self, eps, noise])?;
        self.same_shape(
            self.storage()
                .ancestral_step(eps.storage(), noise.storage(), p)?,
        )
    }
}

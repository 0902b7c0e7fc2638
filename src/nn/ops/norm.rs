//! GroupNorm, InstanceNorm and the channel LayerNorm, over `[B, C, ...]`.

use super::expect_shape;
use crate::backend::cpu::norm as cpu;
use crate::nn::{Storage, Tensor};
use crate::{Error, Result};

/// `(B, C, S)` of a `[B, C, ...]` tensor, S the product of the rest.
fn bcs(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    if x.rank() < 2 {
        return Err(Error::invalid(format!(
            "{what}: expected [B, C, ...], got {:?}",
            x.dims()
        )));
    }
    Ok((x.dims()[0], x.dims()[1], x.dims()[2..].iter().product()))
}

impl Tensor {
    /// GroupNorm with `groups` groups of consecutive channels, affine
    /// `weight`/`bias` of length C (PyTorch `nn.GroupNorm`).
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "group_norm")?;
        if groups == 0 || c % groups != 0 {
            return Err(Error::invalid(format!(
                "group_norm: {groups} groups do not divide {c} channels"
            )));
        }
        for (t, name) in [(weight, "group_norm weight"), (bias, "group_norm bias")] {
            if let Some(t) = t {
                expect_shape(t, &[c], name)?;
            }
        }
        match self.storage() {
            Storage::Cpu(x) => {
                let w = weight.map(Tensor::as_slice).transpose()?;
                let bi = bias.map(Tensor::as_slice).transpose()?;
                Tensor::from_cpu(
                    cpu::group_norm(x, b, c, s, groups, w, bi, eps),
                    self.dims().to_vec(),
                )
            }
        }
    }

    /// InstanceNorm (per sample and channel) with optional affine parameters.
    pub fn instance_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let c = bcs(self, "instance_norm")?.1;
        self.group_norm(c, weight, bias, eps)
    }

    /// LayerNorm across the channel axis at every position, times `gamma`
    /// (C values in any shape, e.g. `[1, C, 1, 1, 1]`), no bias.
    pub fn layer_norm_channels(&self, gamma: &Tensor, eps: f64) -> Result<Tensor> {
        let (b, c, s) = bcs(self, "layer_norm_channels")?;
        if gamma.elem_count() != c {
            return Err(Error::invalid(format!(
                "layer_norm_channels: gamma {:?} for {c} channels",
                gamma.dims()
            )));
        }
        match (self.storage(), gamma.storage()) {
            (Storage::Cpu(x), Storage::Cpu(g)) => Tensor::from_cpu(
                cpu::layer_norm_channels(x, b, c, s, g, eps),
                self.dims().to_vec(),
            ),
        }
    }
}

//! Attention ops of the LeFusion denoiser (spec: `denoiser.md`).

use super::{expect_rank, expect_shape};
use crate::backend::cpu::grad;
use crate::backend::desc::{AttentionDesc, LinearAttentionDesc};
use crate::nn::autograd::host;
use crate::nn::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// Spatial linear attention per frame on stacked projections: `self` is
    /// `[B, 3·heads·d, F, H, W]` (q, k, v along channels), result
    /// `[B, heads·d, F, H, W]`. q: softmax over features, ·d^-½; k: softmax
    /// over positions; `out = (k·vᵀ)ᵀ·q` per head.
    pub fn linear_attention(&self, heads: usize) -> Result<Tensor> {
        expect_rank(self, 5, "linear_attention")?;
        let (b, c3, f, h, w) = (
            self.dims()[0],
            self.dims()[1],
            self.dims()[2],
            self.dims()[3],
            self.dims()[4],
        );
        if heads == 0 || c3 % (3 * heads) != 0 || c3 == 0 {
            return Err(Error::invalid(format!(
                "linear_attention: {c3} channels are not 3·{heads} heads"
            )));
        }
        let d = c3 / (3 * heads);
        let desc = LinearAttentionDesc {
            batch: b,
            frames: f,
            positions: h * w,
            heads,
            head_dim: d,
        };
        let y = Tensor::from_storage(
            self.storage().linear_attention(&desc)?,
            vec![b, heads * d, f, h, w],
        )?;
        Ok(y.record("linear_attention", &[self], |_| {
            let qkv = self.detach();
            Box::new(move |g, _| {
                let op = "linear_attention";
                let dx = grad::linear_attention_backward(&host(&qkv, op)?, &desc, &host(g, op)?)?;
                Ok(vec![Some(Tensor::from_vec(dx, qkv.dims())?)])
            })
        }))
    }

    /// Softmax attention `softmax(q·kᵀ + bias)·v` with q already scaled.
    /// `q`, `k`, `v`: `[G, T, d]` where G = groups·heads with the head index
    /// fastest; `bias`: optional `[heads, T, T]`.
    pub fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        expect_rank(q, 3, "attention q")?;
        let (g, t, d) = (q.dims()[0], q.dims()[1], q.dims()[2]);
        expect_shape(k, q.dims(), "attention k")?;
        expect_shape(v, q.dims(), "attention v")?;
        if heads == 0 || g % heads != 0 {
            return Err(Error::invalid(format!(
                "attention: {g} groups are not a multiple of {heads} heads"
            )));
        }
        if let Some(b) = bias {
            expect_shape(b, &[heads, t, t], "attention bias")?;
        }
        let desc = AttentionDesc {
            groups: g,
            tokens: t,
            head_dim: d,
            heads,
        };
        let y = q.same_shape(q.storage().attention(
            k.storage(),
            v.storage(),
            bias.map(Tensor::storage),
            &desc,
        )?)?;
        let mut inputs = vec![q, k, v];
        inputs.extend(bias);
        Ok(y.record("attention", &inputs, |_| {
            let (q, k, v) = (q.detach(), k.detach(), v.detach());
            let bias = bias.map(Tensor::detach);
            Box::new(move |g, _| {
                let op = "attention";
                let bias_values = bias.as_ref().map(|b| host(b, op)).transpose()?;
                let grads = grad::attention_backward(
                    &host(&q, op)?,
                    &host(&k, op)?,
                    &host(&v, op)?,
                    bias_values.as_deref(),
                    &desc,
                    &host(g, op)?,
                )?;
                let mut out = vec![
                    Some(Tensor::from_vec(grads.q, q.dims())?),
                    Some(Tensor::from_vec(grads.k, k.dims())?),
                    Some(Tensor::from_vec(grads.v, v.dims())?),
                ];
                if let Some(b) = &bias {
                    out.push(
                        grads
                            .bias
                            .map(|gb| Tensor::from_vec(gb, b.dims()))
                            .transpose()?,
                    );
                }
                Ok(out)
            })
        }))
    }

    /// Rotary position embedding (interleaved pairs) on `[G, T, d]` with
    /// token positions 0..T and `freqs` of length d/2.
    pub fn rotary(&self, freqs: &Tensor) -> Result<Tensor> {
        expect_rank(self, 3, "rotary")?;
        let (t, d) = (self.dims()[1], self.dims()[2]);
        if d % 2 != 0 || freqs.elem_count() != d / 2 {
            return Err(Error::invalid(format!(
                "rotary: width {d} needs {} frequencies, got {:?}",
                d / 2,
                freqs.dims()
            )));
        }
        let y = self.same_shape(self.storage().rotary(freqs.storage(), t, d)?)?;
        if freqs.is_tracked() {
            return Err(Error::Unsupported(
                "rotary: the frequencies are a fixed buffer; pass them detached".into(),
            ));
        }
        Ok(y.record("rotary", &[self], |_| {
            let freqs = freqs.detach();
            // The inverse rotation: the same angles negated.
            Box::new(move |g, _| Ok(vec![Some(g.rotary(&freqs.affine(-1.0, 0.0)?)?)]))
        }))
    }
}

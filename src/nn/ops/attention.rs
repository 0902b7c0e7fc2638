//! Attention ops of the LeFusion denoiser (spec: `denoiser.md`).

use super::{expect_rank, expect_shape};
use crate::backend::cpu::grad;
use crate::backend::desc::{AttentionDesc, LinearAttentionDesc};
use crate::nn::autograd::host;
use crate::nn::{Device, Tensor};
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
                if !matches!(qkv.device(), Device::Cpu) {
                    return Ok(vec![Some(linear_attention_backward_by_ops(
                        &qkv, &desc, g,
                    )?)]);
                }
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
                if !matches!(q.device(), Device::Cpu) {
                    let (dq, dk, dv, dbias) =
                        attention_backward_by_ops(&q, &k, &v, bias.as_ref(), &desc, g)?;
                    let mut out = vec![Some(dq), Some(dk), Some(dv)];
                    if bias.is_some() {
                        out.push(dbias);
                    }
                    return Ok(out);
                }
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

/// `y·(g − Σ y·g)` along `axis` of the softmax output `y`.
fn softmax_vjp(y: &Tensor, g: &Tensor, axis: usize) -> Result<Tensor> {
    y.same_shape(
        y.storage()
            .softmax_backward(g.storage(), y.axis_desc(axis)?)?,
    )
}

/// The backward of [`Tensor::linear_attention`] from engine ops (batched
/// products and softmax backwards), so it runs on the operands' device;
/// the CPU keeps its fused host kernel, which this is checked against.
/// Per (sample, frame, head), with `q̃ = softmax_d(q)·d^-½`, `k̃ =
/// softmax_n(k)`, `C = k̃·vᵀ` and `out = Cᵀ·q̃`: `dq̃ = C·dO`,
/// `dC = q̃·dOᵀ`, `dk̃ = dC·v`, `dv = dCᵀ·k̃`, then the softmax backwards.
fn linear_attention_backward_by_ops(
    qkv: &Tensor,
    desc: &LinearAttentionDesc,
    g: &Tensor,
) -> Result<Tensor> {
    let (b, f, n, heads, d) = (
        desc.batch,
        desc.frames,
        desc.positions,
        desc.heads,
        desc.head_dim,
    );
    let groups = b * f * heads;
    // [B, 3, heads, d, F, n] → [3, B, F, heads, d, n]: items (b, f, head).
    let to_items = [1, 0, 4, 2, 3, 5];
    let parts = qkv
        .reshape(&[b, 3, heads, d, f, n])?
        .permute(&to_items)?
        .reshape(&[3, groups, d, n])?;
    let part = |p: usize| parts.narrow(0, p, 1)?.reshape(&[groups, d, n]);
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let d_out = g
        .reshape(&[b, heads, d, f, n])?
        .permute(&[0, 3, 1, 2, 4])?
        .reshape(&[groups, d, n])?;
    let scale = (d as f32).powf(-0.5);
    let q_soft = q.softmax(1)?;
    let q_tilde = q_soft.affine(scale, 0.0)?;
    let k_tilde = k.softmax(2)?;
    let context = k_tilde.matmul(&v, false, true)?;
    let d_q_tilde = context.matmul(&d_out, false, false)?;
    let d_context = q_tilde.matmul(&d_out, false, true)?;
    let d_k_tilde = d_context.matmul(&v, false, false)?;
    let dv = d_context.matmul(&k_tilde, true, false)?;
    let dq = softmax_vjp(&q_soft, &d_q_tilde, 1)?.affine(scale, 0.0)?;
    let dk = softmax_vjp(&k_tilde, &d_k_tilde, 2)?;
    let item = |t: &Tensor| t.reshape(&[1, groups, d, n]);
    let stacked = Tensor::cat(&[&item(&dq)?, &item(&dk)?, &item(&dv)?], 0)?;
    // The inverse of `to_items`.
    stacked
        .reshape(&[3, b, f, heads, d, n])?
        .permute(&[1, 0, 3, 4, 2, 5])?
        .reshape(qkv.dims())
}

/// The backward of [`Tensor::attention`] from engine ops, so it runs on the
/// operands' device (the CPU keeps its host kernel, which this is checked
/// against): with `P = softmax(q·kᵀ + bias)`, `dv = Pᵀ·dO`, `dP = dO·vᵀ`,
/// `dS = P·(dP − Σ P·dP)`, `dq = dS·k`, `dk = dSᵀ·q` and the bias gradient
/// `dS` summed over the groups sharing it.
fn attention_backward_by_ops(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    desc: &AttentionDesc,
    g: &Tensor,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    let (groups, t, heads) = (desc.groups, desc.tokens, desc.heads);
    let per_head = [groups / heads, heads, t, t];
    let mut logits = q.matmul(k, false, true)?;
    if let Some(bias) = bias {
        logits = logits
            .reshape(&per_head)?
            .add(&bias.reshape(&[1, heads, t, t])?)?
            .reshape(&[groups, t, t])?;
    }
    let p = logits.softmax(2)?;
    let dv = p.matmul(g, true, false)?;
    let dp = g.matmul(v, false, true)?;
    let ds = softmax_vjp(&p, &dp, 2)?;
    let dq = ds.matmul(k, false, false)?;
    let dk = ds.matmul(q, true, false)?;
    let dbias = bias
        .map(|b| ds.reshape(&per_head)?.sum_keepdim(0)?.reshape(b.dims()))
        .transpose()?;
    Ok((dq, dk, dv, dbias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::random_normal;

    fn max_rel(got: &Tensor, want: &[f32]) -> f32 {
        crate::testing::max_rel_error(&got.to_vec().unwrap(), want)
    }

    /// The attention backwards composed of engine ops (what devices run)
    /// equal the host kernels: linear attention over several frames and
    /// heads, softmax attention with and without the shared bias.
    #[test]
    fn attention_backward_by_ops_matches_the_host_kernels() -> Result<()> {
        let (b, heads, d, f, h, w) = (2, 3, 4, 2, 5, 3);
        let qkv = Tensor::from_vec(
            random_normal(b * 3 * heads * d * f * h * w, 21),
            &[b, 3 * heads * d, f, h, w],
        )?;
        let g = Tensor::from_vec(
            random_normal(b * heads * d * f * h * w, 22),
            &[b, heads * d, f, h, w],
        )?;
        let desc = LinearAttentionDesc {
            batch: b,
            frames: f,
            positions: h * w,
            heads,
            head_dim: d,
        };
        let got = linear_attention_backward_by_ops(&qkv, &desc, &g)?;
        assert_eq!(got.dims(), qkv.dims());
        let want = grad::linear_attention_backward(qkv.as_slice()?, &desc, g.as_slice()?)?;
        assert!(max_rel(&got, &want) < 1e-4, "linear attention");

        let (groups, t, d) = (6, 5, 4);
        let random = |seed| Tensor::from_vec(random_normal(groups * t * d, seed), &[groups, t, d]);
        let (q, k, v, dout) = (random(23)?, random(24)?, random(25)?, random(26)?);
        let bias = Tensor::from_vec(random_normal(heads * t * t, 27), &[heads, t, t])?;
        let desc = AttentionDesc {
            groups,
            tokens: t,
            head_dim: d,
            heads,
        };
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bias);
            let (dq, dk, dv, dbias) = attention_backward_by_ops(&q, &k, &v, bias, &desc, &dout)?;
            let want = grad::attention_backward(
                q.as_slice()?,
                k.as_slice()?,
                v.as_slice()?,
                bias.map(|b| b.as_slice()).transpose()?,
                &desc,
                dout.as_slice()?,
            )?;
            assert!(max_rel(&dq, &want.q) < 1e-4, "dq, bias {with_bias}");
            assert!(max_rel(&dk, &want.k) < 1e-4, "dk, bias {with_bias}");
            assert!(max_rel(&dv, &want.v) < 1e-4, "dv, bias {with_bias}");
            match (dbias, want.bias) {
                (Some(got), Some(want)) => assert!(max_rel(&got, &want) < 1e-4, "dbias"),
                (None, None) => {}
                _ => panic!("the bias gradient on one side only"),
            }
        }
        Ok(())
    }
}

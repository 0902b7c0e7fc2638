//! Embeddings: sinusoidal timestep features and table look-ups.

use super::expect_rank;
use crate::nn::{Storage, Tensor};
use crate::{Error, Result};

impl Tensor {
    /// Sinusoidal embedding of scalar positions (timesteps): for
    /// `half = dim/2`, `freq_i = exp(−i·ln(10000)/(half − 1))`, output
    /// `[sin(t·freq), cos(t·freq)]` per row, shape `[len(t), dim]`.
    pub fn sinusoidal_embedding(t: &[f32], dim: usize) -> Result<Tensor> {
        if dim < 4 || dim % 2 != 0 {
            return Err(Error::invalid(format!(
                "sinusoidal_embedding: dim must be even and ≥ 4, got {dim}"
            )));
        }
        let half = dim / 2;
        // f32 throughout, as the reference computes it.
        let e = (10000f32).ln() / (half as f32 - 1.0);
        let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -e).exp()).collect();
        let mut out = Vec::with_capacity(t.len() * dim);
        for &tv in t {
            out.extend(freqs.iter().map(|f| (tv * f).sin()));
            out.extend(freqs.iter().map(|f| (tv * f).cos()));
        }
        Tensor::from_cpu(out, vec![t.len(), dim])
    }

    /// Rows `ids` of a `[V, D]` table (PyTorch `nn.Embedding`), `[len, D]`.
    pub fn index_rows(&self, ids: &[usize]) -> Result<Tensor> {
        expect_rank(self, 2, "index_rows")?;
        let (v, d) = (self.dims()[0], self.dims()[1]);
        match self.storage() {
            Storage::Cpu(x) => {
                let mut out = Vec::with_capacity(ids.len() * d);
                for &i in ids {
                    if i >= v {
                        return Err(Error::invalid(format!(
                            "index_rows: id {i} out of range for {v} rows"
                        )));
                    }
                    out.extend_from_slice(&x[i * d..(i + 1) * d]);
                }
                Tensor::from_cpu(out, vec![ids.len(), d])
            }
        }
    }
}

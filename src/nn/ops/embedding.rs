//! Embeddings: sinusoidal timestep features and table look-ups.

use super::expect_rank;
use crate::nn::{DType, Device, Tensor};
use crate::{Error, Result};

impl Tensor {
    /// Sinusoidal embedding of scalar positions (timesteps): for
    /// `half = dim/2`, `freq_i = exp(−i·ln(10000)/(half − 1))`, output
    /// `[sin(t·freq), cos(t·freq)]` per row, shape `[len(t), dim]`.
    pub fn sinusoidal_embedding(t: &[f32], dim: usize) -> Result<Tensor> {
        Tensor::sinusoidal_embedding_on(t, dim, &Device::Cpu, DType::F32)
    }

    /// [`Tensor::sinusoidal_embedding`] computed on `device` as `dtype`.
    pub fn sinusoidal_embedding_on(
        t: &[f32],
        dim: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        if dim < 4 || dim % 2 != 0 {
            return Err(Error::invalid(format!(
                "sinusoidal_embedding: dim must be even and ≥ 4, got {dim}"
            )));
        }
        Tensor::from_storage(
            crate::nn::Storage::sinusoidal_embedding(device, t, dim, dtype)?,
            vec![t.len(), dim],
        )
    }

    /// Rows `ids` of a `[V, D]` table (PyTorch `nn.Embedding`), `[len, D]`.
    pub fn index_rows(&self, ids: &[usize]) -> Result<Tensor> {
        expect_rank(self, 2, "index_rows")?;
        let (v, d) = (self.dims()[0], self.dims()[1]);
        if let Some(&i) = ids.iter().find(|&&i| i >= v) {
            return Err(Error::invalid(format!(
                "index_rows: id {i} out of range for {v} rows"
            )));
        }
        let y = Tensor::from_storage(self.storage().index_rows(d, ids)?, vec![ids.len(), d])?;
        Ok(y.record("index_rows", &[self], |_| {
            let ids = ids.to_vec();
            Box::new(move |g, _| {
                // Scatter-add: a row picked twice gets both gradients.
                let g = g.to_vec()?;
                let mut table = vec![0f32; v * d];
                for (row, &id) in g.chunks_exact(d.max(1)).zip(&ids) {
                    for (t, x) in table[id * d..(id + 1) * d].iter_mut().zip(row) {
                        *t += x;
                    }
                }
                Ok(vec![Some(Tensor::from_vec(table, &[v, d])?)])
            })
        }))
    }
}

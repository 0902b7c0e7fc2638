//! Embeddings: sinusoidal timestep features and table look-ups.

use super::expect_rank;
use crate::nn::{DType, Device, Tensor};
use crate::{Error, Result};

/// Largest one-hot matrix (rows × look-ups) the device backward of
/// [`Tensor::index_rows`] builds; beyond it the scatter runs on the host
/// (and the autograd uploads the gradient).
const ONE_HOT_LIMIT: usize = 1 << 24;

/// The `[v, d]` table whose row `r` sums the rows `j` of `g` (`[n, d]`)
/// with `ids[j] = r`, as one product `onehotᵀ·g` on `g`'s device (the 0/1
/// matrix uploaded, f32 accumulation, nothing downloaded).
fn scatter_rows_by_product(g: &Tensor, ids: &[usize], v: usize) -> Result<Tensor> {
    let (n, d) = (ids.len(), g.dims()[1]);
    let mut onehot = vec![0f32; v * n];
    for (j, &id) in ids.iter().enumerate() {
        onehot[id * n + j] = 1.0;
    }
    let onehot = Tensor::from_slice_on(&onehot, &[1, v, n], &g.device(), g.dtype())?;
    onehot
        .matmul(&g.reshape(&[1, n, d])?, false, false)?
        .reshape(&[v, d])
}

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
                let n = ids.len();
                // The device's products take f16 storage (an f32 table on a
                // GPU keeps the host scatter).
                if !matches!(g.device(), Device::Cpu)
                    && g.dtype() == DType::F16
                    && v.saturating_mul(n) <= ONE_HOT_LIMIT
                {
                    return Ok(vec![Some(scatter_rows_by_product(g, &ids, v)?)]);
                }
                let g = g.to_vec()?;
                let mut table = vec![0f32; v * d];
                for (row, &id) in g.chunks_exact(d.max(1)).zip(&ids) {
                    for (t, x) in table[id * d..(id + 1) * d].iter_mut().zip(row) {
                        *t += x;
                    }
                }
                // The autograd moves it to the table's device.
                Ok(vec![Some(Tensor::from_vec(table, &[v, d])?)])
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device form of the look-up's backward equals the host
    /// scatter-add (run here on the CPU): repeated rows add up, rows never
    /// picked are zero.
    #[test]
    fn the_product_scatter_equals_the_host_scatter() -> Result<()> {
        let (v, d) = (6, 3);
        let ids = [4usize, 0, 4, 2, 4];
        let g: Vec<f32> = (0..ids.len() * d).map(|i| (i as f32 * 0.7).sin()).collect();
        let got = scatter_rows_by_product(&Tensor::from_vec(g.clone(), &[ids.len(), d])?, &ids, v)?;
        let table = Tensor::from_vec(vec![0.5; v * d], &[v, d])?.variable();
        let y = table.index_rows(&ids)?;
        let grads = y
            .mul(&Tensor::from_vec(g, &[ids.len(), d])?)?
            .reshape(&[1, ids.len() * d])?
            .sum_keepdim(1)?
            .reshape(&[1])?
            .backward()?;
        let want = grads.get(&table).expect("a gradient").to_vec()?;
        assert_eq!(got.dims(), [v, d]);
        let got = got.to_vec()?;
        assert!(
            crate::testing::max_abs_diff(&got, &want) < 1e-6,
            "{got:?} vs {want:?}"
        );
        assert!(
            got[d..2 * d].iter().all(|&x| x == 0.0),
            "row 1 was never picked"
        );
        Ok(())
    }
}

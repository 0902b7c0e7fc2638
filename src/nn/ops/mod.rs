//! Tensor ops, one file per family. Each op checks shapes, then dispatches
//! on [`crate::nn::Storage`] to its device kernel in [`crate::backend`] —
//! the single place where that op meets the back-ends.

mod activation;
mod attention;
mod binary;
mod conv;
mod conv3d;
mod embedding;
mod linear;
mod matmul;
mod norm;
mod optim;
mod reduce;
mod sampler;
mod sliding;

pub use conv::ConvParams;
pub use conv3d::Conv3dParams;

use crate::nn::Tensor;
use crate::{Error, Result};

/// Requires `t` to have exactly `rank` dimensions; `what` names the operand.
pub(crate) fn expect_rank(t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::invalid(format!(
            "{what}: expected {rank} dimensions, got shape {:?}",
            t.dims()
        )));
    }
    Ok(())
}

/// Requires `t` to have exactly `shape`.
pub(crate) fn expect_shape(t: &Tensor, shape: &[usize], what: &str) -> Result<()> {
    if t.dims() != shape {
        return Err(Error::invalid(format!(
            "{what}: expected shape {shape:?}, got {:?}",
            t.dims()
        )));
    }
    Ok(())
}

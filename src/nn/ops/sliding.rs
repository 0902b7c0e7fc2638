//! nnU-Net's sliding-window accumulation and the class argmax as tensor
//! ops, so a segmentation can stay on the network's device until only the
//! label map is left (`segmentation::sliding`).

use super::{expect_rank, expect_shape};
use crate::backend::desc::{WindowSumDesc, MAX_WINDOWS_PER_SUM};
use crate::nn::Tensor;
use crate::{Error, Result};

impl Tensor {
    /// `sum` plus this batch of window predictions, each weighted by
    /// `gaussian` and placed at its start, the windows added in order and
    /// every stored value rounded to f16 after each addition (nnU-Net's
    /// half-precision buffers). `self` is `[windows, classes, ez, ey, ex]`,
    /// `sum` `[classes, Z, Y, X]`, `gaussian` `[ez, ey, ex]`; at most
    /// [`MAX_WINDOWS_PER_SUM`] windows, each inside the sum.
    pub fn accumulate_windows(
        &self,
        sum: &Tensor,
        gaussian: &Tensor,
        starts: &[[usize; 3]],
    ) -> Result<Tensor> {
        let op = "accumulate_windows";
        expect_rank(self, 5, op)?;
        expect_rank(sum, 4, "accumulate_windows sum")?;
        let d = self.dims();
        let (windows, classes) = (d[0], d[1]);
        let extent = [d[2], d[3], d[4]];
        let grid = [sum.dims()[1], sum.dims()[2], sum.dims()[3]];
        expect_shape(gaussian, &extent, "accumulate_windows gaussian")?;
        if sum.dims()[0] != classes {
            return Err(Error::invalid(format!(
                "{op}: {classes} classes in the windows, {} in the sum",
                sum.dims()[0]
            )));
        }
        if starts.len() != windows || !(1..=MAX_WINDOWS_PER_SUM).contains(&windows) {
            return Err(Error::invalid(format!(
                "{op}: {} starts for {windows} windows (1 to {MAX_WINDOWS_PER_SUM})",
                starts.len()
            )));
        }
        if let Some(s) = starts
            .iter()
            .find(|s| (0..3).any(|a| s[a].checked_add(extent[a]).is_none_or(|e| e > grid[a])))
        {
            return Err(Error::invalid(format!(
                "{op}: a {extent:?} window at {s:?} leaves the {grid:?} sum"
            )));
        }
        Tensor::refuse_tracked(op, &[self, sum, gaussian])?;
        let desc = WindowSumDesc {
            classes,
            grid,
            extent,
            starts: starts.to_vec(),
        };
        sum.same_shape(self.storage().accumulate_windows(
            sum.storage(),
            gaussian.storage(),
            &desc,
        )?)
    }

    /// Index of the largest entry along `dim` (the first on ties; NaN never
    /// compares larger), in this tensor's type, with `dim` removed from the
    /// shape: the label map of `[classes, …]` logits.
    pub fn argmax(&self, dim: usize) -> Result<Tensor> {
        let axis = self.axis_desc(dim)?;
        if axis.size == 0 {
            return Err(Error::invalid(format!(
                "argmax over the empty dimension {dim} of {:?}",
                self.dims()
            )));
        }
        // Indices must be exact in the storage's type (f16: up to 2048).
        if axis.size > self.dtype().max_exact_integer() {
            return Err(Error::invalid(format!(
                "argmax over {} entries does not fit {:?} indices",
                axis.size,
                self.dtype()
            )));
        }
        Tensor::refuse_tracked("argmax", &[self])?;
        let mut shape = self.dims().to_vec();
        shape.remove(dim);
        Tensor::from_storage(self.storage().argmax(axis)?, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sums_check_their_operands() -> Result<()> {
        let pred = Tensor::full(1.0, &[2, 1, 1, 2, 2])?;
        let sum = Tensor::full(0.0, &[1, 1, 3, 3])?;
        let g = Tensor::full(0.5, &[1, 2, 2])?;
        let out = pred.accumulate_windows(&sum, &g, &[[0, 0, 0], [0, 1, 1]])?;
        assert_eq!(
            out.to_vec()?,
            vec![0.5, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 0.5]
        );
        assert!(pred.accumulate_windows(&sum, &g, &[[0, 0, 0]]).is_err());
        assert!(pred
            .accumulate_windows(&sum, &g, &[[0, 0, 0], [0, 2, 0]])
            .is_err());
        let two_classes = Tensor::full(0.0, &[2, 1, 3, 3])?;
        assert!(pred
            .accumulate_windows(&two_classes, &g, &[[0, 0, 0], [0, 0, 0]])
            .is_err());
        assert!(pred
            .variable()
            .accumulate_windows(&sum, &g, &[[0, 0, 0], [0, 0, 0]])
            .is_err());
        Ok(())
    }

    #[test]
    fn argmax_drops_the_dimension() -> Result<()> {
        // Column 1 ties (5 and 5): the first wins.
        let logits = Tensor::from_vec(vec![0.0, 5.0, 2.0, 1.0, 5.0, 1.0], &[2, 3])?;
        let labels = logits.argmax(0)?;
        assert_eq!(labels.dims(), &[3]);
        assert_eq!(labels.to_vec()?, vec![1.0, 0.0, 0.0]);
        assert_eq!(logits.argmax(1)?.to_vec()?, vec![1.0, 1.0]);
        assert!(logits.argmax(2).is_err());
        Ok(())
    }
}

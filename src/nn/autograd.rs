//! Reverse-mode automatic differentiation over [`Tensor`] ops.
//!
//! Design: a tensor may carry a graph [`Node`]. A *variable*
//! ([`Tensor::variable`]) is a leaf node; every op whose operands include a
//! tracked tensor gives its result a node holding the operands and a
//! backward closure (the op's vector–Jacobian product). Ops on untracked
//! tensors record nothing, so inference pays one branch per op and keeps no
//! tape. [`Tensor::backward`] walks the graph from a scalar loss in reverse
//! topological order and returns the [`Gradients`] of the variables.
//!
//! Backward closures compute with *detached* copies of what they saved, so
//! the backward pass itself records nothing (no higher-order gradients).
//! Models need no change to train: their forward passes are the same op
//! sequences, run on variables.

use crate::nn::Tensor;
use crate::{Error, Result};
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A backward closure: given the gradient of the op's output and which
/// operands need a gradient, the gradient of each operand (`None` where not
/// needed or identically zero), in operand order.
pub(crate) type BackwardFn =
    Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

static NEXT_NODE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// A tracked tensor's place in the graph.
pub(crate) struct Node {
    id: u64,
    /// The op's name (for error messages and debugging).
    op: &'static str,
    /// The op's operands (tracked or not); empty for a variable.
    inputs: Vec<Tensor>,
    /// `None` for a variable.
    backward: Option<BackwardFn>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} #{})", self.op, self.id)
    }
}

/// Runs `f` with gradient recording switched off on this thread: ops on
/// variables inside give untracked results (optimiser updates, EMA,
/// validation).
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Whether ops on this thread record gradients (false inside [`no_grad`]).
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

impl Tensor {
    /// This tensor as a new variable: a leaf whose gradient
    /// [`Tensor::backward`] computes. The values are shared, not copied.
    pub fn variable(&self) -> Tensor {
        let node = Node {
            id: NEXT_NODE.fetch_add(1, Ordering::Relaxed),
            op: "variable",
            inputs: Vec::new(),
            backward: None,
        };
        self.with_node(Some(Arc::new(node)))
    }

    /// The same values without gradient tracking.
    pub fn detach(&self) -> Tensor {
        self.with_node(None)
    }

    /// Whether this tensor is a variable or depends on one.
    pub fn is_tracked(&self) -> bool {
        self.node().is_some()
    }

    /// Whether this tensor is a variable (a leaf of the graph).
    pub fn is_variable(&self) -> bool {
        self.node().is_some_and(|n| n.backward.is_none())
    }

    /// Attaches a graph node to the result `self` of op `op` on `inputs`
    /// when any input is tracked (and recording is on); `make` builds the
    /// backward closure only then, from the (untracked) result.
    pub(crate) fn record(
        self,
        op: &'static str,
        inputs: &[&Tensor],
        make: impl FnOnce(&Tensor) -> BackwardFn,
    ) -> Tensor {
        if !inputs.iter().any(|t| t.is_tracked()) || !grad_enabled() {
            return self;
        }
        let node = Node {
            id: NEXT_NODE.fetch_add(1, Ordering::Relaxed),
            op,
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            backward: Some(make(&self)),
        };
        self.with_node(Some(Arc::new(node)))
    }

    /// Refuses tracked operands for an op without a backward (the
    /// sampler's fused steps): silently dropping gradients would be wrong.
    pub(crate) fn refuse_tracked(op: &str, inputs: &[&Tensor]) -> Result<()> {
        if grad_enabled() && inputs.iter().any(|t| t.is_tracked()) {
            return Err(Error::Unsupported(format!(
                "{op} has no gradient: call it on detached tensors or inside no_grad"
            )));
        }
        Ok(())
    }

    /// Gradients of this scalar (one-element) tensor with respect to every
    /// variable it depends on.
    pub fn backward(&self) -> Result<Gradients> {
        if self.elem_count() != 1 {
            return Err(Error::invalid(format!(
                "backward: the loss must have one element, got shape {:?} \
                 (use backward_with to give the output's gradient)",
                self.dims()
            )));
        }
        let seed = Tensor::full_on(1.0, self.dims(), &self.device(), self.dtype())?;
        self.backward_with(&seed)
    }

    /// Vector–Jacobian product: gradients of `Σ self·grad` with respect to
    /// every variable `self` depends on; `grad` has `self`'s shape.
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        if grad.dims() != self.dims() {
            return Err(Error::invalid(format!(
                "backward_with: gradient {:?} for output {:?}",
                grad.dims(),
                self.dims()
            )));
        }
        let Some(root) = self.node() else {
            return Err(Error::invalid(
                "backward: the tensor does not depend on any variable",
            ));
        };
        let order = topological_order(root);
        let mut pending: HashMap<u64, Tensor> = HashMap::new();
        // The seed on the output's device and in its element type: the
        // backward kernels take operands of one device and type.
        pending.insert(
            root.id,
            grad.detach().to_device(&self.device(), self.dtype())?,
        );
        let mut leaves = HashMap::new();
        for node in order.iter().rev() {
            let Some(g) = pending.remove(&node.id) else {
                continue;
            };
            let Some(backward) = &node.backward else {
                leaves.insert(node.id, g);
                continue;
            };
            let needs: Vec<bool> = node.inputs.iter().map(Tensor::is_tracked).collect();
            let grads = backward(&g, &needs).map_err(|e| e.context(node.op))?;
            if grads.len() != node.inputs.len() {
                return Err(Error::Internal(format!(
                    "backward of {} gave {} gradients for {} operands",
                    node.op,
                    grads.len(),
                    node.inputs.len()
                )));
            }
            for ((input, gi), need) in node.inputs.iter().zip(grads).zip(needs) {
                let (Some(gi), true, Some(inode)) = (gi, need, input.node()) else {
                    continue;
                };
                if gi.dims() != input.dims() {
                    return Err(Error::Internal(format!(
                        "backward of {}: gradient {:?} for operand {:?}",
                        node.op,
                        gi.dims(),
                        input.dims()
                    )));
                }
                // Each gradient on its operand's device and in its type: a
                // backward computed on the host gives CPU tensors.
                let gi = gi.to_device(&input.device(), input.dtype())?.detach();
                let sum = match pending.remove(&inode.id) {
                    Some(acc) => acc.add(&gi)?,
                    None => gi,
                };
                pending.insert(inode.id, sum);
            }
        }
        Ok(Gradients { by_node: leaves })
    }
}

/// Nodes reachable from `root`, every node after all its inputs.
fn topological_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: deep graphs must not overflow the stack.
    let mut stack: Vec<(Arc<Node>, usize)> = vec![(Arc::clone(root), 0)];
    seen.insert(root.id);
    while let Some((node, next)) = stack.pop() {
        let child = node.inputs[next..]
            .iter()
            .enumerate()
            .find_map(|(i, t)| t.node().filter(|n| !seen.contains(&n.id)).map(|n| (i, n)));
        match child {
            Some((i, child)) => {
                let child = Arc::clone(child);
                seen.insert(child.id);
                stack.push((node, next + i + 1));
                stack.push((child, 0));
            }
            None => order.push(node),
        }
    }
    order
}

/// The gradients of a loss with respect to the variables it depends on.
#[derive(Debug, Default)]
pub struct Gradients {
    by_node: HashMap<u64, Tensor>,
}

impl Gradients {
    /// The gradient of `variable` (`None` when the loss does not depend on
    /// it, or it is not a variable).
    pub fn get(&self, variable: &Tensor) -> Option<&Tensor> {
        variable.node().and_then(|n| self.by_node.get(&n.id))
    }

    /// Removes and returns the gradient of `variable` (so a caller copying
    /// gradients out frees each as it goes).
    pub fn take(&mut self, variable: &Tensor) -> Option<Tensor> {
        variable.node().and_then(|n| self.by_node.remove(&n.id))
    }

    /// The gradient of `variable`, zeros when the loss does not depend on it.
    pub fn get_or_zeros(&self, variable: &Tensor) -> Result<Tensor> {
        match self.get(variable) {
            Some(g) => Ok(g.clone()),
            None => Tensor::full_on(0.0, variable.dims(), &variable.device(), variable.dtype()),
        }
    }

    /// Number of variables with a gradient.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether no variable received a gradient.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

/// Sums `g` (an op's output gradient) down to `shape`, the shape of an
/// operand that was broadcast to `g`'s shape (NumPy rules).
pub(crate) fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.dims() == shape {
        return Ok(g.clone());
    }
    let rank = g.rank();
    let mismatch = || Error::Internal(format!("sum_to_shape: {:?} into {shape:?}", g.dims()));
    if shape.len() > rank {
        return Err(mismatch());
    }
    let mut padded = vec![1; rank - shape.len()];
    padded.extend_from_slice(shape);
    // Each run of consecutive broadcast axes is summed in one pass on the
    // tensor's own device.
    let mut out = g.clone();
    let mut a = 0;
    while a < rank {
        if padded[a] != 1 {
            if padded[a] != g.dims()[a] {
                return Err(mismatch());
            }
            a += 1;
            continue;
        }
        let start = a;
        while a < rank && padded[a] == 1 {
            a += 1;
        }
        // A run of size 1 needs no sum; one of size 0 sums to zeros.
        if g.dims()[start..a].iter().product::<usize>() != 1 {
            out = out.sum_dims_keepdim(start, a - start)?;
        }
    }
    out.reshape(shape)
}

/// The gradient of `narrow(dim, start, len)`: `g` placed at `start` in
/// zeros of the operand's shape.
pub(crate) fn unnarrow(g: &Tensor, full: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    let (device, dtype) = (g.device(), g.dtype());
    let len = g.dims()[dim];
    let mut parts = Vec::new();
    let zeros = |n: usize| -> Result<Tensor> {
        let mut shape = full.to_vec();
        shape[dim] = n;
        Tensor::full_on(0.0, &shape, &device, dtype)
    };
    let before = (start > 0).then(|| zeros(start)).transpose()?;
    let after_n = full[dim] - start - len;
    let after = (after_n > 0).then(|| zeros(after_n)).transpose()?;
    if let Some(b) = &before {
        parts.push(b);
    }
    parts.push(g);
    if let Some(a) = &after {
        parts.push(a);
    }
    Tensor::cat(&parts, dim)
}

/// The host values of a tensor that a backward computed on the CPU needs:
/// borrowed for CPU tensors, downloaded (as f32) from other devices. The
/// gradient such a backward returns is a CPU tensor, which
/// [`Tensor::backward_with`] moves to its operand's device; the ops with
/// device kernels for their backward never come here.
pub(crate) fn host<'a>(t: &'a Tensor, op: &str) -> Result<Cow<'a, [f32]>> {
    match t.as_slice() {
        Ok(values) => Ok(Cow::Borrowed(values)),
        Err(_) => t
            .to_vec()
            .map(Cow::Owned)
            .map_err(|e| e.context(format!("downloading an operand of {op}'s backward"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untracked_ops_record_nothing_and_no_grad_switches_recording_off() -> Result<()> {
        let x = Tensor::from_vec(vec![1.0, 2.0], &[2])?;
        assert!(!x.add(&x)?.is_tracked());
        let v = x.variable();
        assert!(v.is_variable() && v.add(&x)?.is_tracked());
        assert!(!no_grad(|| v.add(&x))?.is_tracked());
        assert!(v.add(&x)?.is_tracked(), "recording resumes after no_grad");
        assert!(x.add(&x)?.backward().is_err());
        Ok(())
    }

    /// A variable used twice accumulates both paths; broadcasting sums the
    /// gradient back down to the operand's shape.
    #[test]
    fn gradients_accumulate_over_paths_and_broadcasts() -> Result<()> {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?.variable();
        let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3])?.variable();
        // L = Σ (a·b + a)
        let y = a.mul(&b)?.add(&a)?;
        let grads = y.backward_with(&Tensor::full(1.0, &[2, 3])?)?;
        assert_eq!(
            grads.get(&a).unwrap().to_vec()?,
            vec![11.0, 21.0, 31.0, 11.0, 21.0, 31.0]
        );
        assert_eq!(grads.get(&b).unwrap().to_vec()?, vec![5.0, 7.0, 9.0]);
        Ok(())
    }

    #[test]
    fn sum_to_shape_reduces_broadcast_axes() -> Result<()> {
        let g = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[2, 3, 2])?;
        assert_eq!(sum_to_shape(&g, &[3, 1])?.to_vec()?, vec![14.0, 22.0, 30.0]);
        assert_eq!(
            sum_to_shape(&g, &[2, 1, 2])?.to_vec()?,
            vec![6.0, 9.0, 24.0, 27.0]
        );
        assert_eq!(sum_to_shape(&g, &[1])?.to_vec()?, vec![66.0]);
        // Broadcast from size 1 to size 0: the operand's gradient is zeros.
        let empty = Tensor::from_vec(Vec::new(), &[0, 3])?;
        assert_eq!(sum_to_shape(&empty, &[1, 3])?.to_vec()?, vec![0.0; 3]);
        assert_eq!(sum_to_shape(&empty, &[3])?.to_vec()?, vec![0.0; 3]);
        Ok(())
    }
}

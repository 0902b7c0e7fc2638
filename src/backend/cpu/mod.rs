//! CPU kernels: f32, contiguous row-major buffers, rayon for threads.
//!
//! Matrix products go through [`gemm`] (faer's run-time dispatched AVX-512 /
//! AVX2 kernels, through its safe API), split across threads by output
//! blocks. 3×3 stride-1 convolutions on large frames use [`winograd`] (4×
//! fewer multiplies from 32×32 up, 2.25× on mid-sized frames), all other
//! convolutions im2col in [`conv`]. The element-wise loops run inside
//! [`simd`], which compiles them for the CPU's widest vector unit.

pub mod attention;
pub mod conv;
pub mod conv3d;
pub mod elementwise;
pub mod gemm;
pub mod grad;
pub mod norm;
pub mod optim;
pub mod sliding;
pub mod storage;
pub mod winograd;

pub use storage::{CpuDevice, CpuStorage};

/// Runs `f` with the widest SIMD instruction set of this CPU enabled
/// (AVX-512 or AVX2 + FMA on x86-64, detected at run time by `pulp`'s safe
/// dispatch), so that plain slice loops inside `f` are auto-vectorised at
/// that width. Only code inlined into `f` benefits: keep `f` a tight loop
/// over `#[inline(always)]` helpers, and call it per chunk inside rayon
/// tasks rather than around them.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Tensor buffers of dropped tensors, kept for [`output_buffer`].
struct BufferPool {
    /// Oldest first.
    buffers: std::collections::VecDeque<Vec<f32>>,
    /// Sum of the buffers' capacities, in floats.
    floats: usize,
}

static POOL: std::sync::Mutex<BufferPool> = std::sync::Mutex::new(BufferPool {
    buffers: std::collections::VecDeque::new(),
    floats: 0,
});

/// Buffers smaller than this (64 KiB) are left to the allocator.
const POOL_MIN_FLOATS: usize = 1 << 14;

/// The pool keeps at most this many floats (128 MiB) and buffers.
const POOL_MAX_FLOATS: usize = 1 << 25;
const POOL_MAX_BUFFERS: usize = 32;

/// A buffer of `len` floats for a kernel output that the kernel overwrites
/// completely: the storage of a dropped tensor when one of a fitting size
/// is pooled (its stale contents are not cleared), else newly zeroed memory.
/// Saves the zero-fill of large outputs, a serial pass over memory that
/// otherwise precedes most parallel kernels.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    if len >= POOL_MIN_FLOATS {
        let taken = POOL.lock().ok().and_then(|mut pool| {
            // Best fit among buffers that waste at most half their size.
            let best = pool
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)?;
            let buf = pool.buffers.remove(best)?;
            pool.floats -= buf.capacity();
            Some(buf)
        });
        if let Some(mut buf) = taken {
            // Shortens, or zero-fills only the part past the old length.
            buf.resize(len, 0.0);
            return buf;
        }
    }
    vec![0f32; len]
}

/// Takes back the storage of a dropped tensor for [`output_buffer`]. Small
/// buffers are freed at once; past the pool's bounds the oldest buffers are
/// freed, so the pool follows the sizes in current use.
pub(crate) fn recycle(buf: Vec<f32>) {
    let cap = buf.capacity();
    if !(POOL_MIN_FLOATS..=POOL_MAX_FLOATS).contains(&cap) {
        return;
    }
    let evicted = POOL.lock().ok().map(|mut pool| {
        pool.floats += cap;
        pool.buffers.push_back(buf);
        let mut evicted = Vec::new();
        while pool.floats > POOL_MAX_FLOATS || pool.buffers.len() > POOL_MAX_BUFFERS {
            match pool.buffers.pop_front() {
                Some(old) => {
                    pool.floats -= old.capacity();
                    evicted.push(old);
                }
                None => break,
            }
        }
        evicted
    });
    // Freed after the lock is released.
    drop(evicted);
}

thread_local! {
    /// Per-thread pool of scratch buffers for [`with_scratch`].
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` floats whose contents are
/// unspecified (left over from earlier use): for temporaries that `f`
/// overwrites completely (Winograd tiles, im2col columns), so they are
/// neither allocated nor zeroed on every call. Buffers are kept per thread
/// and taken out of the pool while in use, so nested calls (rayon may run
/// another task on this thread while `f` waits) get buffers of their own.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    SCRATCH.with(|pool| pool.borrow_mut().push(buf));
    result
}

/// Seeded standard-normal test data shared by the kernel tests.
#[cfg(test)]
pub(crate) fn random_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nested scratch buffers are distinct, have the requested lengths, and
    /// come back to the pool for the next call.
    #[test]
    fn nested_scratch_buffers_are_distinct() {
        with_scratch(100, |outer| {
            outer.fill(1.0);
            with_scratch(50, |inner| {
                assert_eq!(inner.len(), 50);
                inner.fill(2.0);
            });
            assert!(outer.iter().all(|&v| v == 1.0));
            assert_eq!(outer.len(), 100);
        });
        // The larger buffer is reused (its contents are whatever was left).
        with_scratch(80, |again| assert_eq!(again.len(), 80));
    }

    /// Loops run inside `simd` compute the same as outside it.
    #[test]
    fn simd_runs_the_closure() {
        let v = random_normal(1000, 3);
        let mut out = vec![0f32; 1000];
        simd(|| {
            for (o, &x) in out.iter_mut().zip(&v) {
                *o = 2.0 * x + 1.0;
            }
        });
        assert!(out.iter().zip(&v).all(|(o, x)| *o == 2.0 * x + 1.0));
    }
}

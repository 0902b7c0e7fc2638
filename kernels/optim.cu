// Optimiser updates and gradient norms on f32 master weights
// (CPU: src/backend/cpu/optim.rs), so a training step's parameters,
// gradients and optimiser state never leave the device.
//
// Every product, quotient, root and sum is rounded once in the CPU's order
// with __fmul_rn/__fdiv_rn/__fsqrt_rn/__fadd_rn/__fsub_rn (which nvcc never
// contracts into FMAs): for the same inputs the updates are bit-identical
// to the CPU's. The per-step scalars (Adam's bias corrections, AdamW's
// decay factor) are computed once on the host, as the CPU computes them.
#include "common.cuh"

// The scalars of one update; `OptimArgs` in src/backend/cuda/kernels.rs.
struct OptimArgs {
    float grad_factor0;  // the loss scale's inverse (1 = none)
    float grad_factor1;  // the clipping factor (1 = none)
    float lr;
    float weight_decay;
    float decay;         // AdamW: 1 − lr·wd
    float beta1_complement;  // 1 − β₁
    float beta2;
    float beta2_complement;  // 1 − β₂
    float eps;
    float step_size;     // lr / (1 − β₁ᵗ)
    float bias2_sqrt;    // √(1 − β₂ᵗ)
    float momentum;
    int decoupled;
    int nesterov;
    int first_step;
    int pad;
};

__device__ __forceinline__ float scaled_grad(const float* g, u64 i, const OptimArgs& a) {
    return __fmul_rn(__fmul_rn(g[i], a.grad_factor0), a.grad_factor1);
}

// Adam / AdamW (PyTorch's single-tensor form):
//   AdamW: p ← p·(1 − lr·wd);  Adam: g ← g + wd·p
//   m ← m + (g − m)·(1 − β₁);  v ← v·β₂ + (1 − β₂)·g·g
//   p ← p − step_size·(m / (√v / √(1 − β₂ᵗ) + ε))
extern "C" __global__ void optim_adam_f32(const float* p, const float* g, const float* m, const float* v,
                                          float* p_out, float* m_out, float* v_out, u64 n, OptimArgs a) {
    GRID_STRIDE_LOOP(i, n) {
        float grad = scaled_grad(g, i, a);
        float pi = p[i];
        if (a.decoupled) {
            pi = __fmul_rn(pi, a.decay);
        } else if (a.weight_decay != 0.0f) {
            grad = __fadd_rn(grad, __fmul_rn(a.weight_decay, pi));
        }
        const float mi = __fadd_rn(m[i], __fmul_rn(__fsub_rn(grad, m[i]), a.beta1_complement));
        const float vi = __fadd_rn(__fmul_rn(v[i], a.beta2), __fmul_rn(__fmul_rn(a.beta2_complement, grad), grad));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bias2_sqrt), a.eps);
        p_out[i] = __fsub_rn(pi, __fmul_rn(a.step_size, __fdiv_rn(mi, denom)));
        m_out[i] = mi;
        v_out[i] = vi;
    }
}

// SGD (PyTorch): g ← g + wd·p; buf ← g at the first step, else μ·buf + g;
// Nesterov: g ← g + μ·buf, else g ← buf; p ← p − lr·g. With μ = 0 the
// buffer is copied unchanged.
extern "C" __global__ void optim_sgd_f32(const float* p, const float* g, const float* buf, float* p_out,
                                         float* buf_out, u64 n, OptimArgs a) {
    GRID_STRIDE_LOOP(i, n) {
        float grad = scaled_grad(g, i, a);
        const float pi = p[i];
        if (a.weight_decay != 0.0f) grad = __fadd_rn(grad, __fmul_rn(a.weight_decay, pi));
        float b = buf[i];
        if (a.momentum != 0.0f) {
            b = a.first_step ? grad : __fadd_rn(__fmul_rn(b, a.momentum), grad);
            grad = a.nesterov ? __fadd_rn(grad, __fmul_rn(a.momentum, b)) : b;
        }
        p_out[i] = __fsub_rn(pi, __fmul_rn(a.lr, grad));
        buf_out[i] = b;
    }
}

// Sum of squares of x[0..n) in f64, one partial per block into
// partials[blockIdx.x]: each thread accumulates its grid-stride elements in
// order, then the block adds the threads' sums in a fixed tree (blockDim.x
// must be a power of two ≤ 1024). The host adds the partials in block
// order, so the result depends only on n and the grid, never on timing.
extern "C" __global__ void sum_squares_f32(const float* x, u64 n, double* partials) {
    __shared__ double sums[1024];
    double acc = 0.0;
    GRID_STRIDE_LOOP(i, n) {
        const double v = (double)x[i];
        acc = __dadd_rn(acc, __dmul_rn(v, v));
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned half = blockDim.x >> 1; half > 0; half >>= 1) {
        if (threadIdx.x < half) sums[threadIdx.x] = __dadd_rn(sums[threadIdx.x], sums[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = sums[0];
}

// Shared helpers of the claim kernels: index arithmetic, bounded
// grid-stride loops, fp16 load/store and block reductions.
//
// Conventions of every kernel (kernels/README.md):
// - contiguous row-major tensors, sizes and offsets in 64-bit integers;
// - fp16 storage (__half), fp32 arithmetic and fp32 reductions;
// - every loop is bounded by a size argument; no printf, no managed memory;
// - kernels are correct for ANY grid (grid-stride loops) and any block
//   that is a multiple of 32 (warp and block reductions), with the
//   exceptions the README states (`reduce_sum_*` needs exactly 32×32; the
//   tensor-core tiles their own block); the grid only decides speed.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

typedef unsigned long long u64;
typedef long long i64;

// Global index of this thread and the grid's thread count along x, in 64
// bits so that the loops below never overflow for n < 2^63.
__device__ __forceinline__ u64 global_thread_x() {
    return (u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x;
}
__device__ __forceinline__ u64 grid_threads_x() {
    return (u64)gridDim.x * (u64)blockDim.x;
}

// `for (u64 i = first; i < n; i += stride)`: the grid-stride loop. `n` is a
// kernel argument, so the trip count is bounded by n / stride + 1.
#define GRID_STRIDE_LOOP(i, n) \
    for (u64 i = global_thread_x(), i##_stride = grid_threads_x(); i < (u64)(n); i += i##_stride)

// fp16 <-> fp32 (round to nearest even on the way down, as half::f16).
__device__ __forceinline__ float ld_f32(const __half* p, u64 i) { return __half2float(p[i]); }
__device__ __forceinline__ float ld_f32(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ void st_f32(__half* p, u64 i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void st_f32(float* p, u64 i, float v) { p[i] = v; }

// An optional per-element operand: 0 when the pointer is NULL.
__device__ __forceinline__ float ld_or(const __half* p, u64 i, float fallback) {
    return p ? __half2float(p[i]) : fallback;
}

// Sum of `v` over the block (any blockDim.x multiple of 32, ≤ 1024), in a
// fixed order: warp shuffles, then warp 0 over the warp partials. Every
// thread gets the result. `scratch` holds 32 floats in shared memory; the
// call begins and ends with a barrier so it can be reused back to back.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned warps = (blockDim.x + 31u) >> 5;
    __syncthreads();
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned warps = (blockDim.x + 31u) >> 5;
    __syncthreads();
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : -INFINITY;
    t = warp_max(t);
    __syncthreads();
    return t;
}

// SiLU x·σ(x) written as the CPU writes it (backend/cpu/elementwise.rs
// `silu`: v / (1 + exp(−v))); expf is CUDA's accurate (≤ 2 ulp) exp.
__device__ __forceinline__ float silu_f(float v) { return v / (1.0f + expf(-v)); }

// LeakyReLU as nn/ops/activation.rs `leaky_relu`: v if v ≥ 0 else v·slope.
__device__ __forceinline__ float leaky_f(float v, float slope) { return v >= 0.0f ? v : v * slope; }

// Activation codes shared by the fused normalisations.
#define ACT_NONE 0
#define ACT_SILU 1
#define ACT_LEAKY 2
__device__ __forceinline__ float apply_act(float v, int act, float p) {
    if (act == ACT_SILU) return silu_f(v);
    if (act == ACT_LEAKY) return leaky_f(v, p);
    return v;
}

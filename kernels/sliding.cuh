// nnU-Net's sliding-window sum, per accumulator element, in a header of its
// own so that a host program runs the very same code:
// kernels/tests/sliding_host.cu checks it against window-by-window
// accumulation on machines without a GPU (kernels/check.sh runs it).
// CPU reference: src/backend/cpu/sliding.rs (same per-voxel order).
#pragma once

#include "common.cuh"

// Most windows one launch adds (MAX_WINDOWS_PER_SUM in
// src/backend/desc.rs): the starts travel in the argument struct.
#define SLIDING_MAX_WINDOWS 64

// Mirrored by SlidingArgs in src/backend/cuda/kernels.rs (same order).
struct SlidingArgs {
    i64 classes;                        // channels of the sum and the windows
    i64 grid[3];                        // the sum's (z, y, x)
    i64 extent[3];                      // every window's (z, y, x)
    i64 windows;                        // 1..SLIDING_MAX_WINDOWS
    i64 lo[3], hi[3];                   // the windows' bounding box, [lo, hi)
    i64 starts[SLIDING_MAX_WINDOWS][3];  // in the order they are added
};

// a·b and a + b rounded once each, never contracted into an FMA (the CPU
// reference rounds the product, then the sum).
__host__ __device__ __forceinline__ float sliding_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__host__ __device__ __forceinline__ float sliding_add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// why: cpu::sliding::accumulate_windows. The new value of sum element
// (c, z, y, x), which holds `acc`: every window covering the voxel, in
// order, adds prediction·gaussian and rounds to f16 (nnU-Net's
// `predicted_logits[sl] += prediction` on half tensors).
__host__ __device__ __forceinline__ __half sliding_sum_at(const __half* pred, const __half* gaussian, __half acc,
                                                         const SlidingArgs& a, i64 c, i64 z, i64 y, i64 x) {
    if (z < a.lo[0] || z >= a.hi[0] || y < a.lo[1] || y >= a.hi[1] || x < a.lo[2] || x >= a.hi[2]) return acc;
    const i64 ez = a.extent[0], ey = a.extent[1], ex = a.extent[2];
    const i64 patch = ez * ey * ex;
    const i64 windows = a.windows < SLIDING_MAX_WINDOWS ? a.windows : SLIDING_MAX_WINDOWS;
    for (i64 w = 0; w < windows; ++w) {
        const i64 oz = z - a.starts[w][0], oy = y - a.starts[w][1], ox = x - a.starts[w][2];
        if (oz < 0 || oz >= ez || oy < 0 || oy >= ey || ox < 0 || ox >= ex) continue;
        const i64 offset = (oz * ey + oy) * ex + ox;
        const float p = __half2float(pred[(w * a.classes + c) * patch + offset]);
        const float g = __half2float(gaussian[offset]);
        acc = __float2half_rn(sliding_add(__half2float(acc), sliding_mul(p, g)));
    }
    return acc;
}

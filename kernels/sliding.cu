// nnU-Net's prediction on the device: the Gaussian-weighted sliding-window
// sums in f16 and the class argmax (CPU: src/backend/cpu/sliding.rs).
#include "sliding.cuh"

// why: cpu::sliding::accumulate_windows. out = sum with the windows of
// `a` added; pred [windows, classes, extent], sum/out [classes, grid],
// gaussian [extent]. One thread per element, every element written.
extern "C" __global__ void sliding_accumulate_f16(const __half* pred, const __half* gaussian, const __half* sum,
                                                  __half* out, SlidingArgs a) {
    const i64 gz = a.grid[0], gy = a.grid[1], gx = a.grid[2];
    const u64 n = (u64)a.classes * (u64)(gz * gy * gx);
    GRID_STRIDE_LOOP(i, n) {
        const i64 x = (i64)(i % (u64)gx);
        const i64 y = (i64)((i / (u64)gx) % (u64)gy);
        const i64 z = (i64)((i / (u64)(gx * gy)) % (u64)gz);
        const i64 c = (i64)(i / (u64)(gx * gy * gz));
        out[i] = sliding_sum_at(pred, gaussian, sum[i], a, c, z, y, x);
    }
}

// why: cpu::sliding::argmax. y[o, j] = the first c of the largest x[o, c, j]
// (a comparison with NaN is false), written as a value of the type.
template <typename T>
__device__ __forceinline__ void argmax_body(const T* x, T* y, i64 outer, i64 n, i64 inner) {
    GRID_STRIDE_LOOP(i, (u64)outer * (u64)inner) {
        const i64 o = (i64)(i / (u64)inner), j = (i64)(i % (u64)inner);
        const i64 base = o * n * inner + j;
        float best = ld_f32(x, base);
        i64 index = 0;
        for (i64 c = 1; c < n; ++c) {
            const float v = ld_f32(x, base + c * inner);
            if (v > best) {
                best = v;
                index = c;
            }
        }
        st_f32(y, i, (float)index);
    }
}

extern "C" __global__ void argmax_f16(const __half* x, __half* y, i64 outer, i64 n, i64 inner) {
    argmax_body(x, y, outer, n, inner);
}
extern "C" __global__ void argmax_f32(const float* x, float* y, i64 outer, i64 n, i64 inner) {
    argmax_body(x, y, outer, n, inner);
}

// Softmax over the middle axis of [outer, n, inner] (CPU:
// cpu::elementwise::softmax_axis / softmax_rows): the maximum subtracted
// first, exp and sum in fp32, then division by the sum.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void softmax_body(const T* x, T* y, i64 outer, i64 n, i64 inner) {
    if (outer <= 0 || n <= 0 || inner <= 0) return;
    if (inner == 1) {
        // Rows (attention scores, last-axis softmax): one block per row,
        // three block-wide passes; the row is re-read from L1/L2.
        __shared__ float scratch[32];
        for (u64 r = blockIdx.x; r < (u64)outer; r += gridDim.x) {
            const T* xr = x + r * (u64)n;
            T* yr = y + r * (u64)n;
            float m = -INFINITY;
            for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) m = fmaxf(m, ld_f32(xr, j));
            m = block_max(m, scratch);
            float s = 0.0f;
            for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) s += expf(ld_f32(xr, j) - m);
            s = block_sum(s, scratch);
            const float inv = 1.0f / s;
            for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) st_f32(yr, j, expf(ld_f32(xr, j) - m) * inv);
        }
        return;
    }
    // Columns (class axis of [B, C, S]): a thread per (outer, inner)
    // position walks the n values, strided by inner; neighbouring threads
    // read neighbouring addresses, so every pass is coalesced.
    const u64 cols = (u64)outer * (u64)inner;
    GRID_STRIDE_LOOP(p, cols) {
        const u64 o = p / (u64)inner, q = p % (u64)inner;
        const T* xc = x + o * (u64)n * (u64)inner + q;
        T* yc = y + o * (u64)n * (u64)inner + q;
        float m = -INFINITY;
        for (u64 j = 0; j < (u64)n; ++j) m = fmaxf(m, ld_f32(xc, j * (u64)inner));
        float s = 0.0f;
        for (u64 j = 0; j < (u64)n; ++j) s += expf(ld_f32(xc, j * (u64)inner) - m);
        const float inv = 1.0f / s;
        for (u64 j = 0; j < (u64)n; ++j) st_f32(yc, j * (u64)inner, expf(ld_f32(xc, j * (u64)inner) - m) * inv);
    }
}

extern "C" __global__ void softmax_f16(const __half* x, __half* y, long long outer, long long n, long long inner) {
    softmax_body(x, y, outer, n, inner);
}
extern "C" __global__ void softmax_f32(const float* x, float* y, long long outer, long long n, long long inner) {
    softmax_body(x, y, outer, n, inner);
}

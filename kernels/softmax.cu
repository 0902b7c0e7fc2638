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

// Softmax backward over the middle axis of [outer, n, inner] (CPU:
// cpu::grad::softmax_backward): dx = y·(g − Σ_j y_j·g_j), the dot in fp32.
// A thread per (outer, inner) column, as the forward's column path; rows
// (inner 1) get a block each.
template <typename T>
__device__ __forceinline__ void softmax_backward_body(const T* y, const T* g, T* dx, i64 outer, i64 n, i64 inner) {
    if (outer <= 0 || n <= 0 || inner <= 0) return;
    if (inner == 1) {
        __shared__ float scratch[32];
        for (u64 r = blockIdx.x; r < (u64)outer; r += gridDim.x) {
            const T* yr = y + r * (u64)n;
            const T* gr = g + r * (u64)n;
            T* dr = dx + r * (u64)n;
            float dot = 0.0f;
            for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) dot += ld_f32(yr, j) * ld_f32(gr, j);
            dot = block_sum(dot, scratch);
            for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) st_f32(dr, j, ld_f32(yr, j) * (ld_f32(gr, j) - dot));
        }
        return;
    }
    const u64 cols = (u64)outer * (u64)inner;
    GRID_STRIDE_LOOP(p, cols) {
        const u64 o = p / (u64)inner, q = p % (u64)inner;
        const u64 base = o * (u64)n * (u64)inner + q;
        float dot = 0.0f;
        for (u64 j = 0; j < (u64)n; ++j) dot += ld_f32(y, base + j * (u64)inner) * ld_f32(g, base + j * (u64)inner);
        for (u64 j = 0; j < (u64)n; ++j) {
            const u64 at = base + j * (u64)inner;
            st_f32(dx, at, ld_f32(y, at) * (ld_f32(g, at) - dot));
        }
    }
}

extern "C" __global__ void softmax_backward_f16(const __half* y, const __half* g, __half* dx, long long outer, long long n,
                                                long long inner) {
    softmax_backward_body(y, g, dx, outer, n, inner);
}
extern "C" __global__ void softmax_backward_f32(const float* y, const float* g, float* dx, long long outer, long long n,
                                                long long inner) {
    softmax_backward_body(y, g, dx, outer, n, inner);
}

// Sum over the middle axis of [outer, n, inner] into [outer, inner] (CPU:
// cpu::elementwise::reduce_sum; bias gradients, broadcast gradients), in
// fp32, rounded once.
//
// reduce_sum_*: inner > 1. Block (32, REDUCE_ROWS): x over 32 neighbouring
// inner positions (coalesced), y over a stride of the summed axis; the
// partial sums meet in shared memory. Grid: x over inner tiles, y over
// outer; both loop.
#define REDUCE_ROWS 32
template <typename T>
__device__ __forceinline__ void reduce_sum_body(const T* x, T* y, i64 outer, i64 n, i64 inner) {
    __shared__ float partial[REDUCE_ROWS][33];
    if (outer <= 0 || inner <= 0) return;
    const u64 tiles = ((u64)inner + 31u) / 32u;
    // Block-uniform loops (the barriers inside need every thread).
    for (u64 o = blockIdx.y; o < (u64)outer; o += gridDim.y) {
        for (u64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const u64 q = tile * 32u + threadIdx.x;
            float acc = 0.0f;
            if (q < (u64)inner) {
                const T* col = x + o * (u64)n * (u64)inner + q;
                for (u64 j = threadIdx.y; j < (u64)n; j += REDUCE_ROWS) acc += ld_f32(col, j * (u64)inner);
            }
            partial[threadIdx.y][threadIdx.x] = acc;
            __syncthreads();
            if (threadIdx.y == 0 && q < (u64)inner) {
                float s = 0.0f;
                for (int r = 0; r < REDUCE_ROWS; ++r) s += partial[r][threadIdx.x];
                st_f32(y, o * (u64)inner + q, s);
            }
            __syncthreads();
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * REDUCE_ROWS)
    reduce_sum_f16(const __half* x, __half* y, long long outer, long long n, long long inner) {
    reduce_sum_body(x, y, outer, n, inner);
}
extern "C" __global__ void __launch_bounds__(32 * REDUCE_ROWS)
    reduce_sum_f32(const float* x, float* y, long long outer, long long n, long long inner) {
    reduce_sum_body(x, y, outer, n, inner);
}

// reduce_sum_rows_*: inner == 1 (a convolution bias's spatial sum): a block
// per row of n contiguous values, summed by the whole block.
template <typename T>
__device__ __forceinline__ void reduce_sum_rows_body(const T* x, T* y, i64 rows, i64 n) {
    __shared__ float scratch[32];
    for (u64 r = blockIdx.x; r < (u64)rows; r += gridDim.x) {
        const T* xr = x + r * (u64)n;
        float s = 0.0f;
        for (u64 j = threadIdx.x; j < (u64)n; j += blockDim.x) s += ld_f32(xr, j);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) st_f32(y, r, s);
    }
}

extern "C" __global__ void reduce_sum_rows_f16(const __half* x, __half* y, long long rows, long long n) {
    reduce_sum_rows_body(x, y, rows, n);
}
extern "C" __global__ void reduce_sum_rows_f32(const float* x, float* y, long long rows, long long n) {
    reduce_sum_rows_body(x, y, rows, n);
}

// Sinusoidal timestep embedding (CPU: Tensor::sinusoidal_embedding in
// src/nn/ops/embedding.rs): half = dim/2,
// freq_i = exp(i·(−ln(10000)/(half − 1))) in f32, row = [sin(t·f), cos(t·f)].
// The same f32 operations in the same order; logf/expf/sinf/cosf are
// CUDA's accurate (≤ 2 ulp) routines, not Rust's libm, so values may
// differ in the last bit, far below fp16 resolution.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void sinusoidal_body(const float* t, T* y, i64 len, i64 dim) {
    if (len <= 0 || dim < 4 || (dim & 1)) return;  // the CPU op rejects these shapes
    const u64 half = (u64)dim / 2;
    const float e = logf(10000.0f) / ((float)half - 1.0f);
    const u64 total = (u64)len * half;
    GRID_STRIDE_LOOP(p, total) {
        const u64 r = p / half, i = p % half;
        const float f = expf((float)i * -e);
        const float a = t[r] * f;
        st_f32(y, r * (u64)dim + i, sinf(a));
        st_f32(y, r * (u64)dim + half + i, cosf(a));
    }
}

extern "C" __global__ void sinusoidal_f16(const float* t, __half* y, long long len, long long dim) {
    sinusoidal_body(t, y, len, dim);
}
extern "C" __global__ void sinusoidal_f32(const float* t, float* y, long long len, long long dim) {
    sinusoidal_body(t, y, len, dim);
}

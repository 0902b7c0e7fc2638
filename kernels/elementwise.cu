// Element-wise kernels: unary maps, broadcasting binary ops, linear
// combinations, casts and fills (CPU: src/backend/cpu/elementwise.rs and
// the closures in src/nn/ops/{activation,binary}.rs).
#include "common.cuh"

// Unary op codes (kernels/README.md).
#define UN_COPY 0
#define UN_SILU 1
#define UN_GELU 2
#define UN_LEAKY 3
#define UN_AFFINE 4
#define UN_EXP 5
#define UN_NEG 6
#define UN_SQUARE 7
#define UN_SQRT 8
#define UN_RECIP 9
#define UN_ROUND_HALF 10
#define UN_ABS 11
#define UN_LN 12
#define UN_IS_ZERO 13

__device__ __forceinline__ float unary_op(float v, int op, float p0, float p1) {
    switch (op) {
        case UN_COPY: return v;
        // why: cpu::silu, v / (1 + exp(−v)).
        case UN_SILU: return silu_f(v);
        // why: cpu::gelu, exact erf form ½x(1 + erf(x/√2)) (PyTorch nn.GELU()).
        case UN_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        // why: Tensor::leaky_relu, v ≥ 0 ? v : v·slope.
        case UN_LEAKY: return leaky_f(v, p0);
        // why: Tensor::affine, v·a + b.
        case UN_AFFINE: return v * p0 + p1;
        case UN_EXP: return expf(v);
        case UN_NEG: return -v;
        case UN_SQUARE: return v * v;
        case UN_SQRT: return sqrtf(v);
        case UN_RECIP: return 1.0f / v;
        // why: cpu::sliding::round_half, the nearest f16 (ties to even).
        case UN_ROUND_HALF: return __half2float(__float2half_rn(v));
        case UN_ABS: return fabsf(v);
        case UN_LN: return logf(v);
        // why: the losses' one-hot masks and the max/min gradient's pick, exact.
        case UN_IS_ZERO: return v == 0.0f ? 1.0f : 0.0f;
        default: return __int_as_float(0x7fc00000);  // unknown op: NaN, never silent
    }
}

template <typename T>
__device__ __forceinline__ void unary_body(const T* x, T* y, u64 n, int op, float p0, float p1) {
    GRID_STRIDE_LOOP(i, n) { st_f32(y, i, unary_op(ld_f32(x, i), op, p0, p1)); }
}

extern "C" __global__ void unary_f16(const __half* x, __half* y, u64 n, int op, float p0, float p1) {
    unary_body(x, y, n, op, p0, p1);
}
extern "C" __global__ void unary_f32(const float* x, float* y, u64 n, int op, float p0, float p1) {
    unary_body(x, y, n, op, p0, p1);
}

// The slope op′(v) of a unary op (CPU: cpu::grad::unary_backward), in
// fp32; the backward multiplies it by the output gradient.
__device__ __forceinline__ float unary_slope(float v, int op, float p0) {
    switch (op) {
        case UN_COPY: return 1.0f;
        // why: σ(v)·(1 + v·(1 − σ(v))), cpu::grad::silu_slope.
        case UN_SILU: {
            const float sig = 1.0f / (1.0f + expf(-v));
            return sig * (1.0f + v * (1.0f - sig));
        }
        // why: Φ(v) + v·φ(v) for the exact erf GELU.
        case UN_GELU:
            return 0.5f * (1.0f + erff(v * 0.70710678118654752f)) +
                   v * expf(-0.5f * v * v) * 0.39894228040143268f;
        case UN_LEAKY: return v >= 0.0f ? 1.0f : p0;
        case UN_AFFINE: return p0;
        case UN_EXP: return expf(v);
        case UN_NEG: return -1.0f;
        case UN_SQUARE: return 2.0f * v;
        case UN_SQRT: return 0.5f / sqrtf(v);
        case UN_RECIP: return -1.0f / (v * v);
        // why: the rounding's gradient is the identity (straight through).
        case UN_ROUND_HALF: return 1.0f;
        // why: PyTorch's sgn, 0 at 0 (the L1 loss's subgradient).
        case UN_ABS: return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
        case UN_LN: return 1.0f / v;
        case UN_IS_ZERO: return 0.0f;
        default: return __int_as_float(0x7fc00000);
    }
}

template <typename T>
__device__ __forceinline__ void unary_backward_body(const T* x, const T* g, T* dx, u64 n, int op, float p0) {
    GRID_STRIDE_LOOP(i, n) { st_f32(dx, i, ld_f32(g, i) * unary_slope(ld_f32(x, i), op, p0)); }
}

extern "C" __global__ void unary_backward_f16(const __half* x, const __half* g, __half* dx, u64 n, int op, float p0) {
    unary_backward_body(x, g, dx, n, op, p0);
}
extern "C" __global__ void unary_backward_f32(const float* x, const float* g, float* dx, u64 n, int op, float p0) {
    unary_backward_body(x, g, dx, n, op, p0);
}

// Broadcasting: output index → per-operand offsets through the output
// dims and each operand's strides (0 along broadcast dims). Mirrors
// cpu::broadcast_binary, whose `eff` strides are exactly these.
struct BroadcastArgs {
    int rank;  // 1..8
    i64 dims[8];
    i64 a_strides[8];
    i64 b_strides[8];
    u64 n;  // product of dims
};

#define BIN_ADD 0
#define BIN_SUB 1
#define BIN_MUL 2
#define BIN_DIV 3
#define BIN_MAX 4
#define BIN_MIN 5

__device__ __forceinline__ float binary_op(float a, float b, int op) {
    switch (op) {
        case BIN_ADD: return a + b;
        case BIN_SUB: return a - b;
        case BIN_MUL: return a * b;
        case BIN_DIV: return a / b;
        case BIN_MAX: return fmaxf(a, b);
        case BIN_MIN: return fminf(a, b);
        default: return __int_as_float(0x7fc00000);
    }
}

template <typename T>
__device__ __forceinline__ void binary_body(const T* a, const T* b, T* y, const BroadcastArgs& args, int op) {
    const int rank = args.rank < 1 ? 1 : (args.rank > 8 ? 8 : args.rank);
    if (rank == 1) {
        // Same shapes collapse to one dimension on the host: the fast path.
        const i64 sa = args.a_strides[0], sb = args.b_strides[0];
        GRID_STRIDE_LOOP(i, args.n) {
            st_f32(y, i, binary_op(ld_f32(a, (u64)((i64)i * sa)), ld_f32(b, (u64)((i64)i * sb)), op));
        }
        return;
    }
    GRID_STRIDE_LOOP(i, args.n) {
        u64 rem = i;
        i64 oa = 0, ob = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const u64 dim = (u64)args.dims[d];
            const u64 idx = dim ? rem % dim : 0;
            rem = dim ? rem / dim : 0;
            oa += (i64)idx * args.a_strides[d];
            ob += (i64)idx * args.b_strides[d];
        }
        st_f32(y, i, binary_op(ld_f32(a, (u64)oa), ld_f32(b, (u64)ob), op));
    }
}

extern "C" __global__ void binary_f16(const __half* a, const __half* b, __half* y, BroadcastArgs args, int op) {
    binary_body(a, b, y, args, op);
}
extern "C" __global__ void binary_f32(const float* a, const float* b, float* y, BroadcastArgs args, int op) {
    binary_body(a, b, y, args, op);
}

// y = α·a + β·b, each product and the sum rounded once (no FMA), so the
// f32 variant is bit-identical to the CPU's `a * x + b * z` — it serves
// Schedule::jump_up (x ← √(1−β)·x + √β·z) with α = √(1−β), β = √β.
template <typename T>
__device__ __forceinline__ void lincomb_body(const T* a, const T* b, T* y, u64 n, float alpha, float beta) {
    GRID_STRIDE_LOOP(i, n) {
        st_f32(y, i, __fadd_rn(__fmul_rn(alpha, ld_f32(a, i)), __fmul_rn(beta, ld_f32(b, i))));
    }
}

extern "C" __global__ void lincomb_f16(const __half* a, const __half* b, __half* y, u64 n, float alpha, float beta) {
    lincomb_body(a, b, y, n, alpha, beta);
}
extern "C" __global__ void lincomb_f32(const float* a, const float* b, float* y, u64 n, float alpha, float beta) {
    lincomb_body(a, b, y, n, alpha, beta);
}

// Casts: round to nearest even, as half::f16::from_f32.
extern "C" __global__ void cast_f16_to_f32(const __half* x, float* y, u64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = __half2float(x[i]); }
}
extern "C" __global__ void cast_f32_to_f16(const float* x, __half* y, u64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = __float2half_rn(x[i]); }
}

extern "C" __global__ void fill_f16(__half* y, u64 n, float v) {
    const __half h = __float2half_rn(v);
    GRID_STRIDE_LOOP(i, n) { y[i] = h; }
}
extern "C" __global__ void fill_f32(float* y, u64 n, float v) {
    GRID_STRIDE_LOOP(i, n) { y[i] = v; }
}

// RePaint sampler updates on the f32 state (CPU: src/synthesis/schedule.rs).
// Every product and sum is rounded once in the CPU's order with
// __fmul_rn/__fadd_rn/__fsub_rn (which nvcc never contracts into FMAs), so
// for the same inputs the results are bit-identical to the CPU's.
#include "common.cuh"

// why: Schedule::renoise_known,
//   noised = a·gt + b·z;  x = k·noised + (1 − k)·x
// with a = √ᾱ_t, b = √(1 − ᾱ_t), k the known mask (1 or 0).
extern "C" __global__ void repaint_known_blend_f32(const float* x, const float* gt, const float* known,
                                                   const float* noise, float* y, u64 n, float sqrt_abar,
                                                   float sqrt_one_minus_abar) {
    GRID_STRIDE_LOOP(i, n) {
        const float noised = __fadd_rn(__fmul_rn(sqrt_abar, gt[i]), __fmul_rn(sqrt_one_minus_abar, noise[i]));
        const float k = known[i];
        y[i] = __fadd_rn(__fmul_rn(k, noised), __fmul_rn(__fsub_rn(1.0f, k), x[i]));
    }
}

// why: Schedule::reverse_step,
//   x0 = clamp(r·x − rm1·ε, −1, 1);  mean = c1·x0 + c2·x;  x = mean + σ·z
// with r = √(1/ᾱ_t), rm1 = √(1/ᾱ_t − 1), c1, c2 the posterior mean
// coefficients and σ = exp(½·log σ²_t) for t > 0, 0 at t = 0 (the host
// passes σ = 0 there, as the CPU does; σ·z is then 0·z, as on the CPU).
// The clamp keeps NaN as NaN, like f32::clamp.
extern "C" __global__ void repaint_ancestral_f32(const float* x, const float* eps, const float* noise, float* y,
                                                 u64 n, float sqrt_recip_abar, float sqrt_recipm1_abar,
                                                 float coef1, float coef2, float sigma) {
    GRID_STRIDE_LOOP(i, n) {
        const float xi = x[i];
        float x0 = __fsub_rn(__fmul_rn(sqrt_recip_abar, xi), __fmul_rn(sqrt_recipm1_abar, eps[i]));
        x0 = x0 < -1.0f ? -1.0f : (x0 > 1.0f ? 1.0f : x0);
        const float mean = __fadd_rn(__fmul_rn(coef1, x0), __fmul_rn(coef2, xi));
        y[i] = __fadd_rn(mean, __fmul_rn(sigma, noise[i]));
    }
}

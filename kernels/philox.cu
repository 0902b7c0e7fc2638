// Counter-based normal noise: Philox4x32-10 + Box–Muller, bit-identical to
// the CPU reference src/backend/philox.rs (read that file for the spec;
// kernels/README.md repeats it). Compiled WITHOUT --use_fast_math, and
// every float operation below is an explicitly rounded intrinsic
// (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), which nvcc
// never contracts into FMAs, in the same order as the Rust code (Rust
// never contracts either). Constants are the same bit patterns.
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// why: philox.rs `philox4x32_10`.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, unsigned k0, unsigned k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned hi0 = __umulhi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
        const unsigned hi1 = __umulhi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

#define F(bits) __uint_as_float(bits##u)
#define ONE_THIRD F(0x3eaaaaab)
#define ONE_FIFTH F(0x3e4ccccd)
#define ONE_SEVENTH F(0x3e124925)
#define ONE_NINTH F(0x3de38e39)
#define LN2_HI F(0x3f318000)
#define LN2_LO F(0xb95e8083)
#define SQRT2 F(0x3fb504f3)
#define TWO_PI_2M24 F(0x34c90fdb)
#define INV_2_24 F(0x33800000)
#define S1 F(0xbe2aaaab)
#define S2 F(0x3c088889)
#define S3 F(0xb9500d01)
#define S4 F(0x3638ef1d)
#define C1 F(0xbf000000)
#define C2 F(0x3d2aaaab)
#define C3 F(0xbab60b61)
#define C4 F(0x37d00d01)
#define C5 F(0xb493f27e)

// why: philox.rs `ln_f32`.
__device__ __forceinline__ float ln_f32(float x) {
    const unsigned bits = __float_as_uint(x);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > SQRT2) {
        m = __fmul_rn(m, 0.5f);
        e += 1;
    }
    const float s = __fdiv_rn(__fsub_rn(m, 1.0f), __fadd_rn(m, 1.0f));
    const float z = __fmul_rn(s, s);
    float p = ONE_NINTH;
    p = __fadd_rn(ONE_SEVENTH, __fmul_rn(z, p));
    p = __fadd_rn(ONE_FIFTH, __fmul_rn(z, p));
    p = __fadd_rn(ONE_THIRD, __fmul_rn(z, p));
    const float s2 = __fadd_rn(s, s);
    const float ln_m = __fadd_rn(s2, __fmul_rn(__fmul_rn(s2, z), p));
    const float ef = (float)e;
    return __fadd_rn(__fadd_rn(__fmul_rn(ef, LN2_LO), ln_m), __fmul_rn(ef, LN2_HI));
}

// why: philox.rs `sincos_octant` and `cos_sin_turn24`.
__device__ __forceinline__ void cos_sin_turn24(unsigned k, float* cos_out, float* sin_out) {
    k &= 0x00ffffffu;
    const unsigned j = (k + (1u << 21)) >> 22;
    const int r = (int)k - (int)(j << 22);
    const float x = __fmul_rn((float)r, TWO_PI_2M24);
    const float z = __fmul_rn(x, x);
    float p = S4;
    p = __fadd_rn(S3, __fmul_rn(z, p));
    p = __fadd_rn(S2, __fmul_rn(z, p));
    p = __fadd_rn(S1, __fmul_rn(z, p));
    const float s = __fadd_rn(x, __fmul_rn(__fmul_rn(x, z), p));
    float q = C5;
    q = __fadd_rn(C4, __fmul_rn(z, q));
    q = __fadd_rn(C3, __fmul_rn(z, q));
    q = __fadd_rn(C2, __fmul_rn(z, q));
    q = __fadd_rn(C1, __fmul_rn(z, q));
    const float c = __fadd_rn(1.0f, __fmul_rn(z, q));
    switch (j & 3u) {
        case 0: *cos_out = c; *sin_out = s; break;
        case 1: *cos_out = -s; *sin_out = c; break;
        case 2: *cos_out = -c; *sin_out = -s; break;
        default: *cos_out = s; *sin_out = -c; break;
    }
}

// why: philox.rs `box_muller`.
__device__ __forceinline__ void box_muller(unsigned xa, unsigned xb, float* a, float* b) {
    const float u1 = __fmul_rn((float)((xa >> 8) + 1u), INV_2_24);
    const float t = __fmul_rn(-2.0f, ln_f32(u1));
    const float r = t > 0.0f ? __fsqrt_rn(t) : 0.0f;
    float c, s;
    cos_sin_turn24(xb >> 8, &c, &s);
    *a = __fmul_rn(r, c);
    *b = __fmul_rn(r, s);
}

// y[i·per_item + e] = normal of element e of item items[i] under
// (seed, stream, step), for i < n_items and e < per_item ≤ 2^34 (the
// counter word 0 is e/4; elements past 2^34 are left unwritten — the host
// refuses such sizes, as philox_normals panics on them). Items run over
// grid.y, counter blocks of 4 elements over grid.x.
extern "C" __global__ void philox_normal_f32(float* y, const unsigned int* items, u64 n_items, u64 per_item,
                                             u64 seed, unsigned int stream, unsigned int step) {
    const u64 limit = 1ull << 34;
    const u64 count = per_item < limit ? per_item : limit;
    const u64 blocks = (count + 3) / 4;
    const unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
    for (u64 i = blockIdx.y; i < n_items; i += gridDim.y) {
        const unsigned item = items[i];
        float* yi = y + i * per_item;
        GRID_STRIDE_LOOP(blk, blocks) {
            const uint4 x = philox4x32_10(make_uint4((unsigned)blk, item, step, stream), k0, k1);
            float v[4];
            box_muller(x.x, x.y, &v[0], &v[1]);
            box_muller(x.z, x.w, &v[2], &v[3]);
            const u64 e0 = blk * 4;
#pragma unroll
            for (int l = 0; l < 4; ++l) {
                if (e0 + l < count) yi[e0 + l] = v[l];
            }
        }
    }
}

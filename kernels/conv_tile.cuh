// The B-operand gather of the implicit-GEMM convolution (gemm.cu's
// conv_f16 kernels), in a header of its own so that a host program can run
// the very same code: kernels/tests/conv_tile_host.cu emulates a block's
// threads on the CPU and checks every gathered tile against a direct
// convolution, on machines without a GPU (kernels/check.sh runs it).
//
// Convolution of x [B, C_in, D, H, W] as an implicit GEMM per batch item z
// (no im2col buffer): A is the weight [C_out, C_in·kd·kh·kw] (K-contiguous,
// lda = K), and B(k, n) is gathered from x while the tile is loaded, with
// k = (ci, kz, ky, kx) and n = (oz, oy, ox):
//
//   forward:    B(k, n) = x[ci, oz·sd − pd + kz, oy·sh − ph + ky, ox·sw − pw + kx]
//   transposed: B(k, n) = x[ci, (oz + pd − kz)/sd, (oy + ph − ky)/sh, (ox + pw − kx)/sw]
//               where all three divisions are exact (else 0)
//
// (zero outside the input). The transposed form is the gather form of a
// transposed convolution: A is then the weight permuted to
// [C_out, C_in, kd, kh, kw]. C = out [C_out, Do·Ho·Wo] of item z, so bias per
// row and the residual are the GEMM's epilogue. The per-frame 2-D
// convolution of the denoiser is the case kd = sd = 1, pd = 0, Do = D.
// Sizes inside one batch item fit in 32 bits (the runtime checks), batch
// offsets are 64-bit.
#pragma once

#include "common.cuh"

// K advances in slices of GEMM_BK; shared rows are padded by GEMM_PAD halves.
#define GEMM_BK 32
#define GEMM_PAD 8

// Mirrored by ConvGeom in src/backend/cuda/kernels.rs (same order; the depth
// fields were appended when full 3-D kernels came).
struct ConvGeom {
    int c_in, frames, h, w;  // input channels and [D, H, W]
    int ho, wo;              // output rows and columns
    int kh, kw, sh, sw, ph, pw;
    int transposed;          // 0 forward, 1 transposed (gather form)
    int fo;                  // output frames Do
    int kd, sd, pd;          // depth kernel, stride, padding (1, 1, 0 per frame)
};

// The B-tile loader of the implicit GEMM. B's shared tile is N-contiguous
// ([BK][BN + PAD], as a dense B with trans_b = 0). Thread `tid` always loads
// the same 8 columns of a tile (THREADS is a multiple of BN/8), so their
// output positions are decoded once per tile, and each K line costs one
// decode of (ci, kz, ky, kx) and 8 guarded loads, coalesced along ox across
// the warp.
template <int BN, int THREADS, bool TRANSPOSED>
struct ConvTileB {
    static constexpr int CPL = BN / 8;                          // 8-column chunks per line
    static constexpr int ITERS = (GEMM_BK * BN / 8) / THREADS;  // chunks per thread
    static constexpr int LSTEP = THREADS / CPL;                 // lines between them
    static_assert(THREADS % CPL == 0, "a thread's columns must be fixed within a tile");
    static_assert((GEMM_BK * BN / 8) % THREADS == 0, "tile chunks must divide among threads");
    static constexpr int OUTSIDE = -(1 << 29);  // y of a column past N: every tap misses

    // Per column: the input position of tap (0, 0, 0) (forward), or the
    // padded output position (transposed).
    int z0[8], y0[8], x0[8];

    __host__ __device__ __forceinline__ void start_tile(const ConvGeom& c, i64 n0, i64 N, int tid) {
        const int col = (tid % CPL) * 8;
        const int plane = c.ho * c.wo;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const i64 n = n0 + col + e;
            if (n < N) {
                const int nn = (int)n, oz = nn / plane, r = nn - oz * plane;
                const int oy = r / c.wo, ox = r - oy * c.wo;
                z0[e] = TRANSPOSED ? oz + c.pd : oz * c.sd - c.pd;
                y0[e] = TRANSPOSED ? oy + c.ph : oy * c.sh - c.ph;
                x0[e] = TRANSPOSED ? ox + c.pw : ox * c.sw - c.pw;
            } else {
                z0[e] = 0;
                y0[e] = OUTSIDE;
                x0[e] = 0;
            }
        }
    }

    __host__ __device__ __forceinline__ void load(__half* s, const unsigned short* x, const ConvGeom& c, i64 K,
                                                  i64 k0, int tid) const {
        const int col = (tid % CPL) * 8;
        const int khw = c.kh * c.kw, taps = c.kd * khw;
        const int hw = c.h * c.w;
        const i64 channel = (i64)c.frames * hw;
#pragma unroll
        for (int it = 0; it < ITERS; ++it) {
            const int line = tid / CPL + it * LSTEP;
            const i64 k = k0 + line;
            unsigned w[4] = {0u, 0u, 0u, 0u};
            if (k < K) {
                const int kk = (int)k, ci = kk / taps;
                int r = kk - ci * taps;
                const int kz = r / khw;
                r -= kz * khw;
                const int ky = r / c.kw, kx = r - ky * c.kw;
                const unsigned short* xc = x + (i64)ci * channel;
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    unsigned v = 0u;
                    if (!TRANSPOSED) {
                        const int iz = z0[e] + kz, iy = y0[e] + ky, ix = x0[e] + kx;
                        if ((unsigned)iz < (unsigned)c.frames && (unsigned)iy < (unsigned)c.h &&
                            (unsigned)ix < (unsigned)c.w)
                            v = xc[iz * hw + iy * c.w + ix];
                    } else {
                        const int tz = z0[e] - kz, ty = y0[e] - ky, tx = x0[e] - kx;
                        if (tz >= 0 && ty >= 0 && tx >= 0) {
                            const int iz = tz / c.sd, iy = ty / c.sh, ix = tx / c.sw;
                            if (iz * c.sd == tz && iy * c.sh == ty && ix * c.sw == tx && iz < c.frames &&
                                iy < c.h && ix < c.w)
                                v = xc[iz * hw + iy * c.w + ix];
                        }
                    }
                    w[e >> 1] |= v << (16 * (e & 1));
                }
            }
            *reinterpret_cast<uint4*>(s + line * (BN + GEMM_PAD) + col) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
};

// ------------------------------------------------------------ weight gradient
//
// The weight gradient of the forward convolution above as one implicit GEMM
// over the whole batch (gemm.cu's conv_wgrad_f16):
//
//   dW[co, ci, kz, ky, kx] = Σ_b Σ_(oz,oy,ox) dy_b[co, oz, oy, ox] · x_b[ci, iz, iy, ix],
//   iz = oz·sd − pd + kz, iy = oy·sh − ph + ky, ix = ox·sw − pw + kx,
//
// M = C_out, N = C_in·kd·kh·kw (the weight's own layout), K = B·P with
// P = Do·Ho·Wo. K runs item by item in GEMM_BK slices of one item's
// positions (a slice never straddles two items), so A is each item's dy
// [C_out, P] (K-contiguous, lda = P) and B(k, n) is gathered from x_b.
//
// WgradTileB fills B's K-contiguous shared tile [BN][BK + PAD]: thread
// `tid` always loads 8 consecutive positions of the same lines, which are
// consecutive in x along ox for stride 1 (coalesced across the warp); the
// lines' (ci, kz, ky, kx) are decoded once per tile, the positions once
// per chunk.
template <int BN, int THREADS>
struct WgradTileB {
    static constexpr int CPL = GEMM_BK / 8;                     // 8-position chunks per line
    static constexpr int ITERS = (BN * GEMM_BK / 8) / THREADS;  // chunks per thread
    static constexpr int LSTEP = THREADS / CPL;                 // lines between them
    static_assert(THREADS % CPL == 0, "a thread's positions must be fixed within a slice");
    static_assert((BN * GEMM_BK / 8) % THREADS == 0, "tile chunks must divide among threads");

    // Per line: the channel's offset in x_b (−1 past N) and the tap's
    // offsets from an output position's origin (kz − pd, ky − ph, kx − pw).
    i64 chan[ITERS];
    int dz[ITERS], dy[ITERS], dx[ITERS];

    __host__ __device__ __forceinline__ void start_tile(const ConvGeom& c, i64 n0, i64 N, int tid) {
        const int khw = c.kh * c.kw, taps = c.kd * khw;
        const i64 channel = (i64)c.frames * c.h * c.w;
#pragma unroll
        for (int it = 0; it < ITERS; ++it) {
            const i64 n = n0 + tid / CPL + it * LSTEP;
            if (n < N) {
                const int nn = (int)n, ci = nn / taps;
                int r = nn - ci * taps;
                const int kz = r / khw;
                r -= kz * khw;
                const int ky = r / c.kw;
                chan[it] = (i64)ci * channel;
                dz[it] = kz - c.pd;
                dy[it] = ky - c.ph;
                dx[it] = r - ky * c.kw - c.pw;
            } else {
                chan[it] = -1;
                dz[it] = dy[it] = dx[it] = 0;
            }
        }
    }

    // Loads positions [k0, k0 + BK) of one item (`x` its input, P its
    // positions; zeros past P, past N and outside the input).
    __host__ __device__ __forceinline__ void load(__half* s, const unsigned short* x, const ConvGeom& c, i64 P,
                                                  i64 k0, int tid) const {
        const int col = (tid % CPL) * 8;
        const int plane = c.ho * c.wo, hw = c.h * c.w;
        // The chunk's first position, decoded once; the rest step along ox.
        const i64 k = k0 + col;
        int oz = 0, oy = 0, ox = 0;
        if (k < P) {
            const int kk = (int)k;
            oz = kk / plane;
            const int r = kk - oz * plane;
            oy = r / c.wo;
            ox = r - oy * c.wo;
        }
#pragma unroll
        for (int it = 0; it < ITERS; ++it) {
            const int line = tid / CPL + it * LSTEP;
            unsigned w[4] = {0u, 0u, 0u, 0u};
            if (chan[it] >= 0) {
                const unsigned short* xc = x + chan[it];
                int z = oz, y = oy, xx = ox;
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    if (k + e < P) {
                        const int iz = z * c.sd + dz[it], iy = y * c.sh + dy[it], ix = xx * c.sw + dx[it];
                        if ((unsigned)iz < (unsigned)c.frames && (unsigned)iy < (unsigned)c.h &&
                            (unsigned)ix < (unsigned)c.w)
                            w[e >> 1] |= (unsigned)xc[iz * hw + iy * c.w + ix] << (16 * (e & 1));
                    }
                    if (++xx == c.wo) {
                        xx = 0;
                        if (++y == c.ho) {
                            y = 0;
                            ++z;
                        }
                    }
                }
            }
            *reinterpret_cast<uint4*>(s + line * (GEMM_BK + GEMM_PAD) + col) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
};

// The K slices of the whole batch (item-major: slice t is item t / per_item,
// positions from (t % per_item)·BK) that split `s` of `splits` runs:
// [first, last), as even as integer division allows; every slice belongs
// to exactly one split.
struct SliceRange {
    i64 first, last;
};
__host__ __device__ __forceinline__ SliceRange wgrad_split_range(i64 s, i64 splits, i64 slices) {
    const i64 base = slices / splits, extra = slices % splits;
    const i64 first = base * s + (s < extra ? s : extra);
    return SliceRange{first, first + base + (s < extra ? 1 : 0)};
}

// Walks the slices of one split in order as (item, first position),
// stepping without 64-bit divisions (which are calls on the GPU).
struct SliceCursor {
    i64 b, k0;
    __host__ __device__ __forceinline__ SliceCursor(i64 slice, i64 per_item) : b(0), k0(0) {
        if (per_item > 0) {
            b = slice / per_item;
            k0 = (slice - b * per_item) * GEMM_BK;
        }
    }
    __host__ __device__ __forceinline__ void step(i64 positions) {
        k0 += GEMM_BK;
        if (k0 >= positions) {
            k0 = 0;
            ++b;
        }
    }
};

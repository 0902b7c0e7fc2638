// Tensor-core GEMM: fp16 in, fp32 accumulate, fp16 out, with fused
// scaling, bias and residual, strided-batched, either operand transposed.
// CPU counterparts: src/backend/cpu/gemm.rs (faer matmul) as used by
// Tensor::linear (y = x·Wᵀ + b) and the 1×1 convolutions of
// src/backend/cpu/conv.rs (y_b = W·x_b + b), and attention's batched
// products.
//
//   C_z[m, n] = alpha · Σ_k A_z(m, k)·B_z(k, n) + bias + R_z[m, n]
//
//   A_z(m, k) = trans_a ? A[z·stride_a + k·lda + m] : A[z·stride_a + m·lda + k]
//   B_z(k, n) = trans_b ? B[z·stride_b + n·ldb + k] : B[z·stride_b + k·ldb + n]
//   C_z[m, n] = C[z·stride_c + m·ldc + n], R_z likewise (R may equal C)
//   bias: none, bias[m] (per row) or bias[n] (per column), shared by all z.
//
// Design: a CTA computes a BM×BN tile of C; warps own WM×WN sub-tiles and
// issue mma.sync.m16n8k16 (f16 × f16 → f32). K advances in BK = 32 slices
// through a two-stage shared-memory pipeline filled with cp.async (16-byte
// copies) where rows are 16-byte aligned and whole, and with guarded
// scalar loads (zeros past M, N, K) elsewhere, so any M, N, K, leading
// dimension and pointer alignment works. Shared tiles keep the global
// orientation of each operand; ldmatrix (or ldmatrix.trans for an operand
// whose contiguous axis is M or N) produces the mma fragments, so the four
// transpose cases share one loop. Rows are padded by 8 halves, which makes
// every ldmatrix phase conflict-free.
#include "common.cuh"
#include "conv_tile.cuh"

struct GemmArgs {
    u64 a, b, c;      // device addresses of A, B, C (fp16)
    u64 bias;         // fp16 bias or 0
    u64 residual;     // fp16 residual (C's layout) or 0
    i64 m, n, k;
    i64 lda, ldb, ldc;
    i64 batch;        // ≥ 1
    i64 stride_a, stride_b, stride_c;  // elements between batch items (0 = shared)
    int trans_a, trans_b;
    int bias_mode;    // 0 none, 1 per row (bias[m]), 2 per column (bias[n])
    float alpha;
};

#ifndef CLAIM_CUDA_EMULATOR
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void cp_async_wait0() { asm volatile("cp.async.wait_group 0;\n" ::); }

template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
    if (TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(p)));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(p)));
    }
}

__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#else
// The CPU emulator's forms of the four instructions above, with their PTX
// semantics (kernels/emulator/emu_runtime.cpp): cp.async copies land when
// waited for; ldmatrix and mma.sync exchange the warp's registers.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) { claim_emu_cp_async16(dst, src); }
__device__ __forceinline__ void cp_async_commit() { claim_emu_cp_async_commit(); }
__device__ __forceinline__ void cp_async_wait1() { claim_emu_cp_async_wait(1); }
__device__ __forceinline__ void cp_async_wait0() { claim_emu_cp_async_wait(0); }
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) { claim_emu_ldmatrix_x4(r, p, TRANS); }
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    claim_emu_mma_m16n8k16(d, a, b0, b1);
}
#endif

// Shared-memory halves of one operand tile with BR rows of the non-K axis:
// K-contiguous [BR][BK + PAD] or R-contiguous [BK][BR + PAD].
template <int BR>
struct TileSize {
    static constexpr int kc = BR * (GEMM_BK + GEMM_PAD);
    static constexpr int rc = GEMM_BK * (BR + GEMM_PAD);
    static constexpr int value = kc > rc ? kc : rc;
};

// Loads the BR×BK slice (rows r0.., k0..) of an operand with R rows and K
// columns into shared memory. KC: the operand is K-contiguous in global
// memory (element (r, k) at r·ld + k); otherwise R-contiguous (k·ld + r).
// `vec`: base, ld and batch stride allow 16-byte copies.
template <int BR, int THREADS, bool KC>
__device__ __forceinline__ void load_tile(__half* s, const unsigned short* g, i64 ld, i64 R, i64 K, i64 r0, i64 k0,
                                          bool vec) {
    constexpr int ROW = KC ? GEMM_BK : BR;           // contiguous extent of the tile
    constexpr int LINES = KC ? BR : GEMM_BK;         // lines of it
    constexpr int CHUNKS = LINES * ROW / 8;
    static_assert(CHUNKS % THREADS == 0, "tile chunks must divide among threads");
    const i64 line_limit = KC ? R : K, col_limit = KC ? K : R;
    const i64 line0 = KC ? r0 : k0, col0 = KC ? k0 : r0;
#pragma unroll
    for (int it = 0; it < CHUNKS / THREADS; ++it) {
        const int q = it * THREADS + (int)threadIdx.x;
        const int line = q / (ROW / 8), col = (q % (ROW / 8)) * 8;
        __half* dst = s + line * (ROW + GEMM_PAD) + col;
        const i64 gl = line0 + line, gc = col0 + col;
        const unsigned short* src = g + gl * ld + gc;
        if (vec && gl < line_limit && gc + 8 <= col_limit) {
            cp_async16(dst, src);
        } else {
            unsigned w[4];
#pragma unroll
            for (int t = 0; t < 4; ++t) {
                const bool in_line = gl < line_limit;
                const unsigned lo = (in_line && gc + 2 * t < col_limit) ? src[2 * t] : 0u;
                const unsigned hi = (in_line && gc + 2 * t + 1 < col_limit) ? src[2 * t + 1] : 0u;
                w[t] = lo | (hi << 16);
            }
            *reinterpret_cast<uint4*>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
}

// One shared-memory stage (a BK slice of both tiles) into a warp's
// accumulators `acc`: ldmatrix (transposed where the operand's contiguous
// axis is M or N) and mma.sync.m16n8k16. Used in the K loops of gemm_tiles
// and wgrad_tiles, with BM, BN, MT, NT, A_KC, B_KC, wm, wn and lane in
// scope. A macro, not a function: calling an inline function here changed
// ptxas' allocation of the kernels built on gemm_tiles (on sm_90,
// gemm_f16_64x64 118 → 126 and conv_f16_64x64 125 → 155 registers, 4 → 3
// blocks per SM), and the GEMM was timed on a GPU as it is.
#define MMA_STAGE(acc, sA, sB)                                                                                      \
_Pragma("unroll")                                                                                                   \
    for (int kk = 0; kk < GEMM_BK; kk += 16) {                                                                      \
        unsigned af[MT][4];                                                                                         \
_Pragma("unroll")                                                                                                   \
        for (int i = 0; i < MT; ++i) {                                                                              \
            const int r = wm + i * 16;                                                                              \
            if (A_KC) {                                                                                             \
                /* [BM][BK+PAD]: lanes 0-15 rows r.., k kk; 16-31 k kk+8. */                                        \
                ldsm_x4<false>(af[i], sA + (r + (lane & 15)) * (GEMM_BK + GEMM_PAD) + kk + (lane >> 4) * 8);        \
            } else {                                                                                                \
                /* [BK][BM+PAD]: matrix q = lane/8 holds m-block q%2, k-block q/2. */                               \
                const int q = lane >> 3;                                                                            \
                ldsm_x4<true>(af[i], sA + (kk + (q >> 1) * 8 + (lane & 7)) * (BM + GEMM_PAD) + r + (q & 1) * 8);    \
            }                                                                                                       \
        }                                                                                                           \
_Pragma("unroll")                                                                                                   \
        for (int j = 0; j < NT; j += 2) {                                                                           \
            unsigned bf[4];                                                                                         \
            const int c = wn + j * 8;                                                                               \
            const int q = lane >> 3;                                                                                \
            if (B_KC) {                                                                                             \
                /* [BN][BK+PAD]: matrix q holds n-block q/2, k-block q%2. */                                        \
                ldsm_x4<false>(bf, sB + (c + (q >> 1) * 8 + (lane & 7)) * (GEMM_BK + GEMM_PAD) + kk + (q & 1) * 8); \
            } else {                                                                                                \
                /* [BK][BN+PAD]: same matrices, loaded transposed. */                                               \
                ldsm_x4<true>(bf, sB + (kk + (q & 1) * 8 + (lane & 7)) * (BN + GEMM_PAD) + c + (q >> 1) * 8);       \
            }                                                                                                       \
_Pragma("unroll")                                                                                                   \
            for (int i = 0; i < MT; ++i) {                                                                          \
                mma16816(acc[i][j], af[i], bf[0], bf[1]);                                                           \
                mma16816(acc[i][j + 1], af[i], bf[2], bf[3]);                                                       \
            }                                                                                                       \
        }                                                                                                           \
    }

// ---------------------------------------------------------------- convolution
//
// ConvGeom and the B-tile gather ConvTileB live in conv_tile.cuh.

struct ConvArgs {
    GemmArgs g;  // a = weight, b = x, c = out; m = C_out, n = Do·Ho·Wo, k = C_in·kd·kh·kw
    ConvGeom c;
};

// CONV: 0 a dense GEMM; 1 a forward and 2 a transposed convolution, B
// gathered by ConvTileB from `conv` (then B_KC is false).
template <int BM, int BN, int WARPS_M, int WARPS_N, bool A_KC, bool B_KC, int CONV = 0>
__device__ __forceinline__ void gemm_tiles(const GemmArgs& p, __half* smem, const ConvGeom* conv = nullptr) {
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    constexpr int MT = WM / 16, NT = WN / 8;
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile must be a multiple of 16×16");
    constexpr int A_TILE = TileSize<BM>::value, B_TILE = TileSize<BN>::value;
    constexpr int STAGE = A_TILE + B_TILE;

    const i64 M = p.m, N = p.n, K = p.k;
    const unsigned short* A = reinterpret_cast<const unsigned short*>(p.a);
    const unsigned short* B = reinterpret_cast<const unsigned short*>(p.b);
    __half* C = reinterpret_cast<__half*>(p.c);
    const __half* bias = reinterpret_cast<const __half*>(p.bias);
    const __half* res = reinterpret_cast<const __half*>(p.residual);
    const bool a_vec = (p.a % 16 == 0) && (p.lda % 8 == 0) && (p.stride_a % 8 == 0);
    const bool b_vec = (p.b % 16 == 0) && (p.ldb % 8 == 0) && (p.stride_b % 8 == 0);
    const bool c_vec = (p.c % 4 == 0) && (p.residual % 4 == 0) && (p.ldc % 2 == 0) && (p.stride_c % 2 == 0);

    const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    const u64 tiles_m = (u64)((M + BM - 1) / BM), tiles_n = (u64)((N + BN - 1) / BN);
    const u64 tiles = tiles_m * tiles_n;
    const i64 k_tiles = (K + GEMM_BK - 1) / GEMM_BK;
    static_assert(CONV == 0 || !B_KC, "a convolution's B tile is N-contiguous");
    ConvTileB<BN, THREADS, CONV == 2> conv_b;

    for (u64 z = blockIdx.y; z < (u64)p.batch; z += gridDim.y) {
        const unsigned short* Az = A + (i64)z * p.stride_a;
        const unsigned short* Bz = B + (i64)z * p.stride_b;
        for (u64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const i64 m0 = (i64)(tile % tiles_m) * BM, n0 = (i64)(tile / tiles_m) * BN;
            float acc[MT][NT][4];
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

            if constexpr (CONV != 0) conv_b.start_tile(*conv, n0, N, (int)threadIdx.x);
            __syncthreads();  // the previous tile's last reads of smem are done
            if (k_tiles > 0) {
                load_tile<BM, THREADS, A_KC>(smem, Az, p.lda, M, K, m0, 0, a_vec);
                if constexpr (CONV != 0) conv_b.load(smem + A_TILE, Bz, *conv, K, 0, (int)threadIdx.x);
                else load_tile<BN, THREADS, B_KC>(smem + A_TILE, Bz, p.ldb, N, K, n0, 0, b_vec);
            }
            cp_async_commit();
            for (i64 kt = 0; kt < k_tiles; ++kt) {
                if (kt + 1 < k_tiles) {
                    __half* s = smem + ((kt + 1) & 1) * STAGE;
                    load_tile<BM, THREADS, A_KC>(s, Az, p.lda, M, K, m0, (kt + 1) * GEMM_BK, a_vec);
                    if constexpr (CONV != 0) conv_b.load(s + A_TILE, Bz, *conv, K, (kt + 1) * GEMM_BK, (int)threadIdx.x);
                    else load_tile<BN, THREADS, B_KC>(s + A_TILE, Bz, p.ldb, N, K, n0, (kt + 1) * GEMM_BK, b_vec);
                }
                cp_async_commit();
                cp_async_wait1();
                __syncthreads();
                const __half* sA = smem + (kt & 1) * STAGE;
                const __half* sB = sA + A_TILE;
                MMA_STAGE(acc, sA, sB);
                __syncthreads();
            }
            cp_async_wait0();

            // Epilogue: thread holds rows lane/4 (+8) and columns 2·(lane%4) (+1)
            // of every 16×8 fragment.
            __half* Cz = C + (i64)z * p.stride_c;
            const __half* Rz = res ? res + (i64)z * p.stride_c : nullptr;
#pragma unroll
            for (int i = 0; i < MT; ++i) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const i64 row = m0 + wm + i * 16 + (lane >> 2) + h * 8;
                    if (row >= M) continue;
                    const float brow = (bias && p.bias_mode == 1) ? __half2float(bias[row]) : 0.0f;
#pragma unroll
                    for (int j = 0; j < NT; ++j) {
                        const i64 col = n0 + wn + j * 8 + (lane & 3) * 2;
                        if (col >= N) continue;
                        float v0 = p.alpha * acc[i][j][2 * h] + brow;
                        float v1 = p.alpha * acc[i][j][2 * h + 1] + brow;
                        if (bias && p.bias_mode == 2) {
                            v0 += __half2float(bias[col]);
                            if (col + 1 < N) v1 += __half2float(bias[col + 1]);
                        }
                        const i64 off = row * p.ldc + col;
                        if (c_vec && col + 1 < N) {
                            if (Rz) {
                                const float2 r = __half22float2(*reinterpret_cast<const __half2*>(Rz + off));
                                v0 += r.x;
                                v1 += r.y;
                            }
                            *reinterpret_cast<__half2*>(Cz + off) = __floats2half2_rn(v0, v1);
                        } else {
                            if (Rz) v0 += __half2float(Rz[off]);
                            Cz[off] = __float2half_rn(v0);
                            if (col + 1 < N) {
                                if (Rz) v1 += __half2float(Rz[off + 1]);
                                Cz[off + 1] = __float2half_rn(v1);
                            }
                        }
                    }
                }
            }
        }
    }
}

// One kernel per tile shape; the transpose case is a uniform branch.
template <int BM, int BN, int WARPS_M, int WARPS_N>
__device__ __forceinline__ void gemm_dispatch(const GemmArgs& p, __half* smem) {
    if (p.m <= 0 || p.n <= 0 || p.k < 0 || p.batch <= 0) return;
    const bool a_kc = !p.trans_a, b_kc = p.trans_b != 0;
    if (a_kc && b_kc) gemm_tiles<BM, BN, WARPS_M, WARPS_N, true, true>(p, smem);
    else if (a_kc) gemm_tiles<BM, BN, WARPS_M, WARPS_N, true, false>(p, smem);
    else if (b_kc) gemm_tiles<BM, BN, WARPS_M, WARPS_N, false, true>(p, smem);
    else gemm_tiles<BM, BN, WARPS_M, WARPS_N, false, false>(p, smem);
}

#define GEMM_SMEM_HALVES(BM, BN) (2 * (TileSize<BM>::value + TileSize<BN>::value))

// 128×128 tiles, 256 threads (8 warps of 64×32): large products.
// Launch: block (256), grid (min(tiles, 2^31−1), min(batch, 65535)).
extern "C" __global__ void __launch_bounds__(256) gemm_f16(GemmArgs args) {
    __shared__ __align__(16) __half smem[GEMM_SMEM_HALVES(128, 128)];
    gemm_dispatch<128, 128, 2, 4>(args, smem);
}

// 64×64 tiles, 128 threads (4 warps of 32×32): small products, where
// 128×128 tiles would leave most SMs idle.
extern "C" __global__ void __launch_bounds__(128) gemm_f16_64x64(GemmArgs args) {
    __shared__ __align__(16) __half smem[GEMM_SMEM_HALVES(64, 64)];
    gemm_dispatch<64, 64, 2, 2>(args, smem);
}

// ---------------------------------------------------------------- convolution

template <int BM, int BN, int WARPS_M, int WARPS_N>
__device__ __forceinline__ void conv_dispatch(const ConvArgs& a, __half* smem) {
    const GemmArgs& p = a.g;
    if (p.m <= 0 || p.n <= 0 || p.k < 0 || p.batch <= 0) return;
    if (a.c.transposed) gemm_tiles<BM, BN, WARPS_M, WARPS_N, true, false, 2>(p, smem, &a.c);
    else gemm_tiles<BM, BN, WARPS_M, WARPS_N, true, false, 1>(p, smem, &a.c);
}

// Implicit-GEMM convolution (forward or transposed), 128×128 tiles.
// Launch: as gemm_f16, with m = C_out, n = Do·Ho·Wo, batch = B.
extern "C" __global__ void __launch_bounds__(256) conv_f16(ConvArgs args) {
    __shared__ __align__(16) __half smem[GEMM_SMEM_HALVES(128, 128)];
    conv_dispatch<128, 128, 2, 4>(args, smem);
}

// The same with 64×64 tiles for small outputs.
extern "C" __global__ void __launch_bounds__(128) conv_f16_64x64(ConvArgs args) {
    __shared__ __align__(16) __half smem[GEMM_SMEM_HALVES(64, 64)];
    conv_dispatch<64, 64, 2, 2>(args, smem);
}

// ------------------------------------------------------------ weight gradient
//
// dW = Σ_b dy_b · gather(x_b)ᵀ, the weight gradient of a forward
// convolution (conv_tile.cuh, WgradTileB), as one implicit GEMM with
// M = C_out, N = C_in·kd·kh·kw, K = B·Do·Ho·Wo, split along K: blockIdx.y
// picks a split (a contiguous run of the batch's BK slices,
// wgrad_split_range) whose fp32 sums go to its own plane of `partial`
// [splits, M, N]; splitk_sum_f16 adds the planes in a fixed order (with
// one split, the kernel writes the fp16 result itself). The
// early layers of a segmenter have a few hundred output values and
// millions of positions, so without the split a handful of blocks would
// run the whole reduction; without atomics the result is deterministic.
// A transposed convolution's weight gradient is this with its input and
// output gradient exchanged (the runtime's adjoint geometry).
struct WgradArgs {
    u64 x;          // fp16 [B, C_in, D, H, W]
    u64 dy;         // fp16 [B, C_out, Do, Ho, Wo]
    u64 partial;    // fp32 [splits, M, N], every element written (splits > 1)
    u64 out;        // fp16 [M, N], written directly when splits == 1
    i64 m, n;       // C_out, C_in·kd·kh·kw
    i64 positions;  // P = Do·Ho·Wo
    i64 batch;
    i64 splits;     // ≥ 1
    ConvGeom c;
};

// Loads slice (item b, positions from k0) of dy into A's tile and of the
// gather into B's.
template <int BM, int BN, int THREADS>
__device__ __forceinline__ void wgrad_load(__half* s, const WgradArgs& p, const WgradTileB<BN, THREADS>& gather,
                                           i64 b, i64 k0, i64 m0, bool a_vec) {
    constexpr int A_TILE = TileSize<BM>::value;
    const unsigned short* dy = reinterpret_cast<const unsigned short*>(p.dy) + b * p.m * p.positions;
    const unsigned short* x =
        reinterpret_cast<const unsigned short*>(p.x) + b * ((i64)p.c.c_in * p.c.frames * p.c.h * p.c.w);
    load_tile<BM, THREADS, true>(s, dy, p.positions, p.m, p.positions, m0, k0, a_vec);
    gather.load(s + A_TILE, x, p.c, p.positions, k0, (int)threadIdx.x);
}

template <int BM, int BN, int WARPS_M, int WARPS_N>
__device__ __forceinline__ void wgrad_tiles(const WgradArgs& p, __half* smem) {
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int STAGE = TileSize<BM>::value + TileSize<BN>::value;
    constexpr bool A_KC = true, B_KC = true;  // dy rows and the gathered lines are K-contiguous
    if (p.m <= 0 || p.n <= 0 || p.positions < 0 || p.batch < 0 || p.splits <= 0) return;

    const i64 M = p.m, N = p.n;
    const i64 per_item = (p.positions + GEMM_BK - 1) / GEMM_BK;
    const i64 slices = per_item * p.batch;
    // dy rows are 16-byte aligned when P is a multiple of 8.
    const bool a_vec = (p.dy % 16 == 0) && (p.positions % 8 == 0);
    const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    const u64 tiles_m = (u64)((M + BM - 1) / BM), tiles_n = (u64)((N + BN - 1) / BN);
    const u64 tiles = tiles_m * tiles_n;
    WgradTileB<BN, THREADS> gather;

    for (u64 s = blockIdx.y; s < (u64)p.splits; s += gridDim.y) {
        const SliceRange range = wgrad_split_range((i64)s, p.splits, slices);
        const i64 first = range.first, last = range.last;
        // One split writes the result itself; several write fp32 planes.
        const bool direct = p.splits == 1;
        float* plane = direct ? nullptr : reinterpret_cast<float*>(p.partial) + (i64)s * M * N;
        __half* out = reinterpret_cast<__half*>(p.out);
        for (u64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            const i64 m0 = (i64)(tile % tiles_m) * BM, n0 = (i64)(tile / tiles_m) * BN;
            float acc[MT][NT][4];
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

            gather.start_tile(p.c, n0, N, (int)threadIdx.x);
            __syncthreads();  // the previous tile's last reads of smem are done
            SliceCursor next(first, per_item);
            if (first < last) {
                wgrad_load<BM, BN, THREADS>(smem, p, gather, next.b, next.k0, m0, a_vec);
                next.step(p.positions);
            }
            cp_async_commit();
            for (i64 t = first; t < last; ++t) {
                if (t + 1 < last) {
                    wgrad_load<BM, BN, THREADS>(smem + ((t + 1 - first) & 1) * STAGE, p, gather, next.b, next.k0, m0,
                                                a_vec);
                    next.step(p.positions);
                }
                cp_async_commit();
                cp_async_wait1();
                __syncthreads();
                const __half* sA = smem + ((t - first) & 1) * STAGE;
                const __half* sB = sA + TileSize<BM>::value;
                MMA_STAGE(acc, sA, sB);
                __syncthreads();
            }
            cp_async_wait0();

            // Epilogue: this split's fp32 sums (zeros for an empty split),
            // or the result in fp16 when there is one split.
#pragma unroll
            for (int i = 0; i < MT; ++i) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const i64 row = m0 + wm + i * 16 + (lane >> 2) + h * 8;
                    if (row >= M) continue;
#pragma unroll
                    for (int j = 0; j < NT; ++j) {
                        const i64 col = n0 + wn + j * 8 + (lane & 3) * 2;
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            if (col + e >= N) continue;
                            const float v = acc[i][j][2 * h + e];
                            if (direct) out[row * N + col + e] = __float2half_rn(v);
                            else plane[row * N + col + e] = v;
                        }
                    }
                }
            }
        }
    }
}

// The weight gradient with 64×64 tiles, 128 threads: M and N are a layer's
// channels (times its taps), small next to K, and the split supplies the
// blocks. Launch: block (128), grid (tiles, splits ≤ 65535).
extern "C" __global__ void __launch_bounds__(128) conv_wgrad_f16(WgradArgs args) {
    __shared__ __align__(16) __half smem[GEMM_SMEM_HALVES(64, 64)];
    wgrad_tiles<64, 64, 2, 2>(args, smem);
}

// out[i] = Σ_s partial[s·count + i] in fp32, rounded to fp16 once, in a
// fixed order: the block's 8 warps take the splits s ≡ warp (mod 8) in
// ascending order, 32 consecutive outputs per warp (coalesced), then the
// 8 sums are added in warp order. Launch: block (256) exactly, any grid.
#define SPLITK_WARPS 8
extern "C" __global__ void __launch_bounds__(256) splitk_sum_f16(const float* __restrict__ partial,
                                                                 __half* __restrict__ out, i64 splits, i64 count) {
    __shared__ float sums[SPLITK_WARPS][33];
    const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5;
    for (i64 base = (i64)blockIdx.x * 32; base < count; base += (i64)gridDim.x * 32) {
        const i64 i = base + lane;
        float acc = 0.0f;
        if (i < count && warp < SPLITK_WARPS)
            for (i64 s = warp; s < splits; s += SPLITK_WARPS) acc += partial[s * count + i];
        if (warp < SPLITK_WARPS) sums[warp][lane] = acc;
        __syncthreads();
        if (warp == 0 && i < count) {
            float total = 0.0f;
#pragma unroll
            for (int w = 0; w < SPLITK_WARPS; ++w) total += sums[w][lane];
            out[i] = __float2half_rn(total);
        }
        __syncthreads();
    }
}

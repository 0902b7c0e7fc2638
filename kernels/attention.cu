// Attention kernels of the denoiser: the spatial linear attention, softmax
// attention with an optional logit bias (the temporal attention over frames
// and the mid-level spatial attention), and the interleaved rotary
// embedding. fp16 storage, fp32 arithmetic; softmaxes in fp32.
// CPU counterparts: src/backend/cpu/attention.rs.
#include "common.cuh"

// ------------------------------------------------------------ linear attention
//
// qkv [B, 3·hid, F, N] (q, k, v channel blocks; hid = heads·D), out
// [B, hid, F, N]. Per (b, head, f): k is softmaxed over the N positions, q
// over the D features and scaled by D^-½; context[c][e] = Σ_n k[c,n]·v[e,n];
// out[e, n] = Σ_c context[c][e]·q[c, n].
//
// One block per (b, head, f), any block size (multiple of 32): warps find
// the k statistics, the block accumulates the D×D context over N in tiles
// of LA_TN positions staged in shared memory, then every thread finishes
// its positions from the context.
#define LA_TN 32

template <int D>
__device__ __forceinline__ void linear_attention_block(const __half* qkv, __half* out, i64 frames, i64 n, int heads,
                                                       u64 item) {
    __shared__ float kmax[D], kinv[D];
    __shared__ float ks[D][LA_TN + 1], vs[D][LA_TN + 1];
    __shared__ float ctx[D][D];
    const int hid = heads * D;
    const i64 f = (i64)(item % (u64)frames);
    const u64 bh = item / (u64)frames;
    const i64 h = (i64)(bh % (u64)heads), b = (i64)(bh / (u64)heads);
    const i64 row = frames * n;  // elements between channels
    const __half* q = qkv + ((b * 3 * hid + h * D) * frames + f) * n;
    const __half* k = q + (i64)hid * row;
    const __half* v = k + (i64)hid * row;
    __half* o = out + ((b * hid + h * D) * frames + f) * n;
    const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5, warps = (int)blockDim.x >> 5;

    // k's softmax statistics per channel, a warp per channel.
    for (int c = warp; c < D; c += warps) {
        const __half* kc = k + (i64)c * row;
        float m = -INFINITY;
        for (i64 i = lane; i < n; i += 32) m = fmaxf(m, __half2float(kc[i]));
        m = warp_max(m);
        float s = 0.0f;
        for (i64 i = lane; i < n; i += 32) s += expf(__half2float(kc[i]) - m);
        s = warp_sum(s);
        if (lane == 0) {
            kmax[c] = m;
            kinv[c] = 1.0f / s;
        }
    }

    // context over position tiles, accumulated in shared memory: thread t
    // owns entries t, t + blockDim, … (so no two threads write one entry).
    for (int e = (int)threadIdx.x; e < D * D; e += (int)blockDim.x) ctx[e / D][e % D] = 0.0f;
    for (i64 n0 = 0; n0 < n; n0 += LA_TN) {
        __syncthreads();  // statistics and zeros written; the previous tile consumed
        for (int e = (int)threadIdx.x; e < D * LA_TN; e += (int)blockDim.x) {
            const int c = e / LA_TN, j = e % LA_TN;
            const i64 i = n0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (i < n) {
                kv = expf(__half2float(k[(i64)c * row + i]) - kmax[c]) * kinv[c];
                vv = __half2float(v[(i64)c * row + i]);
            }
            ks[c][j] = kv;
            vs[c][j] = vv;
        }
        __syncthreads();
        for (int e = (int)threadIdx.x; e < D * D; e += (int)blockDim.x) {
            const int c = e / D, d2 = e % D;
            float a = ctx[c][d2];
#pragma unroll 8
            for (int j = 0; j < LA_TN; ++j) a = fmaf(ks[c][j], vs[d2][j], a);
            ctx[c][d2] = a;
        }
    }
    __syncthreads();

    // out[e, i] for the positions of this thread.
    const float scale = rsqrtf((float)D);
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
        float qv[D];
        float m = -INFINITY;
#pragma unroll
        for (int c = 0; c < D; ++c) {
            qv[c] = __half2float(q[(i64)c * row + i]);
            m = fmaxf(m, qv[c]);
        }
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < D; ++c) {
            qv[c] = expf(qv[c] - m);
            s += qv[c];
        }
        const float norm = scale / s;
#pragma unroll 4
        for (int e = 0; e < D; ++e) {
            float a = 0.0f;
#pragma unroll
            for (int c = 0; c < D; ++c) a = fmaf(ctx[c][e], qv[c], a);
            o[(i64)e * row + i] = __float2half_rn(a * norm);
        }
    }
}

// Launch: grid (min(B·heads·F, 2^16)), block 256. items = B·heads·F.
#define LINEAR_ATTENTION_KERNEL(D)                                                                       \
    extern "C" __global__ void __launch_bounds__(256) linear_attention_d##D##_f16(                        \
        const __half* qkv, __half* out, u64 items, long long frames, long long n, int heads) {           \
        for (u64 item = blockIdx.x; item < items; item += gridDim.x) {                                   \
            linear_attention_block<D>(qkv, out, frames, n, heads, item);                                 \
            __syncthreads(); /* shared memory is reused by the next item */                              \
        }                                                                                                \
    }
LINEAR_ATTENTION_KERNEL(8)
LINEAR_ATTENTION_KERNEL(16)
LINEAR_ATTENTION_KERNEL(32)
LINEAR_ATTENTION_KERNEL(64)

// ------------------------------------------------------------ softmax attention
//
// q, k, v, out [G, T, D] (G = groups·heads, head fastest; q pre-scaled);
// bias [heads, T, T] or NULL. A warp per (g, query): lanes hold features
// lane, lane + 32, …; the logits are formed one key at a time with an
// online softmax (running max and sum in fp32), so T is unbounded and
// nothing is staged.
template <int PER>
__device__ __forceinline__ void attention_row(const __half* q, const __half* k, const __half* v, const __half* bias,
                                              __half* out, i64 t, i64 d, int heads, u64 row) {
    const int lane = (int)threadIdx.x & 31;
    const i64 g = (i64)(row / (u64)t), i = (i64)(row % (u64)t);
    const i64 base = g * t * d;
    const __half* brow = bias ? bias + ((g % heads) * t + i) * t : nullptr;
    float qv[PER], acc[PER];
#pragma unroll
    for (int r = 0; r < PER; ++r) {
        const i64 c = lane + 32 * r;
        qv[r] = c < d ? __half2float(q[base + i * d + c]) : 0.0f;
        acc[r] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (i64 j = 0; j < t; ++j) {
        const __half* kj = k + base + j * d;
        const __half* vj = v + base + j * d;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const i64 c = lane + 32 * r;
            if (c < d) s = fmaf(qv[r], __half2float(kj[c]), s);
        }
        s = warp_sum(s);
        if (brow) s += __half2float(brow[j]);
        const float m_new = fmaxf(m, s);
        // why: while every logit so far is −inf (masked keys) both exponents
        // would be e^(−inf + inf) = NaN; such keys add nothing. Once a finite
        // logit arrives, corr = e^(−inf) = 0 drops the empty past.
        const bool none_yet = m_new == -INFINITY;
        const float corr = none_yet ? 1.0f : expf(m - m_new);
        const float p = none_yet ? 0.0f : expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const i64 c = lane + 32 * r;
            const float vv = c < d ? __half2float(vj[c]) : 0.0f;
            acc[r] = fmaf(p, vv, acc[r] * corr);
        }
        m = m_new;
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int r = 0; r < PER; ++r) {
        const i64 c = lane + 32 * r;
        if (c < d) out[base + i * d + c] = __float2half_rn(acc[r] * inv);
    }
}

// Launch: block 256 (8 warps), grid (min(ceil(G·T/8), 2^16)). PER = ⌈D/32⌉.
#define ATTENTION_KERNEL(PER)                                                                            \
    extern "C" __global__ void __launch_bounds__(256) attention_p##PER##_f16(                            \
        const __half* q, const __half* k, const __half* v, const __half* bias, __half* out, u64 groups,   \
        long long t, long long d, int heads) {                                                           \
        const u64 rows = groups * (u64)t;                                                                \
        const u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;                                            \
        for (u64 row = global_thread_x() >> 5; row < rows; row += warps)                                 \
            attention_row<PER>(q, k, v, bias, out, t, d, heads, row);                                    \
    }
ATTENTION_KERNEL(1)
ATTENTION_KERNEL(2)
ATTENTION_KERNEL(4)

// --------------------------------------------------------------------- rotary
//
// Interleaved rotary embedding of x [G, T, D] by fp32 freqs [D/2]: token p's
// pair j turns by θ = p·freqs[j] (fp32, as the CPU engine and PyTorch's
// autocast, which keeps the frequency buffer f32).
// Launch: 1-D grid-stride over G·T·D/2 pairs.
extern "C" __global__ void rotary_f16(const __half* x, const float* freqs, __half* y, u64 pairs, long long t,
                                      long long d) {
    const i64 half_d = d / 2;
    GRID_STRIDE_LOOP(idx, pairs) {
        const i64 j = (i64)(idx % (u64)half_d);
        const i64 p = (i64)((idx / (u64)half_d) % (u64)t);
        const float theta = (float)p * freqs[j];
        float s, c;
        sincosf(theta, &s, &c);
        const u64 at = 2 * idx;  // pairs are contiguous: element 2·idx and 2·idx + 1
        const float a = __half2float(x[at]), b = __half2float(x[at + 1]);
        y[at] = __float2half_rn(a * c - b * s);
        y[at + 1] = __float2half_rn(b * c + a * s);
    }
}

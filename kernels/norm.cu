// Normalisations over [B, C, S] (S = all positions F·H·W). CPU:
// src/backend/cpu/norm.rs (group_norm, group_norm_silu,
// layer_norm_channels) and the fused InstanceNorm + LeakyReLU of
// src/models/plain_unet.rs (instance_norm_leaky_relu).
//
// Statistics per (sample, group) are the population (biased) variance, as
// PyTorch's GroupNorm/InstanceNorm. The CPU sums in f64 in two passes; here
// each block sums in fp32 in two passes over its range (mean, then
// Σ(x − mean)²), and ranges are merged with Chan's parallel formula, so no
// sum of squares ever cancels.
//
// Two designs, same numerics:
// - group_norm_f16: one block per (sample, group) does statistics and
//   output; right when B·G fills the GPU or groups are small.
// - group_norm_stats_f16 + group_norm_apply_f16: a group is cut into
//   `chunks` ranges; the first kernel writes per-range moments to a float
//   workspace, the second merges a group's moments (in every block, they
//   are few) and normalises its range. For groups of up to ~10⁶ values
//   (3-D InstanceNorm) with few (sample, group) pairs.
#include "common.cuh"

// (count, mean, M2 = Σ(x − mean)²) of one range.
struct Moments {
    float count, mean, m2;
};

// Chan, Golub and LeVeque's merge of two ranges' moments.
__device__ __forceinline__ Moments merge(Moments a, Moments b) {
    const float n = a.count + b.count;
    if (n == 0.0f) return a;
    const float delta = b.mean - a.mean;
    const float wb = b.count / n;
    Moments r;
    r.count = n;
    r.mean = a.mean + delta * wb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.count * wb;
    return r;
}

// Moments of x[begin, end) over the whole block: pass 1 the mean, pass 2
// the squared deviations from it (the range is re-read from L1/L2).
__device__ Moments block_moments(const __half* x, u64 begin, u64 end, float* scratch) {
    float s = 0.0f;
    for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) s += __half2float(x[i]);
    const float count = (float)(end - begin);
    const float mean = block_sum(s, scratch) / fmaxf(count, 1.0f);
    float q = 0.0f;
    for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float d = __half2float(x[i]) - mean;
        q += d * d;
    }
    Moments m;
    m.count = count;
    m.mean = mean;
    m.m2 = block_sum(q, scratch);
    return m;
}

struct NormArgs {
    const __half* x;
    __half* y;
    const __half* weight;
    const __half* bias;
    const __half* scale;
    const __half* shift;
    const __half* residual;
    i64 channels, spatial, groups;
    float eps;
    int act;
    float act_p;
};

// Writes y for elements [begin, end) of group (sample, g), relative to the
// group's start, given its statistics. Per channel the normalisation,
// affine and modulation fold into y = act(x·a + b) (+ residual) exactly as
// cpu::norm::normalise_groups folds them:
//   a = rstd·w_c;  b = bias_c − mean·a;
//   with scale/shift: k = scale[n, c] + 1;  a ← a·k;  b ← b·k + shift[n, c];
//   y = act(x·a + b) + residual.
// For act = LeakyReLU and no modulation this is also
// plain_unet::instance_norm_leaky_relu (a = rstd·w, shift = b − mean·a).
__device__ void normalise_range(const NormArgs& p, i64 sample, i64 g, u64 begin, u64 end, float mean, float rstd) {
    const i64 cg = p.channels / p.groups;
    const u64 S = (u64)p.spatial;
    const u64 base = ((u64)sample * (u64)p.channels + (u64)(g * cg)) * S;
    if (S == 0 || begin >= end) return;
    for (u64 j = begin / S; j <= (end - 1) / S && j < (u64)cg; ++j) {
        const i64 ch = g * cg + (i64)j;
        float a = rstd * (p.weight ? __half2float(p.weight[ch]) : 1.0f);
        float b = (p.bias ? __half2float(p.bias[ch]) : 0.0f) - mean * a;
        if (p.scale) {
            const u64 sc = (u64)sample * (u64)p.channels + (u64)ch;
            const float k = __half2float(p.scale[sc]) + 1.0f;
            a *= k;
            b = b * k + (p.shift ? __half2float(p.shift[sc]) : 0.0f);
        }
        const u64 lo = j * S > begin ? j * S : begin;
        const u64 hi = (j + 1) * S < end ? (j + 1) * S : end;
        for (u64 i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            float v = apply_act(__half2float(p.x[base + i]) * a + b, p.act, p.act_p);
            if (p.residual) v += __half2float(p.residual[base + i]);
            p.y[base + i] = __float2half_rn(v);
        }
    }
}

__device__ __forceinline__ float rstd_of(Moments m, float eps) {
    // why: norm.rs `moments`, 1/sqrt(var + eps) with the population variance.
    return 1.0f / sqrtf(m.m2 / fmaxf(m.count, 1.0f) + eps);
}

// One block per (sample, group), grid-stride over batch·groups.
extern "C" __global__ void group_norm_f16(const __half* x, __half* y, const __half* weight, const __half* bias,
                                          const __half* scale, const __half* shift, const __half* residual,
                                          long long batch, long long channels, long long spatial,
                                          long long groups, float eps, int act, float act_p) {
    __shared__ float scratch[32];
    if (batch <= 0 || channels <= 0 || spatial <= 0 || groups <= 0 || channels % groups) return;
    const NormArgs p = {x, y, weight, bias, scale, shift, residual, channels, spatial, groups, eps, act, act_p};
    const u64 group_len = (u64)(channels / groups) * (u64)spatial;
    const u64 pairs = (u64)batch * (u64)groups;
    for (u64 bg = blockIdx.x; bg < pairs; bg += gridDim.x) {
        const __half* xg = x + bg * group_len;
        const Moments m = block_moments(xg, 0, group_len, scratch);
        normalise_range(p, (i64)(bg / (u64)groups), (i64)(bg % (u64)groups), 0, group_len, m.mean,
                        rstd_of(m, eps));
    }
}

// The range of chunk `c` of `chunks` over a group of `len` values.
__device__ __forceinline__ void chunk_range(u64 len, u64 chunks, u64 c, u64* begin, u64* end) {
    const u64 per = (len + chunks - 1) / chunks;
    *begin = c * per < len ? c * per : len;
    *end = (c + 1) * per < len ? (c + 1) * per : len;
}

// Pass 1 of the multi-block design: partials[(bg·chunks + c)·3 + {0,1,2}] =
// (count, mean, M2) of chunk c of pair bg. Grid: x over chunks, y over
// pairs (grid-stride in both). Workspace: batch·groups·chunks·3 floats.
extern "C" __global__ void group_norm_stats_f16(const __half* x, float* partials, long long batch,
                                                long long channels, long long spatial, long long groups,
                                                long long chunks) {
    __shared__ float scratch[32];
    if (batch <= 0 || channels <= 0 || spatial <= 0 || groups <= 0 || channels % groups || chunks <= 0) return;
    const u64 group_len = (u64)(channels / groups) * (u64)spatial;
    const u64 pairs = (u64)batch * (u64)groups;
    for (u64 bg = blockIdx.y; bg < pairs; bg += gridDim.y) {
        for (u64 c = blockIdx.x; c < (u64)chunks; c += gridDim.x) {
            u64 begin, end;
            chunk_range(group_len, (u64)chunks, c, &begin, &end);
            const Moments m = block_moments(x + bg * group_len, begin, end, scratch);
            if (threadIdx.x == 0) {
                float* out = partials + (bg * (u64)chunks + c) * 3;
                out[0] = m.count;
                out[1] = m.mean;
                out[2] = m.m2;
            }
        }
    }
}

// Pass 2: same arguments as group_norm_f16 plus the workspace and chunk
// count of pass 1 (same grid shape as pass 1). Each block merges its
// group's `chunks` moments in a fixed order, then normalises its chunk.
extern "C" __global__ void group_norm_apply_f16(const __half* x, __half* y, const float* partials,
                                                long long chunks, const __half* weight, const __half* bias,
                                                const __half* scale, const __half* shift,
                                                const __half* residual, long long batch, long long channels,
                                                long long spatial, long long groups, float eps, int act,
                                                float act_p) {
    if (batch <= 0 || channels <= 0 || spatial <= 0 || groups <= 0 || channels % groups || chunks <= 0) return;
    const NormArgs p = {x, y, weight, bias, scale, shift, residual, channels, spatial, groups, eps, act, act_p};
    const u64 group_len = (u64)(channels / groups) * (u64)spatial;
    const u64 pairs = (u64)batch * (u64)groups;
    for (u64 bg = blockIdx.y; bg < pairs; bg += gridDim.y) {
        // Every thread merges the same partials in the same order (they are
        // few and cached), so all threads agree without shared memory.
        Moments m = {0.0f, 0.0f, 0.0f};
        const float* part = partials + bg * (u64)chunks * 3;
        for (u64 c = 0; c < (u64)chunks; ++c) {
            const Moments q = {part[c * 3], part[c * 3 + 1], part[c * 3 + 2]};
            m = merge(m, q);
        }
        const float rstd = rstd_of(m, eps);
        for (u64 c = blockIdx.x; c < (u64)chunks; c += gridDim.x) {
            u64 begin, end;
            chunk_range(group_len, (u64)chunks, c, &begin, &end);
            normalise_range(p, (i64)(bg / (u64)groups), (i64)(bg % (u64)groups), begin, end, m.mean, rstd);
        }
    }
}

// why: cpu::norm::layer_norm_channels — for every (sample, position),
// normalise the C values across channels (population variance, eps added
// to it), times gamma[c], no bias. A thread per position walks the
// channels (stride S), so neighbouring threads read neighbouring
// addresses; the column is read three times, the later two from cache.
extern "C" __global__ void layer_norm_channels_f16(const __half* x, __half* y, const __half* gamma,
                                                   long long batch, long long channels, long long spatial,
                                                   float eps) {
    if (batch <= 0 || channels <= 0 || spatial <= 0) return;
    const u64 S = (u64)spatial, C = (u64)channels;
    const u64 positions = (u64)batch * S;
    GRID_STRIDE_LOOP(p, positions) {
        const u64 b = p / S, s = p % S;
        const __half* xc = x + b * C * S + s;
        __half* yc = y + b * C * S + s;
        float sum = 0.0f;
        for (u64 c = 0; c < C; ++c) sum += __half2float(xc[c * S]);
        const float mean = sum / (float)C;
        float q = 0.0f;
        for (u64 c = 0; c < C; ++c) {
            const float d = __half2float(xc[c * S]) - mean;
            q += d * d;
        }
        const float rstd = 1.0f / sqrtf(q / (float)C + eps);
        for (u64 c = 0; c < C; ++c) {
            // why: the CPU's (v − m)·r·g, in that order.
            yc[c * S] = __float2half_rn((__half2float(xc[c * S]) - mean) * rstd * __half2float(gamma[c]));
        }
    }
}

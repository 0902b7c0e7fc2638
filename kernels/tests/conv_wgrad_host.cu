// Host check of the weight gradient's gather and K schedule (conv_tile.cuh:
// WgradTileB, wgrad_split_range, SliceCursor), for machines without a GPU:
// it runs their own code on the CPU, thread by thread, exactly as
// conv_wgrad_f16's blocks (64 columns, 128 threads) walk their split's
// slices and fill their B tiles, multiplies each tile by the output
// gradient's slice as the A tile holds it, adds the splits' planes in
// order (splitk_sum_f16), and compares the result with the weight gradient
// computed directly from its definition. Transposed convolutions go through
// the adjoint geometry the runtime uses (input and output gradient
// exchanged) and are compared with the gradient of the scatter definition.
// Values are small integers, so every sum is exact and the comparison is
// for equality.
//
//   nvcc -std=c++17 -Ikernels kernels/tests/conv_wgrad_host.cu -o conv_wgrad_host && ./conv_wgrad_host
//
// Exit status 0 when every case matches; the first mismatch is printed.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "conv_tile.cuh"
#include "host_common.h"

namespace {

constexpr int BN = 64, THREADS = 128;

struct Case {
    const char* name;
    int batch, c_in, c_out;
    int d, h, w;  // input of the convolution (transposed: its input too)
    int k[3], s[3], p[3];
    bool transposed;
};

SmallInts small_ints{777u};
int small_int() { return small_ints.next(); }

// The kernel's result for a forward convolution `g` of x [B, C_in, D, H, W]
// whose output gradient is dy [B, C_out, P]: dW [C_out, C_in·taps], with
// the K slices divided among `splits`.
std::vector<double> emulate(const ConvGeom& g, int batch, int c_out, const std::vector<unsigned short>& x,
                            const std::vector<unsigned short>& dy, i64 splits) {
    const i64 taps = (i64)g.kd * g.kh * g.kw;
    const i64 M = c_out, N = (i64)g.c_in * taps;
    const i64 P = (i64)g.fo * g.ho * g.wo;
    const i64 per_item = (P + GEMM_BK - 1) / GEMM_BK, slices = per_item * batch;
    const i64 item_x = (i64)g.c_in * g.frames * g.h * g.w;
    std::vector<std::vector<double>> planes((size_t)splits, std::vector<double>((size_t)(M * N), 0.0));
    std::vector<__half> tile(BN * (GEMM_BK + GEMM_PAD));
    std::vector<WgradTileB<BN, THREADS>> threads(THREADS);
    std::vector<int> seen((size_t)slices, 0);
    for (i64 s = 0; s < splits; ++s) {
        const SliceRange range = wgrad_split_range(s, splits, slices);
        for (i64 n0 = 0; n0 < N; n0 += BN) {
            for (int t = 0; t < THREADS; ++t) threads[t].start_tile(g, n0, N, t);
            SliceCursor next(range.first, per_item);
            for (i64 slice = range.first; slice < range.last; ++slice) {
                const i64 b = next.b, k0 = next.k0;
                next.step(P);
                if (n0 == 0) ++seen[(size_t)slice];
                if (b != slice / per_item || k0 != (slice % per_item) * GEMM_BK) {
                    std::fprintf(stderr, "slice %lld walked as item %lld from %lld\n", slice, b, k0);
                    std::exit(1);
                }
                for (auto& v : tile) v = __float2half_rn(1e4f);  // every element must be written
                for (int t = 0; t < THREADS; ++t) threads[t].load(tile.data(), x.data() + b * item_x, g, P, k0, t);
                for (int line = 0; line < BN; ++line) {
                    for (int kk = 0; kk < GEMM_BK; ++kk) {
                        const float v = __half2float(tile[line * (GEMM_BK + GEMM_PAD) + kk]);
                        const i64 n = n0 + line, k = k0 + kk;
                        if (n >= N || k >= P) {
                            if (v != 0.0f) {
                                std::fprintf(stderr, "tile element past N or P is %g, not 0\n", v);
                                std::exit(1);
                            }
                            continue;
                        }
                        for (i64 m = 0; m < M; ++m)
                            planes[(size_t)s][(size_t)(m * N + n)] +=
                                (double)half_value(dy[(size_t)((b * M + m) * P + k)]) * v;
                    }
                }
            }
        }
    }
    for (i64 slice = 0; slice < slices; ++slice) {
        if (seen[(size_t)slice] != 1) {
            std::fprintf(stderr, "slice %lld ran %d times\n", slice, seen[(size_t)slice]);
            std::exit(1);
        }
    }
    std::vector<double> sum((size_t)(M * N), 0.0);
    for (const auto& plane : planes)
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += plane[i];
    return sum;
}

// dW of a forward convolution from its definition: [C_out, C_in, taps].
std::vector<double> direct_forward(const Case& cs, int fo, int ho, int wo, const std::vector<unsigned short>& x,
                                   const std::vector<unsigned short>& dy) {
    const int taps = cs.k[0] * cs.k[1] * cs.k[2];
    std::vector<double> dw((size_t)(cs.c_out * cs.c_in * taps), 0.0);
    for (int b = 0; b < cs.batch; ++b)
        for (int co = 0; co < cs.c_out; ++co)
            for (int ci = 0; ci < cs.c_in; ++ci)
                for (int kz = 0; kz < cs.k[0]; ++kz)
                    for (int ky = 0; ky < cs.k[1]; ++ky)
                        for (int kx = 0; kx < cs.k[2]; ++kx)
                            for (int oz = 0; oz < fo; ++oz)
                                for (int oy = 0; oy < ho; ++oy)
                                    for (int ox = 0; ox < wo; ++ox) {
                                        const int iz = oz * cs.s[0] - cs.p[0] + kz;
                                        const int iy = oy * cs.s[1] - cs.p[1] + ky;
                                        const int ix = ox * cs.s[2] - cs.p[2] + kx;
                                        if (iz < 0 || iz >= cs.d || iy < 0 || iy >= cs.h || ix < 0 || ix >= cs.w)
                                            continue;
                                        const double g = half_value(
                                            dy[(size_t)((((i64)b * cs.c_out + co) * fo + oz) * ho + oy) * wo + ox]);
                                        const double v = half_value(
                                            x[(size_t)((((i64)b * cs.c_in + ci) * cs.d + iz) * cs.h + iy) * cs.w + ix]);
                                        dw[(size_t)((co * cs.c_in + ci) * taps + (kz * cs.k[1] + ky) * cs.k[2] + kx)] +=
                                            g * v;
                                    }
    return dw;
}

// dW of a transposed convolution (weight [C_in, C_out, taps]) from the
// scatter definition y[o·s − p + k] += x[i]·W[ci, co, k], output [fo, ho, wo].
std::vector<double> direct_transposed(const Case& cs, int fo, int ho, int wo, const std::vector<unsigned short>& x,
                                      const std::vector<unsigned short>& dy) {
    const int taps = cs.k[0] * cs.k[1] * cs.k[2];
    std::vector<double> dw((size_t)(cs.c_in * cs.c_out * taps), 0.0);
    for (int b = 0; b < cs.batch; ++b)
        for (int ci = 0; ci < cs.c_in; ++ci)
            for (int iz = 0; iz < cs.d; ++iz)
                for (int iy = 0; iy < cs.h; ++iy)
                    for (int ix = 0; ix < cs.w; ++ix) {
                        const double v =
                            half_value(x[(size_t)((((i64)b * cs.c_in + ci) * cs.d + iz) * cs.h + iy) * cs.w + ix]);
                        for (int co = 0; co < cs.c_out; ++co)
                            for (int kz = 0; kz < cs.k[0]; ++kz)
                                for (int ky = 0; ky < cs.k[1]; ++ky)
                                    for (int kx = 0; kx < cs.k[2]; ++kx) {
                                        const int oz = iz * cs.s[0] - cs.p[0] + kz;
                                        const int oy = iy * cs.s[1] - cs.p[1] + ky;
                                        const int ox = ix * cs.s[2] - cs.p[2] + kx;
                                        if (oz < 0 || oz >= fo || oy < 0 || oy >= ho || ox < 0 || ox >= wo) continue;
                                        const double g = half_value(
                                            dy[(size_t)((((i64)b * cs.c_out + co) * fo + oz) * ho + oy) * wo + ox]);
                                        dw[(size_t)((ci * cs.c_out + co) * taps + (kz * cs.k[1] + ky) * cs.k[2] +
                                                    kx)] += v * g;
                                    }
                    }
    return dw;
}

}  // namespace

int main() {
    const Case cases[] = {
        // The denoiser's per-frame kernels (kd = 1) and nnU-Net's.
        {"per-frame 3x3 pad 1", 2, 8, 16, 3, 12, 10, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, false},
        {"per-frame 7x7 pad 3, one input channel", 3, 1, 24, 2, 9, 11, {1, 7, 7}, {1, 1, 1}, {0, 3, 3}, false},
        {"per-frame 4x4 stride 2 pad 1", 2, 8, 16, 3, 12, 10, {1, 4, 4}, {1, 2, 2}, {0, 1, 1}, false},
        {"3x3x3 pad 1", 2, 5, 7, 6, 7, 9, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, false},
        {"3x3x3 stride 2 pad 1 (odd sizes)", 2, 4, 6, 7, 9, 8, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, false},
        {"1x3x3 stride (1, 2, 2) pad (0, 1, 1)", 1, 3, 5, 4, 11, 10, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, false},
        // More columns than one tile (C_in·taps > 64) and rows past 64.
        {"3x3 with 80 columns, 70 rows", 2, 9, 70, 1, 6, 7, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, false},
        // Odd shapes: uneven kernels, strides and pads; P off the slices.
        {"2x3x1 pad (0, 1, 0)", 3, 2, 3, 5, 7, 6, {2, 3, 1}, {1, 1, 1}, {0, 1, 0}, false},
        {"3x2x4 stride (2, 3, 1) pad (1, 0, 2)", 2, 3, 2, 8, 10, 7, {3, 2, 4}, {2, 3, 1}, {1, 0, 2}, false},
        {"a single output position", 4, 3, 2, 1, 3, 3, {1, 3, 3}, {1, 1, 1}, {0, 0, 0}, false},
        // Transposed convolutions, through the adjoint geometry.
        {"transposed 2x2x2 stride 2", 2, 6, 4, 3, 5, 4, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, true},
        {"transposed 1x2x2 stride (1, 2, 2)", 2, 4, 3, 3, 4, 5, {1, 2, 2}, {1, 2, 2}, {0, 0, 0}, true},
        {"transposed per-frame 4x4 stride 2 pad 1", 2, 8, 6, 3, 6, 5, {1, 4, 4}, {1, 2, 2}, {0, 1, 1}, true},
        {"transposed 3x2x2 stride (2, 3, 1) pad (1, 0, 1)", 2, 2, 3, 4, 3, 5, {3, 2, 2}, {2, 3, 1}, {1, 0, 1}, true},
    };
    int failures = 0;
    for (const Case& cs : cases) {
        const int fo = out_size(cs.d, cs.k[0], cs.s[0], cs.p[0], cs.transposed);
        const int ho = out_size(cs.h, cs.k[1], cs.s[1], cs.p[1], cs.transposed);
        const int wo = out_size(cs.w, cs.k[2], cs.s[2], cs.p[2], cs.transposed);
        std::vector<unsigned short> x((size_t)cs.batch * cs.c_in * cs.d * cs.h * cs.w);
        for (auto& v : x) v = half_bits((float)small_int());
        std::vector<unsigned short> dy((size_t)cs.batch * cs.c_out * fo * ho * wo);
        for (auto& v : dy) v = half_bits((float)small_int());

        // The forward convolution whose weight gradient the kernel computes:
        // for a transposed one, its adjoint (input: the output gradient,
        // output gradient: the input, channels exchanged).
        ConvGeom g{};
        g.kd = cs.k[0];
        g.kh = cs.k[1];
        g.kw = cs.k[2];
        g.sd = cs.s[0];
        g.sh = cs.s[1];
        g.sw = cs.s[2];
        g.pd = cs.p[0];
        g.ph = cs.p[1];
        g.pw = cs.p[2];
        std::vector<double> want;
        const std::vector<unsigned short>*input, *grad;
        int rows;
        if (!cs.transposed) {
            g.c_in = cs.c_in;
            g.frames = cs.d;
            g.h = cs.h;
            g.w = cs.w;
            g.fo = fo;
            g.ho = ho;
            g.wo = wo;
            input = &x;
            grad = &dy;
            rows = cs.c_out;
            want = direct_forward(cs, fo, ho, wo, x, dy);
        } else {
            g.c_in = cs.c_out;
            g.frames = fo;
            g.h = ho;
            g.w = wo;
            g.fo = cs.d;
            g.ho = cs.h;
            g.wo = cs.w;
            input = &dy;
            grad = &x;
            rows = cs.c_in;
            want = direct_transposed(cs, fo, ho, wo, x, dy);
        }
        const i64 P = (i64)g.fo * g.ho * g.wo;
        const i64 slices = (P + GEMM_BK - 1) / GEMM_BK * cs.batch;
        bool ok = true;
        // One split, a few, and more splits than slices (some empty).
        for (const i64 splits : {(i64)1, (i64)3, slices + 2}) {
            const std::vector<double> got = emulate(g, cs.batch, rows, *input, *grad, splits);
            for (size_t i = 0; i < want.size() && ok; ++i) {
                if (got[i] != want[i]) {
                    std::fprintf(stderr, "%s (%lld splits): dW[%zu] is %g, the definition gives %g\n", cs.name,
                                 splits, i, got[i], want[i]);
                    ok = false;
                }
            }
        }
        std::printf("%-50s %s (K = %d x %lld)\n", cs.name, ok ? "ok" : "MISMATCH", cs.batch, P);
        failures += ok ? 0 : 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d of %zu cases differ\n", failures, sizeof(cases) / sizeof(cases[0]));
        return 1;
    }
    std::printf("all %zu weight gradients match\n", sizeof(cases) / sizeof(cases[0]));
    return 0;
}

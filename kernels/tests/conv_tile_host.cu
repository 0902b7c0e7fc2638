// Host check of the implicit-GEMM convolution's B gather (conv_tile.cuh),
// for machines without a GPU: it runs ConvTileB's own code on the CPU,
// thread by thread, exactly as a block of conv_f16 (128 columns, 256
// threads) and conv_f16_64x64 (64 columns, 128 threads) fills its shared
// tiles, multiplies the tiles by the weight, and compares the result with a
// direct convolution (forward: the gather definition; transposed: the
// scatter definition PyTorch documents, so the gather form is checked
// against an independent formula). Values are small integers, so every sum
// is exact and the comparison is for equality.
//
//   nvcc -std=c++17 -Ikernels kernels/tests/conv_tile_host.cu -o conv_tile_host && ./conv_tile_host
//
// Exit status 0 when every case matches; the first mismatch is printed.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "conv_tile.cuh"
#include "host_common.h"

namespace {

struct Case {
    const char* name;
    int c_in, c_out;
    int d, h, w;     // input
    int k[3], s[3], p[3];
    bool transposed;
};

SmallInts small_ints{12345u};
int small_int() { return small_ints.next(); }

// The GEMM of conv_f16 with tiles of BN columns and THREADS threads, with
// the B tiles gathered by ConvTileB run for each emulated thread.
template <int BN, int THREADS, bool TRANSPOSED>
std::vector<double> implicit_gemm(const ConvGeom& g, const std::vector<float>& a, int m,
                                  const std::vector<unsigned short>& x) {
    const i64 K = (i64)g.c_in * g.kd * g.kh * g.kw;
    const i64 N = (i64)g.fo * g.ho * g.wo;
    std::vector<double> c((size_t)(m * N), 0.0);
    std::vector<__half> tile(GEMM_BK * (BN + GEMM_PAD));
    std::vector<ConvTileB<BN, THREADS, TRANSPOSED>> threads(THREADS);
    for (i64 n0 = 0; n0 < N; n0 += BN) {
        for (int t = 0; t < THREADS; ++t) threads[t].start_tile(g, n0, N, t);
        for (i64 k0 = 0; k0 < K; k0 += GEMM_BK) {
            // Poison the tile: every element must be written by some thread.
            for (auto& v : tile) v = __float2half_rn(1e4f);
            for (int t = 0; t < THREADS; ++t) threads[t].load(tile.data(), x.data(), g, K, k0, t);
            for (int line = 0; line < GEMM_BK; ++line) {
                for (int col = 0; col < BN; ++col) {
                    const float b = __half2float(tile[line * (BN + GEMM_PAD) + col]);
                    const i64 k = k0 + line, n = n0 + col;
                    if (k >= K || n >= N) {
                        if (b != 0.0f) {
                            std::fprintf(stderr, "tile element past K or N is %g, not 0\n", b);
                            std::exit(1);
                        }
                        continue;
                    }
                    for (int row = 0; row < m; ++row) c[(size_t)(row * N + n)] += (double)a[(size_t)(row * K + k)] * b;
                }
            }
        }
    }
    return c;
}

// Direct convolution of one batch item. Forward: weight [C_out, C_in, taps];
// transposed: weight [C_in, C_out, taps], scattered.
std::vector<double> direct(const Case& cs, const ConvGeom& g, const std::vector<float>& weight,
                           const std::vector<unsigned short>& x) {
    const int taps = cs.k[0] * cs.k[1] * cs.k[2];
    const i64 plane_out = (i64)g.fo * g.ho * g.wo;
    std::vector<double> out((size_t)(cs.c_out * plane_out), 0.0);
    auto xv = [&](int ci, int z, int y, int xx) {
        return (double)half_value(x[(size_t)(((i64)ci * cs.d + z) * cs.h + y) * cs.w + xx]);
    };
    if (!cs.transposed) {
        for (int co = 0; co < cs.c_out; ++co)
            for (int oz = 0; oz < g.fo; ++oz)
                for (int oy = 0; oy < g.ho; ++oy)
                    for (int ox = 0; ox < g.wo; ++ox) {
                        double acc = 0.0;
                        for (int ci = 0; ci < cs.c_in; ++ci)
                            for (int kz = 0; kz < cs.k[0]; ++kz)
                                for (int ky = 0; ky < cs.k[1]; ++ky)
                                    for (int kx = 0; kx < cs.k[2]; ++kx) {
                                        const int iz = oz * cs.s[0] - cs.p[0] + kz;
                                        const int iy = oy * cs.s[1] - cs.p[1] + ky;
                                        const int ix = ox * cs.s[2] - cs.p[2] + kx;
                                        if (iz < 0 || iz >= cs.d || iy < 0 || iy >= cs.h || ix < 0 || ix >= cs.w)
                                            continue;
                                        const int tap = (kz * cs.k[1] + ky) * cs.k[2] + kx;
                                        acc += weight[(size_t)((co * cs.c_in + ci) * taps + tap)] * xv(ci, iz, iy, ix);
                                    }
                        out[(size_t)(co * plane_out + ((i64)oz * g.ho + oy) * g.wo + ox)] = acc;
                    }
    } else {
        for (int ci = 0; ci < cs.c_in; ++ci)
            for (int iz = 0; iz < cs.d; ++iz)
                for (int iy = 0; iy < cs.h; ++iy)
                    for (int ix = 0; ix < cs.w; ++ix)
                        for (int co = 0; co < cs.c_out; ++co)
                            for (int kz = 0; kz < cs.k[0]; ++kz)
                                for (int ky = 0; ky < cs.k[1]; ++ky)
                                    for (int kx = 0; kx < cs.k[2]; ++kx) {
                                        const int oz = iz * cs.s[0] - cs.p[0] + kz;
                                        const int oy = iy * cs.s[1] - cs.p[1] + ky;
                                        const int ox = ix * cs.s[2] - cs.p[2] + kx;
                                        if (oz < 0 || oz >= g.fo || oy < 0 || oy >= g.ho || ox < 0 || ox >= g.wo)
                                            continue;
                                        const int tap = (kz * cs.k[1] + ky) * cs.k[2] + kx;
                                        out[(size_t)(co * plane_out + ((i64)oz * g.ho + oy) * g.wo + ox)] +=
                                            weight[(size_t)((ci * cs.c_out + co) * taps + tap)] * xv(ci, iz, iy, ix);
                                    }
    }
    return out;
}

template <int BN, int THREADS>
bool check(const Case& cs, const ConvGeom& g, const std::vector<float>& a, const std::vector<unsigned short>& x,
           const std::vector<double>& want) {
    const std::vector<double> got = cs.transposed ? implicit_gemm<BN, THREADS, true>(g, a, cs.c_out, x)
                                                  : implicit_gemm<BN, THREADS, false>(g, a, cs.c_out, x);
    for (size_t i = 0; i < want.size(); ++i) {
        if (got[i] != want[i]) {
            std::fprintf(stderr, "%s (%d columns): output %zu is %g, direct convolution gives %g\n", cs.name, BN, i,
                         got[i], want[i]);
            return false;
        }
    }
    return true;
}

}  // namespace

int main() {
    const Case cases[] = {
        // The denoiser's per-frame kernels (kd = 1).
        {"per-frame 3x3 pad 1", 8, 16, 3, 12, 10, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, false},
        {"per-frame 7x7 pad 3", 1, 24, 2, 9, 11, {1, 7, 7}, {1, 1, 1}, {0, 3, 3}, false},
        {"per-frame 4x4 stride 2 pad 1", 8, 16, 3, 12, 10, {1, 4, 4}, {1, 2, 2}, {0, 1, 1}, false},
        {"per-frame transposed 4x4 stride 2 pad 1", 8, 6, 3, 6, 5, {1, 4, 4}, {1, 2, 2}, {0, 1, 1}, true},
        // nnU-Net's 3-D kernels.
        {"3x3x3 pad 1", 5, 7, 6, 7, 9, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, false},
        {"3x3x3 stride 2 pad 1", 4, 6, 7, 9, 8, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, false},
        {"1x3x3 stride (1, 2, 2) pad (0, 1, 1)", 3, 5, 4, 11, 10, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, false},
        {"transposed 2x2x2 stride 2", 6, 4, 3, 5, 4, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, true},
        {"transposed 1x2x2 stride (1, 2, 2)", 4, 3, 3, 4, 5, {1, 2, 2}, {1, 2, 2}, {0, 0, 0}, true},
        // Odd shapes: uneven kernels, strides and pads; K and N off the tiles.
        {"2x3x1 pad (0, 1, 0)", 2, 3, 5, 7, 6, {2, 3, 1}, {1, 1, 1}, {0, 1, 0}, false},
        {"3x2x4 stride (2, 3, 1) pad (1, 0, 2)", 3, 2, 8, 10, 7, {3, 2, 4}, {2, 3, 1}, {1, 0, 2}, false},
        {"transposed 3x3x3 stride 2 pad 1", 3, 2, 3, 4, 5, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true},
        {"transposed 3x2x2 stride (2, 3, 1) pad (1, 0, 1)", 2, 3, 4, 3, 5, {3, 2, 2}, {2, 3, 1}, {1, 0, 1}, true},
        {"transposed 3x3x3 stride 1 pad 1", 2, 3, 3, 3, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, true},
    };
    int failures = 0;
    for (const Case& cs : cases) {
        ConvGeom g{};
        g.c_in = cs.c_in;
        g.frames = cs.d;
        g.h = cs.h;
        g.w = cs.w;
        g.fo = out_size(cs.d, cs.k[0], cs.s[0], cs.p[0], cs.transposed);
        g.ho = out_size(cs.h, cs.k[1], cs.s[1], cs.p[1], cs.transposed);
        g.wo = out_size(cs.w, cs.k[2], cs.s[2], cs.p[2], cs.transposed);
        g.kd = cs.k[0];
        g.kh = cs.k[1];
        g.kw = cs.k[2];
        g.sd = cs.s[0];
        g.sh = cs.s[1];
        g.sw = cs.s[2];
        g.pd = cs.p[0];
        g.ph = cs.p[1];
        g.pw = cs.p[2];
        g.transposed = cs.transposed ? 1 : 0;
        const int taps = cs.k[0] * cs.k[1] * cs.k[2];
        std::vector<unsigned short> x((size_t)cs.c_in * cs.d * cs.h * cs.w);
        for (auto& v : x) v = half_bits((float)small_int());
        std::vector<float> weight((size_t)cs.c_in * cs.c_out * taps);
        for (auto& v : weight) v = (float)small_int();
        // A: the weight as [C_out, C_in·taps] (the runtime's permutation
        // for a transposed convolution).
        std::vector<float> a(weight.size());
        for (int co = 0; co < cs.c_out; ++co)
            for (int ci = 0; ci < cs.c_in; ++ci)
                for (int t = 0; t < taps; ++t)
                    a[(size_t)((co * cs.c_in + ci) * taps + t)] =
                        cs.transposed ? weight[(size_t)((ci * cs.c_out + co) * taps + t)]
                                      : weight[(size_t)((co * cs.c_in + ci) * taps + t)];
        const std::vector<double> want = direct(cs, g, weight, x);
        const bool ok = check<128, 256>(cs, g, a, x, want) && check<64, 128>(cs, g, a, x, want);
        std::printf("%-50s %s (output %dx%dx%d)\n", cs.name, ok ? "ok" : "MISMATCH", g.fo, g.ho, g.wo);
        failures += ok ? 0 : 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d of %zu cases differ\n", failures, sizeof(cases) / sizeof(cases[0]));
        return 1;
    }
    std::printf("all %zu convolution gathers match\n", sizeof(cases) / sizeof(cases[0]));
    return 0;
}

// Stand-alone GPU test of the embedded kernels, through the driver API as
// the Rust runtime uses them: loads the fatbins build.rs wrote, runs every
// kernel on random inputs with poisoned outputs, and compares against
// host references (double precision, or bit-exact ports where the kernel
// promises bit-exactness: Philox, RePaint, lincomb_f32).
//
// Build and run on a GPU machine (no Rust needed):
//   nvcc -O2 -std=c++17 -Xcompiler -ffp-contract=off kernels/tests/kernel_test.cpp -lcuda -o kernel_test
//   ./kernel_test <dir with *.fatbin> [out dir for dumps]
// Prints one line per check and exits non-zero on any failure.
#include <cuda.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>

typedef unsigned long long u64;
typedef long long i64;

static int g_failures = 0;

#define CK(x)                                                                        \
    do {                                                                             \
        CUresult r_ = (x);                                                           \
        if (r_ != CUDA_SUCCESS) {                                                    \
            const char* s_ = nullptr;                                                \
            cuGetErrorString(r_, &s_);                                               \
            fprintf(stderr, "%s:%d %s failed: %s\n", __FILE__, __LINE__, #x, s_);    \
            exit(2);                                                                 \
        }                                                                            \
    } while (0)

static void report(const char* what, bool ok, double err, double tol) {
    printf("%-4s %-58s err %.3e (tol %.1e)\n", ok ? "ok" : "FAIL", what, err, tol);
    if (!ok) g_failures++;
}

// ---------------------------------------------------------------- helpers
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        return s;
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
    double normal() {
        double u1 = uniform() + 1e-300, u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};

static std::vector<CUmodule> g_modules;
static CUfunction fn(const char* name) {
    for (CUmodule m : g_modules) {
        CUfunction f;
        if (cuModuleGetFunction(&f, m, name) == CUDA_SUCCESS) return f;
    }
    fprintf(stderr, "kernel %s not found in any fatbin\n", name);
    exit(2);
}

template <typename T>
struct Buf {
    CUdeviceptr p = 0;
    size_t n = 0;
    explicit Buf(size_t count) : n(count) {
        CK(cuMemAlloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
        CK(cuMemsetD8(p, 0xff, std::max<size_t>(count, 1) * sizeof(T)));  // poison: NaN in f16/f32
    }
    Buf(const std::vector<T>& h) : Buf(h.size()) { up(h); }
    ~Buf() { cuMemFree(p); }
    void up(const std::vector<T>& h) { CK(cuMemcpyHtoD(p, h.data(), h.size() * sizeof(T))); }
    std::vector<T> down() const {
        std::vector<T> h(n);
        CK(cuMemcpyDtoH(h.data(), p, n * sizeof(T)));
        return h;
    }
};

static void launch(const char* name, unsigned gx, unsigned gy, unsigned block, void** args) {
    CK(cuLaunchKernel(fn(name), gx, gy, 1, block, 1, 1, 0, 0, args, nullptr));
    CK(cuCtxSynchronize());
}

static std::vector<__half> to_half(const std::vector<float>& v) {
    std::vector<__half> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = __float2half_rn(v[i]);
    return h;
}
static std::vector<float> to_float(const std::vector<__half>& v) {
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = __half2float(v[i]);
    return f;
}
static std::vector<float> randn(size_t n, uint64_t seed, double scale = 1.0, double shift = 0.0) {
    Rng r(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)(shift + scale * r.normal());
    return v;
}
// Relative L2 error; NaN/inf anywhere counts as failure (returns inf).
static double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return std::sqrt(num / std::max(den, 1e-300));
}
static std::vector<float> rounded(const std::vector<float>& v) { return to_float(to_half(v)); }

// ---------------------------------------------------------------- GEMM
struct GemmArgs {
    u64 a, b, c, bias, residual;
    i64 m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
    int trans_a, trans_b, bias_mode;
    float alpha;
};

static void test_gemm(const char* kernel, i64 M, i64 N, i64 K, int ta, int tb, i64 batch, int bias_mode, bool residual,
                      int misalign, bool share_a, const char* label) {
    const i64 lda = (ta ? M : K) + misalign, ldb = (tb ? K : N) + misalign, ldc = N + (misalign ? 3 : 0);
    const i64 a_rows = ta ? K : M, b_rows = tb ? N : K;
    const i64 sa = share_a ? 0 : a_rows * lda + misalign, sb = b_rows * ldb + misalign, sc = M * ldc + misalign;
    const i64 off = misalign;  // element offset of every base pointer
    std::vector<float> A = rounded(randn(off + (share_a ? 1 : batch) * std::max<i64>(sa, a_rows * lda), 1));
    std::vector<float> B = rounded(randn(off + batch * sb, 2));
    std::vector<float> bias = rounded(randn(std::max(M, N), 3));
    std::vector<float> R = rounded(randn(off + batch * sc, 4));
    const float alpha = 0.75f;
    Buf<__half> dA(to_half(A)), dB(to_half(B)), dBias(to_half(bias)), dR(to_half(R)), dC(off + batch * sc);
    GemmArgs g;
    g.a = dA.p + off * 2; g.b = dB.p + off * 2; g.c = dC.p + off * 2;
    g.bias = bias_mode ? dBias.p : 0; g.residual = residual ? dR.p + off * 2 : 0;
    g.m = M; g.n = N; g.k = K; g.lda = lda; g.ldb = ldb; g.ldc = ldc; g.batch = batch;
    g.stride_a = sa; g.stride_b = sb; g.stride_c = sc; g.trans_a = ta; g.trans_b = tb; g.bias_mode = bias_mode;
    g.alpha = alpha;
    const bool big = std::string(kernel) == "gemm_f16";
    const i64 bm = big ? 128 : 64;
    const u64 tiles = (u64)((M + bm - 1) / bm) * (u64)((N + bm - 1) / bm);
    void* args[] = {&g};
    launch(kernel, (unsigned)std::min<u64>(tiles, 2147483647ull), (unsigned)std::min<i64>(batch, 65535), big ? 256 : 128,
           args);
    std::vector<float> C = to_float(dC.down());
    std::vector<float> got;
    std::vector<double> want;
    bool pad_ok = true;
    for (i64 z = 0; z < batch; ++z) {
        for (i64 m = 0; m < M; ++m) {
            for (i64 n = 0; n < ldc; ++n) {
                const i64 ci = off + z * sc + m * ldc + n;
                if (n >= N) {  // padding columns stay poisoned
                    if (!std::isnan(C[ci])) pad_ok = false;
                    continue;
                }
                double s = 0;
                for (i64 k = 0; k < K; ++k) {
                    const double a = A[off + z * sa + (ta ? k * lda + m : m * lda + k)];
                    const double b = B[off + z * sb + (tb ? n * ldb + k : k * ldb + n)];
                    s += a * b;
                }
                s *= alpha;
                if (bias_mode == 1) s += bias[m];
                if (bias_mode == 2) s += bias[n];
                if (residual) s += R[ci];
                got.push_back(C[ci]);
                want.push_back(s);
            }
        }
    }
    const double err = rel_l2(got, want);
    char what[200];
    snprintf(what, sizeof what, "%s %s M%lld N%lld K%lld t%d%d b%lld", kernel, label, M, N, K, ta, tb, batch);
    report(what, err < 2e-3 && pad_ok, err, 2e-3);
}

static void bench_gemm(const char* kernel, i64 M, i64 N, i64 K, int ta, int tb) {
    Buf<__half> dA(to_half(randn(M * K, 5))), dB(to_half(randn(K * N, 6))), dC(M * N);
    GemmArgs g = {};
    g.a = dA.p; g.b = dB.p; g.c = dC.p; g.m = M; g.n = N; g.k = K;
    g.lda = ta ? M : K; g.ldb = tb ? K : N; g.ldc = N; g.batch = 1; g.trans_a = ta; g.trans_b = tb; g.alpha = 1.0f;
    const bool big = std::string(kernel) == "gemm_f16";
    const i64 bm = big ? 128 : 64;
    const unsigned tiles = (unsigned)(((M + bm - 1) / bm) * ((N + bm - 1) / bm));
    void* args[] = {&g};
    CUevent e0, e1;
    CK(cuEventCreate(&e0, 0));
    CK(cuEventCreate(&e1, 0));
    for (int i = 0; i < 3; ++i) CK(cuLaunchKernel(fn(kernel), tiles, 1, 1, big ? 256 : 128, 1, 1, 0, 0, args, nullptr));
    std::vector<float> ms;
    for (int rep = 0; rep < 5; ++rep) {
        CK(cuEventRecord(e0, 0));
        for (int i = 0; i < 10; ++i)
            CK(cuLaunchKernel(fn(kernel), tiles, 1, 1, big ? 256 : 128, 1, 1, 0, 0, args, nullptr));
        CK(cuEventRecord(e1, 0));
        CK(cuEventSynchronize(e1));
        float t;
        CK(cuEventElapsedTime(&t, e0, e1));
        ms.push_back(t / 10);
    }
    std::sort(ms.begin(), ms.end());
    printf("bench %-14s M%lld N%lld K%lld t%d%d: %.3f ms, %.1f TFLOP/s\n", kernel, M, N, K, ta, tb, ms[2],
           2.0 * M * N * K / (ms[2] * 1e-3) / 1e12);
}

// ---------------------------------------------------------------- norms
static void norm_reference(const std::vector<float>& x, std::vector<double>& y, const float* w, const float* b,
                           const float* scale, const float* shift, const float* res, i64 B, i64 C, i64 S, i64 G,
                           double eps, int act, double p) {
    const i64 cg = C / G;
    y.assign(x.size(), 0);
    for (i64 bi = 0; bi < B; ++bi)
        for (i64 g = 0; g < G; ++g) {
            const i64 base = (bi * C + g * cg) * S, len = cg * S;
            double mean = 0, var = 0;
            for (i64 i = 0; i < len; ++i) mean += x[base + i];
            mean /= len;
            for (i64 i = 0; i < len; ++i) var += (x[base + i] - mean) * (x[base + i] - mean);
            var /= len;
            const double rstd = 1 / std::sqrt(var + eps);
            for (i64 j = 0; j < cg; ++j) {
                const i64 ch = g * cg + j;
                for (i64 s = 0; s < S; ++s) {
                    const i64 i = base + j * S + s;
                    double v = (x[i] - mean) * rstd * (w ? w[ch] : 1.0) + (b ? b[ch] : 0.0);
                    if (scale) v = v * (scale[bi * C + ch] + 1.0) + shift[bi * C + ch];
                    if (act == 1) v = v / (1 + std::exp(-v));
                    if (act == 2) v = v >= 0 ? v : v * p;
                    if (res) v += res[i];
                    y[i] = v;
                }
            }
        }
}

static void test_group_norm(i64 B, i64 C, i64 S, i64 G, bool affine, bool mod, bool res, int act, i64 chunks,
                            const char* label) {
    const i64 n = B * C * S;
    std::vector<float> x = rounded(randn(n, 10, 2.0, 3.0));
    std::vector<float> w = rounded(randn(C, 11)), bi = rounded(randn(C, 12));
    std::vector<float> sc = rounded(randn(B * C, 13, 0.3)), sh = rounded(randn(B * C, 14));
    std::vector<float> r = rounded(randn(n, 15));
    std::vector<double> want;
    const float eps = 1e-5f, slope = 0.01f;
    norm_reference(x, want, affine ? w.data() : nullptr, affine ? bi.data() : nullptr, mod ? sc.data() : nullptr,
                   mod ? sh.data() : nullptr, res ? r.data() : nullptr, B, C, S, G, eps, act, slope);
    Buf<__half> dx(to_half(x)), dw(to_half(w)), db(to_half(bi)), dsc(to_half(sc)), dsh(to_half(sh)), dr(to_half(r)),
        dy(n);
    CUdeviceptr pw = affine ? dw.p : 0, pb = affine ? db.p : 0, psc = mod ? dsc.p : 0, psh = mod ? dsh.p : 0,
                pr = res ? dr.p : 0;
    float act_p = slope;
    if (chunks == 0) {
        void* args[] = {&dx.p, &dy.p, &pw, &pb, &psc, &psh, &pr, &B, &C, &S, &G, (void*)&eps, &act, &act_p};
        launch("group_norm_f16", (unsigned)std::min<i64>(B * G, 65535), 1, 512, args);
    } else {
        Buf<float> part(B * G * chunks * 3);
        void* a1[] = {&dx.p, &part.p, &B, &C, &S, &G, &chunks};
        launch("group_norm_stats_f16", (unsigned)chunks, (unsigned)(B * G), 512, a1);
        void* a2[] = {&dx.p, &dy.p, &part.p, &chunks, &pw, &pb, &psc, &psh, &pr, &B, &C, &S, &G, (void*)&eps, &act, &act_p};
        launch("group_norm_apply_f16", (unsigned)chunks, (unsigned)(B * G), 512, a2);
    }
    const double err = rel_l2(to_float(dy.down()), want);
    char what[200];
    snprintf(what, sizeof what, "group_norm %s B%lld C%lld S%lld G%lld chunks%lld", label, B, C, S, G, chunks);
    report(what, err < 2e-3, err, 2e-3);
}

static void test_layer_norm(i64 B, i64 C, i64 S) {
    std::vector<float> x = rounded(randn(B * C * S, 20, 1.0, 1.0)), g = rounded(randn(C, 21));
    std::vector<double> want(x.size());
    for (i64 b = 0; b < B; ++b)
        for (i64 s = 0; s < S; ++s) {
            double m = 0, v = 0;
            for (i64 c = 0; c < C; ++c) m += x[(b * C + c) * S + s];
            m /= C;
            for (i64 c = 0; c < C; ++c) v += std::pow(x[(b * C + c) * S + s] - m, 2);
            v /= C;
            for (i64 c = 0; c < C; ++c) want[(b * C + c) * S + s] = (x[(b * C + c) * S + s] - m) / std::sqrt(v + 1e-5) * g[c];
        }
    Buf<__half> dx(to_half(x)), dg(to_half(g)), dy(x.size());
    float eps = 1e-5f;
    void* args[] = {&dx.p, &dy.p, &dg.p, &B, &C, &S, &eps};
    launch("layer_norm_channels_f16", (unsigned)((B * S + 255) / 256), 1, 256, args);
    const double err = rel_l2(to_float(dy.down()), want);
    char what[120];
    snprintf(what, sizeof what, "layer_norm_channels_f16 B%lld C%lld S%lld", B, C, S);
    report(what, err < 2e-3, err, 2e-3);
}

// ---------------------------------------------------------------- softmax
template <bool HALF>
static void test_softmax(i64 outer, i64 n, i64 inner) {
    std::vector<float> x = rounded(randn(outer * n * inner, 30, 3.0));
    std::vector<double> want(x.size());
    for (i64 o = 0; o < outer; ++o)
        for (i64 q = 0; q < inner; ++q) {
            double m = -INFINITY, s = 0;
            for (i64 j = 0; j < n; ++j) m = std::max(m, (double)x[(o * n + j) * inner + q]);
            for (i64 j = 0; j < n; ++j) s += std::exp(x[(o * n + j) * inner + q] - m);
            for (i64 j = 0; j < n; ++j) want[(o * n + j) * inner + q] = std::exp(x[(o * n + j) * inner + q] - m) / s;
        }
    std::vector<float> got;
    const unsigned grid = inner == 1 ? (unsigned)std::min<i64>(outer, 65535) : (unsigned)((outer * inner + 255) / 256);
    if (HALF) {
        Buf<__half> dx(to_half(x)), dy(x.size());
        void* args[] = {&dx.p, &dy.p, &outer, &n, &inner};
        launch("softmax_f16", grid, 1, 256, args);
        got = to_float(dy.down());
    } else {
        Buf<float> dx(x), dy(x.size());
        void* args[] = {&dx.p, &dy.p, &outer, &n, &inner};
        launch("softmax_f32", grid, 1, 256, args);
        got = dy.down();
    }
    const double err = rel_l2(got, want), tol = HALF ? 2e-3 : 1e-5;
    char what[120];
    snprintf(what, sizeof what, "softmax_%s outer%lld n%lld inner%lld", HALF ? "f16" : "f32", outer, n, inner);
    report(what, err < tol, err, tol);
}

// ---------------------------------------------------------------- elementwise
static double unary_ref(double v, int op, double p0, double p1) {
    switch (op) {
        case 0: return v;
        case 1: return v / (1 + std::exp(-v));
        case 2: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
        case 3: return v >= 0 ? v : v * p0;
        case 4: return v * p0 + p1;
        case 5: return std::exp(v);
        case 6: return -v;
        case 7: return v * v;
        case 8: return std::sqrt(v);
        default: return 1 / v;
    }
}

static void test_elementwise() {
    const u64 n = 100003;
    std::vector<float> x = rounded(randn(n, 40, 2.0));
    std::vector<float> xpos(n);
    for (u64 i = 0; i < n; ++i) xpos[i] = rounded({std::fabs(x[i]) + 0.1f})[0];
    for (int op = 0; op < 10; ++op) {
        const std::vector<float>& in = (op == 8 || op == 9) ? xpos : x;
        float p0 = 0.3f, p1 = -0.7f;
        std::vector<double> want(n);
        for (u64 i = 0; i < n; ++i) want[i] = unary_ref(in[i], op, p0, p1);
        Buf<float> fx(in), fy(n);
        void* a32[] = {&fx.p, &fy.p, (void*)&n, &op, &p0, &p1};
        launch("unary_f32", 256, 1, 256, a32);
        Buf<__half> hx(to_half(in)), hy(n);
        void* a16[] = {&hx.p, &hy.p, (void*)&n, &op, &p0, &p1};
        launch("unary_f16", 256, 1, 256, a16);
        char what[80];
        double e32 = rel_l2(fy.down(), want), e16 = rel_l2(to_float(hy.down()), want);
        snprintf(what, sizeof what, "unary_f32 op %d", op);
        report(what, e32 < 1e-6, e32, 1e-6);
        snprintf(what, sizeof what, "unary_f16 op %d", op);
        report(what, e16 < 1e-3, e16, 1e-3);
    }
    // Broadcast [4, 1, 5] op [3, 1] -> [4, 3, 5].
    struct BroadcastArgs {
        int rank;
        i64 dims[8], a_strides[8], b_strides[8];
        u64 n;
    } ba = {};
    ba.rank = 3;
    i64 dims[3] = {4, 3, 5};
    i64 as[3] = {5, 0, 1}, bs[3] = {0, 1, 0};
    for (int d = 0; d < 3; ++d) { ba.dims[d] = dims[d]; ba.a_strides[d] = as[d]; ba.b_strides[d] = bs[d]; }
    ba.n = 60;
    std::vector<float> a = randn(20, 41), b = randn(3, 42, 1.0, 2.0);
    for (int op = 0; op < 6; ++op) {
        std::vector<double> want(60);
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 3; ++j)
                for (int k = 0; k < 5; ++k) {
                    double u = a[i * 5 + k], v = b[j];
                    double r = op == 0 ? u + v : op == 1 ? u - v : op == 2 ? u * v : op == 3 ? u / v
                             : op == 4 ? std::max(u, v) : std::min(u, v);
                    want[(i * 3 + j) * 5 + k] = r;
                }
        Buf<float> da(a), db(b), dy(60);
        void* args[] = {&da.p, &db.p, &dy.p, &ba, &op};
        launch("binary_f32", 1, 1, 64, args);
        char what[80];
        snprintf(what, sizeof what, "binary_f32 broadcast op %d", op);
        double e = rel_l2(dy.down(), want);
        report(what, e < 1e-6, e, 1e-6);
    }
    {
        std::vector<float> a2 = rounded(randn(n, 43)), b2 = rounded(randn(n, 44));
        BroadcastArgs flat = {};
        flat.rank = 1; flat.dims[0] = (i64)n; flat.a_strides[0] = 1; flat.b_strides[0] = 1; flat.n = n;
        int op = 2;
        Buf<__half> da(to_half(a2)), db(to_half(b2)), dy(n);
        void* args[] = {&da.p, &db.p, &dy.p, &flat, &op};
        launch("binary_f16", 128, 1, 256, args);
        std::vector<double> want(n);
        for (u64 i = 0; i < n; ++i) want[i] = (double)a2[i] * b2[i];
        double e = rel_l2(to_float(dy.down()), want);
        report("binary_f16 same-shape mul", e < 1e-3, e, 1e-3);
    }
    {  // lincomb_f32 is bit-exact with the CPU's a*x + b*z.
        std::vector<float> a2 = randn(n, 45), b2 = randn(n, 46);
        float al = 0.93f, be = 0.37f;
        Buf<float> da(a2), db(b2), dy(n);
        void* args[] = {&da.p, &db.p, &dy.p, (void*)&n, &al, &be};
        launch("lincomb_f32", 64, 1, 256, args);
        std::vector<float> got = dy.down();
        u64 bad = 0;
        for (u64 i = 0; i < n; ++i) {
            volatile float p = al * a2[i], q = be * b2[i];
            float r = p + q;
            if (memcmp(&r, &got[i], 4)) bad++;
        }
        report("lincomb_f32 bit-exact", bad == 0, (double)bad, 0);
        Buf<__half> ha(to_half(a2)), hb(to_half(b2)), hy(n);
        void* a16[] = {&ha.p, &hb.p, &hy.p, (void*)&n, &al, &be};
        launch("lincomb_f16", 64, 1, 256, a16);
        std::vector<double> want(n);
        std::vector<float> ra = rounded(a2), rb = rounded(b2);
        for (u64 i = 0; i < n; ++i) want[i] = al * (double)ra[i] + be * (double)rb[i];
        double e = rel_l2(to_float(hy.down()), want);
        report("lincomb_f16", e < 1e-3, e, 1e-3);
    }
    {  // casts and fills
        std::vector<float> v = randn(n, 47);
        Buf<float> f(v), back(n);
        Buf<__half> h(n);
        void* a1[] = {&f.p, &h.p, (void*)&n};
        launch("cast_f32_to_f16", 64, 1, 256, a1);
        void* a2[] = {&h.p, &back.p, (void*)&n};
        launch("cast_f16_to_f32", 64, 1, 256, a2);
        std::vector<float> got = back.down(), want = rounded(v);
        report("cast f32->f16->f32 exact", memcmp(got.data(), want.data(), n * 4) == 0, 0, 0);
        float val = 1.5f;
        Buf<__half> fh(n);
        void* a3[] = {&fh.p, (void*)&n, &val};
        launch("fill_f16", 64, 1, 256, a3);
        std::vector<float> fv = to_float(fh.down());
        report("fill_f16", std::all_of(fv.begin(), fv.end(), [](float q) { return q == 1.5f; }), 0, 0);
        Buf<float> ff(n);
        void* a4[] = {&ff.p, (void*)&n, &val};
        launch("fill_f32", 64, 1, 256, a4);
        std::vector<float> fv2 = ff.down();
        report("fill_f32", std::all_of(fv2.begin(), fv2.end(), [](float q) { return q == 1.5f; }), 0, 0);
    }
}

// ---------------------------------------------------------------- layout
static void test_layout() {
    struct GatherArgs {
        int rank;
        i64 out_dims[8], src_strides[8], src_offset;
        u64 n;
    };
    // x [2, 3, 4] permuted (2, 0, 1) -> [4, 2, 3], then a flip of axis 2 of x.
    std::vector<unsigned> x(24);
    for (unsigned i = 0; i < 24; ++i) x[i] = 1000 + i;
    Buf<unsigned> dx(x), dy(24);
    GatherArgs g = {};
    g.rank = 3; g.out_dims[0] = 4; g.out_dims[1] = 2; g.out_dims[2] = 3;
    g.src_strides[0] = 1; g.src_strides[1] = 12; g.src_strides[2] = 4; g.n = 24;
    void* args[] = {&dx.p, &dy.p, &g};
    launch("gather_strided_u32", 1, 1, 32, args);
    std::vector<unsigned> y = dy.down();
    bool ok = true;
    for (int i = 0; i < 4; ++i)
        for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 3; ++b) ok &= y[(i * 2 + a) * 3 + b] == x[a * 12 + b * 4 + i];
    report("gather_strided_u32 permute", ok, 0, 0);
    GatherArgs f = {};
    f.rank = 3; f.out_dims[0] = 2; f.out_dims[1] = 3; f.out_dims[2] = 4;
    f.src_strides[0] = 12; f.src_strides[1] = 4; f.src_strides[2] = -1; f.src_offset = 3; f.n = 24;
    std::vector<unsigned short> xs(24);
    for (int i = 0; i < 24; ++i) xs[i] = (unsigned short)(7 * i);
    Buf<unsigned short> sx(xs), sy(24);
    void* fa[] = {&sx.p, &sy.p, &f};
    launch("gather_strided_u16", 1, 1, 32, fa);
    std::vector<unsigned short> fy = sy.down();
    ok = true;
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 3; ++b)
            for (int c = 0; c < 4; ++c) ok &= fy[(a * 3 + b) * 4 + c] == xs[a * 12 + b * 4 + 3 - c];
    report("gather_strided_u16 flip", ok, 0, 0);
    // concat of [2, 3, 5] and [2, 4, 5] along axis 1 -> [2, 7, 5].
    std::vector<unsigned short> p1(30), p2(40);
    for (int i = 0; i < 30; ++i) p1[i] = (unsigned short)i;
    for (int i = 0; i < 40; ++i) p2[i] = (unsigned short)(100 + i);
    Buf<unsigned short> d1(p1), d2(p2), dc(70);
    u64 outer = 2, row1 = 15, row2 = 20, dst_stride = 35, off1 = 0, off2 = 15;
    void* c1[] = {&d1.p, &dc.p, &outer, &row1, &row1, &dst_stride, &off1};
    launch("copy_rows_u16", 1, 2, 32, c1);
    void* c2[] = {&d2.p, &dc.p, &outer, &row2, &row2, &dst_stride, &off2};
    launch("copy_rows_u16", 1, 2, 32, c2);
    std::vector<unsigned short> cat = dc.down();
    ok = true;
    for (int b = 0; b < 2; ++b)
        for (int i = 0; i < 35; ++i) ok &= cat[b * 35 + i] == (i < 15 ? p1[b * 15 + i] : p2[b * 20 + i - 15]);
    report("copy_rows_u16 concat", ok, 0, 0);
    // Embedding look-up with one out-of-range id.
    std::vector<unsigned> table(5 * 3);
    for (int i = 0; i < 15; ++i) table[i] = 10 * i;
    std::vector<i64> ids = {4, 0, 9, 2};
    Buf<unsigned> dt(table), de(12);
    Buf<i64> di(ids);
    u64 n_ids = 4, cols = 3, rows = 5;
    void* ia[] = {&dt.p, &di.p, &de.p, &n_ids, &cols, &rows};
    launch("index_rows_u32", 1, 4, 32, ia);
    std::vector<unsigned> e = de.down();
    ok = true;
    for (int j = 0; j < 4; ++j)
        for (int c = 0; c < 3; ++c) ok &= e[j * 3 + c] == (ids[j] < 5 ? table[ids[j] * 3 + c] : 0xffffffffu);
    report("index_rows_u32 (bad id -> NaN row)", ok, 0, 0);
}

// ---------------------------------------------------------------- embedding, RePaint
static void test_embedding() {
    std::vector<float> t = {0.0f, 1.0f, 17.0f, 299.0f};
    i64 len = 4, dim = 72;
    const i64 half = dim / 2;
    std::vector<double> want(len * dim);
    const float e = std::log(10000.0f) / ((float)half - 1.0f);
    for (i64 r = 0; r < len; ++r)
        for (i64 i = 0; i < half; ++i) {
            const float f = std::exp((float)i * -e);
            const float a = t[r] * f;
            want[r * dim + i] = std::sin((double)a);
            want[r * dim + half + i] = std::cos((double)a);
        }
    Buf<float> dt(t), y32(len * dim);
    Buf<__half> y16(len * dim);
    void* a32[] = {&dt.p, &y32.p, &len, &dim};
    launch("sinusoidal_f32", 1, 1, 128, a32);
    void* a16[] = {&dt.p, &y16.p, &len, &dim};
    launch("sinusoidal_f16", 1, 1, 128, a16);
    double e32 = rel_l2(y32.down(), want), e16 = rel_l2(to_float(y16.down()), want);
    report("sinusoidal_f32", e32 < 1e-5, e32, 1e-5);
    report("sinusoidal_f16", e16 < 1e-3, e16, 1e-3);
}

static void test_repaint() {
    const u64 n = 65537;
    std::vector<float> x = randn(n, 50), gt = randn(n, 51), z = randn(n, 52), eps = randn(n, 53, 2.0), known(n);
    for (u64 i = 0; i < n; ++i) known[i] = (i % 3 == 0) ? 1.0f : 0.0f;
    float a = 0.81f, b = 0.5863f, r = 1.7f, rm1 = 1.3f, c1 = 0.21f, c2 = 0.77f, sigma = 0.05f;
    Buf<float> dx(x), dg(gt), dk(known), dz(z), de(eps), y1(n), y2(n);
    void* k1[] = {&dx.p, &dg.p, &dk.p, &dz.p, &y1.p, (void*)&n, &a, &b};
    launch("repaint_known_blend_f32", 64, 1, 256, k1);
    void* k2[] = {&dx.p, &de.p, &dz.p, &y2.p, (void*)&n, &r, &rm1, &c1, &c2, &sigma};
    launch("repaint_ancestral_f32", 64, 1, 256, k2);
    std::vector<float> g1 = y1.down(), g2 = y2.down();
    u64 bad1 = 0, bad2 = 0;
    for (u64 i = 0; i < n; ++i) {
        // schedule.rs renoise_known and reverse_step, with every operation rounded.
        volatile float p = a * gt[i], q = b * z[i];
        volatile float noised = p + q;
        volatile float u = known[i] * noised, w = 1.0f - known[i];
        volatile float v = w * x[i];
        float want1 = u + v;
        volatile float s1 = r * x[i], s2 = rm1 * eps[i];
        float x0 = s1 - s2;
        x0 = x0 < -1.0f ? -1.0f : (x0 > 1.0f ? 1.0f : x0);
        volatile float m1 = c1 * x0, m2 = c2 * x[i];
        volatile float mean = m1 + m2;
        volatile float sz = sigma * z[i];
        float want2 = mean + sz;
        bad1 += memcmp(&want1, &g1[i], 4) != 0;
        bad2 += memcmp(&want2, &g2[i], 4) != 0;
    }
    report("repaint_known_blend_f32 bit-exact", bad1 == 0, (double)bad1, 0);
    report("repaint_ancestral_f32 bit-exact", bad2 == 0, (double)bad2, 0);
}

// ---------------------------------------------------------------- Philox
// Host port of src/backend/philox.rs (volatile keeps every rounding).
static void philox_host(uint32_t c[4], uint32_t k0, uint32_t k1, uint32_t out[4]) {
    uint32_t x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        uint64_t p0 = (uint64_t)0xD2511F53u * x0, p1 = (uint64_t)0xCD9E8D57u * x2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, n1 = (uint32_t)p1, n2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1,
                 n3 = (uint32_t)p0;
        x0 = n0; x1 = n1; x2 = n2; x3 = n3;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}
static float fb(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static float ln_host(float x) {
    uint32_t bits; memcpy(&bits, &x, 4);
    int e = (int)((bits >> 23) & 0xff) - 127;
    float m = fb((bits & 0x7fffff) | 0x3f800000);
    if (m > fb(0x3fb504f3)) { m = m * 0.5f; e += 1; }
    volatile float num = m - 1.0f, den = m + 1.0f;
    volatile float s = num / den;
    volatile float z = s * s;
    volatile float p = fb(0x3de38e39), t;
    t = z * p; p = fb(0x3e124925) + t;
    t = z * p; p = fb(0x3e4ccccd) + t;
    t = z * p; p = fb(0x3eaaaaab) + t;
    volatile float s2 = s + s;
    volatile float q = s2 * z;
    volatile float q2 = q * p;
    volatile float lnm = s2 + q2;
    float ef = (float)e;
    volatile float lo = ef * fb(0xb95e8083);
    volatile float acc = lo + lnm;
    volatile float hi = ef * fb(0x3f318000);
    return acc + hi;
}
static void cossin_host(uint32_t k, float* co, float* si) {
    k &= 0xffffff;
    uint32_t j = (k + (1u << 21)) >> 22;
    int r = (int)k - (int)(j << 22);
    volatile float x = (float)r * fb(0x34c90fdb);
    volatile float z = x * x, t;
    volatile float p = fb(0x3638ef1d);
    t = z * p; p = fb(0xb9500d01) + t;
    t = z * p; p = fb(0x3c088889) + t;
    t = z * p; p = fb(0xbe2aaaab) + t;
    volatile float xz = x * z;
    volatile float xzp = xz * p;
    float s = x + xzp;
    volatile float q = fb(0xb493f27e);
    t = z * q; q = fb(0x37d00d01) + t;
    t = z * q; q = fb(0xbab60b61) + t;
    t = z * q; q = fb(0x3d2aaaab) + t;
    t = z * q; q = fb(0xbf000000) + t;
    t = z * q;
    float c = 1.0f + t;
    switch (j & 3) {
        case 0: *co = c; *si = s; break;
        case 1: *co = -s; *si = c; break;
        case 2: *co = -c; *si = -s; break;
        default: *co = s; *si = -c; break;
    }
}
static void normals_host(uint64_t seed, uint32_t stream, uint32_t step, uint32_t item, uint32_t blk, float v[4]) {
    uint32_t c[4] = {blk, item, step, stream}, x[4];
    philox_host(c, (uint32_t)seed, (uint32_t)(seed >> 32), x);
    for (int h = 0; h < 2; ++h) {
        volatile float u1 = (float)((x[2 * h] >> 8) + 1) * fb(0x33800000);
        volatile float t = -2.0f * ln_host(u1);
        float r = t > 0 ? std::sqrt((float)t) : 0.0f;
        float co, si;
        cossin_host(x[2 * h + 1] >> 8, &co, &si);
        volatile float a = r * co, b = r * si;
        v[2 * h] = a;
        v[2 * h + 1] = b;
    }
}

static void test_philox(const char* dump_dir) {
    // Golden bits from src/backend/philox.rs (GOLDEN_SEED42_ITEM3_STREAM1_STEP7).
    static const uint32_t golden[8] = {0xbe2c775c, 0xbf8c50a9, 0x3fdf0845, 0xbfad52d0,
                                       0x3dd11ade, 0x3e8162ee, 0x3d9092a7, 0xbf4d1128};
    std::vector<unsigned> items = {3, 9, 0xffffffffu};
    u64 n_items = items.size(), per_item = 1000003, seed = 42;
    unsigned stream = 1, step = 7;
    Buf<unsigned> di(items);
    Buf<float> dy(n_items * per_item);
    void* args[] = {&dy.p, &di.p, &n_items, &per_item, &seed, &stream, &step};
    launch("philox_normal_f32", 1024, (unsigned)n_items, 256, args);
    std::vector<float> y = dy.down();
    bool gold = true;
    for (int i = 0; i < 8; ++i) {
        uint32_t b; memcpy(&b, &y[i], 4);
        gold &= b == golden[i];
    }
    report("philox_normal_f32 golden bits (seed 42 item 3 stream 1 step 7)", gold, 0, 0);
    u64 bad = 0;
    double sum = 0, sq = 0;
    for (u64 i = 0; i < n_items; ++i)
        for (u64 e = 0; e < per_item; e += 4) {
            float v[4];
            normals_host(seed, stream, step, items[i], (uint32_t)(e / 4), v);
            for (int l = 0; l < 4 && e + l < per_item; ++l) {
                const float g = y[i * per_item + e + l];
                bad += memcmp(&g, &v[l], 4) != 0;
                sum += g; sq += (double)g * g;
            }
        }
    const double cnt = (double)(n_items * per_item), mean = sum / cnt, var = sq / cnt - mean * mean;
    report("philox_normal_f32 == host port, 3M values bit-exact", bad == 0, (double)bad, 0);
    report("philox_normal_f32 mean/variance", std::fabs(mean) < 3e-3 && std::fabs(var - 1) < 5e-3,
           std::fabs(mean) + std::fabs(var - 1), 8e-3);
    if (dump_dir) {
        std::string path = std::string(dump_dir) + "/philox_seed42_item3_stream1_step7.f32";
        FILE* f = fopen(path.c_str(), "wb");
        if (f) { fwrite(y.data(), 4, 4096, f); fclose(f); }
    }
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fatbin dir> [dump dir]\n", argv[0]);
        return 2;
    }
    CK(cuInit(0));
    CUdevice dev;
    CK(cuDeviceGet(&dev, 0));
    char name[256];
    CK(cuDeviceGetName(name, sizeof name, dev));
    int drv = 0, major = 0, minor = 0;
    cuDriverGetVersion(&drv);
    cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    printf("device: %s (sm_%d%d), driver CUDA %d.%d\n", name, major, minor, drv / 1000, (drv % 1000) / 10);
    CUcontext ctx;
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
    const char* families[] = {"elementwise", "layout", "norm", "softmax", "embedding", "repaint", "philox", "gemm"};
    for (const char* fam : families) {
        std::string path = std::string(argv[1]) + "/" + fam + ".fatbin";
        FILE* f = fopen(path.c_str(), "rb");
        if (!f) { fprintf(stderr, "missing %s\n", path.c_str()); return 2; }
        std::vector<unsigned long long> img(1 << 21);
        size_t got = fread(img.data(), 1, img.size() * 8, f);
        fclose(f);
        img.resize(got / 8 + 1);
        CUmodule m;
        CK(cuModuleLoadData(&m, img.data()));
        g_modules.push_back(m);
    }
    test_philox(argc > 2 ? argv[2] : nullptr);
    test_repaint();
    test_elementwise();
    test_layout();
    test_embedding();
    test_softmax<true>(300, 5184, 1);
    test_softmax<false>(7, 1000, 1);
    test_softmax<true>(2, 4, 5184);
    test_softmax<false>(3, 17, 333);
    test_layer_norm(2, 72, 5184);
    test_layer_norm(1, 5, 77);
    test_group_norm(2, 72, 5184, 8, true, true, true, 1, 0, "silu+mod+res");
    test_group_norm(2, 72, 5184, 8, true, false, false, 0, 0, "plain");
    test_group_norm(2, 32, 4096, 32, true, false, false, 2, 0, "instance+leaky");
    test_group_norm(1, 2, 1 << 20, 2, true, false, false, 2, 64, "instance big multi-block");
    test_group_norm(2, 72, 5184, 8, true, true, true, 1, 7, "silu+mod+res multi-block");
    test_group_norm(3, 6, 101, 3, false, false, true, 0, 5, "no affine, odd");
    for (const char* k : {"gemm_f16", "gemm_f16_64x64"}) {
        test_gemm(k, 72, 5184, 72, 0, 0, 2, 1, true, 0, true, "conv1x1+bias+res");
        test_gemm(k, 300, 288, 72, 0, 1, 1, 2, false, 0, false, "linear");
        test_gemm(k, 37, 53, 19, 0, 0, 1, 0, false, 1, false, "odd misaligned nn");
        test_gemm(k, 37, 53, 19, 1, 1, 3, 2, true, 1, false, "odd misaligned tt");
        test_gemm(k, 130, 70, 1000, 1, 0, 2, 1, false, 0, false, "tn long K");
        test_gemm(k, 64, 64, 0, 0, 1, 1, 2, true, 0, false, "K=0");
        test_gemm(k, 200, 150, 33, 0, 1, 2, 0, true, 3, false, "nt misaligned");
    }
    bench_gemm("gemm_f16", 4096, 4096, 4096, 0, 1);
    bench_gemm("gemm_f16", 4096, 4096, 4096, 0, 0);
    bench_gemm("gemm_f16", 72, 5184 * 8, 288, 0, 0);
    bench_gemm("gemm_f16_64x64", 72, 5184 * 8, 288, 0, 0);
    printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
    return g_failures ? 1 : 0;
}

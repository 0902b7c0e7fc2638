// Helpers shared by the host checks of kernels/tests (conv_tile_host.cu,
// conv_wgrad_host.cu): output sizes, small-integer data whose sums are
// exact in any order, and fp16 bit conversions.
#pragma once

#include <cstring>

#include <cuda_fp16.h>

// Output size along one axis, or 0 when the geometry gives none.
inline int out_size(int n, int k, int s, int p, bool transposed) {
    if (transposed) return (n - 1) * s + k - 2 * p;
    const int padded = n + 2 * p;
    return padded >= k ? (padded - k) / s + 1 : 0;
}

// A seeded stream of integers in −2..2 (an LCG).
struct SmallInts {
    unsigned state;
    int next() {
        state = state * 1664525u + 1013904223u;
        return (int)((state >> 16) % 5u) - 2;
    }
};

inline unsigned short half_bits(float v) {
    const __half h = __float2half_rn(v);
    unsigned short b;
    std::memcpy(&b, &h, sizeof b);
    return b;
}

inline float half_value(unsigned short bits) {
    __half h;
    std::memcpy(&h, &bits, sizeof h);
    return __half2float(h);
}

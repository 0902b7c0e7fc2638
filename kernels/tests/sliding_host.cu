// Host check of the sliding-window sum (sliding.cuh), for machines without
// a GPU: every element of the sum is computed by sliding_sum_at, the very
// code of sliding_accumulate_f16's threads, and compared bit for bit with
// an independent window-by-window accumulation (nnU-Net's loop: for each
// window, `sum[window] += prediction · gaussian`, rounded to f16), over
// 2-D and 3-D layouts with overlapping windows, several batches in turn.
//
//   nvcc -std=c++17 -Ikernels kernels/tests/sliding_host.cu -o sliding_host && ./sliding_host
//
// Exit status 0 when every case matches; the first mismatch is printed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "sliding.cuh"

namespace {

unsigned lcg = 2024u;
float uniform() {
    lcg = lcg * 1664525u + 1013904223u;
    return (float)(lcg >> 8) / 16777216.0f;
}

unsigned short bits(__half h) {
    unsigned short b;
    std::memcpy(&b, &h, sizeof b);
    return b;
}

// Window starts along one axis as nnU-Net lays them out (evenly spread,
// first at 0, last at size − patch; one-voxel patches repeat positions,
// which the order check welcomes).
std::vector<i64> starts_1d(i64 size, i64 patch, double step) {
    if (size <= patch) return {0};
    const i64 steps = (i64)std::ceil((double)(size - patch) / ((double)patch * step)) + 1;
    std::vector<i64> out;
    for (i64 i = 0; i < steps; ++i) out.push_back((i64)((double)(size - patch) * i / (steps - 1) + 0.5));
    return out;
}

struct Case {
    const char* name;
    i64 classes, grid[3], extent[3];
    int batch;  // windows per launch
};

bool run(const Case& k) {
    const i64 voxels = k.grid[0] * k.grid[1] * k.grid[2];
    const i64 patch = k.extent[0] * k.extent[1] * k.extent[2];
    std::vector<i64> starts;  // flattened (z, y, x)
    for (i64 z : starts_1d(k.grid[0], k.extent[0], 0.5))
        for (i64 y : starts_1d(k.grid[1], k.extent[1], 0.5))
            for (i64 x : starts_1d(k.grid[2], k.extent[2], 0.5)) {
                starts.push_back(z);
                starts.push_back(y);
                starts.push_back(x);
            }
    const i64 windows = (i64)starts.size() / 3;
    std::vector<__half> gaussian(patch);
    for (auto& g : gaussian) g = __float2half_rn(10.0f * uniform());
    std::vector<__half> pred(windows * k.classes * patch);
    for (auto& p : pred) p = __float2half_rn(40.0f * uniform() - 20.0f);

    // The reference: window by window, voxel by voxel.
    std::vector<__half> want(k.classes * voxels, __float2half_rn(0.0f));
    for (i64 w = 0; w < windows; ++w)
        for (i64 c = 0; c < k.classes; ++c)
            for (i64 oz = 0; oz < k.extent[0]; ++oz)
                for (i64 oy = 0; oy < k.extent[1]; ++oy)
                    for (i64 ox = 0; ox < k.extent[2]; ++ox) {
                        const i64 off = (oz * k.extent[1] + oy) * k.extent[2] + ox;
                        const i64 dst = c * voxels + ((starts[3 * w] + oz) * k.grid[1] + starts[3 * w + 1] + oy) *
                                                         k.grid[2] +
                                        starts[3 * w + 2] + ox;
                        const float product = __half2float(pred[(w * k.classes + c) * patch + off]) *
                                              __half2float(gaussian[off]);
                        want[dst] = __float2half_rn(__half2float(want[dst]) + product);
                    }

    // The kernel's code: batches of `k.batch` windows, every element by
    // sliding_sum_at from the previous batch's sum.
    std::vector<__half> sum(k.classes * voxels, __float2half_rn(0.0f));
    for (i64 first = 0; first < windows; first += k.batch) {
        SlidingArgs a{};
        a.classes = k.classes;
        for (int d = 0; d < 3; ++d) {
            a.grid[d] = k.grid[d];
            a.extent[d] = k.extent[d];
            a.lo[d] = k.grid[d];
            a.hi[d] = 0;
        }
        a.windows = std::min<i64>(k.batch, windows - first);
        for (i64 w = 0; w < a.windows; ++w)
            for (int d = 0; d < 3; ++d) {
                const i64 s = starts[3 * (first + w) + d];
                a.starts[w][d] = s;
                a.lo[d] = std::min(a.lo[d], s);
                a.hi[d] = std::max(a.hi[d], s + k.extent[d]);
            }
        const __half* batch_pred = pred.data() + first * k.classes * patch;
        std::vector<__half> next(sum.size());
        for (i64 i = 0; i < (i64)sum.size(); ++i) {
            const i64 x = i % k.grid[2], y = (i / k.grid[2]) % k.grid[1];
            const i64 z = (i / (k.grid[2] * k.grid[1])) % k.grid[0], c = i / voxels;
            next[i] = sliding_sum_at(batch_pred, gaussian.data(), sum[i], a, c, z, y, x);
        }
        sum.swap(next);
    }
    for (i64 i = 0; i < (i64)sum.size(); ++i)
        if (bits(sum[i]) != bits(want[i])) {
            std::printf("FAIL %s: element %lld is %g, window by window %g\n", k.name, (long long)i,
                        __half2float(sum[i]), __half2float(want[i]));
            return false;
        }
    std::printf("ok   %s: %lld windows in batches of %d, %lld elements\n", k.name, (long long)windows, k.batch,
                (long long)sum.size());
    return true;
}

}  // namespace

int main() {
    const Case cases[] = {
        {"2-D slices, one window a launch", 3, {3, 40, 36}, {1, 16, 16}, 1},
        {"2-D slices, batches of 7", 3, {3, 40, 36}, {1, 16, 16}, 7},
        {"3-D, batches of 4", 4, {12, 20, 18}, {6, 8, 8}, 4},
        {"3-D, all windows in one launch", 2, {9, 14, 11}, {4, 6, 5}, 64},
        {"one window covers the grid", 2, {1, 8, 8}, {1, 8, 8}, 3},
    };
    bool ok = true;
    for (const Case& c : cases) ok = run(c) && ok;
    return ok ? 0 : 1;
}

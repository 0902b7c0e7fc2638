// Device-side half of the CUDA emulator (kernels/emulator/README.md): the
// CUDA C++ that the kernels of kernels/*.cu use, made host C++ so that the
// very same sources run on a CPU. build.sh force-includes this header
// (g++ -include) before each kernel family.
//
// - Qualifiers (__global__, __device__, __forceinline__, __launch_bounds__)
//   vanish; a kernel becomes an ordinary extern "C" function.
// - __shared__ becomes a function-local `static thread_local`: one block
//   runs at a time on an emulator worker thread, so every CUDA thread of the
//   block (a fiber on that worker) sees the same array, and the next block
//   on that worker reuses it (shared memory is not zeroed on a GPU either).
// - threadIdx/blockIdx/blockDim/gridDim are per-worker variables the fiber
//   scheduler sets before it resumes a fiber.
// - __syncthreads and the warp collectives (__shfl_xor_sync here; ldmatrix,
//   mma.sync and cp.async in gemm.cu under CLAIM_CUDA_EMULATOR) are calls
//   into the scheduler (emu_runtime.cpp).
// - The correctly rounded intrinsics (__fadd_rn, …) are plain IEEE
//   operations: build.sh compiles with -ffp-contract=off, so nothing is
//   fused that the kernel did not fuse (fmaf stays fused).
#pragma once

#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#undef __restrict__
#undef __align__

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#ifdef CLAIM_EMU_LIST_KERNELS
// build.sh's listing pass reads each kernel's bound from this marker.
#define __launch_bounds__(...) claim_emu_launch_bounds(__VA_ARGS__)
#else
#define __launch_bounds__(...)
#endif
#define __restrict__ __restrict
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

#define CLAIM_CUDA_EMULATOR 1

// The launch geometry of the fiber now running (set by the scheduler).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;

extern "C" {
// Block barrier: returns when every live thread of the block has arrived.
void claim_emu_syncthreads();
// Warp shuffle: each lane of the calling warp posts `bytes` bytes from
// `mine`; when every live lane has posted, `out` receives lane
// `source_lane`'s post and the call returns. `mask` must be the full warp
// (the kernels only use full-warp collectives).
void claim_emu_warp_shuffle(unsigned mask, const void* mine, void* out, size_t bytes, unsigned source_lane);
// The PTX instructions gemm.cu issues, with their PTX semantics:
// cp.async.cg 16 bytes (copied when a later wait_group covers its group;
// both addresses must be 16-byte aligned), commit_group, wait_group N,
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 and
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (d += a·b).
void claim_emu_cp_async16(void* dst, const void* src);
void claim_emu_cp_async_commit();
void claim_emu_cp_async_wait(int newest_pending);
void claim_emu_ldmatrix_x4(unsigned* r, const void* row_address, bool transposed);
void claim_emu_mma_m16n8k16(float* d, const unsigned* a, unsigned b0, unsigned b1);
// Records a failure of the emulated kernel (bad collective, out-of-range
// use); the launch then returns CUDA_ERROR_LAUNCH_FAILED.
void claim_emu_fail(const char* what);
}

inline void __syncthreads() { claim_emu_syncthreads(); }

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    T out;
    // Lanes are numbered along the linear thread index, as on the GPU.
    const unsigned lane = (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u;
    claim_emu_warp_shuffle(mask, &v, &out, sizeof(T), (lane ^ (unsigned)lane_mask) & 31u);
    return out;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }

// The bit reinterpretations, one memcpy each.
template <typename To, typename From>
inline To claim_emu_bits_as(From v) {
    static_assert(sizeof(To) == sizeof(From), "same width");
    To out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}
inline float __int_as_float(int v) { return claim_emu_bits_as<float>(v); }
inline float __uint_as_float(unsigned v) { return claim_emu_bits_as<float>(v); }
inline unsigned __float_as_uint(float v) { return claim_emu_bits_as<unsigned>(v); }
inline int __float_as_int(float v) { return claim_emu_bits_as<int>(v); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * (unsigned long long)b) >> 32);
}

// A generic address stands for itself: shared arrays are host arrays.
inline size_t __cvta_generic_to_shared(const void* p) { return (size_t)p; }

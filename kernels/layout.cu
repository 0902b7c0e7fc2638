// Layout kernels: strided gathers (permute, narrow, flip), row copies
// (concatenation) and row look-ups (embedding tables). They move bits
// only, so one u16 variant serves f16 and one u32 variant serves f32.
#include "common.cuh"

// out[i] = x[src_offset + Σ_d idx_d(i)·src_strides[d]], idx_d the
// row-major multi-index of i in out_dims. Signed strides: a permutation
// permutes the input's strides (cpu::elementwise::permute), a narrow keeps
// them and moves src_offset, a flip negates one stride and starts at the
// last element of that axis.
struct GatherArgs {
    int rank;  // 1..8
    i64 out_dims[8];
    i64 src_strides[8];
    i64 src_offset;
    u64 n;  // product of out_dims
};

template <typename U>
__device__ __forceinline__ void gather_body(const U* x, U* y, const GatherArgs& args) {
    const int rank = args.rank < 1 ? 1 : (args.rank > 8 ? 8 : args.rank);
    GRID_STRIDE_LOOP(i, args.n) {
        u64 rem = i;
        i64 off = args.src_offset;
        for (int d = rank - 1; d >= 0; --d) {
            const u64 dim = (u64)args.out_dims[d];
            const u64 idx = dim ? rem % dim : 0;
            rem = dim ? rem / dim : 0;
            off += (i64)idx * args.src_strides[d];
        }
        y[i] = x[off];
    }
}

extern "C" __global__ void gather_strided_u16(const unsigned short* x, unsigned short* y, GatherArgs args) {
    gather_body(x, y, args);
}
extern "C" __global__ void gather_strided_u32(const unsigned int* x, unsigned int* y, GatherArgs args) {
    gather_body(x, y, args);
}

// dst[o·dst_stride + dst_offset + i] = src[o·src_stride + i] for o < outer,
// i < row: one part of a concatenation (Tensor::cat writes each input's
// rows at its offset inside the output's rows). Rows run over grid.y,
// elements of a row over grid.x, so no index division is needed.
template <typename U>
__device__ __forceinline__ void copy_rows_body(const U* src, U* dst, u64 outer, u64 row, u64 src_stride,
                                               u64 dst_stride, u64 dst_offset) {
    for (u64 o = blockIdx.y; o < outer; o += gridDim.y) {
        const U* s = src + o * src_stride;
        U* d = dst + o * dst_stride + dst_offset;
        GRID_STRIDE_LOOP(i, row) { d[i] = s[i]; }
    }
}

extern "C" __global__ void copy_rows_u16(const unsigned short* src, unsigned short* dst, u64 outer, u64 row,
                                         u64 src_stride, u64 dst_stride, u64 dst_offset) {
    copy_rows_body(src, dst, outer, row, src_stride, dst_stride, dst_offset);
}
extern "C" __global__ void copy_rows_u32(const unsigned int* src, unsigned int* dst, u64 outer, u64 row,
                                         u64 src_stride, u64 dst_stride, u64 dst_offset) {
    copy_rows_body(src, dst, outer, row, src_stride, dst_stride, dst_offset);
}

// y[j, :] = table[ids[j], :] (Tensor::index_rows, PyTorch nn.Embedding).
// The CPU op rejects an id outside 0..table_rows; a kernel cannot fail, so
// such a row is written as all-ones bits (NaN in f16 and f32) and the host
// validates ids before the launch.
template <typename U>
__device__ __forceinline__ void index_rows_body(const U* table, const i64* ids, U* y, u64 n_ids, u64 cols,
                                                u64 table_rows) {
    for (u64 j = blockIdx.y; j < n_ids; j += gridDim.y) {
        const i64 id = ids[j];
        const bool ok = id >= 0 && (u64)id < table_rows;
        const U* s = table + (ok ? (u64)id : 0) * cols;
        U* d = y + j * cols;
        GRID_STRIDE_LOOP(i, cols) { d[i] = ok ? s[i] : (U)~(U)0; }
    }
}

extern "C" __global__ void index_rows_u16(const unsigned short* table, const long long* ids, unsigned short* y,
                                          u64 n_ids, u64 cols, u64 table_rows) {
    index_rows_body(table, ids, y, n_ids, cols, table_rows);
}
extern "C" __global__ void index_rows_u32(const unsigned int* table, const long long* ids, unsigned int* y,
                                          u64 n_ids, u64 cols, u64 table_rows) {
    index_rows_body(table, ids, y, n_ids, cols, table_rows);
}

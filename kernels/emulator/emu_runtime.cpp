// The emulator's execution of a grid: blocks spread over a pool of worker
// threads; inside a block every CUDA thread is a fiber on one
// worker, run in thread order until it reaches a barrier or a warp
// collective, so __syncthreads, shuffles, ldmatrix and mma.sync see the
// block exactly as the hardware's rules allow and a kernel that breaks
// them (a collective with lanes missing, a barrier not every thread
// reaches) is reported instead of hanging.
#include <ucontext.h>

#include <cstdint>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cuda_fp16.h>
#include <vector_types.h>

#include "emu_runtime.h"

// Fibers switch with a few instructions on x86-64 (swapcontext's signal
// mask system call per switch doubled the emulator's run time) and with
// ucontext elsewhere and under AddressSanitizer, which follows
// swapcontext but not hand-made stack switches.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define CLAIM_EMU_FAST_SWITCH 1
// claim_emu_switch(save, next): saves the callee-saved registers on the
// current stack, stores its stack pointer in *save, and resumes the stack
// `next` saved the same way. MXCSR and the x87 control word are left
// alone: every fiber of a worker shares that thread's floating-point
// environment, which device code cannot change, and saving and restoring
// them was 88 % of each switch (measured with perf).
extern "C" void claim_emu_switch(void** save, void* next);
asm(R"(
    .text
    .globl claim_emu_switch
    .hidden claim_emu_switch
    .type claim_emu_switch,@function
claim_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size claim_emu_switch, .-claim_emu_switch
)");
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local uint3 blockDim;
thread_local uint3 gridDim;

namespace {

constexpr size_t kWarpPayload = 64;  // bytes one lane may post in a collective

struct PendingCopy {
    void* dst;
    unsigned char bytes[16];
};

enum class Wait { None, Block, Warp };

struct Fiber {
#ifdef CLAIM_EMU_FAST_SWITCH
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    std::unique_ptr<char[]> stack;
    unsigned linear = 0;  // thread index within the block
    bool done = false;
    Wait wait = Wait::None;
    unsigned long long wait_generation = 0;
    std::vector<PendingCopy> open_group;              // cp.async not yet committed
    std::vector<std::vector<PendingCopy>> committed;  // oldest first
};

struct WarpState {
    unsigned arrived = 0;
    unsigned live = 0;
    unsigned long long generation = 0;
    size_t bytes[2] = {0, 0};
    alignas(16) unsigned char posts[2][32][kWarpPayload];
};

size_t stack_bytes() {
    static const size_t bytes = [] {
        const char* v = std::getenv("CLAIM_EMU_STACK_KB");
        const long kb = v ? std::atol(v) : 0;
        return (size_t)(kb > 0 ? kb : 256) * 1024;
    }();
    return bytes;
}

// CLAIM_EMU_SCHEDULE=reverse resumes a block's threads last to first, so
// a read of shared memory that only a barrier's absence separates from
// another warp's write sees the other order too.
bool reversed_schedule() {
    static const bool reversed = [] {
        const char* v = std::getenv("CLAIM_EMU_SCHEDULE");
        return v && std::strcmp(v, "reverse") == 0;
    }();
    return reversed;
}

// One worker thread's block runner.
struct BlockRunner {
    std::vector<Fiber> fibers;
    std::vector<WarpState> warps;
#ifdef CLAIM_EMU_FAST_SWITCH
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler;
#endif
    unsigned current = 0;
    unsigned live = 0;
    unsigned block_arrived = 0;
    unsigned long long block_generation = 0;
    const ClaimEmuKernel* kernel = nullptr;
    void** params = nullptr;
    ClaimEmuDim block{1, 1, 1};
    std::string error;

    Fiber& me() { return fibers[current]; }

    void fail(const std::string& what) {
        if (error.empty()) {
            char where[160];
            const Fiber& f = fibers[current];
            std::snprintf(where, sizeof where, " (kernel %s, block (%u,%u,%u), thread %u)", kernel->name, blockIdx.x,
                          blockIdx.y, blockIdx.z, f.linear);
            error = what + where;
        }
    }

#ifdef CLAIM_EMU_FAST_SWITCH
    void yield() { claim_emu_switch(&fibers[current].sp, scheduler_sp); }
    void resume(Fiber& f) { claim_emu_switch(&scheduler_sp, f.sp); }
    // A fresh stack that "returns" into fiber_main: the six zeroed
    // registers claim_emu_switch pops under the entry address, 16-byte
    // aligned as the ABI wants at a call.
    void prepare(Fiber& f) {
        char* top = f.stack.get() + stack_bytes();
        top = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15));
        void** entry = reinterpret_cast<void**>(top - 16);
        entry[0] = reinterpret_cast<void*>(&BlockRunner::fiber_main);
        entry[1] = nullptr;
        unsigned char* frame = reinterpret_cast<unsigned char*>(entry) - 48;
        std::memset(frame, 0, 48);
        f.sp = frame;
    }
#else
    void yield() { swapcontext(&fibers[current].context, &scheduler); }
    void resume(Fiber& f) { swapcontext(&scheduler, &f.context); }
    void prepare(Fiber& f) {
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.get();
        f.context.uc_stack.ss_size = stack_bytes();
        f.context.uc_link = &scheduler;
        makecontext(&f.context, &BlockRunner::fiber_main, 0);
    }
#endif

    bool ready(const Fiber& f) const {
        switch (f.wait) {
            case Wait::None: return true;
            case Wait::Block: return block_generation != f.wait_generation;
            case Wait::Warp: return warps[f.linear / 32].generation != f.wait_generation;
        }
        return false;
    }

    static void apply(std::vector<PendingCopy>& copies) {
        for (const PendingCopy& c : copies) std::memcpy(c.dst, c.bytes, 16);
        copies.clear();
    }

    void finish_current() {
        Fiber& f = me();
        // Copies never waited for still land (the hardware completes them).
        for (auto& group : f.committed) apply(group);
        f.committed.clear();
        apply(f.open_group);
        f.done = true;
        --live;
        WarpState& w = warps[f.linear / 32];
        --w.live;
        if (w.arrived > 0 && w.arrived == w.live)
            fail("a lane exited while the rest of its warp waits in a full-warp collective");
        // Exited threads no longer take part in __syncthreads.
        if (block_arrived > 0 && block_arrived == live) {
            block_arrived = 0;
            ++block_generation;
        }
    }

    static void fiber_main();

    bool run_block(const ClaimEmuDim& idx) {
        const unsigned n = block.x * block.y * block.z;
        if (fibers.size() < n) fibers.resize(n);
        const unsigned n_warps = (n + 31) / 32;
        if (warps.size() < n_warps) warps.resize(n_warps);
        for (unsigned w = 0; w < n_warps; ++w) {
            warps[w].arrived = 0;
            warps[w].generation = 0;
            warps[w].live = (w + 1) * 32 <= n ? 32 : n - w * 32;
        }
        live = n;
        block_arrived = 0;
        block_generation = 0;
        blockIdx = uint3{idx.x, idx.y, idx.z};
        for (unsigned t = 0; t < n; ++t) {
            Fiber& f = fibers[t];
            if (!f.stack) f.stack.reset(new char[stack_bytes()]);
            f.linear = t;
            f.done = false;
            f.wait = Wait::None;
            f.open_group.clear();
            f.committed.clear();
            prepare(f);
        }
        unsigned finished = 0;
        while (finished < n && error.empty()) {
            bool progressed = false;
            for (unsigned i = 0; i < n && error.empty(); ++i) {
                const unsigned t = reversed_schedule() ? n - 1 - i : i;
                Fiber& f = fibers[t];
                if (f.done || !ready(f)) continue;
                f.wait = Wait::None;
                current = t;
                threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                resume(f);
                progressed = true;
                if (f.done) ++finished;
            }
            if (!progressed && finished < n && error.empty()) {
                unsigned at_barrier = 0, in_collective = 0;
                for (unsigned t = 0; t < n; ++t) {
                    if (fibers[t].done) continue;
                    if (fibers[t].wait == Wait::Block) ++at_barrier;
                    if (fibers[t].wait == Wait::Warp) ++in_collective;
                }
                char what[200];
                std::snprintf(what, sizeof what,
                              "deadlock: %u threads wait at __syncthreads and %u in warp collectives, %u exited",
                              at_barrier, in_collective, n - (at_barrier + in_collective));
                fail(what);
            }
        }
        return error.empty();
    }
};

thread_local BlockRunner* tls_runner = nullptr;

void BlockRunner::fiber_main() {
    BlockRunner* r = tls_runner;
    r->kernel->entry(r->params);
    r->finish_current();
#ifdef CLAIM_EMU_FAST_SWITCH
    // Never resumed again: prepare() gives the next block a fresh stack.
    r->yield();
    std::abort();
#endif
    // (ucontext) Returning resumes the scheduler through uc_link.
}

// A fixed pool of workers; one grid at a time (launches are serialised,
// as on one GPU stream).
class Pool {
public:
    static Pool& get() {
        static Pool* pool = new Pool();  // never destroyed: workers outlive static teardown
        return *pool;
    }

    bool run(const ClaimEmuKernel& kernel, ClaimEmuDim grid, ClaimEmuDim block, void** params, std::string* error) {
        std::lock_guard<std::mutex> launch(launch_mutex_);
        const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            kernel_ = &kernel;
            grid_ = grid;
            block_ = block;
            params_ = params;
            next_block_ = 0;
            total_blocks_ = blocks;
            error_.clear();
            busy_ = (unsigned)workers_.size();
            ++job_;
        }
        wake_.notify_all();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return busy_ == 0; });
        if (!error_.empty()) {
            *error = error_;
            return false;
        }
        return true;
    }

private:
    Pool() {
        unsigned n = std::thread::hardware_concurrency();
        if (const char* v = std::getenv("CLAIM_EMU_THREADS")) n = (unsigned)std::atoi(v);
        if (n == 0) n = 1;
        for (unsigned i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
        for (auto& w : workers_) w.detach();
    }

    void work() {
        BlockRunner runner;
        tls_runner = &runner;
        unsigned long long seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return job_ != seen; });
                seen = job_;
            }
            runner.kernel = kernel_;
            runner.params = params_;
            runner.block = block_;
            runner.error.clear();
            blockDim = uint3{block_.x, block_.y, block_.z};
            gridDim = uint3{grid_.x, grid_.y, grid_.z};
            for (;;) {
                const unsigned long long b = next_block_.fetch_add(1);
                if (b >= total_blocks_ || failed_.load()) break;
                const ClaimEmuDim idx{(unsigned)(b % grid_.x), (unsigned)((b / grid_.x) % grid_.y),
                                      (unsigned)(b / ((unsigned long long)grid_.x * grid_.y))};
                if (!runner.run_block(idx)) {
                    std::lock_guard<std::mutex> lock(mutex_);
                    if (error_.empty()) error_ = runner.error;
                    failed_.store(true);
                    break;
                }
            }
            std::lock_guard<std::mutex> lock(mutex_);
            if (--busy_ == 0) {
                failed_.store(false);
                done_.notify_all();
            }
        }
    }

    std::mutex launch_mutex_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    unsigned long long job_ = 0;
    unsigned busy_ = 0;
    const ClaimEmuKernel* kernel_ = nullptr;
    ClaimEmuDim grid_{1, 1, 1}, block_{1, 1, 1};
    void** params_ = nullptr;
    std::atomic<unsigned long long> next_block_{0};
    std::atomic<bool> failed_{false};
    unsigned long long total_blocks_ = 0;
    std::string error_;
};

BlockRunner& runner() { return *tls_runner; }

bool aligned16(const void* p) { return ((size_t)p & 15u) == 0; }

}  // namespace

bool claim_emu_run(const ClaimEmuKernel& kernel, ClaimEmuDim grid, ClaimEmuDim block, void** params,
                   std::string* error) {
    return Pool::get().run(kernel, grid, block, params, error);
}

extern "C" void claim_emu_fail(const char* what) {
    runner().fail(what);
    // Stop this fiber: park it for good; the block is abandoned.
    for (;;) runner().yield();
}

extern "C" void claim_emu_syncthreads() {
    BlockRunner& r = runner();
    Fiber& f = r.me();
    const unsigned long long generation = r.block_generation;
    if (++r.block_arrived == r.live) {
        r.block_arrived = 0;
        ++r.block_generation;
        return;
    }
    f.wait = Wait::Block;
    f.wait_generation = generation;
    r.yield();
}

namespace {
// Posts this lane's `bytes` at `mine` and waits for the whole warp; returns
// the warp's 32 posts (lane l's at l * kWarpPayload), read in place: they
// stay intact until every lane has passed the next collective, which this
// lane has not reached yet.
const unsigned char* warp_post(unsigned mask, const void* mine, size_t bytes) {
    BlockRunner& r = runner();
    Fiber& f = r.me();
    if (mask != 0xffffffffu) claim_emu_fail("a warp collective with a partial mask (the emulator has full-warp ones only)");
    if (bytes > kWarpPayload) claim_emu_fail("a warp collective posts more than 64 bytes per lane");
    WarpState& w = r.warps[f.linear / 32];
    if (w.live != 32) claim_emu_fail("a full-warp collective in a warp with fewer than 32 live lanes");
    const unsigned long long generation = w.generation;
    const int slot = (int)(generation & 1);
    if (w.arrived == 0) {
        w.bytes[slot] = bytes;
    } else if (w.bytes[slot] != bytes) {
        claim_emu_fail("lanes of one warp are in different collectives");
    }
    std::memcpy(w.posts[slot][f.linear % 32], mine, bytes);
    if (++w.arrived == w.live) {
        w.arrived = 0;
        ++w.generation;
    } else {
        f.wait = Wait::Warp;
        f.wait_generation = generation;
        r.yield();
    }
    return &w.posts[slot][0][0];
}
}  // namespace

extern "C" void claim_emu_warp_shuffle(unsigned mask, const void* mine, void* out, size_t bytes,
                                       unsigned source_lane) {
    const unsigned char* posts = warp_post(mask, mine, bytes);
    std::memcpy(out, posts + (source_lane & 31u) * kWarpPayload, bytes);
}

extern "C" void claim_emu_cp_async16(void* dst, const void* src) {
    if (!aligned16(dst) || !aligned16(src)) claim_emu_fail("cp.async with an address not 16-byte aligned");
    PendingCopy c;
    c.dst = dst;
    std::memcpy(c.bytes, src, 16);
    runner().me().open_group.push_back(c);
}

extern "C" void claim_emu_cp_async_commit() {
    Fiber& f = runner().me();
    f.committed.push_back(std::move(f.open_group));
    f.open_group.clear();
}

extern "C" void claim_emu_cp_async_wait(int newest_pending) {
    Fiber& f = runner().me();
    while (f.committed.size() > (size_t)newest_pending) {
        BlockRunner::apply(f.committed.front());
        f.committed.erase(f.committed.begin());
    }
}

namespace {
unsigned short load_b16(const void* row, unsigned col) {
    unsigned short v;
    std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * col, 2);
    return v;
}
unsigned pack(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }
}  // namespace

extern "C" void claim_emu_ldmatrix_x4(unsigned* r, const void* row_address, bool transposed) {
    if (!aligned16(row_address)) claim_emu_fail("ldmatrix with a row address not 16-byte aligned");
    const unsigned char* posts = warp_post(0xffffffffu, &row_address, sizeof(void*));
    const unsigned lane = runner().me().linear % 32;
    auto row = [&](unsigned l) {
        const void* p;
        std::memcpy(&p, posts + l * kWarpPayload, sizeof p);
        return p;
    };
    // Matrix i has its 8 rows at the addresses of lanes 8i..8i+7; lane l
    // holds row l/4, columns 2(l%4) and 2(l%4)+1 (transposed: column l/4
    // of rows 2(l%4) and 2(l%4)+1).
    for (unsigned i = 0; i < 4; ++i) {
        if (!transposed) {
            const void* m = row(8 * i + lane / 4);
            r[i] = pack(load_b16(m, 2 * (lane % 4)), load_b16(m, 2 * (lane % 4) + 1));
        } else {
            r[i] = pack(load_b16(row(8 * i + 2 * (lane % 4)), lane / 4),
                        load_b16(row(8 * i + 2 * (lane % 4) + 1), lane / 4));
        }
    }
}

namespace {
// Every fp16 bit pattern as f32, built once with the header's own host
// conversion: an mma.sync converts 64 values per lane, each a look-up.
const float* half_table() {
    static const float* table = [] {
        float* t = new float[65536];
        for (unsigned bits = 0; bits < 65536; ++bits) {
            __half_raw raw;
            raw.x = (unsigned short)bits;
            t[bits] = __half2float(__half(raw));
        }
        return t;
    }();
    return table;
}
}  // namespace

extern "C" void claim_emu_mma_m16n8k16(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    struct Post {
        unsigned a[4], b[2];
    } mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}};
    const unsigned char* posts = warp_post(0xffffffffu, &mine, sizeof(Post));
    const unsigned lane = runner().me().linear % 32;
    const float* half = half_table();
    auto post = [&](unsigned l) {
        Post p;
        std::memcpy(&p, posts + l * kWarpPayload, sizeof p);
        return p;
    };
    // A (16×16, row): element (r, k) is in lane 4(r%8) + (k%8)/2, register
    // (r ≥ 8) + 2(k ≥ 8), half k%2. B (16×8, col): element (k, n) is in lane
    // 4n + (k%8)/2, register (k ≥ 8), half k%2. C/D: lane l holds rows
    // l/4 (d0, d1) and l/4 + 8 (d2, d3), columns 2(l%4) and 2(l%4)+1.
    // This lane's rows of A (r and r + 8 share their lanes) and columns of
    // B, decoded once.
    float a_rows[2][16], b_cols[2][16];
    const unsigned r = lane / 4, c = 2 * (lane % 4);
    for (unsigned j = 0; j < 4; ++j) {
        const Post p = post(4 * r + j);
        for (unsigned hi_k = 0; hi_k < 2; ++hi_k) {
            for (unsigned hi_r = 0; hi_r < 2; ++hi_r) {
                const unsigned word = p.a[hi_r + 2 * hi_k];
                a_rows[hi_r][8 * hi_k + 2 * j] = half[word & 0xffffu];
                a_rows[hi_r][8 * hi_k + 2 * j + 1] = half[word >> 16];
            }
        }
        for (unsigned n = 0; n < 2; ++n) {
            const Post q = post(4 * (c + n) + j);
            for (unsigned hi_k = 0; hi_k < 2; ++hi_k) {
                const unsigned word = q.b[hi_k];
                b_cols[n][8 * hi_k + 2 * j] = half[word & 0xffffu];
                b_cols[n][8 * hi_k + 2 * j + 1] = half[word >> 16];
            }
        }
    }
    // A product of two fp16 values is exact in fp32 (22 significant bits);
    // each sum runs in double and is rounded to fp32 once (the tensor
    // core's internal rounding differs in the last bits, within every
    // test's tolerance). The four sums run side by side in registers, each
    // in k order, so their additions do not wait on each other.
    const float *r0 = a_rows[0], *r1 = a_rows[1], *c0 = b_cols[0], *c1 = b_cols[1];
    double s0 = d[0], s1 = d[1], s2 = d[2], s3 = d[3];
    for (unsigned k = 0; k < 16; ++k) {
        s0 += (double)(r0[k] * c0[k]);
        s1 += (double)(r0[k] * c1[k]);
        s2 += (double)(r1[k] * c0[k]);
        s3 += (double)(r1[k] * c1[k]);
    }
    d[0] = (float)s0;
    d[1] = (float)s1;
    d[2] = (float)s2;
    d[3] = (float)s3;
}

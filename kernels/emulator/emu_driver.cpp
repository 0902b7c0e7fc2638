// The emulator's CUDA driver: the part of the driver API that cudarc and
// the claim runtime call, over host memory, built as libcuda.so.1 so that
// cudarc's dynamic loading picks it up from LD_LIBRARY_PATH on a machine
// without a GPU (kernels/emulator/README.md).
//
// - One device, "claim CUDA emulator", compute capability 9.0 (the kernels
//   take their sm_90 paths), memory pools supported (cudarc allocates in
//   stream order, as on an H100).
// - Device memory is host memory, 256-byte aligned like cuMemAlloc's;
//   every copy and memset is checked against the live allocations.
// - Streams run their work at once, in call order; events take the time.
// - Stream capture records launches, copies and memsets instead of running
//   them, and a graph replays them. Calls a capture forbids (synchronous
//   allocation, copy or synchronisation from the capturing thread) fail
//   with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidate the capture.
// - cuModuleLoadData accepts the embedded fatbins without reading them;
//   cuModuleGetFunction finds the kernel, compiled for the host from the
//   same .cu source, by name.
#include <cuda.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "emu_runtime.h"

struct CUctx_st {};
struct CUmod_st {};
struct CUfunc_st {
    const ClaimEmuKernel* kernel = nullptr;
};
struct CUgraph_st;
struct CUstream_st {
    CUgraph_st* capture = nullptr;  // the graph being recorded, if capturing
    bool capture_invalidated = false;
    std::thread::id capturing_thread;
};
struct CUevent_st {
    std::chrono::steady_clock::time_point when{};
    bool recorded = false;
};
struct CUgraph_st {
    std::vector<std::function<bool(std::string*)>> nodes;
    std::vector<CUdeviceptr> freed;  // freed during the capture: released with the graph
};
struct CUgraphExec_st {
    CUgraph_st* graph = nullptr;
};

namespace {

std::mutex g_mutex;  // guards the tables below (not the launches)
std::map<CUdeviceptr, size_t> g_allocations;
std::unordered_map<std::string, const ClaimEmuKernel*>& kernels() {
    static auto* table = new std::unordered_map<std::string, const ClaimEmuKernel*>();
    return *table;
}
CUctx_st g_context;
CUstream_st g_null_stream;
thread_local CUctx_st* tls_context = nullptr;
std::atomic<bool> g_initialised{false};

size_t device_memory() {
    static const size_t bytes = [] {
        const char* v = std::getenv("CLAIM_EMU_MEMORY_MB");
        const long mb = v ? std::atol(v) : 0;
        return (size_t)(mb > 0 ? mb : 4096) * 1024 * 1024;
    }();
    return bytes;
}
size_t g_allocated = 0;

CUstream_st* stream_of(CUstream s) { return s ? s : &g_null_stream; }

bool verbose() {
    static const bool on = std::getenv("CLAIM_EMU_VERBOSE") != nullptr;
    return on;
}

CUresult report(CUresult code, const std::string& what) {
    std::fprintf(stderr, "claim CUDA emulator: %s\n", what.c_str());
    return code;
}

// The capture the calling thread has open on any stream, if any.
std::set<CUstream_st*> g_capturing;
CUstream_st* capturing_on_this_thread() {
    for (CUstream_st* s : g_capturing)
        if (s->capturing_thread == std::this_thread::get_id()) return s;
    return nullptr;
}

// A call that a capture forbids: fails and invalidates the capture.
CUresult forbidden_in_capture(const char* what) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (CUstream_st* s = capturing_on_this_thread()) {
        s->capture_invalidated = true;
        if (verbose()) report(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, std::string(what) + " during a stream capture");
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    return CUDA_SUCCESS;
}

// Whether [ptr, ptr + bytes) lies in one live allocation.
bool in_allocation(CUdeviceptr ptr, size_t bytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_allocations.upper_bound(ptr);
    if (it == g_allocations.begin()) return false;
    --it;
    return ptr >= it->first && ptr + bytes <= it->first + it->second && ptr + bytes >= ptr;
}

CUresult check_range(CUdeviceptr ptr, size_t bytes, const char* what) {
    if (bytes == 0) return CUDA_SUCCESS;
    if (!in_allocation(ptr, bytes)) {
        char msg[200];
        std::snprintf(msg, sizeof msg, "%s: [0x%llx, +%zu) is not inside one live allocation", what,
                      (unsigned long long)ptr, bytes);
        return report(CUDA_ERROR_INVALID_VALUE, msg);
    }
    return CUDA_SUCCESS;
}

// Queues `op` on `stream`: recorded when it captures, run now otherwise.
CUresult enqueue(CUstream stream, std::function<bool(std::string*)> op) {
    CUstream_st* s = stream_of(stream);
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (s->capture) {
            s->capture->nodes.push_back(std::move(op));
            return CUDA_SUCCESS;
        }
    }
    std::string error;
    if (!op(&error)) return report(CUDA_ERROR_LAUNCH_FAILED, error);
    return CUDA_SUCCESS;
}

CUresult allocate(CUdeviceptr* dptr, size_t bytes) {
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_allocated + bytes > device_memory()) return CUDA_ERROR_OUT_OF_MEMORY;
    void* p = nullptr;
    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    *dptr = (CUdeviceptr)p;
    g_allocations[*dptr] = bytes;
    g_allocated += bytes;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr dptr) {
    if (dptr == 0) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_allocations.find(dptr);
    if (it == g_allocations.end()) return report(CUDA_ERROR_INVALID_VALUE, "freeing an address that is not an allocation");
    g_allocated -= it->second;
    g_allocations.erase(it);
    std::free((void*)dptr);
    return CUDA_SUCCESS;
}

// The name and description of every code the emulator returns.
struct ErrorText {
    CUresult code;
    const char* name;
    const char* description;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure (emulated kernel broke a rule)"},
    {CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation is not permitted in this state"},
    {CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
     "operation not permitted when stream is capturing"},
    {CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
     "operation failed due to a previous error during capture"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported (by the claim CUDA emulator)"},
};

ErrorText error_text(CUresult code) {
    for (const ErrorText& e : kErrors)
        if (e.code == code) return e;
    return {code, "CUDA_ERROR_UNKNOWN", "error (claim CUDA emulator)"};
}

struct LaunchRecord {
    const ClaimEmuKernel* kernel;
    ClaimEmuDim grid, block;
    std::vector<std::vector<unsigned char>> args;
};

bool run_launch(const LaunchRecord& l, std::string* error) {
    // The kernel's entry copies each argument into its by-value parameter,
    // so the recorded bytes serve every replay as they are.
    std::vector<void*> params;
    for (const auto& arg : l.args) params.push_back(const_cast<unsigned char*>(arg.data()));
    return claim_emu_run(*l.kernel, l.grid, l.block, params.data(), error);
}

}  // namespace

extern "C" void claim_emu_register(const ClaimEmuKernel* kernel) { kernels()[kernel->name] = kernel; }

extern "C" {

CUresult cuGetErrorString(CUresult error, const char** str) {
    if (!str) return CUDA_ERROR_INVALID_VALUE;
    *str = error_text(error).description;
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char** str) {
    if (!str) return CUDA_ERROR_INVALID_VALUE;
    *str = error_text(error).name;
    return CUDA_SUCCESS;
}

CUresult cuInit(unsigned int) {
    g_initialised = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 13000;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    if (!g_initialised) return CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (!device || ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", "claim CUDA emulator");
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = device_memory();
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice) {
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 4; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *value = 1; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *value = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *value = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = 49152; break;
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
    if (!ctx || device != 0) return CUDA_ERROR_INVALID_VALUE;
    *ctx = &g_context;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }

CUresult cuCtxSetCurrent(CUcontext ctx) {
    tls_context = ctx;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* ctx) {
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = tls_context;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice* device) {
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize() { return forbidden_in_capture("cuCtxSynchronize"); }

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
    if (!free_bytes || !total_bytes) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(g_mutex);
    *total_bytes = device_memory();
    *free_bytes = device_memory() - g_allocated;
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
    if (!stream) return CUDA_ERROR_INVALID_VALUE;
    *stream = new CUstream_st();
    return CUDA_SUCCESS;
}

CUresult cuStreamCreateWithPriority(CUstream* stream, unsigned int flags, int) {
    return cuStreamCreate(stream, flags);
}

CUresult cuStreamDestroy_v2(CUstream stream) {
    if (stream) {
        std::lock_guard<std::mutex> lock(g_mutex);
        g_capturing.erase(stream);
        delete stream;
    }
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream) { return forbidden_in_capture("cuStreamSynchronize"); }

CUresult cuStreamQuery(CUstream) { return forbidden_in_capture("cuStreamQuery"); }

CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return CUDA_SUCCESS; }

CUresult cuEventCreate(CUevent* event, unsigned int) {
    if (!event) return CUDA_ERROR_INVALID_VALUE;
    *event = new CUevent_st();
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent event) {
    delete event;
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent event, CUstream stream) {
    if (!event) return CUDA_ERROR_INVALID_HANDLE;
    return enqueue(stream, [event](std::string*) {
        event->when = std::chrono::steady_clock::now();
        event->recorded = true;
        return true;
    });
}

CUresult cuEventRecordWithFlags(CUevent event, CUstream stream, unsigned int) { return cuEventRecord(event, stream); }

CUresult cuEventSynchronize(CUevent) { return forbidden_in_capture("cuEventSynchronize"); }

CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }

CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
    if (!ms || !start || !end) return CUDA_ERROR_INVALID_VALUE;
    if (!start->recorded || !end->recorded) return CUDA_ERROR_NOT_READY;
    *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
    return CUDA_SUCCESS;
}

#undef cuEventElapsedTime
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
    if (CUresult r = forbidden_in_capture("cuMemAlloc")) return r;
    return allocate(dptr, bytes);
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
    if (CUresult r = forbidden_in_capture("cuMemFree")) return r;
    return release(dptr);
}

// Stream-ordered allocation is allowed in a capture (a graph allocation
// node); what the graph does not free outlives it, as with the driver.
CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytes, CUstream) { return allocate(dptr, bytes); }

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream) {
    CUstream_st* s = stream_of(stream);
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        // Freed inside a capture: the graph keeps it until it is destroyed.
        if (s->capture) {
            s->capture->freed.push_back(dptr);
            return CUDA_SUCCESS;
        }
    }
    return release(dptr);
}

CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    *p = std::malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }

CUresult cuMemFreeHost(void* p) {
    std::free(p);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    if (CUresult r = forbidden_in_capture("cuMemcpyHtoD")) return r;
    if (CUresult r = check_range(dst, bytes, "cuMemcpyHtoD destination")) return r;
    if (bytes) std::memcpy((void*)dst, src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = forbidden_in_capture("cuMemcpyDtoH")) return r;
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoH source")) return r;
    if (bytes) std::memcpy(dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    if (CUresult r = forbidden_in_capture("cuMemcpyDtoD")) return r;
    if (CUresult r = check_range(dst, bytes, "cuMemcpyDtoD destination")) return r;
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoD source")) return r;
    if (bytes) std::memmove((void*)dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream stream) {
    if (CUresult r = check_range(dst, bytes, "cuMemcpyHtoDAsync destination")) return r;
    return enqueue(stream, [=](std::string*) {
        if (bytes) std::memcpy((void*)dst, src, bytes);
        return true;
    });
}

CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream stream) {
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoHAsync source")) return r;
    return enqueue(stream, [=](std::string*) {
        if (bytes) std::memcpy(dst, (const void*)src, bytes);
        return true;
    });
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream) {
    if (CUresult r = check_range(dst, bytes, "cuMemcpyDtoDAsync destination")) return r;
    if (CUresult r = check_range(src, bytes, "cuMemcpyDtoDAsync source")) return r;
    return enqueue(stream, [=](std::string*) {
        if (bytes) std::memmove((void*)dst, (const void*)src, bytes);
        return true;
    });
}

CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    if (CUresult r = forbidden_in_capture("cuMemsetD8")) return r;
    if (CUresult r = check_range(dst, n, "cuMemsetD8")) return r;
    if (n) std::memset((void*)dst, value, n);
    return CUDA_SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream) {
    if (CUresult r = check_range(dst, n, "cuMemsetD8Async")) return r;
    return enqueue(stream, [=](std::string*) {
        if (n) std::memset((void*)dst, value, n);
        return true;
    });
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    *module = new CUmod_st();
    return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule module) {
    delete module;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* function, CUmodule, const char* name) {
    if (!function || !name) return CUDA_ERROR_INVALID_VALUE;
    auto it = kernels().find(name);
    if (it == kernels().end()) return report(CUDA_ERROR_NOT_FOUND, std::string("no emulated kernel named ") + name);
    *function = new CUfunc_st{it->second};
    return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int* value, CUfunction_attribute attribute, CUfunction) {
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    *value = attribute == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? 1024 : 0;
    return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared_bytes, CUstream stream,
                        void** params, void** extra) {
    if (!f || !f->kernel) return CUDA_ERROR_INVALID_HANDLE;
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || threads == 0 || threads > 1024 || gy > 65535 || gz > 65535 || bz > 64 ||
        gx > 2147483647u)
        return report(CUDA_ERROR_INVALID_VALUE, std::string("bad launch geometry for ") + f->kernel->name);
    if (threads > f->kernel->max_threads) {
        char msg[200];
        std::snprintf(msg, sizeof msg, "%s launched with %llu threads per block, over its __launch_bounds__ of %u",
                      f->kernel->name, threads, f->kernel->max_threads);
        return report(CUDA_ERROR_INVALID_VALUE, msg);
    }
    if (shared_bytes != 0 || extra != nullptr)
        return report(CUDA_ERROR_NOT_SUPPORTED, "dynamic shared memory and `extra` are not emulated");
    if (f->kernel->param_count > 0 && !params) return CUDA_ERROR_INVALID_VALUE;
    LaunchRecord record{f->kernel, {gx, gy, gz}, {bx, by, bz}, {}};
    for (size_t i = 0; i < f->kernel->param_count; ++i) {
        const unsigned char* p = static_cast<const unsigned char*>(params[i]);
        record.args.emplace_back(p, p + f->kernel->param_sizes[i]);
    }
    if (verbose())
        std::fprintf(stderr, "claim CUDA emulator: launch %s grid (%u,%u,%u) block (%u,%u,%u)\n", f->kernel->name, gx,
                     gy, gz, bx, by, bz);
    return enqueue(stream, [record](std::string* error) { return run_launch(record, error); });
}

CUresult cuLaunchHostFunc(CUstream stream, CUhostFn fn, void* data) {
    return enqueue(stream, [fn, data](std::string*) {
        fn(data);
        return true;
    });
}

CUresult cuStreamBeginCapture_v2(CUstream stream, CUstreamCaptureMode) {
    if (!stream) return report(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "capturing the legacy null stream");
    std::lock_guard<std::mutex> lock(g_mutex);
    if (stream->capture) return CUDA_ERROR_ILLEGAL_STATE;
    stream->capture = new CUgraph_st();
    stream->capture_invalidated = false;
    stream->capturing_thread = std::this_thread::get_id();
    g_capturing.insert(stream);
    return CUDA_SUCCESS;
}

#undef cuStreamBeginCapture
CUresult cuStreamBeginCapture(CUstream stream) {
    return cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

CUresult cuStreamIsCapturing(CUstream stream, CUstreamCaptureStatus* status) {
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    CUstream_st* s = stream_of(stream);
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!s->capture) *status = CU_STREAM_CAPTURE_STATUS_NONE;
    else if (s->capture_invalidated) *status = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    else *status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(CUgraph graph);

CUresult cuStreamEndCapture(CUstream stream, CUgraph* graph) {
    if (!stream || !graph) return CUDA_ERROR_INVALID_VALUE;
    CUgraph_st* recorded = nullptr;
    bool invalidated = false;
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (!stream->capture) return CUDA_ERROR_ILLEGAL_STATE;
        recorded = stream->capture;
        invalidated = stream->capture_invalidated;
        stream->capture = nullptr;
        stream->capture_invalidated = false;
        g_capturing.erase(stream);
    }
    if (invalidated) {
        cuGraphDestroy(recorded);
        *graph = nullptr;
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *graph = recorded;
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long) {
    if (!exec || !graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = new CUgraphExec_st{graph};
    return CUDA_SUCCESS;
}

CUresult cuGraphUpload(CUgraphExec, CUstream) { return CUDA_SUCCESS; }

CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream) {
    if (!exec || !exec->graph) return CUDA_ERROR_INVALID_HANDLE;
    CUgraph_st* graph = exec->graph;
    return enqueue(stream, [graph](std::string* error) {
        for (auto& node : graph->nodes)
            if (!node(error)) return false;
        return true;
    });
}

CUresult cuGraphExecDestroy(CUgraphExec exec) {
    delete exec;
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(CUgraph graph) {
    // What the capture freed is released with the graph.
    if (!graph) return CUDA_SUCCESS;
    for (CUdeviceptr p : graph->freed) {
        std::lock_guard<std::mutex> lock(g_mutex);
        auto it = g_allocations.find(p);
        if (it != g_allocations.end()) {
            g_allocated -= it->second;
            g_allocations.erase(it);
            std::free((void*)p);
        }
    }
    delete graph;
    return CUDA_SUCCESS;
}

}  // extern "C"

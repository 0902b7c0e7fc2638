//! CUDA devices: one driver context per GPU and process, the embedded
//! kernel modules loaded once per GPU, and per-handle streams with a caching
//! allocator.
//!
//! # Streams and handles
//!
//! [`CudaDevice::open`] returns the process-wide default handle of a GPU:
//! every call with the same ordinal shares its stream and buffer pool, so
//! tensors opened through different `DeviceSpec`s interoperate without
//! synchronisation. A model that runs concurrently with others (one model
//! per thread, say) takes its own handle with [`CudaDevice::with_new_stream`]:
//! its ops queue on their own stream and reuse their own buffers.
//!
//! All ordering is stream order: a buffer returned to a handle's pool is only
//! ever reused by work queued later on the same stream. cudarc's per-buffer
//! event tracking is switched off for our contexts; the few places where
//! operands from two handles meet make the streams wait on each other
//! explicitly (see [`CudaDevice::order_after`]).

use super::driver::{driver_error, driver_present, error_name, guarded, is_image_error, NO_DRIVER};
use crate::{Error, Result};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The kernels `build.rs` compiled and embedded: `KERNEL_ARCHS` (the GPU
/// targets) and `FATBINS` (one fatbin per op family).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/claim_kernels.rs"));
}

/// GPU architectures with kernels embedded in this build (`sm_80`, `sm_90`,
/// `compute_80` for PTX); empty when the build found no CUDA compiler.
pub fn kernel_archs() -> &'static [&'static str] {
    embedded::KERNEL_ARCHS
}

/// The error when this build carries no kernels.
fn no_kernels() -> Error {
    Error::Device(
        "this build embeds no CUDA kernels: build.rs found no nvcc (set CLAIM_NVCC or put \
         nvcc on PATH, then rebuild with `--features cuda`)"
            .to_string(),
    )
}

/// What the CUDA driver reports now: its version and one line per device.
pub fn runtime_info() -> std::result::Result<super::CudaRuntimeInfo, String> {
    if !driver_present() {
        return Err(NO_DRIVER.to_string());
    }
    guarded("querying the CUDA driver", || {
        cudarc::driver::result::init()?;
        let driver_version = super::driver::driver_version()?;
        let count = cudarc::driver::result::device::get_count()?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let dev = cudarc::driver::result::device::get(ordinal)?;
            let name = cudarc::driver::result::device::get_name(dev)?;
            // SAFETY: `dev` was just returned by `cuDeviceGet`.
            let major = unsafe {
                cudarc::driver::result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                )
            }?;
            // SAFETY: as above.
            let minor = unsafe {
                cudarc::driver::result::device::get_attribute(
                    dev,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                )
            }?;
            // SAFETY: as above.
            let bytes = unsafe { cudarc::driver::result::device::total_mem(dev) }?;
            devices.push(format!(
                "cuda:{ordinal} {name}, compute capability {major}.{minor}, {:.1} GiB",
                bytes as f64 / (1u64 << 30) as f64
            ));
        }
        Ok(super::CudaRuntimeInfo {
            driver_version,
            devices,
        })
    })
    .map_err(|e| e.to_string())
}

/// What every handle of one GPU shares: the context and the kernel modules.
struct Gpu {
    ctx: Arc<CudaContext>,
    name: String,
    compute_capability: (i32, i32),
    total_memory: usize,
    /// Streaming multiprocessors (sizes split-K launches).
    multiprocessors: usize,
    /// Loaded modules by family name (`elementwise`, `norm`, …).
    modules: HashMap<&'static str, Arc<CudaModule>>,
    /// Functions looked up so far, by (family, kernel name).
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    /// The handle [`CudaDevice::open`] returns. It refers back to this
    /// `Gpu`, so an opened GPU lives until the process ends, as the table
    /// of open GPUs does anyway.
    default: OnceLock<CudaDevice>,
}

/// The open GPUs of this process, by ordinal.
fn gpus() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    GPUS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Gpu {
    /// Opens GPU `index`: checks the driver, the device, the embedded
    /// kernels, then creates the context and loads every module.
    fn open(index: usize) -> Result<Gpu> {
        let what = format!("opening CUDA device {index}");
        let count = guarded(&what, || {
            cudarc::driver::result::init()?;
            cudarc::driver::result::device::get_count()
        })
        .map_err(|e| match e {
            // cuInit reports a machine without GPUs as NO_DEVICE.
            Error::Device(m) if m.contains("CUDA_ERROR_NO_DEVICE") => Error::Device(format!(
                "CUDA device {index} requested, but the NVIDIA driver sees no CUDA device"
            )),
            e => e,
        })?;
        let count = usize::try_from(count).unwrap_or(0);
        if count == 0 {
            return Err(Error::Device(format!(
                "CUDA device {index} requested, but the NVIDIA driver sees no CUDA device"
            )));
        }
        if index >= count {
            return Err(Error::Device(format!(
                "CUDA device {index} requested, but only {count} device{} visible (cuda:0..cuda:{})",
                if count == 1 { " is" } else { "s are" },
                count - 1
            )));
        }
        if embedded::FATBINS.is_empty() {
            return Err(no_kernels());
        }
        let (ctx, name, compute_capability, total_memory, multiprocessors) =
            guarded(&what, || {
                let ctx = CudaContext::new(index)?;
                // SAFETY: the context object is ours alone (cudarc returns a new
                // `Arc` per `new` call) and nothing has been allocated through it
                // yet; this module orders all work on its streams itself (see
                // the module docs), so cudarc's per-buffer events are not needed.
                unsafe { ctx.disable_event_tracking() };
                let name = ctx.name()?;
                let cc = ctx.compute_capability()?;
                let total = ctx.total_mem()?;
                let sms = ctx
                    .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
                Ok((
                    ctx,
                    name,
                    cc,
                    total,
                    usize::try_from(sms).unwrap_or(1).max(1),
                ))
            })?;
        let mut modules = HashMap::new();
        for &(family, image) in embedded::FATBINS {
            // The inner result keeps the raw driver code of a failed load.
            let loaded = guarded(&what, || {
                Ok(ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image.to_vec())))
            })?;
            let module = loaded.map_err(|e| {
                if is_image_error(&e) {
                    let (major, minor) = compute_capability;
                    Error::Device(format!(
                        "the `{family}` CUDA kernels cannot be loaded on {name} (compute \
                         capability {major}.{minor}) by this driver ({}): this build embeds \
                         code for [{}]",
                        error_name(&e),
                        embedded::KERNEL_ARCHS.join(", ")
                    ))
                } else {
                    driver_error(&format!("{what}: loading the `{family}` kernels"), e)
                }
            })?;
            modules.insert(family, module);
        }
        Ok(Gpu {
            ctx,
            name,
            compute_capability,
            total_memory,
            multiprocessors,
            modules,
            functions: Mutex::new(HashMap::new()),
            default: OnceLock::new(),
        })
    }
}

/// Rounds a request up to its pool bucket: multiples of 256 bytes below
/// 64 KiB, above that four buckets per power of two (at most 25 % waste).
fn bucket_bytes(bytes: usize) -> Option<usize> {
    let bytes = bytes.max(1);
    if bytes <= 1 << 16 {
        return bytes.checked_next_multiple_of(256);
    }
    let step = 1usize << (usize::BITS - 1 - bytes.leading_zeros() - 2);
    bytes.checked_next_multiple_of(step)
}

/// Pops a buffer of bucket `size` from a free list.
fn take_bucket(
    free: &mut BTreeMap<usize, Vec<CudaSlice<u8>>>,
    size: usize,
) -> Option<CudaSlice<u8>> {
    let list = free.get_mut(&size)?;
    let buf = list.pop();
    if list.is_empty() {
        free.remove(&size);
    }
    buf
}

/// A captured CUDA graph ([`CudaDevice::capture`]) with the buffers its
/// replays use. Not `Send`: replay it on the thread that captured it.
pub struct CudaGraphExec {
    graph: cudarc::driver::CudaGraph,
    /// The capture's intermediate buffers; back to the pool on drop.
    buffers: Vec<CudaSlice<u8>>,
    device: CudaDevice,
}

impl fmt::Debug for CudaGraphExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaGraphExec({:?}, {} buffers)",
            self.device,
            self.buffers.len()
        )
    }
}

impl CudaGraphExec {
    /// Queues one replay of the graph on its handle's stream.
    pub fn replay(&self) -> Result<()> {
        self.device
            .guard("replaying a CUDA graph", |_| self.graph.launch())
    }

    /// The handle the graph replays on.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }
}

impl Drop for CudaGraphExec {
    fn drop(&mut self) {
        // Later work on the stream runs after the last replay, so the
        // buffers can serve it.
        for buf in self.buffers.drain(..) {
            self.device.pool_or_free(buf);
        }
    }
}

/// Freed device buffers kept for reuse, by bucket size.
#[derive(Default)]
struct Pool {
    free: BTreeMap<usize, Vec<CudaSlice<u8>>>,
    cached_bytes: usize,
}

/// The buffers of a CUDA graph being captured: every buffer handed out
/// during the capture (by device address), and those of them released
/// again, which later allocations of the same capture reuse. None of them
/// returns to the pool while the graph lives: its replays write them.
#[derive(Default)]
struct CaptureArena {
    owned: std::collections::HashSet<u64>,
    free: BTreeMap<usize, Vec<CudaSlice<u8>>>,
}

/// One handle: a GPU, a stream and a buffer pool.
struct Handle {
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
    pool: Mutex<Pool>,
    /// The arena of the graph capture in progress on this handle's stream.
    capture: Mutex<Option<CaptureArena>>,
    /// The pool keeps at most this many bytes of freed buffers.
    max_cached_bytes: usize,
    /// Whether every buffer handed out is first filled with 0xFF bytes
    /// (NaN in f16 and f32), so that tests catch unwritten outputs.
    poison: AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Frees the cached buffers (queued on the stream, which outlives
        // them through their own references to it).
        if let Ok(mut pool) = self.pool.lock() {
            pool.free.clear();
        }
    }
}

/// A CUDA GPU as the engine uses it: a shared context with the embedded
/// kernels loaded, a stream on which this handle's ops queue in order, and
/// a caching allocator for their outputs. Cheap to clone (a reference).
#[derive(Clone)]
pub struct CudaDevice {
    handle: Arc<Handle>,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.handle.gpu.compute_capability;
        write!(
            f,
            "CudaDevice(cuda:{}, {}, sm_{major}{minor})",
            self.ordinal(),
            self.handle.gpu.name
        )
    }
}

impl CudaDevice {
    /// Opens GPU `index` and returns its process-wide default handle (the
    /// same stream and pool for every call). Fails with [`Error::Device`]
    /// saying what is missing: the driver, the device (with how many there
    /// are), kernels in this build, or kernels this driver can load.
    pub fn open(index: usize) -> Result<CudaDevice> {
        let gpu = {
            let mut map = gpus()
                .lock()
                .map_err(|_| Error::Internal("the CUDA device table is poisoned".into()))?;
            match map.get(&index) {
                Some(gpu) => Arc::clone(gpu),
                None => {
                    let gpu = Arc::new(Gpu::open(index)?);
                    map.insert(index, Arc::clone(&gpu));
                    gpu
                }
            }
        };
        if let Some(dev) = gpu.default.get() {
            return Ok(dev.clone());
        }
        let dev = CudaDevice::new_handle(&gpu)?;
        // Another thread may have won the race; everyone uses the winner.
        Ok(gpu.default.get_or_init(|| dev).clone())
    }

    /// A new handle on the same GPU with its own stream and buffer pool, for
    /// a model that runs concurrently with others. Tensors of different
    /// handles can be mixed in one op (the streams are then made to wait on
    /// each other), but a model should keep to its own handle.
    pub fn with_new_stream(&self) -> Result<CudaDevice> {
        CudaDevice::new_handle(&self.handle.gpu)
    }

    fn new_handle(gpu: &Arc<Gpu>) -> Result<CudaDevice> {
        let stream = guarded("creating a CUDA stream", || gpu.ctx.new_stream())?;
        let max_cached_bytes = (gpu.total_memory / 8).clamp(256 << 20, 16 << 30);
        Ok(CudaDevice {
            handle: Arc::new(Handle {
                gpu: Arc::clone(gpu),
                stream,
                pool: Mutex::new(Pool::default()),
                capture: Mutex::new(None),
                max_cached_bytes,
                poison: AtomicBool::new(false),
            }),
        })
    }

    /// The GPU's ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.handle.gpu.ctx.ordinal()
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.handle.gpu.name
    }

    /// The GPU's compute capability (9.0 for an H100/H200).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.handle.gpu.compute_capability
    }

    /// Total device memory in bytes.
    pub fn total_memory(&self) -> usize {
        self.handle.gpu.total_memory
    }

    /// Its streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.handle.gpu.multiprocessors
    }

    /// Waits until all work queued on this handle's stream has finished,
    /// reporting any error a kernel raised meanwhile.
    pub fn synchronize(&self) -> Result<()> {
        self.guard("synchronising the CUDA stream", |s| s.synchronize())
    }

    /// Whether two handles share a stream (and so need no ordering).
    pub fn same_stream(&self, other: &CudaDevice) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }

    /// Whether two handles are on the same GPU.
    pub fn same_gpu(&self, other: &CudaDevice) -> bool {
        Arc::ptr_eq(&self.handle.gpu, &other.handle.gpu)
    }

    /// Bytes of freed buffers this handle's pool holds for reuse.
    pub fn cached_bytes(&self) -> usize {
        self.handle.pool.lock().map(|p| p.cached_bytes).unwrap_or(0)
    }

    /// Frees every cached buffer of this handle's pool.
    pub fn empty_cache(&self) {
        if let Ok(mut pool) = self.handle.pool.lock() {
            pool.free.clear();
            pool.cached_bytes = 0;
        }
    }

    /// Makes work queued later on this handle's stream wait for everything
    /// queued so far on `other`'s (a no-op for the same stream).
    pub(super) fn order_after(&self, other: &CudaDevice) -> Result<()> {
        if self.same_stream(other) {
            return Ok(());
        }
        if !self.same_gpu(other) {
            return Err(Error::Device(format!(
                "operands on different GPUs (cuda:{} and cuda:{}); copy through the host first",
                self.ordinal(),
                other.ordinal()
            )));
        }
        let other_stream = Arc::clone(&other.handle.stream);
        self.guard("ordering two CUDA streams", move |s| s.join(&other_stream))
    }

    /// Runs a driver call on this handle behind the panic guard, binding
    /// the context to the calling thread first.
    pub(super) fn guard<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Arc<CudaStream>) -> std::result::Result<T, cudarc::driver::DriverError>,
    ) -> Result<T> {
        let h = &*self.handle;
        guarded(what, || {
            h.gpu.ctx.bind_to_thread()?;
            f(&h.stream)
        })
    }

    /// The kernel `name` of the module `family`, looked up once.
    pub(super) fn function(
        &self,
        family: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        let gpu = &self.handle.gpu;
        let mut cache = gpu
            .functions
            .lock()
            .map_err(|_| Error::Internal("the CUDA function table is poisoned".into()))?;
        if let Some(f) = cache.get(&(family, name)) {
            return Ok(f.clone());
        }
        let module = gpu.modules.get(family).ok_or_else(|| {
            Error::Device(format!(
                "no `{family}` kernel module is embedded in this build (kernel `{name}`)"
            ))
        })?;
        let f = guarded(&format!("looking up kernel `{name}` in `{family}`"), || {
            module.load_function(name)
        })?;
        cache.insert((family, name), f.clone());
        Ok(f)
    }

    /// A device buffer of at least `bytes` bytes for an output its kernel
    /// writes completely: a pooled one of the same bucket, or a new one.
    /// Its contents are undefined. On out-of-memory the pool is emptied and
    /// the allocation retried once.
    pub(super) fn alloc_bytes(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        let buf = self.take_or_alloc(bytes)?;
        if self.handle.poison.load(Ordering::Relaxed) {
            let ptr = self.address(&buf);
            let len = buf.len();
            self.guard("poisoning a new CUDA buffer", |s| {
                // SAFETY: `ptr..ptr + len` is exactly the buffer `buf`, which
                // is alive and not used by anything else yet; the memset is
                // queued on the stream all later uses of it queue on.
                unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xff, len, s.cu_stream()) }
            })?;
        }
        Ok(buf)
    }

    /// Fills every buffer this handle hands out from now on with NaN bytes
    /// (on) or leaves it as it comes (off, the default): for parity tests,
    /// where an output element a kernel fails to write must show.
    pub fn poison_outputs(&self, on: bool) {
        self.handle.poison.store(on, Ordering::Relaxed);
    }

    fn take_or_alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        let size = bucket_bytes(bytes).ok_or_else(|| {
            Error::OutOfMemory(format!("a device buffer of {bytes} bytes is too large"))
        })?;
        let mut capture = self
            .handle
            .capture
            .lock()
            .map_err(|_| Error::Internal("the CUDA capture state is poisoned".into()))?;
        if let Some(arena) = capture.as_mut() {
            // Capturing: reuse the capture's own released buffers, then the
            // pool's; a new allocation would be recorded into the graph, so
            // the capture fails instead (the caller then runs eagerly).
            let buf = take_bucket(&mut arena.free, size)
                .or_else(|| self.take_pooled(size))
                .ok_or_else(|| {
                    Error::Device(format!(
                        "a CUDA graph capture needs a new {size}-byte buffer (capture after a \
                         warm-up run of the same work)"
                    ))
                })?;
            arena.owned.insert(self.address(&buf));
            return Ok(buf);
        }
        drop(capture);
        if let Some(buf) = self.take_pooled(size) {
            return Ok(buf);
        }
        let what = format!("allocating {size} bytes on cuda:{}", self.ordinal());
        // SAFETY (for both calls): the buffer is handed out as storage whose
        // kernels write every element before anything reads it; `u8` has no
        // invalid bit patterns in any case.
        match self.guard(&what, |s| unsafe { s.alloc::<u8>(size) }) {
            Err(Error::OutOfMemory(_)) => {
                self.empty_cache();
                self.guard(&what, |s| unsafe { s.alloc::<u8>(size) })
                    .map_err(|e| match e {
                        Error::OutOfMemory(m) => Error::OutOfMemory(format!(
                            "{m}; {} of {} bytes are in use on this GPU",
                            self.used_memory().unwrap_or(0),
                            self.total_memory()
                        )),
                        e => e,
                    })
            }
            other => other,
        }
    }

    /// A pooled buffer of bucket `size`, if the pool holds one.
    fn take_pooled(&self, size: usize) -> Option<CudaSlice<u8>> {
        let mut pool = self.handle.pool.lock().ok()?;
        let buf = take_bucket(&mut pool.free, size)?;
        pool.cached_bytes -= size;
        Some(buf)
    }

    /// Bytes of device memory free on this GPU now (for any process).
    pub fn free_memory(&self) -> Result<usize> {
        self.guard("querying memory", |s| s.context().mem_get_info())
            .map(|(free, _)| free)
    }

    /// Bytes of device memory in use (by any process).
    fn used_memory(&self) -> Option<usize> {
        self.guard("querying memory", |s| s.context().mem_get_info())
            .ok()
            .map(|(free, total)| total.saturating_sub(free))
    }

    /// Takes back a buffer whose last use is queued on this handle's stream.
    pub(super) fn release(&self, buf: CudaSlice<u8>) {
        if let Ok(mut capture) = self.handle.capture.lock() {
            if let Some(arena) = capture.as_mut() {
                if arena.owned.contains(&self.address(&buf)) {
                    arena.free.entry(buf.len()).or_default().push(buf);
                    return;
                }
            }
        }
        self.pool_or_free(buf);
    }

    /// Puts a buffer into the pool, or frees it (in stream order) when it
    /// is not a bucket size or the pool is full.
    fn pool_or_free(&self, buf: CudaSlice<u8>) {
        let size = buf.len();
        if let Ok(mut pool) = self.handle.pool.lock() {
            if bucket_bytes(size) == Some(size)
                && pool.cached_bytes + size <= self.handle.max_cached_bytes
            {
                pool.cached_bytes += size;
                pool.free.entry(size).or_default().push(buf);
                return;
            }
        }
        // Too big for the pool: freed in stream order by cudarc.
        drop(buf);
    }

    /// Records the work `work` queues on this handle's stream as a CUDA
    /// graph instead of running it, and returns the graph with `work`'s
    /// value (whose tensors are the graph's outputs: each replay rewrites
    /// them). Buffers allocated during the capture belong to the graph until
    /// it drops. Capture needs every buffer to come from the pool, so run
    /// the same work once eagerly first; anything a graph cannot hold (a new
    /// allocation, a host copy, a synchronisation) makes the capture fail
    /// with an error, and nothing is left half-recorded.
    ///
    /// The stream is drained first. While capturing, no other thread may
    /// queue work on this handle (take a handle of its own with
    /// [`CudaDevice::with_new_stream`] for concurrent work).
    pub fn capture<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<(CudaGraphExec, T)> {
        self.synchronize()?;
        {
            let mut capture = self
                .handle
                .capture
                .lock()
                .map_err(|_| Error::Internal("the CUDA capture state is poisoned".into()))?;
            if capture.is_some() {
                return Err(Error::invalid(
                    "a CUDA graph capture is already in progress on this handle",
                ));
            }
            *capture = Some(CaptureArena::default());
        }
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        let begun = self.guard("beginning a CUDA graph capture", |s| s.begin_capture(mode));
        let value = begun.and_then(|()| work());
        let ended = self.guard("ending a CUDA graph capture", |s| {
            if s.capture_status()? == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
                return Ok(None);
            }
            s.end_capture(sys::CUgraphInstantiate_flags(0))
        });
        let arena = self
            .handle
            .capture
            .lock()
            .map_err(|_| Error::Internal("the CUDA capture state is poisoned".into()))?
            .take()
            .unwrap_or_default();
        let buffers: Vec<CudaSlice<u8>> = arena.free.into_values().flatten().collect();
        match (value, ended) {
            (Ok(value), Ok(Some(graph))) => Ok((
                CudaGraphExec {
                    graph,
                    buffers,
                    device: self.clone(),
                },
                value,
            )),
            (value, ended) => {
                for buf in buffers {
                    self.pool_or_free(buf);
                }
                let error = match (value, ended) {
                    (Err(e), _) | (Ok(_), Err(e)) => e,
                    _ => Error::Internal("the CUDA graph capture recorded nothing".into()),
                };
                // A failed capture can leave the stream in an error state
                // that the next call would report; drain it here instead.
                let _ = self.synchronize();
                Err(error)
            }
        }
    }

    /// The raw device address of a buffer, for kernel arguments.
    pub(super) fn address(&self, buf: &CudaSlice<u8>) -> u64 {
        let (ptr, _sync) = buf.device_ptr(&self.handle.stream);
        ptr
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_bytes;

    #[test]
    fn buckets_round_up_with_bounded_waste() {
        assert_eq!(bucket_bytes(0), Some(256));
        assert_eq!(bucket_bytes(1), Some(256));
        assert_eq!(bucket_bytes(257), Some(512));
        assert_eq!(bucket_bytes(1 << 16), Some(1 << 16));
        for bytes in [65_537usize, 100_000, 3 << 20, 1_234_567_891] {
            let b = bucket_bytes(bytes).unwrap();
            assert!(b >= bytes && (b - bytes) * 4 <= bytes, "{bytes} -> {b}");
            assert_eq!(bucket_bytes(b), Some(b), "a bucket maps to itself");
        }
        assert_eq!(bucket_bytes(usize::MAX), None);
    }
}

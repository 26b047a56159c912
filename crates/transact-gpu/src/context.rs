//! [`GpuContext`]: one device and queue with the caches every kernel
//! launcher shares.
//!
//! # How a launcher uses it
//!
//! 1. Describe the kernel with a [`KernelSpec`] (a [`Shader`], an entry
//!    point, WGSL `override` values, the storage type) and get it from
//!    [`GpuContext::kernel`]: compiled once, then cached as an `Arc`.
//! 2. Get buffers: [`GpuContext::upload`] / [`GpuContext::storage`] take
//!    them from the [buffer pool](PooledBuffer) (steady state: no
//!    allocation); [`GpuContext::persistent`] makes long-lived ones
//!    (weights).
//! 3. Record the dispatches of one request on a [`Request`]
//!    ([`GpuContext::request`]): each gets its parameter block (binding 0, a
//!    uniform) and its storage buffers (bindings 1, 2, … in order).
//! 4. [`Request::finish_read`] encodes everything into one command buffer,
//!    submits it and reads back only the final result through one staging
//!    buffer; [`Request::finish`] submits without a readback.
//!
//! # Concurrency
//!
//! A context may be shared between threads, but its requests run one at a
//! time: [`GpuContext::request`] takes a (re-entrant) lock that the
//! [`Request`] holds until it has finished. Create the request before
//! uploading its inputs, so that no pooled buffer is written while another
//! request may still use it.
//!
//! # Binding convention
//!
//! Every shader in `shaders/` declares `@group(0) @binding(0)` as a
//! `var<uniform>` parameter struct and its storage buffers at bindings
//! 1, 2, … The pipeline layout is derived from the shader, so a read-only
//! binding is `var<storage, read>` and an output `var<storage, read_write>`.
//!
//! # Errors and device loss
//!
//! Pipeline builds and request submissions run inside wgpu error scopes, so
//! a shader or validation error becomes a [`GpuError`] instead of a panic.
//! A device-lost callback sets a flag: [`GpuContext::is_lost`] tells the
//! caller to fall back and build a new context later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::GpuError;
use crate::device::{
    AdapterRequest, create_instance, describe_adapter, open_device, select_adapter,
};
use crate::timing::{KernelTime, Profile};

/// A WGSL source file from `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    /// File name without `.wgsl` (cache key and error label).
    pub name: &'static str,
    /// The WGSL text.
    pub source: &'static str,
}

/// Element type of the storage buffers a kernel reads and writes. Shaders
/// use the alias `st` for it (and compute in `f32`); the context prepends
/// the alias (and `enable f16;` for [`Storage::F16`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (needs `SHADER_F16`).
    F16,
}

impl Storage {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Storage::F32 => "alias st = f32;\n",
            Storage::F16 => "enable f16;\nalias st = f16;\n",
        }
    }
}

/// Everything that identifies one compute pipeline.
#[derive(Clone, Debug)]
pub struct KernelSpec<'a> {
    /// The shader file.
    pub shader: Shader,
    /// Entry point (a `@compute` function).
    pub entry: &'a str,
    /// Values of the shader's `override` constants (bools as 0/1).
    pub constants: &'a [(&'a str, f64)],
    /// Storage element type.
    pub storage: Storage,
    /// Zero the workgroup memory before the kernel runs. Turn off only for
    /// kernels that write their workgroup memory before reading it.
    pub zero_workgroup_memory: bool,
}

impl<'a> KernelSpec<'a> {
    /// `entry` of `shader`, f32 storage, no overrides, zeroed workgroup
    /// memory.
    pub fn new(shader: Shader, entry: &'a str) -> Self {
        Self {
            shader,
            entry,
            constants: &[],
            storage: Storage::F32,
            zero_workgroup_memory: true,
        }
    }

    /// With these override values.
    pub fn constants(mut self, constants: &'a [(&'a str, f64)]) -> Self {
        self.constants = constants;
        self
    }

    /// With this storage type.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    storage: Storage,
    entry: String,
    /// Override names and the bit patterns of their values, sorted.
    constants: Vec<(String, u64)>,
    zero: bool,
}

/// A compiled compute pipeline and its bind group layout.
#[derive(Debug)]
pub struct Kernel {
    /// `"shader::entry"`, for labels and errors.
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// What a pooled buffer is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Kernel input or output (`STORAGE | COPY_SRC | COPY_DST`).
    Storage,
    /// Parameter blocks (`UNIFORM | COPY_DST`).
    Uniform,
    /// Readback (`MAP_READ | COPY_DST`).
    Staging,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Staging => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// Smallest size class, bytes.
const MIN_CLASS: u64 = 256;
/// Idle buffers kept per (size class, kind).
const KEEP_PER_CLASS: usize = 16;

type PoolMap = HashMap<(u64, BufferKind), Vec<wgpu::Buffer>>;

/// Reuses buffers across requests: sizes are rounded up to a power of two
/// (at least 256 bytes), and a buffer goes back to the pool when its
/// [`PooledBuffer`] is dropped.
#[derive(Debug, Default)]
struct BufferPool {
    free: Arc<Mutex<PoolMap>>,
    created: std::sync::atomic::AtomicU64,
}

/// A buffer borrowed from the context's pool; returned to it on drop. Its
/// size is a size class, at least what was asked for: kernels must take
/// their sizes from their parameters, never from `arrayLength`.
#[derive(Debug)]
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    key: (u64, BufferKind),
    home: Arc<Mutex<PoolMap>>,
}

impl PooledBuffer {
    /// Keeps this buffer out of the pool when dropped (it may still be in
    /// use by the GPU).
    pub fn forget(&mut self) {
        self.buffer = None;
    }

    /// The buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        // Always `Some` until drop.
        self.buffer.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut free = self.home.lock();
            let list = free.entry(self.key).or_default();
            if list.len() < KEEP_PER_CLASS {
                list.push(b);
            }
        }
    }
}

/// One device and queue plus the shader, pipeline and buffer caches (see
/// the [module docs](self)). Cheap to share: wrap it in an `Arc`.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
    modules: Mutex<HashMap<(&'static str, Storage), Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    pool: BufferPool,
    /// Held by a [`Request`] from creation to completion: requests on one
    /// context run one at a time (re-entrant, so one thread may hold
    /// several).
    exec: parking_lot::ReentrantMutex<()>,
    /// Time every dispatch of every request (see [`GpuContext::set_profiling`]).
    profiling: AtomicBool,
    /// The per-dispatch times of the last profiled request.
    last_profile: Mutex<Option<Profile>>,
    /// Bind groups by kernel, parameter slice and buffers: with pooled
    /// buffers, a request shape seen before finds its bind groups here.
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
    bind_groups_created: AtomicU64,
}

/// Identity of a bind group: the kernel (its cache address), the
/// parameter buffer with offset and size, the storage buffers in order.
type BindKey = (usize, wgpu::Buffer, u64, u64, Vec<wgpu::Buffer>);

/// The bind-group cache is emptied when it grows past this (its entries
/// keep their buffers alive).
const BIND_GROUP_CACHE_MAX: usize = 2048;

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &describe_adapter(&self.info))
            .field("features", &self.features)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Chooses an adapter for `req`, opens a device on it and sets up the
    /// error and device-lost handlers.
    pub fn new(req: &AdapterRequest) -> Result<Self, GpuError> {
        let instance = create_instance(req);
        let adapter = select_adapter(&instance, req)?;
        Self::from_adapter(&adapter)
    }

    /// [`GpuContext::new`] with [`AdapterRequest::from_env`].
    pub fn new_from_env() -> Result<Self, GpuError> {
        Self::new(&AdapterRequest::from_env())
    }

    /// Opens a device on an adapter chosen by the caller.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        let (device, queue, features) = open_device(adapter)?;
        let limits = device.limits();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_reason = Arc::new(Mutex::new(None));
        {
            let (lost, reason) = (lost.clone(), lost_reason.clone());
            device.set_device_lost_callback(move |why, msg| {
                *reason.lock() = Some(format!("{why:?}: {msg}"));
                lost.store(true, Ordering::SeqCst);
            });
        }
        // Errors outside an error scope would panic by default: keep the
        // last one instead (requests report it).
        let uncaptured = Arc::new(Mutex::new(None));
        {
            let slot = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                *slot.lock() = Some(e.to_string());
            }));
        }
        Ok(Self {
            device,
            queue,
            info,
            features,
            limits,
            lost,
            lost_reason,
            uncaptured,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            pool: BufferPool::default(),
            exec: parking_lot::ReentrantMutex::new(()),
            profiling: AtomicBool::new(false),
            last_profile: Mutex::new(None),
            bind_groups: Mutex::new(HashMap::new()),
            bind_groups_created: AtomicU64::new(0),
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's name, back end, type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// `"name (backend, type)"`.
    pub fn adapter_name(&self) -> String {
        describe_adapter(&self.info)
    }

    /// Optional features granted (a subset of
    /// [`crate::device::OPTIONAL_FEATURES`]).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// The device's limits (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether f16 storage can be used (`SHADER_F16` granted).
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether timestamp queries can be used.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Whether the device was lost; every later request fails with
    /// [`GpuError::DeviceLost`].
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Times every dispatch of every later request with timestamp queries
    /// (when the device has them), one compute pass per dispatch; read the
    /// times of the last request with [`GpuContext::take_profile`]. For
    /// benchmarks: the extra passes and queries cost a little time.
    pub fn set_profiling(&self, on: bool) {
        self.profiling.store(on, Ordering::SeqCst);
    }

    /// Per-dispatch GPU times of the last request that ran while profiling
    /// was on (`None` if none did, or the device has no timestamp queries).
    pub fn take_profile(&self) -> Option<Profile> {
        self.last_profile.lock().take()
    }

    /// Destroys the device, as a driver reset or a removed GPU would: the
    /// device-lost handler runs and every later request fails with
    /// [`GpuError::DeviceLost`]. Callers test their recovery path with it.
    pub fn destroy(&self) {
        self.device.destroy();
        // The lost callback runs on a later poll; record the loss now.
        let _ = self.device.poll(wgpu::PollType::Poll);
        if !self.is_lost() {
            *self.lost_reason.lock() = Some("Destroyed: the device was destroyed".into());
            self.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Bind groups created so far (a repeated request shape reuses its
    /// cached ones).
    pub fn bind_groups_created(&self) -> u64 {
        self.bind_groups_created.load(Ordering::Relaxed)
    }

    /// Buffers created by the pool so far (tests check steady-state reuse).
    pub fn buffers_created(&self) -> u64 {
        self.pool.created.load(Ordering::Relaxed)
    }

    fn check_alive(&self) -> Result<(), GpuError> {
        if self.is_lost() {
            let why = self.lost_reason.lock().clone().unwrap_or_default();
            return Err(GpuError::DeviceLost(why));
        }
        Ok(())
    }

    /// Polls until submission `index` has completed and every map callback
    /// in `pending` has run (callbacks run in whichever thread polls).
    fn wait_for(&self, index: wgpu::SubmissionIndex, pending: &[MapSlot]) -> Result<(), String> {
        const LIMIT: Duration = Duration::from_secs(600);
        let t0 = Instant::now();
        let mut poll = wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(LIMIT),
        };
        loop {
            self.device.poll(poll).map_err(|e| e.to_string())?;
            if pending.iter().all(|p| p.lock().is_some()) {
                return Ok(());
            }
            if self.is_lost() || t0.elapsed() > LIMIT {
                return Err("the buffer map did not complete".into());
            }
            std::thread::yield_now();
            poll = wgpu::PollType::Poll;
        }
    }

    /// The compiled pipeline for `spec`, built on first use and cached.
    pub fn kernel(&self, spec: &KernelSpec<'_>) -> Result<Arc<Kernel>, GpuError> {
        self.check_alive()?;
        let mut constants: Vec<(String, u64)> = spec
            .constants
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.to_bits()))
            .collect();
        constants.sort();
        let key = PipelineKey {
            shader: spec.shader.name,
            storage: spec.storage,
            entry: spec.entry.to_string(),
            constants,
            zero: spec.zero_workgroup_memory,
        };
        if let Some(k) = self.pipelines.lock().get(&key) {
            return Ok(k.clone());
        }
        let label = format!("{}::{}", spec.shader.name, spec.entry);
        let fail = |message: String| GpuError::Pipeline {
            shader: spec.shader.name.into(),
            entry: spec.entry.into(),
            message,
        };
        if spec.storage == Storage::F16 && !self.has_f16() {
            return Err(fail(
                "f16 storage needs SHADER_F16, which this device lacks".into(),
            ));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(spec.shader, spec.storage);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: spec.constants,
                    zero_initialize_workgroup_memory: spec.zero_workgroup_memory,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // A bad module stays cached as bad: drop it so a fixed spec
            // does not see it (modules only depend on the source, so this
            // is only about memory).
            return Err(fail(e.to_string()));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let kernel = Arc::new(Kernel {
            label,
            pipeline,
            layout,
        });
        self.pipelines.lock().insert(key, kernel.clone());
        Ok(kernel)
    }

    fn module(&self, shader: Shader, storage: Storage) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.modules.lock();
        modules
            .entry((shader.name, storage))
            .or_insert_with(|| {
                let src = format!("{}{}", storage.prelude(), shader.source);
                Arc::new(
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.name),
                            source: wgpu::ShaderSource::Wgsl(src.into()),
                        }),
                )
            })
            .clone()
    }

    /// A pooled buffer of at least `bytes` bytes (contents unspecified).
    pub fn buffer(&self, bytes: u64, kind: BufferKind) -> Result<PooledBuffer, GpuError> {
        self.check_alive()?;
        let class = bytes.max(MIN_CLASS).next_power_of_two();
        let max = match kind {
            BufferKind::Storage => self.limits.max_storage_buffer_binding_size,
            BufferKind::Uniform => self
                .limits
                .max_uniform_buffer_binding_size
                .max(self.limits.max_buffer_size.min(1 << 20)),
            BufferKind::Staging => self.limits.max_buffer_size,
        }
        .min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(GpuError::Unsupported(format!(
                "a {kind:?} buffer of {bytes} bytes exceeds the device limit of {max}"
            )));
        }
        let class = class.min(max.max(MIN_CLASS));
        let key = (class, kind);
        let reused = self.pool.free.lock().get_mut(&key).and_then(Vec::pop);
        let buffer = match reused {
            Some(b) => b,
            None => {
                self.pool.created.fetch_add(1, Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("transact-gpu pool"),
                    size: class,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                })
            }
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            key,
            home: self.pool.free.clone(),
        })
    }

    /// A pooled storage buffer of at least `bytes` bytes.
    pub fn storage(&self, bytes: u64) -> Result<PooledBuffer, GpuError> {
        self.buffer(bytes, BufferKind::Storage)
    }

    /// A pooled storage buffer holding `data` (written with
    /// `queue.write_buffer`; it lands before the next submission).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<PooledBuffer, GpuError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(bytes.len() as u64)?;
        self.write(&buf, bytes);
        Ok(buf)
    }

    /// Writes `bytes` at the start of `buffer`, padding to a multiple of 4.
    pub fn write(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        let whole = bytes.len() - bytes.len() % 4;
        if whole > 0 {
            self.queue.write_buffer(buffer, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(buffer, whole as u64, &tail);
        }
    }

    /// A long-lived storage buffer (not pooled) holding `data`, e.g. weights.
    pub fn persistent<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<wgpu::Buffer, GpuError> {
        self.check_alive()?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let size = (bytes.len() as u64).max(4).next_multiple_of(4);
        if size > self.limits.max_storage_buffer_binding_size {
            return Err(GpuError::Unsupported(format!(
                "{label}: {size} bytes exceed the storage binding limit"
            )));
        }
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: BufferKind::Storage.usage(),
            mapped_at_creation: false,
        });
        self.write(&buf, bytes);
        Ok(buf)
    }

    /// Starts recording a request (see [`Request`]).
    ///
    /// Requests on one context are serialised: this waits until requests
    /// held by other threads have finished. Create the request *before*
    /// uploading its inputs, so that the uploads are covered too (pooled
    /// buffers are only ever written while their request holds the lock).
    pub fn request<'c>(&'c self, label: &str) -> Request<'c> {
        Request {
            _exec: self.exec.lock(),
            ctx: self,
            label: label.to_string(),
            dispatches: Vec::new(),
            params: Vec::new(),
            timing: false,
            kept: Vec::new(),
        }
    }
}

struct Dispatch {
    kernel: Arc<Kernel>,
    param_offset: u64,
    param_size: u64,
    buffers: Vec<wgpu::Buffer>,
    groups: [u32; 3],
}

/// The dispatches of one request, recorded in order and submitted as one
/// command buffer; wgpu inserts the barriers between dispatches that share
/// a buffer.
pub struct Request<'c> {
    _exec: parking_lot::ReentrantMutexGuard<'c, ()>,
    ctx: &'c GpuContext,
    label: String,
    dispatches: Vec<Dispatch>,
    /// Every dispatch's parameter block, each at an aligned offset; uploaded
    /// as one uniform buffer.
    params: Vec<u8>,
    timing: bool,
    /// Pooled scratch buffers the dispatches use, returned to the pool when
    /// the request has finished (see [`Request::keep`]).
    kept: Vec<PooledBuffer>,
}

/// Result of [`Request::finish_read`].
#[derive(Clone, Debug, PartialEq)]
pub struct Readback<T> {
    /// The values read back.
    pub data: Vec<T>,
    /// GPU time of the request's compute pass from timestamp queries, when
    /// timing was asked for and the device has them.
    pub gpu_time: Option<Duration>,
    /// Wall time from submission to the mapped result.
    pub wall_time: Duration,
}

impl<'c> Request<'c> {
    /// Measure the compute pass with timestamp queries (when the device has
    /// them; [`Readback::gpu_time`] is `None` otherwise).
    pub fn with_timing(mut self, on: bool) -> Self {
        self.timing = on && self.ctx.has_timestamps();
        self
    }

    /// Keeps a pooled buffer out of the pool until this request has
    /// finished: for scratch buffers that a launcher takes while recording
    /// (dropping one earlier would let a later dispatch of the same request
    /// get the same buffer).
    pub fn keep(&mut self, buffer: PooledBuffer) {
        self.kept.push(buffer);
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Records one dispatch of `kernel`: `params` at binding 0 (a uniform
    /// struct), `buffers` at bindings 1, 2, …, `groups` workgroups.
    /// Fails if a workgroup count exceeds the device limit.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Arc<Kernel>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(GpuError::Unsupported(format!(
                "{}: workgroup counts {groups:?} exceed the device limit {max}",
                kernel.label
            )));
        }
        let align = u64::from(self.ctx.limits.min_uniform_buffer_offset_alignment).max(16);
        let offset = (self.params.len() as u64).next_multiple_of(align);
        let bytes: &[u8] = bytemuck::bytes_of(params);
        self.params.resize(offset as usize, 0);
        self.params.extend_from_slice(bytes);
        // Uniform bindings must be a multiple of 16 bytes.
        let size = (bytes.len() as u64).max(16).next_multiple_of(16);
        self.params.resize((offset + size) as usize, 0);
        self.dispatches.push(Dispatch {
            kernel: kernel.clone(),
            param_offset: offset,
            param_size: size,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            groups,
        });
        Ok(())
    }

    /// Submits the request and waits for it (no readback).
    pub fn finish(self) -> Result<Duration, GpuError> {
        Ok(self.run::<u32>(None)?.wall_time)
    }

    /// Submits the request, then copies the first `len` values of `src`
    /// into a staging buffer and reads them back (the only map of the
    /// request).
    pub fn finish_read<T: bytemuck::Pod>(
        self,
        src: &wgpu::Buffer,
        len: usize,
    ) -> Result<Readback<T>, GpuError> {
        self.run(Some((src, len)))
    }

    fn run<T: bytemuck::Pod>(
        mut self,
        read: Option<(&wgpu::Buffer, usize)>,
    ) -> Result<Readback<T>, GpuError> {
        let ctx = self.ctx;
        ctx.check_alive()?;
        let device = &ctx.device;
        let what = format!("request {}", self.label);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let param_buf = ctx.buffer(self.params.len().max(16) as u64, BufferKind::Uniform)?;
        if !self.params.is_empty() {
            ctx.write(&param_buf, &self.params);
        }
        let groups: Vec<wgpu::BindGroup> = {
            let mut cache = ctx.bind_groups.lock();
            self.dispatches
                .iter()
                .map(|d| {
                    let key: BindKey = (
                        Arc::as_ptr(&d.kernel) as usize,
                        (*param_buf).clone(),
                        d.param_offset,
                        d.param_size,
                        d.buffers.clone(),
                    );
                    if let Some(g) = cache.get(&key) {
                        return g.clone();
                    }
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &param_buf,
                            offset: d.param_offset,
                            size: std::num::NonZeroU64::new(d.param_size),
                        }),
                    }];
                    for (i, b) in d.buffers.iter().enumerate() {
                        entries.push(wgpu::BindGroupEntry {
                            binding: i as u32 + 1,
                            resource: b.as_entire_binding(),
                        });
                    }
                    let g = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&d.kernel.label),
                        layout: &d.kernel.layout,
                        entries: &entries,
                    });
                    ctx.bind_groups_created.fetch_add(1, Ordering::Relaxed);
                    if cache.len() >= BIND_GROUP_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(key, g.clone());
                    g
                })
                .collect()
        };
        // Dispatches that run (a zero workgroup count is skipped).
        let live: Vec<usize> = (0..self.dispatches.len())
            .filter(|&i| !self.dispatches[i].groups.contains(&0))
            .collect();
        let per_dispatch =
            ctx.profiling.load(Ordering::SeqCst) && ctx.has_timestamps() && !live.is_empty();
        let n_queries = if per_dispatch {
            // Two per dispatch, within wgpu's limit on one query set.
            (2 * live.len()).min(wgpu::QUERY_SET_MAX_QUERIES as usize)
        } else if self.timing || (ctx.profiling.load(Ordering::SeqCst) && ctx.has_timestamps()) {
            2
        } else {
            0
        };
        let queries = (n_queries > 0).then(|| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("transact-gpu timing"),
                ty: wgpu::QueryType::Timestamp,
                count: n_queries as u32,
            })
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some(&self.label),
        });
        if per_dispatch && let Some(q) = &queries {
            // One pass per dispatch, each bracketed by its own timestamps
            // (dispatches past the query limit share the last pass's end).
            for (j, &i) in live.iter().enumerate() {
                let d = &self.dispatches[i];
                let timed = 2 * j + 1 < n_queries;
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&d.kernel.label),
                    timestamp_writes: timed.then(|| wgpu::ComputePassTimestampWrites {
                        query_set: q,
                        beginning_of_pass_write_index: Some(2 * j as u32),
                        end_of_pass_write_index: Some(2 * j as u32 + 1),
                    }),
                });
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &groups[i], &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        } else {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&self.label),
                timestamp_writes: queries.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for &i in &live {
                let d = &self.dispatches[i];
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &groups[i], &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        let elem = std::mem::size_of::<T>() as u64;
        let read_bytes = read.map(|(_, n)| (n as u64 * elem).next_multiple_of(4));
        let ts_bytes = 8 * n_queries as u64;
        let mut ts_bufs = None;
        if let Some(q) = &queries {
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: ts_bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            enc.resolve_query_set(q, 0..n_queries as u32, &resolve, 0);
            let stage = ctx.buffer(ts_bytes, BufferKind::Staging)?;
            enc.copy_buffer_to_buffer(&resolve, 0, &stage, 0, ts_bytes);
            ts_bufs = Some((resolve, stage));
        }
        let staging = match (read, read_bytes) {
            (Some((src, _)), Some(bytes)) if bytes > 0 => {
                if bytes > src.size() {
                    return Err(GpuError::bad(
                        "readback",
                        format!("{bytes} bytes asked from a {}-byte buffer", src.size()),
                    ));
                }
                let st = ctx.buffer(bytes, BufferKind::Staging)?;
                enc.copy_buffer_to_buffer(src, 0, &st, 0, bytes);
                Some(st)
            }
            _ => None,
        };
        let start = Instant::now();
        let index = ctx.queue.submit([enc.finish()]);
        let map_err = |message: String| GpuError::Readback {
            what: what.clone(),
            message,
        };
        let mut pending = Vec::new();
        if let (Some(st), Some(bytes)) = (&staging, read_bytes) {
            pending.push(map_async(st, bytes));
        }
        if let Some((_, st)) = &ts_bufs {
            pending.push(map_async(st, ts_bytes));
        }
        // Wait for this submission. Another thread's poll may be the one
        // that runs our map callbacks, a moment after our own poll returns:
        // keep polling until they have run.
        let waited = ctx.wait_for(index, &pending);
        let wall_time = start.elapsed();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(GpuError::Device {
                what,
                message: e.to_string(),
            });
        }
        if let Some(msg) = ctx.uncaptured.lock().take() {
            return Err(GpuError::Device { what, message: msg });
        }
        ctx.check_alive()?;
        if let Err(e) = waited {
            // The GPU may still use this request's buffers: keep them out
            // of the pool.
            if let Some(mut st) = staging {
                st.forget();
            }
            for b in &mut self.kept {
                b.forget();
            }
            return Err(map_err(e));
        }
        for p in pending {
            if let Some(Err(e)) = p.lock().take() {
                return Err(map_err(e));
            }
        }
        let mut data = Vec::new();
        if let (Some(st), Some((_, n))) = (&staging, read) {
            let view = st
                .slice(..read_bytes.unwrap_or(0))
                .get_mapped_range()
                .map_err(|e| map_err(e.to_string()))?;
            let bytes = &view[..n * elem as usize];
            data = bytemuck::pod_collect_to_vec(bytes);
            drop(view);
            st.unmap();
        }
        let mut gpu_time = None;
        if let Some((_, st)) = &ts_bufs {
            let view = st
                .slice(..ts_bytes)
                .get_mapped_range()
                .map_err(|e| map_err(e.to_string()))?;
            let t: Vec<u64> = bytemuck::pod_collect_to_vec(&view[..]);
            drop(view);
            st.unmap();
            let period = f64::from(ctx.queue.get_timestamp_period());
            let span = |a: u64, b: u64| {
                Duration::from_nanos((b.saturating_sub(a) as f64 * period).round() as u64)
            };
            if let (Some(&first), Some(&last)) = (t.first(), t.last())
                && last >= first
            {
                gpu_time = Some(span(first, last));
            }
            if ctx.profiling.load(Ordering::SeqCst) {
                let kernels = if per_dispatch {
                    live.iter()
                        .zip(t.chunks_exact(2))
                        .map(|(&i, w)| {
                            let d = &self.dispatches[i];
                            KernelTime {
                                label: d.kernel.label.clone(),
                                groups: d.groups,
                                time: span(w[0], w[1]),
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                *ctx.last_profile.lock() = Some(Profile {
                    request: self.label.clone(),
                    total: gpu_time.unwrap_or_default(),
                    kernels,
                });
            }
        }
        Ok(Readback {
            data,
            gpu_time,
            wall_time,
        })
    }
}

type MapSlot = Arc<Mutex<Option<Result<(), String>>>>;

fn map_async(buf: &wgpu::Buffer, bytes: u64) -> MapSlot {
    let slot: MapSlot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    buf.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
        *s.lock() = Some(r.map_err(|e| e.to_string()));
    });
    slot
}

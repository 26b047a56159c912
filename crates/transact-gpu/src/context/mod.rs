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
//!
//! # Files
//!
//! - `mod.rs`: [`GpuContext`] itself: opening the device, its properties,
//!   device loss, profiling switches.
//! - `kernel.rs`: [`Shader`], [`Storage`], [`KernelSpec`], [`Kernel`] and
//!   the shader-module and pipeline caches.
//! - `pool.rs`: the buffer pool ([`BufferKind`], [`PooledBuffer`]),
//!   uploads and persistent buffers.
//! - `request.rs`: recording a [`Request`] (dispatches and their parameter
//!   blocks).
//! - `submit.rs`: encoding, submitting and reading back a request
//!   ([`Readback`]), timestamps, the bind-group cache.

mod kernel;
mod pool;
mod request;
mod submit;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::GpuError;
use crate::device::{
    AdapterRequest, create_instance, describe_adapter, open_device, select_adapter,
};
use crate::timing::Profile;

use kernel::PipelineKey;
pub use kernel::{Kernel, KernelSpec, Shader, Storage};
use pool::BufferPool;
pub use pool::{BufferKind, PooledBuffer};
pub use request::Request;
pub use submit::Readback;

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
}

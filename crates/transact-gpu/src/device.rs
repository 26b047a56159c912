//! Adapter selection and device creation.
//!
//! [`AdapterRequest::from_env`] reads the usual wgpu environment variables:
//!
//! - `WGPU_BACKEND`: comma-separated back ends (`vulkan`, `metal`, `dx12`, …);
//!   default: every back end compiled in.
//! - `WGPU_ADAPTER_NAME`: case-insensitive substring of the adapter name
//!   (e.g. `llvmpipe`, `nvidia`). When set and nothing matches, selection
//!   fails with [`GpuError::NoAdapter`] listing the adapters seen.
//! - `WGPU_POWER_PREF`: `high` (default) or `low`; decides the order of
//!   device types (discrete first, or integrated first). Software adapters
//!   (lavapipe's `llvmpipe`) are allowed and come last.
//!
//! [`open_device`] requests the adapter's own limits (so large workgroup
//! memory is usable) and the optional features `SHADER_F16` and
//! `TIMESTAMP_QUERY` only when the adapter has them.

use crate::GpuError;

/// How to choose an adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterRequest {
    /// Back ends to enumerate.
    pub backends: wgpu::Backends,
    /// Order of device types: high performance puts discrete GPUs first,
    /// low power integrated ones.
    pub power_preference: wgpu::PowerPreference,
    /// Case-insensitive substring the adapter name must contain.
    pub name_contains: Option<String>,
}

impl Default for AdapterRequest {
    /// Every back end, high performance first, any name.
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::all(),
            power_preference: wgpu::PowerPreference::HighPerformance,
            name_contains: None,
        }
    }
}

impl AdapterRequest {
    /// The request described by `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF` (see the [module docs](self)); unset variables keep
    /// the [`Default`].
    pub fn from_env() -> Self {
        let d = Self::default();
        let name = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Self {
            backends: wgpu::Backends::from_env().unwrap_or(d.backends),
            power_preference: match wgpu::PowerPreference::from_env() {
                Some(wgpu::PowerPreference::None) | None => d.power_preference,
                Some(p) => p,
            },
            name_contains: name,
        }
    }

    /// A short description for error messages.
    fn describe(&self) -> String {
        let mut s = format!(
            "backends {:?}, power preference {:?}",
            self.backends, self.power_preference
        );
        if let Some(n) = &self.name_contains {
            s.push_str(&format!(", WGPU_ADAPTER_NAME containing {n:?}"));
        }
        s
    }

    /// Rank of a device type (lower is preferred).
    fn rank(&self, ty: wgpu::DeviceType) -> u8 {
        use wgpu::DeviceType as T;
        let low = self.power_preference == wgpu::PowerPreference::LowPower;
        match ty {
            T::DiscreteGpu if low => 1,
            T::DiscreteGpu => 0,
            T::IntegratedGpu if low => 0,
            T::IntegratedGpu => 1,
            T::VirtualGpu => 2,
            T::Cpu => 3,
            T::Other => 4,
        }
    }
}

/// `"name (backend, type)"`, as listed in errors.
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Creates an instance for `req.backends` (other instance options from the
/// environment).
pub fn create_instance(req: &AdapterRequest) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = req.backends;
    wgpu::Instance::new(desc)
}

/// Enumerates the adapters of `instance` and picks one for `req`: the first
/// whose name contains `req.name_contains` if set, otherwise the best device
/// type for the power preference (ties keep enumeration order).
pub fn select_adapter(
    instance: &wgpu::Instance,
    req: &AdapterRequest,
) -> Result<wgpu::Adapter, GpuError> {
    let adapters = pollster::block_on(instance.enumerate_adapters(req.backends));
    let seen: Vec<String> = adapters
        .iter()
        .map(|a| describe_adapter(&a.get_info()))
        .collect();
    let chosen = match &req.name_contains {
        Some(want) => {
            let want = want.to_lowercase();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
        }
        None => adapters
            .into_iter()
            .enumerate()
            .min_by_key(|(i, a)| (req.rank(a.get_info().device_type), *i))
            .map(|(_, a)| a),
    };
    chosen.ok_or_else(|| GpuError::NoAdapter {
        tried: req.describe(),
        adapters_seen: seen,
    })
}

/// Optional features this crate uses when the adapter offers them.
pub const OPTIONAL_FEATURES: wgpu::Features =
    wgpu::Features::SHADER_F16.union(wgpu::Features::TIMESTAMP_QUERY);

/// Opens a device on `adapter` with the adapter's limits and the
/// [`OPTIONAL_FEATURES`] it has. Returns the device, its queue and the
/// features granted.
pub fn open_device(
    adapter: &wgpu::Adapter,
) -> Result<(wgpu::Device, wgpu::Queue, wgpu::Features), GpuError> {
    let features = adapter.features() & OPTIONAL_FEATURES;
    let desc = wgpu::DeviceDescriptor {
        label: Some("transact-gpu"),
        required_features: features,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::default(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| GpuError::RequestDevice {
            adapter: describe_adapter(&adapter.get_info()),
            message: e.to_string(),
        })?;
    Ok((device, queue, features))
}

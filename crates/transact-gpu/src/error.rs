//! The crate's error type.

/// Everything that can go wrong on the GPU path. Every variant names what
/// failed, so a caller can log it and fall back to the CPU model.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter fits the request (none at all, or none matching
    /// `WGPU_ADAPTER_NAME`).
    #[error("no GPU adapter: tried {tried}; adapters seen: {}", seen(.adapters_seen))]
    NoAdapter {
        /// What was asked for (backends, power preference, name filter).
        tried: String,
        /// Every adapter the instance enumerated, as `"name (backend, type)"`.
        adapters_seen: Vec<String>,
    },
    /// The adapter refused to open a device.
    #[error("could not open a device on adapter {adapter}: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's reason.
        message: String,
    },
    /// A shader failed to compile or a pipeline failed to build.
    #[error("pipeline {shader}::{entry} failed to build: {message}")]
    Pipeline {
        /// Shader file name (without `.wgsl`).
        shader: String,
        /// Entry point.
        entry: String,
        /// The compiler's or validator's message.
        message: String,
    },
    /// wgpu reported a validation or out-of-memory error while running a
    /// request.
    #[error("GPU {what} failed: {message}")]
    Device {
        /// The operation (e.g. "submit of v2 forward").
        what: String,
        /// wgpu's message.
        message: String,
    },
    /// The device was lost (driver reset, device destroyed); recreate the
    /// context to continue.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// Mapping a buffer for readback failed.
    #[error("reading back {what} failed: {message}")]
    Readback {
        /// What was being read.
        what: String,
        /// wgpu's message.
        message: String,
    },
    /// An input has the wrong length or an invalid value.
    #[error("bad input {name}: {detail}")]
    BadInput {
        /// Input name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The request does not fit this device or this kernel (a limit or a
    /// feature is missing).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
}

fn seen(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

impl GpuError {
    /// `BadInput` for a length mismatch.
    pub(crate) fn len(name: &str, expected: usize, got: usize) -> Self {
        GpuError::BadInput {
            name: name.into(),
            detail: format!("expected {expected} values, got {got}"),
        }
    }

    /// `BadInput` with a free-form detail.
    pub(crate) fn bad(name: &str, detail: impl Into<String>) -> Self {
        GpuError::BadInput {
            name: name.into(),
            detail: detail.into(),
        }
    }
}

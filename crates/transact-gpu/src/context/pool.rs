//! The buffer pool: size classes, reuse on drop, uploads and persistent
//! buffers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::GpuContext;
use crate::GpuError;

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
pub(super) struct BufferPool {
    pub(super) free: Arc<Mutex<PoolMap>>,
    pub(super) created: std::sync::atomic::AtomicU64,
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

impl GpuContext {
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
}

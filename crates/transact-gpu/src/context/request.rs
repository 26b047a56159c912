//! Recording a request: dispatches, their parameter blocks, the scratch
//! buffers it keeps.

use std::sync::Arc;
use std::time::Duration;

use super::{GpuContext, Kernel, PooledBuffer, Readback};
use crate::GpuError;

impl GpuContext {
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

pub(super) struct Dispatch {
    pub(super) kernel: Arc<Kernel>,
    pub(super) param_offset: u64,
    pub(super) param_size: u64,
    pub(super) buffers: Vec<wgpu::Buffer>,
    pub(super) groups: [u32; 3],
}

/// The dispatches of one request, recorded in order and submitted as one
/// command buffer; wgpu inserts the barriers between dispatches that share
/// a buffer.
pub struct Request<'c> {
    pub(super) _exec: parking_lot::ReentrantMutexGuard<'c, ()>,
    pub(super) ctx: &'c GpuContext,
    pub(super) label: String,
    pub(super) dispatches: Vec<Dispatch>,
    /// Every dispatch's parameter block, each at an aligned offset; uploaded
    /// as one uniform buffer.
    pub(super) params: Vec<u8>,
    pub(super) timing: bool,
    /// Pooled scratch buffers the dispatches use, returned to the pool when
    /// the request has finished (see [`Request::keep`]).
    pub(super) kept: Vec<PooledBuffer>,
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
}

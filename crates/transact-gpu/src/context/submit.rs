//! Submitting a recorded request: parameter upload, bind groups (cached),
//! one command buffer, timestamps, the single readback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{BIND_GROUP_CACHE_MAX, BindKey, BufferKind, GpuContext, Request};
use crate::GpuError;
use crate::timing::{KernelTime, Profile};

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

impl GpuContext {
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
}

impl Request<'_> {
    pub(super) fn run<T: bytemuck::Pod>(
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

//! Timing of GPU work.
//!
//! [`crate::Request::with_timing`] asks for timestamp queries around a
//! request's compute pass; on devices without `TIMESTAMP_QUERY` (lavapipe
//! may lack it) only the wall time from submission to the mapped result is
//! known. [`time_best_of`] runs a closure several times and keeps the
//! fastest run.
//!
//! For a per-kernel breakdown, [`crate::GpuContext::set_profiling`] times
//! every dispatch of every request (one compute pass per dispatch, each
//! bracketed by timestamps); [`crate::GpuContext::take_profile`] returns the
//! last request's [`Profile`].

use std::time::Duration;

use crate::{GpuError, Readback};

/// Which clock a [`Timing`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries around the compute pass.
    Gpu,
    /// CPU wall time around submission and `poll(wait)`.
    Wall,
}

/// The fastest of several runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Best time.
    pub best: Duration,
    /// Median time.
    pub median: Duration,
    /// Where the numbers come from.
    pub clock: Clock,
}

/// Runs `f` `warmup` times untimed, then `runs` times, and reports the
/// best and median (GPU time when every run has one, wall time otherwise).
pub fn time_best_of<T>(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<Readback<T>, GpuError>,
) -> Result<Timing, GpuError> {
    for _ in 0..warmup {
        f()?;
    }
    let mut gpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..runs.max(1) {
        let r = f()?;
        wall.push(r.wall_time);
        if let Some(g) = r.gpu_time {
            gpu.push(g);
        }
    }
    let (mut v, clock) = if gpu.len() == wall.len() {
        (gpu, Clock::Gpu)
    } else {
        (wall, Clock::Wall)
    };
    v.sort();
    Ok(Timing {
        best: v[0],
        median: v[v.len() / 2],
        clock,
    })
}

/// GPU time of one dispatch of a profiled request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTime {
    /// `"shader::entry"` of the kernel.
    pub label: String,
    /// Workgroups dispatched.
    pub groups: [u32; 3],
    /// Time between the timestamps around its compute pass.
    pub time: Duration,
}

/// Per-dispatch GPU times of one request (see
/// [`crate::GpuContext::set_profiling`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// The request's label.
    pub request: String,
    /// From the first dispatch's start to the last one's end.
    pub total: Duration,
    /// Each dispatch in submission order (empty when the request was timed
    /// as a whole only).
    pub kernels: Vec<KernelTime>,
}

/// Time spent in one kernel over a request: [`Profile::by_kernel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSummary {
    /// `"shader::entry"`.
    pub label: String,
    /// Dispatches of it.
    pub dispatches: usize,
    /// Their summed time.
    pub time: Duration,
}

impl Profile {
    /// Sums the dispatches of each kernel, in order of first use.
    pub fn by_kernel(&self) -> Vec<KernelSummary> {
        let mut out: Vec<KernelSummary> = Vec::new();
        for k in &self.kernels {
            match out.iter_mut().find(|s| s.label == k.label) {
                Some(s) => {
                    s.dispatches += 1;
                    s.time += k.time;
                }
                None => out.push(KernelSummary {
                    label: k.label.clone(),
                    dispatches: 1,
                    time: k.time,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{GemmOptions, GemmShape};
    use crate::kernels::layer_norm::LayerNormShape;
    use crate::kernels::{record_gemm, record_layer_norm};
    use crate::{GpuContext, Storage, testing};

    /// A context of its own: profiling and destruction must not touch the
    /// shared one other tests use. `None` when there is no adapter (and
    /// CI does not require one).
    fn own_context() -> Option<GpuContext> {
        match testing::shared_context() {
            Ok(Some(_)) => Some(GpuContext::new_from_env().expect("second context")),
            Ok(None) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Two GEMMs and a LayerNorm in one request; returns the result.
    fn three_kernels(ctx: &GpuContext) -> Vec<f32> {
        let (m, k, n) = (40, 24, 36);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let mut rq = ctx.request("profile test");
        let (ab, bb) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
        let c = ctx.storage((m * n * 4) as u64).unwrap();
        let y = ctx.storage((m * n * 4) as u64).unwrap();
        let s = GemmShape::dense(m, n, k, false);
        record_gemm(ctx, &mut rq, s, GemmOptions::default(), &ab, &bb, &c).unwrap();
        let acc = GemmOptions {
            accumulate: true,
            ..GemmOptions::default()
        };
        record_gemm(ctx, &mut rq, s, acc, &ab, &bb, &c).unwrap();
        let ln = LayerNormShape {
            rows: m,
            d: n,
            seq: 1,
            eps: 1e-5,
            storage: Storage::F32,
        };
        record_layer_norm(ctx, &mut rq, ln, &c, &y, None).unwrap();
        rq.finish_read::<f32>(&y, m * n).unwrap().data
    }

    #[test]
    fn profiling_times_every_dispatch_and_changes_no_result() {
        let Some(ctx) = own_context() else { return };
        let plain = three_kernels(&ctx);
        assert!(ctx.take_profile().is_none(), "profiling was off");
        ctx.set_profiling(true);
        let profiled = three_kernels(&ctx);
        assert_eq!(plain, profiled);
        let p = ctx.take_profile();
        if !ctx.has_timestamps() {
            assert!(p.is_none());
            return;
        }
        let p = p.expect("a profile");
        assert_eq!(p.request, "profile test");
        let labels: Vec<&str> = p.kernels.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(
            labels,
            ["gemm::gemm", "gemm::gemm", "layer_norm::layer_norm"]
        );
        assert_eq!(p.kernels[0].groups, [2, 2, 1]);
        let summed: Duration = p.kernels.iter().map(|k| k.time).sum();
        assert!(summed <= p.total, "{summed:?} > {:?}", p.total);
        let by = p.by_kernel();
        assert_eq!(by.len(), 2);
        assert_eq!((by[0].label.as_str(), by[0].dispatches), ("gemm::gemm", 2));
        assert_eq!(by[0].time, p.kernels[0].time + p.kernels[1].time);
        // Taken: gone until the next profiled request.
        assert!(ctx.take_profile().is_none());
        ctx.set_profiling(false);
        three_kernels(&ctx);
        assert!(ctx.take_profile().is_none());
    }

    #[test]
    fn a_destroyed_device_fails_requests_with_device_lost() {
        let Some(ctx) = own_context() else { return };
        three_kernels(&ctx);
        assert!(!ctx.is_lost());
        ctx.destroy();
        assert!(ctx.is_lost());
        let err = crate::kernels::gemm::gemm(&ctx, 2, 2, 2, &[1.0; 4], &[1.0; 4], false, false)
            .expect_err("a lost device cannot run work");
        assert!(matches!(err, crate::GpuError::DeviceLost(_)), "{err}");
    }
}

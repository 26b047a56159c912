//! Timing of GPU work.
//!
//! [`crate::Request::with_timing`] asks for timestamp queries around a
//! request's compute pass; on devices without `TIMESTAMP_QUERY` (lavapipe
//! may lack it) only the wall time from submission to the mapped result is
//! known. [`time_best_of`] runs a closure several times and keeps the
//! fastest run.

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

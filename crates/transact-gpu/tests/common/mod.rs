//! Shared test helpers.

#![allow(dead_code)]

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_gpu::GpuContext;

/// The shared GPU context, or `None` (test skipped, note printed) when
/// there is no adapter — except under `CI=true`, where that fails.
pub fn test_context() -> Option<Arc<GpuContext>> {
    match transact_gpu::testing::shared_context() {
        Ok(Some(ctx)) => Some(ctx),
        Ok(None) => {
            eprintln!("note: no GPU adapter, test skipped");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Uniform values in ±`scale`.
pub fn random(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Largest `|a − b| / max(1, |b|)`.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs() / y.abs().max(1.0)
            }
        })
        .fold(0.0, f32::max)
}

//! Times the V2 blocks on the chosen adapter: B = 256, S = 192, d = 64,
//! FFN 32, L = 2, causal, every variant and precision the device offers.
//!
//! ```sh
//! cargo run --release -p transact-gpu --example v2_kernels
//! WGPU_ADAPTER_NAME=llvmpipe cargo run --release -p transact-gpu --example v2_kernels
//! V2_VARIANT=fused cargo run --release -p transact-gpu --example v2_kernels
//! ```
//!
//! `V2_VARIANT` (`fused` or `unfused`) times only that variant.

use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_gpu::timing::time_best_of;
use transact_gpu::{GpuContext, GpuError, GpuV2Blocks, Precision, Variant};
use transact_model::v2::{V2Block, blocks_forward};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, seq, d, f, layers) = (256usize, 192usize, 64usize, 32usize, 2usize);
    let ctx = Arc::new(GpuContext::new_from_env()?);
    println!("adapter: {}", ctx.adapter_name());
    println!(
        "features: f16 {}, timestamps {}; workgroup memory {} bytes",
        ctx.has_f16(),
        ctx.has_timestamps(),
        ctx.limits().max_compute_workgroup_storage_size
    );
    println!("shape: B {batch}, S {seq}, d {d}, FFN {f}, L {layers}, causal");
    let blocks = (0..layers)
        .map(|i| V2Block::new_random(d, f, 100 + i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..batch * seq * d)
        .map(|_| rng.random_range(-1.0..=1.0))
        .collect();
    let lens: Vec<usize> = (0..batch).map(|_| rng.random_range(1..=seq)).collect();

    let mut cpu = x.clone();
    let t0 = Instant::now();
    blocks_forward(&blocks, &mut cpu, batch, seq, &lens, true, 1e-5)?;
    println!(
        "cpu (transact-model): {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );

    let mut precisions = vec![Precision::F32];
    if ctx.has_f16() {
        precisions.push(Precision::F16);
    }
    let only = std::env::var("V2_VARIANT").unwrap_or_default();
    let variants: Vec<Variant> = [Variant::Unfused, Variant::Fused]
        .into_iter()
        .filter(|v| only.is_empty() || format!("{v:?}").eq_ignore_ascii_case(&only))
        .collect();
    for p in precisions {
        let mut times = Vec::new();
        for &v in &variants {
            let g = GpuV2Blocks::new(ctx.clone(), &blocks, v, p)?;
            let out = g.forward(&x, batch, seq, &lens, true, 1e-5)?;
            let err = out
                .iter()
                .zip(&cpu)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            let t = time_best_of(1, 3, || -> Result<_, GpuError> {
                g.forward_timed(&x, batch, seq, &lens, true, 1e-5, true)
            })?;
            println!(
                "{:?} {:?} (runs as {:?}): best {:.2} ms, median {:.2} ms ({:?} clock), max rel err vs CPU {err:.1e}",
                v,
                p,
                g.variant(),
                t.best.as_secs_f64() * 1e3,
                t.median.as_secs_f64() * 1e3,
                t.clock
            );
            times.push(t.best.as_secs_f64());
        }
        if let [unfused, fused] = times[..] {
            println!(
                "{p:?}: fused is {:.2}x the speed of unfused",
                unfused / fused
            );
        }
    }
    Ok(())
}

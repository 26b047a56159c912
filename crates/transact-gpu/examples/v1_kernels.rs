//! Times the V1 encoder on the chosen adapter: S = 100 (all kept), d = 96,
//! h = 2, FFN 32, L = 2, K = 10, early fusion and max-pool, at B = 32 and
//! B = 256, for every variant and precision the device offers.
//!
//! ```sh
//! cargo run --release -p transact-gpu --example v1_kernels
//! WGPU_ADAPTER_NAME=llvmpipe cargo run --release -p transact-gpu --example v1_kernels
//! V1_BATCH=32 V1_VARIANT=fused cargo run --release -p transact-gpu --example v1_kernels
//! ```
//!
//! `V1_BATCH` times only that batch size, `V1_VARIANT` (`fused` or
//! `unfused`) only that variant, `V1_LAYERS` sets L (with L = 1 no
//! layer runs the full-width input-projection GEMM: early fusion splits
//! it into a per-request and a per-candidate part), `V1_SEQ` sets S,
//! `V1_RUNS` the timed runs per case (default 3; the best and the median
//! are printed); `V1_PROFILE=1` also prints one profiled run's time per
//! kernel.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_gpu::timing::time_best_of;
use transact_gpu::{GpuContext, GpuTransActV1, Precision, Variant};
use transact_model::{TransActV1, V1Config, V1Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Arc::new(GpuContext::new_from_env()?);
    println!("adapter: {}", ctx.adapter_name());
    println!(
        "features: f16 {}, timestamps {}",
        ctx.has_f16(),
        ctx.has_timestamps()
    );
    let vocab: Vec<i64> = (1..=20).collect();
    let mut cfg = V1Config {
        action_vocab: vocab.clone(),
        ..V1Config::default()
    };
    if let Ok(l) = std::env::var("V1_LAYERS") {
        cfg.num_layer = l.parse()?;
    }
    if let Ok(s) = std::env::var("V1_SEQ") {
        cfg.seq_len = s.parse()?;
    }
    println!(
        "shape: S {}, d {}, h {}, FFN {}, L {}, K {}",
        cfg.seq_len,
        cfg.d_model(),
        cfg.nhead,
        cfg.dim_feedforward,
        cfg.num_layer,
        cfg.latest_n_emb
    );
    let model = TransActV1::new_random(cfg.clone(), 7)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let n = cfg.seq_len;
    let di = cfg.item_emb_dim;
    let ids: Vec<i64> = (0..n)
        .map(|_| vocab[rng.random_range(0..vocab.len())])
        .collect();
    let times: Vec<i64> = (0..n).map(|i| 10_000 - i as i64).collect();
    let items: Vec<f32> = (0..n * di).map(|_| rng.random_range(-1.0..1.0)).collect();

    let batches: Vec<usize> = match std::env::var("V1_BATCH") {
        Ok(b) => vec![b.parse()?],
        Err(_) => vec![32, 256],
    };
    let only = std::env::var("V1_VARIANT").unwrap_or_default();
    let profile = std::env::var("V1_PROFILE").is_ok_and(|v| v == "1");
    let runs: usize = match std::env::var("V1_RUNS") {
        Ok(r) => r.parse()?,
        Err(_) => 3,
    };
    let mut precisions = vec![Precision::F32];
    if ctx.has_f16() {
        precisions.push(Precision::F16);
    }
    let variants: Vec<Variant> = [Variant::Unfused, Variant::Fused]
        .into_iter()
        .filter(|v| only.is_empty() || format!("{v:?}").eq_ignore_ascii_case(&only))
        .collect();
    for batch in batches {
        let cands: Vec<f32> = (0..batch * di)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let req = V1Request {
            action_types: &ids,
            item_embeddings: &items,
            action_times_ms: &times,
            request_time_ms: 10_000,
            candidates: &cands,
        };
        let mut cpu = vec![0.0; batch * model.output_dim()];
        let t0 = std::time::Instant::now();
        model.forward_request(&req, &mut cpu)?;
        println!(
            "B {batch}: cpu (transact-model) {:.2} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        for &p in &precisions {
            for &v in &variants {
                let g = GpuTransActV1::with_options(ctx.clone(), &model, v, p)?;
                let out = g.encode(&req)?;
                let err = out
                    .iter()
                    .zip(&cpu)
                    .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                    .fold(0.0f32, f32::max);
                let t = time_best_of(1, runs, || g.encode_timed(&req, true))?;
                println!(
                    "B {batch} {v:?} {p:?} (runs as {:?} {:?}): best {:.1} ms, median {:.1} ms ({:?} clock), max rel err vs CPU {err:.1e}",
                    g.variant(),
                    g.precision(),
                    t.best.as_secs_f64() * 1e3,
                    t.median.as_secs_f64() * 1e3,
                    t.clock
                );
                if profile {
                    ctx.set_profiling(true);
                    g.encode(&req)?;
                    ctx.set_profiling(false);
                    if let Some(p) = ctx.take_profile() {
                        for k in p.by_kernel() {
                            println!(
                                "    {:<40} {:>3} dispatches {:>9.2} ms",
                                k.label,
                                k.dispatches,
                                k.time.as_secs_f64() * 1e3
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

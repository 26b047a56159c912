//! Times V2's nearest-neighbour selection on the chosen adapter: one user
//! with 16,384 int8 tokens of 32 codes, 256 candidates, top 96; the fused
//! kernel (packed and unpacked dot products) against the unfused path
//! (int8 → f32, GEMM, top-k), each checked against the CPU's
//! `select_nearest_i8`.
//!
//! ```sh
//! cargo run --release -p transact-gpu --example select_kernels
//! SELECT_TOKENS=65536 SELECT_K=256 cargo run --release -p transact-gpu --example select_kernels
//! ```
//!
//! `SELECT_TOKENS`, `SELECT_DIM`, `SELECT_CANDIDATES`, `SELECT_K` and
//! `SELECT_RUNS` change the case; `SELECT_PROFILE=1` adds each kernel's time
//! (with timestamp queries).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_embed::select::{SelectScratch, select_nearest_i8};
use transact_gpu::kernels::select::{SelectInput, SelectOptions, select_nearest_timed};
use transact_gpu::timing::time_best_of;
use transact_gpu::{GpuContext, Variant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = env("SELECT_TOKENS", 16_384);
    let dim = env("SELECT_DIM", 32);
    let b = env("SELECT_CANDIDATES", 256);
    let k = env("SELECT_K", 96);
    let runs = env("SELECT_RUNS", 5);
    let profile = env("SELECT_PROFILE", 0) != 0;
    let ctx = GpuContext::new_from_env()?;
    println!("adapter: {}", ctx.adapter_name());
    println!("shape: {n} tokens × {dim} int8 codes, {b} candidates, top {k}");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let history: Vec<i8> = (0..n * dim).map(|_| rng.random_range(-127..=127)).collect();
    let candidates: Vec<i8> = (0..b * dim).map(|_| rng.random_range(-127..=127)).collect();
    let scales: Vec<f32> = (0..n).map(|_| rng.random_range(0.002..0.02)).collect();
    let input = SelectInput {
        history: &history,
        scales: &scales,
        candidates: &candidates,
        dim,
        k,
    };

    let mut cpu = vec![0u32; b * k];
    let mut scratch = SelectScratch::default();
    select_nearest_i8(
        &history,
        &scales,
        &candidates,
        dim,
        k,
        &mut scratch,
        &mut cpu,
    )?;
    let t0 = Instant::now();
    for _ in 0..runs {
        select_nearest_i8(
            &history,
            &scales,
            &candidates,
            dim,
            k,
            &mut scratch,
            &mut cpu,
        )?;
    }
    println!(
        "cpu (transact-embed, rayon): {:.2} ms per request",
        t0.elapsed().as_secs_f64() * 1e3 / runs.max(1) as f64
    );

    let paths = [
        ("fused (dot4I8Packed)", Variant::Fused, true),
        ("fused (shifts)", Variant::Fused, false),
        ("unfused (int8→f32, GEMM, top-k)", Variant::Unfused, true),
    ];
    let mut best = Vec::new();
    for (label, variant, packed_dot) in paths {
        let o = SelectOptions {
            variant,
            packed_dot,
        };
        let got = select_nearest_timed(&ctx, &input, o, false)?.data;
        let same = got == cpu;
        let t = time_best_of(1, runs, || select_nearest_timed(&ctx, &input, o, true))?;
        println!(
            "{label}: best {:.2} ms, median {:.2} ms ({:?} clock), same as CPU: {same}",
            t.best.as_secs_f64() * 1e3,
            t.median.as_secs_f64() * 1e3,
            t.clock
        );
        if profile {
            ctx.set_profiling(true);
            select_nearest_timed(&ctx, &input, o, false)?;
            ctx.set_profiling(false);
            if let Some(p) = ctx.take_profile() {
                for kt in p.by_kernel() {
                    println!(
                        "    {} × {}: {:.2} ms",
                        kt.label,
                        kt.dispatches,
                        kt.time.as_secs_f64() * 1e3
                    );
                }
            }
        }
        best.push(t.median.as_secs_f64());
    }
    if let [fused, _, unfused] = best[..] {
        println!(
            "fused is {:.2}x the speed of unfused (medians)",
            unfused / fused
        );
    }
    Ok(())
}

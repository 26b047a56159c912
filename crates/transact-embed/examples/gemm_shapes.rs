//! The allocation-free small GEMM beside the `gemm` crate, single-threaded,
//! on the products the V1 encoder makes per request (S = 100, d = 96, h = 2,
//! FFN 32, chunks of 16 candidates), and the per-candidate key transpose.
//!
//! `cargo run --release -p transact-embed --example gemm_shapes`

use std::hint::black_box;
use std::time::Instant;

use transact_embed::EmbedError;
use transact_embed::kernels::{Par, RhsLayout, matmul};
use transact_embed::small_gemm::{matmul_kn, transpose};

fn main() -> Result<(), EmbedError> {
    // (what, m, n, k)
    let shapes = [
        ("q/k/v projection of a chunk", 1600, 48, 96),
        ("attention scores, one candidate", 100, 100, 48),
        ("attention × values, one candidate", 100, 48, 100),
        ("output projection of a chunk", 1600, 96, 48),
        ("FFN in", 1600, 32, 96),
        ("FFN out", 1600, 96, 32),
        ("factored first layer, numerators", 4900, 16, 100),
        ("factored first layer, scores", 16, 100, 48),
    ];
    println!(
        "{:36} {:>5} {:>4} {:>4} {:>12} {:>12}",
        "product", "m", "n", "k", "gemm GF/s", "small GF/s"
    );
    for (what, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let reps = (400_000_000 / (m * n * k)).max(10);
        let flops = 2.0 * (m * n * k) as f64 * reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            matmul(
                m,
                n,
                k,
                black_box(&a),
                &b,
                RhsLayout::KxN,
                &mut c,
                false,
                Par::Seq,
            )?;
        }
        let gemm = flops / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps {
            matmul_kn(m, n, k, black_box(&a), &b, &mut c, false)?;
        }
        let small = flops / t.elapsed().as_secs_f64() / 1e9;
        println!("{what:36} {m:>5} {n:>4} {k:>4} {gemm:>12.1} {small:>12.1}");
    }
    let (rows, cols) = (100, 48);
    let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; rows * cols];
    let reps = 100_000;
    let t = Instant::now();
    for _ in 0..reps {
        transpose(rows, cols, black_box(&src), &mut dst)?;
    }
    let us = t.elapsed().as_secs_f64() / reps as f64 * 1e6;
    println!("transpose of one candidate's keys ({rows} × {cols}): {us:.2} µs");
    Ok(())
}

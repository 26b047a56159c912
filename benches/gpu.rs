//! Criterion benches of the GPU paths (the same work as `transact bench
//! kernels`): the V2 block variants, the GEMM naive and tiled, and the V1
//! encoder, the V2 nearest-neighbour selection fused and unfused.
//!
//! `cargo bench --bench gpu`; `TRANSACT_BENCH_BATCH=32` shrinks the batch
//! (default 256) for a software adapter such as lavapipe. Without an
//! adapter it prints a note and registers nothing.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use transact::bench_gpu::{GemmGpuCase, NnGpuCase, V1GpuCase, V2GpuCase, batch_from_env};
use transact::gpu::GpuContext;

fn gpu(c: &mut Criterion) {
    let ctx = match GpuContext::new_from_env() {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("no GPU adapter ({e}); no GPU benchmarks registered");
            return;
        }
    };
    let batch = batch_from_env();
    eprintln!("adapter: {}, B = {batch}", ctx.adapter_name());
    let mut g = c.benchmark_group("gpu");
    g.throughput(Throughput::Elements(batch as u64));
    g.sample_size(10);
    // Flat sampling: on a software adapter one iteration takes ~0.1-0.5 s,
    // so the linear ramp of 1 + 2 + ... + 10 iterations would be too long.
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    // Each call waits for the device (the request polls until its result is
    // mapped), so the wall time of the loop is the GPU path's time.
    match V2GpuCase::new(ctx.clone(), batch) {
        Ok(v2) => {
            for (i, label) in v2.labels().iter().enumerate() {
                g.bench_function(format!("{}-b{batch}/{label}", V2GpuCase::NAME), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t0 = std::time::Instant::now();
                            if let Err(e) = v2.gpu_run(i) {
                                eprintln!("V2 {label}: {e}");
                            }
                            total += t0.elapsed();
                        }
                        total
                    })
                });
            }
        }
        Err(e) => eprintln!("V2 case not built: {e}"),
    }
    match GemmGpuCase::new(ctx.clone(), batch) {
        Ok(gemm) => {
            for (naive, name) in [(true, "naive"), (false, "tiled")] {
                g.bench_function(format!("{}-b{batch}/{name}", GemmGpuCase::NAME), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            match gemm.run(naive) {
                                Ok(t) => total += t,
                                Err(e) => eprintln!("GEMM {name}: {e}"),
                            }
                        }
                        total
                    })
                });
            }
        }
        Err(e) => eprintln!("GEMM case not built: {e}"),
    }
    match V1GpuCase::new(ctx.clone(), batch) {
        Ok(v1) => {
            for (i, label) in v1.labels().iter().enumerate() {
                g.bench_function(
                    format!("{}-b{batch}/encode-{label}", V1GpuCase::NAME),
                    |b| {
                        b.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                match v1.gpu_encode(i) {
                                    Ok(t) => total += t,
                                    Err(e) => eprintln!("V1 encode {label}: {e}"),
                                }
                            }
                            total
                        })
                    },
                );
            }
        }
        Err(e) => eprintln!("V1 case not built: {e}"),
    }
    match NnGpuCase::new(ctx.clone(), batch) {
        Ok(nn) => {
            for (i, label) in NnGpuCase::LABELS.iter().enumerate() {
                g.bench_function(format!("{}-b{batch}/{label}", NnGpuCase::NAME), |b| {
                    // The whole call (packing, upload, selection, readback).
                    b.iter_custom(|iters| {
                        let t0 = std::time::Instant::now();
                        for _ in 0..iters {
                            if let Err(e) = nn.gpu_run(i) {
                                eprintln!("NN {label}: {e}");
                            }
                        }
                        t0.elapsed()
                    })
                });
            }
        }
        Err(e) => eprintln!("NN case not built: {e}"),
    }
    g.finish();
}

criterion_group!(benches, gpu);
criterion_main!(benches);

//! Criterion benches of the CPU cases (the same work as `transact bench cpu`).
//!
//! `cargo bench --bench cpu`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use transact::bench::{BATCH, StoreReadCase, V1Case, V2Case};

fn v1(c: &mut Criterion) {
    let mut case = V1Case::new().expect("V1 bench case");
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(8));
    g.bench_function(V1Case::NAME, |b| b.iter(|| case.run().expect("V1 forward")));
    g.finish();
}

fn v2(c: &mut Criterion) {
    let mut case = V2Case::new().expect("V2 bench case");
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(8));
    g.bench_function(V2Case::NAME, |b| {
        b.iter(|| case.run().expect("V2 blocks forward"))
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let mut case = StoreReadCase::new().expect("store bench case");
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(StoreReadCase::LEN as u64));
    g.bench_function(StoreReadCase::NAME, |b| {
        b.iter(|| case.run().expect("store read"))
    });
    g.finish();
}

criterion_group!(benches, v1, v2, store);
criterion_main!(benches);

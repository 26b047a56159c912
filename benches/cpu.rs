//! Criterion benches of the CPU cases (the same work as `transact bench cpu`).
//!
//! `cargo bench --bench cpu`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use transact::bench::{BATCH, StoreReadCase, V1Case, V2Case};
use transact::bench_lifelong::{GatherI8Case, InlineI8Case, LifelongReadCase, NnCase};
use transact::bench_v2::V2RankCase;

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

fn lifelong(c: &mut Criterion) {
    let mut read = LifelongReadCase::new().expect("lifelong read case");
    let mut gather = GatherI8Case::new().expect("gather case");
    let mut inline = InlineI8Case::new();
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(
        (LifelongReadCase::LIMITS.lifelong
            + LifelongReadCase::LIMITS.realtime
            + LifelongReadCase::LIMITS.impressions) as u64,
    ));
    g.bench_function(LifelongReadCase::NAME, |b| {
        b.iter(|| read.run().expect("lifelong read"))
    });
    g.throughput(Throughput::Elements(GatherI8Case::LEN as u64));
    g.bench_function(GatherI8Case::NAME, |b| {
        b.iter(|| gather.run().expect("int8 gather"))
    });
    g.throughput(Throughput::Elements(InlineI8Case::LEN as u64));
    g.bench_function(InlineI8Case::NAME, |b| b.iter(|| inline.run()));
    g.finish();
}

fn nn(c: &mut Criterion) {
    let mut case = NnCase::new();
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(NnCase::CANDIDATES as u64));
    g.sample_size(30);
    g.bench_function(NnCase::NAME, |b| b.iter(|| case.run().expect("selection")));
    g.finish();
}

fn v2_rank(c: &mut Criterion) {
    let mut case = V2RankCase::new().expect("V2 rank bench case");
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(10));
    {
        let mut stages = case.stages().expect("V2 stages");
        g.bench_function(V2RankCase::SELECT_NAME, |b| {
            b.iter(|| stages.select().expect("selection"))
        });
        g.bench_function(V2RankCase::SCORE_NAME, |b| {
            b.iter(|| stages.score().expect("model"))
        });
    }
    g.bench_function(V2RankCase::NAME, |b| {
        b.iter(|| case.run().expect("request"))
    });
    g.finish();
}

criterion_group!(benches, v1, v2, store, lifelong, nn, v2_rank);
criterion_main!(benches);

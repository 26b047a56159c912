//! Append latency while a snapshot is written: one thread appends single
//! actions as fast as it can (synced per append, as a server acknowledges
//! them) while the store holds `USERS × PER_USER` actions; the main thread
//! takes a snapshot meanwhile. Prints the append latency percentiles of the
//! appends that started during the snapshot and of those that did not.
//!
//! `cargo bench -p transact-seq --bench snapshot_stall` (env `USERS`,
//! `PER_USER` override the size).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use transact_seq::{Action, ActionType, EmbeddedStore, SequenceStore, StoreConfig, Surface};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn act(item: u64, t: i64) -> Action {
    Action {
        item_id: item,
        action_type: ActionType((item % 4) as u16 + 1),
        timestamp_ms: t,
        surface: Surface(0),
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    let users = env("USERS", 20_000);
    let per_user = env("PER_USER", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::default()
        .with_snapshot_every(0)
        .with_clock(|| i64::MAX / 2);
    let (store, _) = EmbeddedStore::open(dir.path(), config).expect("open");
    let fill = Instant::now();
    for u in 0..users {
        let batch: Vec<Action> = (0..per_user)
            .map(|k| act(u * 1_000 + k, 1_000 + k as i64))
            .collect();
        store.append(u, &batch).expect("fill");
    }
    eprintln!(
        "filled {users} users × {per_user} actions in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples: Vec<(Instant, Duration)> = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                store
                    .append(k % users, &[act(k, 10_000 + k as i64)])
                    .expect("append");
                samples.push((started, started.elapsed()));
                k += 1;
            }
            samples
        })
    };
    std::thread::sleep(Duration::from_millis(1_000));
    let t0 = Instant::now();
    store.snapshot().expect("snapshot");
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(1_000));
    stop.store(true, Ordering::SeqCst);
    let samples = appender.join().expect("appender");
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut during: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| *s >= t0 && *s < t1)
        .map(|(_, d)| ms(d))
        .collect();
    let mut outside: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| *s < t0 || *s >= t1)
        .map(|(_, d)| ms(d))
        .collect();
    let worst = samples.iter().map(|(_, d)| ms(d)).fold(0.0, f64::max);
    println!(
        "snapshot of {} actions: {:.0} ms",
        users * per_user,
        ms(&(t1 - t0))
    );
    println!(
        "appends during the snapshot: {} (p50 {:.3} ms, p99 {:.3} ms); outside: {} (p50 {:.3} ms, p99 {:.3} ms); slowest append {:.1} ms",
        during.len(),
        pct(&mut during, 0.5),
        pct(&mut during, 0.99),
        outside.len(),
        pct(&mut outside, 0.5),
        pct(&mut outside, 0.99),
        worst
    );
}

//! Resident memory of an in-memory store of users with full lifelong
//! histories: `USERS` users (default 10,000), each with 16,384 explicit
//! actions and 4,096 impressions, so every sequence is at its default
//! capacity (realtime 16,384, lifelong 16,384, impressions 4,096).
//!
//! `cargo run --release -p transact-seq --example store_memory -- 10000`
//!
//! Linux only (reads the resident set size from `/proc/self/statm`).

use std::time::Instant;

use transact_seq::{
    Action, ActionType, EmbeddedStore, SequenceLimits, SequenceStore, StoreConfig, Surface,
    UserSequences,
};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let users: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let explicit = StoreConfig::DEFAULT_LIFELONG_CAPACITY as u64;
    let impressions = StoreConfig::DEFAULT_IMPRESSION_CAPACITY as u64;
    let per_user = explicit + impressions;
    let now = 1_700_000_000_000i64;
    let store = EmbeddedStore::in_memory(StoreConfig::default().with_clock(move || now));
    let before = resident_bytes();
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(per_user as usize);
    for user in 0..users {
        batch.clear();
        for i in 0..per_user {
            // Every fifth action an impression until the impressions are in.
            let imp = i % 5 == 0 && i / 5 < impressions;
            batch.push(Action {
                item_id: (user * 7_919 + i * 104_729) % 10_000_000,
                action_type: if imp {
                    ActionType::IMPRESSION
                } else {
                    ActionType((i % 2 + 1) as u16)
                },
                timestamp_ms: now - (per_user - i) as i64 * 1_000,
                surface: Surface((i % 4) as u16),
            });
        }
        store.append(user, &batch)?;
    }
    let fill_s = t0.elapsed().as_secs_f64();
    let after = resident_bytes();
    let mut out = UserSequences::default();
    store.read_sequences(0, &SequenceLimits::ALL, &mut out)?;
    let grown = after.saturating_sub(before);
    println!(
        "users {users}: lifelong {} tokens, realtime {}, impressions {} each",
        out.lifelong.len(),
        out.realtime.len(),
        out.impressions.len()
    );
    println!(
        "resident growth {:.2} GiB = {:.0} KiB per user (filled in {fill_s:.1} s)",
        grown as f64 / (1u64 << 30) as f64,
        grown as f64 / users.max(1) as f64 / 1024.0
    );
    let columns = out.lifelong.len() * 26 + (out.realtime.len() + out.impressions.len()) * 20;
    println!(
        "column bytes per user {:.0} KiB (lifelong 26 B/token, realtime and impressions 20 B/action)",
        columns as f64 / 1024.0
    );
    Ok(())
}

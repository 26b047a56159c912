//! Bytes per logged example and write throughput of the feature log on
//! the synthetic world, through the real serving path (a V2 bundle, a
//! store, a `Ranker` with the Parquet logger). Run in a release build:
//!
//! ```text
//! cargo run --release -p transact-log --example log_throughput
//! ```
//!
//! Write throughput counts only the logger's time (its `log` calls and
//! `finish`), not ranking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transact_log::{ParquetFeatureLogger, WriterOptions};
use transact_rank::{
    Candidate, FeatureLogEntry, FeatureLogError, FeatureLogger, OnLogError, Provenance,
    RankRequest, Ranker, RankerConfig,
};
use transact_seq::{EmbeddedStore, StoreConfig};
use transact_train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact_train::serving::{export_bundle, ingest, item_key, user_key};
use transact_train::trainer::{TrainConfig, Trainer};

/// Times the inner logger.
struct Timed {
    inner: Arc<ParquetFeatureLogger>,
    spent: Mutex<Duration>,
}

impl FeatureLogger for Timed {
    fn log(&self, entry: &FeatureLogEntry<'_>) -> Result<(), FeatureLogError> {
        let t = Instant::now();
        let r = self.inner.log(entry);
        if let Ok(mut s) = self.spent.lock() {
            *s += t.elapsed();
        }
        r
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let world = SyntheticConfig {
        users: 200,
        items: 2_000,
        sessions: 8,
        // A lifelong history past the logged sessions.
        history_sessions: 16,
        ..SyntheticConfig::default()
    };
    let data = generate_with_truth(&world, 8)?.0;
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    // The production selection: r = 32, k_LL = 96, k_RT = 32, k_imp = 32.
    let cfg = cfg.with_v2();
    let trainer = Trainer::new(cfg, &data)?;
    let bundle = export_bundle(&trainer, &data, "throughput", Provenance::default())?;
    let store = EmbeddedStore::in_memory(StoreConfig {
        clock: Arc::new(|| i64::MAX / 4),
        ..StoreConfig::default()
    });
    ingest(&data, &store, 1_000, |_| {})?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("features.parquet");
    let inner = Arc::new(ParquetFeatureLogger::create(
        &path,
        WriterOptions::default(),
    )?);
    let timed = Arc::new(Timed {
        inner: inner.clone(),
        spent: Mutex::new(Duration::ZERO),
    });
    let ranker = Ranker::new(Arc::new(store), Arc::new(bundle), RankerConfig::default())?
        .with_logger(timed.clone(), OnLogError::FailRank);
    let mut tokens = 0usize;
    let mut examples = 0usize;
    for r in &data.requests {
        let req = RankRequest::new(
            user_key(&data, r.user).ok_or("user")?,
            r.time_ms,
            r.candidates
                .iter()
                .map(|c| item_key(&data, u64::from(c.item)).map(Candidate::Item))
                .collect::<Option<Vec<_>>>()
                .ok_or("item")?,
        );
        let resp = ranker.rank(&req)?;
        examples += r.candidates.len();
        tokens += resp.sequence_len;
    }
    let t = Instant::now();
    let summary = inner.finish()?;
    let spent = *timed.spent.lock().map_err(|e| e.to_string())? + t.elapsed();
    let log = transact_log::FeatureLog::open(&path)?;
    let mean_tokens = log.iter().map(|r| r.len()).sum::<usize>() as f64 / log.len() as f64;
    let t = Instant::now();
    let reread = transact_log::FeatureLog::open(&path)?;
    let read = t.elapsed();
    println!(
        "{} requests, {examples} examples (dim {}, {} slots, mean {mean_tokens:.1} tokens/example, \
         longest row per request summed {tokens})",
        summary.requests,
        log.dim(),
        log.slots()
    );
    println!(
        "file {} bytes: {:.0} bytes/example",
        summary.bytes,
        summary.bytes as f64 / summary.rows as f64
    );
    println!(
        "write: {:.0} examples/s ({:.3} s in the logger)",
        summary.rows as f64 / spent.as_secs_f64(),
        spent.as_secs_f64()
    );
    println!(
        "read + check: {:.0} examples/s ({} rows)",
        reread.len() as f64 / read.as_secs_f64(),
        reread.len()
    );
    Ok(())
}

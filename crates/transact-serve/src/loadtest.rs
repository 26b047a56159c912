//! A closed-loop load generator for the server: `connections` clients,
//! each sending its next request when the previous one is answered, a mix
//! of ranking requests and action batches, for a fixed time.
//!
//! Every answer's latency goes into HDR histograms (per kind, and per
//! second for the timeline); errors are counted by status and code; every
//! acknowledged action is kept so a caller can check the store holds it.
//! Closed-loop load measures latency at the concurrency it offers; it does
//! not model an open arrival rate (a slow answer delays that client's next
//! request rather than piling requests up).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use transact_seq::{SeqError, SequenceBuf, SequenceStore, system_clock_ms};

use crate::client::{Client, ClientError};
use crate::wire::{ActionsBody, RankBody, RawId, WireAction, WireCandidate};

/// What to send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The server, `http://host:port`.
    pub url: String,
    /// How long to drive load.
    pub duration: Duration,
    /// Concurrent clients (one request in flight each).
    pub connections: usize,
    /// Fraction of requests that rank (the rest append actions).
    pub rank_fraction: f64,
    /// Users drawn from: raw ids `0 .. users`.
    pub users: u64,
    /// Items drawn from: raw ids `0 .. items` (must be in the bundle's
    /// item table, or ranks are 400s).
    pub items: u64,
    /// Candidates per ranking request.
    pub candidates: usize,
    /// Actions per append request.
    pub actions_per_batch: usize,
    /// Action types drawn from.
    pub action_types: Vec<u16>,
    /// Seed of the request mix.
    pub seed: u64,
    /// Keep every acknowledged action in the report (for checks).
    pub keep_acknowledged: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            duration: Duration::from_secs(60),
            connections: 16,
            rank_fraction: 0.8,
            users: 800,
            items: 4_000,
            candidates: 100,
            actions_per_batch: 5,
            action_types: vec![1, 2, 3, 4],
            seed: 1,
            keep_acknowledged: false,
        }
    }
}

/// Latency percentiles of one kind of request, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Answered with 2xx.
    pub ok: u64,
    /// Answered otherwise, or not answered.
    pub errors: u64,
    /// Successful requests per second.
    pub per_s: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Requests answered 2xx in this second.
    pub ok: u64,
    /// Errors in this second.
    pub errors: u64,
    /// Median latency, ms (all kinds).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Wall time of the run, s.
    pub seconds: f64,
    /// Concurrent clients.
    pub connections: usize,
    /// Candidates per ranking request.
    pub candidates: usize,
    /// Ranking requests.
    pub rank: Latency,
    /// Append requests.
    pub append: Latency,
    /// Errors by `status code` (e.g. `503 overloaded`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// The timeline, one entry per second.
    pub timeline: Vec<Second>,
    /// Every acknowledged action as (user key, item key, time), when
    /// [`LoadConfig::keep_acknowledged`].
    #[serde(skip)]
    pub acknowledged: Vec<(u64, u64, i64)>,
}

struct Recorder {
    rank: Histogram<u64>,
    append: Histogram<u64>,
    rank_errors: u64,
    append_errors: u64,
    errors: BTreeMap<String, u64>,
    seconds: Vec<(Histogram<u64>, u64)>,
    acknowledged: Vec<(u64, u64, i64)>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs … 60 s at 3 significant digits (valid bounds: this cannot fail);
    // larger values are clamped by `saturating_record`.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    fn new() -> Self {
        Self {
            rank: histogram(),
            append: histogram(),
            rank_errors: 0,
            append_errors: 0,
            errors: BTreeMap::new(),
            seconds: Vec::new(),
            acknowledged: Vec::new(),
        }
    }

    fn second(&mut self, t: usize) -> &mut (Histogram<u64>, u64) {
        while self.seconds.len() <= t {
            self.seconds.push((histogram(), 0));
        }
        &mut self.seconds[t]
    }

    fn record(&mut self, rank: bool, at: Duration, latency: Duration, outcome: Result<(), String>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let t = at.as_secs() as usize;
        match outcome {
            Ok(()) => {
                let h = if rank {
                    &mut self.rank
                } else {
                    &mut self.append
                };
                h.saturating_record(us);
                self.second(t).0.saturating_record(us);
            }
            Err(kind) => {
                if rank {
                    self.rank_errors += 1;
                } else {
                    self.append_errors += 1;
                }
                *self.errors.entry(kind).or_insert(0) += 1;
                self.second(t).1 += 1;
            }
        }
    }
}

fn latency(h: &Histogram<u64>, errors: u64, seconds: f64) -> Latency {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Latency {
        ok: h.len(),
        errors,
        per_s: h.len() as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1e3,
    }
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Status { status, body, .. } => match body {
            Some(b) => format!("{} {}", status.as_u16(), b.error.code),
            None => status.as_u16().to_string(),
        },
        ClientError::Timeout { .. } => "client timeout".into(),
        _ => "transport".into(),
    }
}

/// Drives load as `config` says and reports what it measured. Must run
/// inside a multi-threaded tokio runtime.
pub async fn run(config: &LoadConfig) -> LoadReport {
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let start = Instant::now();
    let deadline = start + config.duration;
    let client = Client::new(config.url.clone()).with_timeout(Duration::from_secs(10));
    let tasks: Vec<_> = (0..config.connections.max(1))
        .map(|c| {
            let (client, recorder, config) = (client.clone(), recorder.clone(), config.clone());
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(config.seed.wrapping_add(c as u64 * 7_919));
                while Instant::now() < deadline {
                    let user = rng.random_range(0..config.users.max(1));
                    let rank = rng.random_bool(config.rank_fraction.clamp(0.0, 1.0));
                    let sent = Instant::now();
                    let mut acked: Vec<(u64, u64, i64)> = Vec::new();
                    let outcome = if rank {
                        let body = RankBody {
                            user: RawId::Number(user),
                            time_ms: system_clock_ms(),
                            candidates: (0..config.candidates)
                                .map(|_| {
                                    WireCandidate::Id(RawId::Number(
                                        rng.random_range(0..config.items.max(1)),
                                    ))
                                })
                                .collect(),
                            user_embedding: None,
                            context: None,
                            top: Some(10),
                        };
                        client.rank(&body).await.map(|_| ())
                    } else {
                        let now = system_clock_ms();
                        let actions: Vec<WireAction> = (0..config.actions_per_batch.max(1))
                            .map(|_| WireAction {
                                user: RawId::Number(user),
                                item: RawId::Number(rng.random_range(0..config.items.max(1))),
                                action: config
                                    .action_types
                                    .get(rng.random_range(0..config.action_types.len().max(1)))
                                    .copied()
                                    .unwrap_or(1),
                                time_ms: now,
                                surface: 0,
                            })
                            .collect();
                        if config.keep_acknowledged {
                            acked = actions
                                .iter()
                                .map(|a| (a.user.key(), a.item.key(), a.time_ms))
                                .collect();
                        }
                        client.append(&ActionsBody { actions }).await.map(|_| ())
                    };
                    let took = sent.elapsed();
                    let ok = outcome.is_ok();
                    {
                        let mut r = recorder.lock();
                        r.record(
                            rank,
                            sent.duration_since(start),
                            took,
                            outcome.map_err(|e| error_kind(&e)),
                        );
                        if ok {
                            r.acknowledged.extend(acked);
                        }
                    }
                    if !ok {
                        // Back off a little after an error, as a client would.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let r = std::mem::replace(&mut *recorder.lock(), Recorder::new());
    let timeline = r
        .seconds
        .iter()
        .enumerate()
        .map(|(t, (h, errors))| Second {
            t: t as u64,
            ok: h.len(),
            errors: *errors,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        })
        .collect();
    LoadReport {
        seconds,
        connections: config.connections,
        candidates: config.candidates,
        rank: latency(&r.rank, r.rank_errors, seconds),
        append: latency(&r.append, r.append_errors, seconds),
        errors: r.errors,
        timeline,
        acknowledged: r.acknowledged,
    }
}

impl LoadReport {
    /// How many of the [`LoadReport::acknowledged`] actions `store` holds
    /// (matched by user, item and time; each user's realtime sequence is
    /// read once). Equal to their number when nothing acknowledged was lost.
    pub fn count_stored(&self, store: &dyn SequenceStore) -> Result<usize, SeqError> {
        let users: HashSet<u64> = self.acknowledged.iter().map(|a| a.0).collect();
        let mut stored: HashSet<(u64, u64, i64)> = HashSet::new();
        let mut buf = SequenceBuf::default();
        for u in users {
            store.read_newest(u, usize::MAX, None, &mut buf)?;
            stored.extend(buf.iter().map(|a| (u, a.item_id, a.timestamp_ms)));
        }
        Ok(self
            .acknowledged
            .iter()
            .filter(|a| stored.contains(*a))
            .count())
    }

    /// A Markdown table of the run.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| kind | ok | errors | per s | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|---|---|\n",
        );
        for (name, l) in [("rank", &self.rank), ("append", &self.append)] {
            s.push_str(&format!(
                "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                l.ok, l.errors, l.per_s, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            ));
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s.push_str(&format!("\nerrors: {}\n", list.join(", ")));
        }
        s
    }
}

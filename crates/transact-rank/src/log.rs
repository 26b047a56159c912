//! The feature-logging hook: what a [`crate::Ranker`] hands a
//! [`FeatureLogger`] for every V2 request it ranks, and what it does when
//! logging fails.
//!
//! TransAct V2 trains on the tokens serving selected (model-spec §3: "only
//! the selected tokens need logging"), so the ranker offers each ranked V2
//! request's [`SelectedTokens`] and context to a logger. This crate only
//! defines the hook; `transact-log` implements it with Parquet files.
//!
//! **Failures.** A logging failure never goes unnoticed, but by default it
//! does not fail the ranking: with [`OnLogError::Continue`] the request is
//! ranked as usual, the failure is counted ([`FeatureLogStats::failures`],
//! with the last error's text) and reported on the response
//! ([`crate::RankResponse::feature_log_error`]). A service keeps serving
//! while its log is broken, and its health check sees the counter.
//! [`OnLogError::FailRank`] (for offline jobs whose only purpose is the
//! log) turns a failure into [`crate::RankError::FeatureLog`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use transact_features::SelectedTokens;

use crate::RankRequest;

/// The error a [`FeatureLogger`] returns (any error type; its text is what
/// the ranker reports).
pub type FeatureLogError = Box<dyn std::error::Error + Send + Sync>;

/// One ranked V2 request, as a [`FeatureLogger`] receives it. Every slice
/// borrows the ranker's per-request buffers: copy what you keep.
#[derive(Clone, Copy, Debug)]
pub struct FeatureLogEntry<'a> {
    /// The request as ranked (user, request time, candidates, the user
    /// embedding and context it carried).
    pub request: &'a RankRequest,
    /// The selected tokens of every candidate, over the request's pool.
    pub tokens: &'a SelectedTokens,
    /// `[candidates × dim]` int8 codes of the candidates (the token
    /// table's row, or an inline embedding quantised per row).
    pub candidate_codes: &'a [i8],
    /// Per candidate, the scale of its codes (value = `code · scale / 127`).
    pub candidate_scales: &'a [f32],
    /// The dense user feature the model read (derived from the history by
    /// the bundle, or the request's own), `None` when the model reads none.
    pub user_feature: Option<&'a [f32]>,
    /// The version of the bundle that ranked the request.
    pub bundle_version: &'a str,
}

/// Receives the selected tokens of every ranked V2 request.
///
/// Called on the ranking thread after the request is scored (a request that
/// fails to rank is not logged); implementations must be cheap or hand the
/// work to a background thread.
pub trait FeatureLogger: Send + Sync {
    /// Logs one ranked request.
    ///
    /// # Errors
    /// Whatever the sink reports; the ranker handles it by its
    /// [`OnLogError`].
    fn log(&self, entry: &FeatureLogEntry<'_>) -> Result<(), FeatureLogError>;
}

/// What the ranker does when its [`FeatureLogger`] fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnLogError {
    /// Rank as usual; count the failure, keep its text
    /// ([`crate::Ranker::feature_log_stats`]) and put it on the response
    /// ([`crate::RankResponse::feature_log_error`]).
    #[default]
    Continue,
    /// Fail the request with [`crate::RankError::FeatureLog`] (counted too).
    FailRank,
}

/// What a ranker's feature logger has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureLogStats {
    /// Requests logged.
    pub logged: u64,
    /// Requests whose logging failed.
    pub failures: u64,
    /// The text of the latest failure.
    pub last_error: Option<String>,
}

/// A logger with its policy and counters (the ranker's part).
pub(crate) struct LogHook {
    pub(crate) logger: std::sync::Arc<dyn FeatureLogger>,
    pub(crate) on_error: OnLogError,
    logged: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LogHook {
    pub(crate) fn new(logger: std::sync::Arc<dyn FeatureLogger>, on_error: OnLogError) -> Self {
        Self {
            logger,
            on_error,
            logged: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Logs `entry`; on failure counts it and returns its text.
    pub(crate) fn log(&self, entry: &FeatureLogEntry<'_>) -> Result<(), String> {
        match self.logger.log(entry) {
            Ok(()) => {
                self.logged.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let text = format!(
                    "feature log: user {} at {} ms: {e}",
                    entry.request.user, entry.request.request_time_ms
                );
                self.failures.fetch_add(1, Ordering::Relaxed);
                let mut last = match self.last_error.lock() {
                    Ok(l) => l,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *last = Some(text.clone());
                Err(text)
            }
        }
    }

    pub(crate) fn stats(&self) -> FeatureLogStats {
        let last = match self.last_error.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        FeatureLogStats {
            logged: self.logged.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: last,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use transact_embed::{ItemTable, Precision};
    use transact_features::{FeatureConfig, LifelongConfig};
    use transact_model::{HeadsConfig, RankingModel, V2Config};
    use transact_seq::{Action, ActionType, EmbeddedStore, SequenceStore, StoreConfig, Surface};

    use super::*;
    use crate::{Bundle, Candidate, RankError, Ranker, RankerConfig};

    /// Counts entries, or fails every one.
    #[derive(Default)]
    struct Sink {
        fail: bool,
        entries: Mutex<Vec<(u64, usize, usize, String)>>,
    }

    impl FeatureLogger for Sink {
        fn log(&self, e: &FeatureLogEntry<'_>) -> Result<(), FeatureLogError> {
            if self.fail {
                return Err("disk full".into());
            }
            let mut v = self.entries.lock().map_err(|e| e.to_string())?;
            v.push((
                e.request.user,
                e.tokens.candidates(),
                e.candidate_scales.len(),
                e.bundle_version.to_string(),
            ));
            Ok(())
        }
    }

    fn ranker(sink: Arc<Sink>, on_error: OnLogError) -> Ranker<EmbeddedStore> {
        let d = 4;
        let lifelong = LifelongConfig {
            rt_keep: 2,
            k_lifelong: 2,
            k_realtime: 1,
            k_impression: 1,
            num_surfaces: 2,
            ..LifelongConfig::default()
        };
        let v2 = V2Config {
            seq_len: lifelong.max_tokens(),
            item_emb_dim: d,
            num_action_types: 4,
            num_surfaces: 2,
            dim_feedforward: 8,
            latest_n_emb: 2,
            ..V2Config::default()
        };
        let heads = HeadsConfig {
            mlp_hidden: vec![8],
            ..HeadsConfig::default()
        };
        let model = RankingModel::new_random_v2(v2, heads, 5).expect("model");
        let mut items = ItemTable::new(d, Precision::F32).expect("items");
        let mut tokens = ItemTable::new(d, Precision::Int8PerRow).expect("tokens");
        for id in 0..10u64 {
            let row = [id as f32 * 0.1, 0.2, -0.3, 0.4];
            items.insert(id, &row).expect("row");
            tokens.insert(id, &row).expect("row");
        }
        let mut features = FeatureConfig::new(4);
        features.lifelong = Some(lifelong);
        let bundle = Bundle::new(Arc::new(model), Arc::new(items), features)
            .and_then(|b| b.with_tokens(Some(Arc::new(tokens))))
            .expect("bundle");
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        let act = |item, t| Action {
            item_id: item,
            action_type: ActionType::REPIN,
            timestamp_ms: t,
            surface: Surface(0),
        };
        store
            .append(7, &[act(1, 1_000), act(2, 2_000), act(3, 3_000)])
            .expect("append");
        Ranker::new(Arc::new(store), Arc::new(bundle), RankerConfig::default())
            .expect("ranker")
            .with_logger(sink, on_error)
    }

    fn request() -> RankRequest {
        RankRequest::new(7, 5_000, vec![Candidate::Item(4), Candidate::Item(5)])
    }

    #[test]
    fn every_ranked_v2_request_is_logged() {
        let sink = Arc::new(Sink::default());
        let r = ranker(sink.clone(), OnLogError::Continue);
        let resp = r.rank(&request()).expect("ranked");
        assert_eq!(resp.feature_log_error, None);
        let entries = sink.entries.lock().expect("lock").clone();
        assert_eq!(entries, vec![(7, 2, 2, resp.bundle_version.to_string())]);
        let stats = r.feature_log_stats().expect("a logger");
        assert_eq!((stats.logged, stats.failures), (1, 0));
        // A request that fails to rank is not logged.
        assert!(r.rank(&RankRequest::new(7, 5_000, vec![])).is_err());
        assert_eq!(r.feature_log_stats().map(|s| s.logged), Some(1));
    }

    #[test]
    fn a_failing_logger_is_counted_and_reported_or_fails_the_rank() {
        let sink = Arc::new(Sink {
            fail: true,
            ..Sink::default()
        });
        let r = ranker(sink.clone(), OnLogError::Continue);
        let resp = r.rank(&request()).expect("ranked all the same");
        assert_eq!(resp.ranked.len(), 2);
        let err = resp.feature_log_error.expect("reported");
        assert!(err.contains("disk full") && err.contains("user 7"), "{err}");
        let stats = r.feature_log_stats().expect("a logger");
        assert_eq!((stats.logged, stats.failures), (0, 1));
        assert_eq!(stats.last_error.as_deref(), Some(&*err));

        let strict = ranker(sink, OnLogError::FailRank);
        match strict.rank(&request()) {
            Err(RankError::FeatureLog(e)) => assert!(e.contains("disk full"), "{e}"),
            other => panic!("expected a feature-log error, got {other:?}"),
        }
        assert_eq!(strict.feature_log_stats().map(|s| s.failures), Some(1));
    }
}

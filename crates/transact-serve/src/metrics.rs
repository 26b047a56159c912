//! The server's Prometheus metrics (`GET /metrics`, text format), and a
//! store wrapper that times every append and read.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use transact_seq::{
    Action, SeqError, SequenceBuf, SequenceLimits, SequenceStore, UserId, UserSequences,
};

/// Labels of a request counter: route and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    /// The route (`/v1/rank`, ...).
    pub route: String,
    /// The status code answered.
    pub code: u16,
}

/// Labels of a per-route histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route.
    pub route: String,
}

/// Labels of the model in service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The bundle's version.
    pub bundle: String,
    /// The backend scoring with it.
    pub backend: String,
}

/// Labels of a reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `refused`.
    pub outcome: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status code.
    pub requests: Family<RouteCode, Counter>,
    /// Request latency by route, seconds (time in the handler, queueing
    /// included).
    pub latency: Family<RouteLabel, Histogram>,
    /// Candidates per ranked request (the model's batch).
    pub candidates: Histogram,
    /// Requests scored per model call.
    pub batch_requests: Histogram,
    /// Actions per `POST /v1/actions`.
    pub action_batch: Histogram,
    /// Requests being handled now.
    pub in_flight: Gauge,
    /// The model in service: `1` for the current bundle and backend.
    pub model: Family<ModelLabels, Gauge>,
    /// Reload attempts by outcome.
    pub reloads: Family<OutcomeLabel, Counter>,
    /// Store append latency, seconds.
    pub store_append: Histogram,
    /// Store read latency, seconds.
    pub store_read: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("transact");
        let requests = Family::<RouteCode, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status code",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route (queueing included)",
            latency.clone(),
        );
        let candidates = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "rank_candidates",
            "Candidates per ranked request",
            candidates.clone(),
        );
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        registry.register(
            "rank_batch_requests",
            "Ranking requests scored per model call",
            batch_requests.clone(),
        );
        let action_batch = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "actions_per_request",
            "Actions per POST /v1/actions",
            action_batch.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("in_flight", "Requests being handled now", in_flight.clone());
        let model = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model",
            "The model in service (1 for its bundle version and backend)",
            model.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register("reloads", "Bundle reloads, by outcome", reloads.clone());
        let store_append = latency_histogram();
        registry.register(
            "store_append_duration_seconds",
            "Sequence store append latency (durable under the store's sync policy)",
            store_append.clone(),
        );
        let store_read = latency_histogram();
        registry.register(
            "store_read_duration_seconds",
            "Sequence store read latency",
            store_read.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            candidates,
            batch_requests,
            action_batch,
            in_flight,
            model,
            reloads,
            store_append,
            store_read,
        }
    }

    /// Counts an answered request.
    pub fn observe(&self, route: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteCode {
                route: route.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Names the model in service (replacing the previous one).
    pub fn set_model(&self, bundle: &str, backend: &str) {
        self.model.clear();
        self.model
            .get_or_create(&ModelLabels {
                bundle: bundle.to_string(),
                backend: backend.to_string(),
            })
            .set(1);
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A [`SequenceStore`] that times the appends and reads of the store it
/// wraps into [`Metrics::store_append`] and [`Metrics::store_read`].
pub struct TimedStore {
    inner: Arc<dyn SequenceStore>,
    append: Histogram,
    read: Histogram,
}

impl TimedStore {
    /// Wraps `inner`, timing into `metrics`.
    pub fn new(inner: Arc<dyn SequenceStore>, metrics: &Metrics) -> Self {
        Self {
            inner,
            append: metrics.store_append.clone(),
            read: metrics.store_read.clone(),
        }
    }
}

impl SequenceStore for TimedStore {
    fn append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        let t = Instant::now();
        let r = self.inner.append(user, actions);
        self.append.observe(t.elapsed().as_secs_f64());
        r
    }

    fn check_append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        self.inner.check_append(user, actions)
    }

    fn read_newest(
        &self,
        user: UserId,
        n: usize,
        at_or_before_ms: Option<i64>,
        out: &mut SequenceBuf,
    ) -> Result<usize, SeqError> {
        let t = Instant::now();
        let r = self.inner.read_newest(user, n, at_or_before_ms, out);
        self.read.observe(t.elapsed().as_secs_f64());
        r
    }

    fn read_sequences(
        &self,
        user: UserId,
        limits: &SequenceLimits,
        out: &mut UserSequences,
    ) -> Result<(), SeqError> {
        let t = Instant::now();
        let r = self.inner.read_sequences(user, limits, out);
        self.read.observe(t.elapsed().as_secs_f64());
        r
    }

    fn history_len(&self, user: UserId) -> Result<usize, SeqError> {
        self.inner.history_len(user)
    }

    fn user_count(&self) -> usize {
        self.inner.user_count()
    }

    fn sync(&self) -> Result<(), SeqError> {
        self.inner.sync()
    }
}

//! The ranking server: routes, admission control, the compute pool,
//! hot reload and graceful shutdown.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/rank` | a [`RankBody`] → a [`RankAnswer`] |
//! | `POST /v1/actions` | an [`ActionsBody`] → an [`ActionsAnswer`], once every action is durable under the store's sync policy |
//! | `POST /v1/admin/reload` | load a bundle (the body's `{"bundle": DIR}` or the current directory), self-check it, swap it in |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | a model is loaded and the server is not shutting down |
//! | `GET /metrics` | Prometheus text ([`Metrics`]) |
//!
//! Every request first takes a slot of the admission queue
//! ([`ServerConfig::queue`] slots in all); when none is free it is
//! answered `503` with `Retry-After` at once, so the server never queues
//! without bound. A ranking request then waits (within
//! [`ServerConfig::request_timeout`]) for one of [`ServerConfig::workers`]
//! compute slots and runs the model on tokio's blocking pool, never on
//! the async runtime's threads. Requests that queue while every slot is
//! busy are scored together: the next free slot takes up to
//! [`ServerConfig::max_batch`] of them into one model call
//! ([`transact_rank::Ranker::rank_many`]; on a GPU backend, one device
//! submission).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore, oneshot};
use transact_rank::RankerConfig;
use transact_seq::{Action, SequenceStore, UserId, system_clock_ms};

use crate::error::ApiError;
use crate::metrics::{Metrics, TimedStore};
use crate::served::{BackendPolicy, LoadedModel};
use crate::wire::{
    self, ActionsAnswer, ActionsBody, RankAnswer, RankBody, WireCandidate, first_non_finite,
};

/// Most ranking requests a GPU backend scores in one submission, unless
/// [`ServerConfig::max_batch`] says otherwise.
pub const GPU_MAX_BATCH: usize = 16;

/// Response header naming the bundle version that scored a request.
pub const BUNDLE_HEADER: &str = "x-transact-bundle";

/// Limits and sizes of a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body, bytes (a larger one is answered 413).
    pub max_body_bytes: usize,
    /// Most candidates per ranking request.
    pub max_candidates: usize,
    /// Most actions per `POST /v1/actions`.
    pub max_actions: usize,
    /// A ranking request not answered within this is answered 503
    /// `timeout` (the queueing for a compute slot included).
    pub request_timeout: Duration,
    /// Ranking requests scored at once (compute slots).
    pub workers: usize,
    /// Most ranking requests one model call scores together (requests
    /// that queued while the compute slots were busy; see the
    /// [module docs](self)). `Some(1)` scores every request alone; `None`
    /// chooses by backend: [`GPU_MAX_BATCH`] on a GPU, 1 on the CPU (where
    /// batching was measured to add tail latency and no throughput).
    pub max_batch: Option<usize>,
    /// Requests admitted at once, all routes together (running plus
    /// waiting); beyond them a request is answered 503 `overloaded`.
    pub queue: usize,
    /// A request or action time may lie at most this far ahead of the
    /// server's clock, ms.
    pub max_future_ms: i64,
    /// Which backend a loaded bundle scores on.
    pub backend: BackendPolicy,
    /// The rankers' configuration.
    pub ranker: RankerConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_body_bytes: 1 << 20,
            max_candidates: 1_000,
            max_actions: 1_000,
            request_timeout: Duration::from_secs(2),
            workers: cores,
            max_batch: None,
            queue: 256,
            max_future_ms: 24 * 3_600 * 1_000,
            backend: BackendPolicy::Auto {
                allow_software: false,
            },
            ranker: RankerConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_candidates", self.max_candidates),
            ("max_actions", self.max_actions),
            ("workers", self.workers),
            ("max_batch", self.max_batch.unwrap_or(1)),
            ("queue", self.queue),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("server configuration: {name} must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err("server configuration: request_timeout must be positive".into());
        }
        if self.max_future_ms < 0 {
            return Err("server configuration: max_future_ms must not be negative".into());
        }
        Ok(())
    }
}

/// What a reload answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// The version now in service.
    pub bundle: String,
    /// Its directory.
    pub dir: String,
    /// Its backend.
    pub backend: String,
    /// The version it replaced.
    pub previous: String,
}

/// The body of `POST /v1/admin/reload` (optional).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    /// The bundle directory to load (default: the one in service).
    #[serde(default)]
    bundle: Option<PathBuf>,
}

struct AppState {
    store: Arc<dyn SequenceStore>,
    current: ArcSwap<LoadedModel>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    admission: Arc<Semaphore>,
    compute: Arc<Semaphore>,
    reload_lock: AsyncMutex<()>,
    shutting_down: AtomicBool,
    /// Ranking requests waiting for a model call, oldest first.
    pending: parking_lot::Mutex<VecDeque<Pending>>,
    next_id: AtomicU64,
}

/// A ranking server over one store and one bundle at a time.
///
/// Cheap to clone (clones share everything). Build one with
/// [`Server::new`], take its [`Server::router`] into any axum stack or run
/// it with [`Server::run`].
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Loads and self-checks the bundle at `bundle_dir` over `store`.
    /// Blocking (the bundle is read and, on a GPU, uploaded): call it
    /// before the runtime starts or from a blocking thread.
    pub fn new(
        store: Arc<dyn SequenceStore>,
        bundle_dir: impl Into<PathBuf>,
        config: ServerConfig,
    ) -> Result<Self, String> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn SequenceStore> = Arc::new(TimedStore::new(store, &metrics));
        let dir = bundle_dir.into();
        let model = LoadedModel::load(&dir, store.clone(), config.backend, config.ranker.clone())?;
        metrics.set_model(&model.version, &model.backend);
        tracing::info!(
            bundle = %model.version,
            dir = %dir.display(),
            backend = %model.backend,
            "model loaded"
        );
        Ok(Self {
            state: Arc::new(AppState {
                store,
                current: ArcSwap::from_pointee(model),
                admission: Arc::new(Semaphore::new(config.queue)),
                compute: Arc::new(Semaphore::new(config.workers)),
                config,
                metrics,
                reload_lock: AsyncMutex::new(()),
                shutting_down: AtomicBool::new(false),
                pending: parking_lot::Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The model in service.
    pub fn current(&self) -> Arc<LoadedModel> {
        self.state.current.load_full()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The store (wrapped to time its calls).
    pub fn store(&self) -> &Arc<dyn SequenceStore> {
        &self.state.store
    }

    /// The routes, with the body limit and the metrics middleware.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/rank", post(rank))
            .route("/v1/actions", post(append_actions))
            .route("/v1/admin/reload", post(reload_route))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_route))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.state.clone(), track))
            .layer(DefaultBodyLimit::max(self.state.config.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Loads the bundle at `dir` (default: the directory in service),
    /// self-checks it and swaps it in; requests in flight finish on the
    /// model they started on. A bundle that fails to load or to pass the
    /// check is refused with the reason, and the old model keeps serving.
    pub async fn reload(&self, dir: Option<PathBuf>) -> Result<ReloadAnswer, ApiError> {
        let state = &self.state;
        let _one_at_a_time = state.reload_lock.lock().await;
        let old = state.current.load_full();
        let dir = dir.unwrap_or_else(|| old.dir.clone());
        let store = state.store.clone();
        let (policy, config) = (state.config.backend, state.config.ranker.clone());
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || LoadedModel::load(&dir, store, policy, config))
                .await
                .map_err(|e| format!("the loading task failed: {e}"))
                .and_then(|r| r)
        };
        match loaded {
            Ok(model) => {
                let answer = ReloadAnswer {
                    bundle: model.version.clone(),
                    dir: model.dir.display().to_string(),
                    backend: model.backend.clone(),
                    previous: old.version.clone(),
                };
                state.metrics.set_model(&model.version, &model.backend);
                state.current.store(Arc::new(model));
                state.metrics.reloaded(true);
                tracing::info!(
                    bundle = %answer.bundle,
                    previous = %answer.previous,
                    dir = %answer.dir,
                    backend = %answer.backend,
                    "bundle reloaded"
                );
                Ok(answer)
            }
            Err(reason) => {
                state.metrics.reloaded(false);
                tracing::warn!(
                    dir = %dir.display(),
                    %reason,
                    serving = %old.version,
                    "reload refused; the old bundle keeps serving"
                );
                Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "reload_failed",
                    format!("{reason}; still serving bundle {}", old.version),
                ))
            }
        }
    }

    /// Marks the server as shutting down: `/readyz` answers 503 and new
    /// requests are refused with 503 `shutting_down`.
    pub fn begin_shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Serves on `listener` until `shutdown` resolves, then stops
    /// accepting, drains the requests in flight and syncs the store.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let app = self.router();
        let this = self.clone();
        let graceful = async move {
            shutdown.await;
            this.begin_shutdown();
            tracing::info!("shutting down: draining requests in flight");
        };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
            .map_err(|e| format!("server: {e}"));
        // Appends answered before this point are durable under the sync
        // policy already; make them durable whatever the policy is.
        let store = self.state.store.clone();
        let synced = tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| format!("store sync task: {e}"))?;
        served?;
        synced.map_err(|e| format!("syncing the store on shutdown: {e}"))?;
        tracing::info!("store synced; server stopped");
        Ok(())
    }
}

/// Counts and times every answer by route and status.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let resp = next.run(req).await;
    state.metrics.in_flight.dec();
    let code = resp.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.observe(&route, code, seconds);
    if resp.status().is_server_error() {
        tracing::warn!(%route, code, ms = seconds * 1e3, "request failed");
    } else {
        tracing::debug!(%route, code, ms = seconds * 1e3, "request");
    }
    resp
}

/// The request body, or the error that names why it could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than the {limit}-byte limit"),
            )
        } else {
            ApiError::new(e.status(), "invalid_request", e.body_text())
        }
    })
}

impl AppState {
    /// A slot of the admission queue, or the 503 that turns the request away.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
            .retry_after(1));
        }
        self.admission.clone().try_acquire_owned().map_err(|_| {
            ApiError::overloaded(format!(
                "all {} request slots are taken; retry shortly",
                self.config.queue
            ))
        })
    }

    /// Checks a request or action time against the clock.
    fn check_time(&self, field: &str, t: i64) -> Result<(), ApiError> {
        if t < 0 {
            return Err(ApiError::invalid(field, format!("time {t} ms is negative")));
        }
        let limit = system_clock_ms().saturating_add(self.config.max_future_ms);
        if t > limit {
            return Err(ApiError::invalid(
                field,
                format!(
                    "time {t} ms is more than {} ms ahead of the server's clock",
                    self.config.max_future_ms
                ),
            ));
        }
        Ok(())
    }

    fn check_rank_body(&self, body: &RankBody) -> Result<(), ApiError> {
        self.check_time("time_ms", body.time_ms)?;
        let n = body.candidates.len();
        if n == 0 {
            return Err(ApiError::invalid(
                "candidates",
                "the request has no candidates",
            ));
        }
        if n > self.config.max_candidates {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many_candidates",
                format!(
                    "{n} candidates is more than the limit of {}",
                    self.config.max_candidates
                ),
            )
            .with_field("candidates"));
        }
        for (i, c) in body.candidates.iter().enumerate() {
            if let WireCandidate::Inline(c) = c
                && let Some((j, v)) = first_non_finite(&c.embedding)
            {
                return Err(ApiError::invalid(
                    format!("candidates[{i}].embedding[{j}]"),
                    format!("{v} is not a finite 32-bit float"),
                ));
            }
        }
        for (name, v) in [
            ("user_embedding", &body.user_embedding),
            ("context", &body.context),
        ] {
            if let Some((j, x)) = v.as_deref().and_then(first_non_finite) {
                return Err(ApiError::invalid(
                    format!("{name}[{j}]"),
                    format!("{x} is not a finite 32-bit float"),
                ));
            }
        }
        Ok(())
    }
}

/// A ranking request waiting for a model call.
struct Pending {
    id: u64,
    body: RankBody,
    _admitted: OwnedSemaphorePermit,
    answer: oneshot::Sender<Result<RankAnswer, ApiError>>,
}

impl AppState {
    /// Takes up to [`ServerConfig::max_batch`] waiting requests, oldest
    /// first, leaving out those whose caller has gone (timed out).
    fn take_batch(&self, model: &LoadedModel) -> Vec<Pending> {
        let max = self
            .config
            .max_batch
            .unwrap_or(if model.on_cpu() { 1 } else { GPU_MAX_BATCH });
        let mut queue = self.pending.lock();
        let mut batch = Vec::new();
        while batch.len() < max {
            match queue.pop_front() {
                Some(p) if p.answer.is_closed() => {}
                Some(p) => batch.push(p),
                None => break,
            }
        }
        batch
    }

    /// Scores `batch` in one model call on `model` and answers each request.
    fn run_batch(&self, model: &LoadedModel, batch: Vec<Pending>) {
        let reqs: Vec<_> = batch.iter().map(|p| p.body.to_request()).collect();
        self.metrics.batch_requests.observe(batch.len() as f64);
        let answers = model.ranker.rank_many(&reqs);
        for (p, answer) in batch.into_iter().zip(answers) {
            let answer = answer
                .map(|resp| RankAnswer::new(&p.body, &resp, None))
                .map_err(|e| ApiError::from_rank(&e));
            // A caller that has gone (timed out) no longer listens.
            let _ = p.answer.send(answer);
        }
    }
}

/// Ranks a request: it joins the queue of waiting requests, and whichever
/// request takes a free compute slot scores a batch of the waiting ones
/// (its own or others') in one model call on the blocking pool. So a
/// request never waits for a batch to fill: under light load every batch
/// is one request; when the slots are busy, requests queue and the next
/// free slot takes up to [`ServerConfig::max_batch`] of them at once.
async fn rank(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, state.config.max_body_bytes)?;
    let body: RankBody = wire::parse(&bytes)?;
    state.check_rank_body(&body)?;
    let admitted = state.admit()?;
    state
        .metrics
        .candidates
        .observe(body.candidates.len() as f64);
    let timeout = state.config.request_timeout;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = oneshot::channel();
    state.pending.lock().push_back(Pending {
        id,
        body,
        _admitted: admitted,
        answer: tx,
    });
    let work = async {
        loop {
            tokio::select! {
                answer = &mut rx => return answer.map_err(|_| internal("the ranking task failed")),
                slot = state.compute.clone().acquire_owned() => {
                    let slot = slot.map_err(|_| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "shutting_down",
                            "compute pool closed",
                        )
                    })?;
                    let model = state.current.load_full();
                    let batch = state.take_batch(&model);
                    let mine = batch.iter().any(|p| p.id == id);
                    let empty = batch.is_empty();
                    if !empty {
                        let run = state.clone();
                        tokio::task::spawn_blocking(move || {
                            let _slot = slot;
                            run.run_batch(&model, batch);
                        });
                    }
                    if mine || empty {
                        // Ours is scoring (here or in another batch): wait for it.
                        return (&mut rx).await.map_err(|_| internal("the ranking task failed"));
                    }
                }
            }
        }
    };
    let answer = tokio::time::timeout(timeout, work).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("not ranked within {} ms", timeout.as_millis()),
        )
        .retry_after(1)
    })???;
    let mut resp = Json(&answer).into_response();
    if let Ok(v) = HeaderValue::from_str(&answer.bundle) {
        resp.headers_mut().insert(BUNDLE_HEADER, v);
    }
    Ok(resp)
}

/// A 500 naming what failed.
fn internal(what: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what)
}

/// The actions of a body grouped by user, each user's in body order, with
/// the body index of each action (for error fields).
fn group_by_user(body: &ActionsBody) -> Vec<(UserId, Vec<Action>, Vec<usize>)> {
    let mut slot: HashMap<UserId, usize> = HashMap::new();
    let mut groups: Vec<(UserId, Vec<Action>, Vec<usize>)> = Vec::new();
    for (i, a) in body.actions.iter().enumerate() {
        let user = a.user.key();
        let k = *slot.entry(user).or_insert_with(|| {
            groups.push((user, Vec::new(), Vec::new()));
            groups.len() - 1
        });
        if let Some(g) = groups.get_mut(k) {
            g.1.push(a.to_action());
            g.2.push(i);
        }
    }
    groups
}

async fn append_actions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ActionsAnswer>, ApiError> {
    let bytes = body_bytes(body, state.config.max_body_bytes)?;
    let body: ActionsBody = wire::parse(&bytes)?;
    let n = body.actions.len();
    if n > state.config.max_actions {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_actions",
            format!(
                "{n} actions is more than the limit of {} per request; split the batch",
                state.config.max_actions
            ),
        )
        .with_field("actions"));
    }
    for (i, a) in body.actions.iter().enumerate() {
        state.check_time(&format!("actions[{i}].time_ms"), a.time_ms)?;
    }
    let groups = group_by_user(&body);
    // Every action is checked before any is written, so a bad one
    // rejects the whole body and nothing of it is stored.
    for (user, actions, index) in &groups {
        for (a, &i) in actions.iter().zip(index) {
            state
                .store
                .check_append(*user, std::slice::from_ref(a))
                .map_err(|e| ApiError::from_store(&e, format!("actions[{i}]")))?;
        }
    }
    let admitted = state.admit()?;
    state.metrics.action_batch.observe(n as f64);
    let store = state.store.clone();
    let users = groups.len();
    tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let mut appended = 0usize;
        for (k, (user, actions, index)) in groups.iter().enumerate() {
            if let Err(e) = store.append(*user, actions) {
                let mut err = ApiError::from_store(&e, format!("actions[{}]", index[0]));
                if k > 0 {
                    err.message = format!(
                        "{}; the actions of the {k} user(s) before it ({appended} actions) \
                         were appended and are durable, the rest were not",
                        err.message
                    );
                }
                return Err(err);
            }
            appended += actions.len();
        }
        Ok(Json(ActionsAnswer { appended, users }))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the append task failed: {e}"),
        )
    })?
}

async fn reload_route(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReloadAnswer>, ApiError> {
    let bytes = body_bytes(body, state.config.max_body_bytes)?;
    let body: ReloadBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ReloadBody::default()
    } else {
        wire::parse(&bytes)?
    };
    let server = Server { state };
    server.reload(body.bundle).await.map(Json)
}

#[derive(Serialize)]
struct Status<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'a str>,
}

async fn healthz() -> Json<Status<'static>> {
    Json(Status {
        status: "ok",
        bundle: None,
        backend: None,
    })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let model = state.current.load_full();
    let ready = !state.shutting_down.load(Ordering::SeqCst);
    let status = Status {
        status: if ready { "ready" } else { "shutting_down" },
        bundle: Some(&model.version),
        backend: Some(&model.backend),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status)).into_response()
}

async fn metrics_route(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

/// Resolves on SIGTERM or Ctrl-C; reloads the bundle on every SIGHUP
/// meanwhile. Pass it to [`Server::run`] as the shutdown signal.
pub async fn signals(server: Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM / SIGHUP; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM");
                    return;
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("interrupt");
                    return;
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the bundle");
                    // The outcome is logged and counted by `reload`.
                    let _ = server.reload(None).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! The server over loopback: ranking and actions, validation errors that
//! name the field, back-pressure and timeouts, hot reload (including a
//! refused truncated bundle and requests in flight finishing on the old
//! model), metrics, and a graceful shutdown that drains.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use transact_embed::{ItemTable, Precision};
use transact_features::{FeatureConfig, raw_id_key};
use transact_model::{HeadsConfig, RankingModel, V1Config};
use transact_rank::Bundle;
use transact_seq::{
    Action, EmbeddedStore, SeqError, SequenceBuf, SequenceLimits, SequenceStore, StoreConfig,
    UserId, UserSequences,
};
use transact_serve::client::{Client, ClientError};
use transact_serve::wire::{ActionsBody, RankBody, RawId, WireAction, WireCandidate};
use transact_serve::{BUNDLE_HEADER, BackendPolicy, ErrorBody, Server, ServerConfig};

const ITEMS: u64 = 40;
const NOW: i64 = 1_700_000_000_000;

fn bundle(version: &str, seed: u64) -> Bundle {
    let v1 = V1Config {
        seq_len: 16,
        latest_n_emb: 4,
        action_emb_dim: 8,
        item_emb_dim: 8,
        dim_feedforward: 16,
        ..V1Config::default()
    };
    let heads = HeadsConfig {
        mlp_hidden: vec![16],
        ..HeadsConfig::default()
    };
    let model = RankingModel::new_random(v1, heads, seed).expect("model");
    let ids: Vec<u64> = (0..ITEMS).map(|i| raw_id_key(&i.to_string())).collect();
    let data: Vec<f32> = (0..ITEMS as usize * 8)
        .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
        .collect();
    let items = ItemTable::from_rows(8, Precision::F32, &ids, &data).expect("items");
    let features = FeatureConfig {
        action_vocab: (0..20).collect(),
        sequence_actions: (0..20).filter(|&t| t != 4).collect(),
        ..FeatureConfig::new(16)
    };
    let mut b = Bundle::new(Arc::new(model), Arc::new(items), features).expect("bundle");
    b.manifest.version = version.to_string();
    b
}

fn save_bundle(dir: &Path, version: &str, seed: u64) {
    bundle(version, seed).save(dir).expect("save bundle");
}

/// A store that sleeps in every read, to hold a compute slot.
struct SlowStore {
    inner: EmbeddedStore,
    read_delay_ms: AtomicU64,
}

impl SequenceStore for SlowStore {
    fn append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        self.inner.append(user, actions)
    }
    fn check_append(&self, user: UserId, actions: &[Action]) -> Result<(), SeqError> {
        self.inner.check_append(user, actions)
    }
    fn read_newest(
        &self,
        user: UserId,
        n: usize,
        t: Option<i64>,
        out: &mut SequenceBuf,
    ) -> Result<usize, SeqError> {
        std::thread::sleep(Duration::from_millis(
            self.read_delay_ms.load(Ordering::SeqCst),
        ));
        self.inner.read_newest(user, n, t, out)
    }
    fn read_sequences(
        &self,
        user: UserId,
        limits: &SequenceLimits,
        out: &mut UserSequences,
    ) -> Result<(), SeqError> {
        self.inner.read_sequences(user, limits, out)
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

struct Running {
    client: Client,
    server: Server,
    store: Arc<SlowStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), String>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Running {
    async fn start(config: ServerConfig) -> Running {
        let store_dir = tempfile::tempdir().expect("tempdir");
        let bundle_dir = tempfile::tempdir().expect("tempdir");
        save_bundle(bundle_dir.path(), "v1", 9);
        let (inner, _) =
            EmbeddedStore::open(store_dir.path(), StoreConfig::default()).expect("store");
        let store = Arc::new(SlowStore {
            inner,
            read_delay_ms: AtomicU64::new(0),
        });
        let dyn_store: Arc<dyn SequenceStore> = store.clone();
        let path = bundle_dir.path().to_path_buf();
        let server = tokio::task::spawn_blocking(move || Server::new(dyn_store, path, config))
            .await
            .expect("join")
            .expect("server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(server.clone().run(listener, async move {
            let _ = rx.await;
        }));
        Running {
            client: Client::new(format!("http://{addr}")),
            server,
            store,
            stop: Some(tx),
            done,
            _dirs: vec![store_dir, bundle_dir],
        }
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.done.await.expect("join").expect("clean shutdown");
    }
}

fn cpu() -> ServerConfig {
    ServerConfig {
        backend: BackendPolicy::Cpu,
        ..ServerConfig::default()
    }
}

fn rank_body(user: &str, candidates: &[u64]) -> RankBody {
    RankBody {
        user: RawId::Text(user.into()),
        time_ms: NOW + 10_000,
        candidates: candidates
            .iter()
            .map(|&c| WireCandidate::Id(RawId::Number(c)))
            .collect(),
        user_embedding: None,
        context: None,
        top: None,
    }
}

fn action(user: &str, item: u64, t: i64) -> WireAction {
    WireAction {
        user: RawId::Text(user.into()),
        item: RawId::Number(item),
        action: 1,
        time_ms: t,
        surface: 0,
    }
}

/// Posts raw bytes; the JSON error body and status.
async fn post_error(client: &Client, path: &str, body: &str) -> (u16, ErrorBody) {
    let reply = client
        .send(axum::http::Method::POST, path, body.as_bytes().to_vec())
        .await
        .expect("answer");
    let status = reply.status.as_u16();
    let err: ErrorBody = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {}", reply.text()));
    (status, err)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn actions_then_rank_round_trip() {
    runtime().block_on(async {
        let r = Running::start(cpu()).await;
        let health = r.client.get("/healthz").await.expect("healthz");
        assert_eq!(health.status, 200);
        let ready = r.client.get("/readyz").await.expect("readyz");
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert!(ready.text().contains("\"v1\""), "{}", ready.text());

        let before = r
            .client
            .rank(&rank_body("u7", &[1, 2, 3]))
            .await
            .expect("rank");
        assert_eq!(before.sequence_len, 0);
        let actions = ActionsBody {
            actions: vec![
                action("u7", 1, NOW),
                action("u7", 2, NOW + 1),
                action("u8", 3, NOW),
            ],
        };
        let ack = r.client.append(&actions).await.expect("append");
        assert_eq!((ack.appended, ack.users), (3, 2));
        let key = raw_id_key("u7");
        assert_eq!(r.store.history_len(key).expect("len"), 2);

        let reply = r
            .client
            .post_json("/v1/rank", &rank_body("u7", &[1, 2, 3, 4]))
            .await
            .expect("rank");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply
                .headers
                .get(BUNDLE_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("v1")
        );
        let answer: transact_serve::wire::RankAnswer = reply.json().expect("json");
        assert_eq!(answer.bundle, "v1");
        assert_eq!(answer.backend, "cpu");
        assert_eq!(answer.sequence_len, 2);
        assert_eq!(answer.ranked.len(), 4);
        let mut seen: Vec<String> = answer.ranked.iter().map(|x| x.item.to_string()).collect();
        seen.sort();
        assert_eq!(seen, ["1", "2", "3", "4"]);
        for w in answer.ranked.windows(2) {
            assert!(w[0].utility >= w[1].utility);
        }
        for x in &answer.ranked {
            assert_eq!(x.probabilities.len(), 3);
            assert!(x.probabilities.values().all(|p| (0.0..=1.0).contains(p)));
        }
        // The same request through the ranker directly gives the same order.
        let direct = r
            .server
            .current()
            .ranker
            .rank(&rank_body("u7", &[1, 2, 3, 4]).to_request())
            .expect("direct");
        let direct: Vec<u64> = direct.ranked.iter().map(|x| x.item_id).collect();
        let served: Vec<u64> = answer.ranked.iter().map(|x| x.item.key()).collect();
        assert_eq!(direct, served);

        let metrics = r.client.get("/metrics").await.expect("metrics").text();
        assert!(
            metrics.contains(r#"transact_http_requests_total{route="/v1/rank",code="200"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"transact_model{bundle="v1",backend="cpu"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics.contains("transact_store_append_duration_seconds_count 2"),
            "{metrics}"
        );
        r.shutdown().await;
    });
}

#[test]
fn bad_input_is_a_4xx_naming_the_field_and_stores_nothing() {
    runtime().block_on(async {
        let config = ServerConfig {
            max_body_bytes: 4_096,
            max_candidates: 5,
            max_actions: 3,
            ..cpu()
        };
        let r = Running::start(config).await;
        let c = &r.client;
        let t = NOW + 10_000;
        let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [1], "colour": 2}}"#),
                400,
                "invalid_request",
                None,
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [{{"id": 1, "embedding": [1.0, 2.0]}}]}}"#),
                400,
                "invalid_request",
                Some("candidates[0].embedding"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [2, {{"id": 1, "embedding": [1, 1, 1, 1e39, 1, 1, 1, 1]}}]}}"#),
                400,
                "invalid_request",
                Some("candidates[1].embedding[3]"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [1, 2, 3, 4, 5, 6]}}"#),
                400,
                "too_many_candidates",
                Some("candidates"),
            ),
            (
                "/v1/rank",
                r#"{"user": 1, "time_ms": -5, "candidates": [1]}"#.to_string(),
                400,
                "invalid_request",
                Some("time_ms"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {}, "candidates": [1]}}"#, i64::MAX),
                400,
                "invalid_request",
                Some("time_ms"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": []}}"#),
                400,
                "invalid_request",
                Some("candidates"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": ["no-such-item"]}}"#),
                400,
                "invalid_request",
                Some("candidates[0]"),
            ),
            (
                "/v1/rank",
                format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [1], "pad": "{}"}}"#, "x".repeat(5_000)),
                413,
                "body_too_large",
                None,
            ),
            (
                "/v1/actions",
                format!(r#"{{"actions": [{{"user": 1, "item": 2, "action": 1, "time_ms": {NOW}}}, {{"user": 1, "item": 3, "action": 999, "time_ms": {NOW}}}]}}"#),
                400,
                "invalid_request",
                Some("actions[1]"),
            ),
            (
                "/v1/actions",
                format!(r#"{{"actions": [{{"user": 1, "item": 2, "action": 1, "time_ms": {NOW}, "weight": 1}}]}}"#),
                400,
                "invalid_request",
                None,
            ),
            (
                "/v1/actions",
                r#"{"actions": [{"user": 1, "item": 2, "action": 1, "time_ms": -1}]}"#.to_string(),
                400,
                "invalid_request",
                Some("actions[0].time_ms"),
            ),
            (
                "/v1/actions",
                format!(r#"{{"actions": [{a}, {a}, {a}, {a}]}}"#, a = format_args!(r#"{{"user": 1, "item": 2, "action": 1, "time_ms": {NOW}}}"#)),
                400,
                "too_many_actions",
                Some("actions"),
            ),
            ("/v1/nothing", "{}".to_string(), 404, "not_found", None),
        ];
        for (path, body, status, code, field) in cases {
            let (got, err) = post_error(c, path, &body).await;
            assert_eq!(got, status, "{path} {body:.120}: {err:?}");
            assert_eq!(err.error.code, code, "{path} {body:.120}: {err:?}");
            if let Some(field) = field {
                assert_eq!(err.error.field.as_deref(), Some(field), "{body:.120}: {err:?}");
            }
            assert!(!err.error.message.is_empty());
        }
        // The unknown-field message names the field.
        let (_, err) = post_error(
            c,
            "/v1/rank",
            &format!(r#"{{"user": 1, "time_ms": {t}, "candidates": [1], "colour": 2}}"#),
        )
        .await;
        assert!(err.error.message.contains("colour"), "{err:?}");
        // The rejected action batch stored nothing, not even its good first action.
        assert_eq!(r.store.history_len(raw_id_key("1")).expect("len"), 0);
        r.shutdown().await;
    });
}

#[test]
fn a_full_server_answers_503_with_retry_after_and_slow_requests_time_out() {
    runtime().block_on(async {
        let config = ServerConfig {
            workers: 1,
            queue: 1,
            request_timeout: Duration::from_millis(300),
            ..cpu()
        };
        let r = Running::start(config).await;
        r.store.read_delay_ms.store(600, Ordering::SeqCst);
        let slow = {
            let c = r.client.clone();
            tokio::spawn(async move { c.rank(&rank_body("a", &[1, 2])).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let turned_away = r.client.rank(&rank_body("b", &[1, 2])).await;
        match turned_away {
            Err(ClientError::Status {
                status,
                body,
                retry_after_s,
            }) => {
                assert_eq!(status, 503);
                assert_eq!(body.expect("json body").error.code, "overloaded");
                assert_eq!(retry_after_s, Some(1));
            }
            other => panic!("expected a 503, got {other:?}"),
        }
        // The slow one runs past the 300 ms timeout.
        match slow.await.expect("join") {
            Err(ClientError::Status { status, body, .. }) => {
                assert_eq!(status, 503);
                assert_eq!(body.expect("json").error.code, "timeout");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Once the slot is free again the server answers.
        tokio::time::sleep(Duration::from_millis(600)).await;
        r.store.read_delay_ms.store(0, Ordering::SeqCst);
        r.client
            .rank(&rank_body("c", &[1, 2]))
            .await
            .expect("rank after");
        let metrics = r.client.get("/metrics").await.expect("metrics").text();
        assert!(
            metrics.contains(r#"transact_http_requests_total{route="/v1/rank",code="503"} 2"#),
            "{metrics}"
        );
        r.shutdown().await;
    });
}

#[test]
fn requests_queued_behind_a_busy_slot_are_scored_in_one_call() {
    runtime().block_on(async {
        let config = ServerConfig {
            workers: 1,
            max_batch: Some(8),
            ..cpu()
        };
        let r = Running::start(config).await;
        // Histories of different lengths, so the batch mixes sequences.
        let mut actions = Vec::new();
        for (u, n) in [("h1", 1), ("h2", 5), ("h3", 12), ("h4", 30)] {
            for i in 0..n {
                actions.push(action(u, (i * 7 % ITEMS as usize) as u64, NOW + i as i64));
            }
        }
        r.client
            .append(&ActionsBody { actions })
            .await
            .expect("append");
        // The first request holds the only compute slot in a slow read...
        r.store.read_delay_ms.store(400, Ordering::SeqCst);
        let first = {
            let c = r.client.clone();
            tokio::spawn(async move { c.rank(&rank_body("h1", &[1, 2])).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.store.read_delay_ms.store(0, Ordering::SeqCst);
        // ...while these queue: the next free slot scores them together.
        let bodies = [
            rank_body("h1", &[3, 4, 5]),
            rank_body("h2", &[1, 2, 3, 4, 5, 6]),
            rank_body("h3", &[7]),
            rank_body("h4", &[8, 9, 10, 11]),
            rank_body("nobody", &[12, 13]),
            rank_body("h2", &[1, 9_999]),
        ];
        let queued: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|b| {
                let c = r.client.clone();
                tokio::spawn(async move { c.rank(&b).await })
            })
            .collect();
        first.await.expect("join").expect("first answer");
        let ranker = &r.server.current().ranker;
        for (body, answer) in bodies.iter().zip(queued) {
            let answer = answer.await.expect("join");
            if body.candidates.len() == 2 && body.user == RawId::Text("h2".into()) {
                // The unknown candidate fails its own request only.
                match answer {
                    Err(ClientError::Status { status, body, .. }) => {
                        assert_eq!(status, 400);
                        assert_eq!(
                            body.expect("json").error.field.as_deref(),
                            Some("candidates[1]")
                        );
                    }
                    other => panic!("expected a 422, got {other:?}"),
                }
                continue;
            }
            let answer = answer.expect("answer");
            let alone = ranker.rank(&body.to_request()).expect("alone");
            assert_eq!(answer.sequence_len, alone.sequence_len);
            let served: Vec<u64> = answer.ranked.iter().map(|x| x.item.key()).collect();
            let direct: Vec<u64> = alone.ranked.iter().map(|x| x.item_id).collect();
            assert_eq!(served, direct);
            for (a, b) in answer.ranked.iter().zip(&alone.ranked) {
                assert!((a.utility - b.utility).abs() <= 1e-6);
            }
        }
        let metrics = r.client.get("/metrics").await.expect("metrics").text();
        // Two model calls: the first request alone, then the six together.
        assert!(
            metrics.contains("transact_rank_batch_requests_count 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("transact_rank_batch_requests_sum 7"),
            "{metrics}"
        );
        r.shutdown().await;
    });
}

#[test]
fn reload_swaps_the_bundle_refuses_a_truncated_one_and_in_flight_requests_finish_on_the_old() {
    runtime().block_on(async {
        let r = Running::start(cpu()).await;
        let v2_dir = tempfile::tempdir().expect("tempdir");
        save_bundle(v2_dir.path(), "v2", 11);

        // A request in flight (slowed in the store read) while the reload runs.
        r.store.read_delay_ms.store(400, Ordering::SeqCst);
        let in_flight = {
            let c = r.client.clone();
            tokio::spawn(async move { c.rank(&rank_body("a", &[1, 2, 3])).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = r
            .client
            .post_json(
                "/v1/admin/reload",
                &serde_json::json!({ "bundle": v2_dir.path() }),
            )
            .await
            .expect("reload");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer: transact_serve::ReloadAnswer = reply.json().expect("json");
        assert_eq!(
            (answer.bundle.as_str(), answer.previous.as_str()),
            ("v2", "v1")
        );
        let old = in_flight.await.expect("join").expect("in-flight rank");
        assert_eq!(
            old.bundle, "v1",
            "the request in flight finished on the old model"
        );
        r.store.read_delay_ms.store(0, Ordering::SeqCst);
        let new = r
            .client
            .rank(&rank_body("a", &[1, 2, 3]))
            .await
            .expect("rank");
        assert_eq!(new.bundle, "v2");

        // A truncated bundle is refused with the reason; v2 keeps serving.
        let broken = tempfile::tempdir().expect("tempdir");
        save_bundle(broken.path(), "v3", 12);
        let mut truncated = 0;
        for entry in std::fs::read_dir(broken.path()).expect("ls") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                let len = std::fs::metadata(&path).expect("meta").len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                f.set_len(len / 2).expect("truncate");
                truncated += 1;
            }
        }
        assert!(
            truncated > 0,
            "the bundle has safetensors files to truncate"
        );
        let (status, err) = post_error(
            &r.client,
            "/v1/admin/reload",
            &serde_json::json!({ "bundle": broken.path() }).to_string(),
        )
        .await;
        assert_eq!(status, 422, "{err:?}");
        assert_eq!(err.error.code, "reload_failed");
        assert!(
            err.error.message.contains("still serving bundle v2"),
            "{err:?}"
        );
        let still = r
            .client
            .rank(&rank_body("a", &[1, 2, 3]))
            .await
            .expect("rank");
        assert_eq!(still.bundle, "v2");
        // A missing directory too.
        let (status, err) = post_error(
            &r.client,
            "/v1/admin/reload",
            r#"{"bundle": "/no/such/bundle"}"#,
        )
        .await;
        assert_eq!(status, 422, "{err:?}");
        // An empty body reloads the directory in service.
        let reply = r
            .client
            .post_json("/v1/admin/reload", &serde_json::json!({}))
            .await
            .expect("reload");
        assert_eq!(reply.status, 200, "{}", reply.text());

        let metrics = r.client.get("/metrics").await.expect("metrics").text();
        assert!(
            metrics.contains(r#"transact_model{bundle="v2",backend="cpu"} 1"#),
            "{metrics}"
        );
        assert!(!metrics.contains(r#"bundle="v1""#), "{metrics}");
        assert!(
            metrics.contains(r#"transact_reloads_total{outcome="ok"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"transact_reloads_total{outcome="refused"} 2"#),
            "{metrics}"
        );
        r.shutdown().await;
    });
}

#[test]
fn shutdown_drains_requests_in_flight_and_syncs_the_store() {
    runtime().block_on(async {
        let r = Running::start(cpu()).await;
        r.client
            .append(&ActionsBody {
                actions: vec![action("s", 1, NOW)],
            })
            .await
            .expect("append");
        r.store.read_delay_ms.store(400, Ordering::SeqCst);
        let in_flight = {
            let c = r.client.clone();
            tokio::spawn(async move { c.rank(&rank_body("s", &[1, 2])).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let store = r.store.clone();
        r.shutdown().await;
        let answer = in_flight
            .await
            .expect("join")
            .expect("drained, not dropped");
        assert_eq!(answer.sequence_len, 1);
        assert_eq!(store.history_len(raw_id_key("s")).expect("len"), 1);
    });
}

#[test]
fn the_gpu_backend_serves_what_the_cpu_computes() {
    runtime().block_on(async {
        let config = ServerConfig {
            backend: BackendPolicy::Auto {
                allow_software: true,
            },
            ..ServerConfig::default()
        };
        let r = Running::start(config).await;
        let model = r.server.current();
        if !model.backend.starts_with("gpu") {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true needs a GPU adapter (install mesa-vulkan-drivers); served on {}",
                model.backend
            );
            eprintln!("skipping: no GPU adapter");
            r.shutdown().await;
            return;
        }
        r.client
            .append(&ActionsBody {
                actions: vec![action("g", 3, NOW), action("g", 5, NOW + 1)],
            })
            .await
            .expect("append");
        let body = rank_body("g", &[1, 2, 3, 4, 5, 6]);
        let served = r.client.rank(&body).await.expect("rank on the GPU");
        assert!(served.backend.starts_with("gpu"), "{}", served.backend);
        // The same request through a CPU ranker over the same store.
        let cpu = transact_rank::Ranker::new(
            r.server.store().clone(),
            model.ranker.bundle().clone(),
            transact_rank::RankerConfig::default(),
        )
        .expect("cpu ranker")
        .rank(&body.to_request())
        .expect("cpu rank");
        for x in &served.ranked {
            let want = cpu
                .ranked
                .iter()
                .find(|c| c.item_id == x.item.key())
                .expect("same candidates");
            assert!(
                (want.utility - x.utility).abs() < 1e-3,
                "item {}: gpu {} cpu {}",
                x.item,
                x.utility,
                want.utility
            );
        }
        r.shutdown().await;
    });
}

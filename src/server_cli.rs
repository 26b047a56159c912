//! `transact serve`: the ranking server over a store and a bundle.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use transact::seq::{EmbeddedStore, SequenceStore, StoreConfig, SyncPolicy};
use transact::serve::{BackendPolicy, Server, ServerConfig, signals};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// `transact serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// The serving bundle (`<run>/bundle`, written by `transact train`);
    /// SIGHUP and `POST /v1/admin/reload` load it again.
    #[arg(long)]
    bundle: PathBuf,
    /// The sequence store: an embedded store's directory (created if
    /// needed; filled by `transact ingest` or by `POST /v1/actions`), or a
    /// Redis server `redis://host:port[/db]` or cluster
    /// `redis+cluster://host:port[,host:port…]` (see docs/redis.md).
    #[arg(long)]
    store: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// When the embedded store syncs appends to disk: `every` (each
    /// acknowledged batch is on disk), `N` (every N records), or `close`.
    #[arg(long, default_value = "every")]
    sync: String,
    /// Rank on the CPU even when a GPU adapter exists.
    #[arg(long)]
    cpu: bool,
    /// Also use a software GPU adapter (e.g. Mesa's llvmpipe), which is slower than the CPU.
    #[arg(long)]
    software_gpu: bool,
    /// Ranking requests scored at once (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Most queued ranking requests scored together in one model call
    /// (1: each alone; default: 16 on a GPU, 1 on the CPU).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Requests admitted at once, running plus waiting; beyond them the
    /// server answers 503 with Retry-After.
    #[arg(long, default_value_t = ServerConfig::default().queue)]
    queue: usize,
    /// Per-request timeout of a ranking request, ms.
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
    /// Most candidates per ranking request.
    #[arg(long, default_value_t = ServerConfig::default().max_candidates)]
    max_candidates: usize,
    /// Most actions per `POST /v1/actions`.
    #[arg(long, default_value_t = ServerConfig::default().max_actions)]
    max_actions: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = ServerConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Async runtime threads (network and parsing; the model runs on its
    /// own pool).
    #[arg(long, default_value_t = 2)]
    io_threads: usize,
}

fn sync_policy(s: &str) -> Result<SyncPolicy> {
    match s {
        "every" => Ok(SyncPolicy::EveryAppend),
        "close" => Ok(SyncPolicy::OnClose),
        n => n
            .parse::<u64>()
            .map(SyncPolicy::EveryN)
            .map_err(|_| format!("--sync {n}: expected `every`, `close` or a record count").into()),
    }
}

/// Whether `--store` names a Redis server or cluster rather than a directory.
pub fn is_redis_url(store: &str) -> bool {
    [
        "redis://",
        "rediss://",
        transact::redis::RedisTarget::CLUSTER_SCHEME,
    ]
    .iter()
    .any(|p| store.starts_with(p))
}

/// Opens the store `--store` names: a Redis server or cluster by URL, or
/// an embedded store's directory with the `--sync` policy.
pub fn open_store(store: &str, sync: &str) -> Result<Arc<dyn SequenceStore>> {
    if is_redis_url(store) {
        if sync != "every" {
            return Err(format!(
                "--sync {sync}: a Redis store's durability is the server's `appendfsync` \
                 setting (see docs/redis.md), not --sync"
            )
            .into());
        }
        let config =
            transact::redis::RedisConfig::new(store).map_err(|e| format!("--store: {e}"))?;
        let redis = transact::redis::RedisStore::connect(config, StoreConfig::default())
            .map_err(|e| format!("--store: {e}"))?;
        tracing::info!(users = redis.user_count(), "Redis store connected");
        return Ok(Arc::new(redis));
    }
    let config = StoreConfig::default().with_sync(sync_policy(sync)?);
    let dir = PathBuf::from(store);
    let (store, report) =
        EmbeddedStore::open(&dir, config).map_err(|e| format!("--store {}: {e}", dir.display()))?;
    tracing::info!(
        store = %dir.display(),
        users = report.users,
        actions = report.actions,
        "embedded store opened"
    );
    Ok(Arc::new(store))
}

/// `transact serve`: serve until SIGTERM or Ctrl-C (SIGHUP reloads).
pub fn serve_cmd(args: ServeArgs) -> Result<ExitCode> {
    let store = open_store(&args.store, &args.sync)?;
    let defaults = ServerConfig::default();
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        max_candidates: args.max_candidates,
        max_actions: args.max_actions,
        request_timeout: Duration::from_millis(args.timeout_ms),
        workers: args.workers.unwrap_or(defaults.workers),
        max_batch: args.max_batch,
        queue: args.queue,
        backend: if args.cpu {
            BackendPolicy::Cpu
        } else {
            BackendPolicy::Auto {
                allow_software: args.software_gpu,
            }
        },
        ..defaults
    };
    let server = Server::new(store, &args.bundle, config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.io_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .map_err(|e| format!("--addr {}: {e}", args.addr))?;
        let addr = listener.local_addr()?;
        let model = server.current();
        tracing::info!(%addr, bundle = %model.version, backend = %model.backend, "serving");
        // The line a script waits for (tests, the load generator).
        println!("listening on http://{addr}");
        let stop = signals(server.clone());
        server.run(listener, stop).await?;
        Ok::<_, Box<dyn Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

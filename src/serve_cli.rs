//! `transact ingest` and `transact rank`: a log into a store, and ranking
//! with a trained bundle over that store.

use std::error::Error;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use transact::backend::auto_backend;
use transact::rank::{Backend, Bundle, CpuBackend, RankResponse, Ranker, RankerConfig};
use transact::seq::{EmbeddedStore, StoreConfig};
use transact::serve::wire::{self, RankAnswer, RankBody, RawId, WireCandidate};
use transact::train::serving::ingest;

use crate::server_cli::{is_redis_url, open_store};
use crate::train_cli::{DataArgs, FormatArg, load};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// `transact ingest`.
#[derive(Args, Clone, Debug)]
pub struct IngestArgs {
    /// The log: a file in any format `transact train` reads (MovieLens
    /// `ratings.csv` / `ratings.dat` / `u.data`, a CSV
    /// `user,item,action,timestamp`, the whitespace next-item format), or
    /// `synthetic` for the seeded synthetic world.
    log: String,
    /// The store: a directory (created if needed; appended to if it
    /// exists), or a Redis server or cluster URL as `transact serve` takes.
    #[arg(long)]
    store: String,
    /// Format of the log (default: from its name and first lines).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Skip malformed lines (counted) instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Synthetic world: users.
    #[arg(long)]
    users: Option<usize>,
    /// Synthetic world: items.
    #[arg(long)]
    items: Option<usize>,
    /// Synthetic world: sessions per user before the logged ones.
    #[arg(long)]
    history_sessions: Option<usize>,
    /// Synthetic world: seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// `transact ingest`: import the log and append every user's actions to the
/// store under the log's raw-id keys, then sync.
pub fn ingest_cmd(args: IngestArgs) -> Result<ExitCode> {
    let data_args = DataArgs {
        data: args.log.clone(),
        format: args.format,
        skip_bad: args.skip_bad,
        item_embeddings: None,
        users: args.users,
        items: args.items,
        history_sessions: args.history_sessions,
        seed: args.seed,
        test_fraction: 0.2,
    };
    let loaded = load(&data_args, false)?;
    let data = &loaded.data;
    let total: usize = data.users.iter().map(|u| u.actions.len()).sum();
    // An embedded store syncs once at the end (a failed ingest is rerun);
    // Redis is as durable as its `appendfsync`.
    let store = if is_redis_url(&args.store) {
        open_store(&args.store, "every")?
    } else {
        open_store(&args.store, "close")?
    };
    let before = store.user_count();
    if before > 0 {
        eprintln!("store {}: appending to {before} users", args.store);
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("ingest [{bar:30}] {pos}/{len} actions {per_sec} {eta}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let done = ingest(data, store.as_ref(), 4096, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    store.sync()?;
    println!(
        "ingested {} actions of {} users from {} into {} ({} users in the store)",
        done.actions,
        done.users,
        args.log,
        args.store,
        store.user_count()
    );
    Ok(ExitCode::SUCCESS)
}

/// `transact rank`.
#[derive(Args, Clone, Debug)]
pub struct RankArgs {
    /// The serving bundle (`<run>/bundle`, written by `transact train`).
    #[arg(long)]
    bundle: PathBuf,
    /// The store directory (filled by `transact ingest`).
    #[arg(long)]
    store: PathBuf,
    /// One request from flags: the user's raw id (as in the log). Without
    /// it, requests are read as JSON lines from stdin:
    /// `{"user": "7", "time_ms": 1700000000000, "candidates": ["31", 10, {"id": "new", "embedding": [...]}]}`.
    #[arg(long, requires = "candidates")]
    user: Option<String>,
    /// With `--user`: the request time in ms (default: now).
    #[arg(long, requires = "user")]
    time_ms: Option<i64>,
    /// With `--user`: the candidates' raw ids, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "user")]
    candidates: Vec<String>,
    /// Print only the best this many candidates of each request.
    #[arg(long)]
    top: Option<usize>,
    /// Rank on the CPU even when a GPU adapter exists.
    #[arg(long)]
    cpu: bool,
    /// Also use a software GPU adapter (e.g. Mesa's llvmpipe), which is slower than the CPU.
    #[arg(long)]
    software_gpu: bool,
    /// Write every ranked request's selected tokens to this Parquet feature
    /// log (TransAct V2 bundles; see docs/feature-log.md). A logging failure
    /// does not stop ranking: it is reported on stderr and the exit code is 1.
    #[arg(long, value_name = "FILE")]
    feature_log: Option<PathBuf>,
}

type Logger = Option<Arc<transact::log::ParquetFeatureLogger>>;

fn open_ranker(args: &RankArgs) -> Result<(Ranker<EmbeddedStore>, Logger)> {
    let bundle = Arc::new(Bundle::load(&args.bundle).map_err(|e| format!("--bundle: {e}"))?);
    if !args.store.is_dir() {
        return Err(format!(
            "--store {}: no such store directory (fill one with `transact ingest LOG --store DIR`)",
            args.store.display()
        )
        .into());
    }
    let (store, _) = EmbeddedStore::open(&args.store, StoreConfig::default())
        .map_err(|e| format!("--store {}: {e}", args.store.display()))?;
    let backend: Box<dyn Backend> = if args.cpu {
        Box::new(CpuBackend)
    } else {
        auto_backend(bundle.model.clone(), args.software_gpu).0
    };
    let v2 = bundle.model.v2().is_some();
    let ranker = Ranker::with_backend(Arc::new(store), bundle, RankerConfig::default(), backend)?;
    match &args.feature_log {
        None => Ok((ranker, None)),
        Some(_) if !v2 => Err("--feature-log: the bundle's model is TransAct V1; only V2 \
             requests have selected tokens to log"
            .into()),
        Some(path) => {
            let logger = Arc::new(
                transact::log::ParquetFeatureLogger::create(path, Default::default())
                    .map_err(|e| format!("--feature-log: {e}"))?,
            );
            let ranker = ranker.with_logger(logger.clone(), transact::rank::OnLogError::Continue);
            Ok((ranker, Some(logger)))
        }
    }
}

/// Finishes the feature log, reports it on stderr; whether it failed.
fn finish_log(ranker: &Ranker<EmbeddedStore>, logger: &Logger) -> bool {
    let Some(logger) = logger else {
        return false;
    };
    let stats = ranker.feature_log_stats().unwrap_or_default();
    let mut failed = stats.failures > 0;
    if let Some(e) = &stats.last_error {
        eprintln!("error: {} request(s) not logged; last: {e}", stats.failures);
    }
    match logger.finish() {
        Ok(s) => eprintln!(
            "feature log: {} requests, {} examples, {} bytes",
            s.requests, s.rows, s.bytes
        ),
        Err(e) => {
            eprintln!("error: {e}");
            failed = true;
        }
    }
    failed
}

fn response_line(req: &RankBody, resp: &RankResponse, top: Option<usize>) -> Result<String> {
    Ok(serde_json::to_string(&RankAnswer::new(req, resp, top))?)
}

/// `transact rank`.
pub fn rank_cmd(args: RankArgs) -> Result<ExitCode> {
    let (ranker, logger) = open_ranker(&args)?;
    let served = serve(&ranker, &args);
    // Finished whatever happened: what was ranked is in a readable file.
    let log_failed = finish_log(&ranker, &logger);
    if served? || log_failed {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Ranks the request of the flags, or every JSON line of stdin; whether
/// a line failed.
fn serve(ranker: &Ranker<EmbeddedStore>, args: &RankArgs) -> Result<bool> {
    let mut stdout = std::io::stdout().lock();
    if let Some(user) = &args.user {
        let time_ms = match args.time_ms {
            Some(t) => t,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_millis() as i64,
        };
        let req = RankBody {
            user: RawId::Text(user.clone()),
            time_ms,
            candidates: args
                .candidates
                .iter()
                .map(|c| WireCandidate::Id(RawId::Text(c.trim().to_string())))
                .collect(),
            user_embedding: None,
            context: None,
            top: None,
        };
        let resp = ranker
            .rank(&req.to_request())
            .map_err(|e| format!("--user {user}: {e}"))?;
        writeln!(stdout, "{}", response_line(&req, &resp, args.top)?)?;
        return Ok(false);
    }
    let mut failed = 0usize;
    let mut resp = RankResponse::default();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin line {}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let outcome = wire::parse::<RankBody>(line.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|req| {
                ranker
                    .rank_into(&req.to_request(), &mut resp)
                    .map_err(|e| e.to_string())?;
                response_line(&req, &resp, args.top).map_err(|e| e.to_string())
            });
        match outcome {
            Ok(text) => writeln!(stdout, "{text}")?,
            Err(e) => {
                failed += 1;
                eprintln!("error: stdin line {}: {e}", i + 1);
            }
        }
    }
    stdout.flush()?;
    if failed > 0 {
        eprintln!("{failed} request line(s) failed");
    }
    Ok(failed > 0)
}

//! `transact loadtest`: concurrent rank + append traffic against a server
//! (one at `--url`, or one started in this process over `--bundle` and
//! `--store`), with a table, a JSON report and a latency-over-time chart.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use transact::serve::loadtest::{self, LoadConfig};
use transact::serve::{BackendPolicy, Server, ServerConfig};
use transact::train::plot::write_svg;

use crate::server_cli::open_store;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// `transact loadtest`.
#[derive(Args, Clone, Debug)]
pub struct LoadtestArgs {
    /// A running server (`http://host:port`). Without it, `--bundle` and
    /// `--store` start one in this process on a loopback port.
    #[arg(long, conflicts_with_all = ["bundle", "store"])]
    url: Option<String>,
    /// The bundle of the in-process server.
    #[arg(long, requires = "store")]
    bundle: Option<PathBuf>,
    /// The store of the in-process server (as `transact serve --store`).
    #[arg(long, requires = "bundle")]
    store: Option<String>,
    /// The store's sync policy (as `transact serve --sync`).
    #[arg(long, default_value = "every")]
    sync: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Concurrent clients, one request in flight each.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Fraction of requests that rank; the rest append action batches.
    #[arg(long, default_value_t = 0.8)]
    rank_fraction: f64,
    /// Users drawn from (raw ids 0..N).
    #[arg(long, default_value_t = 800)]
    users: u64,
    /// Items drawn from (raw ids 0..N; they must be in the bundle's items).
    #[arg(long, default_value_t = 4_000)]
    items: u64,
    /// Candidates per ranking request.
    #[arg(long, default_value_t = 100)]
    candidates: usize,
    /// Actions per append request.
    #[arg(long, default_value_t = 5)]
    actions_per_batch: usize,
    /// In-process server: rank on the CPU even when a GPU adapter exists.
    #[arg(long)]
    cpu: bool,
    /// In-process server: also use a software GPU adapter (e.g. Mesa's
    /// llvmpipe), which is slower than the CPU.
    #[arg(long)]
    software_gpu: bool,
    /// In-process server: compute slots (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// In-process server: most queued ranking requests scored together in
    /// one model call (1: each alone; default: 16 on a GPU, 1 on the CPU).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Write `loadtest.json`, `loadtest.md` and `latency.svg` here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// `transact loadtest`.
pub fn loadtest_cmd(args: LoadtestArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut config = LoadConfig {
        duration: Duration::from_secs_f64(args.seconds.max(0.1)),
        connections: args.connections,
        rank_fraction: args.rank_fraction,
        users: args.users,
        items: args.items,
        candidates: args.candidates,
        actions_per_batch: args.actions_per_batch,
        seed: args.seed,
        ..LoadConfig::default()
    };
    let (report, found) = match (&args.url, &args.bundle) {
        (Some(url), _) => {
            config.url = url.clone();
            (rt.block_on(loadtest::run(&config)), None)
        }
        (None, Some(bundle)) => {
            let store = args.store.as_deref().ok_or("--bundle needs --store")?;
            let store = open_store(store, &args.sync)?;
            let defaults = ServerConfig::default();
            let server_config = ServerConfig {
                workers: args.workers.unwrap_or(defaults.workers),
                max_batch: args.max_batch,
                backend: if args.cpu {
                    BackendPolicy::Cpu
                } else {
                    BackendPolicy::Auto {
                        allow_software: args.software_gpu,
                    }
                },
                ..defaults
            };
            let server = Server::new(store, bundle, server_config)?;
            config.keep_acknowledged = true;
            let store = server.store().clone();
            let report = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                config.url = format!("http://{}", listener.local_addr()?);
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let serving = tokio::spawn(server.run(listener, async move {
                    let _ = rx.await;
                }));
                let report = loadtest::run(&config).await;
                let _ = tx.send(());
                serving.await??;
                Ok::<_, Box<dyn Error>>(report)
            })?;
            let found = report.count_stored(store.as_ref())?;
            (report, Some(found))
        }
        (None, None) => {
            return Err("give --url of a running server, or --bundle and --store".into());
        }
    };
    println!(
        "{} s, {} connections, {} candidates per rank:\n\n{}",
        format_args!("{:.1}", report.seconds),
        report.connections,
        report.candidates,
        report.markdown()
    );
    if let Some(found) = found {
        println!(
            "acknowledged actions: {}, found in the store afterwards: {found}",
            report.acknowledged.len()
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
        std::fs::write(
            out.join("loadtest.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        std::fs::write(out.join("loadtest.md"), report.markdown())?;
        let p50: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .map(|s| (s.t as f64, s.p50_ms))
            .collect();
        let p99: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .map(|s| (s.t as f64, s.p99_ms))
            .collect();
        write_svg(
            &out.join("latency.svg"),
            &format!(
                "latency under load, ms ({} connections, {} candidates)",
                report.connections, report.candidates
            ),
            "seconds",
            &[("p50", &p50), ("p99", &p99)],
        )?;
        println!(
            "wrote {}/loadtest.json, loadtest.md, latency.svg",
            out.display()
        );
    }
    let lost = found.is_some_and(|f| f != report.acknowledged.len());
    if lost {
        eprintln!("error: acknowledged actions missing from the store");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

//! The demo's last steps: serve the trained bundle over HTTP, take a new
//! action through the server, retrain from the checkpoint on the data up
//! to now, and swap the retrained bundle in without stopping.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use transact::seq::SequenceStore;
use transact::serve::client::Client;
use transact::serve::wire::{ActionsBody, RankAnswer, RankBody, RawId, WireAction, WireCandidate};
use transact::serve::{BackendPolicy, Server, ServerConfig};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::run::{RunSpec, Start, StopRule, run};
use transact::train::trainer::TrainConfig;

use crate::train_cli::{Bars, write_bundle};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// What the serving steps need from the demo.
pub struct ServeStep<'a> {
    /// The store the demo filled (shared with the server).
    pub store: Arc<dyn SequenceStore>,
    /// The world's data.
    pub data: &'a Dataset,
    /// Every logged request, oldest first (the retrain sees them all).
    pub requests: &'a [LoggedRequest],
    /// The held-out requests of the first model (the retrain's evaluation
    /// set; it trains on them too, so its figures are not reported).
    pub test: &'a [LoggedRequest],
    /// The request whose user the steps follow.
    pub request: &'a LoggedRequest,
    /// The training configuration of the first model.
    pub config: TrainConfig,
    /// The demo directory (`runs/transact` holds the first model).
    pub dir: &'a Path,
    /// Which backend the server ranks on.
    pub backend: BackendPolicy,
    /// Progress bars.
    pub bars: &'a Bars,
}

fn top3(a: &RankAnswer) -> String {
    a.ranked
        .iter()
        .take(3)
        .map(|r| format!("{} ({:.4})", r.item, r.utility))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Steps 6 and 7 of the demo.
pub fn serve_and_retrain(step: ServeStep<'_>) -> Result<()> {
    let bundle_dir = step.dir.join("runs/transact/bundle");
    let config = ServerConfig {
        backend: step.backend,
        ..ServerConfig::default()
    };
    let server = Server::new(step.store.clone(), &bundle_dir, config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data = step.data;
    let r = step.request;
    let user = RawId::Text(data.users[r.user as usize].raw_id.clone());
    let candidates: Vec<WireCandidate> = r
        .candidates
        .iter()
        .map(|c| WireCandidate::Id(RawId::Text(data.items.raw_ids[c.item as usize].clone())))
        .collect();
    let body = |time_ms: i64| RankBody {
        user: user.clone(),
        time_ms,
        candidates: candidates.clone(),
        user_embedding: None,
        context: None,
        top: Some(10),
    };

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (base, serving) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let serving = tokio::spawn(server.clone().run(listener, async move {
            let _ = rx.await;
        }));
        Ok::<_, Box<dyn Error>>((base, serving))
    })?;
    let client = rt.block_on(async { Client::new(base.clone()) });

    // 6. Serve: rank over HTTP, take an action, rank again.
    let before = rt.block_on(client.rank(&body(r.time_ms)))?;
    let best = before
        .ranked
        .first()
        .ok_or("an empty ranking")?
        .item
        .clone();
    let ack = rt.block_on(client.append(&ActionsBody {
        actions: vec![WireAction {
            user: user.clone(),
            item: best.clone(),
            action: 1,
            time_ms: r.time_ms + 1_000,
            surface: 0,
        }],
    }))?;
    let after = rt.block_on(client.rank(&body(r.time_ms + 2_000)))?;
    say!(
        "\n6. served on {base} (bundle {}, {}): user {user} ranked over HTTP, top 3 {}; \
         POST /v1/actions of a repin of {best} ({} action durable); ranked again with it in \
         the sequence ({} positions read, {} before), top 3 {}",
        before.bundle,
        before.backend,
        top3(&before),
        ack.appended,
        after.sequence_len,
        before.sequence_len,
        top3(&after),
    );

    // 7. Retrain from the checkpoint on every request up to now, reload.
    let t0 = Instant::now();
    let mut cfg = step.config;
    let checkpoint = step.dir.join(format!(
        "runs/transact/checkpoints/epoch-{}.safetensors",
        cfg.epochs
    ));
    cfg.epochs = 1;
    let spec = RunSpec {
        name: "retrained".into(),
        config: cfg,
        start: Start::WarmStart(checkpoint),
        dir: Some(step.dir.join("runs/retrained")),
        sasrec: None,
        eval_every_epoch: false,
        stop: StopRule::default(),
    };
    let (report, trainer) = run(&spec, data, step.requests, step.test, step.bars)?;
    let new_dir = step.dir.join("runs/retrained/bundle");
    write_bundle(&trainer, data, "synthetic", &report, &new_dir)?;
    let train_s = t0.elapsed().as_secs_f64();
    let reloaded = rt.block_on(server.reload(Some(new_dir.clone())))?;
    let served = rt.block_on(client.rank(&body(r.time_ms + 3_000)))?;
    say!(
        "7. retrained from the checkpoint on all {} requests (1 epoch, {train_s:.0} s), \
         bundle {} in {}; POST /v1/admin/reload swapped it in (self-checked) while serving: \
         bundle {} → {}; the same user now ranks with bundle {}, top 3 {}",
        step.requests.len(),
        reloaded.bundle,
        new_dir.display(),
        reloaded.previous,
        reloaded.bundle,
        served.bundle,
        top3(&served),
    );
    let _ = tx.send(());
    rt.block_on(serving)??;
    Ok(())
}

//! `transact demo`: the whole loop on embedded defaults — generate the
//! synthetic world, ingest it into a store, train TransAct and the
//! no-sequence baseline, evaluate both (TransAct through the serving path)
//! beside the world's ceiling, and rank for a few users from the store with
//! the trained bundle.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use transact::backend::auto_backend;
use transact::rank::{Backend, Bundle, Candidate, CpuBackend, RankRequest, Ranker, RankerConfig};
use transact::seq::{EmbeddedStore, SequenceStore, StoreConfig, SyncPolicy};
use transact::serve::BackendPolicy;
use transact::train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::eval::{Scorer, hit_at_k};
use transact::train::run::{RunSpec, Start, StopRule, run};
use transact::train::serving::{RankerScorer, ingest, item_key, user_key};
use transact::train::trainer::TrainConfig;

use crate::train_cli::{Bars, write_bundle};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// `transact demo`.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Working directory for the store, the runs and the bundle (default: a
    /// temporary directory removed afterwards); it must not hold a store.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Users in the synthetic world.
    #[arg(long)]
    users: Option<usize>,
    /// Items in the synthetic world.
    #[arg(long)]
    items: Option<usize>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Users ranked for at the end.
    #[arg(long, default_value_t = 3)]
    rank_users: usize,
    /// Seed of the world and of the models.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// A small world and one short epoch (seconds; for tests).
    #[arg(long)]
    quick: bool,
    /// Rank on the CPU even when a GPU adapter exists.
    #[arg(long)]
    cpu: bool,
    /// Also use a software GPU adapter (e.g. Mesa's llvmpipe), which is slower than the CPU.
    #[arg(long)]
    software_gpu: bool,
}

fn per_head(heads: &[String], v: &[f64]) -> String {
    heads
        .iter()
        .zip(v)
        .map(|(h, x)| format!("{h} {x:.3}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Share of the candidates of the session topic among the top 3 of each
/// request (and among all candidates), ranking by `scorer`.
fn session_share<S: Scorer + ?Sized>(
    data: &Dataset,
    test: &[LoggedRequest],
    truth: &transact::train::data::synthetic::GroundTruth,
    scorer: &S,
) -> Result<(f64, f64)> {
    let (mut top, mut top_n, mut all, mut all_n) = (0usize, 0usize, 0usize, 0usize);
    let mut scores = Vec::new();
    for r in test {
        let Some(topic) = truth.session_topic(r.user, r.time_ms) else {
            continue;
        };
        let items: Vec<u32> = r.candidates.iter().map(|c| c.item).collect();
        let q = transact::train::eval::Query::logged(&data.users[r.user as usize], r);
        scores.clear();
        scores.resize(items.len(), 0.0f32);
        scorer.score(data, &q, &items, &mut scores)?;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let on = |i: usize| truth.item_topic(items[i]) == Some(topic);
        top += order.iter().take(3).filter(|&&i| on(i)).count();
        top_n += order.len().min(3);
        all += (0..items.len()).filter(|&i| on(i)).count();
        all_n += items.len();
    }
    let pct = |a: usize, n: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * a as f64 / n as f64
        }
    };
    Ok((pct(top, top_n), pct(all, all_n)))
}

/// `transact demo`.
pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut world = SyntheticConfig::default();
    if args.quick {
        world.users = 80;
        world.items = 600;
        world.sessions = 8;
    }
    if let Some(u) = args.users {
        world.users = u;
    }
    if let Some(i) = args.items {
        world.items = i;
    }
    let (data, truth) =
        generate_with_truth(&world, args.seed).map_err(|e| format!("world: {e}"))?;
    let cut = data.time_split_index(0.2);
    let (train_reqs, test) = data.requests.split_at(cut);
    let actions: usize = data.users.iter().map(|u| u.actions.len()).sum();
    say!(
        "1. world: {} users, {} items in {} topics, {} actions (impressions included), {} logged requests ({} to train on, {} held out)",
        data.users.len(),
        data.items.count,
        world.topics,
        actions,
        data.requests.len(),
        train_reqs.len(),
        test.len()
    );

    // 2. The log into a store.
    let store_dir = dir.join("store");
    let config = StoreConfig::default().with_sync(SyncPolicy::OnClose);
    let (store, report) = EmbeddedStore::open(&store_dir, config)
        .map_err(|e| format!("store {}: {e}", store_dir.display()))?;
    if report.users > 0 {
        return Err(format!(
            "--dir {}: its store already holds {} users; give an empty directory",
            dir.display(),
            report.users
        )
        .into());
    }
    let bar = ProgressBar::new(actions as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} actions ({elapsed})")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_prefix("ingest");
    let t0 = Instant::now();
    ingest(&data, &store, 4096, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    store.sync()?;
    say!(
        "2. store: {} actions of {} users appended to {} in {:.1} s",
        actions,
        store.user_count(),
        store_dir.display(),
        t0.elapsed().as_secs_f64()
    );

    // 3. Train TransAct and the baseline on the same requests.
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    cfg.seed = args.seed;
    if args.quick {
        cfg.epochs = 1;
        cfg.v1.seq_len = 16;
    }
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    let bars = Bars::new();
    let spec = |name: &str, config: TrainConfig| RunSpec {
        name: name.into(),
        config,
        start: Start::Fresh,
        dir: Some(dir.join("runs").join(name)),
        sasrec: None,
        eval_every_epoch: false,
        stop: StopRule::default(),
    };
    let (report, trainer) = run(
        &spec("transact", cfg.clone()),
        &data,
        train_reqs,
        test,
        &bars,
    )?;
    let bundle_dir = dir.join("runs/transact/bundle");
    write_bundle(&trainer, &data, "synthetic", &report, &bundle_dir)?;
    let mut base_cfg = cfg.clone();
    base_cfg.use_sequence = false;
    let (base_report, baseline) = run(&spec("baseline", base_cfg), &data, train_reqs, test, &bars)?;
    say!(
        "3. trained TransAct ({:.0} s, {} examples, {:.0} ex/s) and the no-sequence baseline ({:.0} s); bundle in {}",
        report.train_seconds,
        report.train_examples,
        report.examples_per_s,
        base_report.train_seconds,
        bundle_dir.display()
    );

    // 4. Evaluate: TransAct through the serving path (bundle + store).
    let bundle = Arc::new(Bundle::load(&bundle_dir)?);
    let backend: Box<dyn Backend> = if args.cpu {
        Box::new(CpuBackend)
    } else {
        auto_backend(bundle.model.clone(), args.software_gpu).0
    };
    let store = Arc::new(store);
    let ranker = Ranker::with_backend(
        store.clone(),
        bundle.clone(),
        RankerConfig::default(),
        backend,
    )?;
    let served = RankerScorer::new(&ranker, &data)?;
    let base_scorer = baseline.scorer(&data)?;
    let h = &data.heads;
    let base_hit = hit_at_k(&data, test, 3, &base_scorer)?;
    let model_hit = hit_at_k(&data, test, 3, &served)?;
    let ceiling = hit_at_k(&data, test, 3, &truth)?;
    let (base_top, share) = session_share(&data, test, &truth, &base_scorer)?;
    let (model_top, _) = session_share(&data, test, &truth, &served)?;
    say!(
        "4. HIT@3 per head on the {} held-out requests (higher is better for repin and click, lower for hide):",
        test.len()
    );
    say!(
        "   {:<44} {}",
        "no-sequence baseline",
        per_head(h, &base_hit.per_head)
    );
    say!(
        "   {:<44} {}",
        format!(
            "TransAct, served from the store ({})",
            ranker.backend_name()
        ),
        per_head(h, &model_hit.per_head)
    );
    say!(
        "   {:<44} {}",
        "ceiling (the world's own probabilities)",
        per_head(h, &ceiling.per_head)
    );
    say!(
        "   candidates of the session topic: {share:.0}% of each slate; {base_top:.0}% of the baseline's top 3, {model_top:.0}% of TransAct's"
    );

    // 5. Rank for a few users from the store.
    let mut shown = 0;
    let mut followed = None;
    for r in test.iter().rev() {
        if shown == args.rank_users {
            break;
        }
        let Some(topic) = truth.session_topic(r.user, r.time_ms) else {
            continue;
        };
        shown += 1;
        followed.get_or_insert(r);
        let user = user_key(&data, r.user).ok_or("user key")?;
        let candidates = r
            .candidates
            .iter()
            .map(|c| item_key(&data, u64::from(c.item)).map(Candidate::Item))
            .collect::<Option<Vec<_>>>()
            .ok_or("item key")?;
        let t = Instant::now();
        let resp = ranker.rank(&RankRequest::new(user, r.time_ms, candidates))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        say!(
            "\n5. user {} browsing topic {topic}: read {} actions from the store, ranked {} candidates on {} in {ms:.1} ms (bundle {})",
            data.users[r.user as usize].raw_id,
            resp.sequence_len,
            resp.ranked.len(),
            resp.backend,
            resp.bundle_version
        );
        say!("   rank  item   topic  utility  {}", resp.heads.join("  "));
        for (i, x) in resp.ranked.iter().enumerate() {
            let item = r.candidates[x.request_index].item;
            let t = truth.item_topic(item).unwrap_or(usize::MAX);
            let probs: Vec<String> = resp
                .probabilities(x)
                .iter()
                .map(|p| format!("{p:.3}"))
                .collect();
            say!(
                "   {:>4}  {:>5}  {:>5}{}  {:>7.4}  {}",
                i + 1,
                item,
                t,
                if t == topic { "*" } else { " " },
                x.utility,
                probs.join("  ")
            );
        }
    }
    say!("\n(* = the topic the user is browsing now.)");

    // 6. and 7.: serve over HTTP, take an action, retrain, reload.
    if let Some(request) = followed {
        crate::demo_serve::serve_and_retrain(crate::demo_serve::ServeStep {
            store: store.clone(),
            data: &data,
            requests: &data.requests,
            test,
            request,
            config: cfg.clone(),
            dir: &dir,
            backend: if args.cpu {
                BackendPolicy::Cpu
            } else {
                BackendPolicy::Auto {
                    allow_software: args.software_gpu,
                }
            },
            bars: &bars,
        })?;
    }
    say!(
        "\ndemo finished in {:.0} s; try `transact rank --bundle {} --store {}` or `transact serve` with the same flags{}",
        started.elapsed().as_secs_f64(),
        bundle_dir.display(),
        store_dir.display(),
        if args.dir.is_none() {
            " with --dir DIR to keep them"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

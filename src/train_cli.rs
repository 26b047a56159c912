//! `transact train`, `transact eval` and `transact ablate`: the training
//! crate driven from the command line, with progress bars.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use transact::rank::Provenance;
use transact::train::ablate::{ablate_seeds, markdown, markdown_seeds};
use transact::train::data::import::{
    Format, ImportOptions, fit_log_training, import_path, requests_from_log,
};
use transact::train::data::synthetic::{
    GroundTruth, SyntheticConfig, fit_training, generate_with_truth,
};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::eval::{SasrecSplit, hit_at_k, sasrec_split};
use transact::train::run::{
    Progress, RunReport, RunSpec, Start, StopRule, evaluate_with, run_with_tokens,
};
use transact::train::serving::export_bundle;
use transact::train::trainer::{StepRecord, TrainConfig, Trainer};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Where the data comes from.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// `synthetic` (the seeded synthetic world) or a log file: MovieLens
    /// `ratings.csv` / `ratings.dat` / `u.data`, a CSV
    /// `user,item,action,timestamp`, or a whitespace next-item file.
    #[arg(long, default_value = "synthetic")]
    pub(crate) data: String,
    /// Format of a log file (default: from its name and first lines).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub(crate) format: FormatArg,
    /// Skip malformed lines (counted) instead of stopping at the first.
    #[arg(long)]
    pub(crate) skip_bad: bool,
    /// Pretrained item embeddings (safetensors) for an imported log.
    #[arg(long)]
    pub(crate) item_embeddings: Option<PathBuf>,
    /// Synthetic world: users.
    #[arg(long)]
    pub(crate) users: Option<usize>,
    /// Synthetic world: items.
    #[arg(long)]
    pub(crate) items: Option<usize>,
    /// Synthetic world: sessions per user before the logged ones (a long
    /// history, the regime of TransAct V2's lifelong sequence; 0 = none).
    #[arg(long)]
    pub(crate) history_sessions: Option<usize>,
    /// Seed of the synthetic world, of the negatives of the SASRec protocol,
    /// and of the model.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Share of the logged requests (the newest) held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) test_fraction: f64,
}

/// The format of a log file.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// Guess from the name and the first lines.
    Auto,
    /// MovieLens `ratings.csv` (`userId,movieId,rating,timestamp`).
    MovielensCsv,
    /// MovieLens `ratings.dat` (`u::i::r::t`).
    MovielensDat,
    /// MovieLens 100k `u.data` (tab-separated `u i r t`).
    MovielensUdata,
    /// `user,item,action,timestamp`.
    Csv,
    /// `user item` or `user item1 item2 …` per line, in time order.
    Whitespace,
}

/// Model and optimiser options shared by `train` and `ablate`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// A TrainConfig as JSON (the file a run writes as `config.json`);
    /// the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Passes over the training requests.
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Threads (0 = every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Realtime sequence length S.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Next Action Loss weight (0 = off).
    #[arg(long)]
    nal_weight: Option<f32>,
    /// Next Action Loss negatives.
    #[arg(long, value_enum)]
    nal_negatives: Option<Negatives>,
    /// Next Action Loss targets per example: the user's next N positives
    /// after the request.
    #[arg(long)]
    nal_positives: Option<usize>,
    /// Only positives within this many minutes after the request are Next
    /// Action Loss targets (0 = no limit).
    #[arg(long)]
    nal_horizon_minutes: Option<i64>,
    /// Next Action Loss at every position of the sequence (on a causal pass
    /// of the encoder), not only the newest; `--nal-every-position false`
    /// turns off the default of imported logs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    nal_every_position: Option<bool>,
    /// Train the item table (`true`) or keep the data's pretrained
    /// embeddings fixed (`false`; data without embeddings always learns).
    #[arg(long)]
    learn_items: Option<bool>,
    /// Dropout in the encoder.
    #[arg(long)]
    dropout: Option<f32>,
    /// Maximum random time window in training, in minutes.
    #[arg(long)]
    window_minutes: Option<i64>,
    /// The sequence encoder: `v1` (the realtime sequence) or `v2` (tokens
    /// selected per candidate from the lifelong, realtime and impression
    /// sequences; needs pretrained item embeddings for its int8 tokens).
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// With `--model v2`: what a token's item embedding is — the frozen
    /// int8 codes selection scores, or the model's item table (the default
    /// when the run trains its item table).
    #[arg(long, value_enum, requires = "model")]
    v2_tokens: Option<V2Tokens>,
}

/// `--v2-tokens`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum V2Tokens {
    /// The dequantised int8 codes (frozen).
    Codes,
    /// The model's item table.
    ItemTable,
}

/// Which TransAct encoder a run trains.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// TransAct V1 over the realtime sequence.
    V1,
    /// TransAct V2 over the selected lifelong tokens.
    V2,
}

/// Next Action Loss negatives.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negatives {
    /// The positives of the other examples of the batch.
    InBatch,
    /// Items shown to the user and not engaged.
    Impressions,
    /// Both: the impression negatives and the in-batch ones.
    Both,
}

/// Epochs of a run bounded by `--minutes` alone.
const UNBOUNDED_EPOCHS: usize = 10_000;

/// `transact train`.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// The no-sequence baseline (candidate + user features only).
    #[arg(long)]
    no_sequence: bool,
    /// Run directory (config, checkpoints, metrics.json, SVG curves).
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Warm start: the parameters of this checkpoint, a fresh optimiser
    /// (retraining on newer data).
    #[arg(long, conflicts_with = "resume")]
    from: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also report HR@10 / NDCG@10 under the SASRec protocol; the run
    /// then evaluates the validation items after every epoch and keeps the
    /// epoch with the best validation NDCG@10 (its test figures are the
    /// ones reported, its parameters the bundle's).
    #[arg(long)]
    sasrec: bool,
    /// With `--sasrec`: stop after this many epochs without a better
    /// validation NDCG@10.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Train for at most this many minutes (evaluation excluded), stopping
    /// mid-epoch if need be; the learning-rate schedule ends at the budget.
    /// Without `--epochs`, epochs are then bounded by the budget alone.
    #[arg(long)]
    minutes: Option<f64>,
    /// A TransAct V2 model (`--model v2`): take the training requests'
    /// selected tokens and user features from this Parquet feature log
    /// (written by `transact rank --feature-log`) instead of replaying the
    /// histories; every training request must be in it, with the contract's
    /// code width and token slots. See docs/feature-log.md.
    #[arg(long, value_name = "FILE", conflicts_with = "no_sequence")]
    feature_log: Option<PathBuf>,
    /// After training, write the run's item table as pretrained embeddings
    /// (safetensors `items.weight` + `items.ids`, the `--item-embeddings`
    /// format): e.g. a V1 run on a log without embeddings gives a V2 run the
    /// table its selection scores. Needs integer raw item ids.
    #[arg(long, value_name = "FILE")]
    save_item_embeddings: Option<PathBuf>,
}

/// `transact eval`.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `transact train` (evaluates the training
    /// network).
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    checkpoint: Option<PathBuf>,
    /// A serving bundle (`<run>/bundle`): evaluates through the serving
    /// path, `Ranker` over a store holding the data's logs.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// With `--bundle`: the store to rank from (filled by `transact
    /// ingest`); default: the data ingested into memory.
    #[arg(long, requires = "bundle")]
    store: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Also report HR@10 / NDCG@10 under the SASRec protocol.
    #[arg(long)]
    sasrec: bool,
}

/// `transact ablate`.
#[derive(Args, Clone, Debug)]
pub struct AblateArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Directory for the runs and the table (`ablation.md`, `ablation.json`).
    #[arg(long, default_value = "runs/ablate")]
    out: PathBuf,
    /// Repeat the ablation with this many training seeds (`--seed`,
    /// `--seed`+1, …) on the same data, and report each row's mean, spread
    /// and per-seed step over the previous row.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    seeds: u32,
}

/// A loaded dataset with its train / test requests.
pub(crate) struct Loaded {
    pub(crate) data: Dataset,
    pub(crate) train: Vec<LoggedRequest>,
    pub(crate) test: Vec<LoggedRequest>,
    pub(crate) sasrec: Option<SasrecSplit>,
    /// The synthetic world's ground truth (none for imported logs).
    pub(crate) truth: Option<GroundTruth>,
}

// `ImportOptions` may grow fields with defaults.
#[allow(clippy::needless_update)]
pub(crate) fn load(args: &DataArgs, want_sasrec: bool) -> Result<Loaded> {
    let t0 = Instant::now();
    if args.data == "synthetic" {
        let mut cfg = SyntheticConfig::default();
        if let Some(u) = args.users {
            cfg.users = u;
        }
        if let Some(i) = args.items {
            cfg.items = i;
        }
        if let Some(h) = args.history_sessions {
            cfg.history_sessions = h;
        }
        let (data, truth) = generate_with_truth(&cfg, args.seed)?;
        let cut = data.time_split_index(args.test_fraction);
        let (train, test) = (data.requests[..cut].to_vec(), data.requests[cut..].to_vec());
        eprintln!(
            "synthetic world (seed {}): {} users, {} items, {} requests ({} train, {} test) in {:.1?}",
            args.seed,
            data.users.len(),
            data.items.count,
            data.requests.len(),
            train.len(),
            test.len(),
            t0.elapsed()
        );
        let sasrec = want_sasrec.then(|| sasrec_split(&data));
        return Ok(Loaded {
            data,
            train,
            test,
            sasrec,
            truth: Some(truth),
        });
    }
    let path = Path::new(&args.data);
    let opts = ImportOptions {
        format: match args.format {
            FormatArg::Auto => None,
            FormatArg::MovielensCsv => Some(Format::MovielensCsv),
            FormatArg::MovielensDat => Some(Format::MovielensDat),
            FormatArg::MovielensUdata => Some(Format::MovielensUdata),
            FormatArg::Csv => Some(Format::GenericCsv),
            FormatArg::Whitespace => Some(Format::Whitespace),
        },
        skip_bad: args.skip_bad,
        item_embeddings: args.item_embeddings.clone(),
        ..ImportOptions::default()
    };
    let (mut data, report) = import_path(path, &opts)?;
    eprintln!("{}: {report}", path.display());
    // Leave-last-out users for HR@10 / NDCG@10; logged requests built from
    // the rest of each user's log (never the last two interactions).
    let split = sasrec_split(&data);
    requests_from_log(&mut data, &split, args.seed)?;
    let cut = data.time_split_index(args.test_fraction);
    let (train, test) = (data.requests[..cut].to_vec(), data.requests[cut..].to_vec());
    eprintln!(
        "{} users, {} items, {} logged requests ({} train, {} test) in {:.1?}",
        data.users.len(),
        data.items.count,
        data.requests.len(),
        train.len(),
        test.len(),
        t0.elapsed()
    );
    Ok(Loaded {
        data,
        train,
        test,
        sasrec: want_sasrec.then_some(split),
        truth: None,
    })
}

/// The run's configuration: `--config`, or the defaults (fitted to the
/// synthetic world's time scales when `synthetic`), then the flags.
fn config(data: &Dataset, args: &ModelArgs, seed: u64, synthetic: bool) -> Result<TrainConfig> {
    let dim = data.items.embeddings.as_ref().map_or(32, |e| e.dim);
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => {
            let mut cfg = TrainConfig::new(&data.heads, dim);
            if synthetic {
                fit_training(&mut cfg);
            } else {
                fit_log_training(&mut cfg, data);
            }
            cfg
        }
    };
    cfg.seed = seed;
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.batch {
        if v == 0 {
            return Err("--batch must be at least 1".into());
        }
        cfg.batch_size = v;
    }
    if let Some(v) = args.lr {
        cfg.lr = v;
    }
    if let Some(v) = args.threads {
        cfg.threads = v;
    }
    if let Some(v) = args.seq_len {
        cfg.v1.seq_len = v;
    }
    if let Some(v) = args.nal_weight {
        cfg.nal_weight = v;
    }
    if let Some(v) = args.nal_negatives {
        cfg.features.nal_impressions = v != Negatives::InBatch;
        cfg.features.nal_in_batch_too = v == Negatives::Both;
    }
    if let Some(v) = args.learn_items {
        cfg.learn_items = v;
    }
    if let Some(v) = args.nal_positives {
        if v == 0 {
            return Err("--nal-positives must be at least 1".into());
        }
        cfg.features.nal_positives = v;
    }
    if let Some(v) = args.nal_horizon_minutes {
        if v < 0 {
            return Err("--nal-horizon-minutes must not be negative".into());
        }
        cfg.features.nal_horizon_ms = v.saturating_mul(60_000);
    }
    if let Some(v) = args.nal_every_position {
        cfg.features.nal_every_position = v;
    }
    if let Some(v) = args.dropout {
        cfg.dropout = v;
    }
    if let Some(v) = args.window_minutes {
        cfg.features.time_window_ms = v.saturating_mul(60_000);
        cfg.v1.time_window_ms = cfg.features.time_window_ms;
    }
    match args.model {
        Some(ModelKind::V2) => {
            if let Some(t) = args.v2_tokens {
                cfg.features
                    .sequence
                    .lifelong
                    .get_or_insert_with(Default::default)
                    .token_embeddings = match t {
                    V2Tokens::Codes => transact::features::TokenEmbeddings::Codes,
                    V2Tokens::ItemTable => transact::features::TokenEmbeddings::ItemTable,
                };
            }
            cfg = cfg.with_v2();
        }
        Some(ModelKind::V1) => {
            cfg.v2 = None;
            cfg.features.sequence.lifelong = None;
        }
        None => {}
    }
    Ok(cfg)
}

/// Progress bars on stderr.
pub(crate) struct Bars {
    bar: std::cell::RefCell<Option<ProgressBar>>,
}

impl Bars {
    pub(crate) fn new() -> Self {
        Self {
            bar: std::cell::RefCell::new(None),
        }
    }
}

impl Progress for Bars {
    fn start(&self, name: &str, steps: u64) {
        let bar = ProgressBar::new(steps);
        let style = ProgressStyle::with_template(
            "{prefix:>32} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(500));
        *self.bar.borrow_mut() = Some(bar);
    }

    fn step(&self, r: &StepRecord) {
        if let Some(b) = &*self.bar.borrow() {
            b.set_message(format!(
                "bce {:.4} nal {:.3} lr {:.1e} {:.0} ex/s",
                r.bce, r.nal, r.lr, r.examples_per_s
            ));
            b.inc(1);
        }
    }

    fn note(&self, msg: &str) {
        match &*self.bar.borrow() {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}

fn print_report(r: &RunReport) {
    println!(
        "{}: {} training examples, {:.0} examples/s, {:.1} s training, {:.1} s total",
        r.name, r.train_examples, r.examples_per_s, r.train_seconds, r.total_seconds
    );
    if let (Some(e), Some(_)) = (r.last(), r.kept)
        && let Some((hr, ndcg)) = e.validation
    {
        println!(
            "kept the model after epoch {} of {} (best validation NDCG@10: HR@10 {hr:.4}, NDCG@10 {ndcg:.4})",
            e.epoch,
            r.evals.last().map_or(e.epoch, |l| l.epoch)
        );
    }
    if let Some(e) = r.last() {
        print_eval(&r.heads, e);
    }
}

/// `repin 0.1234, click 0.5678, …`: one value per head.
fn per_head(heads: &[String], values: &[f64]) -> String {
    heads
        .iter()
        .zip(values)
        .map(|(h, v)| format!("{h} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_eval(heads: &[String], e: &transact::train::run::EvalRecord) {
    println!(
        "HIT@3 over {} test requests: {}",
        e.requests,
        per_head(heads, &e.hit3)
    );
    if let Some((hr, ndcg)) = e.sasrec {
        println!("SASRec protocol: HR@10 {hr:.4}, NDCG@10 {ndcg:.4}");
    }
}

/// `transact train`.
pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let loaded = load(&args.data, args.sasrec)?;
    let mut cfg = config(
        &loaded.data,
        &args.model,
        args.data.seed,
        loaded.truth.is_some(),
    )?;
    if args.no_sequence {
        cfg.use_sequence = false;
    }
    let budget = match args.minutes {
        Some(m) if !(m.is_finite() && m > 0.0) => {
            return Err(format!("--minutes {m}: must be a positive number").into());
        }
        Some(m) => {
            if args.model.epochs.is_none() {
                cfg.epochs = UNBOUNDED_EPOCHS;
            }
            Some(std::time::Duration::from_secs_f64(m * 60.0))
        }
        None => None,
    };
    let start = match (&args.resume, &args.from) {
        (Some(p), _) => Start::Resume(p.clone()),
        (None, Some(p)) => Start::WarmStart(p.clone()),
        (None, None) => Start::Fresh,
    };
    let spec = RunSpec {
        name: "train".into(),
        config: cfg,
        start,
        dir: Some(args.out.clone()),
        sasrec: loaded.sasrec.clone().map(|s| (s, args.data.seed)),
        eval_every_epoch: true,
        stop: StopRule {
            budget,
            patience: args.sasrec.then_some(args.patience),
        },
    };
    let log = match &args.feature_log {
        Some(_) if spec.config.v2.is_none() && !matches!(spec.start, Start::Resume(_)) => {
            return Err(
                "--feature-log holds TransAct V2 tokens, and this run trains a V1 \
                        model: add --model v2 (with the selection the log was served with)"
                    .into(),
            );
        }
        Some(p) => {
            Some(transact::log::FeatureLog::open(p).map_err(|e| format!("--feature-log: {e}"))?)
        }
        None => None,
    };
    let tokens = log
        .as_ref()
        .map(|l| l as &dyn transact::train::features::V2TokenSource);
    let bars = Bars::new();
    let (report, trainer) = run_with_tokens(
        &spec,
        &loaded.data,
        &loaded.train,
        &loaded.test,
        &bars,
        tokens,
    )?;
    print_report(&report);
    if let Some(path) = &args.save_item_embeddings {
        let weights = trainer
            .params
            .get("items.weight")
            .ok_or("--save-item-embeddings: the network has no item table")?;
        transact::train::data::import::save_embeddings(
            path,
            &loaded.data.items.raw_ids,
            trainer.cfg.v1.item_emb_dim,
            weights,
        )?;
        println!(
            "item embeddings ({} items) written to {}",
            loaded.data.items.raw_ids.len(),
            path.display()
        );
    }
    let bundle_dir = args.out.join("bundle");
    if trainer.cfg.use_sequence {
        write_bundle(
            &trainer,
            &loaded.data,
            &args.data.data,
            &report,
            &bundle_dir,
        )?;
        println!(
            "run directory: {} (config.json, checkpoints/, metrics.json, loss.svg, hit3.svg, bundle/)",
            args.out.display()
        );
    } else {
        println!(
            "run directory: {} (config.json, checkpoints/, metrics.json, loss.svg, hit3.svg; \
             the no-sequence baseline has no serving bundle)",
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SHA-256 of a file, hex.
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the serving bundle of a finished run.
pub(crate) fn write_bundle(
    trainer: &Trainer,
    data: &Dataset,
    source: &str,
    report: &RunReport,
    dir: &Path,
) -> Result<()> {
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let data_sha256 = if source == "synthetic" {
        String::new()
    } else {
        sha256_file(Path::new(source))?
    };
    let provenance = Provenance {
        data: source.to_string(),
        data_sha256,
        train_config: serde_json::Value::Null,
        metrics: serde_json::to_value(report.last()).map_err(|e| e.to_string())?,
        created_ms,
    };
    let version = format!("{}-e{}-s{}", created_ms, trainer.epoch, trainer.step);
    let bundle = export_bundle(trainer, data, &version, provenance)?;
    bundle.save(dir)?;
    eprintln!("bundle {version} written to {}", dir.display());
    Ok(())
}

/// `transact eval`.
pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let loaded = load(&args.data, args.sasrec)?;
    let sasrec = loaded.sasrec.clone().map(|s| (s, args.data.seed));
    if let Some(dir) = &args.bundle {
        return eval_bundle(dir, args.store.as_deref(), &loaded, sasrec.as_ref());
    }
    let Some(checkpoint) = &args.checkpoint else {
        return Err("give --checkpoint or --bundle".into());
    };
    let trainer = Trainer::resume(checkpoint)?;
    let served = match &sasrec {
        Some(_) if trainer.cfg.use_sequence => {
            Some(transact::train::serving::memory_store(&loaded.data)?)
        }
        _ => None,
    };
    let e = evaluate_with(
        &trainer,
        &loaded.data,
        &loaded.test,
        sasrec.as_ref(),
        served.as_ref(),
        false,
    )?;
    print_eval(&loaded.data.heads, &e);
    Ok(ExitCode::SUCCESS)
}

/// Evaluates a bundle through the serving path.
fn eval_bundle(
    dir: &Path,
    store_dir: Option<&Path>,
    loaded: &Loaded,
    sasrec: Option<&(SasrecSplit, u64)>,
) -> Result<ExitCode> {
    use std::sync::Arc;
    use transact::rank::{Ranker, RankerConfig};
    use transact::seq::{EmbeddedStore, StoreConfig};
    use transact::train::eval::SasrecTarget;
    use transact::train::serving::{RankerScorer, memory_store, sasrec_served};

    let bundle = Arc::new(transact::rank::Bundle::load(dir)?);
    let data = &loaded.data;
    let store = match store_dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(format!("--store {}: no such store directory", d.display()).into());
            }
            Arc::new(EmbeddedStore::open(d, StoreConfig::default())?.0)
        }
        None => memory_store(data)?,
    };
    eprintln!(
        "evaluating bundle {} through the serving path ({} users in the store)",
        bundle.version(),
        transact::seq::SequenceStore::user_count(store.as_ref())
    );
    let ranker = Ranker::new(store.clone(), bundle.clone(), RankerConfig::default())?;
    let hit = hit_at_k(data, &loaded.test, 3, &RankerScorer::new(&ranker, data)?)?;
    let mut record = transact::train::run::EvalRecord {
        epoch: 0,
        step: 0,
        hit3: hit.per_head.clone(),
        requests: loaded.test.len(),
        sasrec: None,
        validation: None,
    };
    if let Some((split, seed)) = sasrec {
        let m = sasrec_served(&bundle, store, data, split, &[SasrecTarget::Test], *seed)?;
        record.sasrec = m.first().map(|m| (m.hr, m.ndcg));
    }
    print_eval(&data.heads, &record);
    Ok(ExitCode::SUCCESS)
}

/// `transact ablate`.
pub fn ablate_cmd(args: AblateArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let loaded = load(&args.data, false)?;
    let cfg = config(
        &loaded.data,
        &args.model,
        args.data.seed,
        loaded.truth.is_some(),
    )?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let bars = Bars::new();
    let ab = ablate_seeds(
        &cfg,
        args.seeds as usize,
        &loaded.data,
        &loaded.train,
        &loaded.test,
        Some(&args.out),
        &bars,
    )?;
    let mut table = match ab.runs.as_slice() {
        [rows] => markdown(rows, &loaded.data.heads),
        _ => {
            let mut t = markdown_seeds(&ab, &loaded.data.heads);
            for (seed, rows) in ab.seeds.iter().zip(&ab.runs) {
                t.push_str(&format!(
                    "\n### Training seed {seed}\n\n{}",
                    markdown(rows, &loaded.data.heads)
                ));
            }
            t
        }
    };
    if let Some(truth) = &loaded.truth {
        // The ceiling: the same test requests ranked by the world's own
        // expected utility, with and without the item-level focus term.
        let full = hit_at_k(&loaded.data, &loaded.test, 3, truth)?;
        let topic = hit_at_k(&loaded.data, &loaded.test, 3, &truth.topic_level())?;
        table.push_str(&format!(
            "\nCeiling (ranked by the world's ground truth): HIT@3 {}; \
             with topic-level truth only (no session focus): {}.\n",
            per_head(&loaded.data.heads, &full.per_head),
            per_head(&loaded.data.heads, &topic.per_head)
        ));
    }
    let md = format!(
        "# Ablation on {}\n\nCommand: `transact ablate {}`, seed {}, {} threads, wall time {:.0} s.\n\n{table}",
        loaded.data.name,
        std::env::args().skip(2).collect::<Vec<_>>().join(" "),
        if args.seeds > 1 {
            format!(
                "{} (data) with training seeds {}…{}",
                args.data.seed,
                args.data.seed,
                args.data.seed.wrapping_add(u64::from(args.seeds) - 1)
            )
        } else {
            args.data.seed.to_string()
        },
        cfg.thread_count(),
        t0.elapsed().as_secs_f64()
    );
    let path = args.out.join("ablation.md");
    std::fs::write(&path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
    let json = args.out.join("ablation.json");
    let json_text = match ab.runs.as_slice() {
        [rows] => serde_json::to_string_pretty(rows)?,
        _ => serde_json::to_string_pretty(&ab)?,
    };
    std::fs::write(&json, json_text).map_err(|e| format!("{}: {e}", json.display()))?;
    let svg = args.out.join("ablation.svg");
    let rows: Vec<String> = ab.summary.iter().map(|r| r.name.clone()).collect();
    let per_head: Vec<Vec<f64>> = (0..loaded.data.heads.len())
        .map(|h| {
            ab.summary
                .iter()
                .map(|r| r.mean.get(h).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let bars: Vec<transact::train::plot::Bars<'_>> = loaded
        .data
        .heads
        .iter()
        .zip(&per_head)
        .map(|(name, v)| (name.as_str(), v.as_slice()))
        .collect();
    transact::train::plot::write_bars_svg(
        &svg,
        &format!(
            "HIT@3 per head on {} (mean over {} seed(s))",
            loaded.data.name,
            ab.seeds.len()
        ),
        "HIT@3",
        &rows,
        &bars,
    )?;
    println!("{table}");
    println!(
        "total {:.0} s; table saved to {} (chart: {})",
        t0.elapsed().as_secs_f64(),
        path.display(),
        svg.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn world() -> Dataset {
        let world = SyntheticConfig {
            users: 5,
            items: 60,
            sessions: 2,
            ..SyntheticConfig::default()
        };
        generate_with_truth(&world, 1).expect("world").0
    }

    fn parse(argv: &[&str]) -> ModelArgs {
        Cli::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))
            .expect("flags")
            .model
    }

    fn cfg(argv: &[&str]) -> TrainConfig {
        config(&world(), &parse(argv), 1, true).expect("config")
    }

    /// The defaults of a log file, on the world without its impressions
    /// (as a rating log is).
    fn log_cfg(argv: &[&str]) -> TrainConfig {
        let mut data = world();
        for u in &mut data.users {
            u.actions
                .retain(|a| a.action_type != transact::seq::ActionType::IMPRESSION);
        }
        assert!(!data.has_impressions());
        config(&data, &parse(argv), 1, false).expect("config")
    }

    #[test]
    fn the_log_defaults_and_the_every_position_flag() {
        let c = log_cfg(&[]);
        assert!(c.features.nal_every_position);
        assert!(!c.features.nal_impressions && !c.features.nal_in_batch_too);
        assert_eq!(c.nal_weight, 0.5);
        assert!(
            !log_cfg(&["--nal-every-position", "false"])
                .features
                .nal_every_position
        );
        assert!(
            log_cfg(&["--nal-every-position"])
                .features
                .nal_every_position
        );
        // The synthetic world keeps NAL at the newest position unless asked.
        assert!(!cfg(&[]).features.nal_every_position);
        assert!(cfg(&["--nal-every-position"]).features.nal_every_position);
    }

    #[test]
    fn the_synthetic_defaults_and_the_negative_flags() {
        let c = cfg(&[]);
        assert!(c.learn_items && c.features.nal_impressions && c.features.nal_in_batch_too);
        assert_eq!(c.nal_weight, 0.1);
        let c = cfg(&["--nal-negatives", "impressions", "--learn-items", "false"]);
        assert!(!c.learn_items && c.features.nal_impressions && !c.features.nal_in_batch_too);
        let c = cfg(&["--nal-negatives", "in-batch"]);
        assert!(!c.features.nal_impressions && !c.features.nal_in_batch_too);
        let c = cfg(&["--nal-negatives", "both"]);
        assert!(c.features.nal_impressions && c.features.nal_in_batch_too);
    }
}

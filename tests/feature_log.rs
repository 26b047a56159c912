//! Training a TransAct V2 model from the feature log equals training it
//! from the histories. The log is written through the real serving path:
//! a bundle exported from a fresh trainer, the data ingested into a store,
//! every training request ranked by a `Ranker` with the Parquet logger.
//! A model trained from the log ends with the same parameters, bit for bit,
//! as one trained by replaying the histories — in both V2 token modes
//! (frozen int8 codes, the model's own item table).
//!
//! Bit for bit is the right bar, not a tolerance: the log holds exactly
//! the int8 codes, scales, action masks and surfaces the selection picked
//! (the ranker's selection over the store is the trainer's over the
//! replayed history, the same contract code), and the trainer dequantises
//! them with the same function, so every batch is equal (checked) and the
//! same batches in the same order give the same floating-point updates.
//!
//! Also: a log that does not fit the data or the contract, and a truncated
//! or foreign file, are clear errors naming what is wrong.

use std::path::Path;
use std::sync::Arc;

use transact::features::TokenEmbeddings;
use transact::log::{FeatureLog, LogError, ParquetFeatureLogger, WriterOptions};
use transact::rank::{OnLogError, Provenance, Ranker, RankerConfig};
use transact::seq::{EmbeddedStore, StoreConfig};
use transact::train::batch::Batch;
use transact::train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::features::{Featurizer, LoggedTokens, V2TokenSource};
use transact::train::serving::{export_bundle, ingest, rank_request};
use transact::train::trainer::{TrainConfig, Trainer};

/// A small V2 setup (the shapes of `tests/contract.rs`'s V2 test, smaller),
/// with histories longer than the logged sessions and the tokens embedded
/// as `tokens` says.
fn world(tokens: TokenEmbeddings, every_position: bool) -> (Dataset, TrainConfig) {
    let world = SyntheticConfig {
        users: 16,
        items: 160,
        sessions: 4,
        history_sessions: 2,
        ..SyntheticConfig::default()
    };
    let data = generate_with_truth(&world, 8).expect("world").0;
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    cfg.v1.seq_len = 10;
    cfg.v1.latest_n_emb = 3;
    cfg.v1.action_emb_dim = 4;
    cfg.v1.dim_feedforward = 16;
    cfg.heads.mlp_hidden = vec![16];
    cfg.epochs = 2;
    cfg.batch_size = 64;
    cfg.threads = 2;
    cfg.features.nal_every_position = every_position;
    cfg.features.sequence.lifelong = Some(transact::features::LifelongConfig {
        rt_keep: 4,
        k_lifelong: 6,
        k_realtime: 3,
        k_impression: 5,
        token_embeddings: tokens,
        ..transact::features::LifelongConfig::default()
    });
    (data, cfg.with_v2())
}

/// Ranks every request of `requests` through a ranker with the Parquet
/// logger, from a bundle of `trainer` and a store holding `data`.
fn log_requests(data: &Dataset, trainer: &Trainer, requests: &[LoggedRequest], path: &Path) {
    let bundle =
        export_bundle(trainer, data, "feature-log-test", Provenance::default()).expect("export");
    let store = EmbeddedStore::in_memory(StoreConfig {
        clock: Arc::new(|| i64::MAX / 4),
        ..StoreConfig::default()
    });
    ingest(data, &store, 1_000, |_| {}).expect("ingest");
    // Small row groups and batches: the file has several of each.
    let options = WriterOptions {
        row_group_rows: 256,
        batch_rows: 100,
        ..WriterOptions::default()
    };
    let logger = Arc::new(ParquetFeatureLogger::create(path, options).expect("logger"));
    let ranker = Ranker::new(Arc::new(store), Arc::new(bundle), RankerConfig::default())
        .expect("ranker")
        .with_logger(logger.clone(), OnLogError::FailRank);
    for r in requests {
        let req = rank_request(data, r).expect("request");
        ranker.rank(&req).expect("ranked and logged");
    }
    let stats = ranker.feature_log_stats().expect("a logger");
    assert_eq!((stats.logged, stats.failures), (requests.len() as u64, 0));
    let summary = logger.finish().expect("finish");
    assert_eq!(summary.requests, requests.len() as u64);
}

fn train(trainer: &mut Trainer, feat: &Featurizer<'_>, epochs: usize) {
    let total = trainer.steps_per_epoch(feat.examples().len()) * epochs as u64;
    for _ in 0..epochs {
        trainer
            .train_epoch(feat, total, &mut |_| {})
            .expect("epoch");
    }
}

fn bits(t: &Trainer) -> Vec<u32> {
    t.params.data().iter().map(|x| x.to_bits()).collect()
}

/// The log, with every candidate's oldest token dropped: the featurizer
/// must see it (so the equality below is not of two replays).
struct DropOldest<'a>(&'a FeatureLog);

impl V2TokenSource for DropOldest<'_> {
    fn dim(&self) -> usize {
        V2TokenSource::dim(self.0)
    }
    fn slots(&self) -> usize {
        V2TokenSource::slots(self.0)
    }
    fn find(&self, user: u64, request_ms: i64, candidate: u64) -> Option<LoggedTokens<'_>> {
        let t = V2TokenSource::find(self.0, user, request_ms, candidate)?;
        let n = usize::from(!t.is_empty());
        let d = t.candidate_codes.len();
        Some(LoggedTokens {
            item_ids: &t.item_ids[n..],
            codes: &t.codes[n * d..],
            scales: &t.scales[n..],
            action_masks: &t.action_masks[n..],
            surfaces: &t.surfaces[n..],
            times_ms: &t.times_ms[n..],
            parts: &t.parts[n..],
            ..t
        })
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// `a == b`, or a panic naming the first field (and index) that differs
/// (the whole batch is megabytes of `Debug`).
fn assert_same_batches(a: &Batch, b: &Batch) {
    fn first<T: PartialEq + std::fmt::Debug>(name: &str, a: &[T], b: &[T]) {
        assert_eq!(a.len(), b.len(), "`{name}` lengths differ");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("`{name}`[{i}]: replayed {:?}, logged {:?}", a[i], b[i]);
        }
    }
    first("v2_lens", &a.v2_lens, &b.v2_lens);
    first("v2_items", &a.v2_items, &b.v2_items);
    first("v2_masks", &a.v2_masks, &b.v2_masks);
    first("v2_surfaces", &a.v2_surfaces, &b.v2_surfaces);
    first("v2_cand", &a.v2_cand, &b.v2_cand);
    first("v2_rows", &a.v2_rows, &b.v2_rows);
    first("user_features", &a.user_features, &b.user_features);
    assert!(a == b, "the batches differ outside the V2 and user fields");
}

/// The whole check for one token mode, with the Next Action Loss on the
/// newest rows or at every realtime token (whose targets the featurizer
/// finds from the logged tokens' times and parts).
fn trained_from_the_log_equals_trained_from_histories(tokens: TokenEmbeddings, every: bool) {
    let (data, cfg) = world(tokens, every);
    let features = cfg.feature_config();
    assert_eq!(
        features
            .sequence
            .lifelong
            .as_ref()
            .map(|l| l.token_embeddings),
        Some(tokens)
    );
    let cut = data.time_split_index(0.2);
    let (train_reqs, check) = (&data.requests[..cut], &data.requests[cut..]);
    assert!(!check.is_empty());
    let examples: usize = train_reqs.iter().map(|r| r.candidates.len()).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("features.parquet");

    let fresh = Trainer::new(cfg.clone(), &data).expect("trainer");
    log_requests(&data, &fresh, train_reqs, &path);
    let log = FeatureLog::open(&path).expect("the log reads back");
    assert_eq!(log.len(), examples);
    assert!(
        log.iter().all(|r| r.user_feature.is_some()),
        "the user feature is logged"
    );
    let parts: std::collections::BTreeSet<u8> = log
        .iter()
        .flat_map(|r| r.token_parts.iter().copied())
        .collect();
    assert_eq!(
        parts.len(),
        3,
        "tokens of every part were selected: {parts:?}"
    );
    assert!(
        log.iter().any(|r| r.len() == log.slots()),
        "some candidate fills every slot"
    );

    let replayed = Featurizer::new(&data, train_reqs, features.clone()).expect("featurizer");
    let logged = Featurizer::with_token_source(&data, train_reqs, features.clone(), &log)
        .expect("every training example is in the log");
    // The same batches (every example at once)...
    let all = replayed.examples();
    assert_eq!(all, logged.examples());
    let (mut a, mut b) = (Batch::default(), Batch::default());
    replayed.fill(&all, 0, &mut a).expect("fill");
    logged.fill(&all, 0, &mut b).expect("fill");
    assert!(a.v2_lens.iter().any(|&n| n > 0));
    assert_eq!(
        a.nal_seq.iter().any(|&t| t != transact::train::NO_ITEM),
        every,
        "per-slot NAL targets exactly at every position"
    );
    assert_eq!(
        a.v2_rows.is_empty(),
        tokens == TokenEmbeddings::Codes,
        "item-table tokens name their rows"
    );
    assert_same_batches(&a, &b);
    // ...which come from the log, not from a replay.
    let dropped = DropOldest(&log);
    let altered = Featurizer::with_token_source(&data, train_reqs, features.clone(), &dropped)
        .expect("featurizer");
    let mut c = Batch::default();
    altered.fill(&all, 0, &mut c).expect("fill");
    assert_ne!(
        a.v2_lens, c.v2_lens,
        "the featurizer reads the log's tokens"
    );

    // ...so the same model, bit for bit.
    let mut from_histories = Trainer::new(cfg.clone(), &data).expect("trainer");
    let mut from_log = Trainer::new(cfg.clone(), &data).expect("trainer");
    train(&mut from_histories, &replayed, cfg.epochs);
    train(&mut from_log, &logged, cfg.epochs);
    assert!(from_log.step > 0);
    assert_ne!(
        bits(&fresh),
        bits(&from_log),
        "training moved the parameters"
    );
    assert_eq!(bits(&from_histories), bits(&from_log));

    // Requests that were never ranked are not in the log: a clear error.
    let err = Featurizer::with_token_source(&data, check, features.clone(), &log)
        .err()
        .expect("the held-out requests were not logged");
    assert!(
        err.contains("is not in the feature log") && err.contains("features.parquet"),
        "{err}"
    );
    // A contract of other slots, or without V2, does not fit the log.
    let mut other = features.clone();
    if let Some(l) = other.sequence.lifelong.as_mut() {
        l.k_impression += 1;
    }
    let err = Featurizer::with_token_source(&data, train_reqs, other, &log)
        .err()
        .expect("other slots");
    assert!(
        err.contains("32-wide codes in 18 slots, the contract 32-wide in 19"),
        "{err}"
    );
    let mut v1 = features;
    v1.sequence.lifelong = None;
    let err = Featurizer::with_token_source(&data, train_reqs, v1, &log)
        .err()
        .expect("a V1 contract");
    assert!(err.contains("no lifelong selection"), "{err}");
}

#[test]
fn a_v2_model_trained_from_the_log_equals_one_trained_from_histories_codes() {
    trained_from_the_log_equals_trained_from_histories(TokenEmbeddings::Codes, false);
}

#[test]
fn a_v2_model_trained_from_the_log_equals_one_trained_from_histories_item_table() {
    trained_from_the_log_equals_trained_from_histories(TokenEmbeddings::ItemTable, true);
}

/// A served log cut short, a Parquet file of another schema and a file
/// that is not Parquet are refused by name (the crate's own tests,
/// `crates/transact-log/tests/files.rs`, cover every case; this is the
/// trainer's view of a real log).
#[test]
fn a_truncated_or_foreign_file_is_a_clear_error() {
    let (data, cfg) = world(TokenEmbeddings::Codes, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("features.parquet");
    let fresh = Trainer::new(cfg, &data).expect("trainer");
    log_requests(&data, &fresh, &data.requests[..4], &path);
    let bytes = std::fs::read(&path).expect("read");
    let named = |p: &Path| {
        let err = FeatureLog::open(p).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(&p.display().to_string()), "{text}");
        (err, text)
    };

    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let (err, text) = named(&cut);
    assert!(matches!(err, LogError::Truncated { .. }), "{text}");
    assert!(text.contains("truncated Parquet file"), "{text}");

    let csv = dir.path().join("ratings.csv");
    std::fs::write(&csv, "userId,movieId,rating,timestamp\n1,2,4.0,100\n").expect("write");
    let (err, text) = named(&csv);
    assert!(matches!(err, LogError::NotParquet { .. }), "{text}");
    assert!(text.contains("not a Parquet file"), "{text}");

    // A Parquet file, but not a feature log: the log's file with its
    // key-value metadata stripped by a rewrite (what another engine's copy
    // without the footer keys looks like).
    let foreign = dir.path().join("foreign.parquet");
    {
        use parquet::arrow::ArrowWriter;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("open"))
                .expect("reader");
        let schema = Arc::new(
            reader
                .schema()
                .as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::<String, String>::new()),
        );
        let out = std::fs::File::create(&foreign).expect("create");
        let mut w = ArrowWriter::try_new(out, schema, None).expect("writer");
        for batch in reader.build().expect("build") {
            w.write(&batch.expect("batch")).expect("write");
        }
        w.close().expect("close");
    }
    let (err, text) = named(&foreign);
    assert!(matches!(err, LogError::ForeignSchema { .. }), "{text}");
    assert!(
        text.contains("not a TransAct feature log")
            && text.contains("transact.feature_log.version"),
        "{text}"
    );
}

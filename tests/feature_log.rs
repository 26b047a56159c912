//! Training a TransAct V2 model from the feature log equals training it
//! from the histories: the log is written through the real serving path
//! (a bundle exported from a fresh trainer, the data ingested into a
//! store, every training request ranked by a `Ranker` with the Parquet
//! logger), and a model trained from the log ends with the same
//! parameters, bit for bit, as one trained by replaying the histories.

use std::sync::Arc;

use transact::log::{FeatureLog, ParquetFeatureLogger, WriterOptions};
use transact::rank::{Candidate, OnLogError, Provenance, RankRequest, Ranker, RankerConfig};
use transact::seq::{EmbeddedStore, StoreConfig};
use transact::train::batch::Batch;
use transact::train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::features::Featurizer;
use transact::train::serving::{export_bundle, ingest, item_key, user_key};
use transact::train::trainer::{TrainConfig, Trainer};

/// The V2 setup of `tests/contract.rs::a_v2_model_serves_what_it_trained`,
/// a little smaller.
fn world() -> (Dataset, TrainConfig) {
    let world = SyntheticConfig {
        users: 16,
        items: 160,
        sessions: 5,
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
    let mut cfg = cfg.with_v2();
    if let Some(l) = cfg.features.sequence.lifelong.as_mut() {
        (l.rt_keep, l.k_lifelong, l.k_realtime, l.k_impression) = (4, 6, 3, 5);
    }
    (data, cfg.with_v2())
}

/// Ranks every request of `requests` through a ranker with the Parquet
/// logger, from a bundle of `trainer` and a store holding `data`.
fn log_requests(data: &Dataset, trainer: &Trainer, requests: &[LoggedRequest], path: &std::path::Path) {
    let bundle = export_bundle(trainer, data, "feature-log-test", Provenance::default())
        .expect("export");
    let store = EmbeddedStore::in_memory(StoreConfig {
        clock: Arc::new(|| i64::MAX / 4),
        ..StoreConfig::default()
    });
    ingest(data, &store, 1_000, |_| {}).expect("ingest");
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
        let req = RankRequest::new(
            user_key(data, r.user).expect("user"),
            r.time_ms,
            r.candidates
                .iter()
                .map(|c| Candidate::Item(item_key(data, u64::from(c.item)).expect("item")))
                .collect(),
        );
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
        trainer.train_epoch(feat, total, &mut |_| {}).expect("epoch");
    }
}

#[test]
fn a_v2_model_trained_from_the_feature_log_equals_one_trained_from_histories() {
    let (data, cfg) = world();
    let cut = data.time_split_index(0.2);
    let (train_reqs, check) = (&data.requests[..cut], &data.requests[cut..]);
    let examples: usize = train_reqs.iter().map(|r| r.candidates.len()).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("features.parquet");

    let fresh = Trainer::new(cfg.clone(), &data).expect("trainer");
    log_requests(&data, &fresh, train_reqs, &path);
    let log = FeatureLog::open(&path).expect("the log reads back");
    assert_eq!(log.len(), examples);
    assert!(log.iter().all(|r| r.user_feature.is_some()), "the user feature is logged");
    let parts: std::collections::BTreeSet<u8> =
        log.iter().flat_map(|r| r.token_parts.iter().copied()).collect();
    assert_eq!(parts.len(), 3, "tokens of every part were selected: {parts:?}");

    let features = fresh.cfg.feature_config();
    let replayed = Featurizer::new(&data, train_reqs, features.clone()).expect("featurizer");
    let logged = Featurizer::with_token_source(&data, train_reqs, features.clone(), &log)
        .expect("every training example is in the log");
    // The same batches (every example at once)...
    let all = replayed.examples();
    assert_eq!(all, logged.examples());
    let (mut a, mut b) = (Batch::default(), Batch::default());
    replayed.fill(&all, 0, &mut a).expect("fill");
    logged.fill(&all, 0, &mut b).expect("fill");
    assert_eq!(a, b, "the logged batches are the replayed ones");
    assert!(a.v2_lens.iter().any(|&n| n > 0));

    // ...so the same model, bit for bit.
    let mut from_histories = Trainer::new(cfg.clone(), &data).expect("trainer");
    let mut from_log = Trainer::new(cfg.clone(), &data).expect("trainer");
    train(&mut from_histories, &replayed, cfg.epochs);
    train(&mut from_log, &logged, cfg.epochs);
    assert!(from_log.step > 0);
    let bits = |t: &Trainer| -> Vec<u32> { t.params.data().iter().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(&from_histories), bits(&fresh_params_differ(&fresh, &from_log)));
    assert_eq!(bits(&from_histories), bits(&from_log));

    // Requests that were never ranked are not in the log: a clear error.
    let err = Featurizer::with_token_source(&data, check, features, &log)
        .err()
        .expect("the check requests were not logged");
    assert!(err.contains("is not in the feature log") && err.contains("features.parquet"), "{err}");
}

/// Training moved the parameters (the comparison is not of two fresh models).
fn fresh_params_differ<'t>(fresh: &Trainer, trained: &'t Trainer) -> &'t Trainer {
    assert_ne!(fresh.params.data(), trained.params.data());
    trained
}

//! Training–serving parity: a model trained on a log, exported as a bundle
//! and served through `Ranker` from a store filled with the same log,
//! scores every logged request as the trainer does — on the CPU and on the
//! GPU — and offline HIT@3 (and HR@10 / NDCG@10) computed through the
//! serving path equals the trainer's.
//!
//! The logs carry what tripped the old paths: impressions in the history,
//! an action at exactly the request time, an action type outside the
//! vocabulary and an action on an item the model has no row for.

use std::path::Path;
use std::sync::Arc;

use transact::features::{TokenEmbeddings, raw_id_key};
use transact::rank::{Bundle, Provenance, RankError, RankRequest, Ranker, RankerConfig};
use transact::seq::{Action, ActionType, EmbeddedStore, SequenceStore, StoreConfig, Surface};
use transact::train::batch::Batch;
use transact::train::data::import::{
    ImportOptions, fit_log_training, import_path, requests_from_log,
};
use transact::train::data::synthetic::{SyntheticConfig, fit_training, generate_with_truth};
use transact::train::data::{Dataset, LoggedRequest};
use transact::train::eval::{SasrecTarget, hit_at_k, sasrec_eval_with, sasrec_split};
use transact::train::features::Featurizer;
use transact::train::run::{Quiet, RunSpec, Start, StopRule, run};
use transact::train::serving::{
    RankerScorer, export_bundle, ingest, item_key, rank_request, user_key,
};
use transact::train::trainer::{TrainConfig, Trainer};

/// The item key no bundle of these tests has a row for.
const NEW_ITEM: &str = "an-item-after-training";
/// An action type outside every vocabulary here.
const UNKNOWN_TYPE: ActionType = ActionType(9);

fn small(mut cfg: TrainConfig) -> TrainConfig {
    cfg.v1.seq_len = 12;
    cfg.v1.latest_n_emb = 3;
    cfg.v1.action_emb_dim = 4;
    cfg.v1.dim_feedforward = 16;
    cfg.heads.mlp_hidden = vec![16];
    cfg.epochs = 1;
    cfg.batch_size = 64;
    cfg.threads = 2;
    cfg
}

fn train(cfg: TrainConfig, data: &Dataset, train: &[LoggedRequest]) -> Trainer {
    let spec = RunSpec {
        name: "contract".into(),
        config: cfg,
        start: Start::Fresh,
        dir: None,
        sasrec: None,
        eval_every_epoch: false,
        stop: StopRule::default(),
    };
    run(&spec, data, train, &train[..1], &Quiet)
        .expect("training run")
        .1
}

/// Inserts into `data` (item indices) the three awkward actions just before
/// request `r`, and returns them as the store holds them (raw-id keys).
fn inject(data: &mut Dataset, r: &LoggedRequest) -> Vec<Action> {
    let known = data.requests[0].candidates[0].item as u64;
    let unknown_index = data.items.count as u64 + 7;
    let t = r.time_ms;
    let acts = [
        (known, UNKNOWN_TYPE, t - 3),
        (unknown_index, ActionType::REPIN, t - 2),
        (known, ActionType::CLICK, t),
    ];
    let mut stored = Vec::new();
    let mut added = Vec::new();
    for (item, action_type, timestamp_ms) in acts {
        let a = Action {
            item_id: item,
            action_type,
            timestamp_ms,
            surface: Surface(0),
        };
        let key = if item == unknown_index {
            raw_id_key(NEW_ITEM)
        } else {
            item_key(data, item).expect("known item")
        };
        stored.push(Action { item_id: key, ..a });
        added.push(a);
    }
    let user = &mut data.users[r.user as usize];
    user.actions.extend(added);
    // Stable: an injected action lands after logged ones of the same time,
    // as the store places a later arrival.
    user.actions.sort_by_key(|a| a.timestamp_ms);
    stored
}

/// A store holding `data`'s logs (before `inject`) plus the injected actions.
fn store_of(data: &Dataset, extra: &[(u64, Vec<Action>)]) -> Arc<EmbeddedStore> {
    let store = EmbeddedStore::in_memory(StoreConfig {
        clock: Arc::new(|| i64::MAX / 4),
        ..StoreConfig::default()
    });
    ingest(data, &store, 1_000, |_| {}).expect("ingest");
    for (user, acts) in extra {
        use transact::seq::SequenceStore;
        store
            .append(*user, acts)
            .expect("append the injected actions");
    }
    Arc::new(store)
}

/// Every candidate of `requests` through the trainer and through `ranker`:
/// the probabilities agree within `tol`. Returns (requests, positions read
/// by the served sequences, unknown types seen, unknown items seen).
fn assert_parity(
    data: &Dataset,
    requests: &[LoggedRequest],
    trainer: &mut Trainer,
    ranker: &Ranker<EmbeddedStore>,
    tol: f32,
) -> (usize, usize, usize, usize) {
    let feat = Featurizer::new(data, requests, trainer.cfg.feature_config()).expect("featurizer");
    let examples = feat.examples();
    let heads = data.heads.len();
    let (mut batch, mut logits) = (Batch::default(), Vec::new());
    let mut seen = (0, 0, 0, 0);
    let mut start = 0;
    for (i, r) in requests.iter().enumerate() {
        let n = r.candidates.len();
        let ex = &examples[start..start + n];
        start += n;
        assert!(ex.iter().all(|e| e.request as usize == i));
        feat.fill(ex, 0, &mut batch).expect("fill");
        trainer
            .predict(&batch, &mut logits)
            .expect("trainer predicts");
        let req = rank_request(data, r).expect("request");
        let resp = ranker.rank(&req).expect("served");
        for (k, (&z, &p)) in logits.iter().zip(&resp.probabilities).enumerate() {
            let want = 1.0 / (1.0 + (-z).exp());
            assert!(
                (want - p).abs() <= tol,
                "request {i} (user {}, t {}), candidate {} head {}: trainer {want} vs served {p} on {}",
                r.user,
                r.time_ms,
                k / heads,
                k % heads,
                resp.backend
            );
        }
        seen.0 += 1;
        seen.1 += resp.sequence_len;
        seen.2 += resp.unknown_actions;
        seen.3 += resp.unknown_items;
    }
    seen
}

/// `rank_many` over groups of requests (with a request that has no
/// candidates in each group) answers as `rank` answers each request alone:
/// the bad request fails alone, the others agree within `tol`.
fn assert_batched_like_alone<S: SequenceStore + ?Sized>(
    data: &Dataset,
    requests: &[LoggedRequest],
    ranker: &Ranker<S>,
    tol: f32,
) {
    let reqs: Vec<RankRequest> = requests
        .iter()
        .map(|r| rank_request(data, r).expect("request"))
        .collect();
    for group in reqs.chunks(5) {
        let mut batch = group.to_vec();
        let bad = batch.len() / 2;
        batch.insert(bad, RankRequest::new(1, 0, Vec::new()));
        let answers = ranker.rank_many(&batch);
        assert_eq!(answers.len(), batch.len());
        for (i, (req, got)) in batch.iter().zip(answers).enumerate() {
            if i == bad {
                assert!(
                    matches!(got, Err(RankError::NoCandidates { .. })),
                    "the empty request fails alone: {got:?}"
                );
                continue;
            }
            let got = got.expect("batched answer");
            let alone = ranker.rank(req).expect("answer alone");
            assert_eq!(got.probabilities.len(), alone.probabilities.len());
            assert_eq!(got.sequence_len, alone.sequence_len);
            for (k, (a, b)) in got
                .probabilities
                .iter()
                .zip(&alone.probabilities)
                .enumerate()
            {
                assert!(
                    (a - b).abs() <= tol,
                    "request {i} value {k}: batched {a} vs alone {b} on {}",
                    got.backend
                );
            }
        }
    }
}

fn gpu_backend(bundle: &Bundle) -> Option<transact::backend::GpuBackend> {
    match transact::backend::GpuBackend::new(bundle.model.clone()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping the GPU half: no GPU adapter ({e})");
            None
        }
        Err(e) => panic!("CI=true needs a GPU adapter (install mesa-vulkan-drivers): {e}"),
    }
}

/// Trains on `train`, exports and reloads the bundle, fills a store, then
/// checks parity on `check` (CPU and GPU), and equal HIT@3 on `check`.
fn contract(
    mut data: Dataset,
    cfg: TrainConfig,
    train_reqs: Vec<LoggedRequest>,
    check: Vec<LoggedRequest>,
) -> (Dataset, Arc<Bundle>, Arc<EmbeddedStore>, Trainer) {
    let mut trainer = train(cfg, &data, &train_reqs);
    let dir = tempfile::tempdir().expect("tempdir");
    export_bundle(&trainer, &data, "contract-test", Provenance::default())
        .expect("export")
        .save(dir.path())
        .expect("save");
    let bundle = Arc::new(Bundle::load(dir.path()).expect("the bundle loads and checks"));

    // The awkward actions, before the newest checked request of a user with
    // a history.
    let target = check
        .iter()
        .rev()
        .find(|r| data.users[r.user as usize].actions.len() > 3)
        .expect("a request with history")
        .clone();
    let clean = data.clone();
    let stored = inject(&mut data, &target);
    let store = store_of(
        &clean,
        &[(user_key(&data, target.user).expect("user"), stored)],
    );

    let cpu = Ranker::new(store.clone(), bundle.clone(), RankerConfig::default()).expect("ranker");
    let (n, positions, unknown_types, unknown_items) =
        assert_parity(&data, &check, &mut trainer, &cpu, 1e-5);
    assert!(positions > n, "the served sequences are not empty");
    assert!(
        unknown_types >= 1 && unknown_items >= 1,
        "the injected actions were read"
    );
    assert_batched_like_alone(&data, &check, &cpu, 0.0);

    // Offline HIT@3 through the serving path equals the trainer's.
    let trained = hit_at_k(&data, &check, 3, &trainer.scorer(&data).expect("scorer")).expect("hit");
    let served = hit_at_k(
        &data,
        &check,
        3,
        &RankerScorer::new(&cpu, &data).expect("scorer"),
    )
    .expect("hit");
    assert_eq!(trained.per_head, served.per_head);
    assert_eq!(trained.requests, served.requests);

    if let Some(backend) = gpu_backend(&bundle) {
        let watch = backend.clone();
        let gpu = Ranker::with_backend(
            store.clone(),
            bundle.clone(),
            RankerConfig::default(),
            Box::new(backend),
        )
        .expect("gpu ranker");
        let few = &check[check.len().saturating_sub(8)..];
        assert_parity(&data, few, &mut trainer, &gpu, 1e-5);
        // Several users in one device submission score as each alone.
        assert_batched_like_alone(&data, few, &gpu, 1e-5);
        // Every request ran on the device, none fell back to the CPU.
        assert_eq!(watch.last_fallback(), None);
        assert_eq!(watch.devices_opened(), 1);
    }
    (data, bundle, store, trainer)
}

#[test]
fn the_synthetic_world_serves_what_it_trained() {
    let world = SyntheticConfig {
        users: 40,
        items: 240,
        sessions: 3,
        ..SyntheticConfig::default()
    };
    let data = generate_with_truth(&world, 5).expect("world").0;
    assert!(data.has_impressions());
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    let cfg = small(cfg);
    let cut = data.time_split_index(0.2);
    let (train_reqs, check) = (data.requests[..cut].to_vec(), data.requests[cut..].to_vec());
    let (_, bundle, _, _) = contract(data, cfg, train_reqs, check);
    // The user feature is part of the contract and is served from the store.
    assert!(bundle.user_items.is_some());
}

#[test]
fn a_v2_model_serves_what_it_trained() {
    v2_contract(TokenEmbeddings::Codes);
    v2_contract(TokenEmbeddings::ItemTable);
}

fn v2_contract(tokens: TokenEmbeddings) {
    // Longer histories than the realtime sequence, so each part of the
    // selection (lifelong, realtime, impressions) holds tokens.
    let world = SyntheticConfig {
        users: 24,
        items: 240,
        sessions: 6,
        ..SyntheticConfig::default()
    };
    let data = generate_with_truth(&world, 8).expect("world").0;
    let mut cfg = TrainConfig::new(&data.heads, world.dim);
    fit_training(&mut cfg);
    let mut cfg = small(cfg);
    cfg.v1.seq_len = 10;
    let mut cfg = cfg.with_v2();
    if let Some(l) = cfg.features.sequence.lifelong.as_mut() {
        (l.rt_keep, l.k_lifelong, l.k_realtime, l.k_impression) = (4, 6, 3, 5);
        l.token_embeddings = tokens;
    }
    let cfg = cfg.with_v2();
    assert_eq!(cfg.v2.as_ref().map(|v| v.seq_len), Some(18));
    let cut = data.time_split_index(0.2);
    let (train_reqs, check) = (data.requests[..cut].to_vec(), data.requests[cut..].to_vec());
    let (_, bundle, _, _) = contract(data, cfg, train_reqs, check);
    assert!(bundle.model.v2().is_some() && bundle.tokens.is_some());
}

/// A CSV log with string ids, impressions and a rating-free action mix.
fn write_log(path: &Path) {
    use std::fmt::Write as _;
    let mut text = String::from("user,item,action,timestamp\n");
    let mut state = 12_345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for u in 0..30 {
        let mut t = 1_600_000_000_000i64 + u as i64 * 1_000;
        let taste = next() % 4;
        for _ in 0..(12 + next() % 20) {
            let item = if next() % 3 == 0 {
                next() % 60
            } else {
                taste * 15 + next() % 15
            };
            let action = [
                "repin",
                "click",
                "click",
                "hide",
                "impression",
                "impression",
            ][next() % 6];
            writeln!(text, "user-{u},movie/{item},{action},{t}").expect("write");
            t += 60_000 + (next() % 600_000) as i64;
        }
    }
    std::fs::write(path, text).expect("write log");
}

#[test]
fn an_imported_log_with_string_ids_serves_what_it_trained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.csv");
    write_log(&path);
    let (mut data, _) = import_path(&path, &ImportOptions::default()).expect("import");
    assert!(data.items.raw_ids.iter().all(|r| r.starts_with("movie/")));
    let split = sasrec_split(&data);
    requests_from_log(&mut data, &split, 3).expect("requests");
    let mut cfg = TrainConfig::new(&data.heads, 8);
    fit_log_training(&mut cfg, &data);
    let cfg = small(cfg);
    let cut = data.time_split_index(0.3);
    let (train_reqs, check) = (data.requests[..cut].to_vec(), data.requests[cut..].to_vec());
    let (data, bundle, store, trainer) = contract(data, cfg, train_reqs, check);
    assert!(
        bundle.user_items.is_none(),
        "no pretrained embeddings: no user feature"
    );

    // HR@10 / NDCG@10 through the serving path equal the trainer's; the
    // protocol's score is P(any interaction): every head weighs 1.
    let split = sasrec_split(&data);
    let any = trainer
        .scorer_with(&data, vec![1.0; data.heads.len()])
        .expect("scorer");
    let all_ones = (*bundle)
        .clone()
        .with_utility(transact::rank::UtilityWeights(
            data.heads.iter().map(|h| (h.clone(), 1.0)).collect(),
        ))
        .expect("bundle");
    let served = Ranker::new(store, Arc::new(all_ones), RankerConfig::default()).expect("ranker");
    let served = RankerScorer::new(&served, &data).expect("scorer");
    for target in [SasrecTarget::Validation, SasrecTarget::Test] {
        let a = sasrec_eval_with(&data, &split, target, 20, 10, 1, &any).expect("trainer eval");
        let b = sasrec_eval_with(&data, &split, target, 20, 10, 1, &served).expect("served eval");
        assert!(a.users > 20, "{a:?}");
        assert_eq!(
            (a.hr, a.ndcg, a.users),
            (b.hr, b.ndcg, b.users),
            "{target:?}"
        );
    }
}

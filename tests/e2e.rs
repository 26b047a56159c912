//! End to end through the facade: actions into a persistent store, a model,
//! ranking requests, a reopen.

use std::sync::Arc;

use transact::features::FeatureConfig;
use transact::model::{HeadsConfig, RankingModel, V1Config};
use transact::rank::{
    Bundle, Candidate, RankError, RankRequest, Ranker, RankerConfig, UtilityWeights,
};
use transact::seq::{EmbeddedStore, SequenceStore, StoreConfig};
use transact::world::{World, WorldConfig};

const NOW: i64 = 1_700_000_000_000;

fn world() -> World {
    World::generate(WorldConfig {
        users: 12,
        items: 400,
        topics: 6,
        item_emb_dim: 8,
        actions_per_user: (5, 60),
        now_ms: NOW,
        seed: 3,
    })
    .expect("world")
}

fn model() -> RankingModel {
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
    RankingModel::new_random(v1, heads, 9).expect("model")
}

/// A bundle of the random model and the world's items: the model's whole
/// vocabulary enters the sequence except impressions.
fn bundle(w: &World) -> Arc<Bundle> {
    let m = model();
    let c = m.v1().expect("v1").config();
    let features = FeatureConfig {
        action_vocab: (0..20).collect(),
        sequence_actions: (0..20).filter(|&t| t != 4).collect(),
        ..FeatureConfig::new(c.seq_len)
    };
    Arc::new(Bundle::new(Arc::new(m), Arc::new(w.items.clone()), features).expect("bundle"))
}

fn store_config() -> StoreConfig {
    StoreConfig {
        clock: Arc::new(|| NOW),
        ..StoreConfig::default()
    }
}

#[test]
fn store_rank_reopen_rank_gives_the_same_answer() {
    let w = world();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = EmbeddedStore::open(dir.path(), store_config()).expect("open");
    let n = w.fill_store(&store).expect("fill");
    assert!(n > 0);
    let b = bundle(&w);
    let ranker = Ranker::new(Arc::new(store), b.clone(), RankerConfig::default()).expect("ranker");

    let slate = w.candidates_for(2, 20, 1);
    let req = RankRequest::new(
        2,
        NOW + 1,
        slate.iter().copied().map(Candidate::Item).collect(),
    );
    let first = ranker.rank(&req).expect("rank");
    assert_eq!(first.ranked.len(), 20);
    assert_eq!(&*first.heads, ["repin", "click", "hide"]);
    assert!(first.sequence_len > 0 && first.sequence_len <= 16);
    assert!(
        first
            .ranked
            .windows(2)
            .all(|p| p[0].utility >= p[1].utility)
    );
    let mut ids: Vec<u64> = first.ranked.iter().map(|r| r.item_id).collect();
    ids.sort_unstable();
    let mut want = slate.clone();
    want.sort_unstable();
    assert_eq!(ids, want, "every candidate comes back exactly once");
    for r in &first.ranked {
        let p = first.probabilities(r);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
    }
    drop(ranker);

    let (store, report) = EmbeddedStore::open(dir.path(), store_config()).expect("reopen");
    assert_eq!(store.user_count(), 12, "{report:?}");
    let ranker =
        Ranker::new(Arc::new(store), b.clone(), RankerConfig::default()).expect("ranker again");
    let again = ranker.rank(&req).expect("rank again");
    assert_eq!(first, again);
}

#[test]
fn unknown_user_ranks_with_an_empty_sequence_and_bad_requests_are_errors() {
    let w = world();
    let store = EmbeddedStore::in_memory(store_config());
    w.fill_store(&store).expect("fill");
    let ranker = Ranker::new(Arc::new(store), bundle(&w), RankerConfig::default()).expect("ranker");

    let resp = ranker
        .rank(&RankRequest::new(
            9_999,
            NOW,
            vec![Candidate::Item(1), Candidate::Item(2)],
        ))
        .expect("unknown user is not an error");
    assert_eq!(resp.sequence_len, 0);
    assert_eq!(resp.ranked.len(), 2);

    let empty = ranker.rank(&RankRequest::new(1, NOW, vec![]));
    assert!(matches!(empty, Err(RankError::NoCandidates { user: 1 })));
    let wrong_dim = ranker.rank(&RankRequest::new(
        1,
        NOW,
        vec![Candidate::Embedding {
            item_id: 5,
            embedding: vec![0.1; 7],
        }],
    ));
    assert!(matches!(
        wrong_dim,
        Err(RankError::CandidateDimension {
            expected: 8,
            got: 7,
            ..
        })
    ));
    let nan = ranker.rank(&RankRequest::new(
        1,
        NOW,
        vec![Candidate::Embedding {
            item_id: 5,
            embedding: vec![f32::NAN; 8],
        }],
    ));
    assert!(matches!(
        nan,
        Err(RankError::CandidateNonFinite { value_index: 0, .. })
    ));
    let unknown = ranker.rank(&RankRequest::new(1, NOW, vec![Candidate::Item(123_456)]));
    let msg = unknown.expect_err("unknown candidate id").to_string();
    assert!(msg.contains("123456"), "{msg}");
}

#[test]
fn utility_weights_decide_the_order() {
    let w = world();
    let store = EmbeddedStore::in_memory(store_config());
    w.fill_store(&store).expect("fill");
    let store = Arc::new(store);
    let b = bundle(&w);
    let m = b.model.clone();
    let req = RankRequest::new(
        3,
        NOW,
        w.candidates_for(3, 12, 5)
            .into_iter()
            .map(Candidate::Item)
            .collect(),
    );
    let only_hide = (*b)
        .clone()
        .with_utility(UtilityWeights(vec![("hide".into(), -1.0)]))
        .expect("bundle");
    let ranker =
        Ranker::new(store.clone(), Arc::new(only_hide), RankerConfig::default()).expect("ranker");
    let resp = ranker.rank(&req).expect("rank");
    let hide: Vec<f32> = resp
        .ranked
        .iter()
        .map(|r| resp.probabilities(r)[2])
        .collect();
    assert!(
        hide.windows(2).all(|p| p[0] <= p[1]),
        "least likely hidden first: {hide:?}"
    );

    let unknown_head = (*b)
        .clone()
        .with_utility(UtilityWeights(vec![("share".into(), 1.0)]));
    let msg = unknown_head.expect_err("unknown head").to_string();
    assert!(
        msg.contains("share") && msg.contains("manifest.json"),
        "{msg}"
    );
    drop((store, m));
}

#[test]
fn gpu_backend_ranks_like_the_cpu() {
    use transact::backend::GpuBackend;
    let w = world();
    let store = Arc::new(EmbeddedStore::in_memory(store_config()));
    w.fill_store(store.as_ref()).expect("fill");
    let b = bundle(&w);
    let m = b.model.clone();
    let gpu = match GpuBackend::new(m.clone()) {
        Ok(g) => g,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: no GPU adapter ({e})");
            return;
        }
        Err(e) => panic!("CI=true needs a GPU adapter (install mesa-vulkan-drivers): {e}"),
    };
    let cpu = Ranker::new(store.clone(), b.clone(), RankerConfig::default()).expect("cpu ranker");
    let gpu =
        Ranker::with_backend(store, b, RankerConfig::default(), Box::new(gpu)).expect("gpu ranker");
    assert!(gpu.backend_name().starts_with("gpu"));
    for user in [1u64, 4, 9_999] {
        let req = RankRequest::new(
            user,
            NOW,
            w.candidates_for(user, 10, 2)
                .into_iter()
                .map(Candidate::Item)
                .collect(),
        );
        let a = cpu.rank(&req).expect("cpu rank");
        let b = gpu.rank(&req).expect("gpu rank");
        assert_eq!(a.sequence_len, b.sequence_len);
        for ra in &a.ranked {
            let rb = b
                .ranked
                .iter()
                .find(|r| r.item_id == ra.item_id)
                .expect("same candidates");
            for (pa, pb) in a.probabilities(ra).iter().zip(b.probabilities(rb)) {
                assert!(
                    (pa - pb).abs() < 1e-4,
                    "user {user} item {}: {pa} vs {pb}",
                    ra.item_id
                );
            }
        }
    }
    let bad = gpu.rank(&RankRequest::new(
        1,
        NOW,
        vec![Candidate::Embedding {
            item_id: 1,
            embedding: vec![0.0; 3],
        }],
    ));
    assert!(bad.is_err());
}

#[test]
fn a_lost_device_scores_that_request_on_the_cpu_and_is_recreated() {
    use transact::backend::GpuBackend;
    let w = world();
    let store = Arc::new(EmbeddedStore::in_memory(store_config()));
    w.fill_store(store.as_ref()).expect("fill");
    let b = bundle(&w);
    let m = b.model.clone();
    let gpu = match GpuBackend::new(m.clone()) {
        Ok(g) => g,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: no GPU adapter ({e})");
            return;
        }
        Err(e) => panic!("CI=true needs a GPU adapter (install mesa-vulkan-drivers): {e}"),
    };
    let watch = gpu.clone();
    let cpu = Ranker::new(store.clone(), b.clone(), RankerConfig::default()).expect("cpu ranker");
    let ranker =
        Ranker::with_backend(store, b, RankerConfig::default(), Box::new(gpu)).expect("gpu ranker");
    let req = RankRequest::new(
        4,
        NOW,
        w.candidates_for(4, 10, 2)
            .into_iter()
            .map(Candidate::Item)
            .collect(),
    );
    let expected = cpu.rank(&req).expect("cpu rank");
    let same = |got: &transact::rank::RankResponse| {
        for (a, b) in expected.ranked.iter().zip(&got.ranked) {
            assert_eq!(a.item_id, b.item_id);
            assert!(
                (a.utility - b.utility).abs() < 1e-4,
                "{} vs {}",
                a.utility,
                b.utility
            );
        }
    };
    same(&ranker.rank(&req).expect("on the GPU"));
    assert_eq!(watch.last_fallback(), None);

    // The device goes away between requests: the next request cannot run on
    // it, is scored on the CPU, and says why.
    let ctx = watch.context().expect("a device");
    ctx.destroy();
    same(&ranker.rank(&req).expect("scored on the CPU"));
    let why = watch.last_fallback().expect("a fallback reason");
    assert!(why.contains("lost"), "{why}");
    assert!(watch.context().is_none(), "the lost device is dropped");
    assert_eq!(watch.devices_opened(), 1);

    // The request after that opens a new device and runs on it.
    same(&ranker.rank(&req).expect("on a new device"));
    assert_eq!(watch.last_fallback(), None);
    assert_eq!(watch.devices_opened(), 2);
    assert!(!watch.context().expect("new device").is_lost());
}

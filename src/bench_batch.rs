//! Batching across requests: `k` users' requests ranked one call each
//! ([`Ranker::rank`]) against the same requests in one call
//! ([`Ranker::rank_many`]), on a backend the caller chooses — the figures
//! behind the server's `--max-batch` default (`transact bench batch`).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use transact_embed::{ItemTable, Precision};
use transact_features::FeatureConfig;
use transact_model::{HeadsConfig, RankingModel, V1Config};
use transact_rank::{Backend, Bundle, Candidate, RankRequest, Ranker, RankerConfig};
use transact_seq::{Action, ActionType, EmbeddedStore, SequenceStore, StoreConfig, Surface};

use crate::bench::median_ms;

/// Items in the case's table.
const ITEMS: u64 = 10_000;
/// Users with a history (requests cycle over them).
const USERS: u64 = 64;
/// Request time of every request.
const NOW: i64 = 1_700_000_000_000;

/// The model and the store of the batching case: the reference V1
/// defaults (S = 100, d = 96, two layers) with random weights, and `64`
/// users of 150 actions each (a third impressions, which the sequence
/// leaves out).
pub struct BatchCase {
    model: Arc<RankingModel>,
    bundle: Arc<Bundle>,
    store: Arc<EmbeddedStore>,
}

/// One measured row of [`BatchCase::measure`].
#[derive(Clone, Debug, Serialize)]
pub struct BatchRow {
    /// The backend's name.
    pub backend: String,
    /// Requests `k`.
    pub requests: usize,
    /// Candidates per request.
    pub candidates: usize,
    /// Median ms of `k` calls of `rank`, one request each.
    pub alone_ms: f64,
    /// Median ms of one `rank_many` call over the `k` requests.
    pub batched_ms: f64,
}

impl BatchCase {
    /// Builds the model, the item table and the store.
    pub fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let cfg = V1Config::default();
        let d = cfg.item_emb_dim;
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let model = Arc::new(RankingModel::new_random(
            cfg.clone(),
            HeadsConfig::default(),
            3,
        )?);
        let mut items = ItemTable::new(d, Precision::F32)?;
        let mut row = vec![0.0f32; d];
        for id in 0..ITEMS {
            row.iter_mut()
                .for_each(|v| *v = rng.random_range(-0.5..0.5));
            items.insert(id, &row)?;
        }
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        for user in 0..USERS {
            let actions: Vec<Action> = (0..150i64)
                .map(|i| Action {
                    item_id: rng.random_range(0..ITEMS),
                    action_type: if i % 3 == 2 {
                        ActionType::IMPRESSION
                    } else {
                        ActionType(rng.random_range(5..20))
                    },
                    timestamp_ms: NOW - (150 - i) * 60_000,
                    surface: Surface(0),
                })
                .collect();
            store.append(user, &actions)?;
        }
        let features = FeatureConfig {
            action_vocab: (0..20).collect(),
            sequence_actions: (0..20).filter(|&t| t != ActionType::IMPRESSION.0).collect(),
            ..FeatureConfig::new(cfg.seq_len)
        };
        let bundle = Arc::new(Bundle::new(model.clone(), Arc::new(items), features)?);
        Ok(Self {
            model,
            bundle,
            store: Arc::new(store),
        })
    }

    /// The model, for building a device backend.
    pub fn model(&self) -> &Arc<RankingModel> {
        &self.model
    }

    /// `k` requests of `b` random candidates, for users `0, 1, …`.
    fn requests(k: usize, b: usize) -> Vec<RankRequest> {
        let mut rng = ChaCha8Rng::seed_from_u64(k as u64 * 1_000 + b as u64);
        (0..k)
            .map(|i| {
                RankRequest::new(
                    i as u64 % USERS,
                    NOW,
                    (0..b)
                        .map(|_| Candidate::Item(rng.random_range(0..ITEMS)))
                        .collect(),
                )
            })
            .collect()
    }

    /// Times every (`k`, `b`) pair on `backend`: the median of `runs` timed
    /// runs after one warm-up, each way. Checks first that the batched
    /// answers are the answers alone (within 1e-5).
    pub fn measure(
        &self,
        backend: Box<dyn Backend>,
        requests: &[usize],
        candidates: &[usize],
        runs: usize,
    ) -> Result<Vec<BatchRow>, Box<dyn std::error::Error>> {
        let name = backend.name().to_string();
        let ranker = Ranker::with_backend(
            self.store.clone() as Arc<dyn SequenceStore>,
            self.bundle.clone(),
            RankerConfig::default(),
            backend,
        )?;
        let mut rows = Vec::new();
        for &b in candidates {
            for &k in requests {
                let reqs = Self::requests(k, b);
                for (req, got) in reqs.iter().zip(ranker.rank_many(&reqs)) {
                    let got = got?;
                    let alone = ranker.rank(req)?;
                    let worst = got
                        .probabilities
                        .iter()
                        .zip(&alone.probabilities)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    if worst > 1e-5 {
                        return Err(format!(
                            "{name}: a batched answer differs from the answer alone by {worst}"
                        )
                        .into());
                    }
                }
                let alone_ms = median_ms(runs, 1, || {
                    reqs.iter().try_for_each(|r| ranker.rank(r).map(|_| ()))
                })?;
                let batched_ms = median_ms(runs, 1, || {
                    ranker
                        .rank_many(&reqs)
                        .into_iter()
                        .try_for_each(|r| r.map(|_| ()))
                })?;
                rows.push(BatchRow {
                    backend: name.clone(),
                    requests: k,
                    candidates: b,
                    alone_ms,
                    batched_ms,
                });
            }
        }
        Ok(rows)
    }
}

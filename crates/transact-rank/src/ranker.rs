//! The `Ranker`: one call ranks the candidates of one request.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use transact_embed::ItemTable;
use transact_model::{RankingModel, V1Request};
use transact_seq::{ItemId, SequenceBuf, SequenceStore, UserId};

use crate::{Backend, CpuBackend, RankError};

/// Weights `v_h` of the utility `Σ_h v_h · p_h`, by head name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UtilityWeights(pub Vec<(String, f32)>);

impl Default for UtilityWeights {
    /// repin 1.0, click 0.5, hide −2.0 (hiding is penalised).
    fn default() -> Self {
        Self(vec![
            ("repin".into(), 1.0),
            ("click".into(), 0.5),
            ("hide".into(), -2.0),
        ])
    }
}

/// How a [`Ranker`] behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RankerConfig {
    /// Utility weights by head name; heads not listed weigh 0.
    pub utility: UtilityWeights,
    /// Largest number of candidates one request may carry.
    pub max_candidates: usize,
}

impl Default for RankerConfig {
    fn default() -> Self {
        Self {
            utility: UtilityWeights::default(),
            max_candidates: 4096,
        }
    }
}

/// A candidate to rank: an item id looked up in the item table, or an item
/// with its embedding given inline (e.g. a fresh item not in the table yet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Candidate {
    /// Look the embedding up by id.
    Item(ItemId),
    /// Use this embedding.
    Embedding {
        /// The item's id (returned in the ranking).
        item_id: ItemId,
        /// Its embedding, of the model's item width.
        embedding: Vec<f32>,
    },
}

impl Candidate {
    /// The candidate's item id.
    pub fn item_id(&self) -> ItemId {
        match self {
            Candidate::Item(id) | Candidate::Embedding { item_id: id, .. } => *id,
        }
    }
}

/// One ranking request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankRequest {
    /// The user (an unknown user ranks with an empty sequence).
    pub user: UserId,
    /// Request time in ms; only actions at or before it are read.
    pub request_time_ms: i64,
    /// The candidates.
    pub candidates: Vec<Candidate>,
    /// The user embedding feature, when the model reads one.
    #[serde(default)]
    pub user_embedding: Option<Vec<f32>>,
    /// The context feature vector, when the model reads one.
    #[serde(default)]
    pub context: Option<Vec<f32>>,
}

impl RankRequest {
    /// A request without user or context features.
    pub fn new(user: UserId, request_time_ms: i64, candidates: Vec<Candidate>) -> Self {
        Self {
            user,
            request_time_ms,
            candidates,
            user_embedding: None,
            context: None,
        }
    }
}

/// One ranked candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The item.
    pub item_id: ItemId,
    /// Position of the candidate in the request.
    pub request_index: usize,
    /// `Σ_h v_h · p_h`.
    pub utility: f32,
    /// `p_h` per head, in [`RankResponse::heads`] order.
    pub probabilities: Vec<f32>,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankResponse {
    /// Candidates, highest utility first (ties keep request order).
    pub ranked: Vec<Ranked>,
    /// Head names, the order of [`Ranked::probabilities`].
    pub heads: Vec<String>,
    /// How many of the user's actions the model read.
    pub sequence_len: usize,
    /// Sequence actions the model could not use (an action type outside the
    /// model's vocabulary, or an item missing from the table with no fallback);
    /// they were treated as padding.
    pub skipped_actions: usize,
    /// The backend that scored the request.
    pub backend: String,
}

/// Per-request working memory, pooled so steady-state requests do not allocate.
#[derive(Default)]
struct Scratch {
    seq: SequenceBuf,
    action_types: Vec<i64>,
    item_embeddings: Vec<f32>,
    candidates: Vec<f32>,
    logits: Vec<f32>,
}

/// Ranks candidates for a user: store → embeddings → model → utility.
pub struct Ranker<S: SequenceStore + ?Sized> {
    store: Arc<S>,
    items: Arc<ItemTable>,
    model: Arc<RankingModel>,
    backend: Box<dyn Backend>,
    config: RankerConfig,
    /// Utility weight per head, in the model's head order.
    head_weights: Vec<f32>,
    scratch: Mutex<Vec<Scratch>>,
}

impl<S: SequenceStore + ?Sized> Ranker<S> {
    /// A ranker on the CPU backend.
    ///
    /// Fails if the item table's width differs from the model's, or a utility
    /// weight names a head the model does not have.
    pub fn new(
        store: Arc<S>,
        items: Arc<ItemTable>,
        model: Arc<RankingModel>,
        config: RankerConfig,
    ) -> Result<Self, RankError> {
        Self::with_backend(store, items, model, config, Box::new(CpuBackend))
    }

    /// A ranker on the given backend.
    pub fn with_backend(
        store: Arc<S>,
        items: Arc<ItemTable>,
        model: Arc<RankingModel>,
        config: RankerConfig,
        backend: Box<dyn Backend>,
    ) -> Result<Self, RankError> {
        if items.dim() != model.item_emb_dim() {
            return Err(RankError::Config(format!(
                "item table width {} differs from the model's item width {}",
                items.dim(),
                model.item_emb_dim()
            )));
        }
        let heads = model.head_names();
        let mut head_weights = vec![0.0; heads.len()];
        for (name, w) in &config.utility.0 {
            let Some(i) = heads.iter().position(|h| h == name) else {
                return Err(RankError::Config(format!(
                    "utility weight for head `{name}`, the model's heads are {heads:?}"
                )));
            };
            if !w.is_finite() {
                return Err(RankError::Config(format!(
                    "utility weight for `{name}` is not finite"
                )));
            }
            head_weights[i] = *w;
        }
        Ok(Self {
            store,
            items,
            model,
            backend,
            config,
            head_weights,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The model.
    pub fn model(&self) -> &RankingModel {
        &self.model
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &RankerConfig {
        &self.config
    }

    /// Ranks the request's candidates for its user.
    pub fn rank(&self, req: &RankRequest) -> Result<RankResponse, RankError> {
        let mut scratch = self.take_scratch();
        let result = self.rank_with(req, &mut scratch);
        self.return_scratch(scratch);
        result
    }

    fn take_scratch(&self) -> Scratch {
        match self.scratch.lock() {
            Ok(mut pool) => pool.pop().unwrap_or_default(),
            Err(poisoned) => poisoned.into_inner().pop().unwrap_or_default(),
        }
    }

    fn return_scratch(&self, s: Scratch) {
        let mut pool = match self.scratch.lock() {
            Ok(pool) => pool,
            Err(poisoned) => poisoned.into_inner(),
        };
        if pool.len() < 64 {
            pool.push(s);
        }
    }

    fn rank_with(&self, req: &RankRequest, s: &mut Scratch) -> Result<RankResponse, RankError> {
        let n = req.candidates.len();
        if n == 0 {
            return Err(RankError::NoCandidates { user: req.user });
        }
        if n > self.config.max_candidates {
            return Err(RankError::TooManyCandidates {
                user: req.user,
                count: n,
                max: self.config.max_candidates,
            });
        }
        let d = self.model.item_emb_dim();
        self.candidate_embeddings(req, d, &mut s.candidates)?;

        // The user's newest actions at or before the request time.
        let v1 = self.model.v1().config();
        self.store
            .read_newest(req.user, v1.seq_len, Some(req.request_time_ms), &mut s.seq)?;
        let len = s.seq.len();
        s.action_types.clear();
        s.item_embeddings.clear();
        s.item_embeddings.resize(len * d, 0.0);
        let mut skipped = 0;
        for i in 0..len {
            let raw = i64::from(s.seq.action_types[i]);
            let row = &mut s.item_embeddings[i * d..(i + 1) * d];
            let known_type = v1.action_row(raw).is_some();
            if known_type && self.items.get_into(s.seq.item_ids[i], row).is_ok() {
                s.action_types.push(raw);
            } else {
                row.fill(0.0);
                s.action_types.push(-1);
                skipped += 1;
            }
        }

        let v1_req = V1Request {
            action_types: &s.action_types,
            item_embeddings: &s.item_embeddings,
            action_times_ms: &s.seq.timestamps_ms,
            request_time_ms: req.request_time_ms,
            candidates: &s.candidates,
        };
        let h = self.model.head_names().len();
        s.logits.clear();
        s.logits.resize(n * h, 0.0);
        self.backend.score(
            &self.model,
            &v1_req,
            req.user_embedding.as_deref(),
            req.context.as_deref(),
            &mut s.logits,
        )?;

        let mut ranked: Vec<Ranked> = req
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let probabilities: Vec<f32> = s.logits[i * h..(i + 1) * h]
                    .iter()
                    .map(|&z| sigmoid(z))
                    .collect();
                let utility = probabilities
                    .iter()
                    .zip(&self.head_weights)
                    .map(|(p, w)| p * w)
                    .sum();
                Ranked {
                    item_id: c.item_id(),
                    request_index: i,
                    utility,
                    probabilities,
                }
            })
            .collect();
        // Stable: equal utilities keep request order.
        ranked.sort_by(|a, b| b.utility.total_cmp(&a.utility));
        Ok(RankResponse {
            ranked,
            heads: self.model.head_names().to_vec(),
            sequence_len: len,
            skipped_actions: skipped,
            backend: self.backend.name(),
        })
    }

    fn candidate_embeddings(
        &self,
        req: &RankRequest,
        d: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), RankError> {
        out.clear();
        out.resize(req.candidates.len() * d, 0.0);
        for (index, (c, row)) in req
            .candidates
            .iter()
            .zip(out.chunks_exact_mut(d))
            .enumerate()
        {
            match c {
                Candidate::Item(id) => self
                    .items
                    .get_into(*id, row)
                    .map_err(|source| RankError::UnknownCandidate { index, source })?,
                Candidate::Embedding { item_id, embedding } => {
                    if embedding.len() != d {
                        return Err(RankError::CandidateDimension {
                            index,
                            item: *item_id,
                            expected: d,
                            got: embedding.len(),
                        });
                    }
                    if let Some(value_index) = embedding.iter().position(|v| !v.is_finite()) {
                        return Err(RankError::CandidateNonFinite {
                            index,
                            item: *item_id,
                            value_index,
                        });
                    }
                    row.copy_from_slice(embedding);
                }
            }
        }
        Ok(())
    }
}

/// The logistic function.
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

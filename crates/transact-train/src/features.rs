//! From a [`Dataset`] to [`Batch`]es: which actions form the realtime
//! sequence, the masks, the per-head loss weights and the Next Action Loss
//! targets.
//!
//! - **Examples.** One per (logged request, candidate).
//! - **Sequence.** Built by the serving contract,
//!   [`transact_features::FeatureBuilder`] over [`FeatureConfig::sequence`]
//!   (by default: actions strictly before the request whose type is repin,
//!   click or hide — impressions are not engagement — newest first, at most
//!   `seq_len`), exactly as `transact-rank` builds it from a store. Positions
//!   past the user's history are padding (action row 0, the table's zero
//!   padding item row); so is an item without a row under
//!   [`transact_features::UnknownItem::ZeroEmbedding`].
//! - **Masks.** [`transact_model::v1::is_masked`], the model's own rule:
//!   padding is masked; with a time window `T` (one draw per batch,
//!   `T ~ U[0, W]`) every position with `request_time − t < T` is masked
//!   too. Position 0 is never masked (model-spec §2).
//! - **Weights.** `w_u · w_h` with `w_h = Σ_a M[h, a] · y_a`, the columns of
//!   the label-weight matrix `M` being the heads' labels and a last column
//!   for "no engagement" ([`LabelWeights`]).
//! - **Next Action Loss.** The target is the user's first positive action
//!   (repin or click) at or after the request time; impression negatives
//!   are the request's candidates the user did not engage with, then the
//!   user's next impressions; in-batch negatives are left to the network.
//! - **User features.** The contract's user feature
//!   ([`transact_features::UserFeature::MeanOfPositives`]: mean pretrained
//!   embedding of the visible positives), when the dataset has pretrained
//!   embeddings.

use serde::{Deserialize, Serialize};
use transact_features::{FeatureBuilder, SequenceFeatures, UserFeature};
use transact_model::VocabMode;
use transact_model::v1::{ActionRows, is_masked};
use transact_seq::{Action, ActionType};

use crate::batch::{Batch, NO_ITEM};
use crate::data::{Dataset, LoggedRequest, is_positive, user_feature_dim};

mod lifelong;
mod logged;

use lifelong::{V2Features, V2Scratch};
pub use lifelong::{replay_store_config, token_table};
pub use logged::{LoggedTokens, V2TokenSource};

/// The label-weight matrix `M`: `heads × (heads + 1)`, row-major; column
/// `a < heads` is head `a`'s label, the last column is "no engagement".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelWeights {
    /// Heads `H`.
    pub heads: usize,
    /// `H × (H + 1)` values.
    pub m: Vec<f32>,
}

impl LabelWeights {
    /// All ones: every head learns from every example, an example weighing
    /// as many times as it has labels (once when it has none).
    pub fn ones(heads: usize) -> Self {
        Self {
            heads,
            m: vec![1.0; heads * (heads + 1)],
        }
    }

    /// `w_h` for an example with label bits `labels`.
    pub fn weight(&self, head: usize, labels: u8) -> f32 {
        let row = &self.m[head * (self.heads + 1)..(head + 1) * (self.heads + 1)];
        if labels == 0 {
            return row[self.heads];
        }
        (0..self.heads)
            .filter(|&a| labels & (1 << a) != 0)
            .map(|a| row[a])
            .sum()
    }

    /// Checks the shape.
    pub fn validate(&self) -> Result<(), String> {
        if self.heads == 0 || self.heads > 8 {
            return Err(format!("{} heads (1 to 8 supported)", self.heads));
        }
        if self.m.len() != self.heads * (self.heads + 1) {
            return Err(format!(
                "label-weight matrix has {} values, {} heads need {}",
                self.m.len(),
                self.heads,
                self.heads * (self.heads + 1)
            ));
        }
        if let Some(v) = self.m.iter().find(|v| !v.is_finite() || **v < 0.0) {
            return Err(format!(
                "label weights must be finite and non-negative, got {v}"
            ));
        }
        Ok(())
    }
}

/// How examples are built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// The serving contract: which actions form the sequence (its
    /// `seq_len` and `action_vocab` follow the encoder's, see
    /// [`crate::trainer::TrainConfig::feature_config`]) and the user feature. A
    /// serving bundle saves it beside the model.
    pub sequence: transact_features::FeatureConfig,
    /// Maximum random time window `W` in ms (0 = none).
    pub time_window_ms: i64,
    /// Negatives per example for the Next Action Loss.
    pub nal_negatives: usize,
    /// Impression negatives (`true`) or in-batch negatives (`false`).
    pub nal_impressions: bool,
    /// With impression negatives, the in-batch negatives as well.
    #[serde(default)]
    pub nal_in_batch_too: bool,
    /// NAL targets per example: the user's next this many positives after
    /// the request (off the slate), each against the same negatives.
    #[serde(default = "one")]
    pub nal_positives: usize,
    /// Only positives within this many ms after the request are NAL targets
    /// (0 = no limit).
    #[serde(default)]
    pub nal_horizon_ms: i64,
    /// The Next Action Loss at every position of the sequence, on a causal
    /// pass of the encoder: the action at position `q` predicts the user's
    /// next positive after it (position 0: the targets after the request).
    #[serde(default)]
    pub nal_every_position: bool,
    /// Label-weight matrix.
    pub label_weights: LabelWeights,
}

impl FeatureConfig {
    /// Defaults for `heads` heads and sequences of `seq_len`: the contract's
    /// defaults ([`transact_features::FeatureConfig::new`]: vocabulary
    /// repin, click, hide, impression; sequence of repins, clicks and hides
    /// strictly before the request; no user feature); no window; 8
    /// impression negatives; all-ones label weights.
    pub fn new(seq_len: usize, heads: usize) -> Self {
        Self {
            sequence: transact_features::FeatureConfig::new(seq_len),
            time_window_ms: 0,
            nal_negatives: 8,
            nal_impressions: true,
            nal_in_batch_too: false,
            nal_positives: 1,
            nal_horizon_ms: 0,
            nal_every_position: false,
            label_weights: LabelWeights::ones(heads),
        }
    }
}

fn one() -> usize {
    1
}

/// One example: candidate `candidate` of request `request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExampleRef {
    /// Index into the request list.
    pub request: u32,
    /// Index into its slate.
    pub candidate: u16,
}

/// Builds batches from a dataset and a request list.
pub struct Featurizer<'a> {
    data: &'a Dataset,
    requests: &'a [LoggedRequest],
    cfg: FeatureConfig,
    heads: usize,
    /// The serving contract's sequence builder.
    builder: FeatureBuilder,
    /// The encoder's action id → embedding row lookup.
    action_rows: ActionRows,
    /// Item row of padding (the zero row after the items).
    pad_row: u32,
    user_dim: usize,
    /// Per request, the user feature.
    user_cache: Vec<f32>,
    /// TransAct V2's token selection, when the contract has one.
    v2: Option<V2Features>,
    /// V2 tokens from a feature log instead of the selection.
    logged: Option<LoggedSource<'a>>,
}

/// A feature log and the store keys it is matched by.
struct LoggedSource<'a> {
    source: &'a dyn V2TokenSource,
    /// Per request of the featurizer, its user's key.
    user_keys: Vec<u64>,
    /// Per item index, its key.
    item_keys: Vec<u64>,
    /// Per item key, its index (item-table tokens name their rows by it).
    item_index: std::collections::HashMap<u64, u32>,
}

impl LoggedSource<'_> {
    /// Request `r`'s logged candidate `c` (checked against the contract).
    fn get(
        &self,
        data: &Dataset,
        requests: &[LoggedRequest],
        r: usize,
        c: usize,
        dim: usize,
        slots: usize,
    ) -> Result<LoggedTokens<'_>, String> {
        let req = &requests[r];
        let item = req.candidates[c].item as usize;
        let what = || {
            format!(
                "{}: request {r} (user `{}` at {} ms), candidate {c} (item `{}`)",
                self.source.describe(),
                data.users[req.user as usize].raw_id,
                req.time_ms,
                data.items.raw_ids.get(item).map_or("?", |s| s.as_str()),
            )
        };
        let t = self
            .source
            .find(self.user_keys[r], req.time_ms, self.item_keys[item])
            .ok_or_else(|| {
                format!(
                    "{} is not in the feature log (it holds the requests it was served: rank \
                     every training request of this data with the log on)",
                    what()
                )
            })?;
        t.check(dim, slots)
            .map_err(|e| format!("{}: {e}", what()))?;
        Ok(t)
    }
}

/// The pretrained embedding row of item index `item`, if it has one.
fn pretrained_row(data: &Dataset, item: u64) -> Option<&[f32]> {
    let e = data.items.embeddings.as_ref()?;
    let start = usize::try_from(item).ok()?.checked_mul(e.dim)?;
    e.data.get(start..start.checked_add(e.dim)?)
}

impl<'a> Featurizer<'a> {
    /// Prepares `requests` of `data` (user features are computed here, once
    /// per request). Fails on an inconsistent config or dataset.
    pub fn new(
        data: &'a Dataset,
        requests: &'a [LoggedRequest],
        cfg: FeatureConfig,
    ) -> Result<Self, String> {
        Self::build(data, requests, cfg, None)
    }

    /// Like [`Featurizer::new`] for a V2 contract, but every example's
    /// tokens (and the user feature) come from `source`, a feature log of
    /// `requests` as the ranker selected them, instead of replaying the
    /// users' histories; labels, weights and Next Action Loss targets
    /// still come from `requests` and the dataset. Fails unless every
    /// (request, candidate) is in the log with the contract's shapes, naming
    /// the first that is not.
    pub fn with_token_source(
        data: &'a Dataset,
        requests: &'a [LoggedRequest],
        cfg: FeatureConfig,
        source: &'a dyn V2TokenSource,
    ) -> Result<Self, String> {
        Self::build(data, requests, cfg, Some(source))
    }

    fn build(
        data: &'a Dataset,
        requests: &'a [LoggedRequest],
        cfg: FeatureConfig,
        source: Option<&'a dyn V2TokenSource>,
    ) -> Result<Self, String> {
        let heads = data.heads.len();
        cfg.label_weights.validate()?;
        if cfg.label_weights.heads != heads {
            return Err(format!(
                "label weights are for {} heads, the dataset has {heads}",
                cfg.label_weights.heads
            ));
        }
        let builder = FeatureBuilder::new(cfg.sequence.clone()).map_err(|e| e.to_string())?;
        let vocab: Vec<i64> = cfg
            .sequence
            .action_vocab
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        let action_rows = ActionRows::from_vocab(&vocab, VocabMode::Padded);
        let items = data.items.count;
        let pad_row = u32::try_from(items).map_err(|_| "too many items".to_string())?;
        for (i, r) in requests.iter().enumerate() {
            if r.user as usize >= data.users.len() {
                return Err(format!("request {i}: user {} out of range", r.user));
            }
            if r.candidates.len() > usize::from(u16::MAX) {
                return Err(format!("request {i}: slate of {}", r.candidates.len()));
            }
            if let Some(c) = r.candidates.iter().find(|c| c.item as usize >= items) {
                return Err(format!("request {i}: item {} out of range", c.item));
            }
        }
        let user_dim = match cfg.sequence.user_feature {
            UserFeature::None => 0,
            UserFeature::MeanOfPositives => match user_feature_dim(data) {
                0 => {
                    return Err(format!(
                        "the user feature is the mean embedding of positives, but {} has no \
                         pretrained item embeddings",
                        data.name
                    ));
                }
                d => d,
            },
        };
        let v2 = match &cfg.sequence.lifelong {
            Some(l) => Some(V2Features::new(
                data,
                l.token_embeddings == transact_features::TokenEmbeddings::ItemTable,
                pad_row,
            )?),
            None => None,
        };
        let logged = match (source, &v2) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(
                    "a feature log holds TransAct V2 tokens, but the contract has no lifelong \
                     selection"
                        .into(),
                );
            }
            (Some(source), Some(f)) => {
                let (dim, slots) = (f.tokens.dim(), V2Features::slots(&builder));
                if source.dim() != dim || source.slots() != slots {
                    return Err(format!(
                        "{} holds {}-wide codes in {} slots, the contract {dim}-wide in {slots}",
                        source.describe(),
                        source.dim(),
                        source.slots()
                    ));
                }
                let item_keys = transact_features::RawIdKeys::new(&data.items.raw_ids)
                    .map_err(|e| e.to_string())?
                    .as_slice()
                    .to_vec();
                let user_keys = requests
                    .iter()
                    .map(|r| transact_features::raw_id_key(&data.users[r.user as usize].raw_id))
                    .collect();
                let item_index = item_keys.iter().zip(0u32..).map(|(&k, i)| (k, i)).collect();
                Some(LoggedSource {
                    source,
                    user_keys,
                    item_keys,
                    item_index,
                })
            }
        };
        let mut user_cache = vec![0.0; requests.len() * user_dim];
        if let (Some(l), Some(f)) = (&logged, &v2) {
            // Every example must be in the log; the user feature is the
            // logged one (the first candidate's: the request's).
            let (dim, slots) = (f.tokens.dim(), V2Features::slots(&builder));
            for (r, req) in requests.iter().enumerate() {
                for c in 0..req.candidates.len() {
                    let t = l.get(data, requests, r, c, dim, slots)?;
                    if c > 0 || user_dim == 0 {
                        continue;
                    }
                    match t.user_feature {
                        Some(u) if u.len() == user_dim => {
                            user_cache[r * user_dim..(r + 1) * user_dim].copy_from_slice(u);
                        }
                        other => {
                            return Err(format!(
                                "{}: request {r} has a user feature of {} values, the contract \
                                 reads {user_dim}",
                                l.source.describe(),
                                other.map_or(0, <[f32]>::len)
                            ));
                        }
                    }
                }
            }
        } else if user_dim > 0 {
            for (r, out) in requests.iter().zip(user_cache.chunks_exact_mut(user_dim)) {
                let history = &data.users[r.user as usize].actions;
                builder.user_feature(
                    history.iter().copied(),
                    r.time_ms,
                    |i| pretrained_row(data, i),
                    out,
                );
            }
        }
        Ok(Self {
            data,
            requests,
            cfg,
            heads,
            builder,
            action_rows,
            pad_row,
            user_dim,
            user_cache,
            v2,
            logged,
        })
    }

    /// The serving contract's sequence builder.
    pub fn builder(&self) -> &FeatureBuilder {
        &self.builder
    }

    /// Width of the dense user feature (0 = none).
    pub fn user_dim(&self) -> usize {
        self.user_dim
    }

    /// Rows the item table needs: the items plus the padding row.
    pub fn item_rows(&self) -> usize {
        self.pad_row as usize + 1
    }

    /// The padding row of the item table (kept at zero).
    pub fn pad_row(&self) -> u32 {
        self.pad_row
    }

    /// The config.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Every (request, candidate) pair, in order.
    pub fn examples(&self) -> Vec<ExampleRef> {
        self.requests
            .iter()
            .enumerate()
            .flat_map(|(r, req)| {
                (0..req.candidates.len()).map(move |c| ExampleRef {
                    request: r as u32,
                    candidate: c as u16,
                })
            })
            .collect()
    }

    /// The int8 token table of a V2 contract (keyed by item index).
    pub fn token_table(&self) -> Option<&transact_embed::ItemTable> {
        self.v2.as_ref().map(|v| &v.tokens)
    }

    /// Fills `batch` with `examples`, masking with time window `window_ms`
    /// (draw it per batch; 0 = inference masks only). With a V2 contract it
    /// fails if selection does (an item's codes of the wrong width).
    pub fn fill(
        &self,
        examples: &[ExampleRef],
        window_ms: i64,
        batch: &mut Batch,
    ) -> Result<(), String> {
        let mut v2 = V2Scratch::default();
        if let Some(f) = &self.v2 {
            f.reset(&self.builder, examples.len(), batch);
        } else {
            batch.v2_seq = 0;
        }
        let s = self.cfg.sequence.seq_len;
        let mut seq = SequenceFeatures::default();
        let h = self.heads;
        let n = examples.len();
        let nn = if self.cfg.nal_impressions {
            self.cfg.nal_negatives
        } else {
            0
        };
        let np = self.cfg.nal_positives.max(1);
        batch.len = n;
        batch.seq_len = s;
        batch.nal_negatives = nn;
        batch.nal_positives = np;
        for v in [&mut batch.seq_items, &mut batch.seq_actions] {
            v.clear();
            v.resize(n * s, 0);
        }
        batch.seq_masked.clear();
        batch.seq_masked.resize(n * s, true);
        batch.cand_items.clear();
        batch.user_features.clear();
        batch.labels.clear();
        batch.weights.clear();
        batch.nal_pos.clear();
        batch.nal_neg.clear();
        batch.nal_seq.clear();
        batch.nal_seq_neg.clear();
        let every = self.cfg.nal_every_position;
        // Per-position targets: per V1 position, or per V2 slot.
        let sp = if self.v2.is_some() { batch.v2_seq } else { s };
        if every {
            batch.nal_seq.resize(n * sp, NO_ITEM);
            batch.nal_seq_neg.resize(n * sp * nn, NO_ITEM);
        }
        let mut rt_slots: Vec<(usize, i64, u64)> = Vec::new();
        for (b, e) in examples.iter().enumerate() {
            let req = &self.requests[e.request as usize];
            let cand = req.candidates[usize::from(e.candidate)];
            let user = &self.data.users[req.user as usize];
            let history = self.builder.visible_prefix(&user.actions, req.time_ms);
            self.fill_sequence(
                history,
                req.time_ms,
                window_ms,
                &mut seq,
                &mut batch.seq_items[b * s..(b + 1) * s],
                &mut batch.seq_actions[b * s..(b + 1) * s],
                &mut batch.seq_masked[b * s..(b + 1) * s],
            );
            batch.cand_items.push(cand.item);
            if let (Some(l), Some(f)) = (&self.logged, &self.v2) {
                let t = l.get(
                    self.data,
                    self.requests,
                    e.request as usize,
                    usize::from(e.candidate),
                    f.tokens.dim(),
                    batch.v2_seq,
                )?;
                f.fill_logged(&t, |key| l.item_index.get(&key).copied(), b, batch);
                if every {
                    rt_slots.clear();
                    rt_slots.extend(t.realtime_slots().filter_map(|(slot, ms, key)| {
                        Some((slot, ms, u64::from(*l.item_index.get(&key)?)))
                    }));
                }
            } else if let Some(f) = &self.v2 {
                f.fill(
                    &self.builder,
                    history,
                    req.time_ms,
                    &[cand.item],
                    b,
                    batch,
                    &mut v2,
                )?;
                if every {
                    rt_slots.clear();
                    rt_slots.extend(V2Features::realtime_slots(&v2));
                }
            }
            let r = e.request as usize;
            batch
                .user_features
                .extend_from_slice(&self.user_cache[r * self.user_dim..(r + 1) * self.user_dim]);
            for head in 0..h {
                batch.labels.push(f32::from(cand.labels >> head & 1));
                batch
                    .weights
                    .push(user.weight * self.cfg.label_weights.weight(head, cand.labels));
            }
            // Next Action Loss: the user's first `np` positives at or after
            // the request (within the horizon) on items outside the slate
            // (the slate's own labels are the main task's).
            let later = &user.actions[history.len()..];
            let on_slate = |item: u64| req.candidates.iter().any(|c| u64::from(c.item) == item);
            let horizon = self.cfg.nal_horizon_ms;
            let start = batch.nal_pos.len();
            batch.nal_pos.extend(
                later
                    .iter()
                    .take_while(|a| horizon <= 0 || a.timestamp_ms - req.time_ms <= horizon)
                    .filter(|a| is_positive(a) && !on_slate(a.item_id))
                    .map(|a| a.item_id as u32)
                    .take(np),
            );
            batch.nal_pos.resize(start + np, NO_ITEM);
            if nn > 0 {
                let start = batch.nal_neg.len();
                let shown = req
                    .candidates
                    .iter()
                    .filter(|c| c.labels == 0)
                    .map(|c| c.item);
                let impressions = later
                    .iter()
                    .filter(|a| a.action_type == ActionType::IMPRESSION)
                    .map(|a| a.item_id as u32);
                batch.nal_neg.extend(shown.chain(impressions).take(nn));
                batch.nal_neg.resize(start + nn, NO_ITEM);
            }
            if every {
                let targets = &mut batch.nal_seq[b * sp..(b + 1) * sp];
                let negs = &mut batch.nal_seq_neg[b * sp * nn..(b + 1) * sp * nn];
                if self.v2.is_some() {
                    self.fill_slot_targets(history, &rt_slots, targets, negs);
                } else {
                    self.fill_position_targets(history, &seq, targets, negs);
                }
            }
        }
        Ok(())
    }

    /// Per position `q ≥ 1` of the sequence `seq` built from `history`:
    /// the next positive after that action within the horizon, before the
    /// request (`targets`), and the first impressions after it other than
    /// the target (`negs`, `negatives` per position).
    fn fill_position_targets(
        &self,
        history: &[Action],
        seq: &SequenceFeatures,
        targets: &mut [u32],
        negs: &mut [u32],
    ) {
        let s = targets.len();
        let nn = negs.len().checked_div(s).unwrap_or(0);
        for (q, (&src, &action)) in seq
            .sources
            .iter()
            .zip(&seq.action_types)
            .enumerate()
            .take(s)
            .skip(1)
        {
            // `src` counts from the newest action of `history`.
            let Some(j) = history.len().checked_sub(src + 1) else {
                continue;
            };
            if action < 0 {
                continue;
            }
            self.next_action(history, j, &mut targets[q], &mut negs[q * nn..(q + 1) * nn]);
        }
    }

    /// Per V2 slot of `slots` — `(slot, time ms, item index)` of each
    /// realtime token before the row's newest — the same target and
    /// negatives as [`Self::fill_position_targets`] gives the token's
    /// action in `history` (the newest action there of that item at that
    /// time; a token not found there gets none).
    fn fill_slot_targets(
        &self,
        history: &[Action],
        slots: &[(usize, i64, u64)],
        targets: &mut [u32],
        negs: &mut [u32],
    ) {
        let nn = negs.len().checked_div(targets.len()).unwrap_or(0);
        for &(slot, ms, item) in slots {
            if slot >= targets.len() {
                continue;
            }
            let end = history.partition_point(|a| a.timestamp_ms <= ms);
            let found = (0..end)
                .rev()
                .take_while(|&j| history[j].timestamp_ms == ms)
                .find(|&j| {
                    history[j].item_id == item && history[j].action_type != ActionType::IMPRESSION
                });
            if let Some(j) = found {
                let out = &mut negs[slot * nn..(slot + 1) * nn];
                self.next_action(history, j, &mut targets[slot], out);
            }
        }
    }

    /// The Next Action Loss target of `history[j]`: the next positive after
    /// it within the horizon, before the request (`target`, left as is
    /// without one or when its item has no row), and the first impressions
    /// after it other than the target (`negs`).
    fn next_action(&self, history: &[Action], j: usize, target: &mut u32, negs: &mut [u32]) {
        let horizon = self.cfg.nal_horizon_ms;
        let a = &history[j];
        let later = &history[j + 1..];
        let within = |x: &&Action| horizon <= 0 || x.timestamp_ms - a.timestamp_ms <= horizon;
        let Some(t) = later.iter().take_while(within).find(|x| is_positive(x)) else {
            return;
        };
        let row = self.row_of(t.item_id);
        if row == self.pad_row {
            return;
        }
        *target = row;
        let shown = later
            .iter()
            .filter(|x| x.action_type == ActionType::IMPRESSION && x.item_id != t.item_id)
            .map(|x| self.row_of(x.item_id))
            .filter(|&r| r != self.pad_row)
            .take(negs.len());
        for (o, r) in negs.iter_mut().zip(shown) {
            *o = r;
        }
    }

    /// The item-table row of `item` (the padding row when out of range).
    fn row_of(&self, item: u64) -> u32 {
        u32::try_from(item)
            .ok()
            .filter(|&i| i < self.pad_row)
            .unwrap_or(self.pad_row)
    }

    /// Fills `batch` for scoring `candidates` (item indices) for `query`:
    /// the sequence from `query.history` by the contract (which applies its
    /// own time rule to it), inference masks only, the user feature at the
    /// query time; labels, weights and NAL targets empty.
    pub fn fill_query(
        &self,
        data: &Dataset,
        query: &crate::eval::Query<'_>,
        candidates: &[u32],
        batch: &mut Batch,
    ) -> Result<(), String> {
        if let Some(c) = candidates.iter().find(|&&c| c >= self.pad_row) {
            return Err(format!("candidate item {c} out of range"));
        }
        let s = self.cfg.sequence.seq_len;
        let n = candidates.len();
        batch.len = n;
        batch.seq_len = s;
        batch.nal_negatives = 0;
        batch.nal_positives = 1;
        batch.seq_items.resize(n * s, 0);
        batch.seq_actions.resize(n * s, 0);
        batch.seq_masked.resize(n * s, true);
        if n > 0 {
            let mut seq = SequenceFeatures::default();
            let (items, actions, masked) = (
                &mut batch.seq_items[..s],
                &mut batch.seq_actions[..s],
                &mut batch.seq_masked[..s],
            );
            self.fill_sequence(
                query.history,
                query.time_ms,
                0,
                &mut seq,
                items,
                actions,
                masked,
            );
            for b in 1..n {
                batch.seq_items.copy_within(0..s, b * s);
                batch.seq_actions.copy_within(0..s, b * s);
                batch.seq_masked.copy_within(0..s, b * s);
            }
        }
        batch.cand_items.clear();
        batch.cand_items.extend_from_slice(candidates);
        batch.user_features.clear();
        if self.user_dim > 0 {
            let mut u = vec![0.0; self.user_dim];
            self.builder.user_feature(
                query.history.iter().copied(),
                query.time_ms,
                |i| pretrained_row(data, i),
                &mut u,
            );
            for _ in 0..n {
                batch.user_features.extend_from_slice(&u);
            }
        }
        batch.labels.clear();
        batch.labels.resize(n * self.heads, 0.0);
        batch.weights.clear();
        batch.weights.resize(n * self.heads, 0.0);
        batch.nal_pos.clear();
        batch.nal_pos.resize(n, NO_ITEM);
        batch.nal_neg.clear();
        batch.nal_seq.clear();
        batch.nal_seq_neg.clear();
        match &self.v2 {
            Some(f) => {
                f.reset(&self.builder, n, batch);
                f.fill(
                    &self.builder,
                    query.history,
                    query.time_ms,
                    candidates,
                    0,
                    batch,
                    &mut V2Scratch::default(),
                )?;
            }
            None => batch.v2_seq = 0,
        }
        Ok(())
    }

    /// One example's sequence slots, newest first, from `history` (oldest
    /// first) by the contract, masked by the model's rule with time window
    /// `window_ms`; `seq` is scratch.
    #[allow(clippy::too_many_arguments)]
    fn fill_sequence(
        &self,
        history: &[Action],
        request_ms: i64,
        window_ms: i64,
        seq: &mut SequenceFeatures,
        items: &mut [u32],
        actions: &mut [u32],
        masked: &mut [bool],
    ) {
        let count = self.pad_row as u64;
        self.builder.build(
            history.iter().rev().copied(),
            request_ms,
            |i| i < count,
            seq,
        );
        items.fill(self.pad_row);
        actions.fill(0);
        masked.fill(true);
        let positions = seq
            .action_types
            .iter()
            .zip(&seq.item_ids)
            .zip(&seq.item_known)
            .zip(&seq.times_ms);
        for (p, (((&action, &item), &known), &t)) in positions.enumerate() {
            let (Some(slot_item), Some(slot_action), Some(slot_masked)) =
                (items.get_mut(p), actions.get_mut(p), masked.get_mut(p))
            else {
                break;
            };
            // Ids outside the vocabulary never reach here (the contract
            // leaves them out or pads them as -1).
            let row = self.action_rows.row(action, p).unwrap_or(0);
            *slot_item = if known {
                self.row_of(item)
            } else {
                self.pad_row
            };
            *slot_action = row as u32;
            *slot_masked = is_masked(p, row, request_ms, t, window_ms);
        }
        if let Some(m) = masked.first_mut() {
            *m = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ItemCatalog, LoggedCandidate, UserHistory, default_heads};
    use transact_seq::Surface;

    fn act(item: u64, t: ActionType, ms: i64) -> Action {
        Action {
            item_id: item,
            action_type: t,
            timestamp_ms: ms,
            surface: Surface(0),
        }
    }

    fn data() -> Dataset {
        let actions = vec![
            act(1, ActionType::REPIN, 100),
            act(2, ActionType::IMPRESSION, 150),
            act(3, ActionType::CLICK, 200),
            act(4, ActionType::HIDE, 300),
            act(5, ActionType::IMPRESSION, 1_100),
            act(6, ActionType::CLICK, 1_200),
            act(7, ActionType::REPIN, 1_300),
            act(3, ActionType::REPIN, 1_400),
            act(2, ActionType::REPIN, 9_000),
        ];
        Dataset {
            name: "t".into(),
            heads: default_heads(),
            items: ItemCatalog {
                count: 10,
                raw_ids: (0..10).map(|i| i.to_string()).collect(),
                embeddings: None,
            },
            users: vec![UserHistory {
                raw_id: "u".into(),
                actions,
                weight: 2.0,
            }],
            requests: vec![LoggedRequest {
                user: 0,
                time_ms: 1_000,
                candidates: vec![
                    LoggedCandidate {
                        item: 7,
                        labels: 0b001,
                    },
                    LoggedCandidate { item: 8, labels: 0 },
                    LoggedCandidate {
                        item: 9,
                        labels: 0b110,
                    },
                ],
            }],
        }
    }

    #[test]
    fn sequences_labels_weights_and_nal_targets() {
        let d = data();
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.nal_negatives = 3;
        let f = Featurizer::new(&d, &d.requests, cfg).expect("featurizer");
        assert_eq!(f.item_rows(), 11);
        let ex = f.examples();
        assert_eq!(ex.len(), 3);
        let mut b = Batch::default();
        f.fill(&ex, 0, &mut b).expect("fill");
        // Newest first: hide 4, click 3, repin 1 (the impression is left
        // out), then padding.
        assert_eq!(&b.seq_items[..4], &[4, 3, 1, 10]);
        assert_eq!(&b.seq_actions[..4], &[3, 2, 1, 0]);
        assert_eq!(&b.seq_masked[..4], &[false, false, false, true]);
        assert_eq!(b.cand_items, vec![7, 8, 9]);
        assert_eq!(&b.labels[..], &[1., 0., 0., 0., 0., 0., 0., 1., 1.]);
        // w_u = 2; all-ones M: one label → 1, none → 1, two labels → 2.
        assert_eq!(&b.weights[..3], &[2., 2., 2.]);
        assert_eq!(&b.weights[6..], &[4., 4., 4.]);
        // Next positive after t = 1000 is the click on 6; negatives: the
        // unengaged candidate 8, then the impression of 5, then padding.
        assert_eq!(b.nal_pos, vec![6, 6, 6]);
        assert_eq!(b.nal_negatives, 3);
        assert_eq!(&b.nal_neg[..3], &[8, 5, NO_ITEM]);
        assert!(b.user_features.is_empty());
    }

    #[test]
    fn several_nal_targets_skip_the_slate_and_stop_at_the_horizon() {
        let d = data();
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.nal_positives = 4;
        let f = Featurizer::new(&d, &d.requests, cfg.clone()).expect("featurizer");
        let mut b = Batch::default();
        f.fill(&f.examples()[..2], 0, &mut b).expect("fill");
        // After t = 1000: click 6, repin 7 (a slate item: skipped), repin 3,
        // repin 2; the impression of 5 is not a positive.
        assert_eq!(b.nal_positives, 4);
        assert_eq!(b.nal_pos, vec![6, 3, 2, NO_ITEM, 6, 3, 2, NO_ITEM]);
        // A 1-second horizon keeps the actions up to t = 2000.
        cfg.nal_horizon_ms = 1_000;
        let f = Featurizer::new(&d, &d.requests, cfg).expect("featurizer");
        f.fill(&f.examples()[..1], 0, &mut b).expect("fill");
        assert_eq!(b.nal_pos, vec![6, 3, NO_ITEM, NO_ITEM]);
    }

    #[test]
    fn per_position_nal_targets_are_the_next_positive_before_the_request() {
        let d = data();
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.nal_negatives = 3;
        cfg.nal_every_position = true;
        let f = Featurizer::new(&d, &d.requests, cfg.clone()).expect("featurizer");
        let mut b = Batch::default();
        f.fill(&f.examples()[..1], 0, &mut b).expect("fill");
        // Positions: hide 4 (t 300), click 3 (t 200), repin 1 (t 100). After
        // the click only the hide comes before the request; after the repin
        // the click on 3, with the impression of 2 as a negative.
        assert_eq!(b.nal_seq, vec![NO_ITEM, NO_ITEM, 3, NO_ITEM]);
        assert_eq!(&b.nal_seq_neg[6..9], &[2, NO_ITEM, NO_ITEM]);
        assert!(b.nal_seq_neg[..6].iter().all(|&r| r == NO_ITEM));
        // The click came 100 ms after the repin: outside a 50 ms horizon.
        cfg.nal_horizon_ms = 50;
        let f = Featurizer::new(&d, &d.requests, cfg).expect("featurizer");
        f.fill(&f.examples()[..1], 0, &mut b).expect("fill");
        assert_eq!(b.nal_seq, vec![NO_ITEM; 4]);
    }

    #[test]
    fn v2_slot_nal_targets_are_the_next_positive_after_each_realtime_token() {
        let mut d = data();
        d.items.embeddings = Some(crate::data::ItemEmbeddings {
            dim: 2,
            data: (0..20).map(|i| ((i * 7) % 5) as f32 * 0.25 - 0.5).collect(),
        });
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.nal_negatives = 3;
        cfg.nal_every_position = true;
        cfg.sequence.lifelong = Some(transact_features::LifelongConfig::default());
        let f = Featurizer::new(&d, &d.requests, cfg).expect("featurizer");
        let mut b = Batch::default();
        f.fill(&f.examples()[..1], 0, &mut b).expect("fill");
        let s = b.v2_seq;
        assert!(s > 4);
        // Slots, oldest first: repin 1 (t 100), impression 2 (t 150), click
        // 3 (t 200), hide 4 (t 300, the newest: its target is `nal_pos`).
        assert_eq!(b.v2_lens, vec![4]);
        assert_eq!(b.nal_seq.len(), s);
        assert_eq!(b.nal_seq_neg.len(), s * 3);
        // The repin predicts the click on 3 with the impression of 2 as a
        // negative; the impression token predicts nothing; after the click
        // only the hide (not a positive) comes before the request.
        assert_eq!(&b.nal_seq[..4], &[3, NO_ITEM, NO_ITEM, NO_ITEM]);
        assert!(b.nal_seq[4..].iter().all(|&t| t == NO_ITEM));
        assert_eq!(&b.nal_seq_neg[..3], &[2, NO_ITEM, NO_ITEM]);
        assert!(b.nal_seq_neg[3..].iter().all(|&t| t == NO_ITEM));
        assert_eq!(b.nal_pos, vec![6]);
    }

    #[test]
    fn the_time_window_masks_recent_positions_but_never_position_0() {
        let d = data();
        let f = Featurizer::new(&d, &d.requests, FeatureConfig::new(4, 3)).expect("f");
        let mut b = Batch::default();
        // Ages: 700 (hide), 800 (click), 900 (repin).
        f.fill(&f.examples()[..1], 850, &mut b).expect("fill");
        assert_eq!(&b.seq_masked[..4], &[false, true, false, true]);
        f.fill(&f.examples()[..1], 10_000, &mut b).expect("fill");
        assert_eq!(&b.seq_masked[..4], &[false, true, true, true]);
    }

    #[test]
    fn bad_configs_are_errors() {
        let d = data();
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.label_weights = LabelWeights::ones(2);
        assert!(Featurizer::new(&d, &d.requests, cfg).is_err());
        let mut cfg = FeatureConfig::new(4, 3);
        cfg.label_weights.m[0] = f32::NAN;
        assert!(Featurizer::new(&d, &d.requests, cfg).is_err());
        let mut bad = d.requests.clone();
        bad[0].candidates[0].item = 99;
        assert!(Featurizer::new(&d, &bad, FeatureConfig::new(4, 3)).is_err());
    }

    #[test]
    fn label_weights_follow_the_matrix() {
        // Hides weigh 5 on the repin head.
        let mut m = LabelWeights::ones(3);
        m.m[2] = 5.0;
        assert_eq!(m.weight(0, 0b100), 5.0);
        assert_eq!(m.weight(0, 0b101), 6.0);
        assert_eq!(m.weight(1, 0b100), 1.0);
        assert_eq!(m.weight(2, 0), 1.0);
    }
}

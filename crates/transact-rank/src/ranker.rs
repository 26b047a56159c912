//! The `Ranker`: one call ranks the candidates of one request.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use transact_features::{
    FeatureBuilder, SelectScratch, SelectedTokens, SequenceFeatures, TokenEmbeddings, UserFeature,
};
use transact_model::{RankingModel, V1Job, V1Request, V2Job, V2Request};
use transact_seq::{ItemId, SequenceBuf, SequenceLimits, SequenceStore, UserId, UserSequences};

use crate::log::LogHook;
use crate::{
    Backend, Bundle, CpuBackend, FeatureLogEntry, FeatureLogStats, FeatureLogger, OnLogError,
    RankError, ScoreJob,
};

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

/// How a [`Ranker`] behaves (the model, its features and its utility
/// weights come from the [`Bundle`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankerConfig {
    /// Largest number of candidates one request may carry.
    pub max_candidates: usize,
}

impl Default for RankerConfig {
    fn default() -> Self {
        Self {
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
    /// Request time in ms; which actions it sees is the bundle's
    /// [`transact_features::TimeRule`] (by default those strictly before it).
    pub request_time_ms: i64,
    /// The candidates.
    pub candidates: Vec<Candidate>,
    /// The user embedding feature, when the model reads one and the
    /// bundle's features do not derive it from the history.
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
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The item.
    pub item_id: ItemId,
    /// Position of the candidate in the request.
    pub request_index: usize,
    /// `Σ_h v_h · p_h`.
    pub utility: f32,
}

/// The answer to one request. Reusable: [`Ranker::rank_into`] refills it
/// without allocating once it has grown to the request's size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankResponse {
    /// Candidates, highest utility first (ties keep request order).
    pub ranked: Vec<Ranked>,
    /// `p_h` of candidate `i` (request order) at `i·H .. (i + 1)·H`, in
    /// [`RankResponse::heads`] order; see [`RankResponse::probabilities`].
    pub probabilities: Vec<f32>,
    /// Head names.
    pub heads: Arc<[String]>,
    /// Sequence positions the model read.
    pub sequence_len: usize,
    /// Visible actions whose type is outside the model's vocabulary.
    pub unknown_actions: usize,
    /// Sequence actions on items missing from the item table.
    pub unknown_items: usize,
    /// The backend that scored the request.
    pub backend: Arc<str>,
    /// The version of the bundle that scored the request.
    pub bundle_version: Arc<str>,
    /// Why the ranker's feature logger failed on this request (ranked all
    /// the same, under [`OnLogError::Continue`]); `None` when it logged it
    /// or there is no logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_log_error: Option<Arc<str>>,
}

impl RankResponse {
    /// `p_h` per head of a ranked candidate.
    pub fn probabilities(&self, r: &Ranked) -> &[f32] {
        let h = self.heads.len();
        self.probabilities
            .get(r.request_index * h..(r.request_index + 1) * h)
            .unwrap_or(&[])
    }
}

/// Per-request working memory, pooled so steady-state requests do not allocate.
#[derive(Default)]
struct Scratch {
    history: SequenceBuf,
    seq: SequenceFeatures,
    item_embeddings: Vec<f32>,
    candidates: Vec<f32>,
    user: Vec<f32>,
    logits: Vec<f32>,
    v2: V2Scratch,
}

/// The V2 part of [`Scratch`].
#[derive(Default)]
struct V2Scratch {
    seqs: UserSequences,
    select: SelectScratch,
    tokens: SelectedTokens,
    codes: Vec<i8>,
    scales: Vec<f32>,
    token_candidates: Vec<f32>,
    pool: Vec<f32>,
    masks: Vec<u32>,
    surfaces: Vec<u16>,
}

/// What preparing a request found, for its response.
struct Prepared {
    /// Sequence positions the model reads (V2: the longest candidate row).
    len: usize,
    unknown_actions: usize,
    unknown_items: usize,
    user: UserSource,
}

/// Where a request's user feature comes from.
#[derive(Clone, Copy, Debug)]
enum UserSource {
    /// The model reads none.
    Absent,
    /// The request's own `user_embedding`.
    Given,
    /// Derived from the history into the scratch's `user`.
    Derived,
}

impl UserSource {
    fn slice<'a>(self, req: &'a RankRequest, derived: &'a [f32]) -> Option<&'a [f32]> {
        match self {
            UserSource::Absent => None,
            UserSource::Given => req.user_embedding.as_deref(),
            UserSource::Derived => Some(derived),
        }
    }
}

/// Ranks candidates for a user: store → features → embeddings → model →
/// utility, by the contract of a [`Bundle`].
pub struct Ranker<S: SequenceStore + ?Sized> {
    store: Arc<S>,
    bundle: Arc<Bundle>,
    features: FeatureBuilder,
    backend: Box<dyn Backend>,
    backend_name: Arc<str>,
    version: Arc<str>,
    heads: Arc<[String]>,
    config: RankerConfig,
    /// Utility weight per head, in the model's head order.
    head_weights: Vec<f32>,
    scratch: Mutex<Vec<Scratch>>,
    logger: Option<LogHook>,
}

impl<S: SequenceStore + ?Sized> Ranker<S> {
    /// A ranker on the CPU backend.
    pub fn new(
        store: Arc<S>,
        bundle: Arc<Bundle>,
        config: RankerConfig,
    ) -> Result<Self, RankError> {
        Self::with_backend(store, bundle, config, Box::new(CpuBackend))
    }

    /// A ranker on the given backend (built for `bundle.model`).
    pub fn with_backend(
        store: Arc<S>,
        bundle: Arc<Bundle>,
        config: RankerConfig,
        backend: Box<dyn Backend>,
    ) -> Result<Self, RankError> {
        bundle.validate()?;
        let features = FeatureBuilder::new(bundle.features.clone())
            .map_err(|e| RankError::Config(e.to_string()))?;
        let heads: Arc<[String]> = bundle.model.head_names().into();
        let mut head_weights = vec![0.0; heads.len()];
        for (name, w) in &bundle.manifest.utility.0 {
            if let Some(i) = heads.iter().position(|h| h == name) {
                head_weights[i] = *w;
            }
        }
        Ok(Self {
            store,
            features,
            backend_name: backend.name().into(),
            version: bundle.version().into(),
            bundle,
            backend,
            heads,
            config,
            head_weights,
            scratch: Mutex::new(Vec::new()),
            logger: None,
        })
    }

    /// Logs every V2 request this ranker ranks to `logger` (after it is
    /// scored; V1 bundles log nothing), handling its failures by
    /// `on_error` (see [`crate::log`]).
    pub fn with_logger(mut self, logger: Arc<dyn FeatureLogger>, on_error: OnLogError) -> Self {
        self.logger = Some(LogHook::new(logger, on_error));
        self
    }

    /// What the feature logger has done so far (`None` without one).
    pub fn feature_log_stats(&self) -> Option<FeatureLogStats> {
        self.logger.as_ref().map(LogHook::stats)
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// The bundle.
    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    /// The model.
    pub fn model(&self) -> &RankingModel {
        &self.bundle.model
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
        let mut resp = RankResponse::default();
        self.rank_into(req, &mut resp)?;
        Ok(resp)
    }

    /// [`Ranker::rank`] into a reused response.
    pub fn rank_into(&self, req: &RankRequest, resp: &mut RankResponse) -> Result<(), RankError> {
        let mut s = self.take_scratch();
        let result = self.rank_one(req, &mut s, resp);
        self.return_scratch(s);
        result
    }

    /// One request: the same steps as [`Ranker::rank_many`] without its
    /// per-batch vectors (a steady-state request allocates nothing here).
    fn rank_one(
        &self,
        req: &RankRequest,
        s: &mut Scratch,
        resp: &mut RankResponse,
    ) -> Result<(), RankError> {
        let prepared = self.prepare(req, s)?;
        let mut logits = std::mem::take(&mut s.logits);
        logits.clear();
        logits.resize(req.candidates.len() * self.heads.len(), 0.0);
        let scored = self.job(req, s, &prepared).score_alone(
            self.backend.as_ref(),
            &self.bundle.model,
            &mut logits,
        );
        let result = scored
            .map_err(RankError::from)
            .and_then(|()| self.finish(req, s, &prepared, &logits, resp));
        s.logits = logits;
        result
    }

    /// Ranks several requests (of different users, usually) with one call
    /// of the backend ([`Backend::score_batch`]): each request's sequence
    /// is read and built as [`Ranker::rank`] builds it, then every
    /// request's candidates are scored together. Answers come in request
    /// order; a bad request fails alone.
    pub fn rank_many(&self, reqs: &[RankRequest]) -> Vec<Result<RankResponse, RankError>> {
        let refs: Vec<&RankRequest> = reqs.iter().collect();
        let mut scratch: Vec<Scratch> = reqs.iter().map(|_| self.take_scratch()).collect();
        let mut resps: Vec<RankResponse> = vec![RankResponse::default(); reqs.len()];
        let results = self.rank_batch(&refs, &mut scratch, &mut resps);
        for s in scratch {
            self.return_scratch(s);
        }
        results
            .into_iter()
            .zip(resps)
            .map(|(r, resp)| r.map(|()| resp))
            .collect()
    }

    /// Prepares every request, scores the prepared ones in one backend
    /// call, and finishes their responses.
    fn rank_batch(
        &self,
        reqs: &[&RankRequest],
        scratch: &mut [Scratch],
        resps: &mut [RankResponse],
    ) -> Vec<Result<(), RankError>> {
        let results: Vec<Result<Prepared, RankError>> = reqs
            .iter()
            .zip(scratch.iter_mut())
            .map(|(req, s)| self.prepare(req, s))
            .collect();
        let h = self.heads.len();
        // The batch's logits live in the first scratch's buffer (taken out
        // while the jobs borrow the scratch).
        let mut logits = scratch
            .first_mut()
            .map(|s| std::mem::take(&mut s.logits))
            .unwrap_or_default();
        let mut scored: Vec<Option<Result<(), transact_model::ModelError>>> =
            reqs.iter().map(|_| None).collect();
        {
            let mut jobs = Vec::with_capacity(reqs.len());
            let mut index = Vec::with_capacity(reqs.len());
            let mut total = 0;
            for (i, prepared) in results.iter().enumerate() {
                if let Ok(p) = prepared {
                    jobs.push(self.job(reqs[i], &scratch[i], p));
                    index.push(i);
                    total += reqs[i].candidates.len();
                }
            }
            logits.clear();
            logits.resize(total * h, 0.0);
            if !jobs.is_empty() {
                let outcome = self
                    .backend
                    .score_batch(&self.bundle.model, &jobs, &mut logits);
                for (i, r) in index.into_iter().zip(outcome) {
                    scored[i] = Some(r);
                }
            }
        }
        let mut at = 0;
        let mut out: Vec<Result<(), RankError>> = Vec::with_capacity(reqs.len());
        for (i, prepared) in results.into_iter().enumerate() {
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let n = reqs[i].candidates.len() * h;
            let part = logits.get(at..at + n).unwrap_or(&[]);
            at += n;
            let outcome = scored[i].take().unwrap_or_else(|| {
                Err(transact_model::ModelError::BadInput {
                    name: "backend".into(),
                    detail: "the backend returned no result for this request".into(),
                })
            });
            out.push(
                outcome.map_err(RankError::from).and_then(|()| {
                    self.finish(reqs[i], &scratch[i], &prepared, part, &mut resps[i])
                }),
            );
        }
        if let Some(s) = scratch.first_mut() {
            s.logits = logits;
        }
        out
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

    /// Reads the history the features need and builds the sequence: the
    /// newest `seq_len` visible actions first, more while actions the
    /// sequence leaves out (impressions, unknown types or items) keep it
    /// short; the whole visible history when the features derive the user
    /// feature from it.
    fn read_sequence(&self, req: &RankRequest, s: &mut Scratch) -> Result<(), RankError> {
        let cfg = self.features.config();
        let bound = Some(cfg.newest_visible_ms(req.request_time_ms));
        let items = &self.bundle.items;
        let mut n = if cfg.user_feature == UserFeature::None {
            cfg.seq_len
        } else {
            usize::MAX
        };
        loop {
            let got = self.store.read_newest(req.user, n, bound, &mut s.history)?;
            self.features.build(
                s.history.iter(),
                req.request_time_ms,
                |id| items.contains(id),
                &mut s.seq,
            );
            if s.seq.full || got < n {
                return Ok(());
            }
            n = n.saturating_mul(4);
        }
    }

    /// Checks a request and builds everything the model reads into `s`.
    fn prepare(&self, req: &RankRequest, s: &mut Scratch) -> Result<Prepared, RankError> {
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
        let d = self.bundle.model.item_emb_dim();
        self.candidate_embeddings(req, d, &mut s.candidates)?;
        if self.bundle.model.v2().is_some() {
            self.prepare_v2(req, s)
        } else {
            self.prepare_v1(req, s)
        }
    }

    /// The model's inputs for a prepared request, borrowed from its scratch.
    fn job<'a>(&self, req: &'a RankRequest, s: &'a Scratch, p: &Prepared) -> ScoreJob<'a> {
        let user_emb = p.user.slice(req, &s.user);
        let context = req.context.as_deref();
        if self.bundle.model.v2().is_some() {
            let v = &s.v2;
            ScoreJob::V2(V2Job {
                req: V2Request {
                    batch: req.candidates.len(),
                    seq: v.tokens.slots,
                    lens: &v.tokens.lens,
                    item_embeddings: &s.item_embeddings,
                    action_masks: &v.masks,
                    surfaces: &v.surfaces,
                    candidates: &v.token_candidates,
                },
                head_candidates: &s.candidates,
                user_emb,
                context,
            })
        } else {
            ScoreJob::V1(V1Job {
                req: V1Request {
                    action_types: &s.seq.action_types,
                    item_embeddings: &s.item_embeddings,
                    action_times_ms: &s.seq.times_ms,
                    request_time_ms: req.request_time_ms,
                    candidates: &s.candidates,
                },
                user_emb,
                context,
            })
        }
    }

    /// After scoring: the feature log (V2), probabilities, utilities and
    /// the ranking.
    fn finish(
        &self,
        req: &RankRequest,
        s: &Scratch,
        p: &Prepared,
        logits: &[f32],
        resp: &mut RankResponse,
    ) -> Result<(), RankError> {
        let h = self.heads.len();
        resp.feature_log_error = None;
        if self.bundle.model.v2().is_some()
            && let Some(hook) = &self.logger
        {
            let v = &s.v2;
            let entry = FeatureLogEntry {
                request: req,
                tokens: &v.tokens,
                candidate_codes: &v.codes,
                candidate_scales: &v.scales,
                user_feature: p.user.slice(req, &s.user),
                bundle_version: &self.version,
            };
            if let Err(e) = hook.log(&entry) {
                match hook.on_error {
                    OnLogError::Continue => resp.feature_log_error = Some(e.into()),
                    OnLogError::FailRank => return Err(RankError::FeatureLog(e)),
                }
            }
        }
        resp.probabilities.clear();
        resp.probabilities
            .extend(logits.iter().map(|&z| sigmoid(z)));
        resp.ranked.clear();
        resp.ranked.extend(
            req.candidates
                .iter()
                .zip(resp.probabilities.chunks_exact(h))
                .enumerate()
                .map(|(i, (c, p))| Ranked {
                    item_id: c.item_id(),
                    request_index: i,
                    utility: p.iter().zip(&self.head_weights).map(|(p, w)| p * w).sum(),
                }),
        );
        // Equal utilities keep request order (an unstable sort with the
        // index as the tie-break: no allocation).
        resp.ranked.sort_unstable_by(|a, b| {
            b.utility
                .total_cmp(&a.utility)
                .then(a.request_index.cmp(&b.request_index))
        });
        resp.heads = self.heads.clone();
        resp.sequence_len = p.len;
        resp.unknown_actions = p.unknown_actions;
        resp.unknown_items = p.unknown_items;
        resp.backend = self.backend_name.clone();
        resp.bundle_version = self.version.clone();
        Ok(())
    }

    /// The user feature of a request: derived into `user` from the
    /// visible history `history` (newest first), or the request's own.
    fn user_embedding(
        &self,
        req: &RankRequest,
        history: &SequenceBuf,
        user: &mut Vec<f32>,
    ) -> Result<UserSource, RankError> {
        match (&self.bundle.user_items, &req.user_embedding) {
            (Some(_), Some(_)) => Err(RankError::UserFeatureGiven { user: req.user }),
            (Some(table), None) => {
                user.clear();
                user.resize(table.dim(), 0.0);
                self.features.user_feature(
                    history.iter().rev(),
                    req.request_time_ms,
                    |id| table.row_f32(id),
                    user,
                );
                Ok(UserSource::Derived)
            }
            (None, Some(_)) => Ok(UserSource::Given),
            (None, None) => Ok(UserSource::Absent),
        }
    }

    /// TransAct V1: the realtime sequence and its embeddings.
    fn prepare_v1(&self, req: &RankRequest, s: &mut Scratch) -> Result<Prepared, RankError> {
        let d = self.bundle.model.item_emb_dim();
        self.read_sequence(req, s)?;
        let len = s.seq.len();
        s.item_embeddings.clear();
        s.item_embeddings.resize(len * d, 0.0);
        for ((row, &id), &known) in s
            .item_embeddings
            .chunks_exact_mut(d)
            .zip(&s.seq.item_ids)
            .zip(&s.seq.item_known)
        {
            if known {
                self.bundle.items.get_into(id, row)?;
            }
        }
        let user = self.user_embedding(req, &s.history, &mut s.user)?;
        Ok(Prepared {
            len,
            unknown_actions: s.seq.unknown_actions,
            unknown_items: s.seq.unknown_items,
            user,
        })
    }

    /// TransAct V2: the three sequences and each candidate's selected
    /// tokens (scored by the bundle's int8 token table).
    fn prepare_v2(&self, req: &RankRequest, s: &mut Scratch) -> Result<Prepared, RankError> {
        let d = self.bundle.model.item_emb_dim();
        let table =
            self.bundle.tokens.as_ref().ok_or_else(|| {
                RankError::Config("the bundle's V2 model has no token table".into())
            })?;
        let v = &mut s.v2;
        let limits = SequenceLimits {
            at_or_before_ms: Some(
                self.features
                    .config()
                    .newest_visible_ms(req.request_time_ms),
            ),
            ..SequenceLimits::ALL
        };
        self.store.read_sequences(req.user, &limits, &mut v.seqs)?;
        // The candidates' codes: the token table's row, or an inline
        // embedding quantised per row as the table quantises.
        v.codes.clear();
        v.codes.resize(req.candidates.len() * d, 0);
        v.scales.clear();
        v.token_candidates.clear();
        v.token_candidates.resize(req.candidates.len() * d, 0.0);
        for (index, ((c, codes), tc)) in req
            .candidates
            .iter()
            .zip(v.codes.chunks_exact_mut(d))
            .zip(v.token_candidates.chunks_exact_mut(d))
            .enumerate()
        {
            let scale = match c {
                Candidate::Item(id) => match table.row_i8(*id) {
                    Some((row, scale)) => {
                        codes.copy_from_slice(row);
                        scale
                    }
                    None => {
                        return Err(RankError::UnknownCandidate {
                            index,
                            source: transact_embed::EmbedError::UnknownItem(*id),
                        });
                    }
                },
                Candidate::Embedding { embedding, .. } => {
                    transact_embed::quant::quantize_i8_per_row(embedding, codes)?
                }
            };
            v.scales.push(scale);
            transact_features::dequantize(codes, scale, tc);
        }
        self.features
            .select(
                &v.seqs,
                req.request_time_ms,
                |id| table.row_i8(id),
                &v.codes,
                d,
                &mut v.select,
                &mut v.tokens,
            )
            .map_err(|e| RankError::Config(e.to_string()))?;
        let learned = self
            .features
            .config()
            .lifelong
            .as_ref()
            .is_some_and(|l| l.token_embeddings == TokenEmbeddings::ItemTable);
        if learned {
            // The model's item table, once per pool token; the candidates'
            // half of each token is the row the heads read.
            let items = &self.bundle.items;
            v.pool.clear();
            v.pool.resize(v.tokens.pool_len() * d, 0.0);
            for (row, &id) in v.pool.chunks_exact_mut(d).zip(&v.tokens.item_ids) {
                if items.contains(id) {
                    items.get_into(id, row)?;
                }
            }
            let pool = &v.pool;
            v.tokens.expand_with(
                d,
                |p, out| out.copy_from_slice(&pool[p * d..(p + 1) * d]),
                &mut s.item_embeddings,
                &mut v.masks,
                &mut v.surfaces,
            );
            v.token_candidates.clear();
            v.token_candidates.extend_from_slice(&s.candidates);
        } else {
            v.tokens
                .expand(&mut s.item_embeddings, &mut v.masks, &mut v.surfaces);
        }
        let user = self.user_embedding(req, &v.seqs.realtime, &mut s.user)?;
        Ok(Prepared {
            len: v.tokens.lens.iter().copied().max().unwrap_or(0),
            unknown_actions: v.tokens.unknown_actions,
            unknown_items: v.tokens.unknown_items,
            user,
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
                    .bundle
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

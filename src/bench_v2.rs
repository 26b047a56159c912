//! The whole TransAct V2 ranking request of `transact bench cpu`
//! (`v2-rank-b256-16k`) and its stages, shared with the criterion benches.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transact_embed::{ItemTable, Precision};
use transact_features::{FeatureBuilder, FeatureConfig, SelectScratch, SelectedTokens};
use transact_gpu::{GpuError, GpuRankingModel};
use transact_model::{HeadsConfig, ModelError, RankingModel, V2Config, V2Request};
use transact_rank::{
    Bundle, Candidate, RankError, RankRequest, RankResponse, Ranker, RankerConfig,
};
use transact_seq::{
    Action, ActionType, EmbeddedStore, SequenceLimits, SequenceStore, StoreConfig, Surface,
    UserSequences,
};

use crate::bench::BATCH;
use crate::bench_lifelong::{DIM, LIFELONG};

/// Items in the bundle's tables.
pub const ITEMS: u64 = 1_000_000;
/// The user's impressions.
pub const IMPRESSIONS: usize = 4_096;

/// One V2 request for `B = 256` candidate ids: a user with 16,384 lifelong
/// tokens (repins and clicks), 4,096 impressions and a full realtime
/// sequence (1,024 actions) in an in-memory store; a random V2 bundle
/// (model-spec §3 defaults: 192 tokens = r 32 + k 96 / 32 / 32, d = 64,
/// 2 causal blocks, the default heads) with 1M-item f32 and int8 tables.
/// A run is the whole request: store read, selection, token building,
/// encoder, heads, utility and sort.
pub struct V2RankCase {
    ranker: Ranker<EmbeddedStore>,
    request: RankRequest,
    response: RankResponse,
}

impl V2RankCase {
    /// Name used in reports.
    pub const NAME: &'static str = "v2-rank-b256-16k";
    /// The selection stage alone (the contract's `select` over the read).
    pub const SELECT_NAME: &'static str = "v2-select-b256-16k";
    /// The model alone (encoder + heads) on the selected tokens.
    pub const SCORE_NAME: &'static str = "v2-score-b256-16k";

    /// Builds the case, scored on the CPU.
    pub fn new() -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_backend(|_| Ok(Box::new(transact_rank::CpuBackend)))
    }

    /// Builds the case with the backend `backend` makes for its model
    /// (e.g. [`crate::backend::GpuBackend`]).
    pub fn with_backend(
        backend: impl FnOnce(
            Arc<RankingModel>,
        )
            -> Result<Box<dyn transact_rank::Backend>, Box<dyn std::error::Error>>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let v2 = V2Config {
            item_emb_dim: DIM,
            ..V2Config::default()
        };
        let model = Arc::new(RankingModel::new_random_v2(v2, HeadsConfig::default(), 5)?);
        let mut items = ItemTable::new(DIM, Precision::F32)?;
        let mut tokens = ItemTable::new(DIM, Precision::Int8PerRow)?;
        items.try_reserve(ITEMS as usize)?;
        tokens.try_reserve(ITEMS as usize)?;
        let mut row = vec![0.0f32; DIM];
        for id in 0..ITEMS {
            row.iter_mut()
                .for_each(|v| *v = rng.random_range(-0.5..0.5));
            items.insert(id, &row)?;
            tokens.insert(id, &row)?;
        }
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        let now = 1_700_000_000_000i64;
        let n = LIFELONG + IMPRESSIONS;
        let actions: Vec<Action> = (0..n as i64)
            .map(|i| Action {
                item_id: rng.random_range(0..ITEMS),
                action_type: if i % 5 == 0 {
                    ActionType::IMPRESSION
                } else {
                    ActionType((i % 2 + 1) as u16)
                },
                timestamp_ms: now - (n as i64 - i) * 60_000,
                surface: Surface((i % 4) as u16),
            })
            .collect();
        store.append(1, &actions)?;
        let bundle = Bundle::new(model, Arc::new(items), FeatureConfig::lifelong(100))?
            .with_tokens(Some(Arc::new(tokens)))?;
        let backend = backend(bundle.model.clone())?;
        let ranker = Ranker::with_backend(
            Arc::new(store),
            Arc::new(bundle),
            RankerConfig::default(),
            backend,
        )?;
        let request = RankRequest::new(
            1,
            now,
            (0..BATCH)
                .map(|_| Candidate::Item(rng.random_range(0..ITEMS)))
                .collect(),
        );
        Ok(Self {
            ranker,
            request,
            response: RankResponse::default(),
        })
    }

    /// The case's model.
    pub fn model(&self) -> &RankingModel {
        self.ranker.model()
    }

    /// One whole request.
    pub fn run(&mut self) -> Result<(), RankError> {
        self.ranker.rank_into(&self.request, &mut self.response)
    }

    /// The stages apart: the selection and the model, on the inputs the
    /// ranker builds (read once here).
    pub fn stages(&self) -> Result<V2Stages<'_>, Box<dyn std::error::Error>> {
        let bundle = self.ranker.bundle();
        let tokens = bundle.tokens.as_ref().ok_or("no token table")?;
        let builder = FeatureBuilder::new(bundle.features.clone())?;
        let mut seqs = UserSequences::default();
        let limits = SequenceLimits {
            at_or_before_ms: Some(self.request.request_time_ms - 1),
            ..SequenceLimits::ALL
        };
        self.ranker.store().read_sequences(1, &limits, &mut seqs)?;
        let mut codes = Vec::with_capacity(BATCH * DIM);
        let mut heads = vec![0.0; BATCH * DIM];
        for (c, h) in self
            .request
            .candidates
            .iter()
            .zip(heads.chunks_exact_mut(DIM))
        {
            let (row, _) = tokens
                .row_i8(c.item_id())
                .ok_or("candidate without codes")?;
            codes.extend_from_slice(row);
            bundle.items.get_into(c.item_id(), h)?;
        }
        let mut s = V2Stages {
            ranker: &self.ranker,
            builder,
            seqs,
            codes,
            heads,
            time_ms: self.request.request_time_ms,
            scratch: SelectScratch::default(),
            selected: SelectedTokens::default(),
            items: Vec::new(),
            masks: Vec::new(),
            surfaces: Vec::new(),
            cands: Vec::new(),
            logits: vec![0.0; BATCH * bundle.model.head_names().len()],
        };
        s.select()?;
        s.selected
            .expand(&mut s.items, &mut s.masks, &mut s.surfaces);
        s.cands = vec![0.0; BATCH * DIM];
        for (cand, out) in self
            .request
            .candidates
            .iter()
            .zip(s.cands.chunks_exact_mut(DIM))
        {
            if let Some((row, scale)) = tokens.row_i8(cand.item_id()) {
                transact_features::dequantize(row, scale, out);
            }
        }
        Ok(s)
    }
}

/// The stages of a [`V2RankCase`] request, runnable apart.
pub struct V2Stages<'a> {
    ranker: &'a Ranker<EmbeddedStore>,
    builder: FeatureBuilder,
    seqs: UserSequences,
    codes: Vec<i8>,
    heads: Vec<f32>,
    time_ms: i64,
    scratch: SelectScratch,
    selected: SelectedTokens,
    items: Vec<f32>,
    masks: Vec<u32>,
    surfaces: Vec<u16>,
    cands: Vec<f32>,
    logits: Vec<f32>,
}

impl V2Stages<'_> {
    /// The selection: every candidate's tokens from the read sequences.
    pub fn select(&mut self) -> Result<(), transact_features::FeatureError> {
        let tokens = self.ranker.bundle().tokens.clone();
        let table = tokens.as_deref();
        self.builder.select(
            &self.seqs,
            self.time_ms,
            |id| table.and_then(|t| t.row_i8(id)),
            &self.codes,
            DIM,
            &mut self.scratch,
            &mut self.selected,
        )
    }

    fn request(&self) -> V2Request<'_> {
        V2Request {
            batch: BATCH,
            seq: self.selected.slots,
            lens: &self.selected.lens,
            item_embeddings: &self.items,
            action_masks: &self.masks,
            surfaces: &self.surfaces,
            candidates: &self.cands,
        }
    }

    /// The model: encoder and heads on the selected tokens.
    pub fn score(&mut self) -> Result<(), ModelError> {
        let mut logits = std::mem::take(&mut self.logits);
        let req = self.request();
        let r = self
            .ranker
            .model()
            .score_v2(&req, &self.heads, None, None, &mut logits);
        self.logits = logits;
        r
    }

    /// The model on the GPU ([`GpuRankingModel::score_v2`], one command
    /// buffer); the wall time from the token building to the logits.
    pub fn score_gpu(&self, gpu: &GpuRankingModel) -> Result<std::time::Duration, GpuError> {
        let t = std::time::Instant::now();
        gpu.score_v2(&self.request(), &self.heads, None, None)?;
        Ok(t.elapsed())
    }
}

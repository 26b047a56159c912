//! The CPU benchmark cases, shared by `transact bench cpu` and the criterion
//! benches in `benches/`, so both measure exactly the same work.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use transact_model::v2::{V2Block, blocks_forward};
use transact_model::{ModelError, TransActV1, V1Config, V1Request};
use transact_seq::{
    Action, ActionType, EmbeddedStore, SeqError, SequenceBuf, SequenceStore, StoreConfig, Surface,
};

/// Candidates per request in the model cases.
pub const BATCH: usize = 256;

/// V1 forward: B = 256, S = 100, d = 96, L = 2, K = 10, one user, full sequence.
pub struct V1Case {
    model: TransActV1,
    action_types: Vec<i64>,
    item_embeddings: Vec<f32>,
    times: Vec<i64>,
    candidates: Vec<f32>,
    out: Vec<f32>,
}

impl V1Case {
    /// Name used in reports.
    pub const NAME: &'static str = "v1-b256-s100";

    /// Builds the case with the reference defaults and random weights.
    pub fn new() -> Result<Self, ModelError> {
        let cfg = V1Config::default();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let s = cfg.seq_len;
        let d = cfg.item_emb_dim;
        let out = vec![0.0; BATCH * cfg.output_dim()];
        Ok(Self {
            action_types: (0..s).map(|_| rng.random_range(1..20)).collect(),
            item_embeddings: (0..s * d).map(|_| rng.random_range(-0.5..0.5)).collect(),
            times: (0..s as i64).map(|i| 1_000_000 - 1_000 * i).collect(),
            candidates: (0..BATCH * d)
                .map(|_| rng.random_range(-0.5..0.5))
                .collect(),
            model: TransActV1::new_random(cfg, 3)?,
            out,
        })
    }

    /// One forward of the whole request.
    pub fn run(&mut self) -> Result<(), ModelError> {
        let req = V1Request {
            action_types: &self.action_types,
            item_embeddings: &self.item_embeddings,
            action_times_ms: &self.times,
            request_time_ms: 1_000_001,
            candidates: &self.candidates,
        };
        self.model.forward_request(&req, &mut self.out)
    }
}

/// The V2 block stack: B = 256, S = 192, d = 64, FFN 32, L = 2, causal, all
/// tokens valid. Runs in place (LayerNorm keeps the values bounded, so
/// repeated runs do the same work without re-copying the input).
pub struct V2Case {
    blocks: Vec<V2Block>,
    x: Vec<f32>,
    lens: Vec<usize>,
}

impl V2Case {
    /// Name used in reports.
    pub const NAME: &'static str = "v2-b256-s192";
    /// Tokens per candidate.
    pub const SEQ: usize = 192;
    /// Model width.
    pub const D: usize = 64;

    /// Builds the case with random weights and inputs.
    pub fn new() -> Result<Self, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let blocks = (0..2)
            .map(|i| V2Block::new_random(Self::D, 32, 100 + i))
            .collect::<Result<Vec<_>, _>>()?;
        let x = (0..BATCH * Self::SEQ * Self::D)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Ok(Self {
            blocks,
            x,
            lens: vec![Self::SEQ; BATCH],
        })
    }

    /// One forward through both blocks.
    pub fn run(&mut self) -> Result<(), ModelError> {
        blocks_forward(
            &self.blocks,
            &mut self.x,
            BATCH,
            Self::SEQ,
            &self.lens,
            true,
            1e-5,
        )
    }
}

/// Reading a full 16,384-action history, newest first, into a warm buffer.
pub struct StoreReadCase {
    store: EmbeddedStore,
    buf: SequenceBuf,
}

impl StoreReadCase {
    /// Name used in reports.
    pub const NAME: &'static str = "store-read-16k";
    /// History length.
    pub const LEN: usize = 16_384;

    /// An in-memory store holding one user with a full history.
    pub fn new() -> Result<Self, SeqError> {
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        let now = 1_700_000_000_000i64;
        let actions: Vec<Action> = (0..Self::LEN as i64)
            .map(|i| Action {
                item_id: (i as u64).wrapping_mul(2_654_435_761) % 1_000_003,
                action_type: ActionType((i % 3) as u16 + 1),
                timestamp_ms: now - (Self::LEN as i64 - i) * 1_000,
                surface: Surface((i % 4) as u16),
            })
            .collect();
        store.append(1, &actions)?;
        let mut buf = SequenceBuf::with_capacity(Self::LEN);
        store.read_newest(1, Self::LEN, None, &mut buf)?;
        Ok(Self { store, buf })
    }

    /// One read; returns the number of actions read.
    pub fn run(&mut self) -> Result<usize, SeqError> {
        self.store.read_newest(1, Self::LEN, None, &mut self.buf)
    }
}

/// The whole ranking request: [`V1Case`]'s encoder with the default ranking
/// heads (DCN v2, 2 cross layers, MLP 256 → 64, 3 heads) in a bundle, a user
/// with 150 stored actions (every third an impression, which the sequence
/// leaves out) in an in-memory store, and `B = 256` candidate ids from a
/// 10,000-item table: store read, features, gathers, encoder, heads,
/// utility and sort, into a reused response.
pub struct RankCase {
    ranker: transact_rank::Ranker<EmbeddedStore>,
    request: transact_rank::RankRequest,
    response: transact_rank::RankResponse,
}

impl RankCase {
    /// Name used in reports.
    pub const NAME: &'static str = "rank-b256-s100";
    /// Name of the model alone (encoder + heads) on the same request.
    pub const SCORE_NAME: &'static str = "score-b256-s100";

    /// Builds the case (the encoder's weights are [`V1Case`]'s).
    pub fn new() -> Result<Self, Box<dyn std::error::Error>> {
        use std::sync::Arc;
        let cfg = V1Config::default();
        let d = cfg.item_emb_dim;
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let v1 = TransActV1::new_random(cfg.clone(), 3)?;
        let heads = transact_model::HeadsConfig::default();
        let input = heads.input_dim(cfg.output_dim(), d);
        let heads = transact_model::RankingHeads::new_random(heads, input, 4)?;
        let model = Arc::new(transact_model::RankingModel::new(v1, heads)?);
        let mut items = transact_embed::ItemTable::new(d, transact_embed::Precision::F32)?;
        let mut row = vec![0.0f32; d];
        for id in 0..10_000u64 {
            row.iter_mut()
                .for_each(|v| *v = rng.random_range(-0.5..0.5));
            items.insert(id, &row)?;
        }
        let store = EmbeddedStore::in_memory(StoreConfig::default());
        let now = 1_700_000_000_000i64;
        let actions: Vec<Action> = (0..150i64)
            .map(|i| Action {
                item_id: rng.random_range(0..10_000),
                action_type: if i % 3 == 2 {
                    ActionType::IMPRESSION
                } else {
                    ActionType(rng.random_range(5..20))
                },
                timestamp_ms: now - (150 - i) * 60_000,
                surface: Surface(0),
            })
            .collect();
        store.append(1, &actions)?;
        let features = transact_features::FeatureConfig {
            action_vocab: (0..20).collect(),
            sequence_actions: (0..20).filter(|&t| t != ActionType::IMPRESSION.0).collect(),
            ..transact_features::FeatureConfig::new(cfg.seq_len)
        };
        let bundle = transact_rank::Bundle::new(model, Arc::new(items), features)?;
        let ranker = transact_rank::Ranker::new(
            Arc::new(store),
            Arc::new(bundle),
            transact_rank::RankerConfig::default(),
        )?;
        let request = transact_rank::RankRequest::new(
            1,
            now,
            (0..BATCH)
                .map(|_| transact_rank::Candidate::Item(rng.random_range(0..10_000)))
                .collect(),
        );
        Ok(Self {
            ranker,
            request,
            response: transact_rank::RankResponse::default(),
        })
    }

    /// One whole request.
    pub fn run(&mut self) -> Result<(), transact_rank::RankError> {
        self.ranker.rank_into(&self.request, &mut self.response)
    }

    /// The model alone (encoder + heads) on the request's inputs, as the
    /// ranker builds them.
    pub fn score_only(&self) -> impl FnMut() -> Result<(), ModelError> + '_ {
        let model = self.ranker.model();
        let d = model.item_emb_dim();
        let table = &self.ranker.bundle().items;
        // The sequence as the ranker builds it, by the bundle's contract.
        let t = self.request.request_time_ms;
        let mut buf = SequenceBuf::default();
        let _ = self
            .ranker
            .store()
            .read_newest(1, usize::MAX, None, &mut buf);
        let mut seq = transact_features::SequenceFeatures::default();
        if let Ok(builder) =
            transact_features::FeatureBuilder::new(self.ranker.bundle().features.clone())
        {
            builder.build(buf.iter(), t, |id| table.contains(id), &mut seq);
        }
        let mut item_embeddings = vec![0.0; seq.len() * d];
        for (&id, row) in seq.item_ids.iter().zip(item_embeddings.chunks_exact_mut(d)) {
            let _ = table.get_into(id, row);
        }
        let mut candidates = vec![0.0; BATCH * d];
        for (c, row) in self
            .request
            .candidates
            .iter()
            .zip(candidates.chunks_exact_mut(d))
        {
            let _ = table.get_into(c.item_id(), row);
        }
        let mut logits = vec![0.0; BATCH * model.head_names().len()];
        move || {
            let req = V1Request {
                action_types: &seq.action_types,
                item_embeddings: &item_embeddings,
                action_times_ms: &seq.times_ms,
                request_time_ms: t,
                candidates: &candidates,
            };
            model.score(&req, None, None, &mut logits)
        }
    }
}

/// One benchmark result, as printed by `transact bench cpu --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Case name.
    pub case: String,
    /// Median wall time of one run, ms.
    pub median_ms: f64,
    /// Candidates scored per second (model cases), `null` otherwise.
    pub candidates_per_s: Option<f64>,
    /// Actions read per second (store case), `null` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions_per_s: Option<f64>,
    /// Timed runs after warm-up.
    pub runs: usize,
    /// Threads in the rayon pool.
    pub threads: usize,
}

/// Times `f` (after `warmup` untimed runs) and returns the median in ms.
pub fn median_ms<E>(
    runs: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        f()?;
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

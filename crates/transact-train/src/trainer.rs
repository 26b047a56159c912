//! The training loop: mini-batches over both cores, Adam with warm-up and
//! cosine decay, gradient clipping, one random time window per batch,
//! checkpoints (model + optimiser state) and resumption.
//!
//! **Determinism.** For a given seed and thread count a run is
//! bit-for-bit repeatable: the example order comes from a seeded shuffle
//! per epoch, the time window and dropout from the step number, every
//! thread handles a fixed contiguous range of the batch, and the
//! per-thread gradients are summed in thread order.

use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transact_model::{HeadsConfig, TensorMap, V1Config, V2Config};

use crate::batch::Batch;
use crate::data::{Dataset, default_utility};
use crate::eval::{EvalError, Query, Scorer};
use crate::features::{ExampleRef, FeatureConfig, Featurizer};
use crate::net::{LossStats, Net, NetConfig, StepOptions, TrainError, Workspace};
use crate::optim::{Adam, AdamConfig, Schedule, clip_grad_norm};
use crate::params::Params;
use transact_features::UserFeature;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// From the network.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// From the serving model (export, checkpoints).
    #[error(transparent)]
    Model(#[from] transact_model::ModelError),
    /// From evaluation.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A configuration or dataset problem.
    #[error("{0}")]
    Invalid(String),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// Hyper-parameters of a run (saved in every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Sequence encoder.
    pub v1: V1Config,
    /// Ranking heads (`user_emb_dim` is set from the data).
    pub heads: HeadsConfig,
    /// Read the realtime sequence (`false`: the no-sequence baseline).
    pub use_sequence: bool,
    /// Train the item table (`false` keeps pretrained embeddings fixed).
    pub learn_items: bool,
    /// Dropout rate in the encoder.
    pub dropout: f32,
    /// Next Action Loss weight (0 = off).
    pub nal_weight: f32,
    /// How examples are built.
    pub features: FeatureConfig,
    /// Examples per batch.
    pub batch_size: usize,
    /// Passes over the training requests.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of the peak.
    pub final_lr_ratio: f32,
    /// Adam / AdamW.
    pub adam: AdamConfig,
    /// Gradient-norm clip (0 = none).
    pub clip_norm: f32,
    /// Threads (0 = every core).
    pub threads: usize,
    /// Seed of initialisation, shuffling, windows and dropout.
    pub seed: u64,
    /// Utility weight per head for ranking (`Σ v_h σ(z_h)`).
    pub utility: Vec<f32>,
    /// A TransAct V2 encoder over the selected lifelong tokens instead of
    /// V1 (`None`: V1). Its `item_emb_dim` follows `v1.item_emb_dim`; the
    /// contract's selection is `features.sequence.lifelong` (its defaults
    /// when unset).
    #[serde(default)]
    pub v2: Option<V2Config>,
}

impl TrainConfig {
    /// Defaults for a dataset with `heads` heads: a small TransAct V1
    /// (S = 50, d_item from the data, 2 layers, 2 heads, FFN 32, K = 5),
    /// DCN v2 with 1 cross layer and MLP `[64]`, batch 256, 2 epochs, lr
    /// 2e-3 with 100 warm-up steps, AdamW 1e-4, clip 1.0, NAL 0.01 with
    /// impression negatives, 1-hour time window.
    pub fn new(heads: &[String], item_dim: usize) -> Self {
        let v1 = V1Config {
            seq_len: 50,
            latest_n_emb: 5,
            action_vocab: vec![1, 2, 3, 4],
            action_emb_dim: 8,
            item_emb_dim: item_dim,
            num_layer: 2,
            nhead: 2,
            dim_feedforward: 32,
            time_window_ms: 3_600_000,
            ..V1Config::default()
        };
        let mut features = FeatureConfig::new(v1.seq_len, heads.len());
        features.time_window_ms = v1.time_window_ms;
        // The no-sequence baseline's long-term signal; dropped by
        // `Trainer::new` on data without pretrained embeddings.
        features.sequence.user_feature = UserFeature::MeanOfPositives;
        let utility = heads.iter().map(|h| default_utility(h)).collect();
        Self {
            v1,
            heads: HeadsConfig {
                heads: heads.to_vec(),
                cross_layers: 1,
                mlp_hidden: vec![64],
                ..HeadsConfig::default()
            },
            use_sequence: true,
            learn_items: false,
            dropout: 0.0,
            nal_weight: 0.01,
            features,
            batch_size: 256,
            epochs: 2,
            lr: 2e-3,
            warmup_steps: 100,
            final_lr_ratio: 0.05,
            adam: AdamConfig {
                weight_decay: 1e-4,
                ..AdamConfig::default()
            },
            clip_norm: 1.0,
            threads: 0,
            seed: 1,
            utility,
            v2: None,
        }
    }

    /// The same run with a TransAct V2 encoder (model-spec §3 defaults,
    /// item width and action types from this config) and the contract's
    /// default lifelong selection (kept if already set); the Next Action
    /// Loss as this config has it (at every position: on the realtime
    /// tokens' rows, as model-spec §3 puts it). When the run trains its item table, the tokens embed it
    /// ([`transact_features::TokenEmbeddings::ItemTable`]) — a set
    /// selection keeps its own choice.
    pub fn with_v2(mut self) -> Self {
        let learn = self.learn_items;
        let l = self
            .features
            .sequence
            .lifelong
            .get_or_insert_with(|| transact_features::LifelongConfig {
                token_embeddings: if learn {
                    transact_features::TokenEmbeddings::ItemTable
                } else {
                    transact_features::TokenEmbeddings::Codes
                },
                ..transact_features::LifelongConfig::default()
            })
            .clone();
        self.v2 = Some(V2Config {
            seq_len: l.max_tokens(),
            item_emb_dim: self.v1.item_emb_dim,
            num_action_types: self.v1.action_vocab.len().clamp(1, 32),
            num_surfaces: usize::from(l.num_surfaces),
            ..V2Config::default()
        });
        self
    }

    /// Whether this run's Next Action Loss needs impressions in the log:
    /// at every position, impression negatives are drawn from the log (only
    /// the newest position has the slate's unengaged candidates), so
    /// without in-batch negatives beside them a log with no impressions
    /// leaves the inner positions with no negative at all.
    pub fn nal_needs_logged_impressions(&self) -> bool {
        let f = &self.features;
        self.use_sequence
            && self.nal_weight > 0.0
            && f.nal_every_position
            && f.nal_impressions
            && !f.nal_in_batch_too
    }

    /// Threads actually used.
    pub fn thread_count(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }

    /// The example-building config the model needs: the contract's
    /// sequence length and vocabulary follow the encoder's (a vocabulary id
    /// that is no action type makes the contract invalid, naming it).
    pub fn feature_config(&self) -> FeatureConfig {
        let mut f = self.features.clone();
        f.sequence.seq_len = self.v1.seq_len;
        f.sequence.action_vocab = self
            .v1
            .action_vocab
            .iter()
            .map(|&id| u16::try_from(id).unwrap_or(u16::MAX))
            .collect();
        if self.v2.is_some() && f.sequence.lifelong.is_none() {
            f.sequence.lifelong = Some(transact_features::LifelongConfig::default());
        }
        if self.v2.is_none() {
            f.sequence.lifelong = None;
        }
        f
    }
}

/// What one optimiser step did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step number (1-based, over the whole run including resumed parts).
    pub step: u64,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f32,
    /// Weighted BCE (per example).
    pub bce: f32,
    /// Next Action Loss (per target; 0 when off).
    pub nal: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Examples in the batch.
    pub examples: u32,
    /// Examples per second of this step (forward + backward + update).
    pub examples_per_s: f32,
}

/// Saved next to the tensors of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    config: TrainConfig,
    net: NetConfig,
    step: u64,
    epoch: usize,
    adam_t: u64,
}

const META_KEY: &str = "transact.train.checkpoint";
const ADAM_M: &str = "optimizer.adam.m";
const ADAM_V: &str = "optimizer.adam.v";

/// A model being trained: network, parameters, optimiser state.
pub struct Trainer {
    /// The run's hyper-parameters.
    pub cfg: TrainConfig,
    net: Net,
    /// Current parameters.
    pub params: Params,
    adam: Adam,
    /// Steps taken.
    pub step: u64,
    /// Epochs completed.
    pub epoch: usize,
    /// Every step so far (this process only).
    pub history: Vec<StepRecord>,
    pool: rayon::ThreadPool,
    workspaces: Vec<Workspace>,
    grads: Vec<Vec<f32>>,
    batch: Batch,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("epoch", &self.epoch)
            .field("params", &self.params.len())
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A fresh model for `data` (item table rows, user-feature width and
    /// pretrained embeddings come from it).
    pub fn new(mut cfg: TrainConfig, data: &Dataset) -> Result<Self, RunError> {
        if data.items.embeddings.is_none() {
            // Nothing to average: the contract (and the bundle) say so.
            cfg.features.sequence.user_feature = UserFeature::None;
        }
        let feat = Featurizer::new(data, &[], cfg.feature_config()).map_err(RunError::Invalid)?;
        cfg.heads.user_emb_dim = feat.user_dim();
        if let Some(e) = &data.items.embeddings {
            if e.dim != cfg.v1.item_emb_dim {
                return Err(RunError::Invalid(format!(
                    "item_emb_dim {} but the dataset's embeddings are {}-wide",
                    cfg.v1.item_emb_dim, e.dim
                )));
            }
        } else if !cfg.learn_items {
            cfg.learn_items = true;
        }
        let net_cfg = net_config(&cfg, feat.item_rows());
        let (net, mut params) = Net::new(net_cfg, cfg.seed)?;
        if let Some(e) = &data.items.embeddings {
            let table = params
                .get_mut("items.weight")
                .ok_or_else(|| RunError::Invalid("no item table".into()))?;
            table[..e.data.len()].copy_from_slice(&e.data);
            table[e.data.len()..].fill(0.0);
        }
        Self::assemble(cfg, net, params, None)
    }

    fn assemble(
        cfg: TrainConfig,
        net: Net,
        params: Params,
        adam: Option<Adam>,
    ) -> Result<Self, RunError> {
        let threads = cfg.thread_count().max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| RunError::Invalid(format!("thread pool: {e}")))?;
        let n = params.len();
        let adam = adam.unwrap_or_else(|| Adam::new(cfg.adam, n));
        Ok(Self {
            workspaces: (0..threads).map(|_| Workspace::default()).collect(),
            grads: vec![vec![0.0; n]; threads],
            cfg,
            net,
            params,
            adam,
            step: 0,
            epoch: 0,
            history: Vec::new(),
            pool,
            batch: Batch::default(),
        })
    }

    /// The network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Optimiser steps one epoch over `examples` takes.
    pub fn steps_per_epoch(&self, examples: usize) -> u64 {
        examples.div_ceil(self.cfg.batch_size.max(1)) as u64
    }

    /// One epoch over the examples of `feat`, calling `on_step` after every
    /// update. `total_steps` sets the cosine schedule's end.
    pub fn train_epoch(
        &mut self,
        feat: &Featurizer<'_>,
        total_steps: u64,
        on_step: &mut dyn FnMut(&StepRecord),
    ) -> Result<(), RunError> {
        let mut total = total_steps;
        self.train_epoch_with(feat, &mut total, &mut |r, _| {
            on_step(r);
            true
        })?;
        Ok(())
    }

    /// [`Trainer::train_epoch`] under the caller's control: after every
    /// step `on_step` may change `total` (the learning-rate schedule's
    /// length, e.g. once a time budget's step count is known) and returns
    /// whether to go on. Returns whether the epoch ran to its end; a
    /// stopped epoch still counts as trained.
    pub fn train_epoch_with(
        &mut self,
        feat: &Featurizer<'_>,
        total: &mut u64,
        on_step: &mut dyn FnMut(&StepRecord, &mut u64) -> bool,
    ) -> Result<bool, RunError> {
        let mut examples: Vec<ExampleRef> = feat.examples();
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ (self.epoch as u64 + 1) << 32);
        examples.shuffle(&mut rng);
        let mut schedule = Schedule {
            peak: self.cfg.lr,
            warmup: self.cfg.warmup_steps,
            total: *total,
            final_ratio: self.cfg.final_lr_ratio,
        };
        let bs = self.cfg.batch_size.max(1);
        let mut completed = true;
        for chunk in examples.chunks(bs) {
            let t0 = Instant::now();
            let mut wrng = ChaCha8Rng::seed_from_u64(self.cfg.seed.wrapping_add(self.step * 7919));
            let window = if self.cfg.features.time_window_ms > 0 {
                wrng.random_range(0..=self.cfg.features.time_window_ms)
            } else {
                0
            };
            let mut batch = std::mem::take(&mut self.batch);
            feat.fill(chunk, window, &mut batch)
                .map_err(RunError::Invalid)?;
            let stats = self.gradients(&batch, true);
            self.batch = batch;
            let stats = stats?;
            let mut grads = std::mem::take(&mut self.grads);
            self.keep_padding_row_zero(&mut grads[0], feat.pad_row());
            for r in self.params.frozen_ranges() {
                grads[0][r].fill(0.0);
            }
            let norm = clip_grad_norm(&mut grads[0], self.cfg.clip_norm);
            let lr = schedule.lr(self.step);
            let decay = self.params.decay_ranges();
            self.adam
                .step(self.params.data_mut(), &grads[0], lr, &decay);
            self.grads = grads;
            self.step += 1;
            let rec = StepRecord {
                step: self.step,
                epoch: self.epoch,
                lr,
                bce: stats.bce,
                nal: stats.nal,
                grad_norm: norm,
                examples: chunk.len() as u32,
                examples_per_s: chunk.len() as f32 / t0.elapsed().as_secs_f32().max(1e-9),
            };
            self.history.push(rec);
            let go_on = on_step(&rec, total);
            schedule.total = *total;
            if !go_on {
                completed = false;
                break;
            }
        }
        self.epoch += 1;
        Ok(completed)
    }

    /// Gradients of the loss over `batch` into `self.grads[0]` (the other
    /// buffers hold the per-thread parts); returns the losses.
    fn gradients(&mut self, batch: &Batch, train: bool) -> Result<LossStats, RunError> {
        let threads = self.grads.len();
        let n = batch.len;
        let per = n.div_ceil(threads).max(1);
        let opts = StepOptions {
            nal_weight: if self.cfg.use_sequence {
                self.cfg.nal_weight
            } else {
                0.0
            },
            in_batch_negatives: !self.cfg.features.nal_impressions,
            also_in_batch: self.cfg.features.nal_impressions && self.cfg.features.nal_in_batch_too,
            dropout: train,
            step_seed: self.cfg.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        let net = &self.net;
        let params = &self.params;
        let results: Vec<Result<LossStats, TrainError>> = self.pool.install(|| {
            use rayon::prelude::*;
            self.grads
                .par_iter_mut()
                .zip(self.workspaces.par_iter_mut())
                .enumerate()
                .map(|(t, (g, ws))| {
                    g.fill(0.0);
                    let range = (t * per).min(n)..((t + 1) * per).min(n);
                    if range.is_empty() {
                        return Ok(LossStats::default());
                    }
                    net.forward_backward(params, batch, range, &opts, g, ws)
                })
                .collect()
        });
        let mut total = LossStats::default();
        for r in results {
            total.add(&r?);
        }
        let (first, rest) = self.grads.split_at_mut(1);
        for g in rest {
            for (a, b) in first[0].iter_mut().zip(g.iter()) {
                *a += *b;
            }
        }
        Ok(total)
    }

    /// The padding row of the item table stays zero (it stands for "no
    /// action" at position 0 of an empty history, as in serving).
    fn keep_padding_row_zero(&self, grads: &mut [f32], pad_row: u32) {
        if let Some(r) = self.params.range("items.weight") {
            let d = self.cfg.v1.item_emb_dim;
            let start = r.start + pad_row as usize * d;
            if let Some(g) = grads.get_mut(start..start + d) {
                g.fill(0.0);
            }
        }
    }

    /// Logits (`B × H`) of a filled batch, no dropout.
    pub fn predict(&mut self, batch: &Batch, logits: &mut Vec<f32>) -> Result<(), RunError> {
        logits.clear();
        logits.resize(batch.len * self.cfg.heads.heads.len(), 0.0);
        self.net
            .predict(&self.params, batch, 0..batch.len, logits)
            .map_err(RunError::from)
    }

    /// Writes model, optimiser state and progress to a safetensors file.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), RunError> {
        let mut map: TensorMap = self.params.to_tensor_map();
        let n = self.params.len();
        map.insert_f32(ADAM_M, vec![n], self.adam.m.clone())?;
        map.insert_f32(ADAM_V, vec![n], self.adam.v.clone())?;
        let meta = CheckpointMeta {
            config: self.cfg.clone(),
            net: self.net.config().clone(),
            step: self.step,
            epoch: self.epoch,
            adam_t: self.adam.t,
        };
        let json = serde_json::to_string(&meta).map_err(|e| RunError::Invalid(e.to_string()))?;
        map.metadata.insert(META_KEY.into(), json);
        map.save(path)?;
        Ok(())
    }

    /// Resumes a run from [`Trainer::save_checkpoint`]: same parameters,
    /// optimiser state, step and epoch.
    pub fn resume(path: &Path) -> Result<Self, RunError> {
        let map = TensorMap::load(path)?;
        let meta: CheckpointMeta = map.meta_json(META_KEY)?;
        let net = Net::from_config(meta.net.clone())?;
        let params = Params::from_tensor_map(net.config(), &map)?;
        let n = params.len();
        let mut adam = Adam::new(meta.config.adam, n);
        adam.m = map.f32(ADAM_M, &[n])?.to_vec();
        adam.v = map.f32(ADAM_V, &[n])?.to_vec();
        adam.t = meta.adam_t;
        let mut t = Self::assemble(meta.config, net, params, Some(adam))?;
        t.step = meta.step;
        t.epoch = meta.epoch;
        Ok(t)
    }

    /// Warm start: the parameters of a checkpoint with a fresh optimiser,
    /// step 0 and the given config's schedule (retraining on newer data).
    /// The model shapes of `cfg` must match the checkpoint's.
    pub fn warm_start(path: &Path, cfg: TrainConfig) -> Result<Self, RunError> {
        let map = TensorMap::load(path)?;
        let meta: CheckpointMeta = map.meta_json(META_KEY)?;
        let net = Net::from_config(meta.net.clone())?;
        let params = Params::from_tensor_map(net.config(), &map)?;
        let mut cfg = cfg;
        cfg.v1 = meta.config.v1.clone();
        cfg.heads = meta.config.heads.clone();
        cfg.use_sequence = meta.config.use_sequence;
        // The model was trained on this contract: retraining keeps it.
        cfg.features.sequence = meta.config.features.sequence.clone();
        Self::assemble(cfg, net, params, None)
    }

    /// A scorer over `data` for evaluation: the utility `Σ v_h σ(z_h)`
    /// with the config's weights.
    pub fn scorer<'a>(&'a self, data: &'a Dataset) -> Result<NetScorer<'a>, RunError> {
        self.scorer_with(data, self.cfg.utility.clone())
    }

    /// A scorer with other utility weights, e.g. all ones for "any
    /// interaction" (the SASRec protocol's target, where every head's action
    /// counts as an interaction).
    pub fn scorer_with<'a>(
        &'a self,
        data: &'a Dataset,
        utility: Vec<f32>,
    ) -> Result<NetScorer<'a>, RunError> {
        let feat =
            Featurizer::new(data, &[], self.cfg.feature_config()).map_err(RunError::Invalid)?;
        if utility.len() != self.cfg.heads.heads.len() {
            return Err(RunError::Invalid(format!(
                "{} utility weights for {} heads",
                utility.len(),
                self.cfg.heads.heads.len()
            )));
        }
        Ok(NetScorer {
            trainer: self,
            feat,
            utility,
        })
    }
}

fn net_config(cfg: &TrainConfig, item_rows: usize) -> NetConfig {
    NetConfig {
        v1: cfg.v1.clone(),
        heads: cfg.heads.clone(),
        use_sequence: cfg.use_sequence,
        item_rows,
        learn_items: cfg.learn_items,
        nal: cfg.use_sequence && cfg.nal_weight > 0.0,
        nal_every_position: cfg.features.nal_every_position,
        dropout: cfg.dropout,
        v2: cfg.v2.clone(),
        v2_item_tokens: cfg
            .feature_config()
            .sequence
            .lifelong
            .is_some_and(|l| l.token_embeddings == transact_features::TokenEmbeddings::ItemTable),
    }
}

/// Scores candidates with a [`Trainer`]'s current parameters.
pub struct NetScorer<'a> {
    trainer: &'a Trainer,
    feat: Featurizer<'a>,
    utility: Vec<f32>,
}

impl Scorer for NetScorer<'_> {
    fn score(
        &self,
        data: &Dataset,
        query: &Query<'_>,
        candidates: &[u32],
        out: &mut [f32],
    ) -> Result<(), EvalError> {
        thread_local! {
            static BUF: std::cell::RefCell<(Batch, Vec<f32>)> = Default::default();
        }
        let t = self.trainer;
        let heads = t.cfg.heads.heads.len();
        BUF.with(|buf| {
            let (batch, logits) = &mut *buf.borrow_mut();
            self.feat
                .fill_query(data, query, candidates, batch)
                .map_err(EvalError::Scorer)?;
            logits.clear();
            logits.resize(candidates.len() * heads, 0.0);
            t.net
                .predict(&t.params, batch, 0..batch.len, logits)
                .map_err(|e| EvalError::Scorer(e.to_string()))?;
            for (o, z) in out.iter_mut().zip(logits.chunks_exact(heads)) {
                *o = z
                    .iter()
                    .zip(&self.utility)
                    .map(|(&z, &v)| v / (1.0 + (-z).exp()))
                    .sum();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{
        ItemCatalog, ItemEmbeddings, LoggedCandidate, LoggedRequest, UserHistory, default_heads,
    };
    use crate::eval::hit_at_k;
    use rand::Rng;
    use transact_seq::{Action, ActionType, Surface};

    /// 4 topics × 10 items; each user browses one topic at a time (their
    /// newest actions say which); a candidate is repinned when it is of
    /// the current topic, hidden when of the "opposite" topic.
    pub(crate) fn tiny_world(seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (topics, per, dim) = (4usize, 10usize, 8usize);
        let items = topics * per;
        let mut emb = vec![0.0f32; items * dim];
        for i in 0..items {
            for k in 0..dim {
                emb[i * dim + k] = rng.random_range(-0.3..0.3);
            }
            emb[i * dim + i / per] += 1.0;
        }
        let mut users = Vec::new();
        let mut requests = Vec::new();
        for u in 0..24u32 {
            let mut actions = Vec::new();
            let mut t = 1_000_000i64;
            for session in 0..6 {
                let topic = rng.random_range(0..topics);
                for _ in 0..4 {
                    let item = (topic * per + rng.random_range(0..per)) as u64;
                    actions.push(Action {
                        item_id: item,
                        action_type: if rng.random_bool(0.5) {
                            ActionType::REPIN
                        } else {
                            ActionType::CLICK
                        },
                        timestamp_ms: t,
                        surface: Surface(0),
                    });
                    t += 60_000;
                }
                if session > 0 {
                    let mut cands = Vec::new();
                    for c in 0..6 {
                        let ct = if c < 2 {
                            topic
                        } else {
                            rng.random_range(0..topics)
                        };
                        let item = (ct * per + rng.random_range(0..per)) as u32;
                        let labels = if ct == topic {
                            1
                        } else if ct == (topic + 2) % topics {
                            4
                        } else {
                            0
                        };
                        cands.push(LoggedCandidate { item, labels });
                    }
                    requests.push(LoggedRequest {
                        user: u,
                        time_ms: t,
                        candidates: cands,
                    });
                }
                t += 3_600_000;
            }
            users.push(UserHistory {
                raw_id: u.to_string(),
                actions,
                weight: 1.0,
            });
        }
        requests.sort_by_key(|r| r.time_ms);
        Dataset {
            name: "tiny".into(),
            heads: default_heads(),
            items: ItemCatalog {
                count: items,
                raw_ids: (0..items).map(|i| i.to_string()).collect(),
                embeddings: Some(ItemEmbeddings { dim, data: emb }),
            },
            users,
            requests,
        }
    }

    pub(crate) fn tiny_config(threads: usize) -> TrainConfig {
        let mut cfg = TrainConfig::new(&default_heads(), 8);
        cfg.v1.seq_len = 8;
        cfg.v1.latest_n_emb = 2;
        cfg.v1.action_emb_dim = 4;
        cfg.v1.dim_feedforward = 8;
        cfg.heads.mlp_hidden = vec![16];
        cfg.batch_size = 32;
        cfg.epochs = 3;
        cfg.lr = 1e-2;
        cfg.warmup_steps = 5;
        cfg.threads = threads;
        cfg.features.time_window_ms = 0;
        cfg
    }

    fn train(cfg: &TrainConfig, data: &Dataset) -> Trainer {
        let mut t = Trainer::new(cfg.clone(), data).expect("trainer");
        let feat = Featurizer::new(data, &data.requests, t.cfg.feature_config()).expect("feat");
        let total = t.steps_per_epoch(feat.examples().len()) * cfg.epochs as u64;
        for _ in 0..cfg.epochs {
            t.train_epoch(&feat, total, &mut |_| {}).expect("epoch");
        }
        t
    }

    #[test]
    fn training_learns_the_session_signal_and_is_deterministic() {
        let data = tiny_world(3);
        let cfg = tiny_config(2);
        let before = Trainer::new(cfg.clone(), &data).expect("trainer");
        let hit_before =
            hit_at_k(&data, &data.requests, 3, &before.scorer(&data).expect("s")).expect("hit");
        let t = train(&cfg, &data);
        let first = t.history.first().expect("steps").bce;
        let last = t.history.last().expect("steps").bce;
        assert!(last < 0.7 * first, "bce {first} → {last}");
        let hit = hit_at_k(&data, &data.requests, 3, &t.scorer(&data).expect("s")).expect("hit");
        assert!(
            hit.per_head[0] > hit_before.per_head[0] + 0.05,
            "HIT@3 repin {:?} → {:?}",
            hit_before.per_head,
            hit.per_head
        );
        // Same seed, same thread count: the same parameters, bit for bit.
        let again = train(&cfg, &data);
        assert_eq!(t.params.data(), again.params.data());
        // Another seed: different parameters.
        let mut other = cfg.clone();
        other.seed = 2;
        assert_ne!(t.params.data(), train(&other, &data).params.data());
    }

    #[test]
    fn resuming_a_checkpoint_continues_the_run_exactly() {
        let data = tiny_world(4);
        let mut cfg = tiny_config(2);
        cfg.epochs = 2;
        let full = train(&cfg, &data);

        let dir = tempfile::tempdir().expect("tempdir");
        let ckpt = dir.path().join("ckpt.safetensors");
        let feat = Featurizer::new(&data, &data.requests, cfg.feature_config()).expect("feat");
        let mut t = Trainer::new(cfg.clone(), &data).expect("trainer");
        let total = t.steps_per_epoch(feat.examples().len()) * 2;
        t.train_epoch(&feat, total, &mut |_| {}).expect("epoch 1");
        t.save_checkpoint(&ckpt).expect("save");
        drop(t);
        let mut resumed = Trainer::resume(&ckpt).expect("resume");
        assert_eq!(resumed.epoch, 1);
        resumed
            .train_epoch(&feat, total, &mut |_| {})
            .expect("epoch 2");
        assert_eq!(resumed.step, full.step);
        assert_eq!(resumed.params.data(), full.params.data());

        // Warm start: same parameters, fresh optimiser and step count.
        let warm = Trainer::warm_start(&ckpt, cfg.clone()).expect("warm");
        assert_eq!(warm.step, 0);
        assert_eq!(warm.adam.t, 0);
        assert_eq!(warm.params.data().len(), full.params.data().len());
        // A truncated file is an error, not a panic.
        let bytes = std::fs::read(&ckpt).expect("read");
        std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).expect("write");
        assert!(Trainer::resume(&ckpt).is_err());
    }
}

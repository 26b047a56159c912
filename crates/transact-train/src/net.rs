//! The whole trainable ranking network: forward, backward and losses over a
//! [`crate::Batch`].
//!
//! Per example (one logged request × candidate):
//!
//! ```text
//! tokens   x_t = [E_act(a_t) ; E_item(i_t) ; E_item(c)]      unmasked positions only
//! encoder  y   = L post-norm layers (MHA, FFN, dropout in training)
//! output   o   = [W_o·maxpool_t(y_t) + b_o ; y_0 ; … ; y_{K−1}]  masked rows are zero
//! features f   = [o ; E_item(c) ; user]                      ([E_item(c) ; user] without the sequence)
//! heads    z   = Linear(MLP(DCN v2(f)))                       one logit per head
//! ```
//!
//! Loss over a batch of `B` examples:
//! `L = (1/B)·Σ_b Σ_h w_bh·BCE(y_bh, σ(z_bh)) + λ·(1/N)·Σ_b Σ_j −log softmax(s_bj)_pos`,
//! where `s_bj` are the dot products of `W_nal·y_0(b)` (the newest
//! position's encoder output projected to item width) with the embeddings of
//! the example's `j`-th target `nal_pos[b·P + j]` (`P` =
//! [`Batch::nal_per_example`]) and its negatives, and `N` counts the targets
//! in the whole batch. Negatives are the example's impression negatives
//! (`nal_neg`, [`NO_ITEM`] skipped, shared by its targets) or, with in-batch
//! negatives, the targets of every other example of the batch that are not
//! among this example's own.
//!
//! The encoder runs on the unmasked positions only (masked keys are never
//! attended to and masked output rows are zero, so this is exact), a chunk
//! of examples at a time: projections and FFNs are one GEMM over every token
//! row of the chunk, attention runs per example. The heads run on the whole
//! chunk too. Buffers live in a [`Workspace`] reused across calls.
//!
//! Dropout (training only) follows PyTorch's `TransformerEncoderLayer`:
//! after attention, after the FFN activation, after `linear2`. Its masks are
//! hashed from `(step_seed, example index in the batch, layer, site,
//! element)`, so results do not depend on how a batch is split over
//! threads.
//!
//! Initialisation ([`Net::new`]): everything the serving model has is drawn
//! exactly as [`RankingModel::new_random`] draws it (the baseline's heads as
//! [`RankingHeads::new_random`] would inside it); the item table is
//! `N(0, 1/d_item)` and the NAL projection Xavier-uniform, both from a
//! ChaCha8 stream seeded with `seed ^ 0x17E3_5EED`.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transact_embed::kernels::{self, Par, RhsLayout};
use transact_model::ranking::HEADS_PREFIX;
use transact_model::{HeadsConfig, RankingHeads, RankingModel, TensorMap, V1Config, V2Config};

use crate::batch::{Batch, NO_ITEM};
use crate::layers::cross::{cross_backward, cross_forward};
use crate::layers::dropout::dropout_key;
use crate::layers::embed::{
    FusionDims, early_fusion_backward, early_fusion_forward, embedding_backward, embedding_forward,
};
use crate::layers::encoder::{
    EncoderCache, EncoderDims, EncoderGrads, EncoderScratch, EncoderWeights, LayerDropout,
    encoder_layer_backward, encoder_layer_forward,
};
use crate::layers::linear::{
    linear_backward, linear_forward, relu_backward, relu_forward, transpose,
};
use crate::layers::loss::{bce_forward_backward, sampled_softmax};
use crate::layers::pool::{CompressDims, compress_backward, compress_forward};
use crate::layers::{kernel, sized};
use crate::params::{ITEMS, NAL_PROJ, Params, V1_PREFIX};

mod nal;
mod v2;

use nal::NalTerm;
use v2::{V2Layout, V2Workspace};

#[cfg(test)]
mod tests;

/// Everything that can go wrong in training code.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A slice is shorter than the layer needs.
    #[error("{what}: needs {expected} values, got {got}")]
    Shape {
        /// Which argument.
        what: String,
        /// Values needed.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A batch is malformed.
    #[error("bad batch: {0}")]
    Batch(String),
    /// Parameters do not match the network.
    #[error("parameters: {0}")]
    Params(String),
    /// A GEMM kernel rejected its arguments (a bug: sizes are checked first).
    #[error("kernel: {0}")]
    Kernel(String),
    /// An error from the serving model.
    #[error(transparent)]
    Model(#[from] transact_model::ModelError),
}

/// The network's shape and training switches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// The sequence encoder (its `seq_len` is the batches' `seq_len`).
    pub v1: V1Config,
    /// The heads; `user_emb_dim` is the width of [`Batch::user_features`],
    /// `context_dim` must be 0.
    pub heads: HeadsConfig,
    /// `false`: the no-sequence baseline, features `[e_c ; user]` only.
    pub use_sequence: bool,
    /// Rows of the item table.
    pub item_rows: usize,
    /// Whether the item table is trained (otherwise frozen, e.g. pretrained).
    pub learn_items: bool,
    /// Whether the Next Action Loss projection exists (needs the sequence).
    pub nal: bool,
    /// The Next Action Loss at every position, instead of on the newest
    /// row of the serving pass only; needs [`Batch::nal_seq`]. V1: on a
    /// causal pass of the encoder (the same weights). V2 (whose encoder is
    /// causal already): on the serving pass's rows at the realtime tokens
    /// the featurizer gave a target.
    pub nal_every_position: bool,
    /// Dropout probability of the encoder layers in training (V1 only).
    pub dropout: f32,
    /// A TransAct V2 encoder over each example's selected tokens
    /// ([`Batch::v2_items`] …) instead of V1 over the realtime sequence;
    /// its `item_emb_dim` is `v1.item_emb_dim` (the `v1` config still gives
    /// the realtime sequence's length and the vocabulary).
    pub v2: Option<V2Config>,
    /// With V2: a token's item embedding (and the candidate's half) is the
    /// item table's row ([`Batch::v2_rows`], [`Batch::cand_items`]; trained
    /// with it when `learn_items`), not the dequantised int8 codes.
    #[serde(default)]
    pub v2_item_tokens: bool,
}

impl Default for NetConfig {
    /// The default V1 encoder and heads, sequence on, items learned, no NAL,
    /// no dropout, and no item rows (set `item_rows` before use).
    fn default() -> Self {
        Self {
            v1: V1Config::default(),
            heads: HeadsConfig::default(),
            use_sequence: true,
            item_rows: 0,
            learn_items: true,
            nal: false,
            nal_every_position: false,
            dropout: 0.0,
            v2: None,
            v2_item_tokens: false,
        }
    }
}

impl NetConfig {
    /// Width of the sequence part of the features (0 without the sequence).
    pub fn seq_out_dim(&self) -> usize {
        match (&self.v2, self.use_sequence) {
            (_, false) => 0,
            (Some(v2), true) => v2.output_dim(),
            (None, true) => self.v1.output_dim(),
        }
    }

    /// Width `d` of the encoder's rows (V2's when it has one).
    pub fn d_model(&self) -> usize {
        match &self.v2 {
            Some(v2) => v2.d_model(),
            None => self.v1.d_model(),
        }
    }

    /// Width `n` of the feature vector the heads read.
    pub fn feature_dim(&self) -> usize {
        self.heads
            .input_dim(self.seq_out_dim(), self.v1.item_emb_dim)
    }

    /// Checks the config.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.v1.validate()?;
        self.heads.validate()?;
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if self.heads.context_dim != 0 {
            return bad("context features are not supported in training (context_dim must be 0)");
        }
        if self.item_rows == 0 || self.item_rows > u32::MAX as usize {
            return bad("item_rows must be in 1..2^32");
        }
        if self.nal && !self.use_sequence {
            return bad("the Next Action Loss needs the sequence encoder");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout must be in [0, 1)");
        }
        if let Some(v2) = &self.v2 {
            v2.validate()?;
            if v2.item_emb_dim != self.v1.item_emb_dim {
                return bad("the V2 encoder's item_emb_dim must equal v1.item_emb_dim");
            }
        }
        Ok(())
    }

    fn encoder_dims(&self) -> EncoderDims {
        EncoderDims {
            d: self.v1.d_model(),
            heads: self.v1.nhead,
            ff: self.v1.dim_feedforward,
            eps: self.v1.layer_norm_eps,
            causal: false,
        }
    }

    fn fusion_dims(&self) -> FusionDims {
        FusionDims {
            d_act: self.v1.action_emb_dim,
            d_item: self.v1.item_emb_dim,
            with_candidate: self.v1.concat_candidate_emb,
        }
    }

    fn compress_dims(&self) -> CompressDims {
        CompressDims {
            d: self.v1.d_model(),
            seq_len: self.v1.seq_len,
            kept: self.v1.kept_positions(),
            max_pool: self.v1.concat_max_pool,
        }
    }
}

/// Per-step switches of [`Net::forward_backward`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOptions {
    /// `λ`, the weight of the Next Action Loss (0 = off; ignored when the
    /// network has no NAL projection).
    pub nal_weight: f32,
    /// Negatives of the NAL: the other examples' positives instead of the
    /// impression negatives in [`Batch::nal_neg`].
    pub in_batch_negatives: bool,
    /// With impression negatives, the in-batch negatives too.
    pub also_in_batch: bool,
    /// Apply dropout (training mode).
    pub dropout: bool,
    /// Seed of this step's dropout masks.
    pub step_seed: u64,
}

impl Default for StepOptions {
    /// NAL weight 0.01 (the paper's), impression negatives, dropout on, seed 0.
    fn default() -> Self {
        Self {
            nal_weight: 0.01,
            in_batch_negatives: false,
            also_in_batch: false,
            dropout: true,
            step_seed: 0,
        }
    }
}

/// One call's share of the batch losses: summing the stats of disjoint
/// ranges (with [`LossStats::add`]) gives the whole batch's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    /// `(1/B)·Σ w·BCE` over this call's examples (`B` = the whole batch).
    pub bce: f32,
    /// `(1/N)·Σ −log softmax(pos)` over this call's NAL targets (`N` = the
    /// whole batch's), not multiplied by the NAL weight.
    pub nal: f32,
    /// `bce + λ·nal`: what was differentiated.
    pub loss: f32,
    /// Examples handled.
    pub examples: usize,
    /// Examples with a NAL target handled.
    pub nal_targets: usize,
}

impl LossStats {
    /// Adds another call's share.
    pub fn add(&mut self, o: &LossStats) {
        self.bce += o.bce;
        self.nal += o.nal;
        self.loss += o.loss;
        self.examples += o.examples;
        self.nal_targets += o.nal_targets;
    }
}

/// Reusable buffers of [`Net::forward_backward`] and [`Net::predict_with`];
/// one per thread. Buffers only grow, so steady state does not allocate.
#[derive(Debug, Default)]
pub struct Workspace {
    ccaches: Vec<EncoderCache>,
    cdy: Vec<f32>,
    cdx: Vec<f32>,
    nterms: Vec<NalTerm>,
    offsets: Vec<usize>,
    positions: Vec<usize>,
    tok_actions: Vec<u32>,
    tok_items: Vec<u32>,
    keys: Vec<u64>,
    x0: Vec<f32>,
    caches: Vec<EncoderCache>,
    enc: EncoderScratch,
    pooled: Vec<f32>,
    argmax: Vec<u32>,
    comp: Vec<f32>,
    xs: Vec<Vec<f32>>,
    ts: Vec<Vec<f32>>,
    hs: Vec<Vec<f32>>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
    dx0: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    u: Vec<f32>,
    pn: Vec<f32>,
    dpn: Vec<f32>,
    du: Vec<f32>,
    targets: Vec<f32>,
    dtargets: Vec<f32>,
    trows: Vec<u32>,
    scores: Vec<f32>,
    nal_cols: Vec<f32>,
    nal_rows: Vec<f32>,
    nal_g: Vec<f32>,
    nal_gt: Vec<f32>,
    nal_drows: Vec<f32>,
    nal_dcols: Vec<f32>,
    dpooled: Vec<f32>,
    lin: Vec<f32>,
    dt: Vec<f32>,
    v2: V2Workspace,
}

/// Examples per chunk (chunks start at multiples of this in the batch).
const CHUNK: usize = 32;

/// Where each tensor lives in the flat parameter vector.
#[derive(Clone, Debug)]
struct Layout {
    len: usize,
    items: Range<usize>,
    action: Range<usize>,
    layers: Vec<Range<usize>>,
    out_linear: Option<(Range<usize>, Range<usize>)>,
    cross: Vec<(Range<usize>, Range<usize>)>,
    /// Weight, bias, input width, output width.
    mlp: Vec<(Range<usize>, Range<usize>, usize, usize)>,
    out: (Range<usize>, Range<usize>, usize),
    nal: Option<Range<usize>>,
    v2: Option<V2Layout>,
}

impl Layout {
    fn new(cfg: &NetConfig) -> Result<Self, TrainError> {
        let p = Params::for_config(cfg)?;
        let r = |name: &str| {
            p.range(name)
                .ok_or_else(|| TrainError::Params(format!("layout has no `{name}`")))
        };
        let pair = |prefix: &str| -> Result<(Range<usize>, Range<usize>), TrainError> {
            Ok((
                r(&format!("{prefix}.weight"))?,
                r(&format!("{prefix}.bias"))?,
            ))
        };
        let mut layout = Layout {
            len: p.len(),
            items: r(ITEMS)?,
            action: 0..0,
            layers: Vec::new(),
            out_linear: None,
            cross: Vec::new(),
            mlp: Vec::new(),
            out: (0..0, 0..0, 0),
            nal: None,
            v2: None,
        };
        if let (true, Some(v2)) = (cfg.use_sequence, &cfg.v2) {
            layout.v2 = Some(V2Layout::new(v2, &r)?);
        } else if cfg.use_sequence {
            layout.action = r(&format!("{V1_PREFIX}action_emb_module.weight"))?;
            let dims = cfg.encoder_dims();
            for i in 0..cfg.v1.num_layer {
                let first = r(&format!(
                    "{V1_PREFIX}transformer_encoder.layers.{i}.self_attn.in_proj_weight"
                ))?;
                layout.layers.push(first.start..first.start + dims.len());
            }
            if cfg.v1.concat_max_pool {
                layout.out_linear = Some(pair(&format!("{V1_PREFIX}out_linear"))?);
            }
        }
        for i in 0..cfg.heads.cross_layers {
            layout
                .cross
                .push(pair(&format!("{HEADS_PREFIX}cross.{i}"))?);
        }
        let mut width = cfg.feature_dim();
        for (i, &h) in cfg.heads.mlp_hidden.iter().enumerate() {
            let (w, b) = pair(&format!("{HEADS_PREFIX}mlp.{i}"))?;
            layout.mlp.push((w, b, width, h));
            width = h;
        }
        let (w, b) = pair(&format!("{HEADS_PREFIX}out"))?;
        layout.out = (w, b, width);
        if cfg.nal {
            layout.nal = Some(r(NAL_PROJ)?);
        }
        Ok(layout)
    }
}

/// Two disjoint mutable parts of `g`; `a` must end before `b` starts.
fn pair_mut(g: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&mut [f32], &mut [f32]) {
    let (lo, hi) = g.split_at_mut(b.start);
    (&mut lo[a], &mut hi[..b.len()])
}

/// Splits `range` into chunks aligned to multiples of [`CHUNK`].
fn chunks(range: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let mut start = range.start;
    std::iter::from_fn(move || {
        if start >= range.end {
            return None;
        }
        let end = ((start / CHUNK + 1) * CHUNK).min(range.end);
        let c = start..end;
        start = end;
        Some(c)
    })
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// The trainable network (see the [module docs](self)). Holds only the
/// config and the parameter layout; parameters are passed to every call.
#[derive(Clone, Debug)]
pub struct Net {
    cfg: NetConfig,
    layout: Layout,
}

impl Net {
    /// The network for `cfg` with parameters initialised from `seed` (see
    /// the [module docs](self)).
    pub fn new(cfg: NetConfig, seed: u64) -> Result<(Self, Params), TrainError> {
        let net = Self::from_config(cfg)?;
        let cfg = &net.cfg;
        let mut params = Params::for_config(cfg)?;
        let mut map = if let (true, Some(v2)) = (cfg.use_sequence, &cfg.v2) {
            RankingModel::new_random_v2(v2.clone(), cfg.heads.clone(), seed)?.to_tensors()?
        } else if cfg.use_sequence {
            RankingModel::new_random(cfg.v1.clone(), cfg.heads.clone(), seed)?.to_tensors()?
        } else {
            let heads = RankingHeads::new_random(
                cfg.heads.clone(),
                cfg.feature_dim(),
                seed.wrapping_add(0x9e37_79b9),
            )?;
            let mut map = TensorMap::new();
            heads.to_tensors(HEADS_PREFIX, &mut map);
            map
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x17E3_5EED);
        let di = cfg.v1.item_emb_dim;
        let std = 1.0 / (di as f32).sqrt();
        let items: Vec<f32> = (0..cfg.item_rows * di)
            .map(|_| normal(&mut rng) * std)
            .collect();
        map.insert_f32(ITEMS, vec![cfg.item_rows, di], items)?;
        if cfg.nal {
            let d = cfg.d_model();
            let bound = (6.0 / (d + di) as f32).sqrt();
            let w = (0..di * d)
                .map(|_| rng.random_range(-bound..=bound))
                .collect();
            map.insert_f32(NAL_PROJ, vec![di, d], w)?;
        }
        params.load_tensor_map(&map)?;
        Ok((net, params))
    }

    /// The network for `cfg` without parameters (e.g. to load a checkpoint
    /// with [`Params::from_tensor_map`]).
    pub fn from_config(cfg: NetConfig) -> Result<Self, TrainError> {
        cfg.validate()?;
        let layout = Layout::new(&cfg)?;
        Ok(Self { cfg, layout })
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Number of parameter values (the length of `Params` and of gradients).
    pub fn num_params(&self) -> usize {
        self.layout.len
    }

    /// Forward, losses and backward for examples `range` of `batch`;
    /// gradients are **added** to `grads` (the caller zeroes it). The losses
    /// are normalised by counts over the whole batch, so the gradients of
    /// disjoint ranges sum to the whole batch's.
    pub fn forward_backward(
        &self,
        params: &Params,
        batch: &Batch,
        range: Range<usize>,
        opts: &StepOptions,
        grads: &mut [f32],
        ws: &mut Workspace,
    ) -> Result<LossStats, TrainError> {
        self.check_params(params)?;
        if grads.len() != self.layout.len {
            return Err(TrainError::Params(format!(
                "gradient buffer has {} values, the network {}",
                grads.len(),
                self.layout.len
            )));
        }
        self.check_batch(batch, &range, Some(opts))?;
        let nal_on = self.cfg.nal && opts.nal_weight != 0.0;
        let n_nal = if nal_on {
            let mut n = batch.nal_pos.iter().filter(|&&p| p != NO_ITEM).count();
            if self.cfg.nal_every_position && self.cfg.v2.is_some() {
                n += v2::v2_position_targets(batch, 0..batch.len).count();
            } else if self.cfg.nal_every_position {
                let s = batch.seq_len.max(1);
                n += batch
                    .nal_seq
                    .iter()
                    .zip(&batch.seq_masked)
                    .enumerate()
                    .filter(|&(k, (&t, &m))| k % s != 0 && !m && t != NO_ITEM)
                    .count();
            }
            n
        } else {
            0
        };
        let seed = (opts.dropout && self.cfg.dropout > 0.0).then_some(opts.step_seed);
        let mut acc = Acc::default();
        for c in chunks(range) {
            self.forward_chunk(params.data(), batch, c.clone(), seed, ws)?;
            self.backward_chunk(
                params.data(),
                batch,
                c,
                opts,
                n_nal,
                seed,
                grads,
                ws,
                &mut acc,
            )?;
        }
        let bce = acc.bce as f32;
        let nal = acc.nal as f32;
        Ok(LossStats {
            bce,
            nal,
            loss: (acc.bce + f64::from(opts.nal_weight) * acc.nal) as f32,
            examples: acc.examples,
            nal_targets: acc.nal_targets,
        })
    }

    /// Logits (`range.len() × heads`) of examples `range` of `batch`, no
    /// dropout. Uses a per-thread [`Workspace`] kept between calls; see
    /// [`Net::predict_with`] to pass one.
    pub fn predict(
        &self,
        params: &Params,
        batch: &Batch,
        range: Range<usize>,
        logits: &mut [f32],
    ) -> Result<(), TrainError> {
        thread_local! {
            static WS: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
        }
        WS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut ws) => self.predict_with(params, batch, range.clone(), logits, &mut ws),
            Err(_) => self.predict_with(
                params,
                batch,
                range.clone(),
                logits,
                &mut Workspace::default(),
            ),
        })
    }

    /// [`Net::predict`] with a caller-owned workspace.
    pub fn predict_with(
        &self,
        params: &Params,
        batch: &Batch,
        range: Range<usize>,
        logits: &mut [f32],
        ws: &mut Workspace,
    ) -> Result<(), TrainError> {
        self.check_params(params)?;
        self.check_batch(batch, &range, None)?;
        let h = self.cfg.heads.heads.len();
        if logits.len() < range.len() * h {
            return Err(TrainError::Shape {
                what: "logits".into(),
                expected: range.len() * h,
                got: logits.len(),
            });
        }
        let start = range.start;
        for c in chunks(range) {
            self.forward_chunk(params.data(), batch, c.clone(), None, ws)?;
            let o = (c.start - start) * h;
            logits[o..o + c.len() * h].copy_from_slice(&ws.logits[..c.len() * h]);
        }
        Ok(())
    }

    fn check_params(&self, params: &Params) -> Result<(), TrainError> {
        if params.len() != self.layout.len {
            return Err(TrainError::Params(format!(
                "{} values given, the network has {}",
                params.len(),
                self.layout.len
            )));
        }
        Ok(())
    }

    /// Checks every length and every row index the examples of `range` use
    /// (and, in training, labels, weights and NAL rows).
    fn check_batch(
        &self,
        batch: &Batch,
        range: &Range<usize>,
        train: Option<&StepOptions>,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let bad = |m: String| Err(TrainError::Batch(m));
        let b = batch.len;
        let s = cfg.v1.seq_len;
        let rows = cfg.item_rows as u64;
        if range.start > range.end || range.end > b {
            return bad(format!(
                "range {range:?} is outside the batch of {b} examples"
            ));
        }
        let len = |name: &str, got: usize, want: usize| -> Result<(), TrainError> {
            if got == want {
                Ok(())
            } else {
                Err(TrainError::Batch(format!(
                    "`{name}` has {got} values, expected {want}"
                )))
            }
        };
        len("cand_items", batch.cand_items.len(), b)?;
        let u = cfg.heads.user_emb_dim;
        len("user_features", batch.user_features.len(), b * u)?;
        if let (true, Some(v2)) = (cfg.use_sequence, &cfg.v2) {
            self.check_batch_v2(v2, batch, range)?;
        } else if cfg.use_sequence {
            if batch.seq_len != s {
                return bad(format!("seq_len is {}, the model's is {s}", batch.seq_len));
            }
            len("seq_items", batch.seq_items.len(), b * s)?;
            len("seq_actions", batch.seq_actions.len(), b * s)?;
            len("seq_masked", batch.seq_masked.len(), b * s)?;
        }
        let arows = cfg.v1.action_rows() as u64;
        for e in range.clone() {
            if u64::from(batch.cand_items[e]) >= rows {
                return bad(format!(
                    "example {e}: candidate row {} is outside the item table ({rows} rows)",
                    batch.cand_items[e]
                ));
            }
            if let Some(i) = batch.user_features[e * u..(e + 1) * u]
                .iter()
                .position(|v| !v.is_finite())
            {
                return bad(format!("example {e}: user feature {i} is not finite"));
            }
            if !cfg.use_sequence || cfg.v2.is_some() {
                continue;
            }
            if batch.seq_masked[e * s] {
                return bad(format!(
                    "example {e}: position 0 is masked (it never may be)"
                ));
            }
            for p in 0..s {
                let k = e * s + p;
                if batch.seq_masked[k] {
                    continue;
                }
                if u64::from(batch.seq_items[k]) >= rows {
                    return bad(format!(
                        "example {e}, position {p}: item row {} is outside the item table ({rows} rows)",
                        batch.seq_items[k]
                    ));
                }
                if u64::from(batch.seq_actions[k]) >= arows {
                    return bad(format!(
                        "example {e}, position {p}: action row {} is outside the action table ({arows} rows)",
                        batch.seq_actions[k]
                    ));
                }
            }
        }
        let Some(opts) = train else { return Ok(()) };
        let h = cfg.heads.heads.len();
        len("labels", batch.labels.len(), b * h)?;
        len("weights", batch.weights.len(), b * h)?;
        let r = range.start * h..range.end * h;
        if let Some(i) = batch.labels[r.clone()].iter().position(|v| !v.is_finite()) {
            return bad(format!("label {} is not finite", r.start + i));
        }
        if let Some(i) = batch.weights[r.clone()].iter().position(|v| !v.is_finite()) {
            return bad(format!("weight {} is not finite", r.start + i));
        }
        if cfg.nal && opts.nal_weight != 0.0 {
            len("nal_pos", batch.nal_pos.len(), b * batch.nal_per_example())?;
            let check = |name: &str, v: &[u32]| match v
                .iter()
                .position(|&x| x != NO_ITEM && u64::from(x) >= rows)
            {
                Some(i) => Err(TrainError::Batch(format!(
                    "`{name}`[{i}] = {} is outside the item table ({rows} rows)",
                    v[i]
                ))),
                None => Ok(()),
            };
            check("nal_pos", &batch.nal_pos)?;
            let k = batch.nal_negatives;
            if !opts.in_batch_negatives {
                len("nal_neg", batch.nal_neg.len(), b * k)?;
                check("nal_neg", &batch.nal_neg[range.start * k..range.end * k])?;
            }
            if cfg.nal_every_position {
                let s = if cfg.v2.is_some() {
                    batch.v2_seq
                } else {
                    cfg.v1.seq_len
                };
                len("nal_seq", batch.nal_seq.len(), b * s)?;
                check("nal_seq", &batch.nal_seq[range.start * s..range.end * s])?;
                if !opts.in_batch_negatives {
                    len("nal_seq_neg", batch.nal_seq_neg.len(), b * s * k)?;
                    check(
                        "nal_seq_neg",
                        &batch.nal_seq_neg[range.start * s * k..range.end * s * k],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Dropout keys of layer `l` for the examples of `chunk`.
    fn keys(seed: u64, chunk: &Range<usize>, l: usize, keys: &mut Vec<u64>) {
        keys.clear();
        keys.extend(
            chunk
                .clone()
                .map(|e| dropout_key(seed, e as u64, l as u64, 0)),
        );
    }

    /// Forward of one chunk up to the logits (`ws.logits`), caching what the
    /// backward needs.
    fn forward_chunk(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: Range<usize>,
        drop_seed: Option<u64>,
        ws: &mut Workspace,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let lay = &self.layout;
        let m = chunk.len();
        let di = cfg.v1.item_emb_dim;
        let n = cfg.feature_dim();
        let od = cfg.seq_out_dim();
        let u = cfg.heads.user_emb_dim;
        let nc = cfg.heads.cross_layers;
        if cfg.use_sequence {
            if cfg.v2.is_some() {
                self.encode_chunk_v2(p, batch, &chunk, ws)?;
            } else {
                self.encode_chunk(p, batch, &chunk, drop_seed, ws)?;
            }
        }
        if ws.xs.len() < nc + 1 {
            ws.xs.resize_with(nc + 1, Vec::new);
        }
        if ws.ts.len() < nc {
            ws.ts.resize_with(nc, Vec::new);
        }
        let items = &p[lay.items.clone()];
        let feats = sized(&mut ws.xs[0], m * n);
        for (i, e) in chunk.clone().enumerate() {
            let row = &mut feats[i * n..(i + 1) * n];
            row[..od].copy_from_slice(&ws.comp[i * od..(i + 1) * od]);
            let c = batch.cand_items[e] as usize;
            row[od..od + di].copy_from_slice(&items[c * di..(c + 1) * di]);
            row[od + di..].copy_from_slice(&batch.user_features[e * u..(e + 1) * u]);
        }
        for (l, (w, b)) in lay.cross.iter().enumerate() {
            let (lo, hi) = ws.xs.split_at_mut(l + 1);
            let out = sized(&mut hi[0], m * n);
            let t = sized(&mut ws.ts[l], m * n);
            cross_forward(m, n, &lo[0], &lo[l], &p[w.clone()], &p[b.clone()], t, out)?;
        }
        if ws.hs.len() < lay.mlp.len() {
            ws.hs.resize_with(lay.mlp.len(), Vec::new);
        }
        for (j, (w, b, din, dout)) in lay.mlp.iter().enumerate() {
            let (lo, hi) = ws.hs.split_at_mut(j);
            let input: &[f32] = if j == 0 { &ws.xs[nc] } else { &lo[j - 1] };
            let out = sized(&mut hi[0], m * dout);
            linear_forward(
                m,
                *din,
                *dout,
                input,
                &p[w.clone()],
                Some(&p[b.clone()]),
                out,
            )?;
            relu_forward(out);
        }
        let (w, b, din) = &lay.out;
        let input: &[f32] = match lay.mlp.len() {
            0 => &ws.xs[nc],
            k => &ws.hs[k - 1],
        };
        let h = cfg.heads.heads.len();
        let logits = sized(&mut ws.logits, m * h);
        linear_forward(
            m,
            *din,
            h,
            input,
            &p[w.clone()],
            Some(&p[b.clone()]),
            logits,
        )
    }

    /// The sequence part of a chunk: packing, tokens, encoder layers and the
    /// output compression (into `ws.comp`).
    fn encode_chunk(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        drop_seed: Option<u64>,
        ws: &mut Workspace,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let lay = &self.layout;
        let s = cfg.v1.seq_len;
        let d = cfg.v1.d_model();
        let m = chunk.len();
        ws.offsets.clear();
        ws.offsets.push(0);
        ws.positions.clear();
        ws.tok_actions.clear();
        ws.tok_items.clear();
        for e in chunk.clone() {
            for q in 0..s {
                let k = e * s + q;
                if !batch.seq_masked[k] {
                    ws.positions.push(q);
                    ws.tok_actions.push(batch.seq_actions[k]);
                    ws.tok_items.push(batch.seq_items[k]);
                }
            }
            ws.offsets.push(ws.positions.len());
        }
        let rows = ws.positions.len();
        let fd = cfg.fusion_dims();
        let x0 = sized(&mut ws.x0, rows * d);
        let (items, actions) = (&p[lay.items.clone()], &p[lay.action.clone()]);
        for (i, e) in chunk.clone().enumerate() {
            let (a, b) = (ws.offsets[i], ws.offsets[i + 1]);
            early_fusion_forward(
                &fd,
                actions,
                items,
                &ws.tok_actions[a..b],
                &ws.tok_items[a..b],
                batch.cand_items[e],
                &mut x0[a * d..b * d],
            )?;
        }
        self.layers_forward(
            p,
            &cfg.encoder_dims(),
            chunk,
            drop_seed,
            &ws.x0,
            &ws.offsets,
            &mut ws.caches,
            &mut ws.keys,
            &mut ws.enc,
        )?;
        let y: &[f32] = match ws.caches.get(lay.layers.len().wrapping_sub(1)) {
            Some(c) => &c.y,
            None => &ws.x0,
        };
        let cd = cfg.compress_dims();
        let od = cd.out_dim();
        let comp = sized(&mut ws.comp, m * od);
        let pooled = sized(&mut ws.pooled, m * d);
        if ws.argmax.len() < m * d {
            ws.argmax.resize(m * d, 0);
        }
        let w_o = lay
            .out_linear
            .as_ref()
            .map(|(w, b)| (&p[w.clone()], &p[b.clone()]));
        for i in 0..m {
            let (a, b) = (ws.offsets[i], ws.offsets[i + 1]);
            compress_forward(
                &cd,
                &ws.positions[a..b],
                &y[a * d..b * d],
                w_o,
                &mut pooled[i * d..(i + 1) * d],
                &mut ws.argmax[i * d..(i + 1) * d],
                &mut comp[i * od..(i + 1) * od],
            )?;
        }
        Ok(())
    }

    /// Losses and backward of a chunk whose forward is in `ws`.
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: Range<usize>,
        opts: &StepOptions,
        n_nal: usize,
        drop_seed: Option<u64>,
        grads: &mut [f32],
        ws: &mut Workspace,
        acc: &mut Acc,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let lay = &self.layout;
        let m = chunk.len();
        let h = cfg.heads.heads.len();
        let n = cfg.feature_dim();
        let nc = cfg.heads.cross_layers;
        // Weighted BCE, normalised by the whole batch.
        let dlogits = sized(&mut ws.dlogits, m * h);
        dlogits.fill(0.0);
        let r = chunk.start * h..chunk.end * h;
        let scale = 1.0 / batch.len as f32;
        acc.bce += bce_forward_backward(
            &ws.logits[..m * h],
            &batch.labels[r.clone()],
            &batch.weights[r],
            scale,
            dlogits,
        )?;
        acc.examples += m;
        // Output layer and MLP.
        let (w, b, din) = &lay.out;
        let input: &[f32] = match lay.mlp.len() {
            0 => &ws.xs[nc],
            k => &ws.hs[k - 1],
        };
        let da = sized(&mut ws.da, m * din);
        da.fill(0.0);
        let (gw, gb) = pair_mut(grads, w.clone(), b.clone());
        linear_backward(
            m,
            *din,
            h,
            input,
            &p[w.clone()],
            dlogits,
            Some(da),
            gw,
            Some(gb),
            &mut ws.lin,
        )?;
        for (j, (w, b, din, dout)) in lay.mlp.iter().enumerate().rev() {
            relu_backward(&ws.hs[j][..m * dout], &mut ws.da[..m * dout]);
            let input: &[f32] = if j == 0 { &ws.xs[nc] } else { &ws.hs[j - 1] };
            let db = sized(&mut ws.db, m * din);
            db.fill(0.0);
            let (gw, gb) = pair_mut(grads, w.clone(), b.clone());
            linear_backward(
                m,
                *din,
                *dout,
                input,
                &p[w.clone()],
                &ws.da,
                Some(db),
                gw,
                Some(gb),
                &mut ws.lin,
            )?;
            std::mem::swap(&mut ws.da, &mut ws.db);
        }
        // Cross layers: ws.da holds the gradient of x_L.
        let dx0 = sized(&mut ws.dx0, m * n);
        dx0.fill(0.0);
        for (l, (w, b)) in lay.cross.iter().enumerate().rev() {
            let dprev = sized(&mut ws.db, m * n);
            dprev.fill(0.0);
            let (gw, gb) = pair_mut(grads, w.clone(), b.clone());
            cross_backward(
                m,
                n,
                &ws.xs[0],
                &ws.xs[l],
                &p[w.clone()],
                &ws.ts[l],
                &ws.da,
                dprev,
                &mut ws.dx0,
                gw,
                gb,
                &mut ws.dt,
                &mut ws.lin,
            )?;
            std::mem::swap(&mut ws.da, &mut ws.db);
        }
        let dfeat = &mut ws.da[..m * n];
        dfeat
            .iter_mut()
            .zip(&ws.dx0[..m * n])
            .for_each(|(a, &b)| *a += b);
        let od = cfg.seq_out_dim();
        let di = cfg.v1.item_emb_dim;
        if cfg.learn_items {
            let gi = &mut grads[lay.items.clone()];
            for (i, e) in chunk.clone().enumerate() {
                let c = batch.cand_items[e] as usize;
                let g = &ws.da[i * n + od..i * n + od + di];
                gi[c * di..(c + 1) * di]
                    .iter_mut()
                    .zip(g)
                    .for_each(|(a, &b)| *a += b);
            }
        }
        if cfg.use_sequence {
            if cfg.v2.is_some() {
                self.backward_sequence_v2(p, batch, &chunk, opts, n_nal, grads, ws, acc)?;
            } else {
                self.backward_sequence(p, batch, &chunk, opts, n_nal, drop_seed, grads, ws, acc)?;
            }
        }
        Ok(())
    }

    /// Backward of the sequence part: compression, NAL, encoder, tokens.
    /// `ws.da` holds the feature gradients.
    #[allow(clippy::too_many_arguments)]
    fn backward_sequence(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        opts: &StepOptions,
        n_nal: usize,
        drop_seed: Option<u64>,
        grads: &mut [f32],
        ws: &mut Workspace,
        acc: &mut Acc,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let lay = &self.layout;
        let m = chunk.len();
        let n = cfg.feature_dim();
        let d = cfg.v1.d_model();
        let rows = ws.positions.len();
        let cd = cfg.compress_dims();
        let od = cd.out_dim();
        let dy = sized(&mut ws.dy, rows * d);
        dy.fill(0.0);
        let w_o = lay
            .out_linear
            .as_ref()
            .map(|(w, b)| (&p[w.clone()], &p[b.clone()]));
        let dpooled = sized(&mut ws.dpooled, d);
        for i in 0..m {
            let (a, b) = (ws.offsets[i], ws.offsets[i + 1]);
            let dw_o = lay
                .out_linear
                .as_ref()
                .map(|(w, b)| pair_mut(grads, w.clone(), b.clone()));
            compress_backward(
                &cd,
                &ws.positions[a..b],
                w_o,
                &ws.pooled[i * d..(i + 1) * d],
                &ws.argmax[i * d..(i + 1) * d],
                &ws.da[i * n..i * n + od],
                &mut dy[a * d..b * d],
                dw_o,
                &mut ws.lin,
                dpooled,
            )?;
        }
        let nal = lay
            .nal
            .clone()
            .filter(|_| n_nal > 0 && opts.nal_weight != 0.0);
        let every = cfg.nal_every_position;
        if let (Some(proj), false) = (&nal, every) {
            // The newest row of each example, from this (serving) pass.
            let y: &[f32] = match ws.caches.get(lay.layers.len().wrapping_sub(1)) {
                Some(c) => &c.y,
                None => &ws.x0,
            };
            let u = sized(&mut ws.u, m * d);
            for i in 0..m {
                let a = ws.offsets[i];
                u[i * d..(i + 1) * d].copy_from_slice(&y[a * d..(a + 1) * d]);
            }
            self.nal_terms(
                p,
                batch,
                chunk,
                opts,
                n_nal,
                proj.clone(),
                false,
                grads,
                ws,
                acc,
            )?;
            for i in 0..m {
                let a = ws.offsets[i];
                ws.dy[a * d..(a + 1) * d]
                    .iter_mut()
                    .zip(&ws.du[i * d..(i + 1) * d])
                    .for_each(|(x, &g)| *x += g);
            }
        }
        // Encoder layers, last to first; ws.dy ends as the token gradients.
        self.layers_backward(
            p,
            &cfg.encoder_dims(),
            chunk,
            drop_seed,
            &ws.x0,
            &ws.offsets,
            &ws.caches,
            &mut ws.dy,
            &mut ws.dx,
            &mut ws.keys,
            &mut ws.enc,
            grads,
        )?;
        if let (Some(proj), true) = (nal, every) {
            self.causal_nal(
                p, batch, chunk, opts, n_nal, proj, drop_seed, grads, ws, acc,
            )?;
        }
        let fd = cfg.fusion_dims();
        let (gi, ga) = pair_mut(grads, lay.items.clone(), lay.action.clone());
        let mut gi = cfg.learn_items.then_some(gi);
        for (i, e) in chunk.clone().enumerate() {
            let (a, b) = (ws.offsets[i], ws.offsets[i + 1]);
            early_fusion_backward(
                &fd,
                Some(&mut *ga),
                gi.as_deref_mut(),
                &ws.tok_actions[a..b],
                &ws.tok_items[a..b],
                batch.cand_items[e],
                &ws.dy[a * d..b * d],
            )?;
        }
        Ok(())
    }

    /// The encoder layers over the token rows `x0` of the sequences of
    /// `offsets`, each layer's output in `caches[l].y`.
    #[allow(clippy::too_many_arguments)]
    fn layers_forward(
        &self,
        p: &[f32],
        dims: &EncoderDims,
        chunk: &Range<usize>,
        drop_seed: Option<u64>,
        x0: &[f32],
        offsets: &[usize],
        caches: &mut Vec<EncoderCache>,
        keys: &mut Vec<u64>,
        enc: &mut EncoderScratch,
    ) -> Result<(), TrainError> {
        let layers = &self.layout.layers;
        if caches.len() < layers.len() {
            caches.resize_with(layers.len(), EncoderCache::default);
        }
        for (l, range) in layers.iter().enumerate() {
            let w = EncoderWeights::split(&p[range.clone()], dims)?;
            if let Some(seed) = drop_seed {
                Self::keys(seed, chunk, l, keys);
            }
            let drop = drop_seed.map(|_| LayerDropout {
                p: self.cfg.dropout,
                keys,
            });
            let (prev, cur) = caches.split_at_mut(l);
            let input: &[f32] = if l == 0 { x0 } else { &prev[l - 1].y };
            encoder_layer_forward(dims, offsets, input, None, &w, drop, &mut cur[0], enc)?;
        }
        Ok(())
    }

    /// Backward of [`Net::layers_forward`]: `dy` holds the gradient of the
    /// last layer's output and ends as the gradient of `x0` (`dx` is
    /// scratch); parameter gradients accumulate into `grads`.
    #[allow(clippy::too_many_arguments)]
    fn layers_backward(
        &self,
        p: &[f32],
        dims: &EncoderDims,
        chunk: &Range<usize>,
        drop_seed: Option<u64>,
        x0: &[f32],
        offsets: &[usize],
        caches: &[EncoderCache],
        dy: &mut Vec<f32>,
        dx: &mut Vec<f32>,
        keys: &mut Vec<u64>,
        enc: &mut EncoderScratch,
        grads: &mut [f32],
    ) -> Result<(), TrainError> {
        let rows = offsets.last().copied().unwrap_or(0) * dims.d;
        for (l, range) in self.layout.layers.iter().enumerate().rev() {
            let w = EncoderWeights::split(&p[range.clone()], dims)?;
            if let Some(seed) = drop_seed {
                Self::keys(seed, chunk, l, keys);
            }
            let drop = drop_seed.map(|_| LayerDropout {
                p: self.cfg.dropout,
                keys,
            });
            let dxl = sized(dx, rows);
            dxl.fill(0.0);
            let input: &[f32] = if l == 0 { x0 } else { &caches[l - 1].y };
            let mut g = EncoderGrads::split(&mut grads[range.clone()], dims)?;
            encoder_layer_backward(
                dims, offsets, input, &w, drop, &caches[l], dy, dxl, &mut g, enc,
            )?;
            std::mem::swap(dy, dx);
        }
        Ok(())
    }
}

/// Loss sums of one call.
#[derive(Default)]
struct Acc {
    bce: f64,
    nal: f64,
    examples: usize,
    nal_targets: usize,
}

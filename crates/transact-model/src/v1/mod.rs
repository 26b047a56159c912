//! TransAct V1: the realtime-sequence encoder (model-spec §2), on the CPU.
//!
//! Two forwards compute the same function:
//!
//! - [`TransActV1::forward_request`], the serving path: one user sequence
//!   shared by `B` candidates. It packs the unmasked positions once, splits
//!   the first layer into a user part (computed once per request) and a
//!   candidate part (once per candidate), and runs the remaining layers on
//!   large batched GEMMs split over the rayon pool (see below).
//! - [`TransActV1::forward_batch_reference`], the oracle: every example is
//!   its own sequence, computed with plain loops, additive `-inf` masks and
//!   no de-duplication. The parity check against the reference PyTorch
//!   module runs through it.
//!
//! Weights use the reference module's parameter names (under the prefix
//! `v1.` in this project's files), see [`TransActV1::to_tensors`] and
//! [`TransActV1::from_reference_state_dict`].
//!
//! # The de-duplicated forward
//!
//! One request holds one user sequence and `B` candidates. What it shares:
//!
//! 1. **Packing.** The mask is the same for every candidate, masked keys are
//!    never attended to and masked output rows are zero, so the encoder runs
//!    on the `S_e` unmasked positions only; outputs are scattered back.
//! 2. **First layer, input projection.** With early fusion a token is
//!    `[x_t ; e_c]`, so `W·[x_t ; e_c] + b = W_x·x_t + (W_c·e_c + b)`: the
//!    user part `U = X·W_xᵀ` once per request, the candidate part once per
//!    candidate.
//! 3. **First layer, attention.** Per head, the score of query `t` and key
//!    `s` is `(uq_t + cq)·(uk_s + ck)`. The terms `uq_t·ck` and `cq·ck` do not
//!    depend on `s`, so the softmax over `s` drops them: the probabilities are
//!    `softmax_s(A[t,s] + r[s])` with `A = Uq·Ukᵀ` shared by all candidates and
//!    `r = cq·Ukᵀ` one vector per candidate (`ck` is not needed at all). Hence
//!    `P[t,s] = E[t,s]·w[s] / Σ_s E[t,s]·w[s]` with `E = exp(A - rowmax)` (per
//!    request) and `w = exp(r - max)` (per candidate), and since probability
//!    rows sum to 1, `P·(Uv + 1·cvᵀ) = P·Uv + cv`. The numerators and
//!    denominators for a chunk of candidates then come out of one GEMM against
//!    the per-request table `G[(t, j), s] = E[t,s]·Uv[s,j]` (plus a column of
//!    `E` for the denominator): no per-candidate exponentials over `S_e²`.
//!    Should a denominator underflow (extreme scores), that row is recomputed
//!    directly. The tables pay off from about two dozen candidates on; smaller
//!    requests (and sequences whose tables would be too large) run the first
//!    layer per token like the later ones, keeping only the packing.
//! 4. **Later layers** are per token: candidates are processed in chunks of
//!    `≈ 1,500` token rows so every projection is one large GEMM, chunks are
//!    spread over the rayon pool, and each chunk's GEMMs run single-threaded.
//! 5. **Shortcuts.** Without max-pool, the last layer computes attention
//!    outputs and the FFN only for the packed rows below `K`; without early
//!    fusion the tokens do not depend on the candidate, so the sequence is
//!    encoded once and its output copied to every candidate.
//! 6. **No allocation per request** in steady state: scratch buffers come from
//!    pools owned by the model and only grow. (The `gemm` crate still
//!    allocates its small packing buffers inside each call.)
//!
//! Weights are re-laid out once at load: the query rows of
//! every `in_proj` are pre-scaled by `1/sqrt(d/h)`, the first layer's
//! `in_proj` is split into its user and candidate columns, and every
//! `out_proj` is split into per-head column blocks, so that every operand of
//! every GEMM is contiguous.

mod fast;
mod io;
mod layers;
mod packing;
mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_io;

pub use io::{CONFIG_KEY, TENSOR_PREFIX};
pub use packing::{ActionRows, PackedRequest};

use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{ModelError, V1Config};

/// One request for [`TransActV1::forward_request`]: a user's realtime
/// sequence (newest first) and the `B` candidates to score against it.
///
/// A sequence shorter than `seq_len` is padded at the tail: the missing
/// positions behave like padding actions (id `-1`) with zero item
/// embeddings.
#[derive(Clone, Copy, Debug)]
pub struct V1Request<'a> {
    /// `n ≤ seq_len` raw action ids, newest first; `-1` is padding.
    pub action_types: &'a [i64],
    /// `n × item_emb_dim` item embeddings of the actions.
    pub item_embeddings: &'a [f32],
    /// `n` action timestamps in ms.
    pub action_times_ms: &'a [i64],
    /// The request's timestamp in ms.
    pub request_time_ms: i64,
    /// `B × item_emb_dim` candidate item embeddings (`B ≥ 1`).
    pub candidates: &'a [f32],
}

/// A batch of independent examples for [`TransActV1::forward_batch_reference`],
/// laid out like the reference module's inputs (every example carries its
/// own sequence).
#[derive(Clone, Copy, Debug)]
pub struct V1Batch<'a> {
    /// Number of examples `B`.
    pub batch: usize,
    /// Sequence length `S` of the inputs (truncated to the model's
    /// `seq_len` when longer, padded at the tail when shorter).
    pub seq: usize,
    /// `B × S` raw action ids; `-1` is padding.
    pub action_types: &'a [i64],
    /// `B × S × item_emb_dim` item embeddings.
    pub item_embeddings: &'a [f32],
    /// `B × S` action timestamps in ms.
    pub action_times_ms: &'a [i64],
    /// `B` request timestamps in ms.
    pub request_times_ms: &'a [i64],
    /// `B × item_emb_dim` candidate item embeddings.
    pub candidates: &'a [f32],
}

/// What the encoder returns at masked positions (model-spec §2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskedRows {
    /// Masked rows of the encoder output are zero: this project's rule, and
    /// what the reference module returns in inference mode.
    #[default]
    Zero,
    /// Masked rows are computed like any other row (they attend to the
    /// unmasked positions): the reference module in training mode, when
    /// PyTorch does not take its packed fast path.
    Computed,
}

/// Weights of one post-norm encoder layer, in PyTorch's layouts
/// (`Linear` weights are `[out, in]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EncoderLayer {
    /// `[3d × d]`: query, key and value rows, in that order.
    pub(crate) in_proj_weight: Vec<f32>,
    /// `[3d]`.
    pub(crate) in_proj_bias: Vec<f32>,
    /// `[d × d]`.
    pub(crate) out_proj_weight: Vec<f32>,
    /// `[d]`.
    pub(crate) out_proj_bias: Vec<f32>,
    /// `[ff × d]`.
    pub(crate) linear1_weight: Vec<f32>,
    /// `[ff]`.
    pub(crate) linear1_bias: Vec<f32>,
    /// `[d × ff]`.
    pub(crate) linear2_weight: Vec<f32>,
    /// `[d]`.
    pub(crate) linear2_bias: Vec<f32>,
    /// LayerNorm after attention: gain `[d]`.
    pub(crate) norm1_weight: Vec<f32>,
    /// LayerNorm after attention: bias `[d]`.
    pub(crate) norm1_bias: Vec<f32>,
    /// LayerNorm after the FFN: gain `[d]`.
    pub(crate) norm2_weight: Vec<f32>,
    /// LayerNorm after the FFN: bias `[d]`.
    pub(crate) norm2_bias: Vec<f32>,
}

/// The learned parameters of the model, under the reference's structure.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Params {
    /// `[action_rows × d_act]`; row 0 is the padding row.
    pub(crate) action_emb: Vec<f32>,
    /// The encoder layers.
    pub(crate) layers: Vec<EncoderLayer>,
    /// `out_linear` (`[d × d]` weight, `[d]` bias), present iff `concat_max_pool`.
    pub(crate) out_linear: Option<(Vec<f32>, Vec<f32>)>,
}

/// TransAct V1: config, weights, and the derived copies the fast path uses.
///
/// Build one with [`TransActV1::new_random`], [`TransActV1::load`],
/// [`TransActV1::from_tensors`] or [`TransActV1::from_reference_state_dict`].
/// The model is `Send + Sync`; concurrent requests share it.
#[derive(Debug)]
pub struct TransActV1 {
    cfg: V1Config,
    /// The id → row lookup of the vocabulary.
    action_rows: ActionRows,
    params: Params,
    fast: fast::FastWeights,
    /// Smallest `B` for which the first layer runs factored (below it the
    /// per-request tables cost more than they save). Tests lower it to cover
    /// both paths.
    pub(crate) factored_min_candidates: usize,
    request_pool: Pool<fast::RequestScratch>,
    chunk_pool: Pool<fast::ChunkScratch>,
}

impl Clone for TransActV1 {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            action_rows: self.action_rows.clone(),
            params: self.params.clone(),
            fast: self.fast.clone(),
            factored_min_candidates: self.factored_min_candidates,
            request_pool: Pool::default(),
            chunk_pool: Pool::default(),
        }
    }
}

impl PartialEq for TransActV1 {
    /// Same config and same weights.
    fn eq(&self, other: &Self) -> bool {
        self.cfg == other.cfg && self.params == other.params
    }
}

impl TransActV1 {
    /// A model with PyTorch-like random initialisation, reproducible from
    /// `seed`: action embedding `N(0, 1)` with the padding row zeroed;
    /// `in_proj` Xavier-uniform with zero bias; `out_proj` uniform
    /// `±1/sqrt(d)` with zero bias; `linear1`, `linear2` and `out_linear`
    /// uniform `±1/sqrt(fan_in)` (weights and biases); LayerNorm gain 1, bias 0.
    pub fn new_random(cfg: V1Config, seed: u64) -> Result<Self, ModelError> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = cfg.d_model();
        let ff = cfg.dim_feedforward;
        let mut action_emb: Vec<f32> = (0..cfg.action_rows() * cfg.action_emb_dim)
            .map(|_| normal(&mut rng))
            .collect();
        action_emb
            .iter_mut()
            .take(cfg.action_emb_dim)
            .for_each(|v| *v = 0.0);
        let uniform = |rng: &mut ChaCha8Rng, n: usize, bound: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
        };
        let mut layers = Vec::with_capacity(cfg.num_layer);
        for _ in 0..cfg.num_layer {
            let xavier = (6.0 / (d + 3 * d) as f32).sqrt();
            let lin_d = 1.0 / (d as f32).sqrt();
            let lin_ff = 1.0 / (ff as f32).sqrt();
            layers.push(EncoderLayer {
                in_proj_weight: uniform(&mut rng, 3 * d * d, xavier),
                in_proj_bias: vec![0.0; 3 * d],
                out_proj_weight: uniform(&mut rng, d * d, lin_d),
                out_proj_bias: vec![0.0; d],
                linear1_weight: uniform(&mut rng, ff * d, lin_d),
                linear1_bias: uniform(&mut rng, ff, lin_d),
                linear2_weight: uniform(&mut rng, d * ff, lin_ff),
                linear2_bias: uniform(&mut rng, d, lin_ff),
                norm1_weight: vec![1.0; d],
                norm1_bias: vec![0.0; d],
                norm2_weight: vec![1.0; d],
                norm2_bias: vec![0.0; d],
            });
        }
        let out_linear = cfg.concat_max_pool.then(|| {
            let b = 1.0 / (d as f32).sqrt();
            (uniform(&mut rng, d * d, b), uniform(&mut rng, d, b))
        });
        Self::from_params(
            cfg,
            Params {
                action_emb,
                layers,
                out_linear,
            },
        )
    }

    /// Assembles a model from checked parameters and derives the fast path's weights.
    pub(crate) fn from_params(cfg: V1Config, params: Params) -> Result<Self, ModelError> {
        cfg.validate()?;
        let action_rows = ActionRows::new(&cfg);
        let fast = fast::FastWeights::derive(&cfg, &params)?;
        Ok(Self {
            cfg,
            action_rows,
            params,
            fast,
            factored_min_candidates: fast::FACTORED_MIN_CANDIDATES,
            request_pool: Pool::default(),
            chunk_pool: Pool::default(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &V1Config {
        &self.cfg
    }

    /// Output width per candidate, `(K + 1)·d` (or `K·d` without max-pool).
    pub fn output_dim(&self) -> usize {
        self.cfg.output_dim()
    }

    /// The embedding row of raw action id `id` (see [`ActionRows::row`]).
    fn action_row(&self, id: i64, position: usize) -> Result<usize, ModelError> {
        self.action_rows.row(id, position)
    }

    /// The vocabulary's id → row lookup.
    pub fn action_rows(&self) -> &ActionRows {
        &self.action_rows
    }

    /// The action embedding row `row` (`d_act` values).
    fn action_embedding(&self, row: usize) -> &[f32] {
        let da = self.cfg.action_emb_dim;
        self.params
            .action_emb
            .get(row * da..(row + 1) * da)
            .unwrap_or(&[])
    }
}

/// Whether a position is masked (model-spec §2): padding (`row == 0`), or
/// an action with `request_time - t < window`, except at position 0, which
/// is never masked. `window = 0` is the inference rule (only future actions).
/// The difference is taken in i128 so that extreme timestamps cannot wrap.
/// Every device and the trainer mask through this one function.
#[inline]
pub fn is_masked(position: usize, row: usize, request_time: i64, t: i64, window: i64) -> bool {
    position != 0 && (row == 0 || (i128::from(request_time) - i128::from(t)) < i128::from(window))
}

/// Rejects a negative time window.
fn check_window(window: i64) -> Result<(), ModelError> {
    if window < 0 {
        Err(ModelError::BadInput {
            name: "time_window_ms".into(),
            detail: format!("{window} is negative (0 is the inference rule)"),
        })
    } else {
        Ok(())
    }
}

/// A kernel error: only reachable through a bug, since every size is
/// checked before the kernels run. Reported, never panicked on.
fn kernel_error(e: transact_embed::EmbedError) -> ModelError {
    ModelError::BadInput {
        name: "internal kernel call".into(),
        detail: e.to_string(),
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// A small pool of reusable scratch buffers: requests take one and give it
/// back, so the steady state allocates nothing. Clones start empty.
struct Pool<T> {
    items: Mutex<Vec<T>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
        }
    }
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl<T: Default> Pool<T> {
    /// Most buffers kept; more concurrent users than this allocate afresh.
    const CAP: usize = 32;

    fn take(&self) -> T {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items.pop().unwrap_or_default()
    }

    fn put(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() < Self::CAP {
            items.push(item);
        }
    }
}

//! The V2 encoder block (Pinterest's fused "SKUT" block) and its fast,
//! batched CPU forward.
//!
//! # Math
//!
//! One head, no biases, no output projection, LayerNorm without gain or
//! bias, post-norm:
//!
//! ```text
//! x1 = LN(x + softmax((x Wq)(x Wk)ᵀ / √d + M_pad + M_causal) (x Wv))
//! y  = LN(x1 + relu(x1 W1) W2)
//! ```
//!
//! # Weight layout
//!
//! Every weight multiplies from the right: `Wq`, `Wk`, `Wv` are `[d × d]`,
//! `W1` is `[d × f]` and `W2` is `[f × d]`, each row-major with the *input*
//! dimension first, so `x W` is the plain product of `x [rows × d]` and `W`.
//! (This is the transpose of a PyTorch `Linear` weight.)
//!
//! # How the fast path works
//!
//! - `(x Wq)(x Wk)ᵀ = x (Wq Wkᵀ) xᵀ`: the block keeps `A = Wq Wkᵀ / √d`
//!   (computed once when the weights are set), so one `[d × d]` projection
//!   gives the queries and the keys are the block input itself. The
//!   projections and the FFN run as large GEMMs over a chunk of candidates
//!   (`chunk · S` rows).
//! - Attention runs per candidate in query tiles; with the causal mask a
//!   tile only multiplies against keys up to its last row, so most of the
//!   upper triangle is never computed, and padded keys and queries are
//!   skipped altogether. The softmax is fused with both masks (the scale is
//!   already in `A`).
//! - Chunks are spread over the rayon pool; GEMMs inside a chunk are
//!   single-threaded. Scratch buffers live in thread-local storage and are
//!   reused from call to call.
//! - Two code paths, picked at run time: on CPUs with AVX-512 (and `d`, `f`
//!   multiples of 16) every product runs on this crate's register-blocked
//!   kernels (`v2/avx512.rs`, attention in blocks of 6 query rows); elsewhere
//!   the GEMMs go through the `gemm` crate (attention in tiles of 32 query
//!   rows) and the element-wise code is compiled for AVX2 or the baseline.
//!   Both are tested against the naive oracle on the same inputs.

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use transact_embed::EmbedError;
use transact_embed::kernels::{Par, RhsLayout, matmul};

use super::math::{add_layer_norm_rows, layer_norm_rows, softmax_prefix};
use crate::weights::Tensor;
use crate::{ModelError, TensorMap};

/// Query rows per attention tile.
const QUERY_TILE: usize = 32;

/// Target number of token rows (`chunk · S`) per chunk of candidates.
const CHUNK_ROWS: usize = 1024;

/// One V2 encoder block: its five weight matrices (layout in the
/// [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct V2Block {
    d: usize,
    f: usize,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    /// `Wq Wkᵀ / √d`, derived from `wq` and `wk`.
    qk: Vec<f32>,
}

/// Xavier-uniform values for a `[fan_in × fan_out]` matrix.
pub(crate) fn xavier(rng: &mut ChaCha8Rng, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..fan_in * fan_out)
        .map(|_| rng.random_range(-bound..=bound))
        .collect()
}

/// Stores an f32 tensor whose length is known to match its shape.
pub(crate) fn put(map: &mut TensorMap, name: String, shape: Vec<usize>, data: &[f32]) {
    map.tensors.insert(
        name,
        Tensor::F32 {
            shape,
            data: data.to_vec(),
        },
    );
}

/// Maps a kernel error (a size mismatch the caller's checks should have
/// caught) to this crate's error type.
pub(crate) fn kernel_err(e: EmbedError) -> ModelError {
    ModelError::BadInput {
        name: "v2 kernel".into(),
        detail: e.to_string(),
    }
}

impl V2Block {
    /// A block with Xavier-uniform weights drawn from `seed`.
    ///
    /// Fails if `d_model` or `dim_feedforward` is 0.
    pub fn new_random(
        d_model: usize,
        dim_feedforward: usize,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, f) = (d_model, dim_feedforward);
        let wq = xavier(&mut rng, d, d);
        let wk = xavier(&mut rng, d, d);
        let wv = xavier(&mut rng, d, d);
        let w1 = xavier(&mut rng, d, f);
        let w2 = xavier(&mut rng, f, d);
        Self::from_weights(d, f, wq, wk, wv, w1, w2)
    }

    /// A block from explicit weights (`wq`, `wk`, `wv`: `[d × d]`, `w1`:
    /// `[d × f]`, `w2`: `[f × d]`, input dimension first).
    ///
    /// Fails on a zero dimension, a wrong length or a non-finite weight.
    #[allow(clippy::too_many_arguments)]
    pub fn from_weights(
        d_model: usize,
        dim_feedforward: usize,
        wq: Vec<f32>,
        wk: Vec<f32>,
        wv: Vec<f32>,
        w1: Vec<f32>,
        w2: Vec<f32>,
    ) -> Result<Self, ModelError> {
        let (d, f) = (d_model, dim_feedforward);
        if d == 0 || f == 0 {
            return Err(ModelError::InvalidConfig(
                "V2 block: d_model and dim_feedforward must be positive".into(),
            ));
        }
        for (name, w, len) in [
            ("wq", &wq, d * d),
            ("wk", &wk, d * d),
            ("wv", &wv, d * d),
            ("w1", &w1, d * f),
            ("w2", &w2, f * d),
        ] {
            ModelError::check_len(name, len, w.len())?;
            ModelError::check_finite(name, w)?;
        }
        // A = Wq Wkᵀ / √d: A[i][j] = Σ_c Wq[i][c] Wk[j][c] / √d.
        let mut qk = vec![0.0f32; d * d];
        matmul(d, d, d, &wq, &wk, RhsLayout::NxK, &mut qk, false, Par::Seq).map_err(kernel_err)?;
        let scale = 1.0 / (d as f32).sqrt();
        qk.iter_mut().for_each(|v| *v *= scale);
        Ok(Self {
            d,
            f,
            wq,
            wk,
            wv,
            w1,
            w2,
            qk,
        })
    }

    /// Model width `d`.
    pub fn d_model(&self) -> usize {
        self.d
    }

    /// FFN hidden width `f`.
    pub fn dim_feedforward(&self) -> usize {
        self.f
    }

    /// `Wq`, `[d × d]`, input dimension first.
    pub fn wq(&self) -> &[f32] {
        &self.wq
    }

    /// `Wk`, `[d × d]`, input dimension first.
    pub fn wk(&self) -> &[f32] {
        &self.wk
    }

    /// `Wv`, `[d × d]`, input dimension first.
    pub fn wv(&self) -> &[f32] {
        &self.wv
    }

    /// `W1`, `[d × f]`, input dimension first.
    pub fn w1(&self) -> &[f32] {
        &self.w1
    }

    /// `W2`, `[f × d]`, input dimension first.
    pub fn w2(&self) -> &[f32] {
        &self.w2
    }

    /// The folded score matrix `Wq Wkᵀ / √d`, `[d × d]`.
    pub(crate) fn qk(&self) -> &[f32] {
        &self.qk
    }

    /// Writes the weights as `{prefix}wq|wk|wv` (`[d, d]`), `{prefix}w1`
    /// (`[d, f]`) and `{prefix}w2` (`[f, d]`).
    pub fn to_tensors(&self, prefix: &str, map: &mut TensorMap) {
        let (d, f) = (self.d, self.f);
        put(map, format!("{prefix}wq"), vec![d, d], &self.wq);
        put(map, format!("{prefix}wk"), vec![d, d], &self.wk);
        put(map, format!("{prefix}wv"), vec![d, d], &self.wv);
        put(map, format!("{prefix}w1"), vec![d, f], &self.w1);
        put(map, format!("{prefix}w2"), vec![f, d], &self.w2);
    }

    /// Reads the weights written by [`V2Block::to_tensors`], checking shapes.
    pub fn from_tensors(
        map: &TensorMap,
        prefix: &str,
        d_model: usize,
        dim_feedforward: usize,
    ) -> Result<Self, ModelError> {
        let (d, f) = (d_model, dim_feedforward);
        let get =
            |n: &str, shape: &[usize]| map.f32(&format!("{prefix}{n}"), shape).map(<[f32]>::to_vec);
        Self::from_weights(
            d,
            f,
            get("wq", &[d, d])?,
            get("wk", &[d, d])?,
            get("wv", &[d, d])?,
            get("w1", &[d, f])?,
            get("w2", &[f, d])?,
        )
    }

    /// Runs this block over a batch, in place.
    ///
    /// `x` is `[batch × seq × d]`: row `b` holds `lens[b]` valid tokens at
    /// positions `0..lens[b]` (oldest first) and padding after. Keys past
    /// `lens[b]` are never attended to, and with `causal` token `t` attends
    /// to tokens `s ≤ t` only. On return the padded rows are zero. A row
    /// with `lens[b] == 0` is computed as a one-token row (position 0, with
    /// whatever values the caller left there).
    ///
    /// Fails if the lengths disagree, a `lens` entry exceeds `seq`, or `eps`
    /// is not a positive number. Non-finite values in the valid rows of `x`
    /// propagate to the output (the encoder checks its inputs).
    pub fn block_forward(
        &self,
        x: &mut [f32],
        batch: usize,
        seq: usize,
        lens: &[usize],
        causal: bool,
        eps: f32,
    ) -> Result<(), ModelError> {
        blocks_forward(std::slice::from_ref(self), x, batch, seq, lens, causal, eps)
    }
}

/// Runs a stack of blocks (each after the other) over a batch, in place;
/// the same contract as [`V2Block::block_forward`].
///
/// Faster than calling the blocks one by one: each chunk of candidates goes
/// through every block while it is still in cache.
pub fn blocks_forward(
    blocks: &[V2Block],
    x: &mut [f32],
    batch: usize,
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
) -> Result<(), ModelError> {
    blocks_forward_with(blocks, x, batch, seq, lens, causal, eps, false)
}

/// [`blocks_forward`], optionally restricted to the portable code path
/// (GEMMs through the `gemm` crate) even where AVX-512 kernels could run:
/// lets the tests check both paths on one machine.
#[allow(clippy::too_many_arguments)]
pub(crate) fn blocks_forward_with(
    blocks: &[V2Block],
    x: &mut [f32],
    batch: usize,
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    portable: bool,
) -> Result<(), ModelError> {
    let Some(first) = blocks.first() else {
        return Ok(());
    };
    let d = first.d;
    if let Some(i) = blocks.iter().position(|b| b.d != d) {
        return Err(ModelError::InvalidConfig(format!(
            "V2 block {i} has width {}, block 0 has {d}",
            blocks[i].d
        )));
    }
    check_batch(x, batch, seq, d, lens, eps)?;
    if batch == 0 {
        return Ok(());
    }
    let cs = chunk_size(batch, seq);
    let run = |(xc, lc): (&mut [f32], &[usize])| {
        with_scratch(|s| run_chunk(blocks, xc, seq, lc, causal, eps, s, portable))
            .map_err(kernel_err)
    };
    if cs >= batch {
        run((x, lens))
    } else {
        x.par_chunks_mut(cs * seq * d)
            .zip(lens.par_chunks(cs))
            .try_for_each(run)
    }
}

/// Checks the shape arguments of a batched block call.
pub(crate) fn check_batch(
    x: &[f32],
    batch: usize,
    seq: usize,
    d: usize,
    lens: &[usize],
    eps: f32,
) -> Result<(), ModelError> {
    ModelError::check_len("x", batch * seq * d, x.len())?;
    ModelError::check_len("lens", batch, lens.len())?;
    if batch > 0 && seq == 0 {
        return Err(ModelError::BadInput {
            name: "seq".into(),
            detail: "must be at least 1".into(),
        });
    }
    if let Some(b) = lens.iter().position(|&l| l > seq) {
        return Err(ModelError::BadInput {
            name: "lens".into(),
            detail: format!("lens[{b}] = {} exceeds the sequence length {seq}", lens[b]),
        });
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(ModelError::BadInput {
            name: "eps".into(),
            detail: format!("LayerNorm epsilon must be a positive number, got {eps}"),
        });
    }
    Ok(())
}

/// Candidates per chunk: about [`CHUNK_ROWS`] token rows, but small enough
/// that every thread gets several chunks.
pub(crate) fn chunk_size(batch: usize, seq: usize) -> usize {
    let by_rows = (CHUNK_ROWS / seq.max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    let by_threads = batch.div_ceil(4 * threads).max(1);
    by_rows.min(by_threads)
}

/// Reusable per-thread buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Queries `x A`, `[rows × d]`.
    pub(crate) qp: Vec<f32>,
    /// Values `x Wv`, `[rows × d]`.
    pub(crate) v: Vec<f32>,
    /// FFN hidden activations, `[rows × f]`.
    pub(crate) h: Vec<f32>,
    /// Attention scores of one query tile, `[tile × S]`.
    pub(crate) scores: Vec<f32>,
    /// Attention output of one candidate, `[S × d]`.
    pub(crate) att: Vec<f32>,
    /// One candidate's block input transposed, `[d × S]` (AVX-512 path).
    pub(crate) xt: Vec<f32>,
    /// Token inputs of a chunk (used by the encoder).
    pub(crate) x: Vec<f32>,
    /// Max-pool rows of a chunk (used by the encoder).
    pub(crate) pool: Vec<f32>,
}

/// Grows `buf` to at least `n` values (never shrinks; contents unspecified).
pub(crate) fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is already in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Runs every block over one chunk of candidates (`lens.len()` of them):
/// with the AVX-512 kernels where the CPU and the shapes allow (and
/// `portable` is false), otherwise with the `gemm` crate and element-wise
/// code compiled for the widest instruction set the CPU has.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_chunk(
    blocks: &[V2Block],
    x: &mut [f32],
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    s: &mut Scratch,
    portable: bool,
) -> Result<(), EmbedError> {
    #[cfg(target_arch = "x86_64")]
    {
        if !portable && super::avx512::available() && super::avx512::supports(blocks) {
            // SAFETY: `available` checked AVX-512F, AVX2 and FMA just above.
            return unsafe { super::avx512::run_chunk(blocks, x, seq, lens, causal, eps, s) };
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports every feature the function enables (checked just above).
            return unsafe { run_chunk_avx512(blocks, x, seq, lens, causal, eps, s) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { run_chunk_avx2(blocks, x, seq, lens, causal, eps, s) };
        }
    }
    run_chunk_impl(blocks, x, seq, lens, causal, eps, s)
}

#[cfg(target_arch = "x86_64")]
/// The portable driver compiled for AVX-512.
///
/// # Safety
///
/// The CPU must have AVX-512F, AVX-512VL, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_chunk_avx512(
    blocks: &[V2Block],
    x: &mut [f32],
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    s: &mut Scratch,
) -> Result<(), EmbedError> {
    run_chunk_impl(blocks, x, seq, lens, causal, eps, s)
}

#[cfg(target_arch = "x86_64")]
/// The portable driver compiled for AVX2.
///
/// # Safety
///
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_chunk_avx2(
    blocks: &[V2Block],
    x: &mut [f32],
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    s: &mut Scratch,
) -> Result<(), EmbedError> {
    run_chunk_impl(blocks, x, seq, lens, causal, eps, s)
}

/// The chunk driver; `x` is `[lens.len() × seq × d]`, every `lens[b] ≤ seq`.
#[inline(always)]
fn run_chunk_impl(
    blocks: &[V2Block],
    x: &mut [f32],
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
    s: &mut Scratch,
) -> Result<(), EmbedError> {
    let Some(first) = blocks.first() else {
        return Ok(());
    };
    let d = first.d;
    let cand = lens.len();
    let rows = cand * seq;
    let cand_len = seq * d;
    // Padded rows start (and stay) at zero: with no biases anywhere, a zero
    // row projects to zero and the FFN keeps it zero.
    for (xc, &len) in x.chunks_exact_mut(cand_len).zip(lens) {
        xc[len.max(1) * d..].fill(0.0);
    }
    for blk in blocks {
        let f = blk.f;
        let qp = grow(&mut s.qp, rows * d);
        matmul(rows, d, d, x, &blk.qk, RhsLayout::KxN, qp, false, Par::Seq)?;
        let v = grow(&mut s.v, rows * d);
        matmul(rows, d, d, x, &blk.wv, RhsLayout::KxN, v, false, Par::Seq)?;
        let scores = grow(&mut s.scores, QUERY_TILE * seq);
        let att = grow(&mut s.att, seq * d);
        for (b, &len) in lens.iter().enumerate() {
            let n = len.max(1);
            let base = b * cand_len;
            let xb = &x[base..base + n * d];
            let qb = &qp[base..base + n * d];
            let vb = &v[base..base + n * d];
            let mut i0 = 0;
            while i0 < n {
                let i1 = (i0 + QUERY_TILE).min(n);
                let m = i1 - i0;
                let kend = if causal { i1 } else { n };
                let sc = &mut scores[..m * kend];
                matmul(
                    m,
                    kend,
                    d,
                    &qb[i0 * d..],
                    xb,
                    RhsLayout::NxK,
                    sc,
                    false,
                    Par::Seq,
                )?;
                for (r, row) in sc.chunks_exact_mut(kend).enumerate() {
                    let valid = if causal { i0 + r + 1 } else { n };
                    softmax_prefix(row, valid);
                }
                matmul(
                    m,
                    d,
                    kend,
                    sc,
                    vb,
                    RhsLayout::KxN,
                    &mut att[i0 * d..i1 * d],
                    false,
                    Par::Seq,
                )?;
                i0 = i1;
            }
            let xb = &mut x[base..base + n * d];
            add_layer_norm_rows(xb, att, d, eps);
        }
        // FFN over the whole chunk: x += relu(x W1) W2, then LN on valid rows.
        let h = grow(&mut s.h, rows * f);
        matmul(rows, f, d, x, &blk.w1, RhsLayout::KxN, h, false, Par::Seq)?;
        for v in h.iter_mut() {
            *v = if *v > 0.0 { *v } else { 0.0 };
        }
        matmul(rows, d, f, h, &blk.w2, RhsLayout::KxN, x, true, Par::Seq)?;
        for (xc, &len) in x.chunks_exact_mut(cand_len).zip(lens) {
            let n = len.max(1);
            layer_norm_rows(&mut xc[..n * d], d, eps);
            // Exact zeros (the FFN could leave a signed zero behind).
            xc[n * d..].fill(0.0);
        }
    }
    Ok(())
}

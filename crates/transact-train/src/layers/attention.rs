//! Multi-head self-attention (V1): packed input projection `[3d × d]` plus
//! bias, `h` heads of width `d/h`, scale `1/sqrt(d/h)`, masked keys
//! excluded, output projection `[d × d]` plus bias.
//!
//! Several independent sequences run in one call: sequence `i` is rows
//! `offsets[i]..offsets[i+1]` of `x [M × d]`, so the projections are one GEMM
//! over all `M` rows and only the score/softmax/value products are per
//! sequence and head. A masked query row is computed like any other (it
//! attends to the unmasked keys); zeroing masked rows is the encoder's
//! job ([`super::encoder::mask_rows_forward`]). A row whose keys are all
//! masked gets zero attention output. With `causal`, row `t` of a sequence
//! (newest first) attends only to rows `s ≥ t`: itself and older actions.

use transact_embed::kernels::{Par, RhsLayout, matmul, softmax_rows_fast};

use super::linear::{linear_backward, linear_forward};
use super::{TrainError, kernel, need, sized};

/// Attention weights (`[out × in]` like PyTorch).
#[derive(Clone, Copy, Debug)]
pub struct MhaWeights<'a> {
    /// `in_proj_weight [3d × d]`: query, key and value rows, in that order.
    pub w_in: &'a [f32],
    /// `in_proj_bias [3d]`.
    pub b_in: &'a [f32],
    /// `out_proj.weight [d × d]`.
    pub w_out: &'a [f32],
    /// `out_proj.bias [d]`.
    pub b_out: &'a [f32],
}

/// Gradients of [`MhaWeights`] (accumulated).
#[derive(Debug)]
pub struct MhaGrads<'a> {
    /// `[3d × d]`.
    pub w_in: &'a mut [f32],
    /// `[3d]`.
    pub b_in: &'a mut [f32],
    /// `[d × d]`.
    pub w_out: &'a mut [f32],
    /// `[d]`.
    pub b_out: &'a mut [f32],
}

/// What the backward needs from the forward.
#[derive(Clone, Debug, Default)]
pub struct MhaCache {
    /// `[M × 3d]` projected queries, keys and values.
    pub qkv: Vec<f32>,
    /// Per sequence `i` (rows `n_i`): `[h × n_i × n_i]` probabilities, the
    /// sequences one after the other.
    pub probs: Vec<f32>,
    /// `[M × d]` concatenated head outputs (input of the output projection).
    pub attn: Vec<f32>,
}

/// Reusable buffers of the attention kernels.
#[derive(Clone, Debug, Default)]
pub struct MhaScratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    pt: Vec<f32>,
    dp: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dattn: Vec<f32>,
    dqkv: Vec<f32>,
    lin: Vec<f32>,
}

/// Checks `offsets` (non-decreasing, starting at 0) and returns `M`.
pub(crate) fn check_offsets(offsets: &[usize]) -> Result<usize, TrainError> {
    if offsets.first().copied().unwrap_or(0) != 0 || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(TrainError::Shape {
            what: "sequence offsets (must start at 0 and not decrease)".into(),
            expected: 0,
            got: offsets.len(),
        });
    }
    Ok(offsets.last().copied().unwrap_or(0))
}

/// Values of [`MhaCache::probs`] for these sequences.
pub fn probs_len(offsets: &[usize], heads: usize) -> usize {
    offsets
        .windows(2)
        .map(|w| heads * (w[1] - w[0]) * (w[1] - w[0]))
        .sum()
}

fn check_dims(d: usize, heads: usize, w: &MhaWeights<'_>) -> Result<usize, TrainError> {
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(TrainError::Config(format!(
            "attention: {heads} heads do not divide width {d}"
        )));
    }
    need("in_proj_weight", 3 * d * d, w.w_in.len())?;
    need("in_proj_bias", 3 * d, w.b_in.len())?;
    need("out_proj.weight", d * d, w.w_out.len())?;
    need("out_proj.bias", d, w.b_out.len())?;
    Ok(d / heads)
}

/// Copies column block `col..col + dh` of rows `r0..r0 + n` of `src` (row
/// stride `stride`) into `dst [n × dh]`, times `scale`.
#[allow(clippy::too_many_arguments)]
fn gather(
    src: &[f32],
    stride: usize,
    r0: usize,
    n: usize,
    col: usize,
    dh: usize,
    scale: f32,
    dst: &mut [f32],
) {
    for t in 0..n {
        let s = &src[(r0 + t) * stride + col..][..dh];
        for (o, &v) in dst[t * dh..(t + 1) * dh].iter_mut().zip(s) {
            *o = v * scale;
        }
    }
}

/// Copies column block `col..col + dh` of rows `r0..r0 + n` of `src` (row
/// stride `stride`) into `dst [dh × n]`, transposed.
fn gather_t(
    src: &[f32],
    stride: usize,
    r0: usize,
    n: usize,
    col: usize,
    dh: usize,
    dst: &mut [f32],
) {
    for t in 0..n {
        let s = &src[(r0 + t) * stride + col..][..dh];
        for (j, &v) in s.iter().enumerate() {
            dst[j * n + t] = v;
        }
    }
}

/// Adds the transpose of `src [dh × n]` into column block `col..col + dh` of
/// rows `r0..r0 + n` of `dst` (row stride `stride`).
fn scatter_add_t(
    src: &[f32],
    stride: usize,
    r0: usize,
    n: usize,
    col: usize,
    dh: usize,
    dst: &mut [f32],
) {
    for t in 0..n {
        let o = &mut dst[(r0 + t) * stride + col..][..dh];
        for (j, a) in o.iter_mut().enumerate() {
            *a += src[j * n + t];
        }
    }
}

/// Adds `src [n × dh]` into column block `col..col + dh` of rows `r0..r0 + n`
/// of `dst` (row stride `stride`).
fn scatter_add(
    src: &[f32],
    stride: usize,
    r0: usize,
    n: usize,
    col: usize,
    dh: usize,
    dst: &mut [f32],
) {
    for t in 0..n {
        let o = &mut dst[(r0 + t) * stride + col..][..dh];
        for (a, &v) in o.iter_mut().zip(&src[t * dh..(t + 1) * dh]) {
            *a += v;
        }
    }
}

/// Softmax of each row of `p [n × n]` over the keys not masked (`mask[s]`
/// true = excluded; with `causal`, keys `s < t` of row `t` too); a row with
/// every key masked becomes zeros.
fn softmax_masked(p: &mut [f32], n: usize, mask: Option<&[bool]>, causal: bool) {
    if causal {
        for (t, row) in p.chunks_exact_mut(n).enumerate() {
            row[..t].fill(f32::NEG_INFINITY);
        }
    }
    if let Some(mask) = mask {
        for row in p.chunks_exact_mut(n) {
            for (v, &m) in row.iter_mut().zip(mask) {
                if m {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
    softmax_rows_fast(p, n);
}

/// Forward: `out [M × d] = MHA(x)` for the sequences of `offsets`, with
/// `key_mask [M]` (true = the key is excluded) when given, and the causal
/// mask when `causal`. Fills `cache`; the backward needs no flag (masked
/// probabilities are zero).
#[allow(clippy::too_many_arguments)]
pub fn mha_forward(
    d: usize,
    heads: usize,
    offsets: &[usize],
    x: &[f32],
    key_mask: Option<&[bool]>,
    causal: bool,
    w: &MhaWeights<'_>,
    cache: &mut MhaCache,
    out: &mut [f32],
    sc: &mut MhaScratch,
) -> Result<(), TrainError> {
    let dh = check_dims(d, heads, w)?;
    let m = check_offsets(offsets)?;
    need("attention x", m * d, x.len())?;
    need("attention out", m * d, out.len())?;
    if let Some(km) = key_mask {
        need("attention key mask", m, km.len())?;
    }
    let scale = 1.0 / (dh as f32).sqrt();
    let qkv = sized(&mut cache.qkv, m * 3 * d);
    linear_forward(m, d, 3 * d, x, w.w_in, Some(w.b_in), qkv)?;
    let probs = sized(&mut cache.probs, probs_len(offsets, heads));
    let attn = sized(&mut cache.attn, m * d);
    let mut poff = 0;
    for win in offsets.windows(2) {
        let (r0, n) = (win[0], win[1] - win[0]);
        if n == 0 {
            continue;
        }
        let mask = key_mask.map(|km| &km[r0..r0 + n]);
        let q = sized(&mut sc.q, n * dh);
        let k = sized(&mut sc.k, n * dh);
        let v = sized(&mut sc.v, n * dh);
        let o = sized(&mut sc.o, n * dh);
        for head in 0..heads {
            gather(qkv, 3 * d, r0, n, head * dh, dh, scale, q);
            gather(qkv, 3 * d, r0, n, d + head * dh, dh, 1.0, k);
            gather(qkv, 3 * d, r0, n, 2 * d + head * dh, dh, 1.0, v);
            let p = &mut probs[poff..poff + n * n];
            poff += n * n;
            matmul(n, n, dh, q, k, RhsLayout::NxK, p, false, Par::Seq).map_err(kernel)?;
            softmax_masked(p, n, mask, causal);
            matmul(n, dh, n, p, v, RhsLayout::KxN, o, false, Par::Seq).map_err(kernel)?;
            for t in 0..n {
                attn[(r0 + t) * d + head * dh..][..dh].copy_from_slice(&o[t * dh..(t + 1) * dh]);
            }
        }
    }
    linear_forward(m, d, d, attn, w.w_out, Some(w.b_out), out)
}

/// Backward of [`mha_forward`]: `dx += ∂L/∂x`, parameter gradients
/// accumulated into `g`.
#[allow(clippy::too_many_arguments)]
pub fn mha_backward(
    d: usize,
    heads: usize,
    offsets: &[usize],
    x: &[f32],
    w: &MhaWeights<'_>,
    cache: &MhaCache,
    dout: &[f32],
    dx: &mut [f32],
    g: &mut MhaGrads<'_>,
    sc: &mut MhaScratch,
) -> Result<(), TrainError> {
    let dh = check_dims(d, heads, w)?;
    let m = check_offsets(offsets)?;
    need("attention x", m * d, x.len())?;
    need("attention dout", m * d, dout.len())?;
    need("attention dx", m * d, dx.len())?;
    need("attention cache qkv", m * 3 * d, cache.qkv.len())?;
    need("attention cache attn", m * d, cache.attn.len())?;
    need(
        "attention cache probs",
        probs_len(offsets, heads),
        cache.probs.len(),
    )?;
    let scale = 1.0 / (dh as f32).sqrt();
    let dattn = sized(&mut sc.dattn, m * d);
    dattn.fill(0.0);
    linear_backward(
        m,
        d,
        d,
        &cache.attn,
        w.w_out,
        dout,
        Some(dattn),
        g.w_out,
        Some(g.b_out),
        &mut sc.lin,
    )?;
    let dqkv = sized(&mut sc.dqkv, m * 3 * d);
    dqkv.fill(0.0);
    let qkv = &cache.qkv;
    let mut poff = 0;
    for win in offsets.windows(2) {
        let (r0, n) = (win[0], win[1] - win[0]);
        if n == 0 {
            continue;
        }
        let q = sized(&mut sc.q, n * dh);
        let k = sized(&mut sc.k, n * dh);
        let v = sized(&mut sc.v, n * dh);
        let o = sized(&mut sc.o, n * dh);
        let pt = sized(&mut sc.pt, n * dh);
        let dp = sized(&mut sc.dp, n * n);
        let dq = sized(&mut sc.dq, n * dh);
        let dk = sized(&mut sc.dk, n * dh);
        let dv = sized(&mut sc.dv, n * dh);
        for head in 0..heads {
            // Q and dO also transposed (`q`, `pt` hold `[dh × n]`), so that
            // dVᵀ = dOᵀ·P and dKᵀ = Qᵀ·dS need no n × n transpose.
            gather_t(qkv, 3 * d, r0, n, head * dh, dh, q);
            gather(qkv, 3 * d, r0, n, d + head * dh, dh, 1.0, k);
            gather(qkv, 3 * d, r0, n, 2 * d + head * dh, dh, 1.0, v);
            gather(dattn, d, r0, n, head * dh, dh, 1.0, o);
            gather_t(dattn, d, r0, n, head * dh, dh, pt);
            let p = &cache.probs[poff..poff + n * n];
            poff += n * n;
            // dVᵀ = dOᵀ·P
            matmul(dh, n, n, pt, p, RhsLayout::KxN, dv, false, Par::Seq).map_err(kernel)?;
            // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale
            matmul(n, n, dh, o, v, RhsLayout::NxK, dp, false, Par::Seq).map_err(kernel)?;
            for (dr, pr) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (dv, &pv) in dr.iter_mut().zip(pr) {
                    *dv = pv * (*dv - dot) * scale;
                }
            }
            // dQ = dS·K, dKᵀ = Qᵀ·dS
            matmul(n, dh, n, dp, k, RhsLayout::KxN, dq, false, Par::Seq).map_err(kernel)?;
            matmul(dh, n, n, q, dp, RhsLayout::KxN, dk, false, Par::Seq).map_err(kernel)?;
            scatter_add(dq, 3 * d, r0, n, head * dh, dh, dqkv);
            scatter_add_t(dk, 3 * d, r0, n, d + head * dh, dh, dqkv);
            scatter_add_t(dv, 3 * d, r0, n, 2 * d + head * dh, dh, dqkv);
        }
    }
    linear_backward(
        m,
        d,
        3 * d,
        x,
        w.w_in,
        dqkv,
        Some(dx),
        g.w_in,
        Some(g.b_in),
        &mut sc.lin,
    )
}

//! The TransAct V2 encoder block (Pinterest's "SKUT" block): one head, no
//! biases, no output projection, LayerNorm without gain or bias, post-norm,
//! padding and (optionally) causal masks:
//!
//! ```text
//! x1 = LN(x + softmax((x Wq)(x Wk)ᵀ / √d + M_pad + M_causal)(x Wv))
//! y  = LN(x1 + relu(x1 W1) W2)
//! ```
//!
//! Weights keep the serving layout of [`transact_model::v2::V2Block`]:
//! input dimension first (`Wq`, `Wk`, `Wv` `[d × d]`, `W1` `[d × f]`, `W2`
//! `[f × d]`), so `x W` is a plain product. Inputs and outputs are padded
//! `[batch × seq × d]` with `lens[b]` valid rows (oldest first); padded
//! output rows are zero and a row with `len = 0` is computed as one token,
//! as in serving. Internally only the valid rows are processed.

use transact_embed::kernels::{Par, RhsLayout, matmul, softmax_rows_fast};

use super::linear::transpose;
use super::norm::{layer_norm_backward, layer_norm_forward};
use super::{TrainError, kernel, need, sized};

/// Sizes and switches of a V2 block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct V2Dims {
    /// Model width `d`.
    pub d: usize,
    /// FFN width `f`.
    pub f: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Whether token `t` attends only to tokens `s ≤ t`.
    pub causal: bool,
}

/// The block's weights (input dimension first).
#[derive(Clone, Copy, Debug)]
pub struct V2Weights<'a> {
    /// `Wq [d × d]`.
    pub wq: &'a [f32],
    /// `Wk [d × d]`.
    pub wk: &'a [f32],
    /// `Wv [d × d]`.
    pub wv: &'a [f32],
    /// `W1 [d × f]`.
    pub w1: &'a [f32],
    /// `W2 [f × d]`.
    pub w2: &'a [f32],
}

/// Gradients of [`V2Weights`] (accumulated).
#[derive(Debug)]
pub struct V2Grads<'a> {
    /// `[d × d]`.
    pub wq: &'a mut [f32],
    /// `[d × d]`.
    pub wk: &'a mut [f32],
    /// `[d × d]`.
    pub wv: &'a mut [f32],
    /// `[d × f]`.
    pub w1: &'a mut [f32],
    /// `[f × d]`.
    pub w2: &'a mut [f32],
}

/// Activations of the valid rows (packed, `M` rows) kept for the backward.
#[derive(Clone, Debug, Default)]
pub struct V2Cache {
    offsets: Vec<usize>,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    r1: Vec<f32>,
    mean1: Vec<f32>,
    rstd1: Vec<f32>,
    x1: Vec<f32>,
    h: Vec<f32>,
    r2: Vec<f32>,
    mean2: Vec<f32>,
    rstd2: Vec<f32>,
    y: Vec<f32>,
}

/// Buffers of the backward.
#[derive(Clone, Debug, Default)]
pub struct V2Scratch {
    dy: Vec<f32>,
    dr2: Vec<f32>,
    dx1: Vec<f32>,
    dh: Vec<f32>,
    dr1: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dx: Vec<f32>,
    pt: Vec<f32>,
    dp: Vec<f32>,
    t: Vec<f32>,
}

fn check(dims: &V2Dims, seq: usize, lens: &[usize], w: &V2Weights<'_>) -> Result<(), TrainError> {
    let (d, f) = (dims.d, dims.f);
    need("wq", d * d, w.wq.len())?;
    need("wk", d * d, w.wk.len())?;
    need("wv", d * d, w.wv.len())?;
    need("w1", d * f, w.w1.len())?;
    need("w2", f * d, w.w2.len())?;
    if let Some(b) = lens.iter().position(|&l| l > seq) {
        return Err(TrainError::Shape {
            what: format!("lens[{b}] exceeds the sequence length {seq}"),
            expected: seq,
            got: lens[b],
        });
    }
    if seq == 0 && !lens.is_empty() {
        return Err(TrainError::Shape {
            what: "V2 sequence length".into(),
            expected: 1,
            got: 0,
        });
    }
    Ok(())
}

/// `kernels::matmul`, single-threaded, with the error mapped.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    rhs: RhsLayout,
    c: &mut [f32],
    acc: bool,
) -> Result<(), TrainError> {
    matmul(m, n, k, a, b, rhs, c, acc, Par::Seq).map_err(kernel)
}

/// `dW += aᵀ·b` for `a [m × p]`, `b [m × q]` (`dW [p × q]`).
fn add_at_b(
    m: usize,
    p: usize,
    q: usize,
    a: &[f32],
    b: &[f32],
    dw: &mut [f32],
    t: &mut Vec<f32>,
) -> Result<(), TrainError> {
    let at = sized(t, p * m);
    transpose(&a[..m * p], m, p, at);
    mm(p, q, m, at, b, RhsLayout::KxN, dw, true)
}

/// Forward over `lens.len()` padded rows of `x [batch × seq × d]` into
/// `out` (same layout, padded rows zero); fills `cache`.
#[allow(clippy::too_many_arguments)]
pub fn v2_block_forward(
    dims: &V2Dims,
    seq: usize,
    lens: &[usize],
    x: &[f32],
    w: &V2Weights<'_>,
    cache: &mut V2Cache,
    out: &mut [f32],
) -> Result<(), TrainError> {
    check(dims, seq, lens, w)?;
    let (d, f) = (dims.d, dims.f);
    let batch = lens.len();
    need("v2 x", batch * seq * d, x.len())?;
    need("v2 out", batch * seq * d, out.len())?;
    cache.offsets.clear();
    cache.offsets.push(0);
    for &l in lens {
        let last = cache.offsets.last().copied().unwrap_or(0);
        cache.offsets.push(last + l.max(1));
    }
    let m = cache.offsets.last().copied().unwrap_or(0);
    let xp = sized(&mut cache.x, m * d);
    for (b, &l) in lens.iter().enumerate() {
        let o = cache.offsets[b];
        let n = l.max(1);
        xp[o * d..(o + n) * d].copy_from_slice(&x[b * seq * d..(b * seq + n) * d]);
    }
    let q = sized(&mut cache.q, m * d);
    mm(m, d, d, xp, w.wq, RhsLayout::KxN, q, false)?;
    let k = sized(&mut cache.k, m * d);
    mm(m, d, d, xp, w.wk, RhsLayout::KxN, k, false)?;
    let v = sized(&mut cache.v, m * d);
    mm(m, d, d, xp, w.wv, RhsLayout::KxN, v, false)?;
    let plen: usize = cache.offsets.windows(2).map(|o| (o[1] - o[0]).pow(2)).sum();
    let probs = sized(&mut cache.probs, plen);
    let r1 = sized(&mut cache.r1, m * d);
    let scale = 1.0 / (d as f32).sqrt();
    let mut poff = 0;
    for o in cache.offsets.windows(2) {
        let (r0, n) = (o[0], o[1] - o[0]);
        let p = &mut probs[poff..poff + n * n];
        poff += n * n;
        mm(
            n,
            n,
            d,
            &q[r0 * d..],
            &k[r0 * d..],
            RhsLayout::NxK,
            p,
            false,
        )?;
        for (t, row) in p.chunks_exact_mut(n).enumerate() {
            for (s, v) in row.iter_mut().enumerate() {
                *v = if dims.causal && s > t {
                    f32::NEG_INFINITY
                } else {
                    *v * scale
                };
            }
        }
        softmax_rows_fast(p, n);
        mm(
            n,
            d,
            n,
            p,
            &v[r0 * d..],
            RhsLayout::KxN,
            &mut r1[r0 * d..(r0 + n) * d],
            false,
        )?;
    }
    r1.iter_mut().zip(xp.iter()).for_each(|(a, &b)| *a += b);
    let x1 = sized(&mut cache.x1, m * d);
    let (mean1, rstd1) = (sized(&mut cache.mean1, m), sized(&mut cache.rstd1, m));
    layer_norm_forward(m, d, r1, None, None, dims.eps, x1, mean1, rstd1)?;
    let h = sized(&mut cache.h, m * f);
    mm(m, f, d, x1, w.w1, RhsLayout::KxN, h, false)?;
    h.iter_mut().for_each(|v| *v = v.max(0.0));
    let r2 = sized(&mut cache.r2, m * d);
    r2.copy_from_slice(x1);
    mm(m, d, f, h, w.w2, RhsLayout::KxN, r2, true)?;
    let y = sized(&mut cache.y, m * d);
    let (mean2, rstd2) = (sized(&mut cache.mean2, m), sized(&mut cache.rstd2, m));
    layer_norm_forward(m, d, r2, None, None, dims.eps, y, mean2, rstd2)?;
    out[..batch * seq * d].fill(0.0);
    for (b, &l) in lens.iter().enumerate() {
        let o = cache.offsets[b];
        let n = l.max(1);
        out[b * seq * d..(b * seq + n) * d].copy_from_slice(&y[o * d..(o + n) * d]);
    }
    Ok(())
}

/// Backward of [`v2_block_forward`] (same `lens`, weights and cache):
/// `dx += ∂L/∂x` (padded layout; padded rows get nothing) given
/// `dout = ∂L/∂out`; weight gradients accumulate into `g`.
#[allow(clippy::too_many_arguments)]
pub fn v2_block_backward(
    dims: &V2Dims,
    seq: usize,
    lens: &[usize],
    w: &V2Weights<'_>,
    cache: &V2Cache,
    dout: &[f32],
    dx: &mut [f32],
    g: &mut V2Grads<'_>,
    sc: &mut V2Scratch,
) -> Result<(), TrainError> {
    check(dims, seq, lens, w)?;
    let (d, f) = (dims.d, dims.f);
    let batch = lens.len();
    need("v2 dout", batch * seq * d, dout.len())?;
    need("v2 dx", batch * seq * d, dx.len())?;
    if cache.offsets.len() != batch + 1 {
        return Err(TrainError::Shape {
            what: "v2 cache (from a forward over other lens)".into(),
            expected: batch + 1,
            got: cache.offsets.len(),
        });
    }
    let m = cache.offsets.last().copied().unwrap_or(0);
    need("v2 cache", m * f, cache.h.len())?;
    let dy = sized(&mut sc.dy, m * d);
    for (b, &l) in lens.iter().enumerate() {
        let o = cache.offsets[b];
        let n = l.max(1);
        dy[o * d..(o + n) * d].copy_from_slice(&dout[b * seq * d..(b * seq + n) * d]);
    }
    // y = LN(r2), r2 = x1 + relu(x1 W1) W2.
    let dr2 = sized(&mut sc.dr2, m * d);
    dr2.fill(0.0);
    layer_norm_backward(
        m,
        d,
        &cache.r2,
        &cache.mean2,
        &cache.rstd2,
        None,
        dy,
        dr2,
        None,
        None,
    )?;
    let dx1 = sized(&mut sc.dx1, m * d);
    dx1.copy_from_slice(dr2);
    let dh = sized(&mut sc.dh, m * f);
    mm(m, f, d, dr2, w.w2, RhsLayout::NxK, dh, false)?;
    add_at_b(m, f, d, &cache.h, dr2, g.w2, &mut sc.t)?;
    dh.iter_mut().zip(&cache.h).for_each(|(g, &h)| {
        if h <= 0.0 {
            *g = 0.0;
        }
    });
    mm(m, d, f, dh, w.w1, RhsLayout::NxK, dx1, true)?;
    add_at_b(m, d, f, &cache.x1, dh, g.w1, &mut sc.t)?;
    // x1 = LN(r1), r1 = x + P V.
    let dr1 = sized(&mut sc.dr1, m * d);
    dr1.fill(0.0);
    layer_norm_backward(
        m,
        d,
        &cache.r1,
        &cache.mean1,
        &cache.rstd1,
        None,
        dx1,
        dr1,
        None,
        None,
    )?;
    let dxp = sized(&mut sc.dx, m * d);
    dxp.copy_from_slice(dr1);
    let dq = sized(&mut sc.dq, m * d);
    let dk = sized(&mut sc.dk, m * d);
    let dv = sized(&mut sc.dv, m * d);
    let scale = 1.0 / (d as f32).sqrt();
    let mut poff = 0;
    for o in cache.offsets.windows(2) {
        let (r0, n) = (o[0], o[1] - o[0]);
        let p = &cache.probs[poff..poff + n * n];
        poff += n * n;
        let rows = r0 * d..(r0 + n) * d;
        let pt = sized(&mut sc.pt, n * n);
        transpose(p, n, n, pt);
        mm(
            n,
            d,
            n,
            pt,
            &dr1[rows.clone()],
            RhsLayout::KxN,
            &mut dv[rows.clone()],
            false,
        )?;
        let dp = sized(&mut sc.dp, n * n);
        mm(
            n,
            n,
            d,
            &dr1[rows.clone()],
            &cache.v[rows.clone()],
            RhsLayout::NxK,
            dp,
            false,
        )?;
        for (dr, pr) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
            let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
            for (g, &pv) in dr.iter_mut().zip(pr) {
                *g = pv * (*g - dot) * scale;
            }
        }
        mm(
            n,
            d,
            n,
            dp,
            &cache.k[rows.clone()],
            RhsLayout::KxN,
            &mut dq[rows.clone()],
            false,
        )?;
        transpose(dp, n, n, pt);
        mm(
            n,
            d,
            n,
            pt,
            &cache.q[rows.clone()],
            RhsLayout::KxN,
            &mut dk[rows.clone()],
            false,
        )?;
    }
    for (dz, wz, gz) in [
        (&*dq, w.wq, &mut *g.wq),
        (&*dk, w.wk, &mut *g.wk),
        (&*dv, w.wv, &mut *g.wv),
    ] {
        mm(m, d, d, dz, wz, RhsLayout::NxK, dxp, true)?;
        add_at_b(m, d, d, &cache.x, dz, gz, &mut sc.t)?;
    }
    for (b, &l) in lens.iter().enumerate() {
        let o = cache.offsets[b];
        let n = l.max(1);
        dx[b * seq * d..(b * seq + n) * d]
            .iter_mut()
            .zip(&dxp[o * d..(o + n) * d])
            .for_each(|(a, &g)| *a += g);
    }
    Ok(())
}

//! Building blocks of the fast path: scratch sizing, single-threaded GEMM
//! wrappers, the per-token encoder layer for a chunk of candidates, and the
//! scatter of packed outputs into the output layout.

use transact_embed::kernels;
use transact_embed::small_gemm;

use super::fast::{ChunkScratch, FastWeights};
use super::{EncoderLayer, TransActV1, kernel_error};
use crate::ModelError;

/// The leading `n` values of `v`, growing it if needed (never shrinking, so
/// reuse does not reallocate).
pub(super) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Sizes of one request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    pub(super) d: usize,
    pub(super) di: usize,
    pub(super) du: usize,
    pub(super) h: usize,
    pub(super) dh: usize,
    pub(super) ff: usize,
    /// Model sequence length `S`.
    pub(super) s: usize,
    /// Packed length `S_e`.
    pub(super) se: usize,
    /// Kept output positions `K`.
    pub(super) k: usize,
    /// Query rows of the last layer: `S_e`, or only the packed rows below `K`
    /// when there is no max-pool.
    pub(super) q_last: usize,
    pub(super) od: usize,
    pub(super) eps: f32,
    /// Whether the first layer runs factored (per-request tables) or per token.
    pub(super) factored: bool,
}

/// `y[m × d_out] = x · w_t (+ b)` for a transposed weight `w_t`
/// (`[d_in × d_out]`), single-threaded and allocation-free; the bias is
/// added in registers.
#[allow(clippy::too_many_arguments)]
pub(super) fn linear(
    m: usize,
    d_in: usize,
    d_out: usize,
    x: &[f32],
    w_t: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), ModelError> {
    match b {
        Some(b) => small_gemm::linear_kn(m, d_out, d_in, x, w_t, b, y),
        None => small_gemm::matmul_kn(m, d_out, d_in, x, w_t, y, false),
    }
    .map_err(kernel_error)
}

/// `dst = a + b`, element-wise (lengths: the shortest).
#[inline]
pub(super) fn add_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]` through the allocation-free small GEMM,
/// with the error mapped.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_small(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) -> Result<(), ModelError> {
    small_gemm::matmul_kn(m, n, k, a, b, c, accumulate).map_err(kernel_error)
}

/// A sub-slice, or an internal error instead of a panic.
pub(super) fn part(v: &[f32], start: usize, len: usize) -> Result<&[f32], ModelError> {
    v.get(start..start + len)
        .ok_or_else(|| internal("slice out of range"))
}

pub(super) fn part_mut(v: &mut [f32], start: usize, len: usize) -> Result<&mut [f32], ModelError> {
    v.get_mut(start..start + len)
        .ok_or_else(|| internal("slice out of range"))
}

pub(super) fn internal(what: &str) -> ModelError {
    ModelError::BadInput {
        name: "internal".into(),
        detail: what.into(),
    }
}

impl TransActV1 {
    /// A standard encoder layer for a chunk of `bc` candidates: input
    /// `[bc·rows × d]` in `cs.x`, output `[bc·q × d]` (the first `q` rows of
    /// each candidate, `q ≤ rows`) back in `cs.x`.
    pub(super) fn layer_chunk(
        &self,
        l: usize,
        dm: &Dims,
        bc: usize,
        rows: usize,
        q: usize,
        cs: &mut ChunkScratch,
    ) -> Result<(), ModelError> {
        let Dims { d, h, dh, .. } = *dm;
        let layer = self
            .params
            .layers
            .get(l)
            .ok_or_else(|| internal("layer index"))?;
        let in_wt = self
            .fast
            .in_wt
            .get(l)
            .ok_or_else(|| internal("layer index"))?;
        let in_b = self
            .fast
            .in_b
            .get(l)
            .ok_or_else(|| internal("layer index"))?;
        let out_wt = self
            .fast
            .out_wt
            .get(l)
            .ok_or_else(|| internal("layer index"))?;
        let m_in = bc * rows;
        let m = bc * q;
        let x = part(&cs.x, 0, m_in * d)?;
        // Per head q, k, v: [3 × h × m_in × d_h].
        let qkv = sized(&mut cs.qkv, 3 * h * m_in * dh);
        for kind in 0..3 {
            for head in 0..h {
                let off = kind * d + head * dh;
                let dst = part_mut(qkv, (kind * h + head) * m_in * dh, m_in * dh)?;
                linear(
                    m_in,
                    d,
                    dh,
                    x,
                    part(in_wt, (kind * h + head) * d * dh, d * dh)?,
                    Some(part(in_b, off, dh)?),
                    dst,
                )?;
            }
        }
        let attn = sized(&mut cs.attn, h * m * dh);
        let scores = sized(&mut cs.scores, q * rows);
        let kt = sized(&mut cs.kt, dh * rows);
        for c in 0..bc {
            for head in 0..h {
                let qh = part(qkv, head * m_in * dh + c * rows * dh, q * dh)?;
                let kh = part(qkv, (h + head) * m_in * dh + c * rows * dh, rows * dh)?;
                let vh = part(qkv, (2 * h + head) * m_in * dh + c * rows * dh, rows * dh)?;
                small_gemm::transpose(rows, dh, kh, kt).map_err(kernel_error)?;
                matmul_small(q, rows, dh, qh, kt, scores, false)?;
                kernels::softmax_rows_fast(scores, rows);
                let dst = part_mut(attn, head * m * dh + c * q * dh, q * dh)?;
                matmul_small(q, dh, rows, scores, vh, dst, false)?;
            }
        }
        let y = sized(&mut cs.y, m * d);
        for c in 0..bc {
            for t in 0..q {
                let row = part_mut(y, (c * q + t) * d, d)?;
                add_into(row, part(x, (c * rows + t) * d, d)?, &layer.out_proj_bias);
            }
        }
        for head in 0..h {
            let a_h = part(attn, head * m * dh, m * dh)?;
            let wo = part(out_wt, head * dh * d, dh * d)?;
            matmul_small(m, d, dh, a_h, wo, y, true)?;
        }
        finish_layer(layer, &self.fast, l, dm, m, y, &mut cs.hid, &mut cs.x)
    }

    /// Scatters the packed outputs of `bc` candidates (`rows` rows each in
    /// `cs.x`) into `out`: the max-pool through `out_linear`, then the kept
    /// positions (zero where masked).
    pub(super) fn write_outputs(
        &self,
        dm: &Dims,
        keep: &[usize],
        bc: usize,
        rows: usize,
        cs: &mut ChunkScratch,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let Dims {
            d, s, se, k, od, ..
        } = *dm;
        let x = part(&cs.x, 0, bc * rows * d)?;
        let off = if self.cfg.concat_max_pool { d } else { 0 };
        for c in 0..bc {
            let y = part(x, c * rows * d, rows * d)?;
            let o = part_mut(out, c * od, od)?;
            let kept = &mut o[off..];
            kept.fill(0.0);
            for (i, &p) in keep
                .iter()
                .enumerate()
                .take_while(|&(i, &p)| p < k && i < rows)
            {
                part_mut(kept, p * d, d)?.copy_from_slice(part(y, i * d, d)?);
            }
        }
        if let (Some((_, b)), Some(w_t)) = (&self.params.out_linear, &self.fast.out_linear_t) {
            let pooled = sized(&mut cs.pooled, bc * d);
            for (c, prow) in pooled.chunks_exact_mut(d).enumerate() {
                // Masked rows are zeros and take part in the max.
                prow.fill(if se < s { 0.0 } else { f32::NEG_INFINITY });
                for row in part(x, c * rows * d, rows * d)?.chunks_exact(d) {
                    for (m, &v) in prow.iter_mut().zip(row) {
                        *m = m.max(v);
                    }
                }
            }
            let pooled_out = sized(&mut cs.pooled_out, bc * d);
            linear(bc, d, d, pooled, w_t, Some(b), pooled_out)?;
            for c in 0..bc {
                part_mut(out, c * od, d)?.copy_from_slice(part(pooled_out, c * d, d)?);
            }
        }
        Ok(())
    }
}

/// The rest of a post-norm layer: `y` holds `x + attention(x)` (`m × d`);
/// computes `x1 = LN1(y)`, then `LN2(x1 + W2·relu(W1·x1 + b1) + b2)` into `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_layer(
    layer: &EncoderLayer,
    fw: &FastWeights,
    l: usize,
    dm: &Dims,
    m: usize,
    y: &mut [f32],
    hid: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> Result<(), ModelError> {
    let Dims { d, ff, eps, .. } = *dm;
    kernels::layer_norm_rows_fast(
        y,
        d,
        Some(&layer.norm1_weight),
        Some(&layer.norm1_bias),
        eps,
    );
    let lin1_t = fw.lin1_t.get(l).ok_or_else(|| internal("layer index"))?;
    let lin2_t = fw.lin2_t.get(l).ok_or_else(|| internal("layer index"))?;
    let hid = sized(hid, m * ff);
    linear(m, d, ff, y, lin1_t, Some(&layer.linear1_bias), hid)?;
    kernels::relu(hid);
    let out = sized(out, m * d);
    for (o, yr) in out.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
        add_into(o, yr, &layer.linear2_bias);
    }
    matmul_small(m, d, ff, hid, lin2_t, out, true)?;
    kernels::layer_norm_rows_fast(
        out,
        d,
        Some(&layer.norm2_weight),
        Some(&layer.norm2_bias),
        eps,
    );
    Ok(())
}

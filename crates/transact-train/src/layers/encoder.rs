//! The V1 post-norm encoder layer (PyTorch `TransformerEncoderLayer`,
//! `norm_first = false`, ReLU) and the masked-row rule.
//!
//! ```text
//! r1 = x + drop₀(MHA(x))            x1 = LN1(r1)
//! h  = drop₁(relu(x1·W1ᵀ + b1))     r2 = x1 + drop₂(h·W2ᵀ + b2)
//! y  = LN2(r2)
//! ```
//!
//! Dropout sites follow PyTorch: after the attention block, after the FFN
//! activation and after `linear2` (PyTorch also drops attention
//! probabilities inside `MultiheadAttention`; this layer does not).

use super::attention::{MhaCache, MhaGrads, MhaScratch, MhaWeights, mha_backward, mha_forward};
use super::dropout::{dropout_forward, mix64};
use super::linear::{linear_backward, linear_forward, relu_backward, relu_forward};
use super::norm::{layer_norm_backward, layer_norm_forward};
use super::{TrainError, need, sized};

/// Sizes of an encoder layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderDims {
    /// Model width `d`.
    pub d: usize,
    /// Attention heads `h`.
    pub heads: usize,
    /// FFN hidden width.
    pub ff: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Causal attention: each action attends to itself and older ones only
    /// (the Next Action Loss's pass; the serving encoder is not causal).
    pub causal: bool,
}

impl EncoderDims {
    /// Sizes of the twelve tensors, in the order of the reference module's
    /// `state_dict` (and of [`EncoderWeights::split`]).
    pub fn tensor_sizes(&self) -> [usize; 12] {
        let (d, ff) = (self.d, self.ff);
        [
            3 * d * d,
            3 * d,
            d * d,
            d,
            ff * d,
            ff,
            d * ff,
            d,
            d,
            d,
            d,
            d,
        ]
    }

    /// Total parameter count of one layer.
    pub fn len(&self) -> usize {
        self.tensor_sizes().iter().sum()
    }

    /// Whether the layer has no parameters (never, for valid sizes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The twelve weights of a layer, in the reference module's names and order.
#[derive(Clone, Copy, Debug)]
pub struct EncoderWeights<'a> {
    /// Attention weights.
    pub mha: MhaWeights<'a>,
    /// `linear1.weight [ff × d]`.
    pub l1_w: &'a [f32],
    /// `linear1.bias [ff]`.
    pub l1_b: &'a [f32],
    /// `linear2.weight [d × ff]`.
    pub l2_w: &'a [f32],
    /// `linear2.bias [d]`.
    pub l2_b: &'a [f32],
    /// `norm1.weight [d]`.
    pub n1_w: &'a [f32],
    /// `norm1.bias [d]`.
    pub n1_b: &'a [f32],
    /// `norm2.weight [d]`.
    pub n2_w: &'a [f32],
    /// `norm2.bias [d]`.
    pub n2_b: &'a [f32],
}

impl<'a> EncoderWeights<'a> {
    /// Views a contiguous block holding the twelve tensors in
    /// [`EncoderDims::tensor_sizes`] order.
    pub fn split(block: &'a [f32], dims: &EncoderDims) -> Result<Self, TrainError> {
        need("encoder layer parameters", dims.len(), block.len())?;
        let mut parts: Vec<&'a [f32]> = Vec::with_capacity(12);
        let mut rest = block;
        for n in dims.tensor_sizes() {
            let (a, b) = rest.split_at(n);
            parts.push(a);
            rest = b;
        }
        let mut it = parts.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Self {
            mha: MhaWeights {
                w_in: next(),
                b_in: next(),
                w_out: next(),
                b_out: next(),
            },
            l1_w: next(),
            l1_b: next(),
            l2_w: next(),
            l2_b: next(),
            n1_w: next(),
            n1_b: next(),
            n2_w: next(),
            n2_b: next(),
        })
    }
}

/// Gradients of the twelve weights (accumulated).
#[derive(Debug)]
pub struct EncoderGrads<'a> {
    /// Attention gradients.
    pub mha: MhaGrads<'a>,
    /// `linear1.weight`.
    pub l1_w: &'a mut [f32],
    /// `linear1.bias`.
    pub l1_b: &'a mut [f32],
    /// `linear2.weight`.
    pub l2_w: &'a mut [f32],
    /// `linear2.bias`.
    pub l2_b: &'a mut [f32],
    /// `norm1.weight`.
    pub n1_w: &'a mut [f32],
    /// `norm1.bias`.
    pub n1_b: &'a mut [f32],
    /// `norm2.weight`.
    pub n2_w: &'a mut [f32],
    /// `norm2.bias`.
    pub n2_b: &'a mut [f32],
}

impl<'a> EncoderGrads<'a> {
    /// Splits a contiguous gradient block like [`EncoderWeights::split`].
    pub fn split(block: &'a mut [f32], dims: &EncoderDims) -> Result<Self, TrainError> {
        need("encoder layer gradients", dims.len(), block.len())?;
        let mut parts: Vec<&'a mut [f32]> = Vec::with_capacity(12);
        let mut rest = block;
        for n in dims.tensor_sizes() {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
            parts.push(a);
            rest = b;
        }
        let mut it = parts.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Self {
            mha: MhaGrads {
                w_in: next(),
                b_in: next(),
                w_out: next(),
                b_out: next(),
            },
            l1_w: next(),
            l1_b: next(),
            l2_w: next(),
            l2_b: next(),
            n1_w: next(),
            n1_b: next(),
            n2_w: next(),
            n2_b: next(),
        })
    }
}

/// Dropout of a layer: probability and one key per sequence (see
/// [`super::dropout`]).
#[derive(Clone, Copy, Debug)]
pub struct LayerDropout<'a> {
    /// Drop probability.
    pub p: f32,
    /// One key per sequence of the call.
    pub keys: &'a [u64],
}

/// Activations the backward needs (`M` rows); `y` is the layer's output.
#[derive(Clone, Debug, Default)]
pub struct EncoderCache {
    /// Attention cache.
    pub mha: MhaCache,
    /// `x + drop₀(MHA(x))`.
    pub r1: Vec<f32>,
    /// LN1 statistics.
    pub mean1: Vec<f32>,
    /// LN1 statistics.
    pub rstd1: Vec<f32>,
    /// `LN1(r1)`.
    pub x1: Vec<f32>,
    /// `x1·W1ᵀ + b1`.
    pub h_pre: Vec<f32>,
    /// `drop₁(relu(h_pre))`.
    pub h: Vec<f32>,
    /// `x1 + drop₂(h·W2ᵀ + b2)`.
    pub r2: Vec<f32>,
    /// LN2 statistics.
    pub mean2: Vec<f32>,
    /// LN2 statistics.
    pub rstd2: Vec<f32>,
    /// The output `LN2(r2)`.
    pub y: Vec<f32>,
}

/// Buffers of the backward.
#[derive(Clone, Debug, Default)]
pub struct EncoderScratch {
    mha: MhaScratch,
    dr2: Vec<f32>,
    dh: Vec<f32>,
    dx1: Vec<f32>,
    dr1: Vec<f32>,
    lin: Vec<f32>,
}

/// Applies (or back-propagates) dropout site `site` to `buf` (`width` wide
/// rows), each sequence with its own key; counters restart at each sequence.
fn drop_site(
    buf: &mut [f32],
    width: usize,
    offsets: &[usize],
    drop: Option<LayerDropout<'_>>,
    site: u64,
) {
    let Some(dr) = drop else { return };
    if dr.p <= 0.0 {
        return;
    }
    for (i, win) in offsets.windows(2).enumerate() {
        let key =
            mix64(dr.keys.get(i).copied().unwrap_or(0) ^ site.wrapping_mul(0xA24B_AED4_963E_E407));
        let rows = &mut buf[win[0] * width..win[1] * width];
        dropout_forward(rows, dr.p, key, 0);
    }
}

/// Forward of one layer over the sequences of `offsets` (rows of `x [M × d]`),
/// `key_mask [M]` optional; the output is `cache.y`.
#[allow(clippy::too_many_arguments)]
pub fn encoder_layer_forward(
    dims: &EncoderDims,
    offsets: &[usize],
    x: &[f32],
    key_mask: Option<&[bool]>,
    w: &EncoderWeights<'_>,
    drop: Option<LayerDropout<'_>>,
    cache: &mut EncoderCache,
    sc: &mut EncoderScratch,
) -> Result<(), TrainError> {
    let EncoderDims {
        d,
        heads,
        ff,
        eps,
        causal,
    } = *dims;
    let m = super::attention::check_offsets(offsets)?;
    need("encoder x", m * d, x.len())?;
    if let Some(dr) = drop {
        need(
            "dropout keys",
            offsets.len().saturating_sub(1),
            dr.keys.len(),
        )?;
    }
    let r1 = sized(&mut cache.r1, m * d);
    mha_forward(
        d,
        heads,
        offsets,
        x,
        key_mask,
        causal,
        &w.mha,
        &mut cache.mha,
        r1,
        &mut sc.mha,
    )?;
    drop_site(r1, d, offsets, drop, 0);
    r1.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
    let x1 = sized(&mut cache.x1, m * d);
    let mean1 = sized(&mut cache.mean1, m);
    let rstd1 = sized(&mut cache.rstd1, m);
    layer_norm_forward(m, d, r1, Some(w.n1_w), Some(w.n1_b), eps, x1, mean1, rstd1)?;
    let h_pre = sized(&mut cache.h_pre, m * ff);
    linear_forward(m, d, ff, x1, w.l1_w, Some(w.l1_b), h_pre)?;
    let h = sized(&mut cache.h, m * ff);
    h.copy_from_slice(h_pre);
    relu_forward(h);
    drop_site(h, ff, offsets, drop, 1);
    let r2 = sized(&mut cache.r2, m * d);
    linear_forward(m, ff, d, h, w.l2_w, Some(w.l2_b), r2)?;
    drop_site(r2, d, offsets, drop, 2);
    r2.iter_mut().zip(x1.iter()).for_each(|(a, &b)| *a += b);
    let y = sized(&mut cache.y, m * d);
    let mean2 = sized(&mut cache.mean2, m);
    let rstd2 = sized(&mut cache.rstd2, m);
    layer_norm_forward(m, d, r2, Some(w.n2_w), Some(w.n2_b), eps, y, mean2, rstd2)
}

/// Backward of [`encoder_layer_forward`] (same `x`, weights, dropout and
/// cache): `dx += ∂L/∂x` given `dy = ∂L/∂y`; parameter gradients accumulate
/// into `g`.
#[allow(clippy::too_many_arguments)]
pub fn encoder_layer_backward(
    dims: &EncoderDims,
    offsets: &[usize],
    x: &[f32],
    w: &EncoderWeights<'_>,
    drop: Option<LayerDropout<'_>>,
    cache: &EncoderCache,
    dy: &[f32],
    dx: &mut [f32],
    g: &mut EncoderGrads<'_>,
    sc: &mut EncoderScratch,
) -> Result<(), TrainError> {
    let EncoderDims { d, heads, ff, .. } = *dims;
    let m = super::attention::check_offsets(offsets)?;
    need("encoder x", m * d, x.len())?;
    need("encoder dy", m * d, dy.len())?;
    need("encoder dx", m * d, dx.len())?;
    need("encoder cache", m * d, cache.y.len())?;
    need("encoder cache", m * ff, cache.h.len())?;
    if let Some(dr) = drop {
        need(
            "dropout keys",
            offsets.len().saturating_sub(1),
            dr.keys.len(),
        )?;
    }
    // LN2, then the FFN residual.
    let dr2 = sized(&mut sc.dr2, m * d);
    dr2.fill(0.0);
    layer_norm_backward(
        m,
        d,
        &cache.r2,
        &cache.mean2,
        &cache.rstd2,
        Some(w.n2_w),
        dy,
        dr2,
        Some(g.n2_w),
        Some(g.n2_b),
    )?;
    let dx1 = sized(&mut sc.dx1, m * d);
    dx1.copy_from_slice(dr2);
    drop_site(dr2, d, offsets, drop, 2);
    let dh = sized(&mut sc.dh, m * ff);
    dh.fill(0.0);
    linear_backward(
        m,
        ff,
        d,
        &cache.h,
        w.l2_w,
        dr2,
        Some(dh),
        g.l2_w,
        Some(g.l2_b),
        &mut sc.lin,
    )?;
    drop_site(dh, ff, offsets, drop, 1);
    relu_backward(&cache.h_pre, dh);
    linear_backward(
        m,
        d,
        ff,
        &cache.x1,
        w.l1_w,
        dh,
        Some(dx1),
        g.l1_w,
        Some(g.l1_b),
        &mut sc.lin,
    )?;
    // LN1, then the attention residual.
    let dr1 = sized(&mut sc.dr1, m * d);
    dr1.fill(0.0);
    layer_norm_backward(
        m,
        d,
        &cache.r1,
        &cache.mean1,
        &cache.rstd1,
        Some(w.n1_w),
        dx1,
        dr1,
        Some(g.n1_w),
        Some(g.n1_b),
    )?;
    dx.iter_mut().zip(dr1.iter()).for_each(|(a, &b)| *a += b);
    drop_site(dr1, d, offsets, drop, 0);
    mha_backward(
        d,
        heads,
        offsets,
        x,
        &w.mha,
        &cache.mha,
        dr1,
        dx,
        &mut g.mha,
        &mut sc.mha,
    )
}

/// The masked-row rule: rows of `y [rows × d]` at masked positions are zero.
pub fn mask_rows_forward(d: usize, mask: &[bool], y: &mut [f32]) {
    for (row, &m) in y.chunks_exact_mut(d.max(1)).zip(mask) {
        if m {
            row.fill(0.0);
        }
    }
}

/// Backward of [`mask_rows_forward`], in place on the gradient: masked rows
/// pass no gradient.
pub fn mask_rows_backward(d: usize, mask: &[bool], dy: &mut [f32]) {
    mask_rows_forward(d, mask, dy);
}

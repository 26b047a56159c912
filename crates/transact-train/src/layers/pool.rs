//! Max-pool over positions and the V1 output compression
//! `[W_o·maxpool_t(y_t) + b_o ; y_0 ; … ; y_{K−1}]`.
//!
//! Both work on a *packed* sequence: the encoder output rows of the
//! unmasked positions only, with `positions[i]` the original position of
//! packed row `i` (ascending). Masked positions are zero rows (the masked-row
//! rule), so when any position is masked a zero takes part in the max, as in
//! the CPU model.

use super::linear::{linear_backward, linear_forward};
use super::{TrainError, need};

/// Marks "the max came from an implicit zero row" in an argmax.
pub const ZERO_ROW: u32 = u32::MAX;

/// `out[j] = max_i y[i][j]` over `rows` rows of `y [rows × d]`, and over an
/// implicit zero row too when `implicit_zero`; `argmax[j]` is the winning row
/// ([`ZERO_ROW`] for the implicit zero; the first one on ties).
pub fn max_pool_forward(
    rows: usize,
    d: usize,
    y: &[f32],
    implicit_zero: bool,
    out: &mut [f32],
    argmax: &mut [u32],
) -> Result<(), TrainError> {
    need("max-pool y", rows * d, y.len())?;
    need("max-pool out", d, out.len())?;
    need("max-pool argmax", d, argmax.len())?;
    let (start, first) = if implicit_zero {
        (0.0, ZERO_ROW)
    } else {
        (f32::NEG_INFINITY, 0)
    };
    out[..d].fill(start);
    argmax[..d].fill(first);
    for (i, row) in y.chunks_exact(d.max(1)).take(rows).enumerate() {
        for j in 0..d {
            if row[j] > out[j] {
                out[j] = row[j];
                argmax[j] = i as u32;
            }
        }
    }
    Ok(())
}

/// Backward of [`max_pool_forward`]: `dy[argmax[j]][j] += dout[j]` (nothing
/// for an implicit zero row).
pub fn max_pool_backward(
    d: usize,
    argmax: &[u32],
    dout: &[f32],
    dy: &mut [f32],
) -> Result<(), TrainError> {
    need("max-pool argmax", d, argmax.len())?;
    need("max-pool dout", d, dout.len())?;
    for j in 0..d {
        let a = argmax[j];
        if a != ZERO_ROW {
            let idx = a as usize * d + j;
            need("max-pool dy", idx + 1, dy.len())?;
            dy[idx] += dout[j];
        }
    }
    Ok(())
}

/// Sizes of the output compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressDims {
    /// Model width `d`.
    pub d: usize,
    /// Sequence length `S` (positions, masked ones included).
    pub seq_len: usize,
    /// Newest positions kept, `K ≤ S`.
    pub kept: usize,
    /// Whether `W_o·maxpool + b_o` leads the output.
    pub max_pool: bool,
}

impl CompressDims {
    /// Output width `(K + 1)·d` (or `K·d` without max-pool).
    pub fn out_dim(&self) -> usize {
        (self.kept + usize::from(self.max_pool)) * self.d
    }
}

/// Output compression of one packed sequence `y [positions.len() × d]`:
/// `out = [W_o·pooled + b_o ; y_0 ; … ; y_{K−1}]`, masked positions zero.
/// Caches `pooled [d]` and `argmax [d]`. `w_o` is `(weight [d × d], bias [d])`,
/// required when `dims.max_pool`.
#[allow(clippy::too_many_arguments)]
pub fn compress_forward(
    dims: &CompressDims,
    positions: &[usize],
    y: &[f32],
    w_o: Option<(&[f32], &[f32])>,
    pooled: &mut [f32],
    argmax: &mut [u32],
    out: &mut [f32],
) -> Result<(), TrainError> {
    let d = dims.d;
    let n = positions.len();
    need("compress y", n * d, y.len())?;
    need("compress out", dims.out_dim(), out.len())?;
    let off = if dims.max_pool { d } else { 0 };
    let kept = &mut out[off..dims.out_dim()];
    kept.fill(0.0);
    for (i, &p) in positions.iter().enumerate() {
        if p < dims.kept {
            kept[p * d..(p + 1) * d].copy_from_slice(&y[i * d..(i + 1) * d]);
        }
    }
    if dims.max_pool {
        let (w, b) =
            w_o.ok_or_else(|| TrainError::Config("compress: max-pool needs W_o".into()))?;
        max_pool_forward(n, d, y, n < dims.seq_len, pooled, argmax)?;
        linear_forward(1, d, d, pooled, w, Some(b), &mut out[..d])?;
    }
    Ok(())
}

/// Backward of [`compress_forward`]: `dy += ∂L/∂y` (packed rows), and the
/// gradients of `W_o`, `b_o` accumulate into `dw_o`.
#[allow(clippy::too_many_arguments)]
pub fn compress_backward(
    dims: &CompressDims,
    positions: &[usize],
    w_o: Option<(&[f32], &[f32])>,
    pooled: &[f32],
    argmax: &[u32],
    dout: &[f32],
    dy: &mut [f32],
    dw_o: Option<(&mut [f32], &mut [f32])>,
    scratch: &mut Vec<f32>,
    dpooled: &mut [f32],
) -> Result<(), TrainError> {
    let d = dims.d;
    let n = positions.len();
    need("compress dy", n * d, dy.len())?;
    need("compress dout", dims.out_dim(), dout.len())?;
    let off = if dims.max_pool { d } else { 0 };
    for (i, &p) in positions.iter().enumerate() {
        if p < dims.kept {
            let g = &dout[off + p * d..off + (p + 1) * d];
            dy[i * d..(i + 1) * d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, &b)| *a += b);
        }
    }
    if dims.max_pool {
        let (w, _) =
            w_o.ok_or_else(|| TrainError::Config("compress: max-pool needs W_o".into()))?;
        let (dw, db) =
            dw_o.ok_or_else(|| TrainError::Config("compress: max-pool needs dW_o".into()))?;
        need("compress dpooled", d, dpooled.len())?;
        dpooled[..d].fill(0.0);
        linear_backward(
            1,
            d,
            d,
            pooled,
            w,
            &dout[..d],
            Some(&mut dpooled[..d]),
            dw,
            Some(db),
            scratch,
        )?;
        max_pool_backward(d, argmax, &dpooled[..d], dy)?;
    }
    Ok(())
}

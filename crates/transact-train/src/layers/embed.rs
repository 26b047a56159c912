//! Embedding gather / scatter-add and V1 early fusion.

use super::{TrainError, need};

fn row<'t>(table: &'t [f32], dim: usize, r: u32, what: &str) -> Result<&'t [f32], TrainError> {
    let r = r as usize;
    table
        .get(r * dim..(r + 1) * dim)
        .ok_or_else(|| TrainError::Shape {
            what: format!(
                "{what} row {r} (table has {} rows)",
                table.len() / dim.max(1)
            ),
            expected: (r + 1) * dim,
            got: table.len(),
        })
}

fn row_mut<'t>(
    table: &'t mut [f32],
    dim: usize,
    r: u32,
    what: &str,
) -> Result<&'t mut [f32], TrainError> {
    let len = table.len();
    let r = r as usize;
    table
        .get_mut(r * dim..(r + 1) * dim)
        .ok_or_else(|| TrainError::Shape {
            what: format!("{what} row {r}"),
            expected: (r + 1) * dim,
            got: len,
        })
}

/// Gathers `out[i] = table[rows[i]]` (`dim` values per row).
pub fn embedding_forward(
    table: &[f32],
    dim: usize,
    rows: &[u32],
    out: &mut [f32],
) -> Result<(), TrainError> {
    need("embedding out", rows.len() * dim, out.len())?;
    for (o, &r) in out.chunks_exact_mut(dim.max(1)).zip(rows) {
        o.copy_from_slice(row(table, dim, r, "embedding")?);
    }
    Ok(())
}

/// Scatter-add, the backward of [`embedding_forward`]: `dtable[rows[i]] += dout[i]`.
pub fn embedding_backward(
    dtable: &mut [f32],
    dim: usize,
    rows: &[u32],
    dout: &[f32],
) -> Result<(), TrainError> {
    need("embedding dout", rows.len() * dim, dout.len())?;
    for (g, &r) in dout.chunks_exact(dim.max(1)).zip(rows) {
        row_mut(dtable, dim, r, "embedding")?
            .iter_mut()
            .zip(g)
            .for_each(|(a, &b)| *a += b);
    }
    Ok(())
}

/// Sizes of the early-fusion tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusionDims {
    /// `d_act`.
    pub d_act: usize,
    /// `d_item`.
    pub d_item: usize,
    /// Whether the candidate's embedding is appended to every token.
    pub with_candidate: bool,
}

impl FusionDims {
    /// Token width `d_act + d_item (+ d_item)`.
    pub fn width(&self) -> usize {
        self.d_act + self.d_item * if self.with_candidate { 2 } else { 1 }
    }
}

/// Tokens `x_t = [E_act(actions[t]) ; E_item(items[t]) (; E_item(cand))]`
/// into `out [n × width]`. No position encoding.
#[allow(clippy::too_many_arguments)]
pub fn early_fusion_forward(
    dims: &FusionDims,
    action_table: &[f32],
    item_table: &[f32],
    actions: &[u32],
    items: &[u32],
    cand: u32,
    out: &mut [f32],
) -> Result<(), TrainError> {
    let (da, di, w) = (dims.d_act, dims.d_item, dims.width());
    need("early fusion items", actions.len(), items.len())?;
    need("early fusion out", actions.len() * w, out.len())?;
    let c = if dims.with_candidate {
        row(item_table, di, cand, "candidate item")?
    } else {
        &[]
    };
    for ((tok, &a), &it) in out.chunks_exact_mut(w.max(1)).zip(actions).zip(items) {
        tok[..da].copy_from_slice(row(action_table, da, a, "action")?);
        tok[da..da + di].copy_from_slice(row(item_table, di, it, "sequence item")?);
        tok[da + di..].copy_from_slice(c);
    }
    Ok(())
}

/// Backward of [`early_fusion_forward`]: scatter-adds the token gradients
/// into the action table (row 0, the padding row, receives nothing, as
/// PyTorch's `padding_idx`) and, when `ditem` is given, into the item table
/// rows of the sequence items and of the candidate.
#[allow(clippy::too_many_arguments)]
pub fn early_fusion_backward(
    dims: &FusionDims,
    daction: Option<&mut [f32]>,
    ditem: Option<&mut [f32]>,
    actions: &[u32],
    items: &[u32],
    cand: u32,
    dout: &[f32],
) -> Result<(), TrainError> {
    let (da, di, w) = (dims.d_act, dims.d_item, dims.width());
    need("early fusion items", actions.len(), items.len())?;
    need("early fusion dout", actions.len() * w, dout.len())?;
    let n = actions.len();
    if let Some(dact) = daction {
        for (tok, &a) in dout.chunks_exact(w.max(1)).zip(actions).take(n) {
            if a != 0 {
                let r = row_mut(dact, da, a, "action")?;
                r.iter_mut().zip(&tok[..da]).for_each(|(x, &g)| *x += g);
            }
        }
    }
    if let Some(ditem) = ditem {
        for (tok, &it) in dout.chunks_exact(w.max(1)).zip(items).take(n) {
            let r = row_mut(ditem, di, it, "sequence item")?;
            r.iter_mut()
                .zip(&tok[da..da + di])
                .for_each(|(x, &g)| *x += g);
        }
        if dims.with_candidate && n > 0 {
            let r = row_mut(ditem, di, cand, "candidate item")?;
            for tok in dout.chunks_exact(w.max(1)).take(n) {
                r.iter_mut()
                    .zip(&tok[da + di..])
                    .for_each(|(x, &g)| *x += g);
            }
        }
    }
    Ok(())
}

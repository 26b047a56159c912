//! A plain reference implementation of the V2 block and encoder: one
//! candidate at a time, explicit loops and explicit `-inf` masks, the
//! weights used exactly as the formulas are written (separate `Wq` and
//! `Wk`). Slow; the fast path and the GPU port are tested against it.

// Explicit index loops are the point of an oracle: they read like the formulas.
#![allow(clippy::needless_range_loop)]

use super::V2Encoder;
use super::block::V2Block;

/// `y[n] = Σ_k x[k] · W[k][n]` for `W` laid out `[d_in × d_out]`.
fn vec_mat(x: &[f32], w: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; d_out];
    for k in 0..d_in {
        for (n, yv) in y.iter_mut().enumerate() {
            *yv += x[k] * w[k * d_out + n];
        }
    }
    y
}

fn layer_norm(row: &mut [f32], eps: f32) {
    let d = row.len() as f32;
    let mean = row.iter().sum::<f32>() / d;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for v in row.iter_mut() {
        *v = (*v - mean) * rstd;
    }
}

/// The block on one candidate row, `x [seq × d]` in place, `len` valid tokens.
fn block_row(blk: &V2Block, x: &mut [f32], seq: usize, len: usize, causal: bool, eps: f32) {
    let (d, f) = (blk.d_model(), blk.dim_feedforward());
    let n = len.max(1);
    let row = |x: &[f32], t: usize| x[t * d..(t + 1) * d].to_vec();
    let q: Vec<Vec<f32>> = (0..seq)
        .map(|t| vec_mat(&row(x, t), blk.wq(), d, d))
        .collect();
    let k: Vec<Vec<f32>> = (0..seq)
        .map(|t| vec_mat(&row(x, t), blk.wk(), d, d))
        .collect();
    let v: Vec<Vec<f32>> = (0..seq)
        .map(|t| vec_mat(&row(x, t), blk.wv(), d, d))
        .collect();
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; seq * d];
    for t in 0..seq {
        let mut s = vec![0.0f32; seq];
        for (j, sj) in s.iter_mut().enumerate() {
            let dot: f32 = q[t].iter().zip(&k[j]).map(|(a, b)| a * b).sum();
            let pad = if j >= n { f32::NEG_INFINITY } else { 0.0 };
            let cau = if causal && j > t {
                f32::NEG_INFINITY
            } else {
                0.0
            };
            *sj = dot * scale + pad + cau;
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = s
            .iter()
            .map(|&v| {
                if v == f32::NEG_INFINITY {
                    0.0
                } else {
                    (v - max).exp()
                }
            })
            .collect();
        let sum: f32 = e.iter().sum();
        let mut x1 = row(x, t);
        for (j, &ej) in e.iter().enumerate() {
            if sum > 0.0 {
                for c in 0..d {
                    x1[c] += ej / sum * v[j][c];
                }
            }
        }
        layer_norm(&mut x1, eps);
        let mut hdn = vec_mat(&x1, blk.w1(), d, f);
        hdn.iter_mut().for_each(|h| *h = h.max(0.0));
        let ff = vec_mat(&hdn, blk.w2(), f, d);
        for c in 0..d {
            x1[c] += ff[c];
        }
        layer_norm(&mut x1, eps);
        out[t * d..(t + 1) * d].copy_from_slice(&x1);
    }
    // Padded rows of the output are zero.
    out[n * d..].fill(0.0);
    x[..seq * d].copy_from_slice(&out);
}

/// The block over a batch, in place (same contract as
/// [`V2Block::block_forward`], no input checks).
pub fn block_forward_naive(
    blk: &V2Block,
    x: &mut [f32],
    batch: usize,
    seq: usize,
    lens: &[usize],
    causal: bool,
    eps: f32,
) {
    let d = blk.d_model();
    for b in 0..batch {
        block_row(
            blk,
            &mut x[b * seq * d..(b + 1) * seq * d],
            seq,
            lens[b],
            causal,
            eps,
        );
    }
}

impl V2Encoder {
    /// The encoder computed the slow, obvious way (one candidate at a time,
    /// explicit loops and masks): the oracle for [`V2Encoder::forward`].
    /// Checks its inputs like `forward`.
    pub fn forward_naive(
        &self,
        req: &super::V2Request<'_>,
        out: &mut [f32],
    ) -> Result<(), crate::ModelError> {
        self.check_request(req, out)?;
        let cfg = self.config();
        let (d, di, s) = (cfg.d_model(), cfg.item_emb_dim, req.seq);
        let k_out = cfg.latest_n_emb.min(cfg.seq_len);
        let od = cfg.output_dim();
        for b in 0..req.batch {
            let n = req.lens[b].max(1);
            let mut x = vec![0.0f32; s * d];
            for t in 0..n {
                let tok = &mut x[t * d..(t + 1) * d];
                let e = &req.item_embeddings[(b * s + t) * di..(b * s + t + 1) * di];
                let c = &req.candidates[b * di..(b + 1) * di];
                tok[..di].copy_from_slice(e);
                tok[di..].copy_from_slice(c);
                let mask = req.action_masks[b * s + t];
                for a in 0..cfg.num_action_types {
                    if mask >> a & 1 == 1 {
                        for ch in 0..d {
                            tok[ch] += self.action_emb[a * d + ch];
                        }
                    }
                }
                let sf = usize::from(req.surfaces[b * s + t]);
                let p = n - 1 - t;
                for ch in 0..d {
                    tok[ch] += self.surface_emb[sf * d + ch] + self.position_emb[p * d + ch];
                }
            }
            for blk in &self.blocks {
                block_row(blk, &mut x, s, n, cfg.causal, cfg.layer_norm_eps);
            }
            let o = &mut out[b * od..(b + 1) * od];
            o.fill(0.0);
            let mut pool = vec![f32::NEG_INFINITY; d];
            for t in 0..s {
                for ch in 0..d {
                    pool[ch] = pool[ch].max(x[t * d + ch]);
                }
            }
            for r in 0..d {
                let mut acc = self.out_bias[r];
                for c in 0..d {
                    acc += self.out_weight[r * d + c] * pool[c];
                }
                o[r] = acc;
            }
            for kk in 0..k_out.min(n) {
                let t = n - 1 - kk;
                o[(kk + 1) * d..(kk + 2) * d].copy_from_slice(&x[t * d..(t + 1) * d]);
            }
        }
        Ok(())
    }
}

//! The naive forward: each example is its own sequence of `seq_len` tokens,
//! computed with plain loops (f64 accumulation), explicit additive `-inf`
//! key masks, no packing and no de-duplication. It is the oracle the fast
//! path is tested against, and the path the parity check runs.

use super::{EncoderLayer, MaskedRows, TransActV1, V1Batch, check_window, is_masked};
use crate::ModelError;

impl TransActV1 {
    /// The reference forward in inference mode (mask: padding, or
    /// `request_time - t < 0`; position 0 never masked). `out` is
    /// `B × output_dim`. With [`MaskedRows::Zero`] it matches
    /// [`TransActV1::forward_request`] run per example.
    pub fn forward_batch_reference(
        &self,
        batch: &V1Batch<'_>,
        masked_rows: MaskedRows,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        self.forward_batch_reference_with_window(batch, 0, masked_rows, out)
    }

    /// [`TransActV1::forward_batch_reference`] with the training-mode time
    /// mask: positions with `request_time - t < time_window_ms` are masked
    /// (`0` is the inference rule). A negative window is an error.
    pub fn forward_batch_reference_with_window(
        &self,
        batch: &V1Batch<'_>,
        time_window_ms: i64,
        masked_rows: MaskedRows,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        check_window(time_window_ms)?;
        let (b, seq) = (batch.batch, batch.seq);
        let di = self.cfg.item_emb_dim;
        if b == 0 {
            return Err(ModelError::BadInput {
                name: "batch".into(),
                detail: "no examples (B = 0)".into(),
            });
        }
        ModelError::check_len("action_types", b * seq, batch.action_types.len())?;
        ModelError::check_len("item_embeddings", b * seq * di, batch.item_embeddings.len())?;
        ModelError::check_len("action_times_ms", b * seq, batch.action_times_ms.len())?;
        ModelError::check_len("request_times_ms", b, batch.request_times_ms.len())?;
        ModelError::check_len("candidates", b * di, batch.candidates.len())?;
        ModelError::check_len("out", b * self.output_dim(), out.len())?;
        ModelError::check_finite("item_embeddings", batch.item_embeddings)?;
        ModelError::check_finite("candidates", batch.candidates)?;

        let s = self.cfg.seq_len;
        let used = seq.min(s);
        let od = self.output_dim();
        let (all_rows, all_masked) = self.batch_masks(batch, time_window_ms)?;
        for ex in 0..b {
            let items = &batch.item_embeddings[ex * seq * di..][..used * di];
            let cand = &batch.candidates[ex * di..][..di];
            let rows = &all_rows[ex * s..(ex + 1) * s];
            let masked = &all_masked[ex * s..(ex + 1) * s];
            let mut x = self.tokens(rows, items, cand);
            for layer in &self.params.layers {
                x = self.naive_layer(layer, &x, masked);
            }
            let d = self.cfg.d_model();
            if masked_rows == MaskedRows::Zero {
                for (row, &m) in x.chunks_exact_mut(d).zip(masked) {
                    if m {
                        row.fill(0.0);
                    }
                }
            }
            self.naive_output(&x, &mut out[ex * od..(ex + 1) * od]);
        }
        Ok(())
    }

    /// Embedding rows and masks (`B × seq_len` each, padded tail included)
    /// of a batch whose lengths were checked.
    pub(crate) fn batch_masks(
        &self,
        batch: &V1Batch<'_>,
        time_window_ms: i64,
    ) -> Result<(Vec<usize>, Vec<bool>), ModelError> {
        let s = self.cfg.seq_len;
        let seq = batch.seq;
        let used = seq.min(s);
        let mut rows = vec![0usize; batch.batch * s];
        let mut masked = vec![false; batch.batch * s];
        for ex in 0..batch.batch {
            let ids = batch
                .action_types
                .get(ex * seq..ex * seq + used)
                .unwrap_or(&[]);
            let times = batch
                .action_times_ms
                .get(ex * seq..ex * seq + used)
                .unwrap_or(&[]);
            let req_t = batch.request_times_ms.get(ex).copied().unwrap_or(0);
            for p in 0..s {
                let k = ex * s + p;
                match (ids.get(p), times.get(p)) {
                    (Some(&id), Some(&t)) => {
                        rows[k] = self.action_row(id, p).map_err(|e| at_example(e, ex))?;
                        masked[k] = is_masked(p, rows[k], req_t, t, time_window_ms);
                    }
                    // The padded tail: padding actions with zero item embeddings.
                    _ => masked[k] = p != 0,
                }
            }
        }
        Ok((rows, masked))
    }

    /// The `S × d` input tokens `[E_act(a_t) ; e_t ; e_c]` (the candidate
    /// part only with early fusion); item embeddings past `items` are zero.
    fn tokens(&self, rows: &[usize], items: &[f32], cand: &[f32]) -> Vec<f32> {
        let (da, di, d) = (
            self.cfg.action_emb_dim,
            self.cfg.item_emb_dim,
            self.cfg.d_model(),
        );
        let mut x = vec![0.0f32; rows.len() * d];
        for (p, tok) in x.chunks_exact_mut(d).enumerate() {
            tok[..da].copy_from_slice(self.action_embedding(rows[p]));
            if let Some(e) = items.get(p * di..(p + 1) * di) {
                tok[da..da + di].copy_from_slice(e);
            }
            if self.cfg.concat_candidate_emb {
                tok[da + di..].copy_from_slice(cand);
            }
        }
        x
    }

    /// One post-norm encoder layer over `S` tokens with a key mask.
    fn naive_layer(&self, l: &EncoderLayer, x: &[f32], masked: &[bool]) -> Vec<f32> {
        let d = self.cfg.d_model();
        let h = self.cfg.nhead;
        let dh = d / h;
        let s = masked.len();
        let eps = f64::from(self.cfg.layer_norm_eps);
        let qkv = naive_linear(x, d, &l.in_proj_weight, &l.in_proj_bias, 3 * d);
        let scale = 1.0 / (dh as f64).sqrt();
        let mut attn = vec![0.0f32; s * d];
        let mut scores = vec![0.0f64; s];
        for head in 0..h {
            for t in 0..s {
                let q = &qkv[t * 3 * d + head * dh..][..dh];
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc = if masked[j] {
                        f64::NEG_INFINITY
                    } else {
                        let k = &qkv[j * 3 * d + d + head * dh..][..dh];
                        scale
                            * q.iter()
                                .zip(k)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum::<f64>()
                    };
                }
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                for c in 0..dh {
                    let mut acc = 0.0f64;
                    for (j, &p) in scores.iter().enumerate() {
                        acc += p * f64::from(qkv[j * 3 * d + 2 * d + head * dh + c]);
                    }
                    attn[t * d + head * dh + c] = (acc / sum) as f32;
                }
            }
        }
        let o = naive_linear(&attn, d, &l.out_proj_weight, &l.out_proj_bias, d);
        let mut x1: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
        for row in x1.chunks_exact_mut(d) {
            naive_layer_norm(row, &l.norm1_weight, &l.norm1_bias, eps);
        }
        let ff = self.cfg.dim_feedforward;
        let mut hid = naive_linear(&x1, d, &l.linear1_weight, &l.linear1_bias, ff);
        hid.iter_mut().for_each(|v| *v = v.max(0.0));
        let f = naive_linear(&hid, ff, &l.linear2_weight, &l.linear2_bias, d);
        let mut x2: Vec<f32> = x1.iter().zip(&f).map(|(a, b)| a + b).collect();
        for row in x2.chunks_exact_mut(d) {
            naive_layer_norm(row, &l.norm2_weight, &l.norm2_bias, eps);
        }
        x2
    }

    /// `[out_linear(max over the S rows) ; y_0 … y_{K-1}]`.
    fn naive_output(&self, y: &[f32], out: &mut [f32]) {
        let d = self.cfg.d_model();
        let k = self.cfg.kept_positions();
        let mut off = 0;
        if let Some((w, b)) = &self.params.out_linear {
            let mut pooled = vec![f32::NEG_INFINITY; d];
            for row in y.chunks_exact(d) {
                for (m, &v) in pooled.iter_mut().zip(row) {
                    *m = m.max(v);
                }
            }
            let o = naive_linear(&pooled, d, w, b, d);
            out[..d].copy_from_slice(&o);
            off = d;
        }
        out[off..off + k * d].copy_from_slice(&y[..k * d]);
    }
}

/// `y[m × d_out] = x[m × d_in] · Wᵀ + b`, `W` stored `[d_out × d_in]`, f64 sums.
fn naive_linear(x: &[f32], d_in: usize, w: &[f32], b: &[f32], d_out: usize) -> Vec<f32> {
    let m = x.len() / d_in;
    let mut y = vec![0.0f32; m * d_out];
    for (xr, yr) in x.chunks_exact(d_in).zip(y.chunks_exact_mut(d_out)) {
        for (o, yv) in yr.iter_mut().enumerate() {
            let wr = &w[o * d_in..(o + 1) * d_in];
            let s: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            *yv = (s + f64::from(b[o])) as f32;
        }
    }
    y
}

/// LayerNorm of one row, in f64.
fn naive_layer_norm(row: &mut [f32], g: &[f32], b: &[f32], eps: f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(g).zip(b) {
        *v = ((f64::from(*v) - mean) * rstd * f64::from(g) + f64::from(b)) as f32;
    }
}

/// Adds the example index to a per-position input error.
fn at_example(e: ModelError, ex: usize) -> ModelError {
    match e {
        ModelError::BadInput { name, detail } => ModelError::BadInput {
            name,
            detail: format!("example {ex}, {detail}"),
        },
        other => other,
    }
}

//! The request-level, de-duplicated forward. The module documentation of
//! [`crate::v1`] explains what is shared and why it is exact.

use rayon::prelude::*;
use transact_embed::kernels::{self, RhsLayout};

use super::layers::{
    Dims, add_into, finish_layer, internal, linear, matmul, part, part_mut, sized,
};
use super::packing::PackedRequest;
use super::{Params, TransActV1, V1Request, check_window};
use crate::{ModelError, V1Config};

/// Target token rows per chunk of candidates (a chunk's activations stay in L2).
const CHUNK_ROWS: usize = 1600;
/// Most candidates per chunk.
const MAX_CHUNK: usize = 64;
/// Smallest softmax denominator trusted from the factored first-layer
/// attention; below it the row is recomputed directly.
const MIN_DENOMINATOR: f32 = 1e-25;
/// Smallest `B` for the factored first layer (measured crossover at
/// S = 100, d = 96: B ≈ 16–64).
pub(crate) const FACTORED_MIN_CANDIDATES: usize = 24;
/// Largest per-request table `G` (in floats, `h · S_e² · (d/h + 1)`) the
/// factored first layer builds; longer sequences run the first layer per
/// token like the later ones (`2^24` floats = 64 MiB, reached near `S_e ≈ 400`
/// at `d = 96`).
const MAX_TABLE: usize = 1 << 24;

/// Weights re-laid out for the fast path.
#[derive(Clone, Debug)]
pub(crate) struct FastWeights {
    /// Per layer: `in_proj_weight` `[3d × d]` with the query rows scaled by `1/sqrt(d/h)`.
    pub(super) in_w: Vec<Vec<f32>>,
    /// Per layer: `in_proj_bias` `[3d]`, query part scaled likewise.
    pub(super) in_b: Vec<Vec<f32>>,
    /// Per layer: `out_proj.weight` split by head, `h` blocks of `[d × d/h]`.
    pub(super) out_w_heads: Vec<Vec<f32>>,
    /// First layer with early fusion: the user columns `[3d × (d_act + d_item)]` of `in_w[0]`.
    pub(super) first_user: Vec<f32>,
    /// First layer with early fusion: the candidate columns `[3d × d_item]` of `in_w[0]`.
    pub(super) first_cand: Vec<f32>,
}

impl FastWeights {
    /// Derives the fast layouts from the reference-shaped parameters.
    pub(crate) fn derive(cfg: &V1Config, p: &Params) -> Result<Self, ModelError> {
        let d = cfg.d_model();
        let h = cfg.nhead;
        let dh = d / h;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut fw = FastWeights {
            in_w: Vec::new(),
            in_b: Vec::new(),
            out_w_heads: Vec::new(),
            first_user: Vec::new(),
            first_cand: Vec::new(),
        };
        for (i, l) in p.layers.iter().enumerate() {
            ModelError::check_len(
                &format!("layer {i} in_proj_weight"),
                3 * d * d,
                l.in_proj_weight.len(),
            )?;
            ModelError::check_len(
                &format!("layer {i} in_proj_bias"),
                3 * d,
                l.in_proj_bias.len(),
            )?;
            ModelError::check_len(
                &format!("layer {i} out_proj.weight"),
                d * d,
                l.out_proj_weight.len(),
            )?;
            let mut w = l.in_proj_weight.clone();
            w[..d * d].iter_mut().for_each(|v| *v *= scale);
            let mut b = l.in_proj_bias.clone();
            b[..d].iter_mut().for_each(|v| *v *= scale);
            let mut heads = vec![0.0f32; d * d];
            for head in 0..h {
                let block = &mut heads[head * d * dh..(head + 1) * d * dh];
                for (o, dst) in block.chunks_exact_mut(dh).enumerate() {
                    dst.copy_from_slice(&l.out_proj_weight[o * d + head * dh..][..dh]);
                }
            }
            fw.in_w.push(w);
            fw.in_b.push(b);
            fw.out_w_heads.push(heads);
        }
        if cfg.concat_candidate_emb {
            let du = cfg.action_emb_dim + cfg.item_emb_dim;
            let di = cfg.item_emb_dim;
            let w0 = fw.in_w.first().map(Vec::as_slice).unwrap_or(&[]);
            for row in w0.chunks_exact(d) {
                fw.first_user.extend_from_slice(&row[..du]);
                fw.first_cand.extend_from_slice(&row[du..du + di]);
            }
        }
        Ok(fw)
    }
}

/// Per-request scratch: the packed sequence and the shared first-layer tables.
#[derive(Default, Debug)]
pub(crate) struct RequestScratch {
    /// The checked request: action rows and kept (unmasked) positions.
    packed: PackedRequest,
    /// `[S_e × (d_act + d_item)]` packed user tokens `[E_act(a_t) ; e_t]`.
    xu: Vec<f32>,
    /// First layer: `[3 × h × S_e × d_h]` user parts of q (scaled), k, v.
    u: Vec<f32>,
    /// First layer: `[h × Q × S_e]` scaled user–user scores `A`.
    a: Vec<f32>,
    /// First layer: `[d_h × S_e]` one head's `Uv`, transposed.
    vt: Vec<f32>,
    /// First layer: `[h × Q·(d_h + 1) × S_e]` the table `G` (with the `E` column).
    g: Vec<f32>,
}

/// Per-chunk scratch (one chunk of candidates on one thread).
#[derive(Default, Debug)]
pub(crate) struct ChunkScratch {
    pub(super) x: Vec<f32>,
    pub(super) y: Vec<f32>,
    pub(super) qkv: Vec<f32>,
    pub(super) attn: Vec<f32>,
    pub(super) hid: Vec<f32>,
    pub(super) scores: Vec<f32>,
    pub(super) cq: Vec<f32>,
    pub(super) cv: Vec<f32>,
    pub(super) r: Vec<f32>,
    pub(super) w: Vec<f32>,
    pub(super) nd: Vec<f32>,
    pub(super) prob: Vec<f32>,
    pub(super) pooled: Vec<f32>,
    pub(super) pooled_out: Vec<f32>,
}

impl TransActV1 {
    /// Scores one request: `out` (`B × output_dim`) receives, per candidate,
    /// `[out_linear(maxpool(y)) ; y_0 … y_{K-1}]` for the encoder output `y`
    /// of the sequence fused with that candidate (inference masks: padding,
    /// or `request_time - t < 0`; position 0 is never masked; masked rows of
    /// `y` are zero).
    ///
    /// Errors (nothing is computed): wrong lengths, `n > seq_len`, `B = 0`,
    /// non-finite embeddings, an action id outside the vocabulary (in
    /// [`crate::VocabMode::Padded`]; the reference mode treats it as padding).
    ///
    /// ```
    /// use transact_model::{TransActV1, V1Config, V1Request};
    ///
    /// let cfg = V1Config {
    ///     seq_len: 4,
    ///     latest_n_emb: 2,
    ///     action_emb_dim: 4,
    ///     item_emb_dim: 4,
    ///     ..V1Config::default()
    /// };
    /// let model = TransActV1::new_random(cfg, 7)?;
    /// // Three actions, newest first; the oldest is padding.
    /// let req = V1Request {
    ///     action_types: &[1, 2, -1],
    ///     item_embeddings: &[0.1; 3 * 4],
    ///     action_times_ms: &[1_000, 900, 0],
    ///     request_time_ms: 2_000,
    ///     candidates: &[0.5; 2 * 4], // B = 2
    /// };
    /// let mut out = vec![0.0; 2 * model.output_dim()];
    /// model.forward_request(&req, &mut out)?;
    /// assert_eq!(model.output_dim(), (2 + 1) * 12);
    /// assert!(out.iter().all(|v| v.is_finite()));
    /// # Ok::<(), transact_model::ModelError>(())
    /// ```
    pub fn forward_request(&self, req: &V1Request<'_>, out: &mut [f32]) -> Result<(), ModelError> {
        self.forward_request_with_window(req, 0, out)
    }

    /// [`TransActV1::forward_request`] with the training-mode time mask:
    /// positions with `request_time - t < time_window_ms` are masked
    /// (`0` is the inference rule `< 0`; a negative window is an error).
    pub fn forward_request_with_window(
        &self,
        req: &V1Request<'_>,
        time_window_ms: i64,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        check_window(time_window_ms)?;
        let mut rq = self.request_pool.take();
        let res = rq
            .packed
            .pack(&self.cfg, &self.action_rows, req, time_window_ms)
            .and_then(|()| {
                let b = rq.packed.batch;
                ModelError::check_len("out", b * self.cfg.output_dim(), out.len())?;
                self.request_inner(req, b, out, &mut rq)
            });
        self.request_pool.put(rq);
        res
    }

    fn request_inner(
        &self,
        req: &V1Request<'_>,
        b: usize,
        out: &mut [f32],
        rq: &mut RequestScratch,
    ) -> Result<(), ModelError> {
        let cfg = &self.cfg;
        let (da, di) = (cfg.action_emb_dim, cfg.item_emb_dim);
        let du = da + di;
        let se = rq.packed.keep.len();
        let k = cfg.kept_positions();
        let k_eff = rq.packed.keep.iter().take_while(|&&p| p < k).count();
        let d = cfg.d_model();
        let dm = Dims {
            d,
            di,
            du,
            h: cfg.nhead,
            dh: d / cfg.nhead,
            ff: cfg.dim_feedforward,
            s: cfg.seq_len,
            se,
            k,
            q_last: if cfg.concat_max_pool { se } else { k_eff },
            od: cfg.output_dim(),
            eps: cfg.layer_norm_eps,
            factored: false,
        };
        // Packed user tokens.
        let xu = sized(&mut rq.xu, se * du);
        for (tok, &p) in xu.chunks_exact_mut(du).zip(&rq.packed.keep) {
            let row = rq.packed.rows.get(p).copied().unwrap_or(0);
            tok[..da].copy_from_slice(self.action_embedding(row));
            match req.item_embeddings.get(p * di..(p + 1) * di) {
                Some(e) => tok[da..].copy_from_slice(e),
                None => tok[da..].fill(0.0),
            }
        }

        if !cfg.concat_candidate_emb {
            // Tokens do not depend on the candidate: encode once, copy B times.
            let mut cs = self.chunk_pool.take();
            let res = self.encode_shared(&dm, rq, &mut cs, out);
            self.chunk_pool.put(cs);
            return res;
        }

        let layers = self.params.layers.len();
        let q1 = if layers == 1 { dm.q_last } else { se };
        let table = dm.h * q1 * (dm.dh + 1) * se;
        let factored = table <= MAX_TABLE && b >= self.factored_min_candidates;
        let dm = Dims { factored, ..dm };
        if dm.factored {
            self.prepare_first_layer(&dm, q1, rq)?;
        }

        let threads = rayon::current_num_threads().max(1);
        let target = (CHUNK_ROWS / se).clamp(1, MAX_CHUNK);
        let n_chunks = b.div_ceil(target).max(threads.min(b));
        let bc = b.div_ceil(n_chunks);
        let rq: &RequestScratch = rq;
        let run = |(cands, o): (&[f32], &mut [f32])| -> Result<(), ModelError> {
            let mut cs = self.chunk_pool.take();
            let res = self.run_chunk(&dm, rq, q1, cands, o, &mut cs);
            self.chunk_pool.put(cs);
            res
        };
        if b.div_ceil(bc) <= 1 {
            run((req.candidates, out))
        } else {
            req.candidates
                .par_chunks(bc * di)
                .zip(out.par_chunks_mut(bc * dm.od))
                .try_for_each(run)
        }
    }

    /// Per request, first layer: `U` (user parts of q, k, v), the scores
    /// `A = Uq·Ukᵀ` and the table `G` for the first `q1` packed query rows.
    fn prepare_first_layer(
        &self,
        dm: &Dims,
        q1: usize,
        rq: &mut RequestScratch,
    ) -> Result<(), ModelError> {
        let Dims {
            d, du, h, dh, se, ..
        } = *dm;
        let fw = &self.fast;
        let u = sized(&mut rq.u, 3 * h * se * dh);
        let xu = part(&rq.xu, 0, se * du)?;
        for kind in 0..3 {
            for head in 0..h {
                let w = part(&fw.first_user, (kind * d + head * dh) * du, dh * du)?;
                let dst = part_mut(u, (kind * h + head) * se * dh, se * dh)?;
                linear(se, du, dh, xu, w, None, dst)?;
            }
        }
        let u: &[f32] = u;
        let a = sized(&mut rq.a, h * q1 * se);
        let vt = sized(&mut rq.vt, dh * se);
        let gw = q1 * (dh + 1) * se;
        let g = sized(&mut rq.g, h * gw);
        for head in 0..h {
            let uq = part(u, head * se * dh, q1 * dh)?;
            let uk = part(u, (h + head) * se * dh, se * dh)?;
            let uv = part(u, (2 * h + head) * se * dh, se * dh)?;
            let ah = part_mut(a, head * q1 * se, q1 * se)?;
            matmul(q1, se, dh, uq, uk, RhsLayout::NxK, ah, false)?;
            for (s, row) in uv.chunks_exact(dh).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    vt[j * se + s] = v;
                }
            }
            let gh = part_mut(g, head * gw, gw)?;
            for (t, arow) in ah.chunks_exact(se).enumerate() {
                let max = kernels::max_fast(arow);
                let block = &mut gh[t * (dh + 1) * se..(t + 1) * (dh + 1) * se];
                let (vals, erow) = block.split_at_mut(dh * se);
                for (e, &av) in erow.iter_mut().zip(arow) {
                    *e = kernels::exp_approx(av - max);
                }
                for (dst, vrow) in vals.chunks_exact_mut(se).zip(vt.chunks_exact(se)) {
                    for ((o, &e), &v) in dst.iter_mut().zip(erow.iter()).zip(vrow) {
                        *o = e * v;
                    }
                }
            }
        }
        Ok(())
    }

    /// One chunk of candidates through every layer, then into `out`.
    fn run_chunk(
        &self,
        dm: &Dims,
        rq: &RequestScratch,
        q1: usize,
        cands: &[f32],
        out: &mut [f32],
        cs: &mut ChunkScratch,
    ) -> Result<(), ModelError> {
        let bc = cands.len() / dm.di;
        if dm.factored {
            self.first_layer_chunk(dm, rq, q1, cands, bc, cs)?;
        } else {
            // Full tokens [x_t ; e_c] for every candidate, then a standard layer.
            let (d, du, di, se) = (dm.d, dm.du, dm.di, dm.se);
            let x = sized(&mut cs.x, bc * se * d);
            for (c, xc) in x.chunks_exact_mut(se * d).enumerate() {
                let cand = part(cands, c * di, di)?;
                for (t, row) in xc.chunks_exact_mut(d).enumerate() {
                    row[..du].copy_from_slice(part(&rq.xu, t * du, du)?);
                    row[du..].copy_from_slice(cand);
                }
            }
            self.layer_chunk(0, dm, bc, se, q1, cs)?;
        }
        let layers = self.params.layers.len();
        let mut rows = q1;
        for l in 1..layers {
            let q = if l + 1 == layers { dm.q_last } else { dm.se };
            self.layer_chunk(l, dm, bc, rows, q, cs)?;
            rows = q;
        }
        self.write_outputs(dm, &rq.packed.keep, bc, rows, cs, out)
    }

    /// Without early fusion: the sequence is encoded once and its output
    /// copied to every candidate.
    fn encode_shared(
        &self,
        dm: &Dims,
        rq: &RequestScratch,
        cs: &mut ChunkScratch,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let n = dm.se * dm.d;
        part_mut(sized(&mut cs.x, n), 0, n)?.copy_from_slice(part(&rq.xu, 0, n)?);
        let layers = self.params.layers.len();
        let mut rows = dm.se;
        for l in 0..layers {
            let q = if l + 1 == layers { dm.q_last } else { dm.se };
            self.layer_chunk(l, dm, 1, rows, q, cs)?;
            rows = q;
        }
        let (first, rest) = out.split_at_mut(dm.od.min(out.len()));
        self.write_outputs(dm, &rq.packed.keep, 1, rows, cs, first)?;
        for o in rest.chunks_exact_mut(dm.od) {
            o.copy_from_slice(first);
        }
        Ok(())
    }

    /// First layer for a chunk of `bc` candidates (early fusion), from the
    /// per-request tables; leaves `[bc·q1 × d]` in `cs.x`.
    fn first_layer_chunk(
        &self,
        dm: &Dims,
        rq: &RequestScratch,
        q1: usize,
        cands: &[f32],
        bc: usize,
        cs: &mut ChunkScratch,
    ) -> Result<(), ModelError> {
        let Dims {
            d,
            di,
            du,
            h,
            dh,
            se,
            ..
        } = *dm;
        let fw = &self.fast;
        let in_b = self
            .fast
            .in_b
            .first()
            .ok_or_else(|| internal("no layers"))?;
        let m = bc * q1;
        let attn = sized(&mut cs.attn, h * m * dh);
        let cq = sized(&mut cs.cq, bc * dh);
        let cv = sized(&mut cs.cv, bc * dh);
        let r = sized(&mut cs.r, bc * se);
        let w = sized(&mut cs.w, bc * se);
        let nd = sized(&mut cs.nd, q1 * (dh + 1) * bc);
        let prob = sized(&mut cs.prob, se);
        let gw = q1 * (dh + 1) * se;
        for head in 0..h {
            // Candidate parts of this head's query and value (biases included).
            let wq = part(&fw.first_cand, head * dh * di, dh * di)?;
            let wv = part(&fw.first_cand, (2 * d + head * dh) * di, dh * di)?;
            linear(bc, di, dh, cands, wq, Some(part(in_b, head * dh, dh)?), cq)?;
            linear(
                bc,
                di,
                dh,
                cands,
                wv,
                Some(part(in_b, 2 * d + head * dh, dh)?),
                cv,
            )?;
            let uk = part(&rq.u, (h + head) * se * dh, se * dh)?;
            matmul(bc, se, dh, cq, uk, RhsLayout::NxK, r, false)?;
            for (rrow, wrow) in r.chunks_exact(se).zip(w.chunks_exact_mut(se)) {
                let max = kernels::max_fast(rrow);
                for (wv, &rv) in wrow.iter_mut().zip(rrow) {
                    *wv = kernels::exp_approx(rv - max);
                }
            }
            // nd[(t, j), c] = Σ_s G[(t, j), s] · w[c, s]
            let g = part(&rq.g, head * gw, gw)?;
            matmul(q1 * (dh + 1), bc, se, g, w, RhsLayout::NxK, nd, false)?;
            let ah = part(&rq.a, head * q1 * se, q1 * se)?;
            let uv = part(&rq.u, (2 * h + head) * se * dh, se * dh)?;
            let attn_h = part_mut(attn, head * m * dh, m * dh)?;
            for c in 0..bc {
                let cvc = &cv[c * dh..(c + 1) * dh];
                for t in 0..q1 {
                    let base = t * (dh + 1);
                    let den = nd[(base + dh) * bc + c];
                    let dst = &mut attn_h[(c * q1 + t) * dh..(c * q1 + t + 1) * dh];
                    if den >= MIN_DENOMINATOR && den.is_finite() {
                        let inv = 1.0 / den;
                        for (j, o) in dst.iter_mut().enumerate() {
                            *o = nd[(base + j) * bc + c] * inv + cvc[j];
                        }
                    } else {
                        // Extreme scores: softmax this row directly.
                        let arow = &ah[t * se..(t + 1) * se];
                        for ((p, &av), &rv) in prob.iter_mut().zip(arow).zip(&r[c * se..]) {
                            *p = av + rv;
                        }
                        kernels::softmax_row(prob);
                        dst.copy_from_slice(cvc);
                        for (&p, vrow) in prob.iter().zip(uv.chunks_exact(dh)) {
                            for (o, &v) in dst.iter_mut().zip(vrow) {
                                *o += p * v;
                            }
                        }
                    }
                }
            }
        }
        // Residual input [x_t ; e_c] plus the out_proj bias, then the projection.
        let layer = self
            .params
            .layers
            .first()
            .ok_or_else(|| internal("no layers"))?;
        let y = sized(&mut cs.y, m * d);
        for (c, ychunk) in y.chunks_exact_mut(q1 * d).enumerate() {
            let cand = part(cands, c * di, di)?;
            let (bias_u, bias_c) = layer
                .out_proj_bias
                .split_at(du.min(layer.out_proj_bias.len()));
            for (t, row) in ychunk.chunks_exact_mut(d).enumerate() {
                let (ru, rc) = row.split_at_mut(du);
                add_into(ru, part(&rq.xu, t * du, du)?, bias_u);
                add_into(rc, cand, bias_c);
            }
        }
        let out_heads = fw
            .out_w_heads
            .first()
            .ok_or_else(|| internal("no layers"))?;
        for head in 0..h {
            let a_h = part(attn, head * m * dh, m * dh)?;
            let wo = part(out_heads, head * d * dh, d * dh)?;
            matmul(m, d, dh, a_h, wo, RhsLayout::NxK, y, true)?;
        }
        finish_layer(layer, dm, m, y, &mut cs.hid, &mut cs.x)
    }
}

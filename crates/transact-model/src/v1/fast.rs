//! The request-level, de-duplicated forward. The module documentation of
//! [`crate::v1`] explains what is shared and why it is exact.

use rayon::prelude::*;
use transact_embed::kernels;
use transact_embed::small_gemm::transpose;

use super::kernel_error;
use super::layers::{
    Dims, add_into, finish_layer, internal, linear, matmul_small, part, part_mut, sized,
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

/// Weights re-laid out for the fast path: every matrix the fast path
/// multiplies by is stored transposed (`[in × out]`), split into the blocks
/// the path uses, so that each product is a plain `a · b` of the
/// allocation-free small GEMM.
#[derive(Clone, Debug)]
pub(crate) struct FastWeights {
    /// Per layer, `3h` blocks `[d × d_h]`: `in_proj_weight` rows of
    /// (q, k, v) × head, transposed, the query rows scaled by `1/sqrt(d/h)`.
    pub(super) in_wt: Vec<Vec<f32>>,
    /// Per layer: `in_proj_bias` `[3d]`, query part scaled likewise.
    pub(super) in_b: Vec<Vec<f32>>,
    /// Per layer, `h` blocks `[d_h × d]`: the head's columns of
    /// `out_proj.weight`, transposed.
    pub(super) out_wt: Vec<Vec<f32>>,
    /// Per layer: `linear1.weight` transposed, `[d × ff]`.
    pub(super) lin1_t: Vec<Vec<f32>>,
    /// Per layer: `linear2.weight` transposed, `[ff × d]`.
    pub(super) lin2_t: Vec<Vec<f32>>,
    /// First layer with early fusion, `3h` blocks `[(d_act + d_item) × d_h]`:
    /// the user columns of `in_wt[0]`'s blocks.
    pub(super) first_user_t: Vec<f32>,
    /// First layer with early fusion, `3h` blocks `[d_item × d_h]`: the
    /// candidate columns of `in_wt[0]`'s blocks.
    pub(super) first_cand_t: Vec<f32>,
    /// `out_linear.weight` transposed, `[d × d]`.
    pub(super) out_linear_t: Option<Vec<f32>>,
}

/// The block of the row-major `w` (`stride` columns) at rows `r0 .. r0 + nr`
/// and columns `c0 .. c0 + nc`, transposed: `[nc × nr]`, appended to `dst`.
#[allow(clippy::too_many_arguments)]
fn push_block_t(
    dst: &mut Vec<f32>,
    w: &[f32],
    stride: usize,
    r0: usize,
    nr: usize,
    c0: usize,
    nc: usize,
) -> Result<(), ModelError> {
    let base = dst.len();
    dst.resize(base + nr * nc, 0.0);
    for r in 0..nr {
        let row = part(w, (r0 + r) * stride + c0, nc)?;
        for (j, &v) in row.iter().enumerate() {
            dst[base + j * nr + r] = v;
        }
    }
    Ok(())
}

/// `w` (`[rows × cols]`) transposed, after checking its length.
fn transposed(what: &str, w: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>, ModelError> {
    ModelError::check_len(what, rows * cols, w.len())?;
    let mut t = vec![0.0; rows * cols];
    transpose(rows, cols, w, &mut t).map_err(kernel_error)?;
    Ok(t)
}

impl FastWeights {
    /// Derives the fast layouts from the reference-shaped parameters.
    pub(crate) fn derive(cfg: &V1Config, p: &Params) -> Result<Self, ModelError> {
        let d = cfg.d_model();
        let h = cfg.nhead;
        let dh = d / h;
        let ff = cfg.dim_feedforward;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut fw = FastWeights {
            in_wt: Vec::new(),
            in_b: Vec::new(),
            out_wt: Vec::new(),
            lin1_t: Vec::new(),
            lin2_t: Vec::new(),
            first_user_t: Vec::new(),
            first_cand_t: Vec::new(),
            out_linear_t: None,
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
            let mut in_wt = Vec::with_capacity(3 * d * d);
            for block in 0..3 * h {
                push_block_t(&mut in_wt, &w, d, block * dh, dh, 0, d)?;
            }
            if i == 0 && cfg.concat_candidate_emb {
                let du = cfg.action_emb_dim + cfg.item_emb_dim;
                let di = cfg.item_emb_dim;
                for block in 0..3 * h {
                    push_block_t(&mut fw.first_user_t, &w, d, block * dh, dh, 0, du)?;
                    push_block_t(&mut fw.first_cand_t, &w, d, block * dh, dh, du, di)?;
                }
            }
            let mut out_wt = Vec::with_capacity(d * d);
            for head in 0..h {
                push_block_t(&mut out_wt, &l.out_proj_weight, d, 0, d, head * dh, dh)?;
            }
            let lin1 = transposed(
                &format!("layer {i} linear1.weight"),
                &l.linear1_weight,
                ff,
                d,
            )?;
            let lin2 = transposed(
                &format!("layer {i} linear2.weight"),
                &l.linear2_weight,
                d,
                ff,
            )?;
            fw.in_wt.push(in_wt);
            fw.in_b.push(b);
            fw.out_wt.push(out_wt);
            fw.lin1_t.push(lin1);
            fw.lin2_t.push(lin2);
        }
        if let Some((w, _)) = &p.out_linear {
            fw.out_linear_t = Some(transposed("out_linear.weight", w, d, d)?);
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
    /// First layer: `[h × d_h × S_e]` the heads' `Uk`, transposed.
    ukt: Vec<f32>,
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
    /// One head's keys of one candidate, transposed (`[d_h × rows]`).
    pub(super) kt: Vec<f32>,
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
        let Dims { du, h, dh, se, .. } = *dm;
        let fw = &self.fast;
        let u = sized(&mut rq.u, 3 * h * se * dh);
        let xu = part(&rq.xu, 0, se * du)?;
        for kind in 0..3 {
            for head in 0..h {
                let w = part(&fw.first_user_t, (kind * h + head) * du * dh, du * dh)?;
                let dst = part_mut(u, (kind * h + head) * se * dh, se * dh)?;
                linear(se, du, dh, xu, w, None, dst)?;
            }
        }
        let u: &[f32] = u;
        let a = sized(&mut rq.a, h * q1 * se);
        let vt = sized(&mut rq.vt, dh * se);
        let ukt = sized(&mut rq.ukt, h * dh * se);
        let gw = q1 * (dh + 1) * se;
        let g = sized(&mut rq.g, h * gw);
        for head in 0..h {
            let uq = part(u, head * se * dh, q1 * dh)?;
            let uk = part(u, (h + head) * se * dh, se * dh)?;
            let uv = part(u, (2 * h + head) * se * dh, se * dh)?;
            let ah = part_mut(a, head * q1 * se, q1 * se)?;
            let ukt_h = part_mut(ukt, head * dh * se, dh * se)?;
            transpose(se, dh, uk, ukt_h).map_err(kernel_error)?;
            matmul_small(q1, se, dh, uq, ukt_h, ah, false)?;
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
        // The softmax numerators of the candidate scores, transposed: `[S_e × bc]`.
        let w = sized(&mut cs.w, se * bc);
        let nd = sized(&mut cs.nd, q1 * (dh + 1) * bc);
        let prob = sized(&mut cs.prob, se);
        let gw = q1 * (dh + 1) * se;
        for head in 0..h {
            // Candidate parts of this head's query and value (biases included).
            let wq = part(&fw.first_cand_t, head * di * dh, di * dh)?;
            let wv = part(&fw.first_cand_t, (2 * h + head) * di * dh, di * dh)?;
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
            let ukt = part(&rq.ukt, head * dh * se, dh * se)?;
            matmul_small(bc, se, dh, cq, ukt, r, false)?;
            // wt[s, c] = exp(r[c, s] - max_s r[c, ·])
            for (c, rrow) in r.chunks_exact(se).enumerate() {
                let max = kernels::max_fast(rrow);
                for (s, &rv) in rrow.iter().enumerate() {
                    w[s * bc + c] = kernels::exp_approx(rv - max);
                }
            }
            // nd[(t, j), c] = Σ_s G[(t, j), s] · wt[s, c]
            let g = part(&rq.g, head * gw, gw)?;
            matmul_small(q1 * (dh + 1), bc, se, g, w, nd, false)?;
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
        let out_wt = fw.out_wt.first().ok_or_else(|| internal("no layers"))?;
        for head in 0..h {
            let a_h = part(attn, head * m * dh, m * dh)?;
            let wo = part(out_wt, head * dh * d, dh * d)?;
            matmul_small(m, d, dh, a_h, wo, y, true)?;
        }
        finish_layer(layer, fw, 0, dm, m, y, &mut cs.hid, &mut cs.x)
    }
}

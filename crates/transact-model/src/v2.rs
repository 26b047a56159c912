//! TransAct V2 (model-spec §3): the lifelong-sequence encoder.
//!
//! Per candidate, the selected tokens (oldest first) become
//! `[e_t ; e_c] + Σ_{i ∈ actions(t)} E_act[i] + E_surf[s_t] + E_pos[p_t]`,
//! where `p_t = len − 1 − t` is the token's recency rank (0 = newest), so a
//! position embedding means the same thing whatever the row's length. The
//! tokens go through `L` [`V2Block`]s, and the output is compressed to
//! `[W_o · maxpool_t(y_t) + b_o ; y_newest ; y_2nd newest ; … ]`
//! (`K = latest_n_emb` newest valid rows, zero-filled when there are fewer;
//! the max-pool covers all `S` rows, padded rows counting as zeros).
//!
//! - [`block`]: the block and its fast batched forward.
//! - [`naive`]: the slow reference implementation used as the oracle.
//!
//! An empty row (`len = 0`) is handled like V1's "position 0 is never
//! masked": it is computed as a one-token row whose token is whatever the
//! caller put at position 0 (all zeros for an empty sequence), and that
//! token is also its newest output row.
//!
//! Weights (safetensors, names under `v2.`): `v2.action_emb [A, d]`,
//! `v2.surface_emb [N_surf, d]`, `v2.position_emb [seq_len, d]`,
//! `v2.blocks.{i}.wq|wk|wv [d, d]`, `v2.blocks.{i}.w1 [d, f]`,
//! `v2.blocks.{i}.w2 [f, d]` (input dimension first, see [`block`]),
//! `v2.out.weight [d, d]` (`[out, in]`, like a PyTorch `Linear`) and
//! `v2.out.bias [d]`; the config is JSON in the metadata entry
//! [`V2_CONFIG_KEY`].

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod block;
mod math;
pub mod naive;
#[cfg(test)]
mod tests;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use transact_embed::kernels::{Par, linear};

pub use block::{V2Block, blocks_forward};

use block::{chunk_size, grow, kernel_err, put, run_chunk, with_scratch, xavier};

use crate::{ModelError, TensorMap, V2Config};

/// Metadata key holding the [`V2Config`] as JSON in a weights file.
pub const V2_CONFIG_KEY: &str = "transact.v2_config";

/// Half-width of the uniform initialisation of the embedding tables.
const EMB_INIT: f32 = 0.05;

/// One request's V2 input: `B` candidates, each with its own selected token
/// row of `S` slots (the nearest-neighbour selection depends on the
/// candidate).
#[derive(Clone, Copy, Debug)]
pub struct V2Request<'a> {
    /// `B`: number of candidates.
    pub batch: usize,
    /// `S`: token slots per candidate row (at most `seq_len`); rows are padded to it.
    pub seq: usize,
    /// `[B]`: valid tokens per row (at most `S`), oldest first at `0..len`.
    pub lens: &'a [usize],
    /// `[B × S × d_item]`: the item embedding of every token slot.
    pub item_embeddings: &'a [f32],
    /// `[B × S]`: multi-hot action field; bit `i` selects action table row `i`.
    pub action_masks: &'a [u32],
    /// `[B × S]`: surface of every token (below `num_surfaces`).
    pub surfaces: &'a [u16],
    /// `[B × d_item]`: the candidates' item embeddings.
    pub candidates: &'a [f32],
}

/// The TransAct V2 encoder: embedding tables, `L` blocks and the output
/// compression (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct V2Encoder {
    cfg: V2Config,
    /// `[num_action_types × d]`.
    action_emb: Vec<f32>,
    /// `[num_surfaces × d]`.
    surface_emb: Vec<f32>,
    /// `[seq_len × d]`, row = recency rank.
    position_emb: Vec<f32>,
    blocks: Vec<V2Block>,
    /// `W_o`, `[d × d]`, `[out × in]`.
    out_weight: Vec<f32>,
    /// `b_o`, `[d]`.
    out_bias: Vec<f32>,
}

impl V2Encoder {
    /// An encoder with random weights drawn from `seed`: blocks and `W_o`
    /// Xavier-uniform, `b_o` zero, embedding tables uniform in ±0.05.
    ///
    /// Fails if the config is invalid.
    pub fn new_random(cfg: V2Config, seed: u64) -> Result<Self, ModelError> {
        cfg.validate()?;
        let d = cfg.d_model();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut table = |rows: usize| -> Vec<f32> {
            (0..rows * d)
                .map(|_| rng.random_range(-EMB_INIT..=EMB_INIT))
                .collect()
        };
        let action_emb = table(cfg.num_action_types);
        let surface_emb = table(cfg.num_surfaces);
        let position_emb = table(cfg.seq_len);
        let blocks = (0..cfg.num_layer)
            .map(|i| {
                V2Block::new_random(
                    d,
                    cfg.dim_feedforward,
                    seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out_weight = xavier(&mut rng, d, d);
        let out_bias = vec![0.0; d];
        Ok(Self {
            cfg,
            action_emb,
            surface_emb,
            position_emb,
            blocks,
            out_weight,
            out_bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &V2Config {
        &self.cfg
    }

    /// The encoder blocks, first to last.
    pub fn blocks(&self) -> &[V2Block] {
        &self.blocks
    }

    /// Output width per candidate, `(K + 1)·d`.
    pub fn output_dim(&self) -> usize {
        self.cfg.output_dim()
    }

    /// Encodes a request: `out` is `[B × output_dim]`, per candidate
    /// `[W_o · maxpool + b_o ; y_newest ; … ; y_K-th newest]`.
    ///
    /// Fails (naming the input and index) on a wrong length, `S > seq_len`,
    /// `lens[b] > S`, a non-finite embedding, an action bit at or above
    /// `num_action_types` or a surface at or above `num_surfaces`. Only the
    /// valid tokens of a row are checked and read: padded slots may hold
    /// anything.
    ///
    /// ```
    /// use transact_model::{V2Config, V2Encoder, V2Request};
    ///
    /// let cfg = V2Config { seq_len: 8, item_emb_dim: 4, latest_n_emb: 2, ..V2Config::default() };
    /// let enc = V2Encoder::new_random(cfg, 7)?;
    /// let (b, s, di) = (2, 8, 4);
    /// let items: Vec<f32> = (0..b * s * di).map(|i| (i as f32 * 0.1).sin()).collect();
    /// let req = V2Request {
    ///     batch: b,
    ///     seq: s,
    ///     lens: &[8, 3],                 // the second row has 3 tokens, then padding
    ///     item_embeddings: &items,
    ///     action_masks: &vec![0b101; b * s], // action types 0 and 2 at once
    ///     surfaces: &vec![1; b * s],
    ///     candidates: &[0.5, -0.5, 0.25, 0.0, 1.0, 0.0, -1.0, 0.5],
    /// };
    /// let mut out = vec![0.0; b * enc.output_dim()];
    /// enc.forward(&req, &mut out)?;
    /// assert_eq!(enc.output_dim(), 3 * 8);
    /// assert!(out.iter().all(|v| v.is_finite()));
    /// # Ok::<(), transact_model::ModelError>(())
    /// ```
    pub fn forward(&self, req: &V2Request<'_>, out: &mut [f32]) -> Result<(), ModelError> {
        self.check_request(req, out)?;
        if req.batch == 0 {
            return Ok(());
        }
        let od = self.output_dim();
        let cs = chunk_size(req.batch, req.seq);
        let run = |(ci, oc): (usize, &mut [f32])| {
            with_scratch(|s| self.encode_chunk(req, ci * cs, oc, s)).map_err(kernel_err)
        };
        if cs >= req.batch {
            run((0, out))
        } else {
            out.par_chunks_mut(cs * od).enumerate().try_for_each(run)
        }
    }

    /// Encodes candidates `b0..b0 + out.len() / output_dim` into `out`.
    fn encode_chunk(
        &self,
        req: &V2Request<'_>,
        b0: usize,
        out: &mut [f32],
        s: &mut block::Scratch,
    ) -> Result<(), transact_embed::EmbedError> {
        let cfg = &self.cfg;
        let (d, seq) = (cfg.d_model(), req.seq);
        let cand = out.len() / self.output_dim();
        let lens = &req.lens[b0..b0 + cand];
        let mut xbuf = std::mem::take(&mut s.x);
        let x = grow(&mut xbuf, cand * seq * d);
        self.tokens_into(req, b0, x);
        let mut result = run_chunk(
            &self.blocks,
            x,
            seq,
            lens,
            cfg.causal,
            cfg.layer_norm_eps,
            s,
            false,
        );
        if result.is_ok() {
            let mut pool = std::mem::take(&mut s.pool);
            result = self.compress_into(x, seq, lens, out, grow(&mut pool, 2 * cand * d));
            s.pool = pool;
        }
        s.x = xbuf;
        result
    }

    /// Builds the block input of candidates `b0..b0 + x.len() / (S·d)`:
    /// per valid slot `[e_t ; e_c] + Σ E_act + E_surf + E_pos` (padded
    /// slots are left as they are; the blocks zero them). The request must
    /// have been checked.
    fn tokens_into(&self, req: &V2Request<'_>, b0: usize, x: &mut [f32]) {
        let cfg = &self.cfg;
        let (d, di, seq) = (cfg.d_model(), cfg.item_emb_dim, req.seq);
        for (j, xc) in x.chunks_exact_mut(seq * d).enumerate() {
            let b = b0 + j;
            let n = req.lens[b].max(1);
            let cvec = &req.candidates[b * di..(b + 1) * di];
            for (t, tok) in xc[..n * d].chunks_exact_mut(d).enumerate() {
                let slot = b * seq + t;
                tok[..di].copy_from_slice(&req.item_embeddings[slot * di..(slot + 1) * di]);
                tok[di..].copy_from_slice(cvec);
                let mut mask = req.action_masks[slot];
                while mask != 0 {
                    let a = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    add(tok, &self.action_emb[a * d..(a + 1) * d]);
                }
                let sf = usize::from(req.surfaces[slot]);
                add(tok, &self.surface_emb[sf * d..(sf + 1) * d]);
                let p = n - 1 - t;
                add(tok, &self.position_emb[p * d..(p + 1) * d]);
            }
        }
    }

    /// The output compression of `lens.len()` candidates from the blocks'
    /// output `y [cand × S × d]` (padded rows zero): per candidate
    /// `[W_o · maxpool + b_o ; y_newest ; …]` into `out`. `scratch` holds
    /// `2·cand·d` floats.
    fn compress_into(
        &self,
        y: &[f32],
        seq: usize,
        lens: &[usize],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), transact_embed::EmbedError> {
        let cfg = &self.cfg;
        let d = cfg.d_model();
        let od = self.output_dim();
        let cand = lens.len();
        let k_out = cfg.latest_n_emb.min(cfg.seq_len);
        let (pool, proj) = scratch.split_at_mut(cand * d);
        for (j, (yc, o)) in y
            .chunks_exact(seq * d)
            .zip(out.chunks_exact_mut(od))
            .enumerate()
        {
            let n = lens[j].max(1);
            let pj = &mut pool[j * d..(j + 1) * d];
            pj.copy_from_slice(&yc[..d]);
            for row in yc.chunks_exact(d).skip(1) {
                for (p, &v) in pj.iter_mut().zip(row) {
                    *p = if v > *p { v } else { *p };
                }
            }
            let kept = &mut o[d..];
            kept.fill(0.0);
            for (kk, dst) in kept.chunks_exact_mut(d).take(k_out.min(n)).enumerate() {
                let t = n - 1 - kk;
                dst.copy_from_slice(&yc[t * d..(t + 1) * d]);
            }
        }
        // The pooled projection, for the whole chunk at once.
        linear(
            cand,
            d,
            d,
            pool,
            &self.out_weight,
            Some(&self.out_bias),
            &mut proj[..cand * d],
            Par::Seq,
        )?;
        for (o, p) in out.chunks_exact_mut(od).zip(proj.chunks_exact(d)) {
            o[..d].copy_from_slice(p);
        }
        Ok(())
    }

    /// The blocks' input for a whole request, `[B × S × d]` (padded slots
    /// zero): what [`V2Encoder::forward`] feeds its blocks, for a backend
    /// that runs the blocks elsewhere (e.g. on a GPU) and then calls
    /// [`V2Encoder::compress`].
    ///
    /// Fails on the inputs [`V2Encoder::forward`] rejects.
    pub fn block_input(&self, req: &V2Request<'_>) -> Result<Vec<f32>, ModelError> {
        self.check_input(req)?;
        let mut x = vec![0.0; req.batch * req.seq * self.cfg.d_model()];
        if !x.is_empty() {
            self.tokens_into(req, 0, &mut x);
        }
        Ok(x)
    }

    /// The output compression over the blocks' output `y [B × S × d]`
    /// (`lens` as in the request, padded rows zero, as the blocks leave
    /// them): `out [B × output_dim]`, what [`V2Encoder::forward`] returns.
    ///
    /// Fails on a wrong length, a `lens` entry above `seq` or a non-finite
    /// value in `y`.
    pub fn compress(
        &self,
        y: &[f32],
        seq: usize,
        lens: &[usize],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (b, d) = (lens.len(), self.cfg.d_model());
        ModelError::check_len("y", b * seq * d, y.len())?;
        ModelError::check_len("out", b * self.output_dim(), out.len())?;
        if let Some(row) = lens.iter().position(|&l| l > seq) {
            return Err(ModelError::BadInput {
                name: "lens".into(),
                detail: format!("lens[{row}] = {} exceeds the {seq} token slots", lens[row]),
            });
        }
        if b > 0 && seq == 0 {
            return Err(ModelError::BadInput {
                name: "seq".into(),
                detail: "must be at least 1".into(),
            });
        }
        ModelError::check_finite("y", y)?;
        if b == 0 {
            return Ok(());
        }
        let mut scratch = vec![0.0; 2 * b * d];
        self.compress_into(y, seq, lens, out, &mut scratch)
            .map_err(kernel_err)
    }

    /// Checks every input of a request against the config (used by both
    /// forwards).
    pub(crate) fn check_request(&self, req: &V2Request<'_>, out: &[f32]) -> Result<(), ModelError> {
        ModelError::check_len("out", req.batch * self.output_dim(), out.len())?;
        self.check_input(req)
    }

    /// Checks every input of a request against the config.
    fn check_input(&self, req: &V2Request<'_>) -> Result<(), ModelError> {
        let cfg = &self.cfg;
        let (b, s, di) = (req.batch, req.seq, cfg.item_emb_dim);
        let bad = |name: &str, detail: String| {
            Err(ModelError::BadInput {
                name: name.into(),
                detail,
            })
        };
        if s > cfg.seq_len {
            return bad(
                "seq",
                format!("{s} token slots exceed the model's seq_len {}", cfg.seq_len),
            );
        }
        if b > 0 && s == 0 {
            return bad("seq", "must be at least 1".into());
        }
        ModelError::check_len("lens", b, req.lens.len())?;
        ModelError::check_len("item_embeddings", b * s * di, req.item_embeddings.len())?;
        ModelError::check_len("action_masks", b * s, req.action_masks.len())?;
        ModelError::check_len("surfaces", b * s, req.surfaces.len())?;
        ModelError::check_len("candidates", b * di, req.candidates.len())?;
        ModelError::check_finite("candidates", req.candidates)?;
        let allowed: u32 = if cfg.num_action_types >= 32 {
            u32::MAX
        } else {
            (1u32 << cfg.num_action_types) - 1
        };
        for (row, &len) in req.lens.iter().enumerate() {
            if len > s {
                return bad(
                    "lens",
                    format!("lens[{row}] = {len} exceeds the {s} token slots"),
                );
            }
            for t in 0..len.max(1) {
                let slot = row * s + t;
                let e = &req.item_embeddings[slot * di..(slot + 1) * di];
                if let Some(c) = e.iter().position(|v| !v.is_finite()) {
                    return Err(ModelError::NonFinite {
                        name: format!("item_embeddings (candidate {row}, token {t})"),
                        index: slot * di + c,
                    });
                }
                let m = req.action_masks[slot];
                if m & !allowed != 0 {
                    return bad(
                        "action_masks",
                        format!(
                            "action_masks[{slot}] (candidate {row}, token {t}) = {m:#x} sets bit {}, \
                             but there are only {} action types",
                            (m & !allowed).trailing_zeros(),
                            cfg.num_action_types
                        ),
                    );
                }
                let sf = req.surfaces[slot];
                if usize::from(sf) >= cfg.num_surfaces {
                    return bad(
                        "surfaces",
                        format!(
                            "surfaces[{slot}] (candidate {row}, token {t}) = {sf}, \
                             but there are only {} surfaces",
                            cfg.num_surfaces
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// All weights as named tensors (prefix `v2.`), the config in the
    /// metadata under [`V2_CONFIG_KEY`].
    pub fn to_tensors(&self) -> TensorMap {
        let cfg = &self.cfg;
        let d = cfg.d_model();
        let mut map = TensorMap::new();
        put(
            &mut map,
            "v2.action_emb".into(),
            vec![cfg.num_action_types, d],
            &self.action_emb,
        );
        put(
            &mut map,
            "v2.surface_emb".into(),
            vec![cfg.num_surfaces, d],
            &self.surface_emb,
        );
        put(
            &mut map,
            "v2.position_emb".into(),
            vec![cfg.seq_len, d],
            &self.position_emb,
        );
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.to_tensors(&format!("v2.blocks.{i}."), &mut map);
        }
        put(
            &mut map,
            "v2.out.weight".into(),
            vec![d, d],
            &self.out_weight,
        );
        put(&mut map, "v2.out.bias".into(), vec![d], &self.out_bias);
        // Serialising a plain struct of numbers and bools cannot fail; an
        // empty entry would make loading fail loudly anyway.
        map.metadata.insert(
            V2_CONFIG_KEY.into(),
            serde_json::to_string(cfg).unwrap_or_default(),
        );
        map
    }

    /// Rebuilds an encoder from [`V2Encoder::to_tensors`]'s output (or a
    /// safetensors file loaded into a [`TensorMap`]), checking every shape.
    pub fn from_tensors(map: &TensorMap) -> Result<Self, ModelError> {
        let cfg: V2Config = map.meta_json(V2_CONFIG_KEY)?;
        cfg.validate()?;
        let d = cfg.d_model();
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ModelError> {
            let t = map.f32(name, shape)?;
            ModelError::check_finite(name, t)?;
            Ok(t.to_vec())
        };
        let action_emb = get("v2.action_emb", &[cfg.num_action_types, d])?;
        let surface_emb = get("v2.surface_emb", &[cfg.num_surfaces, d])?;
        let position_emb = get("v2.position_emb", &[cfg.seq_len, d])?;
        let blocks = (0..cfg.num_layer)
            .map(|i| V2Block::from_tensors(map, &format!("v2.blocks.{i}."), d, cfg.dim_feedforward))
            .collect::<Result<Vec<_>, _>>()?;
        let out_weight = get("v2.out.weight", &[d, d])?;
        let out_bias = get("v2.out.bias", &[d])?;
        Ok(Self {
            cfg,
            action_emb,
            surface_emb,
            position_emb,
            blocks,
            out_weight,
            out_bias,
        })
    }
}

/// `acc += x`.
#[inline(always)]
fn add(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

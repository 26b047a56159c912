//! The TransAct V2 encoder of the trainable network: tokens from each
//! example's selected set, the V2 blocks, the output compression — exactly
//! what [`transact_model::V2Encoder::forward`] computes — and their
//! backward.
//!
//! Per example with `n = max(len, 1)` tokens (slot `t` oldest first):
//! `x_t = [e_t ; e_c] + Σ_{i ∈ mask_t} E_act[i] + E_surf[s_t] + E_pos[n−1−t]`
//! (`e_t`, `e_c` the dequantised int8 codes, not trained); blocks over the
//! `S = v2_seq` slots; output `[W_o·maxpool_{all S rows}(y) + b_o ; y_{n−1} ;
//! y_{n−2} ; … ]` (`K` rows, zero past `n`). The Next Action Loss reads the
//! newest row `y_{n−1}` and, at every position, the rows of the realtime
//! tokens the featurizer gave a target (the causal mask lets row `t` see
//! only tokens up to `t`).

use std::ops::Range;

use transact_model::V2Config;

use super::{Acc, Net, StepOptions, TrainError, Workspace, pair_mut};
use crate::batch::{Batch, NO_ITEM};
use crate::layers::linear::{linear_backward, linear_forward};
use crate::layers::sized;
use crate::layers::v2::{
    V2Cache, V2Dims, V2Grads, V2Scratch, V2Weights, v2_block_backward, v2_block_forward,
};

/// Where the V2 tensors live in the parameter vector.
#[derive(Clone, Debug)]
pub(super) struct V2Layout {
    action: Range<usize>,
    surface: Range<usize>,
    position: Range<usize>,
    /// Per block: `wq`, `wk`, `wv`, `w1`, `w2` (contiguous, in that order).
    blocks: Vec<[Range<usize>; 5]>,
    out_w: Range<usize>,
    out_b: Range<usize>,
}

impl V2Layout {
    pub(super) fn new(
        cfg: &V2Config,
        r: &impl Fn(&str) -> Result<Range<usize>, TrainError>,
    ) -> Result<Self, TrainError> {
        let blocks = (0..cfg.num_layer)
            .map(|i| -> Result<[Range<usize>; 5], TrainError> {
                let g = |n: &str| r(&format!("v2.blocks.{i}.{n}"));
                Ok([g("wq")?, g("wk")?, g("wv")?, g("w1")?, g("w2")?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            action: r("v2.action_emb")?,
            surface: r("v2.surface_emb")?,
            position: r("v2.position_emb")?,
            blocks,
            out_w: r("v2.out.weight")?,
            out_b: r("v2.out.bias")?,
        })
    }
}

/// Buffers of the V2 encoder (part of a [`Workspace`]).
#[derive(Debug, Default)]
pub(super) struct V2Workspace {
    lens: Vec<usize>,
    /// Layer inputs and outputs: `xs[0]` the tokens, `xs[l + 1]` block `l`'s output.
    xs: Vec<Vec<f32>>,
    caches: Vec<V2Cache>,
    scratch: V2Scratch,
    pooled: Vec<f32>,
    argmax: Vec<u32>,
    dpool_out: Vec<f32>,
    dpooled: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
}

/// The `(example, slot)` pairs of `examples` whose token predicts a next
/// action (V2, at every position): a slot before the row's newest whose
/// [`Batch::nal_seq`] target is set (the newest row's targets are
/// [`Batch::nal_pos`]). Nothing for a batch without per-slot targets.
pub(super) fn v2_position_targets(
    batch: &Batch,
    examples: Range<usize>,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let s = batch.v2_seq;
    examples.flat_map(move |e| {
        let n = batch.v2_lens.get(e).copied().unwrap_or(0);
        (0..n.saturating_sub(1))
            .filter(move |&t| batch.nal_seq.get(e * s + t).is_some_and(|&x| x != NO_ITEM))
            .map(move |t| (e, t))
    })
}

fn add(acc: &mut [f32], x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
}

impl Net {
    fn v2_parts(&self) -> Result<(&V2Config, &V2Layout), TrainError> {
        match (&self.cfg.v2, &self.layout.v2) {
            (Some(c), Some(l)) => Ok((c, l)),
            _ => Err(TrainError::Config("the network has no V2 encoder".into())),
        }
    }

    fn v2_dims(cfg: &V2Config) -> V2Dims {
        V2Dims {
            d: cfg.d_model(),
            f: cfg.dim_feedforward,
            eps: cfg.layer_norm_eps,
            causal: cfg.causal,
        }
    }

    /// Checks a V2 batch's lengths and every mask and surface the examples
    /// of `range` use.
    pub(super) fn check_batch_v2(
        &self,
        cfg: &V2Config,
        batch: &Batch,
        range: &Range<usize>,
    ) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Batch(m));
        let (b, s, di) = (batch.len, batch.v2_seq, cfg.item_emb_dim);
        if s == 0 || s > cfg.seq_len {
            return bad(format!(
                "v2_seq is {s}, the V2 encoder has 1..={} positions",
                cfg.seq_len
            ));
        }
        for (name, got, want) in [
            ("v2_lens", batch.v2_lens.len(), b),
            ("v2_items", batch.v2_items.len(), b * s * di),
            ("v2_masks", batch.v2_masks.len(), b * s),
            ("v2_surfaces", batch.v2_surfaces.len(), b * s),
            ("v2_cand", batch.v2_cand.len(), b * di),
        ] {
            if got != want {
                return bad(format!("`{name}` has {got} values, expected {want}"));
            }
        }
        if self.cfg.v2_item_tokens {
            if batch.v2_rows.len() != b * s {
                return bad(format!(
                    "`v2_rows` has {} values, expected {}",
                    batch.v2_rows.len(),
                    b * s
                ));
            }
            let rows = self.cfg.item_rows as u64;
            for e in range.clone() {
                let len = batch.v2_lens[e].min(s);
                if let Some(t) = batch.v2_rows[e * s..e * s + len]
                    .iter()
                    .position(|&r| u64::from(r) >= rows)
                {
                    return bad(format!(
                        "example {e}, token {t}: item row {} is outside the item table ({rows} rows)",
                        batch.v2_rows[e * s + t]
                    ));
                }
            }
        }
        let allowed = if cfg.num_action_types >= 32 {
            u32::MAX
        } else {
            (1u32 << cfg.num_action_types) - 1
        };
        for e in range.clone() {
            let len = batch.v2_lens[e];
            if len > s {
                return bad(format!("example {e}: {len} tokens exceed the {s} slots"));
            }
            for t in 0..len.max(1) {
                let k = e * s + t;
                if batch.v2_masks[k] & !allowed != 0 {
                    return bad(format!(
                        "example {e}, token {t}: action mask {:#x} outside the {} action types",
                        batch.v2_masks[k], cfg.num_action_types
                    ));
                }
                if usize::from(batch.v2_surfaces[k]) >= cfg.num_surfaces {
                    return bad(format!(
                        "example {e}, token {t}: surface {} outside the {} surfaces",
                        batch.v2_surfaces[k], cfg.num_surfaces
                    ));
                }
            }
        }
        let items = &batch.v2_items[range.start * s * di..range.end * s * di];
        let cands = &batch.v2_cand[range.start * di..range.end * di];
        if let Some(i) = items.iter().chain(cands).position(|v| !v.is_finite()) {
            return bad(format!("a V2 token embedding value ({i}) is not finite"));
        }
        Ok(())
    }

    /// Tokens, blocks and compression of a chunk (into `ws.comp`).
    pub(super) fn encode_chunk_v2(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        ws: &mut Workspace,
    ) -> Result<(), TrainError> {
        let (cfg, lay) = self.v2_parts()?;
        let (d, di, s) = (cfg.d_model(), cfg.item_emb_dim, batch.v2_seq);
        let m = chunk.len();
        let w = &mut ws.v2;
        w.lens.clear();
        w.lens.extend_from_slice(&batch.v2_lens[chunk.clone()]);
        let layers = lay.blocks.len();
        if w.xs.len() < layers + 1 {
            w.xs.resize_with(layers + 1, Vec::new);
        }
        if w.caches.len() < layers {
            w.caches.resize_with(layers, V2Cache::default);
        }
        let (act, surf, pos) = (
            &p[lay.action.clone()],
            &p[lay.surface.clone()],
            &p[lay.position.clone()],
        );
        let items = &p[self.layout.items.clone()];
        let from_items = self.cfg.v2_item_tokens;
        let x = sized(&mut w.xs[0], m * s * d);
        x.fill(0.0);
        for (j, e) in chunk.clone().enumerate() {
            let n = w.lens[j].max(1);
            let cvec = if from_items {
                let c = batch.cand_items[e] as usize;
                &items[c * di..(c + 1) * di]
            } else {
                &batch.v2_cand[e * di..(e + 1) * di]
            };
            for t in 0..n {
                let slot = e * s + t;
                let tok = &mut x[(j * s + t) * d..(j * s + t + 1) * d];
                if from_items {
                    // An empty row's one token has no item: the zero row.
                    if t < w.lens[j] {
                        let r = batch.v2_rows[slot] as usize;
                        tok[..di].copy_from_slice(&items[r * di..(r + 1) * di]);
                    }
                } else {
                    tok[..di].copy_from_slice(&batch.v2_items[slot * di..(slot + 1) * di]);
                }
                tok[di..].copy_from_slice(cvec);
                let mut mask = batch.v2_masks[slot];
                while mask != 0 {
                    let a = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    add(tok, &act[a * d..(a + 1) * d]);
                }
                let sf = usize::from(batch.v2_surfaces[slot]);
                add(tok, &surf[sf * d..(sf + 1) * d]);
                let q = n - 1 - t;
                add(tok, &pos[q * d..(q + 1) * d]);
            }
        }
        let dims = Self::v2_dims(cfg);
        for (l, r) in lay.blocks.iter().enumerate() {
            let wt = V2Weights {
                wq: &p[r[0].clone()],
                wk: &p[r[1].clone()],
                wv: &p[r[2].clone()],
                w1: &p[r[3].clone()],
                w2: &p[r[4].clone()],
            };
            let (lo, hi) = w.xs.split_at_mut(l + 1);
            let out = sized(&mut hi[0], m * s * d);
            v2_block_forward(&dims, s, &w.lens, &lo[l], &wt, &mut w.caches[l], out)?;
        }
        // Compression: max-pool over all S rows (padded rows are zero), the
        // pooled projection, then the K newest rows.
        let y = &w.xs[layers][..m * s * d];
        let od = cfg.output_dim();
        let k_out = cfg.latest_n_emb.min(cfg.seq_len);
        let pooled = sized(&mut w.pooled, m * d);
        if w.argmax.len() < m * d {
            w.argmax.resize(m * d, 0);
        }
        for j in 0..m {
            let rows = &y[j * s * d..(j + 1) * s * d];
            let pj = &mut pooled[j * d..(j + 1) * d];
            let aj = &mut w.argmax[j * d..(j + 1) * d];
            pj.copy_from_slice(&rows[..d]);
            aj.fill(0);
            for (r, row) in rows.chunks_exact(d).enumerate().skip(1) {
                for ((pv, av), &v) in pj.iter_mut().zip(aj.iter_mut()).zip(row) {
                    if v > *pv {
                        *pv = v;
                        *av = r as u32;
                    }
                }
            }
        }
        let comp = sized(&mut ws.comp, m * od);
        let proj = sized(&mut w.dpool_out, m * d);
        linear_forward(
            m,
            d,
            d,
            pooled,
            &p[lay.out_w.clone()],
            Some(&p[lay.out_b.clone()]),
            proj,
        )?;
        for j in 0..m {
            let n = w.lens[j].max(1);
            let o = &mut comp[j * od..(j + 1) * od];
            o[..d].copy_from_slice(&proj[j * d..(j + 1) * d]);
            let kept = &mut o[d..];
            kept.fill(0.0);
            for (kk, dst) in kept.chunks_exact_mut(d).take(k_out.min(n)).enumerate() {
                let t = n - 1 - kk;
                dst.copy_from_slice(&y[(j * s + t) * d..(j * s + t + 1) * d]);
            }
        }
        Ok(())
    }

    /// Backward of [`Net::encode_chunk_v2`] and the Next Action Loss on the
    /// newest rows (and, at every position, on the realtime tokens' rows of
    /// [`v2_position_targets`]); `ws.da` holds the feature gradients.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_sequence_v2(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        opts: &StepOptions,
        n_nal: usize,
        grads: &mut [f32],
        ws: &mut Workspace,
        acc: &mut Acc,
    ) -> Result<(), TrainError> {
        let (cfg, lay) = self.v2_parts()?;
        let (d, s) = (cfg.d_model(), batch.v2_seq);
        let m = chunk.len();
        let n_feat = self.cfg.feature_dim();
        let od = cfg.output_dim();
        let layers = lay.blocks.len();
        let k_out = cfg.latest_n_emb.min(cfg.seq_len);
        // The pooled projection.
        let dproj = sized(&mut ws.v2.dpool_out, m * d);
        for j in 0..m {
            dproj[j * d..(j + 1) * d].copy_from_slice(&ws.da[j * n_feat..j * n_feat + d]);
        }
        let dpooled = sized(&mut ws.v2.dpooled, m * d);
        dpooled.fill(0.0);
        let (gw, gb) = pair_mut(grads, lay.out_w.clone(), lay.out_b.clone());
        linear_backward(
            m,
            d,
            d,
            &ws.v2.pooled[..m * d],
            &p[lay.out_w.clone()],
            dproj,
            Some(dpooled),
            gw,
            Some(gb),
            &mut ws.lin,
        )?;
        let dy = sized(&mut ws.v2.dy, m * s * d);
        dy.fill(0.0);
        for j in 0..m {
            let n = ws.v2.lens[j].max(1);
            for c in 0..d {
                let r = ws.v2.argmax[j * d + c] as usize;
                // A padded row (a zero) that wins the max has no gradient path.
                if r < n {
                    dy[(j * s + r) * d + c] += ws.v2.dpooled[j * d + c];
                }
            }
            let dk = &ws.da[j * n_feat + d..j * n_feat + od];
            for (kk, g) in dk.chunks_exact(d).take(k_out.min(n)).enumerate() {
                let t = n - 1 - kk;
                add(&mut dy[(j * s + t) * d..(j * s + t + 1) * d], g);
            }
        }
        if let Some(proj) = self
            .layout
            .nal
            .clone()
            .filter(|_| n_nal > 0 && opts.nal_weight != 0.0)
        {
            // The NAL rows, per example: its newest row, then (at every
            // position) the rows of the realtime tokens with a target; as
            // V1's packed rows, `offsets` delimit them and `positions` name
            // their slots.
            let every = self.cfg.nal_every_position;
            ws.offsets.clear();
            ws.offsets.push(0);
            ws.positions.clear();
            for (j, e) in chunk.clone().enumerate() {
                ws.positions.push(ws.v2.lens[j].max(1) - 1);
                if every {
                    ws.positions
                        .extend(v2_position_targets(batch, e..e + 1).map(|(_, t)| t));
                }
                ws.offsets.push(ws.positions.len());
            }
            let rows = ws.positions.len();
            let y = &ws.v2.xs[layers];
            let u = sized(&mut ws.u, rows * d);
            for j in 0..m {
                for r in ws.offsets[j]..ws.offsets[j + 1] {
                    let t = ws.positions[r];
                    u[r * d..(r + 1) * d].copy_from_slice(&y[(j * s + t) * d..(j * s + t + 1) * d]);
                }
            }
            self.nal_terms(p, batch, chunk, opts, n_nal, proj, every, grads, ws, acc)?;
            for j in 0..m {
                for r in ws.offsets[j]..ws.offsets[j + 1] {
                    let t = ws.positions[r];
                    add(
                        &mut ws.v2.dy[(j * s + t) * d..(j * s + t + 1) * d],
                        &ws.du[r * d..(r + 1) * d],
                    );
                }
            }
        }
        let dims = Self::v2_dims(cfg);
        let w = &mut ws.v2;
        for (l, r) in lay.blocks.iter().enumerate().rev() {
            let wt = V2Weights {
                wq: &p[r[0].clone()],
                wk: &p[r[1].clone()],
                wv: &p[r[2].clone()],
                w1: &p[r[3].clone()],
                w2: &p[r[4].clone()],
            };
            // The five tensors are contiguous: wq, wk, wv, w1, w2.
            let all = &mut grads[r[0].start..r[4].end];
            let (gq, rest) = all.split_at_mut(r[0].len());
            let (gk, rest) = rest.split_at_mut(r[1].len());
            let (gv, rest) = rest.split_at_mut(r[2].len());
            let (g1, g2) = rest.split_at_mut(r[3].len());
            let mut g = V2Grads {
                wq: gq,
                wk: gk,
                wv: gv,
                w1: g1,
                w2: g2,
            };
            let dx = sized(&mut w.dx, m * s * d);
            dx.fill(0.0);
            v2_block_backward(
                &dims,
                s,
                &w.lens,
                &wt,
                &w.caches[l],
                &w.dy[..m * s * d],
                dx,
                &mut g,
                &mut w.scratch,
            )?;
            std::mem::swap(&mut w.dy, &mut w.dx);
        }
        // Token gradients into the item table (tokens from it), then the
        // action, surface and position tables.
        let dtok = &w.dy[..m * s * d];
        if self.cfg.v2_item_tokens && self.cfg.learn_items {
            let di = cfg.item_emb_dim;
            let gi = &mut grads[self.layout.items.clone()];
            for (j, e) in chunk.clone().enumerate() {
                let n = w.lens[j].max(1);
                let c = batch.cand_items[e] as usize;
                for t in 0..n {
                    let g = &dtok[(j * s + t) * d..(j * s + t + 1) * d];
                    if t < w.lens[j] {
                        let r = batch.v2_rows[e * s + t] as usize;
                        add(&mut gi[r * di..(r + 1) * di], &g[..di]);
                    }
                    add(&mut gi[c * di..(c + 1) * di], &g[di..]);
                }
            }
        }
        let (ga, rest) = grads.split_at_mut(lay.surface.start);
        let ga = &mut ga[lay.action.clone()];
        let (gs, gp) = rest.split_at_mut(lay.position.start - lay.surface.start);
        let gs = &mut gs[..lay.surface.len()];
        let gp = &mut gp[..lay.position.len()];
        for (j, e) in chunk.clone().enumerate() {
            let n = w.lens[j].max(1);
            for t in 0..n {
                let slot = e * s + t;
                let g = &dtok[(j * s + t) * d..(j * s + t + 1) * d];
                let mut mask = batch.v2_masks[slot];
                while mask != 0 {
                    let a = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    add(&mut ga[a * d..(a + 1) * d], g);
                }
                let sf = usize::from(batch.v2_surfaces[slot]);
                add(&mut gs[sf * d..(sf + 1) * d], g);
                let q = n - 1 - t;
                add(&mut gp[q * d..(q + 1) * d], g);
            }
        }
        Ok(())
    }
}

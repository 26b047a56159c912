//! The Next Action Loss of [`Net`]: its terms on the newest encoder rows
//! or, with `nal_every_position`, on a causal pass of the encoder.

use super::*;

impl Net {
    /// The Next Action Loss at every position: a causal pass of the encoder
    /// over the chunk's tokens (`ws.x0`), the loss on each of its rows, and
    /// the pass's backward; its token gradients are added to `ws.dy`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn causal_nal(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        opts: &StepOptions,
        n_nal: usize,
        proj: Range<usize>,
        drop_seed: Option<u64>,
        grads: &mut [f32],
        ws: &mut Workspace,
        acc: &mut Acc,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let d = cfg.d_model();
        let rows = ws.positions.len();
        let dims = EncoderDims {
            causal: true,
            ..cfg.encoder_dims()
        };
        let nl = self.layout.layers.len();
        self.layers_forward(
            p,
            &dims,
            chunk,
            drop_seed,
            &ws.x0,
            &ws.offsets,
            &mut ws.ccaches,
            &mut ws.keys,
            &mut ws.enc,
        )?;
        let y: &[f32] = match ws.ccaches.get(nl.wrapping_sub(1)) {
            Some(c) => &c.y,
            None => &ws.x0,
        };
        sized(&mut ws.u, rows * d).copy_from_slice(&y[..rows * d]);
        self.nal_terms(p, batch, chunk, opts, n_nal, proj, true, grads, ws, acc)?;
        sized(&mut ws.cdy, rows * d).copy_from_slice(&ws.du[..rows * d]);
        self.layers_backward(
            p,
            &dims,
            chunk,
            drop_seed,
            &ws.x0,
            &ws.offsets,
            &ws.ccaches,
            &mut ws.cdy,
            &mut ws.cdx,
            &mut ws.keys,
            &mut ws.enc,
            grads,
        )?;
        ws.dy[..rows * d]
            .iter_mut()
            .zip(&ws.cdy[..rows * d])
            .for_each(|(x, &g)| *x += g);
        Ok(())
    }

    /// Next Action Loss terms of a chunk on the encoder rows in `ws.u`
    /// (`every`: the packed rows of `ws.offsets`, each example's newest row
    /// first, then rows at the positions `ws.positions` names — V1
    /// positions or V2 slots; else the newest row of each example): adds the loss to `acc`, the rows' gradient to `ws.du`, the
    /// projection's and the item table's to `grads`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn nal_terms(
        &self,
        p: &[f32],
        batch: &Batch,
        chunk: &Range<usize>,
        opts: &StepOptions,
        n_nal: usize,
        proj: Range<usize>,
        every: bool,
        grads: &mut [f32],
        ws: &mut Workspace,
        acc: &mut Acc,
    ) -> Result<(), TrainError> {
        let cfg = &self.cfg;
        let d = cfg.d_model();
        let di = cfg.v1.item_emb_dim;
        let nr = if every {
            ws.positions.len()
        } else {
            chunk.len()
        };
        let wp = &p[proj.clone()];
        let u = &ws.u[..nr * d];
        let pn = sized(&mut ws.pn, nr * di);
        linear_forward(nr, d, di, u, wp, None, pn)?;
        let dpn = sized(&mut ws.dpn, nr * di);
        dpn.fill(0.0);
        let scale = opts.nal_weight / n_nal as f32;
        let items = &p[self.layout.items.clone()];
        let k = batch.nal_negatives;
        let np = batch.nal_per_example();
        // Per-position targets are per V1 position or per V2 slot.
        let s = if self.cfg.v2.is_some() {
            batch.v2_seq
        } else {
            batch.seq_len
        };
        let mut terms = std::mem::take(&mut ws.nterms);
        terms.clear();
        for (i, e) in chunk.clone().enumerate() {
            // Packed V1 rows with every position; one row per example otherwise.
            let a = if every { ws.offsets[i] } else { i };
            let row = a;
            for &target in &batch.nal_pos[e * np..(e + 1) * np] {
                if target != NO_ITEM {
                    terms.push(NalTerm {
                        target,
                        row,
                        example: e,
                        negs: e * k..(e + 1) * k,
                        per_position: false,
                    });
                }
            }
            if every {
                for r in a + 1..ws.offsets[i + 1] {
                    let q = e * s + ws.positions[r];
                    let target = batch.nal_seq[q];
                    if target != NO_ITEM {
                        terms.push(NalTerm {
                            target,
                            row: r,
                            example: e,
                            negs: q * k..(q + 1) * k,
                            per_position: true,
                        });
                    }
                }
            }
        }
        // In-batch negatives: every target of the batch is a column, scored
        // against every term's row with one matrix product (and the
        // gradients with two), masked per term below.
        let in_batch = opts.in_batch_negatives || opts.also_in_batch;
        let cols = if in_batch { &batch.nal_pos[..] } else { &[] };
        let (nt, nc) = (terms.len(), cols.len());
        let tb = sized(&mut ws.nal_cols, nc * di);
        for (dst, &r) in tb.chunks_exact_mut(di.max(1)).zip(cols) {
            if r == NO_ITEM {
                dst.fill(0.0);
            } else {
                let r = r as usize;
                dst.copy_from_slice(&items[r * di..(r + 1) * di]);
            }
        }
        let pt = sized(&mut ws.nal_rows, nt * di);
        for (dst, t) in pt.chunks_exact_mut(di.max(1)).zip(&terms) {
            dst.copy_from_slice(&pn[t.row * di..(t.row + 1) * di]);
        }
        let g = sized(&mut ws.nal_g, nt * nc);
        kernels::matmul(nt, nc, di, pt, tb, RhsLayout::NxK, g, false, Par::Seq).map_err(kernel)?;
        for (ti, t) in terms.iter().enumerate() {
            let (pos, e) = (t.target, t.example);
            let own = &batch.nal_pos[e * np..(e + 1) * np];
            let u_row = &pt[ti * di..(ti + 1) * di];
            // Row `ti` of `g`: the in-batch scores, NaN where masked (the
            // example's own targets and copies of the positive).
            let grow = &mut g[ti * nc..(ti + 1) * nc];
            for (j, (sc, &r)) in grow.iter_mut().zip(cols).enumerate() {
                if r == NO_ITEM || j / np == e || r == pos || own.contains(&r) {
                    *sc = f32::NAN;
                }
            }
            ws.trows.clear();
            ws.trows.push(pos);
            if !opts.in_batch_negatives {
                let list = if t.per_position {
                    &batch.nal_seq_neg
                } else {
                    &batch.nal_neg
                };
                ws.trows
                    .extend(list[t.negs.clone()].iter().filter(|&&r| r != NO_ITEM));
            }
            // The positive and the impression negatives, scored one by one,
            // with the in-batch scores of `grow`.
            let nown = ws.trows.len();
            let tv = sized(&mut ws.targets, nown * di);
            embedding_forward(items, di, &ws.trows, tv)?;
            let dt = sized(&mut ws.dtargets, nown * di);
            dt.fill(0.0);
            let scores = sized(&mut ws.scores, nown);
            let l = sampled_softmax(
                di,
                nown,
                u_row,
                tv,
                grow,
                scale,
                &mut dpn[t.row * di..(t.row + 1) * di],
                dt,
                scores,
            )?;
            acc.nal += l / f64::from(opts.nal_weight);
            acc.nal_targets += 1;
            if cfg.learn_items {
                embedding_backward(&mut grads[self.layout.items.clone()], di, &ws.trows, dt)?;
            }
        }
        if nc > 0 && nt > 0 {
            // dpn[row] += Σ_j g[t, j]·col_j; d col_j = Σ_t g[t, j]·row_t.
            let dpt = sized(&mut ws.nal_drows, nt * di);
            kernels::matmul(nt, di, nc, g, tb, RhsLayout::KxN, dpt, false, Par::Seq)
                .map_err(kernel)?;
            for (t, d) in terms.iter().zip(dpt.chunks_exact(di.max(1))) {
                dpn[t.row * di..(t.row + 1) * di]
                    .iter_mut()
                    .zip(d)
                    .for_each(|(a, &b)| *a += b);
            }
            if cfg.learn_items {
                let gt = sized(&mut ws.nal_gt, nc * nt);
                transpose(g, nt, nc, gt);
                let dtb = sized(&mut ws.nal_dcols, nc * di);
                kernels::matmul(nc, di, nt, gt, pt, RhsLayout::KxN, dtb, false, Par::Seq)
                    .map_err(kernel)?;
                let gi = &mut grads[self.layout.items.clone()];
                for (&r, d) in cols.iter().zip(dtb.chunks_exact(di.max(1))) {
                    if r != NO_ITEM {
                        let r = r as usize;
                        gi[r * di..(r + 1) * di]
                            .iter_mut()
                            .zip(d)
                            .for_each(|(a, &b)| *a += b);
                    }
                }
            }
        }
        ws.nterms = terms;
        let du = sized(&mut ws.du, nr * d);
        du.fill(0.0);
        linear_backward(
            nr,
            d,
            di,
            u,
            wp,
            dpn,
            Some(du),
            &mut grads[proj],
            None,
            &mut ws.lin,
        )
    }
}

/// One Next Action Loss term: the encoder row `row` (of `ws.u`) predicts
/// `target` against the negatives of its example.
#[derive(Clone, Debug)]
pub(super) struct NalTerm {
    target: u32,
    row: usize,
    example: usize,
    /// Impression negatives: this range of `nal_neg`, or of `nal_seq_neg`
    /// when `per_position`.
    negs: Range<usize>,
    per_position: bool,
}

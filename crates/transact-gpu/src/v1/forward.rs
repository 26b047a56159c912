//! The forward's dispatches (tokens, layers, output compression), recorded
//! into a request.

use super::rows::{AddRows, WG, record_add_rows, record_linear, record_residual_linear, u};
use super::{GpuTransActV1, OutTarget, Plan, V1_BLOCK_FUSED, V1_COMPRESS, V1_GATHER_FUSE, V1_MHA};
use crate::kernels::layer_norm::LayerNormShape;
use crate::kernels::{flat_groups, record_layer_norm};
use crate::v2::Variant;
use crate::{GpuError, KernelSpec, PooledBuffer, Request, Storage};

/// Query rows per invocation of the fused kernel (the shader's `RQ`).
const FUSED_ROWS_PER_LANE: usize = 4;

/// Invocations per workgroup of the fused kernel for `se` rows per
/// candidate: the smallest of 8 (lavapipe's SIMD width), 16, 32 and 64
/// that covers them, 64 for longer sequences (several workgroups).
pub(super) fn fused_lanes(se: usize) -> usize {
    se.div_ceil(FUSED_ROWS_PER_LANE)
        .next_power_of_two()
        .clamp(8, 64)
}

impl GpuTransActV1 {
    /// Records the encoder for `plan` (its upload in `input`) and writes
    /// `B` output rows (f32) into `out`. Pooled buffers the dispatches use
    /// are pushed to `held`: keep them until the request has finished.
    pub(crate) fn record(
        &self,
        rq: &mut Request<'_>,
        plan: &Plan,
        input: &wgpu::Buffer,
        out: OutTarget<'_>,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<(), GpuError> {
        let ctx = &*self.ctx;
        let cfg = &self.cfg;
        let st = self.storage();
        let fuse = cfg.concat_candidate_emb;
        let (da, di) = (cfg.action_emb_dim, cfg.item_emb_dim);
        let du = da + di;
        let d = cfg.d_model();
        let h = cfg.nhead;
        let dh = d / h;
        let ff = cfg.dim_feedforward;
        let se = plan.se;
        let batch = plan.batch;
        let bc = if fuse { batch } else { 1 };
        let rows = bc * se;
        let eb = st.bytes();
        let sz = |n: usize| n.max(1) as u64 * eb;
        let x = ctx.storage(sz(rows * d))?;
        let xu = ctx.storage(sz(se * du))?;
        // Width of each of q, k, v in `qkv`: padded to a multiple of 4 for
        // the fused kernel (see `pad_qkv`).
        let qd = match self.variant {
            Variant::Fused => d.next_multiple_of(4),
            Variant::Unfused => d,
        };
        let qw = 3 * qd;
        let qkv = ctx.storage(sz(rows * qw))?;
        // Scratch of the unfused layers only.
        let unfused = (self.variant == Variant::Unfused)
            .then(|| -> Result<_, GpuError> {
                Ok((
                    ctx.storage(sz(rows * d))?,
                    ctx.storage(sz(rows * d))?,
                    ctx.storage(sz(rows * d))?,
                    ctx.storage(sz(rows * ff))?,
                ))
            })
            .transpose()?;

        // Tokens.
        let gp = GatherParams {
            se: u("se", se)?,
            da: u("da", da)?,
            di: u("di", di)?,
            d: u("d", d)?,
            bc: u("bc", bc)?,
            n_given: u("n", plan.n_given)?,
            pos_off: u("pos_off", plan.pos_off)?,
            rows_off: u("rows_off", plan.rows_off)?,
            item_off: u("item_off", plan.item_off)?,
            cand_off: u("cand_off", plan.cand_off)?,
            total: u("total", rows * d)?,
            pad: [0; 5],
        };
        let k = ctx.kernel(&KernelSpec::new(V1_GATHER_FUSE, "gather").storage(st))?;
        rq.dispatch(
            &k,
            &gp,
            &[input, &x, &self.action_emb, &xu],
            flat_groups(ctx, rows * d)?,
        )?;

        for (l, layer) in self.layers.iter().enumerate() {
            // qkv = x·W_inᵀ + b_in (the fused kernel adds b_in itself).
            let in_bias = layer.fused.is_none().then_some(&layer.in_b);
            // With early fusion, the first layer's split projection:
            // `(U, C)`; the fused kernel reads them as they are.
            let mut split = None;
            if l == 0 && fuse {
                let ub = ctx.storage(sz(se * qw))?;
                let cb = ctx.storage(sz(batch * qw))?;
                // U = xu·W_userᵀ (per request, no bias) and
                // C = e_c·W_candᵀ + b (per candidate; e_c read from the
                // tokens, row 0 of each candidate): the column blocks of W_in.
                record_linear(
                    ctx,
                    rq,
                    (se, qw, du),
                    (&xu, du, 0),
                    (&layer.in_w, d, 0),
                    None,
                    (&ub, qw, 0),
                    false,
                    false,
                    st,
                )?;
                record_linear(
                    ctx,
                    rq,
                    (batch, qw, di),
                    (&x, se * d, du),
                    (&layer.in_w, d, du),
                    in_bias,
                    (&cb, qw, 0),
                    false,
                    false,
                    st,
                )?;
                if layer.fused.is_none() {
                    // qkv[b, t] = U[t] + C[b].
                    let fuse_rows = AddRows {
                        rows,
                        cols: qw,
                        ld: qw,
                        off: 0,
                        src: Some((&ub, qw, 0, se)),
                        bias: Some((&cb, qw, 0, se)),
                    };
                    record_add_rows(ctx, rq, fuse_rows, st, &qkv)?;
                }
                split = Some((ub, cb));
            } else {
                record_linear(
                    ctx,
                    rq,
                    (rows, qw, d),
                    (&x, d, 0),
                    (&layer.in_w, d, 0),
                    in_bias,
                    (&qkv, qw, 0),
                    false,
                    false,
                    st,
                )?;
            }
            match (&layer.fused, &unfused) {
                (Some(wu), _) => {
                    // Attention, LN1, FFN, LN2 in one dispatch; x in place.
                    let lanes = fused_lanes(se);
                    let consts = [
                        ("D", d as f64),
                        ("F", ff as f64),
                        ("H", h as f64),
                        ("LANES", lanes as f64),
                        ("FIRST", f64::from(u8::from(split.is_some()))),
                    ];
                    let spec = KernelSpec::new(V1_BLOCK_FUSED, "v1_block")
                        .constants(&consts)
                        .storage(st);
                    let k = ctx.kernel(&spec)?;
                    let p = FusedParams {
                        se: u("se", se)?,
                        pad: [0; 3],
                        eps: cfg.layer_norm_eps,
                        pad1: [0.0; 3],
                    };
                    let (src, cand): (&wgpu::Buffer, &wgpu::Buffer) = match &split {
                        Some((ub, cb)) => (ub, cb),
                        None => (&qkv, &qkv),
                    };
                    rq.dispatch(
                        &k,
                        &p,
                        &[src, wu, &x, cand],
                        [
                            u("groups", se.div_ceil(lanes * FUSED_ROWS_PER_LANE))?,
                            u("candidates", bc)?,
                            1,
                        ],
                    )?;
                }
                (None, Some((att, y, x1, hid))) => {
                    // Attention, all heads.
                    let mp = MhaParams {
                        seq: u("se", se)?,
                        heads: u("heads", h)?,
                        dh: u("dh", dh)?,
                        d: u("d", d)?,
                    };
                    let k = ctx.kernel(&KernelSpec::new(V1_MHA, "mha").storage(st))?;
                    rq.dispatch(
                        &k,
                        &mp,
                        &[&qkv, att],
                        [
                            u("groups", se.div_ceil(WG))?,
                            u("heads", h)?,
                            u("candidates", bc)?,
                        ],
                    )?;
                    // y = x + attn·W_oᵀ + b_o; x1 = LN1(y).
                    record_residual_linear(
                        ctx,
                        rq,
                        (rows, d, d),
                        att,
                        &layer.out_w,
                        &layer.out_b,
                        &x,
                        y,
                        st,
                    )?;
                    let ln = LayerNormShape {
                        rows,
                        d,
                        seq: 1,
                        eps: cfg.layer_norm_eps,
                        storage: st,
                    };
                    record_layer_norm(ctx, rq, ln, y, x1, Some((&layer.g1, &layer.be1)))?;
                    // hid = relu(x1·W_1ᵀ + b_1); y = x1 + hid·W_2ᵀ + b_2; x = LN2(y).
                    record_linear(
                        ctx,
                        rq,
                        (rows, ff, d),
                        (x1, d, 0),
                        (&layer.w1, d, 0),
                        Some(&layer.b1),
                        (hid, ff, 0),
                        true,
                        false,
                        st,
                    )?;
                    record_residual_linear(
                        ctx,
                        rq,
                        (rows, d, ff),
                        hid,
                        &layer.w2,
                        &layer.b2,
                        x1,
                        y,
                        st,
                    )?;
                    record_layer_norm(ctx, rq, ln, y, &x, Some((&layer.g2, &layer.be2)))?;
                }
                (None, None) => {
                    return Err(GpuError::bad("variant", "fused weights missing"));
                }
            }
            if let Some((ub, cb)) = split {
                held.extend([ub, cb]);
            }
        }

        // Output compression (f32 out).
        let pooled = ctx.storage((batch * d).max(1) as u64 * 4)?;
        let k_pos = cfg.kept_positions();
        let cp = CompressParams {
            se: u("se", se)?,
            s: u("seq_len", cfg.seq_len)?,
            d: u("d", d)?,
            k: u("k", k_pos)?,
            batch: u("batch", batch)?,
            y_per_cand: u32::from(fuse),
            kmap_off: u("kmap_off", plan.kmap_off)?,
            ld_out: u("ld_out", out.ld)?,
            max_pool: u32::from(self.out_linear.is_some()),
            off: u("off", if self.out_linear.is_some() { d } else { 0 })?,
            base: u("base", out.off)?,
            pad: 0,
        };
        let bias: &wgpu::Buffer = match &self.out_linear {
            Some((_, b)) => b,
            None => &x,
        };
        let k = ctx.kernel(&KernelSpec::new(V1_COMPRESS, "compress").storage(st))?;
        rq.dispatch(
            &k,
            &cp,
            &[&x, input, bias, &pooled, out.buf],
            [u("groups", d.div_ceil(WG))?, u("batch", batch)?, 1],
        )?;
        if let Some((w, _)) = &self.out_linear {
            record_linear(
                ctx,
                rq,
                (batch, d, d),
                (&pooled, d, 0),
                (w, d, 0),
                None,
                (out.buf, out.ld, out.off),
                false,
                true,
                Storage::F32,
            )?;
        }
        held.extend([x, xu, qkv, pooled]);
        if let Some((a, b, c, e)) = unfused {
            held.extend([a, b, c, e]);
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    se: u32,
    da: u32,
    di: u32,
    d: u32,
    bc: u32,
    n_given: u32,
    pos_off: u32,
    rows_off: u32,
    item_off: u32,
    cand_off: u32,
    total: u32,
    pad: [u32; 5],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedParams {
    se: u32,
    pad: [u32; 3],
    eps: f32,
    pad1: [f32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MhaParams {
    seq: u32,
    heads: u32,
    dh: u32,
    d: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CompressParams {
    se: u32,
    s: u32,
    d: u32,
    k: u32,
    batch: u32,
    y_per_cand: u32,
    kmap_off: u32,
    ld_out: u32,
    max_pool: u32,
    off: u32,
    base: u32,
    pad: u32,
}

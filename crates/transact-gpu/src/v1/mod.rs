//! TransAct V1 on the GPU: the realtime-sequence encoder with the contract of
//! [`transact_model::TransActV1::forward_request`].
//!
//! # One request
//!
//! The host does the O(S) bookkeeping only: it checks the request exactly as
//! the CPU does, maps action ids to embedding rows ([`VocabMode`] rules),
//! applies the inference mask (padding, `request_time - t < 0`; position 0
//! never masked) and keeps the unmasked positions ("packing", as the CPU
//! path does). Everything goes to the device in **one upload**: the kept
//! positions and their rows, the map of the `K` newest positions to packed
//! rows, the item embeddings as given (the user's sequence once) and the
//! candidate embeddings. One command buffer then runs:
//!
//! 1. `v1_gather_fuse.wgsl::gather`: tokens `[E_act(a_t) ; e_t ; e_c]` for
//!    every candidate (early fusion), and the user part `[E_act ; e_t]` once.
//! 2. First layer with early fusion: the input projection split by columns,
//!    `W·[x_t ; e_c] + b = W_x·x_t + (W_c·e_c + b)`: two GEMMs (`S_e` user
//!    rows, `B` candidate rows), added by `fuse_qkv`.
//! 3. Per layer (post-norm): `qkv = x·W_inᵀ + b`, `mha.wgsl` (all heads,
//!    online softmax over the packed keys), `x + attn·W_oᵀ + b_o`, affine
//!    LayerNorm, `relu(x·W_1ᵀ + b_1)·W_2ᵀ + b_2` plus the residual, affine
//!    LayerNorm. Products run on `gemm.wgsl` (bias written first by
//!    `dcn_heads.wgsl::bias_rows`, the GEMM accumulates on top), or, with
//!    at most 8 rows (`B` small), on `v1_linear_rows.wgsl`, one thread per
//!    output with bias, accumulation and ReLU fused.
//! 4. `masked_rows_compress.wgsl`: max-pool over all `S` rows (masked and
//!    padded rows count as zeros), `b_o`, and the `K` newest positions with
//!    zeros for masked ones; one more GEMM adds `pooled·W_oᵀ`.
//!
//! Without early fusion the tokens do not depend on the candidate: the
//! sequence is encoded once and the compression step writes it to every
//! candidate's output.
//!
//! Weights are uploaded once, with the query rows of every `in_proj`
//! pre-scaled by `1/sqrt(d/h)`.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use transact_model::{ModelError, TransActV1, V1Config, V1Request, VocabMode};

use crate::context::Shader;
use crate::kernels::gemm::{GemmOptions, GemmShape};
use crate::kernels::layer_norm::LayerNormShape;
use crate::kernels::{record_gemm, record_layer_norm, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, PooledBuffer, Request, Storage};

/// `shaders/v1_gather_fuse.wgsl`.
pub const V1_GATHER_FUSE: Shader = Shader {
    name: "v1_gather_fuse",
    source: include_str!("../../../../shaders/v1_gather_fuse.wgsl"),
};

/// `shaders/mha.wgsl`.
pub const MHA: Shader = Shader {
    name: "mha",
    source: include_str!("../../../../shaders/mha.wgsl"),
};

/// `shaders/masked_rows_compress.wgsl`.
pub const MASKED_ROWS_COMPRESS: Shader = Shader {
    name: "masked_rows_compress",
    source: include_str!("../../../../shaders/masked_rows_compress.wgsl"),
};

/// `shaders/v1_linear_rows.wgsl`.
pub const V1_LINEAR_ROWS: Shader = Shader {
    name: "v1_linear_rows",
    source: include_str!("../../../../shaders/v1_linear_rows.wgsl"),
};

/// `shaders/dcn_heads.wgsl`.
pub const DCN_HEADS: Shader = Shader {
    name: "dcn_heads",
    source: include_str!("../../../../shaders/dcn_heads.wgsl"),
};

/// Largest head width `d/h` the attention kernel handles.
pub const MAX_HEAD_DIM: usize = 128;

/// Threads per workgroup of the element-wise kernels.
const WG: usize = 64;

/// Workgroups for `total` threads of a flat element-wise kernel: split
/// over x and y so that neither exceeds the per-dimension limit.
pub(crate) fn flat_groups(ctx: &GpuContext, total: usize) -> Result<[u32; 3], GpuError> {
    let g = total.div_ceil(WG);
    let max = (ctx.limits().max_compute_workgroups_per_dimension as usize).max(1);
    let x = g.min(max);
    let y = if x == 0 { 0 } else { g.div_ceil(x) };
    Ok([to_u32("workgroups", x)?, to_u32("workgroups", y)?, 1])
}

/// A `u32` for a parameter block.
fn u(name: &str, v: usize) -> Result<u32, GpuError> {
    to_u32(name, v)
}

/// One `bias_rows` dispatch: `dst[off + r·ld + c] = src[soff + r·sld + c]
/// + bias[c]` (each term optional).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BiasRows<'a> {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) ld: usize,
    pub(crate) off: usize,
    /// `(buffer, row stride, offset)` of the added matrix.
    pub(crate) src: Option<(&'a wgpu::Buffer, usize, usize)>,
    pub(crate) bias: Option<&'a wgpu::Buffer>,
}

/// The parameter block shared by the entry points of `dcn_heads.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DcnParams {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) ld: u32,
    pub(crate) off: u32,
    pub(crate) sld: u32,
    pub(crate) soff: u32,
    pub(crate) has_src: u32,
    pub(crate) has_bias: u32,
    pub(crate) n: u32,
    pub(crate) od: u32,
    pub(crate) cand_off: u32,
    pub(crate) user_off: u32,
    pub(crate) ctx_off: u32,
    pub(crate) di: u32,
    pub(crate) ue: u32,
    pub(crate) total: u32,
}

/// Records one `bias_rows` dispatch (see [`BiasRows`]).
pub(crate) fn record_bias_rows(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: BiasRows<'_>,
    dst: &wgpu::Buffer,
) -> Result<(), GpuError> {
    let total = s.rows * s.cols;
    if total == 0 {
        return Ok(());
    }
    let (src, sld, soff) = match s.src {
        Some((b, ld, off)) => (Some(b), ld, off),
        None => (None, 0, 0),
    };
    // An unused binding still needs a (read-only) buffer.
    let (src_buf, bias_buf) = match (src, s.bias) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, a),
        (None, Some(b)) => (b, b),
        (None, None) => {
            return Err(GpuError::bad("bias_rows", "neither a source nor a bias"));
        }
    };
    let p = DcnParams {
        rows: u("rows", s.rows)?,
        cols: u("cols", s.cols)?,
        ld: u("ld", s.ld)?,
        off: u("off", s.off)?,
        sld: u("sld", sld)?,
        soff: u("soff", soff)?,
        has_src: u32::from(src.is_some()),
        has_bias: u32::from(s.bias.is_some()),
        ..DcnParams::default()
    };
    let k = ctx.kernel(&KernelSpec::new(DCN_HEADS, "bias_rows"))?;
    req.dispatch(&k, &p, &[src_buf, dst, bias_buf], flat_groups(ctx, total)?)
}

/// Products with at most this many rows run on `v1_linear_rows.wgsl` (one
/// thread per output) instead of the tiled GEMM, whose 32-row tiles would
/// mostly compute padding.
pub(crate) const SMALL_M: usize = 8;

/// `y[m×n] = residual + bias + x[m×k]·Wᵀ` (`W` stored `[n × k]`), all
/// densely packed: the post-norm layers' "add the sub-layer to its input" step.
#[allow(clippy::too_many_arguments)]
fn record_residual_linear(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    (m, n, k): (usize, usize, usize),
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    residual: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    let rows = BiasRows {
        rows: m,
        cols: n,
        ld: n,
        off: 0,
        src: Some((residual, n, 0)),
        bias: Some(bias),
    };
    record_bias_rows(ctx, req, rows, y)?;
    record_linear(
        ctx,
        req,
        (m, n, k),
        (x, k, 0),
        (w, k, 0),
        None,
        (y, n, 0),
        false,
        true,
    )
}

/// `y [m × n] = x [m × k] · Wᵀ (+ bias) (+ y)`, then optional ReLU, with
/// `W` stored `[n × k]`. Operands are `(buffer, row stride, offset)`. Few
/// rows run on `v1_linear_rows.wgsl`; otherwise the bias is written first
/// and the tiled GEMM accumulates on top (there, `bias` and `accumulate`
/// cannot be combined).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_linear(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    (m, n, k): (usize, usize, usize),
    x: (&wgpu::Buffer, usize, usize),
    w: (&wgpu::Buffer, usize, usize),
    bias: Option<&wgpu::Buffer>,
    y: (&wgpu::Buffer, usize, usize),
    relu: bool,
    accumulate: bool,
) -> Result<(), GpuError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if m <= SMALL_M {
        let p = LinearRowsParams {
            m: u("m", m)?,
            n: u("n", n)?,
            k: u("k", k)?,
            ldx: u("ldx", x.1)?,
            xoff: u("xoff", x.2)?,
            ldw: u("ldw", w.1)?,
            woff: u("woff", w.2)?,
            ldy: u("ldy", y.1)?,
            yoff: u("yoff", y.2)?,
            has_bias: u32::from(bias.is_some()),
            accumulate: u32::from(accumulate),
            relu: u32::from(relu),
        };
        let kernel = ctx.kernel(&KernelSpec::new(V1_LINEAR_ROWS, "linear_rows"))?;
        return req.dispatch(
            &kernel,
            &p,
            &[x.0, w.0, bias.unwrap_or(w.0), y.0],
            [u("groups", n.div_ceil(WG))?, u("rows", m)?, 1],
        );
    }
    match (bias, accumulate) {
        (Some(_), true) => {
            return Err(GpuError::bad(
                "linear",
                "bias and accumulation together are not supported by the GEMM path",
            ));
        }
        (Some(b), false) => record_bias_rows(
            ctx,
            req,
            BiasRows {
                rows: m,
                cols: n,
                ld: y.1,
                off: y.2,
                src: None,
                bias: Some(b),
            },
            y.0,
        )?,
        (None, _) => {}
    }
    let s = GemmShape {
        m,
        n,
        k,
        lda: x.1,
        ldb: w.1,
        ldc: y.1,
        a_off: x.2,
        b_off: w.2,
        c_off: y.2,
    };
    let o = GemmOptions {
        trans_b: true,
        relu,
        accumulate: accumulate || bias.is_some(),
        storage: Storage::F32,
    };
    record_gemm(ctx, req, s, o, x.0, w.0, y.0)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearRowsParams {
    m: u32,
    n: u32,
    k: u32,
    ldx: u32,
    xoff: u32,
    ldw: u32,
    woff: u32,
    ldy: u32,
    yoff: u32,
    has_bias: u32,
    accumulate: u32,
    relu: u32,
}

/// Maps a CPU-model error to this crate's error.
pub(crate) fn model_err(e: ModelError) -> GpuError {
    GpuError::bad("model", e.to_string())
}

/// `BadInput` naming the first non-finite value of `xs`.
pub(crate) fn check_finite(name: &str, xs: &[f32]) -> Result<(), GpuError> {
    match xs.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(GpuError::bad(
            name,
            format!("non-finite value at index {i}"),
        )),
    }
}

/// One encoder layer's weights on the device.
struct Layer {
    /// `[3d × d]`, query rows scaled by `1/sqrt(d/h)`.
    in_w: wgpu::Buffer,
    /// `[3d]`, query part scaled likewise.
    in_b: wgpu::Buffer,
    out_w: wgpu::Buffer,
    out_b: wgpu::Buffer,
    w1: wgpu::Buffer,
    b1: wgpu::Buffer,
    w2: wgpu::Buffer,
    b2: wgpu::Buffer,
    g1: wgpu::Buffer,
    be1: wgpu::Buffer,
    g2: wgpu::Buffer,
    be2: wgpu::Buffer,
}

/// The request after host-side checks: sizes and the one upload.
pub(crate) struct Plan {
    /// Candidates `B`.
    pub(crate) batch: usize,
    /// Kept (unmasked) positions `S_e ≥ 1`.
    se: usize,
    /// Actions given (`n ≤ S`).
    n_given: usize,
    /// The upload, as u32 words (f32 values bit-cast).
    pub(crate) words: Vec<u32>,
    pos_off: usize,
    rows_off: usize,
    kmap_off: usize,
    item_off: usize,
    /// Offset of the candidate embeddings in `words`.
    pub(crate) cand_off: usize,
}

impl Plan {
    /// Appends `xs` (bit patterns) to the upload; returns their offset.
    pub(crate) fn push_f32(&mut self, xs: &[f32]) -> usize {
        let off = self.words.len();
        self.words.extend(xs.iter().map(|v| v.to_bits()));
        off
    }
}

/// Where the encoder output goes: `B` rows of stride `ld` in `buf`.
pub(crate) struct OutTarget<'a> {
    pub(crate) buf: &'a wgpu::Buffer,
    pub(crate) ld: usize,
}

/// TransAct V1 with its weights on the GPU (see the [module docs](self)).
pub struct GpuTransActV1 {
    ctx: Arc<GpuContext>,
    cfg: V1Config,
    vocab_sorted: Vec<i64>,
    action_emb: wgpu::Buffer,
    layers: Vec<Layer>,
    out_linear: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl std::fmt::Debug for GpuTransActV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTransActV1")
            .field("d", &self.cfg.d_model())
            .field("layers", &self.layers.len())
            .field("heads", &self.cfg.nhead)
            .finish_non_exhaustive()
    }
}

impl GpuTransActV1 {
    /// Uploads the weights of `model` (once).
    ///
    /// Fails if the head width `d/h` exceeds [`MAX_HEAD_DIM`], a weight does
    /// not fit a storage binding, or the device fails.
    pub fn new(ctx: Arc<GpuContext>, model: &TransActV1) -> Result<Self, GpuError> {
        let cfg = model.config().clone();
        cfg.validate().map_err(model_err)?;
        let d = cfg.d_model();
        let dh = d / cfg.nhead;
        if dh > MAX_HEAD_DIM {
            return Err(GpuError::Unsupported(format!(
                "V1 head width {dh} (the attention kernel handles up to {MAX_HEAD_DIM})"
            )));
        }
        let ff = cfg.dim_feedforward;
        let map = model.to_tensors();
        let pre = transact_model::v1::TENSOR_PREFIX;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, GpuError> {
            map.f32(&format!("{pre}{name}"), shape)
                .map(<[f32]>::to_vec)
                .map_err(model_err)
        };
        let action = get(
            "action_emb_module.weight",
            &[cfg.action_rows(), cfg.action_emb_dim],
        )?;
        let action_emb = ctx.persistent("v1 action table", &action)?;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_layer);
        for i in 0..cfg.num_layer {
            let p = format!("transformer_encoder.layers.{i}.");
            let t = |n: &str, shape: &[usize]| get(&format!("{p}{n}"), shape);
            let up = |n: &str, v: &[f32]| ctx.persistent(&format!("v1 layer {i} {n}"), v);
            let mut in_w = t("self_attn.in_proj_weight", &[3 * d, d])?;
            in_w[..d * d].iter_mut().for_each(|v| *v *= scale);
            let mut in_b = t("self_attn.in_proj_bias", &[3 * d])?;
            in_b[..d].iter_mut().for_each(|v| *v *= scale);
            layers.push(Layer {
                in_w: up("in_w", &in_w)?,
                in_b: up("in_b", &in_b)?,
                out_w: up("out_w", &t("self_attn.out_proj.weight", &[d, d])?)?,
                out_b: up("out_b", &t("self_attn.out_proj.bias", &[d])?)?,
                w1: up("w1", &t("linear1.weight", &[ff, d])?)?,
                b1: up("b1", &t("linear1.bias", &[ff])?)?,
                w2: up("w2", &t("linear2.weight", &[d, ff])?)?,
                b2: up("b2", &t("linear2.bias", &[d])?)?,
                g1: up("g1", &t("norm1.weight", &[d])?)?,
                be1: up("be1", &t("norm1.bias", &[d])?)?,
                g2: up("g2", &t("norm2.weight", &[d])?)?,
                be2: up("be2", &t("norm2.bias", &[d])?)?,
            });
        }
        let out_linear = if cfg.concat_max_pool {
            let w = get("out_linear.weight", &[d, d])?;
            let b = get("out_linear.bias", &[d])?;
            Some((
                ctx.persistent("v1 out_linear weight", &w)?,
                ctx.persistent("v1 out_linear bias", &b)?,
            ))
        } else {
            None
        };
        let mut vocab_sorted = cfg.action_vocab.clone();
        vocab_sorted.sort_unstable();
        Ok(Self {
            ctx,
            cfg,
            vocab_sorted,
            action_emb,
            layers,
            out_linear,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &V1Config {
        &self.cfg
    }

    /// Output width per candidate, `(K + 1)·d` (or `K·d` without max-pool).
    pub fn output_dim(&self) -> usize {
        self.cfg.output_dim()
    }

    /// The context the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Encodes one request: `B × output_dim` values, what
    /// [`TransActV1::forward_request`] writes (inference mask, masked rows
    /// zero, max-pool over all `S` rows, `K` newest positions).
    ///
    /// Fails, before anything runs, on the inputs the CPU model rejects
    /// (wrong lengths, more than `seq_len` actions, `B = 0`, non-finite
    /// embeddings, an unknown action id in [`VocabMode::Padded`]), and on a
    /// device error.
    pub fn encode(&self, req: &V1Request<'_>) -> Result<Vec<f32>, GpuError> {
        let plan = self.plan(req)?;
        let ctx = &*self.ctx;
        let od = self.output_dim();
        let mut rq = ctx.request("v1 encode");
        let input = ctx.upload(&plan.words)?;
        let out = ctx.storage((plan.batch * od * 4) as u64)?;
        let mut held = Vec::new();
        self.record(
            &mut rq,
            &plan,
            &input,
            OutTarget { buf: &out, ld: od },
            &mut held,
        )?;
        Ok(rq.finish_read::<f32>(&out, plan.batch * od)?.data)
    }

    /// The embedding row of `id` (the CPU model's rule), or an error for an
    /// unknown id in [`VocabMode::Padded`].
    fn action_row(&self, id: i64, position: usize) -> Result<usize, GpuError> {
        let rank = self.vocab_sorted.binary_search(&id).ok();
        match (self.cfg.vocab_mode, rank) {
            (VocabMode::Padded, Some(r)) => Ok(r + 1),
            (VocabMode::Padded, None) if id == -1 => Ok(0),
            (VocabMode::Padded, None) => Err(GpuError::bad(
                "action_types",
                format!(
                    "position {position}: action id {id} is not in the vocabulary (use -1 for padding)"
                ),
            )),
            (VocabMode::Reference, Some(r)) => Ok(r),
            (VocabMode::Reference, None) => Ok(0),
        }
    }

    /// Checks the request like the CPU model and builds the upload.
    pub(crate) fn plan(&self, req: &V1Request<'_>) -> Result<Plan, GpuError> {
        let cfg = &self.cfg;
        let di = cfg.item_emb_dim;
        let n = req.action_types.len();
        if n > cfg.seq_len {
            return Err(GpuError::bad(
                "action_types",
                format!("{n} actions given, more than seq_len {}", cfg.seq_len),
            ));
        }
        if req.item_embeddings.len() != n * di {
            return Err(GpuError::len(
                "item_embeddings",
                n * di,
                req.item_embeddings.len(),
            ));
        }
        if req.action_times_ms.len() != n {
            return Err(GpuError::len(
                "action_times_ms",
                n,
                req.action_times_ms.len(),
            ));
        }
        let nc = req.candidates.len();
        if nc == 0 {
            return Err(GpuError::bad("candidates", "no candidates (B = 0)"));
        }
        if !nc.is_multiple_of(di) {
            return Err(GpuError::bad(
                "candidates",
                format!("{nc} values is not a multiple of item_emb_dim {di}"),
            ));
        }
        check_finite("item_embeddings", req.item_embeddings)?;
        check_finite("candidates", req.candidates)?;
        let batch = nc / di;
        let rows = req
            .action_types
            .iter()
            .enumerate()
            .map(|(p, &id)| self.action_row(id, p))
            .collect::<Result<Vec<_>, _>>()?;
        // Kept positions: 0 always; later ones unless padding or in the
        // future (difference in i128: extreme timestamps cannot wrap).
        let mut keep = vec![0usize];
        for (p, (&row, &t)) in rows.iter().zip(req.action_times_ms).enumerate().skip(1) {
            let future = i128::from(req.request_time_ms) - i128::from(t) < 0;
            if row != 0 && !future {
                keep.push(p);
            }
        }
        let se = keep.len();
        let k = cfg.kept_positions();
        let mut kmap = vec![-1i32; k];
        for (i, &p) in keep.iter().enumerate() {
            if p < k {
                kmap[p] = i32::try_from(i).map_err(|_| GpuError::bad("seq_len", "too long"))?;
            }
        }
        let mut words = Vec::with_capacity(2 * se + k + (n + batch) * di + 64);
        let pos_off = 0;
        for &p in &keep {
            words.push(u("position", p)?);
        }
        let rows_off = words.len();
        for &p in &keep {
            words.push(u("row", rows.get(p).copied().unwrap_or(0))?);
        }
        let kmap_off = words.len();
        words.extend(kmap.iter().map(|&v| v.cast_unsigned()));
        let mut plan = Plan {
            batch,
            se,
            n_given: n,
            words,
            pos_off,
            rows_off,
            kmap_off,
            item_off: 0,
            cand_off: 0,
        };
        plan.item_off = plan.push_f32(req.item_embeddings);
        plan.cand_off = plan.push_f32(req.candidates);
        Ok(plan)
    }

    /// Records the encoder for `plan` (its upload in `input`) and writes
    /// `B` output rows into `out`. Pooled buffers the dispatches use are
    /// pushed to `held`: keep them until the request has finished.
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
        let f4 = |n: usize| (n.max(1) * 4) as u64;
        let x = ctx.storage(f4(rows * d))?;
        let xu = ctx.storage(f4(se * du))?;
        let qkv = ctx.storage(f4(rows * 3 * d))?;
        let att = ctx.storage(f4(rows * d))?;
        let y = ctx.storage(f4(rows * d))?;
        let x1 = ctx.storage(f4(rows * d))?;
        let hid = ctx.storage(f4(rows * ff))?;

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
            width: u("width", 3 * d)?,
            total: u("total", rows * d)?,
            pad: [0; 4],
        };
        let k = ctx.kernel(&KernelSpec::new(V1_GATHER_FUSE, "gather"))?;
        rq.dispatch(
            &k,
            &gp,
            &[input, &x, &self.action_emb, &xu],
            flat_groups(ctx, rows * d)?,
        )?;

        for (l, layer) in self.layers.iter().enumerate() {
            // qkv = x·W_inᵀ + b_in.
            if l == 0 && fuse {
                let ub = ctx.storage(f4(se * 3 * d))?;
                let cb = ctx.storage(f4(batch * 3 * d))?;
                // U = xu·W_userᵀ (per request, no bias) and
                // C = e_c·W_candᵀ + b (per candidate): the column blocks of W_in.
                record_linear(
                    ctx,
                    rq,
                    (se, 3 * d, du),
                    (&xu, du, 0),
                    (&layer.in_w, d, 0),
                    None,
                    (&ub, 3 * d, 0),
                    false,
                    false,
                )?;
                record_linear(
                    ctx,
                    rq,
                    (batch, 3 * d, di),
                    (input, di, plan.cand_off),
                    (&layer.in_w, d, du),
                    Some(&layer.in_b),
                    (&cb, 3 * d, 0),
                    false,
                    false,
                )?;
                let fp = GatherParams {
                    total: u("total", rows * 3 * d)?,
                    ..gp
                };
                let k = ctx.kernel(&KernelSpec::new(V1_GATHER_FUSE, "fuse_qkv"))?;
                rq.dispatch(&k, &fp, &[&ub, &qkv, &cb], flat_groups(ctx, rows * 3 * d)?)?;
                held.push(ub);
                held.push(cb);
            } else {
                record_linear(
                    ctx,
                    rq,
                    (rows, 3 * d, d),
                    (&x, d, 0),
                    (&layer.in_w, d, 0),
                    Some(&layer.in_b),
                    (&qkv, 3 * d, 0),
                    false,
                    false,
                )?;
            }
            // Attention, all heads.
            let mp = MhaParams {
                seq: u("se", se)?,
                heads: u("heads", h)?,
                dh: u("dh", dh)?,
                d: u("d", d)?,
            };
            let k = ctx.kernel(&KernelSpec::new(MHA, "mha"))?;
            rq.dispatch(
                &k,
                &mp,
                &[&qkv, &att],
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
                &att,
                &layer.out_w,
                &layer.out_b,
                &x,
                &y,
            )?;
            let ln = LayerNormShape {
                rows,
                d,
                seq: 1,
                eps: cfg.layer_norm_eps,
                storage: Storage::F32,
            };
            record_layer_norm(ctx, rq, ln, &y, &x1, Some((&layer.g1, &layer.be1)))?;
            // hid = relu(x1·W_1ᵀ + b_1); y = x1 + hid·W_2ᵀ + b_2; x = LN2(y).
            record_linear(
                ctx,
                rq,
                (rows, ff, d),
                (&x1, d, 0),
                (&layer.w1, d, 0),
                Some(&layer.b1),
                (&hid, ff, 0),
                true,
                false,
            )?;
            record_residual_linear(ctx, rq, (rows, d, ff), &hid, &layer.w2, &layer.b2, &x1, &y)?;
            record_layer_norm(ctx, rq, ln, &y, &x, Some((&layer.g2, &layer.be2)))?;
        }

        // Output compression.
        let pooled = ctx.storage(f4(batch * d))?;
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
            pad: [0; 2],
        };
        let bias: &wgpu::Buffer = match &self.out_linear {
            Some((_, b)) => b,
            None => &x,
        };
        let k = ctx.kernel(&KernelSpec::new(MASKED_ROWS_COMPRESS, "compress"))?;
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
                (out.buf, out.ld, 0),
                false,
                true,
            )?;
        }
        held.extend([x, xu, qkv, att, y, x1, hid, pooled]);
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
    width: u32,
    total: u32,
    pad: [u32; 4],
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
    pad: [u32; 2],
}

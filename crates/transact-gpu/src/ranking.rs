//! The whole ranking model on the GPU ([`GpuRankingModel`]): a TransAct
//! V1 or V2 encoder and the ranking heads, weights uploaded once.
//!
//! - **V1** ([`GpuRankingModel::score`]): encoder, feature assembly and
//!   heads in one upload and one command buffer; only the logits are read
//!   back.
//! - **V2** ([`GpuRankingModel::score_v2`]): the tokens of the selected
//!   rows are built on the CPU ([`V2Encoder::block_input`], the one token
//!   builder: a gather and a few adds per token) and uploaded; then in one
//!   command buffer the causal blocks ([`GpuV2Blocks`], the same kernels
//!   the benchmarks time), the output compression
//!   (`shaders/v2_compress.wgsl`: max-pool and newest rows, then `W_o` as a
//!   GEMM), the feature assembly and the heads; only the logits are read
//!   back. The nearest-neighbour selection that produced the rows runs before this
//!   (`transact-features` on the CPU, or
//!   [`crate::kernels::select::select_nearest`] on the device, which
//!   selects the same set).

use std::sync::Arc;

use transact_model::{RankingModel, V1Job, V1Request, V2Encoder, V2Job, V2Request};

use crate::kernels::attention::lens_u32;
use crate::kernels::{CompressShape, flat_groups, record_compress};
use crate::v1::{DCN_HEADS, DcnParams, OutTarget, check_finite, model_err, record_linear};
use crate::{
    GpuContext, GpuError, GpuRankingHeads, GpuTransActV1, GpuV2Blocks, KernelSpec, Precision,
    Storage, Variant,
};

/// The encoder half of a [`GpuRankingModel`].
enum GpuEncoder {
    V1(Box<GpuTransActV1>),
    V2 {
        /// The CPU weights for token building.
        encoder: Box<V2Encoder>,
        /// The blocks on the device.
        blocks: GpuV2Blocks,
        /// `W_o [d × d]` (`[out × in]`) of the output compression.
        out_weight: wgpu::Buffer,
        /// `b_o [d]`.
        out_bias: wgpu::Buffer,
    },
}

/// The ranking model on the GPU (see the [module docs](self)).
pub struct GpuRankingModel {
    encoder: GpuEncoder,
    heads: GpuRankingHeads,
    ctx: Arc<GpuContext>,
    item_dim: usize,
    user_dim: usize,
    context_dim: usize,
}

impl std::fmt::Debug for GpuRankingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("GpuRankingModel");
        match &self.encoder {
            GpuEncoder::V1(v1) => s.field("v1", v1),
            GpuEncoder::V2 { blocks, .. } => s.field("v2", blocks),
        };
        s.field("heads", &self.heads).finish_non_exhaustive()
    }
}

impl GpuRankingModel {
    /// Uploads the weights of `model` (encoder and heads): the fused
    /// encoder where it fits, f32 storage (see
    /// [`GpuRankingModel::with_options`]).
    pub fn new(ctx: Arc<GpuContext>, model: &RankingModel) -> Result<Self, GpuError> {
        Self::with_options(ctx, model, Variant::Fused, Precision::F32)
    }

    /// Uploads the weights of `model` with the encoder's `variant` and
    /// storage `precision` (preferences, with the fallbacks of
    /// [`GpuTransActV1::with_options`] and [`GpuV2Blocks::new`]); the heads
    /// always run in f32.
    pub fn with_options(
        ctx: Arc<GpuContext>,
        model: &RankingModel,
        variant: Variant,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        let encoder = match (model.v1(), model.v2()) {
            (Some(v1), _) => GpuEncoder::V1(Box::new(GpuTransActV1::with_options(
                ctx.clone(),
                v1,
                variant,
                precision,
            )?)),
            (None, Some(v2)) => {
                let d = v2.config().d_model();
                let map = v2.to_tensors();
                let w = map.f32("v2.out.weight", &[d, d]).map_err(model_err)?;
                let b = map.f32("v2.out.bias", &[d]).map_err(model_err)?;
                GpuEncoder::V2 {
                    blocks: GpuV2Blocks::new(ctx.clone(), v2.blocks(), variant, precision)?,
                    out_weight: ctx.persistent("v2.out.weight", w)?,
                    out_bias: ctx.persistent("v2.out.bias", b)?,
                    encoder: Box::new(v2.clone()),
                }
            }
            (None, None) => {
                return Err(GpuError::Unsupported(format!(
                    "no GPU path for a {} encoder",
                    model.encoder().kind()
                )));
            }
        };
        let heads = GpuRankingHeads::new(ctx.clone(), model.heads())?;
        let hc = model.heads().config();
        Ok(Self {
            encoder,
            heads,
            ctx,
            item_dim: model.item_emb_dim(),
            user_dim: hc.user_emb_dim,
            context_dim: hc.context_dim,
        })
    }

    /// The device the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The V1 encoder (`None` for a V2 model).
    pub fn v1(&self) -> Option<&GpuTransActV1> {
        match &self.encoder {
            GpuEncoder::V1(v1) => Some(v1),
            GpuEncoder::V2 { .. } => None,
        }
    }

    /// The V2 blocks (`None` for a V1 model).
    pub fn v2_blocks(&self) -> Option<&GpuV2Blocks> {
        match &self.encoder {
            GpuEncoder::V1(_) => None,
            GpuEncoder::V2 { blocks, .. } => Some(blocks),
        }
    }

    /// The encoder variant that runs (after any fallback).
    pub fn variant(&self) -> Variant {
        match &self.encoder {
            GpuEncoder::V1(v1) => v1.variant(),
            GpuEncoder::V2 { blocks, .. } => blocks.variant(),
        }
    }

    /// The encoder's storage precision (after any fallback).
    pub fn precision(&self) -> Precision {
        match &self.encoder {
            GpuEncoder::V1(v1) => v1.precision(),
            GpuEncoder::V2 { blocks, .. } => blocks.precision(),
        }
    }

    /// The heads.
    pub fn heads(&self) -> &GpuRankingHeads {
        &self.heads
    }

    /// The V1 encoder, or an error naming the model's kind.
    fn need_v1(&self) -> Result<&GpuTransActV1, GpuError> {
        self.v1().ok_or_else(|| {
            GpuError::bad(
                "request",
                "a TransAct V1 request was given to a TransAct V2 model",
            )
        })
    }

    /// Encoder output, `B × output_dim` (as
    /// [`transact_model::TransActV1::forward_request`]); for tests and for
    /// running the heads on the CPU. Fails for a V2 model.
    pub fn encode(&self, req: &V1Request<'_>) -> Result<Vec<f32>, GpuError> {
        self.need_v1()?.encode(req)
    }

    /// Head logits, `B × H` (as [`RankingModel::score`]): features
    /// `[encoded ; e_c ; user ; context]` are built on the device, so only
    /// the logits are read back.
    ///
    /// `user_emb` and `context` must be given exactly when the heads have a
    /// non-zero width for them. Fails on the inputs the CPU model rejects,
    /// for a V2 model and on a device error.
    pub fn score(
        &self,
        req: &V1Request<'_>,
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
    ) -> Result<Vec<f32>, GpuError> {
        self.score_batch(&[V1Job {
            req: *req,
            user_emb,
            context,
        }])
    }

    /// Head logits of several V1 requests (of different users, usually)
    /// in one submission: each request's encoder writes its rows of one
    /// feature matrix, the heads run once over all rows, and one readback
    /// returns every job's `B × H` logits, in job order. Fails as a whole
    /// when one job is malformed ([`GpuRankingModel::score`] names its field).
    pub fn score_batch(&self, jobs: &[V1Job<'_>]) -> Result<Vec<f32>, GpuError> {
        let v1 = self.need_v1()?;
        let n = self.heads.input_dim();
        let od = v1.output_dim();
        let di = v1.config().item_emb_dim;
        if od + di + self.user_dim + self.context_dim != n {
            return Err(GpuError::bad(
                "model",
                format!("heads read {n} features, the encoder and features give a different width"),
            ));
        }
        let to = crate::kernels::to_u32;
        let ctx = &*self.ctx;
        // Host-side checks and uploads first: a bad job fails before the
        // device is taken.
        let mut plans = Vec::with_capacity(jobs.len());
        for job in jobs {
            let user = optional_feature("user_embedding", job.user_emb, self.user_dim)?;
            let cx = optional_feature("context", job.context, self.context_dim)?;
            let mut plan = v1.plan(&job.req)?;
            let user_off = plan.push_f32(user);
            let ctx_off = plan.push_f32(cx);
            plans.push((plan, user_off, ctx_off));
        }
        let total: usize = plans.iter().map(|(p, ..)| p.batch).sum();
        if total == 0 {
            return Ok(Vec::new());
        }
        let mut rq = ctx.request("v1 score");
        let feats = ctx.storage((total * n * 4) as u64)?;
        let assemble = ctx.kernel(&KernelSpec::new(DCN_HEADS, "assemble"))?;
        let mut held = Vec::new();
        let mut row = 0;
        for (plan, user_off, ctx_off) in &plans {
            let input = ctx.upload(&plan.words)?;
            v1.record(
                &mut rq,
                plan,
                &input,
                OutTarget {
                    buf: &feats,
                    ld: n,
                    off: row * n,
                },
                &mut held,
            )?;
            let cells = plan.batch * (n - od);
            let p = DcnParams {
                off: to("off", row * n)?,
                n: to("n", n)?,
                od: to("od", od)?,
                cand_off: to("cand_off", plan.cand_off)?,
                user_off: to("user_off", *user_off)?,
                ctx_off: to("ctx_off", *ctx_off)?,
                di: to("di", di)?,
                ue: to("user", self.user_dim)?,
                total: to("total", cells)?,
                ..DcnParams::default()
            };
            rq.dispatch(&assemble, &p, &[&input, &feats], flat_groups(ctx, cells)?)?;
            held.push(input);
            row += plan.batch;
        }
        let logits = self.heads.record(&mut rq, &feats, total, &mut held)?;
        let r = rq.finish_read::<f32>(&logits, total * self.heads.num_heads())?;
        Ok(r.data)
    }

    /// Head logits, `B × H`, of a TransAct V2 request (as
    /// [`RankingModel::score_v2`]): `req` holds each candidate's selected
    /// tokens, `head_candidates` (`B × d_item`) the candidate embeddings the
    /// heads read. See the [module docs](self) for what runs where.
    ///
    /// Fails on the inputs the CPU model rejects, for a V1 model and on a
    /// device error.
    pub fn score_v2(
        &self,
        req: &V2Request<'_>,
        head_candidates: &[f32],
        user_emb: Option<&[f32]>,
        context: Option<&[f32]>,
    ) -> Result<Vec<f32>, GpuError> {
        self.score_batch_v2(&[V2Job {
            req: *req,
            head_candidates,
            user_emb,
            context,
        }])
    }

    /// Head logits of several V2 requests in one forward: every job's
    /// candidate rows are stacked into one block input (rows padded to the
    /// longest job's slots; a row reads only its own `lens` tokens), so the
    /// blocks, the compression and the heads each run once over all rows.
    /// Returns every job's `B × H` logits, in job order; fails as a whole
    /// when one job is malformed.
    pub fn score_batch_v2(&self, jobs: &[V2Job<'_>]) -> Result<Vec<f32>, GpuError> {
        let GpuEncoder::V2 {
            encoder,
            blocks,
            out_weight,
            out_bias,
        } = &self.encoder
        else {
            return Err(GpuError::bad(
                "request",
                "a TransAct V2 request was given to a TransAct V1 model",
            ));
        };
        let di = self.item_dim;
        let cfg = encoder.config();
        let (d, od) = (cfg.d_model(), encoder.output_dim());
        let n = self.heads.input_dim();
        if od + di + self.user_dim + self.context_dim != n {
            return Err(GpuError::bad(
                "model",
                format!("heads read {n} features, the encoder and features give a different width"),
            ));
        }
        // Host side: each job's tokens, stacked at the longest slot count.
        let batch: usize = jobs.iter().map(|j| j.req.batch).sum();
        let seq = jobs.iter().map(|j| j.req.seq).max().unwrap_or(0);
        let mut x = vec![0.0f32; batch * seq * d];
        let mut lens = Vec::with_capacity(batch);
        let mut aux =
            Vec::with_capacity(batch * di + jobs.len() * (self.user_dim + self.context_dim));
        let mut features = Vec::with_capacity(jobs.len());
        let mut row = 0;
        for job in jobs {
            let req = &job.req;
            let user = optional_feature("user_embedding", job.user_emb, self.user_dim)?;
            let cx = optional_feature("context", job.context, self.context_dim)?;
            if job.head_candidates.len() != req.batch * di {
                return Err(GpuError::len(
                    "head_candidates",
                    req.batch * di,
                    job.head_candidates.len(),
                ));
            }
            check_finite("head_candidates", job.head_candidates)?;
            let xj = encoder.block_input(req).map_err(model_err)?;
            if req.seq > 0 {
                for (b, src) in xj.chunks_exact(req.seq * d).enumerate() {
                    let at = (row + b) * seq * d;
                    x[at..at + src.len()].copy_from_slice(src);
                }
            }
            lens.extend_from_slice(&lens_u32(req.lens, req.batch, req.seq)?);
            features.push((row, user, cx));
            row += req.batch;
        }
        if batch == 0 {
            return Ok(Vec::new());
        }
        if seq == 0 {
            return Err(GpuError::bad("seq", "must be at least 1"));
        }
        for job in jobs {
            aux.extend_from_slice(job.head_candidates);
        }
        let mut feature_offsets = Vec::with_capacity(jobs.len());
        for (row, user, cx) in &features {
            let user_off = aux.len();
            aux.extend_from_slice(user);
            let ctx_off = aux.len();
            aux.extend_from_slice(cx);
            feature_offsets.push((*row, user_off, ctx_off));
        }
        let ctx = &*self.ctx;
        let to = crate::kernels::to_u32;
        let mut rq = ctx.request("v2 score");
        let xa = blocks.upload(&x)?;
        let lb = ctx.upload(&lens)?;
        let ab = ctx.upload(&aux)?;
        let mut held = Vec::new();
        let y = blocks.record(
            &mut rq,
            xa,
            &lb,
            batch,
            seq,
            cfg.causal,
            cfg.layer_norm_eps,
            &mut held,
        )?;
        let pool = ctx.storage((batch * d * 4) as u64)?;
        let feats = ctx.storage((batch * n * 4) as u64)?;
        let shape = CompressShape {
            batch,
            seq,
            d,
            k: od / d - 1,
            kept: cfg.latest_n_emb.min(cfg.seq_len),
            n,
            storage: blocks.precision().storage(),
        };
        record_compress(ctx, &mut rq, shape, &y, &lb, &pool, &feats)?;
        // feats[:, ..d] = W_o · pool + b_o.
        record_linear(
            ctx,
            &mut rq,
            (batch, d, d),
            (&pool, d, 0),
            (out_weight, d, 0),
            Some(out_bias),
            (&feats, n, 0),
            false,
            false,
            Storage::F32,
        )?;
        let assemble = ctx.kernel(&KernelSpec::new(DCN_HEADS, "assemble"))?;
        for (job, (row, user_off, ctx_off)) in jobs.iter().zip(feature_offsets) {
            let cells = job.req.batch * (n - od);
            let p = DcnParams {
                off: to("off", row * n)?,
                n: to("n", n)?,
                od: to("od", od)?,
                cand_off: to("cand_off", row * di)?,
                user_off: to("user_off", user_off)?,
                ctx_off: to("ctx_off", ctx_off)?,
                di: to("di", di)?,
                ue: to("user", self.user_dim)?,
                total: to("total", cells)?,
                ..DcnParams::default()
            };
            rq.dispatch(&assemble, &p, &[&ab, &feats], flat_groups(ctx, cells)?)?;
        }
        let logits = self.heads.record(&mut rq, &feats, batch, &mut held)?;
        let r = rq.finish_read::<f32>(&logits, batch * self.heads.num_heads())?;
        Ok(r.data)
    }
}

fn optional_feature<'a>(
    name: &str,
    value: Option<&'a [f32]>,
    width: usize,
) -> Result<&'a [f32], GpuError> {
    match value {
        None if width == 0 => Ok(&[]),
        None => Err(GpuError::bad(
            name,
            format!("the model needs {width} values and none were given"),
        )),
        Some(v) => {
            if v.len() != width {
                return Err(GpuError::len(name, width, v.len()));
            }
            check_finite(name, v)?;
            Ok(v)
        }
    }
}

//! TransAct V1 on the GPU: the realtime-sequence encoder with the contract of
//! [`transact_model::TransActV1::forward_request`].
//!
//! # One request
//!
//! The host does the O(S) bookkeeping only, through the same function as the
//! CPU ([`transact_model::v1::PackedRequest::pack`]): it checks the request,
//! maps action ids to embedding rows ([`VocabMode`](transact_model::VocabMode) rules), applies the
//! inference mask (padding, `request_time - t < 0`; position 0 never masked)
//! and keeps the unmasked positions ("packing"). Everything goes to the device in **one upload**: the kept
//! positions and their rows, the map of the `K` newest positions to packed
//! rows, the item embeddings as given (the user's sequence once) and the
//! candidate embeddings. One command buffer then runs:
//!
//! 1. `v1_gather_fuse.wgsl::gather`: tokens `[E_act(a_t) ; e_t ; e_c]` for
//!    every candidate (early fusion), and the user part `[E_act ; e_t]` once.
//! 2. First layer with early fusion: the input projection split by columns,
//!    `W·[x_t ; e_c] + b = W_x·x_t + (W_c·e_c + b)`: two products (`S_e`
//!    user rows, `B` candidate rows, `e_c` read back from the tokens),
//!    added by `v1_add_rows.wgsl`. Other layers: `qkv = x·W_inᵀ + b`.
//! 3. The rest of each post-norm layer, in one of two ways ([`Variant`]):
//!    - **Fused** (`v1_block_fused.wgsl`, one dispatch per layer): per
//!      workgroup up to 256 query rows of one candidate (4 per invocation,
//!      8 to 64 invocations chosen by the sequence length), multi-head
//!      attention with
//!      an online softmax over the packed keys, `x + attn·W_oᵀ + b_o`,
//!      affine LayerNorm, `relu(x·W_1ᵀ + b_1)·W_2ᵀ + b_2` plus the residual,
//!      affine LayerNorm, written back into `x`. Rows are held in named
//!      vec4 registers and the layer's weights (`W_oᵀ`, `W_1`, `W_2ᵀ`, biases,
//!      LayerNorm parameters) are read from a 64 KiB uniform buffer. Runs
//!      where [`fused_fits`]: `d` up to 96, at most 4 heads (any head
//!      width), the weights in 64 KiB (`f ≤ 33` at `d = 96`). The input
//!      projection's bias is applied inside it (see the shader).
//!    - **Unfused** (about 9 dispatches per layer): `v1_mha.wgsl` (one
//!      thread per row and head, online softmax), residual + bias
//!      (`v1_add_rows.wgsl`) with the output projection accumulated on top,
//!      affine LayerNorm, the FFN likewise. Products run on `gemm.wgsl`
//!      (bias or residual written first by `v1_add_rows.wgsl`, the GEMM
//!      accumulates on top), or, with at most 8 rows (`B` small), on
//!      `v1_linear_rows.wgsl`, one thread per output with bias,
//!      accumulation and ReLU fused.
//! 4. `v1_compress.wgsl`: max-pool over all `S` rows (masked and padded rows
//!    count as zeros), `b_o`, and the `K` newest positions with zeros for
//!    masked ones; one more product adds `pooled·W_oᵀ`.
//!
//! Without early fusion the tokens do not depend on the candidate: the
//! sequence is encoded once and the compression step writes it to every
//! candidate's output.
//!
//! Weights are uploaded once, with the query rows of every `in_proj`
//! pre-scaled by `1/sqrt(d/h)`. Storage precision ([`Precision`]): the
//! action table, the layer weights and every activation of steps 1–3 are
//! f32, or f16 where the device has `SHADER_F16` (arithmetic is f32
//! either way; an f16 request without it falls back to f32). The encoder
//! output, the max-pool projection and the heads stay f32.
//!
//! # Files
//!
//! - `mod.rs`: [`GpuTransActV1`], its accessors and [`GpuTransActV1::encode`].
//! - `weights.rs`: the weights' one upload (layouts, the fused kernel's
//!   uniform buffer, [`fused_fits`]).
//! - `plan.rs`: a request's host-side checks and its one upload.
//! - `forward.rs`: the dispatches of the forward, recorded into a request.
//! - `rows.rs`: launchers of the row-wise kernels (bias and residual adds,
//!   small products) the forward and the heads share.

#[cfg(test)]
mod tests;

mod forward;
mod plan;
mod rows;
mod weights;

use std::sync::Arc;

use transact_model::v1::ActionRows;
use transact_model::{V1Config, V1Request};

use crate::context::Shader;
use crate::v2::{Precision, Variant};
use crate::{GpuContext, GpuError, Readback, Storage};

pub(crate) use plan::{OutTarget, Plan, check_finite, model_err};
pub(crate) use rows::{BiasRows, DcnParams, record_bias_rows, record_linear};
use weights::Layer;
pub use weights::{FUSED_MAX_D, FUSED_MAX_HEADS, fused_fits};

/// `shaders/v1_gather_fuse.wgsl`.
pub const V1_GATHER_FUSE: Shader = Shader {
    name: "v1_gather_fuse",
    source: include_str!("../../../../shaders/v1_gather_fuse.wgsl"),
};

/// `shaders/v1_mha.wgsl`.
pub const V1_MHA: Shader = Shader {
    name: "v1_mha",
    source: include_str!("../../../../shaders/v1_mha.wgsl"),
};

/// `shaders/v1_compress.wgsl`.
pub const V1_COMPRESS: Shader = Shader {
    name: "v1_compress",
    source: include_str!("../../../../shaders/v1_compress.wgsl"),
};

/// `shaders/v1_add_rows.wgsl`.
pub const V1_ADD_ROWS: Shader = Shader {
    name: "v1_add_rows",
    source: include_str!("../../../../shaders/v1_add_rows.wgsl"),
};

/// `shaders/v1_block_fused.wgsl` (generated by
/// `scripts/gen_v1_block_fused.py`).
pub const V1_BLOCK_FUSED: Shader = Shader {
    name: "v1_block_fused",
    source: include_str!("../../../../shaders/v1_block_fused.wgsl"),
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

/// TransAct V1 with its weights on the GPU (see the [module docs](self)).
pub struct GpuTransActV1 {
    ctx: Arc<GpuContext>,
    cfg: V1Config,
    action_rows: ActionRows,
    action_emb: wgpu::Buffer,
    layers: Vec<Layer>,
    out_linear: Option<(wgpu::Buffer, wgpu::Buffer)>,
    variant: Variant,
    precision: Precision,
}

impl std::fmt::Debug for GpuTransActV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTransActV1")
            .field("d", &self.cfg.d_model())
            .field("layers", &self.layers.len())
            .field("heads", &self.cfg.nhead)
            .field("variant", &self.variant)
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

impl GpuTransActV1 {
    /// The model's configuration.
    pub fn config(&self) -> &V1Config {
        &self.cfg
    }

    /// The variant that runs (after any fallback).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The storage precision of weights and activations (after any
    /// fallback). The output and the max-pool projection are f32 either way.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn storage(&self) -> Storage {
        match self.precision {
            Precision::F32 => Storage::F32,
            Precision::F16 => Storage::F16,
        }
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
    /// [`TransActV1::forward_request`](transact_model::TransActV1::forward_request)
    /// writes (inference mask, masked rows zero, max-pool over all `S` rows,
    /// `K` newest positions).
    ///
    /// Fails, before anything runs, on the inputs the CPU model rejects
    /// (wrong lengths, more than `seq_len` actions, `B = 0`, non-finite
    /// embeddings, an unknown action id in [`VocabMode::Padded`](transact_model::VocabMode::Padded)), and on a
    /// device error.
    pub fn encode(&self, req: &V1Request<'_>) -> Result<Vec<f32>, GpuError> {
        Ok(self.encode_timed(req, false)?.data)
    }

    /// [`GpuTransActV1::encode`], also returning the wall time of the
    /// submission and, with `timing` on a device with timestamp queries,
    /// the GPU time of the compute pass.
    pub fn encode_timed(
        &self,
        req: &V1Request<'_>,
        timing: bool,
    ) -> Result<Readback<f32>, GpuError> {
        let plan = self.plan(req)?;
        let ctx = &*self.ctx;
        let od = self.output_dim();
        let mut rq = ctx.request("v1 encode").with_timing(timing);
        let input = ctx.upload(&plan.words)?;
        let out = ctx.storage((plan.batch * od * 4) as u64)?;
        let mut held = Vec::new();
        self.record(
            &mut rq,
            &plan,
            &input,
            OutTarget {
                buf: &out,
                ld: od,
                off: 0,
            },
            &mut held,
        )?;
        rq.finish_read::<f32>(&out, plan.batch * od)
    }
}

//! The ranking heads on the GPU (the whole model, encoder and heads, is
//! [`crate::GpuRankingModel`]).
//!
//! The heads compute what [`transact_model::RankingHeads::forward`] does:
//!
//! ```text
//! x_0     = features                        [B × n]
//! x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l     full-rank DCN v2 cross layers
//! h       = relu(W h + b) …                 MLP
//! logits  = W_out h + b_out                 [B × heads]
//! ```
//!
//! Every product runs on `gemm.wgsl` (the bias is written first by
//! `dcn_heads.wgsl::bias_rows`, the GEMM accumulates on top, with ReLU for
//! the MLP) or, for at most 8 candidates, on `v1_linear_rows.wgsl` (one
//! thread per output, bias and ReLU fused); `dcn_heads.wgsl::cross` does the element-wise cross update and
//! `dcn_heads.wgsl::assemble` builds the features
//! `[encoded ; e_c ; user ; context]` on the device.

use std::sync::Arc;

use transact_model::{RankingHeads, TensorMap};

use crate::kernels::flat_groups;
use crate::v1::{
    BiasRows, DCN_HEADS, DcnParams, check_finite, model_err, record_bias_rows, record_linear,
};
use crate::{GpuContext, GpuError, KernelSpec, PooledBuffer, Request, Storage};

/// One dense layer on the device, weight `[d_out × d_in]`.
struct Dense {
    d_in: usize,
    d_out: usize,
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
}

impl Dense {
    fn load(
        ctx: &GpuContext,
        map: &TensorMap,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, GpuError> {
        let w = map
            .f32(&format!("{name}.weight"), &[d_out, d_in])
            .map_err(model_err)?;
        let b = map
            .f32(&format!("{name}.bias"), &[d_out])
            .map_err(model_err)?;
        Ok(Self {
            d_in,
            d_out,
            weight: ctx.persistent(&format!("heads {name}.weight"), w)?,
            bias: ctx.persistent(&format!("heads {name}.bias"), b)?,
        })
    }

    /// `y = x·Wᵀ + b` (optionally ReLU) for `rows` rows.
    fn record(
        &self,
        ctx: &GpuContext,
        rq: &mut Request<'_>,
        rows: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        relu: bool,
    ) -> Result<(), GpuError> {
        record_linear(
            ctx,
            rq,
            (rows, self.d_out, self.d_in),
            (x, self.d_in, 0),
            (&self.weight, self.d_in, 0),
            Some(&self.bias),
            (y, self.d_out, 0),
            relu,
            false,
            Storage::F32,
        )
    }
}

/// The ranking heads with their weights on the GPU (see the
/// [module docs](self)).
pub struct GpuRankingHeads {
    ctx: Arc<GpuContext>,
    input_dim: usize,
    num_heads: usize,
    cross: Vec<Dense>,
    mlp: Vec<Dense>,
    out: Dense,
}

impl std::fmt::Debug for GpuRankingHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRankingHeads")
            .field("input_dim", &self.input_dim)
            .field("cross", &self.cross.len())
            .field("mlp", &self.mlp.len())
            .field("heads", &self.num_heads)
            .finish_non_exhaustive()
    }
}

impl GpuRankingHeads {
    /// Uploads the weights of `heads` (once).
    pub fn new(ctx: Arc<GpuContext>, heads: &RankingHeads) -> Result<Self, GpuError> {
        let cfg = heads.config();
        let n = heads.input_dim();
        let mut map = TensorMap::new();
        heads.to_tensors("", &mut map);
        let cross = (0..cfg.cross_layers)
            .map(|i| Dense::load(&ctx, &map, &format!("cross.{i}"), n, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut mlp = Vec::with_capacity(cfg.mlp_hidden.len());
        let mut width = n;
        for (i, &w) in cfg.mlp_hidden.iter().enumerate() {
            mlp.push(Dense::load(&ctx, &map, &format!("mlp.{i}"), width, w)?);
            width = w;
        }
        let out = Dense::load(&ctx, &map, "out", width, heads.num_heads())?;
        Ok(Self {
            ctx,
            input_dim: n,
            num_heads: heads.num_heads(),
            cross,
            mlp,
            out,
        })
    }

    /// Width `n` of the feature vector per candidate.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Logits per candidate.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// `logits [batch × heads]` from `features [batch × input_dim]`, like
    /// [`RankingHeads::forward`]. Fails on a wrong length or a non-finite
    /// feature.
    pub fn forward(&self, features: &[f32], batch: usize) -> Result<Vec<f32>, GpuError> {
        let n = self.input_dim;
        if features.len() != batch * n {
            return Err(GpuError::len("features", batch * n, features.len()));
        }
        check_finite("features", features)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let ctx = &*self.ctx;
        let mut rq = ctx.request("heads");
        let fb = ctx.upload(features)?;
        let mut held = Vec::new();
        let logits = self.record(&mut rq, &fb, batch, &mut held)?;
        let r = rq.finish_read::<f32>(&logits, batch * self.num_heads)?;
        Ok(r.data)
    }

    /// Records the heads over `features [batch × n]`; returns the logits
    /// buffer. Pooled buffers go to `held` (keep them until the request has
    /// finished).
    pub(crate) fn record(
        &self,
        rq: &mut Request<'_>,
        features: &wgpu::Buffer,
        batch: usize,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<PooledBuffer, GpuError> {
        let ctx = &*self.ctx;
        let n = self.input_dim;
        let f4 = |k: usize| (k.max(1) * 4) as u64;
        // Two ping-pong buffers wide enough for any layer.
        let widest = self
            .mlp
            .iter()
            .map(|l| l.d_out)
            .chain([n, self.num_heads])
            .max()
            .unwrap_or(n);
        let mut cur: Option<PooledBuffer> = None;
        if !self.cross.is_empty() {
            let x = ctx.storage(f4(batch * n))?;
            let t = ctx.storage(f4(batch * n))?;
            record_bias_rows(
                ctx,
                rq,
                BiasRows {
                    rows: batch,
                    cols: n,
                    ld: n,
                    off: 0,
                    src: Some((features, n, 0)),
                    bias: None,
                },
                &x,
            )?;
            let k = ctx.kernel(&KernelSpec::new(DCN_HEADS, "cross"))?;
            let p = DcnParams {
                total: crate::kernels::to_u32("total", batch * n)?,
                ..DcnParams::default()
            };
            for layer in &self.cross {
                layer.record(ctx, rq, batch, &x, &t, false)?;
                rq.dispatch(&k, &p, &[features, &x, &t], flat_groups(ctx, batch * n)?)?;
            }
            held.push(t);
            cur = Some(x);
        }
        for layer in &self.mlp {
            let h = ctx.storage(f4(batch * widest))?;
            let src: &wgpu::Buffer = cur.as_deref().unwrap_or(features);
            layer.record(ctx, rq, batch, src, &h, true)?;
            if let Some(old) = cur.replace(h) {
                held.push(old);
            }
        }
        let logits = ctx.storage(f4(batch * self.num_heads))?;
        let src: &wgpu::Buffer = cur.as_deref().unwrap_or(features);
        self.out.record(ctx, rq, batch, src, &logits, false)?;
        held.extend(cur);
        Ok(logits)
    }
}

//! The TransAct V2 encoder blocks on the GPU.
//!
//! [`GpuV2Blocks`] holds the weights of `L` [`V2Block`]s on the device
//! (uploaded once) and runs them over a padded batch with the contract of
//! [`transact_model::v2::blocks_forward`]: `x` is `[B × S × d]`, row `b` has
//! `lens[b]` valid tokens (oldest first), keys past `lens[b]` are masked,
//! the causal mask is optional, padded output rows are zero, and a
//! `len = 0` row is computed as a one-token row.
//!
//! Two ways to run a block ([`Variant`]):
//!
//! - **Unfused**: per layer six dispatches, `qv = x·[A | Wv]` (two GEMMs
//!   writing the halves of one buffer, `A = Wq Wkᵀ/√d`), flash attention,
//!   residual + LayerNorm, `h = relu(x1 W1)`, `ff = h W2`, residual +
//!   LayerNorm.
//! - **Fused**: one dispatch per layer (`shaders/v2_block_fused.wgsl`):
//!   one workgroup of 64 invocations per 192 query rows (three rows per
//!   invocation, row vectors in registers), the layer's weights
//!   `[A | Wv | W1ᵀ | W2]` as f32 in a 64 KiB uniform buffer, key rows
//!   staged 32 at a time in workgroup memory. Chosen only where it fits:
//!   `d` a multiple of 4 up to 64, `2·d² + 2·d·f` f32 weights in 64 KiB,
//!   and the device's uniform-binding and workgroup-memory limits;
//!   otherwise the blocks fall back to the unfused path
//!   ([`GpuV2Blocks::variant`] tells which runs).
//!
//! Storage precision ([`Precision`]): f32, or f16 (weights and activations
//! stored as f16, arithmetic in f32) where the device has `SHADER_F16`; an
//! f16 request on a device without it falls back to f32.

use std::sync::Arc;

use transact_model::v2::V2Block;

use crate::kernels::attention::{AttentionShape, MAX_D, lens_u32};
use crate::kernels::gemm::{GemmOptions, GemmShape};
use crate::kernels::layer_norm::LayerNormShape;
use crate::kernels::{
    V2_BLOCK_FUSED, groups, record_add_layer_norm_masked, record_attention, record_gemm, to_u32,
};
use crate::{GpuContext, GpuError, KernelSpec, PooledBuffer, Readback, Storage};

/// How the blocks are dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Separate GEMM, attention and LayerNorm kernels (six dispatches per
    /// layer).
    Unfused,
    /// One dispatch per layer: attention, LayerNorm and FFN fused, the
    /// layer's weights read from a uniform buffer (faster than workgroup
    /// or storage memory on lavapipe).
    Fused,
}

/// Element type of weights and activations in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 storage.
    F32,
    /// f16 storage, f32 arithmetic (needs `SHADER_F16`).
    F16,
}

impl Precision {
    /// The cheapest precision the device supports: f16 with `SHADER_F16`,
    /// f32 otherwise.
    pub fn best(ctx: &GpuContext) -> Self {
        if ctx.has_f16() {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    pub(crate) fn storage(self) -> Storage {
        match self {
            Precision::F32 => Storage::F32,
            Precision::F16 => Storage::F16,
        }
    }
}

/// Key rows per tile of the fused kernel (must match the shader).
const KEY_TILE: usize = 32;
/// Query rows per fused workgroup (must match the shader's `ROWS`).
const FUSED_ROWS: usize = 192;
/// Widest block the fused kernel handles (must match the shader's `MAX_D`).
const FUSED_MAX_D: usize = 64;
/// Size of the fused kernel's weight uniform buffer (the shader declares
/// `array<vec4<f32>, 4096>`).
const FUSED_WEIGHT_BYTES: usize = 65536;

/// One layer's weights on the device: `[A | Wv | W1 | W2]` flattened, each
/// row-major with the input dimension first (storage buffer, for the
/// unfused kernels), and for the fused kernel `[A | Wv | W1ᵀ | W2]` as f32
/// in a 64 KiB uniform buffer.
struct Layer {
    f: usize,
    weights: wgpu::Buffer,
    fused: Option<wgpu::Buffer>,
}

/// The V2 encoder blocks with their weights on the GPU (see the
/// [module docs](self)).
pub struct GpuV2Blocks {
    ctx: Arc<GpuContext>,
    d: usize,
    layers: Vec<Layer>,
    variant: Variant,
    precision: Precision,
}

impl std::fmt::Debug for GpuV2Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuV2Blocks")
            .field("d", &self.d)
            .field("layers", &self.layers.len())
            .field("variant", &self.variant)
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

/// Workgroup memory the fused kernel needs (one tile of key rows, sized
/// for its widest block), in bytes; `d` and `f` do not change it.
pub fn fused_workgroup_bytes(_d: usize, _f: usize) -> usize {
    4 * KEY_TILE * FUSED_MAX_D
}

/// Whether the fused kernel handles a `d`-wide block with FFN width `f` on
/// a device with `limits`: `d` a multiple of 4 up to 64, the weights
/// (`2·d² + 2·d·f` f32) in its 64 KiB uniform buffer, the key tile in
/// workgroup memory.
fn fused_fits(d: usize, f: usize, limits: &wgpu::Limits) -> bool {
    d.is_multiple_of(4)
        && d <= FUSED_MAX_D
        && 4 * (2 * d * d + 2 * d * f) <= FUSED_WEIGHT_BYTES
        && limits.max_uniform_buffer_binding_size >= FUSED_WEIGHT_BYTES as u64
        && fused_workgroup_bytes(d, f) <= limits.max_compute_workgroup_storage_size as usize
}

impl GpuV2Blocks {
    /// Uploads the blocks' weights. `variant` and `precision` are
    /// preferences: `Fused` falls back to `Unfused` when the weights do not
    /// fit in workgroup memory, `F16` to `F32` without `SHADER_F16`.
    ///
    /// Fails if the blocks disagree on `d`, `d` exceeds the kernels' limit
    /// (128) or an upload fails.
    pub fn new(
        ctx: Arc<GpuContext>,
        blocks: &[V2Block],
        variant: Variant,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        let d = blocks.first().map_or(0, V2Block::d_model);
        if let Some(i) = blocks.iter().position(|b| b.d_model() != d) {
            return Err(GpuError::bad(
                "blocks",
                format!(
                    "block {i} has width {}, block 0 has {d}",
                    blocks[i].d_model()
                ),
            ));
        }
        if d > MAX_D {
            return Err(GpuError::Unsupported(format!(
                "V2 width {d} (the GPU kernels handle up to {MAX_D})"
            )));
        }
        let precision = if precision == Precision::F16 && !ctx.has_f16() {
            Precision::F32
        } else {
            precision
        };
        let fits = blocks
            .iter()
            .all(|b| fused_fits(d, b.dim_feedforward(), ctx.limits()));
        let variant = if variant == Variant::Fused && !fits {
            Variant::Unfused
        } else {
            variant
        };
        let scale = 1.0 / (d as f64).sqrt();
        let mut layers = Vec::with_capacity(blocks.len());
        for (i, blk) in blocks.iter().enumerate() {
            let f = blk.dim_feedforward();
            let (wq, wk) = (blk.wq(), blk.wk());
            let mut packed = Vec::with_capacity(2 * d * d + 2 * d * f);
            // A = Wq Wkᵀ / √d, accumulated in f64.
            for r in 0..d {
                for c in 0..d {
                    let dot: f64 = (0..d)
                        .map(|k| f64::from(wq[r * d + k]) * f64::from(wk[c * d + k]))
                        .sum();
                    packed.push((dot * scale) as f32);
                }
            }
            packed.extend_from_slice(blk.wv());
            packed.extend_from_slice(blk.w1());
            packed.extend_from_slice(blk.w2());
            let label = format!("v2 block {i} weights");
            let weights = match precision {
                Precision::F32 => ctx.persistent(&label, &packed)?,
                Precision::F16 => ctx.persistent(&label, &to_f16(&packed))?,
            };
            let fused = (variant == Variant::Fused)
                .then(|| fused_weights(&ctx, &packed, d, f, precision, i))
                .transpose()?;
            layers.push(Layer { f, weights, fused });
        }
        Ok(Self {
            ctx,
            d,
            layers,
            variant,
            precision,
        })
    }

    /// The variant that runs (after any fallback).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The storage precision in use (after any fallback).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Model width `d`.
    pub fn d_model(&self) -> usize {
        self.d
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The context the weights live on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Runs every block over `x [batch × seq × d]` and returns the result
    /// (same contract as `transact_model::v2::blocks_forward`, which works
    /// in place).
    ///
    /// Fails on a wrong length of `x` or `lens`, a `lens` entry above
    /// `seq`, `seq = 0` with `batch > 0`, an `eps` that is not a positive
    /// number, or a device error.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        seq: usize,
        lens: &[usize],
        causal: bool,
        eps: f32,
    ) -> Result<Vec<f32>, GpuError> {
        Ok(self
            .forward_timed(x, batch, seq, lens, causal, eps, false)?
            .data)
    }

    /// [`GpuV2Blocks::forward`], also returning the wall time of the
    /// submission and, with `timing` on a device with timestamp queries,
    /// the GPU time of the compute pass.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_timed(
        &self,
        x: &[f32],
        batch: usize,
        seq: usize,
        lens: &[usize],
        causal: bool,
        eps: f32,
        timing: bool,
    ) -> Result<Readback<f32>, GpuError> {
        let d = self.d;
        let n = batch * seq * d;
        if self.layers.is_empty() {
            // Like the CPU: no blocks, nothing to do or check.
            return Ok(Readback {
                data: x.to_vec(),
                gpu_time: None,
                wall_time: std::time::Duration::ZERO,
            });
        }
        if x.len() != n {
            return Err(GpuError::len("x", n, x.len()));
        }
        let lens32 = lens_u32(lens, batch, seq)?;
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(GpuError::bad(
                "eps",
                format!("LayerNorm epsilon must be a positive number, got {eps}"),
            ));
        }
        let empty = Readback {
            data: x.to_vec(),
            gpu_time: None,
            wall_time: std::time::Duration::ZERO,
        };
        if n == 0 {
            return Ok(empty);
        }
        let ctx = &*self.ctx;
        let mut req = ctx.request("v2 forward").with_timing(timing);
        let xa = self.upload(x)?;
        let lb = ctx.upload(&lens32)?;
        let mut held = Vec::new();
        let out = self.record(&mut req, xa, &lb, batch, seq, causal, eps, &mut held)?;
        match self.precision {
            Precision::F32 => req.finish_read::<f32>(&out, n),
            Precision::F16 => {
                let r = req.finish_read::<u16>(&out, n)?;
                Ok(Readback {
                    data: r
                        .data
                        .iter()
                        .map(|&b| half::f16::from_bits(b).to_f32())
                        .collect(),
                    gpu_time: r.gpu_time,
                    wall_time: r.wall_time,
                })
            }
        }
    }

    /// Records every block over `xa [batch × seq × d]` (in the blocks'
    /// storage precision; overwritten) with `lens` (`u32`, checked by the
    /// caller) into `req`, and returns the buffer holding the output.
    /// Scratch buffers go to `held` (keep them until the request has
    /// finished). `eps` must have been checked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        req: &mut crate::Request<'_>,
        xa: PooledBuffer,
        lb: &wgpu::Buffer,
        batch: usize,
        seq: usize,
        causal: bool,
        eps: f32,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<PooledBuffer, GpuError> {
        let d = self.d;
        let ctx = &*self.ctx;
        let st = self.precision.storage();
        let eb = st.bytes();
        let rows = batch * seq;
        let n = rows * d;
        let xb = ctx.storage(n as u64 * eb)?;
        match self.variant {
            Variant::Fused => {
                let (mut cur, mut next) = (xa, xb);
                for layer in &self.layers {
                    self.record_fused(req, layer, &cur, lb, &next, seq, batch, causal, eps)?;
                    std::mem::swap(&mut cur, &mut next);
                }
                held.push(next);
                Ok(cur)
            }
            Variant::Unfused => {
                let fmax = self.layers.iter().map(|l| l.f).max().unwrap_or(0);
                let qv = ctx.storage((rows * 2 * d) as u64 * eb)?;
                let att = ctx.storage(n as u64 * eb)?;
                let h = ctx.storage((rows * fmax) as u64 * eb)?;
                let ff = ctx.storage(n as u64 * eb)?;
                let ln = |_: ()| LayerNormShape {
                    rows,
                    d,
                    seq,
                    eps,
                    storage: st,
                };
                let opts = GemmOptions {
                    storage: st,
                    ..GemmOptions::default()
                };
                for layer in &self.layers {
                    let f = layer.f;
                    let w = &layer.weights;
                    // qv[:, :d] = x A, qv[:, d:] = x Wv.
                    for (b_off, c_off) in [(0, 0), (d * d, d)] {
                        let s = GemmShape {
                            ldb: d,
                            ldc: 2 * d,
                            b_off,
                            c_off,
                            ..GemmShape::dense(rows, d, d, false)
                        };
                        record_gemm(ctx, req, s, opts, &xa, w, &qv)?;
                    }
                    let a = AttentionShape {
                        batch,
                        seq,
                        d,
                        qv_ld: 2 * d,
                        q_off: 0,
                        v_off: d,
                        causal,
                        storage: st,
                    };
                    record_attention(ctx, req, a, &xa, &qv, lb, &att)?;
                    // x1 (in xb) = LN(x + att), padded rows zero.
                    record_add_layer_norm_masked(ctx, req, ln(()), &xa, &att, lb, &xb)?;
                    let s1 = GemmShape {
                        b_off: 2 * d * d,
                        ..GemmShape::dense(rows, f, d, false)
                    };
                    let relu = GemmOptions { relu: true, ..opts };
                    record_gemm(ctx, req, s1, relu, &xb, w, &h)?;
                    let s2 = GemmShape {
                        b_off: 2 * d * d + d * f,
                        ..GemmShape::dense(rows, d, f, false)
                    };
                    record_gemm(ctx, req, s2, opts, &h, w, &ff)?;
                    // x (back in xa) = LN(x1 + ff).
                    record_add_layer_norm_masked(ctx, req, ln(()), &xb, &ff, lb, &xa)?;
                }
                held.extend([xb, qv, att, h, ff]);
                Ok(xa)
            }
        }
    }

    /// Uploads `x` in the blocks' storage precision.
    pub(crate) fn upload(&self, x: &[f32]) -> Result<PooledBuffer, GpuError> {
        match self.precision {
            Precision::F32 => self.ctx.upload(x),
            Precision::F16 => self.ctx.upload(&to_f16(x)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_fused(
        &self,
        req: &mut crate::Request<'_>,
        layer: &Layer,
        x: &wgpu::Buffer,
        lens: &wgpu::Buffer,
        y: &wgpu::Buffer,
        seq: usize,
        batch: usize,
        causal: bool,
        eps: f32,
    ) -> Result<(), GpuError> {
        let (d, f) = (self.d, layer.f);
        let Some(wu) = &layer.fused else {
            return Err(GpuError::bad("variant", "fused weights missing"));
        };
        let consts = [
            ("D", d as f64),
            ("F", f as f64),
            ("CAUSAL", f64::from(u8::from(causal))),
        ];
        let mut spec = KernelSpec::new(V2_BLOCK_FUSED, "v2_block")
            .constants(&consts)
            .storage(self.precision.storage());
        // Key tiles are written before they are read.
        spec.zero_workgroup_memory = false;
        let k = self.ctx.kernel(&spec)?;
        let p = FusedParams {
            seq: to_u32("seq", seq)?,
            pad: [0; 3],
            eps,
            pad1: [0.0; 3],
        };
        req.dispatch(
            &k,
            &p,
            &[x, wu, lens, y],
            [groups("seq", seq, FUSED_ROWS)?, to_u32("batch", batch)?, 1],
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedParams {
    seq: u32,
    pad: [u32; 3],
    eps: f32,
    pad1: [f32; 3],
}

/// The fused kernel's uniform weight buffer: `[A | Wv | W1ᵀ | W2]` as f32
/// (rounded through f16 with f16 storage, so both variants use the same
/// weights), zero-padded to 64 KiB. `packed` is `[A | Wv | W1 | W2]`.
fn fused_weights(
    ctx: &GpuContext,
    packed: &[f32],
    d: usize,
    f: usize,
    precision: Precision,
    i: usize,
) -> Result<wgpu::Buffer, GpuError> {
    let round = |v: f32| match precision {
        Precision::F32 => v,
        Precision::F16 => half::f16::from_f32(v).to_f32(),
    };
    let mut w = vec![0.0f32; FUSED_WEIGHT_BYTES / 4];
    let (w1, w2) = (2 * d * d, 2 * d * d + d * f);
    for (o, &v) in w.iter_mut().zip(&packed[..w1]) {
        *o = round(v);
    }
    for j in 0..f {
        for k in 0..d {
            w[w1 + j * d + k] = round(packed[w1 + k * f + j]);
        }
    }
    for (o, &v) in w[w2..w2 + f * d].iter_mut().zip(&packed[w2..w2 + f * d]) {
        *o = round(v);
    }
    let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(&format!("v2 block {i} fused weights")),
        size: FUSED_WEIGHT_BYTES as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.write(&buf, bytemuck::cast_slice(&w));
    Ok(buf)
}

/// f32 values as f16 bit patterns.
fn to_f16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect()
}

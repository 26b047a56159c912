//! The weights' one upload: layouts for the unfused kernels, the fused
//! kernel's 64 KiB uniform buffer, and whether the fused kernel fits.

use std::sync::Arc;

use transact_model::TransActV1;
use transact_model::v1::ActionRows;

use super::{GpuTransActV1, MAX_HEAD_DIM, model_err};
use crate::v2::{Precision, Variant};
use crate::{GpuContext, GpuError};

/// One encoder layer's weights on the device (storage buffers in the
/// model's storage type).
pub(super) struct Layer {
    /// `[3d × d]`, query rows scaled by `1/sqrt(d/h)`.
    pub(super) in_w: wgpu::Buffer,
    /// `[3d]`, query part scaled likewise.
    pub(super) in_b: wgpu::Buffer,
    pub(super) out_w: wgpu::Buffer,
    pub(super) out_b: wgpu::Buffer,
    pub(super) w1: wgpu::Buffer,
    pub(super) b1: wgpu::Buffer,
    pub(super) w2: wgpu::Buffer,
    pub(super) b2: wgpu::Buffer,
    pub(super) g1: wgpu::Buffer,
    pub(super) be1: wgpu::Buffer,
    pub(super) g2: wgpu::Buffer,
    pub(super) be2: wgpu::Buffer,
    /// The fused kernel's 64 KiB uniform weight buffer (f32), when the
    /// fused variant runs.
    pub(super) fused: Option<wgpu::Buffer>,
}

/// Widest layer the fused kernel handles (4 × the shader's `MAX_D4`).
pub const FUSED_MAX_D: usize = 96;
/// Most heads the fused kernel handles (one vec4 lane each).
pub const FUSED_MAX_HEADS: usize = 4;
/// Size of the fused kernel's uniform weight buffer (the shader declares
/// `array<vec4<f32>, 4096>`).
const FUSED_WEIGHT_BYTES: usize = 65536;

/// f32 values in the fused kernel's weight buffer for width `d` and FFN
/// width `f`: `W_oᵀ`, `W_1`, `W_2ᵀ`, eight `d`-vectors and `b_1`, with `d`
/// rounded up to `dp`, a multiple of 4 (rows padded with zeros), and `b_1`
/// to whole vec4s.
fn fused_weight_floats(d: usize, f: usize) -> usize {
    let dp = d.next_multiple_of(4);
    dp * dp + 2 * f * dp + 8 * dp + 4 * f.div_ceil(4)
}

/// Whether the fused kernel handles a layer of width `d`, FFN width `f`
/// and `h` heads on a device with `limits`: `d` up to [`FUSED_MAX_D`], at
/// most [`FUSED_MAX_HEADS`] heads (of any width), the weights in the
/// 64 KiB uniform buffer (at `d = 96`, `f ≤ 33`), and the device's uniform
/// binding limit.
pub fn fused_fits(d: usize, f: usize, h: usize, limits: &wgpu::Limits) -> bool {
    d > 0
        && d <= FUSED_MAX_D
        && (1..=FUSED_MAX_HEADS).contains(&h)
        && 4 * fused_weight_floats(d, f) <= FUSED_WEIGHT_BYTES
        && limits.max_uniform_buffer_binding_size >= FUSED_WEIGHT_BYTES as u64
}

/// `w`, three blocks of `d` rows of `cols` values ([q ; k ; v] parts of the
/// input projection), with each block padded to a multiple of 4 rows by
/// zero rows.
fn pad_qkv(w: &[f32], d: usize, cols: usize) -> Vec<f32> {
    let dp = d.next_multiple_of(4);
    let mut out = vec![0.0; 3 * dp * cols];
    for part in 0..3 {
        let src = &w[part * d * cols..(part + 1) * d * cols];
        out[part * dp * cols..part * dp * cols + d * cols].copy_from_slice(src);
    }
    out
}

/// f32 values as f16 bit patterns.
fn to_f16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect()
}

/// A persistent storage buffer holding `v` in `precision`.
fn upload_weights(
    ctx: &GpuContext,
    label: &str,
    v: &[f32],
    precision: Precision,
) -> Result<wgpu::Buffer, GpuError> {
    match precision {
        Precision::F32 => ctx.persistent(label, v),
        Precision::F16 => ctx.persistent(label, &to_f16(v)),
    }
}

/// One layer's weights as host vectors (PyTorch layouts; `in_w`/`in_b`
/// with the query part scaled).
struct HostLayer {
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    g1: Vec<f32>,
    be1: Vec<f32>,
    g2: Vec<f32>,
    be2: Vec<f32>,
}

/// The fused kernel's uniform buffer for one layer (layout in the shader's
/// header), values rounded through f16 with f16 storage so that both
/// variants use the same weights.
fn fused_weights(
    ctx: &GpuContext,
    l: &HostLayer,
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
    if fused_weight_floats(d, f) > w.len() {
        return Err(GpuError::Unsupported(format!(
            "V1 layer d = {d}, FFN {f}: weights exceed the fused kernel's buffer"
        )));
    }
    // Rows of dp values (d of them set, zeros after).
    let dp = d.next_multiple_of(4);
    // W_oᵀ: row k (input) holds W_o[.., k]; dp rows.
    for k in 0..d {
        for o in 0..d {
            w[k * dp + o] = round(l.out_w[o * d + k]);
        }
    }
    let w1 = dp * dp;
    for j in 0..f {
        for k in 0..d {
            w[w1 + j * dp + k] = round(l.w1[j * d + k]);
        }
    }
    // W_2ᵀ: row j (hidden unit) holds W_2[.., j].
    let w2 = w1 + f * dp;
    for j in 0..f {
        for o in 0..d {
            w[w2 + j * dp + o] = round(l.w2[o * f + j]);
        }
    }
    let vb = w2 + f * dp;
    // The query and value parts of the (padded) input bias.
    let bq = &l.in_b[..d];
    let bv = &l.in_b[2 * dp..2 * dp + d];
    for (n, v) in [&l.out_b[..], &l.g1, &l.be1, &l.b2, &l.g2, &l.be2, bq, bv]
        .into_iter()
        .enumerate()
    {
        for (dst, &x) in w[vb + n * dp..vb + n * dp + d].iter_mut().zip(v.iter()) {
            *dst = round(x);
        }
    }
    let b1 = vb + 8 * dp;
    for (dst, &v) in w[b1..b1 + f].iter_mut().zip(&l.b1) {
        *dst = round(v);
    }
    let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(&format!("v1 layer {i} fused weights")),
        size: FUSED_WEIGHT_BYTES as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.write(&buf, bytemuck::cast_slice(&w));
    Ok(buf)
}

impl GpuTransActV1 {
    /// Uploads the weights of `model` (once): the fused variant where it
    /// fits, f32 storage (see [`GpuTransActV1::with_options`]).
    ///
    /// Fails if the head width `d/h` exceeds [`MAX_HEAD_DIM`], a weight does
    /// not fit a storage binding, or the device fails.
    pub fn new(ctx: Arc<GpuContext>, model: &TransActV1) -> Result<Self, GpuError> {
        Self::with_options(ctx, model, Variant::Fused, Precision::F32)
    }

    /// Uploads the weights of `model` (once). `variant` and `precision` are
    /// preferences: [`Variant::Fused`] falls back to [`Variant::Unfused`]
    /// where the fused kernel does not fit ([`fused_fits`]),
    /// [`Precision::F16`] to [`Precision::F32`] without `SHADER_F16`;
    /// [`GpuTransActV1::variant`] and [`GpuTransActV1::precision`] tell what
    /// runs.
    ///
    /// Fails if the head width `d/h` exceeds [`MAX_HEAD_DIM`], a weight does
    /// not fit a storage binding, or the device fails.
    pub fn with_options(
        ctx: Arc<GpuContext>,
        model: &TransActV1,
        variant: Variant,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        let cfg = model.config().clone();
        cfg.validate().map_err(model_err)?;
        let d = cfg.d_model();
        let dh = d / cfg.nhead;
        if dh > MAX_HEAD_DIM {
            return Err(GpuError::Unsupported(format!(
                "V1 head width {dh} (the attention kernel handles up to {MAX_HEAD_DIM})"
            )));
        }
        let precision = if precision == Precision::F16 && !ctx.has_f16() {
            Precision::F32
        } else {
            precision
        };
        let ff = cfg.dim_feedforward;
        let variant = if variant == Variant::Fused && fused_fits(d, ff, cfg.nhead, ctx.limits()) {
            Variant::Fused
        } else {
            Variant::Unfused
        };
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
        let action_emb = upload_weights(&ctx, "v1 action table", &action, precision)?;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_layer);
        for i in 0..cfg.num_layer {
            let p = format!("transformer_encoder.layers.{i}.");
            let t = |n: &str, shape: &[usize]| get(&format!("{p}{n}"), shape);
            let mut in_w = t("self_attn.in_proj_weight", &[3 * d, d])?;
            in_w[..d * d].iter_mut().for_each(|v| *v *= scale);
            let mut in_b = t("self_attn.in_proj_bias", &[3 * d])?;
            in_b[..d].iter_mut().for_each(|v| *v *= scale);
            if variant == Variant::Fused {
                // The fused kernel reads q, k and v as vec4s: each part
                // padded to a multiple of 4 with zero rows.
                in_w = pad_qkv(&in_w, d, d);
                in_b = pad_qkv(&in_b, d, 1);
            }
            let h = HostLayer {
                in_w,
                in_b,
                out_w: t("self_attn.out_proj.weight", &[d, d])?,
                out_b: t("self_attn.out_proj.bias", &[d])?,
                w1: t("linear1.weight", &[ff, d])?,
                b1: t("linear1.bias", &[ff])?,
                w2: t("linear2.weight", &[d, ff])?,
                b2: t("linear2.bias", &[d])?,
                g1: t("norm1.weight", &[d])?,
                be1: t("norm1.bias", &[d])?,
                g2: t("norm2.weight", &[d])?,
                be2: t("norm2.bias", &[d])?,
            };
            let up = |n: &str, v: &[f32]| {
                upload_weights(&ctx, &format!("v1 layer {i} {n}"), v, precision)
            };
            let fused = (variant == Variant::Fused)
                .then(|| fused_weights(&ctx, &h, d, ff, precision, i))
                .transpose()?;
            layers.push(Layer {
                in_w: up("in_w", &h.in_w)?,
                in_b: up("in_b", &h.in_b)?,
                out_w: up("out_w", &h.out_w)?,
                out_b: up("out_b", &h.out_b)?,
                w1: up("w1", &h.w1)?,
                b1: up("b1", &h.b1)?,
                w2: up("w2", &h.w2)?,
                b2: up("b2", &h.b2)?,
                g1: up("g1", &h.g1)?,
                be1: up("be1", &h.be1)?,
                g2: up("g2", &h.g2)?,
                be2: up("be2", &h.be2)?,
                fused,
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
        let action_rows = ActionRows::new(&cfg);
        Ok(Self {
            ctx,
            cfg,
            action_rows,
            action_emb,
            layers,
            out_linear,
            variant,
            precision,
        })
    }
}

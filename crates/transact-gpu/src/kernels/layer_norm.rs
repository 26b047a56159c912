//! `shaders/layer_norm.wgsl` (plain and affine LayerNorm over rows) and
//! `shaders/residual_layer_norm.wgsl` (residual add + LayerNorm + padding
//! mask).

use super::{LAYER_NORM, RESIDUAL_LAYER_NORM, check_fits, groups, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, Request, Storage};

/// Rows to normalise: `rows × d`, grouped into sequences of `seq` rows
/// (only the masked variant uses `seq`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormShape {
    /// Number of rows.
    pub rows: usize,
    /// Row width.
    pub d: usize,
    /// Rows per sequence (masked variant).
    pub seq: usize,
    /// Epsilon added to the variance.
    pub eps: f32,
    /// Element type of the buffers.
    pub storage: Storage,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    seq: u32,
    pad: u32,
    eps: f32,
    pad1: [f32; 3],
}

fn params(s: &LayerNormShape) -> Result<Params, GpuError> {
    if !(s.eps > 0.0 && s.eps.is_finite()) {
        return Err(GpuError::bad(
            "eps",
            format!("LayerNorm epsilon must be a positive number, got {}", s.eps),
        ));
    }
    if s.d == 0 {
        return Err(GpuError::bad("d", "must be at least 1"));
    }
    Ok(Params {
        rows: to_u32("rows", s.rows)?,
        d: to_u32("d", s.d)?,
        seq: to_u32("seq", s.seq.max(1))?,
        pad: 0,
        eps: s.eps,
        pad1: [0.0; 3],
    })
}

/// Records `y = LN(x)` (or `LN(x)·gamma + beta` when `affine` is given),
/// row by row. `x` and `y` must be different buffers.
pub fn record_layer_norm(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: LayerNormShape,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    affine: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
) -> Result<(), GpuError> {
    let p = params(&s)?;
    let bytes = s.storage.bytes();
    check_fits("layer_norm x", x, s.rows * s.d, bytes)?;
    check_fits("layer_norm y", y, s.rows * s.d, bytes)?;
    let g = groups("rows", s.rows, 64)?;
    match affine {
        None => {
            let k = ctx.kernel(&KernelSpec::new(LAYER_NORM, "layer_norm").storage(s.storage))?;
            req.dispatch(&k, &p, &[x, y], [g, 1, 1])
        }
        Some((gamma, beta)) => {
            check_fits("layer_norm gamma", gamma, s.d, bytes)?;
            check_fits("layer_norm beta", beta, s.d, bytes)?;
            let k =
                ctx.kernel(&KernelSpec::new(LAYER_NORM, "layer_norm_affine").storage(s.storage))?;
            req.dispatch(&k, &p, &[x, y, gamma, beta], [g, 1, 1])
        }
    }
}

/// Records `y = LN(x + r)` on the valid rows of each sequence (row `t` of
/// sequence `b` is valid when `t < max(lens[b], 1)`) and zeros on the
/// padded rows. `lens` is a `u32` buffer of `rows / seq` entries.
pub fn record_add_layer_norm_masked(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: LayerNormShape,
    x: &wgpu::Buffer,
    r: &wgpu::Buffer,
    lens: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<(), GpuError> {
    let p = params(&s)?;
    if s.seq == 0 || !s.rows.is_multiple_of(s.seq) {
        return Err(GpuError::bad(
            "seq",
            format!("{} rows are not whole sequences of {}", s.rows, s.seq),
        ));
    }
    let bytes = s.storage.bytes();
    check_fits("add_layer_norm x", x, s.rows * s.d, bytes)?;
    check_fits("add_layer_norm r", r, s.rows * s.d, bytes)?;
    check_fits("add_layer_norm y", y, s.rows * s.d, bytes)?;
    check_fits("add_layer_norm lens", lens, s.rows / s.seq, 4)?;
    let k = ctx.kernel(
        &KernelSpec::new(RESIDUAL_LAYER_NORM, "add_layer_norm_masked").storage(s.storage),
    )?;
    req.dispatch(
        &k,
        &p,
        &[x, r, lens, y],
        [groups("rows", s.rows, 64)?, 1, 1],
    )
}

/// LayerNorm of every row of `x [rows × d]` (f32), with optional
/// `(gamma, beta)` of length `d`: uploads, runs and reads back.
pub fn layer_norm(
    ctx: &GpuContext,
    x: &[f32],
    d: usize,
    affine: Option<(&[f32], &[f32])>,
    eps: f32,
) -> Result<Vec<f32>, GpuError> {
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(GpuError::bad(
            "x",
            format!("{} values are not whole rows of {d}", x.len()),
        ));
    }
    let rows = x.len() / d;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let s = LayerNormShape {
        rows,
        d,
        seq: 1,
        eps,
        storage: Storage::F32,
    };
    let mut req = ctx.request("layer_norm");
    let xb = ctx.upload(x)?;
    let yb = ctx.storage((x.len() * 4) as u64)?;
    let gb = match affine {
        Some((g, b)) => {
            if g.len() != d {
                return Err(GpuError::len("gamma", d, g.len()));
            }
            if b.len() != d {
                return Err(GpuError::len("beta", d, b.len()));
            }
            Some((ctx.upload(g)?, ctx.upload(b)?))
        }
        None => None,
    };
    record_layer_norm(
        ctx,
        &mut req,
        s,
        &xb,
        &yb,
        gb.as_ref().map(|(g, b)| (g.buffer(), b.buffer())),
    )?;
    Ok(req.finish_read(&yb, x.len())?.data)
}

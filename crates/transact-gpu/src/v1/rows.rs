//! Launchers of the row-wise kernels of V1 and the heads: bias and
//! residual adds (`dcn_heads.wgsl::bias_rows`, `v1_add_rows.wgsl`) and
//! products with few rows (`v1_linear_rows.wgsl`, else the tiled GEMM).

use super::{DCN_HEADS, V1_ADD_ROWS, V1_LINEAR_ROWS};
use crate::kernels::gemm::{GemmOptions, GemmShape};
use crate::kernels::{flat_groups, record_gemm, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, Request, Storage};

/// Threads per workgroup of the element-wise kernels.
pub(super) const WG: usize = crate::kernels::FLAT_WG;

/// A `u32` for a parameter block.
pub(super) fn u(name: &str, v: usize) -> Result<u32, GpuError> {
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

/// One `v1_add_rows.wgsl` dispatch (see the shader): `rows × cols` values
/// `dst[off + r·ld + c] = src[soff + (r mod src_rows)·sld + c] +
/// bias[boff + (r / bias_div)·bias_ld + c]`, each term optional.
#[derive(Clone, Copy, Debug)]
pub(super) struct AddRows<'a> {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) ld: usize,
    pub(super) off: usize,
    /// `(buffer, row stride, offset, rows before it repeats)`.
    pub(super) src: Option<(&'a wgpu::Buffer, usize, usize, usize)>,
    /// `(buffer, row stride, offset, dst rows per bias row)`.
    pub(super) bias: Option<(&'a wgpu::Buffer, usize, usize, usize)>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AddRowsParams {
    rows: u32,
    cols: u32,
    ld: u32,
    off: u32,
    sld: u32,
    soff: u32,
    src_rows: u32,
    has_src: u32,
    has_bias: u32,
    bias_div: u32,
    bias_ld: u32,
    boff: u32,
    total: u32,
    pad: [u32; 3],
}

/// Records one `add_rows` dispatch in storage type `st`.
pub(super) fn record_add_rows(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: AddRows<'_>,
    st: Storage,
    dst: &wgpu::Buffer,
) -> Result<(), GpuError> {
    let total = s.rows * s.cols;
    if total == 0 {
        return Ok(());
    }
    let (src_buf, bias_buf) = match (s.src, s.bias) {
        (Some(a), Some(b)) => (a.0, b.0),
        (Some(a), None) => (a.0, a.0),
        (None, Some(b)) => (b.0, b.0),
        (None, None) => return Err(GpuError::bad("add_rows", "neither a source nor a bias")),
    };
    let (sld, soff, src_rows) = s.src.map_or((0, 0, 1), |(_, ld, off, n)| (ld, off, n));
    let (bias_ld, boff, bias_div) = s.bias.map_or((0, 0, 1), |(_, ld, off, n)| (ld, off, n));
    let p = AddRowsParams {
        rows: u("rows", s.rows)?,
        cols: u("cols", s.cols)?,
        ld: u("ld", s.ld)?,
        off: u("off", s.off)?,
        sld: u("sld", sld)?,
        soff: u("soff", soff)?,
        src_rows: u("src_rows", src_rows.max(1))?,
        has_src: u32::from(s.src.is_some()),
        has_bias: u32::from(s.bias.is_some()),
        bias_div: u("bias_div", bias_div.max(1))?,
        bias_ld: u("bias_ld", bias_ld)?,
        boff: u("boff", boff)?,
        total: u("total", total)?,
        pad: [0; 3],
    };
    let k = ctx.kernel(&KernelSpec::new(V1_ADD_ROWS, "add_rows").storage(st))?;
    req.dispatch(&k, &p, &[src_buf, dst, bias_buf], flat_groups(ctx, total)?)
}

/// Products with at most this many rows run on `v1_linear_rows.wgsl` (one
/// thread per output) instead of the tiled GEMM, whose 32-row tiles would
/// mostly compute padding.
pub(crate) const SMALL_M: usize = 8;

/// `y[m×n] = residual + bias + x[m×k]·Wᵀ` (`W` stored `[n × k]`), all
/// densely packed in storage type `st`: the post-norm layers' "add the
/// sub-layer to its input" step.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_residual_linear(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    (m, n, k): (usize, usize, usize),
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    residual: &wgpu::Buffer,
    y: &wgpu::Buffer,
    st: Storage,
) -> Result<(), GpuError> {
    let rows = AddRows {
        rows: m,
        cols: n,
        ld: n,
        off: 0,
        src: Some((residual, n, 0, m)),
        bias: Some((bias, 0, 0, m)),
    };
    record_add_rows(ctx, req, rows, st, y)?;
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
        st,
    )
}

/// `y [m × n] = x [m × k] · Wᵀ (+ bias) (+ y)`, then optional ReLU, with
/// `W` stored `[n × k]`, every buffer in storage type `st`. Operands are
/// `(buffer, row stride, offset)`. Few rows run on `v1_linear_rows.wgsl`;
/// otherwise the bias is written first and the tiled GEMM accumulates on
/// top (there, `bias` and `accumulate` cannot be combined).
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
    st: Storage,
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
        let kernel = ctx.kernel(&KernelSpec::new(V1_LINEAR_ROWS, "linear_rows").storage(st))?;
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
        (Some(b), false) => record_add_rows(
            ctx,
            req,
            AddRows {
                rows: m,
                cols: n,
                ld: y.1,
                off: y.2,
                src: None,
                bias: Some((b, 0, 0, m)),
            },
            st,
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
        storage: st,
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

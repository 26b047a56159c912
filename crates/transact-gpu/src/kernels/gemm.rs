//! `shaders/gemm.wgsl`: `C = A · B` or `A · Bᵀ`, optionally accumulated
//! into C and followed by ReLU.

use super::{GEMM, check_fits, groups, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, Request, Storage};

/// Shape and layout of one product (row strides and offsets in elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Row stride of A.
    pub lda: usize,
    /// Row stride of B (`[K × N]`, or `[N × K]` when transposed).
    pub ldb: usize,
    /// Row stride of C.
    pub ldc: usize,
    /// First element of A.
    pub a_off: usize,
    /// First element of B.
    pub b_off: usize,
    /// First element of C.
    pub c_off: usize,
}

impl GemmShape {
    /// Dense row-major matrices: `A [m × k]`, `B [k × n]` (or `[n × k]`
    /// with `trans_b`), `C [m × n]`, no offsets.
    pub fn dense(m: usize, n: usize, k: usize, trans_b: bool) -> Self {
        Self {
            m,
            n,
            k,
            lda: k,
            ldb: if trans_b { k } else { n },
            ldc: n,
            a_off: 0,
            b_off: 0,
            c_off: 0,
        }
    }
}

/// Variants of the product (each is a pipeline specialisation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemmOptions {
    /// B is stored `[N × K]`.
    pub trans_b: bool,
    /// `C = max(0, …)`.
    pub relu: bool,
    /// `C += A·B` instead of `C = A·B`.
    pub accumulate: bool,
    /// Element type of A, B and C.
    pub storage: Storage,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    pad: [u32; 3],
}

/// Records one GEMM dispatch into `req`.
pub fn record_gemm(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: GemmShape,
    o: GemmOptions,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    c: &wgpu::Buffer,
) -> Result<(), GpuError> {
    record_entry(ctx, req, s, o, [a, b, c], false)
}

/// Records the same product on `gemm.wgsl::gemm_naive` (one invocation per
/// output, no tiling): the baseline `transact bench kernels` compares the
/// tiled kernel with. Needs `M` within the per-dimension workgroup limit.
pub fn record_gemm_naive(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: GemmShape,
    o: GemmOptions,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    c: &wgpu::Buffer,
) -> Result<(), GpuError> {
    record_entry(ctx, req, s, o, [a, b, c], true)
}

fn record_entry(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: GemmShape,
    o: GemmOptions,
    [a, b, c]: [&wgpu::Buffer; 3],
    naive: bool,
) -> Result<(), GpuError> {
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let bytes = o.storage.bytes();
    let (b_rows, b_cols) = if o.trans_b { (s.n, s.k) } else { (s.k, s.n) };
    if s.lda < s.k || s.ldb < b_cols || s.ldc < s.n {
        return Err(GpuError::bad(
            "gemm strides",
            format!(
                "lda {} ldb {} ldc {} too small for {s:?}",
                s.lda, s.ldb, s.ldc
            ),
        ));
    }
    let end = |off: usize, rows: usize, ld: usize, cols: usize| {
        if rows == 0 || cols == 0 {
            off
        } else {
            off + (rows - 1) * ld + cols
        }
    };
    check_fits("gemm A", a, end(s.a_off, s.m, s.lda, s.k), bytes)?;
    check_fits("gemm B", b, end(s.b_off, b_rows, s.ldb, b_cols), bytes)?;
    check_fits("gemm C", c, end(s.c_off, s.m, s.ldc, s.n), bytes)?;
    let consts = [
        ("TRANS_B", f64::from(u8::from(o.trans_b))),
        ("RELU", f64::from(u8::from(o.relu))),
        ("ACCUMULATE", f64::from(u8::from(o.accumulate))),
    ];
    let entry = if naive { "gemm_naive" } else { "gemm" };
    let mut spec = KernelSpec::new(GEMM, entry)
        .constants(&consts)
        .storage(o.storage);
    // Both tiles are written before they are read.
    spec.zero_workgroup_memory = false;
    let kernel = ctx.kernel(&spec)?;
    let p = Params {
        m: to_u32("m", s.m)?,
        n: to_u32("n", s.n)?,
        k: to_u32("k", s.k)?,
        lda: to_u32("lda", s.lda)?,
        ldb: to_u32("ldb", s.ldb)?,
        ldc: to_u32("ldc", s.ldc)?,
        a_off: to_u32("a_off", s.a_off)?,
        b_off: to_u32("b_off", s.b_off)?,
        c_off: to_u32("c_off", s.c_off)?,
        pad: [0; 3],
    };
    let wg = if naive {
        [groups("n", s.n, 64)?, to_u32("m", s.m)?, 1]
    } else {
        [groups("n", s.n, 32)?, groups("m", s.m, 32)?, 1]
    };
    req.dispatch(&kernel, &p, &[a, b, c], wg)
}

/// `A [m × k] · B` (`B [k × n]`, or `[n × k]` with `trans_b`), f32, with
/// optional ReLU: uploads, runs and reads back `[m × n]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ctx: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    trans_b: bool,
    relu: bool,
) -> Result<Vec<f32>, GpuError> {
    if a.len() != m * k {
        return Err(GpuError::len("a", m * k, a.len()));
    }
    if b.len() != k * n {
        return Err(GpuError::len("b", k * n, b.len()));
    }
    if m * n == 0 {
        return Ok(vec![0.0; m * n]);
    }
    let mut req = ctx.request("gemm");
    let (ab, bb) = (ctx.upload(a)?, ctx.upload(b)?);
    let cb = ctx.storage((m * n * 4) as u64)?;
    let o = GemmOptions {
        trans_b,
        relu,
        ..GemmOptions::default()
    };
    record_gemm(
        ctx,
        &mut req,
        GemmShape::dense(m, n, k, trans_b),
        o,
        &ab,
        &bb,
        &cb,
    )?;
    Ok(req.finish_read(&cb, m * n)?.data)
}

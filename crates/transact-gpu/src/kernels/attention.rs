//! `shaders/attention.wgsl`: one-head attention with an online softmax,
//! padding mask per sequence length and optional causal mask.

use super::{ATTENTION, check_fits, groups, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, Request, Storage};

/// Largest model width the attention kernel handles.
pub const MAX_D: usize = 128;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// Rows per sequence (padded length).
    pub seq: usize,
    /// Width of keys, queries and values (at most [`MAX_D`]).
    pub d: usize,
    /// Row stride of the buffer holding queries and values.
    pub qv_ld: usize,
    /// Column of the first query value in a `qv` row.
    pub q_off: usize,
    /// Column of the first value in a `qv` row.
    pub v_off: usize,
    /// Apply the causal mask.
    pub causal: bool,
    /// Element type of the buffers.
    pub storage: Storage,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seq: u32,
    qv_ld: u32,
    q_off: u32,
    v_off: u32,
}

/// Records `out[b,t] = softmax_j(q[b,t]·keys[b,j] + masks) v[b,j]` (rows
/// `t ≥ max(lens[b], 1)` written as zeros). `keys` and `out` are
/// `[batch·seq × d]`, `qv` is `[batch·seq × qv_ld]`, `lens` holds `batch`
/// `u32`s. The caller folds the `1/√d` scale into the queries.
pub fn record_attention(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: AttentionShape,
    keys: &wgpu::Buffer,
    qv: &wgpu::Buffer,
    lens: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<(), GpuError> {
    if s.d == 0 || s.d > MAX_D {
        return Err(GpuError::Unsupported(format!(
            "attention width {} (the kernel handles 1..={MAX_D})",
            s.d
        )));
    }
    if s.q_off + s.d > s.qv_ld || s.v_off + s.d > s.qv_ld {
        return Err(GpuError::bad(
            "qv layout",
            format!(
                "q at {} and v at {} (width {}) do not fit rows of {}",
                s.q_off, s.v_off, s.d, s.qv_ld
            ),
        ));
    }
    let rows = s.batch * s.seq;
    if rows == 0 {
        return Ok(());
    }
    let bytes = s.storage.bytes();
    check_fits("attention keys", keys, rows * s.d, bytes)?;
    check_fits("attention qv", qv, rows * s.qv_ld, bytes)?;
    check_fits("attention out", out, rows * s.d, bytes)?;
    check_fits("attention lens", lens, s.batch, 4)?;
    let consts = [("D", s.d as f64), ("CAUSAL", f64::from(u8::from(s.causal)))];
    let mut spec = KernelSpec::new(ATTENTION, "attention")
        .constants(&consts)
        .storage(s.storage);
    spec.zero_workgroup_memory = false;
    let k = ctx.kernel(&spec)?;
    let p = Params {
        seq: to_u32("seq", s.seq)?,
        qv_ld: to_u32("qv_ld", s.qv_ld)?,
        q_off: to_u32("q_off", s.q_off)?,
        v_off: to_u32("v_off", s.v_off)?,
    };
    req.dispatch(
        &k,
        &p,
        &[keys, qv, lens, out],
        [groups("seq", s.seq, 64)?, to_u32("batch", s.batch)?, 1],
    )
}

/// Attention on host slices (f32): `q`, `k`, `v` are `[batch·seq × d]`,
/// `lens` has `batch` entries (each at most `seq`). The queries are used as
/// given (fold any scale into them). Returns `[batch·seq × d]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &GpuContext,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    seq: usize,
    d: usize,
    lens: &[usize],
    causal: bool,
) -> Result<Vec<f32>, GpuError> {
    let n = batch * seq * d;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        if x.len() != n {
            return Err(GpuError::len(name, n, x.len()));
        }
    }
    let lens32 = lens_u32(lens, batch, seq)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut qv = Vec::with_capacity(2 * n);
    for (qr, vr) in q.chunks_exact(d).zip(v.chunks_exact(d)) {
        qv.extend_from_slice(qr);
        qv.extend_from_slice(vr);
    }
    let mut req = ctx.request("attention");
    let (kb, qvb, lb) = (ctx.upload(k)?, ctx.upload(&qv)?, ctx.upload(&lens32)?);
    let ob = ctx.storage((n * 4) as u64)?;
    let s = AttentionShape {
        batch,
        seq,
        d,
        qv_ld: 2 * d,
        q_off: 0,
        v_off: d,
        causal,
        storage: Storage::F32,
    };
    record_attention(ctx, &mut req, s, &kb, &qvb, &lb, &ob)?;
    Ok(req.finish_read(&ob, n)?.data)
}

/// Checks `lens` (count and `≤ seq`) and converts it to `u32`.
pub(crate) fn lens_u32(lens: &[usize], batch: usize, seq: usize) -> Result<Vec<u32>, GpuError> {
    if lens.len() != batch {
        return Err(GpuError::len("lens", batch, lens.len()));
    }
    if batch > 0 && seq == 0 {
        return Err(GpuError::bad("seq", "must be at least 1"));
    }
    lens.iter()
        .enumerate()
        .map(|(b, &l)| {
            if l > seq {
                Err(GpuError::bad(
                    "lens",
                    format!("lens[{b}] = {l} exceeds the sequence length {seq}"),
                ))
            } else {
                to_u32("lens", l)
            }
        })
        .collect()
}

//! TransAct V2's output compression on the device
//! (`shaders/v2_compress.wgsl`): the max-pool over every row and the
//! newest kept rows, written into the heads' feature matrix. The
//! projection `W_o · pool + b_o` is a GEMM the caller records afterwards.

use crate::kernels::{check_fits, flat_groups, to_u32};
use crate::{GpuContext, GpuError, KernelSpec, Request, Shader, Storage};

/// `shaders/v2_compress.wgsl`.
pub const V2_COMPRESS: Shader = Shader {
    name: "v2_compress",
    source: include_str!("../../../../shaders/v2_compress.wgsl"),
};

/// The shape of one compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressShape {
    /// Candidates `B`.
    pub batch: usize,
    /// Token slots `S` per candidate.
    pub seq: usize,
    /// Model width `d`.
    pub d: usize,
    /// Kept-row slots in the output (`output_dim / d − 1`).
    pub k: usize,
    /// Rows actually kept (at most `k`; `min(latest_n_emb, seq_len)`).
    pub kept: usize,
    /// Row width of the feature matrix (at least `(k + 1)·d`).
    pub n: usize,
    /// Element type of `y`.
    pub storage: Storage,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    seq: u32,
    d: u32,
    k: u32,
    kv: u32,
    n: u32,
    pad: [u32; 2],
}

/// Records the compression of `y [B × S × d]` (`lens [B]` as `u32`):
/// `pool [B × d]` and the kept rows into `feats [B × n]` at columns
/// `d..(k + 1)·d`.
pub fn record_compress(
    ctx: &GpuContext,
    req: &mut Request<'_>,
    s: CompressShape,
    y: &wgpu::Buffer,
    lens: &wgpu::Buffer,
    pool: &wgpu::Buffer,
    feats: &wgpu::Buffer,
) -> Result<(), GpuError> {
    if s.kept > s.k || s.n < (s.k + 1) * s.d {
        return Err(GpuError::bad(
            "compress",
            format!(
                "kept {} of {} slots of width {} do not fit a feature row of {}",
                s.kept, s.k, s.d, s.n
            ),
        ));
    }
    if s.batch == 0 || s.d == 0 {
        return Ok(());
    }
    if s.seq == 0 {
        return Err(GpuError::bad("seq", "must be at least 1"));
    }
    check_fits("y", y, s.batch * s.seq * s.d, s.storage.bytes())?;
    check_fits("lens", lens, s.batch, 4)?;
    check_fits("pool", pool, s.batch * s.d, 4)?;
    check_fits("feats", feats, s.batch * s.n, 4)?;
    let p = Params {
        batch: to_u32("batch", s.batch)?,
        seq: to_u32("seq", s.seq)?,
        d: to_u32("d", s.d)?,
        k: to_u32("k", s.k)?,
        kv: to_u32("kept", s.kept)?,
        n: to_u32("n", s.n)?,
        pad: [0; 2],
    };
    let k = ctx.kernel(&KernelSpec::new(V2_COMPRESS, "compress").storage(s.storage))?;
    req.dispatch(
        &k,
        &p,
        &[y, lens, pool, feats],
        flat_groups(ctx, s.batch * s.d)?,
    )
}

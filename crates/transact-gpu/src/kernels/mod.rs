//! Launchers for the shaders in `shaders/`: GEMM, LayerNorm, attention,
//! V2's output compression ([`compress`]) and V2's nearest-neighbour
//! selection ([`select`]).
//!
//! Each kernel has a `record_*` function that adds one dispatch to a
//! [`Request`](crate::Request) (buffers already on the GPU; used to chain kernels in one
//! command buffer) and a host convenience function that uploads slices,
//! runs the one kernel and reads the result back (used by tests and for
//! one-off work). The `record_*` functions check shapes against the buffer
//! sizes they are given and return [`GpuError`] rather than letting wgpu
//! fail.

pub mod attention;
pub mod compress;
pub mod gemm;
pub mod layer_norm;
pub mod select;

use crate::GpuError;
use crate::context::Shader;

pub use attention::{AttentionShape, attention, record_attention};
pub use compress::{CompressShape, record_compress};
pub use gemm::{GemmOptions, GemmShape, gemm, record_gemm};
pub use layer_norm::{LayerNormShape, layer_norm, record_add_layer_norm_masked, record_layer_norm};
pub use select::{
    SelectBuffers, SelectInput, SelectOptions, SelectShape, SelectUpload, record_select_nearest,
    select_nearest,
};

/// `shaders/gemm.wgsl`.
pub const GEMM: Shader = Shader {
    name: "gemm",
    source: include_str!("../../../../shaders/gemm.wgsl"),
};

/// `shaders/layer_norm.wgsl`.
pub const LAYER_NORM: Shader = Shader {
    name: "layer_norm",
    source: include_str!("../../../../shaders/layer_norm.wgsl"),
};

/// `shaders/residual_layer_norm.wgsl`.
pub const RESIDUAL_LAYER_NORM: Shader = Shader {
    name: "residual_layer_norm",
    source: include_str!("../../../../shaders/residual_layer_norm.wgsl"),
};

/// `shaders/attention.wgsl`.
pub const ATTENTION: Shader = Shader {
    name: "attention",
    source: include_str!("../../../../shaders/attention.wgsl"),
};

/// `shaders/v2_block_fused.wgsl`.
pub const V2_BLOCK_FUSED: Shader = Shader {
    name: "v2_block_fused",
    source: include_str!("../../../../shaders/v2_block_fused.wgsl"),
};

/// Converts a size to `u32` for a parameter block, naming it on overflow.
pub(crate) fn to_u32(name: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::bad(name, format!("{v} does not fit in 32 bits")))
}

/// Checks that `buf` holds at least `elems` elements of `bytes_per` bytes.
pub(crate) fn check_fits(
    name: &str,
    buf: &wgpu::Buffer,
    elems: usize,
    bytes_per: u64,
) -> Result<(), GpuError> {
    let need = elems as u64 * bytes_per;
    if need > buf.size() {
        return Err(GpuError::bad(
            name,
            format!("needs {need} bytes, the buffer has {}", buf.size()),
        ));
    }
    Ok(())
}

/// Threads per workgroup of the flat element-wise kernels.
pub(crate) const FLAT_WG: usize = 64;

/// Workgroups for `total` threads of a flat element-wise kernel
/// ([`FLAT_WG`] per workgroup): split over x and y so that neither exceeds
/// the per-dimension limit.
pub(crate) fn flat_groups(ctx: &crate::GpuContext, total: usize) -> Result<[u32; 3], GpuError> {
    let g = total.div_ceil(FLAT_WG);
    let max = (ctx.limits().max_compute_workgroups_per_dimension as usize).max(1);
    let x = g.min(max);
    let y = if x == 0 { 0 } else { g.div_ceil(x) };
    Ok([to_u32("workgroups", x)?, to_u32("workgroups", y)?, 1])
}

/// Workgroups to cover `n` items with `per` items each.
pub(crate) fn groups(name: &str, n: usize, per: usize) -> Result<u32, GpuError> {
    to_u32(name, n.div_ceil(per))
}

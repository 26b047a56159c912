//! Every layer of the model, forward and backward side by side.
//!
//! Each layer is a pair of plain functions over `f32` slices, in the style of
//! llm.c: `*_forward` computes the output and fills whatever cache the
//! backward needs; `*_backward` takes the gradient of the output and
//! **accumulates** (`+=`) into the gradients of the inputs and parameters,
//! so residual connections and shared parameters need no extra code and the
//! caller zeroes gradient buffers once. Matrices are row-major; weights of
//! linear maps are `[out × in]` like a PyTorch `Linear`, except in the V2
//! block, which keeps its serving layout (`[in × out]`). Every matrix product
//! goes through [`transact_embed::kernels::matmul`] single-threaded (the
//! caller parallelises over examples).
//!
//! Slice arguments may be longer than needed (workspace buffers only grow);
//! only the leading values are read or written. A slice that is too short is
//! reported as [`TrainError::Shape`], never a panic.
//!
//! Every pair is checked against central finite differences in this module's
//! tests (see [`gradcheck`]).
//!
//! - [`linear`]: dense layers, ReLU, transposes.
//! - [`norm`]: LayerNorm with and without gain/bias.
//! - [`dropout`]: counter-based dropout masks (independent of batching).
//! - [`attention`]: multi-head self-attention with a packed input
//!   projection and key masks.
//! - [`encoder`]: the V1 post-norm encoder layer and the masked-row rule.
//! - [`embed`]: embedding gather / scatter-add and early fusion.
//! - [`pool`]: max-pool over positions and the output compression.
//! - [`cross`]: the full-rank DCN v2 cross layer.
//! - [`loss`]: sigmoid BCE and the sampled softmax of the Next Action Loss.
//! - [`v2`]: the TransAct V2 encoder block.

pub mod attention;
pub mod cross;
pub mod dropout;
pub mod embed;
pub mod encoder;
pub mod gradcheck;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod v2;

#[cfg(test)]
mod tests;

pub use crate::net::TrainError;

/// Checks that `what` has at least `need` values.
pub(crate) fn need(what: &str, need: usize, got: usize) -> Result<(), TrainError> {
    if got < need {
        Err(TrainError::Shape {
            what: what.to_string(),
            expected: need,
            got,
        })
    } else {
        Ok(())
    }
}

/// The leading `n` values of `v`, growing it with zeros if needed (never
/// shrinking, so reuse does not reallocate). Contents are unspecified.
pub fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Maps a kernel error (a size the checks should have caught) to [`TrainError`].
pub(crate) fn kernel(e: transact_embed::EmbedError) -> TrainError {
    TrainError::Kernel(e.to_string())
}

//! Item embeddings and the CPU math kernels of TransAct.
//!
//! - [`table`]: [`ItemTable`], item id → embedding row, stored as f32, f16 or
//!   int8 (global 0.65 scale of TransAct V2, or one scale per row), with an
//!   optional fallback vector for unknown ids and an allocation-free
//!   [`ItemTable::gather`] for the ranking hot path.
//! - [`quant`]: the quantisation rules themselves (int8 global / per-row,
//!   f16) over slices, with their rounding rule and error bounds.
//! - [`io`]: saving and loading tables as safetensors files, and loading a
//!   plain f32 embedding matrix from any safetensors file.
//! - [`dot`]: batched dot products — f32 queries × f32 keys through the
//!   GEMM of [`kernels`], and one f32 query × many int8 keys for
//!   nearest-neighbour selection over lifelong sequences.
//! - [`topk`]: deterministic top-k (ties to the lower index, i.e. the newest
//!   action; NaN last).
//! - [`kernels`]: GEMM (through the maintained `gemm` crate), LayerNorm,
//!   softmax, ReLU, dot products — the building blocks of the CPU forward.
//! - [`select`]: TransAct V2's nearest-neighbour selection — per
//!   candidate, the top-k history tokens by exact int8 dot product (ties to
//!   the newer token), the history converted once per request.
//! - [`small_gemm`]: an allocation-free GEMM (SIMD through `pulp`, chosen at
//!   run time) for the small products the encoder makes many times per
//!   request.
//!
//! It depends on no other crate of the workspace.

// Tests may unwrap: a panic there is a test failure, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dot;
mod error;
pub mod io;
pub mod kernels;
pub mod quant;
pub mod select;
pub mod small_gemm;
pub mod table;
pub mod topk;

pub use dot::{dot_batched, dot_batched_par, dot_i8_batched, dot_i8_batched_uniform};
pub use error::EmbedError;
pub use quant::{
    INT8_GLOBAL_SCALE, dequantize_f16, dequantize_i8_global, dequantize_i8_scaled,
    dequantize_value_i8, quantize_f16, quantize_i8_global, quantize_i8_per_row,
    quantize_value_i8_global,
};
pub use table::{ItemId, ItemTable, Precision};
pub use topk::{top_k, top_k_sorted_by_index};

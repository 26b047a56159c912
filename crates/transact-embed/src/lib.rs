//! Item embeddings and the CPU math kernels of TransAct.
//!
//! - [`kernels`]: GEMM (through the maintained `gemm` crate), LayerNorm,
//!   softmax, ReLU, dot products — the building blocks of the CPU forward.
//!
//! It depends on no other crate of the workspace.

mod error;
pub mod kernels;

pub use error::EmbedError;

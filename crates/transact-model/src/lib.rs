//! TransAct on the CPU.
//!
//! - [`config`]: the model configurations ([`V1Config`], [`V2Config`], [`HeadsConfig`]).
//! - [`v1`]: TransAct V1 (realtime sequence encoder), with request-level
//!   de-duplication, and a straightforward reference implementation it is
//!   tested against.
//! - [`v2`]: the TransAct V2 encoder block (one head, no biases, LayerNorm
//!   without affine, causal + padding masks) with position, action and
//!   surface embeddings.
//! - [`heads`]: the ranking head around the sequence encoder (DCN v2 cross
//!   network, MLP, one logit per action head).
//! - [`weights`]: safetensors in and out, with the config in the metadata.
//! - [`parity`]: checking the V1 forward against a file recorded from the
//!   reference PyTorch module.
//!
//! This crate knows nothing of GPUs; `transact-gpu` implements the same
//! forward and is checked against this one.

pub mod config;
mod error;
pub mod heads;
pub mod parity;
pub mod ranking;
pub mod v1;
pub mod v2;
pub mod weights;

pub use config::{HeadsConfig, V1Config, V2Config, VocabMode};
pub use error::ModelError;
pub use heads::RankingHeads;
pub use ranking::{Encoder, RankingModel, V1Job, V2Job};
pub use v1::{TransActV1, V1Request};
pub use v2::{V2Encoder, V2Request};
pub use weights::TensorMap;

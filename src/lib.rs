//! TransAct: sequence-aware ranking in Rust.
//!
//! A Rust implementation of Pinterest's TransAct (realtime user action
//! sequences) and the TransAct V2 encoder block. The data path, and the crate
//! that owns each step:
//!
//! 1. actions → per-user sequences: [`seq`] (`transact-seq`)
//! 2. the sequence a model sees, built once for training, evaluation and
//!    serving: [`features`] (`transact-features`)
//! 3. item embeddings, CPU math kernels: [`embed`] (`transact-embed`)
//! 4. the model on the CPU (V1, V2 block, ranking heads, weights): [`model`]
//!    (`transact-model`)
//! 5. the same model on any GPU through wgpu: [`gpu`] (`transact-gpu`)
//! 6. the ranking API composing them: [`rank`] (`transact-rank`); the
//!    [`backend`] module picks the GPU when an adapter exists
//! 7. training, retraining and offline evaluation: [`train`]
//!    (`transact-train`)
//! 8. feature logging for TransAct V2 (the ranker's selected tokens in
//!    Parquet, read back by the trainer): [`log`] (`transact-log`)
//!
//! This facade re-exports those crates, and holds the `transact` CLI, the
//! demo world ([`world`]) and the benchmark cases ([`mod@bench`], [`bench_gpu`]).

pub use transact_serve::backend;
pub mod bench;
pub mod bench_batch;
pub mod bench_gpu;
pub mod bench_lifelong;
pub mod bench_v2;
pub mod world;

pub use transact_embed as embed;
pub use transact_features as features;
pub use transact_gpu as gpu;
pub use transact_log as log;
pub use transact_model as model;
pub use transact_rank as rank;
pub use transact_redis as redis;
pub use transact_seq as seq;
pub use transact_serve as serve;
pub use transact_train as train;

/// The README's code blocks, compiled (and run unless marked `no_run`) as
/// doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

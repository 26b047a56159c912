//! Training, retraining and offline evaluation of TransAct, without Python.
//!
//! - [`layers`]: every layer's forward and backward side by side, each
//!   checked against central finite differences.
//! - [`batch`]: one mini-batch as the network consumes it.
//! - [`data`]: datasets (action logs + logged requests), the seeded
//!   synthetic world, importers for real logs.
//! - [`eval`]: HIT@3 per head, HR@10 and NDCG@10 (SASRec protocol).

pub mod batch;
pub mod data;
pub mod eval;
pub mod layers;

pub use batch::{Batch, NO_ITEM};

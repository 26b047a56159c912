//! Training, retraining and offline evaluation of TransAct, without Python.
//!
//! - [`layers`]: every layer's forward and backward side by side, each
//!   checked against central finite differences.
//! - [`params`]: named, flat parameters; gradients share their layout.
//! - [`net`]: the trainable ranking network (item table, TransAct V1
//!   encoder, DCN v2 + MLP heads, Next Action Loss projection): forward,
//!   backward and losses over a [`Batch`].
//! - [`optim`]: Adam / AdamW, warm-up + cosine schedule, gradient clipping.
//! - [`plot`]: SVG training curves.
//! - [`batch`]: one mini-batch as the network consumes it.
//! - [`data`]: datasets (action logs + logged requests), the seeded
//!   synthetic world, importers for real logs.
//! - [`eval`]: HIT@3 per head, HR@10 and NDCG@10 (SASRec protocol).

pub mod batch;
pub mod data;
pub mod eval;
pub mod layers;
pub mod net;
pub mod optim;
pub mod params;
pub mod plot;

pub use batch::{Batch, NO_ITEM};

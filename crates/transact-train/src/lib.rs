//! Training, retraining and offline evaluation of TransAct, without Python.
//!
//! - [`layers`]: every layer's forward and backward side by side, each
//!   checked against central finite differences.
//! - [`params`]: named, flat parameters; gradients share their layout.
//! - [`net`]: the trainable ranking network (item table, TransAct V1
//!   encoder, DCN v2 + MLP heads, Next Action Loss projection): forward,
//!   backward and losses over a [`Batch`].
//! - [`optim`]: Adam / AdamW, warm-up + cosine schedule, gradient clipping.
//! - [`features`]: from a dataset to batches (sequences, masks, label
//!   weights, Next Action Loss targets).
//! - [`batch`]: one mini-batch as the network consumes it.
//! - [`data`]: datasets (action logs + logged requests), the seeded
//!   synthetic world, importers for real logs.
//! - [`eval`]: HIT@3 per head, HR@10 and NDCG@10 (SASRec protocol).
//! - [`trainer`]: the training loop (threads, schedule, clipping,
//!   checkpoints, resume, warm start) and a scorer over the trained net.
//! - [`run`]: a run end to end with its run directory (config,
//!   checkpoints, metrics, SVG curves).
//! - [`serving`]: the trained model as a serving bundle, and a dataset's
//!   logs appended to a sequence store under the same raw-id keys.
//! - [`plot`]: SVG training curves.
//! - [`ablate`]: the side-by-side ablation and its markdown table.

pub mod ablate;
pub mod batch;
pub mod data;
pub mod eval;
pub mod features;
pub mod layers;
pub mod net;
pub mod optim;
pub mod params;
pub mod plot;
pub mod run;
pub mod serving;
pub mod trainer;

pub use batch::{Batch, NO_ITEM};

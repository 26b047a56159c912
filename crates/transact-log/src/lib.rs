//! Feature logging for TransAct V2, in Parquet.
//!
//! V2 trains on the tokens serving selected for each candidate
//! (model-spec §3: "only the selected tokens need logging"): O(192)
//! tokens per example instead of re-reading a 16k-token history. With a
//! [`ParquetFeatureLogger`] set on a [`transact_rank::Ranker`]
//! ([`transact_rank::Ranker::with_logger`]), every ranked V2 request writes
//! one row per candidate: its selected tokens (item keys, multi-hot action
//! masks, surfaces, times, parts, int8 codes and scales) and the request's
//! context (user, request time, candidate item and codes, bundle version,
//! the user feature and context vector the model read).
//!
//! - [`schema`]: the columns, the key-value metadata and the version.
//! - [`FeatureLogWriter`]: create a file, append requests, finish it.
//! - [`FeatureLog`]: read and check a file; its rows as
//!   [`ExampleRecord`]s; as a [`transact_train::features::V2TokenSource`] it
//!   feeds [`transact_train::features::Featurizer::with_token_source`], so
//!   a V2 model trains from the log.
//!
//! Every failure is a [`LogError`] naming the file; reading never panics
//! on a foreign, truncated or newer file. See `docs/feature-log.md`.

mod error;
mod reader;
pub mod schema;
mod writer;

pub use error::LogError;
pub use reader::{ExampleRecord, FeatureLog};
pub use schema::SCHEMA_VERSION;
pub use writer::{FeatureLogWriter, LogSummary, ParquetFeatureLogger, WriterOptions};

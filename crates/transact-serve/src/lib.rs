//! Serving TransAct: what a Rust service links to rank behind its feed,
//! without the CLI's dependencies.
//!
//! - [`backend`]: the GPU backend ([`backend::GpuBackend`], falling back to
//!   the CPU for a request whose device was lost) and [`backend::auto_backend`],
//!   which picks the GPU when a hardware adapter exists.
//! - [`server`]: the ranking server on axum + tokio ([`Server`]): ranking,
//!   action ingestion answered once durable, health, readiness, Prometheus
//!   metrics, bounded admission with `503` + `Retry-After`, a compute pool
//!   off the async runtime, per-request timeouts, hot reload of a new bundle
//!   (`POST /v1/admin/reload`, SIGHUP) after a self-check, graceful shutdown.
//! - [`wire`]: the JSON request and response bodies, shared with `transact
//!   rank`'s JSON lines; parse errors name the field.
//! - [`client`]: a small HTTP/1 client for the server (tests, the load
//!   generator).
//! - [`loadtest`]: a closed-loop load generator (rank + append traffic,
//!   HDR latency percentiles, a per-second timeline), behind `transact
//!   loadtest`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use transact_seq::{EmbeddedStore, SequenceStore, StoreConfig};
//! use transact_serve::{Server, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (store, _) = EmbeddedStore::open("data/store", StoreConfig::default())?;
//! let store: Arc<dyn SequenceStore> = Arc::new(store);
//! let server = Server::new(store, "runs/train/bundle", ServerConfig::default())?;
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async move {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     let stop = transact_serve::signals(server.clone());
//!     server.run(listener, stop).await.map_err(std::io::Error::other)
//! })?;
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod client;
pub mod error;
pub mod loadtest;
pub mod metrics;
pub mod served;
pub mod server;
pub mod wire;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use metrics::{Metrics, TimedStore};
pub use served::{BackendPolicy, LoadedModel};
pub use server::{BUNDLE_HEADER, GPU_MAX_BATCH, ReloadAnswer, Server, ServerConfig, signals};

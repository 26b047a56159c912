//! The embedded store (placeholder: being written).
/// Store configuration.
pub struct StoreConfig;
/// Sync policy.
pub enum SyncPolicy {}
/// What opening found.
pub struct OpenReport;
/// The embedded store.
pub struct EmbeddedStore;

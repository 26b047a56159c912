//! User action sequences for TransAct.
//!
//! This crate owns the first stage of the data path: actions come in, are
//! validated, persisted and kept per user (newest first on read), and a
//! ranking request reads the newest `N` of them.
//!
//! - [`Action`], [`ActionType`], [`Surface`] and [`ActionVocab`]: what one
//!   action is and which action types a deployment accepts.
//! - [`SequenceStore`]: the trait every store implements (the embedded one
//!   here; a Redis-backed one later).
//! - [`SequenceBuf`]: a reusable struct-of-arrays buffer that reads fill.
//! - [`UserSequences`], [`TokenBuf`], [`SequenceLimits`]: a user's three
//!   sequences (lifelong multi-hot tokens of explicit actions, realtime
//!   actions, impressions) as [`SequenceStore::read_sequences`] reads them.
//! - [`EmbeddedStore`]: an in-process store persisted to a directory
//!   (append-only checksummed log plus periodic snapshots).
//! - `testing` (cargo feature `testing`, for tests): the reference model
//!   and proptest strategies every store's model test shares.
//!
//! It depends on no other crate of the workspace.

mod action;
mod embedded;
mod error;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use action::{Action, ActionType, ActionVocab, ItemId, Surface, UserId};
pub use embedded::{
    Clock, DamageReason, EmbeddedStore, OpenReport, SequenceReplay, SkippedSnapshot, StoreConfig,
    StoreStats, SyncPolicy, TailDamage, system_clock_ms,
};
pub use error::SeqError;
pub use store::{SequenceBuf, SequenceLimits, SequenceStore, TokenBuf, UserSequences};

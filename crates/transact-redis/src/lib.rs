//! A Redis / Redis Cluster [`SequenceStore`](transact_seq::SequenceStore)
//! for TransAct.
//!
//! [`RedisStore`] keeps what the embedded store keeps — per user a realtime
//! sequence of every action, the impressions apart, and a lifelong sequence
//! of multi-hot tokens of the explicit actions, each capped, out-of-order
//! actions placed by time (ties in arrival order) — with the same
//! semantics, configured by the same [`StoreConfig`](transact_seq::StoreConfig),
//! and checked against the same reference model
//! (`transact_seq::testing`). Services that use only the embedded store
//! depend on `transact-seq` alone and never build Redis.
//!
//! - One server (`redis://host:port`) through redis-rs's reconnecting
//!   connection manager, or a Redis Cluster (`redis+cluster://h:p,h:p`)
//!   through its async cluster connection ([`RedisTarget`]).
//! - Keys carry the user's hash tag (`<prefix>:{u:<user>}:rt|imp|ll|…`,
//!   [`KeyLayout`]), so one user's data is on one cluster slot; an append
//!   is one atomic Lua script (`EVALSHA`) over those keys, a read of all
//!   three sequences one pipelined round trip.
//! - The trait is synchronous: the store owns a small tokio runtime, and
//!   each call blocks its thread (call it from ordinary threads or
//!   `spawn_blocking`; from async code it works but blocks the worker).
//! - Failures are [`SeqError::Unavailable`](transact_seq::SeqError::Unavailable)
//!   naming the server and the operation, within [`RedisConfig::op_timeout`];
//!   the store reconnects by itself.
//!
//! The layout, the script, durability under each `appendfsync` setting and
//! when to choose which store are in `docs/redis.md`.
//!
//! # Example
//!
//! ```no_run
//! use transact_redis::{RedisConfig, RedisStore};
//! use transact_seq::{Action, ActionType, SequenceLimits, SequenceStore, StoreConfig, Surface, UserSequences};
//!
//! # fn main() -> Result<(), transact_seq::SeqError> {
//! // One server; a cluster is "redis+cluster://10.0.0.1:7000,10.0.0.2:7000".
//! let redis = RedisConfig::new("redis://127.0.0.1:6379")?.with_key_prefix("feed");
//! let store = RedisStore::connect(redis, StoreConfig::default())?;
//!
//! let repin = Action {
//!     item_id: 7,
//!     action_type: ActionType::REPIN,
//!     timestamp_ms: 1_700_000_000_000,
//!     surface: Surface(0),
//! };
//! store.append(42, &[repin])?; // Ok once Redis applied the batch
//!
//! let mut seqs = UserSequences::default();
//! store.read_sequences(42, &SequenceLimits::ALL, &mut seqs)?;
//! assert_eq!(seqs.realtime.item_ids, [7]);
//! assert!(seqs.lifelong.has_type(0, ActionType::REPIN));
//! # Ok(())
//! # }
//! ```

mod codec;
mod config;
mod conn;
mod keys;
mod store;

pub use config::{RedisConfig, RedisTarget};
pub use keys::{KeyLayout, SLOTS, key_slot};
pub use store::RedisStore;

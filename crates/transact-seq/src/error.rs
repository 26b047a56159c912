//! The error type of this crate.

use std::path::PathBuf;

use crate::{ActionType, UserId};

/// Everything that can go wrong in a sequence store.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    /// The action type is not in the store's vocabulary.
    #[error("user {user}: action type {} is not in the action vocabulary", action_type.0)]
    UnknownActionType {
        /// The user the action was for.
        user: UserId,
        /// The rejected type.
        action_type: ActionType,
    },
    /// The action's timestamp lies further in the future than the allowed clock skew.
    #[error(
        "user {user}: action timestamp {timestamp_ms} ms is {ahead_ms} ms in the future (allowed skew {max_skew_ms} ms)"
    )]
    FutureTimestamp {
        /// The user the action was for.
        user: UserId,
        /// The rejected timestamp.
        timestamp_ms: i64,
        /// How far ahead of the store's clock it was.
        ahead_ms: i64,
        /// The configured limit.
        max_skew_ms: i64,
    },
    /// The action's timestamp is negative.
    #[error("user {user}: action timestamp {timestamp_ms} ms is negative")]
    NegativeTimestamp {
        /// The user the action was for.
        user: UserId,
        /// The rejected timestamp.
        timestamp_ms: i64,
    },
    /// One `append` call holds more actions than fit in one log record.
    #[error(
        "user {user}: {actions} actions encode to {bytes} bytes, more than the {max_bytes}-byte record limit (split the batch)"
    )]
    BatchTooLarge {
        /// The user the actions were for.
        user: UserId,
        /// Actions in the call.
        actions: usize,
        /// Their encoded size.
        bytes: usize,
        /// The record size limit.
        max_bytes: usize,
    },
    /// A configuration value is invalid.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// An I/O error on a store file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot or log file could not be decoded.
    #[error("corrupt store file {path}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Another open store (in this process or another) holds the
    /// directory's lock.
    #[error(
        "store directory {dir} is in use by another open store (its LOCK file is locked); \
         close that store or stop the process holding it"
    )]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// The store was closed or poisoned by an earlier failed write.
    #[error("store is unavailable: {0}")]
    Unavailable(String),
}

//! What opening a store found, and store statistics.

use std::fmt;
use std::path::PathBuf;

/// What [`EmbeddedStore::open`](crate::EmbeddedStore::open) found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The store directory.
    pub dir: PathBuf,
    /// Generation of the snapshot the state was loaded from (`None`: no
    /// snapshot, the state was rebuilt from the logs alone).
    pub snapshot_generation: Option<u64>,
    /// Generation of the log file new appends go to.
    pub log_generation: u64,
    /// Log records replayed on top of the snapshot.
    pub records_replayed: u64,
    /// A damaged tail found at the end of the newest log and cut off (the
    /// trace of a crash during a write). Everything before it was kept.
    pub truncated_tail: Option<TailDamage>,
    /// Snapshots that failed their checks and were passed over for an older
    /// one (each renamed to `*.corrupt` so it is kept for inspection).
    pub skipped_snapshots: Vec<SkippedSnapshot>,
    /// Users in the store after opening.
    pub users: usize,
    /// Actions in the store after opening.
    pub actions: u64,
}

/// A damaged log tail, cut off when the store was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailDamage {
    /// The log file.
    pub path: PathBuf,
    /// Byte offset of the first damaged record; the file now ends here.
    pub offset: u64,
    /// Bytes removed from the end of the file.
    pub bytes_dropped: u64,
    /// What was wrong with the record at `offset`.
    pub reason: DamageReason,
}

/// Why a log record was judged damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DamageReason {
    /// The file ends inside the file header.
    ShortFileHeader,
    /// The file ends inside a record's 8-byte length + checksum prefix.
    ShortRecordHeader,
    /// The file ends inside a record's payload.
    ShortPayload {
        /// Payload length the record announced.
        expected: u32,
        /// Bytes actually present.
        available: u64,
    },
    /// The announced length is larger than any record the store writes.
    OversizedRecord {
        /// Payload length the record announced.
        length: u32,
    },
    /// The payload's CRC-32 does not match the stored one.
    ChecksumMismatch {
        /// Checksum stored in the record.
        stored: u32,
        /// Checksum of the payload as read.
        computed: u32,
    },
    /// The checksum matched but the payload did not decode.
    Undecodable(String),
}

impl fmt::Display for DamageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortFileHeader => write!(f, "file ends inside the file header"),
            Self::ShortRecordHeader => write!(f, "file ends inside a record header"),
            Self::ShortPayload {
                expected,
                available,
            } => {
                write!(
                    f,
                    "record announces {expected} payload bytes, only {available} present"
                )
            }
            Self::OversizedRecord { length } => {
                write!(
                    f,
                    "record announces {length} payload bytes, more than any record written"
                )
            }
            Self::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Self::Undecodable(e) => write!(f, "payload does not decode: {e}"),
        }
    }
}

/// A snapshot that was passed over at open time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSnapshot {
    /// Where the file was (it has been renamed to `<path>.corrupt`).
    pub path: PathBuf,
    /// What was wrong with it.
    pub detail: String,
}

/// A summary of a store's contents and files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Users with at least one action.
    pub users: usize,
    /// Actions stored over all users.
    pub actions: u64,
    /// Size of the current log file in bytes (0 in memory).
    pub log_bytes: u64,
    /// Generation of the current log file (0 in memory).
    pub log_generation: u64,
    /// Records appended since the last snapshot.
    pub records_since_snapshot: u64,
    /// Why appends are refused, if an earlier write failure poisoned the store.
    pub poisoned: Option<String>,
    /// The error of the last automatic snapshot, if it failed.
    pub last_snapshot_error: Option<String>,
}

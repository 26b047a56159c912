//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong writing or reading a feature log. Every
/// variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a Parquet file at all.
    #[error("{}: not a Parquet file ({detail})", path.display())]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The file starts as Parquet but has no footer: cut short, or its
    /// writer never finished.
    #[error(
        "{}: truncated Parquet file ({detail}): was it copied partially, or did its writer stop \
         before `finish`?",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// A Parquet file, but not a TransAct feature log.
    #[error("{}: not a TransAct feature log: {detail}", path.display())]
    ForeignSchema {
        /// The file.
        path: PathBuf,
        /// What does not match.
        detail: String,
    },
    /// A feature log of a newer schema version than this reader knows.
    #[error(
        "{}: feature log schema version {found} is newer than this build reads (up to {}); \
         upgrade the reader",
        path.display(),
        crate::SCHEMA_VERSION
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// The file's version.
        found: u32,
    },
    /// A row breaks the schema's rules (list lengths, widths, ranges).
    #[error("{}: row {row}: {detail}", path.display())]
    BadRow {
        /// The file.
        path: PathBuf,
        /// Row number in the file (0-based).
        row: usize,
        /// What is wrong.
        detail: String,
    },
    /// An entry handed to the writer does not fit the file.
    #[error("{}: {detail}", path.display())]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
    /// The Parquet or Arrow layer failed.
    #[error("{}: {detail}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        detail: String,
    },
    /// The writer was used after `finish` or after an earlier failure.
    #[error("{}: the writer is closed{}", path.display(), .reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Closed {
        /// The file.
        path: PathBuf,
        /// The failure that closed it, if any.
        reason: Option<String>,
    },
}

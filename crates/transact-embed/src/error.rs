//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong with embedding tables and kernels.
///
/// Messages name the item id, the file and the tensor involved wherever the
/// failing operation knows them.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A slice or vector has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Dimension {
        /// What was being checked (names the item id when one is involved).
        what: String,
        /// What was expected.
        expected: usize,
        /// What was given.
        got: usize,
    },

    /// An embedding given for `item` holds NaN or ±infinity at `index`.
    #[error("embedding of item {item} has a non-finite value at index {index}")]
    NonFinite {
        /// The item id whose embedding was rejected.
        item: u64,
        /// Position of the first offending value in the row.
        index: usize,
    },

    /// A finite value does not fit the storage type (only f16 can overflow:
    /// its largest finite magnitude is 65504).
    #[error("embedding of item {item}: value {value} at index {index} does not fit in f16")]
    OutOfRange {
        /// The item id whose embedding was rejected.
        item: u64,
        /// Position of the offending value in the row.
        index: usize,
        /// The offending value.
        value: f32,
    },

    /// A lookup for an id the table does not hold, with no fallback vector set.
    #[error("unknown item id {0} (not in the table and no fallback vector is set)")]
    UnknownItem(u64),

    /// The same item id was given twice where ids must be unique.
    #[error("duplicate item id {0}")]
    DuplicateItem(u64),

    /// An argument is invalid for a reason not covered by the other variants
    /// (for example a zero embedding width).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file could be read but its content is not what was expected.
    #[error("{}: {}{detail}", .path.display(), tensor_prefix(.tensor.as_deref()))]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// The tensor (or metadata entry) concerned, if one is to blame.
        tensor: Option<String>,
        /// What is wrong.
        detail: String,
    },
}

fn tensor_prefix(tensor: Option<&str>) -> String {
    match tensor {
        Some(name) => format!("tensor `{name}`: "),
        None => String::new(),
    }
}

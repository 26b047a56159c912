//! The error type of this crate.

/// Everything that can go wrong with embedding tables and kernels.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A slice or vector has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Dimension {
        /// What was being checked.
        what: String,
        /// What was expected.
        expected: usize,
        /// What was given.
        got: usize,
    },
}

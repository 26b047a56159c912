//! The whole trainable ranking network: forward, backward and losses over a [`crate::Batch`].

/// Everything that can go wrong in training code.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A slice is shorter than the layer needs.
    #[error("{what}: needs {expected} values, got {got}")]
    Shape {
        /// Which argument.
        what: String,
        /// Values needed.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A batch is malformed.
    #[error("bad batch: {0}")]
    Batch(String),
    /// Parameters do not match the network.
    #[error("parameters: {0}")]
    Params(String),
    /// A GEMM kernel rejected its arguments (a bug: sizes are checked first).
    #[error("kernel: {0}")]
    Kernel(String),
    /// An error from the serving model.
    #[error(transparent)]
    Model(#[from] transact_model::ModelError),
}

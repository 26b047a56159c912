//! The error type of this crate.

/// Everything that can go wrong building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is invalid.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// An input has the wrong length for the model's dimensions.
    #[error("input `{name}` has {got} values, expected {expected}")]
    Shape {
        /// Which input.
        name: String,
        /// What the model expects.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// An input holds NaN or infinity.
    #[error("input `{name}` holds a non-finite value at index {index}")]
    NonFinite {
        /// Which input.
        name: String,
        /// The first bad index.
        index: usize,
    },
    /// An input value is out of range (an action id outside the vocabulary, ...).
    #[error("input `{name}`: {detail}")]
    BadInput {
        /// Which input.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// A weight tensor is missing from a weights file.
    #[error("weights: tensor `{0}` is missing")]
    MissingTensor(String),
    /// A weight tensor has the wrong shape or type.
    #[error("weights: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A weights file could not be parsed.
    #[error("weights file {path}: {detail}")]
    Format {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// An I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    /// Checks that `got == expected` for input `name`.
    pub fn check_len(name: &str, expected: usize, got: usize) -> Result<(), ModelError> {
        if expected == got {
            Ok(())
        } else {
            Err(ModelError::Shape {
                name: name.to_string(),
                expected,
                got,
            })
        }
    }

    /// Checks that every value of `xs` is finite.
    pub fn check_finite(name: &str, xs: &[f32]) -> Result<(), ModelError> {
        match xs.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(index) => Err(ModelError::NonFinite {
                name: name.to_string(),
                index,
            }),
        }
    }
}

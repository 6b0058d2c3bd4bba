//! The one error type of the diffusion core.

/// Everything that can go wrong in the core: a bad setting (named, with its value and why it is
/// refused), mismatched tensors, or a failure inside the model or the tensor library.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A setting outside its allowed range, such as `steps = 0` or `strength = 1.5`.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidSetting {
        /// The setting's name as the user sees it (`steps`, `strength`, `eta`, ...).
        name: &'static str,
        /// The refused value, printed.
        value: String,
        /// Why it is refused, in words.
        reason: String,
    },
    /// Two tensors that must agree in shape do not.
    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Which tensor is wrong.
        what: &'static str,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// A recorded noise source ran out of tensors.
    #[error("the recorded noise source is exhausted after {0} draws")]
    NoiseExhausted(usize),
    /// The network behind a denoiser failed.
    #[error("model evaluation failed: {0}")]
    Model(String),
    /// The tensor library failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidSetting`].
    pub fn invalid(name: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::InvalidSetting { name, value: value.to_string(), reason: reason.into() }
    }
}

/// Result alias for the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

//! What every crate's configuration section shares: the error naming the key at fault.
//!
//! Each crate owns its sections of `k2.toml` (their types, defaults and validation); the
//! binary composes them. A section's `validate` answers with this error, so a user reads
//! which key is wrong and why, whatever the crate.

/// A setting that is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key's path, e.g. `writer.zstd_level`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

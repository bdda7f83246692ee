//! The model's error type: bad numbers, bad enum values, and undecodable wire payloads.

/// Everything that can be wrong with a value or a payload. None of these are retryable:
/// the same input fails the same way, so the record belongs in the dead-letter queue.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("'{0}' is not a decimal number")]
    InvalidDecimal(String),
    #[error("'{0}' does not fit decimal(18,8)")]
    DecimalOutOfRange(String),
    #[error("unknown {kind} '{value}'")]
    UnknownEnum { kind: &'static str, value: String },
    #[error("payload is not in the Confluent wire format: {0}")]
    Framing(String),
    #[error("schema id {0} is not a K2 schema known to this build")]
    UnknownSchema(u32),
    #[error("Avro datum does not decode: {0}")]
    Decode(String),
}

impl ModelError {
    /// Model errors depend only on the input, so retrying cannot help.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

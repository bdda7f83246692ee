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

/// A credential from the configuration (a password, a token, a secret key). It shows as
/// `***` however it is printed; [`expose`](Secret::expose) hands the value to the one place
/// that sends it.
///
/// The configuration may write the value, or — better — a reference, `env:NAME` or
/// `file:PATH`, which the binary resolves as it reads the configuration. A reference that
/// reaches this type unresolved is refused, so a credential key the binary does not know
/// about fails loudly instead of sending `env:…` as the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `env:` and `file:`, the prefixes of a reference to where a secret is kept.
    pub fn is_reference(raw: &str) -> bool {
        raw.starts_with("env:") || raw.starts_with("file:")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if Secret::is_reference(&raw) {
            return Err(serde::de::Error::custom(
                "an env:/file: reference that was not resolved (this key is not listed among the credential keys)",
            ));
        }
        Ok(Secret(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn an_unresolved_reference_is_refused() {
        #[derive(serde::Deserialize)]
        struct S {
            #[allow(dead_code)]
            p: Secret,
        }
        let e = serde_json::from_str::<S>(r#"{"p": "env:X"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not resolved"), "{e}");
    }
}

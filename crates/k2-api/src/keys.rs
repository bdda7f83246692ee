//! API keys. The configuration holds each key's SHA-256 digest, never the key: a key is 32
//! random bytes, so a fast digest is as good as a slow password hash against guessing, and
//! checking it costs microseconds per request. A presented key is digested and compared with
//! every configured digest in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;
use crate::config::{ApiConfig, ApiKeyConfig, KeyFile, Scope};

/// The holder of a valid key.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    scopes: Vec<Scope>,
    pub rate_per_second: f64,
    pub burst: u32,
}

impl Caller {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

struct Key {
    digest: [u8; 32],
    caller: Caller,
}

pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// The configured keys and those of the keys file. Without any: an error in production
    /// mode; else one key made for this process, printed once on standard error.
    pub fn load(config: &ApiConfig) -> Result<Keys, ApiError> {
        Keys::load_with(config, &[Scope::Read, Scope::Sql])
    }

    /// As [`Keys::load`], a key made for this process having `session` scopes.
    pub fn load_with(config: &ApiConfig, session: &[Scope]) -> Result<Keys, ApiError> {
        let mut entries = config.keys.clone();
        if !config.keys_file.is_empty() {
            let text = read_keys_file(&config.keys_file)?;
            let file: KeyFile = toml::from_str(&text).map_err(|e| {
                ApiError::Config(format!("api.keys_file {}: {e}", config.keys_file))
            })?;
            entries.extend(file.keys);
        }
        if entries.is_empty() {
            if config.production {
                return Err(ApiError::Config(
                    "api.production is set but no API key is configured (api.keys or \
                     api.keys_file; `k2 api-key new` makes one)"
                        .into(),
                ));
            }
            let key = generate_key();
            let names: Vec<&str> = session.iter().map(|s| s.name()).collect();
            eprintln!(
                "no API keys configured: this server accepts the key {key} (scopes {}) \
                 until it stops",
                names.join(", ")
            );
            entries.push(ApiKeyConfig {
                name: "session".into(),
                sha256: digest_hex(&key),
                scopes: session.to_vec(),
                rate_per_second: None,
                burst: None,
            });
        }
        let mut keys = Vec::with_capacity(entries.len());
        for e in entries {
            let digest = parse_digest(&e.sha256).ok_or_else(|| {
                ApiError::Config(format!(
                    "API key '{}': sha256 must be 64 hex digits (the digest, not the key)",
                    e.name
                ))
            })?;
            let scopes = e.scopes.clone();
            if e.name.is_empty() || e.name.len() > 64 {
                return Err(ApiError::Config(
                    "every API key needs a name of 1 to 64 characters".into(),
                ));
            }
            keys.push(Key {
                digest,
                caller: Caller {
                    name: e.name,
                    scopes,
                    rate_per_second: e.rate_per_second.unwrap_or(config.rate_per_second),
                    burst: e.burst.unwrap_or(config.burst),
                },
            });
        }
        Ok(Keys { keys })
    }

    /// The holder of `presented`, if it is a configured key. Every digest is compared, in
    /// constant time, whatever matches.
    pub fn check(&self, presented: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(&k.caller);
            }
        }
        found
    }
}

/// A new random key: `k2_` and 64 hex digits (256 bits from the OS's generator).
pub fn generate_key() -> String {
    let mut bytes = Vec::with_capacity(32);
    // Version-4 UUIDs carry 122 random bits from the OS generator; three give 256+.
    for _ in 0..3 {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let digest = Sha256::digest(&bytes);
    format!("k2_{}", hex(&digest))
}

/// Hex SHA-256 of a key, as the configuration stores it.
pub fn digest_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The `[[keys]]` of `api.keys_file`: a file (`PATH` or `file:PATH`), or `env:NAME`, a
/// variable holding the same TOML (a container's secret).
fn read_keys_file(keys_file: &str) -> Result<String, ApiError> {
    if let Some(name) = keys_file.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            ApiError::Config(format!(
                "api.keys_file {keys_file}: the environment variable is not set"
            ))
        });
    }
    let path = keys_file.strip_prefix("file:").unwrap_or(keys_file);
    std::fs::read_to_string(path)
        .map_err(|e| ApiError::Config(format!("reading api.keys_file {path}: {e}")))
}

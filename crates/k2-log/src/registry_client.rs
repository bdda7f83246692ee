//! A client of a Confluent-compatible schema registry (Confluent's own, or another K2's
//! `k2 registry serve`), for deployments where several K2 processes and other producers
//! share one registry. Ids and schema texts never change once registered, so both
//! directions are cached for the life of the client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{LogError, Result};
use crate::schema_store::{SchemaStore, SubjectVersion};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry at a base URL (`http://host:port[/prefix]`). Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    base: Arc<str>,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<u32, String>>>,
    by_subject: Arc<Mutex<HashMap<(String, String), u32>>>,
}

/// Percent-encodes a path segment (subjects may hold any character).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RegistryClient {
    pub fn new(url: &str, timeout: Duration) -> Result<RegistryClient> {
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LogError::InvalidSpec(format!(
                "registry.url must be an http:// address, not '{url}'"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| LogError::storage("creating the registry client", e))?;
        Ok(RegistryClient {
            base: base.into(),
            http,
            by_id: Arc::default(),
            by_subject: Arc::default(),
        })
    }

    /// Sends a request; `Ok(None)` for a 404, the registry's message for other refusals.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let context = || format!("schema registry {method} {url}");
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        // Not reachable, or a server error: may pass, retryable.
        let response = request
            .send()
            .await
            .map_err(|e| LogError::storage(context(), e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| LogError::storage(context(), e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let message = || {
            value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_string)
        };
        match status.as_u16() {
            200..=299 => Ok(Some(value)),
            404 => Ok(None),
            409 => Err(LogError::IncompatibleSchema {
                subject: path.to_string(),
                reason: message(),
            }),
            422 => Err(LogError::InvalidSchema(message())),
            500..=599 => Err(LogError::storage(
                context(),
                std::io::Error::other(format!("{status}: {}", message())),
            )),
            _ => Err(LogError::Rejected(format!(
                "{}: {status}: {}",
                context(),
                message()
            ))),
        }
    }

    /// Registers `schema` under `subject` (the registry checks compatibility).
    pub async fn register_schema(&self, subject: &str, schema: &str) -> Result<u32> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(&id) = self.by_subject.lock().expect("cache lock").get(&key) {
            return Ok(id);
        }
        let reply = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{}/versions", segment(subject)),
                Some(json!({ "schema": schema })),
            )
            .await?
            .ok_or_else(|| {
                LogError::Rejected(format!("the registry has no subject route for '{subject}'"))
            })?;
        let id = reply
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                LogError::Corrupt(format!("registry answered {reply} to a registration"))
            })?;
        self.by_subject.lock().expect("cache lock").insert(key, id);
        self.by_id
            .lock()
            .expect("cache lock")
            .insert(id, schema.to_string());
        Ok(id)
    }

    /// The schema text of an id, or `None` when the registry does not know it.
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>> {
        if let Some(text) = self.by_id.lock().expect("cache lock").get(&id) {
            return Ok(Some(text.clone()));
        }
        let Some(reply) = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?
        else {
            return Ok(None);
        };
        let text = reply
            .get("schema")
            .and_then(Value::as_str)
            .ok_or_else(|| LogError::Corrupt(format!("registry answered {reply} for schema {id}")))?
            .to_string();
        self.by_id
            .lock()
            .expect("cache lock")
            .insert(id, text.clone());
        Ok(Some(text))
    }

    /// The newest version of a subject (not cached: it changes).
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>> {
        let Some(reply) = self
            .call(
                reqwest::Method::GET,
                &format!("/subjects/{}/versions/latest", segment(subject)),
                None,
            )
            .await?
        else {
            return Ok(None);
        };
        let field = |name: &str| reply.get(name).and_then(Value::as_u64);
        match (
            field("version"),
            field("id"),
            reply.get("schema").and_then(Value::as_str),
        ) {
            (Some(version), Some(id), Some(schema)) => Ok(Some(SubjectVersion {
                subject: subject.to_string(),
                version: version as u32,
                id: id as u32,
                schema: schema.to_string(),
            })),
            _ => Err(LogError::Corrupt(format!(
                "registry answered {reply} for {subject}"
            ))),
        }
    }

    /// Whether `schema` may be registered under `subject` now: `Err(reason)` if not.
    pub async fn check(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<std::result::Result<(), String>> {
        let reply = self
            .call(
                reqwest::Method::POST,
                &format!(
                    "/compatibility/subjects/{}/versions/latest",
                    segment(subject)
                ),
                Some(json!({ "schema": schema })),
            )
            .await?;
        let Some(reply) = reply else {
            return Ok(Ok(())); // a new subject accepts anything
        };
        if reply.get("is_compatible").and_then(Value::as_bool) == Some(true) {
            return Ok(Ok(()));
        }
        Ok(Err(reply.get("messages").map_or_else(
            || "incompatible".to_string(),
            Value::to_string,
        )))
    }
}

impl SchemaStore for RegistryClient {
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send {
        let (this, subject, schema) = (self.clone(), subject.to_string(), schema.to_string());
        async move { this.register_schema(&subject, &schema).await }
    }

    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send {
        let this = self.clone();
        async move { this.schema_by_id(id).await }
    }
}

/// Where a Kafka deployment keeps its schemas: its own registry file, or a shared registry.
#[derive(Clone)]
pub enum Registry {
    Local(crate::schema_store::LocalSchemas),
    Remote(RegistryClient),
}

impl SchemaStore for Registry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        match self {
            Registry::Local(l) => l.register(subject, schema).await,
            Registry::Remote(r) => r.register(subject, schema).await,
        }
    }

    async fn schema(&self, id: u32) -> Result<Option<String>> {
        match self {
            Registry::Local(l) => l.schema(id).await,
            Registry::Remote(r) => r.schema(id).await,
        }
    }
}

//! A client of a Confluent-compatible schema registry (Confluent's own, or another K2's
//! `k2 registry serve`), for deployments where several K2 processes and other producers
//! share one registry. Ids and schema texts never change once registered, so both
//! directions are cached for the life of the client.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{SchemaStore, SubjectVersion};
use crate::error::{LogError, Result};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// How to reach a registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryAccess {
    /// `http://host:port[/prefix]` or `https://…`. Over https the server's certificate is
    /// verified against the public web roots and `ca_file`.
    pub url: String,
    /// Each request's time limit.
    pub timeout: Duration,
    /// A PEM file of further certificate authorities to trust (a private CA).
    pub ca_file: Option<PathBuf>,
    /// HTTP basic credentials (Confluent Cloud: an API key and its secret). Empty: none.
    pub username: String,
    pub password: k2_model::Secret,
}

/// A registry at a base URL (`http://host:port[/prefix]`). Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    base: Arc<str>,
    http: reqwest::Client,
    credentials: Option<Arc<(String, k2_model::Secret)>>,
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
    pub fn new(access: &RegistryAccess) -> Result<RegistryClient> {
        let url = access.url.as_str();
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LogError::InvalidSpec(format!(
                "registry.url must be an http:// or https:// address, not '{url}'"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(access.timeout);
        if let Some(path) = &access.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                LogError::InvalidSpec(format!(
                    "registry.ca_file '{}' cannot be read: {e}",
                    path.display()
                ))
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|roots| !roots.is_empty())
                .ok_or_else(|| {
                    LogError::InvalidSpec(format!(
                        "registry.ca_file '{}' holds no PEM certificate",
                        path.display()
                    ))
                })?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let credentials = match (access.username.is_empty(), access.password.is_empty()) {
            (true, true) => None,
            (false, _) => Some(Arc::new((access.username.clone(), access.password.clone()))),
            (true, false) => {
                return Err(LogError::InvalidSpec(
                    "registry.password is set without registry.username".into(),
                ));
            }
        };
        if credentials.is_some() && base.starts_with("http://") {
            tracing::warn!(
                registry = base,
                "registry credentials will cross the network in clear: use https://"
            );
        }
        let http = builder
            .build()
            .map_err(|e| LogError::storage("creating the registry client", e))?;
        Ok(RegistryClient {
            base: base.into(),
            http,
            credentials,
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
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.0, Some(credentials.1.expose()));
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        // Not reachable, or a server error: may pass, retryable. A certificate that does
        // not verify will not pass.
        let response = request.send().await.map_err(|e| {
            let (cause, tls) = explain(&e);
            if tls {
                LogError::Rejected(format!("{}: {cause}", context()))
            } else {
                LogError::storage(context(), std::io::Error::other(cause))
            }
        })?;
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
            401 | 403 => Err(LogError::Rejected(format!(
                "{}: {status}: the registry refused {}: {}",
                context(),
                if self.credentials.is_some() {
                    "registry.username and registry.password"
                } else {
                    "a request without credentials (set registry.username and registry.password)"
                },
                message()
            ))),
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

/// A failed request's causes, innermost last, and whether TLS refused the server.
fn explain(error: &reqwest::Error) -> (String, bool) {
    let mut parts = Vec::new();
    let mut tls = false;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        parts.push(e.to_string());
        tls |= e.downcast_ref::<rustls::Error>().is_some();
        // An I/O error's `source` skips the error it wraps, which is where TLS puts its own.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    parts.dedup();
    (parts.join(": "), tls)
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsAcceptor;

    use super::{RegistryAccess, RegistryClient};
    use crate::error::LogError;

    /// A registry stand-in on loopback behind the test CA's certificate: it answers every
    /// request with `status` and `body`, and keeps each request's head.
    async fn tls_registry(
        status: &'static str,
        body: &'static str,
    ) -> (u16, Arc<Mutex<Vec<String>>>) {
        let acceptor = TlsAcceptor::from(Arc::new(k2_testkit::tls::server_config()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let heads = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, heads) = (acceptor.clone(), heads.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        let n = tls.read(&mut buf).await.unwrap();
                        assert!(n > 0, "the request ended early");
                        request.extend_from_slice(&buf[..n]);
                        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while request.len() < head_end + length {
                        let n = tls.read(&mut buf).await.unwrap();
                        request.extend_from_slice(&buf[..n]);
                    }
                    heads.lock().unwrap().push(head);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    tls.write_all(reply.as_bytes()).await.unwrap();
                    tls.shutdown().await.unwrap();
                });
            }
        });
        (port, seen)
    }

    fn access(port: u16) -> RegistryAccess {
        RegistryAccess {
            url: format!("https://127.0.0.1:{port}"),
            timeout: Duration::from_secs(10),
            ca_file: Some(k2_testkit::tls::dir().join("ca.pem")),
            username: "key".into(),
            password: "secret".into(),
        }
    }

    #[tokio::test]
    async fn https_with_a_private_ca_and_basic_credentials() {
        let (port, seen) = tls_registry("200 OK", r#"{"id":7}"#).await;
        let client = RegistryClient::new(&access(port)).unwrap();
        let id = client
            .register_schema("k2.trades-value", r#""string""#)
            .await
            .unwrap();
        assert_eq!(id, 7);
        let heads = seen.lock().unwrap().clone();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0].starts_with("post /subjects/k2.trades-value/versions http/1.1"),
            "{}",
            heads[0]
        );
        // "key:secret" in base64.
        assert!(
            heads[0].contains(&format!(
                "authorization: basic {}",
                "a2V5OnNlY3JldA==".to_lowercase()
            )),
            "{}",
            heads[0]
        );
        // Cached: the second call does not ask.
        assert_eq!(
            client
                .register_schema("k2.trades-value", r#""string""#)
                .await
                .unwrap(),
            7
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_certificate_nobody_vouches_for_is_refused_for_good() {
        let (port, seen) = tls_registry("200 OK", r#"{"id":7}"#).await;
        let client = RegistryClient::new(&RegistryAccess {
            ca_file: None,
            ..access(port)
        })
        .unwrap();
        let err = client
            .register_schema("k2.trades-value", r#""string""#)
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::Rejected(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("certificate") && text.contains(&format!("127.0.0.1:{port}")),
            "{text}"
        );
        assert!(seen.lock().unwrap().is_empty(), "no request got through");
    }

    #[tokio::test]
    async fn refused_credentials_are_named() {
        let (port, _) = tls_registry(
            "401 Unauthorized",
            r#"{"error_code":401,"message":"Unauthorized"}"#,
        )
        .await;
        let client = RegistryClient::new(&access(port)).unwrap();
        let err = client.schema_by_id(3).await.unwrap_err();
        assert!(matches!(err, LogError::Rejected(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("registry.username and registry.password"),
            "{err}"
        );
    }

    #[test]
    fn bad_access_settings_are_named() {
        let bad = |access: RegistryAccess| match RegistryClient::new(&access) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let base = access(1);
        let missing = k2_testkit::tls::dir().join("absent.pem");
        let text = bad(RegistryAccess {
            ca_file: Some(missing.clone()),
            ..base.clone()
        });
        assert!(
            text.contains("registry.ca_file") && text.contains("absent.pem"),
            "{text}"
        );
        let text = bad(RegistryAccess {
            ca_file: Some(k2_testkit::tls::dir().join("README.md")),
            ..base.clone()
        });
        assert!(text.contains("holds no PEM certificate"), "{text}");
        let text = bad(RegistryAccess {
            username: String::new(),
            ..base.clone()
        });
        assert!(text.contains("registry.password is set without"), "{text}");
        let text = bad(RegistryAccess {
            url: "127.0.0.1:8081".into(),
            ..base
        });
        assert!(text.contains("http:// or https://"), "{text}");
    }
}

//! K2 as a client of an Iceberg REST catalog: `catalog.uri = "http(s)://…"`.
//!
//! Every table operation goes through `iceberg-catalog-rest`'s `RestCatalog`. The commits
//! K2 builds itself (tags, compactions: updates iceberg-rust 0.10 offers no public way to
//! send) are posted by [`RestAccess`] to the same endpoint the `RestCatalog` commits to,
//! as the spec's `CommitTableRequest`, with the same credentials.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iceberg::{CatalogBuilder, TableIdent, TableRequirement, TableUpdate};
use iceberg_catalog_rest::{CommitTableRequest, RestCatalog, RestCatalogBuilder};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::CatalogConfig;
use crate::error::{LakeError, Result};
use crate::warehouse::Warehouse;

/// The HTTP client of every request to the catalog: each bounded by `timeout`.
fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| rest_error("building the catalog's HTTP client", e.to_string()))
}

fn rest_error(what: &str, detail: String) -> LakeError {
    LakeError::catalog(
        what,
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, detail),
    )
}

/// The REST catalog at `config.uri`; tables' files reached through `warehouse` (this
/// process's access to the bucket; credentials the catalog vends fill what it leaves out).
pub async fn open(config: &CatalogConfig, warehouse: &Warehouse) -> Result<Arc<RestCatalog>> {
    let mut props: HashMap<String, String> = warehouse.props().clone();
    props.insert("uri".into(), config.uri.trim_end_matches('/').to_string());
    props.insert("warehouse".into(), config.name.clone());
    if !config.token.is_empty() {
        props.insert("token".into(), config.token.expose().to_string());
    }
    if !config.credential.is_empty() {
        props.insert("credential".into(), config.credential.expose().to_string());
    }
    let catalog = RestCatalogBuilder::default()
        .with_client(http_client(config.request_timeout)?)
        .with_storage_factory(warehouse.storage())
        .load(config.name.clone(), props)
        .await
        .map_err(|e| {
            LakeError::catalog(format!("opening the REST catalog at {}", config.uri), e)
        })?;
    Ok(Arc::new(catalog))
}

/// How requests to the catalog are authorised.
enum Auth {
    None,
    Bearer(String),
    /// OAuth2 client credentials, and the token last obtained with them.
    Client {
        id: Option<String>,
        secret: String,
        token: Mutex<Option<String>>,
    },
}

/// What K2 itself sends to a REST catalog.
pub struct RestAccess {
    http: reqwest::Client,
    uri: String,
    /// `URI/v1[/PREFIX]`: the base of the catalog's resource paths.
    base: String,
    auth: Auth,
}

/// `GET /v1/config`'s answer, as far as it matters here.
#[derive(Deserialize, Default)]
struct ServerConfig {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// Why a commit was not applied.
pub enum Refused {
    /// A requirement failed or another commit came first: nothing was changed.
    Conflict(String),
    Failed(LakeError),
}

impl RestAccess {
    /// Reads the catalog's configuration (its path prefix) with `config`'s credentials.
    pub async fn open(config: &CatalogConfig) -> Result<RestAccess> {
        let uri = config.uri.trim_end_matches('/').to_string();
        let auth = if !config.token.is_empty() {
            Auth::Bearer(config.token.expose().to_string())
        } else if !config.credential.is_empty() {
            let (id, secret) = match config.credential.expose().split_once(':') {
                Some((id, secret)) => (Some(id.to_string()), secret.to_string()),
                None => (None, config.credential.expose().to_string()),
            };
            Auth::Client {
                id,
                secret,
                token: Mutex::new(None),
            }
        } else {
            Auth::None
        };
        let mut access = RestAccess {
            http: http_client(config.request_timeout)?,
            base: format!("{uri}/v1"),
            uri,
            auth,
        };
        let url = format!("{}/config?warehouse={}", access.base, config.name);
        let response = access
            .send(|http| http.get(&url))
            .await
            .map_err(|e| rest_error("reading the REST catalog's configuration", e))?;
        if !response.status().is_success() {
            return Err(rest_error(
                "reading the REST catalog's configuration",
                describe(response).await,
            ));
        }
        let server: ServerConfig = response.json().await.unwrap_or_default();
        if let Some(prefix) = server
            .overrides
            .get("prefix")
            .or(server.defaults.get("prefix"))
        {
            access.base = format!("{}/{}", access.base, prefix.trim_matches('/'));
        }
        Ok(access)
    }

    /// Posts `requirements` and `updates` to `table`'s endpoint.
    pub async fn commit(
        &self,
        table: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> std::result::Result<(), Refused> {
        let url = format!(
            "{}/namespaces/{}/tables/{}",
            self.base,
            table.namespace().to_url_string(),
            table.name()
        );
        let body = CommitTableRequest {
            identifier: Some(table.clone()),
            requirements,
            updates,
        };
        let response = self
            .send(|http| http.post(&url).json(&body))
            .await
            .map_err(|e| Refused::Failed(rest_error(&format!("committing {table}"), e)))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(Refused::Conflict(describe(response).await)),
            _ => Err(Refused::Failed(rest_error(
                &format!("committing {table}"),
                describe(response).await,
            ))),
        }
    }

    /// Sends the request `make` builds, authorised; once more with a new token if a token
    /// from client credentials was refused (it may have expired).
    async fn send(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> std::result::Result<reqwest::Response, String> {
        for attempt in 0..2 {
            let token = self.token(attempt > 0).await?;
            let mut request = make(&self.http);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            let refused = response.status() == StatusCode::UNAUTHORIZED;
            if !(refused && matches!(self.auth, Auth::Client { .. }) && attempt == 0) {
                return Ok(response);
            }
        }
        unreachable!("the second attempt returns")
    }

    /// The bearer token to send, if any; from the token endpoint when `renew` or none yet.
    async fn token(&self, renew: bool) -> std::result::Result<Option<String>, String> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Bearer(token) => Ok(Some(token.clone())),
            Auth::Client { id, secret, token } => {
                let mut held = token.lock().await;
                if renew || held.is_none() {
                    *held = Some(self.fetch_token(id.as_deref(), secret).await?);
                }
                Ok(held.clone())
            }
        }
    }

    async fn fetch_token(
        &self,
        id: Option<&str>,
        secret: &str,
    ) -> std::result::Result<String, String> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
            ("scope", "catalog"),
        ];
        if let Some(id) = id {
            form.push(("client_id", id));
        }
        let response = self
            .http
            .post(format!("{}/v1/oauth/tokens", self.uri))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("asking for a token: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("asking for a token: {}", describe(response).await));
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| format!("reading the token: {e}"))?;
        Ok(token.access_token)
    }
}

/// A refusal as the catalog explains it: the status and the error model's message.
async fn describe(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    format!("{status}: {message}")
}

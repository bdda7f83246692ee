//! `[api]`: the HTTP server of `k2 serve` and `k2 up`.

use std::time::Duration;

use k2_model::ConfigError;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    pub listen: String,
    /// Address of Arrow Flight SQL (gRPC) beside the REST API; empty: off.
    pub flight_listen: String,
    /// Production mode: the server refuses to start without configured keys. Outside it, a
    /// server without keys makes one for its own lifetime and prints it once.
    pub production: bool,
    /// API keys (name, SHA-256 digest, scopes); see `k2 api-key new`.
    pub keys: Vec<ApiKeyConfig>,
    /// A TOML file of further `[[keys]]`, kept outside the configuration: `PATH` or
    /// `file:PATH`, or `env:NAME`, a variable holding that TOML.
    pub keys_file: String,
    /// Requests per second and burst of each key (a key may set its own).
    pub rate_per_second: f64,
    pub burst: u32,
    /// Requests per second and burst of each client address on routes without a key
    /// (health, metrics, documents) and for requests whose key is missing or wrong.
    pub ip_rate_per_second: f64,
    pub ip_burst: u32,
    /// Largest request body read, in bytes (chunked bodies included): beyond it, 413.
    pub body_limit_bytes: usize,
    /// Queries running at once; beyond it requests wait in a queue.
    pub max_concurrent_queries: usize,
    /// Requests waiting for a query slot; beyond it, 503 with Retry-After.
    pub max_queued: usize,
    /// How long a request waits for a query slot before 503.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Threads of the query runtime (0: the machine's cores).
    pub query_threads: usize,
    /// Rows per page: the default and the bound of GET list endpoints, and the bound of
    /// POST queries.
    pub default_limit: usize,
    pub max_limit: usize,
    pub max_query_limit: usize,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Memory for answers kept by question and snapshot (0: every request runs its
    /// query). A commit makes a new snapshot, so a kept answer is never stale.
    pub cache_mb: u64,
    /// Use the first `X-Forwarded-For` address as the client's (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Streamed replays (`/v1/replay/stream`, `/v1/replay/ws`) running at once; beyond,
    /// 503. A replay holds no query slot while it waits on its pace or its client.
    pub max_replays: usize,
    /// The live tail of `k2 up`: events held per (exchange, symbol) and table …
    pub tail_per_symbol: usize,
    /// … and for how long behind the stream's newest event.
    #[serde(with = "humantime_serde")]
    pub tail_age: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8000".into(),
            flight_listen: String::new(),
            production: false,
            keys: Vec::new(),
            keys_file: String::new(),
            rate_per_second: 100.0,
            burst: 200,
            ip_rate_per_second: 20.0,
            ip_burst: 40,
            body_limit_bytes: 10 << 20,
            max_concurrent_queries: 16,
            max_queued: 256,
            queue_timeout: Duration::from_secs(5),
            query_threads: 0,
            default_limit: 100,
            max_limit: 10_000,
            max_query_limit: 100_000,
            cors_origins: Vec::new(),
            cache_mb: 64,
            trust_forwarded_for: false,
            max_replays: 4,
            tail_per_symbol: 10_000,
            tail_age: Duration::from_secs(300),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::new(format!("api.{key}"), "must be positive"))
            }
        };
        positive("rate_per_second", self.rate_per_second > 0.0)?;
        positive("ip_rate_per_second", self.ip_rate_per_second > 0.0)?;
        positive("burst", self.burst > 0)?;
        positive("ip_burst", self.ip_burst > 0)?;
        positive("body_limit_bytes", self.body_limit_bytes > 0)?;
        positive("max_concurrent_queries", self.max_concurrent_queries > 0)?;
        positive("max_replays", self.max_replays > 0)?;
        positive("queue_timeout", !self.queue_timeout.is_zero())?;
        positive("tail_per_symbol", self.tail_per_symbol > 0)?;
        if self.default_limit == 0 || self.default_limit > self.max_limit {
            return Err(ConfigError::new(
                "api.default_limit",
                format!("must be between 1 and api.max_limit ({})", self.max_limit),
            ));
        }
        if !self.flight_listen.is_empty()
            && self.flight_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "api.flight_listen",
                format!("'{}' is not an address (host:port)", self.flight_listen),
            ));
        }
        if self.max_limit > self.max_query_limit {
            return Err(ConfigError::new(
                "api.max_limit",
                "must not exceed api.max_query_limit",
            ));
        }
        Ok(())
    }
}

/// One key in `[[api.keys]]` or in the keys file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who holds it (logged and counted; never the key itself).
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// This key's own rate limit.
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The keys file: `[[keys]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub keys: Vec<ApiKeyConfig>,
}

/// `[catalog_server]`: `k2 catalog serve`, the Iceberg REST catalog over K2's SQL catalog
/// (its keys and rate limits are the `[api]` section's).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    pub listen: String,
    /// Hand the warehouse's S3 keys to every client that loads a table (a key with the
    /// `read` scope then reads the bucket with them). Off: clients bring their own
    /// credentials for the bucket; the endpoint, region and addressing style are always
    /// handed out.
    pub vend_credentials: bool,
}

impl Default for CatalogServerConfig {
    fn default() -> Self {
        CatalogServerConfig {
            listen: "127.0.0.1:8181".into(),
            vend_credentials: false,
        }
    }
}

/// What a key may do: `read` (data endpoints; listing and loading tables of `k2 catalog
/// serve`), `sql` (`/v1/sql`), `catalog` (creating and committing to tables of `k2 catalog
/// serve`), `admin` (everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Sql,
    Catalog,
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Sql => "sql",
            Scope::Catalog => "catalog",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "read" => Ok(Scope::Read),
            "sql" => Ok(Scope::Sql),
            "catalog" => Ok(Scope::Catalog),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!(
                "unknown scope '{text}': use read, sql, catalog or admin"
            )),
        }
    }
}

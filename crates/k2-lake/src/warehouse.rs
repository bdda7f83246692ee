//! `[warehouse]`: where the tables' files live — a local directory (the default) or an
//! S3-compatible bucket — and the clients that reach them.
//!
//! Iceberg writes data, manifests and metadata through its own storage (native on a local
//! disk, OpenDAL's S3 service on a bucket); the query engine reads, and maintenance lists
//! and deletes, through DataFusion's object store. Both are configured from the same
//! properties: the catalog hands them to every table's `FileIO`, and [`Files::of`] builds
//! the object store from that table's `FileIO`, so a reader needs nothing but the table.
//!
//! The warehouse location is used when a table is created: a table keeps the location it
//! was created at, so pointing `warehouse.uri` elsewhere leaves existing tables where they
//! are (their files are reached at the location the catalog records).

use k2_model::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use iceberg::io::{FileIO, LocalFsStorageFactory, StorageFactory};
use iceberg_storage_opendal::OpenDalStorageFactory;
use k2_model::ConfigError;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Deserialize;

use crate::error::{LakeError, Result};

// The Iceberg FileIO properties of S3 storage (the names every Iceberg implementation reads).
const ENDPOINT: &str = "s3.endpoint";
const REGION: &str = "s3.region";
const ACCESS_KEY_ID: &str = "s3.access-key-id";
const SECRET_ACCESS_KEY: &str = "s3.secret-access-key";
const PATH_STYLE: &str = "s3.path-style-access";
const DISABLE_CONFIG_LOAD: &str = "s3.disable-config-load";
const DISABLE_EC2_METADATA: &str = "s3.disable-ec2-metadata";

/// `[warehouse]`: the tables' files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// Empty: the `warehouse` directory in the data directory. Else `s3://BUCKET[/PREFIX]`.
    pub uri: String,
    pub s3: S3Options,
}

/// `[warehouse.s3]`: how to reach the bucket of an `s3://` warehouse.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// The S3 service's URL (`http://127.0.0.1:9000` for a local server); empty: AWS.
    pub endpoint: String,
    pub region: String,
    /// Empty: the credentials of the environment (`AWS_ACCESS_KEY_ID`, …, profiles).
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Buckets addressed as `ENDPOINT/BUCKET/KEY` (most self-hosted servers) instead of
    /// `BUCKET.ENDPOINT/KEY` (AWS).
    pub path_style: bool,
    /// The longest one request may take (each retry is bounded on its own).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            path_style: false,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl WarehouseConfig {
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        if !self.uri.is_empty() {
            bucket_and_prefix(&self.uri).map_err(|why| ConfigError::new("warehouse.uri", why))?;
        }
        if self.s3.access_key_id.is_empty() != self.s3.secret_access_key.is_empty() {
            return Err(ConfigError::new(
                "warehouse.s3",
                "access_key_id and secret_access_key are set together or not at all",
            ));
        }
        let endpoint = &self.s3.endpoint;
        let http = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !http {
            return Err(ConfigError::new(
                "warehouse.s3.endpoint",
                format!("'{}' is not an http(s):// URL", self.s3.endpoint),
            ));
        }
        if self.s3.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "warehouse.s3.request_timeout",
                "must be more than zero",
            ));
        }
        Ok(())
    }

    /// The warehouse this names: the bucket of `uri`, or `local_dir` when it is empty.
    pub fn open(&self, local_dir: &Path) -> Result<Warehouse> {
        if self.uri.is_empty() {
            Warehouse::local(local_dir)
        } else {
            Warehouse::s3(&self.uri, &self.s3)
        }
    }
}

/// `s3://BUCKET[/PREFIX]` split; an error names what is wrong.
fn bucket_and_prefix(uri: &str) -> std::result::Result<(&str, &str), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("'{uri}' is not an s3://BUCKET[/PREFIX] URI"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(format!(
            "'{bucket}' is not a bucket name (3 to 63 of a-z 0-9 . -)"
        ));
    }
    Ok((bucket, prefix.trim_end_matches('/')))
}

/// Where new tables go, and the storage and properties their files are written with.
#[derive(Clone)]
pub struct Warehouse {
    location: String,
    storage: Arc<dyn StorageFactory>,
    props: HashMap<String, String>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Warehouse {
    /// A warehouse in the local directory `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<Warehouse> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LakeError::io(format!("creating warehouse {}", dir.display()), e))?;
        let dir: PathBuf = std::path::absolute(dir)
            .map_err(|e| LakeError::io(format!("resolving {}", dir.display()), e))?;
        Ok(Warehouse {
            location: format!("file://{}", dir.display()),
            storage: Arc::new(LocalFsStorageFactory),
            props: HashMap::new(),
        })
    }

    /// A warehouse at `s3://BUCKET[/PREFIX]`, reached as `s3` says.
    pub fn s3(uri: &str, s3: &S3Options) -> Result<Warehouse> {
        let (bucket, prefix) = bucket_and_prefix(uri).map_err(LakeError::InvalidArgument)?;
        let mut props = HashMap::from([
            (REGION.to_string(), s3.region.clone()),
            (PATH_STYLE.to_string(), s3.path_style.to_string()),
        ]);
        if !s3.endpoint.is_empty() {
            props.insert(ENDPOINT.into(), s3.endpoint.trim_end_matches('/').into());
        }
        if !s3.access_key_id.is_empty() {
            // Keys given: nothing is looked up in profiles or the instance metadata service
            // (which would mean a network call to an address that is not the endpoint).
            props.insert(ACCESS_KEY_ID.into(), s3.access_key_id.expose().to_string());
            props.insert(
                SECRET_ACCESS_KEY.into(),
                s3.secret_access_key.expose().to_string(),
            );
            props.insert(DISABLE_CONFIG_LOAD.into(), "true".into());
            props.insert(DISABLE_EC2_METADATA.into(), "true".into());
        }
        props.insert(TIMEOUT.into(), s3.request_timeout.as_millis().to_string());
        let location = match prefix {
            "" => format!("s3://{bucket}"),
            p => format!("s3://{bucket}/{p}"),
        };
        Ok(Warehouse {
            location,
            storage: Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }),
            props,
        })
    }

    /// `file:///…` or `s3://…`: where the catalog creates tables.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn storage(&self) -> Arc<dyn StorageFactory> {
        self.storage.clone()
    }

    /// The properties every table's `FileIO` is given.
    pub fn props(&self) -> &HashMap<String, String> {
        &self.props
    }

    /// What another engine needs to reach the files, in the property names every Iceberg
    /// implementation reads: the endpoint, region and addressing style, and the keys when
    /// `with_keys` (a catalog vending its credentials).
    pub fn client_props(&self, with_keys: bool) -> HashMap<String, String> {
        let mut shared = vec![ENDPOINT, REGION, PATH_STYLE];
        if with_keys {
            shared.extend([ACCESS_KEY_ID, SECRET_ACCESS_KEY]);
        }
        shared
            .into_iter()
            .filter_map(|k| self.props.get(k).map(|v| (k.to_string(), v.clone())))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    pub fn is_local(&self) -> bool {
        self.location.starts_with("file:")
    }
}

/// K2's own property: the request timeout, in milliseconds, of the object store reading
/// the files (Iceberg's S3 storage keeps its own per-attempt timeout).
const TIMEOUT: &str = "k2.s3.request-timeout-ms";

/// A table's files as objects: listing, reading and deleting them by their locations.
#[derive(Clone)]
pub struct Files {
    url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket` or `file://`: what a location starts with before its object path.
    base: String,
}

/// The object stores made so far, by bucket and properties: one HTTP client (and its
/// connection pool) per bucket for the life of the process.
static STORES: LazyLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> =
    LazyLock::new(Default::default);

impl Files {
    /// The object store holding the files at `location` (any file of the table, or the
    /// table's own location), configured from the table's `io`.
    pub fn of(io: &FileIO, location: &str) -> Result<Files> {
        let url = url::Url::parse(location)
            .map_err(|e| LakeError::InvalidArgument(format!("file location '{location}': {e}")))?;
        match url.scheme() {
            "file" => Ok(Files {
                url: ObjectStoreUrl::local_filesystem(),
                store: local_store(),
                base: "file://".into(),
            }),
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| {
                    LakeError::InvalidArgument(format!("'{location}' names no bucket"))
                })?;
                let props = io.config().props();
                let mut key: Vec<String> = props
                    .iter()
                    .filter(|(k, _)| k.starts_with("s3.") || k.starts_with("k2."))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                key.sort();
                key.push(bucket.to_string());
                let key = key.join("\n");
                let mut stores = STORES.lock().expect("object store registry lock");
                let store = match stores.get(&key) {
                    Some(store) => store.clone(),
                    None => {
                        let store = s3_store(bucket, props)?;
                        stores.insert(key, store.clone());
                        store
                    }
                };
                let base = format!("s3://{bucket}");
                Ok(Files {
                    url: ObjectStoreUrl::parse(&base)
                        .map_err(|e| LakeError::engine(format!("object store {base}"), e))?,
                    store,
                    base,
                })
            }
            other => Err(LakeError::InvalidArgument(format!(
                "'{location}': K2 reads local (file://) and S3 (s3://) warehouses, not {other}://"
            ))),
        }
    }

    /// The store's URL, as DataFusion registers it.
    pub fn url(&self) -> &ObjectStoreUrl {
        &self.url
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of a file location of this store.
    pub fn path(&self, location: &str) -> Result<ObjectPath> {
        let url = url::Url::parse(location)
            .map_err(|e| LakeError::InvalidArgument(format!("file location '{location}': {e}")))?;
        ObjectPath::from_url_path(url.path())
            .map_err(|e| LakeError::InvalidArgument(format!("file location '{location}': {e}")))
    }

    /// The location of an object path of this store.
    pub fn location(&self, path: &ObjectPath) -> String {
        format!("{}/{path}", self.base)
    }

    /// The objects under the directory `dir` (a location), at any depth, last modified
    /// before `before`.
    pub async fn older_than(&self, dir: &str, before: SystemTime) -> Result<Vec<ObjectPath>> {
        let prefix = self.path(dir.trim_end_matches('/'))?;
        let listing = |e: object_store::Error| LakeError::storage(format!("listing {dir}"), e);
        let mut out = Vec::new();
        let mut objects = self.store.list(Some(&prefix));
        loop {
            match objects.try_next().await {
                Ok(Some(meta)) => {
                    if SystemTime::from(meta.last_modified) < before {
                        out.push(meta.location);
                    }
                }
                Ok(None) => break,
                // A local directory that was never made holds nothing.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(listing(e)),
            }
        }
        Ok(out)
    }

    /// Deletes the object at `path`; an object already gone is not an error.
    pub async fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(LakeError::storage(
                format!("deleting {}", self.location(path)),
                e,
            )),
        }
    }
}

fn local_store() -> Arc<dyn ObjectStore> {
    static LOCAL: LazyLock<Arc<dyn ObjectStore>> =
        LazyLock::new(|| Arc::new(LocalFileSystem::new()));
    LOCAL.clone()
}

/// An S3 client for `bucket` from Iceberg's FileIO properties.
fn s3_store(bucket: &str, props: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let get = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
    let timeout = get(TIMEOUT)
        .parse()
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30));
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_client_options(
            ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(5))
                .with_allow_http(true),
        )
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: timeout * 2,
            ..Default::default()
        });
    if !get(REGION).is_empty() {
        builder = builder.with_region(get(REGION));
    }
    if !get(ENDPOINT).is_empty() {
        builder = builder.with_endpoint(get(ENDPOINT));
    }
    if !get(ACCESS_KEY_ID).is_empty() {
        builder = builder
            .with_access_key_id(get(ACCESS_KEY_ID))
            .with_secret_access_key(get(SECRET_ACCESS_KEY));
    }
    let path_style = matches!(get(PATH_STYLE), "true" | "t" | "1" | "on");
    builder = builder.with_virtual_hosted_style_request(!path_style);
    let store = builder
        .build()
        .map_err(|e| LakeError::storage(format!("the S3 client of bucket {bucket}"), e))?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warehouse_uri_is_checked() {
        assert_eq!(
            bucket_and_prefix("s3://k2-lake/prod/"),
            Ok(("k2-lake", "prod"))
        );
        assert_eq!(bucket_and_prefix("s3://k2-lake"), Ok(("k2-lake", "")));
        assert!(
            bucket_and_prefix("gs://k2")
                .unwrap_err()
                .contains("not an s3://")
        );
        assert!(
            bucket_and_prefix("s3://K2_Lake/x")
                .unwrap_err()
                .contains("not a bucket name")
        );
        let bad = WarehouseConfig {
            uri: "s3://lake".into(),
            s3: S3Options {
                access_key_id: "id".into(),
                ..Default::default()
            },
        };
        assert_eq!(bad.validate().unwrap_err().key, "warehouse.s3");
    }

    #[test]
    fn locations_map_to_object_paths_and_back() {
        let io = FileIO::new_with_fs();
        let files = Files::of(&io, "file:///data/warehouse/t").unwrap();
        let path = files
            .path("file:///data/warehouse/t/data/a%20b.parquet")
            .unwrap();
        assert_eq!(path.as_ref(), "data/warehouse/t/data/a b.parquet");
        assert_eq!(
            files.location(&path),
            "file:///data/warehouse/t/data/a b.parquet"
        );
    }
}

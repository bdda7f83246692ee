//! `k2 serve`: the query API over the lake, with readiness checks of the catalog, the
//! storage under it and the log.

use std::sync::Arc;

use anyhow::Context;
use k2_api::{Backends, Check};
use k2_lake::LakeTable;
use k2_lake::query::QueryEngine;
use k2_log::{AnyLog, Log};

use crate::app::{self, App};
use crate::config::Config;
use crate::telemetry;

pub async fn run(config: Config, listen: Option<String>) -> anyhow::Result<()> {
    let mut api = config.api.clone();
    if let Some(l) = listen {
        api.listen = l;
    }
    let metrics = telemetry::recorder()?;
    let catalog = app::catalog(&config).await?;
    let engine = Arc::new(QueryEngine::new(catalog.clone(), config.query_options())?);
    let backends = Backends {
        engine,
        checks: vec![
            ("catalog", catalog_check(catalog.clone())),
            ("storage", storage_check(catalog)),
            ("log", log_check(config.clone())),
        ],
        metrics: Some(metrics),
    };
    k2_api::serve(
        api,
        backends,
        |addr| eprintln!("query API on http://{addr} (documents at /docs)"),
        app::shutdown_signal(),
    )
    .await
    .context("serving the query API")?;
    Ok(())
}

fn catalog_check(catalog: Arc<dyn iceberg::Catalog>) -> Check {
    Arc::new(move || {
        let catalog = catalog.clone();
        Box::pin(async move {
            let namespaces = catalog
                .list_namespaces(None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{} namespaces", namespaces.len()))
        })
    })
}

/// The storage holds the current metadata file of the trades table.
fn storage_check(catalog: Arc<dyn iceberg::Catalog>) -> Check {
    Arc::new(move || {
        let catalog = catalog.clone();
        Box::pin(async move {
            let table = catalog
                .load_table(&LakeTable::Trades.ident())
                .await
                .map_err(|e| e.to_string())?;
            let location = table
                .metadata_location()
                .ok_or("the trades table has no metadata file")?
                .to_string();
            match table.file_io().exists(&location).await {
                Ok(true) => Ok(location),
                Ok(false) => Err(format!("{location} is missing")),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// The log answers a listing of its topics. Opened on first use, so the API starts (and
/// answers from the lake) while a Kafka cluster is unreachable.
fn log_check(config: Config) -> Check {
    let log: Arc<tokio::sync::Mutex<Option<AnyLog>>> = Arc::default();
    Arc::new(move || {
        let (log, config) = (log.clone(), config.clone());
        Box::pin(async move {
            let mut slot = log.lock().await;
            if slot.is_none() {
                *slot = Some(App::open(config).await.map_err(|e| format!("{e:#}"))?.log);
            }
            let log = slot.as_ref().expect("opened above");
            let topics = log.topics().await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{} backend, {} topics",
                log.backend(),
                topics.len()
            ))
        })
    })
}

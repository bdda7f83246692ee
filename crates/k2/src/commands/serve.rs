//! `k2 serve`: the query API over the lake, with readiness checks of the catalog, the
//! storage under it and the log.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use k2_api::{Backends, Check};
use k2_lake::LakeTable;
use k2_lake::query::QueryEngine;
use k2_lake::tail::Tail;
use k2_log::{AnyLog, DeadLetterStore, Log};

use crate::app::{self, App};
use crate::config::Config;
use crate::{signal, telemetry};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    listen: ListenArgs,
}

/// Where the API and Flight SQL listen.
#[derive(Args)]
pub struct ListenArgs {
    /// Overrides `api.listen`.
    #[arg(long)]
    listen: Option<String>,
    /// Arrow Flight SQL here too (overrides `api.flight_listen`).
    #[arg(long)]
    flight_listen: Option<String>,
}

impl ListenArgs {
    /// The API's configuration with these addresses.
    pub fn apply(self, config: &Config) -> k2_api::config::ApiConfig {
        let mut api = config.api.clone();
        if let Some(l) = self.listen {
            api.listen = l;
        }
        if let Some(l) = self.flight_listen {
            api.flight_listen = l;
        }
        api
    }
}

/// Says where the API (and Flight SQL) answer, on standard error.
pub fn announce(addr: std::net::SocketAddr, flight: Option<std::net::SocketAddr>) {
    eprintln!("query API on http://{addr} (documents at /docs)");
    if let Some(flight) = flight {
        eprintln!("Flight SQL on grpc://{flight}");
    }
}

pub async fn run(config: Config, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let api = args.listen.apply(&config);
    let metrics = telemetry::recorder(&config.data_dir)?;
    let Some(catalog) = signal::unless_stopped(app::catalog(&config))
        .await
        .transpose()?
    else {
        return Ok(signal::stopped_before_start("serve"));
    };
    let degrader =
        crate::degradation::Degrader::start(&config.degradation, &config.data_dir, signal::stop());
    let dlq = match DeadLetterStore::open(&config.dlq_path(), config.dlq.max_entries) {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(error = %e, "no dead-letter store: /v1/dead-letters answers 404");
            None
        }
    };
    let mut backends = backends(&config, catalog, metrics, None, None)?;
    backends.dead_letters = dlq;
    backends.degradation = degrader.as_ref().map(crate::degradation::Degrader::for_api);
    k2_api::serve(api, backends, announce, signal::stop())
        .await
        .context("serving the query API")?;
    Ok(ExitCode::SUCCESS)
}

/// What the API answers from: the engine over `catalog`, readiness checks of the catalog,
/// its storage and the log (`log` when the process holds it open, else opened on first
/// check), `/metrics`, and the live tail when there is one.
pub fn backends(
    config: &Config,
    catalog: Arc<dyn iceberg::Catalog>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    log: Option<AnyLog>,
    tail: Option<Arc<Tail>>,
) -> anyhow::Result<Backends> {
    Ok(Backends {
        engine: Arc::new(
            QueryEngine::new(catalog.clone(), config.query.clone())?
                .with_ledger(config.state_dir()),
        ),
        checks: vec![
            ("catalog", catalog_check(catalog.clone())),
            ("storage", storage_check(catalog)),
            ("log", log_check(config.clone(), log)),
        ],
        metrics: Some(metrics),
        tail,
        degradation: None,
        dead_letters: None,
    })
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
fn log_check(config: Config, open: Option<AnyLog>) -> Check {
    let log: Arc<tokio::sync::Mutex<Option<AnyLog>>> = Arc::new(tokio::sync::Mutex::new(open));
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

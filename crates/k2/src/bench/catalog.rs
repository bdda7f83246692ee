//! `k2 bench catalog`: the Iceberg REST catalog (`k2 catalog serve`, in this process, on
//! loopback) beside the SQL catalog under it, on the same lake: loading a table and
//! committing a metadata update, p50/p99 over many runs of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::{Catalog, TableRequirement, TableUpdate};
use k2_api::{ApiConfig, ApiKeyConfig, CatalogBackend, Scope};
use k2_lake::LakeTable;
use k2_lake::table_commit::TableCommitter;
use tokio_util::sync::CancellationToken;

use super::query::percentiles;
use crate::app::App;

pub async fn run(app: &App, runs: usize) -> anyhow::Result<()> {
    let config = &app.config;
    let direct = crate::app::catalog(config).await?;
    let direct_committer = config
        .catalog
        .committer(direct.clone(), &config.catalog_path())
        .await?;

    let key = k2_api::generate_key();
    let api = ApiConfig {
        keys: vec![ApiKeyConfig {
            name: "bench".into(),
            sha256: k2_api::digest_hex(&key),
            scopes: vec![Scope::Catalog],
            rate_per_second: Some(1e9),
            burst: Some(1_000_000_000),
        }],
        ..ApiConfig::default()
    };
    let backend = CatalogBackend {
        catalog: direct.clone(),
        committer: direct_committer.clone(),
        table_config: config.warehouse()?.client_props(false),
        metrics: None,
    };
    let stop = CancellationToken::new();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(k2_api::serve_catalog(
        api,
        "127.0.0.1:0",
        backend,
        move |addr| {
            let _ = addr_tx.send(addr);
        },
        stop.clone(),
    ));
    let addr = tokio::time::timeout(Duration::from_secs(10), addr_rx).await??;
    let mut rest_config = config.clone();
    rest_config.catalog.uri = format!("http://{addr}");
    rest_config.catalog.token = key.into();
    let rest = crate::app::catalog(&rest_config).await?;
    let rest_committer = rest_config
        .catalog
        .committer(rest.clone(), &config.catalog_path())
        .await?;

    println!(
        "Iceberg REST catalog (k2 catalog serve on {addr}) beside the SQL catalog under it, {runs} runs each, ms"
    );
    println!("{:44} {:>8} {:>8}", "", "p50", "p99");
    for (name, catalog, committer) in [
        ("SQL catalog (direct)", &direct, &direct_committer),
        ("REST catalog (k2 catalog serve)", &rest, &rest_committer),
    ] {
        let (p50, p99) = percentiles(&loads(catalog, runs).await?);
        println!(
            "{:44} {p50:>8.2} {p99:>8.2}",
            format!("load trades: {name}")
        );
        let (p50, p99) = percentiles(&commits(catalog, committer, runs.div_ceil(4)).await?);
        println!("{:44} {p50:>8.2} {p99:>8.2}", format!("commit: {name}"));
    }
    stop.cancel();
    server.await??;
    Ok(())
}

async fn loads(catalog: &Arc<dyn Catalog>, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let ident = LakeTable::Trades.ident();
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        catalog.load_table(&ident).await?;
        took.push(started.elapsed());
    }
    Ok(took)
}

/// A table property set, with the table's current metadata as its requirement (the check
/// every commit makes): the catalog's cost of a commit without the data files'.
async fn commits(
    catalog: &Arc<dyn Catalog>,
    committer: &TableCommitter,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let ident = LakeTable::Trades.ident();
    let mut took = Vec::with_capacity(runs);
    for i in 0..runs {
        let table = catalog.load_table(&ident).await?;
        let requirement = TableRequirement::UuidMatch {
            uuid: table.metadata().uuid(),
        };
        let update = TableUpdate::SetProperties {
            updates: [("k2.bench.commit".to_string(), i.to_string())].into(),
        };
        let started = Instant::now();
        committer
            .commit(&ident, vec![requirement], vec![update])
            .await?;
        took.push(started.elapsed());
    }
    Ok(took)
}

//! `k2 demo`: the main job on the bundled sample. Real ASX ticks go into the log, land in
//! the lake exactly once, and real questions get answered. Running it again changes
//! nothing: the ingest resumes from its checkpoints and the writer from its snapshots.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use clap::Args;
use k2_lake::LakeTable;
use k2_lake::query::BarInterval;

use k2_api::present;

use crate::app::App;
use crate::config::Config;
use crate::memory;
use crate::output::{Format, render, to_batches};
use crate::sample;
use crate::{signal, telemetry};

mod overload;

#[derive(Args)]
pub struct DemoArgs {
    /// A directory in the sample's layout (default: the sample built into k2, unpacked
    /// into the data directory).
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Show degradation instead: a burst from a local exchange beyond what a small-batch
    /// writer keeps up with, the levels rising and falling, what was deferred, and every
    /// record landed once (in `overload/` under the data directory).
    #[arg(long, conflicts_with = "sample")]
    overload: bool,
    /// Then serve the API and the web page over the demo lake until stopped, and print the
    /// page's address (with a key made for this run, when none is configured).
    #[arg(long, conflicts_with = "overload")]
    serve: bool,
    #[command(flatten)]
    listen: super::serve::ListenArgs,
}

pub async fn run(config: Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.overload {
        return overload::run(config).await;
    }
    let sample = match args.sample {
        Some(dir) => sample::check(&dir)?,
        None => sample::unpack(&config.data_dir.join("sample"))?,
    };
    // Serving shows the writer's series too, so the recorder is in place before it runs.
    let metrics = if args.serve {
        Some(telemetry::recorder(&config.data_dir)?)
    } else {
        None
    };
    let app = App::open(config).await?;
    let started = Instant::now();
    println!(
        "K2 demo: ASX equities sample, 10–14 March 2014 (data in {})\n",
        app.config.data_dir.display()
    );
    println!("1. Ingestion: CSV files → the durable log");
    let ingest = app.ingest_asx(&sample).await?;
    println!(
        "   {} rows read = {} appended to the log + {} dead-lettered",
        ingest.rows_read(),
        ingest.produced(),
        ingest.dead_lettered()
    );

    println!("\n2. Storage: the log → Iceberg tables, exactly once");
    let written = app.consume(true).await?;
    let engine = app.engine().await?;
    let committed: u64 = written.rows_committed.values().sum();
    let audit = k2_lake::audit::read(&app.config.audit_path())?;
    for table in LakeTable::ALL {
        let commits: Vec<_> = audit
            .iter()
            .filter(|e| e.table == table.qualified())
            .collect();
        println!(
            "   {:28} {:>8} rows  {:>3} commits  {:>3} files  {:>6.1} MB",
            table.qualified(),
            engine.count(table, None).await?,
            commits.len(),
            commits.iter().map(|e| e.files).sum::<u64>(),
            commits.iter().map(|e| e.bytes).sum::<u64>() as f64 / 1e6
        );
    }

    println!("\n3. Monitoring: is every record accounted for, is the data complete?");
    let letters = app.dlq.len()?;
    // Accounting: nothing read goes missing between the file and the table.
    let file_ok = ingest.rows_read() == ingest.produced() + ingest.dead_lettered();
    let lake_ok =
        written.records_consumed == committed + written.dead_lettered + written.duplicates_dropped;
    let mark = |ok: bool| if ok { "holds" } else { "DOES NOT HOLD" };
    println!(
        "   files: {} rows read = {} appended + {} dead-lettered ({})",
        ingest.rows_read(),
        ingest.produced(),
        ingest.dead_lettered(),
        mark(file_ok)
    );
    println!(
        "   lake:  {} records read from the log = {} stored + {} dead-lettered + {} duplicates dropped ({})",
        written.records_consumed,
        committed,
        written.dead_lettered,
        written.duplicates_dropped,
        mark(lake_ok)
    );
    if !(file_ok && lake_ok) {
        bail!("the record accounting does not balance (see above)");
    }
    println!("   dead letters stored: {letters} (k2 dlq list)");
    println!(
        "   the completeness ledger per stream (k2 query completeness, k2 query gaps, GET /v1/quality/summary):"
    );
    let ledger = engine.sql(
        "SELECT table, symbol, first_sequence, last_sequence, received, gaps, late_fills, missing, lost, duplicates_dropped FROM quality.streams ORDER BY 1 DESC, 2",
    )
    .await?
    .batches;
    render(&ledger, Format::Table, None)?;

    println!("\n4. Query: answers from the lake");
    println!("   BHP daily summaries (ASX trading days, exact decimals; VWAP rounded half-even)");
    let mut rows = Vec::new();
    for day in 10..=14 {
        let date = chrono::NaiveDate::from_ymd_opt(2014, 3, day).expect("valid date");
        if let Some(s) = engine.daily_summary("BHP", date, Some("ASX"), None).await? {
            rows.push(present::SummaryRow::from(&s));
        }
    }
    render(&to_batches(&rows)?, Format::Table, None)?;
    println!(
        "   BHP 1h bars, 2014-03-10 (bar start in UTC; 10:00 AEDT is 23:00 UTC the day before)"
    );
    let date = chrono::NaiveDate::from_ymd_opt(2014, 3, 10).expect("valid date");
    let bars = engine
        .ohlcv("BHP", BarInterval::H1, date, date, Some("ASX"), None)
        .await?;
    let bar_rows: Vec<present::BarRow> = bars.iter().map(present::BarRow::from).collect();
    render(&to_batches(&bar_rows)?, Format::Table, None)?;
    println!("   Snapshots of market_data.trades (time travel: k2 query trades --snapshot ID)");
    let snaps = engine.snapshots(LakeTable::Trades).await?;
    let snap_rows: Vec<present::SnapshotRow> =
        snaps.iter().map(present::SnapshotRow::from).collect();
    render(&to_batches(&snap_rows)?, Format::Table, None)?;
    let dupes = scalar(
        &engine
            .sql("SELECT count(*) - count(DISTINCT message_id) FROM trades")
            .await?
            .batches,
    )?;
    println!("   duplicate trades by message id in the table: {dupes}");

    println!(
        "\nDone in {:.2}s: {} rows appended to the log, {} rows committed to the lake this run; peak memory {} MiB.",
        started.elapsed().as_secs_f64(),
        ingest.produced(),
        committed,
        memory::peak_rss_mib().map_or_else(|| "unknown".to_string(), |m| m.to_string())
    );
    if let Some(metrics) = metrics {
        return serve(app, metrics, args.listen).await;
    }
    println!("Next:");
    println!(
        "   k2 query summary BHP 2014-03-12 --exchange ASX | k2 query ohlcv BHP --interval 5m --from 2014-03-11 --exchange ASX"
    );
    println!(
        "   k2 serve --flight-listen 127.0.0.1:8815   # the REST API and Arrow Flight SQL over this lake"
    );
    println!(
        "   k2 demo --serve                           # this lake on a web page: bars, summary, quality, pipeline, time travel"
    );
    println!(
        "   notebooks/walkthrough.ipynb               # REST, Flight SQL, charts, time travel, replay, PyIceberg, DuckDB, the ledger"
    );
    Ok(ExitCode::SUCCESS)
}

/// Section 5: the API and the page over the demo lake until stopped. Without a configured
/// key, one is made for this run and put in the page's link (in the fragment, which the
/// browser keeps to itself).
async fn serve(
    app: App,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    listen: super::serve::ListenArgs,
) -> anyhow::Result<ExitCode> {
    let mut api = listen.apply(&app.config);
    let key = (api.keys.is_empty() && api.keys_file.is_empty()).then(|| {
        let key = k2_api::generate_key();
        api.keys.push(k2_api::ApiKeyConfig {
            name: "demo".into(),
            sha256: k2_api::digest_hex(&key),
            scopes: vec![k2_api::Scope::Read, k2_api::Scope::Sql],
            rate_per_second: None,
            burst: None,
        });
        key
    });
    let catalog = app.catalog().await?;
    let mut backends =
        super::serve::backends(&app.config, catalog, metrics, Some(app.log.clone()), None)?;
    backends.dead_letters = Some(app.dlq.clone());
    let announce = move |addr: std::net::SocketAddr, flight: Option<std::net::SocketAddr>| {
        let view = "exchange=ASX&symbol=BHP&interval=5m&from=2014-03-12&to=2014-03-12";
        println!("\n5. The page: bars, daily summary, data quality, pipeline health, time travel");
        match &key {
            Some(key) => println!("   http://{addr}/#key={key}&{view}"),
            None => println!("   http://{addr}/#{view}   (it asks for one of the configured keys)"),
        }
        println!("   the API at http://{addr}/v1 (documents at /docs)");
        if let Some(flight) = flight {
            println!("   Flight SQL at grpc://{flight}");
        }
        println!(
            "   notebooks/walkthrough.ipynb asks the same lake from Python. Serving until Ctrl-C."
        );
        // The link is read by whoever started the demo; a pipe must not hold it back.
        use std::io::Write;
        let _ = std::io::stdout().flush();
    };
    k2_api::serve(api, backends, announce, signal::stop())
        .await
        .context("serving the demo lake")?;
    Ok(ExitCode::SUCCESS)
}

fn scalar(batches: &[RecordBatch]) -> anyhow::Result<i64> {
    let b = batches.first().context("empty result")?;
    Ok(b.column(0).as_primitive::<Int64Type>().value(0))
}

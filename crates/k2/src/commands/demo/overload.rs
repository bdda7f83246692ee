//! `k2 demo --overload`: degradation shown in the terminal. A local exchange (the Binance
//! protocol on 127.0.0.1) sends a burst far beyond what a writer committing every 500 rows
//! keeps up with; the levels rise, quotes wait in the log, the level falls as the backlog
//! drains, and every record lands exactly once.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use k2_ingest::simulator::{Simulator, Step};
use k2_lake::LakeTable;
use k2_lake::tail::{Tail, TailConfig};
use k2_log::Log;
use k2_pipeline::{Level, Thresholds};
use tokio_util::sync::CancellationToken;

use crate::app::{self, App};
use crate::config::Config;
use crate::degradation::Degrader;

/// Trades and as many quotes in the burst.
const BURST: usize = 30_000;

pub async fn run(mut config: Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir.join("overload");
    if dir.exists() {
        // The demo's own directory, made by the last run.
        std::fs::remove_dir_all(&dir)?;
    }
    config.data_dir = dir;
    config.writer.max_rows = 500;
    config.writer.max_age = Duration::from_millis(200);
    config.writer.compact_every = Duration::ZERO;
    let d = &mut config.degradation;
    d.check_every = Duration::from_millis(100);
    d.cooldown = Duration::from_secs(1);
    d.lag_records = Thresholds {
        enter: [2_000.0, 5_000.0, 15_000.0, 1e12],
        recover: 0.5,
    };
    let out_of_the_way = Thresholds {
        enter: [1e9, 2e9, 3e9, 4e9],
        recover: 0.5,
    };
    (d.commit_seconds, d.memory_share, d.api_queue_share) = (
        out_of_the_way.clone(),
        out_of_the_way.clone(),
        out_of_the_way,
    );

    let mut frames = Vec::with_capacity(2 * BURST);
    for i in 1..=BURST {
        frames.push(format!(
            r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":{i},"p":"100.5","q":"0.01","T":1700000000000,"m":true,"M":true}}}}"#
        ));
        frames.push(format!(
            r#"{{"stream":"btcusdt@bookTicker","data":{{"u":{i},"s":"BTCUSDT","b":"100.10","B":"1.5","a":"100.20","A":"2.5"}}}}"#
        ));
    }
    let exchange = Simulator::start(vec![vec![Step::Burst(Arc::new(frames))], vec![]]).await?;
    let venue = k2_ingest::Venue::Binance;
    let (mut feed, reconnect) =
        config
            .feeds
            .feed(venue, Some(vec!["BTCUSDT".into()]), Some(exchange.url()))?;
    feed.quotes = true;

    println!(
        "K2 demo --overload: {BURST} trades and {BURST} quotes in one burst from a local exchange ({}),\n\
         a writer committing every 500 rows, degradation thresholds on the writer's lag of 2 000 / 5 000 / 15 000 records\n\
         (soft: compaction waits; graceful: quotes wait in the log; aggressive: SQL and long ranges get 503)\n",
        exchange.url()
    );
    let app = Arc::new(App::open(config.clone()).await?);
    let catalog = app.catalog().await?;
    for spec in k2_ingest::topic_specs(
        k2_model::AssetClass::Crypto,
        venue.exchange(),
        config.log.partitions,
    ) {
        app.log.ensure_topic(&spec).await?;
    }
    let stop = CancellationToken::new();
    let degrader = Degrader::start(&config.degradation, &config.data_dir, stop.clone())
        .expect("degradation is enabled for the demo");
    let pressure = degrader.pressure.clone();
    let stop_feed = CancellationToken::new();
    let capture = tokio::spawn({
        let (app, stop_feed) = (app.clone(), stop_feed.clone());
        async move { app.capture(feed, reconnect, stop_feed).await }
    });
    let tail = Arc::new(Tail::new(TailConfig::default()));
    let (follower, writer) =
        app::follow_and_write(&app, &catalog, &tail, Some(&degrader), &stop).await?;
    let engine = app.engine().await?;

    println!("   time   level        writer lag   quotes waiting in the log");
    let started = Instant::now();
    let mut last_level = None;
    let mut deferred_at: BTreeMap<Level, u64> = BTreeMap::new();
    let mut levels = Vec::new();
    let mut printed = Instant::now() - Duration::from_secs(1);
    let landed = loop {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the burst did not land within 5 minutes");
        }
        let level = pressure.level();
        let (lag, deferred) = pressure.lag();
        let entry = deferred_at.entry(level).or_default();
        *entry = (*entry).max(deferred);
        if last_level != Some(level) || printed.elapsed() >= Duration::from_millis(500) {
            println!(
                "  {:5.1}s  {:11}  {:>10}   {:>10}",
                started.elapsed().as_secs_f64(),
                format!("{} {}", level as u8, level.as_str()),
                lag,
                deferred
            );
            printed = Instant::now();
            if last_level != Some(level) {
                levels.push((started.elapsed(), level));
            }
            last_level = Some(level);
        }
        if level == Level::Normal && levels.len() > 1 && lag == 0 && deferred == 0 {
            let trades = engine.count(LakeTable::Trades, None).await?;
            let quotes = engine.count(LakeTable::Quotes, None).await?;
            if trades == BURST as u64 && quotes == BURST as u64 {
                break started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop_feed.cancel();
    capture.await??;
    stop.cancel();
    let summary = writer.await??;
    let _ = follower.await;

    let top = levels.iter().map(|(_, l)| *l).max().unwrap_or_default();
    let distinct = engine
        .sql("SELECT count(DISTINCT trade_id) AS n FROM trades")
        .await?;
    let distinct = super::scalar(&distinct.batches)? as u64;
    println!("\nLevels over time:");
    for (at, level) in &levels {
        println!(
            "   {:5.1}s  {} {}  (quotes waiting in the log at most: {})",
            at.as_secs_f64(),
            *level as u8,
            level.as_str(),
            deferred_at.get(level).copied().unwrap_or(0)
        );
    }
    println!(
        "\nTop level {} ({}); quotes deferred at most {}; back to normal with everything landed after {:.1}s.",
        top as u8,
        top.as_str(),
        deferred_at.values().max().copied().unwrap_or(0),
        landed.as_secs_f64()
    );
    println!(
        "Exactly once: {BURST} trades sent, {} in the lake ({} distinct); {BURST} quotes sent, {} in the lake; {} duplicates dropped.",
        engine.count(LakeTable::Trades, None).await?,
        distinct,
        engine.count(LakeTable::Quotes, None).await?,
        summary.duplicates_dropped
    );
    Ok(if distinct == BURST as u64 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

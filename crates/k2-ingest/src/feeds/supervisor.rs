//! A feed kept connected: jittered exponential backoff, failover across URLs, a circuit
//! breaker on connect failures, rotation of long-lived connections (make before break),
//! and a bounded number of consecutive failures after which it gives up loudly (the
//! process exits non-zero and its supervisor restarts it). Every wait ends at once when
//! the feed is told to stop.

use std::time::{Duration, Instant};

use k2_pipeline::{BreakerConfig, CircuitBreaker, RetryPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::connection::{
    ConnectionEnd, FeedConfig, FeedError, FeedEvent, Handover, run_connection,
};
use crate::metrics;

/// How a feed stays connected.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// Tried in turn after the configuration's `url` (failover).
    pub fallback_urls: Vec<String>,
    /// Backoff between failed connections; `attempts` failures in a row and the feed
    /// gives up.
    pub retry: RetryPolicy,
    /// Opened by consecutive connect failures; while open, no connection is tried.
    pub breaker: BreakerConfig,
    /// A connection that lasted this long was healthy: the failure count starts over.
    pub healthy_after: Duration,
    /// Replace a connection this old with a fresh one (exchanges end long connections:
    /// Binance after 24 hours). The successor connects first; both run for `overlap`
    /// (the lake's dedup drops what both delivered) before the old one is retired, so no
    /// trade falls between them.
    pub rotate_after: Option<Duration>,
    pub overlap: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            fallback_urls: Vec::new(),
            retry: RetryPolicy {
                attempts: 20,
                base: Duration::from_millis(250),
                max_delay: Duration::from_secs(30),
            },
            breaker: BreakerConfig::default(),
            healthy_after: Duration::from_secs(60),
            rotate_after: Some(Duration::from_secs(12 * 3600)),
            overlap: Duration::from_secs(2),
        }
    }
}

/// What a feed run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    pub connections: u64,
    pub failures: u64,
}

/// Keeps the feed connected until the receiver of `out` goes away (Ok), or until
/// `reconnect.retry.attempts` connections in a row have failed (Err naming the last
/// failure). A connection that ends early — refused, closed, stalled, broken — counts as
/// failed; one that lasted `healthy_after` resets the count.
pub async fn run_feed(
    config: &FeedConfig,
    reconnect: &Reconnect,
    out: &mpsc::Sender<FeedEvent>,
    now_us: impl Fn() -> i64,
    stop: &CancellationToken,
) -> Result<FeedStats, FeedError> {
    let venue = config.venue.name();
    let urls: Vec<&str> = std::iter::once(config.url.as_str())
        .chain(reconnect.fallback_urls.iter().map(String::as_str))
        .collect();
    let mut breaker = CircuitBreaker::new(reconnect.breaker.clone());
    let mut jitter = fastrand::Rng::new();
    let mut stats = FeedStats::default();
    let mut failed_in_a_row = 0u32;
    let mut turn = 0usize;
    metrics::feed_failures_in_a_row(venue, 0);
    metrics::feed_breaker(venue, k2_pipeline::BreakerState::Closed);
    // A feed that never connects shows 0 open connections, not no series at all.
    metrics::feed_started(venue);
    loop {
        if stop.is_cancelled() {
            return Ok(stats);
        }
        if let Some(pause) = config.pause.as_ref().filter(|p| p.active()) {
            metrics::feed_paused();
            tracing::warn!(
                venue,
                level = pause.pressure.level().as_str(),
                "feed paused: degraded, no new data is taken"
            );
            while pause.active() {
                if stop.is_cancelled() {
                    return Ok(stats);
                }
                pause_wait(stop).await;
            }
            tracing::info!(venue, "feed resumed");
            continue;
        }
        if let Err(wait) = breaker.permit(Instant::now()) {
            pause(wait, stop).await;
            continue;
        }
        let one = FeedConfig {
            url: urls[turn % urls.len()].to_string(),
            ..config.clone()
        };
        let started = Instant::now();
        stats.connections += 1;
        let outcome = rotating(&one, reconnect, out, &now_us, &mut stats, stop).await;
        let label = match &outcome {
            Ok(ConnectionEnd::Stopped) => return Ok(stats),
            Ok(ConnectionEnd::Paused) => {
                metrics::feed_connection_ended(venue, "paused");
                continue;
            }
            Ok(ConnectionEnd::Retired) => "retired",
            Ok(ConnectionEnd::Closed) => "closed",
            Ok(ConnectionEnd::Stalled) => "stalled",
            Err(FeedError::Connect { .. }) => "refused",
            Err(_) => "broken",
        };
        metrics::feed_connection_ended(venue, label);
        let healthy = started.elapsed() >= reconnect.healthy_after;
        let transition = match &outcome {
            Err(FeedError::Connect { .. }) => breaker.failure(Instant::now()),
            _ => breaker.success(),
        };
        if let Some(state) = transition {
            metrics::feed_breaker(venue, state);
            tracing::warn!(venue, state = state.as_str(), "feed circuit breaker");
        }
        if healthy {
            failed_in_a_row = 0;
            metrics::feed_failures_in_a_row(venue, 0);
            continue;
        }
        stats.failures += 1;
        failed_in_a_row += 1;
        metrics::feed_failures_in_a_row(venue, failed_in_a_row);
        let last = match outcome {
            Err(e) => e.to_string(),
            Ok(end) => format!("{} ended the connection as {end:?}", one.url),
        };
        tracing::warn!(venue, url = %one.url, failed_in_a_row, reason = %last, "feed connection failed");
        let Some(wait) = reconnect.retry.delay(failed_in_a_row, &mut jitter) else {
            return Err(FeedError::GaveUp {
                attempts: failed_in_a_row,
                last,
            });
        };
        turn += 1;
        pause(wait, stop).await;
    }
}

/// A moment of a pause, or less if told to stop meanwhile.
async fn pause_wait(stop: &CancellationToken) {
    pause(Duration::from_millis(200), stop).await;
}

/// Sleeps `wait`, or less if told to stop meanwhile.
async fn pause(wait: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

/// Runs connections to one URL, replacing each with a fresh one every
/// `reconnect.rotate_after` (make before break: the successor must deliver before the old
/// one is retired). Returns how the last one ended.
async fn rotating<F: Fn() -> i64>(
    one: &FeedConfig,
    reconnect: &Reconnect,
    out: &mpsc::Sender<FeedEvent>,
    now_us: &F,
    stats: &mut FeedStats,
    stop: &CancellationToken,
) -> Result<ConnectionEnd, FeedError> {
    let venue = one.venue.name();
    let mut retire = CancellationToken::new();
    let mut current = Box::pin(run_connection(
        one,
        out,
        now_us,
        Handover {
            ready: None,
            retire: retire.clone(),
        },
        stop,
    ));
    let Some(every) = reconnect.rotate_after else {
        return current.await;
    };
    let mut due = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            end = &mut current => return end,
            _ = tokio::time::sleep_until(due) => {}
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let next_retire = CancellationToken::new();
        let mut next = Box::pin(run_connection(
            one,
            out,
            now_us,
            Handover {
                ready: Some(ready_tx),
                retire: next_retire.clone(),
            },
            stop,
        ));
        stats.connections += 1;
        // The successor connects and delivers while the old connection goes on.
        let ready = tokio::select! {
            end = &mut current => return end,
            r = ready_rx => r.is_ok(),
            _ = &mut next => false,
        };
        let outcome = if ready {
            // Both run for the overlap, then the old one stops at a frame boundary.
            let mut old_done = false;
            let successor_ok = tokio::select! {
                _ = tokio::time::sleep(reconnect.overlap) => true,
                _ = &mut current => { old_done = true; true }
                _ = &mut next => false,
            };
            if successor_ok {
                if !old_done {
                    retire.cancel();
                    let _ = current.await;
                }
                current = next;
                retire = next_retire;
                "done"
            } else {
                "failed"
            }
        } else {
            "failed"
        };
        metrics::feed_rotation(venue, outcome);
        if outcome == "done" {
            tracing::info!(venue, url = %one.url, "feed connection rotated");
            due = tokio::time::Instant::now() + every;
        } else {
            tracing::warn!(venue, url = %one.url, "the successor connection failed; the current one goes on");
            due = tokio::time::Instant::now() + reconnect.retry.max_delay;
        }
    }
}

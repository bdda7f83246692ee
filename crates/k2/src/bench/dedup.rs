//! `k2 bench dedup`: dedup checks per second on one core, memory per million ids, false
//! positives, and claims shared in Redis.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::memory::rss_bytes;

/// Ids spread like real message ids (which are hashes).
fn bench_id(n: u64) -> u128 {
    let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ n;
    let b = a.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (a >> 29);
    (u128::from(a) << 64) | u128::from(b)
}

pub fn run(ids: u64) {
    use k2_pipeline::{DedupConfig, Deduplicator};
    // One hour of arrivals per million ids, so the window (24 h) holds up to 24 million.
    let config = DedupConfig {
        max_ids: usize::MAX,
        ..DedupConfig::default()
    };
    let at = |n: u64| (n / 1_000_000) as i64 * 3_600_000_000 + (n % 1_000_000) as i64;
    println!(
        "dedup: Bloom filter in front of exact time-bucketed sets ({ids} distinct ids, one core)"
    );
    let before = rss_bytes();
    let mut d = Deduplicator::new(config);
    let started = Instant::now();
    for n in 0..ids {
        d.check(bench_id(n), at(n));
    }
    let new_secs = started.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    println!("workload                                    checks/s    ns/check");
    println!(
        "{:40} {:>12.0} {:>11.2}",
        "new ids (the common case)",
        ids as f64 / new_secs,
        new_secs * 1e9 / ids as f64
    );
    // A duplicate is confirmed by the exact tier before it is dropped. The window's sets
    // are searched newest first, so a recent duplicate (a reconnect's overlap, a retried
    // produce) is found sooner than an old one.
    let mut duplicates = |label: &str, from: u64| {
        let started = Instant::now();
        let mut dropped = 0u64;
        for n in (from..ids).step_by(10) {
            dropped += u64::from(!d.check(bench_id(n), at(ids)));
        }
        let secs = started.elapsed().as_secs_f64();
        let checks = (ids - from).div_ceil(10);
        assert_eq!(dropped, checks, "every repeated id is dropped");
        println!(
            "{:40} {:>12.0} {:>11.2}",
            label,
            checks as f64 / secs,
            secs * 1e9 / checks as f64
        );
    };
    duplicates(
        "duplicates of the last hour's ids",
        ids.saturating_sub(1_000_000),
    );
    duplicates("duplicates spread over the whole window", 0);
    let stats = d.stats();
    println!(
        "memory: {:.1} MB per million ids (RSS growth {:.0} MB; held by the structures {:.0} MB)",
        grown as f64 / 1e6 / (ids as f64 / 1e6),
        grown as f64 / 1e6,
        d.memory_bytes() as f64 / 1e6
    );
    println!(
        "Bloom hits not confirmed by the exact tier (passed, not dropped): {} of {} new ids ({:.3} %)",
        stats.false_positives,
        ids,
        stats.false_positives as f64 * 100.0 / ids as f64
    );
}

/// The Redis-backed tracker: messages round-robin over the streams, checked in batches
/// (one pipelined round trip per batch, one script call per stream in it).
/// Shared dedup in Redis: a writer claims a batch's ids before writing it and keeps them
/// after its commit (two pipelined passes of script calls, 1 000 ids each); another
/// writer then meets the same ids held. Memory is Redis's own `used_memory` growth.
pub async fn redis(addr: &str) -> anyhow::Result<()> {
    use k2_lake::integrity::shared_dedup::RedisDedup;
    let target = super::redis_target(addr);
    let scope = format!("{}:trades", std::process::id());
    let err = |e: redis::RedisError| anyhow::anyhow!("Redis at {addr}: {e}");
    let mut a = RedisDedup::connect(&target, &scope).await.map_err(err)?;
    let mut b = RedisDedup::connect(&target, &scope).await.map_err(err)?;
    let mut info = redis::Client::open(format!("redis://{addr}/"))
        .map_err(err)?
        .get_multiplexed_async_connection()
        .await
        .map_err(err)?;
    let mut used_memory = async || -> anyhow::Result<u64> {
        let text: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut info)
            .await
            .map_err(err)?;
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory without used_memory")
    };
    let lease = Duration::from_secs(300);
    let window = Duration::from_secs(24 * 3600);
    println!("dedup claims in Redis at {addr} (a batch: claim, then keep after the commit)");
    println!("batch          new ids/s   held ids/s   ms/batch");
    let before = used_memory().await?;
    let mut next = 1u128 << 64;
    let mut stored = 0u64;
    for batch in [1_000usize, 10_000, 50_000] {
        let rounds = (1_000_000 / batch).max(1);
        let (mut new_time, mut held_time) = (Duration::ZERO, Duration::ZERO);
        for r in 0..rounds {
            let ids: Vec<u128> = (0..batch as u128)
                .map(|i| (next + i) * 0x9E37_79B9_7F4A_7C15)
                .collect();
            next += batch as u128;
            let token = format!("a|{batch}-{r}");
            let request: Vec<(u128, Option<&str>)> = ids.iter().map(|&i| (i, None)).collect();
            let t = Instant::now();
            let got = a.claim(&request, &token, lease).await.map_err(err)?;
            anyhow::ensure!(got.iter().all(Option::is_none), "fresh ids were held");
            a.keep(&ids, &token, window).await.map_err(err)?;
            new_time += t.elapsed();
            let t = Instant::now();
            let got = b.claim(&request, "b|0", lease).await.map_err(err)?;
            anyhow::ensure!(
                got.iter().all(Option::is_some),
                "held ids were claimed again"
            );
            held_time += t.elapsed();
            stored += batch as u64;
        }
        let n = (rounds * batch) as f64;
        println!(
            "{batch:>6} ids   {:>12.0} {:>12.0} {:>10.1}",
            n / new_time.as_secs_f64(),
            n / held_time.as_secs_f64(),
            new_time.as_secs_f64() * 1e3 / rounds as f64
        );
    }
    let grown = used_memory().await?.saturating_sub(before);
    println!(
        "Redis memory: {:.0} MB per million ids held ({stored} ids; keys expire with the window)",
        grown as f64 / stored as f64
    );
    Ok(())
}

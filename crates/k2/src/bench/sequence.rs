//! `k2 bench sequence`: sequence-tracker checks per second on one core, memory per
//! 10 000 streams, and the Redis-backed tracker.

use std::time::Instant;

use crate::memory::rss_bytes;

pub fn run(checks: u64, streams: u32) {
    use k2_pipeline::{SequenceConfig, SequenceTracker};
    // Memory first, before anything has been allocated and freed (freed pages are reused):
    // RSS growth while 100 000 streams are created and fed, per 10 000 streams.
    let before = rss_bytes();
    let mut t = SequenceTracker::new(SequenceConfig::default());
    for i in 0..100_000u32 {
        let id = t.stream("BENCH", &format!("S{i:06}"));
        for seq in [1, 2, 3, 5, 6, 9, 10] {
            t.check(id, seq, 0);
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    std::hint::black_box(&t);
    println!(
        "memory: {:.2} MB per 10 000 streams (RSS growth over 100 000 streams with 2 open gaps each)",
        grown as f64 / 10.0 / 1e6
    );
    drop(t);

    println!("sequence tracker ({checks} checks over {streams} streams, one core)");
    println!("workload                                    checks/s    ns/check");
    // Messages arrive round-robin over the streams, as a multi-symbol feed interleaves them.
    let run = |name: &str, mutate: &dyn Fn(&mut fastrand::Rng, u64) -> u64| {
        let mut t = SequenceTracker::new(SequenceConfig::default());
        let ids: Vec<_> = (0..streams)
            .map(|i| t.stream("BENCH", &format!("S{i:05}")))
            .collect();
        let mut next = vec![1u64; streams as usize];
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let started = Instant::now();
        let mut tally = 0u64;
        for n in 0..checks {
            let s = (n % u64::from(streams)) as usize;
            let seq = mutate(&mut rng, next[s]);
            next[s] = next[s].max(seq + 1);
            tally += u64::from(t.check(ids[s], seq, n as i64) == k2_pipeline::Event::InOrder);
        }
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(tally);
        println!(
            "{name:40} {:>12.0} {:>11.2}",
            checks as f64 / secs,
            secs * 1e9 / checks as f64
        );
        t
    };
    run("in order", &|_, next| next);
    // 1 % skip one ahead (a gap), 1 % repeat the last one, 1 % go two back (a duplicate, or
    // the fill of a gap just opened).
    let t = run(
        "mixed: 1% skip ahead, 2% behind",
        &|rng, next| match rng.u64(0..100) {
            0 => next + 1,
            1 => next.saturating_sub(1).max(1),
            2 => next.saturating_sub(2).max(1),
            _ => next,
        },
    );
    let (gaps, open): (u64, usize) = t.streams().fold((0, 0), |(g, o), (_, _, s)| {
        (g + s.stats().gaps, o + s.gaps().len())
    });
    println!("  ({gaps} gaps detected, {open} still open at the end)");
    drop(t);
}

pub async fn redis(addr: &str, streams: u32) -> anyhow::Result<()> {
    use k2_lake::integrity::shared_sequence::RedisSequenceTracker;
    let scope = std::process::id().to_string();
    let mut tracker =
        RedisSequenceTracker::connect(&super::redis_target(addr), &scope, Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("Redis at {addr}: {e}"))?;
    // Per round trip, one script call per stream of the batch: what matters is how many
    // messages of a stream a batch carries (a writer's poll of 50 000 records over 100
    // symbols carries 500 each).
    for streams in [100, streams] {
        sequence_redis_streams(&mut tracker, addr, streams).await?;
    }
    Ok(())
}

async fn sequence_redis_streams(
    tracker: &mut k2_lake::integrity::shared_sequence::RedisSequenceTracker,
    addr: &str,
    streams: u32,
) -> anyhow::Result<()> {
    let symbols: Vec<String> = (0..streams).map(|i| format!("S{i:05}")).collect();
    let exchange = format!("BENCH{streams}");
    println!("sequence tracker in Redis at {addr} ({streams} streams, messages round-robin)");
    println!("batch (one round trip)     checks/s    µs/batch");
    let mut next = vec![1u64; streams as usize];
    for batch in [1usize, 100, 1_000, 10_000, 50_000] {
        let total = (batch * 20).clamp(2_000, 1_000_000);
        let mut done = 0;
        let mut n = 0u64;
        let started = Instant::now();
        while done < total {
            let msgs: Vec<_> = (0..batch)
                .map(|_| {
                    let s = (n % u64::from(streams)) as usize;
                    n += 1;
                    let seq = next[s];
                    next[s] += 1;
                    (exchange.as_str(), symbols[s].as_str(), seq, n as i64)
                })
                .collect();
            tracker
                .check_batch(&msgs)
                .await
                .map_err(|e| anyhow::anyhow!("Redis at {addr}: {e}"))?;
            done += batch;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{batch:>6} messages        {:>10.0} {:>11.0}",
            done as f64 / secs,
            secs * 1e6 / (done / batch) as f64
        );
    }
    Ok(())
}

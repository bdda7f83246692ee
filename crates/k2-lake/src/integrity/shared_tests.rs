//! The shared integrity state against a real Redis at `K2_TEST_REDIS_ADDR` (the test
//! script starts one on loopback).

use std::time::Duration;

use k2_pipeline::{Event, GapRange, SequenceConfig, SequenceTracker};
use proptest::prelude::*;

use super::redis::RedisTarget;
use super::shared_dedup::RedisDedup;
use super::shared_sequence::{Message, RedisSequenceTracker};

fn redis_addr() -> Option<String> {
    k2_testkit::services::service("K2_TEST_REDIS_ADDR")
}

fn target(addr: &str) -> RedisTarget {
    RedisTarget {
        addr: addr.to_string(),
        prefix: prefix(),
        timeout: Duration::from_secs(10),
    }
}

fn prefix() -> String {
    format!(
        "k2test:{}",
        std::process::id() as u128 * 1_000_000_007 + rand_suffix()
    )
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn seed_cases_classify_as_in_process() {
    let Some(addr) = redis_addr() else { return };
    runtime().block_on(async {
        let config = SequenceConfig::default();
        let mut redis = RedisSequenceTracker::connect(&target(&addr), "t", config.clone())
            .await
            .unwrap();
        // 1, 2, 5 (gap 3-4), 3 (fill), 2 (duplicate), then an overnight restart at 1,
        // a big timestamp on the way (microseconds must survive Lua's numbers).
        let day = 1_394_409_600_000_000i64;
        let night = day + 12 * 3600 * 1_000_000;
        let msgs: Vec<Message> = vec![
            ("ASX", "BHP", 1, day),
            ("ASX", "BHP", 2, day + 1),
            ("ASX", "RIO", 7, day + 1),
            ("ASX", "BHP", 5, day + 2),
            ("ASX", "BHP", 3, day + 3),
            ("ASX", "BHP", 2, day + 4),
            ("ASX", "BHP", 1, night),
            ("ASX", "BHP", 2, night + 1),
        ];
        let got = redis.check_batch(&msgs).await.unwrap();
        let mut local = SequenceTracker::new(config);
        let want: Vec<Event> = msgs
            .iter()
            .map(|&(e, s, q, t)| local.check_named(e, s, q, t))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[3], Event::Gap(GapRange { first: 3, last: 4 }));
        assert_eq!(got[6], Event::SessionReset);
        let (stats, gaps) = redis.stream("ASX", "BHP").await.unwrap().unwrap();
        let bhp = local.get("ASX", "BHP").unwrap();
        assert_eq!(&stats, bhp.stats());
        assert_eq!(gaps, bhp.gaps());
        assert!(redis.stream("ASX", "NONE").await.unwrap().is_none());
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..Default::default() })]
    /// Any messages, in any batches, over a few streams: Redis and the in-process
    /// tracker agree on every event, the statistics and the open gaps.
    #[test]
    fn redis_and_in_process_trackers_agree(
        msgs in prop::collection::vec((0usize..3, 0u64..40, 0i64..4), 1..200),
        cut in prop::collection::vec(1usize..50, 1..8),
        small_ledger in any::<bool>(),
    ) {
        let Some(addr) = redis_addr() else { return Ok(()) };
        let config = SequenceConfig {
            window: 8,
            reset_after_us: 2_000_000,
            restart_max: 1,
            max_open_gaps: if small_ledger { 2 } else { 1024 },
        };
        let symbols = ["A", "B", "C"];
        // Times rise mostly, with occasional long pauses.
        let mut t = 1_700_000_000_000_000i64;
        let msgs: Vec<Message> = msgs
            .iter()
            .map(|&(s, seq, dt)| {
                t += if dt == 3 { 3_000_000 } else { dt };
                ("X", symbols[s], seq, t)
            })
            .collect();
        let (got, local) = runtime().block_on(async {
            let mut redis = RedisSequenceTracker::connect(&target(&addr), "t", config.clone())
                .await
                .unwrap();
            let mut local = SequenceTracker::new(config.clone());
            let mut got = Vec::new();
            let mut start = 0;
            let mut k = 0;
            while start < msgs.len() {
                let end = (start + cut[k % cut.len()]).min(msgs.len());
                got.extend(redis.check_batch(&msgs[start..end]).await.unwrap());
                start = end;
                k += 1;
            }
            let want: Vec<Event> = msgs
                .iter()
                .map(|&(e, s, q, t)| local.check_named(e, s, q, t))
                .collect();
            assert_eq!(got, want);
            for s in symbols {
                let remote = redis.stream("X", s).await.unwrap();
                match local.get("X", s) {
                    None => assert!(remote.is_none()),
                    Some(l) => {
                        let (stats, gaps) = remote.unwrap();
                        assert_eq!(&stats, l.stats(), "{s}");
                        assert_eq!(gaps, l.gaps(), "{s}");
                    }
                }
            }
            (got, local)
        });
        prop_assert_eq!(got.len(), msgs.len());
        drop(local);
    }
}

#[test]
fn writers_sharing_a_stream_see_one_ledger() {
    let Some(addr) = redis_addr() else { return };
    runtime().block_on(async {
        let t = target(&addr);
        let config = SequenceConfig::default();
        let mut a = RedisSequenceTracker::connect(&t, "t", config.clone())
            .await
            .unwrap();
        let mut b = RedisSequenceTracker::connect(&t, "t", config)
            .await
            .unwrap();
        // Two writers interleave one stream's messages: each sees the other's.
        assert_eq!(
            a.check_batch(&[("X", "S", 1, 1), ("X", "S", 2, 2)])
                .await
                .unwrap(),
            [Event::InOrder, Event::InOrder]
        );
        assert_eq!(
            b.check_batch(&[("X", "S", 3, 3), ("X", "S", 2, 4)])
                .await
                .unwrap(),
            [Event::InOrder, Event::Duplicate]
        );
        assert_eq!(
            a.check_batch(&[("X", "S", 6, 5)]).await.unwrap(),
            [Event::Gap(GapRange { first: 4, last: 5 })]
        );
        assert_eq!(
            b.check_batch(&[("X", "S", 4, 6)]).await.unwrap(),
            [Event::LateFill]
        );
        let (stats, gaps) = a.stream("X", "S").await.unwrap().unwrap();
        assert_eq!(gaps, [GapRange { first: 5, last: 5 }]);
        assert_eq!((stats.total, stats.duplicates, stats.late_fills), (6, 1, 1));
    });
}

#[test]
fn writers_claim_ids_once() {
    let Some(addr) = redis_addr() else { return };
    runtime().block_on(async {
        let t = target(&addr);
        let mut a = RedisDedup::connect(&t, "t").await.unwrap();
        let mut b = RedisDedup::connect(&t, "t").await.unwrap();
        let lease = Duration::from_secs(60);
        // More ids than one script call takes, so the chunks are exercised.
        let ids: Vec<u128> = (0..2_500u128).map(|i| i * 0x1_0000_0001).collect();
        let mine: Vec<(u128, Option<&str>)> = ids.iter().map(|&i| (i, None)).collect();
        let got = a.claim(&mine, "a|1", lease).await.unwrap();
        assert!(got.iter().all(Option::is_none));
        // Claiming again under the same token (a retried commit) is still ours, also
        // after Redis forgot the script (as a restarted Redis does).
        let mut raw = redis::Client::open(format!("redis://{addr}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(&mut raw)
            .await
            .unwrap();
        assert!(
            a.claim(&mine[..10], "a|1", lease)
                .await
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        // Another writer sees who holds each id, and gets only the new one.
        let theirs = [(ids[0], None), (ids[2_499], None), (7, None)];
        assert_eq!(
            b.claim(&theirs, "b|9", lease).await.unwrap(),
            [Some("a|1".to_string()), Some("a|1".to_string()), None]
        );
        // A writer replaces its own abandoned batch's claim, and only that one.
        let again = [(ids[0], Some("a|1")), (7, Some("a|1"))];
        assert_eq!(
            a.claim(&again, "a|2", lease).await.unwrap(),
            [None, Some("b|9".to_string())]
        );
        // After the commit the claims last the window; another token's are untouched.
        assert_eq!(
            a.keep(&ids, "a|1", Duration::from_secs(3600))
                .await
                .unwrap(),
            2_499
        );
        assert_eq!(
            a.keep(&[ids[0], 7], "a|2", Duration::from_secs(3600))
                .await
                .unwrap(),
            1
        );
        // Released claims are free for the next writer; others' are untouched.
        assert_eq!(a.release(&[ids[1], 7], "a|1").await.unwrap(), 1);
        assert_eq!(
            b.claim(&[(ids[1], None), (ids[2], None)], "b|10", lease)
                .await
                .unwrap(),
            [None, Some("a|1".to_string())]
        );
    });
}

#[test]
fn a_lapsed_lease_frees_the_id() {
    let Some(addr) = redis_addr() else { return };
    runtime().block_on(async {
        let t = target(&addr);
        let mut a = RedisDedup::connect(&t, "t").await.unwrap();
        let mut b = RedisDedup::connect(&t, "t").await.unwrap();
        let got = a
            .claim(&[(1, None)], "a|1", Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(got, [None]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = b
                .claim(&[(1, None)], "b|1", Duration::from_secs(60))
                .await
                .unwrap();
            if got == [None] {
                break;
            }
            assert_eq!(got, [Some("a|1".to_string())]);
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never lapsed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The writer whose lease lapsed cannot keep what it no longer holds.
        assert_eq!(
            a.keep(&[1], "a|1", Duration::from_secs(60)).await.unwrap(),
            0
        );
    });
}

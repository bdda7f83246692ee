//! Sequence tracking shared by several writers, in Redis.
//!
//! Each (exchange, symbol) stream is a Redis hash; its messages are classified by a Lua
//! script ([`SCRIPT`], the state machine of [`crate::sequence`]) so that writers sharing
//! a stream see one consistent ledger: a script runs atomically. A batch of messages
//! costs one script call per stream and one round trip for the whole batch (pipelined).

use std::collections::HashMap;

use crate::redis::{Redis, RedisError, Reply};
use crate::sequence::{Event, GapRange, SequenceConfig, StreamStats};

/// The Lua form of the sequence state machine.
pub const SCRIPT: &str = include_str!("sequence.lua");

/// A message to classify: exchange, symbol, source sequence, exchange time.
pub type Message<'a> = (&'a str, &'a str, u64, i64);

pub struct RedisSequenceTracker {
    redis: Redis,
    config: SequenceConfig,
    prefix: String,
    sha: String,
}

impl RedisSequenceTracker {
    /// Connects to Redis at `addr` (`host:port`); streams live under `prefix`.
    pub async fn connect(
        addr: &str,
        prefix: &str,
        config: SequenceConfig,
    ) -> Result<Self, RedisError> {
        let mut redis = Redis::connect(addr).await?;
        let sha = load(&mut redis).await?;
        Ok(RedisSequenceTracker {
            redis,
            config,
            prefix: prefix.to_string(),
            sha,
        })
    }

    fn key(&self, exchange: &str, symbol: &str) -> String {
        format!("{}:seq:{exchange}:{symbol}", self.prefix)
    }

    /// Classifies the messages, in order within each stream.
    pub async fn check_batch(
        &mut self,
        messages: &[Message<'_>],
    ) -> Result<Vec<Event>, RedisError> {
        // Streams in first-seen order, with the positions of their messages.
        let mut order: Vec<(&str, &str)> = Vec::new();
        let mut positions: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, &(exchange, symbol, _, _)) in messages.iter().enumerate() {
            positions
                .entry((exchange, symbol))
                .or_insert_with(|| {
                    order.push((exchange, symbol));
                    Vec::new()
                })
                .push(i);
        }
        let commands: Vec<Vec<Vec<u8>>> = order
            .iter()
            .map(|&(exchange, symbol)| {
                let at = &positions[&(exchange, symbol)];
                let mut cmd: Vec<Vec<u8>> = Vec::with_capacity(8 + 2 * at.len());
                cmd.push(b"EVALSHA".to_vec());
                cmd.push(self.sha.clone().into_bytes());
                cmd.push(b"1".to_vec());
                cmd.push(self.key(exchange, symbol).into_bytes());
                for v in [
                    self.config.window.to_string(),
                    self.config.reset_after_us.to_string(),
                    self.config.restart_max.to_string(),
                    self.config.max_open_gaps.to_string(),
                ] {
                    cmd.push(v.into_bytes());
                }
                for &i in at {
                    let (_, _, seq, at_us) = messages[i];
                    cmd.push(seq.to_string().into_bytes());
                    cmd.push(at_us.to_string().into_bytes());
                }
                cmd
            })
            .collect();
        let mut replies = self.redis.pipeline(&commands).await?;
        if replies
            .iter()
            .any(|r| matches!(r, Reply::Error(e) if e.starts_with("NOSCRIPT")))
        {
            // Redis restarted (scripts are not persisted): load it again, once. Streams
            // whose script ran are not sent twice.
            self.sha = load(&mut self.redis).await?;
            let again: Vec<usize> = (0..replies.len())
                .filter(|&i| matches!(&replies[i], Reply::Error(e) if e.starts_with("NOSCRIPT")))
                .collect();
            let cmds: Vec<Vec<Vec<u8>>> = again
                .iter()
                .map(|&i| {
                    let mut c = commands[i].clone();
                    c[1] = self.sha.clone().into_bytes();
                    c
                })
                .collect();
            for (i, r) in again.into_iter().zip(self.redis.pipeline(&cmds).await?) {
                replies[i] = r;
            }
        }
        let mut events = vec![Event::InOrder; messages.len()];
        for (stream, reply) in order.iter().zip(replies) {
            let items = match reply {
                Reply::Array(Some(items)) => items,
                Reply::Error(e) => return Err(RedisError::Server(e)),
                other => return Err(RedisError::Protocol(format!("unexpected reply {other:?}"))),
            };
            let at = &positions[stream];
            if items.len() != 3 * at.len() {
                return Err(RedisError::Protocol(format!(
                    "{} results for {} messages",
                    items.len() / 3,
                    at.len()
                )));
            }
            for (k, &i) in at.iter().enumerate() {
                let n = |j: usize| items[3 * k + j].as_int().unwrap_or(-1);
                events[i] = match n(0) {
                    0 => Event::InOrder,
                    1 => Event::Gap(GapRange {
                        first: n(1) as u64,
                        last: n(2) as u64,
                    }),
                    2 => Event::LateFill,
                    3 => Event::Duplicate,
                    4 => Event::SessionReset,
                    5 => Event::TooOld,
                    other => {
                        return Err(RedisError::Protocol(format!("unknown event code {other}")));
                    }
                };
            }
        }
        Ok(events)
    }

    /// A stream's statistics and open gaps, or None if it was never seen.
    pub async fn stream(
        &mut self,
        exchange: &str,
        symbol: &str,
    ) -> Result<Option<(StreamStats, Vec<GapRange>)>, RedisError> {
        let reply = self
            .redis
            .call(vec![
                b"HGETALL".to_vec(),
                self.key(exchange, symbol).into_bytes(),
            ])
            .await?;
        let Reply::Array(Some(items)) = reply else {
            return Err(RedisError::Protocol(
                "HGETALL did not answer an array".into(),
            ));
        };
        if items.is_empty() {
            return Ok(None);
        }
        let mut fields = HashMap::new();
        for pair in items.chunks(2) {
            if let [k, v] = pair {
                fields.insert(
                    k.as_text().unwrap_or_default(),
                    v.as_text().unwrap_or_default(),
                );
            }
        }
        let n = |f: &str| {
            fields
                .get(f)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let stats = StreamStats {
            total: n("total"),
            in_order: n("in_order"),
            gaps: n("gaps"),
            gap_messages: n("gap_messages"),
            late_fills: n("late_fills"),
            duplicates: n("duplicates"),
            resets: n("resets"),
            too_old: n("too_old"),
            lost: n("lost"),
        };
        let gaps = fields
            .get("ledger")
            .map(|l| {
                l.split(',')
                    .filter_map(|g| {
                        let (f, l) = g.split_once(':')?;
                        Some(GapRange {
                            first: f.parse().ok()?,
                            last: l.parse().ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some((stats, gaps)))
    }
}

async fn load(redis: &mut Redis) -> Result<String, RedisError> {
    redis
        .call(vec![
            b"SCRIPT".to_vec(),
            b"LOAD".to_vec(),
            SCRIPT.as_bytes().to_vec(),
        ])
        .await?
        .as_text()
        .ok_or_else(|| RedisError::Protocol("SCRIPT LOAD did not answer a digest".into()))
}

#[cfg(test)]
mod tests {
    //! Against a real Redis at `K2_TEST_REDIS_ADDR` (scripts/test starts one on loopback).
    use super::*;
    use crate::sequence::SequenceTracker;
    use proptest::prelude::*;

    fn redis_addr() -> Option<String> {
        k2_model::testing::service("K2_TEST_REDIS_ADDR")
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
            let mut redis = RedisSequenceTracker::connect(&addr, &prefix(), config.clone())
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
                let mut redis = RedisSequenceTracker::connect(&addr, &prefix(), config.clone())
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
            let p = prefix();
            let config = SequenceConfig::default();
            let mut a = RedisSequenceTracker::connect(&addr, &p, config.clone())
                .await
                .unwrap();
            let mut b = RedisSequenceTracker::connect(&addr, &p, config)
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
}

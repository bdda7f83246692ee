//! Sequence tracking and dedup shared by several writers, in Redis.
//!
//! Each (exchange, symbol) stream is a Redis hash; its messages are classified by a Lua
//! script ([`SCRIPT`], the state machine of [`crate::sequence`]) so that writers sharing
//! a stream see one consistent ledger: a script runs atomically. A batch of messages
//! costs one script call per stream and one round trip for the whole batch (pipelined).

use std::collections::HashMap;
use std::time::Duration;

use crate::redis::{Redis, RedisError, Reply, Script, ScriptCall};
use crate::sequence::{Event, GapRange, SequenceConfig, StreamStats};

/// The Lua form of the sequence state machine.
pub const SCRIPT: &str = include_str!("sequence.lua");

/// A message to classify: exchange, symbol, source sequence, exchange time.
pub type Message<'a> = (&'a str, &'a str, u64, i64);

pub struct RedisSequenceTracker {
    redis: Redis,
    config: SequenceConfig,
    prefix: String,
    script: Script,
}

impl RedisSequenceTracker {
    /// Connects to Redis at `addr` (`host:port`); streams live under `prefix`.
    pub async fn connect(
        addr: &str,
        prefix: &str,
        config: SequenceConfig,
    ) -> Result<Self, RedisError> {
        let mut redis = Redis::connect(addr).await?;
        let script = Script::load(&mut redis, SCRIPT).await?;
        Ok(RedisSequenceTracker {
            redis,
            config,
            prefix: prefix.to_string(),
            script,
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
        let calls: Vec<ScriptCall> = order
            .iter()
            .map(|&(exchange, symbol)| {
                let at = &positions[&(exchange, symbol)];
                let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 + 2 * at.len());
                for v in [
                    self.config.window.to_string(),
                    self.config.reset_after_us.to_string(),
                    self.config.restart_max.to_string(),
                    self.config.max_open_gaps.to_string(),
                ] {
                    args.push(v.into_bytes());
                }
                for &i in at {
                    let (_, _, seq, at_us) = messages[i];
                    args.push(seq.to_string().into_bytes());
                    args.push(at_us.to_string().into_bytes());
                }
                (vec![self.key(exchange, symbol).into_bytes()], args)
            })
            .collect();
        let replies = self.script.run(&mut self.redis, &calls).await?;
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

/// The Lua side of shared dedup.
pub const DEDUP_SCRIPT: &str = include_str!("dedup.lua");

/// Ids per script call (a call's arguments live on Lua's stack).
const CLAIM_CHUNK: usize = 1000;

/// Dedup shared by several writers of one table (see `dedup.lua`). Before writing a
/// batch, a writer claims its message ids with a token naming the batch; a claim lasts a
/// lease, and once the batch is committed it lasts the dedup window. An id another
/// token holds is for the caller to resolve against the lake: stored if that token's
/// batch committed, else in flight elsewhere (wait) or abandoned by this same writer
/// (replace it).
pub struct RedisDedup {
    redis: Redis,
    prefix: Vec<u8>,
    script: Script,
}

impl RedisDedup {
    /// Connects to Redis at `addr` (`host:port`); ids live under `{prefix}:id:`.
    pub async fn connect(addr: &str, prefix: &str) -> Result<Self, RedisError> {
        let mut redis = Redis::connect(addr).await?;
        let script = Script::load(&mut redis, DEDUP_SCRIPT).await?;
        Ok(RedisDedup {
            redis,
            prefix: format!("{prefix}:id:").into_bytes(),
            script,
        })
    }

    /// The id's key: the prefix, then its 16 bytes.
    fn key(&self, id: u128) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 16);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&id.to_be_bytes());
        k
    }

    /// Claims every id for `token` for `lease`; where an id comes with a token, a claim
    /// that token holds is replaced. Per id: None when the claim is now `token`'s, else
    /// the token holding it.
    pub async fn claim(
        &mut self,
        ids: &[(u128, Option<&str>)],
        token: &str,
        lease: Duration,
    ) -> Result<Vec<Option<String>>, RedisError> {
        let ms = lease.as_millis().max(1).to_string().into_bytes();
        let calls: Vec<ScriptCall> = ids
            .chunks(CLAIM_CHUNK)
            .map(|chunk| {
                let keys = chunk.iter().map(|&(id, _)| self.key(id)).collect();
                let mut args = vec![b"claim".to_vec(), token.as_bytes().to_vec(), ms.clone()];
                args.extend(
                    chunk
                        .iter()
                        .map(|(_, replace)| replace.unwrap_or("").as_bytes().to_vec()),
                );
                (keys, args)
            })
            .collect();
        let replies = self.script.run(&mut self.redis, &calls).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (reply, (keys, _)) in replies.into_iter().zip(&calls) {
            let items = match reply {
                Reply::Array(Some(items)) if items.len() == keys.len() => items,
                Reply::Error(e) => return Err(RedisError::Server(e)),
                other => {
                    return Err(RedisError::Protocol(format!(
                        "claiming {} ids: unexpected reply {other:?}",
                        keys.len()
                    )));
                }
            };
            out.extend(
                items
                    .into_iter()
                    .map(|r| r.as_text().filter(|holder| !holder.is_empty())),
            );
        }
        Ok(out)
    }

    /// After `token`'s batch committed: its claims last `window`. Returns how many ids
    /// `token` still held (fewer means a lease ran out before the commit).
    pub async fn keep(
        &mut self,
        ids: &[u128],
        token: &str,
        window: Duration,
    ) -> Result<u64, RedisError> {
        self.each(ids, "keep", token, window).await
    }

    /// Gives up `token`'s claims on the ids (a batch that waits for another writer holds
    /// nothing meanwhile, so two writers never wait for each other). Returns how many
    /// `token` held.
    pub async fn release(&mut self, ids: &[u128], token: &str) -> Result<u64, RedisError> {
        self.each(ids, "release", token, Duration::ZERO).await
    }

    async fn each(
        &mut self,
        ids: &[u128],
        mode: &str,
        token: &str,
        ms: Duration,
    ) -> Result<u64, RedisError> {
        let ms = ms.as_millis().max(1).to_string().into_bytes();
        let calls: Vec<ScriptCall> = ids
            .chunks(CLAIM_CHUNK)
            .map(|chunk| {
                (
                    chunk.iter().map(|&id| self.key(id)).collect(),
                    vec![
                        mode.as_bytes().to_vec(),
                        token.as_bytes().to_vec(),
                        ms.clone(),
                    ],
                )
            })
            .collect();
        let mut n = 0;
        for reply in self.script.run(&mut self.redis, &calls).await? {
            match reply {
                Reply::Int(k) => n += k as u64,
                Reply::Error(e) => return Err(RedisError::Server(e)),
                other => {
                    return Err(RedisError::Protocol(format!(
                        "{mode} of claims: unexpected reply {other:?}"
                    )));
                }
            }
        }
        Ok(n)
    }
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

    #[test]
    fn writers_claim_ids_once() {
        let Some(addr) = redis_addr() else { return };
        runtime().block_on(async {
            let p = prefix();
            let mut a = RedisDedup::connect(&addr, &p).await.unwrap();
            let mut b = RedisDedup::connect(&addr, &p).await.unwrap();
            let lease = Duration::from_secs(60);
            // More ids than one script call takes, so the chunks are exercised.
            let ids: Vec<u128> = (0..2_500u128).map(|i| i * 0x1_0000_0001).collect();
            let mine: Vec<(u128, Option<&str>)> = ids.iter().map(|&i| (i, None)).collect();
            let got = a.claim(&mine, "a|1", lease).await.unwrap();
            assert!(got.iter().all(Option::is_none));
            // Claiming again under the same token (a retried commit) is still ours, also
            // after Redis forgot the script (as a restarted Redis does).
            let mut raw = Redis::connect(&addr).await.unwrap();
            raw.call(vec![b"SCRIPT".as_slice(), b"FLUSH"])
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
            let p = prefix();
            let mut a = RedisDedup::connect(&addr, &p).await.unwrap();
            let mut b = RedisDedup::connect(&addr, &p).await.unwrap();
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
}

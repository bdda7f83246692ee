//! Sequence tracking shared by several writers, in Redis.
//!
//! Each (exchange, symbol) stream is a Redis hash; its messages are classified by a Lua
//! script (`sequence.lua`, the state machine of [`k2_pipeline::sequence`]) so that writers
//! sharing a stream see one consistent ledger: a script runs atomically. A batch of
//! messages costs one script call per stream and one round trip for the whole batch.

use std::collections::HashMap;

use k2_pipeline::{Event, GapRange, SequenceConfig, StreamStats};
use redis::aio::ConnectionManager;
use redis::{RedisResult, Script, Value};

use super::redis::{RedisTarget, ScriptCall, connect, int, run_script, unexpected};

/// A message to classify: exchange, symbol, source sequence, exchange time.
pub type Message<'a> = (&'a str, &'a str, u64, i64);

pub struct RedisSequenceTracker {
    redis: ConnectionManager,
    config: SequenceConfig,
    prefix: String,
    script: Script,
}

impl RedisSequenceTracker {
    /// Connects to `target`; streams live under `{target.prefix}:{scope}`.
    pub async fn connect(
        target: &RedisTarget,
        scope: &str,
        config: SequenceConfig,
    ) -> RedisResult<Self> {
        let mut redis = connect(target).await?;
        let script = Script::new(include_str!("sequence.lua"));
        script.prepare_invoke().load_async(&mut redis).await?;
        Ok(RedisSequenceTracker {
            redis,
            config,
            prefix: format!("{}:{scope}", target.prefix),
            script,
        })
    }

    fn key(&self, exchange: &str, symbol: &str) -> String {
        format!("{}:seq:{exchange}:{symbol}", self.prefix)
    }

    /// Classifies the messages, in order within each stream.
    pub async fn check_batch(&mut self, messages: &[Message<'_>]) -> RedisResult<Vec<Event>> {
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
        let settings = [
            self.config.window.to_string(),
            self.config.reset_after_us.to_string(),
            self.config.restart_max.to_string(),
            self.config.max_open_gaps.to_string(),
        ];
        let calls: Vec<ScriptCall> = order
            .iter()
            .map(|&(exchange, symbol)| {
                let at = &positions[&(exchange, symbol)];
                let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 + 2 * at.len());
                args.extend(settings.iter().map(|v| v.clone().into_bytes()));
                for &i in at {
                    let (_, _, seq, at_us) = messages[i];
                    args.push(seq.to_string().into_bytes());
                    args.push(at_us.to_string().into_bytes());
                }
                (vec![self.key(exchange, symbol).into_bytes()], args)
            })
            .collect();
        let replies = run_script(&mut self.redis, &self.script, &calls).await?;
        let mut events = vec![Event::InOrder; messages.len()];
        for (stream, reply) in order.iter().zip(replies) {
            let at = &positions[stream];
            let items = match &reply {
                Value::Array(items) if items.len() == 3 * at.len() => items,
                other => return Err(unexpected("sequence script", other)),
            };
            for (k, &i) in at.iter().enumerate() {
                let n = |j: usize| int(&items[3 * k + j]).unwrap_or(-1);
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
                    _ => return Err(unexpected("sequence event code", &items[3 * k])),
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
    ) -> RedisResult<Option<(StreamStats, Vec<GapRange>)>> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(exchange, symbol))
            .query_async(&mut self.redis)
            .await?;
        if fields.is_empty() {
            return Ok(None);
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

//! The live tail: the newest trades and quotes, held in memory from the moment they are
//! in the log, so a query sees an event long before the lake writer commits it.
//!
//! Bounded per stream (exchange, symbol) by count and by age (exchange time, relative to
//! the stream's newest event), and in the number of streams. Keyed like the lake's keyset
//! order — (timestamp, sequence, message id) — so an event delivered twice (a reconnect
//! overlap, a replayed log) is held once, and a query merges tail and lake by the same key,
//! dropping at the seam what both hold (see `QueryEngine::market_with_tail`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iceberg::Catalog;
use k2_log::{Log, LogConsumer, PartitionOffset, PayloadDecoder, SchemaStore};
use k2_model::{DataType, MarketRecord, MessageId, TopicName};
use tokio_util::sync::CancellationToken;

use crate::commit_marks::{self, Positions, offset_key};
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::query::{MarketFilter, RowOrder};
use crate::tables::LakeTable;

/// How much the tail holds.
#[derive(Clone, Debug)]
pub struct TailConfig {
    /// Events per (exchange, symbol) stream and table.
    pub max_per_stream: usize,
    /// Events older than this behind their stream's newest event are let go.
    pub max_age: Duration,
    /// Streams held at most; events of further streams are counted and not held.
    pub max_streams: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_per_stream: 10_000,
            max_age: Duration::from_secs(300),
            max_streams: 10_000,
        }
    }
}

/// (timestamp µs, sequence or -1, message id): the lake's keyset order.
type Key = (i64, i64, MessageId);

#[derive(Default)]
struct Stream {
    events: BTreeMap<Key, MarketRecord>,
}

pub struct Tail {
    config: TailConfig,
    streams: Mutex<Streams>,
}

#[derive(Default)]
struct Streams {
    by_id: HashMap<(LakeTable, String, String), Stream>,
    /// Events held in all streams.
    events: usize,
}

fn key(rec: &MarketRecord) -> Key {
    (
        rec.event_time_us().unwrap_or(0),
        rec.source_sequence().unwrap_or(-1),
        rec.message_id(),
    )
}

impl Tail {
    pub fn new(config: TailConfig) -> Self {
        Tail {
            config,
            streams: Mutex::default(),
        }
    }

    /// Holds `records` (reference data is not held).
    pub fn insert(&self, records: impl IntoIterator<Item = MarketRecord>) {
        let max_age = self.config.max_age.as_micros() as i64;
        let mut streams = self.streams.lock().expect("tail lock");
        let (mut held, mut evicted, mut refused) = (0u64, 0u64, 0u64);
        for rec in records {
            let table = match rec.data_type() {
                DataType::Trades => LakeTable::Trades,
                DataType::Quotes => LakeTable::Quotes,
                DataType::ReferenceData => continue,
            };
            let id = (table, rec.exchange().to_string(), rec.symbol().to_string());
            if !streams.by_id.contains_key(&id) && streams.by_id.len() >= self.config.max_streams {
                refused += 1;
                continue;
            }
            let stream = streams.by_id.entry(id).or_default();
            if stream.events.insert(key(&rec), rec).is_none() {
                held += 1;
            }
            let newest = stream.events.last_key_value().map_or(0, |(k, _)| k.0);
            while stream.events.len() > self.config.max_per_stream
                || stream
                    .events
                    .first_key_value()
                    .is_some_and(|(k, _)| k.0 < newest - max_age)
            {
                stream.events.pop_first();
                evicted += 1;
            }
        }
        streams.events = streams.events + held as usize - evicted as usize;
        let total = streams.events;
        drop(streams);
        metrics::tail_events(held, evicted, refused, total);
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.streams.lock().expect("tail lock").events
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The held events of `table` that `filter` selects by symbol, exchange and time (the
    /// query applies the rest), at most `filter.limit` from its start when no cursor is
    /// given (the rest could not make the page).
    pub fn select(&self, table: LakeTable, filter: &MarketFilter) -> Vec<MarketRecord> {
        let streams = self.streams.lock().expect("tail lock");
        let mut out = Vec::new();
        for ((t, exchange, symbol), stream) in streams.by_id.iter() {
            if *t != table
                || (!filter.symbols.is_empty() && !filter.symbols.contains(symbol))
                || (!filter.exchanges.is_empty()
                    && !filter
                        .exchanges
                        .iter()
                        .any(|x| x.eq_ignore_ascii_case(exchange)))
            {
                continue;
            }
            let lo = filter.start_us.unwrap_or(i64::MIN);
            let hi = filter.end_us.unwrap_or(i64::MAX);
            let in_range = stream
                .events
                .range(
                    (lo, i64::MIN, MessageId::from_u128(0))
                        ..(hi, i64::MIN, MessageId::from_u128(0)),
                )
                .map(|(_, r)| r);
            let bound = if filter.after.is_none() && filter.limit > 0 {
                filter.limit
            } else {
                usize::MAX
            };
            match filter.order {
                RowOrder::NewestFirst => out.extend(in_range.rev().take(bound).cloned()),
                RowOrder::OldestFirst => out.extend(in_range.take(bound).cloned()),
            }
        }
        out
    }
}

/// Records the tail reads back from the end of each partition at most, when the lake is
/// further behind than that.
const BACKLOG: u64 = 100_000;

/// Where the tail starts reading each trades and quotes partition: where the lake's
/// current snapshot stops for `source` (the tail holds what the lake does not have yet),
/// at most [`BACKLOG`] records back from the end.
pub async fn start_positions<L: Log>(
    log: &L,
    catalog: &dyn Catalog,
    source: &str,
) -> Result<Vec<PartitionOffset>> {
    let mut committed = Positions::new();
    for table in [LakeTable::Trades, LakeTable::Quotes] {
        let t = catalog
            .load_table(&table.ident())
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
        committed.extend(commit_marks::committed_offsets(&t, source)?);
    }
    let mut start = Vec::new();
    for spec in log.topics().await? {
        let Ok(name) = TopicName::parse(&spec.name) else {
            continue;
        };
        if name.data_type == DataType::ReferenceData {
            continue;
        }
        let ends = log.end_offsets(&spec.name).await?;
        for (p, end) in ends.into_iter().enumerate() {
            let key = offset_key(source, &spec.name, p as u32);
            let lake = committed.get(&key).copied().unwrap_or(0);
            start.push(PartitionOffset {
                topic: spec.name.clone(),
                partition: p as u32,
                offset: lake.max(end.saturating_sub(BACKLOG)),
            });
        }
    }
    Ok(start)
}

/// Feeds `tail` from `assignment` (trades and quotes topics) until `stop` is cancelled. A
/// record that does not decode is passed over here (the lake writer dead-letters it).
pub async fn follow<L: Log + SchemaStore>(
    tail: Arc<Tail>,
    log: L,
    assignment: Vec<PartitionOffset>,
    stop: CancellationToken,
) -> k2_log::Result<()> {
    let mut consumer = log.consumer(assignment)?;
    let mut decoder = PayloadDecoder::default();
    let mut types: HashMap<Arc<str>, Option<DataType>> = HashMap::new();
    while !stop.is_cancelled() {
        let records = consumer.poll(10_000, Duration::from_millis(100)).await?;
        let mut batch = Vec::with_capacity(records.len());
        for r in records {
            let dt = *types
                .entry(r.topic.clone())
                .or_insert_with(|| TopicName::parse(&r.topic).ok().map(|t| t.data_type));
            let Some(dt) = dt.filter(|d| *d != DataType::ReferenceData) else {
                continue;
            };
            if let Ok(rec) = decoder.decode(&log, &r.value, dt).await? {
                batch.push(rec);
            }
        }
        if !batch.is_empty() {
            tail.insert(batch);
        }
    }
    Ok(())
}

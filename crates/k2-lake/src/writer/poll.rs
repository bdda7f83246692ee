//! A poll's records into the tables' pending batches: payloads decoded over the
//! machine's cores, each record routed to its table, deduplicated and sequence-checked,
//! undecodable ones kept as dead letters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k2_log::{
    ConsumedRecord, DeadLetter, LAKE_DECODE_STAGE, Log, PayloadDecoder, SchemaStore, Undecodable,
};
use k2_model::{DataType, exchange};

use super::dependencies::Dependency;
use super::options::WriterSummary;
use super::state::TableState;
use super::topics::Routes;
use crate::columns::{self, Row};
use crate::commit_marks::offset_key;
use crate::error::Result;
use crate::integrity::Verdict;
use crate::metrics;
use crate::tables::LakeTable;

/// Decodes and routes polls; keeps its buffers from poll to poll.
pub(super) struct Poller {
    decoder: PayloadDecoder,
    threads: usize,
    /// The decoded payloads of a poll.
    decoded: Vec<Decoded>,
    /// Per exchange: a handful, searched in order (cheaper than hashing the name per
    /// record).
    days: Vec<(String, TradingDays)>,
}

impl Poller {
    pub fn new() -> Self {
        Poller {
            decoder: PayloadDecoder::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            decoded: Vec::new(),
            days: Vec::new(),
        }
    }

    /// Adds the records to their tables' pending batches: rows admitted by dedup, dead
    /// letters for payloads that do not decode. Duplicates are counted per poll and
    /// published once (a labelled counter per record would cost more than the check).
    pub async fn admit<L: Log + SchemaStore>(
        &mut self,
        log: &L,
        records: &mut [ConsumedRecord],
        routes: &Routes,
        states: &mut BTreeMap<LakeTable, TableState>,
        source: &str,
        summary: &mut WriterSummary,
    ) -> Result<()> {
        // The schemas first (the store may be remote), then the payloads.
        self.decoder.learn(log, records).await?;
        tracing::trace_span!(target: k2_model::STAGE_SPANS, "decode", records = records.len())
            .in_scope(|| {
                decode_all(
                    &self.decoder,
                    records,
                    self.threads,
                    |rec| routes.get(&rec.topic).map(|(_, name)| name.data_type),
                    &mut self.decoded,
                )
            });
        let mut duplicates: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut at = 0;
        while at < records.len() {
            // Records come in runs of one partition: the table, the position's key and the
            // batch's first offset are looked up once per run.
            let (topic, partition) = (records[at].topic.clone(), records[at].partition);
            let run_len = records[at..]
                .iter()
                .position(|r| {
                    r.partition != partition || !(Arc::ptr_eq(&r.topic, &topic) || r.topic == topic)
                })
                .unwrap_or(records.len() - at);
            let run = at..at + run_len;
            at += run_len;
            let Some(&(table, _)) = routes.get(&topic) else {
                continue;
            };
            let state = states.get_mut(&table).expect("every table has a state");
            let key = offset_key(source, &topic, partition);
            if !state.batch_start.contains_key(&key) {
                state
                    .batch_start
                    .insert(key.clone(), records[run.start].offset);
            }
            state.oldest.get_or_insert_with(Instant::now);
            let end = records[run.end - 1].offset + 1;
            for (rec, decoded) in records[run.clone()].iter_mut().zip(&mut self.decoded[run]) {
                // Every record of a routed topic was decoded.
                let Some(decoded) = decoded.take() else {
                    continue;
                };
                match decoded {
                    Ok(k2_log::Decoded { record, extras }) => {
                        if state.integrity.admit(&record) == Verdict::Duplicate {
                            *duplicates.entry(table.name()).or_default() += 1;
                            continue;
                        }
                        let trade_date = record.event_time_us().map_or(0, |t| {
                            trading_days(&mut self.days, record.exchange()).day_of(t)
                        });
                        state.pending.push(Row {
                            record,
                            trade_date,
                            extras,
                        });
                    }
                    Err(Undecodable { kind, reason }) => {
                        metrics::decode_failed(kind);
                        state.pending_letters.push(DeadLetter {
                            stage: LAKE_DECODE_STAGE.into(),
                            source: format!("{}/{}@{}", rec.topic, rec.partition, rec.offset),
                            kind: kind.into(),
                            reason,
                            raw: std::mem::take(&mut rec.value),
                            rejected_at_us: chrono::Utc::now().timestamp_micros(),
                        });
                    }
                }
            }
            state.pending_offsets.insert(key, end);
        }
        for (table, n) in duplicates {
            metrics::duplicates_dropped(table, n);
            summary.duplicates_dropped += n;
        }
        Ok(())
    }
}

/// The sequence events of the records admitted since the last call, published and added
/// to the run's summary. With Redis the checks run here; a failure is retried like any
/// dependency's (a retry after a lost reply can count a message twice, never drop one).
pub(super) async fn publish_sequence_events(
    states: &mut BTreeMap<LakeTable, TableState>,
    redis: &mut Dependency,
    summary: &mut WriterSummary,
) -> Result<()> {
    for (t, state) in states.iter_mut() {
        let events = redis
            .call_mut(&mut state.integrity, |i| Box::pin(i.take_events()))
            .await?;
        for (event, n) in events.counts {
            metrics::sequence_events(t.name(), event, n);
            *summary.sequence_events.entry(event).or_default() += n;
        }
        for (exchange, symbol, gap) in events.gaps {
            summary.sequence_missing += gap.count();
            tracing::debug!(
                table = %t, exchange = %exchange, symbol = %symbol,
                first = gap.first, last = gap.last, "sequence gap"
            );
        }
    }
    Ok(())
}

/// The calendar of `exchange`, kept in `days`.
fn trading_days<'d>(
    days: &'d mut Vec<(String, TradingDays)>,
    exchange: &str,
) -> &'d mut TradingDays {
    let i = match days.iter().position(|(e, _)| e == exchange) {
        Some(i) => i,
        None => {
            days.push((exchange.to_string(), TradingDays::new(exchange)));
            days.len() - 1
        }
    };
    &mut days[i].1
}

/// An exchange's trading day of an instant, remembering the last day's bounds (rows come
/// in time order, so the time-zone lookup runs about once per day).
struct TradingDays {
    tz: chrono_tz::Tz,
    last: Option<(i64, i64, i32)>,
}

impl TradingDays {
    fn new(exchange_code: &str) -> Self {
        TradingDays {
            tz: exchange::time_zone(exchange_code),
            last: None,
        }
    }

    fn day_of(&mut self, ts_us: i64) -> i32 {
        if let Some((start, end, days)) = self.last
            && (start..end).contains(&ts_us)
        {
            return days;
        }
        let date = exchange::trading_day(self.tz, ts_us);
        let (start, end) = exchange::day_bounds_us(self.tz, date);
        let days = columns::days_since_epoch(date);
        self.last = Some((start, end, days));
        days
    }
}

/// Polls smaller than this are decoded on the writer's thread alone.
const PARALLEL_DECODE_FROM: usize = 4096;

/// A poll's records decoded: `None` for a record whose topic is not routed.
type Decoded = Option<std::result::Result<k2_log::Decoded, Undecodable>>;

/// Decodes a poll's payloads in order into `out` (one entry per record), spread over
/// `threads` threads when the poll is large: the writer's loop is one thread, and decoding
/// is its largest part. Each thread fills its own part of `out`, whose allocation the
/// writer keeps from poll to poll.
fn decode_all(
    decoder: &PayloadDecoder,
    records: &[ConsumedRecord],
    threads: usize,
    expected: impl Fn(&ConsumedRecord) -> Option<DataType> + Sync,
    out: &mut Vec<Decoded>,
) {
    let decode = |records: &[ConsumedRecord], out: &mut [Decoded]| {
        for (r, slot) in records.iter().zip(out) {
            *slot = expected(r).map(|dt| decoder.decode_with_extras(&r.value, dt));
        }
    };
    out.clear();
    out.resize_with(records.len(), || None);
    if threads < 2 || records.len() < PARALLEL_DECODE_FROM {
        return decode(records, out);
    }
    let share = records.len().div_ceil(threads);
    let (first, rest) = records.split_at(share);
    let (first_out, rest_out) = out.split_at_mut(share);
    let mut not_started = Vec::new();
    std::thread::scope(|s| {
        for (i, (part, part_out)) in rest
            .chunks(share)
            .zip(rest_out.chunks_mut(share))
            .enumerate()
        {
            let helper = std::thread::Builder::new()
                .name("k2-decode".into())
                .spawn_scoped(s, move || decode(part, part_out));
            if helper.is_err() {
                not_started.push(i + 1);
            }
        }
        decode(first, first_out);
    });
    // A helper that could not start leaves its part to this thread.
    for i in not_started {
        let part = i * share..((i + 1) * share).min(records.len());
        decode(&records[part.clone()], &mut out[part]);
    }
}

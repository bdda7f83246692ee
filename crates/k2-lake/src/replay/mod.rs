//! Replay: a time range of trades or quotes, of one symbol or many, delivered in the lake's
//! total order — (timestamp, source sequence, message id), the order of every market
//! answer — across all the symbols, at maximum speed or paced at ×N the recorded pace.
//!
//! The range is read window after window. A window's rows come back from the scan as the
//! Parquet files lay them out: sorted by (symbol, timestamp) in every file K2 writes. They
//! are cut into their ascending runs (a new run wherever the key falls) and a k-way merge
//! over the runs — a heap of run heads; a run that stays ahead goes on without touching
//! the heap — gives the window in order. Nothing is sorted: the cost is log(runs) per row,
//! and the order is right whatever the files' layout (an unsorted file of another engine
//! only makes more, shorter runs). Windows are disjoint and consecutive in time, so their
//! concatenation is the range in order.
//!
//! Memory is bounded by the window, not the range. Before any row is read, the range's
//! rows are counted per bucket of time (a pass over the timestamps alone), and the
//! windows are cut from those counts: each holds about [`ReplayOptions::window_rows`]
//! rows, and time without rows (nights, weekends) falls in no window at all. Two windows
//! are read at once, ahead of delivery, so one is scanned while the other is merged.
//!
//! The table is pinned at one snapshot for the whole replay, so commits made meanwhile do
//! not change what a replay returns.

mod merge;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::common::ScalarValue;

use self::merge::{K_ID, K_SEQ, K_TS, merge};
use crate::error::{LakeError, Result};
use crate::query::QueryEngine;
use crate::query::sql_text::{Conditions, columns, pick_fields, ts};
use crate::tables::LakeTable;

/// How fast a replay delivers its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplaySpeed {
    /// As fast as they can be read and taken.
    Max,
    /// ×N the recorded pace (1 = as it happened), from the first row's time.
    Times(f64),
}

impl ReplaySpeed {
    /// Fastest pace accepted (a day in under a tenth of a second).
    pub const MAX_FACTOR: f64 = 1e6;

    /// `max`, or a factor such as `1`, `10`, `0.5` (optionally written `x10`).
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(ReplaySpeed::Max);
        }
        let bad = || {
            LakeError::InvalidArgument(format!(
                "speed '{text}' is not 'max' or a factor between 0 and {} (e.g. 1, 10, 0.5)",
                Self::MAX_FACTOR
            ))
        };
        let factor: f64 = t
            .strip_prefix(['x', 'X'])
            .unwrap_or(t)
            .parse()
            .map_err(|_| bad())?;
        if !(factor.is_finite() && factor > 0.0 && factor <= Self::MAX_FACTOR) {
            return Err(bad());
        }
        Ok(ReplaySpeed::Times(factor))
    }
}

impl std::fmt::Display for ReplaySpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaySpeed::Max => f.write_str("max"),
            ReplaySpeed::Times(x) => write!(f, "x{x}"),
        }
    }
}

/// Sizes of a replay's work.
#[derive(Clone, Copy, Debug)]
pub struct ReplayOptions {
    /// Rows a window aims at; only rows of one microsecond are never split, so a window
    /// holds more only when that many share an instant.
    pub window_rows: usize,
    /// Rows per delivered batch (at most).
    pub batch_rows: usize,
    /// Buckets the range's rows are counted in, over their own extent; a bucket holding
    /// more than a window is counted again, as finely.
    pub density_buckets: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            window_rows: 256 * 1024,
            batch_rows: 8192,
            density_buckets: 100_000,
        }
    }
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayRequest {
    /// Trades or quotes.
    pub table: LakeTable,
    /// Any of these symbols (empty: all).
    pub symbols: Vec<String>,
    /// Any of these exchanges, case-insensitive (empty: all).
    pub exchanges: Vec<String>,
    /// Inclusive start and exclusive end, UTC microseconds.
    pub start_us: i64,
    pub end_us: i64,
    /// Columns to deliver (empty: every column of the table, in schema order).
    pub fields: Vec<String>,
    pub speed: ReplaySpeed,
    /// The snapshot to replay (None: the current one when the replay starts).
    pub snapshot: Option<i64>,
    pub options: ReplayOptions,
}

impl ReplayRequest {
    /// Every row of `table` in `[start_us, end_us)`: all symbols and exchanges, every
    /// column, at maximum speed, from the current snapshot.
    pub fn range(table: LakeTable, start_us: i64, end_us: i64) -> ReplayRequest {
        ReplayRequest {
            table,
            symbols: Vec::new(),
            exchanges: Vec::new(),
            start_us,
            end_us,
            fields: Vec::new(),
            speed: ReplaySpeed::Max,
            snapshot: None,
            options: ReplayOptions::default(),
        }
    }
}

/// What a replay has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Rows delivered.
    pub rows: u64,
    /// Windows read.
    pub windows: u64,
    /// Buckets counted again, more finely, because they held more than a window.
    pub recounts: u64,
    /// Ascending runs merged.
    pub runs: u64,
}

/// A replay in progress: call [`next`](Replay::next) until it gives `None`.
pub struct Replay {
    reader: Arc<WindowReader>,
    /// Windows not started yet, `[start, end)`, in time order.
    planned: VecDeque<(i64, i64)>,
    /// Windows being read, consecutive in time, oldest first.
    reading: VecDeque<tokio::task::JoinHandle<Result<Window>>>,
    ready: VecDeque<Ordered>,
    clock: Option<Clock>,
    stats: ReplayStats,
    snapshot_id: Option<i64>,
}

/// Windows read at once, ahead of delivery.
const READ_AHEAD: usize = 2;

/// Rows in order, with their timestamps (for pacing); `offset` rows already delivered.
pub(super) struct Ordered {
    batch: RecordBatch,
    times: Vec<i64>,
    offset: usize,
}

/// Paces delivery at `speed` × the recorded pace, from the first row delivered.
struct Clock {
    speed: f64,
    origin: Option<(i64, tokio::time::Instant)>,
}

/// Reads one window of the range: the fixed parts of its query.
struct WindowReader {
    engine: Arc<QueryEngine>,
    table: LakeTable,
    snapshot_id: i64,
    /// `SELECT … WHERE` with `$1`/`$2` for the window's bounds; `params` bind `$3…`.
    sql: String,
    /// Its `WHERE …`, which the plan counts the rows of.
    clause: String,
    params: Vec<ScalarValue>,
    /// Columns delivered (the first `fields` of each row; the key columns follow).
    fields: usize,
    options: ReplayOptions,
}

/// One window read and merged.
struct Window {
    runs: usize,
    ordered: Vec<Ordered>,
}

impl QueryEngine {
    /// Starts replaying `request` (its first window is being read when this returns).
    pub async fn replay(self: &Arc<Self>, request: ReplayRequest) -> Result<Replay> {
        let ReplayRequest {
            table,
            symbols,
            exchanges,
            start_us,
            end_us,
            fields,
            speed,
            snapshot,
            options,
        } = request;
        if !matches!(table, LakeTable::Trades | LakeTable::Quotes) {
            return Err(LakeError::InvalidArgument(format!(
                "{table} cannot be replayed: only trades and quotes are events in time"
            )));
        }
        if end_us <= start_us {
            return Err(LakeError::InvalidArgument(
                "a replay's end must be after its start".into(),
            ));
        }
        if options.window_rows == 0 || options.batch_rows == 0 || options.density_buckets < 2 {
            return Err(LakeError::InvalidArgument(
                "replay window and batch sizes must be positive, and rows are counted in \
                 at least 2 buckets"
                    .into(),
            ));
        }
        let all = columns(table);
        let default: Vec<&str> = all.iter().map(String::as_str).collect();
        let fields = pick_fields(table, &fields, &default)?;
        let snapshot_id = match snapshot {
            Some(id) => Some(id),
            None => self.current_snapshot(table).await?,
        };
        let clock = match speed {
            ReplaySpeed::Max => None,
            ReplaySpeed::Times(speed) => Some(Clock {
                speed,
                origin: None,
            }),
        };
        let mut w = Conditions::default();
        w.add(r#""timestamp" >= ?"#, ts(start_us));
        w.add(r#""timestamp" < ?"#, ts(end_us));
        w.any_of("symbol", symbols.iter().map(|s| s.as_str().into()));
        w.any_of(
            "exchange",
            exchanges
                .iter()
                .map(|x| x.to_ascii_uppercase().as_str().into()),
        );
        let list = fields
            .iter()
            .map(|f| format!(r#""{f}""#))
            .collect::<Vec<_>>()
            .join(", ");
        let clause = w.clause();
        let sql = format!(
            r#"SELECT {list}, "timestamp" AS {K_TS}, coalesce(source_sequence, -1) AS {K_SEQ}, message_id AS {K_ID} FROM t {clause}"#,
        );
        // The window's bounds replace the range's ($1, $2) on each read.
        let params = w.params.split_off(2);
        let reader = Arc::new(WindowReader {
            engine: self.clone(),
            table,
            snapshot_id: snapshot_id.unwrap_or_default(),
            sql,
            clause,
            params,
            fields: fields.len(),
            options,
        });
        let (planned, recounts) = match snapshot_id {
            Some(_) => reader.plan(start_us, end_us).await?,
            None => Default::default(),
        };
        let mut replay = Replay {
            reader,
            planned,
            reading: VecDeque::new(),
            ready: VecDeque::new(),
            clock,
            stats: ReplayStats {
                recounts,
                ..Default::default()
            },
            snapshot_id,
        };
        let windows = replay.planned.len();
        replay.read_ahead();
        tracing::debug!(%table, %speed, start_us, end_us, ?snapshot_id, windows, "replay started");
        Ok(replay)
    }
}

impl Replay {
    /// The snapshot replayed (None: the table had none, and the replay is empty).
    pub fn snapshot_id(&self) -> Option<i64> {
        self.snapshot_id
    }

    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    /// The next rows in order (paced when a speed was set); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(front) = self.ready.front_mut() {
                let rows = front.batch.num_rows();
                let n = match &mut self.clock {
                    None => rows - front.offset,
                    Some(clock) => clock.due(&front.times[front.offset..]).await,
                };
                let out = front.batch.slice(front.offset, n);
                front.offset += n;
                if front.offset == rows {
                    self.ready.pop_front();
                }
                self.stats.rows += n as u64;
                crate::metrics::replayed(self.reader.table.name(), n);
                return Ok(Some(out));
            }
            let Some(reading) = self.reading.pop_front() else {
                return Ok(None);
            };
            let window = reading
                .await
                .map_err(|e| LakeError::task("a replay window", e))??;
            self.stats.windows += 1;
            self.stats.runs += window.runs as u64;
            self.read_ahead();
            self.ready.extend(window.ordered);
        }
    }

    /// Starts the planned windows until [`READ_AHEAD`] are being read.
    fn read_ahead(&mut self) {
        while self.reading.len() < READ_AHEAD
            && let Some((start, end)) = self.planned.pop_front()
        {
            let reader = self.reader.clone();
            self.reading
                .push_back(tokio::spawn(async move { reader.read(start, end).await }));
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        for reading in &self.reading {
            reading.abort();
        }
    }
}

impl Clock {
    /// Waits until the first of `times` is due; then how many of them are.
    async fn due(&mut self, times: &[i64]) -> usize {
        let (t0, at) = *self
            .origin
            .get_or_insert_with(|| (times[0], tokio::time::Instant::now()));
        tokio::time::sleep_until(at + self.after(t0, times[0])).await;
        self.count_due(t0, times, at.elapsed())
    }

    /// How long after the first row's delivery a row of time `ts` is due.
    fn after(&self, t0: i64, ts: i64) -> Duration {
        Duration::from_secs_f64((ts - t0).max(0) as f64 / 1e6 / self.speed)
    }

    /// How many of `times` are due `elapsed` after the first row's delivery (at least one:
    /// the caller waited for the first).
    fn count_due(&self, t0: i64, times: &[i64], elapsed: Duration) -> usize {
        let reached = t0 + (elapsed.as_secs_f64() * self.speed * 1e6) as i64;
        times.partition_point(|&t| t <= reached).max(1)
    }
}

impl WindowReader {
    /// The windows that cover every row of `[start, end)`, in order, and how many
    /// buckets were counted again. Consecutive buckets are joined until a window holds
    /// `window_rows` rows; a window runs from its first row's time to just after its last
    /// row's, so time without rows falls in no window and costs nothing. The counts are
    /// exact at the pinned snapshot.
    async fn plan(&self, start: i64, end: i64) -> Result<(VecDeque<(i64, i64)>, u64)> {
        let started = Instant::now();
        let mut buckets = Vec::new();
        let recounts = self.count(start, end, &mut buckets).await?;
        let target = self.options.window_rows as u64;
        let mut windows = VecDeque::new();
        // The window being filled: from, to, rows.
        let mut open: Option<(i64, i64, u64)> = None;
        for &Bucket { first, last, rows } in &buckets {
            let w = open.get_or_insert((first, last + 1, 0));
            w.1 = last + 1;
            w.2 += rows;
            if w.2 >= target {
                windows.push_back((w.0, w.1));
                open = None;
            }
        }
        if let Some((from, to, _)) = open {
            windows.push_back((from, to));
        }
        tracing::debug!(
            table = %self.table,
            buckets = buckets.len(),
            recounts,
            windows = windows.len(),
            ms = started.elapsed().as_millis() as u64,
            "replay planned"
        );
        Ok((windows, recounts))
    }

    /// Appends the non-empty buckets of `[start, end)` to `out`, in time order, each
    /// holding at most `window_rows` rows unless they share one microsecond; returns how
    /// many buckets were counted again to get there. Only timestamps are read.
    fn count<'a>(
        &'a self,
        start: i64,
        end: i64,
        out: &'a mut Vec<Bucket>,
    ) -> futures::future::BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let extent = self
                .query_sql(
                    &format!(
                        r#"SELECT min("timestamp"), max("timestamp") FROM t {}"#,
                        self.clause
                    ),
                    start,
                    end,
                )
                .await?;
            let bound = |c: usize| {
                extent
                    .iter()
                    .find(|b| b.num_rows() > 0)
                    .and_then(|b| b.column(c).as_primitive_opt::<TimestampMicrosecondType>())
                    .filter(|a| a.is_valid(0))
                    .map(|a| a.value(0))
            };
            let (Some(first), Some(last)) = (bound(0), bound(1)) else {
                return Ok(0);
            };
            let width = (last - first) / self.options.density_buckets as i64 + 1;
            let counts = self
                .query_sql(
                    &format!(
                        r#"SELECT min("timestamp"), max("timestamp"), count(*) FROM t {} GROUP BY date_bin(INTERVAL '{width} microseconds', "timestamp") ORDER BY 1"#,
                        self.clause
                    ),
                    start,
                    end,
                )
                .await?;
            let mut recounts = 0;
            for batch in &counts {
                let (Some(firsts), Some(lasts), Some(rows)) = (
                    batch
                        .column(0)
                        .as_primitive_opt::<TimestampMicrosecondType>(),
                    batch
                        .column(1)
                        .as_primitive_opt::<TimestampMicrosecondType>(),
                    batch.column(2).as_primitive_opt::<Int64Type>(),
                ) else {
                    return Err(LakeError::CorruptData(
                        "replay plan: the counts per bucket have unexpected types".into(),
                    ));
                };
                for i in 0..batch.num_rows() {
                    let bucket = Bucket {
                        first: firsts.value(i),
                        last: lasts.value(i),
                        rows: rows.value(i) as u64,
                    };
                    if bucket.rows > self.options.window_rows as u64 && bucket.last > bucket.first {
                        recounts += 1 + self.count(bucket.first, bucket.last + 1, out).await?;
                    } else {
                        out.push(bucket);
                    }
                }
            }
            Ok(recounts)
        })
    }

    /// Reads `[start, end)` and merges its runs into order.
    async fn read(&self, start: i64, end: i64) -> Result<Window> {
        let started = Instant::now();
        let batches = self.query_sql(&self.sql, start, end).await?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let (ordered, runs) = merge(&batches, self.fields, self.options.batch_rows)?;
        crate::metrics::replay_window(self.table.name(), started.elapsed());
        tracing::trace!(
            table = %self.table,
            start,
            end,
            rows,
            runs,
            ms = started.elapsed().as_millis() as u64,
            "replay window"
        );
        Ok(Window { runs, ordered })
    }

    /// `sql`, whose `WHERE` is the replay's, over `[start, stop)` at the pinned snapshot.
    async fn query_sql(&self, sql: &str, start: i64, stop: i64) -> Result<Vec<RecordBatch>> {
        let engine = &self.engine;
        let ctx = engine
            .context_for(self.table, Some(self.snapshot_id))
            .await?;
        let mut params = vec![ts(start), ts(stop)];
        params.extend(self.params.iter().cloned());
        engine.run_raw("replay", &ctx, sql, params, None).await
    }
}

/// Rows counted in one bucket of time: the first and last row's times and how many.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    first: i64,
    last: i64,
    rows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_and_bad_ones_are_named() {
        assert_eq!(ReplaySpeed::parse("max").unwrap(), ReplaySpeed::Max);
        assert_eq!(ReplaySpeed::parse("10").unwrap(), ReplaySpeed::Times(10.0));
        assert_eq!(ReplaySpeed::parse("x0.5").unwrap(), ReplaySpeed::Times(0.5));
        for bad in ["0", "-1", "fast", "inf", "1e7"] {
            let e = ReplaySpeed::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_clock_paces_rows_at_the_factor() {
        // At x10, one second of recording passes in 100 ms.
        let clock = Clock {
            speed: 10.0,
            origin: None,
        };
        let ms = Duration::from_millis;
        assert_eq!(clock.after(1_000_000, 1_500_000), ms(50));
        assert_eq!(clock.after(1_000_000, 4_000_000), ms(300));
        let times = [0, 500_000, 1_000_000, 1_000_000, 3_000_000];
        assert_eq!(clock.count_due(0, &times, ms(0)), 1);
        assert_eq!(clock.count_due(0, &times, ms(99)), 2);
        assert_eq!(clock.count_due(0, &times, ms(100)), 4);
        assert_eq!(clock.count_due(0, &times, ms(10_000)), 5);
        // Late (the reader was slow): everything due at once, never a row early.
        assert_eq!(clock.count_due(0, &times[4..], ms(0)), 1);
    }
}

//! Rows as users see them: exact decimal text for prices and volumes, ISO times.

use chrono::{DateTime, NaiveDate};
use k2_lake::query::{Bar, DailySummary, Ohlcv, SnapshotInfo};
use k2_log::DeadLetter;
use k2_model::decimal::format_units;
use serde::Serialize;

pub fn iso_us(us: i64) -> String {
    DateTime::from_timestamp_micros(us).map_or_else(
        || us.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    )
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OhlcvRow {
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub trade_count: i64,
    pub vwap: String,
}

impl From<&Ohlcv> for OhlcvRow {
    fn from(o: &Ohlcv) -> Self {
        let px = |u: i64| format_units(i128::from(u), 8);
        OhlcvRow {
            open: px(o.open),
            high: px(o.high),
            low: px(o.low),
            close: px(o.close),
            volume: format_units(o.volume, 8),
            trade_count: o.trade_count,
            vwap: px(o.vwap()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SummaryRow {
    pub symbol: String,
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    #[serde(flatten)]
    pub ohlcv: OhlcvRow,
}

impl From<&DailySummary> for SummaryRow {
    fn from(s: &DailySummary) -> Self {
        SummaryRow {
            symbol: s.symbol.clone(),
            date: s.date,
            ohlcv: (&s.ohlcv).into(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BarRow {
    pub start: String,
    #[serde(flatten)]
    pub ohlcv: OhlcvRow,
}

impl From<&Bar> for BarRow {
    fn from(b: &Bar) -> Self {
        BarRow {
            start: iso_us(b.start_us),
            ohlcv: (&b.ohlcv).into(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotRow {
    pub snapshot_id: i64,
    pub parent_id: Option<i64>,
    pub committed_at: String,
    pub operation: String,
    pub added_records: Option<u64>,
    pub total_records: Option<u64>,
    pub added_files: Option<u64>,
    /// The tags naming it, comma-separated (time travel by name: `snapshot=TAG`).
    pub tags: String,
}

impl From<&SnapshotInfo> for SnapshotRow {
    fn from(s: &SnapshotInfo) -> Self {
        SnapshotRow {
            snapshot_id: s.snapshot_id,
            parent_id: s.parent_id,
            committed_at: iso_us(s.timestamp_ms * 1000),
            operation: s.operation.clone(),
            added_records: s.added_records,
            total_records: s.total_records,
            added_files: s.added_files,
            tags: s.tags.join(","),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeadLetterRow {
    pub id: u64,
    pub rejected_at: String,
    pub stage: String,
    pub source: String,
    pub kind: String,
    pub reason: String,
    /// The raw record: its text when it is UTF-8 (CSV lines), else `hex:` and its bytes.
    pub raw: String,
}

impl From<&(u64, DeadLetter)> for DeadLetterRow {
    fn from((id, d): &(u64, DeadLetter)) -> Self {
        DeadLetterRow {
            id: *id,
            rejected_at: iso_us(d.rejected_at_us),
            stage: d.stage.clone(),
            source: d.source.clone(),
            kind: d.kind.clone(),
            reason: d.reason.clone(),
            raw: match std::str::from_utf8(&d.raw) {
                Ok(text) => text.trim_end_matches(['\r', '\n']).to_string(),
                Err(_) => {
                    let hex: String = d.raw.iter().map(|b| format!("{b:02x}")).collect();
                    format!("hex:{hex}")
                }
            },
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub committed_at: String,
    pub table: String,
    pub snapshot_before: Option<i64>,
    pub snapshot_after: i64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// `topic/partition: from..to` per partition the commit covered.
    pub offsets: String,
    pub duration_ms: Option<u64>,
    pub recovered: bool,
}

impl From<&k2_lake::audit::AuditEntry> for AuditRow {
    fn from(e: &k2_lake::audit::AuditEntry) -> Self {
        let offsets = e
            .offsets_to
            .iter()
            .filter(|(k, _)| e.recovered || e.offsets_from.contains_key(*k))
            .map(|(k, to)| match e.offsets_from.get(k) {
                Some(from) => format!("{k}: {from}..{to}"),
                None => format!("{k}: ..{to}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        AuditRow {
            committed_at: iso_us(e.committed_at_us),
            table: e.table.clone(),
            snapshot_before: e.snapshot_before,
            snapshot_after: e.snapshot_after,
            rows: e.rows,
            files: e.files,
            bytes: e.bytes,
            offsets,
            duration_ms: e.duration_ms,
            recovered: e.recovered,
        }
    }
}

/// One symbol over one interval of `/v1/aggregations`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AggregateRow {
    pub symbol: String,
    pub interval_start: String,
    pub interval_end: String,
    #[serde(flatten)]
    pub ohlcv: OhlcvRow,
    pub twap: String,
}

impl From<&k2_lake::query::AggregateRow> for AggregateRow {
    fn from(r: &k2_lake::query::AggregateRow) -> Self {
        AggregateRow {
            symbol: r.symbol.clone(),
            interval_start: iso_us(r.start_us),
            interval_end: iso_us(r.end_us),
            ohlcv: (&r.ohlcv).into(),
            twap: format_units(i128::from(r.twap), 8),
        }
    }
}

/// Volume at one price in one interval.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PriceLevelRow {
    pub symbol: String,
    pub interval_start: String,
    pub price: String,
    pub volume: String,
    pub trade_count: i64,
}

impl From<&k2_lake::query::PriceLevel> for PriceLevelRow {
    fn from(l: &k2_lake::query::PriceLevel) -> Self {
        PriceLevelRow {
            symbol: l.symbol.clone(),
            interval_start: iso_us(l.start_us),
            price: format_units(i128::from(l.price), 8),
            volume: format_units(l.volume, 8),
            trade_count: l.trade_count,
        }
    }
}

//! The completeness ledger as tables: `quality.streams` (one row per stream and table),
//! `quality.gaps` (one row per gap found, open or closed) and `quality.sessions` (one row
//! per session of a stream), read from the sequence state the tables' snapshots name.
//! SQL, the REST routes and the CLI all read them through [`QueryEngine::ledgers`].

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session as DfSession;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use iceberg::table::Table;
use k2_pipeline::GapStatus;

use super::QueryEngine;
use super::pin::Pin;
use crate::error::{LakeError, Result};
use crate::integrity::ledger::{self, Ledger};
use crate::tables::LakeTable;

/// The tables whose records carry source sequences.
pub const SEQUENCED: [LakeTable; 2] = [LakeTable::Trades, LakeTable::Quotes];

/// The three views of the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerView {
    Streams,
    Gaps,
    Sessions,
}

impl LedgerView {
    pub const ALL: [LedgerView; 3] = [LedgerView::Streams, LedgerView::Gaps, LedgerView::Sessions];

    /// The table's name in the `quality` namespace.
    pub fn name(self) -> &'static str {
        match self {
            LedgerView::Streams => "streams",
            LedgerView::Gaps => "gaps",
            LedgerView::Sessions => "sessions",
        }
    }

    pub fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, false);
        let count = |n: &str| Field::new(n, DataType::UInt64, false);
        let time = |n: &str, null: bool| {
            Field::new(
                n,
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                null,
            )
        };
        // Every view starts with the stream, its session and the sequences it spans.
        let key = [
            text("table"),
            text("exchange"),
            text("symbol"),
            count("session"),
            count("first_sequence"),
            count("last_sequence"),
        ];
        let rest = match self {
            LedgerView::Streams => vec![
                count("received"),
                count("in_order"),
                count("gaps"),
                count("gap_messages"),
                count("late_fills"),
                count("missing"),
                count("lost"),
                count("sequence_duplicates"),
                count("duplicates_dropped"),
                count("resets"),
                count("too_old"),
                time("session_started", false),
            ],
            LedgerView::Gaps => vec![
                count("size"),
                text("status"),
                count("filled"),
                count("lost"),
                count("missing"),
                time("found_at", false),
                time("closed_at", true),
            ],
            LedgerView::Sessions => vec![
                count("received"),
                time("started_at", false),
                time("ended_at", true),
            ],
        };
        let fields: Vec<Field> = key.into_iter().chain(rest).collect();
        Arc::new(Schema::new(fields))
    }

    /// The view's rows over `ledgers`.
    pub fn batch(self, ledgers: &[Ledger]) -> Result<RecordBatch> {
        let mut columns = Columns::default();
        for l in ledgers {
            for s in &l.streams {
                let key = |c: &mut Columns| {
                    c.text(0, l.table.to_string());
                    c.text(1, s.exchange.clone());
                    c.text(2, s.symbol.clone());
                };
                match self {
                    LedgerView::Streams => {
                        key(&mut columns);
                        let st = &s.stats;
                        for (i, v) in [
                            u64::from(s.session.session),
                            s.session.first,
                            s.session.last,
                            st.total,
                            st.in_order,
                            st.gaps,
                            st.gap_messages,
                            st.late_fills,
                            s.missing,
                            st.lost,
                            st.duplicates,
                            s.duplicates_dropped,
                            st.resets,
                            st.too_old,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            columns.count(3 + i, v);
                        }
                        columns.time(17, Some(s.session.started_us));
                    }
                    LedgerView::Gaps => {
                        for g in &s.gaps {
                            key(&mut columns);
                            for (i, v) in [u64::from(g.session), g.first, g.last, g.size()]
                                .into_iter()
                                .enumerate()
                            {
                                columns.count(3 + i, v);
                            }
                            columns.text(7, g.status().as_str().to_string());
                            columns.count(8, g.filled);
                            columns.count(9, g.lost);
                            columns.count(10, g.missing());
                            columns.time(11, Some(g.found_us));
                            columns.time(12, g.closed_us);
                        }
                    }
                    LedgerView::Sessions => {
                        for session in s.ended_sessions.iter().chain([&s.session]) {
                            key(&mut columns);
                            for (i, v) in [
                                u64::from(session.session),
                                session.first,
                                session.last,
                                session.received,
                            ]
                            .into_iter()
                            .enumerate()
                            {
                                columns.count(3 + i, v);
                            }
                            columns.time(7, Some(session.started_us));
                            columns.time(8, session.ended_us);
                        }
                    }
                }
            }
        }
        columns.finish(self.schema())
    }
}

/// The part of the ledger a reader asks for: a table, an exchange, a symbol, and for gaps
/// a status.
#[derive(Clone, Debug, Default)]
pub struct LedgerFilter {
    pub table: Option<LakeTable>,
    pub exchange: Option<String>,
    pub symbol: Option<String>,
    pub status: Option<GapStatus>,
}

impl LedgerFilter {
    pub fn apply(&self, mut ledgers: Vec<Ledger>) -> Vec<Ledger> {
        ledgers.retain(|l| self.table.is_none_or(|t| t == l.table));
        for l in &mut ledgers {
            l.streams.retain(|s| {
                self.exchange.as_ref().is_none_or(|x| *x == s.exchange)
                    && self.symbol.as_ref().is_none_or(|x| *x == s.symbol)
            });
            if let Some(status) = self.status {
                for s in &mut l.streams {
                    s.gaps.retain(|g| g.status() == status);
                }
            }
        }
        ledgers
    }
}

/// Column values by position, typed as the view's schema says.
#[derive(Default)]
struct Columns {
    texts: std::collections::BTreeMap<usize, Vec<String>>,
    counts: std::collections::BTreeMap<usize, Vec<u64>>,
    times: std::collections::BTreeMap<usize, Vec<Option<i64>>>,
}

impl Columns {
    fn text(&mut self, i: usize, v: String) {
        self.texts.entry(i).or_default().push(v);
    }
    fn count(&mut self, i: usize, v: u64) {
        self.counts.entry(i).or_default().push(v);
    }
    fn time(&mut self, i: usize, v: Option<i64>) {
        self.times.entry(i).or_default().push(v);
    }

    fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| -> ArrayRef {
                match f.data_type() {
                    DataType::Utf8 => {
                        Arc::new(StringArray::from(self.texts.remove(&i).unwrap_or_default()))
                    }
                    DataType::UInt64 => Arc::new(UInt64Array::from(
                        self.counts.remove(&i).unwrap_or_default(),
                    )),
                    _ => Arc::new(
                        TimestampMicrosecondArray::from(self.times.remove(&i).unwrap_or_default())
                            .with_timezone("+00:00"),
                    ),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).map_err(|e| LakeError::arrow("the ledger's rows", e))
    }
}

/// A ledger view as a table: read when a query scans it, at the snapshots pinned when the
/// query began.
#[derive(Debug)]
pub(crate) struct LedgerTable {
    view: LedgerView,
    tables: Vec<(LakeTable, Table, Option<i64>)>,
    state_root: PathBuf,
}

impl LedgerTable {
    /// `view` over `tables`, each at its snapshot (None: its current one).
    pub(crate) fn new(
        view: LedgerView,
        tables: Vec<(LakeTable, Table, Option<i64>)>,
        state_root: PathBuf,
    ) -> Self {
        LedgerTable {
            view,
            tables,
            state_root,
        }
    }

    fn read(&self) -> Result<Vec<Ledger>> {
        self.tables
            .iter()
            .map(|(t, table, at)| ledger::read(*t, table, *at, &self.state_root))
            .collect()
    }
}

#[async_trait::async_trait]
impl TableProvider for LedgerTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .read()
            .and_then(|ledgers| self.view.batch(&ledgers))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.view.schema(),
            projection.cloned(),
        )?)
    }
}

impl QueryEngine {
    /// The completeness ledgers of the trades and quotes tables (of `only` when given) at
    /// `pin`: a snapshot id names one table's snapshot, so it pins that table alone. Needs
    /// the writer's state directory ([`QueryEngine::with_ledger`]).
    pub async fn ledgers(&self, pin: &Pin, only: Option<LakeTable>) -> Result<Vec<Ledger>> {
        let Some(state_root) = self.state_root.clone() else {
            return Err(LakeError::NotFound(
                "the completeness ledger (this server does not see the writer's state directory)"
                    .into(),
            ));
        };
        let mut tables = Vec::new();
        for t in SEQUENCED
            .into_iter()
            .filter(|t| only.is_none_or(|o| o == *t))
        {
            let table = self.table(t).await?;
            // Before its first commit a table had no streams.
            if !pin.before_first_commit(&table) {
                let at = self.pin(t, pin).await?.0;
                tables.push((t, table, at));
            }
        }
        LedgerTable::new(LedgerView::Streams, tables, state_root).read()
    }
}

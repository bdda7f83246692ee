//! The lake writer: log → decode → batch → Parquet → Iceberg fast-append, exactly once.
//!
//! Exactly once rests on one rule: the log positions a commit covers are written in the
//! same Iceberg snapshot as its data (see [`crate::commit_marks`]). On start the writer
//! reads them back from each table's newest snapshot and resumes there, so a crash at any
//! point either loses the uncommitted batch (read again on restart) or keeps it (never read
//! again). Files written but not committed are orphans no snapshot refers to; their names
//! derive from the log positions they hold.
//!
//! A batch is encoded and committed on its own task while the writer polls and decodes the
//! next one (one batch in flight at a time, so commits stay in order). What the batch
//! stands for is fixed when it is cut: its positions, and the dedup and sequence state of
//! every record admitted up to then.
//!
//! # Layout
//!
//! - [`run`] — the loop, a short sequence of named steps (this file).
//! - `options` — the `[writer]` section ([`WriterConfig`]), [`WriterOptions`],
//!   [`WriterSummary`].
//! - `dependencies` — catalog, storage, log and Redis behind retries and breakers.
//! - `state` — what the writer holds per table.
//! - `topics` — topics → tables, topics that appear, catching up with the log's end.
//! - `poll` — records decoded, deduplicated, sequence-checked, added to batches.
//! - `flight` — a batch cut, in flight, landed; `claims` — shared dedup in Redis.
//! - `commit` — a batch written and committed; `files` — its Parquet files.
//! - `reports` — group positions and lag; `maintenance` — expiry and orphan sweeps.

mod claims;
mod commit;
mod dependencies;
mod evolve;
pub(crate) mod files;
mod flight;
mod maintenance;
mod options;
mod poll;
mod reports;
mod state;
mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::Catalog;
use k2_log::{ConsumedRecord, DeadLetterStore, Log, LogConsumer, PartitionOffset, SchemaStore};
use tokio_util::sync::CancellationToken;

use self::dependencies::Deps;
use self::flight::{Flight, Letters, land, take_off};
pub use self::options::{Degradation, EXPIRE_EVERY, WriterConfig, WriterOptions, WriterSummary};
use self::poll::{Poller, publish_sequence_events};
use self::reports::Reports;
use self::state::TableState;
use self::topics::{Routes, TOPIC_REFRESH, add_new_topics, caught_up};
use crate::error::Result;
use crate::metrics;
use crate::tables::LakeTable;

/// Runs the writer until `stop` is cancelled (or until caught up in batch mode). A stop
/// commits what has been read and lands the batch in flight before returning.
pub async fn run<L: Log + SchemaStore + Clone>(
    log: &L,
    catalog: Arc<dyn Catalog>,
    dlq: &DeadLetterStore,
    options: &WriterOptions,
    stop: CancellationToken,
) -> Result<WriterSummary> {
    let mut w = Writer::start(log, catalog, dlq, options, &stop).await?;
    loop {
        w.follow_degradation()?;
        w.join_new_topics().await?;
        let got = w.poll().await?;
        let stopping = stop.is_cancelled();
        // A batch run finishes once a poll brings nothing or every partition has been
        // read to the end the consumer last saw: the empty poll after the last records
        // is not waited out.
        let read_to_end = w.consumer.read_to_end();
        let drained = options.until_caught_up && (got == 0 || read_to_end);
        // Where the log ends, when the consumer knows it without asking.
        let ends_read = read_to_end.then(|| w.consumer.positions());
        w.renew_claims_in_flight().await?;
        w.flush_due(stopping || drained, ends_read.as_deref())
            .await?;
        if stopping || (drained && w.caught_up(ends_read.as_deref()).await?) {
            break;
        }
    }
    Ok(w.finish(stop.is_cancelled()).await)
}

/// A writer run's state between steps.
struct Writer<'a, L: Log> {
    log: &'a L,
    catalog: Arc<dyn Catalog>,
    letters: Letters<'a, L>,
    options: &'a WriterOptions,
    deps: Deps,
    states: BTreeMap<LakeTable, TableState>,
    routes: Routes,
    consumer: L::Consumer,
    reports: Reports,
    poller: Poller,
    summary: WriterSummary,
    flight: Option<Flight>,
    topics_checked: Instant,
    /// The log's ends per topic as last seen, while catching up in batch mode.
    ends_seen: HashMap<Arc<str>, Vec<u64>>,
    /// Partitions the degradation defers, at the positions they will be read from.
    deferred: Vec<PartitionOffset>,
    /// Whether the degradation defers streams now (as of the last look).
    deferring: bool,
    started: Instant,
}

impl<'a, L: Log + SchemaStore + Clone> Writer<'a, L> {
    /// Every table as its newest commit left it, and every partition of every K2 topic
    /// assigned from the position its table committed.
    async fn start(
        log: &'a L,
        catalog: Arc<dyn Catalog>,
        dlq: &'a DeadLetterStore,
        options: &'a WriterOptions,
        stop: &CancellationToken,
    ) -> Result<Self> {
        let started = Instant::now();
        metrics::writer_started(&LakeTable::ALL);
        let mut deps = Deps::new(options, stop);
        // A catalog that is down at start is waited for like one that fails later.
        deps.catalog()
            .call(|| crate::tables::ensure_tables(catalog.as_ref()))
            .await?;
        let mut states = BTreeMap::new();
        for t in LakeTable::ALL {
            let state = TableState::load(t, catalog.as_ref(), deps.catalog(), options).await?;
            states.insert(t, state);
        }
        let mut routes = Routes::new();
        let mut assignment = Vec::new();
        add_new_topics(
            log,
            &options.source,
            &mut deps.log,
            &states,
            &mut routes,
            &mut assignment,
        )
        .await?;
        tracing::info!(partitions = assignment.len(), "lake writer starting");
        let consumer = log.consumer(assignment.clone())?;
        // The group's positions are the lake's from the start (on Kafka this also has the
        // group's client find its coordinator before the first commit needs it), and each
        // partition's lag is known at once.
        let reports = Reports::start(log, &options.group, options.degradation.clone());
        reports.report(assignment, None);
        Ok(Writer {
            log,
            catalog,
            letters: Letters { store: dlq, log },
            options,
            deps,
            states,
            routes,
            consumer,
            reports,
            poller: Poller::new(),
            summary: WriterSummary::default(),
            flight: None,
            topics_checked: Instant::now(),
            ends_seen: HashMap::new(),
            deferred: Vec::new(),
            deferring: false,
            started,
        })
    }

    /// Topics created after the start (another exchange, or an ingest that started later
    /// than the writer) join the assignment, read from their beginning.
    async fn join_new_topics(&mut self) -> Result<()> {
        if self.topics_checked.elapsed() < TOPIC_REFRESH {
            return Ok(());
        }
        self.topics_checked = Instant::now();
        let mut added = Vec::new();
        add_new_topics(
            self.log,
            &self.options.source,
            &mut self.deps.log,
            &self.states,
            &mut self.routes,
            &mut added,
        )
        .await?;
        if !added.is_empty() {
            tracing::info!(
                partitions = added.len(),
                "new topics joined the lake writer"
            );
            let mut all = self.consumer.positions();
            all.extend(added);
            all.extend(std::mem::take(&mut self.deferred));
            self.assign(all)?;
        }
        Ok(())
    }

    /// Reads from `positions`, but for the partitions of tables the degradation defers
    /// now, which are kept aside at their positions until it no longer does.
    fn assign(&mut self, positions: Vec<PartitionOffset>) -> Result<()> {
        let (deferred, read): (Vec<_>, Vec<_>) = positions.into_iter().partition(|p| {
            let table = self.routes.get(p.topic.as_str()).map(|(t, _)| *t);
            self.options
                .degradation
                .as_ref()
                .zip(table)
                .is_some_and(|(d, t)| d.defers(t))
        });
        self.deferred = deferred;
        self.consumer = self.log.consumer(read)?;
        Ok(())
    }

    /// Leaves the deferred tables' streams in the log, or takes them up again, when the
    /// degradation level crossed its threshold since the last look.
    fn follow_degradation(&mut self) -> Result<()> {
        let Some(d) = &self.options.degradation else {
            return Ok(());
        };
        let deferring = d.deferring();
        if deferring == self.deferring {
            return Ok(());
        }
        self.deferring = deferring;
        let level = d.pressure.level();
        let mut all = self.consumer.positions();
        all.extend(std::mem::take(&mut self.deferred));
        self.assign(all)?;
        if deferring {
            let tables: Vec<&str> = d.defer.iter().map(|t| t.name()).collect();
            tracing::warn!(
                level = level.as_str(),
                tables = ?tables,
                partitions = self.deferred.len(),
                "degradation: streams deferred, left in the log until the pressure passes"
            );
        } else {
            tracing::info!(
                level = level.as_str(),
                "degradation: deferred streams taken up again"
            );
        }
        metrics::streams_deferred(deferring);
        Ok(())
    }

    /// One poll of the log into the tables' pending batches; returns the records read.
    async fn poll(&mut self) -> Result<usize> {
        let (max, wait) = (self.options.poll_records, Duration::from_millis(200));
        let mut records: Vec<ConsumedRecord> = self
            .deps
            .log
            .call_mut(&mut self.consumer, |c| {
                Box::pin(async move { Ok(c.poll(max, wait).await?) })
            })
            .await?;
        let got = records.len();
        self.summary.records_consumed += got as u64;
        metrics::records_consumed(got);
        self.poller
            .admit(
                self.log,
                &mut records,
                &self.routes,
                &mut self.states,
                &self.options.source,
                &mut self.summary,
            )
            .await?;
        publish_sequence_events(&mut self.states, &mut self.deps.redis, &mut self.summary).await?;
        Ok(got)
    }

    /// A batch in flight keeps its claims renewed until it lands.
    async fn renew_claims_in_flight(&mut self) -> Result<()> {
        if let Some(f) = &mut self.flight
            && let Some(c) = &mut f.claims
        {
            let integrity = &mut self.states.get_mut(&f.table).expect("a state").integrity;
            c.renew(f.table, integrity, &mut self.deps.redis).await?;
        }
        Ok(())
    }

    /// Lands the batch in flight once it is done, and cuts the tables that are due: a
    /// table is due when its rows reach `max_rows`, its oldest row `max_age`, or the run
    /// ends (`finishing`).
    async fn flush_due(
        &mut self,
        finishing: bool,
        ends_read: Option<&[PartitionOffset]>,
    ) -> Result<()> {
        let options = self.options;
        let mut due = self
            .states
            .iter()
            .filter_map(|(&t, state)| {
                let full = state.pending.len() >= options.max_rows
                    || (finishing && !state.pending_offsets.is_empty());
                let aged = state.oldest.is_some_and(|o| o.elapsed() >= options.max_age);
                (full || aged).then_some((t, full))
            })
            .collect::<Vec<_>>()
            .into_iter();
        loop {
            let next = due.next();
            // One due by age alone waits for a later poll while the batch in flight is
            // still being written, rather than holding up reading until it lands.
            if next.is_some_and(|(_, full)| !full)
                && self.flight.as_ref().is_some_and(|f| !f.task.is_finished())
            {
                continue;
            }
            let next = next.map(|(t, _)| t);
            // The batch in flight lands once its commit is done, before the next cut (one
            // batch in flight at a time: commits stay in order, and the rows held are at
            // most the batch in flight and the one filling), and when the run is ending.
            if self
                .flight
                .as_ref()
                .is_some_and(|f| next.is_some() || finishing || f.task.is_finished())
            {
                self.land(ends_read).await?;
            }
            let Some(t) = next else { break };
            let state = self.states.get_mut(&t).expect("a state");
            self.flight = take_off(
                t,
                state,
                &self.catalog,
                &self.letters,
                options,
                &mut self.deps,
                &mut self.summary,
            )
            .await?;
            if let (Some(d), Some(_)) = (&options.degradation, &self.flight) {
                d.pressure.commit_started(Instant::now());
            }
        }
        Ok(())
    }

    /// Lands the batch in flight, reports the table's positions, and does the table's
    /// upkeep (expiry, orphan sweeps) when it is due.
    async fn land(&mut self, ends_read: Option<&[PartitionOffset]>) -> Result<()> {
        let f = self.flight.take().expect("a batch in flight");
        let landed = f.table;
        let took = f.started.elapsed();
        let positions = land(
            f,
            &mut self.states,
            self.options,
            &mut self.deps,
            &mut self.summary,
        )
        .await?;
        if let Some(d) = &self.options.degradation {
            d.pressure.commit_landed(took);
        }
        self.reports.report(positions, ends_read);
        if let Some(keep_for) = self.options.snapshot_retention {
            let state = self.states.get_mut(&landed).expect("a state");
            maintenance::expire_old_snapshots(landed, state, self.catalog.as_ref(), keep_for).await;
        }
        Ok(())
    }

    /// Whether everything in the log is committed (batch mode).
    async fn caught_up(&mut self, ends_read: Option<&[PartitionOffset]>) -> Result<bool> {
        caught_up(
            self.log,
            &self.options.source,
            &mut self.deps.log,
            &self.states,
            &self.routes,
            &mut self.ends_seen,
            ends_read,
        )
        .await
    }

    /// Waits for the reports; a look for orphan files still going is finished in a batch
    /// run and given up when stopped (each file's deletion stands alone; the next run
    /// looks again).
    async fn finish(mut self, stopped: bool) -> WriterSummary {
        self.reports.finish().await;
        for sweep in self.states.values_mut().filter_map(|s| s.sweep.take()) {
            if stopped {
                sweep.abort();
            }
            let _ = sweep.await;
        }
        self.deps.report(&mut self.summary);
        let mut summary = self.summary;
        summary.seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            consumed = summary.records_consumed,
            commits = summary.commits,
            dead_lettered = summary.dead_lettered,
            seconds = summary.seconds,
            "lake writer stopped"
        );
        summary
    }
}

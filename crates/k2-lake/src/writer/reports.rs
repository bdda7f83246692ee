//! What the writer tells the log after each commit: its positions as the consumer
//! group's (for monitoring; the lake's snapshot is the source of truth) and each
//! partition's lag.

use std::collections::BTreeMap;
use std::time::Duration;

use k2_log::{Log, PartitionOffset};
use k2_model::TopicName;

use super::options::Degradation;
use super::topics::ends_read_of;
use crate::metrics;
use crate::tables::LakeTable;

/// Records commits' positions as the consumer group's and reports each partition's lag,
/// and each table's (the metric, and the degradation's pressure when there is one).
/// Informational only (the lake's snapshot is the source of truth), so off the writer's
/// path: a slow cluster answer (a new group client waits for the group's coordinator) never
/// holds the writer up. One task reports, in order, so group offsets never go backwards;
/// positions handed over while it works replace those still waiting: only the latest
/// matter. Between commits the lag is measured again every [`LAG_EVERY`], so a writer that
/// commits nothing while the log grows shows a growing lag.
pub(super) struct Reports {
    /// The latest positions, with where the log ends when the consumer knew it without
    /// asking.
    latest: tokio::sync::watch::Sender<Option<Report>>,
    task: tokio::task::JoinHandle<()>,
}

/// How often the lag is measured again while no commit reports it.
pub(super) const LAG_EVERY: Duration = Duration::from_secs(5);

type Report = (Vec<PartitionOffset>, Option<Vec<PartitionOffset>>);

impl Reports {
    pub fn start<L: Log + Clone>(log: &L, group: &str, degradation: Option<Degradation>) -> Self {
        let (latest, mut handed) = tokio::sync::watch::channel(None::<Report>);
        let (log, group) = (log.clone(), group.to_string());
        let task = tokio::spawn(async move {
            let mut lag = Lag::default();
            let mut tick = tokio::time::interval(LAG_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    changed = handed.changed() => {
                        // Positions handed over before the writer finished are still seen
                        // after it.
                        if changed.is_err() {
                            break;
                        }
                        let Some((positions, ends_read)) = handed.borrow_and_update().clone()
                        else {
                            continue;
                        };
                        if let Err(e) = log.commit_group(&group, &positions).await {
                            tracing::warn!(error = %e, "could not record consumer-group positions");
                        }
                        lag.measure(&log, &positions, ends_read.as_deref()).await;
                    }
                    _ = tick.tick() => {
                        let all = lag.positions();
                        lag.measure(&log, &all, None).await;
                    }
                }
                lag.publish(degradation.as_ref());
            }
        });
        Reports { latest, task }
    }

    pub fn report(&self, positions: Vec<PartitionOffset>, ends_read: Option<&[PartitionOffset]>) {
        self.latest.send_replace(Some((
            positions,
            ends_read.map(<[PartitionOffset]>::to_vec),
        )));
    }

    /// Waits until everything handed over is reported.
    pub async fn finish(self) {
        drop(self.latest);
        let _ = self.task.await;
    }
}

/// Each partition's committed position and lag as last measured.
#[derive(Default)]
struct Lag {
    by_partition: BTreeMap<(String, u32), (u64, u64)>,
}

impl Lag {
    fn positions(&self) -> Vec<PartitionOffset> {
        self.by_partition
            .iter()
            .map(|((topic, partition), (offset, _))| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect()
    }

    /// Records per partition of `positions` between the committed position and the end
    /// of the log.
    async fn measure<L: Log>(
        &mut self,
        log: &L,
        positions: &[PartitionOffset],
        ends_read: Option<&[PartitionOffset]>,
    ) {
        let mut topics: Vec<&str> = positions.iter().map(|p| p.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            let ends = match ends_read.and_then(|read| ends_read_of(read, topic)) {
                Some(ends) => Ok(ends),
                None => log.end_offsets(topic).await,
            };
            match ends {
                Ok(ends) => {
                    for p in positions.iter().filter(|p| p.topic == topic) {
                        if let Some(&end) = ends.get(p.partition as usize) {
                            let behind = end.saturating_sub(p.offset);
                            metrics::partition_lag(topic, p.partition, behind);
                            self.by_partition
                                .insert((topic.to_string(), p.partition), (p.offset, behind));
                        }
                    }
                }
                Err(e) => tracing::warn!(topic, error = %e, "could not read the end of the log"),
            }
        }
    }

    /// Each table's lag (the sum over its topics' partitions): the metric, and the
    /// degradation's pressure (deferred tables apart).
    fn publish(&self, degradation: Option<&Degradation>) {
        let mut tables: BTreeMap<LakeTable, u64> = BTreeMap::new();
        for ((topic, _), (_, behind)) in &self.by_partition {
            if let Ok(name) = TopicName::parse(topic) {
                *tables
                    .entry(LakeTable::for_data_type(name.data_type))
                    .or_default() += behind;
            }
        }
        for (table, behind) in tables {
            metrics::lag(table.name(), behind);
            if let Some(d) = degradation {
                d.pressure.report_lag(table.name(), behind, d.defers(table));
            }
        }
    }
}

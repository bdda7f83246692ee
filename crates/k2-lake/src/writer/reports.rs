//! What the writer tells the log after each commit: its positions as the consumer
//! group's (for monitoring; the lake's snapshot is the source of truth) and each
//! partition's lag.

use k2_log::{Log, PartitionOffset};

use super::topics::ends_read_of;
use crate::metrics;

/// Records commits' positions as the consumer group's and reports each partition's lag.
/// Informational only (the lake's snapshot is the source of truth), so off the writer's
/// path: a slow cluster answer (a new group client waits for the group's coordinator) never
/// holds the writer up. One task reports, in order, so group offsets never go backwards;
/// positions handed over while it works replace those still waiting: only the latest
/// matter.
pub(super) struct Reports {
    /// The latest positions, with where the log ends when the consumer knew it without
    /// asking.
    latest: tokio::sync::watch::Sender<Option<Report>>,
    task: tokio::task::JoinHandle<()>,
}

type Report = (Vec<PartitionOffset>, Option<Vec<PartitionOffset>>);

impl Reports {
    pub fn start<L: Log + Clone>(log: &L, group: &str) -> Self {
        let (latest, mut handed) = tokio::sync::watch::channel(None::<Report>);
        let (log, group) = (log.clone(), group.to_string());
        let task = tokio::spawn(async move {
            // Positions handed over before the writer finished are still seen after it.
            while handed.changed().await.is_ok() {
                let Some((positions, ends_read)) = handed.borrow_and_update().clone() else {
                    continue;
                };
                if let Err(e) = log.commit_group(&group, &positions).await {
                    tracing::warn!(error = %e, "could not record consumer-group positions");
                }
                report_partition_lag(&log, &positions, ends_read.as_deref()).await;
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

/// Records per partition between the committed position and the end of the log.
async fn report_partition_lag<L: Log>(
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
                        metrics::partition_lag(topic, p.partition, end.saturating_sub(p.offset));
                    }
                }
            }
            Err(e) => tracing::warn!(topic, error = %e, "could not read the end of the log"),
        }
    }
}

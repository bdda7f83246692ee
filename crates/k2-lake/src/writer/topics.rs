//! Which log topics feed which table, topics that appear while the writer runs, and
//! whether the writer has caught up with the end of the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k2_log::{Log, PartitionOffset};
use k2_model::TopicName;

use super::dependencies::Dependency;
use super::state::TableState;
use crate::commit_marks::offset_key;
use crate::error::Result;
use crate::metrics;
use crate::tables::LakeTable;

/// The table each K2 topic feeds, by topic name.
pub(super) type Routes = HashMap<Arc<str>, (LakeTable, TopicName)>;

/// How often the writer looks for topics created since it started.
pub(super) const TOPIC_REFRESH: Duration = Duration::from_secs(2);

/// Routes K2 topics not yet in `routes` to their tables and appends their partitions,
/// from the positions their tables committed, to `assignment`.
pub(super) async fn add_new_topics<L: Log>(
    log: &L,
    source: &str,
    dep: &mut Dependency,
    states: &BTreeMap<LakeTable, TableState>,
    routes: &mut Routes,
    assignment: &mut Vec<PartitionOffset>,
) -> Result<()> {
    let specs = dep.call(|| async { Ok(log.topics().await?) }).await?;
    for spec in specs {
        if routes.contains_key(spec.name.as_str()) {
            continue;
        }
        let Ok(name) = TopicName::parse(&spec.name) else {
            tracing::debug!(topic = %spec.name, "not a K2 topic name; not written to the lake");
            continue;
        };
        let table = LakeTable::for_data_type(name.data_type);
        for p in 0..spec.partitions {
            let offset = states[&table]
                .committed
                .get(&offset_key(source, &spec.name, p))
                .copied()
                .unwrap_or(0);
            assignment.push(PartitionOffset {
                topic: spec.name.clone(),
                partition: p,
                offset,
            });
        }
        routes.insert(spec.name.as_str().into(), (table, name));
    }
    Ok(())
}

/// Whether every assigned partition is committed up to the end of the log. The log only
/// grows, so a partition short of an end seen earlier is behind without asking the log
/// again: on Kafka asking costs round trips per partition, and an idle poll in the middle
/// of a backlog (a fetch late) would pay them each time. `ends_read` holds the positions
/// of a consumer that has read every partition to the end it last saw: those are the ends,
/// and a topic they cover whole is not asked for.
pub(super) async fn caught_up<L: Log>(
    log: &L,
    source: &str,
    dep: &mut Dependency,
    states: &BTreeMap<LakeTable, TableState>,
    routes: &Routes,
    ends_seen: &mut HashMap<Arc<str>, Vec<u64>>,
    ends_read: Option<&[PartitionOffset]>,
) -> Result<bool> {
    let behind = |topic: &str, table: &LakeTable, ends: &[u64]| -> u64 {
        let state = &states[table];
        // Positions read past but not committed hold only dead letters and duplicates
        // (the rows were flushed before this check): nothing is left to do for them.
        ends.iter()
            .enumerate()
            .map(|(p, &end)| {
                let key = offset_key(source, topic, p as u32);
                let done = state
                    .pending_offsets
                    .get(&key)
                    .or_else(|| state.committed.get(&key))
                    .copied()
                    .unwrap_or(0);
                end.saturating_sub(done)
            })
            .sum()
    };
    let mut known_behind = false;
    for (topic, (table, _)) in routes {
        if let Some(ends) = ends_seen.get(topic) {
            let n = behind(topic, table, ends);
            if n > 0 {
                metrics::lag(table.name(), n);
                known_behind = true;
            }
        }
    }
    if known_behind {
        return Ok(false);
    }
    let mut all = true;
    for (topic, (table, _)) in routes {
        let ends = match ends_read.and_then(|read| ends_read_of(read, topic)) {
            Some(ends) => ends,
            None => {
                dep.call(|| async { Ok(log.end_offsets(topic).await?) })
                    .await?
            }
        };
        let n = behind(topic, table, &ends);
        ends_seen.insert(topic.clone(), ends);
        metrics::lag(table.name(), n);
        all &= n == 0;
    }
    Ok(all)
}

/// A topic's partition ends from the positions of a consumer that has read to the end,
/// when they cover its partitions from 0 without a hole.
pub(super) fn ends_read_of(positions: &[PartitionOffset], topic: &str) -> Option<Vec<u64>> {
    let mut read: Vec<(u32, u64)> = positions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| (p.partition, p.offset))
        .collect();
    read.sort_unstable();
    let whole = !read.is_empty() && read.iter().enumerate().all(|(i, &(p, _))| p as usize == i);
    whole.then(|| read.into_iter().map(|(_, end)| end).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_read_cover_a_topic_whole_or_not_at_all() {
        let at = |topic: &str, partition, offset| PartitionOffset {
            topic: topic.into(),
            partition,
            offset,
        };
        // In any order, mixed with another topic.
        let read = [at("t", 1, 7), at("u", 0, 3), at("t", 0, 5), at("t", 2, 0)];
        assert_eq!(ends_read_of(&read, "t"), Some(vec![5, 7, 0]));
        assert_eq!(ends_read_of(&read, "u"), Some(vec![3]));
        // A topic not assigned, or assigned without partition 0 or with a hole, is asked
        // of the log.
        assert_eq!(ends_read_of(&read, "v"), None);
        assert_eq!(ends_read_of(&[at("t", 1, 7)], "t"), None);
        assert_eq!(ends_read_of(&[at("t", 0, 5), at("t", 2, 0)], "t"), None);
    }
}

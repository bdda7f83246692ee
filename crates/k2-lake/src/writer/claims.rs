//! With dedup shared in Redis: a batch's message ids claimed before it is written,
//! claims renewed while it is in flight, and conflicts with other writers resolved
//! against the lake.

use std::time::{Duration, Instant};

use iceberg::Catalog;

use super::dependencies::{Dependency, Deps};
use super::options::{WriterOptions, WriterSummary};
use super::state::{TableState, load_table};
use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::integrity::TableIntegrity;
use crate::metrics;
use crate::tables::LakeTable;

/// With dedup shared in Redis: the message ids a batch in flight holds, under the batch's
/// token, and when they were claimed last.
pub(super) struct Claims {
    pub ids: Vec<u128>,
    pub token: String,
    pub at: Instant,
}

impl Claims {
    /// How long until the claims are past half their lease and due for renewal.
    pub fn renew_in(&self, integrity: &TableIntegrity) -> Duration {
        (integrity.claim_lease().unwrap_or_default() / 2).saturating_sub(self.at.elapsed())
    }

    /// Renews claims held past half their lease. One that lapsed may have let another
    /// writer store the row, so the writer stops (a restart resumes from the lake).
    pub async fn renew(
        &mut self,
        table: LakeTable,
        integrity: &mut TableIntegrity,
        redis: &mut Dependency,
    ) -> Result<()> {
        if !self.renew_in(integrity).is_zero() {
            return Ok(());
        }
        let request: Vec<(u128, Option<String>)> = self.ids.iter().map(|&i| (i, None)).collect();
        let token = self.token.clone();
        let lost = redis
            .call_mut(integrity, |i| {
                Box::pin(i.claim(request.clone(), token.clone()))
            })
            .await?
            .into_iter()
            .filter(Option::is_some)
            .count();
        if lost > 0 {
            return Err(LakeError::conflict(
                table,
                format!("{lost} message-id claims lapsed before the commit (dedup.redis_lease)"),
            ));
        }
        self.at = Instant::now();
        Ok(())
    }

    /// Once the batch is committed, its claims become permanent: the ids are stored.
    pub async fn keep(
        self,
        table: LakeTable,
        integrity: &mut TableIntegrity,
        redis: &mut Dependency,
    ) -> Result<()> {
        let n = self.ids.len();
        let (ids, token) = (self.ids, self.token);
        let kept = redis
            .call_mut(integrity, |i| {
                Box::pin(i.keep_claims(ids.clone(), token.clone()))
            })
            .await?;
        if kept < n as u64 {
            tracing::warn!(%table, claims = n, kept, "message-id claims lapsed before they could be kept");
        }
        Ok(())
    }
}

/// With dedup shared in Redis: claims the ids of the pending rows for this batch before
/// they are written. A row whose id a committed batch (of any writer) holds is dropped as a
/// duplicate; one held by a batch in flight elsewhere is waited for, holding no claims
/// meanwhile so that two writers never wait for each other; one held by an abandoned
/// batch of this same writer (a crash before its commit) is taken over. Returns the
/// ids claimed, in the order of the rows left pending.
pub(super) async fn claim_batch(
    t: LakeTable,
    state: &mut TableState,
    catalog: &dyn Catalog,
    token: &str,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Vec<u128>> {
    let ids: Vec<u128> = state
        .pending
        .iter()
        .map(|r| r.record.message_id().as_u128())
        .collect();
    let mut replace: Vec<Option<String>> = vec![None; ids.len()];
    let mut stored = vec![false; ids.len()];
    let mut todo: Vec<usize> = (0..ids.len()).collect();
    let mut held: Vec<usize> = Vec::with_capacity(ids.len());
    let lease = state.integrity.claim_lease().unwrap_or_default();
    let deadline = Instant::now() + lease + Duration::from_secs(10);
    let mut pause = Duration::from_millis(20);
    let mut jitter = fastrand::Rng::new();
    let started = Instant::now();
    while !todo.is_empty() {
        let request: Vec<(u128, Option<String>)> =
            todo.iter().map(|&i| (ids[i], replace[i].clone())).collect();
        let answers = deps
            .redis
            .call_mut(&mut state.integrity, |i| {
                Box::pin(i.claim(request.clone(), token.to_string()))
            })
            .await?;
        let mut conflicts = Vec::new();
        for (&i, holder) in todo.iter().zip(answers) {
            match holder {
                None => held.push(i),
                Some(holder) => conflicts.push((i, holder)),
            }
        }
        todo.clear();
        if conflicts.is_empty() {
            break;
        }
        // The lake says which of the holding batches committed.
        state.table = deps.catalog().call(|| load_table(catalog, t)).await?;
        let committed: std::collections::HashSet<&str> = state
            .table
            .metadata()
            .snapshots()
            .filter_map(|s| commit_marks::batch_of(s))
            .collect();
        let mut waiting = 0;
        for (i, holder) in conflicts {
            let (source, batch) = holder.rsplit_once('|').unwrap_or(("", holder.as_str()));
            if committed.contains(batch) {
                stored[i] = true;
            } else if source == options.source {
                metrics::dedup_claims(t.name(), "taken_over", 1);
                replace[i] = Some(holder);
                todo.push(i);
            } else {
                waiting += 1;
                todo.push(i);
            }
        }
        if waiting > 0 {
            metrics::dedup_claims(t.name(), "waited", waiting);
            if !held.is_empty() {
                let mine: Vec<u128> = held.iter().map(|&i| ids[i]).collect();
                deps.redis
                    .call_mut(&mut state.integrity, |i| {
                        Box::pin(i.release_claims(mine.clone(), token.to_string()))
                    })
                    .await?;
                todo.append(&mut held);
            }
            if Instant::now() >= deadline {
                return Err(LakeError::conflict(
                    t,
                    format!(
                        "{waiting} message ids stayed claimed by another writer's uncommitted batch past the lease"
                    ),
                ));
            }
            tracing::debug!(table = %t, waiting, "message ids claimed by another writer's batch in flight; waiting");
            let ms = pause.as_millis() as u64;
            tokio::time::sleep(Duration::from_millis(ms / 2 + jitter.u64(0..ms.max(1)))).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
    let dropped = stored.iter().filter(|&&s| s).count() as u64;
    metrics::dedup_claims(t.name(), "claimed", held.len() as u64);
    metrics::dedup_claims(t.name(), "stored_elsewhere", dropped);
    metrics::dedup_claim_seconds(t.name(), started.elapsed());
    if dropped == 0 {
        return Ok(ids);
    }
    let rows = std::mem::take(&mut state.pending);
    let mut kept = Vec::with_capacity(ids.len());
    for (row, (id, stored)) in rows.into_rows().zip(ids.into_iter().zip(stored)) {
        if stored {
            state.integrity.count_duplicate(&row.record);
        } else {
            state.pending.push(row);
            kept.push(id);
        }
    }
    summary.duplicates_dropped += dropped;
    metrics::duplicates_dropped(t.name(), dropped);
    tracing::debug!(table = %t, dropped, "records another writer had stored");
    Ok(kept)
}

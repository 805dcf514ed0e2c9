//! Clusters as Patroni reports them: a level-triggered loop that compares what each
//! created cluster's Patroni says with what the store last recorded, and writes the
//! difference: the state `ready` ↔ `degraded` (with an event that says why or that it
//! recovered), and a change of primary that no operation of ours made (Patroni failed
//! over by itself) as a `failover` event.
//!
//! What it last saw of each cluster is kept in the store (`meta` key
//! `observed/<cluster id>`), so a failover that happened while the control plane was down
//! is recorded when it is back. A cluster that an operation acts on is left alone: the
//! operation takes members down on purpose and records its own events (a switchover
//! writes the new primary here, so it is not mistaken for a failover).

use serde::{Deserialize, Serialize};
use sovdb_store::{ClusterRecord, Tx};
use sovdb_types::*;

use crate::clusters::health;
use crate::workflows::pg;
use crate::{patroni, App, Result};

/// What the loop last saw of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Observed {
    /// The last primary seen (kept while the cluster has none).
    pub leader: Option<String>,
    pub timeline: Option<i64>,
}

fn key(cluster: ClusterId) -> String {
    format!("observed/{cluster}")
}

pub(crate) async fn observed(tx: &mut dyn Tx, cluster: ClusterId) -> Result<Option<Observed>> {
    Ok(tx.meta_get(&key(cluster)).await?.and_then(|v| serde_json::from_str(&v).ok()))
}

/// Records the cluster's primary (an operation that moved it calls this in its last step).
pub(crate) async fn record_leader(
    tx: &mut dyn Tx,
    cluster: ClusterId,
    leader: &str,
    timeline: Option<i64>,
) -> Result<()> {
    let o = Observed { leader: Some(leader.to_string()), timeline };
    tx.meta_set(&key(cluster), &serde_json::to_string(&o).expect("serialise")).await?;
    Ok(())
}

impl App {
    /// One round: every created cluster of every project, a few at a time.
    pub async fn clusters_observe(&self) -> Result<()> {
        let mut after = None;
        loop {
            let batch = self.store.read().await?.cluster_records_all(after, 200).await?;
            let Some(last) = batch.last() else { return Ok(()) };
            after = Some(last.id);
            let observable = batch.iter().filter(|c| matches!(c.state, ClusterState::Ready | ClusterState::Degraded));
            let rounds = observable.map(|c| async move {
                if let Err(e) = self.cluster_observe(c).await {
                    tracing::warn!(cluster = %c.name, error = %e, "observing the cluster failed");
                }
            });
            futures_util::future::join_all(rounds).await;
            if batch.len() < 200 {
                return Ok(());
            }
        }
    }

    async fn cluster_observe(&self, record: &ClusterRecord) -> Result<()> {
        let members = match pg::members(self, record.id).await {
            Ok(m) if !m.is_empty() => m,
            _ => return Ok(()),
        };
        let status = patroni::status(self, &members).await;
        let (problem, leader, timeline) = match &status {
            Err(e) => (Some(format!("no member's Patroni answers: {e}")), None, None),
            Ok(s) => (health(s, &members), s.leader().map(|l| l.name.clone()), s.leader().and_then(|l| l.timeline)),
        };
        let seen = Seen { leader, timeline, problem };
        // Most rounds change nothing: decide on a read transaction, write only a change
        // (and decide again there: the store may have moved on meanwhile).
        if !record_change(self.store.read().await?.as_mut(), record, &seen, false).await? {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        if record_change(tx.as_mut(), record, &seen, true).await? {
            tx.commit().await?;
        }
        Ok(())
    }

    /// The events of a cluster of the caller's project, oldest first.
    pub async fn cluster_events(&self, ctx: &crate::Ctx, name: &str, page: &PageParams) -> Result<Page<Event>> {
        ctx.require(crate::rbac::Action::ClusterRead)?;
        let page = page.resolve().map_err(|e| crate::AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        // Events outlive the cluster (a deleted cluster's history stays readable).
        let target = format!("cluster/{name}");
        Ok(tx.event_list(Some(ctx.project.id), Some(&target), &page).await?)
    }
}

/// What one round saw of a cluster.
struct Seen {
    leader: Option<String>,
    timeline: Option<i64>,
    /// Why the cluster is not healthy, if it isn't.
    problem: Option<String>,
}

/// Whether what was seen changes what the store holds (a new primary, or ready ↔
/// degraded); with `write`, writes the change and its events to `tx`. A cluster an
/// operation acts on, or that is no longer ready or degraded, is left alone.
async fn record_change(tx: &mut dyn Tx, record: &ClusterRecord, seen: &Seen, write: bool) -> Result<bool> {
    let Some(now) = tx.cluster_record_by_id(record.id).await? else { return Ok(false) };
    let target = format!("cluster/{}", record.name);
    if !matches!(now.state, ClusterState::Ready | ClusterState::Degraded) || tx.operation_active_on(&target).await? {
        return Ok(false);
    }
    let before = observed(tx, record.id).await?.unwrap_or_default();
    let mut changed = false;
    if let Some(new) = &seen.leader {
        let moved = before.leader.as_ref().filter(|old| *old != new);
        if moved.is_some() || before.leader.is_none() || before.timeline != seen.timeline {
            changed = true;
            if write {
                if let Some(old) = moved {
                    let tl = seen.timeline.map(|t| format!(" (timeline {t})")).unwrap_or_default();
                    let message = format!("Patroni failed over cluster {}: {old} → {new}{tl}", record.name);
                    tracing::info!(cluster = %record.name, from = %old, to = %new, "failover observed");
                    crate::events::record(tx, &pg::event(&now, crate::events::kind::FAILOVER, message)).await?;
                }
                record_leader(tx, record.id, new, seen.timeline).await?;
            }
        }
    }
    let (state, kind, message) = match (now.state, &seen.problem) {
        (ClusterState::Ready, Some(why)) => (
            ClusterState::Degraded,
            crate::events::kind::DEGRADED,
            format!("cluster {} is degraded: {why}", record.name),
        ),
        (ClusterState::Degraded, None) => (
            ClusterState::Ready,
            crate::events::kind::RECOVERED,
            format!("cluster {} is ready again: every member runs and streams", record.name),
        ),
        _ => return Ok(changed),
    };
    if write {
        tx.cluster_set_state(record.id, state).await?;
        crate::events::record(tx, &pg::event(&now, kind, message)).await?;
    }
    Ok(true)
}

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
        let seen = patroni::status(self, &members).await;
        let (problem, leader, timeline) = match &seen {
            Err(e) => (Some(format!("no member's Patroni answers: {e}")), None, None),
            Ok(s) => {
                (health(s, members.len()), s.leader().map(|l| l.name.clone()), s.leader().and_then(|l| l.timeline))
            }
        };
        let target = format!("cluster/{}", record.name);
        let mut tx = self.store.write().await?;
        let Some(now) = tx.cluster_record_by_id(record.id).await? else { return Ok(()) };
        if !matches!(now.state, ClusterState::Ready | ClusterState::Degraded) || tx.operation_active_on(&target).await?
        {
            return Ok(());
        }
        let before = observed(tx.as_mut(), record.id).await?;
        let mut changed = false;
        if let Some(new) = &leader {
            match before.as_ref().and_then(|b| b.leader.as_ref()) {
                Some(old) if old != new => {
                    let tl = timeline.map(|t| format!(" (timeline {t})")).unwrap_or_default();
                    let message = format!("Patroni failed over cluster {}: {old} → {new}{tl}", record.name);
                    tracing::info!(cluster = %record.name, from = %old, to = %new, "failover observed");
                    tx.event_append(&pg::event(&now, "failover", message)).await?;
                    changed = true;
                }
                Some(_) if before.as_ref().and_then(|b| b.timeline) != timeline => changed = true,
                Some(_) => {}
                None => changed = true,
            }
            if changed {
                record_leader(tx.as_mut(), record.id, new, timeline).await?;
            }
        }
        match (now.state, &problem) {
            (ClusterState::Ready, Some(why)) => {
                tx.cluster_set_state(record.id, ClusterState::Degraded).await?;
                let message = format!("cluster {} is degraded: {why}", record.name);
                tx.event_append(&pg::event(&now, "degraded", message)).await?;
                changed = true;
            }
            (ClusterState::Degraded, None) => {
                tx.cluster_set_state(record.id, ClusterState::Ready).await?;
                let message = format!("cluster {} is ready again: every member runs and streams", record.name);
                tx.event_append(&pg::event(&now, "recovered", message)).await?;
                changed = true;
            }
            _ => {}
        }
        if changed {
            tx.commit().await?;
        }
        Ok(())
    }

    /// The events of a cluster of the caller's project, oldest first.
    pub async fn cluster_events(&self, ctx: &crate::Ctx, name: &str, page: &PageParams) -> Result<Page<Event>> {
        let page = page.resolve().map_err(|e| crate::AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        // Events outlive the cluster (a deleted cluster's history stays readable).
        let target = format!("cluster/{name}");
        Ok(tx.event_list(Some(ctx.project.id), Some(&target), &page).await?)
    }
}

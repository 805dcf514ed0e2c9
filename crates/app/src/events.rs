//! The timelines: what happened to clusters, hosts and the installation, oldest first.
//!
//! **Writing an event**: build it with [`cluster_event`] (a cluster's, in its project) or
//! [`installation_event`] (a host's, a location's: no project) and write it with
//! [`record`] in the same store transaction as the change it tells of, so the timeline
//! never says something happened that did not (or the reverse). `kind` is one of
//! [`kind`]'s constants; alerts write [`kind::ALERT_FIRING`] and
//! [`kind::ALERT_RESOLVED`] through the same two calls. `docs/events.md` lists every kind
//! for users; a unit test keeps it and [`kind::ALL`] together.
//!
//! **Reading**: `GET /events` ([`App::events`]) answers the request's project's events
//! (the `viewer` role may read them); an admin also gets the installation's own events
//! (hosts, locations), which belong to no project. Followers poll the store (as the
//! operations' live progress does), so any control-plane replica serves them.

use chrono::{DateTime, Utc};
use sovdb_store::{ClusterRecord, EventFilter, NewEvent, Tx};
use sovdb_types::*;

use crate::rbac::Action;
use crate::{App, AppError, Ctx, Result};

/// The kinds of events, as they appear in `Event::kind`.
pub mod kind {
    /// A cluster was created and is ready.
    pub const CREATED: &str = "created";
    /// A cluster was restored into a new cluster and is ready.
    pub const RESTORED: &str = "restored";
    /// A cluster was deleted.
    pub const DELETED: &str = "deleted";
    /// Patroni failed over by itself (seen by the control plane), or a forced failover.
    pub const FAILOVER: &str = "failover";
    /// A planned switchover to another member.
    pub const SWITCHOVER: &str = "switchover";
    /// A rolling restart.
    pub const RESTART: &str = "restart";
    /// PostgreSQL parameters changed.
    pub const PARAMETERS: &str = "parameters";
    /// Members were added or removed.
    pub const SCALED: &str = "scaled";
    /// A cluster is not healthy (a member down or not streaming).
    pub const DEGRADED: &str = "degraded";
    /// A degraded cluster is healthy again.
    pub const RECOVERED: &str = "recovered";
    /// A backup was taken.
    pub const BACKUP: &str = "backup";
    /// A backup failed for good.
    pub const BACKUP_FAILED: &str = "backup-failed";
    /// A restore drill restored a backup and checked it (it passed).
    pub const DRILL: &str = "drill";
    /// A restore drill failed: the backup could not be restored or checked.
    pub const DRILL_FAILED: &str = "drill-failed";
    /// The cluster's network allow-list changed (`cluster allow|deny`).
    pub const ALLOW_LIST: &str = "allow-list";
    /// The certificate bot renewed certificates: a cluster's members' (or its backup
    /// client's), a host's (agent, pgBackRest server) or a location's (etcd members).
    pub const CERTS_RENEWED: &str = "certs-renewed";
    /// A host's agent stopped answering.
    pub const HOST_UNREACHABLE: &str = "host-unreachable";
    /// A host's agent answers again.
    pub const HOST_READY: &str = "host-ready";
    /// An alert started firing (written by the alerting loop).
    pub const ALERT_FIRING: &str = "alert-firing";
    /// An alert stopped firing.
    pub const ALERT_RESOLVED: &str = "alert-resolved";

    /// Every kind, in the order of `docs/events.md`.
    pub const ALL: &[&str] = &[
        CREATED,
        RESTORED,
        DELETED,
        FAILOVER,
        SWITCHOVER,
        RESTART,
        PARAMETERS,
        SCALED,
        DEGRADED,
        RECOVERED,
        BACKUP,
        BACKUP_FAILED,
        DRILL,
        DRILL_FAILED,
        ALLOW_LIST,
        CERTS_RENEWED,
        HOST_UNREACHABLE,
        HOST_READY,
        ALERT_FIRING,
        ALERT_RESOLVED,
    ];
}

/// An event of a cluster's (target `cluster/<name>`, in its project).
pub fn cluster_event(cluster: &ClusterRecord, kind: &str, message: String) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        at: crate::now(),
        project_id: Some(cluster.project_id),
        target: format!("cluster/{}", cluster.name),
        kind: kind.into(),
        message,
    }
}

/// An event of the installation's own (`host/<name>`, `location/<name>`): no project, so
/// only admins read it.
pub fn installation_event(target: String, kind: &str, message: String) -> NewEvent {
    NewEvent { id: EventId::new(), at: crate::now(), project_id: None, target, kind: kind.into(), message }
}

/// Writes an event in `tx`: the one place every event goes through.
pub async fn record(tx: &mut dyn Tx, event: &NewEvent) -> Result<()> {
    debug_assert!(kind::ALL.contains(&event.kind.as_str()), "event kind {:?} is not in events::kind::ALL", event.kind);
    tx.event_append(event).await?;
    Ok(())
}

/// Which events `GET /events` answers.
#[derive(Debug, Clone, Default)]
pub struct EventsQuery {
    /// Only this cluster's (of the request's project).
    pub cluster: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events after this one (an event ID).
    pub after: Option<String>,
}

impl App {
    /// The timeline, oldest first: the request's project's events, and for admins also
    /// the installation's own; with `cluster`, only that cluster's.
    pub async fn events(&self, ctx: &Ctx, q: &EventsQuery, page: &PageParams) -> Result<Page<Event>> {
        ctx.require(Action::ClusterRead)?;
        let mut page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        if let Some(after) = &q.after {
            let id: EventId =
                after.parse().map_err(|_| AppError::Invalid(format!("after {after:?} is not an event ID")))?;
            page.after = Some(page.after.take().map_or(id.to_string(), |a| a.max(id.to_string())));
        }
        let filter = self.event_filter(ctx, q)?;
        Ok(self.store.read().await?.event_query(&filter, &page).await?)
    }

    fn event_filter(&self, ctx: &Ctx, q: &EventsQuery) -> Result<EventFilter> {
        let target = match &q.cluster {
            Some(name) => {
                crate::validate::dns_label("cluster", name)?;
                Some(format!("cluster/{name}"))
            }
            None => None,
        };
        Ok(EventFilter {
            project: Some(ctx.project.id),
            installation: ctx.is_admin() && target.is_none(),
            target,
            since: q.since,
        })
    }
}

/// How far back a follower looks again each round: an event whose transaction committed
/// after a newer one's (two writers at once on a PostgreSQL store) is still found.
const LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Follows the timeline: each [`EventFollower::next`] answers the events written since
/// the previous call, each once.
pub struct EventFollower {
    app: App,
    filter: EventFilter,
    seen: std::collections::HashMap<EventId, DateTime<Utc>>,
    newest: Option<DateTime<Utc>>,
}

impl App {
    /// A follower of the timeline from `q.since` (default: now), checked as [`App::events`].
    pub fn events_follow(&self, ctx: &Ctx, q: &EventsQuery) -> Result<EventFollower> {
        ctx.require(Action::ClusterRead)?;
        let mut filter = self.event_filter(ctx, q)?;
        filter.since = Some(filter.since.unwrap_or_else(crate::now));
        Ok(EventFollower { app: self.clone(), filter, seen: Default::default(), newest: None })
    }
}

impl EventFollower {
    /// The events written since the last call (oldest first), each once.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        let mut filter = self.filter.clone();
        if let Some(newest) = self.newest {
            filter.since = filter.since.max(Some(newest - LOOKBACK));
        }
        let mut page = PageRequest { limit: 1000, after: None };
        let mut fresh = Vec::new();
        loop {
            let batch = self.app.store.read().await?.event_query(&filter, &page).await?;
            page.after = batch.items.last().map(|e| e.id.to_string());
            for e in batch.items {
                if self.seen.insert(e.id, e.at).is_none() {
                    fresh.push(e);
                }
            }
            if batch.next_page_token.is_none() {
                break;
            }
        }
        if let Some(at) = fresh.iter().map(|e| e.at).max() {
            self.newest = self.newest.max(Some(at));
        }
        if let Some(newest) = self.newest {
            self.seen.retain(|_, at| *at >= newest - LOOKBACK - LOOKBACK);
        }
        fresh.sort_by_key(|e| e.id);
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_list_every_kind() {
        let docs = include_str!("../../../docs/events.md");
        for k in kind::ALL {
            assert!(docs.contains(&format!("| `{k}` |")), "docs/events.md lacks the kind {k}");
        }
        let mut seen = std::collections::HashSet::new();
        assert!(kind::ALL.iter().all(|k| seen.insert(*k)), "a kind twice");
    }
}

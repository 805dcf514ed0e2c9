//! Host heartbeats: a level-triggered loop that asks every host's agent whether it is
//! there and writes what it observed (`ready` or `unreachable`, and when it last
//! answered). It takes no reason as input and never changes intent.
//!
//! When an agent stops answering but its host is still reachable over SSH (or is this
//! machine), the agent was killed or the host rebooted without systemd: the agent is
//! started again, at most once per [`RESTART_EVERY`] per host. Supervised processes are
//! not affected (they survive the agent, and the new agent adopts them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sovdb_store::HostRecord;
use sovdb_types::*;

use crate::events;
use crate::workflows::host_add::{start_script, AgentPaths};
use crate::{App, Result};

/// How long an agent may take to answer a heartbeat.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How stale `last_seen_at` may get before a heartbeat writes it again: a write per host
/// per second would be most of the store's write load, for a time nobody needs to the
/// second. Status changes are written at once.
const SEEN_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// At most one restart attempt per host in this interval.
const RESTART_EVERY: Duration = Duration::from_secs(15);

/// When the agent of each host was last (re)started by the heartbeat loop.
#[derive(Default)]
pub(crate) struct Restarts(Mutex<HashMap<HostId, Instant>>);

impl Restarts {
    /// Whether a restart of `host` may be tried now (and if so, records it).
    fn try_take(&self, host: HostId) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&host) {
            Some(t) if t.elapsed() < RESTART_EVERY => false,
            _ => {
                map.insert(host, Instant::now());
                true
            }
        }
    }
}

impl App {
    /// One round of heartbeats, to every host that has finished being added, in parallel.
    pub async fn hosts_heartbeat(&self) -> Result<()> {
        let mut hosts = Vec::new();
        let mut page = PageRequest { limit: 1000, after: None };
        loop {
            let batch = self.store.read().await?.host_list(None, &page).await?;
            hosts.extend(batch.items);
            match batch.next_page_token {
                Some(_) => page.after = hosts.last().map(|h| h.host.name.clone()),
                None => break,
            }
        }
        let ids: std::collections::HashSet<HostId> = hosts.iter().map(|r| r.host.id).collect();
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, _| ids.contains(id));
        let watched = hosts
            .into_iter()
            .filter(|r| matches!(r.host.status, HostStatus::Ready | HostStatus::Unreachable | HostStatus::Draining));
        futures_util::future::join_all(watched.map(|r| self.heartbeat(r))).await;
        Ok(())
    }

    async fn heartbeat(&self, record: HostRecord) {
        let host = record.host.clone();
        let answer = match self.agent_client(&host, HEARTBEAT_TIMEOUT).await {
            Ok(client) => client.health().await.map_err(|e| sovdb_types::error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        let result = match answer {
            Ok(_) => self.observed_up(&record).await,
            Err(why) => self.observed_down(&record, &why).await.map(|_| {
                if self.restarts.try_take(host.id) {
                    let app = self.clone();
                    tokio::spawn(async move { app.restart_agent(record).await });
                }
            }),
        };
        if let Err(e) = result {
            tracing::warn!(host = %host.name, error = %e, "cannot record a heartbeat");
        }
    }

    async fn observed_up(&self, record: &HostRecord) -> Result<()> {
        let host = &record.host;
        let now = crate::now();
        let fresh = host.last_seen_at.is_some_and(|t| now - t < SEEN_EVERY);
        let status_changes = host.status == HostStatus::Unreachable
            || (host.status == HostStatus::Draining && host.status_message.is_some());
        if fresh && !status_changes {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        tx.host_observed(host.id, now, None).await?;
        match host.status {
            HostStatus::Unreachable => {
                tx.host_set_status(host.id, HostStatus::Ready, None).await?;
                let message = format!("host {}'s agent answers again", host.name);
                events::record(
                    tx.as_mut(),
                    &events::installation_event(format!("host/{}", host.name), events::kind::HOST_READY, message),
                )
                .await?;
                tracing::info!(host = %host.name, "host is reachable again");
            }
            HostStatus::Draining if host.status_message.is_some() => {
                tx.host_set_status(host.id, HostStatus::Draining, None).await?;
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(())
    }

    async fn observed_down(&self, record: &HostRecord, why: &str) -> Result<()> {
        let host = &record.host;
        // A draining host stays draining (that is intent); the message says it is down.
        let status = if host.status == HostStatus::Draining { HostStatus::Draining } else { HostStatus::Unreachable };
        let message = format!("the agent does not answer: {why}");
        if host.status == status && host.status_message.as_deref() == Some(message.as_str()) {
            return Ok(());
        }
        let mut tx = self.store.write().await?;
        tx.host_set_status(host.id, status, Some(&message)).await?;
        if host.status != status {
            let text = format!("host {} is unreachable: {message}", host.name);
            let event = events::installation_event(format!("host/{}", host.name), events::kind::HOST_UNREACHABLE, text);
            events::record(tx.as_mut(), &event).await?;
        }
        tx.commit().await?;
        if host.status != status {
            tracing::warn!(host = %host.name, reason = %why, "host is unreachable");
        }
        Ok(())
    }

    /// Starts the agent again if the host can be reached without it.
    async fn restart_agent(&self, record: HostRecord) {
        let transport = match self.host_transport(&record) {
            Ok(t) => t,
            Err(e) => return tracing::warn!(host = %record.host.name, error = %e, "cannot restart the agent"),
        };
        let paths = AgentPaths::new(self, &record);
        match transport.run(&start_script(&record, &paths), Duration::from_secs(30)).await {
            Ok(out) if out.success() && out.stdout.trim() != "running" => {
                tracing::info!(host = %record.host.name, "started the host's agent again")
            }
            Ok(out) if out.success() => {}
            Ok(out) => tracing::warn!(host = %record.host.name, status = ?out.status, stderr = %out.stderr.trim(),
                "cannot restart the agent"),
            // The host itself is unreachable (link cut, host down): nothing to do until it is back.
            Err(e) => tracing::debug!(host = %record.host.name, error = %e, "host unreachable over SSH too"),
        }
    }
}

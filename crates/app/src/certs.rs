//! The certificate bot: a level-triggered loop that renews every internal certificate when
//! a third of its life is left, without a restart:
//! - cluster members' (PostgreSQL, Patroni's REST API, PgBouncer, their etcd client
//!   certificate) and the stanza's client certificate towards pgBackRest servers:
//!   `cluster.renew-certs` on a ready (or degraded) cluster;
//! - the DCS (etcd) members' of a location: `location.renew-certs`;
//! - the agent's and the pgBackRest TLS server's of a ready host: `host.renew-certs`;
//! - the control plane's own client certificate (towards agents, Patroni and etcd): it lives
//!   in memory only, so it is replaced here, and agent clients are made again with it.
//!
//! The API's certificate has its own loop (it is served by this process: `sovdb serve`).
//!
//! It compares only what is stored (the kept certificates) or presented (the agents')
//! with the clock, takes no reason as input and starts nothing on a target that an
//! operation acts on: the running operation may be the renewal itself, and one mutating
//! operation per target is the rule. The operation and its audit record are written in one
//! transaction, after checking again in it that no operation acts on the target, so two
//! control planes start one renewal.
//!
//! It persists nothing of its own: the operations do the work (see
//! `workflows::{cluster,location,host}_renew_certs`), and a round after a crash sees the same
//! due certificates and starts them again.
//!
//! A renewal that failed is started again after a backoff ([`Backoff`]): the bot's period
//! after the first failure, doubling with each failure in a row up to [`MAX_BACKOFF`], so a
//! target that cannot be renewed (a host down) does not fill the operations list. The
//! backoff is kept in memory: a restarted control plane tries once at once, then backs off
//! again.
//!
//! Renewals on request (`sovdb cluster|location|host renew-certs`, after a key may have
//! leaked, say) start the same operations with the caller as their actor and the whole
//! second after the request as `issued_before`: every certificate of the target issued
//! before it is renewed, whatever its age, and one issued by the renewal itself never again
//! (see `workflows::pg::Renew`). They are refused while an operation acts on the target, and
//! written with their audit record in one transaction, as the bot's are.

use chrono::{DateTime, SubsecRound as _, Utc};
use sovdb_store::{ClusterRecord, Tx};
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::rbac::Action;
use crate::workflows::pg::{self, KeptCert};
use crate::workflows::{cluster_renew_certs, dcs, host_renew_certs, location_renew_certs, repo_tls};
use crate::{App, AppError, Ctx, Result};

/// The actor that the bot's operations and audit records name.
pub const ACTOR: &str = "cert-bot";

/// The longest wait before a renewal that keeps failing is tried again. Certificates are
/// renewed when a third of their life is left (months for the default validity), so
/// retries every few hours leave ample time to fix what makes them fail.
pub const MAX_BACKOFF: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// The last renewal started per target and how many failed in a row before it.
#[derive(Default)]
pub(crate) struct Backoff(std::sync::Mutex<std::collections::HashMap<String, Tried>>);

#[derive(Debug, Clone, Copy)]
struct Tried {
    operation: OperationId,
    /// Failed renewals in a row, `operation` included once it is seen failed.
    failures: u32,
    /// Whether `operation`'s failure is counted in `failures`.
    counted: bool,
}

/// How often the bot looks: a tenth of the validity, between 1 s and 30 s.
pub fn look_period(validity: std::time::Duration) -> std::time::Duration {
    (validity / 10).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30))
}

/// How long after a renewal that ended at `at` as the `failures`-th failure in a row the
/// next may start: `period`, doubling, at most [`MAX_BACKOFF`].
pub(crate) fn retry_at(at: DateTime<Utc>, failures: u32, period: chrono::TimeDelta) -> DateTime<Utc> {
    let wait = period.checked_mul(1 << failures.saturating_sub(1).min(20)).unwrap_or(MAX_BACKOFF);
    at + wait.min(MAX_BACKOFF)
}

/// A renewal to start: on what, which workflow, with what, and why (the due certificates).
struct Renewal {
    target: String,
    kind: &'static str,
    project: Option<ProjectId>,
    params: serde_json::Value,
    due: Vec<String>,
    /// A cluster must still be ready or degraded when the renewal starts.
    cluster: Option<ClusterId>,
}

impl App {
    /// One round over every internal certificate; the renewals it started.
    pub async fn certs_renew_due(&self, now: DateTime<Utc>) -> Result<Vec<Operation>> {
        let mut started = Vec::new();
        if self.pki()?.client_renew_if_due(self.config.internal_cert_validity, now)? {
            // Cached agent clients hold the old certificate: make them again.
            self.agents.lock().unwrap_or_else(|p| p.into_inner()).clear();
            tracing::info!("the control plane's client certificate was renewed");
        }
        let mut renewals = Vec::new();
        self.clusters_due(now, &mut renewals).await?;
        self.locations_due(now, &mut renewals).await?;
        self.hosts_due(now, &mut renewals).await?;
        for r in renewals {
            match self.renewal_backing_off(&r.target, now).await {
                Ok(Some((failures, until))) => {
                    tracing::debug!(target = %r.target, failures, %until, "renewal failed before; waiting to retry");
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target = %r.target, error = %e, "reading the last renewal failed"),
            }
            match self.renewal_start(&r).await {
                Ok(Some(op)) => {
                    let mut tried = self.renewals_tried.0.lock().unwrap_or_else(|p| p.into_inner());
                    let failures = tried.get(&r.target).map_or(0, |t| t.failures);
                    tried.insert(r.target.clone(), Tried { operation: op.id, failures, counted: false });
                    drop(tried);
                    started.push(op)
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target = %r.target, error = %e, "starting a certificate renewal failed"),
            }
        }
        Ok(started)
    }

    async fn clusters_due(&self, now: DateTime<Utc>, out: &mut Vec<Renewal>) -> Result<()> {
        let clusters = self.clusters_all().await?;
        for c in clusters.iter().filter(|c| matches!(c.state, ClusterState::Ready | ClusterState::Degraded)) {
            match self.cluster_certs_due(c, now).await {
                Ok(due) if !due.is_empty() => out.push(Renewal {
                    target: format!("cluster/{}", c.name),
                    kind: cluster_renew_certs::KIND,
                    project: Some(c.project_id),
                    params: serde_json::to_value(cluster_renew_certs::Params { cluster: c.id, issued_before: None })
                        .expect("serialise"),
                    due,
                    cluster: Some(c.id),
                }),
                Ok(_) => {}
                Err(e) => tracing::warn!(cluster = %c.name, error = %e, "checking the cluster's certificates failed"),
            }
        }
        Ok(())
    }

    /// The certificates of `c` that are due at `now`: its members' (by name) and its
    /// stanza's client certificate (`backup client`).
    async fn cluster_certs_due(&self, c: &ClusterRecord, now: DateTime<Utc>) -> Result<Vec<String>> {
        let pki = self.pki()?;
        let mut tx = self.store.read().await?;
        let mut due = Vec::new();
        for m in tx.member_list(c.id).await? {
            let owner = pg::member_owner(c.id, &m.name);
            let Some(sealed) = tx.secret_get(&owner, pg::MEMBER_CERT).await? else { continue };
            let plain = pki.open(&sealed, &pg::aad(&owner, pg::MEMBER_CERT))?;
            let kept: KeptCert = serde_json::from_slice(&plain).map_err(|e| {
                AppError::Internal(anyhow::anyhow!("member {}'s stored certificate is unreadable: {e}", m.name))
            })?;
            if pg::cert_due(&kept, now) {
                due.push(m.name);
            }
        }
        drop(tx);
        let spec = crate::workflows::pg::cluster(self, c.id).await.map_err(step_error)?.map(|(_, spec)| spec);
        if let Some(repo) = spec.and_then(|s| s.backup_repo) {
            let kept = repo_tls::stanza_cert_kept(self, repo, &c.id.to_string()).await.map_err(step_error)?;
            if kept.is_some_and(|k| pg::cert_due(&k, now)) {
                due.push("backup client".into());
            }
        }
        Ok(due)
    }

    async fn locations_due(&self, now: DateTime<Utc>, out: &mut Vec<Renewal>) -> Result<()> {
        let mut page = PageRequest { limit: 500, after: None };
        loop {
            let batch = self.store.read().await?.location_list(&page).await?;
            for l in &batch.items {
                let kept = match dcs::certs_kept(self, l.id).await {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::warn!(location = %l.name, error = %e.error.message, "checking the DCS certificates failed");
                        continue;
                    }
                };
                let due: Vec<String> =
                    kept.into_iter().filter(|(_, k)| pg::cert_due(k, now)).map(|(m, _)| m.name).collect();
                if !due.is_empty() {
                    out.push(Renewal {
                        target: format!("location/{}", l.name),
                        kind: location_renew_certs::KIND,
                        project: None,
                        params: serde_json::to_value(location_renew_certs::Params {
                            location: l.id,
                            issued_before: None,
                        })
                        .expect("serialise"),
                        due,
                        cluster: None,
                    });
                }
            }
            match (batch.next_page_token, batch.items.last()) {
                (Some(_), Some(last)) => page.after = Some(last.name.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn hosts_due(&self, now: DateTime<Utc>, out: &mut Vec<Renewal>) -> Result<()> {
        let hosts = self.hosts_all().await?;
        let ready = hosts.into_iter().filter(|h| h.host.status == HostStatus::Ready);
        let checks = ready.map(|h| async move {
            let mut due = Vec::new();
            match host_renew_certs::agent_presents(self, &h.host).await {
                Ok(v) if v.due(now) => due.push("agent".to_string()),
                Ok(_) => {}
                Err(e) => tracing::warn!(host = %h.host.name, error = %e, "cannot read the agent's certificate"),
            }
            match repo_tls::server_cert_kept(self, h.host.id).await {
                Ok(Some(k)) if pg::cert_due(&k, now) => due.push("pgBackRest server".to_string()),
                Ok(_) => {}
                Err(e) => tracing::warn!(host = %h.host.name, error = %e.error.message, "checking the server certificate failed"),
            }
            (h, due)
        });
        for (h, due) in futures_util::future::join_all(checks).await {
            if !due.is_empty() {
                out.push(Renewal {
                    target: format!("host/{}", h.host.name),
                    kind: host_renew_certs::KIND,
                    project: None,
                    params: serde_json::to_value(host_renew_certs::Params { host: h.host.id, issued_before: None })
                        .expect("serialise"),
                    due,
                    cluster: None,
                });
            }
        }
        Ok(())
    }

    /// Whether the last renewal of `target` this process started failed recently: the
    /// failures in a row and when the next may start. Counts the failure the first time it
    /// is seen; a renewal that succeeded clears the count.
    async fn renewal_backing_off(&self, target: &str, now: DateTime<Utc>) -> Result<Option<(u32, DateTime<Utc>)>> {
        let last = self.renewals_tried.0.lock().unwrap_or_else(|p| p.into_inner()).get(target).copied();
        let Some(last) = last else { return Ok(None) };
        let Some(op) = self.store.read().await?.operation_get(last.operation).await? else { return Ok(None) };
        let failures = match op.state {
            OperationState::Failed | OperationState::Cancelled => {
                let mut tried = self.renewals_tried.0.lock().unwrap_or_else(|p| p.into_inner());
                let t = tried.entry(target.to_owned()).or_insert(last);
                if t.operation == last.operation && !t.counted {
                    t.failures += 1;
                    t.counted = true;
                }
                t.failures
            }
            OperationState::Succeeded => {
                self.renewals_tried.0.lock().unwrap_or_else(|p| p.into_inner()).remove(target);
                return Ok(None);
            }
            // Still running: renewal_start sees it and starts nothing.
            _ => return Ok(None),
        };
        let period = chrono::TimeDelta::from_std(look_period(self.config.internal_cert_validity))
            .unwrap_or(chrono::TimeDelta::seconds(30));
        let until = retry_at(op.finished_at.unwrap_or(now), failures, period);
        Ok((now < until).then_some((failures, until)))
    }

    /// Starts a renewal with its audit record, unless an operation acts on its target (or
    /// its cluster is no longer ready or degraded).
    async fn renewal_start(&self, r: &Renewal) -> Result<Option<Operation>> {
        let mut tx = self.store.write().await?;
        let mut project = None;
        if let Some(id) = r.cluster {
            let Some(now) = tx.cluster_record_by_id(id).await? else { return Ok(None) };
            if !matches!(now.state, ClusterState::Ready | ClusterState::Degraded) {
                return Ok(None);
            }
            project = tx.cluster_get(now.project_id, &now.name).await?.map(|view| view.project);
        }
        if tx.operation_active_on(&r.target).await? {
            return Ok(None);
        }
        let start =
            OperationStart { kind: r.kind, target: r.target.clone(), project: r.project, params: r.params.clone() };
        let op = self.operation_create(tx.as_mut(), ACTOR, start).await?;
        let entry = audit::AuditEntry {
            at: crate::now(),
            actor: ACTOR.into(),
            project,
            source: None,
            action: r.kind.into(),
            target: r.target.clone(),
            params: serde_json::json!({"operation": op.id.to_string(), "due": r.due}),
            outcome: audit::Outcome::Success,
            request_id: None,
        };
        tx.audit_append(&entry).await?;
        tx.commit().await?;
        self.operations_created();
        tracing::info!(target = %r.target, operation = %op.id, due = ?r.due, "certificates due; renewal started");
        Ok(Some(op))
    }
}

/// The time a renewal on request renews the certificates issued before: the whole second
/// after now, as certificates are dated in whole seconds (see `pg::Renew::IssuedBefore`).
fn request_time() -> DateTime<Utc> {
    crate::now().trunc_subsecs(0) + chrono::TimeDelta::seconds(1)
}

impl App {
    /// Renews every internal certificate of a ready or degraded cluster now, whatever its
    /// age: its members' and its stanza's client certificate (`cluster.renew-certs`, put
    /// in place without a restart).
    pub async fn cluster_renew_certs(&self, ctx: &Ctx, name: &str) -> Result<Operation> {
        ctx.require(Action::ClusterRenewCerts)?;
        let issued_before = request_time();
        let mut tx = self.store.write().await?;
        let record =
            tx.cluster_record(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
        crate::clusters::changeable(&record)?;
        let params = cluster_renew_certs::Params { cluster: record.id, issued_before: Some(issued_before) };
        let start = OperationStart {
            kind: cluster_renew_certs::KIND,
            target: format!("cluster/{name}"),
            project: Some(ctx.project.id),
            params: serde_json::to_value(params).expect("serialise"),
        };
        self.renewal_requested(tx, ctx, start, issued_before).await
    }

    /// Renews the certificates of every etcd member of a location now, whatever their age
    /// (`location.renew-certs`).
    pub async fn location_renew_certs(&self, ctx: &Ctx, name: &str) -> Result<Operation> {
        ctx.require(Action::LocationRenewCerts)?;
        let issued_before = request_time();
        let mut tx = self.store.write().await?;
        let location = tx.location_get(name).await?.ok_or_else(|| AppError::not_found("location", name))?;
        if tx.dcs_member_list(location.id).await?.is_empty() {
            return Err(AppError::Conflict(format!(
                "location {name:?} has no DCS (etcd) yet, so no certificate to renew: its first cluster creates it"
            )));
        }
        let params = location_renew_certs::Params { location: location.id, issued_before: Some(issued_before) };
        let start = OperationStart {
            kind: location_renew_certs::KIND,
            target: format!("location/{name}"),
            project: None,
            params: serde_json::to_value(params).expect("serialise"),
        };
        self.renewal_requested(tx, ctx, start, issued_before).await
    }

    /// Renews a host's agent certificate, and its pgBackRest TLS server's if it has one,
    /// now, whatever their age (`host.renew-certs`). The agent must answer: the host is
    /// ready or draining.
    pub async fn host_renew_certs(&self, ctx: &Ctx, name: &str) -> Result<Operation> {
        ctx.require(Action::HostRenewCerts)?;
        let issued_before = request_time();
        let mut tx = self.store.write().await?;
        let host = tx.host_get(name).await?.ok_or_else(|| AppError::not_found("host", name))?.host;
        if !matches!(host.status, HostStatus::Ready | HostStatus::Draining) {
            return Err(AppError::Conflict(format!(
                "host {name:?} is {}: its agent must answer to take a new certificate (`sovdb host show {name}`)",
                host.status.as_str()
            )));
        }
        let params = host_renew_certs::Params { host: host.id, issued_before: Some(issued_before) };
        let start = OperationStart {
            kind: host_renew_certs::KIND,
            target: format!("host/{name}"),
            project: None,
            params: serde_json::to_value(params).expect("serialise"),
        };
        self.renewal_requested(tx, ctx, start, issued_before).await
    }

    /// Starts a renewal on request in `tx` (which read the target), with its audit record:
    /// refused while an operation acts on the target, as the bot's renewals wait for it.
    async fn renewal_requested(
        &self,
        mut tx: Box<dyn Tx>,
        ctx: &Ctx,
        start: OperationStart,
        issued_before: DateTime<Utc>,
    ) -> Result<Operation> {
        if tx.operation_active_on(&start.target).await? {
            return Err(AppError::Conflict(format!(
                "an operation acts on {} now; ask again when it has ended (`sovdb op list`)",
                start.target
            )));
        }
        let (kind, target) = (start.kind, start.target.clone());
        let op = self.operation_create(tx.as_mut(), &ctx.user.name, start).await?;
        let params = serde_json::json!({"operation": op.id.to_string(), "issued_before": issued_before});
        tx.audit_append(&ctx.audit(kind, target.clone(), params)).await?;
        tx.commit().await?;
        self.operations_created();
        tracing::info!(%target, operation = %op.id, actor = %ctx.user.name, "certificate renewal asked for");
        Ok(op)
    }
}

fn step_error(e: sovdb_operations::StepFailure) -> AppError {
    AppError::Internal(anyhow::anyhow!(e.error.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_renewals_back_off_doubling_up_to_the_cap() {
        let at = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let period = chrono::TimeDelta::seconds(30);
        let waits: Vec<i64> = (1..=6).map(|n| (retry_at(at, n, period) - at).num_seconds()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960]);
        assert_eq!(retry_at(at, 20, period) - at, MAX_BACKOFF);
        assert_eq!(retry_at(at, u32::MAX, period) - at, MAX_BACKOFF, "no overflow");
        assert_eq!(look_period(std::time::Duration::from_secs(60)), std::time::Duration::from_secs(6));
        assert_eq!(look_period(std::time::Duration::from_secs(825 * 86400)), std::time::Duration::from_secs(30));
    }
}

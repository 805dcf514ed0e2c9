//! The certificate bot, for cluster members' certificates: a level-triggered loop that
//! starts `cluster.renew-certs` on every ready (or degraded) cluster one of whose members
//! keeps a certificate with less than a third of its life left.
//!
//! It compares only what is stored (the kept certificates) with the clock, takes no reason
//! as input and starts nothing on a cluster that an operation acts on: the running
//! operation may be the renewal itself, and one mutating operation per cluster is the rule.
//! The operation and its audit record are written in one transaction, after checking again
//! in it that no operation acts on the cluster, so two control planes start one renewal.
//!
//! It persists nothing of its own: the operation does the work (see
//! `workflows::cluster_renew_certs`), and a round after a crash sees the same due
//! certificates and starts it again.

use chrono::{DateTime, Utc};
use sovdb_store::ClusterRecord;
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::workflows::cluster_renew_certs;
use crate::workflows::pg::{self, KeptCert};
use crate::{App, AppError, Result};

/// The actor that the bot's operations and audit records name.
pub const ACTOR: &str = "cert-bot";

impl App {
    /// One round over every cluster; the renewals it started.
    pub async fn certs_renew_due(&self, now: DateTime<Utc>) -> Result<Vec<Operation>> {
        let mut started = Vec::new();
        let mut after = None;
        loop {
            let batch = self.store.read().await?.cluster_records_all(after, 200).await?;
            let Some(last) = batch.last() else { return Ok(started) };
            after = Some(last.id);
            for c in batch.iter().filter(|c| matches!(c.state, ClusterState::Ready | ClusterState::Degraded)) {
                match self.cluster_certs_due(c, now).await {
                    Ok(due) if !due.is_empty() => match self.cluster_renew_start(c, &due).await {
                        Ok(Some(op)) => started.push(op),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(cluster = %c.name, error = %e, "starting a certificate renewal failed")
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(cluster = %c.name, error = %e, "checking the members' certificates failed")
                    }
                }
            }
        }
    }

    /// The members of `c` whose kept certificate is due at `now`.
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
        Ok(due)
    }

    /// Starts the renewal of `c`'s certificates with its audit record, unless an operation
    /// acts on the cluster or it is no longer ready or degraded.
    async fn cluster_renew_start(&self, c: &ClusterRecord, due: &[String]) -> Result<Option<Operation>> {
        let target = format!("cluster/{}", c.name);
        let mut tx = self.store.write().await?;
        let Some(now) = tx.cluster_record_by_id(c.id).await? else { return Ok(None) };
        if !matches!(now.state, ClusterState::Ready | ClusterState::Degraded) || tx.operation_active_on(&target).await?
        {
            return Ok(None);
        }
        let params = serde_json::to_value(pg::ClusterParams { cluster: c.id }).expect("serialise");
        let start = OperationStart {
            kind: cluster_renew_certs::KIND,
            target: target.clone(),
            project: Some(c.project_id),
            params,
        };
        let op = self.operation_create(tx.as_mut(), ACTOR, start).await?;
        let project = tx.cluster_get(c.project_id, &c.name).await?.map(|view| view.project);
        let entry = audit::AuditEntry {
            at: crate::now(),
            actor: ACTOR.into(),
            project,
            source: None,
            action: cluster_renew_certs::KIND.into(),
            target,
            params: serde_json::json!({"operation": op.id.to_string(), "due": due}),
            outcome: audit::Outcome::Success,
            request_id: None,
        };
        tx.audit_append(&entry).await?;
        tx.commit().await?;
        self.operations_created();
        tracing::info!(cluster = %c.name, operation = %op.id, due = ?due, "member certificates due; renewal started");
        Ok(Some(op))
    }
}

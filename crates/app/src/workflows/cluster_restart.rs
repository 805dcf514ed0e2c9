//! `cluster.restart`: a rolling restart of PostgreSQL on every member through Patroni,
//! replicas first, the primary last (in place: it stays the primary, so writers see one
//! short interruption and no change of primary).
//!
//! Parameters: `{"cluster": ID}`.
//!
//! Steps, each idempotent:
//! 1. `plan`: the order (replicas by name, then the primary) and when each member's
//!    PostgreSQL started. A member whose start time changed since was restarted already:
//!    a rerun after a crash skips it.
//! 2. `restart-replicas`: one at a time; after each, the whole cluster streams again
//!    before the next one goes down.
//! 3. `restart-primary`: the same for the primary; an event records the restart.
//!
//! [`restart_member`] is also how `cluster.set` restarts where a parameter needs it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};

use super::pg::{self, store_failure, ClusterParams, Member};
use crate::patroni;
use crate::App;

pub const KIND: &str = "cluster.restart";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("plan", plan)
        .step("restart-replicas", |ctx| restart(ctx, false))
        .step("restart-primary", |ctx| restart(ctx, true))
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub primary: String,
    /// Replicas in the order they restart.
    pub replicas: Vec<String>,
    /// When each member's PostgreSQL started, before the operation.
    pub started: BTreeMap<String, Option<String>>,
}

/// The rolling order and each member's start time, as the cluster is now.
pub(crate) async fn make_plan(app: &App, members: &[Member]) -> Result<Plan, StepFailure> {
    let (_, primary) = patroni::wait_primary(app, members, Duration::from_secs(30))
        .await
        .map_err(|e| StepFailure::transient(format!("no running primary: {e}")))?;
    let mut started = BTreeMap::new();
    for m in members {
        let node = patroni::node(app, m)
            .await
            .map_err(|e| StepFailure::transient(format!("{}'s Patroni doesn't answer: {e}", m.name)))?;
        started.insert(m.name.clone(), node.postmaster_start_time);
    }
    let replicas = members.iter().filter(|m| m.name != primary.name).map(|m| m.name.clone()).collect();
    Ok(Plan { primary: primary.name.clone(), replicas, started })
}

async fn plan(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, cluster).await?;
    Ok(serde_json::to_value(make_plan(app, &members).await?).expect("serialise"))
}

async fn restart(ctx: StepCtx<App>, primary: bool) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let plan: Plan = ctx.output("plan")?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let password = pg::passwords(app, cluster).await?.rest;
    let names = if primary { vec![plan.primary.clone()] } else { plan.replicas.clone() };
    let mut restarted = Vec::new();
    for name in &names {
        let Some(m) = members.iter().find(|m| &m.name == name) else { continue };
        let before = plan.started.get(name).cloned().flatten();
        if restart_member(app, &members, m, before.as_deref(), false, spec.sync, &password).await? {
            restarted.push(name.clone());
        }
    }
    if primary {
        let mut tx = app.store.write().await.map_err(store_failure)?;
        let message =
            format!("rolling restart of cluster {}: replicas first, then the primary {}", record.name, plan.primary);
        crate::events::record(tx.as_mut(), &pg::event(&record, crate::events::kind::RESTART, message))
            .await
            .map_err(super::app_failure)?;
        tx.commit().await.map_err(store_failure)?;
    }
    Ok(json!({"restarted": restarted}))
}

/// Restarts one member's PostgreSQL through its Patroni (only if a parameter waits for
/// it, with `pending_only`), unless its start time is no longer `before` (restarted
/// already); then waits until the whole cluster streams again. Answers whether it
/// restarted it now.
pub(crate) async fn restart_member(
    app: &App,
    members: &[Member],
    m: &Member,
    before: Option<&str>,
    pending_only: bool,
    sync: bool,
    password: &str,
) -> Result<bool, StepFailure> {
    let node = patroni::node(app, m)
        .await
        .map_err(|e| StepFailure::transient(format!("{}'s Patroni doesn't answer: {e}", m.name)))?;
    let already = before.is_some() && node.postmaster_start_time.as_deref() != before;
    let wanted = !already && (!pending_only || node.pending_restart || pending_in_postgres(app, m).await?);
    if wanted {
        let body = json!({});
        let (code, text) =
            patroni::change(app, m, reqwest::Method::POST, "/restart", &body, password, Duration::from_secs(300))
                .await
                .map_err(|e| StepFailure::transient(format!("cannot reach {}'s Patroni: {e}", m.name)))?;
        if code != 200 {
            return Err(StepFailure::transient(format!("Patroni could not restart {}: {code} {text}", m.name)));
        }
    }
    let s = patroni::settle(app, members, sync, Duration::from_secs(180))
        .await
        .map_err(|e| StepFailure::transient(format!("no primary after restarting {}: {e}", m.name)))?;
    if !s.missing.is_empty() {
        return Err(StepFailure::transient(format!(
            "after restarting {}, not streaming from {} yet: {}",
            m.name,
            s.leader,
            s.missing.join(", ")
        )));
    }
    Ok(wanted)
}

/// Whether PostgreSQL itself has a changed setting waiting for a restart (Patroni says so
/// too, from its next cycle on).
async fn pending_in_postgres(app: &App, m: &Member) -> Result<bool, StepFailure> {
    let out = pg::psql(app, m, "SELECT count(*) FROM pg_settings WHERE pending_restart;\n".into(), "read pg_settings")
        .await?;
    Ok(out.trim() != "0")
}

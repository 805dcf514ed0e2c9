//! `host.remove`: stop the agent, remove what sovdb installed on the host (never database
//! data), and forget the host.
//!
//! Parameters: `{"host": NAME, "force": bool}`. Without `force` every step needs the host
//! reachable (transient errors are retried, then the operation fails and the host goes
//! back to its status); with `force` an unreachable host is forgotten anyway (what is on
//! it stays there).
//!
//! Steps: `mark-removing` (undo: mark it ready again; the heartbeat corrects that if it
//! isn't), `check-idle` (refuses while supervised processes run there), `stop-agent`,
//! `uninstall-agent`, `forget`. Each is idempotent: stopping a stopped agent, removing a
//! removed directory and forgetting a forgotten host do nothing.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_types::HostStatus;

use super::host_add::{command_failure, maybe_host_record, stop_script, uninstall_script, AgentPaths};
use super::{agent_failure, app_failure, provider_failure};
use crate::App;

pub const KIND: &str = "host.remove";

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct Params {
    host: String,
    #[serde(default)]
    force: bool,
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step_with_undo("mark-removing", mark_removing, unmark_removing)
        .step("check-idle", check_idle)
        .step("stop-agent", stop_agent)
        .step("uninstall-agent", uninstall_agent)
        .step("forget", forget)
}

async fn set_status(app: &App, host: &str, status: HostStatus) -> Result<(), StepFailure> {
    let mut tx = app.store.write().await.map_err(|e| app_failure(e.into()))?;
    if let Some(r) = tx.host_get(host).await.map_err(|e| app_failure(e.into()))? {
        tx.host_set_status(r.host.id, status, None).await.map_err(|e| app_failure(e.into()))?;
    }
    tx.commit().await.map_err(|e| app_failure(e.into()))
}

async fn mark_removing(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    set_status(&ctx.services, &p.host, HostStatus::Removing).await?;
    Ok(json!({}))
}

async fn unmark_removing(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    set_status(&ctx.services, &p.host, HostStatus::Ready).await?;
    Ok(json!({}))
}

/// With `force`, a host that can't be reached is skipped, not waited for.
fn skip_if_forced(force: bool, failure: StepFailure) -> Result<Value, StepFailure> {
    if force && failure.transient {
        Ok(json!({ "skipped": failure.error.message }))
    } else {
        Err(failure)
    }
}

async fn check_idle(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    let app = &ctx.services;
    let Some(record) = maybe_host_record(app, &p.host).await? else { return Ok(json!({})) };
    let client = app.agent_client(&record.host, Duration::from_secs(10)).await.map_err(app_failure)?;
    let processes = match client.process_list().await {
        Ok(list) => list,
        Err(e) => return skip_if_forced(p.force, agent_failure(e)),
    };
    let running: Vec<String> = processes
        .iter()
        .filter(|s| s.desired == sovdb_agent::proto::DesiredState::Running)
        .map(|s| s.name.clone())
        .collect();
    if !running.is_empty() && !p.force {
        return Err(StepFailure::permanent(format!(
            "host {:?} still runs {} ({}); remove the clusters placed there first, or pass --force",
            p.host,
            running.len(),
            running.join(", ")
        )));
    }
    Ok(json!({}))
}

async fn stop_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    let app = &ctx.services;
    let Some(record) = maybe_host_record(app, &p.host).await? else { return Ok(json!({})) };
    let transport = app.host_transport(&record).map_err(app_failure)?;
    match transport.run(&stop_script(&record, &AgentPaths::new(app, &record)), SCRIPT_TIMEOUT).await {
        Ok(out) if out.success() => Ok(json!({})),
        Ok(out) => Err(command_failure("cannot stop the agent", "stop agent", &out)),
        Err(e) => skip_if_forced(p.force, provider_failure(e)),
    }
}

async fn uninstall_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    let app = &ctx.services;
    let Some(record) = maybe_host_record(app, &p.host).await? else { return Ok(json!({})) };
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let script = uninstall_script(&record, &AgentPaths::new(app, &record));
    match transport.run(&script, SCRIPT_TIMEOUT).await {
        Ok(out) if out.success() => Ok(json!({})),
        Ok(out) => Err(command_failure("cannot remove the agent", "remove agent", &out)),
        Err(e) => skip_if_forced(p.force, provider_failure(e)),
    }
}

async fn forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: Params = ctx.params()?;
    let app = &ctx.services;
    let mut tx = app.store.write().await.map_err(|e| app_failure(e.into()))?;
    if let Some(r) = tx.host_get(&p.host).await.map_err(|e| app_failure(e.into()))? {
        super::repo_tls::forget_host(tx.as_mut(), r.host.id).await.map_err(|e| app_failure(e.into()))?;
        tx.host_delete(r.host.id).await.map_err(|e| app_failure(e.into()))?;
    }
    tx.commit().await.map_err(|e| app_failure(e.into()))?;
    Ok(json!({}))
}

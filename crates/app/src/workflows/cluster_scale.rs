//! `cluster.scale`: more or fewer members. New members are placed where the cluster is
//! not yet (the spread rule holds for the whole cluster), cloned from the primary by
//! Patroni and routed by every member's HAProxy; removed members are replicas (never the
//! primary; asynchronous ones and the newest first).
//!
//! Parameters: `{"cluster": ID, "replicas": N}`.
//!
//! Steps, each idempotent:
//! 1. `choose`: the members now, and which ones go when scaling down.
//! 2. `place` (allocates; undo: remove the members it added): hosts and ports for the new
//!    members; a rerun counts the members already added.
//! 3. `ensure-dcs`, 4. `install-packages`: as in `cluster.create`.
//! 5. `remove-members`: the chosen replicas stopped and removed (processes, directory,
//!    ports, certificate, row); Patroni drops their replication slots.
//! 6. `write-configs`: every member's files (the new members' in full; the others'
//!    HAProxy configuration with the new peers, and their `pg_hba` rules, which the
//!    others' Patroni reloads so the new members may replicate from any of them).
//! 7. `start-members`, 8. `start-routers`: the new members' Patroni (which clones from the
//!    primary) and HAProxy; the other members' HAProxy reloads without dropping a
//!    connection.
//! 9. `wait-replicas`: every member streams.
//! 10. `mark`: the spec's member count, and an event.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_types::ClusterId;

use super::cluster_create;
use super::pg::{self, store_failure, Member};
use crate::patroni;
use crate::App;

pub const KIND: &str = "cluster.scale";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub cluster: ClusterId,
    pub replicas: u32,
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("choose", choose)
        .step_with_undo("place", place, unplace)
        .step("ensure-dcs", cluster_create::ensure_dcs)
        .step("install-packages", cluster_create::install_packages)
        .step("remove-members", remove_members)
        .step("write-configs", write_configs)
        .step("start-members", cluster_create::start_members)
        .step("start-routers", start_routers)
        .step("wait-replicas", cluster_create::wait_replicas)
        .step("mark", mark)
}

#[derive(Debug, Serialize, Deserialize)]
struct Choice {
    /// The members before the operation.
    before: Vec<String>,
    /// The replicas that go.
    remove: Vec<String>,
}

async fn choose(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, replicas } = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, cluster).await?;
    let before: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut remove = Vec::new();
    if (replicas as usize) < members.len() {
        let status = patroni::status(app, &members)
            .await
            .map_err(|e| StepFailure::transient(format!("no member's Patroni answers: {e}")))?;
        let leader = status
            .leader()
            .map(|l| l.name.clone())
            .ok_or_else(|| StepFailure::transient("the cluster has no running primary: scaling down waits for one"))?;
        // Replicas that don't run first, then asynchronous ones, then the newest.
        let mut candidates: Vec<(bool, bool, u32, String)> = members
            .iter()
            .filter(|m| m.name != leader)
            .map(|m| {
                let seen = status.members.iter().find(|p| p.name == m.name);
                let running = seen.is_some_and(patroni::serving);
                let sync = seen.is_some_and(|p| p.is_sync());
                (running, sync, u32::MAX - pg::member_number(&m.name).unwrap_or(0), m.name.clone())
            })
            .collect();
        candidates.sort();
        remove = candidates.into_iter().take(members.len() - replicas as usize).map(|c| c.3).collect();
    }
    Ok(serde_json::to_value(Choice { before, remove }).expect("serialise"))
}

async fn place(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, replicas } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let staying = members.iter().filter(|m| !choice.remove.contains(&m.name)).count() as u32;
    if replicas > staying {
        cluster_create::add_members(app, &record, &spec, &members, replicas - staying).await?;
    }
    Ok(cluster_create::placed(&pg::members(app, cluster).await?))
}

/// Removes the members `place` added, and tells the others' HAProxy.
async fn unplace(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let (added, kept): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| !choice.before.contains(&m.name));
    for m in &added {
        pg::remove_member(app, m, &record).await?;
    }
    if !added.is_empty() {
        let allow = pg::allow_list(app, &record, &spec).await?;
        rewrite_routers(app, &kept.into_iter().cloned().collect::<Vec<_>>(), &allow).await?;
    }
    Ok(json!({"removed": added.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

async fn remove_members(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let (record, _) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let going: Vec<&Member> = members.iter().filter(|m| choice.remove.contains(&m.name)).collect();
    if going.is_empty() {
        return Ok(json!({"removed": []}));
    }
    // Never the primary, even one that became it since `choose`.
    if let Ok(status) = patroni::status(app, &members).await {
        if let Some(l) = status.leader().filter(|l| choice.remove.contains(&l.name)) {
            return Err(StepFailure::permanent(format!(
                "{} became the primary since the scale began; run the scale again",
                l.name
            )));
        }
    }
    for m in &going {
        pg::remove_member(app, m, &record).await?;
    }
    Ok(json!({"removed": choice.remove}))
}

/// `cluster.create`'s `write-configs`, then a Patroni reload of the members that ran
/// before and whose files changed: their `pg_hba` names replication sources by member
/// address, so the new members' addresses must be in it before they clone. A reload
/// twice does no harm; a member whose Patroni does not answer (down) reads the file when
/// it starts again, so it does not hold the scale up.
async fn write_configs(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let mut written = cluster_create::write_configs(ctx.clone()).await?;
    let app = &ctx.services;
    let password = pg::passwords(app, cluster).await?.rest;
    let mut not_reloaded = Vec::new();
    for m in pg::members(app, cluster).await? {
        let changed = written["changed"].as_array().is_some_and(|a| a.iter().any(|n| n == m.name.as_str()));
        if changed && choice.before.contains(&m.name) {
            if let Err(e) = super::cluster_allow::reload_patroni(app, &m, &password).await {
                not_reloaded.push(e.error.message);
            }
        }
    }
    written["not_reloaded"] = json!(not_reloaded);
    Ok(written)
}

/// Writes every member's HAProxy configuration for `members` and reloads those whose
/// configuration changed.
async fn rewrite_routers(app: &App, members: &[Member], allow: &[String]) -> Result<(), StepFailure> {
    let peers: Vec<_> = members.iter().map(Member::peer).collect();
    for m in members {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        let layout = m.layout();
        let cfg = sovdb_postgres::render::haproxy_cfg(&layout, &m.peer(), &peers, allow);
        if pg::write(&client, sovdb_postgres::OS_USER, layout.haproxy_cfg(), cfg, 0o600).await? {
            pg::reload_haproxy(&client, m).await?;
        }
    }
    Ok(())
}

async fn start_routers(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let written: Value = ctx.output("write-configs")?;
    let app = &ctx.services;
    cluster_create::start_routers(ctx.clone()).await?;
    // The members that ran before read their new peers; a reload twice does no harm.
    let mut reloaded = Vec::new();
    for m in pg::members(app, cluster).await? {
        let changed = written["changed"].as_array().is_some_and(|a| a.iter().any(|n| n == m.name.as_str()));
        if changed && choice.before.contains(&m.name) {
            let client = pg::agent(app, &m.host, Duration::from_secs(30)).await?;
            pg::reload_haproxy(&client, &m).await?;
            reloaded.push(m.name);
        }
    }
    Ok(json!({"reloaded": reloaded}))
}

async fn mark(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { cluster, replicas } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let (record, mut spec) = pg::must_cluster(app, cluster).await?;
    let before = spec.replicas;
    spec.replicas = replicas;
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.cluster_set_spec(cluster, &serde_json::to_value(&spec).expect("serialise")).await.map_err(store_failure)?;
    if before != replicas {
        let how =
            if choice.remove.is_empty() { String::new() } else { format!(" (removed {})", choice.remove.join(", ")) };
        let message =
            format!("cluster {} scaled from {} to {replicas} member(s){how}", record.name, choice.before.len());
        crate::events::record(tx.as_mut(), &pg::event(&record, crate::events::kind::SCALED, message))
            .await
            .map_err(super::app_failure)?;
    }
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"replicas": replicas}))
}

//! `cluster.switchover` and `cluster.failover`: the primary moves to another member
//! through Patroni.
//!
//! A switchover is planned: the running primary hands over (Patroni checkpoints, stops
//! it, promotes the candidate and makes the old primary follow). A failover promotes a
//! candidate whatever the primary's state, also when the cluster has none (when Patroni
//! won't promote on its own, e.g. every replica lags more than `maximum_lag_on_failover`).
//!
//! Parameters: `{"cluster": ID, "to": MEMBER or null}`.
//!
//! Steps, each idempotent:
//! 1. `choose`: the primary now and the candidate (see [`ClusterSwitchover`]).
//! 2. `switch`: asks Patroni (`POST /switchover` or `/failover`); nothing to do when the
//!    primary already moved (a rerun after a crash).
//! 3. `wait`: a new primary runs and the other members stream from it (the old primary
//!    rejoins as a replica); an event records the change. After a failover, members
//!    that don't come back (a lost host) are named in the output, not waited for.
//!
//! [`ClusterSwitchover`]: sovdb_types::ClusterSwitchover

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_types::ClusterId;

use super::pg::{self, store_failure};
use crate::patroni;
use crate::App;

pub const SWITCHOVER: &str = "cluster.switchover";
pub const FAILOVER: &str = "cluster.failover";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub cluster: ClusterId,
    #[serde(default)]
    pub to: Option<String>,
}

pub fn switchover() -> Workflow<App> {
    Workflow::new(SWITCHOVER)
        .step("choose", |ctx| choose(ctx, false))
        .step("switch", |ctx| switch(ctx, false))
        .step("wait", |ctx| wait(ctx, false))
}

pub fn failover() -> Workflow<App> {
    Workflow::new(FAILOVER)
        .step("choose", |ctx| choose(ctx, true))
        .step("switch", |ctx| switch(ctx, true))
        .step("wait", |ctx| wait(ctx, true))
}

#[derive(Debug, Serialize, Deserialize)]
struct Choice {
    /// The primary when the operation began (none: the cluster had no running primary).
    from: Option<String>,
    /// The member to promote (none: Patroni chooses).
    to: Option<String>,
}

async fn choose(ctx: StepCtx<App>, failover: bool) -> Result<Value, StepFailure> {
    let Params { cluster, to } = ctx.params()?;
    let app = &ctx.services;
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let status = patroni::status(app, &members)
        .await
        .map_err(|e| StepFailure::transient(format!("no member's Patroni answers: {e}")))?;
    let from = status.leader().map(|l| l.name.clone());
    if let Some(to) = &to {
        if !members.iter().any(|m| &m.name == to) {
            return Err(StepFailure::permanent(format!("the cluster has no member {to:?}")));
        }
        if from.as_ref() == Some(to) {
            return Err(StepFailure::permanent(format!("{to} is the primary already")));
        }
    }
    let to = match (to, failover) {
        (Some(to), _) => Some(to),
        (None, false) => None,
        (None, true) => {
            // The synchronous standby has every acknowledged commit; else the least behind.
            let replicas = status.members.iter().filter(|m| !m.is_leader() && patroni::serving(m));
            let best = if spec.sync {
                status.members.iter().find(|m| m.is_sync())
            } else {
                replicas.min_by_key(|m| m.lag_bytes().unwrap_or(i64::MAX))
            };
            Some(best.map(|m| m.name.clone()).ok_or_else(|| {
                StepFailure::permanent("no replica runs that could be promoted; name one with --to".to_string())
            })?)
        }
    };
    if !failover && from.is_none() {
        return Err(StepFailure::permanent(
            "the cluster has no running primary to switch over from: use `sovdb cluster failover`".to_string(),
        ));
    }
    Ok(serde_json::to_value(Choice { from, to }).expect("serialise"))
}

async fn switch(ctx: StepCtx<App>, failover: bool) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let members = pg::members(app, cluster).await?;
    let status = patroni::status(app, &members)
        .await
        .map_err(|e| StepFailure::transient(format!("no member's Patroni answers: {e}")))?;
    let leader = status.leader().map(|l| l.name.clone());
    if leader.is_some() && leader != choice.from && (choice.to.is_none() || leader == choice.to) {
        return Ok(json!({"primary": leader, "already": true}));
    }
    let password = pg::passwords(app, cluster).await?.rest;
    let (path, body) = if failover {
        ("/failover", json!({"candidate": choice.to}))
    } else {
        ("/switchover", json!({"leader": choice.from, "candidate": choice.to}))
    };
    // Any member's Patroni takes the request; the candidate's is up in a failover.
    let ask = choice
        .to
        .as_ref()
        .and_then(|to| members.iter().find(|m| &m.name == to))
        .or_else(|| members.iter().find(|m| Some(&m.name) == choice.from.as_ref()))
        .ok_or_else(|| StepFailure::permanent("the chosen members are gone"))?;
    let (code, text) =
        patroni::change(app, ask, reqwest::Method::POST, path, &body, &password, Duration::from_secs(60))
            .await
            .map_err(|e| StepFailure::transient(format!("cannot reach {}'s Patroni: {e}", ask.name)))?;
    match code {
        200 => Ok(json!({"patroni": text})),
        // Patroni refuses what it can't do (no good candidate, not the sync standby…).
        400 | 412 => Err(StepFailure::permanent(format!("Patroni refused: {text}"))),
        _ => Err(StepFailure::transient(format!("Patroni answered {code}: {text}"))),
    }
}

async fn wait(ctx: StepCtx<App>, failover: bool) -> Result<Value, StepFailure> {
    let Params { cluster, .. } = ctx.params()?;
    let choice: Choice = ctx.output("choose")?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let timeout = Duration::from_secs(if failover { 60 } else { 120 });
    let s = patroni::settle(app, &members, spec.sync, timeout)
        .await
        .map_err(|e| StepFailure::transient(format!("no primary after the {}: {e}", kind(failover))))?;
    if Some(&s.leader) == choice.from.as_ref() {
        return Err(StepFailure::transient(format!("{} still leads", s.leader)));
    }
    if !failover && !s.missing.is_empty() {
        return Err(StepFailure::transient(format!("not streaming from {} yet: {}", s.leader, s.missing.join(", "))));
    }
    let from = choice.from.as_deref().unwrap_or("no running primary");
    let message = format!("{} of cluster {}: {from} → {}", kind(failover), record.name, s.leader);
    let mut tx = app.store.write().await.map_err(store_failure)?;
    crate::events::record(tx.as_mut(), &pg::event(&record, kind(failover), message))
        .await
        .map_err(super::app_failure)?;
    // Ours, not Patroni's: the observing loop must not record it as a failover again.
    crate::observe::record_leader(tx.as_mut(), cluster, &s.leader, None).await.map_err(super::app_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"primary": s.leader, "from": choice.from, "not_back": s.missing}))
}

fn kind(failover: bool) -> &'static str {
    if failover {
        crate::events::kind::FAILOVER
    } else {
        crate::events::kind::SWITCHOVER
    }
}

//! `cluster.set`: a rolling change of PostgreSQL parameters through Patroni. Patroni
//! keeps the cluster's parameters in the DCS; every member writes them to its
//! `postgresql.conf` and reloads. A parameter PostgreSQL reads only at start
//! (`context = postmaster`) then waits for a restart, which this operation does where
//! needed and only there: replicas first, the primary last, one at a time.
//!
//! Parameters: `{"cluster": ID, "set": {NAME: VALUE}, "reset": [NAME]}`, validated by
//! the app before the operation exists.
//!
//! Steps, each idempotent:
//! 1. `apply`: `PATCH /config` (the same patch twice is one change); the stored spec
//!    follows. Its output names the parameters that need a restart.
//! 2. `wait-applied`: every member's `postgresql.conf` holds the new values and was
//!    loaded after it was written (`pg_file_settings`, `pg_conf_load_time()`).
//! 3. `restart-pending`: a rolling restart of the members Patroni reports
//!    `pending_restart`, plus an event that says what changed and what restarted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_types::ClusterId;

use super::cluster_restart;
use super::pg::{self, store_failure, Member};
use crate::patroni;
use crate::App;

pub const KIND: &str = "cluster.set";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub cluster: ClusterId,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub reset: Vec<String>,
}

impl Params {
    /// What the DCS gets: a reset goes back to sovdb's base value, else to PostgreSQL's
    /// default (null removes it).
    fn patch(&self) -> BTreeMap<String, Value> {
        let base = sovdb_postgres::render::base_parameters();
        let mut out: BTreeMap<String, Value> = self.set.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        for k in &self.reset {
            out.insert(k.clone(), base.get(k).cloned().unwrap_or(Value::Null));
        }
        out
    }
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND).step("apply", apply).step("wait-applied", wait_applied).step("restart-pending", restart_pending)
}

async fn apply(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let app = &ctx.services;
    let (_, mut spec) = pg::must_cluster(app, params.cluster).await?;
    let members = pg::members(app, params.cluster).await?;
    let password = pg::passwords(app, params.cluster).await?.rest;
    let body = json!({"postgresql": {"parameters": params.patch()}});
    let mut errors = Vec::new();
    let mut done = false;
    for m in &members {
        match patroni::change(app, m, reqwest::Method::PATCH, "/config", &body, &password, Duration::from_secs(10))
            .await
        {
            Ok((200, _)) => {
                done = true;
                break;
            }
            Ok((code, text)) => errors.push(format!("{}: {code} {text}", m.name)),
            Err(e) => errors.push(format!("{}: {e}", m.name)),
        }
    }
    if !done {
        return Err(StepFailure::transient(format!("no member's Patroni took the change: {}", errors.join("; "))));
    }
    for k in &params.reset {
        spec.params.remove(k);
    }
    spec.params.extend(params.set.clone());
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.cluster_set_spec(params.cluster, &serde_json::to_value(&spec).expect("serialise"))
        .await
        .map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    let needs_restart: Vec<String> =
        params.patch().into_keys().filter(|k| sovdb_postgres::params::needs_restart(k)).collect();
    Ok(json!({"set": params.set, "reset": params.reset, "needs_restart": needs_restart}))
}

/// Whether `m` wrote the patch to its `postgresql.conf` and loaded the file since.
async fn applied(app: &App, m: &Member, patch: &BTreeMap<String, Value>) -> Result<Result<(), String>, StepFailure> {
    let names: Vec<String> = patch.keys().map(|k| pg::sql_literal(k)).collect();
    let sql = format!(
        "SELECT 'loaded', (pg_conf_load_time() >= (pg_stat_file('postgresql.conf')).modification)::text;\n\
         SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.conf' AND name IN ({});\n",
        names.join(", ")
    );
    let out = pg::psql(app, m, sql, "read the member's configuration").await?;
    let mut file = BTreeMap::new();
    let mut loaded = false;
    for line in out.lines() {
        if let Some((k, v)) = line.split_once(pg::FIELD_SEPARATOR) {
            if k == "loaded" && file.is_empty() {
                loaded = v == "true";
            } else {
                file.insert(k.to_string(), v.to_string());
            }
        }
    }
    let mut wrong = Vec::new();
    for (k, want) in patch {
        let want = match want {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        if file.get(k) != want.as_ref() {
            wrong.push(format!("{k} is {:?} in its postgresql.conf", file.get(k)));
        }
    }
    Ok(match (wrong.is_empty(), loaded) {
        (true, true) => Ok(()),
        (true, false) => Err("its postgresql.conf was not loaded since it changed".into()),
        (false, _) => Err(wrong.join(", ")),
    })
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, params.cluster).await?;
    let patch = params.patch();
    pg::wait_each_applied(&ctx, &members, "the change", |m| applied(app, m, &patch)).await
}

async fn restart_pending(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let applied: Value = ctx.output("apply")?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, params.cluster).await?;
    let members = pg::members(app, params.cluster).await?;
    let password = pg::passwords(app, params.cluster).await?.rest;
    let plan = cluster_restart::make_plan(app, &members).await?;
    let mut restarted = Vec::new();
    for name in plan.replicas.iter().chain(std::iter::once(&plan.primary)) {
        let Some(m) = members.iter().find(|m| &m.name == name) else { continue };
        if cluster_restart::restart_member(app, &members, m, None, true, spec.sync, &password).await? {
            restarted.push(name.clone());
        }
    }
    let mut changes: Vec<String> = params.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    changes.extend(params.reset.iter().map(|k| format!("{k} reset")));
    let needs: Vec<String> = serde_json::from_value(applied["needs_restart"].clone()).unwrap_or_default();
    let message = if restarted.is_empty() {
        format!("parameters of cluster {}: {}; applied without a restart", record.name, changes.join(", "))
    } else {
        format!(
            "parameters of cluster {}: {}; {} need(s) a restart: restarted {}",
            record.name,
            changes.join(", "),
            needs.join(", "),
            restarted.join(", ")
        )
    };
    let mut tx = app.store.write().await.map_err(store_failure)?;
    crate::events::record(tx.as_mut(), &pg::event(&record, crate::events::kind::PARAMETERS, message.clone()))
        .await
        .map_err(super::app_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"restarted": restarted, "needs_restart": needs, "message": message}))
}

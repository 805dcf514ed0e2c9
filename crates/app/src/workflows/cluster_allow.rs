//! `cluster.allow-list`: a new network allow-list applied to every member without a
//! restart. PostgreSQL's `pg_hba.conf` is written by Patroni from the member's
//! `patroni.yml` (`postgresql.pg_hba`, local configuration: sovdb renders it per member);
//! Patroni's `POST /reload` re-reads that file, rewrites `pg_hba.conf` and reloads
//! PostgreSQL (SIGHUP: `pg_hba.conf` is never read only at start). HAProxy's
//! configuration carries the same list as a `tcp-request connection reject` rule and is
//! reloaded through its master (SIGUSR2: no connection dropped); PgBouncer's client rules
//! (`pgbouncer-hba.conf`, with `--pooler`) are re-read on SIGHUP. Sessions already open
//! stay open: both only judge new connections.
//!
//! Parameters: `{"cluster": ID, "allow": [CIDR], "deny": [CIDR]}`: what to add and what
//! to take off, parsed and checked by the app before the operation exists (no CIDR in
//! both). The change is applied to the list the cluster has when the operation runs, so
//! two changes queued one after the other both count.
//!
//! Steps, each idempotent:
//! 1. `save`: the changed list becomes the spec's (the desired state) and the step's
//!    output; adding and removing again changes nothing more. From here on any configuration sovdb writes for the cluster (a scale, a
//!    rerun) carries the new list.
//! 2. `ensure-dcs`: the location's etcd endpoints, which `patroni.yml` names.
//! 3. `write-configs`: every member's files (as `cluster.create` renders them), written
//!    only where they differ.
//! 4. `reload`: every member's Patroni, HAProxy (and PgBouncer) re-read their files;
//!    each reloads twice without harm.
//! 5. `wait-applied`: every member's `pg_hba.conf` holds exactly the rendered lines and
//!    PostgreSQL loaded its configuration since the file was written.
//! 6. `mark`: an event (once, see `pg::event_once`).
//!
//! Crash safety: every step reads what it needs from the store and the operation's
//! parameters, so a rerun after a crash at any boundary rewrites the same files and
//! reloads again; nothing is allocated, so nothing needs an undo. A failed operation
//! leaves the list saved: running `cluster allow`/`deny` again applies it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_types::ClusterId;

use super::cluster_create;
use super::pg::{self, store_failure, Member};
use crate::patroni;
use crate::App;

pub const KIND: &str = "cluster.allow-list";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub cluster: ClusterId,
    /// Canonical CIDRs to add.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Canonical CIDRs to take off.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// What `save` wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    before: Vec<String>,
    allow: Vec<String>,
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("save", save)
        .step("ensure-dcs", cluster_create::ensure_dcs)
        .step("write-configs", cluster_create::write_configs)
        .step("reload", reload)
        .step("wait-applied", wait_applied)
        .step("mark", mark)
}

async fn save(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let app = &ctx.services;
    let (record, mut spec) = pg::must_cluster(app, params.cluster).await?;
    let before = pg::allow_list(app, &record, &spec).await?;
    let allow = sovdb_postgres::allow::change(&before, &params.allow, &params.deny);
    if spec.allow.as_ref() != Some(&allow) {
        spec.allow = Some(allow.clone());
        let mut tx = app.store.write().await.map_err(store_failure)?;
        tx.cluster_set_spec(params.cluster, &serde_json::to_value(&spec).expect("serialise"))
            .await
            .map_err(store_failure)?;
        tx.commit().await.map_err(store_failure)?;
    }
    Ok(serde_json::to_value(Saved { before, allow }).expect("serialise"))
}

/// Asks one member's Patroni to re-read its configuration file (`POST /reload`: 202
/// when scheduled, 200 when nothing changed).
pub(crate) async fn reload_patroni(app: &App, m: &Member, password: &str) -> Result<(), StepFailure> {
    match patroni::change(app, m, reqwest::Method::POST, "/reload", &json!({}), password, Duration::from_secs(10)).await
    {
        Ok((200..=299, _)) => Ok(()),
        Ok((code, text)) => {
            Err(StepFailure::transient(format!("{}'s Patroni refused to reload: {code} {text}", m.name)))
        }
        Err(e) => Err(StepFailure::transient(format!("{}'s Patroni could not be asked to reload: {e}", m.name))),
    }
}

async fn reload(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, params.cluster).await?;
    let password = pg::passwords(app, params.cluster).await?.rest;
    for m in &members {
        reload_patroni(app, m, &password).await?;
        let client = pg::agent(app, &m.host, Duration::from_secs(30)).await?;
        pg::reload_haproxy(&client, m).await?;
        pg::reload_pgbouncer(&client, m).await?;
    }
    Ok(json!({"reloaded": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

/// Whether `m`'s `pg_hba.conf` holds exactly `want` and was loaded since it was written.
async fn applied(app: &App, m: &Member, want: &[String]) -> Result<Result<(), String>, StepFailure> {
    let sql = "SELECT 'loaded', (pg_conf_load_time() >= (pg_stat_file('pg_hba.conf')).modification)::text;\n\
               SELECT 'line', l FROM regexp_split_to_table(pg_read_file('pg_hba.conf'), E'\\n') AS l \
               WHERE l !~ '^\\s*(#|$)';\n"
        .to_string();
    let out = pg::psql(app, m, sql, "read the member's pg_hba.conf").await?;
    let mut loaded = false;
    let mut lines = Vec::new();
    for line in out.lines() {
        match line.split_once(pg::FIELD_SEPARATOR) {
            Some(("loaded", v)) => loaded = v == "true",
            Some(("line", l)) => lines.push(l.trim().to_string()),
            _ => {}
        }
    }
    Ok(if lines != want {
        Err(format!("its pg_hba.conf holds {} rule(s) that differ from the {} wanted", lines.len(), want.len()))
    } else if !loaded {
        Err("its pg_hba.conf was not loaded since it changed".into())
    } else {
        Ok(())
    })
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let saved: Saved = ctx.output("save")?;
    let app = &ctx.services;
    let members = pg::members(app, params.cluster).await?;
    let peers: Vec<_> = members.iter().map(Member::peer).collect();
    let want = sovdb_postgres::render::pg_hba(&saved.allow, &peers);
    pg::wait_each_applied(&ctx, &members, "the allow-list", |m| applied(app, m, &want)).await
}

async fn mark(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let params: Params = ctx.params()?;
    let saved: Saved = ctx.output("save")?;
    let app = &ctx.services;
    let (record, _) = pg::must_cluster(app, params.cluster).await?;
    let list = if saved.allow.is_empty() { "no client network".to_string() } else { saved.allow.join(", ") };
    let message = format!(
        "allow-list of cluster {}: {list} (besides loopback and the members); applied without a restart",
        record.name
    );
    pg::event_once(app, &record, ctx.operation, crate::events::kind::ALLOW_LIST, message.clone()).await?;
    Ok(json!({"message": message}))
}

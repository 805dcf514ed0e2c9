//! `cluster.renew-certs`: new certificates for the members whose certificate has less than
//! a third of its life left, put in place without a restart. The certificate bot
//! (`crate::certs`) starts it; nothing else needs to.
//!
//! A member's certificate serves PostgreSQL (`ssl_cert_file`), Patroni's REST API
//! (`restapi.certfile`) and PgBouncer (`client_tls_cert_file`), and is its client
//! certificate towards etcd. HAProxy passes TLS through and presents none. Each re-reads
//! the files on a reload: Patroni's `POST /reload` reloads its REST API's certificate and
//! PostgreSQL (SIGHUP: new connections get the new certificate, open sessions keep theirs);
//! PgBouncer on SIGHUP. So no connection is refused or cut while it runs.
//!
//! Parameters: `{"cluster": ID}`.
//!
//! Steps, each idempotent:
//! 1. `reissue`: every member whose kept certificate is due gets a new one, which replaces
//!    the kept one in the store (see `pg::member_cert_renew`); a rerun finds the new ones
//!    fresh and does nothing. Its output names every member's serial now.
//! 2. `ensure-dcs`: the location's etcd endpoints, which `patroni.yml` names.
//! 3. `write-configs`: every member's files (as `cluster.create` renders them, the kept
//!    certificate among them), written only where they differ.
//! 4. `reload`: every member's Patroni (and PostgreSQL through it), HAProxy and PgBouncer
//!    re-read their files; each reloads twice without harm.
//! 5. `wait-applied`: every member's PostgreSQL loaded its configuration since its
//!    certificate file was written.
//! 6. `mark`: an event (once, see `pg::event_once`) naming the renewed members.
//!
//! Crash safety: the only store write (step 1) is one transaction per member and a rerun
//! keeps what it wrote; the later steps read the store and rewrite the same files, so a
//! crash at any boundary is followed by a rerun that converges. Nothing needs an undo: a
//! failed operation leaves the new certificate kept, and the next run of the bot writes it
//! out again. An old certificate stays valid until it expires, so a member that has not
//! reloaded yet keeps serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};

use super::cluster_allow::reload_patroni;
use super::cluster_create;
use super::pg::{self, ClusterParams, Member};
use crate::App;

pub const KIND: &str = "cluster.renew-certs";

/// What `reissue` did.
#[derive(Debug, Serialize, Deserialize)]
struct Reissued {
    /// The members that got a new certificate in this run of the step.
    renewed: Vec<String>,
    /// Every member's certificate serial after the step (hex).
    serials: BTreeMap<String, String>,
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("reissue", reissue)
        .step("ensure-dcs", cluster_create::ensure_dcs)
        .step("write-configs", cluster_create::write_configs)
        .step("reload", reload)
        .step("wait-applied", wait_applied)
        .step("mark", mark)
}

async fn reissue(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let now = chrono::Utc::now();
    let mut out = Reissued { renewed: Vec::new(), serials: BTreeMap::new() };
    for m in pg::members(app, cluster).await? {
        let Some((kept, new)) = pg::member_cert_renew(app, cluster, &m, now).await? else { continue };
        if new {
            tracing::info!(cluster = %cluster, member = %m.name, "member certificate renewed");
            out.renewed.push(m.name.clone());
        }
        let serial = sovdb_pki::CertValidity::of_pem(&kept.cert_pem).map(|v| v.serial).unwrap_or_default();
        out.serials.insert(m.name.clone(), serial);
    }
    Ok(serde_json::to_value(out).expect("serialise"))
}

async fn reload(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, cluster).await?;
    let password = pg::passwords(app, cluster).await?.rest;
    for m in &members {
        reload_patroni(app, m, &password).await?;
        let client = pg::agent(app, &m.host, Duration::from_secs(30)).await?;
        pg::reload_haproxy(&client, m).await?;
        pg::reload_pgbouncer(&client, m).await?;
    }
    Ok(json!({"reloaded": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

/// Whether `m`'s PostgreSQL loaded its configuration (and so its certificate) since the
/// certificate file was last written.
async fn applied(app: &App, m: &Member) -> Result<bool, StepFailure> {
    let sql = format!(
        "SELECT (pg_conf_load_time() >= (pg_stat_file({})).modification)::text;\n",
        pg::sql_literal(&m.layout().cert())
    );
    let out = pg::psql(app, m, sql, "read when the member's certificate was loaded").await?;
    Ok(out.trim() == "true")
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let members = pg::members(app, cluster).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in &members {
        loop {
            match applied(app, m).await {
                Ok(true) => break,
                Ok(false) if Instant::now() > deadline => {
                    return Err(StepFailure::transient(format!(
                        "{}'s PostgreSQL has not loaded its new certificate",
                        m.name
                    )))
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(json!({"applied_on": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

async fn mark(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let reissued: Reissued = ctx.output("reissue")?;
    let app = &ctx.services;
    let (record, _) = pg::must_cluster(app, cluster).await?;
    let message = if reissued.renewed.is_empty() {
        format!("certificates of cluster {}: none was due", record.name)
    } else {
        format!(
            "certificates of cluster {} renewed for {}; applied without a restart",
            record.name,
            reissued.renewed.join(", ")
        )
    };
    pg::event_once(app, &record, ctx.operation, "certs-renewed", message.clone()).await?;
    Ok(json!({"message": message}))
}

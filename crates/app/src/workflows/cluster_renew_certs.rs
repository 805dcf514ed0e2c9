//! `cluster.renew-certs`: new certificates for the members whose certificate has less than
//! a third of its life left, put in place without a restart. The certificate bot
//! (`crate::certs`) starts it; `sovdb cluster renew-certs` (`App::cluster_renew_certs`)
//! starts it to renew every certificate of the cluster, whatever its age.
//!
//! A member's certificate serves PostgreSQL (`ssl_cert_file`), Patroni's REST API
//! (`restapi.certfile`) and PgBouncer (`client_tls_cert_file`), and is its client
//! certificate towards etcd. Each re-reads the files on a reload: Patroni's `POST /reload`
//! reloads PostgreSQL (SIGHUP: new connections get the new certificate, open sessions keep
//! theirs) and, seeing a new serial in its certificate file, rebinds its REST API with it;
//! PgBouncer on SIGHUP.
//!
//! HAProxy is not reloaded: it passes TLS through, presents no certificate and its file
//! does not change. Reloading it would also cost connections: a new HAProxy worker marks a
//! server down on its first failed check (a running one only after `fall 2`), and Patroni's
//! REST API is briefly unreachable while it rebinds with the new certificate, so the
//! primary would be down for the new worker and connections through HAProxy refused. A
//! running worker rides over that one failed check.
//!
//! Parameters: `{"cluster": ID}` from the bot; on request also `"issued_before": TIME`,
//! the whole second after the request (see `pg::Renew`).
//!
//! Steps, each idempotent:
//! 1. `reissue`: every member whose kept certificate is due (on request: was issued before
//!    `issued_before`) gets a new one, which replaces the kept one in the store (see
//!    `pg::member_cert_renew`), and so does the stanza's client certificate; a rerun finds
//!    the new ones fresh (issued since the request) and does nothing. Its output names
//!    every member's serial now.
//! 2. `ensure-dcs`: the location's etcd endpoints, which `patroni.yml` names.
//! 3. `write-configs`: every member's files (as `cluster.create` renders them, the kept
//!    certificate among them), written only where they differ.
//! 4. `reload`: every member's Patroni (and PostgreSQL through it) and PgBouncer re-read
//!    their files, one member at a time; each reloads twice without harm.
//! 5. `wait-applied`: every member's PostgreSQL, Patroni REST API (and PgBouncer)
//!    presents the kept certificate, as a client sees it (see `served_cert`).
//! 6. `mark`: an event (once, see `pg::event_once`) naming the renewed members.
//!
//! Crash safety: the only store write (step 1) is one transaction per member and a rerun
//! keeps what it wrote; the later steps read the store and rewrite the same files, so a
//! crash at any boundary is followed by a rerun that converges. Nothing needs an undo: a
//! failed operation leaves the new certificate kept, and the next renewal (the bot's, or
//! one asked for) writes it out again. An old certificate stays valid until it expires, so
//! a member that has not reloaded yet keeps serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{Probe, StepCtx, StepFailure, Wait, Workflow};
use sovdb_types::ClusterId;

use super::cluster_allow::reload_patroni;
use super::cluster_create;
use super::pg::{self, ClusterParams, Member, Renew};
use super::repo_tls;
use super::served_cert::{self, Protocol};
use crate::App;

pub const KIND: &str = "cluster.renew-certs";

/// The parameters. The later steps read them as [`ClusterParams`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub cluster: ClusterId,
    /// On request: renew every certificate issued before this time (see [`Renew`]).
    /// Absent in the bot's renewals, which renew the due ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `reissue` did.
#[derive(Debug, Serialize, Deserialize)]
struct Reissued {
    /// The members that got a new certificate from this renewal: in this run of the step
    /// (on request, also in a run before a crash).
    renewed: Vec<String>,
    /// Every member's certificate serial after the step (hex).
    serials: BTreeMap<String, String>,
    /// Whether the stanza's client certificate towards pgBackRest servers (a posix
    /// repository on another host) was replaced; `write-configs` puts it in place.
    #[serde(default)]
    stanza_renewed: bool,
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
    let Params { cluster, issued_before } = ctx.params()?;
    let app = &ctx.services;
    let renew = Renew::begin(issued_before).await?;
    let mut out = Reissued { renewed: Vec::new(), serials: BTreeMap::new(), stanza_renewed: false };
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    if let Some(repo) = spec.backup_repo {
        let renewed = repo_tls::stanza_cert_renew(app, repo, &cluster.to_string(), renew).await?;
        out.stanza_renewed = matches!(renewed, Some((_, true)));
    }
    for m in pg::members(app, cluster).await? {
        let Some((kept, new)) = pg::member_cert_renew(app, cluster, &m, renew).await? else { continue };
        if new {
            tracing::info!(cluster = %cluster, member = %m.name, "member certificate renewed");
            out.renewed.push(m.name.clone());
        }
        let serial = sovdb_pki::CertValidity::of_pem(&kept.cert_pem).map(|v| v.serial).unwrap_or_default();
        out.serials.insert(m.name.clone(), serial);
    }
    Ok(serde_json::to_value(out).expect("serialise"))
}

/// Reloads one member at a time, the next when the last presents its certificate: two
/// REST APIs rebinding at once could leave HAProxy without a server for a moment.
async fn reload(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let ca = app.pki().map_err(super::app_failure)?.ca_pem().to_string();
    let members = pg::members(app, cluster).await?;
    let password = pg::passwords(app, cluster).await?.rest;
    for m in &members {
        reload_patroni(app, m, &password).await?;
        let client = pg::agent(app, &m.host, Duration::from_secs(30)).await?;
        pg::reload_pgbouncer(&client, m).await?;
        wait_presented(app, &ca, cluster, m).await?;
    }
    Ok(json!({"reloaded": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

/// Why `m` does not present the certificate with serial `want` on every server that
/// uses it (PostgreSQL, Patroni's REST API, PgBouncer), if it doesn't.
async fn presented(ca: &str, m: &Member, want: &str) -> Option<String> {
    let mut servers = vec![
        ("PostgreSQL", m.spec.ports.postgres, Protocol::Postgres),
        ("Patroni's REST API", m.spec.ports.patroni, Protocol::Tls),
    ];
    if let Some(port) = m.spec.ports.pooler {
        servers.push(("PgBouncer", port, Protocol::Postgres));
    }
    for (what, port, protocol) in servers {
        match served_cert::serial(ca, &m.host.host.address, port, protocol).await {
            Ok(serial) if serial == want => {}
            Ok(serial) => return Some(format!("its {what} presents certificate {serial}, not {want}")),
            Err(e) => return Some(format!("its {what} could not be asked for its certificate: {e}")),
        }
    }
    None
}

/// Waits (up to a minute) until every server of `m` presents the certificate the store
/// keeps for it now (a later renewal may have replaced what `reissue` saw); answers its
/// serial, none when it has no certificate.
async fn wait_presented(app: &App, ca: &str, cluster: ClusterId, m: &Member) -> Result<Option<String>, StepFailure> {
    let Some(kept) = pg::member_cert_kept(app, cluster, &m.name).await? else { return Ok(None) };
    let want = sovdb_pki::CertValidity::of_pem(&kept.cert_pem)
        .map_err(|e| StepFailure::permanent(format!("{}'s kept certificate does not parse: {e}", m.name)))?
        .serial;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match presented(ca, m, &want).await {
            None => return Ok(Some(want)),
            Some(why) if Instant::now() > deadline => {
                return Err(StepFailure::transient(format!(
                    "{} has not put its new certificate in place: {why}",
                    m.name
                )))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let ca = app.pki().map_err(super::app_failure)?.ca_pem().to_string();
    let mut want = Vec::new();
    for m in pg::members(app, cluster).await? {
        if let Some(kept) = pg::member_cert_kept(app, cluster, &m.name).await? {
            let serial = sovdb_pki::CertValidity::of_pem(&kept.cert_pem)
                .map_err(|e| StepFailure::permanent(format!("{}'s kept certificate does not parse: {e}", m.name)))?
                .serial;
            want.push((m, serial));
        }
    }
    let (ca, want) = (&ca, &want);
    let wait = Wait::new("every member to present its new certificate", pg::PRESENT_DEADLINE);
    ctx.wait(
        &wait,
        || async move {
            let mut behind = Vec::new();
            for (m, serial) in want {
                if let Some(why) = presented(ca, m, serial).await {
                    behind.push(format!("{}: {why}", m.name));
                }
            }
            Ok(if behind.is_empty() { Probe::Ready(()) } else { Probe::Waiting(behind.join("; ")) })
        },
        |seen| async move { seen },
    )
    .await?;
    let serials: BTreeMap<String, String> = want.iter().map(|(m, s)| (m.name.clone(), s.clone())).collect();
    Ok(json!({"presented": serials}))
}

async fn mark(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let reissued: Reissued = ctx.output("reissue")?;
    let app = &ctx.services;
    let (record, _) = pg::must_cluster(app, cluster).await?;
    let mut renewed = reissued.renewed.clone();
    if reissued.stanza_renewed {
        renewed.push("the backup client certificate".into());
    }
    let message = if renewed.is_empty() {
        format!("certificates of cluster {}: none was due", record.name)
    } else {
        format!("certificates of cluster {} renewed for {}; applied without a restart", record.name, renewed.join(", "))
    };
    pg::event_once(app, &record, ctx.operation, crate::events::kind::CERTS_RENEWED, message.clone()).await?;
    Ok(json!({"message": message}))
}

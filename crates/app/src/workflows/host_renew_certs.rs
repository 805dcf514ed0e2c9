//! `host.renew-certs`: a new certificate for the host's agent, and for its pgBackRest TLS
//! server if it runs one, when less than a third of its life is left; put in place without
//! a restart. The certificate bot (`crate::certs`) starts it; `sovdb host renew-certs`
//! (`App::host_renew_certs`) starts it to renew both, whatever their age.
//!
//! The agent re-reads its certificate files when they change (at a handshake, at most once
//! a second; a key and certificate that do not fit together yet are not taken), so
//! writing them through the agent itself is enough. pgBackRest's server reads its
//! certificate again on SIGHUP. Open connections keep the certificate they were made with.
//!
//! The agent's certificate is not kept in the store (the host's agent holds its key), so
//! whether it is due is read from what the agent presents.
//!
//! Parameters: `{"host": ID}` from the bot; on request also `"issued_before": TIME`, the
//! whole second after the request (see `pg::Renew`).
//!
//! Steps, each idempotent:
//! 1. `reissue`: when the agent presents a certificate that is due (on request: was issued
//!    before `issued_before`), a new one is issued; its key travels in the step's output
//!    sealed with the master key. The server's kept certificate is replaced likewise.
//! 2. `write`: the agent's new key, then its certificate (the agent takes them when both
//!    fit together); the server's files and a SIGHUP where they changed.
//! 3. `wait-applied`: the agent presents the new certificate, and the server its kept one;
//!    its output says so (`message`).
//!
//! Crash safety: step 1's output is kept once it ends, so a rerun of step 2 writes the same
//! files; the server's certificate is one store write that a rerun keeps. A failed
//! operation leaves at worst a certificate the agent already presents, or none written:
//! the next renewal (the bot's, or one asked for) sees what the agent presents and starts
//! again. A rerun of step 1 on request issues a new agent certificate again only while the
//! agent still presents one from before the request, that is before step 2 wrote any.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{Probe, StepCtx, StepFailure, Wait, Workflow};
use sovdb_pki::{CertRequest, CertUsage, CertValidity};
use sovdb_types::HostId;

use super::host_add::AgentPaths;
use super::pg::{self, store_failure, Renew};
use super::served_cert::{self, Protocol};
use super::{app_failure, repo_tls};
use crate::App;

pub const KIND: &str = "host.renew-certs";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub host: HostId,
    /// On request: renew every certificate issued before this time (see [`Renew`]).
    /// Absent in the bot's renewals, which renew the due ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `reissue` did.
#[derive(Debug, Serialize, Deserialize)]
struct Reissued {
    /// The agent's new certificate and its key (sealed), when it was due.
    agent: Option<NewAgentCert>,
    /// Whether the pgBackRest server's kept certificate was replaced.
    server_renewed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct NewAgentCert {
    cert_pem: String,
    key_sealed: String,
}

fn key_aad(op: &sovdb_types::OperationId) -> String {
    format!("sovdb/operation/{op}/agent-key")
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND).step("reissue", reissue).step("write", write).step("wait-applied", wait_applied)
}

/// The agent's certificate as it presents it now.
pub(crate) async fn agent_presents(app: &App, host: &sovdb_types::Host) -> Result<CertValidity, String> {
    let pki = app.pki().map_err(|e| e.to_string())?;
    served_cert::served(pki.ca_pem(), Some(&pki.client()), &host.address, host.agent_port, Protocol::Tls).await
}

/// The agent's certificate request (as `host.add` issues it).
pub(crate) fn agent_cert_request(host: &sovdb_types::Host) -> CertRequest {
    let (dns_names, ip_addresses) = match host.address.parse::<std::net::IpAddr>() {
        Ok(ip) => (vec![], vec![ip]),
        Err(_) => (vec![host.address.clone()], vec![]),
    };
    CertRequest {
        common_name: format!("sovdb agent {}", host.name),
        dns_names,
        ip_addresses,
        usage: CertUsage::Server,
        validity_days: 825,
    }
}

async fn host(app: &App, id: HostId) -> Result<sovdb_store::HostRecord, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    pg::host_by_id(tx.as_mut(), id).await
}

async fn reissue(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host: id, issued_before } = ctx.params()?;
    let app = &ctx.services;
    let record = host(app, id).await?;
    let renew = Renew::begin(issued_before).await?;
    let presented = agent_presents(app, &record.host).await.map_err(|e| {
        StepFailure::transient(format!("cannot read the certificate agent {} presents: {e}", record.host.name))
    })?;
    let pki = app.pki().map_err(app_failure)?;
    let agent = if renew.wants(&presented) {
        let cert =
            pki.issue_for(&agent_cert_request(&record.host), app.config.internal_cert_validity).map_err(app_failure)?;
        tracing::info!(host = %record.host.name, "agent certificate renewed");
        Some(NewAgentCert {
            key_sealed: pki.seal(cert.key_pem.as_bytes(), &key_aad(&ctx.operation)),
            cert_pem: cert.cert_pem,
        })
    } else {
        None
    };
    let server_renewed = matches!(repo_tls::server_cert_renew(app, &record, renew).await?, Some((_, true)));
    Ok(serde_json::to_value(Reissued { agent, server_renewed }).expect("serialise"))
}

async fn write(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host: id, .. } = ctx.params()?;
    let app = &ctx.services;
    let record = host(app, id).await?;
    let reissued: Reissued = ctx.output("reissue")?;
    let mut agent_written = false;
    if let Some(new) = &reissued.agent {
        let pki = app.pki().map_err(app_failure)?;
        let key = pki.open(&new.key_sealed, &key_aad(&ctx.operation)).map_err(app_failure)?;
        let client = pg::agent(app, &record, Duration::from_secs(30)).await?;
        let tls = format!("{}/tls", AgentPaths::new(app, &record).dir);
        // The key first: the agent takes the pair only once the certificate fits it.
        agent_written |= pg::write(&client, "root", format!("{tls}/agent.key"), key, 0o600).await?;
        agent_written |= pg::write(&client, "root", format!("{tls}/agent.crt"), new.cert_pem.clone(), 0o644).await?;
    }
    let server = if repo_tls::server_cert_kept(app, id).await?.is_some() {
        Some(repo_tls::ensure_server(app, &record).await?)
    } else {
        None
    };
    Ok(json!({ "agent_written": agent_written, "server_port": server }))
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host: id, .. } = ctx.params()?;
    let app = &ctx.services;
    let record = host(app, id).await?;
    let reissued: Reissued = ctx.output("reissue")?;
    let pki = app.pki().map_err(app_failure)?;
    let mut want = Vec::new();
    if let Some(new) = &reissued.agent {
        let serial = CertValidity::of_pem(&new.cert_pem).map_err(|e| StepFailure::permanent(e.to_string()))?.serial;
        want.push(("agent", record.host.agent_port, serial));
    }
    // The server is checked only when it listens (a host whose server has nothing to serve
    // runs none).
    if let (Some(kept), Some(port)) =
        (repo_tls::server_cert_kept(app, id).await?, repo_tls::server_port_kept(app, id).await?)
    {
        let client = pg::agent(app, &record, Duration::from_secs(30)).await?;
        if pg::listening_ports(&client).await?.contains(&port) {
            let serial =
                CertValidity::of_pem(&kept.cert_pem).map_err(|e| StepFailure::permanent(e.to_string()))?.serial;
            want.push(("pgBackRest server", port, serial));
        }
    }
    let (pki, address, want) = (&pki, &record.host.address, &want);
    let wait = Wait::new(format!("host {} to present its new certificates", record.host.name), pg::PRESENT_DEADLINE);
    ctx.wait(
        &wait,
        || async move {
            let mut behind = Vec::new();
            for (what, port, serial) in want {
                match served_cert::served(pki.ca_pem(), Some(&pki.client()), address, *port, Protocol::Tls).await {
                    Ok(v) if v.serial == *serial => {}
                    Ok(v) => behind.push(format!("the {what} presents certificate {}, not {serial}", v.serial)),
                    Err(e) => behind.push(format!("the {what} could not be asked for its certificate: {e}")),
                }
            }
            Ok(if behind.is_empty() { Probe::Ready(()) } else { Probe::Waiting(behind.join("; ")) })
        },
        |seen| async move { seen },
    )
    .await?;
    let presented: serde_json::Map<String, Value> =
        want.iter().map(|(what, _, serial)| (what.to_string(), json!(serial))).collect();
    if presented.is_empty() {
        let message = format!("no certificate of host {} was due", record.host.name);
        return Ok(json!({ "presented": presented, "message": message }));
    }
    let which: Vec<&str> = presented.keys().map(String::as_str).collect();
    let message =
        format!("the {} certificate(s) of host {} were renewed and are served", which.join(" and "), record.host.name);
    let event = crate::events::installation_event(
        format!("host/{}", record.host.name),
        crate::events::kind::CERTS_RENEWED,
        message.clone(),
    );
    pg::record_once(app, ctx.operation, &event).await?;
    Ok(json!({ "presented": presented, "message": message }))
}

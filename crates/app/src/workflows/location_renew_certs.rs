//! `location.renew-certs`: new certificates for the location's DCS (etcd) members whose
//! certificate has less than a third of its life left, put in place without a restart.
//! The certificate bot (`crate::certs`) starts it; `sovdb location renew-certs`
//! (`App::location_renew_certs`) starts it to renew every member's, whatever its age.
//!
//! etcd reads its certificate files again at every new connection, from clients
//! (Patroni, the control plane) and from peers alike, so writing the files is enough:
//! open connections keep the certificate they were made with.
//!
//! Parameters: `{"location": ID}` from the bot; on request also `"issued_before": TIME`,
//! the whole second after the request (see `pg::Renew`).
//!
//! Steps, each idempotent:
//! 1. `reissue`: every member whose kept certificate is due (on request: was issued before
//!    `issued_before`) gets a new one, which replaces the kept one in the store; a rerun
//!    finds the new ones fresh (issued since the request) and does nothing.
//! 2. `write`: the DCS as `cluster.create` ensures it: every member's files (the kept
//!    certificate among them) written where they differ, every member running and healthy.
//! 3. `wait-applied`: every member presents its kept certificate on its client and its peer
//!    port, as a client sees it; its output says so (`message`).
//!
//! Crash safety: the only store write (step 1) is one transaction per member and a rerun
//! keeps what it wrote; the later steps read the store and converge. A failed operation
//! leaves the new certificates kept, and the next renewal (the bot's, or one asked for)
//! writes them out again.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{Probe, StepCtx, StepFailure, Wait, Workflow};
use sovdb_types::LocationId;

use super::served_cert::{self, Protocol};
use super::{app_failure, dcs, pg};
use crate::App;

pub const KIND: &str = "location.renew-certs";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Params {
    pub location: LocationId,
    /// On request: renew every certificate issued before this time (see `pg::Renew`).
    /// Absent in the bot's renewals, which renew the due ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND).step("reissue", reissue).step("write", write).step("wait-applied", wait_applied)
}

async fn reissue(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { location, issued_before } = ctx.params()?;
    let renewed = dcs::certs_renew(&ctx.services, location, pg::Renew::begin(issued_before).await?).await?;
    if !renewed.is_empty() {
        tracing::info!(%location, members = ?renewed, "DCS member certificates renewed");
    }
    Ok(json!({ "renewed": renewed }))
}

async fn write(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { location, .. } = ctx.params()?;
    let members = dcs::ensure(&ctx.services, location).await?;
    Ok(json!({ "members": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>() }))
}

async fn wait_applied(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { location, .. } = ctx.params()?;
    let app = &ctx.services;
    let pki = app.pki().map_err(app_failure)?;
    let identity = pki.client();
    let mut want = Vec::new();
    for (m, kept) in dcs::certs_kept(app, location).await? {
        let serial = sovdb_pki::CertValidity::of_pem(&kept.cert_pem)
            .map_err(|e| {
                StepFailure::permanent(format!("DCS member {}'s kept certificate does not parse: {e}", m.name))
            })?
            .serial;
        want.push((m, serial));
    }
    let (pki, identity, want) = (&pki, &identity, &want);
    let wait = Wait::new("every etcd member to present its new certificate", pg::PRESENT_DEADLINE);
    ctx.wait(
        &wait,
        || async move {
            let mut behind = Vec::new();
            for (m, serial) in want {
                for (what, port) in [("client", m.client_port), ("peer", m.peer_port)] {
                    match served_cert::served(pki.ca_pem(), Some(identity), &m.address, port, Protocol::Tls).await {
                        Ok(v) if v.serial == *serial => {}
                        Ok(v) => behind.push(format!(
                            "{}: its {what} port presents certificate {}, not {serial}",
                            m.name, v.serial
                        )),
                        Err(e) => behind
                            .push(format!("{}: its {what} port could not be asked for its certificate: {e}", m.name)),
                    }
                }
            }
            Ok(if behind.is_empty() { Probe::Ready(()) } else { Probe::Waiting(behind.join("; ")) })
        },
        |seen| async move { seen },
    )
    .await?;
    let presented: serde_json::Map<String, Value> = want.iter().map(|(m, s)| (m.name.clone(), json!(s))).collect();
    // The operation's target is `location/<name>`.
    let op = app.store.read().await.map_err(pg::store_failure)?.operation_get(ctx.operation).await;
    let target = op.map_err(pg::store_failure)?.map_or_else(|| format!("location/{location}"), |o| o.target);
    let name = target.strip_prefix("location/").unwrap_or(&target).to_owned();
    if presented.is_empty() {
        return Ok(json!({ "presented": presented, "message": format!("location {name} has no DCS certificate") }));
    }
    let members: Vec<&str> = presented.keys().map(String::as_str).collect();
    let message = format!(
        "the certificates of DCS member(s) {} of location {name} were renewed and are served",
        members.join(", ")
    );
    let event = crate::events::installation_event(target, crate::events::kind::CERTS_RENEWED, message.clone());
    pg::record_once(app, ctx.operation, &event).await?;
    Ok(json!({ "presented": presented, "message": message }))
}

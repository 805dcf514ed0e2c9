//! A location's DCS: the etcd cluster Patroni keeps its leader lock and configuration in.
//!
//! Created on first need by the first cluster of the location: three members on three
//! hosts (different zones first) where three ready hosts exist, else one. Members speak
//! TLS with certificates from the installation CA on both ports and require client
//! certificates. The members are chosen and their ports given out in one transaction, so
//! two clusters created at once agree on one DCS (the loser of the race reads the
//! winner's). Then every member is installed and started (idempotent) and must answer
//! `/health`.
//!
//! `status` reports the health of every member (for `location show`).
//!
//! A DCS stays when its last cluster is deleted (the next one reuses it). Growing it
//! when hosts are added later is not done: a location created with one host keeps one
//! etcd member (with Patroni's `failsafe_mode`, a lost etcd does not stop a healthy
//! primary).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sovdb_agent::proto::{DesiredState, EnsurePackagesRequest};
use sovdb_operations::StepFailure;
use sovdb_postgres::render::{etcd_argv, EtcdLayout, EtcdMember};
use sovdb_postgres::ETCD_OS_USER;
use sovdb_store::{DcsMember, HostRecord};
use sovdb_types::{DcsMemberStatus, DcsState, DcsStatus, HostStatus, LocationId};

use super::agent_failure;
use super::pg::{self, store_failure};
use crate::App;

/// The owner of a DCS member's ports and secrets in the store.
fn owner(location: LocationId, member: &str) -> String {
    format!("dcs/{location}/{member}")
}

/// The DCS of `location`, created and started if needed; answers once every member is healthy.
pub(crate) async fn ensure(app: &App, location: LocationId) -> Result<Vec<EtcdMember>, StepFailure> {
    let rows = match existing(app, location).await? {
        rows if !rows.is_empty() => rows,
        _ => create(app, location).await?,
    };
    let members = resolve(app, &rows).await?;
    let endpoints: Vec<EtcdMember> = members.iter().map(|(m, _)| m.clone()).collect();
    for (m, host) in &members {
        start_member(app, location, m, &endpoints, host).await?;
    }
    wait_healthy(app, &endpoints).await?;
    Ok(endpoints)
}

/// The stored members with their hosts' addresses.
async fn resolve(app: &App, rows: &[DcsMember]) -> Result<Vec<(EtcdMember, HostRecord)>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let host = pg::host_by_id(tx.as_mut(), r.host_id).await?;
        let member = EtcdMember {
            name: r.name.clone(),
            address: host.host.address.clone(),
            client_port: r.client_port,
            peer_port: r.peer_port,
        };
        out.push((member, host));
    }
    Ok(out)
}

/// The location's DCS members as stored (empty when it has none yet).
pub(crate) async fn existing(app: &App, location: LocationId) -> Result<Vec<DcsMember>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    tx.dcs_member_list(location).await.map_err(store_failure)
}

async fn create(app: &App, location: LocationId) -> Result<Vec<DcsMember>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let hosts = tx.host_list(Some(location), &sovdb_types::PageRequest::first(1000)).await.map_err(store_failure)?;
    drop(tx);
    let mut ready: Vec<_> = hosts.items.into_iter().filter(|h| h.host.status == HostStatus::Ready).collect();
    if ready.is_empty() {
        return Err(StepFailure::transient("the location has no ready host to run its DCS (etcd) on"));
    }
    // Three members on hosts of different zones first, then by name.
    ready.sort_by(|a, b| a.host.name.cmp(&b.host.name));
    let mut chosen = Vec::new();
    let mut zones = std::collections::BTreeSet::new();
    for h in &ready {
        if zones.insert(h.host.zone.clone().unwrap_or_else(|| h.host.name.clone())) {
            chosen.push(h.clone());
        }
    }
    for h in &ready {
        if !chosen.iter().any(|c| c.host.id == h.host.id) {
            chosen.push(h.clone());
        }
    }
    let size = if chosen.len() >= 3 { 3 } else { 1 };
    chosen.truncate(size);

    let mut listening = Vec::with_capacity(chosen.len());
    for h in &chosen {
        let client = pg::agent(app, h, Duration::from_secs(30)).await?;
        listening.push(pg::listening_ports(&client).await?);
    }
    let mut tx = app.store.write().await.map_err(store_failure)?;
    for (i, (h, busy)) in chosen.iter().zip(&listening).enumerate() {
        let name = format!("etcd-{}", i + 1);
        let o = owner(location, &name);
        let ports =
            pg::allocate_ports(app, tx.as_mut(), h.host.id, busy, &[format!("{o}/client"), format!("{o}/peer")])
                .await?;
        let row = DcsMember {
            location_id: location,
            name,
            host_id: h.host.id,
            client_port: ports[0],
            peer_port: ports[1],
            created_at: crate::now(),
        };
        if !tx.dcs_member_create(&row).await.map_err(store_failure)? {
            // Another operation made the DCS first: use its members.
            drop(tx);
            return existing(app, location).await;
        }
    }
    tx.commit().await.map_err(store_failure)?;
    tracing::info!(%location, members = size, "created the location's DCS");
    existing(app, location).await
}

async fn start_member(
    app: &App,
    location: LocationId,
    me: &EtcdMember,
    all: &[EtcdMember],
    host: &HostRecord,
) -> Result<(), StepFailure> {
    let client = pg::agent(app, host, Duration::from_secs(600)).await?;
    let names = sovdb_postgres::packages(sovdb_postgres::Role::Dcs, sovdb_postgres::DEFAULT_VERSION);
    client.ensure_packages(&EnsurePackagesRequest { names }).await.map_err(agent_failure)?;
    super::preflight::run(app, host, &[sovdb_postgres::Role::Dcs], sovdb_postgres::DEFAULT_VERSION).await?;
    let o = owner(location, &me.name);
    let cert = pg::kept_cert(app, &o, ETCD_CERT, &etcd_cert_request(me)).await?;
    let layout = EtcdLayout { dir: format!("{}/etcd/{}", host.host.base_dir, me.name) };
    pg::make_dirs(&client, ETCD_OS_USER, &[layout.dir.clone(), format!("{}/tls", layout.dir)]).await?;
    let ca = app.pki().map_err(super::app_failure)?.ca_pem().to_string();
    pg::write(&client, ETCD_OS_USER, layout.ca(), ca, 0o644).await?;
    pg::write(&client, ETCD_OS_USER, layout.cert(), cert.cert_pem, 0o644).await?;
    pg::write(&client, ETCD_OS_USER, layout.key(), cert.key_pem, 0o600).await?;
    let argv = etcd_argv(&layout, me, all, &location.to_string());
    pg::ensure(&client, service(&me.name, location), argv, ETCD_OS_USER, &layout.dir, DesiredState::Running).await?;
    Ok(())
}

/// The name of a DCS member's certificate among its secrets (its server certificate
/// towards clients and peers, and its client certificate towards peers).
const ETCD_CERT: &str = "tls";

fn etcd_cert_request(me: &EtcdMember) -> sovdb_pki::CertRequest {
    pg::host_cert_request(&format!("etcd {}", me.name), &me.address)
}

/// The location's DCS members with their kept certificates (members without one yet are
/// left out).
pub(crate) async fn certs_kept(
    app: &App,
    location: LocationId,
) -> Result<Vec<(EtcdMember, pg::KeptCert)>, StepFailure> {
    let rows = existing(app, location).await?;
    let mut out = Vec::new();
    for (m, _) in resolve(app, &rows).await? {
        if let Some(kept) = pg::kept_cert_get(app, &owner(location, &m.name), ETCD_CERT).await? {
            out.push((m, kept));
        }
    }
    Ok(out)
}

/// Every DCS member certificate of the location that `renew` wants replaced with a new one
/// (see `pg::kept_cert_renew`); the members renewed. [`ensure`] puts them in place: etcd
/// reads its certificate files again at every new connection, from clients and peers.
pub(crate) async fn certs_renew(app: &App, location: LocationId, renew: pg::Renew) -> Result<Vec<String>, StepFailure> {
    let rows = existing(app, location).await?;
    let mut renewed = Vec::new();
    for (m, _) in resolve(app, &rows).await? {
        let o = owner(location, &m.name);
        if let Some((_, true)) = pg::kept_cert_renew(app, &o, ETCD_CERT, &etcd_cert_request(&m), renew).await? {
            renewed.push(m.name.clone());
        }
    }
    Ok(renewed)
}

/// The supervised process of a DCS member (unique per location on a shared host).
fn service(member: &str, location: LocationId) -> String {
    format!("{member}-{}", pg::short_id(&location.0))
}

async fn wait_healthy(app: &App, members: &[EtcdMember]) -> Result<(), StepFailure> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut sick = BTreeMap::new();
        for m in members {
            if let Err(e) = health(app, m).await {
                sick.insert(m.name.clone(), e);
            }
        }
        if sick.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let why: Vec<String> = sick.into_iter().map(|(n, e)| format!("{n}: {e}")).collect();
            return Err(StepFailure::transient(format!("the DCS is not healthy: {}", why.join("; "))));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// How long a member may take to answer `/health` (connecting and the body included).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One etcd member's `/health`, over mutual TLS.
pub(crate) async fn health(app: &App, m: &EtcdMember) -> Result<(), String> {
    let https = &app.pki().map_err(|e| e.to_string())?.https();
    let url = format!("https://{}/health", m.client_endpoint());
    let resp = https.get(&url).timeout(HEALTH_TIMEOUT).send().await.map_err(|e| sovdb_types::error_chain(&e))?;
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    match body.get("health").and_then(|h| h.as_str()) {
        Some("true") => Ok(()),
        _ => Err(format!("unhealthy: {body}")),
    }
}

/// The health of the location's DCS, for `location show`: every member's `/health`, asked
/// at once, so the answer takes at most [`HEALTH_TIMEOUT`] however many members are down.
/// A location without a DCS answers `none` with no member.
pub(crate) async fn status(app: &App, location: LocationId) -> Result<DcsStatus, StepFailure> {
    let members = resolve(app, &existing(app, location).await?).await?;
    let answers = futures_util::future::join_all(members.iter().map(|(m, _)| health(app, m))).await;
    let members: Vec<DcsMemberStatus> = members
        .iter()
        .zip(answers)
        .map(|((m, host), answer)| DcsMemberStatus {
            name: m.name.clone(),
            host: host.host.name.clone(),
            endpoint: m.client_endpoint(),
            healthy: answer.is_ok(),
            error: answer.err(),
        })
        .collect();
    let healthy = members.iter().filter(|m| m.healthy).count();
    Ok(DcsStatus { status: DcsState::of(members.len(), healthy), members })
}

/// Deletes every key under `prefix` (Patroni's keys of one cluster) from the location's
/// DCS, through the v3 JSON gateway of the first member that answers. Nothing to do when
/// the location has no DCS.
pub(crate) async fn delete_prefix(app: &App, location: LocationId, prefix: &str) -> Result<(), StepFailure> {
    delete(app, location, prefix, true).await
}

/// Deletes one key from the location's DCS (see [`delete_prefix`]).
pub(crate) async fn delete_key(app: &App, location: LocationId, key: &str) -> Result<(), StepFailure> {
    delete(app, location, key, false).await
}

async fn delete(app: &App, location: LocationId, key: &str, prefix: bool) -> Result<(), StepFailure> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut body = serde_json::json!({"key": b64(key.as_bytes())});
    if prefix {
        let mut end = key.as_bytes().to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        body["range_end"] = b64(&end).into();
    }
    let https = &app.pki().map_err(super::app_failure)?.https();
    let members = resolve(app, &existing(app, location).await?).await?;
    if members.is_empty() {
        return Ok(());
    }
    let mut last = String::new();
    for (m, _) in &members {
        let url = format!("https://{}/v3/kv/deleterange", m.client_endpoint());
        match https.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{}: HTTP {}", m.name, r.status()),
            Err(e) => last = format!("{}: {}", m.name, sovdb_types::error_chain(&e)),
        }
    }
    Err(StepFailure::transient(format!("cannot delete {key:?} from the DCS: {last}")))
}

//! What the postgres workflows share: a cluster's members as steps see them, their
//! secrets, and the agent calls that start, stop and remove their processes.
//!
//! Where things live on a member's host (`<base dir>/pg/<key>/`, see
//! [`sovdb_postgres::render::MemberLayout`]) and the supervised processes'
//! names (`pg-<key>-patroni`, `-haproxy`, `-pgbouncer`) derive from the member's key,
//! `<last 8 hex digits of the cluster ID>-<n>`: short (Unix socket paths are limited to
//! 107 bytes) and unique per host.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sovdb_agent::proto::{
    DesiredState, EnsureProcessRequest, ProcessSpec, RemoveRequest, RunCommandRequest, RunCommandResponse,
    WriteFileRequest,
};
use sovdb_agent::AgentClient;
use sovdb_operations::StepFailure;
use sovdb_postgres::render::{MemberLayout, MemberPorts, Passwords, Peer};
use sovdb_store::{ClusterRecord, HostRecord, MemberRecord};
use sovdb_types::{ClusterId, ClusterSpec, StepError};

use super::{agent_failure, app_failure};
use crate::App;

/// The parameters of every cluster workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterParams {
    pub cluster: ClusterId,
}

/// What a member's row keeps besides its host: the engine's business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MemberSpec {
    pub key: String,
    pub dir: String,
    pub ports: MemberPorts,
}

/// A member with its host, as steps use it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub name: String,
    pub host: HostRecord,
    pub spec: MemberSpec,
}

impl Member {
    pub fn layout(&self) -> MemberLayout {
        MemberLayout::new(self.spec.dir.clone())
    }
    pub fn peer(&self) -> Peer {
        Peer { name: self.name.clone(), address: self.host.host.address.clone(), ports: self.spec.ports }
    }
    pub fn service(&self, what: &str) -> String {
        format!("pg-{}-{what}", self.spec.key)
    }
    pub fn patroni_endpoint(&self) -> String {
        format!("{}:{}", self.host.host.address, self.spec.ports.patroni)
    }
}

/// The last 8 hex digits of an ID (random in a UUIDv7; the first ones are its time).
pub(crate) fn short_id(id: &uuid::Uuid) -> String {
    let simple = id.simple().to_string();
    simple[simple.len() - 8..].to_string()
}

/// The member key: see the module's doc.
pub(crate) fn member_key(cluster: ClusterId, n: u32) -> String {
    format!("{}-{n}", short_id(&cluster.0))
}

/// The owner of a cluster's secrets and ports in the store.
pub(crate) fn owner(cluster: ClusterId) -> String {
    format!("cluster/{cluster}")
}

pub(crate) fn store_failure(e: sovdb_store::StoreError) -> StepFailure {
    app_failure(e.into())
}

pub(crate) async fn cluster(app: &App, id: ClusterId) -> Result<Option<(ClusterRecord, ClusterSpec)>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let Some(record) = tx.cluster_record_by_id(id).await.map_err(store_failure)? else { return Ok(None) };
    let spec: ClusterSpec = serde_json::from_value(record.spec.clone())
        .map_err(|e| StepFailure::permanent(format!("the cluster's stored spec is unreadable: {e}")))?;
    Ok(Some((record, spec)))
}

pub(crate) async fn must_cluster(app: &App, id: ClusterId) -> Result<(ClusterRecord, ClusterSpec), StepFailure> {
    cluster(app, id).await?.ok_or_else(|| StepFailure::permanent(format!("cluster {id} no longer exists")))
}

/// The cluster's allow-list: its spec's, or (a cluster made before allow-lists) its
/// location's networks now.
pub(crate) async fn allow_list(
    app: &App,
    record: &ClusterRecord,
    spec: &ClusterSpec,
) -> Result<Vec<String>, StepFailure> {
    match &spec.allow {
        Some(list) => Ok(list.clone()),
        None => {
            let mut tx = app.store.read().await.map_err(store_failure)?;
            crate::clusters::location_networks(tx.as_mut(), record.location_id).await.map_err(store_failure)
        }
    }
}

/// The cluster's members with their hosts, by name.
pub(crate) async fn members(app: &App, id: ClusterId) -> Result<Vec<Member>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let rows = tx.member_list(id).await.map_err(store_failure)?;
    let mut out = Vec::with_capacity(rows.len());
    for MemberRecord { name, host_id, spec, .. } in rows {
        let spec: MemberSpec = serde_json::from_value(spec)
            .map_err(|e| StepFailure::permanent(format!("member {name}'s stored spec is unreadable: {e}")))?;
        let host = host_by_id(tx.as_mut(), host_id).await?;
        out.push(Member { name, host, spec });
    }
    Ok(out)
}

pub(crate) async fn host_by_id(
    tx: &mut dyn sovdb_store::Tx,
    id: sovdb_types::HostId,
) -> Result<HostRecord, StepFailure> {
    tx.host_get_by_id(id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| StepFailure::permanent(format!("host {id} no longer exists")))
}

/// Secrets: sealed with the master key, bound to their owner and name.
pub(crate) fn aad(owner: &str, name: &str) -> String {
    format!("secret:{owner}#{name}")
}

pub(crate) async fn secret(app: &App, owner: &str, name: &str) -> Result<Option<String>, StepFailure> {
    let sealed = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        tx.secret_get(owner, name).await.map_err(store_failure)?
    };
    let Some(sealed) = sealed else { return Ok(None) };
    let plain = app.pki().and_then(|p| p.open(&sealed, &aad(owner, name))).map_err(app_failure)?;
    String::from_utf8(plain).map(Some).map_err(|_| StepFailure::permanent("a stored secret is not UTF-8"))
}

/// Stores `value` unless a value exists; returns the one kept (so a rerun reuses it).
pub(crate) async fn secret_keep_first(app: &App, owner: &str, name: &str, value: &str) -> Result<String, StepFailure> {
    let sealed = app.pki().map_err(app_failure)?.seal(value.as_bytes(), &aad(owner, name));
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.secret_put(owner, name, &sealed, crate::now()).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    secret(app, owner, name).await?.ok_or_else(|| StepFailure::transient("a secret just written is not there"))
}

pub(crate) async fn passwords(app: &App, id: ClusterId) -> Result<Passwords, StepFailure> {
    let owner = owner(id);
    let get = |name: &'static str| {
        let owner = owner.clone();
        async move {
            secret(app, &owner, name)
                .await?
                .ok_or_else(|| StepFailure::permanent(format!("the cluster's {name} password is missing")))
        }
    };
    Ok(Passwords {
        superuser: get("superuser").await?,
        replication: get("replication").await?,
        rest: get("rest").await?,
        app: get("app").await?,
    })
}

/// A new password: 32 letters and digits (safe in URIs, config files and SQL literals).
pub(crate) fn new_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..32).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

pub(crate) async fn agent(app: &App, host: &HostRecord, timeout: Duration) -> Result<AgentClient, StepFailure> {
    app.agent_client(&host.host, timeout).await.map_err(app_failure)
}

/// Runs `argv` on the host (for at most two minutes) and answers what it did.
pub(crate) async fn exec(
    client: &AgentClient,
    argv: &[&str],
    user: Option<&str>,
    stdin: Option<String>,
) -> Result<RunCommandResponse, StepFailure> {
    let req = RunCommandRequest {
        user: user.map(String::from),
        stdin,
        timeout_secs: 120,
        ..RunCommandRequest::new(argv.iter().copied())
    };
    client.run_command(&req).await.map_err(agent_failure)
}

/// Runs `argv` on the host; a non-zero exit is a permanent failure with the command's
/// stderr (unless `ok_codes` allows it).
pub(crate) async fn run(
    client: &AgentClient,
    argv: &[&str],
    user: Option<&str>,
    stdin: Option<String>,
    what: &str,
) -> Result<String, StepFailure> {
    let out = exec(client, argv, user, stdin).await?;
    if out.status.code == Some(0) && !out.timed_out {
        return Ok(out.stdout);
    }
    let message = if out.timed_out { format!("cannot {what}: timed out") } else { format!("cannot {what}") };
    Err(StepFailure {
        transient: false,
        error: StepError::command(message, argv.join(" "), out.status.code, &out.stderr),
    })
}

/// Writes a file owned by `owner` (user and group of that name).
pub(crate) async fn write(
    client: &AgentClient,
    owner: &str,
    path: String,
    content: impl Into<Vec<u8>>,
    mode: u32,
) -> Result<bool, StepFailure> {
    let req = WriteFileRequest {
        path: path.into(),
        content: content.into(),
        mode,
        owner: Some(owner.into()),
        group: Some(owner.into()),
    };
    Ok(client.write_file(&req).await.map_err(agent_failure)?.changed)
}

pub(crate) async fn ensure(
    client: &AgentClient,
    name: String,
    argv: Vec<String>,
    user: &str,
    cwd: &str,
    state: DesiredState,
) -> Result<bool, StepFailure> {
    let spec = ProcessSpec {
        name,
        argv,
        user: Some(user.into()),
        env: BTreeMap::new(),
        cwd: Some(cwd.into()),
        // Patroni stops PostgreSQL (a fast shutdown) before it exits.
        stop_timeout_secs: 60,
    };
    Ok(client.ensure_process(&EnsureProcessRequest { spec, state }).await.map_err(agent_failure)?.changed)
}

/// Runs one of a member's processes (`patroni`, `haproxy`, `pgbouncer`) as the database
/// user, in the member's directory.
pub(crate) async fn start_service(
    client: &AgentClient,
    m: &Member,
    what: &str,
    argv: Vec<String>,
) -> Result<bool, StepFailure> {
    ensure(client, m.service(what), argv, sovdb_postgres::OS_USER, &m.spec.dir, DesiredState::Running).await
}

/// The processes of a member, routers first.
const SERVICES: [&str; 3] = ["pgbouncer", "haproxy", "patroni"];

/// Stops every process of a member and forgets them; stops a PostgreSQL that outlived
/// its Patroni (Patroni detaches the postmaster). Idempotent.
pub(crate) async fn stop_member(app: &App, m: &Member, version: &str) -> Result<(), StepFailure> {
    let client = agent(app, &m.host, Duration::from_secs(90)).await?;
    let names: Vec<String> = SERVICES.iter().map(|what| m.service(what)).collect();
    let running: Vec<_> =
        client.process_list().await.map_err(agent_failure)?.into_iter().filter(|p| names.contains(&p.name)).collect();
    for what in SERVICES {
        if let Some(p) = running.iter().find(|p| p.name == m.service(what)) {
            let req = EnsureProcessRequest { spec: p.spec.clone(), state: DesiredState::Stopped };
            client.ensure_process(&req).await.map_err(agent_failure)?;
        }
    }
    let data = sovdb_provider::shell_quote(&m.layout().data());
    let bin = sovdb_postgres::bin_dir(version);
    let script = format!(
        "if [ -f {data}/postmaster.pid ] && {bin}/pg_ctl status -D {data} >/dev/null 2>&1; then \
         {bin}/pg_ctl stop -D {data} -m fast -w -t 60 || {bin}/pg_ctl stop -D {data} -m immediate -w; fi"
    );
    run(&client, &["sh", "-c", &script], Some(sovdb_postgres::OS_USER), None, "stop PostgreSQL").await?;
    for p in &running {
        let dir = format!("{}/services/{}", m.host.host.base_dir, p.name);
        client.remove(&RemoveRequest { path: dir.into(), recursive: true }).await.map_err(agent_failure)?;
    }
    Ok(())
}

/// Creates directories owned by `owner`, mode 0700.
pub(crate) async fn make_dirs(client: &AgentClient, owner: &str, dirs: &[String]) -> Result<(), StepFailure> {
    let mut argv = vec!["install", "-d", "-m", "0700", "-o", owner, "-g", owner];
    argv.extend(dirs.iter().map(String::as_str));
    run(client, &argv, None, None, "create the directories").await?;
    // The user must also pass through every directory above them.
    let Some(first) = dirs.first() else { return Ok(()) };
    if exec(client, &["test", "-w", first], Some(owner), None).await?.status.code != Some(0) {
        return Err(StepFailure::permanent(format!(
            "the system user {owner} cannot reach {first}: give the directories above it search permission \
             (chmod o+x), or give the host a --base-dir that {owner} can reach"
        )));
    }
    Ok(())
}

/// The TCP ports something listens on, on the agent's host (its network namespace), as
/// the kernel lists them in `/proc/net/tcp` and `tcp6`: no program beyond `cat` needed
/// (`ss` is in iproute2, which a minimal Debian lacks).
pub(crate) async fn listening_ports(client: &AgentClient) -> Result<std::collections::BTreeSet<u16>, StepFailure> {
    let script = "cat /proc/net/tcp; [ -r /proc/net/tcp6 ] && cat /proc/net/tcp6; exit 0";
    let out = run(client, &["sh", "-c", script], None, None, "list the listening ports").await?;
    Ok(parse_proc_net_tcp(&out))
}

/// The local ports of the sockets in state LISTEN (`0A`) of `/proc/net/tcp{,6}` text:
/// `sl local_address rem_address st ...`, the address `HEXIP:HEXPORT`.
pub(crate) fn parse_proc_net_tcp(text: &str) -> std::collections::BTreeSet<u16> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == "0A").then_some(())?;
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

/// Sends `signal` to process `pid` on the host with the shell's own `kill` (the `kill`
/// program is in procps, which a minimal Debian lacks).
pub(crate) async fn signal(
    client: &AgentClient,
    signal: &str,
    pid: &str,
    user: Option<&str>,
    what: &str,
) -> Result<String, StepFailure> {
    let script = format!("kill -{signal} \"$1\"");
    run(client, &["sh", "-c", &script, "sh", pid], user, None, what).await
}

/// Gives out one port per owner on `host`, in `tx`: the lowest that no one holds in the
/// store and nothing listens on.
pub(crate) async fn allocate_ports(
    app: &App,
    tx: &mut dyn sovdb_store::Tx,
    host: sovdb_types::HostId,
    listening: &std::collections::BTreeSet<u16>,
    owners: &[String],
) -> Result<Vec<u16>, StepFailure> {
    let taken: std::collections::BTreeSet<u16> =
        tx.port_list(host).await.map_err(store_failure)?.into_iter().map(|a| a.port).collect();
    let range = app.config.port_range.clone();
    let mut candidates = range.clone().filter(|p| !taken.contains(p) && !listening.contains(p));
    let mut out = Vec::with_capacity(owners.len());
    for owner in owners {
        loop {
            let port = candidates.next().ok_or_else(|| {
                StepFailure::permanent(format!("no free port left in {range:?} on the host (serve --port-range)"))
            })?;
            let a = sovdb_store::PortAllocation { host_id: host, port, owner: owner.clone() };
            if tx.port_allocate(&a).await.map_err(store_failure)? {
                out.push(port);
                break;
            }
        }
    }
    Ok(out)
}

/// A certificate and key kept (sealed) in the store, issued on first need.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KeptCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// An internal certificate kept (sealed) in the store as `owner`'s secret `name`: the kept
/// one, or one issued now (valid for the configured internal certificate validity;
/// `req.validity_days` is ignored) and kept. Of two callers issuing at once, the first
/// kept wins and both answer it.
pub(crate) async fn kept_cert(
    app: &App,
    owner: &str,
    name: &str,
    req: &sovdb_pki::CertRequest,
) -> Result<KeptCert, StepFailure> {
    let json = match secret(app, owner, name).await? {
        Some(j) => j,
        None => {
            let issued = issue(app, req)?;
            let kept = KeptCert { cert_pem: issued.cert_pem, key_pem: issued.key_pem };
            secret_keep_first(app, owner, name, &serde_json::to_string(&kept).expect("serialise")).await?
        }
    };
    serde_json::from_str(&json).map_err(|e| StepFailure::permanent(format!("a stored certificate is unreadable: {e}")))
}

/// An internal certificate valid for the configured internal certificate validity.
fn issue(app: &App, req: &sovdb_pki::CertRequest) -> Result<sovdb_pki::IssuedCert, StepFailure> {
    let pki = app.pki().map_err(app_failure)?;
    pki.issue_for(req, app.config.internal_cert_validity).map_err(app_failure)
}

/// `owner`'s kept certificate `name`, if it has one.
pub(crate) async fn kept_cert_get(app: &App, owner: &str, name: &str) -> Result<Option<KeptCert>, StepFailure> {
    let Some(json) = secret(app, owner, name).await? else { return Ok(None) };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| StepFailure::permanent(format!("the stored certificate {owner}/{name} is unreadable: {e}")))
}

/// Which certificates a renewal replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renew {
    /// Those due at this time, with less than a third of their life left: the certificate
    /// bot's renewals.
    Due(chrono::DateTime<chrono::Utc>),
    /// Every one issued before this time, whatever its age: a renewal someone asked for
    /// (after a key may have leaked, say). The time is the whole second after the
    /// request: certificates are dated in whole seconds, so every one issued until the
    /// request is dated before it, and the renewal issues its own only once it has passed
    /// (see [`Renew::begin`]), so they are dated at or after it and a step that runs again
    /// after a crash never renews them again.
    IssuedBefore(chrono::DateTime<chrono::Utc>),
}

/// The longest a renewal on request waits for its `issued_before` to pass: about a second
/// normally; longer only when this control plane's clock is behind the one that took the
/// request, and then the step fails for now and is retried.
const MAX_WAIT_FOR_REQUEST_TIME: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

impl Renew {
    /// What a renewal's `issued_before` parameter asks for: every certificate issued
    /// before that time, or, without one, the certificates due now. With one, waits until
    /// it has passed, so that what the renewal issues is dated at or after it.
    pub(crate) async fn begin(issued_before: Option<chrono::DateTime<chrono::Utc>>) -> Result<Renew, StepFailure> {
        let Some(t) = issued_before else { return Ok(Renew::Due(chrono::Utc::now())) };
        let ahead = t - chrono::Utc::now();
        if ahead > MAX_WAIT_FOR_REQUEST_TIME {
            return Err(StepFailure::transient(format!(
                "the renewal was asked for up to {t}, {} s ahead of this control plane's clock; it issues \
                 certificates only once its clock has passed that (are the control planes' clocks in sync?)",
                ahead.num_seconds()
            )));
        }
        if let Ok(wait) = ahead.to_std() {
            tokio::time::sleep(wait).await;
        }
        Ok(Renew::IssuedBefore(t))
    }

    /// Whether a certificate of this validity is replaced.
    pub(crate) fn wants(self, v: &sovdb_pki::CertValidity) -> bool {
        match self {
            Renew::Due(now) => v.due(now),
            Renew::IssuedBefore(t) => v.issued_at < t,
        }
    }

    /// Whether a kept certificate is replaced; one that does not parse always is.
    pub(crate) fn wants_kept(self, kept: &KeptCert) -> bool {
        sovdb_pki::CertValidity::of_pem(&kept.cert_pem).map_or(true, |v| self.wants(&v))
    }

    /// Whether a kept certificate counts as renewed by this renewal although this run did
    /// not replace it: on request, one dated at or after `issued_before` (a run before a
    /// crash replaced it). The bot's renewals count only what they replace.
    pub(crate) fn issued_since(self, kept: &KeptCert) -> bool {
        match self {
            Renew::Due(_) => false,
            Renew::IssuedBefore(t) => sovdb_pki::CertValidity::of_pem(&kept.cert_pem).is_ok_and(|v| v.issued_at >= t),
        }
    }
}

/// Replaces `owner`'s kept certificate `name` with a new one issued for `req` when `renew`
/// wants it; answers the certificate kept after the call and whether it counts as renewed
/// (replaced now, or see [`Renew::issued_since`]). Nothing kept yet: nothing is issued
/// here (the workflow that writes its files issues it).
///
/// Crash safety: the new certificate replaces the old in one write; a rerun finds it fresh
/// (not due, or issued since the request) and keeps it.
pub(crate) async fn kept_cert_renew(
    app: &App,
    owner: &str,
    name: &str,
    req: &sovdb_pki::CertRequest,
    renew: Renew,
) -> Result<Option<(KeptCert, bool)>, StepFailure> {
    let Some(kept) = kept_cert_get(app, owner, name).await? else { return Ok(None) };
    if !renew.wants_kept(&kept) {
        let since = renew.issued_since(&kept);
        return Ok(Some((kept, since)));
    }
    let issued = issue(app, req)?;
    let new = KeptCert { cert_pem: issued.cert_pem, key_pem: issued.key_pem };
    let sealed = app
        .pki()
        .map_err(app_failure)?
        .seal(serde_json::to_string(&new).expect("serialise").as_bytes(), &aad(owner, name));
    let mut tx = app.store.write().await.map_err(store_failure)?;
    if !tx.secret_reseal(owner, name, &sealed).await.map_err(store_failure)? {
        return Err(StepFailure::transient(format!("the certificate {owner}/{name} vanished while it was renewed")));
    }
    tx.commit().await.map_err(store_failure)?;
    Ok(Some((new, true)))
}

/// Whether a kept certificate is due for renewal at `now` (a third of its life left); one
/// that does not parse is due too (a new one replaces it).
pub(crate) fn cert_due(kept: &KeptCert, now: chrono::DateTime<chrono::Utc>) -> bool {
    sovdb_pki::CertValidity::of_pem(&kept.cert_pem).map_or(true, |v| v.due(now))
}

/// The owner of a member's secrets: its certificate ([`MEMBER_CERT`]).
pub(crate) fn member_owner(cluster: ClusterId, member: &str) -> String {
    format!("{}/{member}", owner(cluster))
}

/// The name of a member's certificate among its secrets.
pub(crate) const MEMBER_CERT: &str = "tls";

fn member_cert_request(m: &Member) -> sovdb_pki::CertRequest {
    host_cert_request(&m.name, &m.host.host.address)
}

/// A member's certificate (PostgreSQL's, Patroni's REST API's, PgBouncer's, and its
/// client certificate towards etcd): the kept one, or one issued now.
pub(crate) async fn member_cert(app: &App, cluster: ClusterId, m: &Member) -> Result<KeptCert, StepFailure> {
    kept_cert(app, &member_owner(cluster, &m.name), MEMBER_CERT, &member_cert_request(m)).await
}

/// A member's kept certificate, if it has one.
pub(crate) async fn member_cert_kept(
    app: &App,
    cluster: ClusterId,
    name: &str,
) -> Result<Option<KeptCert>, StepFailure> {
    kept_cert_get(app, &member_owner(cluster, name), MEMBER_CERT).await
}

/// A member's certificate renewed as `renew` wants (see [`kept_cert_renew`]).
pub(crate) async fn member_cert_renew(
    app: &App,
    cluster: ClusterId,
    m: &Member,
    renew: Renew,
) -> Result<Option<(KeptCert, bool)>, StepFailure> {
    kept_cert_renew(app, &member_owner(cluster, &m.name), MEMBER_CERT, &member_cert_request(m), renew).await
}

/// A server certificate for a host: its address (and loopback) as names.
pub(crate) fn host_cert_request(common_name: &str, address: &str) -> sovdb_pki::CertRequest {
    let mut ips: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    let mut dns = vec!["localhost".to_string()];
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) if !ips.contains(&ip) => ips.push(ip),
        Ok(_) => {}
        Err(_) => dns.push(address.to_string()),
    }
    sovdb_pki::CertRequest {
        common_name: common_name.into(),
        dns_names: dns,
        ip_addresses: ips,
        usage: sovdb_pki::CertUsage::ServerAndClient,
        validity_days: 825,
    }
}

/// An event of the cluster's.
pub(crate) fn event(record: &ClusterRecord, kind: &str, message: String) -> sovdb_store::NewEvent {
    crate::events::cluster_event(record, kind, message)
}

/// Appends the event `kind` of an operation's step once: a step that runs again after a
/// crash (its event written, its output not) finds the mark written with the event, in the
/// same transaction, and writes nothing.
pub(crate) async fn event_once(
    app: &App,
    record: &ClusterRecord,
    operation: sovdb_types::OperationId,
    kind: &str,
    message: String,
) -> Result<(), StepFailure> {
    record_once(app, operation, &event(record, kind, message)).await
}

/// Writes `event` once for `operation` (see [`event_once`]): for any event, a cluster's or
/// the installation's.
pub(crate) async fn record_once(
    app: &App,
    operation: sovdb_types::OperationId,
    event: &sovdb_store::NewEvent,
) -> Result<(), StepFailure> {
    let mut tx = app.store.write().await.map_err(store_failure)?;
    let mark = format!("event/{operation}/{}", event.kind);
    if tx.meta_swap(&mark, None, &crate::now().to_rfc3339()).await.map_err(store_failure)? {
        crate::events::record(tx.as_mut(), event).await.map_err(super::app_failure)?;
        tx.commit().await.map_err(store_failure)?;
    }
    Ok(())
}

/// Runs SQL (on stdin: no secret in argv) with psql as the database superuser, over the
/// member's Unix socket; answers psql's unaligned, tuples-only output, fields split by
/// [`FIELD_SEPARATOR`].
pub(crate) async fn psql(app: &App, m: &Member, sql: String, what: &str) -> Result<String, StepFailure> {
    let client = agent(app, &m.host, Duration::from_secs(60)).await?;
    let layout = m.layout();
    let port = m.spec.ports.postgres.to_string();
    let argv = [
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        FIELD_SEPARATOR,
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &layout.run_dir(),
        "-p",
        &port,
        "-U",
        sovdb_postgres::render::SUPERUSER,
        "-d",
        "postgres",
        "-f",
        "-",
    ];
    run(&client, &argv, Some(sovdb_postgres::OS_USER), Some(sql), what).await
}

/// Between the fields of [`psql`]'s output: a character no value holds.
pub(crate) const FIELD_SEPARATOR: &str = "\u{1f}";

/// A SQL string literal (standard_conforming_strings is on).
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The number at the end of a member's name (`db1-3` → 3).
pub(crate) fn member_number(name: &str) -> Option<u32> {
    name.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// Tells a member's HAProxy to read its configuration again (SIGUSR2 to its master: the
/// old workers finish their connections). Nothing to do when it doesn't run.
pub(crate) async fn reload_haproxy(client: &AgentClient, m: &Member) -> Result<(), StepFailure> {
    let name = m.service("haproxy");
    let list = client.process_list().await.map_err(agent_failure)?;
    if let Some(pid) = list.into_iter().find(|p| p.name == name).and_then(|p| p.pid) {
        let pid = pid.to_string();
        signal(client, "USR2", &pid, None, "reload HAProxy").await?;
    }
    Ok(())
}

/// Tells a member's PgBouncer to read its configuration and client rules again (SIGHUP;
/// open sessions stay). Nothing to do when it doesn't run (no pooler).
pub(crate) async fn reload_pgbouncer(client: &AgentClient, m: &Member) -> Result<(), StepFailure> {
    let name = m.service("pgbouncer");
    let list = client.process_list().await.map_err(agent_failure)?;
    if let Some(pid) = list.into_iter().find(|p| p.name == name).and_then(|p| p.pid) {
        let pid = pid.to_string();
        signal(client, "HUP", &pid, None, "reload PgBouncer").await?;
    }
    Ok(())
}

/// Stops and removes one member: its processes, its directory, its ports, its
/// certificate and its row. Idempotent.
pub(crate) async fn remove_member(app: &App, m: &Member, cluster: &ClusterRecord) -> Result<(), StepFailure> {
    stop_member(app, m, &cluster.version).await?;
    // A stopped Patroni leaves its key (`stopped`) until its TTL ends: a removed member
    // must not show in the cluster as a member that is down.
    let key = format!("{}{}/members/{}", sovdb_postgres::render::NAMESPACE, cluster.id, m.name);
    super::dcs::delete_key(app, cluster.location_id, &key).await?;
    let cluster = cluster.id;
    let client = agent(app, &m.host, Duration::from_secs(60)).await?;
    client.remove(&RemoveRequest { path: m.spec.dir.clone().into(), recursive: true }).await.map_err(agent_failure)?;
    let member_owner = format!("{}/{}", owner(cluster), m.name);
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.port_release(&member_owner).await.map_err(store_failure)?;
    tx.secret_delete(&member_owner).await.map_err(store_failure)?;
    tx.member_delete(cluster, &m.name).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(())
}

/// How long a renewal's `wait-applied` step waits for every server to present its new
/// certificate (they reload within a second or two here).
pub(crate) const PRESENT_DEADLINE: Duration = Duration::from_secs(3 * 60);

/// How long a `wait-applied` step waits for every member to apply a reloaded change.
pub(crate) const APPLY_DEADLINE: Duration = Duration::from_secs(3 * 60);

/// Waits, for at most [`APPLY_DEADLINE`] from the step's first attempt, until `check` says
/// each member has applied a change (`Ok(Ok(()))`), saying meanwhile which members have
/// not and why; at the deadline the step fails with that. The members' names, for the
/// step's output.
pub(crate) async fn wait_each_applied<'a, F, Fut>(
    ctx: &sovdb_operations::StepCtx<App>,
    members: &'a [Member],
    what: &str,
    mut check: F,
) -> Result<serde_json::Value, StepFailure>
where
    F: FnMut(&'a Member) -> Fut,
    Fut: std::future::Future<Output = Result<Result<(), String>, StepFailure>>,
{
    let wait = sovdb_operations::Wait::new(format!("every member to apply {what}"), APPLY_DEADLINE);
    // Members that applied it once are not asked again.
    let applied = std::sync::Mutex::new(Vec::<String>::new());
    let applied = &applied;
    ctx.wait(
        &wait,
        || {
            let done = applied.lock().expect("not poisoned").clone();
            let looks: Vec<_> = members.iter().filter(|m| !done.contains(&m.name)).map(|m| (m, check(m))).collect();
            async move {
                let mut behind = Vec::new();
                for (m, look) in looks {
                    match look.await {
                        Ok(Ok(())) => applied.lock().expect("not poisoned").push(m.name.clone()),
                        Ok(Err(why)) => behind.push(format!("{}: {why}", m.name)),
                        Err(e) => behind.push(format!("{}: {}", m.name, e.error.message)),
                    }
                }
                Ok(if behind.is_empty() {
                    sovdb_operations::Probe::Ready(())
                } else {
                    sovdb_operations::Probe::Waiting(format!("not yet applied on {}", behind.join("; ")))
                })
            }
        },
        |seen| async move { seen },
    )
    .await?;
    Ok(serde_json::json!({"applied_on": members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn listening_ports_are_read_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:9C40 0100007F:1B58 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:4E20 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 3 1 0 100 0 0 10 0\n";
        let ports: Vec<u16> = super::parse_proc_net_tcp(text).into_iter().collect();
        assert_eq!(ports, [7000, 20000], "listening ones only, v4 and v6, not the established 40000");
    }

    use chrono::{SubsecRound as _, TimeDelta, Utc};
    use sovdb_pki::{Ca, CertValidity};

    use super::*;

    fn validity(issued_at: chrono::DateTime<Utc>, life: TimeDelta) -> CertValidity {
        CertValidity { serial: "01".into(), issued_at, not_after: issued_at + life }
    }

    #[test]
    fn on_request_every_certificate_issued_before_the_request_is_renewed_whatever_its_age() {
        let t = Utc::now().trunc_subsecs(0);
        let asked = Renew::IssuedBefore(t);
        // Issued a second before the request: renewed although far from due.
        let young = validity(t - TimeDelta::seconds(1), TimeDelta::days(825));
        assert!(!Renew::Due(t).wants(&young));
        assert!(asked.wants(&young));
        // Issued by the renewal itself (the request's second or later): kept, on every rerun.
        for later in [0, 1, 3600] {
            assert!(!asked.wants(&validity(t + TimeDelta::seconds(later), TimeDelta::days(825))), "{later}");
        }
        // The bot's renewals still go by the third of the life that is left.
        let old = validity(t - TimeDelta::days(600), TimeDelta::days(825));
        assert!(Renew::Due(t).wants(&old));
    }

    fn issue(ca: &Ca) -> KeptCert {
        let issued = ca.issue_for(&host_cert_request("m", "127.0.0.1"), TimeDelta::days(825)).unwrap();
        KeptCert { cert_pem: issued.cert_pem, key_pem: issued.key_pem }
    }

    #[tokio::test]
    async fn a_renewal_on_request_renews_what_was_issued_until_the_request_and_nothing_it_issued() {
        let ca = Ca::generate("test").unwrap();
        // Issued a moment ago, in the same second as the request that follows.
        let old = issue(&ca);
        // The request: the whole second after now (as `App::*_renew_certs` take it).
        let t = Utc::now().trunc_subsecs(0) + TimeDelta::seconds(1);
        let renew = Renew::begin(Some(t)).await.unwrap();
        assert_eq!(renew, Renew::IssuedBefore(t));
        assert!(Utc::now() >= t, "begin waits until the request's time has passed");
        assert!(renew.wants_kept(&old), "issued before the request, even in its second");
        assert!(!renew.issued_since(&old));
        // What the renewal issues is never renewed again by a rerun, and counts as renewed.
        let new = issue(&ca);
        assert!(!renew.wants_kept(&new), "a rerun does not renew it again");
        assert!(renew.issued_since(&new), "a rerun still counts it as renewed");
        assert!(!Renew::Due(Utc::now()).issued_since(&new), "the bot counts only what it replaces");
        // A certificate that does not parse is always replaced.
        let broken = KeptCert { cert_pem: "not a certificate".into(), key_pem: String::new() };
        assert!(renew.wants_kept(&broken) && !renew.issued_since(&broken));
        // A request far ahead of this clock is not waited for here: the step is retried.
        let ahead = Renew::begin(Some(Utc::now() + TimeDelta::minutes(5))).await.unwrap_err();
        assert!(ahead.transient, "{}", ahead.error.message);
    }
}

//! A posix repository on another host than a cluster's members, through pgBackRest's TLS
//! server.
//!
//! pgBackRest runs some commands only where the repository is (`backup`, `expire`) and
//! the others where PostgreSQL is (`archive-push`, `archive-get`, `restore`); with a
//! repository on another host, each side reaches the other through a `pgbackrest server`
//! on that host. So every host involved runs one server (a supervised process of its
//! agent, `pgbackrest-server`, as the database user, on a port given out like any other):
//!
//! - the repository's host R, for the members elsewhere: their WAL, their restores, `info`;
//! - each host H with such a member, for R's `backup` of a primary on H.
//!
//! Certificates come from the installation CA. A server presents its host's certificate
//! (the host's address as a DNS name too: pgBackRest matches only names). A client
//! presents its stanza's certificate (`sovdb-stanza-<stanza>`, kept sealed under the
//! repository), and a server lets each such certificate in for its own stanza only: a
//! member's host holds the certificates of the stanzas it serves, so it can read no other
//! cluster's backups from the repository. A restore reads the source's stanza with the
//! source's certificate, which the repository's server lets in while the source's
//! backups are there (as a cluster, or kept after its delete).
//!
//! The repository's own settings (its directory, its passphrase) stay on R, in a file
//! the server's side of a remote command reads (`repo1-host-config`): a member's host
//! has no passphrase.
//!
//! Which stanzas a server lets in is worked out from the store each time a server is
//! ensured (every member configuration written, every stanza set up and every backup
//! ensures the servers of the hosts involved), and the server reads its file again on
//! SIGHUP: no connection is dropped. Crash safety: every step here is idempotent (files
//! compared before they are written, the process ensured, the port given out once per
//! host), so a step that died half way does it all again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sovdb_agent::proto::DesiredState;
use sovdb_agent::AgentClient;
use sovdb_operations::StepFailure;
use sovdb_pki::{CertRequest, CertUsage};
use sovdb_postgres::backup::{self as br, TlsFiles};
use sovdb_postgres::OS_USER;
use sovdb_store::{HostRecord, RepoRecord};
use sovdb_types::{ClusterId, HostId, RepoId, RepoType};

use super::pg::{self, store_failure, KeptCert};
use crate::{repos, App};

/// The supervised process's name on every host.
const SERVICE: &str = "pgbackrest-server";

/// The owner of a host's server port and certificate in the store.
pub(crate) fn server_owner(host: HostId) -> String {
    format!("pgbackrest-server/{host}")
}

/// The server's directory on a host: its configuration, certificate, logs and locks, and
/// the settings of the repositories on that host.
fn server_dir(host: &HostRecord) -> String {
    format!("{}/pgbackrest-server", host.host.base_dir)
}

/// The repository's settings on its own host, for remote commands.
fn repo_conf_path(host: &HostRecord, repo: RepoId) -> String {
    format!("{}/repo-{}.conf", server_dir(host), pg::short_id(&repo.0))
}

/// Whether pgBackRest on `host` reaches the repository through its host's TLS server.
pub(crate) fn is_remote(repo: &RepoRecord, host: HostId) -> bool {
    repo.kind == RepoType::Posix && repo.host_id.is_some_and(|h| h != host)
}

/// A stanza's client certificate, issued on first need and kept (sealed) with the
/// repository's secrets.
async fn stanza_cert(app: &App, repo: RepoId, stanza: &str) -> Result<KeptCert, StepFailure> {
    pg::kept_cert(app, &repos::owner(repo), &stanza_cert_name(stanza), &stanza_cert_request(stanza)).await
}

fn stanza_cert_name(stanza: &str) -> String {
    format!("tls-{stanza}")
}

fn stanza_cert_request(stanza: &str) -> CertRequest {
    CertRequest {
        common_name: br::stanza_client_cn(stanza),
        dns_names: vec![],
        ip_addresses: vec![],
        usage: CertUsage::Client,
        validity_days: 825,
    }
}

/// A stanza's client certificate renewed as `renew` wants (see `pg::kept_cert_renew`);
/// the member config writes put it in place (pgBackRest reads it at every command).
pub(crate) async fn stanza_cert_renew(
    app: &App,
    repo: RepoId,
    stanza: &str,
    renew: pg::Renew,
) -> Result<Option<(KeptCert, bool)>, StepFailure> {
    pg::kept_cert_renew(app, &repos::owner(repo), &stanza_cert_name(stanza), &stanza_cert_request(stanza), renew).await
}

/// A stanza's kept client certificate, if it has one.
pub(crate) async fn stanza_cert_kept(app: &App, repo: RepoId, stanza: &str) -> Result<Option<KeptCert>, StepFailure> {
    pg::kept_cert_get(app, &repos::owner(repo), &stanza_cert_name(stanza)).await
}

/// Where a stanza's client certificate is in `dir`. The whole stanza is in the names: a
/// restoring member holds two stanzas' certificates, and IDs made close in time share
/// their first characters.
pub(crate) fn stanza_cert_files(dir: &str, stanza: &str) -> TlsFiles {
    TlsFiles {
        cert: format!("{dir}/pgbackrest-{stanza}.crt"),
        key: format!("{dir}/pgbackrest-{stanza}.key"),
        ca: format!("{dir}/pgbackrest-ca.crt"),
    }
}

/// Writes the stanza's client certificate, its key and the CA into `dir` on a host; the
/// files' names.
pub(crate) async fn write_stanza_cert(
    app: &App,
    client: &AgentClient,
    dir: &str,
    repo: RepoId,
    stanza: &str,
) -> Result<(TlsFiles, bool), StepFailure> {
    let cert = stanza_cert(app, repo, stanza).await?;
    let files = stanza_cert_files(dir, stanza);
    let ca = app.pki().map_err(super::app_failure)?.ca_pem().to_string();
    let mut any = pg::write(client, OS_USER, files.cert.clone(), cert.cert_pem, 0o644).await?;
    any |= pg::write(client, OS_USER, files.key.clone(), cert.key_pem, 0o600).await?;
    any |= pg::write(client, OS_USER, files.ca.clone(), ca, 0o644).await?;
    Ok((files, any))
}

/// The host's server port: given out once, then kept.
async fn server_port(app: &App, host: &HostRecord, client: &AgentClient) -> Result<u16, StepFailure> {
    let owner = server_owner(host.host.id);
    {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        if let Some(a) = tx.port_list_owned(&owner).await.map_err(store_failure)?.first() {
            return Ok(a.port);
        }
    }
    let listening = pg::listening_ports(client).await?;
    let mut tx = app.store.write().await.map_err(store_failure)?;
    // Given out meanwhile by another step ensuring the same host's server.
    if let Some(a) = tx.port_list_owned(&owner).await.map_err(store_failure)?.first() {
        return Ok(a.port);
    }
    let port = pg::allocate_ports(app, tx.as_mut(), host.host.id, &listening, &[owner]).await?[0];
    tx.commit().await.map_err(store_failure)?;
    Ok(port)
}

/// The host's server certificate: its name, and its address as a DNS name (pgBackRest
/// matches the address a client dials against names only) and as an IP address.
async fn server_cert(app: &App, host: &HostRecord) -> Result<KeptCert, StepFailure> {
    pg::kept_cert(app, &server_owner(host.host.id), SERVER_CERT, &server_cert_request(host)).await
}

const SERVER_CERT: &str = "cert";

/// The host's kept server certificate, if it has one (it runs a server, or did).
pub(crate) async fn server_cert_kept(app: &App, host: HostId) -> Result<Option<KeptCert>, StepFailure> {
    pg::kept_cert_get(app, &server_owner(host), SERVER_CERT).await
}

/// The host's server certificate renewed as `renew` wants (see `pg::kept_cert_renew`);
/// [`ensure_server`] puts it in place (the server reads it again on SIGHUP).
pub(crate) async fn server_cert_renew(
    app: &App,
    host: &HostRecord,
    renew: pg::Renew,
) -> Result<Option<(KeptCert, bool)>, StepFailure> {
    pg::kept_cert_renew(app, &server_owner(host.host.id), SERVER_CERT, &server_cert_request(host), renew).await
}

/// The host's server port, if it was given one.
pub(crate) async fn server_port_kept(app: &App, host: HostId) -> Result<Option<u16>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    Ok(tx.port_list_owned(&server_owner(host)).await.map_err(store_failure)?.first().map(|a| a.port))
}

fn server_cert_request(host: &HostRecord) -> CertRequest {
    let address = &host.host.address;
    let mut ips: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    if let Ok(ip) = address.parse() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut dns = vec![address.clone(), "localhost".to_string()];
    if host.host.name != *address {
        dns.push(host.host.name.clone());
    }
    CertRequest {
        common_name: host.host.name.clone(),
        dns_names: dns,
        ip_addresses: ips,
        usage: CertUsage::Server,
        validity_days: 825,
    }
}

/// The stanzas a host's server lets in: on a repository's host, every stanza of its posix
/// repositories (their clusters' and the kept backups of deleted ones); on a member's
/// host, the stanzas of its members whose repository is on another host.
async fn stanzas(app: &App, host: &HostRecord) -> Result<BTreeSet<String>, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let here: BTreeMap<RepoId, RepoRecord> = tx
        .repo_list_on_host(host.host.id)
        .await
        .map_err(store_failure)?
        .into_iter()
        .filter(|r| r.kind == RepoType::Posix)
        .map(|r| (r.id, r))
        .collect();
    let mut out = BTreeSet::new();
    let mut projects = BTreeSet::new();
    for r in here.values() {
        projects.insert(r.project_id);
    }
    for p in projects {
        for kept in tx.retained_list(p).await.map_err(store_failure)? {
            if here.contains_key(&kept.repo_id) {
                out.insert(kept.cluster.id.to_string());
            }
        }
    }
    let mut remote: BTreeMap<RepoId, bool> = BTreeMap::new();
    let mut after: Option<ClusterId> = None;
    loop {
        let page = tx.cluster_records_all(after, 500).await.map_err(store_failure)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for c in &page {
            let Some(repo) = c.spec["backup_repo"].as_str().and_then(|s| s.parse::<RepoId>().ok()) else { continue };
            if here.contains_key(&repo) {
                out.insert(c.id.to_string());
                continue;
            }
            let elsewhere = match remote.get(&repo) {
                Some(b) => *b,
                None => {
                    let b = tx
                        .repo_get_by_id(repo)
                        .await
                        .map_err(store_failure)?
                        .is_some_and(|r| is_remote(&r, host.host.id));
                    remote.insert(repo, b);
                    b
                }
            };
            if elsewhere && tx.member_list(c.id).await.map_err(store_failure)?.iter().any(|m| m.host_id == host.host.id)
            {
                out.insert(c.id.to_string());
            }
        }
    }
    Ok(out)
}

/// The host's TLS server runs and lets in what [`stanzas`] says (read again on SIGHUP
/// when that changed); its port. A host with nothing to serve runs no server.
pub(crate) async fn ensure_server(app: &App, host: &HostRecord) -> Result<u16, StepFailure> {
    let client = pg::agent(app, host, Duration::from_secs(60)).await?;
    let port = server_port(app, host, &client).await?;
    let dir = server_dir(host);
    pg::make_dirs(&client, OS_USER, &[dir.clone(), format!("{dir}/log"), format!("{dir}/lock")]).await?;
    let cert = server_cert(app, host).await?;
    let tls =
        TlsFiles { cert: format!("{dir}/server.crt"), key: format!("{dir}/server.key"), ca: format!("{dir}/ca.crt") };
    let ca = app.pki().map_err(super::app_failure)?.ca_pem().to_string();
    let mut changed = pg::write(&client, OS_USER, tls.cert.clone(), cert.cert_pem, 0o644).await?;
    changed |= pg::write(&client, OS_USER, tls.key.clone(), cert.key_pem, 0o600).await?;
    changed |= pg::write(&client, OS_USER, tls.ca.clone(), ca, 0o644).await?;
    let auth: Vec<(String, Vec<String>)> =
        stanzas(app, host).await?.into_iter().map(|s| (br::stanza_client_cn(&s), vec![s])).collect();
    // An address that is a name: every interface (clients are still only those certified).
    let listen = match host.host.address.parse::<std::net::IpAddr>() {
        Ok(_) => host.host.address.clone(),
        Err(_) => "*".to_string(),
    };
    let conf_path = format!("{dir}/server.conf");
    let conf = br::server_conf(&dir, &listen, port, &tls, &auth);
    changed |= pg::write(&client, OS_USER, conf_path.clone(), conf, 0o600).await?;
    let state = if auth.is_empty() { DesiredState::Stopped } else { DesiredState::Running };
    let started = pg::ensure(&client, SERVICE.into(), br::server_argv(&conf_path), OS_USER, &dir, state).await?;
    if changed && !started && state == DesiredState::Running {
        reload(&client).await?;
    }
    if state == DesiredState::Running {
        wait_listening(&client, port).await?;
    }
    Ok(port)
}

/// SIGHUP to the running server: it reads its configuration and certificates again.
async fn reload(client: &AgentClient) -> Result<(), StepFailure> {
    let status = client.process_status(SERVICE).await.map_err(super::agent_failure)?;
    if let Some(pid) = status.pid {
        let pid = pid.to_string();
        pg::signal(client, "HUP", &pid, Some(OS_USER), "reload pgBackRest's TLS server").await?;
    }
    Ok(())
}

/// Until the server listens (a client dialling a server that is still starting fails).
async fn wait_listening(client: &AgentClient, port: u16) -> Result<(), StepFailure> {
    for _ in 0..50 {
        if pg::listening_ports(client).await?.contains(&port) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = client.process_status(SERVICE).await.map_err(super::agent_failure)?;
    Err(StepFailure::transient(format!(
        "pgBackRest's TLS server does not listen on port {port}{}",
        status.last_error.map(|e| format!(": {e}")).unwrap_or_default()
    )))
}

/// The repository `repo` (posix, on its host) as a member on another host reaches it: the
/// repository host's server runs and lets the stanza in, the repository's settings are
/// on that host, the stanza's certificate is in `tls_dir` on the member's host (`client`);
/// and the member's host's own server runs, for backups of it.
pub(crate) async fn remote_target(
    app: &App,
    repo: &RepoRecord,
    access: &br::RepoAccess,
    member_host: &HostRecord,
    client: &AgentClient,
    tls_dir: &str,
    stanza: &str,
) -> Result<(br::RepoTarget, bool), StepFailure> {
    let repo_host = super::backup::host_record(app, repo.host_id.expect("a posix repository has a host")).await?;
    let repo_client = pg::agent(app, &repo_host, Duration::from_secs(60)).await?;
    let config = repo_conf_path(&repo_host, repo.id);
    let settings = br::repo_host_conf(&server_dir(&repo_host), access);
    pg::make_dirs(
        &repo_client,
        OS_USER,
        &[server_dir(&repo_host), format!("{}/run/pgbackrest", server_dir(&repo_host))],
    )
    .await?;
    pg::write(&repo_client, OS_USER, config.clone(), settings, 0o600).await?;
    let port = ensure_server(app, &repo_host).await?;
    ensure_server(app, member_host).await?;
    let (tls, changed) = write_stanza_cert(app, client, tls_dir, repo.id, stanza).await?;
    Ok((br::RepoTarget::Remote { address: repo_host.host.address.clone(), port, config, tls }, changed))
}

/// The servers of every host a cluster's backups involve are up to date (its repository's
/// host and its members'), when its repository is a posix one that some member reaches
/// remotely.
pub(crate) async fn ensure_for_cluster(
    app: &App,
    repo: &RepoRecord,
    member_hosts: &[HostRecord],
) -> Result<(), StepFailure> {
    if !member_hosts.iter().any(|h| is_remote(repo, h.host.id)) {
        return Ok(());
    }
    let repo_host = super::backup::host_record(app, repo.host_id.expect("a posix repository has a host")).await?;
    ensure_server(app, &repo_host).await?;
    let mut seen = BTreeSet::new();
    for h in member_hosts.iter().filter(|h| is_remote(repo, h.host.id)) {
        if seen.insert(h.host.id) {
            ensure_server(app, h).await?;
        }
    }
    Ok(())
}

/// Forgets a removed host's server (its port and certificate).
pub(crate) async fn forget_host(tx: &mut dyn sovdb_store::Tx, host: HostId) -> Result<(), sovdb_store::StoreError> {
    let owner = server_owner(host);
    tx.port_release(&owner).await?;
    tx.secret_delete(&owner).await?;
    Ok(())
}

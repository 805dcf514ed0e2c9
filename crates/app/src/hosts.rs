//! Hosts: the machines of a location. Installation-wide; admins add, drain and remove
//! them, everyone can see them.
//!
//! Adding a host writes the host (status `bootstrapping`), a `host.add` operation and
//! the audit record in one transaction; the operation installs and starts the agent (see
//! `workflows::host_add`) and undoes everything, the host record included, if that fails:
//! nothing stays half-registered. The SSH private key is sealed with the master key before
//! it is stored and is never returned, logged or audited.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sovdb_agent::AgentClient;
use sovdb_provider::{SshTarget, Transport};
use sovdb_store::{HostRecord, StoreError};
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::rbac::Action;
use crate::validate;
use crate::{App, AppError, Ctx, Result};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 7450;
/// Where everything sovdb keeps on a host lives unless told otherwise.
pub const DEFAULT_BASE_DIR: &str = "/var/lib/sovdb";

/// The name of this machine's host in the `local` location.
pub const LOCAL_HOST: &str = "local";

/// The additional authenticated data a host's sealed SSH key is bound to.
pub(crate) fn ssh_key_aad(id: HostId) -> String {
    format!("sovdb/host/{id}/ssh-key")
}

/// The audited form of a host create: everything but the private key.
fn audit_params(req: &HostCreate) -> serde_json::Value {
    let mut v = serde_json::to_value(req).expect("serialise");
    if let Some(o) = v.as_object_mut() {
        o.remove("ssh_private_key");
    }
    v
}

impl App {
    pub async fn host_create(&self, ctx: &Ctx, req: HostCreate) -> Result<Operation> {
        ctx.require(Action::HostAdd)?;
        self.host_create_as(&ctx.user.name, Some(ctx), req).await
    }

    /// Adds a host on behalf of `actor` (`system` for the local host at first start).
    pub(crate) async fn host_create_as(&self, actor: &str, ctx: Option<&Ctx>, req: HostCreate) -> Result<Operation> {
        validate::dns_label("host name", &req.name)?;
        validate::labels(&req.labels)?;
        if let Some(zone) = &req.zone {
            validate::dns_label("zone", zone)?;
        }
        check_address(&req.address)?;
        if let Some(dir) = &req.base_dir {
            if !dir.starts_with('/') || dir.contains("..") || dir.len() > 200 {
                return Err(AppError::Invalid(format!(
                    "--base-dir {dir:?} must be an absolute path without `..` (at most 200 characters)"
                )));
            }
        }
        if req.agent_port == Some(0) {
            return Err(AppError::Invalid("--agent-port must be between 1 and 65535".into()));
        }
        let pki = self.pki()?;

        let mut tx = self.store.write().await?;
        let location = tx.location_get(&req.location).await?.ok_or_else(|| {
            AppError::Invalid(format!(
                "location {:?} does not exist; create it with `sovdb location create` or pick one from `sovdb location list`",
                req.location
            ))
        })?;
        let id = HostId::new();
        let (ssh, ssh_key_sealed) = match location.provider {
            Provider::Ssh => {
                let key = req.ssh_private_key.as_deref().filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                    AppError::Invalid(format!(
                        "location {:?} reaches hosts over SSH: pass --ssh-key with the private key sovdb logs in with",
                        location.name
                    ))
                })?;
                if !key.contains("PRIVATE KEY-----") {
                    return Err(AppError::Invalid(
                        "--ssh-key is not a private key file (expected `-----BEGIN ... PRIVATE KEY-----`)".into(),
                    ));
                }
                let user = req.ssh_user.clone().unwrap_or_else(|| "root".into());
                if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '@') {
                    return Err(AppError::Invalid(format!("--ssh-user {user:?} is not a user name")));
                }
                let host_key = match &req.ssh_host_key {
                    Some(k) => {
                        let fp = sovdb_provider::fingerprint(k)
                            .map_err(|e| AppError::Invalid(format!("--ssh-host-key: {e}")))?;
                        Some((k.trim().to_string(), fp))
                    }
                    None => None,
                };
                let access = SshAccess {
                    user,
                    port: req.ssh_port.unwrap_or(22),
                    host_key_fingerprint: host_key.as_ref().map(|k| k.1.clone()),
                    host_key: host_key.map(|k| k.0),
                };
                (Some(access), Some(pki.seal(key.as_bytes(), &ssh_key_aad(id))))
            }
            Provider::Local => {
                if req.ssh_private_key.is_some() || req.ssh_user.is_some() || req.ssh_host_key.is_some() {
                    return Err(AppError::Invalid(format!(
                        "location {:?} is local: its hosts are this machine, reached without SSH; drop the --ssh-* options",
                        location.name
                    )));
                }
                (None, None)
            }
        };
        let agent_port = match (req.agent_port, location.provider) {
            (Some(p), _) => p,
            (None, Provider::Ssh) => DEFAULT_AGENT_PORT,
            // Local hosts share this machine's ports with everything else on it.
            (None, Provider::Local) => free_local_port()?,
        };
        let base_dir = match (&req.base_dir, location.provider) {
            (Some(d), _) => d.trim_end_matches('/').to_string(),
            (None, Provider::Ssh) => DEFAULT_BASE_DIR.to_string(),
            (None, Provider::Local) => self.config.local_hosts_dir.join(&req.name).display().to_string(),
        };
        let host = Host {
            id,
            name: req.name.clone(),
            location: location.name.clone(),
            address: req.address.clone(),
            agent_port,
            base_dir,
            zone: req.zone.clone().or(location.zone.clone()),
            labels: req.labels.clone(),
            status: HostStatus::Bootstrapping,
            status_message: None,
            ssh,
            facts: None,
            last_seen_at: None,
            created_at: crate::now(),
        };
        let record = HostRecord { host, location_id: location.id, ssh_key_sealed };
        match tx.host_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                drop(tx);
                let mut tx = self.store.read().await?;
                return Err(if tx.host_get(&req.name).await?.is_some() {
                    AppError::Conflict(format!("host {:?} already exists", req.name))
                } else {
                    AppError::Conflict(format!(
                        "another host already has its agent at {}:{}; pick another --agent-port",
                        req.address, agent_port
                    ))
                });
            }
            other => other?,
        }
        let op = self
            .operation_create(
                tx.as_mut(),
                actor,
                OperationStart {
                    kind: crate::workflows::host_add::KIND,
                    target: format!("host/{}", req.name),
                    project: None,
                    params: serde_json::json!({ "host": req.name }),
                },
            )
            .await?;
        let mut entry = match ctx {
            Some(ctx) => ctx.audit("host.add", format!("host/{}", req.name), audit_params(&req)),
            None => crate::bootstrap::system_entry("host.add", format!("host/{}", req.name), audit_params(&req)),
        };
        if let Some(o) = entry.params.as_object_mut() {
            o.insert("operation".into(), op.id.to_string().into());
        }
        tx.audit_append(&entry).await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }

    pub async fn host_get(&self, ctx: &Ctx, name: &str) -> Result<Host> {
        ctx.require(Action::HostRead)?;
        let mut tx = self.store.read().await?;
        Ok(tx.host_get(name).await?.ok_or_else(|| AppError::not_found("host", name))?.host)
    }

    pub async fn host_list(&self, ctx: &Ctx, location: Option<&str>, page: &PageParams) -> Result<Page<Host>> {
        ctx.require(Action::HostRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        let location = match location {
            Some(name) => Some(tx.location_get(name).await?.ok_or_else(|| AppError::not_found("location", name))?.id),
            None => None,
        };
        let page = tx.host_list(location, &page).await?;
        Ok(Page { items: page.items.into_iter().map(|r| r.host).collect(), next_page_token: page.next_page_token })
    }

    /// Stops placing new database nodes on the host; what runs there keeps running.
    pub async fn host_drain(&self, ctx: &Ctx, name: &str) -> Result<Host> {
        ctx.require(Action::HostDrain)?;
        let mut tx = self.store.write().await?;
        let host = tx.host_get(name).await?.ok_or_else(|| AppError::not_found("host", name))?.host;
        match host.status {
            HostStatus::Draining => return Ok(host),
            HostStatus::Bootstrapping | HostStatus::Removing => {
                return Err(AppError::Conflict(format!(
                    "host {name:?} is {}; wait for its operation to end (`sovdb op list`)",
                    host.status.as_str()
                )))
            }
            HostStatus::Ready | HostStatus::Unreachable => {}
        }
        tx.host_set_status(host.id, HostStatus::Draining, None).await?;
        tx.audit_append(&ctx.audit("host.drain", format!("host/{name}"), serde_json::json!({}))).await?;
        let host = tx.host_get(name).await?.ok_or_else(|| AppError::not_found("host", name))?.host;
        tx.commit().await?;
        Ok(host)
    }

    /// Stops the host's agent, removes what sovdb installed there (not database data) and
    /// forgets the host. `force` forgets it even when it can't be reached.
    pub async fn host_remove(&self, ctx: &Ctx, name: &str, force: bool) -> Result<Operation> {
        ctx.require(Action::HostRemove)?;
        let mut tx = self.store.write().await?;
        let host = tx.host_get(name).await?.ok_or_else(|| AppError::not_found("host", name))?.host;
        if host.status == HostStatus::Bootstrapping {
            return Err(AppError::Conflict(format!(
                "host {name:?} is still being added; cancel that operation instead (`sovdb op list`, `sovdb op cancel`)"
            )));
        }
        // A repository's record names its host: it must go first (its files stay).
        let repos = tx.repo_list_on_host(host.id).await?;
        if !repos.is_empty() {
            let names: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();
            return Err(AppError::Conflict(format!(
                "host {name:?} keeps {} backup repositories ({}); delete them first (`sovdb repo delete`; their files \
                 stay on the host)",
                repos.len(),
                names.join(", ")
            )));
        }
        tx.host_set_status(host.id, HostStatus::Removing, None).await?;
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart {
                    kind: crate::workflows::host_remove::KIND,
                    target: format!("host/{name}"),
                    project: None,
                    params: serde_json::json!({ "host": name, "force": force }),
                },
            )
            .await?;
        tx.audit_append(&ctx.audit(
            "host.remove",
            format!("host/{name}"),
            serde_json::json!({"force": force, "operation": op.id.to_string()}),
        ))
        .await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }

    /// A transport to `host` for bootstrapping: this machine for local hosts, SSH with
    /// the recorded host key otherwise (which must be recorded by then).
    pub(crate) fn host_transport(&self, record: &HostRecord) -> Result<Transport> {
        let Some(ssh) = &record.host.ssh else { return Ok(Transport::Local) };
        let sealed = record
            .ssh_key_sealed
            .as_deref()
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("host {} has no SSH key stored", record.host.name)))?;
        let key = self.pki()?.open(sealed, &ssh_key_aad(record.host.id))?;
        let host_key = ssh.host_key.clone().ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("host {}'s SSH host key is not recorded yet", record.host.name))
        })?;
        Transport::ssh(SshTarget {
            address: record.host.address.clone(),
            port: ssh.port,
            user: ssh.user.clone(),
            private_key: String::from_utf8_lossy(&key).into_owned(),
            host_key,
        })
        .map_err(|e| AppError::Internal(anyhow::anyhow!(e)))
    }

    /// Every host of the installation, whatever its state (for the loops that visit hosts).
    pub(crate) async fn hosts_all(&self) -> Result<Vec<HostRecord>> {
        let mut hosts: Vec<HostRecord> = Vec::new();
        let mut page = PageRequest { limit: 1000, after: None };
        loop {
            let batch = self.store.read().await?.host_list(None, &page).await?;
            hosts.extend(batch.items);
            match batch.next_page_token {
                Some(_) => page.after = hosts.last().map(|h| h.host.name.clone()),
                None => return Ok(hosts),
            }
        }
    }

    /// Every cluster record of every project, whatever its state (for the loops that visit
    /// clusters).
    pub(crate) async fn clusters_all(&self) -> Result<Vec<sovdb_store::ClusterRecord>> {
        let mut out: Vec<sovdb_store::ClusterRecord> = Vec::new();
        loop {
            let batch = self.store.read().await?.cluster_records_all(out.last().map(|c| c.id), 200).await?;
            let full = batch.len() == 200;
            out.extend(batch);
            if !full {
                return Ok(out);
            }
        }
    }

    /// A client of `host`'s agent, speaking mTLS with this installation's certificates.
    /// Clients are kept per host (and endpoint), so the heartbeat reuses one TLS setup and
    /// its connection instead of making new ones every second.
    pub(crate) async fn agent_client(&self, host: &Host, timeout: Duration) -> Result<AgentClient> {
        let endpoint = (host.address.clone(), host.agent_port);
        if let Some((at, client)) = self.agents.lock().unwrap_or_else(|p| p.into_inner()).get(&host.id) {
            if *at == endpoint {
                return Ok(client.clone().with_timeout(timeout));
            }
        }
        let addr = resolve(&host.address, host.agent_port).await?;
        let client = AgentClient::new(addr, &host.address, &self.pki()?.client())
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e)))?;
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).insert(host.id, (endpoint, client.clone()));
        Ok(client.with_timeout(timeout))
    }
}

/// An IP address or a DNS name; nothing that would break a URL or a shell line.
fn check_address(address: &str) -> Result<()> {
    let ok = address.parse::<IpAddr>().is_ok()
        || (!address.is_empty()
            && address.len() <= 253
            && address.split('.').all(|l| validate::dns_label("address", l).is_ok()));
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!("--address {address:?} is not an IP address or a DNS name")))
    }
}

pub(crate) async fn resolve(address: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((address, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| AppError::Invalid(format!("cannot resolve the host address {address:?}")))
}

/// A free TCP port on this machine, for a local host's agent.
fn free_local_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("cannot find a free port for the local agent")))
}

impl App {
    /// Adds this machine as host `local` of the `local` location, once per installation
    /// (at the first start; a user who removes it later is not overruled). Returns the
    /// `host.add` operation when it started one.
    pub async fn ensure_local_host(&self) -> Result<Option<Operation>> {
        const DONE: &str = "local_host_added";
        {
            let mut tx = self.store.read().await?;
            if tx.meta_get(DONE).await?.is_some() || tx.location_get(crate::LOCAL_LOCATION).await?.is_none() {
                return Ok(None);
            }
        }
        let req = HostCreate {
            name: LOCAL_HOST.into(),
            location: crate::LOCAL_LOCATION.into(),
            address: "127.0.0.1".into(),
            ssh_user: None,
            ssh_port: None,
            ssh_private_key: None,
            ssh_host_key: None,
            agent_port: None,
            zone: None,
            labels: Default::default(),
            base_dir: None,
        };
        let op = match self.host_create_as("system", None, req).await {
            Ok(op) => Some(op),
            // Another replica added it meanwhile.
            Err(AppError::Conflict(_)) => None,
            Err(e) => return Err(e),
        };
        let mut tx = self.store.write().await?;
        tx.meta_set(DONE, &crate::now().to_rfc3339()).await?;
        tx.commit().await?;
        Ok(op)
    }
}

//! The resources a user sees through the API, and the bodies that create them.
//!
//! Request bodies refuse unknown fields: a misspelt field is an error, not a silently
//! ignored setting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;

/// Free-form `key=value` labels used by placement and residency rules
/// (`jurisdiction=EU`, `zone=a`, `tier=nvme`).
pub type Labels = BTreeMap<String, String>;

/// A tenant: every cluster, repository, alert and operation belongs to one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A person or automation that calls the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A role a user holds, installation-wide (`project` absent) or in one project. Each role
/// may do everything the roles below it may (see `docs/security.md` for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, everywhere; installation-wide only.
    Admin,
    /// Members and everything in the project.
    Owner,
    /// Day-2 operations, backups and restores.
    Operator,
    /// Create, connect to and delete clusters.
    Developer,
    /// Read without secrets.
    Viewer,
}

impl Role {
    /// Every role, the strongest first.
    pub const ALL: [Role; 5] = [Role::Admin, Role::Owner, Role::Operator, Role::Developer, Role::Viewer];

    /// How much the role may do: a role may do everything a role of lower rank may.
    pub fn rank(self) -> u8 {
        match self {
            Role::Admin => 4,
            Role::Owner => 3,
            Role::Operator => 2,
            Role::Developer => 1,
            Role::Viewer => 0,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn includes(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Owner => "owner",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "owner" => Role::Owner,
            "operator" => Role::Operator,
            "developer" => Role::Developer,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// A role held by a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleBinding {
    pub user_id: UserId,
    pub role: Role,
    /// The project the role applies to; absent for installation-wide roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
}

/// An API token as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// How sovdb reaches the hosts of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Databases run as processes on the machine that runs `sovdb serve`.
    Local,
    /// Hosts reached over SSH once, then through their agent.
    Ssh,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Ssh => "ssh",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "local" => Some(Provider::Local),
            "ssh" => Some(Provider::Ssh),
            _ => None,
        }
    }
}

/// A region (and optionally a zone) of one provider; hosts live in locations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Location {
    pub id: LocationId,
    pub name: String,
    pub provider: Provider,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub labels: Labels,
    pub created_at: DateTime<Utc>,
}

/// Body of `PATCH /api/v1/locations/{name}`: what to change (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationSet {
    /// Where the location's hosts forward their clusters' PostgreSQL and Patroni logs as
    /// RFC 5424 messages: `tcp://HOST:PORT`, `tls://HOST:PORT` (RFC 5425), or `none` to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<String>,
    /// With a `tls://` target: the CA certificates (PEM) the syslog server's certificate
    /// must chain to. Without it, each host's system bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`) is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_ca: Option<String>,
}

/// Body of `POST /api/v1/locations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationCreate {
    /// A DNS label, unique in the installation.
    pub name: String,
    pub provider: Provider,
    /// The provider's region, e.g. `eu-central` or `dc1`.
    pub region: String,
    /// The default zone for hosts added to this location.
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: Labels,
}

/// The database engine of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "postgres" => Some(Engine::Postgres),
            _ => None,
        }
    }
}

/// Where a cluster is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    Creating,
    Ready,
    Degraded,
    Failed,
    Deleting,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Creating => "creating",
            ClusterState::Ready => "ready",
            ClusterState::Degraded => "degraded",
            ClusterState::Failed => "failed",
            ClusterState::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<ClusterState> {
        Some(match s {
            "creating" => ClusterState::Creating,
            "ready" => ClusterState::Ready,
            "degraded" => ClusterState::Degraded,
            "failed" => ClusterState::Failed,
            "deleting" => ClusterState::Deleting,
            _ => return None,
        })
    }
}

/// A database cluster of one project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
    pub project: String,
    pub engine: Engine,
    pub version: String,
    pub state: ClusterState,
    pub location: String,
    pub created_at: DateTime<Utc>,
}

/// Who the caller is, as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub user_id: UserId,
    /// The project this request ran in (header `x-sovdb-project`, default `default`).
    pub project: String,
    pub roles: Vec<RoleBinding>,
}

/// Answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
    pub version: String,
}

/// Where a host is in its life, as the control plane last observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Being added: the agent is being installed or started.
    Bootstrapping,
    /// The agent answers its heartbeats.
    Ready,
    /// The agent stopped answering (host down, link cut, agent gone).
    Unreachable,
    /// No new database node is placed here; existing ones keep running.
    Draining,
    /// Being removed.
    Removing,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Bootstrapping => "bootstrapping",
            HostStatus::Ready => "ready",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Draining => "draining",
            HostStatus::Removing => "removing",
        }
    }

    pub fn parse(s: &str) -> Option<HostStatus> {
        Some(match s {
            "bootstrapping" => HostStatus::Bootstrapping,
            "ready" => HostStatus::Ready,
            "unreachable" => HostStatus::Unreachable,
            "draining" => HostStatus::Draining,
            "removing" => HostStatus::Removing,
            _ => return None,
        })
    }
}

/// How the control plane reaches a host of an `ssh` location before its agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SshAccess {
    pub user: String,
    pub port: u16,
    /// The host's public key (`type base64`), trusted on first use or pinned at `host add`;
    /// a host that later presents another key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// SHA-256 fingerprint of `host_key`, as `ssh-keygen -l` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

/// A machine in a location, with sovdb's agent on it. Everything sovdb keeps on the host
/// lives under `base_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub id: HostId,
    pub name: String,
    pub location: String,
    /// The address the agent is reached at (and SSH, for `ssh` locations).
    pub address: String,
    pub agent_port: u16,
    pub base_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub labels: Labels,
    pub status: HostStatus,
    /// Why the host is in its status, when that needs saying (the last heartbeat error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
    /// What the agent reported about the machine (OS, CPUs, memory, disks, addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub facts: Option<serde_json::Value>,
    /// When the agent last answered a heartbeat (kept to within 10 s while the host stays
    /// ready; a change of status is written at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/hosts`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCreate {
    /// A DNS label, unique in the installation.
    pub name: String,
    /// The location the host belongs to.
    pub location: String,
    /// IP address or DNS name the control plane reaches the host at.
    pub address: String,
    /// SSH user (`ssh` locations; default `root`).
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// SSH port (`ssh` locations; default 22).
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// The SSH private key (OpenSSH format) sovdb logs in with. Kept encrypted at rest,
    /// never returned.
    #[serde(default)]
    pub ssh_private_key: Option<String>,
    /// Pin the host's SSH public key (`type base64`) instead of trusting it on first use.
    #[serde(default)]
    pub ssh_host_key: Option<String>,
    /// The TCP port the agent listens on (default 7450).
    #[serde(default)]
    pub agent_port: Option<u16>,
    /// The zone; defaults to the location's.
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Where everything sovdb puts on the host lives (default `/var/lib/sovdb`).
    #[serde(default)]
    pub base_dir: Option<String>,
}

impl std::fmt::Debug for HostCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCreate")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("address", &self.address)
            .field("ssh_user", &self.ssh_user)
            .field("ssh_port", &self.ssh_port)
            .field("ssh_private_key", &self.ssh_private_key.as_ref().map(|_| "<redacted>"))
            .field("ssh_host_key", &self.ssh_host_key)
            .field("agent_port", &self.agent_port)
            .field("zone", &self.zone)
            .field("labels", &self.labels)
            .field("base_dir", &self.base_dir)
            .finish()
    }
}

/// Answer of `POST /api/v1/admin/master-key/rotate`: which key seals from now on, and
/// what was sealed again under it. Key IDs name keys without revealing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MasterKeyRotation {
    pub key_id: String,
    pub previous_key_id: String,
    /// Stored secrets (database passwords, backup passphrases, S3 keys) re-sealed.
    pub secrets: u64,
    /// Hosts' SSH keys re-sealed.
    pub host_keys: u64,
    /// Whether the CA's key was re-sealed (it is, once the CA exists).
    pub ca_key: bool,
    /// Where the replaced key is kept (it opens values sealed before the rotation that a
    /// backup of the store may hold); delete it once no such backup is needed.
    pub previous_key_file: String,
}

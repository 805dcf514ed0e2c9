//! Clusters as a user creates, reads and connects to them, and the spec the control plane
//! keeps for each.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;
use crate::resources::{Cluster, Labels};

/// How members must be spread over the location's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Every member in a different zone.
    Zone,
    /// Every member on a different host.
    Host,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::Zone => "zone",
            Spread::Host => "host",
        }
    }
}

/// Body of `POST /api/v1/clusters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreate {
    /// A DNS label, unique in the project.
    pub name: String,
    /// `postgres`.
    pub engine: String,
    /// Major version; `15` (the default) is the one Debian 12 ships.
    #[serde(default)]
    pub version: Option<String>,
    /// How many PostgreSQL instances: one primary and `replicas - 1` standbys. Default 1.
    #[serde(default)]
    pub replicas: Option<i64>,
    /// Synchronous replication: no acknowledged commit is lost on failover.
    #[serde(default)]
    pub sync: bool,
    /// Default: the installation's default location (`local` on a fresh install).
    #[serde(default)]
    pub location: Option<String>,
    /// A hard spread rule. Without one, members are spread over as many zones and hosts
    /// as the location has, and may share a host when it has too few.
    #[serde(default)]
    pub spread: Option<Spread>,
    /// Only hosts carrying every one of these labels.
    #[serde(default)]
    pub require_labels: Labels,
    /// The application database; default `app`.
    #[serde(default)]
    pub db: Option<String>,
    /// The application user (owner of the database); default `app`.
    #[serde(default)]
    pub user: Option<String>,
    /// PostgreSQL parameters, validated before anything is created.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// A PgBouncer on every member, in front of the read-write route.
    #[serde(default)]
    pub pooler: bool,
    /// The repository the cluster archives its WAL and backs up into (default: the
    /// location's default repository of the project, if one is set).
    #[serde(default)]
    pub backup_repo: Option<String>,
}

/// What the control plane keeps as a cluster's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub replicas: u32,
    pub sync: bool,
    pub spread: Option<Spread>,
    pub require_labels: Labels,
    pub database: String,
    pub user: String,
    pub params: BTreeMap<String, String>,
    pub pooler: bool,
    /// The repository it archives and backs up into.
    #[serde(default)]
    pub backup_repo: Option<RepoId>,
    /// Scheduled backups, retention and drills.
    #[serde(default)]
    pub backup_policy: crate::BackupPolicy,
    /// The client networks (canonical CIDRs) allowed to connect. `None` (clusters made
    /// before allow-lists existed): the default rule, the location's networks, derived
    /// from its hosts' addresses whenever the configuration is written. A new cluster
    /// gets that default written out when it is created.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// What a member is, as Patroni last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Primary,
    Replica,
}

/// One PostgreSQL instance of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterMember {
    pub name: String,
    pub host: String,
    /// `address:port` of PostgreSQL.
    pub address: String,
    /// Absent when no member's Patroni answered.
    pub role: Option<MemberRole>,
    /// A synchronous standby (with `--sync`).
    pub sync: bool,
    /// Patroni's state: `running`, `streaming`, `starting`, `stopped`, … or `unknown`.
    pub state: String,
    pub timeline: Option<i64>,
    /// How far this replica is behind the primary, in bytes of WAL.
    pub lag_bytes: Option<i64>,
}

/// Where clients connect (`host:port`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterEndpoints {
    /// HAProxy on every member, routing to the primary.
    pub read_write: Vec<String>,
    /// HAProxy on every member, routing to replicas (the primary when none is up).
    pub read_only: Vec<String>,
    /// PgBouncer on every member (with `--pooler`), in front of the read-write route.
    pub pooler: Vec<String>,
    /// Every member's PostgreSQL.
    pub members: Vec<String>,
}

/// Answer of `GET /api/v1/clusters/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterDetail {
    #[serde(flatten)]
    pub cluster: Cluster,
    pub replicas: u32,
    pub sync: bool,
    pub pooler: bool,
    pub database: String,
    pub user: String,
    pub params: BTreeMap<String, String>,
    /// The client networks (CIDRs) allowed to connect, besides loopback and the members
    /// themselves, which always are.
    pub allow: Vec<String>,
    pub members: Vec<ClusterMember>,
    pub endpoints: ClusterEndpoints,
    /// Why the cluster is degraded or failed, or what could not be observed.
    pub status_message: Option<String>,
}

/// Answer of `GET /api/v1/clusters/{name}/connection`: a secret read, audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterConnection {
    /// A libpq URI with every member and `target_session_attrs`.
    pub uri: String,
    pub user: String,
    pub password: String,
    pub database: String,
    /// The installation CA (PEM) that signed the servers' certificates: use it with
    /// `sslmode=verify-full`.
    pub ca_pem: String,
    pub endpoints: ClusterEndpoints,
}

/// Body of `POST /api/v1/clusters/{name}/switchover` and `/failover`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSwitchover {
    /// The member to promote. A switchover without one lets Patroni choose (the
    /// synchronous standby with `--sync`); a failover without one takes the synchronous
    /// standby, or else the running replica that is least behind.
    #[serde(default)]
    pub to: Option<String>,
}

/// Body of `POST /api/v1/clusters/{name}/scale`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterScale {
    /// The new number of PostgreSQL instances (1 to 9). Scaling down never removes the
    /// primary.
    pub replicas: i64,
}

/// Body of `POST /api/v1/clusters/{name}/restart`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRestart {}

/// Body of `POST /api/v1/clusters/{name}/params`: a rolling change of PostgreSQL
/// parameters through Patroni.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSetParams {
    /// Parameters to set, validated before anything changes.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Parameters to take back to their default.
    #[serde(default)]
    pub reset: Vec<String>,
}

/// Body of `POST /api/v1/clusters/{name}/allow-list`: networks to add to and remove
/// from the cluster's allow-list, applied to every member without a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterAllowList {
    /// CIDRs (IPv4 or IPv6; a bare address is one host) to allow. `0.0.0.0/0` and
    /// `::/0` (everyone) are accepted when given explicitly.
    #[serde(default)]
    pub allow: Vec<String>,
    /// CIDRs to take off the list (exactly as listed).
    #[serde(default)]
    pub deny: Vec<String>,
}

/// One line of a cluster member's log, as `GET /clusters/{name}/logs` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// The member (`db-1`).
    pub member: String,
    /// `postgresql` or `patroni`; `sovdb` for what the control plane says about the
    /// stream itself (a member whose agent does not answer).
    pub source: String,
    /// The line as the program wrote it, without its line end.
    pub line: String,
}

/// Something that happened to a cluster, a host or the installation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: EventId,
    pub at: DateTime<Utc>,
    pub project: Option<String>,
    /// `cluster/<name>`, `host/<name>`, `location/<name>`.
    pub target: String,
    /// What happened: one of the kinds listed in `docs/events.md` (`failover`,
    /// `switchover`, `restart`, `backup`, `drill-failed`, `host-unreachable`, `alert`, …).
    pub kind: String,
    pub message: String,
}

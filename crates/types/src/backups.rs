//! Backup repositories, backups and restores, as a user creates and reads them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;

/// Where a repository keeps its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    /// A directory on one host of the location.
    Posix,
    /// A bucket of any S3-compatible storage.
    S3,
}

impl RepoType {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoType::Posix => "posix",
            RepoType::S3 => "s3",
        }
    }

    pub fn parse(s: &str) -> Option<RepoType> {
        match s {
            "posix" => Some(RepoType::Posix),
            "s3" => Some(RepoType::S3),
            _ => None,
        }
    }
}

/// How an S3 bucket is addressed: `host` (`bucket.endpoint`, AWS's default) or `path`
/// (`endpoint/bucket`, what most self-hosted S3 servers want).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UriStyle {
    #[default]
    Host,
    Path,
}

/// Body of `POST /api/v1/repos`. `Debug` does not show the S3 keys.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoCreate {
    /// A DNS label, unique in the project.
    pub name: String,
    /// Default: the installation's default location.
    #[serde(default)]
    pub location: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<RepoType>,
    /// posix: an absolute directory on the host (created, owned by the database user;
    /// it must be empty or absent). s3: the prefix in the bucket (default `/sovdb`).
    #[serde(default)]
    pub path: Option<String>,
    /// posix: the host that holds the directory; default the location's only host.
    #[serde(default)]
    pub host: Option<String>,
    /// s3: `host[:port]` of the S3 endpoint (HTTPS).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub uri_style: Option<UriStyle>,
    /// s3: the CA (PEM) that signed the endpoint's certificate; default the system's CAs.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// s3: stored encrypted as a secret, never returned.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// s3: stored encrypted as a secret, never returned.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Encrypt the repository (aes-256-cbc with a generated passphrase kept as a
    /// secret). Default true.
    #[serde(default)]
    pub encrypt: Option<bool>,
    /// Make it the location's default repository for the project's new clusters.
    #[serde(default)]
    pub default: bool,
}

impl std::fmt::Debug for RepoCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("RepoCreate")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("uri_style", &self.uri_style)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| format!("[{} bytes]", c.len())))
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("encrypt", &self.encrypt)
            .field("default", &self.default)
            .finish()
    }
}

/// A backup repository (secrets are never part of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Repo {
    pub id: RepoId,
    pub name: String,
    pub project: String,
    pub location: String,
    #[serde(rename = "type")]
    pub kind: RepoType,
    /// posix: the directory; s3: the prefix in the bucket.
    pub path: String,
    /// posix: the host that holds it.
    pub host: Option<String>,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub uri_style: Option<UriStyle>,
    pub encrypted: bool,
    /// The location's default repository for the project's new clusters.
    pub default: bool,
    /// Clusters that archive and back up into it.
    pub clusters: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The kind of a backup (pgBackRest's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

/// One backup in a repository, as pgBackRest reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backup {
    /// pgBackRest's label (`20261121-101500F`, `…F_20261121-102000I`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: BackupType,
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    /// The database's size when backed up, in bytes.
    pub size: u64,
    /// What the backup takes in the repository (compressed), in bytes.
    pub repo_size: u64,
    /// The first and last WAL segment it needs.
    pub wal_start: String,
    pub wal_stop: String,
    /// The backup it builds on (diff and incr).
    pub prior: Option<String>,
    pub repository: String,
    /// pgBackRest found errors (bad page checksums) while copying.
    pub error: bool,
}

/// Body of `POST /api/v1/clusters/{name}/backups`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupCreate {
    /// Default `incr` (a `full` when the repository has none yet).
    #[serde(default, rename = "type")]
    pub kind: Option<BackupType>,
}

/// Body of `POST /api/v1/clusters/{name}/restore`: a new cluster from a backup of this
/// one. At most one of `to_time`, `to_lsn` and `latest` (the default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRestore {
    /// The new cluster's name.
    #[serde(rename = "as")]
    pub name: String,
    #[serde(default)]
    pub to_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub to_lsn: Option<String>,
    #[serde(default)]
    pub latest: bool,
    /// Placement of the new cluster (default: the source's location and rules).
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub replicas: Option<i64>,
    #[serde(default)]
    pub spread: Option<crate::Spread>,
    #[serde(default)]
    pub require_labels: crate::Labels,
    /// The new cluster's repository (default: the source's).
    #[serde(default)]
    pub backup_repo: Option<String>,
}

/// A cluster's backup schedule and retention (`PUT /api/v1/clusters/{name}/backup-policy`).
/// Schedules are cron patterns of five fields (minute hour day month weekday) in UTC;
/// the control plane starts each run as an operation, and a run missed while it was down
/// runs once when it is back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// When to back up: incremental backups when `full_schedule` is set, else full ones.
    #[serde(default)]
    pub schedule: Option<String>,
    /// When to take a full backup.
    #[serde(default)]
    pub full_schedule: Option<String>,
    /// How many full backups to keep (with the backups and WAL that depend on them).
    #[serde(default)]
    pub retention_full: Option<u32>,
    /// When to run a restore drill (`backup verify`).
    #[serde(default)]
    pub verify_schedule: Option<String>,
}

/// A cluster's backup policy and when its schedules next run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupPolicyView {
    pub cluster: String,
    #[serde(flatten)]
    pub policy: BackupPolicy,
    /// The number of full backups kept (the policy's, else the default).
    pub retention_full_kept: u32,
    pub next_backup: Option<DateTime<Utc>>,
    pub next_full: Option<DateTime<Utc>>,
    pub next_verify: Option<DateTime<Utc>>,
}

/// Body of `POST /api/v1/clusters/{name}/verify`: a restore drill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerify {}

/// A backup set kept after its cluster was deleted: what `cluster restore` can still
/// restore by the cluster's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetainedBackups {
    /// The deleted cluster's name and ID (the ID is pgBackRest's stanza).
    pub cluster: String,
    pub cluster_id: String,
    pub repository: String,
    pub deleted_at: DateTime<Utc>,
}

/// A size for people: `812 B`, `23.0 MiB`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::human_bytes(812), "812 B");
        assert_eq!(super::human_bytes(23 * 1024 * 1024), "23.0 MiB");
        assert_eq!(super::human_bytes(1610612736), "1.5 GiB");
    }
}

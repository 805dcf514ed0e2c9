//! The state store: the only code that touches SQL.
//!
//! One trait ([`Store`], with its transaction [`Tx`]) and two implementations: SQLite (the
//! embedded default) and PostgreSQL (for several control-plane replicas). Both are compiled
//! from the same source, `sql.rs`, because the schema and queries are written in the SQL
//! both engines accept; each backend module only says how to connect, how to begin a
//! transaction and how to serialise writers to the audit chain.
//!
//! Guarantees:
//! - every change goes through a [`Tx`]: nothing is visible until `commit`, and a dropped
//!   transaction rolls back, so a crash never leaves a half-written change;
//! - migrations are versioned, each applied in its own transaction, and a store written by
//!   a newer sovdb is refused rather than misread;
//! - the audit log is append-only through this API and hash-chained (see
//!   `sovdb_types::audit`).
//!
//! [`conformance`] is the test suite every implementation must pass.

use std::sync::Arc;

use async_trait::async_trait;
use sovdb_types::audit::{AuditEntry, AuditHead, AuditRecord};
use sovdb_types::*;

pub mod conformance;
mod migrations;
mod postgres;
mod sqlite;

pub use migrations::SCHEMA_VERSION;

/// Which implementation a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write: the thing already exists.
    #[error("already exists ({0})")]
    Conflict(String),
    /// A stored value could not be read back: the store was edited by hand or is damaged.
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The database said no.
    #[error("store error")]
    Backend(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_string()),
            _ => StoreError::Backend(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store could not be opened. Each message names the cause and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store URL {0:?} is not understood: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB")]
    BadUrl(String),
    #[error("cannot open the store at {url}: {cause}; check that the database is running and the URL, user and password are right")]
    Unreachable { url: String, cause: String },
    #[error("the store file {path} is not a readable SQLite database ({cause}); restore it from a backup, or move it away to start with an empty store")]
    CorruptFile { path: String, cause: String },
    #[error(
        "the store at {url} has schema version {found}, newer than this sovdb understands ({known}); run a newer sovdb"
    )]
    TooNew { url: String, found: i64, known: i64 },
    #[error("cannot migrate the store at {url}: {cause}")]
    Migration { url: String, cause: String },
}

/// Opens (creating if needed) and migrates the store at `url`: `sqlite://PATH` or
/// `postgres://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(OpenError::BadUrl(url.to_string()));
        }
        Ok(Arc::new(sqlite::SqlStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::SqlStore::open(url).await?))
    } else {
        Err(OpenError::BadUrl(redact_url(url)))
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// A state store. Cheap to share (`Arc<dyn Store>`); all reads and writes go through a
/// transaction from [`Store::read`] or [`Store::write`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// A transaction for reads: a consistent snapshot that never waits for writers.
    async fn read(&self) -> Result<Box<dyn Tx>>;

    /// A transaction that will write. Writers are serialised where the backend needs it
    /// (SQLite takes its write lock up front, so two writers never deadlock).
    async fn write(&self) -> Result<Box<dyn Tx>>;

    /// Closes every connection after in-flight transactions end.
    async fn close(&self);
}

/// Which table of metric samples: as taken, or rolled up per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricTable {
    Raw,
    Minute,
}

/// One stored metric sample: every value of one target at one moment, encoded by the
/// application (see `migrations/0008_metrics.sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// `host/<host id>` or `member/<cluster id>/<member name>`.
    pub target: String,
    /// The moment (raw) or the start of the minute (rollups), to the millisecond.
    pub at: chrono::DateTime<chrono::Utc>,
    pub data: String,
}

/// A user's alert rule as stored; `spec` is JSON the application owns.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRuleRecord {
    pub project_id: ProjectId,
    pub name: String,
    pub spec: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A project's settings of a default rule, where they differ from the code's; `spec` is
/// JSON the application owns.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRuleSettingsRecord {
    pub project_id: ProjectId,
    /// The default rule's name.
    pub rule: String,
    pub spec: String,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A notification channel as stored: its settings without its secrets (those are in the
/// secrets, under the owner `channel/<id>`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChannelRecord {
    pub id: ChannelId,
    pub project_id: ProjectId,
    pub name: String,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    pub spec: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A silence (a maintenance window when it starts later): matching alerts notify no one.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSilenceRecord {
    pub id: SilenceId,
    pub project_id: ProjectId,
    /// Only this cluster's alerts; `None`: any.
    pub cluster: Option<String>,
    /// Only this rule's alerts; `None`: any.
    pub rule: Option<String>,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub comment: String,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// One alert: an episode of a rule's condition on one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub id: AlertId,
    pub project_id: ProjectId,
    /// The rule and the subject (`rule|subject`): one open alert per project and key.
    pub key: String,
    pub rule: String,
    pub cluster: Option<String>,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// JSON the application owns (subject, value, threshold, message).
    pub data: String,
    pub pending_since: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One notification of an alert's transition to one channel, and how sending it went.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub project_id: ProjectId,
    pub alert_id: AlertId,
    pub channel_id: ChannelId,
    pub channel: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The body, as sent at every attempt.
    pub payload: String,
    pub attempts: i64,
    /// When the next attempt is due (or, while one runs, when its claim lapses).
    pub next_at: chrono::DateTime<chrono::Utc>,
    /// What the last attempt got (`HTTP 200`, an error).
    pub last_result: Option<String>,
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub gave_up: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Filters of the audit log listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub actor: Option<String>,
    /// Exact `kind/name`, or a `kind/` prefix.
    pub target: Option<String>,
}

/// A stored secret, sealed with the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub owner: String,
    pub name: String,
    pub sealed: String,
}

/// A cluster as stored: the API view plus what it refers to and its full spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRecord {
    pub id: ClusterId,
    pub project_id: ProjectId,
    pub name: String,
    pub engine: Engine,
    pub version: String,
    pub state: ClusterState,
    pub location_id: LocationId,
    pub spec: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The backups of a deleted cluster, kept in its repository: the cluster as it was
/// (`state` as when deleted), the repository (its name joined on read) and when.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedRecord {
    pub cluster: ClusterRecord,
    pub repo_id: RepoId,
    /// The repository's name, as read (joined); `retained_create` uses `repo_id`.
    pub repo: String,
    pub deleted_at: chrono::DateTime<chrono::Utc>,
}

/// A backup repository as stored. Its secrets (cipher passphrase, S3 keys) are not part of
/// it: they are in the secrets under the owner `repo/<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoRecord {
    pub id: RepoId,
    pub project_id: ProjectId,
    pub name: String,
    pub location_id: LocationId,
    /// The location's name, as read (joined); `repo_create` uses `location_id`.
    pub location: String,
    /// posix: the host that holds the directory.
    pub host_id: Option<HostId>,
    /// The host's name, as read (joined); `repo_create` uses `host_id`.
    pub host: Option<String>,
    pub kind: RepoType,
    pub spec: RepoSpec,
    /// Whether pgBackRest encrypts the repository (with the `cipher-pass` secret).
    pub encrypted: bool,
    /// The default repository of its project in its location.
    pub is_default: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Where a repository's files are, kept as JSON in its row.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoSpec {
    /// posix: the directory on the host; s3: the prefix in the bucket.
    pub path: String,
    /// s3: `host` or `host:port`, reached over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_style: Option<UriStyle>,
    /// s3: the CA (PEM) that signed the endpoint's certificate; none: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// A host as stored: the API view plus its location's ID and the sealed SSH key.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    pub host: Host,
    pub location_id: LocationId,
    /// The SSH private key sealed with the master key (see `sovdb-pki`); never in clear.
    pub ssh_key_sealed: Option<String>,
}

/// A member of a cluster as stored: its host and, in `spec`, its ports and directories
/// (the engine driver's business).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub cluster_id: ClusterId,
    pub name: String,
    pub host_id: HostId,
    pub spec: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A TCP port given out on a host. `owner` is a path (`cluster/<id>/<member>/postgres`)
/// so everything one cluster or member holds can be released by prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAllocation {
    pub host_id: HostId,
    pub port: u16,
    pub owner: String,
}

/// One etcd member of a location's DCS.
#[derive(Debug, Clone, PartialEq)]
pub struct DcsMember {
    pub location_id: LocationId,
    pub name: String,
    pub host_id: HostId,
    pub client_port: u16,
    pub peer_port: u16,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An event as written: the API view's project is its name, this is its ID.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub at: chrono::DateTime<chrono::Utc>,
    pub project_id: Option<ProjectId>,
    pub target: String,
    pub kind: String,
    pub message: String,
}

/// Which events `event_query` answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this project's events; `None`: every project's.
    pub project: Option<ProjectId>,
    /// With `project`, also the installation's own events (no project: hosts, locations).
    pub installation: bool,
    /// Exact, or every target of a kind with a `kind/` prefix.
    pub target: Option<String>,
    /// Only events at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new operation and the names of its steps, as the app creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOperation {
    pub id: OperationId,
    pub project_id: Option<ProjectId>,
    pub kind: String,
    pub target: String,
    pub params: serde_json::Value,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub steps: Vec<String>,
}

/// What a worker needs to run an operation it claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRun {
    pub id: OperationId,
    pub kind: String,
    pub params: serde_json::Value,
    pub state: OperationState,
    pub cancel_requested: bool,
    pub error: Option<StepError>,
    pub steps: Vec<StepRun>,
}

/// A step as a worker sees it: with its persisted output.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    pub index: i64,
    pub name: String,
    pub state: StepState,
    pub attempts: i64,
    pub output: Option<serde_json::Value>,
    /// When the step's first attempt started (`None` before it ever ran); retries and
    /// resumes keep it, so a wait's deadline counts from here.
    pub first_started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A change to one step, written only if the writer still holds the operation's fence.
/// Undoing a step keeps its error (why it failed stays visible after the undo).
#[derive(Debug, Clone, PartialEq)]
pub struct StepChange<'a> {
    pub state: StepState,
    /// Count one more attempt (set when the step starts).
    pub new_attempt: bool,
    pub output: Option<&'a serde_json::Value>,
    pub error: Option<&'a StepError>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A change to an operation, written only if the writer still holds its fence.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationChange<'a> {
    pub state: OperationState,
    pub error: Option<&'a StepError>,
    /// Not before this time may a worker claim it again (retry backoff).
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    /// Give up the lease, so that any worker may claim it (at `next_run_at`).
    pub release: bool,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One transaction. Dropping it without [`Tx::commit`] rolls everything back.
///
/// Methods are named resource-then-verb. `*_get` answers `None` for a missing object;
/// `*_create` fails with [`StoreError::Conflict`] when the name is taken.
#[async_trait]
pub trait Tx: Send {
    async fn commit(self: Box<Self>) -> Result<()>;

    async fn meta_get(&mut self, key: &str) -> Result<Option<String>>;
    async fn meta_set(&mut self, key: &str, value: &str) -> Result<()>;
    /// Sets `key` to `new` only if it is `old` now (`None`: absent); whether it did. Of
    /// two writers that read the same value, one wins.
    async fn meta_swap(&mut self, key: &str, old: Option<&str>, new: &str) -> Result<bool>;
    /// Removes `key`; whether it was there.
    async fn meta_delete(&mut self, key: &str) -> Result<bool>;

    async fn project_create(&mut self, p: &Project) -> Result<()>;
    async fn project_get(&mut self, name: &str) -> Result<Option<Project>>;
    async fn project_list(&mut self, page: &PageRequest) -> Result<Page<Project>>;
    async fn project_get_by_id(&mut self, id: ProjectId) -> Result<Option<Project>>;

    async fn user_create(&mut self, u: &User) -> Result<()>;
    async fn user_get(&mut self, id: UserId) -> Result<Option<User>>;
    async fn user_get_by_name(&mut self, name: &str) -> Result<Option<User>>;
    /// By name; with `project`, only the users holding a role in it.
    async fn user_list(&mut self, project: Option<ProjectId>, page: &PageRequest) -> Result<Page<User>>;
    /// `false` when the user does not exist.
    async fn user_set_disabled(&mut self, id: UserId, disabled: bool) -> Result<bool>;
    /// Deletes the user with their tokens and role bindings; false if there was none.
    async fn user_delete(&mut self, id: UserId) -> Result<bool>;
    /// Sets (or with `None` removes) the user's password hash; `false` when the user does
    /// not exist.
    async fn user_password_set(&mut self, id: UserId, hash: Option<&str>) -> Result<bool>;
    /// The user's password hash; `None` for a missing user or one without a password.
    async fn user_password_get(&mut self, id: UserId) -> Result<Option<String>>;
    async fn role_binding_create(&mut self, b: &RoleBinding) -> Result<()>;
    async fn role_binding_list(&mut self, user: UserId) -> Result<Vec<RoleBinding>>;
    /// `false` when the user did not hold that role.
    async fn role_binding_delete(&mut self, b: &RoleBinding) -> Result<bool>;
    /// Users who hold the installation-wide admin role and are not disabled.
    async fn role_binding_count_admins(&mut self) -> Result<i64>;

    async fn token_create(&mut self, t: &TokenRecord) -> Result<()>;
    async fn token_get_by_secret(&mut self, secret_sha256: &str) -> Result<Option<TokenRecord>>;
    async fn token_get(&mut self, id: TokenId) -> Result<Option<TokenRecord>>;
    /// The user's tokens, oldest first (by ID), revoked and expired ones included.
    async fn token_list(&mut self, user: UserId, page: &PageRequest) -> Result<Page<TokenRecord>>;
    /// The user's tokens of that name, oldest first.
    async fn token_find(&mut self, user: UserId, name: &str) -> Result<Vec<TokenRecord>>;
    /// `false` when the token does not exist.
    async fn token_revoke(&mut self, id: TokenId) -> Result<bool>;

    async fn location_create(&mut self, l: &Location) -> Result<()>;
    async fn location_get(&mut self, name: &str) -> Result<Option<Location>>;
    async fn location_list(&mut self, page: &PageRequest) -> Result<Page<Location>>;
    /// Deletes the location; `false` when it did not exist.
    async fn location_delete(&mut self, id: LocationId) -> Result<bool>;

    async fn cluster_create(&mut self, c: &ClusterRecord) -> Result<()>;
    async fn cluster_get(&mut self, project: ProjectId, name: &str) -> Result<Option<Cluster>>;
    async fn cluster_list(&mut self, project: ProjectId, page: &PageRequest) -> Result<Page<Cluster>>;
    async fn cluster_count_in_location(&mut self, location: LocationId) -> Result<i64>;
    async fn cluster_record(&mut self, project: ProjectId, name: &str) -> Result<Option<ClusterRecord>>;
    async fn cluster_record_by_id(&mut self, id: ClusterId) -> Result<Option<ClusterRecord>>;
    /// Every project's clusters, by ID, a page at a time (`after` an ID): for the loops
    /// that observe them.
    async fn cluster_records_all(&mut self, after: Option<ClusterId>, limit: i64) -> Result<Vec<ClusterRecord>>;
    /// `false` when the cluster does not exist.
    async fn cluster_set_state(&mut self, id: ClusterId, state: ClusterState) -> Result<bool>;
    async fn cluster_set_spec(&mut self, id: ClusterId, spec: &serde_json::Value) -> Result<bool>;
    /// Deletes the cluster and its members; `false` when it did not exist.
    async fn cluster_delete(&mut self, id: ClusterId) -> Result<bool>;

    /// Fails with [`StoreError::Conflict`] when the project has a repository of that name.
    /// A new default (`is_default`) first clears the old default of its project and
    /// location, in this transaction.
    async fn repo_create(&mut self, r: &RepoRecord) -> Result<()>;
    async fn repo_get(&mut self, project: ProjectId, name: &str) -> Result<Option<RepoRecord>>;
    async fn repo_get_by_id(&mut self, id: RepoId) -> Result<Option<RepoRecord>>;
    /// By name.
    async fn repo_list(&mut self, project: ProjectId, page: &PageRequest) -> Result<Page<RepoRecord>>;
    /// The project's default repository in the location, if it has one.
    async fn repo_default(&mut self, project: ProjectId, location: LocationId) -> Result<Option<RepoRecord>>;
    /// Every project's repositories on the host, by project and name.
    async fn repo_list_on_host(&mut self, host: HostId) -> Result<Vec<RepoRecord>>;
    /// Every project's repositories in the location.
    async fn repo_count_in_location(&mut self, location: LocationId) -> Result<i64>;
    /// Deletes the repository (not its secrets); `false` when it did not exist.
    async fn repo_delete(&mut self, id: RepoId) -> Result<bool>;

    /// Keeps a deleted cluster's backups on record; nothing happens when they are already.
    async fn retained_create(&mut self, r: &RetainedRecord) -> Result<()>;
    /// The project's kept backups, newest deletion first.
    async fn retained_list(&mut self, project: ProjectId) -> Result<Vec<RetainedRecord>>;
    /// The newest deleted cluster of that name in the project.
    async fn retained_get(&mut self, project: ProjectId, name: &str) -> Result<Option<RetainedRecord>>;
    async fn retained_delete(&mut self, cluster: ClusterId) -> Result<bool>;
    /// Deleted clusters whose backups are in the repository.
    async fn retained_count_in_repo(&mut self, repo: RepoId) -> Result<i64>;

    /// Fails with [`StoreError::Conflict`] when the cluster already has a member of that name.
    async fn member_create(&mut self, m: &MemberRecord) -> Result<()>;
    /// By name.
    async fn member_list(&mut self, cluster: ClusterId) -> Result<Vec<MemberRecord>>;
    async fn member_delete(&mut self, cluster: ClusterId, name: &str) -> Result<bool>;
    /// Members of any cluster on the host.
    async fn member_count_on_host(&mut self, host: HostId) -> Result<i64>;

    /// `false` (and nothing written) when the port is already given out on that host.
    async fn port_allocate(&mut self, a: &PortAllocation) -> Result<bool>;
    /// Every port given out on the host, by port.
    async fn port_list(&mut self, host: HostId) -> Result<Vec<PortAllocation>>;
    /// Ports whose owner is `owner` or under `owner/`, by owner.
    async fn port_list_owned(&mut self, owner: &str) -> Result<Vec<PortAllocation>>;
    /// Releases the ports whose owner is `owner` or under `owner/`; returns how many.
    async fn port_release(&mut self, owner: &str) -> Result<u64>;

    /// Keeps the first value written: `false` (and nothing written) when one exists.
    async fn secret_put(
        &mut self,
        owner: &str,
        name: &str,
        sealed: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;
    async fn secret_get(&mut self, owner: &str, name: &str) -> Result<Option<String>>;
    /// Every owner's secrets, sealed, by owner and name, a page at a time (`after` an
    /// `(owner, name)`): for re-sealing them all under a new master key.
    async fn secret_list_all(&mut self, after: Option<(&str, &str)>, limit: i64) -> Result<Vec<SecretRecord>>;
    /// Replaces a secret's sealed value (the same plaintext sealed anew, or a renewed
    /// certificate); `false` when it does not exist.
    async fn secret_reseal(&mut self, owner: &str, name: &str, sealed: &str) -> Result<bool>;
    /// Deletes the secrets whose owner is `owner` or under `owner/`; returns how many.
    async fn secret_delete(&mut self, owner: &str) -> Result<u64>;

    /// `false` (and nothing written) when the location already has a member of that name.
    async fn dcs_member_create(&mut self, m: &DcsMember) -> Result<bool>;
    /// By name.
    async fn dcs_member_list(&mut self, location: LocationId) -> Result<Vec<DcsMember>>;
    async fn dcs_member_count_on_host(&mut self, host: HostId) -> Result<i64>;

    async fn event_append(&mut self, e: &NewEvent) -> Result<()>;
    /// Oldest first. `project` `None`: every project's and the installation's; `target`
    /// is exact or a `kind/` prefix.
    async fn event_list(
        &mut self,
        project: Option<ProjectId>,
        target: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Event>>;

    /// Oldest first (by ID, which is time-ordered), as `filter` says.
    async fn event_query(&mut self, filter: &EventFilter, page: &PageRequest) -> Result<Page<Event>>;

    async fn host_create(&mut self, h: &HostRecord) -> Result<()>;
    async fn host_get(&mut self, name: &str) -> Result<Option<HostRecord>>;
    async fn host_get_by_id(&mut self, id: HostId) -> Result<Option<HostRecord>>;
    /// By name; `location` `None` lists every location's.
    async fn host_list(&mut self, location: Option<LocationId>, page: &PageRequest) -> Result<Page<HostRecord>>;
    async fn host_count_in_location(&mut self, location: LocationId) -> Result<i64>;
    /// `false` when the host does not exist.
    async fn host_set_status(&mut self, id: HostId, status: HostStatus, message: Option<&str>) -> Result<bool>;
    /// Records a heartbeat: the agent answered at `at` (and reported `facts`, when given).
    async fn host_observed(
        &mut self,
        id: HostId,
        at: chrono::DateTime<chrono::Utc>,
        facts: Option<&serde_json::Value>,
    ) -> Result<bool>;
    /// Replaces the sealed SSH key (same key, sealed anew); `false` when the host does not
    /// exist.
    async fn host_set_ssh_key_sealed(&mut self, id: HostId, sealed: &str) -> Result<bool>;
    async fn host_set_ssh_host_key(&mut self, id: HostId, key: &str, fingerprint: &str) -> Result<bool>;
    /// `false` when the host did not exist.
    async fn host_delete(&mut self, id: HostId) -> Result<bool>;

    async fn operation_create(&mut self, op: &NewOperation) -> Result<()>;
    async fn operation_get(&mut self, id: OperationId) -> Result<Option<Operation>>;
    /// Newest first; `project` `None` lists every project's and the installation's.
    async fn operation_list(&mut self, project: Option<ProjectId>, page: &PageRequest) -> Result<Page<Operation>>;
    /// Claims the oldest runnable operation: unfinished, due, with no live lease, and the
    /// oldest unfinished one of its target. Returns it with the fence the claim took.
    async fn operation_claim(
        &mut self,
        worker: &str,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<(OperationId, i64)>>;
    async fn operation_run(&mut self, id: OperationId) -> Result<Option<OperationRun>>;
    /// Whether an unfinished operation acts on `target` (`kind/name`).
    async fn operation_active_on(&mut self, target: &str) -> Result<bool>;
    /// Extends the lease; `false` when the fence moved on (another worker took over).
    async fn operation_renew(
        &mut self,
        id: OperationId,
        fence: i64,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;
    /// `false` when the fence moved on: nothing was written.
    async fn operation_change(&mut self, id: OperationId, fence: i64, change: &OperationChange<'_>) -> Result<bool>;
    /// `false` when the fence moved on: nothing was written.
    async fn operation_step_change(
        &mut self,
        id: OperationId,
        fence: i64,
        index: i64,
        change: &StepChange<'_>,
    ) -> Result<bool>;
    /// Records what step `index` observes now (see `OperationStep::progress`). `false`
    /// when the fence moved on: nothing was written.
    async fn operation_step_progress(
        &mut self,
        id: OperationId,
        fence: i64,
        index: i64,
        message: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;
    /// Gives back every lease `worker` holds, so they can be claimed at once (with a new
    /// fence). Only for a worker that knows its previous incarnation is dead: a restarted
    /// server on the same data directory. Returns how many were released.
    async fn operation_release_worker(&mut self, worker: &str) -> Result<u64>;
    /// Marks the operation for cancelling; returns its state, `None` when it doesn't exist.
    async fn operation_request_cancel(&mut self, id: OperationId) -> Result<Option<OperationState>>;

    /// Unfinished operations of that kind (any target, any project).
    async fn operation_count_unfinished(&mut self, kind: &str) -> Result<i64>;

    /// Appends `entry` to the audit chain and returns the record as stored. In the same
    /// transaction the chain's head (the new record's seq and hash) is recorded apart from
    /// the chain, in `meta` (see [`Tx::audit_head`]).
    /// Stores samples; a sample already stored (same target and moment) is kept as it
    /// was. Answers how many were new.
    async fn metric_insert(&mut self, table: MetricTable, rows: &[MetricRow]) -> Result<u64>;
    /// Stores samples, replacing any of the same target and moment.
    async fn metric_upsert(&mut self, table: MetricTable, rows: &[MetricRow]) -> Result<()>;
    /// The samples of the targets (all targets when `None`) with `from <= at < to`, by
    /// target then time.
    async fn metric_list(
        &mut self,
        table: MetricTable,
        targets: Option<&[String]>,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<MetricRow>>;
    /// Deletes samples older than `before`; answers how many.
    async fn metric_prune(&mut self, table: MetricTable, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;
    /// Where the control plane is in a host agent's buffer: its epoch and last sequence.
    async fn metric_cursor_get(&mut self, host: HostId) -> Result<Option<(String, i64)>>;
    async fn metric_cursor_set(&mut self, host: HostId, epoch: &str, seq: i64) -> Result<()>;

    /// A project's alert rules by name (every project's when `None`).
    async fn alert_rule_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertRuleRecord>>;
    /// [`StoreError::Conflict`] when the project has a rule of that name.
    async fn alert_rule_create(&mut self, r: &AlertRuleRecord) -> Result<()>;
    async fn alert_rule_delete(&mut self, project: ProjectId, name: &str) -> Result<bool>;
    /// A project's settings of default rules by rule (every project's when `None`).
    async fn alert_rule_settings_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertRuleSettingsRecord>>;
    /// Writes a project's settings of a default rule, replacing any it had.
    async fn alert_rule_settings_put(&mut self, s: &AlertRuleSettingsRecord) -> Result<()>;
    /// Forgets a project's settings of a default rule (back to the code's).
    async fn alert_rule_settings_delete(&mut self, project: ProjectId, rule: &str) -> Result<bool>;
    /// A project's channels by name (every project's when `None`).
    async fn alert_channel_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertChannelRecord>>;
    /// [`StoreError::Conflict`] when the project has a channel of that name.
    async fn alert_channel_create(&mut self, c: &AlertChannelRecord) -> Result<()>;
    async fn alert_channel_delete(&mut self, id: ChannelId) -> Result<bool>;
    /// A project's silences, oldest first (every project's when `None`).
    async fn alert_silence_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertSilenceRecord>>;
    async fn alert_silence_create(&mut self, s: &AlertSilenceRecord) -> Result<()>;
    async fn alert_silence_delete(&mut self, project: ProjectId, id: SilenceId) -> Result<bool>;
    /// Writes an alert, new or changed (by ID). [`StoreError::Conflict`] when another open
    /// alert of the same project and key exists.
    async fn alert_put(&mut self, a: &AlertRecord) -> Result<()>;
    /// Forgets an alert that never fired.
    async fn alert_delete(&mut self, id: AlertId) -> Result<bool>;
    async fn alert_get(&mut self, id: AlertId) -> Result<Option<AlertRecord>>;
    /// Every open (pending or firing) alert of every project.
    async fn alert_list_open(&mut self) -> Result<Vec<AlertRecord>>;
    /// A project's alerts by ID (oldest first); with `open`, only pending and firing ones.
    async fn alert_list(&mut self, project: ProjectId, open: bool, page: &PageRequest) -> Result<Page<AlertRecord>>;
    async fn delivery_create(&mut self, d: &DeliveryRecord) -> Result<()>;
    /// Deliveries neither done nor given up whose next attempt is due at `now`, oldest first.
    async fn delivery_due(&mut self, now: chrono::DateTime<chrono::Utc>, limit: i64) -> Result<Vec<DeliveryRecord>>;
    /// Moves a delivery's `next_at` from `from` to `to` (a claim): `false` when it was not
    /// at `from` any more (another sender took it, or it was done).
    async fn delivery_claim(
        &mut self,
        id: DeliveryId,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool>;
    /// Records an attempt: attempts, next_at, last_result, delivered_at, gave_up.
    async fn delivery_update(&mut self, d: &DeliveryRecord) -> Result<()>;
    /// A project's deliveries by ID (oldest first); only one alert's with `alert`.
    async fn delivery_list(
        &mut self,
        project: ProjectId,
        alert: Option<AlertId>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryRecord>>;
    /// The newest event of `target` in `project` whose kind is one of `kinds`.
    async fn event_latest(&mut self, project: ProjectId, target: &str, kinds: &[&str]) -> Result<Option<Event>>;

    async fn audit_append(&mut self, entry: &AuditEntry) -> Result<AuditRecord>;
    /// The head recorded by the last append: `None` before the first one (or when the
    /// record was removed).
    async fn audit_head(&mut self) -> Result<Option<AuditHead>>;
    /// Records in chain order (oldest first).
    async fn audit_list(&mut self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditRecord>>;
}

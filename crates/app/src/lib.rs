//! The application layer: the only place with business rules.
//!
//! Every public method takes the request's [`Ctx`] (who, in which project, from where),
//! validates its input, checks the caller may do it, and then reads or writes the store.
//! Every accepted change writes its desired state and its audit record in one store
//! transaction, so there is never a change without a record or a record without a change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sovdb_store::Store;
use sovdb_types::HostId;
use tokio::sync::Notify;

pub mod alerts;
mod api_cert;
mod audit;
mod auth;
mod backups;
mod bootstrap;
pub mod certs;
mod clusters;
mod error;
pub mod events;
mod hosts;
mod ldap;
mod locations;
mod logs;
mod metrics;
mod monitor;
mod observe;
mod operations;
mod passwords;
mod patroni;
mod pki;
pub mod placement;
mod projects;
pub mod rbac;
mod repos;
pub mod schedules;
mod throttle;
mod tokens;
mod users;
mod validate;
pub mod workflows;

pub use api_cert::{ApiCert, ApiCertSpec};
pub use audit::DeniedRequest;
pub use auth::{hash_token, new_token_secret, Ctx};
pub use bootstrap::{Bootstrapped, ADMIN_USER, DEFAULT_PROJECT, LOCAL_LOCATION};
pub use error::AppError;
pub use events::{EventFollower, EventsQuery};
pub use hosts::{DEFAULT_AGENT_PORT, DEFAULT_BASE_DIR, LOCAL_HOST};
pub use logs::{LogStream, LogsQuery};
pub use metrics::MetricsRetention;
pub use pki::{FAILPOINT_ROTATE_AFTER_COMMIT, FAILPOINT_ROTATE_AFTER_NEW_FILE};
pub use tokens::{DEFAULT_LOGIN_LIFETIME, DEFAULT_TOKEN_LIFETIME, MAX_LOGIN_LIFETIME};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The current time at the precision the store keeps (milliseconds), so what a create
/// returns is exactly what a later read returns.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The application: cheap to clone, shared by every request handler.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn Store>,
    /// The step names of every workflow, by kind: what a new operation is made of.
    workflows: Arc<BTreeMap<&'static str, Vec<String>>>,
    /// Wakes the operation engine when an operation is created or cancelled.
    wake: Arc<Notify>,
    config: Arc<AppConfig>,
    /// Set once by [`App::pki_init`].
    pki: Arc<OnceLock<Arc<pki::Pki>>>,
    restarts: Arc<monitor::Restarts>,
    agents: Arc<AgentClients>,
    /// Failed logins, per user name and source address (in memory; see `throttle`).
    logins: Arc<throttle::Throttle>,
    /// What each host was last given to forward to syslog.
    syslog_written: Arc<logs::SyslogWritten>,
    /// The certificate bot's last renewal per target, for its backoff.
    renewals_tried: Arc<certs::Backoff>,
}

/// Agent clients by host, with the endpoint (address, port) each was made for.
type AgentClients = std::sync::Mutex<std::collections::HashMap<HostId, ((String, u16), sovdb_agent::AgentClient)>>;

/// What the app needs to know about the server it runs in.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the hosts of `local` locations keep their base dirs by default.
    pub local_hosts_dir: PathBuf,
    /// The `sovdb` binary: copied to SSH hosts as their agent, run as the local agent.
    pub agent_exe: PathBuf,
    /// The TCP ports given out on hosts (to databases, routers and etcd).
    pub port_range: std::ops::RangeInclusive<u16>,
    /// Failpoints of the app's own multi-step routines (master key rotation); the
    /// operation engine has its own.
    pub failpoints: sovdb_operations::Failpoints,
    /// How long a cluster member's certificate (PostgreSQL, Patroni's REST API,
    /// PgBouncer) is valid; the certificate bot renews it when a third is left.
    pub internal_cert_validity: std::time::Duration,
}

/// The validity of a member certificate unless configured otherwise.
pub const DEFAULT_INTERNAL_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(825 * 86400);

impl App {
    pub fn new(store: Arc<dyn Store>, config: AppConfig) -> App {
        let workflows = workflows::all().iter().map(|w| (w.name, w.step_names())).collect();
        App {
            store,
            workflows: Arc::new(workflows),
            wake: Arc::new(Notify::new()),
            config: Arc::new(config),
            pki: Arc::new(OnceLock::new()),
            restarts: Arc::default(),
            agents: Arc::default(),
            logins: Arc::default(),
            syslog_written: Arc::default(),
            renewals_tried: Arc::default(),
        }
    }

    /// What the operation engine waits on besides its poll interval; see
    /// `Engine::with_wake`.
    pub fn engine_wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The store, for the processes that run beside the API (the operation engine).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Whether the store answers; for health checks.
    pub async fn health(&self) -> Result<()> {
        let mut tx = self.store.read().await?;
        tx.meta_get("installation_id").await?;
        Ok(())
    }
}

//! The agent's HTTPS server: mutual TLS in front of an axum router of the primitives.
//!
//! Start-up checks everything before serving: the base directory is usable and no other
//! agent uses it (a lock file), the TLS files load, the address binds. Then the services
//! found on disk are adopted (see [`crate::services`]) while requests are already served.
//!
//! TLS handshakes run in tasks of their own, so a slow or hostile client never holds up
//! the others; a client without a certificate from the installation CA never reaches
//! the router.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{ApiError, ServeError};
use crate::host::CpuSampler;
use crate::metrics::Collector;
use crate::proto::{self, paths, *};
use crate::services::Services;

/// Where the agent listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7450";
/// Where the agent keeps everything unless told otherwise.
pub const DEFAULT_BASE_DIR: &str = "/var/lib/sovdb";

/// How often the agent samples metrics unless told otherwise.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 64;
/// Request bodies up to this size (a `write_file` of 64 MiB, in base64).
const MAX_BODY: usize = 96 << 20;

/// The agent's configuration, resolved once at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Everything the agent keeps lives under this directory.
    pub base_dir: PathBuf,
    pub listen: SocketAddr,
    /// The installation CA certificate (PEM): clients must present a certificate it signed.
    pub ca_cert: PathBuf,
    /// The agent's certificate (PEM), signed by the CA for this host's name or address.
    pub cert: PathBuf,
    /// The agent's private key (PEM).
    pub key: PathBuf,
    /// The executable started as `<exe> agent supervise ...` for each supervised process:
    /// the binary that runs the agent, normally.
    pub supervisor_exe: PathBuf,
    /// How often the metrics collector samples (see [`crate::metrics`]).
    pub metrics_interval: Duration,
}

impl AgentConfig {
    /// The defaults for `base_dir`: TLS files in `<base_dir>/agent/tls/{ca.crt,agent.crt,agent.key}`
    /// and this executable as the supervisor.
    pub fn new(base_dir: impl Into<PathBuf>, listen: SocketAddr) -> Result<AgentConfig, ServeError> {
        let base_dir = base_dir.into();
        let tls = tls_dir(&base_dir);
        Ok(AgentConfig {
            ca_cert: tls.join("ca.crt"),
            cert: tls.join("agent.crt"),
            key: tls.join("agent.key"),
            supervisor_exe: std::env::current_exe().map_err(ServeError::CurrentExe)?,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            base_dir,
            listen,
        })
    }
}

/// Where the agent's TLS files are by default: `<base_dir>/agent/tls`.
pub fn tls_dir(base_dir: &Path) -> PathBuf {
    base_dir.join("agent").join("tls")
}

/// Runs the agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    Agent::bind(config).await?.serve(shutdown).await
}

/// An agent that is bound and ready to serve.
pub struct Agent {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<AgentState>,
    _lock: Flock<std::fs::File>,
}

struct AgentState {
    base_dir: PathBuf,
    started_at: DateTime<Utc>,
    services: Services,
    cpu: CpuSampler,
    collector: Arc<Collector>,
    /// The agent's certificate and key (re-read when they change).
    identity: Arc<crate::tls::CertFiles>,
    /// apt and dpkg take one caller at a time anyway; queue here rather than in dpkg's lock.
    packages: tokio::sync::Mutex<()>,
}

impl Agent {
    /// Checks the configuration, takes the base directory, loads TLS and binds.
    pub async fn bind(config: AgentConfig) -> Result<Agent, ServeError> {
        // Read-only checks first: a start that fails on them writes nothing.
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| ServeError::TlsFile { path: path.to_owned(), message: e.to_string() })
        };
        // The CA first, then the certificate and key: a missing file is named in that order.
        let ca_pem = read(&config.ca_cert)?;
        read(&config.cert)?;
        read(&config.key)?;
        let files = Arc::new(crate::tls::CertFiles::load(&config.cert, &config.key).map_err(ServeError::Tls)?);
        let tls = crate::tls::server_config(&ca_pem, files.clone()).map_err(ServeError::Tls)?;

        // Supervisors run with `/` as working directory: a relative base directory would
        // mean something else to them.
        let base_dir = std::path::absolute(&config.base_dir)
            .map_err(|source| ServeError::BaseDir { path: config.base_dir.clone(), source })?;
        let agent_dir = base_dir.join("agent");
        std::fs::create_dir_all(&agent_dir)
            .and_then(|_| std::fs::create_dir_all(crate::services::services_root(&base_dir)))
            .map_err(|source| ServeError::BaseDir { path: base_dir.clone(), source })?;
        let lock_path = agent_dir.join("agent.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| ServeError::BaseDir { path: lock_path.clone(), source })?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                ServeError::AlreadyRunning { base_dir: base_dir.clone() }
            } else {
                ServeError::BaseDir { path: lock_path.clone(), source: errno.into() }
            }
        })?;

        let listener = TcpListener::bind(config.listen).await.map_err(|source| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => "another process uses it: stop it or pass --listen with another port",
                std::io::ErrorKind::PermissionDenied => "ports below 1024 need privileges: pass a higher port",
                _ => "pass --listen with an address of this host",
            };
            ServeError::Listen { address: config.listen, hint, source }
        })?;

        let state = AgentState {
            services: Services::new(base_dir.clone(), config.supervisor_exe.clone()),
            base_dir,
            started_at: Utc::now(),
            cpu: CpuSampler::default(),
            collector: Arc::new(Collector::new(config.metrics_interval, &ca_pem)),
            identity: files,
            packages: tokio::sync::Mutex::new(()),
        };
        Ok(Agent { listener, acceptor: TlsAcceptor::from(Arc::new(tls)), state: Arc::new(state), _lock: lock })
    }

    /// The address the agent listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (for a
    /// grace period). Supervised processes are not touched: they outlive the agent.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let addr = self.listener.local_addr().map_err(ServeError::Serve)?;
        tracing::info!(%addr, base_dir = %self.state.base_dir.display(), "agent serving");

        let adopt = self.state.clone();
        tokio::task::spawn_blocking(move || adopt.services.adopt_all());
        let collector = tokio::spawn(self.state.collector.clone().run());

        // Syslog forwarding runs as long as the agent, whether or not a control plane talks to it.
        let forwarder = tokio::spawn(crate::syslog::run(self.state.base_dir.clone(), self.state.identity.clone()));
        let listener = TlsListener::start(self.listener, self.acceptor, addr);
        let app = router(self.state.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let grace_expired = async move {
            let _ = stop_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = server => r.map_err(ServeError::Serve)?,
            _ = grace_expired => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping without them"),
        }
        collector.abort();
        forwarder.abort();
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// Accepted TCP connections become TLS streams in tasks of their own; only those whose
/// handshake succeeded are handed to the HTTP server (`axum::serve`). The control plane's
/// API serves HTTPS through it too.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` (whose address is `local`) and handshakes with `acceptor`, at most
    /// `MAX_HANDSHAKES` at once, each within `HANDSHAKE_TIMEOUT`.
    pub fn start(tcp: TcpListener, acceptor: TlsAcceptor, local: SocketAddr) -> TlsListener {
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let accepted = tokio::select! {
                    r = tcp.accept() => r,
                    // The server is gone: stop accepting.
                    _ = tx.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "tls handshake refused"),
                        Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready: rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ends only when this receiver is dropped; until then, wait.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::WRITE_FILE, post(write_file))
        .route(paths::REMOVE, post(remove))
        .route(paths::ENSURE_PACKAGES, post(ensure_packages))
        .route(paths::ENSURE_PROCESS, post(ensure_process))
        .route(paths::PROCESS_STATUS, post(process_status))
        .route(paths::PROCESS_LIST, post(process_list))
        .route(paths::RUN_COMMAND, post(run_command))
        .route(paths::READ_FILE, post(read_file))
        .route(paths::TAIL_FILE, post(tail_file))
        .route(paths::READ_LOG, post(read_log))
        .route(paths::FACTS, post(facts))
        .route(paths::METRICS, post(metrics))
        .route(paths::METRICS_PULL, post(metrics_pull))
        .fallback(|| async { ApiError::not_found("no such endpoint; the agent's endpoints are under /v1/") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST (GET for /v1/health)")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

type Answer<T> = Result<Json<T>, ApiError>;
type AppState = State<Arc<AgentState>>;

/// A JSON body, refused in the agent's error format when it does not fit.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::invalid(format!(
                "the body does not fit: {}",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            ))),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::invalid(format!("the body is not JSON: {e}"))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(other) => Err(ApiError::new(other.status(), "invalid_request", other.body_text())),
        }
    }
}

/// Runs file-system and process work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Answer<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map(Json),
        Err(e) => Err(ApiError::internal(format!("the request's task failed: {e}"))),
    }
}

async fn health(State(s): AppState) -> Json<AgentHealth> {
    Json(AgentHealth {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        base_dir: s.base_dir.clone(),
        started_at: s.started_at,
        pid: std::process::id(),
    })
}

async fn write_file(Body(req): Body<WriteFileRequest>) -> Answer<Changed> {
    blocking(move || crate::files::write_file(&req)).await
}

async fn remove(State(s): AppState, Body(req): Body<RemoveRequest>) -> Answer<Changed> {
    // A member's directory going away: its metrics session (a psql on its socket) ends first.
    s.collector.forget_under(&req.path).await;
    blocking(move || crate::files::remove(&req)).await
}

async fn read_file(Body(req): Body<ReadFileRequest>) -> Answer<ReadFileResponse> {
    blocking(move || crate::files::read_file(&req)).await
}

async fn tail_file(Body(req): Body<TailFileRequest>) -> Answer<TailFileResponse> {
    blocking(move || crate::files::tail_file(&req)).await
}

async fn read_log(Body(req): Body<ReadLogRequest>) -> Answer<ReadLogResponse> {
    blocking(move || crate::logs::read_log(&req)).await
}

async fn ensure_packages(State(s): AppState, Body(req): Body<EnsurePackagesRequest>) -> Answer<EnsurePackagesResponse> {
    let _one_at_a_time = s.packages.lock().await;
    crate::packages::ensure_packages(&req).await.map(Json)
}

async fn ensure_process(State(s): AppState, Body(req): Body<EnsureProcessRequest>) -> Answer<EnsureProcessResponse> {
    blocking(move || s.services.ensure(&req)).await
}

async fn process_status(State(s): AppState, Body(req): Body<ProcessStatusRequest>) -> Answer<ProcessStatus> {
    blocking(move || s.services.status(&req.name)).await
}

async fn process_list(State(s): AppState) -> Answer<ProcessListResponse> {
    blocking(move || s.services.list().map(|processes| ProcessListResponse { processes })).await
}

async fn run_command(Body(req): Body<RunCommandRequest>) -> Answer<RunCommandResponse> {
    crate::command::run_command(&req).await.map(Json)
}

async fn facts(State(s): AppState) -> Answer<proto::HostFacts> {
    blocking(move || Ok(crate::host::facts(&s.base_dir))).await
}

async fn metrics(State(s): AppState) -> Json<proto::MetricsSnapshot> {
    Json(s.cpu.metrics().await)
}

async fn metrics_pull(State(s): AppState, Body(req): Body<MetricsPullRequest>) -> Json<MetricsPullResponse> {
    Json(s.collector.pull(req))
}

//! `sovdb serve`: the control plane.
//!
//! Start-up checks everything that can be wrong before it changes anything: the listen
//! address is bound first, the data directory must be writable, the store must open and
//! migrate. Then the first start bootstraps the installation (see `sovdb_app::bootstrap`).
//!
//! Shutdown on SIGTERM/SIGINT stops accepting, lets in-flight requests finish for a grace
//! period, then closes the store. Every change is one store transaction, so a request cut
//! off at any point leaves either all of its change or none.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use sovdb_app::{App, AppConfig};
use sovdb_cli::config::DEFAULT_LISTEN;
use sovdb_pki::KeyFiles;

use sovdb_operations::{Engine, EngineConfig, Failpoints};

use crate::fsutil::{node_id, write_atomic, FileLock};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory for the embedded store, the admin token and other state
    /// [default: /var/lib/sovdb as root, else ~/.local/share/sovdb]
    #[arg(long, env = "SOVDB_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address to serve the API on (port 0 picks a free port)
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    listen: SocketAddr,

    /// State store: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB
    /// [default: sqlite://<data-dir>/sovdb.db]
    #[arg(long, env = "SOVDB_STORE", value_name = "URL", hide_env_values = true)]
    store: Option<String>,

    /// The installation's master key, which seals the CA's key and every stored secret
    /// [default: <data-dir>/master.key, created on the first start]. Replicas sharing a
    /// PostgreSQL store must all use the first server's key
    #[arg(long, env = "SOVDB_MASTER_KEY_FILE", value_name = "FILE")]
    master_key_file: Option<PathBuf>,

    /// The TCP ports given out on hosts to databases, routers and etcd
    #[arg(long, env = "SOVDB_PORT_RANGE", default_value = "20000-29999", value_name = "FIRST-LAST", value_parser = parse_port_range)]
    port_range: std::ops::RangeInclusive<u16>,

    /// Serve plain HTTP instead of HTTPS: only where something else (a TLS proxy in front,
    /// a private link) protects the tokens that clients send
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_names"])]
    insecure_http: bool,

    /// Another name clients reach this server by (a DNS name or an IP address), added to
    /// the certificate the installation CA issues for the API; repeatable. The listen
    /// address is always in it (and localhost, 127.0.0.1 and ::1 for a loopback or
    /// wildcard address)
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,

    /// Serve this certificate (PEM; the server's first, then any intermediates) instead of
    /// one from the installation CA. Replaced files are picked up within a minute
    #[arg(long, env = "SOVDB_TLS_CERT", value_name = "FILE", requires = "tls_key", conflicts_with = "tls_names")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM)
    #[arg(long, env = "SOVDB_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// How long a CA-issued API certificate is valid; it is renewed when a third is left
    #[arg(long, env = "SOVDB_API_CERT_VALIDITY_SECS", default_value_t = 90 * 86400, value_name = "SECONDS", hide = true)]
    api_cert_validity_secs: u64,

    /// How long a cluster member's certificate is valid; the certificate bot renews it when
    /// a third is left
    #[arg(long, env = "SOVDB_INTERNAL_CERT_VALIDITY_SECS", default_value_t = 825 * 86400, value_name = "SECONDS", hide = true)]
    internal_cert_validity_secs: u64,

    /// How long an operation's lease lasts without renewal: a dead replica's operations
    /// are taken over by another this long after it died
    #[arg(long, env = "SOVDB_OPERATION_LEASE", default_value = "30", value_name = "SECONDS", hide = true)]
    operation_lease: u64,

    /// How long raw metric samples (one every 10 s per host and member) are kept, e.g.
    /// `24h`
    #[arg(long, env = "SOVDB_METRICS_RAW_RETENTION", default_value = "24h", value_name = "DURATION", value_parser = parse_retention)]
    metrics_raw_retention: Duration,

    /// How long 1-minute metric rollups are kept, e.g. `14d`
    #[arg(long, env = "SOVDB_METRICS_ROLLUP_RETENTION", default_value = "14d", value_name = "DURATION", value_parser = parse_retention)]
    metrics_rollup_retention: Duration,

    /// Benchmarks only: sample each member this many times, as that many members
    #[arg(long, default_value_t = 1, value_name = "N", hide = true)]
    metrics_bench_fanout: usize,
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    match sovdb_types::metrics::parse_duration_secs(s) {
        Some(secs) if secs >= 60 => Ok(Duration::from_secs(secs as u64)),
        _ => Err(format!("{s:?} is not a retention: give a duration of at least a minute, e.g. 24h or 14d")),
    }
}

/// The server's configuration, resolved once from flags and environment.
struct ServeConfig {
    data_dir: PathBuf,
    listen: SocketAddr,
    store_url: String,
    master_key_file: PathBuf,
    operation_lease: Duration,
    port_range: std::ops::RangeInclusive<u16>,
    tls: TlsMode,
    internal_cert_validity: Duration,
    metrics_retention: sovdb_app::MetricsRetention,
    metrics_fanout: usize,
}

/// How the API is served.
enum TlsMode {
    /// HTTPS with a certificate from the installation CA for these names, renewed.
    Issued { names: Vec<String>, validity: Duration },
    /// HTTPS with the operator's certificate and key files.
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP (`--insecure-http`).
    Off,
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range: give FIRST-LAST, e.g. 20000-29999");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a < 1024 || b < a {
        return Err(format!("{s:?}: give FIRST-LAST with 1024 <= FIRST <= LAST"));
    }
    Ok(a..=b)
}

impl ServeArgs {
    fn resolve(self) -> ServeConfig {
        let data_dir = self.data_dir.unwrap_or_else(sovdb_cli::default_data_dir);
        let store_url = self.store.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("sovdb.db").display()));
        let operation_lease = Duration::from_secs(self.operation_lease.max(1));
        let master_key_file = self.master_key_file.unwrap_or_else(|| data_dir.join("master.key"));
        let tls = match (self.insecure_http, self.tls_cert, self.tls_key) {
            (true, _, _) => TlsMode::Off,
            (false, Some(cert), Some(key)) => TlsMode::Files { cert, key },
            _ => TlsMode::Issued {
                names: self.tls_names,
                validity: Duration::from_secs(self.api_cert_validity_secs.max(1)),
            },
        };
        ServeConfig {
            data_dir,
            listen: self.listen,
            store_url,
            master_key_file,
            operation_lease,
            port_range: self.port_range,
            tls,
            internal_cert_validity: Duration::from_secs(self.internal_cert_validity_secs.max(1)),
            metrics_retention: sovdb_app::MetricsRetention {
                raw: self.metrics_raw_retention,
                rollup: self.metrics_rollup_retention,
            },
            metrics_fanout: self.metrics_bench_fanout.clamp(1, 1000),
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve();

    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process uses it: stop that process or pass --listen with another port"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: pass --listen with a higher port"
            }
            _ => "pass --listen with an address of this machine",
        };
        anyhow!("cannot listen on {}: {e}; {hint}", config.listen)
    })?;
    let addr = listener.local_addr()?;
    // The operator's certificate is checked before anything is written.
    let user_cert = match &config.tls {
        TlsMode::Files { cert, key } => Some(crate::tls::load_files(cert, key)?),
        _ => None,
    };

    prepare_data_dir(&config.data_dir)?;
    let lock_file = config.data_dir.join("serve.lock");
    let _lock = FileLock::try_acquire(&lock_file)
        .with_context(|| format!("cannot lock {}", lock_file.display()))?
        .ok_or_else(|| {
            anyhow!(
                "another sovdb serve uses the data directory {}; stop it, or pass --data-dir with another directory \
                 (replicas share a PostgreSQL store, each with its own data directory)",
                config.data_dir.display()
            )
        })?;
    let failpoints = Failpoints::from_env().map_err(|e| anyhow!("SOVDB_FAILPOINTS: {e}"))?;
    let worker_id = node_id(&config.data_dir).context("cannot read this data directory's node.id")?;
    let store = sovdb_store::open(&config.store_url).await?;
    restrict_sqlite_files(&config.store_url);
    let agent_exe = std::env::current_exe().context("cannot tell where this sovdb binary is")?;
    let app = App::new(
        store.clone(),
        AppConfig {
            local_hosts_dir: config.data_dir.join("hosts"),
            agent_exe,
            port_range: config.port_range.clone(),
            failpoints: failpoints.clone(),
            internal_cert_validity: config.internal_cert_validity,
        },
    );

    let token_file = config.data_dir.join("admin.token");
    let created = app
        .bootstrap(|secret| {
            write_atomic(&token_file, format!("{secret}\n").as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", token_file.display()))
        })
        .await
        .map_err(|e| anyhow!("cannot set up the installation: {e:#}"))?;
    if let Some(b) = &created {
        tracing::info!(installation_id = %b.installation_id, token_file = %token_file.display(), "installation created");
    }

    app.pki_init_files(KeyFiles::new(&config.master_key_file))
        .await
        .map_err(|e| anyhow!("cannot load the master key and the installation's CA: {e}"))?;
    let ca_file = config.data_dir.join("ca.crt");
    let ca_pem = app.ca_cert_pem().map_err(|e| anyhow!("{e}"))?;
    write_atomic(&ca_file, ca_pem.as_bytes(), 0o644).with_context(|| format!("cannot write {}", ca_file.display()))?;

    // The certificate before the address is published: a client that finds `api.url`
    // finds `ca.crt` and a server that presents a certificate.
    let (tls, renewal) = match (&config.tls, user_cert) {
        (TlsMode::Off, _) => {
            tracing::warn!(
                "serving plain HTTP (--insecure-http): tokens and secrets cross the network in clear; use it only \
                 behind a TLS proxy or on a private link"
            );
            (None, None)
        }
        (TlsMode::Files { cert, key }, Some((certified, pem))) => {
            crate::tls::log_cert(&certified, "serving the certificate of --tls-cert");
            let resolver = Arc::new(crate::tls::ApiCertResolver::new(certified));
            let reload = crate::tls::reload_loop(cert.clone(), key.clone(), pem, resolver.clone());
            (Some(resolver), Some(tokio::spawn(reload)))
        }
        (TlsMode::Files { .. }, None) => unreachable!("the files were loaded above"),
        (TlsMode::Issued { names, validity }, _) => {
            let (dns_names, ip_addresses) = crate::tls::api_names(addr, names);
            let spec = sovdb_app::ApiCertSpec { dns_names, ip_addresses, validity: *validity };
            let (key, issued) = crate::tls::issued_key(&app, &worker_id, &spec).await?;
            if !issued {
                crate::tls::log_cert(&key, "serving the stored API certificate");
            }
            let resolver = Arc::new(crate::tls::ApiCertResolver::new(key));
            let renew = crate::tls::renew_loop(app.clone(), worker_id.clone(), spec, resolver.clone());
            (Some(resolver), Some(tokio::spawn(renew)))
        }
    };
    let tls = tls.map(crate::tls::server_config).transpose()?;

    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{}", crate::tls::local_url_addr(addr));
    let url_file = config.data_dir.join("api.url");
    write_atomic(&url_file, format!("{base_url}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    print_banner(&base_url, &config, &token_file, created.is_some(), tls.is_some().then_some(ca_file.as_path()));
    tracing::info!(%addr, %base_url, store = %sovdb_store::redact_url(&config.store_url), "serving");
    // Before the first login: a login for an unknown user must cost what any other does.
    app.logins_warm_up().await.map_err(|e| anyhow!("cannot prepare password checks: {e}"))?;
    let engine = start_engine(&app, worker_id, config.operation_lease, failpoints).await?;
    if let Some(op) = app.ensure_local_host().await.map_err(|e| anyhow!("cannot add this machine as a host: {e}"))? {
        tracing::info!(operation = %op.id, "adding this machine as host `local`");
    }
    let heartbeat = tokio::spawn(heartbeat_loop(app.clone()));
    let observe = tokio::spawn(observe_loop(app.clone()));
    let schedules = tokio::spawn(schedule_loop(app.clone()));
    let cert_bot = tokio::spawn(cert_bot_loop(app.clone(), config.internal_cert_validity));
    let metrics = tokio::spawn(metrics_loop(app.clone(), config.metrics_fanout));
    let metrics_upkeep = tokio::spawn(metrics_upkeep_loop(app.clone(), config.metrics_retention));
    let syslog = tokio::spawn(syslog_loop(app.clone()));
    let alerts = tokio::spawn(alerts_loop(app.clone()));
    let notifications = tokio::spawn(notify_loop(app.clone()));

    let router = sovdb_api::app(app);
    match tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let listener = sovdb_agent::TlsListener::start(listener, acceptor, addr);
            serve_until_stopped::<_, crate::tls::Peer>(listener, crate::tls::with_peer_addr(router)).await?
        }
        None => serve_until_stopped::<_, SocketAddr>(listener, router).await?,
    }

    if let Some(r) = renewal {
        r.abort();
    }
    heartbeat.abort();
    observe.abort();
    schedules.abort();
    cert_bot.abort();
    metrics.abort();
    metrics_upkeep.abort();
    syslog.abort();
    alerts.abort();
    notifications.abort();
    // Stop taking up new steps; the step in flight finishes and its operation is parked
    // for any replica (or our next start) to resume.
    engine.engine.stop();
    if tokio::time::timeout(SHUTDOWN_GRACE, engine.task).await.is_err() {
        tracing::warn!("a step still runs after {SHUTDOWN_GRACE:?}; stopping without it (it is re-run on resume)");
    }

    // Only remove the address file if it is still ours (another server may have started
    // on this data directory since).
    if std::fs::read_to_string(&url_file).is_ok_and(|s| s.trim() == base_url) {
        let _ = std::fs::remove_file(&url_file);
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `router` on `listener` until SIGTERM/SIGINT, then lets requests in flight finish
/// for [`SHUTDOWN_GRACE`].
/// The router learns each request's peer address as `C` (see [`crate::tls::Peer`]).
async fn serve_until_stopped<L, C>(listener: L, router: axum::Router) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    C: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let router = router.into_make_service_with_connect_info::<C>();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let grace_expired = async move {
        let _ = stop_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.context("the HTTP server failed")?,
        _ = grace_expired => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping without them (their transactions roll back)"),
    }
    Ok(())
}

/// Asks every host's agent whether it is there, once a second.
async fn heartbeat_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.hosts_heartbeat().await {
            tracing::warn!(error = %e, "host heartbeats failed; retrying");
        }
    }
}

/// Every 2 s: what each cluster's Patroni reports (failovers, degraded members) into
/// the store and its events.
async fn observe_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.clusters_observe().await {
            tracing::warn!(error = %e, "observing clusters failed; retrying");
        }
    }
}

/// Every 10 s: the samples agents took since the last pull (see `sovdb_app` metrics).
async fn metrics_loop(app: App, fanout: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.metrics_collect(fanout).await {
            tracing::warn!(error = %e, "collecting metrics failed; retrying");
        }
    }
}

/// Every minute: metric rollups, and pruning by retention.
async fn metrics_upkeep_loop(app: App, retention: sovdb_app::MetricsRetention) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.metrics_maintain(chrono::Utc::now(), retention).await {
            tracing::warn!(error = %e, "rolling up or pruning metrics failed; retrying");
        }
    }
}

/// Every 5 s: each ready host is given the list of its members' logs to forward to its
/// location's syslog server (written only when it changed).
async fn syslog_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.syslog_reconcile().await {
            tracing::warn!(error = %e, "giving hosts their syslog forwarding failed; retrying");
        }
    }
}

/// Every 10 s: the alert rules evaluated against what the control plane knows; alerts go
/// pending, firing, resolved (see `sovdb_app::alerts`).
async fn alerts_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match app.alerts_evaluate(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(transitions = n, "alerts changed"),
            Err(e) => tracing::warn!(error = %e, "evaluating alerts failed; retrying"),
        }
    }
}

/// Every 2 s: the notifications that are due (new ones, and retries whose backoff ended).
async fn notify_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.alerts_deliver(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "sending notifications failed; retrying");
        }
    }
}

/// Every 10 s: the backups and restore drills that clusters' schedules are due for
/// (schedules have minutes; a round right after a start catches up on missed runs).
async fn schedule_loop(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match app.schedules_run(chrono::Utc::now()).await {
            Ok(started) => {
                for op in started {
                    tracing::info!(operation = %op.id, kind = %op.kind, target = %op.target, "scheduled run started");
                }
            }
            Err(e) => tracing::warn!(error = %e, "running backup schedules failed; retrying"),
        }
    }
}

/// The certificate bot: renews the certificates of cluster members that have a third of
/// their life left. It looks every 30 s, or a tenth of the validity when that is shorter,
/// so a renewal has most of that third to finish in.
async fn cert_bot_loop(app: App, validity: Duration) {
    let period = sovdb_app::certs::look_period(validity);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = app.certs_renew_due(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "checking member certificates failed; retrying");
        }
    }
}

struct RunningEngine {
    engine: Arc<Engine<App>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the operation engine with every workflow. Leases this data directory's server
/// held before (it crashed or was killed: the lock proves no other process runs here) are
/// given back first, so its operations resume now rather than when the leases expire.
async fn start_engine(
    app: &App,
    worker_id: String,
    lease: Duration,
    failpoints: Failpoints,
) -> anyhow::Result<RunningEngine> {
    let store = app.store();
    let mut tx = store.write().await?;
    let released = tx.operation_release_worker(&worker_id).await?;
    tx.commit().await?;
    if released > 0 {
        tracing::info!(count = released, "resuming operations this server was running when it stopped");
    }
    if !failpoints.is_empty() {
        tracing::warn!("failpoints are set (SOVDB_FAILPOINTS): this server will crash or fail on purpose");
    }
    let mut config = EngineConfig::new(worker_id);
    config.lease = lease;
    let mut engine = Engine::new(store, Arc::new(app.clone()), config, failpoints).with_wake(app.engine_wake());
    for workflow in sovdb_app::workflows::all() {
        engine = engine.register(workflow);
    }
    let engine = Arc::new(engine);
    let task = tokio::spawn(engine.clone().run());
    Ok(RunningEngine { engine, task })
}

/// The SQLite store and its WAL and shared-memory files (which SQLite creates with the
/// database file's mode) readable by this user only: the data directory lets other users
/// pass through.
fn restrict_sqlite_files(url: &str) {
    let Some(path) = url.strip_prefix("sqlite://") else { return };
    let path = path.split('?').next().unwrap_or(path);
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        if Path::new(&file).exists() {
            if let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(file, error = %e, "cannot make the store private to this user");
            }
        }
    }
}

/// Creates the data directory and checks that it is writable, so a bad one is reported
/// before anything is written. Mode 0711: no one else may list it (its secrets are 0600
/// files anyway), but the database users of the local host must pass through it to their
/// directories under `hosts/local/`.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let fix = "pass --data-dir (or SOVDB_DATA_DIR) with a directory you can write";
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("cannot create the data directory {}: {e}; {fix}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| anyhow!("cannot restrict the data directory {}: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        anyhow::bail!("the data directory {} is not a directory; {fix}", dir.display());
    } else {
        // A directory from before clusters existed may be 0700: let the database users
        // through (search only), as a new one is made.
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode((mode & 0o7777) | 0o011))
                .map_err(|e| anyhow!("cannot let the database users through {}: {e}", dir.display()))?;
        }
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| anyhow!("cannot write in the data directory {}: {e}; {fix}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn print_banner(base_url: &str, config: &ServeConfig, token_file: &Path, created: bool, ca_file: Option<&Path>) {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sovdb".into());
    let token_note = if created {
        " (created now, mode 0600)"
    } else if !token_file.exists() {
        " (not here: this installation was created by another server on the same store)"
    } else {
        ""
    };
    let cacert = ca_file.map(|f| format!("--cacert {} ", f.display())).unwrap_or_default();
    let ca_line = match ca_file {
        Some(f) => format!("\n  CA:          {} (what clients trust; the CLI here reads it by itself)", f.display()),
        None => "\n  TLS:         off (--insecure-http)".into(),
    };
    println!(
        "sovdb {version} is serving\n\
         \x20 console:     {base_url}/  (log in with a user's password or an API token)\n\
         \x20 API:         {base_url}/api/v1  (OpenAPI document: {base_url}/api/v1/openapi.json)\n\
         \x20 health:      {base_url}/healthz\n\
         \x20 store:       {store}\n\
         \x20 data dir:    {data}\n\
         \x20 admin token: {token}{token_note}{ca_line}\n\
         \n\
         Try, in another terminal on this machine (no configuration needed):\n\
         \x20 {exe} location list\n\
         \x20 {exe} cluster list -o json\n\
         \x20 curl {cacert}-H \"Authorization: Bearer $(cat {token})\" {base_url}/api/v1/whoami\n\
         \n\
         Stop with Ctrl-C (or SIGTERM).",
        version = env!("CARGO_PKG_VERSION"),
        store = sovdb_store::redact_url(&config.store_url),
        data = config.data_dir.display(),
        token = token_file.display(),
    );
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

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

    /// How long an operation's lease lasts without renewal: a dead replica's operations
    /// are taken over by another this long after it died
    #[arg(long, env = "SOVDB_OPERATION_LEASE", default_value = "30", value_name = "SECONDS", hide = true)]
    operation_lease: u64,
}

/// The server's configuration, resolved once from flags and environment.
struct ServeConfig {
    data_dir: PathBuf,
    listen: SocketAddr,
    store_url: String,
    master_key_file: PathBuf,
    operation_lease: Duration,
    port_range: std::ops::RangeInclusive<u16>,
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
        ServeConfig {
            data_dir,
            listen: self.listen,
            store_url,
            master_key_file,
            operation_lease,
            port_range: self.port_range,
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

    let base_url = format!("http://{addr}");
    let url_file = config.data_dir.join("api.url");
    write_atomic(&url_file, format!("{base_url}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    print_banner(&base_url, &config, &token_file, created.is_some());
    tracing::info!(%addr, store = %sovdb_store::redact_url(&config.store_url), "serving");

    app.pki_init_files(KeyFiles::new(&config.master_key_file))
        .await
        .map_err(|e| anyhow!("cannot load the master key and the installation's CA: {e}"))?;
    // Before the first login: a login for an unknown user must cost what any other does.
    app.logins_warm_up().await.map_err(|e| anyhow!("cannot prepare password checks: {e}"))?;
    let engine = start_engine(&app, worker_id, config.operation_lease, failpoints).await?;
    if let Some(op) = app.ensure_local_host().await.map_err(|e| anyhow!("cannot add this machine as a host: {e}"))? {
        tracing::info!(operation = %op.id, "adding this machine as host `local`");
    }
    let heartbeat = tokio::spawn(heartbeat_loop(app.clone()));
    let observe = tokio::spawn(observe_loop(app.clone()));
    let schedules = tokio::spawn(schedule_loop(app.clone()));

    let router = sovdb_api::app(app).into_make_service_with_connect_info::<SocketAddr>();
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

    heartbeat.abort();
    observe.abort();
    schedules.abort();
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

fn print_banner(base_url: &str, config: &ServeConfig, token_file: &Path, created: bool) {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sovdb".into());
    let token_note = if created {
        " (created now, mode 0600)"
    } else if !token_file.exists() {
        " (not here: this installation was created by another server on the same store)"
    } else {
        ""
    };
    println!(
        "sovdb {version} is serving\n\
         \x20 API:         {base_url}/api/v1  (OpenAPI document: {base_url}/api/v1/openapi.json)\n\
         \x20 health:      {base_url}/healthz\n\
         \x20 store:       {store}\n\
         \x20 data dir:    {data}\n\
         \x20 admin token: {token}{token_note}\n\
         \n\
         Try, in another terminal on this machine (no configuration needed):\n\
         \x20 {exe} location list\n\
         \x20 {exe} cluster list -o json\n\
         \x20 curl -H \"Authorization: Bearer $(cat {token})\" {base_url}/api/v1/whoami\n\
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

//! The supervisor: one detached process per service that keeps the service's process
//! running, so supervision does not depend on the agent being up.
//!
//! The agent starts it as `<exe> agent supervise --base-dir DIR --name NAME` in a session
//! of its own (see `services::Services::start`); the binary calls [`supervise`]. It:
//!
//! - holds `supervisor.lock` for its whole life, so two never supervise one service;
//! - runs the spec in `spec.json` as its user (groups, group, then user), in a process
//!   group of its own, with a clean environment;
//! - copies the process's stdout and stderr to `log/stdout.log` and `log/stderr.log`,
//!   rotated by size;
//! - starts it again whenever it exits, after a delay that doubles from
//!   [`INITIAL_BACKOFF`] up to [`MAX_BACKOFF`] and falls back once the process ran for
//!   [`STABLE_AFTER`]; what is left of its process group is killed first;
//! - on SIGTERM or SIGINT: SIGTERM to the process group, SIGKILL after the spec's stop
//!   timeout, then exits;
//! - records every step in `state.json` (atomically), which is all the agent knows.
//!
//! It is a plain synchronous program: a loop, two threads copying output, and a signal
//! handler that only sets a flag.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::logfile::{RotatingLog, KEEP_LOGS, MAX_LOG_BYTES};
use crate::proto::{DesiredState, ExitStatus, ProcessSpec};
use crate::services::{check_name, check_spec, Phase, ProcessRecord, ServiceDir, SupervisorState};
use crate::sys::{self, RunAs};

/// The first delay before a restart.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before it exited is restarted after [`INITIAL_BACKOFF`]
/// again.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its child and the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Why a supervisor could not start. Once it supervises, failures of the process are
/// recorded in `state.json` and retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("{0}")]
    InvalidName(String),

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("another supervisor already runs service {name:?}")]
    AlreadyRunning { name: String },

    #[error("service {name:?} has no spec: the agent writes it before starting a supervisor")]
    NoSpec { name: String },

    #[error("{0}")]
    Spec(String),

    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] nix::Error),
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Supervises service `name` of the agent with base directory `base_dir` until told to
/// stop. The entry point of `sovdb agent supervise`.
pub fn supervise(base_dir: &Path, name: &str) -> Result<(), SuperviseError> {
    check_name(name).map_err(SuperviseError::InvalidName)?;
    let sd = ServiceDir::new(base_dir, name);
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SuperviseError::Io { action, path, source }
    };

    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sd.lock_file())
        .map_err(io("open", &sd.lock_file()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            SuperviseError::AlreadyRunning { name: name.to_owned() }
        } else {
            SuperviseError::Io { action: "lock", path: sd.lock_file(), source: errno.into() }
        }
    })?;

    let handler = SigAction::new(SigHandler::Handler(on_stop_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &handler) }.map_err(SuperviseError::Signals)?;
    }
    // We have no terminal; a stray SIGHUP must not end supervision.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { sigaction(Signal::SIGHUP, &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty())) }
        .map_err(SuperviseError::Signals)?;

    let intent = sd
        .read_intent()
        .map_err(SuperviseError::Spec)?
        .ok_or_else(|| SuperviseError::NoSpec { name: name.to_owned() })?;
    let me = std::process::id();
    let supervisor =
        ProcessRecord { pid: me, start_ticks: sys::process_start_ticks(me).unwrap_or(0), started_at: Utc::now() };
    std::fs::create_dir_all(sd.log_dir()).map_err(io("create", &sd.log_dir()))?;
    let open_log = |file: &str| {
        let path = sd.log_dir().join(file);
        RotatingLog::open(&path, MAX_LOG_BYTES, KEEP_LOGS).map(|l| Arc::new(Mutex::new(l))).map_err(io("open", &path))
    };
    let mut s = Supervisor {
        stdout: open_log("stdout.log")?,
        stderr: open_log("stderr.log")?,
        state: SupervisorState {
            supervisor,
            phase: Phase::Starting,
            spec: intent.spec.clone(),
            child: None,
            restarts: 0,
            last_exit: None,
            last_error: None,
            updated_at: Utc::now(),
        },
        sd,
    };
    if intent.desired == DesiredState::Stopped {
        s.state.phase = Phase::Stopped;
        s.save();
        return Ok(());
    }
    tracing::info!(service = name, pid = me, "supervising");
    s.run();
    tracing::info!(service = name, "supervisor stopped");
    Ok(())
}

struct Supervisor {
    sd: ServiceDir,
    state: SupervisorState,
    stdout: Arc<Mutex<RotatingLog>>,
    stderr: Arc<Mutex<RotatingLog>>,
}

enum Ended {
    /// The process exited by itself.
    Exited(ExitStatus),
    /// We stopped it because we were told to stop.
    Stopped(ExitStatus),
}

impl Supervisor {
    fn save(&mut self) {
        self.state.updated_at = Utc::now();
        let written = serde_json::to_vec_pretty(&self.state)
            .map_err(std::io::Error::other)
            .and_then(|json| sys::write_state_file(&self.sd.state_file(), &json));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.sd.state_file().display(), "cannot record state");
        }
    }

    fn run(&mut self) {
        let mut delay = INITIAL_BACKOFF;
        let mut first = true;
        while !stopping() {
            if !first {
                self.state.restarts += 1;
            }
            first = false;
            self.state.phase = Phase::Starting;
            self.save();

            let started = Instant::now();
            let ended = match self.spawn() {
                Ok(child) => self.watch(child),
                Err(message) => {
                    tracing::warn!(error = %message, "cannot start process");
                    self.state.last_error = Some(message);
                    None
                }
            };
            match ended {
                Some(Ended::Stopped(status)) => {
                    self.state.last_exit = Some(status);
                    break;
                }
                Some(Ended::Exited(status)) => {
                    self.state.last_exit = Some(status);
                    if started.elapsed() >= STABLE_AFTER {
                        delay = INITIAL_BACKOFF;
                    }
                    tracing::warn!(%status, ?delay, "process exited; restarting it after a delay");
                }
                None => {}
            }
            self.state.child = None;
            self.state.phase = Phase::Backoff;
            self.save();
            sleep_unless_stopping(delay);
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        self.state.child = None;
        self.state.phase = Phase::Stopped;
        self.save();
    }

    fn spawn(&mut self) -> Result<Child, String> {
        let spec: &ProcessSpec = &self.state.spec;
        // Checked again here: users and directories can change between the agent's check
        // and a restart an hour later.
        let run_as: Option<RunAs> = check_spec(spec)?;
        let mut cmd = Command::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..])
            .env_clear()
            .envs(sys::program_env(run_as.as_ref(), &spec.env))
            .current_dir(spec.cwd.as_deref().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(run_as) = run_as {
            // SAFETY: become_user makes only async-signal-safe system calls.
            unsafe { cmd.pre_exec(move || run_as.become_user()) };
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", spec.argv[0]))?;
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            pump(out, self.stdout.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, self.stderr.clone());
        }
        self.state.child = Some(ProcessRecord {
            pid,
            start_ticks: sys::process_start_ticks(pid).unwrap_or(0),
            started_at: Utc::now(),
        });
        self.state.last_error = None;
        self.state.phase = Phase::Running;
        self.save();
        tracing::info!(pid, restarts = self.state.restarts, "process started");
        Ok(child)
    }

    /// Waits for the child to exit, or for a stop request.
    fn watch(&mut self, mut child: Child) -> Option<Ended> {
        let pgid = child.id();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    // Whatever the process left behind in its group would hold ports and
                    // files the next start needs.
                    sys::signal_group(pgid, libc::SIGKILL);
                    return Some(Ended::Exited(status.into()));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for the process");
                    return None;
                }
            }
            if stopping() {
                return Some(Ended::Stopped(self.terminate(child)));
            }
            std::thread::sleep(TICK);
        }
    }

    /// SIGTERM to the process group, SIGKILL after the stop timeout.
    fn terminate(&mut self, mut child: Child) -> ExitStatus {
        let pgid = child.id();
        self.state.phase = Phase::Stopping;
        self.save();
        tracing::info!(pid = pgid, "stopping process");
        sys::signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(u64::from(self.state.spec.stop_timeout_secs));
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(TICK);
        };
        let status = match status {
            Some(s) => s,
            None => {
                tracing::warn!(pid = pgid, "process did not stop in time; killing its process group");
                sys::signal_group(pgid, libc::SIGKILL);
                match child.wait() {
                    Ok(s) => s,
                    Err(_) => return ExitStatus { code: None, signal: Some(libc::SIGKILL) },
                }
            }
        };
        // Members of the group that ignored SIGTERM.
        sys::signal_group(pgid, libc::SIGKILL);
        status.into()
    }
}

/// Copies a pipe into a log in a thread of its own, until the pipe closes (when the
/// process and everything it started that held the pipe have exited).
fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<RotatingLog>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut warned = false;
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut log = into.lock().unwrap_or_else(|p| p.into_inner());
                    // A full disk must not block the process: drop the output, say so once.
                    if let Err(e) = log.write(&buf[..n]) {
                        if !warned {
                            tracing::error!(error = %e, "cannot write the process's output to its log");
                            warned = true;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

fn sleep_unless_stopping(d: Duration) {
    let deadline = Instant::now() + d;
    while !stopping() && Instant::now() < deadline {
        std::thread::sleep(TICK.min(deadline.saturating_duration_since(Instant::now())));
    }
}

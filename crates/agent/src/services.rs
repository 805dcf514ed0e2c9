//! Supervised processes, as the agent sees them: `ensure_process`, `process_status`,
//! `process_list`, and the adoption of running supervisors when the agent starts.
//!
//! Each service has one detached supervisor process (see [`crate::supervisor`]); the agent
//! itself keeps no state about them in memory. Everything is in files under
//! `<base_dir>/services/<name>/`:
//!
//! - `spec.json`: the intent, written by the agent: the spec and whether it should run.
//! - `state.json`: the observation, written by the supervisor: its own pid, the child's pid,
//!   restarts, last exit, the spec it runs. Pids come with their start times, so a reused
//!   pid is never taken for the process that was recorded.
//! - `supervisor.lock`: held by the running supervisor, so there is never a second one.
//! - `supervisor.log`: what the supervisor logs; `log/stdout.log`, `log/stderr.log`: the
//!   child's output, rotated by size.
//!
//! So a restarted agent (even after `kill -9`) knows everything at once: it reads the files
//! and checks the recorded processes are alive. It does not restart a process that runs.
//! A service that should run but has no supervisor (the host rebooted) is started again.
//!
//! Changes to one service are serialized by a lock per name within the agent; only one
//! agent runs per base directory (see `server::Agent::bind`).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::proto::{
    DesiredState, EnsureProcessRequest, EnsureProcessResponse, ExitStatus, ProcessSpec, ProcessState, ProcessStatus,
};
use crate::sys::{self, check_path, RunAs};

/// The arguments after the executable that make it a supervisor:
/// `<exe> agent supervise --base-dir DIR --name NAME`.
pub const SUPERVISE_ARGS: [&str; 2] = ["agent", "supervise"];

/// The longest stop timeout a spec may ask for.
const MAX_STOP_TIMEOUT_SECS: u32 = 3600;
/// How long `ensure_process` waits for a new supervisor to report the process started.
const START_WAIT: Duration = Duration::from_secs(10);
/// How often files and pids are looked at while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Where one service keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct ServiceDir {
    pub dir: PathBuf,
}

impl ServiceDir {
    pub fn new(base_dir: &Path, name: &str) -> ServiceDir {
        ServiceDir { dir: services_root(base_dir).join(name) }
    }
    pub fn spec_file(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    pub fn read_intent(&self) -> Result<Option<Intent>, String> {
        read_json(&self.spec_file())
    }

    pub fn read_state(&self) -> Result<Option<SupervisorState>, String> {
        read_json(&self.state_file())
    }
}

pub(crate) fn services_root(base_dir: &Path) -> PathBuf {
    base_dir.join("services")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is damaged: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// What the agent was asked for: `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub spec: ProcessSpec,
    pub desired: DesiredState,
}

/// Where the supervisor is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
}

/// A process as recorded: pid and start time identify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    pub pid: u32,
    pub start_ticks: u64,
    pub started_at: DateTime<Utc>,
}

impl ProcessRecord {
    pub fn is_alive(&self) -> bool {
        sys::is_alive(self.pid, self.start_ticks)
    }
}

/// What the supervisor observed: `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SupervisorState {
    pub supervisor: ProcessRecord,
    pub phase: Phase,
    /// The spec this supervisor runs (read from `spec.json` when it started).
    pub spec: ProcessSpec,
    pub child: Option<ProcessRecord>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Service names become directory names: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid process name: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Everything about a spec that can be checked before starting it. Returns the user to
/// run as.
pub(crate) fn check_spec(spec: &ProcessSpec) -> Result<Option<RunAs>, String> {
    check_name(&spec.name)?;
    sys::check_argv_env(&spec.argv, &spec.env)?;
    if let Some(cwd) = &spec.cwd {
        check_path(cwd)?;
    }
    if spec.stop_timeout_secs > MAX_STOP_TIMEOUT_SECS {
        return Err(format!("stop_timeout_secs must be at most {MAX_STOP_TIMEOUT_SECS}"));
    }
    match &spec.user {
        Some(user) => {
            let run_as = RunAs::resolve(user)?;
            run_as.check_permitted()?;
            Ok(Some(run_as))
        }
        None => Ok(None),
    }
}

/// A service as found on disk, with the liveness of its recorded processes.
struct Observed {
    intent: Intent,
    state: Option<SupervisorState>,
    supervisor_alive: bool,
    child_alive: bool,
}

/// The agent's side of supervision.
pub(crate) struct Services {
    base_dir: PathBuf,
    supervisor_exe: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Services {
    pub fn new(base_dir: PathBuf, supervisor_exe: PathBuf) -> Services {
        Services { base_dir, supervisor_exe, locks: Mutex::new(HashMap::new()) }
    }

    fn lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_owned()).or_default().clone()
    }

    /// `ensure_process`. Blocking: call from a blocking thread.
    ///
    /// Crash safety: a running supervisor is stopped before the new intent is written, and
    /// the new supervisor is started after. A crash in between leaves an intent without a
    /// supervisor, which the next call (or the next agent start) completes. Whether the
    /// process runs the asked spec is decided by the spec the supervisor itself recorded.
    pub fn ensure(&self, req: &EnsureProcessRequest) -> Result<EnsureProcessResponse, ApiError> {
        let spec = &req.spec;
        check_spec(spec).map_err(ApiError::invalid)?;
        let lock = self.lock(&spec.name);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let sd = ServiceDir::new(&self.base_dir, &spec.name);
        fs::create_dir_all(sd.log_dir()).map_err(|e| ApiError::io("create", &sd.log_dir(), &e))?;
        let observed = self.observe(&sd)?;
        let wanted = Intent { spec: spec.clone(), desired: req.state };

        let changed = match req.state {
            DesiredState::Running => {
                let runs_this_spec = observed
                    .as_ref()
                    .is_some_and(|o| o.supervisor_alive && o.state.as_ref().is_some_and(|s| &s.spec == spec));
                if runs_this_spec {
                    if observed.as_ref().map(|o| &o.intent) != Some(&wanted) {
                        self.write_intent(&sd, &wanted)?;
                    }
                    false
                } else {
                    if let Some(o) = &observed {
                        tracing::info!(name = %spec.name, "spec changed or process not running; (re)starting it");
                        self.stop(&sd, o);
                    }
                    self.write_intent(&sd, &wanted)?;
                    self.start(&sd)?;
                    true
                }
            }
            DesiredState::Stopped => {
                let mut changed = false;
                if let Some(o) = &observed {
                    if o.supervisor_alive || o.child_alive {
                        self.stop(&sd, o);
                        changed = true;
                    }
                }
                if observed.as_ref().map(|o| &o.intent) != Some(&wanted) {
                    self.write_intent(&sd, &wanted)?;
                    changed = true;
                }
                changed
            }
        };
        let status = self.status_of(&sd)?.ok_or_else(|| ApiError::internal("the service's spec vanished"))?;
        Ok(EnsureProcessResponse { changed, status })
    }

    /// `process_status`.
    pub fn status(&self, name: &str) -> Result<ProcessStatus, ApiError> {
        check_name(name).map_err(ApiError::invalid)?;
        self.status_of(&ServiceDir::new(&self.base_dir, name))?.ok_or_else(|| {
            ApiError::not_found(format!("there is no process named {name:?}: create it with ensure_process"))
        })
    }

    /// `process_list`: every service, by name.
    pub fn list(&self) -> Result<Vec<ProcessStatus>, ApiError> {
        let mut out = Vec::new();
        for name in self.names()? {
            if let Some(status) = self.status_of(&ServiceDir::new(&self.base_dir, &name))? {
                out.push(status);
            }
        }
        Ok(out)
    }

    /// At agent start: adopt the supervisors that run, start those that should run and
    /// don't (after a reboot, or a supervisor killed while the agent was away).
    pub fn adopt_all(&self) {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e.message, "cannot list services to adopt");
                return;
            }
        };
        for name in names {
            let lock = self.lock(&name);
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let sd = ServiceDir::new(&self.base_dir, &name);
            let observed = match self.observe(&sd) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(%name, error = %e.message, "cannot read service");
                    continue;
                }
            };
            if observed.supervisor_alive {
                let child = observed.state.as_ref().and_then(|s| s.child.as_ref()).map(|c| c.pid);
                tracing::info!(%name, supervisor_pid = observed.state.as_ref().map(|s| s.supervisor.pid), ?child, "adopted supervised process");
            } else if observed.intent.desired == DesiredState::Running {
                tracing::warn!(%name, "supervisor not running although the process should run; starting it");
                self.stop(&sd, &observed);
                if let Err(e) = self.start(&sd) {
                    tracing::error!(%name, error = %e.message, "cannot start supervisor");
                }
            }
        }
    }

    fn names(&self) -> Result<Vec<String>, ApiError> {
        let root = services_root(&self.base_dir);
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ApiError::io("list", &root, &e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn observe(&self, sd: &ServiceDir) -> Result<Option<Observed>, ApiError> {
        let Some(intent) = sd.read_intent().map_err(ApiError::internal)? else { return Ok(None) };
        // A damaged state file is as good as none: liveness is then unknown, and the
        // supervisor rewrites it at its next step.
        let state = sd.read_state().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring supervisor state");
            None
        });
        let supervisor_alive = state.as_ref().is_some_and(|s| s.supervisor.is_alive());
        let child_alive = state.as_ref().and_then(|s| s.child.as_ref()).is_some_and(|c| c.is_alive());
        Ok(Some(Observed { intent, state, supervisor_alive, child_alive }))
    }

    fn status_of(&self, sd: &ServiceDir) -> Result<Option<ProcessStatus>, ApiError> {
        let Some(o) = self.observe(sd)? else { return Ok(None) };
        let state = o.state.as_ref();
        let phase = state.map(|s| s.phase);
        let observed_state = if o.supervisor_alive {
            match phase {
                Some(Phase::Running) if o.child_alive => ProcessState::Running,
                // The child died a moment ago and the supervisor has not noticed yet.
                Some(Phase::Running) => ProcessState::Backoff,
                Some(Phase::Starting) | None => ProcessState::Starting,
                Some(Phase::Backoff) => ProcessState::Backoff,
                Some(Phase::Stopping) => ProcessState::Stopping,
                Some(Phase::Stopped) => ProcessState::Stopped,
            }
        } else if o.intent.desired == DesiredState::Running {
            ProcessState::Failed
        } else {
            ProcessState::Stopped
        };
        let mut last_error = state.and_then(|s| s.last_error.clone());
        if observed_state == ProcessState::Failed && last_error.is_none() {
            last_error = Some(format!("the supervisor is not running; see {}", sd.supervisor_log().display()));
        }
        let child = state.and_then(|s| s.child.as_ref()).filter(|_| o.child_alive);
        Ok(Some(ProcessStatus {
            name: o.intent.spec.name.clone(),
            desired: o.intent.desired,
            state: observed_state,
            supervisor_pid: state.filter(|_| o.supervisor_alive).map(|s| s.supervisor.pid),
            pid: child.map(|c| c.pid),
            started_at: child.map(|c| c.started_at),
            restarts: state.map_or(0, |s| s.restarts),
            last_exit: state.and_then(|s| s.last_exit),
            last_error,
            log_dir: sd.log_dir(),
            spec: o.intent.spec,
        }))
    }

    fn write_intent(&self, sd: &ServiceDir, intent: &Intent) -> Result<(), ApiError> {
        let json = serde_json::to_vec_pretty(intent).map_err(|e| ApiError::internal(e.to_string()))?;
        sys::write_state_file(&sd.spec_file(), &json).map_err(|e| ApiError::io("write", &sd.spec_file(), &e))
    }

    /// Starts a supervisor for the service and waits (a little) until it reports the
    /// process started, or that it could not start it.
    fn start(&self, sd: &ServiceDir) -> Result<(), ApiError> {
        // The old state belongs to a supervisor that is gone; a fresh file tells us the
        // new one is up.
        let _ = fs::remove_file(sd.state_file());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(sd.supervisor_log())
            .map_err(|e| ApiError::io("open", &sd.supervisor_log(), &e))?;
        let log2 = log.try_clone().map_err(|e| ApiError::io("open", &sd.supervisor_log(), &e))?;
        let name = sd.dir.file_name().unwrap_or_default();
        let mut cmd = Command::new(&self.supervisor_exe);
        cmd.args(SUPERVISE_ARGS)
            .arg("--base-dir")
            .arg(&self.base_dir)
            .arg("--name")
            .arg(name)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Detach: fork once more and let the intermediate exit at once, so the supervisor
        // is not our child (no zombie to reap, not killed with us) and, with setsid, in a
        // session of its own (no signal sent to the agent's process group reaches it).
        // SAFETY: fork, _exit and setsid are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(|| match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    if libc::setsid() == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                }
                _ => libc::_exit(0),
            });
        }
        let mut intermediate = cmd.spawn().map_err(|e| {
            ApiError::internal(format!("cannot start the supervisor {}: {e}", self.supervisor_exe.display()))
        })?;
        let _ = intermediate.wait();
        self.wait_started(sd);
        Ok(())
    }

    fn wait_started(&self, sd: &ServiceDir) {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(state)) = sd.read_state() {
                let settled = match state.phase {
                    Phase::Running => state.child.as_ref().is_some_and(|c| c.is_alive()),
                    Phase::Backoff | Phase::Stopped => true,
                    Phase::Starting | Phase::Stopping => false,
                };
                if settled || !state.supervisor.is_alive() {
                    return;
                }
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(service = %sd.dir.display(), "supervisor did not report within {START_WAIT:?}");
    }

    /// Stops the supervisor (which stops the process), and kills a process left without
    /// its supervisor. Returns when both are gone.
    fn stop(&self, sd: &ServiceDir, o: &Observed) {
        let Some(state) = &o.state else { return };
        let timeout = Duration::from_secs(u64::from(state.spec.stop_timeout_secs));
        if o.supervisor_alive {
            let sup = &state.supervisor;
            sys::signal_process(sup.pid, libc::SIGTERM);
            // The supervisor itself waits `timeout` before SIGKILL; give it a margin.
            if !wait_until(timeout + Duration::from_secs(5), || !sup.is_alive()) {
                tracing::warn!(service = %sd.dir.display(), pid = sup.pid, "supervisor did not stop; killing it");
                sys::signal_process(sup.pid, libc::SIGKILL);
                wait_until(Duration::from_secs(5), || !sup.is_alive());
            }
        }
        // The supervisor's last word is in the state file: re-read which child it left.
        let child = sd.read_state().ok().flatten().and_then(|s| s.child).or_else(|| state.child.clone());
        if let Some(child) = child.filter(|c| c.is_alive()) {
            tracing::warn!(service = %sd.dir.display(), pid = child.pid, "process runs without its supervisor; stopping it");
            sys::signal_group(child.pid, libc::SIGTERM);
            if !wait_until(timeout, || !child.is_alive()) {
                sys::signal_group(child.pid, libc::SIGKILL);
                wait_until(Duration::from_secs(5), || !child.is_alive());
            }
            sys::signal_group(child.pid, libc::SIGKILL);
        }
    }
}

/// Polls `done` until it is true or `timeout` passed; says which.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for ok in ["postgres", "pg-16.main", "a", "A_1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

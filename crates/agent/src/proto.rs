//! The agent's wire protocol: JSON bodies over HTTPS, shared by the server and the client
//! so the two cannot drift apart.
//!
//! Every endpoint is `POST /v1/<name>` (except `GET /v1/health`). Every primitive that
//! changes the host is idempotent and answers `changed`: a second identical call changes
//! nothing and says so. Requests refuse unknown fields, so a misspelt field is an error,
//! not a silently ignored setting. Errors are [`ErrorBody`] `{code, message}` with an HTTP
//! status; a command that ran and failed is not an error but data (its exit status and
//! output).
//!
//! Bytes that may not be text (file contents) travel as base64 strings. `Debug` of the
//! types here never shows file contents, standard input or environment values, so they
//! can be logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use sovdb_types::{DiskUsage, ErrorBody, HostFacts, MetricsSnapshot, NetCounters};

/// The paths of the endpoints, relative to the agent's address.
pub mod paths {
    pub const HEALTH: &str = "/v1/health";
    pub const WRITE_FILE: &str = "/v1/write_file";
    pub const REMOVE: &str = "/v1/remove";
    pub const ENSURE_PACKAGES: &str = "/v1/ensure_packages";
    pub const ENSURE_PROCESS: &str = "/v1/ensure_process";
    pub const PROCESS_STATUS: &str = "/v1/process_status";
    pub const PROCESS_LIST: &str = "/v1/process_list";
    pub const RUN_COMMAND: &str = "/v1/run_command";
    pub const READ_FILE: &str = "/v1/read_file";
    pub const TAIL_FILE: &str = "/v1/tail_file";
    pub const FACTS: &str = "/v1/facts";
    pub const METRICS: &str = "/v1/metrics";
    pub const METRICS_PULL: &str = "/v1/metrics/pull";
    pub const READ_LOG: &str = "/v1/read_log";
}

/// `GET /v1/health`: who answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub version: String,
    pub base_dir: PathBuf,
    pub started_at: DateTime<Utc>,
    pub pid: u32,
}

/// The answer of the primitives that have nothing else to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// Whether the call changed the host; `false` when it was already as asked.
    pub changed: bool,
}

/// `write_file`: the file at `path` has exactly `content`, `mode` and owner afterwards.
///
/// The file is replaced atomically (a reader sees the old or the new content, never a
/// mix) and is on disk when the call returns. Missing parent directories are created
/// (mode 0755). Nothing is written when content, mode and owner are already as asked.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileRequest {
    /// Absolute path.
    pub path: PathBuf,
    /// The bytes, as base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// Permission bits, e.g. `0o640` (JSON has no octal: 416). Default 0o644.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
    /// User name (or numeric ID) to own the file. Absent: a new file belongs to the
    /// agent's user, an existing file keeps its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group name (or numeric ID). Absent: the owner's primary group when `owner` is
    /// given, else as for `owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn default_file_mode() -> u32 {
    0o644
}

impl fmt::Debug for WriteFileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteFileRequest")
            .field("path", &self.path)
            .field("content", &format_args!("[{} bytes]", self.content.len()))
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .finish()
    }
}

/// `remove`: nothing exists at `path` afterwards. A directory that is not empty needs
/// `recursive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub path: PathBuf,
    #[serde(default)]
    pub recursive: bool,
}

/// `ensure_packages`: the Debian packages are installed (any version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsurePackagesRequest {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsurePackagesResponse {
    pub changed: bool,
    /// The installed version of each requested package.
    pub versions: BTreeMap<String, String>,
    /// The packages this call installed.
    pub installed: Vec<String>,
}

/// Whether a supervised process should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
}

/// How to run a supervised process. Two specs that are equal run the same process; any
/// difference restarts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The service's name: letters, digits, `-`, `_` and `.`; 64 characters at most.
    pub name: String,
    /// The program and its arguments. A program without `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// The user to run as (its primary group and supplementary groups too); default: the
    /// agent's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment variables, on top of `PATH`, `HOME`, `USER` and `LOGNAME`. Nothing is
    /// inherited from the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// How long a stop waits after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u32,
}

fn default_stop_timeout() -> u32 {
    10
}

impl fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("name", &self.name)
            .field("argv", &self.argv)
            .field("user", &self.user)
            .field("env", &RedactedEnv(&self.env))
            .field("cwd", &self.cwd)
            .field("stop_timeout_secs", &self.stop_timeout_secs)
            .finish()
    }
}

/// `ensure_process`: the named process runs with this spec (restarted if the spec
/// changed), or is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsureProcessRequest {
    pub spec: ProcessSpec,
    pub state: DesiredState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsureProcessResponse {
    pub changed: bool,
    pub status: ProcessStatus,
}

/// `process_status`: one supervised process, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessStatusRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessListResponse {
    pub processes: Vec<ProcessStatus>,
}

/// What a supervised process is doing, as observed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// The supervisor is starting the process.
    Starting,
    /// The process runs.
    Running,
    /// The process exited (or could not start) and will be started again after a delay.
    Backoff,
    /// The supervisor is stopping the process.
    Stopping,
    /// Not running, as wanted.
    Stopped,
    /// Not running although wanted: the supervisor is gone (killed, or the host
    /// rebooted). The next `ensure_process` or agent start brings it back.
    Failed,
}

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(s: std::process::ExitStatus) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus { code: s.code(), signal: s.signal() }
    }
}

/// The observed state of a supervised process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    pub desired: DesiredState,
    pub state: ProcessState,
    /// The supervisor's process ID, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
    /// The process's ID (and process group), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the running process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// How often the supervisor started the process again since the supervisor started.
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
    /// Why the last start failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Where `stdout.log` and `stderr.log` are.
    pub log_dir: PathBuf,
    pub spec: ProcessSpec,
}

/// `run_command`: runs a program to its end (or its timeout) and reports what happened.
/// A command that fails is an answer, not an error.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommandRequest {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment variables, on top of `PATH`, `HOME`, `USER` and `LOGNAME`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Text for the program's standard input; none: `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// After this, the command's whole process group is killed.
    #[serde(default = "default_command_timeout")]
    pub timeout_secs: u64,
}

fn default_command_timeout() -> u64 {
    60
}

impl RunCommandRequest {
    /// A request for `argv` with the defaults: the agent's user, no extra environment,
    /// working directory `/`, no input, 60 s timeout.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> RunCommandRequest {
        RunCommandRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            user: None,
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            timeout_secs: default_command_timeout(),
        }
    }
}

impl fmt::Debug for RunCommandRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunCommandRequest")
            .field("argv", &self.argv)
            .field("user", &self.user)
            .field("env", &RedactedEnv(&self.env))
            .field("cwd", &self.cwd)
            .field("stdin", &self.stdin.as_ref().map(|s| format!("[{} bytes]", s.len())))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommandResponse {
    pub status: ExitStatus,
    /// Standard output as text (invalid UTF-8 replaced), at most 8 MiB.
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    /// The timeout struck and the process group was killed.
    pub timed_out: bool,
}

/// `read_file`: up to `max_bytes` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileRequest {
    pub path: PathBuf,
    #[serde(default)]
    pub offset: u64,
    /// At most 16 MiB; default 1 MiB.
    #[serde(default = "default_read_max")]
    pub max_bytes: u64,
}

fn default_read_max() -> u64 {
    1 << 20
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileResponse {
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// The file's size now.
    pub size: u64,
    /// Whether `content` reaches the end of the file.
    pub eof: bool,
}

impl fmt::Debug for ReadFileResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFileResponse")
            .field("content", &format_args!("[{} bytes]", self.content.len()))
            .field("size", &self.size)
            .field("eof", &self.eof)
            .finish()
    }
}

/// `tail_file`: the last `lines` lines of a text file (at most 10,000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailFileRequest {
    pub path: PathBuf,
    #[serde(default = "default_tail_lines")]
    pub lines: u32,
}

fn default_tail_lines() -> u32 {
    100
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailFileResponse {
    /// The lines, oldest first, without their line ends (invalid UTF-8 replaced).
    pub lines: Vec<String>,
}

impl fmt::Debug for TailFileResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TailFileResponse {{ lines: [{} lines] }}", self.lines.len())
    }
}

/// A log to read line by line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogFile {
    /// A file that rotates by being renamed to `<path>.1` (Patroni's logs, the agent's
    /// own service logs).
    File { path: PathBuf },
    /// PostgreSQL's current log: the file that `<data_dir>/current_logfiles` names (its
    /// `stderr` entry). PostgreSQL switches files by itself (`log_filename` with a day),
    /// so the path is looked up at every read.
    Postgres { data_dir: PathBuf },
}

/// Where a reader of a log stands: the file (by inode, so a rotation is noticed even
/// when the new file has grown past the old offset) and the offset after the last whole
/// line it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub inode: u64,
    pub offset: u64,
}

/// `read_log`: whole lines of a log after `cursor`, across a rotation.
///
/// Without a cursor, the last `tail` lines (0: none) and a cursor at the end. With one,
/// the lines written since, at most `max_bytes` of them: when the file was rotated (its
/// inode changed) the rest of the rotated file (`<path>.1`) comes first, then the new
/// file from its start; when it was truncated, its start. A line is only ever returned
/// whole, so a line being written is left for the next call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadLogRequest {
    pub file: LogFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<LogCursor>,
    /// Lines from the end when there is no cursor (at most 10,000).
    #[serde(default)]
    pub tail: u32,
    /// At most 16 MiB; default 1 MiB.
    #[serde(default = "default_read_max")]
    pub max_bytes: u64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLogResponse {
    /// Whole lines, oldest first, without their line ends (invalid UTF-8 replaced).
    pub lines: Vec<String>,
    /// Where to read next; absent while the log does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<LogCursor>,
    /// The file read, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// Log lines may quote SQL text and its literals: `Debug` shows only how many.
impl fmt::Debug for ReadLogResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadLogResponse")
            .field("lines", &format_args!("[{} lines]", self.lines.len()))
            .field("cursor", &self.cursor)
            .field("path", &self.path)
            .finish()
    }
}

/// What the agent forwards to a syslog server: the file `<base_dir>/agent/syslog.json`,
/// written by the control plane with `write_file` ([`syslog_config_path`]) and read by
/// the agent's forwarder every second. The forwarder works from this file alone, so it
/// keeps forwarding while the control plane is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`; absent: forward nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For `tls://`: the CA certificates (PEM) the server's certificate must chain to;
    /// absent: the host's system bundle ([`SYSTEM_CA_BUNDLE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The HOSTNAME field: the host's name in sovdb.
    pub hostname: String,
    pub sources: Vec<SyslogSource>,
}

/// Where Debian keeps the system's trusted CA certificates (package ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One log to forward, and what its messages say about where they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSource {
    pub file: LogFile,
    /// The APP-NAME field: `postgresql`, `patroni`.
    pub app_name: String,
    pub project: String,
    pub cluster: String,
    pub member: String,
}

/// Where the agent with base directory `base_dir` reads its syslog forwarding.
pub fn syslog_config_path(base_dir: &std::path::Path) -> PathBuf {
    base_dir.join("agent").join("syslog.json")
}

/// Environment values may be secrets: `Debug` shows only the names.
struct RedactedEnv<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for RedactedEnv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Bytes as a standard base64 string.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields() {
        let err = serde_json::from_str::<RemoveRequest>(r#"{"path": "/x", "recursiv": true}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `recursiv`"), "{err}");
        let err = serde_json::from_str::<EnsureProcessRequest>(r#"{"spec":{"name":"a","argv":["x"]},"state":"up"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        // A misspelt field of the spec, too.
        let err = serde_json::from_str::<EnsureProcessRequest>(
            r#"{"spec":{"name":"a","argv":["x"],"stop_timeout":1},"state":"running"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `stop_timeout`"), "{err}");
    }

    #[test]
    fn contents_travel_as_base64_and_stay_out_of_debug() {
        let req = WriteFileRequest {
            path: "/etc/x".into(),
            content: b"password=hunter2".to_vec(),
            mode: 0o600,
            owner: None,
            group: None,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["content"], "cGFzc3dvcmQ9aHVudGVyMg==");
        assert_eq!(serde_json::from_value::<WriteFileRequest>(json).unwrap(), req);
        assert!(!format!("{req:?}").contains("hunter2"));

        let mut cmd = RunCommandRequest::new(["psql"]);
        cmd.env.insert("PGPASSWORD".into(), "hunter2".into());
        cmd.stdin = Some("ALTER ROLE x PASSWORD 'hunter2'".into());
        let shown = format!("{cmd:?}");
        assert!(!shown.contains("hunter2") && shown.contains("PGPASSWORD"), "{shown}");

        let bad = serde_json::from_str::<WriteFileRequest>(r#"{"path":"/x","content":"***"}"#).unwrap_err();
        assert!(bad.to_string().contains("not base64"), "{bad}");
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let req: WriteFileRequest = serde_json::from_str(r#"{"path":"/x","content":""}"#).unwrap();
        assert_eq!(req.mode, 0o644);
        let req: EnsureProcessRequest =
            serde_json::from_str(r#"{"spec":{"name":"a","argv":["sleep","1"]},"state":"running"}"#).unwrap();
        assert_eq!(req.spec.stop_timeout_secs, 10);
        assert!(req.spec.env.is_empty());
        let req: RunCommandRequest = serde_json::from_str(r#"{"argv":["true"]}"#).unwrap();
        assert_eq!(req, RunCommandRequest::new(["true"]));
    }
}

/// `metrics/pull`: the samples the agent took since the caller's cursor, and the
/// PostgreSQL instances it should sample from now on.
///
/// The agent samples every few seconds (10 by default) into a bounded buffer, whether or
/// not anyone pulls: a caller that was away gets what the buffer still holds. Every
/// sample has a sequence number; `after` is the last one the caller has. Sequence numbers
/// count from 1 within an `epoch` (one run of the agent): a caller whose epoch is not the
/// agent's gets everything from the start of the buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsPullRequest {
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub after: u64,
    /// At most this many samples in the answer (the rest with the next pull).
    #[serde(default = "default_pull_limit")]
    pub limit: usize,
    /// The PostgreSQL instances to sample: replaces the previous list.
    pub targets: Vec<PgTarget>,
}

fn default_pull_limit() -> usize {
    2000
}

/// A local PostgreSQL instance to sample, reached over its Unix socket as the database
/// superuser by peer authentication (no password), and its Patroni's REST API (HTTPS,
/// verified against the installation CA; read-only endpoints need no password).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgTarget {
    /// The caller's name for it (a member key); samples carry it back.
    pub key: String,
    /// The directory of the Unix socket.
    pub socket_dir: PathBuf,
    pub port: u16,
    /// The database superuser and the system user it is reached as (peer).
    pub db_user: String,
    pub os_user: String,
    /// Patroni's REST API, `host:port`, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<String>,
}

/// The answer of `metrics/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsPullResponse {
    pub epoch: String,
    /// Samples after the cursor, oldest first.
    pub samples: Vec<AgentSample>,
    /// Whether more samples wait than `limit` let through.
    pub more: bool,
    /// Samples dropped from the full buffer before the caller got them (since `after`).
    pub lost: u64,
    /// Seconds between samples.
    pub interval_secs: u64,
}

/// One sample of the host (`target` empty) or of a [`PgTarget`] (its key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSample {
    pub seq: u64,
    #[serde(default)]
    pub target: String,
    #[serde(flatten)]
    pub sample: sovdb_types::MetricSample,
}

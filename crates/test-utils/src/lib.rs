//! Harnesses that start real programs for tests: each starts its program in a temporary
//! directory on a free port, waits until it answers, stops it on drop, and keeps the
//! directory (with the program's logs) when the test failed, printing where it is.
//! `testhosts` does the same for whole hosts: network namespaces reached over SSH, and `s3`
//! for an S3 endpoint (s3s-fs behind HAProxy's TLS), `ldap` for a directory (slapd),
//! `browser` for a headless Chromium driven over WebDriver, `webhook` for a receiver of
//! alert notifications.

use std::net::TcpListener;
use std::path::Path;

pub mod browser;
pub mod cli;
pub mod ldap;
pub mod postgres;
pub mod s3;
pub mod server;
pub mod testhosts;
pub mod webhook;

/// A member's directory on a host whose base directory is `base`:
/// `<base>/pg/<the last 8 hex digits of the cluster's ID>-<the member's number>` (the
/// layout the control plane gives members). `cluster` is the ID as the API shows it,
/// `member` the member's name (`db-2`).
pub fn member_dir(base: &Path, cluster: &str, member: &str) -> std::path::PathBuf {
    let id = cluster.replace('-', "");
    let n = member.rsplit('-').next().unwrap_or(member);
    base.join("pg").join(format!("{}-{n}", &id[id.len().saturating_sub(8)..]))
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Harnesses that bind it later retry
/// with another port if something took it in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Whether this process runs as root (and so must drop privileges for PostgreSQL).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Keeps `dir` when the current thread is panicking (a failed test) and says where.
pub(crate) fn finish_dir(dir: tempfile::TempDir, what: &str) {
    if std::thread::panicking() {
        let kept = dir.keep();
        eprintln!("{what}: kept {} for inspection", kept.display());
    }
}

/// The last `n` lines of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The serial (lowercase hex, as `openssl x509 -serial` prints it) of the certificate a
/// server at `addr` (`host:port`) presents, read with `openssl s_client`: PostgreSQL's
/// after its STARTTLS request when `postgres`, else from the first byte (the agent and etcd
/// refuse the handshake later for want of a client certificate, but present theirs first).
/// None when nothing answers within 10 s.
pub fn served_serial(addr: &str, postgres: bool) -> Option<String> {
    let flags = if postgres { "-starttls postgres" } else { "" };
    let script =
        format!("openssl s_client {flags} -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial");
    let out = std::process::Command::new("timeout").args(["10", "sh", "-c", &script]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().strip_prefix("serial=").map(str::to_lowercase)
}

/// Every process of a member's Patroni (its supervisor and Patroni itself), found by the
/// member's directory `dir`.
pub fn patroni_of(dir: &Path) -> Vec<u32> {
    let key = dir.file_name().unwrap().to_str().unwrap().to_string();
    let mut pids = processes_mentioning(&format!("pg-{key}-patroni"));
    pids.extend(processes_mentioning(&dir.join("patroni.yml").display().to_string()));
    pids.sort();
    pids.dedup();
    pids
}

/// Sends `sig` to each of `pids`.
pub fn signal(pids: &[u32], sig: i32) {
    for pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(*pid as i32, sig) };
    }
}

/// Processes stopped with SIGSTOP by a test: they are continued when this is dropped, also
/// when the test fails, so what they belong to can stop.
pub struct Frozen(pub Vec<u32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(&self.0, libc::SIGCONT);
    }
}

/// The processes (other than this one) whose command line, arguments joined by spaces,
/// contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Kills (SIGKILL) every process whose command line mentions `path`: the agents and
/// supervisors a test server or test agent started under its temporary directory, which
/// are detached on purpose and so outlive their parent.
pub fn kill_processes_mentioning(path: &Path) {
    for pid in processes_mentioning(&path.display().to_string()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

//! A real agent for tests: the `sovdb-agent-test` binary in a temporary base directory on
//! a free port of 127.0.0.1, with a fresh installation PKI (CA, agent certificate, client
//! certificate). Tests can `kill -9` it and start it again on the same base directory.
//!
//! On drop it kills the agent and every supervisor and supervised process it started
//! (they are detached, so nothing else would), and keeps the directory with the logs when
//! the test failed.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sovdb_agent::{AgentClient, ClientIdentity};
use sovdb_pki::{Ca, CertRequest, CertUsage};

/// How long tests wait for something that should happen soon. Generous: the machine may be
/// busy; nothing asserts how fast it happens.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Pki {
    pub ca: Ca,
    /// The control plane's client identity.
    pub client: ClientIdentity,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let client = issue_client(&ca, &ca);
        Pki { ca, client }
    }
}

/// A client identity whose certificate `issuer` signed, trusting `trusted`'s certificate.
pub fn issue_client(issuer: &Ca, trusted: &Ca) -> ClientIdentity {
    let cert = issuer
        .issue(&CertRequest {
            common_name: "control-plane".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: CertUsage::Client,
            validity_days: 1,
        })
        .unwrap();
    ClientIdentity { ca_pem: trusted.cert_pem().to_owned(), cert_pem: cert.cert_pem, key_pem: cert.key_pem }
}

pub struct TestAgent {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pki: Pki,
}

impl TestAgent {
    pub fn start() -> TestAgent {
        let dir = tempfile::Builder::new().prefix("sovdb-test-agent-").tempdir().unwrap();
        let pki = Pki::new();
        let mut agent = TestAgent { dir: Some(dir), child: None, addr: "127.0.0.1:0".parse().unwrap(), pki };
        agent.install_tls();
        agent.launch();
        agent
    }

    /// Writes the CA, the agent's certificate (for `127.0.0.1` and `localhost`) and key
    /// where the agent looks by default.
    fn install_tls(&self) {
        let tls = sovdb_agent::tls_dir(&self.base_dir());
        std::fs::create_dir_all(&tls).unwrap();
        let cert = self
            .pki
            .ca
            .issue(&CertRequest {
                common_name: "agent".into(),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec!["127.0.0.1".parse().unwrap()],
                usage: CertUsage::Server,
                validity_days: 1,
            })
            .unwrap();
        std::fs::write(tls.join("ca.crt"), self.pki.ca.cert_pem()).unwrap();
        std::fs::write(tls.join("agent.crt"), cert.cert_pem).unwrap();
        std::fs::write(tls.join("agent.key"), cert.key_pem).unwrap();
    }

    pub fn root(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn base_dir(&self) -> PathBuf {
        self.root().join("base")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `sovdb-agent-test serve` on this base directory.
    pub fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sovdb-agent-test"));
        cmd.arg("serve")
            .arg("--base-dir")
            .arg(self.base_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SOVDB_LOG", "info,sovdb_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        cmd
    }

    /// Starts the agent and waits until it listens.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = self.command().spawn().expect("start sovdb-agent-test");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not start:\n{}", self.log());
        };
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not running").id()
    }

    /// `kill -9`: the agent gets no chance to do anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> AgentClient {
        self.client_with(&self.pki.client)
    }

    pub fn client_with(&self, identity: &ClientIdentity) -> AgentClient {
        AgentClient::new(self.addr, "127.0.0.1", identity).unwrap()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill9();
        kill_supervised(&self.base_dir());
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", tail(&self.log(), 60));
        }
        if let Some(dir) = self.dir.take() {
            if std::thread::panicking() {
                eprintln!("kept {} for inspection", dir.keep().display());
            }
        }
    }
}

/// Kills every supervisor and supervised process recorded under `base_dir`.
pub fn kill_supervised(base_dir: &Path) {
    let Ok(services) = std::fs::read_dir(base_dir.join("services")) else { return };
    for service in services.flatten() {
        let Ok(text) = std::fs::read_to_string(service.path().join("state.json")) else { continue };
        let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let record = |v: &serde_json::Value| Some((v["pid"].as_u64()? as u32, v["start_ticks"].as_u64()?));
        if let Some((pid, ticks)) = record(&state["supervisor"]) {
            if start_ticks(pid) == Some(ticks) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some((pid, ticks)) = record(&state["child"]) {
            if start_ticks(pid) == Some(ticks) {
                // SAFETY: as above; the child leads its own process group.
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// `(state, process group, start time)` of a process from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(String, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    Some((fields[0].to_owned(), fields[2].parse().ok()?, fields[19].parse().ok()?))
}

fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).filter(|(s, _, _)| s != "Z").map(|(_, _, t)| t)
}

/// Whether a process runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    start_ticks(pid).is_some()
}

/// The live members of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(stat(*pid), Some((s, g, _)) if g == pgid && s != "Z"))
        .collect()
}

/// The real user ID a process runs as.
pub fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `check` until it gives `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

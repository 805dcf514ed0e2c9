//! `sovdb agent` as shipped: the real binary serves the agent API over mutual TLS and is
//! its own supervisor (`sovdb agent supervise`), and a supervised process outlives the
//! agent's shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sovdb_agent::proto::{DesiredState, EnsureProcessRequest, ProcessSpec, ProcessState};
use sovdb_agent::{AgentClient, ClientIdentity};
use sovdb_pki::{Ca, CertRequest, CertUsage};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// Kills whatever the test left running, even when it failed.
struct Cleanup {
    dir: tempfile::TempDir,
    agent: Option<Child>,
    /// (supervisor, supervised process) pids.
    supervised: Vec<(u32, u32)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for (supervisor, pid) in &self.supervised {
            // SAFETY: kill has no memory-safety preconditions. The supervisor first, then
            // the process's group (the process leads it: its pid is the group's id).
            unsafe {
                libc::kill(*supervisor as i32, libc::SIGKILL);
                libc::killpg(*pid as i32, libc::SIGKILL);
            }
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
            eprintln!("agent log:\n{log}");
        }
    }
}

fn install_tls(base: &Path, ca: &Ca) {
    let tls = base.join("agent/tls");
    std::fs::create_dir_all(&tls).unwrap();
    let cert = ca
        .issue(&CertRequest {
            common_name: "agent".into(),
            dns_names: vec![],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            usage: CertUsage::Server,
            validity_days: 1,
        })
        .unwrap();
    std::fs::write(tls.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(tls.join("agent.crt"), cert.cert_pem).unwrap();
    std::fs::write(tls.join("agent.key"), cert.key_pem).unwrap();
}

fn start_agent(dir: &Path, base: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap();
    Command::new(BIN)
        .arg("agent")
        .arg("--base-dir")
        .arg(base)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_healthy(client: &AgentClient, agent: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.health().await.is_err() {
        assert!(agent.try_wait().unwrap().is_none(), "sovdb agent exited");
        assert!(Instant::now() < deadline, "sovdb agent did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test]
async fn sovdb_agent_serves_and_supervises_with_the_same_binary() {
    let dir = tempfile::tempdir().unwrap();
    let base: PathBuf = dir.path().join("base");
    let mut cleanup = Cleanup { dir, agent: None, supervised: Vec::new() };
    let ca = Ca::generate("sovdb test CA").unwrap();
    install_tls(&base, &ca);
    let client_cert = ca
        .issue(&CertRequest {
            common_name: "control-plane".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: CertUsage::Client,
            validity_days: 1,
        })
        .unwrap();
    let identity = ClientIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: client_cert.cert_pem,
        key_pem: client_cert.key_pem,
    };

    let port = sovdb_test_utils::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = AgentClient::new(addr, "127.0.0.1", &identity).unwrap();
    cleanup.agent = Some(start_agent(cleanup.dir.path(), &base, port));
    wait_healthy(&client, cleanup.agent.as_mut().unwrap()).await;

    let req = EnsureProcessRequest {
        spec: ProcessSpec {
            name: "sleeper".into(),
            argv: vec!["sleep".into(), "1000".into()],
            user: None,
            env: Default::default(),
            cwd: None,
            stop_timeout_secs: 5,
        },
        state: DesiredState::Running,
    };
    let r = client.ensure_process(&req).await.unwrap();
    let (supervisor, pid) = (r.status.supervisor_pid.unwrap(), r.status.pid.unwrap());
    cleanup.supervised.push((supervisor, pid));
    assert_eq!(r.status.state, ProcessState::Running);
    let sup_cmd = cmdline(supervisor);
    assert!(sup_cmd.contains("agent supervise") && sup_cmd.contains("--name sleeper"), "{sup_cmd}");

    // SIGTERM: the agent stops cleanly, the process runs on.
    let mut agent = cleanup.agent.take().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the supervised process died with the agent");

    cleanup.agent = Some(start_agent(cleanup.dir.path(), &base, port));
    wait_healthy(&client, cleanup.agent.as_mut().unwrap()).await;
    let s = client.process_status("sleeper").await.unwrap();
    assert_eq!((s.state, s.pid), (ProcessState::Running, Some(pid)));
    let stopped = client.ensure_process(&EnsureProcessRequest { state: DesiredState::Stopped, ..req }).await.unwrap();
    assert_eq!(stopped.status.state, ProcessState::Stopped);
}

#[test]
fn sovdb_agent_without_its_tls_files_says_which_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["agent", "--listen", "127.0.0.1:0", "--base-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent/tls/ca.crt") && stderr.contains("No such file"), "{stderr}");
}

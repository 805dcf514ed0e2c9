//! The agent's primitives over real mutual TLS against a real agent process: each works,
//! a second identical call changes nothing, bad requests are refused with a reason, and
//! only clients of the installation CA get in.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use sovdb_agent::proto::*;
use sovdb_agent::{AgentClient, AgentError};

fn write_req(path: &std::path::Path, content: &[u8], mode: u32) -> WriteFileRequest {
    WriteFileRequest { path: path.to_owned(), content: content.to_vec(), mode, owner: None, group: None }
}

fn rejected_code(e: AgentError) -> String {
    match e {
        AgentError::Rejected { code, message, .. } => {
            assert!(!message.is_empty());
            code
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn health_names_the_agent() {
    let agent = TestAgent::start();
    let h = agent.client().health().await.unwrap();
    assert_eq!(h.pid, agent.pid());
    assert_eq!(h.base_dir, agent.base_dir());
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn write_file_is_atomic_idempotent_and_sets_mode_and_owner() {
    let agent = TestAgent::start();
    let c = agent.client();
    let path = agent.root().join("files/sub/dir/config.conf");

    assert!(c.write_file(&write_req(&path, b"a = 1\n", 0o640)).await.unwrap().changed);
    assert_eq!(std::fs::read(&path).unwrap(), b"a = 1\n");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
    assert!(!c.write_file(&write_req(&path, b"a = 1\n", 0o640)).await.unwrap().changed);

    // Mode only, then content.
    assert!(c.write_file(&write_req(&path, b"a = 1\n", 0o600)).await.unwrap().changed);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
    assert!(c.write_file(&write_req(&path, b"a = 2\n", 0o600)).await.unwrap().changed);
    assert_eq!(std::fs::read(&path).unwrap(), b"a = 2\n");

    // Owner: a user gets its primary group unless a group is given.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mut owned = write_req(&path, b"a = 2\n", 0o600);
    owned.owner = Some("nobody".into());
    assert!(c.write_file(&owned).await.unwrap().changed);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (nobody.uid.as_raw(), nobody.gid.as_raw()));
    assert!(!c.write_file(&owned).await.unwrap().changed);
    owned.group = Some("root".into());
    assert!(c.write_file(&owned).await.unwrap().changed);
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), 0);

    // Binary content round-trips, and no temporary file is left next to it.
    let bytes: Vec<u8> = (0..=255).collect();
    assert!(c.write_file(&write_req(&path, &bytes, 0o644)).await.unwrap().changed);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

    let refusals = [
        (write_req("relative/path".as_ref(), b"x", 0o644), "invalid_request"),
        (write_req(&agent.root().join("a/../b"), b"x", 0o644), "invalid_request"),
        (write_req(&path, b"x", 0o17777), "invalid_request"),
        (write_req(agent.root(), b"x", 0o644), "conflict"),
        (
            WriteFileRequest { owner: Some("no-such-user-sovdb".into()), ..write_req(&path, b"x", 0o644) },
            "invalid_request",
        ),
    ];
    for (req, code) in refusals {
        assert_eq!(rejected_code(c.write_file(&req).await.unwrap_err()), code, "{req:?}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a refused write changed the file");
}

#[tokio::test]
async fn remove_read_and_tail_files() {
    let agent = TestAgent::start();
    let c = agent.client();
    let dir = agent.root().join("data");
    let file = dir.join("log.txt");
    let text: String = (1..=500).map(|i| format!("line {i}\n")).collect();
    c.write_file(&write_req(&file, text.as_bytes(), 0o644)).await.unwrap();

    let r = c.read_file(&ReadFileRequest { path: file.clone(), offset: 5, max_bytes: 2 }).await.unwrap();
    assert_eq!((r.content.as_slice(), r.size, r.eof), (&b"1\n"[..], text.len() as u64, false));
    let r = c.read_file(&ReadFileRequest { path: file.clone(), offset: 0, max_bytes: 1 << 20 }).await.unwrap();
    assert_eq!((r.content, r.eof), (text.clone().into_bytes(), true));
    let t = c.tail_file(&TailFileRequest { path: file.clone(), lines: 3 }).await.unwrap();
    assert_eq!(t.lines, ["line 498", "line 499", "line 500"]);
    let missing = c.read_file(&ReadFileRequest { path: dir.join("nope"), offset: 0, max_bytes: 10 }).await;
    assert_eq!(rejected_code(missing.unwrap_err()), "not_found");

    // A directory with content needs `recursive`.
    let not_recursive = c.remove(&RemoveRequest { path: dir.clone(), recursive: false }).await.unwrap_err();
    assert_eq!(rejected_code(not_recursive), "conflict");
    assert!(c.remove(&RemoveRequest { path: file.clone(), recursive: false }).await.unwrap().changed);
    assert!(!file.exists());
    assert!(!c.remove(&RemoveRequest { path: file.clone(), recursive: false }).await.unwrap().changed);
    c.write_file(&write_req(&dir.join("a/b/c"), b"x", 0o644)).await.unwrap();
    assert!(c.remove(&RemoveRequest { path: dir.clone(), recursive: true }).await.unwrap().changed);
    assert!(!dir.exists());
    assert!(!c.remove(&RemoveRequest { path: dir.clone(), recursive: true }).await.unwrap().changed);
    let relative = c.remove(&RemoveRequest { path: "tmp/x".into(), recursive: true }).await.unwrap_err();
    assert_eq!(rejected_code(relative), "invalid_request");
}

#[tokio::test]
async fn run_command_reports_status_output_and_user() {
    let agent = TestAgent::start();
    let c = agent.client();

    let r = c.run_command(&RunCommandRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"])).await.unwrap();
    assert_eq!((r.status.code, r.stdout.as_str(), r.stderr.as_str(), r.timed_out), (Some(3), "out\n", "err\n", false));

    let mut with_input = RunCommandRequest::new(["sh", "-c", "cat; echo \"$GREETING from $(pwd)\""]);
    with_input.stdin = Some("input\n".into());
    with_input.env.insert("GREETING".into(), "hello".into());
    with_input.cwd = Some(agent.root().to_owned());
    let r = c.run_command(&with_input).await.unwrap();
    assert!(r.status.success(), "{r:?}");
    assert_eq!(r.stdout, format!("input\nhello from {}\n", agent.root().display()));

    // A clean environment: nothing of the agent's leaks in.
    let r = c.run_command(&RunCommandRequest::new(["sh", "-c", "echo ${SOVDB_LOG:-unset}"])).await.unwrap();
    assert_eq!(r.stdout, "unset\n");

    let mut as_nobody = RunCommandRequest::new(["id", "-un"]);
    as_nobody.user = Some("nobody".into());
    let r = c.run_command(&as_nobody).await.unwrap();
    assert_eq!(r.stdout.trim(), "nobody");

    let r = c.run_command(&RunCommandRequest::new(["sh", "-c", "kill -9 $$"])).await.unwrap();
    assert_eq!((r.status.code, r.status.signal), (None, Some(9)));

    let missing = c.run_command(&RunCommandRequest::new(["/nonexistent/program"])).await.unwrap_err();
    assert_eq!(rejected_code(missing), "spawn_failed");
    let empty = c.run_command(&RunCommandRequest::new(Vec::<String>::new())).await.unwrap_err();
    assert_eq!(rejected_code(empty), "invalid_request");
}

#[tokio::test]
async fn run_command_timeout_kills_the_whole_process_group() {
    let agent = TestAgent::start();
    let mut req = RunCommandRequest::new(["sh", "-c", "sleep 1000 & echo $!; sleep 1000"]);
    // Long enough for the shell to start its children even on a busy machine.
    req.timeout_secs = 3;
    let r = agent.client().run_command(&req).await.unwrap();
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.status.signal, Some(libc::SIGKILL));
    let background: u32 = r.stdout.trim().parse().expect("the background pid");
    eventually("the background sleep to be killed", || async { (!alive(background)).then_some(()) }).await;
}

#[tokio::test]
async fn ensure_packages_reports_installed_packages_and_refuses_unknown_ones() {
    if !std::path::Path::new("/usr/bin/apt-get").exists() {
        eprintln!("skipped: this host has no apt-get");
        return;
    }
    let agent = TestAgent::start();
    let c = agent.client();
    let req = EnsurePackagesRequest { names: vec!["coreutils".into()] };
    let r = c.ensure_packages(&req).await.unwrap();
    assert!(!r.changed && r.installed.is_empty(), "{r:?}");
    assert!(!r.versions["coreutils"].is_empty());

    let unknown = EnsurePackagesRequest { names: vec!["sovdb-no-such-package".into()] };
    let err = c.ensure_packages(&unknown).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(rejected_code(err), "unknown_package", "{text}");
    assert!(text.contains("sovdb-no-such-package"), "{text}");

    let bad = EnsurePackagesRequest { names: vec!["-o=Foo".into()] };
    assert_eq!(rejected_code(c.ensure_packages(&bad).await.unwrap_err()), "invalid_request");
}

#[tokio::test]
async fn facts_and_metrics_describe_the_host() {
    let agent = TestAgent::start();
    let c = agent.client();
    let f = c.facts().await.unwrap();
    assert!(f.cpus > 0 && f.memory_bytes > 0, "{f:?}");
    assert!(!f.os.is_empty() && !f.kernel.is_empty() && !f.arch.is_empty() && !f.hostname.is_empty(), "{f:?}");
    assert!(!f.disks.is_empty() && f.disks.iter().all(|d| d.total_bytes >= d.free_bytes), "{f:?}");
    assert!(f.addresses.iter().any(|a| a == "127.0.0.1"), "{f:?}");
    assert_eq!(f.base_dir, agent.base_dir().to_string_lossy());

    for _ in 0..2 {
        let m = c.metrics().await.unwrap();
        assert!((0.0..=1.0).contains(&m.cpu_busy_ratio), "{m:?}");
        assert!(m.memory_total_bytes > 0 && m.memory_available_bytes <= m.memory_total_bytes, "{m:?}");
        assert!(m.net.iter().any(|n| n.interface == "lo"), "{m:?}");
        assert!(m.load1 >= 0.0);
    }
}

#[tokio::test]
async fn only_clients_of_the_installation_ca_get_in() {
    let agent = TestAgent::start();
    agent.client().health().await.unwrap();

    // A client certificate from another CA (trusting the right server CA).
    let other = sovdb_pki::Ca::generate("another CA").unwrap();
    let foreign = issue_client(&other, &agent.pki.ca);
    match agent.client_with(&foreign).health().await {
        Err(AgentError::Tls { message, .. }) => {
            assert!(message.contains("refused our client certificate"), "{message}")
        }
        other => panic!("a foreign client certificate got {other:?}"),
    }

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(agent.pki.ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let anonymous = reqwest::Client::builder().use_preconfigured_tls(config).build().unwrap();
    let res = anonymous.get(format!("https://127.0.0.1:{}/v1/health", agent.addr.port())).send().await;
    assert!(res.is_err(), "a client without certificate got {res:?}");

    // The client refuses an agent whose certificate another CA signed, or that is for
    // another name.
    let distrustful = issue_client(&agent.pki.ca, &other);
    match agent.client_with(&distrustful).health().await {
        Err(AgentError::Tls { message, .. }) => assert!(message.contains("not signed"), "{message}"),
        other => panic!("a server certificate of another CA got {other:?}"),
    }
    let wrong_name = AgentClient::new(agent.addr, "db-7.example", &agent.pki.client).unwrap();
    match wrong_name.health().await {
        Err(AgentError::Tls { message, .. }) => assert!(message.contains("another name"), "{message}"),
        other => panic!("a certificate for another name got {other:?}"),
    }
    // And the agent still serves its own.
    agent.client().health().await.unwrap();
}

#[tokio::test]
async fn errors_say_which_agent_and_what_is_wrong() {
    let agent = TestAgent::start();
    let bad_identity = sovdb_agent::ClientIdentity { key_pem: "not a key".into(), ..agent.pki.client.clone() };
    let err = AgentClient::new(agent.addr, "127.0.0.1", &bad_identity).unwrap_err();
    assert!(matches!(err, AgentError::Tls { .. }) && err.to_string().contains("not a PEM private key"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = AgentClient::new(closed, "127.0.0.1", &agent.pki.client).unwrap().health().await.unwrap_err();
    assert!(matches!(err, AgentError::Unreachable { address, .. } if address == closed), "{err:?}");

    // Raw bodies: unknown fields and wrong shapes come back as the agent's error format.
    let http = reqwest_client(&agent);
    let res = http
        .post(format!("https://{}/v1/remove", agent.addr))
        .json(&serde_json::json!({"path": "/tmp/x", "recursiv": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: ErrorBody = res.json().await.unwrap();
    assert!(body.code == "invalid_request" && body.message.contains("recursiv"), "{body:?}");
    let res = http.post(format!("https://{}/v1/nope", agent.addr)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<ErrorBody>().await.unwrap().code, "not_found");
}

/// A plain reqwest client with the control plane's identity, to send raw bodies.
fn reqwest_client(agent: &TestAgent) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let id = &agent.pki.client;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(id.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(id.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
    reqwest::Client::builder().use_preconfigured_tls(config).build().unwrap()
}

//! The certificate bot renews internal certificates (members', etcd's, the agent's and the
//! control plane's own) before they expire, without downtime: the real `sovdb serve` with
//! internal certificates valid 90 s, a two-member cluster on the local host, and clients
//! that keep connecting with `sslmode=verify-full` (the installation CA, the member's
//! address) to the primary directly and through HAProxy until the first certificates have
//! expired.
//!
//! What must hold: no connection fails; every member, the host's agent and every etcd
//! member serve a new certificate (serial) at least once; no member restarted
//! (`pg_postmaster_start_time()` unchanged); the renewals are operations of the actor
//! `cert-bot` that succeeded; the control plane still reaches its agent, etcd and Patroni.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, psql_within, wait_for};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
/// Due for renewal 60 s after issue, with 30 s left to put the new one in place: shared CI
/// machines can take 20 s for a cluster's renewal.
const VALIDITY_SECS: u64 = 90;

fn uri(conn: &Value, addr: &str, ca: &Path) -> String {
    format!(
        "postgresql://{}:{}@{addr}/{}?sslmode=verify-full&sslrootcert={}&connect_timeout=5",
        conn["user"].as_str().unwrap(),
        conn["password"].as_str().unwrap(),
        conn["database"].as_str().unwrap(),
        ca.display()
    )
}

/// The serial of the certificate PostgreSQL serves at `addr` (`host:port`).
fn served_serial(addr: &str) -> Option<String> {
    served(addr, "-starttls postgres")
}

/// The serial of the certificate served at `addr` from the first byte (TLS; the agent and
/// etcd refuse the handshake later for want of a client certificate, but present theirs
/// first).
fn served_tls_serial(addr: &str) -> Option<String> {
    served(addr, "")
}

fn served(addr: &str, flags: &str) -> Option<String> {
    let script =
        format!("openssl s_client {flags} -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial");
    let out = Command::new("timeout").args(["10", "sh", "-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("serial=").map(str::to_lowercase)
}

#[test]
fn member_certificates_are_renewed_under_traffic_without_a_failed_connection() {
    let mut server = TestServer::new(Path::new(BIN), None);
    server.set_env("SOVDB_INTERNAL_CERT_VALIDITY_SECS", Some(&VALIDITY_SECS.to_string()));
    server.launch();
    wait_for("host local ready", Duration::from_secs(60), || {
        (json(&server, &["host", "show", "local"])["status"] == "ready").then_some(())
    });
    ok(&server, &["cluster", "create", "c", "--replicas", "2", "--wait"]);
    let conn = json(&server, &["cluster", "connect", "c"]);
    let ca = server.ca_path();
    let members: Vec<String> =
        conn["endpoints"]["members"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let routed = conn["endpoints"]["read_write"][0].as_str().unwrap().to_string();
    let start_times = || {
        let mut t: Vec<String> = members
            .iter()
            .map(|a| psql_within(20, &uri(&conn, a, &ca), "SELECT pg_postmaster_start_time()").expect("a member"))
            .collect();
        t.sort();
        t
    };
    let started = start_times();
    let first: Vec<String> = members.iter().map(|a| served_serial(a).expect("a served certificate")).collect();
    // The host's agent and the location's etcd: their serials are watched too.
    let host = json(&server, &["host", "show", "local"]);
    let agent = format!("{}:{}", host["address"].as_str().unwrap(), host["agent_port"]);
    let location = json(&server, &["location", "show", "local"]);
    let etcd: Vec<String> = location["dcs"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["endpoint"].as_str().unwrap().to_string())
        .collect();
    assert!(!etcd.is_empty(), "{location:#}");
    let others: Vec<String> = std::iter::once(agent).chain(etcd).collect();
    let mut others_seen: Vec<std::collections::BTreeSet<String>> = others
        .iter()
        .map(|a| std::collections::BTreeSet::from([served_tls_serial(a).expect("a served certificate")]))
        .collect();

    // Clients: the primary through HAProxy (read-write) and every member directly.
    let mut seen: Vec<std::collections::BTreeSet<String>> =
        first.iter().map(|s| std::collections::BTreeSet::from([s.clone()])).collect();
    let mut failures = Vec::new();
    let mut connections = 0;
    // Long enough for every certificate's first renewal and for the old ones to expire.
    let deadline = Instant::now() + Duration::from_secs(VALIDITY_SECS + 60);
    while Instant::now() < deadline {
        for addr in std::iter::once(&routed).chain(&members) {
            connections += 1;
            if let Err(e) = psql_within(20, &uri(&conn, addr, &ca), "SELECT 1") {
                failures.push(format!("{addr}: {e}"));
            }
        }
        for (i, addr) in members.iter().enumerate() {
            if let Some(s) = served_serial(addr) {
                seen[i].insert(s);
            }
        }
        for (i, addr) in others.iter().enumerate() {
            if let Some(s) = served_tls_serial(addr) {
                others_seen[i].insert(s);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        failures.is_empty(),
        "{} of {connections} connections failed: {:#?}\nrenewals:\n{}\nlog:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        renewals(&server),
        server.log()
    );
    for (addr, serials) in members.iter().zip(&seen) {
        assert!(
            serials.len() >= 2,
            "{addr} served a renewed certificate: {serials:?}; renewals:\n{}",
            renewals(&server)
        );
    }
    for (addr, serials) in others.iter().zip(&others_seen) {
        assert!(
            serials.len() >= 2,
            "{addr} served a renewed certificate: {serials:?}; renewals:\n{}",
            renewals(&server)
        );
    }
    assert_eq!(start_times(), started, "no member restarted");
    let ops = json(&server, &["op", "list"]);
    for kind in ["cluster.renew-certs", "location.renew-certs", "host.renew-certs"] {
        let renewals: Vec<&Value> = ops.as_array().unwrap().iter().filter(|o| o["kind"] == kind).collect();
        assert!(!renewals.is_empty(), "no {kind}: {ops:#}");
        for op in renewals {
            assert_eq!(op["created_by"], "cert-bot", "{op:#}");
            assert!(op["state"] == "succeeded" || op["state"] == "running", "{op:#}");
        }
    }
    // Each kind of renewal is in a timeline: the cluster's, and the installation's (admin).
    let events = json(&server, &["events"]);
    for target in ["cluster/c", "host/local", "location/local"] {
        assert!(
            events.as_array().unwrap().iter().any(|e| e["kind"] == "certs-renewed" && e["target"] == target),
            "a certs-renewed event of {target}: {events:#}"
        );
    }
    // The control plane still reaches the agent, Patroni and etcd: its own client
    // certificate (valid 60 s too) was renewed and its clients made again.
    assert_eq!(json(&server, &["host", "show", "local"])["status"], "ready");
    let location = json(&server, &["location", "show", "local"]);
    assert!(location["dcs"]["members"].as_array().unwrap().iter().all(|m| m["healthy"] == true), "{location:#}");
    let show = json(&server, &["cluster", "show", "c"]);
    assert_eq!(show["state"], "ready", "{show:#}");
}

/// Every renewal operation with its steps (when each ran, how often, why it failed), to
/// say what happened when the test fails.
fn renewals(server: &TestServer) -> String {
    let ops = json(server, &["op", "list"]);
    let mut out = String::new();
    for op in ops.as_array().unwrap().iter().filter(|o| o["kind"].as_str().unwrap_or("").ends_with("renew-certs")) {
        let shown = json(server, &["op", "show", op["id"].as_str().unwrap()]);
        out.push_str(&format!("{shown:#}\n"));
    }
    out
}

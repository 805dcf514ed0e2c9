//! Per-cluster network allow-lists on SSH test hosts (network namespaces): the real
//! `sovdb serve`, agents over SSH, Patroni, etcd, PostgreSQL and HAProxy.
//!
//! A two-member cluster on two of three hosts; the third host is a client machine of the
//! location's network, and the control plane's namespace (the bridge address) another.
//! What must hold:
//! - a new cluster allows its location's networks (the hosts' /24), so both clients
//!   connect, to PostgreSQL directly, through HAProxy and through PgBouncer;
//! - bad CIDRs are refused before anything changes (no operation, the same list);
//! - narrowed to the bridge address alone, the client host is refused by PostgreSQL
//!   ("no pg_hba.conf entry") and by HAProxy, while the bridge client still gets in, the
//!   replica keeps streaming (a row written on the primary reaches it) and no member
//!   restarted (`pg_postmaster_start_time()` unchanged); PgBouncer (`--pooler`) refuses
//!   the client host too ("login rejected");
//! - allowed again, the client host connects again.
//!
//! Cleanup on failure: `TestServer`'s and `TestHosts`' drops.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, json, ok, psql, refused, wait_for};
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::testhosts::TestHosts;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const LOC: &str = "dc1";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `psql URI -c SQL` inside test host `host`'s namespace (a client on that machine).
fn psql_on(hosts: &TestHosts, host: &str, uri: &str, sql: &str) -> Result<String, String> {
    let out =
        hosts.exec(host, ["timeout", "-s", "KILL", "20", PSQL, uri, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(format!("{}: {}", out.status, text(&out.stderr).trim()))
    }
}

fn uri(conn: &Value, addr: &str) -> String {
    format!(
        "postgresql://{}:{}@{addr}/{}?sslmode=require&connect_timeout=5",
        conn["user"].as_str().unwrap(),
        conn["password"].as_str().unwrap(),
        conn["database"].as_str().unwrap()
    )
}

fn allow_list(server: &TestServer) -> Vec<String> {
    let c = json(server, &["cluster", "show", "ac"]);
    c["allow"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn operations(server: &TestServer, kind: &str) -> usize {
    let ops = json(server, &["op", "list"]);
    ops.as_array().unwrap().iter().filter(|o| o["kind"] == kind).count()
}

/// Every member's `pg_postmaster_start_time()`, read from the control plane's namespace.
fn start_times(conn: &Value) -> Vec<String> {
    let mut out: Vec<String> = conn["endpoints"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| psql(&uri(conn, a.as_str().unwrap()), "SELECT pg_postmaster_start_time()").expect("a member answers"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_client_outside_the_allow_list_is_refused_without_a_restart() {
    let hosts = TestHosts::up(3);
    let server = TestServer::start(Path::new(BIN));
    ok(&server, &["location", "create", LOC, "--provider", "ssh", "--region", "lab"]);
    std::thread::scope(|scope| {
        for h in hosts.hosts() {
            let server = &server;
            scope.spawn(move || {
                let (address, key, base) =
                    (h.address.to_string(), h.ssh_key.display().to_string(), h.base_dir.display().to_string());
                let args = ["host", "add", &h.name, "--location", LOC, "--address", &address, "--ssh-key", &key];
                let mut args = args.to_vec();
                args.extend(["--base-dir", &base, "--wait"]);
                ok(server, &args);
            });
        }
    });
    ok(
        &server,
        &["cluster", "create", "ac", "--location", LOC, "--replicas", "2", "--spread", "host", "--pooler", "--wait"],
    );
    let c = json(&server, &["cluster", "show", "ac"]);
    let used: Vec<&str> = c["members"].as_array().unwrap().iter().map(|m| m["host"].as_str().unwrap()).collect();
    let client = hosts.hosts().iter().find(|h| !used.contains(&h.name.as_str())).expect("a host without a member");
    let client_host = client.name.clone();
    let subnet = {
        let o = match client.address {
            std::net::IpAddr::V4(a) => a.octets(),
            other => panic!("test hosts are IPv4: {other}"),
        };
        format!("{}.{}.{}.0/24", o[0], o[1], o[2])
    };
    let bridge = format!("{}/32", hosts.bridge_address());

    // 1. The default: the location's network.
    assert_eq!(allow_list(&server), vec![subnet.clone()], "{c:#}");
    let conn = json(&server, &["cluster", "connect", "ac"]);
    let member = conn["endpoints"]["members"][0].as_str().unwrap().to_string();
    let routed = conn["endpoints"]["read_write"][0].as_str().unwrap().to_string();
    let pooled = conn["endpoints"]["pooler"][0].as_str().unwrap().to_string();
    for addr in [&member, &routed, &pooled] {
        assert_eq!(psql_on(&hosts, &client_host, &uri(&conn, addr), "SELECT 1").as_deref(), Ok("1"), "{addr}");
        assert_eq!(psql(&uri(&conn, addr), "SELECT 1").as_deref(), Ok("1"), "{addr} from the bridge");
    }
    let started = start_times(&conn);

    // 2. Bad CIDRs change nothing.
    let before = operations(&server, "cluster.allow-list");
    refused(&server, &["cluster", "allow", "ac", "--cidr", "10.1.2.3/8"], "did you mean 10.0.0.0/8");
    refused(&server, &["cluster", "allow", "ac", "--cidr", "nope"], "not a CIDR");
    refused(&server, &["cluster", "allow", "ac", "--cidr", "10.0.0.0/33"], "prefix length");
    refused(&server, &["cluster", "deny", "ac", "--cidr", "fd00::1/8"], "did you mean fd00::/8");
    refused(&server, &["cluster", "deny", "ac", "--cidr", "192.0.2.0/24"], "is not on cluster \"ac\"'s allow-list");
    assert_eq!(operations(&server, "cluster.allow-list"), before, "no operation for a refused change");
    assert_eq!(allow_list(&server), vec![subnet.clone()]);

    // 3. Only the bridge address: the client host is refused, members keep replicating.
    ok(&server, &["cluster", "allow", "ac", "--cidr", &bridge, "--wait"]);
    ok(&server, &["cluster", "deny", "ac", "--cidr", &subnet, "--wait"]);
    assert_eq!(allow_list(&server), vec![bridge.clone()]);
    let err = psql_on(&hosts, &client_host, &uri(&conn, &member), "SELECT 1").expect_err("refused by PostgreSQL");
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(err.contains(&client.address.to_string()), "names the client's address: {err}");
    let err = psql_on(&hosts, &client_host, &uri(&conn, &routed), "SELECT 1").expect_err("refused by HAProxy");
    eprintln!("allowlist: through HAProxy: {err}");
    let err = psql_on(&hosts, &client_host, &uri(&conn, &pooled), "SELECT 1").expect_err("refused by PgBouncer");
    assert!(err.contains("login rejected"), "{err}");
    assert_eq!(psql(&uri(&conn, &pooled), "SELECT 1").as_deref(), Ok("1"), "the bridge still gets in the pooler");
    assert_eq!(psql(&uri(&conn, &routed), "SELECT 1").as_deref(), Ok("1"), "the bridge still gets in");
    let rw = uri(&conn, &routed);
    psql(&rw, "CREATE TABLE IF NOT EXISTS t (v int); INSERT INTO t VALUES (42)").unwrap();
    for addr in conn["endpoints"]["members"].as_array().unwrap() {
        let u = uri(&conn, addr.as_str().unwrap());
        wait_for("the row replicated", Duration::from_secs(30), || {
            (psql(&u, "SELECT count(*) FROM t WHERE v = 42").ok().as_deref() == Some("1")).then_some(())
        });
    }
    let c = json(&server, &["cluster", "show", "ac"]);
    assert_eq!(c["state"], "ready", "{c:#}");
    assert_eq!(start_times(&conn), started, "no member restarted");

    // 4. Allowed again.
    ok(&server, &["cluster", "allow", "ac", "--cidr", &subnet, "--wait"]);
    for addr in [&member, &routed, &pooled] {
        assert_eq!(psql_on(&hosts, &client_host, &uri(&conn, addr), "SELECT 1").as_deref(), Ok("1"), "{addr}");
    }
    assert_eq!(start_times(&conn), started, "no member restarted");
    let events = text(&cli(&server, &["cluster", "events", "ac"]).stdout);
    assert!(events.contains("applied without a restart"), "{events}");
}

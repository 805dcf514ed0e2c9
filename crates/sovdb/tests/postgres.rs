//! PostgreSQL clusters on the `local` location, end to end through the CLI: real Patroni,
//! etcd, PostgreSQL and HAProxy started by the real agent; real kills.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, json, ok, psql, ready_server, wait_for};
use sovdb_test_utils::processes_mentioning as processes;
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn member_dir(server: &TestServer, cluster: &Value, member: &str) -> std::path::PathBuf {
    sovdb_test_utils::member_dir(&server.data_dir().join("hosts/local"), cluster["id"].as_str().unwrap(), member)
}

#[test]
fn a_single_member_cluster_serves_tls_and_is_deleted_without_a_trace() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "one", "--param", "work_mem=8MB", "--pooler", "--wait"]);
    let c = json(&server, &["cluster", "show", "one"]);
    assert_eq!(c["state"], "ready", "{c:#}");
    assert_eq!(c["members"][0]["role"], "primary", "{c:#}");
    assert_eq!(c["params"]["work_mem"], "8MB");
    // The create's wait for a primary said what it saw while Patroni initialised (it can't
    // run a primary at the first look, a moment after it started).
    let ops = json(&server, &["op", "list"]);
    let create = ops.as_array().unwrap().iter().find(|o| o["kind"] == "cluster.create").unwrap();
    let wait = create["steps"].as_array().unwrap().iter().find(|s| s["name"] == "wait-primary").unwrap();
    let said = wait["progress"]["message"].as_str().unwrap_or_default();
    assert!(said.starts_with("waiting for a primary (up to 5m): ") && said.contains("one-1: "), "{wait:#}");
    let shown = ok(&server, &["op", "show", create["id"].as_str().unwrap()]);
    assert!(shown.contains("wait-primary") && shown.contains("waiting for a primary"), "{shown}");
    // The location's DCS, made by this first cluster: one etcd member (one host), healthy.
    let loc = json(&server, &["location", "show", "local"]);
    assert_eq!(loc["dcs"]["status"], "healthy", "{loc:#}");
    let etcd = loc["dcs"]["members"].as_array().unwrap();
    assert_eq!(etcd.len(), 1, "{loc:#}");
    assert_eq!((etcd[0]["host"].as_str(), etcd[0]["healthy"].as_bool()), (Some("local"), Some(true)), "{loc:#}");
    let table = ok(&server, &["location", "show", "local"]);
    assert!(table.contains("healthy (1 of 1 etcd members healthy)"), "{table}");

    // The URI just works, over TLS verified against the CA it names, as the app user.
    let uri = ok(&server, &["cluster", "connect", "one"]).trim().to_string();
    assert!(uri.contains("sslmode=verify-full") && uri.contains("sslrootcert="), "{uri}");
    psql(&uri, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)").unwrap();
    let got = psql(&uri, "SELECT v, current_user, current_database(), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), current_setting('work_mem'), current_setting('data_checksums') FROM t").unwrap();
    assert_eq!(got, "42|app|app|t|8MB|on");
    // The CA it prints is the one that verifies.
    let ca = ok(&server, &["cluster", "connect", "one", "--print-ca"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // The read-write route of HAProxy reaches the primary.
    let conn = json(&server, &["cluster", "connect", "one"]);
    let rw = conn["endpoints"]["read_write"][0].as_str().unwrap();
    let via_haproxy = format!("postgresql://app:{}@{rw}/app?sslmode=require", conn["password"].as_str().unwrap());
    assert_eq!(psql(&via_haproxy, "SELECT pg_is_in_recovery()").unwrap(), "f");
    // PgBouncer (--pooler) pools in front of the read-write route, over TLS.
    let pooler = conn["endpoints"]["pooler"][0].as_str().expect("a pooler endpoint");
    let via_pooler = format!("postgresql://app:{}@{pooler}/app?sslmode=require", conn["password"].as_str().unwrap());
    assert_eq!(psql(&via_pooler, "SELECT v FROM t").unwrap(), "42");
    // PostgreSQL and Patroni run as the unprivileged database user.
    let dir = member_dir(&server, &c, "one-1");
    let postmaster = processes(&format!("postgres -D {}", dir.join("data").display()));
    assert_eq!(postmaster.len(), 1, "one postmaster");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", postmaster[0])).unwrap();
    let uid_line = uid.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid_line.split_whitespace().nth(1).unwrap().eq("0"), "PostgreSQL runs as root: {uid_line}");
    // Reading the password was audited.
    let audit = ok(&server, &["audit", "list", "-o", "json"]);
    assert!(audit.contains("cluster.connect"), "the secret read is in the audit log");
    // Its one place in plain text is `cluster connect`: not the store (sealed), not an
    // operation's step outputs, the cluster's answers, its events or the audit log.
    let password = conn["password"].as_str().unwrap();
    let ops = json(&server, &["op", "list"]);
    let mut seen = vec![
        audit,
        ok(&server, &["audit", "export"]),
        ops.to_string(),
        ok(&server, &["cluster", "show", "one", "-o", "json"]),
        ok(&server, &["cluster", "events", "one", "-o", "json"]),
    ];
    for op in ops.as_array().unwrap() {
        seen.push(ok(&server, &["op", "show", op["id"].as_str().unwrap(), "-o", "json"]));
    }
    for f in ["sovdb.db", "sovdb.db-wal"] {
        seen.push(String::from_utf8_lossy(&std::fs::read(server.data_dir().join(f)).unwrap_or_default()).into_owned());
    }
    for (i, text) in seen.iter().enumerate() {
        assert!(!text.contains(password), "the password is in plain text in place #{i}");
    }

    ok(&server, &["cluster", "delete", "one", "--wait"]);
    assert!(!cli(&server, &["cluster", "show", "one"]).status.success());
    assert!(!dir.exists(), "the member's directory is gone");
    assert_eq!(processes(&dir.display().to_string()), Vec::<u32>::new(), "no process of the member is left");
    let events = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(!events.contains(conn["password"].as_str().unwrap()), "the password never reaches the log");
}

#[test]
fn a_three_member_sync_cluster_fails_over_without_losing_an_acknowledged_write() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "ha", "--replicas", "3", "--sync", "--wait"]);
    let c = json(&server, &["cluster", "show", "ha"]);
    let members = c["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{c:#}");
    let primary =
        members.iter().find(|m| m["role"] == "primary").expect("a primary")["name"].as_str().unwrap().to_string();
    assert!(members.iter().any(|m| m["sync"] == true), "a synchronous standby: {c:#}");

    let uri = ok(&server, &["cluster", "connect", "ha"]).trim().to_string();
    let ro = ok(&server, &["cluster", "connect", "ha", "--read-only"]).trim().to_string();
    psql(&uri, "CREATE TABLE w (v int PRIMARY KEY)").unwrap();
    psql(&uri, "INSERT INTO w VALUES (0)").unwrap();
    // Read back from a replica through the read-only URI.
    wait_for("the row on a replica", Duration::from_secs(30), || {
        (psql(&ro, "SELECT pg_is_in_recovery(), count(*) FROM w").ok()? == "t|1").then_some(())
    });

    // Writes every ~10 ms through the URI, each acknowledged one remembered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (uri, stop) = (uri.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                if psql(&uri, &format!("INSERT INTO w VALUES ({i})")).is_ok() {
                    acked.push(i);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Lose the primary: its supervisor (so nothing restarts it), Patroni and PostgreSQL.
    let dir = member_dir(&server, &c, &primary);
    let key = dir.file_name().unwrap().to_str().unwrap().to_string();
    for pid in processes(&format!("pg-{key}-patroni"))
        .into_iter()
        .chain(processes(&dir.join("patroni.yml").display().to_string()))
        .chain(processes(&dir.join("data").display().to_string()))
    {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    // Backends of the killed postmaster die with it (they notice their parent is gone).
    let new_primary = wait_for("a replica promoted", Duration::from_secs(60), || {
        let c = json(&server, &["cluster", "show", "ha"]);
        c["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "primary" && m["name"] != primary.as_str() && m["state"] == "running")
            .map(|m| m["name"].as_str().unwrap().to_string())
    });
    // Writes resume through the same URI.
    wait_for("writes resume", Duration::from_secs(30), || psql(&uri, "SELECT 1 FROM w LIMIT 1").ok());
    // The control plane saw it: a failover event, and the cluster degraded while the old
    // primary is away.
    wait_for("the failover recorded", Duration::from_secs(30), || {
        let events = json(&server, &["cluster", "events", "ha"]);
        events.as_array()?.iter().find(|e| e["kind"] == "failover").map(|e| {
            let m = e["message"].as_str().unwrap();
            assert!(m.contains(&format!("{primary} → {new_primary}")), "{m}");
        })
    });
    wait_for("the cluster listed as degraded", Duration::from_secs(30), || {
        (json(&server, &["cluster", "list"])[0]["state"] == "degraded").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 10, "the loop wrote: {}", acked.len());
    let have: std::collections::BTreeSet<i64> =
        psql(&uri, "SELECT v FROM w").unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let lost: Vec<_> = acked.iter().filter(|v| !have.contains(v)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost across the failover: {lost:?}");
    assert_ne!(new_primary, primary);

    // The old primary's host "returns": its agent is restarted (the control plane does
    // that by itself), adopts the member and starts it again; it rejoins as a replica.
    // (Supervisors run `agent supervise --base-dir …`: not matched.)
    for pid in processes(&format!("agent --base-dir {} ", server.data_dir().join("hosts/local").display())) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_for("the old primary rejoins as a replica", Duration::from_secs(120), || {
        let c = json(&server, &["cluster", "show", "ha"]);
        let m = c["members"].as_array()?.iter().find(|m| m["name"] == primary.as_str())?.clone();
        (m["role"] == "replica" && m["state"] == "running" && c["state"] == "ready").then_some(())
    });
    wait_for("the cluster listed as ready again", Duration::from_secs(30), || {
        (json(&server, &["cluster", "list"])[0]["state"] == "ready").then_some(())
    });
    let kinds: Vec<String> = json(&server, &["cluster", "events", "ha"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    // The loop may see the primary gone before Patroni promotes (degraded, then failover)
    // or after (failover, then degraded); a member that rejoins may show a passing state
    // more than once, so degraded and recovered may repeat. The failover may not.
    assert_eq!(kinds[0], "created", "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "failover").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&"degraded".to_string()), "{kinds:?}");
    // Alerts (the failover and member-down rules) are in the timeline too.
    let expected = ["failover", "degraded", "recovered", "alert-firing", "alert-resolved"];
    assert!(kinds[1..].iter().all(|k| expected.contains(&k.as_str())), "{kinds:?}");
    let last = kinds.iter().rev().find(|k| !k.starts_with("alert-"));
    assert_eq!(last.map(String::as_str), Some("recovered"), "{kinds:?}");
    ok(&server, &["cluster", "delete", "ha", "--wait"]);
}

#[test]
fn bad_cluster_requests_are_refused_before_anything_is_created() {
    let server = ready_server(Path::new(BIN));
    // `sovdb ARGS` fails and says `needle`.
    let refused_cmd = |args: &[&str], needle: &str| {
        let out = cli(&server, args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err:?} does not say {needle:?}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let refused = |args: &[&str], needle: &str| refused_cmd(&[&["cluster", "create"], args].concat(), needle);
    refused(&["db", "--engine", "oracle"], "unknown engine");
    refused(&["db", "--version", "9.6"], "not available");
    refused(&["db", "--replicas", "0"], "out of range");
    refused(&["db", "--replicas", "-2"], "out of range");
    refused(&["db", "--replicas", "100"], "out of range");
    refused(&["Not_A_Label"], "cluster name");
    refused(&["db", "--param", "shared_bufers=1GB"], "did you mean shared_buffers");
    refused(&["db", "--param", "max_connections=0"], "outside");
    refused(&["db", "--param", "port=5433"], "manages this parameter");
    refused(&["db", "--param", "oops"], "key=value");
    refused(&["db", "--user", "postgres"], "reserved");
    refused(&["db", "--db", "1abc"], "plain SQL name");
    refused(&["db", "--location", "mars"], "not found");
    refused(&["db", "--replicas", "2", "--spread", "host"], "--spread host needs 2 hosts");
    refused(&["db", "--require-label", "tier=nvme"], "labels tier=nvme");
    let clusters = json(&server, &["cluster", "list"]);
    assert_eq!(clusters, serde_json::json!([]), "nothing was created");
    let ops = json(&server, &["op", "list"]);
    assert!(ops.as_array().unwrap().iter().all(|o| o["kind"] != "cluster.create"), "no operation: {ops:#}");

    // A name in use is refused too.
    ok(&server, &["cluster", "create", "dup"]);
    refused(&["dup"], "already exists");

    // Day-2 requests that can't work are refused before an operation exists.
    refused_cmd(&["cluster", "switchover", "dup"], "cluster \"dup\" is still being created");
    let create =
        json(&server, &["op", "list"]).as_array().unwrap().iter().find(|o| o["kind"] == "cluster.create").unwrap()
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    ok(&server, &["op", "watch", &create]);
    refused_cmd(&["cluster", "switchover", "dup"], "no replica to switch over to");
    refused_cmd(&["cluster", "failover", "nope"], "not found");
    refused_cmd(&["cluster", "scale", "dup", "--replicas", "0"], "out of range");
    refused_cmd(&["cluster", "scale", "dup", "--replicas", "1"], "has 1 member(s) already");
    refused_cmd(&["cluster", "scale", "dup", "--replicas", "2", "--spread", "host"], "unexpected argument");
    refused_cmd(&["cluster", "set", "dup"], "nothing to change");
    refused_cmd(&["cluster", "set", "dup", "--param", "work_mem=lots"], "work_mem");
    refused_cmd(&["cluster", "set", "dup", "--reset", "port"], "manages this parameter");
    refused_cmd(&["cluster", "set", "dup", "--reset", "shared_bufers"], "did you mean shared_buffers");
    let ops = json(&server, &["op", "list"]);
    let kinds: Vec<&str> = ops.as_array().unwrap().iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| k.starts_with("cluster.")).count(), 1, "only the create ran: {kinds:?}");
    ok(&server, &["cluster", "delete", "dup", "--wait"]);
}

/// `psql` on one member directly, as the application user.
fn on_member(conn: &Value, address: &str, sql: &str) -> Result<String, String> {
    let uri = format!("postgresql://app:{}@{address}/app?sslmode=require", conn["password"].as_str().unwrap());
    psql(&uri, sql)
}

fn primary_of(c: &Value) -> String {
    c["members"].as_array().unwrap().iter().find(|m| m["role"] == "primary").expect("a primary")["name"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn day_two_scale_switch_over_change_parameters_and_restart() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "d2", "--sync", "--wait"]);
    let uri = ok(&server, &["cluster", "connect", "d2"]).trim().to_string();
    psql(&uri, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)").unwrap();

    // 1 → 3: the new members clone from the primary and stream; every HAProxy routes to all.
    ok(&server, &["cluster", "scale", "d2", "--replicas", "3", "--wait"]);
    let c = json(&server, &["cluster", "show", "d2"]);
    assert_eq!(c["replicas"], 3, "{c:#}");
    assert_eq!(c["state"], "ready", "{c:#}");
    let members = c["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{c:#}");
    assert!(members.iter().all(|m| m["state"] == "running"), "{c:#}");
    assert!(members.iter().any(|m| m["sync"] == true), "a synchronous standby: {c:#}");
    // The URI names the members there are: a new one after a scale.
    let uri = ok(&server, &["cluster", "connect", "d2"]).trim().to_string();
    assert_eq!(uri.matches("127.0.0.1:").count(), 3, "{uri}");
    let conn = json(&server, &["cluster", "connect", "d2"]);
    for m in members {
        let got = wait_for("the row on every member", Duration::from_secs(30), || {
            on_member(&conn, m["address"].as_str().unwrap(), "SELECT count(*) FROM t").ok()
        });
        assert_eq!(got, "1");
    }
    // The first member's HAProxy (reloaded with its new peers) routes reads to a replica.
    let ro = conn["endpoints"]["read_only"][0].as_str().unwrap();
    wait_for("the read-only route reaches a replica", Duration::from_secs(30), || {
        (on_member(&conn, ro, "SELECT pg_is_in_recovery()").ok()? == "t").then_some(())
    });

    // A switchover to the synchronous standby, by name.
    let old = primary_of(&c);
    let to = members.iter().find(|m| m["sync"] == true).unwrap()["name"].as_str().unwrap().to_string();
    ok(&server, &["cluster", "switchover", "d2", "--to", &to, "--wait"]);
    let c = json(&server, &["cluster", "show", "d2"]);
    assert_eq!(primary_of(&c), to, "{c:#}");
    let was = c["members"].as_array().unwrap().iter().find(|m| m["name"] == old.as_str()).unwrap();
    assert_eq!((was["role"].as_str(), was["state"].as_str()), (Some("replica"), Some("running")), "{c:#}");
    psql(&uri, "INSERT INTO t VALUES (2)").unwrap();

    // A reloadable parameter: no restart. One read at start: a rolling restart.
    let said = ok(&server, &["cluster", "set", "d2", "--param", "work_mem=12MB", "--wait"]);
    assert!(said.contains("applied without a restart"), "{said}");
    let said = ok(&server, &["cluster", "set", "d2", "--param", "max_connections=120", "--wait"]);
    assert!(said.contains("max_connections need(s) a restart: restarted"), "{said}");
    let c = json(&server, &["cluster", "show", "d2"]);
    for m in c["members"].as_array().unwrap() {
        let got = on_member(
            &conn,
            m["address"].as_str().unwrap(),
            "SELECT current_setting('work_mem'), current_setting('max_connections')",
        );
        assert_eq!(got.unwrap(), "12MB|120", "on {}", m["name"]);
        assert!(said.contains(m["name"].as_str().unwrap()), "{said} names every restarted member");
    }
    assert_eq!(c["params"]["max_connections"], "120", "{c:#}");
    assert_eq!(primary_of(&c), to, "a rolling restart keeps the primary");

    // 3 → 2 never removes the primary; the removed member leaves nothing behind.
    ok(&server, &["cluster", "scale", "d2", "--replicas", "2", "--wait"]);
    let c = json(&server, &["cluster", "show", "d2"]);
    let names: Vec<&str> = c["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{c:#}");
    assert_eq!(primary_of(&c), to, "{c:#}");
    let gone = ["d2-1", "d2-2", "d2-3"].into_iter().find(|n| !names.contains(n)).unwrap();
    let dir = member_dir(&server, &c, gone);
    assert!(!dir.exists(), "{} is gone", dir.display());
    assert_eq!(processes(&dir.display().to_string()), Vec::<u32>::new(), "no process of {gone} is left");

    // A rolling restart: every member's PostgreSQL starts again, replicas first.
    ok(&server, &["cluster", "restart", "d2", "--wait"]);
    let ops = json(&server, &["op", "list"]);
    let restart = ops.as_array().unwrap().iter().find(|o| o["kind"] == "cluster.restart").unwrap();
    let steps = restart["steps"].as_array().unwrap();
    let restarted: Vec<&str> = steps[1..]
        .iter()
        .flat_map(|s| s["output"]["restarted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()))
        .collect();
    assert_eq!(restarted.len(), 2, "{restart:#}");
    assert_eq!(restarted[1], to, "the primary last: {restart:#}");
    assert_eq!(psql(&uri, "SELECT count(*) FROM t").unwrap(), "2");

    // A forced failover without --to promotes the synchronous standby.
    let standby = names.iter().find(|n| **n != to).unwrap().to_string();
    ok(&server, &["cluster", "failover", "d2", "--wait"]);
    let c = json(&server, &["cluster", "show", "d2"]);
    assert_eq!(primary_of(&c), standby, "{c:#}");
    wait_for("writes through the URI", Duration::from_secs(30), || psql(&uri, "INSERT INTO t VALUES (3)").ok());
    // Every change is an event, and none of ours was taken for one of Patroni's failovers.
    std::thread::sleep(Duration::from_secs(3));
    let kinds: Vec<String> = json(&server, &["cluster", "events", "d2"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        // Alerts (the failover rule's) are in the timeline too, when the evaluator's round falls.
        .filter(|k| !k.starts_with("alert-"))
        .collect();
    assert_eq!(
        kinds,
        ["created", "scaled", "switchover", "parameters", "parameters", "scaled", "restart", "failover"],
        "one event per change"
    );
    ok(&server, &["cluster", "delete", "d2", "--wait"]);
}

//! The default alert rules end to end, on real engines, with thresholds a project set
//! (`sovdb alert rule set`): each rule's condition made true for real, the alert seen
//! firing in `sovdb alert list` and on the timeline (and, for some, received by a webhook
//! receiver in this test process), then resolving where the rule resolves.
//!
//! - `replication-lag` (threshold a few KiB): a replica's replay paused with
//!   `pg_wal_replay_pause()` while the primary writes, then resumed. Its Patroni is frozen
//!   meanwhile: Patroni 3.0.2 resumes a paused replay at every loop on PostgreSQL 14+
//!   (outside maintenance mode);
//! - `disk-95` (threshold 1 %): the host's real file systems are above it; `--reset`
//!   resolves it (not `disk-85`: by sovdb's measure, space free for unprivileged users,
//!   this machine's root file system is already above 85 %, so its default fires anyway);
//! - `backup-failed`: the repository's backup directory made unreadable for the database
//!   user, so pgBackRest fails for real; a good backup afterwards resolves it;
//! - `failover` (window 30 s): `sovdb cluster failover`; it resolves by itself after the
//!   project's window;
//! - `no-primary`: every member's Patroni frozen (SIGSTOP), then continued;
//! - `host-unreachable`: a test host (a network namespace) whose link is cut, then healed.
//!
//! Independent scenarios are separate tests (nextest runs them in parallel), each with its
//! own `sovdb serve`. The waits are generous: the evaluator and the metrics pull run every
//! 10 s, and this machine is shared.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, json, ok, psql, ready_server, refused, wait_for};
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::testhosts::TestHosts;
use sovdb_test_utils::webhook::Receiver;
use sovdb_test_utils::{patroni_of, signal, Frozen};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// How long any alert may take to fire or resolve here: metrics every 10 s, the evaluator
/// every 10 s, a busy machine.
const ALERT_WAIT: Duration = Duration::from_secs(180);

/// The notification of `alert` with `status`, once `rx` received it.
fn notified(rx: &Receiver, alert: &Value, status: &str) -> Value {
    wait_for(&format!("the webhook told {} {status}", alert["rule"]), Duration::from_secs(90), || {
        rx.bodies().into_iter().find(|v| v["alert"] == alert["id"] && v["status"] == status)
    })
}

fn alerts(server: &TestServer) -> Vec<Value> {
    json(server, &["alert", "list"]).as_array().cloned().unwrap_or_default()
}

/// Waits for an alert of `rule` in `state` whose subject `subject` accepts.
fn wait_alert(server: &TestServer, rule: &str, state: &str, subject: impl Fn(&str) -> bool) -> Value {
    wait_for(&format!("{rule} {state}"), ALERT_WAIT, || {
        alerts(server)
            .into_iter()
            .find(|a| a["rule"] == rule && a["state"] == state && subject(a["subject"].as_str().unwrap_or("")))
    })
}

/// Waits until the alert `a` (by ID) is resolved.
fn wait_resolved(server: &TestServer, a: &Value) -> Value {
    wait_for(&format!("{} on {} resolved", a["rule"], a["subject"]), ALERT_WAIT, || {
        alerts(server).into_iter().find(|x| x["id"] == a["id"] && x["state"] == "resolved")
    })
}

/// Whether the timeline (`sovdb events ARGS`) tells `kind` for `rule` on `subject`.
fn told(server: &TestServer, args: &[&str], kind: &str, rule: &str, subject: &str) -> bool {
    let mut all = vec!["events"];
    all.extend(args);
    let want = format!("alert {rule} {} on {subject}", if kind == "alert-firing" { "firing" } else { "resolved" });
    json(server, &all)
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["kind"] == kind && e["message"].as_str().unwrap_or("").contains(&want)))
}

/// The default rule `name` as `alert rule list` shows it.
fn rule(server: &TestServer, name: &str) -> Value {
    let rules = json(server, &["alert", "rule", "list"]);
    rules.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap()
}

/// `psql` on a member of a cluster on host `local`, through its socket, as the database
/// superuser (peer authentication).
fn member_psql(server: &TestServer, cluster: &Value, member: &str, sql: &str) -> String {
    let m = cluster["members"].as_array().unwrap().iter().find(|m| m["name"] == member).unwrap();
    let dir =
        sovdb_test_utils::member_dir(&server.data_dir().join("hosts/local"), cluster["id"].as_str().unwrap(), member);
    let port = m["address"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", PSQL, "-h"])
        .arg(dir.join("run"))
        .args(["-p", &port, "-U", "postgres", "-d", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql on {member}: {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn members_by_role(cluster: &Value) -> (String, String) {
    let members = cluster["members"].as_array().unwrap();
    let name = |primary: bool| {
        members.iter().find(|m| (m["role"] == "primary") == primary).unwrap()["name"].as_str().unwrap().to_string()
    };
    (name(true), name(false))
}

/// Restores a directory's mode on drop, so a failing test leaves the repository usable.
struct ModeBack(PathBuf, u32);

impl Drop for ModeBack {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(self.1));
    }
}

#[test]
fn lag_disk_and_backup_alerts_follow_the_projects_thresholds() {
    let server = ready_server(Path::new(BIN));
    let rx = Receiver::start();
    ok(&server, &["alert", "channel", "create", "hook", "--type", "webhook", "--url", &rx.url]);

    // Bad settings are refused with what is wrong.
    refused(&server, &["alert", "rule", "set", "nope", "--threshold", "1"], "alert rule \"nope\" not found");
    refused(&server, &["alert", "rule", "set", "member-down", "--threshold", "1"], "member-down has no threshold");
    refused(&server, &["alert", "rule", "set", "disk-95", "--threshold", "150"], "between 0.1 % and 99.9 %");
    refused(&server, &["alert", "rule", "set", "replication-lag", "--threshold", "lots"], "a number of bytes");
    refused(&server, &["alert", "rule", "set", "disk-85", "--for", "forever"], "not a duration");
    refused(&server, &["alert", "rule", "set", "disk-85"], "nothing to change");
    refused(&server, &["alert", "rule", "set", "disk-85", "--channel", "pager"], "channel \"pager\" not found");
    let disk = rule(&server, "disk-95");
    assert_eq!((disk["threshold"].as_f64(), disk["changed"].as_bool()), (Some(95.0), Some(false)), "{disk:#}");

    let repo = server.data_dir().join("backups");
    ok(&server, &["repo", "create", "r1", "--type", "posix", "--path", repo.to_str().unwrap(), "--default"]);
    ok(&server, &["cluster", "create", "ab", "--replicas", "2", "--wait"]);
    let c = json(&server, &["cluster", "show", "ab"]);
    let (_, replica) = members_by_role(&c);

    // disk-95 at 1 %: this machine's file systems are fuller than that, and (as measured
    // by the agent) less full than 95 %, so the default resolves it again.
    let used = wait_for("the host's disks measured", Duration::from_secs(60), || {
        let latest = |name: &str| -> BTreeMap<String, f64> {
            let s = json(&server, &["metrics", "ab", "--name", name, "--since", "5m"]);
            let series = s["series"].as_array().cloned().unwrap_or_default();
            let mut by_mount = BTreeMap::new();
            for x in series.iter().filter(|x| x["host"] == "local") {
                if let Some(v) = x["points"].as_array().and_then(|p| p.last()).and_then(|p| p[1].as_f64()) {
                    by_mount.insert(x["dim"].as_str().unwrap_or("").to_string(), v);
                }
            }
            by_mount
        };
        let (free, total) = (latest("host_disk_free_bytes"), latest("host_disk_total_bytes"));
        let used: BTreeMap<String, f64> = total
            .iter()
            .filter(|(_, t)| **t > 0.0)
            .filter_map(|(m, t)| Some((m.clone(), 100.0 * (1.0 - free.get(m)? / t))))
            .collect();
        (!used.is_empty()).then_some(used)
    });
    assert!(used.values().any(|u| *u > 1.0), "{used:?}");
    assert!(
        used.values().all(|u| *u < 94.0),
        "a disk of this machine is nearly full, disk-95 cannot resolve: {used:?}"
    );
    let set = json(&server, &["alert", "rule", "set", "disk-95", "--threshold", "1%", "--for", "5s"]);
    assert_eq!((set["threshold"].as_f64(), set["for_secs"].as_u64()), (Some(1.0), Some(5)), "{set:#}");
    let table = ok(&server, &["alert", "rule", "list"]);
    let line = table.lines().find(|l| l.starts_with("disk-95 ")).unwrap();
    assert!(line.contains("1 % full") && line.contains(" yes ") && line.contains(" 5s "), "{line}");
    let disk = wait_alert(&server, "disk-95", "firing", |s| s.starts_with("host/local/"));
    assert_eq!(disk["threshold"].as_f64(), Some(1.0), "{disk:#}");
    assert!(disk["value"].as_f64().unwrap() > 1.0, "{disk:#}");
    let got = notified(&rx, &disk, "firing");
    assert_eq!((got["threshold"].as_f64(), got["host"].as_str()), (Some(1.0), Some("local")), "{got:#}");
    let subject = disk["subject"].as_str().unwrap().to_string();
    assert!(told(&server, &[], "alert-firing", "disk-95", &subject));
    // Back to the default (95 %, which this machine is below): every one of them resolves.
    let back = json(&server, &["alert", "rule", "set", "disk-95", "--reset"]);
    assert_eq!((back["threshold"].as_f64(), back["changed"].as_bool()), (Some(95.0), Some(false)), "{back:#}");
    let fired: Vec<Value> = alerts(&server).into_iter().filter(|a| a["rule"] == "disk-95").collect();
    for a in &fired {
        wait_resolved(&server, a);
    }
    notified(&rx, &disk, "resolved");
    assert!(told(&server, &[], "alert-resolved", "disk-95", &subject));

    // replication-lag at 64 KiB: the replica receives WAL but does not replay it.
    ok(&server, &["alert", "rule", "set", "replication-lag", "--threshold", "64KiB", "--for", "0s"]);
    let dir = sovdb_test_utils::member_dir(&server.data_dir().join("hosts/local"), c["id"].as_str().unwrap(), &replica);
    let frozen = Frozen(patroni_of(&dir));
    assert!(!frozen.0.is_empty(), "the replica's Patroni runs");
    signal(&frozen.0, libc::SIGSTOP);
    member_psql(&server, &c, &replica, "SELECT pg_wal_replay_pause()");
    let uri = ok(&server, &["cluster", "connect", "ab"]).trim().to_string();
    psql(&uri, "CREATE TABLE lag AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g").unwrap();
    let subject = format!("member/ab/{replica}");
    let lag = wait_alert(&server, "replication-lag", "firing", |s| s == subject);
    assert!(lag["value"].as_f64().unwrap() > 65536.0, "{lag:#}");
    assert_eq!(lag["threshold"].as_f64(), Some(65536.0), "{lag:#}");
    assert!(told(&server, &["--cluster", "ab"], "alert-firing", "replication-lag", &subject));
    notified(&rx, &lag, "firing");
    member_psql(&server, &c, &replica, "SELECT pg_wal_replay_resume()");
    drop(frozen);
    wait_resolved(&server, &lag);
    notified(&rx, &lag, "resolved");
    assert!(told(&server, &["--cluster", "ab"], "alert-resolved", "replication-lag", &subject));

    // backup-failed: the stanza's backup directory unreadable for pgBackRest (it runs as
    // the database user), so the backup fails for real.
    let stanza_dir = repo.join("backup").join(c["id"].as_str().unwrap());
    let mode = std::fs::metadata(&stanza_dir).unwrap().permissions().mode();
    let restore = ModeBack(stanza_dir.clone(), mode);
    std::fs::set_permissions(&stanza_dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = cli(&server, &["backup", "create", "ab", "--type", "full", "--wait"]);
    assert!(!out.status.success(), "a backup into an unreadable directory succeeded");
    let failed = wait_alert(&server, "backup-failed", "firing", |s| s == "cluster/ab");
    assert!(failed["message"].as_str().unwrap().contains("backup of cluster ab failed"), "{failed:#}");
    assert!(told(&server, &["--cluster", "ab"], "alert-firing", "backup-failed", "cluster/ab"));
    notified(&rx, &failed, "firing");
    drop(restore);
    ok(&server, &["backup", "create", "ab", "--type", "full", "--wait"]);
    wait_resolved(&server, &failed);
    notified(&rx, &failed, "resolved");
    assert!(told(&server, &["--cluster", "ab"], "alert-resolved", "backup-failed", "cluster/ab"));
}

#[test]
fn failover_and_no_primary_fire_and_resolve() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "fo", "--replicas", "2", "--wait"]);
    let c = json(&server, &["cluster", "show", "fo"]);
    let (primary, replica) = members_by_role(&c);

    // failover, with a window of 30 s: fires at the failover, resolves by itself.
    let set = json(&server, &["alert", "rule", "set", "failover", "--threshold", "30s"]);
    assert_eq!((set["threshold"].as_f64(), set["unit"].as_str()), (Some(30.0), Some("seconds")), "{set:#}");
    assert!(set["condition"].as_str().unwrap().contains("fires for 30s"), "{set:#}");
    ok(&server, &["cluster", "failover", "fo", "--wait"]);
    let after = json(&server, &["cluster", "show", "fo"]);
    assert_eq!(members_by_role(&after).0, replica, "the replica leads now: {after:#}");
    let fired = wait_alert(&server, "failover", "firing", |s| s == "cluster/fo");
    assert!(fired["message"].as_str().unwrap().contains(&format!("{primary} → {replica}")), "{fired:#}");
    assert!(told(&server, &["--cluster", "fo"], "alert-firing", "failover", "cluster/fo"));
    let resolved = wait_resolved(&server, &fired);
    assert!(told(&server, &["--cluster", "fo"], "alert-resolved", "failover", "cluster/fo"));
    let (start, end) = (resolved["started_at"].as_str().unwrap(), resolved["resolved_at"].as_str().unwrap());
    let lasted =
        chrono::DateTime::parse_from_rfc3339(end).unwrap() - chrono::DateTime::parse_from_rfc3339(start).unwrap();
    assert!(lasted < chrono::TimeDelta::minutes(5), "it resolved after the project's 30 s, not 10 minutes: {lasted}");

    // no-primary: every member's Patroni frozen, so none answers.
    wait_for("the cluster ready again", Duration::from_secs(180), || {
        (json(&server, &["cluster", "show", "fo"])["state"] == "ready").then_some(())
    });
    let base = server.data_dir().join("hosts/local");
    let mut pids = Vec::new();
    for m in [&primary, &replica] {
        let found = patroni_of(&sovdb_test_utils::member_dir(&base, c["id"].as_str().unwrap(), m));
        assert!(!found.is_empty(), "{m}'s Patroni runs");
        pids.extend(found);
    }
    let frozen = Frozen(pids);
    signal(&frozen.0, libc::SIGSTOP);
    let none = wait_alert(&server, "no-primary", "firing", |s| s == "cluster/fo");
    assert!(none["message"].as_str().unwrap().contains("no member's Patroni answers"), "{none:#}");
    assert!(told(&server, &["--cluster", "fo"], "alert-firing", "no-primary", "cluster/fo"));
    drop(frozen);
    wait_resolved(&server, &none);
    assert!(told(&server, &["--cluster", "fo"], "alert-resolved", "no-primary", "cluster/fo"));
}

#[test]
fn a_host_whose_link_is_cut_fires_host_unreachable_until_it_is_healed() {
    let hosts = TestHosts::up(1);
    let server = TestServer::start(Path::new(BIN));
    let rx = Receiver::start();
    ok(&server, &["alert", "channel", "create", "hook", "--type", "webhook", "--url", &rx.url]);
    ok(&server, &["location", "create", "dc1", "--provider", "ssh", "--region", "lab"]);
    let h = &hosts.hosts()[0];
    let (address, key, base) =
        (h.address.to_string(), h.ssh_key.display().to_string(), h.base_dir.display().to_string());
    ok(
        &server,
        &[
            "host",
            "add",
            &h.name,
            "--location",
            "dc1",
            "--address",
            &address,
            "--ssh-key",
            &key,
            "--base-dir",
            &base,
            "--wait",
        ],
    );
    // A member on it: host alerts are about hosts that run the project's members.
    ok(&server, &["cluster", "create", "hu", "--location", "dc1", "--wait"]);
    let subject = format!("host/{}", h.name);
    assert!(alerts(&server).iter().all(|a| a["rule"] != "host-unreachable"), "{:#?}", alerts(&server));

    hosts.cut(&h.name);
    let fired = wait_alert(&server, "host-unreachable", "firing", |s| s == subject);
    assert_eq!(fired["host"].as_str(), Some(h.name.as_str()), "{fired:#}");
    assert!(fired["message"].as_str().unwrap().contains("does not answer heartbeats"), "{fired:#}");
    let got = notified(&rx, &fired, "firing");
    assert_eq!((got["severity"].as_str(), got["host"].as_str()), (Some("critical"), Some(h.name.as_str())), "{got:#}");
    assert!(told(&server, &[], "alert-firing", "host-unreachable", &subject));

    hosts.heal(&h.name);
    wait_resolved(&server, &fired);
    notified(&rx, &fired, "resolved");
    assert!(told(&server, &[], "alert-resolved", "host-unreachable", &subject));
}

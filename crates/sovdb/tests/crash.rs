//! Crash tests: every workflow survives `kill -9` of the real `sovdb serve` at each of its
//! failpoints (before and after each step's side effect: every step boundary), and at a
//! random moment. After a restart the operation completes exactly once: one agent, one
//! host record, the same port, nothing orphaned.
//!
//! Generic: the workflows come from the server's own registry, and a workflow without a
//! scenario here fails `every_workflow_has_a_crash_scenario`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sovdb_test_utils::processes_mentioning as processes;
use sovdb_test_utils::served_serial;
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
/// How many crash points run at once (each its own server and data directory).
const PARALLEL: usize = 3;

/// Workflows with a scenario below.
const SCENARIOS: &[&str] = &[
    "host.add",
    "host.remove",
    "cluster.create",
    "cluster.delete",
    "cluster.switchover",
    "cluster.failover",
    "cluster.restart",
    "cluster.set",
    "cluster.scale",
    "cluster.allow-list",
    "cluster.renew-certs",
    "location.renew-certs",
    "host.renew-certs",
    "backup.create",
    "backup.verify",
    "backup.purge",
    "cluster.restore",
];

#[test]
fn every_workflow_has_a_crash_scenario() {
    for w in sovdb_app::workflows::all() {
        assert!(
            SCENARIOS.contains(&w.name),
            "workflow {} has no crash scenario in crates/sovdb/tests/crash.rs: add one",
            w.name
        );
    }
}

/// Every failpoint on the forward path of workflow `kind`.
fn failpoints(kind: &str) -> Vec<String> {
    let w = sovdb_app::workflows::all().into_iter().find(|w| w.name == kind).expect("registered");
    w.step_names().iter().flat_map(|s| [format!("{kind}.{s}.before"), format!("{kind}.{s}.after")]).collect()
}

fn cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut c: Command = server.cli();
    c.args(args);
    c.output().expect("run sovdb")
}

fn json(server: &TestServer, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cli(server, &all);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("-o json prints JSON"))
}

fn wait_for<T>(what: &str, server: &TestServer, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 90 s; server log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The operations of `kind`, as `op list` shows them.
fn operations(server: &TestServer, kind: &str) -> Vec<Value> {
    let all = json(server, &["op", "list"]).expect("op list");
    all.as_array().unwrap().iter().filter(|o| o["kind"] == kind).cloned().collect()
}

/// Agent processes serving `base_dir` (not their supervisors).
fn agents_of(base_dir: &Path) -> Vec<u32> {
    // Supervisors run `agent supervise --base-dir …`: not matched.
    processes(&format!("agent --base-dir {} ", base_dir.display()))
}

/// A process's parent (0 when it is gone).
fn parent(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ppid ...`: comm may hold spaces, so count from the last `)`.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn local_base(server: &TestServer) -> PathBuf {
    server.data_dir().join("hosts/local")
}

/// Waits until the local host is ready, then checks it exists exactly once.
fn assert_local_host_added_once(server: &TestServer, context: &str) {
    wait_for("host.add ended", server, || {
        let ops = operations(server, "host.add");
        let ended = ops.iter().all(|o| o["state"] != "running" && o["state"] != "queued");
        (!ops.is_empty() && ended).then_some(())
    });
    let host = json(server, &["host", "show", "local"]).expect("the local host exists");
    assert_eq!(host["status"], "ready", "{context}: {host:#}");
    let ops = operations(server, "host.add");
    assert_eq!(ops.len(), 1, "{context}: one host.add operation: {ops:#?}");
    assert_eq!(ops[0]["state"], "succeeded", "{context}: {:#}", ops[0]);
    let hosts = json(server, &["host", "list"]).unwrap();
    assert_eq!(hosts.as_array().unwrap().len(), 1, "{context}: one host: {hosts:#}");
    let agents = agents_of(&local_base(server));
    assert_eq!(agents.len(), 1, "{context}: exactly one agent runs for the local host: {agents:?}");
    let pid: u32 = std::fs::read_to_string(local_base(server).join("agent/agent.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(agents[0], pid, "{context}: the running agent is the recorded one");
    assert!(host["facts"]["cpus"].as_u64().unwrap() > 0, "{context}: facts recorded: {host:#}");
    // The agent answers on the port allocated once, with the host record's port.
    let port = host["agent_port"].as_u64().unwrap();
    let listening = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    assert!(listening.contains(&format!(":{port:04X} ")), "{context}: the agent listens on {port}");
}

/// Restarts `server` with the failpoint `point` set to crash, runs `sovdb args` (which
/// must be accepted), waits for the crash, and starts the server again without it.
fn crash_during(server: &mut TestServer, point: &str, args: &[&str]) {
    server.kill9();
    server.set_env("SOVDB_FAILPOINTS", Some(&format!("{point}=crash")));
    server.launch();
    let out = cli(server, args);
    assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
    let status = server.wait_exit(Duration::from_secs(120));
    assert!(!status.success(), "{point}: the server should have crashed");
    server.set_env("SOVDB_FAILPOINTS", None);
    server.launch();
}

/// `op show` says which step resumed: the one in flight at the crash at `point`
/// (`kind.step.before|after`) was attempted twice.
fn assert_crashed_step_ran_again(server: &TestServer, kind: &str, point: &str) {
    let step = point.trim_start_matches(kind).trim_start_matches('.').rsplit_once('.').unwrap().0;
    let op = &operations(server, kind)[0];
    let shown = json(server, &["op", "show", op["id"].as_str().unwrap()]).unwrap();
    let attempts = shown["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["attempts"].clone();
    assert_eq!(attempts, 2, "{point}: the step in flight at the crash ran again: {shown:#}");
}

/// Runs `f` for every item, `PARALLEL` at a time, and re-raises the first panic.
fn in_parallel(items: Vec<String>, f: impl Fn(&str) + Sync) {
    for chunk in items.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|p| s.spawn(|| f(p))).collect();
            for h in handles {
                if let Err(e) = h.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }
}

#[test]
fn host_add_completes_once_after_a_crash_at_every_failpoint() {
    // The first start adds this machine as host `local`: crash it there.
    in_parallel(failpoints("host.add"), |point| {
        let mut server = TestServer::new(Path::new(BIN), None);
        server.set_env("SOVDB_FAILPOINTS", Some(&format!("{point}=crash")));
        let status = server.launch_until_exit(Duration::from_secs(60));
        assert!(!status.success(), "{point}: the server should have crashed");
        server.set_env("SOVDB_FAILPOINTS", None);
        server.launch();
        assert_local_host_added_once(&server, point);
        assert_crashed_step_ran_again(&server, "host.add", point);
    });
}

#[test]
fn host_add_completes_once_after_kill_9_at_random_moments() {
    let delays: Vec<String> = (0..3).map(|_| (rand::random::<u64>() % 1500).to_string()).collect();
    in_parallel(delays, |delay| {
        let mut server = TestServer::new(Path::new(BIN), None);
        server.launch();
        std::thread::sleep(Duration::from_millis(delay.parse().unwrap()));
        server.kill9();
        server.launch();
        assert_local_host_added_once(&server, &format!("kill -9 after {delay} ms"));
    });
}

#[test]
fn host_remove_completes_once_after_a_crash_at_every_failpoint() {
    in_parallel(failpoints("host.remove"), |point| {
        let mut server = TestServer::new(Path::new(BIN), None);
        server.launch();
        assert_local_host_added_once(&server, point);
        crash_during(&mut server, point, &["host", "remove", "local"]);
        wait_for("host removed", &server, || {
            let ops = operations(&server, "host.remove");
            (ops.len() == 1 && ops[0]["state"] == "succeeded").then_some(())
        });
        assert!(json(&server, &["host", "show", "local"]).is_none(), "{point}: the host is forgotten");
        assert_eq!(agents_of(&local_base(&server)), Vec::<u32>::new(), "{point}: no agent left running");
        assert!(!local_base(&server).join("agent").exists(), "{point}: the agent's files are gone");
    });
}

#[test]
fn a_cancelled_host_add_undoes_everything_it_did() {
    // The agent never "answers" (an injected transient error), so the operation retries
    // until it is cancelled; cancelling undoes the started agent, its files and the record.
    let mut server = TestServer::new(Path::new(BIN), None);
    server.set_env("SOVDB_FAILPOINTS", Some("host.add.wait-agent.before=error"));
    server.launch();
    let op = wait_for("host.add retrying", &server, || {
        operations(&server, "host.add")
            .into_iter()
            .find(|o| o["steps"][5]["attempts"].as_u64().unwrap_or(0) >= 1 && o["steps"][4]["state"] == "succeeded")
    });
    let id = op["id"].as_str().unwrap();
    assert_eq!(agents_of(&local_base(&server)).len(), 1, "the agent was started");
    let out = cli(&server, &["op", "cancel", id, "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ended["state"], "cancelled", "{ended:#}");
    let undone: Vec<&str> = ended["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "undone")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["register", "check-host", "issue-certificate", "install-agent", "start-agent"], "{ended:#}");
    assert!(json(&server, &["host", "show", "local"]).is_none(), "the host is forgotten");
    assert_eq!(agents_of(&local_base(&server)), Vec::<u32>::new(), "the agent is stopped");
    assert!(!local_base(&server).join("agent").exists(), "its files are removed");
}

/// After the crash and restart: the cluster exists once, with one member, one of each
/// process, its ports given out once, and it serves.
/// `base` is the local host's base dir (in the data dir of the server that added it).
fn assert_cluster_created_once(server: &TestServer, base: &Path, context: &str) {
    wait_for("cluster.create ended", server, || {
        let ops = operations(server, "cluster.create");
        (ops.len() == 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then_some(())
    });
    let ops = operations(server, "cluster.create");
    assert_eq!(ops[0]["state"], "succeeded", "{context}: {:#}\n{}", ops[0], server.log());
    let c = json(server, &["cluster", "show", "c"]).expect("the cluster exists");
    assert_eq!(c["state"], "ready", "{context}: {c:#}");
    let members = c["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{context}: one member: {c:#}");
    let dirs: Vec<_> = std::fs::read_dir(base.join("pg")).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "{context}: one member directory");
    let dir = dirs[0].path();
    assert_eq!(processes(&format!("{}/patroni.yml", dir.display())).len(), 1, "{context}: one Patroni");
    assert_eq!(processes(&format!("postgres -D {}/data", dir.display())).len(), 1, "{context}: one postmaster");
    // HAProxy runs master-worker: one master, whose worker is its child.
    let haproxy = processes(&format!("{}/haproxy.cfg", dir.display()));
    let masters = haproxy.iter().filter(|p| !haproxy.contains(&parent(**p))).count();
    assert_eq!(masters, 1, "{context}: one HAProxy: {haproxy:?}");
    assert_eq!(
        processes(&format!("{}/etcd/", base.display()))
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().starts_with("/usr/bin/etcd")
            })
            .count(),
        1,
        "{context}: one etcd"
    );
    let uri = String::from_utf8(cli(server, &["cluster", "connect", "c"]).stdout).unwrap();
    let out = Command::new("psql").args([uri.trim(), "-X", "-At", "-c", "SELECT current_user"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app",
        "{context}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cluster_create_completes_once_after_a_crash_at_every_failpoint() {
    in_parallel(failpoints("cluster.create"), |point| {
        let mut server = TestServer::new(Path::new(BIN), None);
        server.launch();
        assert_local_host_added_once(&server, point);
        crash_during(&mut server, point, &["cluster", "create", "c"]);
        assert_cluster_created_once(&server, &local_base(&server), point);
        assert_crashed_step_ran_again(&server, "cluster.create", point);
    });
}

#[test]
fn cluster_delete_completes_once_after_a_crash_at_every_failpoint() {
    in_parallel(failpoints("cluster.delete"), |point| {
        let mut server = TestServer::new(Path::new(BIN), None);
        server.launch();
        assert_local_host_added_once(&server, point);
        let out = cli(&server, &["cluster", "create", "c", "--wait"]);
        assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        crash_during(&mut server, point, &["cluster", "delete", "c"]);
        wait_for("cluster deleted", &server, || {
            let ops = operations(&server, "cluster.delete");
            (ops.len() == 1 && ops[0]["state"] == "succeeded").then_some(())
        });
        assert!(json(&server, &["cluster", "show", "c"]).is_none(), "{point}: the cluster is forgotten");
        let pg = local_base(&server).join("pg");
        assert_eq!(std::fs::read_dir(&pg).map(|d| d.count()).unwrap_or(0), 0, "{point}: no member directory left");
        assert_eq!(processes(&pg.display().to_string()), Vec::<u32>::new(), "{point}: no member process left");
    });
}

#[test]
fn cluster_create_completes_once_after_kill_9_at_random_moments() {
    let delays: Vec<String> = (0..3).map(|_| (rand::random::<u64>() % 5000).to_string()).collect();
    in_parallel(delays, |delay| {
        let context = format!("kill -9 {delay} ms into the create");
        let mut server = TestServer::new(Path::new(BIN), None);
        server.launch();
        assert_local_host_added_once(&server, &context);
        let out = cli(&server, &["cluster", "create", "c"]);
        assert!(out.status.success(), "{context}: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(delay.parse().unwrap()));
        server.kill9();
        server.launch();
        assert_cluster_created_once(&server, &local_base(&server), &context);
    });
}

/// Two `sovdb serve` replicas on one PostgreSQL store: the one running a cluster create
/// dies (`kill -9` at a failpoint); the other takes the operation over once its lease
/// lapses, re-runs the step that was in flight and finishes it.
#[test]
fn a_dead_replicas_cluster_create_is_taken_over_by_another() {
    use sovdb_test_utils::postgres::TestPostgres;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = rt.block_on(TestPostgres::start());
    let url = rt.block_on(pg.create_database("takeover"));
    let point = "cluster.create.start-members.after";

    let mut a = TestServer::new(Path::new(BIN), Some(url.clone()));
    a.set_env("SOVDB_OPERATION_LEASE", Some("3"));
    a.launch();
    assert_local_host_added_once(&a, "replica a");
    a.kill9();
    a.set_env("SOVDB_FAILPOINTS", Some(&format!("{point}=crash")));
    a.launch();
    let out = cli(&a, &["cluster", "create", "c"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!a.wait_exit(Duration::from_secs(120)).success(), "replica a should have crashed at {point}");
    // a stays down: b must take over, not a's own restart.

    // Replica b: same store and master key, its own data directory and worker id.
    let mut b = TestServer::new(Path::new(BIN), Some(url));
    std::fs::create_dir_all(b.data_dir()).unwrap();
    std::fs::copy(a.data_dir().join("admin.token"), b.data_dir().join("admin.token")).unwrap();
    b.set_env("SOVDB_MASTER_KEY_FILE", Some(a.data_dir().join("master.key").to_str().unwrap()));
    b.set_env("SOVDB_OPERATION_LEASE", Some("3"));
    b.launch();
    assert_cluster_created_once(&b, &local_base(&a), "taken over by replica b");
    assert_crashed_step_ran_again(&b, "cluster.create", point);
}

/// Day-2 workflows: one server and one cluster of `replicas` members; the server crashes at
/// every failpoint of `kind` in turn, while `args(i)` (the i-th run) runs. After each
/// restart the operation completes exactly once, the step in flight ran again, and
/// `check(server, i, op)` holds.
fn day_two_survives_every_failpoint(
    kind: &str,
    replicas: &str,
    args: impl Fn(usize) -> Vec<String>,
    check: impl Fn(&TestServer, usize, &Value),
) {
    let mut server = TestServer::new(Path::new(BIN), None);
    server.launch();
    assert_local_host_added_once(&server, kind);
    let out = cli(&server, &["cluster", "create", "c", "--replicas", replicas, "--wait"]);
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
    for (i, point) in failpoints(kind).iter().enumerate() {
        let a = args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        crash_during(&mut server, point, &a);
        let op = wait_for("the operation ended", &server, || {
            let ops = operations(&server, kind);
            (ops.len() == i + 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, kind, point);
        check(&server, i, &op);
    }
    let out = cli(&server, &["cluster", "delete", "c", "--wait"]);
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A step's output in an operation as `op list` shows it.
fn output<'a>(op: &'a Value, step: &str) -> &'a Value {
    &op["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["output"]
}

/// The cluster settled: every member runs, one is the primary; answers the primary.
fn settled(server: &TestServer, members: usize, context: &str) -> String {
    let c = json(server, &["cluster", "show", "c"]).unwrap();
    let m = c["members"].as_array().unwrap();
    assert_eq!(m.len(), members, "{context}: {c:#}");
    assert!(m.iter().all(|m| m["state"] == "running"), "{context}: {c:#}");
    let primaries: Vec<_> = m.iter().filter(|m| m["role"] == "primary").collect();
    assert_eq!(primaries.len(), 1, "{context}: {c:#}");
    primaries[0]["name"].as_str().unwrap().to_string()
}

fn moved_the_primary(server: &TestServer, op: &Value) {
    let (from, to) = (&output(op, "choose")["from"], &output(op, "wait")["primary"]);
    assert_ne!(from, to, "the primary moved: {op:#}");
    assert_eq!(settled(server, 2, "after the switch"), to.as_str().unwrap());
}

#[test]
fn cluster_switchover_completes_once_after_a_crash_at_every_failpoint() {
    day_two_survives_every_failpoint(
        "cluster.switchover",
        "2",
        |_| ["cluster", "switchover", "c"].map(String::from).to_vec(),
        |server, _, op| moved_the_primary(server, op),
    );
}

#[test]
fn cluster_failover_completes_once_after_a_crash_at_every_failpoint() {
    day_two_survives_every_failpoint(
        "cluster.failover",
        "2",
        |_| ["cluster", "failover", "c"].map(String::from).to_vec(),
        |server, _, op| moved_the_primary(server, op),
    );
}

#[test]
fn cluster_restart_completes_once_after_a_crash_at_every_failpoint() {
    day_two_survives_every_failpoint(
        "cluster.restart",
        "2",
        |_| ["cluster", "restart", "c"].map(String::from).to_vec(),
        |server, _, op| {
            let primary = settled(server, 2, "after the restart");
            assert_eq!(output(op, "plan")["primary"], primary.as_str(), "a restart keeps the primary: {op:#}");
        },
    );
}

#[test]
fn cluster_set_completes_once_after_a_crash_at_every_failpoint() {
    // max_connections needs a restart: every run changes it, so every run restarts.
    let value = |i: usize| (110 + i).to_string();
    day_two_survives_every_failpoint(
        "cluster.set",
        "2",
        |i| ["cluster", "set", "c", "--param", &format!("max_connections={}", value(i))].map(String::from).to_vec(),
        |server, i, _| {
            settled(server, 2, "after the change");
            let conn = json(server, &["cluster", "connect", "c"]).unwrap();
            for addr in conn["endpoints"]["members"].as_array().unwrap() {
                let uri = format!(
                    "postgresql://app:{}@{}/app?sslmode=require",
                    conn["password"].as_str().unwrap(),
                    addr.as_str().unwrap()
                );
                let out = Command::new("psql").args([uri.as_str(), "-XAtc", "SHOW max_connections"]).output().unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), value(i), "on {addr}");
            }
        },
    );
}

#[test]
fn cluster_scale_completes_once_after_a_crash_at_every_failpoint() {
    // Up to 2 and down to 1, in turn.
    let target = |i: usize| if i.is_multiple_of(2) { 2 } else { 1 };
    day_two_survives_every_failpoint(
        "cluster.scale",
        "1",
        |i| ["cluster", "scale", "c", "--replicas", &target(i).to_string()].map(String::from).to_vec(),
        |server, i, _| {
            settled(server, target(i), "after the scale");
            let pg = local_base(server).join("pg");
            let dirs = std::fs::read_dir(&pg).unwrap().count();
            assert_eq!(dirs, target(i), "one directory per member, nothing orphaned");
        },
    );
}

#[test]
fn cluster_allow_list_completes_once_after_a_crash_at_every_failpoint() {
    // Every run allows one more network; no run restarts PostgreSQL.
    let net = |i: usize| format!("10.200.{i}.0/24");
    let postmasters = std::sync::Mutex::new(None::<Vec<String>>);
    day_two_survives_every_failpoint(
        "cluster.allow-list",
        "2",
        |i| ["cluster", "allow", "c", "--cidr", &net(i)].map(String::from).to_vec(),
        |server, i, _| {
            settled(server, 2, "after the allow-list change");
            let c = json(server, &["cluster", "show", "c"]).unwrap();
            let allow: Vec<&str> = c["allow"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            for j in 0..=i {
                assert!(allow.contains(&net(j).as_str()), "{} in {allow:?}", net(j));
            }
            let mut pids = Vec::new();
            for dir in std::fs::read_dir(local_base(server).join("pg")).unwrap() {
                let data = dir.unwrap().path().join("data");
                let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
                assert!(hba.contains(&format!("hostssl all all {} scram-sha-256", net(i))), "{hba}");
                let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
                pids.push(pid.lines().take(3).collect::<Vec<_>>().join(" "));
            }
            pids.sort();
            let mut seen = postmasters.lock().unwrap();
            if let Some(before) = seen.as_ref() {
                assert_eq!(before, &pids, "no member restarted");
            }
            *seen = Some(pids);
        },
    );
}

/// The members' certificate files, serial and end of validity (`openssl x509`), by member
/// directory.
fn member_certs(server: &TestServer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(local_base(server).join("pg")).unwrap() {
        let cert = dir.unwrap().path().join("tls/server.crt");
        let o = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-checkend", "0", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{} has expired: {text}", cert.display());
        out.push((cert.display().to_string(), text.lines().next().unwrap_or_default().to_lowercase()));
    }
    out
}

#[test]
fn cluster_renew_certs_completes_once_after_a_crash_at_every_failpoint() {
    renewal_completes_once_after_a_crash_at_every_failpoint("cluster.renew-certs");
}

#[test]
fn location_renew_certs_completes_once_after_a_crash_at_every_failpoint() {
    renewal_completes_once_after_a_crash_at_every_failpoint("location.renew-certs");
}

#[test]
fn host_renew_certs_completes_once_after_a_crash_at_every_failpoint() {
    renewal_completes_once_after_a_crash_at_every_failpoint("host.renew-certs");
}

/// The servers of a renewal's target (`cluster` c, `location` local, `host` local) and
/// the serial each presents in a TLS handshake, by address: the members' PostgreSQL, the
/// location's etcd members, the host's agent.
fn presented(server: &TestServer, target: &str) -> BTreeMap<String, String> {
    let addresses: Vec<String> = match target {
        "cluster" => json(server, &["cluster", "show", "c"]).unwrap()["endpoints"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        "location" => json(server, &["location", "show", "local"]).unwrap()["dcs"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["endpoint"].as_str().unwrap().to_string())
            .collect(),
        _ => {
            let host = json(server, &["host", "show", "local"]).unwrap();
            vec![format!("{}:{}", host["address"].as_str().unwrap(), host["agent_port"])]
        }
    };
    assert!(!addresses.is_empty(), "{target} has servers");
    addresses
        .into_iter()
        .map(|a| {
            let serial = served_serial(&a, target == "cluster").unwrap_or_else(|| panic!("{a} presents a certificate"));
            (a, serial)
        })
        .collect()
}

/// Every server of the target presents another certificate than `before`.
fn assert_renewed(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>, context: &str) {
    assert_eq!(before.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>(), "{context}: the same servers");
    for (addr, serial) in now {
        assert_ne!(&before[addr], serial, "{context}: {addr} presents a new certificate");
    }
}

/// Renewals on request (`sovdb cluster|location|host renew-certs`), which renew every
/// certificate of the target whatever its age (the bot's own renewals of due certificates
/// are `tests/certs.rs`'): first one waited for, as a user runs it, then one crashed at
/// each failpoint of `kind` in turn. Each completes once as the caller's operation and the
/// target's servers present new certificates; no member restarts, no certificate on disk
/// expires, and the control plane still reaches the agent and etcd.
fn renewal_completes_once_after_a_crash_at_every_failpoint(kind: &str) {
    let (target, name) = match kind {
        "cluster.renew-certs" => ("cluster", "c"),
        "location.renew-certs" => ("location", "local"),
        _ => ("host", "local"),
    };
    let mut server = TestServer::new(Path::new(BIN), None);
    server.launch();
    assert_local_host_added_once(&server, kind);
    let out = cli(&server, &["cluster", "create", "c", "--replicas", "2", "--wait"]);
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
    let pg_dir = local_base(&server).join("pg");
    let postmasters = || {
        let mut pids: Vec<String> = std::fs::read_dir(&pg_dir)
            .unwrap()
            .map(|d| std::fs::read_to_string(d.unwrap().path().join("data/postmaster.pid")).unwrap())
            .map(|p| p.lines().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        pids.sort();
        pids
    };
    let before = postmasters();
    let began = Instant::now();

    // As a user runs it: certificates issued seconds ago are renewed all the same.
    let mut serials = presented(&server, target);
    let out = cli(&server, &[target, "renew-certs", name, "--wait"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{kind} --wait: {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("renewed"), "{kind} --wait says what it renewed: {said}");
    let now = presented(&server, target);
    assert_renewed(&serials, &now, "--wait");
    serials = now;
    assert_eq!(postmasters(), before, "--wait: no member restarted");
    eprintln!("{kind} --wait: succeeded after {:?}", began.elapsed());

    for (i, point) in failpoints(kind).iter().enumerate() {
        crash_during(&mut server, point, &[target, "renew-certs", name]);
        let op = wait_for("the renewal ended", &server, || {
            let ops = operations(&server, kind);
            (ops.len() == i + 2 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_eq!(op["created_by"], "admin", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, kind, point);
        settled(&server, 2, point);
        member_certs(&server);
        assert_eq!(postmasters(), before, "{point}: no member restarted");
        let host = wait_for("the host is ready", &server, || {
            json(&server, &["host", "show", "local"]).filter(|h| h["status"] == "ready")
        });
        assert_eq!(host["status"], "ready", "{point}");
        let location = json(&server, &["location", "show", "local"]).unwrap();
        let etcd = location["dcs"]["members"].as_array().unwrap();
        assert!(etcd.iter().all(|m| m["healthy"] == true), "{point}: {location:#}");
        let now = presented(&server, target);
        assert_renewed(&serials, &now, point);
        serials = now;
        eprintln!("{point}: crashed, resumed and succeeded after {:?}", began.elapsed());
    }
    let out = cli(&server, &["cluster", "delete", "c", "--wait"]);
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A server with a posix repository (the location's default) and a one-member cluster `c`
/// that backs up into it.
fn server_with_backups(context: &str) -> TestServer {
    let mut server = TestServer::new(Path::new(BIN), None);
    server.launch();
    assert_local_host_added_once(&server, context);
    let repo = server.data_dir().join("backups");
    let out = cli(&server, &["repo", "create", "r", "--type", "posix", "--path", repo.to_str().unwrap(), "--default"]);
    assert!(out.status.success(), "{context}: {}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&server, &["cluster", "create", "c", "--wait"]);
    assert!(out.status.success(), "{context}: {}", String::from_utf8_lossy(&out.stderr));
    server
}

fn backups(server: &TestServer, cluster: &str) -> Vec<Value> {
    json(server, &["backup", "list", cluster]).expect("backup list").as_array().unwrap().clone()
}

#[test]
fn backup_create_takes_one_backup_after_a_crash_at_every_failpoint() {
    let mut server = server_with_backups("backup.create");
    for (i, point) in failpoints("backup.create").iter().enumerate() {
        // Incremental: full ones beyond the repository's retention (2) would expire the oldest.
        crash_during(&mut server, point, &["backup", "create", "c", "--type", "incr"]);
        let op = wait_for("the backup ended", &server, || {
            let ops = operations(&server, "backup.create");
            (ops.len() == i + 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, "backup.create", point);
        // The create's own full backup, then exactly one per operation.
        let list = backups(&server, "c");
        assert_eq!(list.len(), i + 2, "{point}: one backup per operation: {list:#?}");
        assert_eq!(output(&op, "backup")["backup"], list[i + 1]["id"], "{point}");
    }
}

/// The steps a restore adds to a create's, and the ones it runs differently (the create's
/// others are covered by cluster.create's scenario).
#[test]
fn cluster_restore_completes_once_after_a_crash_at_its_own_failpoints() {
    let own = ["archive-source", "write-configs", "wait-primary", "stanza-setup", "first-backup", "forget-source"];
    let points: Vec<String> = failpoints("cluster.restore")
        .into_iter()
        .filter(|p| own.iter().any(|s| p.starts_with(&format!("cluster.restore.{s}."))))
        .collect();
    assert_eq!(points.len(), own.len() * 2);
    in_parallel(points, |point| {
        let mut server = server_with_backups(point);
        crash_during(&mut server, point, &["cluster", "restore", "c", "--as", "r"]);
        let op = wait_for("the restore ended", &server, || {
            let ops = operations(&server, "cluster.restore");
            (ops.len() == 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, "cluster.restore", point);
        let r = json(&server, &["cluster", "show", "r"]).unwrap();
        assert_eq!(r["state"], "ready", "{point}: {r:#}");
        assert_eq!(backups(&server, "r").len(), 1, "{point}: one first backup");
        let events = json(&server, &["cluster", "events", "r"]).unwrap();
        let restored = events.as_array().unwrap().iter().filter(|e| e["kind"] == "restored").count();
        assert_eq!(restored, 1, "{point}: {events:#}");
        let pg = local_base(&server).join("pg");
        let leftovers: Vec<_> = std::fs::read_dir(&pg)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("pgbackrest-restore.conf").exists())
            .collect();
        assert!(leftovers.is_empty(), "{point}: the source's secrets stay on no member: {leftovers:?}");
    });
}

/// Whether any restore drill's directory is left on the local host.
fn drill_left(server: &TestServer) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(local_base(server).join("drill")).map(|d| d.flatten().collect()).unwrap_or_default()
}

#[test]
fn backup_verify_runs_one_drill_after_a_crash_at_every_failpoint() {
    let mut server = server_with_backups("backup.verify");
    for (i, point) in failpoints("backup.verify").iter().enumerate() {
        crash_during(&mut server, point, &["backup", "verify", "c"]);
        let op = wait_for("the drill ended", &server, || {
            let ops = operations(&server, "backup.verify");
            (ops.len() == i + 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, "backup.verify", point);
        let events = json(&server, &["cluster", "events", "c"]).unwrap();
        let drills = events.as_array().unwrap().iter().filter(|e| e["kind"] == "drill").count();
        assert_eq!(drills, i + 1, "{point}: one drill event per drill: {events:#}");
        assert!(drill_left(&server).is_empty(), "{point}: the drill's directory is gone");
    }
}

#[test]
fn backup_purge_deletes_the_kept_backups_once_after_a_crash_at_every_failpoint() {
    let mut server = server_with_backups("backup.purge");
    let repo = server.data_dir().join("backups");
    for (i, point) in failpoints("backup.purge").iter().enumerate() {
        // A cluster to delete, its backups kept, then purged.
        let name = format!("p{i}");
        let out = cli(&server, &["cluster", "create", &name, "--wait"]);
        assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        let stanza = json(&server, &["cluster", "show", &name]).unwrap()["id"].as_str().unwrap().to_string();
        let out = cli(&server, &["cluster", "delete", &name, "--wait"]);
        assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(repo.join("backup").join(&stanza).exists(), "{point}: kept");
        crash_during(&mut server, point, &["backup", "purge", &name]);
        let op = wait_for("the purge ended", &server, || {
            let ops = operations(&server, "backup.purge");
            (ops.len() == i + 1 && ops[0]["state"] != "running" && ops[0]["state"] != "queued").then(|| ops[0].clone())
        });
        assert_eq!(op["state"], "succeeded", "{point}: {op:#}");
        assert_crashed_step_ran_again(&server, "backup.purge", point);
        assert!(!repo.join("backup").join(&stanza).exists(), "{point}: the backups are gone");
        let kept = json(&server, &["backup", "retained"]).unwrap();
        assert!(kept.as_array().unwrap().iter().all(|k| k["cluster"] != name.as_str()), "{point}: {kept:#}");
    }
}

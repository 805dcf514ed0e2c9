//! A synchronous three-member cluster on three SSH hosts (network namespaces) in three
//! zones, and a network partition of its primary: the real `sovdb serve`, agents installed
//! over SSH, Patroni, a three-member etcd, PostgreSQL and HAProxy; the primary's link cut
//! (`ip link set down`), then healed.
//!
//! What must hold:
//! - the isolated primary stops taking writes by itself (Patroni demotes a leader that
//!   cannot reach the DCS; `failsafe_mode` does not keep it, since it cannot reach the other
//!   members either), and never acknowledges a write after the cut (`--sync`);
//! - a member of the majority is promoted and takes writes through the cluster's URI;
//! - once the old primary stepped down (at the latest 30 s after the cut), never two
//!   writable members. Before that, for a moment, both may be (Patroni's timing: the old
//!   primary notices late; it cannot acknowledge a commit meanwhile): the test prints it;
//! - after the heal, the old primary rejoins as a replica and the new primary stays primary
//!   (Patroni 3.0.2 would let the old one take the leader key back: see
//!   `sovdb_postgres::render::PATRONI_LAUNCHER`), and no acknowledged write is lost.
//!
//! The heal comes soon after the takeover on purpose: while the old primary's demotion still
//! waits for its unreachable standbys, which is when 3.0.2 went wrong.
//!
//! Cleanup on failure: `TestServer`'s drop kills the server and what mentions its
//! directory, and `TestHosts`' drop kills every process in the hosts' namespaces (agents,
//! supervisors, etcd, Patroni, PostgreSQL, HAProxy) and removes the namespaces.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, psql, wait_for};
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::testhosts::TestHosts;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// The location of the test hosts.
const LOC: &str = "dc1";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One PostgreSQL member as the test reaches it: inside its host's namespace, through the
/// Unix socket in its `run/` directory, as the database user (peer authentication).
#[derive(Clone, Debug)]
struct Pg {
    name: String,
    host: String,
    run_dir: String,
    port: String,
}

impl Pg {
    /// `psql` on this member, run inside its host's namespace as the database user; killed
    /// after `secs` seconds.
    fn psql(&self, secs: u32, sql: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host, "timeout", "-s", "KILL", &secs.to_string()])
            .args(["runuser", "-u", "postgres", "--", PSQL, "-h", &self.run_dir, "-p", &self.port])
            .args(["-U", "postgres", "-d", "app", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(std::process::Stdio::null());
        c
    }

    /// `SELECT ...` on this member; `None` when it does not answer (stopped, restarting).
    fn query(&self, sql: &str) -> Option<String> {
        let out = self.psql(10, sql).output().expect("run psql in a test host");
        out.status.success().then(|| text(&out.stdout).trim().to_string())
    }

    /// Whether this member takes writes now: a primary, not in recovery. `false` when it is
    /// a standby or does not answer.
    fn writable(&self) -> bool {
        self.query("SELECT pg_is_in_recovery()").as_deref() == Some("f")
    }
}

/// The cluster's members as the test reaches them (see [`Pg`]).
fn members(hosts: &TestHosts, cluster: &Value) -> Vec<Pg> {
    let id = cluster["id"].as_str().unwrap();
    cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_string();
            let host = m["host"].as_str().unwrap().to_string();
            let dir = sovdb_test_utils::member_dir(&hosts.host(&host).base_dir, id, &name);
            let run_dir = dir.join("run").display().to_string();
            let port = m["address"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
            Pg { name, host, run_dir, port }
        })
        .collect()
}

fn role<'a>(cluster: &'a Value, member: &str) -> Option<&'a Value> {
    cluster["members"].as_array()?.iter().find(|m| m["name"] == member)
}

#[test]
fn a_partitioned_primary_steps_down_and_a_zone_majority_takes_over_without_losing_writes() {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("partition: {what} at {:.1} s", t0.elapsed().as_secs_f64());
    let hosts = TestHosts::up(3);
    let server = TestServer::start(Path::new(BIN));
    ok(&server, &["location", "create", LOC, "--provider", "ssh", "--region", "lab"]);
    // The three hosts are added at once (each `host add` installs an agent over SSH).
    std::thread::scope(|scope| {
        for (i, h) in hosts.hosts().iter().enumerate() {
            let server = &server;
            scope.spawn(move || {
                let (address, key, base) =
                    (h.address.to_string(), h.ssh_key.display().to_string(), h.base_dir.display().to_string());
                let zone = format!("z{}", i + 1);
                let mut args = vec!["host", "add", &h.name, "--location", LOC, "--address", &address];
                args.extend(["--ssh-key", &key, "--base-dir", &base, "--zone", &zone, "--wait"]);
                ok(server, &args);
            });
        }
    });
    phase("hosts added");

    // 1. One member per zone, synchronous; the location's DCS has three healthy members.
    ok(
        &server,
        &["cluster", "create", "pc", "--location", LOC, "--replicas", "3", "--spread", "zone", "--sync", "--wait"],
    );
    phase("cluster created");
    let c = json(&server, &["cluster", "show", "pc"]);
    assert_eq!(c["state"], "ready", "{c:#}");
    let shown: BTreeSet<&str> = c["members"].as_array().unwrap().iter().map(|m| m["host"].as_str().unwrap()).collect();
    assert_eq!(shown.len(), 3, "one member per host: {c:#}");
    assert!(c["members"].as_array().unwrap().iter().any(|m| m["sync"] == true), "a synchronous standby: {c:#}");
    let loc = json(&server, &["location", "show", LOC]);
    assert_eq!(loc["dcs"]["status"], "healthy", "{loc:#}");
    let etcd = loc["dcs"]["members"].as_array().unwrap();
    assert_eq!(etcd.len(), 3, "three etcd members where three hosts exist: {loc:#}");
    assert!(etcd.iter().all(|m| m["healthy"] == true), "{loc:#}");
    let etcd_hosts: BTreeSet<&str> = etcd.iter().map(|m| m["host"].as_str().unwrap()).collect();
    assert_eq!(etcd_hosts.len(), 3, "one etcd member per host: {loc:#}");

    // 2. Rows written through the URI before the cut.
    let uri = ok(&server, &["cluster", "connect", "pc"]).trim().to_string();
    psql(&uri, "CREATE TABLE t (v int PRIMARY KEY)").unwrap();
    psql(&uri, "INSERT INTO t SELECT generate_series(1, 100)").unwrap();
    let mut acked: BTreeSet<i64> = (1..=100).collect();

    // 3. The primary, and the member it runs as from inside its host.
    let pgs = members(&hosts, &c);
    let primary = c["members"].as_array().unwrap().iter().find(|m| m["role"] == "primary").expect("a primary");
    let old = pgs.iter().find(|p| p.name == primary["name"].as_str().unwrap()).unwrap().clone();
    assert!(old.writable(), "the primary takes writes through its socket: {old:?}");
    assert_eq!(pgs.iter().filter(|p| p.writable()).count(), 1, "one writable member before the cut");

    // Writes through the URI all along; each acknowledged one is remembered, with when.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_at: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let writer = {
        let (uri, stop, acked_at) = (uri.clone(), stop.clone(), acked_at.clone());
        std::thread::spawn(move || {
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if psql(&uri, &format!("INSERT INTO t VALUES ({i})")).is_ok() {
                    acked_at.lock().unwrap().push((i, Instant::now()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // 4. Cut the primary's link.
    phase("cut");
    hosts.cut(&old.host);
    let cut_at = Instant::now();
    let secs = |t: Instant| (t - cut_at).as_secs_f64();
    // A write on the isolated primary itself, from its own host: with `--sync` it must
    // never be acknowledged (no synchronous standby is reachable, and Patroni cannot relax
    // `synchronous_standby_names` without the DCS). It waits, then is cut off.
    let isolated_write = {
        let old = old.clone();
        std::thread::spawn(move || old.psql(40, "INSERT INTO t VALUES (99999)").output().expect("run psql"))
    };

    // Sample every member's own view (`pg_is_in_recovery()` through its socket) until the
    // old primary stepped down and another member took over.
    // Patroni's ttl is 8 s; the brief allows the isolated primary up to 30 s to step down.
    let demotion_deadline = cut_at + Duration::from_secs(30);
    let takeover_deadline = cut_at + Duration::from_secs(90);
    let mut demoted_at: Option<Instant> = None;
    let mut new_primary: Option<(Pg, Instant)> = None;
    // When two members took writes at once (before the old one stepped down).
    let mut overlap: Option<(Instant, Instant)> = None;
    let mut settled_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let writable: Vec<&Pg> = pgs.iter().filter(|p| p.writable()).collect();
        let old_writable = writable.iter().any(|p| p.name == old.name);
        if demoted_at.is_none() && !old_writable {
            demoted_at = Some(now);
        }
        if writable.len() > 1 {
            overlap = Some((overlap.map_or(now, |o| o.0), now));
        }
        // The essential property: once the old primary stepped down (at the latest by the
        // deadline), never two writable members, and the isolated one never writable again.
        if demoted_at.is_some() || now > demotion_deadline {
            assert!(
                !old_writable,
                "the isolated old primary takes writes {:.1} s after the cut (stepped down at {:?} s)",
                secs(now),
                demoted_at.map(secs)
            );
            assert!(writable.len() <= 1, "two writable members {:.1} s after the cut: {writable:?}", secs(now));
        }
        if let Some(p) = writable.iter().find(|p| p.name != old.name) {
            if new_primary.is_none() {
                new_primary = Some(((*p).clone(), now));
            }
        }
        // Once settled, go on sampling a few seconds: nothing flips back.
        if demoted_at.is_some() && new_primary.is_some() {
            let settled = *settled_at.get_or_insert(now);
            if now - settled > Duration::from_secs(3) {
                break;
            }
        }
        assert!(
            now < takeover_deadline,
            "no takeover within 90 s of the cut: old primary stepped down at {:?} s, new primary: {new_primary:?}\n{}",
            demoted_at.map(secs),
            sovdb_test_utils::tail(&server.log_path(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (new_primary, promoted_at) = new_primary.unwrap();
    let demoted_at = demoted_at.unwrap();
    // Not asserted (Patroni's timing, see docs/postgres.md), but worth seeing in the output.
    eprintln!(
        "partition: old primary {} stepped down {:.1} s after the cut; {} writable from {:.1} s; \
         both writable: {}",
        old.name,
        secs(demoted_at),
        new_primary.name,
        secs(promoted_at),
        overlap.map_or("never".to_string(), |(a, b)| format!("{:.1}-{:.1} s", secs(a), secs(b)))
    );
    // The write on the isolated primary was never acknowledged.
    let out = isolated_write.join().unwrap();
    assert!(
        !out.status.success(),
        "the isolated primary acknowledged a write: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The URI reaches the new primary (libpq skips the unreachable host and the standby):
    // the write loop's writes are acknowledged again.
    wait_for("a write through the URI acknowledged after the takeover", Duration::from_secs(60), || {
        acked_at.lock().unwrap().iter().any(|(_, at)| *at > promoted_at).then_some(())
    });
    // The DCS is degraded: two of three etcd members answer.
    let loc = json(&server, &["location", "show", LOC]);
    assert_eq!(loc["dcs"]["status"], "degraded", "{loc:#}");
    let sick: Vec<&Value> = loc["dcs"]["members"].as_array().unwrap().iter().filter(|m| m["healthy"] != true).collect();
    assert_eq!(sick.len(), 1, "{loc:#}");
    assert_eq!(sick[0]["host"], old.host.as_str(), "the cut host's etcd member is the one down: {loc:#}");
    assert!(sick[0]["error"].as_str().is_some_and(|e| !e.is_empty()), "with why: {loc:#}");
    eprintln!("partition: the cut host's etcd member: {}", sick[0]["error"]);

    // 5. Heal: the old primary rejoins as a replica of the new one.
    phase("heal");
    hosts.heal(&old.host);
    wait_for("the old primary rejoins as a replica", Duration::from_secs(180), || {
        let c = json(&server, &["cluster", "show", "pc"]);
        let m = role(&c, &old.name)?;
        let back = m["role"] == "replica" && (m["state"] == "running" || m["state"] == "streaming");
        (back && c["state"] == "ready").then_some(())
    });
    phase("rejoined");
    // The control plane sees the new primary as the primary.
    let c = json(&server, &["cluster", "show", "pc"]);
    assert_eq!(role(&c, &new_primary.name).unwrap()["role"], "primary", "{c:#}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let during: Vec<i64> = acked_at.lock().unwrap().iter().map(|(i, _)| *i).collect();
    assert!(during.len() > 10, "the write loop wrote: {}", during.len());
    acked.extend(during);

    // Every acknowledged row is on the new primary, and the old one catches up.
    let have: BTreeSet<i64> = psql(&uri, "SELECT v FROM t").unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let lost: Vec<_> = acked.difference(&have).collect();
    assert!(lost.is_empty(), "acknowledged writes lost across the partition: {lost:?}");
    assert!(!have.contains(&99999), "the write the isolated primary never acknowledged is on the new primary");
    let count = have.len().to_string();
    wait_for("the old primary has every row", Duration::from_secs(60), || {
        (old.query("SELECT pg_is_in_recovery(), count(*) FROM t")? == format!("t|{count}")).then_some(())
    });
    let writable: Vec<String> = pgs.iter().filter(|p| p.writable()).map(|p| p.name.clone()).collect();
    assert_eq!(writable, std::slice::from_ref(&new_primary.name), "exactly one writable primary at the end");
    wait_for("the DCS healthy again", Duration::from_secs(60), || {
        (json(&server, &["location", "show", LOC])["dcs"]["status"] == "healthy").then_some(())
    });
    phase("done");
}

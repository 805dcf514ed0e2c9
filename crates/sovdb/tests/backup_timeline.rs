//! A restore from a source that failed over: its primary is killed (`kill -9` of Patroni
//! and PostgreSQL) with WAL segments it has not archived yet, a replica is promoted onto a
//! new timeline, and the source's only backup was taken on the old one. The promoted
//! replica archives the segments the dead primary had not (they would be a hole in the
//! repository otherwise). A restore to a time after the failover must follow the new
//! timeline's history file from the repository; one to a time before it must stop on the
//! old timeline; `--latest` must reach what the new primary archived. Its own file so it
//! runs beside backups.rs. Real pgBackRest, Patroni, etcd and PostgreSQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, psql, ready_server, wait_for};
use sovdb_test_utils::processes_mentioning as processes;
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn member_dir(server: &TestServer, cluster: &Value, member: &str) -> PathBuf {
    sovdb_test_utils::member_dir(&server.data_dir().join("hosts/local"), cluster["id"].as_str().unwrap(), member)
}

/// The timeline the server behind `uri` writes on (from its current WAL file's name).
fn timeline(uri: &str) -> u32 {
    let name = psql(uri, "SELECT pg_walfile_name(pg_current_wal_lsn())").unwrap();
    u32::from_str_radix(&name[..8], 16).unwrap()
}

/// The marker rows a cluster holds, as `first..last (count)`.
fn rows(uri: &str) -> String {
    psql(uri, "SELECT min(v) || '..' || max(v) || ' (' || count(*) || ')' FROM m").unwrap()
}

/// The children of process `parent` whose command line mentions `needle`.
fn children(parent: u32, needle: &str) -> Vec<u32> {
    processes(needle)
        .into_iter()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
            let fields = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
            fields.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

/// The WAL segments a member's PostgreSQL finished but has not archived yet.
fn unarchived(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data.join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .collect()
}

/// Waits 1.5 s on each side of the moment it returns, so that no commit is close to it.
fn a_quiet_moment() -> String {
    std::thread::sleep(Duration::from_millis(1500));
    let at = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(1500));
    at
}

#[test]
fn a_restore_from_a_failed_over_source_follows_its_new_timeline() {
    let server = ready_server(Path::new(BIN));
    let repo = server.data_dir().join("backups");
    ok(&server, &["repo", "create", "r1", "--type", "posix", "--path", repo.to_str().unwrap(), "--default"]);
    // Synchronous: the rows of the old timeline are on the replica when the primary dies.
    ok(&server, &["cluster", "create", "tl", "--replicas", "2", "--sync", "--wait"]);
    let c = json(&server, &["cluster", "show", "tl"]);
    let old = c["members"].as_array().unwrap().iter().find(|m| m["role"] == "primary").expect("a primary")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let backups = json(&server, &["backup", "list", "tl"]);
    assert_eq!(backups.as_array().unwrap().len(), 1, "the first full backup only: {backups:#}");

    let uri = ok(&server, &["cluster", "connect", "tl"]).trim().to_string();
    let first_timeline = timeline(&uri);
    // A: on the old timeline, then a moment, then A2, still on it.
    psql(&uri, "CREATE TABLE m (v int PRIMARY KEY); INSERT INTO m SELECT generate_series(1, 10)").unwrap();
    let before_failover = a_quiet_moment();
    // The primary's archiver falls behind (frozen here; under load it lags): A2 and some
    // 40 MB more fill segments that the replica streams but no one archives yet.
    let dir = member_dir(&server, &c, &old);
    let postmaster = processes(&format!("postgres -D {}", dir.join("data").display()));
    assert_eq!(postmaster.len(), 1, "the primary's postmaster");
    let archiver = children(postmaster[0], "archiver");
    assert_eq!(archiver.len(), 1, "the primary's archiver");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(archiver[0] as i32, libc::SIGSTOP) };
    psql(&uri, "INSERT INTO m SELECT generate_series(11, 20)").unwrap();
    psql(&uri, "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 80000) g").unwrap();
    let left = unarchived(&dir.join("data"));
    assert!(left.len() >= 2, "segments the primary has not archived: {left:?}");

    // Lose the primary for real: its supervisor (so nothing restarts it), Patroni and
    // PostgreSQL, and the frozen archiver (which can't notice its postmaster is gone).
    let key = dir.file_name().unwrap().to_str().unwrap().to_string();
    for pid in processes(&format!("pg-{key}-patroni"))
        .into_iter()
        .chain(processes(&dir.join("patroni.yml").display().to_string()))
        .chain(processes(&dir.join("data").display().to_string()))
        .chain(archiver)
    {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_for("a replica promoted", Duration::from_secs(60), || {
        let c = json(&server, &["cluster", "show", "tl"]);
        c["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "primary" && m["name"] != old.as_str() && m["state"] == "running")
            .map(|_| ())
    });
    wait_for("writes resume", Duration::from_secs(30), || psql(&uri, "INSERT INTO m VALUES (21)").ok());
    let new_timeline = timeline(&uri);
    assert!(new_timeline > first_timeline, "the promoted replica writes on a new timeline: {new_timeline}");
    // The promoted replica archives them (Patroni's on_role_change).
    let archived = server.data_dir().join(format!("backups/archive/{}/15-1", c["id"].as_str().unwrap()));
    wait_for("the dead primary's segments archived", Duration::from_secs(60), || {
        let have: BTreeSet<String> = std::fs::read_dir(archived.join(&left.first()?[..16]))
            .ok()?
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.split('-').next()?.to_string()))
            .collect();
        left.is_subset(&have).then_some(())
    });
    // The old primary's host comes back: its agent is restarted by the control plane and
    // starts the member again, which rejoins as a replica. The cluster is healthy again.
    for pid in processes(&format!("agent --base-dir {} ", server.data_dir().join("hosts/local").display())) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_for("the cluster ready again", Duration::from_secs(120), || {
        let c = json(&server, &["cluster", "show", "tl"]);
        let m = c["members"].as_array()?.iter().find(|m| m["name"] == old.as_str())?.clone();
        (m["role"] == "replica" && m["state"] == "running" && c["state"] == "ready").then_some(())
    });

    // B1 and B2 on the new timeline, a moment between them.
    psql(&uri, "INSERT INTO m SELECT generate_series(22, 30)").unwrap();
    let after_failover = a_quiet_moment();
    psql(&uri, "INSERT INTO m SELECT generate_series(31, 40)").unwrap();
    assert_eq!(timeline(&uri), new_timeline);
    assert_eq!(rows(&uri), "1..40 (40)");

    // To a time after the failover: recovery starts from the backup of the old timeline
    // and must switch to the new one where its history file says.
    ok(
        &server,
        &["cluster", "restore", "tl", "--as", "after", "--to-time", &after_failover, "--replicas", "1", "--wait"],
    );
    let after = ok(&server, &["cluster", "connect", "after"]).trim().to_string();
    assert_eq!(rows(&after), "1..30 (30)", "A, A2 and B1, not B2");
    assert!(timeline(&after) > new_timeline, "the copy promoted past the source's timelines: {}", timeline(&after));

    // To a time before the failover: recovery stops on the old timeline.
    ok(
        &server,
        &["cluster", "restore", "tl", "--as", "before", "--to-time", &before_failover, "--replicas", "1", "--wait"],
    );
    let before = ok(&server, &["cluster", "connect", "before"]).trim().to_string();
    assert_eq!(rows(&before), "1..10 (10)", "A only");

    // The latest state: what the new primary archived after the failover too.
    ok(&server, &["cluster", "restore", "tl", "--as", "latest", "--latest", "--replicas", "1", "--wait"]);
    let latest = ok(&server, &["cluster", "connect", "latest"]).trim().to_string();
    assert_eq!(rows(&latest), "1..40 (40)");

    // The new primary backs up on its timeline, into the same stanza.
    ok(&server, &["backup", "create", "tl", "--wait"]);
    let backups = json(&server, &["backup", "list", "tl"]);
    let backups = backups.as_array().unwrap();
    assert_eq!(backups.len(), 2, "{backups:#?}");
    let wal_start = backups[1]["wal_start"].as_str().unwrap();
    assert_eq!(u32::from_str_radix(&wal_start[..8], 16).unwrap(), new_timeline, "{backups:#?}");
    assert_eq!(rows(&uri), "1..40 (40)", "the source is untouched");

    for name in ["after", "before", "latest", "tl"] {
        ok(&server, &["cluster", "delete", name, "--wait"]);
    }
}

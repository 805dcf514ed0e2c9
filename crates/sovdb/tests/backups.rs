//! Backups end to end on the local location: a posix repository, a cluster that archives
//! into it from its creation (with a first full backup), an incremental backup, restores
//! to a point in time and to the latest state into new clusters, and the repository
//! encrypted at rest. Real pgBackRest, Patroni, etcd and PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sovdb_test_utils::cli::{json, ok, psql, ready_server, refused};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn count(uri: &str) -> String {
    psql(uri, "SELECT count(*) FROM m").unwrap()
}

#[test]
fn a_cluster_backs_up_from_its_creation_and_restores_to_a_point_in_time() {
    let server = ready_server(Path::new(BIN));
    let repo = server.data_dir().join("backups");
    let repo_s = repo.to_str().unwrap();
    ok(&server, &["repo", "create", "r1", "--type", "posix", "--path", repo_s, "--default"]);
    // The location's default repository: archiving from the first moment, a first full backup.
    ok(&server, &["cluster", "create", "b1", "--wait"]);
    let c = json(&server, &["cluster", "show", "b1"]);
    let stanza = c["id"].as_str().unwrap().to_string();
    let list = json(&server, &["backup", "list", "b1"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!((list[0]["type"].as_str(), list[0]["repository"].as_str()), (Some("full"), Some("r1")));
    let events = json(&server, &["cluster", "events", "b1"]);
    assert!(events.as_array().unwrap().iter().any(|e| e["kind"] == "backup"), "{events:#}");

    let uri = ok(&server, &["cluster", "connect", "b1"]).trim().to_string();
    psql(&uri, "CREATE TABLE m (v int); INSERT INTO m SELECT generate_series(1, 10)").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let between = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    psql(&uri, "INSERT INTO m SELECT generate_series(11, 20)").unwrap();
    let out = ok(&server, &["backup", "create", "b1", "--wait"]);
    assert!(out.contains("incr backup"), "{out}");
    let list = json(&server, &["backup", "list", "b1"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[1]["type"], "incr");
    assert_eq!(list[1]["prior"], list[0]["id"]);
    psql(&uri, "INSERT INTO m SELECT generate_series(21, 30)").unwrap();

    // Bad restores are refused before anything is created.
    let before_first = list[0]["started_at"].as_str().unwrap();
    refused(&server, &["cluster", "restore", "b1", "--as", "x", "--to-time", before_first], "before the first backup");
    refused(&server, &["cluster", "restore", "b1", "--as", "x", "--to-time", "2099-01-01T00:00:00Z"], "future");
    refused(&server, &["cluster", "restore", "b1", "--as", "x", "--to-lsn", "nonsense"], "not an LSN");
    refused(&server, &["cluster", "restore", "b1", "--as", "b1"], "already exists");
    refused(&server, &["cluster", "restore", "nope", "--as", "x"], "not found");
    assert_eq!(json(&server, &["cluster", "list"]).as_array().unwrap().len(), 1, "nothing was created");

    // To a time between the two sets of rows: exactly the first set, on a new timeline.
    let at = between.to_rfc3339();
    ok(&server, &["cluster", "restore", "b1", "--as", "pitr", "--to-time", &at, "--wait"]);
    let pitr = ok(&server, &["cluster", "connect", "pitr"]).trim().to_string();
    assert_eq!(count(&pitr), "10");
    assert_eq!(psql(&pitr, "SELECT max(v) FROM m").unwrap(), "10");
    // Its own credentials, its own stanza, its own first backup.
    assert_ne!(pitr.split('@').next(), uri.split('@').next(), "new passwords");
    let pitr_backups = json(&server, &["backup", "list", "pitr"]);
    assert_eq!(pitr_backups.as_array().unwrap().len(), 1, "{pitr_backups:#}");
    let kinds: Vec<_> = json(&server, &["cluster", "events", "pitr"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"restored".to_string()), "{kinds:?}");

    // To the latest state of a live source: what was written after the last backup too.
    ok(&server, &["cluster", "restore", "b1", "--as", "late", "--wait"]);
    let late = ok(&server, &["cluster", "connect", "late"]).trim().to_string();
    assert_eq!(count(&late), "30");
    // The source is untouched and still archives and backs up.
    assert_eq!(count(&uri), "30");
    assert_eq!(json(&server, &["backup", "list", "b1"]).as_array().unwrap().len(), 2);

    // Encrypted at rest: the repository's files can't be read, nor with a wrong passphrase.
    let info = std::fs::read(repo.join(format!("backup/{stanza}/backup.info"))).unwrap();
    assert!(!String::from_utf8_lossy(&info).contains("[backrest]"), "backup.info is plain text");
    let wrong = Command::new("runuser")
        .args(["-u", "postgres", "--", "pgbackrest", "--repo1-path", repo_s, "--repo1-cipher-type=aes-256-cbc"])
        .arg("--repo1-cipher-pass=not-the-passphrase")
        .args([
            &format!("--stanza={stanza}"),
            "--log-level-console=off",
            "--log-level-stderr=off",
            "--output=json",
            "info",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&wrong.stdout);
    assert!(!said.contains("\"label\""), "a wrong passphrase lists no backup: {said}");

    // A repository in use can't be deleted.
    refused(&server, &["repo", "delete", "r1"], "b1");
    for name in ["pitr", "late", "b1"] {
        ok(&server, &["cluster", "delete", name, "--delete-backups", "--wait"]);
    }
    ok(&server, &["repo", "delete", "r1"]);
}

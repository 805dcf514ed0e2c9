//! Restore drills, scheduled backups with retention, and the backups of deleted clusters,
//! end to end on the local location with real pgBackRest and PostgreSQL: a drill passes on
//! a sound backup and catches a deliberately corrupted file; a schedule takes a full backup
//! that expires exactly what retention no longer keeps; a deleted cluster is restored by
//! name from its kept backups, which are then purged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, json, ok, psql, ready_server, refused, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn kinds(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn drills_schedules_retention_and_the_backups_of_deleted_clusters() {
    let server = ready_server(Path::new(BIN));
    let repo = server.data_dir().join("backups");
    let repo_s = repo.to_str().unwrap();
    ok(&server, &["repo", "create", "r1", "--type", "posix", "--path", repo_s, "--default"]);
    ok(&server, &["cluster", "create", "d1", "--wait"]);
    let stanza = json(&server, &["cluster", "show", "d1"])["id"].as_str().unwrap().to_string();
    let uri = ok(&server, &["cluster", "connect", "d1"]).trim().to_string();
    psql(&uri, "CREATE TABLE m (v int); INSERT INTO m SELECT generate_series(1, 1000)").unwrap();
    ok(&server, &["backup", "create", "d1", "--type", "incr", "--wait"]);

    // A drill of a sound backup passes, and leaves nothing behind.
    let out = ok(&server, &["backup", "verify", "d1", "--wait"]);
    assert!(out.contains("restored and verified"), "{out}");
    let events = json(&server, &["cluster", "events", "d1"]);
    let drill = events.as_array().unwrap().iter().find(|e| e["kind"] == "drill").expect("a drill event");
    assert!(drill["message"].as_str().unwrap().contains("page(s) checked"), "{drill:#}");
    let drills = files(&server.data_dir().join("hosts"));
    assert!(!drills.iter().any(|p| p.to_string_lossy().contains("/drill/")), "the drill's files are gone: {drills:?}");

    // A corrupted file of the newest backup: the drill fails, says so, and is an event.
    let list = json(&server, &["backup", "list", "d1"]);
    let newest = list.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let backup_dir = repo.join("backup").join(&stanza).join(&newest);
    let victim = files(&backup_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/pg_data/"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("the backup has data files");
    let mut bytes = std::fs::read(&victim).unwrap();
    let (at, len) = (bytes.len() / 2, bytes.len());
    for b in &mut bytes[at..len.min(at + 16)] {
        *b ^= 0xff;
    }
    std::fs::write(&victim, &bytes).unwrap();
    let out = cli(&server, &["backup", "verify", "d1", "--wait"]);
    assert!(!out.status.success(), "a drill of a corrupted backup fails");
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("verify"), "{said}");
    let events = json(&server, &["cluster", "events", "d1"]);
    assert!(kinds(&events).contains(&"drill-failed".to_string()), "{events:#}");
    let drills = files(&server.data_dir().join("hosts"));
    assert!(!drills.iter().any(|p| p.to_string_lossy().contains("/drill/")), "a failed drill cleans up: {drills:?}");

    // A schedule every minute with one full backup kept: the scheduler's full backup
    // expires the first full backup and the incremental one that depends on it (and the
    // corrupted file with them), exactly.
    refused(&server, &["backup", "policy", "d1", "--schedule", "0 0 3 * * *"], "five fields");
    let policy = json(&server, &["backup", "policy", "d1", "--schedule", "* * * * *", "--retention-full", "1"]);
    assert_eq!((policy["schedule"].as_str(), policy["retention_full_kept"].as_u64()), (Some("* * * * *"), Some(1)));
    let before: Vec<String> = list.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(before.len(), 2, "{list:#}");
    let after = wait_for("a scheduled full backup", Duration::from_secs(240), || {
        let l = json(&server, &["backup", "list", "d1"]);
        let ids: Vec<String> = l.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();
        (!ids.iter().any(|i| before.contains(i))).then_some(l)
    });
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["type"], "full");
    let ops = json(&server, &["op", "list"]);
    let scheduled = ops.as_array().unwrap().iter().find(|o| o["created_by"] == "scheduler").expect("a scheduled op");
    assert_eq!(scheduled["kind"], "backup.create");
    ok(&server, &["backup", "policy", "d1", "--clear"]);
    // The next drill passes on the new backup.
    ok(&server, &["backup", "verify", "d1", "--wait"]);

    // Deleted, its backups kept: listed, restorable by name.
    psql(&uri, "INSERT INTO m SELECT generate_series(1001, 1010)").unwrap();
    ok(&server, &["cluster", "delete", "d1", "--wait"]);
    let kept = json(&server, &["backup", "retained"]);
    assert_eq!(kept.as_array().unwrap().len(), 1, "{kept:#}");
    assert_eq!((kept[0]["cluster"].as_str(), kept[0]["cluster_id"].as_str()), (Some("d1"), Some(stanza.as_str())));
    assert_eq!(json(&server, &["backup", "list", "d1"]).as_array().unwrap().len(), 1);
    ok(&server, &["cluster", "restore", "d1", "--as", "d2", "--latest", "--wait"]);
    let d2 = ok(&server, &["cluster", "connect", "d2"]).trim().to_string();
    assert_eq!(psql(&d2, "SELECT count(*) FROM m").unwrap(), "1010", "the deleted cluster's last archived state");

    // A delete with --delete-backups leaves nothing in the repository; the kept backups
    // of d1 still hold it, until they are purged.
    let d2_stanza = json(&server, &["cluster", "show", "d2"])["id"].as_str().unwrap().to_string();
    ok(&server, &["cluster", "delete", "d2", "--delete-backups", "--wait"]);
    assert!(!repo.join("backup").join(&d2_stanza).exists());
    assert_eq!(json(&server, &["backup", "retained"]).as_array().unwrap().len(), 1, "d2's were not kept");
    refused(&server, &["repo", "delete", "r1"], "deleted cluster");
    ok(&server, &["backup", "purge", "d1", "--wait"]);
    assert!(json(&server, &["backup", "retained"]).as_array().unwrap().is_empty());
    assert!(!repo.join("backup").join(&stanza).exists(), "the deleted cluster's backups are gone");
    refused(&server, &["backup", "purge", "d1"], "not found");
    ok(&server, &["repo", "delete", "r1"]);
}

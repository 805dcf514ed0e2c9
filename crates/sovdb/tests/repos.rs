//! Backup repositories through the CLI against a real `sovdb serve` and its local host:
//! a posix repository's directory made by the real agent (owned by `postgres`, mode
//! 0750), a directory with files refused, and list, show and delete. Needs root (the
//! local agent creates directories for another user), as the other end-to-end tests do.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use sovdb_test_utils::cli::{cli, json, ok, ready_server, refused};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// The numeric ID of a system user.
fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("run id");
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_posix_repository_is_a_directory_made_for_postgres_and_forgotten_on_delete() {
    let server = ready_server(Path::new(BIN));
    // The database user must get through the directories above the repository.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("backups/db");
    let path_s = path.to_str().unwrap();

    let repo = json(&server, &["repo", "create", "nightly", "--type", "posix", "--path", path_s, "--default"]);
    assert_eq!(
        (repo["type"].as_str(), repo["host"].as_str(), repo["location"].as_str(), repo["path"].as_str()),
        (Some("posix"), Some("local"), Some("local"), Some(path_s))
    );
    assert_eq!((repo["encrypted"].as_bool(), repo["default"].as_bool()), (Some(true), Some(true)));
    let meta = std::fs::metadata(&path).expect("the repository's directory exists");
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.gid() != 0), (uid_of("postgres"), true), "owned by postgres");
    assert_eq!(meta.mode() & 0o7777, 0o750, "mode {:o}", meta.mode() & 0o7777);
    assert!(Command::new("dpkg").args(["-s", "pgbackrest"]).output().unwrap().status.success(), "pgbackrest installed");

    // A directory that holds files is refused, and nothing is recorded.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let full_s = full.to_str().unwrap();
    refused(&server, &["repo", "create", "other", "--type", "posix", "--path", full_s], "holds files already");
    assert_eq!(std::fs::read_to_string(full.join("keep.txt")).unwrap(), "mine", "left alone");
    refused(&server, &["repo", "create", "other", "--type", "posix", "--path", "/srv/../etc"], "plain absolute path");
    refused(&server, &["repo", "create", "other", "--type", "posix", "--path", path_s], "keeps its files in");
    refused(&server, &["repo", "create", "nightly", "--type", "posix", "--path", "/srv/x"], "already exists");
    refused(
        &server,
        &["repo", "create", "other", "--type", "posix", "--path", "/srv/x", "--endpoint", "s3.example.com"],
        "--endpoint is for s3 repositories",
    );
    let list = json(&server, &["repo", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["nightly"], "only the accepted create was recorded");

    // An empty directory that exists is fine; the table shows where the files are.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_s = empty.to_str().unwrap();
    ok(&server, &["repo", "create", "spare", "--type", "posix", "--path", empty_s, "--no-encrypt"]);
    assert_eq!(std::fs::metadata(&empty).unwrap().mode() & 0o7777, 0o750);
    let table = ok(&server, &["repo", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&format!("local:{path_s}")), "{table}");
    let shown = ok(&server, &["repo", "show", "spare"]);
    assert!(shown.contains("ENCRYPTED:") && shown.contains("no"), "{shown}");
    assert_eq!(json(&server, &["repo", "show", "nightly"]), repo, "show answers what create did");

    // Delete forgets the repository, not its files.
    let out = cli(&server, &["repo", "delete", "nightly"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("its files stay in {path_s} on host local")), "{said}");
    assert!(path.is_dir(), "the directory is kept");
    refused(&server, &["repo", "show", "nightly"], "not found");
    refused(&server, &["repo", "delete", "nightly"], "not found");
    ok(&server, &["repo", "delete", "spare"]);
    assert_eq!(json(&server, &["repo", "list"]), serde_json::json!([]));

    // Both creates and both deletes are in the audit log.
    let audit = json(&server, &["audit", "list"]);
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t.starts_with("repo/")))
        .map(|r| format!("{} {}", r["action"].as_str().unwrap(), r["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        ["repo.create repo/nightly", "repo.create repo/spare", "repo.delete repo/nightly", "repo.delete repo/spare"]
    );
}

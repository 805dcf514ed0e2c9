//! The audit log and secrets at rest against a real `sovdb serve` on its SQLite store:
//! - `audit verify` passes on an untouched chain and names the first bad record after one
//!   field is edited, a record is removed from the middle or the end, or a forged record
//!   (with a correct hash) is appended, all done directly in the store file;
//! - `audit export` prints every field, and the chain re-hashes outside sovdb;
//! - a refused request is in the audit log, without the token it carried;
//! - a master key rotation re-seals every secret, survives a restart, and a crash at
//!   either of its failpoints is finished or undone by the next start;
//! - a secret handed to the API appears in plain text nowhere: not in the store file, the
//!   server log or any API answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, json, ok, ready_server, wait_for};
use sovdb_test_utils::server::TestServer;
use sovdb_types::audit::{AuditEntry, AuditRecord, Outcome};
use sovdb_types::AuditId;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn db(server: &TestServer) -> PathBuf {
    server.data_dir().join("sovdb.db")
}

/// Runs SQL on the server's store file with the sqlite3 CLI, as someone with access to
/// the file would; returns what it printed.
fn sql(server: &TestServer, statements: &str) -> String {
    let out = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg(db(server))
        .arg(statements)
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "sqlite3 {statements}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A row of `audit_log` as an INSERT statement, to put it back after a test removed it.
fn row_insert(server: &TestServer, seq: i64) -> String {
    let out = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg("-cmd")
        .arg(".mode insert audit_log")
        .arg(db(server))
        .arg(format!("SELECT * FROM audit_log WHERE seq = {seq}"))
        .output()
        .expect("run sqlite3");
    let insert = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(insert.starts_with("INSERT INTO"), "{insert}");
    insert
}

/// `audit verify -o json`: whether it exited 0, what it printed, and its stderr.
fn verify(server: &TestServer, extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec!["audit", "verify", "-o", "json"];
    args.extend(extra);
    let out = cli(server, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("verify printed {stdout:?}: {e}"));
    (out.status.success(), report, String::from_utf8_lossy(&out.stderr).to_string())
}

fn assert_intact(server: &TestServer) -> Value {
    let (passed, report, stderr) = verify(server, &[]);
    assert!(passed && report["ok"] == true, "{report:#}\n{stderr}");
    report
}

/// Verify fails, names `seq` as the first bad record, with `kind`.
fn assert_fails_at(server: &TestServer, seq: i64, kind: &str) {
    let (passed, report, stderr) = verify(server, &[]);
    assert!(!passed, "verify exited 0: {report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(
        (report["problem"]["seq"].as_i64(), report["problem"]["kind"].as_str()),
        (Some(seq), Some(kind)),
        "{report:#}"
    );
    assert!(stderr.contains(&format!("record {seq}")) && stderr.contains(kind), "{stderr}");
}

fn export(server: &TestServer) -> Vec<AuditRecord> {
    ok(server, &["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line {l:?}: {e}")))
        .collect()
}

#[test]
fn audit_verify_catches_edits_removals_and_insertions_made_in_the_store_file() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["location", "create", "eu-1", "--provider", "ssh", "--region", "eu"]);
    ok(&server, &["location", "create", "us-1", "--provider", "ssh", "--region", "us"]);
    ok(&server, &["location", "delete", "us-1"]);

    // A refused request is recorded, with where it came from and without its token.
    let bad_token = "sovdb_thisisnotatokenbutmustnotbelogged0123";
    let out = server.cli().args(["audit", "list"]).env("SOVDB_TOKEN", bad_token).output().unwrap();
    assert!(!out.status.success());
    let denied = json(&server, &["audit", "list", "--actor", "anonymous"]);
    let denied = denied.as_array().expect("-o json prints a list");
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(
        (denied[0]["outcome"].as_str(), denied[0]["action"].as_str(), denied[0]["source"].as_str()),
        (Some("denied"), Some("GET /api/v1/audit"), Some("127.0.0.1"))
    );
    assert_eq!(denied[0]["params"]["status"], 401);

    // The export has every field: the chain re-hashes outside sovdb, and no token is in it.
    let text = ok(&server, &["audit", "export"]);
    assert!(!text.contains(bad_token) && !text.contains(&server.token), "a token is in the audit log");
    let records = export(&server);
    let mut prev = sovdb_types::audit::GENESIS_HASH.to_string();
    for (i, r) in records.iter().enumerate() {
        assert_eq!((r.seq, &r.prev_hash), (i as i64 + 1, &prev));
        assert!(r.hash_is_valid(), "record {} does not re-hash", r.seq);
        prev = r.hash.clone();
    }
    let n = records.len() as i64;
    assert!(n >= 8, "{n} records");
    let since = ok(&server, &["audit", "export", "--since", "1h"]).lines().count();
    assert!(since > 0 && since <= n as usize);

    let report = assert_intact(&server);
    assert_eq!(report["records"].as_i64(), Some(n));
    let head = format!("{}:{}", n, records.last().unwrap().hash);
    assert_eq!(report["head"]["hash"].as_str(), Some(records.last().unwrap().hash.as_str()));

    // One field of one record edited.
    let actor = sql(&server, "SELECT actor FROM audit_log WHERE seq = 3");
    sql(&server, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3");
    assert_fails_at(&server, 3, "edited");
    sql(&server, &format!("UPDATE audit_log SET actor = '{actor}' WHERE seq = 3"));
    assert_intact(&server);

    // A parameter edited.
    let params = sql(&server, "SELECT params FROM audit_log WHERE seq = 5");
    sql(&server, "UPDATE audit_log SET params = '{\"region\":\"elsewhere\"}' WHERE seq = 5");
    assert_fails_at(&server, 5, "edited");
    sql(&server, &format!("UPDATE audit_log SET params = '{}' WHERE seq = 5", params.replace('\'', "''")));
    assert_intact(&server);

    // A record removed from the middle.
    let row = row_insert(&server, 4);
    sql(&server, "DELETE FROM audit_log WHERE seq = 4");
    assert_fails_at(&server, 4, "removed");
    sql(&server, &row);
    assert_intact(&server);

    // The last record removed: the chain itself is whole, the recorded head is not.
    let row = row_insert(&server, n);
    sql(&server, &format!("DELETE FROM audit_log WHERE seq = {n}"));
    assert_fails_at(&server, n, "removed");
    sql(&server, &row);
    assert_intact(&server);

    // A forged record appended with a hash made by the published recipe.
    let last = records.last().unwrap();
    let forged = AuditEntry {
        at: last.at,
        actor: "admin".into(),
        project: Some("default".into()),
        source: Some("127.0.0.1".into()),
        action: "location.delete".into(),
        target: "location/eu-1".into(),
        params: serde_json::json!({}),
        outcome: Outcome::Success,
        request_id: None,
    };
    let id = AuditId::new();
    let hash = AuditRecord::compute_hash(n + 1, id, &forged, &last.hash);
    sql(
        &server,
        &format!(
            "INSERT INTO audit_log (seq, id, at, actor, project, source, action, target, params, outcome, request_id, \
             prev_hash, hash) VALUES ({}, '{id}', {}, 'admin', 'default', '127.0.0.1', 'location.delete', \
             'location/eu-1', '{{}}', 'success', NULL, '{}', '{hash}')",
            n + 1,
            last.at.timestamp_millis(),
            last.hash
        ),
    );
    assert_fails_at(&server, n + 1, "inserted");
    sql(&server, &format!("DELETE FROM audit_log WHERE seq = {}", n + 1));
    assert_intact(&server);

    // A head kept outside: the chain still holds it; a wrong one is refused.
    let (passed, report, _) = verify(&server, &["--anchor", &head]);
    assert!(passed, "{report:#}");
    let wrong = format!("{n}:{}", "0".repeat(64));
    let (passed, report, _) = verify(&server, &["--anchor", &wrong]);
    assert!(!passed && report["problem"]["seq"].as_i64() == Some(n), "{report:#}");
}

/// The ID of the key in `path` (as the server names it).
fn key_id(path: &Path) -> String {
    sovdb_pki::MasterKey::from_bytes(&std::fs::read(path).unwrap()).unwrap().id()
}

/// Every sealed value of the store: secrets, hosts' SSH keys, the CA's key.
fn sealed_values(server: &TestServer) -> Vec<String> {
    let mut v: Vec<String> = sql(server, "SELECT sealed FROM secrets").lines().map(str::to_string).collect();
    v.extend(
        sql(server, "SELECT ssh_key_sealed FROM hosts WHERE ssh_key_sealed IS NOT NULL").lines().map(str::to_string),
    );
    let ca: Value = serde_json::from_str(&sql(server, "SELECT value FROM meta WHERE key = 'pki.ca'")).unwrap();
    v.push(ca["sealed_key"].as_str().unwrap().to_string());
    v
}

fn assert_all_sealed_by(server: &TestServer, key_id: &str) {
    let values = sealed_values(server);
    assert!(values.len() >= 2, "{values:?}");
    for v in values {
        assert!(v.starts_with(&format!("v2:{key_id}:")), "{v} is not sealed with {key_id}");
    }
    assert_eq!(sql(server, "SELECT value FROM meta WHERE key = 'pki.master_key_id'"), key_id);
}

/// A repository with an encrypted cipher passphrase: one stored secret.
fn posix_repo(server: &TestServer, dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("backups");
    ok(server, &["repo", "create", "nightly", "--type", "posix", "--path", path.to_str().unwrap()]);
}

#[test]
fn a_master_key_rotation_reseals_every_secret_and_survives_restarts_and_crashes() {
    let mut server = ready_server(Path::new(BIN));
    let dir = tempfile::tempdir().unwrap();
    posix_repo(&server, dir.path());
    let key_file = server.data_dir().join("master.key");
    let first = key_id(&key_file);
    assert_all_sealed_by(&server, &first);

    let rotation = json(&server, &["admin", "rotate-master-key"]);
    let second = rotation["key_id"].as_str().unwrap().to_string();
    assert_eq!(rotation["previous_key_id"].as_str(), Some(first.as_str()));
    assert!(rotation["secrets"].as_u64().unwrap() >= 1 && rotation["ca_key"] == true, "{rotation:#}");
    assert_eq!(key_id(&key_file), second);
    assert_eq!(key_id(&server.data_dir().join("master.key.old")), first);
    assert!(!server.data_dir().join("master.key.new").exists());
    assert_all_sealed_by(&server, &second);
    let audit = json(&server, &["audit", "list", "--target", "pki/master-key"]);
    assert_eq!(audit[0]["action"], "pki.master-key.rotate");
    assert_eq!(audit[0]["params"]["key_id"].as_str(), Some(second.as_str()));

    // A restart reads the new key: the CA opens (or the server would not start) and a
    // further rotation opens every secret again.
    server.stop();
    server.launch();
    let third = json(&server, &["admin", "rotate-master-key"])["key_id"].as_str().unwrap().to_string();
    assert_all_sealed_by(&server, &third);

    // Crash after the new key file is written, before anything is sealed with it: the
    // next start throws that key away.
    crash_rotation(&mut server, sovdb_app::FAILPOINT_ROTATE_AFTER_NEW_FILE);
    assert_eq!(key_id(&key_file), third);
    assert!(!server.data_dir().join("master.key.new").exists());
    assert_all_sealed_by(&server, &third);
    assert!(server.log().contains("discarded the key of a master key rotation that did not commit"));

    // Crash after the store is re-sealed, before the key file is switched: the next start
    // switches it.
    let pending = crash_rotation_pending(&mut server, sovdb_app::FAILPOINT_ROTATE_AFTER_COMMIT);
    assert_eq!(key_id(&key_file), pending);
    assert_eq!(key_id(&server.data_dir().join("master.key.old")), third);
    assert_all_sealed_by(&server, &pending);
    assert!(server.log().contains("finished a master key rotation that a crash interrupted"));
    let last = json(&server, &["admin", "rotate-master-key"])["key_id"].as_str().unwrap().to_string();
    assert_all_sealed_by(&server, &last);
    let (passed, report, _) = verify(&server, &[]);
    assert!(passed, "{report:#}");
}

/// Restarts the server with `point` set to crash, asks for a rotation (the server dies),
/// then starts it again without failpoints. Returns the ID of the key the crashed
/// rotation had written.
fn crash_rotation_pending(server: &mut TestServer, point: &str) -> String {
    server.stop();
    server.set_env("SOVDB_FAILPOINTS", Some(&format!("{point}=crash")));
    server.launch();
    let out = cli(server, &["admin", "rotate-master-key"]);
    assert!(!out.status.success(), "the rotation survived failpoint {point}");
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let new_file = server.data_dir().join("master.key.new");
    assert!(new_file.exists(), "a crash at {point} leaves the new key file");
    let pending = key_id(&new_file);
    server.set_env("SOVDB_FAILPOINTS", None);
    server.launch();
    wait_for("the server answers", Duration::from_secs(30), || cli(server, &["whoami"]).status.success().then_some(()));
    pending
}

fn crash_rotation(server: &mut TestServer, point: &str) {
    crash_rotation_pending(server, point);
}

#[test]
fn a_secret_given_to_the_api_is_nowhere_in_plain_text() {
    let server = TestServer::start(Path::new(BIN));
    let marker = format!("PLAINTEXT-SECRET-{}", rand::random::<u64>());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_test");
    std::fs::write(&key, format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n-----END OPENSSH PRIVATE KEY-----\n"))
        .unwrap();
    let closed = sovdb_test_utils::free_port().to_string();

    let mut answers = Vec::new();
    answers.push(ok(&server, &["location", "create", "far", "--provider", "ssh", "--region", "eu", "-o", "json"]));
    answers.push(ok(
        &server,
        &[
            "host",
            "add",
            "far-1",
            "--location",
            "far",
            "--address",
            "127.0.0.1",
            "--ssh-port",
            &closed,
            "--ssh-key",
            key.to_str().unwrap(),
            "-o",
            "json",
        ],
    ));
    // Let the host's operation try (and fail to reach) the host, so its errors are in.
    let op = wait_for("host far-1's operation tried", Duration::from_secs(60), || {
        let ops = json(&server, &["op", "list"]);
        ops.as_array()?
            .iter()
            .find(|o| {
                o["target"] == "host/far-1"
                    && o["steps"].as_array().is_some_and(|s| s.iter().any(|s| s["attempts"].as_i64() > Some(0)))
            })
            .cloned()
    });
    let id = op["id"].as_str().unwrap().to_string();
    for args in [
        vec!["host", "show", "far-1", "-o", "json"],
        vec!["host", "list", "-o", "json"],
        vec!["op", "list", "-o", "json"],
        vec!["op", "show", &id, "-o", "json"],
        vec!["audit", "list", "-o", "json"],
        vec!["audit", "export"],
        vec!["audit", "verify", "-o", "json"],
        vec!["location", "show", "far", "-o", "json"],
    ] {
        answers.push(ok(&server, &args));
    }
    // Straight from the API too.
    for path in ["/api/v1/hosts/far-1", "/api/v1/operations", &format!("/api/v1/operations/{id}"), "/api/v1/audit"] {
        let out = Command::new("curl")
            .args(["-sS", "--cacert", server.ca_path().to_str().unwrap()])
            .args(["-H", &format!("Authorization: Bearer {}", server.token), &format!("{}{path}", server.url)])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
        answers.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    for (i, a) in answers.iter().enumerate() {
        assert!(!a.contains(&marker), "answer {i} holds the secret: {a}");
    }
    assert!(!server.log().contains(&marker), "the server log holds the secret");
    for file in ["sovdb.db", "sovdb.db-wal"] {
        let path = server.data_dir().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(!contains(&bytes, marker.as_bytes()), "{} holds the secret", path.display());
        }
    }
    // It is stored, sealed.
    let sealed = sql(&server, "SELECT ssh_key_sealed FROM hosts WHERE name = 'far-1'");
    assert!(sealed.starts_with("v2:"), "{sealed}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

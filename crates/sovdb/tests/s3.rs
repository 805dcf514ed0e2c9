//! S3 repositories end to end, against a real S3 server on loopback (s3s-fs behind
//! HAProxy's TLS: `sovdb_test_utils::s3`) and the real binary: creates checked through the
//! local host's agent before anything is recorded, and refused quickly, saying what to fix,
//! when the key is wrong, nothing answers, the bucket is missing or the certificate is not
//! trusted; a cluster that archives and backs up into the bucket from its creation, an
//! incremental backup, the latest state restored into a new cluster; the objects in the
//! bucket encrypted; the keys in clear nowhere the control plane writes or answers.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use sovdb_test_utils::cli::{cli_input, json, ok, psql, ready_server};
use sovdb_test_utils::s3::S3Server;
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// `repo create NAME --type s3` for the fixture's bucket, `secret` on standard input: the
/// fixture's endpoint, region, key and CA, but for the options `set` gives a value (clap
/// refuses an option given twice) and with the `extra` arguments.
fn create(
    server: &TestServer,
    s3: &S3Server,
    name: &str,
    secret: &str,
    set: &[(&str, &str)],
    extra: &[&str],
) -> Output {
    let (endpoint, ca_file) = (s3.endpoint(), s3.ca_file().display().to_string());
    let mut options = vec![
        ("--type", "s3"),
        ("--endpoint", endpoint.as_str()),
        ("--bucket", s3.bucket()),
        ("--region", s3.region()),
        ("--uri-style", "path"),
        ("--access-key-id", s3.access_key()),
        ("--s3-ca-file", ca_file.as_str()),
    ];
    for (flag, value) in set {
        match options.iter_mut().find(|(f, _)| f == flag) {
            Some(option) => option.1 = value,
            None => options.push((flag, value)),
        }
    }
    let mut args = vec!["repo", "create", name, "--secret-access-key-stdin"];
    args.extend(options.iter().flat_map(|(f, v)| [*f, *v]));
    args.extend(extra);
    cli_input(server, &args, &format!("{secret}\n"))
}

/// A create that must be refused saying `needle`, within `within`; what it said.
fn refused(server: &TestServer, s3: &S3Server, secret: &str, set: &[(&str, &str)], needle: &str) -> String {
    let started = Instant::now();
    let out = create(server, s3, "refused", secret, set, &[]);
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{set:?} was accepted");
    assert!(said.contains(needle), "{set:?}: {said:?} does not say {needle:?}");
    // pgBackRest's default I/O timeout (60 s, and retries) would make this take minutes.
    assert!(took < Duration::from_secs(30), "{set:?} took {took:?} to be refused");
    for secret in [s3.secret_key(), s3.access_key()] {
        assert!(!said.contains(secret), "a key in {said:?}");
    }
    said
}

fn count(uri: &str) -> String {
    psql(uri, "SELECT count(*) FROM m").unwrap()
}

#[test]
fn a_cluster_backs_up_into_s3_and_restores_from_it() {
    let s3 = S3Server::start();
    let server = ready_server(Path::new(BIN));

    // Refused before anything is recorded: what is wrong and what to do, quickly.
    let said = refused(&server, &s3, "not-the-secret", &[], "refused the access key");
    assert!(said.contains("check --access-key-id and the secret"), "{said}");
    let nothing = format!("127.0.0.1:{}", sovdb_test_utils::free_port());
    let said = refused(&server, &s3, s3.secret_key(), &[("--endpoint", &nothing)], "cannot reach the S3 endpoint");
    assert!(said.contains(&format!("https://{nothing}")) && said.contains("Connection refused"), "{said}");
    assert!(said.contains("check --endpoint and that the storage is up"), "{said}");
    let said = refused(&server, &s3, s3.secret_key(), &[("--bucket", "no-such-bucket")], "has no bucket");
    assert!(said.contains("\"no-such-bucket\": check --bucket"), "{said}");
    // A CA that did not sign the endpoint's certificate.
    let other_ca = server.data_dir().join("other-ca.crt");
    std::fs::write(&other_ca, sovdb_pki::Ca::generate("not the S3 server's CA").unwrap().cert_pem()).unwrap();
    let other_ca = [("--s3-ca-file", other_ca.to_str().unwrap())];
    let said = refused(&server, &s3, s3.secret_key(), &other_ca, "does not trust the certificate");
    assert!(said.contains("give the CA that signed it with --s3-ca-file"), "{said}");
    assert_eq!(json(&server, &["repo", "list"]), serde_json::json!([]), "nothing recorded");
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir().join("hosts/local/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(leftovers, Vec::<std::path::PathBuf>::new(), "the checks' CA files are removed");

    // Accepted: checked, then recorded. A second default replaces the first.
    let out = create(&server, &s3, "offsite", s3.secret_key(), &[], &["--default", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let repo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (repo["type"].as_str(), repo["endpoint"].as_str(), repo["bucket"].as_str(), repo["path"].as_str()),
        (Some("s3"), Some(s3.endpoint().as_str()), Some(s3.bucket()), Some("/sovdb"))
    );
    assert_eq!((repo["encrypted"].as_bool(), repo["default"].as_bool()), (Some(true), Some(true)));
    let out = create(&server, &s3, "plain", s3.secret_key(), &[("--path", "/plain")], &["--no-encrypt", "--default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&server, &["repo", "show", "offsite"])["default"], false, "one default per location");

    // A cluster archives into the bucket from its creation, with a first full backup.
    ok(&server, &["cluster", "create", "s1", "--backup-repo", "offsite", "--wait"]);
    let stanza = json(&server, &["cluster", "show", "s1"])["id"].as_str().unwrap().to_string();
    let uri = ok(&server, &["cluster", "connect", "s1"]).trim().to_string();
    psql(&uri, "CREATE TABLE m (v int); INSERT INTO m SELECT generate_series(1, 10)").unwrap();
    let out = ok(&server, &["backup", "create", "s1", "--type", "incr", "--wait"]);
    assert!(out.contains("incr backup"), "{out}");
    let list = json(&server, &["backup", "list", "s1"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!((list[0]["type"].as_str(), list[1]["type"].as_str()), (Some("full"), Some("incr")));
    assert_eq!(list[1]["prior"], list[0]["id"]);
    assert!(list.iter().all(|b| b["repository"] == "offsite"), "{list:#?}");
    psql(&uri, "INSERT INTO m SELECT generate_series(11, 20)").unwrap();

    // The latest state, rows written after the last backup too, restored from the bucket.
    ok(&server, &["cluster", "restore", "s1", "--latest", "--as", "copy", "--wait"]);
    let copy = ok(&server, &["cluster", "connect", "copy"]).trim().to_string();
    assert_eq!(count(&copy), "20");
    assert_eq!(count(&uri), "20", "the source is untouched");

    // The objects are files under the bucket's directory, encrypted.
    let repo_dir = s3.bucket_dir().join("sovdb");
    for info in [format!("backup/{stanza}/backup.info"), format!("archive/{stanza}/archive.info")] {
        let bytes = std::fs::read(repo_dir.join(&info)).unwrap_or_else(|e| panic!("{info}: {e}"));
        assert!(!String::from_utf8_lossy(&bytes).contains("[backrest]"), "{info} is plain text");
    }

    // The keys in clear nowhere: the audit log shows them redacted; the server's log and
    // its store (the files of its data directory) don't hold them.
    let audit = json(&server, &["audit", "list"]);
    let creates: Vec<&serde_json::Value> =
        audit.as_array().unwrap().iter().filter(|r| r["action"] == "repo.create").collect();
    assert_eq!(creates.len(), 2, "{creates:#?}");
    assert_eq!(creates[0]["params"]["access_key_id"], "<redacted>");
    assert_eq!(creates[0]["params"]["secret_access_key"], "<redacted>");
    assert_eq!(creates[1]["params"]["previous_default"], "offsite");
    let mut places = vec![("the audit log".to_string(), audit.to_string().into_bytes())];
    places.push(("the server's log".into(), std::fs::read(server.log_path()).unwrap()));
    for entry in std::fs::read_dir(server.data_dir()).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            places.push((entry.path().display().to_string(), std::fs::read(entry.path()).unwrap()));
        }
    }
    for (place, bytes) in &places {
        let text = String::from_utf8_lossy(bytes);
        for key in [s3.secret_key(), s3.access_key()] {
            assert!(!text.contains(key), "a key in clear in {place}");
        }
    }
}

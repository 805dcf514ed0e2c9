//! A posix repository on another host than the database: three test hosts (network
//! namespaces reached over SSH), the repository on one, a cluster's two members on the
//! other two. Members archive and restore through the repository host's pgBackRest TLS
//! server; backups run on the repository host and reach the primary through its host's
//! server, also after a switchover moved the primary. The passphrase never reaches the
//! database hosts, and a stanza's certificate reads no other stanza.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, psql};
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::testhosts::TestHosts;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
const LOC: &str = "lab";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each member's host and directory.
fn member_dirs(hosts: &TestHosts, cluster: &Value) -> Vec<(String, String)> {
    let id = cluster["id"].as_str().unwrap();
    cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let host = m["host"].as_str().unwrap().to_string();
            let dir = sovdb_test_utils::member_dir(&hosts.host(&host).base_dir, id, m["name"].as_str().unwrap());
            (host, dir.display().to_string())
        })
        .collect()
}

#[test]
fn a_cluster_backs_up_into_a_repository_on_another_host_through_tls() {
    let hosts = TestHosts::up(3);
    // Internal certificates live 150 s, so the bot renews every one of them (agents', etcd's,
    // members', the pgBackRest servers' and the stanza's) while the test runs.
    let mut server = TestServer::new(Path::new(BIN), None);
    server.set_env("SOVDB_INTERNAL_CERT_VALIDITY_SECS", Some("150"));
    server.launch();
    ok(&server, &["location", "create", LOC, "--provider", "ssh", "--region", "lab"]);
    let names: Vec<String> = hosts.hosts().iter().map(|h| h.name.clone()).collect();
    let (bk, db) = (&names[0], &names[1..]);
    std::thread::scope(|scope| {
        for (i, h) in hosts.hosts().iter().enumerate() {
            let server = &server;
            scope.spawn(move || {
                let (address, key, base) =
                    (h.address.to_string(), h.ssh_key.display().to_string(), h.base_dir.display().to_string());
                let role = if i == 0 { "role=backup" } else { "role=db" };
                let mut args = vec!["host", "add", &h.name, "--location", LOC, "--address", &address];
                args.extend(["--ssh-key", &key, "--base-dir", &base, "--label", role, "--wait"]);
                ok(server, &args);
            });
        }
    });

    // The repository on the backup host; the cluster only on the database hosts.
    let repo_dir = hosts.host(bk).base_dir.join("repo");
    let repo_s = repo_dir.display().to_string();
    ok(&server, &["repo", "create", "far", "--location", LOC, "--type", "posix", "--path", &repo_s, "--host", bk]);
    ok(
        &server,
        &[
            "cluster",
            "create",
            "rc",
            "--location",
            LOC,
            "--replicas",
            "2",
            "--spread",
            "host",
            "--require-label",
            "role=db",
            "--backup-repo",
            "far",
            "--wait",
        ],
    );
    let c = json(&server, &["cluster", "show", "rc"]);
    let dirs = member_dirs(&hosts, &c);
    for (host, _) in &dirs {
        assert!(db.contains(host), "members only on the database hosts: {c:#}");
    }
    // The first full backup was taken on the repository host, from the primary's host.
    let list = json(&server, &["backup", "list", "rc"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["type"], "full");
    assert!(repo_dir.join("backup").join(c["id"].as_str().unwrap()).is_dir(), "the backup is in the directory");

    // The database hosts reach the repository through TLS and hold no passphrase.
    for (host, dir) in &dirs {
        let conf = std::fs::read_to_string(format!("{dir}/pgbackrest.conf")).unwrap();
        assert!(conf.contains("repo1-host-type=tls\n"), "{host}: {conf}");
        assert!(conf.contains(&format!("repo1-host={}\n", hosts.host(bk).address)), "{host}: {conf}");
        assert!(!conf.contains("cipher") && !conf.contains("repo1-path"), "{host}: {conf}");
    }
    let info = std::fs::read_to_string(repo_dir.join("archive").join(c["id"].as_str().unwrap()).join("archive.info"))
        .unwrap_or_default();
    assert!(!info.contains("[db]"), "the repository's files are encrypted: {info}");

    // Rows, a point in time between them, more rows; a switchover moves the primary to the
    // other database host, and the next backup reaches it there.
    let uri = ok(&server, &["cluster", "connect", "rc"]).trim().to_string();
    psql(&uri, "CREATE TABLE m (v int); INSERT INTO m SELECT generate_series(1, 10)").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(1500));
    psql(&uri, "INSERT INTO m SELECT generate_series(11, 20)").unwrap();
    let primary_host = |c: &Value| {
        c["members"].as_array().unwrap().iter().find(|m| m["role"] == "primary").unwrap()["host"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = primary_host(&c);
    ok(&server, &["cluster", "switchover", "rc", "--wait"]);
    let after = primary_host(&json(&server, &["cluster", "show", "rc"]));
    assert_ne!(before, after, "the switchover moved the primary to the other host");
    let out = ok(&server, &["backup", "create", "rc", "--type", "incr", "--wait"]);
    assert!(out.contains("incr backup"), "{out}");
    assert_eq!(json(&server, &["backup", "list", "rc"]).as_array().unwrap().len(), 2);

    // A restore onto the database hosts reads the repository through TLS: exactly the rows
    // before the point in time.
    ok(
        &server,
        &["cluster", "restore", "rc", "--as", "rc2", "--to-time", &between, "--require-label", "role=db", "--wait"],
    );
    let uri2 = ok(&server, &["cluster", "connect", "rc2"]).trim().to_string();
    assert_eq!(psql(&uri2, "SELECT count(*), max(v) FROM m").unwrap(), "10|10");
    let c2 = json(&server, &["cluster", "show", "rc2"]);
    // The copy kept no way into the source: its members hold only their own stanza's key.
    let source_key = format!("pgbackrest-{}.key", c["id"].as_str().unwrap());
    for (host, dir) in member_dirs(&hosts, &c2) {
        let tls = Path::new(&dir).join("tls");
        assert!(!tls.join(&source_key).exists(), "{host}: the source's key is gone from {}", tls.display());
        let own = format!("pgbackrest-{}.key", c2["id"].as_str().unwrap());
        assert!(tls.join(&own).exists(), "{host}: its own key is there");
    }

    // A stanza's certificate reads its own stanza only: rc's member asking for rc2's
    // backups is turned away by the repository host's server.
    let (host, dir) = &dirs[0];
    let other = c2["id"].as_str().unwrap();
    let conf = format!("--config={dir}/pgbackrest.conf");
    let stanza = format!("--stanza={other}");
    let out = hosts.exec(host, ["runuser", "-u", "postgres", "--", "pgbackrest", &conf, &stanza, "info"]);
    let shown = text(&out.stdout) + &text(&out.stderr);
    assert!(shown.contains("access denied"), "another stanza is refused: {shown}");
    let own = format!("--stanza={}", c["id"].as_str().unwrap());
    let out = hosts.exec(host, ["runuser", "-u", "postgres", "--", "pgbackrest", &conf, &own, "info"]);
    assert!(text(&out.stdout).contains("full backup"), "its own stanza is readable: {}", text(&out.stdout));

    // The restore drill runs on the repository's host.
    let out = ok(&server, &["backup", "verify", "rc", "--wait"]);
    assert!(out.contains("restored and verified"), "{out}");

    // Renewals: the repository host's server presents a new certificate and the members
    // hold a new stanza certificate; backups still work through them.
    let server_conf = hosts.host(bk).base_dir.join("pgbackrest-server/server.conf");
    let conf = std::fs::read_to_string(&server_conf).unwrap();
    let port = conf.lines().find_map(|l| l.strip_prefix("tls-server-port=")).expect("a port").to_string();
    let served_at = format!("{}:{port}", hosts.host(bk).address);
    let stanza_cert = |dir: &str| {
        let id = c["id"].as_str().unwrap();
        serial_of(&std::fs::read_to_string(Path::new(dir).join(format!("tls/pgbackrest-{id}.crt"))).unwrap_or_default())
    };
    let (_, m_dir) = member_dirs(&hosts, &c)[0].clone();
    let first_server = served_serial(&served_at);
    let first_stanza = stanza_cert(&m_dir);
    assert!(first_server.is_some() && first_stanza.is_some(), "{served_at} {m_dir}");
    sovdb_test_utils::cli::wait_for("renewed backup certificates", Duration::from_secs(240), || {
        let renewed = served_serial(&served_at).is_some_and(|s| Some(s) != first_server)
            && stanza_cert(&m_dir).is_some_and(|s| Some(s) != first_stanza);
        renewed.then_some(())
    });
    let out = ok(&server, &["backup", "create", "rc", "--type", "incr", "--wait"]);
    assert!(out.contains("incr backup"), "{out}");
    let ops = json(&server, &["op", "list"]);
    for kind in ["host.renew-certs", "cluster.renew-certs"] {
        let mine: Vec<&Value> = ops.as_array().unwrap().iter().filter(|o| o["kind"] == kind).collect();
        assert!(mine.iter().any(|o| o["state"] == "succeeded"), "a {kind} succeeded: {ops:#}");
    }

    for name in ["rc2", "rc"] {
        ok(&server, &["cluster", "delete", name, "--delete-backups", "--wait"]);
    }
    ok(&server, &["repo", "delete", "far"]);
}

/// The serial of a PEM certificate, if it is one.
fn serial_of(pem: &str) -> Option<String> {
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(pem.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    text(&out.stdout).trim().strip_prefix("serial=").map(str::to_lowercase)
}

/// The serial of the certificate a TLS server presents at `addr` (`host:port`).
fn served_serial(addr: &str) -> Option<String> {
    let script = format!("openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial");
    let out = std::process::Command::new("timeout").args(["10", "sh", "-c", &script]).output().ok()?;
    text(&out.stdout).trim().strip_prefix("serial=").map(str::to_lowercase)
}

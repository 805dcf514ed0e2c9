//! Events, logs and syslog forwarding end to end, on real clusters of the `local`
//! location: `sovdb logs --follow` shows lines the test makes PostgreSQL write, `sovdb
//! events --follow` shows a switchover, a restart and a backup as they happen, and a real
//! rsyslogd (on a loopback port, with its own configuration and output file) receives
//! the cluster's lines as RFC 5424 messages, also after it was down for a while.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, psql, ready_server, wait_for};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// A CLI command that keeps printing (`--follow`), its stdout lines collected as they come.
struct Follow {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

impl Follow {
    fn spawn(server: &TestServer, args: &[&str]) -> Follow {
        let mut child =
            server.cli().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the CLI");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Follow { child, lines, what: args.join(" ") }
    }

    /// Waits until a line matches; answers it.
    fn wait_line(&self, timeout: Duration, mut f: impl FnMut(&str) -> bool) -> String {
        wait_for(&format!("a matching line from `sovdb {}`", self.what), timeout, || {
            self.lines.lock().unwrap().iter().find(|l| f(l)).cloned()
        })
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn primary(server: &TestServer, cluster: &str) -> String {
    let c = json(server, &["cluster", "show", cluster]);
    let members = c["members"].as_array().unwrap().clone();
    members.iter().find(|m| m["role"] == "primary").expect("a primary")["name"].as_str().unwrap().to_string()
}

fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("sovdb-test-{what}-{nanos}")
}

#[test]
fn logs_follow_shows_lines_the_test_causes_and_events_follow_a_switchover_a_restart_and_a_backup() {
    let server = ready_server(Path::new(BIN));
    let repo = server.data_dir().join("backups");
    ok(&server, &["repo", "create", "r1", "--type", "posix", "--path", repo.to_str().unwrap(), "--default"]);
    ok(&server, &["cluster", "create", "lg", "--replicas", "2", "--wait"]);
    let uri = ok(&server, &["cluster", "connect", "lg"]).trim().to_string();
    let events = Follow::spawn(&server, &["events", "--follow", "-o", "json"]);

    // A member's log, followed: a line PostgreSQL writes because of the test, then the
    // error of a failing query, both prefixed by member and source.
    let p = primary(&server, "lg");
    let logs = Follow::spawn(&server, &["logs", "lg", "--member", &p, "--follow"]);
    let said = marker("raise");
    // Written until seen: the stream may open after the first one was written.
    let prefix = format!("{p} postgresql | ");
    wait_for("the RAISE LOG line in `sovdb logs --follow`", Duration::from_secs(60), || {
        psql(&uri, &format!("DO $$ BEGIN RAISE LOG '{said}'; END $$")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        logs.all().into_iter().find(|l| l.starts_with(&prefix) && l.contains(&said) && l.contains("LOG:"))
    });
    let table = marker("missing");
    assert!(psql(&uri, &format!("SELECT * FROM \"{table}\"")).is_err());
    logs.wait_line(Duration::from_secs(30), |l| {
        l.starts_with(&prefix) && l.contains("ERROR:") && l.contains(&format!("relation \"{table}\" does not exist"))
    });
    logs.wait_line(Duration::from_secs(30), |l| l.starts_with(&format!("{p} patroni | ")));
    // Only that member's lines.
    assert!(logs.all().iter().all(|l| l.starts_with(&format!("{p} "))), "{:#?}", logs.all());
    drop(logs);

    // Without --follow: the last lines of every member's logs; --since filters by time.
    let once = ok(&server, &["logs", "lg", "-n", "5"]);
    for m in ["lg-1", "lg-2"] {
        assert!(once.lines().any(|l| l.starts_with(&format!("{m} patroni | "))), "{m}: {once}");
    }
    assert!(once.contains(&said), "the RAISE LOG line among the last ones: {once}");
    let later = ok(&server, &["logs", "lg", "--since", "2099-01-01T00:00:00Z"]);
    assert!(later.trim().is_empty(), "nothing is stamped in 2099: {later}");
    let as_json = json(&server, &["logs", "lg", "--member", &p, "-n", "3"]);
    assert!(as_json.as_array().unwrap().iter().all(|l| l["member"] == p.as_str()), "{as_json:#}");
    // Reading logs is audited.
    let audit = json(&server, &["audit", "list", "--target", "cluster/lg"]);
    assert!(audit.as_array().unwrap().iter().any(|r| r["action"] == "cluster.logs"), "{audit:#}");

    // Day-2 changes: each one's event arrives while `events --follow` runs.
    ok(&server, &["cluster", "switchover", "lg", "--wait"]);
    ok(&server, &["cluster", "restart", "lg", "--wait"]);
    ok(&server, &["backup", "create", "lg", "--wait"]);
    for kind in ["switchover", "restart", "backup"] {
        events.wait_line(Duration::from_secs(60), |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|e| e["kind"] == kind && e["target"] == "cluster/lg")
        });
    }
    let followed: Vec<Value> = events.all().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = followed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "each event once: {ids:?}");
    // The creation was before the follow began: not replayed.
    assert!(followed.iter().all(|e| e["kind"] != "created"), "{followed:#?}");

    // The timeline, listed: the whole story, oldest first, also per cluster.
    let list = json(&server, &["events", "--cluster", "lg"]);
    let kinds: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("no {k} event: {kinds:?}"));
    assert!(pos("created") < pos("switchover") && pos("switchover") < pos("restart"), "{kinds:?}");
    assert!(kinds.iter().filter(|k| **k == "backup").count() >= 2, "the creation's backup and ours: {kinds:?}");
    // `cluster events` tells the same story.
    let same = json(&server, &["cluster", "events", "lg"]);
    assert_eq!(same.as_array().unwrap().len(), list.as_array().unwrap().len());
    // An admin's timeline also has the installation's own events; --since cuts it.
    let all = json(&server, &["events"]);
    assert!(all.as_array().unwrap().len() >= list.as_array().unwrap().len());
    let none = json(&server, &["events", "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!(none.as_array().unwrap().len(), 0, "{none:#}");
}

/// A real rsyslogd on a loopback port: its own configuration, work directory and output
/// file (the machine's syslog is not touched). It writes what it parsed of each RFC 5424
/// message: version, host name, app name, structured data and message.
struct Rsyslog {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn start() -> Rsyslog {
        Rsyslog::configured(|_| (String::new(), String::new()))
    }

    /// Over TLS (RFC 5425, rsyslog's gtls driver): its certificate for 127.0.0.1 issued by a
    /// CA of the test's own (an organisation's, not sovdb's: `org-ca.crt` in its directory),
    /// and clients must present a certificate that `client_ca` (a PEM file) signed.
    fn start_tls(client_ca: &Path) -> Rsyslog {
        Rsyslog::configured(|d| {
            let sh = format!(
                "set -e; cd {d}
                 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout org-ca.key \
                   -out org-ca.crt -days 2 -subj /CN=org-ca 2>/dev/null
                 openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
                   -out server.csr -subj /CN=syslog 2>/dev/null
                 printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
                 openssl x509 -req -in server.csr -CA org-ca.crt -CAkey org-ca.key -CAcreateserial \
                   -out server.crt -days 2 -extfile server.ext 2>/dev/null",
                d = d.display()
            );
            let made = Command::new("sh").args(["-c", &sh]).status().expect("openssl");
            assert!(made.success(), "making the syslog server's certificates");
            let global = format!(
                r#" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{d}/server.crt" DefaultNetstreamDriverKeyFile="{d}/server.key""#,
                ca = client_ca.display(),
                d = d.display()
            );
            (global, r#" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid""#.into())
        })
    }

    /// `tls(dir)` makes what TLS needs in `dir` and answers what goes into rsyslog's
    /// `global(...)` and `module(load="imtcp" ...)`.
    fn configured(tls: impl FnOnce(&Path) -> (String, String)) -> Rsyslog {
        let dir = tempfile::Builder::new().prefix("sovdb-test-rsyslog-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (global, module) = tls(dir.path());
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}"{global})
module(load="imtcp"{module})
template(name="parsed" type="string" string="%protocol-version% %hostname% %app-name% %structured-data% %msg%\n")
ruleset(name="in") {{
  action(type="omfile" file="{d}/out.log" template="parsed")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")
"#
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog { dir, port, child: None };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd (Debian's rsyslog; scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for("rsyslogd listening", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn out(&self) -> String {
        std::fs::read_to_string(self.out_path()).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn out_path(&self) -> PathBuf {
        self.dir.path().join("out.log")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_agents_forward_the_clusters_logs_to_syslog_as_rfc_5424_across_a_server_outage() {
    let mut syslog = Rsyslog::start();
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "sl", "--wait"]);
    let uri = ok(&server, &["cluster", "connect", "sl"]).trim().to_string();
    let target = format!("tcp://127.0.0.1:{}", syslog.port);
    ok(&server, &["location", "set", "local", "--syslog", &target]);
    assert_eq!(json(&server, &["location", "show", "local"])["syslog"], target.as_str());
    assert!(ok(&server, &["location", "show", "local"]).contains(&format!("syslog:    {target}")));

    // A line the test makes PostgreSQL write arrives, parsed as RFC 5424 (version 1) with
    // the host's name, the app and the structured data naming project, cluster and member.
    let said = marker("syslog");
    let sd = "[sovdb@32473 project=\"default\" cluster=\"sl\" member=\"sl-1\"]";
    let line = wait_for("the RAISE LOG line at rsyslog", Duration::from_secs(90), || {
        psql(&uri, &format!("DO $$ BEGIN RAISE LOG '{said}'; END $$")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        syslog.out().lines().find(|l| l.contains(&said)).map(String::from)
    });
    assert!(line.starts_with(&format!("1 local postgresql {sd} ")), "{line}");
    wait_for("a Patroni line at rsyslog", Duration::from_secs(30), || {
        syslog.out().lines().find(|l| l.starts_with(&format!("1 local patroni {sd} "))).map(String::from)
    });

    // The syslog server goes away; lines written meanwhile arrive once it is back.
    syslog.stop();
    let meanwhile = marker("outage");
    psql(&uri, &format!("DO $$ BEGIN RAISE LOG '{meanwhile}'; END $$")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    syslog.launch();
    wait_for("the line written during the outage", Duration::from_secs(60), || {
        syslog.out().lines().find(|l| l.contains(&meanwhile)).map(String::from)
    });

    // `none` stops it: the host's agent is told there is nowhere to send to.
    ok(&server, &["location", "set", "local", "--syslog", "none"]);
    let config = server.data_dir().join("hosts/local/agent/syslog.json");
    wait_for("the agent told to stop forwarding", Duration::from_secs(30), || {
        let v: Value = serde_json::from_slice(&std::fs::read(&config).ok()?).ok()?;
        v.get("target").is_none().then_some(())
    });
    assert!(json(&server, &["location", "show", "local"]).get("syslog").is_none());
    // Bad targets are refused before anything is stored.
    let out = server.cli().args(["location", "set", "local", "--syslog", "udp://127.0.0.1:514"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not tcp://HOST:PORT"), "{out:?}");
}

#[test]
fn the_agents_forward_to_syslog_over_tls_only_to_a_server_they_can_verify() {
    let server = ready_server(Path::new(BIN));
    // The syslog server trusts sovdb's CA for client certificates: it accepts the agent's.
    let syslog = Rsyslog::start_tls(&server.data_dir().join("ca.crt"));
    ok(&server, &["cluster", "create", "st", "--wait"]);
    let uri = ok(&server, &["cluster", "connect", "st"]).trim().to_string();
    let target = format!("tls://127.0.0.1:{}", syslog.port);

    // Checked with the wrong CA (sovdb's own, which did not sign the syslog server's
    // certificate), nothing is sent...
    let wrong = server.data_dir().join("ca.crt");
    ok(&server, &["location", "set", "local", "--syslog", &target, "--syslog-ca", wrong.to_str().unwrap()]);
    let shown = ok(&server, &["location", "show", "local"]);
    assert!(shown.contains("syslog CA: 1 certificate(s) given"), "{shown}");
    // The agent refuses the server's certificate (its positions in the logs are taken
    // first, so what is written from now on is held, not skipped).
    let agent_log = server.data_dir().join("hosts/local/agent/log/agent.log");
    wait_for("the agent refusing the syslog server's certificate", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&agent_log).ok()?;
        log.lines().any(|l| l.contains(&target) && l.contains("invalid peer certificate: UnknownIssuer")).then_some(())
    });
    let held = marker("held");
    psql(&uri, &format!("DO $$ BEGIN RAISE LOG '{held}'; END $$")).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert!(!syslog.out().contains(&held), "a server whose certificate does not verify got lines:\n{}", syslog.out());

    // ...and with the organisation's CA, the held line arrives (its position did not move),
    // then new ones.
    let right = syslog.path("org-ca.crt");
    ok(&server, &["location", "set", "local", "--syslog", &target, "--syslog-ca", right.to_str().unwrap()]);
    let arrived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the held line over TLS", Duration::from_secs(60), || {
            syslog.out().lines().find(|l| l.contains(&held)).map(String::from)
        })
    }));
    if let Err(e) = arrived {
        // Why: what the agent and rsyslogd said about the connection.
        let agent = std::fs::read_to_string(&agent_log);
        let agent: Vec<String> =
            agent.unwrap_or_default().lines().filter(|l| l.contains("syslog")).map(String::from).collect();
        eprintln!(
            "agent:\n{}\nrsyslogd:\n{}",
            agent.join("\n"),
            std::fs::read_to_string(syslog.path("rsyslogd.err")).unwrap_or_default()
        );
        std::panic::resume_unwind(e);
    }
    let said = marker("tls");
    let sd = "[sovdb@32473 project=\"default\" cluster=\"st\" member=\"st-1\"]";
    let line = wait_for("a new line over TLS", Duration::from_secs(60), || {
        psql(&uri, &format!("DO $$ BEGIN RAISE LOG '{said}'; END $$")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        syslog.out().lines().find(|l| l.contains(&said)).map(String::from)
    });
    assert!(line.starts_with(&format!("1 local postgresql {sd} ")), "{line}");

    // A CA goes only with a tls:// target, and must be PEM certificates.
    let refused = |args: &[&str], says: &str| {
        let out = server.cli().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {out:?}");
    };
    let plain = format!("tcp://127.0.0.1:{}", syslog.port);
    refused(
        &["location", "set", "local", "--syslog", &plain, "--syslog-ca", right.to_str().unwrap()],
        "only used over TLS",
    );
    let key = syslog.path("server.key");
    refused(
        &["location", "set", "local", "--syslog", &target, "--syslog-ca", key.to_str().unwrap()],
        "holds no certificate",
    );
    assert_eq!(json(&server, &["location", "show", "local"])["syslog"], target.as_str(), "nothing changed");
}

//! Alerts end to end: a real two-member cluster whose replica is stopped (its Patroni
//! frozen with SIGSTOP, so nothing restarts it) and started again, the default
//! `member-down` rule firing and resolving, a user rule that must fire and then is deleted,
//! and the notifications received by a webhook receiver in this test process, each with a
//! signature checked with `openssl` (an implementation of HMAC that is not ours). Email goes
//! to Debian's aiosmtpd with STARTTLS, started by the test on a loopback port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{cli_input, json, ok, ready_server, refused, wait_for};
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::webhook::{Received, Receiver};
use sovdb_test_utils::{patroni_of, signal, Frozen};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// The signature of `body` by `openssl dgst -sha256 -hmac`, as `sha256=<hex>`.
fn openssl_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(format!("{timestamp}.{body}").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256={}", text.trim().rsplit(' ').next().unwrap())
}

/// Checks a received notification's signature and answers its body as JSON.
fn verified(r: &Received, secret: &str) -> Value {
    let ts = r.headers.get("x-sovdb-timestamp").expect("a timestamp header");
    let sig = r.headers.get("x-sovdb-signature").expect("a signature header");
    assert_eq!(sig, &openssl_signature(secret, ts, &r.body), "the signature of {}", r.body);
    assert_ne!(sig, &openssl_signature("not-the-secret-at-all", ts, &r.body));
    assert!(r.headers.contains_key("x-sovdb-delivery"));
    serde_json::from_str(&r.body).unwrap()
}

/// The notifications received for `rule` with `status`, verified.
fn notified(rx: &Receiver, secret: &str, rule: &str, status: &str) -> Vec<Value> {
    rx.received().iter().map(|r| verified(r, secret)).filter(|v| v["rule"] == rule && v["status"] == status).collect()
}

fn alerts(server: &TestServer) -> Vec<Value> {
    json(server, &["alert", "list"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn a_stopped_replica_fires_an_alert_that_a_signed_webhook_receives_and_resolves() {
    let mut server = ready_server(Path::new(BIN));
    // The first member-down notification is refused once: the sender retries and records
    // both attempts. (Other default rules may fire on this machine, e.g. a full disk.)
    let rx = Receiver::refusing(1, "member-down");
    let created = json(&server, &["alert", "channel", "create", "hook", "--type", "webhook", "--url", &rx.url]);
    let secret = created["secret"].as_str().expect("a generated secret, shown once").to_string();
    assert!(secret.len() >= 32, "{created:#}");
    // Never shown again: not in the list, not in the audit log, not in the server's log.
    let listed = ok(&server, &["alert", "channel", "list", "-o", "json"]);
    assert!(!listed.contains(&secret) && listed.contains(&rx.url), "{listed}");
    let audit = ok(&server, &["audit", "list", "-o", "json"]);
    assert!(audit.contains("alert.channel.create") && !audit.contains(&secret));

    let rules = json(&server, &["alert", "rule", "list"]);
    let names: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in ["host-unreachable", "member-down", "no-primary", "replication-lag", "disk-85", "disk-95"] {
        assert!(names.contains(&want), "default rule {want} missing: {names:?}");
    }
    refused(&server, &["alert", "rule", "delete", "member-down"], "default rule");

    ok(&server, &["cluster", "create", "al", "--replicas", "2", "--wait"]);
    let c = json(&server, &["cluster", "show", "al"]);
    let replica = c["members"].as_array().unwrap().iter().find(|m| m["role"] != "primary").unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the cluster ready", Duration::from_secs(60), || {
        (json(&server, &["cluster", "show", "al"])["state"] == "ready").then_some(())
    });
    assert!(alerts(&server).iter().all(|a| a["rule"] != "member-down"), "{:#?}", alerts(&server));

    // Stop the replica: its Patroni frozen, its key in the DCS expires.
    let dir = sovdb_test_utils::member_dir(&server.data_dir().join("hosts/local"), c["id"].as_str().unwrap(), &replica);
    let pids = patroni_of(&dir);
    assert!(!pids.is_empty(), "the replica's Patroni runs");
    let frozen = Frozen(pids);
    signal(&frozen.0, libc::SIGSTOP);
    let stopped = std::time::Instant::now();
    let subject = format!("member/al/{replica}");
    let firing = wait_for("member-down firing", Duration::from_secs(120), || {
        alerts(&server).into_iter().find(|a| a["rule"] == "member-down" && a["state"] == "firing")
    });
    assert_eq!(firing["subject"], subject.as_str(), "{firing:#}");
    let table = ok(&server, &["alert", "list", "--open"]);
    assert!(table.contains("member-down") && table.contains("firing"), "{table}");
    let got = wait_for("the webhook told it fires", Duration::from_secs(60), || {
        notified(&rx, &secret, "member-down", "firing").into_iter().next()
    });
    eprintln!("figure: replica stopped -> firing notification received: {:.1?}", stopped.elapsed());
    assert_eq!(got["subject"], subject.as_str());
    assert_eq!(got["cluster"], "al");
    assert_eq!(got["project"], "default");
    assert_eq!(got["alert"], firing["id"]);

    // A control-plane restart (kill -9) once the notification is recorded as delivered:
    // nothing is sent twice, and the alert stays firing.
    let id = firing["id"].as_str().unwrap().to_string();
    wait_for("the firing delivery recorded", Duration::from_secs(30), || {
        let d = json(&server, &["alert", "deliveries", "--alert", &id]);
        d.as_array()?.iter().any(|d| d["status"] == "firing" && d["state"] == "delivered").then_some(())
    });
    server.kill9();
    server.launch();
    std::thread::sleep(Duration::from_secs(15));
    let again: Vec<Value> = alerts(&server).into_iter().filter(|a| a["rule"] == "member-down").collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["state"], "firing");

    // Start it again: the alert resolves, and the webhook is told.
    drop(frozen);
    let started = std::time::Instant::now();
    let resolved = wait_for("member-down resolved", Duration::from_secs(120), || {
        alerts(&server).into_iter().find(|a| a["id"] == firing["id"] && a["state"] == "resolved")
    });
    assert!(resolved["resolved_at"].is_string());
    let got = wait_for("the webhook told it resolved", Duration::from_secs(60), || {
        notified(&rx, &secret, "member-down", "resolved").into_iter().next()
    });
    eprintln!("figure: replica started -> resolved notification received: {:.1?}", started.elapsed());
    assert_eq!(got["alert"], firing["id"]);
    assert!(got["resolved_at"].is_string());
    // Each notification once, the first after a retry; the timeline tells both.
    assert_eq!(notified(&rx, &secret, "member-down", "firing").len(), 1);
    let deliveries = json(&server, &["alert", "deliveries", "--alert", firing["id"].as_str().unwrap()]);
    let d = deliveries.as_array().unwrap();
    assert_eq!(d.len(), 2, "{deliveries:#}");
    assert!(d.iter().all(|d| d["state"] == "delivered" && d["last_result"] == "HTTP 200"), "{deliveries:#}");
    assert_eq!(d[0]["attempts"], 2, "refused once, then delivered: {deliveries:#}");
    let events = json(&server, &["events", "--cluster", "al"]);
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"alert-firing") && kinds.contains(&"alert-resolved"), "{kinds:?}");

    // A user rule that must fire (every member's pg_up is 1) notifies within a minute and
    // resolves when it is deleted.
    refused(
        &server,
        &["alert", "rule", "create", "x", "--metric", "nope", "--op", ">", "--threshold", "1"],
        "no metric",
    );
    let rule_created = std::time::Instant::now();
    ok(
        &server,
        &[
            "alert",
            "rule",
            "create",
            "up",
            "--cluster",
            "al",
            "--metric",
            "pg_up",
            "--op",
            ">",
            "--threshold",
            "0.5",
            "--channel",
            "hook",
        ],
    );
    let got = wait_for("the user rule notified", Duration::from_secs(60), || {
        notified(&rx, &secret, "up", "firing").into_iter().next()
    });
    eprintln!("figure: user rule created -> firing notification received: {:.1?}", rule_created.elapsed());
    assert_eq!(got["value"], 1.0);
    assert_eq!(got["threshold"], 0.5);
    ok(&server, &["alert", "rule", "delete", "up"]);
    let deleted = std::time::Instant::now();
    wait_for("the user rule's alerts resolved", Duration::from_secs(60), || {
        let open = alerts(&server).into_iter().filter(|a| a["rule"] == "up" && a["state"] != "resolved").count();
        (open == 0 && !notified(&rx, &secret, "up", "resolved").is_empty()).then_some(())
    });
    eprintln!("figure: user rule deleted -> resolved notification received: {:.1?}", deleted.elapsed());
    assert!(!server.log().contains(&secret), "the secret is in the server's log");
}

/// Debian's aiosmtpd on a loopback port with STARTTLS required; killed on drop.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn slack_compatible_webhooks_get_text_and_their_url_stays_secret() {
    let server = ready_server(Path::new(BIN));
    let rx = Receiver::start();
    let o = cli_input(
        &server,
        &["alert", "channel", "create", "chat", "--type", "slack", "--url-stdin"],
        &format!("{}\n", rx.url),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&server, &["alert", "channel", "test", "chat"]);
    assert_eq!(r["delivered"], true, "{r:#}");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("[TEST] test on channel/chat (project default)"), "{text}");
    // The URL is the secret: not shown, not audited.
    let listed = ok(&server, &["alert", "channel", "list", "-o", "json"]);
    assert!(!listed.contains(&rx.url) && listed.contains("chat"), "{listed}");
    assert!(!ok(&server, &["audit", "list", "-o", "json"]).contains(&rx.url));
}

#[test]
fn email_goes_to_an_smtp_server_over_starttls() {
    let server = ready_server(Path::new(BIN));
    let dir = tempfile::tempdir().unwrap();
    // A throwaway CA and a server certificate for 127.0.0.1 (as an IP and a DNS name).
    let ca = sovdb_pki::Ca::generate("smtp test CA").unwrap();
    let leaf = ca
        .issue(&sovdb_pki::CertRequest {
            common_name: "smtp".into(),
            dns_names: vec!["127.0.0.1".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            usage: sovdb_pki::CertUsage::Server,
            validity_days: 1,
        })
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    let port = sovdb_test_utils::free_port();
    let out = dir.path().join("smtpd.out");
    let smtp = Smtp {
        // Debian's Python (a python3 earlier on PATH may not have the package).
        child: Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n"])
            .arg("--tlscert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tlskey")
            .arg(dir.path().join("key.pem"))
            .args(["-l", &format!("127.0.0.1:{port}")])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("smtpd.err")).unwrap())
            .spawn()
            .expect("run python3 -m aiosmtpd (Debian's python3-aiosmtpd)"),
        port,
        out,
    };
    wait_for("aiosmtpd listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", smtp.port)).ok()
    });
    let ca_file = dir.path().join("ca.pem");
    ok(
        &server,
        &[
            "alert",
            "channel",
            "create",
            "mail",
            "--type",
            "email",
            "--smtp-server",
            &format!("127.0.0.1:{port}"),
            "--smtp-ca-file",
            ca_file.to_str().unwrap(),
            "--from",
            "sovdb@example.org",
            "--to",
            "ops@example.org",
        ],
    );
    let r = json(&server, &["alert", "channel", "test", "mail"]);
    assert_eq!(r["delivered"], true, "{r:#}");
    let seen = wait_for("the message at the SMTP server", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&smtp.out).ok()?;
        text.contains("a test of channel mail").then_some(text)
    });
    assert!(seen.contains("ops@example.org") && seen.contains("Subject: [sovdb] [TEST]"), "{seen}");
    // Without our CA the server's certificate is not trusted: nothing is sent.
    ok(
        &server,
        &[
            "alert",
            "channel",
            "create",
            "mail2",
            "--type",
            "email",
            "--smtp-server",
            &format!("127.0.0.1:{port}"),
            "--from",
            "sovdb@example.org",
            "--to",
            "ops@example.org",
        ],
    );
    let r = json(&server, &["alert", "channel", "test", "mail2"]);
    assert_eq!(r["delivered"], false, "{r:#}");
    assert!(r["result"].as_str().unwrap().to_lowercase().contains("certificate"), "{r:#}");
    // The CLI says so and exits non-zero.
    refused(&server, &["alert", "channel", "test", "mail2"], "not delivered");
    // A password is read from standard input and never shown.
    let o = cli_input(
        &server,
        &[
            "alert",
            "channel",
            "create",
            "mail3",
            "--type",
            "email",
            "--smtp-server",
            "127.0.0.1:1",
            "--smtp-username",
            "u",
            "--smtp-password-stdin",
            "--from",
            "sovdb@example.org",
            "--to",
            "ops@example.org",
            "-o",
            "json",
        ],
        "pa55word-x\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("pa55word-x"));
}

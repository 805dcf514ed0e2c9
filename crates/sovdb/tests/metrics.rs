//! Metrics end to end: a real two-member cluster under pgbench, its samples taken by the
//! real agent, pulled and stored by `sovdb serve`, read through the CLI and the API, and
//! scraped from `/metrics` by a real Prometheus (Debian's).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sovdb_test_utils::cli::{json, ok, ready_server, wait_for};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` against the server's API with the installation CA; the body and the status.
fn curl(server: &TestServer, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--cacert"]).arg(server.ca_path()).args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(format!("{}{path}", server.url)).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The series of a metric in `sovdb metrics CLUSTER --name NAME -o json`.
fn series(server: &TestServer, cluster: &str, name: &str) -> Vec<Value> {
    let r = json(server, &["metrics", cluster, "--name", name, "--since", "10m"]);
    r["series"].as_array().cloned().unwrap_or_default()
}

fn last_value(s: &Value) -> f64 {
    s["points"].as_array().and_then(|p| p.last()).and_then(|p| p[1].as_f64()).unwrap_or(f64::NAN)
}

#[test]
fn a_cluster_under_pgbench_has_metrics_in_the_api_the_cli_and_prometheus() {
    let server = ready_server(Path::new(BIN));
    ok(&server, &["cluster", "create", "m", "--replicas", "2", "--wait"]);
    let c = json(&server, &["cluster", "show", "m"]);
    let members = c["members"].as_array().unwrap();
    let primary = members.iter().find(|m| m["role"] == "primary").unwrap()["name"].as_str().unwrap().to_string();
    let replica = members.iter().find(|m| m["role"] != "primary").unwrap()["name"].as_str().unwrap().to_string();

    // Load: pgbench through the cluster's URI for as long as the test waits.
    let uri = ok(&server, &["cluster", "connect", "m"]).trim().to_string();
    let init = Command::new("/usr/lib/postgresql/15/bin/pgbench").args(["-i", "-s", "1", "-q", &uri]).output().unwrap();
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let _load = Killed(
        Command::new("/usr/lib/postgresql/15/bin/pgbench")
            .args(["-T", "300", "-c", "2", "-n", &uri])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Commits per second on the primary, from the counters of two samples.
    let commits = wait_for("commits/s > 0 on the primary", Duration::from_secs(120), || {
        let s = series(&server, "m", "pg_commits_per_second");
        s.into_iter().find(|s| s["member"] == primary.as_str() && last_value(s) > 0.0)
    });
    assert_eq!(commits["kind"], "gauge");
    // Replication lag of the replica, seen on the primary, in bytes and seconds.
    for name in ["pg_replication_lag_bytes", "pg_replication_lag_seconds"] {
        let lag = wait_for(name, Duration::from_secs(60), || {
            series(&server, "m", name)
                .into_iter()
                .find(|s| s["member"] == primary.as_str() && s["dim"] == replica.as_str())
        });
        assert!(last_value(&lag) >= 0.0, "{lag:#}");
    }
    // Patroni's view: one primary, on the timeline Patroni reports; the replica is not primary.
    let roles = series(&server, "m", "patroni_primary");
    let role_of = |m: &str| roles.iter().find(|s| s["member"] == m).map(last_value);
    assert_eq!((role_of(&primary), role_of(&replica)), (Some(1.0), Some(0.0)), "{roles:#?}");
    // Everything at once: host and PostgreSQL metrics, as a table with charts.
    let all = json(&server, &["metrics", "m"]);
    let names: std::collections::BTreeSet<&str> =
        all["series"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in [
        "host_cpu_busy_ratio",
        "host_memory_available_bytes",
        "host_disk_free_bytes",
        "pg_connections",
        "pg_xact_commit_total",
        "pg_wal_bytes_per_second",
        "pg_cache_hit_ratio",
        "pg_database_size_bytes",
        "patroni_timeline",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    let table = ok(&server, &["metrics", "m", "--name", "pg_commits_per_second"]);
    assert!(table.contains("pg_commits_per_second") && table.contains(&primary), "{table}");
    // Bad requests say what is wrong.
    let (code, body) = curl(&server, "/api/v1/clusters/m/metrics?name=nope", Some(&server.token));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no metric"), "{body}");
    let (code, _) = curl(&server, "/api/v1/clusters/nope/metrics", Some(&server.token));
    assert_eq!(code, 404);

    // /metrics needs a token.
    let (code, _) = curl(&server, "/metrics", None);
    assert_eq!(code, 401);
    let (code, text) = curl(&server, "/metrics", Some(&server.token));
    assert_eq!(code, 200);
    assert!(text.contains("# TYPE sovdb_pg_xact_commit_total counter"), "{text}");
    let line = format!(
        "project=\"default\",cluster=\"m\",member=\"{primary}\",role=\"primary\",location=\"local\",host=\"local\""
    );
    assert!(text.contains(&format!("sovdb_pg_commits_per_second{{{line}}}")), "{text}");

    // A real Prometheus scrapes it over HTTPS with the CA and the token.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &server.token).unwrap();
    let address = server.url.trim_start_matches("https://");
    let tls = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n    authorization:\n      type: Bearer\n      credentials_file: {tok}\n",
        ca = server.ca_path().display(),
        tok = token_file.display()
    );
    let config = format!(
        "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\nscrape_configs:\n  - job_name: sovdb\n{tls}    static_configs:\n      - targets: ['{address}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = sovdb_test_utils::free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus (scripts/install-deps.sh installs it)"),
    );
    let query = |q: &str| -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sS", "--get", "--data-urlencode", &format!("query={q}")])
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    let found = wait_for("Prometheus has sovdb's series", Duration::from_secs(90), || {
        let r = query("sovdb_pg_commits_per_second{job=\"sovdb\",cluster=\"m\",role=\"primary\"}");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(found[0]["metric"]["member"], primary.as_str(), "{found:#?}");
    assert_eq!(found[0]["metric"]["project"], "default");
    drop(dir);
}

#[test]
fn hosts_are_sampled_without_any_cluster_and_shown_to_admins() {
    let server = ready_server(Path::new(BIN));
    let text = wait_for("host metrics", Duration::from_secs(60), || {
        let (_, text) = curl(&server, "/metrics?scope=hosts", Some(&server.token));
        text.contains("sovdb_host_cpu_busy_ratio{host=\"local\",location=\"local\"}").then_some(text)
    });
    assert!(!text.contains("cluster=\""), "{text}");
    assert!(text.contains("# TYPE sovdb_host_memory_available_bytes gauge"), "{text}");
    // Service discovery: no cluster yet, only the hosts' target (for an admin).
    let (code, body) = curl(&server, "/api/v1/prometheus/targets", Some(&server.token));
    assert_eq!(code, 200, "{body}");
    let groups: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups:#}");
    assert_eq!(groups[0]["labels"]["__param_scope"], "hosts");
}

//! End-to-end: the real `sovdb` binary as a user runs it — `sovdb serve` in its own data
//! directory and the CLI with no configuration at all.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sovdb_test_utils::postgres::TestPostgres;
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run sovdb")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a CLI command that must succeed and returns its stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = run({
        let mut c = server.cli();
        c.args(args);
        c
    });
    assert!(out.status.success(), "sovdb {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Runs a command that must fail with `code` and one line on stderr; returns that line.
fn fails(mut cmd: Command, code: i32) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    text(&out.stderr)
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(server, &all)).expect("-o json prints JSON")
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn cli_works_against_a_fresh_server_with_no_configuration() {
    let server = TestServer::start(Path::new(BIN));
    assert_eq!(names(&json(&server, &["location", "list"])), ["local"]);
    assert_eq!(json(&server, &["cluster", "list"]), Value::Array(vec![]));
    assert_eq!(json(&server, &["whoami"])["user"], "admin");
    // The first start adds this machine as host `local`; `op watch` follows it to the end.
    let ops = json(&server, &["op", "list"]);
    let ops = ops.as_array().unwrap();
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!((ops[0]["kind"].as_str(), ops[0]["target"].as_str()), (Some("host.add"), Some("host/local")));
    let watched = run({
        let mut c = server.cli();
        c.args(["op", "watch", ops[0]["id"].as_str().unwrap(), "-o", "json"]);
        c
    });
    assert!(watched.status.success(), "{}", text(&watched.stderr));
    let progress = text(&watched.stderr);
    assert!(progress.contains("succeeded"), "{progress}");
    let op: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(op["state"], "succeeded");
    assert_eq!(json(&server, &["host", "show", "local"])["status"], "ready");
    let e = fails(
        {
            let mut c = server.cli();
            c.args(["op", "show", "nope"]);
            c
        },
        1,
    );
    assert!(e.contains("is not an operation ID"), "{e}");

    let table = ok(&server, &["location", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    let yaml = ok(&server, &["location", "list", "-o", "yaml"]);
    assert!(yaml.contains("name: local"), "{yaml}");

    ok(
        &server,
        &["location", "create", "eu-1", "--provider", "ssh", "--region", "eu-central", "--label", "jurisdiction=EU"],
    );
    let eu = json(&server, &["location", "show", "eu-1"]);
    assert_eq!(eu["labels"]["jurisdiction"], "EU");

    let audit = json(&server, &["audit", "list", "--target", "location/"]);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["location.create", "location.create"], "bootstrap's `local`, then ours");

    // The admin token file is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data_dir().join("admin.token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_cli_says_what_is_wrong() {
    let server = TestServer::start(Path::new(BIN));
    let cli = |args: &[&str]| {
        let mut c = server.cli();
        c.args(args);
        c
    };
    // Usage errors: clap's exit status 2.
    assert!(fails(cli(&["frobnicate"]), 2).contains("unrecognized subcommand"));
    assert!(fails(cli(&["location", "list", "--colour", "red"]), 2).contains("unexpected argument"));
    assert!(fails(cli(&["location", "list", "-o", "xml"]), 2).contains("invalid value"));

    // The server's own message, one line, exit status 1.
    let e = fails(cli(&["location", "create", "Bad_Name", "--provider", "ssh", "--region", "r"]), 1);
    assert!(e.starts_with("error: location name \"Bad_Name\""), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    let e = fails(cli(&["location", "show", "nowhere"]), 1);
    assert!(e.contains("location \"nowhere\" not found"), "{e}");
    let e = fails(cli(&["location", "create", "x", "--provider", "ssh", "--region", "r", "--label", "novalue"]), 1);
    assert!(e.contains("KEY=VALUE"), "{e}");

    let mut bad_token = cli(&["cluster", "list"]);
    bad_token.env("SOVDB_TOKEN", "sovdb_wrong");
    assert!(fails(bad_token, 1).contains("invalid, expired or revoked"));

    let elsewhere = format!("http://127.0.0.1:{}", sovdb_test_utils::free_port());
    let mut no_server = cli(&["cluster", "list"]);
    no_server.env("SOVDB_SERVER", &elsewhere).env("SOVDB_TOKEN", &server.token);
    let e = fails(no_server, 1);
    assert!(e.contains("cannot reach the sovdb server") && e.contains("sovdb serve"), "{e}");

    // This machine's admin token is never sent to a server named elsewhere.
    let mut foreign = cli(&["cluster", "list", "--server", &elsewhere]);
    foreign.env_remove("SOVDB_TOKEN");
    let e = fails(foreign, 1);
    assert!(e.contains(&format!("no API token for {elsewhere}")), "{e}");
    // ...but naming the local server explicitly is fine.
    ok(&server, &["cluster", "list", "--server", &server.url]);

    // A broken config file is named in one line.
    let config = server.home().join(".config/sovdb/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "server = \"http://x\"\ncolour = \"red\"\n").unwrap();
    let e = fails(cli(&["cluster", "list"]), 1);
    assert!(e.contains("config.toml (line 2)") && e.contains("colour"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    std::fs::remove_file(&config).unwrap();
}

#[test]
fn restart_and_kill_9_keep_all_state() {
    let mut server = TestServer::start(Path::new(BIN));
    let token = server.token.clone();
    ok(&server, &["location", "create", "before-stop", "--provider", "ssh", "--region", "r"]);

    let status = server.stop();
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");
    assert!(!server.data_dir().join("api.url").exists(), "a stopped server unpublishes its address");
    assert!(server.log().contains("stopped"));
    server.launch();
    assert_eq!(server.token, token, "a restart keeps the admin token");
    ok(&server, &["location", "create", "before-kill", "--provider", "ssh", "--region", "r"]);

    server.kill9();
    server.launch();
    assert_eq!(names(&json(&server, &["location", "list"])), ["before-kill", "before-stop", "local"]);
    let installs = json(&server, &["audit", "list", "--target", "installation/"]);
    assert_eq!(installs.as_array().unwrap().len(), 1, "bootstrapped once, not on every start");
}

#[test]
fn serve_on_a_postgres_store_keeps_state_across_restarts() {
    let pg = tokio::runtime::Runtime::new().unwrap().block_on(TestPostgres::start());
    let url = tokio::runtime::Runtime::new().unwrap().block_on(pg.create_database("serve"));
    let mut server = TestServer::start_with_store(Path::new(BIN), Some(url));
    ok(&server, &["location", "create", "pg-backed", "--provider", "ssh", "--region", "r"]);
    assert!(server.stop().success());
    server.launch();
    assert_eq!(names(&json(&server, &["location", "list"])), ["local", "pg-backed"]);
    assert!(
        !std::fs::read_dir(server.data_dir()).unwrap().any(|e| e.unwrap().file_name() == "sovdb.db"),
        "no SQLite file beside a PostgreSQL store"
    );
}

/// `sovdb serve` in `dir` with extra args, run to completion (it must fail).
fn serve_fails(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.env_remove("SOVDB_STORE").env("HOME", dir).arg("serve").args(args);
    let e = fails(c, 1);
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn serve_refuses_bad_setups_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = serve_fails(tmp.path(), &["--data-dir", data_s, "--listen", &addr]);
    assert!(e.contains(&format!("cannot listen on {addr}")) && e.contains("--listen"), "{e}");
    assert!(!data.exists(), "nothing written when the port is taken");

    // A store that can't be reached; its password stays secret.
    let port = sovdb_test_utils::free_port();
    let store = format!("postgres://sovdb:hunter2-secret@127.0.0.1:{port}/sovdb");
    let e = serve_fails(tmp.path(), &["--data-dir", data_s, "--listen", "127.0.0.1:0", "--store", &store]);
    assert!(e.contains("cannot open the store") && !e.contains("hunter2-secret"), "{e}");

    // A store URL of no known kind.
    let e = serve_fails(tmp.path(), &["--data-dir", data_s, "--listen", "127.0.0.1:0", "--store", "mysql://x"]);
    assert!(e.contains("not understood"), "{e}");

    // A corrupt store file is named and left as it was.
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("sovdb.db");
    std::fs::write(&db, b"not a database at all ".repeat(300)).unwrap();
    let e = serve_fails(tmp.path(), &["--data-dir", data_s, "--listen", "127.0.0.1:0"]);
    assert!(e.contains("not a readable SQLite database") && e.contains("sovdb.db"), "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), b"not a database at all ".repeat(300));
    assert!(!data.join("admin.token").exists());

    // A data directory that can't be created.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let e = serve_fails(tmp.path(), &["--data-dir", file.join("sub").to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(e.contains("cannot create the data directory") && e.contains("--data-dir"), "{e}");

    // Unknown flags.
    let mut c = Command::new(BIN);
    c.args(["serve", "--colour"]);
    assert!(fails(c, 2).contains("unexpected argument"));
}

#[test]
fn serve_refuses_a_data_dir_it_may_not_write() {
    if !sovdb_test_utils::running_as_root() {
        eprintln!("skipped: needs root to run serve as another user");
        return;
    }
    // A directory only root may write, and serve running as `nobody`.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        BIN,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(&data)
    .env("HOME", tmp.path());
    let e = fails(c, 1);
    assert!(e.contains("cannot write in the data directory") && e.contains("Permission denied"), "{e}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "nothing written");
}

#[test]
fn a_client_writing_into_a_closed_pipe_ends_quietly() {
    let server = TestServer::start(Path::new(BIN));
    // `sovdb op list -o json | true`: the reader is gone before the client writes.
    let mut c = server.cli();
    c.args(["op", "list", "-o", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "the client panicked on a closed pipe: {err}");
}

//! Driving the `sovdb` CLI against a [`TestServer`], as the end-to-end tests do, and
//! `psql` against the clusters it makes.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::TestServer;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sovdb ARGS` against the server, with nothing on standard input.
pub fn cli(server: &TestServer, args: &[&str]) -> Output {
    let mut c: Command = server.cli();
    c.args(args).stdin(Stdio::null());
    c.output().expect("run sovdb")
}

/// `sovdb ARGS` against the server, with `input` on standard input (a secret the CLI reads
/// there, say).
pub fn cli_input(server: &TestServer, args: &[&str], input: &str) -> Output {
    let mut c: Command = server.cli();
    c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("run sovdb");
    child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("write sovdb's standard input");
    child.wait_with_output().expect("wait for sovdb")
}

/// Runs the CLI and wants success; returns stdout. A failure shows the server's log.
pub fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(
        out.status.success(),
        "sovdb {args:?} failed: {}\n{}\nserver log:\n{}",
        text(&out.stderr),
        text(&out.stdout),
        crate::tail(&server.log_path(), 60)
    );
    text(&out.stdout)
}

/// Runs the CLI with `-o json` and wants success; returns what it printed.
pub fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(server, &all)).expect("-o json prints JSON")
}

/// Runs the CLI and wants it to fail saying `needle` (and not panic); returns stderr.
pub fn refused(server: &TestServer, args: &[&str], needle: &str) -> String {
    let out = cli(server, args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(err.contains(needle), "{args:?}: {err:?} does not say {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Calls `f` every 250 ms until it answers, for at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `psql URI -c SQL` (unaligned, tuples only); `Err` with its status and stderr when it
/// fails. Killed after `secs`: a statement in flight when a link was cut would otherwise
/// wait for TCP to give up.
pub fn psql_within(secs: u32, uri: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-s", "KILL", &secs.to_string(), "/usr/lib/postgresql/15/bin/psql", uri])
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGPASSWORD")
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(format!("{}: {}", out.status, text(&out.stderr).trim()))
    }
}

/// [`psql_within`] 60 s.
pub fn psql(uri: &str, sql: &str) -> Result<String, String> {
    psql_within(60, uri, sql)
}

/// A server on a fresh data directory whose host `local` is ready.
pub fn ready_server(bin: &Path) -> TestServer {
    let server = TestServer::start(bin);
    wait_for("host local ready", Duration::from_secs(60), || {
        (json(&server, &["host", "show", "local"])["status"] == "ready").then_some(())
    });
    server
}

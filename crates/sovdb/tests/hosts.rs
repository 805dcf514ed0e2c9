//! Hosts end to end: `sovdb host add` over real SSH into network-namespace test hosts,
//! heartbeats across a cut link, an agent brought back after it was killed, and the bad
//! inputs a user meets (wrong user, changed host key, a host another installation manages).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use sovdb_test_utils::server::TestServer;
use sovdb_test_utils::testhosts::{TestHost, TestHosts};

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn cli(server: &TestServer, args: &[&str]) -> Output {
    let mut c: Command = server.cli();
    c.args(args);
    c.output().expect("run sovdb")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = cli(server, args);
    assert!(out.status.success(), "sovdb {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(server, &all)).expect("-o json prints JSON")
}

fn wait_for(what: &str, server: &TestServer, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 120 s; server log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn status(server: &TestServer, host: &str) -> String {
    json(server, &["host", "show", host])["status"].as_str().unwrap().to_string()
}

/// `host add NAME` for test host `h`, plus `extra` arguments.
fn add(server: &TestServer, name: &str, h: &TestHost, extra: &[&str]) -> Output {
    let (address, key, base) =
        (h.address.to_string(), h.ssh_key.display().to_string(), h.base_dir.display().to_string());
    let mut args = vec!["host", "add", name, "--location", "dc1", "--address", &address, "--ssh-key", &key];
    args.extend(["--base-dir", &base]);
    args.extend(extra);
    cli(server, &args)
}

/// A Python package `idna` whose import fails as a missing module's does, to mount over
/// the real one on one test host: that host's Python lacks the module, the machine's has it.
fn broken_idna() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("__init__.py"),
        "raise ModuleNotFoundError(\"No module named 'idna'\", name='idna')\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.path().join("__init__.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

/// Where Debian's python3-idna puts the module.
const IDNA: &str = "/usr/lib/python3/dist-packages/idna";

fn setup(n: usize) -> (TestServer, TestHosts) {
    let hosts = TestHosts::up(n);
    let server = TestServer::start(Path::new(BIN));
    ok(&server, &["location", "create", "dc1", "--provider", "ssh", "--region", "lab"]);
    (server, hosts)
}

#[test]
fn three_hosts_added_over_ssh_are_ready_and_a_cut_link_shows() {
    let (server, hosts) = setup(3);
    for h in hosts.hosts() {
        let out = add(&server, &h.name, h, &["--wait", "--label", "rack=r1"]);
        assert!(out.status.success(), "host add {}: {}{}", h.name, text(&out.stdout), text(&out.stderr));
        let progress = text(&out.stderr);
        assert!(progress.contains("succeeded"), "progress ends with the outcome: {progress}");
        assert!(progress.contains("install-agent"), "plain progress lines name the steps: {progress}");
    }
    let list = json(&server, &["host", "list", "--location", "dc1"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list:#}");
    for (h, shown) in hosts.hosts().iter().zip(list.as_array().unwrap()) {
        assert_eq!(shown["name"], h.name.as_str());
        assert_eq!(shown["status"], "ready", "{shown:#}");
        assert_eq!(shown["labels"]["rack"], "r1");
        let facts = &shown["facts"];
        assert!(facts["cpus"].as_u64().unwrap() > 0, "{facts:#}");
        assert!(facts["memory_bytes"].as_u64().unwrap() > 0, "{facts:#}");
        let addresses: Vec<&str> = facts["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(
            addresses.contains(&h.address.to_string().as_str()),
            "the agent runs on the host itself: {addresses:?}"
        );
        // Trust on first use recorded exactly the key the host has.
        assert_eq!(shown["ssh"]["host_key"].as_str().unwrap(), h.host_public_key.trim());
    }

    // A cut link: unreachable; healed: ready again. The others stay ready throughout.
    let (cut, other) = (&hosts.hosts()[0].name, &hosts.hosts()[1].name);
    hosts.cut(cut);
    wait_for("cut host unreachable", &server, || status(&server, cut) == "unreachable");
    assert_eq!(status(&server, other), "ready");
    let shown = json(&server, &["host", "show", cut]);
    assert!(shown["status_message"].as_str().unwrap().contains("agent does not answer"), "{shown:#}");
    hosts.heal(cut);
    wait_for("healed host ready", &server, || status(&server, cut) == "ready");

    // A killed agent (the host lives on): the control plane starts it again over SSH.
    let h = &hosts.hosts()[2];
    let pid_file = h.base_dir.join("agent/agent.pid");
    let old_pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let killed = hosts.exec(&h.name, ["kill", "-9", old_pid.as_str()]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    wait_for("agent restarted", &server, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() != old_pid) && status(&server, &h.name) == "ready"
    });

    // Drain, then remove: the agent stops and its files go; the host is forgotten.
    assert_eq!(json(&server, &["host", "drain", &h.name])["status"], "draining");
    ok(&server, &["host", "remove", &h.name, "--wait"]);
    assert!(!h.base_dir.join("agent").exists(), "the agent's files are removed");
    assert_eq!(json(&server, &["host", "list"]).as_array().unwrap().len(), 3, "local + the two others");
    // Removing a location with hosts in it is refused.
    let out = cli(&server, &["location", "delete", "dc1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("still has 2 host(s)"), "{}", text(&out.stderr));
}

#[test]
fn bad_hosts_are_refused_with_the_cause_and_leave_nothing_registered() {
    let (server, hosts) = setup(3);
    let [a, b, c] = [&hosts.hosts()[0], &hosts.hosts()[1], &hosts.hosts()[2]];
    let fail = |name: &str, h: &TestHost, extra: &[&str]| -> String {
        let out = add(&server, name, h, &[extra, &["--wait"]].concat());
        assert!(!out.status.success(), "should fail: {}", text(&out.stdout));
        text(&out.stderr)
    };

    // A user sshd doesn't let in.
    let err = fail("wrong-user", a, &["--ssh-user", "nobody"]);
    assert!(err.contains("was refused") && err.contains("--ssh-user"), "{err}");
    assert!(err.contains("ended failed at step 2 of 7 (check-host)"), "the failed step is named: {err}");

    // A pinned host key that is not the host's.
    let err = fail("wrong-key", a, &["--ssh-host-key", b.host_public_key.trim()]);
    assert!(err.contains("not the one recorded"), "{err}");

    // A host another installation manages.
    std::fs::create_dir_all(c.base_dir.join("agent")).unwrap();
    std::fs::write(c.base_dir.join("agent/installation"), "another-installation").unwrap();
    let err = fail("taken", c, &[]);
    assert!(err.contains("another sovdb installation"), "{err}");
    assert_eq!(std::fs::read_to_string(c.base_dir.join("agent/installation")).unwrap(), "another-installation");

    // A key file that is not a key: refused before anything starts.
    let not_a_key = server.data_dir().join("api.url");
    let address = a.address.to_string();
    let out = cli(
        &server,
        &["host", "add", "nokey", "--location", "dc1", "--address", &address, "--ssh-key", not_a_key.to_str().unwrap()],
    );
    assert!(text(&out.stderr).contains("not a private key"), "{}", text(&out.stderr));

    // None of them is registered; the operations say why they failed.
    let names: Vec<String> = json(&server, &["host", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().into())
        .collect();
    assert_eq!(names, ["local"], "nothing half-registered");
    let ops = json(&server, &["op", "list"]);
    let failed = ops.as_array().unwrap().iter().filter(|o| o["kind"] == "host.add" && o["state"] == "failed").count();
    assert_eq!(failed, 3, "{ops:#}");
    // The good host still works after all that.
    let out = add(&server, "good", a, &["--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The SSH key never shows: not in the API, not in the audit log.
    let key = std::fs::read_to_string(&a.ssh_key).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    for args in [&["host", "show", "good"][..], &["audit", "list"][..], &["op", "list"][..]] {
        assert!(!ok(&server, &[args, &["-o", "json"]].concat()).contains(key_line), "{args:?} shows the key");
    }
    assert!(!server.log().contains(key_line), "the server log shows the key");
}

#[test]
fn a_host_missing_a_python_module_is_refused_with_the_reason_instead_of_a_hang() {
    let (server, hosts) = setup(1);
    let h = &hosts.hosts()[0];
    let broken = broken_idna();
    let idna = Path::new(IDNA);
    assert!(idna.join("__init__.py").exists(), "python3-idna is installed here (install-deps names it)");

    // The engine's packages are installed on the host (it shares this machine's files), so
    // adding it runs the engine's preflight: Patroni's Python can't import idna there.
    hosts.bind(&h.name, broken.path(), idna);
    let out = add(&server, &h.name, h, &["--wait"]);
    let said = text(&out.stderr);
    assert!(!out.status.success(), "a host whose Patroni can't run is refused: {said}");
    assert!(
        said.contains(
            "python module idna does not import as user postgres (ModuleNotFoundError: No module named 'idna')"
        ) && said.contains("install it with `apt-get install python3-idna`"),
        "the error names the missing piece and the command that installs it: {said}"
    );
    assert!(
        json(&server, &["host", "list"]).as_array().unwrap().iter().all(|x| x["name"] != h.name.as_str()),
        "the refused host is not registered"
    );

    // Mended, the host is added; broken again, a cluster on it fails at its preflight,
    // with the same reason, and is undone: no cluster and no process of it is left.
    hosts.unbind(&h.name, idna);
    let out = add(&server, &h.name, h, &["--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    hosts.bind(&h.name, broken.path(), idna);
    let out = cli(&server, &["cluster", "create", "db1", "--location", "dc1", "--wait"]);
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("install-packages")
            && said.contains(&format!("host {} is not ready to run PostgreSQL members", h.name))
            && said.contains("No module named 'idna'")
            && said.contains("apt-get install python3-idna"),
        "{said}"
    );
    assert_eq!(json(&server, &["cluster", "list"]), serde_json::json!([]), "the create was undone");
    let members = h.base_dir.join("pg");
    let left: Vec<_> = std::fs::read_dir(&members).map(|d| d.filter_map(|e| e.ok()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no member directory is left: {left:?}");
    hosts.unbind(&h.name, idna);
}

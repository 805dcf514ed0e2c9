//! The test hosts are real: an sshd answers in each network namespace with the host key the
//! inventory records, hosts reach each other over the bridge, a cut link stops traffic
//! until it is healed, a killed host has no process left, and dropping the set leaves
//! nothing in the kernel. Runs as root, as CI does.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sovdb_test_utils::testhosts::{TestHost, TestHosts};

/// How long a TCP connect may take before it counts as failed: a cut host never answers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for something that should happen soon (a healed link forwarding).
const SOON: Duration = Duration::from_secs(20);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// Whether a TCP connection to the host's sshd opens from the root namespace.
fn ssh_port_open(host: &TestHost) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(host.address, host.ssh_port), CONNECT_TIMEOUT).is_ok()
}

/// Polls `f` until it holds; false if `within` passed first.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `remote` on the host over SSH as a client configured by hand would: the recorded
/// key and user, host keys from `known_hosts` only, and no unknown key accepted.
fn ssh_checked(host: &TestHost, known_hosts: &Path, remote: &str) -> Output {
    Command::new("ssh")
        .args(["-F", "none", "-i"])
        .arg(&host.ssh_key)
        .args(["-o", "IdentitiesOnly=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=5", "-p", &host.ssh_port.to_string()])
        .arg(format!("{}@{}", host.ssh_user, host.address))
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// Runs `remote` on the host with the harness's ssh command and returns its stdout; panics
/// if it failed.
fn ssh_ok(hosts: &TestHosts, name: &str, remote: &str) -> String {
    let out = hosts.ssh(name).arg(remote).output().expect("run ssh");
    assert!(out.status.success(), "ssh {name} {remote:?}: {}", show(&out));
    text(&out.stdout)
}

/// A TCP connection from inside host `from` to `to`'s sshd, with bash's /dev/tcp; returns
/// what the server said first.
fn tcp_from(hosts: &TestHosts, from: &str, to: &TestHost) -> Output {
    let script = format!("exec 3<>/dev/tcp/{}/{} && head -c 8 <&3", to.address, to.ssh_port);
    hosts.exec(from, ["timeout", "5", "bash", "-c", &script])
}

fn known_hosts_line(host: &TestHost) -> String {
    format!("{} {}\n", host.address, host.host_public_key)
}

/// The names in `ip netns list` and in `ip link` of the root namespace.
fn kernel_names() -> (Vec<String>, Vec<String>) {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    assert!(netns.status.success() && links.status.success());
    let netns = text(&netns.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    let links = text(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    (netns, links)
}

#[test]
fn ssh_reaches_each_host_and_checks_the_recorded_host_key() {
    let hosts = TestHosts::up(2);
    let [h1, h2] = hosts.hosts() else { panic!("two hosts") };
    assert_ne!(h1.address, h2.address);
    assert_ne!(h1.host_public_key, h2.host_public_key, "each host has a key of its own");

    // A known_hosts written from the inventory alone, not the script's file.
    let known = hosts.dir().join("from-inventory");
    std::fs::write(&known, known_hosts_line(h1) + &known_hosts_line(h2)).unwrap();
    for host in [h1, h2] {
        let out = ssh_checked(host, &known, "hostname; ip -4 -o addr show dev eth0");
        assert!(out.status.success(), "ssh {}: {}", host.name, show(&out));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().next(), Some(host.name.as_str()), "hostname on {}: {stdout}", host.name);
        assert!(
            stdout.contains(&format!("inet {}/24", host.address)),
            "{} does not have its address: {stdout}",
            host.name
        );
        assert!(host.base_dir.is_dir(), "{} has no base dir {}", host.name, host.base_dir.display());
    }

    // The client really checks: h1's address with h2's key is refused.
    let wrong = hosts.dir().join("wrong-key");
    std::fs::write(&wrong, format!("{} {}\n", h1.address, h2.host_public_key)).unwrap();
    let out = ssh_checked(h1, &wrong, "true");
    assert!(!out.status.success(), "ssh accepted a host key it was not given: {}", show(&out));
    assert!(text(&out.stderr).contains("Host key verification failed"), "{}", show(&out));
}

#[test]
fn hosts_reach_each_other_over_the_bridge() {
    let hosts = TestHosts::up(2);
    let [h1, h2] = hosts.hosts() else { panic!("two hosts") };
    let out = tcp_from(&hosts, &h1.name, h2);
    assert!(out.status.success(), "{} -> {}:22: {}", h1.name, h2.address, show(&out));
    assert_eq!(text(&out.stdout), "SSH-2.0-", "{} -> {}: not an sshd banner", h1.name, h2.name);
    if Path::new("/usr/bin/ping").exists() || Path::new("/bin/ping").exists() {
        let out = hosts.exec(&h1.name, ["ping", "-c1", "-W5", &h2.address.to_string()]);
        assert!(out.status.success(), "ping {} from {}: {}", h2.address, h1.name, show(&out));
    }
    // And a host reaches the root namespace through the bridge address.
    let out = hosts.exec(&h2.name, ["ip", "-4", "route", "get", &hosts.bridge_address().to_string()]);
    assert!(text(&out.stdout).contains("dev eth0"), "{}", show(&out));
}

#[test]
fn cut_partitions_a_host_until_heal() {
    let hosts = TestHosts::up(2);
    let [h1, h2] = hosts.hosts() else { panic!("two hosts") };
    assert!(ssh_port_open(h1) && ssh_port_open(h2), "both hosts answer before the cut");

    hosts.cut(&h1.name);
    assert!(!ssh_port_open(h1), "{} still answers from the root namespace after cut", h1.name);
    let out = tcp_from(&hosts, &h2.name, h1);
    assert!(!out.status.success(), "{} still reaches {} after cut: {}", h2.name, h1.name, show(&out));
    assert!(ssh_port_open(h2), "cutting {} cut {} too", h1.name, h2.name);
    assert!(!hosts.pids(&h1.name).is_empty(), "a cut host keeps its processes");

    hosts.heal(&h1.name);
    assert!(eventually(SOON, || ssh_port_open(h1)), "{} does not answer after heal", h1.name);
    assert_eq!(ssh_ok(&hosts, &h1.name, "hostname").trim(), h1.name);
}

#[test]
fn kill_ends_every_process_and_start_sshd_brings_ssh_back() {
    let hosts = TestHosts::up(2);
    let [h1, h2] = hosts.hosts() else { panic!("two hosts") };
    // A process of the host's own besides sshd: `ip netns exec` execs it under the same pid.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &h1.name, "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep in the host");
    let pid = sleeper.id();
    assert!(eventually(SOON, || hosts.pids(&h1.name).contains(&pid)), "sleep did not enter {}", h1.name);

    hosts.kill(&h1.name);
    assert_eq!(hosts.pids(&h1.name), Vec::<u32>::new(), "processes left in {} after kill", h1.name);
    assert_eq!(sleeper.wait().unwrap().signal(), Some(9), "the host's process was not killed by SIGKILL");
    let out = hosts.ssh(&h1.name).arg("true").output().unwrap();
    assert!(!out.status.success(), "ssh to a killed host worked: {}", show(&out));
    assert_eq!(ssh_ok(&hosts, &h2.name, "hostname").trim(), h2.name, "killing {} touched {}", h1.name, h2.name);

    hosts.start_sshd(&h1.name);
    assert_eq!(hosts.pids(&h1.name).len(), 1, "after start-sshd only the sshd listener runs");
    assert_eq!(ssh_ok(&hosts, &h1.name, "hostname").trim(), h1.name);
}

#[test]
fn drop_leaves_no_namespace_bridge_or_veth_behind() {
    let hosts = TestHosts::up(2);
    let dir = hosts.dir().to_path_buf();
    let netns: Vec<String> = hosts.hosts().iter().map(|h| h.name.clone()).collect();
    let mut links: Vec<String> = netns.iter().map(|n| format!("{n}v")).collect();
    links.push(hosts.bridge().to_string());
    let (have_netns, have_links) = kernel_names();
    for n in &netns {
        assert!(have_netns.contains(n), "namespace {n} is missing while up: {have_netns:?}");
    }
    for l in &links {
        assert!(have_links.contains(l), "link {l} is missing while up: {have_links:?}");
    }

    drop(hosts);
    let (have_netns, have_links) = kernel_names();
    for n in &netns {
        assert!(!have_netns.contains(n), "namespace {n} left behind: {have_netns:?}");
    }
    for l in &links {
        assert!(!have_links.contains(l), "link {l} left behind: {have_links:?}");
    }
    assert!(!dir.exists(), "{} left behind after a passing test", dir.display());
}

#[test]
fn a_failed_test_keeps_the_directory_and_still_takes_the_hosts_down() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let hosts = TestHosts::up(1);
        seen = Some((hosts.dir().to_path_buf(), hosts.hosts()[0].name.clone()));
        panic!("a deliberate failure, to see what the harness keeps");
    }));
    assert!(result.is_err());
    let (dir, name) = seen.expect("the set came up");
    let log = dir.join(&name).join("sshd.log");
    assert!(log.is_file(), "the kept directory has no sshd log {}", log.display());
    let (have_netns, _) = kernel_names();
    assert!(!have_netns.contains(&name), "namespace {name} left behind by a failed test");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_sets_up_at_once_do_not_collide() {
    let start = Arc::new(Barrier::new(2));
    let sets: Vec<TestHosts> = (0..2)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                TestHosts::up(2)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("bring a set up"))
        .collect();
    let [a, b] = &sets[..] else { panic!("two sets") };
    assert_ne!(a.prefix(), b.prefix());
    assert_ne!(a.bridge(), b.bridge());
    assert_ne!(a.bridge_address(), b.bridge_address());
    for ha in a.hosts() {
        assert!(b.hosts().iter().all(|hb| hb.name != ha.name && hb.address != ha.address), "{ha:?} is in both sets");
    }
    for set in [a, b] {
        for host in set.hosts() {
            assert_eq!(ssh_ok(set, &host.name, "hostname").trim(), host.name);
        }
    }
}

//! Test hosts made of Linux network namespaces, for tests that need machines reached over
//! SSH. Each host has its own address on a private bridge, its own sshd that lets root in
//! with a key made for the set, its own host key and its own base directory. Tests can cut
//! a host's link (a partition), kill every process on it (a lost host) and start its sshd
//! again (a reboot).
//!
//! `scripts/testhosts` does the work; this harness gives every `TestHosts` a prefix and a
//! subnet that no other set on the machine uses, so tests run in parallel, reads the
//! inventory the script writes (`hosts.json`), and takes the set down on drop. When the test
//! failed, the set's directory (sshd configs and logs, base directories) is kept and its
//! path printed. Nothing is persisted beyond that directory.
//!
//! Needs root (network namespaces, bridges and veths need `CAP_NET_ADMIN`). Not being root
//! is a failure, not a skip: CI runs the tests as root.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::{finish_dir, running_as_root, tail};

/// The script's exit status when the subnet (or the set's bridge) belongs to something
/// else; the harness then tries another subnet.
const EXIT_IN_USE: i32 = 3;

/// The most hosts a set can have: their names must fit in an interface name.
pub const MAX_HOSTS: usize = 99;

/// Sets made by this process so far; part of the next set's prefix.
static SETS: AtomicU64 = AtomicU64::new(0);

/// One host of a `TestHosts` set, as the script recorded it in `hosts.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct TestHost {
    /// The host's name, which is also its network namespace's name (`<prefix><i>`).
    pub name: String,
    pub address: IpAddr,
    pub ssh_port: u16,
    pub ssh_user: String,
    /// The private key the host's sshd accepts for `ssh_user`.
    pub ssh_key: PathBuf,
    /// The host's SSH public key as a `known_hosts` line takes it: `ssh-ed25519 AAAA...`.
    pub host_public_key: String,
    /// A directory of its own for sovdb to use on this host. All hosts share the machine's
    /// file system, so nothing else separates them.
    pub base_dir: PathBuf,
}

/// What `hosts.json` holds that the harness reads; the file has more, for people.
#[derive(Deserialize)]
struct Inventory {
    bridge: String,
    bridge_address: IpAddr,
    known_hosts: PathBuf,
    hosts: Vec<TestHost>,
}

/// A set of test hosts on a bridge of their own, taken down on drop.
pub struct TestHosts {
    script: PathBuf,
    prefix: String,
    dir: Option<tempfile::TempDir>,
    bridge: String,
    bridge_address: Option<IpAddr>,
    known_hosts: PathBuf,
    hosts: Vec<TestHost>,
}

/// `scripts/testhosts` of this source tree.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testhosts")
}

impl TestHosts {
    /// Brings up `n` hosts (1 to `MAX_HOSTS`), each with a running sshd, on a prefix and a
    /// subnet (in 10.78.0.0/16) that no other set uses.
    pub fn up(n: usize) -> TestHosts {
        assert!(
            running_as_root(),
            "TestHosts needs root: network namespaces, bridges and veths need CAP_NET_ADMIN. \
             CI runs the tests as root; run them as root too (sudo -E cargo nextest run ...)"
        );
        assert!((1..=MAX_HOSTS).contains(&n), "TestHosts::up({n}): a set has 1 to {MAX_HOSTS} hosts");
        let dir = tempfile::Builder::new().prefix("sovdb-testhosts-").tempdir().expect("create a temporary directory");
        let mut set = TestHosts {
            script: script_path(),
            prefix: fresh_prefix(),
            known_hosts: dir.path().join("known_hosts"),
            dir: Some(dir),
            bridge: String::new(),
            bridge_address: None,
            hosts: Vec::new(),
        };
        // From here on, drop takes down whatever `up` created, even if it fails halfway.
        let used = addresses_in_use();
        let mut tried = Vec::new();
        for subnet in candidate_subnets(&set.prefix) {
            if used.iter().any(|a| a.starts_with(&format!("{subnet}."))) {
                continue;
            }
            let mut cmd = set.script_command("up");
            cmd.args(["-n", &n.to_string(), "--subnet", &subnet]);
            let out = output(&mut cmd);
            if out.status.code() == Some(EXIT_IN_USE) {
                tried.push(subnet);
                continue;
            }
            check(&cmd, &out);
            set.read_inventory();
            assert_eq!(set.hosts.len(), n, "hosts.json lists {} hosts, not {n}", set.hosts.len());
            return set;
        }
        panic!("no free subnet in 10.78.0.0/16 for test hosts (taken when tried: {tried:?})");
    }

    fn read_inventory(&mut self) {
        let path = self.dir().join("hosts.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let inv: Inventory =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", path.display()));
        self.bridge = inv.bridge;
        self.bridge_address = Some(inv.bridge_address);
        self.known_hosts = inv.known_hosts;
        self.hosts = inv.hosts;
    }

    /// `scripts/testhosts COMMAND` for this set.
    fn script_command(&self, command: &str) -> Command {
        let mut c = Command::new(&self.script);
        c.arg(command).arg("--prefix").arg(&self.prefix).arg("--dir").arg(self.dir()).stdin(Stdio::null());
        c
    }

    /// Runs `scripts/testhosts COMMAND NAME` and panics, with its output, if it failed.
    fn script_on_host(&self, command: &str, name: &str) {
        self.host(name);
        let mut cmd = self.script_command(command);
        cmd.arg(name);
        let out = output(&mut cmd);
        check(&cmd, &out);
    }

    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// The host named `name`; panics if the set has none.
    pub fn host(&self, name: &str) -> &TestHost {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            panic!("no test host {name} (the set has {names:?})")
        })
    }

    /// The set's name: hosts are `<prefix>1..N`, the bridge `<prefix>br`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bridge in the root namespace that the hosts hang off.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address: how hosts reach programs in the root namespace (a control
    /// plane, say) listening on it or on 0.0.0.0.
    pub fn bridge_address(&self) -> IpAddr {
        self.bridge_address.expect("the set is up")
    }

    /// Keys, sshd configs and logs, base directories, `hosts.json`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the set's directory").path()
    }

    /// A `known_hosts` file with every host's key.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Takes the host's link down: nothing reaches it or leaves it, and its processes keep
    /// running.
    pub fn cut(&self, name: &str) {
        self.script_on_host("cut", name);
    }

    /// Brings the host's link up again after `cut`.
    pub fn heal(&self, name: &str) {
        self.script_on_host("heal", name);
    }

    /// `kill -9` on every process in the host's namespace, sshd included; returns when none
    /// is left.
    pub fn kill(&self, name: &str) {
        self.script_on_host("kill", name);
    }

    /// Starts the host's sshd again (after `kill`) and returns once it listens.
    pub fn start_sshd(&self, name: &str) {
        self.script_on_host("start-sshd", name);
    }

    /// Bind-mounts `source` over `target` on this host only: its sshd, SSH sessions and
    /// everything they start (the agent, the engines) see `source` there; the machine and
    /// other hosts don't. Gone when the host's sshd is started again.
    pub fn bind(&self, name: &str, source: &Path, target: &Path) {
        self.host(name);
        let mut cmd = self.script_command("bind");
        cmd.arg(name).arg(source).arg(target);
        let out = output(&mut cmd);
        check(&cmd, &out);
    }

    /// Undoes [`TestHosts::bind`].
    pub fn unbind(&self, name: &str, target: &Path) {
        self.host(name);
        let mut cmd = self.script_command("unbind");
        cmd.arg(name).arg(target);
        let out = output(&mut cmd);
        check(&cmd, &out);
    }

    /// Runs `argv` inside the host's network namespace (`ip netns exec`) and returns its
    /// output, whatever its exit status. It shares the root namespace's hostname, unlike an
    /// SSH session on the host.
    pub fn exec<I, S>(&self, name: &str, argv: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.host(name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", name]).args(argv).stdin(Stdio::null());
        output(&mut cmd)
    }

    /// `ssh` to the host as its `ssh_user`, with the set's key, checking the host key
    /// against `known_hosts()`. Add the remote command and run it.
    pub fn ssh(&self, name: &str) -> Command {
        let host = self.host(name);
        let mut c = Command::new("ssh");
        c.args(["-F", "none", "-i"])
            .arg(&host.ssh_key)
            .args(["-o", "IdentitiesOnly=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"])
            .args(["-p", &host.ssh_port.to_string()])
            .arg(format!("{}@{}", host.ssh_user, host.address))
            .stdin(Stdio::null());
        c
    }

    /// The processes in the host's network namespace (`ip netns pids`).
    pub fn pids(&self, name: &str) -> Vec<u32> {
        self.host(name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "pids", name]);
        let out = output(&mut cmd);
        check(&cmd, &out);
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().expect("a pid")).collect()
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let mut cmd = self.script_command("down");
        let out = output(&mut cmd);
        let down_failed = (!out.status.success()).then(|| describe(&cmd, &out));
        if std::thread::panicking() {
            for host in &self.hosts {
                let log = self.dir().join(&host.name).join("sshd.log");
                eprintln!("test host {} sshd log:\n{}", host.name, tail(&log, 15));
            }
        }
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test hosts");
        }
        if let Some(failure) = down_failed {
            if std::thread::panicking() {
                eprintln!("taking test hosts {} down failed: {failure}", self.prefix);
            } else {
                panic!("taking test hosts {} down failed: {failure}", self.prefix);
            }
        }
    }
}

/// A prefix no other set has: the pid (fixed width, so prefixes of two processes never run
/// into each other) and this process's count of sets. It ends with a letter, as the script
/// requires, and has at most 10 characters, leaving room for 99 hosts in 15-character
/// interface names. One left behind by an earlier process with the same pid is skipped.
fn fresh_prefix() -> String {
    let taken = names_in_use();
    loop {
        let count = SETS.fetch_add(1, Ordering::Relaxed);
        assert!(count < 36 * 36, "this process made more than {} sets of test hosts", 36 * 36);
        let prefix = format!("sv{}{}h", base36(u64::from(std::process::id()), 5), base36(count, 1));
        if !taken.iter().any(|name| name.starts_with(&prefix)) {
            return prefix;
        }
    }
}

/// `v` in base 36, padded with zeros to at least `width` digits.
fn base36(mut v: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while v > 0 || out.len() < width {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Subnets to try, `10.78.X`, every one once, starting at a place that depends on the prefix
/// so that parallel sets rarely try the same one first.
fn candidate_subnets(prefix: &str) -> impl Iterator<Item = String> {
    let start = prefix.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 256;
    (0..256).map(move |i| format!("10.78.{}", (start + i) % 256))
}

/// The IPv4 addresses on this machine's root namespace (`ip -4 -o addr`), as `a.b.c.d`.
fn addresses_in_use() -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["-4", "-o", "addr", "show"]);
    let out = output(&mut cmd);
    check(&cmd, &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect()
}

/// The names of the network namespaces and of the root namespace's interfaces.
fn names_in_use() -> Vec<String> {
    let mut names = Vec::new();
    let mut netns = Command::new("ip");
    netns.args(["netns", "list"]);
    let out = output(&mut netns);
    check(&netns, &out);
    names.extend(
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from),
    );
    let mut links = Command::new("ip");
    links.args(["-o", "link", "show"]);
    let out = output(&mut links);
    check(&links, &out);
    // "7: name@peer: <FLAGS> ..."
    names.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string()),
    );
    names
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// The command, its exit status, stdout and stderr.
fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(cmd: &Command, out: &Output) {
    assert!(out.status.success(), "{}", describe(cmd, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_pads_and_encodes() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 1), "10");
        // The largest pid Linux hands out (pid_max is at most 2^22) fits in five digits.
        assert_eq!(base36(1 << 22, 5).len(), 5);
    }

    #[test]
    fn prefixes_fit_interface_names_and_end_with_a_letter() {
        let a = fresh_prefix();
        let b = fresh_prefix();
        assert_ne!(a, b);
        for p in [a, b] {
            // The longest name is a veth: <prefix><99>v, and Linux allows 15 characters.
            assert!(format!("{p}{MAX_HOSTS}v").len() <= 15, "{p} is too long");
            assert!(p.ends_with(|c: char| c.is_ascii_lowercase()), "{p} must not end with a digit");
        }
    }

    #[test]
    fn candidate_subnets_cover_the_range_once() {
        let mut all: Vec<String> = candidate_subnets("sv00001h").collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256);
        assert!(all.iter().all(|s| s.starts_with("10.78.")));
    }
}

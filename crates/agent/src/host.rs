//! `facts` and `metrics`: what the host is and how busy it is, read from `/proc`, `/etc`
//! and a few system calls. Nothing here changes the host.
//!
//! CPU use needs two readings of `/proc/stat`: the previous `metrics` call's, when there is
//! a recent one, else a second reading taken [`CPU_SAMPLE`] after the first.

use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use sovdb_types::{DiskUsage, HostFacts, MetricsSnapshot, NetCounters};

/// How long apart two `/proc/stat` readings are when there is no recent previous one.
const CPU_SAMPLE: Duration = Duration::from_millis(100);
/// A previous reading older than this says little about now: sample afresh.
const CPU_PREVIOUS_MAX_AGE: Duration = Duration::from_secs(300);

/// File systems that hold no data of their own.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "squashfs",
    "overlay_proc",
    "selinuxfs",
];

pub(crate) fn facts(base_dir: &Path) -> HostFacts {
    let uname = nix::sys::utsname::uname().ok();
    HostFacts {
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        os: os_pretty_name().unwrap_or_else(|| "unknown".to_owned()),
        kernel: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        arch: uname
            .as_ref()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
        cpus: online_cpus(),
        memory_bytes: meminfo("MemTotal:").unwrap_or(0),
        disks: disks(),
        addresses: addresses(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        base_dir: base_dir.to_string_lossy().into_owned(),
    }
}

/// The previous `/proc/stat` reading, for the next `metrics` call.
#[derive(Default)]
pub(crate) struct CpuSampler {
    previous: Mutex<Option<(Instant, CpuTimes)>>,
}

impl CpuSampler {
    pub async fn metrics(&self) -> MetricsSnapshot {
        let now = cpu_times();
        let previous = self.previous.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (before, after) = match (previous, now) {
            (Some((at, before)), Some(now)) if at.elapsed() >= CPU_SAMPLE && at.elapsed() <= CPU_PREVIOUS_MAX_AGE => {
                (Some(before), Some(now))
            }
            (_, first) => {
                tokio::time::sleep(CPU_SAMPLE).await;
                (first, cpu_times())
            }
        };
        if let Some(after) = after {
            *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), after));
        }
        let cpu_busy_ratio = match (before, after) {
            (Some(b), Some(a)) => a.busy_ratio_since(&b),
            _ => 0.0,
        };
        let (load1, load5, load15) = loadavg().unwrap_or((0.0, 0.0, 0.0));
        MetricsSnapshot {
            at: Utc::now(),
            cpu_busy_ratio,
            load1,
            load5,
            load15,
            memory_total_bytes: meminfo("MemTotal:").unwrap_or(0),
            memory_available_bytes: meminfo("MemAvailable:").unwrap_or(0),
            disks: disks(),
            net: net_counters(),
        }
    }
}

/// Jiffies since boot from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuTimes {
    total: u64,
    idle: u64,
}

impl CpuTimes {
    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        if v.len() < 4 {
            return None;
        }
        // user nice system idle iowait irq softirq steal; guest times are already in user.
        let total = v.iter().take(8).sum();
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        Some(CpuTimes { total, idle })
    }

    pub(crate) fn busy_ratio_since(&self, before: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total);
        let idle = self.idle.saturating_sub(before.idle);
        if total == 0 {
            return 0.0;
        }
        (total.saturating_sub(idle) as f64 / total as f64).clamp(0.0, 1.0)
    }
}

pub(crate) fn cpu_times() -> Option<CpuTimes> {
    CpuTimes::parse(&fs::read_to_string("/proc/stat").ok()?)
}

pub(crate) fn loadavg() -> Option<(f64, f64, f64)> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// A `/proc/meminfo` value (given in kB) in bytes.
pub(crate) fn meminfo(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

fn online_cpus() -> u32 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => n as u32,
        _ => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
    }
}

fn os_pretty_name() -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").or_else(|_| fs::read_to_string("/usr/lib/os-release")).ok()?;
    parse_os_release(&text, "PRETTY_NAME").or_else(|| parse_os_release(&text, "NAME"))
}

/// A value of an os-release file: `KEY=value`, `KEY="value"` or `KEY='value'`.
fn parse_os_release(text: &str, key: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))?.trim();
    let unquoted = if value.len() >= 2
        && ((value.starts_with('"') && value.ends_with('"')) || (value.starts_with('\'') && value.ends_with('\'')))
    {
        &value[1..value.len() - 1]
    } else {
        value
    };
    let mut out = String::new();
    let mut chars = unquoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Mounted file systems that hold data, one entry per device (the first mount of it).
pub(crate) fn disks() -> Vec<DiskUsage> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in text.lines().filter_map(parse_mountinfo_line) {
        if PSEUDO_FS.contains(&m.fstype.as_str()) || !seen.insert(m.device.clone()) {
            continue;
        }
        let Ok(st) = nix::sys::statvfs::statvfs(m.mount.as_str()) else { continue };
        let frsize = st.fragment_size();
        let total_bytes = st.blocks() * frsize;
        if total_bytes == 0 {
            continue;
        }
        out.push(DiskUsage {
            mount: m.mount,
            filesystem: m.fstype,
            total_bytes,
            free_bytes: st.blocks_available() * frsize,
        });
    }
    out
}

struct Mount {
    device: String,
    mount: String,
    fstype: String,
}

/// One line of `/proc/self/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let fstype = right.split(' ').next()?;
    Some(Mount { device: l.get(2)?.to_string(), mount: unescape_octal(l.get(4)?), fstype: fstype.to_owned() })
}

/// Mount points escape space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host's addresses: others before loopback, IPv4 before IPv6, without IPv6
/// link-local addresses (useless without their interface).
fn addresses() -> Vec<String> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut ips: Vec<IpAddr> = Vec::new();
    for ifa in ifaddrs {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if let IpAddr::V6(v6) = ip {
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.into_iter().map(|ip| ip.to_string()).collect()
}

pub(crate) fn net_counters() -> Vec<NetCounters> {
    let Ok(text) = fs::read_to_string("/proc/net/dev") else { return Vec::new() };
    parse_net_dev(&text)
}

/// `/proc/net/dev`: two header lines, then `iface: rx_bytes rx_packets ... (8 rx fields)
/// tx_bytes ...`.
fn parse_net_dev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            Some(NetCounters { interface: name.trim().to_owned(), rx_bytes: *f.first()?, tx_bytes: *f.get(8)? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(parse_os_release(text, "PRETTY_NAME").unwrap(), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(parse_os_release(text, "ID").unwrap(), "debian");
        assert_eq!(parse_os_release("X='a \\\"b'", "X").unwrap(), "a \"b");
        assert_eq!(parse_os_release(text, "VERSION"), None);
    }

    #[test]
    fn cpu_busy_ratio_comes_from_the_difference_of_two_readings() {
        let a = CpuTimes::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = CpuTimes::parse("cpu  150 0 150 750 150 0 0 0 0 0\n").unwrap();
        assert_eq!(a, CpuTimes { total: 1000, idle: 800 });
        assert!((b.busy_ratio_since(&a) - 0.5).abs() < 1e-9);
        assert_eq!(a.busy_ratio_since(&a), 0.0);
    }

    #[test]
    fn mountinfo_and_net_dev_parse() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!((m.device.as_str(), m.mount.as_str(), m.fstype.as_str()), ("98:0", "/mnt/my disk", "ext3"));
        let dev = "Inter-|   Receive  |  Transmit\n face |bytes packets\n    lo: 100 2 0 0 0 0 0 0 200 3 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        let n = parse_net_dev(dev);
        assert_eq!(n.len(), 2);
        assert_eq!((n[1].interface.as_str(), n[1].rx_bytes, n[1].tx_bytes), ("eth0", 5, 7));
    }

    #[test]
    fn facts_of_this_host_are_plausible() {
        let f = facts(Path::new("/var/lib/sovdb"));
        assert!(f.cpus > 0 && f.memory_bytes > 0);
        assert!(!f.os.is_empty() && !f.kernel.is_empty() && !f.hostname.is_empty());
        assert!(!f.disks.is_empty(), "no disk found");
        let is_loopback = |a: &String| a.parse::<IpAddr>().unwrap().is_loopback();
        let first_loopback = f.addresses.iter().position(is_loopback).unwrap_or(f.addresses.len());
        assert!(f.addresses[first_loopback..].iter().all(is_loopback), "{:?}", f.addresses);
    }
}

//! What the control plane knows about a host, as its agent reports it: the facts that
//! change rarely (`HostFacts`) and the numbers that change all the time
//! (`MetricsSnapshot`).
//!
//! These are observations, never intent: the agent measures them when asked, and the
//! control plane shows them as they were at that moment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a host is: its identity, size and addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostFacts {
    pub hostname: String,
    /// The distribution's name (`PRETTY_NAME` of `/etc/os-release`), e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os: String,
    /// The kernel release, e.g. `6.1.0-18-amd64`.
    pub kernel: String,
    /// The machine architecture, e.g. `x86_64` or `aarch64`.
    pub arch: String,
    /// Online CPUs.
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Mounted file systems that hold data (no pseudo file systems such as proc or tmpfs).
    pub disks: Vec<DiskUsage>,
    /// The host's IP addresses, addresses other than loopback first.
    pub addresses: Vec<String>,
    /// The version of the agent that answered.
    pub agent_version: String,
    /// The directory the agent keeps everything in.
    pub base_dir: String,
}

/// Size and free space of one mounted file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiskUsage {
    /// Where it is mounted, e.g. `/` or `/var/lib/postgresql`.
    pub mount: String,
    /// The file system type, e.g. `ext4` or `xfs`.
    pub filesystem: String,
    pub total_bytes: u64,
    /// Bytes available to unprivileged users.
    pub free_bytes: u64,
}

/// How busy a host is at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsSnapshot {
    /// When the numbers were taken.
    pub at: DateTime<Utc>,
    /// Share of CPU time not idle (0.0 to 1.0), over the interval since the previous
    /// snapshot, or a short sample when there is none.
    pub cpu_busy_ratio: f64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_bytes: u64,
    /// Memory that can be given to new work without swapping (`MemAvailable`).
    pub memory_available_bytes: u64,
    pub disks: Vec<DiskUsage>,
    /// Bytes received and sent per network interface since boot.
    pub net: Vec<NetCounters>,
}

/// Traffic counters of one network interface since boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

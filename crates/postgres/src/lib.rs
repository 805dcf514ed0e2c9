//! The postgres engine driver's pure half: what to check and what to write.
//!
//! The control plane's workflows (crate `sovdb-app`) allocate hosts, ports, passwords and
//! certificates, then ask this crate for the files and command lines of every process of
//! a member (Patroni, which runs PostgreSQL; HAProxy; PgBouncer) and of a location's
//! etcd, and ship them through agents. Nothing here does IO, so all of it is unit-tested.

pub mod allow;
pub mod backup;
pub mod diagnose;
pub mod params;
pub mod preflight;
pub mod render;

/// The major versions this build can run (Debian 12 ships 15).
pub const VERSIONS: &[&str] = &["15"];
pub const DEFAULT_VERSION: &str = "15";

/// The unprivileged system user PostgreSQL, Patroni, HAProxy and PgBouncer run as
/// (created by Debian's postgresql-common).
pub const OS_USER: &str = "postgres";
/// The user etcd runs as (created by Debian's etcd-server).
pub const ETCD_OS_USER: &str = "etcd";

pub use preflight::{packages, Role};

pub fn bin_dir(version: &str) -> String {
    format!("/usr/lib/postgresql/{version}/bin")
}

/// Patroni's timings, in seconds. Failover takes about `ttl` after the primary is lost.
/// Patroni requires `loop_wait + 2 * retry_timeout <= ttl`. Measured here (see
/// `bench/failover.sh`): 8/1/3 keeps the write gap under 10 s without flapping on a
/// loaded 2-core machine.
pub const TTL: u32 = 8;
pub const LOOP_WAIT: u32 = 1;
pub const RETRY_TIMEOUT: u32 = 3;
/// A replica further behind than this (bytes of WAL) is not promoted by an automatic
/// failover of an asynchronous cluster: the bound on what such a failover can lose.
pub const MAXIMUM_LAG_ON_FAILOVER: u64 = 1024 * 1024;

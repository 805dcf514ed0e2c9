//! Metrics: the one catalogue of every series sovdb collects, and the shapes in which
//! agents hand samples to the control plane and the API serves them.
//!
//! Every metric has a stable small number ([`MetricDef::id`]): the store encodes samples
//! with it (a row per sample, not a row per value), so a number is never reused or
//! changed once released, like a protobuf field number. Names are what the API, the CLI
//! and Prometheus (with the prefix `sovdb_`) show.
//!
//! Rates (commits per second, WAL bytes per second, disk and network bytes per second)
//! are computed by the agent from its own consecutive readings of the counters, so they
//! are gauges here: a 1-minute rollup of a gauge is its mean, of a counter its last value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a metric's values combine when samples are rolled up or bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A level at one moment: a bucket's value is the mean of its samples.
    Gauge,
    /// A total that only grows (until a restart): a bucket's value is its last sample.
    Counter,
}

/// Whose a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricScope {
    /// The host a cluster member runs on.
    Host,
    /// One PostgreSQL instance (a cluster member).
    Member,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Stable number used by the store's encoding; never reused.
    pub id: u16,
    pub name: &'static str,
    pub kind: MetricKind,
    pub scope: MetricScope,
    /// The label that tells a metric's series apart within one host or member (a mount
    /// point, a replica's name...), if it has several.
    pub dim: Option<&'static str>,
    pub unit: &'static str,
    pub help: &'static str,
}

const fn def(
    id: u16,
    name: &'static str,
    kind: MetricKind,
    scope: MetricScope,
    dim: Option<&'static str>,
    unit: &'static str,
    help: &'static str,
) -> MetricDef {
    MetricDef { id, name, kind, scope, dim, unit, help }
}

use MetricKind::{Counter, Gauge};
use MetricScope::{Host, Member};

/// Every metric sovdb collects. Append only.
pub const CATALOGUE: &[MetricDef] = &[
    def(1, "host_cpu_busy_ratio", Gauge, Host, None, "ratio", "Share of CPU time not idle (0 to 1)."),
    def(2, "host_load1", Gauge, Host, None, "", "Load average over 1 minute."),
    def(3, "host_memory_total_bytes", Gauge, Host, None, "bytes", "Memory of the host."),
    def(4, "host_memory_available_bytes", Gauge, Host, None, "bytes", "Memory available without swapping."),
    def(5, "host_disk_total_bytes", Gauge, Host, Some("mount"), "bytes", "Size of a mounted file system."),
    def(6, "host_disk_free_bytes", Gauge, Host, Some("mount"), "bytes", "Space available on a file system."),
    def(
        7,
        "host_disk_read_bytes_per_second",
        Gauge,
        Host,
        Some("device"),
        "bytes/s",
        "Bytes read from a block device.",
    ),
    def(
        8,
        "host_disk_written_bytes_per_second",
        Gauge,
        Host,
        Some("device"),
        "bytes/s",
        "Bytes written to a block device.",
    ),
    def(9, "host_network_receive_bytes_per_second", Gauge, Host, Some("interface"), "bytes/s", "Bytes received."),
    def(10, "host_network_transmit_bytes_per_second", Gauge, Host, Some("interface"), "bytes/s", "Bytes sent."),
    def(20, "pg_up", Gauge, Member, None, "", "1 when the agent could query the instance, else 0."),
    def(21, "pg_connections", Gauge, Member, Some("state"), "", "Client connections by state."),
    def(22, "pg_commits_per_second", Gauge, Member, None, "1/s", "Transactions committed per second."),
    def(23, "pg_rollbacks_per_second", Gauge, Member, None, "1/s", "Transactions rolled back per second."),
    def(24, "pg_xact_commit_total", Counter, Member, None, "", "Transactions committed (pg_stat_database)."),
    def(25, "pg_xact_rollback_total", Counter, Member, None, "", "Transactions rolled back (pg_stat_database)."),
    def(26, "pg_wal_bytes_per_second", Gauge, Member, None, "bytes/s", "WAL written (primary) or replayed (replica)."),
    def(27, "pg_wal_position_bytes", Counter, Member, None, "bytes", "WAL position written (primary) or replayed."),
    def(28, "pg_cache_hit_ratio", Gauge, Member, None, "ratio", "Share of block reads served from shared buffers."),
    def(29, "pg_deadlocks_total", Counter, Member, None, "", "Deadlocks detected (pg_stat_database)."),
    def(30, "pg_oldest_transaction_age_seconds", Gauge, Member, None, "s", "Age of the oldest open transaction."),
    def(31, "pg_database_size_bytes", Gauge, Member, Some("database"), "bytes", "Size of a database."),
    def(
        32,
        "pg_replication_lag_bytes",
        Gauge,
        Member,
        Some("replica"),
        "bytes",
        "WAL a replica has not replayed yet (seen on the primary).",
    ),
    def(
        33,
        "pg_replication_lag_seconds",
        Gauge,
        Member,
        Some("replica"),
        "s",
        "Replay lag of a replica (seen on the primary).",
    ),
    def(34, "patroni_primary", Gauge, Member, None, "", "1 when Patroni says this member is the primary."),
    def(35, "patroni_timeline", Gauge, Member, None, "", "The member's timeline as Patroni reports it."),
    def(36, "patroni_running", Gauge, Member, None, "", "1 when Patroni reports PostgreSQL running."),
];

/// The metric of this name.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// The metric of this stable number.
pub fn metric_by_id(id: u16) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|m| m.id == id)
}

/// One value of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricValue {
    /// A name of the [`CATALOGUE`].
    pub name: String,
    /// Which series of the metric (its `dim` label's value); empty when it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dim: String,
    pub value: f64,
}

/// Everything measured of one target at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricSample {
    pub at: DateTime<Utc>,
    pub values: Vec<MetricValue>,
}

/// One series of a metric over time, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    pub name: String,
    pub kind: MetricKind,
    pub unit: String,
    /// The cluster member, for member metrics and for the host metrics of its host.
    pub member: String,
    /// The host the member runs on.
    pub host: String,
    /// The label that tells this series apart (`mount`, `replica`...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim_label: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dim: String,
    /// `[unix seconds, value]`, oldest first, one per step that has data.
    pub points: Vec<(i64, f64)>,
}

/// The answer of `GET /api/v1/clusters/{name}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsQueryResult {
    pub cluster: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Seconds between points.
    pub step: i64,
    /// Which samples answered: `raw` (every 10 s) or `1m` (1-minute rollups).
    pub resolution: String,
    pub series: Vec<MetricSeries>,
}

/// The query parameters of `GET /api/v1/clusters/{name}/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// A metric name (see `docs/monitoring.md`); all metrics when absent.
    pub name: Option<String>,
    /// RFC 3339 time or a duration back from now (`1h`, `30m`, `7d`); default 1 hour ago.
    pub from: Option<String>,
    /// RFC 3339 time or a duration back from now; default now.
    pub to: Option<String>,
    /// Seconds between points, or a duration (`10s`, `1m`, `1h`); default: the range
    /// in about 120 points, at least the resolution's.
    pub step: Option<String>,
}

/// One group of Prometheus' HTTP service discovery (`http_sd_configs`): where to scrape
/// and the labels to scrape with (`__param_*` become query parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrometheusTargetGroup {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A duration written `90s`, `15m`, `6h`, `14d` or a bare number of seconds.
pub fn parse_duration_secs(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86400),
        (_, c) if c.is_ascii_digit() => (s, 1),
        _ => return None,
    };
    let n: i64 = num.parse().ok()?;
    (n >= 0).then(|| n.checked_mul(mult)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        let mut ids: Vec<u16> = CATALOGUE.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOGUE.len());
        let mut names: Vec<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        assert!(CATALOGUE
            .iter()
            .all(|m| m.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_secs("90s"), Some(90));
        assert_eq!(parse_duration_secs("15m"), Some(900));
        assert_eq!(parse_duration_secs("2h"), Some(7200));
        assert_eq!(parse_duration_secs("14d"), Some(14 * 86400));
        assert_eq!(parse_duration_secs("30"), Some(30));
        assert_eq!(parse_duration_secs("-3m"), None);
        assert_eq!(parse_duration_secs("m"), None);
        assert_eq!(parse_duration_secs("3w"), None);
    }
}

//! Metrics: pulling samples from agents into the store, rolling them up and pruning them,
//! and serving them (the cluster metrics endpoint and Prometheus' text format).
//!
//! Ingest is a level-triggered loop: every round asks each ready host's agent for the
//! samples after the cursor stored for it (`metric_cursors`), and tells it which local
//! PostgreSQL instances to sample (the members placed on it). Samples and the new cursor
//! are written in one transaction, so a crash between a pull and its write pulls the same
//! samples again, and a sample stored twice (two replicas, a repeated pull) is kept once
//! (the table's key is target and moment).
//!
//! Retention: raw samples for `raw` (24 h by default), 1-minute rollups for `rollup`
//! (14 days). Rollups are made by the maintenance round for every full minute at least
//! [`ROLLUP_DELAY`] old, from the `meta` mark `metrics/rolled_until`; samples that arrive
//! later for an already rolled minute (an agent's buffer drained after a blip) move the
//! mark back so those minutes are rolled again. A gauge's rollup is the mean of its
//! samples, a counter's its last value.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sovdb_agent::proto::{MetricsPullRequest, PgTarget};
use sovdb_store::{ClusterRecord, HostRecord, MetricRow, MetricTable};
use sovdb_types::metrics::{metric, metric_by_id, parse_duration_secs, MetricDef, CATALOGUE};
use sovdb_types::*;

use crate::rbac::Action;
use crate::workflows::pg;
use crate::{App, AppError, Ctx, Result};

/// How long an agent may take to answer a pull.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// A minute is rolled up once it is this old (samples of it may still be in flight).
const ROLLUP_DELAY: TimeDelta = TimeDelta::minutes(2);
/// At most this many minutes are rolled up in one maintenance round.
const ROLLUP_BATCH_MINUTES: i64 = 60;
/// The `meta` key of the rollup mark (unix ms of the first minute not yet rolled).
const ROLLED_KEY: &str = "metrics/rolled_until";
/// A sample older than this is not shown by `/metrics` (its target stopped reporting).
const FRESH: TimeDelta = TimeDelta::seconds(60);
/// At most this many points per series in an answer.
const MAX_POINTS: i64 = 2000;

/// How long samples are kept.
#[derive(Debug, Clone, Copy)]
pub struct MetricsRetention {
    pub raw: Duration,
    pub rollup: Duration,
}

impl Default for MetricsRetention {
    fn default() -> Self {
        MetricsRetention { raw: Duration::from_secs(24 * 3600), rollup: Duration::from_secs(14 * 86400) }
    }
}

/// The store's encoding of a sample's values: `<metric id>[:<dim>]=<value>` joined by `;`,
/// with `%`, `;`, `=` and `:` in dims percent-escaped. Values not in the catalogue are
/// dropped (an agent newer than this control plane).
pub fn encode(values: &[MetricValue]) -> String {
    let mut out = String::new();
    for v in values {
        let Some(def) = metric(&v.name) else { continue };
        if !out.is_empty() {
            out.push(';');
        }
        let _ = write!(out, "{}", def.id);
        if !v.dim.is_empty() {
            out.push(':');
            for c in v.dim.chars() {
                match c {
                    '%' | ';' | '=' | ':' => {
                        let _ = write!(out, "%{:02X}", c as u32);
                    }
                    c => out.push(c),
                }
            }
        }
        let _ = write!(out, "={}", v.value);
    }
    out
}

/// The values of an encoded sample: `(metric, dim, value)`; unreadable parts are skipped.
pub fn decode(data: &str) -> Vec<(&'static MetricDef, String, f64)> {
    data.split(';')
        .filter_map(|part| {
            let (key, value) = part.rsplit_once('=')?;
            let (id, dim) = key.split_once(':').unwrap_or((key, ""));
            let def = metric_by_id(id.parse().ok()?)?;
            Some((def, unescape(dim), value.parse().ok()?))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Combines the samples of one bucket per series: gauges by mean, counters by last value.
/// `rows` must be in time order.
fn aggregate<'a>(rows: impl Iterator<Item = &'a str>) -> Vec<(&'static MetricDef, String, f64)> {
    let mut acc: BTreeMap<(u16, String), (&'static MetricDef, f64, u32)> = BTreeMap::new();
    for data in rows {
        for (def, dim, value) in decode(data) {
            let e = acc.entry((def.id, dim)).or_insert((def, 0.0, 0));
            match def.kind {
                MetricKind::Gauge => {
                    e.1 += value;
                    e.2 += 1;
                }
                MetricKind::Counter => {
                    e.1 = value;
                    e.2 = 1;
                }
            }
        }
    }
    acc.into_iter().map(|((_, dim), (def, sum, n))| (def, dim, sum / n as f64)).collect()
}

fn encode_aggregate(values: &[(&'static MetricDef, String, f64)]) -> String {
    let v: Vec<MetricValue> = values
        .iter()
        .map(|(d, dim, value)| MetricValue { name: d.name.to_string(), dim: dim.clone(), value: *value })
        .collect();
    encode(&v)
}

fn host_target(host: HostId) -> String {
    format!("host/{host}")
}

fn member_target(cluster: ClusterId, member: &str) -> String {
    format!("member/{cluster}/{member}")
}

fn minute_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(60_000)).unwrap_or(t)
}

/// A cluster's member as metrics see it.
struct Watched {
    cluster: ClusterRecord,
    member: pg::Member,
}

impl App {
    /// Every cluster member by the host it runs on.
    async fn watched_members(&self) -> Result<Vec<Watched>> {
        let mut out = Vec::new();
        for c in self.clusters_all().await? {
            if let Ok(members) = pg::members(self, c.id).await {
                out.extend(members.into_iter().map(|member| Watched { cluster: c.clone(), member }));
            }
        }
        Ok(out)
    }

    async fn ready_hosts(&self) -> Result<Vec<HostRecord>> {
        let hosts = self.hosts_all().await?;
        Ok(hosts.into_iter().filter(|h| matches!(h.host.status, HostStatus::Ready | HostStatus::Draining)).collect())
    }

    /// One ingest round: every ready host's new samples, in parallel. Answers how many
    /// samples were stored. `fanout` above 1 is for the benchmark (`bench/metrics.sh`):
    /// each member is sampled that many times, as targets `member/<cluster>/<name>~<k>`,
    /// so one real instance stands for many members on the whole real path.
    pub async fn metrics_collect(&self, fanout: usize) -> Result<u64> {
        let hosts = self.ready_hosts().await?;
        let members = self.watched_members().await?;
        let mut by_host: HashMap<HostId, Vec<PgTarget>> = HashMap::new();
        for w in &members {
            let layout = w.member.layout();
            for k in 0..fanout.max(1) {
                let key = member_target(w.cluster.id, &w.member.name);
                by_host.entry(w.member.host.host.id).or_default().push(PgTarget {
                    key: if k == 0 { key } else { format!("{key}~{k}") },
                    socket_dir: layout.run_dir().into(),
                    port: w.member.spec.ports.postgres,
                    db_user: sovdb_postgres::render::SUPERUSER.to_string(),
                    os_user: sovdb_postgres::OS_USER.to_string(),
                    patroni: Some(w.member.patroni_endpoint()),
                });
            }
        }
        let rounds = hosts.into_iter().map(|h| {
            let targets = by_host.remove(&h.host.id).unwrap_or_default();
            async move {
                match self.metrics_pull_host(&h, targets).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(host = %h.host.name, error = %e, "cannot pull metrics");
                        0
                    }
                }
            }
        });
        Ok(futures_util::future::join_all(rounds).await.into_iter().sum())
    }

    /// Pulls one host's new samples (until the agent has no more) and stores them with the
    /// cursor. Also the path the benchmark drives.
    pub async fn metrics_pull_host(&self, host: &HostRecord, targets: Vec<PgTarget>) -> Result<u64> {
        let client = self.agent_client(&host.host, PULL_TIMEOUT).await?;
        let mut stored = 0;
        for _ in 0..20 {
            let (epoch, after) = self.store.read().await?.metric_cursor_get(host.host.id).await?.unwrap_or_default();
            let req = MetricsPullRequest { epoch, after: after.max(0) as u64, limit: 2000, targets: targets.clone() };
            let answer = client.metrics_pull(&req).await.map_err(|e| {
                AppError::Internal(anyhow::anyhow!("pulling metrics: {}", sovdb_types::error_chain(&e)))
            })?;
            if answer.lost > 0 {
                tracing::warn!(host = %host.host.name, lost = answer.lost, "metric samples were lost before they were pulled");
            }
            let last =
                answer.samples.last().map_or(if answer.epoch == req.epoch { after } else { 0 }, |s| s.seq as i64);
            let rows: Vec<MetricRow> = answer
                .samples
                .iter()
                .map(|s| MetricRow {
                    target: if s.target.is_empty() { host_target(host.host.id) } else { s.target.clone() },
                    at: DateTime::from_timestamp_millis(s.sample.at.timestamp_millis()).unwrap_or(s.sample.at),
                    data: encode(&s.sample.values),
                })
                .collect();
            let oldest = rows.iter().map(|r| r.at).min();
            let mut tx = self.store.write().await?;
            stored += tx.metric_insert(MetricTable::Raw, &rows).await?;
            tx.metric_cursor_set(host.host.id, &answer.epoch, last).await?;
            if let Some(oldest) = oldest {
                // Late samples of minutes already rolled up: roll those minutes again.
                if let Some(mark) = tx.meta_get(ROLLED_KEY).await?.and_then(|v| v.parse::<i64>().ok()) {
                    let oldest = minute_floor(oldest).timestamp_millis();
                    if oldest < mark {
                        tx.meta_set(ROLLED_KEY, &oldest.to_string()).await?;
                    }
                }
            }
            tx.commit().await?;
            if !answer.more {
                break;
            }
        }
        Ok(stored)
    }

    /// One maintenance round: rolls up the full minutes not rolled yet, then deletes what
    /// retention no longer keeps.
    pub async fn metrics_maintain(&self, now: DateTime<Utc>, retention: MetricsRetention) -> Result<()> {
        let raw_keep = TimeDelta::from_std(retention.raw).unwrap_or(TimeDelta::days(1));
        let rollup_keep = TimeDelta::from_std(retention.rollup).unwrap_or(TimeDelta::days(14));
        let until = minute_floor(now - ROLLUP_DELAY);
        let mark = self.store.read().await?.meta_get(ROLLED_KEY).await?.and_then(|v| v.parse::<i64>().ok());
        let mut from = mark.and_then(DateTime::from_timestamp_millis).unwrap_or_else(|| minute_floor(now - raw_keep));
        from = from.max(minute_floor(now - raw_keep));
        while from < until {
            let to = (from + TimeDelta::minutes(ROLLUP_BATCH_MINUTES)).min(until);
            let rows = self.store.read().await?.metric_list(MetricTable::Raw, None, from, to).await?;
            let mut buckets: BTreeMap<(String, DateTime<Utc>), Vec<&str>> = BTreeMap::new();
            for r in &rows {
                buckets.entry((r.target.clone(), minute_floor(r.at))).or_default().push(&r.data);
            }
            let rollups: Vec<MetricRow> = buckets
                .into_iter()
                .map(|((target, at), data)| MetricRow {
                    target,
                    at,
                    data: encode_aggregate(&aggregate(data.into_iter())),
                })
                .collect();
            let mut tx = self.store.write().await?;
            tx.metric_upsert(MetricTable::Minute, &rollups).await?;
            tx.meta_set(ROLLED_KEY, &to.timestamp_millis().to_string()).await?;
            tx.commit().await?;
            from = to;
        }
        let mut tx = self.store.write().await?;
        tx.metric_prune(MetricTable::Raw, now - raw_keep).await?;
        tx.metric_prune(MetricTable::Minute, now - rollup_keep).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A cluster's metrics over a time range, bucketed by `step`.
    pub async fn cluster_metrics(&self, ctx: &Ctx, name: &str, q: &MetricsQuery) -> Result<MetricsQueryResult> {
        ctx.require(Action::MetricsRead)?;
        let now = crate::now();
        let time = |s: &Option<String>, default: DateTime<Utc>, what: &str| -> Result<DateTime<Utc>> {
            match s.as_deref() {
                None | Some("") | Some("now") => Ok(default),
                Some(s) => DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .ok()
                    .or_else(|| parse_duration_secs(s).map(|secs| now - TimeDelta::seconds(secs)))
                    .ok_or_else(|| {
                        AppError::Invalid(format!("{what} {s:?} is neither an RFC 3339 time nor a duration such as 1h"))
                    }),
            }
        };
        let from = time(&q.from, now - TimeDelta::hours(1), "from")?;
        let to = time(&q.to, now, "to")?;
        if from >= to {
            return Err(AppError::Invalid("from must be before to".into()));
        }
        let def = match q.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => Some(metric(n).ok_or_else(|| {
                AppError::Invalid(format!("no metric {n:?}; the metrics are listed in docs/monitoring.md"))
            })?),
            None => None,
        };
        let range = (to - from).num_seconds().max(1);
        let step = match q.step.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => parse_duration_secs(s)
                .filter(|s| *s > 0)
                .ok_or_else(|| AppError::Invalid(format!("step {s:?} is not a duration such as 10s or 5m")))?,
            None => (range / 120).max(10),
        };
        if range / step > MAX_POINTS {
            return Err(AppError::Invalid(format!(
                "{} points per series are too many (at most {MAX_POINTS}): ask for a larger step",
                range / step
            )));
        }
        let record = self
            .store
            .read()
            .await?
            .cluster_record(ctx.project.id, name)
            .await?
            .ok_or_else(|| AppError::not_found("cluster", name))?;
        let members = pg::members(self, record.id).await.unwrap_or_default();
        // Targets: each member, and each member's host once.
        let mut targets: BTreeMap<String, (String, String)> = BTreeMap::new();
        for m in &members {
            targets.insert(member_target(record.id, &m.name), (m.name.clone(), m.host.host.name.clone()));
            let e = targets.entry(host_target(m.host.host.id)).or_insert((String::new(), m.host.host.name.clone()));
            if !e.0.split(',').any(|n| n == m.name) {
                e.0 = if e.0.is_empty() { m.name.clone() } else { format!("{},{}", e.0, m.name) };
            }
        }
        let names: Vec<String> = targets.keys().cloned().collect();
        let raw = step < 60;
        let mut rows = Vec::new();
        {
            let mut tx = self.store.read().await?;
            if raw {
                rows = tx.metric_list(MetricTable::Raw, Some(&names), from, to).await?;
            } else {
                // Rolled minutes from the rollups, the newest (not rolled yet) from raw.
                let mark = tx
                    .meta_get(ROLLED_KEY)
                    .await?
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_millis)
                    .unwrap_or(from)
                    .clamp(from, to);
                rows.extend(tx.metric_list(MetricTable::Minute, Some(&names), from, mark).await?);
                rows.extend(tx.metric_list(MetricTable::Raw, Some(&names), mark, to).await?);
            }
        }
        // Bucket by (target, step start).
        let start = from.timestamp();
        let mut buckets: BTreeMap<(String, i64), Vec<&str>> = BTreeMap::new();
        for r in &rows {
            let t = r.at.timestamp();
            let b = start + (t - start).div_euclid(step) * step;
            buckets.entry((r.target.clone(), b)).or_default().push(&r.data);
        }
        let mut series: BTreeMap<(String, u16, String), MetricSeries> = BTreeMap::new();
        for ((target, at), data) in &buckets {
            for (d, dim, value) in aggregate(data.iter().copied()) {
                if def.is_some_and(|want| want.id != d.id) {
                    continue;
                }
                let (member, host) = targets.get(target).cloned().unwrap_or_default();
                series
                    .entry((target.clone(), d.id, dim.clone()))
                    .or_insert_with(|| MetricSeries {
                        name: d.name.to_string(),
                        kind: d.kind,
                        unit: d.unit.to_string(),
                        member,
                        host,
                        dim_label: d.dim.map(str::to_string),
                        dim,
                        points: Vec::new(),
                    })
                    .points
                    .push((*at, value));
            }
        }
        let mut series: Vec<MetricSeries> = series.into_values().collect();
        series.sort_by(|a, b| (&a.name, &a.member, &a.dim).cmp(&(&b.name, &b.member, &b.dim)));
        Ok(MetricsQueryResult {
            cluster: record.name,
            from,
            to,
            step,
            resolution: if raw { "raw".into() } else { "1m".into() },
            series,
        })
    }

    /// The clusters (with their projects) the caller may read metrics of, optionally one
    /// project's or one cluster's.
    async fn metrics_visible(
        &self,
        ctx: &Ctx,
        project: Option<&str>,
        cluster: Option<&str>,
    ) -> Result<Vec<(Project, ClusterRecord)>> {
        let mut tx = self.store.read().await?;
        let mut projects = Vec::new();
        let mut page = PageRequest { limit: 1000, after: None };
        loop {
            let batch = tx.project_list(&page).await?;
            projects.extend(batch.items);
            match batch.next_page_token {
                Some(_) => page.after = projects.last().map(|p: &Project| p.name.clone()),
                None => break,
            }
        }
        let mut out = Vec::new();
        for p in projects {
            if project.is_some_and(|want| want != p.name)
                || !Action::MetricsRead.allows(ctx.is_admin(), ctx.role_in(&p))
            {
                continue;
            }
            let mut page = PageRequest { limit: 1000, after: None };
            loop {
                let batch = tx.cluster_list(p.id, &page).await?;
                for c in &batch.items {
                    if cluster.is_some_and(|want| want != c.name) {
                        continue;
                    }
                    if let Some(r) = tx.cluster_record(p.id, &c.name).await? {
                        out.push((p.clone(), r));
                    }
                }
                match batch.next_page_token {
                    Some(_) => page.after = batch.items.last().map(|c| c.name.clone()),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// `GET /metrics`: the newest sample of every member and host the caller may see, in
    /// Prometheus' text exposition format. Hosts are shown to admins, and to others the
    /// hosts their clusters' members run on. `hosts_only`: no member metrics, and (for
    /// admins) every host.
    pub async fn prometheus_metrics(
        &self,
        ctx: &Ctx,
        project: Option<&str>,
        cluster: Option<&str>,
        hosts_only: bool,
    ) -> Result<String> {
        ctx.require(Action::MetricsRead)?;
        let visible = self.metrics_visible(ctx, project, cluster).await?;
        let mut locations: HashMap<LocationId, String> = HashMap::new();
        {
            let mut tx = self.store.read().await?;
            let page = tx.location_list(&PageRequest { limit: 1000, after: None }).await?;
            for l in page.items {
                locations.insert(l.id, l.name);
            }
        }
        // Labels per target.
        let mut labels: BTreeMap<String, Vec<(&'static str, String)>> = BTreeMap::new();
        let mut hosts: BTreeMap<HostId, HostRecord> = BTreeMap::new();
        let mut members = Vec::new();
        for (p, c) in &visible {
            for m in pg::members(self, c.id).await.unwrap_or_default() {
                hosts.insert(m.host.host.id, m.host.clone());
                members.push((p.name.clone(), c.clone(), m));
            }
        }
        let show_all_hosts = ctx.is_admin() && project.is_none() && cluster.is_none();
        if hosts_only {
            members.clear();
        }
        if show_all_hosts {
            for h in self.ready_hosts().await? {
                hosts.insert(h.host.id, h);
            }
        }
        for h in hosts.values() {
            let location = h.host.location.clone();
            labels.insert(host_target(h.host.id), vec![("host", h.host.name.clone()), ("location", location)]);
        }
        let mut targets: Vec<String> = labels.keys().cloned().collect();
        for (_, c, m) in &members {
            targets.push(member_target(c.id, &m.name));
        }
        let now = crate::now();
        let rows =
            self.store.read().await?.metric_list(MetricTable::Raw, Some(&targets), now - FRESH, now + FRESH).await?;
        let mut latest: HashMap<&str, &MetricRow> = HashMap::new();
        for r in &rows {
            latest.insert(&r.target, r);
        }
        for (project, c, m) in &members {
            let target = member_target(c.id, &m.name);
            let primary = latest
                .get(target.as_str())
                .and_then(|r| decode(&r.data).into_iter().find(|(d, _, _)| d.name == "patroni_primary").map(|v| v.2));
            let role = match primary {
                Some(v) if v >= 1.0 => "primary",
                Some(_) => "replica",
                None => "unknown",
            };
            labels.insert(
                target,
                vec![
                    ("project", project.clone()),
                    ("cluster", c.name.clone()),
                    ("member", m.name.clone()),
                    ("role", role.to_string()),
                    ("location", locations.get(&c.location_id).cloned().unwrap_or_default()),
                    ("host", m.host.host.name.clone()),
                ],
            );
        }
        // Group lines by metric for one HELP/TYPE each.
        let mut lines: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (target, base) in &labels {
            let Some(r) = latest.get(target.as_str()) else { continue };
            for (d, dim, value) in decode(&r.data) {
                let mut l = base.clone();
                if let (Some(label), false) = (d.dim, dim.is_empty()) {
                    l.push((label, dim));
                }
                lines.entry(d.id).or_default().push(format!(
                    "sovdb_{}{} {}",
                    d.name,
                    render_labels(&l),
                    prom_value(value)
                ));
            }
            if target.starts_with("member/") {
                lines.entry(0).or_default().push(format!("sovdb_member_info{} 1", render_labels(base)));
            }
        }
        let mut out = String::new();
        if let Some(info) = lines.remove(&0) {
            out.push_str(
                "# HELP sovdb_member_info A cluster member, with its project, cluster, role, location and host.\n",
            );
            out.push_str("# TYPE sovdb_member_info gauge\n");
            for l in info {
                out.push_str(&l);
                out.push('\n');
            }
        }
        for d in CATALOGUE {
            let Some(ls) = lines.get(&d.id) else { continue };
            let kind = match d.kind {
                MetricKind::Gauge => "gauge",
                MetricKind::Counter => "counter",
            };
            let _ = writeln!(out, "# HELP sovdb_{} {}", d.name, d.help);
            let _ = writeln!(out, "# TYPE sovdb_{} {kind}", d.name);
            for l in ls {
                out.push_str(l);
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Prometheus' HTTP service discovery: one target per cluster the caller may read
    /// (scraped as `/metrics?project=P&cluster=C` from `address`), and for admins one for
    /// the hosts.
    pub async fn prometheus_targets(&self, ctx: &Ctx, address: &str) -> Result<Vec<PrometheusTargetGroup>> {
        ctx.require(Action::MetricsRead)?;
        let visible = self.metrics_visible(ctx, None, None).await?;
        let mut locations: HashMap<LocationId, String> = HashMap::new();
        let page = self.store.read().await?.location_list(&PageRequest { limit: 1000, after: None }).await?;
        for l in page.items {
            locations.insert(l.id, l.name);
        }
        let mut out: Vec<PrometheusTargetGroup> = visible
            .iter()
            .map(|(p, c)| PrometheusTargetGroup {
                targets: vec![address.to_string()],
                // Every group is the same server: its own `instance`, or their `up` and
                // host series would be one series.
                labels: BTreeMap::from([
                    ("instance".to_string(), format!("{address}/{}/{}", p.name, c.name)),
                    ("__metrics_path__".to_string(), "/metrics".to_string()),
                    ("__param_project".to_string(), p.name.clone()),
                    ("__param_cluster".to_string(), c.name.clone()),
                    ("__meta_sovdb_project".to_string(), p.name.clone()),
                    ("__meta_sovdb_cluster".to_string(), c.name.clone()),
                    ("__meta_sovdb_location".to_string(), locations.get(&c.location_id).cloned().unwrap_or_default()),
                ]),
            })
            .collect();
        if ctx.is_admin() {
            out.push(PrometheusTargetGroup {
                targets: vec![address.to_string()],
                labels: BTreeMap::from([
                    ("instance".to_string(), format!("{address}/hosts")),
                    ("__metrics_path__".to_string(), "/metrics".to_string()),
                    ("__param_scope".to_string(), "hosts".to_string()),
                ]),
            });
        }
        Ok(out)
    }
}

/// `{a="x",b="y"}` with Prometheus' escapes.
fn render_labels(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn prom_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, dim: &str, value: f64) -> MetricValue {
        MetricValue { name: name.into(), dim: dim.into(), value }
    }

    #[test]
    fn samples_encode_compactly_and_decode_back() {
        let values = vec![
            v("host_cpu_busy_ratio", "", 0.25),
            v("host_disk_free_bytes", "/var/a;b=c:d%", 1e12),
            v("no_such_metric", "", 1.0),
            v("pg_xact_commit_total", "", 12345.0),
        ];
        let data = encode(&values);
        assert_eq!(data, "1=0.25;6:/var/a%3Bb%3Dc%3Ad%25=1000000000000;24=12345");
        let back: Vec<(&str, String, f64)> = decode(&data).into_iter().map(|(d, dim, v)| (d.name, dim, v)).collect();
        assert_eq!(
            back,
            vec![
                ("host_cpu_busy_ratio", String::new(), 0.25),
                ("host_disk_free_bytes", "/var/a;b=c:d%".to_string(), 1e12),
                ("pg_xact_commit_total", String::new(), 12345.0)
            ]
        );
    }

    #[test]
    fn gauges_roll_up_to_their_mean_and_counters_to_their_last_value() {
        let a = encode(&[v("pg_commits_per_second", "", 10.0), v("pg_xact_commit_total", "", 100.0)]);
        let b = encode(&[v("pg_commits_per_second", "", 20.0), v("pg_xact_commit_total", "", 300.0)]);
        let c = encode(&[v("pg_commits_per_second", "", 30.0), v("pg_xact_commit_total", "", 600.0)]);
        let got: Vec<(&str, f64)> = aggregate([a.as_str(), b.as_str(), c.as_str()].into_iter())
            .into_iter()
            .map(|(d, _, v)| (d.name, v))
            .collect();
        assert_eq!(got, vec![("pg_commits_per_second", 20.0), ("pg_xact_commit_total", 600.0)]);
    }

    /// The maintenance round over a real (SQLite) store: full minutes rolled up, the
    /// newest left for later, raw samples pruned by retention, and a second round idle.
    #[tokio::test]
    async fn maintenance_rolls_up_full_minutes_and_prunes_by_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = sovdb_store::open(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
        let config = crate::AppConfig {
            local_hosts_dir: dir.path().join("hosts"),
            agent_exe: dir.path().join("no-agent"),
            port_range: 20000..=29999,
            failpoints: sovdb_operations::Failpoints::none(),
            internal_cert_validity: crate::DEFAULT_INTERNAL_CERT_VALIDITY,
        };
        let app = App::new(store.clone(), config);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |secs_ago: i64| now - TimeDelta::seconds(secs_ago);
        let row = |secs_ago: i64, rate: f64, total: f64| MetricRow {
            target: "member/c/m-1".into(),
            at: at(secs_ago),
            data: encode(&[v("pg_commits_per_second", "", rate), v("pg_xact_commit_total", "", total)]),
        };
        // One minute 5 minutes back (three samples), one being written now, one too old.
        let five = minute_floor(at(300));
        let rows: Vec<MetricRow> = [0, 10, 20]
            .into_iter()
            .zip([(10.0, 100.0), (20.0, 300.0), (60.0, 900.0)])
            .map(|(s, (r, t))| MetricRow { at: five + TimeDelta::seconds(s), ..row(0, r, t) })
            .chain([row(1, 5.0, 1000.0), row(2 * 86400, 1.0, 1.0)])
            .collect();
        let mut tx = store.write().await.unwrap();
        tx.metric_insert(MetricTable::Raw, &rows).await.unwrap();
        tx.commit().await.unwrap();

        let retention = MetricsRetention::default();
        app.metrics_maintain(now, retention).await.unwrap();
        let mut tx = store.read().await.unwrap();
        let rolled = tx.metric_list(MetricTable::Minute, None, at(3 * 86400), now).await.unwrap();
        assert_eq!(rolled.len(), 1, "only the full minute old enough: {rolled:?}");
        assert_eq!(rolled[0].at, five);
        let got: Vec<(&str, f64)> = decode(&rolled[0].data).into_iter().map(|(d, _, v)| (d.name, v)).collect();
        assert_eq!(got, vec![("pg_commits_per_second", 30.0), ("pg_xact_commit_total", 900.0)]);
        let raw = tx.metric_list(MetricTable::Raw, None, at(3 * 86400), now + TimeDelta::seconds(1)).await.unwrap();
        assert_eq!(raw.len(), 4, "the sample older than 24 h is gone");
        let mark = tx.meta_get(ROLLED_KEY).await.unwrap().unwrap();
        assert_eq!(mark, minute_floor(now - ROLLUP_DELAY).timestamp_millis().to_string());
        drop(tx);
        // Again: nothing new to roll, nothing changes.
        app.metrics_maintain(now, retention).await.unwrap();
        let mut tx = store.read().await.unwrap();
        assert_eq!(tx.metric_list(MetricTable::Minute, None, at(3 * 86400), now).await.unwrap(), rolled);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(render_labels(&[("a", "x\"y\\z\n".into()), ("b", "1".into())]), "{a=\"x\\\"y\\\\z\\n\",b=\"1\"}");
        assert_eq!(render_labels(&[]), "");
        assert_eq!(minute_floor(DateTime::from_timestamp_millis(125_500).unwrap()).timestamp_millis(), 120_000);
    }
}

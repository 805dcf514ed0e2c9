//! The metrics collector: every interval (10 s by default) a sample of the host and of
//! every PostgreSQL instance the control plane asked for, into a bounded buffer that the
//! control plane drains with `metrics/pull` and a cursor. A pull's cursor acknowledges
//! the samples up to it: they are dropped from the buffer.
//!
//! Sampling does not depend on pulls: while the control plane is away (restarting, a
//! network blip) samples wait here, up to [`SAMPLES_PER_TARGET`] per target (an hour);
//! past that the oldest go, and the next pull says how many were lost. The buffer lives
//! in memory only: an agent restart starts a new epoch with an empty buffer.
//!
//! PostgreSQL is read over its Unix socket with `psql`, run as the database's system user
//! so that peer authentication lets it in as the superuser: no password exists for the
//! agent to hold, and nothing listens on the network for it. The query only reads
//! statistics views. One `psql` per instance stays running between rounds (a session:
//! one process and one connection, not one per sample); a session that fails or is slow
//! is killed and started again next round. Patroni's role and timeline come from its REST API's `GET /patroni`
//! over HTTPS, verified against the installation CA (read-only endpoints need no
//! password). Rates are computed here from two consecutive readings of the counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sovdb_types::{MetricSample, MetricValue};

use crate::host::{cpu_times, CpuTimes};
use crate::proto::{AgentSample, MetricsPullRequest, MetricsPullResponse, PgTarget};

/// How many samples per target the buffer keeps (an hour at the default interval).
pub(crate) const SAMPLES_PER_TARGET: usize = 360;
/// The buffer never holds more than this, however many targets there are.
const MAX_SAMPLES: usize = 200_000;
/// How many instances are sampled at once.
const PARALLEL: usize = 8;
/// How long one instance's sampling may take.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(8);
/// The largest pull.
const MAX_PULL: usize = 10_000;
/// Field separator of psql's output (a character no value holds).
const SEP: char = '\u{1f}';

/// The statistics query: `kind, dim, value` rows. Only statistics views and functions.
const QUERY: &str = "\
SELECT 'conn', COALESCE(state, 'unknown'), count(*)::float8 FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 2
UNION ALL SELECT 'commit', '', COALESCE(sum(xact_commit), 0)::float8 FROM pg_stat_database
UNION ALL SELECT 'rollback', '', COALESCE(sum(xact_rollback), 0)::float8 FROM pg_stat_database
UNION ALL SELECT 'deadlocks', '', COALESCE(sum(deadlocks), 0)::float8 FROM pg_stat_database
UNION ALL SELECT 'blks_hit', '', COALESCE(sum(blks_hit), 0)::float8 FROM pg_stat_database
UNION ALL SELECT 'blks_read', '', COALESCE(sum(blks_read), 0)::float8 FROM pg_stat_database
UNION ALL SELECT 'dbsize', datname, pg_database_size(oid)::float8 FROM pg_database WHERE datallowconn
UNION ALL SELECT 'oldest_xact', '', COALESCE(EXTRACT(EPOCH FROM max(now() - xact_start)), 0)::float8 FROM pg_stat_activity WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid()
UNION ALL SELECT 'wal', '', CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0) ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') END::float8
UNION ALL SELECT 'lag_bytes', application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 FROM pg_stat_replication WHERE NOT pg_is_in_recovery() AND replay_lsn IS NOT NULL AND application_name NOT LIKE 'pg_basebackup%'
UNION ALL SELECT 'lag_seconds', application_name, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication WHERE replay_lsn IS NOT NULL AND application_name NOT LIKE 'pg_basebackup%'
UNION ALL SELECT 'up', '', 1::float8;
";
/// The line a session prints after each round's query: the end of the round's answer.
const END: &str = "__sovdb_metrics_end__";

/// The collector: its buffer, its targets and what rates need of the previous round.
pub(crate) struct Collector {
    epoch: String,
    interval: Duration,
    state: Mutex<State>,
    patroni: Option<reqwest::Client>,
    /// The running psql session of each target, used by one round's task at a time.
    sessions: Mutex<HashMap<String, Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

#[derive(Default)]
struct State {
    buffer: VecDeque<AgentSample>,
    next_seq: u64,
    targets: Vec<PgTarget>,
    /// The previous readings of counters, per target ("" is the host).
    previous: HashMap<String, Counters>,
}

/// Counters at one moment, for rates.
#[derive(Clone, Default)]
struct Counters {
    at: Option<Instant>,
    cpu: Option<CpuTimes>,
    values: BTreeMap<String, f64>,
}

impl Collector {
    /// A collector sampling every `interval`; Patroni is reached trusting `ca_pem`.
    pub(crate) fn new(interval: Duration, ca_pem: &[u8]) -> Collector {
        let patroni = crate::tls::roots(ca_pem).ok().and_then(|roots| {
            let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()
        });
        Collector {
            epoch: format!("{:016x}", rand::random::<u64>()),
            interval,
            state: Mutex::new(State { next_seq: 1, ..State::default() }),
            patroni,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Samples forever, one round per interval (a slow round delays the next, never
    /// overlaps it).
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    /// One round: the host, then every target (a few at a time).
    pub(crate) async fn round(&self) {
        let targets = self.lock().targets.clone();
        let host = self.host_sample();
        self.push("", host);
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        for t in targets {
            let limit = limit.clone();
            let patroni = self.patroni.clone();
            let slot =
                self.sessions.lock().unwrap_or_else(|p| p.into_inner()).entry(t.key.clone()).or_default().clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let mut session = slot.lock().await;
                let read =
                    tokio::time::timeout(SAMPLE_TIMEOUT, read_instance(&t, &mut session, patroni.as_ref())).await;
                if read.is_err() {
                    // Too slow: the session may be stuck mid-answer; start afresh next round.
                    *session = None;
                }
                (t.key, read.unwrap_or_default())
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((key, reading)) = done {
                let sample = self.instance_sample(&key, reading);
                self.push(&key, sample);
            }
        }
    }

    fn push(&self, target: &str, sample: MetricSample) {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.buffer.push_back(AgentSample { seq, target: target.to_owned(), sample });
        let capacity = (SAMPLES_PER_TARGET * (s.targets.len() + 1)).min(MAX_SAMPLES);
        while s.buffer.len() > capacity {
            s.buffer.pop_front();
        }
    }

    /// Stops watching the instances whose socket is under `dir` and ends their psql
    /// sessions now: called before `dir` is removed, so that no session of a deleted
    /// member lingers until the next pull.
    pub(crate) async fn forget_under(&self, dir: &std::path::Path) {
        let gone: Vec<String> = {
            let mut s = self.lock();
            let gone = s.targets.iter().filter(|t| t.socket_dir.starts_with(dir)).map(|t| t.key.clone()).collect();
            s.targets.retain(|t| !t.socket_dir.starts_with(dir));
            gone
        };
        let slots: Vec<Slot> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            gone.iter().filter_map(|k| sessions.remove(k)).collect()
        };
        for slot in slots {
            // Waits for a round still reading it; the psql is killed on drop.
            *slot.lock().await = None;
        }
    }

    /// Answers a pull and takes its targets as the new list.
    pub(crate) fn pull(&self, req: MetricsPullRequest) -> MetricsPullResponse {
        let mut s = self.lock();
        let mut targets = req.targets;
        targets.sort_by(|a, b| a.key.cmp(&b.key));
        targets.dedup_by(|a, b| a.key == b.key);
        let keys: std::collections::HashSet<&str> = targets.iter().map(|t| t.key.as_str()).collect();
        s.previous.retain(|k, _| k.is_empty() || keys.contains(k.as_str()));
        // Sessions of targets no longer watched end (their psql is killed on drop).
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keys.contains(k.as_str()));
        s.targets = targets;
        let after = if req.epoch == self.epoch { req.after } else { 0 };
        // What the caller has is stored: it need not be kept any longer.
        while s.buffer.front().is_some_and(|f| f.seq <= after) {
            s.buffer.pop_front();
        }
        let first = s.buffer.front().map_or(s.next_seq, |f| f.seq);
        let lost = first.saturating_sub(after + 1).min(s.next_seq.saturating_sub(after + 1));
        let limit = req.limit.clamp(1, MAX_PULL);
        let mut samples: Vec<AgentSample> =
            s.buffer.iter().filter(|x| x.seq > after).take(limit + 1).cloned().collect();
        let more = samples.len() > limit;
        samples.truncate(limit);
        MetricsPullResponse {
            epoch: self.epoch.clone(),
            samples,
            more,
            lost: if req.epoch == self.epoch { lost } else { 0 },
            interval_secs: self.interval.as_secs(),
        }
    }

    fn host_sample(&self) -> MetricSample {
        let now = Instant::now();
        let cpu = cpu_times();
        let mut current = Counters { at: Some(now), cpu, values: BTreeMap::new() };
        for (device, read, written) in diskstats() {
            current.values.insert(format!("r/{device}"), read);
            current.values.insert(format!("w/{device}"), written);
        }
        for n in crate::host::net_counters().into_iter().filter(|n| n.interface != "lo") {
            current.values.insert(format!("rx/{}", n.interface), n.rx_bytes as f64);
            current.values.insert(format!("tx/{}", n.interface), n.tx_bytes as f64);
        }
        let previous = self.lock().previous.insert(String::new(), current.clone()).unwrap_or_default();
        let mut v = Values::default();
        if let (Some(b), Some(a)) = (previous.cpu, cpu) {
            v.put("host_cpu_busy_ratio", "", a.busy_ratio_since(&b));
        }
        if let Some((l1, _, _)) = crate::host::loadavg() {
            v.put("host_load1", "", l1);
        }
        if let Some(t) = crate::host::meminfo("MemTotal:") {
            v.put("host_memory_total_bytes", "", t as f64);
        }
        if let Some(a) = crate::host::meminfo("MemAvailable:") {
            v.put("host_memory_available_bytes", "", a as f64);
        }
        for d in crate::host::disks() {
            v.put("host_disk_total_bytes", &d.mount, d.total_bytes as f64);
            v.put("host_disk_free_bytes", &d.mount, d.free_bytes as f64);
        }
        let rates = [
            ("r/", "host_disk_read_bytes_per_second"),
            ("w/", "host_disk_written_bytes_per_second"),
            ("rx/", "host_network_receive_bytes_per_second"),
            ("tx/", "host_network_transmit_bytes_per_second"),
        ];
        for (key, value) in &current.values {
            for (prefix, name) in rates {
                if let Some(dim) = key.strip_prefix(prefix) {
                    if let Some(r) = rate(&previous, &current, key, *value) {
                        v.put(name, dim, r);
                    }
                }
            }
        }
        v.sample()
    }

    fn instance_sample(&self, key: &str, r: Reading) -> MetricSample {
        let mut v = Values::default();
        v.put("pg_up", "", if r.up { 1.0 } else { 0.0 });
        if let Some(p) = &r.patroni {
            v.put("patroni_primary", "", if p.primary { 1.0 } else { 0.0 });
            v.put("patroni_running", "", if p.running { 1.0 } else { 0.0 });
            if let Some(tl) = p.timeline {
                v.put("patroni_timeline", "", tl as f64);
            }
        }
        if !r.up {
            self.lock().previous.remove(key);
            return v.sample();
        }
        let mut current = Counters { at: Some(Instant::now()), cpu: None, values: BTreeMap::new() };
        for (kind, dim, value) in &r.rows {
            match kind.as_str() {
                "conn" => v.put("pg_connections", dim, *value),
                "dbsize" => v.put("pg_database_size_bytes", dim, *value),
                "oldest_xact" => v.put("pg_oldest_transaction_age_seconds", "", *value),
                "lag_bytes" => v.put("pg_replication_lag_bytes", dim, value.max(0.0)),
                "lag_seconds" => v.put("pg_replication_lag_seconds", dim, *value),
                "commit" | "rollback" | "deadlocks" | "blks_hit" | "blks_read" | "wal" => {
                    current.values.insert(kind.clone(), *value);
                }
                _ => {}
            }
        }
        let get = |k: &str| current.values.get(k).copied();
        if let Some(c) = get("commit") {
            v.put("pg_xact_commit_total", "", c);
        }
        if let Some(c) = get("rollback") {
            v.put("pg_xact_rollback_total", "", c);
        }
        if let Some(c) = get("deadlocks") {
            v.put("pg_deadlocks_total", "", c);
        }
        if let Some(c) = get("wal") {
            v.put("pg_wal_position_bytes", "", c);
        }
        let previous = self.lock().previous.insert(key.to_owned(), current.clone()).unwrap_or_default();
        for (counter, name) in [
            ("commit", "pg_commits_per_second"),
            ("rollback", "pg_rollbacks_per_second"),
            ("wal", "pg_wal_bytes_per_second"),
        ] {
            if let Some(value) = get(counter) {
                if let Some(r) = rate(&previous, &current, counter, value) {
                    v.put(name, "", r);
                }
            }
        }
        // The hit ratio over the interval; since the start when there is no previous reading.
        if let (Some(hit), Some(read)) = (get("blks_hit"), get("blks_read")) {
            let (dh, dr) = match (previous.values.get("blks_hit"), previous.values.get("blks_read")) {
                (Some(ph), Some(pr)) if hit >= *ph && read >= *pr => (hit - ph, read - pr),
                _ => (hit, read),
            };
            if dh + dr > 0.0 {
                v.put("pg_cache_hit_ratio", "", dh / (dh + dr));
            }
        }
        v.sample()
    }
}

/// Per second between two readings; none after a reset (the counter went down).
fn rate(previous: &Counters, current: &Counters, key: &str, value: f64) -> Option<f64> {
    let before = *previous.values.get(key)?;
    let secs = current.at?.checked_duration_since(previous.at?)?.as_secs_f64();
    (value >= before && secs > 0.0).then(|| (value - before) / secs)
}

#[derive(Default)]
struct Values(Vec<MetricValue>);

impl Values {
    fn put(&mut self, name: &str, dim: &str, value: f64) {
        if value.is_finite() {
            self.0.push(MetricValue { name: name.to_owned(), dim: dim.to_owned(), value });
        }
    }
    fn sample(self) -> MetricSample {
        MetricSample { at: Utc::now(), values: self.0 }
    }
}

/// What one round read of an instance.
#[derive(Default)]
struct Reading {
    up: bool,
    rows: Vec<(String, String, f64)>,
    patroni: Option<PatroniState>,
}

struct PatroniState {
    primary: bool,
    running: bool,
    timeline: Option<i64>,
}

async fn read_instance(t: &PgTarget, session: &mut Option<Session>, patroni: Option<&reqwest::Client>) -> Reading {
    let (rows, patroni) = tokio::join!(query(t, session), patroni_state(t, patroni));
    match rows {
        Ok(rows) => Reading { up: rows.iter().any(|(k, _, _)| k == "up"), rows, patroni },
        Err(why) => {
            tracing::debug!(target = %t.key, error = %why, "cannot sample the instance");
            *session = None;
            Reading { up: false, rows: Vec::new(), patroni }
        }
    }
}

/// A running `psql` connected to one instance, reading queries from its standard input.
pub(crate) struct Session {
    target: PgTarget,
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Session {
    fn start(t: &PgTarget) -> Result<Session, String> {
        let run_as = crate::sys::RunAs::resolve(&t.os_user)?;
        run_as.check_permitted()?;
        let mut extra = BTreeMap::new();
        extra.insert("PGCONNECT_TIMEOUT".to_owned(), "3".to_owned());
        extra.insert("PGAPPNAME".to_owned(), "sovdb-agent-metrics".to_owned());
        let mut cmd = tokio::process::Command::new("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-F", &SEP.to_string(), "-h"])
            .arg(&t.socket_dir)
            .args(["-p", &t.port.to_string(), "-U", &t.db_user, "-d", "postgres", "-f", "-"])
            .env_clear()
            .envs(crate::sys::program_env(Some(&run_as), &extra))
            .current_dir("/")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: become_user makes only async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || run_as.become_user()) };
        let mut child = cmd.spawn().map_err(|e| format!("cannot start psql: {e}"))?;
        let stdin = child.stdin.take().ok_or("psql has no standard input")?;
        let stdout = child.stdout.take().ok_or("psql has no standard output")?;
        Ok(Session {
            target: t.clone(),
            _child: child,
            stdin,
            stdout: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        })
    }
}

async fn query(t: &PgTarget, session: &mut Option<Session>) -> Result<Vec<(String, String, f64)>, String> {
    use tokio::io::AsyncWriteExt as _;
    if session.as_ref().is_some_and(|s| s.target != *t) {
        *session = None;
    }
    if session.is_none() {
        let mut s = Session::start(t)?;
        s.stdin.write_all(b"SET statement_timeout = '5s';\n").await.map_err(|e| format!("psql: {e}"))?;
        *session = Some(s);
    }
    let s = session.as_mut().expect("just started");
    s.stdin.write_all(format!("{QUERY}\\echo {END}\n").as_bytes()).await.map_err(|e| format!("psql ended: {e}"))?;
    let mut text = String::new();
    loop {
        match s.stdout.next_line().await {
            Ok(Some(line)) if line == END => break,
            Ok(Some(line)) => {
                text.push_str(&line);
                text.push('\n');
            }
            Ok(None) => return Err("psql ended (the instance is down or refused the connection)".into()),
            Err(e) => return Err(format!("cannot read psql's answer: {e}")),
        }
    }
    Ok(parse_rows(&text))
}

fn parse_rows(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(SEP);
            let (kind, dim, value) = (f.next()?, f.next()?, f.next()?);
            Some((kind.to_owned(), dim.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn patroni_state(t: &PgTarget, http: Option<&reqwest::Client>) -> Option<PatroniState> {
    let (http, addr) = (http?, t.patroni.as_ref()?);
    let v: serde_json::Value = http.get(format!("https://{addr}/patroni")).send().await.ok()?.json().await.ok()?;
    let role = v.get("role")?.as_str()?;
    Some(PatroniState {
        primary: matches!(role, "master" | "primary"),
        running: v.get("state").and_then(|s| s.as_str()) == Some("running"),
        timeline: v.get("timeline").and_then(|t| t.as_i64()),
    })
}

/// Bytes read and written since boot per whole block device (not partitions, loop or
/// RAM devices), from `/proc/diskstats` (sectors of 512 bytes).
fn diskstats() -> Vec<(String, f64, f64)> {
    let Ok(text) = std::fs::read_to_string("/proc/diskstats") else { return Vec::new() };
    parse_diskstats(&text)
        .into_iter()
        .filter(|(d, _, _)| !d.starts_with("loop") && !d.starts_with("ram") && Path::new("/sys/block").join(d).exists())
        .collect()
}

fn parse_diskstats(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let read: f64 = f.get(5)?.parse().ok()?;
            let written: f64 = f.get(9)?.parse().ok()?;
            Some((f.get(2)?.to_string(), read * 512.0, written * 512.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_rows_and_diskstats_parse() {
        let rows = parse_rows("conn\u{1f}active\u{1f}3\ncommit\u{1f}\u{1f}120\nbad line\nlag_bytes\u{1f}db-2\u{1f}x\n");
        assert_eq!(rows, vec![("conn".into(), "active".into(), 3.0), ("commit".into(), "".into(), 120.0)]);
        let d = parse_diskstats("   8       0 sda 100 0 2000 0 50 0 4000 0 0 0 0\n");
        assert_eq!(d, vec![("sda".to_string(), 2000.0 * 512.0, 4000.0 * 512.0)]);
    }

    #[test]
    fn rates_need_two_readings_and_no_reset() {
        let t0 = Instant::now();
        let mut a = Counters { at: Some(t0), ..Counters::default() };
        a.values.insert("c".into(), 100.0);
        let mut b = Counters { at: Some(t0 + Duration::from_secs(10)), ..Counters::default() };
        b.values.insert("c".into(), 150.0);
        assert_eq!(rate(&a, &b, "c", 150.0), Some(5.0));
        assert_eq!(rate(&Counters::default(), &b, "c", 150.0), None);
        assert_eq!(rate(&a, &b, "c", 50.0), None, "a counter that went down was reset");
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_and_the_cursor_resumes() {
        let c = Collector::new(Duration::from_secs(10), b"");
        for _ in 0..SAMPLES_PER_TARGET + 5 {
            c.push("", MetricSample { at: Utc::now(), values: vec![] });
        }
        let first = c.pull(MetricsPullRequest { epoch: String::new(), after: 0, limit: 10, targets: vec![] });
        assert_eq!(first.samples.len(), 10);
        assert!(first.more);
        assert_eq!(first.samples[0].seq, 6, "the five oldest were dropped");
        let epoch = first.epoch.clone();
        let lost = c.pull(MetricsPullRequest { epoch: epoch.clone(), after: 2, limit: 1, targets: vec![] });
        assert_eq!(lost.lost, 3, "samples 3, 4 and 5 went before they were pulled");
        let next = c.pull(MetricsPullRequest { epoch: epoch.clone(), after: 15, limit: 2000, targets: vec![] });
        assert_eq!(next.samples.first().map(|s| s.seq), Some(16));
        assert_eq!(next.lost, 0);
        assert!(!next.more);
        // Acknowledged samples are gone; a caller of another epoch starts after them.
        assert_eq!(c.lock().buffer.front().map(|s| s.seq), Some(16));
        let fresh = c.pull(MetricsPullRequest { epoch: "other".into(), after: 0, limit: 2000, targets: vec![] });
        assert_eq!(fresh.samples.first().map(|s| s.seq), Some(16));
        assert_eq!(fresh.epoch, epoch);
    }
}

//! A cluster's logs: PostgreSQL's and Patroni's lines of its members, read through the
//! agents (`read_log`, whose cursor survives rotation), once or followed; and forwarding
//! the same logs to a syslog server per location, done by the agents themselves.
//!
//! Logs can hold SQL text with its literals (failing statements, `log_statement`), so
//! reading them is an action of its own ([`Action::ClusterLogs`], developer and up, not
//! viewer) and every read is audited (`cluster.logs`), as other secret-ish reads are.
//!
//! Syslog forwarding: a location's target (`tcp://HOST:PORT`) is kept in the store
//! (`meta` key `syslog/<location id>`); a level-triggered loop ([`App::syslog_reconcile`])
//! writes each ready host of the location the list of its members' logs
//! (`<base dir>/agent/syslog.json`, see `sovdb_agent::proto::SyslogConfig`) whenever
//! that list changes. The agent forwards from that file alone, so forwarding goes on
//! while the control plane is down; a member placed or removed is picked up within a
//! round of the loop.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sovdb_agent::proto::{LogCursor, LogFile, ReadLogRequest, SyslogConfig, SyslogSource, WriteFileRequest};
use sovdb_store::HostRecord;
use sovdb_types::*;

use crate::rbac::Action;
use crate::workflows::pg;
use crate::{App, AppError, Ctx, Result};

/// How long one read through an agent may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How much one read of one log returns.
const READ_BYTES: u64 = 1 << 20;
/// The most lines of each log a first read answers.
pub const MAX_LINES: u32 = 10_000;
/// Lines of each log a first read answers when not told.
pub const DEFAULT_LINES: u32 = 100;

/// What `GET /clusters/{name}/logs` reads.
#[derive(Debug, Clone, Default)]
pub struct LogsQuery {
    /// Only this member's (default: every member's).
    pub member: Option<String>,
    /// Only lines stamped at or after this time (the first read looks back up to
    /// [`MAX_LINES`] lines of each log).
    pub since: Option<DateTime<Utc>>,
    /// How many of the last lines of each log the first read answers (without `since`).
    pub lines: Option<u32>,
    /// Whether the caller will follow (only recorded in the audit log).
    pub follow: bool,
}

/// One log of one member, and where its reader stands.
struct Reader {
    member: String,
    source: &'static str,
    host: HostRecord,
    file: LogFile,
    cursor: Option<LogCursor>,
    /// Why the last read failed, so a failure is said once, not every round.
    failing: Option<String>,
}

/// A cluster's logs being read: [`LogStream::next`] answers the first lines, then on
/// each later call the lines written since.
pub struct LogStream {
    app: App,
    readers: Vec<Reader>,
    since: Option<DateTime<Utc>>,
    lines: u32,
    first: bool,
}

impl App {
    /// Opens a cluster's logs for reading (checked and audited here, once).
    pub async fn cluster_logs(&self, ctx: &Ctx, name: &str, q: &LogsQuery) -> Result<LogStream> {
        ctx.require(Action::ClusterLogs)?;
        let lines = q.lines.unwrap_or(DEFAULT_LINES);
        if lines > MAX_LINES {
            return Err(AppError::Invalid(format!("lines must be at most {MAX_LINES} (got {lines})")));
        }
        let (_, _, _, members) = self.cluster_parts(ctx, name).await?;
        let members: Vec<pg::Member> = match &q.member {
            Some(m) => {
                let found: Vec<_> = members.into_iter().filter(|x| &x.name == m).collect();
                if found.is_empty() {
                    return Err(AppError::not_found("member", m));
                }
                found
            }
            None => members,
        };
        if members.is_empty() {
            return Err(AppError::Conflict(format!(
                "cluster {name:?} has no members yet: wait for its create to finish"
            )));
        }
        let mut tx = self.store.write().await?;
        tx.audit_append(&ctx.audit(
            "cluster.logs",
            format!("cluster/{name}"),
            serde_json::json!({"member": q.member, "since": q.since, "follow": q.follow}),
        ))
        .await?;
        tx.commit().await?;
        let readers = members
            .iter()
            .flat_map(|m| {
                sources(m).into_iter().map(|(source, file)| Reader {
                    member: m.name.clone(),
                    source,
                    host: m.host.clone(),
                    file,
                    cursor: None,
                    failing: None,
                })
            })
            .collect();
        Ok(LogStream { app: self.clone(), readers, since: q.since, lines, first: true })
    }
}

/// The logs of a member: PostgreSQL's current file and Patroni's.
fn sources(m: &pg::Member) -> [(&'static str, LogFile); 2] {
    let layout = m.layout();
    [
        ("postgresql", LogFile::Postgres { data_dir: layout.data().into() }),
        ("patroni", LogFile::File { path: format!("{}/patroni.log", layout.patroni_log_dir()).into() }),
    ]
}

impl LogStream {
    /// The first read: the last lines of each log (or those since `since`); later reads:
    /// the lines written since the previous one. A log that can't be read is said once
    /// as a line of source `sovdb`, and read again next time.
    pub async fn next(&mut self) -> Vec<LogLine> {
        let first = std::mem::replace(&mut self.first, false);
        let tail = if self.since.is_some() { MAX_LINES } else { self.lines };
        let app = &self.app;
        let reads = self.readers.iter_mut().map(|r| async move {
            let req = ReadLogRequest {
                file: r.file.clone(),
                cursor: r.cursor,
                tail: if first { tail } else { 0 },
                max_bytes: READ_BYTES,
            };
            let answer = match app.agent_client(&r.host.host, READ_TIMEOUT).await {
                Ok(client) => client.read_log(&req).await.map_err(|e| error_chain(&e)),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(read) => {
                    r.failing = None;
                    if read.cursor.is_some() {
                        r.cursor = read.cursor;
                    }
                    (r, read.lines)
                }
                Err(why) => {
                    let said = r.failing.replace(why.clone()).is_some();
                    let lines = if said {
                        Vec::new()
                    } else {
                        vec![format!("can't read the {} log on host {}: {why}", r.source, r.host.host.name)]
                    };
                    (r, lines.into_iter().map(|l| format!("\u{0}{l}")).collect())
                }
            }
        });
        let mut out = Vec::new();
        for (r, lines) in futures_util::future::join_all(reads).await {
            let keep = match (first, self.since) {
                (true, Some(since)) => stamped_since(&lines, since),
                _ => vec![true; lines.len()],
            };
            for (line, keep) in lines.into_iter().zip(keep) {
                if !keep {
                    continue;
                }
                // A NUL marks what sovdb says about the stream (a log never holds one).
                let (source, line) = match line.strip_prefix('\u{0}') {
                    Some(l) => ("sovdb".to_string(), l.to_string()),
                    None => (r.source.to_string(), line),
                };
                out.push(LogLine { member: r.member.clone(), source, line });
            }
        }
        out
    }
}

/// Which lines are stamped at or after `since`: a line that starts with a timestamp
/// (`2026-01-31 12:00:00`, as PostgreSQL's and Patroni's do, in UTC) decides for itself;
/// a line without one (the rest of a multi-line statement) goes with the line before.
fn stamped_since(lines: &[String], since: DateTime<Utc>) -> Vec<bool> {
    let mut keep = false;
    lines
        .iter()
        .map(|l| {
            if l.starts_with('\u{0}') {
                return true;
            }
            if let Some(at) =
                l.get(..19).and_then(|h| chrono::NaiveDateTime::parse_from_str(h, "%Y-%m-%d %H:%M:%S").ok())
            {
                keep = at.and_utc() >= since - chrono::TimeDelta::seconds(1);
            }
            keep
        })
        .collect()
}

/// A location's syslog target, as `location set --syslog` takes it: `tcp://HOST:PORT`,
/// `tls://HOST:PORT`, or `none`.
pub(crate) fn check_syslog_target(target: &str) -> Result<Option<String>> {
    if target == "none" {
        return Ok(None);
    }
    let bad = || {
        AppError::Invalid(format!(
            "syslog target {target:?} is not tcp://HOST:PORT or tls://HOST:PORT (a host name or IP address, \
             a port 1-65535) or none"
        ))
    };
    let rest = target.strip_prefix("tcp://").or_else(|| target.strip_prefix("tls://")).ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        || crate::validate::is_host_name(host);
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(Some(target.to_string()))
}

/// The most a syslog CA bundle may weigh.
const MAX_SYSLOG_CA: usize = 256 * 1024;

/// A syslog CA bundle: PEM certificates, each of which parses, at least one.
pub(crate) fn check_syslog_ca(pem: &str) -> Result<String> {
    let bad = |why: String| AppError::Invalid(format!("the syslog CA {why}: give a file of PEM certificates"));
    if pem.len() > MAX_SYSLOG_CA {
        return Err(bad(format!("is larger than {} KiB", MAX_SYSLOG_CA / 1024)));
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut count = 0;
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..].find(END).ok_or_else(|| bad("has a certificate without its END line".into()))?;
        let block = &rest[start..start + end + END.len()];
        sovdb_pki::CertValidity::of_pem(block)
            .map_err(|e| bad(format!("has a certificate that does not parse ({e})")))?;
        count += 1;
        rest = &rest[start + end + END.len()..];
    }
    if count == 0 {
        return Err(bad("holds no certificate".into()));
    }
    Ok(pem.to_string())
}

fn syslog_key(location: LocationId) -> String {
    format!("syslog/{location}")
}

fn syslog_ca_key(location: LocationId) -> String {
    format!("syslog-ca/{location}")
}

/// What the reconciler last wrote to each host, so unchanged lists are not sent again.
#[derive(Default)]
pub(crate) struct SyslogWritten(std::sync::Mutex<HashMap<HostId, SyslogConfig>>);

impl App {
    /// Sets (or with `none`, clears) where a location's hosts forward their clusters'
    /// logs (admin, audited). The hosts get it at the next round of the reconciler.
    pub async fn location_set(&self, ctx: &Ctx, name: &str, req: LocationSet) -> Result<LocationDetail> {
        ctx.require(Action::LocationSet)?;
        let target = match &req.syslog {
            Some(t) => Some(check_syslog_target(t)?),
            None => None,
        };
        let ca = match (&target, &req.syslog_ca) {
            (_, None) => None,
            (Some(Some(t)), Some(pem)) if t.starts_with("tls://") => Some(check_syslog_ca(pem)?),
            (None, Some(_)) => {
                return Err(AppError::Invalid(
                    "a syslog CA goes with its target: give --syslog tls://HOST:PORT with --syslog-ca".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(AppError::Invalid(
                    "a syslog CA is only used over TLS: give a tls://HOST:PORT target, or leave --syslog-ca out".into(),
                ))
            }
        };
        {
            let mut tx = self.store.write().await?;
            let location = tx.location_get(name).await?.ok_or_else(|| AppError::not_found("location", name))?;
            match &target {
                Some(Some(t)) => tx.meta_set(&syslog_key(location.id), t).await?,
                Some(None) => {
                    tx.meta_delete(&syslog_key(location.id)).await?;
                }
                None => {}
            }
            // A new target comes with its CA or with none (the system bundle).
            if target.is_some() {
                match &ca {
                    Some(pem) => tx.meta_set(&syslog_ca_key(location.id), pem).await?,
                    None => {
                        tx.meta_delete(&syslog_ca_key(location.id)).await?;
                    }
                }
            }
            // The audit record says whether a CA was given, not its (long) text.
            let mut params = serde_json::to_value(&req).expect("serialise");
            if ca.is_some() {
                params["syslog_ca"] = serde_json::json!("(PEM certificates)");
            }
            tx.audit_append(&ctx.audit("location.set", format!("location/{name}"), params)).await?;
            tx.commit().await?;
        }
        self.location_detail(ctx, name).await
    }

    /// Where a location's logs go, if anywhere, and the CA a `tls://` target is checked with.
    pub(crate) async fn location_syslog(&self, location: LocationId) -> Result<(Option<String>, Option<String>)> {
        let mut tx = self.store.read().await?;
        let target = tx.meta_get(&syslog_key(location)).await?;
        let ca = match &target {
            Some(_) => tx.meta_get(&syslog_ca_key(location)).await?,
            None => None,
        };
        Ok((target, ca))
    }

    /// One round: every ready host gets the list of logs to forward (and where), when it
    /// differs from what it was last given.
    pub async fn syslog_reconcile(&self) -> Result<()> {
        // Every cluster's members, by host.
        let mut by_host: BTreeMap<HostId, Vec<SyslogSource>> = BTreeMap::new();
        let mut projects: HashMap<ProjectId, String> = HashMap::new();
        for c in &self.clusters_all().await? {
            let project = match projects.get(&c.project_id) {
                Some(p) => p.clone(),
                None => {
                    let p = self.store.read().await?.project_get_by_id(c.project_id).await?;
                    let name = p.map(|p| p.name).unwrap_or_default();
                    projects.insert(c.project_id, name.clone());
                    name
                }
            };
            let Ok(members) = pg::members(self, c.id).await else { continue };
            for m in &members {
                for (source, file) in sources(m) {
                    by_host.entry(m.host.host.id).or_default().push(SyslogSource {
                        file,
                        app_name: source.into(),
                        project: project.clone(),
                        cluster: c.name.clone(),
                        member: m.name.clone(),
                    });
                }
            }
        }
        let hosts = self.hosts_all().await?;
        let mut targets: HashMap<LocationId, (Option<String>, Option<String>)> = HashMap::new();
        for h in hosts.into_iter().filter(|h| h.host.status == HostStatus::Ready) {
            let location = h.location_id;
            let (target, ca_pem) = match targets.get(&location) {
                Some(t) => t.clone(),
                None => {
                    let t = self.location_syslog(location).await?;
                    targets.insert(location, t.clone());
                    t
                }
            };
            let sources = by_host.remove(&h.host.id).unwrap_or_default();
            let target = target.filter(|_| !sources.is_empty());
            let ca_pem = ca_pem.filter(|_| target.is_some());
            let config = SyslogConfig { target, ca_pem, hostname: h.host.name.clone(), sources };
            let unchanged =
                self.syslog_written.0.lock().unwrap_or_else(|p| p.into_inner()).get(&h.host.id) == Some(&config);
            if unchanged {
                continue;
            }
            let write = async {
                let client = self.agent_client(&h.host, READ_TIMEOUT).await.map_err(|e| e.to_string())?;
                let req = WriteFileRequest {
                    path: sovdb_agent::proto::syslog_config_path(std::path::Path::new(&h.host.base_dir)),
                    content: serde_json::to_vec_pretty(&config).expect("serialise"),
                    mode: 0o600,
                    owner: None,
                    group: None,
                };
                client.write_file(&req).await.map_err(|e| error_chain(&e))
            };
            match write.await {
                Ok(_) => {
                    self.syslog_written.0.lock().unwrap_or_else(|p| p.into_inner()).insert(h.host.id, config);
                }
                Err(e) => tracing::warn!(host = %h.host.name, error = %e, "cannot give the host its syslog forwarding"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_targets_are_checked() {
        assert_eq!(check_syslog_target("none").unwrap(), None);
        for ok in
            ["tcp://127.0.0.1:514", "tcp://logs.example.org:6514", "tcp://[::1]:514", "tls://logs.example.org:6514"]
        {
            assert_eq!(check_syslog_target(ok).unwrap().as_deref(), Some(ok));
        }
        for bad in ["udp://1.2.3.4:514", "tcp://1.2.3.4", "tcp://1.2.3.4:0", "tcp://a b:1", "1.2.3.4:514", "", "tls://"]
        {
            assert!(check_syslog_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn syslog_cas_must_be_pem_certificates() {
        let ca = sovdb_pki::Ca::generate("syslog test CA").unwrap();
        let two = format!("{}\n{}", ca.cert_pem(), ca.cert_pem());
        assert_eq!(check_syslog_ca(&two).unwrap(), two);
        for (bad, says) in [
            ("", "holds no certificate"),
            ("hello", "holds no certificate"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n", "without its END line"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
        ] {
            let e = check_syslog_ca(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("PEM certificates"), "{bad:?}: {e}");
        }
        assert!(check_syslog_ca(&"x".repeat(MAX_SYSLOG_CA + 1)).unwrap_err().to_string().contains("larger"));
    }

    #[test]
    fn since_keeps_stamped_lines_and_their_continuations() {
        let since = DateTime::parse_from_rfc3339("2026-11-22T01:00:00Z").unwrap().to_utc();
        let lines: Vec<String> = [
            "2026-11-22 00:58:00.000 UTC [1] LOG:  old",
            "   continued old",
            "2026-11-22 01:00:05,123 INFO: new",
            "   continued new",
        ]
        .map(String::from)
        .into();
        assert_eq!(stamped_since(&lines, since), [false, false, true, true]);
    }
}

//! Patroni's REST API as the control plane reads and drives it: over TLS (the
//! installation CA), reads without credentials, changes with the cluster's REST password.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::workflows::pg::Member;
use crate::App;

/// One member as Patroni's `/cluster` reports it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PatroniMember {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`.
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `crashed`, …
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub timeline: Option<i64>,
    /// Bytes behind the primary; Patroni says `"unknown"` when it can't tell.
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
}

impl PatroniMember {
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
    pub fn is_sync(&self) -> bool {
        self.role == "sync_standby"
    }
    pub fn lag_bytes(&self) -> Option<i64> {
        self.lag.as_ref().and_then(|l| l.as_i64())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PatroniStatus {
    #[serde(default)]
    pub members: Vec<PatroniMember>,
}

impl PatroniStatus {
    /// The leader, when it runs.
    pub fn leader(&self) -> Option<&PatroniMember> {
        self.members.iter().find(|m| m.is_leader() && m.state == "running")
    }
}

/// A standby streaming from the primary, as the primary's Patroni reports it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Replication {
    pub application_name: String,
    pub state: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PatroniNode {
    #[serde(default)]
    replication: Vec<Replication>,
}

/// The members streaming from `primary` (by `application_name`, which Patroni sets to
/// the member's name: pg_basebackup's stream never counts).
pub(crate) async fn streaming(app: &App, primary: &Member) -> Result<Vec<String>, String> {
    let https = &app.pki().map_err(|e| e.to_string())?.https();
    let url = format!("https://{}/patroni", primary.patroni_endpoint());
    let r = https.get(&url).timeout(Duration::from_secs(2)).send().await.map_err(|e| sovdb_types::error_chain(&e))?;
    let node: PatroniNode = r.json().await.map_err(|e| e.to_string())?;
    Ok(node.replication.into_iter().filter(|r| r.state == "streaming").map(|r| r.application_name).collect())
}

/// A state in which a member serves: the primary `running`, a replica `running` or
/// `streaming` (Patroni 3.0 says `running` for both).
pub(crate) fn serving(m: &PatroniMember) -> bool {
    m.state == "running" || m.state == "streaming"
}

/// A failed request to Patroni in a few words: what a user can act on.
fn request_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        let chain = sovdb_types::error_chain(e);
        if chain.contains("Connection refused") {
            "connection refused".into()
        } else {
            format!("can't connect ({})", chain.rsplit(": ").next().unwrap_or(&chain))
        }
    } else if e.is_timeout() {
        "no answer in time".into()
    } else {
        sovdb_types::error_chain(e)
    }
}

/// `/cluster` from the first member whose Patroni answers.
pub(crate) async fn status(app: &App, members: &[Member]) -> Result<PatroniStatus, String> {
    let https = &app.pki().map_err(|e| e.to_string())?.https();
    let mut errors = Vec::new();
    for m in members {
        let url = format!("https://{}/cluster", m.patroni_endpoint());
        match https.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status().is_success() => match r.json::<PatroniStatus>().await {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(format!("{}: {e}", m.name)),
            },
            Ok(r) => errors.push(format!("{}: HTTP {}", m.name, r.status())),
            Err(e) => errors.push(format!("{}: {}", m.name, request_error(&e))),
        }
    }
    Err(if errors.is_empty() { "the cluster has no members".into() } else { errors.join("; ") })
}

/// Polls `/cluster` until a leader runs, for at most `timeout`; answers the status and
/// the leader's member.
pub(crate) async fn wait_primary<'m>(
    app: &App,
    members: &'m [Member],
    timeout: Duration,
) -> Result<(PatroniStatus, &'m Member), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match status(app, members).await {
            Ok(s) => match s.leader().and_then(|l| members.iter().find(|m| m.name == l.name)) {
                Some(m) => return Ok((s, m)),
                None => describe(&s),
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one member's Patroni says of itself (`GET /patroni`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NodeStatus {
    /// When its PostgreSQL started (a restart changes it).
    #[serde(default)]
    pub postmaster_start_time: Option<String>,
    /// A changed parameter waits for a restart.
    #[serde(default)]
    pub pending_restart: bool,
}

/// `GET /patroni` of one member.
pub(crate) async fn node(app: &App, m: &Member) -> Result<NodeStatus, String> {
    let https = &app.pki().map_err(|e| e.to_string())?.https();
    let url = format!("https://{}/patroni", m.patroni_endpoint());
    let r = https.get(&url).timeout(Duration::from_secs(3)).send().await.map_err(|e| sovdb_types::error_chain(&e))?;
    // Patroni answers 503 with the same body when PostgreSQL doesn't run.
    r.json().await.map_err(|e| e.to_string())
}

/// A change through one member's REST API (`POST /switchover`, `PATCH /config`, …),
/// authenticated with the cluster's REST password. Answers Patroni's status and text;
/// an error only when Patroni could not be asked.
pub(crate) async fn change(
    app: &App,
    m: &Member,
    method: reqwest::Method,
    path: &str,
    body: &serde_json::Value,
    password: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let https = &app.pki().map_err(|e| e.to_string())?.https();
    let url = format!("https://{}{path}", m.patroni_endpoint());
    let r = https
        .request(method, &url)
        .basic_auth(sovdb_postgres::render::REST_USER, Some(password))
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| sovdb_types::error_chain(&e))?;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    Ok((status, text.trim().to_string()))
}

/// The cluster as [`settle`] last saw it.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    /// The member that leads.
    pub leader: String,
    /// The members streaming from it.
    pub streaming: Vec<String>,
    /// What is not there yet: members not running as replicas streaming from the leader,
    /// and "a synchronous standby" when one is wanted and none is named.
    pub missing: Vec<String>,
}

/// One look at replication: the leader (none: `Err` with what was seen), the members
/// streaming from it, and what is missing (see [`Settled`]).
pub(crate) async fn replication(app: &App, members: &[Member], sync: bool) -> Result<Settled, String> {
    let want_sync = sync && members.len() > 1;
    let status = status(app, members).await?;
    let Some(primary) = status.leader().and_then(|l| members.iter().find(|m| m.name == l.name)) else {
        return Err(describe(&status));
    };
    let leader = primary.name.clone();
    let streaming = self::streaming(app, primary).await.unwrap_or_default();
    let mut missing: Vec<String> = members
        .iter()
        .filter(|m| m.name != leader)
        .filter(|m| {
            let running = status.members.iter().any(|p| p.name == m.name && serving(p) && !p.is_leader());
            !(running && streaming.contains(&m.name))
        })
        .map(|m| m.name.clone())
        .collect();
    if want_sync && !status.members.iter().any(|m| m.is_sync()) {
        missing.push("a synchronous standby".into());
    }
    Ok(Settled { leader, streaming, missing })
}

/// `members: db1-1 replica starting, db1-2 replica stopped`, or that Patroni knows none.
pub(crate) fn describe(status: &PatroniStatus) -> String {
    if status.members.is_empty() {
        return "Patroni knows no member yet".into();
    }
    format!(
        "members: {}",
        status.members.iter().map(|m| format!("{} {} {}", m.name, m.role, m.state)).collect::<Vec<_>>().join(", ")
    )
}

/// Waits, for at most `timeout`, until a leader runs and every other member runs as a
/// replica that streams from it (pg_basebackup's stream doesn't count: Patroni names a
/// replica's stream after the member) and, with `sync`, Patroni names a synchronous
/// standby. Answers what it saw last; an error only when no leader ran in that time.
pub(crate) async fn settle(app: &App, members: &[Member], sync: bool, timeout: Duration) -> Result<Settled, String> {
    let deadline = Instant::now() + timeout;
    loop {
        // `replication` reads `/cluster` once and answers `Err` while no leader runs.
        match replication(app, members, sync).await {
            Ok(s) if s.missing.is_empty() || Instant::now() > deadline => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

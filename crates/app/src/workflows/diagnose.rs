//! Why a member doesn't serve, as its host tells it: the state of its supervised Patroni
//! and the line of Patroni's and PostgreSQL's logs that says most (see
//! `sovdb_postgres::diagnose`), read through the member's agent. Waits use it to explain
//! what they see (`db1-1: patroni: ERROR: … No module named 'idna'`).
//!
//! Best effort and read-only: what can't be read is said in a few words, never an error.

use std::time::Duration;

use sovdb_agent::proto::{LogFile, ProcessState, ReadLogRequest, TailFileRequest};
use sovdb_postgres::diagnose;

use super::pg::{self, Member};
use crate::App;

/// Lines read from the end of each log.
const TAIL: u32 = 60;

/// `NAME: what its host says`, for each of `members`, joined with ` | `.
pub(crate) async fn members(app: &App, members: &[&Member]) -> String {
    let mut said = Vec::with_capacity(members.len());
    for m in members {
        said.push(format!("{}: {}", m.name, member(app, m).await));
    }
    said.join(" | ")
}

/// What one member's host says of it.
pub(crate) async fn member(app: &App, m: &Member) -> String {
    let client = match pg::agent(app, &m.host, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => return format!("host {} can't be asked ({})", m.host.host.name, e.error.message),
    };
    let mut parts = Vec::new();
    match client.process_status(&m.service("patroni")).await {
        Ok(p) if p.state != ProcessState::Running => {
            let mut s = format!(
                "patroni is {}",
                serde_json::to_value(p.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            );
            if let Some(exit) = p.last_exit {
                s.push_str(&format!(" (last exit: {exit}, {} restart(s))", p.restarts));
            }
            if let Some(e) = &p.last_error {
                s.push_str(&format!(": {e}"));
            }
            let stderr = client.tail_file(&TailFileRequest { path: p.log_dir.join("stderr.log"), lines: TAIL }).await;
            if let Some(line) = stderr.ok().and_then(|t| diagnose::patroni_line(&t.lines)) {
                s.push_str(&format!("; its stderr: {line}"));
            }
            parts.push(s);
        }
        Ok(_) => {}
        Err(e) => parts.push(format!("patroni's state can't be read ({})", sovdb_types::error_chain(&e))),
    }
    let layout = m.layout();
    let patroni_log = format!("{}/patroni.log", layout.patroni_log_dir());
    if let Ok(t) = client.tail_file(&TailFileRequest { path: patroni_log.into(), lines: TAIL }).await {
        if let Some(line) = diagnose::patroni_line(&t.lines) {
            parts.push(format!("patroni: {line}"));
        }
    }
    let postgres = ReadLogRequest {
        file: LogFile::Postgres { data_dir: layout.data().into() },
        cursor: None,
        tail: TAIL,
        max_bytes: 256 * 1024,
    };
    if let Ok(r) = client.read_log(&postgres).await {
        if let Some(line) = diagnose::postgres_line(&r.lines) {
            parts.push(format!("postgresql: {line}"));
        }
    }
    if parts.is_empty() {
        "its logs say nothing yet".into()
    } else {
        parts.join("; ")
    }
}

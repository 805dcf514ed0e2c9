//! `sovdb events`: the timeline of the project's clusters (and, for admins, the
//! installation's hosts), once or followed; and `sovdb logs`: the PostgreSQL and Patroni
//! logs of a cluster's members, once or followed.
//!
//! Followed output goes to stdout as it arrives, one line per event or log line (with
//! `-o json`, one JSON object per line), so it can be piped.

use std::io::Write as _;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use sovdb_types::{Event, LogLine};

use super::audit::parse_since;
use crate::client::Client;
use crate::output::{self, print_list, OutputFormat, Tabular};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this cluster's events
    #[arg(long)]
    cluster: Option<String>,
    /// Only events since this time: RFC 3339 (2026-01-31T12:00:00Z) or an age (90s, 15m, 2h, 7d)
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Keep printing events as they are written (from --since, or from now)
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The cluster
    cluster: String,
    /// Only this member's logs (e.g. db-1) [default: every member's]
    #[arg(long)]
    member: Option<String>,
    /// Keep printing lines as they are written
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines since this time: RFC 3339 or an age (90s, 15m, 2h, 7d); looks back at most
    /// 10,000 lines of each log
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Without --since: how many of the last lines of each log to show first
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: u32,
}

fn print_event(e: &Event, out: OutputFormat) -> anyhow::Result<()> {
    let text = match out {
        OutputFormat::Table => {
            let r = e.row();
            format!("{}  {}  {}  {}", r[0], r[1], r[2], r[3])
        }
        _ => serde_json::to_string(e)?,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

pub async fn events(args: EventsArgs, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    let mut q = Vec::new();
    if let Some(c) = &args.cluster {
        q.push(("cluster", c.clone()));
    }
    if !args.follow {
        if let Some(s) = args.since {
            q.push(("since", s.to_rfc3339()));
        }
        return print_list(&client.list::<Event>("/events", &q).await?, out);
    }
    // Followed: from --since or now; after a broken stream, again from the last event
    // seen (the server may send it again: it is skipped).
    let mut since = args.since.unwrap_or_else(Utc::now);
    let mut last: Option<sovdb_types::EventId> = None;
    loop {
        let mut query = q.clone();
        query.push(("follow", "true".into()));
        query.push(("since", since.to_rfc3339()));
        let mut stream = match client.events_query("/events", &query).await {
            Ok(s) => s,
            Err(e) if e.is::<crate::client::Unreachable>() => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            match stream.next().await {
                Ok(Some(ev)) if ev.event == "event" => {
                    let e: Event = serde_json::from_str(&ev.data)
                        .map_err(|e| anyhow!("the server sent an event this CLI can't read ({e}); are both the same version?"))?;
                    if last.is_some_and(|l| e.id <= l) {
                        continue;
                    }
                    last = Some(e.id);
                    since = e.at;
                    print_event(&e, out)?;
                }
                Ok(Some(ev)) if ev.event == "error" => bail!("{}", ev.data),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn print_line(l: &LogLine, out: OutputFormat) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match out {
        OutputFormat::Table => writeln!(stdout, "{} {} | {}", l.member, l.source, l.line)?,
        _ => writeln!(stdout, "{}", serde_json::to_string(l)?)?,
    }
    stdout.flush()?;
    Ok(())
}

pub async fn logs(args: LogsArgs, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    let path = format!("/clusters/{}/logs", args.cluster);
    let mut q = vec![("lines", args.lines.to_string())];
    if let Some(m) = &args.member {
        q.push(("member", m.clone()));
    }
    if let Some(s) = args.since {
        q.push(("since", s.to_rfc3339()));
    }
    if !args.follow {
        let lines: Vec<LogLine> = client.get(&path, &q).await?;
        if out == OutputFormat::Table {
            for l in &lines {
                print_line(l, out)?;
            }
            return Ok(());
        }
        return output::print_structured(&lines, out);
    }
    q.push(("follow", "true".into()));
    let mut stream = client.events_query(&path, &q).await?;
    loop {
        match stream.next().await? {
            Some(ev) if ev.event == "line" => {
                let l: LogLine = serde_json::from_str(&ev.data)
                    .map_err(|e| anyhow!("the server sent a line this CLI can't read ({e}); are both the same version?"))?;
                print_line(&l, out)?;
            }
            Some(ev) if ev.event == "error" => bail!("{}", ev.data),
            Some(_) => {}
            None => bail!("the server ended the stream; run `sovdb logs {} --follow` again", args.cluster),
        }
    }
}

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use std::io::Write as _;

use sovdb_types::audit::{AuditRecord, AuditVerification};
use sovdb_types::Page;

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit records, oldest first (admin)
    List {
        /// Only records since this time: RFC 3339 (2026-01-31T12:00:00Z) or an age (90s, 15m, 2h, 7d)
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only records by this user
        #[arg(long)]
        actor: Option<String>,
        /// Only records about this target (kind/name), or every target of a kind (kind/)
        #[arg(long)]
        target: Option<String>,
    },
    /// Check the whole hash chain (admin): exits 1 and names the first bad record when a
    /// record was edited, removed, inserted or reordered; else prints the count and head
    Verify {
        /// A head printed by an earlier verify (SEQ:HASH), kept outside the installation:
        /// the chain must still hold it (catches a chain rewritten from there back)
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<String>,
    },
    /// Print every record, oldest first, as JSON lines with every field and hash, so the
    /// chain can be verified outside sovdb (admin)
    Export {
        /// Only records since this time: RFC 3339 or an age (90s, 15m, 2h, 7d)
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
    },
}

impl Tabular for AuditVerification {
    const HEADERS: &'static [&'static str] = &["OK", "RECORDS", "HEAD", "PROBLEM"];
    fn row(&self) -> Vec<String> {
        vec![
            self.ok.to_string(),
            self.records.to_string(),
            self.head.as_ref().map_or_else(|| "-".into(), |h| h.to_text()),
            self.problem.as_ref().map_or_else(|| "-".into(), |p| format!("record {}: {}", p.seq, p.message)),
        ]
    }
}

impl Tabular for AuditRecord {
    const HEADERS: &'static [&'static str] = &["SEQ", "TIME", "ACTOR", "SOURCE", "ACTION", "TARGET", "OUTCOME"];
    fn row(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            output::time(&self.at),
            self.actor.clone(),
            self.source.clone().unwrap_or_else(|| "-".into()),
            self.action.clone(),
            self.target.clone(),
            self.outcome.as_str().into(),
        ]
    }
}

/// An RFC 3339 time, or an age before now such as `15m`.
pub(crate) fn parse_since(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = match num.parse() {
        Ok(n) => n,
        Err(_) => bail!("{s:?} is neither an RFC 3339 time nor an age like 90s, 15m, 2h or 7d"),
    };
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("{s:?}: an age's unit is s, m, h or d"),
    };
    Ok(Utc::now() - chrono::Duration::seconds(secs))
}

pub async fn run(cmd: AuditCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::List { since, actor, target } => {
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(("since", s.to_rfc3339()));
            }
            if let Some(a) = actor {
                q.push(("actor", a));
            }
            if let Some(t) = target {
                q.push(("target", t));
            }
            print_list(&client.list::<AuditRecord>("/audit", &q).await?, out)
        }
        AuditCmd::Verify { anchor } => {
            let q: Vec<(&str, String)> = anchor.map(|a| ("anchor", a)).into_iter().collect();
            let v: AuditVerification = client.get("/audit/verify", &q).await?;
            print_one(&v, out)?;
            match v.problem {
                None => Ok(()),
                Some(p) => Err(anyhow::anyhow!(
                    "the audit log fails verification at record {} ({}): {}",
                    p.seq,
                    serde_json::to_value(p.kind).ok().and_then(|k| k.as_str().map(str::to_string)).unwrap_or_default(),
                    p.message
                )),
            }
        }
        AuditCmd::Export { since } => {
            // A page at a time, printed as it comes: the log may be long.
            let mut token: Option<String> = None;
            let mut stdout = std::io::stdout().lock();
            loop {
                let mut q = vec![("limit", "1000".to_string())];
                if let Some(s) = since {
                    q.push(("since", s.to_rfc3339()));
                }
                if let Some(t) = token.take() {
                    q.push(("page_token", t));
                }
                let page: Page<AuditRecord> = client.get("/audit", &q).await?;
                for r in &page.items {
                    writeln!(stdout, "{}", serde_json::to_string(r)?)?;
                }
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_ages() {
        assert_eq!(parse_since("2026-01-31T12:00:00Z").unwrap().to_rfc3339(), "2026-01-31T12:00:00+00:00");
        let age = Utc::now() - parse_since("2h").unwrap();
        assert!((7190..=7210).contains(&age.num_seconds()), "{age}");
        for bad in ["", "h", "2w", "yesterday"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}

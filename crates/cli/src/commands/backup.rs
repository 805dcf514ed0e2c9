use clap::{Subcommand, ValueEnum};
use sovdb_types::{Backup, BackupCreate, BackupType, Operation};

use super::op::{started, Wait};
use crate::client::Client;
use crate::output::{self, print_list, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up a cluster into its repository (pgBackRest, on the primary)
    Create {
        cluster: String,
        /// full, diff or incr [default: incr; full when the repository has none yet]
        #[arg(long = "type", value_enum)]
        kind: Option<TypeArg>,
        #[command(flatten)]
        wait: Wait,
    },
    /// The cluster's backups, oldest first
    List { cluster: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    Full,
    Diff,
    Incr,
}

impl Tabular for Backup {
    const HEADERS: &'static [&'static str] =
        &["ID", "TYPE", "STARTED", "STOPPED", "SIZE", "IN REPO", "WAL START", "WAL STOP", "REPOSITORY"];
    fn row(&self) -> Vec<String> {
        vec![
            format!("{}{}", self.id, if self.error { " (errors)" } else { "" }),
            self.kind.as_str().into(),
            output::time(&self.started_at),
            output::time(&self.stopped_at),
            bytes(self.size),
            bytes(self.repo_size),
            self.wal_start.clone(),
            self.wal_stop.clone(),
            self.repository.clone(),
        ]
    }
}

/// `23.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub async fn run(cmd: BackupCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Create { cluster, kind, wait } => {
            let kind = kind.map(|k| match k {
                TypeArg::Full => BackupType::Full,
                TypeArg::Diff => BackupType::Diff,
                TypeArg::Incr => BackupType::Incr,
            });
            let op: Operation = client.post(&format!("/clusters/{cluster}/backups"), &BackupCreate { kind }).await?;
            if let Some(op) = started(client, op, wait, out).await? {
                let said = op.steps.last().and_then(|s| s.output.as_ref());
                if let (Some(o), OutputFormat::Table) = (said, out) {
                    println!(
                        "{} backup {}: {}",
                        o["type"].as_str().unwrap_or("?"),
                        o["backup"].as_str().unwrap_or("?"),
                        bytes(o["size"].as_u64().unwrap_or(0))
                    );
                }
            }
            Ok(())
        }
        BackupCmd::List { cluster } => {
            let list: Vec<Backup> = client.get(&format!("/clusters/{cluster}/backups"), &[]).await?;
            print_list(&list, out)
        }
    }
}

use clap::{Subcommand, ValueEnum};
use sovdb_types::{human_bytes, Backup, BackupCreate, BackupType, Operation};

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
            human_bytes(self.size),
            human_bytes(self.repo_size),
            self.wal_start.clone(),
            self.wal_stop.clone(),
            self.repository.clone(),
        ]
    }
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
                        human_bytes(o["size"].as_u64().unwrap_or(0))
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

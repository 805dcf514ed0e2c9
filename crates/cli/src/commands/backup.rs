use clap::{Subcommand, ValueEnum};
use sovdb_types::{
    human_bytes, Backup, BackupCreate, BackupPolicy, BackupPolicyView, BackupType, BackupVerify, Operation,
    RetainedBackups,
};

use super::op::{started, Wait};
use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

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
    /// The cluster's backups, oldest first (also of a deleted cluster whose backups were kept)
    List { cluster: String },
    /// A restore drill: restore the newest backup into a temporary instance, check that it
    /// starts and recovers, verify the repository's files and every page's checksum, then
    /// remove the instance
    Verify {
        cluster: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show the cluster's backup policy, or change it with the flags given (schedules are
    /// cron patterns of five fields, in UTC: "0 3 * * *" is 03:00 every day)
    Policy {
        cluster: String,
        /// When to back up (incremental with --full-schedule, else full)
        #[arg(long)]
        schedule: Option<String>,
        /// When to take a full backup
        #[arg(long)]
        full_schedule: Option<String>,
        /// How many full backups to keep (with what depends on them) [default: 2]
        #[arg(long)]
        retention_full: Option<u32>,
        /// When to run a restore drill
        #[arg(long)]
        verify_schedule: Option<String>,
        /// Remove every schedule and go back to the default retention
        #[arg(long, conflicts_with_all = ["schedule", "full_schedule", "retention_full", "verify_schedule"])]
        clear: bool,
    },
    /// Deleted clusters whose backups were kept
    Retained,
    /// Delete the kept backups of a deleted cluster from its repository
    Purge {
        cluster: String,
        #[command(flatten)]
        wait: Wait,
    },
}

impl Tabular for BackupPolicyView {
    const HEADERS: &'static [&'static str] = &[
        "CLUSTER",
        "SCHEDULE",
        "FULL SCHEDULE",
        "RETENTION FULL",
        "VERIFY SCHEDULE",
        "NEXT BACKUP",
        "NEXT FULL",
        "NEXT VERIFY",
    ];
    fn row(&self) -> Vec<String> {
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let at = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map(output::time).unwrap_or_else(|| "-".into());
        vec![
            self.cluster.clone(),
            or_none(&self.policy.schedule),
            or_none(&self.policy.full_schedule),
            self.retention_full_kept.to_string(),
            or_none(&self.policy.verify_schedule),
            at(&self.next_backup),
            at(&self.next_full),
            at(&self.next_verify),
        ]
    }
}

impl Tabular for RetainedBackups {
    const HEADERS: &'static [&'static str] = &["CLUSTER", "ID", "REPOSITORY", "DELETED"];
    fn row(&self) -> Vec<String> {
        vec![self.cluster.clone(), self.cluster_id.clone(), self.repository.clone(), output::time(&self.deleted_at)]
    }
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
        BackupCmd::Verify { cluster, wait } => {
            let op: Operation = client.post(&format!("/clusters/{cluster}/verify"), &BackupVerify {}).await?;
            if let Some(op) = started(client, op, wait, out).await? {
                let said = op.steps.last().and_then(|s| s.output.as_ref());
                if let (Some(o), OutputFormat::Table) = (said, out) {
                    println!(
                        "backup {} restored and verified in {:.1} s",
                        o["backup"].as_str().unwrap_or("?"),
                        o["seconds"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Ok(())
        }
        BackupCmd::Policy { cluster, schedule, full_schedule, retention_full, verify_schedule, clear } => {
            let path = format!("/clusters/{cluster}/backup-policy");
            let view: BackupPolicyView = if clear {
                client.put(&path, &BackupPolicy::default()).await?
            } else if schedule.is_none()
                && full_schedule.is_none()
                && retention_full.is_none()
                && verify_schedule.is_none()
            {
                client.get(&path, &[]).await?
            } else {
                // The flags given change the policy; the others keep their values.
                let now: BackupPolicyView = client.get(&path, &[]).await?;
                let policy = BackupPolicy {
                    schedule: schedule.or(now.policy.schedule),
                    full_schedule: full_schedule.or(now.policy.full_schedule),
                    retention_full: retention_full.or(now.policy.retention_full),
                    verify_schedule: verify_schedule.or(now.policy.verify_schedule),
                };
                client.put(&path, &policy).await?
            };
            print_one(&view, out)
        }
        BackupCmd::Retained => {
            let list: Vec<RetainedBackups> = client.get("/retained-backups", &[]).await?;
            print_list(&list, out)
        }
        BackupCmd::Purge { cluster, wait } => {
            let op: Operation = client.delete_json(&format!("/retained-backups/{cluster}")).await?;
            match started(client, op, wait, out).await? {
                Some(op) => print_one(&op, out),
                None => Ok(()),
            }
        }
    }
}

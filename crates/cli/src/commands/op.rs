use clap::Subcommand;
use sovdb_types::{Operation, OperationStep};

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum OpCmd {
    /// List operations, newest first
    List,
    /// Show one operation and its steps
    Show {
        /// The operation's ID
        id: String,
    },
    /// Follow an operation until it ends: progress on stderr, non-zero exit if it fails
    Watch {
        /// The operation's ID
        id: String,
    },
    /// Cancel an operation: it stops at its next step boundary and undoes what it did
    Cancel {
        /// The operation's ID
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
}

/// `--wait`, on every command that changes something.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Wait {
    /// Follow the operation until it ends (progress on stderr) and exit non-zero if it
    /// fails; without it the command returns once the change is accepted
    #[arg(long)]
    pub wait: bool,
}

/// After a change was accepted: without `--wait`, prints the operation's ID (or the
/// operation with `-o json|yaml`) and answers `None`; with it, follows the operation to
/// its end (an error if it failed) and answers it, for the caller to show the result.
pub(crate) async fn started(
    client: &Client,
    op: Operation,
    wait: Wait,
    out: OutputFormat,
) -> anyhow::Result<Option<Operation>> {
    if wait.wait {
        return Ok(Some(crate::follow::follow(client, &op.id.to_string()).await?));
    }
    match out {
        OutputFormat::Table => {
            println!("{}", op.id);
            eprintln!("started operation {} ({}); follow it with `sovdb op watch {}`", op.id, op.kind, op.id);
        }
        _ => print_one(&op, out)?,
    }
    Ok(None)
}

/// Starts the operation at `path` with `req`; waited for, it prints what its last step
/// says it did (a table), else the operation.
pub(crate) async fn post_and_say<B: serde::Serialize>(
    client: &Client,
    path: &str,
    req: &B,
    wait: Wait,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let op: Operation = client.post(path, req).await?;
    if let Some(op) = started(client, op, wait, out).await? {
        let said = op.steps.last().and_then(|s| s.output.as_ref()).and_then(|o| o["message"].as_str());
        match (out, said) {
            (OutputFormat::Table, Some(m)) => println!("{m}"),
            _ => print_one(&op, out)?,
        }
    }
    Ok(())
}

/// `n/m name` of the step in progress (or the last one), for tables.
fn progress(op: &Operation) -> String {
    let total = op.steps.len();
    let done = op.steps.iter().filter(|s| s.state == sovdb_types::StepState::Succeeded).count();
    match op.steps.iter().find(|s| s.state != sovdb_types::StepState::Succeeded) {
        Some(s) => format!("{}/{total} {}", s.index + 1, s.name),
        None => format!("{done}/{total}"),
    }
}

impl Tabular for Operation {
    const HEADERS: &'static [&'static str] =
        &["ID", "KIND", "TARGET", "STATE", "STEP", "CREATED BY", "CREATED", "ERROR"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.kind.clone(),
            self.target.clone(),
            self.state.as_str().to_string()
                + if self.cancel_requested && !self.state.is_final() { " (cancelling)" } else { "" },
            progress(self),
            self.created_by.clone(),
            output::time(&self.created_at),
            self.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "-".into()),
        ]
    }
}

impl Tabular for OperationStep {
    const HEADERS: &'static [&'static str] = &["#", "STEP", "STATE", "ATTEMPTS", "STARTED", "FINISHED", "ERROR"];
    fn row(&self) -> Vec<String> {
        let t = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map(output::time).unwrap_or_else(|| "-".into());
        vec![
            (self.index + 1).to_string(),
            self.name.clone(),
            self.state.as_str().into(),
            self.attempts.to_string(),
            t(&self.started_at),
            t(&self.finished_at),
            self.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "-".into()),
        ]
    }
}

fn show(op: &Operation, out: OutputFormat) -> anyhow::Result<()> {
    print_one(op, out)?;
    if out == OutputFormat::Table {
        println!();
        print_list(&op.steps, out)?;
        // What the steps said they saw while they ran (a wait's observations).
        let said: Vec<_> = op.steps.iter().filter_map(|s| Some((s, s.progress.as_ref()?))).collect();
        if !said.is_empty() {
            println!();
            for (s, p) in said {
                println!("step {} {} ({}): {}", s.index + 1, s.name, output::time(&p.at), p.message);
            }
        }
    }
    Ok(())
}

pub async fn run(cmd: OpCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        OpCmd::List => print_list(&client.list::<Operation>("/operations", &[]).await?, out),
        OpCmd::Show { id } => show(&client.get::<Operation>(&format!("/operations/{id}"), &[]).await?, out),
        OpCmd::Watch { id } => show(&crate::follow::follow(client, &id).await?, out),
        OpCmd::Cancel { id, wait } => {
            let op: Operation = client.post(&format!("/operations/{id}/cancel"), &serde_json::json!({})).await?;
            eprintln!("operation {id}: cancel requested; it stops at its next step boundary and undoes its steps");
            if wait.wait {
                // A cancelled operation doesn't succeed, by design: waiting ends when it ended.
                return show(&crate::follow::follow_to_end(client, &id).await?, out);
            }
            show(&op, out)
        }
    }
}

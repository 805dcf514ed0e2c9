//! Operations: durable workflows that a user started (create, scale, failover, ...), as the
//! API shows them. Step outputs are not shown: they may hold generated secrets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::OperationId;

/// Where an operation is in its life. `succeeded`, `failed`, `undone` and `cancelled` are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationState {
    /// Waiting for a worker, or for an earlier operation on the same target.
    Queued,
    Running,
    Succeeded,
    /// A step failed and every finished step was undone where it could be; `error` says why.
    Failed,
    /// Running the undo of finished steps, after a failure or a cancel.
    Undoing,
    /// Cancelled by a user; finished steps were undone.
    Cancelled,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Queued => "queued",
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
            OperationState::Undoing => "undoing",
            OperationState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OperationState> {
        Some(match s {
            "queued" => OperationState::Queued,
            "running" => OperationState::Running,
            "succeeded" => OperationState::Succeeded,
            "failed" => OperationState::Failed,
            "undoing" => OperationState::Undoing,
            "cancelled" => OperationState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled)
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Undoing,
    Undone,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Undoing => "undoing",
            StepState::Undone => "undone",
        }
    }

    pub fn parse(s: &str) -> Option<StepState> {
        Some(match s {
            "pending" => StepState::Pending,
            "running" => StepState::Running,
            "succeeded" => StepState::Succeeded,
            "failed" => StepState::Failed,
            "undoing" => StepState::Undoing,
            "undone" => StepState::Undone,
            _ => return None,
        })
    }
}

/// Why a step failed, in enough detail to act on. For a command: the command, its exit
/// status and the end of its stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

impl StepError {
    pub fn message(message: impl Into<String>) -> StepError {
        StepError { message: message.into(), command: None, exit_status: None, stderr: None }
    }

    /// A command that failed: what ran, how it ended, the end of what it said.
    pub fn command(
        message: impl Into<String>,
        command: impl Into<String>,
        exit_status: Option<i32>,
        stderr: &str,
    ) -> StepError {
        const KEEP: usize = 2000;
        let stderr = stderr.trim();
        let start = stderr.char_indices().rev().nth(KEEP).map(|(i, _)| i).unwrap_or(0);
        StepError {
            message: message.into(),
            command: Some(command.into()),
            exit_status,
            stderr: (!stderr.is_empty()).then(|| stderr[start..].to_string()),
        }
    }
}

/// One line: the message, then for a command what ran, its status and its last stderr line.
impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(cmd) = &self.command {
            let status = self.exit_status.map(|s| format!("exit status {s}")).unwrap_or_else(|| "killed".into());
            write!(f, " (`{cmd}`: {status}")?;
            if let Some(line) = self.stderr.as_deref().and_then(|e| e.lines().rev().find(|l| !l.trim().is_empty())) {
                write!(f, ": {}", line.trim())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationStep {
    /// Position, from 0.
    pub index: i64,
    pub name: String,
    pub state: StepState,
    /// How many times the step was started (a retry or a resume after a crash adds one).
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// What the step found or did (never a secret's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// What a running step last reported it observes: a wait says what it waits for and
    /// what it sees (e.g. the end of a member's log). Kept after the step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<StepProgress>,
}

/// What a step reported it observes, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepProgress {
    pub message: String,
    pub at: DateTime<Utc>,
}

/// An operation and its step log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: OperationId,
    /// The workflow, e.g. `cluster.create`.
    pub kind: String,
    /// What it acts on, `kind/name`; one mutating operation per target runs at a time.
    pub target: String,
    /// The project, absent for installation-wide operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub state: OperationState,
    /// A user asked to cancel; honoured at the next step boundary.
    pub cancel_requested: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed (the failed step's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    pub steps: Vec<OperationStep>,
}

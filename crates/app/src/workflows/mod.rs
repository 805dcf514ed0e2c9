//! Every workflow the control plane runs, one per file. Each file says what its
//! operation's parameters are, its steps (do and undo) and why each step is idempotent.
//!
//! Steps reach hosts only through the app's services (`StepCtx::services` is the
//! [`App`]): the store, the installation's CA, providers and agents.

use serde::Deserialize;
use sovdb_agent::AgentError;
use sovdb_operations::{StepFailure, Workflow};
use sovdb_provider::ProviderError;
use sovdb_store::HostRecord;

use crate::{App, AppError};

pub mod backup;
pub mod backup_verify;
pub mod cluster_allow;
pub mod cluster_create;
pub mod cluster_delete;
pub mod cluster_renew_certs;
pub mod cluster_restart;
pub mod cluster_restore;
pub mod cluster_scale;
pub mod cluster_set;
pub mod cluster_switchover;
pub(crate) mod dcs;
pub(crate) mod diagnose;
pub mod host_add;
pub mod host_remove;
pub mod host_renew_certs;
pub mod location_renew_certs;
pub(crate) mod pg;
pub(crate) mod preflight;
pub(crate) mod repo_tls;
pub(crate) mod served_cert;

/// Every workflow, to register with the engine and to create operations from.
pub fn all() -> Vec<Workflow<App>> {
    vec![
        host_add::workflow(),
        host_remove::workflow(),
        host_renew_certs::workflow(),
        location_renew_certs::workflow(),
        cluster_create::workflow(),
        cluster_delete::workflow(),
        cluster_switchover::switchover(),
        cluster_switchover::failover(),
        cluster_restart::workflow(),
        cluster_set::workflow(),
        cluster_scale::workflow(),
        cluster_allow::workflow(),
        cluster_renew_certs::workflow(),
        backup::workflow(),
        backup_verify::workflow(),
        backup::purge_workflow(),
        cluster_restore::workflow(),
    ]
}

/// The parameters of the host workflows.
#[derive(Deserialize)]
pub(crate) struct Params {
    pub host: String,
}

pub(crate) async fn host_record(app: &App, host: &str) -> Result<HostRecord, StepFailure> {
    host_add::maybe_host_record(app, host)
        .await?
        .ok_or_else(|| StepFailure::permanent(format!("host {host:?} no longer exists")))
}

/// Bad input can't get better by retrying; the store or the machine may.
pub(crate) fn app_failure(e: AppError) -> StepFailure {
    match e {
        AppError::Internal(e) => StepFailure::transient(format!("{e:#}")),
        AppError::Unavailable(why) | AppError::NotReady(why) => StepFailure::transient(why),
        other => StepFailure::permanent(other.to_string()),
    }
}

pub(crate) fn provider_failure(e: ProviderError) -> StepFailure {
    if e.is_transient() {
        StepFailure::transient(e.to_string())
    } else {
        StepFailure::permanent(e.to_string())
    }
}

pub(crate) fn agent_failure(e: AgentError) -> StepFailure {
    let message = sovdb_types::error_chain(&e);
    match e {
        AgentError::Rejected { .. } | AgentError::Tls { .. } => StepFailure::permanent(message),
        _ => StepFailure::transient(message),
    }
}

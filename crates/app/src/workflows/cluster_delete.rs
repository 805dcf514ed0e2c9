//! `cluster.delete`: stops and removes everything of a cluster, and releases its ports,
//! capacity and secrets.
//!
//! Parameters: `{"cluster": ID, "delete_backups": bool}` (`delete_backups` default false).
//!
//! Steps, each idempotent (and none undone: a delete that fails stays `deleting` and can
//! be run again):
//! 1. `mark-deleting`: the cluster's state becomes `deleting`.
//! 2. `stop-members`: every process of every member stopped and forgotten by its agent;
//!    the cluster's keys deleted from the DCS.
//! 3. `backups`: with a repository, the cluster's backups are kept and recorded (a deleted
//!    cluster can be restored by name), or with `delete_backups` its stanza is deleted from
//!    the repository.
//! 4. `remove-files`: the members' directories (data, configuration, logs).
//! 5. `forget`: ports, secrets, members and the cluster's row; an event.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_store::{NewEvent, RetainedRecord};
use sovdb_types::{ClusterId, ClusterState, EventId, ProjectId};

use super::pg::{self, store_failure, ClusterParams};
use super::{backup, cluster_create};
use crate::App;

pub const KIND: &str = "cluster.delete";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("mark-deleting", mark_deleting)
        .step("stop-members", cluster_create::stop_members)
        .step("backups", backups)
        .step("remove-files", remove_files)
        .step("forget", forget)
}

async fn mark_deleting(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let Some((record, _)) = pg::cluster(app, cluster).await? else { return Ok(json!({})) };
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.cluster_set_state(cluster, ClusterState::Deleting).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"name": record.name, "project": record.project_id}))
}

/// The parameters of `cluster.delete`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeleteParams {
    pub cluster: ClusterId,
    #[serde(default)]
    pub delete_backups: bool,
}

async fn backups(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: DeleteParams = ctx.params()?;
    let app = &ctx.services;
    let Some((record, spec)) = pg::cluster(app, p.cluster).await? else { return Ok(json!({})) };
    let Some(repo) = spec.backup_repo else { return Ok(json!({"backups": null})) };
    if p.delete_backups {
        // From a member's configuration: the files go in the next step.
        let members = pg::members(app, p.cluster).await?;
        if let Some(m) = members.first() {
            backup::delete_stanza(app, &m.host, &m.layout(), &p.cluster.to_string()).await?;
        }
        return Ok(json!({"backups": "deleted"}));
    }
    let kept = RetainedRecord { cluster: record, repo_id: repo, repo: String::new(), deleted_at: crate::now() };
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.retained_create(&kept).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"backups": "kept", "repository": repo}))
}

async fn remove_files(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    cluster_create::remove_files(ctx).await
}

async fn forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let app = ctx.services.clone();
    let marked: Value = ctx.output("mark-deleting")?;
    let kept = ctx.output::<Value>("backups").ok().is_some_and(|b| b["backups"] == "kept");
    cluster_create::forget(ctx).await?;
    if let (Some(name), Some(project)) = (marked["name"].as_str(), marked["project"].as_str()) {
        let mut tx = app.store.write().await.map_err(store_failure)?;
        let event = NewEvent {
            id: EventId::new(),
            at: crate::now(),
            project_id: project.parse::<ProjectId>().ok(),
            target: format!("cluster/{name}"),
            kind: crate::events::kind::DELETED.into(),
            message: if kept {
                format!(
                    "cluster {name} was deleted; its backups are kept: `sovdb cluster restore {name} --as NEW` \
                     restores it, `sovdb backup purge {name}` deletes them"
                )
            } else {
                format!("cluster {name} was deleted")
            },
        };
        crate::events::record(tx.as_mut(), &event).await.map_err(super::app_failure)?;
        tx.commit().await.map_err(store_failure)?;
    }
    Ok(json!({}))
}

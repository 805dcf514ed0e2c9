//! `cluster.delete`: stops and removes everything of a cluster, and releases its ports,
//! capacity and secrets.
//!
//! Parameters: `{"cluster": ID}`.
//!
//! Steps, each idempotent (and none undone: a delete that fails stays `deleting` and can
//! be run again):
//! 1. `mark-deleting`: the cluster's state becomes `deleting`.
//! 2. `stop-members`: every process of every member stopped and forgotten by its agent;
//!    the cluster's keys deleted from the DCS.
//! 3. `remove-files`: the members' directories (data, configuration, logs).
//! 4. `forget`: ports, secrets, members and the cluster's row; an event.

use serde_json::{json, Value};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_store::NewEvent;
use sovdb_types::{ClusterState, EventId, ProjectId};

use super::cluster_create;
use super::pg::{self, store_failure, ClusterParams};
use crate::App;

pub const KIND: &str = "cluster.delete";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step("mark-deleting", mark_deleting)
        .step("stop-members", cluster_create::stop_members)
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

async fn remove_files(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    cluster_create::remove_files(ctx).await
}

async fn forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let app = ctx.services.clone();
    let marked: Value = ctx.output("mark-deleting")?;
    cluster_create::forget(ctx).await?;
    if let (Some(name), Some(project)) = (marked["name"].as_str(), marked["project"].as_str()) {
        let mut tx = app.store.write().await.map_err(store_failure)?;
        tx.event_append(&NewEvent {
            id: EventId::new(),
            at: crate::now(),
            project_id: project.parse::<ProjectId>().ok(),
            target: format!("cluster/{name}"),
            kind: "deleted".into(),
            message: format!("cluster {name} was deleted"),
        })
        .await
        .map_err(store_failure)?;
        tx.commit().await.map_err(store_failure)?;
    }
    Ok(json!({}))
}

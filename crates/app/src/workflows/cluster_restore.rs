//! `cluster.restore`: a new cluster from a backup of another one, at a point in time, an
//! LSN or the end of its archived WAL.
//!
//! Parameters: `{"cluster": ID, "restore": RestoreFrom}`; the new cluster's row (state
//! `creating`, its spec: the source's, with the placement and repository asked for) was
//! written with the operation.
//!
//! The steps are cluster.create's (see there) with two more:
//! - `archive-source` (after `install-packages`): when the source runs, its primary
//!   switches to a new WAL segment and waits until it is archived (`pgbackrest check`),
//!   so a target just before now is in the repository.
//! - `forget-source` (before `mark-ready`): the members' restore configuration (the
//!   source's repository and its secrets) is removed.
//!
//! `write-configs` gives every member Patroni's custom bootstrap: `pgbackrest restore` of
//! the source's stanza (only read) into the data directory with the recovery target, then
//! recovery promotes; whichever member wins Patroni's race to initialise runs it, the others
//! clone it. The new cluster archives into its own stanza, and `first-backup` takes its
//! first full backup. The source is untouched.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_agent::proto::RemoveRequest;
use sovdb_operations::{StepCtx, StepFailure, Wait, Workflow};
use sovdb_postgres::backup::{self as br, RestoreTarget};
use sovdb_types::{ClusterId, RepoId};

use super::cluster_create as cc;
use super::pg::{self, ClusterParams};
use super::{agent_failure, backup, repo_tls};
use crate::{patroni, App};

pub const KIND: &str = "cluster.restore";

/// Where a restored cluster comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RestoreFrom {
    /// The source's stanza (its cluster ID) and repository.
    pub stanza: String,
    pub repo: RepoId,
    pub target: RestoreTarget,
    /// The backup recovery starts from; none: the newest.
    pub set: Option<String>,
    /// The source cluster, while it exists.
    pub source: Option<ClusterId>,
    /// `db1 at 2026-11-21T10:15:00+00:00`, for events.
    pub describe: String,
    /// The size of the databases in the backup recovery starts from, in bytes (what the
    /// restore's deadline grows with); absent in operations of older releases.
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    restore: Option<RestoreFrom>,
}

/// The restore a cluster.create-style step is part of, if any.
pub(crate) fn restore_params(ctx: &StepCtx<App>) -> Result<Option<RestoreFrom>, StepFailure> {
    Ok(ctx.params::<Params>()?.restore)
}

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step_with_undo("register", |_| async { Ok(json!({})) }, cc::forget)
        .allocate("place", cc::place)
        .allocate("generate-secrets", cc::generate_secrets)
        .step("ensure-dcs", cc::ensure_dcs)
        .step("install-packages", cc::install_packages)
        .step("archive-source", archive_source)
        .step_with_undo("write-configs", cc::write_configs, cc::remove_files)
        .step_with_undo("start-members", cc::start_members, cc::stop_members)
        .step("wait-primary", wait_restored)
        .step("create-database", cc::create_database)
        .step_with_undo("stanza-setup", backup::stanza_setup, backup::stanza_forget)
        .step("first-backup", backup::first_backup)
        .step_with_undo("start-routers", cc::start_routers, cc::stop_members)
        .step("wait-replicas", cc::wait_replicas)
        .step("forget-source", forget_source)
        .step("mark-ready", cc::mark_ready)
}

async fn archive_source(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Some(from) = restore_params(&ctx)? else { return Err(StepFailure::permanent("not a restore")) };
    let app = &ctx.services;
    let Some(source) = from.source else { return Ok(json!({"archived": false})) };
    if from.target != RestoreTarget::Latest && !matches!(from.target, RestoreTarget::Time(_)) {
        return Ok(json!({"archived": false}));
    }
    let members = pg::members(app, source).await?;
    if members.is_empty() {
        return Ok(json!({"archived": false}));
    }
    let (_, primary) = patroni::wait_primary(app, &members, Duration::from_secs(30))
        .await
        .map_err(|e| StepFailure::transient(format!("the source has no primary to archive its WAL: {e}")))?;
    let argv = br::check_argv(&primary.layout(), &from.stanza);
    backup::pgbackrest(app, &primary.host, &argv, Duration::from_secs(120), "archive the source's current WAL").await?;
    Ok(json!({"archived": true, "on": primary.name}))
}

/// How long `wait-primary` of a restore waits at least: pgBackRest restores the backup
/// and PostgreSQL replays WAL up to the target before the member is promoted, so
/// [`RESTORE_PER_GIB`] more per GiB of the backup's databases.
pub(crate) const RESTORE_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// The allowance per GiB of the backed-up databases (about 8.5 MB/s: restore and replay).
pub(crate) const RESTORE_PER_GIB: Duration = Duration::from_secs(120);

async fn wait_restored(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let from = restore_params(&ctx)?;
    let members = pg::members(&ctx.services, cluster).await?;
    let gib = from.and_then(|f| f.size).unwrap_or(0) as f64 / (1u64 << 30) as f64;
    let deadline = RESTORE_DEADLINE + RESTORE_PER_GIB * gib.floor() as u32;
    let primary = cc::await_primary(&ctx, &members, Wait::new("the restored primary", deadline)).await?;
    Ok(json!({"primary": primary}))
}

async fn forget_source(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let Some(from) = restore_params(&ctx)? else { return Err(StepFailure::permanent("not a restore")) };
    let app = &ctx.services;
    for m in pg::members(app, cluster).await? {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        // The restore configuration, and the source stanza's certificate beside it (when
        // the repository is on another host): the new cluster keeps no way into the source.
        let layout = m.layout();
        let source_cert = repo_tls::stanza_cert_files(&format!("{}/tls", layout.dir), &from.stanza);
        for path in [layout.pgbackrest_restore_conf(), source_cert.cert, source_cert.key] {
            client.remove(&RemoveRequest { path: path.into(), recursive: false }).await.map_err(agent_failure)?;
        }
    }
    Ok(json!({}))
}

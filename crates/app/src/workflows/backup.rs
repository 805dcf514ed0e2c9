//! pgBackRest for clusters with a backup repository: every member's `pgbackrest.conf`, the
//! stanza (the cluster's ID) made when the cluster is, the backups, and `info`.
//!
//! `backup.create` — parameters `{"cluster": ID, "type": "full"|"diff"|"incr"}` — has one
//! step, `backup`: pgBackRest on the primary, annotated with the operation's ID. It is
//! idempotent: a rerun (after a crash of the control plane) first looks for a backup with
//! that annotation and keeps it. pgBackRest itself resumes or cleans up a backup that was
//! cut short.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_agent::proto::RunCommandRequest;
use sovdb_agent::AgentClient;
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_postgres::backup::{self as br, RepoAccess, RepoTarget, StanzaInfo};
use sovdb_postgres::render::MemberLayout;
use sovdb_postgres::OS_USER;
use sovdb_types::{BackupType, ClusterId, RepoId, RepoType, StepError};

use super::agent_failure;
use super::pg::{self, store_failure, ClusterParams, Member};
use crate::{patroni, repos, App};

pub const KIND: &str = "backup.create";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND).step("backup", backup)
}

/// The parameters of `backup.create`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BackupParams {
    pub cluster: ClusterId,
    #[serde(rename = "type")]
    pub kind: BackupType,
}

/// What a member's pgBackRest needs to reach a repository (with its secrets), and the
/// CA certificate of an S3 endpoint to install beside it.
pub(crate) struct Reach {
    pub access: RepoAccess,
    pub ca_pem: Option<String>,
}

/// The file an S3 repository's CA certificate is written to on a member.
fn repo_ca_file(layout: &MemberLayout, repo: RepoId) -> String {
    format!("{}/tls/repo-{}.crt", layout.dir, pg::short_id(&repo.0))
}

pub(crate) async fn reach(app: &App, repo: RepoId, layout: &MemberLayout) -> Result<Reach, StepFailure> {
    let record = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        tx.repo_get_by_id(repo).await.map_err(store_failure)?
    }
    .ok_or_else(|| StepFailure::permanent("the cluster's backup repository no longer exists"))?;
    let spec = record.spec.clone();
    let owner = repos::owner(repo);
    let cipher_pass = pg::secret(app, &owner, repos::CIPHER_PASS).await?;
    if record.encrypted && cipher_pass.is_none() {
        return Err(StepFailure::permanent(format!("repository {}'s passphrase is missing", record.name)));
    }
    let target = match record.kind {
        RepoType::Posix => RepoTarget::Posix { path: spec.path.clone() },
        RepoType::S3 => RepoTarget::S3 {
            endpoint: spec.endpoint.clone().unwrap_or_default(),
            bucket: spec.bucket.clone().unwrap_or_default(),
            region: spec.region.clone().unwrap_or_default(),
            uri_style: spec.uri_style.unwrap_or_default(),
            path: spec.path.clone(),
            ca_file: spec.ca_pem.as_ref().map(|_| repo_ca_file(layout, repo)),
        },
    };
    let s3_key = match record.kind {
        RepoType::S3 => {
            let key = pg::secret(app, &owner, repos::S3_KEY).await?;
            let secret = pg::secret(app, &owner, repos::S3_KEY_SECRET).await?;
            key.zip(secret)
        }
        RepoType::Posix => None,
    };
    let access = RepoAccess { target, cipher_pass, s3_key, retention_full: br::DEFAULT_RETENTION_FULL };
    Ok(Reach { access, ca_pem: spec.ca_pem })
}

/// A repository's name (its ID when it is gone), for listings and events.
pub(crate) async fn repo_name(app: &App, repo: RepoId) -> Result<String, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    Ok(tx.repo_get_by_id(repo).await.map_err(store_failure)?.map(|r| r.name).unwrap_or_else(|| repo.to_string()))
}

/// Writes a member's pgBackRest configuration `path` for `stanza` and the repository
/// `repo` (and the S3 endpoint's CA); whether anything changed.
pub(crate) async fn write_member_conf(
    app: &App,
    client: &AgentClient,
    m: &Member,
    path: String,
    stanza: &str,
    repo: RepoId,
) -> Result<bool, StepFailure> {
    let layout = m.layout();
    let r = reach(app, repo, &layout).await?;
    let mut any = false;
    if let Some(ca) = r.ca_pem {
        any |= pg::write(client, OS_USER, repo_ca_file(&layout, repo), ca, 0o644).await?;
    }
    let conf = br::pgbackrest_conf(&layout, stanza, m.spec.ports.postgres, &r.access);
    any |= pg::write(client, OS_USER, path, conf, 0o600).await?;
    Ok(any)
}

/// Runs a pgBackRest command as the database user, for at most `timeout`; a failure
/// carries pgBackRest's own message (never a secret: those are in the file).
pub(crate) async fn pgbackrest(
    app: &App,
    m: &Member,
    argv: &[String],
    timeout: Duration,
    what: &str,
) -> Result<String, StepFailure> {
    let client = pg::agent(app, &m.host, timeout + Duration::from_secs(30)).await?;
    let req = RunCommandRequest {
        user: Some(OS_USER.into()),
        timeout_secs: timeout.as_secs(),
        ..RunCommandRequest::new(argv.iter().cloned())
    };
    let out = client.run_command(&req).await.map_err(agent_failure)?;
    if out.status.code == Some(0) && !out.timed_out {
        return Ok(out.stdout);
    }
    let message = if out.timed_out { format!("cannot {what}: timed out") } else { format!("cannot {what}") };
    // pgBackRest's errors are worth a retry when they are about reaching things.
    let transient = out.timed_out || out.stderr.contains("unable to connect") || out.stderr.contains("[049]");
    Err(StepFailure { transient, error: StepError::command(message, argv.join(" "), out.status.code, &out.stderr) })
}

/// `info` of the cluster's stanza, asked of each member's host in turn until one answers.
pub(crate) async fn info(
    app: &App,
    members: &[Member],
    stanza: &str,
    repository: &str,
) -> Result<StanzaInfo, StepFailure> {
    let mut last = StepFailure::permanent("the cluster has no member");
    for m in members {
        let argv = br::info_argv(&m.layout(), stanza);
        match pgbackrest(app, m, &argv, Duration::from_secs(60), "read the repository's backups").await {
            Ok(out) => return br::parse_info(&out, stanza, repository).map_err(StepFailure::permanent),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A step of cluster.create and cluster.restore: the stanza in the repository, then a
/// check that WAL archiving works (a segment switched and archived), on the primary.
/// Nothing to do without a repository. Both commands may run again.
pub(crate) async fn stanza_setup(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    if spec.backup_repo.is_none() {
        return Ok(json!({"repository": null}));
    }
    let members = pg::members(app, cluster).await?;
    let (_, primary) = patroni::wait_primary(app, &members, Duration::from_secs(60))
        .await
        .map_err(|e| StepFailure::transient(format!("no primary: {e}")))?;
    let stanza = cluster.to_string();
    let layout = primary.layout();
    pgbackrest(app, primary, &br::stanza_create_argv(&layout, &stanza), Duration::from_secs(120), "create the stanza")
        .await?;
    pgbackrest(app, primary, &br::check_argv(&layout, &stanza), Duration::from_secs(120), "check WAL archiving")
        .await?;
    Ok(json!({"stanza": stanza, "on": primary.name}))
}

/// Undo of [`stanza_setup`]: the stanza and everything in it leave the repository (a
/// create that failed leaves nothing behind). pgBackRest wants the stanza stopped first.
pub(crate) async fn stanza_forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let Some((_, spec)) = pg::cluster(app, cluster).await? else { return Ok(json!({})) };
    if spec.backup_repo.is_none() {
        return Ok(json!({}));
    }
    let stanza = cluster.to_string();
    let members = pg::members(app, cluster).await?;
    let Some(m) = members.first() else { return Ok(json!({})) };
    let layout = m.layout();
    for (args, what) in [
        (&["stop"][..], "stop the stanza"),
        (&["--force", "stanza-delete"][..], "delete the stanza"),
        (&["start"][..], "start the stanza"),
    ] {
        let argv = br::command_argv(&layout, &stanza, args);
        pgbackrest(app, m, &argv, Duration::from_secs(300), what).await?;
    }
    Ok(json!({"deleted": stanza}))
}

/// Takes a backup of `kind` annotated with `operation` on the primary, unless one with
/// that annotation exists already; its label and size.
pub(crate) async fn take_backup(
    app: &App,
    cluster: ClusterId,
    kind: BackupType,
    operation: &str,
) -> Result<Value, StepFailure> {
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let Some(repo) = spec.backup_repo else {
        return Err(StepFailure::permanent(format!("cluster {} has no backup repository", record.name)));
    };
    let members = pg::members(app, cluster).await?;
    let stanza = cluster.to_string();
    let repo_name = repo_name(app, repo).await?;
    let found = |info: &StanzaInfo| {
        info.backups.iter().find(|b| b.operation.as_deref() == Some(operation)).map(|b| b.backup.clone())
    };
    if let Some(b) = found(&info(app, &members, &stanza, &repo_name).await?) {
        return Ok(json!({"backup": b.id, "type": b.kind, "size": b.size, "repo_size": b.repo_size}));
    }
    let (_, primary) = patroni::wait_primary(app, &members, Duration::from_secs(60))
        .await
        .map_err(|e| StepFailure::transient(format!("no primary: {e}")))?;
    let argv = br::backup_argv(&primary.layout(), &stanza, kind, operation);
    pgbackrest(app, primary, &argv, Duration::from_secs(6 * 3600), "take the backup").await?;
    let b = found(&info(app, &members, &stanza, &repo_name).await?)
        .ok_or_else(|| StepFailure::transient("the backup just taken is not in the repository's list"))?;
    let message = format!(
        "{} backup {} of cluster {} in repository {}: {} ({} in the repository)",
        b.kind.as_str(),
        b.id,
        record.name,
        repo_name,
        sovdb_types::human_bytes(b.size),
        sovdb_types::human_bytes(b.repo_size)
    );
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.event_append(&pg::event(&record, "backup", message)).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({"backup": b.id, "type": b.kind, "size": b.size, "repo_size": b.repo_size}))
}

/// A step of cluster.create and cluster.restore: the first full backup, so the new
/// cluster can be restored from the start.
pub(crate) async fn first_backup(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    if spec.backup_repo.is_none() {
        return Ok(json!({"backup": null}));
    }
    take_backup(app, cluster, BackupType::Full, &ctx.operation.to_string()).await
}

async fn backup(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: BackupParams = ctx.params()?;
    take_backup(&ctx.services, p.cluster, p.kind, &ctx.operation.to_string()).await
}

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
use sovdb_agent::proto::{RemoveRequest, RunCommandRequest};
use sovdb_agent::AgentClient;
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_postgres::backup::{self as br, RepoAccess, RepoTarget, StanzaInfo};
use sovdb_postgres::render::MemberLayout;
use sovdb_postgres::OS_USER;
use sovdb_store::{HostRecord, RepoRecord};
use sovdb_types::{BackupType, ClusterId, HostStatus, PageRequest, RepoId, RepoType, StepError};

use super::pg::{self, store_failure, ClusterParams, Member};
use super::{agent_failure, repo_tls};
use crate::{patroni, repos, App};

pub const KIND: &str = "backup.create";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND).step("backup", backup)
}

/// `backup.purge`: the kept backups of a deleted cluster leave the repository (step
/// `delete-stanza`, from a scratch directory on a host that reaches it), then the record
/// of them (step `forget`).
pub const PURGE_KIND: &str = "backup.purge";

pub fn purge_workflow() -> Workflow<App> {
    Workflow::new(PURGE_KIND).step("delete-stanza", purge_stanza).step("forget", purge_forget)
}

/// The parameters of `backup.purge`: the deleted cluster (its stanza) and its repository.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PurgeParams {
    pub cluster: ClusterId,
    pub repo: RepoId,
}

async fn purge_stanza(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: PurgeParams = ctx.params()?;
    let app = &ctx.services;
    let repo = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        tx.repo_get_by_id(p.repo).await.map_err(store_failure)?
    }
    .ok_or_else(|| StepFailure::permanent("the repository no longer exists"))?;
    let host = site_host(app, &repo, &[]).await?;
    let dir = format!("{}/scratch/purge-{}", host.host.base_dir, pg::short_id(&ctx.operation.0));
    let stanza = p.cluster.to_string();
    let layout = site_prepare(app, &host, dir, &stanza, repo.id, 5432).await?;
    let r = delete_stanza(app, &host, &layout, &stanza).await;
    site_remove(app, &host, &layout).await?;
    r?;
    Ok(json!({"deleted": stanza}))
}

async fn purge_forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let p: PurgeParams = ctx.params()?;
    let mut tx = ctx.services.store.write().await.map_err(store_failure)?;
    tx.retained_delete(p.cluster).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({}))
}

/// Deletes `stanza` and everything in it from the repository of the configuration in
/// `layout` (pgBackRest wants the stanza stopped first). Idempotent.
pub(crate) async fn delete_stanza(
    app: &App,
    host: &HostRecord,
    layout: &MemberLayout,
    stanza: &str,
) -> Result<(), StepFailure> {
    for (args, what) in [
        (&["stop"][..], "stop the stanza"),
        (&["--force", "stanza-delete"][..], "delete the stanza"),
        (&["start"][..], "start the stanza"),
    ] {
        let argv = br::command_argv(layout, stanza, args);
        pgbackrest(app, host, &argv, Duration::from_secs(300), what).await?;
    }
    Ok(())
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
    pub record: RepoRecord,
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
    Ok(Reach { access, ca_pem: spec.ca_pem, record })
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
    write_conf(app, client, &m.host, &m.layout(), m.spec.ports.postgres, path, stanza, repo).await
}

/// Writes pgBackRest's configuration `path` on `host` for `stanza` of the PostgreSQL in
/// `layout` (its port `pg_port`) and the repository `repo`, with the S3 endpoint's CA
/// beside it; a posix repository on another host is reached through its TLS server
/// (see [`repo_tls`]), with the stanza's certificate beside it.
#[allow(clippy::too_many_arguments)]
async fn write_conf(
    app: &App,
    client: &AgentClient,
    host: &HostRecord,
    layout: &MemberLayout,
    pg_port: u16,
    path: String,
    stanza: &str,
    repo: RepoId,
) -> Result<bool, StepFailure> {
    let r = reach(app, repo, layout).await?;
    let mut any = false;
    if let Some(ca) = r.ca_pem {
        any |= pg::write(client, OS_USER, repo_ca_file(layout, repo), ca, 0o644).await?;
    }
    let mut access = r.access;
    if repo_tls::is_remote(&r.record, host.host.id) {
        let tls_dir = format!("{}/tls", layout.dir);
        let (target, changed) =
            repo_tls::remote_target(app, &r.record, &access, host, client, &tls_dir, stanza).await?;
        any |= changed;
        // The passphrase stays on the repository's host.
        access = RepoAccess { target, cipher_pass: None, s3_key: None, retention_full: access.retention_full };
    }
    let conf = br::pgbackrest_conf(layout, stanza, pg_port, &access);
    any |= pg::write(client, OS_USER, path, conf, 0o600).await?;
    Ok(any)
}

/// The host where pgBackRest works on a repository outside any member (the backups of a
/// deleted cluster, a restore drill): a posix repository's own host; for s3, the first of
/// `near` (the cluster's hosts), else a ready host of the repository's location.
pub(crate) async fn site_host(app: &App, repo: &RepoRecord, near: &[HostRecord]) -> Result<HostRecord, StepFailure> {
    if let Some(host) = repo.host_id {
        return host_record(app, host).await;
    }
    if let Some(h) = near.first() {
        return Ok(h.clone());
    }
    let mut tx = app.store.read().await.map_err(store_failure)?;
    let hosts = tx.host_list(Some(repo.location_id), &PageRequest::first(1000)).await.map_err(store_failure)?;
    hosts.items.into_iter().find(|h| h.host.status == HostStatus::Ready).ok_or_else(|| {
        StepFailure::transient(format!(
            "no host of location {} is ready to reach repository {}",
            repo.location, repo.name
        ))
    })
}

/// The host `id`, as stored.
pub(crate) async fn host_record(app: &App, id: sovdb_types::HostId) -> Result<HostRecord, StepFailure> {
    let mut tx = app.store.read().await.map_err(store_failure)?;
    pg::host_by_id(tx.as_mut(), id).await
}

/// A scratch directory `dir` on `host` with pgBackRest's configuration for `stanza` in
/// `repo` (PostgreSQL, if one runs there, on `pg_port` with its socket in `dir/run`): the
/// directories made, the file written. Its layout.
pub(crate) async fn site_prepare(
    app: &App,
    host: &HostRecord,
    dir: String,
    stanza: &str,
    repo: RepoId,
    pg_port: u16,
) -> Result<MemberLayout, StepFailure> {
    let layout = MemberLayout::new(dir);
    let client = pg::agent(app, host, Duration::from_secs(90)).await?;
    pg::make_dirs(&client, OS_USER, &site_dirs(&layout)).await?;
    write_conf(app, &client, host, &layout, pg_port, layout.pgbackrest_conf(), stanza, repo).await?;
    Ok(layout)
}

/// The directories of a scratch directory for pgBackRest.
fn site_dirs(layout: &MemberLayout) -> [String; 6] {
    [
        layout.dir.clone(),
        layout.run_dir(),
        format!("{}/tls", layout.dir),
        format!("{}/log", layout.dir),
        layout.pgbackrest_log_dir(),
        layout.pgbackrest_lock_dir(),
    ]
}

/// Removes a scratch directory (and the secrets in its configuration).
pub(crate) async fn site_remove(app: &App, host: &HostRecord, layout: &MemberLayout) -> Result<(), StepFailure> {
    let client = pg::agent(app, host, Duration::from_secs(90)).await?;
    client.remove(&RemoveRequest { path: layout.dir.clone().into(), recursive: true }).await.map_err(agent_failure)?;
    Ok(())
}

/// `info` of `stanza` in the repository `repo`, from a scratch directory on a host that
/// reaches it (for a cluster that has no member any more).
pub(crate) async fn info_from_site(app: &App, repo: &RepoRecord, stanza: &str) -> Result<StanzaInfo, StepFailure> {
    let host = site_host(app, repo, &[]).await?;
    let dir = format!("{}/scratch/info-{}", host.host.base_dir, uuid::Uuid::new_v4().simple());
    let layout = site_prepare(app, &host, dir, stanza, repo.id, 5432).await?;
    let out = pgbackrest(
        app,
        &host,
        &br::info_argv(&layout, stanza),
        Duration::from_secs(60),
        "read the repository's backups",
    )
    .await;
    site_remove(app, &host, &layout).await?;
    br::parse_info(&out?, stanza, &repo.name).map_err(StepFailure::permanent)
}

/// Runs a pgBackRest command as the database user, for at most `timeout`; a failure
/// carries pgBackRest's own message (never a secret: those are in the file).
pub(crate) async fn pgbackrest(
    app: &App,
    host: &HostRecord,
    argv: &[String],
    timeout: Duration,
    what: &str,
) -> Result<String, StepFailure> {
    let client = pg::agent(app, host, timeout + Duration::from_secs(30)).await?;
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
        match pgbackrest(app, &m.host, &argv, Duration::from_secs(60), "read the repository's backups").await {
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
    ensure_tls(app, spec.backup_repo, &members).await?;
    let layout = primary.layout();
    pgbackrest(
        app,
        &primary.host,
        &br::stanza_create_argv(&layout, &stanza),
        Duration::from_secs(120),
        "create the stanza",
    )
    .await?;
    pgbackrest(app, &primary.host, &br::check_argv(&layout, &stanza), Duration::from_secs(120), "check WAL archiving")
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
    delete_stanza(app, &m.host, &m.layout(), &stanza).await?;
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
    // Taken already by this operation (before a crash): only its event may be missing.
    let b = match found(&info(app, &members, &stanza, &repo_name).await?) {
        Some(b) => b,
        None => {
            run_backup(app, &members, &spec, &stanza, kind, operation).await?;
            found(&info(app, &members, &stanza, &repo_name).await?)
                .ok_or_else(|| StepFailure::transient("the backup just taken is not in the repository's list"))?
        }
    };
    let message = format!(
        "{} backup {} of cluster {} in repository {}: {} ({} in the repository)",
        b.kind.as_str(),
        b.id,
        record.name,
        repo_name,
        sovdb_types::human_bytes(b.size),
        sovdb_types::human_bytes(b.repo_size)
    );
    if let Ok(op) = operation.parse() {
        pg::event_once(app, &record, op, "backup", message).await?;
    }
    Ok(json!({"backup": b.id, "type": b.kind, "size": b.size, "repo_size": b.repo_size}))
}

/// pgBackRest's backup on the primary, expiring what the cluster's retention no longer keeps.
async fn run_backup(
    app: &App,
    members: &[Member],
    spec: &sovdb_types::ClusterSpec,
    stanza: &str,
    kind: BackupType,
    operation: &str,
) -> Result<(), StepFailure> {
    let (_, primary) = patroni::wait_primary(app, members, Duration::from_secs(60))
        .await
        .map_err(|e| StepFailure::transient(format!("no primary: {e}")))?;
    let retention = spec.backup_policy.retention_full.unwrap_or(br::DEFAULT_RETENTION_FULL);
    if let Some(repo) = spec.backup_repo {
        let record = {
            let mut tx = app.store.read().await.map_err(store_failure)?;
            tx.repo_get_by_id(repo).await.map_err(store_failure)?
        }
        .ok_or_else(|| StepFailure::permanent("the cluster's backup repository no longer exists"))?;
        if repo_tls::is_remote(&record, primary.host.host.id) {
            return backup_on_repo_host(app, &record, primary, stanza, kind, operation, retention).await;
        }
    }
    let argv = br::backup_argv(&primary.layout(), stanza, kind, operation, retention);
    pgbackrest(app, &primary.host, &argv, Duration::from_secs(6 * 3600), "take the backup").await?;
    Ok(())
}

/// The TLS servers a cluster's backups go through are up to date, when its repository is
/// a posix one on another host than some member.
async fn ensure_tls(app: &App, repo: Option<RepoId>, members: &[Member]) -> Result<(), StepFailure> {
    let Some(repo) = repo else { return Ok(()) };
    let record = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        tx.repo_get_by_id(repo).await.map_err(store_failure)?
    };
    let Some(record) = record else { return Ok(()) };
    let hosts: Vec<HostRecord> = members.iter().map(|m| m.host.clone()).collect();
    repo_tls::ensure_for_cluster(app, &record, &hosts).await
}

/// pgBackRest takes backups only where the repository is: with the primary on another
/// host, `backup` runs on the repository's host, from a scratch directory whose
/// configuration reaches the primary through its host's TLS server with the stanza's
/// certificate. Crash safety: the scratch directory is named after the operation, so a
/// rerun writes the same one again, and it is removed whether the backup worked or not.
#[allow(clippy::too_many_arguments)]
async fn backup_on_repo_host(
    app: &App,
    repo: &RepoRecord,
    primary: &Member,
    stanza: &str,
    kind: BackupType,
    operation: &str,
    retention: u32,
) -> Result<(), StepFailure> {
    let host = host_record(app, repo.host_id.expect("a posix repository has a host")).await?;
    repo_tls::ensure_server(app, &host).await?;
    let server_port = repo_tls::ensure_server(app, &primary.host).await?;
    let short = operation.parse::<uuid::Uuid>().map(|u| pg::short_id(&u)).unwrap_or_else(|_| operation.to_string());
    let layout = MemberLayout::new(format!("{}/scratch/backup-{short}", host.host.base_dir));
    let client = pg::agent(app, &host, Duration::from_secs(90)).await?;
    pg::make_dirs(&client, OS_USER, &site_dirs(&layout)).await?;
    let r = reach(app, repo.id, &layout).await?;
    let tls_dir = format!("{}/tls", layout.dir);
    let (tls, _) = repo_tls::write_stanza_cert(app, &client, &tls_dir, repo.id, stanza).await?;
    let pg = br::RemotePg {
        address: primary.host.host.address.clone(),
        server_port,
        config: primary.layout().pgbackrest_conf(),
        layout: primary.layout(),
        pg_port: primary.spec.ports.postgres,
        tls,
    };
    let conf = br::repo_host_backup_conf(&layout, stanza, &r.access, &pg);
    pg::write(&client, OS_USER, layout.pgbackrest_conf(), conf, 0o600).await?;
    let argv = br::backup_argv(&layout, stanza, kind, operation, retention);
    let taken = pgbackrest(app, &host, &argv, Duration::from_secs(6 * 3600), "take the backup").await;
    site_remove(app, &host, &layout).await?;
    taken.map(|_| ())
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
    let r = take_backup(&ctx.services, p.cluster, p.kind, &ctx.operation.to_string()).await;
    // A failure that retrying won't mend is on the cluster's timeline (a transient one is
    // retried by the engine, which knows nothing of events).
    if let Err(f) = &r {
        if !f.transient {
            if let Some((record, _)) = pg::cluster(&ctx.services, p.cluster).await? {
                let message = format!(
                    "{} backup of cluster {} failed: {} (operation {})",
                    p.kind.as_str(),
                    record.name,
                    f.error,
                    ctx.operation
                );
                pg::event_once(&ctx.services, &record, ctx.operation, crate::events::kind::BACKUP_FAILED, message)
                    .await?;
            }
        }
    }
    r
}

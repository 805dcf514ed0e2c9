//! Backups of the caller's project's clusters: take one (an operation, see
//! `workflows::backup`), list what a repository holds, and restore into a new cluster
//! (`workflows::cluster_restore`). What a restore needs is checked here, against the
//! source's repository, before anything exists.

use chrono::Utc;
use sovdb_postgres::backup::{is_lsn, RestoreTarget};
use sovdb_store::{ClusterRecord, RepoRecord, StoreError};
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::rbac::Action;
use crate::workflows::backup::{self as wb, BackupParams, PurgeParams};
use crate::workflows::backup_verify::{self, VerifyParams};
use crate::workflows::cluster_restore::{self, RestoreFrom};
use crate::workflows::pg::ClusterParams;
use crate::{App, AppError, Ctx, Result};

/// The repository a new cluster in `location` archives into: the one named, or else the
/// project's default for the location (none when there is no default).
pub(crate) async fn cluster_repo(
    tx: &mut dyn sovdb_store::Tx,
    ctx: &Ctx,
    location: &Location,
    name: Option<&str>,
) -> Result<Option<RepoRecord>> {
    let Some(name) = name else { return Ok(tx.repo_default(ctx.project.id, location.id).await?) };
    let repo = tx.repo_get(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("repository", name))?;
    if repo.location_id != location.id {
        return Err(AppError::Invalid(format!(
            "repository {name:?} is in another location than {:?}: give a repository of that location \
             (`sovdb repo list`)",
            location.name
        )));
    }
    Ok(Some(repo))
}

fn unavailable(f: sovdb_operations::StepFailure) -> AppError {
    AppError::Unavailable(f.error.to_string())
}

impl App {
    /// Starts `backup.create` on the cluster's primary.
    pub async fn backup_create(&self, ctx: &Ctx, name: &str, req: BackupCreate) -> Result<Operation> {
        ctx.require(Action::BackupCreate)?;
        let (_, record, spec, _) = self.cluster_parts(ctx, name).await?;
        if spec.backup_repo.is_none() {
            return Err(AppError::Invalid(format!(
                "cluster {name:?} has no backup repository: it was created without --backup-repo and its \
                 location had no default repository"
            )));
        }
        let kind = req.kind.unwrap_or(BackupType::Incr);
        let params = serde_json::to_value(BackupParams { cluster: record.id, kind }).expect("serialise");
        self.cluster_operation(ctx, &record, wb::KIND, "backup.create", params, &req).await
    }

    /// What the cluster's repository holds for it, oldest first (also for a deleted
    /// cluster whose backups were kept).
    pub async fn backup_list(&self, ctx: &Ctx, name: &str) -> Result<Vec<Backup>> {
        ctx.require(Action::BackupRead)?;
        let source = self.backup_source(ctx, name).await?;
        let Some(repo) = source.repo.clone() else { return Ok(vec![]) };
        let info = source.info(self, &repo).await?;
        Ok(info.backups.into_iter().map(|b| b.backup).collect())
    }

    /// The cluster `name`, or else the newest deleted cluster of that name whose backups
    /// were kept.
    async fn backup_source(&self, ctx: &Ctx, name: &str) -> Result<Source> {
        match self.cluster_parts(ctx, name).await {
            Ok((view, record, spec, members)) => {
                let repo = match spec.backup_repo {
                    Some(id) => self.store.read().await?.repo_get_by_id(id).await?,
                    None => None,
                };
                Ok(Source { location: view.location, record, spec, members, repo, live: true })
            }
            Err(AppError::NotFound { kind: "cluster", .. }) => {
                let mut tx = self.store.read().await?;
                let Some(kept) = tx.retained_get(ctx.project.id, name).await? else {
                    return Err(AppError::not_found("cluster", name));
                };
                let spec: ClusterSpec = serde_json::from_value(kept.cluster.spec.clone()).map_err(|e| {
                    AppError::Internal(anyhow::anyhow!(e).context("the deleted cluster's stored spec is unreadable"))
                })?;
                let repo = tx.repo_get_by_id(kept.repo_id).await?;
                let locations = tx.location_list(&PageRequest::first(1000)).await?;
                let location = locations
                    .items
                    .into_iter()
                    .find(|l| l.id == kept.cluster.location_id)
                    .map(|l| l.name)
                    .unwrap_or_default();
                Ok(Source { location, record: kept.cluster, spec, members: vec![], repo, live: false })
            }
            Err(e) => Err(e),
        }
    }

    /// Starts a restore drill (`backup.verify`) of the cluster's newest backup.
    pub async fn backup_verify(&self, ctx: &Ctx, name: &str) -> Result<Operation> {
        ctx.require(Action::BackupVerify)?;
        let (_, record, spec, _) = self.cluster_parts(ctx, name).await?;
        let Some(repo) = spec.backup_repo else {
            return Err(AppError::Invalid(format!("cluster {name:?} has no backup repository: nothing to verify")));
        };
        let params = serde_json::to_value(VerifyParams { cluster: record.id, stanza: record.id.to_string(), repo })
            .expect("serialise");
        self.cluster_operation(ctx, &record, backup_verify::KIND, "backup.verify", params, &BackupVerify {}).await
    }

    /// The cluster's backup policy and when its schedules run next.
    pub async fn backup_policy_get(&self, ctx: &Ctx, name: &str) -> Result<BackupPolicyView> {
        ctx.require(Action::BackupRead)?;
        let (_, _, spec, _) = self.cluster_parts(ctx, name).await?;
        Ok(policy_view(name, &spec.backup_policy, Utc::now()))
    }

    /// Replaces the cluster's backup policy. Schedules count from now: a new schedule does
    /// not run for times before it was set.
    pub async fn backup_policy_set(&self, ctx: &Ctx, name: &str, policy: BackupPolicy) -> Result<BackupPolicyView> {
        ctx.require(Action::BackupPolicySet)?;
        for (flag, pattern) in [
            ("--schedule", &policy.schedule),
            ("--full-schedule", &policy.full_schedule),
            ("--verify-schedule", &policy.verify_schedule),
        ] {
            if let Some(p) = pattern {
                crate::schedules::parse(p).map_err(|e| AppError::Invalid(format!("{flag} {p:?}: {e}")))?;
            }
        }
        if let Some(n) = policy.retention_full {
            if !(1..=MAX_RETENTION_FULL).contains(&n) {
                return Err(AppError::Invalid(format!(
                    "--retention-full {n} is out of range: keep 1 to {MAX_RETENTION_FULL} full backups"
                )));
            }
        }
        let mut tx = self.store.write().await?;
        let record =
            tx.cluster_record(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
        let mut spec: ClusterSpec = serde_json::from_value(record.spec.clone())
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("the cluster's stored spec is unreadable")))?;
        let scheduled = policy.schedule.is_some() || policy.full_schedule.is_some() || policy.verify_schedule.is_some();
        if scheduled && spec.backup_repo.is_none() {
            return Err(AppError::Invalid(format!(
                "cluster {name:?} has no backup repository: a schedule would have nowhere to back up to"
            )));
        }
        let now = crate::now();
        crate::schedules::reset(tx.as_mut(), record.id, &spec.backup_policy, &policy, now).await?;
        spec.backup_policy = policy.clone();
        tx.cluster_set_spec(record.id, &serde_json::to_value(&spec).expect("serialise")).await?;
        tx.audit_append(&ctx.audit(
            "backup.policy",
            format!("cluster/{name}"),
            serde_json::to_value(&policy).expect("serialise"),
        ))
        .await?;
        tx.commit().await?;
        Ok(policy_view(name, &policy, now))
    }

    /// The project's deleted clusters whose backups were kept, newest deletion first.
    pub async fn retained_list(&self, ctx: &Ctx) -> Result<Vec<RetainedBackups>> {
        ctx.require(Action::BackupRead)?;
        let kept = self.store.read().await?.retained_list(ctx.project.id).await?;
        Ok(kept
            .into_iter()
            .map(|k| RetainedBackups {
                cluster: k.cluster.name,
                cluster_id: k.cluster.id.to_string(),
                repository: k.repo,
                deleted_at: k.deleted_at,
            })
            .collect())
    }

    /// Deletes the kept backups of the newest deleted cluster `name` from its repository
    /// (operation `backup.purge`).
    pub async fn retained_purge(&self, ctx: &Ctx, name: &str) -> Result<Operation> {
        ctx.require(Action::BackupDelete)?;
        let mut tx = self.store.write().await?;
        let kept = tx.retained_get(ctx.project.id, name).await?.ok_or_else(|| {
            AppError::not_found("deleted cluster with kept backups (see `sovdb backup retained`)", name)
        })?;
        let params =
            serde_json::to_value(PurgeParams { cluster: kept.cluster.id, repo: kept.repo_id }).expect("serialise");
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart {
                    kind: wb::PURGE_KIND,
                    target: format!("backups/{}", kept.cluster.id),
                    project: Some(ctx.project.id),
                    params,
                },
            )
            .await?;
        tx.audit_append(&ctx.audit(
            "backup.purge",
            format!("cluster/{name}"),
            serde_json::json!({"operation": op.id.to_string(), "cluster_id": kept.cluster.id.to_string()}),
        ))
        .await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }

    /// A new cluster `req.name` from the source's repository, at the target asked for.
    pub async fn cluster_restore(&self, ctx: &Ctx, source: &str, req: ClusterRestore) -> Result<Operation> {
        ctx.require(Action::ClusterRestore)?;
        crate::validate::dns_label("cluster name", &req.name)?;
        let from_source = self.backup_source(ctx, source).await?;
        let Some(src_repo_record) = from_source.repo.clone() else {
            return Err(AppError::Invalid(format!("cluster {source:?} has no backup repository to restore from")));
        };
        let src_repo = src_repo_record.id;
        let chosen = [req.to_time.is_some(), req.to_lsn.is_some(), req.latest].iter().filter(|b| **b).count();
        if chosen > 1 {
            return Err(AppError::Invalid("give one of --to-time, --to-lsn and --latest".into()));
        }
        let target = match (&req.to_time, &req.to_lsn) {
            (Some(t), _) => RestoreTarget::Time(*t),
            (_, Some(lsn)) if is_lsn(lsn) => RestoreTarget::Lsn(lsn.clone()),
            (_, Some(lsn)) => {
                return Err(AppError::Invalid(format!(
                    "--to-lsn {lsn:?} is not an LSN: give one as PostgreSQL writes them, like 0/3000060"
                )))
            }
            _ => RestoreTarget::Latest,
        };
        if let RestoreTarget::Time(t) = target {
            if t > Utc::now() {
                return Err(AppError::Invalid(format!(
                    "--to-time {} is in the future: give a time before now",
                    t.to_rfc3339()
                )));
            }
        }
        let repo_name = src_repo_record.name.clone();
        let info = from_source.info(self, &src_repo_record).await?;
        let Source { location: src_location, record: src, spec, live, .. } = from_source;
        let backups: Vec<_> = info.backups.iter().filter(|b| !b.backup.error).collect();
        let Some(first) = backups.first() else {
            return Err(AppError::Invalid(format!(
                "cluster {source:?} has no backup in repository {repo_name:?} yet: take one with \
                 `sovdb backup create {source}`"
            )));
        };
        // The newest backup that ended before the target: recovery starts there.
        let set = match &target {
            RestoreTarget::Latest => None,
            RestoreTarget::Time(t) => match backups.iter().rev().find(|b| b.backup.stopped_at <= *t) {
                Some(b) => Some(b.backup.id.clone()),
                None => {
                    return Err(AppError::Invalid(format!(
                        "--to-time {} is before the first backup of {source:?} ended ({}): give a later time",
                        t.to_rfc3339(),
                        first.backup.stopped_at.to_rfc3339()
                    )))
                }
            },
            RestoreTarget::Lsn(lsn) => {
                let at = lsn_value(lsn);
                match backups.iter().rev().find(|b| b.lsn_stop.as_deref().map(lsn_value) <= Some(at)) {
                    Some(b) => Some(b.backup.id.clone()),
                    None => {
                        return Err(AppError::Invalid(format!(
                            "--to-lsn {lsn} is before the first backup of {source:?} ended ({}): give a later LSN",
                            first.lsn_stop.as_deref().unwrap_or("?")
                        )))
                    }
                }
            }
        };

        // What recovery starts from (the newest backup when no set is named), whose size
        // the restore's deadline grows with.
        let size = match &set {
            Some(id) => backups.iter().find(|b| &b.backup.id == id).map(|b| b.backup.size),
            None => backups.last().map(|b| b.backup.size),
        }
        .unwrap_or(0);

        // The new cluster: the source's settings unless the request says otherwise.
        let replicas = req.replicas.unwrap_or(spec.replicas as i64);
        if !(1..=crate::clusters::MAX_REPLICAS).contains(&replicas) {
            return Err(AppError::Invalid(format!(
                "--replicas {replicas} is out of range: give 1 to {}",
                crate::clusters::MAX_REPLICAS
            )));
        }
        crate::validate::labels(&req.require_labels)?;
        let mut tx = self.store.write().await?;
        let location_name = req.location.clone().unwrap_or(src_location);
        let location =
            tx.location_get(&location_name).await?.ok_or_else(|| AppError::not_found("location", &location_name))?;
        let repo = match req.backup_repo.as_deref() {
            Some(name) => cluster_repo(tx.as_mut(), ctx, &location, Some(name)).await?,
            None if location.id == src.location_id => tx.repo_get_by_id(src_repo).await?,
            None => cluster_repo(tx.as_mut(), ctx, &location, None).await?,
        };
        let spread = req.spread.or(spec.spread);
        let labels =
            if req.require_labels.is_empty() { spec.require_labels.clone() } else { req.require_labels.clone() };
        let (_, candidates) = crate::clusters::placement_candidates(tx.as_mut(), location.id).await?;
        crate::clusters::hosts_bootstrapping(&location.name, &candidates)?;
        crate::placement::place(&location.name, &candidates, replicas as u32, spread, &labels)
            .map_err(AppError::Invalid)?;
        let new_spec = ClusterSpec {
            replicas: replicas as u32,
            spread,
            require_labels: labels,
            backup_repo: repo.as_ref().map(|r| r.id),
            // A copy runs no schedule until one is set for it.
            backup_policy: BackupPolicy::default(),
            // The source's allow-list in its location; elsewhere, the new location's
            // networks (the source's may mean nothing there).
            allow: if location.id == src.location_id {
                spec.allow.clone()
            } else {
                Some(crate::clusters::location_networks(tx.as_mut(), location.id).await?)
            },
            ..spec.clone()
        };
        let record = ClusterRecord {
            id: ClusterId::new(),
            project_id: ctx.project.id,
            name: req.name.clone(),
            engine: src.engine,
            version: src.version.clone(),
            state: ClusterState::Creating,
            location_id: location.id,
            spec: serde_json::to_value(&new_spec).expect("serialise"),
            created_at: crate::now(),
        };
        match tx.cluster_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "cluster {:?} already exists in project {:?}; pick another name for the restore",
                    req.name, ctx.project.name
                )))
            }
            other => other?,
        }
        let describe = match &target {
            RestoreTarget::Latest => format!("{source} (latest)"),
            RestoreTarget::Time(t) => format!("{source} at {}", t.to_rfc3339()),
            RestoreTarget::Lsn(l) => format!("{source} at LSN {l}"),
        };
        let from = RestoreFrom {
            stanza: src.id.to_string(),
            repo: src_repo,
            target,
            set,
            source: live.then_some(src.id),
            describe,
            size: Some(size),
        };
        let mut params = serde_json::to_value(ClusterParams { cluster: record.id }).expect("serialise");
        params["restore"] = serde_json::to_value(&from).expect("serialise");
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart {
                    kind: cluster_restore::KIND,
                    target: format!("cluster/{}", req.name),
                    project: Some(ctx.project.id),
                    params,
                },
            )
            .await?;
        let mut audit = serde_json::to_value(&req).expect("serialise");
        audit["operation"] = op.id.to_string().into();
        audit["source"] = source.into();
        tx.audit_append(&ctx.audit("cluster.restore", format!("cluster/{}", req.name), audit)).await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }
}

/// What a restore or a listing reads backups of: a cluster, or a deleted one whose
/// backups were kept (no members, `live` false).
struct Source {
    location: String,
    record: ClusterRecord,
    spec: ClusterSpec,
    members: Vec<crate::workflows::pg::Member>,
    repo: Option<RepoRecord>,
    live: bool,
}

impl Source {
    /// What the repository holds of the cluster: asked of a member, or for a deleted
    /// cluster of a host that reaches the repository.
    async fn info(&self, app: &App, repo: &RepoRecord) -> Result<sovdb_postgres::backup::StanzaInfo> {
        let stanza = self.record.id.to_string();
        if self.live {
            wb::info(app, &self.members, &stanza, &repo.name).await.map_err(unavailable)
        } else {
            wb::info_from_site(app, repo, &stanza).await.map_err(unavailable)
        }
    }
}

/// The most full backups a policy may keep.
pub const MAX_RETENTION_FULL: u32 = 100;

/// A policy with the next time each of its schedules runs after `now`.
fn policy_view(cluster: &str, policy: &BackupPolicy, now: chrono::DateTime<Utc>) -> BackupPolicyView {
    let next = |p: &Option<String>| p.as_deref().and_then(|p| crate::schedules::next_after(p, now));
    BackupPolicyView {
        cluster: cluster.to_string(),
        policy: policy.clone(),
        retention_full_kept: policy.retention_full.unwrap_or(sovdb_postgres::backup::DEFAULT_RETENTION_FULL),
        next_backup: next(&policy.schedule),
        next_full: next(&policy.full_schedule),
        next_verify: next(&policy.verify_schedule),
    }
}

/// An LSN as a number (`hi/lo` in hex), to compare.
fn lsn_value(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsns_compare_as_numbers() {
        assert!(super::lsn_value("0/3000060") < super::lsn_value("0/10000000"));
        assert!(super::lsn_value("1/0") > super::lsn_value("0/FFFFFFFF"));
    }
}

//! Clusters of the caller's project: create, read (with what Patroni reports), connect,
//! delete. Creating and deleting are operations (see `workflows::cluster_create` and
//! `workflows::cluster_delete`); everything a create needs is checked here first, so bad
//! input is refused before anything exists.

use sovdb_store::{ClusterRecord, StoreError};
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::placement::{self, Candidate};
use crate::rbac::Action;
use crate::workflows::cluster_delete::DeleteParams;
use crate::workflows::pg::{self, ClusterParams};
use crate::workflows::{
    cluster_allow, cluster_create, cluster_delete, cluster_restart, cluster_scale, cluster_set, cluster_switchover,
};
use crate::{validate, App, AppError, Ctx, Result};

/// The installation's default location, when `meta` has none.
pub(crate) const DEFAULT_LOCATION_META: &str = "default_location";
pub const MAX_REPLICAS: i64 = 9;
/// Database role and database names sovdb keeps for itself.
const RESERVED_USERS: &[&str] = &["postgres", "replicator", "patroni"];
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

impl App {
    pub async fn cluster_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Cluster>> {
        ctx.require(Action::ClusterRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        Ok(self.store.read().await?.cluster_list(ctx.project.id, &page).await?)
    }

    pub async fn cluster_create(&self, ctx: &Ctx, req: ClusterCreate) -> Result<Operation> {
        ctx.require(Action::ClusterCreate)?;
        validate::dns_label("cluster name", &req.name)?;
        if sovdb_types::Engine::parse(&req.engine) != Some(Engine::Postgres) {
            return Err(AppError::Invalid(format!(
                "unknown engine {:?}: this sovdb runs postgres (--engine postgres)",
                req.engine
            )));
        }
        let version = req.version.clone().unwrap_or_else(|| sovdb_postgres::DEFAULT_VERSION.into());
        if !sovdb_postgres::VERSIONS.contains(&version.as_str()) {
            return Err(AppError::Invalid(format!(
                "PostgreSQL {version:?} is not available: this sovdb runs version {} (Debian 12's)",
                sovdb_postgres::VERSIONS.join(", ")
            )));
        }
        let replicas = req.replicas.unwrap_or(1);
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(AppError::Invalid(format!(
                "--replicas {replicas} is out of range: give 1 to {MAX_REPLICAS} (the number of PostgreSQL \
                 instances: one primary and replicas - 1 standbys)"
            )));
        }
        let database = req.db.clone().unwrap_or_else(|| "app".into());
        let user = req.user.clone().unwrap_or_else(|| "app".into());
        identifier("--db", &database, RESERVED_DATABASES)?;
        identifier("--user", &user, RESERVED_USERS)?;
        validate::labels(&req.require_labels)?;
        sovdb_postgres::params::validate(&req.params)
            .map_err(|e| AppError::Invalid(format!("invalid --param: {e}")))?;

        let mut tx = self.store.write().await?;
        let location_name = match &req.location {
            Some(l) => l.clone(),
            None => tx.meta_get(DEFAULT_LOCATION_META).await?.unwrap_or_else(|| crate::LOCAL_LOCATION.into()),
        };
        let location =
            tx.location_get(&location_name).await?.ok_or_else(|| AppError::not_found("location", &location_name))?;
        // Placement is checked now so a create that can't be placed is refused before
        // anything exists; the `place` step chooses again with what holds then.
        let backup_repo = crate::backups::cluster_repo(tx.as_mut(), ctx, &location, req.backup_repo.as_deref()).await?;
        let (_, candidates) = placement_candidates(tx.as_mut(), location.id).await?;
        hosts_bootstrapping(&location.name, &candidates)?;
        placement::place(&location.name, &candidates, replicas as u32, req.spread, &req.require_labels)
            .map_err(AppError::Invalid)?;

        let spec = ClusterSpec {
            replicas: replicas as u32,
            sync: req.sync,
            spread: req.spread,
            require_labels: req.require_labels.clone(),
            database,
            user,
            params: req.params.clone(),
            pooler: req.pooler,
            backup_repo: backup_repo.map(|r| r.id),
            backup_policy: BackupPolicy::default(),
            // The location's networks now, written out: a host added to the location
            // later does not widen an existing cluster's list.
            allow: Some(location_networks(tx.as_mut(), location.id).await?),
        };
        let record = ClusterRecord {
            id: ClusterId::new(),
            project_id: ctx.project.id,
            name: req.name.clone(),
            engine: Engine::Postgres,
            version,
            state: ClusterState::Creating,
            location_id: location.id,
            spec: serde_json::to_value(&spec).expect("serialise"),
            created_at: crate::now(),
        };
        match tx.cluster_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "cluster {:?} already exists in project {:?}; pick another name or delete it first",
                    req.name, ctx.project.name
                )))
            }
            other => other?,
        }
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart {
                    kind: cluster_create::KIND,
                    target: format!("cluster/{}", req.name),
                    project: Some(ctx.project.id),
                    params: serde_json::to_value(ClusterParams { cluster: record.id }).expect("serialise"),
                },
            )
            .await?;
        let mut params = serde_json::to_value(&req).expect("serialise");
        params["operation"] = op.id.to_string().into();
        params["location"] = location.name.clone().into();
        tx.audit_append(&ctx.audit("cluster.create", format!("cluster/{}", req.name), params)).await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }

    /// A cluster of the caller's project: its API view, its spec and its members.
    pub(crate) async fn cluster_parts(
        &self,
        ctx: &Ctx,
        name: &str,
    ) -> Result<(Cluster, ClusterRecord, ClusterSpec, Vec<pg::Member>)> {
        let (cluster, record) = {
            let mut tx = self.store.read().await?;
            let cluster =
                tx.cluster_get(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
            let record =
                tx.cluster_record(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
            (cluster, record)
        };
        let spec: ClusterSpec = serde_json::from_value(record.spec.clone())
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("the cluster's stored spec is unreadable")))?;
        let members = pg::members(self, record.id).await.map_err(step_error)?;
        Ok((cluster, record, spec, members))
    }

    pub async fn cluster_get(&self, ctx: &Ctx, name: &str) -> Result<ClusterDetail> {
        ctx.require(Action::ClusterRead)?;
        let (cluster, record, spec, members) = self.cluster_parts(ctx, name).await?;
        let allow = match &spec.allow {
            Some(list) => list.clone(),
            None => location_networks(self.store.read().await?.as_mut(), record.location_id).await?,
        };
        let observed = if members.is_empty() {
            Err("no member is placed yet".to_string())
        } else {
            crate::patroni::status(self, &members).await
        };
        let mut out = Vec::new();
        for m in &members {
            let seen = observed.as_ref().ok().and_then(|s| s.members.iter().find(|p| p.name == m.name));
            out.push(ClusterMember {
                name: m.name.clone(),
                host: m.host.host.name.clone(),
                address: format!("{}:{}", m.host.host.address, m.spec.ports.postgres),
                role: seen.map(|p| if p.is_leader() { MemberRole::Primary } else { MemberRole::Replica }),
                sync: seen.is_some_and(|p| p.is_sync()),
                state: seen.map(|p| p.state.clone()).unwrap_or_else(|| "unknown".into()),
                timeline: seen.and_then(|p| p.timeline),
                lag_bytes: seen.and_then(|p| p.lag_bytes()),
            });
        }
        let (state, status_message) = match (&observed, cluster.state) {
            (Err(e), ClusterState::Ready) => {
                (ClusterState::Degraded, Some(format!("no member's Patroni answers: {e}")))
            }
            (Ok(s), ClusterState::Ready) => match health(s, &members) {
                Some(why) => (ClusterState::Degraded, Some(why)),
                None => (ClusterState::Ready, None),
            },
            (_, other) => (other, None),
        };
        Ok(ClusterDetail {
            cluster: Cluster { state, ..cluster },
            replicas: spec.replicas,
            sync: spec.sync,
            pooler: spec.pooler,
            database: spec.database,
            user: spec.user,
            params: spec.params,
            allow,
            members: out,
            endpoints: endpoints(&members),
            status_message,
        })
    }

    /// The connection details with the application user's password: a secret read, audited.
    pub async fn cluster_connection(&self, ctx: &Ctx, name: &str, read_only: bool) -> Result<ClusterConnection> {
        ctx.require(Action::ClusterConnect)?;
        let (_, record, spec, members) = self.cluster_parts(ctx, name).await?;
        if members.is_empty() {
            return Err(AppError::Conflict(format!(
                "cluster {name:?} has no members yet: wait for its create to finish"
            )));
        }
        let password = pg::secret(self, &pg::owner(record.id), "app")
            .await
            .map_err(step_error)?
            .ok_or_else(|| AppError::Conflict(format!("cluster {name:?} has no password yet: wait for its create")))?;
        let hosts: Vec<String> =
            members.iter().map(|m| format!("{}:{}", m.host.host.address, m.spec.ports.postgres)).collect();
        let attrs = if read_only { "prefer-standby" } else { "read-write" };
        let uri = format!(
            "postgresql://{}:{}@{}/{}?target_session_attrs={attrs}&sslmode=verify-full&connect_timeout=3",
            spec.user,
            password,
            hosts.join(","),
            spec.database
        );
        let mut tx = self.store.write().await?;
        tx.audit_append(&ctx.audit(
            "cluster.connect",
            format!("cluster/{name}"),
            serde_json::json!({"read_only": read_only, "secret": "app password"}),
        ))
        .await?;
        tx.commit().await?;
        Ok(ClusterConnection {
            uri,
            user: spec.user,
            password,
            database: spec.database,
            ca_pem: self.pki()?.ca_pem().to_string(),
            endpoints: endpoints(&members),
        })
    }

    /// Moves the primary to another member: planned (`failover` false: the primary hands
    /// over) or forced (`failover`: a candidate is promoted whatever the primary does).
    pub async fn cluster_switchover(
        &self,
        ctx: &Ctx,
        name: &str,
        req: ClusterSwitchover,
        failover: bool,
    ) -> Result<Operation> {
        ctx.require(if failover { Action::ClusterFailover } else { Action::ClusterSwitchover })?;
        let (_, record, _, members) = self.cluster_parts(ctx, name).await?;
        changeable(&record)?;
        let what = if failover { "fail over" } else { "switch over" };
        if members.len() < 2 {
            return Err(AppError::Invalid(format!(
                "cluster {name:?} has one member: no replica to {what} to; add one with `sovdb cluster scale {name} --replicas 2`"
            )));
        }
        if let Some(to) = &req.to {
            if !members.iter().any(|m| &m.name == to) {
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                return Err(AppError::Invalid(format!(
                    "cluster {name:?} has no member {to:?}; its members are {}",
                    names.join(", ")
                )));
            }
            if let Ok(status) = crate::patroni::status(self, &members).await {
                if status.leader().is_some_and(|l| &l.name == to) {
                    return Err(AppError::Invalid(format!("{to} is the primary already; name a replica with --to")));
                }
            }
        }
        let (kind, action) = if failover {
            (cluster_switchover::FAILOVER, "cluster.failover")
        } else {
            (cluster_switchover::SWITCHOVER, "cluster.switchover")
        };
        let params = cluster_switchover::Params { cluster: record.id, to: req.to.clone() };
        self.cluster_operation(ctx, &record, kind, action, serde_json::to_value(params).expect("serialise"), &req).await
    }

    /// A rolling restart of every member's PostgreSQL, replicas first.
    pub async fn cluster_restart(&self, ctx: &Ctx, name: &str, req: ClusterRestart) -> Result<Operation> {
        ctx.require(Action::ClusterRestart)?;
        let (_, record, _, _) = self.cluster_parts(ctx, name).await?;
        changeable(&record)?;
        let params = ClusterParams { cluster: record.id };
        self.cluster_operation(
            ctx,
            &record,
            cluster_restart::KIND,
            "cluster.restart",
            serde_json::to_value(params).expect("serialise"),
            &req,
        )
        .await
    }

    /// More or fewer members; checks that new members can be placed first.
    pub async fn cluster_scale(&self, ctx: &Ctx, name: &str, req: ClusterScale) -> Result<Operation> {
        ctx.require(Action::ClusterScale)?;
        let (cluster, record, spec, members) = self.cluster_parts(ctx, name).await?;
        changeable(&record)?;
        if !(1..=MAX_REPLICAS).contains(&req.replicas) {
            return Err(AppError::Invalid(format!(
                "--replicas {} is out of range: give 1 to {MAX_REPLICAS} (the number of PostgreSQL instances)",
                req.replicas
            )));
        }
        let n = req.replicas as u32;
        if n as usize == members.len() {
            return Err(AppError::Invalid(format!("cluster {name:?} has {n} member(s) already")));
        }
        if n as usize > members.len() {
            let mut tx = self.store.read().await?;
            let location = cluster.location;
            let (_, candidates) = placement_candidates(tx.as_mut(), record.location_id).await?;
            let on: Vec<HostId> = members.iter().map(|m| m.host.host.id).collect();
            placement::place_more(
                &location,
                &candidates,
                &on,
                n - members.len() as u32,
                spec.spread,
                &spec.require_labels,
            )
            .map_err(AppError::Invalid)?;
        }
        let params = cluster_scale::Params { cluster: record.id, replicas: n };
        self.cluster_operation(
            ctx,
            &record,
            cluster_scale::KIND,
            "cluster.scale",
            serde_json::to_value(params).expect("serialise"),
            &req,
        )
        .await
    }

    /// A rolling change of PostgreSQL parameters; restarts only where one needs it.
    pub async fn cluster_set_params(&self, ctx: &Ctx, name: &str, req: ClusterSetParams) -> Result<Operation> {
        ctx.require(Action::ClusterSetParams)?;
        if req.params.is_empty() && req.reset.is_empty() {
            return Err(AppError::Invalid(
                "nothing to change: give --param key=value or --reset key (e.g. --param work_mem=16MB)".into(),
            ));
        }
        sovdb_postgres::params::validate(&req.params)
            .map_err(|e| AppError::Invalid(format!("invalid --param: {e}")))?;
        for k in &req.reset {
            if req.params.contains_key(k) {
                return Err(AppError::Invalid(format!("{k} is both set and reset; give one of them")));
            }
            sovdb_postgres::params::check_name(k).map_err(|e| AppError::Invalid(format!("invalid --reset: {e}")))?;
        }
        let (_, record, _, _) = self.cluster_parts(ctx, name).await?;
        let params = cluster_set::Params { cluster: record.id, set: req.params.clone(), reset: req.reset.clone() };
        self.cluster_operation(
            ctx,
            &record,
            cluster_set::KIND,
            "cluster.set",
            serde_json::to_value(params).expect("serialise"),
            &req,
        )
        .await
    }

    /// Adds networks to and removes networks from the cluster's allow-list, then applies
    /// the whole list to every member (pg_hba through Patroni, HAProxy) without a
    /// restart. Every entry is checked before anything changes.
    pub async fn cluster_allow_list(&self, ctx: &Ctx, name: &str, req: ClusterAllowList) -> Result<Operation> {
        ctx.require(Action::ClusterAllowList)?;
        if req.allow.is_empty() && req.deny.is_empty() {
            return Err(AppError::Invalid(
                "nothing to change: give --cidr with `cluster allow` or `cluster deny` (e.g. --cidr 10.0.0.0/24)"
                    .into(),
            ));
        }
        let allow = sovdb_postgres::allow::parse_list(&req.allow)
            .map_err(|e| AppError::Invalid(format!("invalid allow --cidr: {e}")))?;
        let deny = sovdb_postgres::allow::parse_list(&req.deny)
            .map_err(|e| AppError::Invalid(format!("invalid deny --cidr: {e}")))?;
        if let Some(both) = allow.iter().find(|c| deny.contains(c)) {
            return Err(AppError::Invalid(format!("{both} is both allowed and denied; give one of them")));
        }
        let (_, record, spec, _) = self.cluster_parts(ctx, name).await?;
        let current = match &spec.allow {
            Some(list) => list.clone(),
            None => location_networks(self.store.read().await?.as_mut(), record.location_id).await?,
        };
        // A network that is not listed can't be taken off: most likely a typo, or a part
        // of a listed network (deny does not split one), and either way access would not
        // change as the caller expects.
        if let Some(missing) = deny.iter().find(|c| !current.contains(c)) {
            let listed = if current.is_empty() { "no network".to_string() } else { current.join(", ") };
            return Err(AppError::Invalid(format!(
                "{missing} is not on cluster {name:?}'s allow-list (it holds {listed}); deny takes entries exactly as listed"
            )));
        }
        let params = cluster_allow::Params { cluster: record.id, allow, deny };
        self.cluster_operation(
            ctx,
            &record,
            cluster_allow::KIND,
            "cluster.allow-list",
            serde_json::to_value(params).expect("serialise"),
            &req,
        )
        .await
    }

    /// Starts a day-2 operation on a cluster that was created (not one being created,
    /// deleted, or that failed), with its audit record, in one transaction.
    pub(crate) async fn cluster_operation(
        &self,
        ctx: &Ctx,
        record: &ClusterRecord,
        kind: &'static str,
        action: &str,
        params: serde_json::Value,
        request: &impl serde::Serialize,
    ) -> Result<Operation> {
        let name = &record.name;
        let mut tx = self.store.write().await?;
        let now = tx.cluster_record_by_id(record.id).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
        changeable(&now)?;
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart { kind, target: format!("cluster/{name}"), project: Some(ctx.project.id), params },
            )
            .await?;
        let mut audit = serde_json::to_value(request).expect("serialise");
        audit["operation"] = op.id.to_string().into();
        tx.audit_append(&ctx.audit(action, format!("cluster/{name}"), audit)).await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }

    /// Starts `cluster.delete`. The cluster's backups stay in its repository (and it can
    /// be restored by name) unless `delete_backups`.
    pub async fn cluster_delete(&self, ctx: &Ctx, name: &str, delete_backups: bool) -> Result<Operation> {
        ctx.require(Action::ClusterDelete)?;
        if delete_backups {
            ctx.require(Action::BackupDelete)?;
        }
        let mut tx = self.store.write().await?;
        let record =
            tx.cluster_record(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))?;
        let op = self
            .operation_create(
                tx.as_mut(),
                &ctx.user.name,
                OperationStart {
                    kind: cluster_delete::KIND,
                    target: format!("cluster/{name}"),
                    project: Some(ctx.project.id),
                    params: serde_json::to_value(DeleteParams { cluster: record.id, delete_backups })
                        .expect("serialise"),
                },
            )
            .await?;
        tx.audit_append(&ctx.audit(
            "cluster.delete",
            format!("cluster/{name}"),
            serde_json::json!({"operation": op.id.to_string(), "delete_backups": delete_backups}),
        ))
        .await?;
        tx.commit().await?;
        self.operations_created();
        Ok(op)
    }
}

/// Day-2 operations wait for a cluster that was created (not one being created or
/// deleted, or that failed).
pub(crate) fn changeable(record: &ClusterRecord) -> Result<()> {
    let name = &record.name;
    match record.state {
        ClusterState::Ready | ClusterState::Degraded => Ok(()),
        ClusterState::Creating => Err(AppError::Conflict(format!(
            "cluster {name:?} is still being created; wait for its create operation to finish"
        ))),
        ClusterState::Deleting => Err(AppError::Conflict(format!("cluster {name:?} is being deleted"))),
        ClusterState::Failed => {
            Err(AppError::Conflict(format!("cluster {name:?} failed; see `sovdb op list` for why, and delete it")))
        }
    }
}

/// The hosts of a location (the first 1000) and what placement needs to know of each.
/// Any of them may take a member, whatever the cluster's repository: a member on another
/// host than its posix repository reaches it through the repository host's pgBackRest
/// TLS server.
pub(crate) async fn placement_candidates(
    tx: &mut dyn sovdb_store::Tx,
    location: LocationId,
) -> std::result::Result<(Vec<sovdb_store::HostRecord>, Vec<Candidate>), StoreError> {
    let hosts = tx.host_list(Some(location), &PageRequest::first(1000)).await?.items;
    let mut candidates = Vec::with_capacity(hosts.len());
    for h in hosts.iter() {
        candidates.push(Candidate {
            id: h.host.id,
            name: h.host.name.clone(),
            zone: h.host.zone.clone(),
            labels: h.host.labels.clone(),
            status: h.host.status,
            memory_bytes: h.host.facts.as_ref().and_then(|f| f["memory_bytes"].as_u64()).unwrap_or(0),
            members: tx.member_count_on_host(h.host.id).await? as u64,
        });
    }
    Ok((hosts, candidates))
}

/// Refuses with [`AppError::NotReady`] when no host of the location is ready yet but
/// some are still being added: the caller may wait (`--wait` does) rather than give up.
pub(crate) fn hosts_bootstrapping(location: &str, candidates: &[Candidate]) -> Result<()> {
    if candidates.is_empty() || candidates.iter().any(|c| c.status == HostStatus::Ready) {
        return Ok(());
    }
    let coming: Vec<&str> =
        candidates.iter().filter(|c| c.status == HostStatus::Bootstrapping).map(|c| c.name.as_str()).collect();
    if coming.is_empty() {
        return Ok(());
    }
    Err(AppError::NotReady(format!(
        "no host of location {location:?} is ready yet: {} still being added (its agent starting takes a few \
         seconds on this machine, a few minutes over SSH; a host's first cluster then installs the engine's \
         packages); `sovdb host list` shows when it is ready, or give --wait to wait for it",
        if coming.len() == 1 { format!("{} is", coming[0]) } else { format!("{} are", coming.join(", ")) }
    )))
}

/// A location's networks, the default allow-list: each host address's /24 (IPv4) or
/// /64 (IPv6); see `sovdb_postgres::allow`.
pub(crate) async fn location_networks(
    tx: &mut dyn sovdb_store::Tx,
    location: LocationId,
) -> std::result::Result<Vec<String>, StoreError> {
    let hosts = tx.host_list(Some(location), &PageRequest::first(1000)).await?.items;
    Ok(sovdb_postgres::allow::default_networks(hosts.iter().map(|h| h.host.address.as_str())))
}

/// A step helper's failure, met outside an operation: ours to log, not the caller's.
fn step_error(f: sovdb_operations::StepFailure) -> AppError {
    AppError::Internal(anyhow::anyhow!(f.error))
}

/// Why an observed cluster is not healthy, if it isn't.
pub(crate) fn health(s: &crate::patroni::PatroniStatus, members: &[pg::Member]) -> Option<String> {
    if s.leader().is_none() {
        return Some("no primary: Patroni reports no running leader".into());
    }
    let mut problems = Vec::new();
    // Only the cluster's members count (a removed one may linger in the DCS).
    let ours: Vec<_> = s.members.iter().filter(|p| members.iter().any(|m| m.name == p.name)).collect();
    if ours.len() < members.len() {
        problems.push(format!("{} of {} members report to Patroni", ours.len(), members.len()));
    }
    for m in ours {
        if !m.is_leader() && !crate::patroni::serving(m) {
            problems.push(format!("{} is {}", m.name, m.state));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn endpoints(members: &[pg::Member]) -> ClusterEndpoints {
    let at = |port: u16, m: &pg::Member| format!("{}:{port}", m.host.host.address);
    ClusterEndpoints {
        read_write: members.iter().map(|m| at(m.spec.ports.read_write, m)).collect(),
        read_only: members.iter().map(|m| at(m.spec.ports.read_only, m)).collect(),
        pooler: members.iter().filter_map(|m| m.spec.ports.pooler.map(|p| at(p, m))).collect(),
        members: members.iter().map(|m| at(m.spec.ports.postgres, m)).collect(),
    }
}

/// A database or role name sovdb creates: a plain lower-case SQL identifier.
fn identifier(flag: &str, value: &str, reserved: &[&str]) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(AppError::Invalid(format!(
            "{flag} {value:?} is not a plain SQL name: use 1 to 63 lower-case letters, digits or `_`, not starting with a digit"
        )));
    }
    if reserved.contains(&value) {
        return Err(AppError::Invalid(format!("{flag} {value:?} is reserved for sovdb's own use; pick another name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, status: HostStatus) -> Candidate {
        Candidate {
            id: HostId::new(),
            name: name.into(),
            zone: None,
            labels: Default::default(),
            status,
            memory_bytes: 8 << 30,
            members: 0,
        }
    }

    #[test]
    fn a_location_whose_hosts_are_all_still_being_added_is_not_ready_yet() {
        let err = hosts_bootstrapping("local", &[host("local", HostStatus::Bootstrapping)]).unwrap_err();
        assert!(matches!(err, AppError::NotReady(_)), "{err:?}");
        let said = err.to_string();
        assert!(said.contains("local is still being added") && said.contains("--wait"), "{said}");
        let two = [host("h1", HostStatus::Bootstrapping), host("h2", HostStatus::Bootstrapping)];
        assert!(hosts_bootstrapping("dc1", &two).unwrap_err().to_string().contains("h1, h2 are still being added"));
    }

    #[test]
    fn a_ready_host_or_none_coming_leaves_it_to_placement() {
        let mixed = [host("h1", HostStatus::Bootstrapping), host("h2", HostStatus::Ready)];
        assert!(hosts_bootstrapping("dc1", &mixed).is_ok(), "one is ready: placement decides");
        assert!(hosts_bootstrapping("dc1", &[]).is_ok(), "no hosts: placement says to add one");
        assert!(hosts_bootstrapping("dc1", &[host("h1", HostStatus::Unreachable)]).is_ok());
    }
}

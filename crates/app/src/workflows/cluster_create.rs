//! `cluster.create`: a Patroni-managed PostgreSQL cluster with HAProxy (and PgBouncer)
//! on every member.
//!
//! Parameters: `{"cluster": ID}`; the cluster's row (state `creating`, its spec) was
//! written with the operation.
//!
//! Steps, each idempotent:
//! 1. `register`: nothing to do; its undo forgets the cluster: members, ports, secrets
//!    and the row. So a failed or cancelled create leaves nothing behind.
//! 2. `place` (allocates): a host for every member (see `placement`) and its ports, in
//!    one transaction; a rerun finds the members and keeps them.
//! 3. `generate-secrets` (allocates): the passwords, sealed in the store; the first
//!    value written stays.
//! 4. `ensure-dcs`: the location's etcd (created on first need).
//! 5. `install-packages`: PostgreSQL, Patroni, HAProxy (PgBouncer, pgBackRest) on every
//!    member's host, then the preflight checks there (see `preflight`): a host that lacks
//!    a piece fails here, naming it, before anything starts and waits.
//! 6. `write-configs` (undo: remove the members' directories): certificates, Patroni's
//!    and HAProxy's configuration, written only where they differ.
//! 7. `start-members` (undo: stop them and delete the cluster's DCS keys): Patroni,
//!    which initialises the primary and clones the replicas.
//! 8. `wait-primary`: a leader that runs, for at most [`PRIMARY_DEADLINE`]; meanwhile the
//!    step's progress says what Patroni reports and what each member's logs say.
//! 9. `create-database`: the application user and database (checked before made).
//! 10. `stanza-setup` (undo: delete the stanza), with a backup repository: the cluster's
//!     stanza in it, and a check that WAL archiving works (see `backup`).
//! 11. `first-backup`: with a backup repository, a full backup (annotated with the
//!     operation, so a rerun finds it).
//! 12. `start-routers` (undo: stop them): HAProxy (and PgBouncer) on every member.
//! 13. `wait-replicas`: every replica streams (and, with `--sync`, one is synchronous),
//!     for at most [`REPLICAS_DEADLINE`] plus [`REPLICAS_PER_GIB`] per GiB of data, saying
//!     meanwhile what the members that are behind report.
//! 14. `mark-ready`: the cluster becomes `ready`, with an event.

use std::time::Duration;

use serde_json::{json, Value};
use sovdb_agent::proto::{EnsurePackagesRequest, RemoveRequest};
use sovdb_operations::{Probe, StepCtx, StepFailure, Wait, Workflow};
use sovdb_postgres::render::{self, MemberPorts, PatroniInput};
use sovdb_postgres::OS_USER;
use sovdb_store::MemberRecord;
use sovdb_types::ClusterState;

use super::cluster_restore::{self, RestoreFrom};
use super::pg::{self, store_failure, ClusterParams, Member, MemberSpec};
use super::{agent_failure, app_failure, backup, dcs, diagnose, preflight};
use crate::patroni;
use crate::placement;
use crate::App;

pub const KIND: &str = "cluster.create";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step_with_undo("register", |_| async { Ok(json!({})) }, forget)
        .allocate("place", place)
        .allocate("generate-secrets", generate_secrets)
        .step("ensure-dcs", ensure_dcs)
        .step("install-packages", install_packages)
        .step_with_undo("write-configs", write_configs, remove_files)
        .step_with_undo("start-members", start_members, stop_members)
        .step("wait-primary", wait_primary)
        .step("create-database", create_database)
        .step_with_undo("stanza-setup", backup::stanza_setup, backup::stanza_forget)
        .step("first-backup", backup::first_backup)
        .step_with_undo("start-routers", start_routers, stop_members)
        .step("wait-replicas", wait_replicas)
        .step("mark-ready", mark_ready)
}

/// Forgets everything the store holds for the cluster. Also the last step of a delete.
pub(crate) async fn forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let owner = pg::owner(cluster);
    let mut tx = app.store.write().await.map_err(store_failure)?;
    tx.port_release(&owner).await.map_err(store_failure)?;
    tx.secret_delete(&owner).await.map_err(store_failure)?;
    tx.cluster_delete(cluster).await.map_err(store_failure)?;
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({}))
}

pub(crate) async fn place(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let existing = pg::members(app, cluster).await?;
    if existing.is_empty() {
        add_members(app, &record, &spec, &[], spec.replicas).await?;
    }
    Ok(placed(&pg::members(app, cluster).await?))
}

/// Places `n` more members beside `existing` (see `placement`), gives them ports and
/// writes their rows, in one transaction. Members are numbered on from the highest.
pub(crate) async fn add_members(
    app: &App,
    record: &sovdb_store::ClusterRecord,
    spec: &sovdb_types::ClusterSpec,
    existing: &[Member],
    n: u32,
) -> Result<(), StepFailure> {
    let cluster = record.id;
    let (hosts, candidates) = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        crate::clusters::placement_candidates(tx.as_mut(), record.location_id).await.map_err(store_failure)?
    };
    let location_name = hosts.first().map(|h| h.host.location.clone()).unwrap_or_default();
    let on: Vec<_> = existing.iter().map(|m| m.host.host.id).collect();
    let chosen = placement::place_more(&location_name, &candidates, &on, n, spec.spread, &spec.require_labels)
        .map_err(StepFailure::permanent)?;

    // What listens on each chosen host now, so no port given out is already in use.
    let mut listening = std::collections::BTreeMap::new();
    for id in &chosen {
        if !listening.contains_key(id) {
            let host = hosts.iter().find(|h| h.host.id == *id).expect("a candidate");
            let client = pg::agent(app, host, Duration::from_secs(30)).await?;
            listening.insert(*id, pg::listening_ports(&client).await?);
        }
    }
    let first = existing.iter().filter_map(|m| pg::member_number(&m.name)).max().unwrap_or(0) + 1;
    let owner = pg::owner(cluster);
    let mut tx = app.store.write().await.map_err(store_failure)?;
    for (i, host_id) in chosen.iter().enumerate() {
        let n = first + i as u32;
        let name = format!("{}-{n}", record.name);
        let host = hosts.iter().find(|h| h.host.id == *host_id).expect("a candidate");
        let mut purposes = vec!["postgres", "patroni", "read-write", "read-only"];
        if spec.pooler {
            purposes.push("pooler");
        }
        let owners: Vec<String> = purposes.iter().map(|p| format!("{owner}/{name}/{p}")).collect();
        let ports = pg::allocate_ports(app, tx.as_mut(), *host_id, &listening[host_id], &owners).await?;
        let key = pg::member_key(cluster, n);
        let member = MemberSpec {
            dir: format!("{}/pg/{key}", host.host.base_dir),
            key,
            ports: MemberPorts {
                postgres: ports[0],
                patroni: ports[1],
                read_write: ports[2],
                read_only: ports[3],
                pooler: ports.get(4).copied(),
            },
        };
        tx.member_create(&MemberRecord {
            cluster_id: cluster,
            name,
            host_id: *host_id,
            spec: serde_json::to_value(&member).expect("serialise"),
            created_at: crate::now(),
        })
        .await
        .map_err(store_failure)?;
    }
    tx.commit().await.map_err(store_failure)?;
    Ok(())
}

pub(crate) fn placed(members: &[Member]) -> Value {
    let list: Vec<Value> =
        members.iter().map(|m| json!({"member": m.name, "host": m.host.host.name, "ports": m.spec.ports})).collect();
    json!({ "members": list })
}

pub(crate) async fn generate_secrets(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let owner = pg::owner(cluster);
    for name in ["superuser", "replication", "rest", "app"] {
        pg::secret_keep_first(app, &owner, name, &pg::new_password()).await?;
    }
    // The output names the secrets, never their values.
    Ok(json!({"secrets": ["superuser", "replication", "rest", "app"]}))
}

pub(crate) async fn ensure_dcs(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (record, _) = pg::must_cluster(app, cluster).await?;
    let members = dcs::ensure(app, record.location_id).await?;
    Ok(json!({"endpoints": members.iter().map(|m| m.client_endpoint()).collect::<Vec<_>>()}))
}

pub(crate) async fn install_packages(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    use sovdb_postgres::Role;
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let mut roles = vec![Role::Member];
    if spec.pooler {
        roles.push(Role::Pooler);
    }
    if spec.backup_repo.is_some() || cluster_restore::restore_params(&ctx)?.is_some() {
        roles.push(Role::Backup);
    }
    let names: Vec<String> = roles.iter().flat_map(|r| sovdb_postgres::packages(*r, &record.version)).collect();
    let mut done = std::collections::BTreeSet::new();
    for m in pg::members(app, cluster).await? {
        if done.insert(m.host.host.id) {
            let client = pg::agent(app, &m.host, Duration::from_secs(900)).await?;
            client.ensure_packages(&EnsurePackagesRequest { names: names.clone() }).await.map_err(agent_failure)?;
            // Installed is not yet working: check before anything starts and waits.
            preflight::run(app, &m.host, &roles, &record.version).await?;
        }
    }
    Ok(json!({"packages": names}))
}

pub(crate) async fn write_configs(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let etcd_hosts: Vec<String> = ctx.output::<Value>("ensure-dcs")?["endpoints"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let passwords = pg::passwords(app, cluster).await?;
    let peers: Vec<_> = members.iter().map(Member::peer).collect();
    let allow = pg::allow_list(app, &record, &spec).await?;
    let ca = app.pki().map_err(app_failure)?.ca_pem().to_string();
    let scope = cluster.to_string();
    // A restore's members bootstrap from the source's stanza (whichever wins Patroni's
    // race to initialise; pgBackRest creates the data directory).
    let restore: Option<RestoreFrom> = cluster_restore::restore_params(&ctx)?;
    let mut changed = Vec::new();
    for m in &members {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        let layout = m.layout();
        pg::make_dirs(&client, OS_USER, &layout.dirs()).await?;
        let server = pg::member_cert(app, cluster, m).await?;
        let mut any = false;
        any |= pg::write(&client, OS_USER, layout.ca(), ca.clone(), 0o644).await?;
        any |= pg::write(&client, OS_USER, layout.cert(), server.cert_pem, 0o644).await?;
        any |= pg::write(&client, OS_USER, layout.key(), server.key_pem, 0o600).await?;
        let me = m.peer();
        if let Some(repo) = spec.backup_repo {
            any |= backup::write_member_conf(app, &client, m, layout.pgbackrest_conf(), &scope, repo).await?;
            let script = sovdb_postgres::backup::archive_leftovers_script(
                &layout,
                &scope,
                m.spec.ports.postgres,
                &record.version,
            );
            any |= pg::write(&client, OS_USER, layout.archive_leftovers_script(), script, 0o700).await?;
        }
        let restore_command = match &restore {
            Some(r) => {
                any |= backup::write_member_conf(app, &client, m, layout.pgbackrest_restore_conf(), &r.stanza, r.repo)
                    .await?;
                Some(sovdb_postgres::backup::restore_command_line(&layout, &r.stanza, &r.target, r.set.as_deref()))
            }
            None => None,
        };
        let yml = render::patroni_yml(&PatroniInput {
            scope: &scope,
            member: &me,
            layout: &layout,
            version: &record.version,
            etcd_hosts: &etcd_hosts,
            sync: spec.sync,
            params: &spec.params,
            passwords: &passwords,
            backup_stanza: spec.backup_repo.map(|_| scope.as_str()),
            restore_command: restore_command.as_deref(),
            peers: &peers,
            allow: &allow,
        });
        any |= pg::write(&client, OS_USER, layout.patroni_yml(), yml, 0o600).await?;
        any |=
            pg::write(&client, OS_USER, layout.haproxy_cfg(), render::haproxy_cfg(&layout, &me, &peers, &allow), 0o600)
                .await?;
        if let Some(port) = m.spec.ports.pooler {
            any |=
                pg::write(&client, OS_USER, layout.pgbouncer_ini(), render::pgbouncer_ini(&layout, &me, port), 0o600)
                    .await?;
            any |= pg::write(
                &client,
                OS_USER,
                layout.pgbouncer_users(),
                render::pgbouncer_users(&spec.user, &passwords.app),
                0o600,
            )
            .await?;
            any |= pg::write(&client, OS_USER, layout.pgbouncer_hba(), render::pgbouncer_hba(&allow, &peers), 0o600)
                .await?;
        }
        if any {
            changed.push(m.name.clone());
        }
    }
    Ok(json!({"changed": changed}))
}

pub(crate) async fn remove_files(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    for m in pg::members(app, cluster).await? {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        client
            .remove(&RemoveRequest { path: m.spec.dir.clone().into(), recursive: true })
            .await
            .map_err(agent_failure)?;
    }
    Ok(json!({}))
}

pub(crate) async fn start_members(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    for m in pg::members(app, cluster).await? {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        pg::start_service(&client, &m, "patroni", render::patroni_argv(&m.layout())).await?;
    }
    Ok(json!({}))
}

/// Stops every process of every member and deletes the cluster's keys from the DCS.
pub(crate) async fn stop_members(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let Some((record, _)) = pg::cluster(app, cluster).await? else { return Ok(json!({})) };
    for m in pg::members(app, cluster).await? {
        pg::stop_member(app, &m, &record.version).await?;
    }
    dcs::delete_prefix(app, record.location_id, &format!("{}{cluster}/", render::NAMESPACE)).await?;
    Ok(json!({}))
}

/// How long `wait-primary` waits for Patroni to initialise the first member and run it
/// as the primary (3 to 5 s measured on loopback; initdb on a slow disk takes longer).
pub(crate) const PRIMARY_DEADLINE: Duration = Duration::from_secs(5 * 60);

pub(crate) async fn wait_primary(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let members = pg::members(&ctx.services, cluster).await?;
    let primary = await_primary(&ctx, &members, Wait::new("a primary", PRIMARY_DEADLINE)).await?;
    Ok(json!({"primary": primary}))
}

/// Waits until Patroni runs a leader among `members`, saying meanwhile what Patroni
/// reports and what each member's logs say; answers the leader's name.
pub(crate) async fn await_primary(ctx: &StepCtx<App>, members: &[Member], wait: Wait) -> Result<String, StepFailure> {
    let app = &ctx.services;
    ctx.wait(
        &wait,
        || async {
            Ok(match patroni::status(app, members).await {
                Ok(s) => match s.leader() {
                    Some(l) => Probe::Ready(l.name.clone()),
                    None => Probe::Waiting(patroni::describe(&s)),
                },
                Err(e) => Probe::Waiting(format!("no member's Patroni answers ({e})")),
            })
        },
        |seen| async move {
            let all: Vec<&Member> = members.iter().collect();
            format!("{seen}; {}", diagnose::members(app, &all).await)
        },
    )
    .await
}
pub(crate) async fn create_database(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    let members = pg::members(app, cluster).await?;
    let (_, m) = patroni::wait_primary(app, &members, Duration::from_secs(60))
        .await
        .map_err(|e| StepFailure::transient(format!("no primary: {e}")))?;
    let password = pg::passwords(app, cluster).await?.app;
    // Identifiers were validated ([a-z_][a-z0-9_]*) and passwords are letters and digits,
    // so quoting them is enough. The SQL goes through stdin: no password in argv.
    let (user, db) = (&spec.user, &spec.database);
    let sql = format!(
        "SELECT format('CREATE ROLE %I LOGIN', '{user}') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}')\\gexec\n\
         ALTER ROLE \"{user}\" LOGIN PASSWORD '{password}';\n\
         SELECT format('CREATE DATABASE %I OWNER %I', '{db}', '{user}') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n"
    );
    pg::psql(app, m, sql, "create the application user and database").await.map_err(|mut f| {
        // The primary may have just changed: worth another try.
        f.transient = true;
        f
    })?;
    Ok(json!({"user": user, "database": db, "on": m.name}))
}

pub(crate) async fn start_routers(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    for m in pg::members(app, cluster).await? {
        let client = pg::agent(app, &m.host, Duration::from_secs(60)).await?;
        let layout = m.layout();
        pg::start_service(&client, &m, "haproxy", render::haproxy_argv(&layout)).await?;
        if m.spec.ports.pooler.is_some() {
            pg::start_service(&client, &m, "pgbouncer", render::pgbouncer_argv(&layout)).await?;
        }
    }
    Ok(json!({}))
}

/// How long `wait-replicas` waits at least for every replica to stream; cloning a
/// replica copies the primary's data, so [`REPLICAS_PER_GIB`] more per GiB of it.
pub(crate) const REPLICAS_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// `wait-replicas`' allowance per GiB of the primary's databases (about 17 MB/s).
pub(crate) const REPLICAS_PER_GIB: Duration = Duration::from_secs(60);

pub(crate) async fn wait_replicas(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (_, spec) = pg::must_cluster(app, cluster).await?;
    let members = &pg::members(app, cluster).await?;
    // Whole GiB only: the base covers the rest, and the deadline reads round.
    let deadline = REPLICAS_DEADLINE + REPLICAS_PER_GIB * data_gib(app, members).await.floor() as u32;
    let what = if spec.sync && members.len() > 1 {
        "every replica to stream and a synchronous standby"
    } else {
        "every replica to stream"
    };
    let s = ctx
        .wait(
            &Wait::new(what, deadline),
            || async {
                Ok(match patroni::replication(app, members, spec.sync).await {
                    Ok(s) if s.missing.is_empty() => Probe::Ready(s),
                    Ok(s) => {
                        Probe::Waiting(format!("primary {}; not streaming yet: {}", s.leader, s.missing.join(", ")))
                    }
                    Err(e) => Probe::Waiting(format!("no primary ({e})")),
                })
            },
            |seen| async move {
                // Explain the members other than the primary (all of them without one).
                let leader = seen.strip_prefix("primary ").and_then(|r| r.split(';').next()).map(str::to_string);
                let behind: Vec<&Member> = members.iter().filter(|m| leader.as_ref() != Some(&m.name)).collect();
                format!("{seen}; {}", diagnose::members(app, &behind).await)
            },
        )
        .await?;
    Ok(json!({"primary": s.leader, "streaming": s.streaming}))
}

/// The size of the primary's databases in GiB, for deadlines that grow with the data;
/// 0 when it can't be read (the base deadline holds then).
pub(crate) async fn data_gib(app: &App, members: &[Member]) -> f64 {
    let Ok((_, primary)) = patroni::wait_primary(app, members, Duration::from_secs(5)).await else { return 0.0 };
    let sql = "SELECT sum(pg_database_size(oid)) FROM pg_database;".to_string();
    match pg::psql(app, primary, sql, "read the size of the databases").await {
        Ok(out) => out.trim().parse::<f64>().map(|b| b / (1u64 << 30) as f64).unwrap_or(0.0),
        Err(_) => 0.0,
    }
}

pub(crate) async fn mark_ready(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let ClusterParams { cluster } = ctx.params()?;
    let app = &ctx.services;
    let (record, spec) = pg::must_cluster(app, cluster).await?;
    let (kind, message) = match cluster_restore::restore_params(&ctx)? {
        Some(r) => (
            crate::events::kind::RESTORED,
            format!("cluster {} is ready with {} member(s), restored from {}", record.name, spec.replicas, r.describe),
        ),
        None => {
            (crate::events::kind::CREATED, format!("cluster {} is ready with {} member(s)", record.name, spec.replicas))
        }
    };
    let mut tx = app.store.write().await.map_err(store_failure)?;
    if record.state != ClusterState::Ready {
        tx.cluster_set_state(cluster, ClusterState::Ready).await.map_err(store_failure)?;
        crate::events::record(tx.as_mut(), &crate::events::cluster_event(&record, kind, message))
            .await
            .map_err(super::app_failure)?;
    }
    tx.commit().await.map_err(store_failure)?;
    Ok(json!({}))
}

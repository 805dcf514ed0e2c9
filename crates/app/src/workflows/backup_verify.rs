//! `backup.verify`: a restore drill. The newest backup of a cluster is restored into a
//! temporary PostgreSQL beside the repository, which must start, recover to a consistent
//! state and answer; then every page is checked against its checksum and the instance is
//! removed. The cluster itself is not touched.
//!
//! Parameters: `{"cluster": ID, "stanza": "...", "repo": ID}` (the stanza and repository
//! as when the drill was asked for).
//!
//! Steps:
//! 1. `prepare` (undone by removing the drill): a host that reaches the repository (a
//!    posix repository's own; for s3 one of the cluster's), a directory
//!    `<base>/drill/<operation>` with pgBackRest's and PostgreSQL's configuration; which
//!    backup is restored (the newest without errors).
//! 2. `verify-repository`: `pgbackrest verify` reads every file of the stanza's backups and
//!    archived WAL and checks it against its recorded checksum.
//! 3. `restore`: that backup into the drill's data directory, recovery to consistency.
//! 4. `start`: the drill's PostgreSQL, supervised by the host's agent, on a Unix socket
//!    only.
//! 5. `check`: it promotes and answers a query in every database; it is stopped cleanly and
//!    `pg_checksums --check` reads every page.
//! 6. `clean-up`: the process and the directory removed; a `drill` event with the backup,
//!    the duration and what was checked.
//!
//! A drill that finds a problem fails with what pgBackRest or PostgreSQL said, writes a
//! `drill-failed` event, and removes what it made (the undo of `prepare`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_agent::proto::{DesiredState, ProcessState, RemoveRequest, TailFileRequest};
use sovdb_operations::{StepCtx, StepFailure, Workflow};
use sovdb_postgres::backup as br;
use sovdb_postgres::render::MemberLayout;
use sovdb_postgres::OS_USER;
use sovdb_store::HostRecord;
use sovdb_types::{ClusterId, HostId, RepoId};

use super::agent_failure;
use super::backup::{self, pgbackrest};
use super::pg::{self, store_failure};
use crate::App;

pub const KIND: &str = "backup.verify";

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step_with_undo("prepare", prepare, clean_up)
        .step("verify-repository", verify_repository)
        .step("restore", restore)
        .step("start", start)
        .step("check", check)
        .step("clean-up", finish)
}

/// The parameters of `backup.verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VerifyParams {
    pub cluster: ClusterId,
    pub stanza: String,
    pub repo: RepoId,
}

/// What `prepare` chose.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Drill {
    host: HostId,
    dir: String,
    /// The backup restored.
    set: String,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Drill {
    fn layout(&self) -> MemberLayout {
        MemberLayout::new(self.dir.clone())
    }
}

fn process_name(ctx: &StepCtx<App>) -> String {
    format!("drill-{}", pg::short_id(&ctx.operation.0))
}

fn postgresql_conf(layout: &MemberLayout) -> String {
    format!("{}/postgresql.conf", layout.dir)
}

/// Writes a `drill-failed` event when `r` is a failure that retrying won't mend.
async fn noted<T>(ctx: &StepCtx<App>, r: Result<T, StepFailure>) -> Result<T, StepFailure> {
    let Err(f) = &r else { return r };
    if f.transient {
        return r;
    }
    let p: VerifyParams = ctx.params()?;
    if let Some((record, _)) = pg::cluster(&ctx.services, p.cluster).await? {
        let message =
            format!("the restore drill of cluster {} failed: {} (operation {})", record.name, f.error, ctx.operation);
        pg::event_once(&ctx.services, &record, ctx.operation, crate::events::kind::DRILL_FAILED, message).await?;
    }
    r
}

async fn prepare(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let r = prepare_inner(&ctx).await;
    noted(&ctx, r).await
}

async fn prepare_inner(ctx: &StepCtx<App>) -> Result<Value, StepFailure> {
    let p: VerifyParams = ctx.params()?;
    let app = &ctx.services;
    let repo = {
        let mut tx = app.store.read().await.map_err(store_failure)?;
        tx.repo_get_by_id(p.repo).await.map_err(store_failure)?
    }
    .ok_or_else(|| StepFailure::permanent("the cluster's backup repository no longer exists"))?;
    // The last member first: more often a replica than the first, which started as the
    // primary, so the drill's reads stay off the primary's host.
    let members = pg::members(app, p.cluster).await?;
    let near: Vec<HostRecord> = members.iter().rev().map(|m| m.host.clone()).collect();
    let host = backup::site_host(app, &repo, &near).await?;
    let dir = format!("{}/drill/{}", host.host.base_dir, pg::short_id(&ctx.operation.0));
    let layout = backup::site_prepare(app, &host, dir.clone(), &p.stanza, p.repo, br::DRILL_PORT).await?;
    let client = pg::agent(app, &host, Duration::from_secs(60)).await?;
    pg::write(&client, OS_USER, postgresql_conf(&layout), br::drill_postgresql_conf(&layout), 0o600).await?;
    pg::write(&client, OS_USER, format!("{dir}/pg_hba.conf"), br::DRILL_HBA, 0o600).await?;
    pg::write(&client, OS_USER, format!("{dir}/pg_ident.conf"), "", 0o600).await?;
    let out =
        pgbackrest(app, &host, &br::info_argv(&layout, &p.stanza), Duration::from_secs(60), "read the backups").await?;
    let info = br::parse_info(&out, &p.stanza, &repo.name).map_err(StepFailure::permanent)?;
    let set = info.backups.iter().rev().find(|b| !b.backup.error).map(|b| b.backup.id.clone()).ok_or_else(|| {
        StepFailure::permanent(format!("repository {} holds no backup of the cluster to restore", repo.name))
    })?;
    let drill = Drill { host: host.host.id, dir, set, started_at: crate::now() };
    Ok(serde_json::to_value(&drill).expect("serialise"))
}

async fn drill_of(ctx: &StepCtx<App>) -> Result<(Drill, HostRecord), StepFailure> {
    let drill: Drill = ctx.output("prepare")?;
    let host = backup::host_record(&ctx.services, drill.host).await?;
    Ok((drill, host))
}

async fn verify_repository(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let r = async {
        let p: VerifyParams = ctx.params()?;
        let (drill, host) = drill_of(&ctx).await?;
        let argv = br::verify_argv(&drill.layout(), &p.stanza);
        let t = Instant::now();
        pgbackrest(&ctx.services, &host, &argv, Duration::from_secs(6 * 3600), "verify the repository's files").await?;
        Ok(json!({"verified": true, "seconds": t.elapsed().as_secs_f64()}))
    }
    .await;
    noted(&ctx, r).await
}

async fn restore(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let r = async {
        let p: VerifyParams = ctx.params()?;
        let (drill, host) = drill_of(&ctx).await?;
        let layout = drill.layout();
        let client = pg::agent(&ctx.services, &host, Duration::from_secs(60)).await?;
        // Again from the start when a crash cut a restore short.
        client.remove(&RemoveRequest { path: layout.data().into(), recursive: true }).await.map_err(agent_failure)?;
        pg::make_dirs(&client, OS_USER, &[layout.data()]).await?;
        let argv = br::drill_restore_argv(&layout, &p.stanza, &drill.set);
        let t = Instant::now();
        pgbackrest(&ctx.services, &host, &argv, Duration::from_secs(6 * 3600), "restore the backup").await?;
        Ok(json!({"backup": drill.set, "seconds": t.elapsed().as_secs_f64()}))
    }
    .await;
    noted(&ctx, r).await
}

async fn start(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let r = run_postgres(&ctx).await;
    noted(&ctx, r).await
}

/// The drill's PostgreSQL runs (started, or left running), supervised by the agent.
async fn run_postgres(ctx: &StepCtx<App>) -> Result<Value, StepFailure> {
    let (drill, host) = drill_of(ctx).await?;
    let (record, _) = pg::must_cluster(&ctx.services, ctx.params::<VerifyParams>()?.cluster).await?;
    let layout = drill.layout();
    let client = pg::agent(&ctx.services, &host, Duration::from_secs(60)).await?;
    let argv = vec![
        format!("{}/postgres", sovdb_postgres::bin_dir(&record.version)),
        "-D".into(),
        layout.data(),
        "-c".into(),
        format!("config_file={}", postgresql_conf(&layout)),
    ];
    pg::ensure(&client, process_name(ctx), argv, OS_USER, &layout.dir, DesiredState::Running).await?;
    Ok(json!({"process": process_name(ctx)}))
}

/// How long recovery to consistency may take before the drill gives up.
const RECOVERY_LIMIT: Duration = Duration::from_secs(3600);

async fn check(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let r = check_inner(&ctx).await;
    noted(&ctx, r).await
}

async fn check_inner(ctx: &StepCtx<App>) -> Result<Value, StepFailure> {
    let app = &ctx.services;
    let (drill, host) = drill_of(ctx).await?;
    let (record, _) = pg::must_cluster(app, ctx.params::<VerifyParams>()?.cluster).await?;
    let layout = drill.layout();
    let client = pg::agent(app, &host, Duration::from_secs(60)).await?;
    let name = process_name(ctx);
    // Again after a crash that cut this step short, when the instance was stopped already.
    run_postgres(ctx).await?;
    let port = br::DRILL_PORT.to_string();
    let run_dir = layout.run_dir();
    let psql = |db, sql| psql_argv(&run_dir, &port, db, sql);
    // Recovery replays the WAL written during the backup, then promotes.
    let t = Instant::now();
    loop {
        let status = client.process_status(&name).await.map_err(agent_failure)?;
        if matches!(status.state, ProcessState::Backoff | ProcessState::Failed) {
            let log = client
                .tail_file(&TailFileRequest { path: status.log_dir.join("stderr.log"), lines: 20 })
                .await
                .map(|t| t.lines.join("\n"))
                .unwrap_or_default();
            return Err(StepFailure::permanent(format!(
                "the restored PostgreSQL did not start or stopped during recovery: {}",
                last_lines(&log)
            )));
        }
        let out = pg::exec(&client, &psql("postgres", "SELECT pg_is_in_recovery()"), Some(OS_USER), None).await?;
        if out.status.code == Some(0) && out.stdout.trim() == "f" {
            break;
        }
        if t.elapsed() > RECOVERY_LIMIT {
            return Err(StepFailure::permanent(format!(
                "the restored PostgreSQL did not finish recovery within {} s",
                RECOVERY_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovered_s = t.elapsed().as_secs_f64();
    // Every database answers: its catalog is read whole.
    let argv = psql("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1");
    let out = pg::run(&client, &argv, Some(OS_USER), None, "list the databases").await?;
    let databases: Vec<String> = out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let mut relations = 0u64;
    for db in &databases {
        let what = format!("query database {db}");
        let out = pg::run(&client, &psql(db, "SELECT count(*) FROM pg_class"), Some(OS_USER), None, &what).await?;
        relations += out.trim().parse::<u64>().unwrap_or(0);
    }
    // A clean stop, so pg_checksums may read the data directory.
    stop_postgres(&client, &name).await?;
    let checksums = format!("{}/pg_checksums", sovdb_postgres::bin_dir(&record.version));
    let data = layout.data();
    let out = pg::exec(&client, &[&checksums, "--check", "-D", &data], Some(OS_USER), None).await?;
    if out.status.code != Some(0) {
        return Err(StepFailure::permanent(format!(
            "page checksums of the restored backup are wrong: {}",
            last_lines(&format!("{}\n{}", out.stdout, out.stderr))
        )));
    }
    let blocks = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Blocks scanned:").map(|v| v.trim().parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    Ok(json!({
        "databases": databases,
        "relations": relations,
        "recovery_seconds": recovered_s,
        "blocks_checked": blocks,
    }))
}

/// psql as the database superuser over the drill's socket, one statement.
fn psql_argv<'a>(run_dir: &'a str, port: &'a str, db: &'a str, sql: &'a str) -> [&'a str; 17] {
    [
        "psql",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        run_dir,
        "-p",
        port,
        "-U",
        "postgres",
        "-d",
        db,
        "-c",
        sql,
    ]
}

/// Stops the drill's PostgreSQL (SIGTERM: a clean shutdown) if the agent runs it; whether
/// it did.
async fn stop_postgres(client: &sovdb_agent::AgentClient, name: &str) -> Result<bool, StepFailure> {
    let Some(p) = client.process_list().await.map_err(agent_failure)?.into_iter().find(|p| p.name == name) else {
        return Ok(false);
    };
    let req = sovdb_agent::proto::EnsureProcessRequest { spec: p.spec, state: DesiredState::Stopped };
    client.ensure_process(&req).await.map_err(agent_failure)?;
    Ok(true)
}

/// The last few lines of a tool's output, for an error message.
fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" / ")
}

/// Stops the drill's PostgreSQL and removes its directory and process; idempotent.
async fn remove_drill(ctx: &StepCtx<App>) -> Result<(), StepFailure> {
    let Ok(drill) = ctx.output::<Drill>("prepare") else { return Ok(()) };
    let app = &ctx.services;
    let host = backup::host_record(app, drill.host).await?;
    let client = pg::agent(app, &host, Duration::from_secs(90)).await?;
    let name = process_name(ctx);
    if stop_postgres(&client, &name).await? {
        let dir = format!("{}/services/{name}", host.host.base_dir);
        client.remove(&RemoveRequest { path: dir.into(), recursive: true }).await.map_err(agent_failure)?;
    }
    backup::site_remove(app, &host, &drill.layout()).await
}

/// Undo of `prepare`: what the drill made goes.
async fn clean_up(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    remove_drill(&ctx).await?;
    Ok(json!({}))
}

async fn finish(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    remove_drill(&ctx).await?;
    let p: VerifyParams = ctx.params()?;
    let drill: Drill = ctx.output("prepare")?;
    let checked: Value = ctx.output("check")?;
    let seconds = (crate::now() - drill.started_at).num_milliseconds() as f64 / 1000.0;
    if let Some((record, _)) = pg::cluster(&ctx.services, p.cluster).await? {
        let message = format!(
            "restore drill of cluster {}: backup {} restored and verified in {seconds:.1} s (repository files \
             checked, recovery to consistency, {} database(s) answered, {} page(s) checked)",
            record.name,
            drill.set,
            checked["databases"].as_array().map_or(0, Vec::len),
            checked["blocks_checked"].as_u64().unwrap_or(0),
        );
        pg::event_once(&ctx.services, &record, ctx.operation, crate::events::kind::DRILL, message).await?;
    }
    Ok(json!({"backup": drill.set, "seconds": seconds, "outcome": "ok"}))
}

// The store implementation shared by both backends. This file is not a module of its own:
// `sqlite.rs` and `postgres.rs` each `include!` it after defining `Db`, `BACKEND`,
// `BEGIN_READ`, `BEGIN_WRITE`, `LOCK_AUDIT` and `LOCK_MIGRATIONS`, so one text of SQL
// compiles into two fully typed implementations. Keep every statement portable: `$n`
// parameters, BIGINT, TEXT, BOOLEAN, `ON CONFLICT`, no RETURNING of generated values.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Executor as _, Row as _};
use sovdb_types::audit::{AuditEntry, AuditHead, AuditRecord, Outcome, GENESIS_HASH};
use sovdb_types::*;

use crate::migrations::{CREATE_MIGRATIONS_TABLE, MIGRATIONS, SCHEMA_VERSION};
use crate::{
    AlertChannelRecord, AlertRecord, AlertRuleRecord, AlertRuleSettingsRecord, AlertSilenceRecord, DeliveryRecord, AuditFilter, Backend, ClusterRecord, DcsMember, HostRecord, MemberRecord, MetricRow, MetricTable, NewEvent, NewOperation, PortAllocation, OpenError, OperationChange, OperationRun, RepoRecord, Result, RetainedRecord, SecretRecord, StepChange,
    StepRun, StoreError, Tx,
};

type Row = <Db as sqlx::Database>::Row;

/// The `meta` key of the audit chain's head (`SEQ:HASH`), written with every append.
const AUDIT_HEAD_KEY: &str = "audit.head";

/// A store on one connection pool.
pub(crate) struct SqlStore {
    pool: sqlx::Pool<Db>,
}

/// Applies the migrations this build knows and the store lacks. `url` is for messages
/// only and must already be redacted.
async fn migrate(pool: &sqlx::Pool<Db>, url: &str) -> std::result::Result<(), OpenError> {
    let fail = |e: sqlx::Error| OpenError::Migration { url: url.to_string(), cause: e.to_string() };
    for (version, name, sql) in MIGRATIONS {
        // Crash safety: each migration and its record commit together, so a crash leaves
        // the store at a whole version and the next start carries on from there.
        let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(fail)?;
        if let Some(lock) = LOCK_MIGRATIONS {
            sqlx::query(lock).execute(&mut *tx).await.map_err(fail)?;
        }
        tx.execute(CREATE_MIGRATIONS_TABLE).await.map_err(fail)?;
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?;
        let newest = newest.unwrap_or(0);
        if newest > SCHEMA_VERSION {
            return Err(OpenError::TooNew { url: url.to_string(), found: newest, known: SCHEMA_VERSION });
        }
        if newest >= *version {
            continue;
        }
        tx.execute(*sql).await.map_err(fail)?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(*version)
            .bind(*name)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, name, "store migrated");
    }
    Ok(())
}

#[async_trait]
impl crate::Store for SqlStore {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn read(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx { tx: begin(&self.pool, BEGIN_READ).await? }))
    }

    async fn write(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx { tx: begin(&self.pool, BEGIN_WRITE).await? }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Starts a transaction on a task of its own, which always runs to the end: a caller
/// dropped meanwhile (an HTTP client that went away drops its request) only drops the
/// transaction once it exists, which rolls it back. Awaited in place, a drop at the wrong
/// moment strands it: sqlx's SQLite `begin_with` still awaits after its BEGIN ran, and a
/// future dropped there leaves the pooled connection inside a transaction no one ends —
/// holding SQLite's write lock, and refusing every later start on that connection
/// ("begin_with at non-zero transaction depth").
async fn begin(pool: &sqlx::Pool<Db>, statement: &'static str) -> Result<sqlx::Transaction<'static, Db>> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin_with(statement).await }).await {
        Ok(tx) => Ok(tx?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(StoreError::Backend(sqlx::Error::PoolClosed)),
    }
}

struct SqlTx {
    tx: sqlx::Transaction<'static, Db>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(row: &Row, col: &str) -> Result<DateTime<Utc>> {
    let v: i64 = row.try_get(col)?;
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt { what: "timestamp", detail: format!("{col}={v}") })
}

fn parsed<T: std::str::FromStr>(row: &Row, col: &str, what: &'static str) -> Result<T> {
    let v: String = row.try_get(col)?;
    v.parse().map_err(|_| StoreError::Corrupt { what, detail: format!("{col}={v:?}") })
}

fn enum_col<T>(row: &Row, col: &str, what: &'static str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let v: String = row.try_get(col)?;
    parse(&v).ok_or_else(|| StoreError::Corrupt { what, detail: format!("{col}={v:?}") })
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, col: &str, what: &'static str) -> Result<T> {
    let v: String = row.try_get(col)?;
    serde_json::from_str(&v).map_err(|e| StoreError::Corrupt { what, detail: format!("{col}: {e}") })
}

fn project_from(row: &Row) -> Result<Project> {
    Ok(Project { id: parsed(row, "id", "project id")?, name: row.try_get("name")?, created_at: time(row, "created_at")? })
}

fn user_from(row: &Row) -> Result<User> {
    Ok(User {
        id: parsed(row, "id", "user id")?,
        name: row.try_get("name")?,
        disabled: row.try_get("disabled")?,
        created_at: time(row, "created_at")?,
    })
}

fn token_from(row: &Row) -> Result<TokenRecord> {
    let expires_at: Option<i64> = row.try_get("expires_at")?;
    Ok(TokenRecord {
        id: parsed(row, "id", "token id")?,
        user_id: parsed(row, "user_id", "user id")?,
        name: row.try_get("name")?,
        secret_sha256: row.try_get("secret_sha256")?,
        created_at: time(row, "created_at")?,
        expires_at: expires_at.and_then(DateTime::from_timestamp_millis),
        revoked: row.try_get("revoked")?,
    })
}

fn location_from(row: &Row) -> Result<Location> {
    Ok(Location {
        id: parsed(row, "id", "location id")?,
        name: row.try_get("name")?,
        provider: enum_col(row, "provider", "provider", Provider::parse)?,
        region: row.try_get("region")?,
        zone: row.try_get("zone")?,
        labels: json_col::<BTreeMap<String, String>>(row, "labels", "location labels")?,
        created_at: time(row, "created_at")?,
    })
}

fn cluster_from(row: &Row) -> Result<Cluster> {
    Ok(Cluster {
        id: parsed(row, "id", "cluster id")?,
        name: row.try_get("name")?,
        project: row.try_get("project")?,
        engine: enum_col(row, "engine", "engine", Engine::parse)?,
        version: row.try_get("version")?,
        state: enum_col(row, "state", "cluster state", ClusterState::parse)?,
        location: row.try_get("location")?,
        created_at: time(row, "created_at")?,
    })
}

fn audit_from(row: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        id: parsed(row, "id", "audit id")?,
        at: time(row, "at")?,
        actor: row.try_get("actor")?,
        project: row.try_get("project")?,
        source: row.try_get("source")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        params: json_col(row, "params", "audit params")?,
        outcome: enum_col(row, "outcome", "audit outcome", Outcome::parse)?,
        request_id: row.try_get("request_id")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn opt_time(row: &Row, col: &str) -> Result<Option<DateTime<Utc>>> {
    let v: Option<i64> = row.try_get(col)?;
    Ok(v.and_then(DateTime::from_timestamp_millis))
}

fn opt_json<T: serde::de::DeserializeOwned>(row: &Row, col: &str, what: &'static str) -> Result<Option<T>> {
    let v: Option<String> = row.try_get(col)?;
    v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt { what, detail: format!("{col}: {e}") }))
        .transpose()
}

fn operation_from(row: &Row, steps: Vec<OperationStep>) -> Result<Operation> {
    Ok(Operation {
        id: parsed(row, "id", "operation id")?,
        kind: row.try_get("kind")?,
        target: row.try_get("target")?,
        project: row.try_get("project")?,
        state: enum_col(row, "state", "operation state", OperationState::parse)?,
        cancel_requested: row.try_get("cancel_requested")?,
        created_by: row.try_get("created_by")?,
        created_at: time(row, "created_at")?,
        finished_at: opt_time(row, "finished_at")?,
        error: opt_json(row, "error", "operation error")?,
        steps,
    })
}

fn step_from(row: &Row) -> Result<OperationStep> {
    Ok(OperationStep {
        index: row.try_get("idx")?,
        name: row.try_get("name")?,
        state: enum_col(row, "state", "step state", StepState::parse)?,
        attempts: row.try_get("attempts")?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        error: opt_json(row, "error", "step error")?,
        output: opt_json(row, "output", "step output")?,
        progress: match (row.try_get::<Option<String>, _>("progress")?, opt_time(row, "progress_at")?) {
            (Some(message), Some(at)) => Some(StepProgress { message, at }),
            _ => None,
        },
    })
}

const OPERATION_SELECT: &str = "SELECT o.id, o.kind, o.target, p.name AS project, o.state, o.cancel_requested, \
     o.created_by, o.created_at, o.finished_at, o.error FROM operations o LEFT JOIN projects p ON p.id = o.project_id";

/// Operations a worker may still have to run.
const UNFINISHED: &str = "('queued', 'running', 'undoing')";

impl SqlTx {
    /// The steps of every operation in `ids`, in one query (a page holds up to 1001).
    async fn steps_of(&mut self, ids: &[String]) -> Result<HashMap<String, Vec<OperationStep>>> {
        let mut steps: HashMap<String, Vec<OperationStep>> = HashMap::new();
        if ids.is_empty() {
            return Ok(steps);
        }
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT operation_id, idx, name, state, attempts, started_at, finished_at, error, output, progress, \
             progress_at FROM operation_steps WHERE operation_id IN ({placeholders}) ORDER BY operation_id, idx"
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id);
        }
        for row in query.fetch_all(&mut *self.tx).await? {
            steps.entry(row.try_get("operation_id")?).or_default().push(step_from(&row)?);
        }
        Ok(steps)
    }
}

const HOST_SELECT: &str = "SELECT h.id, h.name, h.location_id, l.name AS location, h.address, h.agent_port, \
     h.base_dir, h.zone, h.labels, h.status, h.status_message, h.ssh_user, h.ssh_port, h.ssh_key_sealed, \
     h.ssh_host_key, h.ssh_host_key_fp, h.facts, h.last_seen_at, h.created_at \
     FROM hosts h JOIN locations l ON l.id = h.location_id";

fn host_from(row: &Row) -> Result<HostRecord> {
    let port = |col: &str| -> Result<Option<u16>> {
        let v: Option<i64> = row.try_get(col)?;
        v.map(|v| u16::try_from(v).map_err(|_| StoreError::Corrupt { what: "host port", detail: format!("{col}={v}") }))
            .transpose()
    };
    let ssh_user: Option<String> = row.try_get("ssh_user")?;
    let ssh_host_key: Option<String> = row.try_get("ssh_host_key")?;
    let ssh = match ssh_user {
        Some(user) => Some(SshAccess {
            user,
            port: port("ssh_port")?.unwrap_or(22),
            host_key: ssh_host_key,
            host_key_fingerprint: row.try_get("ssh_host_key_fp")?,
        }),
        None => None,
    };
    Ok(HostRecord {
        host: Host {
            id: parsed(row, "id", "host id")?,
            name: row.try_get("name")?,
            location: row.try_get("location")?,
            address: row.try_get("address")?,
            agent_port: port("agent_port")?.unwrap_or_default(),
            base_dir: row.try_get("base_dir")?,
            zone: row.try_get("zone")?,
            labels: json_col(row, "labels", "host labels")?,
            status: enum_col(row, "status", "host status", HostStatus::parse)?,
            status_message: row.try_get("status_message")?,
            ssh,
            facts: opt_json(row, "facts", "host facts")?,
            last_seen_at: opt_time(row, "last_seen_at")?,
            created_at: time(row, "created_at")?,
        },
        location_id: parsed(row, "location_id", "location id")?,
        ssh_key_sealed: row.try_get("ssh_key_sealed")?,
    })
}

const CLUSTER_SELECT: &str = "SELECT c.id, c.name, p.name AS project, c.engine, c.version, c.state, \
     l.name AS location, c.created_at \
     FROM clusters c JOIN projects p ON p.id = c.project_id JOIN locations l ON l.id = c.location_id";

const CLUSTER_RECORD_SELECT: &str = "SELECT c.id, c.project_id, c.name, c.engine, c.version, c.state, \
     c.location_id, c.spec, c.created_at FROM clusters c";

fn cluster_record_from(row: &Row) -> Result<ClusterRecord> {
    Ok(ClusterRecord {
        id: parsed(row, "id", "cluster id")?,
        project_id: parsed(row, "project_id", "project id")?,
        name: row.try_get("name")?,
        engine: enum_col(row, "engine", "engine", Engine::parse)?,
        version: row.try_get("version")?,
        state: enum_col(row, "state", "cluster state", ClusterState::parse)?,
        location_id: parsed(row, "location_id", "location id")?,
        spec: json_col(row, "spec", "cluster spec")?,
        created_at: time(row, "created_at")?,
    })
}

const REPO_SELECT: &str = "SELECT r.id, r.project_id, r.name, r.location_id, l.name AS location, r.host_id, \
     h.name AS host, r.kind, r.spec, r.encrypted, r.is_default, r.created_at \
     FROM backup_repos r JOIN locations l ON l.id = r.location_id LEFT JOIN hosts h ON h.id = r.host_id";

fn repo_from(row: &Row) -> Result<RepoRecord> {
    let host_id: Option<String> = row.try_get("host_id")?;
    Ok(RepoRecord {
        id: parsed(row, "id", "repository id")?,
        project_id: parsed(row, "project_id", "project id")?,
        name: row.try_get("name")?,
        location_id: parsed(row, "location_id", "location id")?,
        location: row.try_get("location")?,
        host_id: host_id
            .map(|v| v.parse().map_err(|_| StoreError::Corrupt { what: "host id", detail: format!("host_id={v:?}") }))
            .transpose()?,
        host: row.try_get("host")?,
        kind: enum_col(row, "kind", "repository type", RepoType::parse)?,
        spec: json_col(row, "spec", "repository spec")?,
        encrypted: row.try_get("encrypted")?,
        is_default: row.try_get("is_default")?,
        created_at: time(row, "created_at")?,
    })
}

const RETAINED_SELECT: &str = "SELECT k.cluster_id, k.project_id, k.name, k.repo_id, r.name AS repo, \
     k.location_id, k.engine, k.version, k.spec, k.created_at, k.deleted_at \
     FROM retained_backups k JOIN backup_repos r ON r.id = k.repo_id";

fn retained_from(row: &Row) -> Result<RetainedRecord> {
    Ok(RetainedRecord {
        cluster: ClusterRecord {
            id: parsed(row, "cluster_id", "cluster id")?,
            project_id: parsed(row, "project_id", "project id")?,
            name: row.try_get("name")?,
            engine: enum_col(row, "engine", "engine", Engine::parse)?,
            version: row.try_get("version")?,
            state: ClusterState::Deleting,
            location_id: parsed(row, "location_id", "location id")?,
            spec: json_col(row, "spec", "retained cluster spec")?,
            created_at: time(row, "created_at")?,
        },
        repo_id: parsed(row, "repo_id", "repository id")?,
        repo: row.try_get("repo")?,
        deleted_at: time(row, "deleted_at")?,
    })
}

fn port_col(row: &Row, col: &str, what: &'static str) -> Result<u16> {
    let v: i64 = row.try_get(col)?;
    u16::try_from(v).map_err(|_| StoreError::Corrupt { what, detail: format!("{col}={v}") })
}

fn member_from(row: &Row) -> Result<MemberRecord> {
    Ok(MemberRecord {
        cluster_id: parsed(row, "cluster_id", "cluster id")?,
        name: row.try_get("name")?,
        host_id: parsed(row, "host_id", "host id")?,
        spec: json_col(row, "spec", "member spec")?,
        created_at: time(row, "created_at")?,
    })
}

fn port_from(row: &Row) -> Result<PortAllocation> {
    Ok(PortAllocation {
        host_id: parsed(row, "host_id", "host id")?,
        port: port_col(row, "port", "allocated port")?,
        owner: row.try_get("owner")?,
    })
}

fn dcs_member_from(row: &Row) -> Result<DcsMember> {
    Ok(DcsMember {
        location_id: parsed(row, "location_id", "location id")?,
        name: row.try_get("name")?,
        host_id: parsed(row, "host_id", "host id")?,
        client_port: port_col(row, "client_port", "etcd client port")?,
        peer_port: port_col(row, "peer_port", "etcd peer port")?,
        created_at: time(row, "created_at")?,
    })
}

fn event_from(row: &Row) -> Result<Event> {
    Ok(Event {
        id: parsed(row, "id", "event id")?,
        at: time(row, "at")?,
        project: row.try_get("project")?,
        target: row.try_get("target")?,
        kind: row.try_get("kind")?,
        message: row.try_get("message")?,
    })
}

const ALERT_SELECT: &str =
    "SELECT id, project_id, akey, rule, cluster, state, data, pending_since, started_at, resolved_at FROM alerts";


fn alert_from(row: &Row) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: parsed(row, "id", "alert id")?,
        project_id: parsed(row, "project_id", "project id")?,
        key: row.try_get("akey")?,
        rule: row.try_get("rule")?,
        cluster: row.try_get("cluster")?,
        state: row.try_get("state")?,
        data: row.try_get("data")?,
        pending_since: time(row, "pending_since")?,
        started_at: opt_time(row, "started_at")?,
        resolved_at: opt_time(row, "resolved_at")?,
    })
}

const DELIVERY_SELECT: &str = "SELECT id, project_id, alert_id, channel_id, channel, status, payload, attempts, \
                               next_at, last_result, delivered_at, gave_up, created_at FROM alert_deliveries";

fn delivery_from(row: &Row) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: parsed(row, "id", "delivery id")?,
        project_id: parsed(row, "project_id", "project id")?,
        alert_id: parsed(row, "alert_id", "alert id")?,
        channel_id: parsed(row, "channel_id", "channel id")?,
        channel: row.try_get("channel")?,
        status: row.try_get("status")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        next_at: time(row, "next_at")?,
        last_result: row.try_get("last_result")?,
        delivered_at: opt_time(row, "delivered_at")?,
        gave_up: row.try_get("gave_up")?,
        created_at: time(row, "created_at")?,
    })
}

/// `owner = $n OR owner LIKE $n || '/%'`: an owner and everything under it. Owners are
/// made of IDs and DNS labels, which hold no LIKE wildcard.
fn owned_by(col: &str, n: u32) -> String {
    format!("({col} = ${n} OR {col} LIKE ${n} || '/%')")
}

#[async_trait]
impl Tx for SqlTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    async fn meta_get(&mut self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    async fn meta_set(&mut self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn meta_delete(&mut self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM meta WHERE key = $1").bind(key).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn meta_swap(&mut self, key: &str, old: Option<&str>, new: &str) -> Result<bool> {
        let done = match old {
            None => {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(new)
                    .execute(&mut *self.tx)
                    .await?
            }
            Some(old) => {
                sqlx::query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
                    .bind(new)
                    .bind(key)
                    .bind(old)
                    .execute(&mut *self.tx)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }

    async fn project_create(&mut self, p: &Project) -> Result<()> {
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(p.id.to_string())
            .bind(&p.name)
            .bind(ms(p.created_at))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn project_get(&mut self, name: &str) -> Result<Option<Project>> {
        sqlx::query("SELECT id, name, created_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| project_from(&r))
            .transpose()
    }

    async fn project_list(&mut self, page: &PageRequest) -> Result<Page<Project>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM projects WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch_limit())
            .fetch_all(&mut *self.tx)
            .await?;
        let items = rows.iter().map(project_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |p| p.name.clone()))
    }

    async fn project_get_by_id(&mut self, id: ProjectId) -> Result<Option<Project>> {
        sqlx::query("SELECT id, name, created_at FROM projects WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| project_from(&r))
            .transpose()
    }

    async fn user_create(&mut self, u: &User) -> Result<()> {
        sqlx::query("INSERT INTO users (id, name, disabled, created_at) VALUES ($1, $2, $3, $4)")
            .bind(u.id.to_string())
            .bind(&u.name)
            .bind(u.disabled)
            .bind(ms(u.created_at))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn user_get(&mut self, id: UserId) -> Result<Option<User>> {
        sqlx::query("SELECT id, name, disabled, created_at FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| user_from(&r))
            .transpose()
    }

    async fn user_get_by_name(&mut self, name: &str) -> Result<Option<User>> {
        sqlx::query("SELECT id, name, disabled, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| user_from(&r))
            .transpose()
    }

    async fn user_list(&mut self, project: Option<ProjectId>, page: &PageRequest) -> Result<Page<User>> {
        let after = page.after.as_deref().unwrap_or("");
        let rows = match project {
            None => {
                sqlx::query("SELECT id, name, disabled, created_at FROM users WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(after)
                    .bind(page.fetch_limit())
                    .fetch_all(&mut *self.tx)
                    .await?
            }
            Some(p) => {
                sqlx::query(
                    "SELECT id, name, disabled, created_at FROM users u WHERE name > $1 \
                     AND EXISTS (SELECT 1 FROM role_bindings b WHERE b.user_id = u.id AND b.scope = $2) \
                     ORDER BY name LIMIT $3",
                )
                .bind(after)
                .bind(p.to_string())
                .bind(page.fetch_limit())
                .fetch_all(&mut *self.tx)
                .await?
            }
        };
        let items = rows.iter().map(user_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |u| u.name.clone()))
    }

    async fn user_set_disabled(&mut self, id: UserId, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_delete(&mut self, id: UserId) -> Result<bool> {
        for sql in ["DELETE FROM tokens WHERE user_id = $1", "DELETE FROM role_bindings WHERE user_id = $1"] {
            sqlx::query(sql).bind(id.to_string()).execute(&mut *self.tx).await?;
        }
        let done = sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_password_set(&mut self, id: UserId, hash: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_password_get(&mut self, id: UserId) -> Result<Option<String>> {
        let hash: Option<Option<String>> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(hash.flatten())
    }

    async fn role_binding_delete(&mut self, b: &RoleBinding) -> Result<bool> {
        let done = sqlx::query("DELETE FROM role_bindings WHERE user_id = $1 AND role = $2 AND scope = $3")
            .bind(b.user_id.to_string())
            .bind(b.role.as_str())
            .bind(b.project_id.map(|p| p.to_string()).unwrap_or_default())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn role_binding_count_admins(&mut self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM role_bindings b JOIN users u ON u.id = b.user_id \
             WHERE b.role = 'admin' AND b.scope = '' AND NOT u.disabled",
        )
        .fetch_one(&mut *self.tx)
        .await?)
    }

    async fn role_binding_create(&mut self, b: &RoleBinding) -> Result<()> {
        sqlx::query("INSERT INTO role_bindings (user_id, role, scope) VALUES ($1, $2, $3)")
            .bind(b.user_id.to_string())
            .bind(b.role.as_str())
            .bind(b.project_id.map(|p| p.to_string()).unwrap_or_default())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn role_binding_list(&mut self, user: UserId) -> Result<Vec<RoleBinding>> {
        let rows = sqlx::query("SELECT role, scope FROM role_bindings WHERE user_id = $1 ORDER BY role, scope")
            .bind(user.to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|row| {
                let scope: String = row.try_get("scope")?;
                let project_id = if scope.is_empty() {
                    None
                } else {
                    Some(scope.parse().map_err(|_| StoreError::Corrupt { what: "role scope", detail: scope.clone() })?)
                };
                Ok(RoleBinding { user_id: user, role: enum_col(row, "role", "role", Role::parse)?, project_id })
            })
            .collect()
    }

    async fn token_create(&mut self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, user_id, name, secret_sha256, created_at, expires_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id.to_string())
        .bind(t.user_id.to_string())
        .bind(&t.name)
        .bind(&t.secret_sha256)
        .bind(ms(t.created_at))
        .bind(t.expires_at.map(ms))
        .bind(t.revoked)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn token_get_by_secret(&mut self, secret_sha256: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(
            "SELECT id, user_id, name, secret_sha256, created_at, expires_at, revoked FROM tokens WHERE secret_sha256 = $1",
        )
        .bind(secret_sha256)
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|r| token_from(&r))
        .transpose()
    }

    async fn token_get(&mut self, id: TokenId) -> Result<Option<TokenRecord>> {
        sqlx::query("SELECT id, user_id, name, secret_sha256, created_at, expires_at, revoked FROM tokens WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| token_from(&r))
            .transpose()
    }

    async fn token_list(&mut self, user: UserId, page: &PageRequest) -> Result<Page<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, secret_sha256, created_at, expires_at, revoked FROM tokens \
             WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(user.to_string())
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(token_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |t| t.id.to_string()))
    }

    async fn token_find(&mut self, user: UserId, name: &str) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, secret_sha256, created_at, expires_at, revoked FROM tokens \
             WHERE user_id = $1 AND name = $2 ORDER BY id",
        )
        .bind(user.to_string())
        .bind(name)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(token_from).collect()
    }

    async fn token_revoke(&mut self, id: TokenId) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn location_create(&mut self, l: &Location) -> Result<()> {
        sqlx::query(
            "INSERT INTO locations (id, name, provider, region, zone, labels, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(l.id.to_string())
        .bind(&l.name)
        .bind(l.provider.as_str())
        .bind(&l.region)
        .bind(&l.zone)
        .bind(serde_json::to_string(&l.labels).expect("labels serialise"))
        .bind(ms(l.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn location_get(&mut self, name: &str) -> Result<Option<Location>> {
        sqlx::query("SELECT id, name, provider, region, zone, labels, created_at FROM locations WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| location_from(&r))
            .transpose()
    }

    async fn location_list(&mut self, page: &PageRequest) -> Result<Page<Location>> {
        let rows = sqlx::query(
            "SELECT id, name, provider, region, zone, labels, created_at FROM locations WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(location_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |l| l.name.clone()))
    }

    async fn location_delete(&mut self, id: LocationId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM locations WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn cluster_create(&mut self, c: &ClusterRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO clusters (id, project_id, name, engine, version, state, location_id, spec, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(c.id.to_string())
        .bind(c.project_id.to_string())
        .bind(&c.name)
        .bind(c.engine.as_str())
        .bind(&c.version)
        .bind(c.state.as_str())
        .bind(c.location_id.to_string())
        .bind(c.spec.to_string())
        .bind(ms(c.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn cluster_get(&mut self, project: ProjectId, name: &str) -> Result<Option<Cluster>> {
        sqlx::query(&format!("{CLUSTER_SELECT} WHERE c.project_id = $1 AND c.name = $2"))
            .bind(project.to_string())
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| cluster_from(&r))
            .transpose()
    }

    async fn cluster_list(&mut self, project: ProjectId, page: &PageRequest) -> Result<Page<Cluster>> {
        let rows = sqlx::query(&format!("{CLUSTER_SELECT} WHERE c.project_id = $1 AND c.name > $2 ORDER BY c.name LIMIT $3"))
            .bind(project.to_string())
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch_limit())
            .fetch_all(&mut *self.tx)
            .await?;
        let items = rows.iter().map(cluster_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |c| c.name.clone()))
    }

    async fn cluster_count_in_location(&mut self, location: LocationId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM clusters WHERE location_id = $1")
            .bind(location.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn cluster_record(&mut self, project: ProjectId, name: &str) -> Result<Option<ClusterRecord>> {
        sqlx::query(&format!("{CLUSTER_RECORD_SELECT} WHERE c.project_id = $1 AND c.name = $2"))
            .bind(project.to_string())
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| cluster_record_from(&r))
            .transpose()
    }

    async fn cluster_records_all(&mut self, after: Option<ClusterId>, limit: i64) -> Result<Vec<ClusterRecord>> {
        let rows = sqlx::query(&format!("{CLUSTER_RECORD_SELECT} WHERE c.id > $1 ORDER BY c.id LIMIT $2"))
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(limit)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(cluster_record_from).collect()
    }

    async fn cluster_record_by_id(&mut self, id: ClusterId) -> Result<Option<ClusterRecord>> {
        sqlx::query(&format!("{CLUSTER_RECORD_SELECT} WHERE c.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| cluster_record_from(&r))
            .transpose()
    }

    async fn cluster_set_state(&mut self, id: ClusterId, state: ClusterState) -> Result<bool> {
        let done = sqlx::query("UPDATE clusters SET state = $1 WHERE id = $2")
            .bind(state.as_str())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn cluster_set_spec(&mut self, id: ClusterId, spec: &serde_json::Value) -> Result<bool> {
        let done = sqlx::query("UPDATE clusters SET spec = $1 WHERE id = $2")
            .bind(spec.to_string())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn cluster_delete(&mut self, id: ClusterId) -> Result<bool> {
        sqlx::query("DELETE FROM cluster_members WHERE cluster_id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        let done = sqlx::query("DELETE FROM clusters WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn repo_create(&mut self, r: &RepoRecord) -> Result<()> {
        if r.is_default {
            sqlx::query(
                "UPDATE backup_repos SET is_default = FALSE WHERE project_id = $1 AND location_id = $2 AND is_default",
            )
            .bind(r.project_id.to_string())
            .bind(r.location_id.to_string())
            .execute(&mut *self.tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO backup_repos (id, project_id, name, location_id, host_id, kind, spec, encrypted, is_default, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.id.to_string())
        .bind(r.project_id.to_string())
        .bind(&r.name)
        .bind(r.location_id.to_string())
        .bind(r.host_id.map(|h| h.to_string()))
        .bind(r.kind.as_str())
        .bind(serde_json::to_string(&r.spec).expect("repository spec serialises"))
        .bind(r.encrypted)
        .bind(r.is_default)
        .bind(ms(r.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn repo_get(&mut self, project: ProjectId, name: &str) -> Result<Option<RepoRecord>> {
        sqlx::query(&format!("{REPO_SELECT} WHERE r.project_id = $1 AND r.name = $2"))
            .bind(project.to_string())
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| repo_from(&r))
            .transpose()
    }

    async fn repo_get_by_id(&mut self, id: RepoId) -> Result<Option<RepoRecord>> {
        sqlx::query(&format!("{REPO_SELECT} WHERE r.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| repo_from(&r))
            .transpose()
    }

    async fn repo_list(&mut self, project: ProjectId, page: &PageRequest) -> Result<Page<RepoRecord>> {
        let rows = sqlx::query(&format!("{REPO_SELECT} WHERE r.project_id = $1 AND r.name > $2 ORDER BY r.name LIMIT $3"))
            .bind(project.to_string())
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch_limit())
            .fetch_all(&mut *self.tx)
            .await?;
        let items = rows.iter().map(repo_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |r| r.name.clone()))
    }

    async fn repo_default(&mut self, project: ProjectId, location: LocationId) -> Result<Option<RepoRecord>> {
        sqlx::query(&format!("{REPO_SELECT} WHERE r.project_id = $1 AND r.location_id = $2 AND r.is_default"))
            .bind(project.to_string())
            .bind(location.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| repo_from(&r))
            .transpose()
    }

    async fn repo_list_on_host(&mut self, host: HostId) -> Result<Vec<RepoRecord>> {
        let rows = sqlx::query(&format!("{REPO_SELECT} WHERE r.host_id = $1 ORDER BY r.project_id, r.name"))
            .bind(host.to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(repo_from).collect()
    }

    async fn repo_count_in_location(&mut self, location: LocationId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM backup_repos WHERE location_id = $1")
            .bind(location.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn repo_delete(&mut self, id: RepoId) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM backup_repos WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn retained_create(&mut self, r: &RetainedRecord) -> Result<()> {
        let c = &r.cluster;
        sqlx::query(
            "INSERT INTO retained_backups (cluster_id, project_id, name, repo_id, location_id, engine, version, spec, \
             created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (cluster_id) DO NOTHING",
        )
        .bind(c.id.to_string())
        .bind(c.project_id.to_string())
        .bind(&c.name)
        .bind(r.repo_id.to_string())
        .bind(c.location_id.to_string())
        .bind(c.engine.as_str())
        .bind(&c.version)
        .bind(c.spec.to_string())
        .bind(ms(c.created_at))
        .bind(ms(r.deleted_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn retained_list(&mut self, project: ProjectId) -> Result<Vec<RetainedRecord>> {
        let rows = sqlx::query(&format!("{RETAINED_SELECT} WHERE k.project_id = $1 ORDER BY k.deleted_at DESC, k.name"))
            .bind(project.to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(retained_from).collect()
    }

    async fn retained_get(&mut self, project: ProjectId, name: &str) -> Result<Option<RetainedRecord>> {
        sqlx::query(&format!(
            "{RETAINED_SELECT} WHERE k.project_id = $1 AND k.name = $2 ORDER BY k.deleted_at DESC LIMIT 1"
        ))
        .bind(project.to_string())
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|r| retained_from(&r))
        .transpose()
    }

    async fn retained_delete(&mut self, cluster: ClusterId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM retained_backups WHERE cluster_id = $1")
            .bind(cluster.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn retained_count_in_repo(&mut self, repo: RepoId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM retained_backups WHERE repo_id = $1")
            .bind(repo.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn member_create(&mut self, m: &MemberRecord) -> Result<()> {
        sqlx::query("INSERT INTO cluster_members (cluster_id, name, host_id, spec, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(m.cluster_id.to_string())
            .bind(&m.name)
            .bind(m.host_id.to_string())
            .bind(m.spec.to_string())
            .bind(ms(m.created_at))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn member_list(&mut self, cluster: ClusterId) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query(
            "SELECT cluster_id, name, host_id, spec, created_at FROM cluster_members WHERE cluster_id = $1 ORDER BY name",
        )
        .bind(cluster.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(member_from).collect()
    }

    async fn member_delete(&mut self, cluster: ClusterId, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM cluster_members WHERE cluster_id = $1 AND name = $2")
            .bind(cluster.to_string())
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn member_count_on_host(&mut self, host: HostId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM cluster_members WHERE host_id = $1")
            .bind(host.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn port_allocate(&mut self, a: &PortAllocation) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO port_allocations (host_id, port, owner) VALUES ($1, $2, $3) ON CONFLICT (host_id, port) DO NOTHING",
        )
        .bind(a.host_id.to_string())
        .bind(i64::from(a.port))
        .bind(&a.owner)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn port_list(&mut self, host: HostId) -> Result<Vec<PortAllocation>> {
        let rows = sqlx::query("SELECT host_id, port, owner FROM port_allocations WHERE host_id = $1 ORDER BY port")
            .bind(host.to_string())
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(port_from).collect()
    }

    async fn port_list_owned(&mut self, owner: &str) -> Result<Vec<PortAllocation>> {
        let rows = sqlx::query(&format!(
            "SELECT host_id, port, owner FROM port_allocations WHERE {} ORDER BY owner",
            owned_by("owner", 1)
        ))
        .bind(owner)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(port_from).collect()
    }

    async fn port_release(&mut self, owner: &str) -> Result<u64> {
        let done = sqlx::query(&format!("DELETE FROM port_allocations WHERE {}", owned_by("owner", 1)))
            .bind(owner)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn secret_put(&mut self, owner: &str, name: &str, sealed: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO secrets (owner, name, sealed, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner, name) DO NOTHING",
        )
        .bind(owner)
        .bind(name)
        .bind(sealed)
        .bind(ms(at))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret_get(&mut self, owner: &str, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT sealed FROM secrets WHERE owner = $1 AND name = $2")
            .bind(owner)
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    async fn secret_list_all(&mut self, after: Option<(&str, &str)>, limit: i64) -> Result<Vec<SecretRecord>> {
        let (owner, name) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT owner, name, sealed FROM secrets WHERE ($1 = '' AND $2 = '') OR owner > $1 OR (owner = $1 AND name > $2) \
             ORDER BY owner, name LIMIT $3",
        )
        .bind(owner)
        .bind(name)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok(SecretRecord { owner: r.try_get("owner")?, name: r.try_get("name")?, sealed: r.try_get("sealed")? }))
            .collect()
    }

    async fn secret_reseal(&mut self, owner: &str, name: &str, sealed: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE secrets SET sealed = $1 WHERE owner = $2 AND name = $3")
            .bind(sealed)
            .bind(owner)
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret_delete(&mut self, owner: &str) -> Result<u64> {
        let done = sqlx::query(&format!("DELETE FROM secrets WHERE {}", owned_by("owner", 1)))
            .bind(owner)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn dcs_member_create(&mut self, m: &DcsMember) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO dcs_members (location_id, name, host_id, client_port, peer_port, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (location_id, name) DO NOTHING",
        )
        .bind(m.location_id.to_string())
        .bind(&m.name)
        .bind(m.host_id.to_string())
        .bind(i64::from(m.client_port))
        .bind(i64::from(m.peer_port))
        .bind(ms(m.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn dcs_member_list(&mut self, location: LocationId) -> Result<Vec<DcsMember>> {
        let rows = sqlx::query(
            "SELECT location_id, name, host_id, client_port, peer_port, created_at FROM dcs_members \
             WHERE location_id = $1 ORDER BY name",
        )
        .bind(location.to_string())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(dcs_member_from).collect()
    }

    async fn dcs_member_count_on_host(&mut self, host: HostId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM dcs_members WHERE host_id = $1")
            .bind(host.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn event_append(&mut self, e: &NewEvent) -> Result<()> {
        sqlx::query("INSERT INTO events (id, at, project_id, target, kind, message) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(e.id.to_string())
            .bind(ms(e.at))
            .bind(e.project_id.map(|p| p.to_string()))
            .bind(&e.target)
            .bind(&e.kind)
            .bind(&e.message)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn event_list(&mut self, project: Option<ProjectId>, target: Option<&str>, page: &PageRequest) -> Result<Page<Event>> {
        // A target ending in '/' is a prefix (`cluster/`); anything else is exact.
        let rows = sqlx::query(
            "SELECT e.id, e.at, p.name AS project, e.target, e.kind, e.message FROM events e \
             LEFT JOIN projects p ON p.id = e.project_id \
             WHERE ($1 = '' OR e.project_id = $1) \
             AND ($2 = '' OR e.target = $2 OR (SUBSTR($2, LENGTH($2), 1) = '/' AND SUBSTR(e.target, 1, LENGTH($2)) = $2)) \
             AND e.id > $3 ORDER BY e.id LIMIT $4",
        )
        .bind(project.map(|p| p.to_string()).unwrap_or_default())
        .bind(target.unwrap_or(""))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(event_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |e| e.id.to_string()))
    }

    async fn event_query(&mut self, f: &crate::EventFilter, page: &PageRequest) -> Result<Page<Event>> {
        let rows = sqlx::query(
            "SELECT e.id, e.at, p.name AS project, e.target, e.kind, e.message FROM events e \
             LEFT JOIN projects p ON p.id = e.project_id \
             WHERE ($1 = '' OR e.project_id = $1 OR ($2 = 1 AND e.project_id IS NULL)) \
             AND ($3 = '' OR e.target = $3 OR (SUBSTR($3, LENGTH($3), 1) = '/' AND SUBSTR(e.target, 1, LENGTH($3)) = $3)) \
             AND e.at >= $4 AND e.id > $5 ORDER BY e.id LIMIT $6",
        )
        .bind(f.project.map(|p| p.to_string()).unwrap_or_default())
        .bind(i64::from(f.installation))
        .bind(f.target.as_deref().unwrap_or(""))
        .bind(f.since.map(ms).unwrap_or(i64::MIN))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(event_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |e| e.id.to_string()))
    }

    async fn host_create(&mut self, r: &HostRecord) -> Result<()> {
        let h = &r.host;
        sqlx::query(
            "INSERT INTO hosts (id, name, location_id, address, agent_port, base_dir, zone, labels, status, \
             status_message, ssh_user, ssh_port, ssh_key_sealed, ssh_host_key, ssh_host_key_fp, facts, last_seen_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(h.id.to_string())
        .bind(&h.name)
        .bind(r.location_id.to_string())
        .bind(&h.address)
        .bind(i64::from(h.agent_port))
        .bind(&h.base_dir)
        .bind(&h.zone)
        .bind(serde_json::to_string(&h.labels).expect("labels serialise"))
        .bind(h.status.as_str())
        .bind(&h.status_message)
        .bind(h.ssh.as_ref().map(|s| s.user.clone()))
        .bind(h.ssh.as_ref().map(|s| i64::from(s.port)))
        .bind(&r.ssh_key_sealed)
        .bind(h.ssh.as_ref().and_then(|s| s.host_key.clone()))
        .bind(h.ssh.as_ref().and_then(|s| s.host_key_fingerprint.clone()))
        .bind(h.facts.as_ref().map(|f| f.to_string()))
        .bind(h.last_seen_at.map(ms))
        .bind(ms(h.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn host_get(&mut self, name: &str) -> Result<Option<HostRecord>> {
        sqlx::query(&format!("{HOST_SELECT} WHERE h.name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| host_from(&r))
            .transpose()
    }

    async fn host_get_by_id(&mut self, id: HostId) -> Result<Option<HostRecord>> {
        sqlx::query(&format!("{HOST_SELECT} WHERE h.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| host_from(&r))
            .transpose()
    }

    async fn host_list(&mut self, location: Option<LocationId>, page: &PageRequest) -> Result<Page<HostRecord>> {
        let rows = sqlx::query(&format!(
            "{HOST_SELECT} WHERE ($1 = '' OR h.location_id = $1) AND h.name > $2 ORDER BY h.name LIMIT $3"
        ))
        .bind(location.map(|l| l.to_string()).unwrap_or_default())
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(host_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |h| h.host.name.clone()))
    }

    async fn host_count_in_location(&mut self, location: LocationId) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE location_id = $1")
            .bind(location.to_string())
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn host_set_status(&mut self, id: HostId, status: HostStatus, message: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET status = $1, status_message = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(message)
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn host_observed(&mut self, id: HostId, at: DateTime<Utc>, facts: Option<&serde_json::Value>) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET last_seen_at = $1, facts = COALESCE($2, facts) WHERE id = $3")
            .bind(ms(at))
            .bind(facts.map(|f| f.to_string()))
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn host_set_ssh_host_key(&mut self, id: HostId, key: &str, fingerprint: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET ssh_host_key = $1, ssh_host_key_fp = $2 WHERE id = $3")
            .bind(key)
            .bind(fingerprint)
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn host_set_ssh_key_sealed(&mut self, id: HostId, sealed: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE hosts SET ssh_key_sealed = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn host_delete(&mut self, id: HostId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM hosts WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn operation_create(&mut self, op: &NewOperation) -> Result<()> {
        let id = op.id.to_string();
        sqlx::query(
            "INSERT INTO operations (id, project_id, kind, target, params, state, created_by, created_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&id)
        .bind(op.project_id.map(|p| p.to_string()))
        .bind(&op.kind)
        .bind(&op.target)
        .bind(op.params.to_string())
        .bind(OperationState::Queued.as_str())
        .bind(&op.created_by)
        .bind(ms(op.created_at))
        .execute(&mut *self.tx)
        .await?;
        for (idx, name) in op.steps.iter().enumerate() {
            sqlx::query("INSERT INTO operation_steps (operation_id, idx, name, state) VALUES ($1, $2, $3, $4)")
                .bind(&id)
                .bind(idx as i64)
                .bind(name)
                .bind(StepState::Pending.as_str())
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    async fn operation_get(&mut self, id: OperationId) -> Result<Option<Operation>> {
        let id = id.to_string();
        let Some(row) = sqlx::query(&format!("{OPERATION_SELECT} WHERE o.id = $1"))
            .bind(&id)
            .fetch_optional(&mut *self.tx)
            .await?
        else {
            return Ok(None);
        };
        let steps = self.steps_of(std::slice::from_ref(&id)).await?.remove(&id).unwrap_or_default();
        Ok(Some(operation_from(&row, steps)?))
    }

    async fn operation_list(&mut self, project: Option<ProjectId>, page: &PageRequest) -> Result<Page<Operation>> {
        // IDs are UUIDv7: descending ID order is newest first.
        let rows = sqlx::query(&format!(
            "{OPERATION_SELECT} WHERE ($1 IS NULL OR o.project_id = $1) AND ($2 IS NULL OR o.id < $2) \
             ORDER BY o.id DESC LIMIT $3"
        ))
        .bind(project.map(|p| p.to_string()))
        .bind(&page.after)
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let ids = rows.iter().map(|r| r.try_get("id")).collect::<std::result::Result<Vec<String>, _>>()?;
        let mut steps = self.steps_of(&ids).await?;
        let items = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| operation_from(row, steps.remove(id).unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |o| o.id.to_string()))
    }

    async fn operation_active_on(&mut self, target: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM operations WHERE target = $1 AND state IN {UNFINISHED}"
        ))
        .bind(target)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(n > 0)
    }

    async fn operation_claim(
        &mut self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<(OperationId, i64)>> {
        let candidate = sqlx::query(&format!(
            "SELECT o.id, o.fence FROM operations o \
             WHERE o.state IN {UNFINISHED} AND o.next_run_at <= $1 \
             AND (o.lease_owner IS NULL OR o.lease_expires_at < $1) \
             AND NOT EXISTS (SELECT 1 FROM operations e WHERE e.target = o.target AND e.state IN {UNFINISHED} \
                 AND (e.created_at < o.created_at OR (e.created_at = o.created_at AND e.id < o.id))) \
             ORDER BY o.created_at, o.id LIMIT 1"
        ))
        .bind(ms(now))
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = candidate else { return Ok(None) };
        let id: String = row.try_get("id")?;
        let fence: i64 = row.try_get("fence")?;
        // Compare-and-swap on the fence: of two workers that saw the same candidate, one wins.
        let done = sqlx::query(
            "UPDATE operations SET fence = fence + 1, lease_owner = $1, lease_expires_at = $2, \
             state = CASE WHEN state = 'queued' THEN 'running' ELSE state END \
             WHERE id = $3 AND fence = $4",
        )
        .bind(worker)
        .bind(ms(lease_until))
        .bind(&id)
        .bind(fence)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let id = id.parse().map_err(|_| StoreError::Corrupt { what: "operation id", detail: id.clone() })?;
        Ok(Some((id, fence + 1)))
    }

    async fn operation_release_worker(&mut self, worker: &str) -> Result<u64> {
        let done = sqlx::query(&format!(
            "UPDATE operations SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner = $1 AND state IN {UNFINISHED}"
        ))
        .bind(worker)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    async fn operation_run(&mut self, id: OperationId) -> Result<Option<OperationRun>> {
        let sid = id.to_string();
        let Some(row) =
            sqlx::query("SELECT kind, params, state, cancel_requested, error FROM operations WHERE id = $1")
                .bind(&sid)
                .fetch_optional(&mut *self.tx)
                .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT idx, name, state, attempts, output, first_started_at FROM operation_steps WHERE operation_id = $1 \
             ORDER BY idx",
        )
        .bind(&sid)
        .fetch_all(&mut *self.tx)
        .await?;
        let steps = rows
            .iter()
            .map(|r| {
                Ok(StepRun {
                    index: r.try_get("idx")?,
                    name: r.try_get("name")?,
                    state: enum_col(r, "state", "step state", StepState::parse)?,
                    attempts: r.try_get("attempts")?,
                    output: opt_json(r, "output", "step output")?,
                    first_started_at: opt_time(r, "first_started_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(OperationRun {
            id,
            kind: row.try_get("kind")?,
            params: json_col(&row, "params", "operation params")?,
            state: enum_col(&row, "state", "operation state", OperationState::parse)?,
            cancel_requested: row.try_get("cancel_requested")?,
            error: opt_json(&row, "error", "operation error")?,
            steps,
        }))
    }

    async fn operation_renew(&mut self, id: OperationId, fence: i64, until: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query("UPDATE operations SET lease_expires_at = $1 WHERE id = $2 AND fence = $3")
            .bind(ms(until))
            .bind(id.to_string())
            .bind(fence)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn operation_change(&mut self, id: OperationId, fence: i64, change: &OperationChange<'_>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE operations SET state = $1, error = $2, next_run_at = $3, finished_at = $4, \
             lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END, \
             lease_expires_at = CASE WHEN $5 THEN NULL ELSE lease_expires_at END \
             WHERE id = $6 AND fence = $7",
        )
        .bind(change.state.as_str())
        .bind(change.error.map(|e| serde_json::to_string(e).expect("serialise")))
        .bind(ms(change.next_run_at))
        .bind(change.finished_at.map(ms))
        .bind(change.release)
        .bind(id.to_string())
        .bind(fence)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn operation_step_change(
        &mut self,
        id: OperationId,
        fence: i64,
        index: i64,
        change: &StepChange<'_>,
    ) -> Result<bool> {
        let finished = matches!(change.state, StepState::Succeeded | StepState::Failed | StepState::Undone);
        let done = sqlx::query(
            "UPDATE operation_steps SET state = $1, \
             attempts = attempts + CASE WHEN $2 THEN 1 ELSE 0 END, \
             output = CASE WHEN $3 IS NULL THEN output ELSE $3 END, \
             error = CASE WHEN $4 IS NULL AND $1 IN ('undoing', 'undone') THEN error ELSE $4 END, \
             started_at = CASE WHEN $2 THEN $5 ELSE started_at END, \
             first_started_at = CASE WHEN $2 AND first_started_at IS NULL THEN $5 ELSE first_started_at END, \
             finished_at = CASE WHEN $6 THEN $5 ELSE NULL END \
             WHERE operation_id = $7 AND idx = $8 \
             AND EXISTS (SELECT 1 FROM operations WHERE id = $7 AND fence = $9)",
        )
        .bind(change.state.as_str())
        .bind(change.new_attempt)
        .bind(change.output.map(|o| o.to_string()))
        .bind(change.error.map(|e| serde_json::to_string(e).expect("serialise")))
        .bind(ms(change.at))
        .bind(finished)
        .bind(id.to_string())
        .bind(index)
        .bind(fence)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn operation_step_progress(
        &mut self,
        id: OperationId,
        fence: i64,
        index: i64,
        message: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE operation_steps SET progress = $1, progress_at = $2 \
             WHERE operation_id = $3 AND idx = $4 \
             AND EXISTS (SELECT 1 FROM operations WHERE id = $3 AND fence = $5)",
        )
        .bind(message)
        .bind(ms(at))
        .bind(id.to_string())
        .bind(index)
        .bind(fence)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn operation_count_unfinished(&mut self, kind: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM operations WHERE kind = $1 AND state IN {UNFINISHED}"))
            .bind(kind)
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn operation_request_cancel(&mut self, id: OperationId) -> Result<Option<OperationState>> {
        let sid = id.to_string();
        sqlx::query(&format!("UPDATE operations SET cancel_requested = TRUE WHERE id = $1 AND state IN {UNFINISHED}"))
            .bind(&sid)
            .execute(&mut *self.tx)
            .await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM operations WHERE id = $1").bind(&sid).fetch_optional(&mut *self.tx).await?;
        state
            .map(|s| OperationState::parse(&s).ok_or(StoreError::Corrupt { what: "operation state", detail: s }))
            .transpose()
    }

    async fn metric_insert(&mut self, table: MetricTable, rows: &[MetricRow]) -> Result<u64> {
        let (name, col) = metric_table(table);
        let sql = format!("INSERT INTO {name} (target, {col}, data) VALUES ($1, $2, $3) ON CONFLICT (target, {col}) DO NOTHING");
        let mut added = 0;
        for r in rows {
            added += sqlx::query(&sql).bind(&r.target).bind(ms(r.at)).bind(&r.data).execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(added)
    }

    async fn metric_upsert(&mut self, table: MetricTable, rows: &[MetricRow]) -> Result<()> {
        let (name, col) = metric_table(table);
        let sql = format!(
            "INSERT INTO {name} (target, {col}, data) VALUES ($1, $2, $3) ON CONFLICT (target, {col}) DO UPDATE SET data = excluded.data"
        );
        for r in rows {
            sqlx::query(&sql).bind(&r.target).bind(ms(r.at)).bind(&r.data).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn metric_list(
        &mut self,
        table: MetricTable,
        targets: Option<&[String]>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MetricRow>> {
        let (name, col) = metric_table(table);
        let filter = match targets {
            None => String::new(),
            Some([]) => return Ok(Vec::new()),
            Some(list) => {
                let params: Vec<String> = (0..list.len()).map(|i| format!("${}", i + 3)).collect();
                format!(" AND target IN ({})", params.join(", "))
            }
        };
        let sql = format!(
            "SELECT target, {col} AS at, data FROM {name} WHERE {col} >= $1 AND {col} < $2{filter} ORDER BY target, {col}"
        );
        let mut q = sqlx::query(&sql).bind(ms(from)).bind(ms(to));
        for t in targets.unwrap_or_default() {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&mut *self.tx).await?;
        rows.iter()
            .map(|r| Ok(MetricRow { target: r.try_get("target")?, at: time(r, "at")?, data: r.try_get("data")? }))
            .collect()
    }

    async fn metric_prune(&mut self, table: MetricTable, before: DateTime<Utc>) -> Result<u64> {
        let (name, col) = metric_table(table);
        let done = sqlx::query(&format!("DELETE FROM {name} WHERE {col} < $1")).bind(ms(before)).execute(&mut *self.tx).await?;
        Ok(done.rows_affected())
    }

    async fn metric_cursor_get(&mut self, host: HostId) -> Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT epoch, seq FROM metric_cursors WHERE host_id = $1")
            .bind(host.to_string())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| Ok((r.try_get("epoch")?, r.try_get("seq")?))).transpose()
    }

    async fn metric_cursor_set(&mut self, host: HostId, epoch: &str, seq: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO metric_cursors (host_id, epoch, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (host_id) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq",
        )
        .bind(host.to_string())
        .bind(epoch)
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn audit_append(&mut self, entry: &AuditEntry) -> Result<AuditRecord> {
        // Appenders must see each other's heads: serialise them for the rest of this
        // transaction (SQLite write transactions already are).
        if let Some(lock) = LOCK_AUDIT {
            sqlx::query(lock).execute(&mut *self.tx).await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        let (seq, prev_hash) = match head {
            Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get::<String, _>("hash")?),
            None => (1, GENESIS_HASH.to_string()),
        };
        let id = AuditId::new();
        // Store the time at the precision it is hashed and kept with.
        let mut entry = entry.clone();
        entry.at = DateTime::from_timestamp_millis(ms(entry.at)).unwrap_or(entry.at);
        let hash = AuditRecord::compute_hash(seq, id, &entry, &prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, id, at, actor, project, source, action, target, params, outcome, request_id, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(seq)
        .bind(id.to_string())
        .bind(ms(entry.at))
        .bind(&entry.actor)
        .bind(&entry.project)
        .bind(&entry.source)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(entry.params.to_string())
        .bind(entry.outcome.as_str())
        .bind(&entry.request_id)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *self.tx)
        .await?;
        let head = AuditHead { seq, hash: hash.clone() };
        self.meta_set(AUDIT_HEAD_KEY, &head.to_text()).await?;
        Ok(AuditRecord {
            seq,
            id,
            at: entry.at,
            actor: entry.actor,
            project: entry.project,
            source: entry.source,
            action: entry.action,
            target: entry.target,
            params: entry.params,
            outcome: entry.outcome,
            request_id: entry.request_id,
            prev_hash,
            hash,
        })
    }

    async fn audit_head(&mut self) -> Result<Option<AuditHead>> {
        self.meta_get(AUDIT_HEAD_KEY)
            .await?
            .map(|v| AuditHead::parse(&v).ok_or(StoreError::Corrupt { what: "audit head", detail: v }))
            .transpose()
    }

    async fn audit_list(&mut self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditRecord>> {
        let after: i64 = match &page.after {
            Some(a) => a.parse().map_err(|_| StoreError::Corrupt { what: "page token", detail: a.clone() })?,
            None => 0,
        };
        // Optional filters are bound as NULL when absent, so the statement stays one text.
        let target_prefix = filter.target.as_ref().filter(|t| t.ends_with('/')).map(|t| format!("{t}%"));
        let target_exact = filter.target.as_ref().filter(|t| !t.ends_with('/'));
        let rows = sqlx::query(
            "SELECT seq, id, at, actor, project, source, action, target, params, outcome, request_id, prev_hash, hash \
             FROM audit_log WHERE seq > $1 \
             AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR actor = $3) \
             AND ($4 IS NULL OR target = $4) AND ($5 IS NULL OR target LIKE $5) \
             ORDER BY seq LIMIT $6",
        )
        .bind(after)
        .bind(filter.since.map(ms))
        .bind(&filter.actor)
        .bind(target_exact)
        .bind(target_prefix)
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(audit_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |r| r.seq.to_string()))
    }

    async fn alert_rule_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertRuleRecord>> {
        let rows = sqlx::query(
            "SELECT project_id, name, spec, created_at FROM alert_rules WHERE ($1 = '' OR project_id = $1) \
             ORDER BY project_id, name",
        )
        .bind(project.map(|p| p.to_string()).unwrap_or_default())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRuleRecord {
                    project_id: parsed(r, "project_id", "project id")?,
                    name: r.try_get("name")?,
                    spec: r.try_get("spec")?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn alert_rule_create(&mut self, r: &AlertRuleRecord) -> Result<()> {
        sqlx::query("INSERT INTO alert_rules (project_id, name, spec, created_at) VALUES ($1, $2, $3, $4)")
            .bind(r.project_id.to_string())
            .bind(&r.name)
            .bind(&r.spec)
            .bind(ms(r.created_at))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn alert_rule_delete(&mut self, project: ProjectId, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alert_rules WHERE project_id = $1 AND name = $2")
            .bind(project.to_string())
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alert_rule_settings_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertRuleSettingsRecord>> {
        let rows = sqlx::query(
            "SELECT project_id, rule, spec, updated_at FROM alert_rule_settings \
             WHERE ($1 = '' OR project_id = $1) ORDER BY project_id, rule",
        )
        .bind(project.map(|p| p.to_string()).unwrap_or_default())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRuleSettingsRecord {
                    project_id: parsed(r, "project_id", "project id")?,
                    rule: r.try_get("rule")?,
                    spec: r.try_get("spec")?,
                    updated_at: time(r, "updated_at")?,
                })
            })
            .collect()
    }

    async fn alert_rule_settings_put(&mut self, s: &AlertRuleSettingsRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_rule_settings (project_id, rule, spec, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project_id, rule) DO UPDATE SET spec = $3, updated_at = $4",
        )
        .bind(s.project_id.to_string())
        .bind(&s.rule)
        .bind(&s.spec)
        .bind(ms(s.updated_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn alert_rule_settings_delete(&mut self, project: ProjectId, rule: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alert_rule_settings WHERE project_id = $1 AND rule = $2")
            .bind(project.to_string())
            .bind(rule)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alert_channel_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertChannelRecord>> {
        let rows = sqlx::query(
            "SELECT id, project_id, name, kind, spec, created_at FROM alert_channels \
             WHERE ($1 = '' OR project_id = $1) ORDER BY project_id, name",
        )
        .bind(project.map(|p| p.to_string()).unwrap_or_default())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertChannelRecord {
                    id: parsed(r, "id", "channel id")?,
                    project_id: parsed(r, "project_id", "project id")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    spec: r.try_get("spec")?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn alert_channel_create(&mut self, c: &AlertChannelRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_channels (id, project_id, name, kind, spec, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(c.id.to_string())
        .bind(c.project_id.to_string())
        .bind(&c.name)
        .bind(&c.kind)
        .bind(&c.spec)
        .bind(ms(c.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn alert_channel_delete(&mut self, id: ChannelId) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM alert_channels WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alert_silence_list(&mut self, project: Option<ProjectId>) -> Result<Vec<AlertSilenceRecord>> {
        let rows = sqlx::query(
            "SELECT id, project_id, cluster, rule, starts_at, ends_at, comment, created_by, created_at \
             FROM alert_silences WHERE ($1 = '' OR project_id = $1) ORDER BY id",
        )
        .bind(project.map(|p| p.to_string()).unwrap_or_default())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertSilenceRecord {
                    id: parsed(r, "id", "silence id")?,
                    project_id: parsed(r, "project_id", "project id")?,
                    cluster: r.try_get("cluster")?,
                    rule: r.try_get("rule")?,
                    starts_at: time(r, "starts_at")?,
                    ends_at: time(r, "ends_at")?,
                    comment: r.try_get("comment")?,
                    created_by: r.try_get("created_by")?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn alert_silence_create(&mut self, s: &AlertSilenceRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_silences (id, project_id, cluster, rule, starts_at, ends_at, comment, created_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(s.id.to_string())
        .bind(s.project_id.to_string())
        .bind(&s.cluster)
        .bind(&s.rule)
        .bind(ms(s.starts_at))
        .bind(ms(s.ends_at))
        .bind(&s.comment)
        .bind(&s.created_by)
        .bind(ms(s.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn alert_silence_delete(&mut self, project: ProjectId, id: SilenceId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alert_silences WHERE project_id = $1 AND id = $2")
            .bind(project.to_string())
            .bind(id.to_string())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alert_put(&mut self, a: &AlertRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO alerts (id, project_id, akey, rule, cluster, state, data, pending_since, started_at, \
             resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data, \
             started_at = excluded.started_at, resolved_at = excluded.resolved_at",
        )
        .bind(a.id.to_string())
        .bind(a.project_id.to_string())
        .bind(&a.key)
        .bind(&a.rule)
        .bind(&a.cluster)
        .bind(&a.state)
        .bind(&a.data)
        .bind(ms(a.pending_since))
        .bind(a.started_at.map(ms))
        .bind(a.resolved_at.map(ms))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn alert_delete(&mut self, id: AlertId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alerts WHERE id = $1").bind(id.to_string()).execute(&mut *self.tx).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alert_get(&mut self, id: AlertId) -> Result<Option<AlertRecord>> {
        sqlx::query(&format!("{ALERT_SELECT} WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| alert_from(&r))
            .transpose()
    }

    async fn alert_list_open(&mut self) -> Result<Vec<AlertRecord>> {
        let rows = sqlx::query(&format!("{ALERT_SELECT} WHERE state <> 'resolved' ORDER BY id"))
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(alert_from).collect()
    }

    async fn alert_list(&mut self, project: ProjectId, open: bool, page: &PageRequest) -> Result<Page<AlertRecord>> {
        let rows = sqlx::query(&format!(
            "{ALERT_SELECT} WHERE project_id = $1 AND ($2 = 0 OR state <> 'resolved') AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(project.to_string())
        .bind(i64::from(open))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(alert_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |a| a.id.to_string()))
    }

    async fn delivery_create(&mut self, d: &DeliveryRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_deliveries (id, project_id, alert_id, channel_id, channel, status, payload, attempts, \
             next_at, last_result, delivered_at, gave_up, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(d.id.to_string())
        .bind(d.project_id.to_string())
        .bind(d.alert_id.to_string())
        .bind(d.channel_id.to_string())
        .bind(&d.channel)
        .bind(&d.status)
        .bind(&d.payload)
        .bind(d.attempts)
        .bind(ms(d.next_at))
        .bind(&d.last_result)
        .bind(d.delivered_at.map(ms))
        .bind(d.gave_up)
        .bind(ms(d.created_at))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn delivery_due(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "{DELIVERY_SELECT} WHERE delivered_at IS NULL AND NOT gave_up AND next_at <= $1 ORDER BY next_at, id LIMIT $2"
        ))
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(delivery_from).collect()
    }

    async fn delivery_claim(&mut self, id: DeliveryId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE alert_deliveries SET next_at = $1 WHERE id = $2 AND next_at = $3 AND delivered_at IS NULL \
             AND NOT gave_up",
        )
        .bind(ms(to))
        .bind(id.to_string())
        .bind(ms(from))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delivery_update(&mut self, d: &DeliveryRecord) -> Result<()> {
        sqlx::query(
            "UPDATE alert_deliveries SET attempts = $1, next_at = $2, last_result = $3, delivered_at = $4, \
             gave_up = $5 WHERE id = $6",
        )
        .bind(d.attempts)
        .bind(ms(d.next_at))
        .bind(&d.last_result)
        .bind(d.delivered_at.map(ms))
        .bind(d.gave_up)
        .bind(d.id.to_string())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn delivery_list(
        &mut self,
        project: ProjectId,
        alert: Option<AlertId>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "{DELIVERY_SELECT} WHERE project_id = $1 AND ($2 = '' OR alert_id = $2) AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(project.to_string())
        .bind(alert.map(|a| a.to_string()).unwrap_or_default())
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch_limit())
        .fetch_all(&mut *self.tx)
        .await?;
        let items = rows.iter().map(delivery_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page, |d| d.id.to_string()))
    }

    async fn event_latest(&mut self, project: ProjectId, target: &str, kinds: &[&str]) -> Result<Option<Event>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let alternatives: Vec<String> = (0..kinds.len()).map(|i| format!("e.kind = ${}", i + 3)).collect();
        let sql = format!(
            "SELECT e.id, e.at, p.name AS project, e.target, e.kind, e.message FROM events e \
             LEFT JOIN projects p ON p.id = e.project_id WHERE e.project_id = $1 AND e.target = $2 AND ({}) \
             ORDER BY e.id DESC LIMIT 1",
            alternatives.join(" OR ")
        );
        let mut q = sqlx::query(&sql).bind(project.to_string()).bind(target);
        for k in kinds {
            q = q.bind(*k);
        }
        q.fetch_optional(&mut *self.tx).await?.map(|r| event_from(&r)).transpose()
    }
}

/// The table of metric samples and its time column.
fn metric_table(table: MetricTable) -> (&'static str, &'static str) {
    match table {
        MetricTable::Raw => ("metric_samples", "at"),
        MetricTable::Minute => ("metric_rollups", "minute"),
    }
}

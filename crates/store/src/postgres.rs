//! The PostgreSQL store: for installations that run several `sovdb serve` replicas.
//!
//! Replicas may start at once, so migrations run under an advisory lock; audit appenders
//! take a transaction-scoped advisory lock so the hash chain has one head.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::Connection as _;

type Db = sqlx::Postgres;
const BACKEND: Backend = Backend::Postgres;
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
const BEGIN_WRITE: &str = "BEGIN";
/// Advisory lock keys: arbitrary constants, unique within sovdb.
const LOCK_AUDIT: Option<&str> = Some("SELECT pg_advisory_xact_lock(707001)");
const LOCK_MIGRATIONS: Option<&str> = Some("SELECT pg_advisory_xact_lock(707002)");

include!("sql.rs");

impl SqlStore {
    pub(crate) async fn open(url: &str) -> std::result::Result<Self, OpenError> {
        let display = crate::redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|_| OpenError::BadUrl(display.clone()))?;
        let unreachable = |e: sqlx::Error| OpenError::Unreachable { url: display.clone(), cause: e.to_string() };
        // One plain connection first: a pool retries until its timeout, but a refused
        // connection or a wrong password should be reported at once.
        PgConnection::connect_with(&options).await.map_err(unreachable)?.close().await.map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        migrate(&pool, &display).await?;
        Ok(SqlStore { pool })
    }
}

//! The SQLite store: the embedded default, one file in the data directory.
//!
//! WAL journal (readers never wait for the writer), `synchronous=FULL` (a commit is on disk
//! when it returns), foreign keys on, and writers take the lock at `BEGIN IMMEDIATE` so two
//! writers queue instead of deadlocking on a lock upgrade.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

type Db = sqlx::Sqlite;
const BACKEND: Backend = Backend::Sqlite;
const BEGIN_READ: &str = "BEGIN";
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const LOCK_AUDIT: Option<&str> = None;
const LOCK_MIGRATIONS: Option<&str> = None;

include!("sql.rs");

/// SQLite's result codes for a file that is not a database, or a damaged one.
const SQLITE_CORRUPT: &str = "11";
const SQLITE_NOTADB: &str = "26";

impl SqlStore {
    pub(crate) async fn open(path: &str) -> std::result::Result<Self, OpenError> {
        let display = format!("sqlite://{path}");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|_| OpenError::BadUrl(display.clone()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let classify = |e: sqlx::Error| match &e {
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some(SQLITE_CORRUPT) | Some(SQLITE_NOTADB)) => {
                OpenError::CorruptFile { path: path.to_string(), cause: db.message().to_string() }
            }
            _ => OpenError::Unreachable { url: display.clone(), cause: e.to_string() },
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(classify)?;
        // The first read of the schema is where SQLite notices a file that isn't a database.
        sqlx::query("SELECT COUNT(*) FROM sqlite_master").execute(&pool).await.map_err(classify)?;
        migrate(&pool, &display).await.map_err(|e| match e {
            OpenError::Migration { cause, .. } if cause.contains("malformed") || cause.contains("not a database") => {
                OpenError::CorruptFile { path: path.to_string(), cause }
            }
            other => other,
        })?;
        Ok(SqlStore { pool })
    }
}

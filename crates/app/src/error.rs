//! The one error type of the application layer. Each variant is a kind of answer the API
//! gives (the API maps them to HTTP status in one place); messages are for the user and
//! never contain secrets. Internal details stay in `Internal`'s source, for the log.

use sovdb_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a rule; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The request conflicts with the current state (a name taken, a resource in use).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts (failed logins): refused without trying until `retry_after_secs`
    /// have passed; the message says so.
    #[error("{message}")]
    Throttled { message: String, retry_after_secs: u64 },
    /// Something the request needs can't be reached now (a host, a repository); the
    /// message says what and why. Worth trying again later.
    #[error("{0}")]
    Unavailable(String),
    /// What the request needs is on its way but not there yet (the location's hosts are
    /// still being added); the message says what and how long it usually takes. Worth
    /// trying again soon: `--wait` does.
    #[error("{0}")]
    NotReady(String),
    /// Something broke on our side; the source has the detail, the user gets none.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> AppError {
        AppError::NotFound { kind, name: name.into() }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Internal(anyhow::Error::new(e))
    }
}

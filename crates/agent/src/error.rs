//! The errors of the agent: what its server answers ([`ApiError`]), and why it could not
//! start ([`ServeError`]).
//!
//! `ApiError` is the one place where a failure becomes an HTTP status and a stable code.
//! Its message is for a person: what is wrong and what to do. It never carries file
//! contents or keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::proto::ErrorBody;

/// An answer other than success.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// The request is wrong (a relative path, an empty argv, ...).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The host is not in a state where the request can be done (a directory where a file
    /// was asked, a directory that is not empty).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The host cannot do this at all (no apt-get).
    pub fn unsupported(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported_host", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A file-system error on `path` while doing `action`, mapped by its kind.
    pub fn io(action: &str, path: &std::path::Path, e: &std::io::Error) -> ApiError {
        let message = format!("cannot {action} {}: {e}", path.display());
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::not_found(message),
            std::io::ErrorKind::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "permission_denied", message),
            std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::DirectoryNotEmpty
            | std::io::ErrorKind::AlreadyExists => Self::conflict(message),
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody { code: self.code.to_owned(), message: self.message, request_id: None };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Why the agent could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}; {hint}")]
    Listen {
        address: SocketAddr,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot use the TLS file {path}: {message}; install the files the control plane issued for this host")]
    TlsFile { path: PathBuf, message: String },

    #[error("cannot set up TLS: {0}")]
    Tls(String),

    #[error("cannot use the base directory {path}: {source}")]
    BaseDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("another agent already runs with base directory {base_dir}: stop it, or give this one its own --base-dir")]
    AlreadyRunning { base_dir: PathBuf },

    #[error("cannot find the agent's own executable (to start supervisors): {0}")]
    CurrentExe(#[source] std::io::Error),

    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

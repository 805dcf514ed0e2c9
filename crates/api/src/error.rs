//! The API's one error type, and the one place where errors become HTTP statuses.
//!
//! An [`ApiError`] has an external side (status, stable code, message for the user) and an
//! optional internal side (the cause, logged here, never sent).

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sovdb_app::AppError;
use sovdb_types::ErrorBody;

use crate::context::REQUEST_ID;

/// Attached to a 401/403 answer: its message, for the audit record of the refusal.
#[derive(Debug, Clone)]
pub(crate) struct Denied(pub String);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds until a throttled request may be tried again (`Retry-After`).
    retry_after: Option<u64>,
    internal: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, internal: None }
    }

    pub fn internal(cause: anyhow::Error) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the server log has the details under this request's ID".into(),
            retry_after: None,
            internal: Some(cause),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let message = e.to_string();
        match e {
            AppError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message),
            AppError::Unauthenticated(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message),
            AppError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            AppError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            AppError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            AppError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            AppError::NotReady(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message),
            AppError::Throttled { retry_after_secs, .. } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
            },
            AppError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        if let Some(cause) = &self.internal {
            // Handled here: this is where the cause stops travelling, so log it here.
            tracing::error!(
                request_id = request_id.as_deref().unwrap_or("-"),
                error = format!("{cause:#}"),
                "internal error"
            );
        }
        let denied = matches!(self.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        let reason = denied.then(|| Denied(self.message.clone()));
        let body = ErrorBody { code: self.code.to_string(), message: self.message, request_id };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(reason) = reason {
            response.extensions_mut().insert(reason);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        response
    }
}

pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {method} {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}; see /api/v1/openapi.json", uri.path()),
    )
}

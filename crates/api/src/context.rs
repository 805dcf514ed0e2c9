//! What every request carries before its handler runs: a request ID (for the log, the
//! response header and error bodies) and, under `/api/v1`, the authenticated [`Ctx`].

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use sovdb_app::{App, Ctx, DeniedRequest};

use crate::error::{ApiError, Denied};

/// The header that picks the project a request runs in.
pub const PROJECT_HEADER: &str = "x-sovdb-project";
const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The current request's ID, so errors made anywhere in its handling can name it.
    pub(crate) static REQUEST_ID: String;
}

/// Gives the request an ID, runs it, and logs one line for it.
pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = response.status();
    let ms = started.elapsed().as_millis() as u64;
    if status.is_server_error() {
        tracing::warn!(request_id = %id, %method, path, status = status.as_u16(), ms, "request failed");
    } else {
        tracing::debug!(request_id = %id, %method, path, status = status.as_u16(), ms, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// Authenticates the bearer token and attaches the request context, or answers 401/404;
/// records every refused request (401 from here, 401/403 from the handler) in the audit
/// log, so no handler has to.
pub(crate) async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let source = source(req.extensions());
    let request_id = REQUEST_ID.try_with(Clone::clone).ok();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let action = format!("{} {route}", req.method());
    let target = req.uri().path().to_string();
    let denied = |ctx: Option<Ctx>, response: &Response| {
        let reason = response.extensions().get::<Denied>().map(|d| d.0.clone()).unwrap_or_default();
        DeniedRequest {
            ctx,
            source: source.clone(),
            request_id: request_id.clone(),
            action: action.clone(),
            target: target.clone(),
            status: response.status().as_u16(),
            reason,
        }
    };
    let credentials = credentials(&req);
    let ctx = match credentials {
        Ok((bearer, project)) => app
            .authenticate(bearer.as_deref(), project.as_deref(), source.clone(), request_id.clone())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let (ctx, response) = match ctx {
        Ok(ctx) => {
            req.extensions_mut().insert(ctx.clone());
            (Some(ctx), next.run(req).await)
        }
        Err(e) => (None, e.into_response()),
    };
    if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        if let Err(e) = app.audit_denied(denied(ctx, &response)).await {
            // Handled here: the answer stands, the record is lost; say so in the log.
            tracing::error!(
                error = format!("{:#}", anyhow::Error::new(e)),
                action,
                "cannot record a refused request in the audit log"
            );
        }
    }
    response
}

/// The bearer token and project of the request's headers (the token is never logged or
/// kept).
fn credentials(req: &Request) -> Result<(Option<String>, Option<String>), ApiError> {
    let headers = req.headers();
    let bearer = match headers.get(AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                // The scheme name is case-insensitive (RFC 9110 section 11.1).
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        "the Authorization header must be `Bearer <token>`",
                    )
                })?
                .to_string(),
        ),
    };
    let project = match headers.get(PROJECT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the x-sovdb-project header is not text")
                })?
                .to_string(),
        ),
    };
    // Prometheus sends no custom headers: its scrapes and service discovery name the
    // project in the query (`?project=`) instead.
    let project = match project {
        None if matches!(req.uri().path(), "/metrics" | "/api/v1/prometheus/targets") => {
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri())
                .ok()
                .and_then(|q| q.0.get("project").cloned())
        }
        p => p,
    };
    Ok((bearer, project))
}

/// The authenticated context, as a handler argument.
pub(crate) struct Context(pub Ctx);

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .map(Context)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("handler routed outside the authentication layer")))
    }
}

/// The client's IP address, when the request came over the network; for handlers outside
/// the authentication layer (login).
pub(crate) struct Source(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source(&parts.extensions)))
    }
}

fn source(extensions: &axum::http::Extensions) -> Option<String> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

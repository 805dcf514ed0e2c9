//! Extractors that answer in the API's error format: axum's own answer in plain text.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body. Unknown fields are refused by the body types themselves
/// (`deny_unknown_fields`); this turns every refusal into a 400 with the reason.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not valid JSON: {}", source_text(&e)),
                ),
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("the body does not fit: {}", source_text(&e)),
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                other => rejected(other.status(), other.body_text()),
            }),
        }
    }
}

/// Query parameters, refused with the reason when they don't fit.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("bad query parameters: {}", source_text(&e)),
            )),
            Err(other) => Err(rejected(other.status(), other.body_text())),
        }
    }
}

/// Any other refusal keeps axum's status (413 for a body over the limit, ...).
fn rejected(status: StatusCode, message: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    ApiError::new(status, code, message)
}

/// The innermost cause of an extractor error: serde's own words ("unknown field `x`,
/// expected one of ...") without axum's generic prefix.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

//! The alerting endpoints: alerts and their deliveries, rules, notification channels and
//! silences of the request's project. Thin like the others: parse, context, one app call.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use sovdb_app::App;
use sovdb_types::*;

use crate::context::Context;
use crate::error::ApiError;
use crate::extract::{Body, Params};

type ApiResult<T> = Result<T, ApiError>;

/// Filters and paging of `GET /alerts`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertsQuery {
    /// Only pending and firing alerts.
    #[serde(default)]
    open: bool,
    limit: Option<u32>,
    page_token: Option<String>,
}

/// The project's alerts (firing, pending, and the history of resolved ones), oldest first.
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    params(AlertsQuery, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Alert>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn alert_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<AlertsQuery>,
) -> ApiResult<Json<Page<Alert>>> {
    let page = PageParams { limit: q.limit, page_token: q.page_token };
    Ok(Json(app.alert_list(&ctx, q.open, &page).await?))
}

/// Filters and paging of `GET /alerts/deliveries`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// Only this alert's (an alert ID).
    alert: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

/// The notifications of the project's alerts and how sending each went, oldest first.
#[utoipa::path(get, path = "/alerts/deliveries", tag = "alerts",
    params(DeliveriesQuery, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Delivery>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn delivery_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<DeliveriesQuery>,
) -> ApiResult<Json<Page<Delivery>>> {
    let page = PageParams { limit: q.limit, page_token: q.page_token };
    Ok(Json(app.alert_delivery_list(&ctx, q.alert.as_deref(), &page).await?))
}

/// The default rules (every project has them) and the project's own.
#[utoipa::path(get, path = "/alerts/rules", tag = "alerts",
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<AlertRule>), (status = 401, body = ErrorBody)))]
pub(crate) async fn rule_list(State(app): State<App>, Context(ctx): Context) -> ApiResult<Json<Vec<AlertRule>>> {
    Ok(Json(app.alert_rule_list(&ctx).await?))
}

/// Creates a rule on a metric: it fires when the latest value of a member or host
/// compares with the threshold for `for`.
#[utoipa::path(post, path = "/alerts/rules", tag = "alerts", request_body = AlertRuleCreate,
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 201, body = AlertRule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rule_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<AlertRuleCreate>,
) -> ApiResult<(StatusCode, Json<AlertRule>)> {
    Ok((StatusCode::CREATED, Json(app.alert_rule_create(&ctx, req).await?)))
}

/// Changes the project's settings of a default rule: threshold (in the rule's `unit`, or a
/// text with a unit such as `64MiB`), `for`, channels, enabled; or `reset` them. What is
/// not given stays as it is.
#[utoipa::path(patch, path = "/alerts/rules/{name}", tag = "alerts", request_body = DefaultRuleUpdate,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = AlertRule), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn rule_set(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<DefaultRuleUpdate>,
) -> ApiResult<Json<AlertRule>> {
    Ok(Json(app.alert_rule_set(&ctx, &name, req).await?))
}

/// Deletes one of the project's rules (default rules cannot be deleted; silence them).
#[utoipa::path(delete, path = "/alerts/rules/{name}", tag = "alerts",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rule_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.alert_rule_delete(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The project's notification channels, without their secrets.
#[utoipa::path(get, path = "/alerts/channels", tag = "alerts",
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<Channel>), (status = 401, body = ErrorBody)))]
pub(crate) async fn channel_list(State(app): State<App>, Context(ctx): Context) -> ApiResult<Json<Vec<Channel>>> {
    Ok(Json(app.alert_channel_list(&ctx).await?))
}

/// Creates a notification channel. Its secrets (HMAC secret, Slack URL, SMTP password) are
/// stored sealed and never returned, except a generated webhook secret in this answer.
#[utoipa::path(post, path = "/alerts/channels", tag = "alerts", request_body = ChannelCreate,
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 201, body = Channel), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn channel_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<ChannelCreate>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    Ok((StatusCode::CREATED, Json(app.alert_channel_create(&ctx, req).await?)))
}

/// Deletes a channel and its secrets.
#[utoipa::path(delete, path = "/alerts/channels/{name}", tag = "alerts",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn channel_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.alert_channel_delete(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a test notification through a channel now and says how it went.
#[utoipa::path(post, path = "/alerts/channels/{name}/test", tag = "alerts",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = ChannelTestResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn channel_test(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<ChannelTestResult>> {
    Ok(Json(app.alert_channel_test(&ctx, &name).await?))
}

/// The project's silences and maintenance windows (active, scheduled, expired).
#[utoipa::path(get, path = "/alerts/silences", tag = "alerts",
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<Silence>), (status = 401, body = ErrorBody)))]
pub(crate) async fn silence_list(State(app): State<App>, Context(ctx): Context) -> ApiResult<Json<Vec<Silence>>> {
    Ok(Json(app.alert_silence_list(&ctx).await?))
}

/// Silences notifications of a cluster's and/or a rule's alerts from a start (default now;
/// later: a maintenance window) to an end. Alerts still change state.
#[utoipa::path(post, path = "/alerts/silences", tag = "alerts", request_body = SilenceCreate,
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 201, body = Silence), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn silence_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<SilenceCreate>,
) -> ApiResult<(StatusCode, Json<Silence>)> {
    Ok((StatusCode::CREATED, Json(app.alert_silence_create(&ctx, req).await?)))
}

/// Ends a silence now (deletes it).
#[utoipa::path(delete, path = "/alerts/silences/{id}", tag = "alerts",
    params(("id" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn silence_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.alert_silence_delete(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

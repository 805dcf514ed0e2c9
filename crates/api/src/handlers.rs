//! The endpoints. Each: parse → context → one app call → response.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sovdb_app::App;
use sovdb_store::AuditFilter;
use sovdb_types::audit::{AuditRecord, AuditVerification};
use sovdb_types::*;

use crate::context::{Context, Source};
use crate::error::ApiError;
use crate::extract::{Body, Params};

type ApiResult<T> = Result<T, ApiError>;

/// Liveness and store reachability.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub(crate) async fn healthz(State(app): State<App>) -> ApiResult<Json<Health>> {
    app.health().await.map_err(|e| {
        tracing::warn!(error = format!("{:#}", anyhow::Error::new(e)), "health check: store unavailable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store does not answer")
    })?;
    Ok(Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }))
}

/// The OpenAPI document as JSON, shared by every request.
#[derive(Clone)]
pub(crate) struct OpenApiDocument(pub std::sync::Arc<serde_json::Value>);

/// This API's OpenAPI 3 document (no authentication needed).
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub(crate) async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiDocument>) -> Json<serde_json::Value> {
    Json(doc.0.as_ref().clone())
}

/// Who the token belongs to, and the project the request ran in.
#[utoipa::path(get, path = "/whoami", tag = "system",
    params(("x-sovdb-project" = Option<String>, Header, description = "Project to act in (default `default`)")),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(Context(ctx): Context) -> Json<WhoAmI> {
    Json(ctx.whoami())
}

/// Projects the caller can see.
#[utoipa::path(get, path = "/projects", tag = "projects", params(PageParams),
    responses((status = 200, body = Page<Project>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn project_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Project>>> {
    Ok(Json(app.project_list(&ctx, &page).await?))
}

/// All locations of the installation.
#[utoipa::path(get, path = "/locations", tag = "locations", params(PageParams),
    responses((status = 200, body = Page<Location>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn location_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Location>>> {
    Ok(Json(app.location_list(&ctx, &page).await?))
}

/// Registers a location (admin).
#[utoipa::path(post, path = "/locations", tag = "locations", request_body = LocationCreate,
    responses((status = 201, body = Location), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn location_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<LocationCreate>,
) -> ApiResult<(StatusCode, Json<Location>)> {
    Ok((StatusCode::CREATED, Json(app.location_create(&ctx, req).await?)))
}

/// One location, with the health of its DCS (etcd).
#[utoipa::path(get, path = "/locations/{name}", tag = "locations", params(("name" = String, Path)),
    responses((status = 200, body = LocationDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn location_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<LocationDetail>> {
    Ok(Json(app.location_detail(&ctx, &name).await?))
}

/// Deletes a location with nothing in it (admin).
#[utoipa::path(delete, path = "/locations/{name}", tag = "locations", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn location_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.location_delete(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renews the certificates of every etcd member of the location now, whatever their age
/// (admin). Put in place without a restart. Starts a `location.renew-certs` operation;
/// refused (409) while an operation acts on the location or when it has no etcd yet.
#[utoipa::path(post, path = "/locations/{name}/renew-certs", tag = "locations", params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn location_renew_certs(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.location_renew_certs(&ctx, &name).await?)))
}

/// Filters and paging of `GET /hosts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HostQuery {
    /// Only the hosts of this location.
    location: Option<String>,
    /// Items per page, 1–1000 (default 100).
    limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// Hosts, by name.
#[utoipa::path(get, path = "/hosts", tag = "hosts", params(HostQuery),
    responses((status = 200, body = Page<Host>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn host_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<HostQuery>,
) -> ApiResult<Json<Page<Host>>> {
    let page = PageParams { limit: q.limit, page_token: q.page_token };
    Ok(Json(app.host_list(&ctx, q.location.as_deref(), &page).await?))
}

/// Adds a host (admin): starts a `host.add` operation that installs and starts the agent;
/// the host is `ready` when it succeeds, and forgotten again if it fails.
#[utoipa::path(post, path = "/hosts", tag = "hosts", request_body = HostCreate,
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn host_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<HostCreate>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.host_create(&ctx, req).await?)))
}

/// One host, with its facts and status.
#[utoipa::path(get, path = "/hosts/{name}", tag = "hosts", params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn host_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(app.host_get(&ctx, &name).await?))
}

/// Options of `DELETE /hosts/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HostRemoveQuery {
    /// Forget the host even if it can't be reached (what is on it stays there).
    #[serde(default)]
    force: bool,
}

/// Removes a host (admin): a `host.remove` operation stops and removes the agent, then
/// forgets the host. Database data on the host is never removed.
#[utoipa::path(delete, path = "/hosts/{name}", tag = "hosts", params(("name" = String, Path), HostRemoveQuery),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn host_remove(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(q): Params<HostRemoveQuery>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.host_remove(&ctx, &name, q.force).await?)))
}

/// Drains a host (admin): no new database node is placed there.
#[utoipa::path(post, path = "/hosts/{name}/drain", tag = "hosts", params(("name" = String, Path)),
    responses((status = 200, body = Host), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn host_drain(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    Ok(Json(app.host_drain(&ctx, &name).await?))
}

/// Renews a host's agent certificate, and its pgBackRest TLS server's if it runs one, now,
/// whatever their age (admin): after a key may have leaked, say. Put in place without a
/// restart. Starts a `host.renew-certs` operation; refused (409) while an operation acts on
/// the host or its agent does not answer.
#[utoipa::path(post, path = "/hosts/{name}/renew-certs", tag = "hosts", params(("name" = String, Path)),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn host_renew_certs(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.host_renew_certs(&ctx, &name).await?)))
}

/// Clusters of the request's project.
#[utoipa::path(get, path = "/clusters", tag = "clusters",
    params(PageParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Cluster>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn cluster_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Cluster>>> {
    Ok(Json(app.cluster_list(&ctx, &page).await?))
}

/// Creates a cluster in the request's project: checks everything (engine, version,
/// replicas, names, parameters, placement) first, then starts a `cluster.create` operation.
#[utoipa::path(post, path = "/clusters", tag = "clusters", request_body = ClusterCreate,
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<ClusterCreate>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_create(&ctx, req).await?)))
}

/// One cluster of the request's project, with its members as Patroni reports them now.
#[utoipa::path(get, path = "/clusters/{name}", tag = "clusters",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = ClusterDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn cluster_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterDetail>> {
    Ok(Json(app.cluster_get(&ctx, &name).await?))
}

/// Deletes a cluster: starts a `cluster.delete` operation that stops and removes every
/// member and releases its ports, capacity and secrets.
/// Options of `DELETE /clusters/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// Delete the cluster's backups from its repository too (default: they are kept, and
    /// the cluster can be restored by name).
    #[serde(default)]
    delete_backups: bool,
}

#[utoipa::path(delete, path = "/clusters/{name}", tag = "clusters",
    params(("name" = String, Path), DeleteQuery, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn cluster_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(q): Params<DeleteQuery>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_delete(&ctx, &name, q.delete_backups).await?)))
}

/// A planned switchover: the primary hands over to a replica (`to`, or the one Patroni
/// chooses: the synchronous standby with `--sync`). Starts a `cluster.switchover` operation.
#[utoipa::path(post, path = "/clusters/{name}/switchover", tag = "clusters", request_body = ClusterSwitchover,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_switchover(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterSwitchover>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_switchover(&ctx, &name, req, false).await?)))
}

/// A forced failover: promotes `to` (or the synchronous standby, or the replica least
/// behind) whatever the primary does, also when there is none. Starts a `cluster.failover`
/// operation.
#[utoipa::path(post, path = "/clusters/{name}/failover", tag = "clusters", request_body = ClusterSwitchover,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_failover(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterSwitchover>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_switchover(&ctx, &name, req, true).await?)))
}

/// A rolling restart of every member's PostgreSQL, replicas first, the primary last (in
/// place). Starts a `cluster.restart` operation.
#[utoipa::path(post, path = "/clusters/{name}/restart", tag = "clusters", request_body = ClusterRestart,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_restart(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterRestart>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_restart(&ctx, &name, req).await?)))
}

/// More or fewer members (never removing the primary); checks placement first. Starts a
/// `cluster.scale` operation.
#[utoipa::path(post, path = "/clusters/{name}/scale", tag = "clusters", request_body = ClusterScale,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_scale(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterScale>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_scale(&ctx, &name, req).await?)))
}

/// A rolling change of PostgreSQL parameters through Patroni, validated first; members
/// restart (replicas first) only where a parameter needs it, and the operation's output
/// and event say so. Starts a `cluster.set` operation.
#[utoipa::path(post, path = "/clusters/{name}/params", tag = "clusters", request_body = ClusterSetParams,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_set_params(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterSetParams>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_set_params(&ctx, &name, req).await?)))
}

/// Adds networks (`allow`) to and removes networks (`deny`) from the cluster's network
/// allow-list, then applies the whole list to every member's pg_hba (through Patroni) and
/// HAProxy without a restart. Every CIDR is checked first. Starts a `cluster.allow-list`
/// operation.
#[utoipa::path(post, path = "/clusters/{name}/allow-list", tag = "clusters", request_body = ClusterAllowList,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_allow_list(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterAllowList>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_allow_list(&ctx, &name, req).await?)))
}

/// Renews every internal certificate of the cluster now, whatever its age: its members'
/// (PostgreSQL, Patroni's REST API, PgBouncer, towards etcd) and its stanza's client
/// certificate; after a key may have leaked, say. Put in place without a restart. Starts a
/// `cluster.renew-certs` operation; refused (409) while an operation acts on the cluster.
#[utoipa::path(post, path = "/clusters/{name}/renew-certs", tag = "clusters",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_renew_certs(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_renew_certs(&ctx, &name).await?)))
}

/// What happened to a cluster, oldest first: created, failovers Patroni made (observed by
/// the control plane), switchovers, restarts, parameter changes, scaling, degraded and
/// recovered. A deleted cluster's events stay readable.
#[utoipa::path(get, path = "/clusters/{name}/events", tag = "clusters",
    params(("name" = String, Path), PageParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Event>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn cluster_events(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Event>>> {
    Ok(Json(app.cluster_events(&ctx, &name, &page).await?))
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsParams {
    /// Only this cluster's events.
    cluster: Option<String>,
    /// Only events at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only events after this one (an event ID).
    after: Option<String>,
    /// Stream events as they are written (server-sent events) instead of answering a page;
    /// from `since`, or from now.
    #[serde(default)]
    follow: bool,
    /// Items per page, 1–1000 (default 100).
    limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The timeline, oldest first: the request's project's events (failovers, switchovers,
/// restarts, parameter changes, scaling, backups, drills, restores, alerts) and, for
/// admins, the installation's own (hosts). With `follow=true`, a stream of server-sent
/// events: an `event` event (data: the event as JSON) for each event as it is written.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventsParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Event>, content_type = "application/json"),
              (status = 200, content_type = "text/event-stream", body = String,
               description = "with `follow=true`: `event: event`, `data:` the event as JSON"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn events(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<EventsParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::sse::{Event as SseEvent, KeepAlive};
    use axum::response::IntoResponse as _;
    let query = sovdb_app::EventsQuery { cluster: q.cluster, since: q.since, after: q.after };
    if !q.follow {
        let page = PageParams { limit: q.limit, page_token: q.page_token };
        return Ok(Json(app.events(&ctx, &query, &page).await?).into_response());
    }
    let follower = app.events_follow(&ctx, &query)?;
    let stream = futures_util::stream::unfold(
        (follower, std::collections::VecDeque::<Event>::new(), true),
        |(mut f, mut pending, mut first)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    let ev = SseEvent::default().event("event").json_data(&e).unwrap_or_default();
                    return Some((Ok::<_, std::convert::Infallible>(ev), (f, pending, first)));
                }
                if !std::mem::replace(&mut first, false) {
                    tokio::time::sleep(EVENTS_POLL).await;
                }
                match f.next().await {
                    Ok(events) => pending.extend(events),
                    Err(e) => {
                        // A store failure: say so and keep going (the client may stay).
                        tracing::warn!(error = %e, "reading the events to follow failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        },
    );
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Query of `GET /clusters/{name}/logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsParams {
    /// Only this member's logs (default: every member's).
    member: Option<String>,
    /// Only lines stamped at or after this time (RFC 3339); looks back at most 10,000
    /// lines of each log.
    since: Option<DateTime<Utc>>,
    /// Without `since`: how many of the last lines of each log (default 100, at most 10,000).
    lines: Option<u32>,
    /// Keep streaming lines as they are written (server-sent events).
    #[serde(default)]
    follow: bool,
}

/// How often a followed log is read again.
const LOGS_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The PostgreSQL and Patroni log lines of the cluster's members, read through their
/// agents. Logs may hold SQL text: reading them needs the developer role and is audited.
/// Without `follow`, the last lines of each log as a JSON list; with `follow=true`, a
/// stream of server-sent events: a `line` event (data: the line as JSON) for each line,
/// first the last lines, then each new one as it is written, until the client leaves.
#[utoipa::path(get, path = "/clusters/{name}/logs", tag = "clusters",
    params(("name" = String, Path), LogsParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<LogLine>, content_type = "application/json"),
              (status = 200, content_type = "text/event-stream", body = String,
               description = "with `follow=true`: `event: line`, `data:` the line as JSON"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_logs(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(q): Params<LogsParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::sse::{Event as SseEvent, KeepAlive};
    use axum::response::IntoResponse as _;
    let query = sovdb_app::LogsQuery { member: q.member, since: q.since, lines: q.lines, follow: q.follow };
    let mut logs = app.cluster_logs(&ctx, &name, &query).await?;
    if !q.follow {
        return Ok(Json(logs.next().await).into_response());
    }
    let stream = futures_util::stream::unfold(
        (logs, std::collections::VecDeque::<LogLine>::new(), true),
        |(mut logs, mut pending, mut first)| async move {
            loop {
                if let Some(l) = pending.pop_front() {
                    let ev = SseEvent::default().event("line").json_data(&l).unwrap_or_default();
                    return Some((Ok::<_, std::convert::Infallible>(ev), (logs, pending, first)));
                }
                if !std::mem::replace(&mut first, false) {
                    tokio::time::sleep(LOGS_POLL).await;
                }
                pending.extend(logs.next().await);
            }
        },
    );
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// A backup of the cluster into its repository (pgBackRest, on the primary): `incr` by
/// default (`full` when the repository has none yet). Starts a `backup.create` operation.
#[utoipa::path(post, path = "/clusters/{name}/backups", tag = "backups", request_body = BackupCreate,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn backup_create(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<BackupCreate>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.backup_create(&ctx, &name, req).await?)))
}

/// The cluster's backups in its repository, oldest first, as pgBackRest reports them.
#[utoipa::path(get, path = "/clusters/{name}/backups", tag = "backups",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<Backup>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(crate) async fn backup_list(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Backup>>> {
    Ok(Json(app.backup_list(&ctx, &name).await?))
}

/// A restore drill: the newest backup restored into a temporary instance that must start,
/// recover and pass `pgbackrest verify` and page checksums; then removed. Starts a
/// `backup.verify` operation; a failed drill is a `drill-failed` event.
#[utoipa::path(post, path = "/clusters/{name}/verify", tag = "backups", request_body = BackupVerify,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn backup_verify(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(_req): Body<BackupVerify>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.backup_verify(&ctx, &name).await?)))
}

/// The cluster's backup policy: schedules (cron, UTC), retention, drills; and when each
/// schedule runs next.
#[utoipa::path(get, path = "/clusters/{name}/backup-policy", tag = "backups",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = BackupPolicyView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn backup_policy_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<BackupPolicyView>> {
    Ok(Json(app.backup_policy_get(&ctx, &name).await?))
}

/// Replaces the cluster's backup policy (an empty body removes every schedule). The
/// control plane starts each scheduled run as an operation; a run missed while it was
/// down runs once when it is back.
#[utoipa::path(put, path = "/clusters/{name}/backup-policy", tag = "backups", request_body = BackupPolicy,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = BackupPolicyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn backup_policy_set(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<BackupPolicy>,
) -> ApiResult<Json<BackupPolicyView>> {
    Ok(Json(app.backup_policy_set(&ctx, &name, req).await?))
}

/// Deleted clusters whose backups were kept, newest deletion first.
#[utoipa::path(get, path = "/retained-backups", tag = "backups",
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Vec<RetainedBackups>), (status = 401, body = ErrorBody)))]
pub(crate) async fn retained_list(
    State(app): State<App>,
    Context(ctx): Context,
) -> ApiResult<Json<Vec<RetainedBackups>>> {
    Ok(Json(app.retained_list(&ctx).await?))
}

/// Deletes the kept backups of the newest deleted cluster of that name from its
/// repository. Starts a `backup.purge` operation.
#[utoipa::path(delete, path = "/retained-backups/{name}", tag = "backups",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn retained_purge(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.retained_purge(&ctx, &name).await?)))
}

/// A new cluster (`as`) from this one's repository, at `to_time`, `to_lsn` or the end of
/// its archived WAL (`latest`, the default); the source is untouched. The target is checked
/// against the repository first. Starts a `cluster.restore` operation.
#[utoipa::path(post, path = "/clusters/{name}/restore", tag = "backups", request_body = ClusterRestore,
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 202, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn cluster_restore(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<ClusterRestore>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(app.cluster_restore(&ctx, &name, req).await?)))
}

/// Options of `GET /clusters/{name}/connection`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConnectionQuery {
    /// A URI that prefers standbys (`target_session_attrs=prefer-standby`).
    #[serde(default)]
    read_only: bool,
}

/// How to connect: a libpq URI with every member, the application user and its password,
/// the CA. Reading it is a secret read and is audited.
#[utoipa::path(get, path = "/clusters/{name}/connection", tag = "clusters",
    params(("name" = String, Path), ConnectionQuery, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = ClusterConnection), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn cluster_connection(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(q): Params<ConnectionQuery>,
) -> ApiResult<Json<ClusterConnection>> {
    Ok(Json(app.cluster_connection(&ctx, &name, q.read_only).await?))
}

/// Backup repositories of the request's project.
#[utoipa::path(get, path = "/repos", tag = "repos",
    params(PageParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<Repo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn repo_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Repo>>> {
    Ok(Json(app.repo_list(&ctx, &page).await?))
}

/// Creates a backup repository in the request's project: a directory on a host of the
/// location (`posix`, prepared through the host's agent before anything is recorded) or a
/// prefix in an S3 bucket (`s3`, not checked for reachability yet). Its secrets (the
/// generated cipher passphrase, the S3 keys) are stored sealed and never returned.
#[utoipa::path(post, path = "/repos", tag = "repos", request_body = RepoCreate,
    params(("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 201, body = Repo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn repo_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<RepoCreate>,
) -> ApiResult<(StatusCode, Json<Repo>)> {
    Ok((StatusCode::CREATED, Json(app.repo_create(&ctx, req).await?)))
}

/// One backup repository of the request's project, with the clusters that use it.
#[utoipa::path(get, path = "/repos/{name}", tag = "repos",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Repo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn repo_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<Repo>> {
    Ok(Json(app.repo_get(&ctx, &name).await?))
}

/// Forgets a backup repository and its secrets; refused while a cluster uses it. Its files
/// are not removed.
#[utoipa::path(delete, path = "/repos/{name}", tag = "repos",
    params(("name" = String, Path), ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn repo_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.repo_delete(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters and paging of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only records at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only records by this user.
    actor: Option<String>,
    /// Only records about this target (`kind/name`), or every target of a kind (`kind/`).
    target: Option<String>,
    /// Items per page, 1–1000 (default 100).
    limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The audit log, oldest first (admin).
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditRecord>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    let filter = AuditFilter { since: q.since, actor: q.actor, target: q.target };
    let page = PageParams { limit: q.limit, page_token: q.page_token };
    Ok(Json(app.audit_list(&ctx, &filter, &page).await?))
}

/// Query of `GET /audit/verify`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditVerifyQuery {
    /// A head printed by an earlier verify (`SEQ:HASH`): the chain must still hold that
    /// record with that hash, which also catches a chain rewritten up to its end.
    anchor: Option<String>,
}

/// Verifies the whole audit chain (admin): every hash, every link, no gap, and its end
/// against the head recorded with the last append. `ok` false names the first bad record.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", params(AuditVerifyQuery),
    responses((status = 200, body = AuditVerification), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit_verify(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<AuditVerifyQuery>,
) -> ApiResult<Json<AuditVerification>> {
    Ok(Json(app.audit_verify(&ctx, q.anchor.as_deref()).await?))
}

/// Replaces the master key and re-seals every stored secret under the new one (admin).
#[utoipa::path(post, path = "/admin/master-key/rotate", tag = "admin",
    responses((status = 200, body = MasterKeyRotation), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn master_key_rotate(
    State(app): State<App>,
    Context(ctx): Context,
) -> ApiResult<Json<MasterKeyRotation>> {
    Ok(Json(app.master_key_rotate(&ctx).await?))
}

/// Where logins of users without a local password are checked (admin): an LDAP
/// directory, and which of its groups give which roles.
#[utoipa::path(get, path = "/auth/ldap", tag = "users",
    responses((status = 200, body = LdapSettings), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn ldap_get(State(app): State<App>, Context(ctx): Context) -> ApiResult<Json<LdapSettings>> {
    Ok(Json(app.ldap_get(&ctx).await?))
}

/// Sets the directory (admin); checked, not contacted (it is asked at each login).
#[utoipa::path(put, path = "/auth/ldap", tag = "users", request_body = LdapSettings,
    responses((status = 200, body = LdapSettings), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn ldap_set(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<LdapSettings>,
) -> ApiResult<Json<LdapSettings>> {
    Ok(Json(app.ldap_set(&ctx, req).await?))
}

/// Turns directory logins off (admin).
#[utoipa::path(delete, path = "/auth/ldap", tag = "users",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn ldap_clear(State(app): State<App>, Context(ctx): Context) -> ApiResult<StatusCode> {
    app.ldap_clear(&ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Operations, newest first: all of them for admins, else the project's.
#[utoipa::path(get, path = "/operations", tag = "operations", params(PageParams),
    responses((status = 200, body = Page<Operation>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn operation_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<Operation>>> {
    Ok(Json(app.operation_list(&ctx, &page).await?))
}

/// One operation with its steps.
#[utoipa::path(get, path = "/operations/{id}", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn operation_get(
    State(app): State<App>,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    Ok(Json(app.operation_get(&ctx, &id).await?))
}

/// Cancels an operation at its next step boundary; what it did is undone.
#[utoipa::path(post, path = "/operations/{id}/cancel", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn operation_cancel(
    State(app): State<App>,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    Ok(Json(app.operation_cancel(&ctx, &id).await?))
}

/// How often an events stream looks for changes. Polling the store (not an in-process
/// signal) is what lets any replica serve the stream of an operation another one runs.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The operation as it changes, as server-sent events: an `operation` event (the whole
/// operation, as `GET /operations/{id}` returns it) at once and after every change; the
/// stream ends after the event that shows it finished.
#[utoipa::path(get, path = "/operations/{id}/events", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "`event: operation`, `data:` the operation as JSON"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn operation_events(
    State(app): State<App>,
    Context(ctx): Context,
    Path(id): Path<String>,
) -> ApiResult<
    axum::response::Sse<impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>>,
> {
    use axum::response::sse::{Event, KeepAlive};
    // The first read answers 404/400 as a plain error, before the stream starts.
    let first = app.operation_get(&ctx, &id).await?;
    struct Watch {
        app: App,
        ctx: sovdb_app::Ctx,
        id: String,
        last: Option<Operation>,
        pending: Option<Operation>,
        ended: bool,
    }
    let watch = Watch { app, ctx, id, last: None, pending: Some(first), ended: false };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if w.ended {
                return None;
            }
            if let Some(op) = w.pending.take() {
                if w.last.as_ref() != Some(&op) {
                    w.ended = op.state.is_final();
                    let event = Event::default().event("operation").json_data(&op).unwrap_or_default();
                    w.last = Some(op);
                    return Some((Ok(event), w));
                }
            }
            tokio::time::sleep(EVENTS_POLL).await;
            match w.app.operation_get(&w.ctx, &w.id).await {
                Ok(op) => w.pending = Some(op),
                Err(e) => {
                    // The operation vanished or the store failed: say so and end.
                    let event = Event::default().event("error").data(e.to_string());
                    w.ended = true;
                    return Some((Ok(event), w));
                }
            }
        }
    });
    Ok(axum::response::Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Changes a location's settings (admin): `syslog`, where its hosts forward their
/// clusters' PostgreSQL and Patroni logs as RFC 5424 messages (`tcp://HOST:PORT`, or
/// `none`). The agents forward by themselves, also while the control plane is down.
#[utoipa::path(patch, path = "/locations/{name}", tag = "locations", request_body = LocationSet,
    params(("name" = String, Path)),
    responses((status = 200, body = LocationDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn location_set(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<LocationSet>,
) -> ApiResult<Json<LocationDetail>> {
    Ok(Json(app.location_set(&ctx, &name, req).await?))
}

/// Creates a project (admin).
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = ProjectCreate,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn project_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<ProjectCreate>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    Ok((StatusCode::CREATED, Json(app.project_create(&ctx, req).await?)))
}

/// Users: every one for admins; the request project's members, with their roles there,
/// for its owners.
#[utoipa::path(get, path = "/users", tag = "users",
    params(PageParams, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = Page<UserView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(crate) async fn user_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(page): Params<PageParams>,
) -> ApiResult<Json<Page<UserView>>> {
    Ok(Json(app.user_list(&ctx, &page).await?))
}

/// Creates a user, optionally with a password and a role. Admins create any user; a
/// project's owner creates users with a role in that project.
#[utoipa::path(post, path = "/users", tag = "users", request_body = UserCreate,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn user_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<UserCreate>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    Ok((StatusCode::CREATED, Json(app.user_create(&ctx, req).await?)))
}

/// Disables a user (admin): their tokens are refused from now on and they can't log in.
/// The last enabled admin can't be disabled.
#[utoipa::path(post, path = "/users/{name}/disable", tag = "users", params(("name" = String, Path)),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn user_disable(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.user_set_disabled(&ctx, &name, true).await?))
}

/// Enables a disabled user again (admin); their tokens that have not expired work again.
#[utoipa::path(post, path = "/users/{name}/enable", tag = "users", params(("name" = String, Path)),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn user_enable(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.user_set_disabled(&ctx, &name, false).await?))
}

/// Deletes a user (admin) with their roles and tokens; not yourself, not the last enabled
/// admin. Their audit records stay.
#[utoipa::path(delete, path = "/users/{name}", tag = "users", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn user_delete(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.user_delete(&ctx, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's password: your own with the current one (`current_password`; a wrong one
/// counts as a failed login, 403), another user's as an admin. The user's other password
/// logins are revoked; API tokens stay.
#[utoipa::path(put, path = "/users/{name}/password", tag = "users", request_body = PasswordChange,
    params(("name" = String, Path)),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn user_password(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<PasswordChange>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.user_password_change(&ctx, &name, req).await?))
}

/// Grants a role: `admin` (by admins, without a project) or a role in a project (by admins
/// and the project's owners).
#[utoipa::path(post, path = "/users/{name}/roles", tag = "users", request_body = RoleGrant,
    params(("name" = String, Path)),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn role_grant(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Body(req): Body<RoleGrant>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(app.role_grant(&ctx, &name, req).await?))
}

/// Options of `DELETE /users/{name}/roles/{role}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoleQuery {
    /// The project of the role (every role but `admin`).
    project: Option<String>,
}

/// Revokes a role, as granted. The last enabled admin keeps `admin`.
#[utoipa::path(delete, path = "/users/{name}/roles/{role}", tag = "users",
    params(("name" = String, Path), ("role" = Role, Path), RoleQuery),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn role_revoke(
    State(app): State<App>,
    Context(ctx): Context,
    Path((name, role)): Path<(String, String)>,
    Params(q): Params<RoleQuery>,
) -> ApiResult<Json<UserView>> {
    let role = Role::parse(&role).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("unknown role {role:?}: one of admin, owner, operator, developer, viewer"),
        )
    })?;
    Ok(Json(app.role_revoke(&ctx, &name, RoleGrant { role, project: q.project }).await?))
}

/// Filters and paging of `GET /tokens`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenQuery {
    /// Another user's tokens (admin); default: the caller's.
    user: Option<String>,
    /// Items per page, 1–1000 (default 100).
    limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// The caller's API tokens (or, for admins, another user's), oldest first: names, dates,
/// whether revoked; never a secret.
#[utoipa::path(get, path = "/tokens", tag = "users", params(TokenQuery),
    responses((status = 200, body = Page<Token>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn token_list(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<TokenQuery>,
) -> ApiResult<Json<Page<Token>>> {
    let page = PageParams { limit: q.limit, page_token: q.page_token };
    Ok(Json(app.token_list(&ctx, q.user.as_deref(), &page).await?))
}

/// Creates an API token for the caller (or, for admins, for another user). The answer
/// holds its secret: the only time it is shown.
#[utoipa::path(post, path = "/tokens", tag = "users", request_body = TokenCreate,
    responses((status = 201, body = NewToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn token_create(
    State(app): State<App>,
    Context(ctx): Context,
    Body(req): Body<TokenCreate>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    Ok((StatusCode::CREATED, Json(app.token_create(&ctx, req).await?)))
}

/// Options of `DELETE /tokens/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenRevokeQuery {
    /// Whose token a name refers to (admin); default: the caller's.
    user: Option<String>,
}

/// Revokes a token, by ID or by name (a name must pick one live token). It is refused
/// from the next request on.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "users",
    params(("id" = String, Path, description = "The token's ID, or its name"), TokenRevokeQuery),
    responses((status = 200, body = Token), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn token_revoke(
    State(app): State<App>,
    Context(ctx): Context,
    Path(id): Path<String>,
    Params(q): Params<TokenRevokeQuery>,
) -> ApiResult<Json<Token>> {
    Ok(Json(app.token_revoke(&ctx, &id, q.user.as_deref()).await?))
}

/// Trades a user name and password for a new token named `login` (no bearer token
/// needed). Failed logins are throttled per user and per address: 429 with
/// `Retry-After` says when to try again.
#[utoipa::path(post, path = "/login", tag = "users", security(()), request_body = Login,
    responses((status = 201, body = NewToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
    State(app): State<App>,
    Source(source): Source,
    Body(req): Body<Login>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let request_id = crate::context::REQUEST_ID.try_with(Clone::clone).ok();
    Ok((StatusCode::CREATED, Json(app.login(req, source, request_id).await?)))
}

/// A cluster's metrics over a time range: every member's PostgreSQL metrics and its
/// host's metrics (or one metric with `name`), one point per `step`. Ranges with a step
/// under a minute come from the raw samples (kept 24 h by default), longer steps from
/// 1-minute rollups (14 days).
#[utoipa::path(get, path = "/clusters/{name}/metrics", tag = "clusters",
    params(("name" = String, Path), MetricsQuery, ("x-sovdb-project" = Option<String>, Header, description = "Project (default `default`)")),
    responses((status = 200, body = MetricsQueryResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn cluster_metrics(
    State(app): State<App>,
    Context(ctx): Context,
    Path(name): Path<String>,
    Params(q): Params<MetricsQuery>,
) -> ApiResult<Json<MetricsQueryResult>> {
    Ok(Json(app.cluster_metrics(&ctx, &name, &q).await?))
}

/// What `/metrics` shows: everything the caller may see, or one project's, one cluster's,
/// or (admins) only the hosts.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScrapeParams {
    /// Only this project's clusters (also picks the project the token is checked in).
    project: Option<String>,
    /// Only this cluster.
    cluster: Option<String>,
    /// `hosts`: only the hosts (admins).
    scope: Option<String>,
}

/// Prometheus' text exposition format: the newest sample of every cluster member (labels
/// `project`, `cluster`, `member`, `role`, `location`, `host`) and host the token's user
/// may see. Metric names are `sovdb_<name>` (see docs/monitoring.md).
#[utoipa::path(get, path = "/metrics", tag = "system", params(ScrapeParams),
    responses((status = 200, body = String, content_type = "text/plain; version=0.0.4"), (status = 401, body = ErrorBody)))]
pub(crate) async fn prometheus_metrics(
    State(app): State<App>,
    Context(ctx): Context,
    Params(q): Params<ScrapeParams>,
) -> ApiResult<([(axum::http::header::HeaderName, &'static str); 1], String)> {
    let hosts_only = q.scope.as_deref() == Some("hosts");
    let text = app.prometheus_metrics(&ctx, q.project.as_deref(), q.cluster.as_deref(), hosts_only).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

/// Prometheus' HTTP service discovery (`http_sd_configs`): one target group per cluster
/// the caller may read (scraped at `/metrics?project=P&cluster=C` on this server), and for
/// admins one for the hosts.
#[utoipa::path(get, path = "/prometheus/targets", tag = "system",
    responses((status = 200, body = Vec<PrometheusTargetGroup>), (status = 401, body = ErrorBody)))]
pub(crate) async fn prometheus_targets(
    State(app): State<App>,
    Context(ctx): Context,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Vec<PrometheusTargetGroup>>> {
    let address = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    Ok(Json(app.prometheus_targets(&ctx, address).await?))
}

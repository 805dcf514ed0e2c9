//! The REST API under `/api/v1`, plus `/healthz` (and the console's files, from
//! `sovdb-console`).
//!
//! Handlers are thin: parse, take the request context, make one app call, answer. They
//! never touch SQL, SSH or an agent. Conventions every endpoint shares:
//! - JSON in and out; request bodies with unknown fields are refused;
//! - `Authorization: Bearer <token>` on everything under `/api/v1` except the OpenAPI
//!   document and `POST /login`; the project is chosen with the `x-sovdb-project` header (default `default`);
//! - errors are `ErrorBody` JSON objects with a stable `code` (mapped in [`error`]);
//! - lists take `limit` and `page_token` and answer a `Page`;
//! - every response carries an `x-request-id`, also in the log and in error bodies;
//! - every refused request (401, 403) is recorded in the audit log, in one place
//!   ([`context::authenticate`]), with who (when known), from where and which route.
//!
//! The OpenAPI document is generated from the handlers' annotations as they are routed,
//! so a route cannot exist without being described.

use axum::Router;
use sovdb_app::App;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod alerts;
mod context;
pub mod error;
mod extract;
mod handlers;

pub use context::PROJECT_HEADER;

#[derive(OpenApi)]
#[openapi(
    info(title = "sovdb API", description = "The sovdb control plane: sovereign databases on demand."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "system", description = "Health and identity"),
        (name = "projects", description = "Tenants"),
        (name = "users", description = "Users, roles, API tokens and logins"),
        (name = "locations", description = "Where hosts and databases run"),
        (name = "hosts", description = "Machines with sovdb's agent"),
        (name = "clusters", description = "Database clusters"),
        (name = "repos", description = "Backup repositories"),
        (name = "backups", description = "Backups, and restores into new clusters"),
        (name = "audit", description = "The audit log"),
        (name = "admin", description = "Installation administration"),
        (name = "operations", description = "Durable operations and their progress"),
        (name = "events", description = "The timeline of clusters, hosts and the installation"),
        (name = "alerts", description = "Alerts, their rules, notification channels and silences"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole HTTP application, without a socket (tests drive it with `oneshot`): the API,
/// and the web console's static files at `/` and `/console/` (which call the API like any
/// other client).
pub fn app(app: App) -> Router {
    let (router, openapi) = api_router(app.clone()).split_for_parts();
    let document = handlers::OpenApiDocument(std::sync::Arc::new(
        serde_json::to_value(&openapi).expect("the OpenAPI document serialises"),
    ));
    router
        .merge(sovdb_console::router())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::Extension(document))
        .layer(axum::middleware::from_fn(context::request_id))
        .with_state(app)
}

fn api_router(app: App) -> OpenApiRouter<App> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(handlers::whoami))
        .routes(routes!(handlers::project_list, handlers::project_create))
        .routes(routes!(handlers::user_list, handlers::user_create))
        .routes(routes!(handlers::user_disable))
        .routes(routes!(handlers::user_enable))
        .routes(routes!(handlers::user_password))
        .routes(routes!(handlers::user_delete))
        .routes(routes!(handlers::role_grant))
        .routes(routes!(handlers::role_revoke))
        .routes(routes!(handlers::token_list, handlers::token_create))
        .routes(routes!(handlers::token_revoke))
        .routes(routes!(handlers::location_list, handlers::location_create))
        .routes(routes!(handlers::location_get, handlers::location_delete, handlers::location_set))
        .routes(routes!(handlers::location_renew_certs))
        .routes(routes!(handlers::host_list, handlers::host_create))
        .routes(routes!(handlers::host_get, handlers::host_remove))
        .routes(routes!(handlers::host_drain))
        .routes(routes!(handlers::host_renew_certs))
        .routes(routes!(handlers::cluster_list, handlers::cluster_create))
        .routes(routes!(handlers::cluster_get, handlers::cluster_delete))
        .routes(routes!(handlers::cluster_connection))
        .routes(routes!(handlers::cluster_events))
        .routes(routes!(handlers::cluster_metrics))
        .routes(routes!(handlers::prometheus_targets))
        .routes(routes!(handlers::cluster_logs))
        .routes(routes!(handlers::events))
        .routes(routes!(handlers::backup_create, handlers::backup_list))
        .routes(routes!(handlers::cluster_restore))
        .routes(routes!(handlers::backup_verify))
        .routes(routes!(handlers::backup_policy_get, handlers::backup_policy_set))
        .routes(routes!(handlers::retained_list))
        .routes(routes!(handlers::retained_purge))
        .routes(routes!(handlers::cluster_switchover))
        .routes(routes!(handlers::cluster_failover))
        .routes(routes!(handlers::cluster_restart))
        .routes(routes!(handlers::cluster_scale))
        .routes(routes!(handlers::cluster_set_params))
        .routes(routes!(handlers::cluster_allow_list))
        .routes(routes!(handlers::cluster_renew_certs))
        .routes(routes!(handlers::repo_list, handlers::repo_create))
        .routes(routes!(handlers::repo_get, handlers::repo_delete))
        .routes(routes!(handlers::audit_list))
        .routes(routes!(handlers::audit_verify))
        .routes(routes!(handlers::master_key_rotate))
        .routes(routes!(handlers::ldap_get, handlers::ldap_set, handlers::ldap_clear))
        .routes(routes!(handlers::operation_list))
        .routes(routes!(handlers::operation_get))
        .routes(routes!(handlers::operation_cancel))
        .routes(routes!(handlers::operation_events))
        .routes(routes!(alerts::alert_list))
        .routes(routes!(alerts::delivery_list))
        .routes(routes!(alerts::rule_list, alerts::rule_create))
        .routes(routes!(alerts::rule_set, alerts::rule_delete))
        .routes(routes!(alerts::channel_list, alerts::channel_create))
        .routes(routes!(alerts::channel_delete))
        .routes(routes!(alerts::channel_test))
        .routes(routes!(alerts::silence_list, alerts::silence_create))
        .routes(routes!(alerts::silence_delete))
        .layer(axum::middleware::from_fn_with_state(app.clone(), context::authenticate));
    let scrape = OpenApiRouter::new()
        .routes(routes!(handlers::prometheus_metrics))
        .layer(axum::middleware::from_fn_with_state(app.clone(), context::authenticate));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(handlers::healthz)).merge(scrape).nest(
        "/api/v1",
        OpenApiRouter::new().routes(routes!(handlers::openapi_json)).routes(routes!(handlers::login)).merge(v1),
    )
}

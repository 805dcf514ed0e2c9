//! The web console: a few static files (HTML, CSS, JavaScript ES modules) compiled into the
//! binary with `include_str!`, so building it needs nothing but cargo and the browser
//! loads nothing from outside the installation.
//!
//! The console has no server side of its own: its pages call the REST API under
//! `/api/v1` with the user's bearer token, like any other client, so RBAC and the audit
//! log see every action it takes. What is served here holds no data and no secret, so it
//! needs no authentication.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles only from
//! this origin, no inline script, no framing) and `Cache-Control: no-cache` (the files
//! are not versioned by name: a browser revalidates, so an upgrade is seen at once).

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Scripts, styles, images and API calls from this origin only; nothing inline; never in a frame.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The files of the console: path under `/console/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../assets/index.html")),
    ("console.css", "text/css; charset=utf-8", include_str!("../assets/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../assets/api.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_str!("../assets/ui.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_str!("../assets/pages.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_str!("../assets/charts.js")),
    ("favicon.svg", "image/svg+xml", include_str!("../assets/favicon.svg")),
];

/// The console's routes: `/` (the page), `/console/` (the same) and `/console/{file}`.
/// Generic over the state so the API's router can merge it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{file}",
            get(|axum::extract::Path(name): axum::extract::Path<String>| async move { file(&name) }),
        )
}

/// One file with its headers, or 404 (a plain text answer: no file name is echoed).
fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, [(CONTENT_SECURITY_POLICY, CSP)], "no such console file\n").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = router::<()>().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = r.into_parts();
        let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_the_policy() {
        for (name, content_type, _) in FILES {
            let (status, headers, body) = get(&format!("/console/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers[CONTENT_TYPE], *content_type, "{name}");
            assert_eq!(headers[CONTENT_SECURITY_POLICY], CSP, "{name}");
            assert_eq!(headers[CACHE_CONTROL], "no-cache", "{name}");
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{name}");
            assert!(!body.is_empty(), "{name}");
        }
        let (status, headers, body) = get("/").await;
        assert_eq!(
            (status, &headers[CONTENT_TYPE]),
            (StatusCode::OK, &HeaderValue::from_static("text/html; charset=utf-8"))
        );
        assert!(body.contains("<script type=\"module\" src=\"/console/app.js\"></script>"), "{body}");
        assert_eq!(get("/console/").await.2, body);
        assert_eq!(get("/console/nope.js").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get("/console/..%2Fapp.js").await.0, StatusCode::NOT_FOUND);
    }

    const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

    /// The policy forbids inline scripts and styles, so none may be written: a page with
    /// one would break in the browser, silently.
    #[test]
    fn no_inline_script_style_or_outside_reference() {
        for (name, _, body) in FILES {
            if name.ends_with(".html") {
                for bad in ["<script>", "style=", "onclick", "onload", "<style"] {
                    assert!(!body.contains(bad), "{name} has an inline `{bad}`");
                }
            }
            // The SVG namespace (of the favicon, and of the charts' createElementNS) is a
            // name, not a request; nothing else may name another origin.
            let body = body.replace(SVG_NAMESPACE, "");
            for bad in ["http://", "https://", "//cdn", "innerHTML"] {
                assert!(!body.contains(bad), "{name} contains `{bad}`");
            }
        }
    }
}

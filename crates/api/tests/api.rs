//! The HTTP API driven in-process (`oneshot`, no socket) over a real SQLite store.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sovdb_app::App;
use sovdb_store::{ClusterRecord, NewOperation, Store};
use sovdb_types::*;
use tower::ServiceExt;

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    /// The application behind the router: tests drive its loops (schedules) directly.
    app: App,
    router: axum::Router,
    token: String,
    /// The installation's master key: tests open stored secrets with it.
    master: sovdb_pki::MasterKey,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = sovdb_store::open(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
    let config = sovdb_app::AppConfig {
        local_hosts_dir: dir.path().join("hosts"),
        agent_exe: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("no-agent-in-these-tests"),
        port_range: 20000..=29999,
        failpoints: sovdb_operations::Failpoints::none(),
        internal_cert_validity: sovdb_app::DEFAULT_INTERNAL_CERT_VALIDITY,
    };
    let app = App::new(store.clone(), config);
    let token = Arc::new(Mutex::new(String::new()));
    let saved = token.clone();
    app.bootstrap(move |t| {
        *saved.lock().unwrap() = t.to_string();
        Ok(())
    })
    .await
    .unwrap()
    .expect("a fresh store bootstraps");
    let master = sovdb_pki::MasterKey::generate();
    app.pki_init(master.clone()).await.unwrap();
    let token = token.lock().unwrap().clone();
    Harness { _dir: dir, store, app: app.clone(), router: sovdb_api::app(app), token, master }
}

struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    body: Value,
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let request_id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("every answer is JSON") };
        Answer { status, request_id, body }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, Some(&self.token.clone()), None).await
    }

    async fn post(&self, uri: &str, body: &str) -> Answer {
        self.call(Method::POST, uri, Some(&self.token.clone()), Some(body)).await
    }

    async fn put(&self, uri: &str, body: &str) -> Answer {
        self.call(Method::PUT, uri, Some(&self.token.clone()), Some(body)).await
    }

    async fn audit_targets(&self) -> Vec<String> {
        let a = self.get("/api/v1/audit").await;
        a.body["items"].as_array().unwrap().iter().map(|r| r["target"].as_str().unwrap().to_string()).collect()
    }
}

fn assert_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
    assert_eq!(a.body["request_id"].as_str(), a.request_id.as_deref(), "the body names the request");
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let h = harness().await;
    let a = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["status"], "ok");
}

#[tokio::test]
async fn api_refuses_missing_bad_and_malformed_tokens() {
    let h = harness().await;
    for token in [None, Some("sovdb_not-a-real-token"), Some("")] {
        let a = h.call(Method::GET, "/api/v1/clusters", token, None).await;
        assert_error(&a, StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let req =
        Request::get("/api/v1/clusters").header("authorization", "Basic YWRtaW46YWRtaW4=").body(Body::empty()).unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer");
    // Denied before any handler ran: nothing was written.
    assert!(!h.audit_targets().await.iter().any(|t| t.starts_with("cluster/")));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let h = harness().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = Request::get("/api/v1/whoami")
            .header("authorization", format!("{scheme} {}", h.token))
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.router.clone().oneshot(req).await.unwrap().status(), StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn unknown_project_answers_not_found() {
    let h = harness().await;
    let req = Request::get("/api/v1/clusters")
        .header("authorization", format!("Bearer {}", h.token))
        .header("x-sovdb-project", "nope")
        .body(Body::empty())
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let a = h.get("/api/v1/whoami").await;
    assert_eq!((a.body["user"].as_str(), a.body["project"].as_str()), (Some("admin"), Some("default")));
}

#[tokio::test]
async fn bodies_with_unknown_fields_or_bad_json_are_refused() {
    let h = harness().await;
    let a = h.post("/api/v1/locations", r#"{"name":"eu","provider":"ssh","region":"eu","colour":"blue"}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(a.body["message"].as_str().unwrap().contains("unknown field `colour`"), "{}", a.body);

    let a = h.post("/api/v1/locations", r#"{"name":"eu","#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_json");

    let a = h.post("/api/v1/locations", r#"{"name":"eu","provider":"carrier-pigeon","region":"eu"}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");

    let req = Request::post("/api/v1/locations")
        .header("authorization", format!("Bearer {}", h.token))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.router.clone().oneshot(req).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let a = h.get("/api/v1/locations?limit=5000").await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = h.get("/api/v1/locations?colour=blue").await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = h.get("/api/v1/locations?page_token=zz").await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");

    assert_eq!(h.get("/api/v1/locations").await.body["items"].as_array().unwrap().len(), 1, "only `local`");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = harness().await;
    assert_error(&h.get("/api/v1/nothing-here").await, StatusCode::NOT_FOUND, "not_found");
    let a = h.call(Method::PUT, "/api/v1/locations", Some(&h.token), Some("{}")).await;
    assert_error(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn location_lifecycle_is_audited_in_the_same_transaction() {
    let h = harness().await;
    let a = h
        .post(
            "/api/v1/locations",
            r#"{"name":"eu-1","provider":"ssh","region":"eu-central","zone":"a","labels":{"jurisdiction":"EU"}}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["labels"]["jurisdiction"], "EU");

    let created_answer = a.body.clone();
    let a = h.post("/api/v1/locations", r#"{"name":"eu-1","provider":"ssh","region":"eu-central"}"#).await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
    let a = h.post("/api/v1/locations", r#"{"name":"EU_1","provider":"ssh","region":"eu-central"}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(a.body["message"].as_str().unwrap().contains("location name"), "{}", a.body);

    let created = created_answer;
    let a = h.get("/api/v1/locations/eu-1").await;
    assert_eq!(a.status, StatusCode::OK);
    // A location without a cluster has no DCS yet.
    let mut read = a.body.clone();
    let dcs = read.as_object_mut().unwrap().remove("dcs");
    assert_eq!(dcs, Some(json!({"status": "none", "members": []})), "{}", a.body);
    assert_eq!(read, created, "a read returns exactly what the create returned, and the DCS");

    // Refused while a cluster lives there.
    let (project, location) = {
        let mut tx = h.store.read().await.unwrap();
        (tx.project_get("default").await.unwrap().unwrap(), tx.location_get("eu-1").await.unwrap().unwrap())
    };
    let cluster = cluster_record(&project, &location, "db", None);
    let mut tx = h.store.write().await.unwrap();
    tx.cluster_create(&cluster).await.unwrap();
    tx.commit().await.unwrap();
    let a = h.call(Method::DELETE, "/api/v1/locations/eu-1", Some(&h.token), None).await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
    let a = h.get("/api/v1/clusters/db").await;
    assert_eq!((a.status, a.body["location"].as_str()), (StatusCode::OK, Some("eu-1")));

    let a = h.call(Method::DELETE, "/api/v1/locations/local", Some(&h.token), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h.call(Method::DELETE, "/api/v1/locations/local", Some(&h.token), None).await;
    assert_error(&a, StatusCode::NOT_FOUND, "not_found");

    // Exactly one record per accepted change, none for refused ones; the chain verifies.
    let targets = h.audit_targets().await;
    assert_eq!(targets.iter().filter(|t| *t == "location/eu-1").count(), 1, "{targets:?}");
    assert_eq!(
        targets.iter().filter(|t| *t == "location/local").count(),
        2,
        "created at bootstrap, deleted now: {targets:?}"
    );
    let records: Vec<sovdb_types::audit::AuditRecord> =
        serde_json::from_value(h.get("/api/v1/audit").await.body["items"].clone()).unwrap();
    assert!(records.iter().all(|r| r.hash_is_valid()));
    assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    let deleted = records.iter().find(|r| r.action == "location.delete").unwrap();
    assert_eq!((deleted.actor.as_str(), deleted.project.as_deref()), ("admin", Some("default")));
}

#[tokio::test]
async fn lists_page_through_every_item_once() {
    let h = harness().await;
    for i in 0..5 {
        let a = h.post("/api/v1/locations", &format!(r#"{{"name":"loc-{i}","provider":"ssh","region":"r"}}"#)).await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut uri = "/api/v1/locations?limit=2".to_string();
    loop {
        let a = h.get(&uri).await;
        names.extend(a.body["items"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()));
        match a.body["next_page_token"].as_str() {
            Some(t) => uri = format!("/api/v1/locations?limit=2&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(names, ["loc-0", "loc-1", "loc-2", "loc-3", "loc-4", "local"]);
}

#[tokio::test]
async fn openapi_document_is_valid_and_describes_every_route() {
    let h = harness().await;
    let a = h.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = oas3::from_json(a.body.to_string()).expect("a well-formed OpenAPI 3.1 document");
    assert!(doc.openapi.starts_with("3."), "{}", doc.openapi);

    // Every $ref points at a schema that exists.
    let schemas = &doc.components.as_ref().unwrap().schemas;
    let mut refs = Vec::new();
    collect_refs(&a.body, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }

    // Every described operation is routed (answers something other than "no such
    // endpoint"), and every route but the public ones demands a token.
    let public = ["/healthz", "/api/v1/openapi.json", "/api/v1/login"];
    let mut operations = 0;
    for (path, item) in doc.paths.as_ref().unwrap() {
        for (method, _) in item.methods() {
            operations += 1;
            let method = method.as_str().to_lowercase();
            let full = path.replace("{name}", "x").replace("{id}", "x").replace("{role}", "viewer");
            let answer = h.call(method.to_uppercase().parse().unwrap(), &full, None, None).await;
            assert_ne!(answer.status, StatusCode::NOT_FOUND, "{method} {full} is described but not routed");
            assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {full}");
            if !public.contains(&full.as_str()) {
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {full} answered without a token");
            }
        }
    }
    assert!(operations >= 10, "only {operations} operations described");
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn operations_are_listed_shown_and_cancelled_with_an_audit_record() {
    let h = harness().await;
    let project = h.store.read().await.unwrap().project_get("default").await.unwrap().unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let op = NewOperation {
            id: OperationId::new(),
            project_id: Some(project.id),
            kind: "cluster.create".into(),
            target: format!("cluster/db-{i}"),
            params: json!({"password": "never-shown"}),
            created_by: "admin".into(),
            created_at: chrono::Utc::now(),
            steps: vec!["allocate".into(), "start".into()],
        };
        ids.push(op.id);
        let mut tx = h.store.write().await.unwrap();
        tx.operation_create(&op).await.unwrap();
        tx.commit().await.unwrap();
    }

    let a = h.get("/api/v1/operations?limit=2").await;
    let listed: Vec<&str> = a.body["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [ids[2].to_string(), ids[1].to_string()], "newest first");
    assert!(a.body["next_page_token"].is_string());
    assert!(!a.body.to_string().contains("never-shown"), "parameters and outputs are not shown");

    let a = h.get(&format!("/api/v1/operations/{}", ids[0])).await;
    assert_eq!((a.status, a.body["state"].as_str()), (StatusCode::OK, Some("queued")));
    assert_eq!(a.body["steps"][1]["name"], "start");

    assert_error(&h.get("/api/v1/operations/not-a-uuid").await, StatusCode::BAD_REQUEST, "invalid_request");
    assert_error(
        &h.get(&format!("/api/v1/operations/{}", OperationId::new())).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let a = h.post(&format!("/api/v1/operations/{}/cancel", ids[0]), "{}").await;
    assert_eq!((a.status, a.body["cancel_requested"].as_bool()), (StatusCode::OK, Some(true)), "{}", a.body);
    assert!(h.audit_targets().await.contains(&format!("operation/{}", ids[0])));

    // A finished operation can't be cancelled.
    let mut tx = h.store.write().await.unwrap();
    let (claimed, fence) = tx.operation_claim("w", chrono::Utc::now(), chrono::Utc::now()).await.unwrap().unwrap();
    let now = chrono::Utc::now();
    let done = sovdb_store::OperationChange {
        state: OperationState::Succeeded,
        error: None,
        next_run_at: now,
        release: true,
        finished_at: Some(now),
    };
    assert!(tx.operation_change(claimed, fence, &done).await.unwrap());
    tx.commit().await.unwrap();
    let a = h.post(&format!("/api/v1/operations/{claimed}/cancel"), "{}").await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
}

/// A ready cluster's row, as a test writes it straight to the store.
fn cluster_record(project: &Project, location: &Location, name: &str, repo: Option<RepoId>) -> ClusterRecord {
    ClusterRecord {
        id: ClusterId::new(),
        project_id: project.id,
        name: name.into(),
        engine: Engine::Postgres,
        version: "15".into(),
        state: ClusterState::Ready,
        location_id: location.id,
        spec: serde_json::to_value(cluster_spec(repo)).unwrap(),
        created_at: chrono::Utc::now(),
    }
}

/// What a test cluster's spec holds; `backup_repo` is the repository it uses.
fn cluster_spec(backup_repo: Option<RepoId>) -> ClusterSpec {
    ClusterSpec {
        replicas: 1,
        sync: false,
        spread: None,
        require_labels: Default::default(),
        database: "app".into(),
        user: "app".into(),
        params: Default::default(),
        pooler: false,
        backup_repo,
        backup_policy: Default::default(),
        allow: None,
    }
}

/// A host of `location` with `status`, written straight to the store (no agent runs here).
async fn insert_host(h: &Harness, name: &str, location: &str, status: HostStatus) {
    let mut tx = h.store.write().await.unwrap();
    let location = tx.location_get(location).await.unwrap().unwrap();
    let host = Host {
        id: HostId::new(),
        name: name.into(),
        location: location.name.clone(),
        address: format!("{name}.test"),
        agent_port: 7450,
        base_dir: "/var/lib/sovdb".into(),
        zone: None,
        labels: Default::default(),
        status,
        status_message: None,
        ssh: None,
        facts: None,
        last_seen_at: None,
        created_at: chrono::Utc::now(),
    };
    tx.host_create(&sovdb_store::HostRecord { host, location_id: location.id, ssh_key_sealed: None }).await.unwrap();
    tx.commit().await.unwrap();
}

/// The parameters an operation was started with (the API does not show them).
async fn params_of(h: &Harness, op: &Value) -> Value {
    let id: OperationId = op["id"].as_str().unwrap().parse().unwrap();
    h.store.read().await.unwrap().operation_run(id).await.unwrap().unwrap().params
}

#[tokio::test]
async fn renewals_on_request_start_one_operation_of_the_caller_per_target() {
    let h = harness().await;
    let (project, local) = {
        let mut tx = h.store.read().await.unwrap();
        (tx.project_get("default").await.unwrap().unwrap(), tx.location_get("local").await.unwrap().unwrap())
    };
    for path in
        ["/api/v1/clusters/nope/renew-certs", "/api/v1/locations/nope/renew-certs", "/api/v1/hosts/nope/renew-certs"]
    {
        assert_error(&h.post(path, "{}").await, StatusCode::NOT_FOUND, "not_found");
    }
    // No etcd yet: nothing to renew.
    assert_error(&h.post("/api/v1/locations/local/renew-certs", "{}").await, StatusCode::CONFLICT, "conflict");
    // An agent that does not answer can't take a certificate.
    insert_host(&h, "gone", "local", HostStatus::Unreachable).await;
    assert_error(&h.post("/api/v1/hosts/gone/renew-certs", "{}").await, StatusCode::CONFLICT, "conflict");

    insert_host(&h, "h1", "local", HostStatus::Ready).await;
    let db = cluster_record(&project, &local, "db", None);
    let mut tx = h.store.write().await.unwrap();
    tx.cluster_create(&db).await.unwrap();
    let host = tx.host_get("h1").await.unwrap().unwrap().host;
    let etcd = sovdb_store::DcsMember {
        location_id: local.id,
        name: "etcd-1".into(),
        host_id: host.id,
        client_port: 20000,
        peer_port: 20001,
        created_at: chrono::Utc::now(),
    };
    assert!(tx.dcs_member_create(&etcd).await.unwrap());
    tx.commit().await.unwrap();
    for (path, kind, target) in [
        ("/api/v1/clusters/db/renew-certs", "cluster.renew-certs", "cluster/db"),
        ("/api/v1/locations/local/renew-certs", "location.renew-certs", "location/local"),
        ("/api/v1/hosts/h1/renew-certs", "host.renew-certs", "host/h1"),
    ] {
        let before = chrono::Utc::now();
        let a = h.call(Method::POST, path, Some(&h.token), None).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{path}: {}", a.body);
        assert_eq!((a.body["kind"].as_str(), a.body["target"].as_str()), (Some(kind), Some(target)), "{}", a.body);
        assert_eq!(a.body["created_by"], "admin", "the caller's, not the bot's: {}", a.body);
        // Every certificate issued until the request: the whole second after it.
        let params = params_of(&h, &a.body).await;
        let issued_before: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(params["issued_before"].clone()).unwrap();
        assert_eq!(issued_before.timestamp_subsec_nanos(), 0, "{params}");
        assert!(issued_before > before && issued_before <= chrono::Utc::now() + chrono::TimeDelta::seconds(1));
        // One at a time: the first has not run yet.
        assert_error(&h.post(path, "{}").await, StatusCode::CONFLICT, "conflict");
        let audit = h.get("/api/v1/audit").await;
        let record = audit.body["items"].as_array().unwrap().iter().rev().find(|r| r["action"] == kind).unwrap();
        assert_eq!((record["target"].as_str(), record["actor"].as_str()), (Some(target), Some("admin")), "{record}");
        assert_eq!(record["params"]["operation"], a.body["id"], "{record}");
    }
}

#[tokio::test]
async fn repos_are_refused_unchecked_listed_and_deleted_without_showing_a_secret() {
    let h = harness().await;
    const KEY_ID: &str = "AKIAKEYID0123456789";
    const SECRET: &str = "wJalrXUtnFEMI-secret-access-key";
    // An s3 repository's body, with `extra`'s fields added or replaced.
    let s3 = |name: &str, extra: Value| {
        let mut body = json!({"name": name, "type": "s3", "endpoint": "s3.example.com:9000", "bucket": "backups",
            "region": "eu-central-1", "access_key_id": KEY_ID, "secret_access_key": SECRET});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body.to_string()
    };
    // Every answer and the whole audit log are searched for secrets at the end.
    let mut seen = Vec::new();

    // An s3 repository is checked through the agent of a ready host of its location before
    // anything is written; no agent runs here and `local` has no host, so the check can't
    // run and the create is refused as unavailable.
    let a = h.post("/api/v1/repos", &s3("offsite", json!({"default": true, "uri_style": "path"}))).await;
    assert_error(&a, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let message = a.body["message"].as_str().unwrap();
    assert!(message.contains("location \"local\" has no ready host to check the S3 storage from"), "{message}");
    seen.push(a.body.to_string());
    assert_eq!(h.get("/api/v1/repos").await.body["items"], json!([]), "nothing written");

    // Two repositories as checked creates record them (crates/sovdb/tests/s3.rs creates
    // them for real, against an S3 server).
    let (project, local) = {
        let mut tx = h.store.read().await.unwrap();
        (tx.project_get("default").await.unwrap().unwrap(), tx.location_get("local").await.unwrap().unwrap())
    };
    let pass = "p".repeat(64);
    let mut tx = h.store.write().await.unwrap();
    let mut id = None;
    for (name, default, secrets) in [
        ("offsite", false, vec![("cipher-pass", pass.as_str()), ("s3-key", KEY_ID), ("s3-key-secret", SECRET)]),
        ("plain", true, vec![("s3-key", KEY_ID), ("s3-key-secret", SECRET)]),
    ] {
        let record = sovdb_store::RepoRecord {
            id: RepoId::new(),
            project_id: project.id,
            name: name.into(),
            location_id: local.id,
            location: local.name.clone(),
            host_id: None,
            host: None,
            kind: RepoType::S3,
            spec: sovdb_store::RepoSpec {
                path: "/sovdb".into(),
                endpoint: Some("s3.example.com:9000".into()),
                bucket: Some("backups".into()),
                region: Some("eu-central-1".into()),
                uri_style: Some(UriStyle::Path),
                ca_pem: None,
            },
            encrypted: secrets.len() == 3,
            is_default: default,
            created_at: chrono::Utc::now(),
        };
        tx.repo_create(&record).await.unwrap();
        let owner = format!("repo/{}", record.id);
        for (secret, value) in secrets {
            let sealed = h.master.seal(value.as_bytes(), format!("secret:{owner}#{secret}").as_bytes());
            tx.secret_put(&owner, secret, &sealed, record.created_at).await.unwrap();
        }
        id.get_or_insert(record.id);
    }
    tx.commit().await.unwrap();
    let id = id.unwrap();
    let owner = format!("repo/{id}");
    let a = h.get("/api/v1/repos/offsite").await;
    seen.push(a.body.to_string());
    assert_eq!(
        (a.body["type"].as_str(), a.body["path"].as_str(), a.body["location"].as_str(), a.body["project"].as_str()),
        (Some("s3"), Some("/sovdb"), Some("local"), Some("default"))
    );
    assert_eq!((a.body["encrypted"].as_bool(), a.body["default"].as_bool()), (Some(true), Some(false)));
    assert_eq!((a.body["uri_style"].as_str(), a.body["host"].clone()), (Some("path"), Value::Null));
    assert_eq!(
        (a.body["endpoint"].as_str(), a.body["bucket"].as_str()),
        (Some("s3.example.com:9000"), Some("backups"))
    );
    assert_eq!(a.body["clusters"], json!([]));
    let a = h.get("/api/v1/repos?limit=1").await;
    seen.push(a.body.to_string());
    assert_eq!(a.body["items"][0]["name"], "offsite");
    let next = a.body["next_page_token"].as_str().expect("a second page");
    let a = h.get(&format!("/api/v1/repos?limit=1&page_token={next}")).await;
    seen.push(a.body.to_string());
    assert_eq!(
        (a.body["items"][0]["name"].as_str(), a.body["items"][0]["default"].as_bool()),
        (Some("plain"), Some(true))
    );

    // Refused: what is wrong and what to do, and nothing written.
    let refused = |body: String, status: StatusCode, code: &'static str, needle: &'static str| {
        let h = &h;
        async move {
            let a = h.post("/api/v1/repos", &body).await;
            assert_error(&a, status, code);
            let message = a.body["message"].as_str().unwrap().to_string();
            assert!(message.contains(needle), "{body}: {message:?} does not say {needle:?}");
            assert!(!message.contains(SECRET) && !message.contains(KEY_ID), "{message}");
            a.body.to_string()
        }
    };
    let bad = StatusCode::BAD_REQUEST;
    seen.push(refused(s3("offsite", json!({})), StatusCode::CONFLICT, "conflict", "already exists").await);
    seen.push(refused(s3("Bad_Name", json!({})), bad, "invalid_request", "repository name").await);
    seen.push(refused(r#"{"name":"r"}"#.into(), bad, "invalid_request", "--type posix").await);
    seen.push(refused(r#"{"name":"r","type":"tape"}"#.into(), bad, "invalid_request", "unknown variant").await);
    seen.push(refused(r#"{"name":"r","type":"posix"}"#.into(), bad, "invalid_request", "needs --path").await);
    let posix = |extra: &str| format!(r#"{{"name":"r","type":"posix","path":"/srv/backups"{extra}}}"#);
    seen.push(refused(posix(r#","bucket":"b""#), bad, "invalid_request", "--bucket is for s3 repositories").await);
    let dotted = r#"{"name":"r","type":"posix","path":"/srv/../etc"}"#.to_string();
    seen.push(refused(dotted, bad, "invalid_request", "plain absolute path").await);
    seen.push(refused(posix(r#","location":"mars""#), bad, "invalid_request", "does not exist").await);
    seen.push(refused(posix(""), bad, "invalid_request", "has no host").await);
    seen.push(refused(s3("r", json!({"host": "h"})), bad, "invalid_request", "--host is for posix").await);
    seen.push(refused(s3("r", json!({"endpoint": "https://s3.example.com"})), bad, "invalid_request", "scheme").await);
    seen.push(refused(s3("r", json!({"bucket": "B"})), bad, "invalid_request", "not a bucket name").await);
    let no_secret = s3("r", json!({"secret_access_key": null}));
    seen.push(refused(no_secret, bad, "invalid_request", "--secret-access-key-stdin").await);
    // The posix host: one that is not ready, one of another location, or several to choose from.
    insert_host(&h, "h1", "local", HostStatus::Unreachable).await;
    seen.push(refused(posix(""), StatusCode::CONFLICT, "conflict", "is unreachable, not ready").await);
    let a = h.post("/api/v1/locations", r#"{"name":"eu-1","provider":"ssh","region":"eu"}"#).await;
    assert_eq!(a.status, StatusCode::CREATED);
    insert_host(&h, "h2", "eu-1", HostStatus::Ready).await;
    seen.push(refused(posix(r#","host":"h2""#), bad, "invalid_request", "is in location \"eu-1\"").await);
    seen.push(refused(posix(r#","host":"nope""#), bad, "invalid_request", "does not exist").await);
    insert_host(&h, "h3", "local", HostStatus::Ready).await;
    seen.push(refused(posix(""), bad, "invalid_request", "with --host").await);
    let names: Vec<String> = h.get("/api/v1/repos").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["offsite", "plain"], "no refused create wrote anything");

    // A posix repository on h2 (written straight to the store: no agent runs here) keeps
    // its directory to itself, and its host and location from being removed.
    let (eu, h2) = {
        let mut tx = h.store.read().await.unwrap();
        (tx.location_get("eu-1").await.unwrap().unwrap(), tx.host_get("h2").await.unwrap().unwrap())
    };
    let mut tx = h.store.write().await.unwrap();
    let on_h2 = sovdb_store::RepoRecord {
        id: RepoId::new(),
        project_id: project.id,
        name: "near".into(),
        location_id: eu.id,
        location: eu.name.clone(),
        host_id: Some(h2.host.id),
        host: Some("h2".into()),
        kind: RepoType::Posix,
        spec: sovdb_store::RepoSpec { path: "/srv/backups".into(), ..Default::default() },
        encrypted: true,
        is_default: false,
        created_at: chrono::Utc::now(),
    };
    tx.repo_create(&on_h2).await.unwrap();
    tx.commit().await.unwrap();
    let inside = r#"{"name":"r","type":"posix","location":"eu-1","path":"/srv/backups/db"}"#.to_string();
    seen.push(
        refused(inside, StatusCode::CONFLICT, "conflict", "repository \"near\" keeps its files in /srv/backups").await,
    );
    let a = h.call(Method::DELETE, "/api/v1/hosts/h2", Some(&h.token), None).await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
    assert!(a.body["message"].as_str().unwrap().contains("keeps 1 backup repositories (near)"), "{}", a.body);
    let a = h.call(Method::DELETE, "/api/v1/locations/eu-1", Some(&h.token), None).await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
    assert!(a.body["message"].as_str().unwrap().contains("1 backup repositories"), "{}", a.body);
    let a = h.call(Method::DELETE, "/api/v1/repos/near", Some(&h.token), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);

    // Delete: refused while a cluster uses the repository; then the record and its
    // secrets go.
    let cluster = |name: &str| cluster_record(&project, &local, name, Some(id));
    let (db, other) = (cluster("db"), cluster("analytics"));
    let mut tx = h.store.write().await.unwrap();
    tx.cluster_create(&db).await.unwrap();
    tx.cluster_create(&other).await.unwrap();
    tx.commit().await.unwrap();
    let a = h.get("/api/v1/repos/offsite").await;
    assert_eq!(a.body["clusters"], json!(["analytics", "db"]));
    let a = h.call(Method::DELETE, "/api/v1/repos/offsite", Some(&h.token), None).await;
    assert_error(&a, StatusCode::CONFLICT, "conflict");
    assert!(a.body["message"].as_str().unwrap().contains("cluster(s) analytics, db"), "{}", a.body);
    let mut tx = h.store.write().await.unwrap();
    tx.cluster_delete(db.id).await.unwrap();
    tx.cluster_delete(other.id).await.unwrap();
    tx.commit().await.unwrap();
    let a = h.call(Method::DELETE, "/api/v1/repos/offsite", Some(&h.token), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_error(&h.get("/api/v1/repos/offsite").await, StatusCode::NOT_FOUND, "not_found");
    let a = h.call(Method::DELETE, "/api/v1/repos/offsite", Some(&h.token), None).await;
    assert_error(&a, StatusCode::NOT_FOUND, "not_found");
    for name in ["cipher-pass", "s3-key", "s3-key-secret"] {
        assert_eq!(h.store.read().await.unwrap().secret_get(&owner, name).await.unwrap(), None, "{name}");
    }

    // One audit record per accepted change (the creates were written straight to the
    // store); no secret anywhere.
    let audit = h.get("/api/v1/audit?target=repo/").await;
    let records = audit.body["items"].as_array().unwrap();
    let actions: Vec<(&str, &str)> =
        records.iter().map(|r| (r["action"].as_str().unwrap(), r["target"].as_str().unwrap())).collect();
    assert_eq!(actions, [("repo.delete", "repo/near"), ("repo.delete", "repo/offsite")]);
    seen.push(h.get("/api/v1/audit").await.body.to_string());
    for text in &seen {
        for secret in [KEY_ID, SECRET, pass.as_str()] {
            assert!(!text.contains(secret), "a secret in {text}");
        }
    }
}

#[tokio::test]
async fn backup_schedules_start_one_operation_per_due_time_and_catch_up_once() {
    let h = harness().await;
    let (project, local) = {
        let mut tx = h.store.read().await.unwrap();
        (tx.project_get("default").await.unwrap().unwrap(), tx.location_get("local").await.unwrap().unwrap())
    };
    let repo = sovdb_store::RepoRecord {
        id: RepoId::new(),
        project_id: project.id,
        name: "r1".into(),
        location_id: local.id,
        location: local.name.clone(),
        host_id: None,
        host: None,
        kind: RepoType::S3,
        spec: sovdb_store::RepoSpec { path: "/sovdb".into(), ..Default::default() },
        encrypted: true,
        is_default: false,
        created_at: chrono::Utc::now(),
    };
    let cluster = |name: &str, repo: Option<RepoId>| cluster_record(&project, &local, name, repo);
    let db = cluster("db", Some(repo.id));
    let mut tx = h.store.write().await.unwrap();
    tx.repo_create(&repo).await.unwrap();
    tx.cluster_create(&db).await.unwrap();
    tx.cluster_create(&cluster("plain", None)).await.unwrap();
    tx.commit().await.unwrap();

    // Bad input is refused with what to do.
    let a = h.put("/api/v1/clusters/db/backup-policy", r#"{"schedule": "0 0 3 * * *"}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(a.body["message"].as_str().unwrap().contains("five fields"), "{}", a.body);
    let a = h.put("/api/v1/clusters/db/backup-policy", r#"{"retention_full": 0}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = h.put("/api/v1/clusters/plain/backup-policy", r#"{"schedule": "0 3 * * *"}"#).await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(a.body["message"].as_str().unwrap().contains("no backup repository"), "{}", a.body);

    // Daily at 03:00, full backups (no full schedule).
    let set_at = chrono::Utc::now();
    let a = h.put("/api/v1/clusters/db/backup-policy", r#"{"schedule": "0 3 * * *", "retention_full": 3}"#).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!((a.body["schedule"].as_str(), a.body["retention_full_kept"].as_u64()), (Some("0 3 * * *"), Some(3)));
    assert!(a.body["next_backup"].as_str().unwrap().contains("T03:00:00"), "{}", a.body);
    assert_eq!(h.get("/api/v1/clusters/db/backup-policy").await.body, a.body);

    let day = chrono::Duration::days(1);
    // What a round started: each operation's kind and backup type, as stored.
    let store = h.store.clone();
    let kinds = |ops: Vec<Operation>| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            for o in ops {
                let run = store.read().await.unwrap().operation_run(o.id).await.unwrap().unwrap();
                out.push(format!("{} {}", o.kind, run.params["type"].as_str().unwrap_or("-")));
            }
            out
        }
    };
    assert!(h.app.schedules_run(set_at).await.unwrap().is_empty(), "a new schedule doesn't run for the past");
    let ops = h.app.schedules_run(set_at + day).await.unwrap();
    assert_eq!((ops[0].created_by.as_str(), ops[0].target.as_str()), ("scheduler", "cluster/db"));
    assert_eq!(kinds(ops).await, ["backup.create full"]);
    assert!(h.app.schedules_run(set_at + day).await.unwrap().is_empty(), "one run per due time");
    // Three days missed (the control plane was down): one run when it is back.
    assert_eq!(kinds(h.app.schedules_run(set_at + day * 4).await.unwrap()).await, ["backup.create full"]);
    assert!(h.app.schedules_run(set_at + day * 4).await.unwrap().is_empty());

    // Hourly incremental, daily full at 03:00, drills at 04:00: at a time when all are due,
    // one full backup and a drill; an hour later only the incremental.
    let a = h
        .put(
            "/api/v1/clusters/db/backup-policy",
            r#"{"schedule": "0 * * * *", "full_schedule": "0 3 * * *", "verify_schedule": "0 4 * * *"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let base = (set_at + day * 6).date_naive().and_hms_opt(4, 30, 0).unwrap().and_utc();
    assert_eq!(kinds(h.app.schedules_run(base).await.unwrap()).await, ["backup.create full", "backup.verify -"]);
    assert_eq!(
        kinds(h.app.schedules_run(base + chrono::Duration::hours(1)).await.unwrap()).await,
        ["backup.create incr"]
    );

    // Every scheduled start is in the audit log, as the scheduler's.
    let audit = h.get("/api/v1/audit").await;
    let scheduled = audit.body["items"].as_array().unwrap().iter().filter(|r| r["actor"] == "scheduler").count();
    assert_eq!(scheduled, 5, "{}", audit.body);
    // Clearing the policy stops the schedules.
    let a = h.put("/api/v1/clusters/db/backup-policy", "{}").await;
    assert_eq!((a.status, a.body["next_backup"].clone()), (StatusCode::OK, Value::Null), "{}", a.body);
    assert!(h.app.schedules_run(base + day * 30).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_are_scoped_to_the_project_and_installation_events_to_admins() {
    let h = harness().await;
    let default = h.store.read().await.unwrap().project_get("default").await.unwrap().unwrap();
    let other = Project { id: ProjectId::new(), name: "other".into(), created_at: chrono::Utc::now() };
    let event = |project: Option<ProjectId>, target: &str, kind: &str| sovdb_store::NewEvent {
        id: EventId::new(),
        at: chrono::Utc::now(),
        project_id: project,
        target: target.into(),
        kind: kind.into(),
        message: format!("{kind} of {target}"),
    };
    let mut tx = h.store.write().await.unwrap();
    tx.project_create(&other).await.unwrap();
    for e in [
        event(Some(default.id), "cluster/a", "created"),
        event(None, "host/h1", "host-unreachable"),
        event(Some(other.id), "cluster/b", "created"),
        event(Some(default.id), "cluster/a", "switchover"),
    ] {
        tx.event_append(&e).await.unwrap();
    }
    tx.commit().await.unwrap();
    let targets = |a: &Answer| -> Vec<String> {
        a.body["items"].as_array().unwrap().iter().map(|e| format!("{}:{}", e["target"], e["kind"])).collect()
    };

    // An admin: the project's events and the installation's, never another project's.
    let a = h.get("/api/v1/events").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        targets(&a),
        ["\"cluster/a\":\"created\"", "\"host/h1\":\"host-unreachable\"", "\"cluster/a\":\"switchover\""]
    );
    let a = h.get("/api/v1/events?cluster=a").await;
    assert_eq!(targets(&a), ["\"cluster/a\":\"created\"", "\"cluster/a\":\"switchover\""]);
    let first = a.body["items"][0]["id"].as_str().unwrap().to_string();
    let a = h.get(&format!("/api/v1/events?cluster=a&after={first}")).await;
    assert_eq!(targets(&a), ["\"cluster/a\":\"switchover\""]);
    let a = h.get("/api/v1/events?since=2099-01-01T00:00:00Z").await;
    assert!(targets(&a).is_empty(), "{}", a.body);
    let a = h.get("/api/v1/events?limit=1").await;
    assert!(a.body["next_page_token"].is_string(), "{}", a.body);
    for bad in ["/api/v1/events?cluster=Not_A_Name", "/api/v1/events?after=nope", "/api/v1/events?colour=red"] {
        assert_eq!(h.get(bad).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // A viewer of the project: its events only; no logs (they may hold SQL text).
    let body = json!({"name": "vera", "password": "a long enough password", "role": "viewer", "project": "default"});
    let a = h.call(Method::POST, "/api/v1/users", Some(&h.token), Some(&body.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let login = json!({"user": "vera", "password": "a long enough password"});
    let a = h.call(Method::POST, "/api/v1/login", None, Some(&login.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let vera = a.body["secret"].as_str().unwrap().to_string();
    let a = h.call(Method::GET, "/api/v1/events", Some(&vera), None).await;
    assert_eq!(targets(&a), ["\"cluster/a\":\"created\"", "\"cluster/a\":\"switchover\""]);
    let a = h.call(Method::GET, "/api/v1/clusters/a/logs", Some(&vera), None).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains("reading a cluster's logs needs the developer role"));
}

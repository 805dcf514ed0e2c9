//! Who may do what, against a real `sovdb serve`: the whole permission matrix (every role
//! in a project, a user of another project and no token at all, against every route of
//! the OpenAPI document), project isolation, and users, logins and tokens through the
//! CLI: passwords, throttling, expiry, revocation, disabling, the last admin.
//!
//! The matrix judges a request "allowed" when the answer is neither 401, nor 403, nor
//! "project not found": a request that got past the permission check may still fail
//! (no such cluster, a name that is not a DNS label), which needs no infrastructure and
//! still proves the check let it through. A wrongly refused or wrongly allowed request
//! fails the test, and so does a route the matrix does not list.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sovdb_test_utils::cli::{cli, cli_input, json as cli_json, ok, ready_server, refused};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

/// A caller of the HTTP API.
struct Api {
    http: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

impl Api {
    fn new(server: &TestServer) -> Api {
        Api { http: server.http_client(), base: server.url.clone() }
    }

    async fn call(
        &self,
        token: Option<&str>,
        project: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let url = if path.starts_with("/healthz") || path.starts_with("/metrics") {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v1{path}", self.base)
        };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(p) = project {
            req = req.header("x-sovdb-project", p);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body, retry_after }
    }

    async fn ok(&self, token: &str, project: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self.call(Some(token), project, method.clone(), path, body.as_ref()).await;
        assert!((200..300).contains(&a.status), "{method} {path}: {} {}", a.status, a.body);
        a.body
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No token needed.
    Public,
    /// Any authenticated caller.
    Anyone,
    Admin,
    Owner,
    Operator,
    Developer,
    Viewer,
}

impl Who {
    /// Whether a caller holding `role` in the project (rank 0 viewer .. 4 admin) may.
    fn allows(self, rank: u8) -> bool {
        match self {
            Who::Public | Who::Anyone => true,
            Who::Admin => rank >= 4,
            Who::Owner => rank >= 3,
            Who::Operator => rank >= 2,
            Who::Developer => rank >= 1,
            Who::Viewer => true,
        }
    }
}

/// One request of the matrix: the route as the OpenAPI document names it, the concrete
/// path and body to send, and who may.
struct Case {
    method: Method,
    route: &'static str,
    path: String,
    body: Option<Value>,
    who: Who,
}

fn case(method: Method, route: &'static str, path: &str, body: Option<Value>, who: Who) -> Case {
    Case { method, route, path: path.to_string(), body, who }
}

/// Every route, with a request each caller can make without changing anything that
/// matters: targets that don't exist, or bodies refused after the permission check.
fn matrix(repo: &str, op: &str) -> Vec<Case> {
    use Method as M;
    use Who::*;
    let bad_name = json!({"name": "Not A Label"});
    vec![
        case(M::GET, "/healthz", "/healthz", None, Public),
        case(M::GET, "/api/v1/openapi.json", "/openapi.json", None, Public),
        // Missing fields: 400 from the body, which a token check would have preceded.
        case(M::POST, "/api/v1/login", "/login", Some(json!({})), Public),
        case(M::GET, "/api/v1/whoami", "/whoami", None, Anyone),
        case(M::GET, "/api/v1/projects", "/projects", None, Anyone),
        case(M::POST, "/api/v1/projects", "/projects", Some(bad_name.clone()), Admin),
        case(M::GET, "/api/v1/users", "/users", None, Owner),
        case(
            M::POST,
            "/api/v1/users",
            "/users",
            Some(json!({"name": "Not A Label", "role": "viewer", "project": "p"})),
            Owner,
        ),
        case(M::POST, "/api/v1/users/{name}/disable", "/users/nobody/disable", None, Admin),
        case(M::POST, "/api/v1/users/{name}/enable", "/users/nobody/enable", None, Admin),
        case(M::DELETE, "/api/v1/users/{name}", "/users/nobody", None, Admin),
        case(
            M::PUT,
            "/api/v1/users/{name}/password",
            "/users/nobody/password",
            Some(json!({"password": "a-new-password-1234"})),
            Admin,
        ),
        case(
            M::POST,
            "/api/v1/users/{name}/roles",
            "/users/nobody/roles",
            Some(json!({"role": "viewer", "project": "p"})),
            Owner,
        ),
        case(M::DELETE, "/api/v1/users/{name}/roles/{role}", "/users/nobody/roles/viewer?project=p", None, Owner),
        case(M::GET, "/api/v1/tokens", "/tokens", None, Anyone),
        case(M::POST, "/api/v1/tokens", "/tokens", Some(json!({"name": "matrix", "expires_in_secs": 60})), Anyone),
        case(M::DELETE, "/api/v1/tokens/{id}", "/tokens/no-such-token", None, Anyone),
        case(M::GET, "/api/v1/locations", "/locations", None, Anyone),
        case(
            M::POST,
            "/api/v1/locations",
            "/locations",
            Some(json!({"name": "Not A Label", "provider": "ssh", "region": "r"})),
            Admin,
        ),
        case(M::GET, "/api/v1/locations/{name}", "/locations/local", None, Anyone),
        case(M::DELETE, "/api/v1/locations/{name}", "/locations/nope", None, Admin),
        case(M::PATCH, "/api/v1/locations/{name}", "/locations/nope", Some(json!({"syslog": "none"})), Admin),
        case(M::POST, "/api/v1/locations/{name}/renew-certs", "/locations/nope/renew-certs", None, Admin),
        case(M::GET, "/api/v1/events", "/events", None, Viewer),
        case(M::GET, "/api/v1/hosts", "/hosts", None, Admin),
        case(
            M::POST,
            "/api/v1/hosts",
            "/hosts",
            Some(json!({"name": "Not A Label", "location": "local", "address": "127.0.0.1"})),
            Admin,
        ),
        case(M::GET, "/api/v1/hosts/{name}", "/hosts/local", None, Admin),
        case(M::DELETE, "/api/v1/hosts/{name}", "/hosts/nope", None, Admin),
        case(M::POST, "/api/v1/hosts/{name}/drain", "/hosts/nope/drain", None, Admin),
        case(M::POST, "/api/v1/hosts/{name}/renew-certs", "/hosts/nope/renew-certs", None, Admin),
        case(M::GET, "/api/v1/clusters", "/clusters", None, Viewer),
        case(
            M::POST,
            "/api/v1/clusters",
            "/clusters",
            Some(json!({"name": "Not A Label", "engine": "postgres"})),
            Developer,
        ),
        case(M::GET, "/api/v1/clusters/{name}", "/clusters/nope", None, Viewer),
        case(M::DELETE, "/api/v1/clusters/{name}", "/clusters/nope", None, Developer),
        case(M::GET, "/api/v1/clusters/{name}/connection", "/clusters/nope/connection", None, Developer),
        case(M::GET, "/api/v1/clusters/{name}/events", "/clusters/nope/events", None, Viewer),
        case(M::GET, "/api/v1/clusters/{name}/metrics", "/clusters/nope/metrics", None, Viewer),
        case(M::GET, "/api/v1/prometheus/targets", "/prometheus/targets", None, Viewer),
        case(M::GET, "/metrics", "/metrics", None, Viewer),
        case(M::GET, "/api/v1/clusters/{name}/logs", "/clusters/nope/logs", None, Developer),
        case(M::POST, "/api/v1/clusters/{name}/backups", "/clusters/nope/backups", Some(json!({})), Operator),
        case(M::GET, "/api/v1/clusters/{name}/backups", "/clusters/nope/backups", None, Viewer),
        case(
            M::POST,
            "/api/v1/clusters/{name}/restore",
            "/clusters/nope/restore",
            Some(json!({"as": "nope2"})),
            Operator,
        ),
        case(M::POST, "/api/v1/clusters/{name}/verify", "/clusters/nope/verify", Some(json!({})), Operator),
        case(M::GET, "/api/v1/clusters/{name}/backup-policy", "/clusters/nope/backup-policy", None, Viewer),
        case(
            M::PUT,
            "/api/v1/clusters/{name}/backup-policy",
            "/clusters/nope/backup-policy",
            Some(json!({})),
            Operator,
        ),
        case(M::GET, "/api/v1/retained-backups", "/retained-backups", None, Viewer),
        case(M::DELETE, "/api/v1/retained-backups/{name}", "/retained-backups/nope", None, Operator),
        case(M::POST, "/api/v1/clusters/{name}/switchover", "/clusters/nope/switchover", Some(json!({})), Operator),
        case(M::POST, "/api/v1/clusters/{name}/failover", "/clusters/nope/failover", Some(json!({})), Operator),
        case(M::POST, "/api/v1/clusters/{name}/restart", "/clusters/nope/restart", Some(json!({})), Operator),
        case(M::POST, "/api/v1/clusters/{name}/scale", "/clusters/nope/scale", Some(json!({"replicas": 1})), Operator),
        case(
            M::POST,
            "/api/v1/clusters/{name}/params",
            "/clusters/nope/params",
            Some(json!({"params": {"work_mem": "8MB"}})),
            Operator,
        ),
        case(
            M::POST,
            "/api/v1/clusters/{name}/allow-list",
            "/clusters/nope/allow-list",
            Some(json!({"allow": ["10.0.0.0/8"]})),
            Operator,
        ),
        case(M::POST, "/api/v1/clusters/{name}/renew-certs", "/clusters/nope/renew-certs", None, Operator),
        case(M::GET, "/api/v1/repos", "/repos", None, Viewer),
        case(M::POST, "/api/v1/repos", "/repos", Some(json!({"name": "Not A Label", "type": "posix"})), Operator),
        case(M::GET, "/api/v1/repos/{name}", &format!("/repos/{repo}"), None, Viewer),
        case(M::DELETE, "/api/v1/repos/{name}", "/repos/nope", None, Operator),
        case(M::GET, "/api/v1/audit", "/audit", None, Admin),
        case(M::GET, "/api/v1/audit/verify", "/audit/verify", None, Admin),
        // For the admin this rotates the key for real: the server goes on with the new one.
        case(M::POST, "/api/v1/admin/master-key/rotate", "/admin/master-key/rotate", None, Admin),
        case(M::GET, "/api/v1/auth/ldap", "/auth/ldap", None, Admin),
        case(
            M::PUT,
            "/api/v1/auth/ldap",
            "/auth/ldap",
            Some(json!({"url": "http://x", "user_dn": "", "group_base": "", "roles": []})),
            Admin,
        ),
        case(M::DELETE, "/api/v1/auth/ldap", "/auth/ldap", None, Admin),
        case(M::GET, "/api/v1/operations", "/operations", None, Viewer),
        case(M::GET, "/api/v1/operations/{id}", &format!("/operations/{op}"), None, Viewer),
        case(M::POST, "/api/v1/operations/{id}/cancel", &format!("/operations/{op}/cancel"), None, Operator),
        case(M::GET, "/api/v1/operations/{id}/events", &format!("/operations/{op}/events"), None, Viewer),
        case(M::GET, "/api/v1/alerts", "/alerts", None, Viewer),
        case(M::GET, "/api/v1/alerts/deliveries", "/alerts/deliveries", None, Viewer),
        case(M::GET, "/api/v1/alerts/rules", "/alerts/rules", None, Viewer),
        case(
            M::POST,
            "/api/v1/alerts/rules",
            "/alerts/rules",
            Some(json!({"name": "Not A Label", "metric": "pg_up", "op": ">", "threshold": 1})),
            Operator,
        ),
        case(M::PATCH, "/api/v1/alerts/rules/{name}", "/alerts/rules/nope", Some(json!({"reset": true})), Operator),
        case(M::DELETE, "/api/v1/alerts/rules/{name}", "/alerts/rules/nope", None, Operator),
        case(M::GET, "/api/v1/alerts/channels", "/alerts/channels", None, Viewer),
        case(
            M::POST,
            "/api/v1/alerts/channels",
            "/alerts/channels",
            Some(json!({"name": "Not A Label", "type": "webhook"})),
            Operator,
        ),
        case(M::DELETE, "/api/v1/alerts/channels/{name}", "/alerts/channels/nope", None, Operator),
        case(M::POST, "/api/v1/alerts/channels/{name}/test", "/alerts/channels/nope/test", None, Operator),
        case(M::GET, "/api/v1/alerts/silences", "/alerts/silences", None, Viewer),
        case(M::POST, "/api/v1/alerts/silences", "/alerts/silences", Some(json!({})), Operator),
        case(M::DELETE, "/api/v1/alerts/silences/{id}", "/alerts/silences/nope", None, Operator),
        // Not a route of its own: deleting a cluster's backups with it needs more.
        case(M::DELETE, "/api/v1/clusters/{name}", "/clusters/nope?delete_backups=true", None, Operator),
    ]
}

/// What an answer says about the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Forbidden,
    ProjectHidden,
    Unauthenticated,
}

fn verdict(a: &Answer) -> Verdict {
    match a.status {
        401 => Verdict::Unauthenticated,
        403 => Verdict::Forbidden,
        404 if a.message().starts_with("project ") => Verdict::ProjectHidden,
        _ => Verdict::Allowed,
    }
}

/// A user with a password, a role in a project and a token, made by the admin.
async fn member(api: &Api, admin: &str, name: &str, role: &str, project: &str) -> String {
    let body = json!({"name": name, "password": format!("{name}-password-1234"), "role": role, "project": project});
    api.ok(admin, None, Method::POST, "/users", Some(body)).await;
    let t = api.ok(admin, None, Method::POST, "/tokens", Some(json!({"user": name, "name": "matrix"}))).await;
    t["secret"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_meets_the_whole_matrix_and_projects_stay_apart() {
    let server = ready_server(Path::new(BIN));
    let api = Api::new(&server);
    let admin = server.token.clone();
    for p in ["p", "q"] {
        api.ok(&admin, None, Method::POST, "/projects", Some(json!({"name": p}))).await;
    }
    // A real resource of project p: a posix repository on the local host.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("repo-p");
    let body =
        json!({"name": "r1", "type": "posix", "path": path.to_str().unwrap(), "host": "local", "location": "local"});
    api.ok(&admin, Some("p"), Method::POST, "/repos", Some(body)).await;
    // An operation of the installation (the local host's add): no project's.
    let ops = api.ok(&admin, None, Method::GET, "/operations", None).await;
    let op = ops["items"][0]["id"].as_str().expect("the local host's operation").to_string();

    let callers = [
        ("admin", admin.clone(), 4u8),
        ("owner", member(&api, &admin, "own", "owner", "p").await, 3),
        ("operator", member(&api, &admin, "ops", "operator", "p").await, 2),
        ("developer", member(&api, &admin, "dev", "developer", "p").await, 1),
        ("viewer", member(&api, &admin, "view", "viewer", "p").await, 0),
    ];
    let other = member(&api, &admin, "other", "owner", "q").await;

    // The matrix covers exactly the routes the server describes.
    let doc = api.call(None, None, Method::GET, "/openapi.json", None).await.body;
    let described: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .filter(|(m, _)| ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()))
        .collect();
    let cases = matrix("r1", &op);
    let covered: BTreeSet<(String, String)> =
        cases.iter().map(|c| (c.method.to_string(), c.route.to_string())).collect();
    assert_eq!(
        covered,
        described,
        "the matrix and the OpenAPI document disagree: missing {:?}, extra {:?}",
        described.difference(&covered).collect::<Vec<_>>(),
        covered.difference(&described).collect::<Vec<_>>()
    );

    let mut failures = Vec::new();
    for c in &cases {
        let public = c.who == Who::Public;
        // No token.
        let a = api.call(None, Some("p"), c.method.clone(), &c.path, c.body.as_ref()).await;
        let want = if public { Verdict::Allowed } else { Verdict::Unauthenticated };
        if verdict(&a) != want {
            failures.push(format!("no token: {} {} -> {} {}", c.method, c.path, a.status, a.body));
        }
        if public {
            continue;
        }
        for (role, token, rank) in &callers {
            let a = api.call(Some(token), Some("p"), c.method.clone(), &c.path, c.body.as_ref()).await;
            let want = if c.who.allows(*rank) { Verdict::Allowed } else { Verdict::Forbidden };
            let got = verdict(&a);
            if got != want {
                failures.push(format!("{role}: {} {} -> {} {} (want {want:?})", c.method, c.path, a.status, a.body));
            } else if got == Verdict::Forbidden {
                // A refusal says what was needed, and what the caller has.
                let m = a.message();
                let names_it = m.contains("needs the admin role")
                    || (m.contains("role in project p") && m.contains(&format!("(you have {role})")));
                if !names_it {
                    failures.push(format!("{role}: {} {}: unclear refusal {m:?}", c.method, c.path));
                }
            }
        }
        // Another project's user, in project p: it is not there for them.
        let a = api.call(Some(&other), Some("p"), c.method.clone(), &c.path, c.body.as_ref()).await;
        if verdict(&a) != Verdict::ProjectHidden {
            failures.push(format!("other project: {} {} -> {} {}", c.method, c.path, a.status, a.body));
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));

    // Every refusal is in the audit log, by whom, on which route: the viewer's refused
    // switchover among them, with the reason and no token.
    let denied = api.ok(&admin, None, Method::GET, "/audit?actor=view&limit=1000", None).await;
    let denied: Vec<&Value> = denied["items"].as_array().unwrap().iter().filter(|r| r["outcome"] == "denied").collect();
    let refused_to_viewer = cases.iter().filter(|c| c.who != Who::Public && !c.who.allows(callers[4].2)).count();
    assert!(refused_to_viewer > 0 && denied.len() >= refused_to_viewer, "{} < {refused_to_viewer}", denied.len());
    let switchover = denied
        .iter()
        .find(|r| r["action"] == "POST /api/v1/clusters/{name}/switchover")
        .expect("the viewer's refused switchover is audited");
    assert_eq!(switchover["params"]["status"], 403, "{switchover:#}");
    assert!(switchover["params"]["reason"].as_str().unwrap().contains("needs the operator role"), "{switchover:#}");
    assert!(!switchover.to_string().contains(&callers[4].1), "no token in the record");

    // In their own project, the other user finds nothing of p's: not its repository, not
    // its members, not its project in a grant.
    let a = api.call(Some(&other), Some("q"), Method::GET, "/repos/r1", None).await;
    assert_eq!((a.status, a.message()), (404, "repository \"r1\" not found"));
    let members = api.ok(&other, Some("q"), Method::GET, "/users", None).await;
    let names: Vec<&str> = members["items"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other"], "only q's members");
    let a = api
        .call(
            Some(&other),
            Some("q"),
            Method::POST,
            "/users/other/roles",
            Some(&json!({"role": "owner", "project": "p"})),
        )
        .await;
    assert_eq!((a.status, a.message()), (404, "project \"p\" not found"));
    // p's owner sees p's members with their roles there only.
    let own = &callers[1].1;
    let members = api.ok(own, Some("p"), Method::GET, "/users", None).await;
    let names: Vec<&str> = members["items"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dev", "ops", "own", "view"]);
    let roles: Vec<&Value> =
        members["items"].as_array().unwrap().iter().flat_map(|u| u["roles"].as_array().unwrap()).collect();
    assert!(roles.iter().all(|r| r["project"] == "p"), "only roles in p: {roles:?}");
    // Another user's token is "not found", even by its ID.
    let dev_tokens = api.ok(&callers[3].1, Some("p"), Method::GET, "/tokens", None).await;
    let dev_token = dev_tokens["items"][0]["id"].as_str().unwrap().to_string();
    let a = api.call(Some(&callers[4].1), Some("p"), Method::DELETE, &format!("/tokens/{dev_token}"), None).await;
    assert_eq!(a.status, 404, "{}", a.body);
    let a = api.call(Some(&callers[4].1), Some("p"), Method::GET, "/tokens?user=dev", None).await;
    assert_eq!((a.status, a.message()), (403, "managing another user's tokens needs the admin role"));
    // A project owner may not make admins, nor users outside a project role.
    let a = api.call(Some(own), Some("p"), Method::POST, "/users/view/roles", Some(&json!({"role": "admin"}))).await;
    assert_eq!((a.status, a.message()), (403, "granting or revoking the admin role needs the admin role"));
    let a = api.call(Some(own), Some("p"), Method::POST, "/users", Some(&json!({"name": "loner"}))).await;
    assert_eq!(a.status, 403, "{}", a.body);
    // ... but may add members to their project.
    let made = api
        .ok(own, Some("p"), Method::POST, "/users", Some(json!({"name": "pete", "role": "viewer", "project": "p"})))
        .await;
    assert_eq!(made["roles"], json!([{"role": "viewer", "project": "p"}]));
    api.ok(own, Some("p"), Method::POST, "/users/pete/roles", Some(json!({"role": "developer", "project": "p"}))).await;
    api.ok(own, Some("p"), Method::DELETE, "/users/pete/roles/viewer?project=p", None).await;
}

/// The CLI as `user`, with the token it saved when logging in (no `--token`).
fn as_saved(server: &TestServer, args: &[&str]) -> std::process::Output {
    cli(server, args)
}

fn admin_args<'a>(server: &'a TestServer, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--token", server.token.as_str()]);
    all
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_hold_roles_and_lose_tokens() {
    let server = TestServer::start(Path::new(BIN));
    let api = Api::new(&server);
    let admin = server.token.clone();

    ok(&server, &["project", "create", "p"]);
    let out = cli_input(
        &server,
        &["user", "create", "ann", "--password-stdin", "--role", "viewer", "-p", "p", "-o", "json"],
        "ann-password-1234\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ann: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (ann["has_password"].as_bool(), &ann["roles"]),
        (Some(true), &json!([{"role": "viewer", "project": "p"}]))
    );
    refused(&server, &["user", "create", "bad", "--password-stdin"], "standard input is empty");
    let out = cli_input(&server, &["user", "create", "shorty", "--password-stdin"], "short\n");
    assert!(!out.status.success() && text(&out.stderr).contains("at least 12 characters"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("\"short\""), "the password is not repeated");
    refused(&server, &["role", "grant", "ann", "admin", "-p", "p"], "admin is an installation-wide role");

    // Log in: the token (and the project named) land in the config file, private, and
    // the CLI uses them.
    let out = cli_input(&server, &["login", "--user", "ann", "--password-stdin", "-p", "p"], "ann-password-1234\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = server.home().join(".config/sovdb/config.toml");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("token = \"sovdb_") && saved.contains("project = \"p\""), "{saved}");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let me = cli_json(&server, &["whoami", "-p", "p"]);
    assert_eq!(me["user"], "ann");
    let tokens = cli_json(&server, &["token", "list"]);
    assert_eq!(tokens[0]["name"], "login");
    let expires: chrono::DateTime<chrono::Utc> = tokens[0]["expires_at"].as_str().unwrap().parse().unwrap();
    let hours = (expires - chrono::Utc::now()).num_minutes();
    assert!((11 * 60..=12 * 60).contains(&hours), "a login token lives 12 h, this one {hours} min");
    let listed = serde_json::to_string(&tokens).unwrap();
    assert!(!listed.contains("sovdb_") && !listed.contains("sha256"), "no secret in a list: {listed}");

    // A viewer reads, and every change is refused, saying what it needs.
    ok(&server, &["cluster", "list", "-p", "p"]);
    ok(&server, &["location", "list", "-p", "p"]);
    for (args, needs) in [
        (
            vec!["cluster", "create", "c1", "-p", "p"],
            "creating a cluster needs the developer role in project p (you have viewer)",
        ),
        (
            vec!["cluster", "connect", "c1", "-p", "p"],
            "reading a cluster's connection and password needs the developer role",
        ),
        (vec!["cluster", "delete", "c1", "-p", "p"], "deleting a cluster needs the developer role"),
        (
            vec!["cluster", "switchover", "c1", "-p", "p"],
            "switching over a cluster needs the operator role in project p (you have viewer)",
        ),
        (
            vec!["location", "create", "l1", "--provider", "ssh", "--region", "r", "-p", "p"],
            "creating a location needs the admin role",
        ),
        (vec!["user", "list", "-p", "p"], "listing the project's users needs the owner role"),
        (
            vec!["role", "grant", "ann", "owner", "-p", "p"],
            "managing the project's users and roles needs the owner role",
        ),
        (vec!["audit", "list", "-p", "p"], "reading the audit log needs the admin role"),
    ] {
        refused(&server, &args, needs);
    }
    // In `default` ann holds no role: it is not there for her.
    refused(&server, &["cluster", "list", "-p", "default"], "project \"default\" not found");

    // Roles: granted, then revoked; the last admin keeps admin and can't be disabled.
    ok(&server, &admin_args(&server, &["role", "grant", "ann", "developer", "-p", "p"]));
    let me = cli_json(&server, &["whoami", "-p", "p"]);
    assert_eq!(me["roles"].as_array().unwrap().len(), 2, "{me}");
    ok(&server, &admin_args(&server, &["role", "revoke", "ann", "developer", "-p", "p"]));
    refused(&server, &admin_args(&server, &["role", "revoke", "ann", "developer", "-p", "p"]), "not found");
    refused(&server, &admin_args(&server, &["role", "revoke", "admin", "admin"]), "last enabled admin");
    refused(&server, &admin_args(&server, &["user", "disable", "admin"]), "last enabled admin");
    let users = cli_json(&server, &admin_args(&server, &["user", "list"]));
    assert_eq!(users.as_array().unwrap().len(), 2, "{users}");

    // Tokens: made with a short life they expire; revoked they stop at once.
    let out = cli(&server, &["token", "create", "--name", "brief", "--expires", "2s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let brief = text(&out.stdout).trim().to_string();
    assert!(brief.starts_with("sovdb_"));
    let a = api.call(Some(&brief), Some("p"), Method::GET, "/whoami", None).await;
    assert_eq!(a.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = api.call(Some(&brief), Some("p"), Method::GET, "/whoami", None).await;
    assert_eq!((a.status, a.message()), (401, "the bearer token is invalid, expired or revoked"));
    let ci = ok(&server, &["token", "create", "--name", "ci"]).trim().to_string();
    assert_eq!(api.call(Some(&ci), Some("p"), Method::GET, "/whoami", None).await.status, 200);
    ok(&server, &["token", "revoke", "ci"]);
    let a = api.call(Some(&ci), Some("p"), Method::GET, "/whoami", None).await;
    assert_eq!((a.status, a.message()), (401, "the bearer token is invalid, expired or revoked"));
    refused(&server, &["token", "revoke", "ci"], "token \"ci\" not found");
    refused(&server, &["token", "create", "--user", "admin"], "managing another user's tokens needs the admin role");
    let for_ann = ok(&server, &admin_args(&server, &["token", "create", "--user", "ann", "--expires", "never"]));
    assert!(for_ann.trim().starts_with("sovdb_"));

    // Wrong passwords and unknown users get the same answer; both are audited, without
    // the password.
    for (user, password) in [("ann", "not-the-password"), ("nobody", "whatever-it-is")] {
        let out = cli_input(&server, &["login", "--user", user, "--password-stdin", "--print-token"], password);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("wrong user name or password"), "{}", text(&out.stderr));
    }
    let out = cli_input(&server, &["login", "--user", "ann", "--password-stdin", "--print-token"], "ann-password-1234");
    assert!(out.status.success() && text(&out.stdout).trim().starts_with("sovdb_"), "{}", text(&out.stderr));

    // Disabling a user stops their tokens at once, and their logins.
    ok(&server, &admin_args(&server, &["user", "disable", "ann"]));
    let out = as_saved(&server, &["whoami", "-p", "p"]);
    assert!(text(&out.stderr).contains("user \"ann\" is disabled"), "{}", text(&out.stderr));
    let out = cli_input(&server, &["login", "--user", "ann", "--password-stdin", "--print-token"], "ann-password-1234");
    assert!(text(&out.stderr).contains("user \"ann\" is disabled"), "{}", text(&out.stderr));
    ok(&server, &admin_args(&server, &["user", "enable", "ann"]));
    assert_eq!(cli_json(&server, &["whoami", "-p", "p"])["user"], "ann");

    let audit = api.ok(&admin, None, Method::GET, "/audit?target=user/&limit=1000", None).await;
    let records = audit["items"].as_array().unwrap();
    let logins: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["action"] == "auth.login")
        .map(|r| {
            (
                r["actor"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["params"]["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    for want in [
        ("ann", "success", "-"),
        ("ann", "failure", "wrong password"),
        ("nobody", "failure", "unknown user"),
        ("ann", "failure", "user disabled"),
    ] {
        assert!(logins.contains(&want), "{want:?} not in {logins:?}");
    }
    assert!(
        records.iter().any(|r| r["action"] == "role.grant") && records.iter().any(|r| r["action"] == "user.disable")
    );
    let everything =
        serde_json::to_string(&api.ok(&admin, None, Method::GET, "/audit?limit=1000", None).await).unwrap();
    for secret in ["ann-password-1234", "not-the-password", "whatever-it-is", brief.as_str(), ci.as_str()] {
        assert!(!everything.contains(secret), "a secret is in the audit log");
    }
    assert!(!server.log().contains("ann-password-1234"), "a password is in the server log");

    // Throttling: after 5 failures for one user, even the right password waits.
    let bob = json!({"name": "bob", "password": "bob-password-1234", "role": "viewer", "project": "p"});
    api.ok(&admin, None, Method::POST, "/users", Some(bob)).await;
    for _ in 0..5 {
        let a = api
            .call(None, None, Method::POST, "/login", Some(&json!({"user": "bob", "password": "guess-guess-guess"})))
            .await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let a = api
        .call(None, None, Method::POST, "/login", Some(&json!({"user": "bob", "password": "bob-password-1234"})))
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["code"], "too_many_requests");
    assert!(a.message().starts_with("too many failed logins for user \"bob\": try again in "), "{}", a.message());
    let wait: u64 = a.retry_after.as_deref().expect("a Retry-After header").parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let out = cli_input(&server, &["login", "--user", "bob", "--password-stdin", "--print-token"], "bob-password-1234");
    assert!(text(&out.stderr).contains("too many failed logins"), "{}", text(&out.stderr));
    // Other users are not held up by bob's lock.
    let a = api
        .call(None, None, Method::POST, "/login", Some(&json!({"user": "ann", "password": "ann-password-1234"})))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_change_their_passwords_and_admins_set_them_and_delete_users() {
    let server = TestServer::start(Path::new(BIN));
    let api = Api::new(&server);
    ok(&server, &["project", "create", "p"]);
    for name in ["ann", "bob"] {
        let args = ["user", "create", name, "--password-stdin", "--role", "viewer", "-p", "p"];
        let out = cli_input(&server, &args, &format!("{name}-password-1234\n"));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let login = |password: &str| {
        let out = cli_input(&server, &["login", "--user", "ann", "--password-stdin", "--print-token"], password);
        out.status.success().then(|| text(&out.stdout).trim().to_string())
    };
    let whoami = |token: String| {
        let api = &api;
        async move { api.call(Some(&token), Some("p"), Method::GET, "/whoami", None).await.status }
    };
    // Two password logins of ann's, and an API token she made.
    let first = login("ann-password-1234").expect("ann logs in");
    let second = login("ann-password-1234").expect("ann logs in again");
    let ci = ok(&server, &["token", "create", "--name", "ci", "-p", "p", "--token", &first]).trim().to_string();
    let passwd = |token: &str, name: Option<&str>, input: &str| {
        let mut args = vec!["user", "passwd"];
        args.extend(name);
        args.extend(["--password-stdin", "-p", "p", "--token", token]);
        cli_input(&server, &args, input)
    };

    // Her own: the current password is needed, and right; the new one long enough.
    for (input, says) in [
        ("ann-new-password-5678\n", "write your current password, then the new one"),
        ("not-the-password\nann-new-password-5678\n", "the current password is wrong"),
        ("ann-password-1234\nshort\n", "at least 12 characters"),
    ] {
        let out = passwd(&first, None, input);
        assert!(!out.status.success() && text(&out.stderr).contains(says), "{input:?}: {}", text(&out.stderr));
    }
    let out = passwd(&first, None, "ann-password-1234\nann-new-password-5678\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the password of ann is changed"), "{}", text(&out.stderr));
    // Her other password login ended; the one she changed it with and her API token work.
    assert_eq!(whoami(first.clone()).await, 200);
    assert_eq!(whoami(second.clone()).await, 401);
    assert_eq!(whoami(ci.clone()).await, 200);
    assert!(login("ann-password-1234").is_none(), "the old password no longer logs in");
    assert!(login("ann-new-password-5678").is_some(), "the new one does");

    // Another user's password: admins only, without the current one.
    let out = passwd(&first, Some("bob"), "bob-new-password-1234\n");
    assert!(
        text(&out.stderr).contains("setting another user's password needs the admin role"),
        "{}",
        text(&out.stderr)
    );
    let out = passwd(&server.token, Some("ann"), "ann-reset-password-9999\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(whoami(first.clone()).await, 401, "a reset ends every password login of hers");
    assert_eq!(whoami(ci.clone()).await, 200, "API tokens stay");
    assert!(login("ann-reset-password-9999").is_some());
    let out = passwd(&server.token, Some("nobody"), "some-password-12345\n");
    assert!(text(&out.stderr).contains("user \"nobody\" not found"), "{}", text(&out.stderr));

    // Audited, the refusal too, and no password anywhere in the records.
    let audit = api.ok(&server.token, None, Method::GET, "/audit?target=user/ann&limit=1000", None).await;
    let changes: Vec<(String, Value)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "user.password")
        .map(|r| (r["outcome"].as_str().unwrap().to_string(), r["params"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("failure".to_string(), json!({"reason": "wrong current password"})),
            ("success".to_string(), json!({"reset": false, "logins_revoked": 1})),
            ("success".to_string(), json!({"reset": true, "logins_revoked": 2})),
        ],
        "{audit:#}"
    );
    let all = audit.to_string();
    assert!(!all.contains("new-password") && !all.contains("reset-password"), "{all}");

    // Deleting a user: admins only, not yourself; their tokens stop at once, their
    // records stay, and the name can be used again.
    refused(&server, &["user", "delete", "bob", "-p", "p", "--token", &ci], "deleting a user needs the admin role");
    refused(&server, &admin_args(&server, &["user", "delete", "admin"]), "you can't delete yourself");
    ok(&server, &admin_args(&server, &["user", "delete", "ann"]));
    assert_eq!(whoami(ci.clone()).await, 401, "her tokens went with her");
    assert!(login("ann-reset-password-9999").is_none());
    refused(&server, &admin_args(&server, &["user", "delete", "ann"]), "user \"ann\" not found");
    let audit = api.ok(&server.token, None, Method::GET, "/audit?target=user/ann&limit=1000", None).await;
    let deleted = audit["items"].as_array().unwrap().iter().find(|r| r["action"] == "user.delete").cloned();
    assert_eq!(deleted.map(|r| r["params"].clone()), Some(json!({"roles": [{"role": "viewer", "project": "p"}]})));
    let out = cli_input(
        &server,
        &admin_args(&server, &["user", "create", "ann", "--password-stdin", "--role", "viewer", "-p", "p"]),
        "ann-again-password-1234\n",
    );
    assert!(out.status.success(), "the name is free again: {}", text(&out.stderr));
}

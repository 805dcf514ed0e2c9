//! The store conformance suite: what every [`Store`](crate::Store) implementation must do.
//!
//! Each case gets the URL of a fresh, empty store and opens it itself (so cases can also
//! close and reopen). Backends instantiate the suite with [`run`]; see
//! `tests/conformance_*.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sovdb_types::audit::{AuditEntry, AuditHead, Outcome, GENESIS_HASH};
use sovdb_types::*;

use crate::{
    AlertChannelRecord, AlertRecord, AlertRuleRecord, AlertRuleSettingsRecord, AlertSilenceRecord, AuditFilter,
    ClusterRecord, DcsMember, DeliveryRecord, EventFilter, HostRecord, MemberRecord, MetricRow, MetricTable, NewEvent,
    NewOperation, OperationChange, PortAllocation, RepoRecord, RepoSpec, RetainedRecord, StepChange, Store, StoreError,
};

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A case: given a fresh store's URL, checks one behaviour.
type Case = fn(String) -> CaseFuture;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("projects_round_trip_and_names_are_unique", |u| Box::pin(projects_round_trip_and_names_are_unique(u))),
    ("users_roles_and_tokens", |u| Box::pin(users_roles_and_tokens(u))),
    ("users_list_disable_passwords_and_admins", |u| Box::pin(users_list_disable_passwords_and_admins(u))),
    ("tokens_list_find_and_revoke", |u| Box::pin(tokens_list_find_and_revoke(u))),
    ("locations_create_get_delete", |u| Box::pin(locations_create_get_delete(u))),
    ("pagination_returns_every_item_once", |u| Box::pin(pagination_returns_every_item_once(u))),
    ("clusters_are_scoped_by_project", |u| Box::pin(clusters_are_scoped_by_project(u))),
    ("dropped_transaction_writes_nothing", |u| Box::pin(dropped_transaction_writes_nothing(u))),
    ("reads_do_not_wait_for_writers", |u| Box::pin(reads_do_not_wait_for_writers(u))),
    ("audit_chain_links_and_filters", |u| Box::pin(audit_chain_links_and_filters(u))),
    ("concurrent_audit_appends_form_one_chain", |u| Box::pin(concurrent_audit_appends_form_one_chain(u))),
    ("reopen_keeps_everything", |u| Box::pin(reopen_keeps_everything(u))),
    ("operations_are_claimed_one_per_target_and_fenced", |u| {
        Box::pin(operations_are_claimed_one_per_target_and_fenced(u))
    }),
    ("step_progress_and_first_start_survive_retries", |u| Box::pin(step_progress_and_first_start_survive_retries(u))),
    ("operations_list_newest_first_with_steps", |u| Box::pin(operations_list_newest_first_with_steps(u))),
    ("concurrent_claims_take_each_operation_once", |u| Box::pin(concurrent_claims_take_each_operation_once(u))),
    ("hosts_round_trip_status_and_heartbeats", |u| Box::pin(hosts_round_trip_status_and_heartbeats(u))),
    ("cluster_members_ports_and_secrets", |u| Box::pin(cluster_members_ports_and_secrets(u))),
    ("dcs_members_and_events", |u| Box::pin(dcs_members_and_events(u))),
    ("repos_round_trip_with_one_default_per_location", |u| Box::pin(repos_round_trip_with_one_default_per_location(u))),
    ("retained_backups_of_deleted_clusters", |u| Box::pin(retained_backups_of_deleted_clusters(u))),
    ("metrics_insert_list_prune_and_cursors", |u| Box::pin(metrics_insert_list_prune_and_cursors(u))),
    ("alerts_rules_channels_silences_and_deliveries", |u| Box::pin(alerts_rules_channels_silences_and_deliveries(u))),
    ("meta_swap_lets_one_writer_win", |u| Box::pin(meta_swap_lets_one_writer_win(u))),
    ("audit_head_follows_every_append", |u| Box::pin(audit_head_follows_every_append(u))),
    ("sealed_values_can_be_listed_and_resealed", |u| Box::pin(sealed_values_can_be_listed_and_resealed(u))),
    ("a_caller_gone_while_a_transaction_starts_strands_nothing", |u| {
        Box::pin(a_caller_gone_while_a_transaction_starts_strands_nothing(u))
    }),
];

/// Runs every case, each on a store at a fresh URL from `fresh_url`.
pub async fn run<F, Fut>(fresh_url: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = String>,
{
    for (name, case) in CASES {
        eprintln!("store conformance: {name}");
        let url = fresh_url(name).await;
        case(url).await;
    }
}

async fn open(url: &str) -> Arc<dyn Store> {
    crate::open(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Millisecond precision: what the store keeps.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn project(name: &str) -> Project {
    Project { id: ProjectId::new(), name: name.into(), created_at: now() }
}

fn location(name: &str) -> Location {
    Location {
        id: LocationId::new(),
        name: name.into(),
        provider: Provider::Ssh,
        region: "eu-central".into(),
        zone: Some("a".into()),
        labels: [("jurisdiction".to_string(), "EU".to_string())].into(),
        created_at: now(),
    }
}

fn entry(actor: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: now(),
        actor: actor.into(),
        project: Some("default".into()),
        source: Some("127.0.0.1".into()),
        action: "thing.create".into(),
        target: target.into(),
        params: serde_json::json!({"k": "v"}),
        outcome: Outcome::Success,
        request_id: None,
    }
}

async fn projects_round_trip_and_names_are_unique(url: String) {
    let store = open(&url).await;
    let p = project("alpha");
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.project_get("alpha").await.unwrap(), Some(p));
    assert_eq!(tx.project_get("beta").await.unwrap(), None);
    drop(tx);

    let mut tx = store.write().await.unwrap();
    let err = tx.project_create(&project("alpha")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

async fn users_roles_and_tokens(url: String) {
    let store = open(&url).await;
    let p = project("alpha");
    let u = User { id: UserId::new(), name: "ann".into(), disabled: false, created_at: now() };
    let admin = RoleBinding { user_id: u.id, role: Role::Admin, project_id: None };
    let viewer = RoleBinding { user_id: u.id, role: Role::Viewer, project_id: Some(p.id) };
    let t = TokenRecord {
        id: TokenId::new(),
        user_id: u.id,
        name: "ci".into(),
        secret_sha256: "ab".repeat(32),
        created_at: now(),
        expires_at: Some(now() + chrono::Duration::days(1)),
        revoked: false,
    };
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    tx.user_create(&u).await.unwrap();
    tx.role_binding_create(&admin).await.unwrap();
    tx.role_binding_create(&viewer).await.unwrap();
    tx.token_create(&t).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.user_get(u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(tx.user_get(UserId::new()).await.unwrap(), None);
    let roles = tx.role_binding_list(u.id).await.unwrap();
    assert_eq!(roles.len(), 2);
    assert!(roles.contains(&admin) && roles.contains(&viewer), "{roles:?}");
    assert_eq!(tx.token_get_by_secret(&t.secret_sha256).await.unwrap(), Some(t.clone()));
    assert_eq!(tx.token_get_by_secret(&"cd".repeat(32)).await.unwrap(), None);
    drop(tx);

    let mut tx = store.write().await.unwrap();
    let err = tx.role_binding_create(&admin).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "the same binding twice: {err:?}");
}

fn user(name: &str) -> User {
    User { id: UserId::new(), name: name.into(), disabled: false, created_at: now() }
}

fn token(user: UserId, name: &str) -> TokenRecord {
    TokenRecord {
        id: TokenId::new(),
        user_id: user,
        name: name.into(),
        secret_sha256: hex_of(TokenId::new().to_string()),
        created_at: now(),
        expires_at: None,
        revoked: false,
    }
}

/// 64 hex digits derived from `s` (a stand-in for a token's SHA-256; unique per input).
fn hex_of(s: String) -> String {
    let digits: String = s.chars().filter(char::is_ascii_hexdigit).collect();
    format!("{digits:0>64}")
}

async fn users_list_disable_passwords_and_admins(url: String) {
    let store = open(&url).await;
    let (a, b) = (project("alpha"), project("beta"));
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    let mut tx = store.write().await.unwrap();
    tx.project_create(&a).await.unwrap();
    tx.project_create(&b).await.unwrap();
    for u in [&ann, &bob, &cat] {
        tx.user_create(u).await.unwrap();
    }
    tx.role_binding_create(&RoleBinding { user_id: ann.id, role: Role::Admin, project_id: None }).await.unwrap();
    tx.role_binding_create(&RoleBinding { user_id: bob.id, role: Role::Viewer, project_id: Some(a.id) }).await.unwrap();
    tx.role_binding_create(&RoleBinding { user_id: bob.id, role: Role::Owner, project_id: Some(a.id) }).await.unwrap();
    tx.role_binding_create(&RoleBinding { user_id: cat.id, role: Role::Viewer, project_id: Some(b.id) }).await.unwrap();
    assert!(tx.user_password_set(bob.id, Some("$argon2id$v=19$stand-in")).await.unwrap());
    assert!(!tx.user_password_set(UserId::new(), Some("x")).await.unwrap(), "no such user");
    tx.commit().await.unwrap();
    // On its own transaction: a failed statement spoils a PostgreSQL transaction.
    let mut tx = store.write().await.unwrap();
    assert!(matches!(tx.user_create(&user("ann")).await, Err(StoreError::Conflict(_))), "names are unique");
    drop(tx);

    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.project_get_by_id(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(tx.project_get_by_id(ProjectId::new()).await.unwrap(), None);
    assert_eq!(tx.user_get_by_name("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(tx.user_get_by_name("dan").await.unwrap(), None);
    assert_eq!(tx.user_password_get(bob.id).await.unwrap().as_deref(), Some("$argon2id$v=19$stand-in"));
    assert_eq!(tx.user_password_get(ann.id).await.unwrap(), None, "a user without a password");
    let names = |p: &Page<User>| p.items.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
    let all = tx.user_list(None, &PageRequest::first(10)).await.unwrap();
    assert_eq!(names(&all), ["ann", "bob", "cat"]);
    let first = tx.user_list(None, &PageRequest::first(2)).await.unwrap();
    assert_eq!(names(&first), ["ann", "bob"]);
    let rest = PageParams { limit: Some(2), page_token: first.next_page_token.clone() }.resolve().unwrap();
    assert_eq!(names(&tx.user_list(None, &rest).await.unwrap()), ["cat"]);
    let in_a = tx.user_list(Some(a.id), &PageRequest::first(10)).await.unwrap();
    assert_eq!(names(&in_a), ["bob"], "one user with two roles in alpha is listed once");
    assert_eq!(names(&tx.user_list(Some(b.id), &PageRequest::first(10)).await.unwrap()), ["cat"]);
    assert_eq!(tx.role_binding_count_admins().await.unwrap(), 1);
    drop(tx);

    let mut tx = store.write().await.unwrap();
    assert!(tx.user_set_disabled(ann.id, true).await.unwrap());
    assert!(!tx.user_set_disabled(UserId::new(), true).await.unwrap());
    assert_eq!(tx.role_binding_count_admins().await.unwrap(), 0, "a disabled admin does not count");
    let viewer = RoleBinding { user_id: bob.id, role: Role::Viewer, project_id: Some(a.id) };
    assert!(tx.role_binding_delete(&viewer).await.unwrap());
    assert!(!tx.role_binding_delete(&viewer).await.unwrap(), "a second revoke finds nothing");
    let elsewhere = RoleBinding { user_id: bob.id, role: Role::Owner, project_id: Some(b.id) };
    assert!(!tx.role_binding_delete(&elsewhere).await.unwrap(), "the scope is part of the binding");
    assert!(tx.user_password_set(bob.id, None).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    assert!(tx.user_get(ann.id).await.unwrap().unwrap().disabled);
    assert_eq!(
        tx.role_binding_list(bob.id).await.unwrap(),
        [RoleBinding { user_id: bob.id, role: Role::Owner, project_id: Some(a.id) }]
    );
    assert_eq!(tx.user_password_get(bob.id).await.unwrap(), None);
    drop(tx);

    // Deleting a user takes their bindings and tokens with them; the name is free again.
    let mut tx = store.write().await.unwrap();
    let token = TokenRecord {
        id: TokenId::new(),
        user_id: bob.id,
        name: "ci".into(),
        secret_sha256: "ab".repeat(32),
        created_at: Utc::now(),
        expires_at: None,
        revoked: false,
    };
    tx.token_create(&token).await.unwrap();
    assert!(tx.user_delete(bob.id).await.unwrap());
    assert!(!tx.user_delete(bob.id).await.unwrap(), "a second delete finds nothing");
    tx.commit().await.unwrap();
    let mut tx = store.read().await.unwrap();
    assert!(tx.user_get_by_name("bob").await.unwrap().is_none());
    assert!(tx.role_binding_list(bob.id).await.unwrap().is_empty());
    assert!(tx.token_get(token.id).await.unwrap().is_none());
    assert!(tx.user_get(ann.id).await.unwrap().is_some(), "others stay");
}

async fn tokens_list_find_and_revoke(url: String) {
    let store = open(&url).await;
    let (ann, bob) = (user("ann"), user("bob"));
    let mut tx = store.write().await.unwrap();
    tx.user_create(&ann).await.unwrap();
    tx.user_create(&bob).await.unwrap();
    let mut mine = Vec::new();
    for name in ["login", "ci", "login"] {
        let t = token(ann.id, name);
        tx.token_create(&t).await.unwrap();
        mine.push(t);
    }
    let theirs = token(bob.id, "login");
    tx.token_create(&theirs).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.token_get(mine[1].id).await.unwrap(), Some(mine[1].clone()));
    assert_eq!(tx.token_get(TokenId::new()).await.unwrap(), None);
    let all = tx.token_list(ann.id, &PageRequest::first(10)).await.unwrap();
    assert_eq!(all.items, mine, "oldest first, only the user's");
    let first = tx.token_list(ann.id, &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items, mine[..2]);
    let rest = PageParams { limit: Some(2), page_token: first.next_page_token.clone() }.resolve().unwrap();
    assert_eq!(tx.token_list(ann.id, &rest).await.unwrap().items, mine[2..]);
    assert_eq!(tx.token_find(ann.id, "login").await.unwrap(), [mine[0].clone(), mine[2].clone()]);
    assert_eq!(tx.token_find(ann.id, "nope").await.unwrap(), []);
    assert!(tx.token_revoke(mine[0].id).await.unwrap());
    assert!(!tx.token_revoke(TokenId::new()).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    assert!(tx.token_get(mine[0].id).await.unwrap().unwrap().revoked);
    assert!(tx.token_get_by_secret(&mine[0].secret_sha256).await.unwrap().unwrap().revoked);
    assert!(!tx.token_get(mine[2].id).await.unwrap().unwrap().revoked, "only that token");
    assert!(!tx.token_get(theirs.id).await.unwrap().unwrap().revoked);
}

async fn locations_create_get_delete(url: String) {
    let store = open(&url).await;
    let l = location("eu-1");
    let mut tx = store.write().await.unwrap();
    tx.location_create(&l).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.location_get("eu-1").await.unwrap(), Some(l.clone()));
    assert!(matches!(tx.location_create(&location("eu-1")).await, Err(StoreError::Conflict(_))));
    drop(tx);

    let mut tx = store.write().await.unwrap();
    assert!(tx.location_delete(l.id).await.unwrap());
    assert!(!tx.location_delete(l.id).await.unwrap(), "a second delete finds nothing");
    tx.commit().await.unwrap();
    assert_eq!(store.read().await.unwrap().location_get("eu-1").await.unwrap(), None);
}

async fn pagination_returns_every_item_once(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    let mut names: Vec<String> = (0..7).map(|i| format!("loc-{i}")).collect();
    names.reverse(); // inserted out of order; pages come back sorted
    for n in &names {
        tx.location_create(&location(n)).await.unwrap();
    }
    tx.commit().await.unwrap();
    names.sort();

    let mut seen = Vec::new();
    let mut req = PageRequest::first(3);
    let mut pages = 0;
    loop {
        let page = store.read().await.unwrap().location_list(&req).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|l| l.name.clone()));
        match page.next_page_token {
            Some(t) => req = PageParams { limit: Some(3), page_token: Some(t) }.resolve().unwrap(),
            None => break,
        }
    }
    assert_eq!(seen, names);
    assert_eq!(pages, 3);

    let all = store.read().await.unwrap().location_list(&PageRequest::first(7)).await.unwrap();
    assert_eq!(all.items.len(), 7);
    assert_eq!(all.next_page_token, None, "an exactly full page is the last one");
}

/// A new cluster record, `creating`.
fn cluster(p: &Project, l: &Location, name: &str) -> ClusterRecord {
    ClusterRecord {
        id: ClusterId::new(),
        project_id: p.id,
        name: name.into(),
        engine: Engine::Postgres,
        version: "15".into(),
        state: ClusterState::Creating,
        location_id: l.id,
        spec: serde_json::json!({"replicas": 2}),
        created_at: now(),
    }
}

async fn clusters_are_scoped_by_project(url: String) {
    let store = open(&url).await;
    let (a, b, l) = (project("a"), project("b"), location("here"));
    let cluster = |p: &Project, name: &str| cluster(p, &l, name);
    let mut tx = store.write().await.unwrap();
    tx.project_create(&a).await.unwrap();
    tx.project_create(&b).await.unwrap();
    tx.location_create(&l).await.unwrap();
    let db = cluster(&a, "db");
    tx.cluster_create(&db).await.unwrap();
    tx.cluster_create(&cluster(&b, "db")).await.unwrap();
    tx.cluster_create(&cluster(&a, "other")).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    let got = tx.cluster_get(a.id, "db").await.unwrap().unwrap();
    assert_eq!((got.id, got.project.as_str(), got.location.as_str()), (db.id, "a", "here"));
    assert_eq!(got.state, ClusterState::Creating);
    let list = tx.cluster_list(a.id, &PageRequest::first(10)).await.unwrap();
    assert_eq!(list.items.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["db", "other"]);
    assert_eq!(tx.cluster_list(b.id, &PageRequest::first(10)).await.unwrap().items.len(), 1);
    assert_eq!(tx.cluster_count_in_location(l.id).await.unwrap(), 3);
    assert!(matches!(tx.cluster_create(&cluster(&a, "db")).await, Err(StoreError::Conflict(_))));
}

async fn dropped_transaction_writes_nothing(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    tx.project_create(&project("ghost")).await.unwrap();
    tx.audit_append(&entry("x", "project/ghost")).await.unwrap();
    drop(tx);
    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.project_get("ghost").await.unwrap(), None);
    let audit = tx.audit_list(&AuditFilter::default(), &PageRequest::first(10)).await.unwrap();
    assert!(audit.items.is_empty());
}

async fn reads_do_not_wait_for_writers(url: String) {
    let store = open(&url).await;
    let mut writer = store.write().await.unwrap();
    writer.project_create(&project("pending")).await.unwrap();
    // The writer holds its lock; a reader must still answer, from before the write.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        store.read().await.unwrap().project_get("pending").await.unwrap()
    })
    .await
    .expect("a read waited for a writer");
    assert_eq!(read, None);
    writer.commit().await.unwrap();
    assert!(store.read().await.unwrap().project_get("pending").await.unwrap().is_some());
}

async fn audit_chain_links_and_filters(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    let first = tx.audit_append(&entry("ann", "location/eu")).await.unwrap();
    let second = tx.audit_append(&entry("bob", "location/us")).await.unwrap();
    let third = tx.audit_append(&entry("ann", "cluster/db")).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!((first.seq, second.seq, third.seq), (1, 2, 3));
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(third.prev_hash, second.hash);

    let mut tx = store.read().await.unwrap();
    let all = tx.audit_list(&AuditFilter::default(), &PageRequest::first(10)).await.unwrap();
    assert_eq!(all.items, vec![first.clone(), second.clone(), third.clone()], "stored as returned");
    assert!(all.items.iter().all(|r| r.hash_is_valid()));

    let by = |actor: Option<&str>, target: Option<&str>| AuditFilter {
        actor: actor.map(Into::into),
        target: target.map(Into::into),
        since: None,
    };
    let seqs = |p: Page<sovdb_types::audit::AuditRecord>| p.items.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(tx.audit_list(&by(Some("ann"), None), &PageRequest::first(10)).await.unwrap()), [1, 3]);
    assert_eq!(seqs(tx.audit_list(&by(None, Some("location/")), &PageRequest::first(10)).await.unwrap()), [1, 2]);
    assert_eq!(seqs(tx.audit_list(&by(None, Some("location/us")), &PageRequest::first(10)).await.unwrap()), [2]);
    let later = AuditFilter { since: Some(now() + chrono::Duration::hours(1)), ..Default::default() };
    assert!(tx.audit_list(&later, &PageRequest::first(10)).await.unwrap().items.is_empty());

    let page = tx.audit_list(&AuditFilter::default(), &PageRequest::first(2)).await.unwrap();
    let next = PageParams { limit: Some(2), page_token: page.next_page_token }.resolve().unwrap();
    assert_eq!(seqs(tx.audit_list(&AuditFilter::default(), &next).await.unwrap()), [3]);
}

async fn concurrent_audit_appends_form_one_chain(url: String) {
    let store = open(&url).await;
    let writers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            for j in 0..5 {
                let mut tx = store.write().await.unwrap();
                tx.audit_append(&entry(&format!("w{i}"), &format!("x/{j}"))).await.unwrap();
                tx.commit().await.unwrap();
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    let all = store.read().await.unwrap().audit_list(&AuditFilter::default(), &PageRequest::first(100)).await.unwrap();
    assert_eq!(all.items.len(), 40);
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in all.items.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.prev_hash, prev, "record {} does not follow its predecessor", r.seq);
        assert!(r.hash_is_valid());
        prev = r.hash.clone();
    }
}

async fn reopen_keeps_everything(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    tx.project_create(&project("kept")).await.unwrap();
    tx.meta_set("installation", "abc").await.unwrap();
    tx.meta_set("installation", "def").await.unwrap();
    tx.audit_append(&entry("ann", "project/kept")).await.unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    drop(store);

    // Opening again finds everything and applies no migration twice.
    let store = open(&url).await;
    let mut tx = store.read().await.unwrap();
    assert!(tx.project_get("kept").await.unwrap().is_some());
    assert_eq!(tx.meta_get("installation").await.unwrap().as_deref(), Some("def"));
    assert_eq!(tx.meta_get("missing").await.unwrap(), None);
    let audit = tx.audit_list(&AuditFilter::default(), &PageRequest::first(10)).await.unwrap();
    assert_eq!(audit.items.len(), 1);
}

fn new_op(target: &str, at: DateTime<Utc>) -> NewOperation {
    NewOperation {
        id: OperationId::new(),
        project_id: None,
        kind: "test.work".into(),
        target: target.into(),
        params: serde_json::json!({"n": 1}),
        created_by: "ann".into(),
        created_at: at,
        steps: vec!["first".into(), "second".into()],
    }
}

async fn step_progress_and_first_start_survive_retries(url: String) {
    let store = open(&url).await;
    let t0 = now();
    let op = new_op("cluster/p", t0);
    let mut tx = store.write().await.unwrap();
    tx.operation_create(&op).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.write().await.unwrap();
    let (id, fence) = tx.operation_claim("w1", t0, t0 + chrono::Duration::seconds(30)).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(id, op.id);
    let run = store.read().await.unwrap().operation_run(id).await.unwrap().unwrap();
    assert_eq!(run.steps[0].first_started_at, None, "never started");

    // Two attempts: the first start stays, the last start moves.
    let t1 = t0 + chrono::Duration::seconds(1);
    let t2 = t0 + chrono::Duration::seconds(5);
    let attempt = |at| StepChange { state: StepState::Running, new_attempt: true, output: None, error: None, at };
    let mut tx = store.write().await.unwrap();
    assert!(tx.operation_step_change(id, fence, 0, &attempt(t1)).await.unwrap());
    assert!(tx.operation_step_progress(id, fence, 0, "waiting for a primary: db-1 starting", t1).await.unwrap());
    let retry = StepChange { state: StepState::Pending, new_attempt: false, output: None, error: None, at: t1 };
    assert!(tx.operation_step_change(id, fence, 0, &retry).await.unwrap());
    assert!(tx.operation_step_change(id, fence, 0, &attempt(t2)).await.unwrap());
    assert!(tx.operation_step_progress(id, fence, 0, "waiting for a primary: db-1 running", t2).await.unwrap());
    assert!(!tx.operation_step_progress(id, fence + 1, 0, "stale", t2).await.unwrap(), "fenced out");
    tx.commit().await.unwrap();

    let run = store.read().await.unwrap().operation_run(id).await.unwrap().unwrap();
    assert_eq!((run.steps[0].attempts, run.steps[0].first_started_at), (2, Some(t1)));
    let shown = store.read().await.unwrap().operation_get(id).await.unwrap().unwrap();
    assert_eq!(shown.steps[0].started_at, Some(t2));
    assert_eq!(
        shown.steps[0].progress,
        Some(StepProgress { message: "waiting for a primary: db-1 running".into(), at: t2 })
    );
    assert_eq!(shown.steps[1].progress, None);
    let listed = store.read().await.unwrap().operation_list(None, &PageRequest::first(10)).await.unwrap();
    assert_eq!(listed.items[0].steps[0].progress, shown.steps[0].progress, "lists carry it too");
}

async fn operations_are_claimed_one_per_target_and_fenced(url: String) {
    let store = open(&url).await;
    let t0 = now();
    let (a, b, c) = (
        new_op("cluster/x", t0),
        new_op("cluster/x", t0 + chrono::Duration::milliseconds(1)),
        new_op("cluster/y", t0 + chrono::Duration::milliseconds(2)),
    );
    let mut tx = store.write().await.unwrap();
    for op in [&a, &b, &c] {
        tx.operation_create(op).await.unwrap();
    }
    assert!(tx.operation_active_on("cluster/x").await.unwrap());
    assert!(!tx.operation_active_on("cluster/z").await.unwrap());
    tx.commit().await.unwrap();

    let lease = |from: DateTime<Utc>| from + chrono::Duration::seconds(30);
    let claim = |worker: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            let mut tx = store.write().await.unwrap();
            let got = tx.operation_claim(worker, at, lease(at)).await.unwrap();
            tx.commit().await.unwrap();
            got
        }
    };
    assert_eq!(claim("w0", t0 - chrono::Duration::seconds(1)).await, None, "nothing is due yet");
    let t1 = t0 + chrono::Duration::seconds(1);
    let (got_a, fence_a) = claim("w1", t1).await.expect("the oldest is claimed");
    assert_eq!(got_a, a.id);
    let (got_c, _) = claim("w2", t1).await.expect("another target runs alongside");
    assert_eq!(got_c, c.id, "b waits: a is unfinished on the same target");
    assert_eq!(claim("w3", t1).await, None, "nothing else is runnable");

    // The holder records a step.
    let out = serde_json::json!({"port": 5432});
    let start = StepChange { state: StepState::Running, new_attempt: true, output: None, error: None, at: now() };
    let done =
        StepChange { state: StepState::Succeeded, new_attempt: false, output: Some(&out), error: None, at: now() };
    let mut tx = store.write().await.unwrap();
    assert!(tx.operation_step_change(a.id, fence_a, 0, &start).await.unwrap());
    assert!(tx.operation_step_change(a.id, fence_a, 0, &done).await.unwrap());
    assert!(tx.operation_renew(a.id, fence_a, lease(t1)).await.unwrap());
    tx.commit().await.unwrap();

    // Its lease lapses; another worker takes over with a higher fence.
    let later = t0 + chrono::Duration::seconds(60);
    let (again, fence_a2) = claim("w2", later).await.expect("an expired lease is taken over");
    assert_eq!((again, fence_a2), (a.id, fence_a + 1));
    let mut tx = store.write().await.unwrap();
    let stale = StepChange { state: StepState::Running, new_attempt: true, output: None, error: None, at: now() };
    assert!(!tx.operation_step_change(a.id, fence_a, 1, &stale).await.unwrap(), "the old holder is fenced out");
    assert!(!tx.operation_renew(a.id, fence_a, lease(later)).await.unwrap());
    let finish = OperationChange {
        state: OperationState::Succeeded,
        error: None,
        next_run_at: later,
        release: true,
        finished_at: Some(later),
    };
    assert!(!tx.operation_change(a.id, fence_a, &finish).await.unwrap());
    assert!(tx.operation_change(a.id, fence_a2, &finish).await.unwrap());
    tx.commit().await.unwrap();

    let run = store.read().await.unwrap().operation_run(a.id).await.unwrap().unwrap();
    assert_eq!(run.state, OperationState::Succeeded);
    assert_eq!(
        (run.steps[0].state, run.steps[0].attempts, run.steps[0].output.clone()),
        (StepState::Succeeded, 1, Some(out))
    );
    assert_eq!(
        (run.steps[1].state, run.steps[1].attempts),
        (StepState::Pending, 0),
        "the fenced-out write left no trace"
    );

    // Now b may run. A restarted worker gives its own leases back and anyone claims at once.
    let (got_b, fence_b) = claim("w1", later).await.expect("b runs after a");
    assert_eq!(got_b, b.id);
    assert_eq!(claim("w2", later).await.map(|c| c.0), Some(c.id), "b is leased; only c's lapsed lease is free");
    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.operation_release_worker("w1").await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(claim("w1", later).await, Some((b.id, fence_b + 1)), "released at once, with a new fence");

    // A cancel request marks unfinished operations only.
    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.operation_request_cancel(b.id).await.unwrap(), Some(OperationState::Running));
    assert_eq!(tx.operation_request_cancel(a.id).await.unwrap(), Some(OperationState::Succeeded));
    assert_eq!(tx.operation_request_cancel(OperationId::new()).await.unwrap(), None);
    tx.commit().await.unwrap();
    let mut tx = store.read().await.unwrap();
    assert!(tx.operation_get(b.id).await.unwrap().unwrap().cancel_requested);
    assert!(
        !tx.operation_get(a.id).await.unwrap().unwrap().cancel_requested,
        "a finished operation can't be cancelled"
    );
}

async fn operations_list_newest_first_with_steps(url: String) {
    let store = open(&url).await;
    let p = project("alpha");
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut op = new_op(&format!("cluster/{i}"), now());
        op.project_id = if i % 2 == 0 { Some(p.id) } else { None };
        ids.push(op.id);
        tx.operation_create(&op).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    let one = tx.operation_get(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (one.project.as_deref(), one.state, one.kind.as_str()),
        (Some("alpha"), OperationState::Queued, "test.work")
    );
    assert_eq!(
        one.steps.iter().map(|s| (s.index, s.name.as_str(), s.state)).collect::<Vec<_>>(),
        [(0, "first", StepState::Pending), (1, "second", StepState::Pending)]
    );
    assert_eq!(tx.operation_get(OperationId::new()).await.unwrap(), None);

    let page = tx.operation_list(None, &PageRequest::first(3)).await.unwrap();
    assert_eq!(page.items.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[4], ids[3], ids[2]]);
    let next = PageParams { limit: Some(3), page_token: page.next_page_token }.resolve().unwrap();
    let rest = tx.operation_list(None, &next).await.unwrap();
    assert_eq!(rest.items.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[1], ids[0]]);
    let listed = page.items.iter().chain(&rest.items).collect::<Vec<_>>();
    assert!(
        listed.iter().all(|o| o.steps.iter().map(|s| s.name.as_str()).eq(["first", "second"])),
        "each listed operation carries its own steps"
    );
    let mine = tx.operation_list(Some(p.id), &PageRequest::first(10)).await.unwrap();
    assert_eq!(mine.items.iter().map(|o| o.id).collect::<Vec<_>>(), [ids[4], ids[2], ids[0]]);
}

async fn concurrent_claims_take_each_operation_once(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    for i in 0..12 {
        tx.operation_create(&new_op(&format!("t/{i}"), now())).await.unwrap();
    }
    tx.commit().await.unwrap();
    let at = now();
    let workers = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut tx = store.write().await.unwrap();
                match tx.operation_claim(&format!("w{w}"), at, at + chrono::Duration::seconds(30)).await.unwrap() {
                    Some((id, _)) => {
                        tx.commit().await.unwrap();
                        got.push(id);
                    }
                    None => return got,
                }
            }
        })
    });
    let mut all = Vec::new();
    for w in workers.collect::<Vec<_>>() {
        all.extend(w.await.unwrap());
    }
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (12, 12), "every operation claimed exactly once");
}

fn host(name: &str, location: &Location, address: &str) -> HostRecord {
    HostRecord {
        host: Host {
            id: HostId::new(),
            name: name.into(),
            location: location.name.clone(),
            address: address.into(),
            agent_port: 7450,
            base_dir: format!("/var/lib/sovdb/{name}"),
            zone: Some("a".into()),
            labels: [("tier".to_string(), "nvme".to_string())].into(),
            status: HostStatus::Bootstrapping,
            status_message: None,
            ssh: Some(SshAccess { user: "root".into(), port: 2222, host_key: None, host_key_fingerprint: None }),
            facts: None,
            last_seen_at: None,
            created_at: now(),
        },
        location_id: location.id,
        ssh_key_sealed: Some("v1:sealed".into()),
    }
}

async fn hosts_round_trip_status_and_heartbeats(url: String) {
    let store = open(&url).await;
    let (eu, us) = (location("eu-1"), location("us-1"));
    let h1 = host("h1", &eu, "10.0.0.1");
    let mut tx = store.write().await.unwrap();
    tx.location_create(&eu).await.unwrap();
    tx.location_create(&us).await.unwrap();
    tx.host_create(&h1).await.unwrap();
    tx.host_create(&host("h2", &us, "10.0.0.2")).await.unwrap();
    tx.commit().await.unwrap();
    // Names are unique, and so is an agent endpoint (a failed statement ends a PostgreSQL
    // transaction, so one each).
    for dup in [host("h1", &eu, "10.0.0.9"), host("h3", &eu, "10.0.0.1")] {
        let mut tx = store.write().await.unwrap();
        assert!(matches!(tx.host_create(&dup).await, Err(StoreError::Conflict(_))), "{}", dup.host.name);
    }

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.host_get("h1").await.unwrap().unwrap(), h1);
    assert_eq!(tx.host_get_by_id(h1.host.id).await.unwrap().unwrap(), h1);
    assert!(tx.host_get_by_id(HostId::new()).await.unwrap().is_none());
    assert_eq!(tx.host_count_in_location(eu.id).await.unwrap(), 1);
    let all = tx.host_list(None, &PageRequest { after: None, limit: 10 }).await.unwrap();
    assert_eq!(all.items.iter().map(|h| h.host.name.as_str()).collect::<Vec<_>>(), ["h1", "h2"]);
    let in_us = tx.host_list(Some(us.id), &PageRequest { after: None, limit: 10 }).await.unwrap();
    assert_eq!(in_us.items.len(), 1);
    assert_eq!(in_us.items[0].host.name, "h2");

    let id = h1.host.id;
    assert!(tx.host_set_status(id, HostStatus::Unreachable, Some("connection refused")).await.unwrap());
    let facts = serde_json::json!({"cpus": 2});
    let seen = now();
    assert!(tx.host_observed(id, seen, Some(&facts)).await.unwrap());
    // A heartbeat without facts keeps the last ones.
    assert!(tx.host_observed(id, seen, None).await.unwrap());
    assert!(tx.host_set_ssh_host_key(id, "ssh-ed25519 AAAA", "SHA256:xyz").await.unwrap());
    let got = tx.host_get("h1").await.unwrap().unwrap().host;
    assert_eq!(got.status, HostStatus::Unreachable);
    assert_eq!(got.status_message.as_deref(), Some("connection refused"));
    assert_eq!(got.facts, Some(facts));
    assert_eq!(got.last_seen_at, Some(seen));
    let ssh = got.ssh.unwrap();
    assert_eq!((ssh.port, ssh.host_key.as_deref()), (2222, Some("ssh-ed25519 AAAA")));

    assert!(tx.host_delete(id).await.unwrap());
    assert!(!tx.host_delete(id).await.unwrap());
    assert!(!tx.host_set_status(id, HostStatus::Ready, None).await.unwrap());
    assert!(tx.host_get("h1").await.unwrap().is_none());
    tx.commit().await.unwrap();
}

async fn cluster_members_ports_and_secrets(url: String) {
    let store = open(&url).await;
    let (p, l) = (project("a"), location("here"));
    let h = host("h1", &l, "10.0.0.1");
    let c = cluster(&p, &l, "db");
    let member = |name: &str| MemberRecord {
        cluster_id: c.id,
        name: name.into(),
        host_id: h.host.id,
        spec: serde_json::json!({"port": 5432}),
        created_at: now(),
    };
    let port = |port: u16, owner: String| PortAllocation { host_id: h.host.id, port, owner };
    let owner = format!("cluster/{}", c.id);
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    tx.location_create(&l).await.unwrap();
    tx.host_create(&h).await.unwrap();
    tx.cluster_create(&c).await.unwrap();
    tx.member_create(&member("db-1")).await.unwrap();
    tx.member_create(&member("db-0")).await.unwrap();
    assert!(tx.port_allocate(&port(20000, format!("{owner}/db-0/postgres"))).await.unwrap());
    assert!(tx.port_allocate(&port(20001, format!("{owner}/db-1/postgres"))).await.unwrap());
    assert!(tx.port_allocate(&port(20002, "dcs/x/e0/client".into())).await.unwrap());
    // A port is given out once per host.
    assert!(!tx.port_allocate(&port(20000, "cluster/other/m/postgres".into())).await.unwrap());
    assert!(tx.secret_put(&owner, "superuser", "v1:one", now()).await.unwrap());
    assert!(!tx.secret_put(&owner, "superuser", "v1:two", now()).await.unwrap(), "the first value stays");
    assert!(tx.secret_put(&format!("{owner}x"), "superuser", "v1:other", now()).await.unwrap());
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    let got = tx.cluster_record(p.id, "db").await.unwrap().unwrap();
    assert_eq!(got, c);
    assert_eq!(tx.cluster_record_by_id(c.id).await.unwrap().unwrap(), c);
    assert_eq!(tx.cluster_records_all(None, 10).await.unwrap(), std::slice::from_ref(&c));
    assert_eq!(tx.cluster_records_all(Some(c.id), 10).await.unwrap(), []);
    assert!(tx.cluster_set_state(c.id, ClusterState::Ready).await.unwrap());
    assert!(tx.cluster_set_spec(c.id, &serde_json::json!({"replicas": 3})).await.unwrap());
    let got = tx.cluster_record_by_id(c.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.spec["replicas"].as_i64()), (ClusterState::Ready, Some(3)));
    let members = tx.member_list(c.id).await.unwrap();
    assert_eq!(members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["db-0", "db-1"]);
    assert_eq!(members[0].spec, serde_json::json!({"port": 5432}));
    assert_eq!(tx.member_count_on_host(h.host.id).await.unwrap(), 2);
    assert_eq!(
        tx.port_list(h.host.id).await.unwrap().iter().map(|a| a.port).collect::<Vec<_>>(),
        [20000, 20001, 20002]
    );
    assert_eq!(tx.port_list_owned(&owner).await.unwrap().len(), 2);
    assert_eq!(tx.port_list_owned(&format!("{owner}/db-1")).await.unwrap().len(), 1);
    assert_eq!(tx.secret_get(&owner, "superuser").await.unwrap().as_deref(), Some("v1:one"));
    assert_eq!(tx.secret_get(&owner, "nope").await.unwrap(), None);
    // Releasing by owner takes what is under it and nothing that merely starts alike.
    assert_eq!(tx.port_release(&format!("{owner}/db-1")).await.unwrap(), 1);
    assert_eq!(tx.port_release(&owner).await.unwrap(), 1);
    assert_eq!(tx.port_list(h.host.id).await.unwrap().len(), 1);
    assert_eq!(tx.secret_delete(&owner).await.unwrap(), 1);
    assert!(tx.secret_get(&format!("{owner}x"), "superuser").await.unwrap().is_some());
    assert!(tx.member_delete(c.id, "db-1").await.unwrap());
    assert!(!tx.member_delete(c.id, "db-1").await.unwrap());
    assert!(tx.cluster_delete(c.id).await.unwrap());
    assert!(!tx.cluster_delete(c.id).await.unwrap());
    assert_eq!(tx.member_count_on_host(h.host.id).await.unwrap(), 0);
    tx.commit().await.unwrap();

    // A member name is unique within its cluster.
    let mut tx = store.write().await.unwrap();
    tx.cluster_create(&c).await.unwrap();
    tx.member_create(&member("db-0")).await.unwrap();
    assert!(matches!(tx.member_create(&member("db-0")).await, Err(StoreError::Conflict(_))));
}

async fn dcs_members_and_events(url: String) {
    let store = open(&url).await;
    let (p, l) = (project("a"), location("here"));
    let h = host("h1", &l, "10.0.0.1");
    let dcs = |name: &str, client_port: u16| DcsMember {
        location_id: l.id,
        name: name.into(),
        host_id: h.host.id,
        client_port,
        peer_port: client_port + 1,
        created_at: now(),
    };
    let event = |project: Option<ProjectId>, target: &str, kind: &str| NewEvent {
        id: EventId::new(),
        at: now(),
        project_id: project,
        target: target.into(),
        kind: kind.into(),
        message: format!("{kind} of {target}"),
    };
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    tx.location_create(&l).await.unwrap();
    tx.host_create(&h).await.unwrap();
    assert!(tx.dcs_member_create(&dcs("etcd-1", 2380)).await.unwrap());
    assert!(tx.dcs_member_create(&dcs("etcd-0", 2379)).await.unwrap());
    assert!(!tx.dcs_member_create(&dcs("etcd-0", 3000)).await.unwrap(), "the first one stays");
    let (e1, e2, e3) = (
        event(Some(p.id), "cluster/db", "failover"),
        event(None, "host/h1", "unreachable"),
        event(Some(p.id), "cluster/dbx", "switchover"),
    );
    for e in [&e1, &e2, &e3] {
        tx.event_append(e).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    let members = tx.dcs_member_list(l.id).await.unwrap();
    let got: Vec<_> = members.iter().map(|m| (m.name.as_str(), m.host_id, m.client_port, m.peer_port)).collect();
    assert_eq!(got, [("etcd-0", h.host.id, 2379, 2380), ("etcd-1", h.host.id, 2380, 2381)]);
    assert_eq!(tx.dcs_member_count_on_host(h.host.id).await.unwrap(), 2);
    let kinds = |page: Page<Event>| page.items.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(tx.event_list(None, None, &PageRequest::first(10)).await.unwrap()),
        ["failover", "unreachable", "switchover"]
    );
    assert_eq!(
        kinds(tx.event_list(Some(p.id), None, &PageRequest::first(10)).await.unwrap()),
        ["failover", "switchover"]
    );
    assert_eq!(kinds(tx.event_list(None, Some("cluster/db"), &PageRequest::first(10)).await.unwrap()), ["failover"]);
    assert_eq!(
        kinds(tx.event_list(None, Some("cluster/"), &PageRequest::first(10)).await.unwrap()),
        ["failover", "switchover"]
    );
    let got = tx.event_list(None, Some("host/h1"), &PageRequest::first(10)).await.unwrap().items;
    assert_eq!(
        (got[0].id, got[0].project.as_deref(), got[0].message.as_str()),
        (e2.id, None, "unreachable of host/h1")
    );
    let first = tx.event_list(None, None, &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let next = first.next_page_token.clone().expect("a second page");
    let next = PageParams { limit: Some(2), page_token: Some(next) }.resolve().unwrap();
    let rest = tx.event_list(None, None, &next).await.unwrap();
    assert_eq!(kinds(rest), ["switchover"]);

    // The timeline query: a project's events, with or without the installation's.
    let q = |project, installation, target: Option<&str>, since| EventFilter {
        project,
        installation,
        target: target.map(String::from),
        since,
    };
    let all = PageRequest::first(10);
    assert_eq!(
        kinds(tx.event_query(&q(Some(p.id), false, None, None), &all).await.unwrap()),
        ["failover", "switchover"]
    );
    assert_eq!(
        kinds(tx.event_query(&q(Some(p.id), true, None, None), &all).await.unwrap()),
        ["failover", "unreachable", "switchover"]
    );
    assert_eq!(kinds(tx.event_query(&q(Some(ProjectId::new()), false, None, None), &all).await.unwrap()).len(), 0);
    assert_eq!(
        kinds(tx.event_query(&q(Some(ProjectId::new()), true, None, None), &all).await.unwrap()),
        ["unreachable"]
    );
    assert_eq!(kinds(tx.event_query(&q(None, false, Some("cluster/dbx"), None), &all).await.unwrap()), ["switchover"]);
    // `since` is inclusive; after the last event there is nothing.
    assert_eq!(kinds(tx.event_query(&q(None, false, None, Some(e1.at)), &all).await.unwrap()).len(), 3);
    let later = e1.at.max(e2.at).max(e3.at) + chrono::Duration::milliseconds(1);
    assert!(tx.event_query(&q(None, false, None, Some(later)), &all).await.unwrap().items.is_empty());
    let after = PageRequest { limit: 10, after: Some(e1.id.to_string()) };
    assert_eq!(kinds(tx.event_query(&q(Some(p.id), false, None, None), &after).await.unwrap()), ["switchover"]);
}

fn repo(p: &Project, l: &Location, h: Option<&HostRecord>, name: &str, is_default: bool) -> RepoRecord {
    let (kind, spec) = match h {
        Some(_) => (RepoType::Posix, RepoSpec { path: format!("/backups/{name}"), ..Default::default() }),
        None => (
            RepoType::S3,
            RepoSpec {
                path: "/sovdb".into(),
                endpoint: Some("s3.example.com:9000".into()),
                bucket: Some("backups".into()),
                region: Some("eu-central-1".into()),
                uri_style: Some(UriStyle::Path),
                ca_pem: Some("-----BEGIN CERTIFICATE-----\n...".into()),
            },
        ),
    };
    RepoRecord {
        id: RepoId::new(),
        project_id: p.id,
        name: name.into(),
        location_id: l.id,
        location: l.name.clone(),
        host_id: h.map(|h| h.host.id),
        host: h.map(|h| h.host.name.clone()),
        kind,
        spec,
        encrypted: h.is_none(),
        is_default,
        created_at: now(),
    }
}

async fn repos_round_trip_with_one_default_per_location(url: String) {
    let store = open(&url).await;
    let (a, b, eu, us) = (project("a"), project("b"), location("eu-1"), location("us-1"));
    let h = host("h1", &eu, "10.0.0.1");
    let first = repo(&a, &eu, Some(&h), "first", true);
    let s3 = repo(&a, &eu, None, "s3", false);
    let mut tx = store.write().await.unwrap();
    tx.project_create(&a).await.unwrap();
    tx.project_create(&b).await.unwrap();
    tx.location_create(&eu).await.unwrap();
    tx.location_create(&us).await.unwrap();
    tx.host_create(&h).await.unwrap();
    tx.repo_create(&first).await.unwrap();
    tx.repo_create(&s3).await.unwrap();
    // Names are per project; defaults per project and location.
    let theirs = repo(&b, &eu, None, "first", true);
    tx.repo_create(&theirs).await.unwrap();
    let overseas = repo(&a, &us, None, "overseas", true);
    tx.repo_create(&overseas).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.repo_get(a.id, "first").await.unwrap(), Some(first.clone()), "read as written");
    assert_eq!(tx.repo_get_by_id(s3.id).await.unwrap(), Some(s3.clone()));
    assert_eq!(tx.repo_get(b.id, "first").await.unwrap(), Some(theirs.clone()));
    assert_eq!(tx.repo_get(a.id, "nope").await.unwrap(), None);
    assert_eq!(tx.repo_get_by_id(RepoId::new()).await.unwrap(), None);
    let names = |p: Page<RepoRecord>| p.items.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(tx.repo_list(a.id, &PageRequest::first(10)).await.unwrap()), ["first", "overseas", "s3"]);
    let page = tx.repo_list(a.id, &PageRequest::first(2)).await.unwrap();
    let next = PageParams { limit: Some(2), page_token: page.next_page_token }.resolve().unwrap();
    assert_eq!(names(tx.repo_list(a.id, &next).await.unwrap()), ["s3"]);
    assert_eq!(tx.repo_default(a.id, eu.id).await.unwrap().map(|r| r.id), Some(first.id));
    assert_eq!(tx.repo_default(a.id, us.id).await.unwrap().map(|r| r.id), Some(overseas.id));
    assert_eq!(tx.repo_default(b.id, us.id).await.unwrap(), None);
    assert_eq!(tx.repo_list_on_host(h.host.id).await.unwrap(), std::slice::from_ref(&first));
    assert_eq!(tx.repo_count_in_location(eu.id).await.unwrap(), 3);
    assert!(matches!(tx.repo_create(&repo(&a, &us, None, "s3", false)).await, Err(StoreError::Conflict(_))));
    drop(tx);

    // A new default replaces the old one of its project and location, and only that one.
    let mut tx = store.write().await.unwrap();
    let second = repo(&a, &eu, None, "second", true);
    tx.repo_create(&second).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.repo_default(a.id, eu.id).await.unwrap().map(|r| r.id), Some(second.id));
    assert!(!tx.repo_get(a.id, "first").await.unwrap().unwrap().is_default);
    assert_eq!(tx.repo_default(a.id, us.id).await.unwrap().map(|r| r.id), Some(overseas.id));
    assert_eq!(tx.repo_default(b.id, eu.id).await.unwrap().map(|r| r.id), Some(theirs.id));

    assert!(tx.repo_delete(second.id).await.unwrap());
    assert!(!tx.repo_delete(second.id).await.unwrap(), "a second delete finds nothing");
    assert_eq!(tx.repo_default(a.id, eu.id).await.unwrap(), None, "no default until one is chosen again");
    tx.commit().await.unwrap();
    assert_eq!(store.read().await.unwrap().repo_get(a.id, "second").await.unwrap(), None);
}

async fn retained_backups_of_deleted_clusters(url: String) {
    let store = open(&url).await;
    let (a, b, eu) = (project("a"), project("b"), location("eu-1"));
    let r1 = repo(&a, &eu, None, "r1", false);
    let mut tx = store.write().await.unwrap();
    tx.project_create(&a).await.unwrap();
    tx.project_create(&b).await.unwrap();
    tx.location_create(&eu).await.unwrap();
    tx.repo_create(&r1).await.unwrap();
    // Two clusters named db1 deleted one after the other, and one of another project.
    let kept = |c: ClusterRecord, at: i64| RetainedRecord {
        cluster: ClusterRecord { state: ClusterState::Deleting, ..c },
        repo_id: r1.id,
        repo: "r1".into(),
        deleted_at: now() + chrono::Duration::seconds(at),
    };
    let older = kept(cluster(&a, &eu, "db1"), 1);
    let newer = kept(cluster(&a, &eu, "db1"), 2);
    let theirs = kept(cluster(&b, &eu, "db1"), 3);
    for r in [&older, &newer, &theirs] {
        tx.retained_create(r).await.unwrap();
    }
    tx.retained_create(&older).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.retained_get(a.id, "db1").await.unwrap(), Some(newer.clone()), "the newest, read as written");
    assert_eq!(tx.retained_get(a.id, "db2").await.unwrap(), None);
    let ids = |v: Vec<RetainedRecord>| v.into_iter().map(|r| r.cluster.id).collect::<Vec<_>>();
    assert_eq!(ids(tx.retained_list(a.id).await.unwrap()), [newer.cluster.id, older.cluster.id]);
    assert_eq!(tx.retained_count_in_repo(r1.id).await.unwrap(), 3);
    assert!(tx.retained_delete(newer.cluster.id).await.unwrap());
    assert!(!tx.retained_delete(newer.cluster.id).await.unwrap());
    assert_eq!(tx.retained_get(a.id, "db1").await.unwrap(), Some(older));
    tx.commit().await.unwrap();
    assert_eq!(store.read().await.unwrap().retained_count_in_repo(r1.id).await.unwrap(), 2);
}

async fn alerts_rules_channels_silences_and_deliveries(url: String) {
    let store = open(&url).await;
    let t0 = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    let p = project("alerting");
    let mut tx = store.write().await.unwrap();
    tx.project_create(&p).await.unwrap();
    let rule = AlertRuleRecord { project_id: p.id, name: "lag".into(), spec: "{}".into(), created_at: t0 };
    tx.alert_rule_create(&rule).await.unwrap();
    tx.commit().await.unwrap();
    // A refused write aborts its transaction on PostgreSQL: each in one of its own.
    let mut tx = store.write().await.unwrap();
    assert!(matches!(tx.alert_rule_create(&rule).await, Err(StoreError::Conflict(_))), "one rule per name");
    drop(tx);
    let mut tx = store.write().await.unwrap();
    let channel = AlertChannelRecord {
        id: ChannelId::new(),
        project_id: p.id,
        name: "hook".into(),
        kind: "webhook".into(),
        spec: "{}".into(),
        created_at: t0,
    };
    tx.alert_channel_create(&channel).await.unwrap();
    let silence = AlertSilenceRecord {
        id: SilenceId::new(),
        project_id: p.id,
        cluster: Some("c".into()),
        rule: None,
        starts_at: t0,
        ends_at: t0 + chrono::TimeDelta::hours(1),
        comment: "maintenance".into(),
        created_by: "admin".into(),
        created_at: t0,
    };
    tx.alert_silence_create(&silence).await.unwrap();
    let mut alert = AlertRecord {
        id: AlertId::new(),
        project_id: p.id,
        key: "lag|member/c/c-2".into(),
        rule: "lag".into(),
        cluster: Some("c".into()),
        state: "pending".into(),
        data: "{}".into(),
        pending_since: t0,
        started_at: None,
        resolved_at: None,
    };
    tx.alert_put(&alert).await.unwrap();
    tx.commit().await.unwrap();
    let twin = AlertRecord { id: AlertId::new(), ..alert.clone() };
    let mut tx = store.write().await.unwrap();
    assert!(matches!(tx.alert_put(&twin).await, Err(StoreError::Conflict(_))), "one open alert per key");
    drop(tx);
    let mut tx = store.write().await.unwrap();
    alert.state = "firing".into();
    alert.started_at = Some(t0);
    tx.alert_put(&alert).await.unwrap();
    let delivery = DeliveryRecord {
        id: DeliveryId::new(),
        project_id: p.id,
        alert_id: alert.id,
        channel_id: channel.id,
        channel: "hook".into(),
        status: "firing".into(),
        payload: "{}".into(),
        attempts: 0,
        next_at: t0,
        last_result: None,
        delivered_at: None,
        gave_up: false,
        created_at: t0,
    };
    tx.delivery_create(&delivery).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.alert_rule_list(Some(p.id)).await.unwrap(), vec![rule.clone()]);
    assert_eq!(tx.alert_rule_list(None).await.unwrap(), vec![rule]);
    assert_eq!(tx.alert_channel_list(Some(p.id)).await.unwrap(), vec![channel.clone()]);
    assert_eq!(tx.alert_silence_list(None).await.unwrap(), vec![silence.clone()]);
    assert_eq!(tx.alert_list_open().await.unwrap(), vec![alert.clone()]);
    assert_eq!(tx.alert_get(alert.id).await.unwrap(), Some(alert.clone()));
    assert_eq!(tx.delivery_due(t0 - chrono::TimeDelta::seconds(1), 10).await.unwrap(), vec![]);
    assert_eq!(tx.delivery_due(t0, 10).await.unwrap(), vec![delivery.clone()]);
    // A claim moves next_at; a second claim from the old value fails.
    let later = t0 + chrono::TimeDelta::seconds(60);
    assert!(tx.delivery_claim(delivery.id, t0, later).await.unwrap());
    assert!(!tx.delivery_claim(delivery.id, t0, later).await.unwrap());
    let done = DeliveryRecord {
        attempts: 1,
        last_result: Some("HTTP 200".into()),
        delivered_at: Some(later),
        ..delivery.clone()
    };
    tx.delivery_update(&done).await.unwrap();
    assert!(tx.delivery_due(later, 10).await.unwrap().is_empty(), "a delivered notification is not due");
    let page = tx.delivery_list(p.id, Some(alert.id), &PageRequest { limit: 10, after: None }).await.unwrap();
    assert_eq!(page.items, vec![done]);
    // Resolved: no longer open, and a new alert of the same key may open.
    alert.state = "resolved".into();
    alert.resolved_at = Some(later);
    tx.alert_put(&alert).await.unwrap();
    assert!(tx.alert_list_open().await.unwrap().is_empty());
    tx.alert_put(&twin).await.unwrap();
    let all = tx.alert_list(p.id, false, &PageRequest { limit: 10, after: None }).await.unwrap();
    assert_eq!(all.items, vec![alert.clone(), twin.clone()]);
    let open = tx.alert_list(p.id, true, &PageRequest { limit: 10, after: None }).await.unwrap();
    assert_eq!(open.items, vec![twin.clone()]);
    assert!(tx.alert_delete(twin.id).await.unwrap());
    assert!(tx.alert_silence_delete(p.id, silence.id).await.unwrap());
    assert!(tx.alert_channel_delete(channel.id).await.unwrap());
    assert!(tx.alert_rule_delete(p.id, "lag").await.unwrap());
    assert!(!tx.alert_rule_delete(p.id, "lag").await.unwrap());
    // A project's settings of a default rule: one row per rule, replaced by a put.
    let other = project("alerting-2");
    tx.project_create(&other).await.unwrap();
    let lag = AlertRuleSettingsRecord {
        project_id: p.id,
        rule: "replication-lag".into(),
        spec: r#"{"threshold":1024}"#.into(),
        updated_at: t0,
    };
    let disk = AlertRuleSettingsRecord { rule: "disk-85".into(), spec: r#"{"for_secs":0}"#.into(), ..lag.clone() };
    let theirs = AlertRuleSettingsRecord { project_id: other.id, ..lag.clone() };
    for s in [&lag, &disk, &theirs] {
        tx.alert_rule_settings_put(s).await.unwrap();
    }
    let changed = AlertRuleSettingsRecord {
        spec: r#"{"threshold":2048}"#.into(),
        updated_at: t0 + chrono::TimeDelta::seconds(1),
        ..lag.clone()
    };
    tx.alert_rule_settings_put(&changed).await.unwrap();
    assert_eq!(tx.alert_rule_settings_list(Some(p.id)).await.unwrap(), vec![disk.clone(), changed.clone()]);
    assert_eq!(tx.alert_rule_settings_list(None).await.unwrap().len(), 3);
    assert!(tx.alert_rule_settings_delete(p.id, "replication-lag").await.unwrap());
    assert!(!tx.alert_rule_settings_delete(p.id, "replication-lag").await.unwrap());
    assert_eq!(tx.alert_rule_settings_list(Some(p.id)).await.unwrap(), vec![disk]);
    assert_eq!(tx.alert_rule_settings_list(Some(other.id)).await.unwrap(), vec![theirs]);
    // The newest event of some kinds.
    for (i, kind) in ["backup", "backup-failed", "drill"].iter().enumerate() {
        let e = NewEvent {
            id: EventId::new(),
            at: t0 + chrono::TimeDelta::seconds(i as i64),
            project_id: Some(p.id),
            target: "cluster/c".into(),
            kind: kind.to_string(),
            message: String::new(),
        };
        tx.event_append(&e).await.unwrap();
    }
    let latest = tx.event_latest(p.id, "cluster/c", &["backup", "backup-failed"]).await.unwrap().unwrap();
    assert_eq!(latest.kind, "backup-failed");
    assert!(tx.event_latest(p.id, "cluster/d", &["backup"]).await.unwrap().is_none());
    tx.commit().await.unwrap();
}

async fn metrics_insert_list_prune_and_cursors(url: String) {
    let store = open(&url).await;
    let t0 = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    let row = |target: &str, secs: i64, data: &str| MetricRow {
        target: target.into(),
        at: t0 + chrono::TimeDelta::seconds(secs),
        data: data.into(),
    };
    let mut tx = store.write().await.unwrap();
    let rows = [
        row("host/a", 0, "1=0.5"),
        row("host/a", 10, "1=0.7"),
        row("member/c/m-1", 0, "20=1"),
        row("host/b", 20, "1=1"),
    ];
    assert_eq!(tx.metric_insert(MetricTable::Raw, &rows).await.unwrap(), 4);
    // The same sample again (a pull repeated after a crash, or by another replica) is kept once.
    assert_eq!(tx.metric_insert(MetricTable::Raw, &[row("host/a", 0, "1=9")]).await.unwrap(), 0);
    tx.metric_upsert(MetricTable::Minute, &[row("host/a", 0, "1=0.6")]).await.unwrap();
    tx.metric_upsert(MetricTable::Minute, &[row("host/a", 0, "1=0.65")]).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    let end = t0 + chrono::TimeDelta::seconds(60);
    let all = tx.metric_list(MetricTable::Raw, None, t0, end).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["host/a", "host/a", "host/b", "member/c/m-1"]
    );
    assert_eq!(all[0], row("host/a", 0, "1=0.5"));
    let some = tx
        .metric_list(
            MetricTable::Raw,
            Some(&["host/a".into(), "host/b".into()]),
            t0 + chrono::TimeDelta::seconds(5),
            end,
        )
        .await
        .unwrap();
    assert_eq!(
        some,
        vec![row("host/a", 10, "1=0.7"), row("host/b", 20, "1=1")],
        "from is inclusive, by target then time"
    );
    assert!(tx.metric_list(MetricTable::Raw, Some(&[]), t0, end).await.unwrap().is_empty());
    assert_eq!(tx.metric_list(MetricTable::Minute, None, t0, end).await.unwrap(), vec![row("host/a", 0, "1=0.65")]);
    drop(tx);

    let mut tx = store.write().await.unwrap();
    assert_eq!(tx.metric_prune(MetricTable::Raw, t0 + chrono::TimeDelta::seconds(10)).await.unwrap(), 2);
    assert_eq!(tx.metric_prune(MetricTable::Minute, t0).await.unwrap(), 0, "before is exclusive");
    let eu = location("eu-1");
    let h = host("h1", &eu, "10.0.0.1");
    tx.location_create(&eu).await.unwrap();
    tx.host_create(&h).await.unwrap();
    assert_eq!(tx.metric_cursor_get(h.host.id).await.unwrap(), None);
    tx.metric_cursor_set(h.host.id, "e1", 5).await.unwrap();
    tx.metric_cursor_set(h.host.id, "e2", 7).await.unwrap();
    assert_eq!(tx.metric_cursor_get(h.host.id).await.unwrap(), Some(("e2".to_string(), 7)));
    tx.commit().await.unwrap();
    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.metric_list(MetricTable::Raw, None, t0, end).await.unwrap().len(), 2);
}

async fn meta_swap_lets_one_writer_win(url: String) {
    let store = open(&url).await;
    let mut tx = store.write().await.unwrap();
    assert!(tx.meta_swap("k", None, "1").await.unwrap(), "absent: set");
    assert!(!tx.meta_swap("k", None, "2").await.unwrap(), "present: not set again");
    assert!(tx.meta_swap("k", Some("1"), "3").await.unwrap());
    assert!(!tx.meta_swap("k", Some("1"), "4").await.unwrap(), "a stale reader loses");
    tx.commit().await.unwrap();
    assert_eq!(store.read().await.unwrap().meta_get("k").await.unwrap().as_deref(), Some("3"));
    let mut tx = store.write().await.unwrap();
    assert!(tx.meta_delete("k").await.unwrap(), "there: deleted");
    assert!(!tx.meta_delete("k").await.unwrap(), "gone: nothing to delete");
    tx.commit().await.unwrap();
    assert_eq!(store.read().await.unwrap().meta_get("k").await.unwrap(), None);
}

async fn audit_head_follows_every_append(url: String) {
    let store = open(&url).await;
    assert_eq!(store.read().await.unwrap().audit_head().await.unwrap(), None);
    let mut tx = store.write().await.unwrap();
    tx.audit_append(&entry("ann", "location/eu")).await.unwrap();
    let second = tx.audit_append(&entry("bob", "location/us")).await.unwrap();
    assert_eq!(tx.audit_head().await.unwrap(), Some(AuditHead { seq: 2, hash: second.hash.clone() }));
    tx.commit().await.unwrap();
    // A rolled-back append moves neither the chain nor its head.
    let mut tx = store.write().await.unwrap();
    tx.audit_append(&entry("eve", "location/xx")).await.unwrap();
    drop(tx);
    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.audit_head().await.unwrap(), Some(AuditHead { seq: 2, hash: second.hash }));
    let all = tx.audit_list(&AuditFilter::default(), &PageRequest::first(10)).await.unwrap();
    assert_eq!(all.items.len(), 2);
}

async fn sealed_values_can_be_listed_and_resealed(url: String) {
    let store = open(&url).await;
    let l = location("here");
    let h = host("h1", &l, "10.0.0.1");
    let mut tx = store.write().await.unwrap();
    tx.location_create(&l).await.unwrap();
    tx.host_create(&h).await.unwrap();
    for (owner, name) in
        [("repo/b", "cipher-pass"), ("cluster/a", "superuser"), ("cluster/a", "app"), ("cluster/ab", "app")]
    {
        assert!(tx.secret_put(owner, name, &format!("v1:{owner}#{name}"), now()).await.unwrap());
    }
    let mut op = new_op("host/h1", now());
    op.kind = "host.add".into();
    tx.operation_create(&op).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.write().await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = tx.secret_list_all(after.as_ref().map(|(o, n)| (o.as_str(), n.as_str())), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.owner.clone(), last.name.clone()));
        seen.extend(page.into_iter().map(|s| (s.owner, s.name, s.sealed)));
    }
    let keys: Vec<_> = seen.iter().map(|(o, n, _)| format!("{o}#{n}")).collect();
    assert_eq!(keys, ["cluster/a#app", "cluster/a#superuser", "cluster/ab#app", "repo/b#cipher-pass"]);
    assert!(seen.iter().all(|(o, n, s)| *s == format!("v1:{o}#{n}")));
    assert!(tx.secret_reseal("cluster/a", "app", "v2:new").await.unwrap());
    assert!(!tx.secret_reseal("cluster/a", "nope", "v2:new").await.unwrap());
    assert!(tx.host_set_ssh_key_sealed(h.host.id, "v2:key").await.unwrap());
    assert!(!tx.host_set_ssh_key_sealed(HostId::new(), "v2:key").await.unwrap());
    assert_eq!(tx.operation_count_unfinished("host.add").await.unwrap(), 1);
    assert_eq!(tx.operation_count_unfinished("host.remove").await.unwrap(), 0);
    tx.commit().await.unwrap();

    let mut tx = store.read().await.unwrap();
    assert_eq!(tx.secret_get("cluster/a", "app").await.unwrap().as_deref(), Some("v2:new"));
    assert_eq!(tx.secret_get("cluster/a", "superuser").await.unwrap().as_deref(), Some("v1:cluster/a#superuser"));
    assert_eq!(tx.host_get_by_id(h.host.id).await.unwrap().unwrap().ssh_key_sealed.as_deref(), Some("v2:key"));
}

/// An HTTP client that goes away drops its request's future wherever it is, also while
/// the store starts a transaction. However late the drop, the transaction must end: a
/// transaction left open on a pooled connection would hold SQLite's write lock for good
/// and refuse every later start on that connection.
async fn a_caller_gone_while_a_transaction_starts_strands_nothing(url: String) {
    let store = open(&url).await;
    // The start polled by hand, dropped after one poll more each time (with time between
    // polls for the database to answer), so that every point where it waits is a point
    // where its caller goes away.
    for polls in 1..=16 {
        for write in [true, false] {
            let mut start = if write { store.write() } else { store.read() };
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for _ in 0..polls {
                if start.as_mut().poll(&mut cx).is_ready() {
                    break; // started (and dropped at once)
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    // More writes than the pool has connections, one after the other: each starts at once
    // and commits.
    for n in 0..40 {
        let mut tx = tokio::time::timeout(Duration::from_secs(20), store.write())
            .await
            .unwrap_or_else(|_| panic!("write {n} did not start: a connection is stuck in a transaction"))
            .unwrap_or_else(|e| panic!("write {n}: {e:?}"));
        tx.project_create(&project(&format!("after-{n}"))).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.read().await.unwrap_or_else(|e| panic!("read {n}: {e:?}"));
        assert!(tx.project_get(&format!("after-{n}")).await.unwrap().is_some());
    }
}

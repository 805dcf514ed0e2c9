//! The web console in a real browser (Debian's headless Chromium through chromedriver)
//! against a real `sovdb serve` over HTTPS, with real clusters on the `local` location:
//! the quick-start scenario done in the console alone — log in with a token, create a
//! backup repository, create a two-member cluster (after a name the API refuses) and
//! watch its operation to the end, see its members, switch over and see the roles change,
//! connect with the snippet it shows, take a backup, restore into a new cluster, delete
//! that by typing its name, find the records in the audit log; see the cluster's metrics
//! charts draw lines and the cluster page follow a switchover made elsewhere without
//! losing a half-typed form; on the alerts page make a webhook channel (to a receiver in
//! this test) and send a test through it, make a rule that fires and see its delivery
//! recorded, make and delete a silence; see the firing alert on the overview and the
//! events stream in with *Follow*; create a viewer — then log in as the viewer with a
//! password and find every change button absent and the API refusing the change anyway.
//!
//! A PNG of every page is saved under `<target dir>/console-screenshots/` (at 1280 px and
//! some at 375 px), for people to look at; the test asserts behaviour, never pixels.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sovdb_test_utils::browser::TestBrowser;
use sovdb_test_utils::cli::{psql, ready_server, wait_for};
use sovdb_test_utils::webhook::Receiver;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");
/// How long one operation may take on a busy two-core machine.
const OPERATION: Duration = Duration::from_secs(600);
const PAGE: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    // BIN is <target dir>/debug/sovdb.
    Path::new(BIN).parent().and_then(Path::parent).expect("the target directory").join("console-screenshots")
}

/// Waits until a new operation (one not in `seen`) shown on the page has ended; wants it
/// succeeded. Returns its ID.
fn operation_succeeds(b: &TestBrowser, what: &str, seen: &mut BTreeSet<String>) -> String {
    let seen_list: Vec<&String> = seen.iter().collect();
    let got = b.wait_for(
        what,
        OPERATION,
        "const seen = arguments[0]; \
         const op = [...document.querySelectorAll('.op-progress')].find(e => !seen.includes(e.dataset.operation)); \
         if (!op) return null; \
         const s = op.dataset.state; \
         const steps = [...op.querySelectorAll('li.step')];          const done = steps.length > 0 && steps.every(li => li.classList.contains('step-succeeded'));          return ['succeeded', 'failed', 'cancelled'].includes(s) ? [op.dataset.operation, s, op.innerText, done] : null",
        vec![json!(seen_list)],
    );
    let (id, state, text) = (got[0].as_str().unwrap(), got[1].as_str().unwrap(), got[2].as_str().unwrap());
    assert_eq!(state, "succeeded", "{what}: {text}");
    // Every step shown, every one done.
    assert_eq!(got[3], json!(true), "{what}: {text}");
    seen.insert(id.to_string());
    id.to_string()
}

/// Opens the console's page `fragment` and waits until its heading reads `title`, so
/// nothing of the page before is taken for it.
fn visit(b: &TestBrowser, url: &str, fragment: &str, title: &str) {
    b.goto(&format!("{url}/{fragment}"));
    b.wait_for(
        &format!("the page {fragment} titled {title:?}"),
        PAGE,
        "const t = document.querySelector('main h1'); return t !== null && t.textContent === arguments[0]",
        vec![json!(title)],
    );
    b.wait_for("the page loaded", PAGE, "return document.querySelector('[aria-busy=true]') === null", vec![]);
    all_labelled(b);
}

/// Every form control of the page has a label, and every button and link a name, for
/// screen readers; and no value the page lacked shows as `null` or `undefined`.
fn all_labelled(b: &TestBrowser) {
    let stray = b
        .script(
            "const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); const bad = []; \
             while (w.nextNode()) { const t = w.currentNode.textContent.trim(); \
               if (t === 'null' || t === 'undefined' || t === 'NaN' || t.includes('[object ')) bad.push(w.currentNode.parentElement.outerHTML.slice(0, 120)); } \
             return bad",
            vec![],
        )
        .unwrap();
    assert_eq!(stray, json!([]), "values the page shows as null or undefined: {}", b.page_text());
    let unlabelled = b
        .script(
            "const named = e => e.textContent.trim() !== '' || e.getAttribute('aria-label'); \
             return [...document.querySelectorAll('input, select, textarea')] \
                 .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label')) \
                 .concat([...document.querySelectorAll('button, a')].filter(e => !named(e))) \
                 .map(e => e.outerHTML.slice(0, 120))",
            vec![],
        )
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label or name: {}", b.page_text());
}

/// Builds the current page again (as navigating to it would).
fn rerender(b: &TestBrowser) {
    b.script("window.dispatchEvent(new HashChangeEvent('hashchange'))", vec![]).unwrap();
}

/// The members' roles on a cluster page, once the table shows `n` members.
fn roles(b: &TestBrowser, n: usize) -> Vec<(String, String)> {
    let v = b.wait_for(
        &format!("{n} members on the page"),
        PAGE,
        "const r = [...document.querySelectorAll('[data-member]')].map(e => [e.dataset.member, e.textContent]); \
         return r.length === arguments[0] ? r : null",
        vec![json!(n)],
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect()
}

fn primary(roles: &[(String, String)]) -> String {
    let p: Vec<&String> = roles.iter().filter(|(_, r)| r == "primary").map(|(m, _)| m).collect();
    assert_eq!(p.len(), 1, "exactly one primary: {roles:?}");
    p[0].clone()
}

fn wait_text(b: &TestBrowser, text: &str) {
    b.wait_for(
        &format!("the text {text:?}"),
        PAGE,
        "return document.body.innerText.includes(arguments[0])",
        vec![json!(text)],
    );
}

/// Waits until a chart of commits or connections draws a line (an SVG path through at
/// least two points); the names of the series drawn.
fn drawn_series(b: &TestBrowser) -> Vec<Value> {
    let v = b.wait_for(
        "a drawn series of commits or connections",
        OPERATION,
        "const ps = [...document.querySelectorAll('figure[data-metric=pg_commits_per_second] path.series, \
                                                  figure[data-metric=pg_connections] path.series')] \
             .filter(p => /L/.test(p.getAttribute('d') || '')); \
         return ps.length ? ps.map(p => p.dataset.series) : null",
        vec![],
    );
    // The legend and the text alternative say the same.
    let alt = b
        .script(
            "const f = document.querySelector('figure[data-metric=pg_connections]'); \
             return [f.querySelectorAll('ul.legend li').length, f.querySelectorAll('details tbody tr').length, \
                     (f.querySelector('.chart-latest') || {}).textContent || '']",
            vec![],
        )
        .unwrap();
    assert!(alt[0].as_u64() > Some(0) && alt[0] == alt[1], "legend and table: {alt}");
    assert!(alt[2].as_str().unwrap().starts_with("Latest: "), "{alt}");
    v.as_array().unwrap().clone()
}

/// Opens `fragment` and waits for a drawn series there.
fn drawn_series_on(b: &TestBrowser, fragment: &str, url: &str) {
    visit(b, url, fragment, "Metrics");
    drawn_series(b);
}

#[test]
fn the_quick_start_in_the_console_and_a_viewer_who_cannot_change_anything() {
    let server = ready_server(Path::new(BIN));
    let shots = screenshots();
    let url = server.url.clone();
    let b = TestBrowser::start(1280, 900);
    let mut ops = BTreeSet::new();

    // The console is served by the API's server, with a strict policy.
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(server.ca_path()).unwrap()).unwrap())
        .build()
        .unwrap();
    let index = http.get(format!("{url}/")).send().unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");

    // Log in with the admin's token (after one the API refuses: the form says so).
    b.goto(&format!("{url}/"));
    let token = b.by_label("API token");
    all_labelled(&b);
    b.screenshot(&shots, "01-login");
    b.type_into(&token, "not-a-token");
    b.click(&b.button("Use token"));
    b.wait_for("the refusal of a wrong token", PAGE, "return document.querySelector('form .error') !== null", vec![]);
    b.type_into(&token, &server.token);
    b.click(&b.button("Use token"));
    b.find("nav a[aria-current=page]", PAGE);
    wait_text(&b, "Clusters by state");
    b.screenshot(&shots, "02-overview");

    // A backup repository, the location's default: clusters archive into it from the start.
    visit(&b, &url, "#/repos", "Backup repositories");
    b.type_into(&b.by_label("Name"), "r1");
    b.type_into(&b.by_label("Path"), server.data_dir().join("backups").to_str().unwrap());
    b.click(&b.by_label("The location's default repository"));
    b.click(&b.button("Create repository"));
    wait_text(&b, "Repository r1 created.");
    rerender(&b);
    wait_text(&b, "posix");
    wait_text(&b, "None: backups of deleted clusters are kept");
    b.screenshot(&shots, "03-repos");

    // Create a cluster: the API's validation message is shown next to the form.
    visit(&b, &url, "#/clusters/new", "Create a cluster");
    let name = b.by_label("Name");
    b.type_into(&name, "Web");
    b.click(&b.button("Create cluster"));
    let err = b.wait_for(
        "the API's refusal",
        PAGE,
        "const e = document.querySelector('form .error'); return e ? e.innerText : null",
        vec![],
    );
    assert!(err.as_str().unwrap().contains("lowercase"), "{err}");
    b.type_into(&name, "web");
    b.type_into(&b.by_label("Members"), "2");
    b.screenshot(&shots, "04-cluster-create");
    b.click(&b.button("Create cluster"));
    b.find(".op-progress", PAGE);
    b.screenshot(&shots, "05-cluster-create-running");
    operation_succeeds(&b, "cluster.create", &mut ops);
    b.screenshot(&shots, "06-cluster-create-done");

    // Its members: one primary, one replica.
    b.click(&b.find("a[href='#/clusters/web']", PAGE));
    let before = roles(&b, 2);
    let old_primary = primary(&before);
    assert!(before.iter().any(|(_, r)| r == "replica"), "{before:?}");
    wait_text(&b, "Backups");
    b.wait_for("the page loaded", PAGE, "return document.querySelector('[aria-busy=true]') === null", vec![]);
    all_labelled(&b);
    b.screenshot(&shots, "07-cluster-detail");

    // Switch over, and see the roles change.
    b.click(&b.find("#switchover", PAGE));
    operation_succeeds(&b, "cluster.switchover", &mut ops);
    b.click(&b.find("#refresh", PAGE));
    let after = roles(&b, 2);
    let new_primary = primary(&after);
    assert_ne!(new_primary, old_primary, "before {before:?}, after {after:?}");
    b.screenshot(&shots, "08-cluster-after-switchover");

    // Connect with what the page shows (the CA it offers is the installation's).
    b.click(&b.find("#show-connection", PAGE));
    let snippet = b.wait_for(
        "the connect snippet",
        PAGE,
        "const e = document.getElementById('connect-snippet'); return e ? e.textContent : null",
        vec![],
    );
    let snippet = snippet.as_str().unwrap();
    let uri = snippet.strip_prefix("psql \"").and_then(|s| s.split("&sslrootcert=").next()).expect(snippet);
    let uri = format!("{uri}&sslrootcert={}", server.ca_path().display());
    assert_eq!(psql(&uri, "SELECT pg_is_in_recovery()").unwrap(), "f");

    // Change a parameter (a reload: no restart), and see it among the cluster's settings.
    b.type_into(&b.by_label("Set parameters"), "work_mem=16MB");
    b.click(&b.button("Change parameters"));
    operation_succeeds(&b, "cluster.set", &mut ops);
    b.click(&b.find("#refresh", PAGE));
    b.wait_for(
        "work_mem 16MB in the parameters",
        PAGE,
        "return [...document.querySelectorAll('#s-settings ~ div tbody tr')].some(r => r.innerText.replace(/\\s+/g, ' ').trim() === 'work_mem 16MB')",
        vec![],
    );
    assert_eq!(psql(&uri, "SHOW work_mem").unwrap(), "16MB");

    // Take a backup; then there are two (the first full one came with the create).
    b.click(&b.button("Take a backup"));
    operation_succeeds(&b, "backup.create", &mut ops);
    b.click(&b.find("#refresh", PAGE));
    b.wait_for(
        "two backups listed",
        PAGE,
        "return document.querySelectorAll('#s-backups ~ div tbody tr').length === 2",
        vec![],
    );
    b.screenshot(&shots, "09-cluster-backups");

    // Restore into a new cluster.
    b.type_into(&b.by_label("New cluster's name"), "web-copy");
    b.click(&b.button("Restore"));
    operation_succeeds(&b, "cluster.restore", &mut ops);

    // Delete it: the button stays disabled until the name is typed exactly.
    visit(&b, &url, "#/clusters/web-copy", "Cluster web-copy");
    b.find("[data-member]", PAGE);
    b.click(&b.find("#delete-cluster", PAGE));
    let confirm = b.by_label("Name of the cluster");
    all_labelled(&b);
    b.type_into(&confirm, "web-cop");
    assert_eq!(
        b.script("return document.querySelector('dialog button.danger').disabled", vec![]).unwrap(),
        json!(true)
    );
    b.screenshot(&shots, "10-delete-confirm");
    b.type_into(&confirm, "web-copy");
    b.click(&b.find("dialog button.danger", PAGE));
    operation_succeeds(&b, "cluster.delete", &mut ops);
    visit(&b, &url, "#/clusters", "Clusters");
    b.find("a[href='#/clusters/web']", PAGE);
    assert!(!b.exists("a[href='#/clusters/web-copy']"), "{}", b.page_text());
    b.screenshot(&shots, "11-clusters");
    // Its backups are kept, listed with the repositories.
    visit(&b, &url, "#/repos", "Backup repositories");
    b.find("button[aria-label='Purge the backups of web-copy']", PAGE);
    b.screenshot(&shots, "11b-repos-retained");

    // The audit log has the switchover, by the admin.
    visit(&b, &url, "#/audit", "Audit log");
    b.type_into(&b.by_label("Target"), "cluster/web");
    b.click(&b.button("Filter"));
    wait_text(&b, "cluster.switchover");
    let text = b.page_text();
    assert!(text.contains("cluster.create") && text.contains("admin"), "{text}");
    b.screenshot(&shots, "12-audit");

    // The cluster's metrics: by now it has run for minutes, so its charts draw lines.
    visit(&b, &url, "#/clusters/web", "Cluster web");
    let before = roles(&b, 2);
    let drawn = drawn_series(&b);
    assert!(!drawn.is_empty(), "{}", b.page_text());
    b.script("document.getElementById('s-metrics').scrollIntoView()", vec![]).unwrap();
    b.screenshot(&shots, "12b-cluster-metrics");
    // Another range: the charts are read again for it.
    b.click(&b.by_label("6 h"));
    b.wait_for(
        "the charts of 6 hours",
        PAGE,
        "return document.querySelector('.charts[data-range=\"6h\"] figure[data-metric]') !== null",
        vec![],
    );
    drawn_series(&b);
    b.click(&b.by_label("1 h"));
    b.wait_for(
        "the charts of an hour",
        PAGE,
        "return document.querySelector('.charts[data-range=\"1h\"] figure[data-metric]') !== null",
        vec![],
    );

    // The page keeps itself up to date: a switchover made elsewhere (the API) shows in the
    // members' roles, while a form being typed in keeps its text and the focus.
    let params = b.by_label("Set parameters");
    b.type_into(&params, "work_mem=32MB");
    let op: Value = http
        .post(format!("{url}/api/v1/clusters/web/switchover"))
        .bearer_auth(&server.token)
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let op_id = op["id"].as_str().unwrap_or_else(|| panic!("{op}")).to_string();
    b.wait_for(
        "the new roles shown without a reload",
        OPERATION,
        "const p = [...document.querySelectorAll('[data-member]')].filter(e => e.textContent === 'primary'); \
         return p.length === 1 && p[0].dataset.member !== arguments[0]",
        vec![json!(primary(&before))],
    );
    let kept = b
        .script(
            "const t = document.querySelector('textarea[name=set-params]'); return [t.value, document.activeElement === t]",
            vec![],
        )
        .unwrap();
    assert_eq!(kept, json!(["work_mem=32MB", true]), "the form lost its text or the focus");
    b.type_into(&params, "");
    wait_for("the API's switchover to end", OPERATION, || {
        let o: Value =
            http.get(format!("{url}/api/v1/operations/{op_id}")).bearer_auth(&server.token).send().ok()?.json().ok()?;
        match o["state"].as_str() {
            Some("succeeded") => Some(()),
            Some("failed" | "cancelled") => panic!("the switchover failed: {o}"),
            _ => None,
        }
    });

    // Alerts: a webhook channel (a receiver in this test), a test message through it.
    let hook = Receiver::start();
    visit(&b, &url, "#/alerts", "Alerts");
    wait_text(&b, "No channels");
    b.type_into(&b.by_label("Channel name"), "hook");
    b.type_into(&b.by_label("Webhook URL"), &hook.url);
    b.click(&b.button("Create channel"));
    wait_text(&b, "Channel hook created.");
    // Its generated secret is shown once, in the answer to the create.
    b.find("#channel-secret", PAGE);
    let secret = b.script("return document.getElementById('channel-secret').textContent", vec![]).unwrap();
    assert_eq!(secret.as_str().map(str::len), Some(40), "{secret}");
    b.click(&b.button("Send a test"));
    wait_text(&b, "Test message to hook delivered: HTTP 200");
    assert!(hook.bodies().iter().any(|v| v["status"] == "test"), "{:?}", hook.bodies());
    // A Slack-compatible channel, deleted again by typing its name.
    b.type_into(&b.by_label("Channel name"), "chat");
    b.choose(&b.by_label("Channel type"), "slack");
    b.type_into(&b.by_label("Slack webhook URL"), &format!("{}/slack", hook.url));
    b.click(&b.button("Create channel"));
    wait_text(&b, "Channel chat created.");
    b.click(&b.find("button[aria-label='Delete channel chat']", PAGE));
    b.type_into(&b.by_label("Name of the channel"), "chat");
    b.click(&b.find("dialog button.danger", PAGE));
    wait_text(&b, "Channel chat deleted.");

    // A rule of our own: first a metric the API does not know (its message by the form),
    // then one that holds while the members run, notifying the webhook.
    b.type_into(&b.by_label("Rule name"), "pg-up");
    b.choose(&b.by_label("Rule's cluster"), "web");
    b.type_into(&b.by_label("Metric"), "pg_nope");
    b.type_into(&b.by_label("Threshold"), "0");
    b.click(&b.button("Create rule"));
    let err = b.wait_for(
        "the API's refusal of the metric",
        PAGE,
        "const e = document.querySelector('#s-rules ~ div form .error'); return e ? e.innerText : null",
        vec![],
    );
    assert!(err.as_str().unwrap().contains("no metric"), "{err}");
    b.type_into(&b.by_label("Metric"), "pg_up");
    b.click(&b.by_label("hook"));
    b.click(&b.button("Create rule"));
    wait_text(&b, "Rule pg-up created.");
    b.wait_for(
        "rule pg-up listed",
        PAGE,
        "return [...document.querySelectorAll('#alert-rules tbody th')].some(t => t.textContent === 'pg-up')",
        vec![],
    );
    // It fires (the page reads its alerts again by itself) and the webhook gets it,
    // recorded as a delivery.
    b.wait_for(
        "pg-up firing on the page",
        OPERATION,
        "return [...document.querySelectorAll('#open-alerts tr')].some(r => r.querySelector('[data-alert-rule=\"pg-up\"]') && r.innerText.includes('firing'))",
        vec![],
    );
    b.wait_for(
        "a delivery to hook delivered",
        OPERATION,
        "return [...document.querySelectorAll('#alert-deliveries tbody tr')].some(r => r.innerText.includes('pg-up') && r.innerText.includes('delivered') && r.innerText.includes('HTTP 200'))",
        vec![],
    );
    assert!(hook.bodies().iter().any(|v| v["rule"] == "pg-up" && v["status"] == "firing"), "{:?}", hook.bodies());
    // A silence of the cluster for an hour, then deleted.
    b.choose(&b.by_label("Silenced cluster"), "web");
    b.type_into(&b.by_label("Duration"), "1h");
    b.type_into(&b.by_label("Comment"), "console test");
    b.click(&b.button("Create silence"));
    wait_text(&b, "Silence created.");
    wait_text(&b, "console test");
    b.screenshot(&shots, "12c-alerts");
    b.click(&b.find("#alert-silences button.danger", PAGE));
    wait_text(&b, "Silence deleted");
    assert!(!b.page_text().contains("console test"), "{}", b.page_text());

    // The overview counts what fires and links to the alerts.
    visit(&b, &url, "#/", "Overview");
    b.wait_for(
        "pg-up among the firing alerts",
        PAGE,
        "return [...document.querySelectorAll('#s-firing-alerts ~ ul a[href=\"#/alerts\"]')].some(a => a.textContent.startsWith('pg-up on '))",
        vec![],
    );
    let firing: u64 = b
        .script("return document.querySelector('#firing-count .count').textContent", vec![])
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(firing >= 1, "{}", b.page_text());
    b.screenshot(&shots, "12d-overview-alerts");

    // Events: the switchovers are listed; following, an event written now comes in live
    // (the rule deleted through the API resolves its alerts).
    visit(&b, &url, "#/events", "Events");
    b.wait_for(
        "the switchover event",
        PAGE,
        "return [...document.querySelectorAll('#events td[data-kind]')].some(t => t.textContent === 'switchover')",
        vec![],
    );
    b.script("document.querySelector('main .view').dataset.mark = 'kept'", vec![]).unwrap();
    b.click(&b.button("Follow"));
    b.find("#follow[aria-pressed=true]", PAGE);
    let deleted = http.delete(format!("{url}/api/v1/alerts/rules/pg-up")).bearer_auth(&server.token).send().unwrap();
    assert_eq!(deleted.status(), 204);
    b.wait_for(
        "the resolve streamed into the page",
        OPERATION,
        "return document.querySelector('main .view[data-mark=kept] #events td[data-kind=\"alert-resolved\"]') !== null",
        vec![],
    );
    wait_text(&b, "new event");
    b.screenshot(&shots, "12e-events");
    b.click(&b.button("Follow"));
    b.find("#follow[aria-pressed=false]", PAGE);

    // The metrics page shows the same charts for a chosen cluster.
    visit(&b, &url, "#/metrics/web", "Metrics");
    drawn_series(&b);
    b.screenshot(&shots, "12f-metrics");

    // The other pages.
    visit(&b, &url, "#/operations", "Operations");
    wait_text(&b, "cluster.restore");
    b.screenshot(&shots, "13-operations");
    visit(&b, &url, &format!("#/operations/{}", ops.iter().next().unwrap()), "Operation cluster.create");
    wait_text(&b, "steps done");
    // What the wait for a primary saw while Patroni initialised, under its step.
    let said = b.wait_for(
        "the wait-primary step's progress",
        PAGE,
        "const p = document.querySelector('li.step[data-step=\"wait-primary\"] .step-progress'); \
         return p ? p.innerText : null",
        vec![],
    );
    assert!(said.as_str().unwrap().starts_with("waiting for a primary (up to 5m): "), "{said}");
    b.screenshot(&shots, "14-operation");
    visit(&b, &url, "#/locations", "Locations and hosts");
    b.find("a[href='#/hosts/local']", PAGE);
    b.screenshot(&shots, "15-locations-hosts");
    // A location made and deleted (by typing its name) in the console.
    b.type_into(&b.by_label("Location name"), "eu");
    b.type_into(&b.by_label("Region"), "eu-west");
    b.click(&b.button("Create location"));
    b.wait_for(
        "location eu listed",
        PAGE,
        "return [...document.querySelectorAll('tbody th')].some(t => t.textContent === 'eu')",
        vec![],
    );
    b.choose(&b.by_label("Location to delete"), "eu");
    b.click(&b.button("Delete location"));
    b.type_into(&b.by_label("Name of the location"), "eu");
    b.click(&b.find("dialog button.danger", PAGE));
    b.wait_for(
        "location eu gone",
        PAGE,
        "const ths = [...document.querySelectorAll('tbody th')]; \
         return ths.some(t => t.textContent === 'local') && !ths.some(t => t.textContent === 'eu')",
        vec![],
    );
    visit(&b, &url, "#/hosts/local", "Host local");
    wait_text(&b, "Agent version");
    b.screenshot(&shots, "16-host");

    // A viewer, made in the console.
    visit(&b, &url, "#/users", "Users, roles and tokens");
    b.type_into(&b.by_label("User name"), "vic");
    b.type_into(&b.by_label("Password"), "a viewer's long password");
    b.choose(&b.by_label("Role in this project"), "viewer");
    b.click(&b.button("Create user"));
    wait_text(&b, "User vic created.");
    b.screenshot(&shots, "17-users");
    // Another, disabled, given a password and deleted by an admin, all in the console.
    b.type_into(&b.by_label("User name"), "zed");
    b.type_into(&b.by_label("Password"), "");
    b.click(&b.button("Create user"));
    wait_text(&b, "User zed created.");
    b.click(&b.find("button[aria-label='Disable user zed']", PAGE));
    wait_text(&b, "User zed disabled");
    b.click(&b.find("button[aria-label='Set the password of user zed']", PAGE));
    b.type_into(&b.by_label("New password for zed"), "zed's long password");
    b.type_into(&b.by_label("The new password for zed again"), "zed's long password");
    b.click(&b.button("Save the password"));
    wait_text(&b, "The password of zed is set.");
    b.click(&b.find("button[aria-label='Delete user zed']", PAGE));
    b.type_into(&b.by_label("Name of the user"), "zed");
    b.click(&b.find("dialog button.danger", PAGE));
    wait_text(&b, "User zed deleted, with their roles and tokens.");
    b.wait_for(
        "zed gone from the list",
        PAGE,
        "return ![...document.querySelectorAll('tbody th')].some(t => t.textContent === 'zed')",
        vec![],
    );

    // At phone width the page still fits: tables scroll inside their box, not the page.
    visit(&b, &url, "#/clusters/web", "Cluster web");
    roles(&b, 2);
    b.resize(375, 812);
    let fits = b.wait_for(
        "the page laid out at 375 px",
        PAGE,
        "return window.innerWidth <= 400 ? [document.documentElement.scrollWidth, window.innerWidth] : null",
        vec![],
    );
    assert!(fits[0].as_u64() <= fits[1].as_u64(), "the page is wider than the window at phone width: {fits}");
    b.screenshot(&shots, "18-cluster-detail-375px");
    b.script("document.getElementById('s-metrics').scrollIntoView()", vec![]).unwrap();
    b.screenshot(&shots, "18b-cluster-metrics-375px");
    b.resize(1280, 900);

    // Log out; log in as the viewer with a password, by keyboard (Enter submits).
    b.click(&b.button("Log out"));
    b.type_into(&b.by_label("User"), "vic");
    b.type_into(&b.by_label("Password"), "a viewer's long password\u{E007}");
    b.find("nav a[aria-current=page]", PAGE);
    visit(&b, &url, "#/clusters", "Clusters");
    b.find("a[href='#/clusters/web']", PAGE);
    assert!(!b.has_button("Create a cluster"), "{}", b.page_text());
    visit(&b, &url, "#/clusters/web", "Cluster web");
    roles(&b, 2);
    wait_text(&b, "Backups");
    b.wait_for(
        "the backups listed",
        PAGE,
        "return document.querySelectorAll('#s-backups ~ div tbody tr').length === 2",
        vec![],
    );
    for absent in ["#switchover", "#failover", "#restart", "#delete-cluster", "#show-connection"] {
        assert!(!b.exists(absent), "a viewer sees {absent}: {}", b.page_text());
    }
    for absent in ["Take a backup", "Restore", "Switch over", "Delete cluster", "Scale", "Change parameters"] {
        assert!(!b.has_button(absent), "a viewer sees {absent:?}: {}", b.page_text());
    }
    all_labelled(&b);
    b.screenshot(&shots, "19-viewer-cluster-detail");
    // The other pages show a viewer nothing to change either (and say what is an admin's).
    let none_of = |buttons: &[&str]| {
        for absent in buttons {
            assert!(!b.has_button(absent), "a viewer sees {absent:?}: {}", b.page_text());
        }
    };
    visit(&b, &url, "#/repos", "Backup repositories");
    wait_text(&b, "web-copy");
    none_of(&["Create repository", "Delete", "Purge", "Restore"]);
    visit(&b, &url, "#/locations", "Locations and hosts");
    wait_text(&b, "Hosts are shown to administrators.");
    none_of(&["Add host", "Create location", "Delete location"]);
    visit(&b, &url, "#/users", "Users, roles and tokens");
    wait_text(&b, "Your API tokens");
    none_of(&["Create user", "Grant the role", "Delete", "Set password", "Disable"]);
    // The viewer changes their own password: the current one must be right.
    b.type_into(&b.by_label("Current password"), "not the password at all");
    b.type_into(&b.by_label("New password"), "a viewer's new long password");
    b.type_into(&b.by_label("The new password again"), "a viewer's new long password");
    b.click(&b.button("Change password"));
    wait_text(&b, "the current password is wrong");
    b.type_into(&b.by_label("Current password"), "a viewer's long password");
    b.type_into(&b.by_label("New password"), "a viewer's new long password");
    b.type_into(&b.by_label("The new password again"), "a viewer's new long password");
    b.click(&b.button("Change password"));
    wait_text(&b, "Your password is changed.");
    visit(&b, &url, "#/alerts", "Alerts");
    wait_text(&b, "hook");
    none_of(&["Create rule", "Create channel", "Create silence", "Delete", "Send a test"]);
    b.screenshot(&shots, "20-viewer-alerts");
    visit(&b, &url, "#/events", "Events");
    wait_text(&b, "switchover");
    drawn_series_on(&b, "#/metrics/web", &url);
    visit(&b, &url, "#/audit", "Audit log");
    wait_text(&b, "The audit log is shown to administrators.");
    assert!(b.exists("nav li[hidden] a[href='#/audit']"), "the audit log is in a viewer's navigation");

    // The API refuses what the page doesn't offer, with the viewer's own token.
    let status = b
        .script(
            "return fetch('/api/v1/clusters/web/switchover', {method: 'POST', headers: {\
               'Authorization': 'Bearer ' + sessionStorage.getItem('sovdb.token'), 'Content-Type': 'application/json'}, \
               body: '{}'}).then(r => r.status)",
            vec![],
        )
        .unwrap();
    assert_eq!(status, json!(403));
    let whoami = b
        .script(
            "return fetch('/api/v1/whoami', {headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('sovdb.token')}}).then(r => r.json())",
            vec![],
        )
        .unwrap();
    assert_eq!(whoami["user"], Value::String("vic".into()), "{whoami}");
    eprintln!("console screenshots in {}", shots.display());
}

/// An admin adds a host over real SSH in the console (a network-namespace test host, its
/// host key pinned), sees it ready with its facts and labels, drains it and removes it.
#[test]
fn an_admin_adds_a_host_over_ssh_and_removes_it_in_the_console() {
    let hosts = sovdb_test_utils::testhosts::TestHosts::up(1);
    let h = &hosts.hosts()[0];
    let server = sovdb_test_utils::server::TestServer::start(Path::new(BIN));
    let made =
        server.cli().args(["location", "create", "dc1", "--provider", "ssh", "--region", "lab"]).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let shots = screenshots();
    let url = server.url.clone();
    let b = TestBrowser::start(1280, 900);
    let mut ops = BTreeSet::new();

    b.goto(&format!("{url}/"));
    b.type_into(&b.by_label("API token"), &server.token);
    b.click(&b.button("Use token"));
    b.find("nav a[aria-current=page]", PAGE);
    visit(&b, &url, "#/locations", "Locations and hosts");
    let in_form = |name: &str| b.find(&format!("form[aria-label='Add a host'] [name={name}]"), PAGE);
    b.type_into(&in_form("host-name"), "h1");
    b.choose(&in_form("location"), "dc1");
    b.type_into(&in_form("address"), &h.address.to_string());
    b.type_into(&in_form("ssh_user"), &h.ssh_user);
    b.type_into(&in_form("ssh_port"), &h.ssh_port.to_string());
    b.type_into(&in_form("ssh_private_key"), &std::fs::read_to_string(&h.ssh_key).unwrap());
    b.type_into(&in_form("ssh_host_key"), &h.host_public_key);
    b.type_into(&in_form("base_dir"), h.base_dir.to_str().unwrap());
    b.type_into(&in_form("labels"), "rack=r1");
    b.screenshot(&shots, "30-add-host");
    b.click(&b.button("Add host"));
    operation_succeeds(&b, "host.add", &mut ops);
    b.screenshot(&shots, "31-host-added");

    visit(&b, &url, "#/hosts/h1", "Host h1");
    wait_text(&b, "Agent version");
    wait_text(&b, "rack=r1");
    wait_text(&b, "ready");
    b.screenshot(&shots, "32-host-detail");
    b.click(&b.find("#drain", PAGE));
    wait_text(&b, "Draining: no new member is placed here");
    b.click(&b.find("#remove-host", PAGE));
    b.type_into(&b.by_label("Name of the host"), "h1");
    b.click(&b.find("dialog button.danger", PAGE));
    operation_succeeds(&b, "host.remove", &mut ops);
    let hosts_left = server.cli().args(["host", "list", "--location", "dc1", "-o", "json"]).output().unwrap();
    let left: Value = serde_json::from_slice(&hosts_left.stdout).unwrap();
    assert_eq!(left, json!([]), "the host is gone");
}

//! Directory logins against a real OpenLDAP `slapd`: users without a local password log in
//! with their directory password, their groups give their roles (again at every login),
//! a user in no mapped group, a wrong password and a local user's name are refused, and a
//! directory that went away is a clear error. Everything is audited, no password is.

use std::path::Path;

use serde_json::Value;
use sovdb_test_utils::cli::{cli, cli_input, json, ok, refused};
use sovdb_test_utils::ldap::{TestLdap, SUFFIX};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sovdb login` as `user` with `password`: the token, or the error.
fn login(server: &TestServer, user: &str, password: &str) -> Result<String, String> {
    let out =
        cli_input(server, &["login", "--user", user, "--password-stdin", "--print-token"], &format!("{password}\n"));
    if out.status.success() {
        Ok(text(&out.stdout).trim().to_string())
    } else {
        Err(text(&out.stderr))
    }
}

/// `whoami` with `token` in project p: the roles.
fn roles(server: &TestServer, token: &str) -> Vec<String> {
    let me = json(server, &["whoami", "--token", token, "-p", "p"]);
    me["roles"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap().to_string()).collect()
}

#[test]
fn directory_users_log_in_with_their_groups_roles() {
    let ldap = TestLdap::start();
    ldap.add_user("ann", "ann-directory-pass");
    ldap.add_user("bob", "bob-directory-pass");
    ldap.add_user("carol", "carol-directory-pass");
    ldap.add_user("admin", "admin-directory-pass");
    ldap.add_group("dbas", &["ann", "admin"]);
    // A groupOfNames needs a member: one that is no person keeps devs alive when bob leaves.
    ldap.add_group("devs", &["bob", "placeholder"]);
    ldap.add_group("others", &["carol"]);

    let server = TestServer::start(Path::new(BIN));
    ok(&server, &["project", "create", "p"]);
    let url = ldap.url();
    let user_dn = format!("uid={{user}},ou=people,{SUFFIX}");
    let groups = format!("ou=groups,{SUFFIX}");
    let set = |extra: &[&str]| {
        let mut a = vec!["admin", "ldap", "set", "--url", &url, "--user-dn", &user_dn, "--group-base", &groups];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };

    // Settings that can't work, or would send passwords in clear, are refused.
    let far = ["admin", "ldap", "set", "--url", "ldap://192.0.2.1", "--user-dn", &user_dn, "--group-base", &groups];
    refused(&server, &[&far[..], &["--map", "dbas=operator@p"]].concat(), "in clear");
    refused(&server, &args(&set(&["--map", "dbas=operator@nowhere"])), "does not exist");
    refused(&server, &args(&set(&["--map", "dbas=viewer"])), "needs a project");
    refused(&server, &["admin", "ldap", "show"], "not found");
    // Before any directory: a user the server does not know can't log in.
    assert!(login(&server, "ann", "ann-directory-pass").is_err());

    ok(&server, &args(&set(&["--map", "dbas=operator@p", "--map", "devs=viewer@p"])));
    let shown = json(&server, &["admin", "ldap", "show"]);
    assert_eq!(shown["roles"].as_array().unwrap().len(), 2, "{shown:#}");

    // ann: operator in p, created on her first login, with a working token.
    let ann = login(&server, "ann", "ann-directory-pass").expect("ann logs in");
    assert_eq!(roles(&server, &ann), ["operator"]);
    ok(&server, &["cluster", "list", "--token", &ann, "-p", "p"]);
    let users = json(&server, &["user", "list"]);
    let listed = users.as_array().unwrap().iter().find(|u| u["name"] == "ann").expect("ann is a user now");
    assert_eq!(listed["has_password"], false, "the password stays in the directory: {listed:#}");

    // bob: a viewer; a change is refused, with the role it needs.
    let bob = login(&server, "bob", "bob-directory-pass").expect("bob logs in");
    assert_eq!(roles(&server, &bob), ["viewer"]);
    let out = cli(
        &server,
        &["repo", "create", "r", "--type", "posix", "--path", "/nonexistent/x", "--token", &bob, "-p", "p"],
    );
    assert!(!out.status.success() && text(&out.stderr).contains("needs the operator role"), "{}", text(&out.stderr));

    // Refused: a wrong password, a user in no mapped group, the local admin's name.
    for (user, password) in [
        ("ann", "not-her-password"),
        ("nobody", "whatever-pass"),
        ("carol", "carol-directory-pass"),
        ("admin", "admin-directory-pass"),
    ] {
        let err = login(&server, user, password).expect_err(user);
        assert!(err.contains("wrong user name or password"), "{user}: {err}");
    }

    // An empty password is never sent (LDAP would take it for an anonymous bind, and say yes).
    let empty = tokio::runtime::Runtime::new().unwrap().block_on(async {
        server
            .http_client()
            .post(format!("{}/api/v1/login", server.url))
            .json(&serde_json::json!({"user": "ann", "password": ""}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(empty.as_u16(), 401);

    // The directory moves bob to dbas: his next login makes him an operator, no longer a viewer.
    ldap.modify(&format!(
        "dn: cn=devs,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=bob,ou=people,{SUFFIX}\n\n\
         dn: cn=dbas,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,{SUFFIX}\n"
    ));
    let bob = login(&server, "bob", "bob-directory-pass").expect("bob logs in again");
    assert_eq!(roles(&server, &bob), ["operator"]);

    // Audited: the logins with how and which roles, the failures with why; no password.
    let audit = json(&server, &["audit", "list", "--target", "user/"]);
    let logins: Vec<&Value> = audit.as_array().unwrap().iter().filter(|r| r["action"] == "auth.login").collect();
    assert!(
        logins.iter().any(|r| r["actor"] == "ann" && r["outcome"] == "success" && r["params"]["via"] == "ldap"),
        "{logins:#?}"
    );
    assert!(
        logins.iter().any(|r| r["actor"] == "carol" && r["params"]["reason"] == "in no mapped directory group"),
        "{logins:#?}"
    );
    assert!(
        logins.iter().any(|r| r["actor"] == "admin" && r["params"]["reason"] == "a local user of that name"),
        "{logins:#?}"
    );
    let everything = audit.to_string() + &std::fs::read_to_string(server.log_path()).unwrap_or_default();
    for secret in ["ann-directory-pass", "bob-directory-pass", "admin-directory-pass", "not-her-password"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }

    // The directory goes away: a login says so, and tokens already given keep working.
    let mut ldap = ldap;
    ldap.stop();
    let err = login(&server, "ann", "ann-directory-pass").expect_err("no directory");
    assert!(err.contains("did not answer"), "{err}");
    ok(&server, &["cluster", "list", "--token", &ann, "-p", "p"]);

    // Off: the directory is no longer asked.
    ok(&server, &["admin", "ldap", "clear"]);
    refused(&server, &["admin", "ldap", "show"], "not found");
}

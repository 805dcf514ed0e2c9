//! Directory logins: an LDAP directory checks the passwords of users who have none here,
//! and its groups give them their roles.
//!
//! The settings are installation-wide (the store's `meta`, key `auth.ldap`; no secret in
//! them: the control plane binds as the user who logs in, never with an account of its
//! own). A login of a user with no local password binds as the DN made from the
//! settings' template; the `cn`s of the `groupOfNames` under the group base that list that
//! DN as a `member` are mapped to roles. The user is created here on the first login and
//! their role bindings are made exactly the mapped ones at every login, so a change in
//! the directory takes effect at the next login. The directory never logs in a user it
//! did not create (a local user of the same name, such as `admin`, stays local): users it
//! created carry a mark in `meta` (`auth.ldap.user/<id>`).

use std::sync::Arc;
use std::time::Duration;

use ldap3::{ldap_escape, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use sovdb_types::*;

use crate::rbac::Action;
use crate::{validate, App, AppError, Ctx, Result};

const META_KEY: &str = "auth.ldap";
/// How long the directory may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The meta key that marks a user the directory created.
pub(crate) fn user_mark(id: UserId) -> String {
    format!("auth.ldap.user/{id}")
}

/// What the directory said of a login.
pub(crate) enum Verdict {
    /// The password is right; the roles of the user's mapped groups (none: no mapped group).
    Member(Vec<RoleGrant>),
    /// No such user, or the wrong password (the directory doesn't say which).
    Refused,
}

impl App {
    pub async fn ldap_get(&self, ctx: &Ctx) -> Result<LdapSettings> {
        ctx.require(Action::DirectoryConfigure)?;
        self.ldap_settings().await?.ok_or_else(|| AppError::not_found("directory settings", "ldap"))
    }

    /// The settings, if any (for logins: no caller yet).
    pub(crate) async fn ldap_settings(&self) -> Result<Option<LdapSettings>> {
        let mut tx = self.store.read().await?;
        match tx.meta_get(META_KEY).await? {
            Some(json) => Ok(Some(serde_json::from_str(&json).map_err(|e| {
                AppError::Internal(anyhow::anyhow!(e).context("the stored LDAP settings are unreadable"))
            })?)),
            None => Ok(None),
        }
    }

    /// Sets the directory logins go to, after checking the settings (not the directory:
    /// it is asked at each login, and may be down now).
    pub async fn ldap_set(&self, ctx: &Ctx, settings: LdapSettings) -> Result<LdapSettings> {
        ctx.require(Action::DirectoryConfigure)?;
        check(&settings)?;
        let mut tx = self.store.write().await?;
        for m in &settings.roles {
            if let Some(p) = &m.project {
                if tx.project_get(p).await?.is_none() {
                    return Err(AppError::Invalid(format!(
                        "group {:?} maps to project {p:?}, which does not exist; create it first (`sovdb project create`)",
                        m.group
                    )));
                }
            }
        }
        tx.meta_set(META_KEY, &serde_json::to_string(&settings).expect("serialise")).await?;
        let params = serde_json::json!({
            "url": settings.url, "user_dn": settings.user_dn, "group_base": settings.group_base,
            "roles": settings.roles, "allow_plaintext": settings.allow_plaintext,
        });
        tx.audit_append(&ctx.audit("auth.ldap.set", "auth/ldap".into(), params)).await?;
        tx.commit().await?;
        Ok(settings)
    }

    /// Turns directory logins off (users it created stay, with their roles, and can use the
    /// tokens they have until they expire).
    pub async fn ldap_clear(&self, ctx: &Ctx) -> Result<()> {
        ctx.require(Action::DirectoryConfigure)?;
        let mut tx = self.store.write().await?;
        if tx.meta_get(META_KEY).await?.is_none() {
            return Err(AppError::not_found("directory settings", "ldap"));
        }
        tx.meta_delete(META_KEY).await?;
        tx.audit_append(&ctx.audit("auth.ldap.clear", "auth/ldap".into(), serde_json::json!({}))).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the directory's user `name` exist here with exactly `grants` as roles, in the
    /// transaction `tx`; the user. Refused for a local user of that name.
    pub(crate) async fn ldap_user_sync(
        &self,
        tx: &mut dyn sovdb_store::Tx,
        name: &str,
        grants: &[RoleGrant],
    ) -> Result<std::result::Result<User, &'static str>> {
        let user = match tx.user_get_by_name(name).await? {
            Some(u) if tx.meta_get(&user_mark(u.id)).await?.is_none() => return Ok(Err("a local user of that name")),
            Some(u) if u.disabled => return Ok(Err("user disabled")),
            Some(u) => u,
            None => {
                let u = User { id: UserId::new(), name: name.to_string(), disabled: false, created_at: crate::now() };
                tx.user_create(&u).await?;
                tx.meta_set(&user_mark(u.id), "ldap").await?;
                u
            }
        };
        let mut want = Vec::with_capacity(grants.len());
        for g in grants {
            let project_id = match &g.project {
                Some(p) => match tx.project_get(p).await? {
                    Some(p) => Some(p.id),
                    None => {
                        tracing::warn!(project = %p, user = %name, "a directory group maps to a project that does not exist");
                        continue;
                    }
                },
                None => None,
            };
            want.push(RoleBinding { user_id: user.id, role: g.role, project_id });
        }
        for b in tx.role_binding_list(user.id).await? {
            if !want.contains(&b) {
                tx.role_binding_delete(&b).await?;
            }
        }
        let have = tx.role_binding_list(user.id).await?;
        for b in want {
            if !have.contains(&b) {
                tx.role_binding_create(&b).await?;
            }
        }
        Ok(Ok(user))
    }
}

/// Refuses settings that can't work or would send passwords in clear over a network.
fn check(s: &LdapSettings) -> Result<()> {
    let url = url::Url::parse(&s.url)
        .map_err(|e| AppError::Invalid(format!("url {:?} is not a URL ({e}): give ldaps://host[:port]", s.url)))?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    match url.scheme() {
        "ldaps" => {}
        "ldap" => {
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback && !s.allow_plaintext {
                return Err(AppError::Invalid(format!(
                    "ldap://{host} would carry passwords in clear: use ldaps://, or set allow_plaintext \
                     (--allow-plaintext) for a network you trust"
                )));
            }
        }
        other => {
            return Err(AppError::Invalid(format!(
                "url scheme {other:?} is not ldap or ldaps: give ldaps://host[:port]"
            )))
        }
    }
    if host.is_empty() {
        return Err(AppError::Invalid(format!("url {:?} names no host", s.url)));
    }
    if s.user_dn.matches("{user}").count() != 1 || !s.user_dn.contains('=') {
        return Err(AppError::Invalid(format!(
            "user_dn {:?} must be a DN with {{user}} once where the login name goes, e.g. uid={{user}},ou=people,dc=example,dc=org",
            s.user_dn
        )));
    }
    if !s.group_base.contains('=') {
        return Err(AppError::Invalid(format!(
            "group_base {:?} is not a DN, e.g. ou=groups,dc=example,dc=org",
            s.group_base
        )));
    }
    if s.roles.is_empty() {
        return Err(AppError::Invalid("map at least one group to a role (--map GROUP=ROLE[@PROJECT])".into()));
    }
    for m in &s.roles {
        if m.group.trim().is_empty() {
            return Err(AppError::Invalid("a group's cn is empty".into()));
        }
        match (m.role, &m.project) {
            (Role::Admin, Some(_)) => {
                return Err(AppError::Invalid(format!(
                    "group {:?}: admin is installation-wide: drop the project",
                    m.group
                )))
            }
            (Role::Admin, None) => {}
            (r, None) => {
                return Err(AppError::Invalid(format!(
                    "group {:?}: role {} needs a project ({}@PROJECT)",
                    m.group,
                    r.as_str(),
                    r.as_str()
                )))
            }
            (_, Some(p)) => validate::dns_label("project", p)?,
        }
    }
    if let Some(pem) = &s.ca_pem {
        if CertificateDer::pem_slice_iter(pem.as_bytes()).next().is_none() {
            return Err(AppError::Invalid("ca_pem holds no PEM certificate".into()));
        }
    }
    Ok(())
}

/// The user's DN: the template with the name escaped as a DN attribute value (RFC 4514).
fn user_dn(template: &str, name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '#' | ' ' if i == 0 => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.push_str("\\00"),
            _ => escaped.push(c),
        }
    }
    if escaped.ends_with(' ') {
        escaped.pop();
        escaped.push_str("\\ ");
    }
    template.replace("{user}", &escaped)
}

/// Asks the directory whether `password` is `name`'s, and which mapped groups they are in.
/// An empty password is refused before anything is sent (LDAP would take it for an
/// anonymous bind and say yes).
pub(crate) async fn authenticate(s: &LdapSettings, name: &str, password: &str) -> Result<Verdict> {
    if password.is_empty() {
        return Ok(Verdict::Refused);
    }
    let unavailable =
        |e: LdapError| AppError::Unavailable(format!("the directory at {} did not answer the login: {e}", s.url));
    let mut settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT);
    if let Some(pem) = &s.ca_pem {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            roots.add(cert).map_err(|e| AppError::Invalid(format!("the directory's CA is unusable: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        settings = settings.set_config(Arc::new(config));
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &s.url).await.map_err(unavailable)?;
    ldap3::drive!(conn);
    ldap.with_timeout(TIMEOUT);
    let dn = user_dn(&s.user_dn, name);
    let bound = ldap.simple_bind(&dn, password).await.map_err(unavailable)?;
    // 49: invalidCredentials (no such user, or the wrong password); 32: noSuchObject.
    if matches!(bound.rc, 49 | 32) {
        let _ = ldap.unbind().await;
        return Ok(Verdict::Refused);
    }
    bound.success().map_err(unavailable)?;
    let filter = format!("(&(objectClass=groupOfNames)(member={}))", ldap_escape(&dn));
    ldap.with_timeout(TIMEOUT);
    let (entries, _) = ldap
        .search(&s.group_base, Scope::Subtree, &filter, vec!["cn"])
        .await
        .map_err(unavailable)?
        .success()
        .map_err(unavailable)?;
    let _ = ldap.unbind().await;
    let groups: Vec<String> =
        entries.into_iter().flat_map(|e| SearchEntry::construct(e).attrs.remove("cn").unwrap_or_default()).collect();
    let mut grants: Vec<RoleGrant> = Vec::new();
    for m in &s.roles {
        if groups.iter().any(|g| g.eq_ignore_ascii_case(&m.group)) {
            let g = RoleGrant { role: m.role, project: m.project.clone() };
            if !grants.contains(&g) {
                grants.push(g);
            }
        }
    }
    Ok(Verdict::Member(grants))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LdapSettings {
        LdapSettings {
            url: "ldaps://ldap.example.org".into(),
            user_dn: "uid={user},ou=people,dc=example,dc=org".into(),
            group_base: "ou=groups,dc=example,dc=org".into(),
            roles: vec![LdapRoleMap { group: "dbas".into(), role: Role::Operator, project: Some("p".into()) }],
            ca_pem: None,
            allow_plaintext: false,
        }
    }

    #[test]
    fn settings_that_cannot_work_or_leak_passwords_are_refused() {
        assert!(check(&settings()).is_ok());
        let local = LdapSettings { url: "ldap://127.0.0.1:3389".into(), ..settings() };
        assert!(check(&local).is_ok(), "plain LDAP on loopback");
        let far = LdapSettings { url: "ldap://ldap.example.org".into(), ..settings() };
        assert!(check(&far).unwrap_err().to_string().contains("in clear"));
        assert!(check(&LdapSettings { allow_plaintext: true, ..far }).is_ok());
        let no_user = LdapSettings { user_dn: "ou=people,dc=example,dc=org".into(), ..settings() };
        assert!(check(&no_user).unwrap_err().to_string().contains("{user}"));
        let http = LdapSettings { url: "http://x".into(), ..settings() };
        assert!(check(&http).unwrap_err().to_string().contains("not ldap"));
        let admin_in_project = LdapSettings {
            roles: vec![LdapRoleMap { group: "g".into(), role: Role::Admin, project: Some("p".into()) }],
            ..settings()
        };
        assert!(check(&admin_in_project).unwrap_err().to_string().contains("installation-wide"));
        let viewer_nowhere = LdapSettings {
            roles: vec![LdapRoleMap { group: "g".into(), role: Role::Viewer, project: None }],
            ..settings()
        };
        assert!(check(&viewer_nowhere).unwrap_err().to_string().contains("needs a project"));
        assert!(check(&LdapSettings { roles: vec![], ..settings() }).is_err());
    }

    #[test]
    fn a_login_name_cannot_change_the_dn() {
        let t = "uid={user},ou=people,dc=example,dc=org";
        assert_eq!(user_dn(t, "ann"), "uid=ann,ou=people,dc=example,dc=org");
        assert_eq!(user_dn(t, "a,ou=admins"), "uid=a\\,ou\\=admins,ou=people,dc=example,dc=org");
        assert_eq!(user_dn(t, "#x "), "uid=\\#x\\ ,ou=people,dc=example,dc=org");
    }
}

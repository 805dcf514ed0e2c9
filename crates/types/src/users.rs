//! Users, their roles and their API tokens, as the API shows them, and the bodies that
//! change them.
//!
//! Passwords and token secrets travel in some of these bodies; their `Debug` prints a
//! placeholder instead, so a body that ends up in a log or an error never shows one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;
use crate::resources::Role;

/// A role a user holds, with its project by name (absent for installation-wide roles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    pub role: Role,
    /// The project the role applies to; absent for `admin`, required for every other role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// A user with the roles they hold. Callers who are not admins see only the roles in the
/// request's project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub name: String,
    /// A disabled user's tokens are refused and they can't log in.
    pub disabled: bool,
    /// Whether the user can log in with a password (otherwise only with tokens).
    pub has_password: bool,
    pub roles: Vec<RoleGrant>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/users`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// A DNS label, unique in the installation.
    pub name: String,
    /// The password for `POST /login` (at least 12 characters). Without one the user can
    /// only use tokens an admin creates for them.
    #[serde(default)]
    pub password: Option<String>,
    /// A role to grant at once (a project owner may create users only this way, with a
    /// role in their project).
    #[serde(default)]
    pub role: Option<Role>,
    /// The project of `role` (required for every role but `admin`).
    #[serde(default)]
    pub project: Option<String>,
}

impl std::fmt::Debug for UserCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreate")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("role", &self.role)
            .field("project", &self.project)
            .finish()
    }
}

/// Body of `PUT /api/v1/users/{name}/password`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The new password (at least 12 characters).
    pub password: String,
    /// The password now: required to change your own, not for an admin setting another
    /// user's.
    #[serde(default)]
    pub current_password: Option<String>,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange")
            .field("password", &"<redacted>")
            .field("current_password", &self.current_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Body of `POST /api/v1/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreate {
    /// A DNS label, unique in the installation.
    pub name: String,
}

/// An API token as the API shows it: never its secret, nor the secret's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    /// The user the token acts as.
    pub user: String,
    pub created_at: DateTime<Utc>,
    /// Absent: the token never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// A token just created, with its secret: the only time the secret is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    pub token: Token,
    /// Send as `Authorization: Bearer <secret>`. Not stored, not shown again.
    pub secret: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken").field("token", &self.token).field("secret", &"<redacted>").finish()
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A name to tell tokens apart (default `token`); need not be unique.
    #[serde(default)]
    pub name: Option<String>,
    /// The user the token acts as (default: the caller; another user: admin only).
    #[serde(default)]
    pub user: Option<String>,
    /// Lifetime in seconds (default 90 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// A token that never expires (not together with `expires_in_secs`).
    #[serde(default)]
    pub never_expires: bool,
}

/// Body of `POST /api/v1/login`.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
    /// Lifetime of the new token in seconds (default 12 hours, at most 30 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let login = Login { user: "ann".into(), password: "hunter2-hunter2".into(), expires_in_secs: None };
        let create =
            UserCreate { name: "ann".into(), password: Some("hunter2-hunter2".into()), role: None, project: None };
        let token = NewToken {
            token: Token {
                id: TokenId::new(),
                name: "ci".into(),
                user: "ann".into(),
                created_at: Utc::now(),
                expires_at: None,
                revoked: false,
            },
            secret: "sovdb_s3cret".into(),
        };
        for text in [format!("{login:?}"), format!("{create:?}"), format!("{token:?}")] {
            assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
            assert!(text.contains("ann"), "{text}");
        }
    }
}

/// How `POST /login` checks users against an LDAP directory (installation-wide; admin).
/// A user without a local password logs in with a simple bind as the DN made from
/// `user_dn`; the `cn`s of the groups under `group_base` that list that DN as a `member`
/// (`groupOfNames`) give the user's roles through `roles`, again at every login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` (only on a loopback address unless
    /// `allow_plaintext`: a simple bind sends the password as it is).
    pub url: String,
    /// The user's DN, with `{user}` where the login name goes (escaped as a DN value), e.g.
    /// `uid={user},ou=people,dc=example,dc=org`.
    pub user_dn: String,
    /// Where the groups are, e.g. `ou=groups,dc=example,dc=org`.
    pub group_base: String,
    /// Group `cn` → role. A user in no mapped group can't log in.
    pub roles: Vec<LdapRoleMap>,
    /// PEM CA certificates that signed the directory's certificate (`ldaps://`); default:
    /// the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Accept `ldap://` to a non-loopback address.
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// One group's role: `role` (in `project`, for every role but `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapRoleMap {
    /// The group's `cn`.
    pub group: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

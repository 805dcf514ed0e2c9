//! Who is calling. Tokens are random secrets shown once; the store keeps only their
//! SHA-256, so a leaked store does not leak usable tokens, and looking a token up by its
//! hash needs no constant-time comparison of secrets. What a caller may do is `rbac`'s.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use sovdb_types::audit::{AuditEntry, Outcome};
use sovdb_types::{Project, Role, RoleBinding, User, WhoAmI};

use crate::{App, AppError, Result};

/// Prefix of every API token, so leaked tokens are easy to find in logs and repositories.
const TOKEN_PREFIX: &str = "sovdb_";

/// A new token secret: 40 random alphanumerics (about 238 bits).
pub fn new_token_secret() -> String {
    format!("{TOKEN_PREFIX}{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 40))
}

/// What the store keeps of a token.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The context every request runs with: who, in which project, from where.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub user: User,
    pub roles: Vec<RoleBinding>,
    pub project: Project,
    /// The client's IP address, when the request came over the network.
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// The token the request came with.
    pub token: Option<sovdb_types::TokenId>,
}

impl Ctx {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|b| b.role == Role::Admin && b.project_id.is_none())
    }

    /// An audit entry for an action this caller took.
    pub(crate) fn audit(&self, action: &str, target: String, params: serde_json::Value) -> AuditEntry {
        AuditEntry {
            at: crate::now(),
            actor: self.user.name.clone(),
            project: Some(self.project.name.clone()),
            source: self.source.clone(),
            action: action.to_string(),
            target,
            params,
            outcome: Outcome::Success,
            request_id: self.request_id.clone(),
        }
    }

    pub fn whoami(&self) -> WhoAmI {
        WhoAmI {
            user: self.user.name.clone(),
            user_id: self.user.id,
            project: self.project.name.clone(),
            roles: self.roles.clone(),
        }
    }
}

impl App {
    /// Turns a bearer token and a project name into a request context.
    ///
    /// A project the caller holds no role in answers "not found", exactly like one that
    /// does not exist, so project names don't leak across tenants.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        project: Option<&str>,
        source: Option<String>,
        request_id: Option<String>,
    ) -> Result<Ctx> {
        let secret = bearer.ok_or_else(|| {
            AppError::Unauthenticated(
                "missing bearer token: send `Authorization: Bearer <token>` (the CLI takes --token, SOVDB_TOKEN or the server's admin.token)".into(),
            )
        })?;
        let bad = || AppError::Unauthenticated("the bearer token is invalid, expired or revoked".into());
        let mut tx = self.store.read().await?;
        let token = tx.token_get_by_secret(&hash_token(secret)).await?.ok_or_else(bad)?;
        if token.revoked || token.expires_at.is_some_and(|t| t <= crate::now()) {
            return Err(bad());
        }
        let user = tx.user_get(token.user_id).await?.ok_or_else(bad)?;
        if user.disabled {
            return Err(AppError::Unauthenticated(format!("user {:?} is disabled", user.name)));
        }
        let roles = tx.role_binding_list(user.id).await?;
        let project_name = project.unwrap_or(crate::DEFAULT_PROJECT);
        let project = tx
            .project_get(project_name)
            .await?
            .filter(|p| {
                roles.iter().any(|b| (b.role == Role::Admin && b.project_id.is_none()) || b.project_id == Some(p.id))
            })
            .ok_or_else(|| AppError::not_found("project", project_name))?;
        Ok(Ctx { user, roles, project, source, request_id, token: Some(token.id) })
    }
}

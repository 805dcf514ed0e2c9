//! The first start of an installation: the `default` project, the `admin` user with an API
//! token, and the `local` location, so a fresh install works with no setup.

use sovdb_types::audit::{AuditEntry, Outcome};
use sovdb_types::*;

use crate::auth::{hash_token, new_token_secret};
use crate::{App, AppError, Result};

pub const DEFAULT_PROJECT: &str = "default";
pub const ADMIN_USER: &str = "admin";
pub const LOCAL_LOCATION: &str = "local";

/// What a first start created.
#[derive(Debug)]
pub struct Bootstrapped {
    pub installation_id: String,
}

pub(crate) fn system_entry(action: &str, target: String, params: serde_json::Value) -> AuditEntry {
    AuditEntry {
        at: crate::now(),
        actor: "system".into(),
        project: None,
        source: None,
        action: action.into(),
        target,
        params,
        outcome: Outcome::Success,
        request_id: None,
    }
}

impl App {
    /// Creates what a new installation needs, once. `save_token` receives the admin token's
    /// secret and must store it (the server writes it to `admin.token`); it is never shown
    /// again. Returns `None` when the installation already exists.
    ///
    /// Crash safety: everything is written in one transaction, and the token is saved
    /// before that transaction commits. A crash before the commit leaves no installation,
    /// so the next start bootstraps again and overwrites the saved token; a crash after it
    /// leaves a complete installation whose token is already saved.
    pub async fn bootstrap(&self, save_token: impl FnOnce(&str) -> anyhow::Result<()>) -> Result<Option<Bootstrapped>> {
        let mut tx = self.store.write().await?;
        if tx.meta_get("installation_id").await?.is_some() {
            return Ok(None);
        }
        let now = crate::now();
        let installation_id = uuid::Uuid::now_v7().to_string();
        tx.meta_set("installation_id", &installation_id).await?;
        tx.meta_set("bootstrapped_at", &now.to_rfc3339()).await?;
        tx.audit_append(&system_entry(
            "installation.create",
            format!("installation/{installation_id}"),
            serde_json::json!({}),
        ))
        .await?;

        let project = Project { id: ProjectId::new(), name: DEFAULT_PROJECT.into(), created_at: now };
        tx.project_create(&project).await?;
        tx.audit_append(&system_entry("project.create", format!("project/{DEFAULT_PROJECT}"), serde_json::json!({})))
            .await?;

        let admin = User { id: UserId::new(), name: ADMIN_USER.into(), disabled: false, created_at: now };
        tx.user_create(&admin).await?;
        tx.role_binding_create(&RoleBinding { user_id: admin.id, role: Role::Admin, project_id: None }).await?;
        tx.audit_append(&system_entry(
            "user.create",
            format!("user/{ADMIN_USER}"),
            serde_json::json!({"role": "admin"}),
        ))
        .await?;

        let secret = new_token_secret();
        let token = TokenRecord {
            id: TokenId::new(),
            user_id: admin.id,
            name: "admin.token".into(),
            secret_sha256: hash_token(&secret),
            created_at: now,
            expires_at: None,
            revoked: false,
        };
        tx.token_create(&token).await?;
        tx.audit_append(&system_entry(
            "token.create",
            format!("token/{}", token.id),
            serde_json::json!({"user": ADMIN_USER, "name": token.name}),
        ))
        .await?;

        let local = Location {
            id: LocationId::new(),
            name: LOCAL_LOCATION.into(),
            provider: Provider::Local,
            region: LOCAL_LOCATION.into(),
            zone: None,
            labels: Labels::new(),
            created_at: now,
        };
        tx.location_create(&local).await?;
        tx.audit_append(&system_entry(
            "location.create",
            format!("location/{LOCAL_LOCATION}"),
            serde_json::to_value(LocationCreate {
                name: local.name.clone(),
                provider: local.provider,
                region: local.region.clone(),
                zone: None,
                labels: Labels::new(),
            })
            .expect("serialise"),
        ))
        .await?;

        save_token(&secret).map_err(AppError::Internal)?;
        tx.commit().await?;
        Ok(Some(Bootstrapped { installation_id }))
    }
}

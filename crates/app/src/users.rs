//! Users, their roles, and projects to hold roles in.
//!
//! Admins manage every user; a project owner manages the members of their project: creates
//! users with a role there, grants and revokes that project's roles, lists its members.
//! `admin` is installation-wide only, every other role belongs to one project. The last
//! enabled admin can be neither revoked nor disabled, so an installation is never left
//! without one. Passwords are stored as argon2id hashes only (see `passwords`); audit
//! records say whether a user has one, never what it is.

use sovdb_store::StoreError;
use sovdb_types::audit::Outcome;
use sovdb_types::*;

use crate::rbac::Action;
use crate::{passwords, validate};
use crate::{App, AppError, Ctx, Result};

impl App {
    /// Creates a project (admin). Nobody holds a role in it yet but admins.
    pub async fn project_create(&self, ctx: &Ctx, req: ProjectCreate) -> Result<Project> {
        ctx.require(Action::ProjectCreate)?;
        validate::dns_label("project name", &req.name)?;
        let project = Project { id: ProjectId::new(), name: req.name.clone(), created_at: crate::now() };
        let mut tx = self.store.write().await?;
        match tx.project_create(&project).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!("project {:?} already exists", req.name)))
            }
            other => other?,
        }
        tx.audit_append(&ctx.audit("project.create", format!("project/{}", req.name), serde_json::json!({}))).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// A grant's project, checked: `admin` has none, every other role needs one, and the
    /// caller must belong to it (else "not found", like any project they can't see).
    async fn grant_scope(&self, ctx: &Ctx, grant: &RoleGrant) -> Result<Option<Project>> {
        match (grant.role, &grant.project) {
            (Role::Admin, Some(_)) => {
                Err(AppError::Invalid("admin is an installation-wide role: grant it without a project".into()))
            }
            (Role::Admin, None) => Ok(None),
            (role, None) => Err(AppError::Invalid(format!("{} is a project role: name the project", role.as_str()))),
            (_, Some(name)) => {
                let project = self.store.read().await?.project_get(name).await?;
                project
                    .filter(|p| ctx.is_admin() || ctx.role_in(p).is_some())
                    .map(Some)
                    .ok_or_else(|| AppError::not_found("project", name))
            }
        }
    }

    /// Checks the caller may grant or revoke `grant` (in `project`, its checked scope).
    fn require_grant(ctx: &Ctx, project: Option<&Project>) -> Result<()> {
        match project {
            None => ctx.require(Action::AdminGrant),
            Some(p) => ctx.require_in(Action::MemberChange, p),
        }
    }

    pub async fn user_create(&self, ctx: &Ctx, req: UserCreate) -> Result<UserView> {
        let grant = match (req.role, &req.project) {
            (Some(role), project) => Some(RoleGrant { role, project: project.clone() }),
            (None, Some(_)) => return Err(AppError::Invalid("a project is given with a role: add the role".into())),
            (None, None) => None,
        };
        let scope = match &grant {
            Some(g) => {
                let scope = self.grant_scope(ctx, g).await?;
                Self::require_grant(ctx, scope.as_ref())?;
                scope
            }
            None => {
                ctx.require(Action::UserCreate)?;
                None
            }
        };
        validate::dns_label("user name", &req.name)?;
        let hash = match req.password {
            Some(password) => {
                passwords::check_new(&password)?;
                Some(blocking(move || passwords::hash(&password)).await??)
            }
            None => None,
        };

        let user = User { id: UserId::new(), name: req.name.clone(), disabled: false, created_at: crate::now() };
        let mut tx = self.store.write().await?;
        match tx.user_create(&user).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!("user {:?} already exists", req.name)))
            }
            other => other?,
        }
        if let Some(h) = &hash {
            tx.user_password_set(user.id, Some(h)).await?;
        }
        if let Some(g) = &grant {
            tx.role_binding_create(&RoleBinding {
                user_id: user.id,
                role: g.role,
                project_id: scope.as_ref().map(|p| p.id),
            })
            .await?;
        }
        let params = serde_json::json!({
            "password": hash.is_some(),
            "role": grant.as_ref().map(|g| g.role),
            "project": grant.as_ref().and_then(|g| g.project.clone()),
        });
        tx.audit_append(&ctx.audit("user.create", format!("user/{}", user.name), params)).await?;
        tx.commit().await?;
        Ok(UserView {
            id: user.id,
            name: user.name,
            disabled: false,
            has_password: hash.is_some(),
            roles: grant.into_iter().collect(),
            created_at: user.created_at,
        })
    }

    /// Every user, for admins; the members of the request's project (with only their roles
    /// there) for its owners.
    pub async fn user_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<UserView>> {
        ctx.require(Action::MemberRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        let scope = if ctx.is_admin() { None } else { Some(ctx.project.id) };
        let users = tx.user_list(scope, &page).await?;
        let mut items = Vec::with_capacity(users.items.len());
        for u in users.items {
            let roles = tx.role_binding_list(u.id).await?;
            items.push(user_view(tx.as_mut(), ctx, u, roles).await?);
        }
        Ok(Page { items, next_page_token: users.next_page_token })
    }

    /// Sets a user's password. Your own: with the current one, checked as a login is (a
    /// wrong one counts as a failed login of yours: throttled and audited). Another user's:
    /// admins only, without theirs (a reset). Either way, the user's password logins (tokens
    /// named `login`) are revoked, except the one making this request: a stolen session
    /// ends with the password it came from. Named API tokens stay. Directory users change
    /// their password in the directory.
    pub async fn user_password_change(&self, ctx: &Ctx, name: &str, req: PasswordChange) -> Result<UserView> {
        use crate::throttle::{self, Key};
        let own = ctx.user.name == name;
        if !own {
            ctx.require(Action::UserPasswordReset)?;
        }
        let (user, stored) = {
            let mut tx = self.store.read().await?;
            let user = tx.user_get_by_name(name).await?.ok_or_else(|| AppError::not_found("user", name))?;
            let stored = tx.user_password_get(user.id).await?;
            (user, stored)
        };
        if own {
            let Some(current) = req.current_password.clone() else {
                return Err(AppError::Invalid(
                    "give your current password to change it (`sovdb user passwd` asks for it)".into(),
                ));
            };
            if stored.is_none() {
                let why = if self.ldap_settings().await?.is_some() {
                    "your password is the directory's: change it there"
                } else {
                    "you have no password here: an admin sets one with `sovdb user passwd NAME`"
                };
                return Err(AppError::Invalid(why.into()));
            }
            let user_key = Key::User(name.to_owned());
            let now = std::time::Instant::now();
            if let Some(wait) = self.logins.locked_for(&user_key, now) {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(AppError::Throttled {
                    message: format!("too many failed logins for user {name:?}: try again in {secs} s"),
                    retry_after_secs: secs,
                });
            }
            let check = stored.clone();
            if !blocking(move || passwords::verify(&current, check.as_deref())).await? {
                self.logins.fail(user_key, &throttle::PER_USER, now);
                let mut entry = ctx.audit(
                    "user.password",
                    format!("user/{name}"),
                    serde_json::json!({"reason": "wrong current password"}),
                );
                entry.outcome = Outcome::Failure;
                let mut tx = self.store.write().await?;
                tx.audit_append(&entry).await?;
                tx.commit().await?;
                return Err(AppError::Forbidden("the current password is wrong".into()));
            }
        }
        passwords::check_new(&req.password)?;
        let password = req.password.clone();
        let hash = blocking(move || passwords::hash(&password)).await??;

        let mut tx = self.store.write().await?;
        tx.user_password_set(user.id, Some(&hash)).await?;
        let mut revoked = 0;
        for t in tx.token_find(user.id, "login").await? {
            if !t.revoked && Some(t.id) != ctx.token && tx.token_revoke(t.id).await? {
                revoked += 1;
            }
        }
        let params = serde_json::json!({"reset": !own, "logins_revoked": revoked});
        tx.audit_append(&ctx.audit("user.password", format!("user/{name}"), params)).await?;
        let roles = tx.role_binding_list(user.id).await?;
        let view = user_view(tx.as_mut(), ctx, user, roles).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Deletes a user (admin) with their roles and every token of theirs (refused at once).
    /// Not yourself, and not the last enabled admin. Their audit records stay, naming
    /// them; the name can be given to a new user. A directory user the directory still
    /// lets in comes back at their next login: disable them to keep them out.
    pub async fn user_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        ctx.require(Action::UserDelete)?;
        if ctx.user.name == name {
            return Err(AppError::Conflict(
                "you can't delete yourself: another admin can (or disable your user instead)".into(),
            ));
        }
        let mut tx = self.store.write().await?;
        let user = tx.user_get_by_name(name).await?.ok_or_else(|| AppError::not_found("user", name))?;
        let roles = tx.role_binding_list(user.id).await?;
        if !user.disabled && roles.iter().any(is_admin) && tx.role_binding_count_admins().await? <= 1 {
            return Err(AppError::Conflict(format!(
                "user {name:?} is the last enabled admin: grant admin to another user before deleting this one"
            )));
        }
        let id = user.id;
        let view = user_view(tx.as_mut(), ctx, user, roles).await?;
        tx.user_delete(id).await?;
        let params = serde_json::json!({"roles": view.roles});
        tx.audit_append(&ctx.audit("user.delete", format!("user/{name}"), params)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables (or enables again) a user: a disabled user's tokens are refused from the
    /// next request on, and they can't log in. The last enabled admin can't be disabled.
    pub async fn user_set_disabled(&self, ctx: &Ctx, name: &str, disabled: bool) -> Result<UserView> {
        ctx.require(Action::UserDisable)?;
        let mut tx = self.store.write().await?;
        let user = tx.user_get_by_name(name).await?.ok_or_else(|| AppError::not_found("user", name))?;
        let roles = tx.role_binding_list(user.id).await?;
        if disabled && !user.disabled && roles.iter().any(is_admin) && tx.role_binding_count_admins().await? <= 1 {
            return Err(AppError::Conflict(format!(
                "user {name:?} is the last enabled admin: grant admin to another user before disabling this one"
            )));
        }
        if user.disabled != disabled {
            tx.user_set_disabled(user.id, disabled).await?;
            let action = if disabled { "user.disable" } else { "user.enable" };
            tx.audit_append(&ctx.audit(action, format!("user/{name}"), serde_json::json!({}))).await?;
        }
        let view = user_view(tx.as_mut(), ctx, User { disabled, ..user }, roles).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// What a grant or revoke works on, once the caller may: a write transaction, the
    /// user, and the binding meant.
    async fn grant_target(
        &self,
        ctx: &Ctx,
        name: &str,
        grant: &RoleGrant,
    ) -> Result<(Box<dyn sovdb_store::Tx>, User, RoleBinding)> {
        let scope = self.grant_scope(ctx, grant).await?;
        Self::require_grant(ctx, scope.as_ref())?;
        let mut tx = self.store.write().await?;
        let user = tx.user_get_by_name(name).await?.ok_or_else(|| AppError::not_found("user", name))?;
        let binding = RoleBinding { user_id: user.id, role: grant.role, project_id: scope.as_ref().map(|p| p.id) };
        Ok((tx, user, binding))
    }

    /// Grants a role: `admin` (admins only) or a role in a project (its owners too).
    pub async fn role_grant(&self, ctx: &Ctx, name: &str, grant: RoleGrant) -> Result<UserView> {
        let (mut tx, user, binding) = self.grant_target(ctx, name, &grant).await?;
        match tx.role_binding_create(&binding).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!("user {name:?} already has {}", describe(&grant))))
            }
            other => other?,
        }
        let params = serde_json::to_value(&grant).expect("serialise");
        tx.audit_append(&ctx.audit("role.grant", format!("user/{name}"), params)).await?;
        let roles = tx.role_binding_list(user.id).await?;
        let view = user_view(tx.as_mut(), ctx, user, roles).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Revokes a role; the last enabled admin's `admin` role is kept.
    pub async fn role_revoke(&self, ctx: &Ctx, name: &str, grant: RoleGrant) -> Result<UserView> {
        let (mut tx, user, binding) = self.grant_target(ctx, name, &grant).await?;
        if grant.role == Role::Admin && !user.disabled && tx.role_binding_count_admins().await? <= 1 {
            let holds = tx.role_binding_list(user.id).await?.iter().any(is_admin);
            if holds {
                return Err(AppError::Conflict(format!(
                    "user {name:?} is the last enabled admin: grant admin to another user before revoking it"
                )));
            }
        }
        if !tx.role_binding_delete(&binding).await? {
            return Err(AppError::not_found("role", format!("{} of user {name}", describe(&grant))));
        }
        let params = serde_json::to_value(&grant).expect("serialise");
        tx.audit_append(&ctx.audit("role.revoke", format!("user/{name}"), params)).await?;
        let roles = tx.role_binding_list(user.id).await?;
        let view = user_view(tx.as_mut(), ctx, user, roles).await?;
        tx.commit().await?;
        Ok(view)
    }
}

/// A user as the caller may see them: admins see every role; anyone else only the roles in
/// projects they hold a role in themselves.
async fn user_view(tx: &mut dyn sovdb_store::Tx, ctx: &Ctx, user: User, roles: Vec<RoleBinding>) -> Result<UserView> {
    let mut grants = Vec::new();
    for b in roles {
        let project = match b.project_id {
            None => None,
            Some(id) if ctx.is_admin() || ctx.roles.iter().any(|r| r.project_id == Some(id)) => {
                Some(tx.project_get_by_id(id).await?.map(|p| p.name).unwrap_or_else(|| id.to_string()))
            }
            Some(_) => continue,
        };
        grants.push(RoleGrant { role: b.role, project });
    }
    let has_password = tx.user_password_get(user.id).await?.is_some();
    Ok(UserView {
        id: user.id,
        name: user.name,
        disabled: user.disabled,
        has_password,
        roles: grants,
        created_at: user.created_at,
    })
}

fn is_admin(b: &RoleBinding) -> bool {
    b.role == Role::Admin && b.project_id.is_none()
}

/// "the admin role", "the viewer role in project p".
fn describe(g: &RoleGrant) -> String {
    match &g.project {
        None => format!("the {} role", g.role.as_str()),
        Some(p) => format!("the {} role in project {p}", g.role.as_str()),
    }
}

/// Runs CPU-heavy work (password hashing) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::Internal(anyhow::anyhow!("a blocking task failed: {e}")))
}

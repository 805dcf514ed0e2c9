//! API tokens and password logins.
//!
//! A token's secret is shown once, when it is made; the store keeps its SHA-256 (see
//! `auth`). Everyone manages their own tokens; admins also other users'. A login trades a
//! user name and password for a new token named `login` that expires (12 hours unless
//! asked otherwise, at most 30 days).
//!
//! Logins are throttled per user name and per source address (see `throttle`), and every
//! login is audited, failed ones too (`auth.login`, outcome `failure`, with the reason but
//! never the password).

use std::time::{Duration, Instant};

use sovdb_types::audit::{AuditEntry, Outcome};
use sovdb_types::*;

use crate::auth::{hash_token, new_token_secret};
use crate::rbac::Action;
use crate::throttle::{self, Key};
use crate::users::blocking;
use crate::{passwords, validate};
use crate::{App, AppError, Ctx, Result};

/// A token's lifetime when `token create` does not say.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// A login token's lifetime when the login does not say.
pub const DEFAULT_LOGIN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The longest a login token may live.
pub const MAX_LOGIN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest any expiring token may live (ten years).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The one answer to a failed login, whatever failed, so it tells nothing about the user.
const LOGIN_FAILED: &str = "wrong user name or password";

fn expiry(secs: u64, max: Duration) -> Result<chrono::DateTime<chrono::Utc>> {
    if secs == 0 || secs > max.as_secs() {
        return Err(AppError::Invalid(format!("a token must live from 1 second to {} seconds", max.as_secs())));
    }
    Ok(crate::now() + chrono::Duration::seconds(secs as i64))
}

fn token_view(t: &TokenRecord, user: &str) -> Token {
    Token {
        id: t.id,
        name: t.name.clone(),
        user: user.to_string(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        revoked: t.revoked,
    }
}

impl App {
    /// The user a token request is about: the caller, or (admins only) another user.
    async fn token_owner(&self, ctx: &Ctx, user: Option<&str>) -> Result<User> {
        match user {
            None => {
                ctx.require(Action::OwnTokens)?;
                Ok(ctx.user.clone())
            }
            Some(name) if name == ctx.user.name => {
                ctx.require(Action::OwnTokens)?;
                Ok(ctx.user.clone())
            }
            Some(name) => {
                ctx.require(Action::OthersTokens)?;
                let mut tx = self.store.read().await?;
                tx.user_get_by_name(name).await?.ok_or_else(|| AppError::not_found("user", name))
            }
        }
    }

    pub async fn token_create(&self, ctx: &Ctx, req: TokenCreate) -> Result<NewToken> {
        let user = self.token_owner(ctx, req.user.as_deref()).await?;
        let name = req.name.unwrap_or_else(|| "token".into());
        validate::token_name(&name)?;
        let expires_at = match (req.expires_in_secs, req.never_expires) {
            (Some(_), true) => {
                return Err(AppError::Invalid("give expires_in_secs or never_expires, not both".into()));
            }
            (None, true) => None,
            (Some(secs), false) => Some(expiry(secs, MAX_TOKEN_LIFETIME)?),
            (None, false) => Some(expiry(DEFAULT_TOKEN_LIFETIME.as_secs(), MAX_TOKEN_LIFETIME)?),
        };
        let secret = new_token_secret();
        let record = TokenRecord {
            id: TokenId::new(),
            user_id: user.id,
            name,
            secret_sha256: hash_token(&secret),
            created_at: crate::now(),
            expires_at,
            revoked: false,
        };
        let mut tx = self.store.write().await?;
        tx.token_create(&record).await?;
        let params = serde_json::json!({"user": user.name, "name": record.name, "expires_at": record.expires_at});
        tx.audit_append(&ctx.audit("token.create", format!("token/{}", record.id), params)).await?;
        tx.commit().await?;
        Ok(NewToken { token: token_view(&record, &user.name), secret })
    }

    /// The caller's tokens (or, for admins, another user's), oldest first.
    pub async fn token_list(&self, ctx: &Ctx, user: Option<&str>, page: &PageParams) -> Result<Page<Token>> {
        let owner = self.token_owner(ctx, user).await?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let tokens = self.store.read().await?.token_list(owner.id, &page).await?;
        Ok(Page {
            items: tokens.items.iter().map(|t| token_view(t, &owner.name)).collect(),
            next_page_token: tokens.next_page_token,
        })
    }

    /// Revokes a token by ID or name. By ID, admins may revoke anyone's; anyone else only
    /// their own (another user's answers "not found"). A name must pick one live token of
    /// the user.
    pub async fn token_revoke(&self, ctx: &Ctx, id_or_name: &str, user: Option<&str>) -> Result<Token> {
        let owner = self.token_owner(ctx, user).await?;
        let mut tx = self.store.write().await?;
        let by_id = match id_or_name.parse::<TokenId>() {
            Ok(id) => tx.token_get(id).await?.filter(|t| t.user_id == owner.id || (user.is_none() && ctx.is_admin())),
            Err(_) => None,
        };
        let token = match by_id {
            Some(t) => t,
            None => {
                let live: Vec<TokenRecord> =
                    tx.token_find(owner.id, id_or_name).await?.into_iter().filter(|t| !t.revoked).collect();
                match live.as_slice() {
                    [] => return Err(AppError::not_found("token", id_or_name)),
                    [one] => one.clone(),
                    many => {
                        let ids: Vec<String> = many.iter().map(|t| t.id.to_string()).collect();
                        return Err(AppError::Conflict(format!(
                            "{} live tokens are named {id_or_name:?}: revoke one by ID ({})",
                            many.len(),
                            ids.join(", ")
                        )));
                    }
                }
            }
        };
        let token_user = match tx.user_get(token.user_id).await? {
            Some(u) => u.name,
            None => return Err(AppError::not_found("token", id_or_name)),
        };
        if !token.revoked {
            tx.token_revoke(token.id).await?;
            let params = serde_json::json!({"user": token_user, "name": token.name});
            tx.audit_append(&ctx.audit("token.revoke", format!("token/{}", token.id), params)).await?;
        }
        tx.commit().await?;
        Ok(token_view(&TokenRecord { revoked: true, ..token }, &token_user))
    }

    /// Trades a user name and password for a new token. Refused (429) while the name or
    /// the source address is throttled; every failure looks the same to the caller.
    pub async fn login(&self, req: Login, source: Option<String>, request_id: Option<String>) -> Result<NewToken> {
        let audit = |outcome: Outcome, params: serde_json::Value| AuditEntry {
            at: crate::now(),
            actor: req.user.clone(),
            project: None,
            source: source.clone(),
            action: "auth.login".into(),
            target: format!("user/{}", req.user),
            params,
            outcome,
            request_id: request_id.clone(),
        };
        let expires_at = expiry(req.expires_in_secs.unwrap_or(DEFAULT_LOGIN_LIFETIME.as_secs()), MAX_LOGIN_LIFETIME)?;

        let user_key = Key::User(req.user.clone());
        let source_key = source.clone().map(Key::Source);
        let now = Instant::now();
        let locked = [Some(&user_key), source_key.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|k| self.logins.locked_for(k, now).map(|d| (k, d)))
            .max_by_key(|(_, d)| *d);
        if let Some((key, wait)) = locked {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let whom = match key {
                Key::User(u) => format!("user {u:?}"),
                Key::Source(s) => format!("address {s}"),
            };
            self.audit_login_failure(audit(Outcome::Failure, serde_json::json!({"reason": "throttled"}))).await?;
            return Err(AppError::Throttled {
                message: format!("too many failed logins for {whom}: try again in {secs} s"),
                retry_after_secs: secs,
            });
        }

        let (user, stored) = {
            let mut tx = self.store.read().await?;
            match tx.user_get_by_name(&req.user).await? {
                Some(u) => {
                    let hash = tx.user_password_get(u.id).await?;
                    (Some(u), hash)
                }
                None => (None, None),
            }
        };
        // A failed login counts against the name and the address, and is audited.
        let refuse = |reason: &'static str| {
            self.logins.fail(user_key.clone(), &throttle::PER_USER, now);
            if let Some(k) = source_key.clone() {
                self.logins.fail(k, &throttle::PER_SOURCE, now);
            }
            let entry = audit(Outcome::Failure, serde_json::json!({"reason": reason}));
            let message = if reason == "user disabled" {
                format!("user {:?} is disabled", req.user)
            } else {
                LOGIN_FAILED.to_string()
            };
            async move {
                self.audit_login_failure(entry).await?;
                Err::<NewToken, _>(AppError::Unauthenticated(message))
            }
        };

        // A user with no password here: the directory decides, when there is one.
        let directory = if stored.is_none() { self.ldap_settings().await? } else { None };
        let mut from_directory: Option<Vec<RoleGrant>> = None;
        if let Some(settings) = &directory {
            match crate::ldap::authenticate(settings, &req.user, &req.password).await {
                Err(e) => {
                    let entry = audit(Outcome::Failure, serde_json::json!({"reason": "directory unavailable"}));
                    self.audit_login_failure(entry).await?;
                    return Err(e);
                }
                Ok(crate::ldap::Verdict::Refused) => return refuse("refused by the directory").await,
                Ok(crate::ldap::Verdict::Member(grants)) if grants.is_empty() => {
                    return refuse("in no mapped directory group").await
                }
                Ok(crate::ldap::Verdict::Member(_)) if validate::dns_label("user name", &req.user).is_err() => {
                    return refuse("a directory name that is not a DNS label").await
                }
                Ok(crate::ldap::Verdict::Member(grants)) => from_directory = Some(grants),
            }
        } else {
            let password = req.password.clone();
            let stored_for_check = stored.clone();
            let matches = blocking(move || passwords::verify(&password, stored_for_check.as_deref())).await?;
            let reason = match &user {
                _ if !matches => Some(if user.is_none() {
                    "unknown user"
                } else if stored.is_none() {
                    "no password"
                } else {
                    "wrong password"
                }),
                Some(u) if u.disabled => Some("user disabled"),
                _ => None,
            };
            if let Some(reason) = reason {
                return refuse(reason).await;
            }
        }

        let secret = new_token_secret();
        let mut tx = self.store.write().await?;
        // The directory's user exists here with exactly its groups' roles.
        let (user, mut params) = match &from_directory {
            Some(grants) => match self.ldap_user_sync(tx.as_mut(), &req.user, grants).await? {
                Ok(u) => (u, serde_json::json!({"via": "ldap", "roles": grants})),
                Err(reason) => {
                    drop(tx);
                    return refuse(reason).await;
                }
            },
            None => (user.expect("a matching password has a user"), serde_json::json!({})),
        };
        self.logins.succeed(&user_key);
        let record = TokenRecord {
            id: TokenId::new(),
            user_id: user.id,
            name: "login".into(),
            secret_sha256: hash_token(&secret),
            created_at: crate::now(),
            expires_at: Some(expires_at),
            revoked: false,
        };
        tx.token_create(&record).await?;
        params["token"] = serde_json::json!(record.id);
        params["expires_at"] = serde_json::json!(record.expires_at);
        tx.audit_append(&audit(Outcome::Success, params)).await?;
        tx.commit().await?;
        Ok(NewToken { token: token_view(&record, &user.name), secret })
    }

    async fn audit_login_failure(&self, entry: AuditEntry) -> Result<()> {
        let mut tx = self.store.write().await?;
        tx.audit_append(&entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Prepares what the first login would otherwise pay for (the dummy password hash).
    pub async fn logins_warm_up(&self) -> Result<()> {
        blocking(passwords::warm_up).await
    }
}

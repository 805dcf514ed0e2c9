//! Reading the audit log. Writing it is not a feature of its own: every mutation in this
//! crate appends its record in the transaction that makes the change.

use sovdb_store::AuditFilter;
use sovdb_types::audit::AuditRecord;
use sovdb_types::*;

use crate::rbac::Action;
use crate::{App, AppError, Ctx, Result};

impl App {
    pub async fn audit_list(&self, ctx: &Ctx, filter: &AuditFilter, page: &PageParams) -> Result<Page<AuditRecord>> {
        ctx.require(Action::AuditRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        if page.after.as_deref().is_some_and(|a| a.parse::<i64>().is_err()) {
            return Err(AppError::Invalid("page_token is not one this server issued; start again without it".into()));
        }
        Ok(self.store.read().await?.audit_list(filter, &page).await?)
    }
}

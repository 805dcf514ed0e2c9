//! Projects (tenants). Admins see all of them; everyone else sees those they hold a role in.

use sovdb_types::*;

use crate::{App, AppError, Ctx, Result};

impl App {
    pub async fn project_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Project>> {
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        if ctx.is_admin() {
            return Ok(tx.project_list(&page).await?);
        }
        // A non-admin holds roles in a handful of projects: filter one generous page.
        let mut all = tx.project_list(&PageRequest::first(sovdb_types::page::MAX_PAGE_LIMIT)).await?;
        all.items.retain(|p| ctx.roles.iter().any(|b| b.project_id == Some(p.id)));
        all.next_page_token = None;
        Ok(all)
    }
}

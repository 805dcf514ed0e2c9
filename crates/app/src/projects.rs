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
        // A non-admin holds roles in a handful of projects: walk them all, keep theirs,
        // and page the result like any other list.
        let mut mine = Vec::new();
        let mut req = PageRequest::first(sovdb_types::page::MAX_PAGE_LIMIT);
        loop {
            let all = tx.project_list(&req).await?;
            mine.extend(all.items.into_iter().filter(|p| {
                ctx.roles.iter().any(|b| b.project_id == Some(p.id)) && page.after.as_ref().is_none_or(|a| p.name > *a)
            }));
            match all.next_page_token {
                Some(t) => {
                    req = PageParams { limit: Some(req.limit), page_token: Some(t) }
                        .resolve()
                        .map_err(|e| AppError::Internal(e.into()))?
                }
                None => break,
            }
        }
        mine.truncate(page.limit as usize + 1);
        Ok(Page::from_rows(mine, &page, |p| p.name.clone()))
    }
}

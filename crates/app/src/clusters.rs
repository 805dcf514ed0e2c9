//! Clusters of the caller's project. Reading only, until the operation engine and the
//! postgres driver can create them.

use sovdb_types::*;

use crate::{App, AppError, Ctx, Result};

impl App {
    pub async fn cluster_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Cluster>> {
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        Ok(self.store.read().await?.cluster_list(ctx.project.id, &page).await?)
    }

    pub async fn cluster_get(&self, ctx: &Ctx, name: &str) -> Result<Cluster> {
        let mut tx = self.store.read().await?;
        tx.cluster_get(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("cluster", name))
    }
}

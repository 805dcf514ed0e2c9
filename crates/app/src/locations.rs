//! Locations: a region (and zone) of one provider. Installation-wide; only admins change
//! them, every authenticated user can see them (to choose where to place a cluster).

use sovdb_store::StoreError;
use sovdb_types::*;

use crate::rbac::Action;
use crate::validate;
use crate::{App, AppError, Ctx, Result};

impl App {
    pub async fn location_create(&self, ctx: &Ctx, req: LocationCreate) -> Result<Location> {
        ctx.require(Action::LocationCreate)?;
        validate::dns_label("location name", &req.name)?;
        validate::dns_label("region", &req.region)?;
        if let Some(zone) = &req.zone {
            validate::dns_label("zone", zone)?;
        }
        validate::labels(&req.labels)?;

        let location = Location {
            id: LocationId::new(),
            name: req.name.clone(),
            provider: req.provider,
            region: req.region.clone(),
            zone: req.zone.clone(),
            labels: req.labels.clone(),
            created_at: crate::now(),
        };
        let mut tx = self.store.write().await?;
        match tx.location_create(&location).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!("location {:?} already exists", req.name)))
            }
            other => other?,
        }
        let params = serde_json::to_value(&req).expect("serialise");
        tx.audit_append(&ctx.audit("location.create", format!("location/{}", req.name), params)).await?;
        tx.commit().await?;
        Ok(location)
    }

    pub async fn location_get(&self, ctx: &Ctx, name: &str) -> Result<Location> {
        ctx.require(Action::LocationRead)?;
        let mut tx = self.store.read().await?;
        tx.location_get(name).await?.ok_or_else(|| AppError::not_found("location", name))
    }

    /// A location with the health of its DCS (each etcd member asked at once, for at most
    /// 2 s), so the answer stays quick when a host is down.
    pub async fn location_detail(&self, ctx: &Ctx, name: &str) -> Result<LocationDetail> {
        let location = self.location_get(ctx, name).await?;
        let dcs = crate::workflows::dcs::status(self, location.id)
            .await
            .map_err(|f| AppError::Internal(anyhow::anyhow!(f.error).context("cannot read the location's DCS")))?;
        let (syslog, syslog_ca) = self.location_syslog(location.id).await?;
        Ok(LocationDetail { location, dcs, syslog, syslog_ca })
    }

    pub async fn location_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Location>> {
        ctx.require(Action::LocationRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        Ok(self.store.read().await?.location_list(&page).await?)
    }

    /// Refused while anything still runs there.
    pub async fn location_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        ctx.require(Action::LocationDelete)?;
        let mut tx = self.store.write().await?;
        let location = tx.location_get(name).await?.ok_or_else(|| AppError::not_found("location", name))?;
        let clusters = tx.cluster_count_in_location(location.id).await?;
        if clusters > 0 {
            return Err(AppError::Conflict(format!(
                "location {name:?} still has {clusters} cluster(s); delete them or move them elsewhere first"
            )));
        }
        let repos = tx.repo_count_in_location(location.id).await?;
        if repos > 0 {
            return Err(AppError::Conflict(format!(
                "location {name:?} still has {repos} backup repositories; delete them first (`sovdb repo list` in each project)"
            )));
        }
        let hosts = tx.host_count_in_location(location.id).await?;
        if hosts > 0 {
            return Err(AppError::Conflict(format!(
                "location {name:?} still has {hosts} host(s); remove them first (`sovdb host list --location {name}`)"
            )));
        }
        tx.location_delete(location.id).await?;
        tx.audit_append(&ctx.audit("location.delete", format!("location/{name}"), serde_json::json!({}))).await?;
        tx.commit().await?;
        Ok(())
    }
}

//! Reading and cancelling operations. Admins see every operation; everyone else sees those
//! of the project they act in. Another project's operation answers "not found".

use sovdb_types::*;

use crate::{App, AppError, Ctx, Result};

impl App {
    pub async fn operation_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Operation>> {
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        if page.after.as_deref().is_some_and(|a| a.parse::<OperationId>().is_err()) {
            return Err(AppError::Invalid("page_token is not one this server issued; start again without it".into()));
        }
        let scope = if ctx.is_admin() { None } else { Some(ctx.project.id) };
        Ok(self.store.read().await?.operation_list(scope, &page).await?)
    }

    pub async fn operation_get(&self, ctx: &Ctx, id: &str) -> Result<Operation> {
        let id = parse_id(id)?;
        let op = self.store.read().await?.operation_get(id).await?;
        visible(ctx, op).ok_or_else(|| AppError::not_found("operation", id.to_string()))
    }

    /// Asks the operation to stop at its next step boundary and undo what it did.
    pub async fn operation_cancel(&self, ctx: &Ctx, id: &str) -> Result<Operation> {
        let id = parse_id(id)?;
        let mut tx = self.store.write().await?;
        let op = visible(ctx, tx.operation_get(id).await?)
            .ok_or_else(|| AppError::not_found("operation", id.to_string()))?;
        if op.state.is_final() {
            return Err(AppError::Conflict(format!(
                "operation {id} already ended ({}); nothing to cancel",
                op.state.as_str()
            )));
        }
        tx.operation_request_cancel(id).await?;
        tx.audit_append(&ctx.audit(
            "operation.cancel",
            format!("operation/{id}"),
            serde_json::json!({"kind": op.kind, "target": op.target}),
        ))
        .await?;
        let op = tx.operation_get(id).await?.ok_or_else(|| AppError::not_found("operation", id.to_string()))?;
        tx.commit().await?;
        Ok(op)
    }
}

fn parse_id(id: &str) -> Result<OperationId> {
    id.parse()
        .map_err(|_| AppError::Invalid(format!("{id:?} is not an operation ID (a UUID, as `sovdb op list` shows)")))
}

fn visible(ctx: &Ctx, op: Option<Operation>) -> Option<Operation> {
    op.filter(|o| ctx.is_admin() || o.project.as_deref() == Some(ctx.project.name.as_str()))
}

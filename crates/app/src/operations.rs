//! Reading and cancelling operations. Admins see every operation; everyone else sees those
//! of the project they act in. Another project's operation answers "not found".

use sovdb_store::{NewOperation, Tx};
use sovdb_types::*;

use crate::rbac::Action;
use crate::{App, AppError, Ctx, Result};

/// What an operation is about to do, before it exists.
pub(crate) struct OperationStart {
    pub kind: &'static str,
    /// `kind/name` of the object it changes: operations on one target run one at a time.
    pub target: String,
    pub project: Option<ProjectId>,
    pub params: serde_json::Value,
}

impl App {
    /// Creates an operation in `tx`, the transaction that also writes the desired state
    /// and the audit record. Call [`App::operations_created`] after the commit.
    pub(crate) async fn operation_create(
        &self,
        tx: &mut dyn Tx,
        actor: &str,
        start: OperationStart,
    ) -> Result<Operation> {
        let steps = self
            .workflows
            .get(start.kind)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no workflow named {:?} is registered", start.kind)))?;
        let op = NewOperation {
            id: OperationId::new(),
            project_id: start.project,
            kind: start.kind.to_string(),
            target: start.target,
            params: start.params,
            created_by: actor.to_string(),
            created_at: crate::now(),
            steps: steps.clone(),
        };
        tx.operation_create(&op).await?;
        tx.operation_get(op.id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("the new operation vanished")))
    }

    /// Tells the engine there is work (after the transaction that created it committed).
    pub(crate) fn operations_created(&self) {
        self.wake.notify_one();
    }

    pub async fn operation_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Operation>> {
        ctx.require(Action::OperationRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        if page.after.as_deref().is_some_and(|a| a.parse::<OperationId>().is_err()) {
            return Err(AppError::Invalid("page_token is not one this server issued; start again without it".into()));
        }
        let scope = if ctx.is_admin() { None } else { Some(ctx.project.id) };
        Ok(self.store.read().await?.operation_list(scope, &page).await?)
    }

    pub async fn operation_get(&self, ctx: &Ctx, id: &str) -> Result<Operation> {
        ctx.require(Action::OperationRead)?;
        let id = parse_id(id)?;
        let op = self.store.read().await?.operation_get(id).await?;
        visible(ctx, op).ok_or_else(|| AppError::not_found("operation", id.to_string()))
    }

    /// Asks the operation to stop at its next step boundary and undo what it did.
    pub async fn operation_cancel(&self, ctx: &Ctx, id: &str) -> Result<Operation> {
        ctx.require(Action::OperationCancel)?;
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
        self.operations_created();
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

//! Reading and verifying the audit log, and recording refused requests. Writing it is
//! otherwise not a feature of its own: every mutation in this crate appends its record in
//! the transaction that makes the change.

use sovdb_store::AuditFilter;
use sovdb_types::audit::{AuditEntry, AuditHead, AuditRecord, AuditVerification, ChainVerifier, Outcome};
use sovdb_types::*;

use crate::rbac::Action;
use crate::{App, AppError, Ctx, Result};

/// Records read at a time while verifying: memory stays flat whatever the chain's length.
const VERIFY_PAGE: u32 = 1000;

/// A request that was refused (401 or 403), as the API layer saw it.
#[derive(Debug, Clone)]
pub struct DeniedRequest {
    /// Who, when the credentials were valid (a 403); `None` for a failed authentication.
    pub ctx: Option<Ctx>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// `METHOD /route/{param}`: the route, not the concrete path.
    pub action: String,
    /// The concrete path asked for.
    pub target: String,
    pub status: u16,
    /// The answer's message (never holds a secret; never the token sent).
    pub reason: String,
}

impl App {
    pub async fn audit_list(&self, ctx: &Ctx, filter: &AuditFilter, page: &PageParams) -> Result<Page<AuditRecord>> {
        ctx.require(Action::AuditRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        if page.after.as_deref().is_some_and(|a| a.parse::<i64>().is_err()) {
            return Err(AppError::Invalid("page_token is not one this server issued; start again without it".into()));
        }
        Ok(self.store.read().await?.audit_list(filter, &page).await?)
    }

    /// Walks the whole chain in one read snapshot, a page at a time, recomputing every
    /// hash, and checks its end against the head recorded apart from it (and against
    /// `anchor`, a head the caller kept from an earlier verify). Names the first bad
    /// record.
    pub async fn audit_verify(&self, ctx: &Ctx, anchor: Option<&str>) -> Result<AuditVerification> {
        ctx.require(Action::AuditRead)?;
        let anchor = anchor
            .map(|a| {
                AuditHead::parse(a).ok_or_else(|| {
                    AppError::Invalid(format!("anchor {a:?} is not SEQ:HASH (as `audit verify` prints the head)"))
                })
            })
            .transpose()?;
        let mut tx = self.store.read().await?;
        let mut verifier = ChainVerifier::new(anchor);
        let mut page = PageRequest::first(VERIFY_PAGE);
        loop {
            let records = match tx.audit_list(&AuditFilter::default(), &page).await {
                Ok(p) => p,
                // A field edited into something the store cannot even read back.
                Err(sovdb_store::StoreError::Corrupt { what, detail }) => {
                    let seq = verifier.next_seq();
                    return Ok(AuditVerification {
                        ok: false,
                        records: verifier.count(),
                        head: verifier.last().cloned(),
                        recorded_head: tx.audit_head().await.ok().flatten(),
                        problem: Some(sovdb_types::audit::AuditProblem {
                            seq,
                            kind: sovdb_types::audit::AuditProblemKind::Edited,
                            message: format!("a record from {seq} on is unreadable ({what}: {detail}): it was edited"),
                        }),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            for r in &records.items {
                if let Err(problem) = verifier.push(r) {
                    return Ok(AuditVerification {
                        ok: false,
                        records: verifier.count(),
                        head: verifier.last().cloned(),
                        recorded_head: tx.audit_head().await?,
                        problem: Some(problem),
                    });
                }
            }
            match records.next_page_token {
                Some(t) => page.after = Some(t),
                None => break,
            }
        }
        let recorded = tx.audit_head().await?;
        Ok(verifier.finish(recorded))
    }

    /// Records a refused request. Called by the API layer for every 401 and 403 answer;
    /// a failure to record is the caller's to log (the answer stands).
    pub async fn audit_denied(&self, d: DeniedRequest) -> Result<()> {
        let entry = AuditEntry {
            at: crate::now(),
            actor: d.ctx.as_ref().map_or_else(|| "anonymous".to_string(), |c| c.user.name.clone()),
            project: d.ctx.as_ref().map(|c| c.project.name.clone()),
            source: d.source,
            action: d.action,
            target: d.target,
            params: serde_json::json!({"status": d.status, "reason": d.reason}),
            outcome: Outcome::Denied,
            request_id: d.request_id,
        };
        let mut tx = self.store.write().await?;
        tx.audit_append(&entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

//! The engine: claims operations and drives them step by step.
//!
//! Crash safety: every transition is one fenced store write, made after the side effect
//! it records (with a failpoint in between). A crash before the write means the step is
//! run again on resume, which is why steps are idempotent; a crash after it means the next
//! worker starts at the following step. A worker that lost its lease (a pause, a
//! partition) finds its fence moved on at its next write and stops without recording.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sovdb_store::{OperationChange, OperationRun, StepChange, Store, StoreError};
use sovdb_types::{OperationId, OperationState, StepError, StepState};
use tokio::sync::{watch, Notify};

use crate::failpoints::{Action, Failpoints};
use crate::workflow::{StepCtx, StepFailure, StepFn, Workflow};

/// How the engine paces itself. Defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This worker's name in leases (unique per process).
    pub worker_id: String,
    /// How long a claim lasts without renewal; a dead worker's operations are taken over
    /// this long after its last renewal.
    pub lease: Duration,
    /// How often to look for work when not woken.
    pub poll: Duration,
    /// Attempts of one step (including resumes after crashes) before it counts as failed.
    pub max_attempts: i64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl EngineConfig {
    pub fn new(worker_id: impl Into<String>) -> Self {
        EngineConfig {
            worker_id: worker_id.into(),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let exp = attempts.clamp(1, 16) as u32 - 1;
        self.backoff_base.saturating_mul(2u32.saturating_pow(exp)).min(self.backoff_max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("store")]
    Store(#[from] StoreError),
}

/// How a drive of one operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// Finished (or waits for a retry, or was parked): the lease was given back.
    Released,
    /// Another worker holds the operation now; we recorded nothing more.
    FencedOut,
}

pub struct Engine<S> {
    store: Arc<dyn Store>,
    workflows: HashMap<&'static str, Arc<Workflow<S>>>,
    services: Arc<S>,
    config: EngineConfig,
    failpoints: Failpoints,
    wake: Notify,
    stopping: watch::Sender<bool>,
}

fn ms(d: Duration) -> chrono::Duration {
    chrono::Duration::milliseconds(d.as_millis() as i64)
}

impl<S: Send + Sync + 'static> Engine<S> {
    pub fn new(store: Arc<dyn Store>, services: Arc<S>, config: EngineConfig, failpoints: Failpoints) -> Self {
        Engine {
            store,
            workflows: HashMap::new(),
            services,
            config,
            failpoints,
            wake: Notify::new(),
            stopping: watch::channel(false).0,
        }
    }

    pub fn register(mut self, workflow: Workflow<S>) -> Self {
        let name = workflow.name;
        assert!(self.workflows.insert(name, Arc::new(workflow)).is_none(), "workflow {name} registered twice");
        self
    }

    /// The step names of workflow `kind`, to create an operation with.
    pub fn step_names(&self, kind: &str) -> Option<Vec<String>> {
        self.workflows.get(kind).map(|w| w.step_names())
    }

    /// Wakes the worker loop: an operation was created or cancelled.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the worker loop to stop: it finishes the step in flight, parks the operation
    /// (gives its lease back so any replica resumes it) and returns.
    pub fn stop(&self) {
        let _ = self.stopping.send(true);
        self.wake.notify_one();
    }

    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The worker loop: claims and drives operations until [`Engine::stop`].
    pub async fn run(self: Arc<Self>) {
        tracing::info!(worker = %self.config.worker_id, workflows = self.workflows.len(), "operation engine started");
        while !self.stopping() {
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %error_chain(&e), "operation engine: store failed; retrying"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        tracing::info!("operation engine stopped");
    }

    /// Claims one runnable operation and drives it as far as it goes now. `false` when
    /// there was nothing to claim.
    pub async fn run_once(&self) -> Result<bool, EngineError> {
        let now = Utc::now();
        let mut tx = self.store.write().await?;
        let claimed = tx.operation_claim(&self.config.worker_id, now, now + ms(self.config.lease)).await?;
        tx.commit().await?;
        let Some((id, fence)) = claimed else { return Ok(false) };
        tracing::debug!(operation = %id, fence, "claimed");
        match self.drive(id, fence).await? {
            Driven::Released => {}
            Driven::FencedOut => tracing::warn!(operation = %id, fence, "lost the lease to another worker; stopped"),
        }
        Ok(true)
    }

    async fn drive(&self, id: OperationId, fence: i64) -> Result<Driven, EngineError> {
        loop {
            let Some(run) = self.store.read().await?.operation_run(id).await? else {
                return Ok(Driven::Released);
            };
            let Some(workflow) = self.workflows.get(run.kind.as_str()).cloned() else {
                let error = StepError::message(format!(
                    "this server has no workflow {:?}; run a sovdb version that has it",
                    run.kind
                ));
                return self.finish(id, fence, OperationState::Failed, Some(&error)).await;
            };
            if self.stopping() {
                // Park: give the lease back at a step boundary; any worker resumes here.
                return self.change(id, fence, run.state, run.error.as_ref(), Utc::now(), true, None).await;
            }
            let outcome = match run.state {
                OperationState::Queued | OperationState::Running if run.cancel_requested => {
                    let error = StepError::message("cancelled by a user");
                    let d =
                        self.change(id, fence, OperationState::Undoing, Some(&error), Utc::now(), false, None).await?;
                    (d == Driven::FencedOut).then_some(d)
                }
                OperationState::Queued | OperationState::Running => self.forward(&workflow, &run, fence).await?,
                OperationState::Undoing => self.backward(&workflow, &run, fence).await?,
                _ => return self.change(id, fence, run.state, run.error.as_ref(), Utc::now(), true, None).await,
            };
            if let Some(done) = outcome {
                return Ok(done);
            }
        }
    }

    /// Runs the first unfinished step. `None` to go on with the next boundary.
    async fn forward(&self, wf: &Workflow<S>, run: &OperationRun, fence: i64) -> Result<Option<Driven>, EngineError> {
        let Some(step) = run.steps.iter().find(|s| s.state != StepState::Succeeded) else {
            return self.finish(run.id, fence, OperationState::Succeeded, None).await.map(Some);
        };
        let def = &wf.steps[step.index as usize];
        let point = format!("{}.{}", wf.name, def.name);
        let started =
            StepChange { state: StepState::Running, new_attempt: true, output: None, error: None, at: Utc::now() };
        if !self.step_change(run, fence, step.index, &started).await? {
            return Ok(Some(Driven::FencedOut));
        }
        let attempts = step.attempts + 1;
        let result = self.guarded(run, fence, &def.run, &format!("{point}.before"), &format!("{point}.after")).await?;
        match result {
            Ok(output) => {
                let done = StepChange {
                    state: StepState::Succeeded,
                    new_attempt: false,
                    output: Some(&output),
                    error: None,
                    at: Utc::now(),
                };
                if !self.step_change(run, fence, step.index, &done).await? {
                    return Ok(Some(Driven::FencedOut));
                }
                tracing::info!(operation = %run.id, step = def.name, attempts, "step succeeded");
                Ok(None)
            }
            Err(f) if f.transient && attempts < self.config.max_attempts => {
                let retry_at = Utc::now() + ms(self.config.backoff(attempts));
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, %retry_at, "step failed; will retry");
                let again = StepChange {
                    state: StepState::Pending,
                    new_attempt: false,
                    output: None,
                    error: Some(&f.error),
                    at: Utc::now(),
                };
                if !self.step_change(run, fence, step.index, &again).await? {
                    return Ok(Some(Driven::FencedOut));
                }
                self.change(run.id, fence, OperationState::Running, None, retry_at, true, None).await.map(Some)
            }
            Err(f) => {
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, "step failed; undoing");
                let failed = StepChange {
                    state: StepState::Failed,
                    new_attempt: false,
                    output: None,
                    error: Some(&f.error),
                    at: Utc::now(),
                };
                if !self.step_change(run, fence, step.index, &failed).await? {
                    return Ok(Some(Driven::FencedOut));
                }
                let mut error = f.error.clone();
                error.message = format!("step {} failed: {}", def.name, error.message);
                self.change(run.id, fence, OperationState::Undoing, Some(&error), Utc::now(), false, None)
                    .await
                    .map(|d| (d == Driven::FencedOut).then_some(d))
            }
        }
    }

    /// Undoes the last step that acted (succeeded, failed or was interrupted), or ends the
    /// operation when none is left.
    async fn backward(&self, wf: &Workflow<S>, run: &OperationRun, fence: i64) -> Result<Option<Driven>, EngineError> {
        let acted = |s: &&sovdb_store::StepRun| {
            matches!(s.state, StepState::Succeeded | StepState::Failed | StepState::Running | StepState::Undoing)
        };
        let Some(step) = run.steps.iter().rev().find(acted) else {
            let end = if run.cancel_requested { OperationState::Cancelled } else { OperationState::Failed };
            return self.finish(run.id, fence, end, run.error.as_ref()).await.map(Some);
        };
        let def = &wf.steps[step.index as usize];
        let Some(undo) = &def.undo else {
            let skip =
                StepChange { state: StepState::Undone, new_attempt: false, output: None, error: None, at: Utc::now() };
            return Ok((!self.step_change(run, fence, step.index, &skip).await?).then_some(Driven::FencedOut));
        };
        let point = format!("{}.{}", wf.name, def.name);
        let undoing =
            StepChange { state: StepState::Undoing, new_attempt: true, output: None, error: None, at: Utc::now() };
        if !self.step_change(run, fence, step.index, &undoing).await? {
            return Ok(Some(Driven::FencedOut));
        }
        let attempts = step.attempts + 1;
        let result =
            self.guarded(run, fence, undo, &format!("{point}.undo-before"), &format!("{point}.undo-after")).await?;
        match result {
            Ok(_) => {
                let undone = StepChange {
                    state: StepState::Undone,
                    new_attempt: false,
                    output: None,
                    error: None,
                    at: Utc::now(),
                };
                tracing::info!(operation = %run.id, step = def.name, "step undone");
                Ok((!self.step_change(run, fence, step.index, &undone).await?).then_some(Driven::FencedOut))
            }
            // Undo keeps trying transient failures for longer than forward steps: leaving
            // half-made things behind is worse than waiting.
            Err(f) if f.transient && attempts < self.config.max_attempts * 3 => {
                let retry_at = Utc::now() + ms(self.config.backoff(attempts));
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, "undo failed; will retry");
                self.change(run.id, fence, OperationState::Undoing, run.error.as_ref(), retry_at, true, None)
                    .await
                    .map(Some)
            }
            Err(f) => {
                let mut error = f.error.clone();
                error.message = format!(
                    "undo of step {} failed: {}; what that step made may still exist and needs a manual look (the operation failed earlier: {})",
                    def.name,
                    f.error.message,
                    run.error.as_ref().map(|e| e.message.as_str()).unwrap_or("cancelled")
                );
                let failed = StepChange {
                    state: StepState::Failed,
                    new_attempt: false,
                    output: None,
                    error: Some(&f.error),
                    at: Utc::now(),
                };
                if !self.step_change(run, fence, step.index, &failed).await? {
                    return Ok(Some(Driven::FencedOut));
                }
                self.finish(run.id, fence, OperationState::Failed, Some(&error)).await.map(Some)
            }
        }
    }

    /// Runs a step function between its two failpoints (before the side effect; after it
    /// but before its result is recorded), holding the lease meanwhile.
    async fn guarded(
        &self,
        run: &OperationRun,
        fence: i64,
        f: &StepFn<S>,
        before: &str,
        after: &str,
    ) -> Result<Result<Value, StepFailure>, EngineError> {
        if let Some(failure) = self.inject(before) {
            return Ok(Err(failure));
        }
        let result = self.with_lease(run.id, fence, f(self.ctx(run))).await?;
        Ok(match (result, self.inject(after)) {
            (Ok(_), Some(failure)) => Err(failure),
            (r, _) => r,
        })
    }

    /// Runs a step's future while renewing the lease. If the lease is lost, the step is
    /// abandoned mid-way (like a crash: the next holder reruns it).
    async fn with_lease(
        &self,
        id: OperationId,
        fence: i64,
        step: impl std::future::Future<Output = Result<Value, StepFailure>>,
    ) -> Result<Result<Value, StepFailure>, EngineError> {
        tokio::pin!(step);
        let mut tick = tokio::time::interval(self.config.lease / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut step => return Ok(r),
                _ = tick.tick() => {
                    let mut tx = self.store.write().await?;
                    let kept = tx.operation_renew(id, fence, Utc::now() + ms(self.config.lease)).await?;
                    tx.commit().await?;
                    if !kept {
                        return Ok(Err(StepFailure::transient("lease lost to another worker")));
                    }
                }
            }
        }
    }

    fn inject(&self, name: &str) -> Option<StepFailure> {
        match self.failpoints.hit(name)? {
            Action::Error => Some(StepFailure::transient(format!("failpoint {name}"))),
            Action::Fail => Some(StepFailure::permanent(format!("failpoint {name}"))),
            Action::Crash => unreachable!("a crash failpoint aborts the process"),
        }
    }

    fn ctx(&self, run: &OperationRun) -> StepCtx<S> {
        let outputs: BTreeMap<String, Value> =
            run.steps.iter().filter_map(|s| Some((s.name.clone(), s.output.clone()?))).collect();
        StepCtx::new(run.id, Arc::new(run.params.clone()), outputs, self.services.clone())
    }

    async fn step_change(
        &self,
        run: &OperationRun,
        fence: i64,
        index: i64,
        change: &StepChange<'_>,
    ) -> Result<bool, EngineError> {
        let mut tx = self.store.write().await?;
        let ok = tx.operation_step_change(run.id, fence, index, change).await?;
        tx.commit().await?;
        Ok(ok)
    }

    #[allow(clippy::too_many_arguments)]
    async fn change(
        &self,
        id: OperationId,
        fence: i64,
        state: OperationState,
        error: Option<&StepError>,
        next_run_at: DateTime<Utc>,
        release: bool,
        finished_at: Option<DateTime<Utc>>,
    ) -> Result<Driven, EngineError> {
        let mut tx = self.store.write().await?;
        let ok = tx
            .operation_change(id, fence, &OperationChange { state, error, next_run_at, release, finished_at })
            .await?;
        tx.commit().await?;
        Ok(if ok { Driven::Released } else { Driven::FencedOut })
    }

    async fn finish(
        &self,
        id: OperationId,
        fence: i64,
        state: OperationState,
        error: Option<&StepError>,
    ) -> Result<Driven, EngineError> {
        let now = Utc::now();
        let d = self.change(id, fence, state, error, now, true, Some(now)).await?;
        tracing::info!(operation = %id, state = state.as_str(), "operation finished");
        Ok(d)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

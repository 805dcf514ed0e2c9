//! The engine: claims operations and drives them step by step.
//!
//! Crash safety: every transition is one fenced store write, made after the side effect
//! it records (with a failpoint in between). A crash before the write means the step is
//! run again on resume, which is why steps are idempotent; a crash after it means the next
//! worker starts at the following step. A worker that lost its lease (a pause, a
//! partition) finds its fence moved on at its next write and stops without recording.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
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
    /// Another worker claimed the operation since (our lease lapsed): we recorded nothing
    /// and stopped. Not a failure of the operation.
    #[error("lost the lease to another worker")]
    FencedOut,
}

/// Whether driving goes on to the next step boundary or stops here (the operation ended,
/// waits for a retry, or was parked; either way its lease was given back).
type Next = ControlFlow<()>;
const GO_ON: Next = ControlFlow::Continue(());
const STOP: Next = ControlFlow::Break(());

pub struct Engine<S> {
    store: Arc<dyn Store>,
    workflows: HashMap<&'static str, Arc<Workflow<S>>>,
    services: Arc<S>,
    config: EngineConfig,
    failpoints: Failpoints,
    wake: Arc<Notify>,
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
            wake: Arc::new(Notify::new()),
            stopping: watch::channel(false).0,
        }
    }

    pub fn register(mut self, workflow: Workflow<S>) -> Self {
        let name = workflow.name;
        assert!(self.workflows.insert(name, Arc::new(workflow)).is_none(), "workflow {name} registered twice");
        self
    }

    /// Shares `wake` with whoever creates operations (the app), so that a new operation or
    /// a cancel starts being worked on at once rather than at the next poll.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
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
        // `send_replace`, not `send`: the channel has no receiver until someone asks, and
        // `send` stores nothing then, so the stop would be lost.
        self.stopping.send_replace(true);
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
                Err(e) => {
                    tracing::error!(error = %sovdb_types::error_chain(&e), "operation engine: store failed; retrying")
                }
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
        match self.drive(id, fence).await {
            Err(EngineError::FencedOut) => {
                tracing::warn!(operation = %id, fence, "lost the lease to another worker; stopped")
            }
            other => other?,
        }
        Ok(true)
    }

    async fn drive(&self, id: OperationId, fence: i64) -> Result<(), EngineError> {
        loop {
            let Some(run) = self.store.read().await?.operation_run(id).await? else {
                return Ok(());
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
                return self.release(id, fence, run.state, run.error.as_ref(), Utc::now()).await;
            }
            let next = match run.state {
                OperationState::Queued | OperationState::Running if run.cancel_requested => {
                    let error = StepError::message("cancelled by a user");
                    self.transition(id, fence, OperationState::Undoing, Some(&error)).await?;
                    GO_ON
                }
                OperationState::Queued | OperationState::Running => self.forward(&workflow, &run, fence).await?,
                OperationState::Undoing => self.backward(&workflow, &run, fence).await?,
                _ => return self.release(id, fence, run.state, run.error.as_ref(), Utc::now()).await,
            };
            if next.is_break() {
                return Ok(());
            }
        }
    }

    /// Runs the first unfinished step, or ends the operation when none is left.
    async fn forward(&self, wf: &Workflow<S>, run: &OperationRun, fence: i64) -> Result<Next, EngineError> {
        let Some(step) = run.steps.iter().find(|s| s.state != StepState::Succeeded) else {
            self.finish(run.id, fence, OperationState::Succeeded, None).await?;
            return Ok(STOP);
        };
        let def = &wf.steps[step.index as usize];
        let point = format!("{}.{}", wf.name, def.name);
        self.set_step(run, fence, step.index, StepState::Running, None, None).await?;
        let attempts = step.attempts + 1;
        match self
            .guarded(run, fence, step.index, &def.run, &format!("{point}.before"), &format!("{point}.after"))
            .await?
        {
            Ok(output) => {
                self.set_step(run, fence, step.index, StepState::Succeeded, Some(&output), None).await?;
                tracing::info!(operation = %run.id, step = def.name, attempts, "step succeeded");
                Ok(GO_ON)
            }
            Err(f) if f.transient && attempts < self.config.max_attempts => {
                let retry_at = Utc::now() + ms(self.config.backoff(attempts));
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, %retry_at, "step failed; will retry");
                self.set_step(run, fence, step.index, StepState::Pending, None, Some(&f.error)).await?;
                self.release(run.id, fence, OperationState::Running, None, retry_at).await?;
                Ok(STOP)
            }
            Err(f) => {
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, "step failed; undoing");
                self.set_step(run, fence, step.index, StepState::Failed, None, Some(&f.error)).await?;
                let mut error = f.error.clone();
                error.message = format!("step {} failed: {}", def.name, error.message);
                self.transition(run.id, fence, OperationState::Undoing, Some(&error)).await?;
                Ok(GO_ON)
            }
        }
    }

    /// Undoes the last step that acted (succeeded, failed or was interrupted), or ends the
    /// operation when none is left.
    async fn backward(&self, wf: &Workflow<S>, run: &OperationRun, fence: i64) -> Result<Next, EngineError> {
        let acted = |s: &&sovdb_store::StepRun| {
            matches!(s.state, StepState::Succeeded | StepState::Failed | StepState::Running | StepState::Undoing)
        };
        let Some(step) = run.steps.iter().rev().find(acted) else {
            let end = if run.cancel_requested { OperationState::Cancelled } else { OperationState::Failed };
            self.finish(run.id, fence, end, run.error.as_ref()).await?;
            return Ok(STOP);
        };
        let def = &wf.steps[step.index as usize];
        let Some(undo) = &def.undo else {
            self.set_step(run, fence, step.index, StepState::Undone, None, None).await?;
            return Ok(GO_ON);
        };
        let point = format!("{}.{}", wf.name, def.name);
        self.set_step(run, fence, step.index, StepState::Undoing, None, None).await?;
        let attempts = step.attempts + 1;
        match self
            .guarded(run, fence, step.index, undo, &format!("{point}.undo-before"), &format!("{point}.undo-after"))
            .await?
        {
            Ok(_) => {
                self.set_step(run, fence, step.index, StepState::Undone, None, None).await?;
                tracing::info!(operation = %run.id, step = def.name, "step undone");
                Ok(GO_ON)
            }
            // Undo keeps trying transient failures for longer than forward steps: leaving
            // half-made things behind is worse than waiting.
            Err(f) if f.transient && attempts < self.config.max_attempts * 3 => {
                let retry_at = Utc::now() + ms(self.config.backoff(attempts));
                tracing::warn!(operation = %run.id, step = def.name, attempts, error = %f.error.message, "undo failed; will retry");
                self.release(run.id, fence, OperationState::Undoing, run.error.as_ref(), retry_at).await?;
                Ok(STOP)
            }
            Err(f) => {
                let mut error = f.error.clone();
                error.message = format!(
                    "undo of step {} failed: {}; what that step made may still exist and needs a manual look (the operation failed earlier: {})",
                    def.name,
                    f.error.message,
                    run.error.as_ref().map(|e| e.message.as_str()).unwrap_or("cancelled")
                );
                self.set_step(run, fence, step.index, StepState::Failed, None, Some(&f.error)).await?;
                self.finish(run.id, fence, OperationState::Failed, Some(&error)).await?;
                Ok(STOP)
            }
        }
    }

    /// Runs a step function between its two failpoints (before the side effect; after it
    /// but before its result is recorded), holding the lease meanwhile.
    async fn guarded(
        &self,
        run: &OperationRun,
        fence: i64,
        index: i64,
        f: &StepFn<S>,
        before: &str,
        after: &str,
    ) -> Result<Result<Value, StepFailure>, EngineError> {
        if let Some(failure) = self.inject(before) {
            return Ok(Err(failure));
        }
        // A step that panics (a bug) fails for good, with the panic's message, rather than
        // taking the worker task down and leaving its operation to hang until rerun, where
        // it would panic again.
        let step = std::panic::AssertUnwindSafe(f(self.ctx(run, index, fence))).catch_unwind();
        let step = async move {
            step.await.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                Err(StepFailure::permanent(format!("the step panicked (a bug in sovdb): {what}")))
            })
        };
        let result = self.with_lease(run.id, fence, step).await?;
        Ok(match (result, self.inject(after)) {
            (Ok(_), Some(failure)) => Err(failure),
            (r, _) => r,
        })
    }

    /// Runs a step's future while renewing the lease. If the lease is lost, the step is
    /// abandoned mid-way (like a crash: the next holder reruns it).
    ///
    /// The renewal runs beside the step, both polled by one `select!`, never in turn: a
    /// step may hold the store's write lock across an await (a progress report, its own
    /// writes), and a renewal that stopped polling the step while it waited for that lock
    /// would wait for a lock that can't be let go.
    async fn with_lease(
        &self,
        id: OperationId,
        fence: i64,
        step: impl std::future::Future<Output = Result<Value, StepFailure>>,
    ) -> Result<Result<Value, StepFailure>, EngineError> {
        let renew = async {
            let mut tick = tokio::time::interval(self.config.lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut tx = self.store.write().await?;
                let kept = tx.operation_renew(id, fence, Utc::now() + ms(self.config.lease)).await?;
                tx.commit().await?;
                if !kept {
                    return Ok::<(), EngineError>(());
                }
            }
        };
        tokio::select! {
            r = step => Ok(r),
            lost = renew => {
                lost?;
                Ok(Err(StepFailure::transient("lease lost to another worker")))
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

    /// What step `index` sees. Its progress reports are written through `fence`, so a
    /// worker that lost the operation can't write over its successor's.
    fn ctx(&self, run: &OperationRun, index: i64, fence: i64) -> StepCtx<S> {
        let outputs: BTreeMap<String, Value> =
            run.steps.iter().filter_map(|s| Some((s.name.clone(), s.output.clone()?))).collect();
        // `run` was read before this attempt was recorded: a first attempt has no start yet.
        let started_at = run.steps.get(index as usize).and_then(|s| s.first_started_at).unwrap_or_else(Utc::now);
        let (store, id) = (self.store.clone(), run.id);
        let reporter: crate::workflow::Reporter = Arc::new(move |message: String| {
            let store = store.clone();
            Box::pin(async move {
                let write = async {
                    let mut tx = store.write().await?;
                    let kept = tx.operation_step_progress(id, fence, index, &message, Utc::now()).await?;
                    tx.commit().await?;
                    Ok::<_, StoreError>(kept)
                };
                match write.await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(operation = %id, "progress not recorded: the fence moved on"),
                    Err(e) => {
                        tracing::warn!(operation = %id, error = %sovdb_types::error_chain(&e), "cannot record a step's progress")
                    }
                }
            })
        });
        StepCtx::new(run.id, Arc::new(run.params.clone()), outputs, self.services.clone())
            .with_progress(started_at, reporter)
    }

    /// Records a step's new state through the fence. Entering `running` or `undoing`
    /// counts an attempt.
    async fn set_step(
        &self,
        run: &OperationRun,
        fence: i64,
        index: i64,
        state: StepState,
        output: Option<&Value>,
        error: Option<&StepError>,
    ) -> Result<(), EngineError> {
        let new_attempt = matches!(state, StepState::Running | StepState::Undoing);
        let change = StepChange { state, new_attempt, output, error, at: Utc::now() };
        let mut tx = self.store.write().await?;
        let recorded = tx.operation_step_change(run.id, fence, index, &change).await?;
        tx.commit().await?;
        if recorded {
            Ok(())
        } else {
            Err(EngineError::FencedOut)
        }
    }

    /// Records an operation change through the fence.
    async fn set_operation(&self, id: OperationId, fence: i64, change: OperationChange<'_>) -> Result<(), EngineError> {
        let mut tx = self.store.write().await?;
        let recorded = tx.operation_change(id, fence, &change).await?;
        tx.commit().await?;
        if recorded {
            Ok(())
        } else {
            Err(EngineError::FencedOut)
        }
    }

    /// A new state, keeping the lease: driving goes on.
    async fn transition(
        &self,
        id: OperationId,
        fence: i64,
        state: OperationState,
        error: Option<&StepError>,
    ) -> Result<(), EngineError> {
        let change = OperationChange { state, error, next_run_at: Utc::now(), release: false, finished_at: None };
        self.set_operation(id, fence, change).await
    }

    /// Gives the lease back; any worker may claim the operation again from `at`.
    async fn release(
        &self,
        id: OperationId,
        fence: i64,
        state: OperationState,
        error: Option<&StepError>,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let change = OperationChange { state, error, next_run_at: at, release: true, finished_at: None };
        self.set_operation(id, fence, change).await
    }

    async fn finish(
        &self,
        id: OperationId,
        fence: i64,
        state: OperationState,
        error: Option<&StepError>,
    ) -> Result<(), EngineError> {
        let now = Utc::now();
        let change = OperationChange { state, error, next_run_at: now, release: true, finished_at: Some(now) };
        self.set_operation(id, fence, change).await?;
        tracing::info!(operation = %id, state = state.as_str(), "operation finished");
        Ok(())
    }
}

//! Workflows: a name and a list of steps. One workflow per file where they are defined.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sovdb_types::{OperationId, StepError};

type StepFuture = Pin<Box<dyn Future<Output = Result<Value, StepFailure>> + Send>>;
pub(crate) type StepFn<S> = Arc<dyn Fn(StepCtx<S>) -> StepFuture + Send + Sync>;
/// Records a step's progress (see [`StepCtx::progress`]); the engine's writes it through
/// the operation's fence.
pub(crate) type Reporter = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Why a step did not succeed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    /// Worth retrying (a timeout, an unreachable host); otherwise the operation is undone.
    pub transient: bool,
    pub error: StepError,
}

impl StepFailure {
    pub fn transient(message: impl Into<String>) -> StepFailure {
        StepFailure { transient: true, error: StepError::message(message) }
    }

    pub fn permanent(message: impl Into<String>) -> StepFailure {
        StepFailure { transient: false, error: StepError::message(message) }
    }
}

/// What a step sees: its operation, the operation's parameters, the persisted outputs of
/// the steps before it, when the step first started, and the services the engine was
/// built with.
pub struct StepCtx<S> {
    pub operation: OperationId,
    params: Arc<Value>,
    outputs: Arc<BTreeMap<String, Value>>,
    /// When this step's first attempt started: retries and resumes after a crash keep it,
    /// so a wait's deadline ([`StepCtx::wait`]) is not renewed by them.
    pub started_at: DateTime<Utc>,
    reporter: Option<Reporter>,
    pub services: Arc<S>,
}

impl<S> Clone for StepCtx<S> {
    fn clone(&self) -> Self {
        StepCtx {
            operation: self.operation,
            params: self.params.clone(),
            outputs: self.outputs.clone(),
            started_at: self.started_at,
            reporter: self.reporter.clone(),
            services: self.services.clone(),
        }
    }
}

impl<S> StepCtx<S> {
    pub(crate) fn new(
        operation: OperationId,
        params: Arc<Value>,
        outputs: BTreeMap<String, Value>,
        services: Arc<S>,
    ) -> Self {
        StepCtx { operation, params, outputs: Arc::new(outputs), started_at: Utc::now(), reporter: None, services }
    }

    pub(crate) fn with_progress(mut self, started_at: DateTime<Utc>, reporter: Reporter) -> Self {
        self.started_at = started_at;
        self.reporter = Some(reporter);
        self
    }

    /// Records what the step observes now, for `op show`, `--wait`'s progress line and the
    /// console (never a secret). A write that fails is logged, not fatal: progress is
    /// information, the step's outcome is what counts.
    pub async fn progress(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(operation = %self.operation, progress = %message, "step progress");
        if let Some(report) = &self.reporter {
            report(message).await;
        }
    }

    /// The operation's parameters.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StepFailure> {
        serde_json::from_value((*self.params).clone())
            .map_err(|e| StepFailure::permanent(format!("operation parameters don't fit: {e}")))
    }

    /// The persisted output of an earlier step.
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepFailure> {
        let v = self
            .outputs
            .get(step)
            .ok_or_else(|| StepFailure::permanent(format!("no output of step {step:?}: is it an earlier step?")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| StepFailure::permanent(format!("output of step {step:?} doesn't fit: {e}")))
    }
}

pub(crate) struct Step<S> {
    pub name: &'static str,
    pub run: StepFn<S>,
    pub undo: Option<StepFn<S>>,
    /// Makes something new (an ID, a port, a password, a certificate): see
    /// [`Workflow::allocate`].
    pub allocates: bool,
}

/// A named list of steps, run in order by the engine.
pub struct Workflow<S> {
    pub name: &'static str,
    pub(crate) steps: Vec<Step<S>>,
}

fn boxed<S, F, Fut>(f: F) -> StepFn<S>
where
    F: Fn(StepCtx<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

impl<S: Send + Sync + 'static> Workflow<S> {
    pub fn new(name: &'static str) -> Self {
        Workflow { name, steps: Vec::new() }
    }

    /// A step with nothing to undo (it only reads, or makes what a later undo removes).
    pub fn step<F, Fut>(mut self, name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
    {
        self.push(name, boxed(run), None);
        self
    }

    /// A step that allocates: makes an ID, picks a port, generates a password or issues a
    /// certificate, and returns it as its output. Its output is persisted before any later
    /// step runs, so it is rerun only when that never happened, and then choosing anew is
    /// right. Keep allocation in steps of their own, so every other step is a pure
    /// function of persisted outputs.
    pub fn allocate<F, Fut>(mut self, name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
    {
        self.push(name, boxed(run), None);
        self.steps.last_mut().expect("just pushed").allocates = true;
        self
    }

    /// A step and the undo that reverses it. Undos must be idempotent too, and must cope
    /// with a step that failed or crashed halfway.
    pub fn step_with_undo<F, Fut, U, UFut>(mut self, name: &'static str, run: F, undo: U) -> Self
    where
        F: Fn(StepCtx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
        U: Fn(StepCtx<S>) -> UFut + Send + Sync + 'static,
        UFut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
    {
        self.push(name, boxed(run), Some(boxed(undo)));
        self
    }

    fn push(&mut self, name: &'static str, run: StepFn<S>, undo: Option<StepFn<S>>) {
        assert!(self.steps.iter().all(|s| s.name != name), "workflow {}: step {name} twice", self.name);
        self.steps.push(Step { name, run, undo, allocates: false });
    }

    /// The step names, in order: what an operation of this workflow is created with.
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.to_string()).collect()
    }
}

/// Runs every step of `workflow` twice in a row with the same inputs and checks that the
/// second run succeeds and returns the same output (allocating steps excepted: see
/// [`Workflow::allocate`]; later steps get the second run's output, as after a crash).
/// The check every workflow must pass. Whether the second run changed anything in the
/// world is for the caller to check, since only it knows where to look.
pub async fn assert_steps_idempotent<S: Send + Sync + 'static>(
    workflow: &Workflow<S>,
    services: Arc<S>,
    params: Value,
) {
    let params = Arc::new(params);
    let op = OperationId::new();
    let mut outputs = BTreeMap::new();
    for step in &workflow.steps {
        let ctx = StepCtx::new(op, params.clone(), outputs.clone(), services.clone());
        let first =
            (step.run)(ctx.clone()).await.unwrap_or_else(|e| panic!("{}: {} failed: {e:?}", workflow.name, step.name));
        let second = (step.run)(ctx)
            .await
            .unwrap_or_else(|e| panic!("{}: {} failed when rerun: {e:?}", workflow.name, step.name));
        if !step.allocates {
            assert_eq!(first, second, "{}: step {} answers differently when rerun", workflow.name, step.name);
        }
        outputs.insert(step.name.to_string(), second);
    }
}

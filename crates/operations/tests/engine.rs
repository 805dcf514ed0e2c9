//! The engine against a real store, with a workflow whose side effects are files: so a
//! duplicated side effect, an orphan or a missed undo is visible on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use sovdb_operations::{
    assert_steps_idempotent, Engine, EngineConfig, Failpoints, Probe, StepCtx, StepFailure, Wait, Workflow,
};
use sovdb_store::{NewOperation, Store};
use sovdb_types::*;
use tokio::sync::Semaphore;

struct Svc {
    dir: PathBuf,
    /// Steps named in the params' `gate` wait here for a permit.
    gate: Semaphore,
}

impl Svc {
    fn log(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("log")).unwrap();
        writeln!(f, "{line}").unwrap();
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default().lines().map(String::from).collect()
    }
}

fn param<'a>(ctx: &StepCtx<Svc>, key: &str, v: &'a mut Value) -> Option<&'a Value> {
    *v = ctx.params::<Value>().unwrap();
    v.get(key)
}

async fn gate(ctx: &StepCtx<Svc>, step: &str) {
    let mut v = Value::Null;
    if param(ctx, "gate", &mut v).and_then(Value::as_str) == Some(step) {
        ctx.services.gate.acquire().await.unwrap().forget();
    }
}

fn member(dir: &Path, port: i64) -> PathBuf {
    dir.join(format!("member-{port}"))
}

/// allocate (an ID made in a step of its own) → create (undo: remove) → start (undo:
/// stop; may fail on request) → finish.
fn provision() -> Workflow<Svc> {
    Workflow::new("test.provision")
        .step("allocate", |ctx: StepCtx<Svc>| async move {
            // Check, then act: a rerun finds its own allocation.
            let mine = ctx.services.dir.join(format!("alloc-{}", ctx.operation));
            if let Ok(port) = std::fs::read_to_string(&mine) {
                return Ok(json!({"port": port.parse::<i64>().unwrap()}));
            }
            let taken = std::fs::read_dir(&ctx.services.dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("alloc-"));
            let port = 5000 + taken.count() as i64;
            std::fs::write(&mine, port.to_string()).unwrap();
            ctx.services.log("allocate");
            Ok(json!({"port": port}))
        })
        .step_with_undo(
            "create",
            |ctx: StepCtx<Svc>| async move {
                gate(&ctx, "create").await;
                let port: i64 = ctx.output::<Value>("allocate")?["port"].as_i64().unwrap();
                let path = member(&ctx.services.dir, port);
                if !path.exists() {
                    std::fs::write(&path, ctx.operation.to_string()).unwrap();
                    ctx.services.log("create");
                }
                Ok(json!({"path": path}))
            },
            |ctx: StepCtx<Svc>| async move {
                let port: i64 = ctx.output::<Value>("allocate")?["port"].as_i64().unwrap();
                if std::fs::remove_file(member(&ctx.services.dir, port)).is_ok() {
                    ctx.services.log("undo create");
                }
                Ok(Value::Null)
            },
        )
        .step_with_undo(
            "start",
            |ctx: StepCtx<Svc>| async move {
                gate(&ctx, "start").await;
                let mut v = Value::Null;
                let failures = param(&ctx, "transient_failures", &mut v).and_then(Value::as_i64).unwrap_or(0);
                let counter = ctx.services.dir.join(format!("fails-{}", ctx.operation));
                let failed: i64 = std::fs::read_to_string(&counter).map(|s| s.parse().unwrap()).unwrap_or(0);
                if failed < failures {
                    std::fs::write(&counter, (failed + 1).to_string()).unwrap();
                    return Err(StepFailure::transient("the host did not answer"));
                }
                let port: i64 = ctx.output::<Value>("allocate")?["port"].as_i64().unwrap();
                let started = ctx.services.dir.join(format!("started-{port}"));
                if !started.exists() {
                    std::fs::write(&started, "").unwrap();
                    ctx.services.log("start");
                }
                Ok(Value::Null)
            },
            |ctx: StepCtx<Svc>| async move {
                let port: i64 = ctx.output::<Value>("allocate")?["port"].as_i64().unwrap();
                if std::fs::remove_file(ctx.services.dir.join(format!("started-{port}"))).is_ok() {
                    ctx.services.log("undo start");
                }
                Ok(Value::Null)
            },
        )
        .step("finish", |ctx: StepCtx<Svc>| async move {
            let mut v = Value::Null;
            if param(&ctx, "fail_finish", &mut v).and_then(Value::as_bool) == Some(true) {
                return Err(StepFailure::permanent("the primary refused the configuration"));
            }
            if param(&ctx, "panic_finish", &mut v).and_then(Value::as_bool) == Some(true) {
                panic!("finish met a case nobody wrote");
            }
            if let Some(deadline) = param(&ctx, "wait_deadline_ms", &mut v).and_then(Value::as_u64) {
                return wait_for_answer(&ctx, Duration::from_millis(deadline)).await;
            }
            Ok(Value::Null)
        })
}

/// The `finish` step's wait: the answer is there after `ready_after_looks` looks (never
/// without it). With `slow_first_attempt`, the first attempt spends longer than the
/// deadline on something else and fails transiently: the retry must not get a new deadline.
async fn wait_for_answer(ctx: &StepCtx<Svc>, deadline: Duration) -> Result<Value, StepFailure> {
    let mut v = Value::Null;
    let ready_after = param(ctx, "ready_after_looks", &mut v).and_then(Value::as_u64).unwrap_or(u64::MAX);
    let slow_first = param(ctx, "slow_first_attempt", &mut v).and_then(Value::as_bool) == Some(true);
    let marker = ctx.services.dir.join(format!("slow-{}", ctx.operation));
    if slow_first && !marker.exists() {
        std::fs::write(&marker, "").unwrap();
        tokio::time::sleep(deadline + Duration::from_millis(200)).await;
        return Err(StepFailure::transient("the host did not answer"));
    }
    let looks = std::sync::atomic::AtomicU64::new(0);
    let wait = Wait::new("the answer", deadline).poll(Duration::from_millis(20));
    let answer = ctx
        .wait(
            &wait,
            || async {
                let n = looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok(if n >= ready_after { Probe::Ready(n) } else { Probe::Waiting(format!("look {n}: no answer")) })
            },
            |seen| async move { format!("{seen} (the log says: connection refused)") },
        )
        .await?;
    Ok(json!({"looks": answer}))
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    svc: Arc<Svc>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let store = sovdb_store::open(&format!("sqlite://{}/s.db", dir.path().display())).await.unwrap();
    World { _dir: dir, store, svc: Arc::new(Svc { dir: files, gate: Semaphore::new(0) }) }
}

fn config(worker: &str) -> EngineConfig {
    EngineConfig {
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(20),
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        ..EngineConfig::new(worker)
    }
}

impl World {
    fn engine(&self, worker: &str) -> Arc<Engine<Svc>> {
        Arc::new(
            Engine::new(self.store.clone(), self.svc.clone(), config(worker), Failpoints::none()).register(provision()),
        )
    }

    async fn create(&self, params: Value) -> OperationId {
        let op = NewOperation {
            id: OperationId::new(),
            project_id: None,
            kind: "test.provision".into(),
            target: format!("test/{}", OperationId::new()),
            params,
            created_by: "test".into(),
            created_at: Utc::now(),
            steps: provision().step_names(),
        };
        let mut tx = self.store.write().await.unwrap();
        tx.operation_create(&op).await.unwrap();
        tx.commit().await.unwrap();
        op.id
    }

    async fn get(&self, id: OperationId) -> Operation {
        self.store.read().await.unwrap().operation_get(id).await.unwrap().unwrap()
    }

    /// Runs the engine until `id` is final (retries included).
    async fn settle(&self, engine: &Engine<Svc>, id: OperationId) -> Operation {
        for _ in 0..500 {
            let op = self.get(id).await;
            if op.state.is_final() {
                return op;
            }
            if !engine.run_once().await.unwrap() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("operation {id} did not finish: {:?}", self.get(id).await);
    }

    async fn wait_step_running(&self, id: OperationId, step: &str) {
        for _ in 0..500 {
            let op = self.get(id).await;
            if op.steps.iter().any(|s| s.name == step && s.state == StepState::Running) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("step {step} never ran");
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.svc.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("member-") || n.starts_with("started-"))
            .collect();
        v.sort();
        v
    }
}

fn states(op: &Operation) -> Vec<(&str, StepState, i64)> {
    op.steps.iter().map(|s| (s.name.as_str(), s.state, s.attempts)).collect()
}

#[tokio::test]
async fn an_operation_runs_every_step_once_and_shares_outputs() {
    let w = world().await;
    let id = w.create(json!({})).await;
    let op = w.settle(&w.engine("a"), id).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(
        states(&op),
        [
            ("allocate", StepState::Succeeded, 1),
            ("create", StepState::Succeeded, 1),
            ("start", StepState::Succeeded, 1),
            ("finish", StepState::Succeeded, 1),
        ]
    );
    assert_eq!(w.files(), ["member-5000", "started-5000"]);
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start"]);
}

#[tokio::test]
async fn every_step_run_twice_changes_nothing_the_second_time() {
    let w = world().await;
    assert_steps_idempotent(&provision(), w.svc.clone(), json!({})).await;
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start"], "a second run made no second side effect");
}

#[tokio::test]
async fn a_permanent_failure_undoes_finished_steps_in_reverse() {
    let w = world().await;
    let id = w.create(json!({"fail_finish": true})).await;
    let op = w.settle(&w.engine("a"), id).await;
    assert_eq!(op.state, OperationState::Failed);
    let error = op.error.clone().unwrap().message;
    assert!(error.contains("step finish failed: the primary refused the configuration"), "{error}");
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start", "undo start", "undo create"]);
    assert!(w.files().is_empty(), "nothing left behind: {:?}", w.files());
    assert!(op.steps.iter().all(|s| s.state == StepState::Undone), "{:?}", states(&op));
}

#[tokio::test]
async fn a_step_that_panics_fails_for_good_and_undoes_instead_of_hanging() {
    let w = world().await;
    let id = w.create(json!({"panic_finish": true})).await;
    let op = w.settle(&w.engine("a"), id).await;
    assert_eq!(op.state, OperationState::Failed);
    let error = op.error.clone().unwrap().message;
    assert!(error.contains("the step panicked (a bug in sovdb): finish met a case nobody wrote"), "{error}");
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start", "undo start", "undo create"]);
    assert!(w.files().is_empty(), "nothing left behind: {:?}", w.files());
}

#[tokio::test]
async fn transient_failures_are_retried_then_succeed() {
    let w = world().await;
    let id = w.create(json!({"transient_failures": 2})).await;
    let op = w.settle(&w.engine("a"), id).await;
    assert_eq!(op.state, OperationState::Succeeded);
    let start = op.steps.iter().find(|s| s.name == "start").unwrap();
    assert_eq!((start.attempts, start.error.clone()), (3, None));
}

#[tokio::test]
async fn exhausted_retries_fail_and_undo_with_the_last_reason() {
    let w = world().await;
    let id = w.create(json!({"transient_failures": 99})).await;
    let op = w.settle(&w.engine("a"), id).await;
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.error.unwrap().message.contains("step start failed: the host did not answer"));
    assert!(w.files().is_empty());
}

#[tokio::test]
async fn cancel_stops_at_the_next_step_boundary_and_undoes() {
    let w = world().await;
    let engine = w.engine("a");
    let id = w.create(json!({"gate": "create"})).await;
    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once().await.unwrap() }
    });
    w.wait_step_running(id, "create").await;
    let mut tx = w.store.write().await.unwrap();
    assert_eq!(tx.operation_request_cancel(id).await.unwrap(), Some(OperationState::Running));
    tx.commit().await.unwrap();
    w.svc.gate.add_permits(1);
    runner.await.unwrap();
    let op = w.settle(&engine, id).await;
    assert_eq!(op.state, OperationState::Cancelled);
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "undo create"], "start never ran");
    assert!(w.files().is_empty());
}

#[tokio::test]
async fn a_crashed_worker_is_taken_over_at_the_first_unfinished_step() {
    let w = world().await;
    let id = w.create(json!({"gate": "start"})).await;
    let crashed = tokio::spawn({
        let engine = w.engine("a");
        async move { engine.run_once().await }
    });
    w.wait_step_running(id, "start").await;
    crashed.abort(); // the worker dies mid-step: no more renewals, nothing more recorded
    let _ = crashed.await;

    // Another worker takes over once the lease lapses, and reruns only the step that was
    // running when the first one died.
    w.svc.gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let op = w.settle(&w.engine("b"), id).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(
        states(&op),
        [
            ("allocate", StepState::Succeeded, 1),
            ("create", StepState::Succeeded, 1),
            ("start", StepState::Succeeded, 2),
            ("finish", StepState::Succeeded, 1),
        ]
    );
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start"], "no side effect twice");
}

#[tokio::test]
async fn a_fenced_out_worker_records_nothing() {
    let w = world().await;
    let id = w.create(json!({"gate": "start"})).await;
    let slow = tokio::spawn({
        let engine = w.engine("a");
        async move { engine.run_once().await.unwrap() }
    });
    w.wait_step_running(id, "start").await;

    // Another worker decides a's lease lapsed (a paused VM, a partition) and claims it.
    let later = Utc::now() + chrono::Duration::seconds(60);
    let mut tx = w.store.write().await.unwrap();
    let (claimed, _) = tx.operation_claim("b", later, later + chrono::Duration::seconds(30)).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed, id);

    w.svc.gate.add_permits(1);
    slow.await.unwrap();
    let op = w.get(id).await;
    let start = op.steps.iter().find(|s| s.name == "start").unwrap();
    assert_eq!(start.state, StepState::Running, "a's result was not recorded");
    assert_eq!(op.state, OperationState::Running);
}

#[tokio::test]
async fn one_operation_per_target_runs_at_a_time() {
    let w = world().await;
    let target = "cluster/one";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let op = NewOperation {
            id: OperationId::new(),
            project_id: None,
            kind: "test.provision".into(),
            target: target.into(),
            params: json!({"gate": "create"}),
            created_by: "test".into(),
            created_at: Utc::now(),
            steps: provision().step_names(),
        };
        ids.push(op.id);
        let mut tx = w.store.write().await.unwrap();
        tx.operation_create(&op).await.unwrap();
        tx.commit().await.unwrap();
    }
    let engine = w.engine("a");
    let first = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once().await.unwrap() }
    });
    w.wait_step_running(ids[0], "create").await;
    assert!(!engine.run_once().await.unwrap(), "the second waits while the first runs");
    assert_eq!(w.get(ids[1]).await.state, OperationState::Queued);
    w.svc.gate.add_permits(2);
    first.await.unwrap();
    assert_eq!(w.settle(&engine, ids[1]).await.state, OperationState::Succeeded);
}

#[tokio::test]
async fn a_step_that_acted_but_failed_before_its_record_is_undone_too() {
    // The failpoint sits after start's side effect and before its record: the started
    // file exists although the step is recorded as failed. Undo must remove it.
    let w = world().await;
    let failpoints = Failpoints::parse("test.provision.start.after=fail").unwrap();
    let engine = Engine::new(w.store.clone(), w.svc.clone(), config("a"), failpoints).register(provision());
    let id = w.create(json!({})).await;
    let op = w.settle(&engine, id).await;
    assert_eq!(op.state, OperationState::Failed);
    assert!(op.error.as_ref().unwrap().message.contains("failpoint test.provision.start.after"));
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start", "undo start", "undo create"]);
    assert!(w.files().is_empty(), "{:?}", w.files());
}

#[tokio::test]
async fn a_wait_reports_what_it_sees_and_ends_when_it_is_there() {
    let w = world().await;
    let engine = w.engine("w1");
    let id = w.create(json!({"wait_deadline_ms": 20_000, "ready_after_looks": 4})).await;
    let op = w.settle(&engine, id).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let finish = op.steps.iter().find(|s| s.name == "finish").unwrap();
    assert_eq!(finish.output, Some(json!({"looks": 4})));
    let progress = &finish.progress.as_ref().expect("the wait said what it saw").message;
    assert!(
        progress.starts_with("waiting for the answer (up to 20s): look ")
            && progress.ends_with(": no answer (the log says: connection refused)"),
        "{progress}"
    );
}

#[tokio::test]
async fn a_wait_that_never_ends_fails_at_its_deadline_with_what_it_saw_and_undoes() {
    let w = world().await;
    let engine = w.engine("w1");
    let id = w.create(json!({"wait_deadline_ms": 1000})).await;
    let op = w.settle(&engine, id).await;
    assert_eq!(op.state, OperationState::Failed);
    let error = op.error.as_ref().unwrap().message.clone();
    assert!(
        error.starts_with("step finish failed: gave up waiting for the answer after 1s: look ")
            && error.ends_with(": no answer (the log says: connection refused)"),
        "{error}"
    );
    let finish = op.steps.iter().find(|s| s.name == "finish").unwrap();
    assert_eq!(finish.attempts, 1, "a deadline is not retried");
    assert!(finish.progress.as_ref().unwrap().message.starts_with("waiting for the answer (up to 1s): look "));
    assert_eq!(w.svc.log_lines(), ["allocate", "create", "start", "undo start", "undo create"]);
}

#[tokio::test]
async fn a_retried_wait_keeps_the_deadline_of_its_first_attempt() {
    let w = world().await;
    let engine = w.engine("w1");
    let id =
        w.create(json!({"wait_deadline_ms": 1000, "slow_first_attempt": true, "ready_after_looks": 1_000_000})).await;
    let op = w.settle(&engine, id).await;
    assert_eq!(op.state, OperationState::Failed);
    let finish = op.steps.iter().find(|s| s.name == "finish").unwrap();
    assert_eq!(finish.attempts, 2);
    let error = op.error.as_ref().unwrap().message.clone();
    assert!(
        error.contains("gave up waiting for the answer after 1s: look 1: no answer"),
        "the retry looked once: {error}"
    );
}

//! The operation engine: durable workflows for user-requested changes.
//!
//! A [`Workflow`] is a named list of steps; each step has a `run` and optionally an
//! `undo`. Steps must be idempotent (check, then act): after a crash the step that was
//! running is run again. A step's output is persisted when it succeeds and is the only
//! state later steps see ([`StepCtx::output`]); so IDs, ports, host choices and passwords
//! are made in steps of their own, and a rerun reuses them.
//!
//! The [`Engine`] claims operations from the store with a lease that carries a fencing
//! token, runs them step by step, renews the lease while a step runs, and records every
//! transition through the fence: a worker that lost its lease can no longer record
//! anything. Transient failures are retried with exponential backoff; a permanent failure
//! (or exhausted retries) undoes the finished steps in reverse order; a cancel request is
//! honoured at the next step boundary and undoes likewise.
//!
//! A step that waits does it through [`StepCtx::wait`]: with a deadline from its first
//! attempt, recording what it observes as the step's progress, failing for good with
//! that observation at the deadline.
//!
//! Named [`failpoints`] sit between each side effect and the write that records it, so
//! tests can crash the process at every boundary.

mod engine;
pub mod failpoints;
mod wait;
mod workflow;

pub use engine::{Engine, EngineConfig, EngineError};
pub use failpoints::Failpoints;
pub use wait::{format_duration, Probe, Wait};
pub use workflow::{assert_steps_idempotent, StepCtx, StepFailure, Workflow};

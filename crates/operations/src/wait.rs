//! Waits that end: a step that waits for something (a primary, a replica, an agent, a
//! reload) does it through [`StepCtx::wait`], which
//! - has a deadline, counted from the step's first attempt ([`StepCtx::started_at`]), so
//!   neither a retry nor a resume after a crash renews it;
//! - records what it observes as the step's progress while it waits (what it waits for,
//!   then the probe's observation, explained: e.g. the end of a member's log);
//! - at the deadline fails for good with the last explanation, so the operation is undone
//!   and the user reads why, instead of a step that retries for a quarter of an hour.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::workflow::{StepCtx, StepFailure};

/// The least time between two progress reports of a wait.
const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// One look at what a step waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe<T> {
    /// It is there: the wait ends with this.
    Ready(T),
    /// Not yet; what was seen, in a few words (`db1-1 starting, db1-2 stopped`).
    Waiting(String),
}

/// What a step waits for and for how long at most.
#[derive(Debug, Clone)]
pub struct Wait {
    /// What is awaited, as it reads after "waiting for": `a primary`, `the agent`.
    pub what: String,
    /// The longest the step waits, from its first attempt.
    pub deadline: Duration,
    /// How often the probe looks.
    pub poll: Duration,
    /// How often, at most, an unchanged observation is explained again (explaining may
    /// read logs on hosts; a changed observation is explained at once).
    pub explain_every: Duration,
}

impl Wait {
    pub fn new(what: impl Into<String>, deadline: Duration) -> Wait {
        Wait { what: what.into(), deadline, poll: Duration::from_millis(500), explain_every: Duration::from_secs(5) }
    }

    pub fn poll(mut self, every: Duration) -> Wait {
        self.poll = every;
        self
    }
}

/// `90s`, `5m`, `1h30m`: how deadlines read in messages.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl<S> StepCtx<S> {
    /// Waits until `probe` answers [`Probe::Ready`], for at most `wait.deadline` from this
    /// step's first attempt. While it waits, the step's progress says
    /// `waiting for WHAT (up to DEADLINE): EXPLANATION`, where the explanation is
    /// `explain(observation)`, told when it changes (at most once a second) and again every
    /// `wait.explain_every`. At the deadline the step fails permanently with the last
    /// explanation. A probe's `Err` ends the wait at once (use it for what waiting can't
    /// mend; fold passing trouble, such as a host that doesn't answer yet, into
    /// [`Probe::Waiting`]).
    pub async fn wait<T, P, PFut, E, EFut>(&self, wait: &Wait, mut probe: P, mut explain: E) -> Result<T, StepFailure>
    where
        P: FnMut() -> PFut,
        PFut: Future<Output = Result<Probe<T>, StepFailure>>,
        E: FnMut(String) -> EFut,
        EFut: Future<Output = String>,
    {
        let deadline_at = self.started_at + chrono::Duration::from_std(wait.deadline).unwrap_or(chrono::Duration::MAX);
        let limit = format_duration(wait.deadline);
        let mut last_seen: Option<String> = None;
        let mut explained_at: Option<Instant> = None;
        let mut explanation = String::new();
        loop {
            let seen = match probe().await? {
                Probe::Ready(t) => return Ok(t),
                Probe::Waiting(seen) => seen,
            };
            let overdue = Utc::now() >= deadline_at;
            let stale = explained_at.is_none_or(|at| at.elapsed() >= wait.explain_every);
            // A changed observation is told at once, but not more often than once a
            // second: each report is a write to the store.
            let changed = last_seen.as_deref() != Some(seen.as_str())
                && explained_at.is_none_or(|at| at.elapsed() >= MIN_REPORT_INTERVAL);
            if overdue || stale || changed {
                explanation = explain(seen.clone()).await;
                self.progress(format!("waiting for {} (up to {limit}): {explanation}", wait.what)).await;
                explained_at = Some(Instant::now());
                last_seen = Some(seen);
            }
            if overdue {
                return Err(StepFailure::permanent(format!(
                    "gave up waiting for {} after {limit}: {explanation}",
                    wait.what
                )));
            }
            tokio::time::sleep(wait.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(330)), "5m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}

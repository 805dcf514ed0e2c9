//! Named failpoints for crash and failure tests.
//!
//! Switched on only by the `SOVDB_FAILPOINTS` environment variable, read once at start-up
//! (tests set it; nothing else should): `NAME=ACTION[;NAME=ACTION...]`. The engine's
//! failpoints are named `KIND.STEP.before` (before a step's side effect) and
//! `KIND.STEP.after` (after the side effect, before its result is recorded), and likewise
//! `KIND.STEP.undo-before` / `KIND.STEP.undo-after`. Actions:
//! - `crash`: the process aborts at once, as if killed with `kill -9`;
//! - `error`: the step fails with a transient error;
//! - `fail`: the step fails with a permanent error.

use std::collections::HashMap;

/// What a failpoint does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Crash,
    Error,
    Fail,
}

/// The failpoints switched on for this process.
#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    points: HashMap<String, Action>,
}

/// The environment variable that switches failpoints on.
pub const ENV: &str = "SOVDB_FAILPOINTS";

impl Failpoints {
    /// None switched on.
    pub fn none() -> Failpoints {
        Failpoints::default()
    }

    /// The failpoints of `SOVDB_FAILPOINTS`; a malformed entry is an error so a test
    /// never silently runs without the failure it asked for.
    pub fn from_env() -> Result<Failpoints, String> {
        match std::env::var(ENV) {
            Ok(spec) => Failpoints::parse(&spec),
            Err(_) => Ok(Failpoints::none()),
        }
    }

    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let mut points = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, action) = entry.split_once('=').ok_or_else(|| format!("{ENV}: {entry:?} is not NAME=ACTION"))?;
            let action = match action {
                "crash" => Action::Crash,
                "error" => Action::Error,
                "fail" => Action::Fail,
                other => return Err(format!("{ENV}: unknown action {other:?} (crash, error or fail)")),
            };
            points.insert(name.to_string(), action);
        }
        Ok(Failpoints { points })
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Reaches failpoint `name`: crashes the process, or returns the failure to inject.
    pub fn hit(&self, name: &str) -> Option<Action> {
        let action = *self.points.get(name)?;
        tracing::warn!(failpoint = name, ?action, "failpoint reached");
        if action == Action::Crash {
            std::process::abort();
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let f = Failpoints::parse("a.b.before=error; a.b.after=fail").unwrap();
        assert_eq!(f.hit("a.b.before"), Some(Action::Error));
        assert_eq!(f.hit("a.b.after"), Some(Action::Fail));
        assert_eq!(f.hit("a.c.before"), None);
        assert!(Failpoints::parse("x").is_err());
        assert!(Failpoints::parse("x=explode").is_err());
        assert!(Failpoints::parse("").unwrap().is_empty());
    }
}

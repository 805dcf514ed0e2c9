//! Scheduled backups and restore drills: a level-triggered loop that starts, for each
//! cluster with a backup policy, the operation each of its schedules is due for.
//!
//! For every schedule the store keeps the last time it was considered (`meta` key
//! `schedule/<cluster>/<backup|full|verify>`). A round compares the schedule's most recent
//! occurrence with it: when the occurrence is newer, the operation is started and the mark
//! moved to the occurrence, both in one transaction, with a compare-and-swap on the mark so
//! that of two control planes only one starts it. Occurrences missed while the control plane
//! was down collapse into one run when it is back (the most recent is all that counts). A
//! schedule that is set counts from then: its mark is the time it was set.
//!
//! Backups: with a `full_schedule`, `schedule` takes incremental backups and
//! `full_schedule` full ones (when both are due, one full backup); without it, every
//! scheduled backup is full, so retention has full backups to count.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use sovdb_store::{ClusterRecord, Tx};
use sovdb_types::*;

use crate::operations::OperationStart;
use crate::workflows::backup::{self as wb, BackupParams};
use crate::workflows::backup_verify::{self, VerifyParams};
use crate::{App, Result};

/// The actor that scheduled operations and their audit records name.
pub const ACTOR: &str = "scheduler";

/// Parses a cron pattern of five fields (minute hour day-of-month month day-of-week) or an
/// alias (`@daily`, `@hourly`, `@weekly`, `@monthly`, `@yearly`).
pub(crate) fn parse(pattern: &str) -> std::result::Result<Cron, String> {
    let fields = pattern.split_whitespace().count();
    if !(pattern.trim_start().starts_with('@') || fields == 5) {
        return Err(format!(
            "a schedule has five fields (minute hour day-of-month month day-of-week, in UTC), like \"0 3 * * *\" \
             for 03:00 every day; this has {fields}"
        ));
    }
    Cron::from_str(pattern).map_err(|e| format!("not a cron pattern: {e}"))
}

/// The first time after `now` the pattern matches.
pub(crate) fn next_after(pattern: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    parse(pattern).ok()?.find_next_occurrence(&now, false).ok()
}

/// The most recent time at or before `now` the pattern matched (none within its search
/// range, e.g. a date that never comes).
pub(crate) fn latest_due(pattern: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    parse(pattern).ok()?.find_previous_occurrence(&now, true).ok()
}

/// Which schedule of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Backup,
    Full,
    Verify,
}

impl Which {
    const ALL: [Which; 3] = [Which::Backup, Which::Full, Which::Verify];
    fn as_str(self) -> &'static str {
        match self {
            Which::Backup => "backup",
            Which::Full => "full",
            Which::Verify => "verify",
        }
    }
    fn pattern(self, p: &BackupPolicy) -> Option<&str> {
        match self {
            Which::Backup => p.schedule.as_deref(),
            Which::Full => p.full_schedule.as_deref(),
            Which::Verify => p.verify_schedule.as_deref(),
        }
    }
}

fn key(cluster: ClusterId, which: Which) -> String {
    format!("schedule/{cluster}/{}", which.as_str())
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// When a policy changes: every schedule that is new or different counts from `now`.
pub(crate) async fn reset(
    tx: &mut dyn Tx,
    cluster: ClusterId,
    old: &BackupPolicy,
    new: &BackupPolicy,
    now: DateTime<Utc>,
) -> Result<()> {
    for which in Which::ALL {
        if which.pattern(new).is_some() && which.pattern(new) != which.pattern(old) {
            tx.meta_set(&key(cluster, which), &stamp(now)).await?;
        }
    }
    Ok(())
}

impl App {
    /// One round over every cluster with a schedule; what it started.
    pub async fn schedules_run(&self, now: DateTime<Utc>) -> Result<Vec<Operation>> {
        let mut started = Vec::new();
        let clusters = self.clusters_all().await?;
        for c in clusters.iter().filter(|c| matches!(c.state, ClusterState::Ready | ClusterState::Degraded)) {
            match self.cluster_schedules(c, now).await {
                Ok(ops) => started.extend(ops),
                Err(e) => tracing::warn!(cluster = %c.name, error = %e, "scheduling the cluster's backups failed"),
            }
        }
        Ok(started)
    }

    async fn cluster_schedules(&self, c: &ClusterRecord, now: DateTime<Utc>) -> Result<Vec<Operation>> {
        let Ok(spec) = serde_json::from_value::<ClusterSpec>(c.spec.clone()) else { return Ok(vec![]) };
        let (policy, Some(repo)) = (&spec.backup_policy, spec.backup_repo) else { return Ok(vec![]) };
        if Which::ALL.iter().all(|w| w.pattern(policy).is_none()) {
            return Ok(vec![]);
        }
        // Most rounds start nothing: the marks are read in a read transaction, and a write
        // transaction is only opened when a schedule is due (or has no mark yet).
        let mut marks = Vec::new();
        {
            let mut tx = self.store.read().await?;
            for which in Which::ALL {
                if let Some(pattern) = which.pattern(policy) {
                    marks.push((which, pattern, tx.meta_get(&key(c.id, which)).await?));
                }
            }
        }
        // Which schedules are due: (which, the mark read, the occurrence); and which have no
        // mark (a policy written before this loop knew it): they count from now.
        let mut due = Vec::new();
        let mut unmarked = Vec::new();
        for (which, pattern, mark) in marks {
            match mark.as_deref().and_then(|m| DateTime::parse_from_rfc3339(m).ok()) {
                None => unmarked.push((which, mark)),
                Some(since) => match latest_due(pattern, now) {
                    Some(at) if at > since => due.push((which, mark, at)),
                    _ => {}
                },
            }
        }
        if due.is_empty() && unmarked.is_empty() {
            return Ok(vec![]);
        }
        let mut tx = self.store.write().await?;
        let marked = unmarked.iter().map(|(which, mark)| (*which, mark, now));
        for (which, mark, at) in marked.chain(due.iter().map(|(which, mark, at)| (*which, mark, *at))) {
            // Compare-and-swap on what was read: of two control planes, one moves the mark.
            if !tx.meta_swap(&key(c.id, which), mark.as_deref(), &stamp(at)).await? {
                return Ok(vec![]);
            }
        }
        if due.is_empty() {
            tx.commit().await?;
            return Ok(vec![]);
        }
        let is_due = |w: Which| due.iter().any(|(which, _, _)| *which == w);
        let mut starts = Vec::new();
        if is_due(Which::Full) || (is_due(Which::Backup) && policy.full_schedule.is_none()) {
            starts.push(("backup.create", wb::KIND, backup_params(c.id, BackupType::Full)));
        } else if is_due(Which::Backup) {
            starts.push(("backup.create", wb::KIND, backup_params(c.id, BackupType::Incr)));
        }
        if is_due(Which::Verify) {
            let params = VerifyParams { cluster: c.id, stanza: c.id.to_string(), repo };
            starts.push(("backup.verify", backup_verify::KIND, serde_json::to_value(params).expect("serialise")));
        }
        let project = tx.cluster_get(c.project_id, &c.name).await?.map(|view| view.project);
        let mut ops = Vec::new();
        for (action, kind, params) in starts {
            let target = format!("cluster/{}", c.name);
            let start = OperationStart { kind, target: target.clone(), project: Some(c.project_id), params };
            let op = self.operation_create(tx.as_mut(), ACTOR, start).await?;
            let entry = audit::AuditEntry {
                at: crate::now(),
                actor: ACTOR.into(),
                project: project.clone(),
                source: None,
                action: action.into(),
                target,
                params: serde_json::json!({"operation": op.id.to_string(), "scheduled": true, "kind": op.kind}),
                outcome: audit::Outcome::Success,
                request_id: None,
            };
            tx.audit_append(&entry).await?;
            ops.push(op);
        }
        tx.commit().await?;
        self.operations_created();
        Ok(ops)
    }
}

fn backup_params(cluster: ClusterId, kind: BackupType) -> serde_json::Value {
    serde_json::to_value(BackupParams { cluster, kind }).expect("serialise")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn patterns_have_five_fields_or_an_alias() {
        assert!(parse("0 3 * * *").is_ok());
        assert!(parse("*/15 * * * 1-5").is_ok());
        assert!(parse("@daily").is_ok());
        let e = parse("0 0 3 * * *").unwrap_err();
        assert!(e.contains("five fields") && e.contains("this has 6"), "{e}");
        assert!(parse("61 * * * *").unwrap_err().contains("not a cron pattern"));
        assert!(parse("every day").is_err());
    }

    #[test]
    fn occurrences_before_and_after_now() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 10, 17, 30).unwrap();
        assert_eq!(latest_due("*/5 * * * *", now), Some(Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap()));
        assert_eq!(next_after("*/5 * * * *", now), Some(Utc.with_ymd_and_hms(2026, 11, 21, 10, 20, 0).unwrap()));
        assert_eq!(latest_due("0 3 * * *", now), Some(Utc.with_ymd_and_hms(2026, 11, 21, 3, 0, 0).unwrap()));
        // An occurrence exactly now is due now.
        let on = Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap();
        assert_eq!(latest_due("*/5 * * * *", on), Some(on));
    }
}

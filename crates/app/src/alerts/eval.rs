//! The evaluator: a level-triggered round (every 10 s in `sovdb serve`) that turns what the
//! control plane knows into conditions, one per rule and subject, and compares them with
//! the open alerts.
//!
//! Per alert the state machine is [`step`]: a condition without an open alert opens one
//! (`firing` at once when the rule's `for` is 0, else `pending`); a pending alert whose
//! condition held for `for` fires; a pending alert whose condition went away is forgotten
//! (it never fired, so nobody was told); a firing alert whose condition went away is
//! resolved. Conditions the round could not evaluate (a cluster an operation acts on, whose
//! members or metrics could not be read) leave their alerts as they are.
//!
//! Every transition, its event and its deliveries are written in one transaction, after
//! reading the open alerts again in it; the store keeps at most one open alert per project,
//! rule and subject, so two control planes never open one twice (the loser's round fails
//! and the next one sees the alert).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use sovdb_store::{
    AlertChannelRecord, AlertRecord, AlertRuleRecord, ClusterRecord, DeliveryRecord, MetricTable, NewEvent, Tx,
};
use sovdb_types::metrics::{metric, MetricScope};
use sovdb_types::*;

use super::{default_rule, silences, AlertData, RuleSpec, BACKUP_GRACE, FAILOVER_WINDOW, LAG_THRESHOLD_BYTES};
use crate::events::{self, kind};
use crate::workflows::pg;
use crate::{patroni, App, Result};

/// A sample older than this is no observation (its target stopped reporting).
const FRESH: TimeDelta = TimeDelta::seconds(60);

/// What a rule sees of one subject in one round: the condition holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub project: ProjectId,
    pub rule: String,
    pub cluster: Option<String>,
    pub for_secs: u64,
    pub data: AlertData,
}

impl Condition {
    pub fn key(&self) -> String {
        format!("{}|{}", self.rule, self.data.subject)
    }
}

/// What to do with one alert this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing changes.
    Keep,
    /// Open a new alert, firing at once or pending.
    Open { firing: bool },
    /// A pending alert fires.
    Fire,
    /// A pending alert whose condition went away: forgotten.
    Forget,
    /// A firing alert whose condition went away.
    Resolve,
}

/// The state machine of one alert: its open state (and since when it is pending), whether
/// its condition holds now, and the rule's `for`.
pub(crate) fn step(open: Option<(AlertState, DateTime<Utc>)>, holds: bool, for_secs: u64, now: DateTime<Utc>) -> Step {
    let long_enough = |since: DateTime<Utc>| now - since >= TimeDelta::seconds(for_secs as i64);
    match (open, holds) {
        (None, true) => Step::Open { firing: for_secs == 0 },
        (None, false) => Step::Keep,
        (Some((AlertState::Pending, since)), true) if long_enough(since) => Step::Fire,
        (Some((AlertState::Pending, _)), false) => Step::Forget,
        (Some((AlertState::Firing, _)), false) => Step::Resolve,
        _ => Step::Keep,
    }
}

/// What one round found: the conditions that hold, and what could not be evaluated.
#[derive(Debug, Default)]
pub(crate) struct Round {
    pub conditions: Vec<Condition>,
    /// `(project, cluster)` whose Patroni-based rules could not be evaluated.
    pub unknown_clusters: HashSet<(ProjectId, String)>,
    /// `(project, rule)` that could not be evaluated at all.
    pub unknown_rules: HashSet<(ProjectId, String)>,
}

impl Round {
    fn add(&mut self, c: Condition) {
        self.conditions.push(c);
    }

    /// Whether an open alert's condition is unknown this round (then it is left alone).
    fn unknown(&self, a: &AlertRecord) -> bool {
        self.unknown_rules.contains(&(a.project_id, a.rule.clone()))
            || a.cluster.as_ref().is_some_and(|c| {
                matches!(a.rule.as_str(), "member-down" | "no-primary")
                    && self.unknown_clusters.contains(&(a.project_id, c.clone()))
            })
    }
}

fn cond(project: ProjectId, rule: &str, cluster: Option<&str>, subject: String, message: String) -> Condition {
    let d = default_rule(rule);
    Condition {
        project,
        rule: rule.into(),
        cluster: cluster.map(str::to_string),
        for_secs: d.map_or(0, |d| d.for_secs),
        data: AlertData {
            severity: d.map_or("warning", |d| d.severity).into(),
            subject,
            threshold: d.and_then(|d| d.threshold),
            message,
            ..Default::default()
        },
    }
}

/// The latest fresh sample's values of each target: `target -> [(metric, dim, value)]`.
type Latest = HashMap<String, Vec<(&'static str, String, f64)>>;

fn member_target(cluster: ClusterId, member: &str) -> String {
    format!("member/{cluster}/{member}")
}

fn host_target(host: HostId) -> String {
    format!("host/{host}")
}

/// A cluster as the round sees it.
struct Watched {
    record: ClusterRecord,
    members: Vec<pg::Member>,
}

impl App {
    /// One evaluation round over every project; answers how many transitions it wrote.
    pub async fn alerts_evaluate(&self, now: DateTime<Utc>) -> Result<usize> {
        let round = self.alerts_observe(now).await?;
        self.alerts_apply(round, now).await
    }

    /// What holds now, for every project.
    pub(crate) async fn alerts_observe(&self, now: DateTime<Utc>) -> Result<Round> {
        let mut round = Round::default();
        // Every cluster that exists (created and not being deleted), with its members.
        let mut clusters = Vec::new();
        for c in self.clusters_all().await? {
            if !matches!(c.state, ClusterState::Ready | ClusterState::Degraded) {
                continue;
            }
            match pg::members(self, c.id).await {
                Ok(members) if !members.is_empty() => {
                    clusters.push(Watched { record: c, members });
                }
                _ => {
                    round.unknown_clusters.insert((c.project_id, c.name.clone()));
                }
            }
        }
        let user_rules = self.store.read().await?.alert_rule_list(None).await?;

        // The latest metrics of every member and its host.
        let mut targets: Vec<String> = Vec::new();
        for w in &clusters {
            for m in &w.members {
                targets.push(member_target(w.record.id, &m.name));
                targets.push(host_target(m.host.host.id));
            }
        }
        targets.sort();
        targets.dedup();
        let rows =
            self.store.read().await?.metric_list(MetricTable::Raw, Some(&targets), now - FRESH, now + FRESH).await?;
        let mut latest: Latest = HashMap::new();
        for r in &rows {
            // Rows are by target then time: the last one of each target wins.
            latest.insert(
                r.target.clone(),
                crate::metrics::decode(&r.data).into_iter().map(|(d, dim, v)| (d.name, dim, v)).collect(),
            );
        }

        let mut hosts_seen: HashSet<(ProjectId, HostId)> = HashSet::new();
        for w in &clusters {
            let c = &w.record;
            let p = c.project_id;
            // Hosts: unreachable, disks.
            for m in &w.members {
                let h = &m.host.host;
                if !hosts_seen.insert((p, h.id)) {
                    continue;
                }
                if h.status == HostStatus::Unreachable {
                    round.add(cond(
                        p,
                        "host-unreachable",
                        None,
                        format!("host/{}", h.name),
                        format!(
                            "host {} does not answer heartbeats: {}",
                            h.name,
                            h.status_message.as_deref().unwrap_or("no answer")
                        ),
                    ));
                }
                if let Some(values) = latest.get(&host_target(h.id)) {
                    for (mount, used) in disk_used_percent(values) {
                        for rule in ["disk-85", "disk-95"] {
                            let limit = default_rule(rule).and_then(|r| r.threshold).unwrap_or(100.0);
                            if used > limit {
                                let mut x = cond(
                                    p,
                                    rule,
                                    None,
                                    format!("host/{}/{mount}", h.name),
                                    format!("{mount} on host {} is {used:.1} % full (above {limit} %)", h.name),
                                );
                                x.data.host = Some(h.name.clone());
                                x.data.value = Some(used);
                                round.add(x);
                            }
                        }
                    }
                }
            }
            // Patroni: members down, no primary (left alone while an operation acts).
            let target = format!("cluster/{}", c.name);
            let busy = self.store.read().await?.operation_active_on(&target).await?;
            if busy {
                round.unknown_clusters.insert((p, c.name.clone()));
            } else {
                match patroni::status(self, &w.members).await {
                    Err(e) => round.add(cond(
                        p,
                        "no-primary",
                        Some(&c.name),
                        target.clone(),
                        format!("cluster {}: no member's Patroni answers: {e}", c.name),
                    )),
                    Ok(s) => {
                        if s.leader().is_none() {
                            round.add(cond(
                                p,
                                "no-primary",
                                Some(&c.name),
                                target.clone(),
                                format!("cluster {} has no running primary", c.name),
                            ));
                        }
                        for m in &w.members {
                            let seen = s.members.iter().find(|x| x.name == m.name);
                            let down = match seen {
                                None => Some("does not report to Patroni".to_string()),
                                Some(x) if !x.is_leader() && !patroni::serving(x) => Some(format!("is {}", x.state)),
                                Some(x) if x.is_leader() && x.state != "running" => Some(format!("is {}", x.state)),
                                _ => None,
                            };
                            if let Some(why) = down {
                                let mut x = cond(
                                    p,
                                    "member-down",
                                    Some(&c.name),
                                    format!("member/{}/{}", c.name, m.name),
                                    format!("member {} of cluster {} {why}", m.name, c.name),
                                );
                                x.data.member = Some(m.name.clone());
                                x.data.host = Some(m.host.host.name.clone());
                                round.add(x);
                            }
                        }
                    }
                }
            }
            // Replication lag, as the primary sees it.
            for m in &w.members {
                let Some(values) = latest.get(&member_target(c.id, &m.name)) else { continue };
                for (name, replica, lag) in values {
                    if *name == "pg_replication_lag_bytes" && *lag > LAG_THRESHOLD_BYTES {
                        let mut x = cond(
                            p,
                            "replication-lag",
                            Some(&c.name),
                            format!("member/{}/{replica}", c.name),
                            format!("replica {replica} of cluster {} is {lag:.0} bytes behind", c.name),
                        );
                        x.data.member = Some(replica.clone());
                        x.data.value = Some(*lag);
                        round.add(x);
                    }
                }
            }
            // Backups, drills and failovers, from the timeline.
            let mut tx = self.store.read().await?;
            if let Some(e) = tx.event_latest(p, &target, &[kind::BACKUP, kind::BACKUP_FAILED]).await? {
                if e.kind == kind::BACKUP_FAILED {
                    round.add(cond(p, "backup-failed", Some(&c.name), target.clone(), e.message.clone()));
                }
            }
            if let Some(e) = tx.event_latest(p, &target, &[kind::DRILL, kind::DRILL_FAILED]).await? {
                if e.kind == kind::DRILL_FAILED {
                    round.add(cond(p, "drill-failed", Some(&c.name), target.clone(), e.message.clone()));
                }
            }
            if let Some(e) = tx.event_latest(p, &target, &[kind::FAILOVER]).await? {
                if now - e.at < FAILOVER_WINDOW {
                    round.add(cond(p, "failover", Some(&c.name), target.clone(), e.message.clone()));
                }
            }
            if let Ok(spec) = serde_json::from_value::<ClusterSpec>(c.spec.clone()) {
                let policy = &spec.backup_policy;
                if let Some(pattern) = policy.schedule.as_deref().or(policy.full_schedule.as_deref()) {
                    let mark = tx
                        .meta_get(&format!(
                            "schedule/{}/{}",
                            c.id,
                            if policy.schedule.is_some() { "backup" } else { "full" }
                        ))
                        .await?
                        .and_then(|m| DateTime::parse_from_rfc3339(&m).ok())
                        .map(|m| m.with_timezone(&Utc));
                    let last = tx.event_latest(p, &target, &[kind::BACKUP]).await?.map(|e| e.at);
                    if backup_overdue(pattern, c.created_at, mark, last, now) {
                        round.add(cond(
                            p,
                            "backup-overdue",
                            Some(&c.name),
                            target.clone(),
                            format!("cluster {}: no backup succeeded since the schedule {pattern:?} was due", c.name),
                        ));
                    }
                }
            }
            drop(tx);
            // Certificates about to expire (the bot should have renewed them long ago).
            if let Ok(pki) = self.pki() {
                let mut tx = self.store.read().await?;
                for m in &w.members {
                    let owner = pg::member_owner(c.id, &m.name);
                    let Some(sealed) = tx.secret_get(&owner, pg::MEMBER_CERT).await? else { continue };
                    let Ok(plain) = pki.open(&sealed, &pg::aad(&owner, pg::MEMBER_CERT)) else { continue };
                    let Ok(kept) = serde_json::from_slice::<pg::KeptCert>(&plain) else { continue };
                    let Ok(v) = sovdb_pki::CertValidity::of_pem(&kept.cert_pem) else { continue };
                    let life = v.not_after - v.issued_at;
                    if v.not_after - now < life / 6 {
                        let mut x = cond(
                            p,
                            "certificate-expiring",
                            Some(&c.name),
                            format!("member/{}/{}", c.name, m.name),
                            format!("member {}'s certificate expires at {}", m.name, v.not_after.to_rfc3339()),
                        );
                        x.data.member = Some(m.name.clone());
                        round.add(x);
                    }
                }
            }
            // The project's own rules.
            for r in user_rules.iter().filter(|r| r.project_id == p) {
                user_rule_conditions(r, w, &latest, &mut round);
            }
        }
        // A user rule's host conditions are per host, not per cluster: keep one of each.
        let mut seen = HashSet::new();
        round.conditions.retain(|c| seen.insert((c.project, c.key())));
        Ok(round)
    }

    /// Compares `round` with the open alerts and writes the transitions, their events and
    /// their deliveries, in one transaction.
    pub(crate) async fn alerts_apply(&self, round: Round, now: DateTime<Utc>) -> Result<usize> {
        let mut tx = self.store.write().await?;
        let open = tx.alert_list_open().await?;
        let rules = tx.alert_rule_list(None).await?;
        let channels = tx.alert_channel_list(None).await?;
        let silence_list = tx.alert_silence_list(None).await?;
        let mut projects: HashMap<ProjectId, String> = HashMap::new();
        let mut page = PageRequest { limit: 1000, after: None };
        loop {
            let batch = tx.project_list(&page).await?;
            for p in &batch.items {
                projects.insert(p.id, p.name.clone());
            }
            match batch.next_page_token {
                Some(_) => page.after = batch.items.last().map(|p| p.name.clone()),
                None => break,
            }
        }
        let holds: BTreeMap<(ProjectId, String), &Condition> =
            round.conditions.iter().map(|c| ((c.project, c.key()), c)).collect();
        let mut by_key: BTreeMap<(ProjectId, String), &AlertRecord> = BTreeMap::new();
        for a in &open {
            by_key.insert((a.project_id, a.key.clone()), a);
        }
        let mut changes = 0;
        // Open alerts: fire, forget, resolve, or (fired during a silence) notify now.
        for a in &open {
            let state = AlertState::parse(&a.state).unwrap_or(AlertState::Firing);
            let cond = holds.get(&(a.project_id, a.key.clone()));
            let exists = default_rule(&a.rule).is_some()
                || rules.iter().any(|r| r.project_id == a.project_id && r.name == a.rule);
            if cond.is_none() && exists && round.unknown(a) {
                continue;
            }
            let for_secs = cond.map_or(0, |c| c.for_secs);
            let mut data: AlertData = serde_json::from_str(&a.data).unwrap_or_default();
            let silenced = silence_list
                .iter()
                .any(|s| s.project_id == a.project_id && silences(s, &a.rule, a.cluster.as_deref(), now));
            let mut next = a.clone();
            match step(Some((state, a.pending_since)), cond.is_some(), for_secs, now) {
                Step::Forget => {
                    tx.alert_delete(a.id).await?;
                    changes += 1;
                    continue;
                }
                Step::Fire => {
                    let c = cond.expect("fires only while its condition holds");
                    data = AlertData { notified: None, ..c.data.clone() };
                    next.state = AlertState::Firing.as_str().into();
                    next.started_at = Some(now);
                    record_event(tx.as_mut(), &next, &data, kind::ALERT_FIRING).await?;
                }
                Step::Resolve => {
                    next.state = AlertState::Resolved.as_str().into();
                    next.resolved_at = Some(now);
                    record_event(tx.as_mut(), &next, &data, kind::ALERT_RESOLVED).await?;
                }
                Step::Keep | Step::Open { .. } => {
                    // Still firing: told nobody yet (it fired during a silence)?
                    if !(state == AlertState::Firing && data.notified.is_none() && !silenced) {
                        continue;
                    }
                }
            }
            let project = projects.get(&a.project_id).cloned().unwrap_or_default();
            let queue = match next.state.as_str() {
                "firing" if !silenced => Some("firing"),
                // Those told it fires are told it resolved, silence or not.
                "resolved" if data.notified.as_deref() == Some("firing") => Some("resolved"),
                _ => None,
            };
            if let Some(status) = queue {
                let targets = channels_for(&next, &rules, &channels);
                queue_deliveries(tx.as_mut(), &next, &data, &project, status, &targets, now).await?;
                data.notified = Some(status.into());
            }
            next.data = serde_json::to_string(&data).expect("alert data serialises");
            tx.alert_put(&next).await?;
            changes += 1;
        }
        // New conditions: open alerts.
        for c in &round.conditions {
            if by_key.contains_key(&(c.project, c.key())) {
                continue;
            }
            let Step::Open { firing } = step(None, true, c.for_secs, now) else { continue };
            let mut data = c.data.clone();
            let mut a = AlertRecord {
                id: AlertId::new(),
                project_id: c.project,
                key: c.key(),
                rule: c.rule.clone(),
                cluster: c.cluster.clone(),
                state: if firing { "firing" } else { "pending" }.into(),
                data: String::new(),
                pending_since: now,
                started_at: firing.then_some(now),
                resolved_at: None,
            };
            if firing {
                record_event(tx.as_mut(), &a, &data, kind::ALERT_FIRING).await?;
                let silenced = silence_list
                    .iter()
                    .any(|s| s.project_id == a.project_id && silences(s, &a.rule, a.cluster.as_deref(), now));
                if !silenced {
                    let project = projects.get(&a.project_id).cloned().unwrap_or_default();
                    let targets = channels_for(&a, &rules, &channels);
                    queue_deliveries(tx.as_mut(), &a, &data, &project, "firing", &targets, now).await?;
                    data.notified = Some("firing".into());
                }
            }
            a.data = serde_json::to_string(&data).expect("alert data serialises");
            tx.alert_put(&a).await?;
            changes += 1;
        }
        if changes > 0 {
            tx.commit().await?;
        }
        Ok(changes)
    }
}

/// The used share (percent) of each mounted file system in a host's sample.
fn disk_used_percent(values: &[(&'static str, String, f64)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (name, mount, total) in values {
        if *name != "host_disk_total_bytes" || *total <= 0.0 {
            continue;
        }
        if let Some((_, _, free)) = values.iter().find(|(n, m, _)| *n == "host_disk_free_bytes" && m == mount) {
            out.push((mount.clone(), 100.0 * (1.0 - free / total)));
        }
    }
    out
}

/// Whether a backup schedule is overdue: its latest occurrence at least [`BACKUP_GRACE`] ago
/// came after the cluster was created and after the schedule was set (the scheduler's
/// `mark`: the time it was set, or the last occurrence it ran), and no backup succeeded
/// since.
pub(crate) fn backup_overdue(
    pattern: &str,
    created: DateTime<Utc>,
    mark: Option<DateTime<Utc>>,
    last_backup: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(due) = crate::schedules::latest_due(pattern, now - BACKUP_GRACE) else { return false };
    // A mark that is not an occurrence is when the schedule was set.
    let set_after_due = mark.is_some_and(|m| m > due && crate::schedules::latest_due(pattern, m) != Some(m));
    due > created && !set_after_due && last_backup.is_none_or(|b| b < due)
}

/// The conditions of a user rule on one cluster: each member's (member metrics) or each
/// member's host's (host metrics) latest value, per series.
fn user_rule_conditions(r: &AlertRuleRecord, w: &Watched, latest: &Latest, round: &mut Round) {
    let Ok(spec) = serde_json::from_str::<RuleSpec>(&r.spec) else {
        round.unknown_rules.insert((r.project_id, r.name.clone()));
        return;
    };
    if spec.cluster.as_ref().is_some_and(|c| *c != w.record.name) {
        return;
    }
    let Some(def) = metric(&spec.metric) else { return };
    let c = &w.record;
    for m in &w.members {
        let (target, subject, cluster) = match def.scope {
            MetricScope::Member => {
                (member_target(c.id, &m.name), format!("member/{}/{}", c.name, m.name), Some(c.name.clone()))
            }
            MetricScope::Host => {
                (host_target(m.host.host.id), format!("host/{}", m.host.host.name), spec.cluster.clone())
            }
        };
        let Some(values) = latest.get(&target) else { continue };
        for (name, dim, value) in values {
            if *name != def.name || !spec.op.holds(*value, spec.threshold) {
                continue;
            }
            let subject = if dim.is_empty() { subject.clone() } else { format!("{subject}/{dim}") };
            round.add(Condition {
                project: r.project_id,
                rule: r.name.clone(),
                cluster: cluster.clone(),
                for_secs: spec.for_secs,
                data: AlertData {
                    severity: "warning".into(),
                    member: (def.scope == MetricScope::Member).then(|| m.name.clone()),
                    host: Some(m.host.host.name.clone()),
                    value: Some(*value),
                    threshold: Some(spec.threshold),
                    message: format!(
                        "{}{} = {value} on {subject} ({} {} {})",
                        def.name,
                        if dim.is_empty() { String::new() } else { format!("{{{dim}}}") },
                        def.name,
                        spec.op.as_str(),
                        spec.threshold
                    ),
                    subject,
                    notified: None,
                },
            });
        }
    }
}

/// The channels an alert notifies: a user rule's named ones (all of the project's when it
/// names none); a default rule's: every channel of the project that takes default rules.
fn channels_for<'a>(
    a: &AlertRecord,
    rules: &[AlertRuleRecord],
    channels: &'a [AlertChannelRecord],
) -> Vec<&'a AlertChannelRecord> {
    let ours = channels.iter().filter(|c| c.project_id == a.project_id);
    if default_rule(&a.rule).is_some() {
        return ours
            .filter(|c| serde_json::from_str::<super::ChannelSpec>(&c.spec).map_or(true, |s| s.default_rules))
            .collect();
    }
    let named = rules
        .iter()
        .find(|r| r.project_id == a.project_id && r.name == a.rule)
        .and_then(|r| serde_json::from_str::<RuleSpec>(&r.spec).ok())
        .map(|s| s.channels)
        .unwrap_or_default();
    ours.filter(|c| named.is_empty() || named.contains(&c.name)).collect()
}

async fn record_event(tx: &mut dyn Tx, a: &AlertRecord, data: &AlertData, what: &str) -> Result<()> {
    let target = match &a.cluster {
        Some(c) => format!("cluster/{c}"),
        None => data.subject.split('/').take(2).collect::<Vec<_>>().join("/"),
    };
    let verb = if what == kind::ALERT_FIRING { "firing" } else { "resolved" };
    let e = NewEvent {
        id: EventId::new(),
        at: crate::now(),
        project_id: Some(a.project_id),
        target,
        kind: what.into(),
        message: format!("alert {} {verb} on {}: {}", a.rule, data.subject, data.message),
    };
    events::record(tx, &e).await
}

/// Queues one delivery of `status` per channel, with the body every attempt sends.
async fn queue_deliveries(
    tx: &mut dyn Tx,
    a: &AlertRecord,
    data: &AlertData,
    project: &str,
    status: &str,
    channels: &[&AlertChannelRecord],
    now: DateTime<Utc>,
) -> Result<()> {
    let payload = super::notify::payload(a, data, project, status);
    for ch in channels {
        tx.delivery_create(&DeliveryRecord {
            id: DeliveryId::new(),
            project_id: a.project_id,
            alert_id: a.id,
            channel_id: ch.id,
            channel: ch.name.clone(),
            status: status.into(),
            payload: payload.clone(),
            attempts: 0,
            next_at: now,
            last_result: None,
            delivered_at: None,
            gave_up: false,
            created_at: now,
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn alerts_go_pending_firing_resolved() {
        // No alert, condition holds: pending with a `for`, firing without.
        assert_eq!(step(None, true, 30, t(0)), Step::Open { firing: false });
        assert_eq!(step(None, true, 0, t(0)), Step::Open { firing: true });
        assert_eq!(step(None, false, 30, t(0)), Step::Keep);
        // Pending: fires once the condition held for `for`, not before.
        let pending = Some((AlertState::Pending, t(0)));
        assert_eq!(step(pending, true, 30, t(29)), Step::Keep);
        assert_eq!(step(pending, true, 30, t(30)), Step::Fire);
        // Pending and gone: forgotten (it never fired).
        assert_eq!(step(pending, false, 30, t(10)), Step::Forget);
        // Firing: stays while the condition holds, resolves when it is gone.
        let firing = Some((AlertState::Firing, t(0)));
        assert_eq!(step(firing, true, 30, t(100)), Step::Keep);
        assert_eq!(step(firing, false, 30, t(100)), Step::Resolve);
        // Resolved alerts are not open; a new episode opens a new alert.
        assert_eq!(step(Some((AlertState::Resolved, t(0))), true, 0, t(1)), Step::Keep);
    }

    #[test]
    fn disks_are_measured_per_mount() {
        let values = vec![
            ("host_disk_total_bytes", "/".to_string(), 100.0),
            ("host_disk_free_bytes", "/".to_string(), 10.0),
            ("host_disk_total_bytes", "/data".to_string(), 200.0),
            ("host_disk_free_bytes", "/data".to_string(), 150.0),
            ("host_disk_total_bytes", "/empty".to_string(), 0.0),
        ];
        let used = disk_used_percent(&values);
        assert_eq!(used.len(), 2);
        assert!((used[0].1 - 90.0).abs() < 1e-9 && used[0].0 == "/");
        assert!((used[1].1 - 25.0).abs() < 1e-9 && used[1].0 == "/data");
    }

    #[test]
    fn backups_are_overdue_only_after_a_due_occurrence_and_its_grace() {
        let day = |h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 1, 10).unwrap().and_hms_opt(h, m, 0).unwrap().and_utc()
        };
        let created = day(0, 0) - TimeDelta::days(3);
        let daily = "0 2 * * *";
        // Yesterday's ran; today's is due at 02:00 and at 02:30 still within the grace.
        let yesterdays = Some(day(2, 5) - TimeDelta::days(1));
        assert!(!backup_overdue(daily, created, Some(day(2, 0) - TimeDelta::days(1)), yesterdays, day(2, 30)));
        // No backup ever: overdue since yesterday's.
        assert!(backup_overdue(daily, created, None, None, day(2, 30)));
        // At 03:30 with no backup since 02:00: overdue.
        assert!(backup_overdue(daily, created, Some(day(2, 0)), Some(day(2, 0) - TimeDelta::days(1)), day(3, 30)));
        // A backup at 02:05: not overdue.
        assert!(!backup_overdue(daily, created, Some(day(2, 0)), Some(day(2, 5)), day(3, 30)));
        // The schedule set at 02:40 (after the occurrence): not overdue.
        assert!(!backup_overdue(daily, created, Some(day(2, 40)), None, day(3, 30)));
        // A cluster created after the occurrence: not overdue.
        assert!(!backup_overdue(daily, day(2, 10), None, None, day(3, 30)));
    }

    /// An app over a fresh SQLite store, bootstrapped, with a webhook channel in `default`.
    async fn app_with_channel(dir: &std::path::Path) -> (App, ProjectId) {
        let store = sovdb_store::open(&format!("sqlite://{}/t.db", dir.display())).await.unwrap();
        let app = App::new(
            store,
            crate::AppConfig {
                local_hosts_dir: dir.join("hosts"),
                agent_exe: dir.join("no-agent"),
                port_range: 20000..=20100,
                failpoints: sovdb_operations::Failpoints::none(),
                internal_cert_validity: crate::DEFAULT_INTERNAL_CERT_VALIDITY,
            },
        );
        app.bootstrap(|_| Ok(())).await.unwrap();
        app.pki_init(sovdb_pki::MasterKey::generate()).await.unwrap();
        let mut tx = app.store.write().await.unwrap();
        let project = tx.project_get("default").await.unwrap().unwrap().id;
        let spec = super::super::ChannelSpec {
            url: Some("http://127.0.0.1:9/".into()),
            default_rules: true,
            ..Default::default()
        };
        tx.alert_channel_create(&AlertChannelRecord {
            id: ChannelId::new(),
            project_id: project,
            name: "hook".into(),
            kind: "webhook".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            created_at: t(0),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        (app, project)
    }

    async fn state(app: &App) -> (Vec<AlertRecord>, Vec<(String, String)>) {
        let mut tx = app.store.read().await.unwrap();
        let project = tx.project_get("default").await.unwrap().unwrap().id;
        let alerts = tx.alert_list(project, false, &PageRequest { limit: 100, after: None }).await.unwrap().items;
        let deliveries = tx.delivery_list(project, None, &PageRequest { limit: 100, after: None }).await.unwrap().items;
        (alerts, deliveries.into_iter().map(|d| (d.channel, d.status)).collect())
    }

    #[tokio::test]
    async fn transitions_are_stored_once_and_silences_hold_notifications_back() {
        let dir = tempfile::tempdir().unwrap();
        let (app, project) = app_with_channel(dir.path()).await;
        let failed = || Round {
            conditions: vec![cond(project, "backup-failed", Some("c"), "cluster/c".into(), "disk full".into())],
            ..Default::default()
        };
        // A silence of cluster c: the alert fires, nobody is told.
        let silence = sovdb_store::AlertSilenceRecord {
            id: SilenceId::new(),
            project_id: project,
            cluster: Some("c".into()),
            rule: None,
            starts_at: t(0),
            ends_at: t(60),
            comment: String::new(),
            created_by: "admin".into(),
            created_at: t(0),
        };
        let mut tx = app.store.write().await.unwrap();
        tx.alert_silence_create(&silence).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(app.alerts_apply(failed(), t(1)).await.unwrap(), 1);
        let (alerts, deliveries) = state(&app).await;
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].state.as_str(), alerts[0].started_at), ("firing", Some(t(1))));
        assert!(deliveries.is_empty(), "silenced: {deliveries:?}");
        // The same again (another round, another replica): nothing changes.
        assert_eq!(app.alerts_apply(failed(), t(11)).await.unwrap(), 0);
        // The silence ends: the alert, still firing, is notified now, once.
        assert_eq!(app.alerts_apply(failed(), t(61)).await.unwrap(), 1);
        assert_eq!(app.alerts_apply(failed(), t(71)).await.unwrap(), 0);
        let (_, deliveries) = state(&app).await;
        assert_eq!(deliveries, vec![("hook".to_string(), "firing".to_string())]);
        // The condition is gone: resolved, and notified.
        assert_eq!(app.alerts_apply(Round::default(), t(81)).await.unwrap(), 1);
        let (alerts, deliveries) = state(&app).await;
        assert_eq!((alerts[0].state.as_str(), alerts[0].resolved_at), ("resolved", Some(t(81))));
        assert_eq!(deliveries.len(), 2);
        assert_eq!(deliveries[1].1, "resolved");
        // The timeline tells both.
        let events = app
            .store
            .read()
            .await
            .unwrap()
            .event_list(Some(project), Some("cluster/c"), &PageRequest { limit: 10, after: None })
            .await
            .unwrap()
            .items;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["alert-firing", "alert-resolved"]);

        // A pending alert (member-down waits 20 s) whose condition goes away is forgotten,
        // untold; one whose condition stays fires after its `for`.
        let down = || Round {
            conditions: vec![cond(project, "member-down", Some("c"), "member/c/c-2".into(), "c-2 is stopped".into())],
            ..Default::default()
        };
        assert_eq!(app.alerts_apply(down(), t(100)).await.unwrap(), 1);
        assert_eq!(state(&app).await.0.last().unwrap().state, "pending");
        assert_eq!(app.alerts_apply(Round::default(), t(110)).await.unwrap(), 1);
        assert_eq!(state(&app).await.0.len(), 1, "forgotten");
        app.alerts_apply(down(), t(200)).await.unwrap();
        app.alerts_apply(down(), t(210)).await.unwrap();
        assert_eq!(state(&app).await.0.last().unwrap().state, "pending");
        app.alerts_apply(down(), t(220)).await.unwrap();
        let (alerts, deliveries) = state(&app).await;
        assert_eq!(
            (alerts.last().unwrap().state.as_str(), alerts.last().unwrap().started_at),
            ("firing", Some(t(220)))
        );
        assert_eq!(deliveries.len(), 3);
        // While the cluster can't be observed, its member-down alert stays as it is.
        let mut unknown = Round::default();
        unknown.unknown_clusters.insert((project, "c".into()));
        assert_eq!(app.alerts_apply(unknown, t(230)).await.unwrap(), 0);
        assert_eq!(state(&app).await.0.last().unwrap().state, "firing");
    }
}

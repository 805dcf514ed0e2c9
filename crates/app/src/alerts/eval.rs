//! The evaluator: a level-triggered round (every 10 s in `sovdb serve`) that turns what the
//! control plane knows into conditions, one per rule and subject, and compares them with
//! the open alerts.
//!
//! The default rules use each project's settings of them (threshold, `for`, channels,
//! disabled: `alert_rule_settings`), read at the start of the round that uses them.
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

use super::{default_rule, silences, AlertData, RuleSpec, Settings};
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
    /// `(project, host name)`: hosts of the project's members without a fresh sample (an
    /// unreachable host, an agent that stopped reporting), whose disk rules are unknown.
    pub unknown_hosts: HashSet<(ProjectId, String)>,
    /// `(project, rule)`: default rules a project disabled (their alerts resolve).
    pub disabled: HashSet<(ProjectId, String)>,
}

impl Round {
    fn add(&mut self, c: Condition) {
        self.conditions.push(c);
    }

    /// Whether an open alert's condition is unknown this round (then it is left alone).
    fn unknown(&self, a: &AlertRecord) -> bool {
        // A disk of a host that stopped reporting is as full as it was: its alert must not
        // resolve (and tell everyone so) for lack of a sample.
        let disk_host = matches!(a.rule.as_str(), "disk-85" | "disk-95")
            .then(|| a.key.split_once('|')?.1.strip_prefix("host/")?.split_once('/').map(|(h, _)| h.to_string()))
            .flatten();
        self.unknown_rules.contains(&(a.project_id, a.rule.clone()))
            || disk_host.is_some_and(|h| self.unknown_hosts.contains(&(a.project_id, h)))
            || a.cluster.as_ref().is_some_and(|c| {
                matches!(a.rule.as_str(), "member-down" | "no-primary")
                    && self.unknown_clusters.contains(&(a.project_id, c.clone()))
            })
    }
}

/// A default rule's condition on `subject`, with the project's `for` and threshold.
fn cond(
    settings: &Settings,
    project: ProjectId,
    rule: &str,
    cluster: Option<&str>,
    subject: String,
    message: String,
) -> Condition {
    let d = default_rule(rule);
    let e = settings.of(project, rule);
    Condition {
        project,
        rule: rule.into(),
        cluster: cluster.map(str::to_string),
        for_secs: e.as_ref().map_or(0, |e| e.for_secs),
        data: AlertData {
            severity: d.map_or("warning", |d| d.severity).into(),
            subject,
            threshold: e.and_then(|e| e.threshold),
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
        let (user_rules, settings) = {
            let mut tx = self.store.read().await?;
            (tx.alert_rule_list(None).await?, Settings::load(tx.as_mut()).await?)
        };
        let cond = |p: ProjectId, rule: &str, cluster: Option<&str>, subject: String, message: String| {
            cond(&settings, p, rule, cluster, subject, message)
        };

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
                    let mut x = cond(
                        p,
                        "host-unreachable",
                        None,
                        format!("host/{}", h.name),
                        format!(
                            "host {} does not answer heartbeats: {}",
                            h.name,
                            h.status_message.as_deref().unwrap_or("no answer")
                        ),
                    );
                    x.data.host = Some(h.name.clone());
                    round.add(x);
                }
                match latest.get(&host_target(h.id)) {
                    Some(values) => {
                        for x in disk_conditions(&settings, p, &h.name, values) {
                            round.add(x);
                        }
                    }
                    None => {
                        round.unknown_hosts.insert((p, h.name.clone()));
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
                for x in lag_conditions(&settings, p, &c.name, values) {
                    round.add(x);
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
                if failover_recent(&settings, p, e.at, now) {
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
                    let grace = TimeDelta::seconds(settings.threshold(p, "backup-overdue") as i64);
                    if backup_overdue(pattern, c.created_at, mark, last, now, grace) {
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
                let left_fraction = settings.threshold(p, "certificate-expiring");
                for m in &w.members {
                    let owner = pg::member_owner(c.id, &m.name);
                    let Some(sealed) = tx.secret_get(&owner, pg::MEMBER_CERT).await? else { continue };
                    let Ok(plain) = pki.open(&sealed, &pg::aad(&owner, pg::MEMBER_CERT)) else { continue };
                    let Ok(kept) = serde_json::from_slice::<pg::KeptCert>(&plain) else { continue };
                    let Ok(v) = sovdb_pki::CertValidity::of_pem(&kept.cert_pem) else { continue };
                    if cert_expiring(v.issued_at, v.not_after, now, left_fraction) {
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
        round.disabled = settings.disabled();
        Ok(round)
    }

    /// Compares `round` with the open alerts and writes the transitions, their events and
    /// their deliveries, in one transaction.
    pub(crate) async fn alerts_apply(&self, mut round: Round, now: DateTime<Utc>) -> Result<usize> {
        // A rule a project disabled holds nothing (and its open alerts resolve).
        let disabled = std::mem::take(&mut round.disabled);
        round.conditions.retain(|c| !disabled.contains(&(c.project, c.rule.clone())));
        round.disabled = disabled;
        let mut tx = self.store.write().await?;
        let open = tx.alert_list_open().await?;
        let rules = tx.alert_rule_list(None).await?;
        let channels = tx.alert_channel_list(None).await?;
        let silence_list = tx.alert_silence_list(None).await?;
        let settings = Settings::load(tx.as_mut()).await?;
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
            let exists = (default_rule(&a.rule).is_some() && !round.disabled.contains(&(a.project_id, a.rule.clone())))
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
                let targets = channels_for(&next, &rules, &settings, &channels);
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
                    let targets = channels_for(&a, &rules, &settings, &channels);
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

/// `disk-85` and `disk-95` on one host's latest sample, with the project's thresholds.
fn disk_conditions(
    settings: &Settings,
    p: ProjectId,
    host: &str,
    values: &[(&'static str, String, f64)],
) -> Vec<Condition> {
    let mut out = Vec::new();
    for (mount, used) in disk_used_percent(values) {
        for rule in ["disk-85", "disk-95"] {
            let limit = settings.threshold(p, rule);
            if used > limit {
                let mut x = cond(
                    settings,
                    p,
                    rule,
                    None,
                    format!("host/{host}/{mount}"),
                    format!("{mount} on host {host} is {used:.1} % full (above {limit} %)"),
                );
                x.data.host = Some(host.to_string());
                x.data.value = Some(used);
                out.push(x);
            }
        }
    }
    out
}

/// `replication-lag` on a member's latest sample (a primary's: the lag of each replica),
/// with the project's threshold.
fn lag_conditions(
    settings: &Settings,
    p: ProjectId,
    cluster: &str,
    values: &[(&'static str, String, f64)],
) -> Vec<Condition> {
    let max_lag = settings.threshold(p, "replication-lag");
    let mut out = Vec::new();
    for (name, replica, lag) in values {
        if *name == "pg_replication_lag_bytes" && *lag > max_lag {
            let mut x = cond(
                settings,
                p,
                "replication-lag",
                Some(cluster),
                format!("member/{cluster}/{replica}"),
                format!("replica {replica} of cluster {cluster} is {lag:.0} bytes behind (above {max_lag:.0})"),
            );
            x.data.member = Some(replica.clone());
            x.data.value = Some(*lag);
            out.push(x);
        }
    }
    out
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

/// Whether a failover at `at` is recent enough at `now` for `failover` to fire (the
/// project's window, after which it resolves by itself).
fn failover_recent(settings: &Settings, p: ProjectId, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - at < TimeDelta::milliseconds((settings.threshold(p, "failover") * 1000.0) as i64)
}

/// Whether a certificate issued at `issued` and valid until `not_after` has less than
/// `left` (a fraction) of its life left at `now`.
pub(crate) fn cert_expiring(issued: DateTime<Utc>, not_after: DateTime<Utc>, now: DateTime<Utc>, left: f64) -> bool {
    let life = (not_after - issued).num_milliseconds() as f64;
    ((not_after - now).num_milliseconds() as f64) < life * left
}

/// Whether a backup schedule is overdue: its latest occurrence at least `grace` ago
/// came after the cluster was created and after the schedule was set (the scheduler's
/// `mark`: the time it was set, or the last occurrence it ran), and no backup succeeded
/// since.
pub(crate) fn backup_overdue(
    pattern: &str,
    created: DateTime<Utc>,
    mark: Option<DateTime<Utc>>,
    last_backup: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> bool {
    let Some(due) = crate::schedules::latest_due(pattern, now - grace) else { return false };
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
/// names none); a default rule's: those the project named for it (`alert rule set
/// --channel`), else every channel of the project that takes default rules.
fn channels_for<'a>(
    a: &AlertRecord,
    rules: &[AlertRuleRecord],
    settings: &Settings,
    channels: &'a [AlertChannelRecord],
) -> Vec<&'a AlertChannelRecord> {
    let ours = channels.iter().filter(|c| c.project_id == a.project_id);
    if let Some(e) = settings.of(a.project_id, &a.rule) {
        if !e.channels.is_empty() {
            return ours.filter(|c| e.channels.contains(&c.name)).collect();
        }
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
        assert!(!backup_overdue(
            daily,
            created,
            Some(day(2, 0) - TimeDelta::days(1)),
            yesterdays,
            day(2, 30),
            TimeDelta::hours(1)
        ));
        // No backup ever: overdue since yesterday's.
        assert!(backup_overdue(daily, created, None, None, day(2, 30), TimeDelta::hours(1)));
        // At 03:30 with no backup since 02:00: overdue.
        assert!(backup_overdue(
            daily,
            created,
            Some(day(2, 0)),
            Some(day(2, 0) - TimeDelta::days(1)),
            day(3, 30),
            TimeDelta::hours(1)
        ));
        // A backup at 02:05: not overdue.
        assert!(!backup_overdue(daily, created, Some(day(2, 0)), Some(day(2, 5)), day(3, 30), TimeDelta::hours(1)));
        // The schedule set at 02:40 (after the occurrence): not overdue.
        assert!(!backup_overdue(daily, created, Some(day(2, 40)), None, day(3, 30), TimeDelta::hours(1)));
        // A cluster created after the occurrence: not overdue.
        assert!(!backup_overdue(daily, day(2, 10), None, None, day(3, 30), TimeDelta::hours(1)));
    }

    #[test]
    fn the_evaluator_uses_each_projects_thresholds() {
        let (p, q) = (ProjectId::new(), ProjectId::new());
        let mut settings = Settings::default();
        let set = |threshold: f64, for_secs: Option<u64>| super::super::RuleSettings {
            threshold: Some(threshold),
            for_secs,
            ..Default::default()
        };
        settings.set(p, "disk-85", set(1.0, Some(0)));
        settings.set(p, "replication-lag", set(4096.0, None));
        settings.set(p, "failover", set(30.0, None));
        // A disk 50 % full: above p's 1 %, not above q's 85 %.
        let host =
            vec![("host_disk_total_bytes", "/".to_string(), 100.0), ("host_disk_free_bytes", "/".to_string(), 50.0)];
        let fired = disk_conditions(&settings, p, "db1", &host);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!((fired[0].rule.as_str(), fired[0].for_secs), ("disk-85", 0));
        assert_eq!((fired[0].data.threshold, fired[0].data.value), (Some(1.0), Some(50.0)));
        assert!(disk_conditions(&settings, q, "db1", &host).is_empty());
        // 8 KiB behind: above p's 4 KiB, not q's 64 MiB; q's keeps its default `for`.
        let primary = vec![("pg_replication_lag_bytes", "c-2".to_string(), 8192.0)];
        let lag = lag_conditions(&settings, p, "c", &primary);
        assert_eq!(lag.len(), 1);
        assert_eq!((lag[0].data.subject.as_str(), lag[0].for_secs), ("member/c/c-2", 60));
        assert_eq!(lag[0].data.threshold, Some(4096.0));
        assert!(lag_conditions(&settings, q, "c", &primary).is_empty());
        let far = vec![("pg_replication_lag_bytes", "c-2".to_string(), 100.0 * 1024.0 * 1024.0)];
        assert_eq!(lag_conditions(&settings, q, "c", &far).len(), 1);
        // A failover 60 s ago: past p's 30 s window, within q's 10 minutes.
        assert!(!failover_recent(&settings, p, t(0), t(60)));
        assert!(failover_recent(&settings, p, t(0), t(29)));
        assert!(failover_recent(&settings, q, t(0), t(60)));
        assert!(!failover_recent(&settings, q, t(0), t(600)));
        // A certificate of 60 days with 8 left: below a sixth, not below a tenth.
        let (issued, end) = (t(0), t(60 * 86400));
        assert!(cert_expiring(issued, end, t(52 * 86400), 1.0 / 6.0));
        assert!(!cert_expiring(issued, end, t(52 * 86400), 0.1));
        assert!(!cert_expiring(issued, end, t(40 * 86400), 1.0 / 6.0));
    }

    /// An app over a fresh SQLite store, bootstrapped, with a webhook channel in `default`.
    /// A webhook channel `name` (to a closed port) that takes the default rules.
    async fn add_webhook(tx: &mut dyn sovdb_store::Tx, project: ProjectId, name: &str) {
        let spec = super::super::ChannelSpec {
            url: Some("http://127.0.0.1:9/".into()),
            default_rules: true,
            ..Default::default()
        };
        tx.alert_channel_create(&AlertChannelRecord {
            id: ChannelId::new(),
            project_id: project,
            name: name.into(),
            kind: "webhook".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            created_at: t(0),
        })
        .await
        .unwrap();
    }

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
        add_webhook(tx.as_mut(), project, "hook").await;
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
            conditions: vec![cond(
                &Settings::default(),
                project,
                "backup-failed",
                Some("c"),
                "cluster/c".into(),
                "disk full".into(),
            )],
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
            conditions: vec![cond(
                &Settings::default(),
                project,
                "member-down",
                Some("c"),
                "member/c/c-2".into(),
                "c-2 is stopped".into(),
            )],
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

    #[tokio::test]
    async fn a_full_disk_stays_firing_while_its_host_sends_no_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (app, project) = app_with_channel(dir.path()).await;
        let full = vec![
            ("host_disk_total_bytes", "/data".to_string(), 100.0),
            ("host_disk_free_bytes", "/data".to_string(), 2.0),
        ];
        let settings = Settings::default();
        let round = Round { conditions: disk_conditions(&settings, project, "db1", &full), ..Default::default() };
        assert_eq!(round.conditions.len(), 2, "disk-85 and disk-95");
        app.alerts_apply(round, t(0)).await.unwrap();
        app.alerts_apply(
            Round { conditions: disk_conditions(&settings, project, "db1", &full), ..Default::default() },
            t(60),
        )
        .await
        .unwrap();
        let firing = |alerts: &[AlertRecord]| alerts.iter().filter(|a| a.state == "firing").count();
        assert_eq!(firing(&state(&app).await.0), 2);
        // db1 is cut off: no sample, so nothing is known of its disks; they stay firing and
        // no resolve is sent. Another host's unknown disks change nothing here.
        let mut blind = Round::default();
        blind.unknown_hosts.insert((project, "db1".into()));
        assert_eq!(app.alerts_apply(blind, t(70)).await.unwrap(), 0);
        let (alerts, deliveries) = state(&app).await;
        assert_eq!(firing(&alerts), 2);
        assert!(deliveries.iter().all(|(_, s)| s == "firing"), "{deliveries:?}");
        // Back, and emptied: they resolve. (A host gone from every cluster resolves too.)
        let mut other = Round::default();
        other.unknown_hosts.insert((project, "db2".into()));
        assert_eq!(app.alerts_apply(other, t(80)).await.unwrap(), 2);
        assert_eq!(firing(&state(&app).await.0), 0);
    }

    /// The admin's context in project `default`.
    async fn admin(app: &App) -> crate::Ctx {
        let mut tx = app.store.read().await.unwrap();
        let project = tx.project_get("default").await.unwrap().unwrap();
        let user = tx.user_get_by_name(crate::bootstrap::ADMIN_USER).await.unwrap().expect("the bootstrap admin");
        crate::Ctx {
            roles: vec![RoleBinding { user_id: user.id, role: Role::Admin, project_id: None }],
            user,
            project,
            source: None,
            request_id: None,
            token: None,
        }
    }

    fn refused<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(e @ (crate::AppError::Invalid(_) | crate::AppError::NotFound { .. })) => e.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn default_rules_are_set_per_project_and_the_evaluator_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (app, project) = app_with_channel(dir.path()).await;
        let ctx = admin(&app).await;
        let update = |threshold: Option<&str>, for_duration: Option<&str>| DefaultRuleUpdate {
            threshold: threshold.map(|t| ThresholdInput::Text(t.into())),
            for_duration: for_duration.map(str::to_string),
            ..Default::default()
        };
        // Refused: an unknown rule, a threshold where there is none, out of range, nothing
        // to change, a reset with settings, an unknown channel.
        assert!(refused(app.alert_rule_set(&ctx, "nope", update(Some("1"), None)).await).contains("nope"));
        let m = refused(app.alert_rule_set(&ctx, "member-down", update(Some("1"), None)).await);
        assert!(m.contains("member-down has no threshold"), "{m}");
        let m = refused(app.alert_rule_set(&ctx, "disk-85", update(Some("120"), None)).await);
        assert!(m.contains("between 0.1 % and 99.9 %") && m.contains("120 %"), "{m}");
        let m = refused(app.alert_rule_set(&ctx, "disk-85", update(None, Some("forever"))).await);
        assert!(m.contains("not a duration"), "{m}");
        assert!(refused(app.alert_rule_set(&ctx, "disk-85", DefaultRuleUpdate::default()).await)
            .contains("nothing to change"));
        let both = DefaultRuleUpdate { reset: true, ..update(Some("1"), None) };
        assert!(refused(app.alert_rule_set(&ctx, "disk-85", both).await).contains("reset takes no other"));
        let elsewhere = DefaultRuleUpdate { channels: Some(vec!["pager".into()]), ..Default::default() };
        assert!(refused(app.alert_rule_set(&ctx, "disk-85", elsewhere).await).contains("pager"));

        // Settings merge: a threshold, then a `for`; the list shows both, as changed.
        app.alert_rule_set(&ctx, "disk-85", update(Some("1%"), None)).await.unwrap();
        let shown = app.alert_rule_set(&ctx, "disk-85", update(None, Some("0"))).await.unwrap();
        assert_eq!((shown.threshold, shown.for_secs, shown.changed), (Some(1.0), 0, true));
        assert!(shown.condition.contains("more than 1 % full"), "{}", shown.condition);
        let list = app.alert_rule_list(&ctx).await.unwrap();
        let disk95 = list.iter().find(|r| r.name == "disk-95").unwrap();
        assert_eq!((disk95.threshold, disk95.changed, disk95.unit.as_deref()), (Some(95.0), false, Some("percent")));
        assert!(list.iter().find(|r| r.name == "disk-85").unwrap().changed);
        // The evaluator reads them: disk-85 fires at once (for 0) at 1 %.
        let settings = {
            let mut tx = app.store.read().await.unwrap();
            Settings::load(tx.as_mut()).await.unwrap()
        };
        let host =
            vec![("host_disk_total_bytes", "/".to_string(), 100.0), ("host_disk_free_bytes", "/".to_string(), 60.0)];
        let round = Round { conditions: disk_conditions(&settings, project, "db1", &host), ..Default::default() };
        assert_eq!(round.conditions.len(), 1);
        assert_eq!(app.alerts_apply(round, t(0)).await.unwrap(), 1);
        let (alerts, deliveries) = state(&app).await;
        assert_eq!((alerts[0].rule.as_str(), alerts[0].state.as_str()), ("disk-85", "firing"));
        assert_eq!(deliveries, vec![("hook".to_string(), "firing".to_string())]);

        // Disabled: its open alert resolves though its condition still holds; no new one.
        let off = DefaultRuleUpdate { enabled: Some(false), ..Default::default() };
        assert!(!app.alert_rule_set(&ctx, "disk-85", off).await.unwrap().enabled);
        let settings = {
            let mut tx = app.store.read().await.unwrap();
            Settings::load(tx.as_mut()).await.unwrap()
        };
        let round = Round {
            conditions: disk_conditions(&settings, project, "db1", &host),
            disabled: settings.disabled(),
            ..Default::default()
        };
        assert_eq!(app.alerts_apply(round, t(10)).await.unwrap(), 1);
        let (alerts, deliveries) = state(&app).await;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].state, "resolved");
        assert_eq!(deliveries.len(), 2);

        // Reset: back to the defaults, nothing stored.
        let reset = DefaultRuleUpdate { reset: true, ..Default::default() };
        let shown = app.alert_rule_set(&ctx, "disk-85", reset).await.unwrap();
        assert_eq!((shown.threshold, shown.for_secs, shown.enabled, shown.changed), (Some(85.0), 60, true, false));
        assert!(app.store.read().await.unwrap().alert_rule_settings_list(None).await.unwrap().is_empty());
        // Every change is audited.
        let audit = app
            .store
            .read()
            .await
            .unwrap()
            .audit_list(&Default::default(), &PageRequest { limit: 100, after: None })
            .await
            .unwrap()
            .items;
        assert_eq!(audit.iter().filter(|a| a.action == "alert.rule.set").count(), 4);
    }

    #[tokio::test]
    async fn a_default_rule_with_channels_notifies_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let (app, project) = app_with_channel(dir.path()).await;
        let ctx = admin(&app).await;
        // A second channel that takes default rules; backup-failed goes to it only.
        let mut tx = app.store.write().await.unwrap();
        add_webhook(tx.as_mut(), project, "pager").await;
        tx.commit().await.unwrap();
        let only = DefaultRuleUpdate { channels: Some(vec!["pager".into()]), ..Default::default() };
        assert_eq!(app.alert_rule_set(&ctx, "backup-failed", only).await.unwrap().channels, ["pager"]);
        let round = |rule: &str| Round {
            conditions: vec![cond(&Settings::default(), project, rule, Some("c"), "cluster/c".into(), "x".into())],
            ..Default::default()
        };
        app.alerts_apply(round("backup-failed"), t(0)).await.unwrap();
        let (_, deliveries) = state(&app).await;
        assert_eq!(deliveries, vec![("pager".to_string(), "firing".to_string())]);
        // Another default rule still goes to every channel taking default rules.
        let mut both = round("drill-failed");
        both.conditions.extend(round("backup-failed").conditions);
        app.alerts_apply(both, t(10)).await.unwrap();
        let (_, deliveries) = state(&app).await;
        let mut drill: Vec<&str> = deliveries[1..].iter().map(|(c, _)| c.as_str()).collect();
        drill.sort();
        assert_eq!(drill, ["hook", "pager"]);
    }
}

//! Alerts: rules (the default ones every project has, and a project's own on any metric),
//! notification channels, silences, and the alerts themselves with their deliveries.
//!
//! - [`eval`] is the evaluator: a level-triggered loop (every 10 s in `sovdb serve`) that
//!   compares what the control plane knows (heartbeats, Patroni, events, kept
//!   certificates, the latest metrics) with the rules, and moves each alert pending →
//!   firing → resolved. Every transition is stored with the alert, written as an event
//!   (through `events::record`) and queued as deliveries, in one transaction.
//! - [`notify`] sends the queued deliveries (webhook signed with HMAC-SHA256, Slack, email
//!   over SMTP with STARTTLS), retried with exponential backoff, each attempt recorded.
//!
//! What is persisted: user rules (`alert_rules`), channels (`alert_channels`; their secrets
//! sealed in `secrets` under `channel/<id>`, never shown back, logged or put in an error),
//! silences, alerts (one row per episode, at most one open per rule and subject) and
//! deliveries (`migrations/0009_alerts.sql`). The default rules are code ([`DEFAULT_RULES`]);
//! what a project changed of them (threshold, `for`, channels, disabled) is in
//! `alert_rule_settings` (`migrations/0010_alert_rule_settings.sql`), only where it differs.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use sovdb_store::{
    AlertChannelRecord, AlertRecord, AlertRuleRecord, AlertRuleSettingsRecord, AlertSilenceRecord, DeliveryRecord,
    StoreError,
};
use sovdb_types::metrics::{metric, parse_duration_secs};
use sovdb_types::*;

use crate::rbac::Action;
use crate::workflows::pg;
use crate::{App, AppError, Ctx, Result};

pub(crate) mod eval;
pub(crate) mod notify;

/// What a default rule's threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Percent,
    Seconds,
    /// A share of something (a certificate's life): 0.25 is a quarter.
    Fraction,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Percent => "percent",
            Unit::Seconds => "seconds",
            Unit::Fraction => "fraction",
        }
    }

    /// `v` for a person: `64 MiB`, `85 %`, `1h`, `16.7 %`.
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Bytes => {
                for (name, size) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
                    let n = v / size as f64;
                    if n >= 1.0 && n.fract() == 0.0 {
                        return format!("{n} {name}");
                    }
                }
                format!("{v} bytes")
            }
            Unit::Percent => format!("{v} %"),
            Unit::Seconds => {
                let secs = v as u64;
                match secs {
                    s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
                    s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
                    s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
                    s => format!("{s}s"),
                }
            }
            Unit::Fraction => format!("{:.1} %", v * 100.0),
        }
    }
}

/// A default rule: exists in every project, evaluated from what the control plane knows.
/// A project may change its threshold, `for`, channels, or disable it
/// ([`App::alert_rule_set`]); the values here are what it has until then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultRule {
    pub name: &'static str,
    pub severity: &'static str,
    /// What fires it, for a person; `{}` stands for the threshold ([`Unit::show`]).
    pub condition: &'static str,
    pub threshold: Option<f64>,
    pub unit: Option<Unit>,
    /// The thresholds a project may set (inclusive), in `unit`.
    pub range: (f64, f64),
    /// Seconds the condition must hold before the alert fires.
    pub for_secs: u64,
}

impl DefaultRule {
    /// The condition with `threshold` in it.
    pub fn describe(&self, threshold: Option<f64>) -> String {
        match (self.unit, threshold) {
            (Some(u), Some(t)) => self.condition.replace("{}", &u.show(t)),
            _ => self.condition.to_string(),
        }
    }

    /// The rule as a project has it: its settings over the defaults.
    pub(crate) fn effective(&self, s: Option<&RuleSettings>) -> Effective {
        let s = s.cloned().unwrap_or_default();
        let threshold = self.threshold.map(|d| s.threshold.unwrap_or(d));
        let for_secs = s.for_secs.unwrap_or(self.for_secs);
        let channels = s.channels.unwrap_or_default();
        let enabled = s.enabled.unwrap_or(true);
        let changed = threshold != self.threshold || for_secs != self.for_secs || !channels.is_empty() || !enabled;
        Effective { threshold, for_secs, channels, enabled, changed }
    }

    /// `settings` without what equals the defaults (so an unchanged rule has none).
    pub(crate) fn normalize(&self, settings: RuleSettings) -> RuleSettings {
        RuleSettings {
            threshold: settings.threshold.filter(|t| Some(*t) != self.threshold),
            for_secs: settings.for_secs.filter(|f| *f != self.for_secs),
            channels: settings.channels.filter(|c| !c.is_empty()),
            enabled: settings.enabled.filter(|e| !e),
        }
    }

    /// A threshold a request gives, in the rule's unit, checked against the rule's range.
    pub(crate) fn parse_threshold(&self, input: &ThresholdInput) -> Result<f64> {
        let Some(unit) = self.unit else {
            return Err(AppError::Invalid(format!(
                "{} has no threshold (it fires when {}); change its --for, --channel or --disable it instead",
                self.name, self.condition
            )));
        };
        let (lo, hi) = self.range;
        let what = match unit {
            Unit::Bytes => "a number of bytes such as 1048576, 64KiB or 64MiB",
            Unit::Percent => "a percentage such as 90 or 90%",
            Unit::Seconds => "a duration such as 30m or 2h (a bare number is seconds)",
            Unit::Fraction => "a share of the certificate's life such as 0.2 or 20%",
        };
        let value = match input {
            ThresholdInput::Number(n) => Some(*n),
            ThresholdInput::Text(t) => parse_with_unit(unit, t),
        }
        .filter(|v| v.is_finite())
        .ok_or_else(|| AppError::Invalid(format!("the threshold of {} must be {what}", self.name)))?;
        if !(lo..=hi).contains(&value) {
            return Err(AppError::Invalid(format!(
                "the threshold of {} must be between {} and {} (got {})",
                self.name,
                unit.show(lo),
                unit.show(hi),
                unit.show(value)
            )));
        }
        Ok(value)
    }
}

/// A text threshold in `unit`: a number with an optional unit suffix.
fn parse_with_unit(unit: Unit, text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(t.len());
    let (num, suffix) = (t[..split].trim(), t[split..].trim());
    if unit == Unit::Seconds {
        return parse_duration_secs(t).map(|s| s as f64);
    }
    let n: f64 = num.parse().ok()?;
    let scale = match (unit, suffix.to_ascii_lowercase().as_str()) {
        (_, "") => 1.0,
        (Unit::Bytes, "b") => 1.0,
        (Unit::Bytes, "kib") => 1024.0,
        (Unit::Bytes, "mib") => 1024.0 * 1024.0,
        (Unit::Bytes, "gib") => 1024.0 * 1024.0 * 1024.0,
        (Unit::Bytes, "tib") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        (Unit::Bytes, "kb") => 1e3,
        (Unit::Bytes, "mb") => 1e6,
        (Unit::Bytes, "gb") => 1e9,
        (Unit::Bytes, "tb") => 1e12,
        (Unit::Percent, "%") => 1.0,
        (Unit::Fraction, "%") => 0.01,
        _ => return None,
    };
    Some(n * scale)
}

/// What the store keeps of a project's settings of a default rule
/// (`alert_rule_settings.spec`): only what differs from the code's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl RuleSettings {
    fn is_empty(&self) -> bool {
        *self == RuleSettings::default()
    }
}

/// A default rule as one project has it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effective {
    pub threshold: Option<f64>,
    pub for_secs: u64,
    /// Empty: every channel of the project that takes default rules.
    pub channels: Vec<String>,
    pub enabled: bool,
    /// Whether it differs from the rule as the code defines it.
    pub changed: bool,
}

/// Every project's settings of the default rules, as one evaluation round reads them.
#[derive(Debug, Default)]
pub(crate) struct Settings(HashMap<(ProjectId, String), RuleSettings>);

impl Settings {
    pub(crate) async fn load(tx: &mut dyn sovdb_store::Tx) -> Result<Settings> {
        let mut map = HashMap::new();
        for r in tx.alert_rule_settings_list(None).await? {
            // Unreadable settings (written by a newer release?) count as none: the
            // defaults still watch the project.
            match serde_json::from_str::<RuleSettings>(&r.spec) {
                Ok(s) => {
                    map.insert((r.project_id, r.rule), s);
                }
                Err(e) => {
                    tracing::warn!(rule = %r.rule, error = %e, "unreadable alert rule settings; using the defaults")
                }
            }
        }
        Ok(Settings(map))
    }

    /// How `project` has the default rule `rule`; `None` for a rule that is not a default one.
    pub(crate) fn of(&self, project: ProjectId, rule: &str) -> Option<Effective> {
        default_rule(rule).map(|d| d.effective(self.0.get(&(project, rule.to_string()))))
    }

    /// The threshold `project` has for the default rule `rule` (its default without one).
    pub(crate) fn threshold(&self, project: ProjectId, rule: &str) -> f64 {
        self.of(project, rule).and_then(|e| e.threshold).expect("a default rule with a threshold")
    }

    /// Every `(project, rule)` a project disabled.
    pub(crate) fn disabled(&self) -> std::collections::HashSet<(ProjectId, String)> {
        self.0.iter().filter(|(_, s)| s.enabled == Some(false)).map(|(k, _)| k.clone()).collect()
    }

    #[cfg(test)]
    pub(crate) fn set(&mut self, project: ProjectId, rule: &str, s: RuleSettings) {
        self.0.insert((project, rule.to_string()), s);
    }
}

/// Replication lag (bytes, seen on the primary) above which `replication-lag` fires.
pub const LAG_THRESHOLD_BYTES: f64 = 64.0 * 1024.0 * 1024.0;
/// How long after a failover `failover` keeps firing (then it resolves by itself), seconds.
pub const FAILOVER_WINDOW_SECS: f64 = 600.0;
/// A scheduled backup is overdue when none succeeded this long after it was due, seconds.
pub const BACKUP_GRACE_SECS: f64 = 3600.0;
/// `certificate-expiring` fires below this share of a certificate's life left (the
/// certificate bot renews at a third).
pub const CERT_LEFT_FRACTION: f64 = 1.0 / 6.0;

const WEEK_SECS: f64 = 7.0 * 86400.0;

/// The default rules, in the order `alert rule list` shows them (and `docs/alerts.md`).
pub const DEFAULT_RULES: &[DefaultRule] = &[
    DefaultRule {
        name: "host-unreachable",
        severity: "critical",
        condition: "a host running a member of the project's clusters does not answer heartbeats",
        threshold: None,
        unit: None,
        range: (0.0, 0.0),
        for_secs: 0,
    },
    DefaultRule {
        name: "member-down",
        severity: "critical",
        condition: "Patroni reports a member missing, stopped or not streaming",
        threshold: None,
        unit: None,
        range: (0.0, 0.0),
        for_secs: 20,
    },
    DefaultRule {
        name: "no-primary",
        severity: "critical",
        condition: "Patroni reports no running primary (or no member's Patroni answers)",
        threshold: None,
        unit: None,
        range: (0.0, 0.0),
        for_secs: 10,
    },
    DefaultRule {
        name: "replication-lag",
        severity: "warning",
        condition: "pg_replication_lag_bytes (seen on the primary) above {}",
        threshold: Some(LAG_THRESHOLD_BYTES),
        unit: Some(Unit::Bytes),
        range: (1.0, (1u64 << 40) as f64),
        for_secs: 60,
    },
    DefaultRule {
        name: "disk-85",
        severity: "warning",
        condition: "a file system of a member's host is more than {} full",
        threshold: Some(85.0),
        unit: Some(Unit::Percent),
        range: (0.1, 99.9),
        for_secs: 60,
    },
    DefaultRule {
        name: "disk-95",
        severity: "critical",
        condition: "a file system of a member's host is more than {} full",
        threshold: Some(95.0),
        unit: Some(Unit::Percent),
        range: (0.1, 99.9),
        for_secs: 0,
    },
    DefaultRule {
        name: "backup-failed",
        severity: "warning",
        condition: "the cluster's latest backup failed (until one succeeds)",
        threshold: None,
        unit: None,
        range: (0.0, 0.0),
        for_secs: 0,
    },
    DefaultRule {
        name: "backup-overdue",
        severity: "warning",
        condition: "no backup succeeded within {} after the backup schedule was due",
        threshold: Some(BACKUP_GRACE_SECS),
        unit: Some(Unit::Seconds),
        range: (60.0, WEEK_SECS),
        for_secs: 0,
    },
    DefaultRule {
        name: "drill-failed",
        severity: "warning",
        condition: "the cluster's latest restore drill failed (until one passes)",
        threshold: None,
        unit: None,
        range: (0.0, 0.0),
        for_secs: 0,
    },
    DefaultRule {
        name: "certificate-expiring",
        severity: "warning",
        condition: "a member certificate has less than {} of its life left (the bot renews at a third)",
        threshold: Some(CERT_LEFT_FRACTION),
        unit: Some(Unit::Fraction),
        range: (0.01, 0.99),
        for_secs: 0,
    },
    DefaultRule {
        name: "failover",
        severity: "warning",
        condition: "Patroni failed over (fires for {} after the failover)",
        threshold: Some(FAILOVER_WINDOW_SECS),
        unit: Some(Unit::Seconds),
        range: (10.0, WEEK_SECS),
        for_secs: 0,
    },
];

/// The longest `for` a rule may have.
const MAX_FOR_SECS: i64 = 7 * 86400;

/// A rule's `for` as a request gives it (`30s`, `5m`, `0`).
fn parse_for(s: &str) -> Result<u64> {
    parse_duration_secs(s)
        .filter(|s| (0..=MAX_FOR_SECS).contains(s))
        .map(|s| s as u64)
        .ok_or_else(|| AppError::Invalid(format!("for {s:?} is not a duration such as 30s or 5m (at most 7d)")))
}

pub(crate) fn default_rule(name: &str) -> Option<&'static DefaultRule> {
    DEFAULT_RULES.iter().find(|r| r.name == name)
}

/// What the store keeps of a user rule (`alert_rules.spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleSpec {
    pub cluster: Option<String>,
    pub metric: String,
    pub op: AlertOp,
    pub threshold: f64,
    pub for_secs: u64,
    pub channels: Vec<String>,
}

/// What the store keeps of a channel (`alert_channels.spec`): no secrets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChannelSpec {
    /// webhook only (a Slack URL is a secret).
    pub url: Option<String>,
    pub ca_pem: Option<String>,
    pub smtp_server: Option<String>,
    pub smtp_username: Option<String>,
    pub smtp_ca_pem: Option<String>,
    pub smtp_plaintext: bool,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub default_rules: bool,
}

/// What the store keeps of an alert besides its columns (`alerts.data`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertData {
    pub severity: String,
    pub subject: String,
    pub member: Option<String>,
    pub host: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub message: String,
    /// The last status queued for delivery (`firing`, `resolved`): a firing alert not yet
    /// notified (it fired during a silence) is notified when the silence ends, and a
    /// resolve is notified only to those who were told it fired.
    pub notified: Option<String>,
}

/// The owner of a channel's secrets.
pub(crate) fn channel_owner(id: ChannelId) -> String {
    format!("channel/{id}")
}

/// The names of a channel's secrets.
pub(crate) const SECRET_HMAC: &str = "hmac-secret";
pub(crate) const SECRET_SLACK_URL: &str = "slack-url";
pub(crate) const SECRET_SMTP_PASSWORD: &str = "smtp-password";

/// The length of a generated webhook secret.
const GENERATED_SECRET_LEN: usize = 40;

fn rule_view(r: &AlertRuleRecord) -> Result<AlertRule> {
    let spec: RuleSpec = serde_json::from_str(&r.spec)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored alert rule {:?} is unreadable: {e}", r.name)))?;
    Ok(AlertRule {
        name: r.name.clone(),
        default: false,
        condition: format!("{} {} {}", spec.metric, spec.op.as_str(), spec.threshold),
        cluster: spec.cluster,
        metric: Some(spec.metric),
        op: Some(spec.op),
        threshold: Some(spec.threshold),
        unit: None,
        for_secs: spec.for_secs,
        enabled: true,
        changed: false,
        severity: "warning".into(),
        channels: spec.channels,
        created_at: Some(r.created_at),
    })
}

fn default_view(r: &DefaultRule, e: &Effective) -> AlertRule {
    AlertRule {
        name: r.name.into(),
        default: true,
        condition: r.describe(e.threshold),
        cluster: None,
        metric: None,
        op: None,
        threshold: e.threshold,
        unit: r.unit.map(|u| u.as_str().into()),
        for_secs: e.for_secs,
        enabled: e.enabled,
        changed: e.changed,
        severity: r.severity.into(),
        channels: e.channels.clone(),
        created_at: None,
    }
}

/// A project's stored settings of one default rule (none when it has none, or they are
/// unreadable).
fn stored_settings(records: &[AlertRuleSettingsRecord], rule: &str) -> Option<RuleSettings> {
    records.iter().find(|r| r.rule == rule).and_then(|r| serde_json::from_str(&r.spec).ok())
}

fn channel_view(c: &AlertChannelRecord, secret: Option<String>) -> Result<Channel> {
    let spec: ChannelSpec = serde_json::from_str(&c.spec)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored channel {:?} is unreadable: {e}", c.name)))?;
    let kind = ChannelType::parse(&c.kind)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("stored channel {:?} has kind {:?}", c.name, c.kind)))?;
    Ok(Channel {
        id: c.id,
        name: c.name.clone(),
        kind,
        url: spec.url,
        smtp_server: spec.smtp_server,
        smtp_username: spec.smtp_username,
        smtp_plaintext: spec.smtp_plaintext,
        from: spec.from,
        to: spec.to,
        default_rules: spec.default_rules,
        secret,
        created_at: c.created_at,
    })
}

pub(crate) fn alert_view(a: &AlertRecord, silenced: bool) -> Alert {
    let data: AlertData = serde_json::from_str(&a.data).unwrap_or_default();
    Alert {
        id: a.id,
        rule: a.rule.clone(),
        state: AlertState::parse(&a.state).unwrap_or(AlertState::Firing),
        severity: data.severity,
        subject: data.subject,
        cluster: a.cluster.clone(),
        member: data.member,
        host: data.host,
        value: data.value,
        threshold: data.threshold,
        message: data.message,
        pending_since: a.pending_since,
        started_at: a.started_at,
        resolved_at: a.resolved_at,
        silenced,
    }
}

fn silence_view(s: &AlertSilenceRecord, now: DateTime<Utc>) -> Silence {
    let status = if now < s.starts_at {
        "scheduled"
    } else if now < s.ends_at {
        "active"
    } else {
        "expired"
    };
    Silence {
        id: s.id,
        cluster: s.cluster.clone(),
        rule: s.rule.clone(),
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        created_at: s.created_at,
        status: status.into(),
    }
}

/// Whether `s` silences an alert of `rule` on `cluster` at `now`.
pub(crate) fn silences(s: &AlertSilenceRecord, rule: &str, cluster: Option<&str>, now: DateTime<Utc>) -> bool {
    s.starts_at <= now
        && now < s.ends_at
        && s.rule.as_deref().is_none_or(|r| r == rule)
        && s.cluster.as_deref().is_none_or(|c| Some(c) == cluster)
}

fn delivery_view(d: &DeliveryRecord) -> Delivery {
    let state = if d.delivered_at.is_some() {
        "delivered"
    } else if d.gave_up {
        "failed"
    } else {
        "retrying"
    };
    Delivery {
        id: d.id,
        alert_id: d.alert_id,
        channel: d.channel.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        state: state.into(),
        last_result: d.last_result.clone(),
        next_at: d.next_at,
        delivered_at: d.delivered_at,
        created_at: d.created_at,
    }
}

/// `http://` or `https://` with a host, for webhook and Slack URLs.
fn check_url(what: &str, url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).map_err(|_| AppError::Invalid(format!("{what} is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(AppError::Invalid(format!("{what} must be an http:// or https:// URL with a host")));
    }
    Ok(())
}

fn check_address(what: &str, a: &str) -> Result<()> {
    let ok = a.len() <= 254
        && a.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !a.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',');
    if !ok {
        return Err(AppError::Invalid(format!("{what} {a:?} is not an email address such as ops@example.org")));
    }
    Ok(())
}

/// `host[:port]`, port default 587.
pub(crate) fn smtp_endpoint(server: &str) -> Option<(String, u16)> {
    match server.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None if !server.is_empty() => Some((server.to_string(), 587)),
        None => None,
    }
}

fn check_pem(what: &str, pem: &Option<String>) -> Result<()> {
    if let Some(pem) = pem {
        reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AppError::Invalid(format!("{what} holds no PEM certificate")))?;
    }
    Ok(())
}

impl App {
    /// The default rules, then the project's own by name.
    /// A default rule shows the project's values (`changed` when it set some).
    pub async fn alert_rule_list(&self, ctx: &Ctx) -> Result<Vec<AlertRule>> {
        ctx.require(Action::AlertRead)?;
        let mut tx = self.store.read().await?;
        let settings = tx.alert_rule_settings_list(Some(ctx.project.id)).await?;
        let mut out: Vec<AlertRule> = DEFAULT_RULES
            .iter()
            .map(|r| default_view(r, &r.effective(stored_settings(&settings, r.name).as_ref())))
            .collect();
        for r in tx.alert_rule_list(Some(ctx.project.id)).await? {
            out.push(rule_view(&r)?);
        }
        Ok(out)
    }

    pub async fn alert_rule_create(&self, ctx: &Ctx, req: AlertRuleCreate) -> Result<AlertRule> {
        ctx.require(Action::AlertManage)?;
        crate::validate::dns_label("rule name", &req.name)?;
        if default_rule(&req.name).is_some() {
            return Err(AppError::Conflict(format!("{:?} is a default rule's name; pick another", req.name)));
        }
        if metric(&req.metric).is_none() {
            return Err(AppError::Invalid(format!(
                "no metric {:?}; the metrics are listed in docs/monitoring.md (`sovdb alert rule` takes their names)",
                req.metric
            )));
        }
        if !req.threshold.is_finite() {
            return Err(AppError::Invalid("threshold must be a finite number".into()));
        }
        let for_secs = match req.for_duration.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => parse_for(s)?,
            None => 0,
        };
        let mut tx = self.store.write().await?;
        if let Some(c) = &req.cluster {
            crate::validate::dns_label("cluster", c)?;
            if tx.cluster_record(ctx.project.id, c).await?.is_none() {
                return Err(AppError::not_found("cluster", c.as_str()));
            }
        }
        let channels = tx.alert_channel_list(Some(ctx.project.id)).await?;
        let mut wanted = req.channels.clone();
        wanted.dedup();
        for ch in &wanted {
            if !channels.iter().any(|c| &c.name == ch) {
                return Err(AppError::not_found("channel", ch.as_str()));
            }
        }
        let spec = RuleSpec {
            cluster: req.cluster.clone(),
            metric: req.metric.clone(),
            op: req.op,
            threshold: req.threshold,
            for_secs,
            channels: wanted,
        };
        let record = AlertRuleRecord {
            project_id: ctx.project.id,
            name: req.name.clone(),
            spec: serde_json::to_string(&spec).expect("rule spec serialises"),
            created_at: crate::now(),
        };
        match tx.alert_rule_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "project {:?} already has a rule {:?}",
                    ctx.project.name, req.name
                )))
            }
            other => other?,
        }
        tx.audit_append(&ctx.audit(
            "alert.rule.create",
            format!("alert-rule/{}", req.name),
            serde_json::to_value(&req).unwrap_or_default(),
        ))
        .await?;
        tx.commit().await?;
        rule_view(&record)
    }

    /// Changes the project's settings of a default rule: its threshold, `for`, channels,
    /// whether it is evaluated; or, with `reset`, forgets them. What the request does not
    /// give stays as it was. The evaluator uses the new values from its next round.
    pub async fn alert_rule_set(&self, ctx: &Ctx, name: &str, req: DefaultRuleUpdate) -> Result<AlertRule> {
        ctx.require(Action::AlertManage)?;
        let mut tx = self.store.write().await?;
        let Some(rule) = default_rule(name) else {
            let own = tx.alert_rule_list(Some(ctx.project.id)).await?;
            if own.iter().any(|r| r.name == name) {
                return Err(AppError::Invalid(format!(
                    "{name:?} is one of the project's own rules: `alert rule set` changes default rules; \
                     delete and create it again to change it"
                )));
            }
            return Err(AppError::not_found("alert rule", name));
        };
        let given =
            req.threshold.is_some() || req.for_duration.is_some() || req.channels.is_some() || req.enabled.is_some();
        if req.reset && given {
            return Err(AppError::Invalid(
                "reset takes no other setting: it puts the rule back as sovdb defines it".into(),
            ));
        }
        if !req.reset && !given {
            return Err(AppError::Invalid(
                "nothing to change: give a threshold, a for, channels, enabled (--enable/--disable) or reset".into(),
            ));
        }
        let records = tx.alert_rule_settings_list(Some(ctx.project.id)).await?;
        let mut settings =
            if req.reset { RuleSettings::default() } else { stored_settings(&records, name).unwrap_or_default() };
        if let Some(t) = &req.threshold {
            settings.threshold = Some(rule.parse_threshold(t)?);
        }
        if let Some(f) = &req.for_duration {
            settings.for_secs = Some(parse_for(f)?);
        }
        if let Some(wanted) = &req.channels {
            let channels = tx.alert_channel_list(Some(ctx.project.id)).await?;
            let mut names = Vec::new();
            for ch in wanted {
                if !channels.iter().any(|c| &c.name == ch) {
                    return Err(AppError::not_found("channel", ch.as_str()));
                }
                if !names.contains(ch) {
                    names.push(ch.clone());
                }
            }
            settings.channels = Some(names);
        }
        if let Some(e) = req.enabled {
            settings.enabled = Some(e);
        }
        let settings = rule.normalize(settings);
        if settings.is_empty() {
            tx.alert_rule_settings_delete(ctx.project.id, name).await?;
        } else {
            tx.alert_rule_settings_put(&AlertRuleSettingsRecord {
                project_id: ctx.project.id,
                rule: name.into(),
                spec: serde_json::to_string(&settings).expect("rule settings serialise"),
                updated_at: crate::now(),
            })
            .await?;
        }
        let effective = rule.effective(Some(&settings));
        tx.audit_append(&ctx.audit(
            "alert.rule.set",
            format!("alert-rule/{name}"),
            serde_json::json!({
                "reset": req.reset,
                "threshold": effective.threshold,
                "for_secs": effective.for_secs,
                "channels": effective.channels,
                "enabled": effective.enabled,
            }),
        ))
        .await?;
        tx.commit().await?;
        Ok(default_view(rule, &effective))
    }

    /// Deletes a user rule; its open alerts resolve at the next evaluation.
    pub async fn alert_rule_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        ctx.require(Action::AlertManage)?;
        if default_rule(name).is_some() {
            return Err(AppError::Conflict(format!(
                "{name:?} is a default rule: it cannot be deleted; disable it with `sovdb alert rule set {name} --disable` \
                 or silence it with `sovdb alert silence create --rule {name}`"
            )));
        }
        let mut tx = self.store.write().await?;
        if !tx.alert_rule_delete(ctx.project.id, name).await? {
            return Err(AppError::not_found("alert rule", name));
        }
        tx.audit_append(&ctx.audit("alert.rule.delete", format!("alert-rule/{name}"), serde_json::json!({}))).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn alert_channel_list(&self, ctx: &Ctx) -> Result<Vec<Channel>> {
        ctx.require(Action::AlertRead)?;
        let records = self.store.read().await?.alert_channel_list(Some(ctx.project.id)).await?;
        records.iter().map(|c| channel_view(c, None)).collect()
    }

    /// Creates a channel; its secrets are sealed and never shown back, except a generated
    /// webhook secret in this one answer.
    pub async fn alert_channel_create(&self, ctx: &Ctx, req: ChannelCreate) -> Result<Channel> {
        ctx.require(Action::AlertManage)?;
        crate::validate::dns_label("channel name", &req.name)?;
        let kind =
            req.kind.ok_or_else(|| AppError::Invalid("a channel needs a type: webhook, slack or email".into()))?;
        let mut spec = ChannelSpec { default_rules: req.default_rules.unwrap_or(true), ..Default::default() };
        let mut secrets: Vec<(&str, String)> = Vec::new();
        let mut shown = None;
        let unexpected = |what: &str, set: bool| -> Result<()> {
            if set {
                return Err(AppError::Invalid(format!("a {} channel takes no {what}", kind.as_str())));
            }
            Ok(())
        };
        let email_fields = req.smtp_server.is_some()
            || req.smtp_username.is_some()
            || req.smtp_password.is_some()
            || req.smtp_ca_pem.is_some()
            || req.smtp_plaintext
            || req.from.is_some()
            || !req.to.is_empty();
        match kind {
            ChannelType::Webhook => {
                unexpected("SMTP settings, from or to", email_fields)?;
                let url = req.url.clone().ok_or_else(|| AppError::Invalid("a webhook channel needs a url".into()))?;
                check_url("the url", &url)?;
                check_pem("the CA file", &req.ca_pem)?;
                let secret = match &req.secret {
                    Some(s) if s.len() >= 16 => s.clone(),
                    Some(_) => {
                        return Err(AppError::Invalid("the webhook secret must have at least 16 characters".into()))
                    }
                    None => {
                        let s = Alphanumeric.sample_string(&mut rand::thread_rng(), GENERATED_SECRET_LEN);
                        shown = Some(s.clone());
                        s
                    }
                };
                secrets.push((SECRET_HMAC, secret));
                spec.url = Some(url);
                spec.ca_pem = req.ca_pem.clone();
            }
            ChannelType::Slack => {
                unexpected("SMTP settings, from or to", email_fields)?;
                unexpected("secret", req.secret.is_some())?;
                let url = req
                    .url
                    .clone()
                    .ok_or_else(|| AppError::Invalid("a slack channel needs its incoming webhook url".into()))?;
                check_url("the url", &url)?;
                check_pem("the CA file", &req.ca_pem)?;
                secrets.push((SECRET_SLACK_URL, url));
                spec.ca_pem = req.ca_pem.clone();
            }
            ChannelType::Email => {
                unexpected("url or secret", req.url.is_some() || req.secret.is_some() || req.ca_pem.is_some())?;
                let server = req
                    .smtp_server
                    .clone()
                    .ok_or_else(|| AppError::Invalid("an email channel needs --smtp-server host[:port]".into()))?;
                if smtp_endpoint(&server).is_none() {
                    return Err(AppError::Invalid(format!("smtp server {server:?} is not host[:port]")));
                }
                let from = req.from.clone().ok_or_else(|| AppError::Invalid("an email channel needs --from".into()))?;
                check_address("from", &from)?;
                if req.to.is_empty() {
                    return Err(AppError::Invalid("an email channel needs at least one --to".into()));
                }
                for t in &req.to {
                    check_address("to", t)?;
                }
                if req.smtp_password.is_some() && req.smtp_username.is_none() {
                    return Err(AppError::Invalid("an SMTP password needs a username".into()));
                }
                check_pem("the SMTP CA file", &req.smtp_ca_pem)?;
                if let Some(p) = &req.smtp_password {
                    secrets.push((SECRET_SMTP_PASSWORD, p.clone()));
                }
                spec.smtp_server = Some(server);
                spec.smtp_username = req.smtp_username.clone();
                spec.smtp_ca_pem = req.smtp_ca_pem.clone();
                spec.smtp_plaintext = req.smtp_plaintext;
                spec.from = Some(from);
                spec.to = req.to.clone();
            }
        }
        let pki = self.pki()?;
        let record = AlertChannelRecord {
            id: ChannelId::new(),
            project_id: ctx.project.id,
            name: req.name.clone(),
            kind: kind.as_str().into(),
            spec: serde_json::to_string(&spec).expect("channel spec serialises"),
            created_at: crate::now(),
        };
        let mut tx = self.store.write().await?;
        match tx.alert_channel_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "project {:?} already has a channel {:?}",
                    ctx.project.name, req.name
                )))
            }
            other => other?,
        }
        let owner = channel_owner(record.id);
        for (name, value) in &secrets {
            let sealed = pki.seal(value.as_bytes(), &pg::aad(&owner, name));
            tx.secret_put(&owner, name, &sealed, record.created_at).await?;
        }
        let params = serde_json::json!({
            "id": record.id.to_string(),
            "type": kind.as_str(),
            "url": spec.url,
            "smtp_server": spec.smtp_server,
            "to": spec.to,
            "secrets": secrets.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        });
        tx.audit_append(&ctx.audit("alert.channel.create", format!("alert-channel/{}", req.name), params)).await?;
        tx.commit().await?;
        channel_view(&record, shown)
    }

    /// Deletes a channel and its secrets; deliveries not yet made to it are given up.
    pub async fn alert_channel_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        ctx.require(Action::AlertManage)?;
        let mut tx = self.store.write().await?;
        let channels = tx.alert_channel_list(Some(ctx.project.id)).await?;
        let c = channels.iter().find(|c| c.name == name).ok_or_else(|| AppError::not_found("channel", name))?;
        tx.alert_channel_delete(c.id).await?;
        tx.secret_delete(&channel_owner(c.id)).await?;
        tx.audit_append(&ctx.audit(
            "alert.channel.delete",
            format!("alert-channel/{name}"),
            serde_json::json!({"id": c.id.to_string()}),
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The project's alerts, oldest first; with `open`, only pending and firing ones.
    pub async fn alert_list(&self, ctx: &Ctx, open: bool, page: &PageParams) -> Result<Page<Alert>> {
        ctx.require(Action::AlertRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        let records = tx.alert_list(ctx.project.id, open, &page).await?;
        let silences = tx.alert_silence_list(Some(ctx.project.id)).await?;
        let now = crate::now();
        let items = records
            .items
            .iter()
            .map(|a| {
                let silenced = a.state != "resolved" && silences.iter().any(|s| silences_alert(s, a, now));
                alert_view(a, silenced)
            })
            .collect();
        Ok(Page { items, next_page_token: records.next_page_token })
    }

    /// The deliveries of the project's alerts (or of one alert), oldest first.
    pub async fn alert_delivery_list(
        &self,
        ctx: &Ctx,
        alert: Option<&str>,
        page: &PageParams,
    ) -> Result<Page<Delivery>> {
        ctx.require(Action::AlertRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let alert = match alert {
            Some(a) => {
                Some(a.parse::<AlertId>().map_err(|_| AppError::Invalid(format!("alert {a:?} is not an alert ID")))?)
            }
            None => None,
        };
        let records = self.store.read().await?.delivery_list(ctx.project.id, alert, &page).await?;
        Ok(Page { items: records.items.iter().map(delivery_view).collect(), next_page_token: records.next_page_token })
    }

    pub async fn alert_silence_list(&self, ctx: &Ctx) -> Result<Vec<Silence>> {
        ctx.require(Action::AlertRead)?;
        let now = crate::now();
        let records = self.store.read().await?.alert_silence_list(Some(ctx.project.id)).await?;
        Ok(records.iter().map(|s| silence_view(s, now)).collect())
    }

    /// A silence, or a maintenance window when it starts later.
    pub async fn alert_silence_create(&self, ctx: &Ctx, req: SilenceCreate) -> Result<Silence> {
        ctx.require(Action::AlertManage)?;
        let now = crate::now();
        let starts_at = req.starts_at.unwrap_or(now);
        let ends_at = match (req.ends_at, req.duration.as_deref()) {
            (Some(_), Some(_)) => return Err(AppError::Invalid("give an end or a duration, not both".into())),
            (Some(end), None) => end,
            (None, Some(d)) => {
                let secs = parse_duration_secs(d)
                    .filter(|s| *s > 0)
                    .ok_or_else(|| AppError::Invalid(format!("duration {d:?} is not a duration such as 2h or 30m")))?;
                starts_at + TimeDelta::seconds(secs)
            }
            (None, None) => {
                return Err(AppError::Invalid("a silence needs an end (--until) or a duration (--duration)".into()))
            }
        };
        if ends_at <= starts_at || ends_at <= now {
            return Err(AppError::Invalid("a silence must end after it starts, and in the future".into()));
        }
        let mut tx = self.store.write().await?;
        if let Some(c) = &req.cluster {
            crate::validate::dns_label("cluster", c)?;
            if tx.cluster_record(ctx.project.id, c).await?.is_none() {
                return Err(AppError::not_found("cluster", c.as_str()));
            }
        }
        if let Some(r) = &req.rule {
            let user = tx.alert_rule_list(Some(ctx.project.id)).await?;
            if default_rule(r).is_none() && !user.iter().any(|u| &u.name == r) {
                return Err(AppError::not_found("alert rule", r.as_str()));
            }
        }
        let record = AlertSilenceRecord {
            id: SilenceId::new(),
            project_id: ctx.project.id,
            cluster: req.cluster.clone(),
            rule: req.rule.clone(),
            starts_at,
            ends_at,
            comment: req.comment.clone().unwrap_or_default(),
            created_by: ctx.user.name.clone(),
            created_at: now,
        };
        tx.alert_silence_create(&record).await?;
        tx.audit_append(&ctx.audit(
            "alert.silence.create",
            format!("alert-silence/{}", record.id),
            serde_json::json!({"cluster": record.cluster, "rule": record.rule, "starts_at": starts_at, "ends_at": ends_at, "comment": record.comment}),
        ))
        .await?;
        tx.commit().await?;
        Ok(silence_view(&record, now))
    }

    pub async fn alert_silence_delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        ctx.require(Action::AlertManage)?;
        let sid: SilenceId =
            id.parse().map_err(|_| AppError::Invalid(format!("silence {id:?} is not a silence ID")))?;
        let mut tx = self.store.write().await?;
        if !tx.alert_silence_delete(ctx.project.id, sid).await? {
            return Err(AppError::not_found("silence", id));
        }
        tx.audit_append(&ctx.audit("alert.silence.delete", format!("alert-silence/{id}"), serde_json::json!({})))
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Whether `s` silences the alert `a` at `now`.
pub(crate) fn silences_alert(s: &AlertSilenceRecord, a: &AlertRecord, now: DateTime<Utc>) -> bool {
    s.project_id == a.project_id && silences(s, &a.rule, a.cluster.as_deref(), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_endpoints_and_addresses() {
        assert_eq!(smtp_endpoint("mail.example.org"), Some(("mail.example.org".into(), 587)));
        assert_eq!(smtp_endpoint("127.0.0.1:2525"), Some(("127.0.0.1".into(), 2525)));
        assert_eq!(smtp_endpoint("x:y"), None);
        assert_eq!(smtp_endpoint(""), None);
        assert!(check_address("to", "ops@example.org").is_ok());
        assert!(check_address("to", "ops").is_err());
        assert!(check_address("to", "a@b.c, d@e.f").is_err());
        assert!(check_url("url", "http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("url", "file:///etc/passwd").is_err());
    }

    fn invalid(r: Result<f64>) -> String {
        match r {
            Err(AppError::Invalid(m)) => m,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn thresholds_are_read_in_the_rules_unit_and_checked_against_its_range() {
        let rule = |n| default_rule(n).unwrap();
        let text = |t: &str| ThresholdInput::Text(t.into());
        let lag = rule("replication-lag");
        assert_eq!(lag.parse_threshold(&ThresholdInput::Number(1.0)).unwrap(), 1.0);
        assert_eq!(lag.parse_threshold(&text("64KiB")).unwrap(), 65536.0);
        assert_eq!(lag.parse_threshold(&text("2 MiB")).unwrap(), 2097152.0);
        assert_eq!(lag.parse_threshold(&text("1MB")).unwrap(), 1e6);
        assert!(invalid(lag.parse_threshold(&text("0"))).contains("between 1 bytes and 1 TiB"));
        assert!(invalid(lag.parse_threshold(&text("5m"))).contains("a number of bytes"));
        let disk = rule("disk-85");
        assert_eq!(disk.parse_threshold(&text("1%")).unwrap(), 1.0);
        assert_eq!(disk.parse_threshold(&ThresholdInput::Number(70.5)).unwrap(), 70.5);
        assert!(invalid(disk.parse_threshold(&ThresholdInput::Number(100.0))).contains("between 0.1 % and 99.9 %"));
        assert!(invalid(disk.parse_threshold(&ThresholdInput::Number(f64::NAN))).contains("a percentage"));
        assert!(invalid(disk.parse_threshold(&text("-5"))).contains("between"));
        let failover = rule("failover");
        assert_eq!(failover.parse_threshold(&text("30m")).unwrap(), 1800.0);
        assert_eq!(failover.parse_threshold(&ThresholdInput::Number(45.0)).unwrap(), 45.0);
        assert!(invalid(failover.parse_threshold(&text("5s"))).contains("between 10s and 7d"));
        assert!(invalid(failover.parse_threshold(&text("8d"))).contains("between 10s and 7d"));
        assert!(invalid(rule("backup-overdue").parse_threshold(&text("30s"))).contains("between 1m and 7d"));
        let cert = rule("certificate-expiring");
        assert_eq!(cert.parse_threshold(&text("25%")).unwrap(), 0.25);
        assert_eq!(cert.parse_threshold(&ThresholdInput::Number(0.1)).unwrap(), 0.1);
        assert!(invalid(cert.parse_threshold(&ThresholdInput::Number(1.5))).contains("between 1.0 % and 99.0 %"));
        // Rules that fire on a state, not a value, have no threshold.
        for name in ["host-unreachable", "member-down", "no-primary", "backup-failed", "drill-failed"] {
            assert!(invalid(rule(name).parse_threshold(&text("1"))).contains("has no threshold"), "{name}");
        }
        assert!(parse_for("0").is_ok_and(|f| f == 0));
        assert!(parse_for("5m").is_ok_and(|f| f == 300));
        assert!(parse_for("8d").is_err() && parse_for("soon").is_err());
    }

    #[test]
    fn settings_override_the_defaults_and_keep_only_what_differs() {
        let lag = default_rule("replication-lag").unwrap();
        let none = lag.effective(None);
        assert_eq!(
            none,
            Effective {
                threshold: Some(LAG_THRESHOLD_BYTES),
                for_secs: 60,
                channels: vec![],
                enabled: true,
                changed: false
            }
        );
        let s = RuleSettings { threshold: Some(1024.0), for_secs: Some(0), ..Default::default() };
        let e = lag.effective(Some(&s));
        assert_eq!((e.threshold, e.for_secs, e.enabled, e.changed), (Some(1024.0), 0, true, true));
        assert_eq!(lag.describe(e.threshold), "pg_replication_lag_bytes (seen on the primary) above 1 KiB");
        // Values equal to the defaults are not kept: setting them back is a reset.
        let back = RuleSettings {
            threshold: Some(LAG_THRESHOLD_BYTES),
            for_secs: Some(60),
            channels: Some(vec![]),
            enabled: Some(true),
        };
        assert!(lag.normalize(back).is_empty());
        let off = lag.normalize(RuleSettings { enabled: Some(false), ..Default::default() });
        assert_eq!(off, RuleSettings { enabled: Some(false), ..Default::default() });
        assert!(lag.effective(Some(&off)).changed);
        // A rule without a threshold keeps none, whatever is stored.
        let down = default_rule("member-down").unwrap();
        let e = down.effective(Some(&RuleSettings { threshold: Some(5.0), ..Default::default() }));
        assert_eq!(e.threshold, None);
        // The evaluator's view: per project.
        let (p, q) = (ProjectId::new(), ProjectId::new());
        let mut settings = Settings::default();
        settings.set(p, "disk-85", RuleSettings { threshold: Some(1.0), enabled: Some(false), ..Default::default() });
        assert_eq!(settings.threshold(p, "disk-85"), 1.0);
        assert_eq!(settings.threshold(q, "disk-85"), 85.0);
        assert_eq!(settings.disabled(), [(p, "disk-85".to_string())].into());
        assert!(settings.of(p, "my-own-rule").is_none());
    }

    #[test]
    fn silences_match_rule_cluster_and_time() {
        let t = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let s = AlertSilenceRecord {
            id: SilenceId::new(),
            project_id: ProjectId::new(),
            cluster: Some("c".into()),
            rule: None,
            starts_at: t,
            ends_at: t + TimeDelta::hours(1),
            comment: String::new(),
            created_by: "a".into(),
            created_at: t,
        };
        assert!(silences(&s, "member-down", Some("c"), t));
        assert!(!silences(&s, "member-down", Some("d"), t));
        assert!(!silences(&s, "member-down", None, t), "a cluster silence leaves host alerts alone");
        assert!(!silences(&s, "member-down", Some("c"), t - TimeDelta::seconds(1)), "a window not started yet");
        assert!(!silences(&s, "member-down", Some("c"), t + TimeDelta::hours(1)), "the end is exclusive");
        let by_rule = AlertSilenceRecord { cluster: None, rule: Some("disk-85".into()), ..s };
        assert!(silences(&by_rule, "disk-85", None, t));
        assert!(!silences(&by_rule, "disk-95", None, t));
    }
}

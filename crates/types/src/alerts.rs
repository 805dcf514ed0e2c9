//! Alerts as the API serves them and the CLI sends them: rules (the default ones and a
//! project's own), notification channels, silences, alerts and their deliveries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::*;

/// How a rule compares a metric with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AlertOp {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = "<")]
    Below,
}

impl AlertOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertOp::Above => ">",
            AlertOp::Below => "<",
        }
    }

    /// Whether `value` meets the condition.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            AlertOp::Above => value > threshold,
            AlertOp::Below => value < threshold,
        }
    }
}

/// Body of `POST /api/v1/alerts/rules`: a rule on a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleCreate {
    /// A DNS label, unique in the project and not a default rule's name.
    pub name: String,
    /// Only this cluster's members (and their hosts); default every cluster of the project.
    #[serde(default)]
    pub cluster: Option<String>,
    /// A metric of the catalogue (`docs/monitoring.md`), host or member scoped.
    pub metric: String,
    pub op: AlertOp,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (`30s`, `5m`); default 0.
    #[serde(default, rename = "for")]
    pub for_duration: Option<String>,
    /// Channels to notify (names); empty: every channel of the project.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// A threshold as a request gives it: a number in the rule's unit (`unit` in
/// [`AlertRule`]: bytes, percent, seconds, fraction), or a text with a unit such as
/// `64MiB`, `90%` or `30m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ThresholdInput {
    Number(f64),
    Text(String),
}

/// Body of `PATCH /api/v1/alerts/rules/{name}`: the project's settings of a default rule.
/// What is not given stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultRuleUpdate {
    /// Only for the rules with a threshold (see `unit` in the rule list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdInput>,
    /// How long the condition must hold before the alert fires (`30s`, `5m`, `0`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_duration: Option<String>,
    /// The channels to notify, by name; an empty list: every channel of the project that
    /// takes default rules (as without settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// `false`: the rule is not evaluated in this project (its open alerts resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Back to the rule as sovdb defines it; takes no other setting.
    #[serde(default)]
    pub reset: bool,
}

/// A rule: a default one (built in, `default` true) or one of the project's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertRule {
    pub name: String,
    /// A default rule: exists in every project, cannot be deleted.
    pub default: bool,
    /// What it watches, for a person (`pg_replication_lag_bytes > 67108864`).
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<AlertOp>,
    /// In `unit` for a default rule; the project's value where it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// A default rule's threshold unit: `bytes`, `percent`, `seconds` or `fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Seconds the condition must hold before the alert fires.
    pub for_secs: u64,
    /// Whether the rule is evaluated (a default rule can be disabled per project).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A default rule whose settings the project changed (`alert rule set`).
    #[serde(default)]
    pub changed: bool,
    /// `warning` or `critical`.
    pub severity: String,
    /// The channels it notifies; empty: every channel of the project (default rules: every
    /// channel that takes them).
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// An alert's state: `pending` (the condition holds, not yet for long enough), `firing`,
/// `resolved` (it fired and the condition no longer holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(AlertState::Pending),
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// An alert: one episode of a rule's condition on one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: AlertId,
    pub rule: String,
    pub state: AlertState,
    pub severity: String,
    /// What it is about: `cluster/C`, `member/C/M`, `host/H`, `backup/C`...
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The last value seen while the condition held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub message: String,
    /// When the condition was first seen.
    pub pending_since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// A silence matches it now: its notifications are held back.
    pub silenced: bool,
}

/// A channel's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    /// An HTTP(S) POST of a JSON body, signed with HMAC-SHA256.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": ...}`).
    Slack,
    /// Email over SMTP with STARTTLS.
    Email,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Webhook => "webhook",
            ChannelType::Slack => "slack",
            ChannelType::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "webhook" => Some(ChannelType::Webhook),
            "slack" => Some(ChannelType::Slack),
            "email" => Some(ChannelType::Email),
            _ => None,
        }
    }
}

/// Body of `POST /api/v1/alerts/channels`. `Debug` does not show the secrets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelCreate {
    /// A DNS label, unique in the project.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<ChannelType>,
    /// webhook: the URL to POST to (http or https); slack: the incoming webhook URL
    /// (stored sealed, never shown back).
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: the HMAC secret; default: generated and shown once in the answer.
    #[serde(default)]
    pub secret: Option<String>,
    /// webhook: a CA (PEM) to trust for an https URL besides the system's.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// email: the SMTP server, `host[:port]` (port default 587).
    #[serde(default)]
    pub smtp_server: Option<String>,
    #[serde(default)]
    pub smtp_username: Option<String>,
    /// email: stored sealed, never shown back.
    #[serde(default)]
    pub smtp_password: Option<String>,
    /// email: a CA (PEM) to trust for the SMTP server besides the system's.
    #[serde(default)]
    pub smtp_ca_pem: Option<String>,
    /// email: send without TLS (refused otherwise when the server offers no STARTTLS).
    #[serde(default)]
    pub smtp_plaintext: bool,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Whether the default rules' alerts go to this channel (default true).
    #[serde(default)]
    pub default_rules: Option<bool>,
}

impl std::fmt::Debug for ChannelCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCreate")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("smtp_server", &self.smtp_server)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// A notification channel, without its secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    pub id: ChannelId,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// webhook: where it posts (a Slack URL is a secret and not shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_username: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub smtp_plaintext: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    pub default_rules: bool,
    /// Only in the answer to a create that generated it: the webhook's HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/alerts/silences`. With neither `cluster` nor `rule`, every alert
/// of the project is silenced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceCreate {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    /// When it starts (RFC 3339); default now. A later start makes a maintenance window.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ends (RFC 3339); or give `duration`.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// How long from the start (`2h`, `30m`) when `ends_at` is not given.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// A silence: while it is active, matching alerts change state as usual but notify no one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    pub id: SilenceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// `active`, `scheduled` (a maintenance window not started yet) or `expired`.
    pub status: String,
}

/// One notification of an alert's transition to a channel, and how sending it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    pub alert_id: AlertId,
    pub channel: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub attempts: i64,
    /// `delivered`, `retrying`, `failed` (given up) or `silenced`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    pub next_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What `alert channel test` did: one message sent now, not recorded as a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChannelTestResult {
    pub channel: String,
    pub delivered: bool,
    pub result: String,
}

fn yes() -> bool {
    true
}

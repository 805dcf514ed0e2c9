use std::io::Read as _;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sovdb_types::*;

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum AlertCmd {
    /// List the project's alerts: firing, pending and resolved (the history), oldest first
    List {
        /// Only pending and firing alerts
        #[arg(long)]
        open: bool,
    },
    /// List the notifications sent (or being retried) and how each went
    Deliveries {
        /// Only this alert's (an alert ID)
        #[arg(long)]
        alert: Option<String>,
    },
    /// Alert rules: the default ones and the project's own on any metric
    Rule {
        #[command(subcommand)]
        cmd: RuleCmd,
    },
    /// Notification channels: webhook, Slack, email
    Channel {
        #[command(subcommand)]
        cmd: ChannelCmd,
    },
    /// Silences and maintenance windows: matching alerts notify no one
    Silence {
        #[command(subcommand)]
        cmd: SilenceCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// List the default rules and the project's own
    List,
    /// Create a rule on a metric (names as in `sovdb metrics`; see docs/monitoring.md)
    Create {
        /// Name: a DNS label, unique in the project
        name: String,
        /// Only this cluster [default: every cluster of the project]
        #[arg(long)]
        cluster: Option<String>,
        /// The metric, e.g. pg_replication_lag_seconds or host_cpu_busy_ratio
        #[arg(long)]
        metric: String,
        /// `>` or `<`
        #[arg(long, value_parser = ["<", ">"])]
        op: String,
        /// The value the latest sample is compared with
        #[arg(long, allow_negative_numbers = true)]
        threshold: f64,
        /// How long the condition must hold before the alert fires, e.g. 30s, 5m [default: 0]
        #[arg(long = "for", id = "for_duration", value_name = "DURATION")]
        for_duration: Option<String>,
        /// A channel to notify (repeatable) [default: every channel of the project]
        #[arg(long = "channel", value_name = "CHANNEL")]
        channels: Vec<String>,
    },
    /// Change a default rule for this project: its threshold, `for`, channels, or turn it
    /// off; --reset puts it back as sovdb defines it
    Set {
        /// A default rule's name (`alert rule list` shows them)
        name: String,
        /// In the rule's unit (UNIT in `alert rule list`): bytes (64MiB, 1048576), percent
        /// (90, 90%), seconds (30m, 2h) or a fraction (0.2, 20%)
        #[arg(long)]
        threshold: Option<String>,
        /// How long the condition must hold before the alert fires, e.g. 0, 30s, 5m
        #[arg(long = "for", id = "for_duration", value_name = "DURATION")]
        for_duration: Option<String>,
        /// Notify only this channel (repeatable) [default: every channel that takes default rules]
        #[arg(long = "channel", value_name = "CHANNEL", conflicts_with = "all_channels")]
        channels: Vec<String>,
        /// Notify every channel that takes default rules again (forget --channel)
        #[arg(long)]
        all_channels: bool,
        /// Stop evaluating the rule in this project (its open alerts resolve)
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Evaluate the rule again
        #[arg(long)]
        enable: bool,
        /// Forget the project's settings of the rule
        #[arg(long, conflicts_with_all = ["threshold", "for_duration", "channels", "all_channels", "disable", "enable"])]
        reset: bool,
    },
    /// Delete one of the project's rules (its open alerts resolve)
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ChannelTypeArg {
    Webhook,
    Slack,
    Email,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCmd {
    /// List the project's channels (never their secrets)
    List,
    /// Create a channel. A webhook's HMAC secret is generated and shown once unless
    /// --secret-stdin gives one
    Create {
        /// Name: a DNS label, unique in the project
        name: String,
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: ChannelTypeArg,
        /// webhook: the URL to POST to; slack: the incoming webhook URL (kept encrypted;
        /// prefer --url-stdin, so it is not in the process list)
        #[arg(long)]
        url: Option<String>,
        /// Read the URL from standard input
        #[arg(long)]
        url_stdin: bool,
        /// webhook: read the HMAC secret (16 characters or more) from standard input
        #[arg(long)]
        secret_stdin: bool,
        /// webhook, slack: a CA certificate (PEM file) to trust besides the system's
        #[arg(long = "webhook-ca-file", id = "webhook_ca_file", value_name = "FILE")]
        webhook_ca_file: Option<std::path::PathBuf>,
        /// email: the SMTP server, host or host:port [port default: 587]
        #[arg(long)]
        smtp_server: Option<String>,
        /// email: the SMTP user name
        #[arg(long)]
        smtp_username: Option<String>,
        /// email: read the SMTP password from standard input (kept encrypted, never shown)
        #[arg(long)]
        smtp_password_stdin: bool,
        /// email: a CA certificate (PEM file) to trust for the SMTP server besides the system's
        #[arg(long = "smtp-ca-file", id = "smtp_ca_file", value_name = "FILE")]
        smtp_ca_file: Option<std::path::PathBuf>,
        /// email: send without TLS (only where the network is trusted)
        #[arg(long)]
        smtp_plaintext: bool,
        /// email: the sender address
        #[arg(long)]
        from: Option<String>,
        /// email: a recipient (repeatable)
        #[arg(long)]
        to: Vec<String>,
        /// Do not send the default rules' alerts to this channel (only rules that name it)
        #[arg(long)]
        no_default_rules: bool,
    },
    /// Delete a channel and its secrets
    Delete { name: String },
    /// Send a test notification through a channel now
    Test { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCmd {
    /// List the project's silences (active, scheduled, expired)
    List,
    /// Silence a cluster's and/or a rule's alerts (everything when neither is given); a
    /// later --start makes a maintenance window
    Create {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        /// When it starts (RFC 3339, e.g. 2026-05-01T22:00:00Z) [default: now]
        #[arg(long)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// When it ends (RFC 3339)
        #[arg(long, conflicts_with = "duration")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// How long from the start, e.g. 2h, 30m
        #[arg(long)]
        duration: Option<String>,
        /// Why
        #[arg(long)]
        comment: Option<String>,
    },
    /// End a silence now
    Delete { id: String },
}

impl Tabular for Alert {
    const HEADERS: &'static [&'static str] =
        &["ID", "RULE", "STATE", "SEVERITY", "SUBJECT", "VALUE", "STARTED", "RESOLVED", "SILENCED", "MESSAGE"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.rule.clone(),
            self.state.as_str().into(),
            self.severity.clone(),
            self.subject.clone(),
            self.value.map_or("-".into(), |v| format!("{v}")),
            self.started_at.as_ref().map_or("-".into(), output::time),
            self.resolved_at.as_ref().map_or("-".into(), output::time),
            if self.silenced { "yes".into() } else { "no".into() },
            self.message.clone(),
        ]
    }
}

impl Tabular for AlertRule {
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "DEFAULT",
        "ENABLED",
        "CHANGED",
        "SEVERITY",
        "CLUSTER",
        "THRESHOLD",
        "UNIT",
        "FOR",
        "CHANNELS",
        "CONDITION",
    ];
    fn row(&self) -> Vec<String> {
        let yes_no = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
        vec![
            self.name.clone(),
            yes_no(self.default),
            yes_no(self.enabled),
            if self.default { yes_no(self.changed) } else { "-".into() },
            self.severity.clone(),
            self.cluster.clone().unwrap_or_else(|| "*".into()),
            self.threshold.map_or("-".into(), |t| format!("{t}")),
            self.unit.clone().unwrap_or_else(|| "-".into()),
            format!("{}s", self.for_secs),
            if self.channels.is_empty() { "*".into() } else { self.channels.join(",") },
            self.condition.clone(),
        ]
    }
}

impl Tabular for Channel {
    const HEADERS: &'static [&'static str] = &["NAME", "TYPE", "TARGET", "DEFAULT RULES", "CREATED"];
    fn row(&self) -> Vec<String> {
        let target = match self.kind {
            ChannelType::Webhook => self.url.clone().unwrap_or_default(),
            ChannelType::Slack => "(incoming webhook)".into(),
            ChannelType::Email => format!("{} via {}", self.to.join(","), self.smtp_server.as_deref().unwrap_or("?")),
        };
        vec![
            self.name.clone(),
            self.kind.as_str().into(),
            target,
            if self.default_rules { "yes".into() } else { "no".into() },
            output::time(&self.created_at),
        ]
    }
}

impl Tabular for Silence {
    const HEADERS: &'static [&'static str] = &["ID", "CLUSTER", "RULE", "STARTS", "ENDS", "STATUS", "BY", "COMMENT"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.cluster.clone().unwrap_or_else(|| "*".into()),
            self.rule.clone().unwrap_or_else(|| "*".into()),
            output::time(&self.starts_at),
            output::time(&self.ends_at),
            self.status.clone(),
            self.created_by.clone(),
            self.comment.clone(),
        ]
    }
}

impl Tabular for Delivery {
    const HEADERS: &'static [&'static str] =
        &["ID", "ALERT", "CHANNEL", "STATUS", "STATE", "ATTEMPTS", "LAST RESULT", "DELIVERED"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.alert_id.to_string(),
            self.channel.clone(),
            self.status.clone(),
            self.state.clone(),
            self.attempts.to_string(),
            self.last_result.clone().unwrap_or_else(|| "-".into()),
            self.delivered_at.as_ref().map_or("-".into(), output::time),
        ]
    }
}

/// One line from standard input (a trailing line end is dropped).
fn line_from_stdin(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let v = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if v.is_empty() {
        bail!("standard input is empty; write the {what} on it");
    }
    Ok(v.to_string())
}

fn read_file(flag: &str, path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<String>> {
    match path {
        Some(p) => Ok(Some(std::fs::read_to_string(p).with_context(|| format!("cannot read {flag} {}", p.display()))?)),
        None => Ok(None),
    }
}

pub async fn run(cmd: AlertCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        AlertCmd::List { open } => {
            let q = if open { vec![("open", "true".to_string())] } else { vec![] };
            print_list(&client.list::<Alert>("/alerts", &q).await?, out)
        }
        AlertCmd::Deliveries { alert } => {
            let q: Vec<(&str, String)> = alert.map(|a| ("alert", a)).into_iter().collect();
            print_list(&client.list::<Delivery>("/alerts/deliveries", &q).await?, out)
        }
        AlertCmd::Rule { cmd } => match cmd {
            RuleCmd::List => print_list(&client.get::<Vec<AlertRule>>("/alerts/rules", &[]).await?, out),
            RuleCmd::Create { name, cluster, metric, op, threshold, for_duration, channels } => {
                let req = AlertRuleCreate {
                    name,
                    cluster,
                    metric,
                    op: if op == ">" { AlertOp::Above } else { AlertOp::Below },
                    threshold,
                    for_duration,
                    channels,
                };
                print_one(&client.post::<_, AlertRule>("/alerts/rules", &req).await?, out)
            }
            RuleCmd::Set { name, threshold, for_duration, channels, all_channels, disable, enable, reset } => {
                let req = DefaultRuleUpdate {
                    threshold: threshold.map(|t| match t.trim().parse::<f64>() {
                        Ok(n) => ThresholdInput::Number(n),
                        Err(_) => ThresholdInput::Text(t),
                    }),
                    for_duration,
                    channels: if all_channels { Some(Vec::new()) } else { (!channels.is_empty()).then_some(channels) },
                    enabled: if disable { Some(false) } else { enable.then_some(true) },
                    reset,
                };
                print_one(&client.patch::<_, AlertRule>(&format!("/alerts/rules/{name}"), &req).await?, out)
            }
            RuleCmd::Delete { name } => {
                client.delete(&format!("/alerts/rules/{name}")).await?;
                eprintln!("rule {name} deleted");
                Ok(())
            }
        },
        AlertCmd::Channel { cmd } => match cmd {
            ChannelCmd::List => print_list(&client.get::<Vec<Channel>>("/alerts/channels", &[]).await?, out),
            ChannelCmd::Create {
                name,
                kind,
                url,
                url_stdin,
                secret_stdin,
                webhook_ca_file,
                smtp_server,
                smtp_username,
                smtp_password_stdin,
                smtp_ca_file,
                smtp_plaintext,
                from,
                to,
                no_default_rules,
            } => {
                if [url_stdin, secret_stdin, smtp_password_stdin].iter().filter(|b| **b).count() > 1 {
                    bail!("only one of --url-stdin, --secret-stdin and --smtp-password-stdin can read standard input");
                }
                let url = if url_stdin { Some(line_from_stdin("URL")?) } else { url };
                let req = ChannelCreate {
                    name,
                    kind: Some(match kind {
                        ChannelTypeArg::Webhook => ChannelType::Webhook,
                        ChannelTypeArg::Slack => ChannelType::Slack,
                        ChannelTypeArg::Email => ChannelType::Email,
                    }),
                    url,
                    secret: if secret_stdin { Some(line_from_stdin("secret")?) } else { None },
                    ca_pem: read_file("--webhook-ca-file", &webhook_ca_file)?,
                    smtp_server,
                    smtp_username,
                    smtp_password: if smtp_password_stdin { Some(line_from_stdin("SMTP password")?) } else { None },
                    smtp_ca_pem: read_file("--smtp-ca-file", &smtp_ca_file)?,
                    smtp_plaintext,
                    from,
                    to,
                    default_rules: Some(!no_default_rules),
                };
                let created: Channel = client.post("/alerts/channels", &req).await?;
                print_one(&created, out)?;
                if let (Some(secret), OutputFormat::Table) = (&created.secret, out) {
                    println!("\nwebhook secret (shown once; receivers verify X-Sovdb-Signature with it):\n{secret}");
                }
                Ok(())
            }
            ChannelCmd::Delete { name } => {
                client.delete(&format!("/alerts/channels/{name}")).await?;
                eprintln!("channel {name} deleted");
                Ok(())
            }
            ChannelCmd::Test { name } => {
                let r: ChannelTestResult =
                    client.post(&format!("/alerts/channels/{name}/test"), &serde_json::json!({})).await?;
                if out != OutputFormat::Table {
                    return output::print_structured(&r, out);
                }
                if r.delivered {
                    println!("channel {name}: delivered ({})", r.result);
                    Ok(())
                } else {
                    bail!("channel {name}: not delivered: {}", r.result)
                }
            }
        },
        AlertCmd::Silence { cmd } => match cmd {
            SilenceCmd::List => print_list(&client.get::<Vec<Silence>>("/alerts/silences", &[]).await?, out),
            SilenceCmd::Create { cluster, rule, start, until, duration, comment } => {
                let req = SilenceCreate { cluster, rule, starts_at: start, ends_at: until, duration, comment };
                print_one(&client.post::<_, Silence>("/alerts/silences", &req).await?, out)
            }
            SilenceCmd::Delete { id } => {
                client.delete(&format!("/alerts/silences/{id}")).await?;
                eprintln!("silence {id} ended");
                Ok(())
            }
        },
    }
}

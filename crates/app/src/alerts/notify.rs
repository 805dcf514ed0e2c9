//! Sending notifications: the deliveries the evaluator queued, to webhooks (a JSON body
//! signed with HMAC-SHA256), Slack-compatible incoming webhooks and email (SMTP with
//! STARTTLS), retried with exponential backoff.
//!
//! A delivery is a row: it is claimed by moving its `next_at` forward by [`CLAIM`] (a
//! compare-and-swap, so two control planes never send it at once), sent, and recorded
//! (attempts, the last result, `delivered_at`, or given up after [`MAX_ATTEMPTS`]).
//! Crash safety: a crash between a send and its record sends it again when the claim
//! lapses (at least once; receivers deduplicate by `X-Sovdb-Delivery`); a delivery
//! recorded as delivered is never sent again.
//!
//! The webhook signature: `X-Sovdb-Signature: sha256=<hex HMAC-SHA256(secret,
//! "<X-Sovdb-Timestamp>.<body>")>`, the timestamp in unix seconds (see `docs/alerts.md`).
//! Secrets are opened only to send; they never reach a log, an error or a record.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sovdb_store::{AlertChannelRecord, AlertRecord, DeliveryRecord};
use sovdb_types::*;

use super::{
    channel_owner, smtp_endpoint, AlertData, ChannelSpec, SECRET_HMAC, SECRET_SLACK_URL, SECRET_SMTP_PASSWORD,
};
use crate::rbac::Action;
use crate::workflows::pg;
use crate::{App, AppError, Ctx, Result};

/// How long a claimed delivery is ours before another sender may take it.
const CLAIM: TimeDelta = TimeDelta::seconds(60);
/// After this many failed attempts a delivery is given up (about 4 h of retries).
pub const MAX_ATTEMPTS: i64 = 12;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(5);
const MAX_BACKOFF: TimeDelta = TimeDelta::minutes(30);
/// How long one attempt may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// At most this many deliveries per round.
const BATCH: i64 = 50;

/// The delay before the attempt after `attempts` failed ones.
pub(crate) fn backoff(attempts: i64) -> TimeDelta {
    let exp = attempts.clamp(1, 20) - 1;
    let delay = FIRST_BACKOFF * 2i32.pow(exp as u32);
    delay.min(MAX_BACKOFF)
}

/// The JSON body of a notification (webhook), also the source of the Slack text and the
/// email.
pub(crate) fn payload(a: &AlertRecord, d: &AlertData, project: &str, status: &str) -> String {
    serde_json::json!({
        "status": status,
        "alert": a.id.to_string(),
        "rule": a.rule,
        "severity": d.severity,
        "project": project,
        "cluster": a.cluster,
        "subject": d.subject,
        "member": d.member,
        "host": d.host,
        "value": d.value,
        "threshold": d.threshold,
        "started_at": a.started_at,
        "resolved_at": a.resolved_at,
        "message": d.message,
    })
    .to_string()
}

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One line for a person: `[FIRING] member-down on member/c/c-2 (project default): ...`.
fn summary(body: &serde_json::Value) -> String {
    let s = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    format!(
        "[{}] {} on {} (project {}): {}",
        s("status").to_uppercase(),
        s("rule"),
        s("subject"),
        s("project"),
        s("message")
    )
}

/// What a channel needs to send: its settings and its secrets, opened.
struct Target {
    kind: ChannelType,
    spec: ChannelSpec,
    /// webhook: the HMAC secret; slack: the URL; email: the SMTP password.
    secret: Option<String>,
}

impl App {
    async fn channel_target(&self, c: &AlertChannelRecord) -> Result<Target> {
        let spec: ChannelSpec = serde_json::from_str(&c.spec)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("stored channel {:?} is unreadable: {e}", c.name)))?;
        let kind = ChannelType::parse(&c.kind)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("stored channel {:?} has kind {:?}", c.name, c.kind)))?;
        let name = match kind {
            ChannelType::Webhook => SECRET_HMAC,
            ChannelType::Slack => SECRET_SLACK_URL,
            ChannelType::Email => SECRET_SMTP_PASSWORD,
        };
        let owner = channel_owner(c.id);
        let secret = match self.store.read().await?.secret_get(&owner, name).await? {
            Some(sealed) => {
                let plain = self.pki()?.open(&sealed, &pg::aad(&owner, name))?;
                Some(String::from_utf8(plain).map_err(|_| {
                    AppError::Internal(anyhow::anyhow!("channel {:?}'s stored secret is not text", c.name))
                })?)
            }
            None => None,
        };
        Ok(Target { kind, spec, secret })
    }

    /// One round: sends every due delivery; answers how many were delivered.
    pub async fn alerts_deliver(&self, now: DateTime<Utc>) -> Result<usize> {
        let due = self.store.read().await?.delivery_due(now, BATCH).await?;
        let mut delivered = 0;
        for d in due {
            // Claim it: only one sender at a time.
            let mut tx = self.store.write().await?;
            if !tx.delivery_claim(d.id, d.next_at, now + CLAIM).await? {
                continue;
            }
            tx.commit().await?;
            let channels = self.store.read().await?.alert_channel_list(Some(d.project_id)).await?;
            let result = match channels.iter().find(|c| c.id == d.channel_id) {
                None => Err(Failure::Permanent("the channel was deleted".into())),
                Some(c) => match self.channel_target(c).await {
                    Ok(t) => send(&t, &d.id.to_string(), &d.payload).await,
                    Err(e) => Err(Failure::Retry(format!("cannot read the channel: {e}"))),
                },
            };
            let attempts = d.attempts + 1;
            let done = crate::now();
            let mut next = DeliveryRecord { attempts, ..d.clone() };
            match result {
                Ok(what) => {
                    next.delivered_at = Some(done);
                    next.next_at = done;
                    next.last_result = Some(what);
                    delivered += 1;
                }
                Err(f) => {
                    let (why, permanent) = match f {
                        Failure::Retry(w) => (w, false),
                        Failure::Permanent(w) => (w, true),
                    };
                    next.gave_up = permanent || attempts >= MAX_ATTEMPTS;
                    next.next_at = done + backoff(attempts);
                    tracing::warn!(channel = %d.channel, delivery = %d.id, attempts, gave_up = next.gave_up, error = %why, "a notification was not delivered");
                    next.last_result = Some(why);
                }
            }
            let mut tx = self.store.write().await?;
            tx.delivery_update(&next).await?;
            tx.commit().await?;
        }
        Ok(delivered)
    }

    /// Sends a test message through a channel now (not recorded as a delivery).
    pub async fn alert_channel_test(&self, ctx: &Ctx, name: &str) -> Result<ChannelTestResult> {
        ctx.require(Action::AlertManage)?;
        let channels = self.store.read().await?.alert_channel_list(Some(ctx.project.id)).await?;
        let c = channels.iter().find(|c| c.name == name).ok_or_else(|| AppError::not_found("channel", name))?;
        let target = self.channel_target(c).await?;
        let body = serde_json::json!({
            "status": "test",
            "alert": null,
            "rule": "test",
            "severity": "info",
            "project": ctx.project.name,
            "cluster": null,
            "subject": format!("channel/{name}"),
            "member": null,
            "host": null,
            "value": null,
            "threshold": null,
            "started_at": crate::now(),
            "resolved_at": null,
            "message": format!("a test of channel {name} by {}", ctx.user.name),
        })
        .to_string();
        let id = DeliveryId::new().to_string();
        let (delivered, result) = match send(&target, &id, &body).await {
            Ok(r) => (true, r),
            Err(Failure::Retry(e) | Failure::Permanent(e)) => (false, e),
        };
        let mut tx = self.store.write().await?;
        tx.audit_append(&ctx.audit(
            "alert.channel.test",
            format!("alert-channel/{name}"),
            serde_json::json!({"delivered": delivered}),
        ))
        .await?;
        tx.commit().await?;
        Ok(ChannelTestResult { channel: name.into(), delivered, result })
    }
}

/// Why an attempt failed: worth retrying, or not.
#[derive(Debug)]
enum Failure {
    Retry(String),
    Permanent(String),
}

async fn send(t: &Target, delivery: &str, body: &str) -> std::result::Result<String, Failure> {
    match t.kind {
        ChannelType::Webhook => {
            let url = t.spec.url.as_deref().ok_or_else(|| Failure::Permanent("the channel has no url".into()))?;
            let secret = t.secret.as_deref().ok_or_else(|| Failure::Permanent("the channel has no secret".into()))?;
            let ts = Utc::now().timestamp();
            let client = http_client(t.spec.ca_pem.as_deref())?;
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-sovdb-timestamp", ts.to_string())
                .header("x-sovdb-signature", signature(secret.as_bytes(), ts, body.as_bytes()))
                .header("x-sovdb-delivery", delivery)
                .body(body.to_string())
                .send()
                .await;
            http_result(r)
        }
        ChannelType::Slack => {
            let url = t.secret.as_deref().ok_or_else(|| Failure::Permanent("the channel has no url".into()))?;
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let client = http_client(t.spec.ca_pem.as_deref())?;
            let r = client.post(url).json(&serde_json::json!({"text": summary(&v)})).send().await;
            // The URL is a secret: errors must not show it.
            http_result(r.map_err(|e| e.without_url()))
        }
        ChannelType::Email => send_email(t, body).await,
    }
}

fn http_client(ca_pem: Option<&str>) -> std::result::Result<reqwest::Client, Failure> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .connect_timeout(Duration::from_secs(5))
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    for c in rustls_native_certs::load_native_certs().certs {
        if let Ok(cert) = reqwest::Certificate::from_der(&c) {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|_| Failure::Permanent("the channel's CA is not PEM".into()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| Failure::Retry(format!("cannot build an HTTP client: {e}")))
}

fn http_result(r: std::result::Result<reqwest::Response, reqwest::Error>) -> std::result::Result<String, Failure> {
    match r {
        Ok(r) if r.status().is_success() => Ok(format!("HTTP {}", r.status().as_u16())),
        Ok(r) => Err(Failure::Retry(format!("HTTP {}", r.status().as_u16()))),
        Err(e) => Err(Failure::Retry(error_chain(&e.without_url()))),
    }
}

async fn send_email(t: &Target, body: &str) -> std::result::Result<String, Failure> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let bad = |what: &str| Failure::Permanent(what.to_string());
    let server = t.spec.smtp_server.as_deref().ok_or_else(|| bad("the channel has no SMTP server"))?;
    let (host, port) = smtp_endpoint(server).ok_or_else(|| bad("the SMTP server is not host[:port]"))?;
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let subject = summary(&v);
    let from: Mailbox = t.spec.from.as_deref().unwrap_or("").parse().map_err(|_| bad("the from address is invalid"))?;
    let mut m =
        Message::builder().from(from).subject(format!("[sovdb] {}", subject.chars().take(200).collect::<String>()));
    for to in &t.spec.to {
        m = m.to(to.parse().map_err(|_| bad("a to address is invalid"))?);
    }
    let text = format!("{subject}\n\n{}\n", serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_string()));
    let msg =
        m.header(ContentType::TEXT_PLAIN).body(text).map_err(|e| bad(&format!("cannot build the message: {e}")))?;
    let tls = if t.spec.smtp_plaintext {
        Tls::None
    } else {
        let mut p = TlsParameters::builder(host.clone()).certificate_store(CertificateStore::Default);
        if let Some(pem) = &t.spec.smtp_ca_pem {
            let cert = Certificate::from_pem(pem.as_bytes()).map_err(|_| bad("the SMTP CA is not PEM"))?;
            p = p.add_root_certificate(cert);
        }
        Tls::Required(p.build_rustls().map_err(|e| Failure::Retry(format!("cannot set up TLS: {e}")))?)
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let (Some(user), Some(pass)) = (&t.spec.smtp_username, &t.secret) {
        b = b.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    let mailer = b.build();
    match mailer.send(msg).await {
        Ok(r) => Ok(format!("SMTP {}", r.code())),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(format!("SMTP refused: {}", error_chain(&e)))),
        Err(e) => Err(Failure::Retry(format!("SMTP: {}", error_chain(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_recipe_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"status":"firing"}' |
        //   openssl dgst -sha256 -hmac 'topsecret-topsecret'
        let sig = signature(b"topsecret-topsecret", 1_700_000_000, br#"{"status":"firing"}"#);
        assert_eq!(sig, format!("sha256={}", EXPECTED));
        assert_ne!(sig, signature(b"topsecret-topsecret", 1_700_000_001, br#"{"status":"firing"}"#));
        assert_ne!(sig, signature(b"another-secret-xx", 1_700_000_000, br#"{"status":"firing"}"#));
    }
    const EXPECTED: &str = "a753809a6314ddef13dcb667ba8199cfb1ae19aa497ba5fccaeb39f97ea088fe";

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        assert_eq!(backoff(1), TimeDelta::seconds(5));
        assert_eq!(backoff(2), TimeDelta::seconds(10));
        assert_eq!(backoff(3), TimeDelta::seconds(20));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn summaries_say_status_rule_subject_and_message() {
        let v = serde_json::json!({"status": "firing", "rule": "member-down", "subject": "member/c/c-2",
            "project": "default", "message": "member c-2 is stopped"});
        assert_eq!(summary(&v), "[FIRING] member-down on member/c/c-2 (project default): member c-2 is stopped");
    }
}

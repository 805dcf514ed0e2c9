//! Forwarding this host's database logs to a syslog server, as RFC 5424 messages over
//! TCP with octet-counting framing (RFC 6587 §3.4.1, which rsyslog, syslog-ng and most
//! collectors accept), or over TLS (`tls://`, RFC 5425: the same framing). Over TLS the
//! server's certificate must chain to the location's CA (or the host's system bundle) and
//! name the target's host; the agent presents its own certificate when the server asks
//! for one, so a server that trusts the installation CA knows which host is sending.
//!
//! The control plane says what to forward by writing `<base_dir>/agent/syslog.json`
//! ([`SyslogConfig`]); the forwarder reads it every second and needs nothing else, so
//! forwarding goes on while the control plane is down. A log newly listed is forwarded
//! from where it ended when it was listed (what was written before is not sent), whether
//! or not the server could be reached then.
//!
//! Delivery is at least once: a line's position (the [`crate::logs`] cursor) moves only
//! after its message was written to the connection, and the positions are kept in
//! `<base_dir>/agent/syslog-state.json`, so a broken connection, an unreachable server or
//! an agent restart delays lines but loses none that are still in the file or its rotated
//! copy. A connection the server closed is noticed before lines are written to it (see
//! [`closed`]); lines written in the instant a server dies, before its kernel closed the
//! connection, can still be lost, as with any syslog over plain TCP (RFC 6587 has no
//! acknowledgements).
//!
//! Each message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - - [sovdb@32473 project=".."
//! cluster=".." member=".."] LINE`, facility local0, the severity read from the line
//! (`ERROR:` → err, `WARNING:` → warning, `FATAL:`/`PANIC:` → crit, else info).
//! 32473 is the example enterprise number of RFC 5612: sovdb has none of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::{
    syslog_config_path, LogCursor, LogFile, ReadLogRequest, SyslogConfig, SyslogSource, SYSTEM_CA_BUNDLE,
};
use crate::tls::CertFiles;

/// How often the configuration and the logs are looked at.
const ROUND: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of one log one round reads.
const ROUND_BYTES: u64 = 1 << 20;
/// The structured data ID: `sovdb` at RFC 5612's example enterprise number.
pub const SD_ID: &str = "sovdb@32473";

/// Where each log's forwarding stands, kept across agent restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    cursors: Vec<(LogFile, LogCursor)>,
}

fn state_path(base_dir: &Path) -> PathBuf {
    base_dir.join("agent").join("syslog-state.json")
}

/// Runs the forwarder until the task is dropped.
pub(crate) async fn run(base_dir: PathBuf, identity: Arc<CertFiles>) {
    let mut cursors: BTreeMap<LogFile, LogCursor> = std::fs::read(state_path(&base_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        .map(|s| s.cursors.into_iter().collect())
        .unwrap_or_default();
    // The connection, with the target and CA it was made for.
    let mut conn: Option<(MadeFor, Box<dyn Stream>)> = None;
    let mut complained = false;
    loop {
        tokio::time::sleep(ROUND).await;
        let config = match std::fs::read(syslog_config_path(&base_dir)) {
            Ok(b) => match serde_json::from_slice::<SyslogConfig>(&b) {
                Ok(c) => c,
                Err(e) => {
                    if !complained {
                        tracing::warn!(error = %e, "the syslog forwarding configuration is unreadable; forwarding nothing");
                        complained = true;
                    }
                    continue;
                }
            },
            Err(_) => continue,
        };
        let Some(target) = config.target.clone() else {
            conn = None;
            continue;
        };
        // A log newly listed is forwarded from where it ends now, whether or not the server
        // can be reached yet: lines written while it can't are sent once it can.
        let before = cursors.clone();
        cursors.retain(|f, _| config.sources.iter().any(|s| s.file == *f));
        let unlisted: Vec<&SyslogSource> = config.sources.iter().filter(|s| !cursors.contains_key(&s.file)).collect();
        for source in unlisted {
            let req = ReadLogRequest { file: source.file.clone(), cursor: None, tail: 0, max_bytes: 0 };
            if let Ok(Ok(read)) = tokio::task::spawn_blocking(move || crate::logs::read_log(&req)).await {
                if let Some(end) = read.cursor {
                    cursors.insert(source.file.clone(), end);
                }
            }
        }
        let made_for = (target.clone(), config.ca_pem.clone());
        if let Some((for_, s)) = conn.as_mut() {
            if *for_ != made_for || closed(s.as_mut()) {
                conn = None;
            }
        }
        if conn.is_none() {
            match connect(&target, config.ca_pem.as_deref(), &identity).await {
                Ok(s) => {
                    tracing::info!(%target, "forwarding logs to syslog");
                    complained = false;
                    conn = Some((made_for, s));
                }
                Err(e) => {
                    if !complained {
                        tracing::warn!(%target, error = %e, "the syslog server can't be reached; retrying every second");
                        complained = true;
                    }
                    if cursors != before {
                        keep(&base_dir, &cursors);
                    }
                    continue;
                }
            }
        }
        let (_, stream) = conn.as_mut().expect("connected above");
        let mut broken = false;
        for source in &config.sources {
            let req = ReadLogRequest {
                file: source.file.clone(),
                cursor: cursors.get(&source.file).copied(),
                tail: 0,
                max_bytes: ROUND_BYTES,
            };
            let read = match tokio::task::spawn_blocking(move || crate::logs::read_log(&req)).await {
                Ok(Ok(r)) => r,
                _ => continue,
            };
            let Some(next) = read.cursor else { continue };
            if !read.lines.is_empty() {
                let mut out = Vec::new();
                for line in &read.lines {
                    let msg = message(&config.hostname, source, line, chrono::Utc::now());
                    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                    out.extend_from_slice(msg.as_bytes());
                }
                // Flushed: over TLS, records may wait in the TLS layer otherwise.
                let written = async {
                    stream.write_all(&out).await?;
                    stream.flush().await
                };
                if let Err(e) = written.await {
                    tracing::warn!(%target, error = %e, "the syslog connection broke; reconnecting");
                    broken = true;
                    break;
                }
            }
            cursors.insert(source.file.clone(), next);
        }
        if broken {
            conn = None;
        }
        if cursors != before {
            keep(&base_dir, &cursors);
        }
    }
}

/// Keeps the forwarding positions across agent restarts.
fn keep(base_dir: &Path, cursors: &BTreeMap<LogFile, LogCursor>) {
    let state = State { cursors: cursors.iter().map(|(f, c)| (f.clone(), *c)).collect() };
    let path = state_path(base_dir);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(&state).expect("serialise");
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
        tracing::warn!(error = %e, "can't keep the syslog forwarding positions");
    }
}

/// What a connection was made for: the target and the CA (PEM) it was checked with.
type MadeFor = (String, Option<String>);

/// A connection to a syslog server: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Whether the server closed the connection. A syslog server sends no messages, so
/// anything readable is end of stream (or an error); over TLS, reading also takes in what
/// the TLS layer itself sends (session tickets, a close_notify). Writing to a connection
/// the server closed would succeed once (the kernel takes the bytes, the peer answers
/// with a reset) and lose those lines; so this is asked before every round of writes.
/// Reads only what is there already: a read that would wait is dropped (cancel-safe).
fn closed(s: &mut dyn Stream) -> bool {
    use std::future::Future;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut probe = [0u8; 256];
    loop {
        let mut read = std::pin::pin!(s.read(&mut probe));
        match read.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => return true,
            std::task::Poll::Ready(Ok(_)) => continue,
            std::task::Poll::Pending => return false,
        }
    }
}

async fn connect(target: &str, ca_pem: Option<&str>, identity: &Arc<CertFiles>) -> std::io::Result<Box<dyn Stream>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let (tls, addr) = match (target.strip_prefix("tcp://"), target.strip_prefix("tls://")) {
        (Some(addr), _) => (false, addr),
        (_, Some(addr)) => (true, addr),
        _ => return Err(invalid(format!("{target:?} is not tcp://HOST:PORT or tls://HOST:PORT"))),
    };
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    let _ = s.set_nodelay(true);
    if !tls {
        return Ok(Box::new(s));
    }
    let roots = match ca_pem {
        Some(pem) => pem.as_bytes().to_vec(),
        None => std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
            std::io::Error::new(e.kind(), format!("no --syslog-ca given and the system bundle {SYSTEM_CA_BUNDLE}: {e}"))
        })?,
    };
    let config = crate::tls::syslog_client_config(&roots, identity.clone()).map_err(invalid)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| invalid(format!("{host:?} is not a name to check a certificate against: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let s = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, s))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the TLS handshake timed out"))??;
    Ok(Box::new(s))
}

/// One RFC 5424 message (without its framing).
pub fn message(hostname: &str, source: &SyslogSource, line: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    const LOCAL0: u8 = 16;
    let pri = LOCAL0 * 8 + severity(line);
    format!(
        "<{pri}>1 {} {} {} - - [{SD_ID} project=\"{}\" cluster=\"{}\" member=\"{}\"] {}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        header_field(hostname, 255),
        header_field(&source.app_name, 48),
        sd_value(&source.project),
        sd_value(&source.cluster),
        sd_value(&source.member),
        line
    )
}

/// The severity a log line states: PostgreSQL's `ERROR:`, Patroni's `ERROR:`, ….
fn severity(line: &str) -> u8 {
    const LEVELS: &[(&str, u8)] = &[
        ("PANIC:", 2),
        ("FATAL:", 2),
        ("CRITICAL:", 2),
        ("ERROR:", 3),
        ("WARNING:", 4),
        ("NOTICE:", 5),
        ("LOG:", 6),
        ("INFO:", 6),
        ("DEBUG", 7),
    ];
    let head = &line[..line.char_indices().nth(120).map_or(line.len(), |(i, _)| i)];
    LEVELS
        .iter()
        .filter_map(|(word, sev)| head.find(word).map(|at| (at, *sev)))
        .min_by_key(|(at, _)| *at)
        .map_or(6, |(_, sev)| sev)
}

/// A header field: printable US-ASCII without spaces, at most `max` characters; `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped.
fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let source = SyslogSource {
            file: LogFile::File { path: "/x".into() },
            app_name: "postgresql".into(),
            project: "default".into(),
            cluster: "db\"1]".into(),
            member: "db-1".into(),
        };
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T01:02:03.5Z").unwrap().to_utc();
        let m = message("host a", &source, "2026-11-22 01:02:03.400 UTC [42] ERROR:  boom", at);
        assert_eq!(
            m,
            "<131>1 2026-11-22T01:02:03.500000Z hosta postgresql - - \
             [sovdb@32473 project=\"default\" cluster=\"db\\\"1\\]\" member=\"db-1\"] \
             2026-11-22 01:02:03.400 UTC [42] ERROR:  boom"
        );
        assert_eq!(severity("2026-11-22 01:02:03,123 INFO: no action. I am (db-1), the leader"), 6);
        assert_eq!(severity("x LOG:  statement: select 'ERROR:'"), 6);
        assert_eq!(severity("x WARNING: y"), 4);
        assert_eq!(severity("plain"), 6);
    }
}

//! A small typed client of the REST API. Errors carry the server's own message, or say
//! plainly that the server could not be reached and how to fix that.

use anyhow::{anyhow, Context as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sovdb_types::{ErrorBody, Page};

use crate::config::Resolved;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    project: Option<String>,
    /// The CA trusted besides the system's, and whether the user named it.
    ca_file: Option<std::path::PathBuf>,
    ca_named: bool,
}

impl Client {
    /// A client of `r.server`. HTTPS trusts the system's CAs and `r.ca_file` (the
    /// installation CA: this machine's `ca.crt`, or `--ca-file`).
    pub fn new(r: Resolved) -> anyhow::Result<Client> {
        let mut http = reqwest::Client::builder().use_rustls_tls();
        if let Some(file) = &r.ca_file {
            let pem = std::fs::read(file).with_context(|| format!("cannot read the CA file {}", file.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| anyhow!("the CA file {} holds no PEM certificate", file.display()))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().context("cannot set up the HTTP client")?;
        Ok(Client {
            http,
            base: r.server,
            token: r.token,
            project: r.project,
            ca_file: r.ca_file,
            ca_named: r.ca_named,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.base));
        // Empty for the one call made without a token (login).
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(p) = &self.project {
            req = req.header("x-sovdb-project", p);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            if let Some(problem) = certificate_problem(&e) {
                return self.certificate_error(problem);
            }
            let why = if e.is_connect() {
                "connection refused or no route"
            } else if e.is_timeout() {
                "timed out"
            } else if self.base.starts_with("http://") {
                // An HTTPS server answers plain HTTP with a TLS alert, which is no HTTP.
                "request failed; sovdb serve speaks HTTPS unless started with --insecure-http: try https://"
            } else {
                "request failed"
            };
            anyhow::Error::new(Unreachable { base: self.base.clone(), why })
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => anyhow::Error::new(Refused { code: body.code, message: body.message }),
            Err(_) => anyhow!("the server answered {status}: {}", text.chars().take(200).collect::<String>()),
        })
    }

    /// The project requests run in, when one was named (flag, environment, config file).
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path).query(query)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    /// Every item of a list, following pages.
    pub async fn list<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<T>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", "1000".into()));
            if let Some(t) = token.take() {
                q.push(("page_token", t));
            }
            let page: Page<T> = self.get(path, &q).await?;
            items.extend(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return Ok(items),
            }
        }
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::POST, path).json(body)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::PUT, path).json(body)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::PATCH, path).json(body)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    /// Opens a server-sent events stream.
    pub async fn events(&self, path: &str) -> anyhow::Result<EventStream> {
        self.events_query(path, &[]).await
    }

    /// Opens a server-sent events stream, with query parameters.
    pub async fn events_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<EventStream> {
        let req = self.request(reqwest::Method::GET, path).query(query).header("accept", "text/event-stream");
        Ok(EventStream { resp: self.send(req).await?, buf: Vec::new() })
    }

    /// A DELETE that answers with a body (an operation).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::DELETE, path)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    /// A DELETE with query parameters that answers with a body.
    pub async fn delete_query<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let resp = self.send(self.request(reqwest::Method::DELETE, path).query(query)).await?;
        resp.json().await.context("the server's answer is not what this CLI expects; are both the same version?")
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(reqwest::Method::DELETE, path)).await.map(|_| ())
    }
}

impl Client {
    /// What to do about a server certificate this client does not accept.
    fn certificate_error(&self, problem: CertProblem) -> anyhow::Error {
        let base = &self.base;
        let trusted = match (&self.ca_file, self.ca_named) {
            (Some(f), true) => {
                format!("the CA in {} (given with --ca-file, SOVDB_CA_FILE or the config file)", f.display())
            }
            (Some(f), false) => format!("this machine's installation CA ({})", f.display()),
            (None, _) => "the system's CAs".into(),
        };
        match problem {
            CertProblem::UnknownIssuer => anyhow!(
                "the server at {base} presents a certificate that no CA this CLI trusts signed (it trusts {trusted}): \
                 pass --ca-file <data-dir>/ca.crt or set SOVDB_CA_FILE, with the ca.crt from the data directory of that \
                 server"
            ),
            CertProblem::WrongName => anyhow!(
                "the server at {base} presents a certificate for other names: connect by a name it holds, or restart \
                 the server with --tls-name for the name you use"
            ),
            CertProblem::Expired => anyhow!(
                "the server at {base} presents an expired (or not yet valid) certificate: check this machine's clock, \
                 or the server's certificate"
            ),
            CertProblem::Other(e) => anyhow!("the server at {base} presents a certificate this CLI refuses: {e}"),
        }
    }
}

enum CertProblem {
    UnknownIssuer,
    WrongName,
    Expired,
    Other(String),
}

/// The TLS certificate error somewhere in `e`'s chain, if that is why it failed. (rustls's
/// error arrives wrapped in an `io::Error`, whose `source()` skips it: look inside.)
fn certificate_problem(e: &reqwest::Error) -> Option<CertProblem> {
    use rustls::CertificateError as C;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let mut inner = err;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(c)) = inner.downcast_ref::<rustls::Error>() {
            return Some(match c {
                C::UnknownIssuer | C::BadSignature => CertProblem::UnknownIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => CertProblem::WrongName,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    CertProblem::Expired
                }
                other => CertProblem::Other(format!("{other:?}")),
            });
        }
        next = err.source();
    }
    None
}

/// The server could not be reached at all (as opposed to answering with an error).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the sovdb server at {base} ({why}): start it with `sovdb serve`, or point --server / SOVDB_SERVER at it")]
pub struct Unreachable {
    base: String,
    why: &'static str,
}

/// One server-sent event: its name and its (joined) data lines.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// A stream of server-sent events, parsed as they arrive.
pub struct EventStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the server ended the stream. An error means the
    /// connection broke (the server stopped or restarted).
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = take_event(&mut self.buf) {
                if event.event.is_empty() && event.data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Ok(Some(event));
            }
            match self.resp.chunk().await.context("the event stream broke")? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// Removes the first complete event (up to a blank line) from `buf`. Works on bytes, so
/// a character split across two chunks is decoded only once it is whole.
fn take_event(buf: &mut Vec<u8>) -> Option<SseEvent> {
    let find = |pat: &[u8]| buf.windows(pat.len()).position(|w| w == pat).map(|i| (i, pat.len()));
    let (end, sep) = match (find(b"\n\n"), find(b"\r\n\r\n")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let block = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + sep);
    let mut event = SseEvent { event: String::new(), data: String::new() };
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event.event = v.trim_start().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !event.data.is_empty() {
                event.data.push('\n');
            }
            event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_and_comments_skipped() {
        let mut buf = b": keep-alive\n\nevent: operation\ndata: {\"a\":\ndata: 1}\n\nevent: x\nda".to_vec();
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: String::new(), data: String::new() }));
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: "operation".into(), data: "{\"a\":\n1}".into() }));
        assert_eq!(take_event(&mut buf), None, "an incomplete event waits for more");
        buf.extend_from_slice(b"ta: y\r\n\r\n");
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: "x".into(), data: "y".into() }));
    }
}

/// The server refused a request: its stable error code and its message for the user.
/// Shown as `MESSAGE (CODE)`.
#[derive(Debug)]
pub struct Refused {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Refused {}

/// The error code of a refusal, if `e` is one.
pub fn refused_code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<Refused>().map(|r| r.code.as_str())
}

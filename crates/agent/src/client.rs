//! The client of the agent, for the control plane: one typed method per primitive, over
//! mutual TLS that trusts only the installation CA.
//!
//! Errors say which agent and what went wrong: it could not be reached, TLS failed (the
//! wrong CA, a certificate for another name, a refused client certificate), it refused
//! the request (with its code and message), or it answered something unexpected. They
//! never contain file contents, keys or environment values.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::*;

/// Default timeout of a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of `ensure_packages`: downloads and installs can be slow.
pub const DEFAULT_PACKAGES_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How much longer than its own timeout a `run_command` request may take (to start the
/// command, kill it, and answer).
const RUN_COMMAND_MARGIN: Duration = Duration::from_secs(30);

/// The PEM material of the caller: the CA it trusts, and the certificate and key it
/// presents. `Debug` does not show the key.
#[derive(Clone)]
pub struct ClientIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("ca_pem", &format_args!("[{} bytes]", self.ca_pem.len()))
            .field("cert_pem", &format_args!("[{} bytes]", self.cert_pem.len()))
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No connection, or it broke. The cause is the error's source (print it with `{:#}`
    /// under anyhow, or walk `source()`).
    #[error("cannot reach the agent at {address}")]
    Unreachable {
        address: SocketAddr,
        #[source]
        source: reqwest::Error,
    },

    #[error("TLS with the agent at {address} failed: {message}")]
    Tls { address: SocketAddr, message: String },

    #[error("the agent at {address} did not answer within {after:?}")]
    Timeout { address: SocketAddr, after: Duration },

    #[error("the agent at {address} refused the request ({code}): {message}")]
    Rejected { address: SocketAddr, status: u16, code: String, message: String },

    #[error("unexpected answer from the agent at {address}: {message}")]
    Protocol { address: SocketAddr, message: String },
}

/// A connection to one agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    address: SocketAddr,
    base_url: String,
    timeout: Duration,
    packages_timeout: Duration,
}

impl AgentClient {
    /// A client for the agent at `address` whose certificate names `server_name` (a DNS
    /// name or an IP address), trusting only `identity.ca_pem` and presenting
    /// `identity.cert_pem`. Connects lazily: errors about the agent come with the first
    /// call.
    pub fn new(address: SocketAddr, server_name: &str, identity: &ClientIdentity) -> Result<AgentClient, AgentError> {
        let tls_err = |message: String| AgentError::Tls { address, message };
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| tls_err(format!("{server_name:?} is not a DNS name or IP address")))?;
        let config = crate::tls::client_config(
            identity.ca_pem.as_bytes(),
            identity.cert_pem.as_bytes(),
            identity.key_pem.as_bytes(),
            name,
        )
        .map_err(tls_err)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| tls_err(format!("cannot build the HTTP client: {}", sovdb_types::error_chain(&e))))?;
        Ok(AgentClient {
            http,
            address,
            base_url: format!("https://{address}"),
            timeout: DEFAULT_TIMEOUT,
            packages_timeout: DEFAULT_PACKAGES_TIMEOUT,
        })
    }

    /// The timeout of ordinary requests.
    pub fn with_timeout(mut self, timeout: Duration) -> AgentClient {
        self.timeout = timeout;
        self
    }

    /// The timeout of `ensure_packages`.
    pub fn with_packages_timeout(mut self, timeout: Duration) -> AgentClient {
        self.packages_timeout = timeout;
        self
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub async fn health(&self) -> Result<AgentHealth, AgentError> {
        let req = self.http.get(format!("{}{}", self.base_url, paths::HEALTH)).timeout(self.timeout);
        self.send(req, self.timeout).await
    }

    pub async fn write_file(&self, req: &WriteFileRequest) -> Result<Changed, AgentError> {
        self.post(paths::WRITE_FILE, req, self.timeout).await
    }

    pub async fn remove(&self, req: &RemoveRequest) -> Result<Changed, AgentError> {
        self.post(paths::REMOVE, req, self.timeout).await
    }

    pub async fn ensure_packages(&self, req: &EnsurePackagesRequest) -> Result<EnsurePackagesResponse, AgentError> {
        self.post(paths::ENSURE_PACKAGES, req, self.packages_timeout).await
    }

    pub async fn ensure_process(&self, req: &EnsureProcessRequest) -> Result<EnsureProcessResponse, AgentError> {
        // Stopping waits for the process's stop timeout first.
        let timeout = self.timeout + Duration::from_secs(u64::from(req.spec.stop_timeout_secs) + 15);
        self.post(paths::ENSURE_PROCESS, req, timeout).await
    }

    pub async fn process_status(&self, name: &str) -> Result<ProcessStatus, AgentError> {
        self.post(paths::PROCESS_STATUS, &ProcessStatusRequest { name: name.to_owned() }, self.timeout).await
    }

    pub async fn process_list(&self) -> Result<Vec<ProcessStatus>, AgentError> {
        let list: ProcessListResponse = self.post(paths::PROCESS_LIST, &serde_json::json!({}), self.timeout).await?;
        Ok(list.processes)
    }

    pub async fn run_command(&self, req: &RunCommandRequest) -> Result<RunCommandResponse, AgentError> {
        let timeout = Duration::from_secs(req.timeout_secs).saturating_add(RUN_COMMAND_MARGIN);
        self.post(paths::RUN_COMMAND, req, timeout).await
    }

    pub async fn read_file(&self, req: &ReadFileRequest) -> Result<ReadFileResponse, AgentError> {
        self.post(paths::READ_FILE, req, self.timeout).await
    }

    pub async fn tail_file(&self, req: &TailFileRequest) -> Result<TailFileResponse, AgentError> {
        self.post(paths::TAIL_FILE, req, self.timeout).await
    }

    pub async fn read_log(&self, req: &ReadLogRequest) -> Result<ReadLogResponse, AgentError> {
        self.post(paths::READ_LOG, req, self.timeout).await
    }

    pub async fn facts(&self) -> Result<HostFacts, AgentError> {
        self.post(paths::FACTS, &serde_json::json!({}), self.timeout).await
    }

    pub async fn metrics(&self) -> Result<MetricsSnapshot, AgentError> {
        self.post(paths::METRICS, &serde_json::json!({}), self.timeout).await
    }

    /// The samples after a cursor; tells the agent which PostgreSQL instances to sample.
    pub async fn metrics_pull(&self, req: &MetricsPullRequest) -> Result<MetricsPullResponse, AgentError> {
        self.post(paths::METRICS_PULL, req, self.timeout).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let req = self.http.post(format!("{}{path}", self.base_url)).json(body).timeout(timeout);
        self.send(req, timeout).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let address = self.address;
        let resp = req.send().await.map_err(|e| self.transport_error(e, timeout))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e, timeout))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| AgentError::Protocol {
                address,
                message: format!("the {status} answer does not fit the protocol: {e}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                Err(AgentError::Rejected { address, status: status.as_u16(), code: body.code, message: body.message })
            }
            Err(_) => Err(AgentError::Protocol {
                address,
                message: format!("status {status} without an error body (is this a sovdb agent?)"),
            }),
        }
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> AgentError {
        let address = self.address;
        if let Some(tls) = find_rustls_error(&e) {
            return AgentError::Tls { address, message: tls_message(tls) };
        }
        if e.is_timeout() {
            return AgentError::Timeout { address, after: timeout };
        }
        if e.is_decode() || e.is_body() {
            return AgentError::Protocol { address, message: sovdb_types::error_chain(&e) };
        }
        AgentError::Unreachable { address, source: e }
    }
}

/// The rustls error behind a transport error, if TLS is what failed. rustls errors reach
/// reqwest wrapped in `std::io::Error`s, sometimes several deep.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = find_rustls_error(inner) {
                    return Some(tls);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// What a TLS failure means for the operator.
fn tls_message(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C};
    let hint = match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the agent's certificate is not signed by this installation's CA"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the agent's certificate is for another name: issue it for the name or address used here"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the agent's certificate has expired: issue a new one"
        }
        rustls::Error::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateRequired | A::DecryptError) => {
            "the agent refused our client certificate: it trusts another CA, or ours is not a client certificate"
        }
        _ => "",
    };
    if hint.is_empty() {
        e.to_string()
    } else {
        format!("{e} ({hint})")
    }
}

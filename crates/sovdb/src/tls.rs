//! HTTPS for the API: the certificate `sovdb serve` presents, and its renewal.
//!
//! The certificate is either issued by the installation CA for the names clients reach
//! this server by (kept sealed in the store, see `sovdb_app::ApiCertSpec`), or the
//! operator's own (`--tls-cert`/`--tls-key`). Either way it sits behind a
//! [`ApiCertResolver`]: a background loop puts a new certificate there (a renewal, or new
//! files) and every handshake from then on presents it, while connections already open
//! go on undisturbed. Nothing here logs key material.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::IncomingStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sovdb_agent::TlsListener;
use sovdb_app::{ApiCertSpec, App};

/// How often the CA-issued certificate is checked at most (it is also checked ten times
/// per validity, for short test validities).
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How often user-provided files are checked for a new certificate.
const FILES_CHECK_EVERY: Duration = Duration::from_secs(60);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client's address, as axum learns it from a [`TlsListener`]. The API reads
/// `ConnectInfo<SocketAddr>` (audit records' source address): [`with_peer_addr`] gives it
/// that. (axum knows how to take a `SocketAddr` from a plain TCP listener only, and the
/// orphan rule keeps us from teaching it for ours.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// `router` with each request's `ConnectInfo<Peer>` also given as `ConnectInfo<SocketAddr>`.
pub(crate) fn with_peer_addr(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_request(|mut req: axum::extract::Request| async move {
        if let Some(ConnectInfo(Peer(addr))) = req.extensions().get::<ConnectInfo<Peer>>().copied() {
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        req
    }))
}

/// The certificate every new handshake gets; replaced in place on renewal.
#[derive(Debug)]
pub(crate) struct ApiCertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ApiCertResolver {
    pub(crate) fn new(key: CertifiedKey) -> ApiCertResolver {
        ApiCertResolver { current: RwLock::new(Arc::new(key)) }
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }

    fn end_entity(&self) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

impl ResolvesServerCert for ApiCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// TLS 1.2 and 1.3 (clients are anyone's: browsers, curl, scripts), HTTP/1.1.
pub(crate) fn server_config(resolver: Arc<ApiCertResolver>) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate chain and its key from PEM, checked to belong together. `what` names
/// them in errors, which never quote the key.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: the certificate file is not PEM: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!("{what}: the certificate file has no certificate (expected -----BEGIN CERTIFICATE-----)");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| anyhow!("{what}: the key file is not a PEM private key (PKCS#8, SEC1 or PKCS#1)"))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| anyhow!("{what}: the certificate and the key do not fit together: {e}"))
}

/// The operator's certificate and key files, read and checked.
pub(crate) fn load_files(cert: &Path, key: &Path) -> anyhow::Result<(CertifiedKey, Vec<u8>)> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key).with_context(|| format!("cannot read --tls-key {}", key.display()))?,
    );
    let what = format!("--tls-cert {} / --tls-key {}", cert.display(), key.display());
    let certified = certified_key(&cert_pem, &key_pem, &what)?;
    Ok((certified, cert_pem))
}

/// What the API certificate names for a server listening on `listen`: that address
/// (loopback and wildcard listeners: 127.0.0.1, ::1 and `localhost`), plus `extra`
/// (`--tls-name`; an IP address there becomes an IP entry).
pub(crate) fn api_names(listen: SocketAddr, extra: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let ip = listen.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        dns.push("localhost".to_string());
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    if !ip.is_unspecified() {
        ips.push(ip);
    }
    for name in extra {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(name.to_ascii_lowercase()),
        }
    }
    ips.sort();
    ips.dedup();
    dns.sort();
    dns.dedup();
    (dns, ips)
}

/// The address clients on this machine use for a server listening on `listen`: a
/// wildcard listener is reached on loopback.
pub(crate) fn local_url_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Renew a CA-issued certificate when less than a third of its validity is left (30 days
/// of the default 90).
pub(crate) fn renew_before(validity: Duration) -> chrono::Duration {
    chrono::Duration::from_std(validity / 3).unwrap_or(chrono::Duration::days(30))
}

/// The CA-issued API certificate for this server, from the store or new.
pub(crate) async fn issued_key(app: &App, node: &str, spec: &ApiCertSpec) -> anyhow::Result<(CertifiedKey, bool)> {
    let c = app
        .api_cert(node, spec, renew_before(spec.validity))
        .await
        .map_err(|e| anyhow!("cannot get the API certificate: {e}"))?;
    let key = certified_key(c.cert.cert_pem.as_bytes(), c.cert.key_pem.as_bytes(), "the issued API certificate")?;
    if c.issued {
        log_cert(&key, "issued a new API certificate");
    }
    Ok((key, c.issued))
}

pub(crate) fn log_cert(key: &CertifiedKey, msg: &str) {
    let Some(der) = key.cert.first() else { return };
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => tracing::info!(
            serial = %cert.raw_serial_as_string(),
            not_after = %cert.validity().not_after,
            "{msg}"
        ),
        Err(_) => tracing::info!("{msg}"),
    }
}

/// Keeps the CA-issued certificate fresh: checks every tenth of its validity (at most
/// hourly) and puts a renewed one in `resolver`. A failed renewal is retried at the
/// next check; the old certificate is served meanwhile.
pub(crate) async fn renew_loop(app: App, node: String, spec: ApiCertSpec, resolver: Arc<ApiCertResolver>) {
    let every = (spec.validity / 10).clamp(Duration::from_secs(1), CHECK_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match issued_key(&app, &node, &spec).await {
            Ok((key, true)) => resolver.set(key),
            Ok((key, false)) => {
                // Another start of this node may have renewed it: serve what is stored.
                if key.cert.first().map(|c| c.to_vec()).unwrap_or_default() != resolver.end_entity() {
                    resolver.set(key);
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "renewing the API certificate failed; retrying"),
        }
    }
}

/// Serves new `--tls-cert`/`--tls-key` files once they are replaced (by certbot, say):
/// checks every minute. Files that do not load are reported and the old pair is kept.
pub(crate) async fn reload_loop(cert: PathBuf, key: PathBuf, mut last: Vec<u8>, resolver: Arc<ApiCertResolver>) {
    let mut tick = tokio::time::interval(FILES_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if std::fs::read(&cert).is_ok_and(|now| now == last) {
            continue;
        }
        match load_files(&cert, &key) {
            Ok((certified, pem)) => {
                log_cert(&certified, "serving the new --tls-cert");
                resolver.set(certified);
                last = pem;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the changed --tls-cert does not load; serving the old one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_listen_address_and_loopback_names() {
        let (dns, ips) = api_names("127.0.0.1:7070".parse().unwrap(), &[]);
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);

        let (dns, ips) = api_names("0.0.0.0:7070".parse().unwrap(), &["DB.example.org".into(), "10.0.0.5".into()]);
        assert_eq!(dns, ["db.example.org", "localhost"]);
        assert!(ips.contains(&"10.0.0.5".parse().unwrap()) && !ips.iter().any(|ip| ip.is_unspecified()));

        let (dns, ips) = api_names("10.1.2.3:7070".parse().unwrap(), &[]);
        assert!(dns.is_empty());
        assert_eq!(ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(local_url_addr("0.0.0.0:7070".parse().unwrap()), "127.0.0.1:7070".parse().unwrap());
    }
}

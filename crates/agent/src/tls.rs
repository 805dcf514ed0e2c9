//! Mutual TLS between the control plane and agents, with rustls and the ring provider.
//!
//! Both sides trust exactly one root: the installation CA. The agent accepts only clients
//! whose certificate that CA signed; the client accepts only an agent whose certificate
//! that CA signed for the name it expects. Only TLS 1.3 is offered: both ends are ours.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from PEM text; `what` names them in errors.
pub(crate) fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} has no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// A private key from PEM text (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    // The parse error could quote the input: say only that it failed.
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| format!("{what} is not a PEM private key"))
}

pub(crate) fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "the CA certificate")? {
        roots.add(cert).map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The agent's side: present the certificate of `files` (re-read when they change),
/// require a client certificate from the CA.
pub(crate) fn server_config(ca_pem: &[u8], files: Arc<CertFiles>) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| format!("cannot build the client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(files);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A certificate and key pair from PEM text, checked to fit together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs = certs_from_pem(cert_pem, "the agent certificate")?;
    let key = key_from_pem(key_pem, "the agent key")?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("the agent certificate and key do not fit together: {e}"))
}

/// How often a handshake may look at the files for a change.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The agent's certificate and key files, re-read when they change, so the control plane
/// renews the certificate by writing new files (`write_file`) without restarting the agent:
/// handshakes after the change present the new certificate, open connections keep theirs.
///
/// The two files are written one after the other, so a handshake may see a new key with the
/// old certificate: a pair that does not fit is not taken, the previous one stays in use and
/// the files are read again at a later handshake.
#[derive(Debug)]
pub(crate) struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    look_every: Duration,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    /// The files' modification times and sizes when `current` was read from them.
    stamp: Option<(FileStamp, FileStamp)>,
    looked: Instant,
}

type FileStamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl CertFiles {
    /// Reads both files; an error names what is wrong with them.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertFiles, String> {
        let stamps = stamp(cert).zip(stamp(key));
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let current = Arc::new(certified_key(&read(cert)?, &read(key)?)?);
        let loaded = Loaded { current, stamp: stamps, looked: Instant::now() };
        Ok(CertFiles { cert: cert.to_owned(), key: key.to_owned(), look_every: LOOK_EVERY, state: Mutex::new(loaded) })
    }

    /// The pair to present: the files' if they changed and fit together, else the last good one.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.looked.elapsed() < self.look_every {
            return state.current.clone();
        }
        state.looked = Instant::now();
        let now = stamp(&self.cert).zip(stamp(&self.key));
        if now.is_none() || now == state.stamp {
            return state.current.clone();
        }
        let fresh = std::fs::read(&self.cert)
            .map_err(|e| e.to_string())
            .and_then(|c| std::fs::read(&self.key).map_err(|e| e.to_string()).map(|k| (c, k)))
            .and_then(|(c, k)| certified_key(&c, &k));
        match fresh {
            Ok(pair) => {
                tracing::info!(cert = %self.cert.display(), "the agent certificate changed on disk; presenting the new one");
                state.current = Arc::new(pair);
                state.stamp = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the agent certificate files changed but are not usable (yet); keeping the previous pair")
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The agent's certificate is also what it presents to a syslog server that asks for a
/// client certificate (see [`crate::syslog`]).
impl rustls::client::ResolvesClientCert for CertFiles {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Towards a syslog server (RFC 5425), which is not ours: trust the roots given (the
/// location's `--syslog-ca`, else the host's system bundle), check the certificate against
/// the target's host name with the standard WebPKI rules, TLS 1.2 or 1.3, and present the
/// agent's own certificate when asked.
pub(crate) fn syslog_client_config(roots_pem: &[u8], identity: Arc<CertFiles>) -> Result<rustls::ClientConfig, String> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs_from_pem(roots_pem, "the syslog CA")?);
    if added == 0 {
        return Err("no usable CA certificate to check the syslog server's certificate with".into());
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_client_cert_resolver(identity))
}

/// The client's side: trust only the CA, check the agent's certificate against
/// `server_name` whatever address was dialled, present the client identity.
pub(crate) fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    server_name: ServerName<'static>,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| format!("cannot build the server verifier: {e}"))?;
    let verifier = Arc::new(ExpectedName { inner, name: server_name });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            certs_from_pem(cert_pem, "the client certificate")?,
            key_from_pem(key_pem, "the client key")?,
        )
        .map_err(|e| format!("the client certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The standard WebPKI check, but against the name the agent's certificate was issued for
/// rather than the host part of the URL: the client dials an address (the URL says
/// `https://10.0.0.5:7450`) and the certificate may name the host by DNS name. This is
/// no weaker: the certificate must still chain to the CA and be valid for that name.
#[derive(Debug)]
struct ExpectedName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for ExpectedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sovdb_pki::{Ca, CertRequest, CertUsage};

    fn issue(ca: &Ca) -> (String, String) {
        let req = CertRequest {
            common_name: "sovdb agent test".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![],
            usage: CertUsage::Server,
            validity_days: 1,
        };
        let c = ca.issue(&req).unwrap();
        (c.cert_pem, c.key_pem)
    }

    fn serial(files: &CertFiles) -> String {
        let current = files.current();
        sovdb_pki::CertValidity::of_der(current.end_entity_cert().unwrap()).unwrap().serial
    }

    fn pem_serial(pem: &str) -> String {
        sovdb_pki::CertValidity::of_pem(pem).unwrap().serial
    }

    #[test]
    fn a_renewed_pair_is_presented_and_a_half_written_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
        let ca = Ca::generate("test CA").unwrap();
        let (c1, k1) = issue(&ca);
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let mut files = CertFiles::load(&cert, &key).unwrap();
        files.look_every = Duration::ZERO;
        assert_eq!(serial(&files), pem_serial(&c1));

        // The new key lands first: it does not fit the old certificate, so the old pair stays.
        let (c2, k2) = issue(&ca);
        std::fs::write(&key, &k2).unwrap();
        assert_eq!(serial(&files), pem_serial(&c1));
        // Then the certificate: the new pair is presented.
        std::fs::write(&cert, &c2).unwrap();
        assert_eq!(serial(&files), pem_serial(&c2));

        // A file that is not a certificate is not taken either.
        std::fs::write(&cert, b"garbage").unwrap();
        assert_eq!(serial(&files), pem_serial(&c2));
    }
}

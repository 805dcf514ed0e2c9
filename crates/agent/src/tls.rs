//! Mutual TLS between the control plane and agents, with rustls and the ring provider.
//!
//! Both sides trust exactly one root: the installation CA. The agent accepts only clients
//! whose certificate that CA signed; the client accepts only an agent whose certificate
//! that CA signed for the name it expects. Only TLS 1.3 is offered: both ends are ours.

use std::sync::Arc;

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

/// The agent's side: present `cert_pem`, require a client certificate from the CA.
pub(crate) fn server_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| format!("cannot build the client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(cert_pem, "the agent certificate")?, key_from_pem(key_pem, "the agent key")?)
        .map_err(|e| format!("the agent certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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

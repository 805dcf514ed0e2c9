//! Which certificate a member's server presents right now, seen as a client sees it: a TLS
//! handshake (after PostgreSQL's `SSLRequest` for PostgreSQL and PgBouncer) that checks the
//! chain to the installation CA and the name dialled, and answers the leaf's serial.
//!
//! A renewal is applied when every server presents the new serial: files written and a
//! reload sent prove neither that the server read them nor that it accepted them.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the TLS handshake starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// TLS from the first byte (Patroni's REST API).
    Tls,
    /// PostgreSQL's `SSLRequest` first (PostgreSQL, PgBouncer).
    Postgres,
}

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The serial (lowercase hex) of the certificate served at `host:port`, verified against
/// `ca_pem` for the name `host`.
pub(crate) async fn serial(ca_pem: &str, host: &str, port: u16, protocol: Protocol) -> Result<String, String> {
    served(ca_pem, None, host, port, protocol).await.map(|v| v.serial)
}

/// The serial and validity of the certificate served at `host:port`, verified against
/// `ca_pem` for the name `host`, presenting `identity` as the client certificate when
/// given (servers that require one, such as agents, may refuse a client without).
pub(crate) async fn served(
    ca_pem: &str,
    identity: Option<&sovdb_agent::ClientIdentity>,
    host: &str,
    port: u16,
    protocol: Protocol,
) -> Result<sovdb_pki::CertValidity, String> {
    let work = async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| format!("the CA certificate: {e}"))?).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match identity {
            None => config.with_no_client_auth(),
            Some(id) => {
                let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("the client certificate: {e}"))?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                    .map_err(|_| "the client key is not a PEM private key".to_string())?;
                config.with_client_auth_cert(chain, key).map_err(|e| format!("the client certificate: {e}"))?
            }
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a server name: {e}"))?;
        let mut tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
        if protocol == Protocol::Postgres {
            tcp.write_all(&SSL_REQUEST).await.map_err(|e| format!("SSLRequest: {e}"))?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await.map_err(|e| format!("SSLRequest: {e}"))?;
            if answer[0] != b'S' {
                return Err("the server does not offer TLS".to_string());
            }
        }
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no certificate presented")?;
        sovdb_pki::CertValidity::of_der(leaf).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| format!("{host}:{port} did not finish a TLS handshake within 10 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection TLS server presenting `cert`, optionally answering an
    /// `SSLRequest` first; its port.
    async fn server(cert: &sovdb_pki::IssuedCert, protocol: Protocol) -> u16 {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            if protocol == Protocol::Postgres {
                let mut req = [0u8; 8];
                tcp.read_exact(&mut req).await.unwrap();
                assert_eq!(req, SSL_REQUEST);
                tcp.write_all(b"S").await.unwrap();
            }
            let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await.unwrap();
            let _ = tls.shutdown().await;
        });
        port
    }

    #[tokio::test]
    async fn answers_the_serial_of_what_is_served_and_verifies_it() {
        let ca = sovdb_pki::Ca::generate("sovdb test CA").unwrap();
        let req = sovdb_pki::CertRequest {
            common_name: "m".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            usage: sovdb_pki::CertUsage::ServerAndClient,
            validity_days: 1,
        };
        let cert = ca.issue(&req).unwrap();
        let want = sovdb_pki::CertValidity::of_pem(&cert.cert_pem).unwrap().serial;
        for protocol in [Protocol::Tls, Protocol::Postgres] {
            let port = server(&cert, protocol).await;
            assert_eq!(serial(ca.cert_pem(), "127.0.0.1", port, protocol).await, Ok(want.clone()), "{protocol:?}");
        }
        // Another CA's certificate is refused.
        let other = sovdb_pki::Ca::generate("another CA").unwrap();
        let port = server(&cert, Protocol::Tls).await;
        let e = serial(other.cert_pem(), "127.0.0.1", port, Protocol::Tls).await.unwrap_err();
        assert!(e.contains("TLS handshake"), "{e}");
    }
}

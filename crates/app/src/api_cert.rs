//! The API's server certificate: issued by the installation CA for the names and
//! addresses clients reach a server by, and renewed before it expires.
//!
//! Each server (one data directory, named by its node ID) has its own certificate: replicas
//! sharing a PostgreSQL store listen on different addresses. They are all kept in one store
//! value (meta `pki.api_certs`, a map from node ID to certificate), the key sealed with the
//! master key like every other key, so a restart serves the same certificate until it is
//! due for renewal, and a master key rotation re-seals them with the rest.
//!
//! Writing a certificate is one transaction with its audit record; the audit append comes
//! first and serialises writers, so two replicas renewing at once never lose each other's
//! entry.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sovdb_pki::{CertRequest, CertUsage, IssuedCert, Keyring, Sealer as _};

use crate::{App, AppError, Result};

/// The store value holding every server's API certificate.
pub(crate) const API_CERTS_META_KEY: &str = "pki.api_certs";

/// What an API certificate must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCertSpec {
    /// DNS names (subject alternative names), e.g. `localhost`, `sovdb.example.org`.
    pub dns_names: Vec<String>,
    /// IP addresses (subject alternative names).
    pub ip_addresses: Vec<IpAddr>,
    /// How long a new certificate is valid.
    pub validity: std::time::Duration,
}

/// An API certificate with its key. `Debug` does not show the key.
#[derive(Debug, Clone)]
pub struct ApiCert {
    pub cert: IssuedCert,
    /// Whether this call issued it (else it was the stored one).
    pub issued: bool,
}

/// One server's certificate as stored: the key sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredApiCert {
    cert_pem: String,
    sealed_key: String,
    not_after: DateTime<Utc>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
}

type StoredApiCerts = BTreeMap<String, StoredApiCert>;

/// What a node's sealed key is bound to: it opens as no other value.
fn key_aad(node: &str) -> String {
    format!("sovdb/api-cert-key/{node}")
}

impl App {
    /// The installation CA's certificate (PEM): what clients of the API trust.
    pub fn ca_cert_pem(&self) -> Result<String> {
        Ok(self.pki()?.ca_pem().to_string())
    }

    /// The API certificate of server `node`: the stored one while it names exactly what
    /// `spec` asks for and has more than `renew_before` left, else a new one (stored and
    /// audited before it is returned).
    pub async fn api_cert(&self, node: &str, spec: &ApiCertSpec, renew_before: chrono::Duration) -> Result<ApiCert> {
        let pki = self.pki()?;
        let stored = match self.store.read().await?.meta_get(API_CERTS_META_KEY).await? {
            Some(json) => parse(&json)?.remove(node),
            None => None,
        };
        if let Some(s) = stored {
            let fits = same_set(&s.dns_names, &spec.dns_names) && same_set(&s.ip_addresses, &spec.ip_addresses);
            if fits && s.not_after - Utc::now() > renew_before {
                match pki.open(&s.sealed_key, &key_aad(node)).map(String::from_utf8) {
                    Ok(Ok(key_pem)) => {
                        let cert = IssuedCert { cert_pem: s.cert_pem, key_pem, not_after: s.not_after };
                        return Ok(ApiCert { cert, issued: false });
                    }
                    // Issuing a new one loses nothing: say so and go on.
                    _ => tracing::warn!(node, "the stored API certificate's key does not open; issuing a new one"),
                }
            }
        }

        let validity = chrono::Duration::from_std(spec.validity)
            .map_err(|_| AppError::Invalid("the API certificate validity is out of range".into()))?;
        let req = CertRequest {
            common_name: "sovdb API".into(),
            dns_names: spec.dns_names.clone(),
            ip_addresses: spec.ip_addresses.clone(),
            usage: CertUsage::Server,
            validity_days: 0, // issue_for takes the validity
        };
        let cert = pki.ca.issue_for(&req, validity).map_err(|e| {
            AppError::Invalid(format!(
                "cannot issue the API certificate for {:?} {:?}: {e}",
                req.dns_names, req.ip_addresses
            ))
        })?;
        let entry = StoredApiCert {
            cert_pem: cert.cert_pem.clone(),
            sealed_key: pki.seal(cert.key_pem.as_bytes(), &key_aad(node)),
            not_after: cert.not_after,
            dns_names: spec.dns_names.clone(),
            ip_addresses: spec.ip_addresses.clone(),
        };
        let mut tx = self.store.write().await?;
        // First: it serialises writers, so the map read next is the latest.
        tx.audit_append(&crate::bootstrap::system_entry(
            "pki.api-cert.issue",
            format!("pki/api-cert/{node}"),
            serde_json::json!({
                "dns_names": spec.dns_names,
                "ip_addresses": spec.ip_addresses,
                "not_after": cert.not_after,
            }),
        ))
        .await?;
        let mut all = match tx.meta_get(API_CERTS_META_KEY).await? {
            Some(json) => parse(&json)?,
            None => StoredApiCerts::new(),
        };
        all.insert(node.to_string(), entry);
        tx.meta_set(API_CERTS_META_KEY, &serde_json::to_string(&all).expect("serialise")).await?;
        tx.commit().await?;
        Ok(ApiCert { cert, issued: true })
    }
}

fn parse(json: &str) -> Result<StoredApiCerts> {
    serde_json::from_str(json)
        .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("the stored API certificates are unreadable")))
}

fn same_set<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

/// Re-seals, in `tx`, the keys of the stored API certificates that `keys`' current key
/// did not seal (a master key rotation). Returns how many.
pub(crate) async fn reseal(tx: &mut dyn sovdb_store::Tx, keys: &Keyring) -> Result<u64> {
    let Some(json) = tx.meta_get(API_CERTS_META_KEY).await? else { return Ok(0) };
    let mut all = parse(&json)?;
    let mut count = 0;
    for (node, cert) in all.iter_mut().filter(|(_, c)| !keys.is_current(&c.sealed_key)) {
        let aad = key_aad(node);
        let plain = zeroize::Zeroizing::new(keys.open(&cert.sealed_key, aad.as_bytes()).map_err(|e| {
            AppError::Conflict(format!(
                "the API certificate key of server {node} does not open with this server's master keys ({e}); nothing \
                 was changed"
            ))
        })?);
        cert.sealed_key = keys.seal(&plain, aad.as_bytes());
        count += 1;
    }
    if count > 0 {
        tx.meta_set(API_CERTS_META_KEY, &serde_json::to_string(&all).expect("serialise")).await?;
    }
    Ok(count)
}

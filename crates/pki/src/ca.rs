//! The installation's certificate authority.
//!
//! One CA per installation, ECDSA P-256, valid ten years, allowed to sign leaf
//! certificates only (path length 0). It is stored as a [`SealedCa`]: the certificate in
//! clear, the private key sealed with the master key, so the store never holds the CA key
//! in clear.
//!
//! Leaf certificates get a fresh P-256 key each, a random serial, and a validity that
//! starts an hour in the past, so a host whose clock is a little behind still accepts a
//! certificate issued a moment ago.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{PkiError, Sealer};

/// How long the CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How far in the past validity starts, for hosts whose clocks lag.
const CLOCK_SKEW: Duration = Duration::hours(1);
/// What the CA key's sealed value is bound to: it opens as nothing else.
const CA_KEY_AAD: &[u8] = b"sovdb/ca-key/v1";
/// X.509's upper bound for a common name (RFC 5280, ub-common-name).
const MAX_COMMON_NAME: usize = 64;

/// What a certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertUsage {
    /// A TLS server (an agent, the API).
    Server,
    /// A TLS client (the control plane calling agents).
    Client,
    /// Both.
    ServerAndClient,
}

/// What to put in a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRequest {
    pub common_name: String,
    /// DNS names the certificate is valid for (subject alternative names).
    pub dns_names: Vec<String>,
    /// IP addresses the certificate is valid for (subject alternative names).
    pub ip_addresses: Vec<IpAddr>,
    pub usage: CertUsage,
    pub validity_days: u32,
}

/// A certificate and its private key, both PEM. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The end of validity, as written in the certificate (whole seconds).
    pub not_after: DateTime<Utc>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The CA as stored: the certificate in clear, the key sealed with the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCa {
    pub cert_pem: String,
    pub sealed_key: String,
}

impl SealedCa {
    /// The same CA with its key opened by `from` and sealed again by `to` (a master key
    /// rotation).
    pub fn reseal(&self, from: &impl Sealer, to: &impl Sealer) -> Result<SealedCa, PkiError> {
        let key_pem = Zeroizing::new(from.open(&self.sealed_key, CA_KEY_AAD)?);
        Ok(SealedCa { cert_pem: self.cert_pem.clone(), sealed_key: to.seal(&key_pem, CA_KEY_AAD) })
    }
}

/// The installation's certificate authority, with its key in memory. `Debug` does not show
/// the key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    not_after: DateTime<Utc>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rcgen's Issuer elides its key in Debug.
        f.debug_struct("Ca").field("issuer", &self.issuer).field("not_after", &self.not_after).finish()
    }
}

impl Ca {
    /// A new CA named `common_name` (for example `sovdb CA <installation id>`).
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        check_common_name(common_name)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| PkiError::Certificate { action: "generate the CA key", source })?;
        let now = Utc::now();
        let not_after = whole_seconds(now + Duration::days(CA_VALIDITY_DAYS));
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = to_time(now - CLOCK_SKEW)?;
        params.not_after = to_time(not_after)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Certificate { action: "sign the CA certificate", source })?;
        Ok(Ca { issuer: Issuer::new(params, key), cert_pem: cert.pem(), not_after })
    }

    /// The CA certificate, PEM: what every party trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// The CA in its stored form.
    pub fn seal(&self, master: &impl Sealer) -> SealedCa {
        let key_pem = Zeroizing::new(self.issuer.key().serialize_pem());
        SealedCa { cert_pem: self.cert_pem.clone(), sealed_key: master.seal(key_pem.as_bytes(), CA_KEY_AAD) }
    }

    /// The CA back from its stored form. Refuses a key that does not belong to the
    /// certificate, and a certificate that is not a CA.
    pub fn unseal(sealed: &SealedCa, master: &impl Sealer) -> Result<Ca, PkiError> {
        let key_pem = Zeroizing::new(master.open(&sealed.sealed_key, CA_KEY_AAD)?);
        let key_pem = std::str::from_utf8(&key_pem)
            .map_err(|_| PkiError::CaCertificate("the sealed CA key is not PEM text".into()))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::CaCertificate(format!("the sealed CA key is not a private key: {e}")))?;

        let (_, pem) = x509_parser::pem::parse_x509_pem(sealed.cert_pem.as_bytes())
            .map_err(|e| PkiError::CaCertificate(format!("the CA certificate is not PEM: {e}")))?;
        let cert =
            pem.parse_x509().map_err(|e| PkiError::CaCertificate(format!("the CA certificate does not parse: {e}")))?;
        if !cert.is_ca() {
            return Err(PkiError::CaCertificate("the certificate is not a CA certificate".into()));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::CaCertificate(
                "the sealed key does not belong to the CA certificate: the stored CA was altered or mixed up".into(),
            ));
        }
        let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
            .ok_or_else(|| PkiError::CaCertificate("the CA certificate's expiry is out of range".into()))?;
        let issuer = Issuer::from_ca_cert_der(&pem.contents.clone().into(), key)
            .map_err(|source| PkiError::Certificate { action: "read the CA certificate", source })?;
        Ok(Ca { issuer, cert_pem: sealed.cert_pem.clone(), not_after })
    }

    /// Issues a leaf certificate with a new key, valid for `req.validity_days`.
    pub fn issue(&self, req: &CertRequest) -> Result<IssuedCert, PkiError> {
        if req.validity_days == 0 {
            return Err(PkiError::InvalidRequest("validity_days must be at least 1".into()));
        }
        self.issue_for(req, Duration::days(i64::from(req.validity_days)))
    }

    /// Issues a leaf certificate with a new key, valid for `validity` from now (whole
    /// seconds; `req.validity_days` is ignored). Shorter than a day is for tests that
    /// watch a renewal happen.
    pub fn issue_for(&self, req: &CertRequest, validity: Duration) -> Result<IssuedCert, PkiError> {
        check_common_name(&req.common_name)?;
        if validity < Duration::seconds(1) {
            return Err(PkiError::InvalidRequest("the validity must be at least one second".into()));
        }
        if matches!(req.usage, CertUsage::Server | CertUsage::ServerAndClient)
            && req.dns_names.is_empty()
            && req.ip_addresses.is_empty()
        {
            return Err(PkiError::InvalidRequest(
                "a server certificate needs at least one DNS name or IP address: clients check the name they connect to"
                    .into(),
            ));
        }
        let now = Utc::now();
        let not_after = whole_seconds(now + validity);
        if not_after > self.not_after {
            return Err(PkiError::InvalidRequest(format!(
                "a validity of {} days would outlast the CA, which expires at {}; ask for a shorter validity",
                validity.num_days(),
                self.not_after
            )));
        }

        let mut sans = Vec::with_capacity(req.dns_names.len() + req.ip_addresses.len());
        for name in &req.dns_names {
            let ia5 = name.clone().try_into().map_err(|_| {
                PkiError::InvalidRequest(format!("DNS name {name:?} is not ASCII; use its punycode (xn--) form"))
            })?;
            if name.is_empty() || name.len() > 253 || name.contains(char::is_whitespace) {
                return Err(PkiError::InvalidRequest(format!("{name:?} is not a DNS name")));
            }
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(req.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| PkiError::Certificate { action: "generate a key", source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(&req.common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match req.usage {
            CertUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            CertUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            CertUsage::ServerAndClient => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_time(now - CLOCK_SKEW)?;
        params.not_after = to_time(not_after)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Certificate { action: "sign the certificate", source })?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
    }
}

/// What a renewal needs to know of a certificate this CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertValidity {
    /// The serial number, lowercase hex without separators (as `openssl x509 -serial`
    /// prints it, lowercased).
    pub serial: String,
    /// When it was issued: its `notBefore` plus the clock skew allowance this CA puts
    /// before every leaf certificate.
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl CertValidity {
    /// Reads the first certificate of a PEM text.
    pub fn of_pem(pem: &str) -> Result<CertValidity, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| PkiError::InvalidRequest(format!("not a certificate: {e}")))?;
        CertValidity::of_der(&pem.contents)
    }

    /// Reads a DER certificate (as a TLS handshake carries it).
    pub fn of_der(der: &[u8]) -> Result<CertValidity, PkiError> {
        let bad = |why: String| PkiError::InvalidRequest(format!("not a certificate: {why}"));
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let time = |t: x509_parser::time::ASN1Time| {
            DateTime::from_timestamp(t.timestamp(), 0).ok_or_else(|| bad("a validity time is out of range".into()))
        };
        let not_before = time(cert.validity().not_before)?;
        Ok(CertValidity {
            serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
            issued_at: (not_before + CLOCK_SKEW).min(time(cert.validity().not_after)?),
            not_after: time(cert.validity().not_after)?,
        })
    }

    /// Whether less than a third of its life is left at `now`: renewing then leaves a
    /// third of the life to put the new certificate in place.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let life = self.not_after - self.issued_at;
        self.not_after - now < life / 3
    }
}

fn check_common_name(cn: &str) -> Result<(), PkiError> {
    if cn.trim().is_empty() {
        return Err(PkiError::InvalidRequest("the common name is empty".into()));
    }
    if cn.chars().count() > MAX_COMMON_NAME {
        return Err(PkiError::InvalidRequest(format!("the common name is longer than {MAX_COMMON_NAME} characters")));
    }
    Ok(())
}

fn common_name_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A positive 16-byte serial: random, so two certificates never share one (RFC 5280 asks
/// for unique serials per CA) without a counter to persist.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// X.509 times have whole seconds: drop the rest, so the value we report is the one in the
/// certificate.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| PkiError::InvalidRequest(format!("time {t} is out of range: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::RootCertStore;

    use super::*;
    use crate::MasterKey;

    fn der(pem: &str) -> CertificateDer<'static> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        CertificateDer::from(p.contents)
    }

    fn roots(ca: &Ca) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca.cert_pem())).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_req(dns: &[&str], ips: &[&str]) -> CertRequest {
        CertRequest {
            common_name: "agent-1".into(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            usage: CertUsage::Server,
            validity_days: 365,
        }
    }

    fn verify_server(ca: &Ca, cert: &IssuedCert, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider()).build().unwrap();
        verifier
            .verify_server_cert(
                &der(&cert.cert_pem),
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn verify_client(ca: &Ca, cert: &IssuedCert) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider()).build().unwrap();
        verifier.verify_client_cert(&der(&cert.cert_pem), &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn a_server_certificate_chains_to_its_ca_for_its_names_only() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let cert = ca.issue(&server_req(&["agent-1.example"], &["127.0.0.1", "::1"])).unwrap();
        verify_server(&ca, &cert, "agent-1.example").unwrap();
        verify_server(&ca, &cert, "127.0.0.1").unwrap();
        verify_server(&ca, &cert, "::1").unwrap();
        assert!(verify_server(&ca, &cert, "other.example").is_err());
        // A server certificate is no client certificate.
        assert!(verify_client(&ca, &cert).is_err());

        let other = Ca::generate("another CA").unwrap();
        assert!(verify_server(&other, &cert, "agent-1.example").is_err());
    }

    #[test]
    fn a_client_certificate_chains_to_its_ca_only() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let req = CertRequest {
            common_name: "control-plane".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: CertUsage::Client,
            validity_days: 30,
        };
        let cert = ca.issue(&req).unwrap();
        verify_client(&ca, &cert).unwrap();
        assert!(verify_client(&Ca::generate("another CA").unwrap(), &cert).is_err());
        let both = ca.issue(&CertRequest { usage: CertUsage::ServerAndClient, ..server_req(&["h"], &[]) }).unwrap();
        verify_client(&ca, &both).unwrap();
        verify_server(&ca, &both, "h").unwrap();
    }

    #[test]
    fn validity_reads_back_and_is_due_in_its_last_third() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let req = CertRequest {
            common_name: "m".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![],
            usage: CertUsage::ServerAndClient,
            validity_days: 0,
        };
        let cert = ca.issue_for(&req, Duration::seconds(90)).unwrap();
        let v = CertValidity::of_pem(&cert.cert_pem).unwrap();
        assert_eq!(v.not_after, cert.not_after);
        assert_eq!(v.not_after - v.issued_at, Duration::seconds(90));
        assert_eq!(v.serial.len(), 32, "{}", v.serial);
        assert!(!v.due(v.issued_at));
        assert!(!v.due(v.not_after - Duration::seconds(31)));
        assert!(v.due(v.not_after - Duration::seconds(29)));
        let other = CertValidity::of_pem(&ca.issue_for(&req, Duration::seconds(90)).unwrap().cert_pem).unwrap();
        assert_ne!(other.serial, v.serial);
        assert!(CertValidity::of_pem("nothing").is_err());
    }

    #[test]
    fn not_after_is_what_the_certificate_says() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let cert = ca.issue(&server_req(&["h"], &[])).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.cert_pem.as_bytes()).unwrap();
        let parsed = pem.parse_x509().unwrap();
        assert_eq!(parsed.validity().not_after.timestamp(), cert.not_after.timestamp());
        let days = (cert.not_after - Utc::now()).num_days();
        assert!((364..=365).contains(&days), "{days}");
        assert!(!parsed.is_ca());
        assert_eq!(
            KeyPair::from_pem(&cert.key_pem).unwrap().public_key_raw(),
            parsed.public_key().subject_public_key.data.as_ref()
        );
    }

    #[test]
    fn seal_then_unseal_gives_a_ca_that_issues_trusted_certificates() {
        let master = MasterKey::generate();
        let ca = Ca::generate("sovdb test CA").unwrap();
        let sealed = ca.seal(&master);
        assert!(!sealed.sealed_key.contains("PRIVATE KEY"));
        let json = serde_json::to_string(&sealed).unwrap();
        let back: SealedCa = serde_json::from_str(&json).unwrap();

        let unsealed = Ca::unseal(&back, &master).unwrap();
        assert_eq!(unsealed.cert_pem(), ca.cert_pem());
        assert_eq!(unsealed.not_after(), ca.not_after());
        let cert = unsealed.issue(&server_req(&["h"], &[])).unwrap();
        verify_server(&ca, &cert, "h").unwrap();

        // A rotation re-seals the key under another master key; only that one opens it.
        let next = MasterKey::generate();
        let resealed = back.reseal(&master, &next).unwrap();
        assert_eq!(resealed.cert_pem, back.cert_pem);
        assert_eq!(Ca::unseal(&resealed, &next).unwrap().cert_pem(), ca.cert_pem());
        assert!(Ca::unseal(&resealed, &master).is_err());
    }

    #[test]
    fn unseal_refuses_a_wrong_master_key_and_a_mixed_up_ca() {
        let master = MasterKey::generate();
        let sealed = Ca::generate("a").unwrap().seal(&master);
        assert!(matches!(Ca::unseal(&sealed, &MasterKey::generate()), Err(PkiError::SealedUnknownKey { .. })));

        let other = Ca::generate("b").unwrap().seal(&master);
        let mixed = SealedCa { cert_pem: other.cert_pem, sealed_key: sealed.sealed_key };
        let err = Ca::unseal(&mixed, &master).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");

        let leaf = Ca::generate("c").unwrap().issue(&server_req(&["h"], &[])).unwrap();
        let not_ca = SealedCa { cert_pem: leaf.cert_pem, sealed_key: master.seal(leaf.key_pem.as_bytes(), CA_KEY_AAD) };
        let err = Ca::unseal(&not_ca, &master).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let cases = [
            (server_req(&[], &[]), "at least one DNS name"),
            (CertRequest { validity_days: 0, ..server_req(&["h"], &[]) }, "at least 1"),
            (CertRequest { validity_days: 20_000, ..server_req(&["h"], &[]) }, "outlast the CA"),
            (CertRequest { common_name: " ".into(), ..server_req(&["h"], &[]) }, "empty"),
            (server_req(&["bücher.example"], &[]), "punycode"),
        ];
        for (req, expected) in cases {
            let err = ca.issue(&req).unwrap_err();
            assert!(err.to_string().contains(expected), "{req:?}: {err}");
        }
        assert!(Ca::generate("").is_err());
    }

    #[test]
    fn debug_does_not_show_keys() {
        let ca = Ca::generate("sovdb test CA").unwrap();
        let cert = ca.issue(&server_req(&["h"], &[])).unwrap();
        let shown = format!("{ca:?} {cert:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(cert.key_pem.lines().nth(1).unwrap()));
    }
}

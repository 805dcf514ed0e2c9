//! The installation's PKI as the app uses it: the CA (kept in the store, its key sealed
//! with the master key), the control plane's client certificate for talking to agents,
//! and sealing of other secrets (SSH keys) with the same master key.
//!
//! The master key never enters the store: a replica that has the store but not the key
//! can read no secret. Creating the CA writes it and its audit record in one transaction;
//! two replicas starting at once race on that transaction and the loser adopts the
//! winner's CA.

use std::sync::Arc;

use sovdb_agent::ClientIdentity;
use sovdb_pki::{Ca, CertRequest, CertUsage, IssuedCert, MasterKey, SealedCa};

use crate::{App, AppError, Result};

const CA_META_KEY: &str = "pki.ca";

/// What the app holds once the PKI is loaded.
pub(crate) struct Pki {
    master: MasterKey,
    ca: Ca,
    /// The control plane's identity towards agents.
    pub(crate) client: ClientIdentity,
    /// HTTPS towards what the installation CA certified (Patroni's REST API, etcd), with
    /// the control plane's client certificate.
    pub(crate) https: reqwest::Client,
}

impl Pki {
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        self.master.seal(plaintext, aad.as_bytes())
    }

    pub(crate) fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>> {
        self.master.open(sealed, aad.as_bytes()).map_err(|e| {
            AppError::Internal(anyhow::anyhow!(e).context("a stored secret does not open with this master key"))
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    pub(crate) fn issue(&self, req: &CertRequest) -> Result<IssuedCert> {
        self.ca.issue(req).map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("cannot issue a certificate")))
    }
}

impl App {
    /// Loads the installation's CA from the store (creating it on the first start) with
    /// `master`, and issues this server's client certificate. Must run before any host
    /// can be added or reached.
    pub async fn pki_init(&self, master: MasterKey) -> Result<()> {
        let ca = loop {
            let mut tx = self.store.write().await?;
            if let Some(json) = tx.meta_get(CA_META_KEY).await? {
                tx.commit().await?;
                break unseal(&json, &master)?;
            }
            let installation = tx.meta_get("installation_id").await?.unwrap_or_default();
            let ca = Ca::generate(&format!("sovdb installation {installation}"))
                .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("cannot create the CA")))?;
            // The audit append serialises writers (on PostgreSQL too): read again behind it,
            // so of two replicas starting at once exactly one creates the CA.
            tx.audit_append(&crate::bootstrap::system_entry(
                "pki.ca.create",
                "pki/ca".into(),
                serde_json::json!({"not_after": ca.not_after()}),
            ))
            .await?;
            if tx.meta_get(CA_META_KEY).await?.is_some() {
                continue; // dropped: rolled back; the other replica's CA is read next time round
            }
            tx.meta_set(CA_META_KEY, &serde_json::to_string(&ca.seal(&master)).expect("serialise")).await?;
            tx.commit().await?;
            break ca;
        };
        let client = ca
            .issue(&CertRequest {
                common_name: "sovdb control plane".into(),
                dns_names: vec![],
                ip_addresses: vec![],
                usage: CertUsage::Client,
                validity_days: 365,
            })
            .map_err(|e| {
                AppError::Internal(anyhow::anyhow!(e).context("cannot issue the control plane's certificate"))
            })?;
        let client =
            ClientIdentity { ca_pem: ca.cert_pem().to_string(), cert_pem: client.cert_pem, key_pem: client.key_pem };
        let https = https_client(&client)?;
        let _ = self.pki.set(Arc::new(Pki { master, ca, client, https }));
        Ok(())
    }

    pub(crate) fn pki(&self) -> Result<&Pki> {
        self.pki
            .get()
            .map(|p| p.as_ref())
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the PKI is not loaded (App::pki_init was not called)")))
    }
}

fn https_client(id: &ClientIdentity) -> Result<reqwest::Client> {
    let fail = |e: reqwest::Error| AppError::Internal(anyhow::anyhow!(e).context("cannot build the HTTPS client"));
    let root = reqwest::Certificate::from_pem(id.ca_pem.as_bytes()).map_err(fail)?;
    let identity = reqwest::Identity::from_pem(format!("{}\n{}", id.cert_pem, id.key_pem).as_bytes()).map_err(fail)?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .identity(identity)
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(fail)
}

fn unseal(json: &str, master: &MasterKey) -> Result<Ca> {
    let sealed: SealedCa = serde_json::from_str(json)
        .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("the stored CA is unreadable")))?;
    Ca::unseal(&sealed, master).map_err(|_| {
        AppError::Invalid(
            "the installation's CA in the store is sealed with another master key: start this server with the \
             installation's key (--master-key-file, the master.key of the first server)"
                .into(),
        )
    })
}

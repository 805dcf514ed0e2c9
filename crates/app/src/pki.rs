//! The installation's PKI as the app uses it: the CA (kept in the store, its key sealed
//! with the master key), the control plane's client certificate for talking to agents,
//! and sealing of other secrets (SSH keys) with the same master key.
//!
//! The master key never enters the store: a replica that has the store but not the key
//! can read no secret. Creating the CA writes it and its audit record in one transaction;
//! two replicas starting at once race on that transaction and the loser adopts the
//! winner's CA.
//!
//! The store records (meta `pki.master_key_id`) the ID of the key its values are sealed
//! with; a master key rotation (see [`App::master_key_rotate`]) changes it in the same
//! transaction that re-seals every value, and a start after a crash in the middle of a
//! rotation reads it to finish or undo the rotation's key files.

use std::sync::{Arc, RwLock};

use sovdb_agent::ClientIdentity;
use sovdb_pki::{Ca, CertRequest, CertUsage, IssuedCert, KeyFiles, Keyring, MasterKey, SealedCa, Sealer};
use sovdb_types::MasterKeyRotation;

use crate::{App, AppError, Ctx, Result};

const CA_META_KEY: &str = "pki.ca";
/// The ID of the master key the store's sealed values are sealed with.
const KEY_ID_META_KEY: &str = "pki.master_key_id";
/// Failpoints of a rotation: after the new key file is written (nothing committed), and
/// after the re-sealing transaction committed (key files not yet switched).
pub const FAILPOINT_ROTATE_AFTER_NEW_FILE: &str = "master-key-rotate.after-new-file";
pub const FAILPOINT_ROTATE_AFTER_COMMIT: &str = "master-key-rotate.after-commit";
/// Rows read at a time while re-sealing.
const RESEAL_PAGE: i64 = 500;

/// What the app holds once the PKI is loaded.
pub(crate) struct Pki {
    keys: RwLock<Keyring>,
    /// The key files, when the key came from one (a rotation needs them).
    files: Option<KeyFiles>,
    /// One rotation at a time in this process.
    rotating: tokio::sync::Mutex<()>,
    pub(crate) ca: Ca,
    /// The control plane's client certificate, renewed in memory by the certificate bot.
    client: RwLock<ClientSide>,
}

/// The control plane's identity towards agents, and HTTPS towards what the installation CA
/// certified (Patroni's REST API, etcd) with the same client certificate.
struct ClientSide {
    identity: ClientIdentity,
    https: reqwest::Client,
}

impl ClientSide {
    /// A new client certificate from `ca`, valid for `validity`.
    fn issue(ca: &Ca, validity: std::time::Duration) -> Result<ClientSide> {
        let validity = chrono::Duration::from_std(validity)
            .map_err(|_| AppError::Invalid("the certificate validity is out of range".into()))?;
        let req = CertRequest {
            common_name: "sovdb control plane".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: CertUsage::Client,
            validity_days: 0,
        };
        let cert = ca.issue_for(&req, validity).map_err(|e| {
            AppError::Internal(anyhow::anyhow!(e).context("cannot issue the control plane's certificate"))
        })?;
        let identity =
            ClientIdentity { ca_pem: ca.cert_pem().to_string(), cert_pem: cert.cert_pem, key_pem: cert.key_pem };
        let https = https_client(&identity)?;
        Ok(ClientSide { identity, https })
    }
}

impl Pki {
    /// The control plane's identity towards agents.
    pub(crate) fn client(&self) -> ClientIdentity {
        self.client.read().unwrap_or_else(|e| e.into_inner()).identity.clone()
    }

    /// HTTPS with the control plane's client certificate (a cheap clone of one client).
    pub(crate) fn https(&self) -> reqwest::Client {
        self.client.read().unwrap_or_else(|e| e.into_inner()).https.clone()
    }

    /// Replaces the control plane's client certificate when a third of its life is left at
    /// `now`; answers whether it did. It lives in memory only (every start issues one), so
    /// nothing is written: connections opened before keep the old one until they close.
    pub(crate) fn client_renew_if_due(
        &self,
        validity: std::time::Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let due = sovdb_pki::CertValidity::of_pem(&self.client().cert_pem).map_or(true, |v| v.due(now));
        if !due {
            return Ok(false);
        }
        let fresh = ClientSide::issue(&self.ca, validity)?;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(true)
    }

    fn keyring(&self) -> Keyring {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).seal(plaintext, aad.as_bytes())
    }

    pub(crate) fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>> {
        self.keyring().open(sealed, aad.as_bytes()).map_err(|e| {
            AppError::Internal(anyhow::anyhow!(e).context("a stored secret does not open with this master key"))
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Issues a certificate valid for `validity` (`req.validity_days` is ignored).
    pub(crate) fn issue_for(&self, req: &CertRequest, validity: std::time::Duration) -> Result<IssuedCert> {
        let validity = chrono::Duration::from_std(validity)
            .map_err(|_| AppError::Invalid("the certificate validity is out of range".into()))?;
        self.ca
            .issue_for(req, validity)
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("cannot issue a certificate")))
    }
}

impl App {
    /// Like [`pki_init_files`](Self::pki_init_files) with a key held in memory only (no
    /// key file, so no rotation): for tests.
    pub async fn pki_init(&self, master: MasterKey) -> Result<()> {
        self.pki_init_keys(Keyring::new(master), None).await
    }

    /// Loads the master key from its files (creating it on the first start), finishing or
    /// undoing a rotation a crash interrupted, then loads the CA (see `pki_init_keys`).
    ///
    /// Crash safety: a rotation writes `master.key.new` before it seals anything with it,
    /// and records that key's ID in the store in the transaction that re-seals. So when
    /// `master.key.new` is found here, the store decides: it names the new key, so the
    /// rotation committed and the files are switched now; or it does not, so nothing is
    /// sealed with the new key and its file is removed.
    pub async fn pki_init_files(&self, files: KeyFiles) -> Result<()> {
        let key_err = |e: sovdb_pki::PkiError| AppError::Invalid(format!("the master key: {e}"));
        let current = files.load_or_create().map_err(key_err)?;
        let stored = self.store.read().await?.meta_get(KEY_ID_META_KEY).await?;
        let mut ring = Keyring::new(current.clone());
        if let Some(next) = files.read_new().map_err(key_err)? {
            if stored.as_deref() == Some(next.id().as_str()) {
                files.promote_new().map_err(key_err)?;
                tracing::warn!(key_id = %next.id(), "finished a master key rotation that a crash interrupted");
                ring = ring.rotated(next);
            } else {
                files.discard_new().map_err(key_err)?;
                tracing::warn!(key_id = %next.id(), "discarded the key of a master key rotation that did not commit");
            }
        }
        if let Some(old) = files.read_old().map_err(key_err)? {
            ring = ring.with_older(old);
        }
        self.pki_init_keys(ring, Some(files)).await
    }

    /// Loads the installation's CA from the store (creating it on the first start) with
    /// `keys`, and issues this server's client certificate. Must run before any host
    /// can be added or reached.
    async fn pki_init_keys(&self, keys: Keyring, files: Option<KeyFiles>) -> Result<()> {
        let ca = loop {
            let mut tx = self.store.write().await?;
            match tx.meta_get(KEY_ID_META_KEY).await? {
                Some(id) if keys.find(&id).is_none() => {
                    return Err(AppError::Invalid(format!(
                        "the store's secrets are sealed with master key {id}, but this server holds key {}: start \
                         it with the installation's key file (--master-key-file)",
                        keys.current().id()
                    )))
                }
                Some(_) => {}
                // The first start, or a store from before key IDs were recorded.
                None => tx.meta_set(KEY_ID_META_KEY, &keys.current().id()).await?,
            }
            if let Some(json) = tx.meta_get(CA_META_KEY).await? {
                let ca = unseal(&json, &keys)?;
                tx.commit().await?;
                break ca;
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
            tx.meta_set(CA_META_KEY, &serde_json::to_string(&ca.seal(&keys)).expect("serialise")).await?;
            tx.commit().await?;
            break ca;
        };
        let client = RwLock::new(ClientSide::issue(&ca, self.config.internal_cert_validity)?);
        let pki = Pki { keys: RwLock::new(keys), files, rotating: tokio::sync::Mutex::new(()), ca, client };
        let _ = self.pki.set(Arc::new(pki));
        Ok(())
    }

    /// Replaces the master key with a new one and re-seals every stored value under it:
    /// the secrets, the hosts' SSH keys and the CA's key (admin only).
    ///
    /// Crash safety, step by step:
    /// 1. the new key is written to `master.key.new` (synced) before anything is sealed
    ///    with it; a crash here leaves the store untouched and the next start removes the
    ///    file (the store does not name its key);
    /// 2. one store transaction re-seals every value and records the new key's ID; a crash
    ///    before its commit is case 1, a crash after it leaves `master.key` (old) and
    ///    `master.key.new` (new) with a store that names the new key, and the next start
    ///    switches the files;
    /// 3. `master.key.new` becomes `master.key`, the old key is kept as `master.key.old`
    ///    ([`KeyFiles::promote_new`] never leaves `master.key` missing);
    /// 4. values another request sealed with the old key while the rotation ran (sealed
    ///    before, written after its commit) are re-sealed in a second pass; `master.key.old`
    ///    still opens any that a crash leaves behind.
    ///
    /// A failure to commit leaves both keys readable in memory and `master.key.new` on
    /// disk: whether the commit happened is unknown, and the next start decides by the
    /// store. Replicas sharing a PostgreSQL store each hold their own copy of the key and
    /// must be given the new one and restarted (see docs/security.md).
    pub async fn master_key_rotate(&self, ctx: &Ctx) -> Result<MasterKeyRotation> {
        ctx.require(crate::rbac::Action::MasterKeyRotate)?;
        let pki = self.pki()?;
        let files = pki.files.as_ref().ok_or_else(|| {
            AppError::Conflict(
                "this server holds its master key in memory only (no key file): it cannot rotate it".into(),
            )
        })?;
        let _one = pki
            .rotating
            .try_lock()
            .map_err(|_| AppError::Conflict("a master key rotation is already running on this server".into()))?;
        let before = pki.keyring();
        let next = MasterKey::generate();
        let target = before.rotated(next.clone());
        files.write_new(&next).map_err(|e| {
            AppError::Conflict(format!(
                "cannot start the rotation: {e}; if {} exists, a rotation did not finish: restart the server, which \
                 finishes or undoes it",
                files.new_path().display()
            ))
        })?;
        self.config.failpoints.hit(FAILPOINT_ROTATE_AFTER_NEW_FILE);

        let mut tx = match self.store.write().await {
            Ok(tx) => tx,
            Err(e) => {
                discard(files);
                return Err(e.into());
            }
        };
        let resealed = async {
            if tx.operation_count_unfinished("host.add").await? > 0 {
                return Err(AppError::Conflict(
                    "a host is being added (its operation holds a sealed agent key): wait until it finishes, then \
                     rotate"
                        .into(),
                ));
            }
            let counts = reseal_all(tx.as_mut(), &target).await?;
            tx.meta_set(KEY_ID_META_KEY, &next.id()).await?;
            tx.audit_append(&ctx.audit(
                "pki.master-key.rotate",
                "pki/master-key".into(),
                serde_json::json!({
                    "key_id": next.id(),
                    "previous_key_id": before.current().id(),
                    "secrets": counts.0,
                    "host_keys": counts.1,
                    "ca_key": counts.2,
                }),
            ))
            .await?;
            Ok(counts)
        }
        .await;
        let (secrets, host_keys, ca_key) = match resealed {
            Ok(c) => c,
            Err(e) => {
                drop(tx); // rolled back: nothing is sealed with the new key
                discard(files);
                return Err(e);
            }
        };
        if let Err(e) = tx.commit().await {
            // Committed or not, nobody can tell here: keep both keys able to open, seal
            // with the old one, and let the next start decide by the store.
            *pki.keys.write().unwrap_or_else(|e| e.into_inner()) = before.clone().with_older(next);
            return Err(e.into());
        }
        self.config.failpoints.hit(FAILPOINT_ROTATE_AFTER_COMMIT);
        *pki.keys.write().unwrap_or_else(|e| e.into_inner()) = target.clone();
        files.promote_new().map_err(|e| {
            AppError::Internal(anyhow::anyhow!(e).context(
                "the store is re-sealed under the new key, but its key file could not be put in place; the next start \
                 does it",
            ))
        })?;
        tracing::info!(key_id = %next.id(), previous_key_id = %before.current().id(), secrets, host_keys, "master key rotated");

        // Values sealed with the old key by requests that ran alongside.
        let mut tx = self.store.write().await?;
        let late = reseal_all(tx.as_mut(), &target).await?;
        tx.commit().await?;
        if late.0 + late.1 > 0 {
            tracing::info!(secrets = late.0, host_keys = late.1, "re-sealed values written during the rotation");
        }
        Ok(MasterKeyRotation {
            key_id: next.id(),
            previous_key_id: before.current().id(),
            secrets: secrets + late.0,
            host_keys: host_keys + late.1,
            ca_key,
            previous_key_file: files.old_path().display().to_string(),
        })
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

fn discard(files: &KeyFiles) {
    if let Err(e) = files.discard_new() {
        tracing::warn!(error = %e, "cannot remove the key of a rotation that did not commit; the next start removes it");
    }
}

/// Re-seals, in `tx`, every stored value that `keys`' current key did not seal: secrets,
/// hosts' SSH keys, the CA's key. Returns how many secrets and host keys, and whether the
/// CA key, were re-sealed. A value that none of `keys` opens fails the whole transaction.
async fn reseal_all(tx: &mut dyn sovdb_store::Tx, keys: &Keyring) -> Result<(u64, u64, bool)> {
    let refuse = |what: String, e: sovdb_pki::PkiError| {
        AppError::Conflict(format!("{what} does not open with this server's master keys ({e}); nothing was changed"))
    };
    let mut secrets = 0;
    let mut after: Option<(String, String)> = None;
    loop {
        let page = tx.secret_list_all(after.as_ref().map(|(o, n)| (o.as_str(), n.as_str())), RESEAL_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.owner.clone(), last.name.clone()));
        for s in page.iter().filter(|s| !keys.is_current(&s.sealed)) {
            let aad = crate::workflows::pg::aad(&s.owner, &s.name);
            let plain = zeroize::Zeroizing::new(
                keys.open(&s.sealed, aad.as_bytes())
                    .map_err(|e| refuse(format!("secret {}#{}", s.owner, s.name), e))?,
            );
            tx.secret_reseal(&s.owner, &s.name, &keys.seal(&plain, aad.as_bytes())).await?;
            secrets += 1;
        }
    }
    let mut host_keys = 0;
    let mut page = sovdb_types::PageRequest::first(RESEAL_PAGE as u32);
    loop {
        let hosts = tx.host_list(None, &page).await?;
        for h in &hosts.items {
            let Some(sealed) = h.ssh_key_sealed.as_deref().filter(|s| !keys.is_current(s)) else { continue };
            let aad = crate::hosts::ssh_key_aad(h.host.id);
            let plain = zeroize::Zeroizing::new(
                keys.open(sealed, aad.as_bytes()).map_err(|e| refuse(format!("host {}'s SSH key", h.host.name), e))?,
            );
            tx.host_set_ssh_key_sealed(h.host.id, &keys.seal(&plain, aad.as_bytes())).await?;
            host_keys += 1;
        }
        match hosts.next_page_token {
            Some(t) => page.after = Some(t),
            None => break,
        }
    }
    let mut ca_key = false;
    if let Some(json) = tx.meta_get(CA_META_KEY).await? {
        let sealed: SealedCa = serde_json::from_str(&json)
            .map_err(|e| AppError::Internal(anyhow::anyhow!(e).context("the stored CA is unreadable")))?;
        if !keys.is_current(&sealed.sealed_key) {
            let resealed = sealed.reseal(keys, keys).map_err(|e| refuse("the CA's key".into(), e))?;
            tx.meta_set(CA_META_KEY, &serde_json::to_string(&resealed).expect("serialise")).await?;
            ca_key = true;
        }
    }
    let api_keys = crate::api_cert::reseal(tx, keys).await?;
    if api_keys > 0 {
        tracing::info!(count = api_keys, "re-sealed the keys of the API certificates");
    }
    Ok((secrets, host_keys, ca_key))
}

fn unseal(json: &str, master: &Keyring) -> Result<Ca> {
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

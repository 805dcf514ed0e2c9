//! The master key, the envelope formats of sealed secrets, and the key files.
//!
//! A sealed value is text, so it can live in a database column or a JSON document:
//! - `v2:<key id>:<base64 of nonce || ciphertext>`: AES-256-GCM with a random 96-bit
//!   nonce. What [`MasterKey::seal`] writes. The key ID (16 hex digits, derived from the
//!   key, see [`MasterKey::id`]) names the key that sealed it, so during and after a key
//!   rotation a [`Keyring`] knows which of its keys opens a value, and which values still
//!   wait to be re-sealed. Random 96-bit nonces are safe for far more values than a
//!   control plane seals under one key (NIST SP 800-38D's bound is 2^32 per key).
//! - `v1:<base64 of nonce || ciphertext>`: XChaCha20-Poly1305 with a random 24-byte
//!   nonce, and no key ID. Written by earlier versions; still opened, never written.
//!
//! The `aad` (associated data) names what a value is for (for example `"ca-key"`). It is
//! not stored, but it is authenticated: a value sealed for one purpose does not open for
//! another, so one sealed secret cannot be swapped in for another.
//!
//! On disk a key is its 32 raw bytes in a file of mode 0600. Beside the key file
//! `master.key`, a rotation uses `master.key.new` (the key being introduced) and leaves
//! `master.key.old` (the key it replaced); see [`KeyFiles`].

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::PkiError;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

const V1_NONCE_LEN: usize = 24;
const V2_NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const V1_PREFIX: &str = "v1:";
const V2_PREFIX: &str = "v2:";
/// Length of a key ID in hex digits (64 bits of a hash of the key).
const KEY_ID_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The installation's master key: seals every secret the control plane stores.
///
/// Its bytes are wiped from memory when it is dropped, and `Debug` does not show them.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; MASTER_KEY_LEN],
}

impl MasterKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        MasterKey { bytes }
    }

    /// A key from its raw bytes (exactly [`MASTER_KEY_LEN`] of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, PkiError> {
        let bytes: [u8; MASTER_KEY_LEN] =
            bytes.try_into().map_err(|_| PkiError::MasterKeyBytes { len: bytes.len(), expected: MASTER_KEY_LEN })?;
        Ok(MasterKey { bytes })
    }

    /// Reads the key at `path`, or creates it there (mode 0600) if there is no file.
    ///
    /// Crash safety: the key is written to a temporary file in the same directory, synced,
    /// then hard-linked to `path`. A link never replaces an existing file, so when two
    /// processes create the key at once, one wins and the other reads the winner's key;
    /// nobody ever seals with a key that is then overwritten. A crash leaves either no key
    /// file or a whole one (and maybe a stray temporary file, which is ignored).
    pub fn load_or_create(path: &Path) -> Result<MasterKey, PkiError> {
        match Self::load(path) {
            Err(PkiError::MasterKeyIo { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let io_err = |action, source| PkiError::MasterKeyIo { action, path: path.to_owned(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(|e| io_err("create the directory of", e))?;

        let key = MasterKey::generate();
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", hex_lower(&suffix)));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&key.bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(key)
            }
            // Someone else created it first: theirs is the key.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_err("create", e)),
        }
    }

    fn load(path: &Path) -> Result<MasterKey, PkiError> {
        let mut bytes =
            fs::read(path).map_err(|source| PkiError::MasterKeyIo { action: "read", path: path.to_owned(), source })?;
        let key = match MasterKey::from_bytes(&bytes) {
            Ok(k) => Ok(k),
            Err(_) => {
                Err(PkiError::MasterKeyLength { path: path.to_owned(), len: bytes.len(), expected: MASTER_KEY_LEN })
            }
        };
        bytes.zeroize();
        key
    }

    /// This key's ID: 16 hex digits of SHA-256 over a fixed label and the key. It names
    /// the key in sealed values and messages without revealing anything about it.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"sovdb master key id\0");
        h.update(self.bytes);
        hex_lower(&h.finalize()[..KEY_ID_LEN / 2])
    }

    /// Encrypts and authenticates `plaintext` for the purpose named by `aad` (format v2).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; V2_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = Aes256Gcm::new((&self.bytes).into())
            .encrypt((&nonce).into(), Payload { msg: plaintext, aad })
            // Encryption fails only for plaintexts beyond 2^36 bytes, more than a secret is.
            .expect("AES-256-GCM encryption does not fail for in-memory plaintexts");
        let mut blob = Vec::with_capacity(V2_NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        format!("{V2_PREFIX}{}:{}", self.id(), B64.encode(blob))
    }

    /// Decrypts a value made by [`seal`](Self::seal) (or an earlier version's `v1`) with
    /// the same key and `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PkiError> {
        match parse(sealed)? {
            Parsed::V1(blob) => {
                let (nonce, ciphertext) = blob.split_at(V1_NONCE_LEN);
                XChaCha20Poly1305::new((&self.bytes).into())
                    .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
                    .map_err(|_| PkiError::SealedOpen)
            }
            Parsed::V2 { key_id, blob } => {
                if key_id != self.id() {
                    return Err(PkiError::SealedUnknownKey { key_id: key_id.to_string() });
                }
                let (nonce, ciphertext) = blob.split_at(V2_NONCE_LEN);
                Aes256Gcm::new((&self.bytes).into())
                    .decrypt(nonce.into(), Payload { msg: ciphertext, aad })
                    .map_err(|_| PkiError::SealedOpen)
            }
        }
    }
}

/// A sealed value taken apart: its format and bytes, checked for length.
enum Parsed<'a> {
    V1(Vec<u8>),
    V2 { key_id: &'a str, blob: Vec<u8> },
}

fn parse(sealed: &str) -> Result<Parsed<'_>, PkiError> {
    let malformed = |reason: String| PkiError::SealedMalformed { reason };
    let decode = |version: &str, body: &str, min: usize| {
        let blob = B64
            .decode(body.trim())
            .map_err(|e| malformed(format!("the text after `{version}:` is not base64: {e}")))?;
        if blob.len() < min {
            return Err(malformed(format!("{} bytes is too short for a {version} value (at least {min})", blob.len())));
        }
        Ok(blob)
    };
    if let Some(body) = sealed.strip_prefix(V1_PREFIX) {
        return Ok(Parsed::V1(decode("v1", body, V1_NONCE_LEN + TAG_LEN)?));
    }
    if let Some(rest) = sealed.strip_prefix(V2_PREFIX) {
        let Some((key_id, body)) = rest.split_once(':').filter(|(id, _)| {
            id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }) else {
            return Err(malformed("a v2 value starts with `v2:` and a 16-digit key ID, then `:`".into()));
        };
        return Ok(Parsed::V2 { key_id, blob: decode("v2", body, V2_NONCE_LEN + TAG_LEN)? });
    }
    let reason = match sealed.split_once(':') {
        Some((version, _)) if !version.is_empty() && version.len() <= 8 => {
            format!("format {version:?} is unknown to this version of sovdb (it knows v1 and v2)")
        }
        _ => "it does not start with a format version such as `v2:`".to_owned(),
    };
    Err(malformed(reason))
}

/// The ID of the key that sealed `sealed`, when its format names one (v2); `None` for a
/// v1 value or text that is not a sealed value.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    match parse(sealed) {
        Ok(Parsed::V2 { key_id, .. }) => Some(key_id),
        _ => None,
    }
}

/// Sealing and opening, by one key or by a [`Keyring`].
pub trait Sealer {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String;
    fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PkiError>;
}

impl Sealer for MasterKey {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        MasterKey::seal(self, plaintext, aad)
    }
    fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PkiError> {
        MasterKey::open(self, sealed, aad)
    }
}

/// The keys a server holds: the current one, which seals, and older ones, which only
/// open (values sealed before a rotation that the rotation has not re-sealed yet, or that
/// a crash left behind). A v2 value is opened by the key its ID names; a v1 value, which
/// names none, by whichever key opens it.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey) -> Keyring {
        Keyring { current, older: Vec::new() }
    }

    /// Adds a key that opens but never seals (ignored when it is the current key or
    /// already held).
    pub fn with_older(mut self, key: MasterKey) -> Keyring {
        if self.find(&key.id()).is_none() {
            self.older.push(key);
        }
        self
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key of that ID, if held.
    pub fn find(&self, key_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(&self.older).find(|k| k.id() == key_id)
    }

    /// This ring with `next` as the current key and every key it holds kept for opening.
    pub fn rotated(&self, next: MasterKey) -> Keyring {
        let mut older = vec![self.current.clone()];
        older.extend(self.older.iter().filter(|k| k.id() != next.id()).cloned());
        Keyring { current: next, older }
    }

    /// Whether `sealed` is sealed by the current key in the current format (so a
    /// rotation need not re-seal it).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed_key_id(sealed) == Some(self.current.id().as_str())
    }
}

impl Sealer for Keyring {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        self.current.seal(plaintext, aad)
    }

    fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PkiError> {
        match parse(sealed)? {
            Parsed::V2 { key_id, .. } => match self.find(key_id) {
                Some(key) => key.open(sealed, aad),
                None => Err(PkiError::SealedUnknownKey { key_id: key_id.to_string() }),
            },
            Parsed::V1(_) => {
                let mut last = PkiError::SealedOpen;
                for key in std::iter::once(&self.current).chain(&self.older) {
                    match key.open(sealed, aad) {
                        Ok(plain) => return Ok(plain),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

/// The files of a master key: `PATH` (the current key), `PATH.new` (the key a rotation is
/// introducing) and `PATH.old` (the key the last rotation replaced).
///
/// Crash safety: every file is written whole (temporary file, fsync, then a link or a
/// rename, then an fsync of the directory), and at every instant `PATH` exists and holds
/// either the key before or the key after a rotation; `PATH.new` is written before any
/// value is sealed with its key and removed only by [`promote_new`](Self::promote_new)
/// (which turns it into `PATH`) or [`discard_new`](Self::discard_new) (only when nothing
/// was sealed with it). Which of the two a crashed rotation needs is decided by the store,
/// which records the ID of the key its values are sealed with in the same transaction that
/// re-seals them.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    path: std::path::PathBuf,
}

impl KeyFiles {
    pub fn new(path: impl Into<std::path::PathBuf>) -> KeyFiles {
        KeyFiles { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn new_path(&self) -> std::path::PathBuf {
        self.sibling("new")
    }

    pub fn old_path(&self) -> std::path::PathBuf {
        self.sibling("old")
    }

    fn sibling(&self, ext: &str) -> std::path::PathBuf {
        let mut name = self.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".");
        name.push(ext);
        self.path.with_file_name(name)
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// The current key, created on the first start (see [`MasterKey::load_or_create`]).
    pub fn load_or_create(&self) -> Result<MasterKey, PkiError> {
        MasterKey::load_or_create(&self.path)
    }

    /// The key of a rotation in progress, if there is one.
    pub fn read_new(&self) -> Result<Option<MasterKey>, PkiError> {
        read_optional(&self.new_path())
    }

    /// The key the last rotation replaced, if it is still kept.
    pub fn read_old(&self) -> Result<Option<MasterKey>, PkiError> {
        read_optional(&self.old_path())
    }

    /// Writes `key` as `PATH.new`; refuses when that file exists (a rotation that did not
    /// finish: its key may seal values, so it is never overwritten).
    pub fn write_new(&self, key: &MasterKey) -> Result<(), PkiError> {
        let target = self.new_path();
        let io_err = |action, source| PkiError::MasterKeyIo { action, path: target.clone(), source };
        let tmp = self.write_temp(key).map_err(|e| io_err("write", e))?;
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| io_err("create", e))?;
        self.sync_dir().map_err(|e| io_err("sync the directory of", e))
    }

    /// Removes `PATH.new`: only for a rotation whose transaction did not commit, so that
    /// no stored value is sealed with that key.
    pub fn discard_new(&self) -> Result<(), PkiError> {
        let target = self.new_path();
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::MasterKeyIo { action: "remove", path: target, source: e }),
        }
        self.sync_dir().map_err(|e| PkiError::MasterKeyIo {
            action: "sync the directory of",
            path: self.path.clone(),
            source: e,
        })
    }

    /// Makes `PATH.new` the current key and keeps the replaced one as `PATH.old`.
    ///
    /// Crash safety: first `PATH.old` is made a copy of `PATH` (hard link to a temporary
    /// name, renamed over `PATH.old`), then `PATH.new` is renamed over `PATH`, then the
    /// directory is synced. A crash before the second rename leaves `PATH` (old key) and
    /// `PATH.new`, and the next start runs this again; after it, `PATH` is the new key.
    /// `PATH` is never missing.
    pub fn promote_new(&self) -> Result<(), PkiError> {
        let io_err = |action, path: std::path::PathBuf, source| PkiError::MasterKeyIo { action, path, source };
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let tmp = self.dir().join(format!(".{}.{}.old.tmp", self.file_name(), hex_lower(&suffix)));
        fs::hard_link(&self.path, &tmp).map_err(|e| io_err("keep a copy of", self.path.clone(), e))?;
        if let Err(e) = fs::rename(&tmp, self.old_path()) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("keep a copy of", self.path.clone(), e));
        }
        fs::rename(self.new_path(), &self.path).map_err(|e| io_err("replace", self.path.clone(), e))?;
        self.sync_dir().map_err(|e| io_err("sync the directory of", self.path.clone(), e))
    }

    fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// A new temporary file (mode 0600, synced) holding `key`, in the key's directory.
    fn write_temp(&self, key: &MasterKey) -> std::io::Result<std::path::PathBuf> {
        fs::create_dir_all(self.dir())?;
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let tmp = self.dir().join(format!(".{}.{}.tmp", self.file_name(), hex_lower(&suffix)));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&key.bytes)?;
            f.sync_all()
        })();
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        fs::File::open(self.dir())?.sync_all()
    }
}

fn read_optional(path: &Path) -> Result<Option<MasterKey>, PkiError> {
    match MasterKey::load(path) {
        Ok(k) => Ok(Some(k)),
        Err(PkiError::MasterKeyIo { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seal_then_open_gives_the_plaintext_back() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"the secret", b"ca-key");
        assert!(sealed.starts_with(&format!("v2:{}:", key.id())), "{sealed}");
        assert_eq!(sealed_key_id(&sealed), Some(key.id().as_str()));
        assert!(!sealed.contains("the secret"));
        assert_eq!(key.open(&sealed, b"ca-key").unwrap(), b"the secret");
        // Random nonces: sealing twice gives two different texts.
        assert_ne!(sealed, key.seal(b"the secret", b"ca-key"));
        assert_eq!(key.open(&key.seal(b"", b""), b"").unwrap(), b"");
    }

    #[test]
    fn another_key_or_purpose_does_not_open() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"the secret", b"ca-key");
        assert!(matches!(MasterKey::generate().open(&sealed, b"ca-key"), Err(PkiError::SealedUnknownKey { .. })));
        // Even with the key ID forged to the other key's, the other key does not open it.
        let other = MasterKey::generate();
        let forged = sealed.replacen(&key.id(), &other.id(), 1);
        assert!(matches!(other.open(&forged, b"ca-key"), Err(PkiError::SealedOpen)));
        assert!(matches!(key.open(&sealed, b"db-password"), Err(PkiError::SealedOpen)));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"the secret", b"ca-key");
        let prefix = format!("v2:{}:", key.id());
        let mut blob = B64.decode(&sealed[prefix.len()..]).unwrap();
        for i in 0..blob.len() {
            blob[i] ^= 0x01;
            let tampered = format!("{prefix}{}", B64.encode(&blob));
            assert!(matches!(key.open(&tampered, b"ca-key"), Err(PkiError::SealedOpen)), "byte {i}");
            blob[i] ^= 0x01;
        }
        let truncated = format!("{prefix}{}", B64.encode(&blob[..blob.len() - 1]));
        assert!(matches!(key.open(&truncated, b"ca-key"), Err(PkiError::SealedOpen)));
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        let key = MasterKey::generate();
        for (input, expected) in [
            ("", "format version"),
            ("hello", "format version"),
            ("v9:AAAA", "\"v9\" is unknown"),
            ("v1:not base64!", "not base64"),
            ("v1:AAAA", "too short"),
            ("v2:AAAA", "16-digit key ID"),
            ("v2:0123456789abcdef:AAAA", "too short"),
            ("v2:0123456789ABCDEF:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "16-digit key ID"),
        ] {
            let err = key.open(input, b"").unwrap_err();
            assert!(matches!(err, PkiError::SealedMalformed { .. }), "{input}: {err:?}");
            assert!(err.to_string().contains(expected), "{input}: {err}");
        }
    }

    /// A value in the format earlier versions wrote: XChaCha20-Poly1305, `v1:`.
    fn seal_v1(key: &MasterKey, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; V1_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new((&key.bytes).into())
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .unwrap();
        format!("v1:{}", B64.encode([nonce.as_slice(), &ct].concat()))
    }

    #[test]
    fn v1_values_of_earlier_versions_still_open() {
        let key = MasterKey::generate();
        let v1 = seal_v1(&key, b"old secret", b"db-password");
        assert_eq!(sealed_key_id(&v1), None);
        assert_eq!(key.open(&v1, b"db-password").unwrap(), b"old secret");
        assert!(matches!(key.open(&v1, b"other"), Err(PkiError::SealedOpen)));
        assert!(matches!(MasterKey::generate().open(&v1, b"db-password"), Err(PkiError::SealedOpen)));
        // A keyring opens it with whichever of its keys sealed it.
        let ring = Keyring::new(MasterKey::generate()).with_older(key.clone());
        assert_eq!(ring.open(&v1, b"db-password").unwrap(), b"old secret");
        assert!(!ring.is_current(&v1));
    }

    #[test]
    fn a_keyring_seals_with_its_current_key_and_opens_with_any() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), MasterKey::from_bytes(&a.bytes).unwrap().id());
        let ring = Keyring::new(a.clone());
        let under_a = ring.seal(b"x", b"t");
        let ring = ring.rotated(b.clone());
        assert_eq!(ring.current().id(), b.id());
        assert!(!ring.is_current(&under_a));
        assert_eq!(ring.open(&under_a, b"t").unwrap(), b"x");
        let under_b = ring.seal(b"y", b"t");
        assert!(ring.is_current(&under_b));
        assert_eq!(b.open(&under_b, b"t").unwrap(), b"y");
        assert!(matches!(ring.open(&under_b, b"u"), Err(PkiError::SealedOpen)));
        // A ring without the key that sealed a value names that key.
        let err = Keyring::new(b).open(&under_a, b"t").unwrap_err();
        assert!(err.to_string().contains(&a.id()), "{err}");
    }

    #[test]
    fn key_files_rotate_without_ever_losing_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::new(dir.path().join("master.key"));
        let first = files.load_or_create().unwrap();
        assert!(files.read_new().unwrap().is_none() && files.read_old().unwrap().is_none());
        let next = MasterKey::generate();
        files.write_new(&next).unwrap();
        // A second rotation never overwrites the key of one in progress.
        assert!(files.write_new(&MasterKey::generate()).is_err());
        assert_eq!(files.read_new().unwrap().unwrap().id(), next.id());
        assert_eq!(fs::metadata(files.new_path()).unwrap().permissions().mode() & 0o777, 0o600);
        files.promote_new().unwrap();
        assert_eq!(files.load_or_create().unwrap().id(), next.id());
        assert_eq!(files.read_old().unwrap().unwrap().id(), first.id());
        assert!(files.read_new().unwrap().is_none());
        // A discarded rotation leaves the current key alone.
        files.write_new(&MasterKey::generate()).unwrap();
        files.discard_new().unwrap();
        files.discard_new().unwrap();
        assert!(files.read_new().unwrap().is_none());
        assert_eq!(files.load_or_create().unwrap().id(), next.id());
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("master.key"), "master.key.old".into()]);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = MasterKey::from_bytes(&[0xab; 32]).unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab, "), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn from_bytes_wants_exactly_32() {
        assert!(MasterKey::from_bytes(&[0; 31]).is_err());
        assert!(MasterKey::from_bytes(&[0; 33]).is_err());
        let a = MasterKey::from_bytes(&[7; 32]).unwrap();
        let b = MasterKey::from_bytes(&[7; 32]).unwrap();
        assert_eq!(b.open(&a.seal(b"x", b""), b"").unwrap(), b"x");
    }

    #[test]
    fn load_or_create_creates_once_with_mode_0600_then_reads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 32);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let second = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(second.open(&first.seal(b"x", b"t"), b"t").unwrap(), b"x");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("master.key")]);
    }

    #[test]
    fn a_file_of_the_wrong_length_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, b"not a key\n").unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err();
        assert!(matches!(err, PkiError::MasterKeyLength { len: 10, .. }), "{err:?}");
        assert!(err.to_string().contains("not a sovdb master key"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not a key\n");
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let keys: Vec<MasterKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sealed = keys[0].seal(b"x", b"");
        for k in &keys {
            assert_eq!(k.open(&sealed, b"").unwrap(), b"x");
        }
    }
}

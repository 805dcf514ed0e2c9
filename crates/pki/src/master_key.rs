//! The master key and the envelope format of sealed secrets.
//!
//! A sealed value is text, `v1:<base64 of nonce || ciphertext>`, so it can live in a
//! database column or a JSON document. `v1` is XChaCha20-Poly1305 with a random 24-byte
//! nonce: random nonces of that size never repeat in practice, so no counter has to be
//! persisted. The version prefix lets a later format be introduced while old values still
//! open.
//!
//! The `aad` (associated data) names what a value is for (for example `"ca-key"`). It is
//! not stored, but it is authenticated: a value sealed for one purpose does not open for
//! another, so one sealed secret cannot be swapped in for another.
//!
//! On disk the key is its 32 raw bytes in a file of mode 0600.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use zeroize::Zeroize;

use crate::PkiError;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const V1_PREFIX: &str = "v1:";
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

    /// Encrypts and authenticates `plaintext` for the purpose named by `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            // Encryption fails only for plaintexts beyond what memory can hold (2^38 bytes).
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory plaintexts");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        format!("{V1_PREFIX}{}", B64.encode(blob))
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same key and `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PkiError> {
        let Some(body) = sealed.strip_prefix(V1_PREFIX) else {
            let reason = match sealed.split_once(':') {
                Some((version, _)) if !version.is_empty() && version.len() <= 8 => {
                    format!("format {version:?} is unknown to this version of sovdb (it knows v1)")
                }
                _ => "it does not start with a format version such as `v1:`".to_owned(),
            };
            return Err(PkiError::SealedMalformed { reason });
        };
        let blob = B64
            .decode(body.trim())
            .map_err(|e| PkiError::SealedMalformed { reason: format!("the text after `v1:` is not base64: {e}") })?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(PkiError::SealedMalformed {
                reason: format!("{} bytes is too short for a v1 value (at least {})", blob.len(), NONCE_LEN + TAG_LEN),
            });
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| PkiError::SealedOpen)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
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
        assert!(sealed.starts_with("v1:"), "{sealed}");
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
        assert!(matches!(MasterKey::generate().open(&sealed, b"ca-key"), Err(PkiError::SealedOpen)));
        assert!(matches!(key.open(&sealed, b"db-password"), Err(PkiError::SealedOpen)));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"the secret", b"ca-key");
        let mut blob = B64.decode(&sealed[3..]).unwrap();
        for i in 0..blob.len() {
            blob[i] ^= 0x01;
            let tampered = format!("v1:{}", B64.encode(&blob));
            assert!(matches!(key.open(&tampered, b"ca-key"), Err(PkiError::SealedOpen)), "byte {i}");
            blob[i] ^= 0x01;
        }
        let truncated = format!("v1:{}", B64.encode(&blob[..blob.len() - 1]));
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
        ] {
            let err = key.open(input, b"").unwrap_err();
            assert!(matches!(err, PkiError::SealedMalformed { .. }), "{input}: {err:?}");
            assert!(err.to_string().contains(expected), "{input}: {err}");
        }
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

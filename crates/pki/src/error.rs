//! The one error type of the crate.

use std::path::PathBuf;

/// What went wrong, said so that an operator knows what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} the master key file {path}: {source}")]
    MasterKeyIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the master key file {path} has {len} bytes, not {expected}: it is not a sovdb master key; \
         restore the right file, or move it away to create a new key (secrets sealed with the old key are then lost)"
    )]
    MasterKeyLength { path: PathBuf, len: usize, expected: usize },

    #[error("a master key has {expected} bytes, got {len}")]
    MasterKeyBytes { len: usize, expected: usize },

    #[error("the sealed value is malformed: {reason}")]
    SealedMalformed { reason: String },

    #[error(
        "cannot open the sealed value: it was sealed with another master key, for another purpose, \
         or it was altered; use the master key of this installation"
    )]
    SealedOpen,

    #[error(
        "cannot open the sealed value: it was sealed with master key {key_id}, which this server does not hold; \
         start it with that key (its key file, or the key file's `.old` or `.new` sibling after a rotation)"
    )]
    SealedUnknownKey { key_id: String },

    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),

    #[error("cannot {action}: {source}")]
    Certificate {
        action: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("the CA certificate is not usable: {0}")]
    CaCertificate(String),
}

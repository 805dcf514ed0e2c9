//! The installation's PKI, as pure functions over bytes: nothing here opens a socket.
//!
//! - [`MasterKey`]: the one secret the control plane keeps on disk. Every other secret it
//!   stores (the CA key first) is sealed with it, so a copy of the state store alone
//!   reveals no key.
//! - [`Ca`]: the installation's certificate authority. It issues the certificates with
//!   which agents and the control plane authenticate each other (mutual TLS): whoever holds
//!   a certificate it signed is part of the installation, nobody else is.
//!
//! Guarantees: sealed values are authenticated (a wrong key or a changed byte is an error,
//! never garbage), and no `Debug` output in this crate shows a key.

mod ca;
mod error;
mod master_key;

pub use ca::{Ca, CertRequest, CertUsage, CertValidity, IssuedCert, SealedCa};
pub use error::PkiError;
pub use master_key::{sealed_key_id, KeyFiles, Keyring, MasterKey, Sealer, MASTER_KEY_LEN};

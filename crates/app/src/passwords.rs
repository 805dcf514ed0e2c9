//! Password hashing: argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane) in
//! the PHC string format, which carries its own salt and parameters, so stronger settings
//! later still verify the hashes stored today.
//!
//! Verifying compares in constant time (the `argon2` crate does), and a login for a user
//! who does not exist, or has no password, verifies against a dummy hash of the same cost,
//! so how long a login takes does not tell which user names exist.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::{AppError, Result};

/// The shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
/// The longest: hashing a megabyte would be a cheap way to burn our CPU.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Checks a new password's length; the message never contains the password.
pub(crate) fn check_new(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(AppError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AppError::Invalid(format!("the password is too long: at most {MAX_PASSWORD_LEN} bytes")));
    }
    Ok(())
}

/// The argon2id hash of `password` with a fresh random salt. CPU-heavy: call it from
/// `spawn_blocking`.
pub(crate) fn hash(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AppError::Internal(anyhow::anyhow!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing a password: {e}")))
}

/// A hash no password is known for, to verify against when there is no real one.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    hash(&hex::encode(secret)).expect("hashing a random password")
});

/// Whether `password` matches `stored` (a PHC string). With `None`, verifies against a
/// dummy hash at the same cost and answers `false`. CPU-heavy: call it from
/// `spawn_blocking`.
pub(crate) fn verify(password: &str, stored: Option<&str>) -> bool {
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else {
        // An unreadable stored hash: spend the same time, then refuse.
        let _ = verify(password, None);
        return false;
    };
    let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    ok && real
}

/// Warms the dummy hash, so the first login for an unknown user costs no more than others.
pub(crate) fn warm_up() {
    LazyLock::force(&DUMMY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse battery!", Some(&h)));
        assert_ne!(h, hash("correct horse battery").unwrap(), "every hash has its own salt");
    }

    #[test]
    fn no_hash_or_a_broken_one_never_verifies() {
        assert!(!verify("anything at all", None));
        assert!(!verify("anything at all", Some("not a phc string")));
    }

    #[test]
    fn new_passwords_are_checked_without_echoing_them() {
        let e = check_new("short-pw").unwrap_err().to_string();
        assert!(e.contains("at least 12") && !e.contains("short-pw"), "{e}");
        assert!(check_new(&"x".repeat(2000)).is_err());
        assert!(check_new("twelve chars").is_ok());
    }
}

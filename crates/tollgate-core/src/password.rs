//! Member passwords for the dashboard: Argon2id (RFC 9106) with the `argon2` crate's defaults (m = 19 MiB, t = 2,
//! p = 1, OWASP's minimum recommendation), stored as a PHC string with its own salt and parameters, so they can be
//! raised later without invalidating existing hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_LEN: usize = 1024;

/// Why a password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Outside 8–1024 characters.
    #[error("password must be 8 to 1024 characters")]
    Length,
    /// The hasher failed (should not happen with valid parameters).
    #[error("password hashing failed")]
    Hash,
}

/// Hashes a password (CPU-heavy: call off the async runtime).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if !(MIN_LEN..=MAX_LEN).contains(&password.chars().count()) {
        return Err(PasswordError::Length);
    }
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| PasswordError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the stored PHC string (constant-time inside the verifier). A password longer than
/// any [`hash`] accepts never matches, and is not hashed: a sign-in form is no way to make the server hash megabytes.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN * 4 || password.chars().count() > MAX_LEN {
        return false;
    }
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_longer_than_any_hash_never_matches() {
        let long = "x".repeat(MAX_LEN + 1);
        let phc = hash(&"x".repeat(MAX_LEN)).unwrap();
        assert!(verify(&"x".repeat(MAX_LEN), &phc));
        assert!(!verify(&long, &phc));
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("x", "not a hash"));
        assert_eq!(hash("short"), Err(PasswordError::Length));
    }
}

//! Random ids and secrets, SHA-256 digests, and argon2id password hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system's CSPRNG does not fail on Linux once booted; a failure here is unrecoverable.
    SystemRandom::new().fill(&mut bytes).expect("the system random source");
    bytes
}

/// A new id: `prefix` and 128 random bits in hex (`org_4f1c…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random::<16>()))
}

/// A new 256-bit secret, URL-safe base64 after `prefix` (`rk_…` for API keys).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()))
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// argon2id (OWASP's minimum: 19 MiB, 2 passes, 1 lane), in PHC string form.
fn argon2id() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with argon2id and a random salt; takes tens of milliseconds on
/// purpose, so call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(&random::<16>()).map_err(|e| StoreError::Hash(e.to_string()))?;
    argon2id()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

/// Whether `password` matches the stored `hash`; a malformed hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2id().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "same salt twice");
        assert!(!a.contains("correct horse"));
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("correct horse!", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn secrets_are_256_bits_and_ids_are_distinct() {
        let s = new_secret("rk");
        assert_eq!(s.len(), 3 + 43);
        assert_ne!(new_id("org"), new_id("org"));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

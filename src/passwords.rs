//! argon2id password and PIN hashing. Callers run these on the blocking
//! pool: one hash costs tens of milliseconds of CPU by design.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::config::Argon2Settings;

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing: {0}")]
pub struct HashError(String);

impl PasswordHasher {
    pub fn new(settings: &Argon2Settings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashError(e.to_string()))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    /// Hashes the secret as prepared by RFC 8265's OpaqueString profile.
    pub fn hash(&self, secret: &str) -> Result<String, HashError> {
        let prepared =
            crate::domain::opaque_secret(secret).unwrap_or(std::borrow::Cow::Borrowed(secret));
        self.argon2()
            .hash_password(prepared.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashError(e.to_string()))
    }

    /// Verifies against a stored PHC string; the parameters stored in the
    /// hash are used, so raising the cost later keeps old hashes valid.
    /// The secret is compared as OpaqueString prepares it; where that
    /// changes it (non-ASCII spaces, decomposed letters), the raw form is
    /// tried as well, for hashes made before secrets were prepared.
    pub fn verify(&self, secret: &str, stored: &str) -> bool {
        match crate::domain::opaque_secret(secret) {
            Ok(prepared) if prepared != secret => {
                self.verify_exact(&prepared, stored) || self.verify_exact(secret, stored)
            }
            _ => self.verify_exact(secret, stored),
        }
    }

    fn verify_exact(&self, secret: &str, stored: &str) -> bool {
        match PasswordHash::new(stored) {
            Ok(hash) => self
                .argon2()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let hasher = PasswordHasher::new(&Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        let a = hasher.hash("correct horse").unwrap();
        let b = hasher.hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(hasher.verify("correct horse", &a));
        assert!(!hasher.verify("wrong horse", &a));
        assert!(!hasher.verify("correct horse", "not a hash"));
    }
}

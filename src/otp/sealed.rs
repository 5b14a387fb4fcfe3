//! Sealed secrets: what the server must read back later (unlike codes,
//! which are only ever compared) but never store in the clear.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

/// Seals and opens small secrets (TOTP secrets, queued one-time codes)
/// with ChaCha20-Poly1305, each bound to a value given as associated data
/// (a user id, an outbox row id): it opens for that value only.
/// Bytes of a ChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Returns (nonce, ciphertext).
    pub fn seal(&self, bound_to: &str, secret: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| "sealing failed".to_owned())?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Seals into one stored value: `nonce ‖ ciphertext`.
    pub fn seal_joined(&self, bound_to: &str, secret: &[u8]) -> Result<Vec<u8>, String> {
        let (nonce, ciphertext) = self.seal(bound_to, secret)?;
        Ok([nonce, ciphertext].concat())
    }

    /// Opens a value made by [`SecretBox::seal_joined`].
    pub fn open_joined(&self, bound_to: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE_LEN)
            .filter(|(_, ciphertext)| !ciphertext.is_empty())
            .ok_or_else(|| "the stored value is too short to be sealed".to_owned())?;
        self.open(bound_to, nonce, ciphertext)
    }

    pub fn open(&self, bound_to: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| "the stored nonce has the wrong length".to_owned())?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| "the sealed value does not open with this server's secret".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_binding_and_key() {
        let sealer = SecretBox::new([7; 32]);
        let (nonce, sealed) = sealer.seal("user-1", b"secret bytes").unwrap();
        assert_eq!(
            sealer.open("user-1", &nonce, &sealed).unwrap(),
            b"secret bytes"
        );
        assert!(sealer.open("user-2", &nonce, &sealed).is_err());
        assert!(
            SecretBox::new([8; 32])
                .open("user-1", &nonce, &sealed)
                .is_err()
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }
}

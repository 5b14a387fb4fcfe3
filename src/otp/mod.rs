//! One-time codes: drawn uniformly from a CSPRNG, stored only as an
//! HMAC-SHA256 under the server secret (bound to the challenge id, so a
//! stored value is useless for any other challenge), compared in constant
//! time.

pub mod sealed;
pub mod totp;

use hmac::{Hmac, Mac};
use rand::RngExt;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The server secret OTP hashes are keyed with.
#[derive(Clone)]
pub struct OtpKey {
    keyed: HmacSha256,
}

impl OtpKey {
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the OTP secret must be at least 32 bytes".to_owned());
        }
        let keyed = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(Self { keyed })
    }

    fn mac(&self, challenge_id: &str, code: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(challenge_id.as_bytes());
        mac.update(b":");
        mac.update(code.as_bytes());
        mac
    }

    /// The value stored for `code` in challenge `challenge_id`.
    pub fn digest(&self, challenge_id: &str, code: &str) -> Vec<u8> {
        self.mac(challenge_id, code)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// A 32-byte key for `purpose`, derived from the server secret (so one
    /// secret serves several uses without the uses sharing a key).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.mac("derive", purpose).finalize().into_bytes());
        out
    }

    /// Whether `code` is the one stored as `digest`, in constant time.
    pub fn matches(&self, challenge_id: &str, code: &str, digest: &[u8]) -> bool {
        self.mac(challenge_id, code).verify_slice(digest).is_ok()
    }
}

/// A code of `length` digits, each value equally likely (leading zeros kept).
pub fn generate_code(length: u32) -> String {
    let upper = 10_u64.pow(length);
    let value = rand::rng().random_range(0..upper);
    format!("{value:0width$}", width = length as usize)
}

/// Digits only, of the configured length: anything else cannot match, and
/// is refused before any comparison.
pub fn is_well_formed(code: &str, length: u32) -> bool {
    code.len() == length as usize && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_length_and_spread_over_the_digits() {
        let mut first_digits = [0u32; 10];
        for _ in 0..2000 {
            let code = generate_code(6);
            assert!(is_well_formed(&code, 6), "{code}");
            first_digits[(code.as_bytes()[0] - b'0') as usize] += 1;
        }
        // Leading zeros occur: the draw is uniform over 000000..999999.
        assert!(first_digits.iter().all(|&n| n > 100), "{first_digits:?}");
        assert_eq!(generate_code(8).len(), 8);
    }

    #[test]
    fn digests_bind_code_key_and_challenge() {
        let key = OtpKey::new(&[1; 32]).unwrap();
        let digest = key.digest("c1", "123456");
        assert!(key.matches("c1", "123456", &digest));
        assert!(!key.matches("c1", "123457", &digest));
        assert!(!key.matches("c2", "123456", &digest));
        assert!(
            !OtpKey::new(&[2; 32])
                .unwrap()
                .matches("c1", "123456", &digest)
        );
        assert!(OtpKey::new(&[1; 8]).is_err());
        assert!(!key.matches("c1", "123456", &digest[..16]));
    }
}

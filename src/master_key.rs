//! The master key: the one secret kept outside the database. Signing keys
//! and the OTP secret are stored sealed under keys derived from it, so a
//! copy of the database alone can neither mint a token nor open an
//! authenticator secret (OWASP ASVS 6.4.1: keys kept apart from the data
//! they protect).
//!
//! It comes from `LATCHKEY_MASTER_KEY` (64 hex digits: 32 bytes), or else
//! from the file `<data dir>/master.key`, made with a fresh random key and
//! mode 0600 at the first start. Several nodes on one database must share
//! it. A server started with another key than the one that sealed the
//! database refuses to start.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::otp::sealed::SecretBox;

#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("MasterKey(…)")
    }
}

/// Where a server's master key file lives.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl MasterKey {
    /// From the setting's 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        parse_hex(text)
            .map(|key| Self { key })
            .ok_or_else(|| "must be 64 hex digits (e.g. `openssl rand -hex 32`)".to_owned())
    }

    /// From the setting when given, else from the key file in `data_dir`,
    /// made (0600, in a 0700 folder) when it does not exist yet.
    pub fn load(setting: Option<&MasterKey>, data_dir: &Path) -> Result<Self, String> {
        if let Some(key) = setting {
            return Ok(key.clone());
        }
        let path = key_file(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(&text).map_err(|why| format!("{}: {why}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                crate::config::create_private_dir(data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
                let key: [u8; 32] = rand::random();
                write_new_private_file(&path, to_hex(&key).as_bytes()).map_err(|e| {
                    format!("cannot write the master key file {}: {e}", path.display())
                })?;
                Ok(Self { key })
            }
            Err(err) => Err(format!("cannot read {}: {err}", path.display())),
        }
    }

    /// A 32-byte key for `purpose` (HMAC-SHA256 of the purpose under the
    /// master key), so that no two uses share a key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The box that seals stored keys for `purpose`.
    pub fn sealer(&self, purpose: &str) -> Sealer {
        Sealer {
            secret_box: SecretBox::new(self.derive(purpose)),
        }
    }
}

/// Seals values stored in one column, each bound to its row's name.
#[derive(Clone)]
pub struct Sealer {
    secret_box: SecretBox,
}

impl Sealer {
    /// `nonce ‖ ciphertext`.
    pub fn seal(&self, bound_to: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        self.secret_box.seal_joined(bound_to, value)
    }

    pub fn open(&self, bound_to: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        self.secret_box.open_joined(bound_to, sealed)
    }

    /// Whether a stored value is sealed, or a raw value of `raw_len` bytes
    /// from before values were sealed (to be sealed now).
    pub fn is_raw(stored: &[u8], raw_len: usize) -> bool {
        stored.len() == raw_len
    }
}

/// Writes a file that only its owner may read (0600), refusing to replace
/// one.
pub fn write_new_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_from_the_setting_or_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let made = MasterKey::load(None, &data).unwrap();
        let again = MasterKey::load(None, &data).unwrap();
        assert_eq!(made.derive("x"), again.derive("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_file(&data))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&data).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let given = MasterKey::from_hex(&"00".repeat(32)).unwrap();
        let from_setting = MasterKey::load(Some(&given), &data).unwrap();
        assert_ne!(from_setting.derive("x"), made.derive("x"));
        assert!(MasterKey::from_hex("short").is_err());
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let one = MasterKey::from_hex(&"01".repeat(32))
            .unwrap()
            .sealer("keys");
        let other = MasterKey::from_hex(&"02".repeat(32))
            .unwrap()
            .sealer("keys");
        let sealed = one.seal("kid-1", b"secret").unwrap();
        assert_eq!(one.open("kid-1", &sealed).unwrap(), b"secret");
        assert!(one.open("kid-2", &sealed).is_err());
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(Sealer::is_raw(&[0; 32], 32));
        assert!(!Sealer::is_raw(&sealed, 32));
    }
}

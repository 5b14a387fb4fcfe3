//! TOTP (RFC 6238) for authenticator apps, over totp-rs with the time passed
//! in: SHA1, 6 digits, 30 s steps (what every authenticator app supports).
//! Secrets are stored sealed ([`super::sealed::SecretBox`]), bound to the
//! user id.

use totp_rs::{Algorithm, Builder, Totp};

pub const PERIOD: u64 = 30;
pub const DIGITS: u8 = 6;

/// 160 random bits, the size RFC 4226 recommends for SHA1.
pub fn generate_secret() -> Vec<u8> {
    rand::random::<[u8; 20]>().to_vec()
}

pub fn build(secret: &[u8], issuer: &str, account_name: &str, skew: u16) -> Result<Totp, String> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(PERIOD)
        .with_skew(skew)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer))
        .with_account_name(account_name)
        .build()
        .map_err(|e| format!("TOTP: {e}"))
}

/// The Key Uri Format URI an authenticator app scans:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`.
/// The label's parts are percent-encoded (a `:` in a login name becomes
/// `%3A`, so it cannot split the label), which totp-rs refuses to do.
pub fn key_uri(secret: &[u8], issuer: &str, account_name: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // Everything but RFC 3986's unreserved characters.
    const LABEL: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let issuer = utf8_percent_encode(issuer, LABEL);
    let account = utf8_percent_encode(account_name, LABEL);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        base32(secret)
    )
}

/// A QR code of `uri` as a base64 PNG.
pub fn qr_png_base64(uri: &str) -> Result<String, String> {
    qrcodegen_image::draw_base64(uri)
        .map_err(|_| "the otpauth URI is too long for a QR code".into())
}

/// A generator for checking codes only. The issuer and account name do not
/// enter the code (RFC 6238), so neutral labels are used: a `:` in a login
/// name or in the issuer setting cannot make a check fail.
pub fn checker(secret: &[u8], skew: u16) -> Result<Totp, String> {
    build(secret, "Latchkey", "user", skew)
}

/// The time step `code` matches at `unix_time` (± the skew), if any.
pub fn matching_step(totp: &Totp, code: &str, unix_time: u64) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp.check(code, unix_time)
}

/// The Base32 (RFC 4648, no padding) form authenticator apps take.
pub fn base32(secret: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in secret {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn steps_within_the_skew_match_and_others_do_not() {
        let totp = build(b"12345678901234567890", "Latchkey", "ann", 1).unwrap();
        let t = 1_111_111_109;
        let code = totp.generate(t).to_string();
        assert_eq!(matching_step(&totp, &code, t), Some(t / 30));
        assert_eq!(matching_step(&totp, &code, t + 30), Some(t / 30));
        assert_eq!(matching_step(&totp, &code, t + 90), None);
        assert_eq!(matching_step(&totp, "12345a", t), None);
    }
}

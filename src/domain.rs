//! Values parsed once, at the edge, into the form every rule compares.
//!
//! Unicode text is prepared with the PRECIS profiles (RFC 8264/8265/8266,
//! through `precis-profiles`): login names with UsernameCaseMapped, so the
//! composed and decomposed spellings of `jürgen`, or its full-width form,
//! are one name; passwords and PINs with OpaqueString; display names with
//! Nickname, which refuses control and invisible (default-ignorable,
//! bidirectional-control) characters.

use std::borrow::Cow;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::{Nickname, OpaqueString, UsernameCaseMapped};

/// A login name in its enforced form (RFC 8265 §3.3, UsernameCaseMapped):
/// width-mapped, lower-cased, NFC. Two names that enforce to the same
/// string are the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName(String);

impl LoginName {
    /// At most 254 characters after enforcement.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let enforced = UsernameCaseMapped::enforce(raw).map_err(|_| {
            "must be a user name without spaces, control or invisible characters".to_owned()
        })?;
        if enforced.chars().count() > 254 {
            return Err("must be at most 254 characters".into());
        }
        Ok(Self(enforced.into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A display name in its enforced form (RFC 8266, Nickname): no control or
/// invisible characters, spaces collapsed, NFKC.
pub fn display_name(raw: &str) -> Result<String, String> {
    let enforced = Nickname::enforce(raw).map_err(|_| {
        "must be a name without control or invisible characters (zero-width, bidi controls)"
            .to_owned()
    })?;
    match enforced.chars().count() {
        1..=200 => Ok(enforced.into_owned()),
        _ => Err("must be 1 to 200 characters".into()),
    }
}

/// A password or PIN as hashed and compared (RFC 8265 §4.2, OpaqueString):
/// non-ASCII spaces mapped to ASCII space, NFC; control characters
/// refused.
pub fn opaque_secret(raw: &str) -> Result<Cow<'_, str>, String> {
    OpaqueString::enforce(raw).map_err(|_| "must not contain control characters".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_that_look_alike_are_one_name() {
        let composed = LoginName::parse("j\u{00fc}rgen").unwrap();
        let decomposed = LoginName::parse("ju\u{0308}rgen").unwrap();
        let full_width = LoginName::parse("\u{ff2a}\u{00fc}rgen").unwrap();
        let upper = LoginName::parse("J\u{00dc}RGEN").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed, full_width);
        assert_eq!(composed, upper);
        assert_eq!(composed.as_str(), "j\u{00fc}rgen");
        assert_eq!(
            LoginName::parse("Ann@Example.com").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in ["ann\u{200b}", "a b", "ann\u{202e}", "", "tab\there"] {
            assert!(LoginName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_names_refuse_invisible_characters() {
        assert_eq!(display_name("Ann  Example").unwrap(), "Ann Example");
        assert!(display_name("J\u{00fc}rgen M\u{00fc}ller").is_ok());
        for bad in ["Ann\u{200b}", "\u{202e}nnA", "Ann\u{0007}", "   "] {
            assert!(display_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_prepared_as_opaque_strings() {
        assert_eq!(opaque_secret("correct horse").unwrap(), "correct horse");
        // A no-break space is a space.
        assert_eq!(
            opaque_secret("correct\u{00a0}horse").unwrap(),
            "correct horse"
        );
        assert!(opaque_secret("bell\u{0007}").is_err());
    }
}

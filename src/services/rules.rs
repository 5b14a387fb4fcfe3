//! Field rules, taken from the seed documents. Each check returns a
//! sentence for the client when the value breaks the rule; each [`Rule`]
//! pairs the check with what the OpenAPI document says of the field (its
//! regex, where the seeds give one), so the two are written side by side.

/// Checks a string value; `Err` says why it is refused.
pub type Check = fn(&str) -> Result<(), String>;

/// A field rule: the check the server applies and its description in the
/// OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub check: Check,
    /// The ECMA-262 pattern the check implements, when it is one.
    pub pattern: Option<&'static str>,
    /// The rule in words, for the document.
    pub description: &'static str,
}

impl Rule {
    pub const fn new(
        check: Check,
        pattern: Option<&'static str>,
        description: &'static str,
    ) -> Self {
        Self {
            check,
            pattern,
            description,
        }
    }
}

pub const ENTITY_NUMBER: Rule = Rule::new(entity_number, Some("^[0-9]{4}$"), "4 digits");
pub const EMPLOYEE_NUMBER: Rule = Rule::new(employee_number, Some("^[0-9]{5}$"), "5 digits");
pub const APPLICATION_NAME: Rule = Rule::new(
    application_name,
    Some("^[A-Za-z0-9 .,'_-]{1,120}$"),
    "1 to 120 letters, digits, space and . , ' _ -",
);
pub const APPLICATION_TYPE: Rule = Rule::new(
    application_type,
    Some("^(mobile|desktop|web)$"),
    "mobile, desktop or web",
);
pub const APPLICATION_NUMBER: Rule = Rule::new(
    application_number,
    Some("^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"),
    "1 to 128 letters, digits, _ or -, starting with a letter or digit",
);
pub const NAME: Rule = Rule::new(
    name,
    None,
    "1 to 200 characters, no control or invisible characters (RFC 8266 Nickname)",
);
pub const LOGIN_NAME: Rule = Rule::new(
    login_name,
    None,
    "a user name without spaces, compared as RFC 8265 UsernameCaseMapped prepares it",
);
pub const EMAIL: Rule = Rule::new(email, None, "an email address like name@example.com");
pub const PREFERRED_LANGUAGE: Rule = Rule::new(preferred_language, Some("^(en|de)$"), "en or de");
pub const PASSWORD: Rule = Rule::new(password, None, "8 to 128 characters");
pub const LOGIN_PASSWORD: Rule = Rule::new(login_password, None, "the password as typed");
pub const OTP_CODE: Rule = Rule::new(otp_code, None, "the code as typed (1 to 64 characters)");
pub const PIN: Rule = Rule::new(pin, Some("^[0-9]{4}$"), "4 digits");
pub const OTP_TYPE: Rule = Rule::new(
    otp_type,
    Some("^(login|account|totp|recovery)$"),
    "login, account, totp or recovery",
);
pub const BASE64: Rule = Rule::new(base64, None, "standard base64, at most 8192 characters");
pub const DURATION: Rule = Rule::new(
    duration,
    Some("^[0-9]+(\\.[0-9]+)?s$"),
    "seconds as protobuf's JSON writes them, e.g. \"18000s\"",
);
pub const URL_TEMPLATE: Rule = Rule::new(
    url_template,
    None,
    "an http(s) URL of at most 2000 characters with {{.Code}}, {{.UserID}}, {{.LoginName}}, {{.SessionID}}",
);
pub const UUID: Rule = Rule::new(
    uuid,
    Some("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
    "a uuid",
);

/// `session_entity_field` (seeds 000, 001).
pub const FIELD_NAME: Rule = Rule::new(
    field_name,
    Some("^[A-Za-z][A-Za-z0-9_]{0,127}$"),
    "1 to 128 letters, digits or _, starting with a letter",
);
/// entity and employee numbers as seed 001 writes them (its own rule, not
/// the 4- and 5-digit numbers of a login).
pub const RECORD_NUMBER: Rule = Rule::new(
    application_number,
    Some("^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"),
    "1 to 128 letters, digits, _ or -, starting with a letter or digit",
);
/// Seed 000's `session_entity_field_value`.
pub const FOUR_DIGITS: Rule = Rule::new(entity_number, Some("^[0-9]{4}$"), "4 digits");
pub const SESSION_STATUS: Rule = Rule::new(
    session_status,
    Some("^(pending|verified|failed|expired|revoked)$"),
    "pending, verified, failed, expired or revoked",
);
/// The seeds' ISO-8601 times; without `Z` a time is UTC all the same.
pub const SEED_TIME: Rule = Rule::new(
    seed_time,
    Some("^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,6})?Z?$"),
    "a UTC time like 2026-05-17T15:49:56Z (fraction of up to 6 digits and Z optional)",
);
/// `^.{0,500}$`: up to 500 characters, no line break.
pub const FAILURE_REASON: Rule = Rule::new(
    failure_reason,
    Some("^.{0,500}$"),
    "up to 500 characters on one line",
);
/// Seed 002's password: `^.{1,120}$`.
pub const SEED_PASSWORD: Rule = Rule::new(
    seed_password,
    Some("^.{1,120}$"),
    "1 to 120 characters on one line",
);

/// `^[A-Za-z][A-Za-z0-9_]{0,127}$`
pub fn field_name(value: &str) -> Result<(), String> {
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic());
    if first_ok && all_chars(value, 1, 128, |c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err("must be 1 to 128 letters, digits or _, starting with a letter".into())
    }
}

/// `^(pending|verified|failed|expired|revoked)$`
pub fn session_status(value: &str) -> Result<(), String> {
    match value {
        "pending" | "verified" | "failed" | "expired" | "revoked" => Ok(()),
        _ => Err("must be one of pending, verified, failed, expired, revoked".into()),
    }
}

/// `.` of a regex: any character but a line break.
fn one_line(c: char) -> bool {
    !matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// `^.{0,500}$`, without U+0000 (which the regex allows but no
/// PostgreSQL text can hold: refused here rather than failing later).
pub fn failure_reason(value: &str) -> Result<(), String> {
    if all_chars(value, 0, 500, |c| one_line(c) && c != '\0') {
        Ok(())
    } else {
        Err("must be at most 500 characters on one line, without NUL".into())
    }
}

/// `^.{1,120}$`
pub fn seed_password(value: &str) -> Result<(), String> {
    if all_chars(value, 1, 120, one_line) {
        Ok(())
    } else {
        Err("must be 1 to 120 characters on one line".into())
    }
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z?$`, and a real
/// date and time.
pub fn seed_time(value: &str) -> Result<(), String> {
    parse_seed_time(value)
        .map(drop)
        .ok_or_else(|| "must be a UTC time like 2026-05-17T15:49:56Z".into())
}

/// A seed time as UTC (microseconds at most, as both databases keep).
pub fn parse_seed_time(value: &str) -> Option<chrono::NaiveDateTime> {
    let bare = value.strip_suffix('Z').unwrap_or(value);
    let (whole, fraction) = match bare.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (bare, None),
    };
    let shape_ok = whole.len() == 19
        && whole.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        })
        && fraction
            .is_none_or(|f| (1..=6).contains(&f.len()) && f.chars().all(|c| c.is_ascii_digit()));
    // A leap second (`:60`) names no instant either database can store.
    if !shape_ok || &whole[17..19] > "59" {
        return None;
    }
    let time = chrono::NaiveDateTime::parse_from_str(whole, "%Y-%m-%dT%H:%M:%S").ok()?;
    let micros = match fraction {
        Some(f) => format!("{f:0<6}").parse::<i64>().ok()?,
        None => 0,
    };
    Some(time + chrono::Duration::microseconds(micros))
}

fn all_chars(value: &str, min: usize, max: usize, ok: impl Fn(char) -> bool) -> bool {
    let count = value.chars().count();
    (min..=max).contains(&count) && value.chars().all(ok)
}

/// `^[0-9]{4}$`
pub fn entity_number(value: &str) -> Result<(), String> {
    if all_chars(value, 4, 4, |c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be exactly 4 digits (e.g. \"1000\")".into())
    }
}

/// `^[0-9]{5}$`
pub fn employee_number(value: &str) -> Result<(), String> {
    if all_chars(value, 5, 5, |c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be exactly 5 digits (e.g. \"10000\")".into())
    }
}

/// `^[A-Za-z0-9 .,'_-]{1,120}$`
pub fn application_name(value: &str) -> Result<(), String> {
    if all_chars(value, 1, 120, |c| {
        c.is_ascii_alphanumeric() || " .,'_-".contains(c)
    }) {
        Ok(())
    } else {
        Err("must be 1 to 120 characters of letters, digits, space and . , ' _ -".into())
    }
}

/// `^(mobile|desktop|web)$`
pub fn application_type(value: &str) -> Result<(), String> {
    match value {
        "mobile" | "desktop" | "web" => Ok(()),
        _ => Err("must be one of mobile, desktop, web".into()),
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`
pub fn application_number(value: &str) -> Result<(), String> {
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok
        && all_chars(value, 1, 128, |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })
    {
        Ok(())
    } else {
        Err("must be 1 to 128 letters, digits, _ or -, starting with a letter or digit".into())
    }
}

/// A display name (RFC 8266 Nickname): 1 to 200 characters, no control or
/// invisible characters.
pub fn name(value: &str) -> Result<(), String> {
    crate::domain::display_name(value).map(drop)
}

/// A login name (RFC 8265 UsernameCaseMapped), at most 254 characters.
pub fn login_name(value: &str) -> Result<(), String> {
    crate::domain::LoginName::parse(value).map(drop)
}

/// A plain mailbox `local@domain.tld` that the mailer can address: it must
/// parse as a `lettre::Address`, the type mail is sent with (so `a,b@…` or
/// `a..b@…` is refused here, not stored and dead later). The length, the
/// dot in the domain and the absence of spaces and angle brackets are our
/// own rules besides. Deliverability is the mail relay's business.
pub fn email(value: &str) -> Result<(), String> {
    let well_formed = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if well_formed
        && all_chars(value, 3, 254, |c| {
            !c.is_whitespace() && !c.is_control() && c != '<' && c != '>'
        })
        && value.parse::<lettre::Address>().is_ok()
    {
        Ok(())
    } else {
        Err("must be an email address like name@example.com".into())
    }
}

/// `en` or `de`.
pub fn preferred_language(value: &str) -> Result<(), String> {
    match value {
        "en" | "de" => Ok(()),
        _ => Err("must be one of en, de".into()),
    }
}

/// 8 to 128 characters, no control characters (RFC 8265 OpaqueString).
pub fn password(value: &str) -> Result<(), String> {
    crate::domain::opaque_secret(value)?;
    let count = value.chars().count();
    if (8..=128).contains(&count) {
        Ok(())
    } else {
        Err("must be 8 to 128 characters long".into())
    }
}

/// A password as typed at login: any text up to 1024 characters (a wrong
/// one is a 401, not a validation error).
pub fn login_password(value: &str) -> Result<(), String> {
    let count = value.chars().count();
    if (1..=1024).contains(&count) {
        Ok(())
    } else {
        Err("must be 1 to 1024 characters long".into())
    }
}

/// A one-time code as typed: 1 to 64 characters (a wrong one is a 404).
pub fn otp_code(value: &str) -> Result<(), String> {
    let count = value.chars().count();
    if (1..=64).contains(&count) {
        Ok(())
    } else {
        Err("must be 1 to 64 characters long".into())
    }
}

/// Exactly four digits.
pub fn pin(value: &str) -> Result<(), String> {
    if all_chars(value, 4, 4, |c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be exactly 4 digits".into())
    }
}

/// `login`, `account`, `totp` or `recovery`.
pub fn otp_type(value: &str) -> Result<(), String> {
    match value {
        "login" | "account" | "totp" | "recovery" => Ok(()),
        _ => Err("must be one of login, account, totp, recovery".into()),
    }
}

/// Standard base64 (metadata values are bytes, sent as base64).
pub fn base64(value: &str) -> Result<(), String> {
    use base64::Engine;
    if value.len() > 8192 {
        return Err("must be at most 8192 characters".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map(drop)
        .map_err(|_| "must be base64".into())
}

/// A duration in seconds as protobuf's JSON writes it: `18000s`, `1.5s`.
pub fn duration(value: &str) -> Result<(), String> {
    parse_duration(value)
        .map(drop)
        .ok_or_else(|| "must be a duration like \"18000s\"".into())
}

pub fn parse_duration(value: &str) -> Option<chrono::Duration> {
    let seconds: f64 = value.strip_suffix('s')?.parse().ok()?;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return None;
    }
    Some(chrono::Duration::milliseconds((seconds * 1000.0) as i64))
}

/// An http(s) URL template for a sign-in link.
pub fn url_template(value: &str) -> Result<(), String> {
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() <= 2000
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err("must be an http(s) URL of at most 2000 characters".into())
    }
}

/// `^[0-9a-fA-F]{8}-…-[0-9a-fA-F]{12}$`
pub fn uuid(value: &str) -> Result<(), String> {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths_ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if lengths_ok {
        Ok(())
    } else {
        Err("must be a uuid like 4dc84733-ce2a-461b-8017-4e77b3f99a66".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_patterns() {
        assert!(entity_number("1000").is_ok());
        assert!(entity_number("100").is_err());
        assert!(entity_number("１０００").is_err());
        assert!(employee_number("10000").is_ok());
        assert!(employee_number("1000a").is_err());
        assert!(application_name("value_00").is_ok());
        assert!(application_name("My App, v2.0 - 'beta'").is_ok());
        assert!(application_name("").is_err());
        assert!(application_name(&"a".repeat(121)).is_err());
        assert!(application_name("app!").is_err());
        assert!(application_number("A-1_b").is_ok());
        assert!(application_number("-A").is_err());
        assert!(email("a@b.co").is_ok());
        assert!(email("a@b").is_err());
        assert!(email("a b@c.de").is_err());
        // What the mailer cannot address is refused.
        assert!(email("a,b@example.com").is_err());
        assert!(email("a..b@example.com").is_err());
        assert!(email(".a@example.com").is_err());
        // What is accepted, the mailer can send to.
        for good in [
            "ann@example.com",
            "a.b+tag@sub.example.co",
            "o'neil@example.ie",
        ] {
            assert!(email(good).is_ok(), "{good}");
            assert!(good.parse::<lettre::message::Mailbox>().is_ok(), "{good}");
        }
        assert!(uuid("4dc84733-ce2a-461b-8017-4e77b3f99a66").is_ok());
        assert!(uuid("4dc84733ce2a461b80174e77b3f99a66").is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
    }

    #[test]
    fn seed_times_at_their_edges() {
        for good in [
            "2026-05-17T15:49:56Z",
            "2026-05-17T15:49:56",
            "2026-05-17T15:49:56.1Z",
            "2026-05-17T15:49:56.123456",
        ] {
            assert!(seed_time(good).is_ok(), "{good}");
        }
        for bad in [
            "2026-05-17T15:49:56.1234567Z",
            "2026-05-17 15:49:56Z",
            "2026-05-17T15:49:56+02:00",
            "2026-13-17T15:49:56Z",
            "2026-02-30T15:49:56Z",
            "2026-05-17T15:49:56.Z",
            "2016-12-31T23:59:60Z",
            "",
        ] {
            assert!(seed_time(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_seed_time("2026-05-17T15:49:56.5Z")
                .map(|t| t.and_utc().timestamp_millis() % 1000),
            Some(500)
        );
        assert!(field_name("mobile_application_id").is_ok());
        assert!(field_name("_x").is_err());
        assert!(field_name(&format!("a{}", "b".repeat(127))).is_ok());
        assert!(field_name(&format!("a{}", "b".repeat(128))).is_err());
        assert!(failure_reason(&"x".repeat(500)).is_ok());
        assert!(failure_reason(&"x".repeat(501)).is_err());
        assert!(failure_reason("two\nlines").is_err());
        assert!(failure_reason("nul\0byte").is_err());
        assert!(seed_password("").is_err());
        assert!(seed_password(&"p".repeat(120)).is_ok());
        assert!(seed_password(&"p".repeat(121)).is_err());
    }
}

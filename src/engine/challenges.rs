//! Making codes: a login code for a session (mailed with an optional
//! sign-in link, or returned to a trusted caller), the resend cooldown, the
//! account code a verified user asks for before a sensitive action, and the
//! PIN that such a code protects.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Serialize;

use super::caller::Caller;
use super::factors::CodeCheck;
use super::login::{self, Secret};
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::applications;
use crate::db::challenges::{self, ACCOUNT, ChallengeRow, LOGIN};
use crate::db::sessions::SessionRow;
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::mailer::{MailContext, MailKind, OutgoingMail};
use crate::otp::generate_code;
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, Rules, to_utc};

pub fn require_email(user: &UserRow) -> Result<&str, ApiError> {
    user.email.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingEmail,
            "The user has no email address to send a code to; use TOTP instead.",
        )
    })
}

/// How a new login code reaches the user.
#[derive(Debug, Clone)]
pub enum CodeDelivery {
    /// Mailed, with an optional sign-in link made from a URL template
    /// (`{{.Code}}`, `{{.UserID}}`, `{{.LoginName}}`, `{{.SessionID}}`).
    Mail { link_template: Option<String> },
    /// Returned to the (trusted) caller only.
    Return,
}

/// Where a sign-in link may point: the emailed link carries the user's
/// code, so a link to anyone's host would hand that host the second
/// factor. Only the operator's origins (`LATCHKEY_LINK_ORIGINS`, default the
/// public URL's) are allowed; an admin token (a trusted backend) may set
/// any. The placeholders are filled with neutral values first, so that one
/// in the host (`https://{{.LoginName}}.example.net`) cannot pass.
pub fn ensure_link_allowed(
    settings: &AuthSettings,
    caller_is_admin: bool,
    template: &str,
) -> Result<(), ApiError> {
    if caller_is_admin {
        return Ok(());
    }
    let filled = template
        .replace("{{.Code}}", "000000")
        .replace("{{.UserID}}", "user")
        .replace("{{.LoginName}}", "name")
        .replace("{{.SessionID}}", "session");
    let allowed = url::Url::parse(&filled)
        .ok()
        .is_some_and(|link| settings.link_origins.contains(&link.origin()));
    if allowed {
        return Ok(());
    }
    let origins: Vec<String> = settings
        .link_origins
        .iter()
        .map(|o| o.ascii_serialization())
        .collect();
    Err(ApiError::invalid_field(
        "/challenges/otpEmail/sendCode/urlTemplate",
        format!(
            "urlTemplate must point at an allowed origin ({}); an operator adds origins with LATCHKEY_LINK_ORIGINS.",
            origins.join(", ")
        ),
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fills in everything but the code, which the mailer puts in when it
/// renders the mail (the link is stored in the clear until then).
fn fill_link(template: &str, user: &UserRow, session_id: &str) -> String {
    template
        .replace("{{.UserID}}", &user.id)
        .replace("{{.LoginName}}", &url_component(&user.login_name))
        .replace("{{.SessionID}}", session_id)
}

/// The session a login code is for, and its user.
#[derive(Debug, Clone, Copy)]
pub struct CodeFor<'a> {
    pub user: &'a UserRow,
    pub session: &'a SessionRow,
    /// The session was inserted by this same transaction: it has no code
    /// yet, so there is no cooldown to check and none to replace (one
    /// query fewer on every new session).
    pub new_session: bool,
}

impl Rules {
    /// A fresh challenge of `purpose` for the session, replacing the old
    /// one (`replace: false` when the caller knows there is none). Returns
    /// the code and its expiry.
    fn new_challenge(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        session_id: &str,
        purpose: &str,
        replace: bool,
        now: NaiveDateTime,
    ) -> Result<(String, NaiveDateTime), ApiError> {
        let code = generate_code(self.settings.otp_length);
        let id = crate::db::new_row_id();
        let expires_at = now + Duration::seconds(self.settings.otp_ttl_secs);
        let row = ChallengeRow {
            code_hmac: self.key.digest(&id, &code),
            id,
            user_id: user_id.to_owned(),
            session_id: Some(session_id.to_owned()),
            purpose: purpose.to_owned(),
            created_at: now,
            expires_at,
            attempts: 0,
            max_attempts: self.settings.otp_max_attempts,
            consumed_at: None,
            burned_at: None,
        };
        challenges::store(conn, &row, replace)?;
        Ok((code, expires_at))
    }

    /// [`Rules::send_login_code`] by mail, without a sign-in link.
    pub fn mail_login_code(
        &self,
        conn: &mut DbConnection,
        target: CodeFor<'_>,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<(String, NaiveDateTime), ApiError> {
        let delivery = CodeDelivery::Mail {
            link_template: None,
        };
        self.send_login_code(conn, target, &delivery, client, now)
    }

    /// Makes a login code for the session and, for [`CodeDelivery::Mail`],
    /// queues its mail, in the caller's transaction (the caller holds the
    /// session's row lock, and wakes the mailer after the commit). A second
    /// code sooner than the cooldown is refused. The session row is not
    /// written here: the caller's command changes it once (its sequence
    /// moves once per command).
    pub fn send_login_code(
        &self,
        conn: &mut DbConnection,
        CodeFor {
            user,
            session,
            new_session,
        }: CodeFor<'_>,
        delivery: &CodeDelivery,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<(String, NaiveDateTime), ApiError> {
        let email = match delivery {
            CodeDelivery::Mail { .. } => Some(require_email(user)?),
            CodeDelivery::Return => None,
        };
        let previous = if new_session {
            Vec::new()
        } else {
            challenges::find_all(conn, &session.id, &[LOGIN])?
        };
        // A cooldown of 0 is none: `now` was read before this request
        // waited for the session's lock, so a code made by the request ahead
        // of it can be a little younger than `now`.
        let cooldown = self.settings.otp_resend_cooldown_secs;
        if let Some(previous) = previous.first().filter(|_| cooldown > 0) {
            let cooldown_ends = previous.created_at + Duration::seconds(cooldown);
            if cooldown_ends > now {
                let seconds = (cooldown_ends - now).num_seconds().max(1) as u64;
                return Err(ApiError::new(
                    ErrorCode::OtpResendTooSoon,
                    format!("A code was sent moments ago; ask for a new one in {seconds} s."),
                )
                .with_retry_after(seconds));
            }
        }
        let (code, expires_at) = self.new_challenge(
            conn,
            &user.id,
            &session.id,
            LOGIN,
            !previous.is_empty(),
            now,
        )?;
        if let (Some(email), CodeDelivery::Mail { link_template }) = (email, delivery) {
            let application_name = match &session.application_id {
                Some(id) => applications::find(conn, id)?.map(|a| a.application_name),
                None => None,
            };
            let link = link_template
                .as_deref()
                .map(|template| fill_link(template, user, &session.id));
            let mail = OutgoingMail {
                kind: MailKind::LoginOtp,
                language: &user.preferred_language,
                recipient: email,
                context: MailContext {
                    display_name: user.display_name.clone(),
                    application_name,
                    expires_in_minutes: Some((self.settings.otp_ttl_secs + 59) / 60),
                    link,
                    event: None,
                },
                code: Some(&code),
            };
            self.mailer.enqueue(conn, mail, now)?;
        }
        audit::record(
            conn,
            AuditKind::OtpSent,
            Some(&user.id),
            Some(&session.id),
            client,
            None,
            now,
        )?;
        Ok((code, expires_at))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountOtp {
    pub otp: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /user/otp`: a verified session proves the password or PIN again
/// and gets an account code for a sensitive action. Failures count toward
/// the lockout like a login's.
pub async fn create_account_otp(
    core: &Core,
    caller: &Caller,
    secret: Secret,
    given: String,
    client: ClientInfo,
) -> Result<AccountOtp, ApiError> {
    let (user_id, session_id) = caller.verified_user()?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    core.check_rate_limit(client.ip).await?;
    let user = {
        let user_id = user_id.clone();
        core.db
            .run(move |conn| Ok::<_, ApiError>(users::find(conn, &user_id)?))
            .await?
            .ok_or_else(|| ApiError::token_invalid("The user of this token no longer exists."))?
    };
    let matched = login::check_secret(
        core,
        Some(&user),
        secret,
        given,
        &client,
        Some(&session_id),
        Some("account code"),
    )
    .await?;
    if !matched {
        let (what, pointer) = match secret {
            Secret::Pin => ("PIN", "/pin"),
            Secret::Password => ("password", "/password"),
        };
        return Err(ApiError::new(
            ErrorCode::CredentialsRefused,
            format!("The {what} is wrong."),
        )
        .at_pointer(pointer));
    }
    let rules = core.rules();
    let now = core.now();
    let (otp, expires_at) = core
        .db
        .write(move |conn| {
            // Session before user, as every other path locks them.
            super::lifecycle::lock_live_session(conn, &session_id, now)?;
            login::settle_success(conn, &user_id, &client, now)?;
            let issued = rules.new_challenge(conn, &user_id, &session_id, ACCOUNT, true, now)?;
            audit::record(
                conn,
                AuditKind::OtpCreated,
                Some(&user_id),
                Some(&session_id),
                &client,
                None,
                now,
            )?;
            Ok::<_, ApiError>(issued)
        })
        .await?;
    Ok(AccountOtp {
        otp,
        expires_at: to_utc(expires_at),
    })
}

/// A 4-digit PIN with at least three different digits that is not a run
/// (1234, 4321, …).
pub fn pin_weakness(pin: &str) -> Option<&'static str> {
    let digits: Vec<i32> = pin
        .bytes()
        .map(|b| i32::from(b) - i32::from(b'0'))
        .collect();
    let mut distinct = digits.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 3 {
        return Some("The PIN needs at least three different digits.");
    }
    let steps: Vec<i32> = digits.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == -1) {
        return Some("The PIN must not be a run of digits like 1234 or 4321.");
    }
    None
}

/// `PUT /user/pin`: a verified session sets the PIN, spending an account
/// code.
pub async fn set_pin(
    core: &Core,
    caller: &Caller,
    pin: String,
    code: String,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let (user_id, session_id) = caller.verified_user()?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    if let Some(why) = pin_weakness(&pin) {
        return Err(ApiError::new(ErrorCode::WeakPin, why).at_pointer("/pin"));
    }
    core.check_rate_limit(client.ip).await?;
    let hasher = core.hasher.clone();
    let pin_hash = core
        .blocking(move || hasher.hash(&pin))
        .await?
        .map_err(ApiError::internal)?;
    let rules = core.rules();
    let now = core.now();
    let check = core
        .db
        .write(move |conn| {
            super::lifecycle::lock_live_session(conn, &session_id, now)?;
            let check = rules.check_code(conn, &session_id, &[ACCOUNT], &code, &client, now)?;
            if let CodeCheck::Matched(_) = check {
                users::set_pin_hash(conn, &user_id, &pin_hash, now)?;
                audit::record(
                    conn,
                    AuditKind::PinSet,
                    Some(&user_id),
                    Some(&session_id),
                    &client,
                    None,
                    now,
                )?;
            }
            Ok::<_, ApiError>(check)
        })
        .await?;
    check.into_result().map(drop)
}

#[cfg(test)]
mod tests {
    use super::pin_weakness;

    #[test]
    fn weak_pins() {
        for weak in ["1111", "1122", "1212", "1234", "4321", "6789", "3210"] {
            assert!(pin_weakness(weak).is_some(), "{weak}");
        }
        for fine in ["1357", "2580", "1123", "9021"] {
            assert!(pin_weakness(fine).is_none(), "{fine}");
        }
    }
}

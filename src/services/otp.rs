//! Email and account one-time codes: issuing a login code (with its mail, in
//! the same transaction), VerifyOTP, account codes for sensitive actions,
//! and the PIN they protect. A failed check is committed before the error
//! is returned, so the attempt counter survives the failed request.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Serialize;

use super::audit::{self, AuditKind, ClientInfo};
use super::credentials::{self, Secret};
use super::sessions::{Caller, is_live};
use super::{Core, parse_id, to_utc, totp};
use crate::config::AuthSettings;
use crate::db::challenges::{self, ACCOUNT, ChallengeRow, LOGIN};
use crate::db::sessions::{self as session_rows, SessionChanges, SessionRow};
use crate::db::users::{self, UserRow};
use crate::db::{DbConnection, applications};
use crate::error::{ApiError, ErrorCode};
use crate::mailer::{MailContext, MailKind, Mailer, OutgoingMail};
use crate::otp::sealed::SecretBox;
use crate::otp::{OtpKey, generate_code, is_well_formed};

/// The kinds of one-time code VerifyOTP knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtpType {
    Login,
    Account,
    Totp,
    Recovery,
}

impl OtpType {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "login" => Some(Self::Login),
            "account" => Some(Self::Account),
            "totp" => Some(Self::Totp),
            "recovery" => Some(Self::Recovery),
            _ => None,
        }
    }

    fn purpose(self) -> Option<&'static str> {
        match self {
            Self::Login => Some(LOGIN),
            Self::Account => Some(ACCOUNT),
            Self::Totp | Self::Recovery => None,
        }
    }

    fn from_purpose(purpose: &str) -> Self {
        if purpose == ACCOUNT {
            Self::Account
        } else {
            Self::Login
        }
    }
}

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

/// What OTP work inside a blocking transaction needs (cheap to clone).
#[derive(Clone)]
pub struct OtpEngine {
    pub settings: AuthSettings,
    pub key: OtpKey,
    pub mailer: Arc<Mailer>,
    pub secret_box: SecretBox,
}

/// The state of a challenge at `now`.
#[derive(Debug, PartialEq, Eq)]
enum ChallengeState {
    Live,
    Consumed,
    Burned,
    Expired,
}

fn state(row: &ChallengeRow, now: NaiveDateTime) -> ChallengeState {
    if row.consumed_at.is_some() {
        ChallengeState::Consumed
    } else if row.burned_at.is_some() {
        ChallengeState::Burned
    } else if row.expires_at <= now {
        ChallengeState::Expired
    } else {
        ChallengeState::Live
    }
}

/// The result of checking a code, decided inside the transaction and
/// turned into an error only after the commit.
enum Check {
    Matched,
    Refused(ApiError),
}

impl OtpEngine {
    /// A fresh challenge of `purpose` for the session, replacing the old
    /// one. Returns the code and its expiry.
    fn new_challenge(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        session_id: &str,
        purpose: &str,
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
        challenges::replace(conn, &row)?;
        Ok((code, expires_at))
    }

    /// Makes a login code for the session and, for [`CodeDelivery::Mail`],
    /// queues its mail, in the caller's transaction (the caller holds the
    /// session's row lock). A second code sooner than the cooldown is refused.
    pub fn send_login_code(
        &self,
        conn: &mut DbConnection,
        user: &UserRow,
        session: &SessionRow,
        delivery: &CodeDelivery,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<(String, NaiveDateTime), ApiError> {
        let email = match delivery {
            CodeDelivery::Mail { .. } => Some(require_email(user)?),
            CodeDelivery::Return => None,
        };
        if let Some(previous) = challenges::find(conn, &session.id, LOGIN)? {
            let cooldown_ends =
                previous.created_at + Duration::seconds(self.settings.otp_resend_cooldown_secs);
            if cooldown_ends > now {
                let seconds = (cooldown_ends - now).num_seconds().max(1) as u64;
                return Err(ApiError::new(
                    ErrorCode::OtpResendTooSoon,
                    format!("A code was sent moments ago; ask for a new one in {seconds} s."),
                )
                .with_retry_after(seconds));
            }
        }
        let (code, expires_at) = self.new_challenge(conn, &user.id, &session.id, LOGIN, now)?;
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
        session_rows::update(conn, &session.id, &SessionChanges::default(), now)?;
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

    /// Checks `code` against the session's challenges of `purposes`:
    /// consumes the matching one, or counts a wrong try on every live one
    /// (burning those that reach their limit).
    fn check(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        code: &str,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<Check, ApiError> {
        if self
            .match_challenge(conn, session_id, purposes, code, client, now)?
            .is_some()
        {
            return Ok(Check::Matched);
        }
        let refusal = self.record_failures(conn, session_id, purposes, client, now)?;
        Ok(Check::Refused(refusal.unwrap_or_else(|| {
            ApiError::new(
                ErrorCode::OtpInvalid,
                "No code is waiting to be verified (none was sent).",
            )
        })))
    }

    /// The live challenge `code` matches, consumed; nothing is counted.
    pub(crate) fn match_challenge(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        code: &str,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<Option<ChallengeRow>, ApiError> {
        if !is_well_formed(code, self.settings.otp_length) {
            return Ok(None);
        }
        for purpose in purposes {
            let Some(challenge) = challenges::find(conn, session_id, purpose)? else {
                continue;
            };
            if state(&challenge, now) == ChallengeState::Live
                && self.key.matches(&challenge.id, code, &challenge.code_hmac)
                && challenges::consume(conn, &challenge.id, now)?
            {
                audit::record(
                    conn,
                    AuditKind::OtpVerified,
                    Some(&challenge.user_id),
                    Some(session_id),
                    client,
                    Some(&challenge.purpose),
                    now,
                )?;
                return Ok(Some(challenge));
            }
        }
        Ok(None)
    }

    /// After a miss: counts a wrong try on every live challenge (burning
    /// those that reach their limit) and says why the code was refused;
    /// `None` when the session has no challenge of `purposes` at all.
    pub(crate) fn record_failures(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<Option<ApiError>, ApiError> {
        let mut candidates = Vec::new();
        for purpose in purposes {
            if let Some(row) = challenges::find(conn, session_id, purpose)? {
                candidates.push(row);
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let live: Vec<&ChallengeRow> = candidates
            .iter()
            .filter(|c| state(c, now) == ChallengeState::Live)
            .collect();
        if !live.is_empty() {
            for challenge in &live {
                let burn = challenge.attempts + 1 >= challenge.max_attempts;
                challenges::record_failure(conn, &challenge.id, burn.then_some(now))?;
                let kind = if burn {
                    AuditKind::OtpBurned
                } else {
                    AuditKind::OtpFailed
                };
                audit::record(
                    conn,
                    kind,
                    Some(&challenge.user_id),
                    Some(session_id),
                    client,
                    Some(&challenge.purpose),
                    now,
                )?;
            }
            return Ok(Some(
                ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.").at_pointer("/otp"),
            ));
        }
        let refusal = if candidates
            .iter()
            .any(|c| state(c, now) == ChallengeState::Burned)
        {
            ApiError::new(
                ErrorCode::OtpAttemptsExceeded,
                "Too many wrong codes: this code no longer works; ask for a new one.",
            )
        } else if candidates
            .iter()
            .any(|c| state(c, now) == ChallengeState::Expired)
        {
            ApiError::new(
                ErrorCode::OtpExpired,
                "The code has expired; ask for a new one.",
            )
        } else {
            ApiError::new(
                ErrorCode::OtpInvalid,
                "No code is waiting to be verified (it was used, or none was sent).",
            )
        };
        Ok(Some(refusal))
    }

    /// The session's user, when a second factor is among `types`.
    fn second_factor_user(
        &self,
        conn: &mut DbConnection,
        session: &SessionRow,
        types: &[OtpType],
    ) -> Result<Option<UserRow>, ApiError> {
        if !types
            .iter()
            .any(|t| matches!(t, OtpType::Totp | OtpType::Recovery))
        {
            return Ok(None);
        }
        let user = users::find(conn, &session.user_id)?
            .ok_or_else(|| ApiError::unauthorized("The user of this session no longer exists."))?;
        Ok(Some(user))
    }

    /// Verifies `code` for `session` as any of `types`: the session's email
    /// and account codes first, then the user's authenticator and recovery
    /// codes. A match marks the session's factor; a miss is counted (code
    /// attempts, and lockout for the user's own factors) and returned as
    /// `Err` inside `Ok`, so the caller commits the counters.
    pub fn verify_in_tx(
        &self,
        conn: &mut DbConnection,
        session: &SessionRow,
        code: &str,
        types: &[OtpType],
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<Result<OtpType, ApiError>, ApiError> {
        let purposes: Vec<&'static str> = types.iter().filter_map(|t| t.purpose()).collect();
        if let Some(challenge) =
            self.match_challenge(conn, &session.id, &purposes, code, client, now)?
        {
            if challenge.purpose == LOGIN {
                let changes = SessionChanges {
                    otp_email_verified_at: Some(Some(now)),
                    ..SessionChanges::default()
                };
                session_rows::update(conn, &session.id, &changes, now)?;
            }
            return Ok(Ok(OtpType::from_purpose(&challenge.purpose)));
        }
        let mut second_factor_refused = false;
        let user = self.second_factor_user(conn, session, types)?;
        // A locked user's own factors are not tried at all (the lock covers
        // them like the password); a wrong email code still counts.
        let locked = user
            .as_ref()
            .and_then(|user| credentials::ensure_not_locked(user, now).err());
        if let (None, Some(user)) = (&locked, &user) {
            match totp::check_second_factor(
                self,
                conn,
                user,
                code,
                types,
                &totp::Attempt {
                    session_id: Some(&session.id),
                    client,
                    now,
                },
            )? {
                totp::SecondFactor::Matched(kind) => {
                    let changes = SessionChanges {
                        totp_verified_at: Some(Some(now)),
                        ..SessionChanges::default()
                    };
                    session_rows::update(conn, &session.id, &changes, now)?;
                    return Ok(Ok(kind));
                }
                totp::SecondFactor::Refused => {
                    credentials::second_factor_failed(
                        &self.settings,
                        conn,
                        &user.id,
                        Some(&session.id),
                        client,
                        now,
                    )?;
                    second_factor_refused = true;
                }
                totp::SecondFactor::Absent => {}
            }
        }
        let refusal = self.record_failures(conn, &session.id, &purposes, client, now)?;
        if let Some(locked) = locked {
            return Ok(Err(locked));
        }
        Ok(Err(match refusal {
            Some(refusal) if !second_factor_refused => refusal,
            _ if second_factor_refused => {
                ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.").at_pointer("/otp")
            }
            _ => ApiError::new(
                ErrorCode::OtpInvalid,
                "No code is waiting to be verified (none was sent, and no authenticator is set up).",
            ),
        }))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    pub valid: bool,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub otp_type: OtpType,
    pub session_id: String,
}

/// Which session a VerifyOTP works on: the caller's own, or one named by
/// `sessionId` that belongs to the same user (an admin may name any).
async fn target_session(
    core: &Core,
    caller: &Caller,
    session_id: Option<String>,
    known: Option<SessionRow>,
) -> Result<SessionRow, ApiError> {
    let wanted = match (session_id, caller) {
        (Some(raw), _) => parse_id(&raw, "session").map_err(|e| {
            ApiError::new(e.code(), "sessionId names no session.").at_pointer("/sessionId")
        })?,
        (None, Caller::User { session_id, .. }) => session_id.clone(),
        (None, Caller::Admin { .. }) => {
            return Err(ApiError::invalid_field(
                "/sessionId",
                "sessionId is required with an admin token.",
            ));
        }
    };
    let now = core.now();
    // The caller's own session was just read by authentication.
    let row = match known.filter(|row| row.id == wanted) {
        Some(row) => Some(row),
        None => {
            core.db
                .run({
                    let wanted = wanted.clone();
                    move |conn| Ok::<_, ApiError>(session_rows::find(conn, &wanted)?)
                })
                .await?
        }
    };
    match (row, caller) {
        (Some(row), Caller::User { user_id, .. }) if row.user_id != *user_id => Err(
            ApiError::not_found(format!("There is no session {wanted:?}.")),
        ),
        (Some(row), _) if !is_live(&row, now) => Err(ApiError::new(
            ErrorCode::SessionClosed,
            "The session is closed; start a new one.",
        )),
        (Some(row), _) => Ok(row),
        (None, _) => Err(ApiError::not_found(format!(
            "There is no session {wanted:?}."
        ))),
    }
}

/// `POST /user/otp/verify`.
pub async fn verify(
    core: &Core,
    caller: &Caller,
    code: String,
    types: Option<Vec<OtpType>>,
    session_id: Option<String>,
    client: ClientInfo,
    own_session: Option<SessionRow>,
) -> Result<VerifyResult, ApiError> {
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let session = target_session(core, caller, session_id, own_session).await?;
    let types = types.unwrap_or_else(|| {
        vec![
            OtpType::Login,
            OtpType::Account,
            OtpType::Totp,
            OtpType::Recovery,
        ]
    });
    let engine = core.otp_engine();
    let now = core.now();
    let session_id = session.id.clone();
    let outcome = core
        .db
        .write(move |conn| engine.verify_in_tx(conn, &session, &code, &types, &client, now))
        .await?;
    Ok(VerifyResult {
        valid: true,
        otp_type: outcome?,
        session_id,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountOtp {
    pub otp: String,
    pub expires_at: DateTime<Utc>,
}

fn user_caller(caller: &Caller) -> Result<(&str, &str), ApiError> {
    match caller {
        Caller::User {
            user_id,
            session_id,
        } => Ok((user_id, session_id)),
        Caller::Admin { .. } => Err(ApiError::forbidden(
            "This call acts for a signed-in user: use a session token.",
        )),
    }
}

/// `POST /user/otp`: proves the password or PIN again and returns an
/// account code for a sensitive action. Failures count toward lockout.
pub async fn create_account_otp(
    core: &Core,
    caller: &Caller,
    secret: Secret,
    given: String,
    client: ClientInfo,
) -> Result<AccountOtp, ApiError> {
    let (user_id, session_id) = user_caller(caller)?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let now = core.now();
    let user = core
        .db
        .run({
            let user_id = user_id.clone();
            move |conn| Ok::<_, ApiError>(users::find(conn, &user_id)?)
        })
        .await?
        .ok_or_else(|| ApiError::unauthorized("The user of this token no longer exists."))?;
    credentials::ensure_not_locked(&user, now)?;
    let ok = credentials::verify(core, Some(&user), secret, given).await?;
    let engine = core.otp_engine();
    let issued = core
        .db
        .write(move |conn| {
            if !ok {
                audit::record(
                    conn,
                    AuditKind::LoginFailed,
                    Some(&user.id),
                    Some(&session_id),
                    &client,
                    Some("account code"),
                    now,
                )?;
                credentials::register_failure(&engine.settings, conn, &user.id, &client, now)?;
                return Ok(None);
            }
            credentials::reset_failures(conn, &user)?;
            let issued = engine.new_challenge(conn, &user_id, &session_id, ACCOUNT, now)?;
            audit::record(
                conn,
                AuditKind::OtpCreated,
                Some(&user_id),
                Some(&session_id),
                &client,
                None,
                now,
            )?;
            Ok::<_, ApiError>(Some(issued))
        })
        .await?;
    let (otp, expires_at) = issued.ok_or_else(|| {
        let what = if secret == Secret::Pin {
            "PIN"
        } else {
            "password"
        };
        ApiError::new(
            ErrorCode::CredentialsRefused,
            format!("The {what} is wrong."),
        )
        .at_pointer(if secret == Secret::Pin {
            "/pin"
        } else {
            "/password"
        })
    })?;
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

/// `PUT /user/pin`: sets the PIN, spending an account code.
pub async fn set_pin(
    core: &Core,
    caller: &Caller,
    pin: String,
    code: String,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let (user_id, session_id) = user_caller(caller)?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    if let Some(why) = pin_weakness(&pin) {
        return Err(ApiError::new(ErrorCode::WeakPin, why).at_pointer("/pin"));
    }
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let hasher = core.hasher.clone();
    let pin_hash = core
        .blocking(move || hasher.hash(&pin))
        .await?
        .map_err(ApiError::internal)?;
    let engine = core.otp_engine();
    let now = core.now();
    let check = core
        .db
        .write(move |conn| {
            let check = engine.check(conn, &session_id, &[ACCOUNT], &code, &client, now)?;
            if let Check::Matched = check {
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
    match check {
        Check::Matched => Ok(()),
        Check::Refused(error) => Err(error),
    }
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

//! Checking a code: the session's emailed login code or account code, the
//! user's authenticator (RFC 6238 TOTP) and recovery codes. One path for
//! every face, run in the caller's transaction on the locked session and
//! user rows, and every miss counted there:
//!
//! - a code's own attempts move by conditional updates and burn it at
//!   `LATCHKEY_OTP_MAX_ATTEMPTS` (OWASP ASVS 2.7.x, 2.8.x);
//! - a wrong second factor (login code, authenticator or recovery code)
//!   also counts against the user's second-factor budget, which new
//!   sessions or password logins do not reset: at
//!   `LATCHKEY_LOCKOUT_THRESHOLD` failures in the window the user is locked
//!   (ASVS 2.2.1). Only a proven second factor forgets them;
//! - a locked user's codes are not tried at all.
//!
//! The check returns its refusal inside `Ok`, so the caller commits the
//! counts before answering with it.

use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use super::caller::Caller;
use super::lifecycle::{self, SecondFactor};
use super::login::{ensure_not_locked, lock_user};
use crate::db::DbConnection;
use crate::db::challenges::{self, ACCOUNT, ChallengeRow, LOGIN};
use crate::db::sessions::SessionRow;
use crate::db::totp::{self as devices, TotpDeviceRow};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::otp::{is_well_formed, totp};
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, Rules, parse_id};

/// The kinds of one-time code VerifyOTP knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtpType {
    /// The emailed login code of the session (a second factor).
    Login,
    /// An account code for a sensitive action (not a second factor).
    Account,
    /// An authenticator app code (a second factor).
    Totp,
    /// A recovery code in place of the authenticator (a second factor).
    Recovery,
}

impl OtpType {
    pub const ALL: [OtpType; 4] = [Self::Login, Self::Account, Self::Totp, Self::Recovery];

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

    /// What a match of this kind is audited as, and its detail.
    fn audit_event(self) -> (AuditKind, Option<&'static str>) {
        match self {
            Self::Login => (AuditKind::OtpVerified, Some(LOGIN)),
            Self::Account => (AuditKind::OtpVerified, Some(ACCOUNT)),
            Self::Totp => (AuditKind::OtpVerified, Some("totp")),
            Self::Recovery => (AuditKind::RecoveryCodeUsed, None),
        }
    }

    /// The session factor a match of this kind proves, if any.
    fn second_factor(self) -> Option<SecondFactor> {
        match self {
            Self::Login => Some(SecondFactor::OtpEmail),
            Self::Totp | Self::Recovery => Some(SecondFactor::Totp),
            Self::Account => None,
        }
    }
}

/// What checking a code found.
#[derive(Debug)]
pub enum CodeCheck {
    Matched(OtpType),
    /// Refused, with the error to answer once the counts are committed.
    Refused(ApiError),
}

impl CodeCheck {
    pub fn into_result(self) -> Result<OtpType, ApiError> {
        match self {
            Self::Matched(kind) => Ok(kind),
            Self::Refused(error) => Err(error),
        }
    }
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

fn code_invalid() -> ApiError {
    ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.").at_pointer("/otp")
}

fn unix_time(now: NaiveDateTime) -> u64 {
    u64::try_from(now.and_utc().timestamp()).unwrap_or(0)
}

/// Letters and digits that cannot be mistaken for each other.
pub(super) const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

pub(super) fn normalize_recovery_code(code: &str) -> String {
    code.trim().to_ascii_lowercase().replace([' ', '-'], "")
}

/// Where a code is checked: the locked session and its locked user, who
/// sent it, and when.
pub struct Attempt<'a> {
    pub session: &'a SessionRow,
    pub user: &'a UserRow,
    pub client: &'a ClientInfo,
    pub now: NaiveDateTime,
}

/// What the user's authenticator and recovery codes said of a code.
enum Authenticator {
    Matched(OtpType),
    /// The user has a factor of a requested kind, and the code fit none.
    Refused,
    /// The user has no factor of the requested kinds.
    Absent,
}

impl Rules {
    /// The time step of `code` for the device, if it matches and is newer
    /// than the last accepted one (no replay, RFC 6238 §5.2).
    pub(super) fn matching_step(
        &self,
        device: &TotpDeviceRow,
        code: &str,
        now: NaiveDateTime,
    ) -> Result<Option<i64>, ApiError> {
        let secret = self
            .secret_box
            .open(
                &device.user_id,
                &device.secret_nonce,
                &device.secret_ciphertext,
            )
            .map_err(|e| ApiError::internal(format!("TOTP secret: {e}")))?;
        let generator =
            totp::checker(&secret, self.settings.totp_skew_steps).map_err(ApiError::internal)?;
        let step = totp::matching_step(&generator, code, unix_time(now))
            .and_then(|s| i64::try_from(s).ok());
        Ok(step.filter(|s| device.last_used_step.is_none_or(|last| *s > last)))
    }

    /// The session's challenges of `purposes`.
    fn challenges(
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
    ) -> Result<Vec<ChallengeRow>, ApiError> {
        Ok(challenges::find_all(conn, session_id, purposes)?)
    }

    /// The live challenge of `purposes` that `code` matches, consumed (once:
    /// a conditional update), with its user; nothing is counted, nothing
    /// audited (the caller records [`OtpType::audit_event`]). The caller
    /// holds the session's row lock.
    fn match_challenge(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        code: &str,
        now: NaiveDateTime,
    ) -> Result<Option<(OtpType, String)>, ApiError> {
        if !is_well_formed(code, self.settings.otp_length) {
            return Ok(None);
        }
        for challenge in Self::challenges(conn, session_id, purposes)? {
            if state(&challenge, now) == ChallengeState::Live
                && self.key.matches(&challenge.id, code, &challenge.code_hmac)
                && challenges::consume(conn, &challenge.id, now)?
            {
                let kind = OtpType::from_purpose(&challenge.purpose);
                return Ok(Some((kind, challenge.user_id)));
            }
        }
        Ok(None)
    }

    /// After a miss: counts one attempt on every live challenge of
    /// `purposes` (burning those that reach their limit) and says why the
    /// code was refused, and whether a live login code was missed (a wrong
    /// second factor).
    fn count_challenge_miss(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<(ApiError, bool), ApiError> {
        let candidates = Self::challenges(conn, session_id, purposes)?;
        let live: Vec<&ChallengeRow> = candidates
            .iter()
            .filter(|c| state(c, now) == ChallengeState::Live)
            .collect();
        if !live.is_empty() {
            for challenge in &live {
                let burned = challenges::record_failure(conn, &challenge.id, now)?;
                let kind = if burned {
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
            let missed_login = live.iter().any(|c| c.purpose == LOGIN);
            return Ok((code_invalid(), missed_login));
        }
        let refusal = if candidates.is_empty() {
            ApiError::new(
                ErrorCode::OtpInvalid,
                "No code is waiting to be verified (none was sent).",
            )
        } else if candidates
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
        Ok((refusal, false))
    }

    /// Checks a code that is only spent, not a second factor (the account
    /// code of `PUT /user/pin`): a match is consumed, a miss counted.
    pub(super) fn check_code(
        &self,
        conn: &mut DbConnection,
        session_id: &str,
        purposes: &[&str],
        code: &str,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<CodeCheck, ApiError> {
        if let Some((kind, user_id)) =
            self.match_challenge(conn, session_id, purposes, code, now)?
        {
            let (event, detail) = kind.audit_event();
            audit::record(
                conn,
                event,
                Some(&user_id),
                Some(session_id),
                client,
                detail,
                now,
            )?;
            return Ok(CodeCheck::Matched(kind));
        }
        let (refusal, _) = self.count_challenge_miss(conn, session_id, purposes, client, now)?;
        Ok(CodeCheck::Refused(refusal))
    }

    /// Checks `code` as the user's TOTP code and/or a recovery code, in the
    /// caller's transaction; a match is recorded (its step, or the code
    /// spent), and audited by the caller.
    fn check_authenticator(
        &self,
        conn: &mut DbConnection,
        attempt: &Attempt<'_>,
        code: &str,
        types: &[OtpType],
    ) -> Result<Authenticator, ApiError> {
        let &Attempt { user, now, .. } = attempt;
        let mut had_factor = false;
        let device = if types.contains(&OtpType::Totp) {
            devices::find_for_update(conn, &user.id)?.filter(|d| d.confirmed_at.is_some())
        } else {
            None
        };
        if let Some(device) = device {
            had_factor = true;
            if let Some(step) = self.matching_step(&device, code, now)?
                && devices::accept_step(conn, &user.id, step)?
            {
                return Ok(Authenticator::Matched(OtpType::Totp));
            }
        }
        if types.contains(&OtpType::Recovery) {
            let unused = devices::unused_recovery_codes(conn, &user.id)?;
            had_factor |= !unused.is_empty();
            let normalized = normalize_recovery_code(code);
            for row in unused {
                if self.key.matches(&user.id, &normalized, &row.code_hmac)
                    && devices::use_recovery_code(conn, &row.id, now)?
                {
                    return Ok(Authenticator::Matched(OtpType::Recovery));
                }
            }
        }
        Ok(if had_factor {
            Authenticator::Refused
        } else {
            Authenticator::Absent
        })
    }

    /// Counts a wrong second factor against the user's budget, on the
    /// locked user row; locks the user at the threshold.
    pub(super) fn second_factor_failed(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        session_id: Option<&str>,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> Result<(), ApiError> {
        let user = lock_user(conn, user_id)?;
        let window = Duration::seconds(self.settings.lockout_window_secs);
        let (counted, since) = match user.failed_second_factors_since {
            Some(since) if now - since < window => (user.failed_second_factors, since),
            _ => (0, now),
        };
        if counted + 1 >= self.settings.lockout_threshold {
            let until = now + Duration::seconds(self.settings.lockout_secs);
            users::set_second_factor_failures(conn, user_id, 0, None, Some(until))?;
            audit::record(
                conn,
                AuditKind::UserLocked,
                Some(user_id),
                session_id,
                client,
                Some("second factor"),
                now,
            )?;
        } else {
            users::set_second_factor_failures(
                conn,
                user_id,
                counted + 1,
                Some(since),
                user.locked_until,
            )?;
        }
        Ok(())
    }

    /// The one check of a code for a session, as any of `types`: the
    /// session's email and account codes first, then the user's
    /// authenticator and recovery codes. The caller holds the locks of
    /// `session` (live) and `user` (its owner). A second factor that matches
    /// proves the session's second factor (it becomes verified) and forgets
    /// the user's second-factor failures; a miss is counted as the module
    /// says and returned inside `Ok`.
    pub fn verify_code(
        &self,
        conn: &mut DbConnection,
        attempt: &Attempt<'_>,
        code: &str,
        types: &[OtpType],
    ) -> Result<CodeCheck, ApiError> {
        let &Attempt {
            session,
            user,
            client,
            now,
        } = attempt;
        if let Err(locked) = ensure_not_locked(user, now) {
            return Ok(CodeCheck::Refused(locked));
        }
        let purposes: Vec<&'static str> = types.iter().filter_map(|t| t.purpose()).collect();
        // Every kind is tried before any miss is counted: a right
        // authenticator code costs the waiting email code no attempt.
        let mut matched = self
            .match_challenge(conn, &session.id, &purposes, code, now)?
            .map(|(kind, _)| kind);
        let mut authenticator = Authenticator::Absent;
        if matched.is_none() {
            authenticator = self.check_authenticator(conn, attempt, code, types)?;
            if let Authenticator::Matched(kind) = authenticator {
                matched = Some(kind);
            }
        }
        if matched.is_none() {
            let (refusal, missed_login) = if purposes.is_empty() {
                (code_invalid(), false)
            } else {
                self.count_challenge_miss(conn, &session.id, &purposes, client, now)?
            };
            let refusal = match authenticator {
                Authenticator::Refused => {
                    let detail = if types.contains(&OtpType::Totp) {
                        "totp"
                    } else {
                        "recovery"
                    };
                    audit::record(
                        conn,
                        AuditKind::OtpFailed,
                        Some(&user.id),
                        Some(&session.id),
                        client,
                        Some(detail),
                        now,
                    )?;
                    code_invalid()
                }
                _ if purposes.is_empty() => ApiError::new(
                    ErrorCode::OtpInvalid,
                    "No code is waiting to be verified (no authenticator is set up).",
                ),
                _ => refusal,
            };
            // One wrong second factor per request, whichever kinds missed.
            if missed_login || matches!(authenticator, Authenticator::Refused) {
                self.second_factor_failed(conn, &user.id, Some(&session.id), client, now)?;
            }
            return Ok(CodeCheck::Refused(refusal));
        }
        let Some(kind) = matched else {
            return Ok(CodeCheck::Refused(code_invalid()));
        };
        let (event, detail) = kind.audit_event();
        let matched_event = audit::Event {
            kind: event,
            user_id: Some(&user.id),
            session_id: Some(&session.id),
            detail,
        };
        let mut newly_verified = false;
        if let Some(factor) = kind.second_factor() {
            newly_verified = lifecycle::second_factor_proven(conn, session, factor, now)?;
            if user.failed_second_factors > 0 || user.failed_second_factors_since.is_some() {
                users::set_second_factor_failures(conn, &user.id, 0, None, user.locked_until)?;
            }
        }
        // The match and the session's verification: one statement.
        let verified_event = audit::Event {
            kind: AuditKind::SessionVerified,
            detail: None,
            ..matched_event
        };
        let events = [matched_event, verified_event];
        let events = if newly_verified {
            &events[..]
        } else {
            &events[..1]
        };
        audit::record_all(conn, events, client, now)?;
        Ok(CodeCheck::Matched(kind))
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

/// `POST /user/otp/verify` (VerifyOTP): checks a code for the caller's own
/// session, or, for an admin or a verified session, the session named by
/// `session_id` (of the same user, for a session token). Every type is
/// tried when `types` is `None`.
pub async fn verify(
    core: &Core,
    caller: &Caller,
    code: String,
    types: Option<Vec<OtpType>>,
    session_id: Option<String>,
    client: ClientInfo,
) -> Result<VerifyResult, ApiError> {
    core.check_rate_limit(client.ip).await?;
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
    let types = types.unwrap_or_else(|| OtpType::ALL.to_vec());
    let rules = core.rules();
    let now = core.now();
    let caller = caller.clone();
    let session_id = wanted.clone();
    let check = core
        .db
        .write(move |conn| {
            let (session, user) =
                lifecycle::visible_live_session_and_user(conn, &caller, &wanted, now)?;
            let attempt = Attempt {
                session: &session,
                user: &user,
                client: &client,
                now,
            };
            rules.verify_code(conn, &attempt, &code, &types)
        })
        .await?;
    let otp_type = check.into_result()?;
    Ok(VerifyResult {
        valid: true,
        otp_type,
        session_id,
    })
}

//! Authenticator apps (TOTP) and recovery codes: enrolment, confirmation,
//! removal, checking with skew and without replay, and the security notices
//! each change mails to the user.

use chrono::NaiveDateTime;
use rand::RngExt;
use serde::Serialize;
use uuid::Uuid;

use super::audit::{self, AuditKind, ClientInfo};
use super::credentials;
use super::otp::{OtpEngine, OtpType};
use super::sessions::{Caller, VERIFIED, effective_status};
use super::{Core, parse_id};
use crate::db::DbConnection;
use crate::db::sessions as session_rows;
use crate::db::totp::{self as rows, RecoveryCodeRow, TotpDeviceRow};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::mailer::{MailContext, MailKind, OutgoingMail};
use crate::otp::totp;

pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TotpEnrollment {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    pub period: u64,
    pub digits: u8,
    pub algorithm: String,
    /// The Key Uri Format (`otpauth://totp/Issuer:account?secret=…&issuer=Issuer`).
    pub otpauth_uri: String,
    /// A QR code of the URI, as base64 PNG.
    pub qr_png: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown once; each works once.
    pub codes: Vec<String>,
}

fn unix_time(now: NaiveDateTime) -> u64 {
    u64::try_from(now.and_utc().timestamp()).unwrap_or(0)
}

/// The user and session of a caller whose session is verified: changing
/// the second factor needs one.
async fn verified_caller(core: &Core, caller: &Caller) -> Result<(String, String), ApiError> {
    let Caller::User {
        user_id,
        session_id,
    } = caller
    else {
        return Err(ApiError::forbidden(
            "This call acts for a signed-in user: use a session token.",
        ));
    };
    let now = core.now();
    let id = session_id.clone();
    let session = core
        .db
        .run(move |conn| Ok::<_, ApiError>(session_rows::find(conn, &id)?))
        .await?;
    match session {
        Some(row) if effective_status(&row, now) == VERIFIED => {
            Ok((user_id.clone(), session_id.clone()))
        }
        _ => Err(ApiError::forbidden(
            "This needs a verified session: confirm the login code (or authenticator) first.",
        )),
    }
}

/// A change to the user's second factors: audited, and mailed to the user
/// as a security notice if they have an email (in the caller's transaction).
fn record_change(
    engine: &OtpEngine,
    conn: &mut DbConnection,
    user: &UserRow,
    kind: AuditKind,
    session_id: Option<&str>,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    audit::record(conn, kind, Some(&user.id), session_id, client, None, now)?;
    let Some(email) = &user.email else {
        return Ok(());
    };
    let event = match kind {
        AuditKind::TotpConfirmed => "totp_confirmed",
        AuditKind::TotpRemoved => "totp_removed",
        AuditKind::RecoveryCodesCreated => "recovery_codes",
        _ => return Ok(()),
    };
    let mail = OutgoingMail {
        kind: MailKind::SecurityNotice,
        language: &user.preferred_language,
        recipient: email,
        context: MailContext {
            display_name: user.display_name.clone(),
            event: Some(event.to_owned()),
            ..MailContext::default()
        },
        code: None,
    };
    engine.mailer.enqueue(conn, mail, now)?;
    Ok(())
}

fn load_user(conn: &mut DbConnection, user_id: &str) -> Result<UserRow, ApiError> {
    users::find(conn, user_id)?
        .ok_or_else(|| ApiError::not_found(format!("There is no user with id {user_id:?}.")))
}

/// `POST /user/devices/totp`: a new (unconfirmed) authenticator secret.
pub async fn enroll(
    core: &Core,
    caller: &Caller,
    client: ClientInfo,
) -> Result<TotpEnrollment, ApiError> {
    let (user_id, session_id) = verified_caller(core, caller).await?;
    let engine = core.otp_engine();
    let now = core.now();
    let secret = totp::generate_secret();
    let sealed_secret = secret.clone();
    let user = core
        .db
        .write(move |conn| {
            let user = load_user(conn, &user_id)?;
            if rows::find(conn, &user_id)?.is_some_and(|d| d.confirmed_at.is_some()) {
                return Err(ApiError::conflict(
                    "An authenticator is already confirmed; remove it before enrolling another.",
                ));
            }
            let (nonce, ciphertext) = engine
                .secret_box
                .seal(&user_id, &sealed_secret)
                .map_err(|e| ApiError::internal(format!("TOTP secret: {e}")))?;
            let row = TotpDeviceRow {
                user_id: user_id.clone(),
                secret_nonce: nonce,
                secret_ciphertext: ciphertext,
                confirmed_at: None,
                last_used_step: None,
                created_at: now,
            };
            rows::replace(conn, &row)?;
            audit::record(
                conn,
                AuditKind::TotpEnrolled,
                Some(&user_id),
                Some(&session_id),
                &client,
                None,
                now,
            )?;
            Ok(user)
        })
        .await?;
    let auth = &core.settings.auth;
    let generator = totp::build(
        &secret,
        &auth.totp_issuer,
        &user.login_name,
        auth.totp_skew_steps,
    )
    .map_err(ApiError::internal)?;
    let otpauth_uri = generator
        .to_url()
        .map_err(|e| ApiError::internal(format!("otpauth URI: {e}")))?;
    let qr_png = core
        .blocking(move || generator.to_qr_base64())
        .await?
        .map_err(|e| ApiError::internal(format!("QR code: {e}")))?;
    Ok(TotpEnrollment {
        secret: totp::base32(&secret),
        period: totp::PERIOD,
        digits: totp::DIGITS,
        algorithm: "SHA1".to_owned(),
        otpauth_uri,
        qr_png,
    })
}

/// The time step of `code` for the user's device, if it matches and is
/// newer than the last accepted one. `confirmed` selects which devices count.
fn matching_step(
    engine: &OtpEngine,
    device: &TotpDeviceRow,
    login_name: &str,
    code: &str,
    now: NaiveDateTime,
) -> Result<Option<i64>, ApiError> {
    let secret = engine
        .secret_box
        .open(
            &device.user_id,
            &device.secret_nonce,
            &device.secret_ciphertext,
        )
        .map_err(|e| ApiError::internal(format!("TOTP secret: {e}")))?;
    let generator = totp::build(
        &secret,
        &engine.settings.totp_issuer,
        login_name,
        engine.settings.totp_skew_steps,
    )
    .map_err(ApiError::internal)?;
    let step =
        totp::matching_step(&generator, code, unix_time(now)).and_then(|s| i64::try_from(s).ok());
    // No replay: the same code, or one of an older step, is refused even
    // inside its window.
    Ok(step.filter(|s| device.last_used_step.is_none_or(|last| *s > last)))
}

/// `POST /user/devices/totp/confirm`: the first code from the app confirms it.
pub async fn confirm(
    core: &Core,
    caller: &Caller,
    code: String,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let Caller::User {
        user_id,
        session_id,
    } = caller
    else {
        return Err(ApiError::forbidden(
            "This call acts for a signed-in user: use a session token.",
        ));
    };
    let (user_id, session_id) = (user_id.clone(), session_id.clone());
    core.rate_limiter
        .check(client.ip.as_deref(), core.clock.now())?;
    let engine = core.otp_engine();
    let now = core.now();
    let outcome = core
        .db
        .write(move |conn| {
            let user = load_user(conn, &user_id)?;
            credentials::ensure_not_locked(&user, now)?;
            let device = rows::find_for_update(conn, &user_id)?.ok_or_else(|| {
                ApiError::not_found(
                    "No authenticator is being enrolled: POST /user/devices/totp first.",
                )
            })?;
            if device.confirmed_at.is_some() {
                return Err(ApiError::conflict(
                    "The authenticator is already confirmed.",
                ));
            }
            match matching_step(&engine, &device, &user.login_name, &code, now)? {
                Some(step) => {
                    rows::confirm(conn, &user_id, step, now)?;
                    record_change(
                        &engine,
                        conn,
                        &user,
                        AuditKind::TotpConfirmed,
                        Some(&session_id),
                        &client,
                        now,
                    )?;
                    Ok(None)
                }
                None => {
                    credentials::second_factor_failed(
                        &engine.settings,
                        conn,
                        &user_id,
                        Some(&session_id),
                        &client,
                        now,
                    )?;
                    Ok(Some(
                        ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.")
                            .at_pointer("/otp"),
                    ))
                }
            }
        })
        .await?;
    core.mailer.wake();
    outcome.map_or(Ok(()), Err)
}

/// Removes the user's authenticator (`DELETE /user/devices/totp` with a
/// verified session, or `DELETE /admin/users/{id}/totp`).
pub async fn remove(
    core: &Core,
    caller: &Caller,
    raw_user_id: Option<&str>,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let (user_id, session_id) = match (caller, raw_user_id) {
        (Caller::Admin { .. }, Some(raw)) => (parse_id(raw, "user")?, None),
        _ => {
            let (user_id, session_id) = verified_caller(core, caller).await?;
            (user_id, Some(session_id))
        }
    };
    let engine = core.otp_engine();
    let now = core.now();
    core.db
        .write(move |conn| {
            let user = load_user(conn, &user_id)?;
            if rows::delete(conn, &user_id)? == 0 {
                return Err(ApiError::not_found("The user has no authenticator."));
            }
            record_change(
                &engine,
                conn,
                &user,
                AuditKind::TotpRemoved,
                session_id.as_deref(),
                &client,
                now,
            )?;
            Ok::<_, ApiError>(())
        })
        .await?;
    core.mailer.wake();
    Ok(())
}

/// Letters and digits that cannot be mistaken for each other.
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

fn recovery_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(11);
    for i in 0..10 {
        if i == 5 {
            code.push('-');
        }
        code.push(RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())] as char);
    }
    code
}

fn normalize_recovery_code(code: &str) -> String {
    code.trim().to_ascii_lowercase().replace([' ', '-'], "")
}

/// `POST /user/recovery-codes`: a new set of single-use codes, shown once.
pub async fn generate_recovery_codes(
    core: &Core,
    caller: &Caller,
    client: ClientInfo,
) -> Result<RecoveryCodes, ApiError> {
    let (user_id, session_id) = verified_caller(core, caller).await?;
    let engine = core.otp_engine();
    let now = core.now();
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
    let stored: Vec<RecoveryCodeRow> = codes
        .iter()
        .map(|code| RecoveryCodeRow {
            id: Uuid::new_v4().to_string(),
            user_id: user_id.clone(),
            code_hmac: engine.key.digest(&user_id, &normalize_recovery_code(code)),
            used_at: None,
            created_at: now,
        })
        .collect();
    core.db
        .write(move |conn| {
            let user = load_user(conn, &user_id)?;
            rows::replace_recovery_codes(conn, &user_id, &stored)?;
            record_change(
                &engine,
                conn,
                &user,
                AuditKind::RecoveryCodesCreated,
                Some(&session_id),
                &client,
                now,
            )?;
            Ok::<_, ApiError>(())
        })
        .await?;
    core.mailer.wake();
    Ok(RecoveryCodes { codes })
}

/// What checking a code as a second factor found.
pub enum SecondFactor {
    Matched(OtpType),
    /// The user has a factor of a requested type, and the code fit none.
    Refused,
    /// The user has no factor of the requested types.
    Absent,
}

/// Where a code check happens, for the audit log.
pub struct Attempt<'a> {
    pub session_id: Option<&'a str>,
    pub client: &'a ClientInfo,
    pub now: NaiveDateTime,
}

/// Checks `code` as a TOTP code and/or a recovery code of the user, in the
/// caller's transaction; a match is recorded (step, or the code spent).
pub fn check_second_factor(
    engine: &OtpEngine,
    conn: &mut DbConnection,
    user: &UserRow,
    code: &str,
    types: &[OtpType],
    attempt: &Attempt<'_>,
) -> Result<SecondFactor, ApiError> {
    let Attempt {
        session_id,
        client,
        now,
    } = *attempt;
    let mut had_factor = false;
    let device = if types.contains(&OtpType::Totp) {
        rows::find_for_update(conn, &user.id)?.filter(|d| d.confirmed_at.is_some())
    } else {
        None
    };
    if let Some(device) = device {
        had_factor = true;
        if let Some(step) = matching_step(engine, &device, &user.login_name, code, now)?
            && rows::accept_step(conn, &user.id, step)?
        {
            audit::record(
                conn,
                AuditKind::OtpVerified,
                Some(&user.id),
                session_id,
                client,
                Some("totp"),
                now,
            )?;
            return Ok(SecondFactor::Matched(OtpType::Totp));
        }
    }
    if types.contains(&OtpType::Recovery) {
        let unused = rows::unused_recovery_codes(conn, &user.id)?;
        had_factor |= !unused.is_empty();
        let normalized = normalize_recovery_code(code);
        for row in unused {
            if engine.key.matches(&user.id, &normalized, &row.code_hmac)
                && rows::use_recovery_code(conn, &row.id, now)?
            {
                audit::record(
                    conn,
                    AuditKind::RecoveryCodeUsed,
                    Some(&user.id),
                    session_id,
                    client,
                    None,
                    now,
                )?;
                return Ok(SecondFactor::Matched(OtpType::Recovery));
            }
        }
    }
    Ok(if had_factor {
        SecondFactor::Refused
    } else {
        SecondFactor::Absent
    })
}

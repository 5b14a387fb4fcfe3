//! Enrolling an authenticator app (RFC 6238 TOTP), confirming it, removing
//! it, and recovery codes; each change is audited and mailed to the user as
//! a security notice. All of it needs a verified session (or, for removal,
//! an admin). Checking their codes is [`super::factors`]'s.

use chrono::NaiveDateTime;
use rand::RngExt;
use serde::Serialize;
use uuid::Uuid;

use super::caller::Caller;
use super::factors::{RECOVERY_ALPHABET, normalize_recovery_code};
use super::login::{ensure_not_locked, lock_user};
use crate::db::DbConnection;
use crate::db::totp::{self as rows, RecoveryCodeRow, TotpDeviceRow};
use crate::db::users::UserRow;
use crate::error::{ApiError, ErrorCode};
use crate::mailer::{MailContext, MailKind, OutgoingMail};
use crate::otp::totp;
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, Rules, parse_id};

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

impl Rules {
    /// A change to the user's second factors: audited, and mailed to the
    /// user as a security notice if they have an email (in the caller's
    /// transaction).
    fn record_change(
        &self,
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
        self.mailer.enqueue(conn, mail, now)?;
        Ok(())
    }
}

/// `POST /user/devices/totp`: a new (unconfirmed) authenticator secret.
pub async fn enroll(
    core: &Core,
    caller: &Caller,
    client: ClientInfo,
) -> Result<TotpEnrollment, ApiError> {
    let (user_id, session_id) = caller.verified_user()?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    let rules = core.rules();
    let now = core.now();
    let secret = totp::generate_secret();
    let sealed_secret = secret.clone();
    let user = core
        .db
        .write(move |conn| {
            // The user row first, as the code checks lock it.
            let user = lock_user(conn, &user_id)?;
            if rows::find(conn, &user_id)?.is_some_and(|d| d.confirmed_at.is_some()) {
                return Err(ApiError::conflict(
                    "An authenticator is already confirmed; remove it before enrolling another.",
                ));
            }
            let (nonce, ciphertext) = rules
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
    let otpauth_uri = totp::key_uri(&secret, &core.settings.auth.totp_issuer, &user.login_name);
    let qr_source = otpauth_uri.clone();
    let qr_png = core
        .blocking(move || totp::qr_png_base64(&qr_source))
        .await?
        .map_err(ApiError::internal)?;
    Ok(TotpEnrollment {
        secret: totp::base32(&secret),
        period: totp::PERIOD,
        digits: totp::DIGITS,
        algorithm: "SHA1".to_owned(),
        otpauth_uri,
        qr_png,
    })
}

/// `POST /user/devices/totp/confirm`: the first code from the app confirms
/// it. A wrong code counts against the user's second-factor budget.
pub async fn confirm(
    core: &Core,
    caller: &Caller,
    code: String,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let (user_id, session_id) = caller.verified_user()?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    core.check_rate_limit(client.ip).await?;
    let rules = core.rules();
    let now = core.now();
    let outcome = core
        .db
        .write(move |conn| {
            let user = lock_user(conn, &user_id)?;
            ensure_not_locked(&user, now)?;
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
            match rules.matching_step(&device, &code, now)? {
                Some(step) => {
                    rows::confirm(conn, &user_id, step, now)?;
                    rules.record_change(
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
                    audit::record(
                        conn,
                        AuditKind::OtpFailed,
                        Some(&user_id),
                        Some(&session_id),
                        &client,
                        Some("totp"),
                        now,
                    )?;
                    rules.second_factor_failed(conn, &user_id, Some(&session_id), &client, now)?;
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
            let (user_id, session_id) = caller.verified_user()?;
            (user_id.to_owned(), Some(session_id.to_owned()))
        }
    };
    let rules = core.rules();
    let now = core.now();
    core.db
        .write(move |conn| {
            let user = lock_user(conn, &user_id)?;
            if rows::delete(conn, &user_id)? == 0 {
                return Err(ApiError::not_found("The user has no authenticator."));
            }
            rules.record_change(
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

/// `POST /user/recovery-codes`: a new set of single-use codes, shown once.
pub async fn generate_recovery_codes(
    core: &Core,
    caller: &Caller,
    client: ClientInfo,
) -> Result<RecoveryCodes, ApiError> {
    let (user_id, session_id) = caller.verified_user()?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    let rules = core.rules();
    let now = core.now();
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
    let stored: Vec<RecoveryCodeRow> = codes
        .iter()
        .map(|code| RecoveryCodeRow {
            id: Uuid::new_v4().to_string(),
            user_id: user_id.clone(),
            code_hmac: rules.key.digest(&user_id, &normalize_recovery_code(code)),
            used_at: None,
            created_at: now,
        })
        .collect();
    core.db
        .write(move |conn| {
            let user = lock_user(conn, &user_id)?;
            rows::replace_recovery_codes(conn, &user_id, &stored)?;
            rules.record_change(
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

//! Password and PIN checks with lockout: failures are counted per user in a
//! window; reaching the threshold locks the user's password checks for a
//! while, so even the right password is refused until the lock ends.

use chrono::{Duration, NaiveDateTime};

use super::Core;
use super::audit::{self, AuditKind, ClientInfo};
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};

/// Which stored secret a check is against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Password,
    Pin,
}

/// The 429 of a locked user, with the seconds left.
pub fn ensure_not_locked(user: &UserRow, now: NaiveDateTime) -> Result<(), ApiError> {
    match user.locked_until {
        Some(until) if until > now => {
            let seconds = (until - now).num_seconds().max(1) as u64;
            Err(ApiError::new(
                ErrorCode::UserLocked,
                "Too many failed sign-in attempts; the account is locked for a while.",
            )
            .with_retry_after(seconds))
        }
        _ => Ok(()),
    }
}

/// Verifies `given` against the user's stored secret on the blocking pool.
/// With no user, or no stored secret, a dummy hash is checked instead, so
/// every path costs one argon2 verification (no user enumeration by timing).
pub async fn verify(
    core: &Core,
    user: Option<&UserRow>,
    secret: Secret,
    given: String,
) -> Result<bool, ApiError> {
    let stored = user.and_then(|u| match secret {
        Secret::Password => u.password_hash.clone(),
        Secret::Pin => u.pin_hash.clone(),
    });
    let hasher = core.hasher.clone();
    let dummy = core.dummy_hash.clone();
    core.blocking(move || match stored {
        Some(hash) => hasher.verify(&given, &hash),
        None => {
            hasher.verify(&given, &dummy);
            false
        }
    })
    .await
}

/// Counts a failed check in the caller's transaction; returns the lock
/// end when this failure locked the user.
pub fn register_failure(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, ApiError> {
    let Some(user) = users::find_for_update(conn, user_id)? else {
        return Ok(None);
    };
    let window = Duration::seconds(settings.lockout_window_secs);
    let in_window = user
        .failed_logins_since
        .is_some_and(|since| now - since < window);
    let (count, since) = if in_window {
        (user.failed_logins + 1, user.failed_logins_since)
    } else {
        (1, Some(now))
    };
    if count >= settings.lockout_threshold {
        let until = now + Duration::seconds(settings.lockout_secs);
        users::set_login_failures(conn, user_id, 0, None, Some(until))?;
        audit::record(
            conn,
            AuditKind::UserLocked,
            Some(user_id),
            None,
            client,
            None,
            now,
        )?;
        return Ok(Some(until));
    }
    users::set_login_failures(conn, user_id, count, since, user.locked_until)?;
    Ok(None)
}

/// Forgets earlier failures after a successful check.
pub fn reset_failures(conn: &mut DbConnection, user: &UserRow) -> Result<(), ApiError> {
    if user.failed_logins > 0 || user.failed_logins_since.is_some() {
        users::set_login_failures(conn, &user.id, 0, None, None)?;
    }
    Ok(())
}

/// A wrong authenticator or recovery code: audited, and counted toward the
/// user's lockout like a wrong password.
pub fn second_factor_failed(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: &str,
    session_id: Option<&str>,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    audit::record(
        conn,
        AuditKind::OtpFailed,
        Some(user_id),
        session_id,
        client,
        Some("totp"),
        now,
    )?;
    register_failure(settings, conn, user_id, client, now)?;
    Ok(())
}

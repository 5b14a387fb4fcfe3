//! What an admin does to a user's access: set the password, lock, unlock,
//! delete. A new password, a lock and a deletion end every session of the
//! user in the same transaction (OWASP ASVS 3.3.3: a credential change
//! terminates the other sessions), so an intruder holding a token is out at
//! once.

use chrono::{Duration, NaiveDateTime};

use super::login::lock_user;
use crate::db::sessions as session_rows;
use crate::db::users::{self, UserChanges};
use crate::db::{DbConnection, lockouts};
use crate::error::ApiError;
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::{Core, parse_id};

/// How long an admin's lock lasts: until an admin unlocks the user.
const ADMIN_LOCK: Duration = Duration::days(365 * 100);

/// Ends every live session of the user, each audited.
pub fn end_sessions_of(
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<usize, ApiError> {
    let ended = session_rows::revoke_all_of_user(conn, user_id, now)?;
    for session_id in &ended {
        audit::record(
            conn,
            AuditKind::SessionRevoked,
            Some(user_id),
            Some(session_id),
            client,
            Some("account change"),
            now,
        )?;
    }
    Ok(ended.len())
}

/// The frame of every account change: the user's row locked, the change,
/// its audit event and, where the change says so, the end of every session
/// of the user — in one transaction.
async fn change_user<F>(
    core: &Core,
    raw_user_id: &str,
    client: ClientInfo,
    event: (AuditKind, Option<&'static str>),
    ends_sessions: bool,
    change: F,
) -> Result<(), ApiError>
where
    F: FnOnce(&mut DbConnection, &str, NaiveDateTime) -> Result<(), ApiError> + Send + 'static,
{
    let user_id = parse_id(raw_user_id, "user")?;
    let now = core.now();
    core.db
        .write(move |conn| {
            if ends_sessions {
                // Sessions before the user, as a code check takes them.
                session_rows::lock_live_of_user(conn, &user_id)?;
            }
            lock_user(conn, &user_id)?;
            if ends_sessions {
                end_sessions_of(conn, &user_id, &client, now)?;
            }
            change(conn, &user_id, now)?;
            let (kind, detail) = event;
            audit::record(conn, kind, Some(&user_id), None, &client, detail, now)?;
            Ok(())
        })
        .await
}

/// `PUT /admin/users/{id}/password`: a new password (argon2id); every
/// session of the user ends.
pub async fn set_password(
    core: &Core,
    raw_user_id: &str,
    password: String,
    client: ClientInfo,
) -> Result<(), ApiError> {
    let hasher = core.hasher.clone();
    let hash = core
        .blocking(move || hasher.hash(&password))
        .await?
        .map_err(ApiError::internal)?;
    let event = (AuditKind::PasswordChanged, None);
    change_user(
        core,
        raw_user_id,
        client,
        event,
        true,
        move |conn, user_id, now| {
            let changes = UserChanges {
                password_hash: Some(Some(hash)),
                updated_at: Some(now),
                ..UserChanges::default()
            };
            users::update(conn, user_id, &changes)?;
            Ok(())
        },
    )
    .await
}

/// `POST /admin/users/{id}/lock`: the user cannot sign in until unlocked;
/// every session ends.
pub async fn lock(core: &Core, raw_user_id: &str, client: ClientInfo) -> Result<(), ApiError> {
    let event = (AuditKind::UserLocked, Some("admin"));
    change_user(
        core,
        raw_user_id,
        client,
        event,
        true,
        |conn, user_id, now| {
            users::set_login_failures(conn, user_id, 0, None, Some(now + ADMIN_LOCK))?;
            Ok(())
        },
    )
    .await
}

/// `POST /admin/users/{id}/unlock`: lifts every lock (the user's and each
/// source's) and forgets the counted failures (password and second factor).
pub async fn unlock(core: &Core, raw_user_id: &str, client: ClientInfo) -> Result<(), ApiError> {
    let event = (AuditKind::UserUnlocked, None);
    change_user(
        core,
        raw_user_id,
        client,
        event,
        false,
        |conn, user_id, _| {
            users::set_login_failures(conn, user_id, 0, None, None)?;
            users::set_second_factor_failures(conn, user_id, 0, None, None)?;
            lockouts::clear_user(conn, user_id)?;
            Ok(())
        },
    )
    .await
}

/// `DELETE /admin/users/{id}`: the user and (by the foreign keys) their
/// sessions, codes and authenticators are gone; the deletion is audited.
pub async fn delete(core: &Core, raw_user_id: &str, client: ClientInfo) -> Result<(), ApiError> {
    let event = (AuditKind::UserDeleted, None);
    change_user(
        core,
        raw_user_id,
        client,
        event,
        true,
        |conn, user_id, _| {
            users::delete(conn, user_id)?;
            Ok(())
        },
    )
    .await
}

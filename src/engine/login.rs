//! The password (or PIN) check under the lockout rule, and opening a
//! session with it (a login).
//!
//! Lockout (OWASP ASVS 2.2.1): failures are counted per user in a window;
//! at the threshold the user is locked for a while, and even the right
//! password is refused until the lock ends. The argon2 check is too slow to
//! hold a row lock (or SQLite's writer) through it, so a check has three
//! steps, each decided on the locked user row:
//!
//! 1. [`reserve_attempt`] (its own transaction, before hashing): a locked
//!    user is refused; otherwise the attempt is counted as a failure up
//!    front. When `threshold` attempts are already counted in the window
//!    (failed or still hashing), the user is locked at once: however many
//!    guesses arrive in parallel, at most `threshold` of them reach the hash.
//! 2. the hash is checked on the CPU pool (a dummy hash when the user does
//!    not exist or has no password, so every path costs the same);
//! 3. a failure is audited and locks the user once the count reaches the
//!    threshold ([`settle_failure`]); a success checks the lock again and
//!    forgets the password failures ([`settle_success`]) in the transaction
//!    that opens or changes the session.

use chrono::{Duration, NaiveDateTime};
use uuid::Uuid;

use super::PENDING;
use super::lifecycle::{self, NewSession};
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::applications;
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::users::normalize_login_name;
use crate::services::{Core, parse_id, to_utc};

/// Which stored secret a check is against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Password,
    Pin,
}

/// How a request names a user.
#[derive(Debug, Clone)]
pub enum UserRef {
    /// A login name, compared after normalisation.
    LoginName(String),
    /// An employee number within the entity of `entity_number`.
    Employee {
        entity_number: String,
        employee_number: String,
    },
    /// A user id; anything that is not a uuid names nobody.
    UserId(String),
}

impl UserRef {
    /// Whether this names `user`.
    pub fn names(&self, user: &UserRow) -> bool {
        match self {
            Self::LoginName(name) => normalize_login_name(name) == user.login_name,
            Self::UserId(id) => id.eq_ignore_ascii_case(&user.id),
            Self::Employee {
                employee_number, ..
            } => *employee_number == user.employee_number,
        }
    }
}

pub fn find_user(conn: &mut DbConnection, user: &UserRef) -> Result<Option<UserRow>, ApiError> {
    Ok(match user {
        UserRef::LoginName(name) => users::find_by_login_name(conn, &normalize_login_name(name))?,
        UserRef::Employee {
            entity_number,
            employee_number,
        } => users::find_by_entity_and_employee(conn, entity_number, employee_number)?,
        UserRef::UserId(id) => match Uuid::parse_str(id) {
            Ok(id) => users::find(conn, &id.hyphenated().to_string())?,
            Err(_) => None,
        },
    })
}

/// The 429 of a locked user, with the seconds left.
fn locked(seconds: i64) -> ApiError {
    ApiError::new(
        ErrorCode::UserLocked,
        "Too many failed sign-in attempts; the account is locked for a while.",
    )
    .with_retry_after(seconds.max(1) as u64)
}

/// Refuses a user whose lock has not ended at `now`.
pub fn ensure_not_locked(user: &UserRow, now: NaiveDateTime) -> Result<(), ApiError> {
    match user.locked_until {
        Some(until) if until > now => Err(locked((until - now).num_seconds())),
        _ => Ok(()),
    }
}

/// The user's row, locked until the transaction ends (PostgreSQL; SQLite's
/// writer runs one transaction at a time).
pub fn lock_user(conn: &mut DbConnection, user_id: &str) -> Result<UserRow, ApiError> {
    users::find_for_update(conn, user_id)?
        .ok_or_else(|| ApiError::not_found(format!("There is no user with id {user_id:?}.")))
}

/// Locks `user` for the configured time from `now`; audited.
fn lock_out(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
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
    Ok(())
}

/// Failures counted so far in the window that is open at `now`.
fn counted_in_window(
    settings: &AuthSettings,
    user: &UserRow,
    now: NaiveDateTime,
) -> (i32, Option<NaiveDateTime>) {
    let window = Duration::seconds(settings.lockout_window_secs);
    match user.failed_logins_since {
        Some(since) if now - since < window => (user.failed_logins, Some(since)),
        _ => (0, None),
    }
}

/// Step 1: counts an attempt before its hash is checked, on the locked row.
/// The outer `Err` is a database error; the inner one the refusal of a
/// locked user, to be committed (it may have just locked the user).
pub fn reserve_attempt(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<Result<(), ApiError>, ApiError> {
    let user = lock_user(conn, user_id)?;
    if let Err(locked) = ensure_not_locked(&user, now) {
        return Ok(Err(locked));
    }
    let (counted, since) = counted_in_window(settings, &user, now);
    if counted >= settings.lockout_threshold {
        // As many attempts as the threshold are counted and still being
        // checked: this one would be one too many.
        lock_out(settings, conn, user_id, client, now)?;
        return Ok(Err(locked(settings.lockout_secs)));
    }
    users::set_login_failures(
        conn,
        user_id,
        counted + 1,
        since.or(Some(now)),
        user.locked_until,
    )?;
    Ok(Ok(()))
}

/// Step 3 after a wrong secret: audited (also for an unknown user), and the
/// user locked once the counted failures reach the threshold.
pub fn settle_failure(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: Option<&str>,
    session_id: Option<&str>,
    detail: Option<&str>,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    audit::record(
        conn,
        AuditKind::LoginFailed,
        user_id,
        session_id,
        client,
        detail,
        now,
    )?;
    let Some(user_id) = user_id else {
        return Ok(());
    };
    let user = lock_user(conn, user_id)?;
    let (counted, _) = counted_in_window(settings, &user, now);
    if counted >= settings.lockout_threshold && ensure_not_locked(&user, now).is_ok() {
        lock_out(settings, conn, user_id, client, now)?;
    }
    Ok(())
}

/// Step 3 after a right secret, in the transaction that acts on it: the
/// lock is checked again on the locked row (guesses sent beside this one
/// may have locked the user meanwhile), then the password failures are
/// forgotten. Second-factor failures are not: only a second factor resets
/// them. Returns the user as it is now.
pub fn settle_success(
    conn: &mut DbConnection,
    user_id: &str,
    now: NaiveDateTime,
) -> Result<UserRow, ApiError> {
    let mut user = lock_user(conn, user_id)?;
    ensure_not_locked(&user, now)?;
    if user.failed_logins > 0 || user.failed_logins_since.is_some() {
        users::set_login_failures(conn, &user.id, 0, None, user.locked_until)?;
        user.failed_logins = 0;
        user.failed_logins_since = None;
    }
    Ok(user)
}

/// Steps 1, 2 and 3: whether `given` is `user`'s secret, with the outcome
/// committed: a failure counted, or a success's reset of the failures (in
/// its own write, so that a later refusal of the request, such as an
/// unknown application, cannot leave the right password counted as a
/// failure). A locked user is refused before any hashing. On `Ok(true)` the
/// caller calls [`settle_success`] again in the transaction that acts on
/// it, where the lock is checked once more.
pub async fn check_secret(
    core: &Core,
    user: Option<&UserRow>,
    secret: Secret,
    given: String,
    client: &ClientInfo,
    session_id: Option<&str>,
    audit_detail: Option<&'static str>,
) -> Result<bool, ApiError> {
    let now = core.now();
    if let Some(user) = user {
        let (rules, user_id, client) = (core.rules(), user.id.clone(), client.clone());
        core.db
            .write(move |conn| reserve_attempt(&rules.settings, conn, &user_id, &client, now))
            .await??;
    }
    let stored = user.and_then(|u| match secret {
        Secret::Password => u.password_hash.clone(),
        Secret::Pin => u.pin_hash.clone(),
    });
    let hasher = core.hasher.clone();
    let dummy = core.dummy_hash.clone();
    let matched = core
        .blocking(move || match stored {
            Some(hash) => hasher.verify(&given, &hash),
            None => {
                hasher.verify(&given, &dummy);
                false
            }
        })
        .await?;
    if matched {
        if let Some(user) = user {
            let user_id = user.id.clone();
            core.db
                .write(move |conn| settle_success(conn, &user_id, now).map(drop))
                .await?;
        }
    } else {
        let rules = core.rules();
        let user_id = user.map(|u| u.id.clone());
        let session_id = session_id.map(str::to_owned);
        let client = client.clone();
        core.db
            .write(move |conn| {
                settle_failure(
                    &rules.settings,
                    conn,
                    user_id.as_deref(),
                    session_id.as_deref(),
                    audit_detail,
                    &client,
                    now,
                )
            })
            .await?;
    }
    Ok(matched)
}

pub fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "The login name or the password is wrong.",
    )
}

/// A login: who, the password, and where the session is bound.
#[derive(Debug)]
pub struct LoginInput {
    pub user: UserRef,
    pub password: String,
    pub application_name: Option<String>,
    /// A client-chosen session id; a new one when absent.
    pub session_id: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResult {
    pub session_id: String,
    pub session_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub status: String,
}

/// Opens a pending session with its password factor verified (`POST
/// /sessions`). The rate limit is counted per client address first.
pub async fn login(
    core: &Core,
    input: LoginInput,
    client: ClientInfo,
) -> Result<LoginResult, ApiError> {
    core.rate_limiter.check(client.ip, core.clock.now())?;
    let lookup = input.user.clone();
    let user = core.db.run(move |conn| find_user(conn, &lookup)).await?;
    let matched = check_secret(
        core,
        user.as_ref(),
        Secret::Password,
        input.password,
        &client,
        None,
        None,
    )
    .await?;
    let (Some(user), true) = (user, matched) else {
        return Err(invalid_credentials());
    };
    let session_id = match &input.session_id {
        Some(id) => parse_id(id, "session")?,
        None => Uuid::new_v4().to_string(),
    };
    let now = core.now();
    let expires_at = now + Duration::seconds(core.settings.auth.session_lifetime_secs);
    let (token, claims) = lifecycle::issue_session_token(core, &user.id, &session_id, expires_at)?;
    let application_name = input.application_name;
    let row_session_id = session_id.clone();
    core.db
        .write(move |conn| {
            let user = settle_success(conn, &user.id, now)?;
            let application_id = match &application_name {
                Some(name) => Some(
                    applications::find_by_name(conn, &user.entity_id, name)?
                        .ok_or_else(|| {
                            ApiError::invalid_field(
                                "/applicationName",
                                "applicationName names no application of the user's entity.",
                            )
                        })?
                        .id,
                ),
                None => None,
            };
            lifecycle::insert_session(
                conn,
                NewSession {
                    id: &row_session_id,
                    user: &user,
                    application_id,
                    client: &client,
                    expires_at,
                    password_verified: true,
                    token_id: Some(&claims.jti),
                },
                now,
            )?;
            audit::record(
                conn,
                AuditKind::LoginSucceeded,
                Some(&user.id),
                Some(&row_session_id),
                &client,
                None,
                now,
            )?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(LoginResult {
        session_id,
        session_token: token,
        expires_at: to_utc(expires_at),
        status: PENDING.to_owned(),
    })
}

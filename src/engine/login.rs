//! The password (or PIN) check under the lockout rules, and opening a
//! session with it (a login).
//!
//! Lockout (OWASP ASVS 2.2.1), made hard to use against a victim: failures
//! are counted per user **and source** (the client's IPv4 address or IPv6
//! /64). `LATCHKEY_LOCKOUT_THRESHOLD` failures from one source in the
//! window lock that source out of the account for a while — the owner
//! signing in from elsewhere is not locked out by a stranger's guesses.
//! Failures from all sources are counted too: `LATCHKEY_LOCKOUT_USER_THRESHOLD`
//! of them lock the account for everyone, which bounds guessing spread over
//! many addresses. A locked source's wrong password answers exactly like
//! any wrong password (401 after the same argon2 work): a lock tells
//! nothing about which accounts exist; only the right password learns of
//! it (429).
//!
//! The argon2 check is too slow to hold a row lock (or SQLite's writer)
//! through it, so a check has three steps, each decided on the locked user
//! row (which also serialises the source rows):
//!
//! 1. [`reserve_attempt`] (its own transaction, before hashing): a locked
//!    source or user is refused; otherwise the attempt is counted as a
//!    failure up front. When a threshold is already reached in the window
//!    (by failures, or attempts still hashing), the lock falls at once:
//!    however many guesses arrive in parallel, at most a threshold of them
//!    can succeed in being checked.
//! 2. the hash is checked on the CPU pool (a dummy hash when the user does
//!    not exist or has no password, so every path costs the same);
//! 3. a failure is audited and locks once a count reaches its threshold
//!    ([`settle_failure`]); a success forgets the failures in its own write
//!    and checks the locks again in the transaction that opens or changes
//!    the session ([`settle_success`]).

use chrono::{Duration, NaiveDateTime};
use uuid::Uuid;

use super::PENDING;
use super::lifecycle::{self, NewSession};
use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::applications;
use crate::db::lockouts::{self, LockoutRow};
use crate::db::users::{self, UserRow};
use crate::domain::LoginName;
use crate::error::{ApiError, ErrorCode};
use crate::services::audit::{self, AuditKind, ClientInfo};
use crate::services::rate_limit::ClientKey;
use crate::services::{Core, parse_id, to_utc};
use std::net::IpAddr;

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
            Self::LoginName(name) => {
                LoginName::parse(name).is_ok_and(|name| name.as_str() == user.login_name)
            }
            Self::UserId(id) => id.eq_ignore_ascii_case(&user.id),
            Self::Employee {
                employee_number, ..
            } => *employee_number == user.employee_number,
        }
    }
}

pub fn find_user(conn: &mut DbConnection, user: &UserRef) -> Result<Option<UserRow>, ApiError> {
    Ok(match user {
        // A name the profile refuses names nobody.
        UserRef::LoginName(name) => match LoginName::parse(name) {
            Ok(name) => users::find_by_login_name(conn, name.as_str())?,
            Err(_) => None,
        },
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

/// Where failures are counted: the client as the rate limit keys it (an
/// IPv4 address, or an IPv6 /64: one host holds a whole /64); `unknown`
/// without an address.
pub fn lockout_source(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), |ip| ClientKey::of(ip).to_string())
}

/// The failures counted in the window open at `now`, and its start.
fn in_window(
    settings: &AuthSettings,
    failed: i32,
    since: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> (i32, Option<NaiveDateTime>) {
    let window = Duration::seconds(settings.lockout_window_secs);
    match since {
        Some(since) if now - since < window => (failed, Some(since)),
        _ => (0, None),
    }
}

/// The user's lock and the source's, whichever ends later, as a refusal.
fn locked_for(user: &UserRow, source: &LockoutRow, now: NaiveDateTime) -> Result<(), ApiError> {
    ensure_not_locked(user, now)?;
    match source.locked_until {
        Some(until) if until > now => Err(locked((until - now).num_seconds())),
        _ => Ok(()),
    }
}

/// The user's row and the source's (a fresh one if none), both under the
/// user's row lock.
fn lock_rows(
    conn: &mut DbConnection,
    user_id: &str,
    source: &str,
) -> Result<(UserRow, LockoutRow), ApiError> {
    let user = lock_user(conn, user_id)?;
    let row = lockouts::find(conn, user_id, source)?.unwrap_or_else(|| LockoutRow {
        user_id: user_id.to_owned(),
        source: source.to_owned(),
        failed: 0,
        failed_since: None,
        locked_until: None,
    });
    Ok((user, row))
}

/// Locks the source out of the user; audited.
fn lock_source(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    mut row: LockoutRow,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    row.failed = 0;
    row.failed_since = None;
    row.locked_until = Some(now + Duration::seconds(settings.lockout_secs));
    lockouts::save(conn, &row)?;
    audit::record(
        conn,
        AuditKind::UserLocked,
        Some(&row.user_id),
        None,
        client,
        Some(&format!("source {}", row.source)),
        now,
    )?;
    Ok(())
}

/// Locks the user for every source; audited.
fn lock_user_everywhere(
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
        Some("all sources"),
        now,
    )?;
    Ok(())
}

/// Step 1: counts an attempt before its hash is checked. The outer `Err`
/// is a database error; the inner one the refusal of a locked source or
/// user, to be committed (it may have just locked).
pub fn reserve_attempt(
    settings: &AuthSettings,
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<Result<(), ApiError>, ApiError> {
    let source = lockout_source(client.ip);
    let (user, mut row) = lock_rows(conn, user_id, &source)?;
    if let Err(locked) = locked_for(&user, &row, now) {
        return Ok(Err(locked));
    }
    let (from_source, source_since) = in_window(settings, row.failed, row.failed_since, now);
    let (from_all, all_since) =
        in_window(settings, user.failed_logins, user.failed_logins_since, now);
    // A threshold already reached by failures and attempts still being
    // checked: this one would be one too many.
    if from_source >= settings.lockout_threshold {
        lock_source(settings, conn, row, client, now)?;
        return Ok(Err(locked(settings.lockout_secs)));
    }
    if from_all >= settings.lockout_user_threshold {
        lock_user_everywhere(settings, conn, user_id, client, now)?;
        return Ok(Err(locked(settings.lockout_secs)));
    }
    row.failed = from_source + 1;
    row.failed_since = source_since.or(Some(now));
    lockouts::save(conn, &row)?;
    users::set_login_failures(
        conn,
        user_id,
        from_all + 1,
        all_since.or(Some(now)),
        user.locked_until,
    )?;
    Ok(Ok(()))
}

/// Step 3 after a wrong secret: audited (also for an unknown user), and a
/// lock once a count reaches its threshold.
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
    let source = lockout_source(client.ip);
    let (user, row) = lock_rows(conn, user_id, &source)?;
    if locked_for(&user, &row, now).is_err() {
        return Ok(());
    }
    let (from_source, _) = in_window(settings, row.failed, row.failed_since, now);
    let (from_all, _) = in_window(settings, user.failed_logins, user.failed_logins_since, now);
    if from_source >= settings.lockout_threshold {
        lock_source(settings, conn, row, client, now)?;
    } else if from_all >= settings.lockout_user_threshold {
        lock_user_everywhere(settings, conn, user_id, client, now)?;
    }
    Ok(())
}

/// Step 3 after a right secret, in the transaction that acts on it: the
/// locks are checked again on the locked rows (guesses sent beside this one
/// may have locked the source or user meanwhile), then the password
/// failures (this source's and the user's) are forgotten. Second-factor
/// failures are not: only a second factor resets them. Returns the user as
/// it is now.
pub fn settle_success(
    conn: &mut DbConnection,
    user_id: &str,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<UserRow, ApiError> {
    let source = lockout_source(client.ip);
    let (mut user, mut row) = lock_rows(conn, user_id, &source)?;
    locked_for(&user, &row, now)?;
    if row.failed > 0 || row.failed_since.is_some() {
        row.failed = 0;
        row.failed_since = None;
        lockouts::save(conn, &row)?;
    }
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
/// failure). The hash is checked even for a locked source or user, and a
/// wrong secret then answers `Ok(false)` like any other (uncounted); a
/// right one gets the lock's 429. On `Ok(true)` the caller calls
/// [`settle_success`] again in the transaction that acts on it, where the
/// locks are checked once more.
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
    let gate = match user {
        Some(user) => {
            let (rules, user_id, client) = (core.rules(), user.id.clone(), client.clone());
            core.db
                .write(move |conn| reserve_attempt(&rules.settings, conn, &user_id, &client, now))
                .await?
        }
        None => Ok(()),
    };
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
    let rules = core.rules();
    let user_id = user.map(|u| u.id.clone());
    let session_id = session_id.map(str::to_owned);
    let client = client.clone();
    match (gate, matched) {
        (Err(locked), true) => Err(locked),
        (Err(_), false) => {
            // Refused before it counted: audited, not counted again.
            core.db
                .write(move |conn| {
                    audit::record(
                        conn,
                        AuditKind::LoginFailed,
                        user_id.as_deref(),
                        session_id.as_deref(),
                        &client,
                        Some("locked"),
                        now,
                    )
                    .map_err(ApiError::from)
                })
                .await?;
            Ok(false)
        }
        (Ok(()), true) => {
            if let Some(user_id) = user_id {
                core.db
                    .write(move |conn| settle_success(conn, &user_id, &client, now).map(drop))
                    .await?;
            }
            Ok(true)
        }
        (Ok(()), false) => {
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
            Ok(false)
        }
    }
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
    core.check_rate_limit(client.ip).await?;
    open_session(core, input, client).await
}

/// [`login`] after its rate limit: for a face that counted the client's
/// request already (the asynchronous face counts it when it accepts).
pub async fn open_session(
    core: &Core,
    input: LoginInput,
    client: ClientInfo,
) -> Result<LoginResult, ApiError> {
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
            let user = settle_success(conn, &user.id, &client, now)?;
            let application_id = match &application_name {
                Some(name) => Some(
                    applications::find_by_name(conn, &user.entity_id, name)?
                        .ok_or_else(|| {
                            ApiError::invalid_field(
                                "/applicationName",
                                "The application name names no application of the user's entity.",
                            )
                        })?
                        .id,
                ),
                None => None,
            };
            lifecycle::insert_session(
                conn,
                NewSession {
                    binding: None,
                    id: &row_session_id,
                    user: &user,
                    application_id,
                    client: &client,
                    expires_at,
                    password_verified: true,
                    token_id: Some(&claims.jti),
                    user_agent: None,
                    creator: user.id.clone(),
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

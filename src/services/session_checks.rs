//! Sessions advanced by checks and challenges (the model of ZITADEL's v2
//! Session API), over the same sessions, codes and factors as the native
//! calls. A failed check fails the whole request and leaves the session as
//! it was, but its failure is still counted (code attempts, user lockout).

use std::collections::BTreeMap;

use chrono::Duration;
use uuid::Uuid;

use super::audit::{self, AuditKind, ClientInfo};
use super::credentials::{self, Secret};
use super::otp::{CodeDelivery, OtpEngine, OtpType};
use super::sessions::{self, Caller, effective_status, is_live, new_session_row};
use super::totp::{self, Attempt, SecondFactor};
use super::users::normalize_login_name;
use super::{Core, parse_id};
use crate::db::DbConnection;
use crate::db::challenges::LOGIN;
use crate::db::sessions::{self as rows, SessionChanges, SessionRow, SessionSearch};
use crate::db::users::{self, UserRow};
use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone)]
pub enum UserRef {
    LoginName(String),
    UserId(String),
}

#[derive(Debug, Default, Clone)]
pub struct SessionChecks {
    pub user: Option<UserRef>,
    pub password: Option<String>,
    pub totp: Option<String>,
    pub otp_email: Option<String>,
    pub recovery_code: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct SessionRequest {
    pub checks: SessionChecks,
    /// A login code to make: mailed (with an optional link) or returned.
    pub otp_email: Option<CodeDelivery>,
    /// Keys to set (an empty value removes the key).
    pub metadata: Option<BTreeMap<String, String>>,
    pub lifetime: Option<Duration>,
}

/// A session after a change, with its user and its new token.
pub struct SessionOutcome {
    pub session: SessionRow,
    pub user: UserRow,
    pub session_token: String,
    /// The login code, when it was asked to be returned.
    pub otp_email_code: Option<String>,
}

/// Which check failed, so its failure can be counted after the rollback.
enum FailedCheck {
    Password,
    SecondFactor,
    OtpEmail,
}

enum Applied {
    /// The returned login code, if one was asked for, and the session as
    /// it is now.
    Done(Option<String>, Box<SessionRow>),
    Failed(FailedCheck, ApiError),
}

fn find_user(conn: &mut DbConnection, user: &UserRef) -> Result<Option<UserRow>, ApiError> {
    Ok(match user {
        UserRef::LoginName(name) => users::find_by_login_name(conn, &normalize_login_name(name))?,
        UserRef::UserId(id) => match Uuid::parse_str(id) {
            Ok(id) => users::find(conn, &id.hyphenated().to_string())?,
            Err(_) => None,
        },
    })
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "The login name or the password is wrong.",
    )
    .at_pointer("/checks/password")
}

fn merged_metadata(current: &str, changes: &BTreeMap<String, String>) -> String {
    let mut map: BTreeMap<String, String> = serde_json::from_str(current).unwrap_or_default();
    for (key, value) in changes {
        if value.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value.clone());
        }
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

/// The checks other than the user (and the password, checked before the
/// transaction), the challenges, metadata and lifetime, applied to a locked
/// session inside the transaction, with `token_id` as the session's one
/// valid token from now on.
fn apply(
    engine: &OtpEngine,
    conn: &mut DbConnection,
    session: &SessionRow,
    user: &UserRow,
    request: &SessionRequest,
    token_id: &str,
    attempt: &Attempt<'_>,
) -> Result<Applied, ApiError> {
    let &Attempt { client, now, .. } = attempt;
    let mut changes = SessionChanges {
        token_id: Some(Some(token_id.to_owned())),
        ..SessionChanges::default()
    };
    if request.checks.password.is_some() {
        changes.password_verified_at = Some(Some(now));
    }
    for (code, kind) in [
        (&request.checks.totp, OtpType::Totp),
        (&request.checks.recovery_code, OtpType::Recovery),
    ] {
        let Some(code) = code else { continue };
        credentials::ensure_not_locked(user, now)?;
        match totp::check_second_factor(engine, conn, user, code, &[kind], attempt)? {
            SecondFactor::Matched(_) => changes.totp_verified_at = Some(Some(now)),
            _ => {
                let pointer = if kind == OtpType::Totp {
                    "/checks/totp"
                } else {
                    "/checks/recoveryCode"
                };
                let error = ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.")
                    .at_pointer(pointer);
                return Ok(Applied::Failed(FailedCheck::SecondFactor, error));
            }
        }
    }
    if let Some(code) = &request.checks.otp_email {
        match engine.match_challenge(conn, &session.id, &[LOGIN], code, client, now)? {
            Some(_) => changes.otp_email_verified_at = Some(Some(now)),
            None => {
                let error = ApiError::new(ErrorCode::OtpInvalid, "The code is not valid.")
                    .at_pointer("/checks/otpEmail");
                return Ok(Applied::Failed(FailedCheck::OtpEmail, error));
            }
        }
    }
    if let Some(metadata) = &request.metadata {
        changes.metadata = Some(merged_metadata(&session.metadata, metadata));
    }
    if let Some(lifetime) = request.lifetime {
        changes.expires_at = Some(now + lifetime);
    }
    let mut returned_code = None;
    if let Some(delivery) = &request.otp_email {
        let (code, _) = engine.send_login_code(conn, user, session, delivery, client, now)?;
        // Only a trusted caller that asked for it gets the code back.
        if matches!(delivery, CodeDelivery::Return) {
            returned_code = Some(code);
        }
    }
    rows::update(conn, &session.id, &changes, now)?;
    let session = rows::find(conn, &session.id)?
        .ok_or_else(|| ApiError::not_found("The session was deleted meanwhile."))?;
    Ok(Applied::Done(returned_code, Box::new(session)))
}

/// Counts a failed check in its own transaction (the request's changes
/// were rolled back) and returns the error to answer with.
async fn count_failure(
    core: &Core,
    failed: FailedCheck,
    error: ApiError,
    user_id: String,
    session_id: Option<String>,
    client: ClientInfo,
) -> ApiError {
    let engine = core.otp_engine();
    let now = core.now();
    let counted = core
        .db
        .write(move |conn| {
            match failed {
                FailedCheck::Password => {
                    audit::record(
                        conn,
                        AuditKind::LoginFailed,
                        Some(&user_id),
                        session_id.as_deref(),
                        &client,
                        None,
                        now,
                    )?;
                    credentials::register_failure(&engine.settings, conn, &user_id, &client, now)?;
                }
                FailedCheck::SecondFactor => {
                    credentials::second_factor_failed(
                        &engine.settings,
                        conn,
                        &user_id,
                        session_id.as_deref(),
                        &client,
                        now,
                    )?;
                }
                FailedCheck::OtpEmail => {
                    if let Some(session_id) = &session_id
                        && let Some(precise) =
                            engine.record_failures(conn, session_id, &[LOGIN], &client, now)?
                    {
                        return Ok(Some(precise));
                    }
                }
            }
            Ok::<_, ApiError>(None)
        })
        .await;
    match counted {
        Ok(Some(precise)) => precise.at_pointer("/checks/otpEmail"),
        Ok(None) => error,
        Err(err) => err,
    }
}

fn parse_lifetime_bound(lifetime: Duration) -> Result<(), ApiError> {
    if lifetime <= Duration::zero() || lifetime > Duration::days(366) {
        return Err(ApiError::invalid_field(
            "/lifetime",
            "lifetime must be between 1s and 366 days.",
        ));
    }
    Ok(())
}

/// `POST /v2/sessions`. Without a token the checks must include the user
/// and the password (a login); otherwise an admin token is needed.
pub async fn create(
    core: &Core,
    caller: Option<&Caller>,
    request: SessionRequest,
    client: ClientInfo,
) -> Result<SessionOutcome, ApiError> {
    let Some(user_ref) = request.checks.user.clone() else {
        return Err(ApiError::invalid_field(
            "/checks/user",
            "checks.user is required to create a session.",
        ));
    };
    let is_admin = caller.is_some_and(Caller::is_admin);
    let is_login = request.checks.password.is_some();
    match (is_login, caller) {
        (true, _) | (false, Some(Caller::Admin { .. })) => {}
        (false, None) => {
            return Err(ApiError::unauthorized(
                "Without a password check, creating a session needs an admin token.",
            ));
        }
        (false, Some(Caller::User { .. })) => {
            return Err(ApiError::forbidden(
                "Without a password check, creating a session needs an admin token.",
            ));
        }
    }
    if matches!(request.otp_email, Some(CodeDelivery::Return)) && !is_admin {
        return Err(
            ApiError::forbidden("Only an admin token may have the code returned.")
                .at_pointer("/challenges/otpEmail/returnCode"),
        );
    }
    if let Some(lifetime) = request.lifetime {
        parse_lifetime_bound(lifetime)?;
    }
    if is_login {
        core.rate_limiter
            .check(client.ip.as_deref(), core.clock.now())?;
    }
    let now = core.now();
    let user = {
        let user_ref = user_ref.clone();
        core.db.run(move |conn| find_user(conn, &user_ref)).await?
    };
    if let Some(password) = request.checks.password.clone() {
        if let Some(user) = &user {
            credentials::ensure_not_locked(user, now)?;
        }
        let ok = credentials::verify(core, user.as_ref(), Secret::Password, password).await?;
        match (&user, ok) {
            (Some(_), true) => {}
            (Some(user), false) => {
                return Err(count_failure(
                    core,
                    FailedCheck::Password,
                    invalid_credentials(),
                    user.id.clone(),
                    None,
                    client,
                )
                .await);
            }
            (None, _) => return Err(invalid_credentials()),
        }
    }
    let Some(user) = user else {
        return Err(
            ApiError::new(ErrorCode::UserNotFound, "checks.user names no user.")
                .at_pointer("/checks/user"),
        );
    };

    let session_id = Uuid::new_v4().to_string();
    let lifetime = request
        .lifetime
        .unwrap_or_else(|| Duration::seconds(core.settings.auth.session_lifetime_secs));
    let expires_at = now + lifetime;
    let (token, claims) = sessions::issue_session_token(core, &user.id, &session_id, expires_at)?;
    let engine = core.otp_engine();
    let outcome = {
        let (user, session_id, request, client) = (
            user.clone(),
            session_id.clone(),
            request.clone(),
            client.clone(),
        );
        core.db
            .write(move |conn| {
                let row = new_session_row(
                    &session_id,
                    &user.id,
                    &user.entity_id,
                    None,
                    &client,
                    now,
                    expires_at,
                );
                rows::insert(conn, &row)?;
                audit::record(
                    conn,
                    AuditKind::SessionCreated,
                    Some(&user.id),
                    Some(&session_id),
                    &client,
                    None,
                    now,
                )?;
                let attempt = Attempt {
                    session_id: Some(&session_id),
                    client: &client,
                    now,
                };
                match apply(&engine, conn, &row, &user, &request, &claims.jti, &attempt)? {
                    Applied::Done(code, session) => Ok((code, *session)),
                    // Roll the new session back; the failure is counted afterwards.
                    Applied::Failed(failed, error) => Err(TxError::Check(failed, error)),
                }
            })
            .await
    };
    finish(core, outcome, user, session_id, token, client).await
}

/// Why a transaction rolled back: a failed check (to be counted), or
/// anything else.
enum TxError {
    Check(FailedCheck, ApiError),
    Other(ApiError),
}

impl<E: Into<ApiError>> From<E> for TxError {
    fn from(err: E) -> Self {
        TxError::Other(err.into())
    }
}

/// The outcome of a committed change, or a failed check counted in its own
/// transaction.
async fn finish(
    core: &Core,
    outcome: Result<(Option<String>, SessionRow), TxError>,
    user: UserRow,
    session_id: String,
    session_token: String,
    client: ClientInfo,
) -> Result<SessionOutcome, ApiError> {
    match outcome {
        Ok((otp_email_code, session)) => Ok(SessionOutcome {
            session,
            user,
            session_token,
            otp_email_code,
        }),
        Err(TxError::Other(error)) => Err(error),
        Err(TxError::Check(failed, error)) => Err(count_failure(
            core,
            failed,
            error,
            user.id.clone(),
            Some(session_id),
            client,
        )
        .await),
    }
}

/// The session a caller may work on: its own (session token), or any
/// (admin token).
fn ensure_own(caller: &Caller, session_id: &str) -> Result<(), ApiError> {
    match caller {
        Caller::User {
            session_id: own, ..
        } if own != session_id => Err(ApiError::forbidden(
            "A session token may only work on its own session.",
        )),
        _ => Ok(()),
    }
}

/// `PATCH /v2/sessions/{id}`: more checks and challenges; a new token.
pub async fn change(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    request: SessionRequest,
    client: ClientInfo,
) -> Result<SessionOutcome, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    ensure_own(caller, &session_id)?;
    if matches!(request.otp_email, Some(CodeDelivery::Return)) && !caller.is_admin() {
        return Err(
            ApiError::forbidden("Only an admin token may have the code returned.")
                .at_pointer("/challenges/otpEmail/returnCode"),
        );
    }
    if let Some(lifetime) = request.lifetime {
        parse_lifetime_bound(lifetime)?;
    }
    if request.checks.password.is_some()
        || request.checks.totp.is_some()
        || request.checks.otp_email.is_some()
        || request.checks.recovery_code.is_some()
    {
        core.rate_limiter
            .check(client.ip.as_deref(), core.clock.now())?;
    }
    let now = core.now();
    let (session, user) = {
        let session_id = session_id.clone();
        core.db
            .run(move |conn| {
                let session = rows::find(conn, &session_id)?.ok_or_else(|| {
                    ApiError::not_found(format!("There is no session {session_id:?}."))
                })?;
                let user = users::find(conn, &session.user_id)?
                    .ok_or_else(|| ApiError::not_found("The session's user no longer exists."))?;
                Ok::<_, ApiError>((session, user))
            })
            .await?
    };
    if !is_live(&session, now) {
        return Err(ApiError::new(
            ErrorCode::SessionClosed,
            format!("The session is {}.", effective_status(&session, now)),
        ));
    }
    if let Some(user_ref) = &request.checks.user {
        let same = match user_ref {
            UserRef::UserId(id) => id.eq_ignore_ascii_case(&user.id),
            UserRef::LoginName(name) => normalize_login_name(name) == user.login_name,
        };
        if !same {
            return Err(ApiError::conflict("The user of a session cannot change.")
                .at_pointer("/checks/user"));
        }
    }
    if let Some(password) = request.checks.password.clone() {
        credentials::ensure_not_locked(&user, now)?;
        if !credentials::verify(core, Some(&user), Secret::Password, password).await? {
            return Err(count_failure(
                core,
                FailedCheck::Password,
                invalid_credentials(),
                user.id.clone(),
                Some(session_id),
                client,
            )
            .await);
        }
    }
    let expires_at = request
        .lifetime
        .map_or(session.expires_at, |lifetime| now + lifetime);
    let (token, claims) = sessions::issue_session_token(core, &user.id, &session_id, expires_at)?;
    let engine = core.otp_engine();
    let outcome = {
        let (user, session_id, request, client) = (
            user.clone(),
            session_id.clone(),
            request.clone(),
            client.clone(),
        );
        core.db
            .write(move |conn| {
                let session = rows::find_for_update(conn, &session_id)?.ok_or_else(|| {
                    ApiError::not_found(format!("There is no session {session_id:?}."))
                })?;
                let attempt = Attempt {
                    session_id: Some(&session_id),
                    client: &client,
                    now,
                };
                match apply(
                    &engine,
                    conn,
                    &session,
                    &user,
                    &request,
                    &claims.jti,
                    &attempt,
                )? {
                    Applied::Done(code, session) => Ok((code, *session)),
                    Applied::Failed(failed, error) => Err(TxError::Check(failed, error)),
                }
            })
            .await
    };
    finish(core, outcome, user, session_id, token, client).await
}

/// `GET /v2/sessions/{id}`: the session and its user.
pub async fn get(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
) -> Result<(SessionRow, Option<UserRow>), ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    ensure_own(caller, &session_id)?;
    core.db
        .run(move |conn| {
            let session = rows::find(conn, &session_id)?.ok_or_else(|| {
                ApiError::not_found(format!("There is no session {session_id:?}."))
            })?;
            let user = users::find(conn, &session.user_id)?;
            Ok((session, user))
        })
        .await
}

/// `DELETE /v2/sessions/{id}`: revokes the session and its token.
pub async fn terminate(
    core: &Core,
    caller: &Caller,
    raw_session_id: &str,
    client: ClientInfo,
) -> Result<SessionRow, ApiError> {
    let session_id = parse_id(raw_session_id, "session")?;
    ensure_own(caller, &session_id)?;
    sessions::revoke(core, caller, &session_id, client).await?;
    core.db
        .run(move |conn| {
            rows::find(conn, &session_id)?
                .ok_or_else(|| ApiError::not_found("The session was deleted."))
        })
        .await
}

/// `POST /v2/sessions/search`: an admin sees every session, a session token
/// its user's.
pub async fn search(
    core: &Core,
    caller: &Caller,
    mut filter: SessionSearch,
    limit: i64,
    offset: i64,
) -> Result<(Vec<(SessionRow, Option<UserRow>)>, i64), ApiError> {
    if let Caller::User { user_id, .. } = caller {
        if filter
            .user_id
            .as_ref()
            .is_some_and(|wanted| wanted != user_id)
        {
            return Ok((Vec::new(), 0));
        }
        filter.user_id = Some(user_id.clone());
    }
    core.db
        .run(move |conn| {
            let (rows, total) = rows::search(conn, &filter, limit, offset)?;
            let mut with_users = Vec::with_capacity(rows.len());
            for row in rows {
                let user = users::find(conn, &row.user_id)?;
                with_users.push((row, user));
            }
            Ok((with_users, total))
        })
        .await
}
